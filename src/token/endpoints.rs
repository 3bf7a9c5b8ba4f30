//! Well-known endpoints and default scopes per provider (FACTS.md, "Microsoft identity platform").

use super::provider::{Cloud, Endpoints, Flow, ProviderKind};

/// Microsoft identity platform v2.0 endpoints of `tenant` (a domain, a GUID, `organizations`,
/// `common`) in `cloud`.
pub fn microsoft_endpoints(tenant: &str, cloud: Cloud) -> Endpoints {
    let host = match cloud {
        Cloud::Global => "login.microsoftonline.com",
        Cloud::UsGov => "login.microsoftonline.us",
        Cloud::China => "login.partner.microsoftonline.cn",
    };
    let base = format!("https://{host}/{}/oauth2/v2.0", encode_path_segment(tenant));
    Endpoints {
        token_url: format!("{base}/token"),
        authorize_url: Some(format!("{base}/authorize")),
        device_code_url: Some(format!("{base}/devicecode")),
    }
}

/// Exchange Online's mail hosts in one cloud (FACTS.md, "Microsoft identity platform").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MailHosts {
    /// IMAP (993, implicit TLS) and POP3 (995, implicit TLS).
    pub imap: &'static str,
    pub pop3: &'static str,
    /// SMTP submission (587, STARTTLS).
    pub smtp: &'static str,
}

/// Where Exchange Online answers IMAP, POP3 and SMTP in `cloud`.
pub fn microsoft_mail_hosts(cloud: Cloud) -> MailHosts {
    match cloud {
        Cloud::Global => MailHosts {
            imap: "outlook.office365.com",
            pop3: "outlook.office365.com",
            smtp: "smtp.office365.com",
        },
        Cloud::UsGov => MailHosts {
            imap: "outlook.office365.us",
            pop3: "outlook.office365.us",
            smtp: "smtp.office365.us",
        },
        Cloud::China => MailHosts {
            imap: "partner.outlook.cn",
            pop3: "partner.outlook.cn",
            smtp: "partner.outlook.cn",
        },
    }
}

/// Google's OAuth2 endpoints.
pub fn google_endpoints() -> Endpoints {
    Endpoints {
        token_url: "https://oauth2.googleapis.com/token".to_owned(),
        authorize_url: Some("https://accounts.google.com/o/oauth2/v2/auth".to_owned()),
        device_code_url: Some("https://oauth2.googleapis.com/device/code".to_owned()),
    }
}

/// Scopes used when the config names none. Microsoft delegated: IMAP, POP and SMTP for one token plus
/// `offline_access` for a refresh token; Microsoft app-only: `.default` of Exchange Online. Custom
/// providers have no defaults (the config must list them).
pub fn default_scopes(kind: ProviderKind, flow: Flow) -> Vec<String> {
    let scopes: &[&str] = match (kind, flow) {
        (ProviderKind::Microsoft, Flow::ClientCredentials) => {
            &["https://outlook.office365.com/.default"]
        }
        (ProviderKind::Microsoft, _) => &[
            "https://outlook.office.com/IMAP.AccessAsUser.All",
            "https://outlook.office.com/POP.AccessAsUser.All",
            "https://outlook.office.com/SMTP.Send",
            "offline_access",
        ],
        (ProviderKind::Google, _) => &["https://mail.google.com/"],
        (ProviderKind::Custom, _) => &[],
    };
    scopes.iter().map(|s| (*s).to_owned()).collect()
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so a tenant cannot change the path.
fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microsoft_endpoints_per_cloud() {
        let cases = [
            (
                Cloud::Global,
                "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0",
            ),
            (
                Cloud::UsGov,
                "https://login.microsoftonline.us/contoso.onmicrosoft.com/oauth2/v2.0",
            ),
            (
                Cloud::China,
                "https://login.partner.microsoftonline.cn/contoso.onmicrosoft.com/oauth2/v2.0",
            ),
        ];
        for (cloud, base) in cases {
            let e = microsoft_endpoints("contoso.onmicrosoft.com", cloud);
            assert_eq!(e.token_url, format!("{base}/token"), "{cloud}");
            assert_eq!(
                e.authorize_url,
                Some(format!("{base}/authorize")),
                "{cloud}"
            );
            assert_eq!(
                e.device_code_url,
                Some(format!("{base}/devicecode")),
                "{cloud}"
            );
        }
    }

    #[test]
    fn tenant_cannot_escape_the_path() {
        let e = microsoft_endpoints("../evil/x?y", Cloud::Global);
        assert_eq!(
            e.token_url,
            "https://login.microsoftonline.com/..%2Fevil%2Fx%3Fy/oauth2/v2.0/token"
        );
        let guid = "72f988bf-86f1-41af-91ab-2d7cd011db47";
        assert!(
            microsoft_endpoints(guid, Cloud::Global)
                .token_url
                .contains(guid)
        );
    }

    #[test]
    fn mail_hosts_per_cloud() {
        assert_eq!(
            microsoft_mail_hosts(Cloud::Global).smtp,
            "smtp.office365.com"
        );
        assert_eq!(
            microsoft_mail_hosts(Cloud::Global).imap,
            "outlook.office365.com"
        );
        assert_eq!(microsoft_mail_hosts(Cloud::UsGov).smtp, "smtp.office365.us");
        assert_eq!(
            microsoft_mail_hosts(Cloud::UsGov).imap,
            "outlook.office365.us"
        );
        assert_eq!(
            microsoft_mail_hosts(Cloud::China).imap,
            "partner.outlook.cn"
        );
    }

    #[test]
    fn google() {
        let e = google_endpoints();
        assert_eq!(e.token_url, "https://oauth2.googleapis.com/token");
        assert!(e.authorize_url.is_some() && e.device_code_url.is_some());
    }

    #[test]
    fn scopes() {
        let delegated = default_scopes(ProviderKind::Microsoft, Flow::AuthorizationCode);
        assert_eq!(
            delegated,
            [
                "https://outlook.office.com/IMAP.AccessAsUser.All",
                "https://outlook.office.com/POP.AccessAsUser.All",
                "https://outlook.office.com/SMTP.Send",
                "offline_access",
            ]
        );
        assert_eq!(
            default_scopes(ProviderKind::Microsoft, Flow::DeviceCode),
            delegated
        );
        assert_eq!(
            default_scopes(ProviderKind::Microsoft, Flow::ClientCredentials),
            ["https://outlook.office365.com/.default"]
        );
        assert_eq!(
            default_scopes(ProviderKind::Google, Flow::AuthorizationCode),
            ["https://mail.google.com/"]
        );
        assert!(default_scopes(ProviderKind::Custom, Flow::DeviceCode).is_empty());
    }
}
