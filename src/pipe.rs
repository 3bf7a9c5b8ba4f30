//! After login: forward what each side already sent, then copy bytes both ways until either side
//! closes or both are silent for the idle timeout. No per-line work happens here (except the
//! bounded watch over the first upstream replies, below); the cost per read is one clock read
//! and one atomic add that counts bytes.
//!
//! Closing is asymmetric. A client that half-closes (shuts down its write side after QUIT) still
//! gets the upstream's last replies: its EOF is passed on and the upstream→client direction goes
//! on. Once the upstream has closed and everything it sent has been written to the client (and
//! the client's write side shut down), the session is over: nothing more can come, so a client
//! that keeps its socket open does not hold the session (and a connection permit) until the idle
//! timeout.
//!
//! Buffers cost nothing while a session is quiet and grow under load
//! ([`crate::limits::pipe_buffers`]): a quiet direction waits on a read of at most
//! `FIRST_READ` bytes into room inside the session's task; its first data takes a `START`
//! buffer, every read that fills the buffer doubles it (up to `MAX`: fewer, larger writes, so
//! fewer wake-ups of the reader on the other side), and after `RELEASE_AFTER` without data both
//! buffers are given back and the next burst starts small again.
//!
//! With a [`FirstReplies`] watch (IMAP and POP3 logins), the upstream's first replies pass through
//! it: Exchange's "User is authenticated but not connected." is then replaced by the documented
//! temporary refusal and the session ends ([`PipeEnd::NotConnected`]).

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::limits::pipe_buffers::{FIRST_READ, MAX, RELEASE_AFTER, START};
use crate::protocol::first_replies::{FirstReplies, Verdict};

/// Why a pipe ended.
#[derive(Debug)]
pub enum PipeEnd {
    /// One side closed; bytes copied client→upstream and upstream→client.
    Closed { up: u64, down: u64 },
    /// Both sides were silent for the idle timeout.
    Idle,
    /// A read or write failed.
    Error(io::Error),
    /// The upstream refused the client's first command because the mailbox cannot be opened
    /// (its status text); the client got the temporary refusal and the session is over.
    NotConnected { upstream: String },
}

/// Forward the leftovers, then pipe `client` and `upstream` with an idle timeout.
pub async fn pipe<C, U>(
    client: C,
    upstream: U,
    client_leftover: &[u8],
    upstream_leftover: &[u8],
    idle: Duration,
) -> PipeEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let uncounted = (Counter::default(), Counter::default());
    pipe_counted(
        client,
        upstream,
        client_leftover,
        upstream_leftover,
        idle,
        uncounted,
    )
    .await
}

/// [`pipe`], adding the bytes read from each side to `counters` (client → upstream, upstream →
/// client) as they pass, so a long session shows in the metrics before it ends.
pub async fn pipe_counted<C, U>(
    client: C,
    upstream: U,
    client_leftover: &[u8],
    upstream_leftover: &[u8],
    idle: Duration,
    counters: (Counter, Counter),
) -> PipeEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    pipe_watched(
        client,
        upstream,
        client_leftover,
        upstream_leftover,
        idle,
        counters,
        None,
    )
    .await
}

/// What woke the pipe's loop.
enum Wake {
    Pipe(io::Result<()>),
    Tick,
    Release,
}

/// [`pipe_counted`], with the upstream's first replies passed through `watch`.
pub async fn pipe_watched<C, U>(
    mut client: C,
    mut upstream: U,
    client_leftover: &[u8],
    upstream_leftover: &[u8],
    idle: Duration,
    counters: (Counter, Counter),
    watch: Option<FirstReplies>,
) -> PipeEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (up_total, down_total) = counters;
    let mut up = Half::new(up_total, None);
    let mut down = Half::new(down_total, watch);
    up.preload(client_leftover);
    down.preload(upstream_leftover);
    let mut last = Instant::now();
    let check = (idle / 4).max(Duration::from_millis(100));
    let tick = tokio::time::sleep(check);
    tokio::pin!(tick);
    loop {
        let holding = up.holds() || down.holds();
        let release_at = last + RELEASE_AFTER;
        let wake = tokio::select! {
            r = poll_fn(|cx| poll_pipe(cx, &mut up, &mut down, &mut client, &mut upstream, &mut last)) => Wake::Pipe(r),
            _ = &mut tick => Wake::Tick,
            _ = tokio::time::sleep_until(release_at), if holding => Wake::Release,
        };
        match wake {
            Wake::Pipe(Err(e)) => return PipeEnd::Error(e),
            Wake::Pipe(Ok(())) => {
                if let Some(upstream) = down.refused.take() {
                    return PipeEnd::NotConnected { upstream };
                }
                return PipeEnd::Closed {
                    up: up.read,
                    down: down.read,
                };
            }
            Wake::Tick => {
                if last.elapsed() >= idle {
                    return PipeEnd::Idle;
                }
                tick.as_mut().reset(Instant::now() + check);
            }
            Wake::Release => {
                if last.elapsed() >= RELEASE_AFTER {
                    up.release();
                    down.release();
                }
            }
        }
    }
}

