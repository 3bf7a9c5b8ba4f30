//! Frames client input into complete IMAP commands: lines (capped by [`LineFramer`]) and the
//! literals announced at their ends (RFC 3501 §4.3, §7.5; RFC 7888).
//!
//! When a line ends with `{N}` or `{N+}` the reader stops and reports
//! [`ReadEvent::Literal`]; the machine decides (size, command, TLS state) and either accepts it
//! (writing `+ Ready` for a synchronising literal) or refuses it. Accepted payload bytes are then
//! copied by length, whatever they contain, and the command continues on the next line. The
//! partial command is kept in zeroed-on-drop memory: it may hold a password. Nothing beyond the
//! end of the current command is ever taken from the input, so bytes a client pipelines after its
//! login (or STARTTLS) stay in the driver's buffer.

use bytes::BytesMut;
use zeroize::{Zeroize, Zeroizing};

use super::command::{LiteralAnnouncement, Tag, literal_at_end, parse_tag};
use crate::protocol::line::{Frame, LineFramer};

/// What [`CommandReader::next`] found.
#[derive(Debug)]
pub enum ReadEvent {
    /// More input is needed.
    Incomplete,
    /// A complete command: lines joined by CRLF with literal payloads in place, no final CRLF.
    /// `longest_line` is the longest line in it (literals excluded).
    Command {
        bytes: Zeroizing<Vec<u8>>,
        longest_line: usize,
    },
    /// The last line announced a literal; call [`CommandReader::accept_literal`] or
    /// [`CommandReader::refuse_literal`]. `count` is the number of literals in this command so far.
    Literal {
        announcement: LiteralAnnouncement,
        count: usize,
    },
    /// A line was longer than the framer's cap; it and the command it belonged to are dropped.
    /// `tag` is the command's tag when an earlier line of it was read.
    TooLong { tag: Option<Tag> },
}

/// Assembles commands out of the client's byte stream.
#[derive(Debug)]
pub struct CommandReader {
    framer: LineFramer,
    partial: Zeroizing<Vec<u8>>,
    literal_left: usize,
    announced: Option<LiteralAnnouncement>,
    literals: usize,
    longest_line: usize,
}

impl CommandReader {
    /// `line_max`: the longest line accepted (literals are bounded by the caller's decision).
    pub fn new(line_max: usize) -> Self {
        CommandReader {
            framer: LineFramer::new(line_max),
            partial: Zeroizing::new(Vec::new()),
            literal_left: 0,
            announced: None,
            literals: 0,
            longest_line: 0,
        }
    }

    /// Read as far as the next event.
    pub fn next(&mut self, input: &mut BytesMut) -> ReadEvent {
        loop {
            if let Some(announcement) = self.announced {
                // The caller has not decided yet; ask again rather than read on.
                return ReadEvent::Literal {
                    announcement,
                    count: self.literals,
                };
            }
            if self.literal_left > 0 {
                let n = self.literal_left.min(input.len());
                if n == 0 {
                    return ReadEvent::Incomplete;
                }
                let mut chunk = input.split_to(n);
                self.partial.extend_from_slice(&chunk);
                // A literal may be a password: zero the input bytes it came in.
                chunk[..].zeroize();
                self.literal_left -= n;
                continue;
            }
            match self.framer.next(input) {
                Frame::Incomplete => return ReadEvent::Incomplete,
                Frame::TooLong => {
                    let tag = parse_tag(&self.partial);
                    self.clear();
                    return ReadEvent::TooLong { tag };
                }
                Frame::Line(line) => {
                    self.longest_line = self.longest_line.max(line.len());
                    self.partial.extend_from_slice(&line);
                    if let Some(announcement) = literal_at_end(&line) {
                        self.partial.extend_from_slice(b"\r\n");
                        self.literals += 1;
                        self.announced = Some(announcement);
                        continue;
                    }
                    let bytes = std::mem::take(&mut self.partial);
                    let longest_line = self.longest_line;
                    self.clear();
                    return ReadEvent::Command {
                        bytes,
                        longest_line,
                    };
                }
            }
        }
    }

    /// True while the rest of an overlong line is being dropped: the line crossed the cap
    /// and its end has not come yet.
    pub fn is_discarding(&self) -> bool {
        self.framer.is_discarding()
    }

    /// The command read so far (for its tag and name while a literal waits for a decision).
    pub fn partial(&self) -> &[u8] {
        &self.partial
    }

