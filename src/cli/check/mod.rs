//! `authbridge check`: the config is valid (it loaded; no login uses a hash of an example
//! password — a config error, exit 2), every listen address is free, then for every account a
//! token is fetched and its claims compared with what each listener needs, and for every
//! listener × account the upstream login is tried followed by the first command the real client
//! runs (IMAP `EXAMINE INBOX`, POP3 `STAT`, SMTP `MAIL FROM`/`RCPT TO`/`RSET`; relay listeners:
//! EHLO, STARTTLS, `MAIL FROM`/`RCPT TO`, `RSET`). Every refusal is mapped to its cause and fix
//! (`crate::diagnosis`). `--send-test ADDR` sends one real message per SMTP upstream;
//! `--json` prints the report as JSON. Any failure is exit 1. Before exiting it waits (bounded)
//! until the token manager has written each account's outcome to its status file, so
//! `authbridge status` shows what this check found.

mod graph;
mod probe;
mod report;

use std::collections::HashSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;

use super::failure::Failure;
use super::setup::{load, log_format, runtime};
use crate::config::{Config, Protocol, SenderRule};
use crate::diagnosis::{self, Context, Known};
use crate::token::claims::{self, Inspection};
use crate::token::{Flow, StatusFiles};
use probe::{Outcome, SendTest};
pub use report::{AccountReport, Finding, ListenerReport, Report, Status, TokenSummary};

/// How long `check` waits for the status files to record its token requests' outcomes (they are
/// written by the token manager's task right after the result is handed out).
const STATUS_SETTLE: Duration = Duration::from_secs(5);
/// How often it looks meanwhile.
const STATUS_POLL: Duration = Duration::from_millis(20);

/// What `authbridge check` was asked for.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Print the report as JSON.
    pub json: bool,
    /// Send one test message to this address through every SMTP upstream.
    pub send_test: Option<String>,
}

/// Runs `authbridge check [--config PATH] [--json] [--send-test ADDR]`; a config error is a
/// usage failure (exit 2), a failed check a runtime failure (exit 1).
pub fn run(config: Option<PathBuf>, opts: Options) -> Result<(), Failure> {
    let config = load(config)?;
    crate::config::refuse_example_passwords(&config).map_err(|e| Failure::Usage(e.into()))?;
    if let Some(to) = &opts.send_test
        && !plausible_address(to)
    {
        return Err(Failure::Usage(anyhow!(
            "--send-test needs a mail address like someone@example.com, got {to:?}"
        )));
    }
    crate::telemetry::init(
        Some("warn"),
        log_format(config.log_format)?,
        crate::telemetry::Sink::Stderr,
    );
    let report = runtime()?.block_on(check_report(&config, &opts));
    let mut out = std::io::stdout();
    if opts.json {
        report.write_json(&mut out);
    } else {
        report.write_human(&mut out);
    }
    if report.ok {
        Ok(())
    } else {
        Err(Failure::Runtime(anyhow!(
            "some checks failed (see the report above)"
        )))
    }
}

fn plausible_address(a: &str) -> bool {
    a.len() <= 254
        && a.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.')
        })
        && !a
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>".contains(c))
}

/// Run every check, writing one line per finding. Returns true when all passed.
pub async fn check(config: &Config, out: &mut dyn Write) -> bool {
    let report = check_report(config, &Options::default()).await;
    report.write_human(out);
    report.ok
}

/// One account's token, as `check` got it.
struct Got {
    index: usize,
    token: crate::token::AccessToken,
    inspection: Inspection,
}

