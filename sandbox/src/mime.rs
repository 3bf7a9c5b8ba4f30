//! Just enough RFC 5322 / MIME to answer IMAP FETCH: header/body split, header lookup and
//! filtering, address lists for ENVELOPE, multipart structure for BODYSTRUCTURE and `BODY[1.2]`.
//! Lenient: malformed input degrades to "one text/plain part", never to an error.

/// Split a message (or entity) into header (with its terminating blank line) and body.
pub(crate) fn split(raw: &[u8]) -> (&[u8], &[u8]) {
    if raw.starts_with(b"\r\n") {
        return (&raw[..2], &raw[2..]);
    }
    if raw.starts_with(b"\n") {
        return (&raw[..1], &raw[1..]);
    }
    let mut i = 0;
    while let Some(p) = raw[i..].iter().position(|&b| b == b'\n') {
        let nl = i + p;
        let next = nl + 1;
        if raw[next..].starts_with(b"\r\n") {
            return (&raw[..next + 2], &raw[next + 2..]);
        }
        if raw[next..].starts_with(b"\n") {
            return (&raw[..next + 1], &raw[next + 1..]);
        }
        i = next;
    }
    (raw, &[])
}

/// Header fields as (name, raw field bytes including folding and line end).
pub(crate) fn fields(header: &[u8]) -> Vec<(String, &[u8])> {
    fn push<'a>(out: &mut Vec<(String, &'a [u8])>, f: &'a [u8]) {
        if let Some(colon) = f.iter().position(|&b| b == b':') {
            let name = String::from_utf8_lossy(&f[..colon]).trim().to_string();
            out.push((name, f));
        }
    }
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut i = 0;
    while i < header.len() {
        let end = header[i..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(header.len(), |p| i + p + 1);
        let line = &header[i..end];
        let blank = line == b"\r\n" || line == b"\n";
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            if let Some(s) = start.take() {
                push(&mut out, &header[s..i]);
            }
            if !blank {
                start = Some(i);
            }
        }
        i = end;
    }
    if let Some(s) = start {
        push(&mut out, &header[s..]);
    }
    out
}

/// The unfolded value of the first field called `name`.
pub(crate) fn header_value(header: &[u8], name: &str) -> Option<String> {
    fields(header)
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, f)| {
            let colon = f.iter().position(|&b| b == b':').unwrap_or(0);
            let v = String::from_utf8_lossy(&f[colon + 1..]);
            v.replace("\r\n", "").replace('\n', "").trim().to_string()
        })
}

