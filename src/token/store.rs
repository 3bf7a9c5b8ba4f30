//! Refresh tokens at rest: one file per account, `<state_dir>/tokens/<account>.json`.
//!
//! The file holds non-secret metadata in clear (version, account, time stored, cipher, a key check
//! value) and the refresh token sealed with ChaCha20-Poly1305 under the master key (random 12-byte
//! nonce, the account name as associated data, so a file copied to another account's name does not
//! open). Files are written to a temporary file in the same directory (mode 0600), fsynced, renamed
//! over the old one and the directory fsynced: after a crash at any instant the old or the new file
//! is there, never neither. The token text never reaches the disk in clear.
//!
//! The master key is 32 random bytes, base64 on one line, from `key_file`, `AUTHBRIDGE_KEY`, or
//! `<state_dir>/master.key` (generated 0600 on first run).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::secret::{Secret, SecretString};

const FILE_VERSION: u32 = 1;
const CIPHER: &str = "chacha20poly1305";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const MAX_ACCOUNT_NAME: usize = 128;
/// Temporary files older than this are leftovers of a killed writer.
const STALE_TEMPORARY: Duration = Duration::from_secs(3600);

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
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError + use<> {
    let path = path.to_owned();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

/// The 32-byte key that seals refresh tokens.
#[derive(Clone)]
pub struct MasterKey {
    key: Secret<[u8; KEY_LEN]>,
    /// Where it came from (a path or `AUTHBRIDGE_KEY`), for error messages.
    origin: String,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    /// `key_file` given: read it (base64 of 32 bytes, one line); if absent, generate and write it
    /// 0600 (creating parent directories 0700). Else `AUTHBRIDGE_KEY` (`env_value`) if set. Else
    /// `<state_dir>/master.key` as if `key_file` were that path.
    pub fn load_or_create(
        key_file: Option<&Path>,
        env_value: Option<SecretString>,
        state_dir: &Path,
    ) -> Result<MasterKey, StoreError> {
        if let Some(path) = key_file {
            return load_or_create_key_file(path);
        }
        if let Some(value) = env_value {
            return decode_key(value.expose(), "AUTHBRIDGE_KEY");
        }
        load_or_create_key_file(&state_dir.join("master.key"))
    }

    /// A key from raw bytes (tests, or a key held elsewhere).
    pub fn from_bytes(bytes: [u8; KEY_LEN], origin: impl Into<String>) -> MasterKey {
        MasterKey {
            key: Secret::new(bytes),
            origin: origin.into(),
        }
    }

    /// A fresh random key.
    pub fn generate(origin: impl Into<String>) -> Result<MasterKey, StoreError> {
        let origin = origin.into();
        let mut bytes = [0u8; KEY_LEN];
        if let Err(source) = random(&mut bytes) {
            return Err(StoreError::Io {
                action: "generate a master key for",
                path: PathBuf::from(origin),
                source,
            });
        }
        let key = MasterKey::from_bytes(bytes, origin);
        zeroize::Zeroize::zeroize(&mut bytes);
        Ok(key)
    }

    /// Where the key came from (a path or `AUTHBRIDGE_KEY`).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// A short, non-reversible fingerprint stored next to each sealed token, so a wrong key is told
    /// apart from a damaged file.
    fn check_value(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"authbridge token store key check v1\0");
        h.update(self.key.expose());
        STANDARD_NO_PAD.encode(&h.finalize()[..12])
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(Key::from_slice(self.key.expose()))
    }
}

fn load_or_create_key_file(path: &Path) -> Result<MasterKey, StoreError> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let text = SecretString::new(text);
            warn_if_loose(path);
            decode_key(text.expose(), &path.display().to_string())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => create_key_file(path),
        Err(e) => Err(io_err("read the master key file", path)(e)),
    }
}

fn create_key_file(path: &Path) -> Result<MasterKey, StoreError> {
    let dir = parent_dir(path);
    create_private_dir(dir)?;
    let key = MasterKey::generate(path.display().to_string())?;
    let text = SecretString::new(format!("{}\n", STANDARD.encode(key.key.expose())));
    let tmp = temp_path(dir, path)?;
    let written = write_new_private(&tmp, text.expose().as_bytes());
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("write the master key file", &tmp)(e));
    }
    // hard_link fails if another process created the key meanwhile: then use theirs.
    let linked = match fs::hard_link(&tmp, path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let _ = fs::remove_file(&tmp);
            return load_or_create_key_file(path);
        }
        Err(_) => fs::rename(&tmp, path),
        Ok(()) => fs::remove_file(&tmp),
    };
    if let Err(e) = linked {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("write the master key file", path)(e));
    }
    sync_dir(dir).map_err(io_err("sync", dir))?;
    tracing::info!(path = %path.display(), "generated a new master key for the token store");
    Ok(key)
}

