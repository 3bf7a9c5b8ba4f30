//! POP3 through authbridge against the sandbox (fake Entra ID + fake Exchange Online), over
//! loopback sockets. Client bytes follow the recordings in shared/transcripts/ (named in each
//! test); replies follow DESIGN §1 and §4 (RFC 2449 / RFC 3206 response codes).

mod common;

use std::time::{Duration, Instant};

use common::*;
use sandbox::TokenFailure;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// A message as GLPI's collector finds it in the mailbox; one body line starts with a dot, so
/// dot-stuffing is exercised both ways.
const MESSAGE: &str = "Return-Path: <alerts@contoso.test>\r\n\
From: alerts@contoso.test\r\n\
To: tickets@contoso.com\r\n\
Subject: rig check\r\n\
Date: Sun, 22 Nov 2026 01:57:50 +0000\r\n\
\r\n\
rig check message\r\n\
.a line that starts with a dot\r\n";

fn plain_blob(user: &str, password: &str) -> String {
    b64(format!("\0{user}\0{password}").as_bytes())
}

/// The message's lines as a POP3 client sees them after dot-unstuffing.
fn message_lines() -> Vec<String> {
    MESSAGE
        .trim_end_matches("\r\n")
        .split("\r\n")
        .map(str::to_string)
        .collect()
}

async fn connect(env: &Env, listener: &str) -> (LineClient<TcpStream>, String) {
    let mut c = LineClient::connect(env.addr(listener)).await;
    let greeting = c.line().await.expect("greeting");
    (c, greeting)
}

/// Send a command, return its status line.
async fn cmd<S: AsyncRead + AsyncWrite + Unpin>(c: &mut LineClient<S>, line: &str) -> String {
    c.send(line).await;
    c.line().await.expect("a reply, not EOF")
}

/// `USER`/`PASS` as laminas and poplib send them (the password raw, to the end of the line).
async fn user_pass<S: AsyncRead + AsyncWrite + Unpin>(c: &mut LineClient<S>) {
    let r = cmd(c, &format!("USER {USER}")).await;
    assert!(r.starts_with("+OK"), "{r}");
    let r = cmd(c, &format!("PASS {PASSWORD}")).await;
    assert!(r.starts_with("+OK"), "{r}");
}

/// A `pop3s` listener (implicit TLS, like `/pop3/ssl/novalidate-cert`) added to the harness
/// config, in front of the sandbox's implicit-TLS POP3.
async fn env_with_pop3s() -> Env {
    Env::start_with_yaml(EnvOptions::default(), |sandbox, mut yaml| {
        yaml.push_str(&format!(
            "  - name: pop3s\n    protocol: pop3\n    listen: 127.0.0.1:0\n    tls: implicit\n    cert: cert.pem\n    key: key.pem\n    upstream: {{ host: 127.0.0.1, port: {}, tls: implicit, server_name: localhost, ca_file: ca.pem }}\n",
            sandbox.pop3_addr().port()
        ));
        yaml
    })
    .await
}

