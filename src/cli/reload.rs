//! `authbridge reload`: send SIGHUP to the `authbridge run` serving with this config's
//! `state_dir` (its pid file), then wait (bounded) for the process to report the outcome in
//! `state_dir/reload.status` and print it. Exit 0: the new config is in force; 1: it was refused
//! or failed to load (the running config stays in force), no process is running, or no result
//! came in time; 2: usage error. With `--no-wait`, exit 0 as soon as the signal was delivered.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::anyhow;

use super::failure::Failure;
use crate::config::{self, Config};
use crate::pidfile;
use crate::reload_status::ReloadStatus;

/// How often the status file is read while waiting.
const POLL: Duration = Duration::from_millis(100);

/// Runs `authbridge reload [--config PATH] [--timeout SECS] [--no-wait]`.
pub fn run(config: Option<PathBuf>, timeout: u64, no_wait: bool) -> Result<(), Failure> {
    let path = config.unwrap_or_else(config::default_path);
    let state_dir = state_dir_of(&path)?;
    let pid = pidfile::running_pid(&state_dir).map_err(|e| Failure::Runtime(e.into()))?;
    let before = ReloadStatus::read(&state_dir).filter(|s| s.pid == pid);
    #[cfg(unix)]
    pidfile::send_hangup(pid)
        .map_err(|e| Failure::Runtime(anyhow!("cannot signal authbridge (pid {pid}): {e}")))?;
    #[cfg(not(unix))]
    return Err(Failure::Runtime(anyhow!(
        "reload needs a Unix signal (SIGHUP)"
    )));
    if no_wait {
        println!("SIGHUP sent to authbridge (pid {pid}); its log says what the reload changed");
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(timeout);
    loop {
        if let Some(s) = ReloadStatus::read(&state_dir)
            .filter(|s| s.pid == pid && before.as_ref().is_none_or(|b| s.seq > b.seq))
        {
            println!("{}", s.message);
            println!(
                "reloads since start (pid {pid}): {} ok, {} failed",
                s.reloads_ok, s.reloads_failed
            );
            return if s.ok {
                Ok(())
            } else {
                Err(Failure::Runtime(anyhow!(
                    "the reload did not apply; fix the config and run `authbridge reload` again"
                )))
            };
        }
        if Instant::now() >= deadline {
            return Err(Failure::Runtime(anyhow!(
                "SIGHUP sent to authbridge (pid {pid}), but it reported no result within {timeout} s; \
                 see its log"
            )));
        }
        std::thread::sleep(POLL);
    }
}

/// The `state_dir` of the config at `path`. The new config may be invalid (that is for the
/// running process to report), so when it does not load, `state_dir` is read from the YAML alone.
fn state_dir_of(path: &Path) -> Result<PathBuf, Failure> {
    if let Ok(c) = Config::load_without_secrets(path) {
        return Ok(c.state_dir);
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Usage(anyhow!("cannot read {}: {e}", path.display())))?;
    let value: serde_norway::Value = serde_norway::from_str(&text).map_err(|e| {
        Failure::Usage(anyhow!(
            "{}: not YAML ({e}); cannot find its state_dir to reach the running authbridge",
            path.display()
        ))
    })?;
    let dir = match value.get("state_dir") {
        None => PathBuf::from(config::DEFAULT_STATE_DIR),
        Some(v) => PathBuf::from(v.as_str().ok_or_else(|| {
            Failure::Usage(anyhow!(
                "{}: state_dir: expected a path; cannot reach the running authbridge",
                path.display()
            ))
        })?),
    };
    let base = path.parent().unwrap_or(Path::new("."));
    Ok(if dir.is_absolute() {
        dir
    } else {
        base.join(dir)
    })
}
