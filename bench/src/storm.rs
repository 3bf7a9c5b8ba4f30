//! The login storm (issue 21): N wrong-password SMTP `AUTH PLAIN` logins sent at once from many
//! loopback addresses (127.0.1.2, 127.0.1.3, …: no per-source throttle short-cuts them), with
//! GLPI's correct login, verified once before the storm, sent a few seconds in. Measured on a
//! fresh authbridge: its resident memory before, its peak (`VmHWM`, reset before the storm) and
//! a minute after; the correct login's reply and latency; what the storm's logins got.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;
use tokio::task::JoinSet;

use crate::client::err;
use crate::phases::Ctx;
use crate::systems::{LOCAL_PASS, LOCAL_USER};

/// How long one storm login may take before it counts as unanswered.
const LOGIN_LIMIT: Duration = Duration::from_secs(120);
/// How often the proxy's memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// How often GLPI logs in while the storm runs (one login at a time).
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// One storm and what it did to authbridge.
#[derive(Clone, Debug, Default)]
pub struct StormRun {
    pub logins: usize,
    pub sources: usize,
    pub glpi_at_secs: u64,
    pub settle_secs: u64,
    pub rss_before_kib: u64,
    /// `VmHWM` after the storm; reset before it when `peak_reset`.
    pub peak_kib: u64,
    pub peak_reset: bool,
    /// Highest `VmRSS` sampled every 100 ms (a cross-check of `peak_kib`).
    pub sampled_peak_kib: u64,
    pub rss_end_kib: u64,
    pub rss_settled_kib: u64,
    pub threads_peak: u64,
    /// GLPI's login at `glpi_at_secs`: reply and latency.
    pub glpi_reply: String,
    pub glpi_ms: f64,
    /// GLPI's logins every 250 ms while storm logins were unanswered: reply and latency.
    pub probes: Vec<(String, f64)>,
    /// Reply code (or what happened instead) → logins.
    pub replies: BTreeMap<String, usize>,
    /// From the first storm login sent to the last one answered.
    pub storm_secs: f64,
    pub alive_after: bool,
}

/// Connect from `from`, optionally EHLO, `AUTH PLAIN`; returns the AUTH reply's last line (or
/// what went wrong) and the time from connect to it.
async fn auth_plain(
    from: IpAddr,
    to: SocketAddr,
    user: &str,
    pass: &str,
    ehlo: bool,
) -> (String, Duration) {
    let start = Instant::now();
    let r = tokio::time::timeout(LOGIN_LIMIT, async {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(from, 0))?;
        let tcp = socket.connect(to).await?;
        tcp.set_nodelay(true)?;
        let mut c = BufReader::new(tcp);
        let greeting = reply(&mut c).await?;
        if !greeting.starts_with("220") {
            return Ok(format!("greeting {greeting}"));
        }
        if ehlo {
            c.get_mut().write_all(b"EHLO glpi.example\r\n").await?;
            let e = reply(&mut c).await?;
            if !e.starts_with("250") {
                return Ok(format!("EHLO {e}"));
            }
        }
        let blob = B64.encode(format!("\0{user}\0{pass}"));
        c.get_mut()
            .write_all(format!("AUTH PLAIN {blob}\r\n").as_bytes())
            .await?;
        let r = reply(&mut c).await?;
        let _ = c.get_mut().write_all(b"QUIT\r\n").await;
        Ok::<_, io::Error>(r)
    })
    .await;
    let text = match r {
        Ok(Ok(line)) => line,
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => format!("no reply within {} s", LOGIN_LIMIT.as_secs()),
    };
    (text, start.elapsed())
}

/// The last line of one SMTP reply.
async fn reply(c: &mut BufReader<tokio::net::TcpStream>) -> io::Result<String> {
    loop {
        let mut line = String::new();
        if c.read_line(&mut line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end().to_string();
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            return Ok(line);
        }
    }
}

/// The storm's reply classes: the SMTP code, or what happened instead.
fn class(reply: &str) -> String {
    match reply.split(' ').next() {
        Some(code) if code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()) => {
            code.to_string()
        }
        _ => reply.split(':').next().unwrap_or(reply).to_string(),
    }
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l[key.len()..].split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

