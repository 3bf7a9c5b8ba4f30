//! Replicas sharing one delegated account through Redis (issue 17): a `redis-server` started on
//! loopback (its own port and directory), N authbridge processes with `token_store: redis` and one
//! master key, and the account's refresh token imported once with `authbridge import-token`.
//!
//! - Cold burst: all replicas restarted with no access token anywhere (their memory is new, the
//!   shared access-token key deleted), then `burst` IMAP logins at once, login i to replica
//!   i mod N. Counted: `refresh_token` requests at the sandbox (target 1 for the whole cluster).
//! - Warm logins: replica 1 (Redis store) against one authbridge with the default file store and
//!   its own delegated token, interleaved round by round (target: no difference — warm logins do
//!   not touch the store).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::client::{Proto, Target, err, timed_login};
use crate::phases::{Ctx, LoginSeries, log, order};
use crate::procs::{Proc, free_port};
use crate::report;
use crate::systems::{ACCOUNT, AuthbridgeOptions, Proxy};

/// Key prefix in Redis (`<prefix>token/<account>`, `<prefix>access/<account>`, `<prefix>lease/…`).
const PREFIX: &str = "bench/";

/// The two token stores compared on warm logins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Store {
    Redis,
    File,
}

impl Store {
    pub fn name(self) -> &'static str {
        match self {
            Store::Redis => "redis store (replica 1)",
            Store::File => "file store",
        }
    }
}

/// One cold burst over all replicas.
#[derive(Clone, Debug, Default)]
pub struct ReplicaBurst {
    pub round: usize,
    pub n: usize,
    pub ok: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    /// `refresh_token` requests at the sandbox, from before the replicas started to after the
    /// last login.
    pub token_requests: u64,
    pub latencies_ms: Vec<f64>,
    /// Logins answered OK by each replica.
    pub per_replica_ok: Vec<usize>,
    pub secs: f64,
}

#[derive(Default)]
pub struct ReplicasRun {
    pub replicas: usize,
    pub redis_version: String,
    pub bursts: Vec<ReplicaBurst>,
    pub warm: Vec<(Proto, BTreeMap<Store, LoginSeries>)>,
    /// Why the phase did not run (no redis-server outside CI).
    pub skipped: Option<String>,
}

/// `redis-server` on loopback with its own port and directory, no persistence; killed on drop.
struct Redis {
    _proc: Proc,
    addr: SocketAddr,
}

impl Redis {
    async fn start(bin: &Path, dir: &Path) -> io::Result<Redis> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let mut cmd = Command::new(bin);
        cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--protected-mode", "no", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir);
        let mut proc = Proc::spawn("redis-server", cmd, &dir.join("redis.log"))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(r) = command(addr, &["PING"]).await
                && r == "+PONG"
            {
                break;
            }
            if !proc.alive() || Instant::now() > end {
                return Err(err(format!(
                    "redis-server did not start; see {}",
                    dir.join("redis.log").display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Redis { _proc: proc, addr })
    }
}

/// One Redis command (RESP); returns the first line of the reply (`+OK`, `:1`, `-ERR …`).
async fn command(addr: SocketAddr, args: &[&str]) -> io::Result<String> {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    timeout(Duration::from_secs(5), async {
        let mut s = BufReader::new(TcpStream::connect(addr).await?);
        s.get_mut().write_all(req.as_bytes()).await?;
        let mut line = String::new();
        s.read_line(&mut line).await?;
        Ok(line.trim_end().to_string())
    })
    .await
    .map_err(|_| err("Redis did not answer within 5 s"))?
}

/// `redis-server` to use: `--redis-server`, else the one on PATH.
fn find_redis(opts: &crate::Opts) -> Option<PathBuf> {
    opts.redis_server.clone().or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("redis-server"))
                .find(|p| p.is_file())
        })
    })
}

/// A 32-byte master key, base64, in a file only its owner may read (every replica uses it).
fn write_key(path: &Path) -> io::Result<()> {
    let mut raw = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut raw)?;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)?
        .write_all(format!("{}\n", B64.encode(raw)).as_bytes())
}

