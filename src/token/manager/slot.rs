//! One account's slot in the [`TokenManager`](super::TokenManager): the cached access token
//! ([`AccessToken`]) with its refresh marks, the fetch in flight, the negative cache and the
//! backoff marks after failures, and the transitions a fetch outcome causes (`Slot::finish`,
//! `Slot::install`); a rotated refresh token the store could not take yet ([`Unsaved`], see
//! `rotation.rs`). Also what a slot writes to its status file. No I/O but that status write.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::secret::SecretString;
use crate::token::error::TokenError;
use crate::token::failure::ErrorKind;
use crate::token::provider::AccountConfig;
use crate::token::response::TokenResponse;
use crate::token::settings::TokenSettings;
use crate::token::state_file::{PersistedStatus, StatusFiles};
use crate::token::unix_time::unix_secs;

/// Generations are unique and increasing across all managers of the process (config reloads).
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

/// How many ancestors an unsaved token remembers (one per refresh whose save failed; a refresh
/// runs about once an hour).
pub(super) const MAX_ANCESTORS: usize = 64;
/// A token closer than this to expiry is never handed out.
pub(super) const MIN_VALIDITY: Duration = Duration::from_secs(30);
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
/// A cached token is renewed in the background at the earliest this long after its request
/// started, whatever lifetime the provider announced: `expires_in: 0` would otherwise make the
/// refresher loop on the token endpoint. Shorter than any real lifetime (tests use 2 s).
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// Background retries after transient failures back off up to this long.
const MAX_BACKGROUND_BACKOFF: Duration = Duration::from_secs(300);
/// Background retry after a failure only someone else can fix (no token stored, damaged store).
const NOT_CONFIGURED_RETRY: Duration = Duration::from_secs(60);

pub(super) type FetchResult = Result<AccessToken, TokenError>;
pub(super) type Waiter = watch::Receiver<Option<FetchResult>>;

/// An access token as handed to sessions.
#[derive(Clone, Debug)]
pub struct AccessToken {
    pub token: SecretString,
    pub expires_at: Instant,
    /// Process-wide increasing number, new on every fetch; lets
    /// [`TokenManager::refresh_after_rejection`](super::TokenManager::refresh_after_rejection) tell a stale token from a newer one.
    pub generation: u64,
}

pub(super) struct Slot {
    /// The account's name (fixed: a renamed account is another slot).
    pub(super) name: String,
    /// The account's current settings; a config reload that keeps the token's identity (see
    /// `TokenManager::reconfigured`) swaps in new transport settings without dropping the cache.
    pub(super) config: Mutex<Arc<AccountConfig>>,
    pub(super) state: Mutex<State>,
    /// Serialises status-file writes so a later snapshot is never overwritten by an earlier one.
    pub(super) persist: Mutex<bool>,
    /// Held around every read-modify-write of the account's stored token in this process (a
    /// refresh from load to save, a save retry, a login), with the store's lock when it can be
    /// had: only its holder reads and changes [`State::unsaved`].
    pub(super) turn: Arc<tokio::sync::Mutex<()>>,
    /// A slot for other scopes than the account's own (e.g. Microsoft Graph): it shares the
    /// account's stored refresh token and `turn`, and leaves the status file to the account's
    /// own slot.
    pub(super) scoped: bool,
}

/// A rotated refresh token the store could not take: used for the next refresh instead of the
/// stored one (which the provider has replaced) and saved again until the store has it.
pub(super) struct Unsaved {
    pub(super) token: SecretString,
    /// SHA-256 of the tokens this one descends from since the store last took one, oldest first
    /// (at most [`MAX_ANCESTORS`]): a save may replace any of them, and only them (another token
    /// in the store is a new login, which wins).
    pub(super) ancestors: Vec<[u8; 32]>,
    /// Why the last save failed (a sentence, no secret).
    pub(super) why: String,
    pub(super) failed_saves: u32,
    /// When the background refresher tries to save it again.
    pub(super) retry_at: Instant,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) cached: Option<Cached>,
    pub(super) inflight: Option<Waiter>,
    pub(super) negative: Option<Negative>,
    pub(super) transient_streak: u32,
    pub(super) permanent: Option<PermanentMark>,
    pub(super) last_refresh: Option<SystemTime>,
    pub(super) last_error: Option<TokenError>,
    /// Bumped when a login installs a token; a fetch started before does not record its failure.
    pub(super) epoch: u64,
    /// A client asked for a token since start.
    pub(super) in_use: bool,
    /// Callers that had to wait for a fetch.
    pub(super) waited: u64,
    /// When the fetch in flight started.
    pub(super) fetch_started: Option<SystemTime>,
    /// The background refresher does not try before this (backoff after a failure).
    pub(super) retry_at: Option<Instant>,
    /// The hook ran for the current needs-login period.
    pub(super) reauth_notified: bool,
    pub(super) needs_login_since: Option<SystemTime>,
    /// A rotated refresh token not in the store yet (only the holder of `Slot::turn` changes it).
    pub(super) unsaved: Option<Unsaved>,
    /// SHA-256 of the last access token the upstream refused, and when this slot got it: a
    /// shared store's published token is adopted after that only if it is not that one and was
    /// published after it (`cluster.rs`).
    pub(super) rejected: Option<([u8; 32], Instant)>,
    /// When the cached token was fetched or adopted.
    pub(super) obtained_at: Option<Instant>,
}

