//! The one-shot loopback HTTP listener of `authbridge login`: which addresses a loopback
//! `redirect_uri` means ([`loopback`]), reading the browser's `GET` to the callback path (head
//! capped, under a timeout) and answering it with a small HTML page.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::admin::html_escape;

/// Largest HTTP request head the callback listener reads.
const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// A browser connection gets this long to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A loopback `redirect_uri`: where to listen and which path the browser comes back to.
#[derive(Debug, PartialEq, Eq)]
pub struct Loopback {
    pub addrs: Vec<SocketAddr>,
    pub port: u16,
    pub path: String,
}

/// Parses a loopback `http://` redirect URI (`localhost`, `127.0.0.1` or `[::1]`).
pub fn loopback(redirect_uri: &str) -> Result<Loopback, String> {
    let not_loopback = || {
        format!(
            "redirect_uri {redirect_uri} is not a loopback http:// address (http://localhost:PORT/PATH), \
             so authbridge cannot receive the browser's redirect itself: use `--paste` (or \
             `--device-code`)"
        )
    };
    let uri: hyper::Uri = redirect_uri.parse().map_err(|_| not_loopback())?;
    if uri.scheme_str() != Some("http") {
        return Err(not_loopback());
    }
    let port = uri.port_u16().unwrap_or(80);
    let v4 = SocketAddr::from(([127, 0, 0, 1], port));
    let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    let addrs = match uri.host().map(|h| h.to_ascii_lowercase()).as_deref() {
        Some("localhost") => vec![v4, v6],
        Some("127.0.0.1") => vec![v4],
        Some("[::1]" | "::1") => vec![v6],
        _ => return Err(not_loopback()),
    };
    let path = match uri.path() {
        "" => "/".to_owned(),
        p => p.to_owned(),
    };
    Ok(Loopback { addrs, port, path })
}

/// One request to the callback path.
pub(super) struct Request {
    pub(super) params: HashMap<String, String>,
}

pub(super) async fn accept(
    listener: TcpListener,
    path: String,
    tx: mpsc::Sender<(TcpStream, Request)>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let path = path.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut stream = stream;
            let head = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
                Ok(Some(h)) => h,
                _ => return,
            };
            match parse_request(&head, &path) {
                Some(params) => {
                    let _ = tx.send((stream, Request { params })).await;
                }
                None => respond(&mut stream, 404, "Not found.").await,
            }
        });
    }
}

/// The request head (up to the blank line), capped.
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return Some(buf);
        }
        if buf.len() > MAX_REQUEST_HEAD {
            return None;
        }
    }
}

/// `GET <path>?<query> HTTP/1.x` → the query parameters, if the path is the callback path.
fn parse_request(head: &[u8], path: &str) -> Option<HashMap<String, String>> {
    let line_end = head.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&head[..line_end]).ok()?.trim_end();
    let mut parts = line.split(' ');
    let (method, target) = (parts.next()?, parts.next()?);
    if method != "GET" {
        return None;
    }
    let (p, query) = target.split_once('?').unwrap_or((target, ""));
    (p == path).then(|| {
        form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect()
    })
}

pub(super) async fn respond(stream: &mut TcpStream, status: u16, text: &str) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Bad Gateway",
    };
    let body = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>authbridge</title></head>\
         <body><p>{}</p></body></html>\n",
        html_escape(text)
    );
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: \
         {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses() {
        let l = loopback("http://localhost:8925/callback").unwrap();
        assert_eq!(l.port, 8925);
        assert_eq!(l.path, "/callback");
        assert_eq!(l.addrs.len(), 2);
        assert!(l.addrs[0].ip().is_loopback() && l.addrs[0].is_ipv4());
        assert_eq!(
            loopback("http://127.0.0.1:1234").unwrap(),
            Loopback {
                addrs: vec![SocketAddr::from(([127, 0, 0, 1], 1234))],
                port: 1234,
                path: "/".into()
            }
        );
        assert!(loopback("http://[::1]:99/cb").unwrap().addrs[0].is_ipv6());
        for bad in [
            "https://localhost:8925/callback",
            "http://example.com:8925/callback",
            "http://0.0.0.0:8925/",
            "https://login.microsoftonline.com/common/oauth2/nativeclient",
            "not a url",
        ] {
            let e = loopback(bad).unwrap_err();
            assert!(e.contains("--paste"), "{bad}: {e}");
        }
    }

    #[test]
    fn callback_requests() {
        let head = b"GET /callback?code=abc&state=s%201 HTTP/1.1\r\nHost: localhost\r\n\r\n";
        let p = parse_request(head, "/callback").unwrap();
        assert_eq!(p["code"], "abc");
        assert_eq!(p["state"], "s 1");
        assert!(parse_request(b"GET /favicon.ico HTTP/1.1\r\n\r\n", "/callback").is_none());
        assert!(parse_request(b"POST /callback?code=a HTTP/1.1\r\n\r\n", "/callback").is_none());
        assert!(parse_request(b"\xff\xfe\r\n\r\n", "/callback").is_none());
    }

    #[test]
    fn escaping() {
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
