//! Relay mode after login (DESIGN §2), sans I/O: the SMTP dialogue between a logged-in (or
//! allow-listed) client and the tenant's connector, without upstream AUTH.
//!
//! Unlike auth mode this is not a blind pipe: every client command is read, so that MAIL FROM
//! can be checked against `allowed_senders` before anything reaches the connector, and every
//! connector reply is read, so that the connector's known refusals get a fix hint in the log.
//! Commands go one at a time (PIPELINING and CHUNKING are not offered in relay mode); a message
//! body after `354` is passed through while scanning for the terminating `CRLF . CRLF`, and is
//! forwarded unchanged.
//!
//! Only an explicit list of commands reaches the connector — EHLO, HELO, MAIL, RCPT, DATA, RSET,
//! NOOP, QUIT, HELP — and each one as a line rebuilt from what was parsed
//! ([`RelayCommand::to_line`]), so the connector reads exactly what was checked: a line with a
//! control character or invalid UTF-8, a verb not on the list (XCLIENT, XFORWARD, VRFY, EXPN,
//! ETRN, TURN, BDAT, AUTH, …, or any verb after leading white space) gets a local reply and
//! never leaves. Every MAIL FROM is parsed per RFC 5321 (`crate::protocol::smtp::envelope`) and
//! its sender checked against `allowed_senders`; the null sender `<>` only passes an empty list.
//! Syntax errors count toward `bad_commands_max`, after which the session is closed.
//!
//! ## Message bodies and SMTP smuggling
//!
//! A receiver that takes a bare LF (or CR) for a line end — Postfix ≤ 3.8.4 with its defaults,
//! among others — reads `\n.\r\n` or `\n.\n` inside a body as its end and what follows as new
//! commands: a second MAIL FROM that nobody checked (CVE-2023-51764 and relatives). So a body
//! must end every line in CRLF (RFC 5321 §2.3.8), and only `CRLF . CRLF` ends it.
//!
//! The body is checked as it streams ([`super::body::BodyCheck`]): each byte goes to the
//! connector as soon as it is known to be clean, and only a CR waits for the byte after it. At
//! the first bare CR or LF nothing more is forwarded and the connector connection is dropped at
//! once ([`RelayStep::DropConnector`]). What the connector has is then a clean prefix of the
//! body without an end, and a DATA whose end never came is not delivered: a server processes a
//! message only on the end-of-data indication (RFC 5321 §4.1.1.4) and drops an unfinished one
//! with the connection (Postfix: "lost connection after DATA"). Nothing sent on the same
//! connection could do this instead: after `354` every byte is body text, RSET included, and
//! `CRLF . CRLF` would deliver the truncated message. The client's body is then read to its
//! `CRLF . CRLF` and discarded, the client gets `550 5.6.11`, and the session goes on: RSET,
//! NOOP and QUIT are answered here, and the next command that needs the connector first opens
//! a new connection ([`RelayStep::Reconnect`]). A refused body counts as an invalid command,
//! so a client cannot make the relay reconnect without bound.
//!
//! Buffering the whole body and checking it before sending DATA would keep a refused body from
//! the connector entirely, but it holds a whole message (Exchange takes up to 150 MB) in memory
//! per session; checking while streaming needs a few bytes of state, and the connector's
//! contract for an aborted DATA is all it relies on.
//!
//! ## Connecting only for a client that has earned it
//!
//! A relay that logs in to a transactional provider (`upstream.auth`) has no connection yet
//! when a client without a local login (`require_login: false`) starts sending
//! ([`RelayMachine::unconnected`]): every provider login costs a rate-limited, monitored
//! AUTH, so a client that only says EHLO, NOOP or RSET, sends a MAIL FROM outside
//! `allowed_senders`, or quits never causes one. RSET, NOOP and QUIT are answered here, RCPT
//! and DATA get `503 5.5.1` (no MAIL FROM was accepted: the connector never saw one), and the
//! first command the connector must answer (a MAIL FROM that passed `allowed_senders`, EHLO,
//! HELO, HELP) asks for the connection ([`RelayStep::Reconnect`]). If it cannot be had, the
//! client gets `421 4.4.2 Relay connector unavailable: <why>` and the session ends.
//!
//! [`RelayMachine`] takes client bytes and connector bytes from buffers the driver owns
//! (`crate::session::relay`) and puts the bytes for each side into [`RelayOut`]; it does no I/O
//! and keeps no time.

