//! Live reload of the real `authbridge run` binary against the sandbox: SIGHUP through
//! `authbridge reload` while clients log in continuously on SMTP, IMAP and POP3 (no failed
//! login, no cut session, no token request caused by a reload); an invalid config changes
//! nothing; listeners added and removed; a changed password; the pid file; sd-notify messages on
//! a unix datagram socket; JSON logs on stdout with `AUTHBRIDGE_CONFIG` and no secret in them.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::{LOG_WAIT, Running};
use common::*;

/// `authbridge run`, with `--config` or (`with_flag: false`) its config from `envs`.
fn spawn_run(config: &Path, envs: &[(&str, &str)], with_flag: bool) -> Running {
    if with_flag {
        Running::start(config, envs)
    } else {
        Running::start_without_flag(envs)
    }
}

/// `authbridge reload --config PATH`: exit code and output.
async fn reload(config: &Path) -> (Option<i32>, String) {
    let config = config.to_owned();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_authbridge"))
            .args(["reload", "--timeout", "60", "--config"])
            .arg(&config)
            .env_remove("AUTHBRIDGE_CONFIG")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    })
    .await
    .unwrap()
}

/// The test's config file with `hostname` set to `host` (a harmless change per reload).
fn with_hostname(yaml: &str, host: &str) -> String {
    format!("hostname: {host}\n{yaml}")
}

/// `password` as an IMAP quoted string.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

async fn expect_prefix<S>(c: &mut LineClient<S>, prefix: &str) -> Result<Vec<String>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut lines = Vec::new();
    loop {
        let Some(l) = c.line().await else {
            return Err(format!("EOF before {prefix:?} after {lines:?}"));
        };
        let done = l.starts_with(prefix);
        let tagged_fail = prefix.len() > 2
            && (l.starts_with(&prefix.replace(" OK", " NO"))
                || l.starts_with(&prefix.replace(" OK", " BAD")));
        lines.push(l);
        if done {
            return Ok(lines);
        }
        if tagged_fail || lines.len() > 1000 {
            return Err(format!("expected {prefix:?}, got {lines:?}"));
        }
    }
}

fn check(ok: bool, what: &str, got: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("{what}: {got}"))
    }
}

async fn smtp_login(
    addr: SocketAddr,
    password: &str,
) -> Result<LineClient<tokio::net::TcpStream>, String> {
    let mut c = LineClient::connect(addr).await;
    let g = c.code().await;
    check(g.starts_with("220"), "greeting", &g)?;
    let r = c.cmd("EHLO test.local").await;
    check(r.starts_with("250"), "EHLO", &r)?;
    let r = c
        .cmd(&format!(
            "AUTH PLAIN {}",
            b64(format!("\0{USER}\0{password}").as_bytes())
        ))
        .await;
    check(r.starts_with("235"), "AUTH", &r)?;
    Ok(c)
}

async fn smtp_transaction(
    c: &mut LineClient<tokio::net::TcpStream>,
    subject: &str,
) -> Result<(), String> {
    let r = c.cmd(&format!("MAIL FROM:<{MAILBOX}>")).await;
    check(r.starts_with("250"), "MAIL", &r)?;
    let r = c.cmd("RCPT TO:<alerts@contoso.com>").await;
    check(r.starts_with("250"), "RCPT", &r)?;
    let r = c.cmd("DATA").await;
    check(r.starts_with("354"), "DATA", &r)?;
    c.write(format!("Subject: {subject}\r\n\r\nbody\r\n.\r\n").as_bytes())
        .await;
    let r = c.code().await;
    check(r.starts_with("250"), "end of DATA", &r)?;
    let r = c.cmd("QUIT").await;
    check(r.starts_with("221"), "QUIT", &r)
}

