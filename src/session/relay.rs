//! Drives a relay-mode session after login: reads the client and the connector, feeds
//! [`RelayMachine`] and writes what it asks for, each await under its named deadline.
//!
//! Without a connector connection at the start (a relay with `upstream.auth` and no local
//! login: see `crate::protocol::smtp::relay`), the first one is opened through `reconnect`
//! when the machine asks for it.
//!
//! Deadlines: `pipe_idle` for client silence, `client_write` for one write to the client, and
//! `relay_reply` for one write to the connector and for one whole connector reply; a new
//! connector connection (after a refused message body) is opened under the upstream setup's
//! own deadlines. Generic over both streams, so tests can use in-memory duplex streams.

use std::future::Future;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout, timeout_at};
use tracing::{info, warn};

use crate::config::Relay;
use crate::limits::Limits;
use crate::protocol::smtp::relay::{RelayEnd, RelayMachine, RelayOut, RelayStep};

/// Bytes read per call from either side.
const READ_CHUNK: usize = 16 * 1024;

/// Relay the rest of the session. `client_input` holds client bytes not yet handled (e.g. the
/// MAIL FROM of an allow-listed client); `upstream` the set-up connector connection and its
/// bytes not yet read, or `None` to open one only when the client's commands need it.
/// `reconnect` opens a new connector connection, set up as at login, with its unread bytes.
pub async fn relay<C, U, R, F>(
    mut client: C,
    mut client_input: BytesMut,
    upstream: Option<(U, BytesMut)>,
    settings: &Relay,
    limits: &Limits,
    mut reconnect: R,
) -> RelayEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
    R: FnMut() -> F,
    F: Future<Output = Result<(U, BytesMut), String>>,
{
    let idle = limits.timeouts.pipe_idle;
    let client_write = limits.timeouts.client_write;
    let connector = limits.timeouts.relay_reply;
    let mut machine = match upstream {
        Some(_) => RelayMachine::new(settings.clone(), &limits.protocol),
        None => RelayMachine::unconnected(settings.clone(), &limits.protocol),
    };
    let mut out = RelayOut::default();
    // `None` before the first connection of an unconnected start, and after the machine had
    // the connection dropped, until it asks for a new one.
    let (mut upstream, mut upstream_input) = match upstream {
        Some((up, input)) => (Some(up), input),
        None => (None, BytesMut::new()),
    };
    let mut connected_before = upstream.is_some();
    // One deadline for a whole connector reply, however it trickles in.
    let mut reply_deadline: Option<Instant> = None;
    loop {
        let step = machine.step(&mut client_input, &mut upstream_input, &mut out);
        if let RelayStep::End(end) = step {
            let _ = send(&mut client, &out.to_client, client_write).await;
            return end;
        }
        if !out.to_connector.is_empty() {
            let Some(up) = upstream.as_mut() else {
                return RelayEnd::Error("connector: not connected".into());
            };
            if let Err(e) = send(up, &out.to_connector, connector).await {
                return RelayEnd::Error(format!("connector: {e}"));
            }
            out.to_connector.clear();
        }
        if !out.to_client.is_empty() {
            log_known_refusals(&out.to_client);
            if let Err(e) = send(&mut client, &out.to_client, client_write).await {
                return RelayEnd::Error(e);
            }
            out.to_client.clear();
        }
        if step != RelayStep::NeedConnector {
            reply_deadline = None;
        }
        match step {
            RelayStep::Continue | RelayStep::End(_) => {}
            RelayStep::NeedClient => {
                let read = read_client(&mut client, &mut client_input, idle);
                if let Some(end) = read
                    .await
                    .ended(&mut machine, &mut client, &mut out, client_write)
                    .await
                {
                    return end;
                }
            }
            RelayStep::NeedConnector => {
                let deadline = *reply_deadline.get_or_insert_with(|| Instant::now() + connector);
                upstream_input.reserve(READ_CHUNK);
                let read = match upstream.as_mut() {
                    Some(up) => timeout_at(deadline, up.read_buf(&mut upstream_input)).await,
                    None => Ok(Ok(0)),
                };
                let end = match read {
                    Ok(Ok(0)) => RelayEnd::UpstreamClosed,
                    Ok(Ok(_)) => continue,
                    Ok(Err(e)) => RelayEnd::Error(format!("connector: {e}")),
                    Err(_) => RelayEnd::Error("the connector did not answer in time".into()),
                };
                machine.connector_failed(&mut out);
                let _ = send(&mut client, &out.to_client, client_write).await;
                return end;
            }
            RelayStep::DropConnector => {
                // Closing it is the point: a DATA whose end never came is not delivered.
                upstream = None;
                upstream_input.clear();
            }
            RelayStep::Reconnect => match reconnect().await {
                Ok((up, input)) => {
                    if connected_before {
                        info!("relay reconnected to the connector");
                    } else {
                        info!("relay connected to the connector for the client's first command");
                    }
                    connected_before = true;
                    upstream = Some(up);
                    upstream_input = input;
                    machine.reconnected(Ok(()), &mut out);
                }
                Err(why) if connected_before => {
                    warn!(reason = %why, "relay could not reconnect to the connector");
                    machine.reconnected(Err(why), &mut out);
                }
                Err(why) => {
                    warn!(reason = %why, "relay connector unavailable");
                    machine.reconnected(Err(why), &mut out);
                }
            },
        }
    }
}

