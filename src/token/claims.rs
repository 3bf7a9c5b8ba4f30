//! Reading what an access token grants, for diagnosis only: the JWT payload is base64url-decoded
//! and its claims read (`aud`, `tid`, `appid`/`azp`, `scp`/`roles`, `upn`/`unique_name`, `exp`).
//! The signature is NOT checked — nothing here decides access; Exchange does that. A token that is
//! not a three-part JWT with a JSON payload (Google's, some custom providers') is `Opaque`, which
//! is not an error.
//!
//! The token itself is never returned or printed, only the claims above. Input is bounded:
//! tokens longer than [`MAX_TOKEN`] are reported opaque without being decoded.

use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use serde_json::Value;

/// Longest token decoded (Entra tokens are 1.5–3 KB; RFC 4954 sizes AUTH lines at 12,288 octets).
pub const MAX_TOKEN: usize = 16 * 1024;
/// At most this many `scp`/`roles` entries are kept (a real token has a handful).
const MAX_PERMISSIONS: usize = 64;
/// Claim values longer than this are cut (they are only shown to the admin).
const MAX_CLAIM: usize = 256;

/// The claims of a JWT access token that matter to Exchange Online.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Claims {
    /// `aud` (the first one when it is a list).
    pub aud: Option<String>,
    pub tid: Option<String>,
    /// `appid` (v1.0 tokens) or `azp` (v2.0).
    pub appid: Option<String>,
    /// Delegated permissions (`scp`, space-separated in the token).
    pub scp: Vec<String>,
    /// Application permissions (`roles`).
    pub roles: Vec<String>,
    /// `upn`, else `unique_name`, else `preferred_username`.
    pub upn: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: Option<u64>,
}

impl Claims {
    /// A delegated (user) token: it has `scp` or a user name; app-only tokens have neither.
    pub fn is_delegated(&self) -> bool {
        !self.scp.is_empty() || self.upn.is_some()
    }
}

/// What a token turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inspection {
    Jwt(Claims),
    /// Not a JWT (or not one we can read): nothing to compare, not an error.
    Opaque,
}

/// Decode `token`'s claims without checking its signature.
pub fn inspect(token: &str) -> Inspection {
    if token.len() > MAX_TOKEN {
        return Inspection::Opaque;
    }
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Inspection::Opaque;
    };
    let payload = payload.trim_end_matches('=');
    let Ok(bytes) = URL_SAFE_NO_PAD
        .decode(payload)
        .or_else(|_| URL_SAFE.decode(payload))
    else {
        return Inspection::Opaque;
    };
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&bytes) else {
        return Inspection::Opaque;
    };
    let text = |k: &str| -> Option<String> {
        let v = match map.get(k)? {
            Value::String(s) => s.clone(),
            Value::Array(a) => a.first()?.as_str()?.to_string(),
            _ => return None,
        };
        Some(cut(v))
    };
    let list = |k: &str| -> Vec<String> {
        match map.get(k) {
            Some(Value::String(s)) => s
                .split_ascii_whitespace()
                .take(MAX_PERMISSIONS)
                .map(|s| cut(s.to_string()))
                .collect(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .take(MAX_PERMISSIONS)
                .map(|s| cut(s.to_string()))
                .collect(),
            _ => Vec::new(),
        }
    };
    Inspection::Jwt(Claims {
        aud: text("aud"),
        tid: text("tid"),
        appid: text("appid").or_else(|| text("azp")),
        scp: list("scp"),
        roles: list("roles"),
        upn: text("upn")
            .or_else(|| text("unique_name"))
            .or_else(|| text("preferred_username")),
        exp: map.get("exp").and_then(Value::as_u64),
    })
}

fn cut(mut s: String) -> String {
    if s.len() > MAX_CLAIM {
        let mut end = MAX_CLAIM;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn delegated_and_app_tokens() {
        let t = jwt(
            r#"{"aud":"https://outlook.office.com","tid":"t","appid":"a","scp":"IMAP.AccessAsUser.All SMTP.Send","upn":"u@contoso.com","exp":1700000000}"#,
        );
        let Inspection::Jwt(c) = inspect(&t) else {
            panic!("not a JWT")
        };
        assert_eq!(c.aud.as_deref(), Some("https://outlook.office.com"));
        assert_eq!(c.scp, ["IMAP.AccessAsUser.All", "SMTP.Send"]);
        assert_eq!(c.upn.as_deref(), Some("u@contoso.com"));
        assert_eq!(c.exp, Some(1_700_000_000));
        assert!(c.is_delegated());

        let t = jwt(
            r#"{"aud":["https://outlook.office365.com"],"azp":"b","roles":["IMAP.AccessAsApp"]}"#,
        );
        let Inspection::Jwt(c) = inspect(&t) else {
            panic!("not a JWT")
        };
        assert_eq!(c.aud.as_deref(), Some("https://outlook.office365.com"));
        assert_eq!(c.appid.as_deref(), Some("b"));
        assert_eq!(c.roles, ["IMAP.AccessAsApp"]);
        assert!(!c.is_delegated());
    }

    #[test]
    fn opaque_tokens_are_not_errors() {
        for t in [
            "ya29.a0AfH6SMBx",
            "EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA",
            "a.b.c",
            "a.b.c.d.e",
            "",
            &jwt("[1,2]"),
            &jwt("not json"),
        ] {
            assert_eq!(inspect(t), Inspection::Opaque, "{t}");
        }
        let long = jwt(&format!(r#"{{"aud":"{}"}}"#, "x".repeat(MAX_TOKEN)));
        assert_eq!(inspect(&long), Inspection::Opaque);
    }

    #[test]
    fn long_claims_are_cut() {
        let t = jwt(&format!(r#"{{"upn":"{}"}}"#, "é".repeat(500)));
        let Inspection::Jwt(c) = inspect(&t) else {
            panic!()
        };
        assert!(c.upn.unwrap().len() <= MAX_CLAIM);
    }
}
