//! The POP3 client side toward Exchange: greeting, `STLS` (RFC 2595) when the upstream port is
//! plaintext, `CAPA` (RFC 2449), then `AUTH XOAUTH2`, `+`, token (RFC 5034 in two steps, as
//! Exchange documents it). A `+ <challenge>` after the token is an error report: it is answered
//! with an empty line and the final `-ERR` is read.

use bytes::BytesMut;

use crate::protocol::line::{Frame, LineFramer};
use crate::protocol::one_line;
use crate::protocol::sasl;
use crate::protocol::{UpStep, UpstreamProtocol};
use crate::secret::SecretString;

/// Upstream lines during setup and login (error texts, challenges).
const UPSTREAM_LINE_MAX: usize = 64 * 1024;
/// CAPA lines kept.
const CAPA_LINES_MAX: usize = 200;
/// Error challenges answered before giving up.
const CHALLENGES_MAX: u32 = 2;

#[derive(Debug)]
enum State {
    Greeting,
    Stls,
    /// Waiting for the driver's TLS handshake.
    Handshake,
    /// `CAPA` sent; waiting for `+OK` / `-ERR`.
    CapaStatus,
    /// Reading the CAPA lines up to `.`.
    CapaLines,
    Ready,
    /// `AUTH XOAUTH2` sent; the token waits for the `+`.
    AuthStart {
        blob: SecretString,
    },
    /// The token is sent; waiting for `+OK` / `-ERR`.
    AuthResult {
        challenges: u32,
    },
    Done,
    Failed(String),
}

