//! The config file's schema as written in YAML: raw serde structs that reject unknown keys.
//! Nothing here is checked beyond its type; `resolve` validates.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::keywords::{
    ClientTlsMode, CloudName, FlowName, ListenerMode, LogFormat, Protocol, ProviderType,
    RelayAuthMechanism, UpstreamKind, UpstreamTls,
};
use super::secrets::SecretSource;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) state_dir: Option<PathBuf>,
    #[serde(default)]
    pub(super) key_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) admin: Option<RawAdmin>,
    /// Host name in greetings and EHLO replies; default `localhost`.
    #[serde(default)]
    pub(super) hostname: Option<String>,
    #[serde(default)]
    pub(super) providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    pub(super) accounts: Vec<RawAccount>,
    #[serde(default)]
    pub(super) listeners: Vec<RawListener>,
    #[serde(default)]
    pub(super) limits: RawLimits,
    /// Command run when an account needs a new login: `[program, arg, …]` (no shell).
    #[serde(default)]
    pub(super) on_reauth_needed: Option<RawCommand>,
    /// Where refresh tokens are kept: `{ type: file }` (default) or `{ type: redis, … }`.
    #[serde(default)]
    pub(super) token_store: Option<RawTokenStore>,
}

/// `token_store:`, by its `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub(super) enum RawTokenStore {
    File {},
    Redis {
        url: String,
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        password: Option<SecretSource>,
        #[serde(default)]
        key_prefix: Option<String>,
        #[serde(default)]
        ca_file: Option<PathBuf>,
        #[serde(default)]
        lease_ms: Option<u64>,
    },
}

/// `[program, arg, …]`; a plain string is refused with advice (no shell is ever used).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawCommand {
    Argv(Vec<String>),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    #[serde(default)]
    pub(super) level: Option<String>,
    #[serde(default)]
    pub(super) format: LogFormat,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    #[serde(default, deserialize_with = "optional_listen_addr")]
    pub(super) listen: Option<SocketAddr>,
    /// Extra names the admin page may be reached under (the `Host` header), besides loopback.
    #[serde(default)]
    pub(super) hostnames: Vec<String>,
    /// argon2id hash of the admin page's password (required for a non-loopback `listen`).
    #[serde(default)]
    pub(super) password_hash: Option<String>,
    /// PEM certificate chain and key: serve the admin listener over TLS.
    #[serde(default)]
    pub(super) cert: Option<PathBuf>,
    #[serde(default)]
    pub(super) key: Option<PathBuf>,
    /// Where the identity provider sends the browser back after "Authorise" (path `/callback`).
    #[serde(default)]
    pub(super) redirect_uri: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProvider {
    #[serde(rename = "type")]
    pub(super) kind: ProviderType,
    #[serde(default)]
    pub(super) tenant: Option<String>,
    #[serde(default)]
    pub(super) cloud: CloudName,
    pub(super) client_id: String,
    #[serde(default)]
    pub(super) client_secret: Option<SecretSource>,
    #[serde(default)]
    pub(super) client_certificate: Option<RawClientCertificate>,
    #[serde(default)]
    pub(super) client_assertion: Option<RawClientAssertion>,
    #[serde(default)]
    pub(super) proxy: Option<RawProxy>,
    #[serde(default)]
    pub(super) flow: FlowName,
    #[serde(default)]
    pub(super) authorize_url: Option<String>,
    #[serde(default)]
    pub(super) token_url: Option<String>,
    #[serde(default)]
    pub(super) device_code_url: Option<String>,
    #[serde(default)]
    pub(super) redirect_uri: Option<String>,
    #[serde(default)]
    pub(super) scopes: Option<Vec<String>>,
    #[serde(default)]
    pub(super) ca_file: Option<PathBuf>,
}

/// `client_certificate: { cert: PATH, key: PATH }` (PEM).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClientCertificate {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
}

/// `client_assertion: { file: PATH }` (a federated token file, read for every request).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClientAssertion {
    pub(super) file: PathBuf,
}

