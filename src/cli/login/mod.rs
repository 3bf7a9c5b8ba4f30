//! `authbridge login ACCOUNT`: the first delegated authorisation of an account, three ways.
//!
//! - **Browser** (default for `flow: authorization_code`): authorization code with PKCE (S256) and a
//!   random `state`. A one-shot HTTP listener on the loopback `redirect_uri` (default
//!   `http://localhost:8925/callback`; bound on 127.0.0.1, and ::1 too when the host is
//!   `localhost`) waits for the browser's redirect. Works over SSH with `ssh -L 8925:localhost:8925`.
//!   A redirect whose `state` does not match is answered 400 and ignored (it cannot be from this
//!   login); a matching one is exchanged once.
//! - **Paste** (`--paste`): the same URL; the user pastes the address the browser was sent to (the
//!   page may fail to load), for machines whose loopback port cannot be reached.
//! - **Device code** (`--device-code`, default for `flow: device_code`): prints the verification URI
//!   and the user code, polls at the given interval, adds 5 s on `slow_down`, stops on expiry and on
//!   `authorization_declined`.
//!
//! The code → token exchange goes through [`TokenManager::exchange_and_store`], which stores the
//! refresh token (encrypted, atomic replace) before anything else and updates the status file; a
//! running authbridge picks the new token up at its next refresh (it re-reads the store). The local
//! password plays no part. Nothing secret is printed: not the code, the verifier or any token.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::Config;
use crate::secret::SecretString;
use crate::token::{
    DEVICE_CODE_GRANT_TYPE, ErrorKind, Flow, Pkce, ProviderConfig, ProviderKind, TokenManager,
    authorize_url, device_authorization, random_state,
};

/// Used when the provider names no `redirect_uri`.
pub const DEFAULT_REDIRECT_URI: &str = "http://localhost:8925/callback";
/// Largest HTTP request head the callback listener reads.
const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// Largest pasted line.
const MAX_PASTE: usize = 64 * 1024;
/// A browser connection gets this long to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How to authorise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Browser,
    Paste,
    DeviceCode,
}

/// What `authbridge login` was asked for.
#[derive(Clone, Debug)]
pub struct LoginOptions {
    /// `None`: device code for `flow: device_code`, else the browser.
    pub mode: Option<Mode>,
    /// How long to wait for the browser's redirect or the pasted address.
    pub timeout: Duration,
}

impl Default for LoginOptions {
    fn default() -> Self {
        LoginOptions {
            mode: None,
            timeout: Duration::from_secs(600),
        }
    }
}

/// Why a login did not happen. `Usage` is a config or command-line problem (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

/// Runs one login for `account`, writing instructions to `out` and reading a pasted address from
/// `input` (`--paste` only).
pub async fn login(
    config: &Config,
    account: &str,
    opts: &LoginOptions,
    out: &mut (dyn Write + Send),
    input: &mut (dyn AsyncBufRead + Unpin + Send),
) -> Result<(), LoginError> {
    let Some(acc) = config.account(account) else {
        let known: Vec<_> = config.accounts.iter().map(|a| a.name.as_str()).collect();
        return Err(LoginError::Usage(format!(
            "no account named `{account}` in {} (accounts: {})",
            config.file.display(),
            known.join(", ")
        )));
    };
    let provider = Arc::clone(&acc.provider);
    if !provider.flow.is_delegated() {
        return Err(LoginError::Usage(format!(
            "account `{account}` uses provider `{}` with flow client_credentials (app-only): there \
             is nothing to log in; run `authbridge check` to test it",
            provider.name
        )));
    }
    let mode = opts.mode.unwrap_or(match provider.flow {
        Flow::DeviceCode => Mode::DeviceCode,
        _ => Mode::Browser,
    });
    let manager = crate::server::token_manager(config)
        .map_err(|e| LoginError::Failed(format!("cannot open the token store: {e}")))?;
    let ctx = Ctx {
        manager: &manager,
        provider: &provider,
        account,
        mailbox: &acc.mailbox,
    };
    match mode {
        Mode::DeviceCode => device_code(&ctx, out).await?,
        Mode::Browser | Mode::Paste => {
            auth_code(&ctx, mode == Mode::Paste, opts.timeout, out, input).await?
        }
    }
    let path = manager
        .store()
        .path(account)
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    say(
        out,
        &format!(
            "Account {account} ({}) is authorised: the refresh token is stored, encrypted, in {path}.\n\
             A running authbridge uses it from its next token refresh; no restart needed.",
            acc.mailbox
        ),
    );
    Ok(())
}

struct Ctx<'a> {
    manager: &'a Arc<TokenManager>,
    provider: &'a ProviderConfig,
    account: &'a str,
    mailbox: &'a str,
}

