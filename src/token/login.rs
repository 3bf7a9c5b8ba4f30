//! Building blocks of the first delegated authorisation (`authbridge login`): PKCE (RFC 7636) and
//! the authorize URL for the authorization-code flow. The code → token exchange itself goes through
//! `TokenManager::exchange_and_store` (grant `authorization_code` or [`DEVICE_CODE_GRANT_TYPE`]).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use super::provider::{ProviderConfig, ProviderKind};
use crate::secret::SecretString;

/// `grant_type` of a device-code token request (RFC 8628 §3.4).
pub const DEVICE_CODE_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// A PKCE pair: send `challenge` (method S256) in the authorize URL, `verifier` in the exchange.
#[derive(Debug)]
pub struct Pkce {
    pub verifier: SecretString,
    pub challenge: String,
}

impl Pkce {
    /// A fresh verifier of 32 random bytes (43 base64url characters).
    pub fn generate() -> std::io::Result<Pkce> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| std::io::Error::other(e.to_string()))?;
        let verifier = SecretString::new(URL_SAFE_NO_PAD.encode(raw));
        zeroize::Zeroize::zeroize(&mut raw);
        Ok(Pkce::from_verifier(verifier))
    }

    /// The S256 challenge of a given verifier.
    pub fn from_verifier(verifier: SecretString) -> Pkce {
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.expose().as_bytes()));
        Pkce {
            verifier,
            challenge,
        }
    }
}

/// A random `state` value (16 bytes, base64url) to tie the redirect to the request.
pub fn random_state() -> std::io::Result<String> {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(raw))
}

/// The URL to open in a browser for the authorization-code flow with PKCE, or `None` when the
/// provider has no `authorize_url`.
pub fn authorize_url(
    provider: &ProviderConfig,
    redirect_uri: &str,
    state: &str,
    pkce: &Pkce,
    login_hint: Option<&str>,
) -> Option<String> {
    let base = provider.endpoints.authorize_url.as_deref()?;
    let scope = provider.scopes.join(" ");
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("client_id", &provider.client_id)
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("response_mode", "query")
        .append_pair("state", state)
        .append_pair("code_challenge", &pkce.challenge)
        .append_pair("code_challenge_method", "S256");
    if !scope.is_empty() {
        q.append_pair("scope", &scope);
    }
    if let Some(hint) = login_hint {
        q.append_pair("login_hint", hint);
    }
    if provider.kind == ProviderKind::Google {
        // Google returns a refresh token only for offline access, and again only with consent.
        q.append_pair("access_type", "offline")
            .append_pair("prompt", "consent");
    }
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}{}", q.finish()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::token::endpoints::default_scopes;
    use crate::token::provider::{Endpoints, Flow};

    #[test]
    fn pkce_rfc7636_appendix_b() {
        let p = Pkce::from_verifier(SecretString::from(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
        ));
        assert_eq!(p.challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        let fresh = Pkce::generate().unwrap();
        assert_eq!(fresh.verifier.expose().len(), 43);
        assert_ne!(
            fresh.verifier.expose(),
            Pkce::generate().unwrap().verifier.expose()
        );
        assert_eq!(random_state().unwrap().len(), 22);
    }

    #[test]
    fn authorize_url_has_every_parameter() {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let provider = ProviderConfig {
            name: "m365".into(),
            kind: ProviderKind::Microsoft,
            flow: Flow::AuthorizationCode,
            client_id: "cid".into(),
            credential: crate::token::CredentialKind::ClientSecret,
            client_secret: Some(SecretString::from("SECRET")),
            assertion: None,
            endpoints: Endpoints {
                token_url: "https://login.example/t".into(),
                authorize_url: Some("https://login.example/authorize".into()),
                device_code_url: None,
            },
            scopes: default_scopes(ProviderKind::Microsoft, Flow::AuthorizationCode),
            redirect_uri: None,
            http: crate::token::HttpClient::new(Arc::new(tls), crate::token::ProxySetting::Direct),
        };
        let pkce = Pkce::from_verifier(SecretString::from("v"));
        let url = authorize_url(
            &provider,
            "http://localhost:8925/callback",
            "st",
            &pkce,
            Some("tickets@contoso.com"),
        )
        .unwrap();
        let (base, query) = url.split_once('?').unwrap();
        assert_eq!(base, "https://login.example/authorize");
        let q: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("client_id"), Some("cid"));
        assert_eq!(get("response_type"), Some("code"));
        assert_eq!(get("redirect_uri"), Some("http://localhost:8925/callback"));
        assert_eq!(get("state"), Some("st"));
        assert_eq!(get("code_challenge"), Some(pkce.challenge.as_str()));
        assert_eq!(get("code_challenge_method"), Some("S256"));
        assert_eq!(get("login_hint"), Some("tickets@contoso.com"));
        assert!(get("scope").unwrap().ends_with("SMTP.Send offline_access"));
        assert!(!url.contains("SECRET") && !url.contains("code_verifier"));
    }
}
