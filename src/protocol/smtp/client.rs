//! The pre-login SMTP server a legacy client talks to.
//!
//! It answers EHLO from the upstream's post-TLS capabilities (filtered per DESIGN §1: `AUTH PLAIN
//! LOGIN`, never CRAM-MD5, STARTTLS only on a STARTTLS listener before TLS), accepts the local
//! login forms GLPI's libraries send (AUTH LOGIN with and without initial response, AUTH PLAIN in
//! one line or two steps, authzid empty or equal to the user), and refuses everything that needs a
//! login. Replies follow DESIGN §4.

use bytes::BytesMut;

use super::command::{Command, parse_command};
use super::extensions::{KEPT_EXTENSIONS, RELAY_DROPPED};
use super::reply::write_reply;
use crate::protocol::line::{Frame, LineFramer};
use crate::protocol::sasl::{self, LOGIN_PASSWORD_PROMPT, LOGIN_USERNAME_PROMPT, SaslError};
use crate::protocol::{
    AfterLogin, ClientContext, ClientProtocol, ClientTls, LoginOutcome, LoginRequest, Step,
};
use crate::protocol::{Leg, one_line};

#[derive(Debug)]
enum State {
    /// Ready for a command.
    Command,
    /// `AUTH PLAIN` sent without initial response; waiting for the base64 blob.
    PlainResponse,
    /// `AUTH LOGIN`: waiting for the base64 user name.
    LoginUsername,
    /// `AUTH LOGIN`: waiting for the base64 password.
    LoginPassword { username: String },
    /// An EHLO waits for the upstream's capabilities.
    EhloPending { domain: String },
    /// A login is being checked by the driver.
    LoginPending,
}

/// Pre-login SMTP server machine.
pub struct SmtpClient {
    ctx: ClientContext,
    framer: LineFramer,
    state: State,
    tls_active: bool,
    /// Upstream post-TLS EHLO keyword lines, once known (`None` inside = upstream unavailable).
    upstream: Option<Option<Vec<String>>>,
    commands: u32,
    bad_commands: u32,
    login_failures: u32,
    relay: Option<Relay>,
}

/// Relay-mode options (DESIGN §2).
#[derive(Debug, Clone, Copy)]
struct Relay {
    /// The client's address is allow-listed: mail may start without a login.
    open: bool,
}

/// The reply to a line over the framer's cap (`auth_line_max`), before the close.
const LINE_TOO_LONG_CLOSING: &[u8] = b"500 5.5.6 Line too long, closing connection\r\n";

impl SmtpClient {
    pub fn new(ctx: ClientContext) -> Self {
        let framer = LineFramer::new(ctx.limits.auth_line_max);
        let tls_active = ctx.tls == ClientTls::Implicit;
        SmtpClient {
            ctx,
            framer,
            state: State::Command,
            tls_active,
            upstream: None,
            commands: 0,
            bad_commands: 0,
            login_failures: 0,
            relay: None,
        }
    }

    /// Relay mode: the session after login is relayed command by command, so PIPELINING and
    /// CHUNKING are not offered; `open` lets an allow-listed client send without logging in.
    pub fn relay(mut self, open: bool) -> Self {
        self.relay = Some(Relay { open });
        self
    }

    /// STARTTLS is on offer: a STARTTLS listener that has not upgraded yet.
    fn starttls_offered(&self) -> bool {
        Leg::of(self.ctx.tls, self.tls_active) == Leg::StartTlsOffered
    }

