//! The pid file `state_dir/authbridge.pid` that `authbridge run` holds while it serves, so
//! `authbridge reload` can find the process to signal and a second `run` on the same `state_dir`
//! is refused (two processes would race on the token store).
//!
//! Claimed atomically (written to a temporary file, then hard-linked into place, which fails if
//! the file exists), removed on a clean exit (only while it still names this process). A file left
//! by a process that is gone, or whose pid now belongs to another program, is stale and replaced.
//! The content is the pid and a newline; at most [`MAX_PID_FILE`] bytes are read.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The pid file's name inside `state_dir`.
pub const PID_FILE: &str = "authbridge.pid";
/// A pid file longer than this is not ours.
const MAX_PID_FILE: u64 = 64;

/// Why a pid file could not be claimed or used.
#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    #[error(
        "another authbridge (pid {pid}) is already running with state_dir {state_dir}: stop it \
         first, or give this one its own state_dir (two processes must not share a token store)"
    )]
    Running { pid: u32, state_dir: PathBuf },
    #[error("no authbridge is running with state_dir {state_dir}: {why}")]
    NotRunning { state_dir: PathBuf, why: String },
    #[error("pid file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The claimed pid file; dropping it removes the file if it still names this process.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    pid: u32,
}

impl PidFile {
    /// Claim `state_dir/authbridge.pid` for this process (creating `state_dir`, mode 0700, if
    /// absent). Refused while the file names a live authbridge process; a stale file is replaced.
    pub fn claim(state_dir: &Path) -> Result<PidFile, PidFileError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| PidFileError::Io { path, source }
        };
        create_private_dir(state_dir).map_err(io(state_dir))?;
        let path = state_dir.join(PID_FILE);
        let pid = std::process::id();
        let tmp = state_dir.join(format!(".{PID_FILE}.{pid}.tmp"));
        {
            let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(format!("{pid}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(io(&tmp))?;
        }
        let result = (|| {
            // Twice at most: once more after removing a stale file.
            for _ in 0..2 {
                match std::fs::hard_link(&tmp, &path) {
                    Ok(()) => {
                        return Ok(PidFile {
                            path: path.clone(),
                            pid,
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        match running_pid(state_dir) {
                            Ok(other) => {
                                return Err(PidFileError::Running {
                                    pid: other,
                                    state_dir: state_dir.to_owned(),
                                });
                            }
                            Err(PidFileError::NotRunning { why, .. }) => {
                                tracing::info!(file = %path.display(), "replacing a stale pid file ({why})");
                                match std::fs::remove_file(&path) {
                                    Ok(()) => {}
                                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                                    Err(e) => return Err(io(&path)(e)),
                                }
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    Err(e) => return Err(io(&path)(e)),
                }
            }
            Err(io(&path)(std::io::Error::other(
                "another process keeps creating it; is a second authbridge starting?",
            )))
        })();
        let _ = std::fs::remove_file(&tmp);
        result
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if read_pid(&self.path).ok() == Some(self.pid) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The pid of the authbridge serving with `state_dir`, from its pid file, if that process is
/// alive and is an authbridge.
pub fn running_pid(state_dir: &Path) -> Result<u32, PidFileError> {
    let not_running = |why: String| PidFileError::NotRunning {
        state_dir: state_dir.to_owned(),
        why,
    };
    let path = state_dir.join(PID_FILE);
    let pid = match read_pid(&path) {
        Ok(pid) => pid,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(not_running(format!(
                "there is no pid file {} (is `authbridge run` running with this config?)",
                path.display()
            )));
        }
        Err(e) => return Err(not_running(format!("pid file {}: {e}", path.display()))),
    };
    if pid == std::process::id() {
        return Err(not_running(format!("pid file names this process ({pid})")));
    }
    match is_authbridge(pid) {
        Liveness::Authbridge => Ok(pid),
        Liveness::Gone => Err(not_running(format!(
            "pid file {} names process {pid}, which has exited",
            path.display()
        ))),
        Liveness::Other(name) => Err(not_running(format!(
            "pid file {} names process {pid}, which is now `{name}`, not authbridge",
            path.display()
        ))),
    }
}

/// Send SIGHUP to `pid`.
#[cfg(unix)]
pub fn send_hangup(pid: u32) -> std::io::Result<()> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| std::io::Error::other(format!("{pid} is not a process id")))?;
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).map_err(Into::into)
}

fn read_pid(path: &Path) -> std::io::Result<u32> {
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_PID_FILE)
        .read_to_string(&mut text)?;
    text.trim()
        .parse()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| std::io::Error::other(format!("`{}` is not a process id", text.trim())))
}

enum Liveness {
    Authbridge,
    Gone,
    Other(String),
}

/// Is `pid` alive, and is it an authbridge (same program name as this process)? Where `/proc`
/// is missing, a live process counts as authbridge.
fn is_authbridge(pid: u32) -> Liveness {
    #[cfg(unix)]
    {
        let alive = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .map(|p| match rustix::process::test_kill_process(p) {
                Ok(()) => true,
                Err(e) => e == rustix::io::Errno::PERM,
            })
            .unwrap_or(false);
        if !alive {
            return Liveness::Gone;
        }
    }
    let comm = |p: &str| {
        std::fs::read_to_string(format!("/proc/{p}/comm"))
            .ok()
            .map(|s| s.trim().to_owned())
    };
    match (comm(&pid.to_string()), comm("self")) {
        (Some(theirs), Some(ours)) if theirs != ours => Liveness::Other(theirs),
        (None, Some(_)) => Liveness::Gone,
        _ => Liveness::Authbridge,
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn claim_refuses_a_live_authbridge_and_replaces_stale_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let claimed = PidFile::claim(&dir).unwrap();
        let path = dir.join(PID_FILE);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        // This process named in the file: not "running" for reload (it cannot signal itself)…
        assert!(matches!(
            running_pid(&dir),
            Err(PidFileError::NotRunning { .. })
        ));
        drop(claimed);
        assert!(!path.exists(), "removed on drop");

        // A live process of another program: stale.
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::write(&path, format!("{}\n", other.id())).unwrap();
        let e = running_pid(&dir).unwrap_err().to_string();
        assert!(e.contains("not authbridge"), "{e}");
        let claimed = PidFile::claim(&dir).unwrap();
        drop(claimed);
        let _ = other.kill();
        let _ = other.wait();

        // A process that has exited: stale.
        std::fs::write(&path, format!("{}\n", other.id())).unwrap();
        let e = running_pid(&dir).unwrap_err().to_string();
        assert!(e.contains("has exited"), "{e}");
        PidFile::claim(&dir).unwrap();

        // Garbage: not a pid.
        std::fs::write(&path, "x".repeat(1000)).unwrap();
        let e = running_pid(&dir).unwrap_err().to_string();
        assert!(e.contains("is not a process id"), "{e}");
    }
}
