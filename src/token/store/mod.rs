//! Refresh tokens at rest. [`TokenStore`] is the handle the rest of authbridge holds (cheap to
//! clone): the state directory plus one backend, chosen when the store is opened.
//!
//! Layout:
//! - `backend.rs`: the contract — [`StoreBackend`] (`load`, `save` with an expected version
//!   (compare-and-set), `lock`, `stored_at`, `location`), [`StoredToken`], [`StoreLock`].
//! - `file.rs`: the file backend, one sealed file per account (the default).
//! - `redis_backend.rs`: the Redis/Valkey backend replicas share: compare-and-set saves, the
//!   published access token and the refresh lease (a cluster-wide single flight, used by the
//!   token manager when [`TokenStore::shared`] says so). `record.rs`: its sealed values.
//! - `crypto.rs`: [`MasterKey`] and sealing/opening, shared by every backend; `key_file.rs`:
//!   where the key comes from. `atomic_write.rs`: temp file, fsync, rename, 0600/0700.
//! - `error.rs`: [`StoreError`].
//!
//! Why a trait behind an enum: the backends are a closed set picked by the config, so the handle
//! keeps an enum of them (backend-specific calls such as [`TokenStore::path`] stay typed) and
//! dispatches the common calls through the [`StoreBackend`] trait, which says what a new backend
//! must provide. The trait is synchronous: the file backend does blocking I/O, the status page and
//! the CLI are synchronous, and a handful of store calls per account per hour gains nothing from
//! async methods (which would make the trait not object-safe or need boxed futures). Async callers
//! go through [`TokenStore::blocking`].
//!
//! Locking: [`TokenStore::lock`] is the account's exclusive lock across processes (a `flock` in
//! the file backend), held by the caller around its read-modify-write: the token manager holds
//! it from loading a refresh token to saving the rotated one, so `authbridge login` or a second
//! `run` never refresh with the same token nor overwrite a newer one. A new token from a login or
//! an import goes through [`TokenStore::save_locked`]. What the manager does when a save fails
//! (keep the rotated token in memory, retry) is in `manager/rotation.rs`.

mod atomic_write;
mod backend;
mod crypto;
mod error;
mod file;
mod key_file;
pub mod record;
mod redis_backend;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

pub use backend::{StoreBackend, StoreLock, StoredToken};
pub use crypto::MasterKey;
pub use error::StoreError;
pub use file::FileStore;
pub use redis_backend::{
    Audience, CLOCK_SKEW_VAR, RedisSettings, RedisStore, SharedAccess, finish_lease_releases,
};

/// `token_store:` in the config: which backend holds the refresh tokens.
#[derive(Clone, Debug, Default)]
pub enum StoreConfig {
    /// One sealed file per account under `state_dir/tokens` (the default).
    #[default]
    File,
    /// A Redis or Valkey server the replicas share.
    Redis(RedisSettings),
}

use crate::secret::SecretString;

/// The encrypted refresh-token store. Cheap to clone. Its methods block (see the module docs).
#[derive(Clone, Debug)]
pub struct TokenStore {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Where status files and the default key file live, whatever the backend.
    state_dir: PathBuf,
    backend: Backend,
}

#[derive(Debug)]
enum Backend {
    File(FileStore),
    Redis(RedisStore),
}

impl TokenStore {
    /// Opens the file backend under `state_dir` (see [`FileStore::open`]).
    pub fn open(state_dir: &Path, key: MasterKey) -> Result<TokenStore, StoreError> {
        let file = FileStore::open(state_dir, key)?;
        Ok(TokenStore {
            inner: Arc::new(Shared {
                state_dir: state_dir.to_owned(),
                backend: Backend::File(file),
            }),
        })
    }

    /// Opens the backend `config` names; status files stay under `state_dir` either way.
    pub fn open_with(
        config: &StoreConfig,
        state_dir: &Path,
        key: MasterKey,
    ) -> Result<TokenStore, StoreError> {
        match config {
            StoreConfig::File => TokenStore::open(state_dir, key),
            StoreConfig::Redis(settings) => {
                atomic_write::create_private_dir(state_dir)?;
                let redis = RedisStore::open(settings, key)?;
                Ok(TokenStore {
                    inner: Arc::new(Shared {
                        state_dir: state_dir.to_owned(),
                        backend: Backend::Redis(redis),
                    }),
                })
            }
        }
    }

