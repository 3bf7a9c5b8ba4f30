//! The fake Exchange IMAP server over real loopback sockets.

mod common;

use std::time::Duration;

use common::*;
use sandbox::{Sandbox, SandboxOptions};
use tokio::io::{AsyncRead, AsyncWrite};

const MBX: &str = "tickets@contoso.com";

async fn sandbox() -> Sandbox {
    Sandbox::start(SandboxOptions::default()).await.unwrap()
}

const MSG1: &str = "From: Alice <alice@a.test>\r\nTo: tickets@contoso.com\r\nSubject: Printer on fire\r\nDate: Sun, 22 Nov 2026 01:57:50 +0000\r\nMessage-ID: <1@a.test>\r\n\r\nPlease help.\r\n";
const MSG2: &str = "From: bob@b.test\r\nSubject: Password reset\r\n\r\nBody two.\r\n";

/// Greeting + AUTHENTICATE XOAUTH2 with SASL-IR.
async fn login(sb: &Sandbox, user: &str) -> LineClient<Tls> {
    let at = sb.issue_access_token("app", user);
    let mut c = tls(sb, sb.imap_addr()).await;
    let g = c.line().await;
    assert!(
        g.starts_with("* OK The Microsoft Exchange IMAP4 service is ready. ["),
        "{g}"
    );
    c.cmd(
        &format!("a1 AUTHENTICATE XOAUTH2 {}", xoauth2(user, &at)),
        "a1 OK AUTHENTICATE completed.",
    )
    .await;
    c
}

/// Send a tagged command; return the untagged lines and the tagged line.
async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut LineClient<S>,
    tag: &str,
    cmd: &str,
) -> (Vec<String>, String) {
    c.send(&format!("{tag} {cmd}")).await;
    let mut lines = c.until(&format!("{tag} ")).await;
    let last = lines.pop().unwrap();
    (lines, last)
}

#[tokio::test]
async fn authentication_forms() {
    let sb = sandbox().await;
    let at = sb.issue_access_token("app", MBX);
    let mut c = tls(&sb, sb.imap_addr()).await;
    c.line().await;
    let (caps, ok) = run(&mut c, "c0", "CAPABILITY").await;
    assert_eq!(
        caps,
        [
            "* CAPABILITY IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+"
        ]
    );
    assert_eq!(ok, "c0 OK CAPABILITY completed.");
    c.cmd("c1 LOGIN tickets@contoso.com secret", "c1 NO LOGIN failed.")
        .await;
    c.cmd(
        &format!("c2 AUTHENTICATE XOAUTH2 {}", xoauth2(MBX, "bogus")),
        "c2 NO AUTHENTICATE failed.",
    )
    .await;
    c.cmd("c3 SELECT INBOX", "c3 BAD ").await;
    // Continuation form.
    c.send("c4 AUTHENTICATE XOAUTH2").await;
    assert_eq!(c.line().await, "+ ");
    c.cmd(&xoauth2(MBX, &at), "c4 OK AUTHENTICATE completed.")
        .await;
    c.cmd("c5 SELECT INBOX", "* ").await;
    c.until("c5 OK [READ-WRITE] SELECT completed.").await;
    c.cmd("c6 LOGOUT", "* BYE").await;
    assert_eq!(c.line().await, "c6 OK LOGOUT completed.");
    let a = sb.mail_auth_attempts();
    assert_eq!((a.imap_ok, a.imap_failed), (1, 1));
}

#[tokio::test]
async fn app_token_without_rights_is_not_connected() {
    let sb = sandbox().await;
    sb.add_client("daemon", "s", &["other@contoso.com"]);
    let app = sb.issue_app_token("daemon");
    let mut c = tls(&sb, sb.imap_addr()).await;
    c.line().await;
    c.cmd(
        &format!("a AUTHENTICATE XOAUTH2 {}", xoauth2(MBX, &app)),
        "a OK AUTHENTICATE completed.",
    )
    .await;
    c.cmd(
        "b SELECT INBOX",
        "b BAD User is authenticated but not connected.",
    )
    .await;
    c.cmd("c NOOP", "c BAD User is authenticated but not connected.")
        .await;
}

