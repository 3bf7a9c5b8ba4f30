//! Results: percentiles, the Markdown report (the part of RESULTS.md between the markers) and
//! the smoke-mode checks.
//! Over 600 lines: one table writer per comparison phase, kept together so the report's layout
//! reads in one place (the storm, which measures authbridge alone, renders itself in storm.rs).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::Path;

use crate::Opts;
use crate::client::{Proto, System};
use crate::phases::{BurstRun, Ctx, IdleRun, LoginSeries, Transfer, TransferRun};

/// Markers around a generated block of RESULTS.md; the rest of the file is kept as written.
fn markers(block: &str) -> (String, String) {
    (
        format!("<!-- BEGIN GENERATED {block}: rewritten by bench/run.sh up to the END marker -->"),
        format!("<!-- END GENERATED {block} -->"),
    )
}

pub struct Results {
    pub started: String,
    pub machine: Vec<(String, String)>,
    pub logins: Vec<(Proto, BTreeMap<System, LoginSeries>)>,
    pub transfers: BTreeMap<(Transfer, System), Vec<TransferRun>>,
    pub idle: Vec<IdleRun>,
    pub bursts: Vec<BurstRun>,
    pub storm: Option<crate::storm::StormRun>,
    pub loads: Vec<(String, String)>,
    pub notes: Vec<String>,
    pub fd_limit: u64,
}

fn sh(cmd: &str) -> String {
    std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

impl Results {
    pub fn new(opts: &Opts, fd_limit: u64) -> Results {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .unwrap_or("?")
            .trim()
            .to_string();
        let mem = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("MemTotal"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|k| k.parse::<f64>().ok())
            .map(|k| format!("{:.1} GiB", k / 1024.0 / 1024.0))
            .unwrap_or_default();
        let ep_version = match &opts.emailproxy {
            Some(bin) => {
                let v = sh(&format!(
                    "'{}' --version 2>/dev/null | tail -1",
                    bin.display()
                ));
                if v.is_empty() { "?".to_string() } else { v }
            }
            None => format!("not measured: {}", opts.emailproxy_why_not),
        };
        let machine = vec![
            ("nproc".to_string(), sh("nproc")),
            ("CPU".to_string(), cpu),
            ("memory".to_string(), mem),
            ("kernel".to_string(), sh("uname -sr")),
            ("open-file limit".to_string(), fd_limit.to_string()),
            (
                "authbridge".to_string(),
                format!(
                    "{} (git {})",
                    sh(&format!(
                        "'{}' --version 2>/dev/null",
                        opts.authbridge.display()
                    )),
                    sh("git rev-parse --short HEAD 2>/dev/null")
                ),
            ),
            ("email-oauth2-proxy".to_string(), ep_version),
            (
                "Python".to_string(),
                opts.emailproxy
                    .as_ref()
                    .map(|b| {
                        let py = b.with_file_name("python");
                        sh(&format!("'{}' --version 2>&1", py.display()))
                    })
                    .unwrap_or_default(),
            ),
        ];
        Results {
            started: sh("date -u '+%Y-%m-%d %H:%M UTC'"),
            machine,
            logins: Vec::new(),
            transfers: BTreeMap::new(),
            idle: Vec::new(),
            bursts: Vec::new(),
            storm: None,
            loads: Vec::new(),
            notes: Vec::new(),
            fd_limit,
        }
    }
}

/// Nearest-rank percentile; NaN for no data.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

pub fn median(v: &[f64]) -> f64 {
    percentile(v, 50.0)
}

fn f(x: f64, prec: usize) -> String {
    if x.is_finite() {
        format!("{x:.prec$}")
    } else if x == f64::INFINITY {
        "∞".to_string()
    } else {
        "–".to_string()
    }
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "–".to_string()
    }
}

fn login_p(ctx: &Ctx, proto: Proto, s: System, p: f64) -> f64 {
    ctx.res
        .logins
        .iter()
        .find(|(pr, _)| *pr == proto)
        .and_then(|(_, m)| m.get(&s))
        .map(|l| percentile(&l.samples_ms, p))
        .unwrap_or(f64::NAN)
}

fn transfer_median(ctx: &Ctx, k: Transfer, s: System, what: fn(&TransferRun) -> f64) -> f64 {
    ctx.res
        .transfers
        .get(&(k, s))
        .map(|v| median(&v.iter().map(what).collect::<Vec<_>>()))
        .unwrap_or(f64::NAN)
}

