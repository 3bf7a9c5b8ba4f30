//! The `accounts:` section: each mailbox, the provider it gets tokens from (or the account
//! whose token it reuses, `token_from`, for a shared mailbox), and its local logins (unique
//! user names, argon2id PHC hashes checked here so a bad hash fails at start-up, the examples'
//! published hashes refused).

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
        let mut pending = Vec::new();
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
            let provider = match (&a.provider, &a.token_from) {
                (Some(p), _) => Some(providers.get(p).cloned().ok_or_else(|| {
                    self.err(
                        format!("{at}.provider"),
                        format!(
                            "no provider named `{p}` (defined: {})",
                            providers.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    )
                })?),
                (None, Some(_)) => None,
                (None, None) => {
                    return Err(self.err(
                        format!("{at}.provider"),
                        "expected `provider: <name of a provider>` (or `token_from: <account>` \
                         to use another account's token)",
                    ));
                }
            };
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
            pending.push((at, a.name, provider, a.mailbox, a.token_from, logins));
        }
        // Second pass: `token_from` may name an account defined further down.
        for (at, name, provider, mailbox, token_from, logins) in &pending {
            let (provider, identity) = match token_from {
                None => (
                    provider
                        .clone()
                        .expect("provider is set without token_from"),
                    mailbox.clone(),
                ),
                Some(from) => {
                    let at = format!("{at}.token_from");
                    if from == name {
                        return Err(self.err(
                            at,
                            format!(
                                "account `{name}` cannot take the token from itself: remove \
                                 `token_from`, or name the account whose token opens {mailbox}"
                            ),
                        ));
                    }
                    let Some((_, _, owner_provider, owner_mailbox, owner_from, _)) =
                        pending.iter().find(|p| p.1 == *from)
                    else {
                        return Err(self.err(
                            at,
                            format!(
                                "no account named `{from}` (defined: {}); `token_from` names \
                                 the account whose token opens {mailbox}",
                                pending
                                    .iter()
                                    .map(|p| p.1.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        ));
                    };
                    if owner_from.as_deref() == Some(name.as_str()) {
                        return Err(self.err(
                            at,
                            format!(
                                "accounts `{name}` and `{from}` take their tokens from each \
                                 other, so neither has one: remove `token_from` from the account \
                                 that signs in (the delegate or the app)"
                            ),
                        ));
                    }
                    if let Some(next) = owner_from {
                        return Err(self.err(
                            at,
                            format!(
                                "account `{from}` itself takes its token from `{next}`; \
                                 write `token_from: {next}` here (a token is borrowed from the \
                                 account that owns it, not passed along a chain)"
                            ),
                        ));
                    }
                    let owner_provider = owner_provider
                        .clone()
                        .expect("an account without token_from has a provider");
                    if let Some(own) = provider
                        && own.name != owner_provider.name
                    {
                        return Err(self.err(
                            format!("{}.provider", at.trim_end_matches(".token_from")),
                            format!(
                                "provider `{}` differs from the provider `{}` of account \
                                 `{from}`, whose token this account uses: a token belongs to \
                                 its provider; remove `provider:` here or make them the same",
                                own.name, owner_provider.name
                            ),
                        ));
                    }
                    (owner_provider, owner_mailbox.clone())
                }
            };
            accounts.push(Account {
                name: name.clone(),
                provider,
                mailbox: mailbox.clone(),
                token_from: token_from.clone(),
                identity,
                logins: logins.clone(),
            });
        }
        Ok(accounts)
    }
}
