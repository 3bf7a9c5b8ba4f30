//! What the admin page reads from a request, parsed without trusting it: the host name of a
//! `Host` header (RFC 9110 §7.2: `uri-host [ ":" port ]`), one cookie of a `Cookie` header
//! (RFC 6265 §5.4: `name=value` pairs separated by `; `), and an
//! `application/x-www-form-urlencoded` body. Every input is bounded by the caller (head and body
//! caps); these functions never allocate more than their input's size and never panic.

/// Longest host name accepted (RFC 1035: 253 octets).
const MAX_HOST: usize = 253;
/// Form fields kept at most; the rest is ignored.
pub const MAX_FORM_FIELDS: usize = 16;

/// The lower-cased host of a `Host` header value, without port or IPv6 brackets; `None` when it
/// is empty, too long or not a plain `host[:port]`.
pub fn host_name(value: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if text.is_empty()
        || text.len() > MAX_HOST + 8
        || !text.bytes().all(|b| b.is_ascii_graphic())
        || text.contains(['/', '@', '?', '#', '\\'])
    {
        return None;
    }
    let host = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        inside.parse::<std::net::Ipv6Addr>().ok()?;
        inside
    } else {
        match text.split_once(':') {
            Some((h, port)) if is_port(port) => h,
            Some(_) => return None,
            None => text,
        }
    };
    if host.is_empty() || host.len() > MAX_HOST {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// The value of cookie `name` in one `Cookie` header value (the first one of that name).
pub fn cookie<'a>(header: &'a [u8], name: &str) -> Option<&'a str> {
    let text = std::str::from_utf8(header).ok()?;
    text.split(';').find_map(|pair| {
        let (n, v) = pair.trim().split_once('=')?;
        (n == name).then(|| v.trim().trim_matches('"'))
    })
}

/// The fields of a form body (at most [`MAX_FORM_FIELDS`]).
pub fn form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body)
        .take(MAX_FORM_FIELDS)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The first value of `key` in parsed form fields.
pub fn field<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(host_name(b"LocalHost:9925").as_deref(), Some("localhost"));
        assert_eq!(host_name(b"127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(host_name(b"[::1]:9925").as_deref(), Some("::1"));
        assert_eq!(
            host_name(b"admin.example.com").as_deref(),
            Some("admin.example.com")
        );
        for bad in [
            &b""[..],
            b"a b",
            b"evil.com:99999x",
            b"[::1",
            b"[zz]:1",
            b"user@localhost",
            b"localhost:80:80",
            b"\xff",
            b"localhost/x",
        ] {
            assert_eq!(host_name(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(host_name("a".repeat(300).as_bytes()), None);
    }

    #[test]
    fn cookies() {
        let h = b"theme=dark; authbridge_session=abc; x=\"q\"";
        assert_eq!(cookie(h, "authbridge_session"), Some("abc"));
        assert_eq!(cookie(h, "x"), Some("q"));
        assert_eq!(cookie(h, "session"), None);
        assert_eq!(cookie(b"\xff=1", "a"), None);
    }

    #[test]
    fn forms() {
        let f = form(b"account=tickets&csrf=a%2Bb&csrf=second");
        assert_eq!(field(&f, "account"), Some("tickets"));
        assert_eq!(field(&f, "csrf"), Some("a+b"));
        assert_eq!(form("x=1&".repeat(100).as_bytes()).len(), MAX_FORM_FIELDS);
    }
}