fn cpu_per_gb(r: &TransferRun) -> f64 {
    r.proxy_cpu / (r.bytes as f64 / 1e9)
}

fn idle_run(ctx: &Ctx, s: System, n: usize) -> Option<&IdleRun> {
    ctx.res.idle.iter().find(|r| r.system == s && r.n == n)
}

fn burst_runs(ctx: &Ctx, s: System) -> Vec<&BurstRun> {
    ctx.res.bursts.iter().filter(|b| b.system == s).collect()
}

fn burst_p99(ctx: &Ctx, s: System) -> f64 {
    median(
        &burst_runs(ctx, s)
            .iter()
            .map(|b| {
                if b.failed > 0 {
                    f64::INFINITY
                } else {
                    percentile(&b.latencies_ms, 99.0)
                }
            })
            .collect::<Vec<_>>(),
    )
}

fn burst_tokens(ctx: &Ctx, s: System) -> String {
    let v: Vec<String> = burst_runs(ctx, s)
        .iter()
        .map(|b| b.token_requests.to_string())
        .collect();
    if v.is_empty() {
        "–".into()
    } else {
        v.join(", ")
    }
}

fn burst_done(ctx: &Ctx, s: System) -> String {
    let v: Vec<String> = burst_runs(ctx, s)
        .iter()
        .map(|b| format!("{}/{}", b.ok, b.n))
        .collect();
    if v.is_empty() {
        "–".into()
    } else {
        v.join(", ")
    }
}

fn met(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "–",
    }
}

/// One summary row: values for direct, relay, authbridge, email-oauth2-proxy.
struct Row<'a> {
    name: String,
    v: [f64; 4],
    prec: usize,
    target: &'a str,
    ok: Option<bool>,
}

fn row(out: &mut String, r: Row<'_>) {
    let [d, rl, a, e] = r.v;
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        r.name,
        f(d, r.prec),
        f(rl, r.prec),
        f(a, r.prec),
        f(e, r.prec),
        ratio(a, d),
        ratio(a, rl),
        ratio(a, e),
        r.target,
        met(r.ok)
    );
}

