//! Pre-login behaviour seen from outside, over real loopback sockets against the sandbox:
//! - the cap on upstream connections opened before login (`early_upstream_per_source`,
//!   `early_upstream_max`): a flood of idle connections does not fan out to the upstream, and a
//!   client over the cap still logs in and works (its upstream opens after its login);
//! - a line over the cap without a newline is answered at once and the connection closed;
//! - a connection over `max_sessions_per_source` is told why before the close (implicit TLS:
//!   closed without a handshake);
//! - a response the upstream injects right after its STARTTLS go-ahead is discarded.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Wait (bounded) until `f` holds; false if it never did within 10 s.
async fn eventually(f: impl Fn() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

/// SMTP: EHLO, AUTH PLAIN, MAIL FROM; the replies' last lines.
async fn smtp_login_and_mail(c: &mut LineClient<TcpStream>) -> Vec<String> {
    c.send("EHLO prelogin.test").await;
    let ehlo = c.reply().await;
    let blob = b64(format!("\0{USER}\0{PASSWORD}").as_bytes());
    let auth = c.cmd(&format!("AUTH PLAIN {blob}")).await;
    let mail = c.cmd(&format!("MAIL FROM:<{MAILBOX}>")).await;
    vec![ehlo.last().unwrap().clone(), auth, mail]
}

/// A flood of connections from one source that never log in opens at most
/// `early_upstream_per_source` upstream connections; a client over the cap still logs in and
/// sends (its upstream connection opens after the local login); a slot given back (a session
/// ended) is used again.
#[tokio::test]
async fn a_flood_of_idle_connections_does_not_fan_out_upstream() {
    const CAP: u64 = 3;
    let env = Env::start_with(EnvOptions {
        limits_yaml: format!("  early_upstream_per_source: {CAP}\n  preauth_idle_secs: 60"),
        ..Default::default()
    })
    .await;
    let before = env.sandbox.mail_connections();
    let mut idle = Vec::new();
    for _ in 0..40 {
        let mut c = LineClient::connect(env.addr("smtp")).await;
        assert!(c.line().await.unwrap().starts_with("220 "));
        idle.push(c);
    }
    for _ in 0..20 {
        let mut c = LineClient::connect(env.addr("imap")).await;
        assert!(c.line().await.unwrap().starts_with("* OK"));
        idle.push(c);
    }
    assert!(
        eventually(|| env.sandbox.mail_connections() - before >= CAP).await,
        "the first {CAP} sessions connect upstream at once"
    );
    // Give any surplus connect the time to show up before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        env.sandbox.mail_connections() - before,
        CAP,
        "60 idle connections from one source opened more than {CAP} upstream connections"
    );

    // Over the cap, a client still logs in and sends.
    let mut c = LineClient::connect(env.addr("smtp")).await;
    assert!(c.line().await.unwrap().starts_with("220 "));
    let r = smtp_login_and_mail(&mut c).await;
    assert!(r[0].starts_with("250 "), "{r:?}");
    assert!(r[1].starts_with("235 "), "{r:?}");
    assert!(r[2].starts_with("250"), "{r:?}");
    assert_eq!(env.sandbox.mail_connections() - before, CAP + 1);
    // IMAP too.
    let mut c = LineClient::connect(env.addr("imap")).await;
    c.line().await.unwrap();
    let quoted = PASSWORD.replace('\\', "\\\\").replace('"', "\\\"");
    c.send(&format!("a1 LOGIN {USER} \"{quoted}\"")).await;
    let l = c.until("a1 ").await;
    assert!(l.last().unwrap().starts_with("a1 OK"), "{l:?}");
    c.send("a2 SELECT INBOX").await;
    let l = c.until("a2 ").await;
    assert!(l.last().unwrap().starts_with("a2 OK"), "{l:?}");
    assert_eq!(env.sandbox.mail_connections() - before, CAP + 2);

    // Sessions that end give their slot back: the next connection connects early again.
    drop(idle);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut c = LineClient::connect(env.addr("pop3")).await;
    assert!(c.line().await.unwrap().starts_with("+OK"));
    assert!(
        eventually(|| env.sandbox.mail_connections() - before == CAP + 3).await,
        "a freed slot is used for an early connect again"
    );
}

