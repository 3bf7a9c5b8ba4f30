//! The authorization-code flow of `authbridge login` (PKCE S256 and a random `state`): the browser
//! comes back to the loopback listener ([`super::redirect`]), or the user pastes the address it was
//! sent to (`--paste`); the code is then exchanged once.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::context::{Ctx, LoginError, say};
use super::redirect::{Request, accept, loopback, respond};
use crate::secret::SecretString;
use crate::token::{Pkce, authorize_url, code_from_redirect, random_state};

/// Used when the provider names no `redirect_uri`.
pub const DEFAULT_REDIRECT_URI: &str = "http://localhost:8925/callback";
/// Largest pasted line.
const MAX_PASTE: usize = 64 * 1024;

pub(super) async fn auth_code(
    ctx: &Ctx<'_>,
    paste: bool,
    timeout: Duration,
    out: &mut (dyn Write + Send),
    input: &mut (dyn AsyncBufRead + Unpin + Send),
) -> Result<(), LoginError> {
    let provider = ctx.provider;
    let account = ctx.account;
    let redirect_uri = provider
        .redirect_uri
        .clone()
        .unwrap_or_else(|| DEFAULT_REDIRECT_URI.to_owned());
    let failed_io =
        |e: std::io::Error| LoginError::Failed(format!("cannot make a random value: {e}"));
    let pkce = Pkce::generate().map_err(failed_io)?;
    let state = random_state().map_err(failed_io)?;
    let consent;
    let for_consent = if ctx.extra_consent.is_empty() {
        provider
    } else {
        let mut p = provider.clone();
        p.scopes.extend(ctx.extra_consent.iter().cloned());
        consent = p;
        &consent
    };
    let Some(url) = authorize_url(for_consent, &redirect_uri, &state, &pkce, Some(ctx.mailbox))
    else {
        return Err(LoginError::Usage(format!(
            "provider `{}` has no authorize_url: set `authorize_url`, or use `authbridge login \
             {account} --device-code`",
            provider.name
        )));
    };
    let minutes = timeout.as_secs().div_ceil(60);
    if paste {
        say(
            out,
            &format!(
                "To authorise account {account} ({}), open this address in a browser on any machine \
                 and sign in as that mailbox:\n\n  {url}\n\n\
                 The browser is then sent to {redirect_uri}?code=… — the page may fail to load; that \
                 is expected.\nCopy the whole address from the browser's address bar and paste it \
                 here, then press Enter:",
                ctx.mailbox
            ),
        );
        let line = read_paste(input, timeout).await?;
        let params = pasted_params(&line).ok_or_else(|| {
            LoginError::Failed(
                "the pasted text holds no `code=` or `error=`: paste the whole address the browser \
                 was sent to (starting with the redirect URI)"
                    .to_owned(),
            )
        })?;
        if params.get("state").map(String::as_str) != Some(state.as_str()) {
            return Err(LoginError::Failed(format!(
                "the pasted address belongs to another login attempt (its state does not match); \
                 run `authbridge login {account} --paste` again and paste the address of that attempt"
            )));
        }
        let code = code_or_error(&params, account)?;
        return exchange_code(ctx, &code, &redirect_uri, &pkce).await;
    }

    let lb = loopback(&redirect_uri).map_err(LoginError::Usage)?;
    let (tx, mut rx) = mpsc::channel::<(TcpStream, Request)>(8);
    let mut accept_tasks = Vec::new();
    for (i, addr) in lb.addrs.iter().enumerate() {
        match TcpListener::bind(addr).await {
            Ok(l) => accept_tasks.push(tokio::spawn(accept(l, lb.path.clone(), tx.clone()))),
            // ::1 is a bonus (browsers may try it for `localhost`); 127.0.0.1 is required.
            Err(_) if i > 0 => {}
            Err(e) => {
                let why = if e.kind() == std::io::ErrorKind::AddrInUse {
                    format!(
                        "port {} is already in use (an `authbridge run` with `admin.listen` on it, or \
                         another login?)",
                        lb.port
                    )
                } else {
                    e.to_string()
                };
                return Err(LoginError::Failed(format!(
                    "cannot listen on {addr} for the browser's redirect: {why} — free the port, or \
                     set `redirect_uri` of provider `{}` to another registered loopback address, or \
                     use `authbridge login {account} --paste`",
                    provider.name
                )));
            }
        }
    }
    drop(tx);
    struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            for t in &self.0 {
                t.abort();
            }
        }
    }
    let _accepting = AbortOnDrop(accept_tasks);
    say(
        out,
        &format!(
            "To authorise account {account} ({}), open this address in a browser and sign in as that \
             mailbox:\n\n  {url}\n\n\
             Waiting up to {minutes} min for the browser to come back to {redirect_uri}.\n\
             Browser on another machine? Forward the port first: ssh -L {port}:localhost:{port} \
             <this host>, or run `authbridge login {account} --paste`.",
            ctx.mailbox,
            port = lb.port,
        ),
    );
    let deadline = Instant::now() + timeout;
    loop {
        let (mut stream, req) = tokio::select! {
            got = rx.recv() => match got {
                Some(v) => v,
                None => return Err(LoginError::Failed("the redirect listener stopped".to_owned())),
            },
            () = tokio::time::sleep_until(deadline) => {
                return Err(LoginError::Failed(format!(
                    "no sign-in came back to {redirect_uri} within {minutes} min; run `authbridge \
                     login {account}` again (or use `--paste` / `--device-code`)"
                )));
            }
        };
        if req.params.get("state").map(String::as_str) != Some(state.as_str()) {
            respond(
                &mut stream,
                400,
                "This sign-in response does not belong to the login running now (state mismatch) \
                 and was ignored. Start again from the address authbridge printed.",
            )
            .await;
            eprintln!(
                "authbridge: ignored a redirect whose state does not match this login (an old tab, \
                 or not from this login); still waiting"
            );
            continue;
        }
        let code = match code_or_error(&req.params, account) {
            Ok(c) => c,
            Err(e) => {
                respond(&mut stream, 400, &e.to_string()).await;
                return Err(e);
            }
        };
        let result = exchange_code(ctx, &code, &redirect_uri, &pkce).await;
        match &result {
            Ok(()) => {
                respond(
                    &mut stream,
                    200,
                    &format!(
                        "authbridge: account {account} is authorised. You can close this window."
                    ),
                )
                .await;
            }
            Err(e) => respond(&mut stream, 502, &format!("authbridge: {e}")).await,
        }
        return result;
    }
}

