//! SMTP command lines before login (RFC 5321 §4.1, RFC 4954 §4).

/// A command the pre-login machine distinguishes. Arguments borrow from the line.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    Ehlo(&'a [u8]),
    Helo(&'a [u8]),
    StartTls {
        has_args: bool,
    },
    /// `AUTH <mechanism> [initial-response]`; the mechanism is upper-cased.
    Auth {
        mechanism: String,
        initial: Option<&'a [u8]>,
    },
    /// MAIL, RCPT, DATA, BDAT, VRFY, EXPN, ETRN: need a login first.
    NeedsAuth,
    Rset,
    Noop,
    Quit,
    Help,
    /// Empty line or an unknown verb.
    Unknown,
}

/// Parse one line (without CRLF). Verbs are case-insensitive.
pub fn parse_command(line: &[u8]) -> Command<'_> {
    let (verb, rest) = match line.iter().position(|b| *b == b' ') {
        Some(i) => (&line[..i], trim_spaces(&line[i + 1..])),
        None => (line, &line[line.len()..]),
    };
    let upper = verb.to_ascii_uppercase();
    match upper.as_slice() {
        b"EHLO" => Command::Ehlo(rest),
        b"HELO" => Command::Helo(rest),
        b"STARTTLS" => Command::StartTls {
            has_args: !rest.is_empty(),
        },
        b"AUTH" => {
            let (mech, initial) = match rest.iter().position(|b| *b == b' ') {
                Some(i) => (&rest[..i], Some(trim_spaces(&rest[i + 1..]))),
                None => (rest, None),
            };
            Command::Auth {
                mechanism: String::from_utf8_lossy(mech).to_ascii_uppercase(),
                initial: initial.filter(|i| !i.is_empty()),
            }
        }
        b"MAIL" | b"RCPT" | b"DATA" | b"BDAT" | b"VRFY" | b"EXPN" | b"ETRN" => Command::NeedsAuth,
        b"RSET" => Command::Rset,
        b"NOOP" => Command::Noop,
        b"QUIT" => Command::Quit,
        b"HELP" => Command::Help,
        _ => Command::Unknown,
    }
}

fn trim_spaces(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| *b != b' ').unwrap_or(s.len());
    let end = s.iter().rposition(|b| *b != b' ').map_or(start, |e| e + 1);
    &s[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&[u8], Command)] = &[
            (b"EHLO vm", Command::Ehlo(b"vm")),
            (b"ehlo [127.0.0.1]", Command::Ehlo(b"[127.0.0.1]")),
            (b"HELO x", Command::Helo(b"x")),
            (b"STARTTLS", Command::StartTls { has_args: false }),
            (b"STARTTLS x", Command::StartTls { has_args: true }),
            (
                b"AUTH LOGIN",
                Command::Auth {
                    mechanism: "LOGIN".into(),
                    initial: None,
                },
            ),
            (
                b"auth plain AGdscGkAcHc=",
                Command::Auth {
                    mechanism: "PLAIN".into(),
                    initial: Some(b"AGdscGkAcHc="),
                },
            ),
            (
                b"AUTH PLAIN ",
                Command::Auth {
                    mechanism: "PLAIN".into(),
                    initial: None,
                },
            ),
            (b"MAIL FROM:<a@b>", Command::NeedsAuth),
            (b"data", Command::NeedsAuth),
            (b"RSET", Command::Rset),
            (b"QUIT", Command::Quit),
            (b"", Command::Unknown),
            (b"\xff\x00", Command::Unknown),
        ];
        for (line, want) in cases {
            assert_eq!(
                &parse_command(line),
                want,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
