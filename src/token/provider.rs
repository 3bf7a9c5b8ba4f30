//! What the config says about identity providers and accounts: [`ProviderConfig`] (kind, flow,
//! client, endpoints, scopes, TLS) and [`AccountConfig`] (mailbox and provider), with the small
//! enums they are made of. Plain data, no I/O.

use std::fmt;
use std::sync::Arc;

use crate::secret::SecretString;

/// Which identity provider a [`ProviderConfig`] talks to (picks default endpoints, scopes, hints).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    Microsoft,
    Google,
    Custom,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Microsoft => "microsoft",
            ProviderKind::Google => "google",
            ProviderKind::Custom => "custom",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the first token of an account is obtained. Delegated flows (`AuthorizationCode`,
/// `DeviceCode`) then use the stored refresh token; `ClientCredentials` asks anew each time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flow {
    AuthorizationCode,
    DeviceCode,
    ClientCredentials,
}

impl Flow {
    /// The config spelling (`authorization_code`, `device_code`, `client_credentials`).
    pub fn as_str(self) -> &'static str {
        match self {
            Flow::AuthorizationCode => "authorization_code",
            Flow::DeviceCode => "device_code",
            Flow::ClientCredentials => "client_credentials",
        }
    }

    /// Delegated flows act for a signed-in user and keep a refresh token.
    pub fn is_delegated(self) -> bool {
        !matches!(self, Flow::ClientCredentials)
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Microsoft national clouds (global, US Government, China operated by 21Vianet).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Cloud {
    #[default]
    Global,
    UsGov,
    China,
}

impl Cloud {
    pub fn as_str(self) -> &'static str {
        match self {
            Cloud::Global => "global",
            Cloud::UsGov => "usgov",
            Cloud::China => "china",
        }
    }
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a provider's OAuth2 endpoints are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub token_url: String,
    pub authorize_url: Option<String>,
    pub device_code_url: Option<String>,
}

/// One identity provider as configured under `providers:`.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    pub flow: Flow,
    pub client_id: String,
    pub client_secret: Option<SecretString>,
    pub endpoints: Endpoints,
    pub scopes: Vec<String>,
    pub redirect_uri: Option<String>,
    /// Built by the caller (webpki roots + optional `ca_file`); used for `https://` endpoints.
    pub tls: Arc<rustls::ClientConfig>,
}

/// One account: the mailbox and the provider whose tokens it uses.
#[derive(Clone, Debug)]
pub struct AccountConfig {
    pub name: String,
    pub mailbox: String,
    pub provider: Arc<ProviderConfig>,
}

impl AccountConfig {
    /// Would a token fetched for `self` be the one `other` asks for? Same name, mailbox, provider
    /// kind, flow, client id and secret, endpoints, scopes and redirect URI. Transport settings
    /// (the provider's TLS roots) do not change who a token is for.
    pub fn same_tokens(&self, other: &AccountConfig) -> bool {
        let (a, b) = (&*self.provider, &*other.provider);
        let secret = match (&a.client_secret, &b.client_secret) {
            (None, None) => true,
            (Some(x), Some(y)) => x.expose() == y.expose(),
            _ => false,
        };
        self.name == other.name
            && self.mailbox == other.mailbox
            && a.name == b.name
            && a.kind == b.kind
            && a.flow == b.flow
            && a.client_id == b.client_id
            && secret
            && a.endpoints == b.endpoints
            && a.scopes == b.scopes
            && a.redirect_uri == b.redirect_uri
    }
}