pub async fn storm(ctx: &mut Ctx) -> io::Result<()> {
    let (n, sources) = (ctx.opts.storm, ctx.opts.storm_sources.clamp(1, 250));
    let glpi_at = Duration::from_secs(ctx.opts.storm_glpi_at_secs);
    let settle = Duration::from_secs(ctx.opts.storm_settle_secs);
    // A fresh process: nothing left from earlier phases in its allocator.
    ctx.ab.start(false).await?;
    let smtp = ctx.ab.smtp;
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    // GLPI's credential, verified once (argon2), then a cached login as GLPI makes them.
    for _ in 0..2 {
        let (r, _) = auth_plain(lo, smtp, LOCAL_USER, LOCAL_PASS, true).await;
        if !r.starts_with("235") {
            return Err(err(format!(
                "storm: GLPI's login before the storm got {r:?}"
            )));
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = ctx.ab.proc().pid();
    let mut run = StormRun {
        logins: n,
        sources,
        glpi_at_secs: glpi_at.as_secs(),
        settle_secs: settle.as_secs(),
        rss_before_kib: status_kib(pid, "VmRSS:"),
        peak_reset: std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok(),
        ..Default::default()
    };
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let on = Arc::clone(&sampling);
        tokio::spawn(async move {
            let (mut rss, mut threads) = (0, 0);
            while on.load(Ordering::Acquire) {
                rss = status_kib(pid, "VmRSS:").max(rss);
                threads = status_kib(pid, "Threads:").max(threads);
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
            (rss, threads)
        })
    };

    let start = Instant::now();
    let mut set = JoinSet::new();
    for i in 0..n {
        // 127.0.1.2 … 127.0.1.(1 + sources)
        let from = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 2 + (i % sources) as u8));
        set.spawn(async move {
            let (r, _) = auth_plain(from, smtp, LOCAL_USER, &format!("wrong-{i}"), false).await;
            (r, start.elapsed())
        });
    }
    // GLPI's logins, one after the other every PROBE_EVERY, while storm logins are unanswered.
    let storm_on = Arc::new(AtomicBool::new(true));
    let probes = {
        let on = Arc::clone(&storm_on);
        tokio::spawn(async move {
            let mut v = Vec::new();
            tokio::time::sleep(PROBE_EVERY).await;
            while on.load(Ordering::Acquire) {
                let (r, took) = auth_plain(lo, smtp, LOCAL_USER, LOCAL_PASS, true).await;
                v.push((r, took.as_secs_f64() * 1e3));
                tokio::time::sleep(PROBE_EVERY).await;
            }
            v
        })
    };
    let storm = tokio::spawn(async move {
        let mut replies = BTreeMap::<String, usize>::new();
        let mut last = Duration::ZERO;
        while let Some(j) = set.join_next().await {
            let reply = match j {
                Ok((r, at)) => {
                    last = last.max(at);
                    r
                }
                Err(e) => format!("task: {e}"),
            };
            *replies.entry(class(&reply)).or_default() += 1;
        }
        storm_on.store(false, Ordering::Release);
        (replies, last)
    });
    // The issue's own probe, at `glpi_at` whether or not the storm is still running.
    tokio::time::sleep(glpi_at.saturating_sub(start.elapsed())).await;
    let (glpi, took) = auth_plain(lo, smtp, LOCAL_USER, LOCAL_PASS, true).await;
    run.glpi_reply = glpi;
    run.glpi_ms = took.as_secs_f64() * 1e3;
    log(format!(
        "storm: GLPI's login {:.1} s in: {:?} after {:.0} ms",
        glpi_at.as_secs_f64(),
        run.glpi_reply,
        run.glpi_ms
    ));
    let (replies, last) = storm.await.map_err(|e| err(e.to_string()))?;
    run.replies = replies;
    run.storm_secs = last.as_secs_f64();
    run.probes = probes.await.map_err(|e| err(e.to_string()))?;
    log(format!(
        "storm: GLPI's logins while the storm ran: {:?}",
        run.probes
    ));
    run.rss_end_kib = status_kib(pid, "VmRSS:");
    log(format!(
        "storm: {n} logins from {sources} addresses answered in {:.1} s: {:?}; RSS {} KiB",
        run.storm_secs, run.replies, run.rss_end_kib
    ));
    tokio::time::sleep(settle).await;
    run.rss_settled_kib = status_kib(pid, "VmRSS:");
    run.peak_kib = status_kib(pid, "VmHWM:");
    sampling.store(false, Ordering::Release);
    let (rss, threads) = sampler.await.map_err(|e| err(e.to_string()))?;
    run.sampled_peak_kib = rss;
    run.threads_peak = threads;
    run.alive_after = ctx.ab.proc.as_mut().is_some_and(|p| p.alive());
    log(format!(
        "storm: RSS {} KiB before, peak {} KiB, {} KiB {} s after; GLPI {:?} in {:.0} ms",
        run.rss_before_kib,
        run.peak_kib,
        run.rss_settled_kib,
        run.settle_secs,
        run.glpi_reply,
        run.glpi_ms
    ));
    ctx.res.storm = Some(run);
    Ok(())
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[bench] {}", msg.as_ref());
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// Acceptance of issue 21: peak ≤ 256 MiB, a minute after within 32 MiB of before, GLPI's
/// correct login answered 235 in under 1 s (the one sent `glpi_at_secs` in, and every one sent
/// while the storm ran).
pub fn verdicts(r: &StormRun) -> [(String, String, bool); 4] {
    let back = r.rss_settled_kib as i64 - r.rss_before_kib as i64;
    [
        (
            "peak RSS ≤ 256 MiB".into(),
            format!("{} MiB", mib(r.peak_kib)),
            r.peak_reset && r.peak_kib <= 256 * 1024,
        ),
        (
            format!("RSS {} s after within 32 MiB of before", r.settle_secs),
            format!(
                "{} MiB after, {} MiB before ({:+.1} MiB)",
                mib(r.rss_settled_kib),
                mib(r.rss_before_kib),
                back as f64 / 1024.0
            ),
            back <= 32 * 1024,
        ),
        (
            format!(
                "GLPI's correct login {} s in: 235 in under 1 s",
                r.glpi_at_secs
            ),
            format!("`{}` in {:.0} ms", r.glpi_reply, r.glpi_ms),
            r.glpi_reply.starts_with("235") && r.glpi_ms < 1000.0,
        ),
        (
            "GLPI's logins while the storm ran: 235 in under 1 s".into(),
            format!(
                "{} of {} answered 235, slowest {:.0} ms",
                r.probes
                    .iter()
                    .filter(|(x, _)| x.starts_with("235"))
                    .count(),
                r.probes.len(),
                r.probes.iter().map(|(_, ms)| *ms).fold(0.0, f64::max)
            ),
            !r.probes.is_empty()
                && r.probes
                    .iter()
                    .all(|(x, ms)| x.starts_with("235") && *ms < 1000.0),
        ),
    ]
}

/// The storm's section of the report.
pub fn render(r: &StormRun, out: &mut String) {
    let _ = writeln!(
        out,
        "\n### Login storm\n\n{} wrong-password SMTP `AUTH PLAIN` logins sent at once from {} loopback addresses (127.0.1.2 …), to a freshly started authbridge with the default limits; GLPI's correct login (EHLO, `AUTH PLAIN`, from 127.0.0.1), verified once before the storm, sent {} s in, and again every 250 ms (one at a time) until the last storm login is answered. Memory from /proc of the authbridge process: `VmRSS` before, `VmHWM` (the peak; {}) and `VmRSS` {} s after the last reply.\n",
        r.logins,
        r.sources,
        r.glpi_at_secs,
        if r.peak_reset {
            "reset with `clear_refs` just before the storm"
        } else {
            "could not be reset: peak since start"
        },
        r.settle_secs
    );
    let _ = writeln!(
        out,
        "| acceptance (issue 21) | result | met |\n|---|---|---|"
    );
    for (what, value, ok) in verdicts(r) {
        let _ = writeln!(
            out,
            "| {what} | {value} | {} |",
            if ok { "yes" } else { "**no**" }
        );
    }
    let replies: Vec<String> = r
        .replies
        .iter()
        .map(|(k, v)| format!("`{k}` × {v}"))
        .collect();
    let _ = writeln!(
        out,
        "\n| measure | value |\n|---|---|\n| storm logins answered | {} (the last {:.1} s after the first was sent) |\n| RSS before / right after the last reply / {} s after | {} / {} / {} MiB |\n| peak RSS: VmHWM / highest 100 ms sample | {} / {} MiB |\n| threads at most (sampled) | {} |\n| authbridge still running | {} |\n| GLPI's logins while the storm ran (reply: ms) | {} |",
        replies.join(", "),
        r.storm_secs,
        r.settle_secs,
        mib(r.rss_before_kib),
        mib(r.rss_end_kib),
        mib(r.rss_settled_kib),
        mib(r.peak_kib),
        mib(r.sampled_peak_kib),
        r.threads_peak,
        if r.alive_after { "yes" } else { "**no**" },
        probes(r)
    );
}

/// GLPI's logins during the storm, as `code: ms`.
fn probes(r: &StormRun) -> String {
    if r.probes.is_empty() {
        return "none (the storm was over within 250 ms)".into();
    }
    r.probes
        .iter()
        .map(|(x, ms)| format!("{}: {ms:.0}", class(x)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Smoke mode: the storm ran, GLPI's login got through, authbridge survived.
pub fn smoke_problems(r: Option<&StormRun>) -> Vec<String> {
    let Some(r) = r else {
        return vec!["no storm run".into()];
    };
    let mut p = Vec::new();
    if !r.glpi_reply.starts_with("235") {
        p.push(format!("storm: GLPI's login got {:?}", r.glpi_reply));
    }
    if r.replies.values().sum::<usize>() != r.logins {
        p.push(format!(
            "storm: replies {:?} for {} logins",
            r.replies, r.logins
        ));
    }
    if !r.alive_after {
        p.push("storm: authbridge died".into());
    }
    if let Some((x, _)) = r.probes.iter().find(|(x, _)| !x.starts_with("235")) {
        p.push(format!("storm: GLPI's login during the storm got {x:?}"));
    }
    p
}
