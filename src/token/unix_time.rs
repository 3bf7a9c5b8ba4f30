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

/// A UTC calendar date and time of day: what the date formatters print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    /// 1–12.
    pub month: u32,
    /// 1–31.
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// Days since the epoch modulo 7: 0 is Thursday (1970-01-01).
    pub weekday_from_thursday: u32,
}

/// The UTC calendar date of `secs` seconds after the Unix epoch (clamped to [`MAX_UNIX_SECS`]),
/// by Howard Hinnant's `civil_from_days`.
pub fn civil(secs: u64) -> Civil {
    let secs = secs.min(MAX_UNIX_SECS);
    let days = (secs / 86_400) as i64;
    let rem = (secs % 86_400) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    Civil {
        year: yoe + era * 400 + i64::from(month <= 2),
        month,
        day,
        hour: rem / 3600,
        minute: rem % 3600 / 60,
        second: rem % 60,
        weekday_from_thursday: (days % 7) as u32,
    }
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

    #[test]
    fn civil_dates() {
        let c = civil(951_782_400);
        assert_eq!((c.year, c.month, c.day, c.hour), (2000, 2, 29, 0));
        let c = civil(1_700_000_000);
        assert_eq!(
            (c.year, c.month, c.day, c.hour, c.minute, c.second),
            (2023, 11, 14, 22, 13, 20)
        );
        assert_eq!(civil(0).weekday_from_thursday, 0);
        assert_eq!(civil(u64::MAX).year, 9999);
    }
}
