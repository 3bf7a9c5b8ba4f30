//! Drives one client connection: client TLS, the pre-login machine, the local credential check,
//! the token, the upstream login, then the pipe.
//!
//! The upstream connection is opened as soon as the client connects, in its own task, so a
//! login costs max(client dialogue, upstream setup) rather than their sum — within the caps on
//! such early connections ([`early`]); a session over them connects after its local login.
//! A relay that logs in to a transactional provider (`upstream.auth`) never connects early:
//! each connection costs a provider login, so it waits for a client that has earned one
//! (`provider_login`).
//! Generic over the client stream, so tests can use in-memory duplex streams.

pub mod early;
pub mod relay;
pub mod reply_watch;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::auth::{Blocked, Credentials, FailureTracker, LoggedName, Verdict};
use crate::config::{ClientTlsMode, Listener, Protocol};
use crate::limits::Limits;
use crate::metrics::{LoginResult, Metrics};
use crate::pipe::{PipeEnd, pipe_watched};
use crate::protocol::first_replies::{FirstReplies, WatchKind};
use crate::protocol::imap::ImapClient;
use crate::protocol::pop3::Pop3Client;
use crate::protocol::smtp::SmtpClient;
use crate::protocol::{
    AfterLogin, ClientContext, ClientProtocol, ClientTls, LoginOutcome, LoginRequest, Step,
};
use crate::tls::MaybeTls;
use crate::token::TokenManager;
use crate::upstream::{self, AuthResult, Connected, UpstreamError};
use early::{EarlySlot, EarlyUpstreams};

/// Client bytes read per call before login.
const READ_CHUNK: usize = 4096;

/// Everything sessions of one listener share.
pub struct Shared {
    pub listener: Listener,
    pub hostname: String,
    pub credentials: Arc<Credentials>,
    pub failures: Arc<FailureTracker>,
    pub tokens: Arc<TokenManager>,
    /// Account name → the token it uses and the XOAUTH2 `user=` it sends.
    pub mailboxes: HashMap<String, Identity>,
    pub limits: Limits,
    /// Upstream connections opened before login, counted across every listener.
    pub early: Arc<EarlyUpstreams>,
    pub metrics: Arc<Metrics>,
    /// What this listener's sessions learned about its upstream (IMAP capabilities).
    pub upstream_memory: Arc<upstream::UpstreamMemory>,
}

/// How an account logs in upstream: whose token (its own, or `token_from`'s) and which
/// XOAUTH2 `user=` this listener's protocol sends (see [`Account::xoauth2_user`]).
#[derive(Clone, Debug)]
pub struct Identity {
    /// The account whose token is used.
    pub token_account: String,
    /// The XOAUTH2 `user=` per protocol.
    pub imap_pop3_user: String,
    pub smtp_user: String,
    /// The signed-in user whose token opens a shared mailbox (empty otherwise), for hints.
    pub delegate: String,
}

impl Identity {
    pub fn of(account: &crate::config::Account) -> Identity {
        Identity {
            token_account: account.token_account().to_owned(),
            imap_pop3_user: account.xoauth2_user(Protocol::Imap).to_owned(),
            smtp_user: account.xoauth2_user(Protocol::Smtp).to_owned(),
            delegate: account.delegate().unwrap_or_default().to_owned(),
        }
    }

    /// The XOAUTH2 `user=` for `protocol`.
    pub fn user(&self, protocol: Protocol) -> &str {
        match protocol {
            Protocol::Smtp => &self.smtp_user,
            Protocol::Imap | Protocol::Pop3 => &self.imap_pop3_user,
        }
    }
}

/// Stop signals: `graceful` asks pre-login sessions to say goodbye; `hard` ends piped sessions.
#[derive(Clone, Default)]
pub struct Stop {
    pub graceful: CancellationToken,
    pub hard: CancellationToken,
}

/// The upstream connection as the session sees it.
enum UpstreamSlot {
    /// Over the early-connection cap: not opened until the local login has succeeded.
    Deferred,
    Pending(AbortOnDrop<Result<Connected, UpstreamError>>),
    Ready(Box<Connected>),
    Failed(String),
    Taken,
}

