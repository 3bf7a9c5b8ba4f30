//! Relay mode (DESIGN §2, issue 7): SMTP to a fake Exchange Online inbound connector without
//! upstream AUTH; local login or an allow-listed source; STARTTLS to the connector required; an
//! optional client certificate (full chain) for a certificate-based connector; `allowed_senders`
//! checked before anything goes upstream.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use sandbox::{Sandbox, SandboxOptions};
use tokio_util::sync::CancellationToken;

struct Relay {
    sandbox: Sandbox,
    _dir: tempfile::TempDir,
    running: authbridge::server::Running,
    _shutdown: CancellationToken,
}

struct RelayOptions {
    sandbox: SandboxOptions,
    /// Extra YAML lines for the relay listener (indented 4 spaces).
    listener: String,
    /// Present a client certificate for this name (`Some(true)`: with its chain).
    client_cert: Option<(&'static str, bool)>,
}

impl Default for RelayOptions {
    fn default() -> Self {
        RelayOptions {
            sandbox: SandboxOptions {
                connector_allowed_ips: vec![],
                ..Default::default()
            },
            listener: String::new(),
            client_cert: None,
        }
    }
}

async fn start(opts: RelayOptions) -> Relay {
    let sandbox = Sandbox::start(opts.sandbox).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    sandbox.write_ca(&dir.path().join("ca.pem")).unwrap();
    let mut cert_yaml = String::new();
    if let Some((name, with_chain)) = opts.client_cert {
        let cert = if with_chain {
            sandbox.issue_client_cert(name)
        } else {
            sandbox.issue_client_cert_without_chain(name)
        };
        std::fs::write(dir.path().join("client.pem"), &cert.chain_pem).unwrap();
        std::fs::write(dir.path().join("client.key"), &cert.key_pem).unwrap();
        cert_yaml = "    client_cert: client.pem\n    client_key: client.key\n".into();
    }
    let yaml = format!(
        r#"state_dir: ./state
providers:
  m365: {{ type: microsoft, tenant: contoso.onmicrosoft.com, client_id: x, token_url: "http://127.0.0.1:9/token" }}
accounts:
  - name: tickets
    provider: m365
    mailbox: {MAILBOX}
    logins:
      - {{ username: {USER}, password_hash: "{hash}" }}
listeners:
  - name: relay
    protocol: smtp
    mode: relay
    listen: 127.0.0.1:0
{extra}{cert_yaml}    upstream: {{ host: 127.0.0.1, port: {port}, tls: starttls, server_name: localhost, ca_file: ca.pem }}
"#,
        hash = password_hash(),
        extra = opts.listener,
        port = sandbox.connector_addr().port(),
    );
    let path = dir.path().join("relay.yaml");
    std::fs::write(&path, yaml).unwrap();
    let config = authbridge::config::Config::load(&path).unwrap();
    let shutdown = CancellationToken::new();
    let running = authbridge::start(config, shutdown.clone()).await.unwrap();
    Relay {
        sandbox,
        _dir: dir,
        running,
        _shutdown: shutdown,
    }
}

impl Relay {
    fn addr(&self) -> SocketAddr {
        self.running.addr("relay").unwrap()
    }
}

async fn login(c: &mut LineClient<tokio::net::TcpStream>) {
    assert!(c.code().await.starts_with("220"));
    let ehlo = {
        c.send("EHLO relay-test").await;
        c.reply().await
    };
    assert!(
        ehlo.iter().any(|l| l.ends_with("AUTH PLAIN LOGIN")),
        "{ehlo:?}"
    );
    assert!(
        !ehlo
            .iter()
            .any(|l| l.contains("PIPELINING") || l.contains("CHUNKING")),
        "{ehlo:?}"
    );
    assert!(
        ehlo.iter().any(|l| l.contains("SIZE")),
        "upstream extensions pass through: {ehlo:?}"
    );
    assert_eq!(c.cmd("AUTH LOGIN").await, "334 VXNlcm5hbWU6");
    assert_eq!(c.cmd(&b64(USER.as_bytes())).await, "334 UGFzc3dvcmQ6");
    assert_eq!(
        c.cmd(&b64(PASSWORD.as_bytes())).await,
        "235 2.7.0 Authentication successful"
    );
}

async fn send_message(
    c: &mut LineClient<tokio::net::TcpStream>,
    from: &str,
    subject: &str,
) -> String {
    let r = c.cmd(&format!("MAIL FROM:<{from}>")).await;
    if !r.starts_with("250") {
        return r;
    }
    let r = c.cmd("RCPT TO:<alerts@contoso.com>").await;
    if !r.starts_with("250") {
        return r;
    }
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.write(format!("From: {from}\r\nSubject: {subject}\r\n\r\n..dot line\r\nbody\r\n").as_bytes())
        .await;
    c.write(b".\r\n").await;
    c.code().await
}

/// PHPMailer-style session (AUTH LOGIN, one command at a time, DATA) with a local login; the
/// connector accepts because the certificate (full chain) carries the tenant domain.
#[tokio::test]
async fn login_then_relay_with_a_certificate_connector() {
    let r = start(RelayOptions {
        client_cert: Some(("contoso.com", true)),
        ..Default::default()
    })
    .await;
    let mut c = LineClient::connect(r.addr()).await;
    login(&mut c).await;
    let reply = send_message(&mut c, MAILBOX, "relay one").await;
    assert!(reply.starts_with("250"), "{reply}");
    // A second message on the same session is checked and relayed too.
    let reply = send_message(&mut c, MAILBOX, "relay two").await;
    assert!(reply.starts_with("250"), "{reply}");
    assert!(c.cmd("QUIT").await.starts_with("221"));
    let msgs = r.sandbox.messages();
    assert_eq!(msgs.len(), 2);
    assert!(
        msgs[0].text().contains("\r\n.dot line\r\n"),
        "body forwarded unchanged, unstuffed by the connector"
    );
    assert_eq!(msgs[0].auth_user, "", "no AUTH was sent upstream");
    assert_eq!(r.sandbox.mail_auth_attempts().total(), 0);
}

/// Without the chain the connector cannot verify the certificate: 550 5.7.64 reaches the client.
#[tokio::test]
async fn leaf_only_certificate_is_refused_by_the_connector() {
    let r = start(RelayOptions {
        client_cert: Some(("contoso.com", false)),
        ..Default::default()
    })
    .await;
    let mut c = LineClient::connect(r.addr()).await;
    login(&mut c).await;
    let reply = send_message(&mut c, MAILBOX, "no chain").await;
    assert!(reply.starts_with("550 5.7.64"), "{reply}");
    assert!(r.sandbox.messages().is_empty());
}

#[tokio::test]
async fn without_a_certificate_the_connector_refuses() {
    let r = start(RelayOptions::default()).await;
    let mut c = LineClient::connect(r.addr()).await;
    login(&mut c).await;
    let reply = send_message(&mut c, MAILBOX, "no cert").await;
    assert!(reply.starts_with("550 5.7.64"), "{reply}");
}

/// An allow-listed source may send without logging in (the connector allows our IP).
#[tokio::test]
async fn allow_listed_source_sends_without_login() {
    let r = start(RelayOptions {
        sandbox: SandboxOptions {
            connector_allowed_ips: vec!["127.0.0.1".parse().unwrap()],
            ..Default::default()
        },
        listener: "    require_login: false\n    allow_from: [127.0.0.0/8]\n".into(),
        ..Default::default()
    })
    .await;
    let mut c = LineClient::connect(r.addr()).await;
    assert!(c.code().await.starts_with("220"));
    assert!(c.cmd("EHLO app").await.starts_with("250"));
    let reply = send_message(&mut c, "app@contoso.com", "open relay for loopback").await;
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(r.sandbox.messages().len(), 1);
}

/// allow_from narrows who may connect; it never waives the login while `require_login` is true
/// (the default): a listed source still gets 530, and nothing reaches the connector.
#[tokio::test]
async fn allow_listed_source_still_logs_in_unless_require_login_is_false() {
    let r = start(RelayOptions {
        sandbox: SandboxOptions {
            connector_allowed_ips: vec!["127.0.0.1".parse().unwrap()],
            ..Default::default()
        },
        listener: "    allow_from: [127.0.0.0/8]\n".into(),
        ..Default::default()
    })
    .await;
    let mut c = LineClient::connect(r.addr()).await;
    assert!(c.code().await.starts_with("220"));
    let ehlo = {
        c.send("EHLO app").await;
        c.reply().await
    };
    assert!(
        ehlo.iter().any(|l| l.ends_with("AUTH PLAIN LOGIN")),
        "{ehlo:?}"
    );
    assert_eq!(
        c.cmd(&format!("MAIL FROM:<{MAILBOX}>")).await,
        "530 5.7.0 Authentication required"
    );
    assert_eq!(r.sandbox.connector_counters().connector_mail, 0);
    // After a local login the same source relays.
    let mut c = LineClient::connect(r.addr()).await;
    login(&mut c).await;
    let reply = send_message(&mut c, MAILBOX, "listed and logged in").await;
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(r.sandbox.messages().len(), 1);
}

/// A source outside allow_from is refused at connect (554 5.7.1), before any login and before
/// anything is opened toward the connector.
#[tokio::test]
async fn source_outside_allow_from_is_refused_at_connect() {
    let r = start(RelayOptions {
        listener: "    allow_from: [10.0.0.0/8]\n".into(),
        ..Default::default()
    })
    .await;
    let mut c = LineClient::connect(r.addr()).await;
    let greeting = c.line().await.unwrap_or_default();
    assert!(
        greeting.starts_with("554 5.7.1") && greeting.contains("allow_from"),
        "{greeting}"
    );
    assert_eq!(r.sandbox.connector_counters().connector_accepted, 0);
    assert_eq!(r.sandbox.connector_counters().connector_mail, 0);
}

/// A disallowed MAIL FROM is refused with 550 5.7.1 before any byte of it goes upstream.
#[tokio::test]
async fn disallowed_sender_is_refused_before_the_connector() {
    let r = start(RelayOptions {
        client_cert: Some(("contoso.com", true)),
        listener: "    allowed_senders: [tickets@contoso.com, \"@glpi.contoso.com\"]\n".into(),
        ..Default::default()
    })
    .await;
    let mut c = LineClient::connect(r.addr()).await;
    login(&mut c).await;
    let before = r.sandbox.connector_counters();
    let reply = c.cmd("MAIL FROM:<ceo@contoso.com>").await;
    assert!(reply.starts_with("550 5.7.1"), "{reply}");
    assert!(
        c.cmd("MAIL FROM:<>").await.starts_with("550 5.7.1"),
        "null sender refused with a list"
    );
    let after = r.sandbox.connector_counters();
    assert_eq!(
        before.connector_mail, after.connector_mail,
        "the refused MAIL never reached the connector"
    );
    assert!(
        send_message(&mut c, "Tickets@Contoso.com", "allowed")
            .await
            .starts_with("250")
    );
    assert!(
        send_message(&mut c, "noreply@glpi.contoso.com", "domain rule")
            .await
            .starts_with("250")
    );
    assert_eq!(r.sandbox.messages().len(), 2);
    assert_eq!(
        r.sandbox.connector_counters().connector_mail,
        after.connector_mail + 2,
        "the connector counts the MAIL commands it reads"
    );
}

/// Security issue item 2: a sender check that splits the verb at the first space and forwards
/// whatever it does not recognise lets a lenient connector (as the sandbox's is: white space
/// before the verb, TABs between words) take an unchecked MAIL. Only listed commands, rebuilt
/// from what was parsed, reach it; the connector's own MAIL count proves none of these did.
#[tokio::test]
async fn sender_check_bypass_forms_never_reach_the_connector() {
    let r = start(RelayOptions {
        client_cert: Some(("contoso.com", true)),
        listener: "    allowed_senders: [\"@contoso.com\"]\n".into(),
        ..Default::default()
    })
    .await;
    let mut c = LineClient::connect(r.addr()).await;
    login(&mut c).await;
    let before = r.sandbox.connector_counters();
    // Nine invalid commands: one fewer than bad_commands_max would close the session.
    for (line, want) in [
        (" MAIL FROM:<ceo@evil.example>", "500 5.5.1"),
        ("MAIL\tFROM:<ceo@evil.example>", "500 5.5.2"),
        (
            "MAIL FROM:<\"tickets@contoso.com>\"@evil.example>",
            "550 5.7.1",
        ),
        ("MAIL FROM:<@contoso.com:ceo@evil.example>", "550 5.7.1"),
        (
            "MAIL FROM:<tickets@contoso.com> AUTH=ceo@contoso.com",
            "555 5.5.4",
        ),
        (
            "XCLIENT ADDR=192.0.2.1 NAME=trusted.contoso.com",
            "502 5.5.1",
        ),
        ("XFORWARD HELO=trusted.contoso.com", "502 5.5.1"),
        ("VRFY ceo", "502 5.5.1"),
        ("ETRN contoso.com", "502 5.5.1"),
        ("EXPN staff", "502 5.5.1"),
        ("BDAT 10 LAST", "502 5.5.1"),
        ("AUTH PLAIN AGEAYg==", "503 5.5.1"),
    ] {
        let reply = c.cmd(line).await;
        assert!(reply.starts_with(want), "{line:?}: {reply}");
    }
    assert_eq!(
        r.sandbox.connector_counters().connector_mail,
        before.connector_mail,
        "no MAIL reached the connector"
    );
    // The session goes on, and a listed sender still goes through.
    let reply = send_message(&mut c, "Tickets@Contoso.com", "after the bypass attempts").await;
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(
        r.sandbox.connector_counters().connector_mail,
        before.connector_mail + 1
    );
    let msgs = r.sandbox.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].from, "Tickets@Contoso.com");
}

