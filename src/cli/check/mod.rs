//! `authbridge check`: the config is valid (it loaded; no login uses a hash of an example
//! password — a config error, exit 2), every listen address is free, then for every account a
//! token is fetched and its claims compared with what each listener needs, and for every
//! listener × account the upstream login is tried followed by the first command the real client
//! runs (IMAP `EXAMINE INBOX`, POP3 `STAT`, SMTP `MAIL FROM`/`RCPT TO`/`RSET`; relay listeners:
//! EHLO, STARTTLS, `MAIL FROM`/`RCPT TO`, `RSET`). Every refusal is mapped to its cause and fix
//! (`crate::diagnosis`). `--send-test ADDR` sends one real message through a running
//! authbridge's local SMTP listener with a local login (the full path, `local_send.rs`), or with
//! `--direct` from here straight to every SMTP upstream; `--json` prints the report as JSON. Any failure is exit 1. Before exiting it waits (bounded)
//! until the token manager has written each account's outcome to its status file, so
//! `authbridge status` shows what this check found.

mod graph;
mod local_send;
mod probe;
mod report;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;

use super::failure::Failure;
use super::setup::{load, log_format, runtime};
use crate::config::{Config, Protocol, SenderRule};
use crate::diagnosis::{self, Context, Known};
use crate::secret::SecretString;
use crate::token::claims::{self, Claims, Inspection};
use crate::token::{Flow, ProviderKind, StatusFiles};
use local_send::{LocalLogin, LocalOutcome};
use probe::{Outcome, SendTest};
pub use report::{AccountReport, Finding, ListenerReport, Report, Status, TokenSummary};

/// How long `check` waits for the status files to record its token requests' outcomes (they are
/// written by the token manager's task right after the result is handed out).
const STATUS_SETTLE: Duration = Duration::from_secs(5);
/// How often it looks meanwhile.
const STATUS_POLL: Duration = Duration::from_millis(20);
/// The environment variable `check --send-test --login USER` takes the local password from.
pub const PASSWORD_ENV: &str = "AUTHBRIDGE_CHECK_PASSWORD";
/// Longest local password read from stdin.
const MAX_PASSWORD: u64 = 64 * 1024;

/// What `authbridge check` was asked for.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Print the report as JSON.
    pub json: bool,
    /// Send one test message to this address: through the local listener (the full path), or
    /// with `direct` through every SMTP upstream.
    pub send_test: Option<String>,
    /// `--direct`: the test message goes from `check` straight to the upstream (no local
    /// listener, no local login).
    pub direct: bool,
    /// `--listener NAME`: the SMTP listener the test message goes through (default: the first).
    pub listener: Option<String>,
    /// `--login USER`: the local username for the send test.
    pub login: Option<String>,
    /// Its password (from [`PASSWORD_ENV`], the terminal or stdin; never from argv).
    pub password: Option<SecretString>,
}

