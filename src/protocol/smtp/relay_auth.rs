//! Relay mode's login to a transactional provider (Amazon SES, Postmark, …), sans I/O: after
//! the provider's EHLO reply on the TLS connection, `AUTH PLAIN` (RFC 4954 with an initial
//! response, RFC 4616 `\0username\0password`) or `AUTH LOGIN` (username and password each after
//! a `334` prompt), with the credentials of the listener's `upstream.auth`.
//!
//! The mechanism must be one the provider advertises (`250-AUTH PLAIN LOGIN`, or the older
//! `AUTH=PLAIN LOGIN` form); `235` means logged in. Every other final reply is sorted for the
//! caller: a `4xx` is the provider's temporary trouble, a `5xx` (`535 5.7.8`, …) a refusal of
//! the configured credentials. Neither is the client's fault, so the relay answers its client
//! with a temporary `4xx` in both cases and logs the credentials as the cause: the client keeps
//! the message and retries, instead of bouncing it over our configuration.
//!
//! Invariants: the user name and password (both secrets: Postmark's user name is the server's
//! API token) only ever go into the caller's output buffer (which the driver
//! zeroes) and into buffers here that are zeroed on drop; replies are read under the same line
//! and line-count caps as the rest of the connector dialogue; an unexpected reply ends the
//! exchange ([`RelayAuthStep::Failed`]) instead of guessing.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::BytesMut;
use zeroize::Zeroizing;

use super::reply::{Reply, ReplyParser, ReplyStep};
use crate::secret::SecretString;

/// Provider reply lines may carry long texts; a reply has at most this many lines.
const LINE_MAX: usize = 16 * 1024;
const REPLY_LINES_MAX: usize = 100;

/// `upstream.auth.mechanism`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
}

impl Mechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
        }
    }
}

/// What the caller does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayAuthStep {
    /// Write the output (if any), read provider bytes, step again.
    NeedInput,
    /// `235`: logged in; the relay dialogue may start.
    Authenticated,
    /// A `5xx` final reply: the provider refused the configured credentials (its text).
    Refused(String),
    /// A `4xx` final reply: the provider's temporary trouble (its text).
    Temporary(String),
    /// The exchange broke off (an invalid or unexpected reply).
    Failed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `AUTH PLAIN <b64>` sent.
    Plain,
    /// `AUTH LOGIN` sent: the username prompt is awaited.
    LoginUser,
    /// The username was sent: the password prompt is awaited.
    LoginPassword,
    /// The password was sent: the final reply is awaited.
    LoginFinal,
    Done,
}

/// One AUTH exchange with the provider.
pub struct RelayAuth {
    mechanism: Mechanism,
    /// A secret too: Postmark's SMTP user name is the server's API token.
    username: SecretString,
    password: SecretString,
    parser: ReplyParser,
    state: State,
}

/// The mechanisms an EHLO reply advertises (`AUTH PLAIN LOGIN` or `AUTH=PLAIN LOGIN`),
/// upper-cased.
pub fn advertised(capabilities: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for cap in capabilities {
        let upper = cap.to_ascii_uppercase();
        let rest = if let Some(r) = upper.strip_prefix("AUTH ") {
            r
        } else if let Some(r) = upper.strip_prefix("AUTH=") {
            r
        } else {
            continue;
        };
        for m in rest.split_ascii_whitespace() {
            if !out.iter().any(|o: &String| o == m) {
                out.push(m.to_owned());
            }
        }
    }
    out
}

