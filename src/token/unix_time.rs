//! Times kept on disk as seconds since the Unix epoch (status files, token files), and back.
//!
//! Files can be damaged or written by hand, so reading never trusts the number: anything past
//! the end of year 9999 is read as that instant, which every clock and date formatter can hold.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 9999-12-31T23:59:59Z: later times read from a file are clamped to it.
pub const MAX_UNIX_SECS: u64 = 253_402_300_799;

/// Seconds since the Unix epoch (0 before it).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The time `secs` seconds after the Unix epoch, clamped to [`MAX_UNIX_SECS`].
pub fn from_unix_secs(secs: u64) -> SystemTime {
    let secs = Duration::from_secs(secs.min(MAX_UNIX_SECS));
    // On every platform std supports, year 9999 fits a SystemTime; the fallback is only there
    // so that no value from a file can ever panic.
    UNIX_EPOCH.checked_add(secs).unwrap_or(UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_number_from_a_file_is_a_usable_time() {
        for secs in [0, 1_700_000_000, MAX_UNIX_SECS, MAX_UNIX_SECS + 1, u64::MAX] {
            let t = from_unix_secs(secs);
            assert_eq!(unix_secs(t), secs.min(MAX_UNIX_SECS), "{secs}");
            // Further arithmetic a reader does with it stays in range.
            assert!(t.checked_add(Duration::from_secs(86_400 * 366)).is_some());
        }
        assert_eq!(unix_secs(UNIX_EPOCH - Duration::from_secs(5)), 0);
    }
}
