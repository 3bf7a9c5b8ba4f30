//! The lifecycle of the Microsoft Graph tokens of Graph listeners (`upstream: { type: graph }`)
//! against the sandbox over loopback: kept warm by the background refresher like the accounts'
//! own tokens, kept across a config reload for unchanged accounts (dropped for changed ones),
//! shared between replicas through Redis under their own key (never confused with the
//! account's Exchange token), a shared mailbox sending through Graph with its owner's token,
//! and the Graph metrics on the admin listener (checked by `promtool`).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::redis::{RedisOptions, RedisServer, require_redis};
use common::*;
use sandbox::{GraphFailure, Sandbox, SandboxOptions};
use tokio_util::sync::CancellationToken;

const SHARED: &str = "helpdesk@contoso.com";
const HELPDESK_USER: &str = "helpdesk-glpi";

#[derive(Default)]
struct Options {
    /// Lifetime of every token the sandbox issues (default one hour).
    token_lifetime: Option<Duration>,
    /// `token_store:` value (default: files in `state_dir`).
    store: Option<String>,
    /// An `admin:` listener on a free loopback port.
    admin: bool,
    /// The shared mailbox `helpdesk` with `token_from: tickets`.
    helpdesk: bool,
}

struct Env {
    sandbox: Sandbox,
    dir: tempfile::TempDir,
}

/// A sandbox with the delegated account `tickets` (refresh token stored) and a config with a
/// Graph listener `graph` and an Exchange SMTP listener `smtp`.
async fn env(opts: &Options) -> Env {
    let mut so = SandboxOptions::default();
    if let Some(l) = opts.token_lifetime {
        so.token_lifetime = l;
    }
    let sandbox = Sandbox::start(so).await.unwrap();
    sandbox.add_client(CLIENT_ID, CLIENT_SECRET, &[MAILBOX]);
    let dir = tempfile::tempdir().unwrap();
    sandbox.write_ca(&dir.path().join("ca.pem")).unwrap();
    std::fs::write(dir.path().join("client_secret"), CLIENT_SECRET).unwrap();
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).unwrap();
    let key = dir.path().join("master.key");
    std::fs::write(&key, format!("{}\n", b64(&raw))).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let e = Env { sandbox, dir };
    let path = e.write_config(opts, 0);
    let config = authbridge::config::Config::load(&path).unwrap();
    let rt = e.sandbox.issue_refresh_token(CLIENT_ID, MAILBOX);
    authbridge::server::token_store(&config)
        .unwrap()
        .save("tickets", &rt.into())
        .unwrap();
    e
}