/// Both directions; ready when the upstream→client direction is over (the upstream closed and
/// all it sent reached the client, or the watch ended the session), or on an error.
fn poll_pipe<C, U>(
    cx: &mut Context<'_>,
    up: &mut Half,
    down: &mut Half,
    client: &mut C,
    upstream: &mut U,
    last: &mut Instant,
) -> Poll<io::Result<()>>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    if !up.done
        && let Poll::Ready(Err(e)) = up.poll_copy(
            cx,
            Pin::new(&mut *client),
            Pin::new(&mut *upstream),
            &mut *last,
        )
    {
        return Poll::Ready(Err(e));
    }
    if !down.done
        && let Poll::Ready(Err(e)) = down.poll_copy(
            cx,
            Pin::new(&mut *upstream),
            Pin::new(&mut *client),
            &mut *last,
        )
    {
        return Poll::Ready(Err(e));
    }
    if down.done {
        return Poll::Ready(Ok(()));
    }
    Poll::Pending
}

/// One direction of the pipe: its buffer (grown and released by the policy in the module
/// docs), the bytes waiting to be written, and its end.
struct Half {
    /// The copy buffer; empty (no allocation) while released.
    buf: Vec<u8>,
    /// Size of the next allocation.
    size: usize,
    /// The last read filled the buffer: a larger one is taken once its bytes are written.
    grow: bool,
    /// Room for a quiet direction's read (inside the session's task, not a heap buffer).
    first: [u8; FIRST_READ],
    /// Bytes to write are `buf[pos..end]`, or `watched[pos..end]` when `from_watch`.
    pos: usize,
    end: usize,
    watch: Option<FirstReplies>,
    watched: Vec<u8>,
    from_watch: bool,
    /// The watch saw the mailbox refused (the upstream's text): end after writing.
    refused: Option<String>,
    /// The reader reached EOF.
    eof: bool,
    /// Written since the last flush.
    flush: bool,
    /// EOF (or the refusal) passed on: the write side is shut down.
    done: bool,
    /// Bytes read, and the metrics counter of this direction.
    read: u64,
    total: Counter,
}

impl Half {
    fn new(total: Counter, watch: Option<FirstReplies>) -> Half {
        Half {
            buf: Vec::new(),
            size: START,
            grow: false,
            first: [0; FIRST_READ],
            pos: 0,
            end: 0,
            watch,
            watched: Vec::new(),
            from_watch: false,
            refused: None,
            eof: false,
            flush: false,
            done: false,
            read: 0,
            total,
        }
    }

    /// Whether this direction holds a copy buffer.
    fn holds(&self) -> bool {
        !self.buf.is_empty() || self.watched.capacity() > 0
    }

    /// Give the buffers back when nothing waits to be written; the next data starts small.
    fn release(&mut self) {
        if self.pos == self.end {
            self.buf = Vec::new();
            self.size = START;
            if self.watch.is_none() {
                self.watched = Vec::new();
            }
        }
    }

    /// Bytes the other side sent before the pipe started, as if just read.
    fn preload(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.buf = vec![0; bytes.len().max(self.size)];
        self.buf[..bytes.len()].copy_from_slice(bytes);
        self.took(bytes.len());
        // In the metrics, not in `PipeEnd::Closed`'s counts of what the pipe itself read.
        self.read = 0;
    }

