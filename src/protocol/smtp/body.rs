//! Message bodies after `354` (RFC 5321 §4.1.1.4, §2.3.8): finding their end and checking their
//! line ends as they stream, with constant state whatever the body's size.
//!
//! - [`BodyCheck`] passes a body on byte for byte while every line ends in CRLF, and stops at
//!   the first bare CR or bare LF. A CR is held back until the byte after it is known, so what
//!   it has passed on is always a clean prefix of the body: no bare CR or LF, and no `CRLF .
//!   CRLF` other than the real end.
//! - [`EndScanner`] finds `CRLF . CRLF` without checking anything, to read a refused body to
//!   the end the client gives it.

/// Finds the end of a body: `CRLF . CRLF`, where the body start counts as a line start. Only
/// CRLF counts as a line end.
#[derive(Debug, Clone)]
pub struct EndScanner {
    /// 0 mid-line, 1 after CR, 2 at line start, 3 after "." at line start, 4 after ".CR".
    state: u8,
}

impl EndScanner {
    /// At the start of a body.
    pub fn new() -> Self {
        EndScanner { state: 2 }
    }

    /// In the middle of a line (after a bare CR or LF: not a line start).
    pub fn mid_line() -> Self {
        EndScanner { state: 0 }
    }

    /// The number of bytes of `chunk` up to and including the terminator, if it is in there.
    pub fn feed(&mut self, chunk: &[u8]) -> Option<usize> {
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

impl Default for EndScanner {
    fn default() -> Self {
        Self::new()
    }
}

/// A line end that is not CRLF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bare {
    Cr,
    Lf,
}

/// What [`BodyCheck::feed`] found in a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEvent {
    /// All of the chunk was taken; the body goes on.
    More,
    /// The body ended: this many bytes of the chunk (the terminator included) were taken.
    End(usize),
    /// A bare CR or LF: the bytes before `at` were taken. The byte at `at` is the bare LF, or
    /// the byte after a bare CR; the end of the refused body is to be looked for from there
    /// with [`EndScanner::mid_line`].
    Bare { at: usize, kind: Bare },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pos {
    LineStart,
    /// After "." at a line start.
    Dot,
    Text,
    /// After a CR (held back).
    Cr,
    /// After ".CR" at a line start (the CR held back).
    DotCr,
}

/// Checks a body as it streams; see the module doc.
#[derive(Debug, Clone)]
pub struct BodyCheck {
    pos: Pos,
}

impl BodyCheck {
    pub fn new() -> Self {
        BodyCheck {
            pos: Pos::LineStart,
        }
    }

    /// Take bytes of `chunk`, appending those known to be clean to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> BodyEvent {
        let mut i = 0;
        while i < chunk.len() {
            match self.pos {
                Pos::Text => match memchr::memchr2(b'\r', b'\n', &chunk[i..]) {
                    None => {
                        out.extend_from_slice(&chunk[i..]);
                        return BodyEvent::More;
                    }
                    Some(p) => {
                        out.extend_from_slice(&chunk[i..i + p]);
                        i += p;
                        if chunk[i] == b'\n' {
                            return BodyEvent::Bare {
                                at: i,
                                kind: Bare::Lf,
                            };
                        }
                        self.pos = Pos::Cr;
                        i += 1;
                    }
                },
                Pos::LineStart | Pos::Dot => {
                    let b = chunk[i];
                    match b {
                        b'\r' => {
                            self.pos = if self.pos == Pos::Dot {
                                Pos::DotCr
                            } else {
                                Pos::Cr
                            };
                        }
                        b'\n' => {
                            return BodyEvent::Bare {
                                at: i,
                                kind: Bare::Lf,
                            };
                        }
                        b'.' if self.pos == Pos::LineStart => {
                            out.push(b);
                            self.pos = Pos::Dot;
                        }
                        _ => {
                            out.push(b);
                            self.pos = Pos::Text;
                        }
                    }
                    i += 1;
                }
                Pos::Cr | Pos::DotCr => {
                    if chunk[i] != b'\n' {
                        return BodyEvent::Bare {
                            at: i,
                            kind: Bare::Cr,
                        };
                    }
                    out.extend_from_slice(b"\r\n");
                    i += 1;
                    if self.pos == Pos::DotCr {
                        return BodyEvent::End(i);
                    }
                    self.pos = Pos::LineStart;
                }
            }
        }
        BodyEvent::More
    }
}

