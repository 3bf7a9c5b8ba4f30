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
//! - At most [`CHECKS_PER_SOURCE`] checks run per source at once (whatever the user names);
//!   more are refused at once with the temporary reply, so one source cannot fill the argon2 queue.
//! - A credential already verified never comes here (`Credentials::cached`): it is never refused.
//! - Memory: at most [`TRACKED_KEYS_MAX`] keys; user names are kept as keyed 64-bit hashes.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// Why a check may not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many failures (and attempts under way) for this user from this source: answer with
    /// the "too many failures" reply and close.
    Blocked,
    /// [`CHECKS_PER_SOURCE`] checks from this source are under way: temporary reply.
    Busy,
}

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
    in_flight: HashMap<Source, u32>,
}

/// Failed logins per (source, user) in a sliding window, and checks in flight per source.
pub struct FailureTracker {
    limits: ConnectionLimits,
    /// Keys the user-name hashes (random per process).
    hasher: RandomState,
    state: Mutex<State>,
}

/// One password check under way: counted against its (source, user) key and its source until
/// it is settled or dropped.
pub struct Attempt {
    tracker: Arc<FailureTracker>,
    key: Key,
    /// Still counted as pending (not yet turned into a failure).
    pending: bool,
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

    /// Start a password check for `username` from `ip`, or say why it may not start.
    pub fn begin(self: &Arc<Self>, ip: IpAddr, username: &str) -> Result<Attempt, Refusal> {
        let key = self.key(ip, username);
        let now = Instant::now();
        let mut state = self.lock();
        let counted = match state.keys.get_mut(&key) {
            Some(r) => {
                self.expire(r, now);
                r.failures.len() + r.pending as usize
            }
            None => 0,
        };
        if counted >= self.limits.login_failures_per_source as usize {
            return Err(Refusal::Blocked);
        }
        let in_flight = state.in_flight.get(&key.0).copied().unwrap_or(0);
        if in_flight >= CHECKS_PER_SOURCE {
            return Err(Refusal::Busy);
        }
        if !state.keys.contains_key(&key) && state.keys.len() >= TRACKED_KEYS_MAX {
            self.make_room(&mut state, now);
        }
        state.keys.entry(key).or_default().pending += 1;
        *state.in_flight.entry(key.0).or_default() += 1;
        Ok(Attempt {
            tracker: Arc::clone(self),
            key,
            pending: true,
        })
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
            .in_flight
            .get(&Source::of(ip))
            .copied()
            .unwrap_or(0)
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

    fn release(&self, source: Source) {
        let mut state = self.lock();
        if let Some(n) = state.in_flight.get_mut(&source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.in_flight.remove(&source);
            }
        }
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
        self.tracker.release(self.key.0);
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

    #[test]
    fn failures_delay_and_block() {
        let t = tracker(3);
        let a = ip("127.0.0.1");
        let (d1, over1) = t.begin(a, "glpi").unwrap().failed();
        let (d2, _) = t.begin(a, "glpi").unwrap().failed();
        let (_, over3) = t.begin(a, "glpi").unwrap().failed();
        assert!(d2 > d1 && !over1 && over3);
        assert_eq!(t.begin(a, "glpi").err(), Some(Refusal::Blocked));
        assert!(t.begin(ip("127.0.0.2"), "glpi").is_ok());
        // A success does not count.
        let t = tracker(1);
        drop(t.begin(a, "glpi").unwrap());
        assert_eq!(t.counted(a, "glpi"), 0);
        assert!(t.begin(a, "glpi").is_ok());
    }

    /// Attempts are counted when they start: parallel guesses are refused once the limit is
    /// reached by attempts still under way, as sequential ones would be by their failures.
    #[test]
    fn attempts_count_when_they_start() {
        let t = FailureTracker::new(ConnectionLimits {
            login_failures_per_source: 2,
            ..Default::default()
        });
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        let first = t.begin(a, "glpi").unwrap();
        let _other_source = t.begin(b, "glpi").unwrap();
        // Different source: only the one started from `a` counts here.
        assert_eq!(t.counted(a, "glpi"), 1);
        let _second = t.begin(a, "glpi").unwrap();
        drop(first);
        // One under way, one settled without a verdict: only the first is still counted.
        assert_eq!(t.counted(a, "glpi"), 1);
        let mut third = t.begin(a, "glpi").unwrap();
        third.failed();
        assert_eq!(t.begin(a, "glpi").err(), Some(Refusal::Blocked));
    }

    /// Keyed on source and user: failures for one user do not block another from the same
    /// address (every local process shares 127.0.0.1).
    #[test]
    fn the_key_is_source_and_user() {
        let t = tracker(2);
        let lo = ip("127.0.0.1");
        for _ in 0..2 {
            t.begin(lo, "intruder").unwrap().failed();
        }
        assert_eq!(t.begin(lo, "intruder").err(), Some(Refusal::Blocked));
        assert!(t.begin(lo, "glpi").is_ok());
    }

    /// IPv6 sources are grouped by /64; IPv4-mapped IPv6 addresses are their IPv4 form.
    #[test]
    fn ipv6_sources_are_grouped_by_64() {
        let t = tracker(2);
        t.begin(ip("2001:db8:1:2::1"), "u").unwrap().failed();
        t.begin(ip("2001:db8:1:2:ffff::9"), "u").unwrap().failed();
        assert_eq!(
            t.begin(ip("2001:db8:1:2::abcd"), "u").err(),
            Some(Refusal::Blocked)
        );
        assert!(t.begin(ip("2001:db8:1:3::1"), "u").is_ok());

        t.begin(ip("::ffff:192.0.2.7"), "v").unwrap().failed();
        t.begin(ip("192.0.2.7"), "v").unwrap().failed();
        assert_eq!(t.begin(ip("192.0.2.7"), "v").err(), Some(Refusal::Blocked));
        assert_eq!(
            Source::of(ip("::ffff:10.1.2.3")),
            Source::of(ip("10.1.2.3"))
        );
    }

    /// At most CHECKS_PER_SOURCE checks at once per source, whatever the user names; a failed
    /// one holds its place until dropped (after its delay).
    #[test]
    fn checks_in_flight_per_source_are_bounded() {
        let t = tracker(100);
        let a = ip("198.51.100.1");
        let mut held: Vec<Attempt> = (0..CHECKS_PER_SOURCE)
            .map(|i| t.begin(a, &format!("user{i}")).unwrap())
            .collect();
        assert_eq!(t.begin(a, "another").err(), Some(Refusal::Busy));
        assert!(t.begin(ip("198.51.100.2"), "another").is_ok());
        held[0].failed();
        assert_eq!(t.begin(a, "another").err(), Some(Refusal::Busy));
        held.clear();
        assert_eq!(t.in_flight(a), 0);
        assert!(t.begin(a, "another").is_ok());
    }

    /// The key table stays bounded when every attempt uses a new user name.
    #[test]
    fn tracked_keys_are_bounded() {
        let t = tracker(10);
        let a = ip("203.0.113.1");
        for i in 0..TRACKED_KEYS_MAX + TRACKED_KEYS_MAX / 4 {
            t.begin(a, &format!("u{i}")).unwrap().failed();
        }
        assert!(t.lock().keys.len() <= TRACKED_KEYS_MAX);
    }
}
