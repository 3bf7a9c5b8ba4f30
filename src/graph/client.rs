//! The HTTP side of a Graph listener: one `POST {endpoint}/v1.0/users/{mailbox}/sendMail` per
//! message (`Content-Type: text/plain`, the body the base64 of the MIME message), under one
//! deadline (`graph_send`), through the provider's HTTP client (its egress proxy) with the
//! listener's TLS roots. The answer body is read into a capped buffer (Graph's error JSON is
//! small); the MIME message is encoded once into a buffer of known size and never logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use tokio::time::{Instant, timeout_at};
use url::Url;

use crate::token::HttpClient;
use crate::token::ProviderConfig;

/// Largest Graph answer body read (error JSON; a 202 has none).
const ANSWER_MAX: usize = 64 * 1024;

/// Graph's request size limit for `sendMail` (4 MB, the Graph limit on a request body): the
/// base64 of the MIME message must fit, so the message itself may have at most 3/4 of it.
pub const REQUEST_MAX: usize = 4 * 1024 * 1024;
/// Largest MIME message, in bytes, whose base64 fits [`REQUEST_MAX`].
pub const MESSAGE_MAX: usize = REQUEST_MAX / 4 * 3;

/// What came back.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    /// Graph's `request-id` header (for support cases), or `client-request-id` echoed.
    pub request_id: Option<String>,
    pub body: Vec<u8>,
}

/// HTTP clients for Graph, one per provider (its proxy setting), all with the listener's TLS
/// roots; built on first use and kept for the listener's life.
#[derive(Debug)]
pub struct GraphClients {
    tls: Arc<rustls::ClientConfig>,
    by_provider: Mutex<HashMap<String, HttpClient>>,
}

impl GraphClients {
    pub fn new(tls: Arc<rustls::ClientConfig>) -> Self {
        GraphClients {
            tls,
            by_provider: Mutex::new(HashMap::new()),
        }
    }

    fn for_provider(&self, provider: &ProviderConfig) -> HttpClient {
        let mut map = self.by_provider.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(provider.name.clone())
            .or_insert_with(|| provider.http.with_tls(Arc::clone(&self.tls)))
            .clone()
    }

    /// Post `mime` for `mailbox` with `token`. `Err` says why no answer came (no content).
    pub async fn send_mail(
        &self,
        provider: &ProviderConfig,
        endpoint: &str,
        mailbox: &str,
        token: &str,
        mime: &[u8],
        limit: Duration,
    ) -> Result<Answer, String> {
        let url = send_mail_url(endpoint, mailbox)?;
        let http = self.for_provider(provider);
        let (client, via) = http.reqwest_for(&url, limit)?;
        let via = via.map(|v| format!(" via {v}")).unwrap_or_default();
        let deadline = Instant::now() + limit;
        let encoded = base64::engine::general_purpose::STANDARD.encode(mime);
        let client_request_id = request_id();
        let request = client
            .post(url)
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "text/plain")
            .header(reqwest::header::ACCEPT, "application/json")
            .header("client-request-id", &client_request_id)
            .body(encoded);
        let mut response = match timeout_at(deadline, request.send()).await {
            Err(_) => return Err(format!("timed out after {}s{via}", limit.as_secs())),
            Ok(Err(e)) => {
                let phase = if e.is_connect() { "connect" } else { "request" };
                return Err(format!(
                    "{phase} failed{via}: {}",
                    crate::token::http::chain(&e.without_url())
                ));
            }
            Ok(Ok(r)) => r,
        };
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(100).collect::<String>())
        };
        let status = response.status().as_u16();
        let retry_after = header("retry-after");
        let request_id = header("request-id").or(Some(client_request_id));
        let mut body = Vec::new();
        loop {
            match timeout_at(deadline, response.chunk()).await {
                Err(_) => return Err(format!("timed out reading the answer{via}")),
                Ok(Err(e)) => {
                    return Err(format!(
                        "reading the answer failed{via}: {}",
                        crate::token::http::chain(&e.without_url())
                    ));
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => {
                    let room = ANSWER_MAX.saturating_sub(body.len());
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
            }
        }
        Ok(Answer {
            status,
            retry_after,
            request_id,
            body,
        })
    }
}

/// `{endpoint}/v1.0/users/{mailbox}/sendMail`, the mailbox as one path segment.
pub fn send_mail_url(endpoint: &str, mailbox: &str) -> Result<Url, String> {
    let mut url = crate::token::http::parse_url(endpoint).map_err(|e| e.to_string())?;
    url.path_segments_mut()
        .map_err(|_| format!("{endpoint} cannot take a path"))?
        .pop_if_empty()
        .extend(["v1.0", "users", mailbox, "sendMail"]);
    Ok(url)
}

/// A random id (UUID-shaped) for `client-request-id`.
fn request_id() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_and_limits() {
        assert_eq!(
            send_mail_url("https://graph.microsoft.com", "a@contoso.com")
                .unwrap()
                .as_str(),
            "https://graph.microsoft.com/v1.0/users/a@contoso.com/sendMail"
        );
        assert_eq!(
            send_mail_url("https://127.0.0.1:9/", "a b/c@x")
                .unwrap()
                .as_str(),
            "https://127.0.0.1:9/v1.0/users/a%20b%2Fc@x/sendMail"
        );
        assert!(send_mail_url("http://graph.example.com", "a@x").is_err());
        // The base64 of the largest message fits the request limit exactly.
        assert_eq!(MESSAGE_MAX.div_ceil(3) * 4, REQUEST_MAX);
        assert_eq!(request_id().len(), 36);
    }
}
