//! Helpers for the login and lifecycle tests: a tiny HTTP client playing the browser, config
//! patching, and the real `authbridge` binary with its output collected line by line.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::Env;

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_authbridge"))
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Adds `lines` (YAML, indented for a provider) after the provider's `token_url:` line.
pub fn patch_provider(config: &Path, lines: &[String]) {
    let text = std::fs::read_to_string(config).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(line);
        out.push('\n');
        if line.trim_start().starts_with("token_url:") {
            for l in lines {
                out.push_str(&format!("    {l}\n"));
            }
        }
    }
    std::fs::write(config, out).unwrap();
}

/// Adds top-level YAML to the config.
pub fn patch_top(config: &Path, yaml: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    std::fs::write(config, format!("{yaml}\n{text}")).unwrap();
}

/// The provider keys a browser login against the sandbox needs; returns the callback port.
pub fn enable_browser_login(env: &Env) -> u16 {
    let port = free_port();
    patch_provider(
        &env.config_path,
        &[
            format!("authorize_url: {}", env.sandbox.authorize_url()),
            format!("device_code_url: {}", env.sandbox.device_code_url()),
            format!("redirect_uri: http://localhost:{port}/callback"),
        ],
    );
    port
}

pub struct HttpReply {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

/// `GET url` (HTTP/1.1, one connection); `https://` is verified against `tls`.
pub async fn http_get(url: &str, tls: Option<Arc<rustls::ClientConfig>>) -> HttpReply {
    let uri: hyper::Uri = url.parse().expect("a URL");
    let host = uri.host().unwrap().trim_matches(['[', ']']).to_string();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let connect_host = if host == "localhost" {
        "127.0.0.1".to_string()
    } else {
        host.clone()
    };
    let tcp = TcpStream::connect((connect_host.as_str(), port))
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: test-browser\r\nConnection: close\r\n\r\n",
        uri.path_and_query().map_or("/", |p| p.as_str()),
        uri.authority().unwrap()
    );
    let mut raw = Vec::new();
    if https {
        let connector = tokio_rustls::TlsConnector::from(tls.expect("a TLS config for https"));
        let name = rustls::pki_types::ServerName::try_from(host).unwrap();
        let mut s = connector.connect(name, tcp).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut raw)).await;
    } else {
        let mut s = tcp;
        s.write_all(request.as_bytes()).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut raw)).await;
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let location = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("location")
            .then(|| v.trim().to_string())
    });
    HttpReply {
        status,
        location,
        body: body.to_string(),
    }
}

/// A running `authbridge` command whose stdout and stderr lines arrive on a channel.
pub struct Running {
    pub child: Child,
    lines: Receiver<String>,
    /// Every line read so far (stdout and stderr, interleaved).
    pub output: String,
}

pub fn spawn(args: &[&str], config: &Path) -> Running {
    let mut child = bin()
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = channel();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx2.send(l);
        }
    });
    Running {
        child,
        lines: rx,
        output: String::new(),
    }
}

impl Running {
    /// The first line containing `needle` (waiting up to 20 s).
    pub async fn line_with(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            while let Ok(l) = self.lines.try_recv() {
                self.output.push_str(&l);
                self.output.push('\n');
                if l.contains(needle) {
                    return l;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no line with {needle:?} in:\n{}", self.output);
    }

    pub fn write_stdin(&mut self, text: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Waits (up to `limit`) for the exit; returns the exit code and all output.
    pub async fn finish(mut self, limit: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the command did not finish in {limit:?}:\n{}", self.output);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // Drain what is left (the reader threads end at EOF).
        let drain_until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < drain_until {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(l) => {
                    self.output.push_str(&l);
                    self.output.push('\n');
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(_) => {}
            }
        }
        (status.code(), self.output)
    }
}

/// `authbridge login ACCOUNT` in browser mode, with this test playing the browser: opens the printed
/// authorize URL at the sandbox and follows its redirect to the loopback callback.
pub async fn browser_login(env: &Env, account: &str) -> (Option<i32>, String) {
    let mut login = spawn(&["login", account], &env.config_path);
    let url_line = login.line_with("/authorize?").await;
    let url = url_line.trim().to_string();
    let authorize = http_get(&url, Some(env.sandbox.client_config())).await;
    assert_eq!(authorize.status, 302, "authorize: {}", authorize.body);
    let callback = authorize.location.expect("a redirect");
    let page = http_get(&callback, None).await;
    assert_eq!(page.status, 200, "callback page: {}", page.body);
    assert!(page.body.contains("is authorised"), "{}", page.body);
    login.finish(Duration::from_secs(30)).await
}

/// `authbridge status` → (exit code, stdout+stderr).
pub fn status(config: &Path) -> (Option<i32>, String) {
    let out = bin()
        .arg("status")
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}