/// Security issue item 1, SMTP smuggling (CVE-2023-51764 class): the sandbox connector, like
/// Postfix ≤ 3.8.4 with its defaults, takes a bare LF for a line end, so `\n.\r\n` or `\n.\n`
/// inside a body would end the message there and the rest would run as a second transaction
/// whose sender nobody checked. The relay refuses the body (550 5.6.11 after the client's
/// `CRLF.CRLF`), drops the connector connection so the unfinished DATA is never delivered, and
/// the session goes on (RSET, then a clean message over a new connection).
#[tokio::test]
async fn smuggled_message_behind_a_bare_lf_never_reaches_the_connector() {
    for ending in ["\n.\r\n", "\n.\n"] {
        let r = start(RelayOptions {
            client_cert: Some(("contoso.com", true)),
            listener: "    allowed_senders: [tickets@contoso.com]\n".into(),
            ..Default::default()
        })
        .await;
        let mut c = LineClient::connect(r.addr()).await;
        login(&mut c).await;
        assert!(
            c.cmd(&format!("MAIL FROM:<{MAILBOX}>"))
                .await
                .starts_with("250")
        );
        assert!(
            c.cmd("RCPT TO:<alerts@contoso.com>")
                .await
                .starts_with("250")
        );
        assert!(c.cmd("DATA").await.starts_with("354"));
        c.write(
            format!(
                "From: {MAILBOX}\r\nSubject: carrier\r\n\r\nhello{ending}MAIL FROM:<ceo@evil.example>\r\nRCPT TO:<alerts@contoso.com>\r\nDATA\r\nFrom: ceo@evil.example\r\nSubject: smuggled\r\n\r\nforged\r\n.\r\n"
            )
            .as_bytes(),
        )
        .await;
        let reply = c.code().await;
        assert!(
            reply.starts_with("550 5.6.11") && reply.contains("bare LF"),
            "{ending:?}: {reply}"
        );
        let counters = r.sandbox.connector_counters();
        assert_eq!(
            counters.connector_mail, 1,
            "{ending:?}: only the checked MAIL reached the connector"
        );
        assert!(
            r.sandbox.messages().is_empty(),
            "{ending:?}: neither the carrier nor the smuggled message was delivered"
        );
        // The session goes on.
        assert!(c.cmd("RSET").await.starts_with("250"), "{ending:?}");
        let reply = send_message(&mut c, MAILBOX, "after the refused body").await;
        assert!(reply.starts_with("250"), "{ending:?}: {reply}");
        assert!(c.cmd("QUIT").await.starts_with("221"));
        let msgs = r.sandbox.messages();
        assert_eq!(msgs.len(), 1, "{ending:?}");
        assert!(msgs[0].text().contains("Subject: after the refused body"));
        let counters = r.sandbox.connector_counters();
        assert_eq!(counters.connector_mail, 2, "{ending:?}");
        assert_eq!(
            counters.connector_connections, 2,
            "{ending:?}: a new connector connection after the dropped one"
        );
    }
}

