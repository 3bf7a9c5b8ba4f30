//! The pre-login IMAP server a legacy client talks to (RFC 3501 not-authenticated state).
//!
//! It greets at once with our own capability list, answers CAPABILITY from the upstream's
//! (filtered, see [`capability`](super::capability)), NOOP, ID, LOGOUT and STARTTLS, and accepts the
//! login forms GLPI's libraries and curl send: `LOGIN` with atom, quoted or literal arguments,
//! `AUTHENTICATE PLAIN` (SASL-IR or continuation) and `AUTHENTICATE LOGIN`. Everything else is
//! refused with `BAD`. Replies follow DESIGN §4.
//!
//! Counting: every command (also a refused literal or an overlong line) counts toward
//! `preauth_commands_max`, every `BAD` toward `bad_commands_max`; once either count goes over its
//! limit the session ends with `* BYE`. Failed credential checks count toward
//! `session_login_failures_max`; reaching it ends the session.

use bytes::BytesMut;

use super::capability::{Leg, client_capabilities};
use super::command::{
    Command, LiteralAnnouncement, ParseError, Tag, Tagged, parse_command, parse_head, parse_tag,
};
use super::reader::{CommandReader, ReadEvent};
use crate::protocol::line::Frame;
use crate::protocol::sasl::{self, LOGIN_PASSWORD_PROMPT, LOGIN_USERNAME_PROMPT, SaslError};
use crate::protocol::{
    AfterLogin, ClientContext, ClientProtocol, ClientTls, LoginOutcome, LoginRequest, Step,
};
use crate::protocol::{one_line, strip_resp_code};
use crate::secret::SecretBytes;

/// Literals in one command: LOGIN needs two; ID may carry a few.
const LITERALS_PER_COMMAND_MAX: usize = 8;

#[derive(Debug)]
enum State {
    /// Ready for a command.
    Command,
    /// A CAPABILITY waits for the upstream's capabilities.
    CapabilityPending { tag: Tag },
    /// `AUTHENTICATE PLAIN` without initial response: waiting for the base64 message.
    PlainResponse { tag: Tag },
    /// `AUTHENTICATE LOGIN`: waiting for the base64 user name.
    LoginUsername { tag: Tag },
    /// `AUTHENTICATE LOGIN`: waiting for the base64 password.
    LoginPassword { tag: Tag, username: String },
    /// The driver is checking a login.
    LoginPending { tag: Tag },
    /// Logged in (piping) or closing: no more input is ours.
    Done,
}

/// Pre-login IMAP server machine.
pub struct ImapClient {
    ctx: ClientContext,
    reader: CommandReader,
    state: State,
    tls_active: bool,
    /// Upstream capability atoms once known (`Some(None)`: the upstream is unavailable).
    upstream: Option<Option<Vec<String>>>,
    commands: u32,
    bad_commands: u32,
    login_failures: u32,
}

impl ImapClient {
    pub fn new(ctx: ClientContext) -> Self {
        // One framer for command lines and SASL responses; command lines are held to `line_max`
        // after parsing (AUTHENTICATE lines may be as long as `auth_line_max`).
        let reader = CommandReader::new(ctx.limits.line_max.max(ctx.limits.auth_line_max));
        let tls_active = ctx.tls == ClientTls::Implicit;
        ImapClient {
            ctx,
            reader,
            state: State::Command,
            tls_active,
            upstream: None,
            commands: 0,
            bad_commands: 0,
            login_failures: 0,
        }
    }

    fn leg(&self) -> Leg {
        Leg::of(self.ctx.tls, self.tls_active)
    }

    /// A STARTTLS listener that has not upgraded yet: no login allowed.
    fn privacy_required(&self) -> bool {
        self.leg() == Leg::StartTlsOffered
    }

    fn capabilities(&self) -> String {
        let upstream = self.upstream.as_ref().and_then(|u| u.as_deref());
        client_capabilities(upstream, self.leg()).join(" ")
    }

