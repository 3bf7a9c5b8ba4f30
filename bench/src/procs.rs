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

    /// SIGINT (what Ctrl-C sends: a profiler then writes its data), wait up to `grace` for the
    /// process to exit, then SIGKILL.
    pub fn interrupt(&mut self, grace: Duration) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGINT);
        }
        let end = Instant::now() + grace;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
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

    /// VmHWM (the peak resident set since the process started) in KiB.
    pub fn hwm_kib(&self) -> u64 {
        status_field(self.pid(), "VmHWM:").unwrap_or(0)
    }

    /// Reset VmHWM to the current RSS (`clear_refs` 5, Linux ≥ 4.0); false if refused.
    pub fn reset_hwm(&self) -> bool {
        fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").is_ok()
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
            // The inbound connector takes mail from loopback (its "static IP" allow-list), so the
            // direct client, the byte relay and authbridge's relay listener all reach it alike.
            "--connector-allow-ip",
            "127.0.0.1",
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
        let (status, _, body) = self.https_head(method, path, body).await?;
        Ok((status, body))
    }

    /// One HTTPS request; returns (status, response head, body).
    async fn https_head(
        &self,
        method: &str,
        path: &str,
        body: &str,
    ) -> io::Result<(u16, String, Vec<u8>)> {
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
        Ok((status, head, body))
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

    /// A fresh delegated refresh token of the seeded mailbox for the seeded client, the way
    /// `authbridge login` gets one: the authorization endpoint (the sandbox signs the mailbox in
    /// and consents at once) redirects with a code, which the token endpoint exchanges. Each call
    /// starts a new refresh-token family, so two stores never rotate the same token.
    pub async fn delegated_refresh_token(&self) -> io::Result<String> {
        const REDIRECT: &str = "http://localhost:8925/callback";
        let path_of = |url: String| {
            url.splitn(4, '/')
                .nth(3)
                .map(|p| format!("/{p}"))
                .ok_or_else(|| err(format!("bad URL {url}")))
        };
        let query = format!(
            "client_id={}&response_type=code&redirect_uri={}&scope={}&state=bench",
            self.s("client_id"),
            url_encode(REDIRECT),
            url_encode(&self.s("delegated_scope"))
        );
        let authorize = path_of(self.s("authorize_url"))?;
        let (status, head, _) = self
            .https_head("GET", &format!("{authorize}?{query}"), "")
            .await?;
        let location = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("location")
                    .then(|| v.trim().to_string())
            })
            .ok_or_else(|| err(format!("authorize: no redirect (HTTP {status})")))?;
        let code = location
            .split_once('?')
            .map(|(_, q)| q)
            .unwrap_or_default()
            .split('&')
            .find_map(|kv| kv.strip_prefix("code="))
            .ok_or_else(|| err(format!("authorize: no code in {location}")))?
            .to_string();
        let form = format!(
            "grant_type=authorization_code&client_id={}&client_secret={}&code={}&redirect_uri={}&scope={}",
            self.s("client_id"),
            url_encode(&self.s("client_secret")),
            url_encode(&url_decode(&code)),
            url_encode(REDIRECT),
            url_encode(&self.s("delegated_scope"))
        );
        let (status, body) = self
            .https("POST", &path_of(self.s("token_url"))?, &form)
            .await?;
        let v: Value = serde_json::from_slice(&body).map_err(|e| err(e.to_string()))?;
        match v["refresh_token"].as_str() {
            Some(t) if status == 200 => Ok(t.to_string()),
            _ => Err(err(format!("code redemption failed: {status} {v}"))),
        }
    }

    /// One control request (`POST /_sandbox/{what}` with a JSON body), e.g. `app` to change
    /// the admin-consented application permissions of a client.
    pub async fn control(&self, what: &str, body: &Value) -> io::Result<Value> {
        let (status, reply) = self
            .https("POST", &format!("/_sandbox/{what}"), &body.to_string())
            .await?;
        let v: Value = serde_json::from_slice(&reply).map_err(|e| err(e.to_string()))?;
        if status != 200 {
            return Err(err(format!("POST /_sandbox/{what}: {status} {v}")));
        }
        Ok(v)
    }

    /// The sandbox's counters (`GET /_sandbox/counters`).
    pub async fn counters(&self) -> io::Result<Value> {
        let (status, body) = self.https("GET", "/_sandbox/counters", "").await?;
        let v: Value = serde_json::from_slice(&body).map_err(|e| err(e.to_string()))?;
        if status != 200 {
            return Err(err(format!("bad counters reply {status} {v}")));
        }
        Ok(v)
    }

    /// Token requests of one grant type seen so far (`refresh_token`, `client_credentials`, …).
    pub async fn token_requests_of(&self, grant: &str) -> io::Result<u64> {
        let v = self.counters().await?;
        v["token_requests"][grant]
            .as_u64()
            .ok_or_else(|| err(format!("no token_requests.{grant} in the counters: {v}")))
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

/// Percent-encoding for a form or query value (everything but unreserved characters).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Undo [`url_encode`] (and `+` for space) in a query value.
pub fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(x) => {
                        out.push(x);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
    fn url_coding() {
        assert_eq!(url_encode("a b/c:d"), "a%20b%2Fc%3Ad");
        assert_eq!(url_decode("a%20b%2Fc%3Ad+e"), "a b/c:d e");
        assert_eq!(url_decode("100%"), "100%");
        assert_eq!(url_decode(&url_encode("1.AXEA-x~y")), "1.AXEA-x~y");
    }

    #[test]
    fn own_process() {
        let pid = std::process::id();
        assert!(cpu_secs(pid).is_some());
        assert!(rss_kib(pid).unwrap() > 0);
    }
}
