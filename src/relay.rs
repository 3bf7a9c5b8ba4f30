//! Relay mode after login (DESIGN §2): SMTP to the tenant's connector without upstream AUTH.
//!
//! Unlike auth mode this is not a blind pipe: every client command is read, so that MAIL FROM
//! can be checked against `allowed_senders` before anything reaches the connector, and every
//! upstream reply is read, so that the connector's known refusals get a fix hint in the log.
//! Commands go one at a time (PIPELINING and CHUNKING are not offered in relay mode); a message
//! body after `354` is streamed through while scanning for the terminating `CRLF . CRLF`, and is
//! forwarded unchanged.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;
use tracing::{info, warn};

use crate::config::Relay;
use crate::limits::Limits;
use crate::protocol::line::{Frame, LineFramer};
use crate::protocol::smtp::{Reply, ReplyParser, ReplyStep, write_reply};

const READ_CHUNK: usize = 16 * 1024;

/// How a relayed session ended.
#[derive(Debug)]
pub enum RelayEnd {
    ClientClosed,
    UpstreamClosed,
    Quit,
    Idle,
    Error(String),
}

/// A one-line fix for the connector's known refusals (FACTS.md).
pub fn connector_hint(reply: &Reply) -> Option<&'static str> {
    let text = reply.text();
    if text.contains("5.7.64") || text.contains("TenantAttribution") {
        Some(
            "the connector did not attribute this relay to your tenant: add an inbound connector in Exchange admin center (Mail flow > Connectors) for this host's public IP, or for the certificate name presented with client_cert/client_key",
        )
    } else if text.contains("5.7.68") {
        Some(
            "the tenant rejects Direct Send: mail must arrive through an inbound connector (IP or certificate based) — create one for this relay",
        )
    } else if text.contains("4.4.62") {
        Some(
            "the message looped back to the connector: check the connector's scope and that the recipient domain's MX does not route back here",
        )
    } else {
        None
    }
}

/// The address in `MAIL FROM:<addr> [params]` (RFC 5321 §4.1.1.2), lower-cased; `Some("")`
/// for the null sender `<>`; `None` when it cannot be parsed.
pub fn mail_from_address(line: &[u8]) -> Option<String> {
    let line = std::str::from_utf8(line).ok()?;
    if line.len() < 10 || !line[..10].eq_ignore_ascii_case("MAIL FROM:") {
        return None;
    }
    let rest = line[10..].trim_start();
    let addr = if let Some(r) = rest.strip_prefix('<') {
        &r[..r.find('>')?]
    } else {
        rest.split(' ').next()?
    };
    // Source routes (`@a,@b:user@d`) are obsolete; keep the mailbox.
    let addr = addr.rsplit(':').next().unwrap_or(addr);
    Some(addr.to_ascii_lowercase())
}

/// Finds the end of a DATA body: `CRLF . CRLF`, where the body start counts as a line start.
#[derive(Debug)]
struct DotScanner {
    /// 0 mid-line, 1 after CR, 2 at line start, 3 after "." at line start, 4 after ".CR".
    state: u8,
}

impl DotScanner {
    fn new() -> Self {
        DotScanner { state: 2 }
    }

    /// The number of bytes of `chunk` up to and including the terminator, if it is in there.
    fn feed(&mut self, chunk: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < chunk.len() {
            if self.state == 0 {
                match memchr::memchr(b'\r', &chunk[i..]) {
                    Some(p) => {
                        i += p + 1;
                        self.state = 1;
                        continue;
                    }
                    None => return None,
                }
            }
            let b = chunk[i];
            self.state = match (self.state, b) {
                (1, b'\n') => 2,
                (2, b'.') => 3,
                (3, b'\r') => 4,
                (4, b'\n') => return Some(i + 1),
                (_, b'\r') => 1,
                _ => 0,
            };
            i += 1;
        }
        None
    }
}

/// The relay's bounds, all from [`Limits`].
struct Bounds {
    line_max: usize,
    /// Client silence before the session is closed.
    idle: Duration,
    /// One write to the client.
    client_write: Duration,
    /// One write to the connector, and one connector reply.
    connector: Duration,
}

/// Relay the rest of the session. `client_input` holds client bytes not yet handled (e.g. the
/// MAIL FROM of an allow-listed client); `upstream_input` upstream bytes not yet read.
pub async fn relay<C, U>(
    client: C,
    client_input: BytesMut,
    upstream: U,
    upstream_input: BytesMut,
    settings: &Relay,
    limits: &Limits,
) -> RelayEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    match relay_loop(
        client,
        client_input,
        upstream,
        upstream_input,
        settings,
        limits,
    )
    .await
    {
        Ok(end) | Err(end) => end,
    }
}