/// A bare CR is refused the same way (some receivers take it for a line end too).
#[tokio::test]
async fn body_with_a_bare_cr_is_refused() {
    let r = start(RelayOptions {
        client_cert: Some(("contoso.com", true)),
        ..Default::default()
    })
    .await;
    let mut c = LineClient::connect(r.addr()).await;
    login(&mut c).await;
    assert!(
        c.cmd(&format!("MAIL FROM:<{MAILBOX}>"))
            .await
            .starts_with("250")
    );
    assert!(
        c.cmd("RCPT TO:<alerts@contoso.com>")
            .await
            .starts_with("250")
    );
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.write(b"Subject: cr\r\n\r\nhello\r.\rMAIL FROM:<ceo@evil.example>\r\n.\r\n")
        .await;
    let reply = c.code().await;
    assert!(
        reply.starts_with("550 5.6.11") && reply.contains("bare CR"),
        "{reply}"
    );
    assert!(r.sandbox.messages().is_empty());
    assert!(
        send_message(&mut c, MAILBOX, "clean")
            .await
            .starts_with("250")
    );
    assert_eq!(r.sandbox.messages().len(), 1);
}

/// A connector without STARTTLS: the login gets a 4xx and nothing is sent.
#[tokio::test]
async fn connector_without_starttls_gives_4xx_and_nothing_is_sent() {
    let r = start(RelayOptions {
        sandbox: SandboxOptions {
            connector_starttls: false,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut c = LineClient::connect(r.addr()).await;
    assert!(c.code().await.starts_with("220"));
    assert!(c.cmd("EHLO app").await.starts_with("250"));
    c.send("AUTH LOGIN").await;
    c.code().await;
    c.send(&b64(USER.as_bytes())).await;
    c.code().await;
    let reply = tokio::time::timeout(Duration::from_secs(10), c.cmd(&b64(PASSWORD.as_bytes())))
        .await
        .unwrap();
    assert!(
        reply.starts_with("454 4.7.0") && reply.contains("STARTTLS"),
        "{reply}"
    );
    assert!(r.sandbox.messages().is_empty());
    assert_eq!(r.sandbox.connector_counters().connector_mail, 0);
}

#[test]
fn relay_config_is_validated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    let write = |listener: &str| {
        std::fs::write(
            &path,
            format!(
                "listeners:\n  - name: r\n    protocol: smtp\n    listen: 127.0.0.1:1\n{listener}    upstream: {{ host: h.example, port: 25, tls: starttls }}\n"
            ),
        )
        .unwrap();
        authbridge::config::Config::load(&path)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let e = write("    mode: relay\n    require_login: false\n").unwrap_err();
    assert!(
        e.contains("listeners[0].require_login") && e.contains("open relay"),
        "{e}"
    );
    let e = write("    allow_from: [127.0.0.1/32]\n").unwrap_err();
    assert!(
        e.contains("listeners[0].allow_from") && e.contains("mode: relay"),
        "{e}"
    );
    let e = write("    mode: relay\n    allowed_senders: [nobody]\n").unwrap_err();
    assert!(e.contains("allowed_senders[0]"), "{e}");
    let e = write("    mode: relay\n    client_cert: x.pem\n").unwrap_err();
    assert!(e.contains("client_key"), "{e}");
    let e = write(
        "    mode: relay\n    require_login: false\n    allow_from: [10.0.0.0/8, 0.0.0.0/0]\n",
    )
    .unwrap_err();
    assert!(
        e.contains("listeners[0].allow_from[1]") && e.contains("open relay"),
        "{e}"
    );
    let e = write("    mode: relay\n    require_login: false\n    allow_from: [\"::/0\"]\n")
        .unwrap_err();
    assert!(e.contains("listeners[0].allow_from[0]"), "{e}");
    write("    mode: relay\n    require_login: false\n    allow_from: [192.0.2.0/24]\n    allowed_senders: [\"@contoso.com\"]\n").unwrap();
}
