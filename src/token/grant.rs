//! Token endpoint requests: build the form (client authentication by `client_secret_post` or by a
//! `client_assertion`), send it with the provider's HTTP client, classify the answer, log the
//! outcome. [`exchange`] serves every grant; the refresh and client credentials helpers below and
//! `authbridge login` (authorization code, device code) go through it.
//!
//! Why not the `oauth2` crate for these grants (tried, measured, dropped): oauth2 5 without its
//! default features takes our reqwest 0.13 client, and a custom error type keeps Microsoft's
//! `error_codes`, `correlation_id` and `trace_id`. A complete experimental port on those lines
//! (December 2026) passed every token test but made `src/token/` 297 lines *longer*
//! (6,726 → 7,023 non-test lines: the typed client, its trait glue and a side channel for the
//! HTTP status and `Retry-After`, which oauth2 does not pass on), left three copies of secrets
//! unwiped (the response body holding the new tokens, the form string holding the refresh
//! token, the device code), added thiserror 1 next to our thiserror 2, and could not use its
//! device-code loop (it drops `error_codes`, gives up on the first 5xx). What it would do for us
//! — build a form of four pairs and read five JSON fields — is what `encode_form` and
//! `response.rs` do here, with every secret in a wiped buffer.

use std::time::{Instant, SystemTime};

use super::assertion::JWT_BEARER_ASSERTION_TYPE;
use super::error::{ErrorContext, TokenError};
use super::failure::{ErrorKind, Failure};
use super::http::{self, HttpError};
use super::provider::ProviderConfig;
use super::response::{
    DeviceAuthorization, TokenResponse, classify, classify_device_authorization,
};
use super::settings::TokenSettings;
use crate::metrics::{Grant, TokenResult};
use crate::secret::SecretString;

/// One request to `provider`'s token endpoint on behalf of `account`.
///
/// `params` carry the grant (`grant_type` and its parameters, e.g. `code`, `redirect_uri`,
/// `code_verifier`, `device_code`, `refresh_token`, `scope`); `client_id` and, when configured,
/// `client_secret` are added here. Nothing is persisted: the caller stores a returned refresh token
/// (see `TokenManager::exchange_and_store`).
pub async fn exchange(
    provider: &ProviderConfig,
    account: &str,
    params: &[(&str, &str)],
    settings: &TokenSettings,
) -> Result<TokenResponse, TokenError> {
    let grant_type = grant_type_of(params);
    let ctx = ErrorContext::new(provider, account, grant_type);
    let started = Instant::now();
    let result = request(provider, params, settings)
        .await
        .map_err(|f| TokenError::from_failure(f, &ctx));
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    if let Some(metrics) = &settings.metrics {
        metrics.token_request(account, Grant::of(grant_type), token_result(&result));
    }
    match &result {
        Ok(r) => tracing::info!(
            account,
            provider = %provider.name,
            grant_type,
            duration_ms,
            expires_in = r.expires_in.as_secs(),
            refresh_token_returned = r.refresh_token.is_some(),
            "token request succeeded"
        ),
        Err(e)
            if matches!(
                e.error.as_deref(),
                Some("authorization_pending" | "slow_down")
            ) =>
        {
            tracing::debug!(account, grant_type, error = ?e.error, "token request pending");
        }
        Err(e) => tracing::warn!(
            account,
            provider = %provider.name,
            grant_type,
            duration_ms,
            kind = e.kind.as_str(),
            status = ?e.status,
            error = ?e.error,
            aadsts = ?e.aadsts,
            description = ?e.description,
            "token request failed: {}",
            e.message
        ),
    }
    result
}

/// A token request's outcome as a metrics label.
fn token_result(result: &Result<TokenResponse, TokenError>) -> TokenResult {
    match result {
        Ok(_) => TokenResult::ok,
        Err(e)
            if matches!(
                e.error.as_deref(),
                Some("authorization_pending" | "slow_down")
            ) =>
        {
            TokenResult::pending
        }
        Err(e) => match e.kind {
            ErrorKind::Transient => TokenResult::transient,
            ErrorKind::NotConfigured => TokenResult::not_configured,
            ErrorKind::Permanent => TokenResult::refused,
        },
    }
}

/// The `grant_type` among a request's parameters, `""` if there is none.
pub(crate) fn grant_type_of<'a>(params: &[(&str, &'a str)]) -> &'a str {
    params
        .iter()
        .find(|(k, _)| *k == "grant_type")
        .map_or("", |(_, v)| *v)
}

