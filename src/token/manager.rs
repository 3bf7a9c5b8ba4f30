//! Per-account access-token cache with single-flight refresh.
//!
//! Each account has one `State` behind a short-held `std::sync::Mutex` (never held across an
//! await). A fetch runs in its own spawned task and publishes its result on a `watch` channel that
//! every waiting caller holds a receiver of, so:
//! - exactly one token request per account is in flight however many callers wait;
//! - a caller that gives up (its own timeout) does not cancel the fetch; the result still lands in
//!   the cache and the store.
//!
//! Timing per cached token (lifetime `L`, margin `m = min(refresh_margin, L/2)`): before `L - m` the
//! token is served as is; between `L - m` and `L - m/2` it is still served while one background
//! refresh runs; after that callers wait for the refresh. If a refresh fails, a token that is still
//! valid for 30 s is served instead of the error.
//!
//! After a transient failure, callers arriving within a short window (1 s, doubling on repeated
//! failures up to 10 s, or the provider's `Retry-After` up to 5 min) get the same error without a
//! new request. After a failure that needs action (refused token, nothing stored) each caller's
//! fetch only re-reads the store, so a token stored by `authbridge login` in another process is
//! used by the next login. A permanent refusal is remembered with the refresh token it was for: the same stored
//! token is not sent again for 10 s, doubling up to 10 min, while a new one (after `authbridge login`)
//! is tried at once.
//!
//! Background work ([`TokenManager::spawn_background`]): accounts in use (a client logged in since
//! start) get their access token refreshed proactively at a jittered point between the soft and the
//! hard mark, so no login waits on the token endpoint; failed background refreshes are retried with
//! exponential backoff (honouring `Retry-After`); delegated refresh tokens idle for a week are
//! refreshed (keep-alive against the 90-day inactivity limit).
//!
//! Every state change is written to the account's status file (`state_file.rs`) for
//! `authbridge status`; the first transition into "needs login" runs the `on_reauth_needed` hook
//! once (again only after a success or a new login).

// `TokenError` carries the public fields the callers branch on (~180 bytes); it is built rarely and
// moved a handful of times per failure, so boxing it would only cost readability.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::error::{ErrorContext, TokenError};
use super::hook::ReauthHook;
use super::response::TokenResponse;
use super::state_file::{PersistedStatus, StatusFiles, from_unix_secs, unix_secs};
use super::store::{StoreError, StoredToken, TokenStore};
use super::{AccessToken, AccountConfig, ErrorKind, Flow, TokenSettings, grant};
use crate::secret::SecretString;

/// Generations are unique and increasing across all managers of the process (config reloads).
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

/// A token closer than this to expiry is never handed out.
const MIN_VALIDITY: Duration = Duration::from_secs(30);
/// Negative cache after one failure.
const NEGATIVE_TTL: Duration = Duration::from_secs(1);
/// Negative cache cap after repeated transient failures.
const MAX_TRANSIENT_BACKOFF: Duration = Duration::from_secs(10);
/// `Retry-After` honoured up to this long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// A refused refresh token is not sent again for this long (doubling) …
const PERMANENT_BACKOFF: Duration = Duration::from_secs(10);
/// … up to this long.
const MAX_PERMANENT_BACKOFF: Duration = Duration::from_secs(600);
/// Access-token lifetimes above this are clamped (the value comes from the network).
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Background retries after transient failures back off up to this long.
const MAX_BACKGROUND_BACKOFF: Duration = Duration::from_secs(300);
/// Background retry after a failure only someone else can fix (no token stored, damaged store).
const NOT_CONFIGURED_RETRY: Duration = Duration::from_secs(60);

type FetchResult = Result<AccessToken, TokenError>;
type Waiter = watch::Receiver<Option<FetchResult>>;

