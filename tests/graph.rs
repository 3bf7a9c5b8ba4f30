//! SMTP listeners that send through Microsoft Graph `sendMail` (`upstream: { type: graph }`,
//! issue 18): the real server against the sandbox's Graph stand-in over loopback — delivery read
//! back over IMAP, envelope-only recipients as Bcc, 8-bit bodies, the size limit before and
//! after DATA, Graph's throttling and refusals as SMTP replies, per-audience tokens, and no
//! secret in the logs.

mod common;

use std::net::SocketAddr;

use common::*;
use sandbox::{GraphFailure, Sandbox, SandboxOptions};
use tokio_util::sync::CancellationToken;

/// The largest MIME message Graph takes (the base64 of it is Graph's 4 MB request limit).
const LIMIT: usize = 3 * 1024 * 1024;

struct Graph {
    sandbox: Sandbox,
    dir: tempfile::TempDir,
    running: authbridge::server::Running,
    _shutdown: CancellationToken,
}

#[derive(Clone, Copy, PartialEq)]
enum Flow {
    Delegated,
    AppOnly,
}

/// A sandbox and authbridge with a Graph listener `graph` and a mail SMTP listener `smtp` for
/// the account `tickets`. `prepare` runs on the sandbox before anything starts.
async fn start(flow: Flow, prepare: impl FnOnce(&Sandbox)) -> Graph {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    sandbox.write_ca(&dir.path().join("ca.pem")).unwrap();
    sandbox.add_client(CLIENT_ID, CLIENT_SECRET, &[MAILBOX]);
    if flow == Flow::AppOnly {
        sandbox.set_app_roles(CLIENT_ID, &["Mail.Send", "SMTP.SendAsApp"]);
    }
    prepare(&sandbox);
    std::fs::write(dir.path().join("client_secret"), CLIENT_SECRET).unwrap();
    let yaml = format!(
        r#"state_dir: ./state
{tickets}listeners:
  - name: graph
    protocol: smtp
    listen: 127.0.0.1:0
    upstream: {{ type: graph, endpoint: "{graph}", ca_file: ca.pem }}
  - name: smtp
    protocol: smtp
    listen: 127.0.0.1:0
    upstream: {{ host: 127.0.0.1, port: {smtp_port}, tls: starttls, server_name: localhost, ca_file: ca.pem }}
"#,
        tickets = tickets_yaml(
            sandbox.tenant(),
            match flow {
                Flow::Delegated => "authorization_code",
                Flow::AppOnly => "client_credentials",
            },
            &sandbox.token_url()
        ),
        graph = sandbox.graph_url(),
        smtp_port = sandbox.smtp_addr().port(),
    );
    let path = dir.path().join("authbridge.yaml");
    std::fs::write(&path, yaml).unwrap();
    let config = authbridge::config::Config::load(&path).unwrap();
    if flow == Flow::Delegated {
        let rt = sandbox.issue_refresh_token(CLIENT_ID, MAILBOX);
        authbridge::server::token_store(&config)
            .unwrap()
            .save("tickets", &rt.into())
            .unwrap();
    }
    let shutdown = CancellationToken::new();
    let running = authbridge::start(config, shutdown.clone()).await.unwrap();
    Graph {
        sandbox,
        dir,
        running,
        _shutdown: shutdown,
    }
}

impl Graph {
    fn addr(&self) -> SocketAddr {
        self.running.addr("graph").unwrap()
    }
}

type Client = LineClient<tokio::net::TcpStream>;

/// Connect, EHLO (checked), AUTH LOGIN; returns the AUTH reply.
async fn login(addr: SocketAddr) -> (Client, String) {
    let mut c = LineClient::connect(addr).await;
    assert!(c.code().await.starts_with("220"));
    c.send("EHLO graph-test").await;
    let ehlo = c.reply().await;
    assert!(
        ehlo.iter().any(|l| l.ends_with(&format!("SIZE {LIMIT}"))),
        "an honest SIZE: {ehlo:?}"
    );
    assert!(ehlo.iter().any(|l| l.ends_with("8BITMIME")), "{ehlo:?}");
    assert!(
        ehlo.iter().any(|l| l.ends_with("AUTH PLAIN LOGIN")),
        "{ehlo:?}"
    );
    assert_eq!(c.cmd("AUTH LOGIN").await, "334 VXNlcm5hbWU6");
    assert_eq!(c.cmd(&b64(USER.as_bytes())).await, "334 UGFzc3dvcmQ6");
    let r = c.cmd(&b64(PASSWORD.as_bytes())).await;
    (c, r)
}

