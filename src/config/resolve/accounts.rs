//! The `accounts:` section: each mailbox, the provider it gets tokens from, and its local
//! logins (unique user names, argon2id PHC hashes checked here so a bad hash fails at start-up,
//! the examples' published hashes refused).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use crate::config::error::ConfigError;
use crate::config::placeholders::published_hash;
use crate::config::resolved::{Account, Login};
use crate::config::schema::RawAccount;
use crate::password_hash::check_hash;
use crate::token::ProviderConfig;

use super::context::Resolver;

impl Resolver<'_> {
    pub(super) fn accounts(
        &self,
        raw: Vec<RawAccount>,
        providers: &BTreeMap<String, Arc<ProviderConfig>>,
    ) -> Result<Vec<Account>, ConfigError> {
        let mut accounts = Vec::new();
        let mut names = HashSet::new();
        let mut usernames = HashSet::new();
        for (i, a) in raw.into_iter().enumerate() {
            let at = format!("accounts[{i}]");
            if a.name.is_empty()
                || !a
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(self.err(
                    format!("{at}.name"),
                    "expected a non-empty name of letters, digits, `-`, `_` or `.` (it names a state file and a CLI argument)",
                ));
            }
            if !names.insert(a.name.clone()) {
                return Err(self.err(
                    format!("{at}.name"),
                    format!("account `{}` is defined twice", a.name),
                ));
            }
            let provider = providers.get(&a.provider).cloned().ok_or_else(|| {
                self.err(
                    format!("{at}.provider"),
                    format!(
                        "no provider named `{}` (defined: {})",
                        a.provider,
                        providers.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                )
            })?;
            if !a.mailbox.contains('@') {
                return Err(self.err(
                    format!("{at}.mailbox"),
                    "expected a mailbox address like tickets@contoso.com",
                ));
            }
            let mut logins = Vec::new();
            for (j, l) in a.logins.into_iter().enumerate() {
                let lat = format!("{at}.logins[{j}]");
                if l.username.is_empty() {
                    return Err(
                        self.err(format!("{lat}.username"), "expected a non-empty user name")
                    );
                }
                if !usernames.insert(l.username.clone()) {
                    return Err(self.err(
                        format!("{lat}.username"),
                        format!(
                            "login `{}` is used twice; a local user name must map to one account",
                            l.username
                        ),
                    ));
                }
                if let Some(password) = published_hash(&l.password_hash) {
                    return Err(self.err_at_value(
                        format!("{lat}.password_hash"),
                        &l.password_hash,
                        format!(
                            "this is the example's published hash of the password `{password}`, \
                             which anyone can look up: put the output of `authbridge \
                             hash-password` here"
                        ),
                    ));
                }
                check_hash(&l.password_hash).map_err(|why| {
                    self.err(
                        format!("{lat}.password_hash"),
                        format!("{why}; create one with `authbridge hash-password`"),
                    )
                })?;
                logins.push(Login {
                    username: l.username,
                    password_hash: l.password_hash,
                });
            }
            accounts.push(Account {
                name: a.name,
                provider,
                mailbox: a.mailbox,
                logins,
            });
        }
        Ok(accounts)
    }
}
