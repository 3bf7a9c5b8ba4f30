//! The admin page in a real browser: headless Chromium driven through chromedriver (WebDriver).
//! authbridge runs against the sandbox with a delegated account that has no token. The browser
//! opens the page and sees `needs login`, clicks Authorise, goes through the sandbox's authorize
//! endpoint and back to `/callback`, returns to the page and sees `ok` (the page's script
//! updates it); then a mail goes through authbridge for that account, with no restart. A
//! screenshot of the page is saved as `target/admin-page.png`.
//!
//! Needs Debian's `chromium` and `chromium-driver`: under `CI=true` their absence fails the test,
//! elsewhere it is skipped with one line.

mod common;
mod oauth;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use oauth::*;

const CHROMIUM: &str = "chromium";
const CHROMEDRIVER: &str = "chromedriver";

/// The SMTP AUTH reply for USER/PASSWORD at `addr`.
async fn smtp_auth(addr: SocketAddr) -> String {
    let mut c = LineClient::connect(addr).await;
    c.code().await;
    c.cmd("EHLO test.local").await;
    let blob = b64(format!("\0{USER}\0{PASSWORD}").as_bytes());
    let r = c.cmd(&format!("AUTH PLAIN {blob}")).await;
    let _ = c.cmd("QUIT").await;
    r
}

/// A program on PATH, if it runs.
fn tool(name: &str) -> Option<PathBuf> {
    let ok = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return None;
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// chromedriver in its own process group; the group (chromedriver and any browser it started)
/// is killed on drop, also when the test fails half-way.
struct Driver {
    child: Child,
    addr: SocketAddr,
}

impl Driver {
    fn start() -> Driver {
        use std::os::unix::process::CommandExt;
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        Driver {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(self.addr).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver, chromium: &Path, profile: &Path) -> Client {
    let caps = serde_json::json!({
        "acceptInsecureCerts": true,
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--window-size=1000,1500",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://{}", driver.addr))
        .await
        .expect("a WebDriver session with headless Chromium")
}

/// The text of `css` once `want` holds for it (polling: the page's script updates it).
async fn wait_text(c: &Client, css: &str, want: impl Fn(&str) -> bool, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = String::new();
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(t) = e.text().await
        {
            if want(&t) {
                return t;
            }
            last = t;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: `{css}` still says {last:?} after 90 s; page: {}",
            c.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorise_in_headless_chromium() {
    let (Some(chromium), Some(_)) = (tool(CHROMIUM), tool(CHROMEDRIVER)) else {
        missing_tool("chromium and chromium-driver", "admin_browser");
        return;
    };
    // authbridge with a delegated account that has no token yet, and the admin page.
    let mut env = Env::start().await;
    env.stop_proxy().await;
    let stored = authbridge::server::token_store(&env.config())
        .unwrap()
        .path("tickets")
        .unwrap();
    std::fs::remove_file(stored).unwrap();
    enable_browser_login(&env);
    patch_top(&env.config_path, "admin: { listen: 127.0.0.1:0 }");
    env.start_proxy().await;
    let admin = env.running.as_ref().unwrap().admin_addr.unwrap();
    let page = format!("http://localhost:{}/", admin.port());
    let r = smtp_auth(env.addr("smtp")).await;
    assert!(r.starts_with("454"), "no token yet, no login: {r}");

    let driver = Driver::start();
    driver.ready().await;
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, &chromium, profile.path()).await;

    c.goto(&page).await.unwrap();
    let state = r#"[data-account="tickets"] [data-field="state"]"#;
    let text = wait_text(&c, state, |t| !t.is_empty(), "the page").await;
    assert!(text.starts_with("needs login"), "{text}");
    let redirect = c.find(Locator::Css("code.redirect")).await.unwrap();
    assert_eq!(
        redirect.text().await.unwrap(),
        format!("http://localhost:{}/callback", admin.port())
    );

    // Authorise → the sandbox's authorize endpoint (it signs the mailbox in at once) → back
    // to /callback.
    c.find(Locator::Css(r#"form[action="/authorise"] button"#))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let message = wait_text(
        &c,
        "#message",
        |t| t.contains("authorised") || t.contains("did not complete"),
        "the callback page",
    )
    .await;
    assert!(
        message.contains("Account tickets is authorised"),
        "{message}"
    );
    assert_eq!(c.current_url().await.unwrap().path(), "/callback");

    // Back on the page: `ok`, with the sign-in noted.
    c.find(Locator::Id("back"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, state, |t| t == "ok", "the account after the sign-in").await;
    let signed = wait_text(
        &c,
        r#"[data-account="tickets"] [data-field="sign_in"]"#,
        |t| t.contains("authorised from this page"),
        "the sign-in note",
    )
    .await;
    assert!(signed.contains("UTC"), "{signed}");

    // A mail through authbridge for that account, on the server that was running all along.
    let r = smtp_send(env.addr("smtp"), "after the admin page sign-in", 1).await;
    assert!(r.starts_with("250"), "{r}");
    // The page's script picks up the login count without a reload.
    wait_text(
        &c,
        r#"[data-listener="smtp"] [data-field="logins_ok"]"#,
        |t| t.parse::<u64>().is_ok_and(|n| n >= 1),
        "the listener's login count",
    )
    .await;

    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("admin-page.png");
    std::fs::write(&target, &png).unwrap();
    eprintln!("admin_browser: screenshot saved as {}", target.display());
    c.close().await.unwrap();
    drop(driver);
}
