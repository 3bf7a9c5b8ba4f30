//! The validated config the rest of the program runs on: [`Config`] and its parts (accounts and
//! their logins, listeners with their upstream and relay settings). Values of these types come
//! only out of `resolve`, so they hold no unchecked input.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::limits::Limits;
use crate::protocol::smtp::relay_auth::Mechanism;
use crate::secret::SecretString;
use crate::token::{AccountConfig, ProviderConfig, StoreConfig};

use super::keywords::{ClientTlsMode, ListenerMode, LogFormat, Protocol, UpstreamTls};

/// A validated config, ready to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub state_dir: PathBuf,
    pub key_file: Option<PathBuf>,
    pub log_level: Option<String>,
    pub log_format: LogFormat,
    pub admin_listen: Option<SocketAddr>,
    /// The rest of `admin:` (the admin page's access control and TLS).
    pub admin: AdminSettings,
    pub hostname: String,
    pub providers: BTreeMap<String, Arc<ProviderConfig>>,
    pub accounts: Vec<Account>,
    pub listeners: Vec<Listener>,
    pub limits: Limits,
    /// `on_reauth_needed`: program and arguments (never empty when set).
    pub on_reauth_needed: Option<Vec<String>>,
    /// `token_store:`: where refresh tokens are kept.
    pub token_store: StoreConfig,
}

/// `admin:` besides `listen`: who may use the admin page and how it is served.
#[derive(Debug, Clone, Default)]
pub struct AdminSettings {
    /// `admin.hostnames`, lower-cased: names accepted in the `Host` header besides `localhost`,
    /// the loopback addresses and the listen address.
    pub hostnames: Vec<String>,
    /// `admin.password_hash`: argon2id PHC string; the page asks for the password when set.
    pub password_hash: Option<String>,
    /// `admin.cert`/`admin.key` as a TLS config; the admin listener speaks HTTPS when set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The files behind `tls` (a reload compares them).
    pub cert_files: Option<(PathBuf, PathBuf)>,
    /// `admin.redirect_uri`, if given (else derived from `listen`: see `crate::admin`).
    pub redirect_uri: Option<String>,
}

/// A mailbox and the local logins that map to it.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    /// The provider of the account whose token is used (this one's, or `token_from`'s).
    pub provider: Arc<ProviderConfig>,
    /// The mailbox the account opens (IMAP/POP3 `user=`, and the address it sends as).
    pub mailbox: String,
    /// `token_from`: the account whose token this one uses (one token, one refresh); `None`
    /// when the account has its own token.
    pub token_from: Option<String>,
    /// Whose token it is: the mailbox of the token's account (`mailbox` itself without
    /// `token_from`). With a delegated flow this is the signed-in user.
    pub identity: String,
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
    /// The certificate file behind `server_tls` (resolved path), for `check --send-test`, which
    /// trusts exactly that certificate when it connects to this listener.
    pub server_cert: Option<PathBuf>,
    pub upstream: Upstream,
    /// Set for `mode: relay` listeners.
    pub relay: Option<Relay>,
    /// Set for `upstream: { type: graph }` listeners: mail goes to Microsoft Graph `sendMail`
    /// (`upstream` then names the Graph host, for logs; no session connects to it).
    pub graph: Option<Graph>,
}

/// A Graph listener's upstream.
#[derive(Debug, Clone)]
pub struct Graph {
    /// `endpoint:` as configured; `None`: the default for the account's cloud.
    pub endpoint: Option<String>,
    /// HTTP clients with the listener's TLS roots, one per provider.
    pub clients: Arc<crate::graph::GraphClients>,
}

