//! SMTP envelope arguments: the reverse-path of `MAIL FROM` and the forward-path of `RCPT TO`
//! (RFC 5321 §4.1.1.2–3, §4.1.2) with their ESMTP parameters (RFC 1870 SIZE, RFC 6152 BODY,
//! RFC 3461 DSN, RFC 4954 AUTH, RFC 6531 SMTPUTF8).
//!
//! Parsed strictly, so that what the relay checks is exactly what it forwards: a parsed
//! argument is written back in one canonical form ([`MailFrom::to_line`], [`RcptTo::to_line`]).
//! The only leniencies are the ones common clients need and that cannot change the meaning:
//! spaces after `FROM:`/`TO:` and a path without angle brackets. A source route is parsed and
//! dropped (RFC 5321 §4.1.1.2 and appendix C let a server ignore it); a quoted local part whose
//! content is a plain dot-string is written unquoted, as RFC 5321 §4.1.2 treats both as equal.
//! The caller has already refused control characters and invalid UTF-8 in the line.

/// RFC 5321 §4.5.3.1.1–3: local part, domain and path lengths in octets.
const LOCAL_MAX: usize = 64;
const DOMAIN_MAX: usize = 255;
const PATH_MAX: usize = 256;
/// RFC 3461 §4.4: ENVID is at most 100 characters; ORCPT's address fits in a path.
const ENVID_MAX: usize = 100;
const ORCPT_MAX: usize = 500;

/// Why an argument was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Not `FROM:`/`TO:` followed by a path.
    Syntax,
    /// The path is not an RFC 5321 path, or is too long.
    Address,
    /// A parameter that is malformed, repeated, or not offered through this relay.
    Parameter,
}

/// A mailbox `local@domain` (RFC 5321 §4.1.2), canonical: see the module doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    local: String,
    domain: String,
}

impl Mailbox {
    /// The address as written to the connector.
    pub fn as_written(&self) -> String {
        format!("{}@{}", self.local, self.domain)
    }

    /// The address as `allowed_senders` compares it: ASCII letters lower-cased.
    pub fn checked_form(&self) -> String {
        self.as_written().to_ascii_lowercase()
    }
}

/// `MAIL FROM:` reverse-path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReversePath {
    /// `<>`: bounces and other notifications.
    Null,
    Mailbox(Mailbox),
}

/// `RCPT TO:` forward-path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardPath {
    /// `<Postmaster>` without a domain (RFC 5321 §4.1.1.3).
    Postmaster,
    Mailbox(Mailbox),
}

/// One ESMTP parameter, keyword upper-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub keyword: String,
    pub value: Option<String>,
}

/// The arguments of a MAIL command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailFrom {
    pub path: ReversePath,
    pub params: Vec<Param>,
}

/// The arguments of a RCPT command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptTo {
    pub path: ForwardPath,
    pub params: Vec<Param>,
}

impl MailFrom {
    /// The canonical command line, without CRLF.
    pub fn to_line(&self) -> String {
        let path = match &self.path {
            ReversePath::Null => String::new(),
            ReversePath::Mailbox(m) => m.as_written(),
        };
        format!("MAIL FROM:<{path}>{}", params_text(&self.params))
    }
}

impl RcptTo {
    /// The canonical command line, without CRLF.
    pub fn to_line(&self) -> String {
        let path = match &self.path {
            ForwardPath::Postmaster => "Postmaster".to_string(),
            ForwardPath::Mailbox(m) => m.as_written(),
        };
        format!("RCPT TO:<{path}>{}", params_text(&self.params))
    }
}

fn params_text(params: &[Param]) -> String {
    let mut s = String::new();
    for p in params {
        s.push(' ');
        s.push_str(&p.keyword);
        if let Some(v) = &p.value {
            s.push('=');
            s.push_str(v);
        }
    }
    s
}

