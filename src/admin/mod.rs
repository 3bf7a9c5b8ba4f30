//! The admin listener: HTTP (HTTPS with `admin.cert`/`admin.key`) on, by default, a loopback
//! address. For probes and scrapers: `GET /healthz` (liveness), `GET /readyz` (every listener
//! bound, every account able to get a token now) and `GET /metrics` (Prometheus). For people:
//! the admin page at `/` — every account's and listener's state, and "Authorise" for delegated
//! accounts. Off unless `admin:` is configured.
//!
//! Files: this one owns the socket (connection cap, TLS handshake and per-connection deadlines,
//! hyper's request head limit) and the shared [`AdminState`]; `router.rs` maps method and path
//! to a handler and adds the security headers; `health.rs` answers `/healthz` and `/readyz`;
//! `scrape.rs` answers `/metrics`; `access.rs` the Host check, sessions, CSRF and password;
//! `http_input.rs` parses Host, Cookie and form input; `flows.rs` the page's sign-ins;
//! `snapshot.rs` gathers what the page shows; `page.rs` renders it; `static/` holds the
//! page's script and style sheet.
//!
//! Invariant: no GET handler opens a mail session or causes a token request. Readiness, the
//! token gauges and the page read the token manager's state and the status files only; only a
//! sign-in started from the page (a POST) talks to the identity provider.

mod access;
mod flows;
mod health;
pub mod http_input;
mod page;
mod router;
mod scrape;
mod snapshot;

/// HTML escaping, shared with the one page `authbridge login` serves on its redirect listener.
pub(crate) use page::esc as html_escape;
pub use router::CSP;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, RwLock};

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
    /// Host check, sessions and password (the settings at start: `admin` needs a restart).
    access: access::Access,
    flows: Arc<flows::Flows>,
    /// The admin listener's bound address (set by [`start`]).
    bound: OnceLock<SocketAddr>,
}

impl AdminState {
    /// The state for `view`; the admin page's settings come from `view.config.admin`.
    pub fn new(metrics: Arc<Metrics>, view: View, draining: CancellationToken) -> Arc<AdminState> {
        let throttle = crate::auth::FailureTracker::new(view.config.limits.connections.clone());
        let access = access::Access::new(
            view.config.admin.clone(),
            view.config.admin_listen,
            throttle,
        );
        Arc::new(AdminState {
            metrics,
            view: RwLock::new(Arc::new(view)),
            draining,
            limits: AdminLimits::default(),
            access,
            flows: Arc::new(flows::Flows::default()),
            bound: OnceLock::new(),
        })
    }

    /// Where the identity provider sends the browser back after Authorise: `admin.redirect_uri`,
    /// else `http(s)://localhost:<port>/callback` with the listener's port.
    pub fn redirect_uri(&self) -> String {
        if let Some(uri) = &self.access.settings().redirect_uri {
            return uri.clone();
        }
        let port = self
            .bound
            .get()
            .map(SocketAddr::port)
            .or(self.view().config.admin_listen.map(|a| a.port()))
            .unwrap_or(9925);
        let scheme = if self.access.tls() { "https" } else { "http" };
        format!("{scheme}://localhost:{port}/callback")
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
    flows: Arc<flows::Flows>,
}

impl AdminServer {
    /// Stop accepting; give open connections [`AdminLimits::shutdown_wait`] to finish.
    pub async fn stop(self) {
        self.flows.abort_all();
        self.stop.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(self.limits.shutdown_wait, self.tracker.wait()).await;
    }
}

/// Bind `addr` and serve the admin endpoints until [`AdminServer::stop`].
pub async fn start(addr: SocketAddr, state: Arc<AdminState>) -> std::io::Result<AdminServer> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr().unwrap_or(addr);
    let _ = state.bound.set(bound);
    if !addr.ip().is_loopback() {
        warn!(
            %bound,
            "admin.listen is not a loopback address: anyone who can reach it reads /metrics and \
             /readyz (account names, token state; the page itself asks for the admin password); \
             bind it to 127.0.0.1 or firewall the port"
        );
    }
    let scheme = if state.access.tls() { "https" } else { "http" };
    info!(
        addr = %bound,
        page = %format!("{scheme}://{bound}/"),
        redirect_uri = %state.redirect_uri(),
        "admin listening (/ /healthz /readyz /metrics)"
    );
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let limits = state.limits.clone();
    let flows = Arc::clone(&state.flows);
    tokio::spawn(accept_loop(listener, state, stop.clone(), tracker.clone()));
    Ok(AdminServer {
        addr: bound,
        stop,
        tracker,
        limits,
        flows,
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

/// One admin connection: the TLS handshake (with `admin.cert`) under its deadline, then
/// HTTP/1.1 under hyper's head limit and header read timeout, closed after
/// [`AdminLimits::connection_total`] whatever it does.
async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    state: Arc<AdminState>,
    stop: CancellationToken,
    limits: &AdminLimits,
) {
    let Some(tls) = state.access.settings().tls.clone() else {
        return serve_http(tcp, peer, state, stop, limits).await;
    };
    let accept = tokio_rustls::TlsAcceptor::from(tls).accept(tcp);
    let stream = tokio::select! {
        r = tokio::time::timeout(limits.tls_handshake, accept) => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "admin: TLS handshake failed");
                return;
            }
            Err(_) => {
                debug!(%peer, "admin: TLS handshake timed out");
                return;
            }
        },
        _ = stop.cancelled() => return,
    };
    serve_http(stream, peer, state, stop, limits).await;
}

async fn serve_http<S>(
    io: S,
    peer: SocketAddr,
    state: Arc<AdminState>,
    stop: CancellationToken,
    limits: &AdminLimits,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let state = Arc::clone(&state);
        async move { Ok::<_, std::convert::Infallible>(router::route(&state, req, peer).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .max_buf_size(limits.max_header_bytes)
        .serve_connection(TokioIo::new(io), service);
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
