//! authbridge-bench: authbridge against a direct XOAUTH2 connection and email-oauth2-proxy, all
//! against the same sandbox (fake Entra ID + fake Exchange Online), interleaving the systems
//! round by round so that a noisy machine hurts them alike. Run it through `bench/run.sh`.

mod client;
mod graph;
mod phases;
mod procs;
mod relay_mode;
mod replicas;
mod report;
mod storm;
mod systems;
mod targets;

use std::path::PathBuf;
use std::process::ExitCode;

/// Everything the command line can set.
#[derive(Clone, Debug)]
pub struct Opts {
    pub smoke: bool,
    pub authbridge: PathBuf,
    pub sandbox: PathBuf,
    /// `None`: email-oauth2-proxy is not measured.
    pub emailproxy: Option<PathBuf>,
    pub emailproxy_why_not: String,
    pub work: PathBuf,
    /// Where the report goes (its generated part, between markers).
    pub results: PathBuf,
    pub command: String,
    pub phases: Vec<String>,
    /// Limit the systems measured (profiling runs): names as in the report.
    pub systems: Option<Vec<String>>,
    /// Warm logins per system and protocol, split over `rounds`.
    pub sessions: usize,
    pub ep_sessions: usize,
    pub rounds: usize,
    pub fetch_bytes: usize,
    pub data_bytes: usize,
    pub transfer_rounds: usize,
    pub idle: Vec<usize>,
    pub idle_budget_secs: u64,
    pub burst: usize,
    pub burst_rounds: usize,
    pub ep_burst_rounds: usize,
    pub burst_timeout_secs: u64,
    /// Above 0: every system reaches the sandbox's mail servers through a relay adding this round
    /// trip (half each way); the zero-delay relay system is then not measured.
    pub upstream_rtt_ms: u64,
    /// Which generated block of the results file to write.
    pub block: String,
    /// Login storm: wrong-password logins, loopback source addresses (at most 250), when GLPI's
    /// correct login goes, how long to wait before the memory is read again.
    pub storm: usize,
    pub storm_sources: usize,
    pub storm_glpi_at_secs: u64,
    pub storm_settle_secs: u64,
    /// Relay-mode submissions per system (split over `rounds`) and the message size.
    pub submissions: usize,
    pub submit_bytes: usize,
    /// Replicas: authbridge processes sharing the Redis store, and warm logins per store and
    /// protocol (split over `rounds`).
    pub replicas: usize,
    pub replica_sessions: usize,
    /// `redis-server` to start for the replicas phase (`None`: look it up on PATH).
    pub redis_server: Option<PathBuf>,
    /// A profiler to attach to authbridge while the login and transfer phases measure:
    /// a shell command with `{pid}` (authbridge's) and `{phase}` (login-smtp, login-imap,
    /// transfer) replaced; stopped with SIGINT.
    pub attach: Option<String>,
    /// Extra environment for authbridge (`--authbridge-env K=V`, e.g. TOKIO_WORKER_THREADS).
    pub authbridge_env: Vec<(String, String)>,
    /// Graph phase: small messages per path and concurrency (split over `rounds`), their size,
    /// the concurrencies, the large message's size, how many per session and round (rounds:
    /// `transfer_rounds`), and how many are sent at the same moment for the peak RSS.
    pub graph_messages: usize,
    pub graph_small_bytes: usize,
    pub graph_concurrency: Vec<usize>,
    pub graph_large_bytes: usize,
    pub graph_large_messages: usize,
    pub graph_parallel: usize,
}

