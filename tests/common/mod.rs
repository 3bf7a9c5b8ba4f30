//! Shared test harness: a sandbox (fake Entra ID + fake Exchange), an authbridge started
//! in-process against it on 127.0.0.1:0, and small line-oriented clients.
#![allow(dead_code)]

pub mod process;
pub mod promtool;
pub mod redis;

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
{limits}{tickets}listeners:
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
        tickets = tickets_yaml(sandbox.tenant(), flow, &sandbox.token_url()),
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

// ---------------------------------------------------------------------------------------------
// IMAP and POP3 helpers (tests/imap.rs, tests/pop3.rs).

impl Env {
    /// Like [`Env::start_with`], then `edit` rewrites the generated YAML (e.g. with
    /// [`with_login`] or [`with_upstream`]) and authbridge is restarted on the edited config.
    pub async fn start_with_yaml(
        opts: EnvOptions,
        edit: impl FnOnce(&Sandbox, String) -> String,
    ) -> Env {
        let mut env = Env::start_with(opts).await;
        env.stop_proxy().await;
        let yaml = std::fs::read_to_string(&env.config_path).unwrap();
        std::fs::write(&env.config_path, edit(&env.sandbox, yaml)).unwrap();
        env.start_proxy().await;
        env
    }

    /// A rustls client config that trusts only the self-signed `cert.pem` of this environment
    /// (the certificate of the client-facing TLS listeners; server name `localhost`).
    pub fn client_tls(&self) -> std::sync::Arc<rustls::ClientConfig> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.dir.path().join("cert.pem")).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        std::sync::Arc::new(config)
    }

    /// Connect to an implicit-TLS listener.
    pub async fn connect_tls(&self, listener: &str) -> TlsClient {
        let plain = LineClient::connect(self.addr(listener)).await;
        plain.start_tls(self).await
    }
}

/// A line client over client-side TLS.
pub type TlsClient = LineClient<tokio_rustls::client::TlsStream<TcpStream>>;

impl LineClient<TcpStream> {
    /// TLS handshake (after STARTTLS/STLS was accepted, or at once for implicit TLS). Nothing
    /// may be buffered from the plaintext phase.
    pub async fn start_tls(self, env: &Env) -> TlsClient {
        assert!(
            self.io.buffer().is_empty(),
            "plaintext bytes buffered before the TLS handshake"
        );
        let tcp = self.io.into_inner();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_rustls::TlsConnector::from(env.client_tls()).connect(name, tcp),
        )
        .await
        .expect("TLS handshake within 10 s")
        .expect("TLS handshake succeeds");
        LineClient::new(tls)
    }
}

/// `{N}` or `{N+}` at the end of an IMAP line.
pub fn imap_literal_len(line: &[u8]) -> Option<usize> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let digits = &inner[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    std::str::from_utf8(digits).ok()?.parse().ok()
}

impl<S: AsyncRead + AsyncWrite + Unpin> LineClient<S> {
    /// One raw line including its line end (empty at EOF). Fails the test after 15 s.
    pub async fn raw_line(&mut self) -> Vec<u8> {
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(15), self.io.read_until(b'\n', &mut buf))
            .await
            .expect("a line within 15 s")
            .unwrap_or(0);
        buf
    }

    /// Exactly `n` bytes (an IMAP literal payload).
    pub async fn read_n(&mut self, n: usize) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0; n];
        tokio::time::timeout(Duration::from_secs(15), self.io.read_exact(&mut buf))
            .await
            .expect("literal within 15 s")
            .expect("literal bytes, not EOF");
        buf
    }

    /// One IMAP response without its final CRLF: a line and, for every `{N}` that ends a line,
    /// the N literal bytes and what follows them. None at EOF.
    pub async fn imap_response(&mut self) -> Option<Vec<u8>> {
        let mut resp = Vec::new();
        loop {
            let line = self.raw_line().await;
            if line.is_empty() {
                assert!(resp.is_empty(), "EOF inside a response: {resp:?}");
                return None;
            }
            resp.extend_from_slice(&line);
            let mut bare: &[u8] = &line;
            while let Some(rest) = bare
                .strip_suffix(b"\n")
                .or_else(|| bare.strip_suffix(b"\r"))
            {
                bare = rest;
            }
            match imap_literal_len(bare) {
                Some(n) => {
                    let payload = self.read_n(n).await;
                    resp.extend_from_slice(&payload);
                }
                None => {
                    while resp.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        resp.pop();
                    }
                    return Some(resp);
                }
            }
        }
    }

    /// Responses up to and including the one tagged `tag`: (untagged and continuation
    /// responses, the tagged line), lossy UTF-8.
    pub async fn imap_tagged(&mut self, tag: &str) -> (Vec<String>, String) {
        let prefix = format!("{tag} ");
        let mut untagged = Vec::new();
        loop {
            let Some(r) = self.imap_response().await else {
                panic!("EOF before the {tag} reply; got {untagged:?}");
            };
            let r = String::from_utf8_lossy(&r).into_owned();
            if r.starts_with(&prefix) {
                return (untagged, r);
            }
            untagged.push(r);
        }
    }

    /// Send `<tag> <command>` and read to the tagged reply.
    pub async fn imap(&mut self, tag: &str, command: &str) -> (Vec<String>, String) {
        self.send(&format!("{tag} {command}")).await;
        self.imap_tagged(tag).await
    }

    /// A POP3 multi-line body after its `+OK` line: lines up to the lone `.`, dot-unstuffed.
    pub async fn pop3_multiline(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let l = self.line().await.expect("multi-line response, not EOF");
            if l == "." {
                return lines;
            }
            lines.push(l.strip_prefix('.').map(str::to_string).unwrap_or(l));
        }
    }
}