/// What `authbridge status` and the admin page show per account.
#[derive(Clone, Debug)]
pub struct AccountStatus {
    pub name: String,
    pub mailbox: String,
    pub provider: String,
    pub flow: Flow,
    /// Expiry of the cached access token, if any.
    pub access_token_expires_at: Option<SystemTime>,
    /// Last successful token fetch by this manager.
    pub last_refresh: Option<SystemTime>,
    /// When the stored refresh token was written (delegated flows).
    pub refresh_token_stored_at: Option<SystemTime>,
    /// The last failure, as a full sentence with its fix.
    pub last_error: Option<String>,
    /// Set when someone must act (`authbridge login`, admin consent, config); holds the hint.
    pub needs_login: Option<String>,
    /// A client asked for this account's token since start: it is kept fresh in the background.
    pub in_use: bool,
    /// A token request is in flight.
    pub refreshing: bool,
    /// How many `access_token` calls had to wait for a token request (cold cache or expired
    /// token); background refresh keeps this at the first login's one.
    pub waited_fetches: u64,
}

/// Access tokens for all configured accounts.
pub struct TokenManager {
    store: TokenStore,
    settings: TokenSettings,
    slots: Vec<Arc<Slot>>,
    by_name: HashMap<String, usize>,
    ctx: Arc<Ctx>,
}

/// What a fetch task needs besides its slot.
struct Ctx {
    status_files: StatusFiles,
    hook: Option<ReauthHook>,
    /// Wakes the background refresher when a slot's schedule changed.
    wake: Notify,
}

struct Slot {
    config: AccountConfig,
    state: Mutex<State>,
    /// Serialises status-file writes so a later snapshot is never overwritten by an earlier one.
    persist: Mutex<bool>,
}

#[derive(Default)]
struct State {
    cached: Option<Cached>,
    inflight: Option<Waiter>,
    negative: Option<Negative>,
    transient_streak: u32,
    permanent: Option<PermanentMark>,
    last_refresh: Option<SystemTime>,
    last_error: Option<TokenError>,
    /// Bumped when a login installs a token; a fetch started before does not record its failure.
    epoch: u64,
    /// A client asked for a token since start.
    in_use: bool,
    /// Callers that had to wait for a fetch.
    waited: u64,
    /// When the fetch in flight started.
    fetch_started: Option<SystemTime>,
    /// The background refresher does not try before this (backoff after a failure).
    retry_at: Option<Instant>,
    /// The hook ran for the current needs-login period.
    reauth_notified: bool,
    needs_login_since: Option<SystemTime>,
}

struct Cached {
    token: AccessToken,
    /// From here on, refresh in the background.
    soft: Instant,
    /// From here on, callers wait for the refresh.
    hard: Instant,
    /// When the background refresher renews it: a jittered point early in `[soft, hard)`.
    refresh_at: Instant,
}

struct Negative {
    error: TokenError,
    until: Instant,
}

struct PermanentMark {
    error: TokenError,
    /// SHA-256 of the refused refresh token (`None` for client credentials).
    rt_digest: Option<[u8; 32]>,
    at: Instant,
    backoff: Duration,
}

struct Outcome {
    result: Result<Cached, TokenError>,
    rt_digest: Option<[u8; 32]>,
    /// Whether the token endpoint was asked (a short-circuited repeat is not a new refusal).
    requested: bool,
    epoch: u64,
}

impl State {
    /// The in-flight fetch, unless its task died without a result.
    fn live_inflight(&self) -> Option<Waiter> {
        let rx = self.inflight.as_ref()?;
        if rx.has_changed().is_err() && rx.borrow().is_none() {
            return None;
        }
        Some(rx.clone())
    }

    fn active_negative(&self, now: Instant) -> Option<&TokenError> {
        self.negative
            .as_ref()
            .filter(|n| now < n.until)
            .map(|n| &n.error)
    }

    /// The cached token if it is valid for at least `MIN_VALIDITY` more.
    fn usable(&self, now: Instant) -> Option<AccessToken> {
        self.cached
            .as_ref()
            .filter(|c| c.token.expires_at > now + MIN_VALIDITY)
            .map(|c| c.token.clone())
    }

    /// When the background refresher should fetch for this account, if it should at all.
    fn refresh_due(&self, now: Instant) -> Option<Instant> {
        if !self.in_use || self.live_inflight().is_some() {
            return None;
        }
        let due = self.cached.as_ref().map_or(now, |c| c.refresh_at);
        Some(self.retry_at.map_or(due, |r| due.max(r)))
    }