impl UpstreamSlot {
    /// Wait at most `wait` for the setup to finish.
    async fn resolve(&mut self, wait: Duration) -> Result<&mut Connected, String> {
        if let UpstreamSlot::Pending(handle) = self {
            match timeout(wait, &mut handle.0).await {
                Err(_) => return Err("the upstream did not finish connecting in time".into()),
                Ok(Ok(Ok(c))) => *self = UpstreamSlot::Ready(Box::new(c)),
                Ok(Ok(Err(e))) => *self = UpstreamSlot::Failed(e.to_string()),
                Ok(Err(join)) => {
                    *self = UpstreamSlot::Failed(format!("upstream task failed: {join}"))
                }
            }
        }
        match self {
            UpstreamSlot::Ready(c) => Ok(c),
            UpstreamSlot::Failed(e) => Err(e.clone()),
            UpstreamSlot::Pending(_) | UpstreamSlot::Taken => {
                Err("the upstream did not finish connecting in time".into())
            }
            UpstreamSlot::Deferred => Err("the upstream is opened after login".into()),
        }
    }
}

/// Aborts the upstream setup task when the session ends before using it.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Answer a relay client from outside `allow_from` with `554 5.7.1` and close (RFC 5321 §3.1:
/// a server may refuse service with 554 in place of the greeting). Implicit-TLS listeners
/// complete the handshake first so the client can read the reply.
async fn refuse_relay_source<S>(shared: &Arc<Shared>, stream: S, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    warn!(peer = %peer.ip(), "relay: source not in allow_from, connection refused");
    let session = Session {
        shared: Arc::clone(shared),
        peer,
        upstream: UpstreamSlot::Taken,
        caps_asked: false,
        early: None,
        logged_in: None,
        account: None,
    };
    let mut client = MaybeTls::Plain(stream);
    if shared.listener.tls == ClientTlsMode::Implicit {
        client = match session.accept_tls(client).await {
            Some(c) => c,
            None => return,
        };
    }
    let reply = format!(
        "554 5.7.1 {} does not relay for {}: this address is not in the listener's allow_from\r\n",
        shared.hostname,
        peer.ip()
    );
    let write = async {
        client.write_all(reply.as_bytes()).await?;
        client.shutdown().await
    };
    let _ = timeout(shared.limits.timeouts.client_write, write).await;
}

/// How long a refused over-cap connection may take to be told why.
const OVER_CAP_WRITE: Duration = Duration::from_secs(2);
/// How long, and how many bytes, a refused over-cap connection is read (and discarded) after
/// the reply, so that its close does not turn into a reset that destroys the reply.
const OVER_CAP_LINGER: Duration = Duration::from_millis(500);
const OVER_CAP_LINGER_BYTES: usize = 4096;

/// The reply to a connection over `max_sessions_per_source`, in the listener's protocol
/// (RFC 5321 §3.8 `421`, RFC 3501 §7.1.5 `* BYE`, RFC 3206 `[SYS/TEMP]`).
pub fn over_cap_reply(protocol: Protocol, hostname: &str) -> String {
    const WHY: &str = "Too many connections from your address, try again later";
    match protocol {
        Protocol::Smtp => format!("421 4.7.0 {hostname} {WHY}\r\n"),
        Protocol::Imap => format!("* BYE {WHY}\r\n"),
        Protocol::Pop3 => format!("-ERR [SYS/TEMP] {WHY}\r\n"),
    }
}

