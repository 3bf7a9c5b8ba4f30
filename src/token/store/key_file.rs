//! Where the master key comes from: `key_file`, `AUTHBRIDGE_KEY`, or `<state_dir>/master.key`
//! (generated 0600 on first run). The key is 32 random bytes, base64 on one line. Shared by every
//! backend (a shared backend still seals with this key).

use std::fs;
use std::io;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

use super::atomic_write::{create_private_dir, parent_dir, sync_dir, temp_path, write_new_private};
use super::crypto::{KEY_LEN, MasterKey};
use super::error::{StoreError, io_err};
use crate::secret::{Secret, SecretString};

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
    let text = key.encoded();
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
