//! The resolver's context, shared by every section: the file being resolved (named in each
//! error) and the folder its relative paths are anchored to.

use std::path::{Path, PathBuf};

use crate::config::error::ConfigError;

/// Resolves one config file; each section adds its methods to it in its own file.
pub(in crate::config) struct Resolver<'a> {
    /// The config file, named in every error.
    pub(in crate::config) file: &'a Path,
    /// Its folder (made absolute when possible): relative paths in the file are anchored here.
    pub(in crate::config) base: &'a Path,
}

impl Resolver<'_> {
    /// An error at `path` (the key path, e.g. `listeners[0].listen`).
    pub(super) fn err(&self, path: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            path: path.into(),
            message: message.into(),
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
