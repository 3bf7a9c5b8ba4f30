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
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

use crate::admin::{AdminState, ListenerState, View};
use crate::auth::{Credentials, FailureTracker};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::session::early::EarlyUpstreams;
use crate::session::{self, Shared, Stop};

mod reload;
use crate::token::{MasterKey, TokenManager, TokenSettings, TokenStore};
use reload::{Background, Control, Counts, State};
pub use reload::{ReloadCounts, ReloadError, ReloadReport};

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
    /// Each listener's name and bound address at start (useful with port 0); after a reload see
    /// [`Running::listeners`].
    pub addrs: Vec<(String, SocketAddr)>,
    /// The admin listener's bound address, when `admin.listen` is configured.
    pub admin_addr: Option<SocketAddr>,
    /// What `/metrics` exposes; recorders for the whole server.
    pub metrics: Arc<Metrics>,
    /// What `/readyz` reports on (a reload replaces its view).
    pub admin: Arc<AdminState>,
    /// The token manager at start (a reload may replace it: [`Running::current_tokens`]).
    pub tokens: Arc<TokenManager>,
    /// The local credentials at start (their argon2 counters: tests, diagnostics).
    pub credentials: Arc<Credentials>,
    control: Arc<Control>,
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

    /// Apply a new config to new sessions (see [`reload`] for what changes and what is refused).
    /// On an error nothing changed. Reloads are serialised; each is counted.
    pub async fn reload(&self, config: Config) -> Result<ReloadReport, ReloadError> {
        self.control.reload(config).await
    }

    /// Reload outcomes so far.
    pub fn reload_counts(&self) -> ReloadCounts {
        self.control.counts.snapshot()
    }

    /// Count a reload that failed before it reached the server (the new file did not load).
    pub fn reload_failed_to_load(&self) {
        self.control.counts.record(false);
        self.control.metrics.config_reload(false);
    }

    /// Each listener's name and bound address now.
    pub async fn listeners(&self) -> Vec<(String, SocketAddr)> {
        let state = self.control.state.lock().await;
        state
            .listeners
            .iter()
            .map(|l| (l.name.clone(), l.addr))
            .collect()
    }

    /// The token manager serving new sessions now.
    pub async fn current_tokens(&self) -> Arc<TokenManager> {
        Arc::clone(&self.control.state.lock().await.tokens)
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
    let accounts = config.token_accounts().map(|a| a.token_config()).collect();
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
    let metrics = Metrics::new();
    let tokens = token_manager_with(&config, server_token_settings(&config, &metrics))?;
    let credentials = Credentials::new(&config.accounts);
    let failures = FailureTracker::new(config.limits.connections.clone());
    let early = EarlyUpstreams::new(
        config.limits.connections.early_upstream_per_source,
        config.limits.connections.early_upstream_max,
    );

    let mut bound = Vec::new();
    for l in &config.listeners {
        let listener = bind_listener(l.listen).map_err(|source| RunError::Bind {
            name: l.name.clone(),
            addr: l.listen,
            source,
        })?;
        bound.push(Arc::new(listener));
    }
    let admin = AdminState::new(
        Arc::clone(&metrics),
        View {
            config: config.clone(),
            tokens: Arc::clone(&tokens),
            listeners: config
                .listeners
                .iter()
                .zip(&bound)
                .map(|(l, socket)| ListenerState {
                    name: l.name.clone(),
                    bound: Ok(socket.local_addr().unwrap_or(l.listen)),
                })
                .collect(),
        },
        shutdown.clone(),
    );
    let admin_server = match config.admin_listen {
        None => None,
        Some(addr) => Some(
            crate::admin::start(addr, Arc::clone(&admin))
                .await
                .map_err(|source| RunError::Bind {
                    name: "admin".into(),
                    addr,
                    source,
                })?,
        ),
    };
    let admin_addr = admin_server.as_ref().map(|a| a.addr);

    let control = Arc::new(Control {
        state: tokio::sync::Mutex::new(State {
            background: Background::start(&tokens, &shutdown),
            tokens: Arc::clone(&tokens),
            credentials: Arc::clone(&credentials),
            failures,
            early,
            metrics: Arc::clone(&metrics),
            admin: Arc::clone(&admin),
            listeners: Vec::new(),
            config: config.clone(),
        }),
        shutdown: shutdown.clone(),
        hard: CancellationToken::new(),
        tracker: TaskTracker::new(),
        counts: Counts::default(),
        metrics: Arc::clone(&metrics),
    });
    let mut addrs = Vec::new();
    {
        let mut state = control.state.lock().await;
        let common = state.common();
        for (l, socket) in config.listeners.iter().zip(bound) {
            let live = control.spawn_listener(l.clone(), socket, &common);
            addrs.push((live.name.clone(), live.addr));
            state.listeners.push(live);
        }
    }
    let grace = config.limits.timeouts.shutdown_grace;
    let done = tokio::spawn({
        let control = Arc::clone(&control);
        async move {
            shutdown.cancelled().await;
            // A reload in progress finishes first; none starts after this.
            let mut state = control.state.lock().await;
            for l in state.listeners.drain(..) {
                let _ = l.task.await;
            }
            let tracker = &control.tracker;
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
                control.hard.cancel();
                let _ = tokio::time::timeout(HARD_STOP_WAIT, tracker.wait()).await;
            }
            state.background.abort();
            // Alive (and answering 503 on /readyz) until the sessions are gone.
            if let Some(admin) = admin_server {
                admin.stop().await;
            }
            info!("stopped");
        }
    });
    Ok(Running {
        addrs,
        admin_addr,
        metrics,
        admin,
        tokens,
        credentials,
        control,
        done,
    })
}

