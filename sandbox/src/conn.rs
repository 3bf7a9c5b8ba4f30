//! One client connection of a fake mail server: a plain or TLS stream, a bounded read buffer that
//! yields CRLF lines and exact byte counts, and an output buffer flushed before every read (so
//! pipelined commands get their replies in order, in few writes).
//!
//! Invariants: a line never exceeds the caller's cap (longer lines are drained and reported as
//! [`Line::TooLong`]); every read waits at most `idle` before the session ends with `TimedOut`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Time a TLS handshake may take.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Above this size, payloads are written straight to the socket instead of being buffered.
const DIRECT_WRITE: usize = 64 * 1024;

pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Closed,
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Closed => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }
}

/// Result of reading one line.
pub(crate) enum Line {
    /// The line without its CRLF (or bare LF).
    Text(BytesMut),
    /// The line was longer than the cap; it has been consumed and dropped.
    TooLong,
    /// The peer closed the connection.
    Eof,
}

pub(crate) struct Conn {
    stream: Stream,
    rbuf: BytesMut,
    /// How far `rbuf` is known to hold no LF.
    scanned: usize,
    wbuf: Vec<u8>,
    idle: Duration,
    /// Something was written since the last read from the socket.
    answered: bool,
    /// Reads from the socket that followed an answer: the client's round trips.
    turns: u32,
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
}

impl Conn {
    pub(crate) fn new(stream: Stream, idle: Duration) -> Conn {
        Conn {
            stream,
            rbuf: BytesMut::with_capacity(8 * 1024),
            scanned: 0,
            wbuf: Vec::with_capacity(4 * 1024),
            idle,
            answered: false,
            turns: 0,
        }
    }

    /// Accept TLS on a fresh TCP connection (implicit-TLS ports).
    pub(crate) async fn accept_tls(
        tcp: TcpStream,
        acceptor: &TlsAcceptor,
        idle: Duration,
    ) -> io::Result<Conn> {
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
            .await
            .map_err(|_| timed_out("TLS handshake"))??;
        Ok(Conn::new(Stream::Tls(Box::new(tls)), idle))
    }

    pub(crate) fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// The certificate chain the TLS peer sent (leaf first), if any.
    pub(crate) fn peer_certificates(&self) -> Option<Vec<CertificateDer<'static>>> {
        match &self.stream {
            Stream::Tls(s) => s
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| c.iter().map(|d| d.clone().into_owned()).collect()),
            _ => None,
        }
    }

    /// Upgrade to TLS after the "go ahead" reply was queued: flushes it, then handshakes.
    /// Input buffered in plaintext is discarded.
    pub(crate) async fn starttls(&mut self, acceptor: &TlsAcceptor) -> io::Result<()> {
        self.flush().await?;
        self.rbuf.clear();
        self.scanned = 0;
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            return Err(io::Error::other("STARTTLS on a stream that is not plain"));
        };
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
            .await
            .map_err(|_| timed_out("TLS handshake"))??;
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }

    /// Queue bytes for the peer.
    pub(crate) fn send(&mut self, data: &[u8]) {
        self.wbuf.extend_from_slice(data);
    }

    /// Queue a large payload: written directly, without copying it into the output buffer.
    pub(crate) async fn send_bytes(&mut self, data: &[u8]) -> io::Result<()> {
        if data.len() < DIRECT_WRITE {
            self.send(data);
            return Ok(());
        }
        self.write_pending().await?;
        self.answered = true;
        let idle = self.idle;
        tokio::time::timeout(idle, self.stream.write_all(data))
            .await
            .map_err(|_| timed_out("write"))?
    }

    /// How many times this connection waited for the client after answering it.
    pub(crate) fn turns(&self) -> u32 {
        self.turns
    }

    async fn write_pending(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            self.answered = true;
            let idle = self.idle;
            let res = tokio::time::timeout(idle, self.stream.write_all(&self.wbuf)).await;
            self.wbuf.clear();
            res.map_err(|_| timed_out("write"))??;
        }
        Ok(())
    }

    /// Write everything queued and flush the stream.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        self.write_pending().await?;
        let idle = self.idle;
        tokio::time::timeout(idle, self.stream.flush())
            .await
            .map_err(|_| timed_out("flush"))?
    }

    /// Read more input into the buffer (flushing queued output first). Returns false on EOF.
    async fn fill(&mut self, timeout: Duration) -> io::Result<bool> {
        self.flush().await?;
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(16 * 1024);
        }
        let n = tokio::time::timeout(timeout, self.stream.read_buf(&mut self.rbuf))
            .await
            .map_err(|_| timed_out("read"))??;
        if n > 0 && std::mem::take(&mut self.answered) {
            self.turns = self.turns.saturating_add(1);
        }
        Ok(n > 0)
    }

    /// Read one line of at most `max` bytes (CRLF excluded).
    pub(crate) async fn read_line(&mut self, max: usize) -> io::Result<Line> {
        let idle = self.idle;
        self.read_line_within(max, idle).await
    }

    /// Like [`Conn::read_line`] with an explicit wait limit (e.g. IDLE).
    pub(crate) async fn read_line_within(
        &mut self,
        max: usize,
        timeout: Duration,
    ) -> io::Result<Line> {
        let mut discarding = false;
        loop {
            if let Some(pos) = self.rbuf[self.scanned..].iter().position(|&b| b == b'\n') {
                let end = self.scanned + pos;
                let mut line = self.rbuf.split_to(end + 1);
                self.scanned = 0;
                if discarding {
                    return Ok(Line::TooLong);
                }
                line.truncate(end);
                if line.last() == Some(&b'\r') {
                    line.truncate(end - 1);
                }
                if line.len() > max {
                    return Ok(Line::TooLong);
                }
                return Ok(Line::Text(line));
            }
            self.scanned = self.rbuf.len();
            if self.rbuf.len() > max + 1 {
                // Drop what we have; keep dropping until the end of this line.
                discarding = true;
                self.rbuf.clear();
                self.scanned = 0;
            }
            if !self.fill(timeout).await? {
                return Ok(Line::Eof);
            }
        }
    }

    /// Read exactly `n` bytes (an IMAP literal, an SMTP BDAT chunk) into a new buffer.
    pub(crate) async fn read_exact_bytes(&mut self, n: usize) -> io::Result<Bytes> {
        let mut out = Vec::with_capacity(n);
        self.read_exact_into(n, &mut out).await?;
        Ok(Bytes::from(out))
    }

    /// Append exactly `n` bytes of input to `out`.
    pub(crate) async fn read_exact_into(&mut self, n: usize, out: &mut Vec<u8>) -> io::Result<()> {
        let mut left = n;
        let idle = self.idle;
        loop {
            let take = left.min(self.rbuf.len());
            out.extend_from_slice(&self.rbuf[..take]);
            self.rbuf.advance(take);
            self.scanned = 0;
            left -= take;
            if left == 0 {
                return Ok(());
            }
            if !self.fill(idle).await? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Flush and close the write side; errors are irrelevant at that point.
    pub(crate) async fn close(mut self) {
        let _ = self.flush().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.stream.shutdown()).await;
    }
}
