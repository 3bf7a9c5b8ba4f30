//! authbridge's stand-in for Microsoft: a fake Entra ID token service and a fake Exchange Online
//! (SMTP submission, IMAP, POP3) that accept only SASL XOAUTH2 with tokens the fake Entra issued,
//! plus a fake inbound connector (`<tenant>.mail.protection.outlook.com:25`: no AUTH, mail only
//! from an allow-listed IP or a sender with an allowed TLS client certificate).
//!
//! One [`Sandbox`] owns its listeners (all on 127.0.0.1), its token state and an in-memory mail
//! store shared by the mail servers, so a test can send over SMTP and read back over IMAP or
//! POP3. Every server certificate is signed by one process-wide CA ([`Sandbox::ca_pem`]); client
//! certificates for the connector ([`Sandbox::issue_client_cert`]) by an intermediate under it.
//! Dropping the handle (or [`Sandbox::shutdown`]) stops every server and session.
//!
//! The wire behaviour follows what Entra and Exchange send (shared/FACTS.md); the fakes are strict
//! where a proxy could get it wrong (STARTTLS before AUTH, token/mailbox match, rotated refresh
//! tokens) and simple elsewhere (one INBOX per mailbox).

#![forbid(unsafe_code)]

mod assertion;
pub mod cli;
mod conn;
mod connector;
mod entra;
mod exchange;
mod graph;
mod http;
mod imap;
mod mime;
mod pop3;
mod sasl;
mod server;
mod smtp;
mod store;
pub mod tls;
mod util;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde::Serialize;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use connector::PasswordAuth;
pub use exchange::{MailboxRight, MailboxSettings};
pub use graph::{GraphCounters, GraphFailure};
pub use store::MailboxMessage;
pub use tls::{ClientCert, client_config};

/// Fixed ports, or 0 for "any free port" (the default for all).
#[derive(Clone, Debug, Default)]
pub struct Ports {
    pub token: u16,
    pub smtp: u16,
    pub smtps: u16,
    pub imap: u16,
    pub imap_starttls: u16,
    pub pop3: u16,
    /// Microsoft Graph (`sendMail`) over HTTPS.
    pub graph: u16,
    pub pop3_starttls: u16,
    /// The fake inbound connector (plain SMTP, like port 25).
    pub connector: u16,
}

/// How a sandbox behaves. Build with `SandboxOptions { field: x, ..Default::default() }`.
#[derive(Clone, Debug)]
pub struct SandboxOptions {
    /// Lifetime of every access token issued (`expires_in`). Default 3600 s.
    pub token_lifetime: Duration,
    /// How long a refresh token stays usable after it was rotated. Default 2 s.
    pub refresh_grace: Duration,
    /// The tenant in token URLs (`common` and `organizations` are accepted too).
    pub tenant: String,
    pub ports: Ports,
    /// Device codes expire after this (`expires_in`). Default 900 s.
    pub device_code_lifetime: Duration,
    /// Minimum time between device-code polls before `slow_down` (`interval`, rounded up to
    /// whole seconds on the wire). Default 5 s; tests use 0.
    pub device_code_interval: Duration,
    /// Mailbox that "signs in" on the authorize endpoint when no `login_hint` is given.
    pub authorize_user: Option<String>,
    /// Server name in greetings and replies.
    pub host: String,
    /// A mail session idle longer than this is dropped. Default 300 s.
    pub idle_timeout: Duration,
    /// Largest message SMTP accepts (advertised as SIZE) and IMAP APPEND takes. Default 150 MiB.
    pub max_message_size: usize,
    /// Concurrent sessions per listener; more connections wait in the accept queue. Default 512.
    pub max_sessions: usize,
    /// Peers the connector takes mail from without a certificate (its "static IP" allow-list).
    /// Default empty. Every client of the sandbox is 127.0.0.1.
    pub connector_allowed_ips: Vec<IpAddr>,
    /// Names (CN or DNS SAN, case-insensitive; `*.domain` matches one label) a verified TLS client
    /// certificate must carry for the connector to take mail. Default `["contoso.com"]`.
    pub connector_allowed_cert_names: Vec<String>,
    /// Whether the connector offers STARTTLS. Default true; false mimics a connector (or a
    /// man in the middle) that does not.
    pub connector_starttls: bool,
    /// The tenant rejects Direct Send (`Set-OrganizationConfig -RejectDirectSend $true`): an
    /// unattributed sender whose MAIL FROM domain is an accepted domain (one of the connector's
    /// certificate names) gets `550 5.7.68 TenantInboundAttribution` at RCPT TO instead of
    /// `5.7.64 TenantAttribution`. Default false.
    pub connector_reject_direct_send: bool,
    /// Issue opaque access tokens (like Google's) instead of JWT-shaped ones. Default false.
    pub opaque_tokens: bool,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            token_lifetime: Duration::from_secs(3600),
            refresh_grace: Duration::from_secs(2),
            tenant: "contoso.onmicrosoft.com".to_string(),
            ports: Ports::default(),
            device_code_lifetime: Duration::from_secs(900),
            device_code_interval: Duration::from_secs(5),
            authorize_user: None,
            host: "SB1PR01MB0001.sandbox.outlook.test".to_string(),
            idle_timeout: Duration::from_secs(300),
            max_message_size: 157_286_400,
            max_sessions: 512,
            connector_allowed_ips: Vec::new(),
            connector_allowed_cert_names: vec!["contoso.com".to_string()],
            connector_starttls: true,
            connector_reject_direct_send: false,
            opaque_tokens: false,
        }
    }
}