/// The refresh token a delegated grant must return: without one (no `offline_access` in the
/// scopes) the account could not be refreshed later.
// `TokenError` is built rarely (see `manager/mod.rs`); boxing it would only cost readability.
#[allow(clippy::result_large_err)]
pub(crate) fn required_refresh_token<'r>(
    provider: &ProviderConfig,
    account: &str,
    grant_type: &str,
    response: &'r TokenResponse,
) -> Result<&'r SecretString, TokenError> {
    response.refresh_token.as_ref().ok_or_else(|| {
        TokenError::new(
            account,
            ErrorKind::Permanent,
            "the provider returned no refresh token",
            format!(
                "add `offline_access` to `scopes` of provider `{}` and log in again",
                provider.name
            ),
        )
        .with_grant_type(grant_type)
    })
}

async fn request(
    provider: &ProviderConfig,
    params: &[(&str, &str)],
    settings: &TokenSettings,
) -> Result<TokenResponse, Failure> {
    let auth = client_auth(provider, params).await?;
    let form = encode_form(provider, params, &auth);
    let response = post(provider, &provider.endpoints.token_url, &form, settings).await?;
    classify(
        response.status,
        response.retry_after.as_deref(),
        response.body.expose(),
        SystemTime::now(),
    )
}

/// How the app authenticates a token request.
enum ClientAuth<'a> {
    /// A public client, or a request that carries its own credentials.
    None,
    Secret(&'a SecretString),
    Assertion(SecretString),
}

/// The client authentication `provider` is configured for: its secret, or a fresh assertion
/// (signed now, or read from the federated token file now).
async fn client_auth<'a>(
    provider: &'a ProviderConfig,
    params: &[(&str, &str)],
) -> Result<ClientAuth<'a>, Failure> {
    if params
        .iter()
        .any(|(k, _)| matches!(*k, "client_secret" | "client_assertion"))
    {
        return Ok(ClientAuth::None);
    }
    if let Some(assertion) = &provider.assertion {
        return assertion
            .value(&provider.client_id, &provider.endpoints.token_url)
            .await
            .map(ClientAuth::Assertion)
            // A federated token file is rotated underneath us (and may be missing for a moment):
            // retried like a network failure, the message names the file.
            .map_err(|e| Failure::new(ErrorKind::Transient, e));
    }
    Ok(provider
        .client_secret
        .as_ref()
        .map_or(ClientAuth::None, ClientAuth::Secret))
}

/// `client_id`, then `params`, then the client authentication. The form holds secrets: it is
/// written into a buffer allocated once at its largest possible size (every byte
/// percent-encoded), so no partial copy is left behind in freed memory.
fn encode_form(
    provider: &ProviderConfig,
    params: &[(&str, &str)],
    auth: &ClientAuth<'_>,
) -> SecretString {
    let auth_pairs: Vec<(&str, &str)> = match auth {
        ClientAuth::None => Vec::new(),
        ClientAuth::Secret(s) => vec![("client_secret", s.expose().as_str())],
        ClientAuth::Assertion(a) => vec![
            ("client_assertion_type", JWT_BEARER_ASSERTION_TYPE),
            ("client_assertion", a.expose().as_str()),
        ],
    };
    let pairs = params
        .iter()
        .copied()
        .chain([("client_id", provider.client_id.as_str())])
        .chain(auth_pairs.iter().copied());
    let capacity = pairs.fold(0usize, |n, (k, v)| {
        n.saturating_add(k.len().saturating_add(v.len()).saturating_mul(3))
            .saturating_add(2)
    });
    let mut form = form_urlencoded::Serializer::new(String::with_capacity(capacity));
    form.append_pair("client_id", &provider.client_id);
    for (k, v) in params.iter().chain(auth_pairs.iter()) {
        form.append_pair(k, v);
    }
    let form = form.finish();
    debug_assert!(form.len() <= capacity, "the form never outgrew its buffer");
    SecretString::new(form)
}

