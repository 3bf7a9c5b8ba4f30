//! `admin:` besides `listen`: the admin page's access control and TLS. A non-loopback `listen`
//! must have both `password_hash` and `cert`/`key` (the page authorises accounts: nobody on the
//! network may use it without the password, and the password and session cookie never cross it
//! in clear). `hostnames` are the names the `Host` header may carry besides loopback ones (the
//! DNS-rebinding guard); `redirect_uri` is where the identity provider sends the browser back.

use std::net::SocketAddr;

use crate::config::error::ConfigError;
use crate::config::placeholders::published_hash;
use crate::config::resolved::AdminSettings;
use crate::config::schema::RawAdmin;
use crate::password_hash::check_hash;

use super::Resolver;

impl Resolver<'_> {
    pub(super) fn admin(
        &self,
        raw: Option<RawAdmin>,
        listen: Option<SocketAddr>,
    ) -> Result<AdminSettings, ConfigError> {
        let (Some(raw), Some(listen)) = (raw, listen) else {
            return Ok(AdminSettings::default());
        };
        let mut hostnames = Vec::new();
        for (i, name) in raw.hostnames.iter().enumerate() {
            let lower = name.trim().to_ascii_lowercase();
            let ok = !lower.is_empty()
                && (lower.parse::<std::net::IpAddr>().is_ok()
                    || rustls::pki_types::DnsName::try_from(lower.as_str()).is_ok());
            if !ok || lower.contains(':') && lower.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(self.err(
                    format!("admin.hostnames[{i}]"),
                    format!(
                        "`{name}` is not a host name or IP address (give the name without scheme \
                         or port, e.g. authbridge.example.com)"
                    ),
                ));
            }
            hostnames.push(lower);
        }
        let password_hash = match raw.password_hash {
            None => None,
            Some(hash) => {
                if let Some(password) = published_hash(&hash) {
                    return Err(self.err_at_value(
                        "admin.password_hash",
                        &hash,
                        format!(
                            "this is the example's published hash of the password `{password}`, \
                             which anyone can look up: put the output of `authbridge \
                             hash-password` here"
                        ),
                    ));
                }
                check_hash(&hash).map_err(|why| {
                    self.err(
                        "admin.password_hash",
                        format!("{why}; create one with `authbridge hash-password`"),
                    )
                })?;
                Some(hash)
            }
        };
        let (tls, cert_files) = match (&raw.cert, &raw.key) {
            (None, None) => (None, None),
            (Some(cert), Some(key)) => {
                let (cert, key) = (self.path(cert), self.path(key));
                let config = crate::tls::server_config(&cert, &key)
                    .map_err(|e| self.err("admin.cert", e.to_string()))?;
                (Some(config), Some((cert, key)))
            }
            _ => {
                return Err(self.err(
                    "admin.cert",
                    "admin.cert and admin.key go together (PEM files; `authbridge gen-cert` makes \
                     a localhost pair)",
                ));
            }
        };
        if !listen.ip().is_loopback() {
            if password_hash.is_none() {
                return Err(self.err(
                    "admin.password_hash",
                    format!(
                        "admin.listen {listen} is not a loopback address: the admin page can \
                         authorise accounts, so it needs a password there — set \
                         admin.password_hash (from `authbridge hash-password`), or bind \
                         127.0.0.1 and reach it with `ssh -L` / `kubectl port-forward`"
                    ),
                ));
            }
            if tls.is_none() {
                return Err(self.err(
                    "admin.cert",
                    format!(
                        "admin.listen {listen} is not a loopback address: the admin password and \
                         session cookie would cross the network in clear — set admin.cert and \
                         admin.key (PEM), or bind 127.0.0.1 and use `ssh -L` / `kubectl \
                         port-forward`"
                    ),
                ));
            }
        }
        let redirect_uri = match raw.redirect_uri {
            None => None,
            Some(uri) => {
                self.admin_redirect_uri(&uri, tls.is_some(), &hostnames)?;
                Some(uri)
            }
        };
        Ok(AdminSettings {
            hostnames,
            password_hash,
            tls,
            cert_files,
            redirect_uri,
        })
    }

    /// `admin.redirect_uri`: `http(s)://HOST[:PORT]/callback`, https exactly when the admin
    /// listener has TLS, HOST a loopback name or one of `hostnames` (else the page could not
    /// be reached under it).
    fn admin_redirect_uri(
        &self,
        uri: &str,
        tls: bool,
        hostnames: &[String],
    ) -> Result<(), ConfigError> {
        let want = if tls { "https" } else { "http" };
        let example = format!("{want}://localhost:9925/callback");
        let bad = |why: String| self.err("admin.redirect_uri", format!("{why}, e.g. {example}"));
        let parsed =
            url::Url::parse(uri).map_err(|e| bad(format!("`{uri}` is not a URL ({e})")))?;
        if parsed.scheme() != want {
            return Err(bad(format!(
                "`{uri}` must start with {want}:// (the admin listener {} TLS)",
                if tls { "has" } else { "has no" }
            )));
        }
        if parsed.path() != "/callback" || parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad(format!(
                "`{uri}` must end in the path /callback, without query or fragment"
            )));
        }
        let host = parsed
            .host_str()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_ascii_lowercase();
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback && !hostnames.contains(&host) {
            return Err(bad(format!(
                "the host of `{uri}` is neither a loopback name nor listed in admin.hostnames (the \
                 page refuses requests for other names)"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testkit::parse;

    fn hash() -> String {
        crate::auth::hash_password(b"admin password").unwrap()
    }

    #[test]
    fn non_loopback_needs_a_password_and_tls() {
        let e = parse("admin: { listen: 0.0.0.0:9925 }\n").unwrap_err();
        assert!(
            e.contains("admin.password_hash: admin.listen 0.0.0.0:9925 is not a loopback"),
            "{e}"
        );
        let e = parse(&format!(
            "admin: {{ listen: 192.0.2.1:9925, password_hash: \"{}\" }}\n",
            hash()
        ))
        .unwrap_err();
        assert!(
            e.contains("admin.cert: admin.listen 192.0.2.1:9925 is not a loopback"),
            "{e}"
        );
        // Loopback: neither is needed.
        let c = parse("admin: { listen: 127.0.0.1:9925 }\n").unwrap();
        assert!(c.admin.password_hash.is_none() && c.admin.tls.is_none());
    }

    #[test]
    fn keys_are_checked() {
        let e = parse("admin: { password_hash: \"plain\" }\n").unwrap_err();
        assert!(e.contains("admin.password_hash:"), "{e}");
        let e = parse("admin: { cert: c.pem }\n").unwrap_err();
        assert!(e.contains("admin.cert and admin.key go together"), "{e}");
        let e = parse("admin: { hostnames: [\"http://x\"] }\n").unwrap_err();
        assert!(e.contains("admin.hostnames[0]"), "{e}");
        let c = parse("admin: { hostnames: [Admin.Example.com, 10.0.0.5] }\n").unwrap();
        assert_eq!(c.admin.hostnames, ["admin.example.com", "10.0.0.5"]);
        for bad in [
            "https://localhost:9925/callback",
            "http://localhost:9925/cb",
            "http://evil.example/callback",
            "http://localhost:9925/callback?x=1",
        ] {
            let e = parse(&format!("admin: {{ redirect_uri: \"{bad}\" }}\n")).unwrap_err();
            assert!(e.contains("admin.redirect_uri"), "{bad}: {e}");
        }
        let c = parse("admin: { redirect_uri: \"http://localhost:8080/callback\" }\n").unwrap();
        assert_eq!(
            c.admin.redirect_uri.as_deref(),
            Some("http://localhost:8080/callback")
        );
    }
}