/// laminas-mail `Storage\Pop3` as GLPI 9.5/10/11 (transcript pop3-laminas-glpi10): no CAPA, no
/// APOP timestamp in the greeting (laminas would try APOP), `USER`, `PASS` with the raw
/// password (spaces, `"` and `\`), `STAT` twice, `TOP 1 0`, `UIDL 1` twice, `RETR 1`, `QUIT`.
#[tokio::test]
async fn laminas_glpi10_user_pass_session() {
    let env = Env::start().await;
    env.sandbox.deliver(MAILBOX, MESSAGE.as_bytes());
    let (mut c, greeting) = connect(&env, "pop3").await;
    assert!(greeting.starts_with("+OK"), "{greeting}");
    assert!(
        !(greeting.contains('<') && greeting.contains('@')),
        "APOP timestamp in {greeting}"
    );
    user_pass(&mut c).await;
    for _ in 0..2 {
        assert_eq!(
            cmd(&mut c, "STAT").await,
            format!("+OK 1 {}", MESSAGE.len())
        );
    }
    let r = cmd(&mut c, "TOP 1 0").await;
    assert!(r.starts_with("+OK"), "{r}");
    let top = c.pop3_multiline().await;
    let header_lines = MESSAGE[..MESSAGE.find("\r\n\r\n").unwrap()]
        .split("\r\n")
        .count();
    assert_eq!(top[..header_lines], message_lines()[..header_lines]);
    let uidl = cmd(&mut c, "UIDL 1").await;
    assert!(uidl.starts_with("+OK 1 "), "{uidl}");
    assert_eq!(cmd(&mut c, "UIDL 1").await, uidl);
    let r = cmd(&mut c, "RETR 1").await;
    assert!(r.starts_with("+OK"), "{r}");
    assert_eq!(c.pop3_multiline().await, message_lines());
    assert!(cmd(&mut c, "QUIT").await.starts_with("+OK"));
    assert!(c.closed().await);
    let auth = env.sandbox.mail_auth_attempts();
    assert_eq!((auth.pop3_ok, auth.pop3_failed), (1, 0));
}

/// c-client (GLPI ≤ 9.4) on the plaintext listener: CAPA offers USER and no SASL (c-client
/// would log "SECURITY PROBLEM: insecure server advertised AUTH=PLAIN", pop3-c-client-glpi94),
/// and no STLS. On implicit TLS (`/pop3/ssl/novalidate-cert`) CAPA offers `SASL PLAIN` and
/// c-client's two-step `AUTH PLAIN` (waiting for `+ `) works; then CAPA again (now the
/// upstream's), STAT, LIST, `TOP n 0`, RETR, QUIT.
#[tokio::test]
async fn c_client_capa_and_two_step_auth_plain_on_tls() {
    let env = env_with_pop3s().await;
    env.sandbox.deliver(MAILBOX, MESSAGE.as_bytes());

    let (mut c, _) = connect(&env, "pop3").await;
    let r = cmd(&mut c, "CAPA").await;
    assert!(r.starts_with("+OK"), "{r}");
    let capa = c.pop3_multiline().await;
    assert!(capa.contains(&"USER".to_string()), "{capa:?}");
    assert!(capa.contains(&"RESP-CODES".to_string()), "{capa:?}");
    assert!(
        capa.contains(&"TOP".to_string()) && capa.contains(&"UIDL".to_string()),
        "{capa:?}"
    );
    assert!(
        !capa.iter().any(|l| l.starts_with("SASL") || l == "STLS"),
        "{capa:?}"
    );

    let mut c = env.connect_tls("pop3s").await;
    assert!(c.line().await.unwrap().starts_with("+OK"));
    let r = cmd(&mut c, "CAPA").await;
    assert!(r.starts_with("+OK"), "{r}");
    let capa = c.pop3_multiline().await;
    assert!(capa.contains(&"SASL PLAIN".to_string()), "{capa:?}");
    assert!(
        !capa.iter().any(|l| l.contains("XOAUTH2") || l == "STLS"),
        "{capa:?}"
    );
    c.send("AUTH PLAIN").await;
    assert_eq!(c.raw_line().await, b"+ \r\n", "c-client needs \"+ \"");
    let r = cmd(&mut c, &plain_blob(USER, PASSWORD)).await;
    assert!(r.starts_with("+OK"), "{r}");
    assert!(cmd(&mut c, "CAPA").await.starts_with("+OK"));
    let after = c.pop3_multiline().await;
    assert!(after.contains(&"UIDL".to_string()), "{after:?}");
    assert_eq!(
        cmd(&mut c, "STAT").await,
        format!("+OK 1 {}", MESSAGE.len())
    );
    assert!(cmd(&mut c, "LIST").await.starts_with("+OK"));
    assert_eq!(
        c.pop3_multiline().await,
        vec![format!("1 {}", MESSAGE.len())]
    );
    assert!(cmd(&mut c, "TOP 1 0").await.starts_with("+OK"));
    c.pop3_multiline().await;
    assert!(cmd(&mut c, "RETR 1").await.starts_with("+OK"));
    assert_eq!(c.pop3_multiline().await, message_lines());
    assert!(cmd(&mut c, "QUIT").await.starts_with("+OK"));
    assert_eq!(env.sandbox.mail_auth_attempts().pop3_ok, 1);
}

