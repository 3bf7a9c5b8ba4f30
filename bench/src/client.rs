//! The mail client side of the benchmark: one connection (plain or TLS, STARTTLS-capable), a
//! small line reader, and the login / transfer dialogues of each system under test.
//!
//! The dialogues are what real clients send: for the proxies, the legacy login GLPI uses
//! (SMTP `EHLO` + `AUTH LOGIN`, IMAP `LOGIN`); for "direct", the shortest XOAUTH2 login a
//! client can do against Exchange (SMTP `EHLO`/`STARTTLS`/`EHLO`/`AUTH XOAUTH2 <ir>`, IMAP
//! implicit TLS + `AUTHENTICATE XOAUTH2 <ir>`).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Longest reply line accepted.
const LINE_MAX: usize = 64 * 1024;

pub fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Gone,
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
            Stream::Gone => Poll::Ready(Ok(())),
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
            Stream::Gone => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// TLS towards the sandbox: one shared config (so TLS session resumption works as it does for
/// authbridge's upstream config) and the name its certificate carries.
#[derive(Clone)]
pub struct Tls {
    pub connector: TlsConnector,
    pub name: ServerName<'static>,
}

impl Tls {
    pub fn new(ca_pem: &str) -> io::Result<Tls> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            let c = c.map_err(|e| err(format!("bad CA PEM: {e}")))?;
            roots.add(c).map_err(|e| err(format!("bad CA: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| err(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Tls {
            connector: TlsConnector::from(Arc::new(config)),
            name: ServerName::try_from("localhost").expect("valid name"),
        })
    }
}

/// One client connection with a read buffer.
pub struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    pos: usize,
    tag: u32,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        Ok(Conn {
            stream: Stream::Plain(tcp),
            buf: Vec::new(),
            pos: 0,
            tag: 0,
        })
    }

    pub async fn start_tls(&mut self, tls: &Tls) -> io::Result<()> {
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err(err("TLS already started"));
        };
        if self.pos < self.buf.len() {
            return Err(err("server sent data before the TLS handshake"));
        }
        let s = tls.connector.connect(tls.name.clone(), tcp).await?;
        self.stream = Stream::Tls(Box::new(s));
        Ok(())
    }

    pub fn next_tag(&mut self) -> String {
        self.tag += 1;
        format!("b{}", self.tag)
    }

    pub async fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(data).await?;
        self.stream.flush().await
    }

    async fn fill(&mut self) -> io::Result<()> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        if self.buf.capacity() - self.buf.len() < 2048 {
            self.buf.reserve(8192);
        }
        let n = self.stream.read_buf(&mut self.buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    /// One line without its CRLF.
    pub async fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = self.buf[self.pos..].iter().position(|&b| b == b'\n') {
                let end = self.pos + i;
                let mut l = &self.buf[self.pos..end];
                if l.last() == Some(&b'\r') {
                    l = &l[..l.len() - 1];
                }
                let s = String::from_utf8_lossy(l).into_owned();
                self.pos = end + 1;
                if self.pos == self.buf.len() {
                    self.buf.clear();
                    self.pos = 0;
                    if self.buf.capacity() > 64 * 1024 {
                        self.buf.shrink_to(4096);
                    }
                }
                return Ok(s);
            }
            if self.buf.len() - self.pos > LINE_MAX {
                return Err(err("reply line too long"));
            }
            if self.pos > 0 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            self.fill().await?;
        }
    }

    /// Read and drop exactly `n` bytes; returns `n`.
    pub async fn skip(&mut self, n: u64) -> io::Result<u64> {
        let mut left = n;
        let buffered = (self.buf.len() - self.pos) as u64;
        let take = buffered.min(left);
        self.pos += take as usize;
        left -= take;
        let mut scratch = vec![0u8; 256 * 1024];
        while left > 0 {
            let want = (scratch.len() as u64).min(left) as usize;
            let got = self.stream.read(&mut scratch[..want]).await?;
            if got == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            left -= got as u64;
        }
        Ok(n)
    }

    /// An SMTP reply (all its lines); checks the code.
    pub async fn smtp_reply(&mut self, want: &str) -> io::Result<String> {
        loop {
            let l = self.line().await?;
            if l.len() < 4 || l.as_bytes()[3] != b'-' {
                if !l.starts_with(want) {
                    return Err(err(format!("expected {want}, got {l:?}")));
                }
                return Ok(l);
            }
        }
    }

    /// Lines up to the tagged reply of `tag`; it must be OK.
    pub async fn imap_tagged(&mut self, tag: &str) -> io::Result<()> {
        let ok = format!("{tag} OK");
        let prefix = format!("{tag} ");
        loop {
            let l = self.line().await?;
            if l.starts_with(&ok) {
                return Ok(());
            }
            if l.starts_with(&prefix) {
                return Err(err(format!("IMAP command failed: {l:?}")));
            }
        }
    }

    pub async fn imap_greeting(&mut self) -> io::Result<()> {
        let g = self.line().await?;
        if !g.starts_with("* OK") {
            return Err(err(format!("bad IMAP greeting {g:?}")));
        }
        Ok(())
    }

    pub async fn imap_cmd(&mut self, cmd: &str) -> io::Result<()> {
        let tag = self.next_tag();
        self.send(format!("{tag} {cmd}\r\n").as_bytes()).await?;
        self.imap_tagged(&tag).await
    }

    pub async fn noop(&mut self) -> io::Result<()> {
        self.imap_cmd("NOOP").await
    }

    /// `FETCH seq BODY.PEEK[]`: returns the literal bytes received.
    pub async fn fetch_body(&mut self, seq: u32) -> io::Result<u64> {
        let tag = self.next_tag();
        self.send(format!("{tag} FETCH {seq} BODY.PEEK[]\r\n").as_bytes())
            .await?;
        let mut total = 0;
        let prefix = format!("{tag} ");
        loop {
            let l = self.line().await?;
            if let Some(n) = literal_len(&l) {
                total += self.skip(n).await?;
                continue;
            }
            if l.starts_with(&prefix) {
                if !l[prefix.len()..].starts_with("OK") {
                    return Err(err(format!("FETCH failed: {l:?}")));
                }
                return Ok(total);
            }
        }
    }

    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_millis(200), self.stream.shutdown()).await;
    }
}

