//! `authbridge check`: the config is valid (it loaded), then for every account a token is
//! fetched, and for every listener × account the upstream login is tried. Each line says OK or
//! what failed and how to fix it.

use std::io::Write;
use std::path::PathBuf;

use anyhow::anyhow;

use super::failure::Failure;
use super::setup::{load, runtime};
use crate::config::Config;
use crate::upstream::{self, AuthResult};

/// Runs `authbridge check [--config PATH]`; a failed check is a runtime failure.
pub fn run(config: Option<PathBuf>) -> Result<(), Failure> {
    let config = load(config)?;
    crate::telemetry::init(Some("warn"), config.log_format);
    let ok = runtime()?.block_on(check(&config, &mut std::io::stdout()));
    if ok {
        Ok(())
    } else {
        Err(Failure::Runtime(anyhow!("some checks failed (see above)")))
    }
}

/// Run every check, writing one line per result. Returns true when all passed.
pub async fn check(config: &Config, out: &mut dyn Write) -> bool {
    let mut ok = true;
    let _ = writeln!(
        out,
        "config {}: OK (accounts: {}, listeners: {})",
        config.file.display(),
        config.accounts.len(),
        config.listeners.len()
    );
    let tokens = match crate::server::token_manager(config) {
        Ok(t) => t,
        Err(e) => {
            let _ = writeln!(out, "token store: FAILED: {e}");
            return false;
        }
    };
    let mut good = Vec::new();
    for a in &config.accounts {
        match tokens.refresh_now(&a.name).await {
            Ok(t) => {
                let _ = writeln!(
                    out,
                    "account {}: token OK (provider {}, mailbox {})",
                    a.name, a.provider.name, a.mailbox
                );
                good.push((a, t));
            }
            Err(e) => {
                ok = false;
                let _ = writeln!(out, "account {}: token FAILED: {e}", a.name);
            }
        }
    }
    for l in &config.listeners {
        if l.relay.is_some() {
            let res = upstream::connect(
                &l.upstream,
                l.protocol,
                true,
                &config.hostname,
                &config.limits.timeouts,
            )
            .await;
            let line = match res {
                Ok(_) => format!(
                    "listener {} (relay → {}:{}): connector reachable, TLS OK",
                    l.name, l.upstream.host, l.upstream.port
                ),
                Err(e) => {
                    ok = false;
                    format!("listener {} (relay): connector FAILED: {e}", l.name)
                }
            };
            let _ = writeln!(out, "{line}");
            continue;
        }
        for (a, token) in &good {
            let res = async {
                let mut conn = upstream::connect(
                    &l.upstream,
                    l.protocol,
                    false,
                    &config.hostname,
                    &config.limits.timeouts,
                )
                .await?;
                conn.authenticate(
                    &a.mailbox,
                    &token.token,
                    config.limits.timeouts.upstream_auth,
                )
                .await
            }
            .await;
            let line = match res {
                Ok(AuthResult::Ok { .. }) => format!(
                    "listener {} ({} → {}:{}) as {}: upstream login OK",
                    l.name, l.protocol, l.upstream.host, l.upstream.port, a.name
                ),
                Ok(AuthResult::Rejected(text)) => {
                    ok = false;
                    format!(
                        "listener {} as {}: upstream login FAILED: {text} — {}",
                        l.name,
                        a.name,
                        crate::session::upstream_hint(&text, &a.mailbox)
                    )
                }
                Err(e) => {
                    ok = false;
                    format!("listener {} as {}: upstream FAILED: {e}", l.name, a.name)
                }
            };
            let _ = writeln!(out, "{line}");
        }
    }
    ok
}
