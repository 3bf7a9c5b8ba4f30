//! Sans-I/O: turns a token endpoint's answer (HTTP status, `Retry-After`, body) into a
//! [`TokenResponse`] or a classified [`Failure`].
//!
//! Rules (RFC 6749 §5.1/§5.2, FACTS.md "Microsoft identity platform"):
//! - transient: 5xx, 429 (with `Retry-After`), `temporarily_unavailable`, `server_error`,
//!   `authorization_pending` / `slow_down` (device-code polling), AADSTS50196 (loop detected) and
//!   AADSTS90033, and any body that cannot be read as an OAuth2 answer (proxies, HTML error pages);
//! - permanent: every other OAuth2 `error` (`invalid_grant`, `invalid_client`, `unauthorized_client`,
//!   `invalid_scope`, …). The AADSTS number comes from `error_codes`, else from `error_description`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::failure::{ErrorKind, Failure, TRANSIENT_AADSTS, aadsts_summary};
use crate::secret::{Secret, SecretString};

/// Access tokens without `expires_in` are taken to live this long (RFC 6749 leaves it open).
const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(3600);
/// `Retry-After` values above this are clamped.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Access-token lifetimes (`expires_in`) above this are clamped.
const MAX_EXPIRES_IN: Duration = Duration::from_secs(24 * 3600);
/// Device codes living longer than this are taken to expire then (Entra ID: 900 s).
const MAX_DEVICE_CODE_LIFETIME: Duration = Duration::from_secs(3600);
/// The device-code polling interval is kept within these bounds (RFC 8628 §3.2 default 5 s).
const MIN_POLL_INTERVAL: Duration = Duration::from_secs(1);
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(60);
/// Server text kept in [`Failure::description`] (first line only).
const MAX_DESCRIPTION: usize = 200;

/// A successful token response.
#[derive(Debug)]
pub struct TokenResponse {
    pub access_token: SecretString,
    /// A new refresh token (rotation); `None` when the provider keeps the old one.
    pub refresh_token: Option<SecretString>,
    pub expires_in: Duration,
    pub scope: Option<String>,
    pub token_type: Option<String>,
    pub id_token: Option<SecretString>,
}

/// A device authorization answer (RFC 8628 §3.2): show `user_code` and `verification_uri` to the
/// user, then poll the token endpoint with `device_code` every `interval`.
#[derive(Debug)]
pub struct DeviceAuthorization {
    pub device_code: SecretString,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub expires_in: Duration,
    pub interval: Duration,
    /// The provider's own instruction text, if any.
    pub message: Option<String>,
}

#[derive(Deserialize)]
struct RawSuccess {
    access_token: Option<String>,
    refresh_token: Option<String>,
    expires_in: Option<serde_json::Value>,
    scope: Option<String>,
    token_type: Option<String>,
    id_token: Option<String>,
}

#[derive(Deserialize)]
struct RawError {
    error: String,
    error_description: Option<String>,
    error_codes: Option<serde_json::Value>,
}

/// Classifies one token endpoint answer. `retry_after` is the raw `Retry-After` header; `now` only
/// serves to read an HTTP-date there.
pub fn classify(
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    now: SystemTime,
) -> Result<TokenResponse, Failure> {
    let retry_after = retry_after.and_then(|v| parse_retry_after(v, now));
    if (200..300).contains(&status) {
        return parse_success(body).map_err(|why| unreadable_success(status, retry_after, why));
    }
    Err(classify_failure(status, retry_after, body))
}

/// Classifies a device authorization answer (RFC 8628 §3.2) like [`classify`] does token answers.
pub fn classify_device_authorization(
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    now: SystemTime,
) -> Result<DeviceAuthorization, Failure> {
    let retry_after = retry_after.and_then(|v| parse_retry_after(v, now));
    if (200..300).contains(&status) {
        return parse_device_authorization(body)
            .map_err(|why| unreadable_success(status, retry_after, why));
    }
    Err(classify_failure(status, retry_after, body))
}

fn unreadable_success(status: u16, retry_after: Option<Duration>, why: &str) -> Failure {
    Failure {
        status: Some(status),
        retry_after,
        ..Failure::new(
            ErrorKind::Transient,
            format!("unreadable token response (HTTP {status}): {why}"),
        )
    }
}

