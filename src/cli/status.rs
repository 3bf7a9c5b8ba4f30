//! `authbridge status`: prints one line per account (see [`crate::token::status_report`] for what
//! the line says and where it comes from) and exits 1 when any account needs attention: a login,
//! a last token request that failed, or a stale status file; with a shared store (Redis) a first
//! line says whether it answers.

use std::path::PathBuf;

use anyhow::anyhow;

use super::failure::Failure;
use super::setup::load_without_secrets;

pub use crate::token::status_report::{AccountLine, Judge, human, report, store_line, utc};

/// Runs `authbridge status [--config PATH]`: prints every account's line; an account that needs
/// action is a runtime failure.
pub fn run(config: Option<PathBuf>) -> Result<(), Failure> {
    let config = load_without_secrets(config)?;
    let store = store_line(&config);
    if let Some(l) = &store {
        println!("{}", l.text);
    }
    let lines = report(&config, &Judge::now(&config));
    for l in &lines {
        println!("{}", l.text);
    }
    if lines.iter().chain(&store).any(|l| l.needs_action) {
        Err(Failure::Runtime(anyhow!(
            "some accounts need attention (see above)"
        )))
    } else {
        Ok(())
    }
}
