//! `authbridge import-token ACCOUNT`: store an existing refresh token, read from stdin (surrounding
//! whitespace dropped, at most 64 KiB), encrypted in the token store. Refused for app-only accounts
//! (they use no refresh token); needs the store's key, not the provider's secret. The text read is
//! kept in a buffer allocated once at its largest size and zeroed on drop, so no copy of the token
//! is left behind in memory we own.

use std::io::Read;
use std::path::PathBuf;

use anyhow::anyhow;
use zeroize::Zeroizing;

use super::failure::Failure;
use super::setup::load_without_secrets;
use crate::config::Config;
use crate::secret::SecretString;

/// Runs `authbridge import-token ACCOUNT [--config PATH]`.
pub fn run(account: &str, config: Option<PathBuf>) -> Result<(), Failure> {
    let config = load_without_secrets(config)?;
    import_token(&config, account)
}

fn import_token(config: &Config, account: &str) -> Result<(), Failure> {
    super::account_arg::delegated(config, account).map_err(|e| Failure::Usage(anyhow!(e)))?;
    let token = read_token(std::io::stdin().lock())?;
    let store = crate::server::token_store(config).map_err(|e| Failure::Runtime(e.into()))?;
    // Under the account's lock: a running authbridge rotating the old token finishes first
    // (and this token then replaces the rotated one) or starts after (and uses this one).
    store
        .save_locked(account, &token)
        .map_err(|e| Failure::Runtime(anyhow!("cannot store the token: {e}")))?;
    let at = store
        .location(account)
        .unwrap_or_else(|_| config.state_dir.display().to_string());
    println!(
        "stored the refresh token for {account} (encrypted) in {at}; run `authbridge check` to try it"
    );
    Ok(())
}

/// Refresh tokens are a few KiB; more input than this is not one.
const MAX_TOKEN_INPUT: usize = 64 * 1024;

/// The refresh token on `input`: all of it, surrounding whitespace dropped. Read into a zeroizing
/// buffer sized for the largest accepted input, so it never grows (growing leaves copies).
fn read_token(input: impl Read) -> Result<SecretString, Failure> {
    let mut text = Zeroizing::new(String::with_capacity(MAX_TOKEN_INPUT + 1));
    input
        .take(MAX_TOKEN_INPUT as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| Failure::Runtime(anyhow!("cannot read the refresh token from stdin: {e}")))?;
    if text.len() > MAX_TOKEN_INPUT {
        return Err(Failure::Usage(anyhow!(
            "expected one refresh token on stdin, got more than {} KiB",
            MAX_TOKEN_INPUT / 1024
        )));
    }
    let token = text.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(Failure::Usage(anyhow!(
            "expected one refresh token on stdin (no spaces inside), got {}",
            if token.is_empty() {
                "nothing"
            } else {
                "text with spaces"
            }
        )));
    }
    // One exact-size copy, into the secret; `text` is zeroed as it is dropped.
    Ok(SecretString::new(token.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_is_one_bounded_token() {
        let Ok(token) = read_token(&b"  0.ARoA-refresh.token \n"[..]) else {
            panic!("a token is read");
        };
        assert_eq!(token.expose(), "0.ARoA-refresh.token");
        for bad in [&b""[..], b" \n\t", b"two words\n"] {
            assert!(matches!(read_token(bad), Err(Failure::Usage(_))));
        }
        // At the bound it is read; past it, refused without reading on.
        let max = "x".repeat(MAX_TOKEN_INPUT);
        assert!(read_token(max.as_bytes()).is_ok_and(|t| t.expose().len() == MAX_TOKEN_INPUT));
        let over = "x".repeat(MAX_TOKEN_INPUT + 1);
        assert!(matches!(
            read_token(over.as_bytes()),
            Err(Failure::Usage(_))
        ));
        let endless = std::io::repeat(b'x');
        assert!(matches!(read_token(endless), Err(Failure::Usage(_))));
    }
}
