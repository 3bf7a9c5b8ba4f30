//! The fake Exchange SMTP submission server over real loopback sockets.

mod common;

use common::*;
use sandbox::{Sandbox, SandboxOptions};

const MBX: &str = "tickets@contoso.com";

async fn sandbox() -> Sandbox {
    Sandbox::start(SandboxOptions::default()).await.unwrap()
}

#[tokio::test]
async fn starttls_xoauth2_and_delivery() {
    let sb = sandbox().await;
    let mut c = plain(sb.smtp_addr()).await;
    let g = c.line().await;
    assert!(g.contains(" Microsoft ESMTP MAIL Service ready at "), "{g}");
    c.send("EHLO client.test").await;
    let ehlo = c.smtp_reply().await;
    for cap in [
        "SIZE 157286400",
        "PIPELINING",
        "DSN",
        "ENHANCEDSTATUSCODES",
        "STARTTLS",
        "8BITMIME",
        "BINARYMIME",
        "CHUNKING",
        "SMTPUTF8",
    ] {
        assert!(
            ehlo.iter().any(|l| &l[4..] == cap),
            "{cap} missing: {ehlo:?}"
        );
    }
    assert!(ehlo[0].ends_with("Hello [127.0.0.1]"), "{ehlo:?}");
    assert!(!ehlo.iter().any(|l| l.contains("AUTH")));
    c.cmd(
        "AUTH XOAUTH2 dGVzdA==",
        "530 5.7.0 Must issue a STARTTLS command first",
    )
    .await;
    c.cmd("MAIL FROM:<tickets@contoso.com>", "530 5.7.57 ")
        .await;
    c.cmd("STARTTLS", "220 ").await;
    let mut c = LineClient::new(tls_upgrade(&sb, c.into_inner()).await);
    c.send("EHLO client.test").await;
    let ehlo = c.smtp_reply().await;
    assert!(!ehlo.iter().any(|l| l.contains("STARTTLS")), "{ehlo:?}");
    assert!(ehlo.iter().any(|l| &l[4..] == "AUTH LOGIN XOAUTH2"));

    // A bad token.
    c.cmd(
        &format!("AUTH XOAUTH2 {}", xoauth2(MBX, "EwBnot-a-token")),
        "535 5.7.3 Authentication unsuccessful",
    )
    .await;
    // A good token, in the two-step form.
    let at = sb.issue_access_token("app", MBX);
    c.cmd("AUTH XOAUTH2", "334 ").await;
    c.cmd(&xoauth2(MBX, &at), "235 2.7.0 Authentication successful")
        .await;

    c.cmd("MAIL FROM:<Tickets@Contoso.com>", "250 ").await;
    c.cmd("RCPT TO:<someone@fabrikam.com>", "250 ").await;
    c.cmd("RCPT TO:<tickets@contoso.com>", "250 ").await;
    c.cmd("DATA", "354 ").await;
    c.send_raw(b"Subject: hi\r\n\r\n..leading dot\r\nbody\r\n.\r\n")
        .await;
    let l = c.line().await;
    assert!(l.starts_with("250 2.0.0 OK"), "{l}");
    c.cmd("QUIT", "221 2.0.0 Service closing transmission channel")
        .await;

    let msgs = sb.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        &msgs[0].raw[..],
        b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n"
    );
    assert_eq!(msgs[0].from, "Tickets@Contoso.com");
    assert_eq!(
        msgs[0].rcpts,
        ["someone@fabrikam.com", "tickets@contoso.com"]
    );
    assert_eq!(
        msgs[0].mailboxes,
        ["someone@fabrikam.com", "tickets@contoso.com"]
    );
    assert_eq!(sb.mailbox("someone@fabrikam.com").len(), 1);
    let a = sb.mail_auth_attempts();
    assert_eq!((a.smtp_ok, a.smtp_failed), (1, 1));
}

#[tokio::test]
async fn send_as_denied_and_pipelining() {
    let sb = sandbox().await;
    let at = sb.issue_access_token("app", MBX);
    let mut c = smtp_starttls(&sb).await;
    c.cmd(&format!("AUTH XOAUTH2 {}", xoauth2(MBX, &at)), "235 ")
        .await;
    // Pipelined transaction: replies come back in order.
    c.send_raw(
        b"MAIL FROM:<boss@contoso.com>\r\nRCPT TO:<a@b.test>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nRSET\r\nNOOP\r\n",
    )
    .await;
    assert!(c.line().await.starts_with("250 "));
    assert!(c.line().await.starts_with("250 "));
    assert!(c.line().await.starts_with("354 "));
    let l = c.line().await;
    assert!(
        l.starts_with(
            "554 5.2.252 SendAsDenied; tickets@contoso.com not allowed to send as boss@contoso.com"
        ),
        "{l}"
    );
    assert!(c.line().await.starts_with("250 "));
    assert!(c.line().await.starts_with("250 "));
    assert!(sb.messages().is_empty());
}

