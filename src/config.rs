//! The YAML config (DESIGN §5): parsed strictly (unknown keys are errors), then validated and
//! resolved into [`Config`]: relative paths made absolute against the config file's folder,
//! secrets read from their `env`/`file` sources, password hashes parsed, TLS material loaded.
//! Every error names the file, the key path and what is expected.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::limits::Limits;
use crate::secret::SecretString;
use crate::token::{self, AccountConfig, Cloud, Endpoints, Flow, ProviderConfig, ProviderKind};

/// A config problem: `file: key.path: message`.
#[derive(Debug, thiserror::Error)]
#[error("{}: {}{message}", file.display(), if path.is_empty() { String::new() } else { format!("{path}: ") })]
pub struct ConfigError {
    pub file: PathBuf,
    pub path: String,
    pub message: String,
}

// ---------------------------------------------------------------------------------------------
// Raw, as written in YAML.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    state_dir: Option<PathBuf>,
    #[serde(default)]
    key_file: Option<PathBuf>,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    admin: Option<RawAdmin>,
    /// Host name in greetings and EHLO replies; default `localhost`.
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    accounts: Vec<RawAccount>,
    #[serde(default)]
    listeners: Vec<RawListener>,
    #[serde(default)]
    limits: RawLimits,
    /// Command run when an account needs a new login: `[program, arg, …]` (no shell).
    #[serde(default)]
    on_reauth_needed: Option<RawCommand>,
}

/// `[program, arg, …]`; a plain string is refused with advice (no shell is ever used).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawCommand {
    Argv(Vec<String>),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    #[serde(default)]
    level: Option<String>,
    #[serde(default)]
    format: LogFormat,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: SocketAddr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    #[serde(rename = "type")]
    kind: ProviderType,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    cloud: CloudName,
    client_id: String,
    #[serde(default)]
    client_secret: Option<SecretSource>,
    #[serde(default)]
    flow: FlowName,
    #[serde(default)]
    authorize_url: Option<String>,
    #[serde(default)]
    token_url: Option<String>,
    #[serde(default)]
    device_code_url: Option<String>,
    #[serde(default)]
    redirect_uri: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
}

/// `client_secret: "value"`, `{ env: NAME }` or `{ file: PATH }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SecretSource {
    Plain(String),
    Env { env: String },
    File { file: PathBuf },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    name: String,
    provider: String,
    mailbox: String,
    #[serde(default)]
    logins: Vec<RawLogin>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogin {
    username: String,
    password_hash: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    name: String,
    protocol: Protocol,
    listen: SocketAddr,
    #[serde(default)]
    mode: ListenerMode,
    #[serde(default)]
    tls: ClientTlsMode,
    #[serde(default)]
    cert: Option<PathBuf>,
    #[serde(default)]
    key: Option<PathBuf>,
    #[serde(default)]
    allow_plaintext_remote: bool,
    /// Relay mode: clients must log in locally (default) …
    #[serde(default)]
    require_login: Option<bool>,
    /// … or come from one of these networks.
    #[serde(default)]
    allow_from: Vec<ipnet::IpNet>,
    /// Relay mode: MAIL FROM must match one of these (`user@domain` or `@domain`).
    #[serde(default)]
    allowed_senders: Vec<String>,
    /// Relay mode: certificate chain and key presented to a certificate-based connector.
    #[serde(default)]
    client_cert: Option<PathBuf>,
    #[serde(default)]
    client_key: Option<PathBuf>,
    upstream: RawUpstream,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    host: String,
    port: u16,
    tls: UpstreamTls,
    #[serde(default)]
    server_name: Option<String>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
}

