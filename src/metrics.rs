//! The Prometheus metrics registry: every counter, gauge and histogram authbridge exposes on the
//! admin listener's `/metrics`, and the methods the server, sessions and token manager call to
//! record into them.
//!
//! Invariant: every label value comes from a bounded set — a listener or account name from the
//! config, a protocol, a grant type or a result keyword from the enums below. No label ever
//! carries a user name, password, token, secret or anything else a client sent.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::config::Protocol;

/// How a client's login ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum LoginResult {
    /// Logged in upstream (or, in relay mode, locally).
    ok,
    /// Unknown user or wrong password.
    bad_credentials,
    /// Refused: too many failures from this source.
    throttled,
    /// No access token could be had (provider down, needs a login, …).
    token_unavailable,
    /// The upstream refused the access token, also after one refresh.
    upstream_refused,
    /// The upstream could not be reached, or its TLS or login dialogue broke off.
    upstream_unreachable,
    /// The local password check was overloaded or timed out.
    busy,
}

/// Which way piped bytes went.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Direction {
    /// Client to upstream.
    up,
    /// Upstream to client.
    down,
}

/// A token request's grant type, as a bounded label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Grant {
    refresh_token,
    client_credentials,
    authorization_code,
    device_code,
    other,
}

impl Grant {
    /// The label of an OAuth `grant_type` parameter.
    pub fn of(grant_type: &str) -> Grant {
        match grant_type {
            "refresh_token" => Grant::refresh_token,
            "client_credentials" => Grant::client_credentials,
            "authorization_code" => Grant::authorization_code,
            "urn:ietf:params:oauth:grant-type:device_code" | "device_code" => Grant::device_code,
            _ => Grant::other,
        }
    }
}

/// How a token request ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum TokenResult {
    ok,
    /// Network, timeout, 5xx, 429: retried.
    transient,
    /// Refused by the provider (`invalid_grant`, …): someone must act.
    refused,
    /// The config lacks something (no client secret, …).
    not_configured,
    /// Device-code polling: the user has not finished yet.
    pending,
}

/// How one Microsoft Graph `sendMail` attempt ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum GraphResult {
    /// 202: Graph took the message.
    accepted,
    /// 429: Graph throttles the mailbox or app.
    throttled,
    /// 5xx: Graph is unavailable.
    unavailable,
    /// 401: Graph refused the access token (one refresh and retry follows the first).
    unauthorized,
    /// Any other 4xx (SendAs denied, unknown mailbox, missing Mail.Send, bad message).
    refused,
    /// No answer: connect, TLS, timeout, broken answer.
    network_error,
    /// No request was made: no Graph access token could be had.
    no_token,
}