/// A non-2xx answer: HTTP status first (429, 5xx), then the OAuth2 `error` and AADSTS code.
fn classify_failure(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Failure {
    let oauth = serde_json::from_slice::<RawError>(body).ok();
    let (error, description, aadsts) = match &oauth {
        Some(e) => {
            let aadsts = e
                .error_codes
                .as_ref()
                .and_then(first_code)
                .or_else(|| e.error_description.as_deref().and_then(aadsts_in_text));
            (
                Some(clean(&e.error, 64)),
                e.error_description.as_deref().map(first_line),
                aadsts,
            )
        }
        None => (None, None, None),
    };
    let mut f = Failure {
        status: Some(status),
        error: error.clone(),
        aadsts,
        description,
        retry_after,
        ..Failure::new(ErrorKind::Transient, String::new())
    };
    let what = describe(error.as_deref(), aadsts);
    if status == 429 {
        f.message = match retry_after {
            Some(d) => format!(
                "throttled by the token endpoint (HTTP 429, retry after {} s)",
                d.as_secs()
            ),
            None => "throttled by the token endpoint (HTTP 429)".to_owned(),
        };
    } else if status >= 500 {
        f.message = match &what {
            Some(w) => format!("token endpoint error (HTTP {status}): {w}"),
            None => format!("token endpoint error (HTTP {status})"),
        };
    } else if let Some(error) = error.as_deref() {
        let transient = matches!(
            error,
            "temporarily_unavailable" | "server_error" | "authorization_pending" | "slow_down"
        ) || aadsts.is_some_and(|c| TRANSIENT_AADSTS.contains(&c));
        f.kind = if transient {
            ErrorKind::Transient
        } else {
            ErrorKind::Permanent
        };
        if error == "slow_down" && f.retry_after.is_none() {
            // RFC 8628 §3.5: add 5 seconds to the polling interval.
            f.retry_after = Some(Duration::from_secs(5));
        }
        f.message = what.unwrap_or_else(|| error.to_owned());
    } else {
        f.message = format!("unreadable error response from the token endpoint (HTTP {status})");
    }
    f
}

/// `AADSTS70008 refresh token expired`, `invalid_grant (AADSTS50000)`, `invalid_client`.
fn describe(error: Option<&str>, aadsts: Option<u32>) -> Option<String> {
    match (aadsts, aadsts.and_then(aadsts_summary)) {
        (Some(code), Some(summary)) => Some(format!("AADSTS{code} {summary}")),
        (Some(code), None) => Some(format!("{} (AADSTS{code})", error.unwrap_or("error"))),
        (None, _) => error.map(str::to_owned),
    }
}

fn parse_success(body: &[u8]) -> Result<TokenResponse, &'static str> {
    let raw: RawSuccess = serde_json::from_slice(body).map_err(|_| "not a JSON object")?;
    let access_token = raw
        .access_token
        .filter(|t| !t.is_empty())
        .map(Secret::new)
        .ok_or("no access_token")?;
    if let Some(t) = &raw.token_type
        && !t.eq_ignore_ascii_case("bearer")
    {
        return Err("token_type is not Bearer");
    }
    let expires_in = match &raw.expires_in {
        None | Some(serde_json::Value::Null) => DEFAULT_EXPIRES_IN,
        Some(v) => seconds_at_most(v, MAX_EXPIRES_IN).ok_or("expires_in is not a number")?,
    };
    Ok(TokenResponse {
        access_token,
        refresh_token: raw.refresh_token.filter(|t| !t.is_empty()).map(Secret::new),
        expires_in,
        scope: raw.scope,
        token_type: raw.token_type,
        id_token: raw.id_token.map(Secret::new),
    })
}

#[derive(Deserialize)]
struct RawDevice {
    device_code: Option<String>,
    user_code: Option<String>,
    /// Google spells it `verification_url`.
    #[serde(alias = "verification_url")]
    verification_uri: Option<String>,
    verification_uri_complete: Option<String>,
    expires_in: Option<serde_json::Value>,
    interval: Option<serde_json::Value>,
    message: Option<String>,
}

