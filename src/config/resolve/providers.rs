//! The `providers:` section: each OAuth2 provider's kind, flow, endpoints, scopes, client
//! secret and the TLS settings for its token endpoint, resolved into a [`ProviderConfig`]; the
//! example's placeholder client id and tenant are refused.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::defaults;
use crate::config::error::ConfigError;
use crate::config::keywords::{CloudName, FlowName, ProviderType};
use crate::config::placeholders::{
    EXAMPLE_CLIENT_ID, EXAMPLE_TENANT, is_example_client_id, is_example_tenant,
};
use crate::config::schema::RawProvider;
use crate::config::schema::RawProxy;
use crate::config::secrets::Secrets;
use crate::token::{
    self, CertificateCredential, ClientAssertion, Cloud, CredentialKind, Endpoints, Flow,
    HttpClient, ProviderConfig, ProviderKind, ProxyConfig, ProxySetting,
};

use super::context::Resolver;

impl Resolver<'_> {
    pub(super) fn providers(
        &self,
        raw: BTreeMap<String, RawProvider>,
    ) -> Result<BTreeMap<String, Arc<ProviderConfig>>, ConfigError> {
        let mut providers = BTreeMap::new();
        for (name, p) in raw {
            let provider = self.provider(&name, p)?;
            providers.insert(name, Arc::new(provider));
        }
        Ok(providers)
    }

    fn provider(&self, name: &str, p: RawProvider) -> Result<ProviderConfig, ConfigError> {
        let at = format!("providers.{name}");
        self.placeholders(&at, &p)?;
        let credential = match (&p.client_secret, &p.client_certificate, &p.client_assertion) {
            (None, None, None) => CredentialKind::None,
            (Some(_), None, None) => CredentialKind::ClientSecret,
            (None, Some(_), None) => CredentialKind::ClientCertificate,
            (None, None, Some(_)) => CredentialKind::ClientAssertion,
            _ => {
                return Err(self.err(
                    at.clone(),
                    "set only one of `client_secret`, `client_certificate` and `client_assertion`",
                ));
            }
        };
        let assertion = match (&p.client_certificate, &p.client_assertion, self.secrets) {
            (_, _, Secrets::Skip) => None,
            (Some(c), _, Secrets::Read) => {
                let (cert, key) = (self.path(&c.cert), self.path(&c.key));
                let loaded = CertificateCredential::load(&cert, &key).map_err(|why| {
                    self.err(
                        format!("{at}.client_certificate"),
                        format!(
                            "{why} (cert {}, key {}: the PEM certificate uploaded to the app \
                             registration and its RSA private key)",
                            cert.display(),
                            key.display()
                        ),
                    )
                })?;
                Some(ClientAssertion::Certificate(Arc::new(loaded)))
            }
            (None, Some(a), Secrets::Read) => Some(ClientAssertion::File(self.path(&a.file))),
            (None, None, Secrets::Read) => None,
        };
        let proxy = self.proxy(&at, p.proxy)?;
        let client_secret = match self.secrets {
            Secrets::Read => p
                .client_secret
                .map(|s| {
                    s.read(|file| self.path(file))
                        .map_err(|message| self.err(format!("{at}.client_secret"), message))
                })
                .transpose()?,
            Secrets::Skip => None,
        };
        match p.kind {
            ProviderType::Microsoft
                if p.tenant.as_deref().unwrap_or("").is_empty() && p.token_url.is_none() =>
            {
                return Err(self.err(
                    format!("{at}.tenant"),
                    "a microsoft provider needs `tenant` (e.g. contoso.onmicrosoft.com or the tenant id)",
                ));
            }
            ProviderType::Custom if p.token_url.is_none() => {
                return Err(self.err(
                    format!("{at}.token_url"),
                    "a custom provider needs `token_url`",
                ));
            }
            _ => {}
        }
        if p.kind == ProviderType::Google && p.flow == FlowName::ClientCredentials {
            return Err(self.err(
                format!("{at}.flow"),
                "Gmail has no client_credentials grant for IMAP/SMTP: use authorization_code or \
                 device_code",
            ));
        }
        if let Some(uri) = &p.redirect_uri {
            let ok = (uri.starts_with("http://") || uri.starts_with("https://"))
                && uri.parse::<hyper::Uri>().is_ok_and(|u| u.host().is_some());
            if !ok {
                return Err(self.err(
                    format!("{at}.redirect_uri"),
                    "expected an http:// or https:// URL as registered in the app, e.g. \
                     http://localhost:8925/callback",
                ));
            }
        }
        if p.flow == FlowName::ClientCredentials && credential == CredentialKind::None {
            return Err(self.err(
                format!("{at}.client_secret"),
                "flow client_credentials needs a client credential: client_secret (a value, \
                 { env: NAME } or { file: PATH }), client_certificate: { cert, key } or \
                 client_assertion: { file }",
            ));
        }
        for (key, url) in [
            ("token_url", &p.token_url),
            ("authorize_url", &p.authorize_url),
            ("device_code_url", &p.device_code_url),
        ] {
            // The same check the token client makes: https://, or http:// to loopback (tests).
            if let Some(u) = url {
                token::check_endpoint_url(u).map_err(|why| {
                    self.err(
                        format!("{at}.{key}"),
                        format!("expected an https:// URL: {why}"),
                    )
                })?;
            }
        }
        let ca = p.ca_file.as_deref().map(|c| self.path(c));
        let tls = crate::tls::client_config(ca.as_deref())
            .map_err(|e| self.err(format!("{at}.ca_file"), e.to_string()))?;
        let http = HttpClient::new(tls, proxy);
        let kind = match p.kind {
            ProviderType::Microsoft => ProviderKind::Microsoft,
            ProviderType::Google => ProviderKind::Google,
            ProviderType::Custom => ProviderKind::Custom,
        };
        let flow = match p.flow {
            FlowName::AuthorizationCode => Flow::AuthorizationCode,
            FlowName::DeviceCode => Flow::DeviceCode,
            FlowName::ClientCredentials => Flow::ClientCredentials,
        };
        let cloud = match p.cloud {
            CloudName::Global => Cloud::Global,
            CloudName::Usgov => Cloud::UsGov,
            CloudName::China => Cloud::China,
        };
        let mut endpoints = match kind {
            ProviderKind::Microsoft => token::microsoft_endpoints(
                p.tenant.as_deref().unwrap_or(defaults::MICROSOFT_TENANT),
                cloud,
            ),
            ProviderKind::Google => token::google_endpoints(),
            ProviderKind::Custom => Endpoints {
                token_url: String::new(),
                authorize_url: None,
                device_code_url: None,
            },
        };
        if let Some(u) = p.token_url {
            endpoints.token_url = u;
        }
        if p.authorize_url.is_some() {
            endpoints.authorize_url = p.authorize_url;
        }
        if p.device_code_url.is_some() {
            endpoints.device_code_url = p.device_code_url;
        }
        let scopes = match p.scopes {
            Some(s) if s.is_empty() => {
                return Err(self.err(
                    format!("{at}.scopes"),
                    "expected at least one scope (or leave scopes out for the defaults)",
                ));
            }
            Some(s) => s,
            None => token::default_scopes(kind, flow),
        };
        Ok(ProviderConfig {
            name: name.to_owned(),
            kind,
            flow,
            client_id: p.client_id,
            credential,
            client_secret,
            assertion,
            endpoints,
            scopes,
            redirect_uri: p.redirect_uri,
            http,
        })
    }

    /// `proxy:` absent (the environment), `none`, or `{ url, username, password }`.
    fn proxy(&self, at: &str, raw: Option<RawProxy>) -> Result<ProxySetting, ConfigError> {
        let at = format!("{at}.proxy");
        let server = match raw {
            None => return Ok(ProxySetting::Environment),
            Some(RawProxy::Keyword(k)) if k == "none" => return Ok(ProxySetting::Direct),
            Some(RawProxy::Keyword(_)) => {
                return Err(self.err(
                    at,
                    "expected `none` or { url: http://proxy:3128, username, password }",
                ));
            }
            Some(RawProxy::Server(s)) => s,
        };
        let (url, in_url) = token::parse_proxy_url(&server.url)
            .map_err(|why| self.err(format!("{at}.url"), why))?;
        if in_url.is_some() {
            return Err(self.err(
                format!("{at}.url"),
                "put the proxy's credentials into `username` and `password`, not into the URL \
                 (the URL shows up in logs)",
            ));
        }
        if server.password.is_some() && server.username.is_none() {
            return Err(self.err(
                format!("{at}.password"),
                "a proxy password needs `username` too",
            ));
        }
        let password = match (server.password, self.secrets) {
            (Some(p), Secrets::Read) => Some(
                p.read(|file| self.path(file))
                    .map_err(|message| self.err(format!("{at}.password"), message))?,
            ),
            _ => None,
        };
        Ok(ProxySetting::Configured(ProxyConfig {
            url,
            username: server.username,
            password,
        }))
    }

    /// The example's values left in place: an all-zero `client_id` always; the example tenant
    /// when the provider talks to Microsoft's own endpoints (no `token_url`).
    fn placeholders(&self, at: &str, p: &RawProvider) -> Result<(), ConfigError> {
        if p.client_id.trim().is_empty() {
            return Err(self.err(
                format!("{at}.client_id"),
                "expected the app registration's Application (client) ID",
            ));
        }
        if is_example_client_id(&p.client_id) {
            return Err(self.err_at_value(
                format!("{at}.client_id"),
                &p.client_id,
                format!(
                    "{EXAMPLE_CLIENT_ID} is the example's placeholder: put your app registration's \
                     Application (client) ID here (Entra admin center → App registrations → your \
                     app → Overview)"
                ),
            ));
        }
        if let Some(tenant) = &p.tenant
            && p.kind == ProviderType::Microsoft
            && p.token_url.is_none()
            && is_example_tenant(tenant)
        {
            return Err(self.err_at_value(
                format!("{at}.tenant"),
                tenant,
                format!(
                    "{EXAMPLE_TENANT} is the example's placeholder: put your tenant's domain \
                     (yourcompany.onmicrosoft.com) or its tenant ID (a GUID, Entra admin center \
                     → Overview)"
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testkit::parse;

    /// A custom provider with `key: url` (and an https token_url when `key` is another one).
    fn provider(key: &str, url: &str) -> String {
        let token_url = if key == "token_url" {
            String::new()
        } else {
            "    token_url: https://idp.example.com/token\n".to_owned()
        };
        format!(
            "providers:\n  idp:\n    type: custom\n    client_id: c\n    flow: authorization_code\n\
             {token_url}    {key}: \"{url}\"\n"
        )
    }

    #[test]
    fn plain_http_endpoints_only_on_loopback() {
        for key in ["token_url", "authorize_url", "device_code_url"] {
            for url in [
                "http://login.example.com/token",
                "http://10.0.0.5:8080/token",
                "http://[2001:db8::1]/token",
                "http://localhost.example.com/token",
                "HTTP://login.example.com/token",
            ] {
                let e = parse(&provider(key, url)).unwrap_err();
                assert!(
                    e.starts_with(&format!("/etc/authbridge/test.yaml: providers.idp.{key}: ")),
                    "{key} {url}: {e}"
                );
                assert!(e.contains("https://"), "{key} {url}: {e}");
            }
            for url in [
                "https://login.example.com/token",
                "http://127.0.0.1:8080/token",
                "http://127.0.0.2/token",
                "http://[::1]:8080/token",
                "http://localhost:8080/token",
                "http://LOCALHOST/token",
            ] {
                parse(&provider(key, url)).unwrap_or_else(|e| panic!("{key} {url}: {e}"));
            }
            for bad in ["ftp://x/token", "not a url", "https://"] {
                let e = parse(&provider(key, bad)).unwrap_err();
                assert!(
                    e.contains(&format!("providers.idp.{key}")),
                    "{key} {bad}: {e}"
                );
            }
        }
    }

    fn with(extra: &str) -> String {
        format!(
            "providers:\n  m365:\n    type: microsoft\n    tenant: t.onmicrosoft.com\n    client_id: c\n    \
             flow: client_credentials\n{extra}"
        )
    }

    #[test]
    fn proxy_settings() {
        use crate::token::CredentialKind;
        let c = parse(&with("    client_secret: s\n    proxy: none\n")).unwrap();
        let p = &c.providers["m365"];
        assert_eq!(p.http.describe_proxy(), "none (proxy: none)");
        assert_eq!(p.credential, CredentialKind::ClientSecret);
        let c = parse(&with(
            "    client_secret: s\n    proxy: { url: \"http://proxy.corp:3128\", username: u, password: pw }\n",
        ))
        .unwrap();
        assert_eq!(
            c.providers["m365"].http.describe_proxy(),
            "http://proxy.corp:3128/ (with credentials)"
        );
        for (proxy, key, says) in [
            (
                "proxy: { url: \"http://u:pw@proxy:3128\" }",
                "proxy.url",
                "username",
            ),
            (
                "proxy: { url: \"socks5://proxy:1080\" }",
                "proxy.url",
                "scheme",
            ),
            (
                "proxy: { url: \"http://proxy:3128\", password: pw }",
                "proxy.password",
                "username",
            ),
            ("proxy: direct", "proxy", "none"),
        ] {
            let e = parse(&with(&format!("    client_secret: s\n    {proxy}\n"))).unwrap_err();
            assert!(e.contains(&format!("providers.m365.{key}")), "{proxy}: {e}");
            assert!(e.contains(says), "{proxy}: {e}");
            assert!(!e.contains("pw@"), "{e}");
        }
    }

    #[test]
    fn credentials_exclusive_and_certificate_checked() {
        let e = parse(&with(
            "    client_secret: s\n    client_assertion: { file: /var/run/token }\n",
        ))
        .unwrap_err();
        assert!(e.contains("only one of"), "{e}");
        let e = parse(&with("")).unwrap_err();
        assert!(e.contains("client_certificate"), "{e}");
        let c = parse(&with("    client_assertion: { file: token }\n")).unwrap();
        let p = &c.providers["m365"];
        assert_eq!(p.credential, crate::token::CredentialKind::ClientAssertion);
        assert!(
            p.describe_credential().contains("/etc/authbridge/token"),
            "{}",
            p.describe_credential()
        );
        let key = format!(
            "{}/tests/data/assertion/app.key",
            env!("CARGO_MANIFEST_DIR")
        );
        let e = parse(&with(&format!(
            "    client_certificate: {{ cert: /nonexistent/app.pem, key: {key} }}\n"
        )))
        .unwrap_err();
        assert!(e.contains("providers.m365.client_certificate"), "{e}");
    }
}