/// curl `pop3://` (pop3-curl): CAPA, two-step `AUTH PLAIN`, RETR, QUIT. AUTH PLAIN is accepted
/// on the plaintext listener although it is not advertised there.
#[tokio::test]
async fn curl_style_auth_plain_on_plain_listener() {
    let env = Env::start().await;
    env.sandbox.deliver(MAILBOX, MESSAGE.as_bytes());
    let (mut c, _) = connect(&env, "pop3").await;
    assert!(cmd(&mut c, "CAPA").await.starts_with("+OK"));
    c.pop3_multiline().await;
    c.send("AUTH PLAIN").await;
    assert_eq!(c.raw_line().await, b"+ \r\n");
    let r = cmd(&mut c, &plain_blob(USER, PASSWORD)).await;
    assert!(r.starts_with("+OK"), "{r}");
    assert!(cmd(&mut c, "RETR 1").await.starts_with("+OK"));
    assert_eq!(c.pop3_multiline().await, message_lines());
    assert!(cmd(&mut c, "QUIT").await.starts_with("+OK"));
}

/// AUTH LOGIN (prompts `+ VXNlcm5hbWU6`, `+ UGFzc3dvcmQ6`) on TLS, and commands pipelined in
/// the same write as USER/PASS, which reach the upstream after the login.
#[tokio::test]
async fn auth_login_and_pipelining_after_login() {
    let env = env_with_pop3s().await;
    let mut c = env.connect_tls("pop3s").await;
    c.line().await.unwrap();
    assert_eq!(cmd(&mut c, "AUTH LOGIN").await, "+ VXNlcm5hbWU6");
    assert_eq!(cmd(&mut c, &b64(USER.as_bytes())).await, "+ UGFzc3dvcmQ6");
    let r = cmd(&mut c, &b64(PASSWORD.as_bytes())).await;
    assert!(r.starts_with("+OK"), "{r}");

    let (mut c, _) = connect(&env, "pop3").await;
    c.write(format!("USER {USER}\r\nPASS {PASSWORD}\r\nSTAT\r\nNOOP\r\n").as_bytes())
        .await;
    assert!(c.line().await.unwrap().starts_with("+OK"), "USER");
    assert!(c.line().await.unwrap().starts_with("+OK"), "PASS");
    assert_eq!(c.line().await.unwrap(), "+OK 0 0");
    assert!(c.line().await.unwrap().starts_with("+OK"), "NOOP");
    assert_eq!(env.sandbox.mail_auth_attempts().pop3_ok, 2);
}

