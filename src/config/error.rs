//! The one error type of config loading: which file, which key path, what was expected.

use std::path::PathBuf;

/// A config problem: `file: key.path: message`.
#[derive(Debug, thiserror::Error)]
#[error("{}: {}{message}", file.display(), if path.is_empty() { String::new() } else { format!("{path}: ") })]
pub struct ConfigError {
    pub file: PathBuf,
    pub path: String,
    pub message: String,
}
