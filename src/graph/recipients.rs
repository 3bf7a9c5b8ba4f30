//! Who a message's header already addresses, sans I/O: the addresses in its `To:`, `Cc:` and
//! `Bcc:` fields (RFC 5322 §3.4, §3.6.3), so that envelope recipients the header does not name
//! (PHPMailer puts Bcc recipients only into `RCPT TO`) can be added as `Bcc:` to what is posted
//! to Microsoft Graph, which delivers to the header's recipients only.
//!
//! The parser takes the header section as bytes and is total: any input gives a result, with
//! nothing but the input's length, [`MAX_ADDRESSES`] and [`MAX_COMMENT_DEPTH`] bounding the
//! work. It handles folded lines (RFC 5322 §2.2.3), groups (`undisclosed-recipients:;`,
//! `team: a@x, b@y;`), comments with nesting and quoted pairs, quoted strings in display names
//! and in local parts (`"john doe"@example.com`), angle addresses with an obsolete route
//! (`<@relay:user@x>`) and display names with encoded words (RFC 2047), which are phrases and
//! never addresses. Addresses compare as [`normalise`] makes them: local part unquoted, ASCII
//! lower-cased.

use std::collections::BTreeSet;

/// At most this many addresses are collected from one header (Exchange takes 500 recipients
/// per message by default; more than that is refused before DATA anyway).
pub const MAX_ADDRESSES: usize = 2048;
/// Comments nest at most this deep; deeper ones are read as one comment to their end.
pub const MAX_COMMENT_DEPTH: usize = 32;

/// What the header says about its recipients.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeaderRecipients {
    /// Normalised addresses of `To:`, `Cc:` and `Bcc:`.
    pub addresses: BTreeSet<String>,
    /// Byte range of the first `Bcc:` field, its folded lines and line end included.
    pub bcc_field: Option<std::ops::Range<usize>>,
    /// The addresses of that field as written.
    pub bcc_written: Vec<String>,
    /// Where the empty line that ends the header section starts (the input's length when there
    /// is none): a new field goes there.
    pub header_end: usize,
    /// Length of the header section including the empty line that ends it (or the whole input
    /// when there is none).
    pub header_len: usize,
}

/// The address in the form addresses are compared: a quoted local part unquoted (quoted pairs
/// resolved), everything ASCII-lower-cased, surrounding white space dropped.
pub fn normalise(address: &str) -> String {
    let address = address.trim();
    let (local, domain) = match address.rfind('@') {
        Some(at) => (&address[..at], &address[at..]),
        None => (address, ""),
    };
    let local = if local.len() >= 2 && local.starts_with('"') && local.ends_with('"') {
        let inner = &local[1..local.len() - 1];
        let mut out = String::with_capacity(inner.len());
        let mut escaped = false;
        for c in inner.chars() {
            if escaped || c != '\\' {
                out.push(c);
                escaped = false;
            } else {
                escaped = true;
            }
        }
        out
    } else {
        local.to_string()
    };
    let mut s = local;
    s.push_str(domain);
    s.to_ascii_lowercase()
}