use bytes::BytesMut;
use tracing::{info, warn};

use super::body::{Bare, BodyCheck, BodyEvent, EndScanner};
use super::envelope::{
    EnvelopeError, MailFrom, RcptTo, ReversePath, parse_mail_from, parse_rcpt_to,
};
use super::reply::{Reply, ReplyParser, ReplyStep, write_reply};
use crate::config::Relay;
use crate::limits::ProtocolLimits;
use crate::protocol::line::{Frame, LineFramer};
use crate::protocol::one_line;

/// Connector reply lines may carry long texts; a reply has at most this many lines.
const CONNECTOR_LINE_MAX: usize = 16 * 1024;
const CONNECTOR_REPLY_LINES_MAX: usize = 100;

/// How a relayed session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayEnd {
    ClientClosed,
    UpstreamClosed,
    Quit,
    Idle,
    /// More than `bad_commands_max` invalid commands.
    TooManyInvalidCommands,
    Error(String),
}

/// Bytes for each side. After every [`RelayMachine::step`] the driver writes `to_connector`,
/// then `to_client`, and clears both.
#[derive(Debug, Default)]
pub struct RelayOut {
    pub to_connector: Vec<u8>,
    pub to_client: Vec<u8>,
}

/// What the driver does after a step (after writing [`RelayOut`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayStep {
    /// Read client bytes (under the idle timeout), then step again. On a timeout call
    /// [`RelayMachine::client_idle`]; at EOF the session ends ([`RelayEnd::ClientClosed`]).
    NeedClient,
    /// Read connector bytes (one deadline for the whole reply), then step again. If the
    /// connector is gone or silent, call [`RelayMachine::connector_failed`].
    NeedConnector,
    /// Step again.
    Continue,
    /// Close the connector connection now (after writing [`RelayOut`] as after every step,
    /// and nothing more) and forget its buffered input: a message body was refused mid-way and
    /// must not be delivered.
    DropConnector,
    /// Open a connector connection (set up as at login: TLS, EHLO, the provider's AUTH), then
    /// report with [`RelayMachine::reconnected`]: the first one of an
    /// [unconnected](RelayMachine::unconnected) machine, or a new one after a drop.
    Reconnect,
    /// The session is over; write what is in [`RelayOut`] (best effort) and close.
    End(RelayEnd),
}

/// A one-line fix for the connector's known refusals (FACTS.md).
pub fn connector_hint(reply: &Reply) -> Option<&'static str> {
    let text = reply.text();
    if text.contains("5.7.64") || text.contains("TenantAttribution") {
        Some(
            "the connector did not attribute this relay to your tenant: add an inbound connector in Exchange admin center (Mail flow > Connectors) for this host's public IP, or for the certificate name presented with client_cert/client_key",
        )
    } else if text.contains("5.7.68") {
        Some(
            "the tenant rejects Direct Send: mail must arrive through an inbound connector (IP or certificate based) — create one for this relay",
        )
    } else if text.contains("4.4.62") {
        Some(
            "the message looped back to the connector: check the connector's scope and that the recipient domain's MX does not route back here",
        )
    } else {
        None
    }
}

/// A client command the relay passes on, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayCommand {
    Ehlo(String),
    Helo(String),
    Mail(MailFrom),
    Rcpt(RcptTo),
    Data,
    Rset,
    Noop,
    Quit,
    Help,
}

