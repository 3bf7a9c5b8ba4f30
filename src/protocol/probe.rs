//! Reading the upstream's answer to one command sent after login (sans-I/O): `check`'s probes
//! (IMAP `EXAMINE INBOX`, POP3 `STAT`, SMTP `MAIL FROM`/`RCPT TO`/`RSET`/`DATA`). (Live sessions
//! do not probe: `protocol::first_replies` watches the client's own first replies.)
//!
//! Bytes in, one [`ProbeReply`] out: IMAP skips untagged lines (and their literals, RFC 9051
//! §4.3) up to the tagged status line; POP3 reads one status line (RFC 1939 §3); SMTP reads a
//! multi-line reply up to the line whose code is followed by a space (RFC 5321 §4.2.1).
//! Every line, literal and line count is bounded.

use bytes::{Buf, BytesMut};

/// Longest line accepted (untagged EXAMINE lines and SMTP replies are far shorter).
pub const MAX_LINE: usize = 8 * 1024;
/// Most lines one reply may take.
pub const MAX_LINES: usize = 1000;
/// Largest IMAP literal skipped inside an untagged line.
pub const MAX_LITERAL: usize = 1 << 20;
/// Longest status text kept (it is shown to the admin and logged).
const MAX_TEXT: usize = 512;

/// Which reply form to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyKind {
    /// Up to the status line tagged with this tag.
    Imap {
        tag: String,
    },
    Pop3,
    Smtp,
}

/// The final status of one reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReply {
    /// IMAP `OK`, POP3 `+OK`, SMTP 2xx or 3xx.
    pub ok: bool,
    /// The status line without the tag (IMAP) or as is (POP3, SMTP), lossy UTF-8, at most
    /// 512 bytes; for multi-line SMTP replies the last line.
    pub text: String,
    /// SMTP: the reply code.
    pub code: Option<u16>,
}

/// Why a reply could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("reply line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("reply longer than {MAX_LINES} lines")]
    TooManyLines,
    #[error("literal of {0} bytes in a reply (more than {MAX_LITERAL})")]
    LiteralTooLarge(u64),
    #[error("malformed reply line: {0}")]
    Malformed(String),
}

/// Reads one reply, fed bytes as they come.
#[derive(Debug)]
pub struct ReplyReader {
    kind: ReplyKind,
    lines: usize,
    /// Bytes of an IMAP literal still to skip.
    skip: usize,
    /// The next IMAP line continues an untagged response after a literal.
    continued: bool,
}

impl ReplyReader {
    pub fn new(kind: ReplyKind) -> ReplyReader {
        ReplyReader {
            kind,
            lines: 0,
            skip: 0,
            continued: false,
        }
    }

    /// Consume what `buf` holds; `Ok(None)` means more bytes are needed. Bytes after the reply
    /// stay in `buf`.
    pub fn feed(&mut self, buf: &mut BytesMut) -> Result<Option<ProbeReply>, ProbeError> {
        loop {
            if self.skip > 0 {
                let n = self.skip.min(buf.len());
                buf.advance(n);
                self.skip -= n;
                if self.skip > 0 {
                    return Ok(None);
                }
            }
            let Some(end) = buf.iter().take(MAX_LINE + 2).position(|b| *b == b'\n') else {
                if buf.len() > MAX_LINE {
                    return Err(ProbeError::LineTooLong);
                }
                return Ok(None);
            };
            let raw = buf.split_to(end + 1);
            self.lines += 1;
            if self.lines > MAX_LINES {
                return Err(ProbeError::TooManyLines);
            }
            let line = trim_eol(&raw);
            if let Some(reply) = self.line(line)? {
                return Ok(Some(reply));
            }
        }
    }

    fn line(&mut self, line: &[u8]) -> Result<Option<ProbeReply>, ProbeError> {
        match &self.kind {
            ReplyKind::Imap { tag } => {
                if self.continued || line.starts_with(b"* ") || line == b"*" {
                    self.continued = false;
                    if let Some(n) = literal_len(line)? {
                        self.skip = n;
                        self.continued = true;
                    }
                    return Ok(None);
                }
                // Tags are compared without regard to case (some servers echo them upper-cased).
                let rest = line
                    .get(..tag.len())
                    .filter(|t| t.eq_ignore_ascii_case(tag.as_bytes()))
                    .and_then(|_| line[tag.len()..].strip_prefix(b" "))
                    .ok_or_else(|| ProbeError::Malformed(text(line)))?;
                let status = rest.split(|b| *b == b' ').next().unwrap_or_default();
                Ok(Some(ProbeReply {
                    ok: status.eq_ignore_ascii_case(b"OK"),
                    text: text(rest),
                    code: None,
                }))
            }
            ReplyKind::Pop3 => {
                if line.starts_with(b"+OK") {
                    Ok(Some(ProbeReply {
                        ok: true,
                        text: text(line),
                        code: None,
                    }))
                } else if line.starts_with(b"-ERR") {
                    Ok(Some(ProbeReply {
                        ok: false,
                        text: text(line),
                        code: None,
                    }))
                } else {
                    Err(ProbeError::Malformed(text(line)))
                }
            }
            ReplyKind::Smtp => {
                let code = line
                    .get(..3)
                    .filter(|c| c.iter().all(u8::is_ascii_digit) && (b'2'..=b'5').contains(&c[0]))
                    .and_then(|c| std::str::from_utf8(c).ok())
                    .and_then(|c| c.parse::<u16>().ok())
                    .ok_or_else(|| ProbeError::Malformed(text(line)))?;
                match line.get(3) {
                    Some(b'-') => Ok(None),
                    Some(b' ') | None => Ok(Some(ProbeReply {
                        ok: code < 400,
                        text: text(line),
                        code: Some(code),
                    })),
                    _ => Err(ProbeError::Malformed(text(line))),
                }
            }
        }
    }
}

