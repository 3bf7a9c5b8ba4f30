//! Values from the shipped example configs (`config/authbridge.example.yaml`, `config/glpi.yaml`)
//! that must never run: the all-zero client id, the example tenant and the published password
//! hashes, with the passwords they are of.
//!
//! How a placeholder hash is caught (a published hash gives anyone who read the example a login):
//! - every load compares each `password_hash` with the published PHC strings — a string
//!   comparison, so `run` (and a reload) stays fast however many logins there are;
//! - `authbridge check` also verifies each example password against each distinct hash
//!   ([`example_password`]), which catches `printf change-me | authbridge hash-password` (a new
//!   salt, so a new string; [`refuse_example_passwords`]). That is one argon2id computation per
//!   distinct hash and example password (~20 ms and 19 MiB each with the default parameters):
//!   fine once in `check`, too slow to add to every start-up of a config with many logins.

use std::collections::HashSet;

use argon2::password_hash::{PasswordHash, PasswordVerifier};

use super::error::ConfigError;
use super::resolved::Config;

/// The example's `client_id`; any id of only zeros and dashes is refused.
pub(super) const EXAMPLE_CLIENT_ID: &str = "00000000-0000-0000-0000-000000000000";
/// The example's `tenant`: refused unless `token_url` points the provider elsewhere (the sandbox
/// and tests use it against their own token endpoint).
pub(super) const EXAMPLE_TENANT: &str = "contoso.onmicrosoft.com";

/// (password, the hash of it an example config publishes).
const PUBLISHED: &[(&str, &str)] = &[
    (
        "change-me",
        "$argon2id$v=19$m=19456,t=2,p=1$Kqp+yng+3HQn6TjkPz0NqQ$rNuPh+W7oN9TArUDCANbq6NBHjwLArZbBgj58EGcB5U",
    ),
    (
        "glpi-example-password",
        "$argon2id$v=19$m=19456,t=2,p=1$8RxgzTsSzbHVGfv0H8rXBg$GitA4HaOfFESCYm7BVTpnv2fqsbZcLmLL57GCg/h7Qs",
    ),
];

/// Is `client_id` the example's (or another all-zero id)?
pub(super) fn is_example_client_id(client_id: &str) -> bool {
    let id = client_id.trim();
    id.contains('0') && id.chars().all(|c| c == '0' || c == '-')
}

/// Is `tenant` the example's?
pub(super) fn is_example_tenant(tenant: &str) -> bool {
    tenant.trim().eq_ignore_ascii_case(EXAMPLE_TENANT)
}

/// The example password whose published hash `hash` is, by string comparison (cheap).
pub(super) fn published_hash(hash: &str) -> Option<&'static str> {
    PUBLISHED
        .iter()
        .find(|(_, published)| *published == hash.trim())
        .map(|(password, _)| *password)
}

/// The example password `hash` is a hash of, if any, by verifying each (one argon2id run per
/// example password: for `authbridge check`, see the module doc).
pub fn example_password(hash: &str) -> Option<&'static str> {
    let parsed = PasswordHash::new(hash).ok()?;
    PUBLISHED
        .iter()
        .map(|(password, _)| *password)
        .find(|password| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
}