fn decode_key(text: &str, origin: &str) -> Result<MasterKey, StoreError> {
    let bad = |reason: &str| StoreError::BadKey {
        origin: origin.to_owned(),
        reason: reason.to_owned(),
    };
    let t = text.trim();
    if t.is_empty() {
        return Err(bad("it is empty"));
    }
    if t.contains(['\n', '\r']) {
        return Err(bad("it has more than one line"));
    }
    let decoded = [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(t).ok())
        .map(Secret::new)
        .ok_or_else(|| bad("it is not base64"))?;
    let bytes: &Vec<u8> = decoded.expose();
    if bytes.len() != KEY_LEN {
        return Err(bad(&format!("it decodes to {} bytes, not 32", bytes.len())));
    }
    let mut key = [0u8; KEY_LEN];
    key.copy_from_slice(bytes);
    let master = MasterKey::from_bytes(key, origin);
    zeroize::Zeroize::zeroize(&mut key);
    Ok(master)
}

/// A refresh token read back from the store.
#[derive(Debug)]
pub struct StoredToken {
    pub refresh_token: SecretString,
    pub stored_at: SystemTime,
    pub version: u32,
}

/// What a token file holds. Only `sealed_refresh_token` is secret, and it is encrypted.
#[derive(Serialize, Deserialize)]
struct TokenFile {
    version: u32,
    account: String,
    /// Seconds since the Unix epoch.
    stored_at: u64,
    cipher: String,
    key_check: String,
    nonce: String,
    sealed_refresh_token: String,
}

/// The encrypted refresh-token store. Cheap to clone. Its methods do blocking file I/O.
#[derive(Clone, Debug)]
pub struct TokenStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state_dir: PathBuf,
    tokens_dir: PathBuf,
    key: MasterKey,
}

impl TokenStore {
    /// Opens (creating `state_dir` and `state_dir/tokens` 0700 if absent) the store. Temporary
    /// files left by a process killed mid-write are removed once they are an hour old (younger
    /// ones may belong to a write in progress in another process).
    pub fn open(state_dir: &Path, key: MasterKey) -> Result<TokenStore, StoreError> {
        create_private_dir(state_dir)?;
        let tokens_dir = state_dir.join("tokens");
        create_private_dir(&tokens_dir)?;
        remove_stale_temporaries(&tokens_dir, STALE_TEMPORARY);
        Ok(TokenStore {
            inner: Arc::new(Inner {
                state_dir: state_dir.to_owned(),
                tokens_dir,
                key,
            }),
        })
    }

    pub fn state_dir(&self) -> &Path {
        &self.inner.state_dir
    }

    /// The file that holds `account`'s token.
    pub fn path(&self, account: &str) -> Result<PathBuf, StoreError> {
        check_account_name(account)?;
        Ok(self.inner.tokens_dir.join(format!("{account}.json")))
    }

