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
//! After a failure, callers arriving within a short window (1 s, doubling on repeated transient
//! failures up to 10 s, or the provider's `Retry-After` up to 5 min) get the same error without a
//! new request. A permanent refusal is remembered with the refresh token it was for: the same stored
//! token is not sent again for 10 s, doubling up to 10 min, while a new one (after `authbridge login`)
//! is tried at once.

// `TokenError` carries the public fields the callers branch on (~180 bytes); it is built rarely and
// moved a handful of times per failure, so boxing it would only cost readability.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::error::{ErrorContext, TokenError};
use super::response::TokenResponse;
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
}

/// Access tokens for all configured accounts.
pub struct TokenManager {
    store: TokenStore,
    settings: TokenSettings,
    slots: Vec<Arc<Slot>>,
    by_name: HashMap<String, usize>,
}

struct Slot {
    config: AccountConfig,
    state: Mutex<State>,
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
}

struct Cached {
    token: AccessToken,
    /// From here on, refresh in the background.
    soft: Instant,
    /// From here on, callers wait for the refresh.
    hard: Instant,
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
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn name(&self) -> &str {
        &self.config.name
    }

    /// Records a fetch's outcome, clears the in-flight marker and returns what waiters get.
    fn finish(&self, outcome: Outcome) -> FetchResult {
        let now = Instant::now();
        let mut st = self.lock();
        st.inflight = None;
        match outcome.result {
            Ok(cached) => {
                let token = cached.token.clone();
                st.cached = Some(cached);
                st.negative = None;
                st.transient_streak = 0;
                st.permanent = None;
                st.last_error = None;
                st.last_refresh = Some(SystemTime::now());
                Ok(token)
            }
            Err(e) if outcome.epoch != st.epoch => Err(e),
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
                Err(e)
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
        st.negative = None;
        st.transient_streak = 0;
        st.permanent = None;
        st.last_error = None;
        st.last_refresh = Some(SystemTime::now());
        st.epoch = st.epoch.wrapping_add(1);
        token
    }
}

impl TokenManager {
    pub fn new(
        store: TokenStore,
        accounts: Vec<AccountConfig>,
        settings: TokenSettings,
    ) -> Arc<TokenManager> {
        let mut slots = Vec::with_capacity(accounts.len());
        let mut by_name = HashMap::with_capacity(accounts.len());
        for config in accounts {
            by_name.insert(config.name.clone(), slots.len());
            slots.push(Arc::new(Slot {
                config,
                state: Mutex::new(State::default()),
            }));
        }
        Arc::new(TokenManager {
            store,
            settings,
            slots,
            by_name,
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
            if let Some(rx) = st.live_inflight() {
                rx
            } else if let Some(e) = st.active_negative(now) {
                return st.usable(now).ok_or_else(|| e.clone());
            } else {
                self.start_fetch(slot, &mut st)
            }
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
        Ok(slot.install(cached))
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
                AccountStatus {
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

    /// Runs [`keepalive_once`](Self::keepalive_once) every `every` until `shutdown`.
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
                    () = tokio::time::sleep(every) => me.keepalive_once(max_idle).await,
                }
            }
        })
    }

    /// Starts the one fetch for `slot`; the caller holds its state lock.
    fn start_fetch(&self, slot: &Arc<Slot>, st: &mut State) -> Waiter {
        let (tx, rx) = watch::channel(None);
        st.inflight = Some(rx.clone());
        let epoch = st.epoch;
        let slot = Arc::clone(slot);
        let store = self.store.clone();
        let settings = self.settings.clone();
        tokio::spawn(async move {
            let outcome = fetch(&slot, &store, &settings, epoch).await;
            let result = slot.finish(outcome);
            let _ = tx.send(Some(result));
        });
        rx
    }
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
    Cached {
        token: AccessToken {
            token: response.access_token,
            expires_at,
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
        },
        soft: expires_at - margin,
        hard: expires_at - margin / 2,
    }
}

async fn load(store: &TokenStore, account: &str) -> Result<Option<StoredToken>, StoreError> {
    let store = store.clone();
    let name = account.to_owned();
    tokio::task::spawn_blocking(move || store.load(&name))
        .await
        .unwrap_or_else(|e| Err(join_error(e)))
}

async fn save(store: &TokenStore, account: &str, token: &SecretString) -> Result<(), StoreError> {
    let store = store.clone();
    let name = account.to_owned();
    let token = token.clone();
    tokio::task::spawn_blocking(move || store.save(&name, &token))
        .await
        .unwrap_or_else(|e| Err(join_error(e)))
}

fn join_error(e: tokio::task::JoinError) -> StoreError {
    StoreError::Io {
        action: "run the store task for",
        path: "the token store".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

fn to_system_time(at: Instant, now: Instant, now_sys: SystemTime) -> SystemTime {
    if at >= now {
        now_sys + (at - now)
    } else {
        now_sys - (now - at)
    }
}
