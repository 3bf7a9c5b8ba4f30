//! TokenManager against a small fake token endpoint on 127.0.0.1:0 (plain HTTP): single-flight,
//! caller timeouts, rejection handling, rotation persisted, failure classification end to end, and
//! that no token or secret ever reaches a log line or an error message.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use authbridge::secret::SecretString;
use authbridge::token::{
    AccountConfig, ErrorKind, Flow, MasterKey, ProviderConfig, ProviderKind, TokenManager,
    TokenSettings, TokenStore, default_scopes,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SEED_RT: &str = "SECRET-RT-0";
const CLIENT_SECRET: &str = "SECRET-CLIENT-VALUE";

// ---- log capture: every test checks that nothing secret was logged -------------------------------

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Capture(buf.clone());
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        buf
    })
}

fn assert_nothing_secret_logged() {
    let text = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(text.contains("token request"), "the log capture works");
    assert!(
        !text.contains("SECRET-"),
        "a secret reached the log:\n{text}"
    );
}

// ---- fake token endpoint ----------------------------------------------------------------------------

#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

/// A successful answer for request number `n`: `SECRET-AT-n`, rotated `SECRET-RT-n`.
fn ok(n: usize, expires_in: u64) -> Reply {
    Reply {
        status: 200,
        headers: Vec::new(),
        body: format!(
            r#"{{"token_type":"Bearer","scope":"https://outlook.office.com/IMAP.AccessAsUser.All","expires_in":{expires_in},"ext_expires_in":{expires_in},"access_token":"SECRET-AT-{n}","refresh_token":"SECRET-RT-{n}"}}"#
        ),
        delay: Duration::ZERO,
    }
}

fn error(status: u16, body: &str) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: body.to_owned(),
        delay: Duration::ZERO,
    }
}

type Handler = Arc<dyn Fn(usize, &str) -> Reply + Send + Sync>;

struct Fake {
    url: String,
    count: Arc<AtomicUsize>,
    /// (request head, form body) per request.
    requests: Arc<Mutex<Vec<(String, String)>>>,
}

