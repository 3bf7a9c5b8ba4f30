//! Server responses as the upstream sends them (RFC 3501 §7, §9 `response`), and a reader that
//! frames them: a line, plus, for untagged responses, any literal announced at a line's end
//! (`{N}` CRLF and N bytes, then the rest of the response), all under hard caps.

use bytes::BytesMut;

use super::command::{Tag, literal_at_end};
use crate::protocol::line::{Frame, LineFramer};

/// Completion status of a tagged response (RFC 3501 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
}

/// One response line, classified.
#[derive(Debug, PartialEq, Eq)]
pub enum Response<'a> {
    /// `+ text` or a bare `+` (RFC 3501 §7.5); the text after `+ `.
    Continuation(&'a [u8]),
    /// `* …`: the text after `* `.
    Untagged(&'a [u8]),
    /// `tag SP (OK / NO / BAD) [SP resp-text]`.
    Tagged {
        tag: &'a [u8],
        status: Status,
        text: &'a [u8],
    },
}

/// Classify one response line (without CRLF). `None`: not an IMAP response.
pub fn parse_response(line: &[u8]) -> Option<Response<'_>> {
    if let Some(rest) = line.strip_prefix(b"+") {
        return Some(Response::Continuation(
            rest.strip_prefix(b" ").unwrap_or(rest),
        ));
    }
    if let Some(rest) = line.strip_prefix(b"* ") {
        return Some(Response::Untagged(rest));
    }
    let space = line.iter().position(|b| *b == b' ')?;
    let (tag, rest) = line.split_at(space);
    Tag::parse(tag)?;
    let rest = rest.get(1..).unwrap_or_default();
    let (word, text) = split_word(rest);
    let status = match word.to_ascii_uppercase().as_slice() {
        b"OK" => Status::Ok,
        b"NO" => Status::No,
        b"BAD" => Status::Bad,
        _ => return None,
    };
    Some(Response::Tagged { tag, status, text })
}

/// The greeting (RFC 3501 §7.1: `* OK`, `* PREAUTH` or `* BYE`).
#[derive(Debug, PartialEq, Eq)]
pub enum Greeting<'a> {
    /// `* OK text`.
    Ok(&'a [u8]),
    PreAuth,
    Bye(&'a [u8]),
}

/// Classify an untagged greeting (the text after `* `).
pub fn parse_greeting(untagged: &[u8]) -> Option<Greeting<'_>> {
    let (word, text) = split_word(untagged);
    match word.to_ascii_uppercase().as_slice() {
        b"OK" => Some(Greeting::Ok(text)),
        b"PREAUTH" => Some(Greeting::PreAuth),
        b"BYE" => Some(Greeting::Bye(text)),
        _ => None,
    }
}

/// `CAPABILITY atom…` (an untagged response, RFC 3501 §7.2.1) → the atoms.
pub fn untagged_capability(untagged: &[u8]) -> Option<Vec<String>> {
    let (word, text) = split_word(untagged);
    word.eq_ignore_ascii_case(b"CAPABILITY")
        .then(|| atoms(text))
}

/// A `[CAPABILITY atom…]` response code leading a resp-text (RFC 3501 §7.1) → the atoms.
pub fn capability_code(text: &[u8]) -> Option<Vec<String>> {
    let inner = text.strip_prefix(b"[")?;
    let end = inner.iter().position(|b| *b == b']')?;
    let (code, _) = inner.split_at(end);
    untagged_capability(code)
}

/// `true` when `caps` holds `name` (capability names are case-insensitive).
pub fn has_capability(caps: &[String], name: &str) -> bool {
    caps.iter().any(|c| c.eq_ignore_ascii_case(name))
}

/// Whether an untagged response is `BYE`.
pub fn is_bye(untagged: &[u8]) -> bool {
    split_word(untagged).0.eq_ignore_ascii_case(b"BYE")
}

/// Text after the first word of an untagged response, for logs.
pub fn untagged_text(untagged: &[u8]) -> &[u8] {
    split_word(untagged).1
}

