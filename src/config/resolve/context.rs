//! The resolver's context, shared by every section: the file being resolved (named in each
//! error) and the folder its relative paths are anchored to.

use std::path::{Path, PathBuf};

use crate::config::error::ConfigError;

pub(in crate::config) struct Resolver<'a> {
    pub(in crate::config) file: &'a Path,
    pub(in crate::config) base: &'a Path,
}

impl Resolver<'_> {
    pub(super) fn err(&self, path: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            path: path.into(),
            message: message.into(),
        }
    }

    pub(super) fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(p)
        }
    }
}
