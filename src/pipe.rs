//! After login: forward what each side already sent, then copy bytes both ways until either side
//! closes or both are silent for the idle timeout. No per-line work happens here; the only cost
//! per read is a relaxed atomic store that records activity and two atomic adds that count bytes.
//!
//! Closing is asymmetric. A client that half-closes (shuts down its write side after QUIT) still
//! gets the upstream's last replies: its EOF is passed on and the upstream→client direction goes
//! on. Once the upstream has closed and everything it sent has been written to the client (and
//! the client's write side shut down), the session is over: nothing more can come, so a client
//! that keeps its socket open does not hold the session (and a connection permit) until the idle
//! timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::metrics::counter::Counter;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Buffer per direction for the copy.
const PIPE_BUFFER: usize = 16 * 1024;

/// Why a pipe ended.
#[derive(Debug)]
pub enum PipeEnd {
    /// One side closed; bytes copied client→upstream and upstream→client.
    Closed { up: u64, down: u64 },
    /// Both sides were silent for the idle timeout.
    Idle,
    /// A read or write failed.
    Error(io::Error),
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
    let (up_total, down_total) = counters;
    up_total.inc_by(client_leftover.len() as u64);
    down_total.inc_by(upstream_leftover.len() as u64);
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let client_shut = Arc::new(Notify::new());
    let (from_client, from_upstream) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut client = Activity {
        inner: client,
        start,
        last: Arc::clone(&last),
        read: Arc::clone(&from_client),
        total: up_total,
        shut: Some(Arc::clone(&client_shut)),
    };
    let mut upstream = Activity {
        inner: upstream,
        start,
        last: Arc::clone(&last),
        read: Arc::clone(&from_upstream),
        total: down_total,
        shut: None,
    };
    if !client_leftover.is_empty() {
        if let Err(e) = upstream.write_all(client_leftover).await {
            return PipeEnd::Error(e);
        }
    }
    if !upstream_leftover.is_empty() {
        if let Err(e) = client.write_all(upstream_leftover).await {
            return PipeEnd::Error(e);
        }
    }
    let copy = tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut upstream,
        PIPE_BUFFER,
        PIPE_BUFFER,
    );
    tokio::pin!(copy);
    let check = (idle / 4).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            res = &mut copy => {
                return match res {
                    Ok((up, down)) => PipeEnd::Closed { up, down },
                    Err(e) => PipeEnd::Error(e),
                };
            }
            // The upstream closed and all it sent reached the client: the session is over.
            _ = client_shut.notified() => {
                return PipeEnd::Closed {
                    up: from_client.load(Ordering::Relaxed),
                    down: from_upstream.load(Ordering::Relaxed),
                };
            }
            _ = tokio::time::sleep(check) => {
                let since_start = start.elapsed().as_millis() as u64;
                let quiet = since_start.saturating_sub(last.load(Ordering::Relaxed));
                if quiet >= idle.as_millis() as u64 {
                    return PipeEnd::Idle;
                }
            }
        }
    }
}

/// Records the time of the last successful read and the bytes read; `shut` is told when the
/// write side has been shut down (the other side's EOF was passed on).
struct Activity<S> {
    inner: S,
    start: Instant,
    last: Arc<AtomicU64>,
    read: Arc<AtomicU64>,
    /// The metrics counter of this direction.
    total: Counter,
    shut: Option<Arc<Notify>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Activity<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if matches!(res, Poll::Ready(Ok(()))) && n > 0 {
            let now = self.start.elapsed().as_millis() as u64;
            self.last.store(now, Ordering::Relaxed);
            self.read.fetch_add(n as u64, Ordering::Relaxed);
            self.total.inc_by(n as u64);
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Activity<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let res = Pin::new(&mut self.inner).poll_shutdown(cx);
        if res.is_ready() {
            if let Some(shut) = &self.shut {
                shut.notify_one();
            }
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, duplex};

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