impl RelayAuth {
    /// Start the exchange after the provider's (post-TLS) EHLO reply `capabilities`: pick
    /// `wanted` (or PLAIN, else LOGIN, when `None`) if advertised, and write the first line
    /// into `out`. `Err` says what the provider offers instead.
    pub fn start(
        capabilities: &[String],
        username: &SecretString,
        password: &SecretString,
        wanted: Option<Mechanism>,
        out: &mut Vec<u8>,
    ) -> Result<RelayAuth, String> {
        let offered = advertised(capabilities);
        let has = |m: Mechanism| offered.iter().any(|o| o == m.as_str());
        let mechanism = match wanted {
            Some(m) if has(m) => m,
            None if has(Mechanism::Plain) => Mechanism::Plain,
            None if has(Mechanism::Login) => Mechanism::Login,
            _ => {
                let asked = wanted.map_or("PLAIN or LOGIN", Mechanism::as_str);
                return Err(if offered.is_empty() {
                    format!(
                        "the relay upstream does not offer AUTH at all (wanted {asked}); check \
                         the host and port of a provider's SMTP endpoint, or remove upstream.auth"
                    )
                } else {
                    format!(
                        "the relay upstream does not offer AUTH {asked} (it offers {}); set \
                         upstream.auth.mechanism to one of those",
                        offered.join(" ")
                    )
                });
            }
        };
        let mut auth = RelayAuth {
            mechanism,
            username: username.clone(),
            password: password.clone(),
            parser: ReplyParser::new(LINE_MAX, REPLY_LINES_MAX),
            state: State::Done,
        };
        match mechanism {
            Mechanism::Plain => {
                let mut raw = Zeroizing::new(Vec::with_capacity(
                    2 + auth.username.expose().len() + auth.password.expose().len(),
                ));
                raw.push(0);
                raw.extend_from_slice(auth.username.expose().as_bytes());
                raw.push(0);
                raw.extend_from_slice(auth.password.expose().as_bytes());
                let b64 = Zeroizing::new(STANDARD.encode(&*raw));
                out.extend_from_slice(b"AUTH PLAIN ");
                out.extend_from_slice(b64.as_bytes());
                out.extend_from_slice(b"\r\n");
                auth.state = State::Plain;
            }
            Mechanism::Login => {
                out.extend_from_slice(b"AUTH LOGIN\r\n");
                auth.state = State::LoginUser;
            }
        }
        Ok(auth)
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Handle the provider's next reply in `input` (consumed), writing any answer into `out`.
    pub fn step(&mut self, input: &mut BytesMut, out: &mut Vec<u8>) -> RelayAuthStep {
        if self.state == State::Done {
            return RelayAuthStep::Failed("the AUTH exchange is over".into());
        }
        match self.parser.next(input) {
            ReplyStep::Incomplete => RelayAuthStep::NeedInput,
            ReplyStep::Invalid(why) => {
                self.state = State::Done;
                RelayAuthStep::Failed(format!("the relay upstream sent an invalid reply: {why}"))
            }
            ReplyStep::Reply(reply) => self.reply(reply, out),
        }
    }

    fn reply(&mut self, reply: Reply, out: &mut Vec<u8>) -> RelayAuthStep {
        let prompt = match (self.state, reply.code) {
            (State::LoginUser, 334) => Some(State::LoginPassword),
            (State::LoginPassword, 334) => Some(State::LoginFinal),
            _ => None,
        };
        if let Some(next) = prompt {
            let value: &[u8] = if next == State::LoginPassword {
                self.username.expose().as_bytes()
            } else {
                self.password.expose().as_bytes()
            };
            let b64 = Zeroizing::new(STANDARD.encode(value));
            out.extend_from_slice(b64.as_bytes());
            out.extend_from_slice(b"\r\n");
            self.state = next;
            return RelayAuthStep::NeedInput;
        }
        self.state = State::Done;
        let text = format!("{} {}", reply.code, reply.text());
        match reply.code {
            235 => RelayAuthStep::Authenticated,
            // A challenge where none belongs (PLAIN with its initial response, or a third
            // prompt): the dialogue is not one this exchange knows; cancelling it would leave
            // the connection in an unknown state, so it ends here.
            334 => RelayAuthStep::Failed(format!(
                "the relay upstream sent an unexpected AUTH {} challenge: {text}",
                self.mechanism.as_str()
            )),
            400..=499 => RelayAuthStep::Temporary(text),
            500..=599 => RelayAuthStep::Refused(text),
            _ => RelayAuthStep::Failed(format!(
                "the relay upstream answered AUTH {} with {text}",
                self.mechanism.as_str()
            )),
        }
    }
}

impl std::fmt::Debug for RelayAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayAuth")
            .field("mechanism", &self.mechanism)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}
