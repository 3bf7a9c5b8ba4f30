//! `authbridge login` against the sandbox, through the real binary: the authorization-code flow with
//! PKCE end to end (this test plays the browser), `--paste`, and the device-code flow (pending →
//! slow_down → approved, declined, expired). Also: a wrong `state` or PKCE verifier is refused, the
//! local password is never asked for, and a running authbridge uses the new token without a restart.

mod common;
mod oauth;

use std::time::{Duration, Instant};

use authbridge::secret::SecretString;
use authbridge::token::{ErrorKind, Pkce, authorize_url, random_state};
use common::*;
use oauth::*;
use sandbox::{SandboxOptions, TokenFailure};

fn as_refs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

fn stored_token(env: &Env) -> Option<String> {
    authbridge::server::token_store(&env.config())
        .unwrap()
        .load("tickets")
        .unwrap()
        .map(|t| t.refresh_token.expose().clone())
}

fn remove_stored_token(env: &Env) {
    let path = authbridge::server::token_store(&env.config())
        .unwrap()
        .path("tickets")
        .unwrap();
    std::fs::remove_file(path).unwrap();
}

/// The SMTP login reply (last line) for USER/PASSWORD at `addr`.
async fn smtp_login(addr: std::net::SocketAddr) -> String {
    let mut c = LineClient::connect(addr).await;
    c.code().await;
    c.cmd("EHLO test.local").await;
    let blob = b64(format!("\0{USER}\0{PASSWORD}").as_bytes());
    let r = c.cmd(&format!("AUTH PLAIN {blob}")).await;
    let _ = c.cmd("QUIT").await;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_flow_end_to_end_and_a_running_proxy_picks_the_token_up() {
    let env = Env::start().await;
    let port = enable_browser_login(&env);
    // No token yet: clients get a temporary failure, status says what to run.
    remove_stored_token(&env);
    let r = smtp_login(env.addr("smtp")).await;
    assert!(r.starts_with("454 4.7.0"), "{r}");
    let (code, out) = status(&env.config_path);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(
            "state=needs login: no refresh token stored yet — run `authbridge login tickets`"
        ),
        "{out}"
    );

    let mut login = spawn(&["login", "tickets"], &env.config_path);
    let url = login.line_with("/authorize?").await.trim().to_string();
    login
        .line_with(&format!("ssh -L {port}:localhost:{port}"))
        .await;
    assert!(
        url.contains("code_challenge_method=S256") && url.contains("state="),
        "{url}"
    );
    assert!(
        !login.output.contains(PASSWORD),
        "the local password plays no part"
    );

    // A redirect with a wrong state (another tab, a forged link) is refused and not exchanged; other
    // paths are 404; the login keeps waiting.
    let forged = http_get(
        &format!("http://127.0.0.1:{port}/callback?code=forged-code&state=wrong"),
        None,
    )
    .await;
    assert_eq!(forged.status, 400, "{}", forged.body);
    assert!(forged.body.contains("state mismatch"), "{}", forged.body);
    let favicon = http_get(&format!("http://127.0.0.1:{port}/favicon.ico"), None).await;
    assert_eq!(favicon.status, 404);

    // The browser: authorize at the sandbox, follow the redirect to the loopback callback.
    let authorize = http_get(&url, Some(env.sandbox.client_config())).await;
    assert_eq!(authorize.status, 302, "{}", authorize.body);
    let callback = authorize.location.unwrap();
    assert!(
        callback.starts_with(&format!("http://localhost:{port}/callback?code=")),
        "{callback}"
    );
    let page = http_get(&callback, None).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("account tickets is authorised"),
        "{}",
        page.body
    );
    let (code, out) = login.finish(Duration::from_secs(30)).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("ignored a redirect whose state does not match"),
        "{out}"
    );
    assert!(out.contains("no restart needed"), "{out}");
    let counters = env.sandbox.token_requests();
    assert_eq!(
        counters.authorization_code, 1,
        "only the real code was exchanged"
    );
    let rt = stored_token(&env).expect("a refresh token is stored");
    assert!(!out.contains(&rt), "the refresh token is never printed");
    let code_value = callback
        .split("code=")
        .nth(1)
        .and_then(|c| c.split('&').next())
        .unwrap();
    assert!(
        !out.contains(code_value),
        "the authorization code is never printed"
    );

    // The proxy started before the login serves with the new token: no restart.
    let r = smtp_send(env.addr("smtp"), "after login", 1).await;
    assert!(r.starts_with("250"), "{r}");
    let (code, out) = status(&env.config_path);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("state=ok"), "{out}");

    // Re-running login replaces the token (a new family).
    let (code, out) = browser_login(&env, "tickets").await;
    assert_eq!(code, Some(0), "{out}");
    assert_ne!(stored_token(&env).unwrap(), rt);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pkce_verifier_and_reused_code_are_refused() {
    let env = Env::start().await;
    enable_browser_login(&env);
    let before = stored_token(&env).unwrap();
    let config = env.config();
    let provider = config.account("tickets").unwrap().provider.clone();
    let manager = authbridge::server::token_manager(&config).unwrap();
    let redirect = provider.redirect_uri.clone().unwrap();
    let code_for = |pkce: &Pkce| {
        let url = authorize_url(
            &provider,
            &redirect,
            &random_state().unwrap(),
            pkce,
            Some(MAILBOX),
        )
        .unwrap();
        let sb = env.sandbox.client_config();
        async move {
            let r = http_get(&url, Some(sb)).await;
            let loc = r.location.unwrap();
            let q = loc.split_once('?').unwrap().1.to_string();
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "code")
                .unwrap()
                .1
                .into_owned()
        }
    };
    let right = Pkce::generate().unwrap();
    let code = code_for(&right).await;
    let wrong = Pkce::from_verifier(SecretString::from(
        "a-different-verifier-of-enough-length-0123",
    ));
    let params = |verifier: &SecretString| {
        vec![
            ("grant_type".to_string(), "authorization_code".to_string()),
            ("code".to_string(), code.clone()),
            ("redirect_uri".to_string(), redirect.clone()),
            ("code_verifier".to_string(), verifier.expose().clone()),
        ]
    };

    let p = params(&wrong.verifier);
    let err = manager
        .exchange_and_store("tickets", &as_refs(&p))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent, "{err}");
    assert_eq!(err.aadsts, Some(50148), "{err}");
    assert_eq!(
        stored_token(&env).unwrap(),
        before,
        "a refused exchange stores nothing"
    );

    // The right verifier works once; the same code again is AADSTS54005 with a login hint.
    let p = params(&right.verifier);
    manager
        .exchange_and_store("tickets", &as_refs(&p))
        .await
        .unwrap();
    let after = stored_token(&env).unwrap();
    assert_ne!(after, before);
    let err = manager
        .exchange_and_store("tickets", &as_refs(&p))
        .await
        .unwrap_err();
    assert_eq!(err.aadsts, Some(54005), "{err}");
    assert!(
        err.to_string().contains("run `authbridge login tickets`"),
        "{err}"
    );
    assert_eq!(stored_token(&env).unwrap(), after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paste_flow_and_a_pasted_address_from_another_attempt() {
    let env = Env::start().await;
    enable_browser_login(&env);
    let before = stored_token(&env).unwrap();

    // An address from another attempt (its state differs) is refused; nothing is exchanged.
    let mut login = spawn(&["login", "tickets", "--paste"], &env.config_path);
    let url = login.line_with("/authorize?").await.trim().to_string();
    login.line_with("paste it here").await;
    let other_attempt = url.replace("state=", "state=x");
    let r = http_get(&other_attempt, Some(env.sandbox.client_config())).await;
    login.write_stdin(&format!("{}\n", r.location.unwrap()));
    let (code, out) = login.finish(Duration::from_secs(30)).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("belongs to another login attempt"), "{out}");
    assert_eq!(env.sandbox.token_requests().authorization_code, 0);

    // The real one: the browser "fails to load" the loopback page; the user pastes the address.
    let mut login = spawn(&["login", "tickets", "--paste"], &env.config_path);
    let url = login.line_with("/authorize?").await.trim().to_string();
    let r = http_get(&url, Some(env.sandbox.client_config())).await;
    login.write_stdin(&format!("  {}  \n", r.location.unwrap()));
    let (code, out) = login.finish(Duration::from_secs(30)).await;
    assert_eq!(code, Some(0), "{out}");
    assert_ne!(stored_token(&env).unwrap(), before);

    // A refusal at the authorize endpoint (here: no such user signed in) is reported, not stored.
    let mut login = spawn(&["login", "tickets", "--paste"], &env.config_path);
    let url = login.line_with("/authorize?").await.trim().to_string();
    let state = url
        .split("state=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_string();
    login.write_stdin(&format!(
        "http://localhost/callback?error=access_denied&error_description=AADSTS65004%3A+User+declined&state={state}\n"
    ));
    let (code, out) = login.finish(Duration::from_secs(30)).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("the sign-in was refused: access_denied AADSTS65004"),
        "{out}"
    );
}

