//! The measurements. Each phase interleaves the systems round by round (the order rotates each
//! round), so a burst of load from elsewhere on the machine lands on all of them alike.
//! Over 600 lines: the four comparison phases share this interleaving and their bookkeeping;
//! the login storm, which measures authbridge alone, is in storm.rs.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::Opts;
use crate::client::{self, Conn, Proto, System, Target, err, timed_login};
use crate::procs::{self, Sandbox};
use crate::report::{self, Results};
use crate::systems::{self, Proxy};

/// Sink mailbox for the SMTP DATA runs, so the FETCH mailbox keeps one message.
const SINK: &str = "sink@contoso.com";
/// In-flight logins while opening idle sessions. email-oauth2-proxy gets fewer: it listens with
/// a backlog of 5 (`OAuth2Proxy.start`: `self.listen(5)`), and connections past it wait for
/// SYN-ACK retransmissions (up to a minute), which would measure the backlog, not the memory.
pub const OPEN_CONCURRENCY: usize = 32;
pub const OPEN_CONCURRENCY_EMAILPROXY: usize = 4;

/// The byte-copying relay process and the direct client's target through it.
pub struct Relay {
    pub proc: procs::Proc,
    pub target: Target,
    /// Its listener in front of the sandbox's inbound connector.
    pub connector: SocketAddr,
}

pub struct Ctx {
    pub opts: Opts,
    pub sb: Sandbox,
    pub direct: Target,
    pub relay: Option<Relay>,
    /// The WAN-emulating relay (kept alive while measuring).
    _wan: Option<procs::Proc>,
    pub ab: Proxy,
    pub ep: Option<Proxy>,
    pub mailbox: String,
    /// The argon2id hash of the local login's password (for further authbridge configs).
    pub hash: String,
    /// A profiler attached to authbridge while a phase measures (`--attach`).
    pub attach: Option<procs::Proc>,
    pub res: Results,
}

impl Ctx {
    pub fn systems(&self) -> Vec<System> {
        let mut v = vec![System::Direct];
        if self.relay.is_some() {
            v.push(System::Relay);
        }
        v.push(System::Authbridge);
        if self.ep.is_some() {
            v.push(System::EmailProxy);
        }
        if let Some(only) = &self.opts.systems {
            v.retain(|s| only.iter().any(|o| o == s.name()));
        }
        v
    }

    pub fn proxies(&self) -> Vec<System> {
        self.systems()
            .into_iter()
            .filter(|s| matches!(s, System::Authbridge | System::EmailProxy))
            .collect()
    }

    fn proxy(&self, s: System) -> Option<&Proxy> {
        match s {
            System::Authbridge => Some(&self.ab),
            System::EmailProxy => self.ep.as_ref(),
            System::Direct | System::Relay => None,
        }
    }

    fn proxy_mut(&mut self, s: System) -> Option<&mut Proxy> {
        match s {
            System::Authbridge => Some(&mut self.ab),
            System::EmailProxy => self.ep.as_mut(),
            System::Direct | System::Relay => None,
        }
    }

    pub fn target(&self, s: System) -> Target {
        match (s, self.proxy(s), &self.relay) {
            (_, Some(p), _) => p.target(&self.mailbox),
            (System::Relay, _, Some(r)) => r.target.clone(),
            _ => self.direct.clone(),
        }
    }

    fn proxy_cpu(&self, s: System) -> f64 {
        match (s, self.proxy(s), &self.relay) {
            (_, Some(p), _) => p.proc().cpu_secs(),
            (System::Relay, _, Some(r)) => r.proc.cpu_secs(),
            _ => f64::NAN,
        }
    }

    fn load(&mut self, label: &str) {
        let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        self.res
            .loads
            .push((label.to_string(), l.trim().to_string()));
    }
}

/// Rotate the system order by round.
pub fn order<T: Clone>(systems: &[T], round: usize) -> Vec<T> {
    let mut v = systems.to_vec();
    if !v.is_empty() {
        let k = round % v.len();
        v.rotate_left(k);
    }
    v
}

