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
    pub relay_mode: Option<crate::relay_mode::RelayModeRun>,
    pub replicas: Option<crate::replicas::ReplicasRun>,
    pub graph: Option<crate::graph::GraphRun>,
    pub loads: Vec<(String, String)>,
    pub notes: Vec<String>,
    pub fd_limit: u64,
}

pub fn sh(cmd: &str) -> String {
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
            relay_mode: None,
            replicas: None,
            graph: None,
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

pub fn f(x: f64, prec: usize) -> String {
    if x.is_finite() {
        format!("{x:.prec$}")
    } else if x == f64::INFINITY {
        "∞".to_string()
    } else {
        "–".to_string()
    }
}

pub fn ratio(a: f64, b: f64) -> String {
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

fn relay_mode_p(ctx: &Ctx, s: System, p: f64) -> f64 {
    ctx.res
        .relay_mode
        .as_ref()
        .and_then(|r| r.series.get(&s))
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

/// One summary row: values for direct, relay, authbridge, email-oauth2-proxy.
struct Row {
    name: String,
    v: [f64; 4],
    prec: usize,
}

fn row(out: &mut String, r: Row) {
    let [d, rl, a, e] = r.v;
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {} | {} | {} | {} |",
        r.name,
        f(d, r.prec),
        f(rl, r.prec),
        f(a, r.prec),
        f(e, r.prec),
        ratio(a, d),
        ratio(a, rl),
        ratio(a, e),
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
        "| measure | direct | relay | authbridge | email-oauth2-proxy | authbridge / direct | authbridge / relay | authbridge / email-oauth2-proxy |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
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
            },
        );
        row(
            out,
            Row {
                name: format!("warm login {} p99 (ms)", proto.name()),
                v: vals(&|s| login_p(ctx, proto, s, 99.0)),
                prec: 2,
            },
        );
    }
    if let Some(rm) = &ctx.res.relay_mode {
        for p in [50.0, 99.0] {
            row(
                out,
                Row {
                    name: format!(
                        "relay mode: warm submission of a {} B message p{p} (ms; direct = to the connector)",
                        rm.message_bytes
                    ),
                    v: vals(&|s| relay_mode_p(ctx, s, p)),
                    prec: 2,
                },
            );
        }
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
        row(
            out,
            Row {
                name: format!("idle IMAP sessions, N = {n}: RSS per session (KiB)"),
                v,
                prec: 1,
            },
        );
        let usable =
            |s| idle_run(ctx, s, n).map_or("–".to_string(), |r| format!("{}/{}", r.noop_ok, r.n));
        let _ = writeln!(
            out,
            "| idle IMAP sessions, N = {n}: usable after NOOP round | – | – | {} | {} | | | |",
            usable(Authbridge),
            if measured.contains(&EmailProxy) {
                usable(EmailProxy)
            } else {
                "–".into()
            },
        );
    }
    if !ctx.res.bursts.is_empty() {
        let _ = writeln!(
            out,
            "| cold burst of {} IMAP logins: token requests (per round) | {} (fetched once by the client) | – | {} | {} | | | |",
            ctx.opts.burst,
            burst_tokens(ctx, Direct),
            burst_tokens(ctx, Authbridge),
            if measured.contains(&EmailProxy) {
                burst_tokens(ctx, EmailProxy)
            } else {
                "–".into()
            },
        );
        let _ = writeln!(
            out,
            "| cold burst of {} IMAP logins: logins done (per round) | {} | – | {} | {} | | | |",
            ctx.opts.burst,
            burst_done(ctx, Direct),
            burst_done(ctx, Authbridge),
            if measured.contains(&EmailProxy) {
                burst_done(ctx, EmailProxy)
            } else {
                "–".into()
            },
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
    if let Some(rm) = &ctx.res.relay_mode {
        let _ = writeln!(
            out,
            "\n### Relay mode: message submission\n\nOne message of {} bytes per session to the sandbox's inbound connector (plain SMTP with STARTTLS and no AUTH, taking mail from 127.0.0.1 as from an allow-listed static IP): connect → greeting → `EHLO` → … → `MAIL`/`RCPT`/`DATA` → the `250` after the message. **direct**: the client does `STARTTLS` to the connector itself; **relay**: the same through the byte relay; **authbridge**: its `mode: relay` listener over plaintext loopback with a local `AUTH LOGIN` (as GLPI would), authbridge doing `STARTTLS` to the connector. 5 warm-up messages per system, then {} rounds, the order rotating. The connector accepted {} messages in this phase, the clients saw {} accepted.\n",
            rm.message_bytes, ctx.opts.rounds, rm.connector_accepted, rm.client_accepted
        );
        latency_header(out, "system");
        for (s, l) in &rm.series {
            latency_row(out, "relay-mode submission", s.name(), l);
        }
    }
    if let Some(rp) = &ctx.res.replicas {
        render_replicas(ctx, rp, out);
    }
    if let Some(g) = &ctx.res.graph {
        crate::graph::render(g, ctx.opts.rounds, ctx.opts.transfer_rounds, out);
    }
}

pub fn latency_header(out: &mut String, what: &str) {
    let _ = writeln!(
        out,
        "| measure | {what} | sessions | errors | p50 ms | p90 ms | p99 ms | max ms | p50 of each round (ms) |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---|");
}

pub fn latency_row(out: &mut String, measure: &str, who: &str, l: &LoginSeries) {
    let rounds: Vec<String> = l.round_p50_ms.iter().map(|x| f(*x, 2)).collect();
    let _ = writeln!(
        out,
        "| {measure} | {who} | {} | {}{} | {} | {} | {} | {} | {} |",
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

fn render_replicas(ctx: &Ctx, rp: &crate::replicas::ReplicasRun, out: &mut String) {
    let _ = writeln!(
        out,
        "\n### Replicas sharing a delegated account through Redis\n"
    );
    if let Some(why) = &rp.skipped {
        let _ = writeln!(out, "Not measured: {why}.");
        return;
    }
    let _ = writeln!(
        out,
        "{} authbridge processes with `token_store: {{ type: redis }}` on one `redis-server` ({}) started on loopback, one master key (`key_file`), one delegated (authorization-code) account whose refresh token was imported once with `authbridge import-token`; the sandbox rotates refresh tokens on use. **Cold burst**: all replicas restarted and the shared access token deleted from Redis, then {} IMAP logins at once, login i to replica i mod {}; token requests = the sandbox's `refresh_token` grant counter from before the replicas started to after the last login. Per-login limit {} s.\n",
        rp.replicas, rp.redis_version, ctx.opts.burst, rp.replicas, ctx.opts.burst_timeout_secs
    );
    let _ = writeln!(
        out,
        "| round | ok | logins per replica | failed | token requests | p50 ms | p99 ms | max ms | all done after s |"
    );
    let _ = writeln!(out, "|---:|---:|---|---:|---:|---:|---:|---:|---:|");
    for b in &rp.bursts {
        let per: Vec<String> = b.per_replica_ok.iter().map(usize::to_string).collect();
        let _ = writeln!(
            out,
            "| {} | {}/{} | {} | {}{} | {} | {} | {} | {} | {} |",
            b.round + 1,
            b.ok,
            b.n,
            per.join(" + "),
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
    let _ = writeln!(
        out,
        "\n**Warm logins**, redis store against file store: replica 1 (warm from the bursts) and one more authbridge with the same config but the default file store and its own delegated token, one login at a time, 5 warm-up logins each, {} rounds with the order rotating.\n",
        ctx.opts.rounds
    );
    latency_header(out, "token store");
    for (proto, m) in &rp.warm {
        for (s, l) in m {
            latency_row(out, &format!("warm login {}", proto.name()), s.name(), l);
        }
    }
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

/// The measured figures of this run, by key (see targets.rs for the keys it reads), with the
/// run's block, round trip, start time, git commit and command, written to `WORK/figures.json`
/// for `authbridge-bench targets`. NaN (not measured) figures are left out.
pub fn figures(ctx: &Ctx) -> serde_json::Value {
    use serde_json::{Map, Value, json};
    let mut m = Map::new();
    let mut num = |k: String, v: f64| {
        if v.is_finite() {
            m.insert(k, json!(v));
        }
    };
    let systems = [
        System::Direct,
        System::Relay,
        System::Authbridge,
        System::EmailProxy,
    ];
    for (proto, series) in &ctx.res.logins {
        for (s, l) in series {
            for p in [50.0, 99.0] {
                num(
                    format!("login.{}.{}.p{p}", proto.short(), s.name()),
                    percentile(&l.samples_ms, p),
                );
            }
        }
    }
    for s in systems {
        for p in [50.0, 99.0] {
            num(
                format!("relay_mode.{}.p{p}", s.name()),
                relay_mode_p(ctx, s, p),
            );
        }
        for (k, key) in [(Transfer::Fetch, "fetch"), (Transfer::Data, "data")] {
            num(
                format!("transfer.{key}.{}.mbps", s.name()),
                transfer_median(ctx, k, s, TransferRun::mbps),
            );
            if s != System::Direct {
                num(
                    format!("transfer.{key}.{}.cpu_s_per_gb", s.name()),
                    transfer_median(ctx, k, s, cpu_per_gb),
                );
            }
        }
        let bursts = burst_runs(ctx, s);
        if !bursts.is_empty() {
            num(format!("burst.{}.p99", s.name()), burst_p99(ctx, s));
            num(
                format!("burst.{}.max_token_requests", s.name()),
                bursts.iter().map(|b| b.token_requests).max().unwrap_or(0) as f64,
            );
            num(
                format!("burst.{}.failed", s.name()),
                bursts.iter().map(|b| b.failed).sum::<usize>() as f64,
            );
            num(format!("burst.{}.rounds", s.name()), bursts.len() as f64);
        }
    }
    for r in &ctx.res.idle {
        let k = format!("idle.{}.{}", r.n, r.system.name());
        num(format!("{k}.kib_per_session"), r.kib_per_session());
        num(format!("{k}.tried"), r.tried as f64);
        num(format!("{k}.opened"), r.opened as f64);
        num(format!("{k}.noop_ok"), r.noop_ok as f64);
    }
    if let Some(st) = &ctx.res.storm {
        num("storm.logins".into(), st.logins as f64);
        num("storm.peak_mib".into(), st.peak_kib as f64 / 1024.0);
        num("storm.before_mib".into(), st.rss_before_kib as f64 / 1024.0);
        num(
            "storm.settled_mib".into(),
            st.rss_settled_kib as f64 / 1024.0,
        );
        let all_ok =
            st.glpi_reply.starts_with("235") && st.probes.iter().all(|(x, _)| x.starts_with("235"));
        num("storm.glpi_all_235".into(), f64::from(u8::from(all_ok)));
        num(
            "storm.glpi_slowest_ms".into(),
            st.probes
                .iter()
                .map(|(_, ms)| *ms)
                .fold(st.glpi_ms, f64::max),
        );
    }
    if let Some(rp) = ctx.res.replicas.as_ref().filter(|r| r.skipped.is_none()) {
        num("replicas.count".into(), rp.replicas as f64);
        num(
            "replicas.max_token_requests".into(),
            rp.bursts
                .iter()
                .map(|b| b.token_requests)
                .max()
                .unwrap_or(0) as f64,
        );
        num(
            "replicas.failed".into(),
            rp.bursts.iter().map(|b| b.failed).sum::<usize>() as f64,
        );
        num("replicas.rounds".into(), rp.bursts.len() as f64);
        num(
            "replicas.p99".into(),
            median(
                &rp.bursts
                    .iter()
                    .map(|b| percentile(&b.latencies_ms, 99.0))
                    .collect::<Vec<_>>(),
            ),
        );
        for (proto, series) in &rp.warm {
            for (st, l) in series {
                let key = match st {
                    crate::replicas::Store::Redis => "redis",
                    crate::replicas::Store::File => "file",
                };
                for p in [50.0, 99.0] {
                    num(
                        format!("replicas.warm.{}.{key}.p{p}", proto.short()),
                        percentile(&l.samples_ms, p),
                    );
                }
            }
        }
    }
    if let Some(g) = &ctx.res.graph {
        crate::graph::figures(g, &mut num);
    }
    let tokens = |s: System| -> Vec<u64> {
        burst_runs(ctx, s)
            .iter()
            .map(|b| b.token_requests)
            .collect()
    };
    json!({
        "block": ctx.opts.block,
        "rtt_ms": ctx.opts.upstream_rtt_ms,
        "started": ctx.res.started,
        "git": sh("git rev-parse --short HEAD 2>/dev/null"),
        "command": ctx.opts.command,
        "burst": ctx.opts.burst,
        "fetch_mb": ctx.opts.fetch_bytes / 1_000_000,
        "data_mb": ctx.opts.data_bytes / 1_000_000,
        "burst_tokens_authbridge": tokens(System::Authbridge),
        "replica_tokens": ctx.res.replicas.as_ref().map(|r| r.bursts.iter().map(|b| b.token_requests).collect::<Vec<_>>()),
        "figures": Value::Object(m),
    })
}

/// A short plain-text summary for the terminal.
pub fn summary(ctx: &Ctx) -> String {
    let mut out = String::new();
    if !storm_only(ctx) {
        summary_table(ctx, &mut out);
    }
    if let Some(g) = &ctx.res.graph {
        let _ = writeln!(out, "\nGraph backend:");
        crate::graph::table(g, &mut out);
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
    if ctx.opts.phases.iter().any(|x| x == "graph") {
        p.extend(crate::graph::smoke_problems(ctx.res.graph.as_ref()));
    }
    if ctx.opts.phases.iter().any(|x| x == "relay-mode") {
        match &ctx.res.relay_mode {
            None => p.push("no relay-mode run".into()),
            Some(rm) => {
                for s in systems.iter().filter(|s| **s != System::EmailProxy) {
                    if !relay_mode_p(ctx, *s, 50.0).is_finite() {
                        p.push(format!("no relay-mode latency for {}", s.name()));
                    }
                }
                if rm.connector_accepted != rm.client_accepted {
                    p.push(format!(
                        "relay mode: the connector accepted {} messages, the clients {}",
                        rm.connector_accepted, rm.client_accepted
                    ));
                }
            }
        }
    }
    if ctx.opts.phases.iter().any(|x| x == "replicas") {
        match &ctx.res.replicas {
            None => p.push("no replicas run".into()),
            Some(rp) if rp.skipped.is_some() => {}
            Some(rp) => {
                for b in &rp.bursts {
                    if b.token_requests != 1 {
                        p.push(format!(
                            "replicas: cold burst round {} made {} token requests (expected exactly 1)",
                            b.round + 1,
                            b.token_requests
                        ));
                    }
                    if b.failed > 0 {
                        p.push(format!(
                            "replicas: cold burst round {}: {} logins failed (first: {})",
                            b.round + 1,
                            b.failed,
                            b.first_error.as_deref().unwrap_or("?")
                        ));
                    }
                }
                for (proto, m) in &rp.warm {
                    for (st, l) in m {
                        if !percentile(&l.samples_ms, 50.0).is_finite() || l.errors > 0 {
                            p.push(format!(
                                "replicas: warm {} with the {}: {} errors",
                                proto.name(),
                                st.name(),
                                l.errors
                            ));
                        }
                    }
                }
            }
        }
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