impl Fake {
    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    fn form(&self, i: usize) -> Vec<(String, String)> {
        let body = self.requests.lock().unwrap()[i].1.clone();
        form_urlencoded::parse(body.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    fn head(&self, i: usize) -> String {
        self.requests.lock().unwrap()[i].0.clone()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn start(handler: impl Fn(usize, &str) -> Reply + Send + Sync + 'static) -> Fake {
    let handler: Handler = Arc::new(handler);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let (c, r) = (count.clone(), requests.clone());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (handler, count, requests) = (handler.clone(), c.clone(), r.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(p) = find(&buf, b"\r\n\r\n") {
                        break p + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                let len = head
                    .lines()
                    .find_map(|l| {
                        let l = l.to_ascii_lowercase();
                        l.strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0usize);
                while buf.len() < head_end + len {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let form = String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned();
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                requests.lock().unwrap().push((head, form.clone()));
                let reply = handler(n, &form);
                tokio::time::sleep(reply.delay).await;
                let mut out = format!(
                    "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                    reply.status,
                    reply.body.len()
                );
                for (k, v) in &reply.headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str("\r\n");
                out.push_str(&reply.body);
                let _ = sock.write_all(out.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Fake {
        url: format!("http://{addr}/tenant/oauth2/v2.0/token"),
        count,
        requests,
    }
}

// ---- setup ------------------------------------------------------------------------------------------

fn tls() -> Arc<rustls::ClientConfig> {
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth(),
    )
}

fn provider(url: &str, flow: Flow) -> Arc<ProviderConfig> {
    Arc::new(ProviderConfig {
        name: "m365".to_owned(),
        kind: ProviderKind::Microsoft,
        flow,
        client_id: "11111111-2222-3333-4444-555555555555".to_owned(),
        credential: authbridge::token::CredentialKind::ClientSecret,
        client_secret: Some(SecretString::from(CLIENT_SECRET)),
        assertion: None,
        endpoints: authbridge::token::Endpoints {
            token_url: url.to_owned(),
            authorize_url: None,
            device_code_url: None,
        },
        scopes: default_scopes(ProviderKind::Microsoft, flow),
        redirect_uri: None,
        http: authbridge::token::HttpClient::new(tls(), authbridge::token::ProxySetting::Direct),
    })
}

struct Setup {
    _dir: tempfile::TempDir,
    store: TokenStore,
    manager: Arc<TokenManager>,
}

fn setup_with(url: &str, flow: Flow, settings: TokenSettings, seed: Option<&str>) -> Setup {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::open(dir.path(), MasterKey::from_bytes([7; 32], "test")).unwrap();
    if let Some(seed) = seed {
        store.save("tickets", &SecretString::from(seed)).unwrap();
    }
    let account = AccountConfig {
        name: "tickets".to_owned(),
        mailbox: "tickets@contoso.com".to_owned(),
        provider: provider(url, flow),
    };
    let manager = TokenManager::new(store.clone(), vec![account], settings);
    Setup {
        _dir: dir,
        store,
        manager,
    }
}

fn setup(url: &str) -> Setup {
    setup_with(
        url,
        Flow::AuthorizationCode,
        TokenSettings::default(),
        Some(SEED_RT),
    )
}

fn stored(s: &Setup) -> String {
    s.store
        .load("tickets")
        .unwrap()
        .unwrap()
        .refresh_token
        .expose()
        .clone()
}

// ---- tests ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_callers_one_request() {
    let fake = start(|n, _| Reply {
        delay: Duration::from_millis(300),
        ..ok(n, 3600)
    })
    .await;
    let s = setup(&fake.url);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let m = s.manager.clone();
        tasks.push(tokio::spawn(async move { m.access_token("tickets").await }));
    }
    let mut generations = Vec::new();
    for t in tasks {
        let token = t.await.unwrap().unwrap();
        assert_eq!(token.token.expose(), "SECRET-AT-1");
        generations.push(token.generation);
    }
    assert!(generations.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(fake.count(), 1, "exactly one request to the token endpoint");
    // Cached afterwards.
    s.manager.access_token("tickets").await.unwrap();
    assert_eq!(fake.count(), 1);

    // The request: a form POST asking for JSON, with the stored refresh token and the scopes.
    let head = fake.head(0).to_ascii_lowercase();
    assert!(
        head.starts_with("post /tenant/oauth2/v2.0/token http/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("content-type: application/x-www-form-urlencoded"));
    assert!(head.contains("accept: application/json"));
    assert!(head.contains("host: 127.0.0.1:"));
    let form = fake.form(0);
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("grant_type"), Some("refresh_token"));
    assert_eq!(get("refresh_token"), Some(SEED_RT));
    assert_eq!(
        get("client_id"),
        Some("11111111-2222-3333-4444-555555555555")
    );
    assert_eq!(get("client_secret"), Some(CLIENT_SECRET));
    assert_eq!(
        get("scope"),
        Some(
            "https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/POP.AccessAsUser.All https://outlook.office.com/SMTP.Send offline_access"
        )
    );
    // The rotated refresh token was stored.
    assert_eq!(stored(&s), "SECRET-RT-1");
    assert_nothing_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_gives_up_does_not_cancel_the_fetch() {
    let fake = start(|n, _| Reply {
        delay: Duration::from_millis(600),
        ..ok(n, 3600)
    })
    .await;
    let s = setup(&fake.url);
    let gave_up =
        tokio::time::timeout(Duration::from_millis(50), s.manager.access_token("tickets")).await;
    assert!(gave_up.is_err(), "the caller timed out");
    // The fetch goes on without anyone waiting; its result lands in the store and the cache.
    for _ in 0..100 {
        if stored(&s) == "SECRET-RT-1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stored(&s), "SECRET-RT-1");
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Served from the cache: still the one request (no timing asserted, the machine may be busy).
    let token = s.manager.access_token("tickets").await.unwrap();
    assert_eq!(token.token.expose(), "SECRET-AT-1");
    assert_eq!(fake.count(), 1, "served from the cache");
    assert_nothing_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejection_refetches_once_and_stale_generations_do_not() {
    let fake = start(|n, _| Reply {
        delay: Duration::from_millis(100),
        ..ok(n, 3600)
    })
    .await;
    let s = setup(&fake.url);
    let first = s.manager.access_token("tickets").await.unwrap();
    assert_eq!(fake.count(), 1);

    // 20 sessions refused together with the same token: one refresh.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (m, rejected) = (s.manager.clone(), first.clone());
        tasks.push(tokio::spawn(async move {
            m.refresh_after_rejection("tickets", &rejected).await
        }));
    }
    let mut second = None;
    for t in tasks {
        let token = t.await.unwrap().unwrap();
        assert!(token.generation > first.generation);
        assert_eq!(token.token.expose(), "SECRET-AT-2");
        second = Some(token);
    }
    assert_eq!(fake.count(), 2);
    let second = second.unwrap();

    // A late session reporting the old generation gets the newer token without a request.
    let again = s
        .manager
        .refresh_after_rejection("tickets", &first)
        .await
        .unwrap();
    assert_eq!(again.generation, second.generation);
    assert_eq!(fake.count(), 2);
    // The cache now serves the new one.
    let cached = s.manager.access_token("tickets").await.unwrap();
    assert_eq!(cached.generation, second.generation);
    // Refusing the current one fetches again, and the refused token is no longer handed out.
    let third = s
        .manager
        .refresh_after_rejection("tickets", &second)
        .await
        .unwrap();
    assert_eq!(fake.count(), 3);
    assert_eq!(third.token.expose(), "SECRET-AT-3");
    assert_eq!(stored(&s), "SECRET-RT-3");
    assert_nothing_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failure_keeps_the_token_and_does_not_hammer() {
    let fake = start(|n, _| {
        if n <= 2 {
            Reply {
                headers: vec![("Retry-After", "1".to_owned())],
                ..error(503, "<html>Service Unavailable</html>")
            }
        } else {
            ok(n, 3600)
        }
    })
    .await;
    let s = setup(&fake.url);
    let e = s.manager.access_token("tickets").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient);
    assert_eq!(e.status, Some(503));
    assert_eq!(e.retry_after, Some(Duration::from_secs(1)));
    assert!(e.to_string().contains("HTTP 503"), "{e}");
    assert_eq!(
        stored(&s),
        SEED_RT,
        "a transient failure never touches the stored token"
    );
    // Within the negative-cache window: same error, no new request.
    let e2 = s.manager.access_token("tickets").await.unwrap_err();
    assert_eq!(e2, e);
    assert_eq!(fake.count(), 1);
    // refresh_after_rejection is not held back by it.
    let dummy = authbridge::token::AccessToken {
        token: SecretString::from("x"),
        expires_at: std::time::Instant::now(),
        generation: 0,
    };
    assert!(
        s.manager
            .refresh_after_rejection("tickets", &dummy)
            .await
            .is_err()
    );
    assert_eq!(fake.count(), 2);
    // After the window the next caller tries again and succeeds.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let t = s.manager.access_token("tickets").await.unwrap();
    assert_eq!(t.token.expose(), "SECRET-AT-3");
    assert_eq!(fake.count(), 3);
    let status = &s.manager.status()[0];
    assert!(status.last_error.is_none() && status.needs_login.is_none());
    assert!(status.last_refresh.is_some() && status.access_token_expires_at.is_some());
    assert_nothing_secret_logged();
}

const AADSTS70008: &str = r#"{"error":"invalid_grant","error_description":"AADSTS70008: The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.\r\nTrace ID: 0b1c\r\nCorrelation ID: 9f2e\r\nTimestamp: 2024-05-02 10:11:12Z","error_codes":[70008],"timestamp":"2024-05-02 10:11:12Z","trace_id":"0b1c","correlation_id":"9f2e","error_uri":"https://login.microsoftonline.com/error?code=70008"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failure_needs_login_and_keeps_the_stored_token() {
    let fake = start(|n, form| {
        if form.contains("SECRET-RT-0") {
            error(400, AADSTS70008)
        } else {
            ok(n, 3600)
        }
    })
    .await;
    let s = setup(&fake.url);
    let e = s.manager.access_token("tickets").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert_eq!(e.aadsts, Some(70008));
    assert_eq!(e.error.as_deref(), Some("invalid_grant"));
    assert_eq!(
        e.to_string(),
        "token refresh for account tickets failed: AADSTS70008 refresh token expired — run \
         `authbridge login tickets`"
    );
    assert_eq!(stored(&s), SEED_RT, "kept until replaced");
    let status = &s.manager.status()[0];
    let needs = status.needs_login.as_deref().unwrap();
    assert!(needs.contains("authbridge login tickets"), "{needs}");
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap()
            .contains("AADSTS70008")
    );
    assert!(status.refresh_token_stored_at.is_some());

    // After the short negative cache, the same dead refresh token is not sent again…
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let e2 = s.manager.access_token("tickets").await.unwrap_err();
    assert_eq!(e2.aadsts, Some(70008));
    assert_eq!(fake.count(), 1);

    // …but a new one (as `authbridge login` or `import-token` would store) is used at once.
    s.store
        .save("tickets", &SecretString::from("SECRET-RT-new"))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let t = s.manager.access_token("tickets").await.unwrap();
    assert_eq!(t.token.expose(), "SECRET-AT-2");
    assert_eq!(fake.count(), 2);
    assert!(s.manager.status()[0].needs_login.is_none());
    assert_nothing_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stored_token_is_not_configured() {
    let fake = start(|n, _| ok(n, 3600)).await;
    let s = setup_with(&fake.url, Flow::DeviceCode, TokenSettings::default(), None);
    let e = s.manager.access_token("tickets").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotConfigured);
    assert!(
        e.hint().contains("authbridge login tickets"),
        "{}",
        e.hint()
    );
    assert_eq!(fake.count(), 0);
    let status = &s.manager.status()[0];
    assert!(status.needs_login.is_some());
    assert_eq!(status.flow, Flow::DeviceCode);
    let e = s.manager.access_token("nobody").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotConfigured);
    assert!(e.to_string().contains("nobody"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_store_nothing() {
    let fake = start(|n, _| Reply {
        body: format!(
            r#"{{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"SECRET-AT-{n}"}}"#
        ),
        ..ok(n, 0)
    })
    .await;
    let s = setup_with(
        &fake.url,
        Flow::ClientCredentials,
        TokenSettings::default(),
        None,
    );
    let t = s.manager.access_token("tickets").await.unwrap();
    assert_eq!(t.token.expose(), "SECRET-AT-1");
    let form = fake.form(0);
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("grant_type"), Some("client_credentials"));
    assert_eq!(get("scope"), Some("https://outlook.office365.com/.default"));
    assert_eq!(get("client_secret"), Some(CLIENT_SECRET));
    assert!(get("refresh_token").is_none());
    assert!(s.store.load("tickets").unwrap().is_none());
    let status = &s.manager.status()[0];
    assert!(status.needs_login.is_none() && status.refresh_token_stored_at.is_none());
    assert_nothing_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_client_secret_hint() {
    let fake = start(|_, _| {
        error(
            401,
            r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.\r\nTrace ID: c3","error_codes":[7000215]}"#,
        )
    })
    .await;
    let s = setup_with(
        &fake.url,
        Flow::ClientCredentials,
        TokenSettings::default(),
        None,
    );
    let e = s.manager.access_token("tickets").await.unwrap_err();
    assert_eq!((e.kind, e.aadsts), (ErrorKind::Permanent, Some(7000215)));
    let text = e.to_string();
    assert!(text.starts_with("token request (client_credentials) for account tickets failed: AADSTS7000215 invalid client secret — "), "{text}");
    assert!(
        text.contains("`client_secret` of provider `m365`"),
        "{text}"
    );
    assert!(!text.contains(CLIENT_SECRET));
    assert_nothing_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_endpoint_times_out_and_big_bodies_are_refused() {
    let fake = start(|n, _| {
        if n == 1 {
            Reply {
                delay: Duration::from_secs(3),
                ..ok(n, 3600)
            }
        } else {
            Reply {
                body: format!("{{\"access_token\":\"{}\"}}", "A".repeat(100_000)),
                ..ok(n, 3600)
            }
        }
    })
    .await;
    let settings = TokenSettings {
        request_timeout: Duration::from_millis(300),
        ..TokenSettings::default()
    };
    let s = setup_with(&fake.url, Flow::AuthorizationCode, settings, Some(SEED_RT));
    let started = std::time::Instant::now();
    let e = s.manager.access_token("tickets").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(e.kind, ErrorKind::Transient);
    assert!(e.message.contains("timed out (request)"), "{}", e.message);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let e = s.manager.access_token("tickets").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient);
    assert!(e.message.contains("more than 65536 bytes"), "{}", e.message);
    assert_eq!(stored(&s), SEED_RT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoint_is_transient() {
    // Bind then drop a listener so the port is (very likely) closed.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/token");
    let s = setup(&url);
    let e = s.manager.access_token("tickets").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient);
    assert!(
        e.message
            .contains("cannot reach the token endpoint 127.0.0.1"),
        "{}",
        e.message
    );
    assert!(e.hint().contains("authbridge retries"), "{}", e.hint());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_token_is_refreshed_in_the_background() {
    // Lifetime 4 s: margin min(300 s, 2 s) = 2 s; served as is for 2 s, then served while one
    // background refresh runs, and waited for after 3 s.
    let fake = start(|n, _| ok(n, 4)).await;
    let s = setup(&fake.url);
    let first = s.manager.access_token("tickets").await.unwrap();
    // Soft refresh point: expiry - 2 s; hard: expiry - 1 s. Ask in between.
    let between = first.expires_at - Duration::from_millis(1600);
    tokio::time::sleep_until(tokio::time::Instant::from_std(between)).await;
    let still = s.manager.access_token("tickets").await.unwrap();
    assert_eq!(still.generation, first.generation);
    for _ in 0..100 {
        if fake.count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fake.count(), 2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let next = s.manager.access_token("tickets").await.unwrap();
    assert!(next.generation > first.generation);
    assert_eq!(next.token.expose(), "SECRET-AT-2");
    assert_eq!(fake.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_exchange_stores_the_refresh_token() {
    let fake = start(|n, _| ok(n, 3600)).await;
    let s = setup_with(
        &fake.url,
        Flow::AuthorizationCode,
        TokenSettings::default(),
        None,
    );
    let t = s
        .manager
        .exchange_and_store(
            "tickets",
            &[
                ("grant_type", "authorization_code"),
                ("code", "SECRET-CODE"),
                ("redirect_uri", "http://localhost:8925/callback"),
                ("code_verifier", "SECRET-VERIFIER"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(t.token.expose(), "SECRET-AT-1");
    assert_eq!(stored(&s), "SECRET-RT-1");
    // Served from the cache afterwards.
    assert_eq!(
        s.manager.access_token("tickets").await.unwrap().generation,
        t.generation
    );
    assert_eq!(fake.count(), 1);
    assert_nothing_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_refreshes_only_idle_refresh_tokens() {
    let fake = start(|n, _| ok(n, 3600)).await;
    let s = setup(&fake.url);
    s.manager.keepalive_once(Duration::from_secs(86_400)).await;
    assert_eq!(fake.count(), 0, "a fresh refresh token is left alone");
    s.manager.keepalive_once(Duration::ZERO).await;
    assert_eq!(fake.count(), 1);
    assert_eq!(stored(&s), "SECRET-RT-1");
    assert_nothing_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_expires_at_once_does_not_make_the_background_refresher_spin() {
    // `expires_in: 0`: the cached token is due for renewal the moment it arrives. The background
    // refresher must still wait between requests (at least 1 s), not loop on the endpoint.
    let fake = start(|n, _| ok(n, 0)).await;
    let s = setup(&fake.url);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let background = s.manager.spawn_background(
        Duration::from_secs(3600),
        Duration::from_secs(86_400),
        shutdown.clone(),
    );
    s.manager.access_token("tickets").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let requests = fake.count();
    shutdown.cancel();
    background.await.unwrap();
    assert!(
        (2..=4).contains(&requests),
        "{requests} token requests in 2.5 s"
    );
    assert_nothing_secret_logged();
}

/// Makes the token file unwritable for anyone, root included: a non-empty directory takes its
/// place (a rename onto it fails, and so does reading it). Returns where the file went.
fn break_token_file(path: &std::path::Path) -> std::path::PathBuf {
    let aside = path.with_extension("json.aside");
    std::fs::rename(path, &aside).unwrap();
    std::fs::create_dir(path).unwrap();
    std::fs::write(path.join("in-the-way"), b"x").unwrap();
    aside
}

fn repair_token_file(path: &std::path::Path, aside: &std::path::Path) {
    std::fs::remove_dir_all(path).unwrap();
    std::fs::rename(aside, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_the_store_refuses_is_used_from_memory_and_saved_later() {
    // The store breaks while the first refresh is at the token endpoint (after the load, before
    // the save of the rotated token).
    let token_file: Arc<OnceLock<std::path::PathBuf>> = Arc::new(OnceLock::new());
    let aside: Arc<Mutex<Option<std::path::PathBuf>>> = Arc::new(Mutex::new(None));
    let (tf, a) = (token_file.clone(), aside.clone());
    let fake = start(move |n, _| {
        if n == 1 {
            *a.lock().unwrap() = Some(break_token_file(tf.get().unwrap()));
        }
        ok(n, 3600)
    })
    .await;
    let s = setup(&fake.url);
    token_file.set(s.store.path("tickets").unwrap()).unwrap();

    // The access token that came with the unsaveable rotation is served.
    let first = s.manager.access_token("tickets").await.unwrap();
    assert_eq!(first.token.expose(), "SECRET-AT-1");
    let status = &s.manager.status()[0];
    let behind = status
        .store_behind
        .as_deref()
        .expect("the status says the store is behind");
    assert!(behind.contains("not in the token store yet"), "{behind}");
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("not in the token store yet")),
        "{:?}",
        status.last_error
    );
    assert!(status.needs_login.is_none(), "{:?}", status.needs_login);

    // The next refresh sends the new refresh token, not the one the provider replaced.
    let second = s.manager.refresh_now("tickets").await.unwrap();
    assert_eq!(second.token.expose(), "SECRET-AT-2");
    let sent = |i: usize| {
        fake.form(i)
            .into_iter()
            .find(|(k, _)| k == "refresh_token")
            .map(|(_, v)| v)
    };
    assert_eq!(sent(0).as_deref(), Some(SEED_RT));
    assert_eq!(sent(1).as_deref(), Some("SECRET-RT-1"));

    // The store works again (with the old token in place): the background saves the newest one.
    let shutdown = tokio_util::sync::CancellationToken::new();
    let background = s.manager.spawn_background(
        Duration::from_secs(3600),
        Duration::from_secs(86_400),
        shutdown.clone(),
    );
    let aside = aside.lock().unwrap().take().unwrap();
    repair_token_file(token_file.get().unwrap(), &aside);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while stored(&s) != "SECRET-RT-2" {
        assert!(
            std::time::Instant::now() < deadline,
            "the newest refresh token was not saved; stored {}",
            stored(&s)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..100 {
        if s.manager.status()[0].store_behind.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = &s.manager.status()[0];
    assert!(status.store_behind.is_none(), "{:?}", status.store_behind);
    assert!(status.last_error.is_none(), "{:?}", status.last_error);
    // And the refresh after that sends it.
    s.manager.refresh_now("tickets").await.unwrap();
    assert_eq!(sent(2).as_deref(), Some("SECRET-RT-2"));
    assert_eq!(stored(&s), "SECRET-RT-3");
    shutdown.cancel();
    background.await.unwrap();
    let text = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(
        text.contains("could not store the rotated refresh token"),
        "the log says why"
    );
    assert_nothing_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed() {
    // A 307 would make a client re-send the form (client secret, refresh token) to the
    // `Location`: the second fake must never see a request.
    let elsewhere = start(|n, _| ok(n, 3600)).await;
    let location = elsewhere.url.clone();
    let fake = start(move |_, _| Reply {
        status: 307,
        headers: vec![("location", location.clone())],
        body: String::new(),
        delay: Duration::ZERO,
    })
    .await;
    let s = setup(&fake.url);
    let e = s.manager.access_token("tickets").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert_eq!(e.status, Some(307), "{e}");
    assert_eq!(fake.count(), 1);
    assert_eq!(elsewhere.count(), 0, "the redirect was followed");
    assert_eq!(stored(&s), SEED_RT);
}
