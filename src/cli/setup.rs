//! What the subcommands start with: the config, loaded from `--config` or the default path (a
//! config error is a usage failure), and the async runtime.

use std::path::PathBuf;

use anyhow::anyhow;

use super::failure::Failure;
use crate::config::{self, Config};

pub(super) fn load(path: Option<PathBuf>) -> Result<Config, Failure> {
    let path = path.unwrap_or_else(config::default_path);
    Config::load(&path).map_err(|e| Failure::Usage(e.into()))
}

pub(super) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(anyhow!("cannot start the async runtime: {e}")))
}
