//! Every bound and timeout in one place, with safe defaults.
//!
//! Protocol machines get [`ProtocolLimits`] (sizes and counts); the session driver uses
//! [`Timeouts`] (one named deadline per network phase); the server and the failure tracker use
//! [`ConnectionLimits`]; the admin listener uses [`AdminLimits`]. The `limits:` section of the config overrides any of them (see
//! `RawLimits` in `config/schema.rs` for the key names, `config/resolve/limits.rs` for their
//! accepted ranges).
//!
//! Invariants the rest of the code relies on:
//! - no input is buffered past its cap: an overlong line is drained as it arrives
//!   (`protocol::line`); before login it is answered as soon as the framer's cap is crossed and
//!   the session closes, after login (relay mode) it is answered once its end comes; a literal
//!   over `literal_max` is refused before its payload is read;
//! - every await on the network has one of the deadlines below;
//! - a client that never logs in is gone after `preauth_total` however it trickles its bytes.

use std::time::Duration;

/// Size and count limits the sans-I/O machines enforce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolLimits {
    /// Longest ordinary command line, in octets, without CRLF (RFC 5321 §4.5.3.1.4 says 512; we
    /// allow more for long EHLO names and IMAP IDs).
    pub line_max: usize,
    /// Longest AUTH command or SASL response line (RFC 4954 §4: 12,288 is sufficient).
    pub auth_line_max: usize,
    /// Largest IMAP literal accepted before login (user names and passwords only).
    pub literal_max: usize,

    /// Commands accepted before login; then the session is closed.
    pub preauth_commands_max: u32,
    /// Invalid or unknown commands before the session is closed.
    pub bad_commands_max: u32,
    /// Failed login attempts in one session before it is closed.
    pub session_login_failures_max: u32,
}

impl Default for ProtocolLimits {
    fn default() -> Self {
        ProtocolLimits {
            line_max: 4096,
            auth_line_max: 12288,
            literal_max: 8192,
            preauth_commands_max: 100,
            bad_commands_max: 10,
            session_login_failures_max: 3,
        }
    }
}

/// Named deadlines, one per network phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// Client-side TLS handshake (implicit TLS or after STARTTLS).
    pub client_tls_handshake: Duration,
    /// Silence from the client before it has logged in.
    pub preauth_idle: Duration,
    /// The whole pre-login phase (greeting to login success), however the client trickles its
    /// bytes: the bound on slowloris clients, which `preauth_idle` alone does not give.
    pub preauth_total: Duration,
    /// How long one reply to the client may take to be written before the client is dropped.
    pub client_write: Duration,
    /// TCP connect to the upstream.
    pub upstream_connect: Duration,
    /// Upstream TLS handshake.
    pub upstream_tls_handshake: Duration,
    /// Upstream greeting, capabilities and STARTTLS dialogue, after connect.
    pub upstream_setup: Duration,
    /// Upstream SASL exchange.
    pub upstream_auth: Duration,
    /// One whole token endpoint request (connect, TLS, request, response body).
    pub token_request: Duration,
    /// Everything a login may take, token and upstream included, before the client gets a 4xx.
    /// GLPI 11 gives up after 10 s of silence (FACTS.md), so this stays well under that.
    pub login_budget: Duration,
    /// How long an EHLO/CAPABILITY reply may wait for the upstream's capabilities.
    pub capabilities_wait: Duration,
    /// Silence in both directions after login before the pipe is closed.
    pub pipe_idle: Duration,
    /// Relay mode: how long the connector may take to take a command or a message and answer it
    /// (RFC 5321 §4.5.3.2 suggests up to 10 minutes after DATA; 5 is plenty for Exchange).
    pub relay_reply: Duration,
    /// How long a shutdown waits for live sessions.
    pub shutdown_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            client_tls_handshake: Duration::from_secs(10),
            preauth_idle: Duration::from_secs(60),
            preauth_total: Duration::from_secs(300),
            client_write: Duration::from_secs(30),
            upstream_connect: Duration::from_secs(5),
            upstream_tls_handshake: Duration::from_secs(5),
            upstream_setup: Duration::from_secs(6),
            upstream_auth: Duration::from_secs(6),
            token_request: Duration::from_secs(5),
            login_budget: Duration::from_secs(7),
            capabilities_wait: Duration::from_secs(4),
            pipe_idle: Duration::from_secs(30 * 60),
            relay_reply: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Connection and failure-rate limits the server enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Concurrent sessions per listener.
    pub max_sessions: usize,
    /// Concurrent sessions from one source address.
    pub max_sessions_per_source: usize,
    /// Failed logins from one source within [`ConnectionLimits::failure_window`] before every
    /// further attempt from it is refused with a close.
    pub login_failures_per_source: u32,
    pub failure_window: Duration,
    /// Delay added to a failed login reply, growing with the failures of that source.
    pub failure_delay_base: Duration,
    pub failure_delay_max: Duration,
    /// Upstream connections opened before login (at connect) from one source (an IPv4 address
    /// or an IPv6 /64), and in total; past either, a session connects upstream after its login.
    pub early_upstream_per_source: usize,
    pub early_upstream_max: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_sessions: 20_000,
            max_sessions_per_source: 20_000,
            login_failures_per_source: 10,
            failure_window: Duration::from_secs(60),
            failure_delay_base: Duration::from_millis(250),
            failure_delay_max: Duration::from_secs(3),
            early_upstream_per_source: 32,
            early_upstream_max: 1024,
        }
    }
}

