//! The fake Entra ID state machine: clients, refresh/access tokens, authorization codes, device
//! codes, failure injection and counters. Pure logic over `Instant`s (no I/O); `http.rs` feeds it
//! parsed requests and writes its [`Reply`]s.
//!
//! Token semantics follow the Microsoft identity platform (FACTS.md "Microsoft identity platform"):
//! refresh tokens rotate on every use (the old one lives on for `refresh_grace`), error bodies carry
//! `error`, an `AADSTSnnnn:` description with trace/correlation ids and `error_codes`.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::exchange::TokenInfo;
use crate::util::{entra_timestamp, guid, opaque_token, unix_secs, user_code};
use crate::{TokenCounters, TokenFailure};

/// The delegated scopes one Exchange token carries (IMAP, POP, SMTP).
pub(crate) const DELEGATED_SCOPE: &str = "https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/POP.AccessAsUser.All https://outlook.office.com/SMTP.Send";
/// The only scope a client-credentials request may ask for.
pub(crate) const APP_SCOPE: &str = "https://outlook.office365.com/.default";
/// The Microsoft Graph app-only scope (its tokens carry the Graph audience, which Exchange's
/// IMAP/POP/SMTP refuse: the classic wrong-scope mistake).
pub(crate) const GRAPH_APP_SCOPE: &str = "https://graph.microsoft.com/.default";
/// Application permissions an app has admin consent for unless told otherwise.
pub(crate) const DEFAULT_APP_ROLES: [&str; 3] =
    ["IMAP.AccessAsApp", "POP.AccessAsApp", "SMTP.SendAsApp"];
const CODE_LIFETIME: Duration = Duration::from_secs(600);
const ACCESS_TOKEN_CHARS: usize = 1500;
const REFRESH_TOKEN_CHARS: usize = 700;

/// An HTTP answer produced by the state machine.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub(crate) fn json(status: u16, v: &Value) -> Reply {
        Reply {
            status,
            content_type: "application/json; charset=utf-8",
            headers: Vec::new(),
            body: v.to_string().into_bytes(),
        }
    }

    pub(crate) fn redirect(location: String) -> Reply {
        Reply {
            status: 302,
            content_type: "text/html; charset=utf-8",
            headers: vec![("location", location)],
            body: b"<html><body>Object moved</body></html>".to_vec(),
        }
    }
}

/// What to do with a token request before (or instead of) answering it.
#[derive(Debug)]
pub(crate) enum Injected {
    Reply(Reply),
    Hang,
    Reset,
    Delay(Duration),
}

#[derive(Default)]
struct Client {
    /// `None` for a public client.
    secret: Option<String>,
    /// DER of a certificate whose key signs client assertions.
    certificate: Option<Vec<u8>>,
    /// Subject of a federated credential (issuer: the sandbox's fake Kubernetes issuer).
    federated_subject: Option<String>,
    app_mailboxes: Vec<String>,
    /// Application permissions with admin consent (`roles` of its app-only tokens).
    app_roles: Vec<String>,
    /// Delegated Microsoft Graph permissions consented for the app (`None`: every one). A
    /// refresh for a Graph permission outside it is refused with `AADSTS65001`.
    graph_consent: Option<Vec<String>>,
}