/// A failure the fake token endpoint simulates for following requests.
#[derive(Clone, Debug, PartialEq)]
pub enum TokenFailure {
    /// HTTP 500 `{"error":"server_error",…}`.
    Http500,
    /// HTTP 429 with `Retry-After` and a plain-text body, as Entra throttles.
    Throttle429 { retry_after_secs: u64 },
    /// HTTP 400 `invalid_grant` AADSTS70008 (refresh token expired).
    InvalidGrant70008,
    /// Accept the request and never answer.
    Hang,
    /// Wait this long, then answer normally.
    Slow(Duration),
    /// Close the connection at once without an answer (RST when set before the connection opens).
    ResetConnection,
    /// HTTP 200 whose body is not JSON.
    GarbageJson,
    /// HTTP 400 `{"error":"temporarily_unavailable",…}`.
    TemporarilyUnavailable,
    /// HTTP 400 `slow_down` (device-code polling too fast, RFC 8628 §3.5).
    SlowDown,
    /// HTTP 400 `authorization_pending` (device-code polling before the user acted).
    AuthorizationPending,
}

impl TokenFailure {
    /// Parse a mode name as the control endpoint and the binary take it: `http500`,
    /// `throttle429[:SECS]`, `invalid_grant`, `hang`, `slow[:MILLIS]`, `reset`, `garbage_json`,
    /// `temporarily_unavailable`, `slow_down`, `authorization_pending`.
    pub fn parse(spec: &str) -> Option<TokenFailure> {
        let (mode, arg) = match spec.split_once(':') {
            Some((m, a)) => (m, Some(a.parse::<u64>().ok()?)),
            None => (spec, None),
        };
        Some(match mode.to_ascii_lowercase().replace('-', "_").as_str() {
            "http500" | "500" | "server_error" => TokenFailure::Http500,
            "throttle429" | "429" | "throttle" => TokenFailure::Throttle429 {
                retry_after_secs: arg.unwrap_or(1),
            },
            "invalid_grant" | "invalid_grant70008" | "70008" => TokenFailure::InvalidGrant70008,
            "hang" => TokenFailure::Hang,
            "slow" => TokenFailure::Slow(Duration::from_millis(arg.unwrap_or(1000))),
            "reset" | "reset_connection" => TokenFailure::ResetConnection,
            "garbage" | "garbage_json" => TokenFailure::GarbageJson,
            "temporarily_unavailable" | "unavailable" => TokenFailure::TemporarilyUnavailable,
            "slow_down" => TokenFailure::SlowDown,
            "authorization_pending" | "pending" => TokenFailure::AuthorizationPending,
            _ => return None,
        })
    }
}

/// Token-service requests seen, by grant type (every request counts, failed ones too).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TokenCounters {
    pub refresh_token: u64,
    pub client_credentials: u64,
    pub authorization_code: u64,
    pub device_code: u64,
    /// Token requests with a missing or unknown grant type.
    pub other: u64,
    /// Every request to the token endpoint.
    pub total: u64,
    /// Requests to the devicecode endpoint (not part of `total`).
    pub device_authorizations: u64,
    /// Requests to the authorize endpoint (not part of `total`).
    pub authorize: u64,
    /// Requests to the introspection endpoint (not part of `total`): one per XOAUTH2 attempt a
    /// real mail server (Dovecot's `passdb oauth2`) checks with us.
    pub introspect: u64,
    /// Introspection requests answered `"active": true`.
    pub introspect_active: u64,
}

/// XOAUTH2 attempts seen by the fake mail servers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MailAuthCounters {
    pub smtp_ok: u64,
    pub smtp_failed: u64,
    pub imap_ok: u64,
    pub imap_failed: u64,
    pub pop3_ok: u64,
    pub pop3_failed: u64,
}

impl MailAuthCounters {
    pub fn ok(&self) -> u64 {
        self.smtp_ok + self.imap_ok + self.pop3_ok
    }
    pub fn failed(&self) -> u64 {
        self.smtp_failed + self.imap_failed + self.pop3_failed
    }
    pub fn total(&self) -> u64 {
        self.ok() + self.failed()
    }
}

/// One XOAUTH2 login as an IMAP or POP3 server of the sandbox saw it: how many times the
/// server, having answered, had to wait for the client's next bytes before the login's result
/// (the greeting counts as an answer: a client that sends `AUTHENTICATE XOAUTH2 <ir>` right after
/// it takes 1), and the first command after the login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginTrace {
    /// `imap` or `pop3`.
    pub protocol: &'static str,
    pub round_trips: u32,
    pub first_command: Option<String>,
}