    /// The shared backend, when the replicas share the store (Redis): the token manager then
    /// takes the cluster-wide lease and adopts access tokens other replicas published.
    pub fn shared(&self) -> Option<&RedisStore> {
        match &self.inner.backend {
            Backend::File(_) => None,
            Backend::Redis(r) => Some(r),
        }
    }

    /// What kind of store this is and where, for `status`: `file` or the Redis URL.
    pub fn describe(&self) -> String {
        match &self.inner.backend {
            Backend::File(_) => format!("file ({})", self.inner.state_dir.join("tokens").display()),
            Backend::Redis(r) => format!("redis ({})", r.url()),
        }
    }

    /// Whether the store can be used now: always for the file backend; a `PING` for Redis.
    /// For `status` and readiness.
    pub fn health(&self) -> Result<(), StoreError> {
        match &self.inner.backend {
            Backend::File(_) => Ok(()),
            Backend::Redis(r) => r.health(),
        }
    }

    pub fn state_dir(&self) -> &Path {
        &self.inner.state_dir
    }

    /// The file that holds `account`'s token (file backend; for Redis, a name for messages).
    pub fn path(&self, account: &str) -> Result<PathBuf, StoreError> {
        match &self.inner.backend {
            Backend::File(f) => f.path(account),
            Backend::Redis(r) => r.location(account).map(PathBuf::from),
        }
    }

    /// Where `account`'s token is kept, for messages.
    pub fn location(&self, account: &str) -> Result<String, StoreError> {
        self.backend().location(account)
    }

    /// The stored refresh token of `account`, `None` if there is none yet.
    pub fn load(&self, account: &str) -> Result<Option<StoredToken>, StoreError> {
        self.backend().load(account)
    }

    /// Seals and stores `refresh_token` for `account`, replacing whatever is stored (a new
    /// login, an imported token); returns its version. Does not lock: the caller holds
    /// [`lock`](Self::lock), or nothing else can write (tests); else use
    /// [`save_locked`](Self::save_locked).
    pub fn save(&self, account: &str, refresh_token: &SecretString) -> Result<u64, StoreError> {
        self.backend().save(account, refresh_token, None)
    }

    /// [`save`](Self::save) under the account's lock, for a new login or an imported token while
    /// a running authbridge may be rotating the old one: its rotation then either ends before
    /// (and this token replaces it) or starts after (and uses this token).
    pub fn save_locked(
        &self,
        account: &str,
        refresh_token: &SecretString,
    ) -> Result<u64, StoreError> {
        let _lock = self.lock(account)?;
        self.save(account, refresh_token)
    }

    /// [`save`](Self::save), but with `Some(version)` only if that version is still the stored
    /// one (compare-and-set, see [`StoreBackend::save`]).
    pub fn replace(
        &self,
        account: &str,
        refresh_token: &SecretString,
        expected_version: Option<u64>,
    ) -> Result<u64, StoreError> {
        self.backend()
            .save(account, refresh_token, expected_version)
    }

    /// The exclusive right to change `account`'s stored token (see [`StoreBackend::lock`]);
    /// blocks while another process or handle holds it, up to a bound.
    pub fn lock(&self, account: &str) -> Result<StoreLock, StoreError> {
        self.backend().lock(account)
    }

    /// When `account`'s token was stored, without decrypting it (for status pages).
    pub fn stored_at(&self, account: &str) -> Result<Option<SystemTime>, StoreError> {
        self.backend().stored_at(account)
    }

    /// Runs `f` with this store on the blocking pool, for async callers.
    pub(crate) async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&TokenStore) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .unwrap_or_else(|e| {
                Err(StoreError::Io {
                    action: "run the store task for",
                    path: "the token store".into(),
                    source: std::io::Error::other(e.to_string()),
                })
            })
    }

    fn backend(&self) -> &dyn StoreBackend {
        match &self.inner.backend {
            Backend::File(f) => f,
            Backend::Redis(r) => r,
        }
    }
}
