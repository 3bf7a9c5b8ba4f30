//! The real `authbridge run` binary as a child process, for the tests that need the binary
//! itself (signals, exit codes, pid file, sd-notify, log output): started with a config,
//! stdout and stderr collected line by line, listener addresses read from its `listening`
//! log lines, killed on drop.
//!
//! The child's environment is cleared of the variables that change how it runs
//! (`AUTHBRIDGE_CONFIG`, `AUTHBRIDGE_LOG_FORMAT`, `AUTHBRIDGE_KEY`, `NOTIFY_SOCKET`,
//! `WATCHDOG_USEC`, `RUST_LOG`), so only the `envs` a test passes reach it. Every wait has a
//! bound and names what it waited for when it runs out.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The bound on waiting for a log line, unless a test gives its own.
pub const LOG_WAIT: Duration = Duration::from_secs(30);

/// How often a wait looks at the log again.
const POLL: Duration = Duration::from_millis(50);

/// Variables removed from the child's environment before the test's own are set.
const CLEARED: &[&str] = &[
    "AUTHBRIDGE_CONFIG",
    "AUTHBRIDGE_LOG_FORMAT",
    "AUTHBRIDGE_KEY",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "RUST_LOG",
];

/// A running `authbridge run`.
pub struct Running {
    child: Child,
    /// Its stdout and stderr lines, in the order the reader threads got them.
    lines: Arc<Mutex<Vec<String>>>,
    /// The reader threads; they end when the child's stdout and stderr close.
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    /// `authbridge run --config <config>` with `envs`.
    pub fn start(config: &Path, envs: &[(&str, &str)]) -> Running {
        Self::spawn(Some(config), envs)
    }

    /// `authbridge run` without `--config`: the config comes from `envs`
    /// (`AUTHBRIDGE_CONFIG`).
    pub fn start_without_flag(envs: &[(&str, &str)]) -> Running {
        Self::spawn(None, envs)
    }

    fn spawn(config: Option<&Path>, envs: &[(&str, &str)]) -> Running {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_authbridge"));
        cmd.arg("run");
        if let Some(config) = config {
            cmd.arg("--config").arg(config);
        }
        for var in CLEARED {
            cmd.env_remove(var);
        }
        cmd.envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("authbridge run starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let outputs: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        let readers = outputs
            .into_iter()
            .map(|out| {
                let lines = Arc::clone(&lines);
                std::thread::spawn(move || {
                    for l in BufReader::new(out).lines().map_while(Result::ok) {
                        lines.lock().unwrap().push(l);
                    }
                })
            })
            .collect();
        Running {
            child,
            lines,
            readers,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything logged so far, one line each.
    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// The lines logged so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The first line (so far, or within `bound`) satisfying `matches`; panics naming `what`
    /// with the log when none comes.
    pub async fn wait_for_log(
        &self,
        what: &str,
        matches: impl Fn(&str) -> bool,
        bound: Duration,
    ) -> String {
        let deadline = Instant::now() + bound;
        let first = |lines: &[String]| lines.iter().find(|l| matches(l)).cloned();
        while Instant::now() < deadline {
            if let Some(l) = first(&self.lines.lock().unwrap()) {
                return l;
            }
            tokio::time::sleep(POLL).await;
        }
        self.wait_blocking(what, Duration::ZERO, first)
    }

    /// Wait (blocking the thread, up to `bound`) until `found` finds something in the log
    /// lines; panics naming `what` with the log when nothing comes.
    fn wait_blocking<T>(
        &self,
        what: &str,
        bound: Duration,
        found: impl Fn(&[String]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(v) = found(&self.lines.lock().unwrap()) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} from authbridge run:\n{}",
                self.log()
            );
            std::thread::sleep(POLL);
        }
    }

    /// The address of `listener` from its latest `listening` line (text log format), waiting
    /// for the first one up to [`LOG_WAIT`].
    pub async fn addr_of(&self, listener: &str) -> SocketAddr {
        let needle = format!("listener={listener} ");
        let what = format!("listening line for {listener}");
        self.wait_for_log(&what, |l| is_listening(l, &needle), LOG_WAIT)
            .await;
        let lines = self.lines.lock().unwrap();
        let l = lines
            .iter()
            .rev()
            .find(|l| is_listening(l, &needle))
            .unwrap();
        field(l, "addr=").parse().unwrap()
    }

    /// The admin listener's address from its `admin listening` line, waiting (blocking) up to
    /// [`LOG_WAIT`].
    pub fn admin_addr_blocking(&self) -> SocketAddr {
        let line = self.wait_blocking("admin listening line", LOG_WAIT, |lines| {
            lines
                .iter()
                .find(|l| l.contains("admin listening"))
                .cloned()
        });
        field(&line, "addr=").parse().unwrap()
    }

    /// Every listener's address once `n` listeners logged their `listening` line, waiting
    /// (blocking) up to [`LOG_WAIT`].
    pub fn listeners_blocking(&self, n: usize) -> HashMap<String, SocketAddr> {
        self.wait_blocking(&format!("{n} listening lines"), LOG_WAIT, |lines| {
            let addrs: HashMap<String, SocketAddr> = lines
                .iter()
                .filter(|l| is_listening(l, "listener="))
                .map(|l| (field(l, "listener="), field(l, "addr=").parse().unwrap()))
                .collect();
            (addrs.len() >= n).then_some(addrs)
        })
    }

    /// Send `signal` (a `kill` name: `HUP`, `TERM`, …).
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -{signal} failed");
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Wait (blocking, up to `bound`) for it to exit on its own.
    pub fn wait_exit(&mut self, what: &str, bound: Duration) -> ExitStatus {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(s) = self.try_wait() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("authbridge run: {what}:\n{}", self.log());
            }
            std::thread::sleep(POLL);
        }
    }

    /// SIGTERM, then wait (up to 30 s) for it to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.wait_exit("did not stop after SIGTERM", LOG_WAIT)
    }

    /// Everything it logged, read to the end of its output; only after it exited.
    pub fn log_after_exit(&mut self) -> String {
        assert!(self.try_wait().is_some(), "authbridge run is still running");
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        self.log()
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `listening` line (not `admin listening`) of the listener `needle` names.
fn is_listening(line: &str, needle: &str) -> bool {
    line.contains(" listening ") && !line.contains("admin listening") && line.contains(needle)
}

/// The value after `key` (`addr=`, `listener=`) in a text log line, quotes removed.
pub fn field(line: &str, key: &str) -> String {
    let start = line.find(key).map(|i| i + key.len()).unwrap_or(0);
    line[start..]
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_matches('"')
        .to_string()
}
