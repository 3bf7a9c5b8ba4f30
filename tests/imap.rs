//! IMAP through authbridge against the sandbox (fake Entra ID + fake Exchange Online), over
//! loopback sockets. Client bytes follow the recordings in shared/transcripts/ (named in each
//! test); replies follow DESIGN §1 and §4.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use sandbox::TokenFailure;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A message as GLPI's collector finds it in the mailbox.
const MESSAGE: &str = "Return-Path: <alerts@contoso.test>\r\n\
From: alerts@contoso.test\r\n\
To: tickets@contoso.com\r\n\
Subject: rig check\r\n\
Date: Sun, 22 Nov 2026 01:57:50 +0000\r\n\
Message-ID: <rig-check@rig-check.test>\r\n\
\r\n\
rig check message\r\n";

/// A quoted string as laminas-mail writes it: only `\` and `"` escaped, other bytes raw
/// (laminas/laminas-mail src/Protocol/Imap.php `escapeString`).
fn laminas_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn plain_blob(user: &str, password: &str) -> String {
    b64(format!("\0{user}\0{password}").as_bytes())
}

/// Connect to a plain listener and read the greeting.
async fn connect(env: &Env, listener: &str) -> (LineClient<tokio::net::TcpStream>, String) {
    let mut c = LineClient::connect(env.addr(listener)).await;
    let greeting = c.line().await.expect("greeting");
    (c, greeting)
}

/// The capability atoms of a greeting's `[CAPABILITY …]` code or a `* CAPABILITY` line.
fn caps_of(line: &str) -> Vec<String> {
    let rest = if let Some(i) = line.find("[CAPABILITY ") {
        let rest = &line[i + "[CAPABILITY ".len()..];
        &rest[..rest.find(']').expect("closing bracket")]
    } else {
        line.strip_prefix("* CAPABILITY ")
            .expect("a capability line")
    };
    rest.split(' ').map(str::to_string).collect()
}

fn has(caps: &[String], cap: &str) -> bool {
    caps.iter().any(|c| c.eq_ignore_ascii_case(cap))
}

/// Log in with laminas-style LOGIN and select INBOX.
async fn login_and_select<S>(c: &mut LineClient<S>)
where
    S: tokio::io::AsyncRead + AsyncWrite + Unpin,
{
    let (_, ok) = c
        .imap("a1", &format!("LOGIN {USER} {}", laminas_quote(PASSWORD)))
        .await;
    assert!(ok.starts_with("a1 OK"), "{ok}");
    let (_, ok) = c.imap("a2", "SELECT INBOX").await;
    assert!(ok.starts_with("a2 OK"), "{ok}");
}

/// laminas-mail as GLPI 9.5/10/11's MailCollector (transcripts imap-laminas-glpi10 and
/// imap-laminas-special-password): no CAPABILITY, `TAG1 LOGIN "user" "pass"` with the
/// password's `"` and `\` escaped, `SELECT "INBOX"`, `SEARCH ALL` twice, the three FETCHes, LOGOUT.
#[tokio::test]
async fn laminas_glpi10_collects_a_message() {
    let env = Env::start().await;
    env.sandbox.deliver(MAILBOX, MESSAGE.as_bytes());
    let (mut c, greeting) = connect(&env, "imap").await;
    assert!(greeting.starts_with("* OK"), "{greeting}");
    // One write, as laminas sends it.
    c.write(format!("TAG1 LOGIN \"{USER}\" {}\r\n", laminas_quote(PASSWORD)).as_bytes())
        .await;
    let (_, ok) = c.imap_tagged("TAG1").await;
    // laminas judges success on the two characters after the tag.
    assert!(ok.starts_with("TAG1 OK"), "{ok}");
    let (untagged, ok) = c.imap("TAG2", "SELECT \"INBOX\"").await;
    assert!(ok.starts_with("TAG2 OK"), "{ok}");
    assert!(untagged.contains(&"* 1 EXISTS".to_string()), "{untagged:?}");
    for tag in ["TAG3", "TAG4"] {
        let (untagged, ok) = c.imap(tag, "SEARCH ALL").await;
        assert!(ok.starts_with(&format!("{tag} OK")), "{ok}");
        assert_eq!(untagged, vec!["* SEARCH 1".to_string()]);
    }
    let (untagged, ok) = c.imap("TAG5", "FETCH 1 (FLAGS RFC822.HEADER)").await;
    assert!(ok.starts_with("TAG5 OK"), "{ok}");
    let header = &MESSAGE[..MESSAGE.find("\r\n\r\n").unwrap() + 4];
    assert_eq!(untagged.len(), 1, "{untagged:?}");
    let fetch = &untagged[0];
    assert!(fetch.starts_with("* 1 FETCH ("), "{fetch}");
    assert!(fetch.contains("FLAGS ("), "{fetch}");
    assert!(
        fetch.contains(&format!("RFC822.HEADER {{{}}}\r\n{header})", header.len())),
        "{fetch}"
    );
    let (untagged, ok) = c.imap("TAG6", "FETCH 1 (UID)").await;
    assert!(ok.starts_with("TAG6 OK"), "{ok}");
    assert_eq!(untagged, vec!["* 1 FETCH (UID 1)".to_string()]);
    let (untagged, ok) = c.imap("TAG7", "FETCH 1 (RFC822.TEXT)").await;
    assert!(ok.starts_with("TAG7 OK"), "{ok}");
    assert!(
        untagged[0].contains("RFC822.TEXT {19}\r\nrig check message\r\n"),
        "{untagged:?}"
    );
    let (untagged, ok) = c.imap("TAG8", "LOGOUT").await;
    assert!(ok.starts_with("TAG8 OK"), "{ok}");
    assert!(
        untagged.iter().any(|l| l.starts_with("* BYE")),
        "{untagged:?}"
    );
    assert!(c.closed().await);
    let auth = env.sandbox.mail_auth_attempts();
    assert_eq!((auth.imap_ok, auth.imap_failed), (1, 0));
}