/// The headline table.
fn summary_table(ctx: &Ctx, out: &mut String) {
    use System::*;
    let all = [Direct, Relay, Authbridge, EmailProxy];
    let measured = ctx.systems();
    let vals = |g: &dyn Fn(System) -> f64| -> [f64; 4] {
        all.map(|s| {
            if measured.contains(&s) {
                g(s)
            } else {
                f64::NAN
            }
        })
    };
    let _ = writeln!(
        out,
        "| measure | direct | relay | authbridge | email-oauth2-proxy | authbridge / direct | authbridge / relay | authbridge / email-oauth2-proxy | target | met |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---|---|");
    for proto in [Proto::Smtp, Proto::Imap] {
        if !ctx.res.logins.iter().any(|(p, _)| *p == proto) {
            continue;
        }
        let v = vals(&|s| login_p(ctx, proto, s, 50.0));
        row(
            out,
            Row {
                name: format!("warm login {} p50 (ms)", proto.name()),
                v,
                prec: 2,
                target: "≤ 1.1× direct",
                ok: Some(v[2] <= 1.1 * v[0]),
            },
        );
        row(
            out,
            Row {
                name: format!("warm login {} p99 (ms)", proto.name()),
                v: vals(&|s| login_p(ctx, proto, s, 99.0)),
                prec: 2,
                target: "",
                ok: None,
            },
        );
    }
    for k in [Transfer::Fetch, Transfer::Data] {
        if ctx.res.transfers.keys().all(|(kk, _)| *kk != k) {
            continue;
        }
        let mb = match k {
            Transfer::Fetch => ctx.opts.fetch_bytes,
            Transfer::Data => ctx.opts.data_bytes,
        } / 1_000_000;
        let v = vals(&|s| transfer_median(ctx, k, s, TransferRun::mbps));
        row(
            out,
            Row {
                name: format!("{} {mb} MB throughput (MB/s, median)", k.name()),
                v,
                prec: 1,
                target: "≥ 0.9× direct",
                ok: Some(v[2] >= 0.9 * v[0]),
            },
        );
        row(
            out,
            Row {
                name: format!("{} CPU of the proxy process (s per GB, median)", k.name()),
                v: vals(&|s| {
                    if s == Direct {
                        f64::NAN
                    } else {
                        transfer_median(ctx, k, s, cpu_per_gb)
                    }
                }),
                prec: 2,
                target: "",
                ok: None,
            },
        );
    }
    let idle_ns: &[usize] = if ctx.res.idle.is_empty() {
        &[]
    } else {
        &ctx.opts.idle
    };
    for &n in idle_ns {
        let v = vals(&|s| idle_run(ctx, s, n).map_or(f64::NAN, IdleRun::kib_per_session));
        let big = n >= 10_000;
        row(
            out,
            Row {
                name: format!("idle IMAP sessions, N = {n}: RSS per session (KiB)"),
                v,
                prec: 1,
                target: if big { "≤ 64 KiB" } else { "" },
                ok: (big && v[2].is_finite()).then_some(v[2] <= 64.0),
            },
        );
        let usable =
            |s| idle_run(ctx, s, n).map_or("–".to_string(), |r| format!("{}/{}", r.noop_ok, r.n));
        let a_ok =
            idle_run(ctx, Authbridge, n).map(|r| r.noop_ok == r.opened && r.opened == r.tried);
        let _ = writeln!(
            out,
            "| idle IMAP sessions, N = {n}: usable after NOOP round | – | – | {} | {} | | | | all | {} |",
            usable(Authbridge),
            if measured.contains(&EmailProxy) {
                usable(EmailProxy)
            } else {
                "–".into()
            },
            met(a_ok)
        );
    }
    if !ctx.res.bursts.is_empty() {
        let ab_tokens: Vec<u64> = burst_runs(ctx, Authbridge)
            .iter()
            .map(|b| b.token_requests)
            .collect();
        let _ = writeln!(
            out,
            "| cold burst of {} IMAP logins: token requests (per round) | {} (fetched once by the client) | – | {} | {} | | | | exactly 1 | {} |",
            ctx.opts.burst,
            burst_tokens(ctx, Direct),
            burst_tokens(ctx, Authbridge),
            if measured.contains(&EmailProxy) {
                burst_tokens(ctx, EmailProxy)
            } else {
                "–".into()
            },
            met((!ab_tokens.is_empty()).then(|| ab_tokens.iter().all(|t| *t == 1)))
        );
        let _ = writeln!(
            out,
            "| cold burst of {} IMAP logins: logins done (per round) | {} | – | {} | {} | | | | all | {} |",
            ctx.opts.burst,
            burst_done(ctx, Direct),
            burst_done(ctx, Authbridge),
            if measured.contains(&EmailProxy) {
                burst_done(ctx, EmailProxy)
            } else {
                "–".into()
            },
            met((!ab_tokens.is_empty())
                .then(|| burst_runs(ctx, Authbridge).iter().all(|b| b.failed == 0)))
        );
        row(
            out,
            Row {
                name: format!(
                    "cold burst of {} IMAP logins: p99 (ms, median of rounds; ∞ = some logins failed)",
                    ctx.opts.burst
                ),
                v: vals(&|s| {
                    if s == Relay {
                        f64::NAN
                    } else {
                        burst_p99(ctx, s)
                    }
                }),
                prec: 1,
                target: "",
                ok: None,
            },
        );
    }
}