    fn ehlo_reply(&self, domain: &str, out: &mut Vec<u8>) {
        // The client's own words go back to it: no control byte (a bare CR or NUL) may break
        // the reply's line structure.
        let mut lines = vec![format!("{} Hello {}", self.ctx.hostname, one_line(domain))];
        match &self.upstream {
            Some(Some(caps)) => {
                for cap in caps {
                    let keyword = cap.split(' ').next().unwrap_or("").to_ascii_uppercase();
                    if self.relay.is_some() && RELAY_DROPPED.contains(&keyword.as_str()) {
                        continue;
                    }
                    if KEPT_EXTENSIONS.contains(&keyword.as_str()) {
                        lines.push(cap.clone());
                    }
                }
            }
            _ => {
                for cap in ["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"] {
                    if self.relay.is_some() && RELAY_DROPPED.contains(&cap) {
                        continue;
                    }
                    lines.push(cap.to_string());
                }
            }
        }
        if self.starttls_offered() {
            lines.push("STARTTLS".into());
        } else {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        write_reply(out, 250, &lines);
    }

    fn bad(&mut self, out: &mut Vec<u8>, reply: &str) -> Step {
        self.bad_commands += 1;
        if self.bad_commands > self.ctx.limits.bad_commands_max {
            out.extend_from_slice(b"421 4.7.0 Too many invalid commands, closing connection\r\n");
            return Step::Close;
        }
        out.extend_from_slice(reply.as_bytes());
        Step::Continue
    }

    fn login(&mut self, username: String, password: Vec<u8>) -> Step {
        self.state = State::LoginPending;
        Step::Login(LoginRequest {
            username,
            password: password.into(),
        })
    }

    fn sasl_failure(&mut self, err: SaslError, out: &mut Vec<u8>) -> Step {
        self.state = State::Command;
        match err {
            SaslError::Cancelled => {
                out.extend_from_slice(b"501 5.7.0 Authentication cancelled\r\n");
                Step::Continue
            }
            SaslError::BadBase64 => self.bad(out, "501 5.5.2 Cannot decode base64 response\r\n"),
            SaslError::BadPlain => self.bad(out, "501 5.5.2 Malformed PLAIN response\r\n"),
            SaslError::AuthzidMismatch => {
                out.extend_from_slice(
                    b"535 5.7.8 Authorization identity must be empty or equal to the user name\r\n",
                );
                Step::Continue
            }
        }
    }

    fn command(&mut self, line: &[u8], input: &mut BytesMut, out: &mut Vec<u8>) -> Step {
        self.commands += 1;
        if self.commands > self.ctx.limits.preauth_commands_max {
            out.extend_from_slice(
                b"421 4.7.0 Too many commands before login, closing connection\r\n",
            );
            return Step::Close;
        }
        let cmd = parse_command(line);
        if line.len() > self.ctx.limits.line_max && !matches!(cmd, Command::Auth { .. }) {
            return self.bad(out, "500 5.5.6 Line too long\r\n");
        }
        match cmd {
            Command::Ehlo(domain) | Command::Helo(domain) if domain.is_empty() => {
                self.bad(out, "501 5.5.4 Syntax: EHLO hostname\r\n")
            }
            Command::Ehlo(domain) => {
                let domain = String::from_utf8_lossy(domain).into_owned();
                if self.upstream.is_none() {
                    self.state = State::EhloPending { domain };
                    return Step::NeedUpstream;
                }
                self.ehlo_reply(&domain, out);
                Step::Continue
            }
            Command::Helo(_) => {
                out.extend_from_slice(format!("250 {}\r\n", self.ctx.hostname).as_bytes());
                Step::Continue
            }
            Command::StartTls { has_args: true } => self.bad(out, "501 5.5.4 Syntax: STARTTLS\r\n"),
            Command::StartTls { has_args: false } => {
                if self.starttls_offered() {
                    out.extend_from_slice(b"220 2.0.0 Ready to start TLS\r\n");
                    Step::StartTls
                } else if self.tls_active {
                    self.bad(out, "503 5.5.1 TLS already active\r\n")
                } else {
                    self.bad(
                        out,
                        "454 4.7.0 STARTTLS not available on this port (configure this listener with tls: starttls)\r\n",
                    )
                }
            }
            Command::Auth { mechanism, initial } => {
                if self.starttls_offered() {
                    out.extend_from_slice(b"530 5.7.0 Must issue a STARTTLS command first\r\n");
                    return Step::Continue;
                }
                match (mechanism.as_str(), initial) {
                    ("PLAIN", None) => {
                        self.state = State::PlainResponse;
                        out.extend_from_slice(b"334 \r\n");
                        Step::Continue
                    }
                    ("PLAIN", Some(ir)) => self.plain_response(ir, out),
                    ("LOGIN", None) => {
                        self.state = State::LoginUsername;
                        out.extend_from_slice(
                            format!("334 {LOGIN_USERNAME_PROMPT}\r\n").as_bytes(),
                        );
                        Step::Continue
                    }
                    ("LOGIN", Some(ir)) => self.login_username(ir, out),
                    _ => {
                        out.extend_from_slice(
                            b"504 5.5.4 Unrecognized authentication type (use PLAIN or LOGIN)\r\n",
                        );
                        Step::Continue
                    }
                }
            }
            Command::NeedsAuth if self.relay.is_some_and(|r| r.open) => {
                // Put the command back: the relay takes it from here.
                let mut restored = BytesMut::with_capacity(line.len() + 2 + input.len());
                restored.extend_from_slice(line);
                restored.extend_from_slice(b"\r\n");
                restored.unsplit(input.split());
                *input = restored;
                Step::ProceedWithoutLogin
            }
            Command::NeedsAuth => {
                out.extend_from_slice(b"530 5.7.0 Authentication required\r\n");
                Step::Continue
            }
            Command::Rset => {
                out.extend_from_slice(b"250 2.0.0 OK\r\n");
                Step::Continue
            }
            Command::Noop => {
                out.extend_from_slice(b"250 2.0.0 OK\r\n");
                Step::Continue
            }
            Command::Help => {
                out.extend_from_slice(
                    b"214 2.0.0 authbridge: EHLO, AUTH PLAIN|LOGIN, then mail as usual\r\n",
                );
                Step::Continue
            }
            Command::Quit => {
                out.extend_from_slice(b"221 2.0.0 Bye\r\n");
                Step::Close
            }
            Command::Unknown => self.bad(out, "500 5.5.2 Command not recognized\r\n"),
        }
    }

    fn plain_response(&mut self, line: &[u8], out: &mut Vec<u8>) -> Step {
        match sasl::decode_plain_response(line) {
            Ok(creds) => {
                let password = creds.password.expose().clone();
                self.login(creds.username, password)
            }
            Err(e) => self.sasl_failure(e, out),
        }
    }

    fn login_username(&mut self, line: &[u8], out: &mut Vec<u8>) -> Step {
        match sasl::decode_response(line) {
            Ok(user) => {
                self.state = State::LoginPassword {
                    username: String::from_utf8_lossy(&user).into_owned(),
                };
                out.extend_from_slice(format!("334 {LOGIN_PASSWORD_PROMPT}\r\n").as_bytes());
                Step::Continue
            }
            Err(e) => self.sasl_failure(e, out),
        }
    }
}

impl ClientProtocol for SmtpClient {
    fn greeting(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(
            format!("220 {} ESMTP authbridge ready\r\n", self.ctx.hostname).as_bytes(),
        );
    }

