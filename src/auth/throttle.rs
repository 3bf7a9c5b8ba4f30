//! Throttling of password checks: failed logins per source *and* user name in a sliding
//! window, and password checks in flight per source.
//!
//! - Keyed on the source and the user name: on loopback every local process shares one address,
//!   so a source-only key let any local process lock GLPI out with 10 bad logins a minute.
//! - A source is an IPv4 address (IPv4-mapped IPv6 addresses count as their IPv4 form) or an
//!   IPv6 /64: one host usually holds a whole /64, so single IPv6 addresses would not throttle it.
//! - An attempt is counted when its check *starts* ([`FailureTracker::begin`]): attempts under
//!   way count against the limit like failures, so N parallel guesses cost what N sequential
//!   ones do instead of all passing the check before the first failure is recorded. A success
//!   uncounts its attempt; a check that ends without a verdict (deadline, full queue) too.
//! - At most [`CHECKS_PER_SOURCE`] checks run per source at once (whatever the user names); more
//!   wait their turn within the login's deadline. One source cannot fill the argon2 queue, and a
//!   client opening several sessions at once with a credential not yet verified gets them
//!   checked one after the other (the later ones from the cache).
//! - A credential already verified never comes here (`Credentials::cached`): it is never refused.
//! - Memory: at most [`TRACKED_KEYS_MAX`] keys; user names are kept as keyed 64-bit hashes.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::limits::ConnectionLimits;

/// Password checks in flight from one source at once (any user names).
pub const CHECKS_PER_SOURCE: u32 = 2;
/// (source, user) keys tracked before the oldest are dropped.
pub const TRACKED_KEYS_MAX: usize = 65_536;

/// Where a login comes from, as the throttle groups it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    V4(Ipv4Addr),
    /// The first 64 bits of an IPv6 address.
    V6Net(u64),
}

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source::V4(v4),
            IpAddr::V6(v6) => Source::V6Net((u128::from(v6) >> 64) as u64),
        }
    }
}

/// Too many failures (and attempts under way) for this user from this source: answer with the
/// "too many failures" reply and close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked;

type Key = (Source, u64);

#[derive(Default)]
struct Record {
    /// Failures within the window, oldest first.
    failures: VecDeque<Instant>,
    /// Attempts started and not settled.
    pending: u32,
}

#[derive(Default)]
struct State {
    keys: HashMap<Key, Record>,
    /// The check slots of each source with checks under way or waiting.
    sources: HashMap<Source, Arc<Semaphore>>,
}

/// Failed logins per (source, user) in a sliding window, and checks in flight per source.
pub struct FailureTracker {
    limits: ConnectionLimits,
    /// Keys the user-name hashes (random per process).
    hasher: RandomState,
    state: Mutex<State>,
}

/// One password check under way: counted against its (source, user) key, and holding one of
/// its source's check slots, until it is dropped.
pub struct Attempt {
    tracker: Arc<FailureTracker>,
    key: Key,
    /// Still counted as pending (not yet turned into a failure).
    pending: bool,
    _slot: SourceSlot,
}

/// A source's check slot, taken or waited for; frees the source's entry when nobody uses it.
struct SourceSlot {
    tracker: Arc<FailureTracker>,
    source: Source,
    slots: Option<Arc<Semaphore>>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        self.permit.take();
        self.slots.take();
        let mut state = self.tracker.lock();
        if state
            .sources
            .get(&self.source)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            state.sources.remove(&self.source);
        }
    }
}

impl FailureTracker {
    pub fn new(limits: ConnectionLimits) -> Arc<FailureTracker> {
        Arc::new(FailureTracker {
            limits,
            hasher: RandomState::new(),
            state: Mutex::new(State::default()),
        })
    }

    fn key(&self, ip: IpAddr, username: &str) -> Key {
        (Source::of(ip), self.hasher.hash_one(username))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start a password check for `username` from `ip`: refused at once if the key is over its
    /// limit, else once one of the source's [`CHECKS_PER_SOURCE`] slots is free (the caller
    /// bounds the wait; cancel-safe), counted from then on.
    pub async fn begin(self: &Arc<Self>, ip: IpAddr, username: &str) -> Result<Attempt, Blocked> {
        let key = self.key(ip, username);
        let slots = {
            let mut state = self.lock();
            self.check(&mut state, key)?;
            Arc::clone(
                state
                    .sources
                    .entry(key.0)
                    .or_insert_with(|| Arc::new(Semaphore::new(CHECKS_PER_SOURCE as usize))),
            )
        };
        let mut slot = SourceSlot {
            tracker: Arc::clone(self),
            source: key.0,
            slots: Some(Arc::clone(&slots)),
            permit: None,
        };
        // Never closed: the semaphore lives as long as `slot` holds it.
        slot.permit = slots.acquire_owned().await.ok();
        let mut state = self.lock();
        // Failures recorded while this one waited count too.
        self.check(&mut state, key)?;
        if !state.keys.contains_key(&key) && state.keys.len() >= TRACKED_KEYS_MAX {
            self.make_room(&mut state, Instant::now());
        }
        state.keys.entry(key).or_default().pending += 1;
        drop(state);
        Ok(Attempt {
            tracker: Arc::clone(self),
            key,
            pending: true,
            _slot: slot,
        })
    }

    /// Blocked if the key's failures and attempts under way have reached the limit.
    fn check(&self, state: &mut State, key: Key) -> Result<(), Blocked> {
        let counted = match state.keys.get_mut(&key) {
            Some(r) => {
                self.expire(r, Instant::now());
                r.failures.len() + r.pending as usize
            }
            None => 0,
        };
        if counted >= self.limits.login_failures_per_source as usize {
            return Err(Blocked);
        }
        Ok(())
    }

    fn expire(&self, r: &mut Record, now: Instant) {
        let window = self.limits.failure_window;
        while r
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            r.failures.pop_front();
        }
    }