fn details(ctx: &Ctx, out: &mut String) {
    use System::*;
    let systems = ctx.systems();
    if !ctx.res.logins.is_empty() {
        let _ = writeln!(
            out,
            "\n### Warm login latency\n\nConnect → greeting → login → OK, one session at a time, after 5 warm-up logins per system (token, verified-credential and TLS session caches filled). Rounds: {}; the order of the systems rotates each round.\n",
            ctx.opts.rounds
        );
        let _ = writeln!(
            out,
            "| protocol | system | sessions | errors | p50 ms | p90 ms | p99 ms | max ms | p50 of each round (ms) |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---|");
        for (proto, m) in &ctx.res.logins {
            for (s, l) in m {
                let rounds: Vec<String> = l.round_p50_ms.iter().map(|x| f(*x, 2)).collect();
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {}{} | {} | {} | {} | {} | {} |",
                    proto.name(),
                    s.name(),
                    l.samples_ms.len(),
                    l.errors,
                    l.first_error
                        .as_ref()
                        .map(|e| format!(" (first: {e})"))
                        .unwrap_or_default(),
                    f(percentile(&l.samples_ms, 50.0), 2),
                    f(percentile(&l.samples_ms, 90.0), 2),
                    f(percentile(&l.samples_ms, 99.0), 2),
                    f(percentile(&l.samples_ms, 100.0), 2),
                    rounds.join(", ")
                );
            }
        }
    }
    if !ctx.res.transfers.is_empty() {
        let _ = writeln!(
            out,
            "\n### Throughput after login\n\nIMAP: `FETCH 1 BODY.PEEK[]` of a {} MB message, timed from the command to the tagged OK. SMTP: `MAIL`/`RCPT`/`DATA` of a {} MB message, timed to the final 250. CPU seconds from /proc/PID/stat (user + system) over the transfer; GB = 10^9 bytes. Rounds: {} (after one unmeasured warm-up round in full mode).\n",
            ctx.opts.fetch_bytes / 1_000_000,
            ctx.opts.data_bytes / 1_000_000,
            ctx.opts.transfer_rounds
        );
        let _ = writeln!(
            out,
            "| transfer | system | MB/s per round | median MB/s | proxy CPU s/GB (median) | sandbox CPU s/GB | client CPU s/GB |"
        );
        let _ = writeln!(out, "|---|---|---|---:|---:|---:|---:|");
        for ((k, s), runs) in &ctx.res.transfers {
            let per: Vec<String> = runs.iter().map(|r| f(r.mbps(), 1)).collect();
            let gb = |x: &TransferRun, v: f64| v / (x.bytes as f64 / 1e9);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                k.name(),
                s.name(),
                per.join(", "),
                f(
                    median(&runs.iter().map(TransferRun::mbps).collect::<Vec<_>>()),
                    1
                ),
                if *s == Direct {
                    "–".to_string()
                } else {
                    f(median(&runs.iter().map(cpu_per_gb).collect::<Vec<_>>()), 2)
                },
                f(
                    median(
                        &runs
                            .iter()
                            .map(|r| gb(r, r.sandbox_cpu))
                            .collect::<Vec<_>>()
                    ),
                    2
                ),
                f(
                    median(&runs.iter().map(|r| gb(r, r.client_cpu)).collect::<Vec<_>>()),
                    2
                ),
            );
        }
    }
    if !ctx.res.idle.is_empty() {
        let _ = writeln!(
            out,
            "\n### Idle authenticated IMAP sessions\n\nEach measurement starts a fresh proxy process, does one warm-up login, reads VmRSS, opens N logged-in sessions (at most {} s; logins in flight: authbridge {}, email-oauth2-proxy {}, see below), waits 1 s, reads VmRSS again, then sends NOOP on every session. RSS per session = (RSS with the sessions open − RSS before) / sessions opened. direct has no proxy process and is not part of this measurement.\n",
            ctx.opts.idle_budget_secs,
            crate::phases::OPEN_CONCURRENCY,
            crate::phases::OPEN_CONCURRENCY_EMAILPROXY
        );
        let _ = writeln!(
            out,
            "| N | system | tried | opened | open errors | open time s | RSS before MiB | RSS open MiB | KiB / session | threads | NOOP ok | NOOP round s | RSS after NOOP MiB | alive |"
        );
        let _ = writeln!(
            out,
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        );
        for r in &ctx.res.idle {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {}{} | {}{} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.n,
                r.system.name(),
                r.tried,
                r.opened,
                r.open_errors,
                r.first_error
                    .as_ref()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default(),
                f(r.open_secs, 1),
                if r.budget_hit {
                    " (time budget hit)"
                } else {
                    ""
                },
                f(r.rss_before_kib as f64 / 1024.0, 1),
                f(r.rss_open_kib as f64 / 1024.0, 1),
                f(r.kib_per_session(), 1),
                r.threads,
                r.noop_ok,
                f(r.noop_secs, 2),
                f(r.rss_after_noop_kib as f64 / 1024.0, 1),
                if r.alive_after { "yes" } else { "**no**" },
            );
        }
    }
    if !ctx.res.bursts.is_empty() {
        let _ = writeln!(
            out,
            "\n### Cold burst\n\n{} IMAP logins for one account started at once against a freshly started proxy (empty token cache; email-oauth2-proxy: config file without cached tokens). Token requests = the sandbox token endpoint's request counter after − before. direct: the client fetches one token, then logs in {} times over TLS with it. Per-login limit {} s. Rounds: {} (email-oauth2-proxy: {}).\n",
            ctx.opts.burst,
            ctx.opts.burst,
            ctx.opts.burst_timeout_secs,
            ctx.opts.burst_rounds,
            ctx.opts.ep_burst_rounds.min(ctx.opts.burst_rounds)
        );
        let _ = writeln!(
            out,
            "| round | system | ok | failed | token requests | p50 ms | p99 ms | max ms | all done after s |"
        );
        let _ = writeln!(out, "|---:|---|---:|---:|---:|---:|---:|---:|---:|");
        for b in &ctx.res.bursts {
            let _ = writeln!(
                out,
                "| {} | {} | {}/{} | {}{} | {} | {} | {} | {} | {} |",
                b.round + 1,
                b.system.name(),
                b.ok,
                b.n,
                b.failed,
                b.first_error
                    .as_ref()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default(),
                b.token_requests,
                f(percentile(&b.latencies_ms, 50.0), 1),
                f(percentile(&b.latencies_ms, 99.0), 1),
                f(percentile(&b.latencies_ms, 100.0), 1),
                f(b.secs, 1),
            );
        }
    }
    let _ = systems;
}

