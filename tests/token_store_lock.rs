//! Two token managers on one state directory (two `TokenStore` handles: what `authbridge run`
//! and `authbridge login`, or two `run`s, amount to) rotate one account's refresh token at the
//! same time, against a token endpoint that detects reuse the way strict identity providers do:
//! a refresh token may be redeemed once, and only the newest one. The store's lock, held from
//! loading a refresh token to saving the rotated one, must serialise them: no token is ever sent
//! twice and the newest one is never lost.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authbridge::secret::SecretString;
use authbridge::token::{
    AccountConfig, Endpoints, Flow, MasterKey, ProviderConfig, ProviderKind, TokenManager,
    TokenSettings, TokenStore,
};

const ROUNDS: u64 = 20;

fn key() -> MasterKey {
    MasterKey::from_bytes([9; 32], "test key")
}

fn number(token: &str) -> u64 {
    token
        .strip_prefix("rt-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a token of the fake endpoint: {token:?}"))
}

/// What the endpoint saw.
#[derive(Default)]
struct Seen {
    /// The newest refresh token issued (`rt-N`).
    newest: u64,
    /// Requests that presented an older token than the newest (reuse).
    reused: Vec<u64>,
}

/// `refresh_token=rt-N` → `rt-(N+1)` if `rt-N` is the newest token, else `invalid_grant`. Each
/// answer takes 20 ms, so unserialised refreshes overlap.
fn start_endpoint() -> (String, Arc<Mutex<Seen>>, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/t/oauth2/v2.0/token",
        listener.local_addr().unwrap()
    );
    let seen = Arc::new(Mutex::new(Seen::default()));
    let count = Arc::new(AtomicU64::new(0));
    let (s, c) = (seen.clone(), count.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let (seen, count) = (s.clone(), c.clone());
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(conn);
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                let n = form_urlencoded::parse(&body)
                    .find(|(k, _)| k == "refresh_token")
                    .map(|(_, v)| number(&v))
                    .unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
                let (status, json) = {
                    let mut seen = seen.lock().unwrap();
                    if n == seen.newest {
                        seen.newest = n + 1;
                        (
                            "200 OK",
                            format!(
                                r#"{{"token_type":"Bearer","expires_in":3600,"access_token":"at-{n}","refresh_token":"rt-{}"}}"#,
                                n + 1
                            ),
                        )
                    } else {
                        seen.reused.push(n);
                        (
                            "400 Bad Request",
                            r#"{"error":"invalid_grant","error_description":"AADSTS54005: refresh token already redeemed","error_codes":[54005]}"#.to_owned(),
                        )
                    }
                };
                let mut conn = reader.into_inner();
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
                    json.len()
                );
            });
        }
    });
    (url, seen, count)
}

fn manager(store: TokenStore, url: &str) -> Arc<TokenManager> {
    let provider = Arc::new(ProviderConfig {
        name: "strict".into(),
        kind: ProviderKind::Custom,
        flow: Flow::AuthorizationCode,
        client_id: "client".into(),
        credential: authbridge::token::CredentialKind::None,
        client_secret: None,
        assertion: None,
        endpoints: Endpoints {
            token_url: url.to_owned(),
            authorize_url: None,
            device_code_url: None,
        },
        scopes: vec!["mail".into()],
        redirect_uri: None,
        http: authbridge::token::HttpClient::new(
            authbridge::tls::client_config(None).unwrap(),
            authbridge::token::ProxySetting::Direct,
        ),
    });
    let account = AccountConfig {
        name: "tickets".into(),
        mailbox: "tickets@contoso.com".into(),
        provider,
    };
    TokenManager::new(store, vec![account], TokenSettings::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_managers_on_one_store_never_reuse_or_lose_a_refresh_token() {
    let dir = tempfile::tempdir().unwrap();
    let (url, seen, count) = start_endpoint();
    TokenStore::open(dir.path(), key())
        .unwrap()
        .save("tickets", &SecretString::from("rt-0"))
        .unwrap();
    // Two handles on one directory, as two processes would have.
    let a = manager(TokenStore::open(dir.path(), key()).unwrap(), &url);
    let b = manager(TokenStore::open(dir.path(), key()).unwrap(), &url);
    let rounds = |m: Arc<TokenManager>| async move {
        let mut failures = Vec::new();
        for _ in 0..ROUNDS {
            if let Err(e) = m.refresh_now("tickets").await {
                failures.push(e.to_string());
            }
        }
        failures
    };
    let (fa, fb) = tokio::join!(tokio::spawn(rounds(a)), tokio::spawn(rounds(b)));
    let (fa, fb) = (fa.unwrap(), fb.unwrap());
    let seen = seen.lock().unwrap();
    assert!(
        seen.reused.is_empty(),
        "refresh tokens sent again after they were rotated: {:?}; failures {fa:?} {fb:?}",
        seen.reused
    );
    assert!(fa.is_empty() && fb.is_empty(), "{fa:?} {fb:?}");
    assert_eq!(count.load(Ordering::SeqCst), 2 * ROUNDS);
    assert_eq!(seen.newest, 2 * ROUNDS);
    let stored = TokenStore::open(dir.path(), key())
        .unwrap()
        .load("tickets")
        .unwrap()
        .unwrap();
    assert_eq!(
        number(stored.refresh_token.expose()),
        seen.newest,
        "the newest refresh token is the stored one"
    );
}