/// laminas sends a value containing LF as a synchronising literal and needs a line starting
/// with `+ ` (plus, space) before the payload (transcript imap-laminas-lf-password-literal:
/// `TAG1 LOGIN "user" {11}`, payload and CRLF in one write).
#[tokio::test]
async fn laminas_password_with_lf_goes_as_a_literal() {
    const LF_USER: &str = "sink@contoso.test";
    const LF_PASSWORD: &str = "abcde\nfghij";
    const UTF8_USER: &str = "alerts@contoso.test";
    const UTF8_PASSWORD: &str = "Grüße \"für\" \\ü";
    let env = Env::start_with_yaml(EnvOptions::default(), |_, yaml| {
        let yaml = with_login(yaml, LF_USER, LF_PASSWORD.as_bytes());
        with_login(yaml, UTF8_USER, UTF8_PASSWORD.as_bytes())
    })
    .await;
    let (mut c, _) = connect(&env, "imap").await;
    c.write(format!("TAG1 LOGIN \"{LF_USER}\" {{{}}}\r\n", LF_PASSWORD.len()).as_bytes())
        .await;
    let cont = c.raw_line().await;
    assert!(
        cont.starts_with(b"+ "),
        "{:?}",
        String::from_utf8_lossy(&cont)
    );
    c.write(format!("{LF_PASSWORD}\r\n").as_bytes()).await;
    let (_, ok) = c.imap_tagged("TAG1").await;
    assert!(ok.starts_with("TAG1 OK"), "{ok}");
    let (_, ok) = c.imap("TAG2", "SELECT \"INBOX\"").await;
    assert!(ok.starts_with("TAG2 OK"), "{ok}");

    // 8-bit bytes in a quoted string go raw (laminas escapes only `\` and `"`).
    let (mut c, _) = connect(&env, "imap").await;
    c.write(
        format!(
            "TAG1 LOGIN \"{UTF8_USER}\" {}\r\n",
            laminas_quote(UTF8_PASSWORD)
        )
        .as_bytes(),
    )
    .await;
    let (_, ok) = c.imap_tagged("TAG1").await;
    assert!(ok.starts_with("TAG1 OK"), "{ok}");
}

/// PHP's c-client (GLPI ≤ 9.4) on the plaintext listener: it trusts the greeting's
/// `[CAPABILITY …]`, which must not offer AUTH=PLAIN ("SECURITY PROBLEM: insecure server
/// advertised AUTH=PLAIN", transcript imap-c-client-glpi94) so it uses LOGIN: a password with
/// `"` or `\` as a `{N}` literal whose payload and CRLF come in two writes
/// (imap-c-client-login-special-password), other credentials as atoms
/// (imap-c-client-login-no-auth-plain). Tags are 8 hex digits.
#[tokio::test]
async fn c_client_plain_listener_login_with_literal_and_atoms() {
    const ATOM_USER: &str = "tickets@contoso.test";
    const ATOM_PASSWORD: &str = "Atom-Pass_2026!";
    let env = Env::start_with_yaml(EnvOptions::default(), |_, yaml| {
        with_login(yaml, ATOM_USER, ATOM_PASSWORD.as_bytes())
    })
    .await;
    env.sandbox.deliver(MAILBOX, MESSAGE.as_bytes());

    let (mut c, greeting) = connect(&env, "imap").await;
    assert!(greeting.starts_with("* OK [CAPABILITY "), "{greeting}");
    let caps = caps_of(&greeting);
    assert_eq!(caps[0], "IMAP4rev1", "{greeting}");
    for absent in [
        "AUTH=PLAIN",
        "SASL-IR",
        "STARTTLS",
        "LOGINDISABLED",
        "AUTH=XOAUTH2",
    ] {
        assert!(!has(&caps, absent), "{absent} in {greeting}");
    }
    c.send(&format!("00000000 LOGIN {USER} {{{}}}", PASSWORD.len()))
        .await;
    assert_eq!(c.raw_line().await, b"+ Ready\r\n");
    c.write(PASSWORD.as_bytes()).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.write(b"\r\n").await;
    let (_, ok) = c.imap_tagged("00000000").await;
    assert!(ok.starts_with("00000000 OK"), "{ok}");
    let (untagged, ok) = c.imap("00000001", "SELECT INBOX").await;
    assert!(ok.starts_with("00000001 OK"), "{ok}");
    assert!(untagged.contains(&"* 1 EXISTS".to_string()), "{untagged:?}");
    let (_, ok) = c.imap("00000002", "CLOSE").await;
    assert!(ok.starts_with("00000002 OK"), "{ok}");
    let (untagged, ok) = c.imap("00000003", "LOGOUT").await;
    assert!(ok.starts_with("00000003 OK"), "{ok}");
    assert!(untagged[0].starts_with("* BYE"), "{untagged:?}");

    // Atoms (c-client's fallback when AUTH=PLAIN is not offered).
    let (mut c, _) = connect(&env, "imap").await;
    let (_, ok) = c
        .imap("00000000", &format!("LOGIN {ATOM_USER} {ATOM_PASSWORD}"))
        .await;
    assert!(ok.starts_with("00000000 OK"), "{ok}");
    let (_, ok) = c.imap("00000001", "SELECT INBOX").await;
    assert!(ok.starts_with("00000001 OK"), "{ok}");
    assert_eq!(env.sandbox.mail_auth_attempts().imap_ok, 2);
}

