//! The pre-login POP3 server a legacy client talks to (RFC 1939 AUTHORIZATION state).
//!
//! It greets at once (never with an APOP timestamp: laminas-mail would try APOP), answers CAPA
//! from the upstream's list (filtered, see [`client_capa`]), and accepts `USER`/`PASS` (the
//! password raw, to the end of the line), `AUTH PLAIN` (initial response or `+ ` continuation)
//! and `AUTH LOGIN`, `STLS` on a STARTTLS listener, and `QUIT`. Everything else is `-ERR`.
//! Replies follow DESIGN §4 with RFC 3206 response codes (`[AUTH]`, `[SYS/TEMP]`).
//!
//! Counting is the same as IMAP's: every command toward `preauth_commands_max`, every `-ERR` for
//! an invalid or unknown command toward `bad_commands_max`, failed credential checks toward
//! `session_login_failures_max`.

use bytes::BytesMut;

use super::command::{Command, parse_command};
use crate::protocol::line::{Frame, LineFramer};
use crate::protocol::sasl::{self, LOGIN_PASSWORD_PROMPT, LOGIN_USERNAME_PROMPT, SaslError};
use crate::protocol::{
    AfterLogin, ClientContext, ClientProtocol, ClientTls, LoginOutcome, LoginRequest, Step,
};
use crate::protocol::{one_line, strip_resp_code};
use crate::secret::SecretBytes;

pub use crate::protocol::Leg;

/// The CAPA lines shown to the client (RFC 2449 §6).
///
/// From the upstream's list, `SASL …`, `STLS`, `USER` and `APOP` describe the upstream's own
/// login and are dropped; `RESP-CODES` and `AUTH-RESP-CODE` are always listed (our replies carry
/// `[AUTH]` and `[SYS/TEMP]`). Ours are added per leg:
/// - plaintext listener: `USER`, no `SASL`. PHP's c-client logs "SECURITY PROBLEM: insecure
///   server advertised AUTH=PLAIN" for POP3 too (transcript pop3-c-client-glpi94, `errors`) and
///   uses `USER`/`PASS` when no SASL is listed. `AUTH PLAIN` is still accepted (curl sends it).
/// - STARTTLS listener before TLS: `STLS` only (RFC 2595 §4: no `USER` while login is refused).
/// - TLS: `USER` and `SASL PLAIN`.
pub fn client_capa(upstream: Option<&[String]>, leg: Leg) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for line in upstream.unwrap_or_default() {
        let keyword = line
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let clean = !line.is_empty()
            && line.len() <= 200
            && !line.starts_with('.')
            && line.chars().all(|c| !c.is_control());
        let dropped = matches!(
            keyword.as_str(),
            "SASL" | "STLS" | "USER" | "APOP" | "RESP-CODES" | "AUTH-RESP-CODE"
        );
        if clean && !dropped && !lines.iter().any(|l| l.eq_ignore_ascii_case(line)) {
            lines.push(line.clone());
        }
    }
    lines.push("RESP-CODES".into());
    lines.push("AUTH-RESP-CODE".into());
    match leg {
        Leg::Plain => lines.push("USER".into()),
        Leg::StartTlsOffered => lines.push("STLS".into()),
        Leg::Tls => {
            lines.push("USER".into());
            lines.push("SASL PLAIN".into());
        }
    }
    lines
}

#[derive(Debug)]
enum State {
    Command,
    /// A CAPA waits for the upstream's capabilities.
    CapaPending,
    /// `AUTH PLAIN` without initial response: waiting for the base64 message.
    PlainResponse,
    /// `AUTH LOGIN`: waiting for the base64 user name.
    LoginUsername,
    /// `AUTH LOGIN`: waiting for the base64 password.
    LoginPassword {
        username: String,
    },
    /// The driver is checking a login.
    LoginPending,
    /// Logged in (piping) or closing.
    Done,
}

/// Pre-login POP3 server machine.
pub struct Pop3Client {
    ctx: ClientContext,
    framer: LineFramer,
    state: State,
    tls_active: bool,
    upstream: Option<Option<Vec<String>>>,
    /// The name from `USER`, until `PASS` (RFC 1939 §7).
    user: Option<String>,
    commands: u32,
    bad_commands: u32,
    login_failures: u32,
}

impl Pop3Client {
    pub fn new(ctx: ClientContext) -> Self {
        let framer = LineFramer::new(ctx.limits.line_max.max(ctx.limits.auth_line_max));
        let tls_active = ctx.tls == ClientTls::Implicit;
        Pop3Client {
            ctx,
            framer,
            state: State::Command,
            tls_active,
            upstream: None,
            user: None,
            commands: 0,
            bad_commands: 0,
            login_failures: 0,
        }
    }

    fn leg(&self) -> Leg {
        Leg::of(self.ctx.tls, self.tls_active)
    }

    fn privacy_required(&self) -> bool {
        self.leg() == Leg::StartTlsOffered
    }