#[tokio::test]
async fn starttls_port() {
    let sb = sandbox().await;
    let at = sb.issue_access_token("app", MBX);
    let mut c = plain(sb.imap_starttls_addr()).await;
    c.line().await;
    let (caps, _) = run(&mut c, "a", "CAPABILITY").await;
    assert!(caps[0].ends_with(" STARTTLS LOGINDISABLED"), "{caps:?}");
    c.cmd(
        &format!("b AUTHENTICATE XOAUTH2 {}", xoauth2(MBX, &at)),
        "b NO ",
    )
    .await;
    c.cmd("c STARTTLS", "c OK ").await;
    let mut c = LineClient::new(tls_upgrade(&sb, c.into_inner()).await);
    let (caps, _) = run(&mut c, "d", "CAPABILITY").await;
    assert!(!caps[0].contains("STARTTLS"), "{caps:?}");
    c.cmd(
        &format!("e AUTHENTICATE XOAUTH2 {}", xoauth2(MBX, &at)),
        "e OK AUTHENTICATE completed.",
    )
    .await;
}

#[tokio::test]
async fn select_search_fetch_store_expunge() {
    let sb = sandbox().await;
    sb.deliver(MBX, MSG1.as_bytes());
    sb.deliver(MBX, MSG2.as_bytes());
    let mut c = login(&sb, MBX).await;

    let (un, ok) = run(&mut c, "s1", "SELECT \"INBOX\"").await;
    assert!(un.contains(&"* 2 EXISTS".to_string()), "{un:?}");
    assert!(un.contains(&"* 2 RECENT".to_string()), "{un:?}");
    assert!(un.iter().any(|l| l.starts_with("* OK [UIDVALIDITY ")));
    assert!(un.contains(&"* OK [UIDNEXT 3] The next unique identifier value".to_string()));
    assert!(un.contains(&"* OK [UNSEEN 1] Is the first unseen message".to_string()));
    assert_eq!(ok, "s1 OK [READ-WRITE] SELECT completed.");

    assert_eq!(run(&mut c, "s2", "SEARCH ALL").await.0, ["* SEARCH 1 2"]);
    assert_eq!(run(&mut c, "s3", "SEARCH UNSEEN").await.0, ["* SEARCH 1 2"]);
    assert_eq!(
        run(&mut c, "s4", "SEARCH SUBJECT \"printer\"").await.0,
        ["* SEARCH 1"]
    );
    assert_eq!(
        run(&mut c, "s5", "UID SEARCH HEADER From bob").await.0,
        ["* SEARCH 2"]
    );

    // FETCH of a header (laminas: FLAGS RFC822.HEADER), then the text.
    c.send("f1 FETCH 1 (FLAGS RFC822.HEADER)").await;
    let l = c.line().await;
    let (hdr, _) = MSG1.split_once("\r\n\r\n").unwrap();
    let hdr = format!("{hdr}\r\n\r\n");
    assert_eq!(
        l,
        format!("* 1 FETCH (FLAGS () RFC822.HEADER {{{}}}", hdr.len())
    );
    assert_eq!(c.bytes(hdr.len()).await, hdr.as_bytes());
    assert_eq!(c.line().await, ")");
    assert_eq!(c.line().await, "f1 OK FETCH completed.");

    c.send("f2 FETCH 1 (RFC822.TEXT)").await;
    assert_eq!(c.line().await, "* 1 FETCH (RFC822.TEXT {14}");
    assert_eq!(c.bytes(14).await, b"Please help.\r\n");
    // Non-peek fetch sets \Seen and reports it.
    assert_eq!(c.line().await, " FLAGS (\\Seen))");
    c.line().await;
    assert_eq!(run(&mut c, "s6", "SEARCH UNSEEN").await.0, ["* SEARCH 2"]);
    assert_eq!(run(&mut c, "s7", "SEARCH SEEN").await.0, ["* SEARCH 1"]);

    // UID FETCH with a set, BODY.PEEK[], ENVELOPE, partial.
    c.send("f3 UID FETCH 1:* (RFC822.SIZE BODY.PEEK[]<0.4>)")
        .await;
    assert_eq!(
        c.line().await,
        format!(
            "* 1 FETCH (UID 1 RFC822.SIZE {} BODY[]<0> {{4}}",
            MSG1.len()
        )
    );
    assert_eq!(c.bytes(4).await, b"From");
    assert_eq!(c.line().await, ")");
    let l = c.line().await;
    assert!(l.starts_with("* 2 FETCH (UID 2 "), "{l}");
    c.bytes(4).await;
    c.line().await;
    assert_eq!(c.line().await, "f3 OK UID FETCH completed.");

    let (un, _) = run(&mut c, "f4", "FETCH 1 (ENVELOPE INTERNALDATE)").await;
    assert!(
        un[0].starts_with("* 1 FETCH (ENVELOPE (\"Sun, 22 Nov 2026 01:57:50 +0000\" \"Printer on fire\" ((\"Alice\" NIL \"alice\" \"a.test\"))"),
        "{un:?}"
    );
    assert!(un[0].contains("INTERNALDATE \""), "{un:?}");

    let (un, _) = run(&mut c, "f5", "FETCH 2 BODYSTRUCTURE").await;
    assert_eq!(
        un,
        [
            "* 2 FETCH (BODYSTRUCTURE (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 11 1 NIL NIL NIL NIL))"
        ]
    );

    // STORE and EXPUNGE.
    let (un, ok) = run(&mut c, "t1", "STORE 1 +FLAGS (\\Deleted)").await;
    assert_eq!(un, ["* 1 FETCH (FLAGS (\\Seen \\Deleted))"]);
    assert_eq!(ok, "t1 OK STORE completed.");
    let (un, _) = run(&mut c, "t2", "UID STORE 2 +FLAGS.SILENT (\\Flagged)").await;
    assert!(un.is_empty());
    let (un, ok) = run(&mut c, "t3", "EXPUNGE").await;
    assert_eq!(un, ["* 1 EXPUNGE"]);
    assert_eq!(ok, "t3 OK EXPUNGE completed.");
    assert_eq!(run(&mut c, "s8", "SEARCH ALL").await.0, ["* SEARCH 1"]);
    assert_eq!(
        run(&mut c, "s9", "UID SEARCH FLAGGED").await.0,
        ["* SEARCH 2"]
    );
    assert_eq!(sb.mailbox(MBX).len(), 1);

    let (_, ok) = run(&mut c, "x1", "CLOSE").await;
    assert_eq!(ok, "x1 OK CLOSE completed.");
    c.cmd("x2 FETCH 1 FLAGS", "x2 BAD ").await;
    let (un, _) = run(&mut c, "x3", "LIST \"\" \"*\"").await;
    assert_eq!(un, ["* LIST (\\Marked \\HasNoChildren) \"/\" INBOX"]);
    c.cmd("x4 FROB", "x4 BAD ").await;
}