/// c-client on implicit TLS (`/imap/ssl/novalidate-cert`): AUTH=PLAIN is offered there, and it
/// sends `AUTHENTICATE PLAIN`, waits for `+ ` and sends the base64 blob (transcript
/// imap-c-client-glpi94; imap-c-client-authenticate-plain-special-password for the password
/// hidden in the blob). curl sends the blob on the same line (SASL-IR, imap-curl).
#[tokio::test]
async fn c_client_authenticate_plain_on_imaps() {
    let env = Env::start().await;
    env.sandbox.deliver(MAILBOX, MESSAGE.as_bytes());
    let mut c = env.connect_tls("imaps").await;
    let greeting = c.line().await.unwrap();
    let caps = caps_of(&greeting);
    assert!(
        has(&caps, "AUTH=PLAIN") && has(&caps, "SASL-IR"),
        "{greeting}"
    );
    assert!(
        !has(&caps, "STARTTLS") && !has(&caps, "LOGINDISABLED"),
        "{greeting}"
    );
    c.send("00000000 AUTHENTICATE PLAIN").await;
    assert_eq!(c.raw_line().await, b"+ \r\n", "c-client needs \"+ \"");
    c.send(&plain_blob(USER, PASSWORD)).await;
    let (_, ok) = c.imap_tagged("00000000").await;
    assert!(ok.starts_with("00000000 OK"), "{ok}");
    let (untagged, ok) = c.imap("00000001", "SELECT INBOX").await;
    assert!(ok.starts_with("00000001 OK"), "{ok}");
    assert!(untagged.contains(&"* 1 EXISTS".to_string()), "{untagged:?}");
    let (untagged, ok) = c.imap("00000002", "FETCH 1 BODY.PEEK[HEADER]").await;
    assert!(ok.starts_with("00000002 OK"), "{ok}");
    assert!(untagged[0].contains("Subject: rig check"), "{untagged:?}");
    let (_, ok) = c.imap("00000003", "LOGOUT").await;
    assert!(ok.starts_with("00000003 OK"), "{ok}");

    // curl: CAPABILITY, then one-line AUTHENTICATE PLAIN with the initial response.
    let mut c = env.connect_tls("imaps").await;
    c.line().await.unwrap();
    let (untagged, ok) = c.imap("A001", "CAPABILITY").await;
    assert!(ok.starts_with("A001 OK"), "{ok}");
    assert!(has(&caps_of(&untagged[0]), "AUTH=PLAIN"), "{untagged:?}");
    let (_, ok) = c
        .imap(
            "A002",
            &format!("AUTHENTICATE PLAIN {}", plain_blob(USER, PASSWORD)),
        )
        .await;
    assert!(ok.starts_with("A002 OK"), "{ok}");
    let (_, ok) = c.imap("A003", "SELECT INBOX").await;
    assert!(ok.starts_with("A003 OK"), "{ok}");
    let (untagged, ok) = c.imap("A004", "UID FETCH 1 BODY[]").await;
    assert!(ok.starts_with("A004 OK"), "{ok}");
    assert!(
        untagged[0].contains(&format!("BODY[] {{{}}}\r\n{MESSAGE}", MESSAGE.len())),
        "{untagged:?}"
    );
    assert_eq!(env.sandbox.mail_auth_attempts().imap_ok, 2);
}

/// Python imaplib's order: CAPABILITY first, then LOGIN (plaintext listener: the upstream's
/// capabilities, filtered, with no AUTH=); on TLS, AUTHENTICATE PLAIN with a `+` continuation.
#[tokio::test]
async fn imaplib_style_capability_then_login_or_authenticate() {
    let env = Env::start().await;
    let (mut c, _) = connect(&env, "imap").await;
    let (untagged, ok) = c.imap("JMAE1", "CAPABILITY").await;
    assert!(ok.starts_with("JMAE1 OK"), "{ok}");
    let caps = caps_of(&untagged[0]);
    assert_eq!(caps[0], "IMAP4rev1");
    // Exchange's (sandbox's) own capabilities come through …
    for kept in ["IDLE", "UIDPLUS", "MOVE", "NAMESPACE", "LITERAL+"] {
        assert!(has(&caps, kept), "{kept} missing: {caps:?}");
    }
    // … but not its login methods.
    assert!(
        !caps
            .iter()
            .any(|c| c.to_ascii_uppercase().starts_with("AUTH=")),
        "{caps:?}"
    );
    assert!(
        !has(&caps, "STARTTLS") && !has(&caps, "LOGINDISABLED"),
        "{caps:?}"
    );
    let (_, ok) = c
        .imap(
            "JMAE2",
            &format!("LOGIN {USER} {}", laminas_quote(PASSWORD)),
        )
        .await;
    assert!(ok.starts_with("JMAE2 OK"), "{ok}");
    let (_, ok) = c.imap("JMAE3", "SELECT INBOX").await;
    assert!(ok.starts_with("JMAE3 OK"), "{ok}");

    let mut c = env.connect_tls("imaps").await;
    c.line().await.unwrap();
    let (untagged, _) = c.imap("KPLD1", "CAPABILITY").await;
    let caps = caps_of(&untagged[0]);
    assert!(has(&caps, "AUTH=PLAIN") && has(&caps, "IDLE"), "{caps:?}");
    c.send("KPLD2 AUTHENTICATE PLAIN").await;
    assert!(c.raw_line().await.starts_with(b"+"));
    c.send(&plain_blob(USER, PASSWORD)).await;
    let (_, ok) = c.imap_tagged("KPLD2").await;
    assert!(ok.starts_with("KPLD2 OK"), "{ok}");
    let (_, ok) = c.imap("KPLD3", "SELECT INBOX").await;
    assert!(ok.starts_with("KPLD3 OK"), "{ok}");
}

/// The other login forms of DESIGN §1: LOGIN with a `{N+}` (LITERAL+) literal, needing no
/// continuation; AUTHENTICATE LOGIN with its two prompts; and commands pipelined in the same
/// write as the login, which reach the upstream after it.
#[tokio::test]
async fn literal_plus_authenticate_login_and_pipelining_after_login() {
    let env = Env::start().await;
    let (mut c, _) = connect(&env, "imap").await;
    c.write(format!("a1 LOGIN {USER} {{{}+}}\r\n{PASSWORD}\r\n", PASSWORD.len()).as_bytes())
        .await;
    let (untagged, ok) = c.imap_tagged("a1").await;
    assert!(ok.starts_with("a1 OK"), "{ok}");
    assert!(!untagged.iter().any(|l| l.starts_with('+')), "{untagged:?}");

    let mut c = env.connect_tls("imaps").await;
    c.line().await.unwrap();
    c.send("a1 AUTHENTICATE LOGIN").await;
    assert_eq!(c.line().await.unwrap(), "+ VXNlcm5hbWU6");
    c.send(&b64(USER.as_bytes())).await;
    assert_eq!(c.line().await.unwrap(), "+ UGFzc3dvcmQ6");
    c.send(&b64(PASSWORD.as_bytes())).await;
    let (_, ok) = c.imap_tagged("a1").await;
    assert!(ok.starts_with("a1 OK"), "{ok}");

    let (mut c, _) = connect(&env, "imap").await;
    c.write(
        format!(
            "a1 LOGIN {USER} {}\r\na2 SELECT INBOX\r\na3 NOOP\r\n",
            laminas_quote(PASSWORD)
        )
        .as_bytes(),
    )
    .await;
    for tag in ["a1", "a2", "a3"] {
        let (_, ok) = c.imap_tagged(tag).await;
        assert!(ok.starts_with(&format!("{tag} OK")), "{ok}");
    }
    assert_eq!(env.sandbox.mail_auth_attempts().imap_ok, 3);
}

