//! `authbridge import-token ACCOUNT`: store an existing refresh token, read from stdin (surrounding
//! whitespace dropped), encrypted in the token store.

use std::io::Read;
use std::path::PathBuf;

use anyhow::anyhow;

use super::failure::Failure;
use super::setup::load;
use crate::config::Config;
use crate::secret::SecretString;

/// Runs `authbridge import-token ACCOUNT [--config PATH]`.
pub fn run(account: &str, config: Option<PathBuf>) -> Result<(), Failure> {
    let config = load(config)?;
    import_token(&config, account)
}

fn import_token(config: &Config, account: &str) -> Result<(), Failure> {
    if config.account(account).is_none() {
        let known: Vec<_> = config.accounts.iter().map(|a| a.name.as_str()).collect();
        return Err(Failure::Usage(anyhow!(
            "no account named `{account}` in {} (accounts: {})",
            config.file.display(),
            known.join(", ")
        )));
    }
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| Failure::Runtime(anyhow!("cannot read the refresh token from stdin: {e}")))?;
    let token = SecretString::new(text.trim().to_string());
    drop(text);
    if token.expose().is_empty() || token.expose().contains(char::is_whitespace) {
        return Err(Failure::Usage(anyhow!(
            "expected one refresh token on stdin (no spaces inside), got {}",
            if token.expose().is_empty() {
                "nothing"
            } else {
                "text with spaces"
            }
        )));
    }
    let store = crate::server::token_store(config).map_err(|e| Failure::Runtime(e.into()))?;
    // Under the account's lock: a running authbridge rotating the old token finishes first
    // (and this token then replaces the rotated one) or starts after (and uses this one).
    store
        .save_locked(account, &token)
        .map_err(|e| Failure::Runtime(anyhow!("cannot store the token: {e}")))?;
    println!(
        "stored the refresh token for {account} (encrypted) under {}; run `authbridge check` to try it",
        config.state_dir.display()
    );
    Ok(())
}
