//! OAuth2 access tokens for the upstream XOAUTH2 login.
//!
//! Layers, outermost first:
//! - [`TokenManager`] (`manager.rs`): per-account in-memory cache, single-flight refresh in a spawned
//!   task (a caller that gives up does not cancel it), short negative cache after failures, status.
//! - [`exchange`] (`grant.rs`): one token-endpoint request (any grant) → [`TokenResponse`] or a
//!   classified [`TokenError`]. `authbridge login` reuses it for `authorization_code` / `device_code`.
//! - `http.rs`: one HTTP/1.1 POST over TCP (+ rustls), every phase under one deadline, capped body.
//! - [`classify`] (`error.rs`): pure function from HTTP status + body to success or a classified
//!   failure with the AADSTS code and a one-line fix.
//! - [`TokenStore`] / [`MasterKey`] (`store.rs`): refresh tokens sealed with ChaCha20-Poly1305 at rest,
//!   one file per account, replaced atomically.
//! - [`StatusFiles`] (`state_file.rs`): non-secret per-account status (last refresh, last error,
//!   needs-login) written by the manager for `authbridge status` in another process.
//! - [`ReauthHook`] (`hook.rs`): the `on_reauth_needed` command, run once per transition into
//!   needs-login.
//!
//! Invariants: tokens, refresh tokens, client secrets and keys only ever live in [`Secret`]; none is
//! ever formatted into a log line or an error. A rotated refresh token is persisted before the access
//! token that came with it is handed out. A transient failure never touches the stored refresh token;
//! a permanent one marks the account as needing a new login and keeps the stored token until replaced.
//!
//! [`Secret`]: crate::secret::Secret

mod endpoints;
mod error;
mod grant;
mod hook;
mod http;
mod login;
mod manager;
mod response;
mod state_file;
mod store;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::secret::SecretString;

pub use endpoints::{
    MailHosts, default_scopes, google_endpoints, microsoft_endpoints, microsoft_mail_hosts,
};
pub use error::{ErrorKind, TokenError};
pub use grant::{device_authorization, exchange};
pub use hook::ReauthHook;
pub use login::{DEVICE_CODE_GRANT_TYPE, Pkce, authorize_url, random_state};
pub use manager::{AccountStatus, TokenManager};
pub use response::{
    DeviceAuthorization, Failure, TokenResponse, classify, classify_device_authorization,
    parse_retry_after,
};
pub use state_file::{PersistedStatus, StatusFiles, from_unix_secs, unix_secs};
pub use store::{MasterKey, StoreError, StoredToken, TokenStore};

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

/// Microsoft national clouds (FACTS.md, "Microsoft identity platform").
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

/// Limits and timing of token requests.
#[derive(Clone, Debug)]
pub struct TokenSettings {
    /// Deadline for one whole token request (connect, TLS, request, body). Default 5 s.
    pub request_timeout: Duration,
    /// Refresh this long before expiry, but never more than half the token's lifetime. Default 300 s.
    pub refresh_margin: Duration,
    /// Larger response bodies are a (transient) error. Default 64 KiB.
    pub max_response_bytes: usize,
    /// `on_reauth_needed`: program and arguments run (no shell) when an account enters the
    /// needs-login state. Default none.
    pub on_reauth_needed: Option<Vec<String>>,
    /// The hook is killed after this long. Default 30 s.
    pub hook_timeout: Duration,
}

impl Default for TokenSettings {
    fn default() -> Self {
        TokenSettings {
            request_timeout: Duration::from_secs(5),
            refresh_margin: Duration::from_secs(300),
            max_response_bytes: 64 * 1024,
            on_reauth_needed: None,
            hook_timeout: Duration::from_secs(30),
        }
    }
}

/// An access token as handed to sessions.
#[derive(Clone, Debug)]
pub struct AccessToken {
    pub token: SecretString,
    pub expires_at: Instant,
    /// Process-wide increasing number, new on every fetch; lets
    /// [`TokenManager::refresh_after_rejection`] tell a stale token from a newer one.
    pub generation: u64,
}