    /// The hint when someone must act: a remembered refusal, or a last error that needs action.
    fn needs_login_hint(&self) -> Option<String> {
        if let Some(m) = &self.permanent {
            return Some(m.error.hint());
        }
        self.last_error
            .as_ref()
            .filter(|e| e.needs_action())
            .map(TokenError::hint)
    }

    fn succeeded(&mut self) {
        self.negative = None;
        self.transient_streak = 0;
        self.permanent = None;
        self.last_error = None;
        self.last_refresh = Some(SystemTime::now());
        self.retry_at = None;
        self.reauth_notified = false;
        self.needs_login_since = None;
    }
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn name(&self) -> &str {
        &self.config.name
    }

    /// Records a fetch's outcome, clears the in-flight marker and returns what waiters get, and
    /// the error if this outcome moved the account into needs-login (the hook is due).
    fn finish(&self, outcome: Outcome) -> (FetchResult, Option<TokenError>) {
        let now = Instant::now();
        let mut st = self.lock();
        st.inflight = None;
        st.fetch_started = None;
        match outcome.result {
            Ok(cached) => {
                let token = cached.token.clone();
                st.cached = Some(cached);
                st.succeeded();
                (Ok(token), None)
            }
            Err(e) if outcome.epoch != st.epoch => (Err(e), None),
            Err(e) => {
                let window = match e.kind {
                    ErrorKind::Transient => {
                        st.transient_streak = st.transient_streak.saturating_add(1);
                        let doublings = st.transient_streak.saturating_sub(1).min(8);
                        let backoff =
                            (NEGATIVE_TTL * 2u32.pow(doublings)).min(MAX_TRANSIENT_BACKOFF);
                        backoff.max(e.retry_after.unwrap_or_default().min(MAX_RETRY_AFTER))
                    }
                    ErrorKind::Permanent | ErrorKind::NotConfigured => NEGATIVE_TTL,
                };
                if e.kind == ErrorKind::Permanent && outcome.requested {
                    let backoff = match &st.permanent {
                        Some(m) if m.rt_digest == outcome.rt_digest => {
                            (m.backoff * 2).min(MAX_PERMANENT_BACKOFF)
                        }
                        _ => PERMANENT_BACKOFF,
                    };
                    st.permanent = Some(PermanentMark {
                        error: e.clone(),
                        rt_digest: outcome.rt_digest,
                        at: now,
                        backoff,
                    });
                }
                st.negative = Some(Negative {
                    error: e.clone(),
                    until: now + window,
                });
                st.last_error = Some(e.clone());
                // When the background refresher tries again.
                let retry_at = match (e.kind, &st.permanent) {
                    (ErrorKind::Transient, _) => {
                        let doublings = st.transient_streak.saturating_sub(1).min(16);
                        let backoff =
                            Duration::from_secs(1u64 << doublings).min(MAX_BACKGROUND_BACKOFF);
                        now + jittered(window.max(backoff))
                    }
                    // The refused token may be sent again after its backoff.
                    (ErrorKind::Permanent, Some(m)) => (m.at + m.backoff).max(now + NEGATIVE_TTL),
                    _ => now + jittered(NOT_CONFIGURED_RETRY),
                };
                st.retry_at = Some(retry_at);
                let transition = (e.needs_action() && !st.reauth_notified).then(|| {
                    st.reauth_notified = true;
                    st.needs_login_since = Some(SystemTime::now());
                    e.clone()
                });
                (Err(e), transition)
            }
        }
    }

    /// The remembered refusal if this refresh token was refused recently.
    fn permanent_block(&self, rt_digest: Option<[u8; 32]>, now: Instant) -> Option<TokenError> {
        let st = self.lock();
        let m = st.permanent.as_ref()?;
        (m.rt_digest == rt_digest && now < m.at + m.backoff).then(|| m.error.clone())
    }

    fn install(&self, cached: Cached) -> AccessToken {
        let token = cached.token.clone();
        let mut st = self.lock();
        st.cached = Some(cached);
        st.succeeded();
        st.epoch = st.epoch.wrapping_add(1);
        token
    }

