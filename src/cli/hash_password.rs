//! `authbridge hash-password`: hash a local password into an argon2id PHC string. The password is
//! the whole of stdin (one trailing newline dropped) or, on a terminal, typed twice at a prompt.

use std::io::{IsTerminal, Read};

use anyhow::{Context, anyhow, bail};

use super::failure::Failure;
use crate::secret::SecretString;

/// Runs `authbridge hash-password`.
pub fn run() -> Result<(), Failure> {
    hash_password().map_err(Failure::Runtime)
}

fn hash_password() -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let first = SecretString::new(rpassword::prompt_password("Password: ")?);
        let second = SecretString::new(rpassword::prompt_password("Again: ")?);
        if first != second {
            bail!("the two passwords differ");
        }
        first
    } else {
        let mut bytes = Vec::new();
        stdin.lock().read_to_end(&mut bytes)?;
        if bytes.ends_with(b"\r\n") {
            bytes.truncate(bytes.len() - 2);
        } else if bytes.ends_with(b"\n") {
            bytes.pop();
        }
        let s = String::from_utf8(bytes).context("the password on stdin is not UTF-8")?;
        SecretString::new(s)
    };
    if password.expose().is_empty() {
        bail!("refusing to hash an empty password");
    }
    let hash = crate::auth::hash_password(password.expose().as_bytes()).map_err(|e| anyhow!(e))?;
    println!("{hash}");
    Ok(())
}
