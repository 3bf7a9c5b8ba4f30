//! `authbridge run`: load the config, start logging, claim the pid file, serve every listener;
//! SIGHUP re-reads the config file (an invalid one changes nothing), SIGTERM or SIGINT cancel the
//! server and wait for it to stop (sessions get its grace period to finish). Tells the service
//! manager (sd_notify) when it is ready, reloading and stopping, and writes each reload's outcome
//! to `state_dir/reload.status` for `authbridge reload`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::failure::Failure;
use super::setup::{load, log_format, runtime};
use crate::config::{self, Config};
use crate::pidfile::PidFile;
use crate::reload_status::ReloadStatus;
use crate::server::Running;

/// Runs `authbridge run [--config PATH]`.
pub fn run(config: Option<PathBuf>) -> Result<(), Failure> {
    let path = config.unwrap_or_else(config::default_path);
    let config = load(Some(path.clone()))?;
    crate::telemetry::init(
        config.log_level.as_deref(),
        log_format(config.log_format)?,
        crate::telemetry::Sink::Server,
    );
    let pid_file =
        PidFile::claim(&config.state_dir).map_err(|e| Failure::Runtime(anyhow::Error::new(e)))?;
    let outcome = runtime()?
        .block_on(serve_until_signal(config, &path))
        .map_err(Failure::Runtime);
    drop(pid_file);
    outcome
}

async fn serve_until_signal(config: Config, path: &Path) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let state_dir = config.state_dir.clone();
    let running = crate::server::start(config, shutdown.clone()).await?;
    let watchdog = crate::notify::spawn_watchdog(shutdown.clone());
    crate::notify::ready(&status_line(&running).await);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
        let mut seq = 0u64;
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break }
                _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: shutting down"); break }
                _ = hup.recv() => {
                    seq += 1;
                    reload(&running, path, &state_dir, seq).await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        let _ = (path, &state_dir);
    }
    crate::notify::stopping("stopping: draining sessions");
    shutdown.cancel();
    running.wait().await;
    if let Some(w) = watchdog {
        w.abort();
    }
    Ok(())
}

/// One reload: re-read `path`, apply it, log and record the outcome.
async fn reload(running: &Running, path: &Path, state_dir: &Path, seq: u64) {
    tracing::info!(file = %path.display(), "SIGHUP: reloading the config");
    crate::notify::reloading();
    let file = path.to_owned();
    let loaded = tokio::task::spawn_blocking(move || Config::load(&file)).await;
    let (ok, message) = match loaded {
        Ok(Ok(config)) => match running.reload(config).await {
            Ok(report) => {
                tracing::info!(%report, "config reloaded");
                (true, format!("config reloaded: {report}"))
            }
            Err(e) => {
                tracing::error!(error = %e, "config reload refused; the running config stays in force");
                (false, format!("config reload refused: {e}"))
            }
        },
        Ok(Err(e)) => {
            running.reload_failed_to_load();
            tracing::error!(error = %e, "config reload failed: the new config is invalid; the running config stays in force");
            (
                false,
                format!("config reload failed (the running config stays in force): {e}"),
            )
        }
        Err(e) => {
            running.reload_failed_to_load();
            tracing::error!(error = %e, "config reload failed");
            (false, format!("config reload failed: {e}"))
        }
    };
    let counts = running.reload_counts();
    tracing::info!(
        ok,
        reloads_ok = counts.ok,
        reloads_failed = counts.failed,
        "reload finished"
    );
    let status = ReloadStatus {
        pid: std::process::id(),
        seq,
        ok,
        message,
        reloads_ok: counts.ok,
        reloads_failed: counts.failed,
        at_unix: crate::token::unix_secs(std::time::SystemTime::now()),
    };
    if let Err(e) = status.write(state_dir) {
        tracing::warn!(error = %e, dir = %state_dir.display(), "cannot write the reload status file; `authbridge reload` will not see this result");
    }
    crate::notify::ready(&status_line(running).await);
}

/// The short `STATUS=` line for the service manager.
async fn status_line(running: &Running) -> String {
    let listeners = running.listeners().await.len();
    let accounts = running.current_tokens().await.accounts().len();
    let c = running.reload_counts();
    format!(
        "serving: {listeners} listeners, {accounts} accounts; reloads: {} ok, {} failed",
        c.ok, c.failed
    )
}