impl Client {
    /// Has a credential (secret, certificate or federated): a confidential client.
    fn confidential(&self) -> bool {
        self.secret.is_some() || self.certificate.is_some() || self.federated_subject.is_some()
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum FamilyState {
    Live,
    Revoked,
    Expired,
}

struct RefreshToken {
    client_id: String,
    mailbox: String,
    scope: String,
    family: u64,
    rotated_at: Option<Instant>,
}

#[derive(Clone, Debug)]
enum Subject {
    User(String),
    App(String),
}

struct AccessToken {
    subject: Subject,
    client_id: String,
    scope: String,
    /// The claims Exchange checks (also written into the JWT form of the token).
    aud: String,
    scp: Vec<String>,
    roles: Vec<String>,
    expires: Instant,
    expires_wall: SystemTime,
}

struct AuthCode {
    client_id: String,
    redirect_uri: String,
    challenge: Option<(String, String)>,
    mailbox: String,
    scope: String,
    expires: Instant,
    used: bool,
}

#[derive(Clone, Debug, PartialEq)]
enum DeviceState {
    Pending,
    Approved(String),
    Denied,
    Redeemed,
}

struct DeviceCode {
    client_id: String,
    scope: String,
    user_code: String,
    expires: Instant,
    last_poll: Option<Instant>,
    state: DeviceState,
}

/// Result of checking an XOAUTH2 bearer token against a mailbox.
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum MailAccess {
    /// Live token that may use the mailbox.
    Granted,
    /// Live token, but without rights on that mailbox (Exchange: authenticated but not connected).
    NoRights,
    /// Unknown or expired token.
    Invalid,
}

pub(crate) struct Entra {
    pub tenant: String,
    pub base_url: String,
    pub token_lifetime: Duration,
    pub refresh_grace: Duration,
    pub device_code_lifetime: Duration,
    pub device_code_interval: Duration,
    pub authorize_user: Option<String>,
    /// `tid` put into access tokens instead of this tenant's id (a token "from another tenant",
    /// as a multi-tenant app consented elsewhere gets): `check` must notice.
    pub tid_override: Option<String>,
    clients: HashMap<String, Client>,
    refresh: HashMap<String, RefreshToken>,
    families: HashMap<u64, FamilyState>,
    next_family: u64,
    access: HashMap<String, AccessToken>,
    codes: HashMap<String, AuthCode>,
    devices: HashMap<String, DeviceCode>,
    failure: Option<(TokenFailure, Option<u32>)>,
    /// Failures for one account's token refreshes, by lower-cased mailbox or client id.
    account_failures: HashMap<String, (TokenFailure, Option<u32>)>,
    pub counters: TokenCounters,
    /// Issue opaque access tokens (as Google does) instead of JWTs.
    pub opaque_tokens: bool,
    /// `jti`s of accepted client assertions, with their expiry (replay check).
    seen_jtis: HashMap<String, u64>,
    /// The fake Kubernetes issuer of federated tokens.
    pub(crate) issuer: crate::assertion::Issuer,
    /// The token endpoint the current request came to (the `aud` of a client assertion).
    request_token_url: String,
}

type Form = HashMap<String, String>;

fn lower(s: &str) -> String {
    s.trim().to_ascii_lowercase()
}

/// Scopes as returned in a token response: the requested ones without the OIDC/offline extras.
fn granted_scope(requested: &str, fallback: &str) -> String {
    let kept: Vec<&str> = requested
        .split_ascii_whitespace()
        .filter(|s| !matches!(*s, "offline_access" | "openid" | "profile" | "email"))
        .collect();
    if kept.is_empty() {
        fallback.to_string()
    } else {
        kept.join(" ")
    }
}

const GRAPH_AUDIENCE: &str = "https://graph.microsoft.com";

/// The audience (resource) of a granted scope string and its permission names: Entra issues a
/// token for one resource; `https://outlook.office.com/SMTP.Send` → (`https://outlook.office.com`,
/// `SMTP.Send`); `.default` yields no delegated names.
fn audience_and_scp(scope: &str) -> (String, Vec<String>) {
    let mut aud = None;
    let mut names = Vec::new();
    for s in scope.split_ascii_whitespace() {
        let (resource, name) = match s.rsplit_once('/') {
            Some((r, n)) if r.starts_with("https://") => (r, n),
            _ => ("https://graph.microsoft.com", s),
        };
        aud.get_or_insert_with(|| resource.to_string());
        if name != ".default" {
            names.push(name.to_string());
        }
    }
    (
        aud.unwrap_or_else(|| "https://outlook.office.com".to_string()),
        names,
    )
}

fn wants_refresh_token(scope: &str) -> bool {
    scope
        .split_ascii_whitespace()
        .any(|s| s == "offline_access")
}

impl Entra {
    pub(crate) fn new(opts: &crate::SandboxOptions) -> Entra {
        Entra {
            tenant: opts.tenant.clone(),
            base_url: String::new(),
            token_lifetime: opts.token_lifetime,
            refresh_grace: opts.refresh_grace,
            device_code_lifetime: opts.device_code_lifetime,
            device_code_interval: opts.device_code_interval,
            authorize_user: opts.authorize_user.clone(),
            tid_override: None,
            clients: HashMap::new(),
            refresh: HashMap::new(),
            families: HashMap::new(),
            next_family: 1,
            access: HashMap::new(),
            codes: HashMap::new(),
            devices: HashMap::new(),
            failure: None,
            account_failures: HashMap::new(),
            counters: TokenCounters::default(),
            opaque_tokens: opts.opaque_tokens,
            seen_jtis: HashMap::new(),
            issuer: crate::assertion::Issuer::new(),
            request_token_url: String::new(),
        }
    }

    /// Entra takes a tenant's domain name or its id (GUID) in the endpoint path, and the
    /// multi-tenant aliases.
    pub(crate) fn tenant_ok(&self, tenant: &str) -> bool {
        tenant.eq_ignore_ascii_case(&self.tenant)
            || tenant.eq_ignore_ascii_case(&self.tenant_id())
            || tenant.eq_ignore_ascii_case("common")
            || tenant.eq_ignore_ascii_case("organizations")
    }

    // ---- administration (the Sandbox handle) ----

    pub(crate) fn add_client(&mut self, client_id: &str, secret: &str, mailboxes: &[&str]) {
        self.clients.insert(
            client_id.to_string(),
            Client {
                secret: (!secret.is_empty()).then(|| secret.to_string()),
                app_mailboxes: mailboxes.iter().map(|m| lower(m)).collect(),
                app_roles: DEFAULT_APP_ROLES.iter().map(|r| r.to_string()).collect(),
                ..Client::default()
            },
        );
    }

    /// Registers a client that authenticates with assertions signed by `cert_der`'s key.
    pub(crate) fn add_certificate_client(
        &mut self,
        client_id: &str,
        cert_der: Vec<u8>,
        mailboxes: &[&str],
    ) {
        self.clients.insert(
            client_id.to_string(),
            Client {
                certificate: Some(cert_der),
                app_mailboxes: mailboxes.iter().map(|m| lower(m)).collect(),
                app_roles: DEFAULT_APP_ROLES.iter().map(|r| r.to_string()).collect(),
                ..Client::default()
            },
        );
    }

    /// Registers a client with a federated credential for `subject` of the fake issuer.
    pub(crate) fn add_federated_client(
        &mut self,
        client_id: &str,
        subject: &str,
        mailboxes: &[&str],
    ) {
        self.clients.insert(
            client_id.to_string(),
            Client {
                federated_subject: Some(subject.to_string()),
                app_mailboxes: mailboxes.iter().map(|m| lower(m)).collect(),
                app_roles: DEFAULT_APP_ROLES.iter().map(|r| r.to_string()).collect(),
                ..Client::default()
            },
        );
    }

    /// Replace the application permissions `client_id` has admin consent for.
    pub(crate) fn set_app_roles(&mut self, client_id: &str, roles: &[&str]) {
        self.ensure_client(client_id);
        if let Some(c) = self.clients.get_mut(client_id) {
            c.app_roles = roles.iter().map(|r| r.to_string()).collect();
        }
    }

    /// Which delegated Microsoft Graph permissions `client_id` has consent for (`None`: all).
    pub(crate) fn set_graph_consent(&mut self, client_id: &str, permissions: Option<&[&str]>) {
        self.ensure_client(client_id);
        if let Some(c) = self.clients.get_mut(client_id) {
            c.graph_consent = permissions.map(|p| p.iter().map(|s| s.to_string()).collect());
        }
    }

    /// Grant or take away the app's `Add-MailboxPermission` on `mailbox`.
    pub(crate) fn set_app_mailbox_permission(&mut self, client_id: &str, mailbox: &str, on: bool) {
        self.ensure_client(client_id);
        if let Some(c) = self.clients.get_mut(client_id) {
            let m = lower(mailbox);
            c.app_mailboxes.retain(|x| *x != m);
            if on {
                c.app_mailboxes.push(m);
            }
        }
    }

    fn ensure_client(&mut self, client_id: &str) {
        if !self.clients.contains_key(client_id) {
            self.add_client(client_id, "", &[]);
        }
    }

    pub(crate) fn issue_refresh_token(&mut self, client_id: &str, mailbox: &str) -> String {
        self.ensure_client(client_id);
        let family = self.next_family;
        self.next_family += 1;
        self.families.insert(family, FamilyState::Live);
        self.new_refresh_token(client_id, mailbox, DELEGATED_SCOPE, family)
    }

    fn new_refresh_token(
        &mut self,
        client_id: &str,
        mailbox: &str,
        scope: &str,
        family: u64,
    ) -> String {
        let token = opaque_token("0.AXEA", REFRESH_TOKEN_CHARS);
        self.refresh.insert(
            token.clone(),
            RefreshToken {
                client_id: client_id.to_string(),
                mailbox: lower(mailbox),
                scope: scope.to_string(),
                family,
                rotated_at: None,
            },
        );
        token
    }

    fn new_access_token(
        &mut self,
        subject: Subject,
        client_id: &str,
        scope: &str,
        now: Instant,
    ) -> String {
        let (aud, scp) = audience_and_scp(scope);
        let roles = match &subject {
            Subject::App(cid) => {
                let consented = self
                    .clients
                    .get(cid)
                    .map(|c| c.app_roles.clone())
                    .unwrap_or_default();
                if aud == GRAPH_AUDIENCE {
                    consented
                        .into_iter()
                        .filter(|r| r.starts_with("Mail."))
                        .collect()
                } else {
                    consented
                        .into_iter()
                        .filter(|r| !r.starts_with("Mail."))
                        .collect()
                }
            }
            Subject::User(_) => Vec::new(),
        };
        let expires_wall = SystemTime::now() + self.token_lifetime;
        let token = if self.opaque_tokens {
            opaque_token("EwB", ACCESS_TOKEN_CHARS)
        } else {
            self.jwt(&subject, client_id, &aud, &scp, &roles, expires_wall)
        };
        self.access.insert(
            token.clone(),
            AccessToken {
                subject,
                client_id: client_id.to_string(),
                scope: scope.to_string(),
                aud,
                scp,
                roles,
                expires: now + self.token_lifetime,
                expires_wall,
            },
        );
        token
    }

    /// A JWT-shaped access token carrying the claims Entra ID puts into Exchange tokens (v1.0
    /// access tokens: `aud`, `iss`, `tid`, `appid`, `scp` or `roles`, `upn`/`unique_name`,
    /// `exp`). The signature is random bytes: nobody but this sandbox checks these tokens, and it
    /// looks them up whole.
    fn jwt(
        &self,
        subject: &Subject,
        client_id: &str,
        aud: &str,
        scp: &[String],
        roles: &[String],
        expires: SystemTime,
    ) -> String {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let now = unix_secs(SystemTime::now());
        let tid = self
            .tid_override
            .clone()
            .unwrap_or_else(|| self.tenant_id());
        let mut claims = json!({
            "aud": aud,
            "iss": format!("https://sts.windows.net/{tid}/"),
            "iat": now,
            "nbf": now,
            "exp": unix_secs(expires),
            "tid": tid,
            "appid": client_id,
            "ver": "1.0",
            "oid": guid(),
        });
        match subject {
            Subject::User(m) => {
                claims["scp"] = json!(scp.join(" "));
                claims["upn"] = json!(m);
                claims["unique_name"] = json!(m);
            }
            Subject::App(_) => {
                if !roles.is_empty() {
                    claims["roles"] = json!(roles);
                }
            }
        }
        let header = json!({"typ": "JWT", "alg": "RS256", "kid": "sandbox"});
        let head = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
        );
        // A real RS256 signature is 342 characters; pad so the token is as long as Exchange's.
        let sig = ACCESS_TOKEN_CHARS.saturating_sub(head.len()).max(342);
        head + &opaque_token("", sig)
    }

    /// The tenant's id as a GUID (stable per tenant name).
    pub(crate) fn tenant_id(&self) -> String {
        let h = Sha256::digest(self.tenant.to_ascii_lowercase().as_bytes());
        let x: String = h[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &x[0..8],
            &x[8..12],
            &x[12..16],
            &x[16..20],
            &x[20..32]
        )
    }

    /// The claims Exchange checks of a live token; `None` if it is unknown or expired.
    pub(crate) fn token_info(&self, token: &str, now: Instant) -> Option<TokenInfo> {
        let at = self.access.get(token).filter(|at| now < at.expires)?;
        Some(TokenInfo {
            user: match &at.subject {
                Subject::User(m) => Some(m.clone()),
                Subject::App(_) => None,
            },
            client_id: at.client_id.clone(),
            aud: at.aud.clone(),
            scp: at.scp.clone(),
            roles: at.roles.clone(),
        })
    }

    /// Whether `client_id` holds `Add-MailboxPermission` on `mailbox`.
    pub(crate) fn app_may_open(&self, client_id: &str, mailbox: &str) -> bool {
        self.clients
            .get(client_id)
            .is_some_and(|c| c.app_mailboxes.contains(&lower(mailbox)))
    }

    pub(crate) fn issue_access_token(&mut self, client_id: &str, mailbox: &str) -> String {
        self.ensure_client(client_id);
        self.new_access_token(
            Subject::User(lower(mailbox)),
            client_id,
            DELEGATED_SCOPE,
            Instant::now(),
        )
    }

    pub(crate) fn issue_app_token(&mut self, client_id: &str) -> String {
        self.ensure_client(client_id);
        self.new_access_token(
            Subject::App(client_id.to_string()),
            client_id,
            APP_SCOPE,
            Instant::now(),
        )
    }

    fn set_family(&mut self, token: &str, state: FamilyState) -> bool {
        match self.refresh.get(token) {
            Some(rt) => {
                self.families.insert(rt.family, state);
                true
            }
            None => false,
        }
    }

    pub(crate) fn revoke_refresh_token(&mut self, token: &str) -> bool {
        self.set_family(token, FamilyState::Revoked)
    }

    pub(crate) fn expire_refresh_token(&mut self, token: &str) -> bool {
        self.set_family(token, FamilyState::Expired)
    }

    pub(crate) fn expire_access_tokens(&mut self, now: Instant) {
        for t in self.access.values_mut() {
            t.expires = t.expires.min(now);
            t.expires_wall = t.expires_wall.min(SystemTime::now());
        }
    }

    pub(crate) fn inject(&mut self, failure: TokenFailure, times: Option<u32>) {
        self.failure = Some((failure, times));
    }

    /// `failure` for the refresh-token and client-credentials requests of one account only: `account`
    /// is the mailbox of a delegated refresh token or the client id of an app-only request.
    pub(crate) fn inject_for(&mut self, account: &str, failure: TokenFailure, times: Option<u32>) {
        self.account_failures
            .insert(lower(account), (failure, times));
    }

    pub(crate) fn clear_failures(&mut self) {
        self.failure = None;
        self.account_failures.clear();
    }

    /// Whose credentials a token request uses: the mailbox of the refresh token or the client id of
    /// a client-credentials request; `None` for interactive grants (code, device code).
    fn request_account(&self, form: &Form) -> Option<String> {
        match form.get("grant_type").map(String::as_str) {
            Some("refresh_token") => form
                .get("refresh_token")
                .and_then(|t| self.refresh.get(t))
                .map(|rt| rt.mailbox.clone()),
            Some("client_credentials") => form.get("client_id").map(|c| lower(c)),
            _ => None,
        }
    }

    pub(crate) fn approve_device_code(&mut self, user_code: &str, mailbox: &str) -> bool {
        self.set_device_state(user_code, DeviceState::Approved(lower(mailbox)))
    }

    pub(crate) fn deny_device_code(&mut self, user_code: &str) -> bool {
        self.set_device_state(user_code, DeviceState::Denied)
    }

    fn set_device_state(&mut self, user_code: &str, state: DeviceState) -> bool {
        let wanted = user_code.trim().replace('-', "");
        for d in self.devices.values_mut() {
            if d.user_code.eq_ignore_ascii_case(&wanted) && d.state == DeviceState::Pending {
                d.state = state;
                return true;
            }
        }
        false
    }

    pub(crate) fn pending_user_codes(&self) -> Vec<String> {
        self.devices
            .values()
            .filter(|d| d.state == DeviceState::Pending)
            .map(|d| d.user_code.clone())
            .collect()
    }

    // ---- checks used by the mail servers ----

    #[cfg(test)]
    pub(crate) fn check_mail_access(&self, token: &str, mailbox: &str, now: Instant) -> MailAccess {
        let Some(at) = self.access.get(token) else {
            return MailAccess::Invalid;
        };
        if now >= at.expires {
            return MailAccess::Invalid;
        }
        let mailbox = lower(mailbox);
        let allowed = match &at.subject {
            Subject::User(m) => *m == mailbox,
            Subject::App(cid) => self
                .clients
                .get(cid)
                .is_some_and(|c| c.app_mailboxes.contains(&mailbox)),
        };
        if allowed {
            MailAccess::Granted
        } else {
            MailAccess::NoRights
        }
    }

    /// RFC 7662 introspection.
    pub(crate) fn introspect(&mut self, token: &str, now: Instant) -> Value {
        self.counters.introspect += 1;
        match self.access.get(token) {
            Some(at) if now < at.expires => {
                self.counters.introspect_active += 1;
                let mut v = json!({
                    "active": true,
                    "scope": at.scope,
                    "client_id": at.client_id,
                    "token_type": "Bearer",
                    "exp": unix_secs(at.expires_wall),
                });
                match &at.subject {
                    Subject::User(m) => {
                        v["sub"] = json!(m);
                        v["username"] = json!(m);
                        v["email"] = json!(m);
                    }
                    Subject::App(cid) => {
                        v["sub"] = json!(cid);
                    }
                }
                v
            }
            _ => json!({"active": false}),
        }
    }

    // ---- the HTTP endpoints ----

    /// An Entra-shaped error body.
    pub(crate) fn error(&self, status: u16, error: &str, code: u32, text: &str) -> Reply {
        let now = SystemTime::now();
        let ts = entra_timestamp(now);
        let trace = guid();
        let corr = guid();
        Reply::json(
            status,
            &json!({
                "error": error,
                "error_description": format!(
                    "AADSTS{code}: {text} Trace ID: {trace} Correlation ID: {corr} Timestamp: {ts}"
                ),
                "error_codes": [code],
                "timestamp": ts,
                "trace_id": trace,
                "correlation_id": corr,
                "error_uri": format!("{}/error?code={code}", self.base_url),
            }),
        )
    }

    /// Count a token request and decide whether an injected failure takes it over: the failure
    /// injected for the request's account (see [`Entra::inject_for`]) first, else the global one.
    pub(crate) fn admit_token_request(&mut self, form: &Form) -> Option<Injected> {
        let grant_type = form.get("grant_type").map(String::as_str).unwrap_or("");
        let c = &mut self.counters;
        c.total += 1;
        match grant_type {
            "refresh_token" => c.refresh_token += 1,
            "client_credentials" => c.client_credentials += 1,
            "authorization_code" => c.authorization_code += 1,
            "urn:ietf:params:oauth:grant-type:device_code" | "device_code" => c.device_code += 1,
            _ => c.other += 1,
        }
        let account = self
            .request_account(form)
            .filter(|a| self.account_failures.contains_key(a));
        let failure = match account {
            Some(a) => {
                let (failure, left) = self.account_failures.get(&a)?.clone();
                match left {
                    Some(n) if n <= 1 => {
                        self.account_failures.remove(&a);
                    }
                    Some(n) => {
                        self.account_failures
                            .insert(a, (failure.clone(), Some(n - 1)));
                    }
                    None => {}
                }
                failure
            }
            None => {
                let (failure, left) = self.failure.clone()?;
                match left {
                    Some(n) if n <= 1 => self.failure = None,
                    Some(n) => self.failure = Some((failure.clone(), Some(n - 1))),
                    None => {}
                }
                failure
            }
        };
        Some(match failure {
            TokenFailure::Http500 => Injected::Reply(self.error(
                500,
                "server_error",
                50000,
                "There was an error issuing a token or an issue with our sign-in service.",
            )),
            TokenFailure::Throttle429 { retry_after_secs } => Injected::Reply(Reply {
                status: 429,
                content_type: "text/plain; charset=utf-8",
                headers: vec![("retry-after", retry_after_secs.to_string())],
                body: b"Too Many Requests".to_vec(),
            }),
            TokenFailure::InvalidGrant70008 => Injected::Reply(self.error(
                400,
                "invalid_grant",
                70008,
                "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
            )),
            TokenFailure::TemporarilyUnavailable => Injected::Reply(self.error(
                400,
                "temporarily_unavailable",
                90033,
                "A transient error has occurred. Please try again.",
            )),
            TokenFailure::SlowDown => Injected::Reply(self.error(
                400,
                "slow_down",
                70016,
                "OAuth 2.0 device flow error. Authorization is pending. Continue polling. Polling too fast: slow down.",
            )),
            TokenFailure::AuthorizationPending => Injected::Reply(self.error(
                400,
                "authorization_pending",
                70016,
                "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
            )),
            TokenFailure::GarbageJson => Injected::Reply(Reply {
                status: 200,
                content_type: "application/json; charset=utf-8",
                headers: Vec::new(),
                body: b"<html><body>Service Unavailable</body></html>{\"access_tok".to_vec(),
            }),
            TokenFailure::Hang => Injected::Hang,
            TokenFailure::ResetConnection => Injected::Reset,
            TokenFailure::Slow(d) => Injected::Delay(d),
        })
    }

    pub(crate) fn failure_is_reset(&self) -> bool {
        matches!(self.failure, Some((TokenFailure::ResetConnection, _)))
    }

    fn success(
        &mut self,
        subject: Subject,
        client_id: &str,
        scope: &str,
        refresh: Option<(String, u64)>,
        now: Instant,
    ) -> Reply {
        let access = self.new_access_token(subject.clone(), client_id, scope, now);
        let secs = self.token_lifetime.as_secs();
        let mut v = json!({
            "token_type": "Bearer",
            "scope": scope,
            "expires_in": secs,
            "ext_expires_in": secs,
            "access_token": access,
        });
        match (refresh, subject) {
            (Some((rt_scope, family)), Subject::User(m)) => {
                let rt = self.new_refresh_token(client_id, &m, &rt_scope, family);
                v["refresh_token"] = json!(rt);
            }
            (_, Subject::App(_)) => {
                // Client-credentials answers carry no scope and no refresh token.
                if let Some(o) = v.as_object_mut() {
                    o.remove("scope");
                }
            }
            _ => {}
        }
        Reply::json(200, &v)
    }

    fn new_family(&mut self) -> u64 {
        let f = self.next_family;
        self.next_family += 1;
        self.families.insert(f, FamilyState::Live);
        f
    }

    /// Authenticate the client of a token request. `secret_optional`: a confidential client may
    /// omit its secret (device flow); a wrong one is still refused.
    fn authenticate_client(&mut self, form: &Form, secret_optional: bool) -> Result<String, Reply> {
        let Some(client_id) = form.get("client_id").filter(|c| !c.is_empty()) else {
            return Err(self.error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'.",
            ));
        };
        let Some(client) = self.clients.get(client_id) else {
            return Err(self.error(
                400,
                "unauthorized_client",
                700016,
                &format!(
                    "Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
                    self.tenant
                ),
            ));
        };
        if let Some(assertion) = form.get("client_assertion") {
            return self.authenticate_assertion(client_id, assertion, form);
        }
        if client.secret.is_none() && client.confidential() && !secret_optional {
            return Err(self.error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            ));
        }
        if let Some(secret) = &client.secret {
            match form.get("client_secret") {
                None if secret_optional => {}
                None => {
                    return Err(self.error(
                        401,
                        "invalid_client",
                        7000218,
                        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
                    ));
                }
                Some(given) if given != secret => {
                    return Err(self.error(
                        401,
                        "invalid_client",
                        7000215,
                        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app.",
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(client_id.clone())
    }

    /// Checks `client_assertion` (RFC 7523 §2.2) for a registered certificate or federated
    /// credential of `client_id`.
    fn authenticate_assertion(
        &mut self,
        client_id: &str,
        assertion: &str,
        form: &Form,
    ) -> Result<String, Reply> {
        if form.get("client_assertion_type").map(String::as_str)
            != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        {
            return Err(self.error(
                400,
                "invalid_request",
                50027,
                "Invalid JWT token. client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer.",
            ));
        }
        let now = unix_secs(SystemTime::now());
        let client = &self.clients[client_id];
        let result = match (&client.certificate, &client.federated_subject) {
            (Some(der), _) => crate::assertion::verify_certificate_assertion(
                assertion,
                der,
                client_id,
                &self.request_token_url,
                now,
                &mut self.seen_jtis,
            ),
            (None, Some(subject)) => self.issuer.verify(assertion, subject, now),
            (None, None) => Err((
                700027,
                "Client assertion failed signature validation. The app has no certificate or federated credential.".to_owned(),
            )),
        };
        result
            .map(|()| client_id.to_owned())
            .map_err(|(code, text)| self.error(401, "invalid_client", code, &text))
    }

    /// `POST /{tenant}/oauth2/v2.0/token` after counting and failure injection.
    pub(crate) fn token(&mut self, tenant: &str, form: &Form, now: Instant) -> Reply {
        if !self.tenant_ok(tenant) {
            return self.unknown_tenant(tenant);
        }
        self.request_token_url = format!("{}/{tenant}/oauth2/v2.0/token", self.base_url);
        let grant = form.get("grant_type").map(String::as_str).unwrap_or("");
        match grant {
            "" => self.error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            ),
            "refresh_token" => self.grant_refresh(form, now),
            "client_credentials" => self.grant_client_credentials(form, now),
            "authorization_code" => self.grant_code(form, now),
            "urn:ietf:params:oauth:grant-type:device_code" | "device_code" => {
                self.grant_device(form, now)
            }
            other => self.error(
                400,
                "unsupported_grant_type",
                70003,
                &format!("The app requested an unsupported grant type '{other}'."),
            ),
        }
    }

    pub(crate) fn unknown_tenant(&self, tenant: &str) -> Reply {
        self.error(
            400,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        )
    }

    fn bad_grant(&self, code: u32, text: &str) -> Reply {
        self.error(400, "invalid_grant", code, text)
    }

    fn grant_refresh(&mut self, form: &Form, now: Instant) -> Reply {
        let client_id = match self.authenticate_client(form, false) {
            Ok(c) => c,
            Err(r) => return r,
        };
        let Some(token) = form.get("refresh_token").filter(|t| !t.is_empty()) else {
            return self.error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'refresh_token'.",
            );
        };
        let Some(rt) = self.refresh.get(token) else {
            return self.bad_grant(9002313, "Invalid request. Request is malformed or invalid.");
        };
        if rt.client_id != client_id {
            return self.bad_grant(
                70000,
                "Provided grant is invalid or malformed. The refresh token was issued to a different client.",
            );
        }
        match self
            .families
            .get(&rt.family)
            .copied()
            .unwrap_or(FamilyState::Live)
        {
            FamilyState::Revoked => {
                return self.bad_grant(
                    50173,
                    "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password.",
                );
            }
            FamilyState::Expired => return self.expired_70008(),
            FamilyState::Live => {}
        }
        if let Some(at) = rt.rotated_at
            && now.duration_since(at) > self.refresh_grace
        {
            return self.expired_70008();
        }
        let mailbox = rt.mailbox.clone();
        let family = rt.family;
        let rt_scope = rt.scope.clone();
        let requested = form.get("scope").map(String::as_str).unwrap_or("");
        let scope = granted_scope(requested, &granted_scope(&rt_scope, DELEGATED_SCOPE));
        let (aud, names) = audience_and_scp(&scope);
        let consented = self
            .clients
            .get(&client_id)
            .and_then(|c| c.graph_consent.as_ref());
        if aud == GRAPH_AUDIENCE
            && let Some(consented) = consented
            && let Some(missing) = names
                .iter()
                .find(|n| !consented.iter().any(|c| c.eq_ignore_ascii_case(n)))
        {
            let text = format!(
                "The user or administrator has not consented to use the application with ID \
                 '{client_id}' named 'authbridge' for the permission '{missing}'. Send an \
                 interactive authorization request for this user and resource."
            );
            return self.bad_grant(65001, &text);
        }
        if let Some(rt) = self.refresh.get_mut(token)
            && rt.rotated_at.is_none()
        {
            rt.rotated_at = Some(now);
        }
        self.success(
            Subject::User(mailbox),
            &client_id,
            &scope,
            Some((rt_scope, family)),
            now,
        )
    }

    fn expired_70008(&self) -> Reply {
        self.bad_grant(
            70008,
            "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
        )
    }

    fn grant_client_credentials(&mut self, form: &Form, now: Instant) -> Reply {
        let client_id = match self.authenticate_client(form, false) {
            Ok(c) => c,
            Err(r) => return r,
        };
        if self
            .clients
            .get(&client_id)
            .is_some_and(|c| !c.confidential())
        {
            return self.error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            );
        }
        let scope = form.get("scope").map(|s| s.trim()).unwrap_or("");
        if scope.is_empty() {
            return self.error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'scope'.",
            );
        }
        if scope != APP_SCOPE && scope != GRAPH_APP_SCOPE {
            return self.error(
                400,
                "invalid_scope",
                70011,
                &format!(
                    "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid. The scope format is invalid. Scope must be in a valid URI form <https://example/scope> or a valid Guid <guid/scope>."
                ),
            );
        }
        let scope = scope.to_string();
        self.success(
            Subject::App(client_id.clone()),
            &client_id,
            &scope,
            None,
            now,
        )
    }