async fn imap_login(addr: SocketAddr) -> Result<LineClient<tokio::net::TcpStream>, String> {
    let mut c = LineClient::connect(addr).await;
    expect_prefix(&mut c, "* OK").await?;
    c.send(&format!("a LOGIN {USER} {}", quoted(PASSWORD)))
        .await;
    expect_prefix(&mut c, "a OK").await?;
    c.send("b SELECT INBOX").await;
    expect_prefix(&mut c, "b OK").await?;
    Ok(c)
}

async fn imap_logout(c: &mut LineClient<tokio::net::TcpStream>) -> Result<(), String> {
    c.send("z LOGOUT").await;
    expect_prefix(c, "z OK").await.map(|_| ())
}

async fn pop3_login(addr: SocketAddr) -> Result<LineClient<tokio::net::TcpStream>, String> {
    let mut c = LineClient::connect(addr).await;
    expect_prefix(&mut c, "+OK").await?;
    c.send(&format!("USER {USER}")).await;
    expect_prefix(&mut c, "+OK").await?;
    c.send(&format!("PASS {PASSWORD}")).await;
    expect_prefix(&mut c, "+OK").await?;
    Ok(c)
}

async fn pop3_finish(c: &mut LineClient<tokio::net::TcpStream>) -> Result<(), String> {
    c.send("STAT").await;
    expect_prefix(c, "+OK").await?;
    c.send("QUIT").await;
    expect_prefix(c, "+OK").await.map(|_| ())
}