/// The real Python poplib (python3 is installed on CI): USER/PASS + STAT + RETR + QUIT on the
/// plaintext listener (pop3-poplib), and `stls()` on the STARTTLS listener, verifying our
/// certificate.
#[tokio::test]
async fn python_poplib_user_pass_retr() {
    if python3("python_poplib_user_pass_retr").is_none() {
        return;
    }
    let env = Env::start().await;
    env.sandbox.deliver(MAILBOX, MESSAGE.as_bytes());
    let script = r#"
import os, poplib, ssl
host, user, pw = "127.0.0.1", os.environ["AB_USER"], os.environ["AB_PASS"]
p = poplib.POP3(host, int(os.environ["AB_PORT"]))
print("welcome", p.getwelcome().decode())
print("user", p.user(user).decode())
print("pass", p.pass_(pw).decode())
print("stat", p.stat())
resp, lines, octets = p.retr(1)
print("retr", resp.decode(), len(lines))
print([l.decode() for l in lines if l.startswith(b"Subject:")][0])
print("dotline", [l.decode() for l in lines if l.startswith(b".")][0])
print("quit", p.quit().decode())
ctx = ssl.create_default_context(cafile=os.environ["AB_CA"])
s = poplib.POP3(host, int(os.environ["AB_STLS_PORT"]))
print("stls", s.stls(ctx).decode())
s.user(user)
print("tls pass", s.pass_(pw).decode())
print("tls stat", s.stat())
s.quit()
"#;
    let out = run_python(
        script,
        &[
            ("AB_USER", USER.to_string()),
            ("AB_PASS", PASSWORD.to_string()),
            ("AB_PORT", env.addr("pop3").port().to_string()),
            ("AB_STLS_PORT", env.addr("pop3-starttls").port().to_string()),
            (
                "AB_CA",
                env.dir.path().join("cert.pem").display().to_string(),
            ),
        ],
    )
    .await;
    for want in [
        "pass +OK",
        &format!("stat (1, {})", MESSAGE.len()),
        &format!(
            "retr +OK {} octets {}",
            MESSAGE.len(),
            message_lines().len()
        ),
        "Subject: rig check",
        "dotline .a line that starts with a dot",
        "quit +OK",
        "stls +OK",
        "tls pass +OK",
        &format!("tls stat (1, {})", MESSAGE.len()),
    ] {
        assert!(out.contains(want), "{want:?} missing from:\n{out}");
    }
    assert_eq!(env.sandbox.mail_auth_attempts().pop3_ok, 2);
}

/// laminas `/tls` on the STARTTLS listener (pop3-laminas-stls-dovecot): `STLS` right after the
/// greeting. Before TLS, CAPA offers only STLS and USER/PASS are refused; after it, USER/PASS
/// work and the upstream is reached over its own STLS port.
#[tokio::test]
async fn stls_then_user_pass_on_starttls_listener() {
    let env = Env::start().await;
    let (mut c, _) = connect(&env, "pop3-starttls").await;
    assert!(cmd(&mut c, "CAPA").await.starts_with("+OK"));
    let capa = c.pop3_multiline().await;
    assert!(capa.contains(&"STLS".to_string()), "{capa:?}");
    assert!(
        !capa.iter().any(|l| l == "USER" || l.starts_with("SASL")),
        "{capa:?}"
    );
    let r = cmd(&mut c, &format!("USER {USER}")).await;
    assert!(r.starts_with("-ERR"), "{r}");
    let r = cmd(
        &mut c,
        &format!("AUTH PLAIN {}", plain_blob(USER, PASSWORD)),
    )
    .await;
    assert!(r.starts_with("-ERR"), "{r}");
    assert!(cmd(&mut c, "STLS").await.starts_with("+OK"));
    let mut c = c.start_tls(&env).await;
    assert!(cmd(&mut c, "CAPA").await.starts_with("+OK"));
    let capa = c.pop3_multiline().await;
    assert!(capa.contains(&"USER".to_string()), "{capa:?}");
    assert!(!capa.contains(&"STLS".to_string()), "{capa:?}");
    assert!(cmd(&mut c, "STLS").await.starts_with("-ERR"), "second STLS");
    user_pass(&mut c).await;
    assert_eq!(cmd(&mut c, "STAT").await, "+OK 0 0");
    assert!(cmd(&mut c, "QUIT").await.starts_with("+OK"));
    assert_eq!(env.sandbox.mail_auth_attempts().pop3_ok, 1);
}

