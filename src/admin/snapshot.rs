//! What the admin page shows, gathered once per request: per account (provider, flow, mailbox,
//! state, token times, last error, sign-in under way) and per listener (protocol, address, TLS
//! mode, sessions now, logins in the last hour). `GET /` renders it as HTML, `GET /api/state`
//! as JSON for the page's script. Only state is read: no token request.
//!
//! Nothing secret is in it: no token, code, verifier, client secret, password hash or session
//! value — only names, times, states and the messages `authbridge status` prints.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::View;
use super::flows::{DeviceView, Flows};
use crate::config::{ClientTlsMode, ListenerMode};
use crate::metrics::Metrics;
use crate::token::status_report::{human, utc};

#[derive(Clone, Debug, Serialize)]
pub struct AccountView {
    pub name: String,
    pub provider: String,
    pub flow: &'static str,
    pub mailbox: String,
    /// `ok`, `refreshing`, `retrying` or `needs login: <hint>`.
    pub state: String,
    /// `ok`, `busy` or `bad`: the state's colour.
    pub tone: &'static str,
    pub access_token_expires: Option<String>,
    pub last_refresh: Option<String>,
    pub refresh_token_age: Option<String>,
    pub last_error: Option<String>,
    /// The page may start a browser sign-in (delegated, with an authorize URL).
    pub can_authorise: bool,
    /// The page may start a device-code sign-in (delegated, with a device-code URL).
    pub can_device_code: bool,
    pub device: Option<DeviceView>,
    /// The latest sign-in started from the page: `authorised at …` or its error.
    pub sign_in: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ListenerView {
    pub name: String,
    pub protocol: String,
    pub mode: &'static str,
    pub address: String,
    pub tls: &'static str,
    pub sessions: i64,
    pub logins_ok: u64,
    pub logins_failed: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    pub generated_at: String,
    pub redirect_uri: String,
    pub accounts: Vec<AccountView>,
    pub listeners: Vec<ListenerView>,
}

fn ago(now: SystemTime, t: SystemTime) -> String {
    match now.duration_since(t) {
        Ok(d) => format!("{} ({} ago)", utc(t), human(d)),
        Err(_) => utc(t),
    }
}

fn tls_mode(t: ClientTlsMode) -> &'static str {
    match t {
        ClientTlsMode::None => "none",
        ClientTlsMode::Starttls => "starttls",
        ClientTlsMode::Implicit => "implicit",
    }
}

/// Gather the snapshot. Blocking: reads the store's metadata.
pub fn gather(view: &View, metrics: &Metrics, flows: &Flows, redirect_uri: &str) -> Snapshot {
    let now = SystemTime::now();
    let accounts = view
        .tokens
        .status()
        .into_iter()
        .map(|a| {
            let valid = a.access_token_expires_at.is_some_and(|t| t > now);
            let (state, tone) = if let Some(hint) = &a.needs_login {
                (format!("needs login: {hint}"), "bad")
            } else if a.refreshing {
                ("refreshing".to_owned(), "busy")
            } else if a.last_error.is_some() && !valid {
                ("retrying".to_owned(), "busy")
            } else {
                ("ok".to_owned(), "ok")
            };
            let provider = view.tokens.account(&a.name).map(|c| c.provider.clone());
            let delegated = a.flow.is_delegated();
            let endpoints = provider.as_ref().map(|p| &p.endpoints);
            AccountView {
                provider: a.provider.clone(),
                flow: a.flow.as_str(),
                mailbox: a.mailbox.clone(),
                state,
                tone,
                access_token_expires: a.access_token_expires_at.map(|t| {
                    match t.duration_since(now) {
                        Ok(left) => format!("{} (in {})", utc(t), human(left)),
                        Err(_) => format!("{} (expired)", utc(t)),
                    }
                }),
                last_refresh: a.last_refresh.map(|t| ago(now, t)),
                refresh_token_age: a
                    .refresh_token_stored_at
                    .map(|t| human(now.duration_since(t).unwrap_or(Duration::ZERO))),
                last_error: a.last_error.clone(),
                can_authorise: delegated && endpoints.is_some_and(|e| e.authorize_url.is_some()),
                can_device_code: delegated
                    && endpoints.is_some_and(|e| e.device_code_url.is_some()),
                device: flows.device(&a.name),
                sign_in: flows.outcome(&a.name).map(|o| match o.result {
                    Ok(()) => format!("authorised from this page at {}", utc(o.at)),
                    Err(e) => format!("sign-in failed at {}: {e}", utc(o.at)),
                }),
                name: a.name,
            }
        })
        .collect();
    let listeners = view
        .config
        .listeners
        .iter()
        .map(|l| {
            let bound = view
                .listeners
                .iter()
                .find(|s| s.name == l.name)
                .map(|s| match &s.bound {
                    Ok(a) => a.to_string(),
                    Err(why) => format!("not bound: {why}"),
                })
                .unwrap_or_else(|| l.listen.to_string());
            let logins = metrics.logins_last_hour(&l.name);
            ListenerView {
                name: l.name.clone(),
                protocol: l.protocol.to_string(),
                mode: match l.mode {
                    ListenerMode::Auth => "auth",
                    ListenerMode::Relay => "relay",
                },
                address: bound,
                tls: tls_mode(l.tls),
                sessions: metrics.sessions_now(&l.name),
                logins_ok: logins.ok,
                logins_failed: logins.failed,
            }
        })
        .collect();
    Snapshot {
        generated_at: utc(now),
        redirect_uri: redirect_uri.to_owned(),
        accounts,
        listeners,
    }
}