/// POSTs a form to one of `provider`'s endpoints; transport and proxy problems become transient
/// failures whose message names the endpoint's host and, if one was in the way, the proxy.
async fn post(
    provider: &ProviderConfig,
    url: &str,
    form: &SecretString,
    settings: &TokenSettings,
) -> Result<http::HttpResponse, Failure> {
    let target = http::parse_url(url).map_err(|e| {
        Failure::new(
            ErrorKind::Permanent,
            format!("{e} (endpoint of provider {})", provider.name),
        )
    })?;
    let host = http::host_of(&target);
    provider
        .http
        .post_form(
            &target,
            form,
            settings.request_timeout,
            settings.max_response_bytes,
        )
        .await
        .map_err(|(e, via)| {
            let via = via.map(|p| format!(" through the {p}")).unwrap_or_default();
            let message = match e {
                HttpError::TooLarge(limit) => {
                    format!("the token endpoint {host} answered with more than {limit} bytes{via}")
                }
                HttpError::BadUrl(why) => {
                    return Failure::new(
                        ErrorKind::Permanent,
                        format!("provider {}: {why}", provider.name),
                    );
                }
                e => format!("cannot reach the token endpoint {host}{via}: {e}"),
            };
            Failure::new(ErrorKind::Transient, message)
        })
}

/// Starts a device-code login (RFC 8628 §3.1): asks `provider`'s `device_code_url` for a user code.
/// Poll with [`exchange`] (`grant_type=urn:ietf:params:oauth:grant-type:device_code`,
/// `device_code`) every `interval`, or use `TokenManager::exchange_and_store` to persist the result.
pub async fn device_authorization(
    provider: &ProviderConfig,
    account: &str,
    settings: &TokenSettings,
) -> Result<DeviceAuthorization, TokenError> {
    let ctx = ErrorContext::new(provider, account, "device_code");
    let Some(url) = provider.endpoints.device_code_url.as_deref() else {
        return Err(TokenError::new(
            account,
            ErrorKind::NotConfigured,
            format!("provider {} has no device_code_url", provider.name),
            format!("set `device_code_url` of provider `{}`", provider.name),
        )
        .with_grant_type("device_code"));
    };
    let scope = scope_param(provider);
    let params: &[(&str, &str)] = if scope.is_empty() {
        &[]
    } else {
        &[("scope", &scope)]
    };
    // RFC 8628 §3.1: a public client sends only its id here (Entra takes no assertion here).
    let form = encode_form(provider, params, &ClientAuth::None);
    let result = match post(provider, url, &form, settings).await {
        Ok(r) => classify_device_authorization(
            r.status,
            r.retry_after.as_deref(),
            r.body.expose(),
            SystemTime::now(),
        ),
        Err(f) => Err(f),
    }
    .map_err(|f| TokenError::from_failure(f, &ctx));
    match &result {
        Ok(d) => tracing::info!(
            account,
            provider = %provider.name,
            expires_in = d.expires_in.as_secs(),
            "device authorization started"
        ),
        Err(e) => tracing::warn!(
            account,
            provider = %provider.name,
            kind = e.kind.as_str(),
            status = ?e.status,
            error = ?e.error,
            aadsts = ?e.aadsts,
            "device authorization failed: {}",
            e.message
        ),
    }
    result
}

/// The `scope` parameter: configured scopes, space-separated.
pub(crate) fn scope_param(provider: &ProviderConfig) -> String {
    provider.scopes.join(" ")
}

/// `grant_type=refresh_token` with the stored refresh token.
pub(crate) async fn refresh(
    provider: &ProviderConfig,
    account: &str,
    refresh_token: &SecretString,
    settings: &TokenSettings,
) -> Result<TokenResponse, TokenError> {
    let scope = scope_param(provider);
    let mut params = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token.expose().as_str()),
    ];
    if !scope.is_empty() {
        params.push(("scope", &scope));
    }
    exchange(provider, account, &params, settings).await
}

/// `grant_type=client_credentials` (app-only, needs a client secret or an assertion).
pub(crate) async fn client_credentials(
    provider: &ProviderConfig,
    account: &str,
    settings: &TokenSettings,
) -> Result<TokenResponse, TokenError> {
    if provider.client_secret.is_none() && provider.assertion.is_none() {
        return Err(TokenError::new(
            account,
            ErrorKind::NotConfigured,
            format!("provider {} has no client credential", provider.name),
            format!(
                "set `client_secret`, `client_certificate` or `client_assertion` of provider `{}` \
                 (client_credentials needs one)",
                provider.name
            ),
        )
        .with_grant_type("client_credentials"));
    }
    let scope = scope_param(provider);
    let mut params = vec![("grant_type", "client_credentials")];
    if !scope.is_empty() {
        params.push(("scope", &scope));
    }
    exchange(provider, account, &params, settings).await
}