/// Add a second local login (`username`, `password`) to the `tickets` account.
pub fn with_login(yaml: String, username: &str, password: &[u8]) -> String {
    let anchor = format!("      - {{ username: {USER}, password_hash: ");
    let at = yaml.find(&anchor).expect("the harness login line");
    let end = at + yaml[at..].find('\n').unwrap() + 1;
    let hash = authbridge::auth::hash_password(password).unwrap();
    let line = format!("      - {{ username: \"{username}\", password_hash: \"{hash}\" }}\n");
    let mut out = yaml;
    out.insert_str(end, &line);
    out
}

/// Replace the `upstream:` of listener `listener` by `upstream` (a YAML flow mapping).
pub fn with_upstream(yaml: String, listener: &str, upstream: &str) -> String {
    let head = format!("  - name: {listener}\n");
    let at = yaml.find(&head).expect("listener in the harness config") + head.len();
    let rel = yaml[at..]
        .find("    upstream: ")
        .expect("its upstream line");
    let start = at + rel;
    let end = start + yaml[start..].find('\n').unwrap();
    let mut out = yaml;
    out.replace_range(start..end, &format!("    upstream: {upstream}"));
    out
}

/// A TCP port on 127.0.0.1 with nothing listening on it.
pub fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A subject no other test uses.
pub fn unique_subject(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{nanos:09}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Like [`smtp_send`] but to `rcpt` (e.g. [`MAILBOX`], to read the message back over IMAP or
/// POP3). Returns the final DATA reply.
pub async fn smtp_send_to(
    addr: SocketAddr,
    rcpt: &str,
    subject: &str,
    body_lines: usize,
) -> String {
    let mut c = LineClient::connect(addr).await;
    assert!(c.code().await.starts_with("220"));
    assert!(c.cmd("EHLO test.local").await.starts_with("250"));
    let blob = b64(format!("\0{USER}\0{PASSWORD}").as_bytes());
    let r = c.cmd(&format!("AUTH PLAIN {blob}")).await;
    assert!(r.starts_with("235"), "login: {r}");
    let r = c.cmd(&format!("MAIL FROM:<{MAILBOX}>")).await;
    assert!(r.starts_with("250"), "{r}");
    let r = c.cmd(&format!("RCPT TO:<{rcpt}>")).await;
    assert!(r.starts_with("250"), "{r}");
    assert!(c.cmd("DATA").await.starts_with("354"));
    let mut msg = format!("From: {MAILBOX}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\n");
    for i in 0..body_lines {
        msg.push_str(&format!("line {i:08} of {subject}\r\n"));
    }
    msg.push_str(".\r\n");
    c.write(msg.as_bytes()).await;
    let r = c.code().await;
    let _ = c.cmd("QUIT").await;
    r
}

/// A value from /proc/self/status in KiB (`VmRSS`, `VmHWM`), if readable.
pub fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Reset this process's peak RSS (`VmHWM`) to its current RSS (Linux: `5` into clear_refs).
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Run test `test` alone in a fresh process of this test binary (with `envs` set there) and
/// assert that it passed; returns true. In that child process it returns false: the caller then
/// does the real work. For tests that must not share the process with others (memory
/// measurements, environment variables).
pub fn run_isolated(test: &str, envs: &[(&str, &str)]) -> bool {
    const CHILD: &str = "AUTHBRIDGE_ISOLATED_TEST";
    if std::env::var(CHILD).as_deref() == Ok(test) {
        return false;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, test)
        .envs(envs.iter().copied())
        .output()
        .expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "isolated run of {test} failed:\n{stdout}\n{stderr}"
    );
    true
}

/// `python3`, when installed (it is on CI: .ci/run installs it). When it is missing: under
/// `CI=true` the test fails (a missing tool must not pass as a skipped test); elsewhere one line
/// says the test is skipped. `test` names the calling test for that line.
pub fn python3(test: &str) -> Option<&'static str> {
    let ok = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some("python3");
    }
    missing_tool("python3", test);
    None
}