fn literal_len(line: &str) -> Option<u64> {
    let l = line.strip_suffix('}')?;
    let open = l.rfind('{')?;
    l[open + 1..].trim_end_matches('+').parse().ok()
}

/// Which system a connection goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum System {
    Direct,
    /// The direct client through a process that only copies bytes: what any proxy costs at least.
    Relay,
    Authbridge,
    EmailProxy,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Direct => "direct",
            System::Relay => "relay",
            System::Authbridge => "authbridge",
            System::EmailProxy => "email-oauth2-proxy",
        }
    }

    /// The client itself does TLS and XOAUTH2 (no local login).
    pub fn is_direct(self) -> bool {
        matches!(self, System::Direct | System::Relay)
    }
}

/// Where and how to log in to one system.
#[derive(Clone)]
pub struct Target {
    pub system: System,
    pub smtp: SocketAddr,
    pub imap: SocketAddr,
    /// Local login (proxies).
    pub user: String,
    pub pass: String,
    /// Direct: TLS to the sandbox, the mailbox and a token.
    pub tls: Option<Tls>,
    pub mailbox: String,
    pub token: String,
}

impl Target {
    fn xoauth2(&self) -> String {
        B64.encode(format!(
            "user={}\x01auth=Bearer {}\x01\x01",
            self.mailbox, self.token
        ))
    }

    fn tls(&self) -> io::Result<&Tls> {
        self.tls
            .as_ref()
            .ok_or_else(|| err("direct target without TLS"))
    }

    /// Connect and log in over SMTP; the session is ready for MAIL FROM.
    pub async fn smtp_login(&self) -> io::Result<Conn> {
        let mut c = Conn::connect(self.smtp).await?;
        c.smtp_reply("220").await?;
        c.send(b"EHLO bench.example\r\n").await?;
        c.smtp_reply("250").await?;
        if self.system.is_direct() {
            c.send(b"STARTTLS\r\n").await?;
            c.smtp_reply("220").await?;
            c.start_tls(self.tls()?).await?;
            c.send(b"EHLO bench.example\r\n").await?;
            c.smtp_reply("250").await?;
            c.send(format!("AUTH XOAUTH2 {}\r\n", self.xoauth2()).as_bytes())
                .await?;
            c.smtp_reply("235").await?;
        } else {
            c.send(b"AUTH LOGIN\r\n").await?;
            c.smtp_reply("334").await?;
            c.send(format!("{}\r\n", B64.encode(&self.user)).as_bytes())
                .await?;
            c.smtp_reply("334").await?;
            c.send(format!("{}\r\n", B64.encode(&self.pass)).as_bytes())
                .await?;
            c.smtp_reply("235").await?;
        }
        Ok(c)
    }

    /// Connect and log in over IMAP; the session is authenticated.
    pub async fn imap_login(&self) -> io::Result<Conn> {
        let mut c = Conn::connect(self.imap).await?;
        if self.system.is_direct() {
            c.start_tls(self.tls()?).await?;
            c.imap_greeting().await?;
            let tag = c.next_tag();
            c.send(format!("{tag} AUTHENTICATE XOAUTH2 {}\r\n", self.xoauth2()).as_bytes())
                .await?;
            c.imap_tagged(&tag).await?;
        } else {
            c.imap_greeting().await?;
            let tag = c.next_tag();
            c.send(
                format!(
                    "{tag} LOGIN {} {}\r\n",
                    quote(&self.user),
                    quote(&self.pass)
                )
                .as_bytes(),
            )
            .await?;
            c.imap_tagged(&tag).await?;
        }
        Ok(c)
    }

    pub async fn login(&self, proto: Proto) -> io::Result<Conn> {
        match proto {
            Proto::Smtp => self.smtp_login().await,
            Proto::Imap => self.imap_login().await,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Smtp,
    Imap,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Smtp => "SMTP AUTH LOGIN",
            Proto::Imap => "IMAP LOGIN",
        }
    }

