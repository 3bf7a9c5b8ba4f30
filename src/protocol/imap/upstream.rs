//! The IMAP client side toward Exchange: greeting, STARTTLS (RFC 3501 §6.2.1) when the upstream
//! port is plaintext, CAPABILITY, then `AUTHENTICATE XOAUTH2` (one line with SASL-IR, RFC 4959;
//! otherwise after a `+` continuation).
//!
//! Capabilities without a round trip: Exchange's greeting carries no `[CAPABILITY …]` code, so a
//! fresh session must ask, and waiting for that answer before `AUTHENTICATE` costs one round trip
//! at every login. The machine can instead be given the capabilities an earlier session of the
//! same listener verified ([`ImapUpstream::with_known_capabilities`]): it is then ready right
//! after the greeting, and at login it sends `CAPABILITY` and `AUTHENTICATE` together, in one
//! write. Why this rather than trusting the remembered set: every session still verifies the
//! capabilities in the same round trip as the login, so a changed upstream is noticed at once —
//! if it dropped `SASL-IR`, the refused one-line `AUTHENTICATE` is repeated in the continuation
//! form; if it dropped `AUTH=XOAUTH2`, the session fails as a fresh one would — and the verified
//! set ([`ImapUpstream::verified_capabilities`]) replaces the remembered one. Keying the memory
//! on the greeting text would not work with Exchange: its greeting names the backend server,
//! which changes from connection to connection.
//!
//! A `+ <challenge>` after the token is an error report (Google, Dovecot: base64 JSON): it is
//! answered with an empty line and the tagged result is read. Untagged lines that arrive during
//! the exchange are kept, byte for byte, for the client. Bytes after the tagged OK stay in the
//! input: they belong to the pipe.

use bytes::BytesMut;

use super::response::{
    Greeting, Response, ResponseEvent, ResponseReader, Status, capability_code, has_capability,
    is_bye, parse_greeting, parse_response, untagged_capability, untagged_text,
};
use crate::protocol::one_line;
use crate::protocol::sasl;
use crate::protocol::{UpStep, UpstreamProtocol};
use crate::secret::SecretString;

/// Upstream lines during setup and login (a CAPABILITY line, an error text, a token challenge).
const UPSTREAM_LINE_MAX: usize = 64 * 1024;
/// Largest literal accepted in an untagged response before login.
const UPSTREAM_LITERAL_MAX: usize = 64 * 1024;
/// Largest single response, and the most untagged bytes kept for the client during login.
const UPSTREAM_RESPONSE_MAX: usize = 256 * 1024;
/// Error challenges answered before giving up.
const CHALLENGES_MAX: u32 = 2;

#[derive(Debug)]
enum State {
    Greeting,
    /// CAPABILITY before STARTTLS: the greeting did not say whether STARTTLS is offered.
    CapabilityBeforeTls,
    StartTls,
    /// Waiting for the driver's TLS handshake.
    Handshake,
    Capability,
    /// Ready on remembered capabilities, not yet reported to the driver (`CAPABILITY` is sent
    /// with the login).
    Assumed,
    Ready,
    /// `AUTHENTICATE XOAUTH2` without initial response: the token waits for the `+`.
    AuthContinue {
        blob: SecretString,
    },
    /// The token is sent; waiting for the tagged result.
    AuthResult {
        challenges: u32,
    },
    /// Authenticated: the pipe owns the connection.
    Done,
    Failed(String),
}

/// IMAP upstream machine.
pub struct ImapUpstream {
    starttls: bool,
    reader: ResponseReader,
    state: State,
    next_tag: u32,
    tag: String,
    caps: Vec<String>,
    untagged: Vec<u8>,
    /// Capabilities an earlier session verified (post-TLS), if any.
    known: Option<Vec<String>>,
    /// `CAPABILITY` is to be sent together with `AUTHENTICATE` (the set in `caps` is assumed).
    ask_with_login: bool,
    /// The tag of a `CAPABILITY` sent with the login whose answer has not come yet.
    caps_tag: Option<String>,
    /// Capabilities the upstream announced in this session after TLS.
    verified: Option<Vec<String>>,
    /// The token of a one-line `AUTHENTICATE` sent on assumed capabilities, kept to repeat it in
    /// the continuation form if the upstream turns out not to take SASL-IR any more.
    retry_blob: Option<SecretString>,
    /// The running `AUTHENTICATE` was sent on remembered capabilities.
    assumed_login: bool,
}