/// Send a uniquely-subjected message through authbridge's SMTP listener to the mailbox, then
/// STAT, LIST, RETR and DELE it through authbridge's POP3 listener; after QUIT it is gone.
#[tokio::test]
async fn smtp_to_pop3_stat_list_retr_dele() {
    let env = Env::start().await;
    env.sandbox.deliver(MAILBOX, MESSAGE.as_bytes());
    let subject = unique_subject("pop3-e2e");
    let r = smtp_send_to(env.addr("smtp"), MAILBOX, &subject, 3).await;
    assert!(r.starts_with("250"), "{r}");

    let (mut c, _) = connect(&env, "pop3").await;
    user_pass(&mut c).await;
    let stat = cmd(&mut c, "STAT").await;
    assert!(stat.starts_with("+OK 2 "), "{stat}");
    assert!(cmd(&mut c, "LIST").await.starts_with("+OK"));
    let list = c.pop3_multiline().await;
    assert_eq!(list.len(), 2, "{list:?}");
    let size: usize = list[1].strip_prefix("2 ").unwrap().parse().unwrap();
    let r = cmd(&mut c, "RETR 2").await;
    assert!(r.starts_with("+OK"), "{r}");
    let lines = c.pop3_multiline().await;
    assert!(lines.contains(&format!("Subject: {subject}")), "{lines:?}");
    assert!(
        lines.contains(&format!("line 00000002 of {subject}")),
        "{lines:?}"
    );
    let retr_size: usize = lines.iter().map(|l| l.len() + 2).sum();
    assert_eq!(retr_size, size, "LIST size = RETR octets");
    assert!(cmd(&mut c, "DELE 2").await.starts_with("+OK"));
    assert!(cmd(&mut c, "QUIT").await.starts_with("+OK"));
    assert!(c.closed().await);

    let left = env.sandbox.mailbox(MAILBOX);
    assert_eq!(left.len(), 1, "only the other message is left");
    assert!(!String::from_utf8_lossy(&left[0].raw).contains(&subject));
}

/// A wrong password (USER/PASS or AUTH PLAIN) or an unknown user: `-ERR [AUTH]`, no token
/// request, nothing upstream.
#[tokio::test]
async fn wrong_password_is_refused_locally() {
    let env = Env::start().await;
    let (mut c, _) = connect(&env, "pop3").await;
    assert!(
        cmd(&mut c, &format!("USER {USER}"))
            .await
            .starts_with("+OK")
    );
    let r = cmd(&mut c, "PASS correct horse \"battery\" \\stapler").await;
    assert!(r.starts_with("-ERR [AUTH]"), "{r}");
    let r = cmd(&mut c, &format!("AUTH PLAIN {}", plain_blob("nobody", "x"))).await;
    assert!(r.starts_with("-ERR [AUTH]"), "{r}");
    assert!(cmd(&mut c, "QUIT").await.starts_with("+OK"));
    assert_eq!(env.sandbox.mail_auth_attempts().total(), 0);
    assert_eq!(env.sandbox.token_requests().total, 0);
}

/// The token endpoint failing before the first login: `-ERR [SYS/TEMP]` within 8 s; after
/// recovery the next login works.
#[tokio::test]
async fn token_endpoint_failure_gives_sys_temp_in_time() {
    let env = Env::start().await;
    env.sandbox.inject(TokenFailure::Http500);
    let (mut c, _) = connect(&env, "pop3").await;
    let t = Instant::now();
    assert!(
        cmd(&mut c, &format!("USER {USER}"))
            .await
            .starts_with("+OK")
    );
    let r = cmd(&mut c, &format!("PASS {PASSWORD}")).await;
    assert!(r.starts_with("-ERR [SYS/TEMP]"), "{r}");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert_eq!(env.sandbox.mail_auth_attempts().total(), 0);
    env.sandbox.clear_failures();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    user_pass(&mut c).await;
}

/// Upstream unreachable (a dead port): the greeting is immediate, and the login gets
/// `-ERR [SYS/TEMP]` within 8 s.
#[tokio::test]
async fn upstream_down_gives_sys_temp_in_time() {
    let port = dead_port();
    let env = Env::start_with_yaml(EnvOptions::default(), |_, yaml| {
        with_upstream(
            yaml,
            "pop3",
            &format!("{{ host: 127.0.0.1, port: {port}, tls: implicit, server_name: localhost, ca_file: ca.pem }}"),
        )
    })
    .await;
    let t = Instant::now();
    let (mut c, greeting) = connect(&env, "pop3").await;
    assert!(greeting.starts_with("+OK"), "{greeting}");
    assert!(cmd(&mut c, "CAPA").await.starts_with("+OK"));
    c.pop3_multiline().await;
    assert!(
        cmd(&mut c, &format!("USER {USER}"))
            .await
            .starts_with("+OK")
    );
    let r = cmd(&mut c, &format!("PASS {PASSWORD}")).await;
    assert!(r.starts_with("-ERR [SYS/TEMP]"), "{r}");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
}

