//! The contract every token-store backend fulfils ([`StoreBackend`]) and the values it trades in:
//! [`StoredToken`] (a refresh token with its version) and [`StoreLock`] (the guard of `lock`).
//!
//! Versions: every successful save gives the account's token a new, larger version; a save may
//! name the version it expects to replace and then fails with [`StoreError::Conflict`] if another
//! one is stored (compare-and-set: a rotated refresh token never overwrites one stored meanwhile).
//!
//! Methods block (the file backend does file I/O; a network backend waits for its server). Async
//! callers run them on the blocking pool (`TokenStore::blocking`); a backend with an async client
//! can drive it there with `tokio::runtime::Handle::block_on`.

use std::fmt;
use std::time::SystemTime;

use super::error::StoreError;
use crate::secret::SecretString;

/// A refresh token read back from the store.
#[derive(Debug)]
pub struct StoredToken {
    pub refresh_token: SecretString,
    pub stored_at: SystemTime,
    /// The version this token was stored as; pass it to a compare-and-set save. Tokens stored
    /// before versions existed read as version 0.
    pub version: u64,
}

/// One place refresh tokens are kept, sealed with the master key.
pub trait StoreBackend: fmt::Debug + Send + Sync {
    /// The stored refresh token of `account`, `None` if there is none yet.
    fn load(&self, account: &str) -> Result<Option<StoredToken>, StoreError>;

    /// Seals and stores `refresh_token` for `account`, replacing the old one atomically, and
    /// returns its new version. With `expected_version`, only if the stored version is still that
    /// one (else [`StoreError::Conflict`] and nothing is written); `None` replaces whatever is
    /// stored (a new login). The check and the write are one step only while the caller holds
    /// [`lock`](Self::lock) for the account (or the backend compares and sets atomically itself);
    /// `save` never takes that lock itself.
    fn save(
        &self,
        account: &str,
        refresh_token: &SecretString,
        expected_version: Option<u64>,
    ) -> Result<u64, StoreError>;

    /// The exclusive right to change `account`'s stored token until the guard is dropped: held
    /// across a read-modify-write (load, decide, save). How long to hold it is the caller's
    /// choice (around the save of a rotated token; a shared backend's single flight would hold it
    /// around the whole refresh).
    fn lock(&self, account: &str) -> Result<StoreLock, StoreError>;

    /// When `account`'s token was stored, without decrypting it (for status pages).
    fn stored_at(&self, account: &str) -> Result<Option<SystemTime>, StoreError>;

    /// Where `account`'s token is kept, for messages (a file path, a key name).
    fn location(&self, account: &str) -> Result<String, StoreError>;
}

/// The guard of [`StoreBackend::lock`]: dropping it releases the lock.
#[must_use = "the lock is released when the guard is dropped"]
pub struct StoreLock {
    /// Releases the lock when dropped (a file lock, a lease); `None` while the backend does not
    /// lock.
    held: Option<Box<dyn Send>>,
}

impl StoreLock {
    /// A guard that holds nothing: the backend does not lock (yet), see its documentation.
    pub fn unlocked() -> StoreLock {
        StoreLock { held: None }
    }

    /// A guard that releases the lock by dropping `held`.
    pub fn holding(held: impl Send + 'static) -> StoreLock {
        StoreLock {
            held: Some(Box::new(held)),
        }
    }
}

impl fmt::Debug for StoreLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreLock")
            .field("held", &self.held.is_some())
            .finish()
    }
}
