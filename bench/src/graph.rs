//! The Graph backend (`upstream: { type: graph }`, issue 19 item 4): an authbridge SMTP listener
//! that posts each message to the sandbox's Microsoft Graph `sendMail` stand-in, side by side with
//! the SMTP AUTH path to the same sandbox — authbridge's usual XOAUTH2 listener, and the load
//! generator doing STARTTLS and XOAUTH2 itself (direct). Each authbridge listener runs in its own
//! process with the same app-only account, so CPU and peak memory are its own.
//!
//! - Small messages: one 2 KiB message per session (connect → `EHLO` → login → `MAIL`/`RCPT`/
//!   `DATA` → the `250` after the message), at a few concurrencies; every concurrency interleaves
//!   the paths round by round with the order rotating.
//! - A large message near Graph's limit (authbridge takes at most 3,145,728 bytes on a Graph
//!   listener, whose base64 is Graph's 4 MB request limit): several in one logged-in session per
//!   round, timed from `MAIL` to the last `250` (throughput, the proxy's CPU seconds per GB), then
//!   a few sessions sending one each at the same moment; the proxy's peak RSS (VmHWM, reset
//!   before each part) is read after each part.
//!
//! Over 600 lines: the phase, its section of the report, its figures and smoke checks, and their
//! unit tests, kept together like the storm's in storm.rs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::client::{self, System, Target, err};
use crate::phases::{Ctx, LoginSeries, log, order};
use crate::procs::{Proc, free_port, wait_port};
use crate::report::{self, f, percentile};
use crate::systems::{LOCAL_PASS, LOCAL_USER};

/// The largest message authbridge's Graph listener takes (docs/configuration.md).
pub const GRAPH_MESSAGE_MAX: usize = 3_145_728;
/// Recipient (a tenant mailbox: Graph delivers into the sandbox's store).
const RCPT: &str = "sink@contoso.com";
/// The application permissions of the bench's client: the sandbox's defaults plus `Mail.Send`
/// (Graph's app-only `sendMail` needs it; the roles list replaces the old one).
const ROLES: [&str; 4] = [
    "IMAP.AccessAsApp",
    "POP.AccessAsApp",
    "SMTP.SendAsApp",
    "Mail.Send",
];
/// One submission's limit (a 3 MB message over loopback takes well under a second).
const SUBMIT_LIMIT: Duration = Duration::from_secs(120);

/// The three ways a message goes out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Way {
    /// The load generator: STARTTLS and `AUTH XOAUTH2` to the sandbox's SMTP server.
    Direct,
    /// authbridge's SMTP listener with a mail upstream (XOAUTH2 to the same server).
    SmtpAuth,
    /// authbridge's SMTP listener with `upstream: { type: graph }`.
    Graph,
}

impl Way {
    pub const ALL: [Way; 3] = [Way::Direct, Way::SmtpAuth, Way::Graph];

    pub fn name(self) -> &'static str {
        match self {
            Way::Direct => "direct SMTP AUTH",
            Way::SmtpAuth => "authbridge → SMTP AUTH",
            Way::Graph => "authbridge → Graph",
        }
    }

    /// The figures' key.
    pub fn key(self) -> &'static str {
        match self {
            Way::Direct => "direct",
            Way::SmtpAuth => "smtp",
            Way::Graph => "graph",
        }
    }
}

/// The large messages of one path in one round, sent one after the other in one session.
#[derive(Clone, Debug)]
pub struct LargeRound {
    pub bytes: u64,
    pub secs: f64,
    /// The proxy's CPU seconds (NaN for direct).
    pub proxy_cpu: f64,
}

impl LargeRound {
    pub fn mbps(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.secs
    }
}