/// Refuse a connection over the per-source session cap: on a plaintext or STARTTLS listener
/// the protocol's "too many connections" reply, then close. On an implicit-TLS listener the
/// connection is closed without a handshake: completing one per connection of a flood would
/// spend the CPU the cap protects. Each step is short and bounded (`OVER_CAP_*`).
pub async fn refuse_over_cap<S>(shared: &Shared, mut stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if shared.listener.tls == ClientTlsMode::Implicit {
        return;
    }
    let reply = over_cap_reply(shared.listener.protocol, &shared.hostname);
    let write = async {
        stream.write_all(reply.as_bytes()).await?;
        stream.flush().await?;
        stream.shutdown().await
    };
    if !matches!(timeout(OVER_CAP_WRITE, write).await, Ok(Ok(()))) {
        return;
    }
    let _ = timeout(OVER_CAP_LINGER, async {
        let mut buf = [0u8; 1024];
        let mut discarded = 0;
        while discarded < OVER_CAP_LINGER_BYTES {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
    })
    .await;
}

/// Serve one client connection to its end.
pub async fn serve<S>(shared: Arc<Shared>, stream: S, peer: SocketAddr, stop: Stop)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let started = Instant::now();
    let l = &shared.listener;
    let _active = shared.metrics.session_opened(&l.name);
    // A relay listener's allow_from narrows who may connect: others are refused before anything
    // is opened upstream.
    if let Some(relay) = &l.relay
        && !relay.admits(peer.ip())
    {
        refuse_relay_source(&shared, stream, peer).await;
        return;
    }
    // Early connect, unless this source or the server holds as many pre-login upstream
    // connections as allowed: then after the local login.
    // A Graph listener has no upstream connection: each message is one HTTPS request.
    // A relay that logs in to a provider connects only for a client that has earned it.
    let early = if l.graph.is_some() || provider_login(l) {
        None
    } else {
        shared.early.try_take(peer.ip())
    };
    let upstream = match early {
        _ if l.graph.is_some() => UpstreamSlot::Taken,
        _ if provider_login(l) => UpstreamSlot::Deferred,
        Some(_) => connect_upstream(&shared),
        None => {
            info!(
                peer = %peer.ip(),
                per_source = shared.limits.connections.early_upstream_per_source,
                total = shared.limits.connections.early_upstream_max,
                "pre-login upstream connections at their cap; this session connects upstream after its login"
            );
            UpstreamSlot::Deferred
        }
    };
    let mut session = Session {
        shared: Arc::clone(&shared),
        peer,
        upstream,
        caps_asked: false,
        early,
        logged_in: None,
        account: None,
    };
    let mut client = MaybeTls::Plain(stream);
    if l.tls == ClientTlsMode::Implicit {
        client = match session.accept_tls(client).await {
            Some(c) => c,
            None => return,
        };
    }
    let ctx = ClientContext {
        tls: match l.tls {
            ClientTlsMode::None => ClientTls::None,
            ClientTlsMode::Starttls => ClientTls::StartTls,
            ClientTlsMode::Implicit => ClientTls::Implicit,
        },
        hostname: shared.hostname.clone(),
        limits: shared.limits.protocol.clone(),
    };
    let machine: Box<dyn ClientProtocol> = match l.protocol {
        Protocol::Smtp => match &l.relay {
            Some(relay) => Box::new(SmtpClient::new(ctx).relay(relay.login_waived())),
            None => Box::new(SmtpClient::new(ctx)),
        },
        Protocol::Imap => Box::new(ImapClient::new(ctx)),
        Protocol::Pop3 => Box::new(Pop3Client::new(ctx)),
    };
    let Some((client, leftover)) = session.prelogin(client, machine, &stop).await else {
        debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "session closed before login"
        );
        return;
    };
    // Logged in: the upstream connection is no longer a pre-login one.
    session.early = None;
    if let Some(graph) = &l.graph
        && let Some(account) = session.account.take()
    {
        let (token_account, mailbox, on_behalf) = shared
            .mailboxes
            .get(&account)
            .map(|i| {
                (
                    i.token_account.clone(),
                    i.imap_pop3_user.clone(),
                    !i.delegate.is_empty(),
                )
            })
            .unwrap_or_default();
        let sender = crate::graph::session::Sender {
            graph,
            tokens: &shared.tokens,
            account: &token_account,
            mailbox: &mailbox,
            hostname: &shared.hostname,
            limits: &shared.limits,
            listener: &l.name,
            metrics: &shared.metrics,
            on_behalf,
        };
        tokio::select! {
            end = crate::graph::session::run(client, leftover, &sender) => {
                info!(end = ?end, secs = started.elapsed().as_secs(), "graph session ended");
            }
            _ = stop.hard.cancelled() => info!("session closed: server stopped"),
        }
        return;
    }
    let slot = std::mem::replace(&mut session.upstream, UpstreamSlot::Taken);
    if let Some(settings) = &l.relay {
        let upstream = match slot {
            UpstreamSlot::Ready(conn) => Some((conn.stream, conn.input)),
            // An allow-listed client of a relay with `upstream.auth`: connected (and logged
            // in to the provider) at its first command that needs it.
            UpstreamSlot::Deferred => None,
            _ => return,
        };
        // After a refused message body the connector connection is dropped; the next command
        // that needs it gets a new one, set up as at login.
        let reconnect = || {
            let (upstream, hostname) = (l.upstream.clone(), shared.hostname.clone());
            let timeouts = shared.limits.timeouts.clone();
            async move {
                upstream::connect(&upstream, Protocol::Smtp, true, &hostname, &timeouts)
                    .await
                    .map(|c| (c.stream, c.input))
                    .map_err(|e| e.to_string())
            }
        };
        tokio::select! {
            end = relay::relay(client, leftover, upstream, settings, &shared.limits, reconnect) => {
                info!(end = ?end, secs = started.elapsed().as_secs(), "relay session ended");
            }
            _ = stop.hard.cancelled() => info!("session closed: server stopped"),
        }
        return;
    }
    let UpstreamSlot::Ready(conn) = slot else {
        return;
    };
    let Connected {
        stream: up,
        input: up_leftover,
        ..
    } = *conn;
    // SMTP: the upstream's replies are watched for refusals with a known fix (logged once).
    let reply_subject = session
        .account
        .take()
        .filter(|_| l.protocol == Protocol::Smtp)
        .map(|account| reply_watch::Subject {
            mailbox: shared
                .mailboxes
                .get(&account)
                .map(|i| i.imap_pop3_user.clone())
                .unwrap_or_default(),
            account,
            listener: l.name.clone(),
        });
    let idle = shared.limits.timeouts.pipe_idle;
    // IMAP and POP3: Exchange accepts the XOAUTH2 login of a token that may not open the
    // mailbox and fails every later command with "User is authenticated but not connected."
    // The upstream's replies to the client's first commands are watched for it (no probe
    // command, so no round trip at login); SMTP refuses such a token at AUTH already.
    let LoggedIn {
        account,
        mailbox,
        delegate,
    } = session.logged_in.take().unwrap_or_default();
    let watch = match l.protocol {
        Protocol::Imap => Some(FirstReplies::new(WatchKind::Imap, &mailbox)),
        Protocol::Pop3 => Some(FirstReplies::new(WatchKind::Pop3, &mailbox)),
        Protocol::Smtp => None,
    };
    let up = reply_watch::Watched::new(up, reply_subject, &up_leftover);
    tokio::select! {
        end = pipe_watched(client, up, &leftover, &up_leftover, idle, shared.metrics.piped(&l.name), watch) => match end {
            PipeEnd::Closed { up, down } => info!(bytes_up = up, bytes_down = down, secs = started.elapsed().as_secs(), "session ended"),
            PipeEnd::Idle => info!(idle_secs = idle.as_secs(), "session closed: idle"),
            PipeEnd::Error(e) => info!(error = %e, "session ended with a connection error"),
            PipeEnd::NotConnected { upstream } => {
                let ctx = crate::diagnosis::Context {
                    mailbox: &mailbox,
                    account: &account,
                    protocol: Some(l.protocol),
                    delegate: &delegate,
                    ..Default::default()
                };
                warn!(account, upstream = %upstream, hint = %crate::diagnosis::hint(&upstream, &ctx), "login failed: upstream accepted the token but cannot open the mailbox; the client was told to try again later");
                shared.metrics.login(&l.name, l.protocol, LoginResult::upstream_refused);
            }
        },
        _ = stop.hard.cancelled() => info!("session closed: server stopped"),
    }
}

