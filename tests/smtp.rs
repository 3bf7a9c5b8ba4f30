//! SMTP submission through authbridge against the sandbox (fake Entra ID + fake Exchange), over
//! loopback sockets. Client bytes follow the recordings in shared/transcripts/.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sandbox::TokenFailure;

/// PHPMailer 6 as GLPI 9.5/10 sends it (transcript smtp-phpmailer-glpi10-login.txt): EHLO with
/// the host name, AUTH LOGIN with two 334 prompts, DATA written one line per write, the final
/// `.` as a separate 3-byte write, QUIT.
#[tokio::test]
async fn phpmailer_glpi10_auth_login_exchange() {
    let env = Env::start().await;
    let mut c = LineClient::connect(env.addr("smtp")).await;
    let greeting = c.code().await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    c.send("EHLO vm").await;
    let ehlo = c.reply().await;
    let text = ehlo.join("\n");
    assert!(text.contains("250-localhost Hello vm"), "{text}");
    assert!(ehlo.iter().any(|l| &l[4..] == "AUTH PLAIN LOGIN"), "{text}");
    assert!(
        !text.contains("CRAM-MD5") && !text.contains("STARTTLS") && !text.contains("XOAUTH2"),
        "{text}"
    );
    for kept in [
        "SIZE 157286400",
        "PIPELINING",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
    ] {
        assert!(
            ehlo.iter().any(|l| &l[4..] == kept),
            "{kept} missing from {text}"
        );
    }
    assert_eq!(c.cmd("AUTH LOGIN").await, "334 VXNlcm5hbWU6");
    assert_eq!(c.cmd(&b64(USER.as_bytes())).await, "334 UGFzc3dvcmQ6");
    assert_eq!(
        c.cmd(&b64(PASSWORD.as_bytes())).await,
        "235 2.7.0 Authentication successful"
    );
    assert!(
        c.cmd(&format!("MAIL FROM:<{MAILBOX}>"))
            .await
            .starts_with("250")
    );
    assert!(
        c.cmd("RCPT TO:<alerts@contoso.test>")
            .await
            .starts_with("250")
    );
    assert!(c.cmd("DATA").await.starts_with("354"));
    for line in [
        "Date: Sun, 22 Nov 2026 02:46:49 +0000",
        "To: Recipient <alerts@contoso.test>",
        "From: GLPI <tickets@contoso.com>",
        "Subject: [GLPI #0000001] New ticket",
        "Auto-Submitted: auto-generated",
        "X-Auto-Response-Suppress: OOF, DR, RN, NRN, AutoReply",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "",
        "..a line that starts with a dot",
        "body",
    ] {
        c.write(format!("{line}\r\n").as_bytes()).await;
    }
    c.write(b".\r\n").await;
    let queued = c.code().await;
    assert!(queued.starts_with("250"), "{queued}");
    assert!(c.cmd("QUIT").await.starts_with("221"));
    let msgs = env.sandbox.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].auth_user, MAILBOX);
    let text = msgs[0].text();
    assert!(text.contains("Subject: [GLPI #0000001] New ticket"));
    assert!(
        text.contains("\r\n.a line that starts with a dot\r\n"),
        "dot-unstuffed by the upstream only"
    );
}

/// Symfony Mailer (GLPI 11): `EHLO [127.0.0.1]`, one-line AUTH PLAIN with authzid = user.
#[tokio::test]
async fn symfony_glpi11_one_line_plain_with_authzid() {
    let env = Env::start().await;
    let mut c = LineClient::connect(env.addr("smtp")).await;
    c.code().await;
    assert!(c.cmd("EHLO [127.0.0.1]").await.starts_with("250 "));
    let blob = b64(format!("{USER}\0{USER}\0{PASSWORD}").as_bytes());
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {blob}")).await,
        "235 2.7.0 Authentication successful"
    );
    assert!(
        c.cmd(&format!("MAIL FROM:<{MAILBOX}>"))
            .await
            .starts_with("250")
    );
    assert!(c.cmd("QUIT").await.starts_with("221"));
}

/// PHPMailer AuthType=PLAIN and curl: `AUTH PLAIN`, `334 ` (with the space), then the blob.
#[tokio::test]
async fn two_step_plain_and_helo() {
    let env = Env::start().await;
    let mut c = LineClient::connect(env.addr("smtp")).await;
    c.code().await;
    assert!(c.cmd("HELO vm").await.starts_with("250 "));
    c.send("AUTH PLAIN").await;
    // The prompt must be "334 " exactly: PHPMailer requires the trailing space.
    let mut raw = Vec::new();
    use tokio::io::AsyncBufReadExt;
    c.io.read_until(b'\n', &mut raw).await.unwrap();
    assert_eq!(raw, b"334 \r\n");
    let blob = b64(format!("\0{USER}\0{PASSWORD}").as_bytes());
    assert_eq!(c.cmd(&blob).await, "235 2.7.0 Authentication successful");
}

