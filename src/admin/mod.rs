//! The admin listener: plain HTTP on (by default) a loopback address, for probes and scrapers.
//! `GET /healthz` (liveness), `GET /readyz` (every listener bound, every account able to get a
//! token now) and `GET /metrics` (Prometheus). Off unless `admin.listen` is configured.
//!
//! Files: this one owns the socket (connection cap, per-connection deadlines, hyper's request
//! head limit) and the shared [`AdminState`]; `router.rs` maps method and path to a handler (the
//! place to add pages); `health.rs` answers `/healthz` and `/readyz`; `scrape.rs` answers
//! `/metrics`.
//!
//! Invariant: no handler opens a mail session or causes a token request. Readiness and the token
//! gauges read the token manager's state and the status files only.

mod health;
mod router;
mod scrape;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::limits::AdminLimits;
use crate::metrics::Metrics;
use crate::token::TokenManager;

/// One configured listener as readiness sees it.
#[derive(Clone, Debug)]
pub struct ListenerState {
    pub name: String,
    /// The bound address, or why it is not bound.
    pub bound: Result<SocketAddr, String>,
}

/// What the admin endpoints report on: the config in force, its token manager and listeners.
/// Replaced as a whole (see [`AdminState::update`]) when the server's configuration changes.
#[derive(Clone)]
pub struct View {
    pub config: Config,
    pub tokens: Arc<TokenManager>,
    pub listeners: Vec<ListenerState>,
}

/// Shared by every admin connection.
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    view: RwLock<Arc<View>>,
    /// The server is shutting down: not ready any more (still alive).
    draining: CancellationToken,
    limits: AdminLimits,
}

impl AdminState {
    pub fn new(metrics: Arc<Metrics>, view: View, draining: CancellationToken) -> Arc<AdminState> {
        Arc::new(AdminState {
            metrics,
            view: RwLock::new(Arc::new(view)),
            draining,
            limits: AdminLimits::default(),
        })
    }

    /// The view in force now.
    pub fn view(&self) -> Arc<View> {
        Arc::clone(&self.view.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Report on a new configuration from now on (after a reload).
    pub fn update(&self, view: View) {
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(view);
    }
}

/// A running admin listener.
pub struct AdminServer {
    pub addr: SocketAddr,
    stop: CancellationToken,
    tracker: TaskTracker,
    limits: AdminLimits,
}

impl AdminServer {
    /// Stop accepting; give open connections [`AdminLimits::shutdown_wait`] to finish.
    pub async fn stop(self) {
        self.stop.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(self.limits.shutdown_wait, self.tracker.wait()).await;
    }
}

/// Bind `addr` and serve the admin endpoints until [`AdminServer::stop`].
pub async fn start(addr: SocketAddr, state: Arc<AdminState>) -> std::io::Result<AdminServer> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr().unwrap_or(addr);
    if !addr.ip().is_loopback() {
        warn!(
            %bound,
            "admin.listen is not a loopback address: anyone who can reach it reads /metrics and \
             /readyz (account names, token state); bind it to 127.0.0.1 or firewall the port"
        );
    }
    info!(addr = %bound, "admin listening (/healthz /readyz /metrics)");
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let limits = state.limits.clone();
    tokio::spawn(accept_loop(listener, state, stop.clone(), tracker.clone()));
    Ok(AdminServer {
        addr: bound,
        stop,
        tracker,
        limits,
    })
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<AdminState>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let limits = state.limits.clone();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        // The cap: a permit before each accept; past it, clients wait in the accept queue.
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.cancelled() => return,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    error!(error = %e, "admin: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let state = Arc::clone(&state);
        let stop = stop.clone();
        let limits = limits.clone();
        tracker.spawn(async move {
            serve_connection(tcp, peer, state, stop, &limits).await;
            drop(permit);
        });
    }
}

/// One admin connection: HTTP/1.1 under hyper's head limit and header read timeout, closed after
/// [`AdminLimits::connection_total`] whatever it does.
async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    state: Arc<AdminState>,
    stop: CancellationToken,
    limits: &AdminLimits,
) {
    let service = service_fn(move |req| {
        let state = Arc::clone(&state);
        async move { Ok::<_, std::convert::Infallible>(router::route(&state, req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .max_buf_size(limits.max_header_bytes)
        .serve_connection(TokioIo::new(tcp), service);
    tokio::pin!(conn);
    let deadline = tokio::time::sleep(limits.connection_total);
    tokio::pin!(deadline);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(%peer, error = %e, "admin connection ended with an error");
            }
            return;
        }
        _ = &mut deadline => debug!(%peer, "admin connection closed: lifetime over"),
        _ = stop.cancelled() => {}
    }
    // Finish a response in flight, then close.
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(limits.shutdown_wait, conn).await;
}
