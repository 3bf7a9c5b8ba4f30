//! Method and path → handler for the admin listener, and what every response carries.
//!
//! Probes (`/healthz`, `/readyz`, `/metrics`): GET or HEAD only (`405` with `Allow` otherwise),
//! no body (`413`), any `Host` (orchestrators probe by IP). The page (`/`, `/api/state`,
//! `/static/…`, `/callback`, and the POSTs `/login`, `/logout`, `/authorise`, `/device`):
//! `Host` must name this listener (`421` otherwise, see `access.rs`); a POST must carry a form
//! body of at most [`AdminLimits::max_form_bytes`](crate::limits::AdminLimits), come from the
//! page's own origin when the browser says (`Origin`, `Sec-Fetch-Site`), and hold the session's
//! CSRF token (`403` otherwise); with `admin.password_hash` everything but the login form needs
//! a logged-in session. Unknown paths get `404`. HEAD is answered as GET without the body.
//!
//! Every response has the security headers of [`secure`]: a CSP without inline script or
//! style, no framing, no referrer, no sniffing, no caching.

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper::header::{
    ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE, HOST,
    HeaderMap, HeaderValue, LOCATION, ORIGIN, REFERRER_POLICY, SET_COOKIE, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use hyper::{Method, Request, Response, StatusCode};

use super::AdminState;
use super::access::{PasswordCheck, SESSION_COOKIE, SessionView, same};
use super::flows::FLOW_COOKIE;
use super::http_input::{cookie, field, form, host_name};
use super::page;
use crate::secret::SecretString;

/// What every handler returns.
pub(super) type Reply = Response<Full<Bytes>>;

/// The admin page's Content-Security-Policy: scripts, styles and fetches from this origin only,
/// forms post here only, no framing, no `<base>`.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                       base-uri 'none'";

const ADMIN_JS: &str = include_str!("static/admin.js");
const ADMIN_CSS: &str = include_str!("static/admin.css");
const HTML: &str = "text/html; charset=utf-8";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Probe {
    Health,
    Ready,
    Metrics,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Page {
    Index,
    State,
    Script,
    Style,
    Callback,
    Login,
    Logout,
    Authorise,
    Device,
}

enum Endpoint {
    Probe(Probe),
    Page(Page),
}

impl Endpoint {
    fn of(path: &str) -> Option<Endpoint> {
        Some(match path {
            "/healthz" => Endpoint::Probe(Probe::Health),
            "/readyz" => Endpoint::Probe(Probe::Ready),
            "/metrics" => Endpoint::Probe(Probe::Metrics),
            "/" => Endpoint::Page(Page::Index),
            "/api/state" => Endpoint::Page(Page::State),
            "/static/admin.js" => Endpoint::Page(Page::Script),
            "/static/admin.css" => Endpoint::Page(Page::Style),
            "/callback" => Endpoint::Page(Page::Callback),
            "/login" => Endpoint::Page(Page::Login),
            "/logout" => Endpoint::Page(Page::Logout),
            "/authorise" => Endpoint::Page(Page::Authorise),
            "/device" => Endpoint::Page(Page::Device),
            _ => return None,
        })
    }
}

impl Page {
    fn is_post(self) -> bool {
        matches!(
            self,
            Page::Login | Page::Logout | Page::Authorise | Page::Device
        )
    }
}

/// Answer one request from `peer`.
pub(super) async fn route(state: &AdminState, req: Request<Incoming>, peer: SocketAddr) -> Reply {
    let mut r = match Endpoint::of(req.uri().path()) {
        None => text(
            StatusCode::NOT_FOUND,
            "not found: the admin listener serves the admin page at / and /healthz, /readyz and \
             /metrics\n",
        ),
        Some(Endpoint::Probe(p)) => probe(state, req, p).await,
        Some(Endpoint::Page(p)) => page_request(state, req, p, peer).await,
    };
    secure(r.headers_mut());
    r
}

/// The security headers every response carries.
pub fn secure(h: &mut HeaderMap) {
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn get_only(method: &Method, allow: &'static str, also_post: bool) -> Option<Reply> {
    let ok =
        matches!(*method, Method::GET | Method::HEAD) || (also_post && *method == Method::POST);
    if ok {
        return None;
    }
    let mut r = text(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("method not allowed: use {allow}\n"),
    );
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    Some(r)
}

fn no_body(req: &Request<Incoming>) -> Option<Reply> {
    if req.body().is_end_stream() {
        return None;
    }
    let mut r = text(
        StatusCode::PAYLOAD_TOO_LARGE,
        "a request body is not accepted here\n",
    );
    r.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    Some(r)
}

async fn probe(state: &AdminState, req: Request<Incoming>, p: Probe) -> Reply {
    if let Some(r) = get_only(req.method(), "GET, HEAD", false) {
        return r;
    }
    if let Some(r) = no_body(&req) {
        return r;
    }
    match p {
        Probe::Health => super::health::healthz(),
        Probe::Ready => super::health::readyz(state).await,
        Probe::Metrics => {
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

/// The `Host` header as sent (lower-cased), if it names this listener.
fn checked_host(state: &AdminState, headers: &HeaderMap) -> Option<String> {
    let raw = headers
        .get(HOST)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    host_name(raw)
        .filter(|name| state.access.host_allowed(name))
        .map(|_| String::from_utf8_lossy(raw).trim().to_ascii_lowercase())
}

fn misdirected() -> Reply {
    text(
        StatusCode::MISDIRECTED_REQUEST,
        "misdirected request: this admin listener answers only to its own names (localhost, its \
         loopback or listen address, and admin.hostnames); open it under one of them\n",
    )
}

fn session_of(state: &AdminState, headers: &HeaderMap) -> Option<SessionView> {
    let id = headers
        .get_all(COOKIE)
        .iter()
        .find_map(|v| cookie(v.as_bytes(), SESSION_COOKIE));
    state.access.session(id)
}

fn flow_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .find_map(|v| cookie(v.as_bytes(), FLOW_COOKIE))
        .map(str::to_owned)
}

/// A POST from elsewhere, as far as the browser tells: an `Origin` that is not this page's
/// (`null` says nothing: browsers send it under `Referrer-Policy: no-referrer`), or a
/// `Sec-Fetch-Site` other than `same-origin` (or `none`: typed by the user).
fn foreign_origin(state: &AdminState, headers: &HeaderMap, host: &str) -> bool {
    let scheme = if state.access.tls() { "https" } else { "http" };
    let origin_bad = headers.get(ORIGIN).is_some_and(|o| {
        !o.to_str()
            .is_ok_and(|o| o == "null" || o.eq_ignore_ascii_case(&format!("{scheme}://{host}")))
    });
    let fetch_bad = headers.get("sec-fetch-site").is_some_and(|v| {
        !(v.as_bytes().eq_ignore_ascii_case(b"same-origin") || v.as_bytes() == b"none")
    });
    origin_bad || fetch_bad
}

fn forbidden(why: &str) -> Reply {
    html(
        StatusCode::FORBIDDEN,
        page::message_page("authbridge admin — refused", why, false),
    )
}

async fn read_form(
    state: &AdminState,
    req: Request<Incoming>,
) -> Result<Vec<(String, String)>, Reply> {
    let limits = &state.limits;
    let form_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';').next().is_some_and(|t| {
                t.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    if !form_type {
        return Err(text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected a form (application/x-www-form-urlencoded)\n",
        ));
    }
    let too_large = || {
        let mut r = text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the form is larger than the admin page accepts\n",
        );
        r.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        r
    };
    if req
        .body()
        .size_hint()
        .exact()
        .or(Some(req.body().size_hint().lower()))
        .is_some_and(|n| n > limits.max_form_bytes as u64)
    {
        return Err(too_large());
    }
    let body = Limited::new(req.into_body(), limits.max_form_bytes);
    match tokio::time::timeout(limits.form_read, body.collect()).await {
        Ok(Ok(b)) => Ok(form(&b.to_bytes())),
        Ok(Err(_)) => Err(too_large()),
        Err(_) => {
            let mut r = text(
                StatusCode::REQUEST_TIMEOUT,
                "the form did not arrive in time\n",
            );
            r.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            Err(r)
        }
    }
}

async fn page_request(
    state: &AdminState,
    req: Request<Incoming>,
    p: Page,
    peer: SocketAddr,
) -> Reply {
    let Some(host) = checked_host(state, req.headers()) else {
        return misdirected();
    };
    if p.is_post() {
        if *req.method() != Method::POST {
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed: use POST\n",
            );
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("POST"));
            return r;
        }
        return post(state, req, p, peer, &host).await;
    }
    if let Some(r) = get_only(req.method(), "GET, HEAD", false) {
        return r;
    }
    if let Some(r) = no_body(&req) {
        return r;
    }
    match p {
        Page::Script => reply(
            StatusCode::OK,
            "text/javascript; charset=utf-8",
            ADMIN_JS.to_owned(),
        ),
        Page::Style => reply(
            StatusCode::OK,
            "text/css; charset=utf-8",
            ADMIN_CSS.to_owned(),
        ),
        Page::Callback => callback(state, &req).await,
        Page::State => {
            match session_of(state, req.headers()) {
                Some(s) if s.authenticated => {}
                _ => {
                    return reply(
                        StatusCode::UNAUTHORIZED,
                        "application/json",
                        "{\"error\":\"log in on the admin page first\"}\n".to_owned(),
                    );
                }
            }
            match snapshot(state).await {
                Some(s) => reply(
                    StatusCode::OK,
                    "application/json",
                    serde_json::to_string(&s).unwrap_or_default(),
                ),
                None => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "reading the state failed; see the log\n",
                ),
            }
        }
        _ => index(state, &req, &host, None).await,
    }
}

async fn snapshot(state: &AdminState) -> Option<super::snapshot::Snapshot> {
    let view = state.view();
    let metrics = std::sync::Arc::clone(&state.metrics);
    let flows = std::sync::Arc::clone(&state.flows);
    let redirect = state.redirect_uri();
    tokio::task::spawn_blocking(move || super::snapshot::gather(&view, &metrics, &flows, &redirect))
        .await
        .ok()
}

/// `GET /`: the page (or the password form), with a session cookie if the browser has none.
async fn index(
    state: &AdminState,
    req: &Request<Incoming>,
    host: &str,
    notice: Option<&str>,
) -> Reply {
    let session = match session_of(state, req.headers()) {
        Some(s) => s,
        None => match state.access.new_session(false) {
            Ok(s) => s,
            Err(e) => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("cannot make a session: {e}\n"),
                );
            }
        },
    };
    let mut r = if !session.authenticated {
        html(StatusCode::OK, page::login_page(&session.csrf, notice))
    } else {
        let Some(s) = snapshot(state).await else {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "reading the state failed; see the log\n",
            );
        };
        let note = authorise_note(state, host);
        html(
            StatusCode::OK,
            page::main_page(
                &s,
                &session.csrf,
                state.access.password_required(),
                notice,
                note.as_deref(),
            ),
        )
    };
    if session.new {
        set_cookie(&mut r, &state.access.session_cookie(&session.id));
    }
    r
}

