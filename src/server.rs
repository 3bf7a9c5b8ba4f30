//! Listeners, connection permits and shutdown tracking.
//!
//! Accept fast, limit early, handshake late: a permit is taken before each accept (per listener)
//! and a per-source slot right after it; the session task does TLS and everything else. Shutdown
//! stops accepting, tells pre-login sessions to say goodbye, waits for piped sessions up to the
//! grace period, then ends them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

use crate::auth::{Credentials, FailureTracker};
use crate::config::Config;
use crate::session::{self, Shared, Stop};
use crate::token::{MasterKey, TokenManager, TokenSettings, TokenStore};

/// After the grace period, how long ended sessions get to unwind before the server returns.
const HARD_STOP_WAIT: Duration = Duration::from_secs(5);
/// How often stored refresh tokens are checked for age (see `spawn_background`).
const KEEPALIVE_EVERY: Duration = Duration::from_secs(3600);
/// Refresh tokens older than this are refreshed in the background.
const KEEPALIVE_MAX_IDLE: Duration = Duration::from_secs(7 * 24 * 3600);

/// A failure that stops the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("listener {name}: cannot listen on {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("token store: {0}")]
    Store(String),
    #[error("unsafe permissions: {0}")]
    Permissions(String),
    #[error("no listeners configured: add at least one under `listeners:`")]
    NoListeners,
}

/// A started server.
pub struct Running {
    /// Each listener's name and bound address (useful with port 0).
    pub addrs: Vec<(String, SocketAddr)>,
    pub tokens: Arc<TokenManager>,
    /// The local credentials (their argon2 counters: tests, diagnostics).
    pub credentials: Arc<Credentials>,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.addrs.iter().find(|(n, _)| n == name).map(|(_, a)| *a)
    }

    /// Wait until the server has stopped (after `shutdown` was cancelled).
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// Open the encrypted token store of a config (key from `key_file`, `AUTHBRIDGE_KEY` or
/// `state_dir/master.key`, created if absent).
///
/// Refuses to start when `state_dir` or the key file exists and is group- or world-accessible:
/// the key decrypts every stored refresh token.
pub fn token_store(config: &Config) -> Result<TokenStore, RunError> {
    let env_key = std::env::var("AUTHBRIDGE_KEY")
        .ok()
        .map(crate::secret::SecretString::new);
    check_private(&config.state_dir, "state_dir", 0o700)?;
    if let Some(key_file) = &config.key_file {
        check_private(key_file, "key_file", 0o600)?;
    } else if env_key.is_none() {
        check_private(&config.state_dir.join("master.key"), "key file", 0o600)?;
    }
    if let crate::token::StoreConfig::Redis(r) = &config.token_store {
        // Replicas must share one key: a key generated here would seal what no other can open.
        let default_key = config.state_dir.join("master.key");
        let key_path = config.key_file.as_deref().unwrap_or(&default_key);
        if env_key.is_none() && !key_path.exists() {
            return Err(RunError::Store(format!(
                "token_store is Redis ({}) but there is no master key: every replica must use \
                 the same one — set AUTHBRIDGE_KEY or `key_file` to the key the other replicas \
                 use (for the first replica: `head -c 32 /dev/urandom | base64` into a secret)",
                r.url
            )));
        }
    }
    let key = MasterKey::load_or_create(config.key_file.as_deref(), env_key, &config.state_dir)
        .map_err(|e| RunError::Store(e.to_string()))?;
    TokenStore::open_with(&config.token_store, &config.state_dir, key)
        .map_err(|e| RunError::Store(e.to_string()))
}

/// An existing `path` must not be readable, writable or searchable by group or others.
fn check_private(path: &std::path::Path, what: &str, fix: u32) -> Result<(), RunError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(RunError::Permissions(format!(
                    "{what} {} is accessible by other users (mode {mode:03o}); run `chmod {fix:o} {}`",
                    path.display(),
                    path.display()
                )));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (path, what, fix);
    Ok(())
}

/// Build the token manager for a config (shared by `run`, `check` and the CLI). Only the server
/// runs the `on_reauth_needed` hook (see [`start`]).
pub fn token_manager(config: &Config) -> Result<Arc<TokenManager>, RunError> {
    token_manager_with(config, config.limits.token_settings())
}

fn token_manager_with(
    config: &Config,
    settings: TokenSettings,
) -> Result<Arc<TokenManager>, RunError> {
    let store = token_store(config)?;
    let accounts = config.accounts.iter().map(|a| a.token_config()).collect();
    Ok(TokenManager::new(store, accounts, settings))
}

/// Connections the kernel queues for `accept` (capped by `net.core.somaxconn`). std and mio use
/// 128: a burst of simultaneous logins overflows that, the kernel drops the last ACK of the
/// handshake (or answers with a SYN cookie it then cannot queue), and the client waits for a
/// greeting that never comes (bench/RESULTS.md, cold burst).
const LISTEN_BACKLOG: u32 = 4096;

fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As std and mio do on Unix: a restarted server can bind while old sockets are in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Bind every listener and start serving. Cancelling `shutdown` stops the server.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, RunError> {
    if config.listeners.is_empty() {
        return Err(RunError::NoListeners);
    }
    let tokens = token_manager_with(
        &config,
        TokenSettings {
            on_reauth_needed: config.on_reauth_needed.clone(),
            ..config.limits.token_settings()
        },
    )?;
    // Access tokens of accounts in use are refreshed before they expire; delegated refresh tokens
    // die after 90 days unused: refresh any older than a week.
    let keepalive = tokens.spawn_background(KEEPALIVE_EVERY, KEEPALIVE_MAX_IDLE, shutdown.clone());
    let credentials = Credentials::new(&config.accounts);
    let failures = FailureTracker::new(config.limits.connections.clone());
    let mailboxes: HashMap<String, String> = config
        .accounts
        .iter()
        .map(|a| (a.name.clone(), a.mailbox.clone()))
        .collect();

    let mut bound = Vec::new();
    for l in &config.listeners {
        let listener = bind_listener(l.listen).map_err(|source| RunError::Bind {
            name: l.name.clone(),
            addr: l.listen,
            source,
        })?;
        let addr = listener.local_addr().unwrap_or(l.listen);
        bound.push((l.clone(), listener, addr));
    }

    let stop = Stop {
        graceful: shutdown.clone(),
        hard: CancellationToken::new(),
    };
    let tracker = TaskTracker::new();
    let mut addrs = Vec::new();
    let mut accept_loops = Vec::new();
    for (l, listener, addr) in bound {
        info!(listener = %l.name, protocol = %l.protocol, %addr, upstream = %format!("{}:{}", l.upstream.host, l.upstream.port), "listening");
        addrs.push((l.name.clone(), addr));
        let shared = Arc::new(Shared {
            listener: l,
            hostname: config.hostname.clone(),
            credentials: Arc::clone(&credentials),
            failures: Arc::clone(&failures),
            tokens: Arc::clone(&tokens),
            mailboxes: mailboxes.clone(),
            limits: config.limits.clone(),
        });
        accept_loops.push(tokio::spawn(accept_loop(
            listener,
            shared,
            stop.clone(),
            tracker.clone(),
        )));
    }
    let grace = config.limits.timeouts.shutdown_grace;
    let done = tokio::spawn(async move {
        for l in accept_loops {
            let _ = l.await;
        }
        tracker.close();
        info!(
            sessions = tracker.len(),
            grace_secs = grace.as_secs(),
            "stopped accepting; waiting for sessions to finish"
        );
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            warn!(
                sessions = tracker.len(),
                "grace period over; closing the remaining sessions"
            );
            stop.hard.cancel();
            let _ = tokio::time::timeout(HARD_STOP_WAIT, tracker.wait()).await;
        }
        keepalive.abort();
        info!("stopped");
    });
    Ok(Running {
        addrs,
        tokens,
        credentials,
        done,
    })
}

/// Start and run until `shutdown` is cancelled and the sessions have drained.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    start(config, shutdown).await?.wait().await;
    Ok(())
}

/// Live sessions per source address.
#[derive(Default)]
struct PerSource(Mutex<HashMap<IpAddr, usize>>);

struct SourceSlot {
    map: Arc<PerSource>,
    ip: IpAddr,
}

impl PerSource {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<SourceSlot> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            map: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut m = self.map.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: Stop, tracker: TaskTracker) {
    let limits = shared.limits.connections.clone();
    let permits = Arc::new(Semaphore::new(limits.max_sessions));
    let per_source = Arc::new(PerSource::default());
    let name = shared.listener.name.clone();
    let mut next_id: u64 = 0;
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.graceful.cancelled() => return,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    error!(listener = %name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.graceful.cancelled() => return,
        };
        let Some(slot) = per_source.take(peer.ip(), limits.max_sessions_per_source) else {
            warn!(listener = %name, %peer, "too many sessions from this address; connection dropped");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        next_id += 1;
        let span = info_span!("session", listener = %name, id = next_id, %peer);
        let shared = Arc::clone(&shared);
        let stop = stop.clone();
        tracker.spawn(
            async move {
                session::serve(shared, tcp, peer, stop).await;
                drop(slot);
                drop(permit);
            }
            .instrument(span),
        );
    }
}

#[cfg(test)]
mod listen_tests {
    use super::*;

    /// 200 connections that nobody accepts yet must all complete and then be accepted: with
    /// std's backlog of 128 the 130th connect hangs and later connections are lost.
    #[tokio::test]
    async fn listeners_queue_a_burst_of_connections() {
        let l = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let mut clients = Vec::new();
        for i in 0..200 {
            let c =
                tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
                    .await
                    .unwrap_or_else(|_| panic!("connect {i} timed out: accept queue full"))
                    .unwrap();
            clients.push(c);
        }
        for i in 0..200 {
            tokio::time::timeout(Duration::from_secs(1), l.accept())
                .await
                .unwrap_or_else(|_| panic!("connection {i} was lost"))
                .unwrap();
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn config(dir: &std::path::Path, key_file: Option<&str>) -> Config {
        let key = key_file.map_or(String::new(), |k| format!("key_file: {k}\n"));
        let text = format!("state_dir: state\n{key}");
        Config::parse(&dir.join("authbridge.yaml"), &text).unwrap()
    }

    #[test]
    fn state_dir_and_key_file_must_be_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let c = config(dir, None);
        // First start creates both, private.
        token_store(&c).unwrap();
        let state = dir.join("state");
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join("master.key")), 0o600);

        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = token_store(&c).err().unwrap().to_string();
        assert_eq!(
            e,
            format!(
                "unsafe permissions: state_dir {} is accessible by other users (mode 755); run `chmod 700 {}`",
                state.display(),
                state.display()
            )
        );
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
        let key = state.join("master.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = token_store(&c).err().unwrap().to_string();
        assert!(
            e.contains(&format!(
                "key file {} is accessible by other users (mode 640); run `chmod 600 {}`",
                key.display(),
                key.display()
            )),
            "{e}"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        token_store(&c).unwrap();

        // An explicit key_file is checked under its own name.
        let c = config(dir, Some("secrets/k.key"));
        token_store(&c).unwrap();
        let k = dir.join("secrets/k.key");
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o604)).unwrap();
        let e = token_store(&c).err().unwrap().to_string();
        assert!(e.contains("key_file") && e.contains("chmod 600"), "{e}");
    }
}