    /// Drop expired keys; if that is not enough, the eighth of the settled keys whose last
    /// failure is oldest (amortised: one pass per `TRACKED_KEYS_MAX / 8` new keys).
    fn make_room(&self, state: &mut State, now: Instant) {
        state.keys.retain(|_, r| {
            self.expire(r, now);
            r.pending > 0 || !r.failures.is_empty()
        });
        if state.keys.len() < TRACKED_KEYS_MAX {
            return;
        }
        let mut settled: Vec<(Instant, Key)> = state
            .keys
            .iter()
            .filter(|(_, r)| r.pending == 0)
            .filter_map(|(k, r)| r.failures.back().map(|t| (*t, *k)))
            .collect();
        let n = (TRACKED_KEYS_MAX / 8).min(settled.len());
        if n == 0 {
            return;
        }
        settled.select_nth_unstable_by_key(n - 1, |(t, _)| *t);
        for (_, k) in &settled[..n] {
            state.keys.remove(k);
        }
    }

    /// Failures and attempts under way counted for `username` from `ip` (tests, diagnostics).
    pub fn counted(&self, ip: IpAddr, username: &str) -> usize {
        let key = self.key(ip, username);
        let mut state = self.lock();
        match state.keys.get_mut(&key) {
            Some(r) => {
                self.expire(r, Instant::now());
                r.failures.len() + r.pending as usize
            }
            None => 0,
        }
    }

    /// Checks under way from `ip`'s source.
    pub fn in_flight(&self, ip: IpAddr) -> u32 {
        self.lock()
            .sources
            .get(&Source::of(ip))
            .map_or(0, |s| CHECKS_PER_SOURCE - s.available_permits() as u32)
    }

    fn settle(&self, key: Key, failed_at: Option<Instant>, was_pending: bool) -> usize {
        let mut state = self.lock();
        let mut counted = 0;
        if let Some(r) = state.keys.get_mut(&key) {
            if was_pending {
                r.pending = r.pending.saturating_sub(1);
            }
            if let Some(t) = failed_at {
                r.failures.push_back(t);
            }
            self.expire(r, Instant::now());
            counted = r.failures.len() + r.pending as usize;
            if counted == 0 {
                state.keys.remove(&key);
            }
        }
        counted
    }
}