/// `proxy: none` or `proxy: { url, username, password }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawProxy {
    Keyword(String),
    Server(RawProxyServer),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProxyServer {
    pub(super) url: String,
    #[serde(default)]
    pub(super) username: Option<String>,
    #[serde(default)]
    pub(super) password: Option<SecretSource>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccount {
    pub(super) name: String,
    /// Required unless `token_from` names the account whose token this one uses.
    #[serde(default)]
    pub(super) provider: Option<String>,
    pub(super) mailbox: String,
    /// Use this other account's token (a shared mailbox opened by a delegate or an app).
    #[serde(default)]
    pub(super) token_from: Option<String>,
    #[serde(default)]
    pub(super) logins: Vec<RawLogin>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLogin {
    pub(super) username: String,
    pub(super) password_hash: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListener {
    pub(super) name: String,
    pub(super) protocol: Protocol,
    #[serde(deserialize_with = "listen_addr")]
    pub(super) listen: SocketAddr,
    #[serde(default)]
    pub(super) mode: ListenerMode,
    #[serde(default)]
    pub(super) tls: ClientTlsMode,
    #[serde(default)]
    pub(super) cert: Option<PathBuf>,
    #[serde(default)]
    pub(super) key: Option<PathBuf>,
    #[serde(default)]
    pub(super) allow_plaintext_remote: bool,
    /// Relay mode: clients must log in locally (default) …
    #[serde(default)]
    pub(super) require_login: Option<bool>,
    /// … or come from one of these networks.
    #[serde(default)]
    pub(super) allow_from: Vec<ipnet::IpNet>,
    /// Relay mode: MAIL FROM must match one of these (`user@domain` or `@domain`).
    #[serde(default)]
    pub(super) allowed_senders: Vec<String>,
    /// Relay mode: certificate chain and key presented to a certificate-based connector.
    #[serde(default)]
    pub(super) client_cert: Option<PathBuf>,
    #[serde(default)]
    pub(super) client_key: Option<PathBuf>,
    pub(super) upstream: RawUpstream,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    /// `mail` (default) or `graph`.
    #[serde(default, rename = "type")]
    pub(super) kind: UpstreamKind,
    /// Required for `type: mail`; not taken by `type: graph`.
    #[serde(default)]
    pub(super) host: Option<String>,
    #[serde(default)]
    pub(super) port: Option<u16>,
    #[serde(default)]
    pub(super) tls: Option<UpstreamTls>,
    /// `type: graph`: the Microsoft Graph base URL (default per the account's cloud).
    #[serde(default)]
    pub(super) endpoint: Option<String>,
    #[serde(default)]
    pub(super) server_name: Option<String>,
    #[serde(default)]
    pub(super) ca_file: Option<PathBuf>,
    /// Relay mode: log in to a transactional provider with a username and password.
    #[serde(default)]
    pub(super) auth: Option<RawRelayAuth>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRelayAuth {
    pub(super) username: String,
    pub(super) password: SecretSource,
    #[serde(default)]
    pub(super) mechanism: Option<RelayAuthMechanism>,
}

/// A `listen:` address: an IP address and a port (host names are not resolved), with an error
/// that says so.
fn listen_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = SocketAddr;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("IP:PORT (e.g. 127.0.0.1:1587; an IPv6 address in quotes: \"[::1]:1587\")")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SocketAddr, E> {
            v.trim().parse().map_err(|_| {
                let hint = match v.trim().rsplit_once(':') {
                    Some((_, port)) if port.parse::<u16>().is_ok() => format!(
                        " (host names are not looked up: for localhost write 127.0.0.1:{port})"
                    ),
                    _ => String::new(),
                };
                E::custom(format!(
                    "expected IP:PORT (e.g. 127.0.0.1:1587), got {v}{hint}"
                ))
            })
        }
    }
    d.deserialize_str(Visitor)
}

/// An optional `listen:` address (see [`listen_addr`]).
fn optional_listen_addr<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    listen_addr(d).map(Some)
}

/// Optional overrides of the defaults in [`crate::limits`] (sizes in octets, times in seconds
/// unless the name says `_ms`). Each key has an accepted range, checked in `resolve/limits.rs`:
/// a limit can be tuned, never switched off.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    // Connections and failures.
    #[serde(default)]
    pub(super) max_sessions: Option<u64>,
    #[serde(default)]
    pub(super) max_sessions_per_source: Option<u64>,
    #[serde(default)]
    pub(super) login_failures_per_source: Option<u64>,
    #[serde(default)]
    pub(super) failure_window_secs: Option<u64>,
    #[serde(default)]
    pub(super) failure_delay_base_ms: Option<u64>,
    #[serde(default)]
    pub(super) failure_delay_max_ms: Option<u64>,
    #[serde(default)]
    pub(super) early_upstream_per_source: Option<u64>,
    #[serde(default)]
    pub(super) early_upstream_max: Option<u64>,
    // Sizes and counts before login.
    #[serde(default)]
    pub(super) line_max: Option<u64>,
    #[serde(default)]
    pub(super) auth_line_max: Option<u64>,
    #[serde(default)]
    pub(super) literal_max: Option<u64>,
    #[serde(default)]
    pub(super) preauth_commands_max: Option<u64>,
    #[serde(default)]
    pub(super) bad_commands_max: Option<u64>,
    #[serde(default)]
    pub(super) session_login_failures_max: Option<u64>,
    #[serde(default)]
    pub(super) token_response_max: Option<u64>,
    // Named timeouts.
    #[serde(default)]
    pub(super) client_tls_handshake_secs: Option<u64>,
    #[serde(default)]
    pub(super) preauth_idle_secs: Option<u64>,
    #[serde(default)]
    pub(super) preauth_total_secs: Option<u64>,
    #[serde(default)]
    pub(super) client_write_secs: Option<u64>,
    #[serde(default)]
    pub(super) upstream_connect_secs: Option<u64>,
    #[serde(default)]
    pub(super) upstream_tls_handshake_secs: Option<u64>,
    #[serde(default)]
    pub(super) upstream_setup_secs: Option<u64>,
    #[serde(default)]
    pub(super) upstream_auth_secs: Option<u64>,
    #[serde(default)]
    pub(super) token_request_secs: Option<u64>,
    #[serde(default)]
    pub(super) capabilities_wait_secs: Option<u64>,
    #[serde(default)]
    pub(super) login_budget_secs: Option<u64>,
    #[serde(default)]
    pub(super) pipe_idle_secs: Option<u64>,
    #[serde(default)]
    pub(super) relay_reply_secs: Option<u64>,
    #[serde(default)]
    pub(super) shutdown_grace_secs: Option<u64>,
}

#[cfg(test)]
mod tests {
    use crate::config::testkit::parse;

    #[test]
    fn there_is_no_switch_to_skip_upstream_certificate_verification() {
        for key in [
            "insecure_skip_verify",
            "verify",
            "tls_verify",
            "danger_accept_invalid_certs",
        ] {
            let text = format!(
                "listeners:\n  - name: smtp\n    protocol: smtp\n    listen: 127.0.0.1:1587\n    upstream: {{ host: 127.0.0.1, port: 587, tls: starttls, {key}: false }}\n"
            );
            let e = parse(&text).unwrap_err();
            assert!(
                e.contains("listeners[0].upstream") && e.contains(key),
                "{key}: {e}"
            );
        }
    }
}
