//! The two proxies under test: their configs, (re)starts and login targets.

use std::fs;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::client::{System, Target, err};
use crate::procs::{Proc, Sandbox, free_port, wait_port};

pub const LOCAL_USER: &str = "bench";
pub const LOCAL_PASS: &str = "bench-password";
/// The account's name in authbridge's config.
pub const ACCOUNT: &str = "tickets";

/// What an authbridge config holds besides the SMTP and IMAP listeners of an app-only account.
#[derive(Clone, Debug, Default)]
pub struct AuthbridgeOptions {
    /// A delegated (authorization-code) account, whose refresh token goes into the store.
    pub delegated: bool,
    /// `token_store:` as YAML (flow style); `None`: the default file store.
    pub token_store: Option<String>,
    /// `key_file:` (replicas sharing a Redis store share one key).
    pub key_file: Option<PathBuf>,
    /// A `mode: relay` SMTP listener towards this inbound connector.
    pub connector: Option<SocketAddr>,
}

/// argon2id hash of [`LOCAL_PASS`] from `authbridge hash-password`.
pub fn hash_password(authbridge: &Path) -> io::Result<String> {
    let mut child = Command::new(authbridge)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or_else(|| err("no stdin"))?
        .write_all(LOCAL_PASS.as_bytes())?;
    let out = child.wait_with_output()?;
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || !hash.starts_with("$argon2") {
        return Err(err(format!(
            "authbridge hash-password failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(hash)
}

/// One proxy process and how to reach it.
pub struct Proxy {
    pub system: System,
    bin: PathBuf,
    pub config: PathBuf,
    log: PathBuf,
    pub smtp: SocketAddr,
    pub imap: SocketAddr,
    /// authbridge's `mode: relay` SMTP listener, if configured.
    pub relay: Option<SocketAddr>,
    pub proc: Option<Proc>,
    /// email-oauth2-proxy: the config text without cached tokens.
    fresh_config: String,
    pub env: Vec<(String, String)>,
}

impl Proxy {
    /// `upstream`: the SMTP and IMAP servers to use (the sandbox's, or a relay in front of them).
    pub fn authbridge(
        bin: &Path,
        dir: &Path,
        sb: &Sandbox,
        hash: &str,
        upstream: (SocketAddr, SocketAddr),
        opts: &AuthbridgeOptions,
    ) -> io::Result<Proxy> {
        fs::create_dir_all(dir)?;
        let smtp: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse().unwrap();
        let imap: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse().unwrap();
        let ca = sb.dir.join("ca.pem");
        let (up_smtp, up_imap) = upstream;
        // An app-only account (client credentials) unless a delegated one is asked for, whose
        // refresh token is imported into the token store before the first start.
        let (flow, store) = if opts.delegated {
            ("authorization_code", opts.token_store.clone())
        } else {
            ("client_credentials", None)
        };
        let mut head = String::new();
        if let Some(key) = &opts.key_file {
            head.push_str(&format!("key_file: {}\n", key.display()));
        }
        if let Some(store) = store {
            head.push_str(&format!("token_store: {store}\n"));
        }
        let mut relay = None;
        let mut relay_yaml = String::new();
        if let Some(connector) = opts.connector {
            let listen: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse().unwrap();
            relay_yaml = format!(
                r#"  - name: relay
    protocol: smtp
    mode: relay
    listen: {listen}
    tls: none
    upstream: {{ host: {host}, port: {port}, tls: starttls, server_name: localhost, ca_file: {ca} }}
"#,
                host = connector.ip(),
                port = connector.port(),
                ca = ca.display(),
            );
            relay = Some(listen);
        }
        let text = format!(
            r#"# Written by bench/ (authbridge-bench); regenerated on every run.
state_dir: ./state
{head}log: {{ level: info, format: text }}
hostname: localhost
providers:
  sandbox:
    type: microsoft
    tenant: {tenant}
    client_id: {client_id}
    client_secret: {client_secret}
    flow: {flow}
    token_url: {token_url}
    ca_file: {ca}
accounts:
  - name: {ACCOUNT}
    provider: sandbox
    mailbox: {mailbox}
    logins:
      - {{ username: {LOCAL_USER}, password_hash: "{hash}" }}
listeners:
  - name: smtp
    protocol: smtp
    listen: {smtp}
    tls: none
    upstream: {{ host: {smtp_host}, port: {smtp_port}, tls: starttls, server_name: localhost, ca_file: {ca} }}
  - name: imap
    protocol: imap
    listen: {imap}
    tls: none
    upstream: {{ host: {imap_host}, port: {imap_port}, tls: implicit, server_name: localhost, ca_file: {ca} }}
{relay_yaml}"#,
            tenant = sb.s("tenant"),
            client_id = sb.s("client_id"),
            client_secret = sb.s("client_secret"),
            token_url = sb.s("token_url"),
            ca = ca.display(),
            mailbox = sb.s("mailbox"),
            smtp_host = up_smtp.ip(),
            smtp_port = up_smtp.port(),
            imap_host = up_imap.ip(),
            imap_port = up_imap.port(),
        );
        let config = dir.join("authbridge.yaml");
        fs::write(&config, &text)?;
        Ok(Proxy {
            system: System::Authbridge,
            bin: bin.to_path_buf(),
            config,
            log: dir.join("authbridge.log"),
            smtp,
            imap,
            relay,
            proc: None,
            fresh_config: text,
            env: Vec::new(),
        })
    }

    /// `authbridge import-token ACCOUNT` with this proxy's config: `refresh_token` on stdin.
    pub fn import_token(&self, refresh_token: &str) -> io::Result<()> {
        let mut child = Command::new(&self.bin)
            .args(["import-token", ACCOUNT, "--config"])
            .arg(&self.config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .ok_or_else(|| err("no stdin"))?
            .write_all(refresh_token.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(err(format!(
                "authbridge import-token failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    pub fn emailproxy(
        bin: &Path,
        dir: &Path,
        sb: &Sandbox,
        upstream: (SocketAddr, SocketAddr),
    ) -> io::Result<Proxy> {
        fs::create_dir_all(dir)?;
        let smtp: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse().unwrap();
        let imap: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse().unwrap();
        let (up_smtp, up_imap) = upstream;
        // Same token service, same client and the same upstream servers as authbridge. The
        // client-credentials flow needs no browser; the login password only encrypts the
        // cached token.
        let text = format!(
            "# Written by bench/ (authbridge-bench); regenerated on every cold start.\n\
             [IMAP-{imap_port}]\nserver_address = {imap_host}\nserver_port = {up_imap_port}\nlocal_address = 127.0.0.1\n\n\
             [SMTP-{smtp_port}]\nserver_address = {smtp_host}\nserver_port = {up_smtp_port}\nserver_starttls = True\nlocal_address = 127.0.0.1\n\n\
             [{mailbox}]\ntoken_url = {token_url}\noauth2_scope = {scope}\noauth2_flow = client_credentials\nclient_id = {client_id}\nclient_secret = {client_secret}\n",
            imap_port = imap.port(),
            imap_host = up_imap.ip(),
            up_imap_port = up_imap.port(),
            smtp_port = smtp.port(),
            smtp_host = up_smtp.ip(),
            up_smtp_port = up_smtp.port(),
            mailbox = sb.s("mailbox"),
            token_url = sb.s("token_url"),
            scope = sb.s("app_scope"),
            client_id = sb.s("client_id"),
            client_secret = sb.s("client_secret"),
        );
        let config = dir.join("emailproxy.config");
        fs::write(&config, &text)?;
        Ok(Proxy {
            system: System::EmailProxy,
            bin: bin.to_path_buf(),
            config,
            log: dir.join("emailproxy.log"),
            smtp,
            imap,
            relay: None,
            proc: None,
            fresh_config: text,
            // Python's ssl (urllib for the token, the upstream IMAP/SMTP TLS) trusts this CA.
            env: vec![(
                "SSL_CERT_FILE".into(),
                sb.dir.join("ca.pem").display().to_string(),
            )],
        })
    }

    /// Start (or restart) the process. `cold`: forget cached tokens first (email-oauth2-proxy
    /// keeps them in its config file; authbridge only in memory).
    pub async fn start(&mut self, cold: bool) -> io::Result<()> {
        self.stop();
        if cold {
            fs::write(&self.config, &self.fresh_config)?;
        }
        let mut cmd = Command::new(&self.bin);
        match self.system {
            System::Authbridge => {
                cmd.arg("run").arg("--config").arg(&self.config);
            }
            _ => {
                cmd.args(["--no-gui", "--config-file"])
                    .arg(&self.config)
                    .arg("--log-file")
                    .arg(self.log.with_extension("file.log"));
            }
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut p = Proc::spawn(self.system.name(), cmd, &self.log)?;
        wait_port(self.smtp, &mut p, Duration::from_secs(30)).await?;
        wait_port(self.imap, &mut p, Duration::from_secs(30)).await?;
        self.proc = Some(p);
        Ok(())
    }

    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop(Duration::from_secs(5));
        }
    }

    pub fn proc(&self) -> &Proc {
        self.proc.as_ref().expect("proxy started")
    }

    pub fn target(&self, mailbox: &str) -> Target {
        let user = match self.system {
            // email-oauth2-proxy's login name is the mailbox (its config section).
            System::EmailProxy => mailbox.to_string(),
            _ => LOCAL_USER.to_string(),
        };
        Target {
            system: self.system,
            smtp: self.smtp,
            imap: self.imap,
            user,
            pass: LOCAL_PASS.to_string(),
            tls: None,
            mailbox: mailbox.to_string(),
            token: String::new(),
        }
    }
}
