//! `authbridge probe [--url URL] [--ready]`: one HTTP GET of the admin listener's `/healthz` (or
//! `/readyz`), exit 0 on `200`, 1 otherwise with a one-line reason. A container health check
//! that needs no shell and no curl.
//!
//! The address is `--url` or, by default, `admin.listen` of the config (an unspecified address
//! such as `0.0.0.0` is probed on loopback). The whole request has one deadline
//! ([`AdminLimits::probe`](crate::limits::AdminLimits)); at most [`BODY_MAX`] octets of the
//! answer are read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::anyhow;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Request;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use super::failure::Failure;
use super::setup::{load_without_secrets, runtime};
use crate::limits::AdminLimits;

/// Largest answer body read (a `/readyz` body names a few accounts).
const BODY_MAX: usize = 16 * 1024;
/// Longest reason printed.
const REASON_MAX: usize = 400;

/// Where to probe.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    /// `host:port` for the `Host` header and the connection.
    authority: String,
    path: String,
}

/// Runs `authbridge probe`.
pub fn run(url: Option<String>, ready: bool, config: Option<PathBuf>) -> Result<(), Failure> {
    let default_path = if ready { "/readyz" } else { "/healthz" };
    let target = match url {
        Some(url) => parse_url(&url, default_path).map_err(|e| Failure::Usage(anyhow!(e)))?,
        None => {
            let config = load_without_secrets(config)?;
            let Some(addr) = config.admin_listen else {
                return Err(Failure::Usage(anyhow!(
                    "{}: admin.listen is not configured: add `admin: {{ listen: \
                     127.0.0.1:9925 }}` (and restart authbridge), or pass --url",
                    config.file.display()
                )));
            };
            Target {
                authority: probe_addr(addr).to_string(),
                path: default_path.to_owned(),
            }
        }
    };
    let limit = AdminLimits::default().probe;
    let url = format!("http://{}{}", target.authority, target.path);
    let outcome = runtime()?.block_on(async {
        tokio::time::timeout(limit, get(&target))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {}s", limit.as_secs())))
    });
    match outcome {
        Ok((200, _)) => {
            println!("ok: {url} answered 200");
            Ok(())
        }
        Ok((status, body)) => Err(Failure::Runtime(anyhow!(
            "{url} answered {status}: {}",
            one_line(&body)
        ))),
        Err(why) => Err(Failure::Runtime(anyhow!("{url}: {why}"))),
    }
}

/// An unspecified bind address is reached on loopback.
fn probe_addr(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// `http://HOST:PORT[/PATH]`; without a path (or with `/`), `default_path`.
fn parse_url(url: &str, default_path: &str) -> Result<Target, String> {
    let bad = |why: &str| format!("--url {url}: {why} (expected http://127.0.0.1:9925/healthz)");
    let uri: hyper::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad(
            "only http:// is supported (the admin listener speaks plain HTTP)",
        ));
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("user information is not supported"));
    }
    let port = authority.port_u16().unwrap_or(80);
    let path = match uri.path_and_query().map(|p| p.as_str()) {
        None | Some("") | Some("/") => default_path.to_owned(),
        Some(p) => p.to_owned(),
    };
    Ok(Target {
        authority: format!("{}:{port}", authority.host()),
        path,
    })
}

/// GET the target: (status, start of the body).
async fn get(target: &Target) -> Result<(u16, String), String> {
    let tcp = tokio::net::TcpStream::connect(&target.authority)
        .await
        .map_err(|e| format!("cannot connect: {e} (is authbridge running with admin.listen?)"))?;
    let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let driver = tokio::spawn(conn);
    let req = Request::get(target.path.as_str())
        .header(hyper::header::HOST, target.authority.as_str())
        .header(hyper::header::USER_AGENT, "authbridge-probe")
        .body(Empty::new())
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request failed: {e}"));
    let out = match res {
        Ok(res) => {
            let status = res.status().as_u16();
            let body = match Limited::new(res.into_body(), BODY_MAX).collect().await {
                Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
                Err(_) => format!("(body unreadable or over {BODY_MAX} bytes)"),
            };
            Ok((status, body))
        }
        Err(e) => Err(e),
    };
    driver.abort();
    out
}

/// The body on one line, control characters dropped, at most [`REASON_MAX`] characters.
fn one_line(body: &str) -> String {
    let flat: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = flat.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > REASON_MAX {
        let cut: String = flat.chars().take(REASON_MAX).collect();
        format!("{cut}…")
    } else if flat.is_empty() {
        "(empty body)".to_owned()
    } else {
        flat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = |u: &str| parse_url(u, "/healthz");
        assert_eq!(
            t("http://127.0.0.1:9925").unwrap(),
            Target {
                authority: "127.0.0.1:9925".into(),
                path: "/healthz".into()
            }
        );
        assert_eq!(t("http://[::1]:9/readyz").unwrap().authority, "[::1]:9");
        assert_eq!(t("http://localhost/readyz").unwrap().path, "/readyz");
        assert_eq!(t("http://localhost").unwrap().authority, "localhost:80");
        for bad in [
            "https://127.0.0.1:1",
            "127.0.0.1:9925",
            "http://u:p@h:1/",
            "x y",
        ] {
            assert!(t(bad).is_err(), "{bad}");
        }
        assert_eq!(
            probe_addr("0.0.0.0:9925".parse().unwrap()),
            "127.0.0.1:9925".parse().unwrap()
        );
        assert_eq!(
            probe_addr("[::]:9925".parse().unwrap()),
            "[::1]:9925".parse().unwrap()
        );
    }

    #[test]
    fn reasons_are_one_bounded_line() {
        assert_eq!(one_line("{\"a\":\n 1}\r\n"), "{\"a\": 1}");
        assert_eq!(one_line(""), "(empty body)");
        assert_eq!(one_line(&"x".repeat(1000)).chars().count(), REASON_MAX + 1);
    }
}