    /// Count one command; past the limit, say goodbye.
    fn count_command(&mut self, out: &mut Vec<u8>) -> Option<Step> {
        self.commands = self.commands.saturating_add(1);
        if self.commands > self.ctx.limits.preauth_commands_max {
            out.extend_from_slice(b"* BYE Too many commands before login\r\n");
            self.state = State::Done;
            return Some(Step::Close);
        }
        None
    }

    /// Answer `BAD` (tagged when the tag is known) and count it.
    fn bad(&mut self, tag: Option<&Tag>, reason: &str, out: &mut Vec<u8>) -> Step {
        self.state = State::Command;
        match tag {
            Some(tag) => reply(out, tag, &format!("BAD {reason}")),
            None => out.extend_from_slice(format!("* BAD {reason}\r\n").as_bytes()),
        }
        self.bad_commands = self.bad_commands.saturating_add(1);
        if self.bad_commands > self.ctx.limits.bad_commands_max {
            out.extend_from_slice(b"* BYE Too many invalid commands\r\n");
            self.state = State::Done;
            return Step::Close;
        }
        Step::Continue
    }

    /// A line over the framer's cap: answered as soon as the cap is crossed, whether or not its
    /// end has come, then `* BYE` and close (as Dovecot does). Waiting for the end would leave
    /// the client without an answer until the idle timeout.
    fn too_long(&mut self, tag: Option<&Tag>, out: &mut Vec<u8>) -> Step {
        match tag {
            Some(tag) => reply(out, tag, "BAD Line too long"),
            None => out.extend_from_slice(b"* BAD Line too long\r\n"),
        }
        out.extend_from_slice(b"* BYE Line too long, closing connection\r\n");
        self.state = State::Done;
        Step::Close
    }

    /// Decide on a literal before its payload is read (RFC 3501 §7.5: a server may refuse a
    /// synchronising literal with a tagged BAD/NO instead of `+`). `None`: accepted.
    fn on_literal(
        &mut self,
        announcement: LiteralAnnouncement,
        count: usize,
        out: &mut Vec<u8>,
    ) -> Option<Step> {
        let head = parse_head(self.reader.partial());
        let size_ok = usize::try_from(announcement.size)
            .is_ok_and(|size| size <= self.ctx.limits.literal_max);
        let sync = !announcement.non_sync;
        let refusal: Option<(bool, String)> = match &head {
            None => Some((true, "Invalid tag".into())),
            Some(_) if !size_ok => Some((
                true,
                format!(
                    "Literal too large (at most {} octets before login)",
                    self.ctx.limits.literal_max
                ),
            )),
            Some(_) if count > LITERALS_PER_COMMAND_MAX => {
                Some((true, "Too many literals in one command".into()))
            }
            Some(_) if self.reader.longest_line() > self.ctx.limits.line_max => {
                Some((true, "Line too long".into()))
            }
            Some((_, name)) if sync && matches!(name.as_str(), "LOGIN" | "AUTHENTICATE") => self
                .privacy_required()
                .then(|| (false, "[PRIVACYREQUIRED] Use STARTTLS first".into())),
            Some((_, name)) if sync && super::command::needs_auth(name) => {
                Some((true, "Command not valid before login".into()))
            }
            Some((_, name)) if sync && !matches!(name.as_str(), "LOGIN" | "ID") => {
                Some((true, "Unexpected literal".into()))
            }
            Some(_) => None,
        };
        let Some((is_bad, text)) = refusal else {
            if sync {
                // laminas-mail needs "+ " with the space (imap-laminas-lf-password-literal).
                out.extend_from_slice(b"+ Ready\r\n");
            }
            self.reader.accept_literal();
            return None;
        };
        self.reader.refuse_literal();
        if let Some(step) = self.count_command(out) {
            return Some(step);
        }
        let tag = head.map(|(tag, _)| tag);
        let step = if is_bad {
            self.bad(tag.as_ref(), &text, out)
        } else {
            if let Some(tag) = &tag {
                reply(out, tag, &format!("NO {text}"));
            }
            Step::Continue
        };
        if announcement.non_sync {
            // The client sends the payload anyway; it cannot be told apart from commands.
            self.state = State::Done;
            return Some(Step::Close);
        }
        Some(step)
    }