/// The arguments after `MAIL ` (RFC 5321 §4.1.1.2): `FROM:<reverse-path> [params]`.
pub fn parse_mail_from(args: &str) -> Result<MailFrom, EnvelopeError> {
    let rest = strip_keyword(args, "FROM:")?;
    let (path, rest) = if let Some(r) = rest.strip_prefix("<>") {
        (ReversePath::Null, r)
    } else {
        let (mailbox, rest) = parse_path(rest)?;
        (ReversePath::Mailbox(mailbox), rest)
    };
    let params = parse_params(rest, check_mail_param)?;
    Ok(MailFrom { path, params })
}

/// The arguments after `RCPT ` (RFC 5321 §4.1.1.3): `TO:<forward-path> [params]`.
pub fn parse_rcpt_to(args: &str) -> Result<RcptTo, EnvelopeError> {
    let rest = strip_keyword(args, "TO:")?;
    let (path, rest) = match rest.get(..12) {
        Some(p) if p.eq_ignore_ascii_case("<Postmaster>") => (ForwardPath::Postmaster, &rest[12..]),
        _ => {
            let (mailbox, rest) = parse_path(rest)?;
            (ForwardPath::Mailbox(mailbox), rest)
        }
    };
    let params = parse_params(rest, check_rcpt_param)?;
    Ok(RcptTo { path, params })
}

/// `FROM:` / `TO:` (case-insensitive), then optional spaces.
fn strip_keyword<'a>(args: &'a str, keyword: &str) -> Result<&'a str, EnvelopeError> {
    let args = args.trim_start_matches(' ');
    match args.get(..keyword.len()) {
        Some(k) if k.eq_ignore_ascii_case(keyword) => {
            Ok(args[keyword.len()..].trim_start_matches(' '))
        }
        _ => Err(EnvelopeError::Syntax),
    }
}

/// `<[A-d-l ":"] Mailbox>` or, leniently, a bare mailbox. Returns the rest of the line.
fn parse_path(s: &str) -> Result<(Mailbox, &str), EnvelopeError> {
    let Some(inner) = s.strip_prefix('<') else {
        if s.is_empty() {
            return Err(EnvelopeError::Syntax);
        }
        let end = s.find(' ').unwrap_or(s.len());
        let (mailbox, rest) = parse_mailbox(&s[..end])?;
        if !rest.is_empty() || end + 2 > PATH_MAX {
            return Err(EnvelopeError::Address);
        }
        return Ok((mailbox, &s[end..]));
    };
    let mut body = inner;
    if body.starts_with('@') {
        // A-d-l = At-domain *( "," At-domain ); At-domain = "@" Domain
        loop {
            let after_at = body.strip_prefix('@').ok_or(EnvelopeError::Address)?;
            let len = domain_len(after_at).ok_or(EnvelopeError::Address)?;
            body = &after_at[len..];
            if let Some(r) = body.strip_prefix(',') {
                body = r;
            } else {
                body = body.strip_prefix(':').ok_or(EnvelopeError::Address)?;
                break;
            }
        }
    }
    let (mailbox, rest) = parse_mailbox(body)?;
    let rest = rest.strip_prefix('>').ok_or(EnvelopeError::Address)?;
    // "<" + everything up to and including ">".
    if 1 + inner.len() - rest.len() > PATH_MAX {
        return Err(EnvelopeError::Address);
    }
    Ok((mailbox, rest))
}

/// `Local-part "@" ( Domain / address-literal )`. Returns the rest.
fn parse_mailbox(s: &str) -> Result<(Mailbox, &str), EnvelopeError> {
    let (local, rest) = if s.starts_with('"') {
        quoted_local(s)?
    } else {
        let len = dot_string_len(s);
        if len == 0 {
            return Err(EnvelopeError::Address);
        }
        (s[..len].to_string(), &s[len..])
    };
    let rest = rest.strip_prefix('@').ok_or(EnvelopeError::Address)?;
    let len = if rest.starts_with('[') {
        address_literal_len(rest)
    } else {
        domain_len(rest)
    }
    .ok_or(EnvelopeError::Address)?;
    let domain = rest[..len].to_string();
    if local.len() > LOCAL_MAX || domain.len() > DOMAIN_MAX {
        return Err(EnvelopeError::Address);
    }
    Ok((Mailbox { local, domain }, &rest[len..]))
}

