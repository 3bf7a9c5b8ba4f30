//! The admin page's sign-ins: authorization code with PKCE coming back to this listener's
//! `/callback`, and device code polled in the background. Both store the token through the
//! running server's token manager ([`crate::token::exchange_code`],
//! [`crate::token::poll_device_code`], shared with `authbridge login`), so sessions use it at
//! once, with no restart.
//!
//! A pending authorization-code sign-in is keyed by its random `state` and bound to the browser
//! that started it: a random binding value goes into a cookie (`SameSite=Lax`: the identity
//! provider's redirect is a cross-site navigation, which a `Strict` cookie would not follow;
//! `Path=/callback`, `HttpOnly`) and must come back with the redirect. A state is used once,
//! expires after [`FLOW_TTL`], and at most [`MAX_PENDING`] wait at a time. One device-code
//! sign-in per account runs at a time (a new one replaces it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::token::{
    AccountConfig, DeviceAuthorization, Pkce, TokenManager, authorize_url, code_from_redirect,
    device_authorization, exchange_code, poll_device_code, random_state,
};

use super::access::{random_token, same};

/// Pending authorization-code sign-ins kept at most.
pub const MAX_PENDING: usize = 16;
/// A pending sign-in expires after this long.
pub const FLOW_TTL: Duration = Duration::from_secs(600);
pub const FLOW_COOKIE: &str = "authbridge_flow";
/// What to do after a failed sign-in, appended to its message.
const AGAIN: &str = "click Authorise on the admin page again";

struct Pending {
    account: String,
    binding: String,
    pkce: Pkce,
    redirect_uri: String,
    created: Instant,
}

/// A device-code sign-in as the page shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeviceView {
    pub user_code: String,
    pub verification_uri: String,
    /// `waiting`, `done` or `failed`.
    pub state: &'static str,
    pub message: Option<String>,
    /// Seconds left until the code expires (while waiting).
    pub expires_in: u64,
}

struct Device {
    user_code: String,
    verification_uri: String,
    expires: Instant,
    outcome: Option<Result<(), String>>,
    task: Option<tokio::task::AbortHandle>,
}

/// The latest sign-in outcome of an account started from the page.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub at: SystemTime,
    pub result: Result<(), String>,
}

/// Why a sign-in could not start or finish (shown on the page).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FlowError(pub String);

/// A started authorization-code sign-in: send the browser to `url`, set the binding cookie.
pub struct Started {
    pub url: String,
    pub binding: String,
}

#[derive(Default)]
pub struct Flows {
    pending: Mutex<HashMap<String, Pending>>,
    devices: Arc<Mutex<HashMap<String, Device>>>,
    outcomes: Arc<Mutex<HashMap<String, Outcome>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn delegated(tokens: &TokenManager, account: &str) -> Result<Arc<AccountConfig>, FlowError> {
    let acc = tokens
        .account(account)
        .ok_or_else(|| FlowError(format!("there is no account `{account}` in the config")))?;
    if !acc.provider.flow.is_delegated() {
        return Err(FlowError(format!(
            "account `{account}` uses client_credentials (app-only): it needs no sign-in; check \
             the app's permissions and admin consent instead"
        )));
    }
    Ok(acc)
}

impl Flows {
    /// Start an authorization-code sign-in for `account`, coming back to `redirect_uri`.
    pub fn start_auth_code(
        &self,
        tokens: &TokenManager,
        account: &str,
        redirect_uri: &str,
    ) -> Result<Started, FlowError> {
        let acc = delegated(tokens, account)?;
        let io = |e: std::io::Error| FlowError(format!("cannot make a random value: {e}"));
        let pkce = Pkce::generate().map_err(io)?;
        let state = random_state().map_err(io)?;
        let binding = random_token().map_err(io)?;
        let url = authorize_url(
            &acc.provider,
            redirect_uri,
            &state,
            &pkce,
            Some(&acc.mailbox),
        )
        .ok_or_else(|| {
            FlowError(format!(
                "provider `{}` has no authorize_url: set it, or use the device code",
                acc.provider.name
            ))
        })?;
        let now = Instant::now();
        let mut pending = lock(&self.pending);
        pending.retain(|_, p| now.duration_since(p.created) < FLOW_TTL);
        if pending.len() >= MAX_PENDING {
            return Err(FlowError(format!(
                "{MAX_PENDING} sign-ins are already under way: finish one, or wait up to {} min \
                 for them to expire",
                FLOW_TTL.as_secs() / 60
            )));
        }
        pending.insert(
            state,
            Pending {
                account: account.to_owned(),
                binding: binding.clone(),
                pkce,
                redirect_uri: redirect_uri.to_owned(),
                created: now,
            },
        );
        Ok(Started { url, binding })
    }

