//! Method and path → handler for the admin listener. Unknown paths get `404`; a known path with a
//! method other than GET or HEAD gets `405` with `Allow`; a request with a body gets `413` (no
//! endpoint takes one, so it is never read). HEAD is answered as GET without the body (hyper
//! drops it).

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper::header::{ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::AdminState;

/// What every handler returns.
pub(super) type Reply = Response<Full<Bytes>>;

/// The admin endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Health,
    Ready,
    Metrics,
}

impl Endpoint {
    fn of(path: &str) -> Option<Endpoint> {
        match path {
            "/healthz" => Some(Endpoint::Health),
            "/readyz" => Some(Endpoint::Ready),
            "/metrics" => Some(Endpoint::Metrics),
            _ => None,
        }
    }
}

/// Answer one request.
pub(super) async fn route(state: &AdminState, req: Request<Incoming>) -> Reply {
    let Some(endpoint) = Endpoint::of(req.uri().path()) else {
        return text(
            StatusCode::NOT_FOUND,
            "not found: the admin listener serves /healthz, /readyz and /metrics\n",
        );
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: use GET or HEAD\n",
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if !req.body().is_end_stream() {
        let mut r = text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "a request body is not accepted here\n",
        );
        r.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    match endpoint {
        Endpoint::Health => super::health::healthz(),
        Endpoint::Ready => super::health::readyz(state).await,
        Endpoint::Metrics => {
            let openmetrics = req
                .headers()
                .get_all(hyper::header::ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.contains("application/openmetrics-text"));
            super::scrape::metrics(state, openmetrics).await
        }
    }
}

/// A response with `body` and its content type; never cached.
pub(super) fn reply(status: StatusCode, content_type: &'static str, body: String) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A plain-text response.
pub(super) fn text(status: StatusCode, body: &str) -> Reply {
    reply(status, "text/plain; charset=utf-8", body.to_owned())
}
