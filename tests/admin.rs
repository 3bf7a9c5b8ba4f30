//! The admin listener of the real `authbridge run` binary against the sandbox: `/healthz`,
//! `/readyz` (503 naming an account that needs a login, 200 after `import-token`, never a token
//! request per probe), `/metrics` after logins on SMTP, IMAP and POP3 (right counters, accepted
//! by `promtool check metrics`, no secret), `authbridge probe` exit codes, and the bounds on
//! requests (404/405/413, a huge head gets 431, a slow head is cut, the connection cap).

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::process::Running;
use common::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_authbridge"))
}

/// `authbridge run` with its listeners' and admin listener's addresses, killed on drop.
struct Proxy {
    _run: Running,
    addrs: std::collections::HashMap<String, SocketAddr>,
    admin: SocketAddr,
    /// The log lines up to the admin listener's and the listeners'.
    startup: String,
}

/// The test environment's config with `state_dir` replaced and an admin listener on a free port
/// (not 0: `probe --config` reads the address from the file).
fn admin_config(env: &Env, state_dir: &str) -> PathBuf {
    admin_config_on(env, state_dir, "127.0.0.1")
}

fn admin_config_on(env: &Env, state_dir: &str, ip: &str) -> PathBuf {
    let yaml = std::fs::read_to_string(&env.config_path)
        .unwrap()
        .replace("state_dir: ./state", &format!("state_dir: {state_dir}"));
    let path = env.dir.path().join("admin.yaml");
    std::fs::write(
        &path,
        format!("admin: {{ listen: {ip}:{} }}\n{yaml}", dead_port()),
    )
    .unwrap();
    path
}

fn start(config: &Path) -> Proxy {
    let run = Running::start(config, &[]);
    let admin = run.admin_addr_blocking();
    let addrs = run.listeners_blocking(8);
    Proxy {
        startup: run.log(),
        _run: run,
        addrs,
        admin,
    }
}

/// One request on its own connection: (status, headers and body as text).
async fn http(addr: SocketAddr, method: &str, path: &str, extra: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("the admin listener answers")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    (status, text)
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, text) = http(addr, "GET", path, "").await;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

