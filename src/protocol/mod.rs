//! Sans-I/O protocol machines: bytes in, bytes and actions out.
//!
//! Every protocol has two machines:
//! - a **client machine** ([`ClientProtocol`]) that plays the server to the legacy client before
//!   login (greeting, capabilities, STARTTLS, the local login forms), and
//! - an **upstream machine** ([`UpstreamProtocol`]) that plays the client to Exchange (greeting,
//!   capabilities, STARTTLS, SASL XOAUTH2).
//!
//! Neither does I/O or keeps time: the session driver (`crate::session`) reads and writes the
//! sockets, runs TLS handshakes, applies the named timeouts and feeds the machines. Input is
//! taken from a `BytesMut` the driver owns; a machine consumes what it has parsed and leaves the
//! rest. "Need more bytes" is an ordinary value ([`Step::NeedInput`]), never an error.
//! After a successful login neither machine sees another byte: the driver pipes the sockets.

use bytes::BytesMut;

use crate::secret::{SecretBytes, SecretString};

pub mod first_replies;
pub mod imap;
pub mod line;
pub mod pop3;
pub mod probe;
pub mod sasl;
pub mod smtp;

/// What the client side is protected by, as the client machine needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientTls {
    /// Plain TCP for the whole session (a loopback listener).
    None,
    /// Plain until the client sends STARTTLS/STLS; login is refused before that.
    StartTls,
    /// TLS from the first byte.
    Implicit,
}

/// Which leg a client is on right now: it picks the capability set and whether a login is
/// allowed yet (not on a STARTTLS listener before the upgrade).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// A plaintext listener (loopback).
    Plain,
    /// A STARTTLS listener before the upgrade.
    StartTlsOffered,
    /// TLS is active.
    Tls,
}

impl Leg {
    /// The leg of a connection on a `listener` listener, `tls_active` once upgraded.
    pub fn of(listener: ClientTls, tls_active: bool) -> Leg {
        if tls_active || listener == ClientTls::Implicit {
            Leg::Tls
        } else if listener == ClientTls::StartTls {
            Leg::StartTlsOffered
        } else {
            Leg::Plain
        }
    }
}

/// Reply text must not break the line structure: control characters become spaces, and it is
/// kept short (upstream and token error texts end up in client replies).
pub(crate) fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(400)
        .collect()
}

/// Drop a leading response code (`[AUTHENTICATIONFAILED] …`, `[AUTH] …`) from an upstream text
/// so ours is not doubled (RFC 5530, RFC 2449 §8).
pub(crate) fn strip_resp_code(text: &str) -> &str {
    let trimmed = text.trim_start();
    if let Some(rest) = trimmed.strip_prefix('[')
        && let Some(end) = rest.find(']')
    {
        return rest.get(end + 1..).unwrap_or_default().trim_start();
    }
    trimmed
}

/// Facts about this client connection that shape the replies.
#[derive(Debug, Clone)]
pub struct ClientContext {
    pub tls: ClientTls,
    /// Host name used in greetings and EHLO replies.
    pub hostname: String,
    pub limits: crate::limits::ProtocolLimits,
}

/// What the driver must do after a call to [`ClientProtocol::step`]. In every case, bytes the
/// machine put into `out` are written to the client first.
#[derive(Debug)]
pub enum Step {
    /// Nothing complete is buffered: read more input, then call `step` again.
    NeedInput,
    /// One command was handled; call `step` again (more input may already be buffered).
    Continue,
    /// The reply needs the upstream's capabilities: wait (bounded) for the upstream setup, call
    /// [`ClientProtocol::upstream_ready`], then call `step` again.
    NeedUpstream,
    /// Upgrade the client stream to TLS, then call [`ClientProtocol::tls_started`]. If input is
    /// still buffered the client pipelined past STARTTLS: close instead (nothing sent in
    /// plaintext after STARTTLS is trusted).
    StartTls,
    /// Check these credentials, log in upstream, and report with
    /// [`ClientProtocol::login_finished`].
    Login(LoginRequest),
    /// Relay mode, client from an allow-listed address: it may send mail without logging in.
    /// The command that started it is left in `input`; everything from there on goes upstream.
    ProceedWithoutLogin,
    /// Close the connection.
    Close,
}

/// A local login as the client sent it.
#[derive(Debug)]
pub struct LoginRequest {
    /// Lossy UTF-8: a username that is not UTF-8 matches no configured login anyway.
    pub username: String,
    /// Raw bytes: IMAP quoted strings and literals may carry 8-bit bytes.
    pub password: SecretBytes,
}