fn parse_device_authorization(body: &[u8]) -> Result<DeviceAuthorization, &'static str> {
    let raw: RawDevice = serde_json::from_slice(body).map_err(|_| "not a JSON object")?;
    let device_code = raw
        .device_code
        .filter(|c| !c.is_empty())
        .map(Secret::new)
        .ok_or("no device_code")?;
    let user_code = raw
        .user_code
        .filter(|c| !c.is_empty())
        .ok_or("no user_code")?;
    let verification_uri = raw
        .verification_uri
        .filter(|c| !c.is_empty())
        .ok_or("no verification_uri")?;
    let expires_in = match &raw.expires_in {
        None | Some(serde_json::Value::Null) => Duration::from_secs(900),
        Some(v) => {
            seconds_at_most(v, MAX_DEVICE_CODE_LIFETIME).ok_or("expires_in is not a number")?
        }
    };
    let interval = match &raw.interval {
        None | Some(serde_json::Value::Null) => Duration::from_secs(5),
        Some(v) => seconds_at_most(v, MAX_POLL_INTERVAL)
            .ok_or("interval is not a number")?
            .max(MIN_POLL_INTERVAL),
    };
    Ok(DeviceAuthorization {
        device_code,
        user_code: clean(&user_code, 64),
        verification_uri: clean(&verification_uri, 512),
        verification_uri_complete: raw.verification_uri_complete.map(|u| clean(&u, 512)),
        expires_in,
        interval,
        message: raw.message.map(|m| clean(&m, 512)),
    })
}

/// A JSON number of seconds, or a string holding one, clamped to `max` (values from the network
/// never reach a clock unbounded). Digit strings too long for a `u64` count as `max`.
fn seconds_at_most(v: &serde_json::Value, max: Duration) -> Option<Duration> {
    let secs = v
        .as_u64()
        // `as` saturates: 1e300 becomes u64::MAX, then the cap.
        .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
        .or_else(|| v.as_str().and_then(|s| saturating_digits(s.trim())))?;
    Some(Duration::from_secs(secs).min(max))
}

/// ASCII digits as a `u64`, `u64::MAX` when there are too many; `None` if not only digits.
fn saturating_digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse().unwrap_or(u64::MAX))
}

fn first_code(v: &serde_json::Value) -> Option<u32> {
    v.as_array()?
        .iter()
        .find_map(|c| c.as_u64().and_then(|n| u32::try_from(n).ok()))
}

/// Finds `AADSTS<digits>` in a description such as `AADSTS70008: The provided …`.
fn aadsts_in_text(text: &str) -> Option<u32> {
    let at = text.find("AADSTS")?;
    let digits: String = text[at + 6..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// First line of a server text, control characters dropped, at most `MAX_DESCRIPTION` characters.
fn first_line(text: &str) -> String {
    let line = text.split(['\r', '\n']).next().unwrap_or_default();
    clean(line, MAX_DESCRIPTION)
}

fn clean(text: &str, max: usize) -> String {
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(max).collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}

/// `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an IMF-fixdate; clamped to one hour (a
/// delay too long for a `u64` or a date in year 9999 included).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Some(secs) = saturating_digits(value) {
        Duration::from_secs(secs)
    } else {
        let at = parse_imf_fixdate(value)?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110 §5.6.7; the year has four digits, so the result
/// always fits a `SystemTime`; anything else is `None`).
fn parse_imf_fixdate(s: &str) -> Option<SystemTime> {
    let rest = s.split_once(", ")?.1;
    let mut parts = rest.split(' ');
    let day: u64 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year = parts.next()?;
    if year.len() != 4 {
        return None;
    }
    let year: i64 = year.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let h: u64 = hms.next()?.parse().ok()?;
    let m: u64 = hms.next()?.parse().ok()?;
    let sec: u64 = hms.next()?.parse().ok()?;
    if parts.next()? != "GMT" || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let days = u64::try_from(days_from_civil(year, month, day as i64)).ok()?;
    let secs = days
        .checked_mul(86_400)?
        .checked_add(h * 3600 + m * 60 + sec)?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
#[path = "response_tests.rs"]
mod tests;