/// Refuses a `password_hash` that is a hash of an example password, whatever its salt (one
/// argon2id run per distinct hash and example password; for `authbridge check`, see the module
/// doc). The error names the key path, and the line when the file still reads the same.
pub fn refuse_example_passwords(config: &Config) -> Result<(), ConfigError> {
    let mut seen = HashSet::new();
    for (i, account) in config.accounts.iter().enumerate() {
        for (j, login) in account.logins.iter().enumerate() {
            if !seen.insert(login.password_hash.as_str()) {
                continue;
            }
            if let Some(password) = example_password(&login.password_hash) {
                let line = std::fs::read_to_string(&config.file).ok().and_then(|text| {
                    text.lines()
                        .position(|l| l.contains(login.password_hash.as_str()))
                        .map(|n| n + 1)
                });
                return Err(ConfigError {
                    file: config.file.clone(),
                    line,
                    path: format!("accounts[{i}].logins[{j}].password_hash"),
                    message: format!(
                        "this is a hash of the example password `{password}`, which anyone can \
                         guess: hash a password of your own with `authbridge hash-password` and \
                         put the output here"
                    ),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_hashes_are_those_of_the_example_configs_and_of_their_passwords() {
        for (file, text) in [
            (
                "authbridge.example.yaml",
                include_str!("../../config/authbridge.example.yaml"),
            ),
            ("glpi.yaml", include_str!("../../config/glpi.yaml")),
        ] {
            let hashes: Vec<&str> = text
                .split('"')
                .filter(|s| s.starts_with("$argon2id$"))
                .collect();
            assert!(!hashes.is_empty(), "{file}");
            for h in hashes {
                assert!(published_hash(h).is_some(), "{file}: {h} is not listed");
            }
            assert!(text.contains(EXAMPLE_CLIENT_ID), "{file}");
            assert!(text.contains(EXAMPLE_TENANT), "{file}");
        }
        for (password, hash) in PUBLISHED {
            assert_eq!(example_password(hash), Some(*password));
        }
        // Another hash of an example password is caught by verifying, not by the string.
        let fresh = crate::auth::hash_password(b"change-me").unwrap();
        assert_eq!(published_hash(&fresh), None);
        assert_eq!(example_password(&fresh), Some("change-me"));
        let other = crate::auth::hash_password(b"a real password").unwrap();
        assert_eq!(example_password(&other), None);
    }

    #[test]
    fn a_config_with_placeholders_is_refused_with_the_line_to_edit() {
        use crate::config::testkit::parse;
        let config = |tenant: &str, client_id: &str, extra: &str, hash: &str| {
            format!(
                "providers:\n  m365:\n    type: microsoft\n    tenant: {tenant}\n    client_id: \
                 {client_id}\n{extra}accounts:\n  - name: tickets\n    provider: m365\n    \
                 mailbox: tickets@contoso.com\n    logins:\n      - {{ username: glpi, \
                 password_hash: \"{hash}\" }}\n"
            )
        };
        let mine = crate::auth::hash_password(b"a real password").unwrap();
        let (_, change_me) = PUBLISHED[0];
        let id = "11111111-2222-3333-4444-555555555555";
        let e = parse(&config(
            "fabrikam.onmicrosoft.com",
            EXAMPLE_CLIENT_ID,
            "",
            &mine,
        ))
        .unwrap_err();
        assert!(
            e.starts_with(
                "/etc/authbridge/test.yaml:5: providers.m365.client_id: \
                 00000000-0000-0000-0000-000000000000 is the example's placeholder: put your app \
                 registration's Application (client) ID here"
            ),
            "{e}"
        );
        let e = parse(&config(EXAMPLE_TENANT, id, "", &mine)).unwrap_err();
        assert!(
            e.starts_with(
                "/etc/authbridge/test.yaml:4: providers.m365.tenant: contoso.onmicrosoft.com is \
                 the example's placeholder: put your tenant's domain"
            ),
            "{e}"
        );
        // The example tenant against another token endpoint (the sandbox, tests) is fine.
        let sandbox = "    token_url: https://127.0.0.1:18443/contoso.onmicrosoft.com/token\n";
        parse(&config(EXAMPLE_TENANT, id, sandbox, &mine)).unwrap();
        let e = parse(&config(EXAMPLE_TENANT, id, sandbox, change_me)).unwrap_err();
        assert!(
            e.starts_with(
                "/etc/authbridge/test.yaml:12: accounts[0].logins[0].password_hash: this is the \
                 example's published hash of the password `change-me`, which anyone can look up: \
                 put the output of `authbridge hash-password` here"
            ),
            "{e}"
        );
        let e = parse(&config("t", "\"\"", "", &mine)).unwrap_err();
        assert!(
            e.contains("providers.m365.client_id: expected the app registration"),
            "{e}"
        );
    }

    #[test]
    fn placeholder_ids() {
        assert!(is_example_client_id(EXAMPLE_CLIENT_ID));
        assert!(is_example_client_id("00000000000000000000000000000000"));
        assert!(!is_example_client_id(
            "11111111-2222-3333-4444-555555555555"
        ));
        assert!(!is_example_client_id("-"));
        assert!(is_example_tenant("Contoso.onmicrosoft.com"));
        assert!(!is_example_tenant("fabrikam.onmicrosoft.com"));
    }
}