impl RelayCommand {
    /// The line the connector gets (without CRLF), rebuilt from what was parsed. NOOP's and
    /// HELP's arguments are dropped.
    pub fn to_line(&self) -> String {
        match self {
            RelayCommand::Ehlo(d) => format!("EHLO {d}"),
            RelayCommand::Helo(d) => format!("HELO {d}"),
            RelayCommand::Mail(m) => m.to_line(),
            RelayCommand::Rcpt(r) => r.to_line(),
            RelayCommand::Data => "DATA".into(),
            RelayCommand::Rset => "RSET".into(),
            RelayCommand::Noop => "NOOP".into(),
            RelayCommand::Quit => "QUIT".into(),
            RelayCommand::Help => "HELP".into(),
        }
    }
}

/// A command answered here and never forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The reply line, without CRLF.
    pub reply: &'static str,
    /// It counts toward `bad_commands_max`.
    pub bad: bool,
}

const fn bad(reply: &'static str) -> Refusal {
    Refusal { reply, bad: true }
}

/// Parse one client command line (without its line end): RFC 5321 §4.1.1, verb and arguments
/// separated by one space. Only the commands on the relay's list are returned; everything else
/// is a [`Refusal`].
pub fn parse_relay_command(line: &[u8]) -> Result<RelayCommand, Refusal> {
    if line.iter().any(|b| b.is_ascii_control()) {
        return Err(bad("500 5.5.2 Syntax error: control character in command"));
    }
    let Ok(line) = std::str::from_utf8(line) else {
        return Err(bad("500 5.5.2 Syntax error: command is not UTF-8"));
    };
    let (verb, args) = line.split_once(' ').unwrap_or((line, ""));
    let no_args = |cmd: RelayCommand, reply: &'static str| {
        if args.trim_matches(' ').is_empty() {
            Ok(cmd)
        } else {
            Err(bad(reply))
        }
    };
    match verb.to_ascii_uppercase().as_str() {
        v @ ("EHLO" | "HELO") => {
            let domain = args.trim_matches(' ');
            if domain.is_empty()
                || domain.len() > 255
                || !domain.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(bad("501 5.5.4 Syntax: EHLO hostname"));
            }
            Ok(if v == "EHLO" {
                RelayCommand::Ehlo(domain.to_string())
            } else {
                RelayCommand::Helo(domain.to_string())
            })
        }
        "MAIL" => parse_mail_from(args)
            .map(RelayCommand::Mail)
            .map_err(|e| match e {
                EnvelopeError::Syntax => bad("501 5.5.4 Syntax: MAIL FROM:<address>"),
                EnvelopeError::Address => bad("501 5.1.7 Bad sender address syntax"),
                EnvelopeError::Parameter => {
                    bad("555 5.5.4 Unsupported or malformed MAIL parameter")
                }
            }),
        "RCPT" => parse_rcpt_to(args)
            .map(RelayCommand::Rcpt)
            .map_err(|e| match e {
                EnvelopeError::Syntax => bad("501 5.5.4 Syntax: RCPT TO:<address>"),
                EnvelopeError::Address => bad("501 5.1.3 Bad recipient address syntax"),
                EnvelopeError::Parameter => {
                    bad("555 5.5.4 Unsupported or malformed RCPT parameter")
                }
            }),
        "DATA" => no_args(RelayCommand::Data, "501 5.5.4 Syntax: DATA"),
        "RSET" => no_args(RelayCommand::Rset, "501 5.5.4 Syntax: RSET"),
        "QUIT" => no_args(RelayCommand::Quit, "501 5.5.4 Syntax: QUIT"),
        "NOOP" => Ok(RelayCommand::Noop),
        "HELP" => Ok(RelayCommand::Help),
        "STARTTLS" => Err(Refusal {
            reply: "503 5.5.1 TLS is handled by this relay; STARTTLS not available now",
            bad: false,
        }),
        "AUTH" => Err(Refusal {
            reply: "503 5.5.1 Already authenticated",
            bad: false,
        }),
        "BDAT" => Err(bad("502 5.5.1 BDAT is not offered by this relay; use DATA")),
        "VRFY" | "EXPN" | "ETRN" | "TURN" | "ATRN" | "XCLIENT" | "XFORWARD" | "SEND" | "SOML"
        | "SAML" | "XEXCH50" => Err(bad("502 5.5.1 Command not available through this relay")),
        _ => Err(bad("500 5.5.1 Command unrecognized")),
    }
}

