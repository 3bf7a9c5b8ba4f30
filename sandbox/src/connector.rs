//! The fake Exchange Online inbound connector (`<tenant>.mail.protection.outlook.com:25`): who it
//! attributes to the tenant.
//!
//! FACTS.md "Relay connector": the connector takes mail only from an allow-listed (static) IP or
//! from a sender whose TLS client certificate names a tenant domain (CN or SAN) with the full chain
//! sent in STARTTLS; anything else gets `550 5.7.64 TenantAttribution; Relay Access Denied` at
//! RCPT TO. A certificate that does not verify counts as no certificate. With Reject Direct Send
//! switched on (`Set-OrganizationConfig -RejectDirectSend $true`), an unattributed sender whose
//! envelope sender (MAIL FROM) is in one of the tenant's accepted domains gets [`REJECT_DIRECT_SEND`]
//! (`550 5.7.68`) instead. The SMTP dialogue itself lives in `smtp.rs` (connector mode); this
//! module holds the settings and the decisions.
//!
//! With [`PasswordAuth`] set, the same listener plays a transactional provider's SMTP endpoint
//! instead (Amazon SES, Postmark): after STARTTLS it offers `AUTH` with the configured
//! mechanisms, takes the one username and password (`235 2.7.0`, else `535 5.7.8`), and
//! requires the login before MAIL (`530 5.7.0 Authentication required`); a logged-in sender is
//! not subject to the tenant attribution.

use std::net::IpAddr;

use rustls::pki_types::CertificateDer;

/// Exchange Online's refusal of an unattributed sender (no inbound connector matched).
pub(crate) const TENANT_ATTRIBUTION: &str = "550 5.7.64 TenantAttribution; Relay Access Denied";
/// Exchange Online's refusal when the tenant rejects Direct Send and no inbound connector matched
/// a sender using one of the tenant's accepted domains (docs/microsoft.md, "check diagnostics").
pub(crate) const REJECT_DIRECT_SEND: &str = "550 5.7.68 TenantInboundAttribution; Direct Send not allowed for this organization from unauthorized sources";

/// The connector's allow-lists, changeable while the sandbox runs.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub allowed_ips: Vec<IpAddr>,
    pub allowed_cert_names: Vec<String>,
    pub starttls: bool,
    /// The tenant's Reject Direct Send setting. Its accepted domains are modelled by
    /// `allowed_cert_names` (a certificate connector's names must be accepted domains).
    pub reject_direct_send: bool,
    /// Require SMTP AUTH with a password (a transactional provider).
    pub auth: Option<PasswordAuth>,
}

/// The refusal (without the trailing `[host]`) for a sender the connector did not attribute,
/// given its envelope sender.
pub(crate) fn refusal(settings: &Settings, mail_from: &str) -> &'static str {
    let domain = mail_from
        .rsplit_once('@')
        .map(|(_, d)| d)
        .unwrap_or_default();
    let accepted = !domain.is_empty()
        && settings
            .allowed_cert_names
            .iter()
            .any(|n| name_matches(n, domain));
    if settings.reject_direct_send && accepted {
        REJECT_DIRECT_SEND
    } else {
        TENANT_ATTRIBUTION
    }
}

/// The one login a provider-like connector takes, and what it offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswordAuth {
    pub username: String,
    pub password: String,
    /// Advertised after TLS, e.g. `["PLAIN", "LOGIN"]`; only PLAIN and LOGIN are understood.
    pub mechanisms: Vec<String>,
}

impl PasswordAuth {
    pub fn new(username: &str, password: &str) -> PasswordAuth {
        PasswordAuth {
            username: username.to_owned(),
            password: password.to_owned(),
            mechanisms: vec!["PLAIN".into(), "LOGIN".into()],
        }
    }

    /// Whether `mechanism` is offered.
    pub(crate) fn offers(&self, mechanism: &str) -> bool {
        self.mechanisms
            .iter()
            .any(|m| m.eq_ignore_ascii_case(mechanism))
    }

