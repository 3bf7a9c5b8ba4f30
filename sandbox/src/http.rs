//! The fake Entra ID over HTTPS (hyper, HTTP/1.1): routing, form parsing, failure injection at the
//! connection level (hang, reset, delay), and the `/_sandbox/*` control endpoints used by the
//! binary and the README demo.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpStream;

use crate::entra::{Injected, Reply};
use crate::util::unb64;
use crate::{Shared, TokenFailure};

const MAX_BODY: usize = 1024 * 1024;

/// The service closes the connection without answering.
#[derive(Debug, thiserror::Error)]
#[error("injected connection reset")]
struct ResetError;

pub(crate) async fn serve(shared: Arc<Shared>, tcp: TcpStream) {
    if let Some(allowed) = shared.token_allowed_peers()
        && !tcp.peer_addr().is_ok_and(|p| allowed.contains(&p.ip()))
    {
        tracing::debug!(peer = ?tcp.peer_addr().ok(), "sandbox token service: source not allowed, closed");
        return;
    }
    if shared.entra().failure_is_reset() {
        // An RST rather than a FIN when the injected reset closes this connection.
        let _ = tcp.set_zero_linger();
    }
    let tls =
        match tokio::time::timeout(crate::conn::HANDSHAKE_TIMEOUT, shared.acceptor.accept(tcp))
            .await
        {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "sandbox token service: TLS handshake failed");
                return;
            }
            Err(_) => return,
        };
    let svc = service_fn(move |req| {
        let shared = shared.clone();
        async move { handle(shared, req).await }
    });
    let res = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(tls), svc)
        .await;
    if let Err(e) = res {
        tracing::debug!(error = %e, "sandbox token service connection ended");
    }
}

