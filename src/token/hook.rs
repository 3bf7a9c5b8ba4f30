//! The `on_reauth_needed` hook: a command run once each time an account enters the needs-login
//! state (e.g. to mail or page an admin).
//!
//! Safe by construction: the command is an argv list run without a shell; the environment is
//! cleared except for a few harmless variables (`PATH`, `HOME`, `LANG`, `LC_ALL`, `TZ`, `USER`,
//! `LOGNAME`), so neither `AUTHBRIDGE_KEY` nor a client secret given as `{ env: … }` reaches it;
//! stdin is empty; the run is bounded (killed after the timeout); its output is read up to a cap
//! and logged. What it gets: `AUTHBRIDGE_ACCOUNT`, `AUTHBRIDGE_MAILBOX`, `AUTHBRIDGE_PROVIDER`,
//! `AUTHBRIDGE_HINT` (what happened — what to do), `AUTHBRIDGE_FIX` (what to do),
//! `AUTHBRIDGE_ERROR` (the OAuth2 `error`, may be empty) and `AUTHBRIDGE_AADSTS` (may be empty).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::{AccountConfig, TokenError};

/// Output kept per stream for the log.
const MAX_OUTPUT: u64 = 4096;
/// Environment variables the hook inherits (everything else is dropped).
const KEPT_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME"];
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The configured command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReauthHook {
    /// Program and arguments; never empty.
    pub argv: Vec<String>,
    /// The command is killed after this long. Default 30 s.
    pub timeout: Duration,
}

impl ReauthHook {
    /// `None` for an empty argv.
    pub fn new(argv: Vec<String>) -> Option<ReauthHook> {
        (!argv.is_empty() && !argv[0].is_empty()).then_some(ReauthHook {
            argv,
            timeout: Duration::from_secs(30),
        })
    }

    /// Runs the hook for `account` in the background (needs a Tokio runtime); logs the outcome.
    pub fn spawn(
        &self,
        account: &AccountConfig,
        error: &TokenError,
    ) -> tokio::task::JoinHandle<()> {
        let hook = self.clone();
        let vars = vec![
            ("AUTHBRIDGE_ACCOUNT", account.name.clone()),
            ("AUTHBRIDGE_MAILBOX", account.mailbox.clone()),
            ("AUTHBRIDGE_PROVIDER", account.provider.name.clone()),
            ("AUTHBRIDGE_HINT", error.hint()),
            ("AUTHBRIDGE_FIX", error.fix().to_owned()),
            ("AUTHBRIDGE_ERROR", error.error.clone().unwrap_or_default()),
            (
                "AUTHBRIDGE_AADSTS",
                error.aadsts.map(|c| c.to_string()).unwrap_or_default(),
            ),
        ];
        let name = account.name.clone();
        tokio::spawn(async move { hook.run(&name, vars).await })
    }

    async fn run(&self, account: &str, vars: Vec<(&'static str, String)>) {
        let program = &self.argv[0];
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(&self.argv[1..])
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for key in KEPT_ENV {
            if let Some(v) = std::env::var_os(key) {
                cmd.env(key, v);
            } else if *key == "PATH" {
                cmd.env(key, DEFAULT_PATH);
            }
        }
        for (k, v) in vars {
            // A NUL cannot be passed in the environment; messages never hold one, but be safe.
            cmd.env(k, v.replace('\0', " "));
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(
                    account,
                    program = %program,
                    "on_reauth_needed: cannot start the command: {e} — check the path and that it is executable"
                );
                return;
            }
        };
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let read = |s: Option<tokio::process::ChildStdout>| async move {
            let mut buf = Vec::new();
            if let Some(s) = s {
                let _ = s.take(MAX_OUTPUT).read_to_end(&mut buf).await;
            }
            buf
        };
        let read_err = |s: Option<tokio::process::ChildStderr>| async move {
            let mut buf = Vec::new();
            if let Some(s) = s {
                let _ = s.take(MAX_OUTPUT).read_to_end(&mut buf).await;
            }
            buf
        };
        let waited = tokio::time::timeout(self.timeout, async {
            let (out, err, status) = tokio::join!(read(stdout), read_err(stderr), child.wait());
            (out, err, status)
        })
        .await;
        match waited {
            Ok((out, err, Ok(status))) => {
                let first = |b: &[u8]| {
                    String::from_utf8_lossy(b)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(300)
                        .collect::<String>()
                };
                if status.success() {
                    tracing::info!(account, program = %program, output = %first(&out), "on_reauth_needed ran");
                } else {
                    tracing::warn!(
                        account,
                        program = %program,
                        %status,
                        stderr = %first(&err),
                        "on_reauth_needed failed"
                    );
                }
            }
            Ok((_, _, Err(e))) => {
                tracing::warn!(account, program = %program, "on_reauth_needed: waiting for the command failed: {e}");
            }
            Err(_) => {
                let _ = child.kill().await;
                tracing::warn!(
                    account,
                    program = %program,
                    timeout_secs = self.timeout.as_secs(),
                    "on_reauth_needed did not finish in time and was killed"
                );
            }
        }
    }
}
