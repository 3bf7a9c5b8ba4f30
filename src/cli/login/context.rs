//! What every `authbridge login` flow shares: the account being authorised with its provider and
//! token manager ([`Ctx`]), how a login fails ([`LoginError`]) and how instructions reach the user
//! ([`say`]).

use std::io::Write;
use std::sync::Arc;

use crate::token::{ProviderConfig, TokenManager};

/// Why a login did not happen. `Usage` is a config or command-line problem (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

pub(super) struct Ctx<'a> {
    pub(super) manager: &'a Arc<TokenManager>,
    pub(super) provider: &'a ProviderConfig,
    pub(super) account: &'a str,
    pub(super) mailbox: &'a str,
    /// Scopes of other resources the user consents to in the same authorize request (Microsoft
    /// Graph `Mail.Send` when a Graph listener exists); never redeemed with the code.
    pub(super) extra_consent: Vec<String>,
}

pub(super) fn say(out: &mut (dyn Write + Send), text: &str) {
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}
