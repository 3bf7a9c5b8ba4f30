//! The real `authbridge` binary: CLI contract (exit codes, hash-password, gen-cert, import-token,
//! check), and a full run at trace level whose logs must not contain any secret.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_authbridge"))
}

#[test]
fn hash_password_reads_stdin_and_drops_one_newline() {
    let mut child = bin()
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"pa ss\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap();
    let hash = hash.trim();
    assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
    authbridge::auth::check_hash(hash).unwrap();
    // The hash verifies "pa ss" (newline dropped), not "pa ss\n".
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    let parsed = PasswordHash::new(hash).unwrap();
    assert!(
        argon2::Argon2::default()
            .verify_password(b"pa ss", &parsed)
            .is_ok()
    );
    assert!(
        argon2::Argon2::default()
            .verify_password(b"pa ss\n", &parsed)
            .is_err()
    );
}

#[test]
fn config_errors_exit_2_and_name_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "listeners:\n  - name: x\n    protocol: smtp\n    listen: 127.0.0.1:1\n    tls: sometimes\n    upstream: { host: h, port: 1, tls: implicit }\n").unwrap();
    let out = bin()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml") && err.contains("listeners[0].tls") && err.contains("starttls"),
        "{err}"
    );

    std::fs::write(&path, "state_dir: x\nunknown_key: 1\n").unwrap();
    let out = bin().args(["run", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown_key"));

    let out = bin()
        .args(["run", "--config", "/nonexistent/authbridge.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = bin().arg("no-such-command").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn gen_cert_writes_a_usable_pair_with_a_private_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["gen-cert", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    authbridge::tls::server_config(&cert, &key).expect("the pair loads as a server config");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// The example config as shipped is refused at each placeholder in turn (the line to edit named);
/// once they are filled in it loads. The sandbox config loads as it is.
#[test]
fn example_configs_load() {
    // SAFETY of env mutation: only this test reads the variable.
    unsafe { std::env::set_var("M365_CLIENT_SECRET", "example") };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(root.join("config/authbridge.example.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let example = dir.path().join("authbridge.yaml");
    let line_of =
        |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let own_hash = authbridge::auth::hash_password(b"not the example password").unwrap();
    for (key, placeholder, mine) in [
        (
            "providers.m365.client_id",
            "00000000-0000-0000-0000-000000000000",
            "0b5e7f1c-6c1e-4b0a-9a53-2f8d6c1e4b0a",
        ),
        (
            "providers.m365.tenant",
            "contoso.onmicrosoft.com",
            "fabrikam.onmicrosoft.com",
        ),
        (
            "accounts[0].logins[0].password_hash",
            "$argon2id$v=19$m=19456,t=2,p=1$Kqp+yng+3HQn6TjkPz0NqQ$rNuPh+W7oN9TArUDCANbq6NBHjwLArZbBgj58EGcB5U",
            own_hash.as_str(),
        ),
    ] {
        std::fs::write(&example, &text).unwrap();
        let e = authbridge::config::Config::load(&example)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        let want = format!(
            "{}:{}: {key}: ",
            example.display(),
            line_of(&text, placeholder)
        );
        assert!(
            e.starts_with(&want)
                && (e.contains("is the example's placeholder") || e.contains("published hash")),
            "{e}"
        );
        text = text.replace(placeholder, mine);
    }
    std::fs::write(&example, &text).unwrap();
    authbridge::config::Config::load(&example)
        .unwrap_or_else(|e| panic!("authbridge.example.yaml with its placeholders filled in: {e}"));
    // sandbox.yaml points at ../sandbox-data/ca.pem, which demo.sh creates: lay that out in a
    // temp folder instead of depending on a previous demo run.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::create_dir_all(dir.path().join("sandbox-data")).unwrap();
    std::fs::copy(
        root.join("config/sandbox.yaml"),
        dir.path().join("config/sandbox.yaml"),
    )
    .unwrap();
    let (ca, _key) = authbridge::tls::self_signed_localhost().unwrap();
    std::fs::write(dir.path().join("sandbox-data/ca.pem"), ca).unwrap();
    authbridge::config::Config::load(&dir.path().join("config/sandbox.yaml"))
        .unwrap_or_else(|e| panic!("sandbox.yaml: {e}"));
}

/// Everything a log could leak, at trace level, must be absent: the local password (raw and
/// base64), the refresh tokens (initial and rotated), the client secret, access tokens.
#[tokio::test(flavor = "multi_thread")]
async fn import_check_run_at_trace_level_leak_nothing_and_stop_on_sigterm() {
    let mut env = Env::start_with(EnvOptions {
        log_level: "trace",
        ..Default::default()
    })
    .await;
    env.stop_proxy().await;
    let config = env.config_path.clone();
    let initial_rt = env.refresh_token.clone().unwrap();

    // import-token: a fresh token for the account, surrounded by whitespace.
    let imported = env.sandbox.issue_refresh_token(CLIENT_ID, MAILBOX);
    let mut child = bin()
        .args(["import-token", "tickets", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("  {imported}\n\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut logs =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);

    // check: token + upstream login on every listener.
    let out = tokio::task::spawn_blocking({
        let config = config.clone();
        move || {
            bin()
                .args(["check", "--config"])
                .arg(&config)
                .env("RUST_LOG", "trace")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("account tickets: token OK"), "{stdout}");
    assert_eq!(stdout.matches("upstream login OK").count(), 8, "{stdout}");
    logs += &stdout;
    logs += &String::from_utf8_lossy(&out.stderr);

    // run: log in over SMTP, IMAP and POP3, with a wrong password too, then SIGTERM.
    let mut child = bin()
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "trace")
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut addrs = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while addrs.len() < 8 && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if line.contains("listening") {
                let name = field(&line, "listener=");
                let addr = field(&line, "addr=");
                addrs.insert(name, addr.parse::<std::net::SocketAddr>().unwrap());
            }
            logs.push_str(&line);
            logs.push('\n');
        }
    }
    assert_eq!(addrs.len(), 8, "listening lines: {logs}");

    let r = smtp_send(addrs["smtp"], "trace run", 2).await;
    assert!(r.starts_with("250"), "{r}");
    let mut c = LineClient::connect(addrs["smtp"]).await;
    c.code().await;
    let blob = b64(format!("\0{USER}\0wrong-{PASSWORD}").as_bytes());
    assert!(
        c.cmd(&format!("AUTH PLAIN {blob}"))
            .await
            .starts_with("535")
    );
    let mut i = LineClient::connect(addrs["imap"]).await;
    i.line().await;
    let quoted = PASSWORD.replace('\\', "\\\\").replace('"', "\\\"");
    i.send(&format!("a1 LOGIN {USER} \"{quoted}\"")).await;
    let l = i.until("a1 ").await;
    assert!(l.last().unwrap().starts_with("a1 OK"), "{l:?}");
    i.send("a2 LOGOUT").await;
    i.until("a2 ").await;
    let mut p = LineClient::connect(addrs["pop3"]).await;
    p.line().await;
    p.send(&format!("USER {USER}")).await;
    p.line().await;
    p.send(&format!("PASS {PASSWORD}")).await;
    assert!(p.line().await.unwrap().starts_with("+OK"));
    p.send("QUIT").await;
    p.line().await;

    // SIGTERM: the process stops accepting and exits 0 within the grace period.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "did not stop after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
        logs.push_str(&line);
        logs.push('\n');
    }
    assert!(logs.contains("login ok"), "trace logs look empty: {logs}");
    assert!(logs.contains("SIGTERM"), "{logs}");

    let rotated = authbridge::server::token_store(&env.config())
        .unwrap()
        .load("tickets")
        .unwrap()
        .unwrap();
    let forbidden = [
        PASSWORD.to_string(),
        b64(PASSWORD.as_bytes()),
        b64(format!("\0{USER}\0{PASSWORD}").as_bytes()),
        CLIENT_SECRET.to_string(),
        initial_rt,
        imported,
        rotated.refresh_token.expose().clone(),
    ];
    assert_no_secrets(&logs, &forbidden);
}

fn field(line: &str, key: &str) -> String {
    let start = line.find(key).map(|i| i + key.len()).unwrap_or(0);
    line[start..]
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_matches('"')
        .to_string()
}
