//! The cap on *early* upstream connections: those a session opens as soon as its client
//! connects, before the client has logged in (see the module above).
//!
//! Opening the upstream early hides its setup behind the client's own dialogue, but every idle
//! connection then costs a TLS connection to Exchange: a flood of connections that never log in
//! would fan out. So at most `early_upstream_per_source` sessions per source (an IPv4 address or
//! an IPv6 /64, as the login throttle groups them) and `early_upstream_max` in total hold one.
//! A session over either cap still works: it opens its upstream only once its local login has
//! succeeded (DESIGN: never refuse an ordinary client for it).
//!
//! Invariant: the counts equal the live [`EarlySlot`]s; a slot is given back when dropped (the
//! session logged in, or ended).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::auth::Source;

/// Counts of early upstream connections, shared by every listener of a server.
#[derive(Debug)]
pub struct EarlyUpstreams {
    per_source_max: usize,
    total_max: usize,
    state: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_source: HashMap<Source, usize>,
}

/// One early upstream connection, counted until dropped.
#[derive(Debug)]
pub struct EarlySlot {
    owner: Arc<EarlyUpstreams>,
    source: Source,
}

impl EarlyUpstreams {
    pub fn new(per_source_max: usize, total_max: usize) -> Arc<Self> {
        Arc::new(EarlyUpstreams {
            per_source_max,
            total_max,
            state: Mutex::new(Counts::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a session from `ip`, or `None` when its source or the whole server is at the
    /// cap (the session then connects upstream after its login).
    pub fn try_take(self: &Arc<Self>, ip: IpAddr) -> Option<EarlySlot> {
        let source = Source::of(ip);
        let mut counts = self.lock();
        if counts.total >= self.total_max {
            return None;
        }
        let n = counts.per_source.entry(source).or_insert(0);
        if *n >= self.per_source_max {
            return None;
        }
        *n += 1;
        counts.total += 1;
        Some(EarlySlot {
            owner: Arc::clone(self),
            source,
        })
    }

    /// Early upstream connections held now (all sources).
    pub fn total(&self) -> usize {
        self.lock().total
    }

    /// Early upstream connections held now by the source of `ip`.
    pub fn of_source(&self, ip: IpAddr) -> usize {
        self.lock()
            .per_source
            .get(&Source::of(ip))
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for EarlySlot {
    fn drop(&mut self) {
        let mut counts = self.owner.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_source.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_source_cap_holds_and_slots_come_back_on_drop() {
        let e = EarlyUpstreams::new(2, 100);
        let a = e.try_take(ip("192.0.2.1")).unwrap();
        let _b = e.try_take(ip("192.0.2.1")).unwrap();
        assert!(
            e.try_take(ip("192.0.2.1")).is_none(),
            "third from one source"
        );
        // Another source is not affected.
        let _c = e.try_take(ip("192.0.2.2")).unwrap();
        assert_eq!(e.total(), 3);
        drop(a);
        assert_eq!(e.of_source(ip("192.0.2.1")), 1);
        assert!(e.try_take(ip("192.0.2.1")).is_some());
    }

    #[test]
    fn total_cap_holds_across_sources() {
        let e = EarlyUpstreams::new(10, 3);
        let held: Vec<_> = (1..=3)
            .map(|i| e.try_take(ip(&format!("198.51.100.{i}"))).unwrap())
            .collect();
        assert!(e.try_take(ip("198.51.100.9")).is_none());
        drop(held);
        assert_eq!(e.total(), 0);
        assert!(e.try_take(ip("198.51.100.9")).is_some());
    }

    /// IPv6 sources are grouped by /64 (one host usually holds a whole /64); an IPv4-mapped
    /// address counts as its IPv4 form.
    #[test]
    fn ipv6_is_grouped_by_64_and_mapped_ipv4_is_ipv4() {
        let e = EarlyUpstreams::new(2, 100);
        let _a = e.try_take(ip("2001:db8:1:2::1")).unwrap();
        let _b = e.try_take(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert!(e.try_take(ip("2001:db8:1:2::abcd")).is_none());
        assert!(e.try_take(ip("2001:db8:1:3::1")).is_some());

        let _c = e.try_take(ip("::ffff:203.0.113.5")).unwrap();
        let _d = e.try_take(ip("203.0.113.5")).unwrap();
        assert!(e.try_take(ip("203.0.113.5")).is_none());
        assert_eq!(e.of_source(ip("::ffff:203.0.113.5")), 2);
    }

    /// Every slot dropped leaves nothing behind (no entry per source grows without bound).
    #[test]
    fn no_entries_are_left_behind() {
        let e = EarlyUpstreams::new(5, 1000);
        let slots: Vec<_> = (0..200)
            .filter_map(|i| e.try_take(ip(&format!("10.0.{}.{}", i / 250, i % 250))))
            .collect();
        assert_eq!(slots.len(), 200);
        drop(slots);
        assert_eq!(e.total(), 0);
        assert!(e.lock().per_source.is_empty());
    }
}
