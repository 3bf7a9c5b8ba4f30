//! `authbridge check --send-test` through the full path (issue 15): the real binary connects to
//! the running authbridge's own SMTP listener (the config's `listen` address), logs in locally
//! with `--login` and the password from `AUTHBRIDGE_CHECK_PASSWORD` or stdin, and sends one
//! message that goes on through the upstream into the sandbox mailbox (read back over IMAP).
//! `--direct` keeps the old path (check → upstream).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use sandbox::MailboxSettings;

const PASSWORD_ENV: &str = "AUTHBRIDGE_CHECK_PASSWORD";

/// How `check` gets the local password.
enum Pw<'a> {
    None,
    Env(&'a str),
    Stdin(&'a str),
}

/// Run `authbridge check --config <env's config> [extra…]`; (exit code, stdout + stderr).
async fn check(env: &Env, extra: &[&str], pw: Pw<'_>) -> (Option<i32>, String) {
    let config = env.config_path.clone();
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let (env_pw, stdin_pw) = match pw {
        Pw::None => (None, None),
        Pw::Env(p) => (Some(p.to_string()), None),
        Pw::Stdin(p) => (None, Some(p.to_string())),
    };
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_authbridge"));
        cmd.arg("check")
            .arg("--config")
            .arg(&config)
            .args(&extra)
            .env_remove(PASSWORD_ENV)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(p) = &env_pw {
            cmd.env(PASSWORD_ENV, p);
        }
        let mut child = cmd.spawn().expect("authbridge runs");
        let mut stdin = child.stdin.take().unwrap();
        if let Some(p) = &stdin_pw {
            let _ = stdin.write_all(format!("{p}\n").as_bytes());
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    })
    .await
    .unwrap()
}

/// Put the address the running proxy listens on for SMTP listener `name` into the config, as an
/// admin's fixed `listen:` would be.
fn pin_listen(env: &Env, name: &str) {
    let yaml = std::fs::read_to_string(&env.config_path).unwrap();
    let from = format!("  - name: {name}\n    protocol: smtp\n    listen: 127.0.0.1:0\n");
    assert!(yaml.contains(&from), "{yaml}");
    let to = format!(
        "  - name: {name}\n    protocol: smtp\n    listen: {}\n",
        env.addr(name)
    );
    std::fs::write(&env.config_path, yaml.replace(&from, &to)).unwrap();
}

/// The `send test:` line of the output.
fn send_test_line(out: &str) -> &str {
    out.lines()
        .find(|l| l.starts_with("send test: "))
        .unwrap_or_else(|| panic!("no send test line:\n{out}"))
}

