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
//! [`RelayMachine`] takes client bytes and connector bytes from buffers the driver owns
//! (`crate::session::relay`) and puts the bytes for each side into [`RelayOut`]; it does no I/O
//! and keeps no time.

use bytes::BytesMut;
use tracing::{info, warn};

use super::reply::{Reply, ReplyParser, ReplyStep, write_reply};
use crate::config::Relay;
use crate::limits::ProtocolLimits;
use crate::protocol::line::{Frame, LineFramer};

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

/// The address in `MAIL FROM:<addr> [params]` (RFC 5321 §4.1.1.2), lower-cased; `Some("")`
/// for the null sender `<>`; `None` when it cannot be parsed.
pub fn mail_from_address(line: &[u8]) -> Option<String> {
    // Bytes, not a str: slicing a str inside a multi-byte character panics.
    let (verb, rest) = line.split_at_checked(10)?;
    if !verb.eq_ignore_ascii_case(b"MAIL FROM:") {
        return None;
    }
    let rest = std::str::from_utf8(rest).ok()?.trim_start();
    let addr = if let Some(r) = rest.strip_prefix('<') {
        &r[..r.find('>')?]
    } else {
        rest.split(' ').next()?
    };
    // Source routes (`@a,@b:user@d`) are obsolete; keep the mailbox.
    let addr = addr.rsplit(':').next().unwrap_or(addr);
    Some(addr.to_ascii_lowercase())
}

/// Finds the end of a DATA body: `CRLF . CRLF`, where the body start counts as a line start.
#[derive(Debug, Clone)]
struct DotScanner {
    /// 0 mid-line, 1 after CR, 2 at line start, 3 after "." at line start, 4 after ".CR".
    state: u8,
}

impl DotScanner {
    fn new() -> Self {
        DotScanner { state: 2 }
    }

    /// The number of bytes of `chunk` up to and including the terminator, if it is in there.
    fn feed(&mut self, chunk: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < chunk.len() {
            if self.state == 0 {
                match memchr::memchr(b'\r', &chunk[i..]) {
                    Some(p) => {
                        i += p + 1;
                        self.state = 1;
                        continue;
                    }
                    None => return None,
                }
            }
            let b = chunk[i];
            self.state = match (self.state, b) {
                (1, b'\n') => 2,
                (2, b'.') => 3,
                (3, b'\r') => 4,
                (4, b'\n') => return Some(i + 1),
                (_, b'\r') => 1,
                _ => 0,
            };
            i += 1;
        }
        None
    }
}

#[derive(Debug)]
enum State {
    /// Waiting for the next client command.
    Command,
    /// A command went to the connector; its reply is awaited. `verb` is upper-cased; `sender`
    /// is the checked MAIL FROM address, for the log.
    Reply {
        verb: Vec<u8>,
        sender: Option<String>,
    },
    /// Copying a message body to the connector, up to and including `CRLF.CRLF`.
    Body(DotScanner),
    /// The connector's reply to the end of the body is awaited.
    BodyReply,
    /// QUIT was answered.
    Done,
}

/// The relay dialogue of one session.
pub struct RelayMachine {
    settings: Relay,
    framer: LineFramer,
    replies: ReplyParser,
    state: State,
}

