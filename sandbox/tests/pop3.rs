//! The fake Exchange POP3 server over real loopback sockets.

mod common;

use common::*;
use sandbox::{Sandbox, SandboxOptions};

const MBX: &str = "tickets@contoso.com";

async fn sandbox() -> Sandbox {
    Sandbox::start(SandboxOptions::default()).await.unwrap()
}

/// Read a multi-line response body (after the status line) up to the final ".".
async fn multiline<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    c: &mut LineClient<S>,
) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let l = c.line().await;
        if l == "." {
            return out;
        }
        out.push(l);
    }
}

#[tokio::test]
async fn auth_retr_top_dele() {
    let sb = sandbox().await;
    sb.deliver(MBX, b"Subject: one\r\n\r\n.dotted line\r\nsecond\r\n");
    sb.deliver(MBX, b"Subject: two\r\n\r\nbody two\r\n");
    let at = sb.issue_access_token("app", MBX);

    let mut c = tls(&sb, sb.pop3_addr()).await;
    let g = c.line().await;
    assert!(
        g.starts_with("+OK The Microsoft Exchange POP3 service is ready. ["),
        "{g}"
    );
    c.cmd("CAPA", "+OK").await;
    let caps = multiline(&mut c).await;
    assert_eq!(caps, ["TOP", "UIDL", "SASL PLAIN XOAUTH2", "USER"]);
    c.cmd("USER tickets@contoso.com", "+OK").await;
    c.cmd("PASS secret", "-ERR ").await;
    c.cmd("STAT", "-ERR ").await;
    c.cmd("AUTH XOAUTH2", "+ ").await;
    c.cmd(
        &xoauth2(MBX, "nope"),
        "-ERR Authentication failure: unknown user name or bad password.",
    )
    .await;
    c.cmd("AUTH XOAUTH2", "+ ").await;
    c.cmd(&xoauth2(MBX, &at), "+OK User successfully authenticated.")
        .await;

    c.cmd("STAT", "+OK 2 ").await;
    c.cmd("LIST", "+OK").await;
    assert_eq!(multiline(&mut c).await.len(), 2);
    let u1 = c.cmd("UIDL 1", "+OK 1 ").await;
    c.cmd("RETR 1", "+OK").await;
    assert_eq!(
        multiline(&mut c).await,
        ["Subject: one", "", "..dotted line", "second"]
    );
    c.cmd("TOP 2 0", "+OK").await;
    assert_eq!(multiline(&mut c).await, ["Subject: two", ""]);
    c.cmd("DELE 1", "+OK").await;
    c.cmd("RETR 1", "-ERR ").await;
    c.cmd("STAT", "+OK 1 ").await;
    c.cmd("QUIT", "+OK").await;

    let left = sb.mailbox(MBX);
    assert_eq!(left.len(), 1);
    assert_eq!(&left[0].raw[..], b"Subject: two\r\n\r\nbody two\r\n");
    assert!(u1.len() > "+OK 1 ".len());
    let a = sb.mail_auth_attempts();
    assert_eq!((a.pop3_ok, a.pop3_failed), (1, 1));
}

#[tokio::test]
async fn stls_and_initial_response() {
    let sb = sandbox().await;
    let at = sb.issue_access_token("app", MBX);
    let mut c = plain(sb.pop3_starttls_addr()).await;
    c.line().await;
    c.cmd("CAPA", "+OK").await;
    assert!(multiline(&mut c).await.contains(&"STLS".to_string()));
    c.cmd(&format!("AUTH XOAUTH2 {}", xoauth2(MBX, &at)), "-ERR ")
        .await;
    c.cmd("STLS", "+OK").await;
    let mut c = LineClient::new(tls_upgrade(&sb, c.into_inner()).await);
    c.cmd("CAPA", "+OK").await;
    assert!(!multiline(&mut c).await.contains(&"STLS".to_string()));
    c.cmd(
        &format!("AUTH XOAUTH2 {}", xoauth2(MBX, &at)),
        "+OK User successfully authenticated.",
    )
    .await;
    c.cmd("STAT", "+OK 0 0").await;
}