pub fn render(ctx: &Ctx) -> String {
    let mut out = String::new();
    let r = &ctx.res;
    if ctx.opts.upstream_rtt_ms > 0 {
        let _ = writeln!(
            out,
            "## Warm logins with a {} ms round trip to the mail servers ({})\n\nEvery system (the direct client, authbridge, email-oauth2-proxy) reaches the sandbox's SMTP and IMAP servers through `authbridge-bench relay --delay-ms {}`, which holds each chunk {} ms in each direction and the connection setup 1.5 round trips, as a server on the Internet would (Exchange Online is typically 10–40 ms away). The token endpoint is not delayed (warm logins do not use it). The clients and the proxies still talk over loopback.\n",
            ctx.opts.upstream_rtt_ms,
            r.started,
            ctx.opts.upstream_rtt_ms / 2,
            ctx.opts.upstream_rtt_ms / 2
        );
    } else if storm_only(ctx) {
        let _ = writeln!(out, "## Login storm ({})\n", r.started);
    } else {
        let _ = writeln!(out, "## Results ({})\n", r.started);
    }
    let _ = writeln!(out, "Command: `{}`\n", ctx.opts.command);
    let _ = writeln!(out, "| machine | |\n|---|---|");
    for (k, v) in &r.machine {
        let _ = writeln!(out, "| {k} | {v} |");
    }
    let loads: Vec<String> = r
        .loads
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}: {}",
                v.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "| load average (1/5/15 min) | {} |\n",
        loads.join("; ")
    );
    if !storm_only(ctx) {
        systems_note(&mut out);
    }

    if !storm_only(ctx) {
        summary_table(ctx, &mut out);
        details(ctx, &mut out);
    }
    if let Some(storm) = &r.storm {
        crate::storm::render(storm, &mut out);
    }
    if !r.notes.is_empty() {
        let _ = writeln!(out, "\n### Run notes\n");
        for n in &r.notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    out
}

/// Only the login storm was run (`--phases storm`): its block has no comparison tables.
fn storm_only(ctx: &Ctx) -> bool {
    ctx.opts.phases.iter().all(|p| p == "storm")
}

fn systems_note(out: &mut String) {
    let _ = writeln!(
        out,
        "Systems: **direct** = the load generator itself does TLS and XOAUTH2 against the sandbox with a token it fetched (the physical limit); **relay** = the same direct client through `authbridge-bench relay`, a separate process that only copies bytes (the least any proxy process costs here); **authbridge** and **email-oauth2-proxy** are logged into with a local user and password over plaintext loopback, as GLPI does. Ratios are authbridge's value divided by the other system's: for latency, CPU and memory lower is better, for throughput higher is better.\n"
    );
}