/// An authbridge process's memory around the large messages (KiB; 0 for direct).
#[derive(Clone, Debug, Default)]
pub struct Memory {
    /// VmRSS after the warm-up, before any large message.
    pub rss_before_kib: u64,
    /// Whether VmHWM could be reset (`clear_refs`) before each part; if not, the peaks
    /// include the process's start and the first login (argon2).
    pub peak_reset: bool,
    /// VmHWM after the large messages sent one at a time.
    pub peak_sequential_kib: u64,
    /// VmHWM after `parallel` sessions each sent one at the same moment.
    pub peak_parallel_kib: u64,
    /// How long the parallel sends took in all, and how many failed.
    pub parallel_secs: f64,
    pub parallel_failed: usize,
}

#[derive(Default)]
pub struct GraphRun {
    pub small_bytes: usize,
    pub large_bytes: usize,
    pub large_per_round: usize,
    pub parallel: usize,
    /// Per concurrency: each path's submission latencies.
    pub small: Vec<(usize, BTreeMap<Way, LoginSeries>)>,
    pub large: BTreeMap<Way, Vec<LargeRound>>,
    pub memory: BTreeMap<Way, Memory>,
    /// `sendMail` requests the Graph stand-in accepted during the phase, and the messages the
    /// Graph path's clients saw accepted (warm-ups included): the two must agree.
    pub graph_accepted: u64,
    pub client_graph_accepted: u64,
}

impl GraphRun {
    pub fn small_p(&self, c: usize, w: Way, p: f64) -> f64 {
        self.small
            .iter()
            .find(|(cc, _)| *cc == c)
            .and_then(|(_, m)| m.get(&w))
            .map_or(f64::NAN, |l| percentile(&l.samples_ms, p))
    }

    pub fn large_median(&self, w: Way, what: fn(&LargeRound) -> f64) -> f64 {
        let v: Vec<f64> = self
            .large
            .get(&w)
            .map(|r| r.iter().map(what).collect())
            .unwrap_or_default();
        report::median(&v)
    }

    /// The proxy's CPU seconds per GB over all rounds together (finer than one round's: the
    /// kernel counts CPU time in ticks of 10 ms).
    pub fn cpu_s_per_gb(&self, w: Way) -> f64 {
        let Some(r) = self.large.get(&w).filter(|r| !r.is_empty()) else {
            return f64::NAN;
        };
        let cpu: f64 = r.iter().map(|x| x.proxy_cpu).sum();
        let bytes: u64 = r.iter().map(|x| x.bytes).sum();
        cpu / (bytes as f64 / 1e9)
    }

    pub fn peak_mib(&self, w: Way) -> f64 {
        match self.memory.get(&w) {
            Some(m) if m.peak_parallel_kib > 0 => {
                m.peak_parallel_kib.max(m.peak_sequential_kib) as f64 / 1024.0
            }
            _ => f64::NAN,
        }
    }
}

/// One authbridge process with a single SMTP listener.
struct Listener {
    proc: Proc,
    addr: SocketAddr,
}

impl Listener {
    /// `upstream`: the listener's `upstream:` value (YAML flow style).
    async fn start(ctx: &Ctx, name: &str, upstream: &str) -> io::Result<Listener> {
        let dir = ctx.opts.work.join(name);
        std::fs::create_dir_all(&dir)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let ca = ctx.sb.dir.join("ca.pem");
        let text = format!(
            r#"# Written by bench/ (authbridge-bench, graph phase); regenerated on every run.
state_dir: ./state
log: {{ level: info, format: text }}
hostname: localhost
providers:
  sandbox:
    type: microsoft
    tenant: {tenant}
    client_id: {client_id}
    client_secret: {client_secret}
    flow: client_credentials
    token_url: {token_url}
    ca_file: {ca}
accounts:
  - name: tickets
    provider: sandbox
    mailbox: {mailbox}
    logins:
      - {{ username: {LOCAL_USER}, password_hash: "{hash}" }}
listeners:
  - name: {name}
    protocol: smtp
    listen: {addr}
    tls: none
    upstream: {upstream}
"#,
            tenant = ctx.sb.s("tenant"),
            client_id = ctx.sb.s("client_id"),
            client_secret = ctx.sb.s("client_secret"),
            token_url = ctx.sb.s("token_url"),
            ca = ca.display(),
            mailbox = ctx.mailbox,
            hash = ctx.hash,
        );
        let config: PathBuf = dir.join("authbridge.yaml");
        std::fs::write(&config, text)?;
        let mut cmd = Command::new(&ctx.opts.authbridge);
        cmd.arg("run").arg("--config").arg(&config);
        for (k, v) in &ctx.opts.authbridge_env {
            cmd.env(k, v);
        }
        let mut proc = Proc::spawn(name, cmd, &dir.join("authbridge.log"))?;
        wait_port(addr, &mut proc, Duration::from_secs(30)).await?;
        Ok(Listener { proc, addr })
    }
}

