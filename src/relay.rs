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
use crate::protocol::line::{Frame, LineFramer};
use crate::protocol::smtp::{Reply, ReplyParser, ReplyStep};

/// Longest client command line in relay mode (RFC 5321 allows 512; extensions add more).
const COMMAND_LINE_MAX: usize = 4096;
/// How long the connector may take to answer a command or a whole message (RFC 5321 §4.5.3.2
/// suggests up to 10 minutes after DATA; 5 is plenty for Exchange).
const UPSTREAM_REPLY_TIMEOUT: Duration = Duration::from_secs(300);
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

/// Relay the rest of the session. `client_input` holds client bytes not yet handled (e.g. the
/// MAIL FROM of an allow-listed client); `upstream_input` upstream bytes not yet read.
pub async fn relay<C, U>(
    mut client: C,
    mut client_input: BytesMut,
    mut upstream: U,
    mut upstream_input: BytesMut,
    settings: &Relay,
    idle: Duration,
) -> RelayEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut framer = LineFramer::new(COMMAND_LINE_MAX);
    let mut replies = ReplyParser::new(16 * 1024, 100);
    let mut out = Vec::with_capacity(512);
    loop {
        // The next client command.
        let line = loop {
            match framer.next(&mut client_input) {
                Frame::Line(l) => break l,
                Frame::TooLong => {
                    if let Err(e) = send(&mut client, b"500 5.5.6 Line too long\r\n").await {
                        return RelayEnd::Error(e);
                    }
                }
                Frame::Incomplete => {
                    client_input.reserve(READ_CHUNK);
                    match timeout(idle, client.read_buf(&mut client_input)).await {
                        Err(_) => {
                            let _ = send(
                                &mut client,
                                b"421 4.4.2 Idle for too long, closing connection\r\n",
                            )
                            .await;
                            return RelayEnd::Idle;
                        }
                        Ok(Ok(0)) => return RelayEnd::ClientClosed,
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return RelayEnd::Error(e.to_string()),
                    }
                }
            }
        };
        let verb = line
            .split(|b| *b == b' ')
            .next()
            .unwrap_or(&[])
            .to_ascii_uppercase();
        let local_reply: Option<String> = match verb.as_slice() {
            b"MAIL" => match mail_from_address(&line) {
                None => Some("501 5.5.4 Syntax: MAIL FROM:<address>".into()),
                Some(sender)
                    if !settings.sender_allowed(&sender)
                        || (sender.is_empty() && !settings.allowed_senders.is_empty()) =>
                {
                    warn!(sender = ?sender, "relay refused a sender that is not in allowed_senders");
                    Some(format!(
                        "550 5.7.1 Sender <{sender}> is not allowed to send through this relay"
                    ))
                }
                Some(_) => None,
            },
            b"STARTTLS" => {
                Some("503 5.5.1 TLS is handled by this relay; STARTTLS not available now".into())
            }
            b"AUTH" => Some("503 5.5.1 Already authenticated".into()),
            b"BDAT" => Some("502 5.5.1 BDAT is not offered by this relay; use DATA".into()),
            _ => None,
        };
        if let Some(reply) = local_reply {
            if let Err(e) = send(&mut client, format!("{reply}\r\n").as_bytes()).await {
                return RelayEnd::Error(e);
            }
            continue;
        }
        let mut cmd = Vec::with_capacity(line.len() + 2);
        cmd.extend_from_slice(&line);
        cmd.extend_from_slice(b"\r\n");
        if let Err(e) = send(&mut upstream, &cmd).await {
            return RelayEnd::Error(format!("connector: {e}"));
        }
        let reply = match read_reply(&mut upstream, &mut upstream_input, &mut replies).await {
            Ok(r) => r,
            Err(end) => {
                let _ = send(
                    &mut client,
                    b"421 4.4.2 The connector closed the connection\r\n",
                )
                .await;
                return end;
            }
        };
        forward_reply(&reply, &mut out);
        if let Err(e) = send(&mut client, &out).await {
            return RelayEnd::Error(e);
        }
        if verb.as_slice() == b"MAIL" && reply.code == 250 {
            info!(sender = ?mail_from_address(&line).unwrap_or_default(), "relaying a message");
        }
        match (verb.as_slice(), reply.code) {
            (b"QUIT", _) => return RelayEnd::Quit,
            (b"DATA", 354) => {
                if let Err(end) =
                    stream_body(&mut client, &mut client_input, &mut upstream, idle).await
                {
                    return end;
                }
                let reply = match read_reply(&mut upstream, &mut upstream_input, &mut replies).await
                {
                    Ok(r) => r,
                    Err(end) => {
                        let _ = send(
                            &mut client,
                            b"421 4.4.2 The connector closed the connection\r\n",
                        )
                        .await;
                        return end;
                    }
                };
                if reply.code == 250 {
                    info!("message relayed");
                }
                forward_reply(&reply, &mut out);
                if let Err(e) = send(&mut client, &out).await {
                    return RelayEnd::Error(e);
                }
            }
            _ => {}
        }
    }
}

/// Copy the message body from the client to the connector, up to and including `CRLF.CRLF`.
async fn stream_body<C, U>(
    client: &mut C,
    input: &mut BytesMut,
    upstream: &mut U,
    idle: Duration,
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
            upstream
                .write_all(&chunk)
                .await
                .map_err(|e| RelayEnd::Error(format!("connector: {e}")))?;
            if end.is_some() {
                upstream
                    .flush()
                    .await
                    .map_err(|e| RelayEnd::Error(format!("connector: {e}")))?;
                return Ok(());
            }
        }
        input.reserve(READ_CHUNK);
        match timeout(idle, client.read_buf(input)).await {
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
    let reply = timeout(UPSTREAM_REPLY_TIMEOUT, read)
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

fn forward_reply(reply: &Reply, out: &mut Vec<u8>) {
    out.clear();
    for (i, line) in reply.lines.iter().enumerate() {
        let sep = if i + 1 == reply.lines.len() { ' ' } else { '-' };
        out.extend_from_slice(format!("{}{sep}{line}\r\n", reply.code).as_bytes());
    }
}

async fn send<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) -> Result<(), String> {
    s.write_all(bytes).await.map_err(|e| e.to_string())?;
    s.flush().await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

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