/// Runs `authbridge check [--config PATH] [--json] [--send-test ADDR]`; a config error is a
/// usage failure (exit 2), a failed check a runtime failure (exit 1).
pub fn run(config: Option<PathBuf>, mut opts: Options) -> Result<(), Failure> {
    let config = load(config)?;
    crate::config::refuse_example_passwords(&config).map_err(|e| Failure::Usage(e.into()))?;
    if let Some(to) = &opts.send_test
        && !plausible_address(to)
    {
        return Err(Failure::Usage(anyhow!(
            "--send-test needs a mail address like someone@example.com, got {to:?}"
        )));
    }
    if opts.send_test.is_some() && !opts.direct {
        let (_, l) = send_test_listener(&config, opts.listener.as_deref())
            .map_err(|e| Failure::Usage(anyhow!(e)))?;
        local_send::target(l).map_err(|e| Failure::Usage(anyhow!(e)))?;
        match &opts.login {
            None if local_send::needs_login(l) => {
                return Err(Failure::Usage(anyhow!(
                    "the send test goes through listener {}, which needs a local login: give \
                     --login USER (the password is read from {PASSWORD_ENV}, else asked on the \
                     terminal, else read from stdin), or use --direct to send from check \
                     straight to the upstream",
                    l.name
                )));
            }
            None => {}
            Some(user) => opts.password = Some(read_password(user)?),
        }
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

/// The local password for `user`: [`PASSWORD_ENV`], else asked on the terminal, else the whole
/// of stdin (one trailing newline dropped).
fn read_password(user: &str) -> Result<SecretString, Failure> {
    use std::io::{IsTerminal, Read};
    let password = if let Some(p) = std::env::var_os(PASSWORD_ENV) {
        SecretString::new(
            p.into_string()
                .map_err(|_| Failure::Usage(anyhow!("{PASSWORD_ENV} is not UTF-8")))?,
        )
    } else if std::io::stdin().is_terminal() {
        SecretString::new(
            rpassword::prompt_password(format!("local password of {user}: "))
                .map_err(|e| Failure::Runtime(anyhow!("cannot read the password: {e}")))?,
        )
    } else {
        let mut bytes = zeroize::Zeroizing::new(Vec::new());
        std::io::stdin()
            .take(MAX_PASSWORD)
            .read_to_end(&mut bytes)
            .map_err(|e| Failure::Runtime(anyhow!("cannot read the password from stdin: {e}")))?;
        let mut end = bytes.len();
        if bytes[..end].ends_with(b"\n") {
            end -= 1;
            if bytes[..end].ends_with(b"\r") {
                end -= 1;
            }
        }
        let text = std::str::from_utf8(&bytes[..end])
            .map_err(|_| Failure::Usage(anyhow!("the password on stdin is not UTF-8")))?;
        SecretString::new(text.to_string())
    };
    if password.expose().is_empty() {
        return Err(Failure::Usage(anyhow!(
            "empty local password for {user}: set {PASSWORD_ENV}, type it at the prompt, or pipe \
             it in on stdin"
        )));
    }
    Ok(password)
}

/// The SMTP listener a send test goes through: the one named, else the first SMTP listener.
fn send_test_listener<'c>(
    config: &'c Config,
    name: Option<&str>,
) -> Result<(usize, &'c crate::config::Listener), String> {
    let smtp: Vec<(usize, &crate::config::Listener)> = config
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| l.protocol == Protocol::Smtp)
        .collect();
    let names = || {
        smtp.iter()
            .map(|(_, l)| l.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match name {
        Some(n) => smtp
            .iter()
            .find(|(_, l)| l.name == n)
            .copied()
            .ok_or_else(|| {
                format!(
                    "--listener {n}: no SMTP listener of that name in {} (SMTP listeners: {})",
                    config.file.display(),
                    names()
                )
            }),
        None => smtp.first().copied().ok_or_else(|| {
            format!(
                "--send-test needs an SMTP listener, and {} has none",
                config.file.display()
            )
        }),
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
        send_test: Vec::new(),
    };
    let local_send = opts.send_test.is_some() && !opts.direct;
    report
        .findings
        .extend(listen_addresses_free(config, local_send));
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
    // One token request per token: an account with `token_from` uses its owner's result.
    let mut fetched: HashMap<String, Result<crate::token::AccessToken, String>> = HashMap::new();
    for (index, a) in config.accounts.iter().enumerate() {
        let mut ar = AccountReport {
            name: a.name.clone(),
            provider: a.provider.name.clone(),
            flow: a.provider.flow.to_string(),
            mailbox: a.mailbox.clone(),
            token_from: a.token_from.clone(),
            ok: true,
            token: None,
            findings: Vec::new(),
        };
        let owner = a.token_account();
        if !fetched.contains_key(owner) {
            let r = tokens.refresh_now(owner).await.map_err(|e| e.to_string());
            fetched.insert(owner.to_owned(), r);
        }
        match fetched
            .get(owner)
            .cloned()
            .unwrap_or_else(|| Err(String::new()))
        {
            Ok(t) => {
                ar.findings.push(Finding::ok(match (&a.token_from, a.delegate()) {
                    (None, _) => format!(
                        "token OK (provider {}, mailbox {})",
                        a.provider.name, a.mailbox
                    ),
                    (Some(from), Some(user)) => format!(
                        "token OK (account {from}'s token: signed in as {user}; opens the shared \
                         mailbox {}, which needs FullAccess for IMAP/POP3 and SendAs for SMTP)",
                        a.mailbox
                    ),
                    (Some(from), None) => format!(
                        "token OK (account {from}'s token; opens mailbox {})",
                        a.mailbox
                    ),
                }));
                let inspection = claims::inspect(t.token.expose());
                let summary = TokenSummary::new(&inspection);
                ar.findings.push(match &inspection {
                    Inspection::Jwt(_) => Finding::ok(summary.describe()),
                    Inspection::Opaque => Finding::warning(summary.describe(), None),
                });
                if let Inspection::Jwt(c) = &inspection {
                    let ctx = context(config, index, None, c.is_delegated());
                    for k in diagnosis::claims_problems(c, None, &a.identity) {
                        ar.findings.push(known_finding(k, &ctx, None));
                    }
                    ar.findings.extend(tenant_finding(config, index, c));
                }
                ar.token = Some(summary);
                got.push(Got {
                    index,
                    token: t,
                    inspection,
                });
            }
            Err(e) => {
                let why = match &a.token_from {
                    Some(from) => format!("could not get account {from}'s token: {e}"),
                    None => format!("could not get a token: {e}"),
                };
                ar.findings.push(Finding::failed(why, None));
            }
        }
        report.accounts.push(ar);
    }
    let mut sent_through: HashSet<(String, u16, String)> = HashSet::new();
    let send_to = opts
        .send_test
        .as_deref()
        .filter(|_| opts.direct)
        .map(|to| SendTest { to });
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
                let account_level: Vec<&str> = diagnosis::claims_problems(c, None, &a.identity)
                    .iter()
                    .map(|k| k.id)
                    .collect();
                for k in diagnosis::claims_problems(c, Some(l.protocol), &a.identity) {
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
            let user = a.xoauth2_user(l.protocol);
            let outcome =
                probe::login_and_probe(config, l, user, &a.mailbox, &g.token.token, send).await;
            lr.findings
                .push(outcome_finding(&outcome, &ctx, claim_problem));
            logins.push((li, g.index, outcome));
            report.listeners.push(lr);
        }
    }
    refine_generic_refusals(config, &got, &logins, &mut report);
    if let Some(to) = opts.send_test.as_deref().filter(|_| local_send) {
        report
            .send_test
            .push(send_test_through_listener(config, opts, to).await);
    }
    status_files_settled(config, &mut report).await;
    report.settle();
    report
}

/// `--send-test` through the running authbridge's listener: the finding, with the path taken.
async fn send_test_through_listener(config: &Config, opts: &Options, to: &str) -> Finding {
    let (li, l) = match send_test_listener(config, opts.listener.as_deref()) {
        Ok(v) => v,
        Err(e) => return Finding::failed(e, None),
    };
    let login = match (&opts.login, &opts.password) {
        (Some(u), Some(p)) => Some(LocalLogin {
            username: u.clone(),
            password: p.clone(),
        }),
        _ => None,
    };
    // From: the login's mailbox on an auth listener; a relay listener's allowed sender.
    let account = login.as_ref().and_then(|lg| {
        config
            .accounts
            .iter()
            .position(|a| a.logins.iter().any(|x| x.username == lg.username))
    });
    let from = if l.relay.is_some() {
        relay_sender(config, li)
    } else {
        account
            .or((!config.accounts.is_empty()).then_some(0))
            .map(|i| config.accounts[i].mailbox.clone())
            .unwrap_or_else(|| relay_sender(config, li))
    };
    let addr = local_send::target(l).map_or_else(|e| e, |a| a.to_string());
    let path = format!(
        "full path: listener {} at {addr} ({}, {}) → authbridge → upstream {}:{}",
        l.name,
        match l.tls {
            crate::config::ClientTlsMode::None => "no TLS",
            crate::config::ClientTlsMode::Starttls => "STARTTLS",
            crate::config::ClientTlsMode::Implicit => "implicit TLS",
        },
        match &login {
            Some(lg) => format!("local login {}", lg.username),
            None => "no login".to_string(),
        },
        l.upstream.host,
        l.upstream.port
    );
    let ctx = match account {
        Some(i) => context(config, i, Some(Protocol::Smtp), true),
        None => Context {
            mailbox: &from,
            protocol: Some(Protocol::Smtp),
            ..Default::default()
        },
    };
    let ctx = Context {
        mailbox: &from,
        ..ctx
    };
    let outcome = local_send::send(config, l, login.as_ref(), &from, to).await;
    match outcome {
        LocalOutcome::Accepted(text) => Finding::ok(format!(
            "test message from {from} to {to} accepted ({path}): {text}"
        )),
        LocalOutcome::NotListening(e) => Finding::failed(
            format!("{e} ({path})"),
            Some(format!(
                "start authbridge first (`authbridge run --config {}` or its service), or use \
                 --direct to send from check straight to the upstream",
                config.file.display()
            )),
        )
        .with_id("send_test_not_listening"),
        LocalOutcome::LocalLoginRefused(text) => Finding::failed(
            format!(
                "listener {} refused the local login {}: {text} ({path})",
                l.name,
                opts.login.as_deref().unwrap_or_default()
            ),
            Some(format!(
                "give --login a username from the `logins` of an account in {} and its password \
                 as the application has it (from {PASSWORD_ENV}, the terminal or stdin); \
                 `authbridge hash-password` makes a new hash for the config",
                config.file.display()
            )),
        )
        .with_id("send_test_local_login"),
        LocalOutcome::Refused { command, text } => match diagnosis::recognise(&text) {
            Some(k) => {
                let mut f = known_finding(k, &ctx, Some(&text));
                f.what = format!("{command} refused: {} ({path})", f.what);
                f
            }
            None => Finding::failed(
                format!("{command} refused: {text} ({path})"),
                Some(diagnosis::hint(&text, &ctx)),
            ),
        },
        LocalOutcome::Broken(e) => Finding::failed(format!("{e} ({path})"), None),
    }
}

/// The token's `tid` against the tenant the provider's token endpoint names (Microsoft): equal
/// or not when that is a tenant id; when it is a domain name or `common`/`organizations`, the
/// comparison needs the tenant's id, which `check` does not look up online — it says so.
fn tenant_finding(config: &Config, index: usize, c: &Claims) -> Option<Finding> {
    let a = &config.accounts[index];
    if a.provider.kind != ProviderKind::Microsoft {
        return None;
    }
    let tid = c.tid.as_deref()?;
    let tenant = tenant_of(&a.provider.endpoints.token_url)?;
    if is_tenant_id(&tenant) {
        if tenant.eq_ignore_ascii_case(tid) {
            return Some(Finding::ok(format!(
                "tenant: the token's tid is the configured tenant {tenant}"
            )));
        }
        let ctx = context(config, index, None, c.is_delegated());
        let k = diagnosis::by_id("wrong_tenant");
        let mut f = known_finding(k, &ctx, None);
        f.what = format!("{} (token tid={tid}, configured tenant {tenant})", f.what);
        return Some(f);
    }
    let why = if ["common", "organizations", "consumers"]
        .iter()
        .any(|t| t.eq_ignore_ascii_case(&tenant))
    {
        format!(
            "the provider's tenant is `{tenant}`, so the token comes from the signed-in user's \
             tenant"
        )
    } else {
        format!(
            "the provider's tenant is the domain name {tenant}, whose tenant id check does not \
             look up online"
        )
    };
    Some(Finding::ok(format!(
        "tenant: token tid={tid}, not compared: {why} (put the tenant id in the provider's \
         `tenant` to have check compare it)"
    )))
}

/// The tenant segment of a Microsoft token endpoint (`…/{tenant}/oauth2/v2.0/token`).
fn tenant_of(token_url: &str) -> Option<String> {
    let url = url::Url::parse(token_url).ok()?;
    let segments: Vec<&str> = url.path_segments()?.collect();
    let at = segments.iter().position(|s| *s == "oauth2")?;
    let tenant = segments.get(at.checked_sub(1)?)?;
    (!tenant.is_empty()).then(|| tenant.to_string())
}

/// A GUID in its 8-4-4-4-12 hex form.
fn is_tenant_id(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
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
        delegate: a.delegate().unwrap_or_default(),
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
            let k = claim_problem.or_else(|| diagnosis::recognise_for(text, ctx));
            match k {
                Some(k) => known_finding(k, ctx, Some(text)),
                None => Finding::failed(
                    format!("upstream login refused: {text}"),
                    Some(diagnosis::hint(text, ctx)),
                ),
            }
        }
        Outcome::CommandRefused { command, text } => match diagnosis::recognise_for(text, ctx) {
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
        let mailbox = &config.accounts[*ai].identity;
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
fn listen_addresses_free(config: &Config, running: bool) -> Vec<Finding> {
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
    let mut taken = Vec::new();
    for (what, key, addr) in sockets.into_iter().filter(|(_, _, a)| a.port() != 0) {
        match std::net::TcpListener::bind(addr) {
            Ok(_) => free.push(addr.to_string()),
            // The send test goes through the running authbridge: its addresses are taken.
            Err(e) if running && e.kind() == std::io::ErrorKind::AddrInUse => {
                taken.push(addr.to_string())
            }
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
    if !taken.is_empty() {
        findings.push(
            Finding::ok(format!(
                "in use ({}) — by the running authbridge the send test goes through",
                taken.join(", ")
            ))
            .about("listen addresses"),
        );
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
            .token_accounts()
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
