//! SMTP replies from the upstream (RFC 5321 §4.2): the reply parser (any chunking gives the
//! same replies; formatting a reply then parsing it gives it back) and the EHLO / STARTTLS /
//! AUTH XOAUTH2 client machine.
#![no_main]

use authbridge::protocol::smtp::{Reply, ReplyParser, ReplyStep, SmtpUpstream};
use authbridge_fuzz::{Input, check_upstream, chunkings};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fn parse_all(chunks: &[&[u8]], line_max: usize, max_lines: usize) -> (Vec<ReplyStep>, Vec<u8>) {
    let mut p = ReplyParser::new(line_max, max_lines);
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    'outer: for c in chunks {
        buf.extend_from_slice(c);
        loop {
            match p.next(&mut buf) {
                ReplyStep::Incomplete => break,
                r @ ReplyStep::Invalid(_) => {
                    got.push(r);
                    break 'outer;
                }
                r => got.push(r),
            }
        }
        assert!(
            buf.len() <= line_max + 1,
            "reply parser buffers past its cap"
        );
    }
    (got, buf.to_vec())
}

fuzz_target!(|raw: &[u8]| {
    let Some(input) = Input::parse(raw) else {
        return;
    };
    let cfg = input.cfg;
    // 1. The parser: chunk-split invariance, under a small and a large cap.
    let (line_max, max_lines) = if cfg.small_limits() {
        (40, 3)
    } else {
        (16 * 1024, 100)
    };
    let [whole, split, small] = chunkings(&input);
    let a = parse_all(&whole, line_max, max_lines);
    let b = parse_all(&split, line_max, max_lines);
    let c = parse_all(&small, line_max, max_lines);
    // The leftover of an unfinished line may differ only when the parser stopped on Invalid.
    assert_eq!(a.0, b.0, "split at {}", input.split);
    assert_eq!(a.0, c.0, "chunks of {}", input.chunk);

    // 2. Round trip: a reply built from the input, formatted, parses back to itself.
    let code = 200 + u16::from_le_bytes([raw[1], raw[2]]) % 400;
    let lines: Vec<String> = input
        .data
        .split(|b| *b == b'\n')
        .take(50)
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    let reply = Reply { code, lines };
    let mut wire = Vec::new();
    for (i, l) in reply.lines.iter().enumerate() {
        let sep = if i + 1 == reply.lines.len() { ' ' } else { '-' };
        wire.extend_from_slice(format!("{code}{sep}{l}\r\n").as_bytes());
    }
    let (got, rest) = parse_all(&[&wire], 1 << 20, 64);
    assert_eq!(got, vec![ReplyStep::Reply(reply)]);
    assert!(rest.is_empty());

    // 3. The upstream machine.
    let starttls = cfg.bit4();
    let relay = cfg.0 & 64 != 0;
    let make = || -> Box<dyn authbridge::protocol::UpstreamProtocol> {
        let m = SmtpUpstream::new(starttls, "authbridge.test");
        Box::new(if relay { m.for_relay() } else { m })
    };
    check_upstream(&make, &input, starttls, 1 + usize::from(cfg.0 >> 7));
});
