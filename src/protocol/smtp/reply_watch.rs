//! Watching a piped SMTP session's upstream replies for a refusal `crate::diagnosis` knows
//! (`554 5.2.252 SendAsDenied` after DATA, `5.7.3`, `5.7.60`, Exchange's concurrency throttling,
//! …), so the session can log the fix once. Sans-I/O: bytes in (as the pipe reads them, split
//! anywhere), at most one [`Refusal`] out.
//!
//! Only the upstream→client direction is fed, which in SMTP carries replies and nothing of the
//! message. Cheap and bounded: a line not starting with `4` or `5` is skipped without copying;
//! of a refusal line at most [`MAX_LINE`] bytes are kept; after the first refusal recognised the
//! watch is over and [`ReplyWatch::feed`] returns at once.

use crate::diagnosis::{self, Known};

/// Bytes of one reply line kept for recognition (codes and Exchange's keywords come first).
pub const MAX_LINE: usize = 512;

/// A recognised refusal.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The reply code (`554`).
    pub code: u16,
    /// The reply line, lossy UTF-8 without control characters, at most [`MAX_LINE`] bytes.
    pub text: String,
    /// What it means and how to fix it.
    pub known: &'static Known,
}

impl PartialEq for Refusal {
    fn eq(&self, other: &Refusal) -> bool {
        self.code == other.code && self.text == other.text && self.known.id == other.known.id
    }
}

impl Eq for Refusal {}

/// Where the watch is within the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// At the start of a line.
    Start,
    /// Inside a line that starts with 4 or 5: collecting it.
    Collecting,
    /// Inside a line that is not a refusal: waiting for its end.
    Skipping,
}

/// Watches one session's upstream replies.
#[derive(Debug)]
pub struct ReplyWatch {
    line: Vec<u8>,
    state: Line,
    done: bool,
}

impl Default for ReplyWatch {
    fn default() -> Self {
        ReplyWatch::new()
    }
}

impl ReplyWatch {
    pub fn new() -> ReplyWatch {
        ReplyWatch {
            line: Vec::new(),
            state: Line::Start,
            done: false,
        }
    }

    /// True once a refusal was reported: nothing more is looked at.
    pub fn done(&self) -> bool {
        self.done
    }

    /// Bytes the upstream sent, in order. Returns the first recognised refusal (once per watch).
    pub fn feed(&mut self, mut bytes: &[u8]) -> Option<Refusal> {
        while !self.done && !bytes.is_empty() {
            if self.state == Line::Start {
                self.state = if matches!(bytes[0], b'4' | b'5') {
                    Line::Collecting
                } else {
                    Line::Skipping
                };
            }
            let end = memchr::memchr(b'\n', bytes);
            let part = &bytes[..end.unwrap_or(bytes.len())];
            if self.state == Line::Collecting {
                let room = MAX_LINE.saturating_sub(self.line.len());
                if self.line.capacity() == 0 {
                    self.line.reserve_exact(MAX_LINE);
                }
                self.line.extend_from_slice(&part[..part.len().min(room)]);
            }
            let end = end?;
            bytes = &bytes[end + 1..];
            let collected = self.state == Line::Collecting;
            self.state = Line::Start;
            if collected {
                let found = judge(&self.line);
                self.line.clear();
                if found.is_some() {
                    self.done = true;
                    self.line = Vec::new();
                    return found;
                }
            }
        }
        None
    }
}

