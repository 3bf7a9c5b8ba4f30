//! Logging set-up: text lines on stderr, or JSON lines on stdout (one object per event, for
//! container log collectors); `RUST_LOG` overrides the configured level and
//! `AUTHBRIDGE_LOG_FORMAT` (`text` or `json`) the configured format. Nothing logged anywhere may
//! hold a secret: secrets live in `Secret<T>`, which prints as `[redacted]`, and raw pre-login
//! client lines are never logged.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The environment variable that overrides `log.format`.
pub const LOG_FORMAT_ENV: &str = "AUTHBRIDGE_LOG_FORMAT";

/// The format to log in: `AUTHBRIDGE_LOG_FORMAT` if set, else the configured one. An unknown
/// value is an error naming the variable and what it accepts.
pub fn format(configured: LogFormat) -> Result<LogFormat, String> {
    match std::env::var(LOG_FORMAT_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(configured),
        Ok(v) if v.eq_ignore_ascii_case("text") => Ok(LogFormat::Text),
        Ok(v) if v.eq_ignore_ascii_case("json") => Ok(LogFormat::Json),
        Ok(v) => Err(format!(
            "{LOG_FORMAT_ENV}={v:?}: expected `text` or `json` (or leave it unset for log.format)"
        )),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!(
            "{LOG_FORMAT_ENV}: expected `text` or `json` (or leave it unset for log.format)"
        )),
    }
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// Always stderr (commands whose stdout is their report: `check`, `login`).
    Stderr,
    /// The server: text on stderr, JSON lines on stdout.
    Server,
}

/// Install the global subscriber once; later calls are ignored (tests start many servers).
pub fn init(level: Option<&str>, format: LogFormat, sink: Sink) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level.unwrap_or("info")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = match (format, sink) {
        (LogFormat::Text, _) => builder
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        (LogFormat::Json, Sink::Server) => builder
            .with_writer(std::io::stdout)
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .try_init(),
        (LogFormat::Json, Sink::Stderr) => builder
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .try_init(),
    };
}