fn atoms(text: &[u8]) -> Vec<String> {
    text.split(|b| *b == b' ')
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The first space-separated word and the rest after one space.
fn split_word(s: &[u8]) -> (&[u8], &[u8]) {
    match s.iter().position(|b| *b == b' ') {
        Some(i) => {
            let (word, rest) = s.split_at(i);
            (word, rest.get(1..).unwrap_or_default())
        }
        None => (s, &[]),
    }
}

/// What [`ResponseReader::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum ResponseEvent {
    Incomplete,
    /// One whole response: its first line (no CRLF) and its bytes as they go on the wire
    /// (CRLF-terminated, literals included).
    Response {
        first_line: Vec<u8>,
        raw: Vec<u8>,
    },
    /// A line was longer than the cap.
    TooLong,
    /// A literal, or the response as a whole, was larger than the caps.
    TooBig,
}

/// Frames upstream responses under caps: line length, literal size, response size.
#[derive(Debug)]
pub struct ResponseReader {
    framer: LineFramer,
    literal_max: usize,
    response_max: usize,
    first_line: Option<Vec<u8>>,
    raw: Vec<u8>,
    literal_left: usize,
}

impl ResponseReader {
    pub fn new(line_max: usize, literal_max: usize, response_max: usize) -> Self {
        ResponseReader {
            framer: LineFramer::new(line_max),
            literal_max,
            response_max,
            first_line: None,
            raw: Vec::new(),
            literal_left: 0,
        }
    }

    pub fn next(&mut self, input: &mut BytesMut) -> ResponseEvent {
        loop {
            if self.literal_left > 0 {
                let n = self.literal_left.min(input.len());
                if n == 0 {
                    return ResponseEvent::Incomplete;
                }
                self.raw.extend_from_slice(&input.split_to(n));
                self.literal_left -= n;
                continue;
            }
            let line = match self.framer.next(input) {
                Frame::Incomplete => return ResponseEvent::Incomplete,
                Frame::TooLong => {
                    self.reset();
                    return ResponseEvent::TooLong;
                }
                Frame::Line(line) => line,
            };
            self.raw.extend_from_slice(&line);
            self.raw.extend_from_slice(b"\r\n");
            if self.raw.len() > self.response_max {
                self.reset();
                return ResponseEvent::TooBig;
            }
            let first = self.first_line.get_or_insert_with(|| line.to_vec());
            // Only untagged responses carry literals (RFC 3501 §9: resp-text has none).
            let literal = if first.starts_with(b"* ") {
                literal_at_end(&line)
            } else {
                None
            };
            match literal {
                Some(announced) => {
                    let size = usize::try_from(announced.size).unwrap_or(usize::MAX);
                    if size > self.literal_max
                        || self.raw.len().saturating_add(size) > self.response_max
                    {
                        self.reset();
                        return ResponseEvent::TooBig;
                    }
                    self.literal_left = size;
                }
                None => {
                    let first_line = self.first_line.take().unwrap_or_default();
                    let raw = std::mem::take(&mut self.raw);
                    return ResponseEvent::Response { first_line, raw };
                }
            }
        }
    }