/// The token settings of a serving process: the config's limits and its `on_reauth_needed`
/// hook (only the server runs the hook).
fn server_token_settings(config: &Config, metrics: &Arc<Metrics>) -> TokenSettings {
    TokenSettings {
        on_reauth_needed: config.on_reauth_needed.clone(),
        metrics: Some(Arc::clone(metrics)),
        ..config.limits.token_settings()
    }
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

/// What one accept loop works with. `shared` is read at each accept, so a reload that keeps the
/// socket changes the settings of the next session without a gap in accepting.
struct AcceptLoop {
    socket: Arc<TcpListener>,
    shared: watch::Receiver<Arc<Shared>>,
    /// Cancelled when the listener is removed or re-bound, and at shutdown.
    accepting: CancellationToken,
    stop: Stop,
    /// Every session of the process (shutdown waits for them).
    tracker: TaskTracker,
    /// This listener's sessions (a removed listener drains them).
    sessions: TaskTracker,
}

async fn accept_loop(a: AcceptLoop) {
    let AcceptLoop {
        socket,
        shared,
        accepting,
        stop,
        tracker,
        sessions,
    } = a;
    let limits = shared.borrow().limits.connections.clone();
    let permits = Arc::new(Semaphore::new(limits.max_sessions));
    let per_source = Arc::new(PerSource::default());
    let name = shared.borrow().listener.name.clone();
    let mut next_id: u64 = 0;
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = accepting.cancelled() => return,
        };
        let (tcp, peer) = tokio::select! {
            r = socket.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    error!(listener = %name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = accepting.cancelled() => return,
        };
        let Some(slot) = per_source.take(peer.ip(), limits.max_sessions_per_source) else {
            warn!(listener = %name, %peer, max_sessions_per_source = limits.max_sessions_per_source, "too many sessions from this address; connection refused (raise limits.max_sessions_per_source if this source is legitimate)");
            // The refusal holds its listener permit: a flood of refusals is bounded by
            // max_sessions like any other connection.
            let shared = Arc::clone(&*shared.borrow());
            tracker.spawn(async move {
                session::refuse_over_cap(&shared, tcp).await;
                drop(permit);
            });
            continue;
        };
        let _ = tcp.set_nodelay(true);
        next_id += 1;
        let span = info_span!("session", listener = %name, id = next_id, %peer);
        let shared = Arc::clone(&*shared.borrow());
        let stop = stop.clone();
        let mine = sessions.token();
        tracker.spawn(
            async move {
                session::serve(shared, tcp, peer, stop).await;
                drop(slot);
                drop(permit);
                drop(mine);
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
