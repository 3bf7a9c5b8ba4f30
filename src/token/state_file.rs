//! What `authbridge status` needs from a running authbridge: one small JSON file per account,
//! `<state_dir>/status/<account>.json`, rewritten by the [`TokenManager`] of whichever process
//! acts on the account (the server on every refresh, `authbridge login` after storing a token).
//!
//! Only non-secret metadata: times, the flow, the last error as a sentence (errors never hold a
//! secret) and the needs-login hint. Written to a temporary file and renamed over the old one, so a
//! reader sees the old or the new content; not fsynced (losing an update in a crash only makes
//! `status` older, the tokens live in the store). Unreadable files are treated as absent.
//!
//! [`TokenManager`]: super::TokenManager

use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const VERSION: u32 = 1;
/// Status files larger than this are not read.
const MAX_FILE: u64 = 64 * 1024;

/// The persisted status of one account. Times are seconds since the Unix epoch (read them with
/// [`from_unix_secs`](super::unix_time::from_unix_secs), which clamps what a damaged file holds).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedStatus {
    pub version: u32,
    pub account: String,
    /// When this file was written, and by which process.
    pub updated_at: u64,
    pub pid: u32,
    pub flow: String,
    /// Expiry of the access token the writer holds.
    pub access_token_expires_at: Option<u64>,
    /// Last successful token request.
    pub last_refresh: Option<u64>,
    /// Set while a token request is in flight.
    pub refreshing_since: Option<u64>,
    /// The last failure as a full sentence with its fix; cleared by a success.
    pub last_error: Option<String>,
    /// `transient`, `permanent` or `not_configured`.
    pub last_error_kind: Option<String>,
    /// Someone must act: the hint (what happened — what to do).
    pub needs_login: Option<String>,
    /// When the account entered the needs-login state.
    pub needs_login_since: Option<u64>,
    /// A client logged in since the writer started (its access token is kept fresh).
    pub in_use: bool,
    /// Set while a rotated refresh token is only in the writer's memory: why the store is
    /// behind. Absent in files written before it existed.
    #[serde(default)]
    pub store_behind: Option<String>,
}

/// The status files of one state directory.
#[derive(Clone, Debug)]
pub struct StatusFiles {
    dir: PathBuf,
}

impl StatusFiles {
    pub fn new(state_dir: &Path) -> StatusFiles {
        StatusFiles {
            dir: state_dir.join("status"),
        }
    }

    /// The file of `account` (account names are checked by the token store and the config; a name
    /// that could leave the directory is refused here too).
    pub fn path(&self, account: &str) -> Option<PathBuf> {
        let ok = !account.is_empty()
            && !account.starts_with('.')
            && account
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
        ok.then(|| self.dir.join(format!("{account}.json")))
    }

    /// The last status written for `account`, if any was and it is readable.
    pub fn load(&self, account: &str) -> Option<PersistedStatus> {
        let path = self.path(account)?;
        let file = fs::File::open(&path).ok()?;
        if file.metadata().ok()?.len() > MAX_FILE {
            return None;
        }
        let status: PersistedStatus = serde_json::from_reader(io::BufReader::new(file)).ok()?;
        (status.version == VERSION && status.account == account).then_some(status)
    }

    /// Replaces `account`'s status file (temporary file + rename, mode 0600).
    pub fn save(&self, status: &PersistedStatus) -> io::Result<()> {
        let path = self
            .path(&status.account)
            .ok_or_else(|| io::Error::other("account name cannot name a file"))?;
        let mut b = fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(&self.dir)?;
        let mut status = status.clone();
        status.version = VERSION;
        let mut json = serde_json::to_vec_pretty(&status).map_err(io::Error::other)?;
        json.push(b'\n');
        let mut r = [0u8; 6];
        getrandom::fill(&mut r).map_err(|e| io::Error::other(e.to_string()))?;
        let suffix: String = r.iter().map(|b| format!("{b:02x}")).collect();
        let tmp = self
            .dir
            .join(format!(".{}.json.{suffix}.tmp", status.account));
        let written = (|| {
            let mut o = fs::OpenOptions::new();
            o.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
            let mut f = o.open(&tmp)?;
            f.write_all(&json)?;
            fs::rename(&tmp, &path)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_files() {
        let tmp = tempfile::tempdir().unwrap();
        let files = StatusFiles::new(tmp.path());
        assert_eq!(files.load("tickets"), None);
        let s = PersistedStatus {
            account: "tickets".into(),
            updated_at: 1_700_000_000,
            pid: 42,
            flow: "authorization_code".into(),
            needs_login: Some(
                "AADSTS70008 refresh token expired — run `authbridge login tickets`".into(),
            ),
            needs_login_since: Some(1_700_000_000),
            ..Default::default()
        };
        files.save(&s).unwrap();
        files.save(&s).unwrap();
        let back = files.load("tickets").unwrap();
        assert_eq!(
            back,
            PersistedStatus {
                version: VERSION,
                ..s.clone()
            }
        );
        // Nothing but the file is left behind.
        assert_eq!(fs::read_dir(tmp.path().join("status")).unwrap().count(), 1);
        // Another account's file, garbage and path tricks read as absent.
        fs::copy(files.path("tickets").unwrap(), files.path("other").unwrap()).unwrap();
        assert_eq!(files.load("other"), None);
        fs::write(files.path("tickets").unwrap(), b"{ half").unwrap();
        assert_eq!(files.load("tickets"), None);
        assert_eq!(files.path("../x"), None);
        assert_eq!(files.path(".hidden"), None);
    }
}