/// A POP3 status line (RFC 1939 §3) or a SASL continuation (RFC 5034 §4).
enum Line<'a> {
    Ok(&'a [u8]),
    Err(&'a [u8]),
    Continuation(&'a [u8]),
    Other,
}

fn classify(line: &[u8]) -> Line<'_> {
    let after = |prefix: &[u8]| -> Option<&[u8]> {
        let head = line.get(..prefix.len())?;
        if !head.eq_ignore_ascii_case(prefix) {
            return None;
        }
        let rest = line.get(prefix.len()..).unwrap_or_default();
        match rest.first() {
            None => Some(rest),
            Some(b' ') => Some(rest.get(1..).unwrap_or_default()),
            Some(_) => None,
        }
    };
    if let Some(text) = after(b"+OK") {
        Line::Ok(text)
    } else if let Some(text) = after(b"-ERR") {
        Line::Err(text)
    } else if let Some(text) = after(b"+") {
        Line::Continuation(text)
    } else {
        Line::Other
    }
}

/// POP3 upstream machine.
pub struct Pop3Upstream {
    starttls: bool,
    framer: LineFramer,
    state: State,
    capa: Vec<String>,
}

impl Pop3Upstream {
    /// `starttls`: the upstream port starts in plaintext and must be upgraded (port 110).
    pub fn new(starttls: bool) -> Self {
        Pop3Upstream {
            starttls,
            framer: LineFramer::new(UPSTREAM_LINE_MAX),
            state: State::Greeting,
            capa: Vec::new(),
        }
    }

    fn fail(&mut self, why: String) -> UpStep {
        tracing::debug!(reason = %why, "pop3 upstream setup failed");
        self.state = State::Failed(why.clone());
        UpStep::Failed(why)
    }

    fn capa(&mut self, out: &mut Vec<u8>) {
        self.capa.clear();
        out.extend_from_slice(b"CAPA\r\n");
        self.state = State::CapaStatus;
    }

    fn on_line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Option<UpStep> {
        if let State::CapaLines = self.state {
            return self.on_capa_line(line);
        }
        let class = classify(line);
        match (&self.state, class) {
            (State::Greeting, Line::Ok(_)) => {
                if self.starttls {
                    out.extend_from_slice(b"STLS\r\n");
                    self.state = State::Stls;
                } else {
                    self.capa(out);
                }
                None
            }
            (State::Greeting, Line::Err(text)) => Some(self.fail(format!(
                "upstream refused the connection: {}",
                text_of(text)
            ))),
            (State::Stls, Line::Ok(_)) => {
                self.state = State::Handshake;
                Some(UpStep::StartTls)
            }
            (State::Stls, Line::Err(text)) => {
                Some(self.fail(format!("upstream refused STLS: {}", text_of(text))))
            }
            (State::CapaStatus, Line::Ok(_)) => {
                self.state = State::CapaLines;
                None
            }
            (State::CapaStatus, Line::Err(_)) => {
                // No CAPA (RFC 2449 is optional): try XOAUTH2 anyway.
                self.state = State::Ready;
                Some(UpStep::Ready {
                    capabilities: Vec::new(),
                })
            }
            (State::AuthStart { .. }, Line::Continuation(_)) => {
                if let State::AuthStart { blob } =
                    std::mem::replace(&mut self.state, State::AuthResult { challenges: 0 })
                {
                    out.extend_from_slice(blob.expose().as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                None
            }
            (State::AuthResult { challenges }, Line::Continuation(challenge)) => {
                let challenges = challenges.saturating_add(1);
                if challenges > CHALLENGES_MAX {
                    return Some(self.fail("upstream keeps sending SASL challenges".into()));
                }
                tracing::debug!(
                    challenge = %one_line(&sasl::decode_error_challenge(challenge)),
                    "pop3 upstream sent an error challenge"
                );
                // RFC 5034 §4: an empty response to an error challenge; cancel a second one.
                out.extend_from_slice(if challenges == 1 { b"\r\n" } else { b"*\r\n" });
                self.state = State::AuthResult { challenges };
                None
            }
            (State::AuthResult { .. }, Line::Ok(text)) => {
                self.state = State::Done;
                Some(UpStep::AuthOk {
                    untagged: Vec::new(),
                    text: text_of(text),
                })
            }
            (State::AuthStart { .. } | State::AuthResult { .. }, Line::Err(text)) => {
                // Ready for another attempt (the driver retries once with a fresh token).
                self.state = State::Ready;
                Some(UpStep::AuthRejected {
                    text: text_of(text),
                })
            }
            (state, _) => {
                let what = match state {
                    State::Greeting => "greeting",
                    State::Stls => "reply to STLS",
                    State::CapaStatus => "reply to CAPA",
                    State::AuthStart { .. } | State::AuthResult { .. } => "reply to AUTH",
                    _ => "line before login",
                };
                Some(self.fail(format!(
                    "unexpected upstream {what}: {}",
                    text_of(line.get(..80).unwrap_or(line))
                )))
            }
        }
    }

    /// One line of a CAPA listing (RFC 2449 §5: dot-stuffed, ends with `.`).
    fn on_capa_line(&mut self, line: &[u8]) -> Option<UpStep> {
        if line == b"." {
            let xoauth2 = self.capa.iter().any(|l| {
                let mut words = l.split(' ');
                words.next().is_some_and(|k| k.eq_ignore_ascii_case("SASL"))
                    && words.any(|m| m.eq_ignore_ascii_case("XOAUTH2"))
            });
            if !xoauth2 {
                return Some(self.fail("upstream does not offer SASL XOAUTH2".into()));
            }
            self.state = State::Ready;
            return Some(UpStep::Ready {
                capabilities: self.capa.clone(),
            });
        }
        let line = line.strip_prefix(b".").unwrap_or(line);
        if self.capa.len() >= CAPA_LINES_MAX {
            return Some(self.fail("upstream CAPA list is too long".into()));
        }
        self.capa.push(String::from_utf8_lossy(line).into_owned());
        None
    }
}

impl UpstreamProtocol for Pop3Upstream {
    fn step(&mut self, input: &mut BytesMut, out: &mut Vec<u8>) -> UpStep {
        loop {
            match &self.state {
                State::Handshake | State::Done => return UpStep::NeedInput,
                State::Failed(why) => return UpStep::Failed(why.clone()),
                _ => {}
            }
            let line = match self.framer.next(input) {
                Frame::Incomplete => return UpStep::NeedInput,
                Frame::TooLong => return self.fail("upstream sent an overlong line".into()),
                Frame::Line(line) => line,
            };
            if let Some(step) = self.on_line(&line, out) {
                return step;
            }
        }
    }

    fn tls_started(&mut self, out: &mut Vec<u8>) {
        if !matches!(self.state, State::Handshake) {
            self.state = State::Failed("TLS started out of order".into());
            return;
        }
        self.framer.reset();
        self.capa(out);
    }

    fn authenticate(&mut self, mailbox: &str, token: &SecretString, out: &mut Vec<u8>) {
        if !matches!(self.state, State::Ready) {
            if !matches!(self.state, State::Failed(_)) {
                self.state =
                    State::Failed("authenticate called before the upstream was ready".into());
            }
            return;
        }
        out.extend_from_slice(b"AUTH XOAUTH2\r\n");
        self.state = State::AuthStart {
            blob: sasl::xoauth2(mailbox, token),
        };
    }
}

/// Upstream text for logs and client replies: lossy UTF-8 on one line.
fn text_of(bytes: &[u8]) -> String {
    one_line(&String::from_utf8_lossy(bytes))
}
