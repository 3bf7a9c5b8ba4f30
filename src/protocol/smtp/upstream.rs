//! The SMTP client side toward Exchange: greeting, EHLO, STARTTLS (RFC 3207), EHLO again, then
//! `AUTH XOAUTH2 <b64>` (RFC 4954 with an initial response). A `334` challenge after the token
//! is an error report: it is answered with an empty line and the final reply is read.

use bytes::BytesMut;

use super::reply::{Reply, ReplyParser, ReplyStep};
use crate::protocol::sasl;
use crate::protocol::{UpStep, UpstreamProtocol};
use crate::secret::SecretString;

/// Upstream lines may carry long error texts; EHLO replies have a few dozen lines.
const UPSTREAM_LINE_MAX: usize = 16 * 1024;
const UPSTREAM_REPLY_LINES_MAX: usize = 100;

#[derive(Debug, PartialEq, Eq)]
enum State {
    Greeting,
    Ehlo,
    StartTls,
    /// Waiting for the driver to finish the TLS handshake.
    Handshake,
    EhloAfterTls,
    Ready,
    Auth,
    /// The upstream sent a 334 error challenge; we answered with an empty line.
    AuthChallenged,
    Done,
}

/// SMTP upstream machine.
pub struct SmtpUpstream {
    starttls: bool,
    ehlo_name: String,
    parser: ReplyParser,
    state: State,
    challenge: Option<String>,
    /// Relay mode: no AUTH is sent, so XOAUTH2 is not required.
    relay: bool,
}

impl SmtpUpstream {
    /// `starttls`: the upstream port starts in plaintext and must be upgraded (port 587).
    pub fn new(starttls: bool, ehlo_name: &str) -> Self {
        SmtpUpstream {
            starttls,
            ehlo_name: ehlo_name.to_string(),
            parser: ReplyParser::new(UPSTREAM_LINE_MAX, UPSTREAM_REPLY_LINES_MAX),
            state: State::Greeting,
            challenge: None,
            relay: false,
        }
    }

    /// Relay mode (a connector on port 25): the same setup, without requiring AUTH XOAUTH2.
    pub fn for_relay(mut self) -> Self {
        self.relay = true;
        self
    }

    fn ehlo(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("EHLO {}\r\n", self.ehlo_name).as_bytes());
    }

    fn on_reply(&mut self, reply: Reply, out: &mut Vec<u8>) -> UpStep {
        match self.state {
            State::Greeting => {
                if reply.code != 220 {
                    return self.fail(format!(
                        "upstream greeting was {} {}",
                        reply.code,
                        reply.text()
                    ));
                }
                self.ehlo(out);
                self.state = State::Ehlo;
                UpStep::Continue
            }
            State::Ehlo | State::EhloAfterTls => {
                if reply.code != 250 {
                    return self.fail(format!(
                        "upstream refused EHLO: {} {}",
                        reply.code,
                        reply.text()
                    ));
                }
                let caps: Vec<String> = reply.lines.into_iter().skip(1).collect();
                if self.state == State::Ehlo && self.starttls {
                    if !caps.iter().any(|c| c.eq_ignore_ascii_case("STARTTLS")) {
                        return self.fail(if self.relay {
                            "upstream connector does not offer STARTTLS; refusing to relay mail in plaintext".into()
                        } else {
                            "upstream does not offer STARTTLS; refusing to send credentials in plaintext".into()
                        });
                    }
                    out.extend_from_slice(b"STARTTLS\r\n");
                    self.state = State::StartTls;
                    return UpStep::Continue;
                }
                let xoauth2 = caps.iter().any(|c| {
                    let mut words = c.split(' ');
                    words.next().is_some_and(|w| w.eq_ignore_ascii_case("AUTH"))
                        && words.any(|m| m.eq_ignore_ascii_case("XOAUTH2"))
                });
                if !xoauth2 && !self.relay {
                    return self.fail("upstream does not offer AUTH XOAUTH2".into());
                }
                self.state = State::Ready;
                UpStep::Ready { capabilities: caps }
            }
            State::StartTls => {
                if reply.code != 220 {
                    return self.fail(format!(
                        "upstream refused STARTTLS: {} {}",
                        reply.code,
                        reply.text()
                    ));
                }
                self.state = State::Handshake;
                UpStep::StartTls
            }
            State::Auth | State::AuthChallenged => match reply.code {
                235 => {
                    self.state = State::Done;
                    UpStep::AuthOk {
                        untagged: Vec::new(),
                        text: reply.text(),
                    }
                }
                334 if self.state == State::Auth => {
                    self.challenge = Some(sasl::decode_error_challenge(reply.text().as_bytes()));
                    out.extend_from_slice(b"\r\n");
                    self.state = State::AuthChallenged;
                    UpStep::Continue
                }
                400..=499 => self.fail(format!(
                    "upstream AUTH failed temporarily: {} {}",
                    reply.code,
                    reply.text()
                )),
                _ => {
                    self.state = State::Done;
                    let mut text = reply.text();
                    if let Some(ch) = self.challenge.take() {
                        text = format!("{text} ({ch})");
                    }
                    UpStep::AuthRejected { text }
                }
            },
            State::Handshake | State::Ready | State::Done => self.fail(format!(
                "unexpected upstream reply {} {}",
                reply.code,
                reply.text()
            )),
        }
    }

    fn fail(&mut self, why: String) -> UpStep {
        self.state = State::Done;
        UpStep::Failed(why)
    }
}

impl UpstreamProtocol for SmtpUpstream {
    fn step(&mut self, input: &mut BytesMut, out: &mut Vec<u8>) -> UpStep {
        if matches!(self.state, State::Handshake | State::Ready | State::Done) {
            // Nothing is expected now; leave input to the pipe phase.
            return UpStep::NeedInput;
        }
        match self.parser.next(input) {
            ReplyStep::Incomplete => UpStep::NeedInput,
            ReplyStep::Invalid(why) => self.fail(format!("upstream sent an invalid reply: {why}")),
            ReplyStep::Reply(reply) => self.on_reply(reply, out),
        }
    }

    fn tls_started(&mut self, out: &mut Vec<u8>) {
        self.parser.reset();
        self.ehlo(out);
        self.state = State::EhloAfterTls;
    }

    fn authenticate(&mut self, mailbox: &str, token: &SecretString, out: &mut Vec<u8>) {
        let blob = sasl::xoauth2(mailbox, token);
        out.extend_from_slice(b"AUTH XOAUTH2 ");
        out.extend_from_slice(blob.expose().as_bytes());
        out.extend_from_slice(b"\r\n");
        self.state = State::Auth;
    }
}
