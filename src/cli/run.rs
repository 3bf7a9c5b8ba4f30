//! `authbridge run`: load the config, start logging, serve every listener until SIGTERM or SIGINT,
//! then cancel the server and wait for it to stop (sessions get its grace period to finish).

use std::path::PathBuf;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::failure::Failure;
use super::setup::{load, runtime};
use crate::config::Config;

/// Runs `authbridge run [--config PATH]`.
pub fn run(config: Option<PathBuf>) -> Result<(), Failure> {
    let config = load(config)?;
    crate::telemetry::init(config.log_level.as_deref(), config.log_format);
    runtime()?
        .block_on(serve_until_signal(config))
        .map_err(Failure::Runtime)
}

async fn serve_until_signal(config: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let running = crate::server::start(config, shutdown.clone()).await?;
    let signals = async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        anyhow::Ok(())
    };
    signals.await?;
    shutdown.cancel();
    running.wait().await;
    Ok(())
}