/// A successful upstream login, remembered for the piped phase's hints.
#[derive(Default)]
struct LoggedIn {
    account: String,
    /// The mailbox opened (XOAUTH2 `user=`).
    mailbox: String,
    /// The identity whose token was used, when it is not the mailbox's own.
    delegate: String,
}

struct Session {
    shared: Arc<Shared>,
    peer: SocketAddr,
    upstream: UpstreamSlot,
    /// The machine asked for capabilities once already (they are only waited for once).
    caps_asked: bool,
    /// Counts this session's upstream connection as a pre-login one until login.
    early: Option<EarlySlot>,
    /// After the upstream login: who logged in to what, for the watch over the first replies.
    logged_in: Option<LoggedIn>,
    /// The account whose upstream login was tried last (for the piped session's
    /// hints); on Graph listeners, the account logged in.
    account: Option<String>,
}

/// A relay listener that logs in to its upstream (a transactional provider) with
/// `upstream.auth`. It opens no upstream connection before the client has earned one: each
/// costs a provider login, which providers rate-limit and alert on. So the connection (with
/// its TLS and AUTH) starts at the client's local login, or, for an allow-listed client
/// without one, at its first command that needs the provider (`relay::relay`). Relays without
/// it (the tenant's connector: no login) connect early like every other listener.
fn provider_login(l: &Listener) -> bool {
    l.relay.is_some() && l.upstream.auth.is_some()
}

/// Start the upstream setup of `shared`'s listener in its own task.
fn connect_upstream(shared: &Shared) -> UpstreamSlot {
    let l = &shared.listener;
    let upstream = l.upstream.clone();
    let protocol = l.protocol;
    let relay = l.relay.is_some();
    let hostname = shared.hostname.clone();
    let timeouts = shared.limits.timeouts.clone();
    let metrics = Arc::clone(&shared.metrics);
    let name = l.name.clone();
    let memory = Arc::clone(&shared.upstream_memory);
    let task = tokio::spawn(async move {
        let begun = Instant::now();
        let conn = upstream::connect_with(
            &upstream,
            protocol,
            relay,
            &hostname,
            &timeouts,
            Some(memory),
        )
        .await;
        if conn.is_ok() {
            metrics.upstream_connected(&name, begun.elapsed());
        }
        conn
    });
    UpstreamSlot::Pending(AbortOnDrop(task))
}