    /// `n` bytes were read into `buf[..n]`: count them and pass them through the watch.
    fn took(&mut self, n: usize) {
        self.read = self.read.saturating_add(n as u64);
        self.total.inc_by(n as u64);
        self.pos = 0;
        self.end = n;
        self.from_watch = false;
        if let Some(w) = &mut self.watch {
            self.watched.clear();
            let verdict = w.feed(&self.buf[..n], &mut self.watched);
            self.from_watch = true;
            self.end = self.watched.len();
            match verdict {
                Verdict::Watching => {}
                Verdict::Done => self.watch = None,
                Verdict::NotConnected { upstream } => {
                    self.watch = None;
                    self.refused = Some(upstream);
                }
            }
        }
    }

    fn pending(&self) -> &[u8] {
        if self.from_watch {
            &self.watched[self.pos..self.end]
        } else {
            &self.buf[self.pos..self.end]
        }
    }

    /// Read what `r` has and write it to `w`, until `r` has nothing now (`Pending`) or this
    /// direction is over (`Ready(Ok)`, write side shut down).
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut r: Pin<&mut R>,
        mut w: Pin<&mut W>,
        last: &mut Instant,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if self.pos == self.end && !self.eof && self.refused.is_none() {
                let n = match self.poll_fill(cx, r.as_mut()) {
                    Poll::Pending => {
                        if self.flush {
                            ready!(w.as_mut().poll_flush(cx))?;
                            self.flush = false;
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(res) => res?,
                };
                if n == 0 {
                    self.eof = true;
                } else {
                    *last = Instant::now();
                    self.took(n);
                }
            }
            while self.pos < self.end {
                let i = ready!(w.as_mut().poll_write(cx, self.pending()))?;
                if i == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += i;
                self.flush = true;
            }
            // Everything read is written.
            self.pos = 0;
            self.end = 0;
            if self.from_watch && self.watch.is_none() {
                self.from_watch = false;
                self.watched = Vec::new();
            }
            if self.grow {
                self.grow = false;
                self.size = self.buf.len().saturating_mul(2).clamp(START, MAX);
                if self.size > self.buf.len() {
                    self.buf = vec![0; self.size];
                }
            }
            if self.eof || self.refused.is_some() {
                if self.flush {
                    ready!(w.as_mut().poll_flush(cx))?;
                    self.flush = false;
                }
                ready!(w.as_mut().poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// One read into the buffer: `Ready(Ok(0))` is EOF. A quiet direction (no buffer) reads
    /// into `first`; data there takes a buffer, and whatever else is already readable follows
    /// into it without waiting.
    fn poll_fill<R>(&mut self, cx: &mut Context<'_>, mut r: Pin<&mut R>) -> Poll<io::Result<usize>>
    where
        R: AsyncRead + ?Sized,
    {
        if !self.buf.is_empty() {
            let mut rb = ReadBuf::new(&mut self.buf);
            ready!(r.as_mut().poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            self.grow = n == self.buf.len() && n < MAX;
            return Poll::Ready(Ok(n));
        }
        let mut rb = ReadBuf::new(&mut self.first);
        ready!(r.as_mut().poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        if n == 0 {
            return Poll::Ready(Ok(0));
        }
        self.buf = vec![0; self.size];
        self.buf[..n].copy_from_slice(&self.first[..n]);
        let mut rb = ReadBuf::new(&mut self.buf[n..]);
        let more = match r.as_mut().poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let m = rb.filled().len();
                if m == 0 {
                    // EOF right after: pass the bytes on, then the EOF.
                    self.eof = true;
                }
                m
            }
            // The error comes again on the next read, after these bytes are written.
            Poll::Ready(Err(_)) | Poll::Pending => 0,
        };
        self.grow = n + more == self.buf.len() && self.buf.len() < MAX;
        Poll::Ready(Ok(n + more))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    #[tokio::test]
    async fn leftovers_first_then_both_ways_then_idle() {
        let (client_app, client_proxy) = duplex(1024);
        let (up_proxy, up_server) = duplex(1024);
        let task = tokio::spawn(async move {
            pipe(
                client_proxy,
                up_proxy,
                b"MAIL FROM:<a>\r\n",
                b"* 1 EXISTS\r\n",
                Duration::from_millis(300),
            )
            .await
        });
        let (mut ca, mut us) = (client_app, up_server);
        let mut buf = [0u8; 64];
        let n = us.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"MAIL FROM:<a>\r\n");
        let n = ca.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"* 1 EXISTS\r\n");
        us.write_all(b"250 ok\r\n").await.unwrap();
        let n = ca.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"250 ok\r\n");
        assert!(matches!(task.await.unwrap(), PipeEnd::Idle));
    }

    /// The upstream closes (after QUIT) while the client keeps its socket open: the client gets
    /// every byte, then EOF, and the pipe ends at once rather than at the idle timeout.
    #[tokio::test]
    async fn upstream_close_ends_the_pipe_even_if_the_client_stays() {
        let (client_app, client_proxy) = duplex(1024);
        let (up_proxy, mut up_server) = duplex(1024);
        let task = tokio::spawn(async move {
            pipe(
                client_proxy,
                up_proxy,
                b"QUIT\r\n",
                b"",
                Duration::from_secs(60),
            )
            .await
        });
        let mut buf = [0u8; 64];
        let n = up_server.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"QUIT\r\n");
        up_server.write_all(b"221 bye\r\n").await.unwrap();
        drop(up_server);
        let mut ca = client_app;
        let mut got = Vec::new();
        ca.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"221 bye\r\n");
        let end = tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("the pipe ends without waiting for the client")
            .unwrap();
        assert!(matches!(end, PipeEnd::Closed { up: 0, down: 9 }), "{end:?}");
        drop(ca);
    }

    /// A client that half-closes after QUIT still gets the upstream's reply.
    #[tokio::test]
    async fn client_half_close_still_gets_the_last_reply() {
        let (mut client_app, client_proxy) = duplex(1024);
        let (up_proxy, mut up_server) = duplex(1024);
        let task = tokio::spawn(async move {
            pipe(client_proxy, up_proxy, b"", b"", Duration::from_secs(60)).await
        });
        client_app.write_all(b"QUIT\r\n").await.unwrap();
        client_app.shutdown().await.unwrap();
        let mut got = Vec::new();
        up_server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"QUIT\r\n");
        up_server.write_all(b"221 bye\r\n").await.unwrap();
        drop(up_server);
        let mut reply = Vec::new();
        client_app.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"221 bye\r\n");
        assert!(matches!(
            task.await.unwrap(),
            PipeEnd::Closed { up: 6, down: 9 }
        ));
    }

    /// A reader that has `left` bytes, then stays quiet (`Pending`) until `eof`.
    struct Source {
        left: usize,
        eof: bool,
        reads: Vec<usize>,
    }

    impl AsyncRead for Source {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.left == 0 {
                return if self.eof {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Pending
                };
            }
            let n = self.left.min(buf.remaining());
            buf.put_slice(&vec![b'x'; n]);
            self.left -= n;
            self.reads.push(n);
            Poll::Ready(Ok(()))
        }
    }

    fn copy_once(half: &mut Half, src: &mut Source, dst: &mut Vec<u8>) -> Poll<io::Result<()>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut last = Instant::now();
        half.poll_copy(&mut cx, Pin::new(src), Pin::new(dst), &mut last)
    }

    /// Quiet: no buffer. Data: START, doubled on every full read up to MAX (capped), then
    /// released back to nothing; the next burst starts at START again.
    #[tokio::test]
    async fn buffers_grow_on_full_reads_up_to_the_cap_and_are_released() {
        let mut half = Half::new(Counter::default(), None);
        let mut out = Vec::new();
        let mut quiet = Source {
            left: 0,
            eof: false,
            reads: Vec::new(),
        };
        assert!(copy_once(&mut half, &mut quiet, &mut out).is_pending());
        assert!(!half.holds(), "a quiet direction holds no buffer");

        let total = 4 << 20;
        let mut busy = Source {
            left: total,
            eof: false,
            reads: Vec::new(),
        };
        assert!(copy_once(&mut half, &mut busy, &mut out).is_pending());
        assert_eq!(out.len(), total);
        // The first read is the small one, the rest fill a growing buffer.
        assert_eq!(busy.reads[0], FIRST_READ);
        assert_eq!(busy.reads[1], START - FIRST_READ);
        let mut want = Vec::new();
        let mut size = START * 2;
        while want.len() < 8 {
            want.push(size.min(MAX));
            size *= 2;
        }
        assert_eq!(
            &busy.reads[2..10],
            want.as_slice(),
            "doubling up to the cap"
        );
        assert!(want.ends_with(&[MAX, MAX]));
        assert!(busy.reads.iter().all(|n| *n <= MAX), "capped");
        assert_eq!(half.buf.len(), MAX);
        assert_eq!(half.read, total as u64);

        half.release();
        assert!(!half.holds(), "released after the quiet period");
        let mut again = Source {
            left: 100_000,
            eof: true,
            reads: Vec::new(),
        };
        assert!(copy_once(&mut half, &mut again, &mut out).is_ready());
        assert_eq!(again.reads[1], START - FIRST_READ, "starts small again");
        assert!(half.done);
    }

    /// A short burst never grows the buffer.
    #[tokio::test]
    async fn partial_reads_do_not_grow() {
        let mut half = Half::new(Counter::default(), None);
        let mut out = Vec::new();
        let mut src = Source {
            left: START - 1,
            eof: false,
            reads: Vec::new(),
        };
        assert!(copy_once(&mut half, &mut src, &mut out).is_pending());
        assert_eq!(half.buf.len(), START);
    }

    /// The pipe releases both buffers after a quiet period, and data flows on afterwards.
    #[tokio::test]
    async fn a_quiet_session_gives_its_buffers_back() {
        let (mut client_app, client_proxy) = duplex(1 << 20);
        let (up_proxy, mut up_server) = duplex(1 << 20);
        let task = tokio::spawn(async move {
            pipe(client_proxy, up_proxy, b"", b"", Duration::from_secs(3600)).await
        });
        up_server.write_all(&vec![b'y'; 300_000]).await.unwrap();
        let mut got = vec![0u8; 300_000];
        client_app.read_exact(&mut got).await.unwrap();
        // Both buffers are gone after RELEASE_AFTER; data still flows afterwards.
        tokio::time::sleep(RELEASE_AFTER + Duration::from_millis(500)).await;
        client_app.write_all(b"a1 NOOP\r\n").await.unwrap();
        let mut buf = [0u8; 16];
        let n = up_server.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"a1 NOOP\r\n");
        drop(up_server);
        let end = task.await.unwrap();
        assert!(
            matches!(
                end,
                PipeEnd::Closed {
                    up: 9,
                    down: 300_000
                }
            ),
            "{end:?}"
        );
    }

    /// Exchange's refusal of the client's first command becomes the documented temporary reply,
    /// and the session ends.
    #[tokio::test]
    async fn not_connected_is_replaced_and_ends_the_session() {
        let (mut client_app, client_proxy) = duplex(4096);
        let (up_proxy, mut up_server) = duplex(4096);
        let watch = FirstReplies::new(crate::protocol::first_replies::WatchKind::Imap, "m@x");
        let task = tokio::spawn(async move {
            pipe_watched(
                client_proxy,
                up_proxy,
                b"",
                b"",
                Duration::from_secs(60),
                (Counter::default(), Counter::default()),
                Some(watch),
            )
            .await
        });
        client_app.write_all(b"a2 SELECT INBOX\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let n = up_server.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"a2 SELECT INBOX\r\n");
        up_server
            .write_all(b"a2 BAD User is authenticated but not connected.\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        client_app.read_to_end(&mut got).await.unwrap();
        let got = String::from_utf8(got).unwrap();
        assert!(got.starts_with("a2 NO [UNAVAILABLE] "), "{got}");
        assert!(
            got.ends_with("* BYE [UNAVAILABLE] The mailbox cannot be opened; try again later\r\n"),
            "{got}"
        );
        match task.await.unwrap() {
            PipeEnd::NotConnected { upstream } => {
                assert_eq!(upstream, "BAD User is authenticated but not connected.")
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn close_ends_the_pipe() {
        let (client_app, client_proxy) = duplex(1024);
        let (up_proxy, up_server) = duplex(1024);
        let task = tokio::spawn(async move {
            pipe(client_proxy, up_proxy, b"", b"", Duration::from_secs(60)).await
        });
        drop(up_server);
        let mut ca = client_app;
        let mut buf = [0u8; 8];
        assert_eq!(ca.read(&mut buf).await.unwrap(), 0);
        drop(ca);
        assert!(matches!(
            task.await.unwrap(),
            PipeEnd::Closed { .. } | PipeEnd::Error(_)
        ));
    }
}