impl ImapUpstream {
    /// `starttls`: the upstream port starts in plaintext and must be upgraded (port 143).
    pub fn new(starttls: bool) -> Self {
        ImapUpstream {
            starttls,
            reader: ResponseReader::new(
                UPSTREAM_LINE_MAX,
                UPSTREAM_LITERAL_MAX,
                UPSTREAM_RESPONSE_MAX,
            ),
            state: State::Greeting,
            next_tag: 0,
            tag: String::new(),
            caps: Vec::new(),
            untagged: Vec::new(),
            known: None,
            ask_with_login: false,
            caps_tag: None,
            verified: None,
            retry_blob: None,
            assumed_login: false,
        }
    }

    /// Start from the capabilities an earlier session verified (see the module docs). A set
    /// without `AUTH=XOAUTH2` is not used: such an upstream is asked, and fails, as before.
    pub fn with_known_capabilities(mut self, known: Option<Vec<String>>) -> Self {
        self.known = known.filter(|caps| has_capability(caps, "AUTH=XOAUTH2"));
        self
    }

    /// After TLS (or on an implicit-TLS port) without a capability code: remembered
    /// capabilities make the machine ready at once; else ask and wait.
    fn ask_capabilities(&mut self, before_tls: bool, out: &mut Vec<u8>) -> Option<UpStep> {
        if !before_tls && let Some(known) = self.known.clone() {
            self.caps = known;
            self.ask_with_login = true;
            self.state = State::Ready;
            return Some(UpStep::Ready {
                capabilities: self.caps.clone(),
            });
        }
        self.send("CAPABILITY", out);
        self.state = if before_tls {
            State::CapabilityBeforeTls
        } else {
            State::Capability
        };
        None
    }

    /// A response while the `CAPABILITY` sent with the login is unanswered: `Some` when it
    /// belongs to that command.
    fn on_login_capability(&mut self, response: &Response<'_>) -> Option<Option<UpStep>> {
        let tag = self.caps_tag.as_deref()?;
        match response {
            Response::Untagged(rest) => {
                if let Some(caps) = untagged_capability(rest) {
                    self.verified = Some(caps);
                    return Some(None);
                }
                None
            }
            Response::Tagged {
                tag: t,
                status,
                text,
            } if *t == tag.as_bytes() => {
                if matches!(status, Status::Ok)
                    && let Some(caps) = capability_code(text)
                {
                    self.verified = Some(caps);
                }
                self.caps_tag = None;
                if let Some(caps) = &self.verified {
                    self.caps = caps.clone();
                }
                Some(None)
            }
            _ => None,
        }
    }

    /// Send `A<n> <command>` and remember the tag.
    fn send(&mut self, command: &str, out: &mut Vec<u8>) {
        self.tag = format!("A{}", self.next_tag);
        self.next_tag = self.next_tag.saturating_add(1);
        out.extend_from_slice(format!("{} {command}\r\n", self.tag).as_bytes());
    }

    fn fail(&mut self, why: String) -> UpStep {
        tracing::debug!(reason = %why, "imap upstream setup failed");
        self.state = State::Failed(why.clone());
        UpStep::Failed(why)
    }

    /// Capabilities are known (greeting or CAPABILITY): STARTTLS next, or ready.
    fn with_capabilities(&mut self, before_tls: bool, out: &mut Vec<u8>) -> Option<UpStep> {
        if before_tls {
            if !has_capability(&self.caps, "STARTTLS") {
                return Some(self.fail("upstream does not offer STARTTLS".into()));
            }
            self.send("STARTTLS", out);
            self.state = State::StartTls;
            return None;
        }
        self.verified = Some(self.caps.clone());
        if !has_capability(&self.caps, "AUTH=XOAUTH2") {
            return Some(self.fail("upstream does not offer AUTH=XOAUTH2".into()));
        }
        self.state = State::Ready;
        Some(UpStep::Ready {
            capabilities: self.caps.clone(),
        })
    }

    fn on_greeting(&mut self, response: Response<'_>, out: &mut Vec<u8>) -> Option<UpStep> {
        let Response::Untagged(rest) = response else {
            return Some(self.fail("unexpected upstream greeting".into()));
        };
        match parse_greeting(rest) {
            Some(Greeting::Ok(text)) => match capability_code(text) {
                Some(caps) => {
                    self.caps = caps;
                    self.with_capabilities(self.starttls, out)
                }
                None => self.ask_capabilities(self.starttls, out),
            },
            Some(Greeting::PreAuth) => {
                Some(self.fail("upstream greeted with PREAUTH; a login was expected".into()))
            }
            Some(Greeting::Bye(text)) => Some(self.fail(format!(
                "upstream refused the connection: {}",
                text_of(text)
            ))),
            None => Some(self.fail("unexpected upstream greeting".into())),
        }
    }