/// The large message must stay within what a Graph listener takes (it would refuse it, and the
/// phase would measure the refusal).
fn large_size_ok(bytes: usize) -> io::Result<()> {
    if bytes > GRAPH_MESSAGE_MAX {
        return Err(err(format!(
            "graph: --graph-large-bytes {bytes} is over the Graph listener's limit of {GRAPH_MESSAGE_MAX} bytes; choose at most that"
        )));
    }
    Ok(())
}

/// One message in a new session: connect, log in, send; the time to the `250` after it.
async fn submit(t: &Target, from: &str, body: &[u8]) -> io::Result<Duration> {
    let start = Instant::now();
    let mut c = t.smtp_login().await?;
    client::smtp_send(&mut c, from, RCPT, body).await?;
    let took = start.elapsed();
    let _ = c.send(b"QUIT\r\n").await;
    c.close().await;
    Ok(took)
}

async fn submit_limited(t: &Target, from: &str, body: &[u8]) -> io::Result<Duration> {
    timeout(SUBMIT_LIMIT, submit(t, from, body))
        .await
        .map_err(|_| err(format!("no 250 within {} s", SUBMIT_LIMIT.as_secs())))?
}

fn graph_accepted(counters: &serde_json::Value) -> u64 {
    counters["graph"]["accepted"].as_u64().unwrap_or(0)
}

