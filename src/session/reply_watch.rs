//! The upstream side of a piped SMTP session, watched: an `AsyncRead + AsyncWrite` wrapper that
//! passes every byte through unchanged and shows what it reads from the upstream to the sans-I/O
//! [`ReplyWatch`] (`crate::protocol::smtp::reply_watch`). When that recognises a refusal the
//! diagnosis table knows (`554 5.2.252 SendAsDenied` after DATA, …) the session logs its cause
//! and fix once — account, listener, reply code and line; never anything of the message — and
//! the watch is dropped, so the rest of the session costs one branch per read.
//!
//! Writes (client→upstream: commands and message data) are never looked at.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::warn;

use crate::config::Protocol;
use crate::diagnosis;
use crate::protocol::smtp::reply_watch::{Refusal, ReplyWatch};

/// Who the hint is about.
#[derive(Debug, Clone)]
pub struct Subject {
    pub account: String,
    pub mailbox: String,
    pub listener: String,
}

/// An upstream stream whose replies may be watched.
pub struct Watched<S> {
    inner: S,
    watch: Option<(ReplyWatch, Subject)>,
}

impl<S> Watched<S> {
    /// Watch `inner`'s replies for `subject` (`None`: pass through only). `already` holds the
    /// upstream bytes read before the pipe started (they reach the client first).
    pub fn new(inner: S, subject: Option<Subject>, already: &[u8]) -> Watched<S> {
        let mut w = Watched {
            inner,
            watch: subject.map(|s| (ReplyWatch::new(), s)),
        };
        w.observe(already);
        w
    }

    /// Is the watch still on?
    pub fn watching(&self) -> bool {
        self.watch.is_some()
    }

    fn observe(&mut self, bytes: &[u8]) {
        let Some((watch, subject)) = &mut self.watch else {
            return;
        };
        if let Some(refusal) = watch.feed(bytes) {
            log(&refusal, subject);
            self.watch = None;
        }
    }
}

fn log(r: &Refusal, s: &Subject) {
    let ctx = diagnosis::Context {
        mailbox: &s.mailbox,
        account: &s.account,
        protocol: Some(Protocol::Smtp),
        ..Default::default()
    };
    warn!(
        account = %s.account,
        listener = %s.listener,
        code = r.code,
        diagnosis = r.known.id,
        upstream = %r.text,
        hint = %diagnosis::hint(&r.text, &ctx),
        "upstream refused during the mail transaction: {}",
        r.known.cause_for(&ctx)
    );
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.watch.is_some() && matches!(res, Poll::Ready(Ok(()))) {
            this.observe(&buf.filled()[before..]);
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn passes_bytes_through_and_stops_watching_after_a_refusal() {
        let (a, mut b) = tokio::io::duplex(64);
        let subject = Subject {
            account: "tickets".into(),
            mailbox: "t@contoso.com".into(),
            listener: "smtp".into(),
        };
        let mut w = Watched::new(a, Some(subject), b"250 2.1.0 Sender OK\r\n");
        let reply: &[u8] = b"250 2.1.5 OK\r\n354 go\r\n554 5.2.252 SendAsDenied; x\r\n";
        b.write_all(reply).await.unwrap();
        let mut got = vec![0u8; reply.len()];
        w.read_exact(&mut got).await.unwrap();
        assert_eq!(got, reply);
        assert!(!w.watching());
        w.write_all(b"QUIT\r\n").await.unwrap();
        let mut q = [0u8; 6];
        b.read_exact(&mut q).await.unwrap();
        assert_eq!(&q, b"QUIT\r\n");
    }
}
