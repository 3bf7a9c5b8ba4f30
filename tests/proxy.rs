//! Token requests through a real forward proxy (Debian's `tinyproxy`, on loopback with its own
//! config, port and log in a temp dir).
//!
//! How "direct connections are blocked" is made true: tinyproxy is told to open its outgoing
//! connections from 127.0.0.2 (`Bind`), and the sandbox's token service accepts connections only
//! from that source address; authbridge itself connects from 127.0.0.1. So a request that did not
//! go through the proxy cannot get an answer, and the proxy's log shows each CONNECT.
//!
//! Covered: config proxy (success, seen in the log; direct connection refused), `proxy: none`,
//! `HTTPS_PROXY` from the environment (through the real binary's `check`), 407 without
//! credentials and success with them, a proxy that refuses connections; proxy failures are
//! transient and name the proxy, never its password.

mod common;

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use authbridge::secret::SecretString;
use authbridge::token::{
    CredentialKind, ErrorKind, ProviderConfig, ProxyConfig, ProxySetting, TokenManager,
};
use sandbox::{Sandbox, SandboxOptions};

const CLIENT_ID: &str = "77777777-2222-3333-4444-555555555555";
const CLIENT_SECRET: &str = "proxy-test-client-secret";
const MAILBOX: &str = "tickets@contoso.com";
const PROXY_USER: &str = "egress";
const PROXY_PASSWORD: &str = "Pr0xy-Passw0rd-never-logged";
/// tinyproxy's outgoing source address, the only one the token service accepts.
const PROXY_SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// The tinyproxy binary, or `None` (then the test is skipped locally; in CI it fails).
fn tinyproxy() -> Option<&'static str> {
    for path in ["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"] {
        if Path::new(path).exists() {
            return Some(path);
        }
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("tinyproxy is not installed (apt-get install tinyproxy-bin)");
    }
    println!("skipped: tinyproxy is not installed (apt-get install tinyproxy-bin)");
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running tinyproxy, killed on drop.
struct Proxy {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Proxy {
    fn start(binary: &str, basic_auth: bool) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("tinyproxy.log");
        for _ in 0..5 {
            let port = free_port();
            let conf = dir.path().join("tinyproxy.conf");
            let auth = if basic_auth {
                format!("BasicAuth {PROXY_USER} {PROXY_PASSWORD}\n")
            } else {
                String::new()
            };
            // No ConnectPort line: CONNECT to any port (the sandbox's is random).
            std::fs::write(
                &conf,
                format!(
                    "Port {port}\nListen 127.0.0.1\nBind {PROXY_SOURCE}\nTimeout 30\n\
                     LogFile \"{}\"\nLogLevel Info\nMaxClients 20\nAllow 127.0.0.1\n{auth}",
                    log.display()
                ),
            )
            .unwrap();
            let mut child = Command::new(binary)
                .arg("-d")
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Proxy {
                        child,
                        port,
                        log,
                        _dir: dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // The port was taken in between (or tinyproxy failed): try another.
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "tinyproxy did not start (log: {})",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn sandbox() -> Sandbox {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sb.add_client(CLIENT_ID, CLIENT_SECRET, &[MAILBOX]);
    sb.set_token_allowed_peers(Some(&[PROXY_SOURCE]));
    sb
}

fn provider(sb: &Sandbox, proxy: ProxySetting) -> Arc<ProviderConfig> {
    common::app_provider(
        sb,
        CLIENT_ID,
        CredentialKind::ClientSecret,
        Some(CLIENT_SECRET),
        None,
        proxy,
    )
}

fn manager(provider: Arc<ProviderConfig>) -> (Arc<TokenManager>, tempfile::TempDir) {
    common::app_manager(provider, MAILBOX)
}

fn configured(proxy: &Proxy, credentials: bool) -> ProxySetting {
    ProxySetting::Configured(ProxyConfig {
        url: url::Url::parse(&proxy.url()).unwrap(),
        username: credentials.then(|| PROXY_USER.to_owned()),
        password: credentials.then(|| SecretString::from(PROXY_PASSWORD)),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_requests_go_through_the_configured_proxy_only() {
    let Some(bin) = tinyproxy() else { return };
    common::log_capture();
    let sb = sandbox().await;
    let proxy = Proxy::start(bin, false);

    // Direct: the token service does not answer connections that skip the proxy.
    let (m, _d) = manager(provider(&sb, ProxySetting::Direct));
    let e = m.refresh_now("tickets").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(e.message.contains("cannot reach the token endpoint"), "{e}");
    assert!(!e.message.contains("proxy"), "no proxy was configured: {e}");

    // Through tinyproxy: a token, and tinyproxy logged the CONNECT to the token service.
    let (m, _d) = manager(provider(&sb, configured(&proxy, false)));
    let t = m.access_token("tickets").await.unwrap();
    assert!(!t.token.expose().is_empty());
    let port = sb.token_addr().port();
    let log = proxy.log();
    assert!(
        log.contains("CONNECT") && log.contains(&format!(":{port}")),
        "tinyproxy's log shows no CONNECT to the token service:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_authentication_407_then_success_with_credentials() {
    let Some(bin) = tinyproxy() else { return };
    common::log_capture();
    let sb = sandbox().await;
    let proxy = Proxy::start(bin, true);

    let (m, _d) = manager(provider(&sb, configured(&proxy, false)));
    let e = m.refresh_now("tickets").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(e.message.contains(&proxy.url()), "names the proxy: {e}");
    assert!(e.message.contains("407"), "says 407: {e}");

    let (m, _d) = manager(provider(&sb, configured(&proxy, true)));
    m.access_token("tickets").await.unwrap();
    assert!(proxy.log().contains("CONNECT"), "{}", proxy.log());
    assert!(
        !common::log_capture().text().contains(PROXY_PASSWORD),
        "the proxy password reached the logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_refuses_connections_is_transient_and_named() {
    common::log_capture();
    let sb = sandbox().await;
    let port = free_port();
    let setting = ProxySetting::Configured(ProxyConfig {
        url: url::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
        username: Some(PROXY_USER.to_owned()),
        password: Some(SecretString::from(PROXY_PASSWORD)),
    });
    let (m, _d) = manager(provider(&sb, setting));
    let e = m.refresh_now("tickets").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(
        e.message
            .contains(&format!("proxy http://127.0.0.1:{port}/")),
        "names the proxy: {e}"
    );
    assert!(!e.to_string().contains(PROXY_PASSWORD));
    assert!(!common::log_capture().text().contains(PROXY_PASSWORD));
}

/// The real binary: `HTTPS_PROXY` (with credentials in it) from the environment, a certificate
/// credential, `authbridge check` gets a token through tinyproxy and names both; the password in
/// the variable never shows up in its output or logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_uses_https_proxy_from_the_environment() {
    let Some(bin) = tinyproxy() else { return };
    let sb = sandbox().await;
    let proxy = Proxy::start(bin, true);
    let dir = tempfile::tempdir().unwrap();
    let key = format!(
        "{}/tests/data/assertion/app.key",
        env!("CARGO_MANIFEST_DIR")
    );
    let key_pair = rcgen::KeyPair::from_pem(&std::fs::read_to_string(&key).unwrap()).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["app".to_owned()])
        .unwrap()
        .self_signed(&key_pair)
        .unwrap()
        .pem();
    std::fs::write(dir.path().join("app.pem"), &cert).unwrap();
    sb.add_certificate_client(CLIENT_ID, &cert, &[MAILBOX]);
    sb.write_ca(&dir.path().join("ca.pem")).unwrap();
    let config = dir.path().join("authbridge.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: ./state\nproviders:\n  m365:\n    type: microsoft\n    tenant: {tenant}\n    \
             client_id: {CLIENT_ID}\n    client_certificate: {{ cert: app.pem, key: {key} }}\n    \
             flow: client_credentials\n    token_url: {token_url}\n    ca_file: ca.pem\n\
             accounts:\n  - name: tickets\n    provider: m365\n    mailbox: {MAILBOX}\n\
             listeners:\n  - name: smtp\n    protocol: smtp\n    listen: 127.0.0.1:0\n    \
             upstream: {{ host: 127.0.0.1, port: {smtp}, tls: starttls, ca_file: ca.pem }}\n",
            tenant = sb.tenant(),
            token_url = sb.token_url(),
            smtp = sb.smtp_addr().port(),
        ),
    )
    .unwrap();
    let run = |proxy_env: Option<String>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_authbridge"));
        cmd.arg("check").arg("--config").arg(&config);
        for v in [
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
            "ALL_PROXY",
            "all_proxy",
            "NO_PROXY",
            "no_proxy",
        ] {
            cmd.env_remove(v);
        }
        cmd.env("RUST_LOG", "trace");
        if let Some(p) = proxy_env {
            cmd.env("https_proxy", p);
        }
        let out = cmd.output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    // No proxy in the environment: the token service (proxy sources only) cannot be reached.
    let out = run(None);
    assert!(
        out.contains("account tickets: FAILED: could not get a token"),
        "{out}"
    );
    assert!(out.contains("no HTTPS_PROXY/HTTP_PROXY set"), "{out}");

    let with_credentials = format!(
        "http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{}",
        proxy.port
    );
    let out = run(Some(with_credentials));
    assert!(out.contains("account tickets: token OK"), "{out}");
    assert!(
        out.contains("credential client_certificate")
            && out.contains(&format!(
                "proxy http://127.0.0.1:{}/ (from https_proxy",
                proxy.port
            )),
        "{out}"
    );
    assert!(
        !out.contains(PROXY_PASSWORD),
        "the proxy password was printed:\n{out}"
    );
    assert!(proxy.log().contains("CONNECT"), "{}", proxy.log());
}
