//! Private files replaced atomically, for the file backend and the key file: directories created
//! 0700, a new file written to a temporary `.<name>.<random>.tmp` in the same directory (0600,
//! fsynced) and renamed over the old one, then the directory fsynced — after a crash at any instant
//! the old or the new file is there, never neither. Temporaries left by a killed writer are
//! removed once they are old.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::error::{StoreError, io_err};

/// Replaces `path` (in `dir`) with `bytes`: temporary file, fsync, rename, directory fsync. On
/// failure the old file is untouched and the temporary removed.
pub(super) fn replace(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = temp_path(dir, path)?;
    if let Err(e) = write_new_private(&tmp, bytes).and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("write", path)(e));
    }
    sync_dir(dir).map_err(io_err("sync", dir))
}

/// Leftovers of interrupted writes (`.<name>.<random>.tmp`) older than `age`; errors are ignored.
pub(super) fn remove_stale_temporaries(dir: &Path, age: Duration) {
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

pub(super) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `.<name>.<random>.tmp` next to `path`.
pub(super) fn temp_path(dir: &Path, path: &Path) -> Result<PathBuf, StoreError> {
    let mut r = [0u8; 8];
    getrandom::fill(&mut r)
        .map_err(|e| io::Error::other(e.to_string()))
        .map_err(io_err("create a temporary file in", dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let suffix: String = r.iter().map(|b| format!("{b:02x}")).collect();
    Ok(dir.join(format!(".{name}.{suffix}.tmp")))
}

pub(super) fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(io_err("create the directory", dir))
}

/// Creates `path` (which must not exist) with mode 0600, writes `bytes` and fsyncs it.
pub(super) fn write_new_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let mut f = o.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
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