    /// What `authbridge status` reads, from the current state.
    fn snapshot(&self) -> PersistedStatus {
        let now = Instant::now();
        let now_sys = SystemTime::now();
        let st = self.lock();
        PersistedStatus {
            version: 0,
            account: self.config.name.clone(),
            updated_at: unix_secs(now_sys),
            pid: std::process::id(),
            flow: self.config.provider.flow.as_str().to_owned(),
            access_token_expires_at: st
                .cached
                .as_ref()
                .map(|c| unix_secs(to_system_time(c.token.expires_at, now, now_sys))),
            last_refresh: st.last_refresh.map(unix_secs),
            refreshing_since: st.live_inflight().and(st.fetch_started).map(unix_secs),
            last_error: st.last_error.as_ref().map(ToString::to_string),
            last_error_kind: st.last_error.as_ref().map(|e| e.kind.as_str().to_owned()),
            needs_login: st.needs_login_hint(),
            needs_login_since: st
                .needs_login_since
                .filter(|_| st.needs_login_hint().is_some())
                .map(unix_secs),
            in_use: st.in_use,
        }
    }

    /// Writes the status file (small blocking write, no fsync).
    fn persist(&self, files: &StatusFiles) {
        let mut warned = self.persist.lock().unwrap_or_else(|p| p.into_inner());
        let snapshot = self.snapshot();
        if let Err(e) = files.save(&snapshot) {
            if !*warned {
                tracing::warn!(
                    account = self.name(),
                    "cannot write the status file for `authbridge status`: {e} — check that the \
                     state_dir is writable"
                );
            }
            *warned = true;
        }
    }
}

/// `d` plus or minus up to 10 %.
fn jittered(d: Duration) -> Duration {
    let tenth = d / 10;
    (d - tenth) + tenth.mul_f64(2.0 * random_fraction())
}

