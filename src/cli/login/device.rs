//! The device-code flow of `authbridge login` (RFC 8628): print the verification URI and the user
//! code, then poll the token endpoint (`token::poll_device_code`, shared with the admin page)
//! until the sign-in completes, is declined or the code expires.

use super::context::{Ctx, LoginError, say};
use crate::token::{ErrorKind, device_authorization, poll_device_code};
use std::io::Write;

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
    let mut note = |text: &str| eprintln!("authbridge: {text}");
    poll_device_code(ctx.manager, account, &da, &again, &mut note)
        .await
        .map_err(|e| LoginError::Failed(e.0))
}
