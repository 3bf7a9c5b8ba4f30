//! Shared test harness: a sandbox (fake Entra ID + fake Exchange), an authbridge started
//! in-process against it on 127.0.0.1:0, and small line-oriented clients.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use authbridge::config::Config;
use authbridge::server::Running;
use sandbox::{Sandbox, SandboxOptions};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

pub const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
pub const CLIENT_SECRET: &str = "sandbox-client-secret-Zq8";
pub const MAILBOX: &str = "tickets@contoso.com";
pub const USER: &str = "glpi";
pub const PASSWORD: &str = "correct horse \"battery\" \\staple";

/// One argon2id hash of PASSWORD per test binary.
pub fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| authbridge::auth::hash_password(PASSWORD.as_bytes()).unwrap())
}

/// How the test environment is set up.
#[derive(Clone)]
pub struct EnvOptions {
    pub sandbox: SandboxOptions,
    /// `client_credentials` instead of a delegated refresh token.
    pub app_only: bool,
    /// Extra YAML appended under `limits:`.
    pub limits_yaml: String,
    /// Upstream SMTP address override (e.g. a dead port).
    pub smtp_upstream: Option<SocketAddr>,
    pub smtp_tls: &'static str,
    pub log_level: &'static str,
}

impl Default for EnvOptions {
    fn default() -> Self {
        EnvOptions {
            sandbox: SandboxOptions::default(),
            app_only: false,
            limits_yaml: String::new(),
            smtp_upstream: None,
            smtp_tls: "none",
            log_level: "info",
        }
    }
}

pub struct Env {
    pub sandbox: Sandbox,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub refresh_token: Option<String>,
    pub running: Option<Running>,
    pub shutdown: CancellationToken,
}

impl Env {
    pub async fn start() -> Env {
        Env::start_with(EnvOptions::default()).await
    }

    pub async fn start_with(opts: EnvOptions) -> Env {
        let sandbox = Sandbox::start(opts.sandbox.clone())
            .await
            .expect("sandbox starts");
        let dir = tempfile::tempdir().unwrap();
        sandbox.write_ca(&dir.path().join("ca.pem")).unwrap();
        sandbox.add_client(CLIENT_ID, CLIENT_SECRET, &[MAILBOX]);
        let refresh_token =
            (!opts.app_only).then(|| sandbox.issue_refresh_token(CLIENT_ID, MAILBOX));
        let (cert, key) = authbridge::tls::self_signed_localhost().unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.expose()).unwrap();
        std::fs::write(
            dir.path().join("client_secret"),
            format!("{CLIENT_SECRET}\n"),
        )
        .unwrap();
        let config_path = dir.path().join("authbridge.yaml");
        std::fs::write(&config_path, config_yaml(&sandbox, &opts)).unwrap();
        let mut env = Env {
            sandbox,
            dir,
            config_path,
            refresh_token,
            running: None,
            shutdown: CancellationToken::new(),
        };
        if let Some(rt) = &env.refresh_token {
            let config = env.config();
            authbridge::server::token_store(&config)
                .unwrap()
                .save("tickets", &rt.clone().into())
                .unwrap();
        }
        env.start_proxy().await;
        env
    }

    pub fn config(&self) -> Config {
        Config::load(&self.config_path).expect("test config is valid")
    }

    pub async fn start_proxy(&mut self) {
        self.shutdown = CancellationToken::new();
        let running = authbridge::start(self.config(), self.shutdown.clone())
            .await
            .expect("authbridge starts");
        self.running = Some(running);
    }

    pub async fn stop_proxy(&mut self) {
        self.shutdown.cancel();
        if let Some(r) = self.running.take() {
            tokio::time::timeout(Duration::from_secs(20), r.wait())
                .await
                .expect("authbridge stops");
        }
    }

    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.running
            .as_ref()
            .unwrap()
            .addr(listener)
            .expect("listener exists")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