enum Io {
    Ok,
    Closed,
}

impl Session {
    /// The local login succeeded (or was waived): a deferred upstream connection starts now.
    fn connect_if_deferred(&mut self) {
        if matches!(self.upstream, UpstreamSlot::Deferred) {
            self.upstream = connect_upstream(&self.shared);
        }
    }

    async fn accept_tls<S>(&self, client: MaybeTls<S>) -> Option<MaybeTls<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let MaybeTls::Plain(plain) = client else {
            return None;
        };
        let config = self.shared.listener.server_tls.clone()?;
        let limit = self.shared.limits.timeouts.client_tls_handshake;
        match timeout(limit, TlsAcceptor::from(config).accept(plain)).await {
            Ok(Ok(tls)) => Some(MaybeTls::Server(Box::new(tls))),
            Ok(Err(e)) => {
                info!(error = %e, "client TLS handshake failed");
                None
            }
            Err(_) => {
                info!(
                    timeout_secs = limit.as_secs(),
                    "client TLS handshake timed out"
                );
                None
            }
        }
    }

    /// Run the pre-login dialogue. Returns the client stream and its unconsumed input once the
    /// client is logged in upstream, or `None` when the session ended.
    async fn prelogin<S>(
        &mut self,
        mut client: MaybeTls<S>,
        mut machine: Box<dyn ClientProtocol>,
        stop: &Stop,
    ) -> Option<(MaybeTls<S>, BytesMut)>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let t = self.shared.limits.timeouts.clone();
        let preauth_deadline = tokio::time::Instant::now() + t.preauth_total;
        let mut input = BytesMut::with_capacity(READ_CHUNK);
        let mut out = Vec::with_capacity(512);
        machine.greeting(&mut out);
        if let Io::Closed = flush(&mut client, &mut out, t.client_write).await {
            return None;
        }
        loop {
            let step = machine.step(&mut input, &mut out);
            if let Io::Closed = flush(&mut client, &mut out, t.client_write).await {
                return None;
            }
            match step {
                Step::Continue => {}
                Step::NeedInput => {
                    input.reserve(READ_CHUNK);
                    tokio::select! {
                        // Idle for `preauth_idle`, or trickling past `preauth_total`
                        // (slowloris): either way the client is gone.
                        r = tokio::time::timeout_at(
                            (tokio::time::Instant::now() + t.preauth_idle).min(preauth_deadline),
                            client.read_buf(&mut input),
                        ) => match r {
                            Ok(Ok(0)) | Ok(Err(_)) => return None,
                            Ok(Ok(_)) => {}
                            Err(_) => {
                                info!(
                                    total = tokio::time::Instant::now() >= preauth_deadline,
                                    "closing a client that did not log in in time"
                                );
                                machine.timed_out(&mut out);
                                flush(&mut client, &mut out, t.client_write).await;
                                close(&mut client).await;
                                return None;
                            }
                        },
                        _ = stop.graceful.cancelled() => {
                            machine.shutting_down(&mut out);
                            flush(&mut client, &mut out, t.client_write).await;
                            close(&mut client).await;
                            return None;
                        }
                    }
                }
                Step::NeedUpstream if self.shared.listener.graph.is_some() => {
                    let caps = crate::graph::connector::GraphConnector::capabilities(
                        crate::graph::MESSAGE_MAX,
                    );
                    machine.upstream_ready(Some(&caps));
                }
                Step::NeedUpstream => {
                    let wait = if self.caps_asked {
                        Duration::ZERO
                    } else {
                        t.capabilities_wait
                    };
                    self.caps_asked = true;
                    let deferred = matches!(self.upstream, UpstreamSlot::Deferred);
                    let caps = match self.upstream.resolve(wait).await {
                        // Deferred until login: answer from the default set, quietly.
                        Err(_) if deferred => None,
                        Ok(c) => Some(c.capabilities.clone()),
                        Err(why) => {
                            warn!(reason = %why, "upstream not ready; answering with default capabilities");
                            None
                        }
                    };
                    machine.upstream_ready(caps.as_deref());
                }
                Step::StartTls => {
                    if !input.is_empty() {
                        info!("client pipelined data after STARTTLS; closing (RFC 3207 §4.2)");
                        close(&mut client).await;
                        return None;
                    }
                    client = self.accept_tls(client).await?;
                    machine.tls_started();
                }
                Step::Login(req) => {
                    let outcome = self.login(req).await;
                    match machine.login_finished(outcome, &mut out) {
                        AfterLogin::Pipe => {
                            if let Io::Closed = flush(&mut client, &mut out, t.client_write).await {
                                return None;
                            }
                            return Some((client, input));
                        }
                        AfterLogin::Continue => {}
                        AfterLogin::Close => {
                            flush(&mut client, &mut out, t.client_write).await;
                            close(&mut client).await;
                            return None;
                        }
                    }
                }
                Step::ProceedWithoutLogin if provider_login(&self.shared.listener) => {
                    // Relay mode with `upstream.auth`, allow-listed client: the provider login
                    // waits for a command that needs it (a MAIL FROM in `allowed_senders`).
                    info!(
                        "allow-listed client relaying without login; the relay connects to its upstream at the first command that needs it"
                    );
                    return Some((client, input));
                }
                Step::ProceedWithoutLogin => {
                    // Relay mode, allow-listed client: the connector must be there.
                    self.connect_if_deferred();
                    let wait = self.shared.limits.timeouts.login_budget;
                    if let Err(why) = self.upstream.resolve(wait).await {
                        warn!(reason = %why, "relay connector unavailable");
                        out.extend_from_slice(
                            format!("421 4.4.2 Relay connector unavailable: {why}\r\n").as_bytes(),
                        );
                        flush(&mut client, &mut out, t.client_write).await;
                        close(&mut client).await;
                        return None;
                    }
                    info!("allow-listed client relaying without login");
                    return Some((client, input));
                }
                Step::Close => {
                    close(&mut client).await;
                    return None;
                }
            }
        }
    }

    /// The local check, the token and the upstream login; the outcome is counted in
    /// `authbridge_logins_total`.
    async fn login(&mut self, req: LoginRequest) -> LoginOutcome {
        let (outcome, result) = self.try_login(req).await;
        let l = &self.shared.listener;
        self.shared.metrics.login(&l.name, l.protocol, result);
        outcome
    }

    async fn try_login(&mut self, req: LoginRequest) -> (LoginOutcome, LoginResult) {
        let shared = Arc::clone(&self.shared);
        let budget = shared.limits.timeouts.login_budget;
        let deadline = tokio::time::Instant::now() + budget;
        // A credential verified before is never throttled, queued or refused.
        let account = match shared.credentials.cached(&req.username, &req.password) {
            Some(account) => account,
            None => match self.check_password(&req, deadline).await {
                Ok(account) => account,
                Err(outcome) => {
                    let result = match outcome {
                        LoginOutcome::BadCredentials => LoginResult::bad_credentials,
                        LoginOutcome::Throttled => LoginResult::throttled,
                        _ => LoginResult::busy,
                    };
                    return (outcome, result);
                }
            },
        };
        if shared.listener.graph.is_some() {
            return self.graph_login(account, deadline).await;
        }
        self.connect_if_deferred();
        if shared.listener.relay.is_some() {
            // Relay mode: the local login is all; nothing but the mail goes upstream.
            let unreachable = LoginResult::upstream_unreachable;
            return match tokio::time::timeout_at(deadline, self.upstream.resolve(budget)).await {
                Ok(Ok(_)) => {
                    info!(account = %account, "relay login ok");
                    let ok = LoginOutcome::Success {
                        untagged: Vec::new(),
                        text: "Authentication successful".into(),
                    };
                    (ok, LoginResult::ok)
                }
                Ok(Err(why)) => {
                    warn!(reason = %why, "relay login: connector unavailable");
                    (LoginOutcome::Unavailable(why), unreachable)
                }
                Err(_) => {
                    let why = "the relay connector did not answer in time";
                    (LoginOutcome::Unavailable(why.into()), unreachable)
                }
            };
        }
        self.account = Some(account.to_string());
        let mut phase = "upstream connection";
        let res =
            tokio::time::timeout_at(deadline, self.upstream_login(&account, &mut phase)).await;
        match res {
            Ok(outcome) => outcome,
            Err(_) => {
                let why = format!(
                    "timed out after {}s waiting for the {phase}; try again later",
                    budget.as_secs()
                );
                warn!(account = %account, "login failed: {why}");
                let result = if phase == "token endpoint" {
                    LoginResult::token_unavailable
                } else {
                    LoginResult::upstream_unreachable
                };
                (LoginOutcome::Unavailable(why), result)
            }
        }
    }

    /// Graph listeners: the local login is checked; the account's Graph token must be there
    /// (as an SMTP login needs its token), so a client learns of a token problem at AUTH
    /// (`454 4.7.0`) rather than after sending a whole message.
    async fn graph_login(
        &mut self,
        account: String,
        deadline: tokio::time::Instant,
    ) -> (LoginOutcome, LoginResult) {
        let shared = Arc::clone(&self.shared);
        // A shared mailbox (`token_from`) sends with its token owner's Graph token.
        let (token_account, on_behalf) = shared
            .mailboxes
            .get(&account)
            .map(|i| (i.token_account.clone(), !i.delegate.is_empty()))
            .unwrap_or_else(|| (account.clone(), false));
        let Some(config) = shared.tokens.account(&token_account) else {
            let why = format!("account {token_account} is not configured");
            return (
                LoginOutcome::Unavailable(why),
                LoginResult::token_unavailable,
            );
        };
        if let Err(why) = crate::graph::supported(&config.provider) {
            warn!(account = %account, "login failed: {why}");
            return (
                LoginOutcome::Unavailable(why),
                LoginResult::token_unavailable,
            );
        }
        let scopes = crate::graph::scopes(&config.provider, on_behalf);
        let fetched = tokio::time::timeout_at(
            deadline,
            shared.tokens.access_token_for(&token_account, &scopes),
        )
        .await;
        match fetched {
            Ok(Ok(_)) => {
                info!(account = %account, "login ok (Microsoft Graph)");
                self.account = Some(account);
                let ok = LoginOutcome::Success {
                    untagged: Vec::new(),
                    text: "Authentication successful".into(),
                };
                (ok, LoginResult::ok)
            }
            Ok(Err(e)) => {
                warn!(account = %account, error = %e, "login failed: no Microsoft Graph access token");
                (unavailable(&e), LoginResult::token_unavailable)
            }
            Err(_) => {
                let why = "timed out waiting for the token endpoint; try again later".to_string();
                warn!(account = %account, "login failed: {why}");
                (
                    LoginOutcome::Unavailable(why),
                    LoginResult::token_unavailable,
                )
            }
        }
    }

    /// The argon2 check of a credential not verified before, under the throttle: refused if its
    /// (source, user) is over the failure limit, else counted when it starts, at most
    /// `CHECKS_PER_SOURCE` at once per source, in the bounded argon2 queue, all within the
    /// login's deadline.
    async fn check_password(
        &self,
        req: &LoginRequest,
        deadline: tokio::time::Instant,
    ) -> Result<String, LoginOutcome> {
        let shared = &self.shared;
        let user = LoggedName(&req.username);
        let checked = tokio::time::timeout_at(deadline, async {
            let attempt = shared.failures.begin(self.peer.ip(), &req.username).await?;
            let verdict = shared
                .credentials
                .verify(&req.username, &req.password)
                .await;
            Ok::<_, Blocked>((attempt, verdict))
        })
        .await;
        let (mut attempt, verdict) = match checked {
            Ok(Ok(checked)) => checked,
            Ok(Err(Blocked)) => {
                warn!(user = %user, "login refused: too many failures for this user from this address");
                return Err(LoginOutcome::Throttled);
            }
            Err(_) => {
                warn!(user = %user, "login refused: the password check did not finish in time");
                return Err(LoginOutcome::Unavailable(
                    "the local credential check timed out; try again".into(),
                ));
            }
        };
        match verdict {
            Verdict::Account(account) => Ok(account),
            Verdict::Busy => {
                warn!(user = %user, "login refused: the password check queue is full");
                Err(LoginOutcome::Unavailable(
                    "too many logins are being checked; try again".into(),
                ))
            }
            Verdict::Invalid => {
                let (delay, over) = attempt.failed();
                warn!(user = %user, "login failed: unknown user or wrong password");
                tokio::time::sleep(delay).await;
                Err(if over {
                    LoginOutcome::Throttled
                } else {
                    LoginOutcome::BadCredentials
                })
            }
        }
    }

    async fn upstream_login(
        &mut self,
        account: &str,
        phase: &mut &'static str,
    ) -> (LoginOutcome, LoginResult) {
        let shared = Arc::clone(&self.shared);
        let Some(identity) = shared.mailboxes.get(account).cloned() else {
            let why = format!("account {account} has no mailbox configured");
            return (
                LoginOutcome::Unavailable(why),
                LoginResult::token_unavailable,
            );
        };
        let mailbox = identity.user(shared.listener.protocol).to_owned();
        let token_account = identity.token_account.as_str();
        let auth_limit = shared.limits.timeouts.upstream_auth;
        *phase = "upstream connection";
        let conn = match self
            .upstream
            .resolve(shared.limits.timeouts.login_budget)
            .await
        {
            Ok(c) => c,
            Err(why) => {
                warn!(account, reason = %why, "login failed: upstream unavailable");
                return (
                    LoginOutcome::Unavailable(why),
                    LoginResult::upstream_unreachable,
                );
            }
        };
        *phase = "token endpoint";
        let token = match shared.tokens.access_token(token_account).await {
            Ok(t) => t,
            Err(e) => {
                warn!(account, token_from = token_account, error = %e, "login failed: no access token");
                return (unavailable(&e), LoginResult::token_unavailable);
            }
        };
        *phase = "upstream authentication";
        let begun = Instant::now();
        let first = conn.authenticate(&mailbox, &token.token, auth_limit).await;
        let listener = &shared.listener.name;
        shared.metrics.upstream_logged_in(listener, begun.elapsed());
        let rejected = match first {
            Ok(AuthResult::Ok { untagged, text }) => {
                info!(account, mailbox = %mailbox, "login ok");
                self.logged_in = Some(LoggedIn {
                    account: account.to_string(),
                    mailbox,
                    delegate: identity.delegate.clone(),
                });
                return (LoginOutcome::Success { untagged, text }, LoginResult::ok);
            }
            Ok(AuthResult::Rejected(text)) => text,
            Err(e) => {
                warn!(account, error = %e, "login failed: upstream authentication broke off");
                return (unavailable(&e), LoginResult::upstream_unreachable);
            }
        };
        info!(account, upstream = %rejected, "upstream refused the access token; refreshing it and retrying once");
        *phase = "token endpoint";
        let token = match shared
            .tokens
            .refresh_after_rejection(token_account, &token)
            .await
        {
            Ok(t) => t,
            Err(e) => {
                warn!(account, error = %e, "login failed: token refresh after an upstream rejection failed");
                return (unavailable(&e), LoginResult::token_unavailable);
            }
        };
        *phase = "upstream authentication";
        let begun = Instant::now();
        let second = conn.authenticate(&mailbox, &token.token, auth_limit).await;
        shared.metrics.upstream_logged_in(listener, begun.elapsed());
        match second {
            Ok(AuthResult::Ok { untagged, text }) => {
                info!(account, mailbox = %mailbox, "login ok after token refresh");
                self.logged_in = Some(LoggedIn {
                    account: account.to_string(),
                    mailbox,
                    delegate: identity.delegate.clone(),
                });
                (LoginOutcome::Success { untagged, text }, LoginResult::ok)
            }
            Ok(AuthResult::Rejected(text)) => {
                let ctx = crate::diagnosis::Context {
                    mailbox: &mailbox,
                    account,
                    protocol: Some(shared.listener.protocol),
                    delegate: &identity.delegate,
                    ..Default::default()
                };
                warn!(account, upstream = %text, hint = %crate::diagnosis::hint(&text, &ctx), "login failed: upstream refused a fresh token");
                (LoginOutcome::Rejected(text), LoginResult::upstream_refused)
            }
            Err(e) => {
                warn!(account, error = %e, "login failed: upstream authentication broke off");
                (unavailable(&e), LoginResult::upstream_unreachable)
            }
        }
    }
}

