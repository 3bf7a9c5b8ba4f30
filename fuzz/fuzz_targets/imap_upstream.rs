//! IMAP responses from the upstream (RFC 3501 §7, §9 `response`): the response reader (lines
//! and untagged literals under caps) over any chunking, the response classifier, and the
//! greeting / STARTTLS / CAPABILITY / AUTHENTICATE XOAUTH2 client machine.
#![no_main]

use authbridge::protocol::imap::ImapUpstream;
use authbridge::protocol::imap::response::{ResponseEvent, ResponseReader, parse_response};
use authbridge_fuzz::{Input, check_upstream, chunkings};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fn read_all(chunks: &[&[u8]], caps: (usize, usize, usize)) -> Vec<ResponseEvent> {
    let mut r = ResponseReader::new(caps.0, caps.1, caps.2);
    let mut buf = BytesMut::new();
    let mut seen = Vec::new();
    for c in chunks {
        buf.extend_from_slice(c);
        loop {
            match r.next(&mut buf) {
                ResponseEvent::Incomplete => break,
                ev => {
                    if let ResponseEvent::Response { first_line, raw } = &ev {
                        assert!(raw.len() <= caps.2, "response over its cap");
                        assert!(raw.starts_with(first_line));
                        let _ = parse_response(first_line);
                    }
                    seen.push(ev);
                }
            }
        }
        assert!(buf.len() <= caps.0 + 1, "the reader buffers past its cap");
    }
    seen
}

fuzz_target!(|raw: &[u8]| {
    let Some(input) = Input::parse(raw) else {
        return;
    };
    let cfg = input.cfg;
    let caps = if cfg.small_limits() {
        (40, 16, 120)
    } else {
        (64 * 1024, 64 * 1024, 256 * 1024)
    };
    let [whole, split, small] = chunkings(&input);
    let a = read_all(&whole, caps);
    assert_eq!(a, read_all(&split, caps), "split at {}", input.split);
    assert_eq!(a, read_all(&small, caps), "chunks of {}", input.chunk);

    let starttls = cfg.bit4();
    let make = || -> Box<dyn authbridge::protocol::UpstreamProtocol> {
        Box::new(ImapUpstream::new(starttls))
    };
    let run = check_upstream(&make, &input, starttls, 1 + usize::from(cfg.0 >> 7));
    // The token only ever goes out on an AUTHENTICATE line or as the answer to a `+`.
    let sent = String::from_utf8_lossy(&run.out);
    for line in sent.split("\r\n") {
        if line.starts_with("dXNlcj") {
            continue;
        }
        assert!(
            !line.contains("dXNlcj") || line.contains(" AUTHENTICATE XOAUTH2 "),
            "{line}"
        );
    }
});