/// What the fake inbound connector saw (every counter only grows).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ConnectorCounters {
    /// TCP connections accepted.
    pub connector_connections: u64,
    /// STARTTLS handshakes completed.
    pub connector_tls: u64,
    /// MAIL commands read, whatever came of them (a sender the relay should have refused
    /// shows here even when the message goes no further).
    pub connector_mail: u64,
    /// Messages accepted (end of DATA or BDAT LAST).
    pub connector_accepted: u64,
    /// RCPT TO commands refused with `550 5.7.64 TenantAttribution`.
    pub connector_refused: u64,
    /// SMTP AUTH logins accepted (`235`) and refused (`535`) while it plays a provider.
    pub connector_auth_ok: u64,
    pub connector_auth_failed: u64,
}

/// A message accepted by the fake SMTP submission server or the fake connector.
#[derive(Clone, Debug)]
pub struct StoredMessage {
    /// The mailboxes it was delivered to (lower-cased recipients).
    pub mailboxes: Vec<String>,
    /// The authenticated mailbox that sent it; for mail that came via the connector empty, or
    /// the login of a connector that plays a provider requiring AUTH.
    pub auth_user: String,
    /// It came through the inbound connector (not SMTP submission).
    pub via_connector: bool,
    /// The session was TLS when the message was sent (STARTTLS or implicit).
    pub tls: bool,
    /// Names of the verified TLS client certificate (DNS SANs and CN, lower-cased); empty when
    /// none was presented or it did not verify.
    pub client_cert_names: Vec<String>,
    /// Envelope sender (MAIL FROM), as given.
    pub from: String,
    /// Envelope recipients (RCPT TO), as given.
    pub rcpts: Vec<String>,
    /// The DATA payload after dot-unstuffing (CRLF line ends, no final `.\r\n`), or the BDAT chunks.
    pub raw: Bytes,
}

impl StoredMessage {
    /// The raw message as (lossy) UTF-8, for assertions.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }
}

/// State shared by every server of one sandbox.
pub(crate) struct Shared {
    entra: Mutex<entra::Entra>,
    exchange: Mutex<exchange::Exchange>,
    store: store::Store,
    submissions: Mutex<Vec<StoredMessage>>,
    mail_auth: Mutex<MailAuthCounters>,
    connector: Mutex<connector::Settings>,
    connector_counters: Mutex<ConnectorCounters>,
    graph: Mutex<graph::GraphState>,
    /// TCP connections accepted by the SMTP, IMAP and POP3 servers (not the connector).
    mail_connections: AtomicU64,
    /// Write a forged response right after each STARTTLS/STLS go-ahead, before the handshake.
    forge_after_starttls: AtomicBool,
    /// The IMAP capability list sessions started from now on announce (None: Exchange's).
    imap_capabilities: Mutex<Option<String>>,
    /// Every XOAUTH2 login of the IMAP and POP3 servers, in order.
    login_traces: Mutex<Vec<LoginTrace>>,
    /// When set, the token service closes connections from any other source address (so a test
    /// can prove that requests come through a proxy bound to one of these).
    token_allowed_peers: Mutex<Option<Vec<IpAddr>>>,
    host: String,
    idle_timeout: Duration,
    max_message_size: usize,
    acceptor: TlsAcceptor,
    /// The connector's: requests a client certificate.
    connector_acceptor: TlsAcceptor,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn entra(&self) -> MutexGuard<'_, entra::Entra> {
        lock(&self.entra)
    }

    pub(crate) fn exchange(&self) -> MutexGuard<'_, exchange::Exchange> {
        lock(&self.exchange)
    }

    pub(crate) fn token_allowed_peers(&self) -> Option<Vec<IpAddr>> {
        lock(&self.token_allowed_peers).clone()
    }

    pub(crate) fn connector_settings(&self) -> connector::Settings {
        lock(&self.connector).clone()
    }

    /// Count one accepted SMTP, IMAP or POP3 connection.
    pub(crate) fn count_mail_connection(&self) {
        self.mail_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// The forged plaintext to send after a STARTTLS go-ahead, when that mode is on.
    pub(crate) fn imap_capabilities(&self) -> Option<String> {
        lock(&self.imap_capabilities).clone()
    }

    /// Record a login; its index, to add the first command later.
    pub(crate) fn trace_login(&self, protocol: &'static str, round_trips: u32) -> usize {
        let mut traces = lock(&self.login_traces);
        traces.push(LoginTrace {
            protocol,
            round_trips,
            first_command: None,
        });
        traces.len() - 1
    }

    pub(crate) fn trace_first_command(&self, index: usize, command: &str) {
        if let Some(t) = lock(&self.login_traces).get_mut(index) {
            t.first_command.get_or_insert_with(|| command.to_string());
        }
    }

    pub(crate) fn forge_after_starttls(&self) -> bool {
        self.forge_after_starttls.load(Ordering::Relaxed)
    }

    pub(crate) fn count_connector(&self, f: impl FnOnce(&mut ConnectorCounters)) {
        f(&mut lock(&self.connector_counters));
    }

    pub(crate) fn record_submission(&self, msg: StoredMessage) {
        let now = SystemTime::now();
        for mb in &msg.mailboxes {
            self.store.append(mb, msg.raw.clone(), Vec::new(), now);
        }
        lock(&self.submissions).push(msg);
    }
}