pub async fn graph(ctx: &mut Ctx) -> io::Result<()> {
    large_size_ok(ctx.opts.graph_large_bytes)?;
    if ctx.opts.upstream_rtt_ms > 0 {
        // The WAN relay delays the mail servers only; the Graph stand-in would be nearer.
        return Err(err(
            "graph: not measured with --upstream-rtt-ms (only the mail servers would be far away)",
        ));
    }
    let client_id = ctx.sb.s("client_id");
    ctx.sb
        .control("app", &json!({"client_id": client_id, "roles": ROLES}))
        .await?;
    let graph_url = ctx.sb.s("graph_url");
    let ca = ctx.sb.dir.join("ca.pem");
    let up_smtp = ctx.sb.addr("smtp")?;
    let graph_l = Listener::start(
        ctx,
        "authbridge-graph",
        &format!(
            "{{ type: graph, endpoint: \"{graph_url}\", ca_file: {} }}",
            ca.display()
        ),
    )
    .await?;
    let smtp_l = Listener::start(
        ctx,
        "authbridge-smtp",
        &format!(
            "{{ host: {}, port: {}, tls: starttls, server_name: localhost, ca_file: {} }}",
            up_smtp.ip(),
            up_smtp.port(),
            ca.display()
        ),
    )
    .await?;
    log(format!(
        "graph: authbridge → Graph on {} (pid {}), authbridge → SMTP AUTH on {} (pid {})",
        graph_l.addr,
        graph_l.proc.pid(),
        smtp_l.addr,
        smtp_l.proc.pid()
    ));
    let local = |addr: SocketAddr| Target {
        system: System::Authbridge,
        smtp: addr,
        imap: addr,
        user: LOCAL_USER.to_string(),
        pass: LOCAL_PASS.to_string(),
        tls: None,
        mailbox: ctx.mailbox.clone(),
        token: String::new(),
    };
    // A fresh token for the direct client: the phase comes last in a full run, and the one
    // fetched at the start lives an hour.
    let mut direct = ctx.direct.clone();
    direct.token = ctx.sb.fetch_token().await?;
    let targets: BTreeMap<Way, Target> = [
        (Way::Direct, direct),
        (Way::SmtpAuth, local(smtp_l.addr)),
        (Way::Graph, local(graph_l.addr)),
    ]
    .into_iter()
    .collect();
    let proc_of = |w: Way| match w {
        Way::Direct => None,
        Way::SmtpAuth => Some(&smtp_l.proc),
        Way::Graph => Some(&graph_l.proc),
    };
    let from = ctx.mailbox.clone();
    let small = Arc::new(client::message(
        ctx.opts.graph_small_bytes,
        &from,
        RCPT,
        "bench-graph-small",
    ));
    let large = Arc::new(client::message(
        ctx.opts.graph_large_bytes,
        &from,
        RCPT,
        "bench-graph-large",
    ));
    let mut run = GraphRun {
        small_bytes: small.len(),
        large_bytes: large.len(),
        large_per_round: ctx.opts.graph_large_messages,
        parallel: ctx.opts.graph_parallel,
        ..Default::default()
    };
    let before = graph_accepted(&ctx.sb.counters().await?);
    // Warm up: the Graph token (its own scope), the verified-credential cache, TLS sessions.
    for (w, t) in &targets {
        for _ in 0..5 {
            submit_limited(t, &from, &small)
                .await
                .map_err(|e| err(format!("{} warm-up: {e}", w.name())))?;
            if *w == Way::Graph {
                run.client_graph_accepted += 1;
            }
        }
    }

    // Small messages at each concurrency.
    let rounds = ctx.opts.rounds;
    for &c in &ctx.opts.graph_concurrency {
        let mut series: BTreeMap<Way, LoginSeries> = BTreeMap::new();
        for r in 0..rounds {
            for w in order(&Way::ALL, r) {
                let total = ctx.opts.graph_messages;
                let n = total / rounds + usize::from(r < total % rounds);
                let mut set = JoinSet::new();
                for k in 0..c {
                    let share = n / c + usize::from(k < n % c);
                    let (t, body, from) = (targets[&w].clone(), small.clone(), from.clone());
                    set.spawn(async move {
                        let mut out = Vec::with_capacity(share);
                        for _ in 0..share {
                            out.push(submit_limited(&t, &from, &body).await);
                        }
                        out
                    });
                }
                let e = series.entry(w).or_default();
                let mut round = Vec::with_capacity(n);
                while let Some(j) = set.join_next().await {
                    let results = j.map_err(|e| err(e.to_string()))?;
                    for x in results {
                        match x {
                            Ok(d) => {
                                round.push(d.as_secs_f64() * 1e3);
                                if w == Way::Graph {
                                    run.client_graph_accepted += 1;
                                }
                            }
                            Err(x) => {
                                e.errors += 1;
                                e.first_error.get_or_insert_with(|| x.to_string());
                            }
                        }
                    }
                }
                let p50 = percentile(&round, 50.0);
                log(format!(
                    "graph {} B × concurrency {c} round {}/{rounds} {}: {} ok, p50 {p50:.2} ms",
                    run.small_bytes,
                    r + 1,
                    w.name(),
                    round.len()
                ));
                e.round_p50_ms.push(p50);
                e.samples_ms.extend(round);
            }
        }
        run.small.push((c, series));
    }

    // Large messages: memory before, then one session per path and round.
    // The peaks count from here: the first login's argon2 and the start are not the messages'.
    for w in Way::ALL {
        let m = run.memory.entry(w).or_default();
        m.rss_before_kib = proc_of(w).map_or(0, Proc::rss_kib);
        m.peak_reset = proc_of(w).is_some_and(Proc::reset_hwm);
    }
    for r in 0..ctx.opts.transfer_rounds {
        for w in order(&Way::ALL, r) {
            let t = &targets[&w];
            let mut c = timeout(SUBMIT_LIMIT, t.smtp_login())
                .await
                .map_err(|_| err(format!("{} large: no login", w.name())))??;
            let cpu0 = proc_of(w).map_or(f64::NAN, Proc::cpu_secs);
            let start = Instant::now();
            let mut bytes = 0;
            for i in 0..ctx.opts.graph_large_messages {
                bytes += timeout(SUBMIT_LIMIT, client::smtp_send(&mut c, &from, RCPT, &large))
                    .await
                    .map_err(|_| err(format!("{} large message {}: no 250", w.name(), i + 1)))?
                    .map_err(|e| err(format!("{} large message {}: {e}", w.name(), i + 1)))?;
                if w == Way::Graph {
                    run.client_graph_accepted += 1;
                }
            }
            let round = LargeRound {
                bytes,
                secs: start.elapsed().as_secs_f64(),
                proxy_cpu: proc_of(w).map_or(f64::NAN, Proc::cpu_secs) - cpu0,
            };
            let _ = c.send(b"QUIT\r\n").await;
            c.close().await;
            log(format!(
                "graph {} × {} B round {} {}: {:.1} MB/s, proxy CPU {:.2} s",
                ctx.opts.graph_large_messages,
                run.large_bytes,
                r + 1,
                w.name(),
                round.mbps(),
                round.proxy_cpu
            ));
            run.large.entry(w).or_default().push(round);
        }
    }
    for w in Way::ALL {
        let m = run.memory.entry(w).or_default();
        m.peak_sequential_kib = proc_of(w).map_or(0, Proc::hwm_kib);
    }
    // Then `parallel` large messages at the same moment, per path.
    for w in Way::ALL {
        if let Some(p) = proc_of(w) {
            let m = run.memory.entry(w).or_default();
            m.peak_reset &= p.reset_hwm();
        }
        let start = Instant::now();
        let mut set = JoinSet::new();
        for _ in 0..ctx.opts.graph_parallel {
            let (t, body, from) = (targets[&w].clone(), large.clone(), from.clone());
            set.spawn(async move { submit_limited(&t, &from, &body).await });
        }
        let mut failed = 0;
        let mut first = None;
        while let Some(j) = set.join_next().await {
            match j.map_err(|e| err(e.to_string()))? {
                Ok(_) if w == Way::Graph => run.client_graph_accepted += 1,
                Ok(_) => {}
                Err(e) => {
                    failed += 1;
                    first.get_or_insert(e.to_string());
                }
            }
        }
        let m = run.memory.entry(w).or_default();
        m.parallel_secs = start.elapsed().as_secs_f64();
        m.parallel_failed = failed;
        m.peak_parallel_kib = proc_of(w).map_or(0, Proc::hwm_kib);
        log(format!(
            "graph {} large messages at once {}: {failed} failed, {:.2} s, peak RSS {:.1} MiB",
            ctx.opts.graph_parallel,
            w.name(),
            m.parallel_secs,
            m.peak_parallel_kib as f64 / 1024.0
        ));
        if let Some(e) = first {
            ctx.res.notes.push(format!(
                "graph phase: {failed} of {} parallel large messages through {} failed (first: {e})",
                ctx.opts.graph_parallel,
                w.name()
            ));
        }
    }
    run.graph_accepted = graph_accepted(&ctx.sb.counters().await?) - before;
    if run.graph_accepted != run.client_graph_accepted {
        ctx.res.notes.push(format!(
            "graph phase: the Graph stand-in accepted {} sendMail requests, the clients saw {} messages accepted",
            run.graph_accepted, run.client_graph_accepted
        ));
    }
    drop(graph_l);
    drop(smtp_l);
    ctx.res.graph = Some(run);
    Ok(())
}

