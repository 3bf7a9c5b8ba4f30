//! A stand-in for Microsoft Graph `POST /v1.0/users/{id}/sendMail` with a MIME body, over
//! HTTPS on its own port (hyper, HTTP/1.1).
//!
//! What it checks, in order, with Graph's status and error code for each failure:
//! 1. a bearer token the fake Entra issued and still valid, with the Graph audience
//!    (`401 InvalidAuthenticationToken`);
//! 2. `Mail.Send`: delegated `scp` or application `roles` (`403 ErrorAccessDenied`); a
//!    delegated token sending from another mailbox than its user's needs `Mail.Send.Shared`
//!    (`403 ErrorAccessDenied`), as Microsoft documents for shared mailboxes;
//! 3. the mailbox exists (`404 ErrorInvalidUser`; every address exists unless removed with
//!    [`crate::Sandbox::remove_graph_mailbox`]);
//! 4. the token may send as the mailbox and as the `From:` address
//!    ([`crate::exchange::Exchange::may_send_via_graph`]; `403 ErrorSendAsDenied`);
//! 5. `Content-Type: text/plain` and a base64 body of at most 4 MB
//!    (`413 RequestEntityTooLarge`, `400 ErrorMimeContentInvalidBase64String`), whose header names
//!    at least one recipient in To, Cc or Bcc (`400 ErrorInvalidRecipients`).
//!
//! An accepted message (`202`, empty body, a `request-id` header) is delivered to every
//! recipient's sandbox mailbox with its `Bcc:` field removed, and recorded like an SMTP
//! submission. Switchable failures (`429` with `Retry-After`, `503`, `ErrorSendAsDenied`) answer
//! before any check, for the next N requests or until cleared; every request is counted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpStream;

use crate::util::{guid, unb64};
use crate::{Shared, StoredMessage, lock, mime};

/// Graph's request size limit (4 MB).
pub const REQUEST_MAX: usize = 4 * 1024 * 1024;
/// The Graph audience the fake Entra puts into Graph tokens.
const GRAPH_AUDIENCE: &str = "https://graph.microsoft.com";

/// A failure the Graph stand-in answers with, before any check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GraphFailure {
    /// `429 Too Many Requests` with `Retry-After: secs` (`ApplicationThrottled`).
    Throttle429 { retry_after_secs: u64 },
    /// `503 Service Unavailable` (`ServiceNotAvailable`).
    Unavailable503,
    /// `403 ErrorSendAsDenied`, as if the token lacked SendAs.
    SendAsDenied,
}

impl GraphFailure {
    /// `429[:SECS]`, `503`, `send_as_denied`.
    pub fn parse(spec: &str) -> Option<GraphFailure> {
        let (mode, arg) = match spec.split_once(':') {
            Some((m, a)) => (m, Some(a.parse::<u64>().ok()?)),
            None => (spec, None),
        };
        Some(match mode.to_ascii_lowercase().replace('-', "_").as_str() {
            "429" | "throttle" | "throttle429" => GraphFailure::Throttle429 {
                retry_after_secs: arg.unwrap_or(1),
            },
            "503" | "unavailable" => GraphFailure::Unavailable503,
            "send_as_denied" | "sendasdenied" | "errorsendasdenied" => GraphFailure::SendAsDenied,
            _ => return None,
        })
    }
}

/// Requests the Graph stand-in has seen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GraphCounters {
    /// Every request to the port (any path).
    pub requests: u64,
    /// `202`s.
    pub accepted: u64,
    /// Every other answer.
    pub refused: u64,
}

/// The stand-in's switchable state.
#[derive(Default)]
pub(crate) struct GraphState {
    pub(crate) failure: Option<(GraphFailure, Option<u32>)>,
    pub(crate) counters: GraphCounters,
    /// Addresses that do not exist (`404 ErrorInvalidUser`).
    pub(crate) missing: std::collections::HashSet<String>,
}

impl GraphState {
    fn take_failure(&mut self) -> Option<GraphFailure> {
        let (f, times) = self.failure.clone()?;
        match times {
            Some(1) => self.failure = None,
            Some(n) => self.failure = Some((f.clone(), Some(n - 1))),
            None => {}
        }
        Some(f)
    }
}

pub(crate) async fn serve(shared: Arc<Shared>, tcp: TcpStream) {
    let tls =
        match tokio::time::timeout(crate::conn::HANDSHAKE_TIMEOUT, shared.acceptor.accept(tcp))
            .await
        {
            Ok(Ok(tls)) => tls,
            _ => return,
        };
    let svc = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(&shared, req).await) }
    });
    let _ = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(tls), svc)
        .await;
}

struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