    /// Check an RFC 4616 PLAIN message (`authzid \0 authcid \0 passwd`, decoded).
    pub(crate) fn check_plain(&self, decoded: &[u8]) -> bool {
        let mut parts = decoded.split(|b| *b == 0);
        let (Some(authzid), Some(user), Some(pass), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        (authzid.is_empty() || authzid == user) && self.check(user, pass)
    }

    pub(crate) fn check(&self, user: &[u8], pass: &[u8]) -> bool {
        user == self.username.as_bytes() && pass == self.password.as_bytes()
    }
}

/// What the client's TLS certificate amounted to, decided once after the handshake.
#[derive(Clone, Debug, Default)]
pub(crate) enum ClientCert {
    /// No TLS, or TLS without a client certificate.
    #[default]
    None,
    /// A certificate was sent but its chain does not lead to the sandbox root (e.g. the
    /// intermediate was left out): treated as no certificate.
    Unverified(String),
    /// A verified certificate and the names it carries (DNS SANs and CN, lower-cased).
    Verified(Vec<String>),
}

impl ClientCert {
    /// Judge the chain a client sent (leaf first).
    pub(crate) fn evaluate(chain: Option<&[CertificateDer<'_>]>) -> ClientCert {
        let Some(chain) = chain.filter(|c| !c.is_empty()) else {
            return ClientCert::None;
        };
        match crate::tls::verify_client_chain(chain) {
            Ok(()) => ClientCert::Verified(cert_names(&chain[0])),
            Err(e) => ClientCert::Unverified(e),
        }
    }

    /// The verified names (empty unless verified).
    pub(crate) fn names(&self) -> &[String] {
        match self {
            ClientCert::Verified(n) => n,
            _ => &[],
        }
    }

    fn describe(&self) -> String {
        match self {
            ClientCert::None => "no client certificate".into(),
            ClientCert::Unverified(e) => format!("client certificate not verified ({e})"),
            ClientCert::Verified(n) => format!("client certificate names {n:?}"),
        }
    }
}

/// Why the connector took a sender as the tenant's.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Attribution {
    Ip(IpAddr),
    /// The certificate name that matched an allowed name.
    Certificate(String),
}

/// Attribute a sender to the tenant by its IP or its verified certificate; `Err` says why not.
pub(crate) fn attribute(
    settings: &Settings,
    ip: IpAddr,
    cert: &ClientCert,
) -> Result<Attribution, String> {
    let ip = ip.to_canonical();
    if settings.allowed_ips.iter().any(|a| a.to_canonical() == ip) {
        return Ok(Attribution::Ip(ip));
    }
    for name in cert.names() {
        if settings
            .allowed_cert_names
            .iter()
            .any(|allowed| name_matches(allowed, name))
        {
            return Ok(Attribution::Certificate(name.clone()));
        }
    }
    Err(format!("{ip} not allow-listed; {}", cert.describe()))
}

/// Case-insensitive name match; an allowed `*.example.com` matches one label below example.com.
pub(crate) fn name_matches(allowed: &str, name: &str) -> bool {
    let allowed = allowed.trim().trim_end_matches('.');
    let name = name.trim().trim_end_matches('.');
    if let Some(suffix) = allowed.strip_prefix("*.") {
        return name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(suffix));
    }
    allowed.eq_ignore_ascii_case(name)
}

/// The DNS SAN names and subject CNs of a certificate, lower-cased, without duplicates.
pub(crate) fn cert_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = Vec::new();
    let mut add = |n: &str| {
        let n = n.trim().to_ascii_lowercase();
        if !n.is_empty() && !names.contains(&n) {
            names.push(n);
        }
    };
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for gn in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(n) = gn {
                add(n);
            }
        }
    }
    for cn in cert.subject().iter_common_name() {
        if let Ok(n) = cn.as_str() {
            add(n);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn password_auth_checks_plain_and_login() {
        let a = PasswordAuth::new("relay-user", "s3cret");
        assert!(a.check_plain(b"\0relay-user\0s3cret"));
        assert!(a.check_plain(b"relay-user\0relay-user\0s3cret"));
        assert!(!a.check_plain(b"other\0relay-user\0s3cret"));
        assert!(!a.check_plain(b"\0relay-user\0wrong"));
        assert!(!a.check_plain(b"\0relay-user\0s3cret\0"));
        assert!(a.check(b"relay-user", b"s3cret"));
        assert!(a.offers("login") && !a.offers("CRAM-MD5"));
    }

    #[test]
    fn names_match() {
        assert!(name_matches("contoso.com", "Contoso.COM"));
        assert!(name_matches("contoso.com.", "contoso.com"));
        assert!(!name_matches("contoso.com", "mail.contoso.com"));
        assert!(!name_matches("contoso.com", "contoso.com.evil.test"));
        assert!(name_matches("*.contoso.com", "mail.contoso.com"));
        assert!(!name_matches("*.contoso.com", "a.b.contoso.com"));
        assert!(!name_matches("*.contoso.com", "contoso.com"));
        assert!(!name_matches("*.contoso.com", "evilcontoso.com"));
    }

    #[test]
    fn issued_certificate_names_and_chain() {
        let full = crate::tls::issue_client_cert("Contoso.com", true).unwrap();
        let chain = full.chain_der();
        assert_eq!(chain.len(), 2);
        assert_eq!(cert_names(&chain[0]), vec!["contoso.com".to_string()]);
        let verified = ClientCert::evaluate(Some(&chain));
        assert_eq!(verified.names(), ["contoso.com".to_string()]);

        let leaf_only = crate::tls::issue_client_cert("contoso.com", false).unwrap();
        let chain = leaf_only.chain_der();
        assert_eq!(chain.len(), 1);
        assert!(matches!(
            ClientCert::evaluate(Some(&chain)),
            ClientCert::Unverified(_)
        ));
        assert!(matches!(ClientCert::evaluate(None), ClientCert::None));

        let settings = Settings {
            allowed_ips: vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))],
            allowed_cert_names: vec!["contoso.com".into()],
            starttls: true,
            reject_direct_send: false,
            auth: None,
        };
        let here = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(
            attribute(&settings, here, &verified),
            Ok(Attribution::Certificate("contoso.com".into()))
        );
        assert!(attribute(&settings, here, &ClientCert::None).is_err());
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert!(matches!(
            attribute(&settings, mapped, &ClientCert::None),
            Ok(Attribution::Ip(_))
        ));
    }

    #[test]
    fn reject_direct_send_only_for_accepted_domains() {
        let mut s = Settings {
            allowed_ips: Vec::new(),
            allowed_cert_names: vec!["contoso.com".into()],
            starttls: true,
            reject_direct_send: false,
            auth: None,
        };
        assert_eq!(refusal(&s, "glpi@contoso.com"), TENANT_ATTRIBUTION);
        s.reject_direct_send = true;
        assert_eq!(refusal(&s, "glpi@Contoso.COM"), REJECT_DIRECT_SEND);
        assert_eq!(refusal(&s, "glpi@fabrikam.com"), TENANT_ATTRIBUTION);
        assert_eq!(refusal(&s, ""), TENANT_ATTRIBUTION);
    }
}