/// The upstream refuses the cached access token: authbridge refreshes once, retries, and the
/// client only sees `+OK`. Two token requests in all.
#[tokio::test]
async fn refused_access_token_is_refreshed_once_and_login_succeeds() {
    let env = Env::start().await;
    let (mut c, _) = connect(&env, "pop3").await;
    user_pass(&mut c).await;
    assert!(cmd(&mut c, "QUIT").await.starts_with("+OK"));
    env.sandbox.expire_access_tokens();
    let (mut c, _) = connect(&env, "pop3").await;
    user_pass(&mut c).await;
    assert_eq!(cmd(&mut c, "STAT").await, "+OK 0 0");
    assert_eq!(env.sandbox.token_requests().total, 2);
    let auth = env.sandbox.mail_auth_attempts();
    assert_eq!((auth.pop3_ok, auth.pop3_failed), (2, 1));
}

/// Before login: a 1 MB line is answered with `-ERR` as soon as the line cap is crossed and
/// the session closed; transaction commands and APOP are refused, and 1,000 pipelined bad
/// commands end the session instead of getting 1,000 answers. Nothing reaches the upstream.
#[tokio::test]
async fn preauth_abuse_is_answered_not_obeyed() {
    let env = Env::start().await;
    let (mut c, _) = connect(&env, "pop3").await;
    let mut line = b"USER ".to_vec();
    line.resize(1024 * 1024, b'x');
    line.extend_from_slice(b"\r\n");
    // The server may close before it has all of it: write errors are expected.
    let _ = c.io.get_mut().write_all(&line).await;
    let r = c.line().await.unwrap();
    assert_eq!(r, "-ERR Line too long, closing connection");
    assert!(c.closed().await);

    let (mut c, _) = connect(&env, "pop3").await;
    for refused in [
        "STAT",
        "RETR 1",
        "DELE 1",
        "APOP glpi 0123456789abcdef0123456789abcdef",
    ] {
        let r = cmd(&mut c, refused).await;
        assert!(r.starts_with("-ERR"), "{refused}: {r}");
    }
    user_pass(&mut c).await;
    assert!(cmd(&mut c, "QUIT").await.starts_with("+OK"));

    let (mut c, _) = connect(&env, "pop3").await;
    let mut burst = String::new();
    for i in 0..1000 {
        burst.push_str(&format!("FROBNICATE {i}\r\n"));
    }
    c.write(burst.as_bytes()).await;
    let t = Instant::now();
    let mut lines = Vec::new();
    while let Some(l) = c.line().await {
        lines.push(l);
    }
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(
        (1..=20).contains(&lines.len()),
        "{} replies: {lines:?}",
        lines.len()
    );
    assert!(lines.iter().all(|l| l.starts_with("-ERR")), "{lines:?}");
    assert!(lines.last().unwrap().contains("Too many"), "{lines:?}");
    assert_eq!(env.sandbox.mail_auth_attempts().pop3_ok, 1);
}

/// Bytes pipelined after STLS (in the same write, before the handshake) close the session;
/// nothing reaches the upstream. The test completes the TLS handshake if the server lets it:
/// the pipelined USER/PASS must not be answered over TLS.
#[tokio::test]
async fn commands_pipelined_after_stls_close_the_session() {
    let env = Env::start().await;
    let (mut c, _) = connect(&env, "pop3-starttls").await;
    c.write(format!("STLS\r\nUSER {USER}\r\nPASS {PASSWORD}\r\n").as_bytes())
        .await;
    let r = c.line().await.unwrap();
    assert!(r.starts_with("+OK"), "{r}");
    assert!(c.io.buffer().is_empty());
    nothing_runs_after_starttls(&env, c.io.get_mut())
        .await
        .unwrap();
    assert_eq!(env.sandbox.mail_auth_attempts().total(), 0);
    assert_eq!(env.sandbox.token_requests().total, 0);
}
