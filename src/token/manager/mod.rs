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
//! hard mark, so no login waits on the token endpoint (so do the slots of other scope sets in use,
//! e.g. the Graph token of a Graph listener; a reload keeps those of unchanged accounts); failed background refreshes are retried with
//! exponential backoff (honouring `Retry-After`); delegated refresh tokens idle for a week are
//! refreshed (keep-alive against the 90-day inactivity limit).
//!
//! Every state change is written to the account's status file (`state_file.rs`) for
//! `authbridge status`; the first transition into "needs login" runs the `on_reauth_needed` hook
//! once (again only after a success or a new login).
//!
//! A rotated refresh token is saved before the access token that came with it is handed out; if
//! the store refuses it, it is kept in memory, used for the next refresh and saved again in the
//! background (status and log say the store is behind and why).
//!
//! With a shared store (Redis), a delegated account's fetch is cluster-wide single flight
//! (`cluster.rs`): it adopts the access token another replica published, or takes the store's
//! refresh lease and publishes its own result; the file backend's path is unchanged.
//!
//! Files: `slot.rs` (one account's cache entry, fetch in flight, backoff marks and transitions),
//! `fetch.rs` (one fetch, under the store's lock from load to save), `rotation.rs` (the
//! read-modify-writes of the stored token: which token to send, saving a rotated one),
//! `background.rs` (proactive refresh, save retries and keep-alive). Token requests themselves
//! are `grant.rs`.

// `TokenError` carries the public fields the callers branch on (~180 bytes); it is built rarely and
// moved a handful of times per failure, so boxing it would only cost readability.
#![allow(clippy::result_large_err)]

mod background;
mod cluster;
mod fetch;
mod rotation;
mod slot;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use tokio::sync::{Notify, watch};

pub use slot::AccessToken;
use slot::{FetchResult, MIN_VALIDITY, Slot, State, Waiter, make_cached, to_system_time};

use super::error::{ErrorContext, TokenError};
use super::failure::ErrorKind;
use super::grant;
use super::hook::ReauthHook;
use super::provider::{AccountConfig, Flow};
use super::settings::TokenSettings;
use super::state_file::StatusFiles;
use super::store::TokenStore;
use super::unix_time::from_unix_secs;

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
    /// Set while the newest (rotated) refresh token is only in memory because the store refused
    /// it: why. It is used for the next refresh and its save is retried in the background.
    pub store_behind: Option<String>,
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
    /// Slots for other scope sets than an account's own (`access_token_for`), by (account,
    /// scopes): cached and single-flight on their own, created on first use.
    scoped: Mutex<HashMap<ScopedKey, Arc<Slot>>>,
    ctx: Arc<Ctx>,
}

/// (account, scopes) of a slot for other scopes than the account's own.
type ScopedKey = (String, Vec<String>);

