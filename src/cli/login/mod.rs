//! `authbridge login ACCOUNT`: the first delegated authorisation of an account, three ways.
//!
//! - **Browser** (default for `flow: authorization_code`): authorization code with PKCE (S256) and a
//!   random `state`. A one-shot HTTP listener on the loopback `redirect_uri` (default
//!   `http://localhost:8925/callback`; bound on 127.0.0.1, and ::1 too when the host is
//!   `localhost`) waits for the browser's redirect. Works over SSH with `ssh -L 8925:localhost:8925`.
//!   A redirect whose `state` does not match is answered 400 and ignored (it cannot be from this
//!   login); a matching one is exchanged once.
//! - **Paste** (`--paste`): the same URL; the user pastes the address the browser was sent to (the
//!   page may fail to load), for machines whose loopback port cannot be reached.
//! - **Device code** (`--device-code`, default for `flow: device_code`): prints the verification URI
//!   and the user code, polls at the given interval, adds 5 s on `slow_down`, stops on expiry and on
//!   `authorization_declined`.
//!
//! The code → token exchange goes through [`TokenManager::exchange_and_store`], which stores the
//! refresh token (encrypted, atomic replace) before anything else and updates the status file; a
//! running authbridge picks the new token up at its next refresh (it re-reads the store). The local
//! password plays no part. Nothing secret is printed: not the code, the verifier or any token.
//!
//! Files: `context.rs` what every flow shares, `auth_code.rs` the browser and paste flows,
//! `redirect.rs` the one-shot loopback HTTP listener the browser comes back to, `device.rs` the
//! device-code flow.
//!
//! [`TokenManager::exchange_and_store`]: crate::token::TokenManager::exchange_and_store

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use tokio::io::AsyncBufRead;

use super::failure::Failure;
use super::setup::{load, log_format, runtime};
use crate::config::Config;
use crate::token::Flow;

mod auth_code;
mod context;
mod device;
mod redirect;

pub use auth_code::DEFAULT_REDIRECT_URI;
pub use context::LoginError;
pub use redirect::{Loopback, loopback};

use context::{Ctx, say};

/// How to authorise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Browser,
    Paste,
    DeviceCode,
}

/// What `authbridge login` was asked for.
#[derive(Clone, Debug)]
pub struct LoginOptions {
    /// `None`: device code for `flow: device_code`, else the browser.
    pub mode: Option<Mode>,
    /// How long to wait for the browser's redirect or the pasted address.
    pub timeout: Duration,
}

impl Default for LoginOptions {
    fn default() -> Self {
        LoginOptions {
            mode: None,
            timeout: Duration::from_secs(600),
        }
    }
}

/// Runs `authbridge login ACCOUNT [--device-code | --paste] [--timeout SECS] [--config PATH]` on
/// the terminal.
pub fn run(
    account: &str,
    device_code: bool,
    paste: bool,
    timeout: u64,
    config: Option<PathBuf>,
) -> Result<(), Failure> {
    let config = load(config)?;
    crate::telemetry::init(
        Some("warn"),
        log_format(config.log_format)?,
        crate::telemetry::Sink::Stderr,
    );
    let opts = LoginOptions {
        mode: if device_code {
            Some(Mode::DeviceCode)
        } else if paste {
            Some(Mode::Paste)
        } else {
            None
        },
        timeout: Duration::from_secs(timeout),
    };
    let mut stdout = std::io::stdout();
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    runtime()?
        .block_on(login(&config, account, &opts, &mut stdout, &mut stdin))
        .map_err(|e| match e {
            LoginError::Usage(m) => Failure::Usage(anyhow!(m)),
            LoginError::Failed(m) => Failure::Runtime(anyhow!(m)),
        })
}

/// Runs one login for `account`, writing instructions to `out` and reading a pasted address from
/// `input` (`--paste` only).
pub async fn login(
    config: &Config,
    account: &str,
    opts: &LoginOptions,
    out: &mut (dyn Write + Send),
    input: &mut (dyn AsyncBufRead + Unpin + Send),
) -> Result<(), LoginError> {
    let acc = super::account_arg::delegated(config, account).map_err(LoginError::Usage)?;
    let provider = Arc::clone(&acc.provider);
    let mode = opts.mode.unwrap_or(match provider.flow {
        Flow::DeviceCode => Mode::DeviceCode,
        _ => Mode::Browser,
    });
    let manager = crate::server::token_manager(config)
        .map_err(|e| LoginError::Failed(format!("cannot open the token store: {e}")))?;
    let ctx = Ctx {
        manager: &manager,
        provider: &provider,
        account,
        mailbox: &acc.mailbox,
        extra_consent: graph_consent(config, &provider),
    };
    match mode {
        Mode::DeviceCode => device::device_code(&ctx, out).await?,
        Mode::Browser | Mode::Paste => {
            auth_code::auth_code(&ctx, mode == Mode::Paste, opts.timeout, out, input).await?
        }
    }
    let path = manager.store().location(account).unwrap_or_default();
    say(
        out,
        &format!(
            "Account {account} ({}) is authorised: the refresh token is stored, encrypted, in {path}.\n\
             A running authbridge uses it from its next token refresh; no restart needed.",
            acc.mailbox
        ),
    );
    Ok(())
}

/// With a Graph listener in the config, a Microsoft account's login also asks consent for
/// Graph `Mail.Send`: one authorize request may name scopes of several resources for consent,
/// while each token is for one resource, so the Graph token is later redeemed from the same
/// refresh token.
fn graph_consent(config: &Config, provider: &crate::token::ProviderConfig) -> Vec<String> {
    let graph_listener = config.listeners.iter().any(|l| l.graph.is_some());
    if !graph_listener || crate::graph::supported(provider).is_err() {
        return Vec::new();
    }
    // A shared mailbox sent from with this provider's delegated token needs Mail.Send.Shared.
    let on_behalf = config
        .accounts
        .iter()
        .any(|a| a.provider.name == provider.name && a.delegate().is_some());
    let mut wanted = crate::graph::scopes(provider, false);
    if on_behalf {
        wanted.extend(crate::graph::scopes(provider, true));
        wanted.dedup();
    }
    wanted
        .into_iter()
        .filter(|s| !provider.scopes.contains(s))
        .collect()
}