/// The query parameters of a pasted redirect address (or of a bare query string).
fn pasted_params(line: &str) -> Option<HashMap<String, String>> {
    let line = line.trim();
    let query = match line.split_once('?') {
        Some((_, q)) => q,
        None => line,
    };
    let query = query.split('#').next().unwrap_or("");
    let params: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    (params.contains_key("code") || params.contains_key("error")).then_some(params)
}

/// The `code`, or the provider's refusal as an error.
fn code_or_error(
    params: &HashMap<String, String>,
    account: &str,
) -> Result<SecretString, LoginError> {
    code_from_redirect(params, &format!("run `authbridge login {account}` again"))
        .map_err(|e| LoginError::Failed(e.0))
}

async fn exchange_code(
    ctx: &Ctx<'_>,
    code: &SecretString,
    redirect_uri: &str,
    pkce: &Pkce,
) -> Result<(), LoginError> {
    crate::token::exchange_code(
        ctx.manager,
        ctx.provider,
        ctx.account,
        code,
        redirect_uri,
        pkce,
    )
    .await
    .map_err(|e| LoginError::Failed(e.0))
}

async fn read_paste(
    input: &mut (dyn AsyncBufRead + Unpin + Send),
    timeout: Duration,
) -> Result<String, LoginError> {
    let mut line = Vec::new();
    let read = async {
        let mut limited = input.take(MAX_PASTE as u64);
        limited.read_until(b'\n', &mut line).await
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(0)) => Err(LoginError::Failed(
            "nothing was pasted (end of input)".to_owned(),
        )),
        Ok(Ok(_)) => Ok(String::from_utf8_lossy(&line).into_owned()),
        Ok(Err(e)) => Err(LoginError::Failed(format!(
            "cannot read the pasted address: {e}"
        ))),
        Err(_) => Err(LoginError::Failed(format!(
            "nothing was pasted within {} min",
            timeout.as_secs().div_ceil(60)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pasted_addresses() {
        let p = pasted_params("  http://localhost:8925/callback?code=C1&state=S&session_state=x\n")
            .unwrap();
        assert_eq!((p["code"].as_str(), p["state"].as_str()), ("C1", "S"));
        let p = pasted_params("code=C2&state=S").unwrap();
        assert_eq!(p["code"], "C2");
        let p =
            pasted_params("http://localhost/cb?error=access_denied&error_description=no&state=S")
                .unwrap();
        assert!(
            code_or_error(&p, "tickets")
                .unwrap_err()
                .to_string()
                .contains("access_denied")
        );
        assert!(pasted_params("hello").is_none());
        assert!(pasted_params("").is_none());
    }
}
