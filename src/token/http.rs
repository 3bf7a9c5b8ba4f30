//! One form POST to a token endpoint: TCP (+ rustls for `https://`) + hyper HTTP/1.1, one connection
//! per request (token requests are rare). Every phase (connect, tls_handshake, http_handshake,
//! request, response_body) runs under one overall deadline and a timeout names the phase it hit.
//! The response body is read with a hard cap.
//!
//! Both bodies hold secrets (the request a client secret and a refresh token, the response the
//! new tokens): the request body is handed to hyper as [`wiping_bytes`], and the response is
//! gathered into one buffer that is zeroed on drop and grows without leaving copies. What hyper
//! and rustls buffer internally on the way is out of our reach.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper::header::{self, HeaderValue};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use zeroize::Zeroizing;

use crate::secret::{Secret, SecretString, wiping_bytes};

const USER_AGENT: &str = concat!("authbridge/", env!("CARGO_PKG_VERSION"));

/// What came back.
pub(crate) struct HttpResponse {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Secret<Vec<u8>>,
}

/// Why no answer came back. Never holds request or response content.
#[derive(Debug)]
pub(crate) enum HttpError {
    /// The URL cannot be used (a configuration error).
    BadUrl(String),
    /// The deadline passed in this phase.
    Timeout(&'static str),
    /// This phase failed.
    Failed(&'static str, String),
    /// The body is larger than allowed.
    TooLarge(usize),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::BadUrl(why) => write!(f, "unusable token URL: {why}"),
            HttpError::Timeout(phase) => write!(f, "timed out ({phase})"),
            HttpError::Failed(phase, why) => write!(f, "{phase} failed: {why}"),
            HttpError::TooLarge(limit) => write!(f, "response larger than {limit} bytes"),
        }
    }
}

/// Where a URL points.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub https: bool,
    /// Host name or IP address, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// `Host` header value (`host[:port]` as written).
    pub authority: String,
    pub path_and_query: String,
}

/// `https://host[:port]/path?query` (no user info), or `http://` to a loopback host only: a
/// token request carries the client secret and a refresh token, so plain HTTP is for tests and
/// local stand-ins, never for a host across a network.
pub(crate) fn parse_url(url: &str) -> Result<Target, HttpError> {
    let bad = |why: &str| HttpError::BadUrl(why.to_owned());
    let uri: hyper::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    let https = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => true,
        Some(s) if s.eq_ignore_ascii_case("http") => false,
        _ => return Err(bad("the scheme must be https://")),
    };
    let auth = uri.authority().ok_or_else(|| bad("no host"))?;
    if auth.as_str().contains('@') {
        return Err(bad("user info in the URL is not supported"));
    }
    let host = auth.host().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if !https && !is_loopback_host(host) {
        return Err(bad(
            "plain http:// is only allowed to a loopback host (127.0.0.1, [::1], localhost), \
             for tests: use https://",
        ));
    }
    Ok(Target {
        https,
        host: host.to_owned(),
        port: auth.port_u16().unwrap_or(if https { 443 } else { 80 }),
        authority: auth.as_str().to_owned(),
        path_and_query: uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
    })
}

/// `localhost` or a loopback IP address (`127.0.0.0/8`, `::1`); `host` without IPv6 brackets.
fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether `url` can serve as a provider endpoint (`token_url`, `authorize_url`,
/// `device_code_url`): what the token client accepts. The error says why, for the config loader.
pub fn check_endpoint_url(url: &str) -> Result<(), String> {
    match parse_url(url) {
        Ok(_) => Ok(()),
        Err(HttpError::BadUrl(why)) => Err(why),
        Err(e) => Err(e.to_string()),
    }
}

/// POSTs `form` (already `application/x-www-form-urlencoded`) to `target`.
pub(crate) async fn post_form(
    target: &Target,
    tls: &Arc<rustls::ClientConfig>,
    form: &SecretString,
    timeout: Duration,
    max_body: usize,
) -> Result<HttpResponse, HttpError> {
    let deadline = Instant::now() + timeout;
    let tcp = timeout_at(
        deadline,
        TcpStream::connect((target.host.as_str(), target.port)),
    )
    .await
    .map_err(|_| HttpError::Timeout("connect"))?
    .map_err(|e| HttpError::Failed("connect", e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    if !target.https {
        return send(tcp, target, form, deadline, max_body).await;
    }
    let name = ServerName::try_from(target.host.clone())
        .map_err(|_| HttpError::BadUrl("the host is not a valid TLS server name".to_owned()))?;
    // We speak HTTP/1.1 only, whatever ALPN the shared config offers.
    let config = if tls.alpn_protocols.is_empty() || tls.alpn_protocols == [b"http/1.1".to_vec()] {
        Arc::clone(tls)
    } else {
        let mut c = (**tls).clone();
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(c)
    };
    let tls_stream = timeout_at(
        deadline,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| HttpError::Timeout("tls_handshake"))?
    .map_err(|e| HttpError::Failed("tls_handshake", e.to_string()))?;
    send(tls_stream, target, form, deadline, max_body).await
}

/// Aborts the connection driver when the request is done or abandoned.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn send<S>(
    io: S,
    target: &Target,
    form: &SecretString,
    deadline: Instant,
    max_body: usize,
) -> Result<HttpResponse, HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = timeout_at(
        deadline,
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(io)),
    )
    .await
    .map_err(|_| HttpError::Timeout("http_handshake"))?
    .map_err(|e| HttpError::Failed("http_handshake", e.to_string()))?;
    let _driver = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));

    let host = HeaderValue::from_str(&target.authority)
        .map_err(|_| HttpError::BadUrl("the host cannot be sent in a header".to_owned()))?;
    let request = Request::post(target.path_and_query.as_str())
        .header(header::HOST, host)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, USER_AGENT)
        .header(header::CONNECTION, "close")
        .body(Full::new(wiping_bytes(form.expose().as_bytes().to_vec())))
        .map_err(|e| HttpError::BadUrl(e.to_string()))?;

    let response = timeout_at(deadline, sender.send_request(request))
        .await
        .map_err(|_| HttpError::Timeout("request"))?
        .map_err(|e| HttpError::Failed("request", e.to_string()))?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let declared = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body as u64) {
        return Err(HttpError::TooLarge(max_body));
    }
    // Sized for the announced length (bounded above), so it usually never grows.
    let mut body = Zeroizing::new(Vec::with_capacity(
        declared.map_or(INITIAL_BODY, |n| n as usize).min(max_body),
    ));
    let mut incoming = Limited::new(response.into_body(), max_body);
    loop {
        let frame = match timeout_at(deadline, incoming.frame()).await {
            Err(_) => return Err(HttpError::Timeout("response_body")),
            Ok(None) => break,
            Ok(Some(Err(e))) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(HttpError::TooLarge(max_body));
            }
            Ok(Some(Err(e))) => return Err(HttpError::Failed("response_body", e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            append_zeroizing(&mut body, &data);
        }
    }
    Ok(HttpResponse {
        status,
        retry_after,
        // Moved, not copied.
        body: Secret::new(std::mem::take(&mut *body)),
    })
}