    /// The stored refresh token of `account`, `None` if there is none yet.
    pub fn load(&self, account: &str) -> Result<Option<StoredToken>, StoreError> {
        let path = self.path(account)?;
        let Some(file) = read_token_file(&path, account)? else {
            return Ok(None);
        };
        let corrupt = |reason: &str| StoreError::Corrupt {
            path: path.clone(),
            reason: reason.to_owned(),
        };
        if file.key_check != self.inner.key.check_value() {
            return Err(StoreError::KeyMismatch {
                path,
                key_source: self.inner.key.origin.clone(),
            });
        }
        let nonce = STANDARD
            .decode(&file.nonce)
            .ok()
            .filter(|n| n.len() == NONCE_LEN)
            .ok_or_else(|| corrupt("bad nonce"))?;
        let sealed = STANDARD
            .decode(&file.sealed_refresh_token)
            .map_err(|_| corrupt("sealed token is not base64"))?;
        let plain = self
            .inner
            .key
            .cipher()
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &sealed,
                    aad: account.as_bytes(),
                },
            )
            .map(Secret::new)
            .map_err(|_| corrupt("the sealed token does not authenticate"))?;
        let refresh_token = match std::str::from_utf8(plain.expose()) {
            Ok(s) => SecretString::new(s.to_owned()),
            Err(_) => return Err(corrupt("the token is not UTF-8")),
        };
        Ok(Some(StoredToken {
            refresh_token,
            stored_at: UNIX_EPOCH + Duration::from_secs(file.stored_at),
            version: file.version,
        }))
    }

    /// When `account`'s token was stored, without decrypting it (for status pages).
    pub fn stored_at(&self, account: &str) -> Result<Option<SystemTime>, StoreError> {
        let path = self.path(account)?;
        Ok(read_token_file(&path, account)?.map(|f| UNIX_EPOCH + Duration::from_secs(f.stored_at)))
    }

    /// Seals and stores `refresh_token` for `account`, replacing the old one atomically.
    pub fn save(&self, account: &str, refresh_token: &SecretString) -> Result<(), StoreError> {
        let path = self.path(account)?;
        let mut nonce = [0u8; NONCE_LEN];
        random(&mut nonce).map_err(io_err("generate a nonce for", &path))?;
        let sealed = self
            .inner
            .key
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: refresh_token.expose().as_bytes(),
                    aad: account.as_bytes(),
                },
            )
            .map_err(|_| io_err("seal the token for", &path)(io::Error::other("AEAD failure")))?;
        let stored_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let file = TokenFile {
            version: FILE_VERSION,
            account: account.to_owned(),
            stored_at,
            cipher: CIPHER.to_owned(),
            key_check: self.inner.key.check_value(),
            nonce: STANDARD.encode(nonce),
            sealed_refresh_token: STANDARD.encode(sealed),
        };
        let mut json = serde_json::to_vec_pretty(&file)
            .map_err(|e| io_err("encode", &path)(io::Error::other(e)))?;
        json.push(b'\n');
        let dir = &self.inner.tokens_dir;
        let tmp = temp_path(dir, &path)?;
        if let Err(e) = write_new_private(&tmp, &json).and_then(|()| fs::rename(&tmp, &path)) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("write", &path)(e));
        }
        sync_dir(dir).map_err(io_err("sync", dir))?;
        Ok(())
    }
}

/// Leftovers of interrupted writes (`.<name>.<random>.tmp`) older than `age`; errors are ignored.
fn remove_stale_temporaries(dir: &Path, age: Duration) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with('.') && name.ends_with(".tmp")) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|m| now.duration_since(m).unwrap_or_default() > age);
        if old {
            let _ = fs::remove_file(entry.path());
        }
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