#[tokio::test]
async fn append_literals_and_idle_push() {
    let sb = sandbox().await;
    let mut c = login(&sb, MBX).await;
    run(&mut c, "a0", "SELECT INBOX").await;

    // Synchronising literal.
    let m = "Subject: appended\r\n\r\nhello\r\n";
    c.send(&format!("a1 APPEND INBOX (\\Seen) {{{}}}", m.len()))
        .await;
    assert_eq!(c.line().await, "+ Ready for additional command text.");
    c.send(m).await; // the literal plus the CRLF ending the command
    let (un, ok) = (c.line().await, c.line().await);
    assert_eq!(un, "* 1 EXISTS");
    assert!(ok.starts_with("a1 OK [APPENDUID "), "{ok}");
    assert!(ok.ends_with(" 1] APPEND completed."), "{ok}");

    // LITERAL+: no continuation.
    let m2 = "Subject: second\r\n\r\nworld\r\n";
    c.send_raw(format!("a2 APPEND INBOX {{{}+}}\r\n{m2}\r\n", m2.len()).as_bytes())
        .await;
    assert_eq!(c.line().await, "* 2 EXISTS");
    assert!(c.line().await.starts_with("a2 OK [APPENDUID "));
    let stored = sb.mailbox(MBX);
    assert_eq!(&stored[0].raw[..], m.as_bytes());
    assert_eq!(stored[0].flags, ["\\Seen"]);
    assert_eq!(&stored[1].raw[..], m2.as_bytes());

    // IDLE: a delivery is pushed as EXISTS.
    c.send("i1 IDLE").await;
    assert_eq!(c.line().await, "+ idling");
    tokio::time::sleep(Duration::from_millis(50)).await;
    sb.deliver(MBX, MSG2.as_bytes());
    assert_eq!(c.line().await, "* 3 EXISTS");
    c.send("DONE").await;
    assert_eq!(c.line().await, "i1 OK IDLE completed.");
}

#[tokio::test]
async fn large_append() {
    let sb = sandbox().await;
    let mut c = login(&sb, MBX).await;
    let mut m = b"Subject: big\r\n\r\n".to_vec();
    m.resize(40 * 1024 * 1024, b'x');
    m.extend_from_slice(b"\r\n");
    c.send(&format!("a1 APPEND INBOX {{{}}}", m.len())).await;
    assert_eq!(c.line().await, "+ Ready for additional command text.");
    c.send_raw(&m).await;
    c.send_raw(b"\r\n").await;
    assert!(c.line().await.starts_with("a1 OK [APPENDUID "));
    assert_eq!(sb.mailbox(MBX)[0].raw.len(), m.len());
}