/// The real Python imaplib (python3 is installed on CI): LOGIN (imaplib quotes the password,
/// escaping `"` and `\`) + SELECT + SEARCH + FETCH on the plaintext listener, and IMAP4_SSL
/// with AUTHENTICATE PLAIN on the implicit-TLS listener, verifying our certificate.
#[tokio::test]
async fn python_imaplib_login_select_fetch() {
    if python3("python_imaplib_login_select_fetch").is_none() {
        return;
    }
    let env = Env::start().await;
    env.sandbox.deliver(MAILBOX, MESSAGE.as_bytes());
    let script = r#"
import imaplib, os, ssl
host, user, pw = "127.0.0.1", os.environ["AB_USER"], os.environ["AB_PASS"]
m = imaplib.IMAP4(host, int(os.environ["AB_PORT"]))
typ, _ = m.login(user, pw)
print("login", typ)
typ, data = m.select("INBOX")
print("select", typ, data[0].decode())
typ, data = m.search(None, "ALL")
print("search", typ, data[0].decode())
typ, data = m.fetch("1", "(RFC822)")
print("fetch", typ, len(data[0][1]))
print([l for l in data[0][1].decode().splitlines() if l.startswith("Subject:")][0])
m.logout()
ctx = ssl.create_default_context(cafile=os.environ["AB_CA"])
s = imaplib.IMAP4_SSL(host, int(os.environ["AB_TLS_PORT"]), ssl_context=ctx)
print("tls caps", " ".join(s.capabilities))
typ, _ = s.authenticate("PLAIN", lambda _: ("\0%s\0%s" % (user, pw)).encode())
print("authenticate", typ)
typ, data = s.select("INBOX")
print("tls select", typ, data[0].decode())
s.logout()
"#;
    let out = run_python(
        script,
        &[
            ("AB_USER", USER.to_string()),
            ("AB_PASS", PASSWORD.to_string()),
            ("AB_PORT", env.addr("imap").port().to_string()),
            ("AB_TLS_PORT", env.addr("imaps").port().to_string()),
            (
                "AB_CA",
                env.dir.path().join("cert.pem").display().to_string(),
            ),
        ],
    )
    .await;
    for want in [
        "login OK",
        "select OK 1",
        "search OK 1",
        &format!("fetch OK {}", MESSAGE.len()),
        "Subject: rig check",
        "authenticate OK",
        "tls select OK 1",
    ] {
        assert!(out.contains(want), "{want:?} missing from:\n{out}");
    }
    assert!(out.contains("AUTH=PLAIN"), "{out}");
    assert_eq!(env.sandbox.mail_auth_attempts().imap_ok, 2);
}

/// A STARTTLS listener (laminas `/tls`, transcript imap-laminas-starttls-dovecot): before TLS it
/// offers STARTTLS and LOGINDISABLED and refuses LOGIN with `NO [PRIVACYREQUIRED]`; after
/// `TAG1 STARTTLS` and the handshake, LOGIN works and the upstream is reached over its own
/// STARTTLS port.
#[tokio::test]
async fn starttls_listener_refuses_login_before_tls_then_works() {
    let env = Env::start().await;
    let (mut c, greeting) = connect(&env, "imap-starttls").await;
    let caps = caps_of(&greeting);
    assert!(
        has(&caps, "STARTTLS") && has(&caps, "LOGINDISABLED"),
        "{greeting}"
    );
    assert!(!has(&caps, "AUTH=PLAIN"), "{greeting}");
    let (untagged, ok) = c.imap("a0", "CAPABILITY").await;
    assert!(ok.starts_with("a0 OK"), "{ok}");
    let caps = caps_of(&untagged[0]);
    assert!(
        has(&caps, "STARTTLS") && has(&caps, "LOGINDISABLED"),
        "{caps:?}"
    );
    let (_, no) = c
        .imap("a1", &format!("LOGIN {USER} {}", laminas_quote(PASSWORD)))
        .await;
    assert!(no.starts_with("a1 NO [PRIVACYREQUIRED]"), "{no}");
    c.send("a2 AUTHENTICATE PLAIN").await;
    let (_, no) = c.imap_tagged("a2").await;
    assert!(no.starts_with("a2 NO [PRIVACYREQUIRED]"), "{no}");
    let (_, ok) = c.imap("TAG1", "STARTTLS").await;
    assert!(ok.starts_with("TAG1 OK"), "{ok}");
    let mut c = c.start_tls(&env).await;
    let (_, bad) = c.imap("TAG1a", "STARTTLS").await;
    assert!(bad.starts_with("TAG1a BAD"), "a second STARTTLS: {bad}");
    let (untagged, ok) = c.imap("TAG2", "CAPABILITY").await;
    assert!(ok.starts_with("TAG2 OK"), "{ok}");
    let caps = caps_of(&untagged[0]);
    assert!(has(&caps, "AUTH=PLAIN"), "{caps:?}");
    assert!(
        !has(&caps, "STARTTLS") && !has(&caps, "LOGINDISABLED"),
        "{caps:?}"
    );
    let (_, ok) = c
        .imap(
            "TAG3",
            &format!("LOGIN \"{USER}\" {}", laminas_quote(PASSWORD)),
        )
        .await;
    assert!(ok.starts_with("TAG3 OK"), "{ok}");
    let (_, ok) = c.imap("TAG4", "SELECT \"INBOX\"").await;
    assert!(ok.starts_with("TAG4 OK"), "{ok}");
    assert_eq!(env.sandbox.mail_auth_attempts().imap_ok, 1);
}