    fn command(&mut self, bytes: &[u8], longest_line: usize, out: &mut Vec<u8>) -> Step {
        if let Some(step) = self.count_command(out) {
            return step;
        }
        let Tagged { tag, command } = match parse_command(bytes) {
            Ok(tagged) => tagged,
            Err(ParseError::NoTag) => return self.bad(None, "Invalid tag or command", out),
            Err(ParseError::Syntax { tag, reason }) => return self.bad(Some(&tag), reason, out),
        };
        if longest_line > self.ctx.limits.line_max
            && !matches!(command, Command::Authenticate { .. })
        {
            return self.bad(Some(&tag), "Line too long", out);
        }
        match command {
            Command::Capability => {
                if self.upstream.is_none() {
                    self.state = State::CapabilityPending { tag };
                    return Step::NeedUpstream;
                }
                self.capability_reply(&tag, out);
                Step::Continue
            }
            Command::Noop => {
                reply(out, &tag, "OK NOOP completed");
                Step::Continue
            }
            Command::Id => {
                out.extend_from_slice(b"* ID NIL\r\n");
                reply(out, &tag, "OK ID completed");
                Step::Continue
            }
            Command::Logout => {
                out.extend_from_slice(b"* BYE authbridge logging out\r\n");
                reply(out, &tag, "OK LOGOUT completed");
                self.state = State::Done;
                Step::Close
            }
            Command::StartTls => {
                if self.leg() == Leg::StartTlsOffered {
                    reply(out, &tag, "OK Begin TLS negotiation now");
                    Step::StartTls
                } else if self.tls_active {
                    self.bad(Some(&tag), "TLS is already active", out)
                } else {
                    self.bad(
                        Some(&tag),
                        "STARTTLS not available on this port (configure this listener with tls: starttls)",
                        out,
                    )
                }
            }
            Command::Login { username, password } => {
                if self.privacy_required() {
                    reply(out, &tag, "NO [PRIVACYREQUIRED] Use STARTTLS first");
                    return Step::Continue;
                }
                let username = String::from_utf8_lossy(&username).into_owned();
                self.login(tag, username, password)
            }
            Command::Authenticate { mechanism, initial } => {
                if self.privacy_required() {
                    reply(out, &tag, "NO [PRIVACYREQUIRED] Use STARTTLS first");
                    return Step::Continue;
                }
                match (mechanism.as_str(), initial) {
                    ("PLAIN", None) => {
                        // c-client waits for "+ " (imap-c-client-glpi94).
                        out.extend_from_slice(b"+ \r\n");
                        self.state = State::PlainResponse { tag };
                        Step::Continue
                    }
                    ("PLAIN", Some(ir)) => self.plain_response(tag, ir.expose(), out),
                    ("LOGIN", None) => {
                        out.extend_from_slice(format!("+ {LOGIN_USERNAME_PROMPT}\r\n").as_bytes());
                        self.state = State::LoginUsername { tag };
                        Step::Continue
                    }
                    ("LOGIN", Some(ir)) => self.login_username(tag, ir.expose(), out),
                    _ => {
                        reply(
                            out,
                            &tag,
                            "NO [CANNOT] Unsupported authentication mechanism",
                        );
                        Step::Continue
                    }
                }
            }
            Command::NeedsAuth(_) => self.bad(Some(&tag), "Command not valid before login", out),
            Command::Unknown(_) => self.bad(Some(&tag), "Unknown command", out),
        }
    }