impl Env {
    /// Writes replica `i`'s config; returns its path.
    fn write_config(&self, opts: &Options, i: usize) -> PathBuf {
        let sb = &self.sandbox;
        let store = opts
            .store
            .as_deref()
            .map(|s| format!("token_store: {s}\n"))
            .unwrap_or_default();
        let admin = if opts.admin {
            format!("admin: {{ listen: \"127.0.0.1:{}\" }}\n", free_port())
        } else {
            String::new()
        };
        let helpdesk = if opts.helpdesk {
            format!(
                "  - name: helpdesk\n    token_from: tickets\n    mailbox: {SHARED}\n    logins:\n      - {{ username: {HELPDESK_USER}, password_hash: \"{hash}\" }}\n",
                hash = password_hash()
            )
        } else {
            String::new()
        };
        let yaml = format!(
            r#"state_dir: ./state{i}
key_file: ./master.key
{store}{admin}{tickets}{helpdesk}listeners:
  - name: graph
    protocol: smtp
    listen: 127.0.0.1:0
    upstream: {{ type: graph, endpoint: "{graph}", ca_file: ca.pem }}
  - name: smtp
    protocol: smtp
    listen: 127.0.0.1:0
    upstream: {{ host: 127.0.0.1, port: {smtp_port}, tls: starttls, server_name: localhost, ca_file: ca.pem }}
"#,
            tickets = tickets_yaml(sb.tenant(), "authorization_code", &sb.token_url()),
            graph = sb.graph_url(),
            smtp_port = sb.smtp_addr().port(),
        );
        let path = self.dir.path().join(format!("replica{i}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        path
    }

    async fn start(&self, config: &Path) -> (authbridge::server::Running, CancellationToken) {
        let config = authbridge::config::Config::load(config).unwrap();
        let shutdown = CancellationToken::new();
        let running = authbridge::start(config, shutdown.clone()).await.unwrap();
        (running, shutdown)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One message through an SMTP listener as `user` (AUTH PLAIN), From `from`; the reply to the
/// end of DATA (or the first reply that is not a success).
async fn send_as(addr: SocketAddr, user: &str, from: &str, subject: &str) -> String {
    let mut c = LineClient::connect(addr).await;
    assert!(c.code().await.starts_with("220"));
    c.cmd("EHLO graph-tokens").await;
    let blob = b64(format!("\0{user}\0{PASSWORD}").as_bytes());
    let r = c.cmd(&format!("AUTH PLAIN {blob}")).await;
    if !r.starts_with("235") {
        return r;
    }
    let r = c.cmd(&format!("MAIL FROM:<{from}>")).await;
    if !r.starts_with("250") {
        return r;
    }
    let r = c.cmd("RCPT TO:<to@contoso.com>").await;
    if !r.starts_with("250") {
        return r;
    }
    let r = c.cmd("DATA").await;
    if !r.starts_with("354") {
        return r;
    }
    c.write(
        format!("From: {from}\r\nTo: to@contoso.com\r\nSubject: {subject}\r\n\r\nhello\r\n.\r\n")
            .as_bytes(),
    )
    .await;
    let r = c.code().await;
    let _ = c.cmd("QUIT").await;
    r
}

async fn send(addr: SocketAddr, subject: &str) -> String {
    send_as(addr, USER, MAILBOX, subject).await
}

async fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Graph listener's token is renewed ahead of expiry without any client: with 6 s tokens and
/// nobody sending, the refresher fetches new Graph tokens, and a message sent after the first
/// token expired finds a fresh one (no token request on its path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_tokens_are_refreshed_in_the_background() {
    let e = env(&Options {
        token_lifetime: Some(Duration::from_secs(6)),
        ..Default::default()
    })
    .await;
    let (running, _stop) = e.start(&e.dir.path().join("replica0.yaml")).await;
    let graph = running.addr("graph").unwrap();
    let r = send(graph, "first").await;
    assert!(r.starts_with("250 "), "{r}");
    assert_eq!(e.sandbox.token_requests().refresh_token, 1);
    // Nobody sends: only the background refresher can ask for the next Graph tokens.
    wait_for(
        "two background refreshes of the Graph token",
        Duration::from_secs(20),
        || e.sandbox.token_requests().refresh_token >= 3,
    )
    .await;
    let before = e.sandbox.token_requests().refresh_token;
    let r = send(graph, "second").await;
    assert!(r.starts_with("250 "), "{r}");
    let counters = e.sandbox.graph_counters();
    assert_eq!(
        (counters.accepted, counters.refused),
        (2, 0),
        "{counters:?}"
    );
    // The send found a fresh token: it made no token request itself (a background one may run
    // meanwhile, at most one).
    assert!(e.sandbox.token_requests().refresh_token <= before + 1);
    // Only the Graph audience was ever refreshed: the Exchange token was never asked for.
    assert_eq!(e.sandbox.mail_auth_attempts().total(), 0);
}

/// A reload that leaves the account alone keeps its Graph token (no token request on the next
/// send); a reload that changes the account's token identity drops it (one request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_graph_tokens_of_unchanged_accounts_only() {
    let e = env(&Options::default()).await;
    let path = e.dir.path().join("replica0.yaml");
    let (running, _stop) = e.start(&path).await;
    let r = send(running.addr("graph").unwrap(), "before").await;
    assert!(r.starts_with("250 "), "{r}");
    assert_eq!(e.sandbox.token_requests().refresh_token, 1);

    // tickets unchanged (another account added): its Graph token stays cached.
    let yaml = std::fs::read_to_string(&path).unwrap();
    let added = yaml.replace(
        "listeners:\n",
        "  - name: other\n    provider: m365\n    mailbox: other@contoso.com\nlisteners:\n",
    );
    assert_ne!(yaml, added);
    std::fs::write(&path, added).unwrap();
    let report = running
        .reload(authbridge::config::Config::load(&path).unwrap())
        .await
        .unwrap();
    assert!(format!("{report:?}").contains("tickets"), "{report:?}");
    let graph = running.listeners().await;
    let graph = graph.iter().find(|(n, _)| n == "graph").unwrap().1;
    let r = send(graph, "after-unchanged").await;
    assert!(r.starts_with("250 "), "{r}");
    assert_eq!(
        e.sandbox.token_requests().refresh_token,
        1,
        "the reload kept the Graph token"
    );

    // The account's scopes changed: its tokens are another identity, the cache is dropped.
    let yaml = std::fs::read_to_string(&path).unwrap();
    let changed = yaml.replace(
        "    flow: authorization_code\n",
        "    flow: authorization_code\n    scopes: [\"https://outlook.office.com/SMTP.Send\", \"offline_access\"]\n",
    );
    assert_ne!(yaml, changed);
    std::fs::write(&path, changed).unwrap();
    running
        .reload(authbridge::config::Config::load(&path).unwrap())
        .await
        .unwrap();
    let r = send(graph, "after-changed").await;
    assert!(r.starts_with("250 "), "{r}");
    assert_eq!(
        e.sandbox.token_requests().refresh_token,
        2,
        "a changed account gets a new Graph token"
    );
}

/// Two replicas on one Redis: replica A sends through Graph (its Graph token is published),
/// replica B sends through Exchange SMTP and then through Graph. B's Exchange login must not
/// adopt A's Graph token (nor B's Graph send an Exchange token): both audiences have their own
/// published key, B's Graph send adopts A's Graph token without a token request, and neither
/// Exchange nor Graph ever sees a token of the wrong audience.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_graph_and_exchange_tokens_under_separate_keys() {
    let Some(bin) = require_redis("replicas_share_graph_and_exchange_tokens_under_separate_keys")
    else {
        return;
    };
    let redis = RedisServer::start(bin, RedisOptions::default());
    let opts = Options {
        store: Some(format!("{{ type: redis, url: \"{}\" }}", redis.url())),
        ..Default::default()
    };
    let e = env(&opts).await;
    let a_path = e.dir.path().join("replica0.yaml");
    let b_path = e.write_config(&opts, 1);
    let (a, _stop_a) = e.start(&a_path).await;
    let (b, _stop_b) = e.start(&b_path).await;

    let r = send(a.addr("graph").unwrap(), "a-graph").await;
    assert!(r.starts_with("250 "), "{r}");
    assert_eq!(e.sandbox.token_requests().refresh_token, 1);
    let r = send(b.addr("smtp").unwrap(), "b-exchange").await;
    assert!(r.starts_with("250"), "{r}");
    let auth = e.sandbox.mail_auth_attempts();
    assert_eq!(
        auth.smtp_failed, 0,
        "Exchange never sees the Graph token: {auth:?}"
    );
    assert_eq!(
        e.sandbox.token_requests().refresh_token,
        2,
        "B fetched its own Exchange token"
    );
    let r = send(b.addr("graph").unwrap(), "b-graph").await;
    assert!(r.starts_with("250 "), "{r}");
    let r = send(a.addr("smtp").unwrap(), "a-exchange").await;
    assert!(r.starts_with("250"), "{r}");
    let counters = e.sandbox.graph_counters();
    assert_eq!(
        (counters.accepted, counters.refused, counters.requests),
        (2, 0, 2),
        "Graph never sees an Exchange token: {counters:?}"
    );
    assert_eq!(e.sandbox.mail_auth_attempts().smtp_failed, 0);
    assert_eq!(
        e.sandbox.token_requests().refresh_token,
        2,
        "each replica adopted the other's published token of the same audience"
    );
    // Two published access tokens: the account's own and the Graph one under its own key.
    let mut conn = redis.conn();
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg("authbridge/access/tickets*")
        .query(&mut conn)
        .unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(
        keys.iter().any(|k| k == "authbridge/access/tickets"),
        "{keys:?}"
    );
}

/// A shared mailbox (`helpdesk`, `token_from: tickets`) on a Graph listener posts to
/// `/users/helpdesk@…/sendMail` with tickets' token: refused with Graph's code and the fix
/// while tickets has no SendAs on it, delivered once SendAs is granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_mailbox_sends_through_graph_with_its_owners_token() {
    let e = env(&Options {
        helpdesk: true,
        ..Default::default()
    })
    .await;
    let (running, _stop) = e.start(&e.dir.path().join("replica0.yaml")).await;
    let graph = running.addr("graph").unwrap();
    let r = send_as(graph, HELPDESK_USER, SHARED, "no-send-as").await;
    assert!(
        r.starts_with("550 5.7.60") && r.contains("ErrorSendAsDenied") && r.contains("SendAs"),
        "{r}"
    );
    assert!(e.sandbox.mailbox("to@contoso.com").is_empty());
    e.sandbox.grant_send_as(SHARED, MAILBOX);
    let r = send_as(graph, HELPDESK_USER, SHARED, "with-send-as").await;
    assert!(r.starts_with("250 "), "{r}");
    let delivered = e.sandbox.mailbox("to@contoso.com");
    assert_eq!(delivered.len(), 1);
    let text = String::from_utf8_lossy(&delivered[0].raw).into_owned();
    assert!(text.contains(&format!("From: {SHARED}")), "{text}");
    // tickets itself still sends as itself through the same listener.
    let r = send(graph, "owner").await;
    assert!(r.starts_with("250 "), "{r}");
}

