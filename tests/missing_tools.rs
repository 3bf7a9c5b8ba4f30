//! A tool the tests need that is missing must fail the run in CI (`CI=true`) and only skip,
//! with one line, elsewhere: `fuzz/smoke.sh` without a nightly toolchain or cargo-fuzz, and the
//! python-based tests without `python3`. Each is run here with `PATH` stripped of the tool.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The absolute path of `tool` on this machine's `PATH`.
fn which(tool: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{tool} not found on PATH"))
}

/// A `PATH` directory holding only these tools (symlinks), so nothing else can be found.
fn stripped_path(tools: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for tool in tools {
        std::os::unix::fs::symlink(which(tool), dir.path().join(tool)).unwrap();
    }
    dir
}

fn smoke(path: &Path, ci: Option<&str>) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/smoke.sh");
    let mut cmd = Command::new(which("bash"));
    cmd.arg(script)
        .env("PATH", path)
        .env("HOME", path)
        .env_remove("CI")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO");
    if let Some(ci) = ci {
        cmd.env("CI", ci);
    }
    cmd.output().expect("bash runs")
}

/// `fuzz/smoke.sh` without cargo, rustup or cargo-fuzz: exit 1 under `CI=true`, a one-line
/// skip (exit 0) otherwise.
#[test]
fn fuzz_smoke_fails_in_ci_when_the_toolchain_is_missing() {
    let path = stripped_path(&["dirname", "date"]);
    let out = smoke(path.path(), Some("true"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("fuzz smoke: FAILED: no nightly toolchain") && stdout.contains("CI=true"),
        "{stdout}"
    );
    assert!(!stdout.contains("SKIPPED"), "{stdout}");

    let out = smoke(path.path(), None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let skipped: Vec<_> = stdout.lines().filter(|l| l.contains("SKIPPED")).collect();
    assert_eq!(skipped.len(), 1, "{stdout}");
}

/// Run [`child_needs_python3`] of this binary with `PATH` stripped of python3.
fn python_child(ci: Option<&str>) -> Output {
    let path = stripped_path(&[]);
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_needs_python3",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("PATH", path.path())
    .env("MISSING_TOOLS_CHILD", "1")
    .env_remove("CI");
    if let Some(ci) = ci {
        cmd.env("CI", ci);
    }
    cmd.output().expect("the test binary runs")
}

/// Stands for a python-based test (tests/imap.rs, tests/pop3.rs use the same check); runs its
/// check only when started by [`python_tests_fail_in_ci_when_python3_is_missing`].
#[test]
fn child_needs_python3() {
    if std::env::var_os("MISSING_TOOLS_CHILD").is_none() {
        return;
    }
    if common::python3("child_needs_python3").is_none() {
        return;
    }
    panic!("python3 was found on a PATH without it");
}

/// The python-based tests' check: a panic naming the tool under `CI=true`, a one-line skip
/// otherwise.
#[test]
fn python_tests_fail_in_ci_when_python3_is_missing() {
    let out = python_child(Some("true"));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("python3 is missing and CI=true: child_needs_python3 cannot run"),
        "{all}"
    );

    let out = python_child(None);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("child_needs_python3: SKIPPED: python3 is not installed"),
        "{all}"
    );
}
