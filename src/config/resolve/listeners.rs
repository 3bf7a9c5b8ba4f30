//! The `listeners:` section: each listening socket, its client-side TLS, where its sessions go
//! (upstream host, TLS and certificate checks) and, for `mode: relay`, who may relay what.

use std::collections::HashSet;
use std::net::SocketAddr;

use crate::config::defaults;
use crate::config::error::ConfigError;
use std::sync::Arc;

use crate::config::keywords::{
    ClientTlsMode, ListenerMode, Protocol, RelayAuthMechanism, UpstreamKind, UpstreamTls,
};
use crate::config::resolved::{Graph, Listener, Relay, RelayAuth, SenderRule, Upstream};
use crate::config::schema::RawListener;
use crate::config::secrets::Secrets;
use crate::graph::GraphClients;
use crate::protocol::smtp::relay_auth::Mechanism;
use crate::secret::SecretString;

/// The longest `upstream.auth` user name or password (bytes): an AUTH line stays far below
/// RFC 4954's 12,288 octets.
const RELAY_AUTH_FIELD_MAX: usize = 1024;

use super::context::Resolver;

impl Resolver<'_> {
    pub(super) fn listeners(&self, raw: Vec<RawListener>) -> Result<Vec<Listener>, ConfigError> {
        let mut listeners: Vec<Listener> = Vec::new();
        let mut lnames = HashSet::new();
        for (i, l) in raw.into_iter().enumerate() {
            let listener = self.listener(&format!("listeners[{i}]"), l)?;
            if !lnames.insert(listener.name.clone()) {
                return Err(self.err(
                    format!("listeners[{i}].name"),
                    format!("listener `{}` is defined twice", listener.name),
                ));
            }
            if let Some((j, other)) = listeners
                .iter()
                .enumerate()
                .find(|(_, o)| same_socket(o.listen, listener.listen))
            {
                return Err(self.err(
                    format!("listeners[{i}].listen"),
                    format!(
                        "{} clashes with listeners[{j}] (`{}`, {}): each listener needs its own \
                         port",
                        listener.listen, other.name, other.listen
                    ),
                ));
            }
            listeners.push(listener);
        }
        Ok(listeners)
    }

    /// `admin.listen` must not take a listener's socket.
    pub(super) fn admin_listen(
        &self,
        admin: Option<SocketAddr>,
        listeners: &[Listener],
    ) -> Result<Option<SocketAddr>, ConfigError> {
        if let Some(addr) = admin
            && let Some((j, other)) = listeners
                .iter()
                .enumerate()
                .find(|(_, o)| same_socket(o.listen, addr))
        {
            return Err(self.err(
                "admin.listen",
                format!(
                    "{addr} clashes with listeners[{j}] (`{}`, {}): the admin listener needs a \
                     port of its own",
                    other.name, other.listen
                ),
            ));
        }
        Ok(admin)
    }

    fn listener(&self, at: &str, l: RawListener) -> Result<Listener, ConfigError> {
        if l.name.is_empty() {
            return Err(self.err(format!("{at}.name"), "expected a non-empty name"));
        }
        self.graph_fits(at, &l)?;
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
        let server_cert = match l.tls {
            ClientTlsMode::None => None,
            ClientTlsMode::Starttls | ClientTlsMode::Implicit => {
                l.cert.as_ref().map(|c| self.path(c))
            }
        };
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
        let auth = self.relay_auth(at, &l)?;
        let u = l.upstream;
        let graph_endpoint = match u.kind {
            UpstreamKind::Graph => Some(u.endpoint.clone()),
            UpstreamKind::Mail => None,
        };
        let (host, port, tls) = match (&graph_endpoint, u.host, u.port, u.tls) {
            (Some(endpoint), ..) => {
                // Where the sessions' mail goes: the Graph endpoint (named in logs and `check`).
                let host = endpoint
                    .as_deref()
                    .and_then(|e| url::Url::parse(e).ok())
                    .and_then(|u| u.host_str().map(str::to_owned))
                    .unwrap_or_else(|| "graph.microsoft.com".to_owned());
                (host, 443, UpstreamTls::Implicit)
            }
            (None, Some(host), Some(port), Some(tls)) => (host, port, tls),
            (None, host, port, _) => {
                let missing = if host.is_none() {
                    "host"
                } else if port.is_none() {
                    "port"
                } else {
                    "tls"
                };
                return Err(self.err(
                    format!("{at}.upstream.{missing}"),
                    "missing: a mail upstream needs host, port and tls (implicit | starttls); for Microsoft Graph write upstream: { type: graph }",
                ));
            }
        };
        if host.is_empty() {
            return Err(self.err(format!("{at}.upstream.host"), "expected a host name"));
        }
        let server_name = u.server_name.unwrap_or_else(|| host.clone());
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
            server_cert,
            graph: graph_endpoint.map(|endpoint| Graph {
                endpoint,
                clients: Arc::new(GraphClients::new(Arc::clone(&client_tls))),
            }),
            upstream: Upstream {
                host,
                port,
                tls,
                server_name,
                client_tls,
                auth,
            },
            relay,
        })
    }

    /// `upstream.auth`: relay listeners only; a user name and a password a SASL PLAIN string
    /// can carry. The password never crosses the network in clear: `upstream.tls` is
    /// `starttls` or `implicit` (there is no plaintext upstream), and a `starttls` upstream
    /// that does not offer STARTTLS is refused before anything is sent.
    fn relay_auth(&self, at: &str, l: &RawListener) -> Result<Option<RelayAuth>, ConfigError> {
        let Some(a) = &l.upstream.auth else {
            return Ok(None);
        };
        let key = format!("{at}.upstream.auth");
        if l.mode != ListenerMode::Relay {
            return Err(self.err(
                key,
                "only relay-mode listeners log in to their upstream with a password (add mode: \
                 relay); auth-mode listeners log in with XOAUTH2 tokens",
            ));
        }
        let username = a.username.trim();
        if username.is_empty()
            || username.len() > RELAY_AUTH_FIELD_MAX
            || username.chars().any(char::is_control)
        {
            return Err(self.err(
                format!("{key}.username"),
                format!(
                    "expected the provider's SMTP user name (1 to {RELAY_AUTH_FIELD_MAX} \
                     bytes, no control characters), e.g. the user name of Amazon SES SMTP \
                     credentials or Postmark's server API token"
                ),
            ));
        }
        let password = match self.secrets {
            Secrets::Read => {
                let p = a
                    .password
                    .clone()
                    .read(|file| self.path(file))
                    .map_err(|message| self.err(format!("{key}.password"), message))?;
                let bad = p.expose().is_empty()
                    || p.expose().len() > RELAY_AUTH_FIELD_MAX
                    || p.expose().contains('\0');
                if bad {
                    return Err(self.err(
                        format!("{key}.password"),
                        format!(
                            "expected the provider's SMTP password (1 to {RELAY_AUTH_FIELD_MAX} \
                             bytes, no NUL); it is never logged"
                        ),
                    ));
                }
                p
            }
            Secrets::Skip => SecretString::default(),
        };
        Ok(Some(RelayAuth {
            username: SecretString::new(username.to_owned()),
            password,
            mechanism: a.mechanism.map(|m| match m {
                RelayAuthMechanism::Plain => Mechanism::Plain,
                RelayAuthMechanism::Login => Mechanism::Login,
            }),
        }))
    }

    /// `upstream: { type: graph }` only on auth-mode SMTP listeners, with only `endpoint` and
    /// `ca_file`; `endpoint` only with it.
    fn graph_fits(&self, at: &str, l: &RawListener) -> Result<(), ConfigError> {
        let u = &l.upstream;
        if u.kind == UpstreamKind::Mail {
            if u.endpoint.is_some() {
                return Err(self.err(
                    format!("{at}.upstream.endpoint"),
                    "only a Microsoft Graph upstream takes endpoint (add type: graph)",
                ));
            }
            return Ok(());
        }
        if l.protocol != Protocol::Smtp {
            return Err(self.err(
                format!("{at}.upstream.type"),
                "Microsoft Graph only sends mail: type: graph is for SMTP listeners; an IMAP or POP3 listener needs a mail server upstream (host, port, tls)",
            ));
        }
        if l.mode == ListenerMode::Relay {
            return Err(self.err(
                format!("{at}.upstream.type"),
                "relay mode hands mail to a connector without tokens; type: graph needs an auth-mode listener (remove mode: relay)",
            ));
        }
        for (key, set) in [
            ("host", u.host.is_some()),
            ("port", u.port.is_some()),
            ("tls", u.tls.is_some()),
            ("server_name", u.server_name.is_some()),
        ] {
            if set {
                return Err(self.err(
                    format!("{at}.upstream.{key}"),
                    "a Microsoft Graph upstream takes only endpoint and ca_file",
                ));
            }
        }
        if let Some(e) = &u.endpoint
            && let Err(why) = crate::token::check_endpoint_url(e)
        {
            return Err(self.err(format!("{at}.upstream.endpoint"), why));
        }
        Ok(())
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
        if l.upstream.tls != Some(UpstreamTls::Starttls)
            && l.upstream.tls != Some(UpstreamTls::Implicit)
        {
            return Err(self.err(
                format!("{at}.upstream.tls"),
                "relay mode needs TLS to the connector (starttls)",
            ));
        }
        let require_login = l.require_login.unwrap_or(defaults::RELAY_REQUIRE_LOGIN);
        if !require_login && l.allow_from.is_empty() {
            return Err(self.err(
                format!("{at}.require_login"),
                "require_login: false without allow_from would make an open relay; list the sending hosts under allow_from",
            ));
        }
        if !require_login && let Some(i) = l.allow_from.iter().position(|n| n.prefix_len() == 0) {
            return Err(self.err(
                format!("{at}.allow_from[{i}]"),
                format!(
                    "{} with require_login: false relays for every address there is (an open relay); list the sending hosts, or drop require_login: false so clients log in",
                    l.allow_from[i]
                ),
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

/// Would binding both fail (the same port on the same address, or on a wildcard address that
/// covers the other)? Port 0 (any free port) never clashes.
fn same_socket(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    let (x, y) = (a.ip(), b.ip());
    // `[::]` takes IPv4 too (dual stack, the Linux default); `0.0.0.0` takes every IPv4 address.
    x == y
        || (x.is_unspecified() && (x.is_ipv6() || y.is_ipv4()))
        || (y.is_unspecified() && (y.is_ipv6() || x.is_ipv4()))
}

#[cfg(test)]
mod tests {
    use crate::config::testkit::parse;

    #[test]
    fn two_listeners_cannot_share_a_socket() {
        let two = |a: &str, b: &str| {
            parse(&format!(
                "listeners:\n  - name: one\n    protocol: smtp\n    listen: {a}\n    \
                 allow_plaintext_remote: true\n    upstream: {{ host: h, port: 1, tls: starttls }}\n  \
                 - name: two\n    protocol: imap\n    listen: {b}\n    allow_plaintext_remote: true\n    \
                 upstream: {{ host: h, port: 1, tls: implicit }}\n"
            ))
        };
        let e = two("127.0.0.1:1587", "127.0.0.1:1587").unwrap_err();
        assert_eq!(
            e,
            "/etc/authbridge/test.yaml: listeners[1].listen: 127.0.0.1:1587 clashes with \
             listeners[0] (`one`, 127.0.0.1:1587): each listener needs its own port"
        );
        two("0.0.0.0:1587", "127.0.0.1:1587").unwrap_err();
        two("127.0.0.1:1587", "\"[::]:1587\"").unwrap_err();
        two("127.0.0.1:1587", "127.0.0.1:1588").unwrap();
        two("127.0.0.1:1587", "127.0.0.2:1587").unwrap();
        two("\"[::1]:1587\"", "127.0.0.1:1587").unwrap();
        two("127.0.0.1:0", "127.0.0.1:0").unwrap();
        let e = parse(
            "admin: { listen: 127.0.0.1:1587 }\nlisteners:\n  - name: one\n    protocol: smtp\n    \
             listen: 127.0.0.1:1587\n    upstream: { host: h, port: 1, tls: starttls }\n",
        )
        .unwrap_err();
        assert!(
            e.contains("admin.listen: 127.0.0.1:1587 clashes with listeners[0] (`one`"),
            "{e}"
        );
    }

    #[test]
    fn a_listen_address_is_an_ip_and_a_port() {
        let e = parse(&listener("localhost:1587", "")).unwrap_err();
        assert_eq!(
            e,
            "/etc/authbridge/test.yaml:4: listeners[0].listen: expected IP:PORT (e.g. \
             127.0.0.1:1587), got localhost:1587 (host names are not looked up: for localhost \
             write 127.0.0.1:1587)"
        );
        let e = parse(&listener("1587", "")).unwrap_err();
        assert!(
            e.ends_with("listeners[0].listen: expected IP:PORT (e.g. 127.0.0.1:1587), got 1587"),
            "{e}"
        );
        // `admin: {}` listens on the default, loopback and clear of login's redirect port 8925.
        let c = parse("admin: {}\n").unwrap();
        assert_eq!(c.admin_listen, Some("127.0.0.1:9925".parse().unwrap()));
        assert_eq!(parse("").unwrap().admin_listen, None);
        let e = parse("admin: { listen: \"127.0.0.1\" }\n").unwrap_err();
        assert!(e.contains("admin.listen: expected IP:PORT"), "{e}");
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
}