async fn device_env(interval_secs: u64, lifetime_secs: u64) -> Env {
    let env = Env::start_with(EnvOptions {
        sandbox: SandboxOptions {
            device_code_interval: Duration::from_secs(interval_secs),
            device_code_lifetime: Duration::from_secs(lifetime_secs),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    enable_browser_login(&env);
    env
}

/// Waits until the sandbox has seen more than `n` device-code polls; returns when.
async fn poll_after(env: &Env, n: u64) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if env.sandbox.token_requests().device_code > n {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "no device-code poll");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_code_pending_then_slow_down_then_approved() {
    let env = device_env(1, 900).await;
    let before = stored_token(&env).unwrap();
    let mut login = spawn(&["login", "tickets", "--device-code"], &env.config_path);
    login.line_with("/devicelogin").await;
    login.line_with("Waiting up to 15 min").await;
    let codes = env.sandbox.pending_device_codes();
    assert_eq!(codes.len(), 1);
    assert!(
        login.output.contains(&codes[0]),
        "the user code is printed: {}",
        login.output
    );

    // Pending: the first poll comes after the interval, and gets authorization_pending.
    poll_after(&env, 0).await;
    // The next poll is answered with slow_down: from then on the interval is 1 + 5 s.
    env.sandbox.inject_times(TokenFailure::SlowDown, 1);
    let slowed = poll_after(&env, 1).await;
    assert!(env.sandbox.approve_device_code(&codes[0], MAILBOX));
    let next = poll_after(&env, 2).await;
    let gap = next - slowed;
    assert!(
        gap >= Duration::from_millis(5500),
        "slow_down honoured: {gap:?}"
    );
    let (code, out) = login.finish(Duration::from_secs(30)).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("poll more slowly; polling every 6 s"), "{out}");
    assert!(out.contains("is authorised"), "{out}");
    assert_eq!(env.sandbox.token_requests().device_code, 3);
    assert_ne!(stored_token(&env).unwrap(), before);
    let r = smtp_send(env.addr("smtp"), "after device login", 1).await;
    assert!(r.starts_with("250"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_code_declined_and_expired() {
    let env = device_env(1, 4).await;
    let before = stored_token(&env).unwrap();

    let mut login = spawn(&["login", "tickets", "--device-code"], &env.config_path);
    login.line_with("/devicelogin").await;
    let codes = env.sandbox.pending_device_codes();
    assert!(env.sandbox.deny_device_code(&codes[0]));
    let (code, out) = login.finish(Duration::from_secs(30)).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("the sign-in was declined at the verification page; run `authbridge login tickets --device-code` again"),
        "{out}"
    );

    // Nobody acts within the code's 4 s: a clear message, well within a few seconds of expiry.
    let started = Instant::now();
    let login = spawn(&["login", "tickets", "--device-code"], &env.config_path);
    let (code, out) = login.finish(Duration::from_secs(30)).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("the code expired before the sign-in was completed"),
        "{out}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        stored_token(&env).unwrap(),
        before,
        "a failed login keeps the old token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_usage_errors() {
    let env = Env::start_with(EnvOptions {
        app_only: true,
        ..Default::default()
    })
    .await;
    let out = bin()
        .args(["login", "nobody", "--config"])
        .arg(&env.config_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no account named `nobody`"));
    let out = bin()
        .args(["login", "tickets", "--config"])
        .arg(&env.config_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("client_credentials (app-only): there is nothing to log in"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bin()
        .args(["login", "tickets", "--paste", "--device-code", "--config"])
        .arg(&env.config_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callback_port_in_use_is_a_clear_error() {
    let env = Env::start().await;
    let port = enable_browser_login(&env);
    let _busy = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let login = spawn(&["login", "tickets"], &env.config_path);
    let (code, out) = login.finish(Duration::from_secs(30)).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("port {port} is already in use")),
        "{out}"
    );
    assert!(out.contains("--paste"), "{out}");
}