#[derive(Debug)]
enum State {
    /// Waiting for the next client command.
    Command,
    /// A command went to the connector; its reply is awaited. `sender` is the checked MAIL
    /// FROM address, for the log.
    Reply { sent: Sent, sender: Option<String> },
    /// Copying a message body to the connector, up to and including `CRLF.CRLF`.
    Body(BodyCheck),
    /// The connector's reply to the end of the body is awaited.
    BodyReply,
    /// A body with a bare CR or LF: reading it to its end, forwarding nothing.
    Refused { end: EndScanner, kind: Bare },
    /// The connector was dropped; this command goes to a new connection once it is there.
    Reconnect {
        line: String,
        sent: Sent,
        sender: Option<String>,
    },
    /// A new connector connection could not be had.
    Failed(String),
    /// QUIT was answered.
    Done,
}

/// What kind of command the awaited reply answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Data,
    Quit,
    Other,
}

/// The relay dialogue of one session.
pub struct RelayMachine {
    settings: Relay,
    framer: LineFramer,
    replies: ReplyParser,
    state: State,
    bad_commands: u32,
    bad_commands_max: u32,
    connector: Connector,
}

/// The machine's view of the connector connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Connector {
    /// None was opened yet ([`RelayMachine::unconnected`]).
    NotYet,
    Open,
    /// Dropped after a refused body, until a new one is there.
    Dropped,
}

impl RelayMachine {
    /// A session whose connector connection is open and set up.
    pub fn new(settings: Relay, limits: &ProtocolLimits) -> Self {
        Self::with(settings, limits, Connector::Open)
    }

    /// A session without a connector connection yet: the first command the connector must
    /// answer asks for one (see the module docs).
    pub fn unconnected(settings: Relay, limits: &ProtocolLimits) -> Self {
        Self::with(settings, limits, Connector::NotYet)
    }

    fn with(settings: Relay, limits: &ProtocolLimits, connector: Connector) -> Self {
        RelayMachine {
            settings,
            framer: LineFramer::new(limits.line_max),
            replies: ReplyParser::new(CONNECTOR_LINE_MAX, CONNECTOR_REPLY_LINES_MAX),
            state: State::Command,
            bad_commands: 0,
            bad_commands_max: limits.bad_commands_max,
            connector,
        }
    }

    /// Handle what is buffered: at most one client command, one connector reply, or the body
    /// bytes in `client`.
    pub fn step(
        &mut self,
        client: &mut BytesMut,
        connector: &mut BytesMut,
        out: &mut RelayOut,
    ) -> RelayStep {
        match &mut self.state {
            State::Command => match self.framer.next(client) {
                Frame::Line(line) => self.command(&line, out),
                Frame::TooLong => self.refuse(bad("500 5.5.6 Line too long"), out),
                Frame::Incomplete => RelayStep::NeedClient,
            },
            State::Body(check) => {
                if client.is_empty() {
                    return RelayStep::NeedClient;
                }
                match check.feed(client, &mut out.to_connector) {
                    BodyEvent::More => client.clear(),
                    BodyEvent::End(n) => {
                        let _ = client.split_to(n);
                        self.state = State::BodyReply;
                    }
                    BodyEvent::Bare { at, kind } => {
                        // The clean bytes before it still go (the same prefix however the body
                        // was chunked); nothing after them does.
                        let _ = client.split_to(at);
                        warn!(
                            bare = ?kind,
                            "relay refused a message body with a bare CR or LF (SMTP smuggling protection); dropping the connector connection so nothing of it is delivered"
                        );
                        self.state = State::Refused {
                            end: EndScanner::mid_line(),
                            kind,
                        };
                        self.connector = Connector::Dropped;
                        self.replies.reset();
                        return RelayStep::DropConnector;
                    }
                }
                RelayStep::Continue
            }
            State::Refused { end, kind } => {
                if client.is_empty() {
                    return RelayStep::NeedClient;
                }
                let Some(n) = end.feed(client) else {
                    client.clear();
                    return RelayStep::NeedClient;
                };
                let _ = client.split_to(n);
                let reply = match kind {
                    Bare::Lf => {
                        "550 5.6.11 Message refused: bare LF in the message body; every line must end in CRLF"
                    }
                    Bare::Cr => {
                        "550 5.6.11 Message refused: bare CR in the message body; every line must end in CRLF"
                    }
                };
                self.state = State::Command;
                self.refuse(bad(reply), out)
            }
            State::Reconnect { .. } => RelayStep::Reconnect,
            State::Failed(why) => RelayStep::End(RelayEnd::Error(format!(
                "connector: reconnecting failed: {why}"
            ))),
            State::Reply { .. } | State::BodyReply => match self.replies.next(connector) {
                ReplyStep::Incomplete => RelayStep::NeedConnector,
                ReplyStep::Invalid(why) => {
                    self.connector_failed(out);
                    RelayStep::End(RelayEnd::Error(format!(
                        "connector sent an invalid reply: {why}"
                    )))
                }
                ReplyStep::Reply(reply) => self.reply(reply, out),
            },
            State::Done => RelayStep::End(RelayEnd::Quit),
        }
    }

