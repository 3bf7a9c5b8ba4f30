//! The shared token store against a real `redis-server` (started by each test on loopback, own
//! port and directory) and real `authbridge run` processes sharing one delegated account whose
//! refresh token rotates on every use (the sandbox's token endpoint):
//! - a cold burst over three replicas costs exactly one token request;
//! - killing (SIGKILL) the replica holding the refresh lease mid-refresh, 50 times, never loses
//!   the token: the survivors go on;
//! - Redis restarted during a burst: temporary replies, then recovery without intervention;
//! - replicas whose wall clocks disagree by hours still share one refresh;
//! - an ACL user with only the documented commands works, one without them is refused (as a
//!   temporary failure);
//! - TLS to Redis (`rediss://`);
//! - `migrate-store`, `import-token` and `status` against the shared store.
//!
//! Without `redis-server` these fail under `CI=true` and are skipped (one line) otherwise.

mod common;

use std::time::{Duration, Instant};

use authbridge::token::TokenStore;
use common::redis::{Cluster, RedisOptions, RedisServer, Replica, imap_login, require_redis};
use common::{CLIENT_ID, MAILBOX};
use sandbox::{Sandbox, SandboxOptions, TokenFailure};

/// The ACL README documents for the authbridge user (password appended by the test).
const ACL_RULES: &str = "on resetkeys ~authbridge/* resetchannels -@all +ping +auth +hello \
                         +select +get +set +del +pttl +pexpire +hget +hmget +hset +eval";

fn store_yaml(redis: &RedisServer, extra: &str) -> String {
    format!("{{ type: redis, url: \"{}\"{extra} }}", redis.url())
}

async fn sandbox() -> Sandbox {
    let s = Sandbox::start(SandboxOptions::default()).await.unwrap();
    s.add_client(CLIENT_ID, common::CLIENT_SECRET, &[MAILBOX]);
    s
}

/// Stores a fresh refresh token for `tickets` in the shared store (as replica 0 sees it).
fn seed(sandbox: &Sandbox, cluster: &Cluster) -> String {
    cluster.config(0, common::redis::free_port());
    let rt = sandbox.issue_refresh_token(CLIENT_ID, MAILBOX);
    let store = authbridge::server::token_store(&cluster.loaded(0)).unwrap();
    store.save("tickets", &rt.clone().into()).unwrap();
    rt
}