fn to_response(r: Reply) -> Response<Full<Bytes>> {
    let mut b = Response::builder()
        .status(StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", r.content_type)
        .header("cache-control", "no-store, no-cache")
        .header("pragma", "no-cache");
    for (k, v) in r.headers {
        b = b.header(k, v);
    }
    b.body(Full::new(Bytes::from(r.body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn json_reply(status: u16, v: Value) -> Reply {
    Reply::json(status, &v)
}

fn not_found() -> Reply {
    json_reply(404, json!({"error": "not_found"}))
}

fn parse_form(body: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// RFC 6749 §2.3.1 client_secret_basic: fill client_id/client_secret from `Authorization: Basic`.
fn basic_auth_into(form: &mut HashMap<String, String>, header: Option<&str>) {
    let Some(h) = header else { return };
    let Some(b64) = h
        .strip_prefix("Basic ")
        .or_else(|| h.strip_prefix("basic "))
    else {
        return;
    };
    let Some(raw) = unb64(b64.as_bytes()) else {
        return;
    };
    let Ok(text) = String::from_utf8(raw) else {
        return;
    };
    let Some((id, secret)) = text.split_once(':') else {
        return;
    };
    let decode = |s: &str| -> String {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    form.entry("client_id".into()).or_insert_with(|| decode(id));
    form.entry("client_secret".into())
        .or_insert_with(|| decode(secret));
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ResetError> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(to_response(json_reply(
                413,
                json!({"error": "invalid_request", "error_description": "body too large"}),
            )));
        }
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let reply = match (method.clone(), segments.as_slice()) {
        (Method::POST, [tenant, "oauth2", "v2.0", "token"]) => {
            let mut form = parse_form(&body);
            basic_auth_into(&mut form, auth.as_deref());
            return token(&shared, tenant, form).await;
        }
        (Method::GET, [tenant, "oauth2", "v2.0", "authorize"]) => {
            let q = parse_form(query.as_bytes());
            shared.entra().authorize(tenant, &q, Instant::now())
        }
        (Method::POST, [tenant, "oauth2", "v2.0", "devicecode"]) => {
            let mut form = parse_form(&body);
            basic_auth_into(&mut form, auth.as_deref());
            shared
                .entra()
                .device_authorization(tenant, &form, Instant::now())
        }
        (Method::POST, ["introspect"]) => {
            let form = parse_form(&body);
            let token = form.get("token").map(String::as_str).unwrap_or("");
            json_reply(200, shared.entra().introspect(token, Instant::now()))
        }
        (Method::GET, ["devicelogin"]) => device_login(&shared, &parse_form(query.as_bytes())),
        (_, ["_sandbox", rest @ ..]) => control(&shared, &method, rest, &body),
        (_, [_, "oauth2", "v2.0", _]) => json_reply(
            405,
            json!({"error": "invalid_request", "error_description": "method not allowed"}),
        ),
        _ => not_found(),
    };
    Ok(to_response(reply))
}

async fn token(
    shared: &Shared,
    tenant: &str,
    form: HashMap<String, String>,
) -> Result<Response<Full<Bytes>>, ResetError> {
    let injected = shared.entra().admit_token_request(&form);
    match injected {
        Some(Injected::Reply(r)) => return Ok(to_response(r)),
        Some(Injected::Hang) => {
            tracing::debug!("sandbox token service: injected hang");
            std::future::pending::<()>().await;
        }
        Some(Injected::Reset) => return Err(ResetError),
        Some(Injected::Delay(d)) => tokio::time::sleep(d).await,
        None => {}
    }
    let reply = shared.entra().token(tenant, &form, Instant::now());
    Ok(to_response(reply))
}

/// `GET /devicelogin?code=USERCODE&mailbox=M[&deny=1]`: what the user does in a browser.
fn device_login(shared: &Shared, q: &HashMap<String, String>) -> Reply {
    let code = q.get("code").or_else(|| q.get("user_code"));
    let mut e = shared.entra();
    let Some(code) = code else {
        let pending = e.pending_user_codes();
        return text_reply(
            200,
            format!(
                "authbridge sandbox device login. Approve with ?code=USERCODE&mailbox=MAILBOX (pending: {})\n",
                pending.join(", ")
            ),
        );
    };
    let ok = if q.contains_key("deny") {
        e.deny_device_code(code)
    } else {
        let mailbox = q
            .get("mailbox")
            .cloned()
            .or_else(|| e.authorize_user.clone());
        match mailbox {
            Some(m) => e.approve_device_code(code, &m),
            None => false,
        }
    };
    if ok {
        text_reply(200, "Done. You can close this window.\n".into())
    } else {
        text_reply(
            400,
            "Unknown or already used code (or no mailbox given).\n".into(),
        )
    }
}

fn text_reply(status: u16, text: String) -> Reply {
    Reply {
        status,
        content_type: "text/plain; charset=utf-8",
        headers: Vec::new(),
        body: text.into_bytes(),
    }
}

fn control(shared: &Shared, method: &Method, rest: &[&str], body: &[u8]) -> Reply {
    let input: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return json_reply(400, json!({"error": format!("bad JSON: {e}")})),
        }
    };
    let s = |k: &str| input.get(k).and_then(Value::as_str).map(str::to_string);
    let n = |k: &str| input.get(k).and_then(Value::as_u64);
    match (method, rest) {
        (&Method::POST, ["fail"]) => {
            let mode = s("mode").unwrap_or_default();
            let spec = match (n("retry_after_secs"), n("millis")) {
                (Some(secs), _) => format!("{mode}:{secs}"),
                (None, Some(ms)) => format!("{mode}:{ms}"),
                _ => mode.clone(),
            };
            let Some(failure) = TokenFailure::parse(&spec) else {
                return json_reply(400, json!({"error": format!("unknown mode {mode:?}")}));
            };
            let times = n("times").map(|t| t.clamp(1, u64::from(u32::MAX)) as u32);
            match s("account") {
                Some(account) => shared.entra().inject_for(&account, failure, times),
                None => shared.entra().inject(failure, times),
            }
            json_reply(200, json!({"ok": true}))
        }
        (&Method::POST, ["graph"]) => {
            // {"failure": "429:SECS" | "503" | "send_as_denied" | null, "times": N}
            let failure = match s("failure") {
                Some(spec) => match crate::GraphFailure::parse(&spec) {
                    Some(f) => Some(f),
                    None => {
                        return json_reply(
                            400,
                            json!({"error": format!("unknown failure {spec:?}")}),
                        );
                    }
                },
                None => None,
            };
            let times = n("times").map(|t| t.clamp(1, u64::from(u32::MAX)) as u32);
            crate::lock(&shared.graph).failure = failure.map(|f| (f, times));
            json_reply(200, json!({"ok": true}))
        }
        (&Method::POST, ["clear"]) => {
            shared.entra().clear_failures();
            json_reply(200, json!({"ok": true}))
        }
        (&Method::GET, ["counters"]) => {
            let tokens = shared.entra().counters.clone();
            let mail = crate::lock(&shared.mail_auth).clone();
            let connector = crate::lock(&shared.connector_counters).clone();
            let graph = crate::lock(&shared.graph).counters.clone();
            json_reply(
                200,
                json!({"token_requests": tokens, "mail_auth": mail, "connector": connector, "graph": graph}),
            )
        }
        (&Method::GET, ["messages"]) => {
            let msgs = crate::lock(&shared.submissions).clone();
            let list: Vec<Value> = msgs
                .iter()
                .map(|m| {
                    json!({
                        "mailboxes": m.mailboxes,
                        "auth_user": m.auth_user,
                        "via_connector": m.via_connector,
                        "tls": m.tls,
                        "client_cert_names": m.client_cert_names,
                        "from": m.from,
                        "rcpts": m.rcpts,
                        "size": m.raw.len(),
                        "raw": m.text(),
                    })
                })
                .collect();
            json_reply(200, Value::Array(list))
        }
        (&Method::POST, ["mailbox"]) => {
            // {"mailbox": "tickets@contoso.com", "smtp_auth_disabled": true, "imap_disabled":
            // false, "pop_disabled": false, "send_as_denied": false}; absent flags stay.
            let Some(mailbox) = s("mailbox") else {
                return json_reply(400, json!({"error": "mailbox is required"}));
            };
            let b = |k: &str, old: bool| input.get(k).and_then(Value::as_bool).unwrap_or(old);
            let mut ex = shared.exchange();
            let old = ex.mailbox(&mailbox);
            let new = crate::MailboxSettings {
                smtp_auth_disabled: b("smtp_auth_disabled", old.smtp_auth_disabled),
                imap_disabled: b("imap_disabled", old.imap_disabled),
                pop_disabled: b("pop_disabled", old.pop_disabled),
                send_as_denied: b("send_as_denied", old.send_as_denied),
            };
            ex.set_mailbox(&mailbox, new);
            json_reply(200, json!({"ok": true}))
        }
        (&Method::POST, ["app"]) => {
            // {"client_id": "…", "roles": ["IMAP.AccessAsApp"], "service_principal": false,
            // "mailbox": "tickets@contoso.com", "mailbox_permission": false}; absent keys stay.
            let Some(client_id) = s("client_id") else {
                return json_reply(400, json!({"error": "client_id is required"}));
            };
            if let Some(roles) = input.get("roles").and_then(Value::as_array) {
                let roles: Vec<&str> = roles.iter().filter_map(Value::as_str).collect();
                shared.entra().set_app_roles(&client_id, &roles);
            }
            if let Some(sp) = input.get("service_principal").and_then(Value::as_bool) {
                shared.exchange().set_service_principal(&client_id, sp);
            }
            if let Some(on) = input.get("mailbox_permission").and_then(Value::as_bool) {
                let Some(mailbox) = s("mailbox") else {
                    return json_reply(400, json!({"error": "mailbox_permission needs mailbox"}));
                };
                shared
                    .entra()
                    .set_app_mailbox_permission(&client_id, &mailbox, on);
            }
            json_reply(200, json!({"ok": true}))
        }
        (&Method::POST, ["permission"]) => {
            // {"mailbox": "helpdesk@contoso.com", "trustee": "agent@contoso.com" (or an app's
            // client id), "right": "FullAccess" | "SendAs", "granted": true (default)}.
            let (Some(mailbox), Some(trustee)) = (s("mailbox"), s("trustee")) else {
                return json_reply(400, json!({"error": "mailbox and trustee are required"}));
            };
            let right = match s("right").as_deref() {
                Some(r) if r.eq_ignore_ascii_case("FullAccess") => crate::MailboxRight::FullAccess,
                Some(r) if r.eq_ignore_ascii_case("SendAs") => crate::MailboxRight::SendAs,
                _ => {
                    return json_reply(400, json!({"error": "right must be FullAccess or SendAs"}));
                }
            };
            let granted = input
                .get("granted")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            shared
                .exchange()
                .set_right(&mailbox, &trustee, right, granted);
            json_reply(200, json!({"ok": true}))
        }
        (&Method::POST, ["tokens"]) => {
            // {"opaque": true}: issue opaque access tokens instead of JWTs from now on;
            // {"tid": "<guid>"} / {"tid": null}: access tokens carry another tenant's id / the
            // tenant's own again.
            if let Some(o) = input.get("opaque").and_then(Value::as_bool) {
                shared.entra().opaque_tokens = o;
            }
            match input.get("tid") {
                Some(Value::String(t)) => shared.entra().tid_override = Some(t.clone()),
                Some(Value::Null) => shared.entra().tid_override = None,
                _ => {}
            }
            json_reply(200, json!({"ok": true}))
        }
        (&Method::GET, ["connector"]) => {
            let c = shared.connector_settings();
            json_reply(
                200,
                json!({
                    "allowed_ips": c.allowed_ips.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
                    "allowed_cert_names": c.allowed_cert_names,
                    "starttls": c.starttls,
                    "reject_direct_send": c.reject_direct_send,
                }),
            )
        }
        (&Method::POST, ["connector"]) => {
            // Any of: {"allowed_ips": ["192.0.2.7"], "allowed_cert_names": ["contoso.com"],
            // "starttls": false, "reject_direct_send": true}; absent keys stay as they are.
            let strings = |k: &str| -> Option<Vec<String>> {
                input.get(k).and_then(Value::as_array).map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
            };
            let ips = match strings("allowed_ips")
                .map(|v| v.iter().map(|i| i.parse()).collect::<Result<Vec<_>, _>>())
                .transpose()
            {
                Ok(ips) => ips,
                Err(e) => return json_reply(400, json!({"error": format!("allowed_ips: {e}")})),
            };
            let mut c = crate::lock(&shared.connector);
            if let Some(ips) = ips {
                c.allowed_ips = ips;
            }
            if let Some(names) = strings("allowed_cert_names") {
                c.allowed_cert_names = names;
            }
            if let Some(on) = input.get("starttls").and_then(Value::as_bool) {
                c.starttls = on;
            }
            if let Some(on) = input.get("reject_direct_send").and_then(Value::as_bool) {
                c.reject_direct_send = on;
            }
            // "auth": {"username": "…", "password": "…", "mechanisms": ["PLAIN", "LOGIN"]}
            // makes it a provider that requires SMTP AUTH; "auth": null turns that off.
            match input.get("auth") {
                Some(Value::Null) => c.auth = None,
                Some(a) => {
                    let field = |k: &str| a.get(k).and_then(Value::as_str).map(str::to_string);
                    let (Some(user), Some(pass)) = (field("username"), field("password")) else {
                        return json_reply(
                            400,
                            json!({"error": "auth needs username and password"}),
                        );
                    };
                    let mut auth = crate::PasswordAuth::new(&user, &pass);
                    if let Some(m) = a.get("mechanisms").and_then(Value::as_array) {
                        auth.mechanisms = m
                            .iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect();
                    }
                    c.auth = Some(auth);
                }
                None => {}
            }
            json_reply(200, json!({"ok": true}))
        }
        (&Method::POST, ["expire_access_tokens"]) => {
            shared.entra().expire_access_tokens(Instant::now());
            json_reply(200, json!({"ok": true}))
        }
        (&Method::POST, ["clients"]) => {
            let (Some(id), secret) = (s("client_id"), s("client_secret")) else {
                return json_reply(400, json!({"error": "client_id required"}));
            };
            let boxes: Vec<String> = input
                .get("app_mailboxes")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            let refs: Vec<&str> = boxes.iter().map(String::as_str).collect();
            shared
                .entra()
                .add_client(&id, secret.as_deref().unwrap_or(""), &refs);
            json_reply(200, json!({"ok": true}))
        }
        (&Method::POST, ["refresh_token"]) => {
            let (Some(id), Some(mailbox)) = (s("client_id"), s("mailbox")) else {
                return json_reply(400, json!({"error": "client_id and mailbox required"}));
            };
            let rt = shared.entra().issue_refresh_token(&id, &mailbox);
            json_reply(200, json!({"refresh_token": rt}))
        }
        (&Method::POST, [action @ ("revoke_refresh_token" | "expire_refresh_token")]) => {
            // The whole family goes: the token given and every rotation of it.
            let Some(token) = s("refresh_token") else {
                return json_reply(400, json!({"error": "refresh_token required"}));
            };
            let mut e = shared.entra();
            let ok = if *action == "revoke_refresh_token" {
                e.revoke_refresh_token(&token)
            } else {
                e.expire_refresh_token(&token)
            };
            json_reply(if ok { 200 } else { 404 }, json!({"ok": ok}))
        }
        (&Method::POST, ["deliver"]) => {
            let (Some(mailbox), Some(raw)) = (s("mailbox"), s("raw")) else {
                return json_reply(400, json!({"error": "mailbox and raw required"}));
            };
            let uid = shared.store.append(
                &mailbox,
                Bytes::from(raw.into_bytes()),
                Vec::new(),
                std::time::SystemTime::now(),
            );
            json_reply(200, json!({"uid": uid}))
        }
        (&Method::POST, ["device", action @ ("approve" | "deny")]) => {
            let Some(code) = s("user_code") else {
                return json_reply(400, json!({"error": "user_code required"}));
            };
            let mut e = shared.entra();
            let ok = if *action == "deny" {
                e.deny_device_code(&code)
            } else {
                let mailbox = s("mailbox").or_else(|| e.authorize_user.clone());
                mailbox.is_some_and(|m| e.approve_device_code(&code, &m))
            };
            json_reply(if ok { 200 } else { 404 }, json!({"ok": ok}))
        }
        _ => not_found(),
    }
}