/// RFC 5321 atext, plus UTF-8 beyond ASCII (RFC 6531 §3.3).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

/// The length of the longest dot-string (`Atom *("." Atom)`) at the start of `s`; 0 if none.
fn dot_string_len(s: &str) -> usize {
    let mut len = 0;
    let mut atom = 0;
    for (i, c) in s.char_indices() {
        if is_atext(c) {
            atom += 1;
            len = i + c.len_utf8();
        } else if c == '.' && atom > 0 {
            atom = 0;
        } else {
            break;
        }
    }
    len
}

fn is_dot_string(s: &str) -> bool {
    !s.is_empty() && dot_string_len(s) == s.len()
}

/// `DQUOTE *QcontentSMTP DQUOTE`, canonical (see the module doc). Returns the rest.
fn quoted_local(s: &str) -> Result<(String, &str), EnvelopeError> {
    let mut content = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                let rest = &s[i + 1..];
                let local = if is_dot_string(&content) {
                    content
                } else {
                    let mut q = String::with_capacity(content.len() + 2);
                    q.push('"');
                    for c in content.chars() {
                        if c == '"' || c == '\\' {
                            q.push('\\');
                        }
                        q.push(c);
                    }
                    q.push('"');
                    q
                };
                return Ok((local, rest));
            }
            // quoted-pairSMTP = "\" %d32-126
            '\\' => match chars.next() {
                Some((_, e)) if (' '..='~').contains(&e) => content.push(e),
                _ => return Err(EnvelopeError::Address),
            },
            // qtextSMTP = %d32-33 / %d35-91 / %d93-126, plus UTF-8 beyond ASCII (RFC 6531)
            c if (' '..='~').contains(&c) || !c.is_ascii() => content.push(c),
            _ => return Err(EnvelopeError::Address),
        }
    }
    Err(EnvelopeError::Address)
}

/// The length of `sub-domain *("." sub-domain)` at the start of `s`, where a sub-domain is
/// letters, digits and inner hyphens (UTF-8 letters allowed, RFC 6531); `None` if there is none
/// or it ends in a dot or hyphen.
fn domain_len(s: &str) -> Option<usize> {
    let mut len = 0;
    let mut label = 0;
    let mut last = '.';
    for (i, c) in s.char_indices() {
        if c.is_ascii_alphanumeric() || !c.is_ascii() || (c == '-' && label > 0) {
            label += 1;
        } else if c == '.' && label > 0 && last != '-' {
            label = 0;
        } else {
            break;
        }
        last = c;
        len = i + c.len_utf8();
    }
    (len > 0 && label > 0 && last != '-' && last != '.').then_some(len)
}

/// `"[" 1*dcontent "]"` with dcontent = %d33-90 / %d94-126 (RFC 5321 §4.1.3).
fn address_literal_len(s: &str) -> Option<usize> {
    let inner = s.strip_prefix('[')?;
    let end = inner.find(']')?;
    let content = &inner[..end];
    let ok = !content.is_empty()
        && content
            .bytes()
            .all(|b| (33..=90).contains(&b) || (94..=126).contains(&b));
    ok.then_some(end + 2)
}