/// Run every check and return the report.
pub async fn check_report(config: &Config, opts: &Options) -> Report {
    let mut report = Report {
        config: config.file.display().to_string(),
        ok: true,
        findings: vec![
            Finding::ok(format!(
                "OK (accounts: {}, listeners: {})",
                config.accounts.len(),
                config.listeners.len()
            ))
            .about(format!("config {}", config.file.display())),
        ],
        accounts: Vec::new(),
        listeners: Vec::new(),
    };
    report.findings.extend(listen_addresses_free(config));
    for (name, p) in &config.providers {
        report.findings.push(
            Finding::ok(format!(
                "credential {} ({}), proxy {}",
                p.credential,
                p.describe_credential(),
                p.http.describe_proxy()
            ))
            .about(format!("provider {name}")),
        );
    }
    let tokens = match crate::server::token_manager(config) {
        Ok(t) => t,
        Err(e) => {
            report
                .findings
                .push(Finding::failed(format!("token store: {e}"), None));
            report.settle();
            return report;
        }
    };
    let mut got: Vec<Got> = Vec::new();
    for (index, a) in config.accounts.iter().enumerate() {
        let mut ar = AccountReport {
            name: a.name.clone(),
            provider: a.provider.name.clone(),
            flow: a.provider.flow.to_string(),
            mailbox: a.mailbox.clone(),
            ok: true,
            token: None,
            findings: Vec::new(),
        };
        match tokens.refresh_now(&a.name).await {
            Ok(t) => {
                ar.findings.push(Finding::ok(format!(
                    "token OK (provider {}, mailbox {})",
                    a.provider.name, a.mailbox
                )));
                let inspection = claims::inspect(t.token.expose());
                let summary = TokenSummary::new(&inspection);
                ar.findings.push(match &inspection {
                    Inspection::Jwt(_) => Finding::ok(summary.describe()),
                    Inspection::Opaque => Finding::warning(summary.describe(), None),
                });
                if let Inspection::Jwt(c) = &inspection {
                    let ctx = context(config, index, None, c.is_delegated());
                    for k in diagnosis::claims_problems(c, None, &a.mailbox) {
                        ar.findings.push(known_finding(k, &ctx, None));
                    }
                }
                ar.token = Some(summary);
                got.push(Got {
                    index,
                    token: t,
                    inspection,
                });
            }
            Err(e) => {
                ar.findings
                    .push(Finding::failed(format!("could not get a token: {e}"), None));
            }
        }
        report.accounts.push(ar);
    }
    let mut sent_through: HashSet<(String, u16, String)> = HashSet::new();
    let send_to = opts.send_test.as_deref().map(|to| SendTest { to });
    // (listener index, account index, outcome) of every login probe, for the second pass.
    let mut logins: Vec<(usize, usize, Outcome)> = Vec::new();
    for (li, l) in config.listeners.iter().enumerate() {
        if l.graph.is_some() {
            report
                .listeners
                .extend(graph::check_listener(config, l, &tokens).await);
            continue;
        }
        let upstream = format!("{}:{}", l.upstream.host, l.upstream.port);
        if l.relay.is_some() {
            let mut lr = ListenerReport {
                name: l.name.clone(),
                protocol: l.protocol.to_string(),
                mode: "relay",
                upstream: upstream.clone(),
                account: None,
                ok: true,
                findings: Vec::new(),
            };
            let sender = relay_sender(config, li);
            let send = send_to.as_ref().filter(|_| {
                sent_through.insert((l.upstream.host.clone(), l.upstream.port, sender.clone()))
            });
            // A recipient inside the tenant: the first account's mailbox, else the sender.
            let rcpt = config
                .accounts
                .first()
                .map_or_else(|| sender.clone(), |a| a.mailbox.clone());
            let outcome = probe::relay_probe(config, l, &sender, &rcpt, send).await;
            let ctx = Context {
                mailbox: &sender,
                protocol: Some(Protocol::Smtp),
                ..Default::default()
            };
            let mut f = outcome_finding(&outcome, &ctx, None);
            if f.status == Status::Failed
                && f.id.is_none()
                && !matches!(outcome, Outcome::Broken(_))
            {
                f.fix = Some(format!(
                    "the connector refused the probe (MAIL FROM:<{sender}>, RCPT TO:<{rcpt}>): check \
                     that both addresses exist in your tenant and that its inbound connector \
                     accepts mail from this host"
                ));
            }
            lr.findings.push(f);
            report.listeners.push(lr);
            continue;
        }
        for g in &got {
            let a = &config.accounts[g.index];
            let delegated = match &g.inspection {
                Inspection::Jwt(c) => c.is_delegated(),
                Inspection::Opaque => a.provider.flow != Flow::ClientCredentials,
            };
            let mut lr = ListenerReport {
                name: l.name.clone(),
                protocol: l.protocol.to_string(),
                mode: "auth",
                upstream: upstream.clone(),
                account: Some(a.name.clone()),
                ok: true,
                findings: Vec::new(),
            };
            let ctx = context(config, g.index, Some(l.protocol), delegated);
            let mut claim_problem = None;
            if let Inspection::Jwt(c) = &g.inspection {
                let account_level: Vec<&str> = diagnosis::claims_problems(c, None, &a.mailbox)
                    .iter()
                    .map(|k| k.id)
                    .collect();
                for k in diagnosis::claims_problems(c, Some(l.protocol), &a.mailbox) {
                    if !account_level.contains(&k.id) {
                        lr.findings.push(known_finding(k, &ctx, None));
                    }
                    claim_problem.get_or_insert(k);
                }
            }
            let send = send_to.as_ref().filter(|_| {
                l.protocol == Protocol::Smtp
                    && sent_through.insert((
                        l.upstream.host.clone(),
                        l.upstream.port,
                        a.mailbox.clone(),
                    ))
            });
            let outcome = probe::login_and_probe(config, l, &a.mailbox, &g.token.token, send).await;
            lr.findings
                .push(outcome_finding(&outcome, &ctx, claim_problem));
            logins.push((li, g.index, outcome));
            report.listeners.push(lr);
        }
    }
    refine_generic_refusals(config, &got, &logins, &mut report);
    status_files_settled(config, &mut report).await;
    report.settle();
    report
}