/// Optional overrides of the defaults in [`crate::limits`] (sizes in octets, times in seconds
/// unless the name says `_ms`). Each key has an accepted range, checked in
/// [`Resolver::limits`]: a limit can be tuned, never switched off.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    // Connections and failures.
    #[serde(default)]
    max_sessions: Option<u64>,
    #[serde(default)]
    max_sessions_per_source: Option<u64>,
    #[serde(default)]
    login_failures_per_source: Option<u64>,
    #[serde(default)]
    failure_window_secs: Option<u64>,
    #[serde(default)]
    failure_delay_base_ms: Option<u64>,
    #[serde(default)]
    failure_delay_max_ms: Option<u64>,
    // Sizes and counts before login.
    #[serde(default)]
    line_max: Option<u64>,
    #[serde(default)]
    auth_line_max: Option<u64>,
    #[serde(default)]
    literal_max: Option<u64>,
    #[serde(default)]
    preauth_commands_max: Option<u64>,
    #[serde(default)]
    bad_commands_max: Option<u64>,
    #[serde(default)]
    session_login_failures_max: Option<u64>,
    #[serde(default)]
    token_response_max: Option<u64>,
    // Named timeouts.
    #[serde(default)]
    client_tls_handshake_secs: Option<u64>,
    #[serde(default)]
    preauth_idle_secs: Option<u64>,
    #[serde(default)]
    preauth_total_secs: Option<u64>,
    #[serde(default)]
    client_write_secs: Option<u64>,
    #[serde(default)]
    upstream_connect_secs: Option<u64>,
    #[serde(default)]
    upstream_tls_handshake_secs: Option<u64>,
    #[serde(default)]
    upstream_setup_secs: Option<u64>,
    #[serde(default)]
    upstream_auth_secs: Option<u64>,
    #[serde(default)]
    token_request_secs: Option<u64>,
    #[serde(default)]
    capabilities_wait_secs: Option<u64>,
    #[serde(default)]
    login_budget_secs: Option<u64>,
    #[serde(default)]
    pipe_idle_secs: Option<u64>,
    #[serde(default)]
    relay_reply_secs: Option<u64>,
    #[serde(default)]
    shutdown_grace_secs: Option<u64>,
}

// ---------------------------------------------------------------------------------------------
// Enumerations shared by raw and resolved forms.

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderType {
    Microsoft,
    Google,
    Custom,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloudName {
    #[default]
    Global,
    Usgov,
    China,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowName {
    #[default]
    AuthorizationCode,
    DeviceCode,
    ClientCredentials,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Smtp,
    Imap,
    Pop3,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Smtp => "smtp",
            Protocol::Imap => "imap",
            Protocol::Pop3 => "pop3",
        })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerMode {
    #[default]
    Auth,
    Relay,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientTlsMode {
    #[default]
    None,
    Starttls,
    Implicit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamTls {
    Implicit,
    Starttls,
}

// ---------------------------------------------------------------------------------------------
// Resolved.

/// A validated config, ready to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub state_dir: PathBuf,
    pub key_file: Option<PathBuf>,
    pub log_level: Option<String>,
    pub log_format: LogFormat,
    pub admin_listen: Option<SocketAddr>,
    pub hostname: String,
    pub providers: BTreeMap<String, Arc<ProviderConfig>>,
    pub accounts: Vec<Account>,
    pub listeners: Vec<Listener>,
    pub limits: Limits,
    /// `on_reauth_needed`: program and arguments (never empty when set).
    pub on_reauth_needed: Option<Vec<String>>,
}

/// A mailbox and the local logins that map to it.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub provider: Arc<ProviderConfig>,
    pub mailbox: String,
    pub logins: Vec<Login>,
}

/// One local username and its argon2 PHC hash.
#[derive(Debug, Clone)]
pub struct Login {
    pub username: String,
    pub password_hash: String,
}

/// One listening socket.
#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub protocol: Protocol,
    pub listen: SocketAddr,
    pub mode: ListenerMode,
    pub tls: ClientTlsMode,
    pub server_tls: Option<Arc<rustls::ServerConfig>>,
    pub upstream: Upstream,
    /// Set for `mode: relay` listeners.
    pub relay: Option<Relay>,
}

/// Relay-mode settings (DESIGN §2).
#[derive(Debug, Clone)]
pub struct Relay {
    pub require_login: bool,
    pub allow_from: Vec<ipnet::IpNet>,
    pub allowed_senders: Vec<SenderRule>,
}

/// One `allowed_senders` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderRule {
    /// An exact address, lower-cased.
    Address(String),
    /// Any address at this domain (lower-cased, without the `@`).
    Domain(String),
}

impl Relay {
    /// May a client from `ip` send without logging in?
    pub fn open_for(&self, ip: std::net::IpAddr) -> bool {
        self.allow_from.iter().any(|net| net.contains(&ip))
    }

    /// Is `sender` (the MAIL FROM address, without brackets) allowed? An empty list allows all.
    pub fn sender_allowed(&self, sender: &str) -> bool {
        if self.allowed_senders.is_empty() {
            return true;
        }
        let sender = sender.to_ascii_lowercase();
        let Some((_, domain)) = sender.rsplit_once('@') else {
            return false;
        };
        self.allowed_senders.iter().any(|rule| match rule {
            SenderRule::Address(a) => *a == sender,
            SenderRule::Domain(d) => d == domain,
        })
    }
}

/// Where a listener's sessions go.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    pub tls: UpstreamTls,
    /// Name checked against the server certificate (default: `host`).
    pub server_name: String,
    pub client_tls: Arc<rustls::ClientConfig>,
}

