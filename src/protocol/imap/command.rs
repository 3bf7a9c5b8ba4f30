//! Client commands before login (RFC 3501 §6.1, §6.2, §9; RFC 4959 SASL-IR; RFC 7888 LITERAL+).
//!
//! The parser takes one *complete* command as the [`CommandReader`](super::reader::CommandReader)
//! assembled it: the command line, where every literal appears in place as `{N}` or `{N+}`, CRLF
//! and its N payload bytes, and no final CRLF. It never fails on any input: a command it cannot
//! use is a [`ParseError`] that says whether a tag could be read (so the reply can carry it).
//!
//! Deliberate leniencies, each seen in or harmless for real clients: runs of spaces between
//! arguments and trailing spaces are accepted; atoms and quoted strings may carry raw 8-bit bytes
//! (laminas-mail sends UTF-8 and binary passwords unescaped inside quotes).

use std::fmt;

use crate::secret::SecretBytes;

/// A command tag (RFC 3501 §9: `tag = 1*<any ASTRING-CHAR except "+">`). Only ASCII, never empty.
#[derive(Clone, PartialEq, Eq)]
pub struct Tag(String);

impl Tag {
    /// The tag if `bytes` is a valid one.
    pub fn parse(bytes: &[u8]) -> Option<Tag> {
        let valid = |b: &u8| b.is_ascii() && is_astring_char(*b) && *b != b'+';
        if bytes.is_empty() || !bytes.iter().all(valid) {
            return None;
        }
        // All ASCII, so this never fails.
        std::str::from_utf8(bytes).ok().map(|s| Tag(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({})", self.0)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a pre-login command asks for.
#[derive(Debug)]
pub enum Command {
    Capability,
    Noop,
    Logout,
    StartTls,
    /// RFC 2971 `ID`; its parameters are not looked at.
    Id,
    /// `LOGIN userid password`, both astrings, decoded.
    Login {
        username: Vec<u8>,
        password: SecretBytes,
    },
    /// `AUTHENTICATE mechanism [initial-response]`; the mechanism is upper-cased, the initial
    /// response is still base64 (or `=`).
    Authenticate {
        mechanism: String,
        initial: Option<SecretBytes>,
    },
    /// A command that is valid only after login (SELECT, FETCH, ...); upper-cased name.
    NeedsAuth(String),
    /// A command name we do not know; upper-cased.
    Unknown(String),
}

/// A parsed command with its tag.
#[derive(Debug)]
pub struct Tagged {
    pub tag: Tag,
    pub command: Command,
}

/// Why a command line could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// No valid tag: answer with an untagged `* BAD`.
    NoTag,
    /// The tag is fine, the rest is not: answer `<tag> BAD <reason>`.
    Syntax { tag: Tag, reason: &'static str },
}

/// The commands RFC 3501 and common extensions allow only after authentication (or that make no
/// sense before it). They get "not valid before login" rather than "unknown command".
const NEEDS_AUTH: &[&str] = &[
    "SELECT",
    "EXAMINE",
    "CREATE",
    "DELETE",
    "RENAME",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "LIST",
    "LSUB",
    "XLIST",
    "STATUS",
    "APPEND",
    "CHECK",
    "CLOSE",
    "UNSELECT",
    "EXPUNGE",
    "SEARCH",
    "ESEARCH",
    "FETCH",
    "STORE",
    "COPY",
    "MOVE",
    "UID",
    "IDLE",
    "NAMESPACE",
    "ENABLE",
    "GETQUOTA",
    "GETQUOTAROOT",
    "SETQUOTA",
    "GETACL",
    "SETACL",
    "DELETEACL",
    "MYRIGHTS",
    "LISTRIGHTS",
    "SORT",
    "THREAD",
    "GETMETADATA",
    "SETMETADATA",
    "COMPRESS",
    "NOTIFY",
];

/// Parse one complete command (RFC 3501 §9 `command`), literals inline, no final CRLF.
pub fn parse_command(input: &[u8]) -> Result<Tagged, ParseError> {
    let mut cur = Cursor::new(input);
    let tag = Tag::parse(cur.take_while(is_astring_char)).ok_or(ParseError::NoTag)?;
    let syntax = |reason| ParseError::Syntax {
        tag: tag.clone(),
        reason,
    };
    if !cur.spaces() {
        return Err(syntax("Missing command"));
    }
    let name = cur.take_while(is_atom_char);
    if name.is_empty() {
        return Err(syntax("Missing command"));
    }
    let name = String::from_utf8_lossy(name).to_ascii_uppercase();
    let command = match name.as_str() {
        "CAPABILITY" => no_arguments(&mut cur, Command::Capability),
        "NOOP" => no_arguments(&mut cur, Command::Noop),
        "LOGOUT" => no_arguments(&mut cur, Command::Logout),
        "STARTTLS" => no_arguments(&mut cur, Command::StartTls),
        "ID" => id(&mut cur),
        "LOGIN" => login(&mut cur),
        "AUTHENTICATE" => authenticate(&mut cur),
        other if NEEDS_AUTH.contains(&other) => Ok(Command::NeedsAuth(name)),
        _ => Ok(Command::Unknown(name)),
    };
    command
        .map(|command| Tagged {
            tag: tag.clone(),
            command,
        })
        .map_err(syntax)
}

/// The tag and upper-cased command name at the start of a (possibly partial) command, for
/// deciding on a literal before the command is complete.
pub fn parse_head(input: &[u8]) -> Option<(Tag, String)> {
    let mut cur = Cursor::new(input);
    let tag = Tag::parse(cur.take_while(is_astring_char))?;
    if !cur.spaces() {
        return Some((tag, String::new()));
    }
    let name = String::from_utf8_lossy(cur.take_while(is_atom_char)).to_ascii_uppercase();
    Some((tag, name))
}

/// The tag at the start of a (possibly partial) command, if it is a valid one.
pub fn parse_tag(input: &[u8]) -> Option<Tag> {
    let end = input
        .iter()
        .position(|b| !is_astring_char(*b))
        .unwrap_or(input.len());
    Tag::parse(input.get(..end)?)
}

/// True when the command name is one that we answer with "not valid before login".
pub fn needs_auth(name: &str) -> bool {
    NEEDS_AUTH.contains(&name)
}

fn no_arguments(cur: &mut Cursor<'_>, command: Command) -> Result<Command, &'static str> {
    cur.spaces();
    if cur.at_end() {
        Ok(command)
    } else {
        Err("Unexpected arguments")
    }
}

/// RFC 2971: `ID SP (id-params-list / nil)`. The content is not needed; only its presence.
fn id(cur: &mut Cursor<'_>) -> Result<Command, &'static str> {
    if !cur.spaces() || cur.at_end() {
        return Err("Missing ID parameters");
    }
    Ok(Command::Id)
}

/// RFC 3501 §6.2.3: `LOGIN SP userid SP password`.
fn login(cur: &mut Cursor<'_>) -> Result<Command, &'static str> {
    if !cur.spaces() {
        return Err("Expected LOGIN user password");
    }
    let username = cur.astring()?;
    if !cur.spaces() {
        return Err("Expected LOGIN user password");
    }
    let password = SecretBytes::new(cur.astring()?);
    cur.spaces();
    if !cur.at_end() {
        return Err("Unexpected arguments after LOGIN user password");
    }
    Ok(Command::Login { username, password })
}

/// RFC 3501 §6.2.2 and RFC 4959: `AUTHENTICATE SP auth-type [SP (base64 / "=")]`.
fn authenticate(cur: &mut Cursor<'_>) -> Result<Command, &'static str> {
    if !cur.spaces() {
        return Err("Expected AUTHENTICATE mechanism");
    }
    let mechanism = cur.take_while(is_atom_char);
    if mechanism.is_empty() {
        return Err("Expected AUTHENTICATE mechanism");
    }
    let mechanism = String::from_utf8_lossy(mechanism).to_ascii_uppercase();
    let initial = if cur.spaces() && !cur.at_end() {
        let ir = cur.take_while(|b| b != b' ');
        cur.spaces();
        if !cur.at_end() {
            return Err("Unexpected arguments after the initial response");
        }
        Some(SecretBytes::new(ir.to_vec()))
    } else {
        None
    };
    Ok(Command::Authenticate { mechanism, initial })
}

/// RFC 3501 §9 `ATOM-CHAR`: any CHAR except atom-specials. We also let 8-bit bytes through
/// (UTF-8 user names sent unquoted).
pub fn is_atom_char(b: u8) -> bool {
    !matches!(
        b,
        b'(' | b')' | b'{' | b' ' | b'%' | b'*' | b'"' | b'\\' | b']'
    ) && !b.is_ascii_control()
        && b != 0x7f
}

/// RFC 3501 §9 `ASTRING-CHAR = ATOM-CHAR / resp-specials`.
pub fn is_astring_char(b: u8) -> bool {
    is_atom_char(b) || b == b']'
}

/// A literal announcement at the end of a line (RFC 3501 §4.3, RFC 7888): `{N}` or `{N+}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiteralAnnouncement {
    /// The announced size; sizes beyond `u64` saturate (they are refused anyway).
    pub size: u64,
    /// `{N+}`: the client sends the bytes without waiting for `+`.
    pub non_sync: bool,
}

/// Whether `line` (one line of a command, starting at a token boundary: the start of the command
/// or just after a literal's payload) ends with a literal announcement outside a quoted string.
pub fn literal_at_end(line: &[u8]) -> Option<LiteralAnnouncement> {
    // Find where the last quoted string (if any) ends: a `{` inside quotes is not a literal.
    let mut in_quote = false;
    let mut escaped = false;
    for &b in line {
        if in_quote {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_quote = false;
            }
        } else if b == b'"' {
            in_quote = true;
        }
    }
    if in_quote {
        return None;
    }
    let body = line.strip_suffix(b"}")?;
    let open = body.iter().rposition(|b| *b == b'{')?;
    let (_, inner) = body.split_at(open);
    let inner = inner.get(1..)?;
    let (digits, non_sync) = match inner.strip_suffix(b"+") {
        Some(d) => (d, true),
        None => (inner, false),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let size = digits.iter().fold(0u64, |acc, d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    Some(LiteralAnnouncement { size, non_sync })
}

/// A read position in one command.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    fn peek(&self) -> Option<u8> {
        self.rest().first().copied()
    }

    fn at_end(&self) -> bool {
        self.rest().is_empty()
    }

    fn advance(&mut self, n: usize) -> &'a [u8] {
        let rest = self.rest();
        let n = n.min(rest.len());
        let (taken, _) = rest.split_at(n);
        self.pos += n;
        taken
    }

    fn take_while(&mut self, pred: impl Fn(u8) -> bool) -> &'a [u8] {
        let n = self
            .rest()
            .iter()
            .position(|b| !pred(*b))
            .unwrap_or(self.rest().len());
        self.advance(n)
    }

    /// Skip one or more spaces; false if there was none.
    fn spaces(&mut self) -> bool {
        !self.take_while(|b| b == b' ').is_empty()
    }

    /// RFC 3501 §9 `astring = 1*ASTRING-CHAR / string`.
    fn astring(&mut self) -> Result<Vec<u8>, &'static str> {
        match self.peek() {
            Some(b'"') => self.quoted(),
            Some(b'{') => self.literal().map(<[u8]>::to_vec),
            Some(b) if is_astring_char(b) => Ok(self.take_while(is_astring_char).to_vec()),
            _ => Err("Expected an atom, quoted string or literal"),
        }
    }

    /// RFC 3501 §9 `quoted = DQUOTE *QUOTED-CHAR DQUOTE`; `\\` and `\"` are the only escapes.
    /// CR and LF cannot appear (a line never holds them); NUL is refused; 8-bit bytes are kept.
    fn quoted(&mut self) -> Result<Vec<u8>, &'static str> {
        self.advance(1);
        let mut value = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                return Err("Unterminated quoted string");
            };
            self.advance(1);
            match b {
                b'"' => return Ok(value),
                b'\\' => match self.peek() {
                    Some(e @ (b'"' | b'\\')) => {
                        self.advance(1);
                        value.push(e);
                    }
                    _ => return Err("Invalid escape in quoted string"),
                },
                0 | b'\r' | b'\n' => return Err("Invalid character in quoted string"),
                _ => value.push(b),
            }
        }
    }