/// How a login attempt ended, as the driver tells the client machine.
#[derive(Debug)]
pub enum LoginOutcome {
    /// Upstream accepted the token. `untagged` holds untagged upstream lines (IMAP) to forward
    /// before the success reply; `text` is the upstream's success text (e.g. `AUTHENTICATE
    /// completed.`), used where the protocol has room for it.
    Success { untagged: Vec<u8>, text: String },
    /// Unknown user or wrong password (one reply for both: no user enumeration).
    BadCredentials,
    /// Too many failures from this source: answer and close.
    Throttled,
    /// A token could not be had, or the upstream could not be reached: temporary (4xx).
    Unavailable(String),
    /// The upstream refused the token even after one forced refresh.
    Rejected(String),
}

/// What happens after a login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterLogin {
    /// Authenticated: forward any buffered client input upstream, then pipe the sockets.
    Pipe,
    /// Login failed; keep reading commands.
    Continue,
    /// Close the connection.
    Close,
}

/// The pre-login server side that a legacy client talks to.
pub trait ClientProtocol: Send + Sync {
    /// The greeting, sent at once on connect (not delayed by the upstream).
    fn greeting(&mut self, out: &mut Vec<u8>);
    /// Parse and handle at most one command from `input`.
    fn step(&mut self, input: &mut BytesMut, out: &mut Vec<u8>) -> Step;
    /// The upstream's capabilities after its TLS (SMTP EHLO keyword lines without the `250-`,
    /// IMAP capability atoms, POP3 CAPA lines), or `None` when the upstream is unavailable: the
    /// machine then answers from a safe default set and login will fail with a 4xx.
    fn upstream_ready(&mut self, capabilities: Option<&[String]>);
    /// The client stream is now TLS: forget every pre-TLS state.
    fn tls_started(&mut self);
    /// Report the login the machine asked for with [`Step::Login`].
    fn login_finished(&mut self, outcome: LoginOutcome, out: &mut Vec<u8>) -> AfterLogin;
    /// The server is shutting down: say goodbye (`421 4.3.0`, `* BYE`, `-ERR`).
    fn shutting_down(&mut self, out: &mut Vec<u8>);
    /// The client was idle too long before login: say goodbye.
    fn timed_out(&mut self, out: &mut Vec<u8>);
}

/// What the driver must do after a call to [`UpstreamProtocol::step`]. Bytes in `out` are
/// written to the upstream first.
#[derive(Debug)]
pub enum UpStep {
    /// Read more upstream input, then call `step` again.
    NeedInput,
    /// Call `step` again.
    Continue,
    /// Upgrade the upstream stream to TLS (server certificate verified), discard any buffered
    /// plaintext input, then call [`UpstreamProtocol::tls_started`].
    StartTls,
    /// Setup is done: these are the capabilities after TLS (same forms as
    /// [`ClientProtocol::upstream_ready`]). Call [`UpstreamProtocol::authenticate`] when a login
    /// needs it.
    Ready { capabilities: Vec<String> },
    /// XOAUTH2 accepted.
    AuthOk { untagged: Vec<u8>, text: String },
    /// XOAUTH2 refused (the upstream's text, for the client reply and the log).
    AuthRejected { text: String },
    /// The upstream misbehaved or lacks something we need (no STARTTLS, no XOAUTH2, a reply we
    /// do not understand, an overlong line). The text says what, for the log and the client.
    Failed(String),
}

/// The client side of the upstream dialogue (us → Exchange).
pub trait UpstreamProtocol: Send + Sync {
    /// Parse upstream input and advance.
    fn step(&mut self, input: &mut BytesMut, out: &mut Vec<u8>) -> UpStep;
    /// The upstream stream is now TLS: forget pre-TLS capabilities and continue the setup.
    fn tls_started(&mut self, out: &mut Vec<u8>);
    /// Start SASL XOAUTH2 for `mailbox` with `token` (after [`UpStep::Ready`]).
    fn authenticate(&mut self, mailbox: &str, token: &SecretString, out: &mut Vec<u8>);
    /// The capabilities the upstream announced in this session after TLS, for a listener's
    /// memory of them (IMAP: see `imap::upstream`); `None` when not asked or not remembered.
    fn verified_capabilities(&self) -> Option<Vec<String>> {
        None
    }
}
