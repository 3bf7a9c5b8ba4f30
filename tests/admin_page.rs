//! The admin page (`/` on the admin listener) against the sandbox, over real loopback sockets,
//! with this test playing the browser: the `Host` check (421), CSRF (missing cookie, missing or
//! wrong token, foreign `Origin`: 403), cookie flags, the security headers on every response,
//! bounded form bodies, the password (wrong refused, throttled; TLS with `Secure` cookies), no
//! secret in the HTML, JSON or script, the listener counters, and both sign-ins: Authorise
//! (authorization code + PKCE back to `/callback`: state single use and bound to the browser)
//! and the device code — after which the running server serves mail with the new token.

mod common;
mod oauth;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use oauth::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP response as text.
#[derive(Debug)]
struct Resp {
    status: u16,
    head: String,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<String> {
        self.headers(name).into_iter().next()
    }

    fn headers(&self, name: &str) -> Vec<String> {
        self.head
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
            .collect()
    }

    /// `name=value` of a Set-Cookie for `name`.
    fn cookie(&self, name: &str) -> Option<String> {
        self.headers("set-cookie")
            .into_iter()
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(|c| c.split(';').next().unwrap().to_string())
    }
}

/// The page's client: plain HTTP, or HTTPS trusting `tls`.
#[derive(Clone)]
struct Client {
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Client {
    async fn send(&self, method: &str, path: &str, host: &str, extra: &str, body: &str) -> Resp {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}{}\r\n{body}",
            if (body.is_empty() && method != "POST") || extra.contains("Transfer-Encoding") {
                String::new()
            } else {
                format!("Content-Length: {}\r\n", body.len())
            }
        );
        let mut raw = Vec::new();
        match &self.tls {
            None => {
                let mut s = tcp;
                s.write_all(req.as_bytes()).await.unwrap();
                let _ =
                    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw)).await;
            }
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let mut s = tokio_rustls::TlsConnector::from(Arc::clone(tls))
                    .connect(name, tcp)
                    .await
                    .unwrap();
                s.write_all(req.as_bytes()).await.unwrap();
                let _ =
                    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw)).await;
            }
        }
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        Resp {
            status: head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            head: head.to_string(),
            body: body.to_string(),
        }
    }

    fn host(&self) -> String {
        format!("localhost:{}", self.addr.port())
    }

    async fn get(&self, path: &str, cookie: &str) -> Resp {
        let extra = if cookie.is_empty() {
            String::new()
        } else {
            format!("Cookie: {cookie}\r\n")
        };
        self.send("GET", path, &self.host(), &extra, "").await
    }

    async fn post(&self, path: &str, cookie: &str, form: &str) -> Resp {
        let mut extra = "Content-Type: application/x-www-form-urlencoded\r\n".to_string();
        if !cookie.is_empty() {
            extra.push_str(&format!("Cookie: {cookie}\r\n"));
        }
        self.send("POST", path, &self.host(), &extra, form).await
    }

    /// A fresh session: its cookie (`name=value`) and CSRF token, from `GET /`.
    async fn session(&self) -> (String, String) {
        let r = self.get("/", "").await;
        assert_eq!(r.status, 200, "{r:?}");
        let cookie = r.cookie("authbridge_session").expect("a session cookie");
        (cookie, csrf_of(&r.body))
    }
}

/// The sign-in link of the page Authorise answers with (HTML-unescaped).
fn continue_url(html: &str) -> String {
    let at = html.find("id=\"continue\"").expect("a continue link");
    let href = html[at..].find("href=\"").unwrap() + at + 6;
    html[href..]
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&")
}

fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[at..].split('"').next().unwrap().to_string()
}

/// The environment with the account's stored token removed (it needs a login), the browser and
/// device-code endpoints set, and an admin listener on 127.0.0.1:0 with `admin_yaml` extra.
async fn page_env(admin_yaml: &str, keep_token: bool) -> (Env, Client) {
    // Every test of this binary logs at TRACE into one capture, grepped for secrets.
    log_capture();
    let mut env = Env::start().await;
    env.stop_proxy().await;
    if !keep_token {
        let path = authbridge::server::token_store(&env.config())
            .unwrap()
            .path("tickets")
            .unwrap();
        std::fs::remove_file(path).unwrap();
    }
    enable_browser_login(&env);
    patch_top(
        &env.config_path,
        &format!("admin: {{ listen: 127.0.0.1:0{admin_yaml} }}"),
    );
    env.start_proxy().await;
    let addr = env.running.as_ref().unwrap().admin_addr.unwrap();
    (env, Client { addr, tls: None })
}

