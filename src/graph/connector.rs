//! The SMTP server end of a Graph listener's session, sans I/O: it stands where a relay
//! listener's connector stands, so the relay machine (`protocol::smtp::relay`) keeps doing the
//! strict part — one command at a time, an explicit command list, lines rebuilt from what was
//! parsed, bare CR/LF refusal in bodies — and this machine answers those commands locally and
//! collects the message for Microsoft Graph.
//!
//! It reads what the relay machine writes to its connector (canonical command lines, then the
//! still dot-stuffed body up to `CRLF . CRLF`) and writes SMTP replies into the buffer the
//! relay machine reads connector replies from. MAIL FROM with `SIZE=` over the limit gets
//! `552 5.3.4` before any byte of the message; a body over the limit is read to its end,
//! discarded and answered with `552 5.3.4`. The body is unstuffed (RFC 5321 §4.5.2) into a
//! buffer that never grows past the limit. At the end of a body within the limit, envelope
//! recipients the header does not name are added as `Bcc:` ([`super::recipients`]) and the
//! message is handed to the driver as an [`Outgoing`]; the driver posts it and reports back
//! with [`GraphConnector::sent`], whose reply is the client's answer to the end of DATA.

use bytes::BytesMut;

use super::recipients;
use crate::protocol::one_line;
use crate::protocol::smtp::envelope::{ForwardPath, ReversePath, parse_mail_from, parse_rcpt_to};

/// Recipients per message (Exchange Online's default recipient rate limit per message).
pub const MAX_RECIPIENTS: usize = 500;
/// Longest command line the relay machine writes (its own line cap is smaller).
const COMMAND_MAX: usize = 8 * 1024;

/// A message ready to be posted.
#[derive(Debug)]
pub struct Outgoing {
    /// The MIME message as posted (unstuffed, with the added `Bcc:` if any).
    pub mime: Vec<u8>,
    /// The envelope sender as given (empty for `<>`).
    pub sender: String,
    pub recipients: usize,
    /// How many envelope recipients were added as `Bcc:`.
    pub added_bcc: usize,
}

/// How the post went, as the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReply {
    pub code: u16,
    /// The text after the code (enhanced status code first), one line.
    pub text: String,
}

#[derive(Debug)]
enum State {
    /// Commands.
    Command,
    /// Reading a body; the flags say where in a line we are.
    Body(Unstuff),
    /// The message went to the driver; waiting for [`GraphConnector::sent`].
    Sending,
}

/// Dot-unstuffing and end detection over a body that is known to end every line in CRLF.
#[derive(Debug, Default)]
struct Unstuff {
    /// At the start of a line.
    line_start: bool,
    /// A `.` at the start of a line was seen.
    dot: bool,
    /// `.` `CR` at the start of a line was seen.
    dot_cr: bool,
}

/// The local SMTP end of one session.
pub struct GraphConnector {
    hostname: String,
    /// Largest MIME message Graph takes, in bytes.
    limit: usize,
    state: State,
    command: Vec<u8>,
    sender: Option<String>,
    recipients: Vec<String>,
    body: Vec<u8>,
    /// The body passed the limit: the rest is read and discarded.
    over: bool,
}

impl GraphConnector {
    pub fn new(hostname: &str, limit: usize) -> Self {
        GraphConnector {
            hostname: hostname.to_string(),
            limit,
            state: State::Command,
            command: Vec::new(),
            sender: None,
            recipients: Vec::new(),
            body: Vec::new(),
            over: false,
        }
    }

    /// The EHLO keywords a client is shown (before and after login).
    pub fn capabilities(limit: usize) -> Vec<String> {
        vec![
            format!("SIZE {limit}"),
            "8BITMIME".into(),
            "ENHANCEDSTATUSCODES".into(),
        ]
    }

    /// The connection to "the connector" was dropped (a refused body): forget the transaction.
    pub fn reset(&mut self) {
        self.state = State::Command;
        self.command.clear();
        self.clear_transaction();
    }