/// The phase's section of the report.
pub fn render(run: &GraphRun, rounds: usize, transfer_rounds: usize, out: &mut String) {
    let _ = writeln!(
        out,
        "\n### Microsoft Graph backend: message submission\n\n**authbridge → Graph**: an authbridge SMTP listener with `upstream: {{ type: graph }}` posting each message to the sandbox's Graph `sendMail` stand-in (HTTPS on loopback; an app-only account with the `Mail.Send` application permission); **authbridge → SMTP AUTH**: the same account on an SMTP listener with XOAUTH2 to the sandbox's SMTP server (STARTTLS); **direct SMTP AUTH**: the load generator does STARTTLS and `AUTH XOAUTH2` to that server itself. Each authbridge listener runs in its own process (its CPU and peak RSS are its own); clients log in to authbridge with `AUTH LOGIN` over plaintext loopback.\n\n**Small messages**: one {} B message per session, connect → the `250` after the message, at concurrency C (C sessions at a time); 5 warm-up messages per path, then {rounds} rounds with the order rotating. **Large message**: {} B (authbridge's Graph listener takes at most {GRAPH_MESSAGE_MAX} B, the base64 of which is Graph's 4 MB request limit), {} of them in one logged-in session per path and round ({transfer_rounds} rounds), timed from `MAIL` to the last `250`; CPU = the proxy process's user + system seconds over those messages. Then {} sessions each send one at the same moment. RSS: VmRSS before the large messages, VmHWM (the process's peak) after the ones sent one at a time and after the ones at once, {}. The Graph stand-in accepted {} `sendMail` requests in this phase, the clients saw {} messages accepted through Graph.\n",
        run.small_bytes,
        run.large_bytes,
        run.large_per_round,
        run.parallel,
        if run
            .memory
            .values()
            .filter(|m| m.rss_before_kib > 0)
            .all(|m| m.peak_reset)
        {
            "VmHWM reset (`clear_refs`) before each of the two parts"
        } else {
            "**VmHWM could not be reset** (`clear_refs` refused): the peaks include the process's start and its first login (argon2)"
        },
        run.graph_accepted,
        run.client_graph_accepted
    );
    table(run, out);
    let _ = writeln!(out);
    report::latency_header(out, "path");
    for (c, m) in &run.small {
        for (w, l) in m {
            report::latency_row(
                out,
                &format!("{} B message, concurrency {c}", run.small_bytes),
                w.name(),
                l,
            );
        }
    }
    let _ = writeln!(
        out,
        "\n| large messages | path | round | MB | s | MB/s | proxy CPU s |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|");
    for (w, rounds) in &run.large {
        for (i, r) in rounds.iter().enumerate() {
            let _ = writeln!(
                out,
                "| {} × {} B | {} | {} | {:.1} | {:.2} | {:.1} | {} |",
                run.large_per_round,
                run.large_bytes,
                w.name(),
                i + 1,
                r.bytes as f64 / 1e6,
                r.secs,
                r.mbps(),
                f(r.proxy_cpu, 2)
            );
        }
    }
}