pub fn config_yaml(sandbox: &Sandbox, opts: &EnvOptions) -> String {
    let flow = if opts.app_only {
        "client_credentials"
    } else {
        "authorization_code"
    };
    let smtp_up = opts.smtp_upstream.unwrap_or(sandbox.smtp_addr());
    let limits = if opts.limits_yaml.is_empty() {
        String::new()
    } else {
        format!("limits:\n{}\n", opts.limits_yaml)
    };
    format!(
        r#"state_dir: ./state
log: {{ level: {level} }}
{limits}providers:
  m365:
    type: microsoft
    tenant: {tenant}
    client_id: {CLIENT_ID}
    client_secret: {{ file: client_secret }}
    flow: {flow}
    token_url: {token_url}
    ca_file: ca.pem
accounts:
  - name: tickets
    provider: m365
    mailbox: {MAILBOX}
    logins:
      - {{ username: {USER}, password_hash: "{hash}" }}
listeners:
  - name: smtp
    protocol: smtp
    listen: 127.0.0.1:0
    tls: {smtp_tls}
    cert: cert.pem
    key: key.pem
    upstream: {{ host: 127.0.0.1, port: {smtp_port}, tls: starttls, server_name: localhost, ca_file: ca.pem }}
  - name: smtps
    protocol: smtp
    listen: 127.0.0.1:0
    tls: implicit
    cert: cert.pem
    key: key.pem
    upstream: {{ host: 127.0.0.1, port: {smtps_port}, tls: implicit, server_name: localhost, ca_file: ca.pem }}
  - name: smtp-starttls
    protocol: smtp
    listen: 127.0.0.1:0
    tls: starttls
    cert: cert.pem
    key: key.pem
    upstream: {{ host: 127.0.0.1, port: {smtp_port}, tls: starttls, server_name: localhost, ca_file: ca.pem }}
  - name: imap
    protocol: imap
    listen: 127.0.0.1:0
    upstream: {{ host: 127.0.0.1, port: {imap_port}, tls: implicit, server_name: localhost, ca_file: ca.pem }}
  - name: imap-starttls
    protocol: imap
    listen: 127.0.0.1:0
    tls: starttls
    cert: cert.pem
    key: key.pem
    upstream: {{ host: 127.0.0.1, port: {imap_st_port}, tls: starttls, server_name: localhost, ca_file: ca.pem }}
  - name: imaps
    protocol: imap
    listen: 127.0.0.1:0
    tls: implicit
    cert: cert.pem
    key: key.pem
    upstream: {{ host: 127.0.0.1, port: {imap_port}, tls: implicit, server_name: localhost, ca_file: ca.pem }}
  - name: pop3
    protocol: pop3
    listen: 127.0.0.1:0
    upstream: {{ host: 127.0.0.1, port: {pop3_port}, tls: implicit, server_name: localhost, ca_file: ca.pem }}
  - name: pop3-starttls
    protocol: pop3
    listen: 127.0.0.1:0
    tls: starttls
    cert: cert.pem
    key: key.pem
    upstream: {{ host: 127.0.0.1, port: {pop3_st_port}, tls: starttls, server_name: localhost, ca_file: ca.pem }}
"#,
        level = opts.log_level,
        tenant = sandbox.tenant(),
        token_url = sandbox.token_url(),
        hash = password_hash(),
        smtp_tls = opts.smtp_tls,
        smtp_port = smtp_up.port(),
        smtps_port = sandbox.smtps_addr().port(),
        imap_port = sandbox.imap_addr().port(),
        imap_st_port = sandbox.imap_starttls_addr().port(),
        pop3_port = sandbox.pop3_addr().port(),
        pop3_st_port = sandbox.pop3_starttls_addr().port(),
    )
}

pub fn b64(s: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A line-oriented test client over any stream.
pub struct LineClient<S> {
    pub io: BufReader<S>,
}

impl LineClient<TcpStream> {
    pub async fn connect(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).await.expect("connect");
        s.set_nodelay(true).unwrap();
        LineClient {
            io: BufReader::new(s),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> LineClient<S> {
    pub fn new(s: S) -> Self {
        LineClient {
            io: BufReader::new(s),
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.expect("write");
        self.io.get_mut().flush().await.expect("flush");
    }

    pub async fn send(&mut self, line: &str) {
        self.write(format!("{line}\r\n").as_bytes()).await;
    }

    /// One line without CRLF; None at EOF. Fails the test after 15 s.
    pub async fn line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(15), self.io.read_until(b'\n', &mut buf))
            .await
            .expect("a line within 15 s")
            .unwrap_or(0);
        if n == 0 {
            return None;
        }
        while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            buf.pop();
        }
        Some(String::from_utf8_lossy(&buf).into_owned())
    }

    /// An SMTP reply (all lines), e.g. ["250-a", "250 b"].
    pub async fn reply(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let l = self.line().await.expect("a reply, not EOF");
            let last = l.len() < 4 || l.as_bytes()[3] != b'-';
            lines.push(l);
            if last {
                return lines;
            }
        }
    }

    /// The last line of an SMTP reply.
    pub async fn code(&mut self) -> String {
        self.reply().await.pop().unwrap()
    }

    /// Send a line and return the last line of the SMTP reply.
    pub async fn cmd(&mut self, line: &str) -> String {
        self.send(line).await;
        self.code().await
    }

    /// Read lines until one starts with `prefix`; returns every line read.
    pub async fn until(&mut self, prefix: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let l = self
                .line()
                .await
                .unwrap_or_else(|| panic!("EOF before {prefix:?}; got {lines:?}"));
            let done = l.starts_with(prefix);
            lines.push(l);
            if done {
                return lines;
            }
        }
    }

    /// True when the server closes the connection (EOF) within 15 s, skipping any lines.
    pub async fn closed(&mut self) -> bool {
        loop {
            match self.line().await {
                None => return true,
                Some(_) => continue,
            }
        }
    }
}

/// Log in over SMTP with AUTH LOGIN and send one message; returns the final DATA reply.
pub async fn smtp_send(addr: SocketAddr, subject: &str, body_lines: usize) -> String {
    let mut c = LineClient::connect(addr).await;
    assert!(c.code().await.starts_with("220"));
    assert!(c.cmd("EHLO test.local").await.starts_with("250"));
    assert!(c.cmd("AUTH LOGIN").await.starts_with("334"));
    assert!(c.cmd(&b64(USER.as_bytes())).await.starts_with("334"));
    let r = c.cmd(&b64(PASSWORD.as_bytes())).await;
    assert!(r.starts_with("235"), "login: {r}");
    assert!(
        c.cmd(&format!("MAIL FROM:<{MAILBOX}>"))
            .await
            .starts_with("250")
    );
    assert!(
        c.cmd("RCPT TO:<alerts@contoso.com>")
            .await
            .starts_with("250")
    );
    assert!(c.cmd("DATA").await.starts_with("354"));
    let mut msg =
        format!("From: {MAILBOX}\r\nTo: alerts@contoso.com\r\nSubject: {subject}\r\n\r\n");
    for i in 0..body_lines {
        msg.push_str(&format!("line {i:08} of {subject}\r\n"));
    }
    msg.push_str(".\r\n");
    c.write(msg.as_bytes()).await;
    let r = c.code().await;
    let _ = c.cmd("QUIT").await;
    r
}

pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
