//! OAuth2 access tokens for the upstream XOAUTH2 login.
//!
//! Layers, outermost first:
//! - [`TokenManager`] (`manager/`): per-account in-memory cache, single-flight refresh in a spawned
//!   task (a caller that gives up does not cancel it), short negative cache after failures, status,
//!   background refresh and keep-alive.
//! - [`exchange`] (`grant.rs`): one token-endpoint request (any grant) → [`TokenResponse`] or a
//!   classified [`TokenError`]. `authbridge login` reuses it for `authorization_code` / `device_code`.
//! - `http.rs`: the provider's reqwest client (rustls, egress proxy, no redirects): one form POST
//!   under one deadline with named phases, capped body.
//! - `assertion.rs`: client assertions instead of a client secret (signed with a certificate's
//!   key, or a federated token read from a file).
//! - [`classify`] (`response.rs`): pure function from HTTP status + body to success or a classified
//!   [`Failure`] (`failure.rs`: [`ErrorKind`], the AADSTS table); `error.rs` ties a failure to an
//!   account as a [`TokenError`] with a one-line fix.
//! - [`TokenStore`] / [`MasterKey`] (`store/`): refresh tokens sealed with ChaCha20-Poly1305 at
//!   rest, behind a backend contract ([`StoreBackend`]: load, versioned save, lock); today one file
//!   per account, replaced atomically.
//! - [`StatusFiles`] (`state_file.rs`): non-secret per-account status (last refresh, last error,
//!   needs-login) written by the manager for `authbridge status` in another process;
//!   `unix_time.rs`: the seconds-since-epoch those files and the token files hold, read clamped;
//!   [`status_report`]: the per-account status line `authbridge status` and `/readyz` show.
//! - [`ReauthHook`] (`hook.rs`): the `on_reauth_needed` command, run once per transition into
//!   needs-login.
//! - Plain data: `provider.rs` (providers and accounts), `settings.rs` ([`TokenSettings`]),
//!   `endpoints.rs` (well-known endpoints and scopes), `login.rs` (PKCE, authorize URL).
//!
//! This file only declares the modules and re-exports what the rest of authbridge uses; the
//! modules import each other directly, never through here.
//!
//! Invariants: tokens, refresh tokens, client secrets and keys only ever live in [`Secret`] (or a
//! zeroizing buffer on their way through HTTP and SASL); none is ever formatted into a log line or
//! an error. A rotated refresh token is persisted before the access token that came with it is
//! handed out, under the store's lock for the account (held from loading the old token); if the
//! store refuses it, it is kept in memory, used for the next refresh and saved again, never
//! dropped. A transient failure never touches the stored refresh token; a permanent one marks the
//! account as needing a new login and keeps the stored token until replaced. Every duration and
//! time from the network or from disk is clamped before it reaches a clock.
//!
//! [`Secret`]: crate::secret::Secret

mod assertion;
pub mod claims;
mod endpoints;
mod error;
mod failure;
mod grant;
mod hook;
pub(crate) mod http;
mod login;
mod login_flow;
mod manager;
mod provider;
mod response;
mod settings;
mod state_file;
pub mod status_report;
mod store;
mod unix_time;

pub use assertion::{
    ASSERTION_LIFETIME, CertificateCredential, ClientAssertion, JWT_BEARER_ASSERTION_TYPE,
};
pub use endpoints::{
    MailHosts, default_scopes, google_endpoints, microsoft_endpoints, microsoft_mail_hosts,
};
pub use error::TokenError;
pub use failure::{ErrorKind, Failure};
pub use grant::{device_authorization, exchange};
pub use hook::ReauthHook;
pub use http::{HttpClient, ProxyConfig, ProxySetting, check_endpoint_url, parse_proxy_url};
pub use login::{DEVICE_CODE_GRANT_TYPE, Pkce, authorize_url, random_state};
pub use login_flow::{LoginFailed, code_from_redirect, exchange_code, poll_device_code};
pub use manager::{AccessToken, AccountStatus, Reconfigured, TokenManager};
pub use provider::{
    AccountConfig, Cloud, CredentialKind, Endpoints, Flow, ProviderConfig, ProviderKind,
};
pub use response::{
    DeviceAuthorization, TokenResponse, classify, classify_device_authorization, parse_retry_after,
};
pub use settings::TokenSettings;
pub use state_file::{PersistedStatus, StatusFiles};
pub use store::{
    CLOCK_SKEW_VAR, FileStore, MasterKey, RedisSettings, RedisStore, SharedAccess, StoreBackend,
    StoreConfig, StoreError, StoreLock, StoredToken, TokenStore, finish_lease_releases, record,
};
pub use unix_time::{Civil, MAX_UNIX_SECS, civil, from_unix_secs, unix_secs};
