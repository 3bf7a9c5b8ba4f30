//! Small helpers shared by every fake server: randomness, ids and the date formats that Entra and
//! Exchange put on the wire. No I/O.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// `n` random bytes from the OS.
pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    // getrandom only fails when the OS has no entropy source at all; a sandbox cannot go on then.
    getrandom::fill(&mut v).expect("OS random number generator unavailable");
    v
}

/// An opaque URL-safe token of about `chars` characters, prefixed like Microsoft's (`EwB…`, `0.A…`).
pub(crate) fn opaque_token(prefix: &str, chars: usize) -> String {
    let bytes = random_bytes(chars * 3 / 4 + 1);
    let mut s = String::with_capacity(prefix.len() + chars + 4);
    s.push_str(prefix);
    s.push_str(&URL_SAFE_NO_PAD.encode(bytes));
    s.truncate(prefix.len() + chars);
    s
}

/// A random GUID in the 8-4-4-4-12 form Entra uses for trace and correlation ids.
pub(crate) fn guid() -> String {
    let b = random_bytes(16);
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Random upper-case letters and digits (device-flow user codes).
pub(crate) fn user_code(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    random_bytes(len)
        .into_iter()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

pub(crate) fn b64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

pub(crate) fn unb64(data: &[u8]) -> Option<Vec<u8>> {
    let trimmed = data.trim_ascii();
    STANDARD.decode(trimmed).ok()
}

/// Broken-down UTC time.
pub(crate) struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub min: u32,
    pub sec: u32,
    pub weekday: u32, // 0 = Sunday
}

pub(crate) fn civil(t: SystemTime) -> Civil {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days_from_civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        hour: (rem / 3600) as u32,
        min: ((rem % 3600) / 60) as u32,
        sec: (rem % 60) as u32,
        weekday: (days + 4).rem_euclid(7) as u32,
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// `2026-11-22 10:04:05Z`, the form of Entra's `timestamp` field and error text.
pub(crate) fn entra_timestamp(t: SystemTime) -> String {
    let c = civil(t);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.min, c.sec
    )
}

/// RFC 5322 date: `Sun, 22 Nov 2026 10:04:05 +0000` (SMTP greeting).
pub(crate) fn rfc5322_date(t: SystemTime) -> String {
    let c = civil(t);
    format!(
        "{}, {} {} {:04} {:02}:{:02}:{:02} +0000",
        DAYS[c.weekday as usize],
        c.day,
        MONTHS[(c.month - 1) as usize],
        c.year,
        c.hour,
        c.min,
        c.sec
    )
}

/// IMAP `date-time` (RFC 3501 §9): `22-Nov-2026 01:57:50 +0000`.
pub(crate) fn imap_date(t: SystemTime) -> String {
    let c = civil(t);
    format!(
        "{:02}-{}-{:04} {:02}:{:02}:{:02} +0000",
        c.day,
        MONTHS[(c.month - 1) as usize],
        c.year,
        c.hour,
        c.min,
        c.sec
    )
}

pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's days_from_civil).
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// IMAP `date` (`1-Feb-2026`, RFC 3501 §9) as days since the epoch.
pub(crate) fn parse_imap_day(s: &str) -> Option<i64> {
    let mut it = s.trim().trim_matches('"').split('-');
    let day: u32 = it.next()?.trim().parse().ok()?;
    let mon = it.next()?;
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(mon))? as u32 + 1;
    let year: i64 = it.next()?.parse().ok()?;
    if it.next().is_some() || !(1..=31).contains(&day) {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

/// IMAP `date-time` (`22-Nov-2026 01:57:50 +0000`) as a SystemTime.
pub(crate) fn parse_imap_date_time(s: &str) -> Option<SystemTime> {
    let s = s.trim().trim_matches('"').trim();
    let mut it = s.split_ascii_whitespace();
    let days = parse_imap_day(it.next()?)?;
    let mut hms = it.next()?.split(':');
    let h: i64 = hms.next()?.parse().ok()?;
    let m: i64 = hms.next()?.parse().ok()?;
    let sec: i64 = hms.next()?.parse().ok()?;
    let zone = it.next()?;
    let sign = match zone.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let zh: i64 = zone.get(1..3)?.parse().ok()?;
    let zm: i64 = zone.get(3..5)?.parse().ok()?;
    let secs = days * 86_400 + h * 3600 + m * 60 + sec - sign * (zh * 3600 + zm * 60);
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Days since the epoch of a SystemTime (UTC).
pub(crate) fn day_of(t: SystemTime) -> i64 {
    (unix_secs(t) / 86_400) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        // 2026-11-22 01:57:50 UTC, a Sunday.
        let t = UNIX_EPOCH + Duration::from_secs(1_795_312_670);
        assert_eq!(imap_date(t), "22-Nov-2026 01:57:50 +0000");
        assert_eq!(rfc5322_date(t), "Sun, 22 Nov 2026 01:57:50 +0000");
        assert_eq!(entra_timestamp(t), "2026-11-22 01:57:50Z");
        assert_eq!(imap_date(UNIX_EPOCH), "01-Jan-1970 00:00:00 +0000");
        assert_eq!(parse_imap_date_time("22-Nov-2026 02:57:50 +0100"), Some(t));
        assert_eq!(parse_imap_day("22-Nov-2026"), Some(day_of(t)));
    }

    #[test]
    fn tokens() {
        let t = opaque_token("EwB", 1500);
        assert_eq!(t.len(), 1500 + 3);
        assert!(t.starts_with("EwB"));
        assert_eq!(guid().len(), 36);
        assert_eq!(user_code(9).len(), 9);
    }
}