    fn on_capability(
        &mut self,
        before_tls: bool,
        response: Response<'_>,
        out: &mut Vec<u8>,
    ) -> Option<UpStep> {
        match response {
            Response::Untagged(rest) => {
                if let Some(caps) = untagged_capability(rest) {
                    self.caps = caps;
                } else if is_bye(rest) {
                    return Some(self.closed(rest));
                }
                None
            }
            Response::Tagged { tag, status, text } if tag == self.tag.as_bytes() => match status {
                Status::Ok => {
                    if let Some(caps) = capability_code(text) {
                        self.caps = caps;
                    }
                    self.with_capabilities(before_tls, out)
                }
                Status::No | Status::Bad => {
                    Some(self.fail(format!("upstream refused CAPABILITY: {}", text_of(text))))
                }
            },
            _ => Some(self.fail("unexpected upstream response to CAPABILITY".into())),
        }
    }

    fn on_starttls(&mut self, response: Response<'_>) -> Option<UpStep> {
        match response {
            Response::Untagged(rest) => is_bye(rest).then(|| self.closed(rest)),
            Response::Tagged { tag, status, text } if tag == self.tag.as_bytes() => match status {
                Status::Ok => {
                    self.state = State::Handshake;
                    Some(UpStep::StartTls)
                }
                Status::No | Status::Bad => {
                    Some(self.fail(format!("upstream refused STARTTLS: {}", text_of(text))))
                }
            },
            _ => Some(self.fail("unexpected upstream response to STARTTLS".into())),
        }
    }

    fn on_auth(&mut self, response: Response<'_>, raw: &[u8], out: &mut Vec<u8>) -> Option<UpStep> {
        match response {
            Response::Continuation(challenge) => {
                match std::mem::replace(&mut self.state, State::AuthResult { challenges: 0 }) {
                    State::AuthContinue { blob } => {
                        out.extend_from_slice(blob.expose().as_bytes());
                        out.extend_from_slice(b"\r\n");
                        None
                    }
                    State::AuthResult { challenges } => {
                        let challenges = challenges.saturating_add(1);
                        if challenges > CHALLENGES_MAX {
                            return Some(
                                self.fail("upstream keeps sending SASL challenges".into()),
                            );
                        }
                        tracing::debug!(
                            challenge = %one_line(&sasl::decode_error_challenge(challenge)),
                            "imap upstream sent an error challenge"
                        );
                        // RFC 3501 §6.2.2: an empty response to an error challenge; cancel a
                        // second one.
                        out.extend_from_slice(if challenges == 1 { b"\r\n" } else { b"*\r\n" });
                        self.state = State::AuthResult { challenges };
                        None
                    }
                    other => {
                        self.state = other;
                        None
                    }
                }
            }
            Response::Untagged(rest) => {
                if is_bye(rest) {
                    return Some(self.closed(rest));
                }
                if self.untagged.len().saturating_add(raw.len()) > UPSTREAM_RESPONSE_MAX {
                    return Some(self.fail("upstream sent too many untagged responses".into()));
                }
                self.untagged.extend_from_slice(raw);
                None
            }
            Response::Tagged { tag, status, text } if tag == self.tag.as_bytes() => {
                let text = text_of(text);
                match status {
                    Status::Ok => {
                        self.state = State::Done;
                        self.retry_blob = None;
                        self.assumed_login = false;
                        Some(UpStep::AuthOk {
                            untagged: std::mem::take(&mut self.untagged),
                            text,
                        })
                    }
                    Status::No | Status::Bad => {
                        // Sent on remembered capabilities that the upstream no longer has:
                        // not a refusal of the token.
                        let retry_blob = self.retry_blob.take();
                        if std::mem::take(&mut self.assumed_login)
                            && let Some(verified) = self.verified.clone()
                        {
                            if !has_capability(&verified, "AUTH=XOAUTH2") {
                                return Some(
                                    self.fail("upstream does not offer AUTH=XOAUTH2".into()),
                                );
                            }
                            if let Some(blob) = retry_blob
                                && !has_capability(&verified, "SASL-IR")
                            {
                                tracing::debug!(
                                    "imap upstream no longer offers SASL-IR; repeating AUTHENTICATE with a continuation"
                                );
                                self.untagged.clear();
                                self.send("AUTHENTICATE XOAUTH2", out);
                                self.state = State::AuthContinue { blob };
                                return None;
                            }
                        }
                        // Ready for another attempt (the driver retries once with a fresh token).
                        self.state = State::Ready;
                        self.untagged.clear();
                        Some(UpStep::AuthRejected { text })
                    }
                }
            }
            Response::Tagged { .. } => {
                Some(self.fail("unexpected tagged response during AUTHENTICATE".into()))
            }
        }
    }

