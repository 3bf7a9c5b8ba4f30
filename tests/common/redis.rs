//! A real `redis-server` for the shared-store tests, started on loopback with its own free port
//! and temporary directory (append-only file, fsync always, so a restart keeps the data), and
//! authbridge replicas as child processes of the real binary sharing it.
//!
//! Missing `redis-server`: with `CI=true` the test fails; otherwise it is skipped with one line.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::USER;
use super::process::Running;

/// `redis-server` on PATH, else `None` after the CI/skip rule (see the module docs).
pub fn require_redis(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("redis-server"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{test}: redis-server is not installed (apt-get install redis-server)");
        }
        println!("SKIPPED {test}: redis-server is not installed (apt-get install redis-server)");
    }
    found
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[derive(Default, Clone)]
pub struct RedisOptions {
    /// Serve TLS only (`--tls-port`), with a test CA written to `ca.pem` in its directory.
    pub tls: bool,
    /// ACL `user` directives, e.g. `authbridge on >pw ~authbridge/* +get`.
    pub users: Vec<String>,
}

pub struct RedisServer {
    pub binary: PathBuf,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub opts: RedisOptions,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start(binary: PathBuf, opts: RedisOptions) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        if opts.tls {
            write_tls_files(dir.path());
        }
        let mut s = RedisServer {
            binary,
            port: free_port(),
            dir,
            opts,
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        let mut cmd = Command::new(&self.binary);
        cmd.args([
            "--bind",
            "127.0.0.1",
            "--protected-mode",
            "no",
            "--save",
            "",
        ])
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .arg("--dir")
        .arg(d)
        .arg("--logfile")
        .arg(d.join("redis.log"));
        if self.opts.tls {
            cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(d.join("server.pem"))
                .arg("--tls-key-file")
                .arg(d.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(d.join("ca.pem"))
                .args(["--tls-auth-clients", "no"]);
        } else {
            cmd.args(["--port", &self.port.to_string()]);
        }
        if !self.opts.users.is_empty() {
            let mut acl = String::from("user default on nopass ~* &* +@all\n");
            for u in &self.opts.users {
                acl.push_str(&format!("user {u}\n"));
            }
            std::fs::write(d.join("users.acl"), acl).unwrap();
            cmd.arg("--aclfile").arg(d.join("users.acl"));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(cmd.spawn().expect("redis-server starts"));
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.answers() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen: {}",
                std::fs::read_to_string(d.join("redis.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it takes connections (and, without TLS, answers PING).
    fn answers(&self) -> bool {
        if TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            return false;
        }
        self.opts.tls
            || redis::Client::open(self.url())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
    }

    /// Kills the server (SIGKILL: no goodbye to its clients).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and directory (its data comes back from the AOF).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn url(&self) -> String {
        if self.opts.tls {
            format!("rediss://localhost:{}/0", self.port)
        } else {
            format!("redis://127.0.0.1:{}/0", self.port)
        }
    }

    /// A plain connection as the default user (not for a TLS server).
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A test CA and a server certificate for localhost/127.0.0.1 signed by it.
fn write_tls_files(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

/// The folder the replicas share: sandbox CA, client secret, master key; one config per replica.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub token_store_yaml: String,
    pub token_url: String,
    pub tenant: String,
    pub imap_upstream: u16,
}

impl Cluster {
    pub fn new(sandbox: &sandbox::Sandbox, token_store_yaml: String) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        sandbox.write_ca(&dir.path().join("ca.pem")).unwrap();
        std::fs::write(
            dir.path().join("client_secret"),
            format!("{}\n", super::CLIENT_SECRET),
        )
        .unwrap();
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).unwrap();
        let key_path = dir.path().join("master.key");
        std::fs::write(&key_path, format!("{}\n", super::b64(&raw))).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        Cluster {
            dir,
            token_store_yaml,
            token_url: sandbox.token_url(),
            tenant: sandbox.tenant().to_owned(),
            imap_upstream: sandbox.imap_addr().port(),
        }
    }

    /// Writes replica `i`'s config (IMAP on `port`) and returns its path.
    pub fn config(&self, i: usize, port: u16) -> PathBuf {
        let yaml = format!(
            r#"state_dir: ./state{i}
key_file: ./master.key
log: {{ level: debug }}
token_store: {store}
{tickets}listeners:
  - name: imap
    protocol: imap
    listen: 127.0.0.1:{port}
    upstream: {{ host: 127.0.0.1, port: {up}, tls: implicit, server_name: localhost, ca_file: ca.pem }}
"#,
            store = self.token_store_yaml,
            tickets = super::tickets_yaml(&self.tenant, "authorization_code", &self.token_url),
            up = self.imap_upstream,
        );
        let path = self.dir.path().join(format!("replica{i}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        path
    }

    /// Replica `i`'s config loaded (for library calls such as the store).
    pub fn loaded(&self, i: usize) -> authbridge::config::Config {
        authbridge::config::Config::load(&self.dir.path().join(format!("replica{i}.yaml"))).unwrap()
    }
}

/// One `authbridge run` child process ([`Running`]), restartable with the same config and
/// port; its log spans every start.
pub struct Replica {
    pub index: usize,
    pub port: u16,
    pub config: PathBuf,
    envs: Vec<(String, String)>,
    run: Option<Running>,
    /// What the replica's earlier processes logged (before a kill or restart).
    earlier: String,
}

impl Replica {
    pub fn start(cluster: &Cluster, index: usize, envs: &[(&str, &str)]) -> Replica {
        let port = free_port();
        let config = cluster.config(index, port);
        let mut r = Replica {
            index,
            port,
            config,
            envs: envs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            run: None,
            earlier: String::new(),
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let envs: Vec<(&str, &str)> = self
            .envs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let addr = self.addr();
        let run = self.run.insert(Running::start(&self.config, &envs));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            if let Some(st) = run.try_wait() {
                let log = run.log_after_exit();
                panic!(
                    "replica {} exited ({st}): {}{log}",
                    self.index, self.earlier
                );
            }
            assert!(
                Instant::now() < deadline,
                "replica {} did not listen",
                self.index
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> Option<u32> {
        self.run.as_ref().map(Running::pid)
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut run) = self.run.take() {
            run.kill();
            self.earlier += &run.log_after_exit();
            self.earlier.push('\n');
        }
    }

    /// Starts the process again with the same config and port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn logs(&self) -> String {
        let current = self.run.as_ref().map(Running::log).unwrap_or_default();
        format!("{}{current}", self.earlier)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One IMAP LOGIN on `addr`: the tagged reply line (`a OK …`, `a NO [UNAVAILABLE] …`), or
/// `"closed"`/`"connect failed"`.
pub async fn imap_login(addr: SocketAddr) -> String {
    let Ok(Ok(tcp)) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    else {
        return "connect failed".to_owned();
    };
    let mut c = super::LineClient::new(tcp);
    let work = async {
        c.line().await?;
        let quoted = format!(
            "\"{}\"",
            super::PASSWORD.replace('\\', "\\\\").replace('"', "\\\"")
        );
        c.send(&format!("a LOGIN {USER} {quoted}")).await;
        loop {
            let l = c.line().await?;
            if l.starts_with("a ") {
                return Some(l);
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs(20), work).await {
        Ok(Some(l)) => l,
        Ok(None) => "closed".to_owned(),
        Err(_) => "timed out".to_owned(),
    }
}
