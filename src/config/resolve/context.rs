//! The resolver's context, shared by every section: the file being resolved (named in each
//! error), its text (to find the line of a value), the folder its relative paths are anchored
//! to, and whether secrets are read.

use std::path::{Path, PathBuf};

use crate::config::error::ConfigError;
use crate::config::secrets::Secrets;

/// Resolves one config file; each section adds its methods to it in its own file.
pub(in crate::config) struct Resolver<'a> {
    /// The config file, named in every error.
    pub(in crate::config) file: &'a Path,
    /// Its folder (made absolute when possible): relative paths in the file are anchored here.
    pub(in crate::config) base: &'a Path,
    /// The file's text.
    pub(in crate::config) text: &'a str,
    /// Read the secrets, or leave them out (`Config::load_without_secrets`).
    pub(in crate::config) secrets: Secrets,
}

impl Resolver<'_> {
    /// An error at `path` (the key path, e.g. `listeners[0].listen`).
    pub(super) fn err(&self, path: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            line: None,
            path: path.into(),
            message: message.into(),
        }
    }

    /// An error at `path` whose line is the first one holding `value` (a placeholder is found by
    /// its text: the parsed YAML keeps no positions).
    pub(super) fn err_at_value(
        &self,
        path: impl Into<String>,
        value: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        let line = (!value.is_empty())
            .then(|| self.text.lines().position(|l| l.contains(value)))
            .flatten()
            .map(|i| i + 1);
        ConfigError {
            line,
            ..self.err(path, message)
        }
    }

    /// `p` if absolute, else `p` under the config file's folder.
    pub(super) fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(p)
        }
    }
}
