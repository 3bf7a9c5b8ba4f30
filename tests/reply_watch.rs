//! A piped SMTP session that meets a refusal with a known fix gets one logged hint (issue 15):
//! a GLPI-like session (PHPMailer's byte sequence from the transcript
//! smtp-phpmailer-glpi10-login: AUTH LOGIN in three steps, the message in many small writes)
//! whose message Exchange refuses after DATA with `554 5.2.252 SendAsDenied`. The client gets
//! Exchange's reply unchanged; the log names account, listener and code and the fix — once per
//! session, and never anything of the message. Isolated: it captures this process's logs.

mod common;

use common::*;
use sandbox::MailboxSettings;

/// PHPMailer's message for GLPI, written in small pieces as PHPMailer does.
const BODY_MARKER: &str = "secret-ticket-body-7f3a";

async fn glpi_message<S>(c: &mut LineClient<S>, from: &str) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let r = c.cmd(&format!("MAIL FROM:<{from}>")).await;
    assert!(r.starts_with("250"), "{r}");
    let r = c.cmd("RCPT TO:<alerts@contoso.com>").await;
    assert!(r.starts_with("250"), "{r}");
    let r = c.cmd("DATA").await;
    assert!(r.starts_with("354"), "{r}");
    let lines = [
        "Date: Sun, 22 Nov 2026 02:46:49 +0000".to_string(),
        "To: Recipient <alerts@contoso.com>".into(),
        format!("From: GLPI <{from}>"),
        format!("Reply-To: GLPI <{from}>"),
        "Subject: reply watch".into(),
        "Message-ID: <GLPI_transcript-Ticket-1/new@vm>".into(),
        "X-Mailer: PHPMailer 6.6.3 (https://github.com/PHPMailer/PHPMailer)".into(),
        "Auto-Submitted: auto-generated".into(),
        "MIME-Version: 1.0".into(),
        "Content-Type: text/plain; charset=utf-8".into(),
        String::new(),
        format!("Ticket body {BODY_MARKER}"),
    ];
    for l in &lines {
        c.write(format!("{l}\r\n").as_bytes()).await;
    }
    c.write(b".\r\n").await;
    c.reply().await.join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_as_denied_in_a_piped_session_logs_the_fix_once() {
    if run_isolated("send_as_denied_in_a_piped_session_logs_the_fix_once", &[]) {
        return;
    }
    let capture = LogCapture::install(tracing::Level::INFO);
    let env = Env::start().await;
    env.sandbox.set_mailbox_settings(
        MAILBOX,
        MailboxSettings {
            send_as_denied: true,
            ..Default::default()
        },
    );
    let mut c = LineClient::connect(env.addr("smtp")).await;
    assert!(c.code().await.starts_with("220"));
    assert!(c.cmd("EHLO vm").await.starts_with("250"));
    assert!(c.cmd("AUTH LOGIN").await.starts_with("334"));
    assert!(c.cmd(&b64(USER.as_bytes())).await.starts_with("334"));
    assert!(c.cmd(&b64(PASSWORD.as_bytes())).await.starts_with("235"));
    let r = glpi_message(&mut c, MAILBOX).await;
    assert!(r.starts_with("554 5.2.252 SendAsDenied"), "{r}");
    // A second refused message in the same session: no second hint.
    assert!(c.cmd("RSET").await.starts_with("250"));
    let r = glpi_message(&mut c, MAILBOX).await;
    assert!(r.starts_with("554 5.2.252"), "{r}");
    assert!(c.cmd("QUIT").await.starts_with("221"));
    assert!(c.closed().await);

    let logs = capture.text();
    let hints: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("upstream refused during the mail transaction"))
        .collect();
    assert_eq!(hints.len(), 1, "{logs}");
    for part in [
        "tickets@contoso.com may not send with the message's From address",
        "account=tickets",
        "listener=smtp",
        "code=554",
        "diagnosis=\"send_as_denied\"",
        "Add-RecipientPermission",
    ] {
        assert!(hints[0].contains(part), "{part}: {}", hints[0]);
    }
    assert!(
        !logs.contains(BODY_MARKER),
        "message content in the logs:\n{logs}"
    );
    assert_no_secrets(&logs, &[PASSWORD.to_string()]);

    // IMAP sessions are not watched, and a healthy SMTP session logs no hint.
    env.sandbox
        .set_mailbox_settings(MAILBOX, MailboxSettings::default());
    let mut c = LineClient::connect(env.addr("smtp")).await;
    c.code().await;
    c.cmd("EHLO vm").await;
    let blob = b64(format!("\0{USER}\0{PASSWORD}").as_bytes());
    assert!(
        c.cmd(&format!("AUTH PLAIN {blob}"))
            .await
            .starts_with("235")
    );
    let r = glpi_message(&mut c, MAILBOX).await;
    assert!(r.starts_with("250"), "{r}");
    c.cmd("QUIT").await;
    let logs = capture.text();
    assert_eq!(
        logs.matches("upstream refused during the mail transaction")
            .count(),
        1,
        "{logs}"
    );
}