pub fn log(msg: impl AsRef<str>) {
    eprintln!("[bench] {}", msg.as_ref());
}

pub async fn run(opts: Opts) -> io::Result<Vec<String>> {
    let fd_limit = procs::raise_fd_limit();
    log(format!("open-file limit {fd_limit}"));
    std::fs::create_dir_all(&opts.work)?;
    let sb = Sandbox::start(&opts.sandbox, &opts.work.join("sandbox")).await?;
    let mailbox = sb.s("mailbox");
    log(format!(
        "sandbox up: IMAP {} SMTP {} token {}",
        sb.s("imap"),
        sb.s("smtp"),
        sb.s("token_url")
    ));
    // The mail servers every system talks to: the sandbox's, or a relay adding a WAN round trip.
    let (mut up_smtp, mut up_imap) = (sb.addr("smtp")?, sb.addr("imap")?);
    let mut wan = None;
    if opts.upstream_rtt_ms > 0 {
        let (p, s, i) =
            spawn_relay(&opts, "wan", up_smtp, up_imap, opts.upstream_rtt_ms / 2).await?;
        log(format!(
            "emulating a {} ms round trip to the upstream mail servers (SMTP {s}, IMAP {i})",
            opts.upstream_rtt_ms
        ));
        (up_smtp, up_imap) = (s, i);
        wan = Some(p);
    }
    let hash = systems::hash_password(&opts.authbridge)?;
    // The relay-mode listener goes to the inbound connector on loopback (not in the WAN run,
    // which measures logins only).
    let connector = sb.addr("connector")?;
    let mut ab = Proxy::authbridge(
        &opts.authbridge,
        &opts.work.join("authbridge"),
        &sb,
        &hash,
        (up_smtp, up_imap),
        &systems::AuthbridgeOptions {
            connector: wan.is_none().then_some(connector),
            ..Default::default()
        },
    )?;
    ab.env.extend(opts.authbridge_env.iter().cloned());
    ab.start(true).await?;
    let mut ep = match &opts.emailproxy {
        Some(bin) => {
            let mut p =
                Proxy::emailproxy(bin, &opts.work.join("emailproxy"), &sb, (up_smtp, up_imap))?;
            p.start(true).await?;
            Some(p)
        }
        None => {
            log(format!(
                "email-oauth2-proxy is not measured: {}",
                opts.emailproxy_why_not
            ));
            None
        }
    };
    let token = sb.fetch_token().await?;
    let direct = Target {
        system: System::Direct,
        smtp: up_smtp,
        imap: up_imap,
        user: String::new(),
        pass: String::new(),
        tls: Some(sb.tls.clone()),
        mailbox: mailbox.clone(),
        token,
    };
    // A byte relay in front of the sandbox: the least any proxy costs (not with WAN emulation).
    let relay = if wan.is_none() {
        let (proc, listen) =
            spawn_relay_to(&opts, "relay", &[up_smtp, up_imap, connector], 0).await?;
        let mut target = direct.clone();
        target.system = System::Relay;
        target.smtp = listen[0];
        target.imap = listen[1];
        Some(Relay {
            proc,
            target,
            connector: listen[2],
        })
    } else {
        None
    };
    let mut ctx = Ctx {
        res: Results::new(&opts, fd_limit),
        opts,
        sb,
        direct,
        relay,
        _wan: wan,
        ab,
        ep: None,
        mailbox,
        hash,
        attach: None,
    };
    ctx.ep = ep.take();
    ctx.load("start");
    let phases = ctx.opts.phases.clone();
    let mut failure = None;
    for phase in &phases {
        let r = match phase.as_str() {
            "login" => logins(&mut ctx).await,
            "transfer" => transfers(&mut ctx).await,
            "idle" => idle(&mut ctx).await,
            "burst" => bursts(&mut ctx).await,
            "relay-mode" => crate::relay_mode::relay_mode(&mut ctx).await,
            "replicas" => crate::replicas::replicas(&mut ctx).await,
            "storm" => crate::storm::storm(&mut ctx).await,
            "graph" => crate::graph::graph(&mut ctx).await,
            other => Err(err(format!("unknown phase {other:?}"))),
        };
        ctx.load(&format!("after {phase}"));
        if let Err(e) = r {
            log(format!("phase {phase} failed: {e}"));
            ctx.res.notes.push(format!("phase {phase} failed: {e}"));
            failure = Some(e);
            break;
        }
    }
    ctx.ab.stop();
    if let Some(p) = ctx.ep.as_mut() {
        p.stop();
    }
    let text = report::render(&ctx);
    report::write(&ctx.opts.results, &ctx.opts.block, &text)?;
    let figures = report::figures(&ctx);
    std::fs::write(
        ctx.opts.work.join("figures.json"),
        serde_json::to_string_pretty(&figures).map_err(|e| err(e.to_string()))?,
    )?;
    if ctx.opts.results != std::path::Path::new("/dev/null") {
        log(format!("report written to {}", ctx.opts.results.display()));
    }
    println!("{}", report::summary(&ctx));
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(if ctx.opts.smoke {
        report::smoke_problems(&ctx)
    } else {
        Vec::new()
    })
}

