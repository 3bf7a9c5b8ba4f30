//! After login: forward what each side already sent, then copy bytes both ways until either side
//! closes or both are silent for the idle timeout. No per-line work happens here; the only cost
//! per read is one relaxed atomic store that records activity.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

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
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut client = Activity {
        inner: client,
        start,
        last: Arc::clone(&last),
    };
    let mut upstream = Activity {
        inner: upstream,
        start,
        last: Arc::clone(&last),
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

/// Records the time of the last successful read.
struct Activity<S> {
    inner: S,
    start: Instant,
    last: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Activity<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let now = self.start.elapsed().as_millis() as u64;
            self.last.store(now, Ordering::Relaxed);
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
        Pin::new(&mut self.inner).poll_shutdown(cx)
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
