//! `authbridge hash-password`: hash a local password into an argon2id PHC string. The password is
//! the whole of stdin (one trailing newline dropped) or, on a terminal, typed twice at a prompt.
//! An empty password, or one holding a line break (two lines pasted), is a usage error: one
//! password per run. `--allow-line-breaks` takes line breaks inside as part of the password (an
//! IMAP client can send one in a literal; a web form cannot).

use std::io::{IsTerminal, Read};

use anyhow::anyhow;

use super::failure::Failure;
use crate::secret::SecretString;

/// Runs `authbridge hash-password [--allow-line-breaks]`.
pub fn run(allow_line_breaks: bool) -> Result<(), Failure> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let prompt = |p| {
            rpassword::prompt_password(p)
                .map(SecretString::new)
                .map_err(|e| Failure::Runtime(anyhow!("cannot read the password: {e}")))
        };
        let first = prompt("Password: ")?;
        let second = prompt("Again: ")?;
        if first != second {
            return Err(Failure::Usage(anyhow!("the two passwords differ")));
        }
        first
    } else {
        let mut bytes = Vec::new();
        stdin
            .lock()
            .read_to_end(&mut bytes)
            .map_err(|e| Failure::Runtime(anyhow!("cannot read the password from stdin: {e}")))?;
        let password =
            one_password(bytes, allow_line_breaks).map_err(|e| Failure::Usage(anyhow!(e)))?;
        SecretString::new(password)
    };
    if password.expose().is_empty() {
        return Err(Failure::Usage(anyhow!(
            "refusing to hash an empty password (pipe one in, e.g. `printf '%s' 'the password' | \
             authbridge hash-password`, or run it on a terminal to be asked)"
        )));
    }
    let hash = crate::auth::hash_password(password.expose().as_bytes())
        .map_err(|e| Failure::Runtime(anyhow!(e)))?;
    println!("{hash}");
    Ok(())
}

/// The password in `stdin`'s bytes: one trailing newline (`\n` or `\r\n`) dropped; another line
/// break left inside is refused unless `allow_line_breaks` (a two-line paste would otherwise become
/// one password with a newline in it).
fn one_password(mut bytes: Vec<u8>, allow_line_breaks: bool) -> Result<String, &'static str> {
    if bytes.ends_with(b"\r\n") {
        bytes.truncate(bytes.len() - 2);
    } else if bytes.ends_with(b"\n") {
        bytes.pop();
    }
    if !allow_line_breaks && bytes.iter().any(|b| matches!(b, b'\n' | b'\r')) {
        zeroize::Zeroize::zeroize(&mut bytes);
        return Err(
            "one password per run; it contains a line break (only one trailing newline is \
             dropped; --allow-line-breaks keeps the others as part of the password)",
        );
    }
    String::from_utf8(bytes).map_err(|e| {
        let mut bytes = e.into_bytes();
        zeroize::Zeroize::zeroize(&mut bytes);
        "the password on stdin is not UTF-8"
    })
}

#[cfg(test)]
mod tests {
    use super::one_password;

    #[test]
    fn one_trailing_newline_is_dropped_and_inner_line_breaks_refused() {
        let ok = |b: &[u8]| one_password(b.to_vec(), false).unwrap();
        assert_eq!(ok(b"pa ss\n"), "pa ss");
        assert_eq!(ok(b"pa ss\r\n"), "pa ss");
        assert_eq!(ok(b"pa ss"), "pa ss");
        assert_eq!(ok(b"\n"), "");
        for two in [&b"one\ntwo"[..], b"one\ntwo\n", b"pass\n\n", b"a\rb"] {
            assert!(
                one_password(two.to_vec(), false)
                    .unwrap_err()
                    .contains("line break")
            );
        }
        assert_eq!(
            one_password(b"one\ntwo\n".to_vec(), true).unwrap(),
            "one\ntwo"
        );
        assert!(
            one_password(vec![0xff], false)
                .unwrap_err()
                .contains("UTF-8")
        );
    }
}