async fn logged_in(addr: SocketAddr) -> Client {
    let (c, r) = login(addr).await;
    assert!(r.starts_with("235 "), "{r}");
    c
}

/// MAIL, RCPTs, DATA with `message` (lines without CRLF are joined with CRLF and dot-stuffed);
/// returns the reply to the end of DATA.
async fn send(c: &mut Client, rcpts: &[&str], message: &[u8]) -> String {
    assert!(
        c.cmd(&format!("MAIL FROM:<{MAILBOX}>"))
            .await
            .starts_with("250")
    );
    for r in rcpts {
        let reply = c.cmd(&format!("RCPT TO:<{r}>")).await;
        assert!(reply.starts_with("250"), "{reply}");
    }
    assert!(c.cmd("DATA").await.starts_with("354"));
    let mut data = Vec::with_capacity(message.len() + 1024);
    for line in message.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first() == Some(&b'.') {
            data.push(b'.');
        }
        data.extend_from_slice(line);
        data.extend_from_slice(b"\r\n");
    }
    data.extend_from_slice(b".\r\n");
    c.write(&data).await;
    c.code().await
}

fn simple(subject: &str) -> Vec<u8> {
    format!("From: {MAILBOX}\nTo: to@contoso.com\nSubject: {subject}\n\nhello\n").into_bytes()
}