/// Relay-mode settings.
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
    /// May a client from `ip` connect at all? `allow_from`, when given, narrows who may; an
    /// empty list admits every source (each must then log in: `require_login` is true).
    pub fn admits(&self, ip: std::net::IpAddr) -> bool {
        self.allow_from.is_empty() || self.open_for(ip)
    }

    /// May an admitted client send without logging in? Only when `require_login: false` — the
    /// stricter reading wins: `allow_from` alone never waives the login.
    pub fn login_waived(&self) -> bool {
        !self.require_login
    }

    /// Is `ip` inside `allow_from`? An IPv4-mapped IPv6 address (a client
    /// of a dual-stack `[::]` listener) matches as its IPv4 form, and an IPv4 address matches
    /// an entry written in the mapped form (`::ffff:10.0.0.0/104`).
    pub fn open_for(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        let mapped = match ip {
            std::net::IpAddr::V4(v4) => Some(std::net::IpAddr::V6(v4.to_ipv6_mapped())),
            std::net::IpAddr::V6(_) => None,
        };
        self.allow_from
            .iter()
            .any(|net| net.contains(&ip) || mapped.is_some_and(|m| net.contains(&m)))
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
    /// Relay mode: the credentials a transactional provider wants (`upstream.auth`).
    pub auth: Option<RelayAuth>,
}

/// `upstream.auth` of a relay listener: SMTP AUTH PLAIN or LOGIN towards a transactional
/// provider, after TLS.
#[derive(Debug, Clone)]
pub struct RelayAuth {
    /// Kept as a secret: Postmark's SMTP user name is the server's API token.
    pub username: SecretString,
    /// Empty when the config was loaded without its secrets (`status`, `import-token`).
    pub password: SecretString,
    /// `None`: PLAIN if the provider offers it, else LOGIN.
    pub mechanism: Option<Mechanism>,
}

impl Config {
    pub fn account(&self, name: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.name == name)
    }

    /// The accounts that own a token (no `token_from`): the token manager's accounts.
    pub fn token_accounts(&self) -> impl Iterator<Item = &Account> {
        self.accounts.iter().filter(|a| a.token_from.is_none())
    }
}

impl Account {
    /// The account whose token this one uses: `token_from`, else itself.
    pub fn token_account(&self) -> &str {
        self.token_from.as_deref().unwrap_or(&self.name)
    }

    /// The XOAUTH2 `user=` for `protocol`, following Exchange Online's rules for shared
    /// mailboxes: IMAP and POP3 name the mailbox to open (a delegate's token, or an app's, with
    /// FullAccess on it). SMTP with a delegated token authenticates as the delegate (the
    /// signed-in user) and the message's `From:` is the shared mailbox (SendAs on it); an
    /// app-only token has no user, so SMTP names the mailbox it sends as.
    pub fn xoauth2_user(&self, protocol: Protocol) -> &str {
        match protocol {
            Protocol::Smtp if self.provider.flow.is_delegated() => &self.identity,
            _ => &self.mailbox,
        }
    }

    /// The signed-in user whose delegated token opens this account's (shared) mailbox: set
    /// when `token_from` names an account with a delegated flow and another mailbox.
    pub fn delegate(&self) -> Option<&str> {
        (self.token_from.is_some()
            && self.provider.flow.is_delegated()
            && !self.mailbox.eq_ignore_ascii_case(&self.identity))
        .then_some(self.identity.as_str())
    }

    /// What the token manager needs of this account.
    pub fn token_config(&self) -> AccountConfig {
        AccountConfig {
            name: self.name.clone(),
            mailbox: self.mailbox.clone(),
            provider: Arc::clone(&self.provider),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Relay;

    fn relay(allow_from: &[&str]) -> Relay {
        Relay {
            require_login: false,
            allow_from: allow_from.iter().map(|n| n.parse().unwrap()).collect(),
            allowed_senders: vec![],
        }
    }

    /// A dual-stack listener sees IPv4 clients as `::ffff:a.b.c.d`: they match IPv4 entries,
    /// and IPv4 clients match entries written in the mapped form.
    #[test]
    fn allow_from_matches_ipv4_mapped_addresses_as_ipv4() {
        let r = relay(&["127.0.0.0/8", "2001:db8::/32"]);
        for ip in ["127.0.0.1", "::ffff:127.0.0.1", "2001:db8::5"] {
            assert!(r.open_for(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["10.0.0.1", "::ffff:10.0.0.1", "::1", "::127.0.0.1"] {
            assert!(!r.open_for(ip.parse().unwrap()), "{ip}");
        }
        let r = relay(&["::ffff:10.0.0.0/104"]);
        assert!(r.open_for("10.1.2.3".parse().unwrap()));
        assert!(!r.open_for("11.1.2.3".parse().unwrap()));
    }
}