/// A complete line (without its `\n`): a 4xx/5xx reply line that the diagnosis table knows?
fn judge(line: &[u8]) -> Option<Refusal> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let code = line.get(..3)?;
    if !code.iter().all(u8::is_ascii_digit) || !matches!(line.get(3), Some(b' ' | b'-') | None) {
        return None;
    }
    let code = u16::from(code[0] - b'0') * 100
        + u16::from(code[1] - b'0') * 10
        + u16::from(code[2] - b'0');
    let mut text = String::from_utf8_lossy(line).into_owned();
    text.retain(|c| !c.is_control());
    let known = diagnosis::recognise(&text)?;
    Some(Refusal { code, text, known })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEND_AS: &[u8] = b"554 5.2.252 SendAsDenied; tickets@contoso.com not allowed to send as boss@contoso.com; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied\r\n";

    /// Every way of cutting `input` in two and in single bytes gives the same result as one read.
    fn all_splits(input: &[u8]) -> Option<Refusal> {
        let whole = ReplyWatch::new().feed(input);
        for cut in 0..=input.len() {
            let mut w = ReplyWatch::new();
            let r = w.feed(&input[..cut]).or_else(|| w.feed(&input[cut..]));
            assert_eq!(r, whole, "cut at {cut}");
        }
        let mut w = ReplyWatch::new();
        let bytewise = input.chunks(1).find_map(|b| w.feed(b));
        assert_eq!(bytewise, whole);
        whole
    }

    #[test]
    fn table() {
        type Case<'a> = (&'a [u8], Option<(&'a str, u16)>);
        let cases: &[Case] = &[
            (SEND_AS, Some(("send_as_denied", 554))),
            (
                b"250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n354 Start mail input\r\n",
                None,
            ),
            // After the ordinary replies of a transaction.
            (
                &[
                    &b"250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n354 go\r\n"[..],
                    SEND_AS,
                ]
                .concat(),
                Some(("send_as_denied", 554)),
            ),
            // Multi-line: the keyword on a continuation line.
            (
                b"550-5.7.60 SMTP; Client does not have permissions\r\n550 to send as this sender\r\n",
                Some(("send_as_mail_from", 550)),
            ),
            (
                b"550-first line\r\n550 5.7.64 TenantAttribution; Relay Access Denied [h]\r\n",
                Some(("tenant_attribution", 550)),
            ),
            (
                b"432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded [h]\r\n",
                Some(("smtp_concurrency_limit", 432)),
            ),
            (
                b"550 5.7.68 TenantInboundAttribution; Direct Send not allowed for this organization from unauthorized sources [h]\r\n",
                Some(("reject_direct_send", 550)),
            ),
            // Bare LF endings.
            (b"250 ok\n554 5.2.252 SendAsDenied\n", Some(("send_as_denied", 554))),
            // An unknown refusal, a success line naming a code, an incomplete line.
            (b"550 5.1.1 User unknown\r\n", None),
            (b"250 2.0.0 OK 5.2.252 SendAsDenied mentioned\r\n", None),
            (b"554 5.2.252 SendAsDenied", None),
            (b"", None),
            (b"5\r\n", None),
        ];
        for (input, want) in cases {
            let got = all_splits(input).map(|r| (r.known.id, r.code));
            assert_eq!(got, *want, "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn reports_once_then_stops_looking() {
        let mut w = ReplyWatch::new();
        assert!(w.feed(SEND_AS).is_some());
        assert!(w.done());
        assert!(w.feed(SEND_AS).is_none());
    }

    /// Cost of the watch on a session's reply stream (not a pass/fail test: run with
    /// `cargo test --release --lib reply_watch::tests::cost -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn cost() {
        // A GLPI message's replies (MAIL, RCPT, DATA, end of DATA, RSET) and a long EHLO.
        let replies = b"250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n354 Start mail input; end with <CRLF>.<CRLF>\r\n250 2.0.0 OK <3c1d3e4b@SB1PR01MB0001.sandbox.outlook.test> [Hostname=SB1PR01MB0001]\r\n250 2.0.0 Resetting\r\n";
        let rounds = 2_000_000u32;
        let mut w = ReplyWatch::new();
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            assert!(w.feed(std::hint::black_box(replies)).is_none());
        }
        let per = start.elapsed() / rounds;
        let refusal = b"550 5.1.1 User unknown; the recipient does not exist here at all\r\n";
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            assert!(w.feed(std::hint::black_box(refusal)).is_none());
        }
        let per_refusal = start.elapsed() / rounds;
        println!(
            "reply watch: {per:?} per message's replies ({} bytes), {per_refusal:?} per unrecognised refusal line",
            replies.len()
        );
    }

    #[test]
    fn long_lines_are_bounded() {
        // A refusal line far longer than the bound: its start is judged, the rest skipped.
        let mut long = b"554 5.2.252 SendAsDenied; ".to_vec();
        long.extend(std::iter::repeat_n(b'x', 1 << 20));
        long.extend_from_slice(b"\r\n");
        let mut w = ReplyWatch::new();
        let r = w.feed(&long[..700_000]);
        assert!(r.is_none());
        assert!(w.line.len() <= MAX_LINE && w.line.capacity() <= MAX_LINE * 2);
        let r = w.feed(&long[700_000..]).unwrap();
        assert_eq!(r.known.id, "send_as_denied");
        assert!(r.text.len() <= MAX_LINE);
        // The keyword past the bound is not seen (the bound is the bound).
        let mut late = b"554 ".to_vec();
        late.extend(std::iter::repeat_n(b'x', MAX_LINE));
        late.extend_from_slice(b" SendAsDenied\r\n");
        assert!(all_splits(&late).is_none());
        // Long non-refusal lines are never copied.
        let mut w = ReplyWatch::new();
        let mut ok = b"250 ".to_vec();
        ok.extend(std::iter::repeat_n(b'y', 100_000));
        assert!(w.feed(&ok).is_none());
        assert_eq!(w.line.capacity(), 0);
    }
}