fn check_account_name(name: &str) -> Result<(), StoreError> {
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

fn random(buf: &mut [u8]) -> io::Result<()> {
    getrandom::fill(buf).map_err(|e| io::Error::other(e.to_string()))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `.<name>.<random>.tmp` next to `path`.
fn temp_path(dir: &Path, path: &Path) -> Result<PathBuf, StoreError> {
    let mut r = [0u8; 8];
    random(&mut r).map_err(io_err("create a temporary file in", dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let suffix: String = r.iter().map(|b| format!("{b:02x}")).collect();
    Ok(dir.join(format!(".{name}.{suffix}.tmp")))
}

fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(io_err("create the directory", dir))
}

/// Creates `path` (which must not exist) with mode 0600, writes `bytes` and fsyncs it.
fn write_new_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let mut f = o.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

fn warn_if_loose(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = fs::metadata(path)
            && m.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                "the master key file is readable by other users: chmod 600 it"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0.ARoAv4j5cvGGr0GRqy180BHbR-SECRET-REFRESH-TOKEN-TEXT";

    fn key(byte: u8) -> MasterKey {
        MasterKey::from_bytes([byte; KEY_LEN], "test key")
    }

    /// Every file under `dir`, recursively, with its content.
    fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(all_files(&path));
            } else {
                let content = fs::read(&path).unwrap();
                out.push((path, content));
            }
        }
        out
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn round_trip_and_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let store = TokenStore::open(&state, key(1)).unwrap();
        assert!(store.load("tickets").unwrap().is_none());
        assert!(store.stored_at("tickets").unwrap().is_none());
        let before = SystemTime::now() - Duration::from_secs(1);
        store.save("tickets", &SecretString::from(TOKEN)).unwrap();
        let loaded = store.load("tickets").unwrap().unwrap();
        assert_eq!(loaded.refresh_token.expose(), TOKEN);
        assert_eq!(loaded.version, FILE_VERSION);
        assert!(loaded.stored_at >= before);
        assert_eq!(store.stored_at("tickets").unwrap(), Some(loaded.stored_at));
        // Another store over the same directory with the same key reads it too (a restart).
        let again = TokenStore::open(&state, key(1)).unwrap();
        assert_eq!(
            again
                .load("tickets")
                .unwrap()
                .unwrap()
                .refresh_token
                .expose(),
            TOKEN
        );
        #[cfg(unix)]
        {
            assert_eq!(mode(&state), 0o700);
            assert_eq!(mode(&state.join("tokens")), 0o700);
            assert_eq!(mode(&store.path("tickets").unwrap()), 0o600);
        }
    }

    #[test]
    fn token_text_never_on_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let store = TokenStore::open(tmp.path(), key(2)).unwrap();
        store.save("tickets", &SecretString::from(TOKEN)).unwrap();
        store.save("tickets", &SecretString::from(TOKEN)).unwrap();
        let needles = [
            TOKEN.as_bytes().to_vec(),
            "SECRET-REFRESH".as_bytes().to_vec(),
            STANDARD.encode(TOKEN).into_bytes(),
        ];
        let files = all_files(tmp.path());
        assert_eq!(
            files.len(),
            1,
            "only the token file, no temporary left: {files:?}"
        );
        for (path, content) in files {
            for n in &needles {
                assert!(
                    !content.windows(n.len()).any(|w| w == n.as_slice()),
                    "{} holds the token",
                    path.display()
                );
            }
            let text = String::from_utf8(content).unwrap();
            assert!(text.contains("\"account\": \"tickets\""), "{text}");
        }
    }

    #[test]
    fn wrong_key_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        TokenStore::open(tmp.path(), key(3))
            .unwrap()
            .save("tickets", &SecretString::from(TOKEN))
            .unwrap();
        let other =
            TokenStore::open(tmp.path(), MasterKey::from_bytes([4; 32], "/etc/ab/key")).unwrap();
        let err = other.load("tickets").unwrap_err();
        assert!(matches!(err, StoreError::KeyMismatch { .. }), "{err:?}");
        let msg = err.to_string();
        for want in [
            "key does not match",
            "key_file",
            "AUTHBRIDGE_KEY",
            "/etc/ab/key",
            "tickets.json",
        ] {
            assert!(msg.contains(want), "{msg}");
        }
        assert!(!msg.contains(TOKEN));
    }

    #[test]
    fn tampering_and_misplaced_files_are_detected() {
        let tmp = tempfile::tempdir().unwrap();
        let store = TokenStore::open(tmp.path(), key(5)).unwrap();
        store.save("tickets", &SecretString::from(TOKEN)).unwrap();
        let path = store.path("tickets").unwrap();

        // A file copied under another account's name.
        fs::copy(&path, store.path("other").unwrap()).unwrap();
        assert!(matches!(
            store.load("other"),
            Err(StoreError::Corrupt { .. })
        ));

        // The account field edited to match: the associated data no longer authenticates.
        let text = fs::read_to_string(&path).unwrap();
        fs::write(
            store.path("other").unwrap(),
            text.replace("\"account\": \"tickets\"", "\"account\": \"other\""),
        )
        .unwrap();
        let err = store.load("other").unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");

        // A flipped ciphertext byte.
        let mut file: TokenFile = serde_json::from_str(&text).unwrap();
        let mut sealed = STANDARD.decode(&file.sealed_refresh_token).unwrap();
        sealed[0] ^= 1;
        file.sealed_refresh_token = STANDARD.encode(sealed);
        fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
        assert!(matches!(
            store.load("tickets"),
            Err(StoreError::Corrupt { .. })
        ));

        fs::write(&path, b"{ not json").unwrap();
        assert!(matches!(
            store.load("tickets"),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn atomic_replace() {
        let tmp = tempfile::tempdir().unwrap();
        let store = TokenStore::open(tmp.path(), key(6)).unwrap();
        store.save("tickets", &SecretString::from("first")).unwrap();
        // A crash mid-write leaves a temporary file next to the old one: the old one still loads.
        let dir = tmp.path().join("tokens");
        fs::write(dir.join(".tickets.json.0011223344556677.tmp"), b"{\"half").unwrap();
        assert_eq!(
            store
                .load("tickets")
                .unwrap()
                .unwrap()
                .refresh_token
                .expose(),
            "first"
        );
        store
            .save("tickets", &SecretString::from("second"))
            .unwrap();
        assert_eq!(
            store
                .load("tickets")
                .unwrap()
                .unwrap()
                .refresh_token
                .expose(),
            "second"
        );
        // The replacement is a new inode renamed over the old one, and nothing else was left.
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        // A write that cannot happen (directory read-only) leaves the old token in place.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o500)).unwrap();
            let denied = store.save("tickets", &SecretString::from("third"));
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
            // Root ignores directory permissions; only check when the write was refused.
            if denied.is_err() {
                assert_eq!(
                    store
                        .load("tickets")
                        .unwrap()
                        .unwrap()
                        .refresh_token
                        .expose(),
                    "second"
                );
            }
        }
    }

    #[test]
    fn stale_temporaries_are_removed_on_open() {
        let tmp = tempfile::tempdir().unwrap();
        let store = TokenStore::open(tmp.path(), key(8)).unwrap();
        store.save("tickets", &SecretString::from("t")).unwrap();
        let dir = tmp.path().join("tokens");
        let stale = dir.join(".tickets.json.00aa.tmp");
        let fresh = dir.join(".tickets.json.11bb.tmp");
        fs::write(&stale, b"{").unwrap();
        fs::write(&fresh, b"{").unwrap();
        let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
        File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        TokenStore::open(tmp.path(), key(8)).unwrap();
        assert!(!stale.exists());
        assert!(fresh.exists(), "a young one may be a write in progress");
        assert!(store.path("tickets").unwrap().exists());
    }

    #[test]
    fn account_names_cannot_escape() {
        let tmp = tempfile::tempdir().unwrap();
        let store = TokenStore::open(tmp.path(), key(7)).unwrap();
        for bad in ["", "../x", "a/b", ".hidden", "a b", &"x".repeat(129)] {
            assert!(
                matches!(store.path(bad), Err(StoreError::InvalidAccount { .. })),
                "{bad:?}"
            );
        }
        for good in ["tickets", "glpi-2", "a.b_c", "tickets@contoso.com"] {
            assert!(store.path(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn key_file_created_then_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let key_file = tmp.path().join("secrets/deep/master.key");
        let k1 = MasterKey::load_or_create(Some(&key_file), None, tmp.path()).unwrap();
        let text = fs::read_to_string(&key_file).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert_eq!(STANDARD.decode(text.trim()).unwrap().len(), 32);
        #[cfg(unix)]
        {
            assert_eq!(mode(&key_file), 0o600);
            assert_eq!(mode(&tmp.path().join("secrets/deep")), 0o700);
        }
        // The env value is ignored when key_file is given.
        let env = Some(SecretString::from(STANDARD.encode([9u8; 32])));
        let k2 = MasterKey::load_or_create(Some(&key_file), env, tmp.path()).unwrap();
        assert_eq!(k1.check_value(), k2.check_value());
        assert_eq!(
            fs::read_dir(tmp.path().join("secrets/deep"))
                .unwrap()
                .count(),
            1
        );
        assert!(!format!("{k1:?}").contains(text.trim()));
    }

    #[test]
    fn key_from_env_then_state_dir_default() {
        let tmp = tempfile::tempdir().unwrap();
        let env = Some(SecretString::from(format!(
            " {}\n",
            STANDARD.encode([9u8; 32])
        )));
        let k = MasterKey::load_or_create(None, env, tmp.path()).unwrap();
        assert_eq!(k.origin(), "AUTHBRIDGE_KEY");
        assert_eq!(
            k.check_value(),
            MasterKey::from_bytes([9; 32], "x").check_value()
        );
        assert!(!tmp.path().join("master.key").exists());

        let state = tmp.path().join("state");
        let k = MasterKey::load_or_create(None, None, &state).unwrap();
        assert!(state.join("master.key").exists());
        let again = MasterKey::load_or_create(None, None, &state).unwrap();
        assert_eq!(k.check_value(), again.check_value());
    }

    #[test]
    fn bad_keys_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        for (value, why) in [
            ("", "empty"),
            ("!!!", "not base64"),
            ("AAAA", "3 bytes"),
            ("AAAA\nAAAA", "more than one line"),
        ] {
            let err = MasterKey::load_or_create(None, Some(SecretString::from(value)), tmp.path())
                .unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("AUTHBRIDGE_KEY") && msg.contains(why), "{msg}");
        }
        let key_file = tmp.path().join("bad.key");
        fs::write(&key_file, "hello world\n").unwrap();
        let msg = MasterKey::load_or_create(Some(&key_file), None, tmp.path())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("bad.key") && msg.contains("32 random bytes"),
            "{msg}"
        );
    }
}