    fn capability_reply(&self, tag: &Tag, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("* CAPABILITY {}\r\n", self.capabilities()).as_bytes());
        reply(out, tag, "OK CAPABILITY completed");
    }

    fn login(&mut self, tag: Tag, username: String, password: SecretBytes) -> Step {
        self.state = State::LoginPending { tag };
        Step::Login(LoginRequest { username, password })
    }

    fn plain_response(&mut self, tag: Tag, line: &[u8], out: &mut Vec<u8>) -> Step {
        match sasl::decode_plain_response(line) {
            Ok(creds) => self.login(tag, creds.username, creds.password),
            Err(e) => self.sasl_failure(&tag, e, out),
        }
    }

    fn login_username(&mut self, tag: Tag, line: &[u8], out: &mut Vec<u8>) -> Step {
        match sasl::decode_response(line) {
            Ok(user) => {
                out.extend_from_slice(format!("+ {LOGIN_PASSWORD_PROMPT}\r\n").as_bytes());
                self.state = State::LoginPassword {
                    tag,
                    username: String::from_utf8_lossy(&user).into_owned(),
                };
                Step::Continue
            }
            Err(e) => self.sasl_failure(&tag, e, out),
        }
    }

    fn sasl_failure(&mut self, tag: &Tag, err: SaslError, out: &mut Vec<u8>) -> Step {
        self.state = State::Command;
        match err {
            SaslError::Cancelled => {
                reply(out, tag, "BAD AUTHENTICATE cancelled");
                Step::Continue
            }
            SaslError::BadBase64 => self.bad(Some(tag), "Invalid base64 in SASL response", out),
            SaslError::BadPlain => self.bad(Some(tag), "Malformed PLAIN response", out),
            SaslError::AuthzidMismatch => {
                reply(
                    out,
                    tag,
                    "NO [AUTHORIZATIONFAILED] Authorization identity must be empty or equal to the user name",
                );
                Step::Continue
            }
        }
    }

    /// A SASL response line for a pending AUTHENTICATE.
    fn sasl_step(&mut self, input: &mut BytesMut, out: &mut Vec<u8>) -> Step {
        let line = match self.reader.next_line(input) {
            Frame::Incomplete if !self.reader.is_discarding() => return Step::NeedInput,
            Frame::Incomplete | Frame::TooLong => {
                let tag = match std::mem::replace(&mut self.state, State::Command) {
                    State::PlainResponse { tag }
                    | State::LoginUsername { tag }
                    | State::LoginPassword { tag, .. } => Some(tag),
                    _ => None,
                };
                return self.too_long(tag.as_ref(), out);
            }
            Frame::Line(line) => line,
        };
        match std::mem::replace(&mut self.state, State::Command) {
            State::PlainResponse { tag } => self.plain_response(tag, &line, out),
            State::LoginUsername { tag } => self.login_username(tag, &line, out),
            State::LoginPassword { tag, username } => match sasl::decode_response(&line) {
                Ok(password) => self.login(tag, username, SecretBytes::new(password)),
                Err(e) => self.sasl_failure(&tag, e, out),
            },
            other => {
                self.state = other;
                Step::Continue
            }
        }
    }
}

impl ClientProtocol for ImapClient {
    fn greeting(&mut self, out: &mut Vec<u8>) {
        // c-client skips CAPABILITY when the greeting carries it; laminas only needs "* OK".
        out.extend_from_slice(
            format!(
                "* OK [CAPABILITY {}] authbridge IMAP4rev1 proxy ready\r\n",
                self.capabilities()
            )
            .as_bytes(),
        );
    }

