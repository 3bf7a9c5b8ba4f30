//! How a subcommand fails: a usage or config problem, or a failure while running. The error is
//! the text the user reads (`authbridge: …` on stderr, see [`Failure::message`]); the kind picks
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

    /// The error and its causes joined with `: `, leaving out a cause whose text is already
    /// there: many errors repeat their source in their own message (`cannot listen on …: Address
    /// already in use (os error 98)`), which would otherwise print twice.
    pub fn message(&self) -> String {
        let mut text = String::new();
        for cause in self.error().chain() {
            let part = cause.to_string();
            if text.contains(&part) {
                continue;
            }
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot listen on 127.0.0.1:1587: {source}")]
    struct Bind {
        source: std::io::Error,
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = || std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let repeated = Failure::Runtime(anyhow::Error::new(Bind { source: io() }));
        assert_eq!(
            repeated.message(),
            format!("cannot listen on 127.0.0.1:1587: {}", io())
        );
        let chained =
            Failure::Usage(anyhow::Error::new(io()).context("cannot write certs/key.pem"));
        assert_eq!(
            chained.message(),
            format!("cannot write certs/key.pem: {}", io())
        );
    }
}