impl Default for BodyCheck {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_scanner_in_any_chunking() {
        let body = b"Subject: x\r\n\r\n..stuffed\r\nlast\r\n.\r\nQUIT\r\n";
        let end = body.len() - 6;
        for split in 0..body.len() {
            let mut s = EndScanner::new();
            let (a, b) = body.split_at(split);
            let got = match s.feed(a) {
                Some(n) => n,
                None => split + s.feed(b).expect("terminator found"),
            };
            assert_eq!(got, end, "split at {split}");
        }
        // An empty body is just ".\r\n".
        assert_eq!(EndScanner::new().feed(b".\r\n"), Some(3));
        // A dot inside a line is not a terminator.
        assert_eq!(EndScanner::new().feed(b"a.\r\nb\r\n.x\r\n"), None);
        // Mid-line, a dot right away is not at a line start.
        assert_eq!(EndScanner::mid_line().feed(b".\r\n"), None);
        assert_eq!(EndScanner::mid_line().feed(b"\r\n.\r\n"), Some(5));
    }

    /// Feed `chunks`; return what was passed on and the first event that is not `More`
    /// (its position counted from the start of the whole input).
    fn check(chunks: &[&[u8]]) -> (Vec<u8>, Option<BodyEvent>) {
        let mut c = BodyCheck::new();
        let mut out = Vec::new();
        let mut offset = 0;
        for chunk in chunks {
            match c.feed(chunk, &mut out) {
                BodyEvent::More => offset += chunk.len(),
                BodyEvent::End(n) => return (out, Some(BodyEvent::End(offset + n))),
                BodyEvent::Bare { at, kind } => {
                    return (
                        out,
                        Some(BodyEvent::Bare {
                            at: offset + at,
                            kind,
                        }),
                    );
                }
            }
        }
        (out, None)
    }

    #[test]
    fn body_check_table() {
        use Bare::*;
        let cases: &[(&[u8], &[u8], Option<BodyEvent>)] = &[
            (b".\r\n", b".\r\n", Some(BodyEvent::End(3))),
            (b"a\r\n.\r\nNEXT", b"a\r\n.\r\n", Some(BodyEvent::End(6))),
            (
                b"..x\r\n.y\r\n\r\n.\r\n",
                b"..x\r\n.y\r\n\r\n.\r\n",
                Some(BodyEvent::End(14)),
            ),
            (b"a.\r\n", b"a.\r\n", None),
            (b"abc\r", b"abc", None),
            (b"abc\r\n.\r", b"abc\r\n.", None),
            // SMTP smuggling: what a lenient receiver takes for the end.
            (
                b"hello\n.\r\nMAIL FROM:<x@y>\r\n",
                b"hello",
                Some(BodyEvent::Bare { at: 5, kind: Lf }),
            ),
            (
                b"hello\n.\nMAIL FROM:<x@y>\r\n",
                b"hello",
                Some(BodyEvent::Bare { at: 5, kind: Lf }),
            ),
            (
                b"hello\r\n.\nMAIL",
                b"hello\r\n.",
                Some(BodyEvent::Bare { at: 8, kind: Lf }),
            ),
            (
                b"hello\r.\rMAIL",
                b"hello",
                Some(BodyEvent::Bare { at: 6, kind: Cr }),
            ),
            (
                b"hello\r\n.\rMAIL",
                b"hello\r\n.",
                Some(BodyEvent::Bare { at: 9, kind: Cr }),
            ),
            (b"\n", b"", Some(BodyEvent::Bare { at: 0, kind: Lf })),
            (b".\n", b".", Some(BodyEvent::Bare { at: 1, kind: Lf })),
            (
                b"a\r\r\n.\r\n",
                b"a",
                Some(BodyEvent::Bare { at: 2, kind: Cr }),
            ),
            (
                b"a\r\n\n",
                b"a\r\n",
                Some(BodyEvent::Bare { at: 3, kind: Lf }),
            ),
        ];
        for (body, passed, event) in cases {
            let shown = String::from_utf8_lossy(body);
            for split in 0..=body.len() {
                let (a, b) = body.split_at(split);
                let got = check(&[a, b]);
                assert_eq!(
                    (got.0.as_slice(), got.1),
                    (*passed, *event),
                    "{shown:?} split at {split}"
                );
            }
            let bytes: Vec<&[u8]> = body.chunks(1).collect();
            let got = check(&bytes);
            assert_eq!(
                (got.0.as_slice(), got.1),
                (*passed, *event),
                "{shown:?} byte by byte"
            );
        }
    }

    /// What passes never holds a bare CR or LF, whatever the input.
    #[test]
    fn what_passes_is_always_clean() {
        let samples: &[&[u8]] = &[
            b"a\rb\nc\r\n\r\r\n\n.\r.\n",
            b"\r\r\r\n\n\n",
            b"x\r\ny\r\nz\n\r",
        ];
        for s in samples {
            for start in 0..s.len() {
                let (out, _) = check(&[&s[start..]]);
                for (i, b) in out.iter().enumerate() {
                    match b {
                        b'\r' => assert_eq!(out.get(i + 1), Some(&b'\n')),
                        b'\n' => assert!(i > 0 && out[i - 1] == b'\r'),
                        _ => {}
                    }
                }
            }
        }
    }
}
