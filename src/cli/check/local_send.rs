//! `check --send-test` through the full path, as GLPI's "Send a test to you" goes: connect to a
//! running authbridge's own SMTP listener (the `listen` address in the config; a wildcard
//! address is reached on loopback), TLS as the listener is configured (trusting exactly the
//! certificate in the listener's `cert` file), log in with a local username and password
//! (`AUTH PLAIN`; relay listeners that waive the login: none), send one test message and return
//! the final reply. `--direct` (probe.rs) skips the local hop and talks to the upstream itself.
//!
//! Every reply is read with the bounded SMTP reply reader (`crate::protocol::probe`) under the
//! config's timeouts; the `AUTH` line, which holds the password, lives in buffers sized once and
//! zeroed on drop.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::BytesMut;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use zeroize::Zeroizing;

use crate::config::{ClientTlsMode, Config, Listener, ListenerMode};
use crate::protocol::probe::{ProbeReply, ReplyKind, ReplyReader};
use crate::secret::SecretString;
use crate::tls::MaybeTls;

/// Bytes read per call.
const READ_CHUNK: usize = 4096;
/// authbridge's own reply to a wrong local username or password (docs/replies.md).
const LOCAL_LOGIN_REFUSED: &str = "5.7.8";

/// A local login for the send test.
#[derive(Clone, Debug)]
pub struct LocalLogin {
    pub username: String,
    pub password: SecretString,
}

/// How the send test through the local listener ended.
#[derive(Debug)]
pub enum LocalOutcome {
    /// Nothing accepts connections at the address: authbridge is not running (there).
    NotListening(String),
    /// The message was accepted; the final reply.
    Accepted(String),
    /// The listener refused the local login with authbridge's own "credentials invalid".
    LocalLoginRefused(String),
    /// A command (the login included, when the upstream refused it) was refused.
    Refused { command: String, text: String },
    /// Connect, TLS, a timeout or a malformed reply.
    Broken(String),
}

/// The address `check` connects to for `listener`: its `listen` address, a wildcard one on
/// loopback. `Err` when the port is 0 (any free port: nothing to connect to).
pub fn target(listener: &Listener) -> Result<SocketAddr, String> {
    let mut addr = listener.listen;
    if addr.port() == 0 {
        return Err(format!(
            "listener {} listens on port 0 (any free port), so check cannot tell where the running \
             authbridge listens — give it a fixed port, or use --direct",
            listener.name
        ));
    }
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Ok(addr)
}

/// Does a send test through `listener` need a local login?
pub fn needs_login(listener: &Listener) -> bool {
    match (&listener.mode, &listener.relay) {
        (ListenerMode::Relay, Some(r)) => !r.login_waived(),
        _ => true,
    }
}

/// The conversation with the listener.
struct Conn {
    stream: MaybeTls<TcpStream>,
    input: BytesMut,
    limit: Duration,
}

