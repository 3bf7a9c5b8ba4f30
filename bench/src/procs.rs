//! The processes under test: start, stop, wait for their ports, and read their CPU time and
//! resident memory from /proc. Also the little HTTPS client for the sandbox's token service and
//! control endpoints.

use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::{Tls, err};

/// A child process killed when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> io::Result<Proc> {
        let out = fs::OpenOptions::new().create(true).append(true).open(log)?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        // Die with the bench, however it ends (signal, panic): no stray servers left behind.
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl(2) is async-signal-safe and touches no memory of the parent.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
        }
        let child = cmd
            .spawn()
            .map_err(|e| err(format!("cannot start {name} ({cmd:?}): {e}")))?;
        Ok(Proc {
            name: name.to_string(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let end = Instant::now() + grace;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// user + system CPU seconds of the whole process (all threads).
    pub fn cpu_secs(&self) -> f64 {
        cpu_secs(self.pid()).unwrap_or(f64::NAN)
    }

    /// VmRSS in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid()).unwrap_or(0)
    }

    pub fn threads(&self) -> u64 {
        status_field(self.pid(), "Threads:").unwrap_or(0)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of proc(5); `after` starts at field 3.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clk_tck())
}

fn status_field(pid: u32, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

pub fn rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS:")
}

/// A port that was free a moment ago.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Wait until something accepts on `addr`.
pub async fn wait_port(addr: SocketAddr, proc: &mut Proc, limit: Duration) -> io::Result<()> {
    let end = Instant::now() + limit;
    loop {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if !proc.alive() {
            return Err(err(format!(
                "{} exited before listening on {addr}",
                proc.name
            )));
        }
        if Instant::now() > end {
            return Err(err(format!("{} does not listen on {addr}", proc.name)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The running sandbox.
pub struct Sandbox {
    pub proc: Proc,
    pub dir: PathBuf,
    pub info: Value,
    pub tls: Tls,
}

impl Sandbox {
    pub async fn start(bin: &Path, dir: &Path) -> io::Result<Sandbox> {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir)?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve").arg("--dir").arg(dir).args([
            "--max-sessions",
            "40000",
            "--idle-timeout",
            "7200",
        ]);
        let mut proc = Proc::spawn("sandbox", cmd, &dir.join("sandbox.log"))?;
        let json = dir.join("sandbox.json");
        let end = Instant::now() + Duration::from_secs(30);
        let info: Value = loop {
            if let Ok(text) = fs::read_to_string(&json) {
                if let Ok(v) = serde_json::from_str(&text) {
                    break v;
                }
            }
            if !proc.alive() || Instant::now() > end {
                return Err(err(format!(
                    "the sandbox did not start; see {}",
                    dir.join("sandbox.log").display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let ca_pem = fs::read_to_string(dir.join("ca.pem"))?;
        let tls = Tls::new(&ca_pem)?;
        Ok(Sandbox {
            proc,
            dir: dir.to_path_buf(),
            info,
            tls,
        })
    }

    pub fn s(&self, key: &str) -> String {
        self.info[key].as_str().unwrap_or_default().to_string()
    }

    pub fn addr(&self, key: &str) -> io::Result<SocketAddr> {
        self.s(key)
            .parse()
            .map_err(|e| err(format!("sandbox.json {key}: {e}")))
    }

    fn token_addr(&self) -> io::Result<SocketAddr> {
        let base = self.s("token_base_url");
        base.trim_start_matches("https://")
            .parse()
            .map_err(|e| err(format!("token_base_url {base}: {e}")))
    }

    /// One HTTPS request; returns (status, body).
    async fn https(&self, method: &str, path: &str, body: &str) -> io::Result<(u16, Vec<u8>)> {
        let addr = self.token_addr()?;
        let tcp = TcpStream::connect(addr).await?;
        let mut s = self
            .tls
            .connector
            .connect(self.tls.name.clone(), tcp)
            .await?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        s.flush().await?;
        let mut resp = Vec::new();
        // A close_notify-less close is fine here: the body length is checked below.
        let _ = s.read_to_end(&mut resp).await;
        let split = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| err("bad HTTP response"))?;
        let head = String::from_utf8_lossy(&resp[..split]).to_string();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| err(format!("bad HTTP status line in {head:?}")))?;
        let mut body = resp[split + 4..].to_vec();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = dechunk(&body)?;
        }
        Ok((status, body))
    }

    /// A client-credentials token for the seeded client (what a direct client would fetch).
    pub async fn fetch_token(&self) -> io::Result<String> {
        let url = self.s("token_url");
        let path = url
            .splitn(4, '/')
            .nth(3)
            .map(|p| format!("/{p}"))
            .ok_or_else(|| err("bad token_url"))?;
        let form = format!(
            "grant_type=client_credentials&client_id={}&client_secret={}&scope=https%3A%2F%2Foutlook.office365.com%2F.default",
            self.s("client_id"),
            self.s("client_secret")
        );
        let (status, body) = self.https("POST", &path, &form).await?;
        let v: Value = serde_json::from_slice(&body).map_err(|e| err(e.to_string()))?;
        match v["access_token"].as_str() {
            Some(t) if status == 200 => Ok(t.to_string()),
            _ => Err(err(format!("token request failed: {status} {v}"))),
        }
    }

    /// Token requests seen so far (all grant types).
    pub async fn token_requests(&self) -> io::Result<u64> {
        let (status, body) = self.https("GET", "/_sandbox/counters", "").await?;
        let v: Value = serde_json::from_slice(&body).map_err(|e| err(e.to_string()))?;
        v["token_requests"]["total"]
            .as_u64()
            .filter(|_| status == 200)
            .ok_or_else(|| err(format!("bad counters reply {status} {v}")))
    }
}

fn dechunk(mut b: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| err("bad chunk"))?;
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&b[..nl])
                .split(';')
                .next()
                .unwrap_or("")
                .trim(),
            16,
        )
        .map_err(|_| err("bad chunk size"))?;
        b = &b[nl + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            return Err(err("short chunk"));
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// Raise RLIMIT_NOFILE's soft limit to the hard limit (children inherit it).
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    #[allow(clippy::unnecessary_cast)]
    let cur = lim.rlim_cur as u64;
    cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
    }

    #[test]
    fn own_process() {
        let pid = std::process::id();
        assert!(cpu_secs(pid).is_some());
        assert!(rss_kib(pid).unwrap() > 0);
    }
}
