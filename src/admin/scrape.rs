//! `GET /metrics`: the token gauges are set from the token manager's state (no token request),
//! then the registry is encoded — OpenMetrics when the scraper asks for it (Prometheus does),
//! else the classic text format 0.0.4.

use std::time::SystemTime;

use hyper::StatusCode;

use super::AdminState;
use super::router::{Reply, reply, text};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(super) async fn metrics(state: &AdminState, openmetrics: bool) -> Reply {
    let tokens = std::sync::Arc::clone(&state.view().tokens);
    // `status` reads the store's metadata: small blocking file reads.
    let Ok(accounts) = tokio::task::spawn_blocking(move || tokens.status()).await else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "reading the token state failed; see the log\n",
        );
    };
    state.metrics.set_token_state(
        SystemTime::now(),
        accounts.iter().map(|a| {
            (
                a.name.as_str(),
                a.access_token_expires_at,
                a.needs_login.is_some(),
            )
        }),
    );
    if openmetrics {
        reply(StatusCode::OK, OPENMETRICS, state.metrics.encode())
    } else {
        reply(StatusCode::OK, CLASSIC, state.metrics.encode_classic())
    }
}
