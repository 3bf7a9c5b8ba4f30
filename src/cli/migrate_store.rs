//! `authbridge migrate-store`: copies every delegated account's refresh token from the file store
//! (`state_dir/tokens`, sealed with the master key) into the configured shared store (Redis).
//!
//! Never loses a token and may be run again at any time: the file is only read, never changed or
//! removed; an account the shared store already holds is left as it is (a replica may have
//! rotated it since — its token is the newer one); the same token already there counts as
//! migrated. Each copy happens under the account's lease, so it does not race a running replica.
//! Needs the master key the file store was sealed with (the replicas must use the same).

use std::path::PathBuf;

use anyhow::anyhow;

use super::failure::Failure;
use super::setup::load_without_secrets;
use crate::config::Config;
use crate::token::{FileStore, StoreBackend, StoreConfig};

/// What happened to one account.
#[derive(Debug, PartialEq, Eq)]
pub enum Migrated {
    /// Copied into the shared store.
    Copied,
    /// The shared store holds the same token already.
    AlreadyThere,
    /// The shared store holds another token, which was kept.
    KeptShared,
    /// No token in the file store.
    NothingToCopy,
}

/// Runs `authbridge migrate-store [--config PATH]`.
pub fn run(config: Option<PathBuf>) -> Result<(), Failure> {
    let config = load_without_secrets(config)?;
    let results = migrate(&config)?;
    let mut failed = false;
    for (account, r) in results {
        match r {
            Ok(Migrated::Copied) => println!("{account}: copied into the shared store"),
            Ok(Migrated::AlreadyThere) => println!("{account}: already in the shared store"),
            Ok(Migrated::KeptShared) => println!(
                "{account}: the shared store already holds another token for it (stored by a \
                 replica or a login); kept that one, the file's token was not copied"
            ),
            Ok(Migrated::NothingToCopy) => {
                println!("{account}: no token in the file store, nothing to copy")
            }
            Err(e) => {
                failed = true;
                println!("{account}: not migrated: {e}");
            }
        }
    }
    if failed {
        return Err(Failure::Runtime(anyhow!(
            "some accounts were not migrated (see above); the file store is unchanged, run the \
             command again once the cause is fixed"
        )));
    }
    Ok(())
}

/// Per account: what happened, or why it failed.
pub type Outcomes = Vec<(String, Result<Migrated, String>)>;

/// Copies each delegated account's token; per account what happened or why it failed.
pub fn migrate(config: &Config) -> Result<Outcomes, Failure> {
    if !matches!(config.token_store, StoreConfig::Redis(_)) {
        return Err(Failure::Usage(anyhow!(
            "token_store is `file`: set `token_store: {{ type: redis, url: … }}` in {} first, \
             then run migrate-store to copy the file store's tokens into Redis",
            config.file.display()
        )));
    }
    let shared = crate::server::token_store(config).map_err(|e| Failure::Runtime(e.into()))?;
    let key = crate::token::MasterKey::load_or_create(
        config.key_file.as_deref(),
        std::env::var("AUTHBRIDGE_KEY")
            .ok()
            .map(crate::secret::SecretString::new),
        &config.state_dir,
    )
    .map_err(|e| Failure::Runtime(e.into()))?;
    let files = FileStore::open(&config.state_dir, key).map_err(|e| Failure::Runtime(e.into()))?;
    let mut out = Vec::new();
    for account in config
        .accounts
        .iter()
        .filter(|a| a.provider.flow.is_delegated())
    {
        let name = &account.name;
        let result = (|| {
            let Some(from_file) = files.load(name).map_err(|e| e.to_string())? else {
                return Ok(Migrated::NothingToCopy);
            };
            let _lease = shared.lock(name).map_err(|e| e.to_string())?;
            match shared.load(name) {
                Ok(Some(there)) if there.refresh_token == from_file.refresh_token => {
                    return Ok(Migrated::AlreadyThere);
                }
                Ok(Some(_)) => return Ok(Migrated::KeptShared),
                Ok(None) => {}
                // Unreadable there (another key, damaged): keep it, say why.
                Err(e) => return Err(e.to_string()),
            }
            shared
                .save(name, &from_file.refresh_token)
                .map(|_| Migrated::Copied)
                .map_err(|e| e.to_string())
        })();
        out.push((name.clone(), result));
    }
    Ok(out)
}