    /// The client was silent for the idle timeout: say goodbye while waiting for a command
    /// (inside a body there is no room for a reply).
    pub fn client_idle(&mut self, out: &mut RelayOut) -> RelayEnd {
        if matches!(self.state, State::Command) {
            out.to_client
                .extend_from_slice(b"421 4.4.2 Idle for too long, closing connection\r\n");
        }
        RelayEnd::Idle
    }

    /// The connector closed, failed or did not answer in time while a reply was awaited.
    pub fn connector_failed(&mut self, out: &mut RelayOut) {
        out.to_client
            .extend_from_slice(b"421 4.4.2 The connector closed the connection\r\n");
    }

    /// How the [`RelayStep::Reconnect`] the machine asked for went (`Err`: why not). On
    /// success the waiting command goes to the new connection; otherwise the client gets a
    /// 421 and the session ends.
    pub fn reconnected(&mut self, result: Result<(), String>, out: &mut RelayOut) {
        let state = std::mem::replace(&mut self.state, State::Command);
        let State::Reconnect { line, sent, sender } = state else {
            // Not asked for: nothing changes.
            self.state = state;
            return;
        };
        match result {
            Ok(()) => {
                self.connector = Connector::Open;
                self.replies.reset();
                out.to_connector.extend_from_slice(line.as_bytes());
                out.to_connector.extend_from_slice(b"\r\n");
                self.state = State::Reply { sent, sender };
            }
            Err(why) if self.connector == Connector::NotYet => {
                out.to_client.extend_from_slice(
                    format!(
                        "421 4.4.2 Relay connector unavailable: {}\r\n",
                        one_line(&why)
                    )
                    .as_bytes(),
                );
                self.state = State::Failed(why);
            }
            Err(why) => {
                out.to_client.extend_from_slice(
                    b"421 4.4.2 The connector is unavailable, closing connection\r\n",
                );
                self.state = State::Failed(why);
            }
        }
    }

