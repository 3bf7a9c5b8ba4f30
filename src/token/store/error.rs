//! [`StoreError`]: what can go wrong storing or reading a refresh token or the master key, for
//! every backend. Messages name the file (or key) and the fix; never a secret.

use std::io;
use std::path::{Path, PathBuf};

/// Errors of the token store and the master key. Messages name the file and the fix; never a secret.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{} was sealed with a different master key than the one in use ({key_source}): the key does \
         not match — set `key_file` or AUTHBRIDGE_KEY to the key the store was written with, or \
         log in again to replace the token",
        path.display()
    )]
    KeyMismatch { path: PathBuf, key_source: String },
    #[error("{} is damaged ({reason}); log in again to replace it", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "the master key from {origin} is unusable: {reason} (expected the base64 of 32 random bytes \
         on one line)"
    )]
    BadKey { origin: String, reason: String },
    #[error(
        "account name {name:?} cannot name a token file (1 to 128 letters, digits, '.', '_', '-', \
         '@', not starting with '.')"
    )]
    InvalidAccount { name: String },
    /// A compare-and-set save found another version than the one it was based on: someone stored
    /// a token meanwhile, and it was kept.
    #[error(
        "the stored token of account {account} changed meanwhile (expected version {expected}, \
         found {}); the newer one is kept",
        .found.map_or_else(|| "none".to_owned(), |v| v.to_string())
    )]
    Conflict {
        account: String,
        expected: u64,
        found: Option<u64>,
    },
    /// The shared store (Redis) cannot be reached or refused the command.
    #[error(
        "the shared token store {store} is unavailable: {reason} — sessions with a cached access \
         token keep working, the others get a temporary failure until it is back; check that \
         Redis is running and reachable (authbridge reconnects by itself)"
    )]
    Unavailable { store: String, reason: String },
    /// Another process (or store handle) held the account's lock for longer than we wait.
    #[error(
        "{} stayed locked for {waited:?}: another authbridge process (`login`, `import-token`, \
         or a second `run` on the same state_dir) is changing the token",
        path.display()
    )]
    Locked {
        path: PathBuf,
        waited: std::time::Duration,
    },
}

/// Maps an I/O error of `action` on `path` into a [`StoreError::Io`].
pub(super) fn io_err(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(io::Error) -> StoreError + use<> {
    let path = path.to_owned();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}
