//! The `on_reauth_needed` hook: a command run once each time an account enters the needs-login
//! state (e.g. to mail or page an admin).
//!
//! Safe by construction: the command is an argv list run without a shell; the environment is
//! cleared except for a few harmless variables (`PATH`, `HOME`, `LANG`, `LC_ALL`, `TZ`, `USER`,
//! `LOGNAME`), so neither `AUTHBRIDGE_KEY` nor a client secret given as `{ env: … }` reaches it;
//! stdin is empty; the run is bounded (its process group is killed after the timeout); its output
//! is read up to a cap and logged. What it gets: `AUTHBRIDGE_ACCOUNT`, `AUTHBRIDGE_MAILBOX`, `AUTHBRIDGE_PROVIDER`,
//! `AUTHBRIDGE_HINT` (what happened — what to do), `AUTHBRIDGE_FIX` (what to do),
//! `AUTHBRIDGE_ERROR` (the OAuth2 `error`, may be empty) and `AUTHBRIDGE_AADSTS` (may be empty).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::error::TokenError;
use super::provider::AccountConfig;

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
        // Its own process group, so a timeout ends whatever it started too.
        #[cfg(unix)]
        cmd.process_group(0);
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
                #[cfg(unix)]
                if let Some(pid) = child.id() {
                    let _ = tokio::process::Command::new("kill")
                        .args(["-KILL", "--", &format!("-{pid}")])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .await;
                }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::token::failure::ErrorKind;
    use crate::token::provider::{Endpoints, Flow, ProviderConfig, ProviderKind};

    fn account() -> AccountConfig {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        AccountConfig {
            name: "tickets".into(),
            mailbox: "tickets@contoso.com".into(),
            provider: Arc::new(ProviderConfig {
                name: "m365".into(),
                kind: ProviderKind::Microsoft,
                flow: Flow::AuthorizationCode,
                client_id: "cid".into(),
                credential: crate::token::CredentialKind::None,
                client_secret: None,
                assertion: None,
                endpoints: Endpoints {
                    token_url: "https://x/t".into(),
                    authorize_url: None,
                    device_code_url: None,
                },
                scopes: Vec::new(),
                redirect_uri: None,
                http: crate::token::HttpClient::new(
                    Arc::new(tls),
                    crate::token::ProxySetting::Direct,
                ),
            }),
        }
    }

    #[tokio::test]
    async fn a_hanging_hook_is_killed_and_a_missing_one_is_logged() {
        let err = TokenError::new("tickets", ErrorKind::Permanent, "refused", "run it");
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("after-sleep");
        let mut hook = ReauthHook::new(vec![
            "/bin/sh".into(),
            "-c".into(),
            format!("(sleep 1; touch {}) & sleep 5", marker.display()),
        ])
        .unwrap();
        hook.timeout = Duration::from_millis(200);
        let started = std::time::Instant::now();
        hook.spawn(&account(), &err).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!marker.exists(), "the hook and what it started were killed");

        let missing = ReauthHook::new(vec!["/nonexistent/notify".into()]).unwrap();
        missing.spawn(&account(), &err).await.unwrap();
        assert!(ReauthHook::new(Vec::new()).is_none());
        assert!(ReauthHook::new(vec![String::new()]).is_none());
    }
}