/// A config reload's outcome.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum ReloadResult {
    ok,
    invalid,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoginLabels {
    listener: String,
    protocol: &'static str,
    result: LoginResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    account: String,
    grant: Grant,
    result: TokenResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AccountLabels {
    account: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PipedLabels {
    listener: String,
    direction: Direction,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GraphLabels {
    listener: String,
    result: GraphResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: ReloadResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// The largest `Retry-After` the gauge shows (a day); the value comes from the network.
const MAX_RETRY_AFTER_SHOWN: u32 = 86_400;

/// Bucket bounds (seconds) of the upstream latency histograms: 5 ms to 10 s, the range between a
/// loopback upstream and a login that runs into its budget.
const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Every metric authbridge exposes, behind one registry. Cheap to share (`Arc`); recording is a
/// few atomic operations plus, for a label set seen for the first time, one short lock.
pub struct Metrics {
    registry: Registry,
    logins: Family<LoginLabels, Counter>,
    token_requests: Family<TokenLabels, Counter>,
    token_expiry: Family<AccountLabels, Gauge>,
    accounts_needing_login: Gauge,
    sessions_active: Family<ListenerLabels, Gauge>,
    piped_bytes: Family<PipedLabels, Counter>,
    upstream_connect: Family<ListenerLabels, Histogram>,
    upstream_login: Family<ListenerLabels, Histogram>,
    config_reloads: Family<ReloadLabels, Counter>,
    graph_requests: Family<GraphLabels, Counter>,
    graph_retry_after: Family<ListenerLabels, Counter>,
    graph_last_retry_after: Family<ListenerLabels, Gauge>,
    /// Logins per listener over the last hour (the admin page; not exported).
    recent_logins: crate::recent_logins::RecentLogins,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// A fresh registry with every metric registered (and `build_info` set).
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("authbridge");
        let logins = Family::<LoginLabels, Counter>::default();
        registry.register(
            "logins",
            "Client logins by listener, protocol and result",
            logins.clone(),
        );
        let token_requests = Family::<TokenLabels, Counter>::default();
        registry.register(
            "token_requests",
            "Requests to the token endpoint by account, grant type and result",
            token_requests.clone(),
        );
        let token_expiry = Family::<AccountLabels, Gauge>::default();
        registry.register_with_unit(
            "token_expiry",
            "Seconds until the account's cached access token expires (0 when expired; absent \
             while none is cached)",
            Unit::Seconds,
            token_expiry.clone(),
        );
        let accounts_needing_login = Gauge::default();
        registry.register(
            "accounts_needing_login",
            "Accounts that cannot get a token until someone acts (login, consent, config)",
            accounts_needing_login.clone(),
        );
        let sessions_active = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "sessions_active",
            "Client connections open now, by listener",
            sessions_active.clone(),
        );
        let piped_bytes = Family::<PipedLabels, Counter>::default();
        registry.register_with_unit(
            "piped",
            "Bytes copied after login, by listener and direction (up: client to upstream)",
            Unit::Bytes,
            piped_bytes.clone(),
        );
        let upstream_connect = Family::<ListenerLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register_with_unit(
            "upstream_connect",
            "Time to connect to the upstream: TCP, TLS and greeting (STARTTLS included)",
            Unit::Seconds,
            upstream_connect.clone(),
        );
        let upstream_login = Family::<ListenerLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register_with_unit(
            "upstream_login",
            "Time of each upstream XOAUTH2 exchange (a refused token and its retry are two)",
            Unit::Seconds,
            upstream_login.clone(),
        );
        let config_reloads = Family::<ReloadLabels, Counter>::default();
        // Both series from the start, so `increase()` sees the first reload.
        for result in [ReloadResult::ok, ReloadResult::invalid] {
            drop(config_reloads.get_or_create(&ReloadLabels { result }));
        }
        registry.register(
            "config_reloads",
            "Config reloads by result (invalid: the old config kept serving)",
            config_reloads.clone(),
        );
        let graph_requests = Family::<GraphLabels, Counter>::default();
        registry.register(
            "graph_requests",
            "Microsoft Graph sendMail attempts by listener and result (no_token: none was made, \
             no Graph access token could be had)",
            graph_requests.clone(),
        );
        let graph_retry_after = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "graph_retry_after",
            "Microsoft Graph answers that carried Retry-After (throttling or outage), by listener",
            graph_retry_after.clone(),
        );
        let graph_last_retry_after = Family::<ListenerLabels, Gauge>::default();
        registry.register_with_unit(
            "graph_last_retry_after",
            "The last Retry-After Microsoft Graph sent on the listener, in seconds (capped at a \
             day; absent until one was seen)",
            Unit::Seconds,
            graph_last_retry_after.clone(),
        );
        // A gauge rather than an OpenMetrics `info`: the classic text parser (promtool) knows
        // no `info` type.
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "The running version (always 1)", build_info);
        Arc::new(Metrics {
            registry,
            logins,
            token_requests,
            token_expiry,
            accounts_needing_login,
            sessions_active,
            piped_bytes,
            upstream_connect,
            upstream_login,
            config_reloads,
            graph_requests,
            graph_retry_after,
            graph_last_retry_after,
            recent_logins: crate::recent_logins::RecentLogins::new(),
        })
    }

    /// A client login on `listener` ended with `result`.
    pub fn login(&self, listener: &str, protocol: Protocol, result: LoginResult) {
        self.logins
            .get_or_create(&LoginLabels {
                listener: listener.to_owned(),
                protocol: protocol_label(protocol),
                result,
            })
            .inc();
        self.recent_logins
            .record(listener, result == LoginResult::ok);
    }

    /// Logins on `listener` in the last hour (ok, failed).
    pub fn logins_last_hour(&self, listener: &str) -> crate::recent_logins::LoginCounts {
        self.recent_logins.last_hour(listener)
    }

    /// Connections open on `listener` now.
    pub fn sessions_now(&self, listener: &str) -> i64 {
        self.sessions_active
            .get(&ListenerLabels {
                listener: listener.to_owned(),
            })
            .map_or(0, |g| g.get())
    }

    /// One Microsoft Graph `sendMail` attempt on `listener` ended with `result`; `retry_after`
    /// is the answer's `Retry-After` header as sent, if it had one.
    pub fn graph_request(&self, listener: &str, result: GraphResult, retry_after: Option<&str>) {
        let listener = ListenerLabels {
            listener: listener.to_owned(),
        };
        self.graph_requests
            .get_or_create(&GraphLabels {
                listener: listener.listener.clone(),
                result,
            })
            .inc();
        if let Some(value) = retry_after {
            self.graph_retry_after.get_or_create(&listener).inc();
            // Delay-seconds (RFC 9110 §10.2.3); an HTTP-date is counted but not shown.
            if let Ok(secs) = value.trim().parse::<u32>() {
                let secs = i64::from(secs.min(MAX_RETRY_AFTER_SHOWN));
                self.graph_last_retry_after
                    .get_or_create(&listener)
                    .set(secs);
            }
        }
    }

    /// One token endpoint request for `account` (a configured account name).
    pub fn token_request(&self, account: &str, grant: Grant, result: TokenResult) {
        self.token_requests
            .get_or_create(&TokenLabels {
                account: account.to_owned(),
                grant,
                result,
            })
            .inc();
    }

    /// A config reload was attempted: `ok` if it applied, `false` if the new config was invalid.
    pub fn config_reload(&self, ok: bool) {
        let result = if ok {
            ReloadResult::ok
        } else {
            ReloadResult::invalid
        };
        self.config_reloads
            .get_or_create(&ReloadLabels { result })
            .inc();
    }

    /// A connection on `listener` opened; it counts as active until the guard is dropped.
    pub fn session_opened(&self, listener: &str) -> SessionGuard {
        let gauge = self
            .sessions_active
            .get_or_create(&ListenerLabels {
                listener: listener.to_owned(),
            })
            .clone();
        gauge.inc();
        SessionGuard(gauge)
    }

    /// The counters of bytes piped on `listener`: (client → upstream, upstream → client).
    pub fn piped(&self, listener: &str) -> (Counter, Counter) {
        let get = |direction| {
            self.piped_bytes
                .get_or_create(&PipedLabels {
                    listener: listener.to_owned(),
                    direction,
                })
                .clone()
        };
        (get(Direction::up), get(Direction::down))
    }

    /// A successful upstream connection setup on `listener` took `took`.
    pub fn upstream_connected(&self, listener: &str, took: Duration) {
        self.upstream_connect
            .get_or_create(&ListenerLabels {
                listener: listener.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// An upstream XOAUTH2 login (successful or refused) on `listener` took `took`.
    pub fn upstream_logged_in(&self, listener: &str, took: Duration) {
        self.upstream_login
            .get_or_create(&ListenerLabels {
                listener: listener.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Sets the per-account token gauges from the token manager's state, as of `now`: seconds
    /// left on each cached access token, and how many accounts need someone to act. Accounts not
    /// listed any more lose their series.
    pub fn set_token_state<'a>(
        &self,
        now: SystemTime,
        accounts: impl IntoIterator<Item = (&'a str, Option<SystemTime>, bool)>,
    ) {
        self.token_expiry.clear();
        let mut needing = 0i64;
        for (account, expires_at, needs_login) in accounts {
            if let Some(at) = expires_at {
                let left = at.duration_since(now).unwrap_or_default();
                self.token_expiry
                    .get_or_create(&AccountLabels {
                        account: account.to_owned(),
                    })
                    .set(i64::try_from(left.as_secs()).unwrap_or(i64::MAX));
            }
            if needs_login {
                needing = needing.saturating_add(1);
            }
        }
        self.accounts_needing_login.set(needing);
    }

    /// The OpenMetrics 1.0 text exposition (what Prometheus asks for first), ending with `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The classic Prometheus text format 0.0.4 (for `curl`, `promtool check metrics` and
    /// scrapers that do not ask for OpenMetrics).
    pub fn encode_classic(&self) -> String {
        to_classic_text(&self.encode())
    }
}

/// OpenMetrics text → Prometheus text 0.0.4: a counter family's `# HELP`/`# TYPE` lines name
/// its samples (`x_total`, where OpenMetrics names the family `x`); `# UNIT` and `# EOF` go.
/// Applied to our own encoder's output only.
fn to_classic_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len() + 64);
    for line in om.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|rest| ("# HELP ", rest))
            .or_else(|| line.strip_prefix("# TYPE ").map(|rest| ("# TYPE ", rest)));
        match meta {
            Some((kind, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(kind);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The `protocol` label of a listener.
pub fn protocol_label(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Smtp => "smtp",
        Protocol::Imap => "imap",
        Protocol::Pop3 => "pop3",
    }
}

/// Keeps one connection counted in `authbridge_sessions_active` while it lives.
pub struct SessionGuard(Gauge);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_exposed_with_bounded_labels() {
        let m = Metrics::new();
        m.login("smtp", Protocol::Smtp, LoginResult::ok);
        m.login("smtp", Protocol::Smtp, LoginResult::ok);
        m.login("imap", Protocol::Imap, LoginResult::bad_credentials);
        m.token_request("tickets", Grant::of("refresh_token"), TokenResult::ok);
        m.config_reload(false);
        let guard = m.session_opened("pop3");
        let (up, down) = m.piped("imap");
        up.inc_by(10);
        down.inc_by(20);
        m.upstream_connected("smtp", Duration::from_millis(30));
        m.upstream_logged_in("smtp", Duration::from_millis(30));
        let now = SystemTime::now();
        m.set_token_state(
            now,
            [
                ("tickets", Some(now + Duration::from_secs(90)), false),
                ("other", None, true),
            ],
        );
        let text = m.encode();
        for line in [
            "authbridge_logins_total{listener=\"smtp\",protocol=\"smtp\",result=\"ok\"} 2",
            "authbridge_logins_total{listener=\"imap\",protocol=\"imap\",result=\"bad_credentials\"} 1",
            "authbridge_token_requests_total{account=\"tickets\",grant=\"refresh_token\",result=\"ok\"} 1",
            "authbridge_token_expiry_seconds{account=\"tickets\"} 90",
            "authbridge_accounts_needing_login 1",
            "authbridge_sessions_active{listener=\"pop3\"} 1",
            "authbridge_piped_bytes_total{listener=\"imap\",direction=\"up\"} 10",
            "authbridge_piped_bytes_total{listener=\"imap\",direction=\"down\"} 20",
            "authbridge_upstream_connect_seconds_count{listener=\"smtp\"} 1",
            "authbridge_upstream_login_seconds_count{listener=\"smtp\"} 1",
            "authbridge_config_reloads_total{result=\"invalid\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(text.contains("authbridge_build_info{version=\""), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        let classic = m.encode_classic();
        assert!(
            classic.contains("# TYPE authbridge_logins_total counter\n")
                && !classic.contains("# EOF")
                && !classic.contains("# UNIT"),
            "{classic}"
        );
        drop(guard);
        assert!(
            m.encode()
                .contains("authbridge_sessions_active{listener=\"pop3\"} 0")
        );
        // An account gone from the state loses its expiry series.
        m.set_token_state(now, []);
        assert!(!m.encode().contains("authbridge_token_expiry_seconds{"));
    }
}