    /// RFC 3501 §9 `literal = "{" number "}" CRLF *CHAR8`, and RFC 7888 `{N+}`. The reader put
    /// the payload in place right after the CRLF.
    fn literal(&mut self) -> Result<&'a [u8], &'static str> {
        let rest = self.rest();
        let close = rest
            .iter()
            .position(|b| *b == b'}')
            .ok_or("Invalid literal")?;
        let (head, _) = rest.split_at(close + 1);
        let announced = literal_at_end(head).ok_or("Invalid literal")?;
        self.advance(close + 1);
        if self.advance(2) != b"\r\n" {
            return Err("Invalid literal");
        }
        let size = usize::try_from(announced.size).map_err(|_| "Literal too large")?;
        if self.rest().len() < size {
            return Err("Truncated literal");
        }
        Ok(self.advance(size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(s: &str) -> Tag {
        Tag::parse(s.as_bytes()).unwrap()
    }

    fn login_args(input: &[u8]) -> Result<(Vec<u8>, Vec<u8>), ParseError> {
        match parse_command(input)?.command {
            Command::Login { username, password } => Ok((username, password.expose().clone())),
            other => panic!("not a LOGIN: {other:?}"),
        }
    }

    #[test]
    fn tags() {
        for ok in ["00000000", "0000001a", "TAG1", "A001", "a.b-c", "x]"] {
            assert_eq!(
                Tag::parse(ok.as_bytes()).map(|t| t.0),
                Some(ok.into()),
                "{ok}"
            );
        }
        for bad in ["", "A+1", "A*", "A(", "{1}", "A\"", "t\x01", "\u{e9}"] {
            assert_eq!(Tag::parse(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn astring_forms_in_login() {
        // (input, username, password); each from a transcript or RFC 3501 §9.
        let cases: &[(&[u8], &[u8], &[u8])] = &[
            // laminas-mail: always quoted (imap-laminas-glpi10)
            (
                b"TAG1 LOGIN \"tickets@contoso.test\" \"secret\"",
                b"tickets@contoso.test",
                b"secret",
            ),
            // c-client: atoms (imap-c-client-login-no-auth-plain)
            (
                b"00000000 LOGIN tickets@contoso.test secret",
                b"tickets@contoso.test",
                b"secret",
            ),
            // laminas escapes only \ and " (imap-laminas-special-password)
            (
                b"TAG1 LOGIN \"alerts@contoso.test\" \"ab\\\"cd\\\\efgh\"",
                b"alerts@contoso.test",
                b"ab\"cd\\efgh",
            ),
            // c-client literal (imap-c-client-login-special-password)
            (
                b"00000000 LOGIN alerts@contoso.test {10}\r\nab\"cd\\efgh",
                b"alerts@contoso.test",
                b"ab\"cd\\efgh",
            ),
            // laminas literal holding a LF (imap-laminas-lf-password-literal)
            (
                b"TAG1 LOGIN \"sink@contoso.test\" {11}\r\nabcde\nfghij",
                b"sink@contoso.test",
                b"abcde\nfghij",
            ),
            // LITERAL+ for both, CRLF inside the payload
            (b"A LOGIN {4+}\r\nuser {4+}\r\np\r\nw", b"user", b"p\r\nw"),
            // empty quoted and empty literal
            (b"A LOGIN \"\" {0}\r\n", b"", b""),
            // raw 8-bit bytes are kept in quoted strings and atoms
            (
                b"A LOGIN \"j\xc3\xa9r\xc3\xb4me\" \"p\xe9\xff\"",
                "jérôme".as_bytes(),
                b"p\xe9\xff",
            ),
            (b"A LOGIN u\xc3\xa9 p", "ué".as_bytes(), b"p"),
            // case-insensitive name, extra spaces
            (b"a login  user   pass  ", b"user", b"pass"),
            // ']' is an ASTRING-CHAR
            (b"A LOGIN us]er pa]ss", b"us]er", b"pa]ss"),
            // a quoted string holding what looks like a literal
            (b"A LOGIN u \"{5}\"", b"u", b"{5}"),
        ];
        for (input, user, pass) in cases {
            let (u, p) = login_args(input)
                .unwrap_or_else(|e| panic!("{:?}: {e:?}", String::from_utf8_lossy(input)));
            assert_eq!(&u, user, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(&p, pass, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn malformed_commands() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"", None),
            (b" LOGIN a b", None),
            (b"+ LOGIN a b", None),
            (b"*", None),
            (b"\"A\" NOOP", None),
            (b"A", Some("Missing command")),
            (b"A ", Some("Missing command")),
            (b"A (", Some("Missing command")),
            (b"A LOGIN", Some("Expected LOGIN user password")),
            (b"A LOGIN user", Some("Expected LOGIN user password")),
            (
                b"A LOGIN user ",
                Some("Expected an atom, quoted string or literal"),
            ),
            (
                b"A LOGIN user pass extra",
                Some("Unexpected arguments after LOGIN user password"),
            ),
            (b"A LOGIN \"user pass", Some("Unterminated quoted string")),
            (
                b"A LOGIN \"us\\er\" p",
                Some("Invalid escape in quoted string"),
            ),
            (b"A LOGIN \"us\\", Some("Invalid escape in quoted string")),
            (
                b"A LOGIN \"u\0\" p",
                Some("Invalid character in quoted string"),
            ),
            (
                b"A LOGIN (user) p",
                Some("Expected an atom, quoted string or literal"),
            ),
            (
                b"A LOGIN u p%",
                Some("Unexpected arguments after LOGIN user password"),
            ),
            (b"A LOGIN u {-1}", Some("Invalid literal")),
            (b"A LOGIN u {abc}", Some("Invalid literal")),
            (b"A LOGIN u {}", Some("Invalid literal")),
            (b"A LOGIN u {+}", Some("Invalid literal")),
            (b"A LOGIN u {5", Some("Invalid literal")),
            (b"A LOGIN u {5}", Some("Invalid literal")),
            (b"A LOGIN u {5}\r\nab", Some("Truncated literal")),
            (b"A LOGIN u {5}xx", Some("Invalid literal")),
            (
                b"A LOGIN u {99999999999999999999999}\r\n",
                Some("Truncated literal"),
            ),
            (b"A LOGIN u {4294967295}\r\n", Some("Truncated literal")),
            (b"A CAPABILITY now", Some("Unexpected arguments")),
            (b"A STARTTLS x", Some("Unexpected arguments")),
            (b"A ID", Some("Missing ID parameters")),
            (b"A AUTHENTICATE", Some("Expected AUTHENTICATE mechanism")),
            (
                b"A AUTHENTICATE PLAIN abc def",
                Some("Unexpected arguments after the initial response"),
            ),
        ];
        for (input, reason) in cases {
            let got = parse_command(input).map(|t| t.command);
            let want = match reason {
                None => ParseError::NoTag,
                Some(r) => ParseError::Syntax {
                    tag: parse_tag(input).unwrap(),
                    reason: r,
                },
            };
            match got {
                Err(e) => assert_eq!(e, want, "{:?}", String::from_utf8_lossy(input)),
                Ok(c) => panic!("{:?} parsed as {c:?}", String::from_utf8_lossy(input)),
            }
        }
    }

    #[test]
    fn other_commands() {
        let name = |input: &[u8]| parse_command(input).map(|t| (t.tag, format!("{:?}", t.command)));
        assert_eq!(
            name(b"A001 CAPABILITY").unwrap(),
            (tag("A001"), "Capability".into())
        );
        assert_eq!(name(b"a noop ").unwrap().1, "Noop");
        assert_eq!(name(b"TAG2 LOGOUT").unwrap().1, "Logout");
        assert_eq!(name(b"TAG1 STARTTLS").unwrap().1, "StartTls");
        assert_eq!(name(b"x ID (\"name\" \"curl\")").unwrap().1, "Id");
        assert_eq!(name(b"x ID NIL").unwrap().1, "Id");
        assert_eq!(
            name(b"TAG2 SELECT \"INBOX\"").unwrap().1,
            "NeedsAuth(\"SELECT\")"
        );
        assert_eq!(
            name(b"A004 uid fetch 1 BODY[]").unwrap().1,
            "NeedsAuth(\"UID\")"
        );
        assert_eq!(name(b"A XYZZY").unwrap().1, "Unknown(\"XYZZY\")");
        match parse_command(b"A002 AUTHENTICATE plain AGdscGkAcHc=")
            .unwrap()
            .command
        {
            Command::Authenticate { mechanism, initial } => {
                assert_eq!(mechanism, "PLAIN");
                assert_eq!(initial.unwrap().expose(), b"AGdscGkAcHc=");
            }
            other => panic!("{other:?}"),
        }
        match parse_command(b"00000000 AUTHENTICATE PLAIN")
            .unwrap()
            .command
        {
            Command::Authenticate { mechanism, initial } => {
                assert_eq!(mechanism, "PLAIN");
                assert!(initial.is_none());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn literal_announcements() {
        type Case<'a> = (&'a [u8], Option<(u64, bool)>);
        let cases: &[Case<'_>] = &[
            (b"TAG1 LOGIN \"user\" {11}", Some((11, false))),
            (b"A LOGIN {4+}", Some((4, true))),
            (b"A LOGIN {0}", Some((0, false))),
            (b"A LOGIN u {4294967295}", Some((4_294_967_295, false))),
            (
                b"A LOGIN u {99999999999999999999999999}",
                Some((u64::MAX, false)),
            ),
            (b"A LOGIN u {-1}", None),
            (b"A LOGIN u {1a}", None),
            (b"A LOGIN u {}", None),
            (b"A LOGIN u {+}", None),
            (b"A LOGIN u {5} ", None),
            (b"A LOGIN u \"{5}", None),
            (b"A LOGIN u \"x\\\"{5}", None),
            (b"A LOGIN u \"x\\\\\" {5}", Some((5, false))),
            (b"A LOGIN u \"{5}\"", None),
            (b"}", None),
            (b"{3}", Some((3, false))),
            (b"", None),
        ];
        for (line, want) in cases {
            let got = literal_at_end(line).map(|l| (l.size, l.non_sync));
            assert_eq!(got, *want, "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn heads() {
        assert_eq!(
            parse_head(b"TAG1 LOGIN \"u\" {11}"),
            Some((tag("TAG1"), "LOGIN".into()))
        );
        assert_eq!(parse_head(b"TAG1"), Some((tag("TAG1"), String::new())));
        assert_eq!(parse_head(b"{5}"), None);
        assert_eq!(parse_tag(b"A1 x"), Some(tag("A1")));
        assert_eq!(parse_tag(b" x"), None);
    }

    #[test]
    fn never_panics_on_prefixes_of_odd_input() {
        let inputs: &[&[u8]] = &[
            b"A LOGIN {3}\r\nabc {2+}\r\nde",
            b"A LOGIN \"\\\"\\\\\" {18446744073709551615}\r\n",
            b"\xff\xfe LOGIN \xff \xff",
            b"A AUTHENTICATE = =",
        ];
        for input in inputs {
            for end in 0..=input.len() {
                let _ = parse_command(&input[..end]);
                let _ = parse_head(&input[..end]);
                let _ = literal_at_end(&input[..end]);
            }
        }
    }
}