/// Put `generated` between the markers of `block` in `path` (keeping everything else); a new
/// block goes at the end.
pub fn write(path: &Path, block: &str, generated: &str) -> io::Result<()> {
    if path == Path::new("/dev/null") {
        return Ok(());
    }
    let (begin, end) = markers(block);
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let text = format!("{begin}\n{generated}\n{end}");
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{text}{}", &old[..b], &old[e + end.len()..])
        }
        _ if old.is_empty() => format!("# authbridge benchmark results\n\n{text}\n"),
        _ => format!("{}\n\n{text}\n", old.trim_end()),
    };
    std::fs::write(path, new)
}

/// A short plain-text summary for the terminal.
pub fn summary(ctx: &Ctx) -> String {
    let mut out = String::new();
    if !storm_only(ctx) {
        summary_table(ctx, &mut out);
    }
    if let Some(r) = &ctx.res.storm {
        for (what, value, ok) in crate::storm::verdicts(r) {
            let _ = writeln!(
                out,
                "storm: {what}: {value} ({})",
                if ok { "met" } else { "NOT met" }
            );
        }
    }
    out
}

/// Smoke mode: every measurement produced a number, and authbridge's cold burst asked for
/// exactly one token.
pub fn smoke_problems(ctx: &Ctx) -> Vec<String> {
    let mut p = Vec::new();
    let systems = ctx.systems();
    for (proto, m) in &ctx.res.logins {
        for s in &systems {
            let ok = m
                .get(s)
                .is_some_and(|l| percentile(&l.samples_ms, 50.0).is_finite());
            if !ok {
                p.push(format!("no {} latency for {}", proto.name(), s.name()));
            }
        }
    }
    if ctx.opts.phases.iter().any(|x| x == "login") && ctx.res.logins.len() != 2 {
        p.push("login phase incomplete".into());
    }
    if ctx.opts.phases.iter().any(|x| x == "transfer") {
        for k in [Transfer::Fetch, Transfer::Data] {
            for s in &systems {
                if !transfer_median(ctx, k, *s, TransferRun::mbps).is_finite() {
                    p.push(format!("no {} throughput for {}", k.name(), s.name()));
                }
                if *s != System::Direct && !transfer_median(ctx, k, *s, cpu_per_gb).is_finite() {
                    p.push(format!("no {} CPU figure for {}", k.name(), s.name()));
                }
            }
        }
    }
    if ctx.opts.phases.iter().any(|x| x == "idle") {
        for &n in &ctx.opts.idle {
            for s in ctx.proxies() {
                match idle_run(ctx, s, n) {
                    Some(r) if r.kib_per_session().is_finite() && r.noop_ok > 0 => {}
                    _ => p.push(format!(
                        "no idle-session figure for {} at N = {n}",
                        s.name()
                    )),
                }
            }
        }
    }
    if ctx.opts.phases.iter().any(|x| x == "storm") {
        p.extend(crate::storm::smoke_problems(ctx.res.storm.as_ref()));
    }
    if ctx.opts.phases.iter().any(|x| x == "burst") {
        for s in systems.iter().filter(|s| **s != System::Relay) {
            if burst_runs(ctx, *s).is_empty() {
                p.push(format!("no cold-burst run for {}", s.name()));
            }
        }
        for b in burst_runs(ctx, System::Authbridge) {
            if b.token_requests != 1 {
                p.push(format!(
                    "authbridge cold burst made {} token requests (expected exactly 1)",
                    b.token_requests
                ));
            }
            if b.ok == 0 {
                p.push("authbridge cold burst: no login succeeded".into());
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert!(percentile(&[], 50.0).is_nan());
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
    }

    #[test]
    fn markers_keep_the_rest() {
        let dir = std::env::temp_dir().join(format!("bench-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("R.md");
        let (b, e) = markers("main");
        std::fs::write(&p, format!("head\n{b}\nold\n{e}\ntail\n")).unwrap();
        write(&p, "main", "new").unwrap();
        let t = std::fs::read_to_string(&p).unwrap();
        assert_eq!(t, format!("head\n{b}\nnew\n{e}\ntail\n"));
        write(&p, "wan", "w").unwrap();
        let (wb, we) = markers("wan");
        let t = std::fs::read_to_string(&p).unwrap();
        assert_eq!(t, format!("head\n{b}\nnew\n{e}\ntail\n\n{wb}\nw\n{we}\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
