//! Live reload of a running server: the server's mutable state ([`State`]: config, credentials,
//! token manager, live listeners) behind one lock, and [`Control::reload`], which swaps in a new
//! config for new sessions.
//!
//! A reload is all or nothing: it is checked (settings that need a restart), every new socket is
//! bound, and only then is anything changed. What it changes:
//! - listeners: an unchanged address keeps its socket (the accept loop reads the new settings at
//!   its next accept: no gap); a new or moved address is bound; a removed or moved listener stops
//!   accepting and its live sessions drain (the shutdown grace period, then they are ended);
//! - credentials: new logins and hashes for the next login; a login whose hash is unchanged keeps
//!   its verified credential;
//! - accounts and providers: an account whose tokens are for the same identity keeps its cached
//!   access token (a reload never causes a token request); any other account starts afresh;
//! - every other setting (limits' protocol sizes and timeouts, hostname, `on_reauth_needed`)
//!   applies to new sessions.
//!
//! Sessions already running keep the settings they started with and are never cut by a reload.
//! `state_dir`, `key_file`, `token_store`, `log`, `admin` and `limits` on connections need a restart: a
//! reload that changes one of them is refused and changes nothing.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::{
    AcceptLoop, KEEPALIVE_EVERY, KEEPALIVE_MAX_IDLE, accept_loop, bind_listener,
    server_token_settings,
};
use crate::admin::{AdminState, ListenerState, View};
use crate::auth::{Credentials, FailureTracker};
use crate::config::{Config, Listener};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::session::early::EarlyUpstreams;
use crate::session::{Shared, Stop};
use crate::token::{Reconfigured, TokenManager};

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(
        "{} changed; this needs a restart (the running config stays in force): {}",
        .0.iter().map(|c| format!("`{}`", c.key)).collect::<Vec<_>>().join(", "),
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    NeedsRestart(Vec<RestartChange>),
    #[error(
        "listener {name}: cannot listen on {addr}: {source} (the running config stays in force)"
    )]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("no listeners configured: add at least one under `listeners:`")]
    NoListeners,
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// A setting a reload cannot change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartChange {
    /// The config key, e.g. `state_dir`.
    pub key: &'static str,
    /// Old and new value as shown to the operator (never a secret).
    pub from: String,
    pub to: String,
}

impl fmt::Display for RestartChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} → {}", self.key, self.from, self.to)
    }
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Listeners new in this config, with their bound address.
    pub added: Vec<(String, SocketAddr)>,
    /// Listeners gone (their live sessions drain).
    pub removed: Vec<String>,
    /// Listeners whose address changed (new socket; the old one's sessions drain).
    pub rebound: Vec<(String, SocketAddr)>,
    /// Listeners that kept their socket.
    pub kept: Vec<String>,
    /// Accounts kept (with their tokens), renewed, added and removed.
    pub accounts: Reconfigured,
}

impl fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |v: &[String]| {
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join(", ")
            }
        };
        let bound = |v: &[(String, SocketAddr)]| {
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.iter()
                    .map(|(n, a)| format!("{n} on {a}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let a = &self.accounts;
        write!(
            f,
            "listeners added: {}; removed: {}; re-bound: {}; kept: {}; accounts kept: {}; \
             renewed (new token cache): {}; added: {}; removed: {}",
            bound(&self.added),
            names(&self.removed),
            bound(&self.rebound),
            names(&self.kept),
            names(&a.kept),
            names(&a.renewed),
            names(&a.added),
            names(&a.removed),
        )
    }
}

/// Reloads so far, by result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReloadCounts {
    pub ok: u64,
    pub failed: u64,
}

#[derive(Default)]
pub(super) struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
}

impl Counts {
    pub(super) fn record(&self, ok: bool) {
        let c = if ok { &self.ok } else { &self.failed };
        c.fetch_add(1, Ordering::Relaxed);
        // Every reload, from the CLI, SIGHUP or the library, ends in exactly one call of this
        // function; its callers also count it in the metrics (`Control::metrics`).
    }

