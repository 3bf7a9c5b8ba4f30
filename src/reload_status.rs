//! The reload status file `state_dir/reload.status`: after each reload (SIGHUP) the serving
//! process writes its outcome there (JSON, replaced atomically, mode 0600), and `authbridge
//! reload` waits for a new one to report the result. No secret is ever written: the message is
//! the text that was logged.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The status file's name inside `state_dir`.
pub const STATUS_FILE: &str = "reload.status";
/// A larger file is not ours.
const MAX_STATUS_FILE: u64 = 64 * 1024;

/// The outcome of the latest reload of the process `pid`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadStatus {
    pub pid: u32,
    /// Reloads this process has finished (the first is 1).
    pub seq: u64,
    pub ok: bool,
    /// What changed, or why nothing did (the same text as the log line).
    pub message: String,
    /// Counters since the process started.
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    /// When it finished, seconds since the Unix epoch.
    pub at_unix: u64,
}

impl ReloadStatus {
    /// Replace the status file atomically (temporary file, fsync, rename).
    pub fn write(&self, state_dir: &Path) -> std::io::Result<()> {
        let path = state_dir.join(STATUS_FILE);
        let tmp = state_dir.join(format!(".{STATUS_FILE}.{}.tmp", std::process::id()));
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp)?;
            std::io::Write::write_all(&mut f, &text)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)
    }

    /// The status file, if there is a readable one.
    pub fn read(state_dir: &Path) -> Option<ReloadStatus> {
        let mut text = Vec::new();
        std::fs::File::open(state_dir.join(STATUS_FILE))
            .ok()?
            .take(MAX_STATUS_FILE)
            .read_to_end(&mut text)
            .ok()?;
        serde_json::from_slice(&text).ok()
    }
}