pub(super) struct Cached {
    pub(super) token: AccessToken,
    /// From here on, refresh in the background.
    pub(super) soft: Instant,
    /// From here on, callers wait for the refresh.
    pub(super) hard: Instant,
    /// When the background refresher renews it: a jittered point early in `[soft, hard)`.
    pub(super) refresh_at: Instant,
}

pub(super) struct Negative {
    pub(super) error: TokenError,
    pub(super) until: Instant,
}

pub(super) struct PermanentMark {
    pub(super) error: TokenError,
    /// SHA-256 of the refused refresh token (`None` for client credentials).
    pub(super) rt_digest: Option<[u8; 32]>,
    pub(super) at: Instant,
    pub(super) backoff: Duration,
}

pub(super) struct Outcome {
    pub(super) result: Result<Cached, TokenError>,
    pub(super) rt_digest: Option<[u8; 32]>,
    /// Whether the token endpoint was asked (a short-circuited repeat is not a new refusal).
    pub(super) requested: bool,
    pub(super) epoch: u64,
}

impl State {
    /// The in-flight fetch, unless its task died without a result.
    pub(super) fn live_inflight(&self) -> Option<Waiter> {
        let rx = self.inflight.as_ref()?;
        if rx.has_changed().is_err() && rx.borrow().is_none() {
            return None;
        }
        Some(rx.clone())
    }

    pub(super) fn active_negative(&self, now: Instant) -> Option<&TokenError> {
        self.negative
            .as_ref()
            .filter(|n| now < n.until)
            .map(|n| &n.error)
    }

    /// The cached token if it is valid for at least `MIN_VALIDITY` more.
    pub(super) fn usable(&self, now: Instant) -> Option<AccessToken> {
        self.cached
            .as_ref()
            .filter(|c| c.token.expires_at > now + MIN_VALIDITY)
            .map(|c| c.token.clone())
    }

    /// When the background refresher should fetch for this account, if it should at all.
    pub(super) fn refresh_due(&self, now: Instant) -> Option<Instant> {
        if !self.in_use || self.live_inflight().is_some() {
            return None;
        }
        let due = self.cached.as_ref().map_or(now, |c| c.refresh_at);
        Some(self.retry_at.map_or(due, |r| due.max(r)))
    }

    /// Why the store is behind: a sentence for `last_error` and the status page.
    pub(super) fn store_behind(&self) -> Option<String> {
        self.unsaved.as_ref().map(|u| {
            format!(
                "the rotated refresh token is not in the token store yet ({} failed save{}: {}); \
                 authbridge uses it from memory and retries the save — check that the state_dir \
                 is writable and the disk is not full",
                u.failed_saves,
                if u.failed_saves == 1 { "" } else { "s" },
                u.why
            )
        })
    }

    /// The last error for the status: the last failure, else why the store is behind.
    fn last_error_text(&self) -> Option<String> {
        self.last_error
            .as_ref()
            .map(ToString::to_string)
            .or_else(|| self.store_behind())
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
        self.obtained_at = Some(Instant::now());
        self.retry_at = None;
        self.reauth_notified = false;
        self.needs_login_since = None;
    }
}