    pub(super) fn snapshot(&self) -> ReloadCounts {
        ReloadCounts {
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// The token manager's background work (proactive refresh, keep-alive), stopped when a reload
/// replaces the manager or at shutdown.
pub(super) struct Background {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Background {
    pub(super) fn start(tokens: &Arc<TokenManager>, shutdown: &CancellationToken) -> Background {
        let stop = shutdown.child_token();
        // Access tokens of accounts in use are refreshed before they expire; delegated refresh
        // tokens die after 90 days unused: refresh any older than a week.
        let task = tokens.spawn_background(KEEPALIVE_EVERY, KEEPALIVE_MAX_IDLE, stop.clone());
        Background { stop, task }
    }

    /// Ask it to stop (it finishes what it is saving on its own).
    pub(super) fn stop(&self) {
        self.stop.cancel();
    }

    /// At shutdown, after the sessions: end it now.
    pub(super) fn abort(&self) {
        self.stop.cancel();
        self.task.abort();
    }
}

/// One listener that is accepting.
pub(super) struct LiveListener {
    pub(super) name: String,
    /// The address in the config (may have port 0).
    configured: SocketAddr,
    /// The address bound.
    pub(super) addr: SocketAddr,
    socket: Arc<TcpListener>,
    shared: watch::Sender<Arc<Shared>>,
    accepting: CancellationToken,
    /// Ends this listener's piped sessions (child of the server's hard stop).
    hard: CancellationToken,
    sessions: TaskTracker,
    pub(super) task: tokio::task::JoinHandle<()>,
}

/// What every listener's sessions share, as of one config.
pub(super) struct Common {
    hostname: String,
    credentials: Arc<Credentials>,
    failures: Arc<FailureTracker>,
    tokens: Arc<TokenManager>,
    mailboxes: HashMap<String, String>,
    limits: Limits,
    early: Arc<EarlyUpstreams>,
    metrics: Arc<Metrics>,
}

impl Common {
    fn shared(&self, listener: Listener) -> Arc<Shared> {
        Arc::new(Shared {
            listener,
            hostname: self.hostname.clone(),
            credentials: Arc::clone(&self.credentials),
            failures: Arc::clone(&self.failures),
            tokens: Arc::clone(&self.tokens),
            mailboxes: self.mailboxes.clone(),
            limits: self.limits.clone(),
            early: Arc::clone(&self.early),
            metrics: Arc::clone(&self.metrics),
            upstream_memory: Default::default(),
        })
    }
}

/// The server's current configuration and what it built from it.
pub(super) struct State {
    pub(super) config: Config,
    pub(super) tokens: Arc<TokenManager>,
    pub(super) credentials: Arc<Credentials>,
    pub(super) failures: Arc<FailureTracker>,
    /// Pre-login upstream connections, counted across reloads (its limits need a restart).
    pub(super) early: Arc<EarlyUpstreams>,
    /// Recorders for the whole server (kept across reloads).
    pub(super) metrics: Arc<Metrics>,
    /// What `/readyz` reports on; replaced after each applied reload.
    pub(super) admin: Arc<AdminState>,
    pub(super) background: Background,
    pub(super) listeners: Vec<LiveListener>,
}

impl State {
    pub(super) fn common(&self) -> Common {
        Common {
            hostname: self.config.hostname.clone(),
            credentials: Arc::clone(&self.credentials),
            failures: Arc::clone(&self.failures),
            tokens: Arc::clone(&self.tokens),
            mailboxes: self
                .config
                .accounts
                .iter()
                .map(|a| (a.name.clone(), a.mailbox.clone()))
                .collect(),
            limits: self.config.limits.clone(),
            early: Arc::clone(&self.early),
            metrics: Arc::clone(&self.metrics),
        }
    }
}

/// The running server as reloads and shutdown see it.
pub(super) struct Control {
    pub(super) state: tokio::sync::Mutex<State>,
    pub(super) shutdown: CancellationToken,
    pub(super) hard: CancellationToken,
    pub(super) tracker: TaskTracker,
    pub(super) counts: Counts,
    /// `authbridge_config_reloads_total` and the rest.
    pub(super) metrics: Arc<Metrics>,
}

/// Where a listener of the new config gets its socket.
enum Socket {
    /// The live listener at this index keeps serving under the same name.
    Keep(usize),
    /// The socket of the live listener at this index (another name, same fixed address).
    TakeOver(usize),
    New(Arc<TcpListener>),
}

impl Control {
    /// Start accepting on `socket` for `listener`.
    pub(super) fn spawn_listener(
        &self,
        listener: Listener,
        socket: Arc<TcpListener>,
        common: &Common,
    ) -> LiveListener {
        let addr = socket.local_addr().unwrap_or(listener.listen);
        info!(listener = %listener.name, protocol = %listener.protocol, %addr, upstream = %format!("{}:{}", listener.upstream.host, listener.upstream.port), "listening");
        let name = listener.name.clone();
        let configured = listener.listen;
        let (shared, rx) = watch::channel(common.shared(listener));
        let accepting = self.shutdown.child_token();
        let hard = self.hard.child_token();
        let sessions = TaskTracker::new();
        let task = tokio::spawn(accept_loop(AcceptLoop {
            socket: Arc::clone(&socket),
            shared: rx,
            accepting: accepting.clone(),
            stop: Stop {
                graceful: self.shutdown.clone(),
                hard: hard.clone(),
            },
            tracker: self.tracker.clone(),
            sessions: sessions.clone(),
        }));
        LiveListener {
            name,
            configured,
            addr,
            socket,
            shared,
            accepting,
            hard,
            sessions,
            task,
        }
    }

    pub(super) async fn reload(&self, new: Config) -> Result<ReloadReport, ReloadError> {
        let result = self.try_reload(new).await;
        self.counts.record(result.is_ok());
        self.metrics.config_reload(result.is_ok());
        result
    }

    async fn try_reload(&self, new: Config) -> Result<ReloadReport, ReloadError> {
        if self.shutdown.is_cancelled() {
            return Err(ReloadError::ShuttingDown);
        }
        let mut state = self.state.lock().await;
        if self.shutdown.is_cancelled() {
            return Err(ReloadError::ShuttingDown);
        }
        let changes = restart_changes(&state.config, &new);
        if !changes.is_empty() {
            return Err(ReloadError::NeedsRestart(changes));
        }
        if new.listeners.is_empty() {
            return Err(ReloadError::NoListeners);
        }

        // Every socket first: a failure here leaves everything as it was.
        let mut claimed = vec![false; state.listeners.len()];
        let mut plan = Vec::with_capacity(new.listeners.len());
        for l in &new.listeners {
            let same_name = state
                .listeners
                .iter()
                .position(|o| o.name == l.name && o.configured == l.listen);
            let same_addr = || {
                state.listeners.iter().enumerate().position(|(i, o)| {
                    !claimed[i] && l.listen.port() != 0 && o.configured == l.listen
                })
            };
            let socket = match same_name.filter(|&i| !claimed[i]) {
                Some(i) => {
                    claimed[i] = true;
                    Socket::Keep(i)
                }
                None => match same_addr() {
                    Some(i) => {
                        claimed[i] = true;
                        Socket::TakeOver(i)
                    }
                    None => Socket::New(Arc::new(bind_listener(l.listen).map_err(|source| {
                        ReloadError::Bind {
                            name: l.name.clone(),
                            addr: l.listen,
                            source,
                        }
                    })?)),
                },
            };
            plan.push((l.clone(), socket));
        }

        // Commit.
        let settings = server_token_settings(&new, &state.metrics);
        let accounts = new.accounts.iter().map(|a| a.token_config()).collect();
        let (tokens, account_report) = state.tokens.reconfigured(accounts, settings);
        state.background.stop();
        state.background = Background::start(&tokens, &self.shutdown);
        state.tokens = tokens;
        state.credentials = state.credentials.reconfigured(&new.accounts);
        state.config = new;
        let common = state.common();

        let mut old: Vec<Option<LiveListener>> = state.listeners.drain(..).map(Some).collect();
        let mut report = ReloadReport {
            accounts: account_report,
            ..ReloadReport::default()
        };
        let mut live = Vec::with_capacity(plan.len());
        for (l, socket) in plan {
            match socket {
                Socket::Keep(i) => {
                    let kept = old[i].take().expect("each live listener is claimed once");
                    kept.shared.send_replace(common.shared(l));
                    report.kept.push(kept.name.clone());
                    live.push(kept);
                }
                Socket::TakeOver(i) => {
                    let prev = old[i].take().expect("each live listener is claimed once");
                    let socket = Arc::clone(&prev.socket);
                    report.removed.push(prev.name.clone());
                    // Its loop must end before the new one accepts under the new name; the
                    // kernel queues connections meanwhile.
                    prev.accepting.cancel();
                    let (name, sessions, hard) = (prev.name.clone(), prev.sessions, prev.hard);
                    let _ = prev.task.await;
                    self.drain(
                        name,
                        sessions,
                        hard,
                        state.config.limits.timeouts.shutdown_grace,
                    );
                    let started = self.spawn_listener(l, socket, &common);
                    report.added.push((started.name.clone(), started.addr));
                    live.push(started);
                }
                Socket::New(socket) => {
                    let started = self.spawn_listener(l, socket, &common);
                    let entry = (started.name.clone(), started.addr);
                    if old.iter().flatten().any(|o| o.name == started.name) {
                        report.rebound.push(entry);
                    } else {
                        report.added.push(entry);
                    }
                    live.push(started);
                }
            }
        }
        let grace = state.config.limits.timeouts.shutdown_grace;
        for prev in old.into_iter().flatten() {
            if !report.rebound.iter().any(|(n, _)| *n == prev.name) {
                report.removed.push(prev.name.clone());
            }
            prev.accepting.cancel();
            info!(listener = %prev.name, addr = %prev.addr, "stopped listening (config reload)");
            self.drain(prev.name, prev.sessions, prev.hard, grace);
        }
        state.admin.update(View {
            config: state.config.clone(),
            tokens: Arc::clone(&state.tokens),
            listeners: live
                .iter()
                .map(|l| ListenerState {
                    name: l.name.clone(),
                    bound: Ok(l.addr),
                })
                .collect(),
        });
        state.listeners = live;
        Ok(report)
    }

    /// Let the live sessions of a listener that stopped accepting finish, up to `grace`, then end
    /// them (as shutdown does).
    fn drain(
        &self,
        name: String,
        sessions: TaskTracker,
        hard: CancellationToken,
        grace: std::time::Duration,
    ) {
        sessions.close();
        if sessions.is_empty() {
            return;
        }
        info!(listener = %name, sessions = sessions.len(), grace_secs = grace.as_secs(), "listener removed; waiting for its sessions to finish");
        self.tracker.spawn(async move {
            if tokio::time::timeout(grace, sessions.wait()).await.is_err() {
                warn!(listener = %name, sessions = sessions.len(), "grace period over; closing the removed listener's remaining sessions");
                hard.cancel();
            } else {
                info!(listener = %name, "the removed listener's sessions have finished");
            }
        });
    }
}

/// Settings a reload cannot change, with their old and new values.
fn restart_changes(old: &Config, new: &Config) -> Vec<RestartChange> {
    let mut out = Vec::new();
    let mut check = |key: &'static str, from: String, to: String| {
        if from != to {
            out.push(RestartChange { key, from, to });
        }
    };
    check(
        "state_dir",
        old.state_dir.display().to_string(),
        new.state_dir.display().to_string(),
    );
    let key_file = |c: &Config| {
        c.key_file
            .as_ref()
            .map_or("(none)".to_owned(), |p| p.display().to_string())
    };
    check("key_file", key_file(old), key_file(new));
    let level = |c: &Config| c.log_level.clone().unwrap_or_else(|| "info".into());
    check("log.level", level(old), level(new));
    check(
        "log.format",
        format!("{:?}", old.log_format).to_lowercase(),
        format!("{:?}", new.log_format).to_lowercase(),
    );
    let admin = |c: &Config| c.admin_listen.map_or("(off)".to_owned(), |a| a.to_string());
    check("admin.listen", admin(old), admin(new));
    // The store is opened once at start (a Redis connection pool); the description never holds
    // the password.
    check(
        "token_store",
        format!("{:?}", old.token_store),
        format!("{:?}", new.token_store),
    );
    check(
        "limits (connections)",
        format!("{:?}", old.limits.connections),
        format!("{:?}", new.limits.connections),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(
            std::path::Path::new("/etc/authbridge/authbridge.yaml"),
            text,
        )
        .unwrap()
    }

    #[test]
    fn restart_only_settings_are_named_with_old_and_new_values() {
        let old = config("state_dir: state\nlog: { level: info }\n");
        assert!(restart_changes(&old, &old.clone()).is_empty());
        assert!(restart_changes(&old, &config("state_dir: state\nhostname: mx.test\n")).is_empty());
        let new = config(
            "state_dir: /var/lib/other\nkey_file: k.key\nlog: { level: debug, format: json }\n\
             limits: { max_sessions: 7 }\n",
        );
        let changes = restart_changes(&old, &new);
        let keys: Vec<_> = changes.iter().map(|c| c.key).collect();
        assert_eq!(
            keys,
            [
                "state_dir",
                "key_file",
                "log.level",
                "log.format",
                "limits (connections)"
            ]
        );
        assert_eq!(
            changes[0].to_string(),
            "state_dir: /etc/authbridge/state → /var/lib/other"
        );
        let e = ReloadError::NeedsRestart(changes[..2].to_vec()).to_string();
        assert_eq!(
            e,
            "`state_dir`, `key_file` changed; this needs a restart (the running config stays in \
             force): state_dir: /etc/authbridge/state → /var/lib/other; key_file: (none) → \
             /etc/authbridge/k.key"
        );
        // Limits on sizes and timeouts apply on reload.
        let timeouts = config("state_dir: state\nlimits: { pipe_idle_secs: 60, line_max: 1000 }\n");
        assert!(restart_changes(&old, &timeouts).is_empty());
    }
}
