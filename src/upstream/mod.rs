//! Connecting to the upstream mail server and logging in with XOAUTH2.
//!
//! I/O around the sans-I/O upstream machines (`crate::protocol::*Upstream`): TCP connect,
//! implicit TLS or STARTTLS (certificate and name always verified), the greeting/capability
//! dialogue, then SASL XOAUTH2 on request. Every phase runs under its named timeout.
//!
//! The buffers an XOAUTH2 line is written into hold the access token: they are allocated once
//! at their final size (so no copy is left in freed memory) and zeroed when dropped.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use zeroize::Zeroizing;

use crate::config::{Protocol, Upstream, UpstreamTls};
use crate::limits::Timeouts;
use crate::protocol::imap::ImapUpstream;
use crate::protocol::pop3::Pop3Upstream;
use crate::protocol::probe::{ProbeReply, ReplyKind, ReplyReader};
use crate::protocol::sasl;
use crate::protocol::smtp::SmtpUpstream;
use crate::protocol::{UpStep, UpstreamProtocol};
use crate::secret::SecretString;
use crate::tls::MaybeTls;

/// Bytes read from the upstream per call during setup.
const READ_CHUNK: usize = 16 * 1024;
/// Room for the protocol words around an XOAUTH2 blob (tag, command, CRLF).
const AUTH_LINE_OVERHEAD: usize = 64;
/// Output buffer of the setup dialogue (greeting, EHLO, STARTTLS, CAPABILITY: no secrets).
const SETUP_OUT: usize = 1024;

/// An upstream failure, with the phase it happened in.
#[derive(Debug, Clone, thiserror::Error)]
#[error("upstream {host}:{port} {phase}: {message}")]
pub struct UpstreamError {
    pub host: String,
    pub port: u16,
    pub phase: &'static str,
    pub message: String,
}

/// A set-up upstream connection, ready for XOAUTH2.
pub struct Connected {
    pub stream: MaybeTls<TcpStream>,
    /// Upstream bytes read but not consumed by the machine (after login they go to the client).
    pub input: BytesMut,
    machine: Box<dyn UpstreamProtocol>,
    pub capabilities: Vec<String>,
    host: String,
    port: u16,
    memory: Option<Arc<UpstreamMemory>>,
}

/// How an XOAUTH2 attempt ended.
#[derive(Debug)]
pub enum AuthResult {
    Ok { untagged: Vec<u8>, text: String },
    Rejected(String),
}

/// What one listener remembers of its upstream between sessions: the capabilities the last
/// session verified (IMAP), so that the next login needs no round trip of its own to learn them
/// (`crate::protocol::imap::upstream` explains how every session still verifies them). One per
/// listener: a reload with another upstream starts a new one.
#[derive(Debug, Default)]
pub struct UpstreamMemory {
    capabilities: std::sync::Mutex<Option<Vec<String>>>,
}

impl UpstreamMemory {
    /// The capabilities last verified, if any.
    pub fn capabilities(&self) -> Option<Vec<String>> {
        self.lock().clone()
    }

