//! `authbridge status` from the binary tells the truth (issue 13): it runs without the provider
//! secret, shows a failed `check` as `state=failed` with its fix and exits 1, and calls a status
//! file whose writer exited mid-request, or whose request outlived its bound, stale (exit 1).

use std::path::Path;
use std::process::Command;

use authbridge::token::{PersistedStatus, StatusFiles, unix_secs};

/// Runs the binary with `args` (and `--config`), the named variables set and everything else
/// inherited except `SECRET_ENV`: (exit code, stdout, stderr).
fn authbridge(args: &[&str], config: &Path, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_authbridge"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove(SECRET_ENV)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const SECRET_ENV: &str = "AUTHBRIDGE_TEST_STATUS_SECRET";

/// An app-only account whose token endpoint refuses connections, its secret in `SECRET_ENV`.
fn config(dir: &Path) -> std::path::PathBuf {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let path = dir.join("authbridge.yaml");
    std::fs::write(
        &path,
        format!(
            "state_dir: ./state\nproviders:\n  m365:\n    type: microsoft\n    tenant: \
             fabrikam.onmicrosoft.com\n    client_id: 0b5e7f1c-6c1e-4b0a-9a53-2f8d6c1e4b0a\n    \
             client_secret: {{ env: {SECRET_ENV} }}\n    flow: client_credentials\n    \
             token_url: http://127.0.0.1:{port}/token\naccounts:\n  - name: tickets\n    \
             provider: m365\n    mailbox: tickets@fabrikam.com\nlisteners:\n  - name: smtp\n    \
             protocol: smtp\n    listen: 127.0.0.1:0\n    upstream: {{ host: 127.0.0.1, port: \
             {port}, tls: starttls }}\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn status_needs_no_secret_and_shows_a_failed_check_until_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());

    // No secret in the environment: status still runs.
    let (code, out, err) = authbridge(&["status"], &config, &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("tickets  flow=client_credentials")
            && out.contains("state=ok (no token request made yet"),
        "{out}"
    );

    // check fails (the token endpoint is closed) …
    let (code, out, err) = authbridge(&["check"], &config, &[(SECRET_ENV, "s3cret")]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("account tickets: FAILED: could not get a token"),
        "{out}"
    );

    // … and status says so, with the fix, every time, and exits 1 (it said state=refreshing, 0).
    for _ in 0..2 {
        let (code, out, err) = authbridge(&["status"], &config, &[]);
        assert_eq!(code, Some(1), "{out}{err}");
        let state = out.split("  state=").nth(1).unwrap_or_default();
        assert!(
            state.starts_with("failed: token request (client_credentials) for account tickets failed: cannot reach the token endpoint")
                && state.contains(" — authbridge retries automatically"),
            "{out}"
        );
        assert!(err.contains("some accounts need attention"), "{err}");
    }
}

#[test]
fn a_status_file_left_mid_request_is_stale() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let files = StatusFiles::new(&dir.path().join("state"));
    let now = unix_secs(std::time::SystemTime::now());
    let marked = |pid: u32, since: u64| PersistedStatus {
        account: "tickets".into(),
        updated_at: since,
        pid,
        flow: "client_credentials".into(),
        refreshing_since: Some(since),
        ..Default::default()
    };

    // The writer exited before recording the outcome (a `check` cut short, a crash).
    let mut exited = Command::new("true").spawn().unwrap();
    let gone = exited.id();
    exited.wait().unwrap();
    files.save(&marked(gone, now - 2)).unwrap();
    let (code, out, err) = authbridge(&["status"], &config, &[]);
    assert_eq!(code, Some(1), "{out}{err}");
    let state = out.split("  state=").nth(1).unwrap_or_default().trim_end();
    assert!(
        state.starts_with("stale (a token request started ")
            && state.ends_with(&format!(
                "s ago by pid {gone}, which has exited without recording the outcome; \
                 `authbridge check` tries again)"
            )),
        "{out}"
    );

    // The writer runs (this test) but its request started 10 minutes ago: bound 5 s + 30 s.
    files.save(&marked(std::process::id(), now - 600)).unwrap();
    let (code, out, err) = authbridge(&["status"], &config, &[]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains(&format!(
            "state=stale (a token request started 10m ago by pid {} has not finished, though it \
             may take 35s",
            std::process::id()
        )),
        "{out}"
    );

    // A request in flight for a few seconds, by a live process: refreshing, fine.
    files.save(&marked(std::process::id(), now)).unwrap();
    let (code, out, err) = authbridge(&["status"], &config, &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.trim_end().ends_with("state=refreshing"), "{out}");
}
