//! The real `authbridge` binary: CLI contract (exit codes, hash-password, gen-cert, import-token,
//! check), and a full run at trace level whose logs must not contain any secret.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::Running;
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
    let mut run = Running::start(&config, &[("RUST_LOG", "trace")]);
    let addrs = run.listeners_blocking(8);

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
    run.signal("TERM");
    let t = Instant::now();
    let status = loop {
        if let Some(s) = run.try_wait() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "did not stop after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    logs += &run.log_after_exit();
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

/// Runs the binary with `args`, `stdin` piped in: (exit code, stdout, stderr).
fn cli(
    args: &[&str],
    config: Option<&std::path::Path>,
    stdin: &[u8],
) -> (Option<i32>, String, String) {
    let mut cmd = bin();
    cmd.args(args);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The command may exit before reading (a refusal): a broken pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A config with one provider, one account (`tickets`, login `glpi`) and the given listeners.
fn config_text(provider: &str, hash: &str, listeners: &str) -> String {
    format!(
        "state_dir: ./state\nproviders:\n  m365:\n{provider}accounts:\n  - name: tickets\n    \
         provider: m365\n    mailbox: tickets@fabrikam.com\n    logins:\n      - {{ username: \
         glpi, password_hash: \"{hash}\" }}\nlisteners:\n{listeners}"
    )
}

fn smtp_listener(name: &str, listen: &str) -> String {
    format!(
        "  - name: {name}\n    protocol: smtp\n    listen: {listen}\n    upstream: {{ host: \
         127.0.0.1, port: {}, tls: starttls }}\n",
        closed_port()
    )
}

const MY_CLIENT_ID: &str = "0b5e7f1c-6c1e-4b0a-9a53-2f8d6c1e4b0a";

/// Issue 13, item 3: the example's placeholders are refused by `run` and `check` (exit 2) with
/// the line to edit; a fresh hash of `change-me` is caught by `check`.
#[test]
fn run_and_check_refuse_placeholders_with_the_line_to_edit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authbridge.yaml");
    let published = "$argon2id$v=19$m=19456,t=2,p=1$Kqp+yng+3HQn6TjkPz0NqQ$rNuPh+W7oN9TArUDCANbq6NBHjwLArZbBgj58EGcB5U";
    let own = authbridge::auth::hash_password(b"not the example").unwrap();
    let provider = |tenant: &str, client_id: &str| {
        format!("    type: microsoft\n    tenant: {tenant}\n    client_id: {client_id}\n")
    };
    let listener = smtp_listener("smtp", "127.0.0.1:0");
    for (text, key, line, what) in [
        (
            config_text(
                &provider(
                    "contoso.onmicrosoft.com",
                    "00000000-0000-0000-0000-000000000000",
                ),
                &own,
                &listener,
            ),
            "providers.m365.client_id",
            6,
            "00000000-0000-0000-0000-000000000000 is the example's placeholder: put your app registration's Application (client) ID here",
        ),
        (
            config_text(
                &provider("contoso.onmicrosoft.com", MY_CLIENT_ID),
                &own,
                &listener,
            ),
            "providers.m365.tenant",
            5,
            "contoso.onmicrosoft.com is the example's placeholder: put your tenant's domain",
        ),
        (
            config_text(
                &provider("fabrikam.onmicrosoft.com", MY_CLIENT_ID),
                published,
                &listener,
            ),
            "accounts[0].logins[0].password_hash",
            12,
            "this is the example's published hash of the password `change-me`",
        ),
    ] {
        std::fs::write(&path, &text).unwrap();
        for command in ["check", "run"] {
            let (code, out, err) = cli(&[command], Some(&path), b"");
            assert_eq!(code, Some(2), "{command}: {out}{err}");
            let want = format!("authbridge: {}:{line}: {key}: {what}", path.display());
            assert!(err.starts_with(&want), "{command}: {err}\nwant: {want}");
        }
    }

    // The same password hashed anew (another salt): `check` verifies and refuses it.
    let (code, fresh, _) = cli(&["hash-password"], None, b"change-me\n");
    assert_eq!(code, Some(0));
    let fresh = fresh.trim();
    std::fs::write(
        &path,
        config_text(
            &provider("fabrikam.onmicrosoft.com", MY_CLIENT_ID),
            fresh,
            &listener,
        ),
    )
    .unwrap();
    let (code, out, err) = cli(&["check"], Some(&path), b"");
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        err.starts_with(&format!(
            "authbridge: {}:12: accounts[0].logins[0].password_hash: this is a hash of the \
             example password `change-me`, which anyone can guess",
            path.display()
        )),
        "{err}"
    );
    assert!(
        out.is_empty(),
        "nothing is checked before the config is right: {out}"
    );
}

