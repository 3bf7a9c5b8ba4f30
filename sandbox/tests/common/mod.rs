//! Test helpers: a tiny HTTPS client for the token service and a line client for SMTP/IMAP/POP3,
//! both trusting only the sandbox CA.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use sandbox::Sandbox;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub const T: Duration = Duration::from_secs(5);

pub fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

pub fn xoauth2(user: &str, token: &str) -> String {
    b64(format!("user={user}\x01auth=Bearer {token}\x01\x01").as_bytes())
}

pub async fn tls_connect(sb: &Sandbox, addr: SocketAddr) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tls_upgrade(sb, tcp).await
}

pub async fn tls_upgrade<S: AsyncRead + AsyncWrite + Unpin>(sb: &Sandbox, s: S) -> TlsStream<S> {
    let connector = TlsConnector::from(sb.client_config());
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(T, connector.connect(name, s))
        .await
        .unwrap()
        .unwrap()
}

pub struct HttpReply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl HttpReply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// One HTTPS request on a fresh connection.
pub async fn request(
    sb: &Sandbox,
    method: &str,
    path_and_query: &str,
    body: &str,
    content_type: &str,
) -> Result<HttpReply, hyper::Error> {
    let tls = tls_connect(sb, sb.token_addr()).await;
    request_on(tls, method, path_and_query, body, content_type).await
}

/// One HTTPS request to `addr`, trusting the CA in `ca_pem`.
pub async fn request_to(
    addr: SocketAddr,
    ca_pem: &str,
    method: &str,
    path_and_query: &str,
    body: &str,
) -> Result<HttpReply, hyper::Error> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = TlsConnector::from(sandbox::client_config(ca_pem).unwrap());
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    request_on(
        tls,
        method,
        path_and_query,
        body,
        "application/x-www-form-urlencoded",
    )
    .await
}

async fn request_on(
    tls: TlsStream<TcpStream>,
    method: &str,
    path_and_query: &str,
    body: &str,
    content_type: &str,
) -> Result<HttpReply, hyper::Error> {
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path_and_query)
        .header("host", "127.0.0.1")
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = send.send_request(req).await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(HttpReply {
        status,
        headers,
        body,
    })
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// POST a form to the tenant's token endpoint.
pub async fn token_request(
    sb: &Sandbox,
    pairs: &[(&str, &str)],
) -> Result<HttpReply, hyper::Error> {
    let path = format!("/{}/oauth2/v2.0/token", sb.tenant());
    request(
        sb,
        "POST",
        &path,
        &form(pairs),
        "application/x-www-form-urlencoded",
    )
    .await
}

pub async fn refresh(sb: &Sandbox, client: &str, secret: &str, rt: &str) -> HttpReply {
    token_request(
        sb,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", client),
            ("client_secret", secret),
            ("refresh_token", rt),
            (
                "scope",
                "https://outlook.office.com/IMAP.AccessAsUser.All offline_access",
            ),
        ],
    )
    .await
    .unwrap()
}

/// A line-oriented client over any stream.
pub struct LineClient<S> {
    pub io: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> LineClient<S> {
    pub fn new(s: S) -> Self {
        LineClient {
            io: BufReader::new(s),
        }
    }

    pub async fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes()).await;
    }

    pub async fn send_raw(&mut self, data: &[u8]) {
        let w = self.io.get_mut();
        w.write_all(data).await.unwrap();
        w.flush().await.unwrap();
    }

    /// One line without CRLF; panics on EOF or timeout.
    pub async fn line(&mut self) -> String {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(T, self.io.read_until(b'\n', &mut buf))
            .await
            .expect("timed out waiting for a line")
            .unwrap();
        assert!(n > 0, "unexpected EOF");
        assert!(buf.ends_with(b"\r\n"), "line without CRLF: {buf:?}");
        buf.truncate(buf.len() - 2);
        String::from_utf8(buf).unwrap()
    }

    /// Read exactly n bytes (a literal).
    pub async fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        tokio::time::timeout(T, self.io.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        buf
    }

    /// Read lines until one starts with `prefix`; returns all of them (the last included).
    pub async fn until(&mut self, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let l = self.line().await;
            let done = l.starts_with(prefix);
            out.push(l);
            if done {
                return out;
            }
        }
    }

    /// Send a line and return the reply line, asserting its prefix.
    pub async fn cmd(&mut self, line: &str, expect: &str) -> String {
        self.send(line).await;
        let l = self.line().await;
        assert!(
            l.starts_with(expect),
            "after {line:?} expected {expect:?}, got {l:?}"
        );
        l
    }

    /// SMTP multi-line reply (all lines).
    pub async fn smtp_reply(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let l = self.line().await;
            let more = l.as_bytes().get(3) == Some(&b'-');
            out.push(l);
            if !more {
                return out;
            }
        }
    }

    /// True when the server closed the connection (EOF within the timeout).
    pub async fn closed(&mut self) -> bool {
        let mut buf = Vec::new();
        matches!(
            tokio::time::timeout(T, self.io.read_until(b'\n', &mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    pub fn into_inner(self) -> S {
        assert!(self.io.buffer().is_empty(), "bytes left before TLS upgrade");
        self.io.into_inner()
    }
}

pub async fn plain(addr: SocketAddr) -> LineClient<TcpStream> {
    LineClient::new(TcpStream::connect(addr).await.unwrap())
}

pub async fn tls(sb: &Sandbox, addr: SocketAddr) -> LineClient<TlsStream<TcpStream>> {
    LineClient::new(tls_connect(sb, addr).await)
}

pub type Tls = TlsStream<TcpStream>;

/// SMTP on the submission port: greeting, EHLO, STARTTLS, EHLO again; returns the TLS client.
pub async fn smtp_starttls(sb: &Sandbox) -> LineClient<Tls> {
    let mut c = plain(sb.smtp_addr()).await;
    let g = c.line().await;
    assert!(g.starts_with("220 "), "{g}");
    c.send("EHLO client.test").await;
    let ehlo = c.smtp_reply().await;
    assert!(ehlo.iter().any(|l| l == "250-STARTTLS"), "{ehlo:?}");
    c.cmd("STARTTLS", "220 ").await;
    let tls = tls_upgrade(sb, c.into_inner()).await;
    let mut c = LineClient::new(tls);
    c.send("EHLO client.test").await;
    let ehlo = c.smtp_reply().await;
    assert!(
        ehlo.iter().any(|l| l.ends_with("AUTH LOGIN XOAUTH2")),
        "{ehlo:?}"
    );
    c
}

pub fn arc<T>(t: T) -> Arc<T> {
    Arc::new(t)
}
