//! The file backend: one file per account, `<state_dir>/tokens/<account>.json`.
//!
//! The file holds non-secret metadata in clear (format version, account, time stored, store
//! version, cipher, a key check value) and the refresh token sealed under the master key with the
//! account name as associated data, so a file copied to another account's name does not open.
//! Files are replaced atomically (`atomic_write.rs`): after a crash at any instant the old or the
//! new file is there, never neither. The token text never reaches the disk in clear.
//!
//! Format compatibility: `version` is the file format (1). The store version
//! ([`StoredToken::version`]) is kept in `revision`, a field added later: files written before it
//! read as version 0, and older authbridge builds read new files (they ignore the field).
//! Numbering restarts at 1 when the file is removed.
//!
//! Locking: [`lock`](StoreBackend::lock) takes an advisory, exclusive lock (`flock`) on
//! `<state_dir>/tokens/<account>.lock`, an empty file created on first use and never removed
//! (removing it would let two processes lock two different files). The lock is tied to the open
//! file, so two handles in one process exclude each other like two processes do, and the kernel
//! releases it when the holder exits, however it exits. The caller holds it around its
//! read-modify-write (load, refresh, save); `save` never takes it. A holder that does not let go
//! within [`LOCK_WAIT`] gets [`StoreError::Locked`]. Other platforms than Unix do not lock.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::atomic_write::{self, create_private_dir, remove_stale_temporaries};
use super::backend::{StoreBackend, StoreLock, StoredToken};
use super::crypto::{CIPHER, MasterKey, NONCE_LEN, SealError};
use super::error::{StoreError, io_err};
use crate::secret::SecretString;
use crate::token::unix_time::{from_unix_secs, unix_secs};

pub(super) const FILE_VERSION: u32 = 1;
const MAX_ACCOUNT_NAME: usize = 128;
/// Temporary files older than this are leftovers of a killed writer.
const STALE_TEMPORARY: Duration = Duration::from_secs(3600);
/// How long [`StoreBackend::lock`] waits for another holder (a token request under the lock
/// takes at most its timeout, 5 s by default, plus a file write).
pub(super) const LOCK_WAIT: Duration = Duration::from_secs(30);
/// The pause between two attempts while the lock is held elsewhere.
const LOCK_RETRY: Duration = Duration::from_millis(10);

/// What a token file holds. Only `sealed_refresh_token` is secret, and it is encrypted.
#[derive(Serialize, Deserialize)]
pub(super) struct TokenFile {
    /// The file format.
    pub(super) version: u32,
    pub(super) account: String,
    /// Seconds since the Unix epoch (read clamped: the file may be damaged).
    pub(super) stored_at: u64,
    /// The store version ([`StoredToken::version`]); absent (0) in files written before it.
    #[serde(default)]
    pub(super) revision: u64,
    pub(super) cipher: String,
    pub(super) key_check: String,
    pub(super) nonce: String,
    pub(super) sealed_refresh_token: String,
}

/// Refresh tokens in files under `<state_dir>/tokens`. Its methods do blocking file I/O.
#[derive(Debug)]
pub struct FileStore {
    tokens_dir: PathBuf,
    key: MasterKey,
}

impl FileStore {
    /// Opens (creating `state_dir` and `state_dir/tokens` 0700 if absent) the store. Temporary
    /// files left by a process killed mid-write are removed once they are an hour old (younger
    /// ones may belong to a write in progress in another process).
    pub fn open(state_dir: &Path, key: MasterKey) -> Result<FileStore, StoreError> {
        create_private_dir(state_dir)?;
        let tokens_dir = state_dir.join("tokens");
        create_private_dir(&tokens_dir)?;
        remove_stale_temporaries(&tokens_dir, STALE_TEMPORARY);
        Ok(FileStore { tokens_dir, key })
    }

    /// The file that holds `account`'s token.
    pub fn path(&self, account: &str) -> Result<PathBuf, StoreError> {
        check_account_name(account)?;
        Ok(self.tokens_dir.join(format!("{account}.json")))
    }
}

impl StoreBackend for FileStore {
    fn load(&self, account: &str) -> Result<Option<StoredToken>, StoreError> {
        let path = self.path(account)?;
        let Some(file) = read_token_file(&path, account)? else {
            return Ok(None);
        };
        let corrupt = |reason: &str| StoreError::Corrupt {
            path: path.clone(),
            reason: reason.to_owned(),
        };
        if file.key_check != self.key.check_value() {
            return Err(StoreError::KeyMismatch {
                path,
                key_source: self.key.origin().to_owned(),
            });
        }
        let nonce: [u8; NONCE_LEN] = STANDARD
            .decode(&file.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| corrupt("bad nonce"))?;
        let sealed = STANDARD
            .decode(&file.sealed_refresh_token)
            .map_err(|_| corrupt("sealed token is not base64"))?;
        let plain = self
            .key
            .open(account.as_bytes(), &nonce, &sealed)
            .ok_or_else(|| corrupt("the sealed token does not authenticate"))?;
        let refresh_token = match std::str::from_utf8(plain.expose()) {
            Ok(s) => SecretString::new(s.to_owned()),
            Err(_) => return Err(corrupt("the token is not UTF-8")),
        };
        Ok(Some(StoredToken {
            refresh_token,
            stored_at: from_unix_secs(file.stored_at),
            version: file.revision,
        }))
    }