/// Read every message of `mailbox` straight from the sandbox's IMAP server (XOAUTH2 with the
/// mailbox's own token), as a recipient's mail client would.
async fn imap_read_all(sb: &Sandbox, mailbox: &str) -> Vec<Vec<u8>> {
    let tcp = tokio::net::TcpStream::connect(sb.imap_addr())
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(sb.client_config())
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let mut c = LineClient::new(tls);
    c.line().await.unwrap();
    let token = sb.issue_access_token(CLIENT_ID, mailbox);
    let blob = b64(format!("user={mailbox}\x01auth=Bearer {token}\x01\x01").as_bytes());
    let (_, done) = c.imap("a", &format!("AUTHENTICATE XOAUTH2 {blob}")).await;
    assert!(done.starts_with("a OK"), "{done}");
    let (untagged, done) = c.imap("b", "SELECT INBOX").await;
    assert!(done.starts_with("b OK"), "{done}");
    let exists = untagged
        .iter()
        .find_map(|l| {
            l.strip_suffix(" EXISTS")?
                .strip_prefix("* ")?
                .parse::<usize>()
                .ok()
        })
        .unwrap_or(0);
    let mut out = Vec::new();
    for i in 1..=exists {
        c.send(&format!("f{i} FETCH {i} BODY.PEEK[]")).await;
        let first = c.raw_line().await;
        let first = first.trim_ascii_end();
        let n = imap_literal_len(first).unwrap_or_else(|| panic!("a literal: {}", text(first)));
        out.push(c.read_n(n).await);
        let (_, done) = c.imap_tagged(&format!("f{i}")).await;
        assert!(done.contains("OK"), "{done}");
    }
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn delegated_send_reaches_to_and_bcc_only_recipients_with_8bit_intact() {
    let g = start(Flow::Delegated, |_| {}).await;
    let mut c = logged_in(g.addr()).await;
    let subject = unique_subject("graph-bcc");
    let message = format!(
        "From: GLPI <{MAILBOX}>\nTo: \"Doe, Jane\" <to@contoso.com>\nSubject: {subject}\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nGrüße aus Köln — ünïcödé\n.a line that starts with a dot\n"
    );
    let r = send(
        &mut c,
        &["to@contoso.com", "Hidden@Contoso.com"],
        message.as_bytes(),
    )
    .await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    assert_eq!(c.cmd("QUIT").await, "221 2.0.0 Bye");

    let to = imap_read_all(&g.sandbox, "to@contoso.com").await;
    assert_eq!(to.len(), 1);
    let to = &to[0];
    assert!(text(to).contains(&subject));
    assert!(
        !text(to).to_ascii_lowercase().contains("bcc:") && !text(to).contains("Hidden"),
        "the To recipient must not see the Bcc: {}",
        text(to)
    );
    let body = "Grüße aus Köln — ünïcödé\r\n.a line that starts with a dot\r\n";
    assert!(
        to.windows(body.len()).any(|w| w == body.as_bytes()),
        "8-bit body and unstuffed dot line intact: {}",
        text(to)
    );
    let hidden = imap_read_all(&g.sandbox, "hidden@contoso.com").await;
    assert_eq!(hidden.len(), 1, "the envelope-only recipient got it");
    assert!(text(&hidden[0]).contains(&subject));
    assert!(!text(&hidden[0]).to_ascii_lowercase().contains("bcc:"));
    assert_eq!(g.sandbox.graph_counters().accepted, 1);
}

#[tokio::test]
async fn size_limit_before_data_and_after_data_and_near_the_limit() {
    let g = start(Flow::AppOnly, |_| {}).await;
    let mut c = logged_in(g.addr()).await;
    let over = c
        .cmd(&format!("MAIL FROM:<{MAILBOX}> SIZE={}", LIMIT + 1))
        .await;
    assert!(over.starts_with("552 5.3.4"), "{over}");
    assert_eq!(g.sandbox.graph_counters().requests, 0);

    // Just under the limit: goes through.
    let head = b"From: tickets@contoso.com\r\nTo: to@contoso.com\r\nSubject: big\r\n\r\n";
    let line = [b'x'; 998];
    let mut big = head.to_vec();
    while big.len() + 1000 + 1000 < LIMIT {
        big.extend_from_slice(&line);
        big.extend_from_slice(b"\r\n");
    }
    let r = send(&mut c, &["to@contoso.com"], &big).await;
    assert!(r.starts_with("250 "), "{r}");
    // Over it, without SIZE=: refused after DATA, nothing posted, the session goes on.
    while big.len() <= LIMIT {
        big.extend_from_slice(&line);
        big.extend_from_slice(b"\r\n");
    }
    let r = send(&mut c, &["to@contoso.com"], &big).await;
    assert!(r.starts_with("552 5.3.4"), "{r}");
    assert_eq!(g.sandbox.graph_counters().requests, 1);
    assert_eq!(c.cmd("NOOP").await, "250 2.0.0 OK");
    let r = send(&mut c, &["to@contoso.com"], &simple("after")).await;
    assert!(r.starts_with("250 "), "{r}");
}

#[tokio::test]
async fn throttling_and_outages_are_temporary_and_the_retry_goes_through() {
    let g = start(Flow::AppOnly, |_| {}).await;
    let mut c = logged_in(g.addr()).await;
    g.sandbox.set_graph_failure(
        Some(GraphFailure::Throttle429 {
            retry_after_secs: 7,
        }),
        Some(1),
    );
    let r = send(&mut c, &["to@contoso.com"], &simple("throttled")).await;
    assert!(
        r.starts_with("451 4.7.0") && r.contains("retry after 7 seconds"),
        "{r}"
    );
    let r = send(&mut c, &["to@contoso.com"], &simple("retried")).await;
    assert!(r.starts_with("250 "), "{r}");
    g.sandbox
        .set_graph_failure(Some(GraphFailure::Unavailable503), Some(1));
    let r = send(&mut c, &["to@contoso.com"], &simple("outage")).await;
    assert!(r.starts_with("451 4.4.1"), "{r}");
    let delivered = g.sandbox.mailbox("to@contoso.com");
    assert_eq!(delivered.len(), 1, "only the retried message was delivered");
}

#[tokio::test]
async fn refusals_are_permanent_with_graph_code_and_hint() {
    let g = start(Flow::AppOnly, |sb| {
        sb.set_graph_mailbox_exists(MAILBOX, true);
    })
    .await;
    let mut c = logged_in(g.addr()).await;
    g.sandbox
        .set_graph_failure(Some(GraphFailure::SendAsDenied), Some(1));
    let r = send(&mut c, &["to@contoso.com"], &simple("sendas")).await;
    assert!(
        r.starts_with("550 5.7.60") && r.contains("ErrorSendAsDenied") && r.contains("SendAs"),
        "{r}"
    );
    // The same, from the permission model: an Application Access Policy without this mailbox.
    g.sandbox
        .set_application_access_policy(CLIENT_ID, Some(&["other@contoso.com"]));
    let r = send(&mut c, &["to@contoso.com"], &simple("policy")).await;
    assert!(r.contains("ErrorSendAsDenied"), "{r}");
    g.sandbox.set_application_access_policy(CLIENT_ID, None);
    g.sandbox.set_graph_mailbox_exists(MAILBOX, false);
    let r = send(&mut c, &["to@contoso.com"], &simple("gone")).await;
    assert!(
        r.starts_with("550 5.1.1") && r.contains("ErrorInvalidUser"),
        "{r}"
    );
    assert!(g.sandbox.mailbox("to@contoso.com").is_empty());
}

#[tokio::test]
async fn an_app_without_mail_send_gets_a_permanent_refusal_with_the_fix() {
    let g = start(Flow::AppOnly, |sb| {
        sb.set_app_roles(CLIENT_ID, &["SMTP.SendAsApp"]);
    })
    .await;
    let mut c = logged_in(g.addr()).await;
    let r = send(&mut c, &["to@contoso.com"], &simple("no-role")).await;
    assert!(
        r.starts_with("550 5.7.1") && r.contains("ErrorAccessDenied") && r.contains("Mail.Send"),
        "{r}"
    );
}

/// The mail listener and the Graph listener of one account each get a token for their own
/// audience (cached per account and scopes): Graph never sees an Exchange token, Exchange never
/// a Graph one.
#[tokio::test]
async fn each_listener_gets_its_own_audience_and_graph_never_sees_a_wrong_one() {
    let g = start(Flow::Delegated, |_| {}).await;
    let mut c = logged_in(g.addr()).await;
    let r = send(&mut c, &["to@contoso.com"], &simple("graph-first")).await;
    assert!(r.starts_with("250 "), "{r}");
    let r = smtp_send(g.running.addr("smtp").unwrap(), "mail-listener", 1).await;
    assert!(r.starts_with("250"), "{r}");
    let r = send(&mut c, &["to@contoso.com"], &simple("graph-again")).await;
    assert!(r.starts_with("250 "), "{r}");
    let counters = g.sandbox.graph_counters();
    assert_eq!(
        (counters.accepted, counters.refused),
        (2, 0),
        "{counters:?}"
    );
    let auth = g.sandbox.mail_auth_attempts();
    assert_eq!(auth.smtp_failed, 0, "{auth:?}");
    // Two audiences, two refreshes: one each, then both cached.
    assert_eq!(g.sandbox.token_requests().refresh_token, 2);
}

#[tokio::test]
async fn a_token_that_cannot_be_had_is_a_temporary_failure_at_auth() {
    let g = start(Flow::Delegated, |sb| {
        sb.inject(sandbox::TokenFailure::InvalidGrant70008);
    })
    .await;
    let (mut c, r) = login(g.addr()).await;
    assert!(r.starts_with("454 4.7.0"), "{r}");
    assert!(
        c.cmd(&format!("MAIL FROM:<{MAILBOX}>"))
            .await
            .starts_with("530")
    );
    assert_eq!(g.sandbox.graph_counters().requests, 0);
}

#[tokio::test]
async fn graph_is_refused_on_imap_pop3_and_relay_listeners() {
    let dir = tempfile::tempdir().unwrap();
    for (listener, why) in [
        ("protocol: imap", "SMTP listeners"),
        ("protocol: pop3", "SMTP listeners"),
        ("protocol: smtp\n    mode: relay", "auth-mode"),
    ] {
        let yaml = format!(
            "listeners:\n  - name: l\n    {listener}\n    listen: 127.0.0.1:0\n    upstream: {{ type: graph }}\n"
        );
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, yaml).unwrap();
        let e = authbridge::config::Config::load(&path)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("listeners[0].upstream.type") && e.contains(why),
            "{e}"
        );
    }
    let yaml = "listeners:\n  - name: l\n    protocol: smtp\n    listen: 127.0.0.1:0\n    upstream: { type: graph, host: x }\n";
    std::fs::write(dir.path().join("c.yaml"), yaml).unwrap();
    let e = authbridge::config::Config::load(&dir.path().join("c.yaml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("upstream.host"), "{e}");
    // A provider password belongs to relay listeners; Graph sends with tokens only.
    let yaml = "listeners:\n  - name: l\n    protocol: smtp\n    listen: 127.0.0.1:0\n    upstream: { type: graph, auth: { username: u, password: p } }\n";
    std::fs::write(dir.path().join("c.yaml"), yaml).unwrap();
    let e = authbridge::config::Config::load(&dir.path().join("c.yaml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("upstream.auth"), "{e}");
}

/// At trace level, nothing of a Graph session — the local password, the access token, the
/// client secret, the refresh token, the message body — reaches the log; the message's one log
/// line names Graph's request id.
#[test]
fn graph_sessions_log_no_secret_at_trace_level() {
    if run_isolated("graph_sessions_log_no_secret_at_trace_level", &[]) {
        return;
    }
    let logs = log_capture();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let g = start(Flow::Delegated, |_| {}).await;
        let mut c = logged_in(g.addr()).await;
        let body_secret = "body-marker-Zx81q";
        let message = format!("From: {MAILBOX}\nTo: to@contoso.com\nSubject: s\n\n{body_secret}\n");
        let r = send(
            &mut c,
            &["to@contoso.com", "bcc@contoso.com"],
            message.as_bytes(),
        )
        .await;
        assert!(r.starts_with("250 "), "{r}");
        g.sandbox
            .set_graph_failure(Some(GraphFailure::SendAsDenied), Some(1));
        let r = send(&mut c, &["to@contoso.com"], message.as_bytes()).await;
        assert!(r.starts_with("550 "), "{r}");
        let text = logs.text();
        assert!(
            text.contains("graph: message accepted by Microsoft Graph")
                && text.contains("request_id"),
            "one line per message with the request id"
        );
        let stored = std::fs::read_dir(g.dir.path().join("state")).is_ok();
        assert!(stored);
        assert_no_secrets(
            &text,
            &[
                PASSWORD.to_string(),
                b64(PASSWORD.as_bytes()),
                CLIENT_SECRET.to_string(),
                body_secret.to_string(),
            ],
        );
    });
}

/// `authbridge check --json` on a Graph listener: the Graph token's audience and Mail.Send are
/// checked (nothing is sent); without Mail.Send it fails and says how to fix it.
#[tokio::test(flavor = "multi_thread")]
async fn check_reports_the_graph_token_and_a_missing_mail_send() {
    for (roles, ok) in [
        (&["Mail.Send", "SMTP.SendAsApp"][..], true),
        (&["SMTP.SendAsApp"][..], false),
    ] {
        let g = start(Flow::AppOnly, |sb| sb.set_app_roles(CLIENT_ID, roles)).await;
        let config = g.dir.path().join("authbridge.yaml");
        let report = common::check_json(config).await;
        let graph = report["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == "graph")
            .unwrap_or_else(|| panic!("{report}"))
            .clone();
        assert_eq!(graph["mode"], "graph", "{graph}");
        assert_eq!(graph["ok"], ok, "{graph}");
        let text = graph.to_string();
        if ok {
            assert!(text.contains("Mail.Send"), "{text}");
        } else {
            assert!(text.contains("admin consent"), "{text}");
        }
        assert_eq!(
            g.sandbox.graph_counters().requests,
            0,
            "check sends nothing"
        );
    }
}
