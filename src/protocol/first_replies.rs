//! A watch over the upstream's first replies after login (sans-I/O): Exchange accepts the
//! XOAUTH2 login of a token that may not open the mailbox and answers every later command with
//! `BAD User is authenticated but not connected.` (IMAP) or `-ERR User is authenticated but
//! not connected.` (POP3). Instead of spending a round trip on a probe command at every login,
//! the pipe passes the upstream's bytes through this watcher until the first replies show
//! whether the mailbox opened; then it copies without looking.
//!
//! Bytes in, bytes out: complete lines are passed on as they are, an incomplete line is held
//! back (at most [`LINE_MAX`] bytes) until its end shows whether it must be replaced. The watch
//! ends ([`Verdict::Done`]) at the first successful status reply (IMAP tagged `OK`, POP3 `+OK`),
//! at a literal or a line longer than [`LINE_MAX`] (mailbox data flows), after [`REPLIES_MAX`]
//! status replies or [`BYTES_MAX`] bytes. When the refusal is seen, its line is replaced with
//! the temporary-class reply of docs/replies.md (IMAP `<tag> NO [UNAVAILABLE] …` and `* BYE`,
//! POP3 `-ERR [SYS/TEMP] …`) and the session is to end: nothing else will work on it.

use crate::limits::first_replies::{BYTES_MAX, LINE_MAX, REPLIES_MAX};
use crate::protocol::one_line;

/// The phrase Exchange's refusal carries (matched without regard to case).
const NOT_CONNECTED: &[u8] = b"authenticated but not connected";

/// Which protocol's replies are watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchKind {
    Imap,
    Pop3,
}

/// The state of the watch after a call to [`FirstReplies::feed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Still looking; everything that can be passed on is in `out`.
    Watching,
    /// The mailbox is in use (or the bounds are reached): `out` holds all input, copy the rest
    /// without the watcher.
    Done,
    /// The upstream refused the client's command because the mailbox cannot be opened. `out`
    /// ends with the replacement reply; write it, then end the session. `upstream` is the
    /// upstream's status text, for the log.
    NotConnected { upstream: String },
}

/// Watches the first replies of one session.
#[derive(Debug)]
pub struct FirstReplies {
    kind: WatchKind,
    mailbox: String,
    /// The current, incomplete line.
    line: Vec<u8>,
    replies: u32,
    bytes: usize,
    done: bool,
}

impl FirstReplies {
    /// A watch for a session of `kind` on `mailbox` (named in the replacement reply).
    pub fn new(kind: WatchKind, mailbox: &str) -> FirstReplies {
        FirstReplies {
            kind,
            mailbox: mailbox.to_string(),
            line: Vec::new(),
            replies: 0,
            bytes: 0,
            done: false,
        }
    }

    /// The text the client is given when the mailbox cannot be opened.
    pub fn unavailable_text(mailbox: &str, upstream: &str) -> String {
        format!(
            "the mailbox server accepted the login but cannot open {mailbox} ({upstream}); an administrator must grant access (see the authbridge log)"
        )
    }

