//! How a subcommand fails: a usage or config problem, or a failure while running. The error is
//! the text the user reads (`authbridge: …` on stderr, its causes joined with `: `); the kind picks
//! the exit code (`super::exit_code`). `anyhow` is used in the CLI only, where errors become text.

/// Why a subcommand did not succeed.
pub enum Failure {
    /// A usage or config error (exit 2).
    Usage(anyhow::Error),
    /// A runtime failure (exit 1).
    Runtime(anyhow::Error),
}

impl Failure {
    /// The error to show, whatever its kind.
    pub fn error(&self) -> &anyhow::Error {
        match self {
            Failure::Usage(e) | Failure::Runtime(e) => e,
        }
    }
}