pub async fn replicas(ctx: &mut Ctx) -> io::Result<()> {
    let Some(redis_bin) = find_redis(&ctx.opts) else {
        let why = "redis-server is not installed (apt-get install redis-server)".to_string();
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            return Err(err(format!("replicas: {why}")));
        }
        println!("SKIPPED replicas phase: {why}");
        ctx.res.notes.push(format!("replicas: not measured: {why}"));
        ctx.res.replicas = Some(ReplicasRun {
            skipped: Some(why),
            ..Default::default()
        });
        return Ok(());
    };
    let dir = ctx.opts.work.join("replicas");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let redis = Redis::start(&redis_bin, &dir.join("redis")).await?;
    let key = dir.join("master.key");
    write_key(&key)?;
    let store = format!(
        "{{ type: redis, url: \"redis://{}/0\", key_prefix: {PREFIX} }}",
        redis.addr
    );
    let upstream = (ctx.sb.addr("smtp")?, ctx.sb.addr("imap")?);
    let mut reps = Vec::new();
    for i in 0..ctx.opts.replicas {
        reps.push(Proxy::authbridge(
            &ctx.opts.authbridge,
            &dir.join(format!("replica{}", i + 1)),
            &ctx.sb,
            &ctx.hash,
            upstream,
            &AuthbridgeOptions {
                delegated: true,
                token_store: Some(store.clone()),
                key_file: Some(key.clone()),
                connector: None,
            },
        )?);
    }
    let mut file = Proxy::authbridge(
        &ctx.opts.authbridge,
        &dir.join("file-store"),
        &ctx.sb,
        &ctx.hash,
        upstream,
        &AuthbridgeOptions {
            delegated: true,
            ..Default::default()
        },
    )?;
    for p in reps.iter_mut().chain(std::iter::once(&mut file)) {
        p.env.extend(ctx.opts.authbridge_env.iter().cloned());
    }
    // One refresh-token family each: the cluster's in Redis, the file store's on disk.
    reps[0].import_token(&ctx.sb.delegated_refresh_token().await?)?;
    file.import_token(&ctx.sb.delegated_refresh_token().await?)?;
    let mut run = ReplicasRun {
        replicas: reps.len(),
        redis_version: crate::report::sh(&format!("'{}' --version", redis_bin.display())),
        ..Default::default()
    };

    // Cold bursts.
    let n = ctx.opts.burst;
    let limit = Duration::from_secs(ctx.opts.burst_timeout_secs);
    for round in 0..ctx.opts.burst_rounds {
        for p in reps.iter_mut() {
            p.stop();
        }
        let access = format!("{PREFIX}access/{ACCOUNT}");
        let lease = format!("{PREFIX}lease/{ACCOUNT}");
        let del = command(redis.addr, &["DEL", &access, &lease]).await?;
        if !del.starts_with(':') {
            return Err(err(format!("replicas: Redis DEL answered {del:?}")));
        }
        let before = ctx.sb.token_requests_of("refresh_token").await?;
        for p in reps.iter_mut() {
            p.start(true).await?;
        }
        let targets: Vec<Target> = reps.iter().map(|p| p.target(&ctx.mailbox)).collect();
        let start = Instant::now();
        let mut set = JoinSet::new();
        for i in 0..n {
            let which = i % targets.len();
            let t = targets[which].clone();
            set.spawn(async move {
                let s0 = Instant::now();
                let r = timeout(limit, t.imap_login()).await;
                (which, s0.elapsed(), r)
            });
        }
        let mut b = ReplicaBurst {
            round,
            n,
            per_replica_ok: vec![0; targets.len()],
            latencies_ms: Vec::with_capacity(n),
            ..Default::default()
        };
        let mut held = Vec::with_capacity(n);
        while let Some(j) = set.join_next().await {
            match j {
                Ok((which, d, Ok(Ok(c)))) => {
                    b.ok += 1;
                    b.per_replica_ok[which] += 1;
                    b.latencies_ms.push(d.as_secs_f64() * 1e3);
                    held.push(c);
                }
                Ok((_, _, Ok(Err(e)))) => {
                    b.failed += 1;
                    b.first_error.get_or_insert(e.to_string());
                }
                Ok((_, _, Err(_))) => {
                    b.failed += 1;
                    b.first_error
                        .get_or_insert(format!("no login within {} s", limit.as_secs()));
                }
                Err(e) => {
                    b.failed += 1;
                    b.first_error.get_or_insert(e.to_string());
                }
            }
        }
        b.secs = start.elapsed().as_secs_f64();
        b.token_requests = ctx.sb.token_requests_of("refresh_token").await? - before;
        log(format!(
            "replicas: cold burst {n} over {} round {}: {} ok {:?}, {} failed, {} token requests, p99 {:.1} ms",
            reps.len(),
            round + 1,
            b.ok,
            b.per_replica_ok,
            b.failed,
            b.token_requests,
            report::percentile(&b.latencies_ms, 99.0)
        ));
        for c in held {
            c.close().await;
        }
        run.bursts.push(b);
    }

    // Warm logins: replica 1 (warm from the bursts) against the file store.
    file.start(false).await?;
    let stores = [Store::Redis, Store::File];
    let target = |s: Store| match s {
        Store::Redis => reps[0].target(&ctx.mailbox),
        Store::File => file.target(&ctx.mailbox),
    };
    for proto in [Proto::Smtp, Proto::Imap] {
        for s in stores {
            for _ in 0..5 {
                timed_login(&target(s), proto).await.map_err(|e| {
                    err(format!(
                        "replicas: {} {} warm-up: {e}",
                        s.name(),
                        proto.name()
                    ))
                })?;
            }
        }
        let mut series: BTreeMap<Store, LoginSeries> = BTreeMap::new();
        let rounds = ctx.opts.rounds;
        for r in 0..rounds {
            for s in order(&stores, r) {
                let total = ctx.opts.replica_sessions;
                let k = total / rounds + usize::from(r < total % rounds);
                let t = target(s);
                let e = series.entry(s).or_default();
                let mut samples = Vec::with_capacity(k);
                for _ in 0..k {
                    match timed_login(&t, proto).await {
                        Ok(d) => samples.push(d.as_secs_f64() * 1e3),
                        Err(x) => {
                            e.errors += 1;
                            e.first_error.get_or_insert_with(|| x.to_string());
                        }
                    }
                }
                let p50 = report::percentile(&samples, 50.0);
                log(format!(
                    "replicas: warm {} round {}/{rounds} {}: {} ok, p50 {p50:.2} ms",
                    proto.name(),
                    r + 1,
                    s.name(),
                    samples.len()
                ));
                e.round_p50_ms.push(p50);
                e.samples_ms.extend(samples);
            }
        }
        run.warm.push((proto, series));
    }
    for p in reps.iter_mut().chain(std::iter::once(&mut file)) {
        p.stop();
    }
    ctx.res.replicas = Some(run);
    Ok(())
}