/// Default config path: `$AUTHBRIDGE_CONFIG` or `./config/authbridge.yaml`.
pub fn default_path() -> PathBuf {
    std::env::var_os("AUTHBRIDGE_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("config/authbridge.yaml"))
}

impl Config {
    /// Read, parse, validate and resolve a config file.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.to_owned(),
            path: String::new(),
            message: format!("cannot read the config file: {e}"),
        })?;
        Config::parse(file, &text)
    }

    /// Parse config text; `file` names it in errors and anchors relative paths.
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let de = serde_norway::Deserializer::from_str(text);
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| ConfigError {
            file: file.to_owned(),
            path: e.path().to_string().trim_start_matches('.').to_string(),
            message: e.inner().to_string(),
        })?;
        let base = file
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."));
        let base = std::path::absolute(base).unwrap_or_else(|_| base.to_owned());
        Resolver { file, base: &base }.resolve(raw)
    }

    pub fn account(&self, name: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.name == name)
    }
}

impl Account {
    /// What the token manager needs of this account.
    pub fn token_config(&self) -> AccountConfig {
        AccountConfig {
            name: self.name.clone(),
            mailbox: self.mailbox.clone(),
            provider: Arc::clone(&self.provider),
        }
    }
}

struct Resolver<'a> {
    file: &'a Path,
    base: &'a Path,
}

