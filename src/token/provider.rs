//! What the config says about identity providers and accounts: [`ProviderConfig`] (kind, flow,
//! client, endpoints, scopes, TLS) and [`AccountConfig`] (mailbox and provider), with the small
//! enums they are made of. Plain data, no I/O.

use std::fmt;
use std::sync::Arc;

use super::assertion::ClientAssertion;
use super::http::HttpClient;
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

/// How the app authenticates itself at the token endpoint (named in `check` and `status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum CredentialKind {
    /// A public client (delegated flows without a secret).
    #[default]
    None,
    ClientSecret,
    ClientCertificate,
    /// A federated token from a file (workload identity federation).
    ClientAssertion,
}

impl CredentialKind {
    /// The config key that sets it (`none` for a public client).
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::None => "none",
            CredentialKind::ClientSecret => "client_secret",
            CredentialKind::ClientCertificate => "client_certificate",
            CredentialKind::ClientAssertion => "client_assertion",
        }
    }
}

impl fmt::Display for CredentialKind {
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
    /// Which credential the config names (also when secrets were not read).
    pub credential: CredentialKind,
    /// `client_secret`; at most one of it and `assertion` is set (the config loader sees to it).
    pub client_secret: Option<SecretString>,
    /// `client_certificate` or `client_assertion`: client authentication without a secret.
    pub assertion: Option<ClientAssertion>,
    pub endpoints: Endpoints,
    pub scopes: Vec<String>,
    pub redirect_uri: Option<String>,
    /// The provider's one HTTP client (TLS: webpki roots + optional `ca_file`; egress proxy).
    pub http: HttpClient,
}

impl ProviderConfig {
    /// How the app authenticates itself, in words, for `check`.
    pub fn describe_credential(&self) -> String {
        match (&self.assertion, self.credential) {
            (Some(a), _) => a.describe(),
            (None, CredentialKind::ClientSecret) => "client secret".to_owned(),
            (None, CredentialKind::None) => "none (public client)".to_owned(),
            (None, k) => k.as_str().to_owned(),
        }
    }
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