/// Issue 13, item 3: `check` refuses (exit 2, like `run`) an empty config, two listeners on one
/// socket and a listen address that is not IP:PORT. Config errors name the key path once, and an
/// OS error once.
#[test]
fn check_catches_empty_configs_and_duplicate_ports() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authbridge.yaml");
    let provider = format!(
        "    type: microsoft\n    tenant: fabrikam.onmicrosoft.com\n    client_id: {MY_CLIENT_ID}\n    \
         client_secret: s\n    flow: client_credentials\n    token_url: http://127.0.0.1:{}/token\n",
        closed_port()
    );
    let hash = authbridge::auth::hash_password(b"pw").unwrap();
    let refused = |text: &str, want: &str| {
        std::fs::write(&path, text).unwrap();
        for command in ["check", "run"] {
            let (code, out, err) = cli(&[command], Some(&path), b"");
            assert_eq!(code, Some(2), "{command}: {out}{err}");
            assert!(err.contains(want), "{command}: {err}");
            assert!(!out.contains("OK"), "{command}: {out}");
        }
    };
    refused(
        "",
        "authbridge.yaml: nothing is configured: add `providers:`, `accounts:` and `listeners:`",
    );
    refused(
        &config_text(&provider, &hash, ""),
        "authbridge.yaml: listeners: expected at least one listener",
    );
    refused(
        &format!("listeners:\n{}", smtp_listener("smtp", "127.0.0.1:0")),
        "authbridge.yaml: accounts: expected at least one account: listener `smtp` logs clients \
         in to one",
    );
    refused(
        &format!(
            "{}{}",
            config_text(&provider, &hash, &smtp_listener("smtp", "127.0.0.1:1587")),
            smtp_listener("smtp2", "127.0.0.1:1587")
        ),
        "authbridge.yaml: listeners[1].listen: 127.0.0.1:1587 clashes with listeners[0] (`smtp`, \
         127.0.0.1:1587): each listener needs its own port",
    );
    refused(
        &config_text(&provider, &hash, &smtp_listener("smtp", "localhost:1587")),
        "authbridge.yaml:19: listeners[0].listen: expected IP:PORT (e.g. 127.0.0.1:1587), got \
         localhost:1587",
    );
    // The key path once (it read `accounts[0].name: accounts[0].name: …`).
    refused(
        &config_text(&provider, &hash, &smtp_listener("[1]", "127.0.0.1:0")),
        "authbridge.yaml:17: listeners[0].name: invalid type: sequence, expected a string\n",
    );
    // The OS error once.
    let (code, _, err) = cli(&["check"], Some(&dir.path().join("missing.yaml")), b"");
    assert_eq!(code, Some(2));
    assert_eq!(err.matches("(os error 2)").count(), 1, "{err}");
}

/// Issue 13, item 3: a listen port already taken fails `check` (exit 1, everything else passing)
/// with the likely cause; `run` fails on it too, naming the OS error once.
#[tokio::test(flavor = "multi_thread")]
async fn check_fails_on_a_taken_port() {
    let mut env = Env::start().await;
    env.stop_proxy().await;
    // A port in use (here by this test; in life often a running authbridge).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    assert!(text.contains("listen: 127.0.0.1:0"));
    let path = env.dir.path().join("taken.yaml");
    std::fs::write(
        &path,
        text.replacen("listen: 127.0.0.1:0", &format!("listen: {addr}"), 1),
    )
    .unwrap();
    let check = |path: std::path::PathBuf| {
        tokio::task::spawn_blocking(move || cli(&["check"], Some(&path), b""))
    };
    let (code, out, err) = check(path.clone()).await.unwrap();
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains(&format!(
            "listener smtp: FAILED: {addr} is already in use (is authbridge already running?) — \
             stop what listens there, or change listeners[0].listen"
        )),
        "{out}"
    );
    assert_eq!(
        out.matches("FAILED").count(),
        1,
        "only the port fails: {out}"
    );
    assert_eq!(out.matches("upstream login OK").count(), 8, "{out}");
    let (code, _, err) = tokio::task::spawn_blocking({
        let path = path.clone();
        move || cli(&["run"], Some(&path), b"")
    })
    .await
    .unwrap();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    assert_eq!(err.matches("(os error 98)").count(), 1, "{err}");

    // Freed, the same config checks OK.
    drop(taken);
    let (code, out, err) = check(path).await.unwrap();
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(&format!("listen addresses: free ({addr})")),
        "{out}"
    );
}