/// Scan the header section at the start of `message` (up to the first empty line).
pub fn scan(message: &[u8]) -> HeaderRecipients {
    let mut result = HeaderRecipients {
        header_len: message.len(),
        header_end: message.len(),
        ..Default::default()
    };
    let mut pos = 0;
    // The field being collected: its name's kind and its unfolded value.
    let mut field: Option<(Kind, Vec<u8>)> = None;
    // The field being read is the first `Bcc:` one (its continuation lines extend `bcc_field`).
    let mut in_first_bcc = false;
    while pos < message.len() {
        let end = match message[pos..].iter().position(|&b| b == b'\n') {
            Some(i) => pos + i + 1,
            None => message.len(),
        };
        let line = &message[pos..end];
        let content = strip_eol(line);
        if content.is_empty() {
            finish(&mut field, &mut result, in_first_bcc);
            result.header_end = pos;
            result.header_len = end;
            return result;
        }
        if matches!(content[0], b' ' | b'\t') {
            // A continuation of the field before (unfolding removes only the line break).
            if let Some((_, value)) = field.as_mut() {
                value.extend_from_slice(content);
            }
            if in_first_bcc && let Some(r) = result.bcc_field.as_mut() {
                r.end = end;
            }
        } else {
            finish(&mut field, &mut result, in_first_bcc);
            in_first_bcc = false;
            if let Some(colon) = content.iter().position(|&b| b == b':') {
                let name = &content[..colon];
                let kind = if name.eq_ignore_ascii_case(b"to") {
                    Some(Kind::To)
                } else if name.eq_ignore_ascii_case(b"cc") {
                    Some(Kind::Cc)
                } else if name.eq_ignore_ascii_case(b"bcc") {
                    Some(Kind::Bcc)
                } else {
                    None
                };
                if let Some(kind) = kind {
                    if kind == Kind::Bcc && result.bcc_field.is_none() {
                        result.bcc_field = Some(pos..end);
                        in_first_bcc = true;
                    }
                    field = Some((kind, content[colon + 1..].to_vec()));
                }
            }
        }
        pos = end;
    }
    finish(&mut field, &mut result, in_first_bcc);
    result
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    To,
    Cc,
    Bcc,
}

fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn finish(field: &mut Option<(Kind, Vec<u8>)>, result: &mut HeaderRecipients, first_bcc: bool) {
    if let Some((_, value)) = field.take() {
        for a in address_list(&value) {
            if result.addresses.len() >= MAX_ADDRESSES {
                return;
            }
            if first_bcc {
                result.bcc_written.push(a.clone());
            }
            result.addresses.insert(normalise(&a));
        }
    }
}

/// The addresses of one unfolded address-list value (RFC 5322 §3.4): mailboxes, groups, with
/// comments and phrases dropped.
pub fn address_list(value: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    // Significant text of the current mailbox outside comments and angle brackets.
    let mut plain = Vec::new();
    let mut angle: Option<Vec<u8>> = None;
    let mut i = 0;
    let flush = |plain: &mut Vec<u8>, angle: &mut Option<Vec<u8>>, out: &mut Vec<String>| {
        let candidate = match angle.take() {
            Some(a) => strip_route(&a),
            None => plain.clone(),
        };
        plain.clear();
        let text = String::from_utf8_lossy(&candidate).trim().to_string();
        if text.contains('@') && out.len() < MAX_ADDRESSES {
            out.push(text);
        }
    };
    while i < value.len() {
        match value[i] {
            b'(' => i = skip_comment(value, i),
            b'"' => {
                let end = quoted_end(value, i);
                plain.extend_from_slice(&value[i..end]);
                i = end;
            }
            b'<' => {
                let mut addr = Vec::new();
                i += 1;
                while i < value.len() && value[i] != b'>' {
                    match value[i] {
                        b'"' => {
                            let end = quoted_end(value, i);
                            addr.extend_from_slice(&value[i..end]);
                            i = end;
                        }
                        b'(' => i = skip_comment(value, i),
                        b' ' | b'\t' | b'\r' | b'\n' => i += 1,
                        b => {
                            addr.push(b);
                            i += 1;
                        }
                    }
                }
                i += 1;
                angle = Some(addr);
                // What came before was a display name.
                plain.clear();
            }
            b':' if angle.is_none() => {
                // A group's display name ends here.
                plain.clear();
                i += 1;
            }
            b',' | b';' => {
                flush(&mut plain, &mut angle, &mut out);
                i += 1;
            }
            b' ' | b'\t' | b'\r' | b'\n' => {
                // White space between the words of an addr-spec is not part of it (obsolete
                // syntax allows CFWS around dots); a phrase is dropped anyway.
                i += 1;
            }
            b => {
                if angle.is_none() {
                    plain.push(b);
                }
                i += 1;
            }
        }
    }
    flush(&mut plain, &mut angle, &mut out);
    out
}