    fn step(&mut self, input: &mut BytesMut, out: &mut Vec<u8>) -> Step {
        match &self.state {
            State::Command => {}
            State::CapabilityPending { tag } => {
                if self.upstream.is_none() {
                    return Step::NeedUpstream;
                }
                let tag = tag.clone();
                self.state = State::Command;
                self.capability_reply(&tag, out);
                return Step::Continue;
            }
            State::PlainResponse { .. }
            | State::LoginUsername { .. }
            | State::LoginPassword { .. } => return self.sasl_step(input, out),
            // The driver does not step while a login is checked; wait for `login_finished`.
            State::LoginPending { .. } => return Step::NeedInput,
            State::Done => return Step::Close,
        }
        loop {
            match self.reader.next(input) {
                ReadEvent::Incomplete if self.reader.is_discarding() => {
                    let tag = parse_tag(self.reader.partial());
                    return self.too_long(tag.as_ref(), out);
                }
                ReadEvent::Incomplete => return Step::NeedInput,
                ReadEvent::TooLong { tag } => return self.too_long(tag.as_ref(), out),
                ReadEvent::Literal {
                    announcement,
                    count,
                } => {
                    if let Some(step) = self.on_literal(announcement, count, out) {
                        return step;
                    }
                }
                ReadEvent::Command {
                    bytes,
                    longest_line,
                } => return self.command(&bytes, longest_line, out),
            }
        }
    }

    fn upstream_ready(&mut self, capabilities: Option<&[String]>) {
        // A pending CAPABILITY is answered on the next `step`.
        self.upstream = Some(capabilities.map(<[String]>::to_vec));
    }

    fn tls_started(&mut self) {
        // RFC 3501 §6.2.1: nothing from before TLS is kept (the upstream's capabilities are not
        // the client's state and stay).
        self.tls_active = true;
        self.reader.reset();
        self.state = State::Command;
    }

    fn login_finished(&mut self, outcome: LoginOutcome, out: &mut Vec<u8>) -> AfterLogin {
        let tag = match std::mem::replace(&mut self.state, State::Command) {
            State::LoginPending { tag } => Some(tag),
            _ => None,
        };
        let tagged = |out: &mut Vec<u8>, text: &str| match &tag {
            Some(tag) => reply(out, tag, text),
            None => out.extend_from_slice(format!("* {text}\r\n").as_bytes()),
        };
        match outcome {
            LoginOutcome::Success { untagged, text } => {
                out.extend_from_slice(&untagged);
                let text = one_line(&text);
                let text = if text.trim().is_empty() {
                    "LOGIN completed".to_string()
                } else {
                    text
                };
                tagged(out, &format!("OK {text}"));
                self.state = State::Done;
                AfterLogin::Pipe
            }
            LoginOutcome::BadCredentials => {
                tagged(out, "NO [AUTHENTICATIONFAILED] Authentication failed");
                self.login_failures = self.login_failures.saturating_add(1);
                if self.login_failures >= self.ctx.limits.session_login_failures_max {
                    out.extend_from_slice(b"* BYE Too many failed logins\r\n");
                    self.state = State::Done;
                    return AfterLogin::Close;
                }
                AfterLogin::Continue
            }
            LoginOutcome::Throttled => {
                out.extend_from_slice(b"* BYE Too many failed logins, try again later\r\n");
                self.state = State::Done;
                AfterLogin::Close
            }
            LoginOutcome::Unavailable(why) => {
                tagged(out, &format!("NO [UNAVAILABLE] {}", one_line(&why)));
                AfterLogin::Continue
            }
            LoginOutcome::Rejected(text) => {
                let text = one_line(strip_resp_code(&text));
                let text = if text.trim().is_empty() {
                    "Upstream refused the login".to_string()
                } else {
                    text
                };
                tagged(out, &format!("NO [AUTHENTICATIONFAILED] {text}"));
                AfterLogin::Continue
            }
        }
    }

    fn shutting_down(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"* BYE Server shutting down\r\n");
        self.state = State::Done;
    }

    fn timed_out(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"* BYE Autologout; idle for too long\r\n");
        self.state = State::Done;
    }
}

/// `<tag> <text>\r\n`.
fn reply(out: &mut Vec<u8>, tag: &Tag, text: &str) {
    out.extend_from_slice(tag.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}