/// `HEADER.FIELDS (names)` / `HEADER.FIELDS.NOT (names)`: the matching fields plus a blank line.
pub(crate) fn filter_fields(header: &[u8], names: &[String], not: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, f) in fields(header) {
        let hit = names.iter().any(|x| x.eq_ignore_ascii_case(&n));
        if hit != not {
            out.extend_from_slice(f);
            if !f.ends_with(b"\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// One address of an address list.
#[derive(Debug, PartialEq)]
pub(crate) struct Address {
    pub name: Option<String>,
    pub mailbox: String,
    pub host: String,
}

/// Split at top-level commas (outside quotes, angle brackets and comments).
fn split_list(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut angle, mut paren, mut escaped) = (false, false, 0u32, false);
    for c in v.chars() {
        if escaped {
            escaped = false;
            cur.push(c);
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' if paren == 0 => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            '(' if !quoted => paren += 1,
            ')' if !quoted => paren = paren.saturating_sub(1),
            ',' if !quoted && !angle && paren == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

pub(crate) fn addresses(value: &str) -> Vec<Address> {
    split_list(value)
        .into_iter()
        .filter_map(|a| {
            let (name, addr) = match (a.find('<'), a.rfind('>')) {
                (Some(l), Some(r)) if l < r => {
                    let name = a[..l].trim().trim_matches('"').trim().to_string();
                    (
                        Some(name).filter(|n| !n.is_empty()),
                        a[l + 1..r].trim().to_string(),
                    )
                }
                _ => (None, a.trim().to_string()),
            };
            let (mailbox, host) = match addr.rsplit_once('@') {
                Some((m, h)) => (m.to_string(), h.to_string()),
                None => (addr.clone(), String::new()),
            };
            (!mailbox.is_empty()).then_some(Address {
                name,
                mailbox,
                host,
            })
        })
        .collect()
}

/// A parsed `Content-Type`.
#[derive(Debug, Clone)]
pub(crate) struct ContentType {
    pub kind: String,
    pub subtype: String,
    pub params: Vec<(String, String)>,
}

impl ContentType {
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub(crate) fn content_type(header: &[u8]) -> ContentType {
    let default = ContentType {
        kind: "text".into(),
        subtype: "plain".into(),
        params: vec![("charset".into(), "us-ascii".into())],
    };
    let Some(v) = header_value(header, "Content-Type") else {
        return default;
    };
    let mut parts = v.split(';');
    let Some((kind, subtype)) = parts.next().and_then(|t| t.trim().split_once('/')) else {
        return default;
    };
    let params = parts
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_string(),
            ))
        })
        .collect();
    ContentType {
        kind: kind.trim().to_ascii_lowercase(),
        subtype: subtype.trim().to_ascii_lowercase(),
        params,
    }
}

/// The body parts of a multipart body (each part = its own header + body).
pub(crate) fn multipart_parts<'a>(body: &'a [u8], boundary: &str) -> Vec<&'a [u8]> {
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    // Positions of delimiter lines: (start of line, start of next line, is_close).
    let mut marks = Vec::new();
    let mut i = 0;
    while i <= body.len() {
        let end = body[i..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |p| i + p + 1);
        let line = &body[i..end];
        if line.starts_with(delim) {
            let rest = &line[delim.len()..];
            let close = rest.starts_with(b"--");
            marks.push((i, end, close));
            if close {
                break;
            }
        }
        if end == body.len() {
            break;
        }
        i = end;
    }
    let mut parts = Vec::new();
    for w in marks.windows(2) {
        let (_, content_start, close) = w[0];
        if close {
            break;
        }
        let mut content_end = w[1].0;
        // The CRLF before a delimiter belongs to the delimiter.
        if body[..content_end].ends_with(b"\r\n") {
            content_end -= 2;
        } else if body[..content_end].ends_with(b"\n") {
            content_end -= 1;
        }
        parts.push(&body[content_start..content_end.max(content_start)]);
    }
    parts
}

fn count_lines(b: &[u8]) -> usize {
    b.iter().filter(|&&c| c == b'\n').count() + usize::from(!b.is_empty() && !b.ends_with(b"\n"))
}

/// BODYSTRUCTURE (with NIL extension data) of one entity (a whole message or a part).
pub(crate) fn body_structure(entity: &[u8], out: &mut Vec<u8>, extended: bool, depth: usize) {
    let (header, body) = split(entity);
    let ct = content_type(header);
    if ct.kind == "multipart" && depth < 16 {
        let parts = ct
            .param("boundary")
            .map(|b| multipart_parts(body, b))
            .unwrap_or_default();
        if !parts.is_empty() {
            out.push(b'(');
            for p in parts {
                body_structure(p, out, extended, depth + 1);
            }
            out.push(b' ');
            quoted(out, ct.subtype.as_bytes());
            if extended {
                out.push(b' ');
                params(out, &ct.params);
                out.extend_from_slice(b" NIL NIL NIL");
            }
            out.push(b')');
            return;
        }
    }
    out.push(b'(');
    quoted(out, ct.kind.as_bytes());
    out.push(b' ');
    quoted(out, ct.subtype.as_bytes());
    out.push(b' ');
    params(out, &ct.params);
    out.push(b' ');
    nstring(out, header_value(header, "Content-ID").as_deref());
    out.push(b' ');
    nstring(out, header_value(header, "Content-Description").as_deref());
    out.push(b' ');
    let enc = header_value(header, "Content-Transfer-Encoding").unwrap_or_else(|| "7bit".into());
    quoted(out, enc.to_ascii_lowercase().as_bytes());
    out.extend_from_slice(format!(" {}", body.len()).as_bytes());
    if ct.kind == "text" {
        out.extend_from_slice(format!(" {}", count_lines(body)).as_bytes());
    }
    if extended {
        out.extend_from_slice(b" NIL NIL NIL NIL");
    }
    out.push(b')');
}

fn params(out: &mut Vec<u8>, params: &[(String, String)]) {
    if params.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        quoted(out, k.as_bytes());
        out.push(b' ');
        quoted(out, v.as_bytes());
    }
    out.push(b')');
}

/// An IMAP string: quoted when safe, else a literal (RFC 3501 §4.3).
pub(crate) fn quoted(out: &mut Vec<u8>, s: &[u8]) {
    let safe = s.len() < 1024 && s.iter().all(|&b| (0x20..0x7f).contains(&b));
    if safe {
        out.push(b'"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
        out.extend_from_slice(s);
    }
}

pub(crate) fn nstring(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => quoted(out, s.as_bytes()),
        None => out.extend_from_slice(b"NIL"),
    }
}

