//! Line framing with a hard cap, shared by every protocol machine.
//!
//! A line ends at LF; a CR before it is dropped. An overlong line is never buffered: its bytes
//! are discarded as they arrive and, once its LF comes, reported as [`Frame::TooLong`] so the
//! machine can answer it in order with the other commands.
//!
//! Lines before login carry passwords: a framed line's bytes are zeroed when its last handle is
//! dropped ([`wiping_bytes`]), and discarded bytes are zeroed before they are let go.

use bytes::{Bytes, BytesMut};
use zeroize::Zeroize;

use crate::secret::wiping_bytes;

/// One framing result.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete line without its CRLF/LF.
    Line(Bytes),
    /// No complete line buffered yet.
    Incomplete,
    /// A line longer than the cap ended (its bytes were dropped).
    TooLong,
}

/// Splits a byte stream into lines of at most `max` octets (excluding the line end).
#[derive(Debug, Clone)]
pub struct LineFramer {
    max: usize,
    discarding: bool,
    /// How far `buf` has been searched for LF already (avoids rescanning on every read).
    scanned: usize,
}

impl LineFramer {
    pub fn new(max: usize) -> Self {
        LineFramer {
            max,
            discarding: false,
            scanned: 0,
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Take the next line out of `buf`.
    pub fn next(&mut self, buf: &mut BytesMut) -> Frame {
        match memchr::memchr(b'\n', &buf[self.scanned..]) {
            Some(pos) => {
                let end = self.scanned + pos;
                self.scanned = 0;
                let mut line = buf.split_to(end + 1);
                if self.discarding {
                    self.discarding = false;
                    line[..].zeroize();
                    return Frame::TooLong;
                }
                line.truncate(end);
                if line.last() == Some(&b'\r') {
                    line.truncate(end - 1);
                }
                if line.len() > self.max {
                    line[..].zeroize();
                    return Frame::TooLong;
                }
                Frame::Line(wiping_bytes(line))
            }
            None => {
                // Keep one byte more than the cap: it may be the CR of a CRLF split by a read.
                if buf.len() > self.max + 1 {
                    self.discarding = true;
                    buf[..].zeroize();
                    buf.clear();
                    self.scanned = 0;
                } else {
                    self.scanned = buf.len();
                }
                Frame::Incomplete
            }
        }
    }

    /// Forget any partial state (after a TLS upgrade).
    pub fn reset(&mut self) {
        self.discarding = false;
        self.scanned = 0;
    }

    /// True while the rest of an overlong line is being dropped.
    pub fn is_discarding(&self) -> bool {
        self.discarding
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(max: usize, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut f = LineFramer::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for c in chunks {
            buf.extend_from_slice(c);
            loop {
                match f.next(&mut buf) {
                    Frame::Incomplete => break,
                    fr => out.push(fr),
                }
            }
        }
        out
    }

    fn line(s: &str) -> Frame {
        Frame::Line(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn splits_crlf_and_bare_lf() {
        assert_eq!(
            frames(100, &[b"EHLO a\r\nNOOP\nQUIT\r\n"]),
            vec![line("EHLO a"), line("NOOP"), line("QUIT")]
        );
    }

    #[test]
    fn chunking_does_not_change_the_result() {
        let input = b"A1 LOGIN a b\r\nA2 NOOP\r\n".as_slice();
        let whole = frames(100, &[input]);
        for i in 0..input.len() {
            let (a, b) = input.split_at(i);
            assert_eq!(frames(100, &[a, b]), whole, "split at {i}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(frames(100, &bytes), whole);
    }

    #[test]
    fn overlong_line_is_dropped_and_reported_once_in_order() {
        let long = vec![b'x'; 50];
        let mut input = b"NOOP\r\n".to_vec();
        input.extend_from_slice(&long);
        input.extend_from_slice(b"\r\nQUIT\r\n");
        assert_eq!(
            frames(10, &[&input]),
            vec![line("NOOP"), Frame::TooLong, line("QUIT")]
        );
        // Fed a byte at a time the buffer never grows past the cap.
        let mut f = LineFramer::new(10);
        let mut buf = BytesMut::new();
        let mut seen = Vec::new();
        for b in &input {
            buf.extend_from_slice(&[*b]);
            assert!(buf.len() <= 12);
            loop {
                match f.next(&mut buf) {
                    Frame::Incomplete => break,
                    fr => seen.push(fr),
                }
            }
        }
        assert_eq!(seen, vec![line("NOOP"), Frame::TooLong, line("QUIT")]);
    }

    #[test]
    fn line_of_exactly_max_is_accepted_even_when_cr_arrives_alone() {
        let mut f = LineFramer::new(4);
        let mut buf = BytesMut::from(&b"ABCD\r"[..]);
        assert_eq!(f.next(&mut buf), Frame::Incomplete);
        buf.extend_from_slice(b"\n");
        assert_eq!(f.next(&mut buf), line("ABCD"));
    }
}