fn context(
    config: &Config,
    account: usize,
    protocol: Option<Protocol>,
    delegated: bool,
) -> Context<'_> {
    let a = &config.accounts[account];
    Context {
        mailbox: &a.mailbox,
        account: &a.name,
        client_id: &a.provider.client_id,
        protocol,
        app_only: !delegated,
    }
}

fn known_finding(k: &'static Known, ctx: &Context<'_>, upstream: Option<&str>) -> Finding {
    let what = match upstream {
        Some(text) => format!("{} (upstream: {text})", k.cause_for(ctx)),
        None => k.cause_for(ctx),
    };
    Finding::failed(what, Some(k.fix_for(ctx))).with_id(k.id)
}

/// The finding for one probe. A refusal that the token's claims already explain
/// (`claim_problem`) is reported with that cause; otherwise the reply is looked up.
fn outcome_finding(
    outcome: &Outcome,
    ctx: &Context<'_>,
    claim_problem: Option<&'static Known>,
) -> Finding {
    match outcome {
        Outcome::Ok(what) => Finding::ok(what.clone()),
        Outcome::LoginRefused(text) => {
            let k = claim_problem.or_else(|| diagnosis::recognise(text));
            match k {
                Some(k) => known_finding(k, ctx, Some(text)),
                None => Finding::failed(
                    format!("upstream login refused: {text}"),
                    Some(diagnosis::hint(text, ctx)),
                ),
            }
        }
        Outcome::CommandRefused { command, text } => match diagnosis::recognise(text) {
            Some(k) => {
                let mut f = known_finding(k, ctx, Some(text));
                f.what = format!("{command} refused: {}", f.what);
                f
            }
            None => Finding::failed(
                format!("{command} refused by the upstream: {text}"),
                Some(diagnosis::hint(text, ctx)),
            ),
        },
        Outcome::Broken(e) => Finding::failed(format!("upstream FAILED: {e}"), None),
    }
}