/// `*( SP esmtp-param )`, each checked by `check`; no keyword twice.
fn parse_params(
    s: &str,
    check: fn(&str, Option<&str>) -> bool,
) -> Result<Vec<Param>, EnvelopeError> {
    if !s.is_empty() && !s.starts_with(' ') {
        return Err(EnvelopeError::Address);
    }
    let mut params: Vec<Param> = Vec::new();
    for word in s.split(' ').filter(|w| !w.is_empty()) {
        let (keyword, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        // esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
        let keyword_ok = keyword.starts_with(|c: char| c.is_ascii_alphanumeric())
            && keyword
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        // esmtp-value = 1*(%d33-60 / %d62-126), plus UTF-8 beyond ASCII (RFC 6531)
        let value_ok = value.is_none_or(|v| {
            !v.is_empty()
                && v.chars()
                    .all(|c| (('!'..='~').contains(&c) && c != '=') || !c.is_ascii())
        });
        let keyword = keyword.to_ascii_uppercase();
        if !keyword_ok
            || !value_ok
            || !check(&keyword, value)
            || params.iter().any(|p| p.keyword == keyword)
        {
            return Err(EnvelopeError::Parameter);
        }
        params.push(Param {
            keyword,
            value: value.map(str::to_string),
        });
    }
    Ok(params)
}

/// The MAIL parameters passed on, each with its value syntax. `BODY=BINARYMIME` needs BDAT,
/// which the relay does not offer; `AUTH=` only as `<>` (no identity is vouched for).
fn check_mail_param(keyword: &str, value: Option<&str>) -> bool {
    match (keyword, value) {
        ("SIZE", Some(v)) => (1..=20).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit()),
        ("BODY", Some(v)) => v.eq_ignore_ascii_case("7BIT") || v.eq_ignore_ascii_case("8BITMIME"),
        ("SMTPUTF8", None) => true,
        ("RET", Some(v)) => v.eq_ignore_ascii_case("FULL") || v.eq_ignore_ascii_case("HDRS"),
        ("ENVID", Some(v)) => v.len() <= ENVID_MAX && is_xtext(v),
        ("AUTH", Some("<>")) => true,
        _ => false,
    }
}

/// The RCPT parameters passed on (RFC 3461 §4.1–4.2).
fn check_rcpt_param(keyword: &str, value: Option<&str>) -> bool {
    match (keyword, value) {
        ("NOTIFY", Some(v)) => {
            let v = v.to_ascii_uppercase();
            v == "NEVER"
                || v.split(',').enumerate().all(|(i, n)| {
                    ["SUCCESS", "FAILURE", "DELAY"].contains(&n)
                        && !v.split(',').take(i).any(|m| m == n)
                })
        }
        ("ORCPT", Some(v)) => {
            v.len() <= ORCPT_MAX
                && v.split_once(';').is_some_and(|(kind, addr)| {
                    dot_string_len(kind) == kind.len()
                        && kind.is_ascii()
                        && !kind.is_empty()
                        && is_xtext(addr)
                })
        }
        _ => false,
    }
}

