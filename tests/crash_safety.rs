//! A process rotating refresh tokens in a loop (the real `TokenManager` and `TokenStore`, in a child
//! process: this test binary re-executed with `rotation_child_process`) is killed with SIGKILL at
//! random points, 200 times. The fake token endpoint rotates deterministically (`rt-N` → `rt-N+1`),
//! so after each kill we know which token is old and which is new: the store must load and hold
//! one of the two, never nothing and never a damaged file (DESIGN §3: temp file, fsync, rename).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use authbridge::secret::SecretString;
use authbridge::token::{
    AccountConfig, Endpoints, Flow, MasterKey, ProviderConfig, ProviderKind, StatusFiles,
    TokenManager, TokenSettings, TokenStore,
};

const KILLS: usize = 200;
const DIR_VAR: &str = "AUTHBRIDGE_TEST_ROTATE_DIR";
const URL_VAR: &str = "AUTHBRIDGE_TEST_ROTATE_URL";

fn key() -> MasterKey {
    MasterKey::from_bytes([7; 32], "test key")
}

fn number(token: &str) -> u64 {
    token
        .strip_prefix("rt-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a token of the fake endpoint: {token:?}"))
}

/// Not a test of its own: the child process body when `AUTHBRIDGE_TEST_ROTATE_DIR` is set.
#[test]
fn rotation_child_process() {
    let (Ok(dir), Ok(url)) = (std::env::var(DIR_VAR), std::env::var(URL_VAR)) else {
        return;
    };
    let provider = Arc::new(ProviderConfig {
        name: "fake".into(),
        kind: ProviderKind::Custom,
        flow: Flow::AuthorizationCode,
        client_id: "client".into(),
        credential: authbridge::token::CredentialKind::None,
        client_secret: None,
        assertion: None,
        endpoints: Endpoints {
            token_url: url,
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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = TokenStore::open(Path::new(&dir), key()).unwrap();
        let manager = TokenManager::new(store, vec![account], TokenSettings::default());
        loop {
            if manager.refresh_now("tickets").await.is_err() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
}

/// The deterministic token endpoint: `refresh_token=rt-N` → `refresh_token=rt-(N+1)`. Records the
/// N of the latest request and counts requests.
fn start_endpoint() -> (String, Arc<AtomicU64>, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/t/oauth2/v2.0/token",
        listener.local_addr().unwrap()
    );
    let last = Arc::new(AtomicU64::new(u64::MAX));
    let count = Arc::new(AtomicU64::new(0));
    let (l, c) = (last.clone(), count.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let mut reader = BufReader::new(conn);
            let mut len = 0usize;
            let mut ok = true;
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => {
                        ok = false;
                        break;
                    }
                    Ok(_) => {}
                }
                if line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            if !ok || reader.read_exact(&mut body).is_err() {
                continue;
            }
            let n = form_urlencoded::parse(&body)
                .find(|(k, _)| k == "refresh_token")
                .map(|(_, v)| number(&v))
                .unwrap();
            l.store(n, Ordering::SeqCst);
            c.fetch_add(1, Ordering::SeqCst);
            let json = format!(
                r#"{{"token_type":"Bearer","expires_in":3600,"access_token":"at-{n}","refresh_token":"rt-{}"}}"#,
                n + 1
            );
            let mut conn = reader.into_inner();
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
                json.len()
            );
        }
    });
    (url, last, count)
}

/// xorshift64*: kill points that differ per run (seed printed for a replay).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

#[test]
fn sigkill_while_rotating_leaves_the_old_or_the_new_token() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::open(dir.path(), key()).unwrap();
    store.save("tickets", &SecretString::from("rt-0")).unwrap();
    let (url, last, count) = start_endpoint();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("kill-point seed {seed}");
    let mut rng = Rng(seed);
    let exe = std::env::current_exe().unwrap();
    let (mut old, mut new) = (0, 0);
    let mut stored = 0u64;
    for i in 0..KILLS {
        let requests_before = count.load(Ordering::SeqCst);
        let mut child = Command::new(&exe)
            .args([
                "rotation_child_process",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_VAR, dir.path())
            .env(URL_VAR, &url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Let it rotate for a while (at least one request), then kill it anywhere.
        let wait_start = Instant::now();
        let target = requests_before + 1 + rng.below(3);
        while count.load(Ordering::SeqCst) < target {
            assert!(
                wait_start.elapsed() < Duration::from_secs(20),
                "kill {i}: the child made no token request"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_micros(rng.below(3000)));
        child.kill().unwrap();
        child.wait().unwrap();

        let loaded = store
            .load("tickets")
            .unwrap_or_else(|e| panic!("kill {i} (seed {seed}): the store does not load: {e}"))
            .unwrap_or_else(|| panic!("kill {i} (seed {seed}): no token stored"));
        let s = number(loaded.refresh_token.expose());
        let l = last.load(Ordering::SeqCst);
        assert!(
            s == l || s == l + 1,
            "kill {i} (seed {seed}): stored rt-{s}, the last request sent rt-{l}"
        );
        assert!(
            s >= stored,
            "kill {i}: went back from rt-{stored} to rt-{s}"
        );
        if s == l {
            old += 1;
        } else {
            new += 1;
        }
        stored = s;
        // The status file is whole or absent, never damaged.
        if std::fs::metadata(dir.path().join("status/tickets.json")).is_ok() {
            assert!(StatusFiles::new(dir.path()).load("tickets").is_some());
        }
    }
    println!(
        "{KILLS} kills in {:?}: old token kept {old} times, new token {new} times, {} rotations",
        started.elapsed(),
        stored
    );
    assert!(
        old > 0 && new > 0,
        "kills landed on both sides of the rename: {old} / {new}"
    );
}