impl RelayMachine {
    pub fn new(settings: Relay, limits: &ProtocolLimits) -> Self {
        RelayMachine {
            settings,
            framer: LineFramer::new(limits.line_max),
            replies: ReplyParser::new(CONNECTOR_LINE_MAX, CONNECTOR_REPLY_LINES_MAX),
            state: State::Command,
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
                Frame::TooLong => {
                    out.to_client
                        .extend_from_slice(b"500 5.5.6 Line too long\r\n");
                    RelayStep::Continue
                }
                Frame::Incomplete => RelayStep::NeedClient,
            },
            State::Body(scanner) => {
                if client.is_empty() {
                    return RelayStep::NeedClient;
                }
                let end = scanner.feed(client);
                let n = end.unwrap_or(client.len());
                out.to_connector.extend_from_slice(&client.split_to(n));
                if end.is_some() {
                    self.state = State::BodyReply;
                }
                RelayStep::Continue
            }
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

    fn command(&mut self, line: &[u8], out: &mut RelayOut) -> RelayStep {
        let verb = line
            .split(|b| *b == b' ')
            .next()
            .unwrap_or(&[])
            .to_ascii_uppercase();
        let mut sender = None;
        let local_reply: Option<String> = match verb.as_slice() {
            b"MAIL" => match mail_from_address(line) {
                None => Some("501 5.5.4 Syntax: MAIL FROM:<address>".into()),
                Some(s)
                    if !self.settings.sender_allowed(&s)
                        || (s.is_empty() && !self.settings.allowed_senders.is_empty()) =>
                {
                    warn!(sender = ?s, "relay refused a sender that is not in allowed_senders");
                    Some(format!(
                        "550 5.7.1 Sender <{s}> is not allowed to send through this relay"
                    ))
                }
                Some(s) => {
                    sender = Some(s);
                    None
                }
            },
            b"STARTTLS" => {
                Some("503 5.5.1 TLS is handled by this relay; STARTTLS not available now".into())
            }
            b"AUTH" => Some("503 5.5.1 Already authenticated".into()),
            b"BDAT" => Some("502 5.5.1 BDAT is not offered by this relay; use DATA".into()),
            _ => None,
        };
        if let Some(reply) = local_reply {
            out.to_client
                .extend_from_slice(format!("{reply}\r\n").as_bytes());
            return RelayStep::Continue;
        }
        out.to_connector.extend_from_slice(line);
        out.to_connector.extend_from_slice(b"\r\n");
        self.state = State::Reply { verb, sender };
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
            State::Reply { verb, sender } => {
                if let (Some(sender), 250) = (&sender, reply.code) {
                    info!(sender = ?sender, "relaying a message");
                }
                match (verb.as_slice(), reply.code) {
                    (b"QUIT", _) => State::Done,
                    (b"DATA", 354) => State::Body(DotScanner::new()),
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
    fn mail_from_forms() {
        assert_eq!(
            mail_from_address(b"MAIL FROM:<Tickets@Contoso.com> SIZE=10").as_deref(),
            Some("tickets@contoso.com")
        );
        assert_eq!(
            mail_from_address(b"mail from: <a@b.c>").as_deref(),
            Some("a@b.c")
        );
        assert_eq!(mail_from_address(b"MAIL FROM:<>").as_deref(), Some(""));
        assert_eq!(
            mail_from_address(b"MAIL FROM:a@b.c BODY=8BITMIME").as_deref(),
            Some("a@b.c")
        );
        assert_eq!(
            mail_from_address(b"MAIL FROM:<@x,@y:u@d.e>").as_deref(),
            Some("u@d.e")
        );
        assert_eq!(mail_from_address(b"MAIL FROM:<a@b"), None);
        assert_eq!(mail_from_address(b"MAIL TO:<a@b>"), None);
        assert_eq!(mail_from_address(b"MAIL"), None);
    }

    #[test]
    fn dot_scanner_in_any_chunking() {
        let body = b"Subject: x\r\n\r\n..stuffed\r\nlast\r\n.\r\nQUIT\r\n";
        let end = body.len() - 6;
        for split in 0..body.len() {
            let mut s = DotScanner::new();
            let (a, b) = body.split_at(split);
            let got = match s.feed(a) {
                Some(n) => n,
                None => split + s.feed(b).expect("terminator found"),
            };
            assert_eq!(got, end, "split at {split}");
        }
        // An empty body is just ".\r\n".
        assert_eq!(DotScanner::new().feed(b".\r\n"), Some(3));
        // A dot inside a line is not a terminator.
        assert_eq!(DotScanner::new().feed(b"a.\r\nb\r\n.x\r\n"), None);
    }

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