async fn state_json(c: &Client, cookie: &str) -> serde_json::Value {
    let r = c.get("/api/state", cookie).await;
    assert_eq!(r.status, 200, "{r:?}");
    serde_json::from_str(&r.body).unwrap()
}

async fn account_state(c: &Client, cookie: &str) -> String {
    state_json(c, cookie).await["accounts"][0]["state"]
        .as_str()
        .unwrap()
        .to_string()
}

const HEADERS: [(&str, &str); 5] = [
    ("content-security-policy", authbridge::admin::CSP),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("x-content-type-options", "nosniff"),
    ("cache-control", "no-store"),
];

fn assert_secured(r: &Resp, what: &str) {
    for (name, value) in HEADERS {
        assert_eq!(
            r.header(name).as_deref(),
            Some(value),
            "{what}: {name}\n{}",
            r.head
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_csrf_cookies_headers_and_bounds() {
    let (env, c) = page_env("", false).await;

    // Every response carries the security headers: page, script, style, JSON, probes, 404.
    let (cookie, csrf) = c.session().await;
    for path in [
        "/",
        "/static/admin.js",
        "/static/admin.css",
        "/api/state",
        "/healthz",
        "/nope",
    ] {
        let r = c.get(path, &cookie).await;
        assert_secured(&r, path);
    }
    let js = c.get("/static/admin.js", "").await;
    assert_eq!(
        js.header("content-type").as_deref(),
        Some("text/javascript; charset=utf-8")
    );
    let css = c.get("/static/admin.css", "").await;
    assert_eq!(
        css.header("content-type").as_deref(),
        Some("text/css; charset=utf-8")
    );
    // No inline script or style on the page.
    let page = c.get("/", &cookie).await;
    assert!(
        page.body
            .contains("<script src=\"/static/admin.js\" defer></script>")
    );
    assert!(
        !page.body.contains("<script>")
            && !page.body.contains("<style")
            && !page.body.contains(" style=")
    );

    // The session cookie: HttpOnly, SameSite=Strict, whole site, not Secure over plain HTTP.
    let fresh = c.get("/", "").await;
    let set = fresh.header("set-cookie").unwrap();
    assert!(set.contains("; Path=/; HttpOnly; SameSite=Strict"), "{set}");
    assert!(!set.contains("Secure"), "{set}");

    // Host: another name (DNS rebinding) is refused on every page path, with or without a
    // session; the probes still answer any Host.
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/api/state"),
        ("GET", "/callback?state=x"),
        ("POST", "/device"),
    ] {
        for host in [
            "evil.example",
            "evil.example:9925",
            "localhost.evil.example",
            "",
        ] {
            let r = c
                .send(
                    method,
                    path,
                    host,
                    &format!(
                        "Cookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                    ),
                    &format!("account=tickets&csrf={csrf}"),
                )
                .await;
            assert_eq!(r.status, 421, "{method} {path} Host {host}: {r:?}");
            assert_secured(&r, "421");
        }
    }
    assert_eq!(c.send("GET", "/healthz", "a", "", "").await.status, 200);
    for host in ["127.0.0.1", "[::1]:1234", "LOCALHOST"] {
        assert_eq!(c.send("GET", "/", host, "", "").await.status, 200, "{host}");
    }

    // CSRF: no cookie, a forged cookie, no token, a wrong token, a foreign Origin → 403, and
    // nothing was started.
    let form = |t: &str| format!("account=tickets&csrf={t}");
    let refused = [
        c.post("/device", "", &form(&csrf)).await,
        c.post("/device", "authbridge_session=forged", &form(&csrf)).await,
        c.post("/device", &cookie, "account=tickets").await,
        c.post("/device", &cookie, &form("wrong")).await,
        c.post("/authorise", &cookie, &form(&format!("{csrf}x"))).await,
        c.send(
            "POST",
            "/device",
            &c.host(),
            &format!("Cookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nOrigin: http://evil.example\r\n"),
            &form(&csrf),
        )
        .await,
        c.send(
            "POST",
            "/device",
            &c.host(),
            &format!("Cookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nSec-Fetch-Site: cross-site\r\n"),
            &form(&csrf),
        )
        .await,
        // Another port on localhost is the same site, not the same origin.
        c.send(
            "POST",
            "/device",
            &c.host(),
            &format!("Cookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nSec-Fetch-Site: same-site\r\nOrigin: http://localhost:1\r\n"),
            &form(&csrf),
        )
        .await,
    ];
    for (i, r) in refused.iter().enumerate() {
        assert_eq!(r.status, 403, "case {i}: {r:?}");
        assert_secured(r, "403");
    }
    assert!(
        refused[3]
            .body
            .contains("security token is missing or wrong"),
        "{}",
        refused[3].body
    );
    assert_eq!(
        env.sandbox.pending_device_codes().len(),
        0,
        "a refused POST started nothing"
    );
    // GET on a POST endpoint: 405; a form that is too large: 413; not a form: 415.
    assert_eq!(c.get("/device", &cookie).await.status, 405);
    let big = format!("account=tickets&csrf={csrf}&pad={}", "x".repeat(8 * 1024));
    assert_eq!(c.post("/device", &cookie, &big).await.status, 413);
    // Also without Content-Length: a chunked body is cut at the cap.
    let chunk = "x".repeat(6 * 1024);
    let chunked = format!("{:x}\r\n{chunk}\r\n0\r\n\r\n", chunk.len());
    let r = c
        .send(
            "POST",
            "/device",
            &c.host(),
            &format!("Cookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n"),
            &chunked,
        )
        .await;
    assert_eq!(r.status, 413, "{r:?}");
    let r = c
        .send(
            "POST",
            "/device",
            &c.host(),
            &format!("Cookie: {cookie}\r\nContent-Type: application/json\r\n"),
            "{}",
        )
        .await;
    assert_eq!(r.status, 415);
    // The right token from the page's own origin goes through.
    let r = c
        .send(
            "POST",
            "/device",
            &c.host(),
            &format!(
                "Cookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nOrigin: http://{}\r\nSec-Fetch-Site: same-origin\r\n",
                c.host()
            ),
            &form(&csrf),
        )
        .await;
    assert_eq!(r.status, 303, "{r:?}");
    assert_eq!(env.sandbox.pending_device_codes().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorise_with_the_browser_flow_then_mail_goes_through() {
    let (env, c) = page_env("", false).await;
    let (cookie, csrf) = c.session().await;
    let page = c.get("/", &cookie).await;
    assert!(
        page.body
            .contains("needs login: no refresh token stored yet"),
        "{}",
        page.body
    );
    let redirect_uri = format!("http://localhost:{}/callback", c.addr.port());
    assert!(
        page.body.contains(&redirect_uri),
        "the page shows the redirect URI to register"
    );
    assert!(account_state(&c, &cookie).await.starts_with("needs login"));

    // Authorise: a link on to the authorize endpoint with PKCE, state and our /callback, and a
    // binding cookie for /callback only (Lax: the provider's redirect is cross-site).
    let r = c
        .post(
            "/authorise",
            &cookie,
            &format!("account=tickets&csrf={csrf}"),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let url = continue_url(&r.body);
    assert!(url.starts_with(&env.sandbox.authorize_url()), "{url}");
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    let set = r.headers("set-cookie").join("\n");
    assert!(
        set.contains("; Path=/callback; HttpOnly; SameSite=Lax; Max-Age=600"),
        "{set}"
    );
    let flow = r.cookie("authbridge_flow").unwrap();

    // The provider sends the browser back to /callback.
    let back = http_get(&url, Some(env.sandbox.client_config())).await;
    assert_eq!(back.status, 302, "{}", back.body);
    let callback = back.location.unwrap();
    assert!(callback.starts_with(&redirect_uri), "{callback}");
    let path = &callback[callback.find("/callback").unwrap()..];

    // Another browser (no binding cookie) cannot complete it — and the state is spent.
    let stolen = c.get(path, "").await;
    assert_eq!(stolen.status, 400, "{stolen:?}");
    assert!(
        stolen.body.contains("started in another browser"),
        "{}",
        stolen.body
    );
    let replay = c.get(path, &flow).await;
    assert_eq!(replay.status, 400);
    assert!(
        replay.body.contains("unknown, used or expired state"),
        "{}",
        replay.body
    );

    // Again, properly this time.
    let r = c
        .post(
            "/authorise",
            &cookie,
            &format!("account=tickets&csrf={csrf}"),
        )
        .await;
    let flow = r.cookie("authbridge_flow").unwrap();
    let back = http_get(&continue_url(&r.body), Some(env.sandbox.client_config())).await;
    let callback = back.location.unwrap();
    let path = &callback[callback.find("/callback").unwrap()..];
    let done = c.get(path, &flow).await;
    assert_eq!(done.status, 200, "{done:?}");
    assert!(
        done.body.contains("Account tickets is authorised"),
        "{}",
        done.body
    );
    assert_secured(&done, "callback");
    // Single use: the same redirect again is refused.
    assert_eq!(c.get(path, &flow).await.status, 400);

    // Nothing of the sign-in reaches the log, even at TRACE: not the code, the binding cookie,
    // the session or its CSRF token.
    let code = callback
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("code="))
        .unwrap()
        .to_string();
    let value = |c: &str| c.split_once('=').unwrap().1.to_string();
    assert_no_secrets(
        &log_capture().text(),
        &[
            code,
            value(&flow),
            value(&cookie),
            csrf.clone(),
            CLIENT_SECRET.to_string(),
        ],
    );

    // The page says ok at once, and the running server serves mail with the new token.
    assert_eq!(account_state(&c, &cookie).await, "ok");
    let page = c.get("/", &cookie).await;
    assert!(
        page.body.contains("authorised from this page"),
        "{}",
        page.body
    );
    let reply = smtp_send(env.addr("smtp"), "after the admin page", 1).await;
    assert!(reply.starts_with("250"), "{reply}");
    // The login was counted for the page's listener table (rolling hour).
    let s = state_json(&c, &cookie).await;
    let smtp = s["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "smtp")
        .unwrap();
    assert!(smtp["logins_ok"].as_u64().unwrap() >= 1, "{smtp}");
    assert_eq!(smtp["tls"], "none");
    assert_eq!(smtp["protocol"], "smtp");

    // At most 16 sign-ins wait at a time.
    for i in 0..16 {
        let r = c
            .post(
                "/authorise",
                &cookie,
                &format!("account=tickets&csrf={csrf}"),
            )
            .await;
        assert_eq!(r.status, 200, "sign-in {i}: {r:?}");
    }
    let r = c
        .post(
            "/authorise",
            &cookie,
            &format!("account=tickets&csrf={csrf}"),
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        r.body.contains("16 sign-ins are already under way"),
        "{}",
        r.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_code_from_the_page() {
    let (env, c) = page_env("", false).await;
    let (cookie, csrf) = c.session().await;
    let r = c
        .post("/device", &cookie, &format!("account=tickets&csrf={csrf}"))
        .await;
    assert_eq!(r.status, 303, "{r:?}");
    let codes = env.sandbox.pending_device_codes();
    assert_eq!(codes.len(), 1);
    let s = state_json(&c, &cookie).await;
    let device = &s["accounts"][0]["device"];
    assert_eq!(device["user_code"], codes[0].as_str());
    assert_eq!(device["state"], "waiting");
    assert!(c.get("/", &cookie).await.body.contains(&codes[0]));
    assert!(env.sandbox.approve_device_code(&codes[0], MAILBOX));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = state_json(&c, &cookie).await;
        if s["accounts"][0]["device"]["state"] == "done" {
            assert_eq!(s["accounts"][0]["state"], "ok");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the device code never completed: {s}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let reply = smtp_send(env.addr("smtp"), "after the device code", 1).await;
    assert!(reply.starts_with("250"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_secret_on_the_page_or_in_the_json() {
    let (env, c) = page_env("", true).await;
    let (cookie, _) = c.session().await;
    // A cached access token exists: fetch one as a session would.
    let running = env.running.as_ref().unwrap();
    let access = running.tokens.access_token("tickets").await.unwrap();
    let key = std::fs::read(env.state_dir().join("master.key")).unwrap();
    let mut forbidden = vec![
        CLIENT_SECRET.to_string(),
        PASSWORD.to_string(),
        password_hash().to_string(),
        env.refresh_token.clone().unwrap(),
        access.token.expose().clone(),
    ];
    use base64::Engine;
    forbidden.push(base64::engine::general_purpose::STANDARD.encode(&key));
    forbidden.push(String::from_utf8_lossy(&key).trim().to_string());
    let mut seen = String::new();
    for path in ["/", "/api/state", "/static/admin.js", "/static/admin.css"] {
        let r = c.get(path, &cookie).await;
        assert_eq!(r.status, 200, "{path}");
        seen.push_str(&r.head);
        seen.push_str(&r.body);
    }
    assert!(
        seen.contains("tickets@contoso.com") && seen.contains("\"state\":\"ok\""),
        "{seen}"
    );
    assert_no_secrets(&seen, &forbidden);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_and_tls() {
    let hash = authbridge::auth::hash_password(b"admin pass").unwrap();
    let (env, mut c) = page_env(
        &format!(", password_hash: \"{hash}\", cert: cert.pem, key: key.pem"),
        true,
    )
    .await;
    // Plain HTTP on a TLS listener gets nothing.
    let plain = c.get("/", "").await;
    assert_eq!(plain.status, 0, "{plain:?}");
    c.tls = Some(env.client_tls());
    let r = c.get("/", "").await;
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("type=\"password\""),
        "the login form: {}",
        r.body
    );
    assert!(
        !r.body.contains("tickets@contoso.com"),
        "nothing before the login"
    );
    let set = r.header("set-cookie").unwrap();
    assert!(set.contains("HttpOnly; SameSite=Strict; Secure"), "{set}");
    let cookie = r.cookie("authbridge_session").unwrap();
    let csrf = csrf_of(&r.body);
    // Not logged in: no state, no sign-in.
    assert_eq!(c.get("/api/state", &cookie).await.status, 401);
    assert_eq!(
        c.post("/device", &cookie, &format!("account=tickets&csrf={csrf}"))
            .await
            .status,
        403
    );
    // A wrong password is refused; the right one gives a new session id.
    let wrong = c
        .post("/login", &cookie, &format!("password=nope&csrf={csrf}"))
        .await;
    assert_eq!(wrong.status, 403, "{wrong:?}");
    assert!(wrong.body.contains("Wrong password"));
    let ok = c
        .post(
            "/login",
            &cookie,
            &format!("password=admin+pass&csrf={csrf}"),
        )
        .await;
    assert_eq!(ok.status, 303, "{ok:?}");
    let logged_in = ok.cookie("authbridge_session").unwrap();
    assert_ne!(logged_in, cookie, "a new session id on login");
    assert_eq!(
        c.get("/api/state", &cookie).await.status,
        401,
        "the old id is gone"
    );
    let s = state_json(&c, &logged_in).await;
    assert_eq!(
        s["redirect_uri"],
        format!("https://localhost:{}/callback", c.addr.port())
    );
    assert!(
        c.get("/", &logged_in)
            .await
            .body
            .contains("tickets@contoso.com")
    );
    // Guessing is throttled: after the limit even the right password is refused for a while.
    let (fresh, csrf) = c.session().await;
    let mut last = 0;
    for _ in 0..12 {
        last = c
            .post("/login", &fresh, &format!("password=guess&csrf={csrf}"))
            .await
            .status;
        if last == 429 {
            break;
        }
        assert_eq!(last, 403);
    }
    assert_eq!(last, 429, "wrong passwords are throttled");
    let value = |c: &str| c.split_once('=').unwrap().1.to_string();
    assert_no_secrets(
        &log_capture().text(),
        &[
            "admin pass".to_string(),
            "admin+pass".to_string(),
            hash.clone(),
            value(&logged_in),
            value(&fresh),
            csrf.clone(),
        ],
    );
    let r = c
        .post(
            "/login",
            &fresh,
            &format!("password=admin+pass&csrf={csrf}"),
        )
        .await;
    assert_eq!(r.status, 429, "{r:?}");
}

/// A non-loopback admin listener without a password, or without TLS, is refused when the
/// config loads (the binary's `check`/`run` path), with what to do.
#[test]
fn non_loopback_needs_password_and_tls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.yaml");
    let load = |yaml: &str| {
        std::fs::write(&path, yaml).unwrap();
        authbridge::config::Config::load(&path)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let e = load("admin: { listen: 0.0.0.0:9925 }\n").unwrap_err();
    assert!(
        e.contains("admin.password_hash") && e.contains("ssh -L"),
        "{e}"
    );
    let hash = authbridge::auth::hash_password(b"x").unwrap();
    let e = load(&format!(
        "admin: {{ listen: 0.0.0.0:9925, password_hash: \"{hash}\" }}\n"
    ))
    .unwrap_err();
    assert!(e.contains("admin.cert") && e.contains("in clear"), "{e}");
}
