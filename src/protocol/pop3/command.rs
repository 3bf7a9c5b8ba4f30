//! POP3 commands in the AUTHORIZATION state (RFC 1939 §4, §7; RFC 2449 CAPA; RFC 2595 STLS;
//! RFC 5034 AUTH).

/// A command the pre-login machine distinguishes. Arguments borrow from the line.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    Capa,
    /// `USER name`: the name is the rest of the line (RFC 1939 §7).
    User(&'a [u8]),
    /// `PASS string`: everything after `PASS ` to the end of the line, spaces included
    /// (RFC 1939 §7: "the server may treat spaces in the argument as part of the password").
    Pass(&'a [u8]),
    /// `AUTH [mechanism [initial-response]]`; the mechanism is upper-cased.
    Auth {
        mechanism: Option<String>,
        initial: Option<&'a [u8]>,
    },
    Stls,
    Quit,
    /// `APOP`: never offered (our greeting has no timestamp).
    Apop,
    /// STAT, LIST, RETR, DELE, NOOP, RSET, TOP, UIDL, LAST: valid only after login.
    NeedsAuth,
    /// A known command with missing or extra arguments.
    Syntax(&'static str),
    /// Empty line or an unknown keyword.
    Unknown,
}

/// Parse one line (without CRLF). Keywords are case-insensitive.
pub fn parse_command(line: &[u8]) -> Command<'_> {
    let (keyword, rest) = match line.iter().position(|b| *b == b' ') {
        Some(i) => {
            let (k, r) = line.split_at(i);
            (k, Some(r.get(1..).unwrap_or_default()))
        }
        None => (line, None),
    };
    match keyword.to_ascii_uppercase().as_slice() {
        b"CAPA" => no_arguments(rest, Command::Capa, "CAPA takes no arguments"),
        b"USER" => match rest.map(trim_spaces) {
            Some(name) if !name.is_empty() => Command::User(name),
            _ => Command::Syntax("Syntax: USER name"),
        },
        // The password is taken as is: leading and trailing spaces may be part of it.
        b"PASS" => match rest {
            Some(pw) => Command::Pass(pw),
            None => Command::Syntax("Syntax: PASS password"),
        },
        b"AUTH" => {
            let rest = rest.map(trim_spaces).unwrap_or_default();
            if rest.is_empty() {
                return Command::Auth {
                    mechanism: None,
                    initial: None,
                };
            }
            let (mech, initial) = match rest.iter().position(|b| *b == b' ') {
                Some(i) => {
                    let (m, ir) = rest.split_at(i);
                    (m, Some(trim_spaces(ir)))
                }
                None => (rest, None),
            };
            if initial.is_some_and(|ir| ir.contains(&b' ')) {
                return Command::Syntax("Syntax: AUTH mechanism [initial-response]");
            }
            Command::Auth {
                mechanism: Some(String::from_utf8_lossy(mech).to_ascii_uppercase()),
                initial: initial.filter(|ir| !ir.is_empty()),
            }
        }
        b"STLS" => no_arguments(rest, Command::Stls, "STLS takes no arguments"),
        b"QUIT" => no_arguments(rest, Command::Quit, "QUIT takes no arguments"),
        b"APOP" => Command::Apop,
        b"STAT" | b"LIST" | b"RETR" | b"DELE" | b"NOOP" | b"RSET" | b"TOP" | b"UIDL" | b"LAST"
        | b"UTF8" | b"LANG" => Command::NeedsAuth,
        _ => Command::Unknown,
    }
}

fn no_arguments<'a>(rest: Option<&[u8]>, command: Command<'a>, why: &'static str) -> Command<'a> {
    match rest.map(trim_spaces) {
        None | Some([]) => command,
        Some(_) => Command::Syntax(why),
    }
}

fn trim_spaces(s: &[u8]) -> &[u8] {
    s.trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        use Command::*;
        let cases: &[(&[u8], Command<'_>)] = &[
            (b"CAPA", Capa),
            (b"capa", Capa),
            (b"CAPA ", Capa),
            (b"CAPA x", Syntax("CAPA takes no arguments")),
            (b"USER tickets@contoso.test", User(b"tickets@contoso.test")),
            (b"user  glpi ", User(b"glpi")),
            (b"USER", Syntax("Syntax: USER name")),
            (b"USER ", Syntax("Syntax: USER name")),
            (b"PASS S3cret pw ", Pass(b"S3cret pw ")),
            (b"PASS  lead", Pass(b" lead")),
            (b"PASS ", Pass(b"")),
            (b"PASS", Syntax("Syntax: PASS password")),
            (
                b"AUTH",
                Auth {
                    mechanism: None,
                    initial: None,
                },
            ),
            (
                b"AUTH plain",
                Auth {
                    mechanism: Some("PLAIN".into()),
                    initial: None,
                },
            ),
            (
                b"AUTH PLAIN AGdscGkAcHc=",
                Auth {
                    mechanism: Some("PLAIN".into()),
                    initial: Some(b"AGdscGkAcHc="),
                },
            ),
            (
                b"AUTH PLAIN a b",
                Syntax("Syntax: AUTH mechanism [initial-response]"),
            ),
            (b"STLS", Stls),
            (b"QUIT", Quit),
            (b"APOP u d41d8cd98f00b204e9800998ecf8427e", Apop),
            (b"STAT", NeedsAuth),
            (b"TOP 1 0", NeedsAuth),
            (b"", Unknown),
            (b" USER x", Unknown),
            (b"\xff\xfe", Unknown),
        ];
        for (line, want) in cases {
            assert_eq!(
                parse_command(line),
                *want,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
