//! What a failed token request was, before it is tied to an account: whose move it is
//! ([`ErrorKind`]), the classified [`Failure`], and the table of Entra ID AADSTS codes we know (a
//! short meaning each, and which ones say "try again later"). Shared by the sans-I/O classifier
//! (`response.rs`), the account-level error with its fix (`error.rs`) and the grant code.

use std::time::Duration;

/// AADSTS codes that say "try again later" rather than "fix something".
pub(crate) const TRANSIENT_AADSTS: &[u32] = &[50196, 90033];

/// Whose move it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Network, timeout, 5xx, 429, `temporarily_unavailable`, unreadable answer: retried later;
    /// never touches the stored refresh token.
    Transient,
    /// The provider refused (`invalid_grant`, `invalid_client`, …): needs an admin or a new login.
    Permanent,
    /// Nothing to refresh with yet (no refresh token stored, no client secret, unknown account).
    NotConfigured,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Permanent => "permanent",
            ErrorKind::NotConfigured => "not_configured",
        }
    }
}

/// A classified failure, before it is tied to an account (see `TokenError`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub kind: ErrorKind,
    /// HTTP status, if an answer came at all.
    pub status: Option<u16>,
    /// OAuth2 `error`.
    pub error: Option<String>,
    pub aadsts: Option<u32>,
    /// Short summary of what happened, e.g. `AADSTS70008 refresh token expired`.
    pub message: String,
    /// First line of the server's `error_description`, shortened.
    pub description: Option<String>,
    pub retry_after: Option<Duration>,
}

impl Failure {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            status: None,
            error: None,
            aadsts: None,
            message: message.into(),
            description: None,
            retry_after: None,
        }
    }
}

/// Short meaning of the AADSTS codes we give specific advice for.
pub(crate) fn aadsts_summary(code: u32) -> Option<&'static str> {
    Some(match code {
        70008 => "refresh token expired",
        700082 => "refresh token expired (unused for too long)",
        50173 => "refresh token revoked (password changed or sessions revoked)",
        70043 => "refresh token expired by a Conditional Access sign-in frequency policy",
        50076 => "multi-factor authentication required",
        50079 => "the user must register for multi-factor authentication",
        53003 => "blocked by a Conditional Access policy",
        65001 => "consent missing for the application",
        700016 => "unknown client id (application not found in the tenant)",
        7000215 => "invalid client secret",
        7000222 => "client secret expired",
        7000218 => "the application requires a client secret",
        700027 => "client assertion signature not valid for the app's certificates",
        700024 => "client assertion outside its valid time range",
        700213 => "no federated credential matches the assertion",
        50027 => "the client assertion is not a valid JWT (audience, claims or replay)",
        500011 => "the requested resource (scope) does not exist in the tenant",
        90002 => "tenant not found",
        50196 => "request loop detected (too many identical token requests)",
        54005 => "authorization code already redeemed",
        90033 => "transient error at the identity provider",
        _ => return None,
    })
}
