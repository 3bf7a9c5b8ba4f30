//! IMAP commands before login, literals included (RFC 3501 §6.1–6.2, §9; RFC 7888 LITERAL+;
//! RFC 4959 SASL-IR): the pre-login server machine over any chunking, the command reader and
//! parser alone, and a LOGIN round trip (user and password encoded as atom, quoted string,
//! synchronising or non-synchronising literal, then read and parsed back).
#![no_main]

use authbridge::protocol::imap::ImapClient;
use authbridge::protocol::imap::command::{Command, is_astring_char, parse_command};
use authbridge::protocol::imap::reader::{CommandReader, ReadEvent};
use authbridge_fuzz::{Input, check_client, chunkings, imap_caps};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

/// Read every command out of `chunks`, accepting each literal up to `literal_max`.
fn read_all(chunks: &[&[u8]], line_max: usize, literal_max: u64) -> Vec<String> {
    let mut r = CommandReader::new(line_max);
    let mut buf = BytesMut::new();
    let mut seen = Vec::new();
    for c in chunks {
        buf.extend_from_slice(c);
        loop {
            match r.next(&mut buf) {
                ReadEvent::Incomplete => break,
                ReadEvent::Command { bytes, .. } => {
                    // The parser is total: any complete command gives a value or an error.
                    let parsed = parse_command(&bytes);
                    seen.push(format!("cmd {} {:?}", bytes.len(), parsed.map(|t| t.tag)));
                }
                ReadEvent::Literal {
                    announcement,
                    count,
                } => {
                    seen.push(format!("lit {} #{count}", announcement.size));
                    if announcement.size <= literal_max {
                        r.accept_literal();
                    } else {
                        r.refuse_literal();
                    }
                }
                ReadEvent::TooLong { tag } => seen.push(format!("long {tag:?}")),
            }
        }
        assert!(buf.len() <= line_max + 1, "the reader buffers past its cap");
    }
    seen
}

/// Encode `v` as an IMAP astring in the form `how` asks for (falling back to a literal when the
/// form cannot hold the bytes).
fn astring(v: &[u8], how: u8) -> Vec<u8> {
    let atom_ok = !v.is_empty() && v.iter().all(|b| is_astring_char(*b));
    let quoted_ok = !v.iter().any(|b| matches!(b, 0 | b'\r' | b'\n'));
    match how % 4 {
        0 if atom_ok => v.to_vec(),
        1 if quoted_ok => {
            let mut q = vec![b'"'];
            for b in v {
                if matches!(b, b'"' | b'\\') {
                    q.push(b'\\');
                }
                q.push(*b);
            }
            q.push(b'"');
            q
        }
        3 => [format!("{{{}+}}\r\n", v.len()).as_bytes(), v].concat(),
        _ => [format!("{{{}}}\r\n", v.len()).as_bytes(), v].concat(),
    }
}

fuzz_target!(|raw: &[u8]| {
    let Some(input) = Input::parse(raw) else {
        return;
    };
    let cfg = input.cfg;
    // 1. The whole machine.
    let caps = imap_caps();
    let make = || -> Box<dyn authbridge::protocol::ClientProtocol> {
        Box::new(ImapClient::new(cfg.ctx()))
    };
    check_client(&make, &input, &caps);

    // 2. Reader + parser alone, chunk-split invariant.
    let (line_max, literal_max) = if cfg.small_limits() {
        (48, 8)
    } else {
        (4096, 8192)
    };
    let [whole, split, small] = chunkings(&input);
    let a = read_all(&whole, line_max, literal_max);
    assert_eq!(
        a,
        read_all(&split, line_max, literal_max),
        "split at {}",
        input.split
    );
    assert_eq!(
        a,
        read_all(&small, line_max, literal_max),
        "chunks of {}",
        input.chunk
    );

    // 3. LOGIN round trip.
    let (user, pass) = match input.data.iter().position(|b| *b == 0xff) {
        Some(i) => (&input.data[..i], &input.data[i + 1..]),
        None => (input.data, &b"secret"[..]),
    };
    if user.len() > 1024 || pass.len() > 1024 {
        return;
    }
    let mut cmd = b"a1 LOGIN ".to_vec();
    cmd.extend_from_slice(&astring(user, cfg.0));
    cmd.push(b' ');
    cmd.extend_from_slice(&astring(pass, cfg.0 >> 2));
    cmd.extend_from_slice(b"\r\n");
    let mut r = CommandReader::new(4096);
    let mut buf = BytesMut::from(&cmd[..]);
    let bytes = loop {
        match r.next(&mut buf) {
            ReadEvent::Literal { .. } => r.accept_literal(),
            ReadEvent::Command { bytes, .. } => break bytes,
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(&cmd)),
        }
    };
    assert!(buf.is_empty());
    match parse_command(&bytes).map(|t| t.command) {
        Ok(Command::Login { username, password }) => {
            assert_eq!(username, user);
            assert_eq!(password.expose().as_slice(), pass);
        }
        other => panic!("{other:?} for {:?}", String::from_utf8_lossy(&cmd)),
    }
});
