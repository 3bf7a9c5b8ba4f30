//! The one error type of config loading: which file, which line (when known), which key path,
//! what was expected.

use std::fmt;
use std::path::PathBuf;

/// A config problem: `file:line: key.path: message` (`file: key.path: message` when the line is
/// not known; no key path for whole-file problems).
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    /// The line (1-based) to edit, when known: serde errors carry it; placeholder values are
    /// found by their text.
    pub line: Option<usize>,
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_line_and_key() {
        let e = |line, path: &str| {
            ConfigError {
                file: "/etc/authbridge/a.yaml".into(),
                line,
                path: path.into(),
                message: "expected x".into(),
            }
            .to_string()
        };
        assert_eq!(
            e(Some(7), "providers.m365.client_id"),
            "/etc/authbridge/a.yaml:7: providers.m365.client_id: expected x"
        );
        assert_eq!(
            e(None, "listeners"),
            "/etc/authbridge/a.yaml: listeners: expected x"
        );
        assert_eq!(e(None, ""), "/etc/authbridge/a.yaml: expected x");
    }
}
