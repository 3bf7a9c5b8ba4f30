//! The steps of a first delegated authorisation that `authbridge login` (terminal) and the admin
//! page (browser) share, so both behave alike: reading the identity provider's redirect
//! ([`code_from_redirect`]), exchanging the code with its PKCE verifier ([`exchange_code`]) and
//! polling a device code until the sign-in ends ([`poll_device_code`]). Each stores the refresh
//! token through [`TokenManager::exchange_and_store`] (encrypted, atomic replace, status file
//! updated, the manager's cache set), so a server using that manager serves with it at once.
//!
//! Error texts end with `again`: what the caller's user does to retry (run the command again,
//! or click Authorise again). Nothing secret is in them: not the code, verifier or a token.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::failure::ErrorKind;
use super::login::{DEVICE_CODE_GRANT_TYPE, Pkce};
use super::manager::TokenManager;
use super::provider::{ProviderConfig, ProviderKind};
use super::response::DeviceAuthorization;
use crate::secret::SecretString;

/// Why a login did not complete, as a sentence with its fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LoginFailed(pub String);

/// Provider-supplied text for a terminal or a page: no control characters, at most `max` chars.
pub fn sanitize(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// The `code` of the provider's redirect, or its refusal (`error`, `error_description`) as an
/// error. The caller has checked `state`.
pub fn code_from_redirect(
    params: &HashMap<String, String>,
    again: &str,
) -> Result<SecretString, LoginFailed> {
    if let Some(error) = params.get("error") {
        let description = params
            .get("error_description")
            .map(|d| sanitize(d, 300))
            .unwrap_or_default();
        return Err(LoginFailed(format!(
            "the sign-in was refused: {} {description} — check the app registration (redirect URI, \
             permissions, consent) and {again}",
            sanitize(error, 64)
        )));
    }
    match params.get("code").filter(|c| !c.is_empty()) {
        Some(c) => Ok(SecretString::new(c.clone())),
        None => Err(LoginFailed(
            "the redirect carries no authorization code".to_owned(),
        )),
    }
}

/// Exchange an authorization code (with its PKCE verifier and the redirect URI it was issued
/// for) and store the refresh token.
pub async fn exchange_code(
    manager: &TokenManager,
    provider: &ProviderConfig,
    account: &str,
    code: &SecretString,
    redirect_uri: &str,
    pkce: &Pkce,
) -> Result<(), LoginFailed> {
    let scope = provider.scopes.join(" ");
    let mut params = vec![
        ("grant_type", "authorization_code"),
        ("code", code.expose().as_str()),
        ("redirect_uri", redirect_uri),
        ("code_verifier", pkce.verifier.expose().as_str()),
    ];
    if provider.kind == ProviderKind::Microsoft && !scope.is_empty() {
        params.push(("scope", &scope));
    }
    manager
        .exchange_and_store(account, &params)
        .await
        .map(|_| ())
        .map_err(|e| LoginFailed(e.to_string()))
}

/// Poll the token endpoint for `da` (RFC 8628 §3.4–3.5) until the sign-in completes (the
/// refresh token is then stored), is declined or the code expires. Polls no faster than the
/// provider's `interval` (at least 1 s), adds 5 s on `slow_down`; `note` hears about slowing
/// down and the first transient failure (polling goes on).
pub async fn poll_device_code(
    manager: &TokenManager,
    account: &str,
    da: &DeviceAuthorization,
    again: &str,
    note: &mut (dyn FnMut(&str) + Send),
) -> Result<(), LoginFailed> {
    let deadline = Instant::now() + da.expires_in;
    let mut interval = da.interval.max(Duration::from_secs(1));
    let mut wait = interval;
    let mut transient_warned = false;
    loop {
        if Instant::now() + wait >= deadline {
            tokio::time::sleep_until(deadline).await;
            return Err(LoginFailed(format!(
                "the code expired before the sign-in was completed; {again}"
            )));
        }
        tokio::time::sleep(wait).await;
        wait = interval;
        let params = [
            ("grant_type", DEVICE_CODE_GRANT_TYPE),
            ("device_code", da.device_code.expose().as_str()),
        ];
        let e = match manager.exchange_and_store(account, &params).await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        match e.error.as_deref() {
            Some("authorization_pending") => {}
            Some("slow_down") => {
                interval += Duration::from_secs(5);
                wait = interval;
                note(&format!(
                    "the identity provider asked to poll more slowly; polling every {} s",
                    interval.as_secs()
                ));
            }
            Some("authorization_declined" | "access_denied") => {
                return Err(LoginFailed(format!(
                    "the sign-in was declined at the verification page; {again} and approve the \
                     request"
                )));
            }
            Some("expired_token") => {
                return Err(LoginFailed(format!(
                    "the code expired before the sign-in was completed; {again}"
                )));
            }
            Some("bad_verification_code") => {
                return Err(LoginFailed(format!(
                    "the identity provider does not know this device code; {again}"
                )));
            }
            _ if e.kind == ErrorKind::Transient => {
                if !transient_warned {
                    note(&format!("{e} (still polling)"));
                    transient_warned = true;
                }
                wait = interval.max(
                    e.retry_after
                        .unwrap_or_default()
                        .min(Duration::from_secs(60)),
                );
            }
            _ => return Err(LoginFailed(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_params() {
        let p: HashMap<String, String> = [("code", "C1"), ("state", "S")]
            .into_iter()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect();
        assert_eq!(code_from_redirect(&p, "retry").unwrap().expose(), "C1");
        let p: HashMap<String, String> = [
            ("error", "access_denied"),
            ("error_description", "no\u{1b}[31m"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        let e = code_from_redirect(&p, "click Authorise again")
            .unwrap_err()
            .to_string();
        assert!(e.contains("access_denied no[31m"), "{e}");
        assert!(e.ends_with("click Authorise again"), "{e}");
        assert!(code_from_redirect(&HashMap::new(), "x").is_err());
    }

    #[test]
    fn sanitizing() {
        assert_eq!(sanitize("a\u{1b}[31mb\nc", 10), "a[31mbc");
    }
}
