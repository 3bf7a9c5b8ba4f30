//! The token lifecycle of a running authbridge against the sandbox: single-flight for app-only
//! tokens, proactive background refresh (no login waits on the token endpoint), backoff on
//! transient errors honouring `Retry-After`, and the needs-login path end to end (4xx to clients,
//! `status`, the `on_reauth_needed` hook run once, recovery after `authbridge login` without a
//! restart).

mod common;
mod oauth;

use std::time::{Duration, Instant};

use common::*;
use oauth::*;
use sandbox::{SandboxOptions, TokenFailure};

fn stored_token(env: &Env) -> String {
    authbridge::server::token_store(&env.config())
        .unwrap()
        .load("tickets")
        .unwrap()
        .unwrap()
        .refresh_token
        .expose()
        .clone()
}

fn account_status(env: &Env) -> authbridge::token::AccountStatus {
    env.running
        .as_ref()
        .unwrap()
        .tokens
        .status()
        .into_iter()
        .find(|s| s.name == "tickets")
        .unwrap()
}

/// SMTP AUTH PLAIN as USER; returns the reply to AUTH and how long it took.
async fn smtp_login(addr: std::net::SocketAddr) -> (String, Duration) {
    let mut c = LineClient::connect(addr).await;
    c.code().await;
    c.cmd("EHLO test.local").await;
    let blob = b64(format!("\0{USER}\0{PASSWORD}").as_bytes());
    let started = Instant::now();
    let r = c.cmd(&format!("AUTH PLAIN {blob}")).await;
    let took = started.elapsed();
    let _ = c.cmd("QUIT").await;
    (r, took)
}

async fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_fifty_logins_one_request_then_refreshed_before_expiry() {
    let env = Env::start_with(EnvOptions {
        app_only: true,
        sandbox: SandboxOptions {
            token_lifetime: Duration::from_secs(16),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let addr = env.addr("smtp");
    let logins: Vec<_> = (0..50).map(|_| tokio::spawn(smtp_login(addr))).collect();
    for l in logins {
        let (r, _) = l.await.unwrap();
        assert!(r.starts_with("235"), "{r}");
    }
    let counters = env.sandbox.token_requests();
    assert_eq!(counters.client_credentials, 1, "{counters:?}");
    assert_eq!(counters.total, 1);
    let first = account_status(&env);
    let first_expiry = first.access_token_expires_at.unwrap();
    let waited = first.waited_fetches;
    assert!((1..=50).contains(&waited), "{waited}");

    // Refreshed in the background at 50–62 % of the lifetime, before the old token expires.
    wait_for("a background refresh", Duration::from_secs(14), || {
        env.sandbox.token_requests().client_credentials == 2
    })
    .await;
    assert!(std::time::SystemTime::now() < first_expiry);
    let second = account_status(&env);
    assert!(second.access_token_expires_at.unwrap() > first_expiry);
    assert!(second.in_use);
    let (r, took) = smtp_login(addr).await;
    assert!(r.starts_with("235"), "{r}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(
        account_status(&env).waited_fetches,
        waited,
        "no login waited again"
    );
    assert_eq!(env.sandbox.token_requests().total, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_refresh_keeps_a_ten_second_token_fresh_for_a_minute() {
    let env = Env::start_with(EnvOptions {
        sandbox: SandboxOptions {
            // 10 s, not less: the refresh starts at half-life, and a loaded 2-core machine must
            // still finish it within the other half.
            token_lifetime: Duration::from_secs(10),
            refresh_grace: Duration::ZERO,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let addr = env.addr("smtp");
    let (r, _) = smtp_login(addr).await;
    assert!(r.starts_with("235"), "{r}");
    assert_eq!(
        account_status(&env).waited_fetches,
        1,
        "the first login is cold"
    );
    let started = Instant::now();
    let mut logins = 0;
    let mut slowest = Duration::ZERO;
    // A login every 11 s, longer than the token lives: each would find an expired token and
    // wait for the token endpoint if nothing refreshed it in between.
    while started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(11_000)).await;
        let (r, took) = smtp_login(addr).await;
        assert!(r.starts_with("235"), "login {logins}: {r}");
        slowest = slowest.max(took);
        logins += 1;
    }
    let status = account_status(&env);
    assert_eq!(
        status.waited_fetches, 1,
        "no login after the first waited on the token endpoint"
    );
    assert!(
        slowest < Duration::from_secs(3),
        "slowest login {slowest:?}"
    );
    assert!(logins >= 5);
    // One refresh per ~5 s of the 10 s lifetime, not one per login, and never a refused token.
    let refreshes = env.sandbox.token_requests().refresh_token;
    assert!(
        (9..=16).contains(&refreshes),
        "{refreshes} refreshes in 60 s"
    );
    assert_eq!(env.sandbox.mail_auth_attempts().failed(), 0);
    assert!(status.last_error.is_none(), "{:?}", status.last_error);
    // Every rotation was persisted (the sandbox gives rotated tokens no grace here).
    let rt = stored_token(&env);
    assert_ne!(Some(rt), env.refresh_token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_retries_honour_retry_after_and_keep_the_token() {
    let env = Env::start_with(EnvOptions {
        sandbox: SandboxOptions {
            token_lifetime: Duration::from_secs(4),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let (r, _) = smtp_login(env.addr("smtp")).await;
    assert!(r.starts_with("235"), "{r}");
    let rt = stored_token(&env);
    let base = env.sandbox.token_requests().refresh_token;
    // Throttled, only this account's refreshes: Retry-After 5 s.
    env.sandbox.inject_for(
        MAILBOX,
        TokenFailure::Throttle429 {
            retry_after_secs: 5,
        },
        None,
    );
    tokio::time::sleep(Duration::from_secs(11)).await;
    // First background try at ~2 s, then every 5 s (± 10 %): 2 or 3 tries, not 1 s apart.
    let tries = env.sandbox.token_requests().refresh_token - base;
    assert!((2..=3).contains(&tries), "{tries} tries in 11 s");
    assert_eq!(
        stored_token(&env),
        rt,
        "a transient error keeps the stored token"
    );
    // The last attempt failed: status shows it with its fix and exits 1 (issue 13; it exited 0),
    // as a transient failure, not a needs-login (or, caught during a retry, as a retry after a
    // failure, the failure shown).
    let (code, out) = status(&env.config_path);
    assert_eq!(code, Some(1), "{out}");
    let failed = "token refresh for account tickets failed: throttled by the token endpoint \
                  (HTTP 429";
    assert!(
        out.contains(&format!("state=failed: {failed}"))
            || (out.contains(&format!("last_error=\"{failed}"))
                && out.contains("state=refreshing (the last attempt failed)")),
        "{out}"
    );
    assert!(out.contains("authbridge retries"), "{out}");
    assert!(!out.contains("needs login"), "{out}");

    // The provider recovers: the next background try succeeds and clients log in again.
    env.sandbox.clear_failures();
    let before = env.sandbox.token_requests().refresh_token;
    wait_for(
        "a successful background refresh",
        Duration::from_secs(8),
        || account_status(&env).last_error.is_none(),
    )
    .await;
    assert!(env.sandbox.token_requests().refresh_token > before);
    let (r, _) = smtp_login(env.addr("smtp")).await;
    assert!(r.starts_with("235"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_retries_back_off_exponentially() {
    let env = Env::start_with(EnvOptions {
        sandbox: SandboxOptions {
            token_lifetime: Duration::from_secs(2),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let (r, _) = smtp_login(env.addr("smtp")).await;
    assert!(r.starts_with("235"), "{r}");
    let base = env.sandbox.token_requests().refresh_token;
    env.sandbox.inject_for(MAILBOX, TokenFailure::Http500, None);
    tokio::time::sleep(Duration::from_secs(16)).await;
    // Tries at ~1 s, then +1, +2, +4, +8 s (± 10 %): at most 5 in 16 s, where a fixed 1 s retry
    // would make 15.
    let tries = env.sandbox.token_requests().refresh_token - base;
    assert!((3..=6).contains(&tries), "{tries} tries in 16 s");
    let s = account_status(&env);
    assert!(s.needs_login.is_none(), "{:?}", s.needs_login);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_grant_needs_login_runs_the_hook_once_and_login_resumes_service() {
    let mut env = Env::start().await;
    env.stop_proxy().await;
    let dir = env.dir.path().to_path_buf();
    let script = dir.join("hook.sh");
    let hook_log = dir.join("hook.log");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$1|$AUTHBRIDGE_ACCOUNT|$AUTHBRIDGE_AADSTS|$AUTHBRIDGE_HINT\" >> {log}\nenv > {env_file}\n",
            log = hook_log.display(),
            env_file = dir.join("hook.env").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    patch_top(
        &env.config_path,
        &format!(
            "on_reauth_needed: [\"{}\", \"page-admin\"]",
            script.display()
        ),
    );
    enable_browser_login(&env);
    env.start_proxy().await;
    let hook_lines = || {
        std::fs::read_to_string(&hook_log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };

    let r = smtp_send(env.addr("smtp"), "before", 1).await;
    assert!(r.starts_with("250"), "{r}");

    // The refresh token family expires (AADSTS70008) and the upstream stops taking the cached
    // access token: the proxy refreshes once, gets invalid_grant, and the client gets a 4xx.
    let refused = stored_token(&env);
    env.sandbox.expire_refresh_token(&refused);
    env.sandbox.expire_access_tokens();
    let (r, _) = smtp_login(env.addr("smtp")).await;
    assert!(r.starts_with("454 4.7.0"), "{r}");
    let mut imap = LineClient::connect(env.addr("imap")).await;
    imap.line().await;
    let quoted = PASSWORD.replace('\\', "\\\\").replace('"', "\\\"");
    imap.send(&format!("a1 LOGIN {USER} \"{quoted}\"")).await;
    let l = imap.until("a1 ").await;
    assert!(
        l.last().unwrap().starts_with("a1 NO [UNAVAILABLE]"),
        "{l:?}"
    );
    wait_for("the hook", Duration::from_secs(10), || {
        !hook_lines().is_empty()
    })
    .await;

    // More failing logins, a restart: still the same needs-login period, the hook does not run again.
    let (r, _) = smtp_login(env.addr("smtp")).await;
    assert!(r.starts_with("454"), "{r}");
    env.stop_proxy().await;
    env.start_proxy().await;
    let (r, _) = smtp_login(env.addr("smtp")).await;
    assert!(r.starts_with("454"), "{r}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let lines = hook_lines();
    assert_eq!(
        lines,
        [
            "page-admin|tickets|70008|AADSTS70008 refresh token expired — run `authbridge login tickets`"
        ],
        "the hook ran once"
    );
    let hook_env = std::fs::read_to_string(dir.join("hook.env")).unwrap();
    assert!(
        hook_env.contains("AUTHBRIDGE_MAILBOX=tickets@contoso.com"),
        "{hook_env}"
    );
    for line in hook_env.lines() {
        let key = line.split('=').next().unwrap();
        assert!(
            key.starts_with("AUTHBRIDGE_") && key != "AUTHBRIDGE_KEY"
                || [
                    "PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME", "PWD", "SHLVL", "_"
                ]
                .contains(&key),
            "the hook got {key}"
        );
    }
    assert!(!hook_env.contains(CLIENT_SECRET));

    assert_eq!(
        stored_token(&env),
        refused,
        "the refused token is kept until replaced"
    );
    let (code, out) = status(&env.config_path);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(
            "state=needs login: AADSTS70008 refresh token expired — run `authbridge login tickets`"
        ),
        "{out}"
    );
    assert!(out.contains("flow=authorization_code"), "{out}");

    // The admin runs `authbridge login tickets`; the running proxy serves again, no restart.
    let (code, out) = browser_login(&env, "tickets").await;
    assert_eq!(code, Some(0), "{out}");
    let r = smtp_send(env.addr("smtp"), "after login", 1).await;
    assert!(r.starts_with("250"), "{r}");
    let (code, out) = status(&env.config_path);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("state=ok"), "{out}");
    assert_eq!(hook_lines().len(), 1);
}

#[test]
fn config_checks_for_the_hook_and_providers() {
    use authbridge::config::Config;
    let file = std::path::Path::new("/etc/authbridge/test.yaml");
    let err = |text: &str| Config::parse(file, text).unwrap_err().to_string();
    let e = err("on_reauth_needed: \"/usr/local/bin/page admin\"\n");
    assert!(
        e.starts_with("/etc/authbridge/test.yaml: on_reauth_needed: expected a list [program, argument, …], e.g. [/usr/local/bin/page, …]"),
        "{e}"
    );
    assert!(e.contains("without a shell"), "{e}");
    let e = err("on_reauth_needed: []\n");
    assert!(e.contains("on_reauth_needed: expected a list"), "{e}");
    let e = err("on_reauth_needed: [bin/page]\n");
    assert!(
        e.contains("on_reauth_needed[0]: `bin/page` is a relative path"),
        "{e}"
    );
    let ok = Config::parse(file, "on_reauth_needed: [logger, -t, authbridge]\n").unwrap();
    assert_eq!(
        ok.on_reauth_needed,
        Some(vec!["logger".into(), "-t".into(), "authbridge".into()])
    );
    let e = err(
        "providers:\n  g:\n    type: google\n    client_id: x\n    client_secret: y\n    flow: client_credentials\n",
    );
    assert!(
        e.contains("providers.g.flow: Gmail has no client_credentials grant"),
        "{e}"
    );
    let e = err(
        "providers:\n  m:\n    type: microsoft\n    tenant: t\n    client_id: x\n    redirect_uri: localhost:8925\n",
    );
    assert!(
        e.contains("providers.m.redirect_uri: expected an http:// or https:// URL"),
        "{e}"
    );
    let e = err(
        "providers:\n  m:\n    type: microsoft\n    tenant: t\n    client_id: x\n    on_reauth_needed: [x]\n",
    );
    assert!(e.contains("unknown field `on_reauth_needed`"), "{e}");
}