    /// Look at the next upstream bytes; what may go to the client is appended to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Verdict {
        if self.done {
            out.extend_from_slice(input);
            return Verdict::Done;
        }
        let mut rest = input;
        while !rest.is_empty() {
            let (chunk, complete) = match rest.iter().position(|b| *b == b'\n') {
                Some(end) => (&rest[..=end], true),
                None => (rest, false),
            };
            rest = &rest[chunk.len()..];
            self.bytes = self.bytes.saturating_add(chunk.len());
            if self.line.len().saturating_add(chunk.len()) > LINE_MAX {
                // A long line is mailbox data, never the refusal.
                return self.finish(chunk, rest, out);
            }
            self.line.extend_from_slice(chunk);
            if !complete {
                break;
            }
            let line = std::mem::take(&mut self.line);
            match self.judge(&line) {
                // The byte bound is checked at line ends, so it does not depend on how the
                // input was chunked.
                Judged::Pass if self.bytes > BYTES_MAX => {
                    out.extend_from_slice(&line);
                    return self.finish(&[], rest, out);
                }
                Judged::Pass => out.extend_from_slice(&line),
                Judged::Done => {
                    out.extend_from_slice(&line);
                    return self.finish(&[], rest, out);
                }
                Judged::Refused { tag, text } => {
                    self.done = true;
                    self.reply(tag.as_deref(), &text, out);
                    return Verdict::NotConnected { upstream: text };
                }
            }
        }
        Verdict::Watching
    }

    /// End the watch: the held line, then `chunk` and `rest`, go out unchanged.
    fn finish(&mut self, chunk: &[u8], rest: &[u8], out: &mut Vec<u8>) -> Verdict {
        self.done = true;
        out.append(&mut self.line);
        out.extend_from_slice(chunk);
        out.extend_from_slice(rest);
        Verdict::Done
    }

    /// One complete line (with its line end).
    fn judge(&mut self, raw: &[u8]) -> Judged {
        let line = trim_eol(raw);
        match self.kind {
            WatchKind::Imap => {
                if ends_with_literal(line) {
                    return Judged::Done;
                }
                if line.starts_with(b"*") || line.starts_with(b"+") {
                    return Judged::Pass;
                }
                let mut words = line.splitn(3, |b| *b == b' ');
                let tag = words.next().unwrap_or_default();
                let status = words.next().unwrap_or_default();
                let text = words.next().unwrap_or_default();
                if status.eq_ignore_ascii_case(b"BAD") && contains_phrase(text) {
                    return Judged::Refused {
                        tag: Some(String::from_utf8_lossy(tag).into_owned()),
                        text: text_of(&line[tag.len().saturating_add(1).min(line.len())..]),
                    };
                }
                self.status_reply(status.eq_ignore_ascii_case(b"OK"))
            }
            WatchKind::Pop3 => {
                if starts_with_ignore_case(line, b"+OK") {
                    return Judged::Done;
                }
                if starts_with_ignore_case(line, b"-ERR") {
                    if contains_phrase(line) {
                        return Judged::Refused {
                            tag: None,
                            text: text_of(line),
                        };
                    }
                    return self.status_reply(false);
                }
                // Only a status line can come first; anything else is not ours to judge.
                Judged::Done
            }
        }
    }

    fn status_reply(&mut self, ok: bool) -> Judged {
        self.replies = self.replies.saturating_add(1);
        if ok || self.replies >= REPLIES_MAX {
            Judged::Done
        } else {
            Judged::Pass
        }
    }

    /// The replacement for the refusal (docs/replies.md).
    fn reply(&self, tag: Option<&str>, upstream: &str, out: &mut Vec<u8>) {
        let text = one_line(&Self::unavailable_text(&self.mailbox, upstream));
        match (self.kind, tag) {
            (WatchKind::Imap, Some(tag)) => {
                out.extend_from_slice(format!("{tag} NO [UNAVAILABLE] {text}\r\n").as_bytes());
                out.extend_from_slice(
                    b"* BYE [UNAVAILABLE] The mailbox cannot be opened; try again later\r\n",
                );
            }
            _ => out.extend_from_slice(format!("-ERR [SYS/TEMP] {text}\r\n").as_bytes()),
        }
    }
}

enum Judged {
    Pass,
    Done,
    Refused { tag: Option<String>, text: String },
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn starts_with_ignore_case(line: &[u8], prefix: &[u8]) -> bool {
    line.get(..prefix.len())
        .is_some_and(|h| h.eq_ignore_ascii_case(prefix))
}

fn contains_phrase(text: &[u8]) -> bool {
    text.windows(NOT_CONNECTED.len())
        .any(|w| w.eq_ignore_ascii_case(NOT_CONNECTED))
}

/// `{N}` or `{N+}` at the end of a line (RFC 3501 §4.3, RFC 7888).
fn ends_with_literal(line: &[u8]) -> bool {
    let Some(inner) = line.strip_suffix(b"}") else {
        return false;
    };
    let inner = inner.strip_suffix(b"+").unwrap_or(inner);
    let digits = inner
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_digit())
        .count();
    digits > 0 && inner.len() > digits && inner[inner.len() - digits - 1] == b'{'
}

