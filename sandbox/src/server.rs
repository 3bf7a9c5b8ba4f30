//! Listeners: bind on 127.0.0.1, accept under a connection cap, run each session in a tracked task
//! that ends when the sandbox is cancelled.

use std::future::Future;
use std::io;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Shared;

/// Accept queue (capped by `net.core.somaxconn`); std's 128 loses connections when a proxy
/// opens a thousand upstream sessions at once, as Exchange Online would not.
const LISTEN_BACKLOG: u32 = 4096;

/// Bind 127.0.0.1:`port` (0 = any free port). `what` names the service and the `serve` option
/// that moves it, so a port conflict says which port and how to choose another.
pub(crate) async fn bind(port: u16, what: &str) -> io::Result<TcpListener> {
    let listen = || -> io::Result<TcpListener> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind((Ipv4Addr::LOCALHOST, port).into())?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot listen on 127.0.0.1:{port} for {what}: {e} (choose another port, or 0 for any free one)"
            ),
        )
    })
}

pub(crate) struct Runner {
    pub shared: Arc<Shared>,
    pub cancel: CancellationToken,
    pub tracker: TaskTracker,
    /// Concurrent sessions per listener.
    pub max_sessions: usize,
}

impl Runner {
    /// Accept on `listener` until cancelled; each connection runs `session` in its own task.
    pub(crate) fn spawn<F, Fut>(&self, listener: TcpListener, session: F)
    where
        F: Fn(Arc<Shared>, TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let shared = self.shared.clone();
        let cancel = self.cancel.clone();
        let tracker = self.tracker.clone();
        let permits = Arc::new(Semaphore::new(self.max_sessions));
        self.tracker.spawn(async move {
            loop {
                let permit = tokio::select! {
                    _ = cancel.cancelled() => return,
                    p = permits.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                };
                let accepted = tokio::select! {
                    _ = cancel.cancelled() => return,
                    a = listener.accept() => a,
                };
                let tcp = match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        tracing::warn!(error = %e, "sandbox accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let fut = session(shared.clone(), tcp);
                let cancel = cancel.clone();
                tracker.spawn(async move {
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = fut => {}
                    }
                    drop(permit);
                });
            }
        });
    }
}