/// A tool a test needs is missing: panic under `CI=true`, else print one line (skip).
pub fn missing_tool(tool: &str, test: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{tool} is missing and CI=true: {test} cannot run (install it: .ci/run's apt-get line has it)"
        );
    }
    eprintln!("{test}: SKIPPED: {tool} is not installed");
}

/// Complete a TLS handshake on `tcp` after the server's STARTTLS/STLS go-ahead, to see what a
/// command the client pipelined before the handshake did. `Ok` when the server closed instead
/// of completing the handshake, or completed it and then sent nothing (closing, or waiting
/// for a command) within 3 s; `Err` with the line when the server answered something after
/// TLS: the pipelined plaintext was executed as if it had come over TLS.
pub async fn nothing_runs_after_starttls(
    env: &Env,
    tcp: &mut TcpStream,
) -> Result<&'static str, String> {
    use tokio::io::AsyncReadExt;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connect = tokio_rustls::TlsConnector::from(env.client_tls()).connect(name, tcp);
    let mut tls = match tokio::time::timeout(Duration::from_secs(15), connect).await {
        Err(_) => return Err("the TLS handshake neither completed nor failed in 15 s".into()),
        Ok(Err(_)) => return Ok("closed before the handshake"),
        Ok(Ok(tls)) => tls,
    };
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(Duration::from_secs(3), tls.read(&mut buf)).await {
        Err(_) => Ok("handshake completed, nothing executed"),
        Ok(Ok(0)) | Ok(Err(_)) => Ok("handshake completed, then closed"),
        Ok(Ok(n)) => Err(format!(
            "the command pipelined before the TLS handshake was executed after it: got {:?}",
            String::from_utf8_lossy(&buf[..n])
        )),
    }
}