/// `"…"` with `\` and `"` escaped (IMAP quoted string).
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The test message, read back over IMAP through the proxy: its header.
async fn read_back(env: &Env) -> String {
    let mut c = LineClient::connect(env.addr("imap")).await;
    c.line().await;
    let (_, ok) = c
        .imap("a1", &format!("LOGIN {USER} {}", quote(PASSWORD)))
        .await;
    assert!(ok.starts_with("a1 OK"), "{ok}");
    let (_, ok) = c.imap("a2", "SELECT INBOX").await;
    assert!(ok.starts_with("a2 OK"), "{ok}");
    let (untagged, ok) = c.imap("a3", "SEARCH SUBJECT \"send-test\"").await;
    assert!(ok.starts_with("a3 OK"), "{ok}");
    let n = untagged[0]
        .strip_prefix("* SEARCH ")
        .unwrap_or_else(|| panic!("no test message in the mailbox: {untagged:?}"))
        .to_string();
    assert!(!n.contains(' '), "one test message: {n}");
    let (untagged, ok) = c.imap("a4", &format!("FETCH {n} (RFC822.HEADER)")).await;
    assert!(ok.starts_with("a4 OK"), "{ok}");
    untagged.concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_test_goes_through_the_running_listener_and_arrives() {
    let env = Env::start().await;
    pin_listen(&env, "smtp-starttls");
    let (code, out) = check(
        &env,
        &[
            "--send-test",
            MAILBOX,
            "--login",
            USER,
            "--listener",
            "smtp-starttls",
        ],
        Pw::Env(PASSWORD),
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    let line = send_test_line(&out);
    let up = env.sandbox.smtp_addr();
    for part in [
        &format!("test message from {MAILBOX} to {MAILBOX} accepted"),
        &format!(
            "full path: listener smtp-starttls at {} (STARTTLS, local login {USER}) → authbridge → upstream 127.0.0.1:{}",
            env.addr("smtp-starttls"),
            up.port()
        ),
        "250 2.0.0 OK",
    ] {
        assert!(line.contains(part), "{part}\n{out}");
    }
    // The running authbridge's addresses being taken is expected here.
    assert!(
        out.contains("listen addresses: in use (")
            && out.contains("by the running authbridge the send test goes through"),
        "{out}"
    );
    assert!(!out.contains("FAILED"), "{out}");
    let header = read_back(&env).await;
    for part in [
        &format!("From: <{MAILBOX}>"),
        "Subject: authbridge check --send-test",
        "Date: ",
        "Message-ID: <authbridge-check-",
    ] {
        assert!(header.contains(part), "{part}: {header}");
    }
    // The message went through the proxy: the sandbox saw an XOAUTH2 submission by the mailbox.
    let sent: Vec<_> = env
        .sandbox
        .messages()
        .into_iter()
        .filter(|m| m.text().contains("authbridge check --send-test"))
        .collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].auth_user, MAILBOX);

    // The default listener (the first SMTP one, no TLS), the password on stdin.
    pin_listen(&env, "smtp");
    let (code, out) = check(
        &env,
        &["--send-test", "someone@contoso.com", "--login", USER],
        Pw::Stdin(PASSWORD),
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        send_test_line(&out).contains(&format!(
            "full path: listener smtp at {} (no TLS, local login {USER})",
            env.addr("smtp")
        )),
        "{out}"
    );
    // The password never shows in the output.
    assert!(!out.contains(PASSWORD), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_as_denied_after_data_through_the_full_path() {
    let env = Env::start().await;
    pin_listen(&env, "smtp");
    env.sandbox.set_mailbox_settings(
        MAILBOX,
        MailboxSettings {
            send_as_denied: true,
            ..Default::default()
        },
    );
    let (code, out) = check(
        &env,
        &["--send-test", "someone@contoso.com", "--login", USER],
        Pw::Env(PASSWORD),
    )
    .await;
    assert_eq!(code, Some(1), "{out}");
    let line = send_test_line(&out);
    for part in [
        "FAILED: end of DATA refused: tickets@contoso.com may not send with the message's From address",
        "554 5.2.252 SendAsDenied",
        "full path: listener smtp",
        "fix: send with From: tickets@contoso.com",
        "Add-RecipientPermission",
    ] {
        assert!(line.contains(part), "{part}\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_local_password_is_a_clear_finding() {
    let env = Env::start().await;
    pin_listen(&env, "smtp");
    let (code, out) = check(
        &env,
        &["--send-test", "someone@contoso.com", "--login", USER],
        Pw::Env("not the password"),
    )
    .await;
    assert_eq!(code, Some(1), "{out}");
    let line = send_test_line(&out);
    for part in [
        "FAILED: listener smtp refused the local login glpi: 535 5.7.8",
        "fix: give --login a username from the `logins` of an account",
    ] {
        assert!(line.contains(part), "{part}\n{out}");
    }
    assert!(!out.contains("not the password"), "{out}");
    assert_eq!(
        env.sandbox
            .messages()
            .iter()
            .filter(|m| m.text().contains("send-test"))
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_says_start_authbridge_or_direct() {
    let mut env = Env::start().await;
    pin_listen(&env, "smtp");
    let addr = env.addr("smtp");
    env.stop_proxy().await;
    let (code, out) = check(
        &env,
        &["--send-test", "someone@contoso.com", "--login", USER],
        Pw::Env(PASSWORD),
    )
    .await;
    assert_eq!(code, Some(1), "{out}");
    let line = send_test_line(&out);
    for part in [
        &format!("FAILED: nothing listens on {addr} (listener smtp)"),
        "fix: start authbridge first",
        "or use --direct",
    ] {
        assert!(line.contains(part), "{part}\n{out}");
    }
    // --direct needs no local listener or password: it sends from check to the upstream.
    let (code, out) = check(
        &env,
        &["--send-test", "someone@contoso.com", "--direct"],
        Pw::None,
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("accepted by the upstream (--direct: sent from check, not through the local listener): 250"),
        "{out}"
    );
    assert!(!out.contains("send test: "), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors() {
    let env = Env::start().await;
    // Port 0: nowhere to connect to.
    let (code, out) = check(
        &env,
        &["--send-test", "someone@contoso.com", "--login", USER],
        Pw::Env(PASSWORD),
    )
    .await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("listens on port 0"), "{out}");
    pin_listen(&env, "smtp");
    let (code, out) = check(&env, &["--send-test", "someone@contoso.com"], Pw::None).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("needs a local login: give --login USER") && out.contains("--direct"),
        "{out}"
    );
    let (code, out) = check(
        &env,
        &[
            "--send-test",
            "someone@contoso.com",
            "--login",
            USER,
            "--direct",
        ],
        Pw::Env(PASSWORD),
    )
    .await;
    assert_eq!(code, Some(2), "{out}");
    let (code, out) = check(
        &env,
        &["--send-test", "someone@contoso.com", "--listener", "imap"],
        Pw::Env(PASSWORD),
    )
    .await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("no SMTP listener of that name"), "{out}");
    // An empty password is refused before anything is sent.
    let (code, out) = check(
        &env,
        &["--send-test", "someone@contoso.com", "--login", USER],
        Pw::Stdin(""),
    )
    .await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("empty local password"), "{out}");
}

/// A relay listener that waives the login: no AUTH, the connector takes the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_listener_without_login() {
    let mut env = Env::start().await;
    env.sandbox
        .set_connector_allowed_ips(&["127.0.0.1".parse().unwrap()]);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let yaml = std::fs::read_to_string(&env.config_path).unwrap();
    let yaml = format!(
        "{yaml}  - name: relay\n    protocol: smtp\n    mode: relay\n    listen: 127.0.0.1:{port}\n    \
         require_login: false\n    allow_from: [127.0.0.0/8]\n    allowed_senders: [glpi@contoso.com]\n    \
         upstream: {{ host: 127.0.0.1, port: {}, tls: starttls, server_name: localhost, ca_file: ca.pem }}\n",
        env.sandbox.connector_addr().port()
    );
    std::fs::write(&env.config_path, yaml).unwrap();
    env.stop_proxy().await;
    env.start_proxy().await;
    let (code, out) = check(
        &env,
        &["--send-test", MAILBOX, "--listener", "relay"],
        Pw::None,
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    let line = send_test_line(&out);
    assert!(
        line.contains("test message from glpi@contoso.com to tickets@contoso.com accepted")
            && line.contains("(no TLS, no login)"),
        "{out}"
    );
    assert_eq!(env.sandbox.connector_counters().connector_accepted, 1);
}

/// The local hop trusts exactly the listener's configured certificate: when the file holds
/// another one than the running authbridge presents (renewed but not reloaded, or another program
/// on the port), nothing is sent — not even the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_certificate_on_the_listener_is_refused() {
    let env = Env::start().await;
    pin_listen(&env, "smtp-starttls");
    // A renewed pair in the files; the running authbridge still presents the old certificate.
    let (cert, key) = authbridge::tls::self_signed_localhost().unwrap();
    std::fs::write(env.dir.path().join("cert.pem"), cert).unwrap();
    std::fs::write(env.dir.path().join("key.pem"), key.expose()).unwrap();
    let (code, out) = check(
        &env,
        &[
            "--send-test",
            MAILBOX,
            "--login",
            USER,
            "--listener",
            "smtp-starttls",
        ],
        Pw::Env(PASSWORD),
    )
    .await;
    assert_eq!(code, Some(1), "{out}");
    let line = send_test_line(&out);
    assert!(
        line.contains("TLS handshake with")
            && line.contains("presented another certificate than the one in"),
        "{out}"
    );
    assert!(
        !env.sandbox
            .messages()
            .iter()
            .any(|m| m.text().contains("send-test")),
        "{out}"
    );
}