fn text_of(bytes: &[u8]) -> String {
    one_line(&String::from_utf8_lossy(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `input` in chunks of `n`; (output, last verdict).
    fn run(kind: WatchKind, input: &[u8], n: usize) -> (Vec<u8>, Verdict) {
        let mut w = FirstReplies::new(kind, "tickets@contoso.com");
        let mut out = Vec::new();
        let mut verdict = Verdict::Watching;
        for chunk in input.chunks(n.max(1)) {
            verdict = w.feed(chunk, &mut out);
            if matches!(verdict, Verdict::NotConnected { .. }) {
                break;
            }
        }
        (out, verdict)
    }

    #[test]
    fn imap_refusal_is_replaced_in_any_chunking() {
        let input = b"* OK [ALERT] hello\r\na2 BAD User is authenticated but not connected.\r\n";
        for n in 1..input.len() {
            let (out, verdict) = run(WatchKind::Imap, input, n);
            let out = String::from_utf8(out).unwrap();
            assert_eq!(
                verdict,
                Verdict::NotConnected {
                    upstream: "BAD User is authenticated but not connected.".into()
                },
                "chunk {n}"
            );
            assert!(
                out.starts_with("* OK [ALERT] hello\r\na2 NO [UNAVAILABLE] the mailbox server accepted the login but cannot open tickets@contoso.com (BAD User is authenticated but not connected.)"),
                "chunk {n}: {out}"
            );
            assert!(
                out.ends_with(
                    "\r\n* BYE [UNAVAILABLE] The mailbox cannot be opened; try again later\r\n"
                ),
                "{out}"
            );
            assert!(!out.contains("a2 BAD"), "{out}");
        }
    }

    #[test]
    fn pop3_refusal_is_replaced() {
        let input = b"-ERR User is authenticated but not connected.\r\n";
        for n in 1..input.len() {
            let (out, verdict) = run(WatchKind::Pop3, input, n);
            assert!(matches!(verdict, Verdict::NotConnected { .. }), "{n}");
            let out = String::from_utf8(out).unwrap();
            assert!(
                out.starts_with("-ERR [SYS/TEMP] the mailbox server accepted the login but cannot open tickets@contoso.com (-ERR User is authenticated but not connected.)"),
                "{out}"
            );
        }
    }

    #[test]
    fn a_served_command_ends_the_watch_and_everything_passes_unchanged() {
        let input: &[u8] = b"* 3 EXISTS\r\na2 OK [READ-WRITE] SELECT completed.\r\na3 BAD User is authenticated but not connected.\r\n";
        for n in 1..input.len() {
            let (out, verdict) = run(WatchKind::Imap, input, n);
            assert_eq!(out, input, "chunk {n}");
            assert_eq!(verdict, Verdict::Done, "chunk {n}");
        }
        let pop: &[u8] = b"+OK 2 320\r\n-ERR User is authenticated but not connected.\r\n";
        let (out, verdict) = run(WatchKind::Pop3, pop, 3);
        assert_eq!((out.as_slice(), verdict), (pop, Verdict::Done));
    }

    #[test]
    fn literals_long_lines_and_many_replies_end_the_watch() {
        let lit: &[u8] = b"* 1 FETCH (BODY[] {5}\r\nhello)\r\n";
        assert_eq!(run(WatchKind::Imap, lit, 4), (lit.to_vec(), Verdict::Done));
        let mut long = vec![b'x'; LINE_MAX + 10];
        long.extend_from_slice(b"\r\n");
        assert_eq!(
            run(WatchKind::Imap, &long, 100),
            (long.clone(), Verdict::Done)
        );
        let mut no = Vec::new();
        for i in 0..REPLIES_MAX {
            no.extend_from_slice(format!("a{i} NO [NONEXISTENT] no such folder\r\n").as_bytes());
        }
        assert_eq!(run(WatchKind::Imap, &no, 7), (no.clone(), Verdict::Done));
        // Past the byte bound the watch stops even inside untagged lines.
        let mut many = Vec::new();
        while many.len() <= BYTES_MAX {
            many.extend_from_slice(b"* 1 EXISTS\r\n");
        }
        assert_eq!(
            run(WatchKind::Imap, &many, 999),
            (many.clone(), Verdict::Done)
        );
    }

    /// The byte bound does not depend on the chunking: a refusal past it passes unchanged
    /// however the bytes come.
    #[test]
    fn the_byte_bound_is_the_same_in_any_chunking() {
        let mut input = Vec::new();
        while input.len() <= BYTES_MAX {
            input.extend_from_slice(b"* 1 EXISTS\r\n");
        }
        input.extend_from_slice(b"a2 BAD User is authenticated but not connected.\r\n");
        for n in [1, 7, 4096, BYTES_MAX, BYTES_MAX + 3, input.len()] {
            assert_eq!(
                run(WatchKind::Imap, &input, n),
                (input.clone(), Verdict::Done),
                "{n}"
            );
        }
    }

    #[test]
    fn an_incomplete_line_is_held_back_but_never_lost() {
        let mut w = FirstReplies::new(WatchKind::Imap, "m");
        let mut out = Vec::new();
        assert_eq!(w.feed(b"* 1 EXI", &mut out), Verdict::Watching);
        assert!(out.is_empty());
        assert_eq!(
            w.feed(b"STS\r\na2 OK done\r\nrest", &mut out),
            Verdict::Done
        );
        assert_eq!(out, b"* 1 EXISTS\r\na2 OK done\r\nrest");
    }
}