#[tokio::test]
async fn smtp_then_imap_read_back() {
    let sb = sandbox().await;
    let at = sb.issue_access_token("app", MBX);
    let mut s = smtp_starttls(&sb).await;
    s.cmd(&format!("AUTH XOAUTH2 {}", xoauth2(MBX, &at)), "235 ")
        .await;
    s.cmd(&format!("MAIL FROM:<{MBX}>"), "250 ").await;
    s.cmd("RCPT TO:<helpdesk@contoso.com>", "250 ").await;
    s.cmd("DATA", "354 ").await;
    s.send_raw(b"Subject: via smtp\r\n\r\nround trip\r\n.\r\n")
        .await;
    assert!(s.line().await.starts_with("250 "));

    let mut c = login(&sb, "helpdesk@contoso.com").await;
    run(&mut c, "a", "EXAMINE INBOX").await;
    assert_eq!(
        run(&mut c, "b", "SEARCH SUBJECT \"via smtp\"").await.0,
        ["* SEARCH 1"]
    );
    c.send("c FETCH 1 BODY[TEXT]").await;
    assert_eq!(c.line().await, "* 1 FETCH (BODY[TEXT] {12}");
    assert_eq!(c.bytes(12).await, b"round trip\r\n");
    // EXAMINE is read-only: no \Seen is set.
    assert_eq!(c.line().await, ")");
}

/// The commands GLPI ≤ 9.4 (php-imap on c-client) sends after login
/// (shared/transcripts/imap-c-client-glpi94.txt), plus laminas-mail's (imap-laminas-glpi10.txt).
#[tokio::test]
async fn glpi_collector_commands() {
    let sb = sandbox().await;
    sb.deliver(MBX, MSG1.as_bytes());
    sb.deliver(MBX, MSG2.as_bytes());
    let mut c = login(&sb, MBX).await;
    let (_, ok) = run(&mut c, "00000001", "SELECT INBOX").await;
    assert!(ok.starts_with("00000001 OK [READ-WRITE]"));
    c.send("00000002 FETCH 1,2:21 (UID ENVELOPE BODY.PEEK[HEADER.FIELDS (Newsgroups Content-MD5 Content-Disposition Content-Language Content-Location Followup-To References)] INTERNALDATE RFC822.SIZE FLAGS)").await;
    let l = c.line().await;
    assert!(l.starts_with("* 1 FETCH (UID 1 ENVELOPE ("), "{l}");
    assert!(
        l.ends_with("BODY[HEADER.FIELDS (NEWSGROUPS CONTENT-MD5 CONTENT-DISPOSITION CONTENT-LANGUAGE CONTENT-LOCATION FOLLOWUP-TO REFERENCES)] {2}"),
        "{l}"
    );
    assert_eq!(c.bytes(2).await, b"\r\n");
    let rest = c.until("00000002 ").await;
    assert_eq!(rest.last().unwrap(), "00000002 OK FETCH completed.");
    let (un, _) = run(&mut c, "00000021", "FETCH 1 (BODYSTRUCTURE FLAGS)").await;
    assert!(
        un[0].starts_with("* 1 FETCH (BODYSTRUCTURE (\"text\" \"plain\""),
        "{un:?}"
    );
    c.send("00000022 FETCH 1 BODY[1]").await;
    assert_eq!(c.line().await, "* 1 FETCH (BODY[1] {14}");
    assert_eq!(c.bytes(14).await, b"Please help.\r\n");
    c.until("00000022 OK").await;
    for (tag, cmd) in [("00000023", "EXPUNGE"), ("00000024", "CLOSE")] {
        let (_, ok) = run(&mut c, tag, cmd).await;
        assert!(ok.starts_with(&format!("{tag} OK")), "{ok}");
    }
    let (_, ok) = run(&mut c, "TAG2", "SELECT \"INBOX\"").await;
    assert!(ok.starts_with("TAG2 OK"));
    assert_eq!(run(&mut c, "TAG3", "SEARCH ALL").await.0, ["* SEARCH 1 2"]);
    assert_eq!(
        run(&mut c, "TAG6", "FETCH 1 (UID)").await.0,
        ["* 1 FETCH (UID 1)"]
    );
    let (un, ok) = run(&mut c, "TAG8", "LOGOUT").await;
    assert_eq!(
        un,
        ["* BYE Microsoft Exchange Server IMAP4 server signing off."]
    );
    assert_eq!(ok, "TAG8 OK LOGOUT completed.");
}
