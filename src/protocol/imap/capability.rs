//! The capability list shown to the client (DESIGN §1, RFC 3501 §7.2.1).
//!
//! Built from the upstream's post-TLS capabilities: its `AUTH=…`, `LOGINDISABLED`, `STARTTLS` and
//! `SASL-IR` describe the upstream's login, not ours, and are dropped. Ours are added per client
//! leg:
//! - TLS (implicit, or after STARTTLS): `SASL-IR AUTH=PLAIN`.
//! - plaintext listener: no `AUTH=` at all. PHP's c-client logs "SECURITY PROBLEM: insecure server
//!   advertised AUTH=PLAIN" otherwise (FACTS.md; transcript imap-c-client-glpi94) and falls back
//!   to `LOGIN` with atoms (imap-c-client-login-no-auth-plain). `AUTHENTICATE PLAIN` is still
//!   accepted (curl sends it when it sees `AUTH=PLAIN` elsewhere), only not advertised; `SASL-IR`
//!   goes with it, as it means nothing without a mechanism.
//! - STARTTLS listener before TLS: `STARTTLS LOGINDISABLED` (login is refused until TLS).
//!
//! `IMAP4rev1` always comes first; `LITERAL+` (we accept `{N+}`) and `ID` (we answer it) are
//! always present.

use super::command::is_atom_char;

pub use crate::protocol::Leg;

/// Upstream capabilities that describe the upstream's own login or are ours to decide.
fn dropped(cap: &str) -> bool {
    let upper = cap.to_ascii_uppercase();
    upper.starts_with("AUTH=")
        || matches!(
            upper.as_str(),
            "IMAP4REV1" | "LOGINDISABLED" | "STARTTLS" | "SASL-IR" | "LITERAL+" | "LITERAL-" | "ID"
        )
}

/// A capability the client can parse: a non-empty atom of printable ASCII.
fn is_clean_atom(cap: &str) -> bool {
    !cap.is_empty()
        && cap.len() <= 200
        && cap.bytes().all(|b| b.is_ascii_graphic() && is_atom_char(b))
}

/// The list to advertise. `upstream` is `None` when the upstream capabilities are not known
/// (the greeting) or the upstream is unavailable: then only our own set is shown.
pub fn client_capabilities(upstream: Option<&[String]>, leg: Leg) -> Vec<String> {
    let mut caps: Vec<String> = vec!["IMAP4rev1".into()];
    for cap in upstream.unwrap_or_default() {
        if is_clean_atom(cap) && !dropped(cap) && !caps.iter().any(|c| c.eq_ignore_ascii_case(cap))
        {
            caps.push(cap.clone());
        }
    }
    caps.push("LITERAL+".into());
    caps.push("ID".into());
    match leg {
        Leg::Plain => {}
        Leg::StartTlsOffered => {
            caps.push("STARTTLS".into());
            caps.push("LOGINDISABLED".into());
        }
        Leg::Tls => {
            caps.push("SASL-IR".into());
            caps.push("AUTH=PLAIN".into());
        }
    }
    caps
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exchange Online's pre-auth list (FACTS.md).
    fn exchange() -> Vec<String> {
        "IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+"
            .split(' ')
            .map(String::from)
            .collect()
    }

    #[test]
    fn exchange_filtered_per_leg() {
        let up = exchange();
        assert_eq!(
            client_capabilities(Some(&up), Leg::Plain).join(" "),
            "IMAP4rev1 IMAP4 UIDPLUS MOVE UNSELECT CHILDREN IDLE NAMESPACE LITERAL+ ID"
        );
        assert_eq!(
            client_capabilities(Some(&up), Leg::Tls).join(" "),
            "IMAP4rev1 IMAP4 UIDPLUS MOVE UNSELECT CHILDREN IDLE NAMESPACE LITERAL+ ID SASL-IR AUTH=PLAIN"
        );
        assert_eq!(
            client_capabilities(Some(&up), Leg::StartTlsOffered).join(" "),
            "IMAP4rev1 IMAP4 UIDPLUS MOVE UNSELECT CHILDREN IDLE NAMESPACE LITERAL+ ID STARTTLS LOGINDISABLED"
        );
    }

    #[test]
    fn base_sets() {
        assert_eq!(
            client_capabilities(None, Leg::Plain).join(" "),
            "IMAP4rev1 LITERAL+ ID"
        );
        assert_eq!(
            client_capabilities(None, Leg::Tls).join(" "),
            "IMAP4rev1 LITERAL+ ID SASL-IR AUTH=PLAIN"
        );
    }

    #[test]
    fn upstream_junk_and_duplicates_are_dropped() {
        let up: Vec<String> = [
            "STARTTLS",
            "LOGINDISABLED",
            "auth=xoauth2",
            "literal-",
            "IDLE",
            "idle",
            "",
            "BAD]ATOM",
            "has space",
            "CTL\r\n",
            "(X)",
            "X-VENDOR",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            client_capabilities(Some(&up), Leg::Plain).join(" "),
            "IMAP4rev1 IDLE X-VENDOR LITERAL+ ID"
        );
    }
}