/// `/metrics` counts Graph requests by result and the Retry-After Graph sent; `promtool` accepts
/// the output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_requests_and_throttling_are_in_the_metrics() {
    let e = env(&Options {
        admin: true,
        ..Default::default()
    })
    .await;
    let (running, _stop) = e.start(&e.dir.path().join("replica0.yaml")).await;
    let graph = running.addr("graph").unwrap();
    let r = send(graph, "ok").await;
    assert!(r.starts_with("250 "), "{r}");
    e.sandbox.set_graph_failure(
        Some(GraphFailure::Throttle429 {
            retry_after_secs: 17,
        }),
        Some(1),
    );
    let r = send(graph, "throttled").await;
    assert!(r.starts_with("451 4.7.0"), "{r}");
    e.sandbox
        .set_graph_failure(Some(GraphFailure::Unavailable503), Some(1));
    let r = send(graph, "unavailable").await;
    assert!(r.starts_with("451 4.4.1"), "{r}");
    e.sandbox
        .set_graph_failure(Some(GraphFailure::SendAsDenied), Some(1));
    let r = send(graph, "refused").await;
    assert!(r.starts_with("550 "), "{r}");

    let admin = running.admin_addr.unwrap();
    let text = http_get(admin, "/metrics").await;
    let value = |series: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    };
    for (result, n) in [
        ("accepted", 1.0),
        ("throttled", 1.0),
        ("unavailable", 1.0),
        ("refused", 1.0),
    ] {
        let series =
            format!("authbridge_graph_requests_total{{listener=\"graph\",result=\"{result}\"}}");
        assert_eq!(value(&series), Some(n), "{series} in\n{text}");
    }
    assert_eq!(
        value("authbridge_graph_retry_after_total{listener=\"graph\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value("authbridge_graph_last_retry_after_seconds{listener=\"graph\"}"),
        Some(17.0),
        "{text}"
    );

    // A network error: Graph's port closed.
    let path = e.dir.path().join("replica0.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();
    let dead = free_port();
    std::fs::write(
        &path,
        yaml.replace(&e.sandbox.graph_url(), &format!("https://127.0.0.1:{dead}")),
    )
    .unwrap();
    running
        .reload(authbridge::config::Config::load(&path).unwrap())
        .await
        .unwrap();
    let graph = running.listeners().await;
    let graph = graph.iter().find(|(n, _)| n == "graph").unwrap().1;
    let r = send(graph, "network").await;
    assert!(r.starts_with("451 4.4.1"), "{r}");
    let text = http_get(admin, "/metrics").await;
    assert!(
        text.contains(
            "authbridge_graph_requests_total{listener=\"graph\",result=\"network_error\"} 1"
        ),
        "{text}"
    );
    common::promtool::check_metrics(&text);
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.split_once("\r\n\r\n").unwrap().1.to_owned()
}

/// `authbridge check --json` for a delegated account whose app has no consent for the Graph
/// permission: the Graph token request is refused (AADSTS65001) and check fails the Graph
/// listener naming the permission and the fix (admin consent, its URL, or `authbridge login`).
/// The shared mailbox's line asks for `Mail.Send.Shared`; with consent both pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_missing_graph_consent_with_the_fix() {
    let e = env(&Options {
        helpdesk: true,
        ..Default::default()
    })
    .await;
    let config = e.dir.path().join("replica0.yaml");
    let check = |config: PathBuf| async move {
        let report = common::check_json(config).await;
        report["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["name"] == "graph")
            .map(|l| (l["account"].as_str().unwrap_or("").to_owned(), l.clone()))
            .collect::<Vec<_>>()
    };
    // Exchange consented, Graph not at all.
    e.sandbox.set_graph_consent(CLIENT_ID, Some(&[]));
    let graph = check(config.clone()).await;
    assert_eq!(graph.len(), 2, "{graph:?}");
    for (account, report) in &graph {
        let permission = if account == "helpdesk" {
            "Mail.Send.Shared"
        } else {
            "Mail.Send"
        };
        let text = report.to_string();
        assert_eq!(report["ok"], false, "{text}");
        assert!(
            text.contains("consent")
                && text.contains("AADSTS65001")
                && text.contains(&format!("Delegated permissions > {permission}"))
                && text.contains(&format!("adminconsent?client_id={CLIENT_ID}"))
                && text.contains("authbridge login tickets"),
            "{text}"
        );
    }
    // Mail.Send consented: the account passes, the shared mailbox still lacks Mail.Send.Shared.
    e.sandbox.set_graph_consent(CLIENT_ID, Some(&["Mail.Send"]));
    let graph = check(config.clone()).await;
    for (account, report) in &graph {
        assert_eq!(report["ok"], account == "tickets", "{account}: {report}");
    }
    e.sandbox
        .set_graph_consent(CLIENT_ID, Some(&["Mail.Send", "Mail.Send.Shared"]));
    let graph = check(config.clone()).await;
    for (account, report) in &graph {
        assert_eq!(report["ok"], true, "{account}: {report}");
        if account == "helpdesk" {
            assert!(report.to_string().contains("Mail.Send.Shared"), "{report}");
        }
    }
    assert_eq!(
        e.sandbox.graph_counters().requests,
        0,
        "check sends nothing"
    );
}