#[tokio::test]
async fn implicit_tls_app_token_and_bdat() {
    let sb = sandbox().await;
    sb.add_client("daemon", "secret", &[MBX]);
    let app = sb.issue_app_token("daemon");
    let mut c = tls(&sb, sb.smtps_addr()).await;
    assert!(c.line().await.starts_with("220 "));
    c.send("EHLO x").await;
    let ehlo = c.smtp_reply().await;
    assert!(!ehlo.iter().any(|l| l.contains("STARTTLS")));
    // App token for a mailbox the app may not use.
    c.cmd(
        &format!("AUTH XOAUTH2 {}", xoauth2("other@contoso.com", &app)),
        "535 ",
    )
    .await;
    c.cmd(&format!("AUTH XOAUTH2 {}", xoauth2(MBX, &app)), "235 ")
        .await;
    c.cmd(&format!("MAIL FROM:<{MBX}>"), "250 ").await;
    c.cmd("RCPT TO:<x@y.test>", "250 ").await;
    c.send_raw(b"BDAT 5\r\nhello").await;
    assert!(c.line().await.starts_with("250 "));
    c.send_raw(b"BDAT 7 LAST\r\n world\n").await;
    assert!(c.line().await.starts_with("250 2.0.0 OK"));
    assert_eq!(&sb.messages()[0].raw[..], b"hello world\n");
}

#[tokio::test]
async fn large_message_and_concurrent_sessions() {
    let sb = sandbox().await;
    let at = sb.issue_access_token("app", MBX);
    // 10 MB message.
    let line = "x".repeat(998);
    let mut body = String::from("Subject: big\r\n\r\n");
    while body.len() < 10 * 1024 * 1024 {
        body.push_str(&line);
        body.push_str("\r\n");
    }
    let mut c = smtp_starttls(&sb).await;
    c.cmd(&format!("AUTH XOAUTH2 {}", xoauth2(MBX, &at)), "235 ")
        .await;
    c.cmd(&format!("MAIL FROM:<{MBX}>"), "250 ").await;
    c.cmd("RCPT TO:<big@y.test>", "250 ").await;
    c.cmd("DATA", "354 ").await;
    c.send_raw(body.as_bytes()).await;
    c.send_raw(b".\r\n").await;
    assert!(c.line().await.starts_with("250 2.0.0 OK"));
    assert_eq!(sb.messages()[0].raw.len(), body.len());

    // 20 concurrent sessions.
    let sb = std::sync::Arc::new(sb);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let sb = sb.clone();
        let at = at.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = smtp_starttls(&sb).await;
            c.cmd(&format!("AUTH XOAUTH2 {}", xoauth2(MBX, &at)), "235 ")
                .await;
            c.cmd(&format!("MAIL FROM:<{MBX}>"), "250 ").await;
            c.cmd(&format!("RCPT TO:<r{i}@y.test>"), "250 ").await;
            c.cmd("DATA", "354 ").await;
            c.send_raw(format!("Subject: {i}\r\n\r\nbody\r\n.\r\n").as_bytes())
                .await;
            assert!(c.line().await.starts_with("250 "));
            c.cmd("QUIT", "221 ").await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(sb.messages().len(), 21);
}

#[tokio::test]
async fn expired_token_refused() {
    let sb = sandbox().await;
    let at = sb.issue_access_token("app", MBX);
    sb.expire_access_tokens();
    let mut c = smtp_starttls(&sb).await;
    c.cmd(&format!("AUTH XOAUTH2 {}", xoauth2(MBX, &at)), "535 5.7.3 ")
        .await;
    // Long AUTH lines (16 KiB) are read, not cut.
    let long = "A".repeat(16 * 1024);
    c.cmd(&format!("AUTH XOAUTH2 {long}"), "535 ").await;
    c.cmd("AUTH PLAIN AHUAcA==", "504 ").await;
}