/// Start `authbridge-bench relay` in front of `smtp` and `imap`; returns it and its addresses.
async fn spawn_relay(
    opts: &Opts,
    name: &str,
    smtp: SocketAddr,
    imap: SocketAddr,
    delay_ms: u64,
) -> io::Result<(procs::Proc, SocketAddr, SocketAddr)> {
    let (proc, l) = spawn_relay_to(opts, name, &[smtp, imap], delay_ms).await?;
    Ok((proc, l[0], l[1]))
}

/// Start `authbridge-bench relay` in front of each of `upstreams`; returns it and the address
/// it listens on for each, in order.
async fn spawn_relay_to(
    opts: &Opts,
    name: &str,
    upstreams: &[SocketAddr],
    delay_ms: u64,
) -> io::Result<(procs::Proc, Vec<SocketAddr>)> {
    let mut listen = Vec::with_capacity(upstreams.len());
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("relay").args(["--delay-ms", &delay_ms.to_string()]);
    for up in upstreams {
        let l = SocketAddr::from(([127, 0, 0, 1], procs::free_port()?));
        cmd.arg(format!("{l}={up}"));
        listen.push(l);
    }
    std::fs::create_dir_all(opts.work.join(name))?;
    let mut proc = procs::Proc::spawn(name, cmd, &opts.work.join(name).join("relay.log"))?;
    for l in &listen {
        procs::wait_port(*l, &mut proc, Duration::from_secs(10)).await?;
    }
    Ok((proc, listen))
}

/// `--attach CMD`: start the profiler command with `{pid}` replaced by authbridge's pid, once
/// the warm-up is over.
pub fn attach_start(ctx: &mut Ctx, phase: &str) -> io::Result<()> {
    let Some(cmd) = ctx.opts.attach.clone() else {
        return Ok(());
    };
    let pid = ctx.ab.proc().pid().to_string();
    let line = cmd.replace("{pid}", &pid).replace("{phase}", phase);
    log(format!("attaching: {line}"));
    let mut c = std::process::Command::new("sh");
    c.args(["-c", &format!("exec {line}")]);
    let logf = ctx.opts.work.join(format!("attach-{phase}.log"));
    ctx.attach = Some(procs::Proc::spawn("attach", c, &logf)?);
    // perf needs a moment to set up its buffers before the measured work starts.
    std::thread::sleep(Duration::from_millis(500));
    Ok(())
}