    fn closed(&mut self, untagged: &[u8]) -> UpStep {
        self.fail(format!(
            "upstream closed the connection: {}",
            text_of(untagged_text(untagged))
        ))
    }
}

impl UpstreamProtocol for ImapUpstream {
    fn step(&mut self, input: &mut BytesMut, out: &mut Vec<u8>) -> UpStep {
        loop {
            match &self.state {
                State::Handshake | State::Done => return UpStep::NeedInput,
                State::Failed(why) => return UpStep::Failed(why.clone()),
                State::Assumed => {
                    self.state = State::Ready;
                    return UpStep::Ready {
                        capabilities: self.caps.clone(),
                    };
                }
                _ => {}
            }
            let (first_line, raw) = match self.reader.next(input) {
                ResponseEvent::Incomplete => return UpStep::NeedInput,
                ResponseEvent::TooLong => {
                    return self.fail("upstream sent an overlong line".into());
                }
                ResponseEvent::TooBig => {
                    return self.fail("upstream sent an oversized response".into());
                }
                ResponseEvent::Response { first_line, raw } => (first_line, raw),
            };
            let Some(response) = parse_response(&first_line) else {
                return self.fail(format!(
                    "upstream sent something that is not IMAP: {}",
                    text_of(first_line.get(..80).unwrap_or(&first_line))
                ));
            };
            if let Some(step) = self.on_login_capability(&response) {
                if let Some(step) = step {
                    return step;
                }
                continue;
            }
            if matches!(&response, Response::Untagged(rest) if is_bye(rest))
                && self.caps_tag.is_some()
            {
                return self.closed(match &response {
                    Response::Untagged(rest) => rest,
                    _ => b"",
                });
            }
            let step = match self.state {
                State::Greeting => self.on_greeting(response, out),
                State::CapabilityBeforeTls => self.on_capability(true, response, out),
                State::Capability => self.on_capability(false, response, out),
                State::StartTls => self.on_starttls(response),
                State::Ready => match response {
                    Response::Untagged(rest) if is_bye(rest) => Some(self.closed(rest)),
                    // Unsolicited status lines before a login are not the client's business.
                    Response::Untagged(_) => None,
                    _ => Some(self.fail("unexpected upstream response before login".into())),
                },
                State::AuthContinue { .. } | State::AuthResult { .. } => {
                    self.on_auth(response, &raw, out)
                }
                State::Handshake | State::Done | State::Failed(_) | State::Assumed => None,
            };
            if let Some(step) = step {
                return step;
            }
        }
    }

    fn tls_started(&mut self, out: &mut Vec<u8>) {
        if !matches!(self.state, State::Handshake) {
            self.state = State::Failed("TLS started out of order".into());
            return;
        }
        // RFC 3501 §6.2.1: capabilities from before TLS are discarded.
        self.caps.clear();
        self.reader.reset();
        if self.known.is_some() {
            // Reported by the next `step`.
            self.caps = self.known.clone().unwrap_or_default();
            self.ask_with_login = true;
            self.state = State::Assumed;
            return;
        }
        self.send("CAPABILITY", out);
        self.state = State::Capability;
    }

    fn verified_capabilities(&self) -> Option<Vec<String>> {
        self.verified.clone()
    }

    fn authenticate(&mut self, mailbox: &str, token: &SecretString, out: &mut Vec<u8>) {
        if !matches!(self.state, State::Ready) {
            if !matches!(self.state, State::Failed(_)) {
                self.state =
                    State::Failed("authenticate called before the upstream was ready".into());
            }
            return;
        }
        let blob = sasl::xoauth2(mailbox, token);
        self.untagged.clear();
        let assumed = std::mem::take(&mut self.ask_with_login);
        self.assumed_login = assumed;
        if assumed {
            // Verified in the same round trip as the login (module docs).
            self.send("CAPABILITY", out);
            self.caps_tag = Some(self.tag.clone());
        }
        if has_capability(&self.caps, "SASL-IR") {
            let line = SecretString::new(format!("AUTHENTICATE XOAUTH2 {}", blob.expose()));
            self.send(line.expose(), out);
            self.state = State::AuthResult { challenges: 0 };
            if assumed {
                self.retry_blob = Some(blob);
            }
        } else {
            self.send("AUTHENTICATE XOAUTH2", out);
            self.state = State::AuthContinue { blob };
        }
    }
}

/// Upstream text for logs and client replies: lossy UTF-8 on one line.
fn text_of(bytes: &[u8]) -> String {
    one_line(&String::from_utf8_lossy(bytes))
}