/// Addresses of one running sandbox.
#[derive(Clone, Copy, Debug)]
struct Addrs {
    token: SocketAddr,
    smtp: SocketAddr,
    smtps: SocketAddr,
    imap: SocketAddr,
    imap_starttls: SocketAddr,
    pop3: SocketAddr,
    pop3_starttls: SocketAddr,
    connector: SocketAddr,
    graph: SocketAddr,
}

/// A running sandbox. Dropping it stops every server.
pub struct Sandbox {
    shared: Arc<Shared>,
    addrs: Addrs,
    tenant: String,
    ca_pem: &'static str,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Sandbox {
    /// Bind every listener on 127.0.0.1 and start serving.
    pub async fn start(opts: SandboxOptions) -> io::Result<Sandbox> {
        let config = tls::server_config()?;
        let ca_pem = tls::ca_pem()?;
        let p = &opts.ports;
        let token = server::bind(p.token, "the token service (--token-port)").await?;
        let smtp = server::bind(p.smtp, "SMTP (--smtp-port)").await?;
        let smtps = server::bind(p.smtps, "SMTP over TLS (--smtps-port)").await?;
        let imap = server::bind(p.imap, "IMAP (--imap-port)").await?;
        let imap_starttls =
            server::bind(p.imap_starttls, "IMAP STARTTLS (--imap-starttls-port)").await?;
        let pop3 = server::bind(p.pop3, "POP3 (--pop3-port)").await?;
        let pop3_starttls =
            server::bind(p.pop3_starttls, "POP3 STLS (--pop3-starttls-port)").await?;
        let connector = server::bind(p.connector, "the connector (--connector-port)").await?;
        let graph = server::bind(p.graph, "Microsoft Graph (--graph-port)").await?;
        let addrs = Addrs {
            token: token.local_addr()?,
            smtp: smtp.local_addr()?,
            smtps: smtps.local_addr()?,
            imap: imap.local_addr()?,
            imap_starttls: imap_starttls.local_addr()?,
            pop3: pop3.local_addr()?,
            pop3_starttls: pop3_starttls.local_addr()?,
            connector: connector.local_addr()?,
            graph: graph.local_addr()?,
        };
        let mut entra = entra::Entra::new(&opts);
        entra.base_url = format!("https://{}", addrs.token);
        let shared = Arc::new(Shared {
            entra: Mutex::new(entra),
            exchange: Mutex::new(exchange::Exchange::default()),
            store: store::Store::default(),
            submissions: Mutex::new(Vec::new()),
            mail_auth: Mutex::new(MailAuthCounters::default()),
            connector: Mutex::new(connector::Settings {
                allowed_ips: opts.connector_allowed_ips.clone(),
                allowed_cert_names: opts.connector_allowed_cert_names.clone(),
                starttls: opts.connector_starttls,
                reject_direct_send: opts.connector_reject_direct_send,
                auth: None,
            }),
            connector_counters: Mutex::new(ConnectorCounters::default()),
            graph: Mutex::new(graph::GraphState::default()),
            mail_connections: AtomicU64::new(0),
            forge_after_starttls: AtomicBool::new(false),
            imap_capabilities: Mutex::new(None),
            login_traces: Mutex::new(Vec::new()),
            token_allowed_peers: Mutex::new(None),
            host: opts.host.clone(),
            idle_timeout: opts.idle_timeout,
            max_message_size: opts.max_message_size,
            acceptor: TlsAcceptor::from(config),
            connector_acceptor: TlsAcceptor::from(tls::connector_config()?),
        });
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let run = server::Runner {
            shared: shared.clone(),
            cancel: cancel.clone(),
            tracker: tracker.clone(),
            max_sessions: opts.max_sessions.max(1),
        };
        run.spawn(token, http::serve);
        run.spawn(smtp, |s, t| smtp::serve(s, t, false));
        run.spawn(smtps, |s, t| smtp::serve(s, t, true));
        run.spawn(imap, |s, t| imap::serve(s, t, true));
        run.spawn(imap_starttls, |s, t| imap::serve(s, t, false));
        run.spawn(pop3, |s, t| pop3::serve(s, t, true));
        run.spawn(pop3_starttls, |s, t| pop3::serve(s, t, false));
        run.spawn(connector, smtp::serve_connector);
        run.spawn(graph, graph::serve);
        tracing::info!(token = %addrs.token, smtp = %addrs.smtp, imap = %addrs.imap, pop3 = %addrs.pop3, connector = %addrs.connector, graph = %addrs.graph, "sandbox started");
        Ok(Sandbox {
            shared,
            addrs,
            tenant: opts.tenant,
            ca_pem,
            cancel,
            tracker,
        })
    }