/// A login refused with a generic reply (`NO AUTHENTICATE failed.`, POP3 `-ERR Authentication
/// failure`) whose token's claims are fine: if the same token logged in on another protocol,
/// the protocol is off for the mailbox; if an app-only token logged in nowhere, its service
/// principal is missing in Exchange.
fn refine_generic_refusals(
    config: &Config,
    got: &[Got],
    logins: &[(usize, usize, Outcome)],
    report: &mut Report,
) {
    for (pos, (li, ai, outcome)) in logins.iter().enumerate() {
        let Outcome::LoginRefused(text) = outcome else {
            continue;
        };
        let protocol = config.listeners[*li].protocol;
        let generic = diagnosis::recognise(text)
            .is_some_and(|k| matches!(k.id, "imap_refused" | "pop_refused"));
        let Some(g) = got.iter().find(|g| g.index == *ai) else {
            continue;
        };
        let Inspection::Jwt(c) = &g.inspection else {
            continue;
        };
        let mailbox = &config.accounts[*ai].mailbox;
        if !generic || !diagnosis::claims_problems(c, Some(protocol), mailbox).is_empty() {
            continue;
        }
        let elsewhere = logins.iter().any(|(_, a, o)| {
            a == ai && matches!(o, Outcome::Ok(_) | Outcome::CommandRefused { .. })
        });
        let k = if elsewhere {
            diagnosis::by_id("protocol_disabled")
        } else if !c.is_delegated() {
            diagnosis::by_id("service_principal_missing")
        } else {
            continue;
        };
        let ctx = context(config, *ai, Some(protocol), c.is_delegated());
        // The listener reports were pushed in the same order as `logins` (relay ones aside).
        let Some(lr) = report
            .listeners
            .iter_mut()
            .filter(|l| l.mode == "auth")
            .nth(pos)
        else {
            continue;
        };
        if let Some(f) = lr.findings.last_mut() {
            *f = known_finding(k, &ctx, Some(text));
        }
    }
}

/// The sender a relay listener's probe uses: its first allowed address, else `postmaster@` its
/// first allowed domain, else the first account's mailbox.
fn relay_sender(config: &Config, listener: usize) -> String {
    let rules = config.listeners[listener]
        .relay
        .as_ref()
        .map(|r| r.allowed_senders.as_slice())
        .unwrap_or_default();
    rules
        .iter()
        .find_map(|r| match r {
            SenderRule::Address(a) => Some(a.clone()),
            SenderRule::Domain(_) => None,
        })
        .or_else(|| {
            rules.iter().find_map(|r| match r {
                SenderRule::Domain(d) => Some(format!("postmaster@{d}")),
                SenderRule::Address(_) => None,
            })
        })
        .or_else(|| config.accounts.first().map(|a| a.mailbox.clone()))
        .unwrap_or_else(|| format!("postmaster@{}", config.hostname))
}

/// Tries to bind every listener's address (and the admin listener's): `run` would fail on one
/// that is taken. Port 0 (any free port) is not tried. Returns true when all are free.
fn listen_addresses_free(config: &Config) -> Vec<Finding> {
    let mut findings = Vec::new();
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
    for (what, key, addr) in sockets.into_iter().filter(|(_, _, a)| a.port() != 0) {
        match std::net::TcpListener::bind(addr) {
            Ok(_) => free.push(addr.to_string()),
            Err(e) => {
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
                findings.push(Finding::failed(why, None).about(what));
            }
        }
    }
    if !free.is_empty() {
        findings.push(Finding::ok(format!("free ({})", free.join(", "))).about("listen addresses"));
    }
    findings
}

/// Waits until every account's status file holds this process's finished outcome (the token
/// manager writes it in the background just after handing the result out; a process that exits
/// first leaves a "refreshing" mark behind), up to [`STATUS_SETTLE`].
async fn status_files_settled(config: &Config, report: &mut Report) {
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
            report.findings.push(Finding::warning(
                format!(
                    "status files: not updated within {}s for {} (`authbridge status` may show \
                     them as stale)",
                    STATUS_SETTLE.as_secs(),
                    pending.join(", ")
                ),
                None,
            ));
            return;
        }
        tokio::time::sleep(STATUS_POLL).await;
    }
}