/// RFC 3461 §4 xtext: `%d33-42 / %d44-60 / %d62-126` or `"+" 2HEXDIG` (upper-case hex).
fn is_xtext(v: &str) -> bool {
    let b = v.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let hex = |x: u8| x.is_ascii_digit() || (b'A'..=b'F').contains(&x);
                if !(b.get(i + 1).copied().is_some_and(hex)
                    && b.get(i + 2).copied().is_some_and(hex))
                {
                    return false;
                }
                i += 3;
            }
            33..=60 | 62..=126 => i += 1,
            _ => return false,
        }
    }
    !b.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(args: &str) -> Result<String, EnvelopeError> {
        parse_mail_from(args).map(|m| m.to_line())
    }

    fn sender(args: &str) -> Option<String> {
        match parse_mail_from(args).ok()?.path {
            ReversePath::Null => Some(String::new()),
            ReversePath::Mailbox(m) => Some(m.checked_form()),
        }
    }

    /// The forms the relay always accepted keep their meaning.
    #[test]
    fn mail_from_forms() {
        assert_eq!(
            sender("FROM:<Tickets@Contoso.com> SIZE=10").as_deref(),
            Some("tickets@contoso.com")
        );
        assert_eq!(sender("from: <a@b.c>").as_deref(), Some("a@b.c"));
        assert_eq!(sender("FROM:<>").as_deref(), Some(""));
        assert_eq!(sender("FROM:a@b.c BODY=8BITMIME").as_deref(), Some("a@b.c"));
        assert_eq!(sender("FROM:<@x,@y:u@d.e>").as_deref(), Some("u@d.e"));
        assert_eq!(sender("FROM:<a@b"), None);
        assert_eq!(sender("TO:<a@b>"), None);
        assert_eq!(sender(""), None);
    }

    /// Argument → canonical line (what the connector gets), or the error.
    #[test]
    fn mail_from_table() {
        use EnvelopeError::*;
        let cases: &[(&str, Result<&str, EnvelopeError>)] = &[
            ("FROM:<a@b.c>", Ok("MAIL FROM:<a@b.c>")),
            ("FROM:<>", Ok("MAIL FROM:<>")),
            ("FROM:<> RET=HDRS", Ok("MAIL FROM:<> RET=HDRS")),
            ("fRoM:   <A@B.C>  ", Ok("MAIL FROM:<A@B.C>")),
            (
                "FROM:<a@b.c> size=100 body=8bitmime ret=full envid=QQ+2B1 smtputf8",
                Ok("MAIL FROM:<a@b.c> SIZE=100 BODY=8bitmime RET=full ENVID=QQ+2B1 SMTPUTF8"),
            ),
            ("FROM:<a@b.c> AUTH=<>", Ok("MAIL FROM:<a@b.c> AUTH=<>")),
            // Source routes are parsed and dropped.
            (
                "FROM:<@a.example,@b.example:u@c.example>",
                Ok("MAIL FROM:<u@c.example>"),
            ),
            (
                "FROM:<@a.example:u@c.example>",
                Ok("MAIL FROM:<u@c.example>"),
            ),
            ("FROM:<@a.example,u@c.example>", Err(Address)),
            ("FROM:<@:u@c.example>", Err(Address)),
            // Quoted local parts: a plain dot-string is unquoted, anything else stays quoted.
            (
                "FROM:<\"tickets\"@contoso.com>",
                Ok("MAIL FROM:<tickets@contoso.com>"),
            ),
            ("FROM:<\"a.b\"@c.d>", Ok("MAIL FROM:<a.b@c.d>")),
            (
                "FROM:<\"john doe\"@c.d>",
                Ok("MAIL FROM:<\"john doe\"@c.d>"),
            ),
            ("FROM:<\"a\\\"b\"@c.d>", Ok("MAIL FROM:<\"a\\\"b\"@c.d>")),
            ("FROM:<\"\\t\"@c.d>", Ok("MAIL FROM:<t@c.d>")),
            (
                "FROM:<\"tickets@contoso.com>\"@evil.example>",
                Ok("MAIL FROM:<\"tickets@contoso.com>\"@evil.example>"),
            ),
            ("FROM:<\"unterminated@c.d>", Err(Address)),
            ("FROM:<\"\"@c.d>", Ok("MAIL FROM:<\"\"@c.d>")),
            // Address literals.
            ("FROM:<u@[192.0.2.1]>", Ok("MAIL FROM:<u@[192.0.2.1]>")),
            (
                "FROM:<u@[IPv6:2001:db8::1]>",
                Ok("MAIL FROM:<u@[IPv6:2001:db8::1]>"),
            ),
            ("FROM:<u@[]>", Err(Address)),
            ("FROM:<u@[a[b]>", Err(Address)),
            // UTF-8 (RFC 6531).
            (
                "FROM:<δοκιμή@παράδειγμα.δοκιμή> SMTPUTF8",
                Ok("MAIL FROM:<δοκιμή@παράδειγμα.δοκιμή> SMTPUTF8"),
            ),
            // Bad paths.
            ("FROM:<a@b.c", Err(Address)),
            ("FROM:<a@b.c>x", Err(Address)),
            ("FROM:<a@b.c>>", Err(Address)),
            ("FROM:<a@@b.c>", Err(Address)),
            ("FROM:<a@b.c@d.e>", Err(Address)),
            ("FROM:<@b.c>", Err(Address)),
            ("FROM:<a@>", Err(Address)),
            ("FROM:<a>", Err(Address)),
            ("FROM:<a..b@c.d>", Err(Address)),
            ("FROM:<.a@c.d>", Err(Address)),
            ("FROM:<a.@c.d>", Err(Address)),
            ("FROM:<a@c..d>", Err(Address)),
            ("FROM:<a@c.d.>", Err(Address)),
            ("FROM:<a@-c.d>", Err(Address)),
            ("FROM:<a@c-.d>", Err(Address)),
            ("FROM:<a b@c.d>", Err(Address)),
            ("FROM:<a@b.c >", Err(Address)),
            ("FROM:< a@b.c>", Err(Address)),
            ("FROM:<a(comment)@b.c>", Err(Address)),
            ("FROM:a@b.c>", Err(Address)),
            ("FROM:<<a@b.c>>", Err(Address)),
            ("FROM:<a@b.c,d@e.f>", Err(Address)),
            ("FROM:", Err(Syntax)),
            ("FROM", Err(Syntax)),
            ("FROM<a@b.c>", Err(Syntax)),
            ("TO:<a@b.c>", Err(Syntax)),
            // Parameters: known ones with valid values, once each.
            ("FROM:<a@b.c> SIZE=x", Err(Parameter)),
            ("FROM:<a@b.c> SIZE=", Err(Parameter)),
            ("FROM:<a@b.c> SIZE=123456789012345678901", Err(Parameter)),
            ("FROM:<a@b.c> SIZE=1 SIZE=2", Err(Parameter)),
            ("FROM:<a@b.c> BODY=BINARYMIME", Err(Parameter)),
            ("FROM:<a@b.c> AUTH=ceo@contoso.com", Err(Parameter)),
            ("FROM:<a@b.c> XFORWARD=1", Err(Parameter)),
            ("FROM:<a@b.c> SMTPUTF8=yes", Err(Parameter)),
            ("FROM:<a@b.c> =x", Err(Parameter)),
            ("FROM:<a@b.c> ENVID=a=b", Err(Parameter)),
            ("FROM:<a@b.c> ENVID=+2", Err(Parameter)),
            ("FROM:<a@b.c> ENVID=+2b", Err(Parameter)),
        ];
        for (args, want) in cases {
            assert_eq!(mail(args).as_deref(), want.as_deref(), "{args:?}");
        }
        let long_local = format!("FROM:<{}@b.c>", "a".repeat(65));
        assert_eq!(mail(&long_local), Err(EnvelopeError::Address));
        let long_domain = format!("FROM:<a@{}.c>", "b".repeat(255));
        assert_eq!(mail(&long_domain), Err(EnvelopeError::Address));
        let long_route = format!("FROM:<@{}:a@b.c>", "r".repeat(260));
        assert_eq!(mail(&long_route), Err(EnvelopeError::Address));
    }

    #[test]
    fn rcpt_to_table() {
        use EnvelopeError::*;
        let cases: &[(&str, Result<&str, EnvelopeError>)] = &[
            (
                "TO:<alerts@contoso.com>",
                Ok("RCPT TO:<alerts@contoso.com>"),
            ),
            (
                "to: <alerts@contoso.com>",
                Ok("RCPT TO:<alerts@contoso.com>"),
            ),
            ("TO:<postmaster>", Ok("RCPT TO:<Postmaster>")),
            (
                "TO:<Postmaster@contoso.com>",
                Ok("RCPT TO:<Postmaster@contoso.com>"),
            ),
            (
                "TO:<a@b.c> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@b.c",
                Ok("RCPT TO:<a@b.c> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@b.c"),
            ),
            (
                "TO:<a@b.c> NOTIFY=NEVER",
                Ok("RCPT TO:<a@b.c> NOTIFY=NEVER"),
            ),
            ("TO:<a@b.c> NOTIFY=NEVER,SUCCESS", Err(Parameter)),
            ("TO:<a@b.c> NOTIFY=SUCCESS,SUCCESS", Err(Parameter)),
            ("TO:<a@b.c> ORCPT=a@b.c", Err(Parameter)),
            ("TO:<a@b.c> SIZE=1", Err(Parameter)),
            ("TO:<>", Err(Address)),
            ("TO:<@x.example:a@b.c>", Ok("RCPT TO:<a@b.c>")),
            ("FROM:<a@b.c>", Err(Syntax)),
        ];
        for (args, want) in cases {
            let got = parse_rcpt_to(args).map(|r| r.to_line());
            assert_eq!(got.as_deref(), want.as_deref(), "{args:?}");
        }
    }
}