impl Opts {
    fn parse() -> Result<Opts, String> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let smoke = args.iter().any(|a| a == "--smoke");
        let mut o = Opts {
            smoke,
            authbridge: PathBuf::from("target/release/authbridge"),
            sandbox: PathBuf::from("target/release/authbridge-sandbox"),
            emailproxy: None,
            emailproxy_why_not: "not given (--emailproxy)".into(),
            work: std::env::temp_dir().join("authbridge-bench"),
            results: PathBuf::from(if smoke {
                "/dev/null"
            } else {
                "bench/RESULTS.md"
            }),
            command: String::new(),
            phases: DEFAULT_PHASES.iter().map(|p| p.to_string()).collect(),
            systems: None,
            sessions: if smoke { 20 } else { 1000 },
            ep_sessions: 0,
            rounds: if smoke { 2 } else { 5 },
            fetch_bytes: if smoke { 1_000_000 } else { 100_000_000 },
            data_bytes: if smoke { 1_000_000 } else { 50_000_000 },
            transfer_rounds: if smoke { 1 } else { 5 },
            idle: if smoke {
                vec![10]
            } else {
                vec![100, 1000, 10_000]
            },
            idle_budget_secs: if smoke { 60 } else { 300 },
            burst: if smoke { 20 } else { 1000 },
            burst_rounds: if smoke { 1 } else { 3 },
            ep_burst_rounds: 1,
            burst_timeout_secs: if smoke { 10 } else { 300 },
            upstream_rtt_ms: 0,
            block: "main".into(),
            storm: if smoke { 40 } else { 2000 },
            storm_sources: if smoke { 10 } else { 250 },
            storm_glpi_at_secs: if smoke { 1 } else { 5 },
            storm_settle_secs: if smoke { 2 } else { 60 },
            submissions: if smoke { 20 } else { 1000 },
            submit_bytes: 4096,
            replicas: 3,
            replica_sessions: if smoke { 20 } else { 1000 },
            redis_server: None,
            attach: None,
            authbridge_env: Vec::new(),
            graph_messages: if smoke { 12 } else { 600 },
            graph_small_bytes: 2048,
            graph_concurrency: if smoke { vec![1, 4] } else { vec![1, 4, 16] },
            // Below the Graph listener's 3,145,728-byte limit, leaving room for the headers.
            graph_large_bytes: 3_000_000,
            graph_large_messages: if smoke { 2 } else { 10 },
            graph_parallel: if smoke { 2 } else { 8 },
        };
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            if a == "--smoke" {
                continue;
            }
            let mut v = || it.next().ok_or_else(|| format!("{a} needs a value"));
            let num = |s: String| {
                s.parse::<usize>()
                    .map_err(|_| format!("{a}: expected a number, got {s:?}"))
            };
            match a.as_str() {
                "--authbridge" => o.authbridge = v()?.into(),
                "--sandbox" => o.sandbox = v()?.into(),
                "--emailproxy" => {
                    let p = v()?;
                    if p.starts_with("none") {
                        o.emailproxy = None;
                        o.emailproxy_why_not = p
                            .strip_prefix("none:")
                            .unwrap_or("disabled (--emailproxy none)")
                            .to_string();
                    } else {
                        o.emailproxy = Some(p.into());
                    }
                }
                "--work" => o.work = v()?.into(),
                "--results" => o.results = v()?.into(),
                "--command" => o.command = v()?,
                "--phases" => o.phases = v()?.split(',').map(str::to_string).collect(),
                "--systems" => o.systems = Some(v()?.split(',').map(str::to_string).collect()),
                "--sessions" => o.sessions = num(v()?)?,
                "--ep-sessions" => o.ep_sessions = num(v()?)?,
                "--rounds" => o.rounds = num(v()?)?.max(1),
                "--fetch-mb" => o.fetch_bytes = num(v()?)? * 1_000_000,
                "--data-mb" => o.data_bytes = num(v()?)? * 1_000_000,
                "--transfer-rounds" => o.transfer_rounds = num(v()?)?.max(1),
                "--idle" => {
                    o.idle = v()?
                        .split(',')
                        .map(|s| num(s.to_string()))
                        .collect::<Result<_, _>>()?
                }
                "--idle-budget" => o.idle_budget_secs = num(v()?)? as u64,
                "--burst" => o.burst = num(v()?)?,
                "--burst-rounds" => o.burst_rounds = num(v()?)?.max(1),
                "--ep-burst-rounds" => o.ep_burst_rounds = num(v()?)?,
                "--burst-timeout" => o.burst_timeout_secs = num(v()?)? as u64,
                "--upstream-rtt-ms" => o.upstream_rtt_ms = num(v()?)? as u64,
                "--block" => o.block = v()?,
                "--storm" => o.storm = num(v()?)?,
                "--storm-sources" => o.storm_sources = num(v()?)?.clamp(1, 250),
                "--storm-glpi-at" => o.storm_glpi_at_secs = num(v()?)? as u64,
                "--storm-settle" => o.storm_settle_secs = num(v()?)? as u64,
                "--submissions" => o.submissions = num(v()?)?,
                "--submit-bytes" => o.submit_bytes = num(v()?)?.max(100),
                "--replicas" => o.replicas = num(v()?)?.clamp(1, 16),
                "--replica-sessions" => o.replica_sessions = num(v()?)?,
                "--redis-server" => o.redis_server = Some(v()?.into()),
                "--attach" => o.attach = Some(v()?),
                "--authbridge-env" => {
                    let kv = v()?;
                    let (k, val) = kv
                        .split_once('=')
                        .ok_or_else(|| format!("{a}: expected K=V, got {kv:?}"))?;
                    o.authbridge_env.push((k.to_string(), val.to_string()));
                }
                "--graph-messages" => o.graph_messages = num(v()?)?,
                "--graph-small-bytes" => o.graph_small_bytes = num(v()?)?.max(300),
                "--graph-concurrency" => {
                    o.graph_concurrency = v()?
                        .split(',')
                        .map(|s| num(s.to_string()).map(|n| n.clamp(1, 256)))
                        .collect::<Result<_, _>>()?
                }
                "--graph-large-bytes" => o.graph_large_bytes = num(v()?)?.max(300),
                "--graph-large-messages" => o.graph_large_messages = num(v()?)?.max(1),
                "--graph-parallel" => o.graph_parallel = num(v()?)?.clamp(1, 64),
                "-h" | "--help" => return Err(String::new()),
                _ => return Err(format!("unknown option {a:?}")),
            }
        }
        if o.ep_sessions == 0 {
            o.ep_sessions = o.sessions;
        }
        Ok(o)
    }
}

