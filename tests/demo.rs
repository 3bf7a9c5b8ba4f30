//! The README's first command, `./demo.sh`, as a newcomer runs it on a machine where other
//! services already hold the default ports: it must pick free ports, say which, carry a mail
//! through authbridge and back, name the port and the variable when an explicitly chosen port is
//! taken, and leave nothing running once stopped by its pid.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The folder holding both binaries. `cargo test --workspace` builds the sandbox's binary next
/// to ours; a plain `cargo test` does not, so build it then (a no-op when it is fresh).
fn bin_dir() -> PathBuf {
    let ours = PathBuf::from(env!("CARGO_BIN_EXE_authbridge"));
    let dir = ours.parent().unwrap().to_path_buf();
    if !dir.join("authbridge-sandbox").exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "--quiet", "-p", "authbridge-sandbox"])
            .current_dir(repo())
            .status()
            .expect("cargo runs");
        assert!(st.success(), "building authbridge-sandbox failed");
    }
    dir
}

fn alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; its state is Z.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn hold(port: u16) -> Option<TcpListener> {
    TcpListener::bind(("127.0.0.1", port)).ok()
}

fn demo(dir: &Path, envs: &[(&str, String)]) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("demo.sh"))
        .env("AUTHBRIDGE_DEMO_BIN", bin_dir())
        .env("DEMO_DIR", dir)
        .env_remove("DEMO_SMTP_PORT")
        .env_remove("DEMO_IMAP_PORT")
        .env_remove("DEMO_POP3_PORT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

#[test]
fn demo_picks_free_ports_carries_a_mail_and_stops_cleanly() {
    // The default ports are held (by us, or by whatever already has them on this machine).
    let _held: Vec<_> = [1587, 1143, 1110, 18443]
        .into_iter()
        .filter_map(hold)
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let mut child = demo(tmp.path(), &[]).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut out = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !out.contains("authbridge is running against the sandbox") {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                out.push_str(&line);
                out.push('\n');
            }
            Err(_) => {
                let _ = child.kill();
                let err = child.wait_with_output().unwrap().stderr;
                panic!(
                    "demo did not come up:\n{out}\n{}",
                    String::from_utf8_lossy(&err)
                );
            }
        }
    }
    // The mail went through and came back.
    assert!(out.contains("Hello through authbridge."), "{out}");
    // It did not take a held default port, and said which one it took.
    let smtp_line = out
        .lines()
        .find(|l| l.contains("==> starting authbridge: SMTP 127.0.0.1:"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(!smtp_line.contains("127.0.0.1:1587,"), "{smtp_line}");
    let pids: Vec<u32> = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("pids: "))
        .unwrap_or_else(|| panic!("{out}"))
        .split_whitespace()
        .map(|kv| kv.split_once('=').unwrap().1.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "{out}");
    assert!(pids.iter().all(|&p| alive(p)));

    // Stopping the demo by its pid stops everything it started.
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            for p in &pids {
                let _ = Command::new("kill")
                    .args(["-KILL", &p.to_string()])
                    .status();
            }
            panic!("the demo did not exit within 20 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "the demo reports that it was stopped");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for p in &pids {
        assert!(!alive(*p), "pid {p} left running after the demo stopped");
    }
    // The log survived the stop.
    let log = std::fs::read_to_string(tmp.path().join("authbridge.log")).unwrap();
    assert!(log.contains("login ok"), "{log}");
    assert!(log.contains("stopped"), "{log}");

    // An explicitly chosen port that is taken: the message names the port and the variable.
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let out = demo(tmp.path(), &[("DEMO_SMTP_PORT", port.to_string())])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("port {port}")) && err.contains("DEMO_SMTP_PORT"),
        "{err}"
    );
}