/// `early_upstream_max` caps early connections over every listener and source together.
#[tokio::test]
async fn early_upstream_connections_are_capped_in_total() {
    let env = Env::start_with(EnvOptions {
        limits_yaml: "  early_upstream_max: 2\n  early_upstream_per_source: 100".into(),
        ..Default::default()
    })
    .await;
    let before = env.sandbox.mail_connections();
    let mut idle = Vec::new();
    for l in ["smtp", "imap", "pop3", "smtp", "imap", "pop3"] {
        let mut c = LineClient::connect(env.addr(l)).await;
        c.line().await.unwrap();
        idle.push(c);
    }
    assert!(eventually(|| env.sandbox.mail_connections() - before >= 2).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(env.sandbox.mail_connections() - before, 2);
    // POP3 over the cap: CAPA from our defaults, then the login works.
    let mut c = LineClient::connect(env.addr("pop3")).await;
    c.line().await.unwrap();
    c.send(&format!("USER {USER}")).await;
    assert!(c.line().await.unwrap().starts_with("+OK"));
    c.send(&format!("PASS {PASSWORD}")).await;
    let r = c.line().await.unwrap();
    assert!(r.starts_with("+OK"), "{r}");
    c.send("STAT").await;
    assert!(c.line().await.unwrap().starts_with("+OK"));
}

/// A line over the cap (`auth_line_max`, 12,288 octets) with no newline is answered as soon as
/// the cap is crossed — long before the idle timeout of 60 s — and the connection is closed.
#[tokio::test]
async fn an_unended_overlong_line_is_answered_at_once_and_closed() {
    let env = Env::start_with(EnvOptions {
        limits_yaml: "  preauth_idle_secs: 60".into(),
        ..Default::default()
    })
    .await;
    let mut failures = Vec::new();
    for (listener, prefix, want) in [
        (
            "smtp",
            "NOOP ",
            vec!["500 5.5.6 Line too long, closing connection"],
        ),
        (
            "imap",
            "a1 LOGIN ",
            vec![
                "* BAD Line too long",
                "* BYE Line too long, closing connection",
            ],
        ),
        (
            "pop3",
            "USER ",
            vec!["-ERR Line too long, closing connection"],
        ),
    ] {
        let mut c = LineClient::connect(env.addr(listener)).await;
        c.line().await.unwrap();
        let t = Instant::now();
        c.write(format!("{prefix}{}", "x".repeat(13_000)).as_bytes())
            .await;
        let mut got = Vec::new();
        for _ in &want {
            match tokio::time::timeout(Duration::from_secs(5), c.line()).await {
                Ok(Some(l)) => got.push(l),
                Ok(None) => break,
                Err(_) => {
                    got.push("(no answer within 5 s)".into());
                    break;
                }
            }
        }
        if got != want {
            failures.push(format!("{listener}: got {got:?}, expected {want:?}"));
            continue;
        }
        match tokio::time::timeout(Duration::from_secs(5), c.line()).await {
            Ok(None) => {}
            Ok(Some(l)) => failures.push(format!("{listener}: {l:?} after the answer")),
            Err(_) => failures.push(format!("{listener}: not closed within 5 s")),
        }
        assert!(t.elapsed() < Duration::from_secs(11), "{listener}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Over `max_sessions_per_source`, a plaintext or STARTTLS listener answers with the protocol's
/// "too many connections" reply and closes; an implicit-TLS listener closes without a
/// handshake. Sessions under the cap are not affected.
#[tokio::test]
async fn over_the_per_source_cap_the_client_is_told_why() {
    let env = Env::start_with(EnvOptions {
        limits_yaml: "  max_sessions_per_source: 2".into(),
        ..Default::default()
    })
    .await;
    for (listener, want) in [
        (
            "smtp",
            "421 4.7.0 localhost Too many connections from your address, try again later",
        ),
        (
            "smtp-starttls",
            "421 4.7.0 localhost Too many connections from your address, try again later",
        ),
        (
            "imap",
            "* BYE Too many connections from your address, try again later",
        ),
        (
            "pop3",
            "-ERR [SYS/TEMP] Too many connections from your address, try again later",
        ),
    ] {
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut c = LineClient::connect(env.addr(listener)).await;
            c.line().await.unwrap();
            held.push(c);
        }
        let mut over = LineClient::connect(env.addr(listener)).await;
        let got = over.line().await;
        let got = got.unwrap_or_else(|| panic!("{listener}: closed without a reply"));
        let hostname = env.config().hostname;
        assert_eq!(got, want.replace("localhost", &hostname), "{listener}");
        assert_eq!(
            over.line().await,
            None,
            "{listener}: closed after the reply"
        );
    }
    // Implicit TLS: two sessions, then a silent close (no handshake for a flood).
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(env.connect_tls("imaps").await);
    }
    let mut tcp = TcpStream::connect(env.addr("imaps")).await.unwrap();
    let _ = tcp.write_all(b"\x16\x03\x01\x00\x05hello").await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("closed within 5 s")
        .unwrap_or(0);
    assert_eq!(
        n, 0,
        "no handshake over the cap on an implicit-TLS listener"
    );
}

/// authbridge with the sandbox forging a response in plaintext right after every STARTTLS/STLS
/// go-ahead, before the handshake; the `imap` and `pop3` listeners' upstreams use STARTTLS too.
async fn forging_env() -> Env {
    let env = Env::start_with_yaml(EnvOptions::default(), |sb, yaml| {
        let starttls = |port: u16| {
            format!(
                "{{ host: 127.0.0.1, port: {port}, tls: starttls, server_name: localhost, ca_file: ca.pem }}"
            )
        };
        let yaml = with_upstream(yaml, "imap", &starttls(sb.imap_starttls_addr().port()));
        with_upstream(yaml, "pop3", &starttls(sb.pop3_starttls_addr().port()))
    })
    .await;
    env.sandbox.set_forge_after_starttls(true);
    env
}

// The upstream writes a forged response right after its STARTTLS/STLS go-ahead. authbridge must
// discard it (RFC 3207 §4.2, RFC 2595 §3.1): the capabilities it shows are the real ones after
// TLS, and the login works.

/// SMTP (the `smtp` listener's upstream uses STARTTLS): the forged EHLO says `SIZE 1234`.
#[tokio::test]
async fn a_response_injected_after_the_upstream_starttls_is_discarded_smtp() {
    let env = forging_env().await;
    let mut c = LineClient::connect(env.addr("smtp")).await;
    c.line().await.unwrap();
    c.send("EHLO prelogin.test").await;
    let ehlo = c.reply().await;
    assert!(
        ehlo.iter().any(|l| l.contains("SIZE ")) && !ehlo.iter().any(|l| l.contains("SIZE 1234")),
        "the forged EHLO reply was taken: {ehlo:?}"
    );
    let blob = b64(format!("\0{USER}\0{PASSWORD}").as_bytes());
    let auth = c.cmd(&format!("AUTH PLAIN {blob}")).await;
    assert!(auth.starts_with("235 "), "{auth}");
    let mail = c.cmd(&format!("MAIL FROM:<{MAILBOX}>")).await;
    assert!(mail.starts_with("250"), "{mail}");
}

/// IMAP: the forged CAPABILITY (under the tag authbridge uses next) says `XFORGED`.
#[tokio::test]
async fn a_response_injected_after_the_upstream_starttls_is_discarded_imap() {
    let env = forging_env().await;
    let mut c = LineClient::connect(env.addr("imap")).await;
    c.line().await.unwrap();
    c.send("a1 CAPABILITY").await;
    let caps = c.until("a1 ").await;
    assert!(
        caps.iter().any(|l| l.starts_with("* CAPABILITY")),
        "{caps:?}"
    );
    assert!(
        !caps.iter().any(|l| l.contains("XFORGED")),
        "the forged CAPABILITY was taken: {caps:?}"
    );
    let quoted = PASSWORD.replace('\\', "\\\\").replace('"', "\\\"");
    c.send(&format!("a2 LOGIN {USER} \"{quoted}\"")).await;
    let l = c.until("a2 ").await;
    assert!(l.last().unwrap().starts_with("a2 OK"), "{l:?}");
    c.send("a3 SELECT INBOX").await;
    let l = c.until("a3 ").await;
    assert!(l.last().unwrap().starts_with("a3 OK"), "{l:?}");
}

/// POP3: the forged CAPA says `XFORGED`.
#[tokio::test]
async fn a_response_injected_after_the_upstream_starttls_is_discarded_pop3() {
    let env = forging_env().await;
    let mut c = LineClient::connect(env.addr("pop3")).await;
    c.line().await.unwrap();
    c.send("CAPA").await;
    let capa = c.until(".").await;
    assert!(
        !capa.iter().any(|l| l.contains("XFORGED")),
        "the forged CAPA was taken: {capa:?}"
    );
    c.send(&format!("USER {USER}")).await;
    assert!(c.line().await.unwrap().starts_with("+OK"));
    c.send(&format!("PASS {PASSWORD}")).await;
    let r = c.line().await.unwrap();
    assert!(r.starts_with("+OK"), "{r}");
    c.send("STAT").await;
    assert!(c.line().await.unwrap().starts_with("+OK"));
}