async fn relay_loop<C, U>(
    mut client: C,
    mut client_input: BytesMut,
    mut upstream: U,
    mut upstream_input: BytesMut,
    settings: &Relay,
    limits: &Limits,
) -> Result<RelayEnd, RelayEnd>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let b = Bounds {
        line_max: limits.protocol.line_max,
        idle: limits.timeouts.pipe_idle,
        client_write: limits.timeouts.client_write,
        connector: limits.timeouts.relay_reply,
    };
    let mut framer = LineFramer::new(b.line_max);
    let mut replies = ReplyParser::new(16 * 1024, 100);
    loop {
        // The next client command.
        let line = loop {
            match framer.next(&mut client_input) {
                Frame::Line(l) => break l,
                Frame::TooLong => {
                    send(&mut client, b"500 5.5.6 Line too long\r\n", b.client_write).await?;
                }
                Frame::Incomplete => {
                    client_input.reserve(READ_CHUNK);
                    match timeout(b.idle, client.read_buf(&mut client_input)).await {
                        Err(_) => {
                            let bye = b"421 4.4.2 Idle for too long, closing connection\r\n";
                            let _ = send(&mut client, bye, b.client_write).await;
                            return Ok(RelayEnd::Idle);
                        }
                        Ok(Ok(0)) => return Ok(RelayEnd::ClientClosed),
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Ok(RelayEnd::Error(e.to_string())),
                    }
                }
            }
        };
        let verb = line
            .split(|b| *b == b' ')
            .next()
            .unwrap_or(&[])
            .to_ascii_uppercase();
        let mut sender = None;
        let local_reply: Option<String> = match verb.as_slice() {
            b"MAIL" => match mail_from_address(&line) {
                None => Some("501 5.5.4 Syntax: MAIL FROM:<address>".into()),
                Some(s)
                    if !settings.sender_allowed(&s)
                        || (s.is_empty() && !settings.allowed_senders.is_empty()) =>
                {
                    warn!(sender = ?s, "relay refused a sender that is not in allowed_senders");
                    Some(format!(
                        "550 5.7.1 Sender <{s}> is not allowed to send through this relay"
                    ))
                }
                Some(s) => {
                    sender = Some(s);
                    None
                }
            },
            b"STARTTLS" => {
                Some("503 5.5.1 TLS is handled by this relay; STARTTLS not available now".into())
            }
            b"AUTH" => Some("503 5.5.1 Already authenticated".into()),
            b"BDAT" => Some("502 5.5.1 BDAT is not offered by this relay; use DATA".into()),
            _ => None,
        };
        if let Some(reply) = local_reply {
            send(
                &mut client,
                format!("{reply}\r\n").as_bytes(),
                b.client_write,
            )
            .await?;
            continue;
        }
        let mut cmd = Vec::with_capacity(line.len() + 2);
        cmd.extend_from_slice(&line);
        cmd.extend_from_slice(b"\r\n");
        send(&mut upstream, &cmd, b.connector)
            .await
            .map_err(connector_error)?;
        let reply = answer(
            &mut client,
            &mut upstream,
            &mut upstream_input,
            &mut replies,
            &b,
        )
        .await?;
        if let (Some(sender), 250) = (&sender, reply.code) {
            info!(sender = ?sender, "relaying a message");
        }
        match (verb.as_slice(), reply.code) {
            (b"QUIT", _) => return Ok(RelayEnd::Quit),
            (b"DATA", 354) => {
                stream_body(&mut client, &mut client_input, &mut upstream, &b).await?;
                let reply = answer(
                    &mut client,
                    &mut upstream,
                    &mut upstream_input,
                    &mut replies,
                    &b,
                )
                .await?;
                if reply.code == 250 {
                    info!("message relayed");
                }
            }
            _ => {}
        }
    }
}

/// Read the connector's reply and pass it to the client; if the connector is gone, tell the
/// client with a 421 first.
async fn answer<C, U>(
    client: &mut C,
    upstream: &mut U,
    upstream_input: &mut BytesMut,
    parser: &mut ReplyParser,
    b: &Bounds,
) -> Result<Reply, RelayEnd>
where
    C: AsyncWrite + Unpin,
    U: AsyncRead + Unpin,
{
    let reply = match read_reply(upstream, upstream_input, parser, b.connector).await {
        Ok(r) => r,
        Err(end) => {
            let bye = b"421 4.4.2 The connector closed the connection\r\n";
            let _ = send(client, bye, b.client_write).await;
            return Err(end);
        }
    };
    let mut out = Vec::with_capacity(128);
    write_reply(&mut out, reply.code, &reply.lines);
    send(client, &out, b.client_write).await?;
    Ok(reply)
}

/// Copy the message body from the client to the connector, up to and including `CRLF.CRLF`.
async fn stream_body<C, U>(
    client: &mut C,
    input: &mut BytesMut,
    upstream: &mut U,
    b: &Bounds,
) -> Result<(), RelayEnd>
where
    C: AsyncRead + Unpin,
    U: AsyncWrite + Unpin,
{
    let mut scanner = DotScanner::new();
    loop {
        if !input.is_empty() {
            let end = scanner.feed(input);
            let n = end.unwrap_or(input.len());
            let chunk = input.split_to(n);
            send(upstream, &chunk, b.connector)
                .await
                .map_err(connector_error)?;
            if end.is_some() {
                return Ok(());
            }
        }
        input.reserve(READ_CHUNK);
        match timeout(b.idle, client.read_buf(input)).await {
            Err(_) => return Err(RelayEnd::Idle),
            Ok(Ok(0)) => return Err(RelayEnd::ClientClosed),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(RelayEnd::Error(e.to_string())),
        }
    }
}