    fn command(&mut self, line: &[u8], out: &mut RelayOut) -> RelayStep {
        let cmd = match parse_relay_command(line) {
            Ok(cmd) => cmd,
            Err(refusal) => return self.refuse(refusal, out),
        };
        let mut sender = None;
        if let RelayCommand::Mail(mail) = &cmd {
            let (checked, allowed) = match &mail.path {
                ReversePath::Null => (String::new(), self.settings.allowed_senders.is_empty()),
                ReversePath::Mailbox(m) => {
                    let checked = m.checked_form();
                    let allowed = self.settings.sender_allowed(&checked);
                    (checked, allowed)
                }
            };
            if !allowed {
                warn!(sender = ?checked, "relay refused a sender that is not in allowed_senders");
                out.to_client.extend_from_slice(
                    format!(
                        "550 5.7.1 Sender <{}> is not allowed to send through this relay\r\n",
                        one_line(&checked)
                    )
                    .as_bytes(),
                );
                return RelayStep::Continue;
            }
            sender = Some(checked);
        }
        let sent = match cmd {
            RelayCommand::Data => Sent::Data,
            RelayCommand::Quit => Sent::Quit,
            _ => Sent::Other,
        };
        if self.connector != Connector::Open {
            // Not connected yet, or after a refused body: nothing to reset or say goodbye to
            // on the connector side.
            let local: &[u8] = match cmd {
                RelayCommand::Quit => b"221 2.0.0 Bye\r\n",
                RelayCommand::Rset | RelayCommand::Noop => b"250 2.0.0 OK\r\n",
                // The connector never saw a MAIL FROM: a RCPT or DATA is out of sequence
                // (RFC 5321 §4.1.4), and not worth a provider login.
                RelayCommand::Rcpt(_) | RelayCommand::Data
                    if self.connector == Connector::NotYet =>
                {
                    b"503 5.5.1 Bad sequence of commands: MAIL FROM first\r\n"
                }
                _ => {
                    self.state = State::Reconnect {
                        line: cmd.to_line(),
                        sent,
                        sender,
                    };
                    return RelayStep::Reconnect;
                }
            };
            out.to_client.extend_from_slice(local);
            if sent == Sent::Quit {
                self.state = State::Done;
            }
            return RelayStep::Continue;
        }
        out.to_connector.extend_from_slice(cmd.to_line().as_bytes());
        out.to_connector.extend_from_slice(b"\r\n");
        self.state = State::Reply { sent, sender };
        RelayStep::Continue
    }

    /// Answer a command here; close after too many invalid ones.
    fn refuse(&mut self, refusal: Refusal, out: &mut RelayOut) -> RelayStep {
        if refusal.bad {
            self.bad_commands += 1;
            if self.bad_commands > self.bad_commands_max {
                out.to_client.extend_from_slice(
                    b"421 4.7.0 Too many invalid commands, closing connection\r\n",
                );
                return RelayStep::End(RelayEnd::TooManyInvalidCommands);
            }
        }
        out.to_client.extend_from_slice(refusal.reply.as_bytes());
        out.to_client.extend_from_slice(b"\r\n");
        RelayStep::Continue
    }

    fn reply(&mut self, reply: Reply, out: &mut RelayOut) -> RelayStep {
        if reply.code >= 400 {
            match connector_hint(&reply) {
                Some(hint) => {
                    warn!(code = reply.code, reply = %reply.text(), hint, "connector refused")
                }
                None => info!(code = reply.code, reply = %reply.text(), "connector refused"),
            }
        }
        write_reply(&mut out.to_client, reply.code, &reply.lines);
        self.state = match std::mem::replace(&mut self.state, State::Command) {
            State::Reply { sent, sender } => {
                if let (Some(sender), 250) = (&sender, reply.code) {
                    info!(sender = ?sender, "relaying a message");
                }
                match (sent, reply.code) {
                    (Sent::Quit, _) => State::Done,
                    (Sent::Data, 354) => State::Body(BodyCheck::new()),
                    _ => State::Command,
                }
            }
            _ => {
                if reply.code == 250 {
                    info!("message relayed");
                }
                State::Command
            }
        };
        RelayStep::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints() {
        let r = |t: &str| Reply {
            code: 550,
            lines: vec![t.into()],
        };
        assert!(
            connector_hint(&r("5.7.64 TenantAttribution; Relay Access Denied"))
                .unwrap()
                .contains("connector")
        );
        assert!(
            connector_hint(&r("5.7.68 Direct Send rejected"))
                .unwrap()
                .contains("Direct Send")
        );
        assert!(connector_hint(&r("4.4.62 Mail sent to the wrong Office 365 region")).is_some());
        assert!(connector_hint(&r("5.1.1 unknown user")).is_none());
    }
}