    fn capa_reply(&self, out: &mut Vec<u8>) {
        let upstream = self.upstream.as_ref().and_then(|u| u.as_deref());
        out.extend_from_slice(b"+OK Capability list follows\r\n");
        for line in client_capa(upstream, self.leg()) {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }

    /// `-ERR <reason>`, counted as an invalid command.
    fn bad(&mut self, reason: &str, out: &mut Vec<u8>) -> Step {
        self.state = State::Command;
        out.extend_from_slice(format!("-ERR {reason}\r\n").as_bytes());
        self.bad_commands = self.bad_commands.saturating_add(1);
        if self.bad_commands > self.ctx.limits.bad_commands_max {
            out.extend_from_slice(b"-ERR Too many invalid commands\r\n");
            self.state = State::Done;
            return Step::Close;
        }
        Step::Continue
    }

    fn login(&mut self, username: String, password: SecretBytes) -> Step {
        self.state = State::LoginPending;
        Step::Login(LoginRequest { username, password })
    }

    fn command(&mut self, line: &[u8], out: &mut Vec<u8>) -> Step {
        self.commands = self.commands.saturating_add(1);
        if self.commands > self.ctx.limits.preauth_commands_max {
            out.extend_from_slice(b"-ERR Too many commands before login\r\n");
            self.state = State::Done;
            return Step::Close;
        }
        let command = parse_command(line);
        if line.len() > self.ctx.limits.line_max && !matches!(command, Command::Auth { .. }) {
            return self.bad("Line too long", out);
        }
        match command {
            Command::Capa => {
                if self.upstream.is_none() {
                    self.state = State::CapaPending;
                    return Step::NeedUpstream;
                }
                self.capa_reply(out);
                Step::Continue
            }
            Command::User(name) => {
                if self.privacy_required() {
                    out.extend_from_slice(b"-ERR Use STLS first\r\n");
                    return Step::Continue;
                }
                self.user = Some(String::from_utf8_lossy(name).into_owned());
                out.extend_from_slice(b"+OK Send your password\r\n");
                Step::Continue
            }
            Command::Pass(password) => {
                if self.privacy_required() {
                    out.extend_from_slice(b"-ERR Use STLS first\r\n");
                    return Step::Continue;
                }
                match self.user.take() {
                    Some(user) => self.login(user, SecretBytes::new(password.to_vec())),
                    None => self.bad("Send USER first", out),
                }
            }
            Command::Auth { mechanism, initial } => {
                let Some(mechanism) = mechanism else {
                    // RFC 1734 style listing; same advertising rule as CAPA.
                    out.extend_from_slice(b"+OK Mechanisms follow\r\n");
                    if self.leg() == Leg::Tls {
                        out.extend_from_slice(b"PLAIN\r\n");
                    }
                    out.extend_from_slice(b".\r\n");
                    return Step::Continue;
                };
                if self.privacy_required() {
                    out.extend_from_slice(b"-ERR Use STLS first\r\n");
                    return Step::Continue;
                }
                match (mechanism.as_str(), initial) {
                    ("PLAIN", None) => {
                        // c-client and curl wait for "+ " (pop3-c-client-glpi94, pop3-curl).
                        out.extend_from_slice(b"+ \r\n");
                        self.state = State::PlainResponse;
                        Step::Continue
                    }
                    ("PLAIN", Some(ir)) => self.plain_response(ir, out),
                    ("LOGIN", None) => {
                        out.extend_from_slice(format!("+ {LOGIN_USERNAME_PROMPT}\r\n").as_bytes());
                        self.state = State::LoginUsername;
                        Step::Continue
                    }
                    ("LOGIN", Some(ir)) => self.login_username(ir, out),
                    _ => {
                        out.extend_from_slice(b"-ERR Unsupported authentication mechanism\r\n");
                        Step::Continue
                    }
                }
            }
            Command::Stls => {
                if self.leg() == Leg::StartTlsOffered {
                    out.extend_from_slice(b"+OK Begin TLS negotiation\r\n");
                    Step::StartTls
                } else if self.tls_active {
                    self.bad("TLS is already active", out)
                } else {
                    self.bad(
                        "STLS not available on this port (configure this listener with tls: starttls)",
                        out,
                    )
                }
            }
            Command::Quit => {
                out.extend_from_slice(b"+OK Bye\r\n");
                self.state = State::Done;
                Step::Close
            }
            Command::Apop => self.bad("APOP not supported", out),
            Command::NeedsAuth => self.bad("Command not valid before login", out),
            Command::Syntax(why) => self.bad(why, out),
            Command::Unknown => self.bad("Unknown command", out),
        }
    }

    fn plain_response(&mut self, line: &[u8], out: &mut Vec<u8>) -> Step {
        match sasl::decode_plain_response(line) {
            Ok(creds) => self.login(creds.username, creds.password),
            Err(e) => self.sasl_failure(e, out),
        }
    }

    fn login_username(&mut self, line: &[u8], out: &mut Vec<u8>) -> Step {
        match sasl::decode_response(line) {
            Ok(user) => {
                out.extend_from_slice(format!("+ {LOGIN_PASSWORD_PROMPT}\r\n").as_bytes());
                self.state = State::LoginPassword {
                    username: String::from_utf8_lossy(&user).into_owned(),
                };
                Step::Continue
            }
            Err(e) => self.sasl_failure(e, out),
        }
    }

    fn sasl_failure(&mut self, err: SaslError, out: &mut Vec<u8>) -> Step {
        self.state = State::Command;
        match err {
            SaslError::Cancelled => {
                out.extend_from_slice(b"-ERR AUTH cancelled\r\n");
                Step::Continue
            }
            SaslError::BadBase64 => self.bad("Invalid base64 in SASL response", out),
            SaslError::BadPlain => self.bad("Malformed PLAIN response", out),
            SaslError::AuthzidMismatch => {
                out.extend_from_slice(
                    b"-ERR [AUTH] Authorization identity must be empty or equal to the user name\r\n",
                );
                Step::Continue
            }
        }
    }
}

impl ClientProtocol for Pop3Client {
    fn greeting(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"+OK authbridge POP3 proxy ready\r\n");
    }