/// Send a uniquely-subjected message through authbridge's SMTP listener to the mailbox, then
/// find, read, flag and expunge it through authbridge's IMAP listener.
#[tokio::test]
async fn smtp_to_imap_search_fetch_delete_expunge() {
    let env = Env::start().await;
    env.sandbox.deliver(MAILBOX, MESSAGE.as_bytes());
    let subject = unique_subject("imap-e2e");
    let r = smtp_send_to(env.addr("smtp"), MAILBOX, &subject, 3).await;
    assert!(r.starts_with("250"), "{r}");

    let (mut c, _) = connect(&env, "imap").await;
    login_and_select(&mut c).await;
    let (untagged, ok) = c.imap("a3", &format!("SEARCH SUBJECT \"{subject}\"")).await;
    assert!(ok.starts_with("a3 OK"), "{ok}");
    assert_eq!(untagged, vec!["* SEARCH 2".to_string()]);
    let (untagged, ok) = c.imap("a4", "FETCH 2 (BODY[])").await;
    assert!(ok.starts_with("a4 OK"), "{ok}");
    let body = &untagged[0];
    assert!(body.contains(&format!("Subject: {subject}\r\n")), "{body}");
    assert!(
        body.contains(&format!("line 00000002 of {subject}\r\n")),
        "{body}"
    );
    let (untagged, ok) = c.imap("a5", "STORE 2 +FLAGS (\\Deleted)").await;
    assert!(ok.starts_with("a5 OK"), "{ok}");
    assert!(
        untagged[0].starts_with("* 2 FETCH (FLAGS ("),
        "{untagged:?}"
    );
    assert!(untagged[0].contains("\\Deleted"), "{untagged:?}");
    let (untagged, ok) = c.imap("a6", "EXPUNGE").await;
    assert!(ok.starts_with("a6 OK"), "{ok}");
    assert_eq!(untagged, vec!["* 2 EXPUNGE".to_string()]);
    let (untagged, _) = c.imap("a7", &format!("SEARCH SUBJECT \"{subject}\"")).await;
    assert_eq!(untagged, vec!["* SEARCH".to_string()]);
    c.imap("a8", "LOGOUT").await;

    let left = env.sandbox.mailbox(MAILBOX);
    assert_eq!(left.len(), 1, "only the other message is left");
    assert!(!String::from_utf8_lossy(&left[0].raw).contains(&subject));
}

/// IDLE after login is the upstream's: a message delivered while idling is announced with
/// `* n EXISTS` through the pipe; DONE ends it with OK.
#[tokio::test]
async fn idle_sees_new_mail_through_the_pipe() {
    let env = Env::start().await;
    let (mut c, _) = connect(&env, "imap").await;
    login_and_select(&mut c).await;
    c.send("a3 IDLE").await;
    let cont = c.line().await.unwrap();
    assert!(cont.starts_with("+ "), "{cont}");
    env.sandbox.deliver(MAILBOX, MESSAGE.as_bytes());
    assert_eq!(c.line().await.unwrap(), "* 1 EXISTS");
    env.sandbox.deliver(MAILBOX, MESSAGE.as_bytes());
    assert_eq!(c.line().await.unwrap(), "* 2 EXISTS");
    c.send("DONE").await;
    let (_, ok) = c.imap_tagged("a3").await;
    assert!(ok.starts_with("a3 OK"), "{ok}");
}

const APPEND_SIZE: usize = 20 * 1024 * 1024;
const APPEND_HEADER: &[u8] = b"From: bulk@contoso.test\r\nSubject: twenty megabytes\r\n\r\n";

/// Write an APPEND literal of `APPEND_SIZE` bytes (header, then 64-byte lines) from one reused
/// 64 KiB buffer, calling `sample` after every MiB.
async fn write_append_literal<W: AsyncWrite + Unpin>(w: &mut W, mut sample: impl FnMut()) {
    let mut line = [b'x'; 64];
    line[62] = b'\r';
    line[63] = b'\n';
    let chunk = line.repeat(1024);
    w.write_all(APPEND_HEADER).await.unwrap();
    let mut left = APPEND_SIZE - APPEND_HEADER.len();
    let mut since_sample = 0;
    while left > 0 {
        let n = left.min(chunk.len());
        w.write_all(&chunk[..n]).await.unwrap();
        left -= n;
        since_sample += n;
        if since_sample >= 1024 * 1024 {
            since_sample = 0;
            sample();
        }
    }
    w.write_all(b"\r\n").await.unwrap();
    w.flush().await.unwrap();
}

/// A 20 MB APPEND literal after login streams through the pipe to the upstream intact.
#[tokio::test]
async fn append_20_megabytes_streams_through() {
    let env = Env::start().await;
    let (mut c, _) = connect(&env, "imap").await;
    login_and_select(&mut c).await;
    c.send(&format!("a3 APPEND INBOX (\\Seen) {{{APPEND_SIZE}}}"))
        .await;
    let cont = c.line().await.unwrap();
    assert!(cont.starts_with("+"), "{cont}");
    write_append_literal(c.io.get_mut(), || {}).await;
    let (_, ok) = c.imap_tagged("a3").await;
    assert!(ok.starts_with("a3 OK [APPENDUID "), "{ok}");
    let stored = env.sandbox.mailbox(MAILBOX);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].raw.len(), APPEND_SIZE);
    assert!(stored[0].raw.starts_with(APPEND_HEADER));
    assert!(stored[0].raw.ends_with(b"xx"));
}