fn trim_eol(raw: &[u8]) -> &[u8] {
    let l = raw.strip_suffix(b"\n").unwrap_or(raw);
    l.strip_suffix(b"\r").unwrap_or(l)
}

fn text(b: &[u8]) -> String {
    let mut s = String::from_utf8_lossy(&b[..b.len().min(MAX_TEXT)]).into_owned();
    s.retain(|c| !c.is_control());
    s
}

/// `{N}` or `{N+}` at the end of a line announces N literal bytes after it.
fn literal_len(line: &[u8]) -> Result<Option<usize>, ProbeError> {
    let Some(inner) = line
        .strip_suffix(b"}")
        .and_then(|l| l.iter().rposition(|b| *b == b'{').map(|i| &l[i + 1..]))
    else {
        return Ok(None);
    };
    let digits = inner.strip_suffix(b"+").unwrap_or(inner);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Ok(None);
    }
    let n: u64 = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(u64::MAX);
    match usize::try_from(n) {
        Ok(n) if n <= MAX_LITERAL => Ok(Some(n)),
        _ => Err(ProbeError::LiteralTooLarge(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(kind: ReplyKind, input: &[u8]) -> Result<Option<ProbeReply>, ProbeError> {
        let mut r = ReplyReader::new(kind);
        let mut buf = BytesMut::from(input);
        r.feed(&mut buf)
    }

    fn imap() -> ReplyKind {
        ReplyKind::Imap { tag: "P1".into() }
    }

    #[test]
    fn imap_examine_and_not_connected() {
        let ok = read(
            imap(),
            b"* 3 EXISTS\r\n* FLAGS (\\Seen)\r\n* OK [UIDVALIDITY 1] UIDs valid\r\nP1 OK [READ-ONLY] EXAMINE completed.\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(ok.ok);
        assert_eq!(ok.text, "OK [READ-ONLY] EXAMINE completed.");
        let bad = read(
            imap(),
            b"P1 BAD User is authenticated but not connected.\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(!bad.ok);
        assert_eq!(bad.text, "BAD User is authenticated but not connected.");
        // A literal inside an untagged line is skipped, even if it looks like a status line.
        let lit = read(
            imap(),
            b"* 1 FETCH (BODY[] {12}\r\nP1 OK fake\r\n)\r\nP1 NO real\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(lit.text, "NO real");
        assert!(read(imap(), b"P1 OK").unwrap().is_none());
        assert!(matches!(
            read(imap(), b"* x {99999999999}\r\n"),
            Err(ProbeError::LiteralTooLarge(_))
        ));
        assert!(matches!(
            read(imap(), b"+ go on\r\n"),
            Err(ProbeError::Malformed(_))
        ));
    }

    #[test]
    fn pop3_and_smtp() {
        let r = read(ReplyKind::Pop3, b"+OK 2 320\r\n").unwrap().unwrap();
        assert!(r.ok);
        let r = read(
            ReplyKind::Pop3,
            b"-ERR User is authenticated but not connected.\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(!r.ok);
        let r = read(
            ReplyKind::Smtp,
            b"550-5.7.64 first\r\n550 5.7.64 TenantAttribution; Relay Access Denied\r\nrest",
        )
        .unwrap()
        .unwrap();
        assert_eq!((r.ok, r.code), (false, Some(550)));
        assert!(r.text.contains("TenantAttribution"));
        let r = read(ReplyKind::Smtp, b"354 Start mail input\r\n")
            .unwrap()
            .unwrap();
        assert!(r.ok);
        assert!(read(ReplyKind::Smtp, b"hello\r\n").is_err());
    }

    #[test]
    fn bounds() {
        let long = vec![b'a'; MAX_LINE + 10];
        assert_eq!(read(ReplyKind::Pop3, &long), Err(ProbeError::LineTooLong));
        let many = b"* x\r\n".repeat(MAX_LINES + 1);
        assert_eq!(read(imap(), &many), Err(ProbeError::TooManyLines));
    }

    #[test]
    fn any_chunking_gives_the_same_reply() {
        let input: &[u8] = b"* 3 EXISTS\r\n* 1 FETCH {3}\r\nabc)\r\nP1 OK done\r\n";
        let whole = read(imap(), input);
        for split in 0..input.len() {
            let mut r = ReplyReader::new(imap());
            let mut buf = BytesMut::from(&input[..split]);
            let first = r.feed(&mut buf).unwrap();
            assert!(first.is_none(), "split {split}");
            buf.extend_from_slice(&input[split..]);
            assert_eq!(r.feed(&mut buf), whole, "split {split}");
        }
    }
}