/// `@a,@b:user@x` → `user@x` (RFC 5322 §4.4 obs-route).
fn strip_route(addr: &[u8]) -> Vec<u8> {
    if addr.first() == Some(&b'@')
        && let Some(colon) = addr.iter().position(|&b| b == b':')
    {
        return addr[colon + 1..].to_vec();
    }
    addr.to_vec()
}

/// Index just past the quoted string starting at `start` (a `"`), or the end of input.
fn quoted_end(value: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < value.len() {
        match value[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    value.len()
}

/// Index just past the comment starting at `start` (a `(`), nested up to
/// [`MAX_COMMENT_DEPTH`], or the end of input.
fn skip_comment(value: &[u8], start: usize) -> usize {
    let mut depth = 0usize;
    let mut i = start;
    while i < value.len() {
        match value[i] {
            b'\\' => i += 1,
            b'(' => depth = depth.saturating_add(1).min(MAX_COMMENT_DEPTH),
            b')' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    value.len()
}

/// The edit that makes the header name `missing` too: the byte range of `message` to replace
/// and its replacement. With a `Bcc:` field whose addresses can be written back unchanged, that
/// field is rewritten with its own addresses (as parsed) and `missing`, so the message keeps one
/// `Bcc:` (RFC 5322 §3.6); otherwise a new `Bcc:` field goes at the end of the header section.
/// Either way the field written is well-formed whatever the original looked like (one address
/// per folded line, each in angle brackets). `None` when nothing is missing.
pub fn bcc_edit(
    scan: &HeaderRecipients,
    message: &[u8],
    missing: &[String],
) -> Option<(std::ops::Range<usize>, Vec<u8>)> {
    if missing.is_empty() {
        return None;
    }
    let merge = scan.bcc_field.clone().filter(|_| {
        let back = address_list(&render(&scan.bcc_written));
        back.len() == scan.bcc_written.len()
            && back
                .iter()
                .zip(&scan.bcc_written)
                .all(|(a, b)| normalise(a) == normalise(b))
    });
    let (range, existing): (_, &[String]) = match merge {
        Some(r) => (r, &scan.bcc_written),
        None => (scan.header_end..scan.header_end, &[]),
    };
    let mut text = Vec::new();
    if range.is_empty() && range.start > 0 && message.get(range.start - 1) != Some(&b'\n') {
        // A header that ends without a line end (no body): the new field starts a line.
        text.extend_from_slice(b"\r\n");
    }
    text.extend_from_slice(b"Bcc: ");
    let all: Vec<String> = existing.iter().chain(missing).cloned().collect();
    text.extend_from_slice(&render(&all));
    text.extend_from_slice(b"\r\n");
    Some((range, text))
}

/// `<a>,CRLF <b>`: an address-list value, one address per folded line.
fn render(addresses: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, a) in addresses.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b",\r\n ");
        }
        out.push(b'<');
        out.extend_from_slice(a.as_bytes());
        out.push(b'>');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn simple_and_folded_fields() {
        let m = b"From: a@x\r\nTo: Bob <Bob@Example.com>,\r\n  carol@example.com\r\nSubject: hi\r\nCc: d@y\r\n\r\nTo: not@header\r\n";
        let r = scan(m);
        assert_eq!(
            r.addresses,
            set(&["bob@example.com", "carol@example.com", "d@y"])
        );
        assert_eq!(r.bcc_field, None);
        assert_eq!(&m[r.header_len..], b"To: not@header\r\n");
        assert_eq!(&m[r.header_end..r.header_len], b"\r\n");
    }

    #[test]
    fn groups_comments_and_quotes() {
        let v = br#"undisclosed-recipients:;, team: a@x (Alice (the (boss))), "Smith, John" <j@x>;, "john doe"@Example.org, =?utf-8?q?M=C3=BCller?= <m@x>, <@relay.example:route@x>, (comment only)"#;
        assert_eq!(
            address_list(v),
            vec!["a@x", "j@x", "\"john doe\"@Example.org", "m@x", "route@x"]
        );
        assert_eq!(
            normalise("\"john doe\"@Example.org"),
            "john doe@example.org"
        );
        assert_eq!(normalise("\"a\\\"b\"@x"), "a\"b@x");
    }

    #[test]
    fn display_name_with_at_sign_is_not_an_address() {
        assert_eq!(address_list(br#""a@b" <real@x>"#), vec!["real@x"]);
        assert_eq!(address_list(b"a@b (c@d)"), vec!["a@b"]);
    }

    #[test]
    fn lf_only_headers_and_no_body() {
        let r = scan(b"To: a@x\nBcc: b@x\n");
        assert_eq!(r.addresses, set(&["a@x", "b@x"]));
        assert_eq!(r.bcc_field, Some(8..17));
        assert_eq!(r.bcc_written, vec!["b@x"]);
    }

    fn edited(m: &[u8], missing: &[&str]) -> Vec<u8> {
        let missing: Vec<String> = missing.iter().map(|s| s.to_string()).collect();
        let (range, text) = bcc_edit(&scan(m), m, &missing).unwrap();
        let mut out = m.to_vec();
        out.splice(range, text);
        out
    }

    #[test]
    fn bcc_added_or_merged() {
        let out = edited(b"To: a@x\r\nSubject: s\r\n\r\nbody\r\n", &["b@x", "c@x"]);
        assert_eq!(
            out,
            b"To: a@x\r\nSubject: s\r\nBcc: <b@x>,\r\n <c@x>\r\n\r\nbody\r\n".to_vec()
        );
        let m = b"To: a@x\r\nBcc: Zed <z@x>,\r\n y@x\r\nSubject: s\r\n\r\n";
        let out = edited(m, &["b@x"]);
        assert_eq!(
            out,
            b"To: a@x\r\nBcc: <z@x>,\r\n <y@x>,\r\n <b@x>\r\nSubject: s\r\n\r\n".to_vec()
        );
        // An existing field that would swallow appended text (unterminated quote) is rewritten.
        let out = edited(b"Bcc: \"open\r\nTo: a@x\r\n\r\n", &["b@x"]);
        assert_eq!(scan(&out).addresses, set(&["a@x", "b@x"]));
        // One whose address cannot be written back as parsed is left alone: a second field.
        let m = b"Bcc: a>b@x\r\n\r\n";
        let out = edited(m, &["c@x"]);
        assert_eq!(out, b"Bcc: a>b@x\r\nBcc: <c@x>\r\n\r\n".to_vec());
        assert_eq!(scan(&out).addresses, set(&["a>b@x", "c@x"]));
        // A header without body or final line end.
        let out = edited(b"To: a@x", &["b@x"]);
        assert_eq!(out, b"To: a@x\r\nBcc: <b@x>\r\n".to_vec());
        // A message that starts with white space cannot fold the new field into anything.
        let out = edited(b" x@y\r\n\r\nbody", &["b@x"]);
        assert!(scan(&out).addresses.contains("b@x"));
        assert!(bcc_edit(&scan(b"To: a@x\r\n\r\n"), b"", &[]).is_none());
    }

    #[test]
    fn hostile_input_is_bounded() {
        let deep = [b"To: ".to_vec(), vec![b'('; 100_000], b"a@x".to_vec()].concat();
        assert!(scan(&deep).addresses.is_empty());
        let many = [b"To: ".to_vec(), b"a@x,".repeat(10_000)].concat();
        assert_eq!(scan(&many).addresses.len(), 1);
        let unterminated = b"To: \"abc, <x@y";
        let _ = scan(unterminated);
    }
}
