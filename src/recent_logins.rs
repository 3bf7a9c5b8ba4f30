//! Client logins per listener over the last hour, for the admin page: a ring of 60 one-minute
//! buckets per listener (ok and failed counts), fed where logins are counted for `/metrics`.
//!
//! Memory is bounded: 60 buckets per listener name, and at most [`MAX_LISTENERS`] names (they
//! come from the config; a name past the cap is not tracked). Counts saturate. Time is the
//! monotonic clock, so a wall-clock step does not move the window.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets per window (one per minute: the window is one hour).
const BUCKETS: usize = 60;
const BUCKET: Duration = Duration::from_secs(60);
/// Listener names tracked at most.
pub const MAX_LISTENERS: usize = 1024;

/// Logins ok / failed in a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoginCounts {
    pub ok: u64,
    pub failed: u64,
}

#[derive(Clone, Copy, Default)]
struct Bucket {
    /// Minute number (since `RecentLogins::start`) the counts belong to.
    minute: u64,
    ok: u32,
    failed: u32,
}

/// Per listener, the logins of the last hour.
pub struct RecentLogins {
    start: Instant,
    windows: Mutex<HashMap<String, [Bucket; BUCKETS]>>,
}

impl Default for RecentLogins {
    fn default() -> Self {
        RecentLogins::new()
    }
}

impl RecentLogins {
    pub fn new() -> RecentLogins {
        RecentLogins {
            start: Instant::now(),
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn minute(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_secs() / BUCKET.as_secs()
    }

    /// One login on `listener` ended, now.
    pub fn record(&self, listener: &str, ok: bool) {
        self.record_at(listener, ok, Instant::now());
    }

    pub fn record_at(&self, listener: &str, ok: bool, now: Instant) {
        let minute = self.minute(now);
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if !windows.contains_key(listener) && windows.len() >= MAX_LISTENERS {
            return;
        }
        let ring = windows
            .entry(listener.to_owned())
            .or_insert([Bucket::default(); BUCKETS]);
        let slot = &mut ring[(minute % BUCKETS as u64) as usize];
        if slot.minute != minute {
            *slot = Bucket {
                minute,
                ok: 0,
                failed: 0,
            };
        }
        if ok {
            slot.ok = slot.ok.saturating_add(1);
        } else {
            slot.failed = slot.failed.saturating_add(1);
        }
    }

    /// Logins on `listener` in the hour up to now.
    pub fn last_hour(&self, listener: &str) -> LoginCounts {
        self.last_hour_at(listener, Instant::now())
    }

    pub fn last_hour_at(&self, listener: &str, now: Instant) -> LoginCounts {
        let minute = self.minute(now);
        let windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let Some(ring) = windows.get(listener) else {
            return LoginCounts::default();
        };
        ring.iter()
            // The current minute and the 59 before it.
            .filter(|b| b.minute <= minute && minute - b.minute < BUCKETS as u64)
            .fold(LoginCounts::default(), |acc, b| LoginCounts {
                ok: acc.ok.saturating_add(u64::from(b.ok)),
                failed: acc.failed.saturating_add(u64::from(b.failed)),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_of_minutes_then_they_fall_out() {
        let r = RecentLogins::new();
        let t0 = r.start;
        let at = |mins: u64, secs: u64| t0 + Duration::from_secs(mins * 60 + secs);
        r.record_at("smtp", true, at(0, 5));
        r.record_at("smtp", false, at(0, 59));
        r.record_at("smtp", true, at(30, 0));
        r.record_at("imap", false, at(30, 0));
        assert_eq!(
            r.last_hour_at("smtp", at(30, 1)),
            LoginCounts { ok: 2, failed: 1 }
        );
        assert_eq!(
            r.last_hour_at("smtp", at(59, 59)),
            LoginCounts { ok: 2, failed: 1 }
        );
        // Minute 0 is out of the window from minute 60 on.
        assert_eq!(
            r.last_hour_at("smtp", at(60, 0)),
            LoginCounts { ok: 1, failed: 0 }
        );
        assert_eq!(
            r.last_hour_at("imap", at(60, 0)),
            LoginCounts { ok: 0, failed: 1 }
        );
        // The bucket of minute 0 is reused for minute 60: old counts are dropped, not added.
        r.record_at("smtp", true, at(60, 1));
        assert_eq!(
            r.last_hour_at("smtp", at(60, 2)),
            LoginCounts { ok: 2, failed: 0 }
        );
        assert_eq!(r.last_hour_at("smtp", at(200, 0)), LoginCounts::default());
        assert_eq!(r.last_hour_at("pop3", at(1, 0)), LoginCounts::default());
    }

    #[test]
    fn names_are_capped() {
        let r = RecentLogins::new();
        for i in 0..MAX_LISTENERS + 10 {
            r.record(&format!("l{i}"), true);
        }
        assert_eq!(r.windows.lock().unwrap().len(), MAX_LISTENERS);
        assert_eq!(r.last_hour(&format!("l{}", MAX_LISTENERS + 5)).ok, 0);
    }
}