/// A connector refusal the diagnosis table knows (`550 5.7.64 TenantAttribution`, `5.7.68`, …)
/// goes to the client unchanged; the log gets its cause and fix.
fn log_known_refusals(to_client: &[u8]) {
    for line in to_client.split(|b| *b == b'\n') {
        if !matches!(line.first(), Some(b'4' | b'5')) {
            continue;
        }
        let text = String::from_utf8_lossy(&line[..line.len().min(512)]);
        let text = text.trim_end();
        if let Some(k) = crate::diagnosis::recognise(text) {
            let ctx = crate::diagnosis::Context::default();
            warn!(upstream = %text, cause = %k.cause_for(&ctx), hint = %k.fix_for(&ctx), "relay: the connector refused");
        }
    }
}

/// What one wait for the client's next bytes came to.
pub(crate) enum ClientRead {
    /// Bytes were added to the input.
    Data,
    /// Nothing within the idle limit.
    Idle,
    Closed,
    Failed(String),
}

/// Read more of the client's input, waiting at most `idle`.
pub(crate) async fn read_client<C: AsyncRead + Unpin>(
    client: &mut C,
    input: &mut BytesMut,
    idle: Duration,
) -> ClientRead {
    input.reserve(READ_CHUNK);
    match timeout(idle, client.read_buf(input)).await {
        Err(_) => ClientRead::Idle,
        Ok(Ok(0)) => ClientRead::Closed,
        Ok(Ok(_)) => ClientRead::Data,
        Ok(Err(e)) => ClientRead::Failed(e.to_string()),
    }
}

impl ClientRead {
    /// The session's end, if this read ended it (an idle client is told why first).
    pub(crate) async fn ended<C: AsyncWrite + Unpin>(
        self,
        machine: &mut RelayMachine,
        client: &mut C,
        out: &mut RelayOut,
        client_write: Duration,
    ) -> Option<RelayEnd> {
        match self {
            ClientRead::Data => None,
            ClientRead::Idle => {
                let end = machine.client_idle(out);
                let _ = send(client, &out.to_client, client_write).await;
                Some(end)
            }
            ClientRead::Closed => Some(RelayEnd::ClientClosed),
            ClientRead::Failed(e) => Some(RelayEnd::Error(e)),
        }
    }
}

/// Write and flush within `limit`: a peer that stops reading cannot hold the session.
pub(crate) async fn send<S: AsyncWrite + Unpin>(
    s: &mut S,
    bytes: &[u8],
    limit: Duration,
) -> Result<(), String> {
    if bytes.is_empty() {
        return Ok(());
    }
    let write = async {
        s.write_all(bytes).await?;
        s.flush().await
    };
    match timeout(limit, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("a write did not complete within {limit:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick_limits() -> Limits {
        let mut l = Limits::default();
        l.timeouts.client_write = Duration::from_secs(1);
        l.timeouts.relay_reply = Duration::from_secs(1);
        l
    }

    async fn no_reconnect() -> Result<(tokio::io::DuplexStream, BytesMut), String> {
        Err("no reconnecting in this test".into())
    }

    fn open_relay() -> Relay {
        Relay {
            require_login: false,
            allow_from: vec![],
            allowed_senders: vec![],
        }
    }

    /// A connector that stops reading in the middle of a message cannot hold the session:
    /// the write to it has a deadline (`relay_reply`).
    #[tokio::test]
    async fn a_connector_that_stops_reading_ends_the_session_in_time() {
        let (_client_app, client_proxy) = tokio::io::duplex(64 * 1024);
        let (up_proxy, _connector_keeps_socket_but_never_reads) = tokio::io::duplex(64);
        let mut client_input = BytesMut::from(&b"DATA\r\n"[..]);
        client_input.extend_from_slice(&vec![b'x'; 256 * 1024]);
        let upstream_input = BytesMut::from(&b"354 go ahead\r\n"[..]);
        let t = std::time::Instant::now();
        let end = timeout(
            Duration::from_secs(10),
            relay(
                client_proxy,
                client_input,
                Some((up_proxy, upstream_input)),
                &open_relay(),
                &quick_limits(),
                no_reconnect,
            ),
        )
        .await
        .expect("the relay must not hang on a connector that stops reading");
        assert!(
            matches!(end, RelayEnd::Error(ref e) if e.contains("connector")),
            "{end:?}"
        );
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    /// A client that stops reading our replies cannot hold the session either (`client_write`).
    #[tokio::test]
    async fn a_client_that_stops_reading_ends_the_session_in_time() {
        let (_client_app_never_reads, client_proxy) = tokio::io::duplex(64);
        let (up_proxy, _up_server) = tokio::io::duplex(1024 * 1024);
        let client_input = BytesMut::from(&b"NOOP\r\n".repeat(1000)[..]);
        let upstream_input =
            BytesMut::from(&b"250 2.0.0 OK but rather long reply text\r\n".repeat(1000)[..]);
        let end = timeout(
            Duration::from_secs(10),
            relay(
                client_proxy,
                client_input,
                Some((up_proxy, upstream_input)),
                &open_relay(),
                &quick_limits(),
                no_reconnect,
            ),
        )
        .await
        .expect("the relay must not hang on a client that stops reading");
        assert!(
            matches!(end, RelayEnd::Error(ref e) if e.contains("within")),
            "{end:?}"
        );
    }
}