/// The headline table (also printed at the end of a run).
pub fn table(run: &GraphRun, out: &mut String) {
    let _ = writeln!(
        out,
        "| measure | direct SMTP AUTH | authbridge → SMTP AUTH | authbridge → Graph | Graph / SMTP AUTH (authbridge) | Graph / direct |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    let row = |out: &mut String, name: String, v: [f64; 3], prec: usize| {
        let [d, s, g] = v;
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} |",
            f(d, prec),
            f(s, prec),
            f(g, prec),
            report::ratio(g, s),
            report::ratio(g, d)
        );
    };
    for (c, _) in &run.small {
        for p in [50.0, 99.0] {
            row(
                out,
                format!("{} B message, concurrency {c}: p{p} (ms)", run.small_bytes),
                Way::ALL.map(|w| run.small_p(*c, w, p)),
                2,
            );
        }
    }
    let mb = run.large_bytes as f64 / 1e6;
    row(
        out,
        format!("{mb:.1} MB messages: throughput (MB/s, median of rounds)"),
        Way::ALL.map(|w| run.large_median(w, LargeRound::mbps)),
        1,
    );
    row(
        out,
        format!("{mb:.1} MB messages: CPU of the proxy process (s per GB, all rounds)"),
        Way::ALL.map(|w| {
            if w == Way::Direct {
                f64::NAN
            } else {
                run.cpu_s_per_gb(w)
            }
        }),
        2,
    );
    let mem = |get: fn(&Memory) -> u64| {
        Way::ALL.map(|w| match run.memory.get(&w) {
            Some(m) if w != Way::Direct => get(m) as f64 / 1024.0,
            _ => f64::NAN,
        })
    };
    row(
        out,
        "RSS before the large messages (MiB)".into(),
        mem(|m| m.rss_before_kib),
        1,
    );
    row(
        out,
        "peak RSS after the large messages one at a time (MiB)".into(),
        mem(|m| m.peak_sequential_kib),
        1,
    );
    row(
        out,
        format!(
            "peak RSS after {} large messages at once (MiB)",
            run.parallel
        ),
        mem(|m| m.peak_parallel_kib),
        1,
    );
    row(
        out,
        format!(
            "{} large messages at once: all done after (s)",
            run.parallel
        ),
        Way::ALL.map(|w| run.memory.get(&w).map_or(f64::NAN, |m| m.parallel_secs)),
        2,
    );
}