fn say(out: &mut (dyn Write + Send), text: &str) {
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

// ---- authorization code + PKCE ----------------------------------------------------------------

/// A loopback `redirect_uri`: where to listen and which path the browser comes back to.
#[derive(Debug, PartialEq, Eq)]
pub struct Loopback {
    pub addrs: Vec<SocketAddr>,
    pub port: u16,
    pub path: String,
}

/// Parses a loopback `http://` redirect URI (`localhost`, `127.0.0.1` or `[::1]`).
pub fn loopback(redirect_uri: &str) -> Result<Loopback, String> {
    let not_loopback = || {
        format!(
            "redirect_uri {redirect_uri} is not a loopback http:// address (http://localhost:PORT/PATH), \
             so authbridge cannot receive the browser's redirect itself: use `--paste` (or \
             `--device-code`)"
        )
    };
    let uri: hyper::Uri = redirect_uri.parse().map_err(|_| not_loopback())?;
    if uri.scheme_str() != Some("http") {
        return Err(not_loopback());
    }
    let port = uri.port_u16().unwrap_or(80);
    let v4 = SocketAddr::from(([127, 0, 0, 1], port));
    let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    let addrs = match uri.host().map(|h| h.to_ascii_lowercase()).as_deref() {
        Some("localhost") => vec![v4, v6],
        Some("127.0.0.1") => vec![v4],
        Some("[::1]" | "::1") => vec![v6],
        _ => return Err(not_loopback()),
    };
    let path = match uri.path() {
        "" => "/".to_owned(),
        p => p.to_owned(),
    };
    Ok(Loopback { addrs, port, path })
}

async fn auth_code(
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
    let Some(url) = authorize_url(provider, &redirect_uri, &state, &pkce, Some(ctx.mailbox)) else {
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

/// One request to the callback path.
struct Request {
    params: HashMap<String, String>,
}

async fn accept(listener: TcpListener, path: String, tx: mpsc::Sender<(TcpStream, Request)>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let path = path.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut stream = stream;
            let head = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
                Ok(Some(h)) => h,
                _ => return,
            };
            match parse_request(&head, &path) {
                Some(params) => {
                    let _ = tx.send((stream, Request { params })).await;
                }
                None => respond(&mut stream, 404, "Not found.").await,
            }
        });
    }
}

/// The request head (up to the blank line), capped.
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return Some(buf);
        }
        if buf.len() > MAX_REQUEST_HEAD {
            return None;
        }
    }
}

/// `GET <path>?<query> HTTP/1.x` → the query parameters, if the path is the callback path.
fn parse_request(head: &[u8], path: &str) -> Option<HashMap<String, String>> {
    let line_end = head.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&head[..line_end]).ok()?.trim_end();
    let mut parts = line.split(' ');
    let (method, target) = (parts.next()?, parts.next()?);
    if method != "GET" {
        return None;
    }
    let (p, query) = target.split_once('?').unwrap_or((target, ""));
    (p == path).then(|| {
        form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect()
    })
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
    if let Some(error) = params.get("error") {
        let description = params
            .get("error_description")
            .map(|d| sanitize(d, 300))
            .unwrap_or_default();
        return Err(LoginError::Failed(format!(
            "the sign-in was refused: {} {description} — check the app registration (redirect URI, \
             permissions, consent) and run `authbridge login {account}` again",
            sanitize(error, 64)
        )));
    }
    match params.get("code").filter(|c| !c.is_empty()) {
        Some(c) => Ok(SecretString::new(c.clone())),
        None => Err(LoginError::Failed(
            "the redirect carries no authorization code".to_owned(),
        )),
    }
}

async fn exchange_code(
    ctx: &Ctx<'_>,
    code: &SecretString,
    redirect_uri: &str,
    pkce: &Pkce,
) -> Result<(), LoginError> {
    let scope = ctx.provider.scopes.join(" ");
    let mut params = vec![
        ("grant_type", "authorization_code"),
        ("code", code.expose().as_str()),
        ("redirect_uri", redirect_uri),
        ("code_verifier", pkce.verifier.expose().as_str()),
    ];
    if ctx.provider.kind == ProviderKind::Microsoft && !scope.is_empty() {
        params.push(("scope", &scope));
    }
    ctx.manager
        .exchange_and_store(ctx.account, &params)
        .await
        .map(|_| ())
        .map_err(|e| LoginError::Failed(e.to_string()))
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

async fn respond(stream: &mut TcpStream, status: u16, text: &str) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Bad Gateway",
    };
    let body = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>authbridge</title></head>\
         <body><p>{}</p></body></html>\n",
        html_escape(text)
    );
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: \
         {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Provider-supplied text for a terminal: no control characters, capped.
fn sanitize(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

// ---- device code ------------------------------------------------------------------------------

async fn device_code(ctx: &Ctx<'_>, out: &mut (dyn Write + Send)) -> Result<(), LoginError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses() {
        let l = loopback("http://localhost:8925/callback").unwrap();
        assert_eq!(l.port, 8925);
        assert_eq!(l.path, "/callback");
        assert_eq!(l.addrs.len(), 2);
        assert!(l.addrs[0].ip().is_loopback() && l.addrs[0].is_ipv4());
        assert_eq!(
            loopback("http://127.0.0.1:1234").unwrap(),
            Loopback {
                addrs: vec![SocketAddr::from(([127, 0, 0, 1], 1234))],
                port: 1234,
                path: "/".into()
            }
        );
        assert!(loopback("http://[::1]:99/cb").unwrap().addrs[0].is_ipv6());
        for bad in [
            "https://localhost:8925/callback",
            "http://example.com:8925/callback",
            "http://0.0.0.0:8925/",
            "https://login.microsoftonline.com/common/oauth2/nativeclient",
            "not a url",
        ] {
            let e = loopback(bad).unwrap_err();
            assert!(e.contains("--paste"), "{bad}: {e}");
        }
    }

    #[test]
    fn callback_requests() {
        let head = b"GET /callback?code=abc&state=s%201 HTTP/1.1\r\nHost: localhost\r\n\r\n";
        let p = parse_request(head, "/callback").unwrap();
        assert_eq!(p["code"], "abc");
        assert_eq!(p["state"], "s 1");
        assert!(parse_request(b"GET /favicon.ico HTTP/1.1\r\n\r\n", "/callback").is_none());
        assert!(parse_request(b"POST /callback?code=a HTTP/1.1\r\n\r\n", "/callback").is_none());
        assert!(parse_request(b"\xff\xfe\r\n\r\n", "/callback").is_none());
    }

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

    #[test]
    fn escaping() {
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(sanitize("a\u{1b}[31mb\nc", 10), "a[31mbc");
    }
}
