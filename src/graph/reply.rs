//! What the SMTP client is told about a Microsoft Graph `sendMail` answer, sans I/O: `250` only
//! for `202 Accepted`; throttling, service and network trouble are temporary (`451 4.x.x`, so a
//! queueing client such as GLPI keeps the mail and retries); a refusal of the request itself
//! (`400`, `403`, `404`, `413`) is permanent (`5xx`) with Graph's error code and what to fix.
//!
//! Graph's error body is `{"error": {"code": "...", "message": "...", "innerError": {...}}}`;
//! only `code` and `message` are used, each cut to one short line.

use serde::Deserialize;

use super::connector::SendReply;
use crate::protocol::one_line;

/// Longest part of Graph's error message quoted to the client.
const MESSAGE_MAX: usize = 200;

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// Graph's error `code` and `message` from a response body (empty when it has none).
pub fn error_of(body: &[u8]) -> (String, String) {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => (
            short(&b.error.code, 80),
            short(&b.error.message, MESSAGE_MAX),
        ),
        Err(_) => (String::new(), String::new()),
    }
}

fn short(s: &str, max: usize) -> String {
    let s = one_line(s);
    let s = s.trim();
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The client's reply to an HTTP answer from `sendMail` for `mailbox`. `retry_after` is the
/// `Retry-After` header as sent.
pub fn for_status(status: u16, retry_after: Option<&str>, body: &[u8], mailbox: &str) -> SendReply {
    let (code, message) = error_of(body);
    let label = if code.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status} {code}")
    };
    let said = if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    };
    let retry = retry_after
        .map(|r| one_line(r).trim().to_string())
        .filter(|r| !r.is_empty())
        .map(|r| format!("; retry after {r} seconds"))
        .unwrap_or_default();
    let r = |code: u16, text: String| SendReply { code, text };
    match status {
        202 | 200 => r(
            250,
            "2.0.0 Message accepted by Microsoft Graph for delivery".into(),
        ),
        429 => r(
            451,
            format!(
                "4.7.0 Microsoft Graph is throttling this mailbox ({label}){retry}; the message was not sent, try again later"
            ),
        ),
        500 | 502 | 503 | 504 => r(
            451,
            format!(
                "4.4.1 Microsoft Graph is unavailable ({label}{said}){retry}; the message was not sent, try again later"
            ),
        ),
        401 => r(
            454,
            format!(
                "4.7.0 Temporary authentication failure: Microsoft Graph refused the access token ({label}{said}); see the authbridge log"
            ),
        ),
        403 if code.eq_ignore_ascii_case("ErrorSendAsDenied") => r(
            550,
            format!(
                "5.7.60 Microsoft Graph refused ({label}{said}): {mailbox} may not send as the From address; grant SendAs (Add-RecipientPermission) or send From {mailbox}"
            ),
        ),
        403 => r(
            550,
            format!(
                "5.7.1 Microsoft Graph refused ({label}{said}): the app needs the Mail.Send permission (application permission with admin consent, or delegated Mail.Send — Mail.Send.Shared to send from a shared mailbox — and `authbridge login` again), and an Application Access Policy must include {mailbox}"
            ),
        ),
        404 => r(
            550,
            format!(
                "5.1.1 Microsoft Graph does not know the mailbox {mailbox} ({label}{said}); check the account's mailbox in the authbridge config"
            ),
        ),
        413 => r(
            552,
            format!("5.3.4 Message too large for Microsoft Graph ({label}{said})"),
        ),
        400 => r(
            554,
            format!("5.6.0 Microsoft Graph refused the message ({label}{said})"),
        ),
        s if (400..500).contains(&s) => r(
            554,
            format!("5.0.0 Microsoft Graph refused the request ({label}{said})"),
        ),
        _ => r(
            451,
            format!(
                "4.4.1 Unexpected answer from Microsoft Graph ({label}{said}); the message was not sent, try again later"
            ),
        ),
    }
}

/// The reply when no answer came (connect, TLS, timeout).
pub fn for_network(why: &str) -> SendReply {
    SendReply {
        code: 451,
        text: format!(
            "4.4.1 Could not reach Microsoft Graph ({}); the message was not sent, try again later",
            short(why, MESSAGE_MAX)
        ),
    }
}

/// The reply when no access token could be had (as at login: temporary).
pub fn for_token(why: &str) -> SendReply {
    SendReply {
        code: 454,
        text: format!(
            "4.7.0 Temporary authentication failure: {}",
            short(why, 400)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: &str, msg: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"error": {"code": code, "message": msg, "innerError": {"request-id": "r"}}})).unwrap()
    }

    #[test]
    fn mapping() {
        assert_eq!(for_status(202, None, b"", "m@x").code, 250);
        let t = for_status(
            429,
            Some("7"),
            &body("ApplicationThrottled", "slow down"),
            "m@x",
        );
        assert_eq!(t.code, 451);
        assert!(t.text.starts_with("4.7.0") && t.text.contains("retry after 7 seconds"));
        assert_eq!(for_status(503, None, b"<html>", "m@x").code, 451);
        assert_eq!(for_status(504, None, b"", "m@x").code, 451);
        let d = for_status(403, None, &body("ErrorSendAsDenied", "no\r\nrights"), "m@x");
        assert_eq!(d.code, 550);
        assert!(d.text.contains("ErrorSendAsDenied") && d.text.contains("SendAs"));
        assert!(!d.text.contains('\r') && !d.text.contains('\n'));
        let a = for_status(
            403,
            None,
            &body("ErrorAccessDenied", "Access is denied."),
            "m@x",
        );
        assert!(a.text.contains("Mail.Send"), "{}", a.text);
        let n = for_status(404, None, &body("ErrorInvalidUser", "bad"), "m@x");
        assert!(n.text.starts_with("5.1.1") && n.text.contains("ErrorInvalidUser"));
        assert_eq!(for_status(400, None, b"", "m@x").code, 554);
        assert_eq!(for_status(413, None, b"", "m@x").code, 552);
        assert_eq!(for_network("connect failed").code, 451);
        let long = "x".repeat(5000);
        assert!(for_status(400, None, &body("C", &long), "m@x").text.len() < 400);
    }
}