    fn step(&mut self, input: &mut BytesMut, out: &mut Vec<u8>) -> Step {
        match &self.state {
            State::EhloPending { domain } => {
                if self.upstream.is_none() {
                    return Step::NeedUpstream;
                }
                let domain = domain.clone();
                self.state = State::Command;
                self.ehlo_reply(&domain, out);
                return Step::Continue;
            }
            // The driver never steps while a login is pending; wait for `login_finished`.
            State::LoginPending => return Step::NeedInput,
            _ => {}
        }
        let line = match self.framer.next(input) {
            // A line over the framer's cap is answered as soon as the cap is crossed, whether
            // or not its end has come, and the session closes (as Postfix and Dovecot do): a
            // client that sends one is broken or hostile, and waiting for its end would leave
            // it without an answer until the idle timeout.
            Frame::Incomplete if !self.framer.is_discarding() => return Step::NeedInput,
            Frame::Incomplete | Frame::TooLong => {
                out.extend_from_slice(LINE_TOO_LONG_CLOSING);
                return Step::Close;
            }
            Frame::Line(line) => line,
        };
        match std::mem::replace(&mut self.state, State::Command) {
            State::Command => self.command(&line, input, out),
            State::PlainResponse => self.plain_response(&line, out),
            State::LoginUsername => self.login_username(&line, out),
            State::LoginPassword { username } => match sasl::decode_response(&line) {
                Ok(password) => self.login(username, password),
                Err(e) => self.sasl_failure(e, out),
            },
            State::EhloPending { .. } | State::LoginPending => unreachable!("checked above"),
        }
    }

    fn upstream_ready(&mut self, capabilities: Option<&[String]>) {
        // A pending EHLO is answered on the next `step`.
        self.upstream = Some(capabilities.map(<[String]>::to_vec));
    }

    fn tls_started(&mut self) {
        self.tls_active = true;
        self.framer.reset();
        self.state = State::Command;
        // RFC 3207 §4.2: the client must send EHLO again; nothing from before TLS is kept.
    }

