//! `GET /healthz` (liveness: 200 while the process serves) and `GET /readyz` (readiness).
//!
//! Ready means: the server is not shutting down, every listener is bound, and every account can
//! get a token now — its cached access token is still valid, or its status line (the one
//! `authbridge status` prints) says nothing needs attention (last fetch fine, no login needed).
//! Otherwise `503` with a small JSON body naming each unready listener and account, with the
//! status line and its fix. Only state is read: no token request, no mail session.

use std::time::{Duration, SystemTime};

use hyper::StatusCode;
use serde_json::json;

use super::router::{Reply, reply, text};
use super::{AdminState, View};
use crate::token::status_report::{Judge, report_with};

/// A cached access token valid for less than this does not make an account ready by itself: a
/// login arriving now would wait for a refresh.
const MIN_VALIDITY: Duration = Duration::from_secs(30);

pub(super) fn healthz() -> Reply {
    text(StatusCode::OK, "ok\n")
}

pub(super) async fn readyz(state: &AdminState) -> Reply {
    let view = state.view();
    let draining = state.draining.is_cancelled();
    match tokio::task::spawn_blocking(move || readiness(&view, draining, SystemTime::now())).await {
        Ok((true, body)) => reply(StatusCode::OK, "application/json", body),
        Ok((false, body)) => reply(StatusCode::SERVICE_UNAVAILABLE, "application/json", body),
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "reading the readiness state failed; see the log\n",
        ),
    }
}

/// (ready, JSON body) as of `now`. Blocking: reads the status files and the store's metadata.
fn readiness(view: &View, draining: bool, now: SystemTime) -> (bool, String) {
    let listeners: Vec<_> = view
        .listeners
        .iter()
        .filter_map(|l| match &l.bound {
            Ok(_) => None,
            Err(why) => Some(json!({ "name": l.name, "reason": why })),
        })
        .collect();
    let valid_until: std::collections::HashMap<String, Option<SystemTime>> = view
        .tokens
        .status()
        .into_iter()
        .map(|a| (a.name, a.access_token_expires_at))
        .collect();
    let judge = Judge {
        now,
        ..Judge::now(&view.config)
    };
    // Only accounts without a usable cached token are judged, with the server's own store.
    let cached = |name: &str| {
        valid_until
            .get(name)
            .copied()
            .flatten()
            .is_some_and(|t| t > now + MIN_VALIDITY)
    };
    let accounts: Vec<_> = report_with(&view.config, Some(view.tokens.store()), &judge, |a| {
        !cached(a.token_account())
    })
    .into_iter()
    .filter(|line| line.needs_action)
    .map(|line| {
        let state = line
            .text
            .split_once("  state=")
            .map_or(line.text.as_str(), |(_, s)| s)
            .to_owned();
        json!({ "name": line.account, "state": state, "status": line.text })
    })
    .collect();
    let ready = !draining && listeners.is_empty() && accounts.is_empty();
    let mut body = json!({
        "ready": ready,
        "listeners": listeners,
        "accounts": accounts,
    });
    if draining {
        body["reason"] = json!("shutting down: sessions are draining");
    }
    let mut text = body.to_string();
    text.push('\n');
    (ready, text)
}