/// Issue 13, item 5: `import-token` refuses an app-only account (exit 2) in the words `login`
/// uses, before reading stdin; for a delegated account it needs no provider secret.
#[test]
fn import_token_refuses_app_only_accounts_like_login() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authbridge.yaml");
    let hash = authbridge::auth::hash_password(b"pw").unwrap();
    let listener = smtp_listener("smtp", "127.0.0.1:0");
    let provider = |flow: &str, secret: &str| {
        format!(
            "    type: microsoft\n    tenant: fabrikam.onmicrosoft.com\n    client_id: \
             {MY_CLIENT_ID}\n    client_secret: {secret}\n    flow: {flow}\n"
        )
    };
    std::fs::write(
        &path,
        config_text(&provider("client_credentials", "s"), &hash, &listener),
    )
    .unwrap();
    let want = "account `tickets` uses provider `m365` with flow client_credentials (app-only): \
                there is nothing to log in and no refresh token to import; run `authbridge \
                check` to test it";
    let (code, out, err) = cli(
        &["import-token", "tickets"],
        Some(&path),
        b"a-refresh-token\n",
    );
    assert_eq!(code, Some(2), "{out}{err}");
    assert_eq!(err.trim_end(), format!("authbridge: {want}"));
    assert!(
        !dir.path().join("state").exists(),
        "nothing is stored for an app-only account"
    );
    let (code, _, login_err) = cli(&["login", "tickets"], Some(&path), b"");
    assert_eq!(code, Some(2));
    assert_eq!(login_err, err, "login and import-token say the same");

    // Delegated, the secret in an unset variable: import-token stores the token all the same.
    std::fs::write(
        &path,
        config_text(
            &provider("authorization_code", "{ env: AUTHBRIDGE_TEST_NEVER_SET }"),
            &hash,
            &listener,
        ),
    )
    .unwrap();
    let (code, out, err) = cli(
        &["import-token", "tickets"],
        Some(&path),
        b"a-refresh-token\n",
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.starts_with("stored the refresh token for tickets"),
        "{out}"
    );
}

/// Issue 13, item 5: `hash-password` refuses (exit 2) empty input and two lines.
#[test]
fn hash_password_takes_exactly_one_password() {
    for (input, want) in [
        (&b""[..], "refusing to hash an empty password"),
        (b"\n", "refusing to hash an empty password"),
        (
            b"first\nsecond\n",
            "one password per run; it contains a line break",
        ),
        (
            b"pass\n\n",
            "one password per run; it contains a line break",
        ),
    ] {
        let (code, out, err) = cli(&["hash-password"], None, input);
        assert_eq!(code, Some(2), "{input:?}: {err}");
        assert!(
            out.is_empty() && err.starts_with(&format!("authbridge: {want}")),
            "{err}"
        );
    }
    let (code, out, _) = cli(&["hash-password"], None, b"one line\r\n");
    assert_eq!(code, Some(0));
    assert!(out.starts_with("$argon2id$"), "{out}");
    // A password with a line break on purpose (IMAP clients can send one in a literal).
    let (code, out, err) = cli(
        &["hash-password", "--allow-line-breaks"],
        None,
        b"first line\nsecond line",
    );
    assert_eq!(code, Some(0), "{err}");
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    let parsed = PasswordHash::new(out.trim()).unwrap();
    assert!(
        argon2::Argon2::default()
            .verify_password(b"first line\nsecond line", &parsed)
            .is_ok()
    );
}

/// Issue 13, item 5: `gen-cert` keeps an existing pair unless `--force`, and adds `--host` names.
#[test]
fn gen_cert_keeps_an_existing_pair_and_adds_host_names() {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("certs");
    let out_arg = out_dir.to_str().unwrap();
    let (code, _, err) = cli(&["gen-cert", "--out", out_arg], None, b"");
    assert_eq!(code, Some(0), "{err}");
    let cert = out_dir.join("cert.pem");
    let key = out_dir.join("key.pem");
    let before = (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap());

    let (code, _, err) = cli(&["gen-cert", "--out", out_arg], None, b"");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("{} already exists: pass --force", cert.display())),
        "{err}"
    );
    assert_eq!(
        (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap()),
        before,
        "nothing was overwritten"
    );

    let (code, _, err) = cli(
        &[
            "gen-cert",
            "--out",
            out_arg,
            "--force",
            "--host",
            "not a name",
        ],
        None,
        b"",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--host \"not a name\" is neither a DNS name"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&key).unwrap(),
        before.1,
        "nothing was written"
    );

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, stdout, err) = cli(
        &[
            "gen-cert",
            "--out",
            out_arg,
            "--force",
            "--host",
            "mail.fabrikam.com",
            "--host",
            "192.0.2.7",
        ],
        None,
        b"",
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        stdout.contains("self-signed for localhost, 127.0.0.1, ::1, mail.fabrikam.com, 192.0.2.7"),
        "{stdout}"
    );
    assert_ne!(std::fs::read(&key).unwrap(), before.1);
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    authbridge::tls::server_config(&cert, &key).expect("the new pair loads");
    let der = CertificateDer::from_pem_file(&cert).unwrap();
    let has = |bytes: &[u8]| der.windows(bytes.len()).any(|w| w == bytes);
    assert!(has(b"mail.fabrikam.com") && has(b"localhost") && has(&[192, 0, 2, 7]));
}