/// Run a Python script with `env` set; returns its stdout. Fails the test on a non-zero exit
/// (showing stderr) or after 60 s.
pub async fn run_python(script: &str, env: &[(&str, String)]) -> String {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg("-c").arg(script).kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("python finishes within 60 s")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Fail if `logs` holds any of `forbidden`, or a token-shaped run (access tokens are ~1.5 KB
/// random strings, XOAUTH2 blobs longer base64 runs). rustls logs certificates as hex at trace
/// level: public, and not token-shaped, so all-hex runs are allowed.
pub fn assert_no_secrets(logs: &str, forbidden: &[String]) {
    for secret in forbidden {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret appears in the logs"
        );
    }
    let longest = logs
        .split(|c: char| !(c.is_ascii_alphanumeric() || "-_.+/=".contains(c)))
        .filter(|run| {
            !run.trim_start_matches("0x")
                .bytes()
                .all(|b| b.is_ascii_hexdigit())
        })
        .max_by_key(|run| run.len())
        .unwrap_or("");
    if longest.len() >= 200 {
        let at = logs.find(longest).unwrap_or(0);
        let line_start = logs[..at].rfind('\n').map_or(0, |i| i + 1);
        panic!(
            "a token-like run of {} characters appears in the logs, in a line starting {:?}",
            longest.len(),
            &logs[line_start..(line_start + 160).min(at)]
        );
    }
}

/// Collects every formatted log line of this process (a test that installs it runs alone in its
/// process: see [`run_isolated`]).
#[derive(Clone, Default)]
pub struct LogCapture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl LogCapture {
    /// With this variable set to `1`, [`LogCapture::install`] captures JSON lines, as
    /// `log: { format: json }` writes them.
    pub const JSON_ENV: &str = "AUTHBRIDGE_TEST_LOG_JSON";

    fn json() -> bool {
        std::env::var(Self::JSON_ENV).as_deref() == Ok("1")
    }

    /// Install a global subscriber at `level` writing into a new capture (text, or JSON lines
    /// like the server's when [`LogCapture::JSON_ENV`] is `1`).
    pub fn install(level: tracing::Level) -> LogCapture {
        let capture = LogCapture::default();
        let writer = capture.clone();
        let builder = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .with_writer(move || writer.clone());
        if Self::json() {
            builder.json().flatten_event(true).init();
        } else {
            builder.init();
        }
        capture
    }

    /// Everything logged so far. For JSON lines: the raw lines, then every string value of
    /// every line unescaped (a secret with a quote or backslash is escaped in the raw JSON, so
    /// a grep of the raw text alone would miss it). Fails the test on a line that is not JSON.
    pub fn text(&self) -> String {
        let raw = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        if !Self::json() {
            return raw;
        }
        fn strings(v: &serde_json::Value, out: &mut String) {
            match v {
                serde_json::Value::String(s) => {
                    out.push_str(s);
                    out.push(' ');
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
                serde_json::Value::Object(o) => o.values().for_each(|v| strings(v, out)),
                other => {
                    out.push_str(&other.to_string());
                    out.push(' ');
                }
            }
        }
        let mut decoded = String::new();
        for line in raw.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            strings(&v, &mut decoded);
            decoded.push('\n');
        }
        format!("{raw}\n{decoded}")
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One TRACE-level log capture per test binary, installed on first use (for tests that grep the
/// logs for secrets).
pub fn log_capture() -> &'static LogCapture {
    static LOGS: OnceLock<LogCapture> = OnceLock::new();
    LOGS.get_or_init(|| LogCapture::install(tracing::Level::TRACE))
}

/// A self-signed certificate for the test key `tests/data/assertion/{name}.key` (ring cannot
/// generate RSA keys), written to `dir/{name}.pem`: (cert path, key path, cert PEM).
pub fn test_certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf, String) {
    let key_path = PathBuf::from(format!(
        "{}/tests/data/assertion/{name}.key",
        env!("CARGO_MANIFEST_DIR")
    ));
    let key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(&key_path).unwrap()).unwrap();
    let cert = rcgen::CertificateParams::new(vec![format!("authbridge-{name}")])
        .unwrap()
        .self_signed(&key)
        .unwrap()
        .pem();
    let cert_path = dir.join(format!("{name}.pem"));
    std::fs::write(&cert_path, &cert).unwrap();
    (cert_path, key_path, cert)
}

/// An app-only (`client_credentials`) Microsoft provider `m365` on the sandbox's token endpoint.
pub fn app_provider(
    sb: &Sandbox,
    client_id: &str,
    credential: authbridge::token::CredentialKind,
    client_secret: Option<&str>,
    assertion: Option<authbridge::token::ClientAssertion>,
    proxy: authbridge::token::ProxySetting,
) -> std::sync::Arc<authbridge::token::ProviderConfig> {
    use authbridge::token::{ProviderKind, default_scopes};
    let flow = authbridge::token::Flow::ClientCredentials;
    std::sync::Arc::new(authbridge::token::ProviderConfig {
        name: "m365".to_owned(),
        kind: ProviderKind::Microsoft,
        flow,
        client_id: client_id.to_owned(),
        credential,
        client_secret: client_secret.map(authbridge::secret::SecretString::from),
        assertion,
        endpoints: authbridge::token::Endpoints {
            token_url: sb.token_url(),
            authorize_url: None,
            device_code_url: None,
        },
        scopes: default_scopes(ProviderKind::Microsoft, flow),
        redirect_uri: None,
        http: authbridge::token::HttpClient::new(sb.client_config(), proxy),
    })
}

/// A token manager with one account `tickets` (mailbox `mailbox`) on `provider`, its store in a
/// new temp dir (returned, keep it alive), token requests bounded by 10 s.
pub fn app_manager(
    provider: std::sync::Arc<authbridge::token::ProviderConfig>,
    mailbox: &str,
) -> (
    std::sync::Arc<authbridge::token::TokenManager>,
    tempfile::TempDir,
) {
    use authbridge::token::{AccountConfig, MasterKey, TokenManager, TokenSettings, TokenStore};
    let dir = tempfile::tempdir().unwrap();
    let key = MasterKey::load_or_create(Some(&dir.path().join("k")), None, dir.path()).unwrap();
    let store = TokenStore::open(&dir.path().join("state"), key).unwrap();
    let account = AccountConfig {
        name: "tickets".to_owned(),
        mailbox: mailbox.to_owned(),
        provider,
    };
    let settings = TokenSettings {
        request_timeout: Duration::from_secs(10),
        ..TokenSettings::default()
    };
    (TokenManager::new(store, vec![account], settings), dir)
}

/// `authbridge check --json --config CONFIG` (the real binary, on the blocking pool): its parsed
/// report, whatever its exit code; panics with the output when it is not JSON.
pub async fn check_json(config: PathBuf) -> serde_json::Value {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_authbridge"))
            .args(["check", "--json", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// The config's `providers:` (the sandbox as `m365`, `flow`) and `accounts:` (`tickets` on
/// `MAILBOX`, local login `USER` with `PASSWORD`) sections, as most tests' configs begin them.
pub fn tickets_yaml(sandbox_tenant: &str, flow: &str, token_url: &str) -> String {
    format!(
        r#"providers:
  m365:
    type: microsoft
    tenant: {sandbox_tenant}
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
"#,
        hash = password_hash()
    )
}