impl Slot {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// The account's current settings.
    pub(super) fn config(&self) -> Arc<AccountConfig> {
        Arc::clone(&self.config.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Records a fetch's outcome, clears the in-flight marker and returns what waiters get, and
    /// the error if this outcome moved the account into needs-login (the hook is due).
    pub(super) fn finish(&self, outcome: Outcome) -> (FetchResult, Option<TokenError>) {
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
    pub(super) fn permanent_block(
        &self,
        rt_digest: Option<[u8; 32]>,
        now: Instant,
    ) -> Option<TokenError> {
        let st = self.lock();
        let m = st.permanent.as_ref()?;
        (m.rt_digest == rt_digest && now < m.at + m.backoff).then(|| m.error.clone())
    }

    /// The unsaved rotated token and what it may replace, if one is pending.
    pub(super) fn pending(&self) -> Option<(SecretString, Vec<[u8; 32]>)> {
        let st = self.lock();
        st.unsaved
            .as_ref()
            .map(|u| (u.token.clone(), u.ancestors.clone()))
    }

    /// Forgets the unsaved token: the store has it or a newer one. With `only`, only if the
    /// pending token is that one (by SHA-256).
    pub(super) fn forget_unsaved(&self, only: Option<&[u8; 32]>) {
        let mut st = self.lock();
        let matches = match (&st.unsaved, only) {
            (Some(u), Some(d)) => sha256(&u.token) == *d,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if matches {
            st.unsaved = None;
        }
    }

    /// Keeps `token` (just rotated, the store refused it) for the next refresh and a later save;
    /// `ancestors` as in [`Unsaved::ancestors`] (the oldest beyond the cap are forgotten).
    pub(super) fn keep_unsaved(
        &self,
        token: SecretString,
        mut ancestors: Vec<[u8; 32]>,
        why: String,
    ) {
        let excess = ancestors.len().saturating_sub(MAX_ANCESTORS);
        ancestors.drain(..excess);
        let mut st = self.lock();
        st.unsaved = Some(Unsaved {
            token,
            ancestors,
            why,
            failed_saves: 1,
            retry_at: Instant::now() + save_retry_backoff(1),
        });
    }

    /// Another save of the pending token failed: note why and back off.
    pub(super) fn save_failed_again(&self, why: String) -> u32 {
        let mut st = self.lock();
        match &mut st.unsaved {
            Some(u) => {
                u.failed_saves = u.failed_saves.saturating_add(1);
                u.why = why;
                u.retry_at = Instant::now() + save_retry_backoff(u.failed_saves);
                u.failed_saves
            }
            None => 0,
        }
    }

    pub(super) fn install(&self, cached: Cached) -> AccessToken {
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
            account: self.name.clone(),
            updated_at: unix_secs(now_sys),
            pid: std::process::id(),
            flow: self.config().provider.flow.as_str().to_owned(),
            access_token_expires_at: st
                .cached
                .as_ref()
                .map(|c| unix_secs(to_system_time(c.token.expires_at, now, now_sys))),
            last_refresh: st.last_refresh.map(unix_secs),
            refreshing_since: st.live_inflight().and(st.fetch_started).map(unix_secs),
            last_error: st.last_error_text(),
            last_error_kind: match (&st.last_error, &st.unsaved) {
                (Some(e), _) => Some(e.kind.as_str().to_owned()),
                (None, Some(_)) => Some(ErrorKind::Transient.as_str().to_owned()),
                (None, None) => None,
            },
            store_behind: st.store_behind(),
            needs_login: st.needs_login_hint(),
            needs_login_since: st
                .needs_login_since
                .filter(|_| st.needs_login_hint().is_some())
                .map(unix_secs),
            in_use: st.in_use,
        }
    }

    /// Writes the status file (small blocking write, no fsync).
    pub(super) fn persist(&self, files: &StatusFiles) {
        if self.scoped {
            return;
        }
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

/// How long to wait before saving an unsaved token again after `failures` failed saves: 1 s,
/// doubling, up to the background backoff cap, jittered.
fn save_retry_backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    jittered(Duration::from_secs(1u64 << doublings).min(MAX_BACKGROUND_BACKOFF))
}

/// SHA-256 of a refresh token: how the manager compares tokens without keeping more copies.
pub(super) fn sha256(token: &SecretString) -> [u8; 32] {
    Sha256::digest(token.expose().as_bytes()).into()
}

/// `d` plus or minus up to 10 %.
pub(super) fn jittered(d: Duration) -> Duration {
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

pub(super) fn make_cached(
    response: TokenResponse,
    started: Instant,
    settings: &TokenSettings,
) -> Cached {
    let lifetime = response.expires_in.min(MAX_LIFETIME);
    let margin = settings.refresh_margin.min(lifetime / 2);
    // `lifetime` is at most a day and `margin` at most half of it, so none of these can fail on
    // a real clock; checked anyway, falling back to "due now".
    let expires_at = started.checked_add(lifetime).unwrap_or(started);
    let soft = expires_at.checked_sub(margin).unwrap_or(started);
    let hard = expires_at.checked_sub(margin / 2).unwrap_or(started);
    let jitter = hard
        .saturating_duration_since(soft)
        .mul_f64(0.25 * random_fraction());
    let earliest = started.checked_add(MIN_REFRESH_INTERVAL).unwrap_or(started);
    Cached {
        token: AccessToken {
            token: response.access_token,
            expires_at,
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
        },
        soft,
        hard,
        refresh_at: soft.checked_add(jitter).unwrap_or(soft).max(earliest),
    }
}

/// The wall-clock time of `at`; saturates at `now_sys` if the clock cannot hold it.
pub(super) fn to_system_time(at: Instant, now: Instant, now_sys: SystemTime) -> SystemTime {
    if at >= now {
        now_sys.checked_add(at - now).unwrap_or(now_sys)
    } else {
        now_sys.checked_sub(now - at).unwrap_or(now_sys)
    }
}