    fn login_finished(&mut self, outcome: LoginOutcome, out: &mut Vec<u8>) -> AfterLogin {
        self.state = State::Command;
        match outcome {
            LoginOutcome::Success { .. } => {
                out.extend_from_slice(b"235 2.7.0 Authentication successful\r\n");
                AfterLogin::Pipe
            }
            LoginOutcome::BadCredentials => {
                out.extend_from_slice(b"535 5.7.8 Authentication credentials invalid\r\n");
                self.login_failures += 1;
                if self.login_failures >= self.ctx.limits.session_login_failures_max {
                    out.extend_from_slice(
                        b"421 4.7.0 Too many failed logins, closing connection\r\n",
                    );
                    return AfterLogin::Close;
                }
                AfterLogin::Continue
            }
            LoginOutcome::Throttled => {
                out.extend_from_slice(
                    b"421 4.7.0 Too many failed logins from your address, try again later\r\n",
                );
                AfterLogin::Close
            }
            LoginOutcome::Unavailable(why) => {
                out.extend_from_slice(
                    format!(
                        "454 4.7.0 Temporary authentication failure: {}\r\n",
                        one_line(&why)
                    )
                    .as_bytes(),
                );
                AfterLogin::Continue
            }
            LoginOutcome::Rejected(text) => {
                let text = one_line(&text);
                let reply = if starts_with_enhanced_code(&text) {
                    format!("535 {text}\r\n")
                } else {
                    format!("535 5.7.3 {text}\r\n")
                };
                out.extend_from_slice(reply.as_bytes());
                AfterLogin::Continue
            }
        }
    }

    fn shutting_down(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"421 4.3.0 Server shutting down, try again later\r\n");
    }

    fn timed_out(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"421 4.4.2 Idle for too long, closing connection\r\n");
    }
}

/// `5.7.139 ...`: a permanent enhanced status code (RFC 3463) leads the text. Only class 5 is
/// kept under our `535`: RFC 3463 §2 wants the class to match the reply code, and a client that
/// reads the enhanced code (Postfix does) must see a permanent failure here, not `4.x.x`/`2.x.x`.
fn starts_with_enhanced_code(text: &str) -> bool {
    let first = text.split(' ').next().unwrap_or("");
    let parts: Vec<&str> = first.split('.').collect();
    parts.len() == 3
        && parts[0] == "5"
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::starts_with_enhanced_code;

    #[test]
    fn only_a_permanent_enhanced_code_is_kept_under_535() {
        for (text, kept) in [
            (
                "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled",
                true,
            ),
            ("5.7.3 Authentication unsuccessful [host]", true),
            ("5.7.8 Error: authentication failed", true),
            ("4.7.0 Temporary authentication failure", false),
            ("2.7.0 Authentication successful", false),
            ("Authentication unsuccessful", false),
            ("5.7 missing part", false),
            ("5.7.1234 too long", false),
            ("5..1 empty part", false),
            ("", false),
        ] {
            assert_eq!(starts_with_enhanced_code(text), kept, "{text:?}");
        }
    }

    /// A line over the framer's cap (auth_line_max) is answered as soon as the cap is crossed,
    /// with or without its end, and the session closes; whatever the read boundaries.
    #[test]
    fn a_line_over_the_cap_is_answered_at_once_and_closes() {
        use crate::protocol::imap::testkit::{End, Env, ctx, run};
        use crate::protocol::{ClientTls, LoginOutcome};
        let env = Env {
            caps: None,
            outcomes: &|_| LoginOutcome::BadCredentials,
        };
        let greeting_len = {
            let mut out = Vec::new();
            use crate::protocol::ClientProtocol;
            super::SmtpClient::new(ctx(ClientTls::None)).greeting(&mut out);
            out.len()
        };
        let unended = format!("NOOP {}", "x".repeat(12300));
        let ended = format!("{unended}\r\nNOOP\r\n");
        for script in [&unended, &ended] {
            for cut in [1, 4000, 12289, 12290, script.len() - 1] {
                let (a, b) = script.as_bytes().split_at(cut);
                let r = run(
                    &mut super::SmtpClient::new(ctx(ClientTls::None)),
                    &env,
                    &[a, b],
                );
                assert_eq!(
                    String::from_utf8_lossy(&r.out[greeting_len..]),
                    "500 5.5.6 Line too long, closing connection\r\n",
                    "cut at {cut}"
                );
                assert_eq!(r.end, End::Closed);
            }
        }
    }
}