/// Bounds of the admin listener (`/healthz`, `/readyz`, `/metrics`). Requests are tiny and come
/// from probes and scrapers, so these are fixed rather than configurable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminLimits {
    /// Concurrent admin connections; further ones wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Largest request head (request line and headers), in octets; larger gets `431` and a
    /// close. hyper's smallest allowed read buffer is 8 KiB.
    pub max_header_bytes: usize,
    /// How long a client may take to send a whole request head (the slowloris bound).
    pub header_read: Duration,
    /// Lifetime of one admin connection, keep-alive included; then it is closed.
    pub connection_total: Duration,
    /// How long a stopping server waits for admin connections to finish their response.
    pub shutdown_wait: Duration,
    /// `authbridge probe`: the whole request (connect, send, status and body).
    pub probe: Duration,
    /// Largest form body of an admin page POST, in octets; larger gets `413`.
    pub max_form_bytes: usize,
    /// How long a client may take to send a form body.
    pub form_read: Duration,
    /// The TLS handshake of an admin connection (with `admin.cert`).
    pub tls_handshake: Duration,
}

impl Default for AdminLimits {
    fn default() -> Self {
        AdminLimits {
            max_connections: 64,
            max_header_bytes: 8 * 1024,
            header_read: Duration::from_secs(5),
            connection_total: Duration::from_secs(60),
            shutdown_wait: Duration::from_secs(2),
            probe: Duration::from_secs(5),
            max_form_bytes: 4 * 1024,
            form_read: Duration::from_secs(10),
            tls_handshake: Duration::from_secs(10),
        }
    }
}

/// All limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub protocol: ProtocolLimits,
    pub timeouts: Timeouts,
    pub connections: ConnectionLimits,
    /// Largest token endpoint response body; a token response is a few KB.
    pub token_response_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            protocol: ProtocolLimits::default(),
            timeouts: Timeouts::default(),
            connections: ConnectionLimits::default(),
            token_response_max: 64 * 1024,
        }
    }
}

impl Limits {
    /// The token manager's settings under these limits.
    pub fn token_settings(&self) -> crate::token::TokenSettings {
        crate::token::TokenSettings {
            request_timeout: self.timeouts.token_request,
            max_response_bytes: self.token_response_max,
            ..Default::default()
        }
    }
}

/// The pipe's copy buffers (`crate::pipe`), one per direction and session: none while the
/// direction is quiet, [`pipe_buffers::START`] on its first data, doubled after every read that
/// filled it, up to [`pipe_buffers::MAX`], and released after [`pipe_buffers::RELEASE_AFTER`]
/// without data.
pub mod pipe_buffers {
    use std::time::Duration;

    /// Bytes a quiet direction reads before it takes a buffer (kept inside the session's task,
    /// so a quiet session holds no copy buffer at all).
    pub const FIRST_READ: usize = 128;
    /// Size of a direction's buffer when data starts to flow (small: most bursts are one reply;
    /// 16 KiB measured 54 KiB per idle session against 38 KiB with 4 KiB, bench/profile/idle-rss.sh).
    pub const START: usize = 4 * 1024;
    /// Largest buffer per direction (256 KiB: measured +16 % FETCH throughput over 16 KiB).
    pub const MAX: usize = 256 * 1024;
    /// A direction without data for this long gives its buffer back (and starts again at
    /// [`START`] when data comes).
    pub const RELEASE_AFTER: Duration = Duration::from_secs(2);
}

/// Bounds of the watch over the first upstream replies after login (`crate::protocol::
/// first_replies`): Exchange's "authenticated but not connected" shows in the reply to the
/// client's first command.
pub mod first_replies {
    /// Longest reply line held back to be looked at; a longer one ends the watch.
    pub const LINE_MAX: usize = 1024;
    /// Status replies watched before the pipe stops looking.
    pub const REPLIES_MAX: u32 = 4;
    /// Upstream bytes watched before the pipe stops looking.
    pub const BYTES_MAX: usize = 16 * 1024;
}

/// Bounds and deadlines of the shared (Redis) token store: every call to the server has one.
pub mod shared_store {
    use std::time::Duration;

    /// TCP connect (and TLS handshake) to Redis.
    pub const CONNECT: Duration = Duration::from_secs(2);
    /// One command or script, request written to reply read.
    pub const COMMAND: Duration = Duration::from_secs(2);
    /// After a failed connect, the next attempt waits this long, doubling per failure …
    pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(100);
    /// … up to this long; calls in between fail at once with the last error (a temporary reply).
    pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);
    /// Idle connections kept for reuse per process.
    pub const POOL_MAX: usize = 4;
    /// A process that ends waits at most this long for its dropped leases to be released (one
    /// command, retried once on a new connection).
    pub const RELEASE_AT_EXIT: Duration = Duration::from_secs(5);
    /// Default lifetime of the refresh lease (`token_store.lease`): the holder renews it every
    /// third of it while its refresh runs; a holder that dies loses it after this long.
    pub const LEASE_DEFAULT: Duration = Duration::from_secs(10);
    /// Accepted range of `token_store.lease`.
    pub const LEASE_MIN: Duration = Duration::from_millis(300);
    pub const LEASE_MAX: Duration = Duration::from_secs(120);
    /// How long one fetch waits for another replica's refresh (lease held elsewhere) before it
    /// gives up with a temporary error.
    pub const LEASE_WAIT: Duration = Duration::from_secs(30);
    /// How often a waiting replica looks for the published access token or a free lease.
    pub const LEASE_POLL: Duration = Duration::from_millis(25);
    /// Largest value read back from Redis (a sealed record is well under 1 KiB per token).
    pub const RECORD_MAX: usize = 64 * 1024;
}
