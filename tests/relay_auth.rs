//! Relay mode towards a transactional provider (Amazon SES, Postmark): the relay listener logs
//! in to its upstream with `upstream.auth` (AUTH PLAIN or LOGIN, after STARTTLS), against the
//! sandbox's connector playing such a provider. The credentials' refusal reaches the client as
//! a temporary 4xx (its message stays queued), a mechanism the provider does not offer is never
//! tried, `allowed_senders` and the DATA checks stay in force, and neither the password nor the
//! user name (Postmark's is an API token) is ever logged, at trace level either.

mod common;

use std::net::SocketAddr;

use common::*;
use sandbox::{PasswordAuth, Sandbox, SandboxOptions};
use tokio_util::sync::CancellationToken;

const RELAY_USER: &str = "AKIARELAYUSER7EXAMPLE";
const RELAY_PASSWORD: &str = "BN3x/relay+Pa55word\"with'quotes";

struct Relay {
    sandbox: Sandbox,
    _dir: tempfile::TempDir,
    running: authbridge::server::Running,
    _shutdown: CancellationToken,
}

impl Relay {
    fn addr(&self) -> SocketAddr {
        self.running.addr("relay").unwrap()
    }
}

/// A relay listener with `upstream.auth` (`auth_extra`: more keys of it, e.g. `mechanism`)
/// towards the sandbox connector, which requires `provider` (when set). `password` is what the
/// relay's config holds (in a secret file).
async fn start(provider: Option<PasswordAuth>, password: &str, extra: &str) -> Relay {
    start_listener(provider, password, extra, "").await
}