/// What a fetch task needs besides its slot.
struct Ctx {
    status_files: StatusFiles,
    /// Replaced by a config reload.
    hook: Mutex<Option<ReauthHook>>,
    /// Wakes the background refresher when a slot's schedule changed.
    wake: Notify,
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
        let slots = accounts
            .into_iter()
            .map(|config| new_slot(&store, &status_files, config))
            .collect();
        let ctx = Arc::new(Ctx {
            status_files,
            hook: Mutex::new(hook_of(&settings)),
            wake: Notify::new(),
        });
        Self::with_slots(store, settings, slots, ctx)
    }

    fn with_slots(
        store: TokenStore,
        settings: TokenSettings,
        slots: Vec<Arc<Slot>>,
        ctx: Arc<Ctx>,
    ) -> Arc<TokenManager> {
        let by_name = slots
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        Arc::new(TokenManager {
            store,
            settings,
            slots,
            by_name,
            scoped: Mutex::new(HashMap::new()),
            ctx,
        })
    }

    /// The manager a config reload switches to: same store, new `accounts` and `settings`.
    /// An account whose token identity is unchanged ([`AccountConfig::same_tokens`]: mailbox,
    /// provider kind, flow, client, secret, endpoints, scopes) keeps its slot — cached access
    /// token, fetch in flight, backoff marks — with the new settings swapped in for its next
    /// request, so a reload causes no token request. Any other account starts with an empty
    /// cache. Sessions of the old manager keep working: the kept slots are shared.
    ///
    /// The caller stops the old manager's background work and starts the new one's.
    pub fn reconfigured(
        &self,
        accounts: Vec<AccountConfig>,
        settings: TokenSettings,
    ) -> (Arc<TokenManager>, Reconfigured) {
        let mut report = Reconfigured::default();
        let slots = accounts
            .into_iter()
            .map(|config| match self.by_name.get(&config.name) {
                Some(&i) if self.slots[i].config().same_tokens(&config) => {
                    let slot = Arc::clone(&self.slots[i]);
                    report.kept.push(config.name.clone());
                    *slot.config.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
                    slot
                }
                old => {
                    if old.is_some() {
                        report.renewed.push(config.name.clone());
                    } else {
                        report.added.push(config.name.clone());
                    }
                    new_slot(&self.store, &self.ctx.status_files, config)
                }
            })
            .collect::<Vec<_>>();
        for s in &self.slots {
            if !slots.iter().any(|n| n.name == s.name) {
                report.removed.push(s.name.clone());
            }
        }
        *self.ctx.hook.lock().unwrap_or_else(|p| p.into_inner()) = hook_of(&settings);
        let manager = Self::with_slots(self.store.clone(), settings, slots, Arc::clone(&self.ctx));
        // The other scope sets (Graph tokens) of kept accounts keep their slots too, with the
        // account's new settings under their own scopes; those of renewed or removed accounts
        // are dropped with the account's.
        {
            let old = self.scoped.lock().unwrap_or_else(|p| p.into_inner());
            let mut new = manager.scoped.lock().unwrap_or_else(|p| p.into_inner());
            for ((account, scopes), slot) in old.iter() {
                if !report.kept.contains(account) {
                    continue;
                }
                let Some(base) = manager.account(account) else {
                    continue;
                };
                *slot.config.lock().unwrap_or_else(|p| p.into_inner()) =
                    Arc::new(with_scopes(&base, scopes));
                new.insert((account.clone(), scopes.clone()), Arc::clone(slot));
            }
        }
        (manager, report)
    }

    pub fn store(&self) -> &TokenStore {
        &self.store
    }

    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    /// An account's current settings.
    pub fn account(&self, name: &str) -> Option<Arc<AccountConfig>> {
        self.by_name.get(name).map(|&i| self.slots[i].config())
    }

    /// Every account's current settings, in config order.
    pub fn accounts(&self) -> Vec<Arc<AccountConfig>> {
        self.slots.iter().map(|s| s.config()).collect()
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
        self.access_token_in(slot, account).await
    }

    /// The slot of `account` for `scopes` (another resource than the account's own, e.g.
    /// Microsoft Graph): same provider, client and stored refresh token (Microsoft refresh
    /// tokens are multi-resource), its own access-token cache and single flight. `None` for the
    /// account's own scopes.
    fn scoped_slot(&self, account: &str, scopes: &[String]) -> Result<Arc<Slot>, TokenError> {
        let base = self.slot(account)?;
        let key = (account.to_owned(), scopes.to_vec());
        let mut map = self.scoped.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get(&key) {
            return Ok(Arc::clone(s));
        }
        let config = with_scopes(&base.config(), scopes);
        let slot = Arc::new(Slot {
            name: account.to_owned(),
            config: Mutex::new(Arc::new(config)),
            state: Mutex::new(State::default()),
            persist: Mutex::new(false),
            turn: Arc::clone(&base.turn),
            scoped: true,
        });
        map.insert(key, Arc::clone(&slot));
        Ok(slot)
    }

    /// Like [`TokenManager::access_token`], for a token with `scopes` instead of the account's
    /// configured ones (a Microsoft Graph token for a Graph listener). Cached and single-flight
    /// per (account, scopes).
    pub async fn access_token_for(
        &self,
        account: &str,
        scopes: &[String],
    ) -> Result<AccessToken, TokenError> {
        let slot = self.scoped_slot(account, scopes)?;
        self.access_token_in(&slot, account).await
    }

    /// Like [`TokenManager::refresh_after_rejection`], for a token from
    /// [`TokenManager::access_token_for`].
    pub async fn refresh_after_rejection_for(
        &self,
        account: &str,
        scopes: &[String],
        rejected: &AccessToken,
    ) -> Result<AccessToken, TokenError> {
        let slot = self.scoped_slot(account, scopes)?;
        self.refresh_after_rejection_in(&slot, account, rejected)
            .await
    }

    async fn access_token_in(
        &self,
        slot: &Arc<Slot>,
        account: &str,
    ) -> Result<AccessToken, TokenError> {
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
        self.refresh_after_rejection_in(slot, account, rejected)
            .await
    }

    async fn refresh_after_rejection_in(
        &self,
        slot: &Arc<Slot>,
        account: &str,
        rejected: &AccessToken,
    ) -> Result<AccessToken, TokenError> {
        let now = Instant::now();
        let rx = {
            let mut st = slot.lock();
            st.in_use = true;
            // When the refused token was had: this slot's last success, if that is the one refused.
            let obtained = st
                .cached
                .as_ref()
                .filter(|c| c.token.generation == rejected.generation)
                .and(st.obtained_at)
                .unwrap_or(now);
            let digest = slot::sha256(&rejected.token);
            // Sessions refused with the same token after the first keep the first's record.
            if st.rejected.is_none_or(|(d, _)| d != digest) {
                st.rejected = Some((digest, obtained));
            }
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
        let config = slot.config();
        let provider = &config.provider;
        let started = Instant::now();
        let response = grant::exchange(provider, account, params, &self.settings).await?;
        let grant_type = grant::grant_type_of(params);
        if provider.flow.is_delegated() {
            let rt = grant::required_refresh_token(provider, account, grant_type, &response)?;
            let ctx = ErrorContext::new(provider, account, grant_type);
            let (name, rt) = (account.to_owned(), rt.clone());
            // Under the store's lock: a rotation in flight elsewhere ends before or starts after.
            let _turn = slot.turn.lock().await;
            self.store
                .blocking(move |s| s.save_locked(&name, &rt))
                .await
                .map_err(|e| TokenError::from_store(&e, &ctx))?;
            // A rotated token still waiting to be saved belongs to the old login.
            slot.forget_unsaved(None);
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
                let cfg = &*slot.config();
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
                    TokenError::from_store(
                        e,
                        &ErrorContext::new(provider, &cfg.name, "refresh_token"),
                    )
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
                        .map(ToString::to_string)
                        .or_else(|| st.store_behind())
                        .or_else(|| store_error.as_ref().map(ToString::to_string)),
                    store_behind: st.store_behind(),
                    needs_login,
                }
            })
            .collect()
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
            let outcome = fetch::fetch(&slot, &store, &settings, epoch).await;
            let (result, transition) = slot.finish(outcome);
            // The status file first: a short-lived process (`check`) that exits as soon as it has
            // its answer must leave the outcome recorded for `status`.
            persist_in_background(&slot, &ctx).await;
            let _ = tx.send(Some(result));
            ctx.wake.notify_one();
            if let Some(e) = transition {
                tracing::warn!(
                    account = slot.name(),
                    "account needs attention: {}",
                    e.hint()
                );
                let hook = ctx.hook.lock().unwrap_or_else(|p| p.into_inner()).clone();
                if let Some(hook) = hook {
                    hook.spawn(&slot.config(), &e);
                }
            }
        });
        rx
    }
}

