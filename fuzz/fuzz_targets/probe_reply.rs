//! Post-login replies read by `check`'s probes and the session's NOOP (IMAP tagged status with
//! untagged lines and literals, POP3 status, SMTP multi-line): never panics, respects its bounds,
//! and gives the same result (and leaves the same bytes) whatever the chunking. Also feeds the
//! same bytes to the access-token claims decoder (`check`'s token inspection).
#![no_main]

use authbridge::protocol::probe::{MAX_LINE, ReplyKind, ReplyReader};
use authbridge::token::claims::{Inspection, inspect};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fn run(kind: &ReplyKind, chunks: &[&[u8]]) -> (String, Vec<u8>) {
    let mut r = ReplyReader::new(kind.clone());
    let mut buf = BytesMut::new();
    for (i, c) in chunks.iter().enumerate() {
        buf.extend_from_slice(c);
        match r.feed(&mut buf) {
            Ok(None) => {}
            Ok(Some(reply)) => {
                assert!(reply.text.len() <= 512 * 3);
                // What follows the reply stays for the next reader, whatever came in with it.
                for rest in &chunks[i + 1..] {
                    buf.extend_from_slice(rest);
                }
                return (format!("{reply:?}"), buf.to_vec());
            }
            Err(e) => return (format!("{e:?}"), Vec::new()),
        }
    }
    ("incomplete".into(), Vec::new())
}

fuzz_target!(|raw: &[u8]| {
    let Some((&sel, rest)) = raw.split_first() else {
        return;
    };
    let kind = match sel % 3 {
        0 => ReplyKind::Imap { tag: "C1".into() },
        1 => ReplyKind::Pop3,
        _ => ReplyKind::Smtp,
    };
    let split = usize::from(sel) % (rest.len() + 1);
    let whole = run(&kind, &[rest]);
    let parts = run(&kind, &[&rest[..split], &rest[split..]]);
    if whole.0 != "incomplete" && !whole.0.starts_with("LineTooLong") {
        assert_eq!(whole, parts);
    }
    // A reply is never accepted from more than one over-long line's worth of unterminated input.
    if !rest.contains(&b'\n') && rest.len() > MAX_LINE + 1 {
        assert!(whole.0.starts_with("LineTooLong"));
    }
    if let Ok(text) = std::str::from_utf8(rest)
        && let Inspection::Jwt(c) = inspect(text)
    {
        assert!(c.scp.len() <= 64 && c.roles.len() <= 64);
    }
});