/// A fake Exchange IMAP (implicit TLS with the harness's `cert.pem`) that accepts any
/// XOAUTH2 and throws APPEND literals away, counting their bytes. It keeps no message, so the
/// process's memory growth during an APPEND is authbridge's (and the test client's) alone.
async fn discard_upstream(env: &Env) -> (SocketAddr, Arc<AtomicU64>) {
    let config = authbridge::tls::server_config(
        &env.dir.path().join("cert.pem"),
        &env.dir.path().join("key.pem"),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counted = Arc::new(AtomicU64::new(0));
    let total = Arc::clone(&counted);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let total = Arc::clone(&total);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut io = BufReader::new(tls);
                let mut buf = vec![0u8; 64 * 1024];
                let caps = "IMAP4rev1 AUTH=XOAUTH2 SASL-IR IDLE LITERAL+";
                let greeting = format!("* OK [CAPABILITY {caps}] discard ready\r\n");
                if io.get_mut().write_all(greeting.as_bytes()).await.is_err() {
                    return;
                }
                loop {
                    let mut line = Vec::new();
                    match io.read_until(b'\n', &mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let text = String::from_utf8_lossy(&line).trim_end().to_string();
                    let tag = text.split(' ').next().unwrap_or("*").to_string();
                    let verb = text.split(' ').nth(1).unwrap_or("").to_ascii_uppercase();
                    let reply = if let Some(mut left) = imap_literal_len(text.as_bytes()) {
                        io.get_mut().write_all(b"+ go ahead\r\n").await.unwrap();
                        while left > 0 {
                            let n = left.min(buf.len());
                            let got = io.read(&mut buf[..n]).await.unwrap();
                            assert!(got > 0, "EOF inside the literal");
                            left -= got;
                            total.fetch_add(got as u64, Ordering::Relaxed);
                        }
                        let mut rest = Vec::new();
                        io.read_until(b'\n', &mut rest).await.unwrap();
                        format!("{tag} OK APPEND completed.\r\n")
                    } else if verb == "CAPABILITY" {
                        format!("* CAPABILITY {caps}\r\n{tag} OK CAPABILITY completed.\r\n")
                    } else if verb == "LOGOUT" {
                        format!("* BYE\r\n{tag} OK LOGOUT completed.\r\n")
                    } else {
                        format!("{tag} OK {verb} completed.\r\n")
                    };
                    if io.get_mut().write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, counted)
}

/// Memory: a 20 MB APPEND after login must stream, not be buffered. authbridge runs in this
/// process, so its memory is this process's: the test reads `VmRSS` from /proc/self/status
/// before the APPEND, resets the peak (`VmHWM`, via /proc/self/clear_refs) and samples `VmRSS`
/// after every MiB sent, and asserts the peak stays under 8 MiB above the start — well under the
/// 20 MiB message. The upstream is [`discard_upstream`] (the sandbox would keep the message in
/// this same process), and the test runs alone in a fresh process of this test binary so other
/// tests' allocations do not count.
#[test]
fn append_20_megabytes_does_not_grow_memory() {
    if run_isolated("append_20_megabytes_does_not_grow_memory", &[]) {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let env = Env::start().await;
        let (up, counted) = discard_upstream(&env).await;
        let mut env = env;
        env.stop_proxy().await;
        let yaml = std::fs::read_to_string(&env.config_path).unwrap();
        let upstream = format!(
            "{{ host: 127.0.0.1, port: {}, tls: implicit, server_name: localhost, ca_file: cert.pem }}",
            up.port()
        );
        std::fs::write(&env.config_path, with_upstream(yaml, "imap", &upstream)).unwrap();
        env.start_proxy().await;

        let (mut c, _) = connect(&env, "imap").await;
        login_and_select(&mut c).await;
        // Warm up the pipe and both TLS legs with a small APPEND first.
        c.send("a3 APPEND INBOX {5}").await;
        assert!(c.line().await.unwrap().starts_with("+"));
        c.send("hello").await;
        assert!(c.imap_tagged("a3").await.1.starts_with("a3 OK"));
        counted.store(0, Ordering::Relaxed);

        let before = proc_status_kib("VmRSS").expect("/proc/self/status has VmRSS");
        let peak_reset = reset_peak_rss();
        let mut sampled = before;
        c.send(&format!("a4 APPEND INBOX {{{APPEND_SIZE}}}")).await;
        assert!(c.line().await.unwrap().starts_with("+"));
        write_append_literal(c.io.get_mut(), || {
            sampled = sampled.max(proc_status_kib("VmRSS").unwrap_or(0));
        })
        .await;
        let (_, ok) = c.imap_tagged("a4").await;
        assert!(ok.starts_with("a4 OK"), "{ok}");
        assert_eq!(counted.load(Ordering::Relaxed), APPEND_SIZE as u64);
        let after = proc_status_kib("VmRSS").unwrap();
        let peak = if peak_reset {
            proc_status_kib("VmHWM").unwrap_or(0).max(sampled)
        } else {
            sampled.max(after)
        };
        let growth_kib = peak.saturating_sub(before);
        eprintln!(
            "RSS before {before} KiB, after {after} KiB, peak {peak} KiB (peak reset: {peak_reset}); growth {growth_kib} KiB for a {} KiB literal",
            APPEND_SIZE / 1024
        );
        assert!(
            growth_kib < 8 * 1024,
            "RSS grew by {growth_kib} KiB during a 20 MiB APPEND: the literal is being buffered"
        );
    });
}

/// A wrong password (or an unknown user) is refused locally with `NO [AUTHENTICATIONFAILED]`:
/// no token is fetched and nothing reaches the upstream. laminas then sends LOGOUT
/// (imap-laminas-special-password); c-client retries on a new connection with LOGIN atoms
/// (imap-c-client-wrong-password).
#[tokio::test]
async fn wrong_password_is_refused_locally() {
    let env = Env::start().await;
    let (mut c, _) = connect(&env, "imap").await;
    c.write(
        format!(
            "TAG1 LOGIN \"{USER}\" {}\r\n",
            laminas_quote("wr\"ong\\pass")
        )
        .as_bytes(),
    )
    .await;
    let (_, no) = c.imap_tagged("TAG1").await;
    assert!(no.starts_with("TAG1 NO [AUTHENTICATIONFAILED]"), "{no}");
    let (untagged, ok) = c.imap("TAG2", "LOGOUT").await;
    assert!(ok.starts_with("TAG2 OK"), "{ok}");
    assert!(untagged[0].starts_with("* BYE"), "{untagged:?}");

    let mut c = env.connect_tls("imaps").await;
    c.line().await.unwrap();
    c.send("00000000 AUTHENTICATE PLAIN").await;
    assert_eq!(c.raw_line().await, b"+ \r\n");
    c.send(&plain_blob(USER, "wrong")).await;
    let (_, no) = c.imap_tagged("00000000").await;
    assert!(no.starts_with("00000000 NO [AUTHENTICATIONFAILED]"), "{no}");
    // Unknown user: the same reply (no user enumeration).
    let (_, no2) = c.imap("00000001", "LOGIN nobody@contoso.test secret").await;
    assert_eq!(no2.replace("00000001", "00000000"), no);
    assert_eq!(env.sandbox.mail_auth_attempts().total(), 0);
    assert_eq!(env.sandbox.token_requests().total, 0);
}

/// The token endpoint failing before the first login: `NO [UNAVAILABLE]` within 8 s (a
/// temporary failure; GLPI retries), and the next login after recovery works.
#[tokio::test]
async fn token_endpoint_failure_gives_unavailable_in_time() {
    let env = Env::start().await;
    env.sandbox.inject(TokenFailure::Http500);
    let (mut c, _) = connect(&env, "imap").await;
    let t = Instant::now();
    let (_, no) = c
        .imap("a1", &format!("LOGIN {USER} {}", laminas_quote(PASSWORD)))
        .await;
    assert!(no.starts_with("a1 NO [UNAVAILABLE]"), "{no}");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert_eq!(env.sandbox.mail_auth_attempts().total(), 0);
    env.sandbox.clear_failures();
    // Failures are remembered for about a second; then the stored refresh token works.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, ok) = c
        .imap("a2", &format!("LOGIN {USER} {}", laminas_quote(PASSWORD)))
        .await;
    assert!(ok.starts_with("a2 OK"), "{ok}");
}

/// Upstream unreachable (a dead port): the greeting is still ours and immediate, CAPABILITY is
/// answered, and LOGIN gets `NO [UNAVAILABLE]` within 8 s.
#[tokio::test]
async fn upstream_down_gives_unavailable_in_time() {
    let port = dead_port();
    let env = Env::start_with_yaml(EnvOptions::default(), |_, yaml| {
        with_upstream(
            yaml,
            "imap",
            &format!("{{ host: 127.0.0.1, port: {port}, tls: implicit, server_name: localhost, ca_file: ca.pem }}"),
        )
    })
    .await;
    let t = Instant::now();
    let (mut c, greeting) = connect(&env, "imap").await;
    assert!(greeting.starts_with("* OK"), "{greeting}");
    let (_, ok) = c.imap("a0", "CAPABILITY").await;
    assert!(ok.starts_with("a0 OK"), "{ok}");
    let (_, no) = c
        .imap("a1", &format!("LOGIN {USER} {}", laminas_quote(PASSWORD)))
        .await;
    assert!(no.starts_with("a1 NO [UNAVAILABLE]"), "{no}");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
}

/// The upstream refuses authbridge's cached access token (here: every issued token is
/// expired at the fake Entra): authbridge refreshes once and retries, and the client only sees
/// its OK. Two token requests in all.
#[tokio::test]
async fn refused_access_token_is_refreshed_once_and_login_succeeds() {
    let env = Env::start().await;
    let (mut c, _) = connect(&env, "imap").await;
    login_and_select(&mut c).await;
    c.imap("a3", "LOGOUT").await;
    env.sandbox.expire_access_tokens();
    let (mut c, _) = connect(&env, "imap").await;
    let (_, ok) = c
        .imap("b1", &format!("LOGIN {USER} {}", laminas_quote(PASSWORD)))
        .await;
    assert!(ok.starts_with("b1 OK"), "{ok}");
    let (_, ok) = c.imap("b2", "SELECT INBOX").await;
    assert!(ok.starts_with("b2 OK"), "{ok}");
    assert_eq!(env.sandbox.token_requests().total, 2);
    let auth = env.sandbox.mail_auth_attempts();
    assert_eq!((auth.imap_ok, auth.imap_failed), (2, 1));
}

/// A literal of 4 GiB before login is refused with BAD before any `+`, and the session goes
/// on; a non-synchronising one cannot be skipped, so it ends the session.
#[tokio::test]
async fn huge_literal_is_refused_without_continuation() {
    let env = Env::start().await;
    let (mut c, _) = connect(&env, "imap").await;
    c.send(&format!("a1 LOGIN {USER} {{4294967295}}")).await;
    let reply = c.line().await.unwrap();
    assert!(reply.starts_with("a1 BAD"), "{reply}");
    let (_, ok) = c.imap("a2", "NOOP").await;
    assert!(ok.starts_with("a2 OK"), "{ok}");
    let (_, ok) = c
        .imap("a3", &format!("LOGIN {USER} {}", laminas_quote(PASSWORD)))
        .await;
    assert!(ok.starts_with("a3 OK"), "{ok}");

    let (mut c, _) = connect(&env, "imap").await;
    c.send(&format!("b1 LOGIN {USER} {{4294967295+}}")).await;
    let reply = c.line().await.unwrap();
    assert!(reply.starts_with("b1 BAD"), "{reply}");
    assert!(c.closed().await);
}

/// A 1 MB line before login: `* BAD` and `* BYE` as soon as the line cap is crossed, then the
/// close (the rest is not read); a fresh session works.
#[tokio::test]
async fn megabyte_line_is_answered_and_dropped() {
    let env = Env::start().await;
    let (mut c, _) = connect(&env, "imap").await;
    let mut line = b"a1 NOOP ".to_vec();
    line.resize(1024 * 1024, b'x');
    line.extend_from_slice(b"\r\n");
    // The server may close before it has all of it: write errors are expected.
    let _ = c.io.get_mut().write_all(&line).await;
    let reply = c.line().await.unwrap();
    assert!(
        reply.starts_with("* BAD") || reply.starts_with("a1 BAD"),
        "{reply}"
    );
    assert_eq!(
        c.line().await.as_deref(),
        Some("* BYE Line too long, closing connection")
    );
    assert!(c.closed().await);

    let (mut c, _) = connect(&env, "imap").await;
    login_and_select(&mut c).await;
}

/// 1,000 bad commands pipelined in one write: a few BADs, then `* BYE` and close — no hang,
/// no 1,000 replies, nothing upstream.
#[tokio::test]
async fn thousand_pipelined_bad_commands_get_bye_and_close() {
    let env = Env::start().await;
    let (mut c, _) = connect(&env, "imap").await;
    let mut burst = String::new();
    for i in 0..1000 {
        burst.push_str(&format!("x{i} FROBNICATE\r\n"));
    }
    c.write(burst.as_bytes()).await;
    let t = Instant::now();
    let mut lines = Vec::new();
    while let Some(l) = c.line().await {
        lines.push(l);
    }
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let bads = lines.iter().filter(|l| l.contains(" BAD ")).count();
    assert!((1..=20).contains(&bads), "{bads} BADs: {lines:?}");
    assert_eq!(lines.len(), bads + 1, "{lines:?}");
    assert!(lines.last().unwrap().starts_with("* BYE"), "{lines:?}");
    assert_eq!(env.sandbox.mail_auth_attempts().total(), 0);
    // The listener still serves others.
    let (mut c, _) = connect(&env, "imap").await;
    login_and_select(&mut c).await;
}

/// Commands that need a login are refused before it, not passed upstream; STARTTLS on the
/// plaintext listener (laminas `/tls` there, imap-laminas-starttls-on-plain-listener) is a BAD
/// and laminas's LOGOUT still works.
#[tokio::test]
async fn commands_before_login_are_refused() {
    let env = Env::start().await;
    let (mut c, _) = connect(&env, "imap").await;
    let (_, bad) = c.imap("a1", "SELECT INBOX").await;
    assert!(bad.starts_with("a1 BAD"), "{bad}");
    let (_, bad) = c.imap("a2", "FETCH 1 (FLAGS)").await;
    assert!(bad.starts_with("a2 BAD"), "{bad}");
    let (_, bad) = c.imap("TAG1", "STARTTLS").await;
    assert!(bad.starts_with("TAG1 BAD"), "{bad}");
    let (untagged, ok) = c.imap("TAG2", "LOGOUT").await;
    assert!(ok.starts_with("TAG2 OK"), "{ok}");
    assert!(untagged[0].starts_with("* BYE"), "{untagged:?}");
    assert!(c.closed().await);
    assert_eq!(env.sandbox.mail_auth_attempts().total(), 0);
    assert_eq!(env.sandbox.token_requests().total, 0);
}

/// Bytes pipelined after STARTTLS (in the same write, before the handshake) close the session:
/// nothing sent in plaintext after STARTTLS is trusted, and nothing reaches the upstream. The
/// test completes the TLS handshake if the server lets it: the pipelined LOGIN must not be
/// answered over TLS.
#[tokio::test]
async fn commands_pipelined_after_starttls_close_the_session() {
    let env = Env::start().await;
    let (mut c, _) = connect(&env, "imap-starttls").await;
    c.write(
        format!(
            "a1 STARTTLS\r\na2 LOGIN {USER} {}\r\n",
            laminas_quote(PASSWORD)
        )
        .as_bytes(),
    )
    .await;
    let ok = c.line().await.unwrap();
    assert!(ok.starts_with("a1 OK"), "{ok}");
    assert!(c.io.buffer().is_empty());
    nothing_runs_after_starttls(&env, c.io.get_mut())
        .await
        .unwrap();
    assert_eq!(env.sandbox.mail_auth_attempts().total(), 0);
    assert_eq!(env.sandbox.token_requests().total, 0);
}

/// The example config for GLPI (config/glpi.yaml) loads once its placeholders are filled in (as
/// shipped it is refused): its listeners are where its comments tell GLPI to connect, and its
/// login hash is of the documented example password.
///
/// The config reads the client secret from `$M365_CLIENT_SECRET` and the IMAPS certificate from
/// `../certs/` (what `authbridge gen-cert --out certs` writes). So the test runs alone in its
/// own process with that variable set (setting it here would race with other tests' threads),
/// and loads a copy of the file next to a freshly generated `certs/` folder.
#[test]
fn glpi_example_config_loads() {
    if run_isolated(
        "glpi_example_config_loads",
        &[("M365_CLIENT_SECRET", "example-secret-for-the-test")],
    ) {
        return;
    }
    use authbridge::config::{ClientTlsMode, Config, Protocol, UpstreamTls};
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::create_dir_all(dir.path().join("certs")).unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/glpi.yaml");
    let path = dir.path().join("config/glpi.yaml");
    // Its placeholders (client id, tenant, the published hash) are refused as shipped: fill them
    // in as the file's steps say.
    let shipped = std::fs::read_to_string(&source).unwrap();
    let shipped_hash = shipped
        .split('"')
        .find(|s| s.starts_with("$argon2id$"))
        .expect("a password hash in config/glpi.yaml")
        .to_owned();
    std::fs::copy(&source, &path).unwrap();
    let refused = Config::load(&path).map(|_| ()).unwrap_err().to_string();
    assert!(
        refused.contains("providers.m365.client_id") && refused.contains("placeholder"),
        "{refused}"
    );
    let own_hash = authbridge::auth::hash_password(b"glpi-example-password").unwrap();
    let filled = shipped
        .replace(
            "00000000-0000-0000-0000-000000000000",
            "0b5e7f1c-6c1e-4b0a-9a53-2f8d6c1e4b0a",
        )
        .replace("contoso.onmicrosoft.com", "fabrikam.onmicrosoft.com")
        .replace(&shipped_hash, &own_hash);
    std::fs::write(&path, filled).unwrap();
    let (cert, key) = authbridge::tls::self_signed_localhost().unwrap();
    std::fs::write(dir.path().join("certs/cert.pem"), cert).unwrap();
    std::fs::write(dir.path().join("certs/key.pem"), key.expose()).unwrap();
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => panic!("config/glpi.yaml does not load: {e}"),
    };
    let find = |name: &str| {
        config
            .listeners
            .iter()
            .find(|l| l.name == name)
            .unwrap_or_else(|| panic!("listener {name}"))
    };
    let expect = [
        (
            "smtp",
            Protocol::Smtp,
            "127.0.0.1:1587",
            ClientTlsMode::None,
            "smtp.office365.com",
            587,
            UpstreamTls::Starttls,
        ),
        (
            "imap",
            Protocol::Imap,
            "127.0.0.1:1143",
            ClientTlsMode::None,
            "outlook.office365.com",
            993,
            UpstreamTls::Implicit,
        ),
        (
            "imaps",
            Protocol::Imap,
            "127.0.0.1:1993",
            ClientTlsMode::Implicit,
            "outlook.office365.com",
            993,
            UpstreamTls::Implicit,
        ),
        (
            "pop3",
            Protocol::Pop3,
            "127.0.0.1:1110",
            ClientTlsMode::None,
            "outlook.office365.com",
            995,
            UpstreamTls::Implicit,
        ),
    ];
    assert_eq!(config.listeners.len(), expect.len());
    for (name, protocol, listen, tls, host, port, up_tls) in expect {
        let l = find(name);
        assert_eq!(l.protocol, protocol, "{name}");
        assert_eq!(l.listen.to_string(), listen, "{name}");
        assert_eq!(l.tls, tls, "{name}");
        assert_eq!(l.server_tls.is_some(), tls != ClientTlsMode::None, "{name}");
        assert_eq!(
            (l.upstream.host.as_str(), l.upstream.port),
            (host, port),
            "{name}"
        );
        assert_eq!(l.upstream.tls, up_tls, "{name}");
    }
    let account = config.account("tickets").expect("account tickets");
    assert_eq!(account.logins.len(), 1);
    assert_eq!(account.logins[0].username, "glpi");
    let provider = config.providers.values().next().unwrap();
    assert_eq!(
        provider.client_secret.as_ref().map(|s| s.expose().as_str()),
        Some("example-secret-for-the-test")
    );
    // The hash shipped is of the example password the file documents (and refused as such).
    assert_eq!(
        authbridge::config::example_password(&shipped_hash),
        Some("glpi-example-password"),
        "the documented example password does not match the hash in config/glpi.yaml"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let credentials = authbridge::auth::Credentials::new(&config.accounts);
    let verdict = rt.block_on(credentials.verify(
        "glpi",
        &authbridge::secret::SecretBytes::new(b"glpi-example-password".to_vec()),
    ));
    assert!(
        matches!(verdict, authbridge::auth::Verdict::Account(ref a) if a == "tickets"),
        "the login `glpi` does not map to account tickets"
    );
}