    /// The identity provider sent the browser back with `params`; `binding` is the browser's
    /// flow cookie. Exchanges the code once. Returns the account on success.
    pub async fn finish_auth_code(
        &self,
        tokens: &TokenManager,
        params: &HashMap<String, String>,
        binding: Option<&str>,
    ) -> Result<String, FlowError> {
        let state = params.get("state").map(String::as_str).unwrap_or_default();
        // Single use: whatever happens next, this state is spent.
        let p = lock(&self.pending).remove(state).ok_or_else(|| {
            FlowError(format!(
                "this sign-in response does not belong to a sign-in under way (unknown, used or \
                 expired state); {AGAIN}"
            ))
        })?;
        if p.created.elapsed() >= FLOW_TTL {
            return Err(FlowError(format!(
                "this sign-in took longer than {} min and expired; {AGAIN}",
                FLOW_TTL.as_secs() / 60
            )));
        }
        if !binding.is_some_and(|b| same(b, &p.binding)) {
            return Err(FlowError(format!(
                "this sign-in was started in another browser (or an older tab): open the admin \
                 page in this browser and {AGAIN}"
            )));
        }
        let account = p.account;
        let acc = delegated(tokens, &account)?;
        let result = async {
            let code = code_from_redirect(params, AGAIN).map_err(|e| FlowError(e.0))?;
            exchange_code(
                tokens,
                &acc.provider,
                &account,
                &code,
                &p.redirect_uri,
                &p.pkce,
            )
            .await
            .map_err(|e| FlowError(e.0))
        }
        .await;
        self.record(
            &account,
            result.as_ref().map(|_| ()).map_err(|e| e.0.clone()),
        );
        tracing::info!(
            account,
            ok = result.is_ok(),
            "admin page: authorization-code sign-in finished"
        );
        result.map(|()| account)
    }

    fn record(&self, account: &str, result: Result<(), String>) {
        lock(&self.outcomes).insert(
            account.to_owned(),
            Outcome {
                at: SystemTime::now(),
                result,
            },
        );
    }

    /// The latest outcome of a sign-in from the page, per account.
    pub fn outcome(&self, account: &str) -> Option<Outcome> {
        lock(&self.outcomes).get(account).cloned()
    }

    /// Start a device-code sign-in for `account` (replacing one under way): asks the provider
    /// for a code, then polls in the background.
    pub async fn start_device(
        &self,
        tokens: Arc<TokenManager>,
        account: &str,
    ) -> Result<(), FlowError> {
        let acc = delegated(&tokens, account)?;
        let da: DeviceAuthorization =
            device_authorization(&acc.provider, account, tokens.settings())
                .await
                .map_err(|e| FlowError(e.to_string()))?;
        let devices = Arc::clone(&self.devices);
        let outcomes = Arc::clone(&self.outcomes);
        let name = account.to_owned();
        let expires = Instant::now() + da.expires_in;
        let (user_code, verification_uri) = (da.user_code.clone(), da.verification_uri.clone());
        let task = tokio::spawn(async move {
            let mut note = |text: &str| tracing::info!(account = %name, "device code: {text}");
            let result = poll_device_code(&tokens, &name, &da, AGAIN, &mut note)
                .await
                .map_err(|e| e.0);
            tracing::info!(
                account = %name,
                ok = result.is_ok(),
                "admin page: device-code sign-in finished"
            );
            if let Some(d) = lock(&devices).get_mut(&name) {
                d.outcome = Some(result.clone());
                d.task = None;
            }
            lock(&outcomes).insert(
                name,
                Outcome {
                    at: SystemTime::now(),
                    result,
                },
            );
        });
        let old = lock(&self.devices).insert(
            account.to_owned(),
            Device {
                user_code,
                verification_uri,
                expires,
                outcome: None,
                task: Some(task.abort_handle()),
            },
        );
        if let Some(t) = old.and_then(|d| d.task) {
            t.abort();
        }
        Ok(())
    }

    /// The device-code sign-in of `account`, if one was started.
    pub fn device(&self, account: &str) -> Option<DeviceView> {
        let devices = lock(&self.devices);
        let d = devices.get(account)?;
        let (state, message) = match &d.outcome {
            None => ("waiting", None),
            Some(Ok(())) => ("done", None),
            Some(Err(m)) => ("failed", Some(m.clone())),
        };
        Some(DeviceView {
            user_code: d.user_code.clone(),
            verification_uri: d.verification_uri.clone(),
            state,
            message,
            expires_in: d
                .expires
                .saturating_duration_since(Instant::now())
                .as_secs(),
        })
    }

    /// Stop every background poll (the listener stops).
    pub fn abort_all(&self) {
        for d in lock(&self.devices).values_mut() {
            if let Some(t) = d.task.take() {
                t.abort();
            }
        }
    }
}