impl Conn {
    async fn reply(&mut self) -> Result<ProbeReply, String> {
        let mut reader = ReplyReader::new(ReplyKind::Smtp);
        let read = async {
            loop {
                if let Some(r) = reader.feed(&mut self.input).map_err(|e| e.to_string())? {
                    return Ok(r);
                }
                self.input.reserve(READ_CHUNK);
                match self.stream.read_buf(&mut self.input).await {
                    Ok(0) => return Err("the listener closed the connection".to_string()),
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        };
        match timeout(self.limit, read).await {
            Ok(r) => r,
            Err(_) => Err(format!("no reply within {:?}", self.limit)),
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match timeout(self.limit, write).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("could not write within {:?}", self.limit)),
        }
    }

    async fn cmd(&mut self, line: &[u8]) -> Result<ProbeReply, String> {
        self.send(line).await?;
        self.reply().await
    }
}

/// Send the test message from `from` to `to` through `listener` of the running authbridge.
pub async fn send(
    config: &Config,
    listener: &Listener,
    login: Option<&LocalLogin>,
    from: &str,
    to: &str,
) -> LocalOutcome {
    let t = &config.limits.timeouts;
    let addr = match target(listener) {
        Ok(a) => a,
        Err(e) => return LocalOutcome::Broken(e),
    };
    let tcp = match timeout(t.upstream_connect, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return LocalOutcome::NotListening(format!(
                "nothing listens on {addr} (listener {}): {e}",
                listener.name
            ));
        }
        Ok(Err(e)) => return LocalOutcome::Broken(format!("connect to {addr}: {e}")),
        Err(_) => {
            return LocalOutcome::Broken(format!(
                "connect to {addr}: no answer within {:?}",
                t.upstream_connect
            ));
        }
    };
    let connector = match listener.server_cert.as_deref().map(pinned_connector) {
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => return LocalOutcome::Broken(e),
        None => None,
    };
    let handshake = |tcp: TcpStream| {
        let connector = connector.clone();
        let limit = t.upstream_tls_handshake;
        async move {
            let Some(connector) = connector else {
                return Err("the listener has TLS but no certificate file".to_string());
            };
            match timeout(
                limit,
                connector.connect(ServerName::IpAddress(addr.ip().into()), tcp),
            )
            .await
            {
                Ok(Ok(s)) => Ok(MaybeTls::Client(Box::new(s))),
                Ok(Err(e)) => Err(format!("TLS handshake with {addr} failed: {e}")),
                Err(_) => Err(format!(
                    "TLS handshake with {addr}: no answer within {limit:?}"
                )),
            }
        }
    };
    let stream = if listener.tls == ClientTlsMode::Implicit {
        match handshake(tcp).await {
            Ok(s) => s,
            Err(e) => return LocalOutcome::Broken(e),
        }
    } else {
        MaybeTls::Plain(tcp)
    };
    let mut conn = Conn {
        stream,
        input: BytesMut::with_capacity(READ_CHUNK),
        limit: t.relay_reply,
    };
    let ehlo = format!("EHLO {}\r\n", config.hostname);
    let refused = |command: &str, r: ProbeReply| LocalOutcome::Refused {
        command: command.to_string(),
        text: r.text,
    };
    macro_rules! step {
        ($command:expr, $result:expr) => {
            match $result {
                Ok(r) if r.ok => r,
                Ok(r) => return refused($command, r),
                Err(e) => return LocalOutcome::Broken(format!("{}: {e}", $command)),
            }
        };
    }
    step!("greeting", conn.reply().await);
    step!("EHLO", conn.cmd(ehlo.as_bytes()).await);
    if listener.tls == ClientTlsMode::Starttls {
        step!("STARTTLS", conn.cmd(b"STARTTLS\r\n").await);
        let MaybeTls::Plain(tcp) = conn.stream else {
            return LocalOutcome::Broken("STARTTLS on a TLS stream".into());
        };
        // Nothing read before the handshake counts (RFC 3207 §4).
        conn.input.clear();
        conn.stream = match handshake(tcp).await {
            Ok(s) => s,
            Err(e) => return LocalOutcome::Broken(e),
        };
        step!("EHLO", conn.cmd(ehlo.as_bytes()).await);
    }
    if let Some(login) = login {
        let line = auth_plain(login);
        match conn.cmd(line.as_bytes()).await {
            Ok(r) if r.ok => {}
            Ok(r) if r.code == Some(535) && r.text.contains(LOCAL_LOGIN_REFUSED) => {
                return LocalOutcome::LocalLoginRefused(r.text);
            }
            Ok(r) => return refused("AUTH", r),
            Err(e) => return LocalOutcome::Broken(format!("AUTH: {e}")),
        }
    }
    step!(
        "MAIL FROM",
        conn.cmd(format!("MAIL FROM:<{from}>\r\n").as_bytes()).await
    );
    step!(
        "RCPT TO",
        conn.cmd(format!("RCPT TO:<{to}>\r\n").as_bytes()).await
    );
    step!("DATA", conn.cmd(b"DATA\r\n").await);
    let message = super::probe::test_message(from, to);
    let last = step!("end of DATA", conn.cmd(message.as_bytes()).await);
    let _ = conn.cmd(b"QUIT\r\n").await;
    LocalOutcome::Accepted(last.text)
}

/// `AUTH PLAIN <base64(\0user\0password)>\r\n`, in buffers allocated once and zeroed on drop.
fn auth_plain(login: &LocalLogin) -> Zeroizing<String> {
    let user = login.username.as_bytes();
    let pass = login.password.expose().as_bytes();
    let mut raw = Zeroizing::new(Vec::with_capacity(2 + user.len() + pass.len()));
    raw.push(0);
    raw.extend_from_slice(user);
    raw.push(0);
    raw.extend_from_slice(pass);
    let b64 = base64::encoded_len(raw.len(), true).unwrap_or(0);
    let mut line = Zeroizing::new(String::with_capacity(b64 + 13));
    line.push_str("AUTH PLAIN ");
    STANDARD.encode_string(&raw[..], &mut line);
    line.push_str("\r\n");
    line
}

/// A TLS connector that accepts exactly the first certificate in `cert_file` (the listener's own:
/// names do not matter on this local hop, identity does), handshake signatures checked as usual.
fn pinned_connector(cert_file: &std::path::Path) -> Result<TlsConnector, String> {
    let cert = crate::tls::load_certs(cert_file)
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .ok_or_else(|| format!("{}: no certificate in the file", cert_file.display()))?;
    let provider = crate::tls::provider();
    let verifier = Pinned {
        cert,
        file: cert_file.display().to_string(),
        algorithms: provider.signature_verification_algorithms,
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    file: String,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the listener presented another certificate than the one in {} (another program \
                 on that port, or authbridge not reloaded since the file changed)",
                self.file
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_plain_line() {
        let login = LocalLogin {
            username: "glpi".into(),
            password: SecretString::new("pw".into()),
        };
        let line = auth_plain(&login);
        assert_eq!(&**line, "AUTH PLAIN AGdscGkAcHc=\r\n");
        assert_eq!(line.capacity(), line.len());
    }
}
