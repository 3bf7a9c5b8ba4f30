//! SMTP replies from the upstream (RFC 5321 §4.2): `ddd-text` continuation lines, then
//! `ddd text`.

use bytes::BytesMut;

use crate::protocol::line::{Frame, LineFramer};

/// A complete (possibly multi-line) reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Text of each line after the code and separator.
    pub lines: Vec<String>,
}

impl Reply {
    /// All lines joined with a space, for logs and client-facing messages.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }
}

/// Write a reply as `code-line` … `code line` (RFC 5321 §4.2.1).
pub fn write_reply(out: &mut Vec<u8>, code: u16, lines: &[String]) {
    for (i, line) in lines.iter().enumerate() {
        let sep = if i + 1 == lines.len() { ' ' } else { '-' };
        out.extend_from_slice(format!("{code}{sep}{line}\r\n").as_bytes());
    }
}

/// Result of feeding input.
#[derive(Debug, PartialEq, Eq)]
pub enum ReplyStep {
    Reply(Reply),
    Incomplete,
    Invalid(String),
}

/// Assembles replies under a line cap and a line-count cap.
#[derive(Debug)]
pub struct ReplyParser {
    framer: LineFramer,
    pending: Vec<String>,
    pending_code: Option<u16>,
    max_lines: usize,
}

impl ReplyParser {
    pub fn new(line_max: usize, max_lines: usize) -> Self {
        ReplyParser {
            framer: LineFramer::new(line_max),
            pending: Vec::new(),
            pending_code: None,
            max_lines,
        }
    }

    pub fn reset(&mut self) {
        self.framer.reset();
        self.pending.clear();
        self.pending_code = None;
    }

    pub fn next(&mut self, input: &mut BytesMut) -> ReplyStep {
        loop {
            let line = match self.framer.next(input) {
                Frame::Incomplete => return ReplyStep::Incomplete,
                Frame::TooLong => return ReplyStep::Invalid("reply line too long".into()),
                Frame::Line(l) => l,
            };
            let Some((code, last, text)) = split_reply_line(&line) else {
                return ReplyStep::Invalid(format!(
                    "malformed reply line {:?}",
                    String::from_utf8_lossy(&line[..line.len().min(80)])
                ));
            };
            if let Some(prev) = self.pending_code {
                if prev != code {
                    return ReplyStep::Invalid(
                        "reply code changed inside a multi-line reply".into(),
                    );
                }
            }
            if self.pending.len() >= self.max_lines {
                return ReplyStep::Invalid("reply has too many lines".into());
            }
            self.pending.push(text);
            if last {
                self.pending_code = None;
                return ReplyStep::Reply(Reply {
                    code,
                    lines: std::mem::take(&mut self.pending),
                });
            }
            self.pending_code = Some(code);
        }
    }
}

fn split_reply_line(line: &[u8]) -> Option<(u16, bool, String)> {
    if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code =
        (line[0] - b'0') as u16 * 100 + (line[1] - b'0') as u16 * 10 + (line[2] - b'0') as u16;
    if !(200..600).contains(&code) {
        return None;
    }
    let (last, text) = match line.get(3) {
        None => (true, &line[3..]),
        Some(b' ') => (true, &line[4..]),
        Some(b'-') => (false, &line[4..]),
        Some(_) => return None,
    };
    Some((code, last, String::from_utf8_lossy(text).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_ehlo_in_any_chunking() {
        let input = b"250-smtp.office365.com Hello [127.0.0.1]\r\n250-SIZE 157286400\r\n250 SMTPUTF8\r\n220 next\r\n";
        for split in 0..input.len() {
            let mut p = ReplyParser::new(512, 50);
            let mut buf = BytesMut::from(&input[..split]);
            let mut got = Vec::new();
            loop {
                match p.next(&mut buf) {
                    ReplyStep::Reply(r) => got.push(r),
                    ReplyStep::Incomplete => break,
                    ReplyStep::Invalid(e) => panic!("{e}"),
                }
            }
            buf.extend_from_slice(&input[split..]);
            loop {
                match p.next(&mut buf) {
                    ReplyStep::Reply(r) => got.push(r),
                    ReplyStep::Incomplete => break,
                    ReplyStep::Invalid(e) => panic!("{e}"),
                }
            }
            assert_eq!(got.len(), 2);
            assert_eq!(got[0].code, 250);
            assert_eq!(got[0].lines[1], "SIZE 157286400");
            assert_eq!(got[1].text(), "next");
        }
    }

    #[test]
    fn invalid_replies() {
        for bad in [
            &b"hello\r\n"[..],
            b"25\r\n",
            b"250x\r\n",
            b"999 x\r\n",
            b"250-a\r\n251 b\r\n",
        ] {
            let mut p = ReplyParser::new(512, 50);
            let mut buf = BytesMut::from(bad);
            let r = loop {
                match p.next(&mut buf) {
                    ReplyStep::Reply(_) => continue,
                    other => break other,
                }
            };
            assert!(matches!(r, ReplyStep::Invalid(_)), "{bad:?}");
        }
        let mut p = ReplyParser::new(512, 2);
        let mut buf = BytesMut::from(&b"250-a\r\n250-b\r\n250 c\r\n"[..]);
        assert!(matches!(p.next(&mut buf), ReplyStep::Invalid(_)));
        let mut buf = BytesMut::from(&b"235\r\n"[..]);
        let mut p = ReplyParser::new(512, 2);
        assert_eq!(
            p.next(&mut buf),
            ReplyStep::Reply(Reply {
                code: 235,
                lines: vec![String::new()]
            })
        );
    }
}