    /// Forget any partial response (after a TLS upgrade or an error).
    pub fn reset(&mut self) {
        self.framer.reset();
        self.first_line = None;
        self.raw.clear();
        self.literal_left = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_exchange_and_dovecot_lines() {
        use Response::*;
        let cases: &[(&[u8], Option<Response<'_>>)] = &[
            (
                b"* OK The Microsoft Exchange IMAP4 service is ready. [TQBOADIAUABSADAA]",
                Some(Untagged(
                    b"OK The Microsoft Exchange IMAP4 service is ready. [TQBOADIAUABSADAA]",
                )),
            ),
            (
                b"A2 OK AUTHENTICATE completed.",
                Some(Tagged {
                    tag: b"A2",
                    status: Status::Ok,
                    text: b"AUTHENTICATE completed.",
                }),
            ),
            (
                b"A2 NO AUTHENTICATE failed.",
                Some(Tagged {
                    tag: b"A2",
                    status: Status::No,
                    text: b"AUTHENTICATE failed.",
                }),
            ),
            (
                b"a1 bad",
                Some(Tagged {
                    tag: b"a1",
                    status: Status::Bad,
                    text: b"",
                }),
            ),
            (b"+ ", Some(Continuation(b""))),
            (b"+", Some(Continuation(b""))),
            (
                b"+ eyJzdGF0dXMiOiI0MDEifQ==",
                Some(Continuation(b"eyJzdGF0dXMiOiI0MDEifQ==")),
            ),
            (b"A2 MAYBE x", None),
            (b"A2", None),
            (b"", None),
            (b"*", None),
            (b"(x) OK", None),
        ];
        for (line, want) in cases {
            assert_eq!(
                parse_response(line),
                *want,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn greetings_and_capabilities() {
        assert_eq!(
            parse_greeting(b"OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2] Dovecot ready."),
            Some(Greeting::Ok(
                b"[CAPABILITY IMAP4rev1 AUTH=XOAUTH2] Dovecot ready."
            ))
        );
        assert_eq!(parse_greeting(b"PREAUTH hi"), Some(Greeting::PreAuth));
        assert_eq!(
            parse_greeting(b"BYE go away"),
            Some(Greeting::Bye(b"go away"))
        );
        assert_eq!(parse_greeting(b"NO"), None);
        assert_eq!(
            capability_code(b"[CAPABILITY IMAP4rev1  AUTH=XOAUTH2] Dovecot ready."),
            Some(vec!["IMAP4rev1".to_string(), "AUTH=XOAUTH2".into()])
        );
        assert_eq!(
            capability_code(b"The Microsoft Exchange IMAP4 service is ready. [x]"),
            None
        );
        assert_eq!(capability_code(b"[CAPABILITY IMAP4rev1"), None);
        assert_eq!(capability_code(b"[ALERT] x"), None);
        assert_eq!(
            untagged_capability(b"capability IMAP4 SASL-IR"),
            Some(vec!["IMAP4".to_string(), "SASL-IR".into()])
        );
        assert_eq!(untagged_capability(b"FLAGS ()"), None);
        assert!(is_bye(b"BYE Autologout"));
        assert!(!is_bye(b"OK x"));
    }

    fn read_all(r: &mut ResponseReader, chunks: &[&[u8]]) -> Vec<ResponseEvent> {
        let mut buf = BytesMut::new();
        let mut seen = Vec::new();
        for c in chunks {
            buf.extend_from_slice(c);
            loop {
                match r.next(&mut buf) {
                    ResponseEvent::Incomplete => break,
                    e => seen.push(e),
                }
            }
        }
        seen
    }

    #[test]
    fn untagged_literals_are_read_by_length() {
        let input: &[u8] = b"* 1 FETCH (BODY[] {9}\r\nab\r\n{3}\r\n)\r\n+ {5}\r\nA1 OK x {2}\r\n";
        let want = vec![
            ResponseEvent::Response {
                first_line: b"* 1 FETCH (BODY[] {9}".to_vec(),
                raw: b"* 1 FETCH (BODY[] {9}\r\nab\r\n{3}\r\n)\r\n".to_vec(),
            },
            ResponseEvent::Response {
                first_line: b"+ {5}".to_vec(),
                raw: b"+ {5}\r\n".to_vec(),
            },
            ResponseEvent::Response {
                first_line: b"A1 OK x {2}".to_vec(),
                raw: b"A1 OK x {2}\r\n".to_vec(),
            },
        ];
        assert_eq!(
            read_all(&mut ResponseReader::new(100, 100, 1000), &[input]),
            want
        );
        for i in 0..input.len() {
            let (a, b) = input.split_at(i);
            let got = read_all(&mut ResponseReader::new(100, 100, 1000), &[a, b]);
            assert_eq!(got, want, "split at {i}");
        }
    }

    #[test]
    fn caps_hold() {
        let mut r = ResponseReader::new(100, 10, 1000);
        assert_eq!(
            read_all(&mut r, &[b"* 1 FETCH (BODY[] {4294967295}\r\n"]),
            vec![ResponseEvent::TooBig]
        );
        let mut r = ResponseReader::new(10, 10, 1000);
        assert_eq!(
            read_all(&mut r, &[b"* 01234567890123456789\r\n* OK\r\n"]),
            vec![
                ResponseEvent::TooLong,
                ResponseEvent::Response {
                    first_line: b"* OK".to_vec(),
                    raw: b"* OK\r\n".to_vec()
                }
            ]
        );
        let mut r = ResponseReader::new(100, 100, 30);
        let seen = read_all(&mut r, &[b"* X {9}\r\n123456789 {9}\r\n123456789\r\n"]);
        assert_eq!(seen.first(), Some(&ResponseEvent::TooBig));
    }
}