/// `n` logins spread round-robin over `replicas`, at most 50 at a time; the tagged replies.
async fn burst(replicas: &[std::net::SocketAddr], n: usize) -> Vec<String> {
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(50));
    let mut tasks = Vec::new();
    for i in 0..n {
        let addr = replicas[i % replicas.len()];
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await.unwrap();
            imap_login(addr).await
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn assert_all_ok(replies: &[String], replicas: &[&Replica]) {
    let bad: Vec<_> = replies.iter().filter(|r| !r.starts_with("a OK")).collect();
    if !bad.is_empty() {
        for r in replicas {
            eprintln!("--- replica {} log:\n{}", r.index, r.logs());
        }
        panic!(
            "{} of {} logins failed: {:?}",
            bad.len(),
            replies.len(),
            &bad[..bad.len().min(5)]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_cold_burst_make_one_token_request() {
    let Some(bin) = require_redis("three_replicas_cold_burst_make_one_token_request") else {
        return;
    };
    let redis = RedisServer::start(bin, RedisOptions::default());
    let sandbox = sandbox().await;
    let cluster = Cluster::new(&sandbox, store_yaml(&redis, ""));
    seed(&sandbox, &cluster);
    let replicas: Vec<Replica> = (0..3).map(|i| Replica::start(&cluster, i, &[])).collect();
    // A token request takes as long as a real one may: all three replicas need it meanwhile.
    sandbox.inject(TokenFailure::Slow(Duration::from_millis(300)));
    let before = sandbox.token_requests().refresh_token;
    let addrs: Vec<_> = replicas.iter().map(Replica::addr).collect();
    let replies = burst(&addrs, 300).await;
    assert_all_ok(&replies, &replicas.iter().collect::<Vec<_>>());
    assert_eq!(
        sandbox.token_requests().refresh_token - before,
        1,
        "one token request for the whole cluster"
    );
    // The rotated token is what the store holds, sealed (Redis never sees it in clear).
    let mut conn = redis.conn();
    let raw: Vec<Vec<u8>> = redis::cmd("HVALS")
        .arg("authbridge/token/tickets")
        .query(&mut conn)
        .unwrap();
    let store = authbridge::server::token_store(&cluster.loaded(0)).unwrap();
    let held = store.load("tickets").unwrap().unwrap();
    assert!(
        held.version >= 2,
        "the rotation was stored (version {})",
        held.version
    );
    for v in raw {
        let text = String::from_utf8_lossy(&v);
        assert!(
            !text.contains(held.refresh_token.expose()),
            "token in clear in Redis"
        );
    }
    // `status` reads the shared store.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_authbridge"))
        .arg("status")
        .arg("--config")
        .arg(&replicas[0].config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("token_store=redis") && text.contains("state=ok"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_holder_killed_mid_refresh_fifty_times_loses_nothing() {
    let Some(bin) = require_redis("lease_holder_killed_mid_refresh_fifty_times_loses_nothing")
    else {
        return;
    };
    let redis = RedisServer::start(bin, RedisOptions::default());
    let sandbox = sandbox().await;
    // Entra keeps a rotated-away refresh token usable for a while; a holder killed after the
    // endpoint rotated but before the store had the new one leaves the old one, still good.
    sandbox.set_refresh_grace(Duration::from_secs(3600));
    let cluster = Cluster::new(&sandbox, store_yaml(&redis, ", lease_ms: 600"));
    seed(&sandbox, &cluster);
    let mut replicas: Vec<Replica> = (0..3).map(|i| Replica::start(&cluster, i, &[])).collect();
    let addrs: Vec<_> = replicas.iter().map(Replica::addr).collect();
    assert_all_ok(
        &burst(&addrs, 3).await,
        &replicas.iter().collect::<Vec<_>>(),
    );
    sandbox.inject(TokenFailure::Slow(Duration::from_millis(400)));
    let mut conn = redis.conn();
    let started = Instant::now();
    let mut kills = 0;
    for round in 0..50 {
        // Every access token becomes invalid: the next login refreshes.
        sandbox.expire_access_tokens();
        let trigger = replicas[round % 3].addr();
        let login = tokio::spawn(imap_login(trigger));
        // Wait for a lease holder, then kill it.
        let deadline = Instant::now() + Duration::from_secs(10);
        let holder = loop {
            let v: Option<String> = redis::cmd("GET")
                .arg("authbridge/lease/tickets")
                .query(&mut conn)
                .unwrap();
            if let Some(v) = v {
                let pid: u32 = v.split(':').next().unwrap().parse().unwrap();
                break pid;
            }
            assert!(Instant::now() < deadline, "round {round}: no lease taken");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let victim = replicas
            .iter_mut()
            .find(|r| r.pid() == Some(holder))
            .expect("the lease holder is a replica");
        victim.kill();
        kills += 1;
        let _ = login.await;
        // The survivors go on: each logs in (one of them refreshes with the stored token).
        let survivors: Vec<_> = replicas
            .iter()
            .filter(|r| r.pid().is_some())
            .map(Replica::addr)
            .collect();
        let replies = burst(&survivors, 4).await;
        assert_all_ok(&replies, &replicas.iter().collect::<Vec<_>>());
        for r in replicas.iter_mut().filter(|r| r.pid().is_none()) {
            r.restart();
        }
    }
    assert_eq!(kills, 50);
    sandbox.clear_failures();
    // The store holds a token that works: a cold replica refreshes with it.
    sandbox.expire_access_tokens();
    let fresh = Replica::start(&cluster, 3, &[]);
    assert_all_ok(&burst(&[fresh.addr()], 1).await, &[&fresh]);
    eprintln!("50 kills in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restart_during_burst_gives_temporary_replies_then_recovers() {
    let Some(bin) =
        require_redis("redis_restart_during_burst_gives_temporary_replies_then_recovers")
    else {
        return;
    };
    let mut redis = RedisServer::start(bin, RedisOptions::default());
    let sandbox = sandbox().await;
    let cluster = Cluster::new(&sandbox, store_yaml(&redis, ""));
    seed(&sandbox, &cluster);
    let warm = Replica::start(&cluster, 0, &[]);
    let cold = Replica::start(&cluster, 1, &[]);
    assert_all_ok(&burst(&[warm.addr()], 5).await, &[&warm]);
    // The other one adopts that token (and keeps its connection to Redis).
    assert_all_ok(&burst(&[cold.addr()], 1).await, &[&cold]);

    redis.stop();
    // A cached access token needs no store: the warm replica keeps working.
    assert_all_ok(&burst(&[warm.addr()], 20).await, &[&warm]);
    // Refused tokens: the other one needs the store now (its pooled connection is dead):
    // temporary replies only, never a refusal.
    sandbox.expire_access_tokens();
    let replies = burst(&[cold.addr()], 20).await;
    for r in &replies {
        assert!(r.starts_with("a NO [UNAVAILABLE]"), "{r}\n{}", cold.logs());
    }
    assert!(cold.logs().contains("token store"), "{}", cold.logs());

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let r = imap_login(cold.addr()).await;
        if r.starts_with("a OK") {
            break;
        }
        assert!(r.starts_with("a NO [UNAVAILABLE]"), "{r}");
        assert!(Instant::now() < deadline, "no recovery: {}", cold.logs());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_all_ok(
        &burst(&[cold.addr(), warm.addr()], 40).await,
        &[&warm, &cold],
    );
    // Two refreshes in all: the first login's, and one after the refusal (the warm replica
    // adopted the other's result).
    assert_eq!(sandbox.token_requests().refresh_token, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_whose_clocks_disagree_share_one_refresh() {
    let Some(bin) = require_redis("replicas_whose_clocks_disagree_share_one_refresh") else {
        return;
    };
    let redis = RedisServer::start(bin, RedisOptions::default());
    let sandbox = sandbox().await;
    let cluster = Cluster::new(&sandbox, store_yaml(&redis, ""));
    seed(&sandbox, &cluster);
    let var = authbridge::token::CLOCK_SKEW_VAR;
    // Two hours ahead and two hours behind: longer than the token's lifetime.
    let ahead = Replica::start(&cluster, 0, &[(var, "7200")]);
    let behind = Replica::start(&cluster, 1, &[(var, "-7200")]);
    assert_all_ok(&burst(&[ahead.addr()], 1).await, &[&ahead]);
    assert_all_ok(
        &burst(&[behind.addr(), ahead.addr()], 60).await,
        &[&ahead, &behind],
    );
    assert_eq!(sandbox.token_requests().refresh_token, 1);
    // Then a forced refresh on the one behind: the one ahead adopts its result.
    sandbox.expire_access_tokens();
    assert_all_ok(&burst(&[behind.addr()], 1).await, &[&behind]);
    assert_all_ok(&burst(&[ahead.addr()], 10).await, &[&ahead]);
    assert_eq!(
        sandbox.token_requests().refresh_token,
        2,
        "ahead:\n{}\nbehind:\n{}",
        ahead.logs(),
        behind.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acl_user_with_only_the_documented_commands() {
    let Some(bin) = require_redis("acl_user_with_only_the_documented_commands") else {
        return;
    };
    let opts = RedisOptions {
        users: vec![
            format!("authbridge >pw-Acl1 {ACL_RULES}"),
            // Lacks PTTL (reading the published access token's remaining life).
            format!("limited >pw-Acl2 {}", ACL_RULES.replace(" +pttl", "")),
        ],
        ..RedisOptions::default()
    };
    let redis = RedisServer::start(bin, opts);
    let sandbox = sandbox().await;
    let cluster = Cluster::new(
        &sandbox,
        store_yaml(&redis, ", username: authbridge, password: pw-Acl1"),
    );
    seed(&sandbox, &cluster);
    let a = Replica::start(&cluster, 0, &[]);
    let b = Replica::start(&cluster, 1, &[]);
    assert_all_ok(&burst(&[a.addr(), b.addr()], 40).await, &[&a, &b]);
    assert_eq!(sandbox.token_requests().refresh_token, 1);
    assert!(!a.logs().contains("pw-Acl1"), "password in the log");

    let limited = Cluster::new(
        &sandbox,
        store_yaml(&redis, ", username: limited, password: pw-Acl2"),
    );
    std::fs::copy(
        cluster.dir.path().join("master.key"),
        limited.dir.path().join("master.key"),
    )
    .unwrap();
    let c = Replica::start(&limited, 0, &[]);
    let r = imap_login(c.addr()).await;
    assert!(r.starts_with("a NO [UNAVAILABLE]"), "{r}");
    let logs = c.logs();
    assert!(
        logs.contains("lacks a permission") && logs.contains("pttl"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_to_redis() {
    let Some(bin) = require_redis("tls_to_redis") else {
        return;
    };
    let redis = RedisServer::start(
        bin,
        RedisOptions {
            tls: true,
            ..RedisOptions::default()
        },
    );
    let ca = redis.dir.path().join("ca.pem");
    let sandbox = sandbox().await;
    let cluster = Cluster::new(
        &sandbox,
        store_yaml(&redis, &format!(", ca_file: \"{}\"", ca.display())),
    );
    seed(&sandbox, &cluster);
    let a = Replica::start(&cluster, 0, &[]);
    let b = Replica::start(&cluster, 1, &[]);
    assert_all_ok(&burst(&[a.addr(), b.addr()], 30).await, &[&a, &b]);
    assert_eq!(sandbox.token_requests().refresh_token, 1);

    // Without the CA the server's certificate is not trusted: temporary failure, named.
    let untrusted = Cluster::new(&sandbox, store_yaml(&redis, ""));
    let c = Replica::start(&untrusted, 0, &[]);
    let r = imap_login(c.addr()).await;
    assert!(r.starts_with("a NO [UNAVAILABLE]"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_store_copies_file_tokens_and_is_idempotent() {
    let Some(bin) = require_redis("migrate_store_copies_file_tokens_and_is_idempotent") else {
        return;
    };
    let redis = RedisServer::start(bin, RedisOptions::default());
    let sandbox = sandbox().await;
    let cluster = Cluster::new(&sandbox, "{ type: file }".to_owned());
    let config = cluster.config(0, common::redis::free_port());
    // A file store with a token, as a single authbridge left it.
    let rt = sandbox.issue_refresh_token(CLIENT_ID, MAILBOX);
    let file_store = authbridge::server::token_store(&cluster.loaded(0)).unwrap();
    file_store.save("tickets", &rt.clone().into()).unwrap();
    let file = file_store.path("tickets").unwrap();
    let file_before = std::fs::read(&file).unwrap();

    let redis_url = redis.url();
    // Runs a command, which must not leave a refresh lease behind when it exits: one left to
    // expire holds up every replica's next refresh (their logins time out meanwhile).
    let run = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_authbridge"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        if let Ok(client) = redis::Client::open(redis_url.as_str())
            && let Ok(mut conn) = client.get_connection()
        {
            let lease: Option<String> = redis::cmd("GET")
                .arg("authbridge/lease/tickets")
                .query(&mut conn)
                .unwrap();
            assert_eq!(lease, None, "{args:?} left its refresh lease behind");
        }
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    // With token_store: file there is nothing to migrate to.
    let (code, out) = run(&["migrate-store"], "");
    assert_eq!(code, Some(2), "{out}");

    // Switch the config to Redis.
    let cluster_redis = Cluster {
        token_store_yaml: store_yaml(&redis, ""),
        ..cluster
    };
    cluster_redis.config(0, common::redis::free_port());
    let (code, out) = run(&["migrate-store"], "");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("tickets: copied"), "{out}");
    let (code, out) = run(&["migrate-store"], "");
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("tickets: already in the shared store"),
        "{out}"
    );
    let shared: TokenStore = authbridge::server::token_store(&cluster_redis.loaded(0)).unwrap();
    assert_eq!(
        shared
            .load("tickets")
            .unwrap()
            .unwrap()
            .refresh_token
            .expose(),
        &rt
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        file_before,
        "the file is never changed"
    );

    // import-token writes to the shared store; migrate-store then keeps the newer token.
    let rt2 = sandbox.issue_refresh_token(CLIENT_ID, MAILBOX);
    let (code, out) = run(&["import-token", "tickets"], &rt2);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("redis://"), "{out}");
    let (code, out) = run(&["migrate-store"], "");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("kept that one"), "{out}");
    assert_eq!(
        shared
            .load("tickets")
            .unwrap()
            .unwrap()
            .refresh_token
            .expose(),
        &rt2
    );

    // A replica on the migrated store logs in with the imported token.
    let a = Replica::start(&cluster_redis, 1, &[]);
    assert_all_ok(&burst(&[a.addr()], 3).await, &[&a]);
    let (code, out) = run(&["status"], "");
    assert!(
        out.contains("token_store=redis") && out.contains("state=ok"),
        "{code:?} {out}"
    );

    // Redis down: status says so and exits 1.
    drop(a);
    drop(redis);
    let (code, out) = run(&["status"], "");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("state=failed") && out.contains("unavailable"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_set_and_sealing_in_redis() {
    let Some(bin) = require_redis("compare_and_set_and_sealing_in_redis") else {
        return;
    };
    let redis = RedisServer::start(bin, RedisOptions::default());
    let sandbox = sandbox().await;
    let cluster = Cluster::new(&sandbox, store_yaml(&redis, ""));
    cluster.config(0, common::redis::free_port());
    let store = authbridge::server::token_store(&cluster.loaded(0)).unwrap();
    let v1 = store.save("tickets", &"rt-one".to_owned().into()).unwrap();
    let v2 = store
        .replace("tickets", &"rt-two".to_owned().into(), Some(v1))
        .unwrap();
    assert!(v2 > v1);
    // A rotation that started from v1 finds v2: refused, nothing written.
    let e = store
        .replace("tickets", &"rt-three".to_owned().into(), Some(v1))
        .unwrap_err();
    assert!(
        matches!(e, authbridge::token::StoreError::Conflict { .. }),
        "{e}"
    );
    let held = store.load("tickets").unwrap().unwrap();
    assert_eq!(
        (held.refresh_token.expose().as_str(), held.version),
        ("rt-two", v2)
    );
    // The sealed value is bound to its account: copied to another account's key it does not open.
    let mut conn = redis.conn();
    let rec: Vec<u8> = redis::cmd("HGET")
        .arg("authbridge/token/tickets")
        .arg("rec")
        .query(&mut conn)
        .unwrap();
    assert!(!String::from_utf8_lossy(&rec).contains("rt-two"));
    let _: () = redis::cmd("HSET")
        .arg("authbridge/token/other")
        .arg("v")
        .arg(v2)
        .arg("rec")
        .arg(&rec)
        .query(&mut conn)
        .unwrap();
    assert!(store.load("other").is_err());
}
