//! The ACCOUNT argument of `login` and `import-token`: the configured account it names, and the
//! refusal of an app-only (client_credentials) one, in the same words for both commands.

use crate::config::{Account, Config};

/// The account named `name`, or what the config has instead.
pub(super) fn named<'c>(config: &'c Config, name: &str) -> Result<&'c Account, String> {
    config.account(name).ok_or_else(|| {
        let known: Vec<_> = config.accounts.iter().map(|a| a.name.as_str()).collect();
        format!(
            "no account named `{name}` in {} (accounts: {})",
            config.file.display(),
            known.join(", ")
        )
    })
}

/// The account named `name` if it uses a delegated flow (one with a refresh token): an app-only
/// account has nothing to log in and no refresh token to import.
pub(super) fn delegated<'c>(config: &'c Config, name: &str) -> Result<&'c Account, String> {
    let account = named(config, name)?;
    if let Some(from) = &account.token_from {
        return Err(format!(
            "account `{name}` opens {} with the token of account `{from}` (`token_from`): \
             it has no token of its own; authorise `{from}` instead (`authbridge login {from}` \
             or `authbridge import-token {from}`)",
            account.mailbox
        ));
    }
    if !account.provider.flow.is_delegated() {
        return Err(format!(
            "account `{name}` uses provider `{}` with flow client_credentials (app-only): there \
             is nothing to log in and no refresh token to import; run `authbridge check` to \
             test it",
            account.provider.name
        ));
    }
    Ok(account)
}