    fn step(&mut self, input: &mut BytesMut, out: &mut Vec<u8>) -> Step {
        match self.state {
            State::CapaPending => {
                if self.upstream.is_none() {
                    return Step::NeedUpstream;
                }
                self.state = State::Command;
                self.capa_reply(out);
                return Step::Continue;
            }
            State::LoginPending => return Step::NeedInput,
            State::Done => return Step::Close,
            _ => {}
        }
        let line = match self.framer.next(input) {
            // A line over the framer's cap is answered as soon as the cap is crossed, whether
            // or not its end has come, and the session closes (as Dovecot does).
            Frame::Incomplete if !self.framer.is_discarding() => return Step::NeedInput,
            Frame::Incomplete | Frame::TooLong => {
                out.extend_from_slice(b"-ERR Line too long, closing connection\r\n");
                self.state = State::Done;
                return Step::Close;
            }
            Frame::Line(line) => line,
        };
        match std::mem::replace(&mut self.state, State::Command) {
            State::Command => self.command(&line, out),
            State::PlainResponse => self.plain_response(&line, out),
            State::LoginUsername => self.login_username(&line, out),
            State::LoginPassword { username } => match sasl::decode_response(&line) {
                Ok(password) => self.login(username, SecretBytes::new(password)),
                Err(e) => self.sasl_failure(e, out),
            },
            other @ (State::CapaPending | State::LoginPending | State::Done) => {
                self.state = other;
                Step::Continue
            }
        }
    }

    fn upstream_ready(&mut self, capabilities: Option<&[String]>) {
        self.upstream = Some(capabilities.map(<[String]>::to_vec));
    }

    fn tls_started(&mut self) {
        // RFC 2595 §4: the client must forget what it learnt; we forget the USER name and any
        // partial exchange.
        self.tls_active = true;
        self.framer.reset();
        self.user = None;
        self.state = State::Command;
    }

    fn login_finished(&mut self, outcome: LoginOutcome, out: &mut Vec<u8>) -> AfterLogin {
        self.state = State::Command;
        match outcome {
            LoginOutcome::Success { text, .. } => {
                let text = one_line(&text);
                let text = if text.trim().is_empty() {
                    "Logged in.".to_string()
                } else {
                    text
                };
                out.extend_from_slice(format!("+OK {text}\r\n").as_bytes());
                self.state = State::Done;
                AfterLogin::Pipe
            }
            LoginOutcome::BadCredentials => {
                out.extend_from_slice(b"-ERR [AUTH] Authentication failed\r\n");
                self.login_failures = self.login_failures.saturating_add(1);
                if self.login_failures >= self.ctx.limits.session_login_failures_max {
                    self.state = State::Done;
                    return AfterLogin::Close;
                }
                AfterLogin::Continue
            }
            LoginOutcome::Throttled => {
                out.extend_from_slice(
                    b"-ERR [SYS/TEMP] Too many failed logins, try again later\r\n",
                );
                self.state = State::Done;
                AfterLogin::Close
            }
            LoginOutcome::Unavailable(why) => {
                out.extend_from_slice(format!("-ERR [SYS/TEMP] {}\r\n", one_line(&why)).as_bytes());
                AfterLogin::Continue
            }
            LoginOutcome::Rejected(text) => {
                let text = one_line(strip_resp_code(&text));
                let text = if text.trim().is_empty() {
                    "Upstream refused the login".to_string()
                } else {
                    text
                };
                out.extend_from_slice(format!("-ERR [AUTH] {text}\r\n").as_bytes());
                AfterLogin::Continue
            }
        }
    }

    fn shutting_down(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"-ERR [SYS/TEMP] Server shutting down, try again later\r\n");
        self.state = State::Done;
    }

    fn timed_out(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"-ERR Autologout; idle for too long\r\n");
        self.state = State::Done;
    }
}
