//! What the subcommands start with: the config, loaded from `--config` or the default path (a
//! config error is a usage failure), with or without its secrets, and the async runtime.

use std::path::PathBuf;

use anyhow::anyhow;

use super::failure::Failure;
use crate::config::{self, Config};

/// The config with its secrets, for the commands that talk to a provider.
pub(super) fn load(path: Option<PathBuf>) -> Result<Config, Failure> {
    let path = path.unwrap_or_else(config::default_path);
    Config::load(&path).map_err(|e| Failure::Usage(e.into()))
}

/// The config without reading any secret (`Config::load_without_secrets`), for the commands that
/// never talk to a provider (`status`, `import-token`): an unset `{ env: NAME }` does not stop
/// them.
pub(super) fn load_without_secrets(path: Option<PathBuf>) -> Result<Config, Failure> {
    let path = path.unwrap_or_else(config::default_path);
    Config::load_without_secrets(&path).map_err(|e| Failure::Usage(e.into()))
}

pub(super) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(anyhow!("cannot start the async runtime: {e}")))
}

/// The log format: `AUTHBRIDGE_LOG_FORMAT`, else the config's (an unknown value is a usage
/// error).
pub(super) fn log_format(configured: config::LogFormat) -> Result<config::LogFormat, Failure> {
    crate::telemetry::format(configured).map_err(|e| Failure::Usage(anyhow!(e)))
}