    /// The longest line of the command read so far.
    pub fn longest_line(&self) -> usize {
        self.longest_line
    }

    /// Take the announced literal's payload next. The caller has checked its size.
    pub fn accept_literal(&mut self) {
        if let Some(a) = self.announced.take() {
            self.literal_left = usize::try_from(a.size).unwrap_or(usize::MAX);
        }
    }

    /// Drop the command whose literal was refused.
    pub fn refuse_literal(&mut self) {
        self.clear();
    }

    /// One raw line (a SASL response), between commands.
    pub fn next_line(&mut self, input: &mut BytesMut) -> Frame {
        self.framer.next(input)
    }

    /// Forget everything (after a TLS upgrade).
    pub fn reset(&mut self) {
        self.clear();
        self.framer.reset();
    }

    fn clear(&mut self) {
        self.partial = Zeroizing::new(Vec::new());
        self.literal_left = 0;
        self.announced = None;
        self.literals = 0;
        self.longest_line = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed chunks, accepting every literal; collect commands, literal sizes and overlong lines.
    fn read_all(chunks: &[&[u8]]) -> Vec<String> {
        let mut r = CommandReader::new(64);
        let mut buf = BytesMut::new();
        let mut seen = Vec::new();
        for c in chunks {
            buf.extend_from_slice(c);
            loop {
                match r.next(&mut buf) {
                    ReadEvent::Incomplete => break,
                    ReadEvent::Command { bytes, .. } => {
                        seen.push(format!("cmd {:?}", String::from_utf8_lossy(&bytes)))
                    }
                    ReadEvent::Literal {
                        announcement,
                        count,
                    } => {
                        seen.push(format!("lit {} #{count}", announcement.size));
                        r.accept_literal();
                    }
                    ReadEvent::TooLong { tag } => seen.push(format!("long {tag:?}")),
                }
            }
        }
        seen
    }

    #[test]
    fn literals_are_copied_by_length_and_the_command_continues() {
        let input: &[u8] = b"TAG1 LOGIN \"u\" {11}\r\nabcde\nfghij\r\nA2 LOGIN {2+}\r\n\r\n {1}\r\n}\r\nA3 NOOP\r\n";
        let want = vec![
            "lit 11 #1".to_string(),
            "cmd \"TAG1 LOGIN \\\"u\\\" {11}\\r\\nabcde\\nfghij\"".into(),
            "lit 2 #1".into(),
            "lit 1 #2".into(),
            "cmd \"A2 LOGIN {2+}\\r\\n\\r\\n {1}\\r\\n}\"".into(),
            "cmd \"A3 NOOP\"".into(),
        ];
        assert_eq!(read_all(&[input]), want);
        for i in 0..input.len() {
            let (a, b) = input.split_at(i);
            assert_eq!(read_all(&[a, b]), want, "split at {i}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(read_all(&bytes), want);
    }

    #[test]
    fn overlong_lines_report_the_tag_when_known() {
        let long = [b'x'; 100];
        let mut input = b"A1 LOGIN {1}\r\nu ".to_vec();
        input.extend_from_slice(&long);
        input.extend_from_slice(b"\r\n");
        input.extend_from_slice(&long);
        input.extend_from_slice(b"\r\nA2 NOOP\r\n");
        assert_eq!(
            read_all(&[&input]),
            vec![
                "lit 1 #1".to_string(),
                "long Some(Tag(A1))".into(),
                "long None".into(),
                "cmd \"A2 NOOP\"".into(),
            ]
        );
    }

    #[test]
    fn nothing_past_the_command_is_taken() {
        let mut r = CommandReader::new(64);
        let mut buf = BytesMut::from(&b"A1 LOGIN u {1+}\r\np\r\nA2 SELECT INBOX\r\n"[..]);
        assert!(matches!(r.next(&mut buf), ReadEvent::Literal { .. }));
        // undecided: asked again, nothing consumed
        assert!(matches!(r.next(&mut buf), ReadEvent::Literal { .. }));
        assert_eq!(&buf[..], b"p\r\nA2 SELECT INBOX\r\n");
        r.accept_literal();
        assert!(matches!(r.next(&mut buf), ReadEvent::Command { .. }));
        assert_eq!(&buf[..], b"A2 SELECT INBOX\r\n");
    }
}