/// Figures for `authbridge-bench targets` (keys `graph.*`).
pub fn figures(run: &GraphRun, num: &mut dyn FnMut(String, f64)) {
    for (c, _) in &run.small {
        for w in Way::ALL {
            for p in [50.0, 99.0] {
                num(
                    format!("graph.small.c{c}.{}.p{p}", w.key()),
                    run.small_p(*c, w, p),
                );
            }
        }
    }
    for w in Way::ALL {
        num(
            format!("graph.large.{}.mbps", w.key()),
            run.large_median(w, LargeRound::mbps),
        );
        if w != Way::Direct {
            num(
                format!("graph.large.{}.cpu_s_per_gb", w.key()),
                run.cpu_s_per_gb(w),
            );
            num(format!("graph.large.{}.peak_mib", w.key()), run.peak_mib(w));
        }
    }
    num("graph.small_bytes".into(), run.small_bytes as f64);
    num("graph.large_bytes".into(), run.large_bytes as f64);
    num("graph.parallel".into(), run.parallel as f64);
}

/// Smoke mode: every figure is a number, nothing failed, and the stand-in's count agrees.
pub fn smoke_problems(run: Option<&GraphRun>) -> Vec<String> {
    let Some(run) = run else {
        return vec!["no graph run".into()];
    };
    let mut p = Vec::new();
    for (c, m) in &run.small {
        for w in Way::ALL {
            match m.get(&w) {
                Some(l) if l.errors == 0 && percentile(&l.samples_ms, 50.0).is_finite() => {}
                Some(l) => p.push(format!(
                    "graph: {} at concurrency {c}: {} errors (first: {})",
                    w.name(),
                    l.errors,
                    l.first_error.as_deref().unwrap_or("none")
                )),
                None => p.push(format!(
                    "graph: no latency for {} at concurrency {c}",
                    w.name()
                )),
            }
        }
    }
    for w in Way::ALL {
        if !run.large_median(w, LargeRound::mbps).is_finite() {
            p.push(format!(
                "graph: no large-message throughput for {}",
                w.name()
            ));
        }
        if w != Way::Direct {
            if !run.cpu_s_per_gb(w).is_finite() {
                p.push(format!("graph: no CPU figure for {}", w.name()));
            }
            if !run.peak_mib(w).is_finite() {
                p.push(format!("graph: no peak RSS for {}", w.name()));
            }
        }
        if run.memory.get(&w).is_some_and(|m| m.parallel_failed > 0) {
            p.push(format!(
                "graph: parallel large messages failed through {}",
                w.name()
            ));
        }
    }
    if run.graph_accepted != run.client_graph_accepted {
        p.push(format!(
            "graph: the Graph stand-in accepted {} requests, the clients saw {} accepted",
            run.graph_accepted, run.client_graph_accepted
        ));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(ms: &[f64]) -> LoginSeries {
        LoginSeries {
            samples_ms: ms.to_vec(),
            round_p50_ms: vec![percentile(ms, 50.0)],
            ..Default::default()
        }
    }

    fn complete() -> GraphRun {
        let mut run = GraphRun {
            small_bytes: 2018,
            large_bytes: 2_999_948,
            large_per_round: 2,
            parallel: 2,
            graph_accepted: 7,
            client_graph_accepted: 7,
            ..Default::default()
        };
        run.small.push((
            1,
            Way::ALL
                .into_iter()
                .map(|w| (w, series(&[1.0, 2.0])))
                .collect(),
        ));
        for w in Way::ALL {
            let cpu = if w == Way::Direct { f64::NAN } else { 0.03 };
            run.large.insert(
                w,
                vec![LargeRound {
                    bytes: 6_000_000,
                    secs: 0.1,
                    proxy_cpu: cpu,
                }],
            );
            let kib = if w == Way::Direct { 0 } else { 30_000 };
            run.memory.insert(
                w,
                Memory {
                    rss_before_kib: kib / 2,
                    peak_sequential_kib: kib,
                    peak_parallel_kib: kib,
                    ..Default::default()
                },
            );
        }
        run
    }

    #[test]
    fn figures_of_a_complete_run() {
        let run = complete();
        assert!(smoke_problems(Some(&run)).is_empty());
        assert!((run.cpu_s_per_gb(Way::Graph) - 5.0).abs() < 1e-9);
        assert!((run.large_median(Way::Graph, LargeRound::mbps) - 60.0).abs() < 1e-9);
        let mut keys = Vec::new();
        figures(&run, &mut |k, v| {
            if v.is_finite() {
                keys.push(k)
            }
        });
        for k in [
            "graph.small.c1.graph.p50",
            "graph.large.smtp.cpu_s_per_gb",
            "graph.large.graph.peak_mib",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} in {keys:?}");
        }
        let mut text = String::new();
        render(&run, 2, 1, &mut text);
        assert!(text.contains("| 2018 B message, concurrency 1: p50 (ms) | 1.00 | 1.00 | 1.00 |"));
    }

    #[test]
    fn large_messages_stay_below_the_graph_limit() {
        assert!(large_size_ok(3_000_000).is_ok());
        assert!(large_size_ok(GRAPH_MESSAGE_MAX).is_ok());
        let e = large_size_ok(GRAPH_MESSAGE_MAX + 1).unwrap_err();
        assert!(e.to_string().contains("limit of 3145728"), "{e}");
    }

    #[test]
    fn smoke_catches_what_is_missing_or_wrong() {
        assert_eq!(smoke_problems(None), vec!["no graph run".to_string()]);
        let mut run = complete();
        run.client_graph_accepted = 6;
        let p = smoke_problems(Some(&run));
        assert!(p.iter().any(|x| x.contains("accepted 7")), "{p:?}");
        let mut run = complete();
        run.small[0].1.get_mut(&Way::Graph).unwrap().errors = 1;
        run.memory.get_mut(&Way::Graph).unwrap().parallel_failed = 1;
        run.large.remove(&Way::SmtpAuth);
        let p = smoke_problems(Some(&run));
        assert_eq!(p.len(), 4, "{p:?}");
    }
}