impl Attempt {
    /// The check failed: count it as a failure. Returns how long to wait before answering, and
    /// whether the key is now over its limit. The attempt still counts as in flight for its
    /// source until it is dropped (after the delay), as a sequential guess would.
    pub fn failed(&mut self) -> (Duration, bool) {
        let limits = &self.tracker.limits;
        let n = self
            .tracker
            .settle(self.key, Some(Instant::now()), self.pending);
        self.pending = false;
        let factor = 1u32 << n.saturating_sub(1).min(8) as u32;
        let delay = limits
            .failure_delay_base
            .saturating_mul(factor)
            .min(limits.failure_delay_max);
        (delay, n >= limits.login_failures_per_source as usize)
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if self.pending {
            self.tracker.settle(self.key, None, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(limit: u32) -> Arc<FailureTracker> {
        FailureTracker::new(ConnectionLimits {
            login_failures_per_source: limit,
            ..Default::default()
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Start a check that is free to start at once.
    async fn begin(t: &Arc<FailureTracker>, from: &str, user: &str) -> Result<Attempt, Blocked> {
        tokio::time::timeout(Duration::from_secs(5), t.begin(ip(from), user))
            .await
            .expect("a free slot")
    }

    async fn fail(t: &Arc<FailureTracker>, from: &str, user: &str) -> (Duration, bool) {
        begin(t, from, user).await.unwrap().failed()
    }

    #[tokio::test]
    async fn failures_delay_and_block() {
        let t = tracker(3);
        let (d1, over1) = fail(&t, "127.0.0.1", "glpi").await;
        let (d2, _) = fail(&t, "127.0.0.1", "glpi").await;
        let (_, over3) = fail(&t, "127.0.0.1", "glpi").await;
        assert!(d2 > d1 && !over1 && over3);
        assert_eq!(begin(&t, "127.0.0.1", "glpi").await.err(), Some(Blocked));
        assert!(begin(&t, "127.0.0.2", "glpi").await.is_ok());
        // A success does not count.
        let t = tracker(1);
        drop(begin(&t, "127.0.0.1", "glpi").await.unwrap());
        assert_eq!(t.counted(ip("127.0.0.1"), "glpi"), 0);
        assert!(begin(&t, "127.0.0.1", "glpi").await.is_ok());
    }

    /// Attempts are counted when they start: parallel guesses are refused once the limit is
    /// reached by attempts still under way, as sequential ones would be by their failures.
    #[tokio::test]
    async fn attempts_count_when_they_start() {
        let t = tracker(2);
        let first = begin(&t, "192.0.2.1", "glpi").await.unwrap();
        let _other_source = begin(&t, "192.0.2.2", "glpi").await.unwrap();
        // Different source: only the one started from 192.0.2.1 counts here.
        assert_eq!(t.counted(ip("192.0.2.1"), "glpi"), 1);
        let second = begin(&t, "192.0.2.1", "glpi").await.unwrap();
        assert_eq!(begin(&t, "192.0.2.1", "glpi").await.err(), Some(Blocked));
        drop(first);
        // One under way, one settled without a verdict: only the first is still counted.
        assert_eq!(t.counted(ip("192.0.2.1"), "glpi"), 1);
        drop(second);
        let mut third = begin(&t, "192.0.2.1", "glpi").await.unwrap();
        third.failed();
        let mut fourth = begin(&t, "192.0.2.1", "glpi").await.unwrap();
        fourth.failed();
        assert_eq!(begin(&t, "192.0.2.1", "glpi").await.err(), Some(Blocked));
    }

    /// Keyed on source and user: failures for one user do not block another from the same
    /// address (every local process shares 127.0.0.1).
    #[tokio::test]
    async fn the_key_is_source_and_user() {
        let t = tracker(2);
        for _ in 0..2 {
            fail(&t, "127.0.0.1", "intruder").await;
        }
        assert_eq!(
            begin(&t, "127.0.0.1", "intruder").await.err(),
            Some(Blocked)
        );
        assert!(begin(&t, "127.0.0.1", "glpi").await.is_ok());
    }

    /// IPv6 sources are grouped by /64; IPv4-mapped IPv6 addresses are their IPv4 form.
    #[tokio::test]
    async fn ipv6_sources_are_grouped_by_64() {
        let t = tracker(2);
        fail(&t, "2001:db8:1:2::1", "u").await;
        fail(&t, "2001:db8:1:2:ffff::9", "u").await;
        assert_eq!(
            begin(&t, "2001:db8:1:2::abcd", "u").await.err(),
            Some(Blocked)
        );
        assert!(begin(&t, "2001:db8:1:3::1", "u").await.is_ok());

        fail(&t, "::ffff:192.0.2.7", "v").await;
        fail(&t, "192.0.2.7", "v").await;
        assert_eq!(begin(&t, "192.0.2.7", "v").await.err(), Some(Blocked));
        assert_eq!(
            Source::of(ip("::ffff:10.1.2.3")),
            Source::of(ip("10.1.2.3"))
        );
    }

    /// At most CHECKS_PER_SOURCE checks at once per source, whatever the user names; the next
    /// waits for a slot (a failed check holds its slot until dropped, after its delay); other
    /// sources do not wait; the source's entry goes when nobody uses it.
    #[tokio::test]
    async fn checks_in_flight_per_source_are_bounded() {
        let t = tracker(100);
        let a = "198.51.100.1";
        let mut held = Vec::new();
        for i in 0..CHECKS_PER_SOURCE {
            held.push(begin(&t, a, &format!("user{i}")).await.unwrap());
        }
        assert_eq!(t.in_flight(ip(a)), CHECKS_PER_SOURCE);
        let mut next = Box::pin(t.begin(ip(a), "another"));
        let waited = tokio::time::timeout(Duration::from_millis(50), &mut next).await;
        assert!(waited.is_err(), "a check past the per-source bound started");
        assert!(begin(&t, "198.51.100.2", "another").await.is_ok());
        held[0].failed();
        let waited = tokio::time::timeout(Duration::from_millis(50), &mut next).await;
        assert!(
            waited.is_err(),
            "a failed check freed its slot before it was dropped"
        );
        held.remove(0);
        let third = tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("the freed slot is taken")
            .unwrap();
        assert_eq!(t.in_flight(ip(a)), CHECKS_PER_SOURCE);
        // A waiter that gives up leaves nothing behind.
        let gave_up = tokio::time::timeout(Duration::from_millis(20), t.begin(ip(a), "x")).await;
        assert!(gave_up.is_err());
        drop((held, third));
        assert_eq!(t.in_flight(ip(a)), 0);
        assert!(t.lock().sources.is_empty());
    }

    /// The key table stays bounded when every attempt uses a new user name.
    #[tokio::test]
    async fn tracked_keys_are_bounded() {
        let t = tracker(10);
        for i in 0..TRACKED_KEYS_MAX + TRACKED_KEYS_MAX / 4 {
            fail(&t, "203.0.113.1", &format!("u{i}")).await;
        }
        assert!(t.lock().keys.len() <= TRACKED_KEYS_MAX);
    }
}