    /// Replace what is remembered with what `machine` verified in its session, if it did.
    fn learn(&self, machine: &dyn UpstreamProtocol) {
        if let Some(caps) = machine.verified_capabilities() {
            let mut known = self.lock();
            if known.as_ref() != Some(&caps) {
                tracing::debug!(capabilities = %caps.join(" "), "upstream capabilities learned");
                *known = Some(caps);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Vec<String>>> {
        self.capabilities.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn machine(
    protocol: Protocol,
    starttls: bool,
    relay: bool,
    ehlo_name: &str,
    memory: Option<&UpstreamMemory>,
) -> Box<dyn UpstreamProtocol> {
    match protocol {
        Protocol::Smtp if relay => Box::new(SmtpUpstream::new(starttls, ehlo_name).for_relay()),
        Protocol::Smtp => Box::new(SmtpUpstream::new(starttls, ehlo_name)),
        Protocol::Imap => Box::new(
            ImapUpstream::new(starttls)
                .with_known_capabilities(memory.and_then(UpstreamMemory::capabilities)),
        ),
        Protocol::Pop3 => Box::new(Pop3Upstream::new(starttls)),
    }
}

/// Connect, do TLS, read the greeting and capabilities. `relay`: an SMTP connector that takes
/// mail without AUTH (XOAUTH2 is then not required).
pub async fn connect(
    upstream: &Upstream,
    protocol: Protocol,
    relay: bool,
    ehlo_name: &str,
    timeouts: &Timeouts,
) -> Result<Connected, UpstreamError> {
    connect_with(upstream, protocol, relay, ehlo_name, timeouts, None).await
}

/// [`connect`], starting from (and updating) a listener's `memory` of its upstream.
pub async fn connect_with(
    upstream: &Upstream,
    protocol: Protocol,
    relay: bool,
    ehlo_name: &str,
    timeouts: &Timeouts,
    memory: Option<Arc<UpstreamMemory>>,
) -> Result<Connected, UpstreamError> {
    let err = |phase: &'static str, message: String| UpstreamError {
        host: upstream.host.clone(),
        port: upstream.port,
        phase,
        message,
    };
    let addr = (upstream.host.as_str(), upstream.port);
    let tcp = match timeout(timeouts.upstream_connect, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(err("connect", e.to_string())),
        Err(_) => {
            return Err(err(
                "connect",
                format!("no answer within {:?}", timeouts.upstream_connect),
            ));
        }
    };
    let _ = tcp.set_nodelay(true);
    let connector = TlsConnector::from(Arc::clone(&upstream.client_tls));
    let starttls = upstream.tls == UpstreamTls::Starttls;
    let mut stream = if starttls {
        MaybeTls::Plain(tcp)
    } else {
        tls_handshake(&connector, upstream, tcp, timeouts.upstream_tls_handshake)
            .await
            .map_err(|m| err("tls_handshake", m))?
    };
    let mut conn_machine = machine(protocol, starttls, relay, ehlo_name, memory.as_deref());
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let setup = async {
        loop {
            match drive(&mut *conn_machine, &mut stream, &mut input, SETUP_OUT).await? {
                UpStep::StartTls => {
                    let MaybeTls::Plain(tcp) = stream else {
                        return Err(("setup", "upstream asked for STARTTLS twice".to_string()));
                    };
                    // Anything the server sent before the handshake is not trusted (RFC 3207 §4).
                    input.clear();
                    stream =
                        tls_handshake(&connector, upstream, tcp, timeouts.upstream_tls_handshake)
                            .await
                            .map_err(|m| ("tls_handshake", m))?;
                    let mut out = Vec::new();
                    conn_machine.tls_started(&mut out);
                    write_all(&mut stream, &out).await?;
                }
                UpStep::Ready { capabilities } => return Ok((stream, capabilities)),
                UpStep::Failed(why) => return Err(("setup", why)),
                other => return Err(("setup", format!("unexpected step during setup: {other:?}"))),
            }
        }
    };
    let (stream, capabilities) = match timeout(timeouts.upstream_setup, setup).await {
        Ok(Ok(v)) => v,
        Ok(Err((phase, m))) => return Err(err(phase, m)),
        Err(_) => {
            return Err(err(
                "setup",
                format!(
                    "no complete greeting/capabilities within {:?}",
                    timeouts.upstream_setup
                ),
            ));
        }
    };
    if let Some(memory) = &memory {
        memory.learn(&*conn_machine);
    }
    Ok(Connected {
        stream,
        input,
        machine: conn_machine,
        capabilities,
        host: upstream.host.clone(),
        port: upstream.port,
        memory,
    })
}

impl Connected {
    /// One XOAUTH2 attempt. Can be repeated on the same connection after a rejection.
    pub async fn authenticate(
        &mut self,
        mailbox: &str,
        token: &SecretString,
        limit: Duration,
    ) -> Result<AuthResult, UpstreamError> {
        // Holds the token: see the module docs.
        let mut out = auth_out(mailbox, token);
        let capacity = out.capacity();
        self.machine.authenticate(mailbox, token, &mut out);
        let exchange = async {
            write_all(&mut self.stream, &out).await?;
            // A machine may send the blob later, after a continuation (IMAP without SASL-IR,
            // POP3): the same room then.
            drive(
                &mut *self.machine,
                &mut self.stream,
                &mut self.input,
                capacity,
            )
            .await
        };
        let step = timeout(limit, exchange).await;
        if let Some(memory) = &self.memory {
            memory.learn(&*self.machine);
        }
        let step = match step {
            Ok(Ok(step)) => step,
            Ok(Err((phase, m))) => return Err(self.error(phase, m)),
            Err(_) => return Err(self.error("auth", format!("no answer to AUTH within {limit:?}"))),
        };
        match step {
            UpStep::AuthOk { untagged, text } => Ok(AuthResult::Ok { untagged, text }),
            UpStep::AuthRejected { text } => Ok(AuthResult::Rejected(text)),
            UpStep::Failed(why) => Err(self.error("auth", why)),
            other => Err(self.error("auth", format!("unexpected step during auth: {other:?}"))),
        }
    }

    /// Send one command after login (`line` with its CRLF) and read its reply, within `limit`.
    /// Used by `check`'s probes and the session's post-login check; never carries a secret.
    pub async fn command(
        &mut self,
        line: &[u8],
        kind: ReplyKind,
        limit: Duration,
    ) -> Result<ProbeReply, UpstreamError> {
        let mut reader = ReplyReader::new(kind);
        let exchange = async {
            write_all(&mut self.stream, line).await?;
            loop {
                if let Some(reply) = reader
                    .feed(&mut self.input)
                    .map_err(|e| ("reply", e.to_string()))?
                {
                    return Ok(reply);
                }
                self.input.reserve(READ_CHUNK);
                match self.stream.read_buf(&mut self.input).await {
                    Ok(0) => return Err(("read", "upstream closed the connection".to_string())),
                    Ok(_) => {}
                    Err(e) => return Err(("read", e.to_string())),
                }
            }
        };
        match timeout(limit, exchange).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err((phase, m))) => Err(self.error(phase, m)),
            Err(_) => Err(self.error("command", format!("no answer within {limit:?}"))),
        }
    }

    fn error(&self, phase: &'static str, message: String) -> UpstreamError {
        UpstreamError {
            host: self.host.clone(),
            port: self.port,
            phase,
            message,
        }
    }
}

/// The buffer an XOAUTH2 line for `mailbox` and `token` is written into: zeroed on drop, and
/// large enough that writing the line never grows it.
fn auth_out(mailbox: &str, token: &SecretString) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(Vec::with_capacity(
        sasl::xoauth2_len(mailbox, token) + AUTH_LINE_OVERHEAD,
    ))
}

async fn tls_handshake(
    connector: &TlsConnector,
    upstream: &Upstream,
    tcp: TcpStream,
    limit: Duration,
) -> Result<MaybeTls<TcpStream>, String> {
    let name = rustls::pki_types::ServerName::try_from(upstream.server_name.clone())
        .map_err(|e| format!("invalid server name {}: {e}", upstream.server_name))?;
    match timeout(limit, connector.connect(name, tcp)).await {
        Ok(Ok(tls)) => Ok(MaybeTls::Client(Box::new(tls))),
        Ok(Err(e)) => Err(format!(
            "TLS handshake with {} failed: {e} (is the certificate valid for that name and trusted? set upstream.ca_file for a private CA)",
            upstream.server_name
        )),
        Err(_) => Err(format!("TLS handshake did not finish within {limit:?}")),
    }
}

async fn write_all(
    stream: &mut MaybeTls<TcpStream>,
    bytes: &[u8],
) -> Result<(), (&'static str, String)> {
    if bytes.is_empty() {
        return Ok(());
    }
    stream
        .write_all(bytes)
        .await
        .map_err(|e| ("write", e.to_string()))?;
    stream.flush().await.map_err(|e| ("write", e.to_string()))
}

/// Run the machine until it needs something other than more input or another step. Its output
/// goes through a buffer of `out_capacity` bytes, zeroed when dropped.
async fn drive(
    machine: &mut dyn UpstreamProtocol,
    stream: &mut MaybeTls<TcpStream>,
    input: &mut BytesMut,
    out_capacity: usize,
) -> Result<UpStep, (&'static str, String)> {
    let mut out = Zeroizing::new(Vec::with_capacity(out_capacity));
    loop {
        let step = machine.step(input, &mut out);
        write_all(stream, &out).await?;
        out.clear();
        match step {
            UpStep::Continue => continue,
            UpStep::NeedInput => {
                input.reserve(READ_CHUNK);
                match stream.read_buf(input).await {
                    Ok(0) => return Err(("read", "upstream closed the connection".into())),
                    Ok(_) => {}
                    Err(e) => return Err(("read", e.to_string())),
                }
            }
            other => return Ok(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Steps `m` over `server` until it asks for something else than input or another step.
    fn step_until(
        m: &mut dyn UpstreamProtocol,
        input: &mut BytesMut,
        server: &[u8],
        out: &mut Vec<u8>,
    ) -> UpStep {
        input.extend_from_slice(server);
        loop {
            match m.step(input, out) {
                UpStep::Continue => {}
                other => return other,
            }
        }
    }

    #[test]
    fn xoauth2_lines_fit_their_zeroizing_buffer_without_growing() {
        let mailbox = "a-rather-long-shared-mailbox-name@tenant.onmicrosoft.com";
        let token = SecretString::from("E".repeat(6000));
        /// A machine, the server's bytes up to Ready, and those that ask for the blob after.
        type Case = (Box<dyn UpstreamProtocol>, &'static [u8], &'static [u8]);
        let cases: Vec<Case> = vec![
            (
                Box::new(SmtpUpstream::new(false, "proxy.local")),
                b"220 mx ESMTP\r\n250-mx\r\n250 AUTH LOGIN XOAUTH2\r\n",
                b"",
            ),
            (
                Box::new(ImapUpstream::new(false)),
                b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] ready\r\n",
                b"",
            ),
            (
                Box::new(ImapUpstream::new(false)),
                b"* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2] ready\r\n",
                b"+ \r\n",
            ),
            (
                Box::new(Pop3Upstream::new(false)),
                b"+OK ready\r\n+OK\r\nSASL XOAUTH2\r\n.\r\n",
                b"+ \r\n",
            ),
        ];
        for (i, (mut m, ready, challenge)) in cases.into_iter().enumerate() {
            let mut input = BytesMut::new();
            let mut setup = Vec::new();
            let step = step_until(m.as_mut(), &mut input, ready, &mut setup);
            assert!(matches!(step, UpStep::Ready { .. }), "case {i}: {step:?}");
            let mut out: Zeroizing<Vec<u8>> = auth_out(mailbox, &token);
            let (capacity, at) = (out.capacity(), out.as_ptr());
            m.authenticate(mailbox, &token, &mut out);
            if !challenge.is_empty() {
                // The blob comes after the server's continuation, into the same room.
                out.clear();
                step_until(m.as_mut(), &mut input, challenge, &mut out);
            }
            let blob = sasl::xoauth2(mailbox, &token);
            let sent = String::from_utf8_lossy(&out).into_owned();
            assert!(sent.contains(blob.expose().as_str()), "case {i}");
            assert_eq!(
                (out.capacity(), out.as_ptr()),
                (capacity, at),
                "case {i}: the buffer grew (a copy of the token was left behind)"
            );
        }
    }
}