    fn clear_transaction(&mut self) {
        self.sender = None;
        self.recipients.clear();
        self.body = Vec::new();
        self.over = false;
    }

    /// Take what the relay machine wrote to its connector; replies go to `replies`. Returns a
    /// message to post when a body ended within the limit.
    pub fn feed(&mut self, mut bytes: &[u8], replies: &mut BytesMut) -> Option<Outgoing> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Sending => return None,
                State::Body(u) => {
                    let (used, ended) =
                        unstuff(u, bytes, &mut self.body, self.limit, &mut self.over);
                    bytes = &bytes[used..];
                    if ended {
                        return self.body_ended(replies);
                    }
                }
                State::Command => {
                    let Some(nl) = bytes.iter().position(|&b| b == b'\n') else {
                        if self.command.len().saturating_add(bytes.len()) <= COMMAND_MAX {
                            self.command.extend_from_slice(bytes);
                        }
                        return None;
                    };
                    if self.command.len().saturating_add(nl) <= COMMAND_MAX {
                        self.command.extend_from_slice(&bytes[..nl]);
                    }
                    bytes = &bytes[nl + 1..];
                    let line = std::mem::take(&mut self.command);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    let (code, text) = self.command(line);
                    reply(replies, code, &text);
                }
            }
        }
        None
    }

    /// The driver's result for the [`Outgoing`] handed out: the reply to the end of DATA.
    pub fn sent(&mut self, result: &SendReply, replies: &mut BytesMut) {
        if matches!(self.state, State::Sending) {
            self.state = State::Command;
            self.clear_transaction();
            reply(replies, result.code, &result.text);
        }
    }

    fn command(&mut self, line: &[u8]) -> (u16, String) {
        let line = String::from_utf8_lossy(line);
        let (verb, args) = line.split_once(' ').unwrap_or((&line, ""));
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" => {
                let mut lines = vec![self.hostname.clone()];
                lines.extend(Self::capabilities(self.limit));
                (250, lines.join("\n"))
            }
            "HELO" => (250, self.hostname.clone()),
            "MAIL" => {
                if self.sender.is_some() {
                    return (503, "5.5.1 Sender already specified".into());
                }
                let Ok(mail) = parse_mail_from(args) else {
                    return (501, "5.5.4 Syntax: MAIL FROM:<address>".into());
                };
                let declared = mail
                    .params
                    .iter()
                    .find(|p| p.keyword == "SIZE")
                    .and_then(|p| p.value.as_deref())
                    .and_then(|v| v.parse::<u64>().ok());
                if declared.is_some_and(|n| n > self.limit as u64) {
                    return (552, self.too_large());
                }
                self.sender = Some(match &mail.path {
                    ReversePath::Null => String::new(),
                    ReversePath::Mailbox(m) => m.as_written(),
                });
                (250, "2.1.0 Sender OK".into())
            }
            "RCPT" => {
                if self.sender.is_none() {
                    return (503, "5.5.1 Need MAIL command first".into());
                }
                let Ok(rcpt) = parse_rcpt_to(args) else {
                    return (501, "5.5.4 Syntax: RCPT TO:<address>".into());
                };
                let ForwardPath::Mailbox(m) = &rcpt.path else {
                    return (
                        550,
                        "5.1.3 <Postmaster> without a domain cannot be addressed through Microsoft Graph; use postmaster@<domain>".into(),
                    );
                };
                if self.recipients.len() >= MAX_RECIPIENTS {
                    return (
                        452,
                        format!(
                            "4.5.3 Too many recipients (at most {MAX_RECIPIENTS} per message); send the rest in another message"
                        ),
                    );
                }
                self.recipients.push(m.as_written());
                (250, "2.1.5 Recipient OK".into())
            }
            "DATA" => {
                if self.sender.is_none() {
                    return (503, "5.5.1 Need MAIL command first".into());
                }
                if self.recipients.is_empty() {
                    return (554, "5.5.1 No valid recipients".into());
                }
                self.body = Vec::new();
                self.over = false;
                self.state = State::Body(Unstuff {
                    line_start: true,
                    ..Default::default()
                });
                (354, "Start mail input; end with <CRLF>.<CRLF>".into())
            }
            "RSET" => {
                self.clear_transaction();
                (250, "2.0.0 OK".into())
            }
            "NOOP" => (250, "2.0.0 OK".into()),
            "QUIT" => (221, "2.0.0 Bye".into()),
            "HELP" => (
                214,
                "2.0.0 authbridge: MAIL, RCPT, DATA; messages go out through Microsoft Graph"
                    .into(),
            ),
            _ => (500, "5.5.1 Command unrecognized".into()),
        }
    }

    fn too_large(&self) -> String {
        format!(
            "5.3.4 Message size exceeds fixed maximum message size: Microsoft Graph sendMail takes at most {} bytes per message",
            self.limit
        )
    }

    fn body_ended(&mut self, replies: &mut BytesMut) -> Option<Outgoing> {
        if self.over {
            let text = self.too_large();
            self.state = State::Command;
            self.clear_transaction();
            reply(replies, 552, &text);
            return None;
        }
        let mut mime = std::mem::take(&mut self.body);
        let scan = recipients::scan(&mime);
        let mut missing: Vec<String> = Vec::new();
        for r in &self.recipients {
            let n = recipients::normalise(r);
            if !scan.addresses.contains(&n)
                && !missing.iter().any(|m| recipients::normalise(m) == n)
            {
                missing.push(r.clone());
            }
        }
        if let Some((range, text)) = recipients::bcc_edit(&scan, &mime, &missing) {
            let grown = mime.len() - range.len();
            if grown.saturating_add(text.len()) > self.limit {
                let text = self.too_large();
                self.state = State::Command;
                self.clear_transaction();
                reply(replies, 552, &text);
                return None;
            }
            mime.splice(range, text);
        }
        self.state = State::Sending;
        Some(Outgoing {
            mime,
            sender: self.sender.clone().unwrap_or_default(),
            recipients: self.recipients.len(),
            added_bcc: missing.len(),
        })
    }
}

