//! [`TokenError`]: what went wrong getting a token for an account, whose fault it is (transient or
//! permanent), and the one-line fix. Never holds a secret: messages are built from status codes, OAuth2
//! `error` strings, AADSTS numbers and the first line of the server's description.

use std::fmt;
use std::time::Duration;

use super::failure::{ErrorKind, Failure};
use super::provider::{Flow, ProviderConfig};
use super::store::StoreError;

/// A failed token request for one account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenError {
    pub account: String,
    pub kind: ErrorKind,
    /// OAuth2 `error` (`invalid_grant`, `authorization_pending`, …).
    pub error: Option<String>,
    pub aadsts: Option<u32>,
    /// What happened, e.g. `AADSTS70008 refresh token expired`.
    pub message: String,
    pub retry_after: Option<Duration>,
    /// HTTP status of the token endpoint's answer, if there was one.
    pub status: Option<u16>,
    /// First line of the server's `error_description`, for logs.
    pub description: Option<String>,
    /// The grant that was tried (`refresh_token`, `client_credentials`, …), empty if none was.
    pub grant_type: String,
    fix: String,
}

/// What an error message needs to know about the request besides the answer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ErrorContext<'a> {
    pub account: &'a str,
    pub provider: &'a str,
    pub client_id: &'a str,
    pub flow: Flow,
    pub grant_type: &'a str,
}

impl<'a> ErrorContext<'a> {
    /// The context of a `grant_type` request to `provider` for `account`.
    pub(crate) fn new(
        provider: &'a ProviderConfig,
        account: &'a str,
        grant_type: &'a str,
    ) -> ErrorContext<'a> {
        ErrorContext {
            account,
            provider: &provider.name,
            client_id: &provider.client_id,
            flow: provider.flow,
            grant_type,
        }
    }
}