/// Clients of one protocol logging in and out in a loop until `stop`.
fn load(
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    run: impl Fn(u64) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>
    + Send
    + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            // A client that times out panics: count it as a failure, not a crash of the loop.
            match tokio::spawn(run(i)).await {
                Ok(Ok(())) => {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(e)) => failures.lock().unwrap().push(e),
                Err(e) => failures
                    .lock()
                    .unwrap()
                    .push(format!("client panicked: {e}")),
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_on_every_protocol() {
    let mut env = Env::start().await;
    env.stop_proxy().await;
    let base = std::fs::read_to_string(&env.config_path).unwrap();
    std::fs::write(&env.config_path, with_hostname(&base, "r0.test")).unwrap();
    let mut proc = spawn_run(&env.config_path, &[], true);
    let smtp = proc.addr_of("smtp").await;
    let imap = proc.addr_of("imap").await;
    let pop3 = proc.addr_of("pop3").await;

    // A second `run` on the same state_dir is refused while this one lives.
    let mut second = spawn_run(&env.config_path, &[], true);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = second.try_wait() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "a second run on the same state_dir was not refused:\n{}",
            second.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = second
        .wait_for_log("the refusal", |l| l.contains("already running"), LOG_WAIT)
        .await;
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains("another authbridge (pid")
            && text.contains("is already running with state_dir"),
        "{text}"
    );
    drop(second);

    // Warm the token cache, then count token requests from here on.
    let mut c = smtp_login(smtp, PASSWORD).await.unwrap();
    smtp_transaction(&mut c, "warm-up").await.unwrap();
    let tokens_before = env.sandbox.token_requests().total;

    // Sessions opened before the reloads, finished after them.
    let mut smtp_open = smtp_login(smtp, PASSWORD).await.unwrap();
    let mut pop3_open = pop3_login(pop3).await.unwrap();
    let mut idle = imap_login(imap).await.unwrap();
    idle.send("i IDLE").await;
    expect_prefix(&mut idle, "+ ").await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let counts: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let loads = vec![
        load(
            stop.clone(),
            counts[0].clone(),
            failures.clone(),
            move |i| {
                Box::pin(async move {
                    let mut c = smtp_login(smtp, PASSWORD).await?;
                    smtp_transaction(&mut c, &format!("load {i}")).await
                })
            },
        ),
        load(
            stop.clone(),
            counts[1].clone(),
            failures.clone(),
            move |_| {
                Box::pin(async move {
                    let mut c = imap_login(imap).await?;
                    imap_logout(&mut c).await
                })
            },
        ),
        load(
            stop.clone(),
            counts[2].clone(),
            failures.clone(),
            move |_| {
                Box::pin(async move {
                    let mut c = pop3_login(pop3).await?;
                    pop3_finish(&mut c).await
                })
            },
        ),
    ];

    for n in 1..=20 {
        if n == 10 {
            // An invalid config in the middle: refused with its key path, nothing changes.
            let bad = with_hostname(&base, "bad.test").replace("protocol: pop3", "protocol: pop4");
            std::fs::write(&env.config_path, bad).unwrap();
            let (code, out) = reload(&env.config_path).await;
            assert_eq!(code, Some(1), "{out}");
            assert!(
                out.contains("listeners[") && out.contains("protocol"),
                "{out}"
            );
            assert!(out.contains("the running config stays in force"), "{out}");
            proc.wait_for_log(
                "the failed reload counted",
                |l| l.contains("reload finished") && l.contains("reloads_failed=1"),
                LOG_WAIT,
            )
            .await;
            proc.wait_for_log(
                "the logged key path",
                |l| l.contains("config reload failed") && l.contains("protocol"),
                LOG_WAIT,
            )
            .await;
            // Old logins still work.
            let mut c = pop3_login(pop3).await.unwrap();
            pop3_finish(&mut c).await.unwrap();
        }
        std::fs::write(
            &env.config_path,
            with_hostname(&base, &format!("r{n}.test")),
        )
        .unwrap();
        let (code, out) = reload(&env.config_path).await;
        assert_eq!(code, Some(0), "reload {n}: {out}");
        assert!(out.contains("config reloaded"), "{out}");
        assert!(out.contains("accounts kept: tickets"), "{out}");
        // Let some logins happen under each config.
        let total = || {
            counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .sum::<u64>()
        };
        let seen = total();
        let deadline = Instant::now() + Duration::from_secs(30);
        while total() < seen + 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for l in loads {
        l.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "failed logins or cut sessions: {failures:?}\n{}",
        proc.log()
    );
    println!(
        "logins during 20 reloads: smtp {}, imap {}, pop3 {}",
        counts[0].load(Ordering::Relaxed),
        counts[1].load(Ordering::Relaxed),
        counts[2].load(Ordering::Relaxed)
    );
    for (c, proto) in counts.iter().zip(["smtp", "imap", "pop3"]) {
        assert!(c.load(Ordering::Relaxed) >= 20, "{proto}: too few logins");
    }

    // The sessions opened before the reloads complete their transactions.
    idle.send("DONE").await;
    expect_prefix(&mut idle, "i OK").await.unwrap();
    imap_logout(&mut idle).await.unwrap();
    smtp_transaction(&mut smtp_open, "opened before the reloads")
        .await
        .unwrap();
    pop3_finish(&mut pop3_open).await.unwrap();

    // No token request was caused by a reload.
    assert_eq!(env.sandbox.token_requests().total, tokens_before);

    // The pid file goes away with a clean exit.
    let status = proc.terminate();
    assert!(status.success(), "{}", proc.log());
    assert!(!env.state_dir().join("authbridge.pid").exists());
    let out = proc.log();
    assert!(
        !out.contains(PASSWORD) && !out.contains(CLIENT_SECRET),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_added_removed_and_password_changed() {
    let mut env = Env::start().await;
    env.stop_proxy().await;
    let base = std::fs::read_to_string(&env.config_path).unwrap();
    let proc = spawn_run(&env.config_path, &[], true);
    let smtp = proc.addr_of("smtp").await;
    let pop3 = proc.addr_of("pop3").await;
    let mut live_pop3 = pop3_login(pop3).await.unwrap();

    // Add a listener; remove pop3 (a session of it is live).
    let extra = "  - name: smtp-extra\n    protocol: smtp\n    listen: 127.0.0.1:0\n    upstream: { host: 127.0.0.1, port: SMTP_PORT, tls: starttls, server_name: localhost, ca_file: ca.pem }\n"
        .replace("SMTP_PORT", &env.sandbox.smtp_addr().port().to_string());
    let start = base.find("  - name: pop3\n").unwrap();
    let end = base[start..].find("  - name: pop3-starttls").unwrap() + start;
    let edited = format!("{}{}{extra}", &base[..start], &base[end..]);
    std::fs::write(&env.config_path, &edited).unwrap();
    let (code, out) = reload(&env.config_path).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("listeners added: smtp-extra on 127.0.0.1:"),
        "{out}"
    );
    assert!(out.contains("removed: pop3;"), "{out}");
    let extra_addr = proc.addr_of("smtp-extra").await;
    let mut c = smtp_login(extra_addr, PASSWORD).await.unwrap();
    smtp_transaction(&mut c, "via the added listener")
        .await
        .unwrap();
    // The removed listener accepts no more…
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(pop3).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "pop3 still accepts after its removal"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // … and its live session completes.
    pop3_finish(&mut live_pop3).await.unwrap();
    // The kept listener kept its socket (same address).
    assert_eq!(proc.addr_of("smtp").await, smtp);

    // A new password for the login: new sessions need it, the old one is refused.
    const NEW_PASSWORD: &str = "a new password for glpi";
    let new_hash = authbridge::auth::hash_password(NEW_PASSWORD.as_bytes()).unwrap();
    std::fs::write(&env.config_path, edited.replace(password_hash(), &new_hash)).unwrap();
    let (code, out) = reload(&env.config_path).await;
    assert_eq!(code, Some(0), "{out}");
    // The old one first: it was verified (and remembered) before the change.
    let err = smtp_login(smtp, PASSWORD).await.err().unwrap();
    assert!(err.contains("535"), "{err}");
    let mut c = smtp_login(smtp, NEW_PASSWORD).await.unwrap();
    smtp_transaction(&mut c, "new password").await.unwrap();

    // A provider change that alters the token's identity gives the account a fresh cache: the
    // next login fetches one token, the ones after it use it.
    let renewed = edited.replace(password_hash(), &new_hash).replace(
        "    ca_file: ca.pem\naccounts:",
        "    ca_file: ca.pem\n    redirect_uri: http://localhost:8926/callback\naccounts:",
    );
    assert_ne!(renewed, edited.replace(password_hash(), &new_hash));
    std::fs::write(&env.config_path, &renewed).unwrap();
    let before = env.sandbox.token_requests().total;
    let (code, out) = reload(&env.config_path).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("renewed (new token cache): tickets"), "{out}");
    assert_eq!(
        env.sandbox.token_requests().total,
        before,
        "the reload itself"
    );
    for i in 0..3 {
        let mut c = smtp_login(smtp, NEW_PASSWORD).await.unwrap();
        smtp_transaction(&mut c, &format!("renewed {i}"))
            .await
            .unwrap();
    }
    assert_eq!(env.sandbox.token_requests().total, before + 1);

    // A setting that needs a restart is refused by name; nothing changes.
    let moved = edited
        .replace(password_hash(), &new_hash)
        .replace("state_dir: ./state", "state_dir: ./elsewhere");
    std::fs::write(&env.config_path, moved).unwrap();
    // `reload` finds the process through the state_dir of the file it reads: point it at a copy
    // with the old state_dir to reach it.
    let probe = env.dir.path().join("probe.yaml");
    std::fs::write(&probe, &base).unwrap();
    let pid = std::fs::read_to_string(env.state_dir().join("authbridge.pid")).unwrap();
    let _ = Command::new("kill").args(["-HUP", pid.trim()]).status();
    proc.wait_for_log(
        "a refused reload naming state_dir",
        |l| {
            l.contains("config reload refused")
                && l.contains("`state_dir`")
                && l.contains("needs a restart")
        },
        LOG_WAIT,
    )
    .await;
    let mut c = smtp_login(smtp, NEW_PASSWORD).await.unwrap();
    smtp_transaction(&mut c, "after a refused reload")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sd_notify_ready_reloading_watchdog_stopping() {
    let mut env = Env::start().await;
    env.stop_proxy().await;
    let sock_path = env.dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut proc = spawn_run(
        &env.config_path,
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
        true,
    );
    let recv_until = |want: &str| -> Vec<String> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = sock
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no {want:?} (got {got:?}): {e}"));
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = msg.lines().any(|l| l == want);
            got.push(msg);
            if done {
                return got;
            }
        }
    };
    let got = recv_until("READY=1");
    let ready = got.last().unwrap();
    assert!(
        ready.contains("STATUS=serving: 8 listeners, 1 accounts"),
        "{got:?}"
    );
    // The listeners are bound when READY=1 arrives.
    let smtp = proc.addr_of("smtp").await;
    let c = smtp_login(smtp, PASSWORD).await.unwrap();
    drop(c);
    recv_until("WATCHDOG=1");
    let (code, out) = reload(&env.config_path).await;
    assert_eq!(code, Some(0), "{out}");
    let got = recv_until("RELOADING=1");
    assert!(
        got.last()
            .unwrap()
            .lines()
            .any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{got:?}"
    );
    let got = recv_until("READY=1");
    assert!(
        got.last().unwrap().contains("reloads: 1 ok, 0 failed"),
        "{got:?}"
    );
    proc.terminate();
    recv_until("STOPPING=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_on_stdout_from_authbridge_config_without_secrets() {
    let mut env = Env::start().await;
    env.stop_proxy().await;
    let refresh_token = env.refresh_token.clone().unwrap();
    let config = env.config_path.to_str().unwrap().to_owned();
    let mut proc = spawn_run(
        &env.config_path,
        &[
            ("AUTHBRIDGE_CONFIG", &config),
            ("AUTHBRIDGE_LOG_FORMAT", "json"),
            ("RUST_LOG", "trace"),
        ],
        false,
    );
    let line = proc
        .wait_for_log(
            "a JSON listening line",
            |l| l.contains("\"listening\""),
            LOG_WAIT,
        )
        .await;
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["message"], "listening");
    let addr: SocketAddr = proc
        .log_lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "listening" && v["listener"] == "smtp")
        .and_then(|v| v["addr"].as_str().map(|a| a.parse().unwrap()))
        .unwrap();
    let mut c = smtp_login(addr, PASSWORD).await.unwrap();
    smtp_transaction(&mut c, "json").await.unwrap();
    let (code, out) = reload(&env.config_path).await;
    assert_eq!(code, Some(0), "{out}");
    proc.wait_for_log(
        "the reload logged",
        |l| l.contains("config reloaded"),
        LOG_WAIT,
    )
    .await;
    proc.terminate();
    let raw = proc.log();
    // Every line is JSON; secrets are looked for in the raw lines and in every decoded string
    // value (JSON escapes the quotes and backslashes of PASSWORD).
    let mut out = raw.clone();
    for line in raw.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        if let Some(o) = v.as_object() {
            for v in o.values() {
                out.push('\n');
                out.push_str(v.as_str().unwrap_or(&v.to_string()));
            }
        }
    }
    for secret in [
        PASSWORD,
        CLIENT_SECRET,
        refresh_token.as_str(),
        &b64(format!("\0{USER}\0{PASSWORD}").as_bytes()),
    ] {
        assert!(!out.contains(secret), "a secret in the log: {secret}");
    }
    assert!(!out.contains("Bearer "), "an access token in the log");

    // An unknown AUTHBRIDGE_LOG_FORMAT is a usage error.
    let bad = Command::new(env!("CARGO_BIN_EXE_authbridge"))
        .args(["run", "--config", &config])
        .env("AUTHBRIDGE_LOG_FORMAT", "xml")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr)
            .contains("AUTHBRIDGE_LOG_FORMAT=\"xml\": expected `text` or `json`")
    );
}