/// Unstuff `bytes` into `body` (up to `limit`; past it `over` is set and bytes are dropped).
/// Returns how many bytes were used and whether `CRLF . CRLF` was reached (the terminating
/// `.CRLF` is not part of the message; the CRLF before it is).
fn unstuff(
    u: &mut Unstuff,
    bytes: &[u8],
    body: &mut Vec<u8>,
    limit: usize,
    over: &mut bool,
) -> (usize, bool) {
    let mut push = |b: u8, body: &mut Vec<u8>| {
        if body.len() < limit {
            body.push(b);
        } else {
            *over = true;
        }
    };
    for (i, &b) in bytes.iter().enumerate() {
        if u.dot_cr {
            u.dot_cr = false;
            if b == b'\n' {
                return (i + 1, true);
            }
            // Not reachable behind the relay's bare-CR check; kept literal.
            push(b'\r', body);
            push(b, body);
            u.line_start = false;
            continue;
        }
        if u.dot {
            u.dot = false;
            if b == b'\r' {
                u.dot_cr = true;
                continue;
            }
            // A stuffed dot: the first one is dropped.
            push(b, body);
            u.line_start = b == b'\n';
            continue;
        }
        if u.line_start && b == b'.' {
            u.dot = true;
            u.line_start = false;
            continue;
        }
        push(b, body);
        u.line_start = b == b'\n';
    }
    (bytes.len(), false)
}