fn error(status: u16, code: &str, message: &str) -> Answer {
    let request_id = guid();
    Answer {
        status,
        headers: Vec::new(),
        body: serde_json::to_vec(&json!({"error": {
            "code": code,
            "message": message,
            "innerError": {"request-id": request_id, "date": "2026-01-01T00:00:00"}
        }}))
        .unwrap_or_default(),
    }
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let request_id = guid();
    let answer = answer(shared, req).await;
    {
        let mut g = lock(&shared.graph);
        g.counters.requests += 1;
        if answer.status == 202 {
            g.counters.accepted += 1;
        } else {
            g.counters.refused += 1;
        }
    }
    let mut b = Response::builder()
        .status(StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("request-id", &request_id);
    if !answer.body.is_empty() {
        b = b.header("content-type", "application/json");
    }
    for (k, v) in answer.headers {
        b = b.header(k, v);
    }
    b.body(Full::new(Bytes::from(answer.body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

async fn answer(shared: &Shared, req: Request<Incoming>) -> Answer {
    let path = req.uri().path().to_string();
    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let mailbox = match (req.method(), segments.as_slice()) {
        (&Method::POST, [v, users, id, send])
            if v == "v1.0" && users == "users" && send.eq_ignore_ascii_case("sendMail") =>
        {
            id.to_ascii_lowercase()
        }
        _ => {
            return error(
                400,
                "BadRequest",
                &format!("Resource not found for the segment '{path}'."),
            );
        }
    };
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let body = match Limited::new(req.into_body(), REQUEST_MAX).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(
                413,
                "RequestEntityTooLarge",
                "The request is larger than the maximum size of 4 MB.",
            );
        }
    };
    if let Some(f) = lock(&shared.graph).take_failure() {
        return match f {
            GraphFailure::Throttle429 { retry_after_secs } => {
                let mut a = error(
                    429,
                    "ApplicationThrottled",
                    "Application is over its MailboxConcurrency limit.",
                );
                a.headers
                    .push(("retry-after", retry_after_secs.to_string()));
                a
            }
            GraphFailure::Unavailable503 => error(
                503,
                "ServiceNotAvailable",
                "The service is temporarily unavailable.",
            ),
            GraphFailure::SendAsDenied => send_as_denied(),
        };
    }
    let token = auth
        .as_deref()
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .unwrap_or("");
    let Some(info) = shared.entra().token_info(token.trim(), Instant::now()) else {
        return error(
            401,
            "InvalidAuthenticationToken",
            "Access token is empty, expired or not valid.",
        );
    };
    if !info
        .aud
        .trim_end_matches('/')
        .eq_ignore_ascii_case(GRAPH_AUDIENCE)
    {
        return error(401, "InvalidAuthenticationToken", "Invalid audience.");
    }
    let has = |list: &[String], p: &str| list.iter().any(|s| s.eq_ignore_ascii_case(p));
    let permitted = match &info.user {
        Some(u) if u.eq_ignore_ascii_case(&mailbox) => {
            has(&info.scp, "Mail.Send") || has(&info.scp, "Mail.Send.Shared")
        }
        Some(_) => has(&info.scp, "Mail.Send.Shared"),
        None => has(&info.roles, "Mail.Send"),
    };
    if !permitted {
        return error(
            403,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        );
    }
    if lock(&shared.graph).missing.contains(&mailbox) {
        return error(
            404,
            "ErrorInvalidUser",
            &format!("The requested user '{mailbox}' is invalid."),
        );
    }
    if !shared.exchange().may_send_via_graph(&info, &mailbox) {
        return send_as_denied();
    }
    if !content_type.starts_with("text/plain") {
        return error(
            400,
            "ErrorInvalidRequest",
            "This stand-in takes MIME content only (Content-Type: text/plain).",
        );
    }
    let Some(raw) = unb64(&body) else {
        return error(
            400,
            "ErrorMimeContentInvalidBase64String",
            "Invalid base64 string for MIME content.",
        );
    };
    let (header, rest) = mime::split(&raw);
    let listed = |name: &str| -> Vec<String> {
        mime::header_value(header, name)
            .map(|v| {
                mime::addresses(&v)
                    .into_iter()
                    .filter(|a| !a.host.is_empty())
                    .map(|a| format!("{}@{}", a.mailbox, a.host).to_ascii_lowercase())
                    .collect()
            })
            .unwrap_or_default()
    };
    if let Some(from) = listed("from").first()
        && *from != mailbox
        && !shared.exchange().may_send_via_graph(&info, from)
    {
        return send_as_denied();
    }
    let mut rcpts = listed("to");
    rcpts.extend(listed("cc"));
    rcpts.extend(listed("bcc"));
    rcpts.dedup();
    if rcpts.is_empty() {
        return error(
            400,
            "ErrorInvalidRecipients",
            "At least one recipient isn't valid.",
        );
    }
    // The delivered copy carries no Bcc.
    let mut delivered = mime::filter_fields(header, &["bcc".to_string()], true);
    delivered.extend_from_slice(rest);
    shared.record_submission(StoredMessage {
        mailboxes: rcpts.clone(),
        auth_user: mailbox.clone(),
        via_connector: false,
        tls: true,
        client_cert_names: Vec::new(),
        from: mailbox,
        rcpts,
        raw: Bytes::from(delivered),
    });
    Answer {
        status: 202,
        headers: Vec::new(),
        body: Vec::new(),
    }
}

fn send_as_denied() -> Answer {
    error(
        403,
        "ErrorSendAsDenied",
        "The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account., Cannot submit message.",
    )
}

/// `%XX` decoding of one path segment (invalid escapes are kept as written).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_failures_and_decode() {
        assert_eq!(
            GraphFailure::parse("429:7"),
            Some(GraphFailure::Throttle429 {
                retry_after_secs: 7
            })
        );
        assert_eq!(
            GraphFailure::parse("503"),
            Some(GraphFailure::Unavailable503)
        );
        assert_eq!(
            GraphFailure::parse("send_as_denied"),
            Some(GraphFailure::SendAsDenied)
        );
        assert_eq!(GraphFailure::parse("nope"), None);
        assert_eq!(percent_decode("a%40b%2"), "a@b%2");
    }
}