/// A random number in `[0, 1)` (timing jitter only).
fn random_fraction() -> f64 {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

impl TokenManager {
    /// A manager over `store` for `accounts`. Reads each account's status file once, so an account
    /// that already needed a login before a restart does not run the hook again for the same
    /// refusal.
    pub fn new(
        store: TokenStore,
        accounts: Vec<AccountConfig>,
        settings: TokenSettings,
    ) -> Arc<TokenManager> {
        let status_files = StatusFiles::new(store.state_dir());
        let mut slots = Vec::with_capacity(accounts.len());
        let mut by_name = HashMap::with_capacity(accounts.len());
        for config in accounts {
            let mut state = State::default();
            if let Some(p) = status_files.load(&config.name)
                && p.needs_login.is_some()
            {
                let since = p.needs_login_since.map(from_unix_secs);
                let newer_token = match (store.stored_at(&config.name), since) {
                    (Ok(Some(stored)), Some(since)) => stored > since,
                    _ => false,
                };
                if !newer_token {
                    state.reauth_notified = true;
                    state.needs_login_since = since;
                }
            }
            by_name.insert(config.name.clone(), slots.len());
            slots.push(Arc::new(Slot {
                config,
                state: Mutex::new(state),
                persist: Mutex::new(false),
            }));
        }
        let ctx = Arc::new(Ctx {
            status_files,
            hook: settings
                .on_reauth_needed
                .clone()
                .and_then(ReauthHook::new)
                .map(|mut h| {
                    h.timeout = settings.hook_timeout;
                    h
                }),
            wake: Notify::new(),
        });
        Arc::new(TokenManager {
            store,
            settings,
            slots,
            by_name,
            ctx,
        })
    }

    pub fn store(&self) -> &TokenStore {
        &self.store
    }

    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    pub fn account(&self, name: &str) -> Option<&AccountConfig> {
        self.by_name.get(name).map(|&i| &self.slots[i].config)
    }

    pub fn accounts(&self) -> impl Iterator<Item = &AccountConfig> {
        self.slots.iter().map(|s| &s.config)
    }

    fn slot(&self, account: &str) -> Result<&Arc<Slot>, TokenError> {
        self.by_name
            .get(account)
            .map(|&i| &self.slots[i])
            .ok_or_else(|| TokenError::unknown_account(account))
    }

    /// Cached token if still fresh, else one fetch. Exactly one request to the token endpoint per
    /// account is in flight however many callers wait (single-flight); the fetch runs in its own
    /// spawned task, so a caller that gives up does not cancel it for the others, and its result
    /// still lands in the cache/store.
    pub async fn access_token(&self, account: &str) -> Result<AccessToken, TokenError> {
        let slot = self.slot(account)?;
        let now = Instant::now();
        let rx = {
            let mut st = slot.lock();
            if !st.in_use {
                st.in_use = true;
                self.ctx.wake.notify_one();
            }
            if let Some(c) = &st.cached {
                if now < c.soft {
                    return Ok(c.token.clone());
                }
                if now < c.hard {
                    let token = c.token.clone();
                    if st.live_inflight().is_none() && st.active_negative(now).is_none() {
                        tracing::debug!(
                            account,
                            "access token expires soon: refreshing in the background"
                        );
                        self.start_fetch(slot, &mut st);
                    }
                    return Ok(token);
                }
            }
            // Only transient failures are cached for callers: after one that needs action, a
            // fetch costs a store read (a refused token is not sent again, see
            // `permanent_block`), so a token stored by `authbridge login` is used at once.
            let rx = if let Some(rx) = st.live_inflight() {
                rx
            } else if let Some(e) = st
                .active_negative(now)
                .filter(|e| e.kind == ErrorKind::Transient)
            {
                return st.usable(now).ok_or_else(|| e.clone());
            } else {
                self.start_fetch(slot, &mut st)
            };
            st.waited += 1;
            rx
        };
        match wait(rx, account).await {
            Ok(t) => Ok(t),
            Err(e) => match slot.lock().usable(Instant::now()) {
                Some(t) => {
                    tracing::warn!(
                        account,
                        "using the current access token until it expires: {e}"
                    );
                    Ok(t)
                }
                None => Err(e),
            },
        }
    }

    /// The upstream refused `rejected`: fetch a new one unless a newer generation is already cached
    /// (so 20 sessions refused together cause one refresh, not 20). Ignores the negative cache.
    pub async fn refresh_after_rejection(
        &self,
        account: &str,
        rejected: &AccessToken,
    ) -> Result<AccessToken, TokenError> {
        let slot = self.slot(account)?;
        let now = Instant::now();
        let rx = {
            let mut st = slot.lock();
            st.in_use = true;
            if let Some(c) = &st.cached
                && c.token.generation > rejected.generation
                && c.token.expires_at > now + MIN_VALIDITY
            {
                return Ok(c.token.clone());
            }
            if st
                .cached
                .as_ref()
                .is_some_and(|c| c.token.generation <= rejected.generation)
            {
                st.cached = None;
            }
            match st.live_inflight() {
                Some(rx) => rx,
                None => {
                    tracing::info!(
                        account,
                        generation = rejected.generation,
                        "upstream refused the access token: fetching a new one"
                    );
                    self.start_fetch(slot, &mut st)
                }
            }
        };
        wait(rx, account).await
    }

    /// Fetches a new token now, whatever is cached (joins a fetch already in flight). For
    /// `authbridge check` and the keep-alive.
    pub async fn refresh_now(&self, account: &str) -> Result<AccessToken, TokenError> {
        let slot = self.slot(account)?;
        let rx = {
            let mut st = slot.lock();
            match st.live_inflight() {
                Some(rx) => rx,
                None => self.start_fetch(slot, &mut st),
            }
        };
        wait(rx, account).await
    }

    /// One token request with the given grant parameters (e.g. `authorization_code` or
    /// `device_code` from `authbridge login`); for a delegated flow the returned refresh token is
    /// stored (encrypted) before the access token is cached and returned.
    pub async fn exchange_and_store(
        &self,
        account: &str,
        params: &[(&str, &str)],
    ) -> Result<AccessToken, TokenError> {
        let slot = self.slot(account)?;
        let provider = &slot.config.provider;
        let started = Instant::now();
        let response = grant::exchange(provider, account, params, &self.settings).await?;
        let grant_type = params
            .iter()
            .find(|(k, _)| *k == "grant_type")
            .map_or("", |(_, v)| *v);
        if provider.flow.is_delegated() {
            let Some(rt) = &response.refresh_token else {
                return Err(TokenError::new(
                    account,
                    ErrorKind::Permanent,
                    "the provider returned no refresh token",
                    format!(
                        "add `offline_access` to `scopes` of provider `{}` and log in again",
                        provider.name
                    ),
                )
                .with_grant_type(grant_type));
            };
            let ctx = ErrorContext {
                account,
                provider: &provider.name,
                client_id: &provider.client_id,
                flow: provider.flow,
                grant_type,
            };
            save(&self.store, account, rt)
                .await
                .map_err(|e| TokenError::from_store(&e, &ctx))?;
            tracing::info!(account, grant_type, "refresh token stored");
        }
        let cached = make_cached(response, started, &self.settings);
        let token = slot.install(cached);
        slot.persist(&self.ctx.status_files);
        self.ctx.wake.notify_one();
        Ok(token)
    }

    /// Per account: flow, token expiry, last refresh, last error, whether someone must act.
    /// Reads the store's metadata (small blocking file reads).
    pub fn status(&self) -> Vec<AccountStatus> {
        self.slots
            .iter()
            .map(|slot| {
                let cfg = &slot.config;
                let provider = &cfg.provider;
                let delegated = provider.flow.is_delegated();
                let stored = if delegated {
                    self.store.stored_at(&cfg.name)
                } else {
                    Ok(None)
                };
                let now = Instant::now();
                let now_sys = SystemTime::now();
                let st = slot.lock();
                let store_error = stored.as_ref().err().map(|e| {
                    let ctx = ErrorContext {
                        account: &cfg.name,
                        provider: &provider.name,
                        client_id: &provider.client_id,
                        flow: provider.flow,
                        grant_type: "refresh_token",
                    };
                    TokenError::from_store(e, &ctx)
                });
                let needs_login = if let Some(m) = &st.permanent {
                    Some(m.error.hint())
                } else if let Some(e) = st
                    .last_error
                    .as_ref()
                    .filter(|e| e.kind == ErrorKind::NotConfigured)
                {
                    Some(e.hint())
                } else if let Some(e) = store_error.as_ref().filter(|e| e.needs_action()) {
                    Some(e.hint())
                } else if delegated && matches!(stored, Ok(None)) {
                    Some(TokenError::no_refresh_token(&cfg.name).hint())
                } else {
                    None
                };
                let refreshing = st.live_inflight().is_some();
                AccountStatus {
                    in_use: st.in_use,
                    refreshing,
                    waited_fetches: st.waited,
                    name: cfg.name.clone(),
                    mailbox: cfg.mailbox.clone(),
                    provider: provider.name.clone(),
                    flow: provider.flow,
                    access_token_expires_at: st
                        .cached
                        .as_ref()
                        .map(|c| to_system_time(c.token.expires_at, now, now_sys)),
                    last_refresh: st.last_refresh,
                    refresh_token_stored_at: stored.ok().flatten(),
                    last_error: st
                        .last_error
                        .as_ref()
                        .or(store_error.as_ref())
                        .map(ToString::to_string),
                    needs_login,
                }
            })
            .collect()
    }

    /// Delegated refresh tokens expire after 90 days unused: refreshes every account whose stored
    /// token is older than `max_idle`.
    pub async fn keepalive_once(&self, max_idle: Duration) {
        for slot in &self.slots {
            if !slot.config.provider.flow.is_delegated() {
                continue;
            }
            let store = self.store.clone();
            let name = slot.name().to_owned();
            let stored_at = tokio::task::spawn_blocking(move || store.stored_at(&name)).await;
            let Ok(Ok(Some(at))) = stored_at else {
                continue;
            };
            let idle = SystemTime::now().duration_since(at).unwrap_or_default();
            if idle >= max_idle {
                tracing::info!(
                    account = slot.name(),
                    idle_days = idle.as_secs() / 86_400,
                    "refreshing to keep the refresh token alive"
                );
                // The outcome is logged and recorded in the account status.
                let _ = self.refresh_now(slot.name()).await;
            }
        }
    }

    /// Runs [`keepalive_once`](Self::keepalive_once) every `every` (± 10 %) until `shutdown`.
    pub fn spawn_keepalive(
        self: &Arc<Self>,
        every: Duration,
        max_idle: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(jittered(every)) => me.keepalive_once(max_idle).await,
                }
            }
        })
    }

    /// Everything the server runs in the background until `shutdown`: the proactive refresher
    /// ([`refresh_in_background`](Self::refresh_in_background)) and the refresh-token keep-alive
    /// ([`spawn_keepalive`](Self::spawn_keepalive)).
    pub fn spawn_background(
        self: &Arc<Self>,
        keepalive_every: Duration,
        keepalive_max_idle: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let keepalive = self.spawn_keepalive(keepalive_every, keepalive_max_idle, shutdown.clone());
        let me = Arc::clone(self);
        tokio::spawn(async move {
            me.refresh_in_background(shutdown).await;
            keepalive.abort();
        })
    }

    /// Until `shutdown`: for every account in use, fetch a new access token when its cached one
    /// reaches its (jittered) refresh point, so no client login waits on the token endpoint; after
    /// a failure retry with backoff (`Retry-After` honoured, see `finish`).
    pub async fn refresh_in_background(&self, shutdown: CancellationToken) {
        loop {
            let now = Instant::now();
            let mut next = now + Duration::from_secs(3600);
            for slot in &self.slots {
                let mut st = slot.lock();
                match st.refresh_due(now) {
                    Some(due) if due <= now => {
                        tracing::debug!(
                            account = slot.name(),
                            "refreshing the access token in the background"
                        );
                        // Nobody waits on this fetch; its outcome lands in the cache and status.
                        let _ = self.start_fetch(slot, &mut st);
                    }
                    Some(due) => next = next.min(due),
                    None => {}
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(next.into()) => {}
                () = self.ctx.wake.notified() => {}
            }
        }
    }

    /// Starts the one fetch for `slot`; the caller holds its state lock.
    fn start_fetch(&self, slot: &Arc<Slot>, st: &mut State) -> Waiter {
        let (tx, rx) = watch::channel(None);
        st.inflight = Some(rx.clone());
        st.fetch_started = Some(SystemTime::now());
        let epoch = st.epoch;
        let slot = Arc::clone(slot);
        let store = self.store.clone();
        let settings = self.settings.clone();
        let ctx = Arc::clone(&self.ctx);
        tokio::spawn(async move {
            persist_in_background(&slot, &ctx).await;
            let outcome = fetch(&slot, &store, &settings, epoch).await;
            let (result, transition) = slot.finish(outcome);
            let _ = tx.send(Some(result));
            ctx.wake.notify_one();
            persist_in_background(&slot, &ctx).await;
            if let Some(e) = transition {
                tracing::warn!(
                    account = slot.name(),
                    "account needs attention: {}",
                    e.hint()
                );
                if let Some(hook) = &ctx.hook {
                    hook.spawn(&slot.config, &e);
                }
            }
        });
        rx
    }
}