fn address_list(out: &mut Vec<u8>, value: Option<&str>) {
    let list = value.map(addresses).unwrap_or_default();
    if list.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for a in list {
        out.push(b'(');
        nstring(out, a.name.as_deref());
        out.extend_from_slice(b" NIL ");
        quoted(out, a.mailbox.as_bytes());
        out.push(b' ');
        if a.host.is_empty() {
            out.extend_from_slice(b"NIL");
        } else {
            quoted(out, a.host.as_bytes());
        }
        out.push(b')');
    }
    out.push(b')');
}

/// ENVELOPE (RFC 3501 §7.4.2).
pub(crate) fn envelope(raw: &[u8], out: &mut Vec<u8>) {
    let (header, _) = split(raw);
    let h = |n: &str| header_value(header, n);
    let from = h("From");
    let sender = h("Sender").or_else(|| from.clone());
    let reply_to = h("Reply-To").or_else(|| from.clone());
    out.push(b'(');
    nstring(out, h("Date").as_deref());
    out.push(b' ');
    nstring(out, h("Subject").as_deref());
    for v in [&from, &sender, &reply_to, &h("To"), &h("Cc"), &h("Bcc")] {
        out.push(b' ');
        address_list(out, v.as_deref());
    }
    out.push(b' ');
    nstring(out, h("In-Reply-To").as_deref());
    out.push(b' ');
    nstring(out, h("Message-ID").as_deref());
    out.push(b')');
}

/// Resolve a numeric section path (`1`, `2.1`) to an entity; for a non-multipart message part 1
/// is its body. Returns (entity header, entity body).
pub(crate) fn part<'a>(raw: &'a [u8], path: &[usize]) -> Option<(&'a [u8], &'a [u8])> {
    let (mut header, mut body) = split(raw);
    for &n in path {
        let ct = content_type(header);
        if ct.kind == "multipart" {
            let parts = multipart_parts(body, ct.param("boundary")?);
            let p = parts.get(n.checked_sub(1)?)?;
            (header, body) = split(p);
        } else if ct.kind == "message" && ct.subtype == "rfc822" {
            let (h, b) = split(body);
            let ct2 = content_type(h);
            if ct2.kind == "multipart" {
                let parts = multipart_parts(b, ct2.param("boundary")?);
                (header, body) = split(parts.get(n.checked_sub(1)?)?);
            } else if n == 1 {
                (header, body) = (h, b);
            } else {
                return None;
            }
        } else if n == 1 {
            // A single-part entity: part 1 is its body, with no MIME header of its own.
            header = &[];
        } else {
            return None;
        }
    }
    Some((header, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"From: \"Alice A.\" <alice@a.test>\r\nTo: bob@b.test, Carol <carol@c.test>\r\nSubject: Hello\r\n world\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\npreamble\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nline one\r\nline two\r\n--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n--XX--\r\n";

    #[test]
    fn header_and_fields() {
        let (h, b) = split(MSG);
        assert!(h.ends_with(b"\r\n\r\n"));
        assert!(b.starts_with(b"preamble"));
        assert_eq!(header_value(h, "subject").unwrap(), "Hello world");
        let f = filter_fields(h, &["SUBJECT".into()], false);
        assert_eq!(f, b"Subject: Hello\r\n world\r\n\r\n");
        let a = addresses(&header_value(h, "To").unwrap());
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].name.as_deref(), Some("Carol"));
        assert_eq!(a[1].host, "c.test");
    }

    #[test]
    fn structure_and_parts() {
        let mut out = Vec::new();
        body_structure(MSG, &mut out, true, 0);
        let s = String::from_utf8(out).unwrap();
        assert_eq!(
            s,
            "((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 18 2 NIL NIL NIL NIL)(\"application\" \"octet-stream\" NIL NIL NIL \"base64\" 4 NIL NIL NIL NIL) \"mixed\" (\"boundary\" \"XX\") NIL NIL NIL)"
        );
        let (_, b) = part(MSG, &[1]).unwrap();
        assert_eq!(b, b"line one\r\nline two");
        let (_, b) = part(MSG, &[2]).unwrap();
        assert_eq!(b, b"AAAA");
        let simple = b"Subject: x\r\n\r\nbody\r\n";
        assert_eq!(part(simple, &[1]).unwrap().1, b"body\r\n");
        let mut env = Vec::new();
        envelope(MSG, &mut env);
        let env = String::from_utf8(env).unwrap();
        assert!(
            env.starts_with("(NIL \"Hello world\" ((\"Alice A.\" NIL \"alice\" \"a.test\"))"),
            "{env}"
        );
    }
}