/// Stop the profiler (SIGINT, as after Ctrl-C: `perf record` then writes its file).
pub fn attach_stop(ctx: &mut Ctx) {
    if let Some(mut p) = ctx.attach.take() {
        p.interrupt(Duration::from_secs(120));
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Warm login latency.

#[derive(Default)]
pub struct LoginSeries {
    pub samples_ms: Vec<f64>,
    pub round_p50_ms: Vec<f64>,
    pub errors: usize,
    pub first_error: Option<String>,
}

async fn logins(ctx: &mut Ctx) -> io::Result<()> {
    let systems = ctx.systems();
    for proto in [Proto::Smtp, Proto::Imap] {
        // Warm up: token caches, verified-credential cache, TLS session caches.
        for &s in &systems {
            let t = ctx.target(s);
            for _ in 0..5 {
                timed_login(&t, proto).await.map_err(|e| {
                    err(format!("{} {} warm-up login: {e}", s.name(), proto.name()))
                })?;
            }
        }
        let mut series: BTreeMap<System, LoginSeries> = BTreeMap::new();
        let rounds = ctx.opts.rounds;
        attach_start(ctx, &format!("login-{}", proto.short()))?;
        for r in 0..rounds {
            for s in order(&systems, r) {
                let total = if s == System::EmailProxy {
                    ctx.opts.ep_sessions
                } else {
                    ctx.opts.sessions
                };
                let n = total / rounds + usize::from(r < total % rounds);
                let t = ctx.target(s);
                let e = series.entry(s).or_default();
                let mut round = Vec::with_capacity(n);
                for _ in 0..n {
                    match timed_login(&t, proto).await {
                        Ok(d) => round.push(d.as_secs_f64() * 1e3),
                        Err(x) => {
                            e.errors += 1;
                            e.first_error.get_or_insert_with(|| x.to_string());
                        }
                    }
                }
                let p50 = report::percentile(&round, 50.0);
                log(format!(
                    "login {} round {}/{rounds} {}: {} ok, p50 {:.2} ms",
                    proto.name(),
                    r + 1,
                    s.name(),
                    round.len(),
                    p50
                ));
                e.round_p50_ms.push(p50);
                e.samples_ms.extend(round);
            }
        }
        attach_stop(ctx);
        ctx.res.logins.push((proto, series));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2. Throughput after login.

#[derive(Clone, Debug)]
pub struct TransferRun {
    pub bytes: u64,
    pub secs: f64,
    pub proxy_cpu: f64,
    pub sandbox_cpu: f64,
    pub client_cpu: f64,
}

impl TransferRun {
    pub fn mbps(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.secs
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Transfer {
    Fetch,
    Data,
}

impl Transfer {
    pub fn name(self) -> &'static str {
        match self {
            Transfer::Fetch => "IMAP FETCH",
            Transfer::Data => "SMTP DATA",
        }
    }
}

async fn one_transfer(
    ctx: &Ctx,
    s: System,
    kind: Transfer,
    body: &Arc<Vec<u8>>,
) -> io::Result<TransferRun> {
    let t = ctx.target(s);
    let me = std::process::id();
    match kind {
        Transfer::Fetch => {
            let mut c = t.imap_login().await?;
            c.imap_cmd("EXAMINE INBOX").await?;
            let (p0, s0, c0) = (
                ctx.proxy_cpu(s),
                ctx.sb.proc.cpu_secs(),
                procs::cpu_secs(me).unwrap_or(f64::NAN),
            );
            let start = Instant::now();
            let bytes = c.fetch_body(1).await?;
            let secs = start.elapsed().as_secs_f64();
            let run = TransferRun {
                bytes,
                secs,
                proxy_cpu: ctx.proxy_cpu(s) - p0,
                sandbox_cpu: ctx.sb.proc.cpu_secs() - s0,
                client_cpu: procs::cpu_secs(me).unwrap_or(f64::NAN) - c0,
            };
            let _ = c.send(b"z LOGOUT\r\n").await;
            c.close().await;
            if bytes < ctx.opts.fetch_bytes as u64 * 9 / 10 {
                return Err(err(format!("FETCH returned {bytes} bytes")));
            }
            Ok(run)
        }
        Transfer::Data => {
            let mut c = t.smtp_login().await?;
            let (p0, s0, c0) = (
                ctx.proxy_cpu(s),
                ctx.sb.proc.cpu_secs(),
                procs::cpu_secs(me).unwrap_or(f64::NAN),
            );
            let start = Instant::now();
            let bytes = client::smtp_send(&mut c, &ctx.mailbox, SINK, body).await?;
            let secs = start.elapsed().as_secs_f64();
            let run = TransferRun {
                bytes,
                secs,
                proxy_cpu: ctx.proxy_cpu(s) - p0,
                sandbox_cpu: ctx.sb.proc.cpu_secs() - s0,
                client_cpu: procs::cpu_secs(me).unwrap_or(f64::NAN) - c0,
            };
            let _ = c.send(b"QUIT\r\n").await;
            c.close().await;
            Ok(run)
        }
    }
}

async fn transfers(ctx: &mut Ctx) -> io::Result<()> {
    // The message every FETCH reads: message 1 of the (empty until now) INBOX, sent directly.
    let big = client::message(
        ctx.opts.fetch_bytes,
        &ctx.mailbox,
        &ctx.mailbox,
        "bench-fetch",
    );
    let mut c = ctx.direct.smtp_login().await?;
    client::smtp_send(&mut c, &ctx.mailbox, &ctx.mailbox, &big).await?;
    c.close().await;
    drop(big);
    let body = Arc::new(client::message(
        ctx.opts.data_bytes,
        &ctx.mailbox,
        SINK,
        "bench-data",
    ));
    let systems = ctx.systems();
    let mut runs: BTreeMap<(Transfer, System), Vec<TransferRun>> = BTreeMap::new();
    // One unmeasured round first (allocator and page-cache warm-up everywhere).
    let warm = usize::from(!ctx.opts.smoke);
    for r in 0..ctx.opts.transfer_rounds + warm {
        if r == warm {
            attach_start(ctx, "transfer")?;
        }
        for s in order(&systems, r) {
            for kind in [Transfer::Fetch, Transfer::Data] {
                let run = one_transfer(ctx, s, kind, &body)
                    .await
                    .map_err(|e| err(format!("{} {}: {e}", s.name(), kind.name())))?;
                log(format!(
                    "{} round {} {}: {:.1} MB/s, proxy CPU {:.2} s{}",
                    kind.name(),
                    r + 1 - warm.min(r + 1),
                    s.name(),
                    run.mbps(),
                    run.proxy_cpu,
                    if r < warm {
                        " (warm-up, not counted)"
                    } else {
                        ""
                    }
                ));
                if r >= warm {
                    runs.entry((kind, s)).or_default().push(run);
                }
            }
        }
    }
    attach_stop(ctx);
    ctx.res.transfers = runs;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. Idle authenticated IMAP sessions.

#[derive(Clone, Debug)]
pub struct IdleRun {
    pub system: System,
    /// N asked for; `tried` may be lower (descriptor limit).
    pub n: usize,
    pub tried: usize,
    pub opened: usize,
    pub open_errors: usize,
    pub first_error: Option<String>,
    pub open_secs: f64,
    pub budget_hit: bool,
    pub rss_before_kib: u64,
    pub rss_open_kib: u64,
    pub rss_after_noop_kib: u64,
    pub threads: u64,
    pub noop_ok: usize,
    pub noop_secs: f64,
    pub alive_after: bool,
}

impl IdleRun {
    pub fn kib_per_session(&self) -> f64 {
        if self.opened == 0 {
            return f64::NAN;
        }
        (self.rss_open_kib as f64 - self.rss_before_kib as f64) / self.opened as f64
    }
}

async fn open_sessions(
    t: &Target,
    n: usize,
    budget: Duration,
    concurrency: usize,
) -> (Vec<Conn>, usize, Option<String>, bool) {
    let deadline = Instant::now() + budget;
    let mut set = JoinSet::new();
    let mut conns = Vec::with_capacity(n);
    let (mut started, mut errors, mut first) = (0, 0, None);
    let mut budget_hit = false;
    loop {
        while started < n && set.len() < concurrency && Instant::now() < deadline {
            let t = t.clone();
            set.spawn(async move { timeout(Duration::from_secs(120), t.imap_login()).await });
            started += 1;
        }
        if started < n && Instant::now() >= deadline {
            budget_hit = true;
        }
        match set.join_next().await {
            None => break,
            Some(Ok(Ok(Ok(c)))) => conns.push(c),
            Some(Ok(Ok(Err(e)))) => {
                errors += 1;
                first.get_or_insert(e.to_string());
            }
            Some(Ok(Err(_))) => {
                errors += 1;
                first.get_or_insert("login timed out after 120 s".to_string());
            }
            Some(Err(e)) => {
                errors += 1;
                first.get_or_insert(e.to_string());
            }
        }
    }
    (conns, errors, first, budget_hit)
}

/// NOOP on every session, many at a time. Returns the sessions (usable or not) and the OK count.
async fn noop_round(conns: Vec<Conn>) -> (Vec<Conn>, usize) {
    let mut set = JoinSet::new();
    let mut back = Vec::with_capacity(conns.len());
    let mut ok = 0;
    let mut it = conns.into_iter();
    loop {
        while set.len() < 512 {
            let Some(mut c) = it.next() else { break };
            set.spawn(async move {
                let r = timeout(Duration::from_secs(60), c.noop()).await;
                (c, matches!(r, Ok(Ok(()))))
            });
        }
        match set.join_next().await {
            None => break,
            Some(Ok((c, good))) => {
                ok += usize::from(good);
                back.push(c);
            }
            Some(Err(_)) => {}
        }
    }
    (back, ok)
}

async fn idle(ctx: &mut Ctx) -> io::Result<()> {
    let proxies = ctx.proxies();
    let ns = ctx.opts.idle.clone();
    let budget = Duration::from_secs(ctx.opts.idle_budget_secs);
    // Each proxied session holds two descriptors in the proxy (client and upstream socket).
    let fd_cap = (ctx.res.fd_limit.saturating_sub(200) / 2) as usize;
    for (i, &n_asked) in ns.iter().enumerate() {
        let n = n_asked.min(fd_cap);
        if n < n_asked {
            let note = format!(
                "idle sessions: N = {n_asked} was capped at {n}: the open-file hard limit here is {} and this container may not raise it (no CAP_SYS_RESOURCE); every proxied session needs two descriptors in the proxy",
                ctx.res.fd_limit
            );
            log(&note);
            ctx.res.notes.push(note);
        }
        for s in order(&proxies, i) {
            // A fresh process each time, so the allocator holds nothing from earlier phases.
            ctx.proxy_mut(s).expect("proxy").start(false).await?;
            let t = ctx.target(s);
            timed_login(&t, Proto::Imap)
                .await
                .map_err(|e| err(format!("{} warm-up login: {e}", s.name())))?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let rss_before_kib = ctx.proxy(s).expect("proxy").proc().rss_kib();
            let start = Instant::now();
            let concurrency = if s == System::EmailProxy {
                OPEN_CONCURRENCY_EMAILPROXY
            } else {
                OPEN_CONCURRENCY
            };
            let (conns, open_errors, first_error, budget_hit) =
                open_sessions(&t, n, budget, concurrency).await;
            let open_secs = start.elapsed().as_secs_f64();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let p = ctx.proxy_mut(s).expect("proxy");
            let rss_open_kib = p.proc().rss_kib();
            let threads = p.proc().threads();
            let opened = conns.len();
            let start = Instant::now();
            let (conns, noop_ok) = noop_round(conns).await;
            let noop_secs = start.elapsed().as_secs_f64();
            let p = ctx.proxy_mut(s).expect("proxy");
            let rss_after_noop_kib = p.proc().rss_kib();
            let alive_after = p.proc.as_mut().is_some_and(|p| p.alive());
            let run = IdleRun {
                system: s,
                n: n_asked,
                tried: n,
                opened,
                open_errors,
                first_error,
                open_secs,
                budget_hit,
                rss_before_kib,
                rss_open_kib,
                rss_after_noop_kib,
                threads,
                noop_ok,
                noop_secs,
                alive_after,
            };
            log(format!(
                "idle {n} {}: opened {opened} in {open_secs:.1} s ({open_errors} errors{}), {:.1} KiB/session, NOOP ok {noop_ok}/{opened}",
                s.name(),
                if budget_hit { ", time budget hit" } else { "" },
                run.kib_per_session()
            ));
            ctx.res.idle.push(run);
            for c in conns {
                c.close().await;
            }
        }
    }
    // Leave both proxies warm and fresh for the next phase.
    for s in proxies {
        ctx.proxy_mut(s).expect("proxy").start(false).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 4. Cold burst.

#[derive(Clone, Debug)]
pub struct BurstRun {
    pub system: System,
    pub round: usize,
    pub n: usize,
    pub ok: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    pub token_requests: u64,
    pub latencies_ms: Vec<f64>,
    pub secs: f64,
}

async fn bursts(ctx: &mut Ctx) -> io::Result<()> {
    let systems: Vec<System> = ctx
        .systems()
        .into_iter()
        .filter(|s| *s != System::Relay)
        .collect();
    let n = ctx.opts.burst;
    let limit = Duration::from_secs(ctx.opts.burst_timeout_secs);
    for r in 0..ctx.opts.burst_rounds {
        for s in order(&systems, r) {
            if s == System::EmailProxy && r >= ctx.opts.ep_burst_rounds {
                continue;
            }
            // Cold: a new process with an empty token cache (email-oauth2-proxy: config file
            // without cached tokens).
            if let Some(p) = ctx.proxy_mut(s) {
                p.start(true).await?;
            }
            let before = ctx.sb.token_requests().await?;
            let mut t = ctx.target(s);
            if s == System::Direct {
                // A direct client fetches its own token first (counted): one for the burst.
                t.token = ctx.sb.fetch_token().await?;
            }
            let start = Instant::now();
            let mut set = JoinSet::new();
            for _ in 0..n {
                let t = t.clone();
                set.spawn(async move {
                    let s0 = Instant::now();
                    let r = timeout(limit, t.imap_login()).await;
                    (s0.elapsed(), r)
                });
            }
            let mut run = BurstRun {
                system: s,
                round: r,
                n,
                ok: 0,
                failed: 0,
                first_error: None,
                token_requests: 0,
                latencies_ms: Vec::with_capacity(n),
                secs: 0.0,
            };
            let mut held = Vec::with_capacity(n);
            while let Some(j) = set.join_next().await {
                match j {
                    Ok((d, Ok(Ok(c)))) => {
                        run.ok += 1;
                        run.latencies_ms.push(d.as_secs_f64() * 1e3);
                        held.push(c);
                    }
                    Ok((_, Ok(Err(e)))) => {
                        run.failed += 1;
                        run.first_error.get_or_insert(e.to_string());
                    }
                    Ok((_, Err(_))) => {
                        run.failed += 1;
                        run.first_error
                            .get_or_insert(format!("no login within {} s", limit.as_secs()));
                    }
                    Err(e) => {
                        run.failed += 1;
                        run.first_error.get_or_insert(e.to_string());
                    }
                }
            }
            run.secs = start.elapsed().as_secs_f64();
            run.token_requests = ctx.sb.token_requests().await? - before;
            log(format!(
                "cold burst {n} round {} {}: {} ok, {} failed, {} token requests, p99 {:.1} ms",
                r + 1,
                s.name(),
                run.ok,
                run.failed,
                run.token_requests,
                report::percentile(&run.latencies_ms, 99.0)
            ));
            for c in held {
                c.close().await;
            }
            ctx.res.bursts.push(run);
        }
    }
    Ok(())
}