/// Response buffer size when no `Content-Length` is announced (token answers are a few KiB).
const INITIAL_BODY: usize = 8 * 1024;

/// Appends `data` to `buf`; when it must grow, into a new zeroizing buffer (the old one is zeroed
/// as it is dropped), so a reallocation never leaves a copy of a secret in freed memory.
fn append_zeroizing(buf: &mut Zeroizing<Vec<u8>>, data: &[u8]) {
    let needed = buf.len().saturating_add(data.len());
    if needed > buf.capacity() {
        let mut bigger = Zeroizing::new(Vec::with_capacity(needed.max(buf.capacity() * 2)));
        bigger.extend_from_slice(buf);
        *buf = bigger;
    }
    buf.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse_url("https://login.microsoftonline.com/contoso/oauth2/v2.0/token").unwrap();
        assert_eq!(
            t,
            Target {
                https: true,
                host: "login.microsoftonline.com".into(),
                port: 443,
                authority: "login.microsoftonline.com".into(),
                path_and_query: "/contoso/oauth2/v2.0/token".into(),
            }
        );
        let t = parse_url("http://127.0.0.1:8080/token?x=1").unwrap();
        assert_eq!((t.https, t.port), (false, 8080));
        assert_eq!(t.path_and_query, "/token?x=1");
        assert_eq!(t.authority, "127.0.0.1:8080");
        let t = parse_url("https://[::1]:8443").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8443));
        assert_eq!(t.path_and_query, "/");
        for bad in [
            "ftp://x/token",
            "/token",
            "https://user:pw@host/token",
            "not a url",
            "",
        ] {
            assert!(matches!(parse_url(bad), Err(HttpError::BadUrl(_))), "{bad}");
        }
    }

    #[test]
    fn response_buffer_grows_without_reallocating_in_place() {
        let mut buf = Zeroizing::new(Vec::with_capacity(4));
        append_zeroizing(&mut buf, b"abc");
        let before = buf.as_ptr();
        append_zeroizing(&mut buf, b"d");
        assert_eq!(buf.as_ptr(), before, "fits: appended in place");
        append_zeroizing(&mut buf, b"efgh");
        assert_eq!(&buf[..], b"abcdefgh");
        assert!(buf.capacity() >= 8);
        // The body handed out is the buffer itself, moved into a Secret.
        let body: Secret<Vec<u8>> = Secret::new(std::mem::take(&mut *buf));
        assert_eq!(body.expose(), b"abcdefgh");
    }

    #[test]
    fn plain_http_only_to_loopback() {
        for ok in [
            "http://127.0.0.1:8080/token",
            "http://127.1.2.3/token",
            "http://[::1]:8080/token",
            "http://localhost/token",
            "http://LocalHost:1/token",
            "https://login.microsoftonline.com/t/oauth2/v2.0/token",
        ] {
            assert!(check_endpoint_url(ok).is_ok(), "{ok}");
        }
        for refused in [
            "http://login.microsoftonline.com/t/oauth2/v2.0/token",
            "http://10.1.2.3/token",
            "http://[::ffff:127.0.0.1]/token",
            "http://[2001:db8::1]/token",
            "http://localhost.evil.example/token",
            "http://127.0.0.1.nip.io/token",
        ] {
            let why = check_endpoint_url(refused).unwrap_err();
            assert!(why.contains("use https://"), "{refused}: {why}");
            assert!(matches!(parse_url(refused), Err(HttpError::BadUrl(_))));
        }
    }
}
