//! [`TokenSettings`]: limits and timing of token requests, the refresh margin and the
//! `on_reauth_needed` hook, with their defaults.

use std::time::Duration;

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
    /// Where token requests are counted (`authbridge_token_requests_total`). Default none.
    pub metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

impl Default for TokenSettings {
    fn default() -> Self {
        TokenSettings {
            request_timeout: Duration::from_secs(5),
            refresh_margin: Duration::from_secs(300),
            max_response_bytes: 64 * 1024,
            on_reauth_needed: None,
            hook_timeout: Duration::from_secs(30),
            metrics: None,
        }
    }
}