async fn read_reply<U: AsyncRead + Unpin>(
    upstream: &mut U,
    input: &mut BytesMut,
    parser: &mut ReplyParser,
    limit: Duration,
) -> Result<Reply, RelayEnd> {
    let read = async {
        loop {
            match parser.next(input) {
                ReplyStep::Reply(r) => return Ok(r),
                ReplyStep::Invalid(why) => {
                    return Err(RelayEnd::Error(format!(
                        "connector sent an invalid reply: {why}"
                    )));
                }
                ReplyStep::Incomplete => {
                    input.reserve(READ_CHUNK);
                    match upstream.read_buf(input).await {
                        Ok(0) => return Err(RelayEnd::UpstreamClosed),
                        Ok(_) => {}
                        Err(e) => return Err(RelayEnd::Error(format!("connector: {e}"))),
                    }
                }
            }
        }
    };
    let reply = timeout(limit, read)
        .await
        .map_err(|_| RelayEnd::Error("the connector did not answer in time".into()))??;
    if reply.code >= 400 {
        match connector_hint(&reply) {
            Some(hint) => {
                warn!(code = reply.code, reply = %reply.text(), hint, "connector refused")
            }
            None => info!(code = reply.code, reply = %reply.text(), "connector refused"),
        }
    }
    Ok(reply)
}

fn connector_error(end: RelayEnd) -> RelayEnd {
    match end {
        RelayEnd::Error(e) => RelayEnd::Error(format!("connector: {e}")),
        other => other,
    }
}

/// Write and flush within `limit`: a peer that stops reading cannot hold the session.
async fn send<S: AsyncWrite + Unpin>(
    s: &mut S,
    bytes: &[u8],
    limit: Duration,
) -> Result<(), RelayEnd> {
    let write = async {
        s.write_all(bytes).await?;
        s.flush().await
    };
    match timeout(limit, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(RelayEnd::Error(e.to_string())),
        Err(_) => Err(RelayEnd::Error(format!(
            "a write did not complete within {limit:?}"
        ))),
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
                up_proxy,
                upstream_input,
                &open_relay(),
                &quick_limits(),
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
                up_proxy,
                upstream_input,
                &open_relay(),
                &quick_limits(),
            ),
        )
        .await
        .expect("the relay must not hang on a client that stops reading");
        assert!(
            matches!(end, RelayEnd::Error(ref e) if e.contains("within")),
            "{end:?}"
        );
    }

    #[test]
    fn mail_from_forms() {
        assert_eq!(
            mail_from_address(b"MAIL FROM:<Tickets@Contoso.com> SIZE=10").as_deref(),
            Some("tickets@contoso.com")
        );
        assert_eq!(
            mail_from_address(b"mail from: <a@b.c>").as_deref(),
            Some("a@b.c")
        );
        assert_eq!(mail_from_address(b"MAIL FROM:<>").as_deref(), Some(""));
        assert_eq!(
            mail_from_address(b"MAIL FROM:a@b.c BODY=8BITMIME").as_deref(),
            Some("a@b.c")
        );
        assert_eq!(
            mail_from_address(b"MAIL FROM:<@x,@y:u@d.e>").as_deref(),
            Some("u@d.e")
        );
        assert_eq!(mail_from_address(b"MAIL FROM:<a@b"), None);
        assert_eq!(mail_from_address(b"MAIL TO:<a@b>"), None);
        assert_eq!(mail_from_address(b"MAIL"), None);
    }

    #[test]
    fn dot_scanner_in_any_chunking() {
        let body = b"Subject: x\r\n\r\n..stuffed\r\nlast\r\n.\r\nQUIT\r\n";
        let end = body.len() - 6;
        for split in 0..body.len() {
            let mut s = DotScanner::new();
            let (a, b) = body.split_at(split);
            let got = match s.feed(a) {
                Some(n) => n,
                None => split + s.feed(b).expect("terminator found"),
            };
            assert_eq!(got, end, "split at {split}");
        }
        // An empty body is just ".\r\n".
        assert_eq!(DotScanner::new().feed(b".\r\n"), Some(3));
        // A dot inside a line is not a terminator.
        assert_eq!(DotScanner::new().feed(b"a.\r\nb\r\n.x\r\n"), None);
    }

    #[test]
    fn hints() {
        let r = |t: &str| Reply {
            code: 550,
            lines: vec![t.into()],
        };
        assert!(
            connector_hint(&r("5.7.64 TenantAttribution; Relay Access Denied"))
                .unwrap()
                .contains("connector")
        );
        assert!(
            connector_hint(&r("5.7.68 Direct Send rejected"))
                .unwrap()
                .contains("Direct Send")
        );
        assert!(connector_hint(&r("4.4.62 Mail sent to the wrong Office 365 region")).is_some());
        assert!(connector_hint(&r("5.1.1 unknown user")).is_none());
    }
}