/// swaks --pipeline: MAIL, RCPT, DATA in one write right after 235; replies come in order.
#[tokio::test]
async fn pipelined_commands_after_login_are_forwarded() {
    let env = Env::start().await;
    let mut c = LineClient::connect(env.addr("smtp")).await;
    c.code().await;
    c.cmd("EHLO swaks").await;
    let blob = b64(format!("\0{USER}\0{PASSWORD}").as_bytes());
    // AUTH and the envelope in a single write: the envelope must reach the upstream after login.
    c.write(
        format!(
            "AUTH PLAIN {blob}\r\nMAIL FROM:<{MAILBOX}>\r\nRCPT TO:<a@contoso.com>\r\nDATA\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(c.code().await.starts_with("235"));
    assert!(c.code().await.starts_with("250"));
    assert!(c.code().await.starts_with("250"));
    assert!(c.code().await.starts_with("354"));
    c.write(b"Subject: pipelined\r\n\r\nhello\r\n.\r\n").await;
    assert!(c.code().await.starts_with("250"));
    assert_eq!(env.sandbox.messages().len(), 1);
}

#[tokio::test]
async fn ten_megabyte_message() {
    let env = Env::start().await;
    let r = smtp_send(env.addr("smtp"), "big", 10 * 1024 * 1024 / 22 + 1).await;
    assert!(r.starts_with("250"), "{r}");
    let msgs = env.sandbox.messages();
    assert_eq!(msgs.len(), 1);
    assert!(
        msgs[0].raw.len() >= 10 * 1024 * 1024,
        "{}",
        msgs[0].raw.len()
    );
}

#[tokio::test]
async fn hundred_messages_over_twenty_sessions_arrive_exactly_once() {
    let env = Env::start().await;
    let addr = env.addr("smtp");
    let mut tasks = Vec::new();
    for s in 0..20 {
        tasks.push(tokio::spawn(async move {
            for m in 0..5 {
                let r = smtp_send(addr, &format!("msg-{s}-{m}"), 3).await;
                assert!(r.starts_with("250"), "{r}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut subjects: Vec<String> = env
        .sandbox
        .messages()
        .iter()
        .map(|m| {
            let t = m.text();
            t.lines()
                .find(|l| l.starts_with("Subject: "))
                .unwrap()
                .to_string()
        })
        .collect();
    subjects.sort();
    let n = subjects.len();
    subjects.dedup();
    assert_eq!(n, 100);
    assert_eq!(subjects.len(), 100);
    assert_eq!(
        env.sandbox.token_requests().total,
        1,
        "one token serves every session"
    );
}

#[tokio::test]
async fn wrong_password_never_reaches_upstream_and_repeats_are_throttled() {
    let env = Env::start_with(EnvOptions {
        limits_yaml: "  login_failures_per_source: 3".into(),
        ..Default::default()
    })
    .await;
    let addr = env.addr("smtp");
    let mut c = LineClient::connect(addr).await;
    c.code().await;
    c.cmd("EHLO vm").await;
    c.cmd("AUTH LOGIN").await;
    c.cmd(&b64(USER.as_bytes())).await;
    assert_eq!(
        c.cmd(&b64(b"wrong")).await,
        "535 5.7.8 Authentication credentials invalid"
    );
    // Unknown user: the same reply.
    let blob = b64(b"\0nobody\0whatever");
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {blob}")).await,
        "535 5.7.8 Authentication credentials invalid"
    );
    // Third failure in this session (session_login_failures_max): 535, then 421 and close.
    let wrong = b64(format!("\0{USER}\0wrong again").as_bytes());
    let r = c.cmd(&format!("AUTH PLAIN {wrong}")).await;
    assert_eq!(r, "535 5.7.8 Authentication credentials invalid");
    let r = c.code().await;
    assert!(r.starts_with("421 4.7.0"), "{r}");
    assert!(c.closed().await);
    // The throttle counts per address and user name: the third failure for this user from this
    // address is answered 421 and closes the session.
    let mut c = LineClient::connect(addr).await;
    c.code().await;
    let r = c.cmd(&format!("AUTH PLAIN {wrong}")).await;
    assert!(r.starts_with("421 4.7.0"), "{r}");
    assert!(c.closed().await);
    // Now even the right password (never verified) is refused for this user from this source.
    let mut c = LineClient::connect(addr).await;
    c.code().await;
    let blob = b64(format!("\0{USER}\0{PASSWORD}").as_bytes());
    let r = c.cmd(&format!("AUTH PLAIN {blob}")).await;
    assert!(r.starts_with("421 4.7.0"), "{r}");
    assert_eq!(
        env.sandbox.mail_auth_attempts().total(),
        0,
        "no upstream AUTH for a failed local login"
    );
    assert_eq!(env.sandbox.token_requests().total, 0);
}

#[tokio::test]
async fn commands_before_login_need_auth() {
    let env = Env::start().await;
    let mut c = LineClient::connect(env.addr("smtp")).await;
    c.code().await;
    c.cmd("EHLO vm").await;
    assert_eq!(
        c.cmd("MAIL FROM:<a@b>").await,
        "530 5.7.0 Authentication required"
    );
    assert!(c.cmd("AUTH CRAM-MD5").await.starts_with("504"));
    assert!(c.cmd("RSET").await.starts_with("250"));
    assert!(c.cmd("NOOP").await.starts_with("250"));
    // GLPI "SMTP+TLS" on a plain listener: STARTTLS is refused, not obeyed.
    assert!(c.cmd("STARTTLS").await.starts_with("454"));
}

async fn login_reply(addr: std::net::SocketAddr) -> (String, Duration) {
    let mut c = LineClient::connect(addr).await;
    c.code().await;
    let t = Instant::now();
    c.cmd("EHLO vm").await;
    let blob = b64(format!("\0{USER}\0{PASSWORD}").as_bytes());
    let r = c.cmd(&format!("AUTH PLAIN {blob}")).await;
    (r, t.elapsed())
}

/// Token endpoint failures give a 454 inside GLPI 11's 10 s read timeout, and the stored
/// refresh token survives them: the next login after recovery works.
#[tokio::test]
async fn token_endpoint_failures_give_454_in_time_and_keep_the_refresh_token() {
    let failures = [
        TokenFailure::Http500,
        TokenFailure::Throttle429 {
            retry_after_secs: 1,
        },
        TokenFailure::TemporarilyUnavailable,
        TokenFailure::GarbageJson,
        TokenFailure::ResetConnection,
        TokenFailure::Hang,
    ];
    let mut tasks = Vec::new();
    for failure in failures {
        tasks.push(tokio::spawn(async move {
            let env = Env::start().await;
            let addr = env.addr("smtp");
            env.sandbox.inject(failure.clone());
            let (r, took) = login_reply(addr).await;
            assert!(
                r.starts_with("454 4.7.0 Temporary authentication failure"),
                "{failure:?}: {r}"
            );
            assert!(took < Duration::from_secs(8), "{failure:?} took {took:?}");
            env.sandbox.clear_failures();
            // Failures are remembered for about a second (no hammering); then the stored
            // refresh token still works.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let (r, _) = login_reply(addr).await;
            assert!(r.starts_with("235"), "after {failure:?}: {r}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn upstream_down_gives_a_4xx_in_time() {
    // A port with nothing listening.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let env = Env::start_with(EnvOptions {
        smtp_upstream: Some(dead),
        ..Default::default()
    })
    .await;
    let (r, took) = login_reply(env.addr("smtp")).await;
    assert!(r.starts_with("454 4.7.0"), "{r}");
    assert!(took < Duration::from_secs(8), "{took:?}");
}

#[tokio::test]
async fn upstream_hanging_gives_a_4xx_in_time() {
    // Accepts TCP and never says anything.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = hang.local_addr().unwrap();
    let _keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hang.accept().await {
            held.push(s);
        }
    });
    let env = Env::start_with(EnvOptions {
        smtp_upstream: Some(addr),
        ..Default::default()
    })
    .await;
    let mut c = LineClient::connect(env.addr("smtp")).await;
    let t = Instant::now();
    assert!(
        c.code().await.starts_with("220"),
        "greeting is ours, not delayed by the upstream"
    );
    assert!(t.elapsed() < Duration::from_secs(1));
    c.send("EHLO vm").await;
    let ehlo = c.reply().await;
    assert!(
        ehlo.iter().any(|l| l.ends_with("AUTH PLAIN LOGIN")),
        "{ehlo:?}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "EHLO answered in {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    let blob = b64(format!("\0{USER}\0{PASSWORD}").as_bytes());
    let r = c.cmd(&format!("AUTH PLAIN {blob}")).await;
    assert!(r.starts_with("454 4.7.0"), "{r}");
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "AUTH answered in {:?}",
        t.elapsed()
    );
}

/// 200 logins at once with a cold cache cost one token request.
#[tokio::test]
async fn cold_burst_makes_one_token_request() {
    let env = Env::start().await;
    let addr = env.addr("smtp");
    let mut tasks = Vec::new();
    for _ in 0..200 {
        tasks.push(tokio::spawn(async move { login_reply(addr).await.0 }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert!(r.starts_with("235"), "{r}");
    }
    assert_eq!(env.sandbox.token_requests().refresh_token, 1);
    assert_eq!(env.sandbox.token_requests().total, 1);
}

/// Refresh-token rotation is persisted encrypted, and a restarted authbridge works after the old
/// refresh token has been invalidated.
#[tokio::test]
async fn rotated_refresh_token_is_stored_encrypted_and_survives_restart() {
    let mut env = Env::start_with(EnvOptions {
        sandbox: sandbox::SandboxOptions {
            refresh_grace: Duration::from_millis(100),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let original = env.refresh_token.clone().unwrap();
    let (r, _) = login_reply(env.addr("smtp")).await;
    assert!(r.starts_with("235"), "{r}");
    let files = files_under(&env.state_dir());
    assert!(!files.is_empty());
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(&original),
            "{} holds the old refresh token in clear",
            f.display()
        );
        assert!(!text.contains(CLIENT_SECRET) || f.ends_with("client_secret"));
    }
    // The stored token is the rotated one, not the original.
    let stored = authbridge::server::token_store(&env.config())
        .unwrap()
        .load("tickets")
        .unwrap()
        .unwrap();
    assert_ne!(stored.refresh_token.expose(), &original);
    for f in &files {
        let text = String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned();
        assert!(
            !text.contains(stored.refresh_token.expose().as_str()),
            "{} holds the new refresh token in clear",
            f.display()
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The original token is now dead at the token service.
    env.stop_proxy().await;
    env.start_proxy().await;
    let (r, _) = login_reply(env.addr("smtp")).await;
    assert!(r.starts_with("235"), "after restart: {r}");
    assert_eq!(env.sandbox.token_requests().refresh_token, 2);
}

/// Bytes pipelined after STARTTLS (before the handshake) close the session: nothing sent in
/// plaintext after STARTTLS is trusted (RFC 3207 §4.2, CVE-2011-0411 class). The test completes
/// the TLS handshake if the server lets it: the pipelined AUTH must not be answered over TLS.
#[tokio::test]
async fn data_pipelined_after_starttls_closes_the_session() {
    let env = Env::start().await;
    let mut c = LineClient::connect(env.addr("smtp-starttls")).await;
    c.code().await;
    let ehlo = c.reply_after("EHLO vm").await;
    assert!(ehlo.iter().any(|l| l.ends_with("STARTTLS")), "{ehlo:?}");
    assert!(
        !ehlo.iter().any(|l| l.contains("AUTH")),
        "no AUTH before TLS: {ehlo:?}"
    );
    // AUTH before TLS is refused on a STARTTLS listener.
    let blob = b64(format!("\0{USER}\0{PASSWORD}").as_bytes());
    assert!(
        c.cmd(&format!("AUTH PLAIN {blob}"))
            .await
            .starts_with("530")
    );
    c.write(format!("STARTTLS\r\nAUTH PLAIN {blob}\r\n").as_bytes())
        .await;
    assert!(c.code().await.starts_with("220"));
    assert!(c.io.buffer().is_empty());
    nothing_runs_after_starttls(&env, c.io.get_mut())
        .await
        .unwrap();
    assert_eq!(env.sandbox.mail_auth_attempts().total(), 0);
    assert_eq!(env.sandbox.token_requests().total, 0);
}

trait ReplyAfter {
    async fn reply_after(&mut self, line: &str) -> Vec<String>;
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> ReplyAfter for LineClient<S> {
    async fn reply_after(&mut self, line: &str) -> Vec<String> {
        self.send(line).await;
        self.reply().await
    }
}

/// A rustls client that trusts the harness's self-signed `cert.pem`.
async fn tls_connect(
    env: &Env,
    tcp: tokio::net::TcpStream,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in authbridge::tls::load_certs(&env.dir.path().join("cert.pem")).unwrap() {
        roots.add(cert).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("TLS handshake with authbridge")
}

/// Implicit TLS on the client side (GLPI 11 on port 465 style) and implicit TLS upstream.
#[tokio::test]
async fn implicit_tls_listener_sends_mail() {
    let env = Env::start().await;
    let tcp = tokio::net::TcpStream::connect(env.addr("smtps"))
        .await
        .unwrap();
    let mut c = LineClient::new(tls_connect(&env, tcp).await);
    assert!(c.code().await.starts_with("220"));
    c.send("EHLO tls-client").await;
    let ehlo = c.reply().await;
    assert!(
        ehlo.iter().any(|l| l.ends_with("AUTH PLAIN LOGIN")),
        "{ehlo:?}"
    );
    assert!(!ehlo.iter().any(|l| l.contains("STARTTLS")), "{ehlo:?}");
    let blob = b64(format!("\0{USER}\0{PASSWORD}").as_bytes());
    assert!(
        c.cmd(&format!("AUTH PLAIN {blob}"))
            .await
            .starts_with("235")
    );
    assert!(
        c.cmd(&format!("MAIL FROM:<{MAILBOX}>"))
            .await
            .starts_with("250")
    );
    assert!(c.cmd("RCPT TO:<x@contoso.com>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.write(b"Subject: over implicit TLS\r\n\r\nhi\r\n.\r\n")
        .await;
    assert!(c.code().await.starts_with("250"));
    assert_eq!(env.sandbox.messages().len(), 1);
}

/// GLPI 9.5/10 "SMTP+TLS" and Symfony Mailer on a STARTTLS listener: EHLO, STARTTLS, EHLO
/// again (now with AUTH, without STARTTLS), AUTH LOGIN, mail.
#[tokio::test]
async fn starttls_listener_full_session() {
    let env = Env::start().await;
    let mut c = LineClient::connect(env.addr("smtp-starttls")).await;
    assert!(c.code().await.starts_with("220"));
    c.send("EHLO vm").await;
    c.reply().await;
    assert!(c.cmd("STARTTLS").await.starts_with("220"));
    let tcp = c.io.into_inner();
    let mut c = LineClient::new(tls_connect(&env, tcp).await);
    c.send("EHLO vm").await;
    let ehlo = c.reply().await;
    assert!(
        ehlo.iter().any(|l| l.ends_with("AUTH PLAIN LOGIN")),
        "{ehlo:?}"
    );
    assert!(!ehlo.iter().any(|l| l.contains("STARTTLS")), "{ehlo:?}");
    assert!(
        c.cmd("STARTTLS").await.starts_with("503"),
        "no second STARTTLS"
    );
    assert_eq!(c.cmd("AUTH LOGIN").await, "334 VXNlcm5hbWU6");
    assert_eq!(c.cmd(&b64(USER.as_bytes())).await, "334 UGFzc3dvcmQ6");
    assert!(c.cmd(&b64(PASSWORD.as_bytes())).await.starts_with("235"));
    assert!(
        c.cmd(&format!("MAIL FROM:<{MAILBOX}>"))
            .await
            .starts_with("250")
    );
    assert!(c.cmd("QUIT").await.starts_with("221"));
}

/// Graceful shutdown: new connections are refused, a pre-login session gets `421 4.3.0`, a
/// logged-in session keeps working until it ends (within the grace period).
#[tokio::test]
async fn shutdown_drains_piped_sessions_and_says_goodbye_to_the_rest() {
    let mut env = Env::start().await;
    let addr = env.addr("smtp");
    let mut piped = LineClient::connect(addr).await;
    piped.code().await;
    piped.cmd("EHLO vm").await;
    let blob = b64(format!("\0{USER}\0{PASSWORD}").as_bytes());
    assert!(
        piped
            .cmd(&format!("AUTH PLAIN {blob}"))
            .await
            .starts_with("235")
    );
    let mut waiting = LineClient::connect(addr).await;
    waiting.code().await;

    env.shutdown.cancel();
    let bye = waiting.line().await.expect("a goodbye");
    assert!(bye.starts_with("421 4.3.0"), "{bye}");
    assert!(waiting.closed().await);
    // The logged-in session still delivers.
    assert!(
        piped
            .cmd(&format!("MAIL FROM:<{MAILBOX}>"))
            .await
            .starts_with("250")
    );
    assert!(
        piped
            .cmd("RCPT TO:<x@contoso.com>")
            .await
            .starts_with("250")
    );
    assert!(piped.cmd("DATA").await.starts_with("354"));
    piped
        .write(b"Subject: during shutdown\r\n\r\nhi\r\n.\r\n")
        .await;
    assert!(piped.code().await.starts_with("250"));
    assert!(piped.cmd("QUIT").await.starts_with("221"));
    // New connections are refused once the accept loop is gone.
    let mut refused = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the listener still accepts after shutdown");
    let running = env.running.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), running.wait())
        .await
        .expect("stops once sessions end");
    assert_eq!(env.sandbox.messages().len(), 1);
}