/// Which accounts a [`TokenManager::reconfigured`] kept (cache and all), renewed (token identity
/// changed: empty cache), added and removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconfigured {
    pub kept: Vec<String>,
    pub renewed: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

/// A slot for `config` with an empty cache. Reads the account's status file, so an account that
/// already needed a login does not run the hook again for the same refusal.
fn new_slot(store: &TokenStore, status_files: &StatusFiles, config: AccountConfig) -> Arc<Slot> {
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
    Arc::new(Slot {
        name: config.name.clone(),
        config: Mutex::new(Arc::new(config)),
        state: Mutex::new(state),
        persist: Mutex::new(false),
        turn: Arc::new(tokio::sync::Mutex::new(())),
        scoped: false,
    })
}

/// `config` asking for `scopes` instead of its provider's.
fn with_scopes(config: &AccountConfig, scopes: &[String]) -> AccountConfig {
    let mut provider = (*config.provider).clone();
    provider.scopes = scopes.to_vec();
    AccountConfig {
        provider: Arc::new(provider),
        ..config.clone()
    }
}

fn hook_of(settings: &TokenSettings) -> Option<ReauthHook> {
    settings
        .on_reauth_needed
        .clone()
        .and_then(ReauthHook::new)
        .map(|mut h| {
            h.timeout = settings.hook_timeout;
            h
        })
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