    fn grant_code(&mut self, form: &Form, now: Instant) -> Reply {
        let client_id = match self.authenticate_client(form, false) {
            Ok(c) => c,
            Err(r) => return r,
        };
        let Some(code) = form.get("code").filter(|c| !c.is_empty()) else {
            return self.error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'code'.",
            );
        };
        let Some(ac) = self.codes.get(code) else {
            return self.bad_grant(9002313, "Invalid request. Request is malformed or invalid.");
        };
        if ac.used {
            return self.bad_grant(
                54005,
                "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
            );
        }
        if now >= ac.expires {
            return self.expired_70008();
        }
        if ac.client_id != client_id {
            return self.bad_grant(
                70000,
                "Provided grant is invalid or malformed. The code was issued to a different client.",
            );
        }
        if form.get("redirect_uri").map(String::as_str) != Some(ac.redirect_uri.as_str()) {
            return self.bad_grant(
                500117,
                "The reply uri specified in the request does not match the reply uri used in the authorization request.",
            );
        }
        if let Some((challenge, method)) = &ac.challenge {
            let Some(verifier) = form.get("code_verifier") else {
                return self.bad_grant(
                    50148,
                    "The code_verifier does not match the code_challenge supplied in the authorization request for PKCE.",
                );
            };
            let computed = if method.eq_ignore_ascii_case("S256") {
                use base64::Engine as _;
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(Sha256::digest(verifier.as_bytes()))
            } else {
                verifier.clone()
            };
            if computed != *challenge {
                return self.bad_grant(
                    50148,
                    "The code_verifier does not match the code_challenge supplied in the authorization request for PKCE.",
                );
            }
        }
        let mailbox = ac.mailbox.clone();
        let scope_req = ac.scope.clone();
        if let Some(ac) = self.codes.get_mut(code) {
            ac.used = true;
        }
        self.delegated_success(mailbox, &client_id, &scope_req, now)
    }

    fn delegated_success(
        &mut self,
        mailbox: String,
        client_id: &str,
        requested: &str,
        now: Instant,
    ) -> Reply {
        let scope = granted_scope(requested, DELEGATED_SCOPE);
        let refresh = if wants_refresh_token(requested) {
            Some((scope.clone(), self.new_family()))
        } else {
            None
        };
        self.success(Subject::User(mailbox), client_id, &scope, refresh, now)
    }

    fn grant_device(&mut self, form: &Form, now: Instant) -> Reply {
        let client_id = match self.authenticate_client(form, true) {
            Ok(c) => c,
            Err(r) => return r,
        };
        let Some(code) = form.get("device_code").filter(|c| !c.is_empty()) else {
            return self.error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'device_code'.",
            );
        };
        let interval = self.device_code_interval;
        let Some(dc) = self.devices.get_mut(code) else {
            return self.error(
                400,
                "bad_verification_code",
                70000,
                "The provided value for the input parameter 'device_code' is not valid.",
            );
        };
        if dc.client_id != client_id {
            return self.bad_grant(
                70000,
                "Provided grant is invalid or malformed. The device code was issued to a different client.",
            );
        }
        if dc.state == DeviceState::Redeemed {
            return self.bad_grant(
                54005,
                "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
            );
        }
        if now >= dc.expires {
            return self.error(400, "expired_token", 70019, "Verification code expired.");
        }
        let too_fast = dc
            .last_poll
            .is_some_and(|last| now.duration_since(last) < interval);
        dc.last_poll = Some(now);
        let state = dc.state.clone();
        let scope = dc.scope.clone();
        match state {
            DeviceState::Denied => self.error(
                400,
                "authorization_declined",
                70000,
                "The user has declined to authorize the request.",
            ),
            _ if too_fast => self.error(
                400,
                "slow_down",
                70016,
                "OAuth 2.0 device flow error. Authorization is pending. Continue polling. Polling too fast: slow down.",
            ),
            // Redeemed codes were answered above.
            DeviceState::Pending | DeviceState::Redeemed => self.error(
                400,
                "authorization_pending",
                70016,
                "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
            ),
            DeviceState::Approved(mailbox) => {
                if let Some(dc) = self.devices.get_mut(code) {
                    dc.state = DeviceState::Redeemed;
                }
                self.delegated_success(mailbox, &client_id, &scope, now)
            }
        }
    }

    /// `POST /{tenant}/oauth2/v2.0/devicecode`.
    pub(crate) fn device_authorization(
        &mut self,
        tenant: &str,
        form: &Form,
        now: Instant,
    ) -> Reply {
        self.counters.device_authorizations += 1;
        if !self.tenant_ok(tenant) {
            return self.unknown_tenant(tenant);
        }
        let client_id = match self.authenticate_client(form, true) {
            Ok(c) => c,
            Err(r) => return r,
        };
        let scope = form
            .get("scope")
            .cloned()
            .unwrap_or_else(|| format!("{DELEGATED_SCOPE} offline_access"));
        let device_code = opaque_token("DAQABAAEAAA", 300);
        let user_code = user_code(9);
        let verification_uri = format!("{}/devicelogin", self.base_url);
        self.devices.insert(
            device_code.clone(),
            DeviceCode {
                client_id,
                scope,
                user_code: user_code.clone(),
                expires: now + self.device_code_lifetime,
                last_poll: None,
                state: DeviceState::Pending,
            },
        );
        Reply::json(
            200,
            &json!({
                "user_code": user_code,
                "device_code": device_code,
                "verification_uri": verification_uri,
                "expires_in": self.device_code_lifetime.as_secs(),
                "interval": self.device_code_interval.as_secs_f64().ceil() as u64,
                "message": format!("To sign in, use a web browser to open the page {verification_uri} and enter the code {user_code} to authenticate."),
            }),
        )
    }

    /// `GET /{tenant}/oauth2/v2.0/authorize`: the user consents at once.
    pub(crate) fn authorize(&mut self, tenant: &str, query: &Form, now: Instant) -> Reply {
        self.counters.authorize += 1;
        let plain_error = |status: u16, text: String| Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: text.into_bytes(),
        };
        if !self.tenant_ok(tenant) {
            return self.unknown_tenant(tenant);
        }
        let client_id = query.get("client_id").cloned().unwrap_or_default();
        if !self.clients.contains_key(&client_id) {
            return plain_error(
                400,
                format!(
                    "AADSTS700016: Application with identifier '{client_id}' was not found in the directory '{}'.",
                    self.tenant
                ),
            );
        }
        let Some(redirect_uri) = query.get("redirect_uri").filter(|r| !r.is_empty()).cloned()
        else {
            return plain_error(
                400,
                "AADSTS900144: The request body must contain the following parameter: 'redirect_uri'."
                    .into(),
            );
        };
        let state = query.get("state").cloned();
        let redirect = |params: Vec<(&str, String)>| {
            let mut ser = form_urlencoded::Serializer::new(String::new());
            for (k, v) in params {
                ser.append_pair(k, &v);
            }
            if let Some(s) = &state {
                ser.append_pair("state", s);
            }
            let sep = if redirect_uri.contains('?') { '&' } else { '?' };
            Reply::redirect(format!("{redirect_uri}{sep}{}", ser.finish()))
        };
        if query.get("response_type").map(String::as_str) != Some("code") {
            return redirect(vec![
                ("error", "unsupported_response_type".into()),
                (
                    "error_description",
                    "AADSTS700054: response_type 'id_token' is not enabled for the application."
                        .into(),
                ),
            ]);
        }
        let challenge = match (
            query.get("code_challenge"),
            query.get("code_challenge_method"),
        ) {
            (None, _) => None,
            (Some(c), m) => {
                let method = m.cloned().unwrap_or_else(|| "plain".into());
                if !method.eq_ignore_ascii_case("S256") && !method.eq_ignore_ascii_case("plain") {
                    return redirect(vec![
                        ("error", "invalid_request".into()),
                        (
                            "error_description",
                            "AADSTS501491: Invalid code_challenge_method.".into(),
                        ),
                    ]);
                }
                Some((c.clone(), method))
            }
        };
        let mailbox = query
            .get("login_hint")
            .filter(|m| !m.is_empty())
            .cloned()
            .or_else(|| self.authorize_user.clone());
        let Some(mailbox) = mailbox else {
            return redirect(vec![
                ("error", "interaction_required".into()),
                (
                    "error_description",
                    "AADSTS50058: A silent sign-in request was sent but no user is signed in (sandbox: pass login_hint or call set_authorize_user)."
                        .into(),
                ),
            ]);
        };
        let scope = query.get("scope").cloned().unwrap_or_default();
        let code = opaque_token("1.AXEA", 600);
        self.codes.insert(
            code.clone(),
            AuthCode {
                client_id,
                redirect_uri: redirect_uri.clone(),
                challenge,
                mailbox: lower(&mailbox),
                scope,
                expires: now + CODE_LIFETIME,
                used: false,
            },
        );
        redirect(vec![("code", code), ("session_state", guid())])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Form {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn body(r: &Reply) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    fn entra() -> Entra {
        let mut e = Entra::new(&crate::SandboxOptions::default());
        e.add_client("app", "s3cret", &["tickets@contoso.com"]);
        e
    }

    #[test]
    fn refresh_rotation_and_grace() {
        let mut e = entra();
        let t0 = Instant::now();
        let rt = e.issue_refresh_token("app", "Tickets@contoso.com");
        let f = |rt: &str| {
            form(&[
                ("grant_type", "refresh_token"),
                ("client_id", "app"),
                ("client_secret", "s3cret"),
                ("refresh_token", rt),
            ])
        };
        let r = e.token("contoso.onmicrosoft.com", &f(&rt), t0);
        assert_eq!(r.status, 200);
        let v = body(&r);
        let rt2 = v["refresh_token"].as_str().unwrap().to_string();
        assert_ne!(rt2, rt);
        let at = v["access_token"].as_str().unwrap();
        assert!(at.len() >= 1500);
        assert_eq!(
            e.check_mail_access(at, "tickets@CONTOSO.com", t0),
            MailAccess::Granted
        );
        assert_eq!(
            e.check_mail_access(at, "other@contoso.com", t0),
            MailAccess::NoRights
        );
        // Within the grace period the old token still works.
        let r = e.token(
            "contoso.onmicrosoft.com",
            &f(&rt),
            t0 + Duration::from_secs(1),
        );
        assert_eq!(r.status, 200);
        // After it, it does not.
        let r = e.token(
            "contoso.onmicrosoft.com",
            &f(&rt),
            t0 + Duration::from_secs(3),
        );
        assert_eq!(r.status, 400);
        let v = body(&r);
        assert_eq!(v["error"], "invalid_grant");
        assert_eq!(v["error_codes"][0], 70008);
        assert!(
            v["error_description"]
                .as_str()
                .unwrap()
                .starts_with("AADSTS70008: ")
        );
        // Revoking the original revokes the whole family.
        e.revoke_refresh_token(&rt);
        let r = e.token("contoso.onmicrosoft.com", &f(&rt2), t0);
        assert_eq!(body(&r)["error_codes"][0], 50173);
    }

    #[test]
    fn client_errors() {
        let mut e = entra();
        let rt = e.issue_refresh_token("app", "tickets@contoso.com");
        let r = e.token(
            "contoso.onmicrosoft.com",
            &form(&[
                ("grant_type", "refresh_token"),
                ("client_id", "app"),
                ("client_secret", "wrong"),
                ("refresh_token", &rt),
            ]),
            Instant::now(),
        );
        assert_eq!(r.status, 401);
        assert_eq!(body(&r)["error_codes"][0], 7000215);
        let r = e.token("nope.example", &form(&[]), Instant::now());
        assert_eq!(body(&r)["error_codes"][0], 90002);
    }

    #[test]
    fn auth_code_pkce_single_use() {
        let mut e = entra();
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        let r = e.authorize(
            "contoso.onmicrosoft.com",
            &form(&[
                ("client_id", "app"),
                ("response_type", "code"),
                ("redirect_uri", "http://localhost:1234/cb"),
                (
                    "scope",
                    "offline_access https://outlook.office.com/SMTP.Send",
                ),
                ("state", "xyz"),
                ("code_challenge", challenge),
                ("code_challenge_method", "S256"),
                ("login_hint", "tickets@contoso.com"),
            ]),
            Instant::now(),
        );
        assert_eq!(r.status, 302);
        let loc = &r.headers[0].1;
        assert!(loc.starts_with("http://localhost:1234/cb?code="));
        assert!(loc.ends_with("&state=xyz"));
        let q = loc.split_once('?').unwrap().1;
        let code: String = form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "code")
            .unwrap()
            .1
            .into_owned();
        let redeem = |v: &str| {
            form(&[
                ("grant_type", "authorization_code"),
                ("client_id", "app"),
                ("client_secret", "s3cret"),
                ("code", &code),
                ("redirect_uri", "http://localhost:1234/cb"),
                ("code_verifier", v),
            ])
        };
        let r = e.token("contoso.onmicrosoft.com", &redeem("wrong"), Instant::now());
        assert_eq!(body(&r)["error_codes"][0], 50148);
        let r = e.token("contoso.onmicrosoft.com", &redeem(verifier), Instant::now());
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert!(body(&r)["refresh_token"].is_string());
        assert_eq!(body(&r)["scope"], "https://outlook.office.com/SMTP.Send");
        let r = e.token("contoso.onmicrosoft.com", &redeem(verifier), Instant::now());
        assert_eq!(body(&r)["error_codes"][0], 54005);
    }
}