/// Why Authorise would not come back to the address this page was opened under, if so.
fn authorise_note(state: &AdminState, host: &str) -> Option<String> {
    let redirect = state.redirect_uri();
    let authority = redirect_authority(&redirect)?;
    (authority != host).then(|| {
        format!(
            "Authorise comes back to {redirect}: open this page as {}://{authority}/ to use it \
             (the sign-in must return to the browser address it started from)",
            if state.access.tls() { "https" } else { "http" }
        )
    })
}

/// `host:port` of a redirect URI, lower-cased (default ports left out, as browsers send `Host`).
fn redirect_authority(uri: &str) -> Option<String> {
    let u = url::Url::parse(uri).ok()?;
    let host = u.host_str()?.to_ascii_lowercase();
    Some(match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    })
}

async fn post(
    state: &AdminState,
    req: Request<Incoming>,
    p: Page,
    peer: SocketAddr,
    host: &str,
) -> Reply {
    if foreign_origin(state, req.headers(), host) {
        return forbidden(
            "This request came from another site (its Origin is not this admin page) and was \
             refused. Use the buttons on the admin page itself.",
        );
    }
    let session = session_of(state, req.headers());
    let fields = match read_form(state, req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Some(session) = session else {
        return forbidden(
            "Your admin session is missing or has ended (no session cookie). Reload the admin page \
             and try again.",
        );
    };
    if !field(&fields, "csrf").is_some_and(|t| same(t, &session.csrf)) {
        return forbidden(
            "The form's security token is missing or wrong (CSRF protection). Reload the admin \
             page and try again.",
        );
    }
    if p == Page::Login {
        return login(state, &fields, &session, peer).await;
    }
    if !session.authenticated {
        return forbidden("Log in on the admin page first.");
    }
    match p {
        Page::Logout => {
            state.access.end(&session.id);
            let mut r = see_other("/");
            set_cookie(
                &mut r,
                &format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
            );
            r
        }
        Page::Authorise => authorise(state, &fields, host),
        Page::Device => {
            let account = field(&fields, "account").unwrap_or_default().to_owned();
            let tokens = std::sync::Arc::clone(&state.view().tokens);
            match state.flows.start_device(tokens, &account).await {
                Ok(()) => see_other("/"),
                Err(e) => html(
                    StatusCode::BAD_REQUEST,
                    page::message_page(
                        "authbridge admin — device code",
                        &format!("The device-code sign-in for {account} could not start: {e}"),
                        false,
                    ),
                ),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

async fn login(
    state: &AdminState,
    fields: &[(String, String)],
    session: &SessionView,
    peer: SocketAddr,
) -> Reply {
    let password = SecretString::new(field(fields, "password").unwrap_or_default().to_owned());
    let refused =
        |status: StatusCode, why: &str| html(status, page::login_page(&session.csrf, Some(why)));
    match state.access.check_password(peer.ip(), password).await {
        PasswordCheck::Ok => {
            // A new session id on login: a planted cookie cannot be promoted.
            state.access.end(&session.id);
            match state.access.new_session(true) {
                Ok(s) => {
                    tracing::info!(%peer, "admin page: logged in");
                    let mut r = see_other("/");
                    set_cookie(&mut r, &state.access.session_cookie(&s.id));
                    r
                }
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("cannot make a session: {e}\n"),
                ),
            }
        }
        PasswordCheck::Wrong => {
            tracing::warn!(%peer, "admin page: wrong password");
            refused(StatusCode::FORBIDDEN, "Wrong password.")
        }
        PasswordCheck::Throttled => {
            tracing::warn!(%peer, "admin page: login refused, too many wrong passwords");
            refused(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many wrong passwords from your address: wait a few minutes, then try again.",
            )
        }
        PasswordCheck::Busy => refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "The password could not be checked in time (the server is busy); try again.",
        ),
    }
}

fn authorise(state: &AdminState, fields: &[(String, String)], host: &str) -> Reply {
    let account = field(fields, "account").unwrap_or_default();
    let refuse = |status: StatusCode, why: String| {
        html(
            status,
            page::message_page("authbridge admin — authorise", &why, false),
        )
    };
    if let Some(note) = authorise_note(state, host) {
        return refuse(StatusCode::BAD_REQUEST, note);
    }
    let tokens = state.view().tokens.clone();
    match state
        .flows
        .start_auth_code(&tokens, account, &state.redirect_uri())
    {
        Ok(started) => {
            tracing::info!(account, "admin page: authorization-code sign-in started");
            let mailbox = tokens
                .account(account)
                .map(|a| a.mailbox.clone())
                .unwrap_or_default();
            let mut r = html(
                StatusCode::OK,
                page::continue_page(account, &mailbox, &started.url),
            );
            set_cookie(
                &mut r,
                &format!(
                    "{FLOW_COOKIE}={}; Path=/callback; HttpOnly; SameSite=Lax; Max-Age={}{}",
                    started.binding,
                    super::flows::FLOW_TTL.as_secs(),
                    if state.access.tls() { "; Secure" } else { "" }
                ),
            );
            r
        }
        Err(e) => refuse(
            StatusCode::BAD_REQUEST,
            format!("The sign-in for {account} could not start: {e}"),
        ),
    }
}

/// `GET /callback`: the identity provider sent the browser back.
async fn callback(state: &AdminState, req: &Request<Incoming>) -> Reply {
    let params: HashMap<String, String> = form(req.uri().query().unwrap_or_default().as_bytes())
        .into_iter()
        .collect();
    let binding = flow_cookie(req.headers());
    let tokens = state.view().tokens.clone();
    let result = state
        .flows
        .finish_auth_code(&tokens, &params, binding.as_deref())
        .await;
    let mut r = match result {
        Ok(account) => html(
            StatusCode::OK,
            page::message_page(
                "authbridge admin — authorised",
                &format!(
                    "Account {account} is authorised: the refresh token is stored and the running \
                     server uses it now, no restart needed."
                ),
                true,
            ),
        ),
        Err(e) => html(
            StatusCode::BAD_REQUEST,
            page::message_page(
                "authbridge admin — sign-in failed",
                &format!("The sign-in did not complete: {e}"),
                false,
            ),
        ),
    };
    set_cookie(
        &mut r,
        &format!("{FLOW_COOKIE}=; Path=/callback; HttpOnly; SameSite=Lax; Max-Age=0"),
    );
    r
}

fn set_cookie(r: &mut Reply, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().append(SET_COOKIE, v);
    }
}

fn see_other(location: &str) -> Reply {
    let mut r = text(StatusCode::SEE_OTHER, "see other\n");
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

fn html(status: StatusCode, body: String) -> Reply {
    reply(status, HTML, body)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        assert_eq!(
            redirect_authority("http://LocalHost:9925/callback").as_deref(),
            Some("localhost:9925")
        );
        assert_eq!(
            redirect_authority("https://admin.example.com/callback").as_deref(),
            Some("admin.example.com")
        );
    }

    #[test]
    fn every_response_is_secured() {
        let mut r = text(StatusCode::OK, "x");
        secure(r.headers_mut());
        let h = r.headers();
        assert_eq!(h[CONTENT_SECURITY_POLICY], CSP);
        assert!(!CSP.contains("unsafe"));
        assert_eq!(h[X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[REFERRER_POLICY], "no-referrer");
        assert_eq!(h[X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[CACHE_CONTROL], "no-store");
    }
}