/// [`start`] with more keys for the listener (`listener_extra`, each line indented by four).
async fn start_listener(
    provider: Option<PasswordAuth>,
    password: &str,
    extra: &str,
    listener_extra: &str,
) -> Relay {
    common::log_capture();
    let sandbox = Sandbox::start(SandboxOptions {
        connector_allowed_ips: vec![],
        ..Default::default()
    })
    .await
    .unwrap();
    sandbox.set_connector_auth(provider);
    let dir = tempfile::tempdir().unwrap();
    sandbox.write_ca(&dir.path().join("ca.pem")).unwrap();
    std::fs::write(dir.path().join("relay_password"), format!("{password}\n")).unwrap();
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
    allowed_senders: ["@contoso.com"]
{listener_extra}    upstream:
      host: 127.0.0.1
      port: {port}
      tls: starttls
      server_name: localhost
      ca_file: ca.pem
      auth: {{ username: {RELAY_USER}, password: {{ file: relay_password }}{extra} }}
"#,
        hash = password_hash(),
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

fn provider() -> PasswordAuth {
    PasswordAuth::new(RELAY_USER, RELAY_PASSWORD)
}

/// Log in locally; the reply to the password.
async fn login(c: &mut LineClient<tokio::net::TcpStream>) -> String {
    assert!(c.code().await.starts_with("220"));
    c.send("EHLO relay-test").await;
    let ehlo = c.reply().await;
    assert!(
        ehlo.iter().any(|l| l.ends_with("AUTH PLAIN LOGIN")),
        "{ehlo:?}"
    );
    assert_eq!(c.cmd("AUTH LOGIN").await, "334 VXNlcm5hbWU6");
    assert_eq!(c.cmd(&b64(USER.as_bytes())).await, "334 UGFzc3dvcmQ6");
    c.cmd(&b64(PASSWORD.as_bytes())).await
}

/// One message from `from`; the reply to its end (or the first refusal).
async fn send(c: &mut LineClient<tokio::net::TcpStream>, from: &str, subject: &str) -> String {
    let r = c.cmd(&format!("MAIL FROM:<{from}>")).await;
    if !r.starts_with("250") {
        return r;
    }
    let r = c.cmd("RCPT TO:<customer@example.net>").await;
    assert!(r.starts_with("250"), "{r}");
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.write(
        format!(
            "From: {from}\r\nTo: customer@example.net\r\nSubject: {subject}\r\n\r\nhi\r\n.\r\n"
        )
        .as_bytes(),
    )
    .await;
    c.code().await
}

fn secrets() -> Vec<String> {
    vec![
        RELAY_PASSWORD.to_string(),
        RELAY_USER.to_string(),
        b64(RELAY_PASSWORD.as_bytes()),
        b64(format!("\0{RELAY_USER}\0{RELAY_PASSWORD}").as_bytes()),
    ]
}

/// AUTH PLAIN (the default when offered) with the right credentials: the message reaches the
/// provider, which saw the relay's login; nothing secret in the logs.
#[tokio::test]
async fn relays_through_a_provider_with_auth_plain() {
    let relay = start(Some(provider()), RELAY_PASSWORD, "").await;
    let mut c = LineClient::connect(relay.addr()).await;
    let r = login(&mut c).await;
    assert!(r.starts_with("235"), "{r}");
    let r = send(&mut c, "notifications@contoso.com", "via provider").await;
    assert!(r.starts_with("250"), "{r}");
    // A second message on the same session: the login holds.
    let r = send(&mut c, "tickets@contoso.com", "second").await;
    assert!(r.starts_with("250"), "{r}");
    let msgs = relay.sandbox.messages();
    assert_eq!(msgs.len(), 2);
    assert!(msgs[0].via_connector && msgs[0].tls);
    assert_eq!(msgs[0].auth_user, RELAY_USER);
    let counters = relay.sandbox.connector_counters();
    assert_eq!(counters.connector_auth_ok, 1, "{counters:?}");
    assert_eq!(counters.connector_auth_failed, 0);
    assert_no_secrets(&common::log_capture().text(), &secrets());
}

/// `mechanism: login` uses AUTH LOGIN; a provider that offers only LOGIN is logged in to with
/// LOGIN when no mechanism is set.
#[tokio::test]
async fn auth_login_when_asked_for_or_only_offered() {
    for (offered, extra) in [
        (vec!["PLAIN", "LOGIN"], ", mechanism: login"),
        (vec!["LOGIN"], ""),
    ] {
        let mut p = provider();
        p.mechanisms = offered.iter().map(|m| m.to_string()).collect();
        let relay = start(Some(p), RELAY_PASSWORD, extra).await;
        let mut c = LineClient::connect(relay.addr()).await;
        assert!(login(&mut c).await.starts_with("235"));
        let r = send(&mut c, "notifications@contoso.com", "login").await;
        assert!(r.starts_with("250"), "{offered:?}: {r}");
        assert_eq!(relay.sandbox.connector_counters().connector_auth_ok, 1);
    }
}

/// A wrong password: the provider answers `535`, but the client is told `454 4.7.0` (temporary:
/// its queue keeps the message) with the relay's credentials named as the cause; the log says
/// so too, without the password.
#[tokio::test]
async fn refused_credentials_are_a_temporary_failure_for_the_client() {
    let relay = start(Some(provider()), "not-the-password", "").await;
    let mut c = LineClient::connect(relay.addr()).await;
    let r = login(&mut c).await;
    assert!(r.starts_with("454 4.7.0"), "{r}");
    assert!(r.contains("refused this relay's own credentials"), "{r}");
    assert!(r.contains("535 5.7.8"), "{r}");
    assert_eq!(relay.sandbox.connector_counters().connector_auth_failed, 1);
    assert!(relay.sandbox.messages().is_empty());
    let logs = common::log_capture().text();
    assert!(
        logs.contains(
            "relay login refused: the upstream does not accept the configured credentials"
        ),
        "{logs}"
    );
    assert_no_secrets(&logs, &secrets());
    assert!(!logs.contains("not-the-password"));
}

/// A mechanism the provider does not offer is not tried: a temporary refusal that says what it
/// offers; a provider that offers no AUTH at all is named as such.
#[tokio::test]
async fn an_unoffered_mechanism_is_never_tried() {
    let mut p = provider();
    p.mechanisms = vec!["LOGIN".into()];
    let relay = start(Some(p), RELAY_PASSWORD, ", mechanism: plain").await;
    let mut c = LineClient::connect(relay.addr()).await;
    let r = login(&mut c).await;
    assert!(r.starts_with("454 4.7.0"), "{r}");
    assert!(
        r.contains("does not offer AUTH PLAIN (it offers LOGIN)"),
        "{r}"
    );
    let counters = relay.sandbox.connector_counters();
    assert_eq!(
        counters.connector_auth_ok + counters.connector_auth_failed,
        0
    );

    // The tenant's connector (no AUTH offered).
    let relay = start(None, RELAY_PASSWORD, "").await;
    let mut c = LineClient::connect(relay.addr()).await;
    let r = login(&mut c).await;
    assert!(r.starts_with("454 4.7.0"), "{r}");
    assert!(r.contains("does not offer AUTH at all"), "{r}");
}

/// With the provider's login done, the relay's own checks still apply: a sender outside
/// `allowed_senders` and a body with a bare LF never reach the provider.
#[tokio::test]
async fn allowed_senders_and_body_checks_stay_in_force() {
    let relay = start(Some(provider()), RELAY_PASSWORD, "").await;
    let mut c = LineClient::connect(relay.addr()).await;
    assert!(login(&mut c).await.starts_with("235"));
    let r = send(&mut c, "someone@example.org", "not allowed").await;
    assert!(r.starts_with("550 5.7.1"), "{r}");
    assert_eq!(relay.sandbox.connector_counters().connector_mail, 0);
    assert!(
        c.cmd("MAIL FROM:<tickets@contoso.com>")
            .await
            .starts_with("250")
    );
    assert!(
        c.cmd("RCPT TO:<customer@example.net>")
            .await
            .starts_with("250")
    );
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.write(b"Subject: smuggle\r\n\r\nline\n.\nMAIL FROM:<x@evil.test>\r\n.\r\n")
        .await;
    let r = c.code().await;
    assert!(r.starts_with("550 5.6.11"), "{r}");
    // The relay reconnects (and logs in again) for the next message.
    let r = send(&mut c, "tickets@contoso.com", "after the refusal").await;
    assert!(r.starts_with("250"), "{r}");
    let msgs = relay.sandbox.messages();
    assert_eq!(msgs.len(), 1, "only the clean message was delivered");
    assert_eq!(relay.sandbox.connector_counters().connector_auth_ok, 2);
}

/// An allow-listed relay without a local login (the other way a client reaches the relay).
const OPEN: &str = "    require_login: false\n    allow_from: [127.0.0.0/8]\n";

/// Wait (bounded) for the relay to open a connection to the provider; `false` if it did not.
/// The old behaviour connected as soon as a client did, so this would see it within the wait.
async fn provider_contacted(relay: &Relay) -> bool {
    for _ in 0..20 {
        if relay.sandbox.connector_counters().connector_connections > 0 {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

/// A client that only connects, or says EHLO/NOOP/RSET, fails its local login, or (without a
/// login) names a sender outside `allowed_senders`, costs no provider login, nor even a
/// connection to the provider; a client that sends mail costs exactly one.
#[tokio::test]
async fn no_provider_login_before_the_client_has_earned_it() {
    for listener in ["", OPEN] {
        let relay = start_listener(Some(provider()), RELAY_PASSWORD, "", listener).await;
        // Connect and go.
        drop(tokio::net::TcpStream::connect(relay.addr()).await.unwrap());
        // Connect, read the greeting, go.
        let mut c = LineClient::connect(relay.addr()).await;
        assert!(c.code().await.starts_with("220"));
        drop(c);
        // Small talk, and what the listener refuses.
        let mut c = LineClient::connect(relay.addr()).await;
        assert!(c.code().await.starts_with("220"));
        c.send("EHLO scanner").await;
        let ehlo = c.reply().await;
        assert!(ehlo.last().unwrap().starts_with("250 "), "{ehlo:?}");
        assert!(c.cmd("NOOP").await.starts_with("250"));
        assert!(c.cmd("RSET").await.starts_with("250"));
        if listener.is_empty() {
            assert!(
                c.cmd("MAIL FROM:<tickets@contoso.com>")
                    .await
                    .starts_with("530")
            );
            let wrong = format!("AUTH PLAIN {}", b64(format!("\0{USER}\0wrong").as_bytes()));
            let r = c.cmd(&wrong).await;
            assert!(r.starts_with("535"), "{r}");
        } else {
            let r = c.cmd("MAIL FROM:<someone@example.org>").await;
            assert!(r.starts_with("550 5.7.1"), "{r}");
            assert!(
                c.cmd("RCPT TO:<customer@example.net>")
                    .await
                    .starts_with("503 5.5.1")
            );
            assert!(c.cmd("NOOP").await.starts_with("250"));
        }
        assert!(
            !provider_contacted(&relay).await,
            "{listener:?}: the relay connected to the provider for a client that sent no mail: {:?}",
            relay.sandbox.connector_counters()
        );
        assert!(c.cmd("QUIT").await.starts_with("221"));
        let counters = relay.sandbox.connector_counters();
        assert_eq!(
            counters.connector_connections, 0,
            "{listener:?}: {counters:?}"
        );
        assert_eq!(
            counters.connector_auth_ok + counters.connector_auth_failed,
            0
        );

        // A client that sends mail: one connection, one provider login.
        let mut c = LineClient::connect(relay.addr()).await;
        if listener.is_empty() {
            assert!(login(&mut c).await.starts_with("235"));
        } else {
            assert!(c.code().await.starts_with("220"));
            c.send("EHLO glpi").await;
            c.reply().await;
        }
        let r = send(&mut c, "notifications@contoso.com", "earned").await;
        assert!(r.starts_with("250"), "{listener:?}: {r}");
        let r = send(&mut c, "tickets@contoso.com", "second").await;
        assert!(r.starts_with("250"), "{listener:?}: {r}");
        assert!(c.cmd("QUIT").await.starts_with("221"));
        let counters = relay.sandbox.connector_counters();
        assert_eq!(
            counters.connector_connections, 1,
            "{listener:?}: {counters:?}"
        );
        assert_eq!(counters.connector_auth_ok, 1, "{listener:?}: {counters:?}");
        assert_eq!(relay.sandbox.messages().len(), 2);
        assert_no_secrets(&common::log_capture().text(), &secrets());
    }
}

/// Without a local login the provider's refusal comes at the first allowed MAIL FROM: a
/// temporary `421 4.4.2` with the reason, and the connection closes (the client keeps its
/// message).
#[tokio::test]
async fn without_a_login_the_provider_refusal_comes_at_mail_from() {
    let relay = start_listener(Some(provider()), "not-the-password", "", OPEN).await;
    let mut c = LineClient::connect(relay.addr()).await;
    assert!(c.code().await.starts_with("220"));
    c.send("EHLO glpi").await;
    c.reply().await;
    let r = c.cmd("MAIL FROM:<tickets@contoso.com>").await;
    assert!(
        r.starts_with("421 4.4.2 Relay connector unavailable"),
        "{r}"
    );
    assert!(r.contains("refused this relay's own credentials"), "{r}");
    assert!(r.contains("535 5.7.8"), "{r}");
    assert!(c.closed().await);
    let counters = relay.sandbox.connector_counters();
    assert_eq!(counters.connector_auth_failed, 1, "{counters:?}");
    assert_eq!(counters.connector_mail, 0, "{counters:?}");
    let logs = common::log_capture().text();
    assert_no_secrets(&logs, &secrets());
    assert!(!logs.contains("not-the-password"));
}

fn parse(upstream: &str, mode: &str) -> Result<authbridge::config::Config, String> {
    let yaml = format!(
        "listeners:\n  - name: relay\n    protocol: smtp\n{mode}    listen: 127.0.0.1:2525\n    \
         require_login: false\n    allow_from: [127.0.0.0/8]\n    upstream: {upstream}\n"
    );
    authbridge::config::Config::parse(std::path::Path::new("/etc/authbridge/r.yaml"), &yaml)
        .map_err(|e| e.to_string())
}

/// `upstream.auth` is checked at load: relay listeners only, a user name and a password.
#[test]
fn upstream_auth_is_checked_at_load() {
    let up = |auth: &str| {
        format!(
            "{{ host: email-smtp.eu-west-1.amazonaws.com, port: 587, tls: starttls, auth: {auth} }}"
        )
    };
    let relay = "    mode: relay\n";
    let c = parse(&up("{ username: u, password: p, mechanism: login }"), relay).unwrap();
    let auth = c.listeners[0].upstream.auth.as_ref().unwrap();
    assert_eq!(auth.username.expose(), "u");
    assert_eq!(
        format!("{auth:?}").matches("[redacted]").count(),
        2,
        "neither user name nor password shows in Debug: {auth:?}"
    );
    let cases = [
        (
            up("{ username: u, password: p }"),
            "",
            "listeners[0].upstream.auth: only relay-mode listeners log in to their upstream with a password",
        ),
        (
            up("{ username: \"\", password: p }"),
            relay,
            "listeners[0].upstream.auth.username: expected the provider's SMTP user name",
        ),
        (
            up("{ username: u, password: \"\" }"),
            relay,
            "listeners[0].upstream.auth.password: expected the provider's SMTP password",
        ),
        (
            up("{ username: u, password: p, mechanism: cram-md5 }"),
            relay,
            "mechanism",
        ),
        (up("{ username: u }"), relay, "password"),
        (
            "{ host: h, port: 25, tls: none, auth: { username: u, password: p } }".to_string(),
            relay,
            "tls",
        ),
    ];
    for (upstream, mode, want) in cases {
        let e = match mode {
            "" => {
                let yaml = format!(
                    "listeners:\n  - name: relay\n    protocol: smtp\n    listen: \
                     127.0.0.1:2525\n    upstream: {upstream}\n"
                );
                authbridge::config::Config::parse(
                    std::path::Path::new("/etc/authbridge/r.yaml"),
                    &yaml,
                )
                .map(|_| ())
                .unwrap_err()
                .to_string()
            }
            m => parse(&upstream, m).map(|_| ()).unwrap_err(),
        };
        assert!(e.contains(want), "{upstream}\n→ {e}\nwanted: {want}");
    }
}
