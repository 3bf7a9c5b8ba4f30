//! The device-code flow of `authbridge login` (RFC 8628): print the verification URI and the user
//! code, then poll the token endpoint at the given interval until the sign-in completes, is
//! declined or the code expires.

use std::io::Write;
use std::time::Duration;

use tokio::time::Instant;

use super::context::{Ctx, LoginError, say};
use crate::token::{DEVICE_CODE_GRANT_TYPE, ErrorKind, device_authorization};

pub(super) async fn device_code(
    ctx: &Ctx<'_>,
    out: &mut (dyn Write + Send),
) -> Result<(), LoginError> {
    let account = ctx.account;
    let settings = ctx.manager.settings();
    let da = device_authorization(ctx.provider, account, settings)
        .await
        .map_err(|e| match e.kind {
            ErrorKind::NotConfigured => LoginError::Usage(e.to_string()),
            _ => LoginError::Failed(e.to_string()),
        })?;
    let minutes = da.expires_in.as_secs().div_ceil(60);
    let mut text = format!(
        "To authorise account {account} ({}), open\n\n  {}\n\nand enter the code\n\n  {}\n\n",
        ctx.mailbox, da.verification_uri, da.user_code
    );
    if let Some(c) = &da.verification_uri_complete {
        text.push_str(&format!("(or open {c})\n"));
    }
    text.push_str(&format!(
        "then sign in as that mailbox. Waiting up to {minutes} min…"
    ));
    say(out, &text);
    let again = format!("run `authbridge login {account} --device-code` again");
    let deadline = Instant::now() + da.expires_in;
    // RFC 8628 §3.5: poll no faster than `interval` (default 5 s); we never go below 1 s.
    let mut interval = da.interval.max(Duration::from_secs(1));
    let mut wait = interval;
    let mut transient_warned = false;
    loop {
        if Instant::now() + wait >= deadline {
            tokio::time::sleep_until(deadline).await;
            return Err(LoginError::Failed(format!(
                "the code expired before the sign-in was completed; {again}"
            )));
        }
        tokio::time::sleep(wait).await;
        wait = interval;
        let params = [
            ("grant_type", DEVICE_CODE_GRANT_TYPE),
            ("device_code", da.device_code.expose().as_str()),
        ];
        let e = match ctx.manager.exchange_and_store(account, &params).await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        match e.error.as_deref() {
            Some("authorization_pending") => {}
            Some("slow_down") => {
                interval += Duration::from_secs(5);
                wait = interval;
                eprintln!(
                    "authbridge: the identity provider asked to poll more slowly; polling every {} s",
                    interval.as_secs()
                );
            }
            Some("authorization_declined" | "access_denied") => {
                return Err(LoginError::Failed(format!(
                    "the sign-in was declined at the verification page; {again} and approve the \
                     request"
                )));
            }
            Some("expired_token") => {
                return Err(LoginError::Failed(format!(
                    "the code expired before the sign-in was completed; {again}"
                )));
            }
            Some("bad_verification_code") => {
                return Err(LoginError::Failed(format!(
                    "the identity provider does not know this device code; {again}"
                )));
            }
            _ if e.kind == ErrorKind::Transient => {
                if !transient_warned {
                    eprintln!("authbridge: {e} (still polling)");
                    transient_warned = true;
                }
                wait = interval.max(
                    e.retry_after
                        .unwrap_or_default()
                        .min(Duration::from_secs(60)),
                );
            }
            _ => return Err(LoginError::Failed(e.to_string())),
        }
    }
}