/// A failure the client is told about as temporary (4xx, `NO [UNAVAILABLE]`), with its text.
fn unavailable(e: &impl std::fmt::Display) -> LoginOutcome {
    LoginOutcome::Unavailable(e.to_string())
}

/// Write `out` to the client; a client that does not take it within `limit` is gone.
async fn flush<S: AsyncWrite + Unpin>(client: &mut S, out: &mut Vec<u8>, limit: Duration) -> Io {
    if out.is_empty() {
        return Io::Ok;
    }
    let res = timeout(limit, async {
        client.write_all(out).await?;
        client.flush().await
    })
    .await;
    out.clear();
    match res {
        Ok(Ok(())) => Io::Ok,
        _ => Io::Closed,
    }
}

/// How long, and how many bytes, a closing session keeps reading (and discarding) what the
/// client still sends.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// Close the client connection after our last reply: shut down our write side (FIN), then keep
/// reading and discarding what the client had already pipelined, until it closes, for at most
/// [`LINGER`] and [`LINGER_BYTES`]. Closing a socket with unread input makes the kernel send a
/// reset, and a reset can destroy the final reply (`421 … closing connection`, `* BYE …`) in
/// the client's receive buffer before the client reads it (a lingering close, as HTTP servers do).
async fn close<S: AsyncRead + AsyncWrite + Unpin>(client: &mut S) {
    let _ = timeout(LINGER, client.shutdown()).await;
    let _ = timeout(LINGER, async {
        let mut buf = [0u8; 4096];
        let mut discarded = 0;
        while discarded < LINGER_BYTES {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
    })
    .await;
}