impl Resolver<'_> {
    fn err(&self, path: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            path: path.into(),
            message: message.into(),
        }
    }

    fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(p)
        }
    }

    fn resolve(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let state_dir = self.path(raw.state_dir.as_deref().unwrap_or(Path::new("state")));
        let key_file = raw.key_file.as_deref().map(|p| self.path(p));
        if let Some(level) = &raw.log.level {
            if tracing_subscriber::EnvFilter::try_new(level).is_err() {
                return Err(self.err(
                    "log.level",
                    format!(
                        "`{level}` is not a log level (expected error, warn, info, debug or trace)"
                    ),
                ));
            }
        }

        let mut providers = BTreeMap::new();
        for (name, p) in raw.providers {
            let provider = self.provider(&name, p)?;
            providers.insert(name, Arc::new(provider));
        }

        let mut accounts = Vec::new();
        let mut names = HashSet::new();
        let mut usernames = HashSet::new();
        for (i, a) in raw.accounts.into_iter().enumerate() {
            let at = format!("accounts[{i}]");
            if a.name.is_empty()
                || !a
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(self.err(
                    format!("{at}.name"),
                    "expected a non-empty name of letters, digits, `-`, `_` or `.` (it names a state file and a CLI argument)",
                ));
            }
            if !names.insert(a.name.clone()) {
                return Err(self.err(
                    format!("{at}.name"),
                    format!("account `{}` is defined twice", a.name),
                ));
            }
            let provider = providers.get(&a.provider).cloned().ok_or_else(|| {
                self.err(
                    format!("{at}.provider"),
                    format!(
                        "no provider named `{}` (defined: {})",
                        a.provider,
                        providers.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                )
            })?;
            if !a.mailbox.contains('@') {
                return Err(self.err(
                    format!("{at}.mailbox"),
                    "expected a mailbox address like tickets@contoso.com",
                ));
            }
            let mut logins = Vec::new();
            for (j, l) in a.logins.into_iter().enumerate() {
                let lat = format!("{at}.logins[{j}]");
                if l.username.is_empty() {
                    return Err(
                        self.err(format!("{lat}.username"), "expected a non-empty user name")
                    );
                }
                if !usernames.insert(l.username.clone()) {
                    return Err(self.err(
                        format!("{lat}.username"),
                        format!(
                            "login `{}` is used twice; a local user name must map to one account",
                            l.username
                        ),
                    ));
                }
                crate::password_hash::check_hash(&l.password_hash).map_err(|why| {
                    self.err(
                        format!("{lat}.password_hash"),
                        format!("{why}; create one with `authbridge hash-password`"),
                    )
                })?;
                logins.push(Login {
                    username: l.username,
                    password_hash: l.password_hash,
                });
            }
            accounts.push(Account {
                name: a.name,
                provider,
                mailbox: a.mailbox,
                logins,
            });
        }

        let mut listeners = Vec::new();
        let mut lnames = HashSet::new();
        for (i, l) in raw.listeners.into_iter().enumerate() {
            let listener = self.listener(&format!("listeners[{i}]"), l)?;
            if !lnames.insert(listener.name.clone()) {
                return Err(self.err(
                    format!("listeners[{i}].name"),
                    format!("listener `{}` is defined twice", listener.name),
                ));
            }
            listeners.push(listener);
        }

        let limits = self.limits(raw.limits)?;

        let on_reauth_needed = match raw.on_reauth_needed {
            None => None,
            Some(RawCommand::Text(text)) => {
                let first = text.split_whitespace().next().unwrap_or("/path/to/program");
                return Err(self.err(
                    "on_reauth_needed",
                    format!(
                        "expected a list [program, argument, …], e.g. [{first}, …] (it is run \
                         without a shell; for a shell command write [/bin/sh, -c, \"…\"])"
                    ),
                ));
            }
            Some(RawCommand::Argv(argv)) => {
                match argv.first().map(String::as_str) {
                    None | Some("") => {
                        return Err(self.err(
                            "on_reauth_needed",
                            "expected a list [program, argument, …] with a program first",
                        ));
                    }
                    Some(program) if program.contains('/') && !Path::new(program).is_absolute() => {
                        return Err(self.err(
                            "on_reauth_needed[0]",
                            format!(
                                "`{program}` is a relative path: give an absolute path or a \
                                 program name found on PATH"
                            ),
                        ));
                    }
                    Some(_) => {}
                }
                if argv.iter().any(|a| a.contains('\0')) {
                    return Err(self.err("on_reauth_needed", "arguments cannot contain NUL"));
                }
                Some(argv)
            }
        };

        Ok(Config {
            file: self.file.to_owned(),
            state_dir,
            key_file,
            log_level: raw.log.level,
            log_format: raw.log.format,
            admin_listen: raw.admin.map(|a| a.listen),
            hostname: raw.hostname.unwrap_or_else(|| "localhost".into()),
            providers,
            accounts,
            listeners,
            limits,
            on_reauth_needed,
        })
    }

    /// Apply the `limits:` overrides, each within its range.
    fn limits(&self, rl: RawLimits) -> Result<Limits, ConfigError> {
        let mut l = Limits::default();
        let range = |key: &str, v: Option<u64>, min: u64, max: u64, unit: &str| match v {
            Some(v) if v < min || v > max => Err(self.err(
                format!("limits.{key}"),
                format!("expected {min} to {max} {unit}, got {v}"),
            )),
            other => Ok(other),
        };
        let secs = std::time::Duration::from_secs;
        let ms = std::time::Duration::from_millis;
        let c = &mut l.connections;
        if let Some(v) = range("max_sessions", rl.max_sessions, 1, 1_000_000, "sessions")? {
            c.max_sessions = v as usize;
        }
        if let Some(v) = range(
            "max_sessions_per_source",
            rl.max_sessions_per_source,
            1,
            1_000_000,
            "sessions",
        )? {
            c.max_sessions_per_source = v as usize;
        }
        if let Some(v) = range(
            "login_failures_per_source",
            rl.login_failures_per_source,
            1,
            100_000,
            "failures",
        )? {
            c.login_failures_per_source = v as u32;
        }
        if let Some(v) = range(
            "failure_window_secs",
            rl.failure_window_secs,
            1,
            86_400,
            "seconds",
        )? {
            c.failure_window = secs(v);
        }
        if let Some(v) = range(
            "failure_delay_base_ms",
            rl.failure_delay_base_ms,
            0,
            10_000,
            "milliseconds",
        )? {
            c.failure_delay_base = ms(v);
        }
        if let Some(v) = range(
            "failure_delay_max_ms",
            rl.failure_delay_max_ms,
            0,
            30_000,
            "milliseconds",
        )? {
            c.failure_delay_max = ms(v);
        }
        if c.failure_delay_max < c.failure_delay_base {
            return Err(self.err(
                "limits.failure_delay_max_ms",
                "expected at least failure_delay_base_ms",
            ));
        }

        let p = &mut l.protocol;
        if let Some(v) = range("line_max", rl.line_max, 512, 65_536, "octets")? {
            p.line_max = v as usize;
        }
        if let Some(v) = range("auth_line_max", rl.auth_line_max, 512, 65_536, "octets")? {
            p.auth_line_max = v as usize;
        }
        if p.auth_line_max < p.line_max {
            return Err(self.err(
                "limits.auth_line_max",
                format!(
                    "expected at least line_max ({} octets): AUTH lines are the longest commands",
                    p.line_max
                ),
            ));
        }
        if let Some(v) = range("literal_max", rl.literal_max, 0, 1 << 20, "octets")? {
            p.literal_max = v as usize;
        }
        if let Some(v) = range(
            "preauth_commands_max",
            rl.preauth_commands_max,
            1,
            100_000,
            "commands",
        )? {
            p.preauth_commands_max = v as u32;
        }
        if let Some(v) = range(
            "bad_commands_max",
            rl.bad_commands_max,
            0,
            10_000,
            "commands",
        )? {
            p.bad_commands_max = v as u32;
        }
        if let Some(v) = range(
            "session_login_failures_max",
            rl.session_login_failures_max,
            1,
            100,
            "failures",
        )? {
            p.session_login_failures_max = v as u32;
        }
        if let Some(v) = range(
            "token_response_max",
            rl.token_response_max,
            4096,
            16 << 20,
            "octets",
        )? {
            l.token_response_max = v as usize;
        }

        let t = &mut l.timeouts;
        let timeouts: [(&str, Option<u64>, u64, u64, &mut std::time::Duration); 14] = [
            (
                "client_tls_handshake_secs",
                rl.client_tls_handshake_secs,
                1,
                300,
                &mut t.client_tls_handshake,
            ),
            (
                "preauth_idle_secs",
                rl.preauth_idle_secs,
                1,
                3600,
                &mut t.preauth_idle,
            ),
            (
                "preauth_total_secs",
                rl.preauth_total_secs,
                1,
                86_400,
                &mut t.preauth_total,
            ),
            (
                "client_write_secs",
                rl.client_write_secs,
                1,
                600,
                &mut t.client_write,
            ),
            (
                "upstream_connect_secs",
                rl.upstream_connect_secs,
                1,
                60,
                &mut t.upstream_connect,
            ),
            (
                "upstream_tls_handshake_secs",
                rl.upstream_tls_handshake_secs,
                1,
                60,
                &mut t.upstream_tls_handshake,
            ),
            (
                "upstream_setup_secs",
                rl.upstream_setup_secs,
                1,
                60,
                &mut t.upstream_setup,
            ),
            (
                "upstream_auth_secs",
                rl.upstream_auth_secs,
                1,
                60,
                &mut t.upstream_auth,
            ),
            (
                "token_request_secs",
                rl.token_request_secs,
                1,
                60,
                &mut t.token_request,
            ),
            (
                "capabilities_wait_secs",
                rl.capabilities_wait_secs,
                0,
                60,
                &mut t.capabilities_wait,
            ),
            (
                "login_budget_secs",
                rl.login_budget_secs,
                1,
                60,
                &mut t.login_budget,
            ),
            (
                "pipe_idle_secs",
                rl.pipe_idle_secs,
                1,
                7 * 86_400,
                &mut t.pipe_idle,
            ),
            (
                "relay_reply_secs",
                rl.relay_reply_secs,
                1,
                3600,
                &mut t.relay_reply,
            ),
            (
                "shutdown_grace_secs",
                rl.shutdown_grace_secs,
                0,
                3600,
                &mut t.shutdown_grace,
            ),
        ];
        for (key, v, min, max, slot) in timeouts {
            if let Some(v) = range(key, v, min, max, "seconds")? {
                *slot = secs(v);
            }
        }
        Ok(l)
    }

    fn secret(&self, at: &str, source: SecretSource) -> Result<SecretString, ConfigError> {
        match source {
            SecretSource::Plain(s) => Ok(SecretString::new(s)),
            SecretSource::Env { env } => std::env::var(&env).map(SecretString::new).map_err(|_| {
                self.err(
                    at,
                    format!("environment variable {env} is not set (or not UTF-8)"),
                )
            }),
            SecretSource::File { file } => {
                let path = self.path(&file);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    self.err(
                        at,
                        format!("cannot read secret file {}: {e}", path.display()),
                    )
                })?;
                Ok(SecretString::new(
                    text.trim_end_matches(['\r', '\n']).to_string(),
                ))
            }
        }
    }

    fn provider(&self, name: &str, p: RawProvider) -> Result<ProviderConfig, ConfigError> {
        let at = format!("providers.{name}");
        let client_secret = p
            .client_secret
            .map(|s| self.secret(&format!("{at}.client_secret"), s))
            .transpose()?;
        match p.kind {
            ProviderType::Microsoft
                if p.tenant.as_deref().unwrap_or("").is_empty() && p.token_url.is_none() =>
            {
                return Err(self.err(
                    format!("{at}.tenant"),
                    "a microsoft provider needs `tenant` (e.g. contoso.onmicrosoft.com or the tenant id)",
                ));
            }
            ProviderType::Custom if p.token_url.is_none() => {
                return Err(self.err(
                    format!("{at}.token_url"),
                    "a custom provider needs `token_url`",
                ));
            }
            _ => {}
        }
        if p.kind == ProviderType::Google && p.flow == FlowName::ClientCredentials {
            return Err(self.err(
                format!("{at}.flow"),
                "Gmail has no client_credentials grant for IMAP/SMTP: use authorization_code or \
                 device_code",
            ));
        }
        if let Some(uri) = &p.redirect_uri {
            let ok = (uri.starts_with("http://") || uri.starts_with("https://"))
                && uri.parse::<hyper::Uri>().is_ok_and(|u| u.host().is_some());
            if !ok {
                return Err(self.err(
                    format!("{at}.redirect_uri"),
                    "expected an http:// or https:// URL as registered in the app, e.g. \
                     http://localhost:8925/callback",
                ));
            }
        }
        if p.flow == FlowName::ClientCredentials && client_secret.is_none() {
            return Err(self.err(
                format!("{at}.client_secret"),
                "flow client_credentials needs a client_secret (a value, { env: NAME } or { file: PATH })",
            ));
        }
        for (key, url) in [
            ("token_url", &p.token_url),
            ("authorize_url", &p.authorize_url),
            ("device_code_url", &p.device_code_url),
        ] {
            if let Some(u) = url {
                if !(u.starts_with("https://") || u.starts_with("http://")) {
                    return Err(
                        self.err(format!("{at}.{key}"), "expected an http:// or https:// URL")
                    );
                }
            }
        }
        let ca = p.ca_file.as_deref().map(|c| self.path(c));
        let tls = crate::tls::client_config(ca.as_deref())
            .map_err(|e| self.err(format!("{at}.ca_file"), e.to_string()))?;
        let kind = match p.kind {
            ProviderType::Microsoft => ProviderKind::Microsoft,
            ProviderType::Google => ProviderKind::Google,
            ProviderType::Custom => ProviderKind::Custom,
        };
        let flow = match p.flow {
            FlowName::AuthorizationCode => Flow::AuthorizationCode,
            FlowName::DeviceCode => Flow::DeviceCode,
            FlowName::ClientCredentials => Flow::ClientCredentials,
        };
        let cloud = match p.cloud {
            CloudName::Global => Cloud::Global,
            CloudName::Usgov => Cloud::UsGov,
            CloudName::China => Cloud::China,
        };
        let mut endpoints = match kind {
            ProviderKind::Microsoft => {
                token::microsoft_endpoints(p.tenant.as_deref().unwrap_or("common"), cloud)
            }
            ProviderKind::Google => token::google_endpoints(),
            ProviderKind::Custom => Endpoints {
                token_url: String::new(),
                authorize_url: None,
                device_code_url: None,
            },
        };
        if let Some(u) = p.token_url {
            endpoints.token_url = u;
        }
        if p.authorize_url.is_some() {
            endpoints.authorize_url = p.authorize_url;
        }
        if p.device_code_url.is_some() {
            endpoints.device_code_url = p.device_code_url;
        }
        let scopes = match p.scopes {
            Some(s) if s.is_empty() => {
                return Err(self.err(
                    format!("{at}.scopes"),
                    "expected at least one scope (or leave scopes out for the defaults)",
                ));
            }
            Some(s) => s,
            None => token::default_scopes(kind, flow),
        };
        Ok(ProviderConfig {
            name: name.to_owned(),
            kind,
            flow,
            client_id: p.client_id,
            client_secret,
            endpoints,
            scopes,
            redirect_uri: p.redirect_uri,
            tls,
        })
    }

    fn listener(&self, at: &str, l: RawListener) -> Result<Listener, ConfigError> {
        if l.name.is_empty() {
            return Err(self.err(format!("{at}.name"), "expected a non-empty name"));
        }
        let relay = self.relay(at, &l)?;
        let loopback = l.listen.ip().is_loopback();
        if l.tls == ClientTlsMode::None && !loopback && !l.allow_plaintext_remote {
            return Err(self.err(
                format!("{at}.listen"),
                format!(
                    "{} is not a loopback address and tls is none: passwords would cross the network in clear; use tls: starttls or implicit, or set allow_plaintext_remote: true",
                    l.listen
                ),
            ));
        }
        let server_tls = match l.tls {
            ClientTlsMode::None => None,
            ClientTlsMode::Starttls | ClientTlsMode::Implicit => {
                let (Some(cert), Some(key)) = (&l.cert, &l.key) else {
                    return Err(self.err(
                        format!("{at}.cert"),
                        "tls starttls/implicit needs `cert` and `key` (PEM files; `authbridge gen-cert` makes a localhost pair)",
                    ));
                };
                Some(
                    crate::tls::server_config(&self.path(cert), &self.path(key))
                        .map_err(|e| self.err(format!("{at}.cert"), e.to_string()))?,
                )
            }
        };
        let u = l.upstream;
        if u.host.is_empty() {
            return Err(self.err(format!("{at}.upstream.host"), "expected a host name"));
        }
        let server_name = u.server_name.unwrap_or_else(|| u.host.clone());
        if rustls::pki_types::ServerName::try_from(server_name.clone()).is_err() {
            return Err(self.err(
                format!("{at}.upstream.server_name"),
                format!("`{server_name}` is not a valid TLS server name"),
            ));
        }
        let ca = u.ca_file.as_deref().map(|c| self.path(c));
        let client_tls = match (&l.client_cert, &l.client_key) {
            (None, None) => crate::tls::client_config(ca.as_deref()),
            (Some(cert), Some(key)) => {
                crate::tls::client_config_with_cert(ca.as_deref(), &self.path(cert), &self.path(key))
            }
            _ => {
                return Err(self.err(
                    format!("{at}.client_cert"),
                    "client_cert and client_key go together (PEM: the full chain, leaf first, and its key)",
                ));
            }
        }
        .map_err(|e| self.err(format!("{at}.upstream"), e.to_string()))?;
        Ok(Listener {
            name: l.name,
            protocol: l.protocol,
            listen: l.listen,
            mode: l.mode,
            tls: l.tls,
            server_tls,
            upstream: Upstream {
                host: u.host,
                port: u.port,
                tls: u.tls,
                server_name,
                client_tls,
            },
            relay,
        })
    }

    fn relay(&self, at: &str, l: &RawListener) -> Result<Option<Relay>, ConfigError> {
        if l.mode == ListenerMode::Auth {
            for (key, set) in [
                ("require_login", l.require_login.is_some()),
                ("allow_from", !l.allow_from.is_empty()),
                ("allowed_senders", !l.allowed_senders.is_empty()),
                ("client_cert", l.client_cert.is_some()),
                ("client_key", l.client_key.is_some()),
            ] {
                if set {
                    return Err(self.err(
                        format!("{at}.{key}"),
                        "only relay-mode listeners take this key (add mode: relay)",
                    ));
                }
            }
            return Ok(None);
        }
        if l.protocol != Protocol::Smtp {
            return Err(self.err(
                format!("{at}.mode"),
                "relay mode is for SMTP listeners only",
            ));
        }
        if l.upstream.tls != UpstreamTls::Starttls && l.upstream.tls != UpstreamTls::Implicit {
            return Err(self.err(
                format!("{at}.upstream.tls"),
                "relay mode needs TLS to the connector (starttls)",
            ));
        }
        let require_login = l.require_login.unwrap_or(true);
        if !require_login && l.allow_from.is_empty() {
            return Err(self.err(
                format!("{at}.require_login"),
                "require_login: false without allow_from would make an open relay; list the sending hosts under allow_from",
            ));
        }
        let mut allowed_senders = Vec::new();
        for (i, s) in l.allowed_senders.iter().enumerate() {
            let s = s.trim().to_ascii_lowercase();
            let rule = match s.split_once('@') {
                Some(("", domain)) if !domain.is_empty() && !domain.contains('@') => {
                    SenderRule::Domain(domain.to_string())
                }
                Some((local, domain))
                    if !local.is_empty() && !domain.is_empty() && !domain.contains('@') =>
                {
                    SenderRule::Address(s.clone())
                }
                _ => {
                    return Err(self.err(
                        format!("{at}.allowed_senders[{i}]"),
                        "expected an address (tickets@contoso.com) or a domain (@contoso.com)",
                    ));
                }
            };
            allowed_senders.push(rule);
        }
        Ok(Some(Relay {
            require_login,
            allow_from: l.allow_from.clone(),
            allowed_senders,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("/etc/authbridge/test.yaml"), text).map_err(|e| e.to_string())
    }

    fn listener(listen: &str, extra: &str) -> String {
        format!(
            "listeners:\n  - name: smtp\n    protocol: smtp\n    listen: {listen}\n{extra}    upstream: {{ host: smtp.office365.com, port: 587, tls: starttls }}\n"
        )
    }

    #[test]
    fn plaintext_on_a_non_loopback_address_needs_an_explicit_allow() {
        let e = parse(&listener("0.0.0.0:1587", "")).unwrap_err();
        assert!(
            e.starts_with("/etc/authbridge/test.yaml: listeners[0].listen: 0.0.0.0:1587 is not a loopback address and tls is none"),
            "{e}"
        );
        assert!(e.contains("allow_plaintext_remote: true"), "{e}");
        let e = parse(&listener("\"[::]:1587\"", "")).unwrap_err();
        assert!(e.contains("listeners[0].listen"), "{e}");
        parse(&listener(
            "0.0.0.0:1587",
            "    allow_plaintext_remote: true\n",
        ))
        .unwrap();
        parse(&listener("127.0.0.1:1587", "")).unwrap();
        parse(&listener("127.0.0.2:1587", "")).unwrap();
        parse(&listener("\"[::1]:1587\"", "")).unwrap();
    }

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

    #[test]
    fn limits_defaults_overrides_and_ranges() {
        let c = parse("").unwrap();
        assert_eq!(c.limits, Limits::default());
        let d = Limits::default();
        assert_eq!(d.protocol.line_max, 4096);
        assert_eq!(d.protocol.auth_line_max, 12288);
        assert!(d.timeouts.login_budget < std::time::Duration::from_secs(10));

        let c = parse(
            "limits:\n  line_max: 1000\n  auth_line_max: 2000\n  literal_max: 100\n  preauth_commands_max: 5\n  bad_commands_max: 2\n  session_login_failures_max: 1\n  max_sessions: 7\n  max_sessions_per_source: 3\n  login_failures_per_source: 4\n  failure_window_secs: 30\n  failure_delay_base_ms: 10\n  failure_delay_max_ms: 20\n  token_response_max: 8192\n  client_tls_handshake_secs: 2\n  preauth_idle_secs: 3\n  preauth_total_secs: 4\n  client_write_secs: 5\n  upstream_connect_secs: 6\n  upstream_tls_handshake_secs: 7\n  upstream_setup_secs: 8\n  upstream_auth_secs: 9\n  token_request_secs: 10\n  capabilities_wait_secs: 0\n  login_budget_secs: 11\n  pipe_idle_secs: 12\n  shutdown_grace_secs: 13\n  relay_reply_secs: 14\n",
        )
        .unwrap();
        let l = &c.limits;
        let s = std::time::Duration::from_secs;
        assert_eq!(
            (
                l.protocol.line_max,
                l.protocol.auth_line_max,
                l.protocol.literal_max
            ),
            (1000, 2000, 100)
        );
        assert_eq!(
            (
                l.protocol.preauth_commands_max,
                l.protocol.bad_commands_max,
                l.protocol.session_login_failures_max
            ),
            (5, 2, 1)
        );
        assert_eq!(
            (
                l.connections.max_sessions,
                l.connections.max_sessions_per_source,
                l.connections.login_failures_per_source
            ),
            (7, 3, 4)
        );
        assert_eq!(l.connections.failure_window, s(30));
        assert_eq!(
            l.connections.failure_delay_max,
            std::time::Duration::from_millis(20)
        );
        assert_eq!(l.token_response_max, 8192);
        let t = &l.timeouts;
        assert_eq!(
            [
                t.client_tls_handshake,
                t.preauth_idle,
                t.preauth_total,
                t.client_write,
                t.upstream_connect,
                t.upstream_tls_handshake,
                t.upstream_setup,
                t.upstream_auth,
                t.token_request,
                t.capabilities_wait,
                t.login_budget,
                t.pipe_idle,
                t.shutdown_grace,
                t.relay_reply
            ],
            [2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 11, 12, 13, 14].map(s)
        );
        assert_eq!(l.token_settings().request_timeout, s(10));

        for (yaml, want) in [
            (
                "line_max: 0",
                "limits.line_max: expected 512 to 65536 octets, got 0",
            ),
            ("max_sessions: 0", "limits.max_sessions: expected 1 to"),
            (
                "preauth_idle_secs: 0",
                "limits.preauth_idle_secs: expected 1 to 3600 seconds",
            ),
            (
                "login_budget_secs: 61",
                "limits.login_budget_secs: expected 1 to 60 seconds",
            ),
            ("literal_max: 99999999", "limits.literal_max"),
            (
                "line_max: 20000",
                "limits.auth_line_max: expected at least line_max (20000 octets)",
            ),
            (
                "failure_delay_base_ms: 500\n  failure_delay_max_ms: 100",
                "limits.failure_delay_max_ms",
            ),
            ("line_max: -1", "limits.line_max"),
            ("no_such_limit: 1", "limits: unknown field `no_such_limit`"),
        ] {
            let e = parse(&format!("limits:\n  {yaml}\n")).unwrap_err();
            assert!(
                e.starts_with("/etc/authbridge/test.yaml: ") && e.contains(want),
                "{yaml}: {e}"
            );
        }
    }
}