impl TokenError {
    /// An error with a given fix (the `hint()` is `"{message} — {fix}"`).
    pub fn new(
        account: impl Into<String>,
        kind: ErrorKind,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> TokenError {
        TokenError {
            account: account.into(),
            kind,
            error: None,
            aadsts: None,
            message: message.into(),
            retry_after: None,
            status: None,
            description: None,
            grant_type: String::new(),
            fix: fix.into(),
        }
    }

    /// The same error, for the given grant (`refresh_token`, `client_credentials`, …).
    pub fn with_grant_type(mut self, grant_type: impl Into<String>) -> TokenError {
        self.grant_type = grant_type.into();
        self
    }

    pub(crate) fn from_failure(f: Failure, ctx: &ErrorContext<'_>) -> TokenError {
        let fix = fix_for(&f, ctx);
        TokenError {
            account: ctx.account.to_owned(),
            kind: f.kind,
            error: f.error,
            aadsts: f.aadsts,
            message: f.message,
            retry_after: f.retry_after,
            status: f.status,
            description: f.description,
            grant_type: ctx.grant_type.to_owned(),
            fix,
        }
    }

    pub(crate) fn from_store(e: &StoreError, ctx: &ErrorContext<'_>) -> TokenError {
        let (kind, fix) = match e {
            StoreError::Io { .. } => (
                ErrorKind::Transient,
                "check that the state_dir exists, is writable by authbridge and the disk is not full"
                    .to_owned(),
            ),
            StoreError::KeyMismatch { .. } => (
                ErrorKind::Permanent,
                format!(
                    "point `key_file` / AUTHBRIDGE_KEY at the key the store was written with, or run \
                     `authbridge login {}` to store a new token",
                    ctx.account
                ),
            ),
            StoreError::Corrupt { .. } => (
                ErrorKind::Permanent,
                format!("run `authbridge login {}` to store a new token", ctx.account),
            ),
            StoreError::Conflict { .. } => (
                ErrorKind::Transient,
                "another token was stored meanwhile; authbridge uses it from the next refresh"
                    .to_owned(),
            ),
            StoreError::Unavailable { .. } => (
                ErrorKind::Transient,
                "authbridge reconnects by itself; check that Redis is running and reachable \
                 (`authbridge status` shows the store's state)"
                    .to_owned(),
            ),
            StoreError::Locked { .. } => (
                ErrorKind::Transient,
                "authbridge tries again; if it lasts, look for a hung `authbridge login` or \
                 `import-token`"
                    .to_owned(),
            ),
            StoreError::BadKey { .. } | StoreError::InvalidAccount { .. } => (
                ErrorKind::NotConfigured,
                "fix the configuration (see the message)".to_owned(),
            ),
        };
        TokenError {
            grant_type: ctx.grant_type.to_owned(),
            ..TokenError::new(ctx.account, kind, format!("token store: {e}"), fix)
        }
    }

    pub(crate) fn no_refresh_token(account: &str) -> TokenError {
        TokenError {
            grant_type: "refresh_token".to_owned(),
            ..TokenError::new(
                account,
                ErrorKind::NotConfigured,
                "no refresh token stored yet",
                format!(
                    "run `authbridge login {account}` (or pipe an existing refresh token into \
                     `authbridge import-token {account}`)"
                ),
            )
        }
    }

    pub(crate) fn unknown_account(account: &str) -> TokenError {
        TokenError::new(
            account,
            ErrorKind::NotConfigured,
            "no such account in the configuration",
            "add it under `accounts:` in the config",
        )
    }

    /// `"{message} — {fix}"`, e.g. `AADSTS70008 refresh token expired — run `authbridge login tickets``.
    pub fn hint(&self) -> String {
        format!("{} — {}", self.message, self.fix)
    }

    /// Only the fix part of [`hint`](Self::hint).
    pub fn fix(&self) -> &str {
        &self.fix
    }

    /// Permanent and not-configured errors need someone to act (login, admin, config).
    pub fn needs_action(&self) -> bool {
        self.kind != ErrorKind::Transient
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.grant_type.as_str() {
            "refresh_token" => f.write_str("token refresh")?,
            "" => f.write_str("token request")?,
            g => write!(f, "token request ({g})")?,
        }
        write!(
            f,
            " for account {} failed: {} — {}",
            self.account, self.message, self.fix
        )
    }
}

impl std::error::Error for TokenError {}

/// The one-line fix for a classified failure.
pub(crate) fn fix_for(f: &Failure, ctx: &ErrorContext<'_>) -> String {
    let p = ctx.provider;
    let cid = ctx.client_id;
    let login = format!("run `authbridge login {}`", ctx.account);
    let check_app = format!(
        "check `client_id`, `client_secret`, `tenant` and `scopes` of provider `{p}` and the app's \
         permissions in Entra"
    );
    // For a delegated flow a new login fixes it; app-only has no login, so the config must change.
    let relogin = |extra: &str| {
        if ctx.flow.is_delegated() {
            format!("{login}{extra}")
        } else {
            check_app.clone()
        }
    };
    if f.kind == ErrorKind::Transient {
        return match (f.error.as_deref(), f.aadsts, f.status) {
            (_, Some(50196), _) => "too many identical token requests in a short time; authbridge \
                 backs off — check that no other program refreshes this account in a loop"
                .to_owned(),
            (Some("authorization_pending"), ..) => {
                "finish the sign-in in the browser; polling continues".to_owned()
            }
            (Some("slow_down"), ..) => "polling too fast; waiting longer between polls".to_owned(),
            (_, _, Some(429)) => "the identity provider is throttling; authbridge retries after \
                 the delay it asked for"
                .to_owned(),
            (None, _, Some(s)) if s < 500 => format!(
                "authbridge retries; if it persists check `token_url` of provider `{p}` (the \
                 answer is not an OAuth2 token response)"
            ),
            _ => format!(
                "authbridge retries automatically; if it persists check network, DNS, proxy and \
                 firewall access to the token endpoint of provider `{p}`"
            ),
        };
    }
    match f.aadsts {
        Some(70008 | 700082 | 54005) => return relogin(""),
        Some(50173 | 70043) => {
            return relogin(
                "; if it keeps happening, a Conditional Access sign-in frequency policy covers this \
                 user — ask the admin to exclude the mailbox or the app",
            );
        }
        Some(50076 | 50079) => return relogin(" and complete the multi-factor prompt"),
        Some(53003) => {
            return "ask the admin to allow this sign-in in Conditional Access (the Entra sign-in \
                    log names the policy)"
                .to_owned();
        }
        Some(65001) => {
            return if ctx.flow.is_delegated() {
                format!(
                    "an admin must grant consent to client_id {cid} (Entra admin center → App \
                     registrations → API permissions → Grant admin consent), then {login}"
                )
            } else {
                format!(
                    "an admin must grant admin consent to the Office 365 Exchange Online \
                     application permissions (IMAP.AccessAsApp, POP.AccessAsApp, SMTP.SendAsApp) \
                     of client_id {cid}"
                )
            };
        }
        Some(700016) => {
            return format!(
                "client_id {cid} is not registered in the tenant: check `client_id`, `tenant` and \
                 `cloud` of provider `{p}`"
            );
        }
        Some(7000215) => {
            return format!(
                "put the client secret's Value (not its Secret ID) into `client_secret` of \
                 provider `{p}`"
            );
        }
        Some(7000222) => {
            return format!(
                "create a new client secret (Entra admin center → App registrations → \
                 Certificates & secrets) and update `client_secret` of provider `{p}`"
            );
        }
        Some(7000218) => {
            return format!(
                "set `client_secret` of provider `{p}`, or enable \"Allow public client flows\" in \
                 the app registration"
            );
        }
        Some(700027) => {
            return format!(
                "upload the certificate of `client_certificate` of provider `{p}` to the app \
                 registration (Entra admin center → App registrations → Certificates & secrets → \
                 Certificates), or point `client_certificate` at the certificate and key already \
                 uploaded there"
            );
        }
        Some(700024) => {
            return format!(
                "the assertion had expired or was not yet valid: check this host's clock (NTP); \
                 with `client_assertion`, check that the token file of provider `{p}` is being \
                 rotated (Kubernetes projected volume)"
            );
        }
        Some(700213) => {
            return format!(
                "add a federated credential to the app registration whose issuer, subject and \
                 audience (api://AzureADTokenExchange) match the token in `client_assertion.file` \
                 of provider `{p}`"
            );
        }
        Some(50027) => {
            return format!(
                "the client assertion of provider `{p}` was refused as a JWT (wrong audience: \
                 check `tenant`, `cloud` and `token_url`; or a replayed or malformed assertion)"
            );
        }
        Some(500011) => {
            return format!(
                "check `scopes` of provider `{p}` (Exchange Online is https://outlook.office365.com) \
                 and that Exchange Online exists in the tenant"
            );
        }
        Some(90002) => return format!("check `tenant` and `cloud` of provider `{p}`"),
        _ => {}
    }
    match f.error.as_deref() {
        Some(
            "invalid_grant"
            | "interaction_required"
            | "consent_required"
            | "login_required"
            | "access_denied"
            | "expired_token"
            | "authorization_declined"
            | "bad_verification_code",
        ) => relogin(""),
        Some("invalid_client") => {
            format!("check `client_id` and `client_secret` of provider `{p}`")
        }
        Some("unauthorized_client" | "unsupported_grant_type") => format!(
            "the app registration does not allow the {} grant: check `flow` of provider `{p}` (for \
             device code enable \"Allow public client flows\")",
            ctx.grant_type
        ),
        Some("invalid_scope") => {
            format!("check `scopes` of provider `{p}` and the app's API permissions")
        }
        _ if ctx.flow.is_delegated() => format!("{check_app}, then {login}"),
        _ => check_app,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::failure::aadsts_summary;

    fn ctx(flow: Flow) -> ErrorContext<'static> {
        ErrorContext {
            account: "tickets",
            provider: "m365",
            client_id: "11111111-2222",
            flow,
            grant_type: if flow.is_delegated() {
                "refresh_token"
            } else {
                "client_credentials"
            },
        }
    }

    fn failure(kind: ErrorKind, error: Option<&str>, aadsts: Option<u32>) -> Failure {
        Failure {
            kind,
            status: Some(400),
            error: error.map(str::to_owned),
            aadsts,
            message: aadsts
                .and_then(aadsts_summary)
                .unwrap_or("something")
                .to_owned(),
            description: None,
            retry_after: None,
        }
    }

    #[test]
    fn hints_per_aadsts_code() {
        use ErrorKind::*;
        let d = Flow::AuthorizationCode;
        let a = Flow::ClientCredentials;
        // (flow, kind, error, code, text the fix must contain)
        let cases: &[(Flow, ErrorKind, &str, Option<u32>, &str)] = &[
            (
                d,
                Permanent,
                "invalid_grant",
                Some(70008),
                "run `authbridge login tickets`",
            ),
            (
                d,
                Permanent,
                "invalid_grant",
                Some(700082),
                "run `authbridge login tickets`",
            ),
            (
                d,
                Permanent,
                "invalid_grant",
                Some(50173),
                "sign-in frequency",
            ),
            (
                d,
                Permanent,
                "invalid_grant",
                Some(70043),
                "run `authbridge login tickets`",
            ),
            (d, Permanent, "invalid_grant", Some(50076), "multi-factor"),
            (
                d,
                Permanent,
                "invalid_grant",
                Some(65001),
                "Grant admin consent",
            ),
            (
                a,
                Permanent,
                "invalid_grant",
                Some(65001),
                "IMAP.AccessAsApp",
            ),
            (
                d,
                Permanent,
                "unauthorized_client",
                Some(700016),
                "check `client_id`",
            ),
            (
                a,
                Permanent,
                "invalid_client",
                Some(7000215),
                "Value (not its Secret ID)",
            ),
            (
                a,
                Permanent,
                "invalid_client",
                Some(7000222),
                "new client secret",
            ),
            (
                d,
                Permanent,
                "invalid_grant",
                Some(54005),
                "authbridge login tickets",
            ),
            (d, Transient, "invalid_grant", Some(50196), "backs off"),
            (
                d,
                Permanent,
                "invalid_grant",
                None,
                "authbridge login tickets",
            ),
            (a, Permanent, "invalid_grant", None, "client_secret"),
            (
                d,
                Permanent,
                "invalid_client",
                None,
                "`client_secret` of provider `m365`",
            ),
            (
                d,
                Permanent,
                "unauthorized_client",
                None,
                "refresh_token grant",
            ),
            (
                d,
                Permanent,
                "invalid_scope",
                None,
                "`scopes` of provider `m365`",
            ),
            (
                d,
                Permanent,
                "weird_error",
                None,
                "authbridge login tickets",
            ),
            (
                d,
                Transient,
                "temporarily_unavailable",
                None,
                "retries automatically",
            ),
            (
                d,
                Transient,
                "authorization_pending",
                Some(70016),
                "finish the sign-in",
            ),
        ];
        for (flow, kind, error, code, want) in cases {
            let fix = fix_for(&failure(*kind, Some(error), *code), &ctx(*flow));
            assert!(fix.contains(want), "{error} {code:?} {flow}: {fix}");
            if !flow.is_delegated() {
                assert!(!fix.contains("authbridge login"), "{error} {code:?}: {fix}");
            }
        }
    }

    #[test]
    fn display_says_what_and_what_to_do() {
        let f = Failure {
            message: "AADSTS70008 refresh token expired".to_owned(),
            ..failure(ErrorKind::Permanent, Some("invalid_grant"), Some(70008))
        };
        let e = TokenError::from_failure(f, &ctx(Flow::AuthorizationCode));
        assert_eq!(
            e.to_string(),
            "token refresh for account tickets failed: AADSTS70008 refresh token expired — run \
             `authbridge login tickets`"
        );
        assert_eq!(
            e.hint(),
            "AADSTS70008 refresh token expired — run `authbridge login tickets`"
        );
        let e = TokenError::no_refresh_token("tickets");
        assert_eq!(e.kind, ErrorKind::NotConfigured);
        assert!(e.to_string().contains("authbridge import-token tickets"));
    }

    #[test]
    fn throttling_and_garbage_hints() {
        let mut f = failure(ErrorKind::Transient, None, None);
        f.status = Some(429);
        assert!(fix_for(&f, &ctx(Flow::DeviceCode)).contains("throttling"));
        f.status = Some(404);
        assert!(fix_for(&f, &ctx(Flow::DeviceCode)).contains("token_url"));
        f.status = None;
        assert!(fix_for(&f, &ctx(Flow::DeviceCode)).contains("DNS"));
    }
}