/// [`Slot::persist`] off the async threads.
async fn persist_in_background(slot: &Arc<Slot>, ctx: &Arc<Ctx>) {
    let slot = Arc::clone(slot);
    let ctx = Arc::clone(ctx);
    let _ = tokio::task::spawn_blocking(move || slot.persist(&ctx.status_files)).await;
}

async fn wait(mut rx: Waiter, account: &str) -> FetchResult {
    let result = match rx.wait_for(Option::is_some).await {
        Ok(v) => (*v).clone(),
        Err(_) => None,
    };
    result.unwrap_or_else(|| {
        Err(TokenError::new(
            account,
            ErrorKind::Transient,
            "the token fetch ended without a result",
            "authbridge retries; look for a crash of the token task in the log",
        ))
    })
}

/// One fetch: load the refresh token, ask the endpoint, persist a rotated refresh token, build the
/// cache entry. Runs in its own task.
async fn fetch(slot: &Slot, store: &TokenStore, settings: &TokenSettings, epoch: u64) -> Outcome {
    let provider = &*slot.config.provider;
    let account = slot.name();
    let started = Instant::now();
    let outcome = |result, rt_digest, requested| Outcome {
        result,
        rt_digest,
        requested,
        epoch,
    };
    if !provider.flow.is_delegated() {
        if let Some(e) = slot.permanent_block(None, started) {
            return outcome(Err(e), None, false);
        }
        let result = grant::client_credentials(provider, account, settings).await;
        let requested = !matches!(&result, Err(e) if e.kind == ErrorKind::NotConfigured);
        return outcome(
            result.map(|r| make_cached(r, started, settings)),
            None,
            requested,
        );
    }
    let ctx = ErrorContext {
        account,
        provider: &provider.name,
        client_id: &provider.client_id,
        flow: provider.flow,
        grant_type: "refresh_token",
    };
    let stored = match load(store, account).await {
        Ok(Some(s)) => s,
        Ok(None) => return outcome(Err(TokenError::no_refresh_token(account)), None, false),
        Err(e) => return outcome(Err(TokenError::from_store(&e, &ctx)), None, false),
    };
    let digest: [u8; 32] = Sha256::digest(stored.refresh_token.expose().as_bytes()).into();
    if let Some(e) = slot.permanent_block(Some(digest), started) {
        return outcome(Err(e), Some(digest), false);
    }
    let response = match grant::refresh(provider, account, &stored.refresh_token, settings).await {
        Ok(r) => r,
        Err(e) => return outcome(Err(e), Some(digest), true),
    };
    if let Some(rotated) = &response.refresh_token
        && rotated != &stored.refresh_token
    {
        // `authbridge login` / `import-token` may have stored a new token while this request ran:
        // keep theirs (the access token just fetched is still good).
        if let Ok(Some(now_stored)) = load(store, account).await {
            let now_digest: [u8; 32] =
                Sha256::digest(now_stored.refresh_token.expose().as_bytes()).into();
            if now_digest != digest {
                tracing::info!(
                    account,
                    "a new refresh token was stored while this refresh ran; keeping the new one"
                );
                return outcome(
                    Ok(make_cached(response, started, settings)),
                    Some(digest),
                    true,
                );
            }
        }
        // Persist before anyone sees the access token that came with it.
        if let Err(e) = save(store, account, rotated).await {
            let e = TokenError::new(
                account,
                ErrorKind::Transient,
                format!("could not store the rotated refresh token: {e}"),
                "check that the state_dir is writable and the disk is not full; the previous \
                 refresh token is kept",
            );
            tracing::error!(account, "{e}");
            return outcome(Err(e), Some(digest), true);
        }
        tracing::debug!(account, "rotated refresh token stored");
    }
    outcome(
        Ok(make_cached(response, started, settings)),
        Some(digest),
        true,
    )
}

fn make_cached(response: TokenResponse, started: Instant, settings: &TokenSettings) -> Cached {
    let lifetime = response.expires_in.min(MAX_LIFETIME);
    let margin = settings.refresh_margin.min(lifetime / 2);
    let expires_at = started + lifetime;
    let soft = expires_at - margin;
    let hard = expires_at - margin / 2;
    Cached {
        token: AccessToken {
            token: response.access_token,
            expires_at,
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
        },
        soft,
        hard,
        refresh_at: soft + (hard - soft).mul_f64(0.25 * random_fraction()),
    }
}

async fn load(store: &TokenStore, account: &str) -> Result<Option<StoredToken>, StoreError> {
    let name = account.to_owned();
    store.blocking(move |s| s.load(&name)).await
}

async fn save(store: &TokenStore, account: &str, token: &SecretString) -> Result<(), StoreError> {
    let (name, token) = (account.to_owned(), token.clone());
    store
        .blocking(move |s| s.save(&name, &token).map(|_| ()))
        .await
}

fn to_system_time(at: Instant, now: Instant, now_sys: SystemTime) -> SystemTime {
    if at >= now {
        now_sys + (at - now)
    } else {
        now_sys - (now - at)
    }
}