/// Every phase, in the order a full run makes them.
pub const DEFAULT_PHASES: [&str; 8] = [
    "login",
    "relay-mode",
    "transfer",
    "idle",
    "burst",
    "replicas",
    "storm",
    "graph",
];

const USAGE: &str = "usage: authbridge-bench [--smoke] --authbridge BIN --sandbox BIN [--emailproxy BIN|none[:why]]
  [--work DIR] [--results FILE] [--command TEXT] [--block NAME]
  [--phases login,relay-mode,transfer,idle,burst,replicas,storm,graph]
  [--systems direct,relay,authbridge,email-oauth2-proxy]
  [--sessions N] [--ep-sessions N] [--rounds N] [--fetch-mb N] [--data-mb N] [--transfer-rounds N]
  [--idle N,N,..] [--idle-budget SECS] [--burst N] [--burst-rounds N] [--ep-burst-rounds N]
  [--burst-timeout SECS] [--storm N] [--storm-sources N] [--storm-glpi-at SECS] [--storm-settle SECS]
  [--submissions N] [--submit-bytes N] [--replicas N] [--replica-sessions N] [--redis-server BIN]
  [--graph-messages N] [--graph-small-bytes N] [--graph-concurrency N,N,..]
  [--graph-large-bytes N] [--graph-large-messages N] [--graph-parallel N]
  [--upstream-rtt-ms MS] [--attach 'CMD {pid} {phase}'] [--authbridge-env K=V]...
       authbridge-bench targets --results FILE --command TEXT FIGURES.json...
                                      (the targets block, from the figures of earlier runs)
       authbridge-bench relay [--delay-ms D] LISTEN=UPSTREAM...   (started by the former)
Normally started by bench/run.sh.";

fn relay_main() -> ExitCode {
    let mut pairs = Vec::new();
    let mut delay = std::time::Duration::ZERO;
    let mut args = std::env::args().skip(2);
    while let Some(a) = args.next() {
        if a == "--delay-ms" {
            match args.next().and_then(|v| v.parse::<u64>().ok()) {
                Some(ms) => delay = std::time::Duration::from_millis(ms),
                None => {
                    eprintln!("authbridge-bench relay: --delay-ms needs milliseconds");
                    return ExitCode::from(2);
                }
            }
            continue;
        }
        let parsed = a
            .split_once('=')
            .and_then(|(l, u)| Some((l.parse().ok()?, u.parse().ok()?)));
        match parsed {
            Some(p) => pairs.push(p),
            None => {
                eprintln!("authbridge-bench relay: expected LISTEN=UPSTREAM, got {a:?}");
                return ExitCode::from(2);
            }
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match rt.block_on(client::relay(pairs, delay)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("authbridge-bench relay: {e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("relay") => return relay_main(),
        Some("targets") => return targets::main(std::env::args().skip(2).collect()),
        _ => {}
    }
    let opts = match Opts::parse() {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("authbridge-bench: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("authbridge-bench: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(phases::run(opts)) {
        Ok(problems) if problems.is_empty() => ExitCode::SUCCESS,
        Ok(problems) => {
            eprintln!("authbridge-bench: FAILED:");
            for p in problems {
                eprintln!("  - {p}");
            }
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("authbridge-bench: {e}");
            ExitCode::from(1)
        }
    }
}
