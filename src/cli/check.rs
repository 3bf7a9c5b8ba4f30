//! `authbridge check`: the config is valid (it loaded; no login uses a hash of an example
//! password — a config error, exit 2), every listen address is free, then for every account a
//! token is fetched, and for every listener × account the upstream login is tried. Each line says
//! OK or what failed and how to fix it; any failure is exit 1. Before exiting it waits (bounded)
//! until the token manager has written each account's outcome to its status file, so
//! `authbridge status` shows what this check found.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;

use super::failure::Failure;
use super::setup::{load, runtime};
use crate::config::Config;
use crate::token::StatusFiles;
use crate::upstream::{self, AuthResult};

/// How long `check` waits for the status files to record its token requests' outcomes (they are
/// written by the token manager's task right after the result is handed out).
const STATUS_SETTLE: Duration = Duration::from_secs(5);
/// How often it looks meanwhile.
const STATUS_POLL: Duration = Duration::from_millis(20);

/// Runs `authbridge check [--config PATH]`; a config error is a usage failure (exit 2), a failed
/// check a runtime failure (exit 1).
pub fn run(config: Option<PathBuf>) -> Result<(), Failure> {
    let config = load(config)?;
    crate::config::refuse_example_passwords(&config).map_err(|e| Failure::Usage(e.into()))?;
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
    ok &= listen_addresses_free(config, out);
    let tokens = match crate::server::token_manager(config) {
        Ok(t) => t,
        Err(e) => {
            let _ = writeln!(out, "token store: FAILED: {e}");
            return false;
        }
    };
    for (name, p) in &config.providers {
        let _ = writeln!(
            out,
            "provider {name}: credential {} ({}), proxy {}",
            p.credential,
            p.describe_credential(),
            p.http.describe_proxy()
        );
    }
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
    status_files_settled(config, out).await;
    ok
}

/// Tries to bind every listener's address (and the admin listener's): `run` would fail on one
/// that is taken. Port 0 (any free port) is not tried. Returns true when all are free.
fn listen_addresses_free(config: &Config, out: &mut dyn Write) -> bool {
    let mut sockets: Vec<(String, String, SocketAddr)> = config
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| {
            (
                format!("listener {}", l.name),
                format!("listeners[{i}].listen"),
                l.listen,
            )
        })
        .collect();
    if let Some(admin) = config.admin_listen {
        sockets.push(("admin listener".into(), "admin.listen".into(), admin));
    }
    let mut free = Vec::new();
    let mut ok = true;
    for (what, key, addr) in sockets.into_iter().filter(|(_, _, a)| a.port() != 0) {
        match std::net::TcpListener::bind(addr) {
            Ok(_) => free.push(addr.to_string()),
            Err(e) => {
                ok = false;
                let why = match e.kind() {
                    std::io::ErrorKind::AddrInUse => format!(
                        "{addr} is already in use (is authbridge already running?) — stop what \
                         listens there, or change {key}"
                    ),
                    std::io::ErrorKind::PermissionDenied => format!(
                        "cannot listen on {addr}: permission denied — ports below 1024 need root \
                         or CAP_NET_BIND_SERVICE; or change {key}"
                    ),
                    std::io::ErrorKind::AddrNotAvailable => {
                        format!("{addr} is not an address of this machine — change {key}")
                    }
                    _ => format!("cannot listen on {addr}: {e} — check {key}"),
                };
                let _ = writeln!(out, "{what}: FAILED: {why}");
            }
        }
    }
    if !free.is_empty() {
        let _ = writeln!(out, "listen addresses: free ({})", free.join(", "));
    }
    ok
}

/// Waits until every account's status file holds this process's finished outcome (the token
/// manager writes it in the background just after handing the result out; a process that exits
/// first leaves a "refreshing" mark behind), up to [`STATUS_SETTLE`].
async fn status_files_settled(config: &Config, out: &mut dyn Write) {
    let files = StatusFiles::new(&config.state_dir);
    let me = std::process::id();
    let deadline = tokio::time::Instant::now() + STATUS_SETTLE;
    loop {
        let pending: Vec<&str> = config
            .accounts
            .iter()
            .filter(|a| {
                files
                    .load(&a.name)
                    .is_none_or(|p| p.pid != me || p.refreshing_since.is_some())
            })
            .map(|a| a.name.as_str())
            .collect();
        if pending.is_empty() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = writeln!(
                out,
                "status files: not updated within {}s for {} (`authbridge status` may show them \
                 as stale)",
                STATUS_SETTLE.as_secs(),
                pending.join(", ")
            );
            return;
        }
        tokio::time::sleep(STATUS_POLL).await;
    }
}