/// Write one SMTP reply; `text` lines are separated by `\n`.
fn reply(out: &mut BytesMut, code: u16, text: &str) {
    let lines: Vec<&str> = text.split('\n').collect();
    for (i, l) in lines.iter().enumerate() {
        let sep = if i + 1 == lines.len() { ' ' } else { '-' };
        out.extend_from_slice(format!("{code}{sep}{}\r\n", one_line(l)).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(c: &mut GraphConnector, input: &[u8]) -> (String, Option<Outgoing>) {
        let mut replies = BytesMut::new();
        let out = c.feed(input, &mut replies);
        (String::from_utf8_lossy(&replies).into_owned(), out)
    }

    #[test]
    fn a_whole_transaction_unstuffed_with_bcc_added() {
        let mut c = GraphConnector::new("h", 1000);
        assert!(run(&mut c, b"EHLO x\r\n").0.contains("250-SIZE 1000\r\n"));
        assert_eq!(
            run(&mut c, b"MAIL FROM:<a@x>\r\n").0,
            "250 2.1.0 Sender OK\r\n"
        );
        run(&mut c, b"RCPT TO:<to@x>\r\n");
        run(&mut c, b"RCPT TO:<Hidden@X>\r\n");
        assert!(run(&mut c, b"DATA\r\n").0.starts_with("354 "));
        // Split anywhere, including between the dot and its CRLF.
        let (r, out) = run(&mut c, b"To: to@x\r\n\r\n..dot\r\n.");
        assert!(r.is_empty() && out.is_none());
        let (_, out) = run(&mut c, b"\r\n");
        let out = out.expect("a message");
        assert_eq!(out.mime, b"To: to@x\r\nBcc: <Hidden@X>\r\n\r\n.dot\r\n");
        assert_eq!(out.added_bcc, 1);
        let mut replies = BytesMut::new();
        c.sent(
            &SendReply {
                code: 250,
                text: "2.0.0 ok".into(),
            },
            &mut replies,
        );
        assert_eq!(&replies[..], b"250 2.0.0 ok\r\n");
        assert_eq!(
            run(&mut c, b"RCPT TO:<a@x>\r\n").0,
            "503 5.5.1 Need MAIL command first\r\n"
        );
    }

    #[test]
    fn size_limit_before_and_after_data() {
        let mut c = GraphConnector::new("h", 10);
        assert!(
            run(&mut c, b"MAIL FROM:<a@x> SIZE=11\r\n")
                .0
                .starts_with("552 5.3.4 ")
        );
        assert!(
            run(&mut c, b"MAIL FROM:<a@x> SIZE=10\r\n")
                .0
                .starts_with("250 ")
        );
        run(&mut c, b"RCPT TO:<to@x>\r\n");
        run(&mut c, b"DATA\r\n");
        let (r, out) = run(&mut c, b"To: to@x\r\n\r\n0123456789\r\n.\r\n");
        assert!(out.is_none());
        assert!(r.starts_with("552 5.3.4 "), "{r}");
        // The session goes on.
        assert!(run(&mut c, b"MAIL FROM:<a@x>\r\n").0.starts_with("250 "));
    }

    #[test]
    fn the_bcc_that_would_pass_the_limit_is_refused_too() {
        let mut c = GraphConnector::new("h", 16);
        run(&mut c, b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n");
        let (r, out) = run(&mut c, b"To: a@x\r\n\r\nhi\r\n.\r\n");
        assert!(out.is_none());
        assert!(r.contains("552 5.3.4"), "{r}");
    }

    #[test]
    fn sequence_errors_and_recipient_cap() {
        let mut c = GraphConnector::new("h", 100);
        assert!(run(&mut c, b"DATA\r\n").0.starts_with("503 "));
        run(&mut c, b"MAIL FROM:<>\r\n");
        assert!(run(&mut c, b"DATA\r\n").0.starts_with("554 "));
        assert!(
            run(&mut c, b"RCPT TO:<Postmaster>\r\n")
                .0
                .starts_with("550 ")
        );
        for i in 0..MAX_RECIPIENTS {
            let line = format!("RCPT TO:<r{i}@x>\r\n");
            assert!(run(&mut c, line.as_bytes()).0.starts_with("250 "));
        }
        assert!(
            run(&mut c, b"RCPT TO:<one-more@x>\r\n")
                .0
                .starts_with("452 4.5.3")
        );
    }
}