    /// Lower-case protocol name (file names, figure keys).
    pub fn short(self) -> &'static str {
        match self {
            Proto::Smtp => "smtp",
            Proto::Imap => "imap",
        }
    }
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Time one full login (connect → greeting → login → OK), then leave politely.
pub async fn timed_login(t: &Target, proto: Proto) -> io::Result<Duration> {
    let start = Instant::now();
    let mut c = t.login(proto).await?;
    let took = start.elapsed();
    let bye: &[u8] = match proto {
        Proto::Smtp => b"QUIT\r\n",
        Proto::Imap => b"z LOGOUT\r\n",
    };
    let _ = c.send(bye).await;
    c.close().await;
    Ok(took)
}

/// A message of about `size` bytes: headers, then 76-character lines of pseudo-random base64
/// text (no line starts with a dot). CRLF line ends, no terminating dot.
pub fn message(size: usize, from: &str, to: &str, subject: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(size + 1024);
    m.extend_from_slice(
        format!(
            "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@bench.example>\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        )
        .as_bytes(),
    );
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while m.len() + 78 <= size {
        for _ in 0..76 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            m.push(ALPHABET[(x & 63) as usize]);
        }
        m.extend_from_slice(b"\r\n");
    }
    m
}

/// Send one message in a logged-in SMTP session (MAIL, RCPT, DATA). Returns the DATA bytes.
pub async fn smtp_send(c: &mut Conn, from: &str, to: &str, body: &[u8]) -> io::Result<u64> {
    c.send(format!("MAIL FROM:<{from}>\r\n").as_bytes()).await?;
    c.smtp_reply("250").await?;
    c.send(format!("RCPT TO:<{to}>\r\n").as_bytes()).await?;
    c.smtp_reply("250").await?;
    c.send(b"DATA\r\n").await?;
    c.smtp_reply("354").await?;
    c.stream.write_all(body).await?;
    c.send(b".\r\n").await?;
    c.smtp_reply("250").await?;
    Ok(body.len() as u64)
}

/// `authbridge-bench relay [--delay-ms D] LISTEN=UPSTREAM...`: accept on each LISTEN address
/// and copy bytes to and from a new connection to its UPSTREAM, nothing else: with D = 0 a
/// stand-in for the cheapest possible proxy (in its own process, like a real one); with D > 0
/// every chunk is held D ms in each direction, emulating a wide-area round trip of 2·D ms
/// (connection setup included) without limiting bandwidth.
pub async fn relay(pairs: Vec<(SocketAddr, SocketAddr)>, delay: Duration) -> io::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for (listen, upstream) in pairs {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(listen)?;
        let l = socket.listen(4096)?;
        tasks.spawn(async move {
            loop {
                let Ok((c, _)) = l.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let _ = c.set_nodelay(true);
                    if delay.is_zero() {
                        let Ok(mut u) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        let _ = u.set_nodelay(true);
                        let mut c = c;
                        let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                        return;
                    }
                    let (cr, cw) = c.into_split();
                    let (to_up, from_client) = tokio::sync::mpsc::unbounded_channel();
                    let upstream_side = async move {
                        // The local connect completes at once; over a WAN the server sees the
                        // handshake's last ACK (and can greet, or read a ClientHello) 1.5
                        // round trips after the SYN. What the client sends meanwhile waits.
                        tokio::time::sleep(delay * 3).await;
                        let Ok(u) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        let _ = u.set_nodelay(true);
                        let (ur, uw) = u.into_split();
                        let (to_client, from_up) = tokio::sync::mpsc::unbounded_channel();
                        tokio::join!(
                            pump_out(from_client, uw),
                            pump_in(ur, to_client, delay),
                            pump_out(from_up, cw),
                        );
                    };
                    tokio::join!(pump_in(cr, to_up, delay), upstream_side);
                });
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

type Chunk = (tokio::time::Instant, Vec<u8>);

/// Read chunks and queue each with the time it may be written (`delay` after it was read).
async fn pump_in(
    mut r: tokio::net::tcp::OwnedReadHalf,
    tx: tokio::sync::mpsc::UnboundedSender<Chunk>,
    delay: Duration,
) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0
            || tx
                .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
        {
            break;
        }
    }
}

/// Write queued chunks when due, in order; shut the write side down after the last one.
async fn pump_out(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Chunk>,
    mut w: tokio::net::tcp::OwnedWriteHalf,
) {
    while let Some((due, chunk)) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        if w.write_all(&chunk).await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals() {
        assert_eq!(literal_len("* 1 FETCH (BODY[] {123}"), Some(123));
        assert_eq!(literal_len("* 1 FETCH (BODY[] {12+}"), Some(12));
        assert_eq!(literal_len("b3 OK FETCH completed."), None);
    }

    #[test]
    fn messages() {
        let m = message(10_000, "a@b", "c@d", "s");
        assert!(m.len() <= 10_000 && m.len() > 9_800);
        assert!(!m.windows(3).any(|w| w == b"\n.\r" || w == b"\n.."));
        assert!(m.ends_with(b"\r\n"));
    }
}