fn probe(args: &[&str]) -> (Option<i32>, String) {
    let out = bin().arg("probe").args(args).output().unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn line_value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_metrics_and_probe() {
    let env = Env::start().await;
    // A fresh state_dir: the account has no refresh token yet and needs a login.
    let config = admin_config(&env, "./state-admin");
    let proxy = start(&config);
    let admin = proxy.admin;
    let base = format!("http://{admin}");
    let cfg = config.to_str().unwrap();

    let (status, body) = get(admin, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (code, out) = probe(&["--config", cfg]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("answered 200"), "{out}");

    // Not ready: the account needs a login, and the body says which and how to fix it.
    let before = env.sandbox.token_requests().total;
    let (status, body) = get(admin, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], false);
    assert_eq!(v["accounts"][0]["name"], "tickets", "{body}");
    let state = v["accounts"][0]["state"].as_str().unwrap();
    assert!(
        state.starts_with("needs login:") && state.contains("authbridge login tickets"),
        "{body}"
    );
    let (code, out) = probe(&["--ready", "--url", &base]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("answered 503") && out.contains("needs login"),
        "{out}"
    );

    // Probes every few seconds must never cost a token request.
    for _ in 0..200 {
        let (status, _) = get(admin, "/readyz").await;
        assert_eq!(status, 503);
    }
    assert_eq!(env.sandbox.token_requests().total, before);

    // After import-token it is ready, still without a token request.
    let rt = env.sandbox.issue_refresh_token(CLIENT_ID, MAILBOX);
    let mut child = bin()
        .args(["import-token", "tickets", "--config", cfg])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{rt}\n").as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    let (status, body) = get(admin, "/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "{\"accounts\":[],\"listeners\":[],\"ready\":true}\n")
    );
    let (code, out) = probe(&["--ready", "--config", cfg]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(env.sandbox.token_requests().total, before);

    // Logins on every protocol, good and bad.
    let r = smtp_send(proxy.addrs["smtp"], "admin metrics", 2).await;
    assert!(r.starts_with("250"), "{r}");
    let mut c = LineClient::connect(proxy.addrs["smtp"]).await;
    c.code().await;
    let blob = b64(format!("\0{USER}\0wrong-{PASSWORD}").as_bytes());
    assert!(
        c.cmd(&format!("AUTH PLAIN {blob}"))
            .await
            .starts_with("535")
    );
    let quoted = PASSWORD.replace('\\', "\\\\").replace('"', "\\\"");
    for (tag, pw) in [("a1", format!("x{quoted}")), ("a2", quoted.clone())] {
        let mut i = LineClient::connect(proxy.addrs["imap"]).await;
        i.line().await;
        i.send(&format!("{tag} LOGIN {USER} \"{pw}\"")).await;
        i.until(&format!("{tag} ")).await;
        i.send("z LOGOUT").await;
        i.until("z ").await;
    }
    for pw in [format!("x{PASSWORD}"), PASSWORD.to_string()] {
        let mut p = LineClient::connect(proxy.addrs["pop3"]).await;
        p.line().await;
        p.send(&format!("USER {USER}")).await;
        p.line().await;
        p.send(&format!("PASS {pw}")).await;
        p.line().await;
        p.send("QUIT").await;
        p.line().await;
    }
    drop(c);

    let (status, metrics) = get(admin, "/metrics").await;
    assert_eq!(status, 200);
    for (listener, protocol) in [("smtp", "smtp"), ("imap", "imap"), ("pop3", "pop3")] {
        for result in ["ok", "bad_credentials"] {
            let series = format!(
                "authbridge_logins_total{{listener=\"{listener}\",protocol=\"{protocol}\",result=\"{result}\"}}"
            );
            assert_eq!(
                line_value(&metrics, &series),
                Some(1.0),
                "{series}\n{metrics}"
            );
        }
    }
    // One refresh served all three successful logins.
    assert_eq!(
        line_value(
            &metrics,
            "authbridge_token_requests_total{account=\"tickets\",grant=\"refresh_token\",result=\"ok\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    let expiry = line_value(
        &metrics,
        "authbridge_token_expiry_seconds{account=\"tickets\"}",
    )
    .unwrap_or_else(|| panic!("{metrics}"));
    assert!(expiry > 60.0, "{metrics}");
    assert_eq!(
        line_value(&metrics, "authbridge_accounts_needing_login"),
        Some(0.0)
    );
    for l in ["smtp", "imap", "pop3"] {
        let up = format!("authbridge_piped_bytes_total{{listener=\"{l}\",direction=\"up\"}}");
        let down = format!("authbridge_piped_bytes_total{{listener=\"{l}\",direction=\"down\"}}");
        assert!(
            line_value(&metrics, &up).unwrap_or(0.0) > 0.0,
            "{up}\n{metrics}"
        );
        assert!(
            line_value(&metrics, &down).unwrap_or(0.0) > 0.0,
            "{down}\n{metrics}"
        );
        let conn = format!("authbridge_upstream_connect_seconds_count{{listener=\"{l}\"}}");
        assert!(
            line_value(&metrics, &conn).unwrap_or(0.0) >= 1.0,
            "{conn}\n{metrics}"
        );
        let login = format!("authbridge_upstream_login_seconds_count{{listener=\"{l}\"}}");
        assert_eq!(
            line_value(&metrics, &login),
            Some(1.0),
            "{login}\n{metrics}"
        );
    }
    assert!(
        metrics.contains(&format!(
            "authbridge_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{metrics}"
    );
    // OpenMetrics for a scraper that asks for it.
    let (_, om) = http(
        admin,
        "GET",
        "/metrics",
        "Accept: application/openmetrics-text; version=1.0.0\r\n",
    )
    .await;
    assert!(
        om.contains("application/openmetrics-text") && om.trim_end().ends_with("# EOF"),
        "{om}"
    );

    common::promtool::check_metrics(&metrics);

    let forbidden = [
        PASSWORD.to_string(),
        format!("x{PASSWORD}"),
        quoted,
        CLIENT_SECRET.to_string(),
        rt,
        USER.to_string(),
    ];
    let (_, ready) = get(admin, "/readyz").await;
    assert_no_secrets(&format!("{metrics}{om}{ready}"), &forbidden);

    // Unknown paths, other methods, bodies.
    // (`/` is the admin page: tests/admin_page.rs.)
    assert_eq!(get(admin, "/nope").await.0, 404);
    assert_eq!(get(admin, "/metrics/x").await.0, 404);
    let (status, text) = http(admin, "POST", "/healthz", "Content-Length: 0\r\n").await;
    assert_eq!(status, 405);
    assert!(
        text.to_ascii_lowercase().contains("allow: get, head"),
        "{text}"
    );
    let (status, text) = http(admin, "HEAD", "/healthz", "").await;
    assert_eq!(status, 200);
    assert!(!text.ends_with("ok\n"), "HEAD has no body: {text:?}");
    let (status, _) = http(admin, "GET", "/healthz", "Content-Length: 5\r\n\r\nhello").await;
    assert_eq!(status, 413);

    // Nothing listens there: probe fails with a reason, exit 1.
    let (code, out) = probe(&["--url", &format!("http://127.0.0.1:{}", dead_port())]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("cannot connect"), "{out}");
    // Not an http URL: usage error.
    assert_eq!(probe(&["--url", "https://127.0.0.1:1"]).0, Some(2));
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_requests_are_bounded() {
    let env = Env::start().await;
    let config = admin_config(&env, "./state");
    let proxy = start(&config);
    let admin = proxy.admin;

    // A request head over the limit: 431 and the connection closes.
    let big = format!("X-Big: {}\r\n", "a".repeat(20 * 1024));
    let (status, _) = http(admin, "GET", "/healthz", &big).await;
    assert_eq!(status, 431);

    // Slowloris: a head trickled one line a second is cut by the header read timeout.
    let mut slow = TcpStream::connect(admin).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let started = Instant::now();
    let mut closed = false;
    for i in 0..30 {
        if slow
            .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        let mut b = [0u8; 256];
        match tokio::time::timeout(Duration::from_secs(1), slow.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => {} // a 408 before the close
            Err(_) => {}
        }
    }
    assert!(closed, "a trickled request head was not cut");
    assert!(started.elapsed() < Duration::from_secs(25));
    // The connection cap: 64 connections that send nothing hold every slot; a 65th request
    // waits until the header read timeout (5 s) frees them.
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(TcpStream::connect(admin).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut waiting = TcpStream::connect(admin).await.unwrap();
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let early = tokio::time::timeout(Duration::from_secs(1), waiting.read_to_end(&mut buf)).await;
    assert!(early.is_err(), "answered past the connection cap: {buf:?}");
    tokio::time::timeout(Duration::from_secs(30), waiting.read_to_end(&mut buf))
        .await
        .expect("answered once the idle connections were cut")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"));
    // The idle ones were closed by the header read timeout.
    for mut s in idle {
        let mut b = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut b)).await;
        assert!(
            matches!(n, Ok(Ok(_)) | Ok(Err(_))),
            "an idle connection stayed open"
        );
    }

    // Still alive for everyone else.
    assert_eq!(get(admin, "/healthz").await.0, 200);
    drop(proxy);
    drop(env);
}

/// Any address is allowed, but one that is not loopback is warned about at start; `probe` reaches
/// an unspecified address on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_admin_address_is_warned_about() {
    let env = Env::start().await;
    // A non-loopback admin listener needs the admin page's password and TLS (tests/admin_page.rs).
    let config = admin_config_on(&env, "./state", "0.0.0.0");
    let yaml = std::fs::read_to_string(&config).unwrap().replacen(
        " }\n",
        &format!(
            ", password_hash: \"{}\", cert: cert.pem, key: key.pem }}\n",
            password_hash()
        ),
        1,
    );
    std::fs::write(&config, yaml).unwrap();
    let proxy = start(&config);
    assert!(
        proxy
            .startup
            .contains("admin.listen is not a loopback address"),
        "{}",
        proxy.startup
    );
    drop(proxy);

    let config = admin_config(&env, "./state");
    let (code, out) = probe(&["--config", config.to_str().unwrap()]);
    assert_ne!(code, Some(0), "nothing runs yet: {out}");
    let proxy = start(&config);
    let (code, out) = probe(&["--config", config.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("http://127.0.0.1:"), "{out}");
    assert!(
        !proxy.startup.contains("not a loopback"),
        "{}",
        proxy.startup
    );
}