    /// PEM of the CA that signed every sandbox server certificate.
    pub fn ca_pem(&self) -> &str {
        self.ca_pem
    }

    /// Write [`Sandbox::ca_pem`] to a file.
    pub fn write_ca(&self, path: &Path) -> io::Result<()> {
        std::fs::write(path, self.ca_pem)
    }

    /// A rustls client config trusting only the sandbox CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        // The CA PEM was produced by this crate; parsing it cannot fail.
        tls::client_config(self.ca_pem).expect("sandbox CA PEM is valid")
    }

    /// `https://127.0.0.1:PORT`.
    pub fn token_base_url(&self) -> String {
        format!("https://{}", self.addrs.token)
    }

    pub fn token_addr(&self) -> SocketAddr {
        self.addrs.token
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    fn endpoint(&self, name: &str) -> String {
        format!(
            "{}/{}/oauth2/v2.0/{name}",
            self.token_base_url(),
            self.tenant
        )
    }

    /// `{base}/{tenant}/oauth2/v2.0/token`.
    pub fn token_url(&self) -> String {
        self.endpoint("token")
    }

    /// `{base}/{tenant}/oauth2/v2.0/authorize`.
    pub fn authorize_url(&self) -> String {
        self.endpoint("authorize")
    }

    /// `{base}/{tenant}/oauth2/v2.0/devicecode`.
    pub fn device_code_url(&self) -> String {
        self.endpoint("devicecode")
    }

    /// `{base}/introspect` (RFC 7662).
    pub fn introspect_url(&self) -> String {
        format!("{}/introspect", self.token_base_url())
    }

    /// SMTP submission with STARTTLS (like smtp.office365.com:587).
    pub fn smtp_addr(&self) -> SocketAddr {
        self.addrs.smtp
    }

    /// SMTP with implicit TLS.
    pub fn smtps_addr(&self) -> SocketAddr {
        self.addrs.smtps
    }

    /// IMAP with implicit TLS (like outlook.office365.com:993).
    pub fn imap_addr(&self) -> SocketAddr {
        self.addrs.imap
    }

    /// IMAP in plaintext with STARTTLS.
    pub fn imap_starttls_addr(&self) -> SocketAddr {
        self.addrs.imap_starttls
    }

    /// POP3 with implicit TLS (like :995).
    pub fn pop3_addr(&self) -> SocketAddr {
        self.addrs.pop3
    }

    /// POP3 in plaintext with STLS.
    pub fn pop3_starttls_addr(&self) -> SocketAddr {
        self.addrs.pop3_starttls
    }

    /// The fake inbound connector (like `<tenant>.mail.protection.outlook.com:25`): plain SMTP,
    /// STARTTLS (unless turned off) with a client certificate requested, never AUTH.
    pub fn connector_addr(&self) -> SocketAddr {
        self.addrs.connector
    }

    /// Replace the connector's IP allow-list (applies to following RCPT TO commands).
    pub fn set_connector_allowed_ips(&self, ips: &[IpAddr]) {
        lock(&self.shared.connector).allowed_ips = ips.to_vec();
    }

    /// Replace the names a client certificate must carry (applies to following RCPT TO commands).
    pub fn set_connector_allowed_cert_names(&self, names: &[&str]) {
        lock(&self.shared.connector).allowed_cert_names =
            names.iter().map(|n| n.to_string()).collect();
    }

    /// Whether the connector offers STARTTLS to sessions that start from now on.
    pub fn set_connector_starttls(&self, offered: bool) {
        lock(&self.shared.connector).starttls = offered;
    }

    /// Switch the tenant's Reject Direct Send (applies to following RCPT TO commands).
    pub fn set_connector_reject_direct_send(&self, on: bool) {
        lock(&self.shared.connector).reject_direct_send = on;
    }

    /// Make the connector a transactional provider's SMTP endpoint (Amazon SES, Postmark) that
    /// requires `AUTH` with this login after STARTTLS (`Some`), or the tenant's connector again
    /// (`None`). Applies to sessions that start from now on.
    pub fn set_connector_auth(&self, auth: Option<PasswordAuth>) {
        lock(&self.shared.connector).auth = auth;
    }

    /// The names a client certificate must carry now.
    pub fn connector_allowed_cert_names(&self) -> Vec<String> {
        lock(&self.shared.connector).allowed_cert_names.clone()
    }

    /// The IP allow-list now.
    pub fn connector_allowed_ips(&self) -> Vec<IpAddr> {
        lock(&self.shared.connector).allowed_ips.clone()
    }

    /// TCP connections the SMTP, IMAP and POP3 servers have accepted (any port, TLS or not;
    /// the connector counts its own in [`Sandbox::connector_counters`]).
    pub fn mail_connections(&self) -> u64 {
        self.shared.mail_connections.load(Ordering::Relaxed)
    }

    /// When on, the SMTP, IMAP and POP3 servers write a forged response in plaintext right
    /// after their STARTTLS/STLS go-ahead, in the same write, before the TLS handshake (the
    /// CVE-2011-0411 class of injection, seen from the client): a client must discard it. The
    /// forged response advertises `SIZE 1234` (SMTP EHLO) or `XFORGED` (IMAP CAPABILITY, POP3
    /// CAPA), so a client that believes it shows it.
    pub fn set_forge_after_starttls(&self, on: bool) {
        self.shared
            .forge_after_starttls
            .store(on, Ordering::Relaxed);
    }

    /// The capability list the IMAP server announces to sessions that start from now on
    /// (`None`: Exchange's). Without `SASL-IR` it refuses an initial response
    /// (`BAD Command Argument Error. 12`); without `AUTH=XOAUTH2` it refuses XOAUTH2.
    pub fn set_imap_capabilities(&self, caps: Option<&str>) {
        *lock(&self.shared.imap_capabilities) = caps.map(str::to_string);
    }

    /// Every IMAP and POP3 XOAUTH2 login so far (see [`LoginTrace`]).
    pub fn login_traces(&self) -> Vec<LoginTrace> {
        lock(&self.shared.login_traces).clone()
    }

    pub fn connector_counters(&self) -> ConnectorCounters {
        lock(&self.shared.connector_counters).clone()
    }

    /// A TLS client certificate for `name` (CN and DNS SAN) signed by an intermediate CA under
    /// the sandbox root, with the chain (leaf + intermediate) a certificate-based connector needs.
    /// The connector trusts only the root, so the certificate verifies only with the chain sent.
    pub fn issue_client_cert(&self, name: &str) -> ClientCert {
        // Key generation and signing with keys this crate made cannot fail.
        tls::issue_client_cert(name, true).expect("sandbox can issue client certificates")
    }

    /// Like [`Sandbox::issue_client_cert`] but `chain_pem` holds the leaf only: the connector
    /// cannot verify it and treats the session as having no certificate.
    pub fn issue_client_cert_without_chain(&self, name: &str) -> ClientCert {
        tls::issue_client_cert(name, false).expect("sandbox can issue client certificates")
    }

    /// A rustls client config (ring provider) trusting the sandbox CA and presenting `cert`.
    pub fn client_config_with_cert(&self, cert: &ClientCert) -> Arc<rustls::ClientConfig> {
        cert.client_config(self.ca_pem)
            .expect("sandbox CA and client certificate PEM are valid")
    }

    /// Register a client. A non-empty secret makes it confidential (the secret is then required);
    /// client-credentials tokens of this client may open `app_mailboxes`. Calling again replaces it.
    pub fn add_client(&self, client_id: &str, client_secret: &str, app_mailboxes: &[&str]) {
        self.shared
            .entra()
            .add_client(client_id, client_secret, app_mailboxes);
    }

    /// Replace the application permissions `client_id` has admin consent for (the `roles` of its
    /// app-only tokens issued from now on). Default: IMAP.AccessAsApp, POP.AccessAsApp,
    /// SMTP.SendAsApp. An empty list models "admin consent not granted": Entra still issues a
    /// token, without `roles`, and Exchange refuses it.
    pub fn set_app_roles(&self, client_id: &str, roles: &[&str]) {
        self.shared.entra().set_app_roles(client_id, roles);
    }

    /// Which delegated Microsoft Graph permissions (`Mail.Send`, `Mail.Send.Shared`) `client_id`
    /// has user or admin consent for; `None` (the default): all. A refresh token redeemed for a
    /// Graph permission outside the list is refused with `invalid_grant` `AADSTS65001`, as
    /// Entra does when the Graph permission was never consented.
    pub fn set_graph_consent(&self, client_id: &str, permissions: Option<&[&str]>) {
        self.shared
            .entra()
            .set_graph_consent(client_id, permissions);
    }

    /// Grant (`Add-MailboxPermission`) or remove the app's right to open `mailbox` with an
    /// app-only token. Without it IMAP and POP3 accept the login and fail the next command
    /// ("User is authenticated but not connected."); SMTP answers `535 5.7.3`.
    pub fn set_app_mailbox_permission(&self, client_id: &str, mailbox: &str, granted: bool) {
        self.shared
            .entra()
            .set_app_mailbox_permission(client_id, mailbox, granted);
    }

    /// Whether the app's service principal is registered in Exchange (`New-ServicePrincipal`).
    /// Unregistered, its app-only tokens are refused like bad ones. Default: registered.
    pub fn set_service_principal(&self, client_id: &str, registered: bool) {
        self.shared
            .exchange()
            .set_service_principal(client_id, registered);
    }

    /// `Add-MailboxPermission -Identity <mailbox> -User <trustee> -AccessRights FullAccess`:
    /// `trustee` (a user's mailbox, or an app's client id) may open `mailbox` over IMAP and
    /// POP3 with `user=<mailbox>` in XOAUTH2. Without it the login succeeds and the next
    /// command fails with "User is authenticated but not connected."
    pub fn grant_full_access(&self, mailbox: &str, trustee: &str) {
        self.set_mailbox_right(mailbox, trustee, MailboxRight::FullAccess, true);
    }

    /// `Add-RecipientPermission -Identity <mailbox> -Trustee <trustee> -AccessRights SendAs`:
    /// `trustee` may send messages whose sender is `mailbox`. Without it: `554 5.2.252
    /// SendAsDenied` after DATA.
    pub fn grant_send_as(&self, mailbox: &str, trustee: &str) {
        self.set_mailbox_right(mailbox, trustee, MailboxRight::SendAs, true);
    }

    /// Grant or remove (`Remove-MailboxPermission`, `Remove-RecipientPermission`) a right.
    pub fn set_mailbox_right(
        &self,
        mailbox: &str,
        trustee: &str,
        right: MailboxRight,
        granted: bool,
    ) {
        self.shared
            .exchange()
            .set_right(mailbox, trustee, right, granted);
    }

    /// A mailbox's client-access settings (SMTP AUTH, IMAP, POP, SendAs) for following logins
    /// and messages.
    pub fn set_mailbox_settings(&self, mailbox: &str, settings: MailboxSettings) {
        self.shared.exchange().set_mailbox(mailbox, settings);
    }

    pub fn mailbox_settings(&self, mailbox: &str) -> MailboxSettings {
        self.shared.exchange().mailbox(mailbox)
    }

    /// Issue opaque (non-JWT) access tokens from now on, as Google and some custom providers do.
    pub fn set_opaque_tokens(&self, opaque: bool) {
        self.shared.entra().opaque_tokens = opaque;
    }

    /// The tenant's id (a GUID derived from its name), as access tokens carry it in `tid`; the
    /// token endpoints take it in place of the tenant's name.
    pub fn tenant_id(&self) -> String {
        self.shared.entra().tenant_id()
    }

    /// Access tokens issued from now on carry this `tid` instead of the tenant's id (`None`:
    /// the tenant's own again) — a token from another tenant.
    pub fn set_token_tid(&self, tid: Option<&str>) {
        self.shared.entra().tid_override = tid.map(str::to_string);
    }

    /// Register a confidential client that authenticates with client assertions signed by the
    /// key of `cert_pem` (the first certificate of the PEM), like a certificate uploaded to an
    /// app registration. Calling again replaces it.
    pub fn add_certificate_client(&self, client_id: &str, cert_pem: &str, app_mailboxes: &[&str]) {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .expect("a PEM certificate")
            .to_vec();
        self.shared
            .entra()
            .add_certificate_client(client_id, der, app_mailboxes);
    }

    /// Register a confidential client with a federated credential: tokens of the sandbox's fake
    /// Kubernetes issuer ([`Sandbox::federated_issuer`]) whose subject is `subject` (e.g.
    /// `system:serviceaccount:mail:authbridge`) and audience `api://AzureADTokenExchange`.
    pub fn add_federated_client(&self, client_id: &str, subject: &str, app_mailboxes: &[&str]) {
        self.shared
            .entra()
            .add_federated_client(client_id, subject, app_mailboxes);
    }

    /// The issuer URL of federated tokens.
    pub fn federated_issuer(&self) -> &'static str {
        assertion::FEDERATED_ISSUER
    }

    /// A projected service-account token for `subject` from the fake Kubernetes issuer, valid
    /// from `issued_at` (UNIX seconds) for `lifetime`.
    pub fn issue_federated_token(
        &self,
        subject: &str,
        issued_at: u64,
        lifetime: Duration,
    ) -> String {
        self.shared.entra().issuer.token(
            subject,
            issued_at,
            issued_at.saturating_add(lifetime.as_secs()),
        )
    }

    /// The Microsoft Graph stand-in's address.
    pub fn graph_addr(&self) -> SocketAddr {
        self.addrs.graph
    }

    /// `https://127.0.0.1:PORT`: the `endpoint` of a Graph listener.
    pub fn graph_url(&self) -> String {
        format!("https://{}", self.addrs.graph)
    }

    /// Answer the next `times` Graph requests (`None`: all, until cleared with `None` as
    /// `failure`) with `failure` before any check.
    pub fn set_graph_failure(&self, failure: Option<GraphFailure>, times: Option<u32>) {
        lock(&self.shared.graph).failure = failure.map(|f| (f, times.map(|t| t.max(1))));
    }

    /// Requests the Graph stand-in has answered.
    pub fn graph_counters(&self) -> GraphCounters {
        lock(&self.shared.graph).counters.clone()
    }

    /// Graph answers `404 ErrorInvalidUser` for `mailbox` from now on (`exists: false`).
    pub fn set_graph_mailbox_exists(&self, mailbox: &str, exists: bool) {
        let m = mailbox.trim().to_ascii_lowercase();
        let mut g = lock(&self.shared.graph);
        if exists {
            g.missing.remove(&m);
        } else {
            g.missing.insert(m);
        }
    }

    /// An Application Access Policy for `client_id`: its app-only Graph tokens may send only as
    /// `mailboxes` (`None`: no policy, any mailbox).
    pub fn set_application_access_policy(&self, client_id: &str, mailboxes: Option<&[&str]>) {
        self.shared
            .exchange()
            .set_app_access_policy(client_id, mailboxes);
    }

    /// Only accept token-service connections from these source addresses (`None`: from any).
    pub fn set_token_allowed_peers(&self, peers: Option<&[IpAddr]>) {
        *lock(&self.shared.token_allowed_peers) = peers.map(<[IpAddr]>::to_vec);
    }

    /// A delegated refresh token of `mailbox` for `client_id` (an unknown client is registered as a
    /// public client). Starts a new token family.
    pub fn issue_refresh_token(&self, client_id: &str, mailbox: &str) -> String {
        self.shared.entra().issue_refresh_token(client_id, mailbox)
    }

    /// A live delegated access token of `mailbox`.
    pub fn issue_access_token(&self, client_id: &str, mailbox: &str) -> String {
        self.shared.entra().issue_access_token(client_id, mailbox)
    }

    /// A live app-only (client-credentials) access token of `client_id`.
    pub fn issue_app_token(&self, client_id: &str) -> String {
        self.shared.entra().issue_app_token(client_id)
    }

    /// Revoke the token's family: it and every token rotated from it get AADSTS50173.
    pub fn revoke_refresh_token(&self, token: &str) {
        self.shared.entra().revoke_refresh_token(token);
    }

    /// Expire the token's family by inactivity: AADSTS70008 from now on.
    pub fn expire_refresh_token(&self, token: &str) {
        self.shared.entra().expire_refresh_token(token);
    }

    /// Every access token issued so far becomes invalid (upstream servers refuse it).
    pub fn expire_access_tokens(&self) {
        self.shared.entra().expire_access_tokens(Instant::now());
    }

    /// Lifetime of access tokens issued from now on.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.shared.entra().token_lifetime = lifetime;
    }

    /// Grace period of rotated refresh tokens from now on.
    pub fn set_refresh_grace(&self, grace: Duration) {
        self.shared.entra().refresh_grace = grace;
    }

    /// Mailbox that signs in on the authorize endpoint when there is no `login_hint`.
    pub fn set_authorize_user(&self, mailbox: &str) {
        self.shared.entra().authorize_user = Some(mailbox.to_string());
    }

    /// Apply `failure` to every following token request until [`Sandbox::clear_failures`].
    pub fn inject(&self, failure: TokenFailure) {
        self.shared.entra().inject(failure, None);
    }

    /// Apply `failure` to the next `times` token requests only.
    pub fn inject_times(&self, failure: TokenFailure, times: u32) {
        self.shared.entra().inject(failure, Some(times.max(1)));
    }

    /// Apply `failure` to the token refreshes of one account only (`times`: `None` until
    /// [`Sandbox::clear_failures`]). `account` is the mailbox of a delegated refresh token or the
    /// client id of a client-credentials request; interactive grants (authorization code, device
    /// code) are never affected, so `authbridge login` still works for a failing account.
    pub fn inject_for(&self, account: &str, failure: TokenFailure, times: Option<u32>) {
        self.shared
            .entra()
            .inject_for(account, failure, times.map(|t| t.max(1)));
    }

    /// Clears global and per-account failures.
    pub fn clear_failures(&self) {
        self.shared.entra().clear_failures();
    }

    /// The user approves the device-flow request showing `user_code`; false if none is pending.
    pub fn approve_device_code(&self, user_code: &str, mailbox: &str) -> bool {
        self.shared.entra().approve_device_code(user_code, mailbox)
    }

    /// The user declines the device-flow request; false if none is pending.
    pub fn deny_device_code(&self, user_code: &str) -> bool {
        self.shared.entra().deny_device_code(user_code)
    }

    /// User codes of device-flow requests still waiting for the user.
    pub fn pending_device_codes(&self) -> Vec<String> {
        self.shared.entra().pending_user_codes()
    }

    pub fn token_requests(&self) -> TokenCounters {
        self.shared.entra().counters.clone()
    }

    /// Every message accepted over SMTP (submission and connector), in order.
    pub fn messages(&self) -> Vec<StoredMessage> {
        lock(&self.shared.submissions).clone()
    }

    /// Put a message straight into a mailbox (created if needed); returns its UID.
    pub fn deliver(&self, mailbox: &str, raw: &[u8]) -> u32 {
        self.shared.store.append(
            mailbox,
            Bytes::copy_from_slice(raw),
            Vec::new(),
            SystemTime::now(),
        )
    }

    /// The messages now in a mailbox, in UID order.
    pub fn mailbox(&self, mailbox: &str) -> Vec<MailboxMessage> {
        self.shared.store.messages(mailbox)
    }

    pub fn mail_auth_attempts(&self) -> MailAuthCounters {
        lock(&self.shared.mail_auth).clone()
    }

    /// Stop every server and wait (at most 5 s) for their sessions to end.
    pub async fn shutdown(self) {
        let tracker = self.tracker.clone();
        self.cancel.cancel();
        drop(self);
        tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
    }
}