    fn save(
        &self,
        account: &str,
        refresh_token: &SecretString,
        expected_version: Option<u64>,
    ) -> Result<u64, StoreError> {
        let path = self.path(account)?;
        // Read-modify-write: one step only while the caller holds `lock(account)`.
        let current = match read_token_file(&path, account) {
            Ok(file) => file.map(|f| f.revision),
            Err(e) if expected_version.is_some() => return Err(e),
            // Replacing whatever is there: an unreadable file is replaced too.
            Err(_) => None,
        };
        if let Some(expected) = expected_version
            && current != Some(expected)
        {
            return Err(StoreError::Conflict {
                account: account.to_owned(),
                expected,
                found: current,
            });
        }
        let revision = current
            .map_or(Some(1), |v| v.checked_add(1))
            .ok_or_else(|| StoreError::Corrupt {
                path: path.clone(),
                reason: "its revision cannot grow any more".to_owned(),
            })?;
        let sealed = self
            .key
            .seal(account.as_bytes(), refresh_token.expose().as_bytes())
            .map_err(|e| match e {
                SealError::Nonce(e) => io_err("generate a nonce for", &path)(e),
                SealError::Aead => {
                    io_err("seal the token for", &path)(io::Error::other("AEAD failure"))
                }
            })?;
        let stored_at = unix_secs(SystemTime::now());
        let file = TokenFile {
            version: FILE_VERSION,
            account: account.to_owned(),
            stored_at,
            revision,
            cipher: CIPHER.to_owned(),
            key_check: self.key.check_value(),
            nonce: STANDARD.encode(sealed.nonce),
            sealed_refresh_token: STANDARD.encode(sealed.ciphertext),
        };
        let mut json = serde_json::to_vec_pretty(&file)
            .map_err(|e| io_err("encode", &path)(io::Error::other(e)))?;
        json.push(b'\n');
        atomic_write::replace(&self.tokens_dir, &path, &json)?;
        Ok(revision)
    }

    /// An exclusive `flock` on `<account>.lock`, waiting up to `LOCK_WAIT` (30 s) for another
    /// holder (see the module documentation).
    #[cfg(unix)]
    fn lock(&self, account: &str) -> Result<StoreLock, StoreError> {
        use rustix::fs::{FlockOperation, flock};
        use rustix::io::Errno;

        check_account_name(account)?;
        let path = self.tokens_dir.join(format!("{account}.lock"));
        let mut o = fs::OpenOptions::new();
        o.read(true).write(true).create(true).truncate(false);
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let file = o.open(&path).map_err(io_err("open the lock file", &path))?;
        let started = Instant::now();
        loop {
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                // Closing the file (dropping the guard) releases the lock.
                Ok(()) => return Ok(StoreLock::holding(file)),
                Err(Errno::WOULDBLOCK) if started.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(LOCK_RETRY);
                }
                Err(Errno::WOULDBLOCK) => {
                    return Err(StoreError::Locked {
                        path,
                        waited: LOCK_WAIT,
                    });
                }
                Err(Errno::INTR) => {}
                Err(e) => return Err(io_err("lock", &path)(e.into())),
            }
        }
    }

    /// Not locked outside Unix (see the module documentation).
    #[cfg(not(unix))]
    fn lock(&self, account: &str) -> Result<StoreLock, StoreError> {
        check_account_name(account)?;
        Ok(StoreLock::unlocked())
    }

    fn stored_at(&self, account: &str) -> Result<Option<SystemTime>, StoreError> {
        let path = self.path(account)?;
        Ok(read_token_file(&path, account)?.map(|f| from_unix_secs(f.stored_at)))
    }

    fn location(&self, account: &str) -> Result<String, StoreError> {
        Ok(self.path(account)?.display().to_string())
    }
}

fn read_token_file(path: &Path, account: &str) -> Result<Option<TokenFile>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", path)(e)),
    };
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let file: TokenFile =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("not a token file: {e}")))?;
    if file.version != FILE_VERSION {
        return Err(corrupt(format!("unsupported version {}", file.version)));
    }
    if file.cipher != CIPHER {
        return Err(corrupt(format!("unsupported cipher {:?}", file.cipher)));
    }
    if file.account != account {
        return Err(corrupt(format!("it belongs to account {:?}", file.account)));
    }
    Ok(Some(file))
}

pub(super) fn check_account_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_ACCOUNT_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidAccount {
            name: name.to_owned(),
        })
    }
}
