//! What the [`TokenManager`] runs in the background until shutdown: the proactive refresher (each
//! account in use gets a new access token at its jittered refresh point, with backoff after
//! failures) and the refresh-token keep-alive (delegated refresh tokens expire after 90 days
//! unused).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use super::TokenManager;
use super::slot::jittered;

impl TokenManager {
    /// Delegated refresh tokens expire after 90 days unused: refreshes every account whose stored
    /// token is older than `max_idle`.
    pub async fn keepalive_once(&self, max_idle: Duration) {
        for slot in &self.slots {
            if !slot.config.provider.flow.is_delegated() {
                continue;
            }
            let name = slot.name().to_owned();
            let stored_at = self.store.blocking(move |s| s.stored_at(&name)).await;
            let Ok(Some(at)) = stored_at else {
                continue;
            };
            let idle = SystemTime::now().duration_since(at).unwrap_or_default();
            if idle >= max_idle {
                tracing::info!(
                    account = slot.name(),
                    idle_days = idle.as_secs() / 86_400,
                    "refreshing to keep the refresh token alive"
                );
                // The outcome is logged and recorded in the account status.
                let _ = self.refresh_now(slot.name()).await;
            }
        }
    }

    /// Runs [`keepalive_once`](Self::keepalive_once) every `every` (± 10 %) until `shutdown`.
    pub fn spawn_keepalive(
        self: &Arc<Self>,
        every: Duration,
        max_idle: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(jittered(every)) => me.keepalive_once(max_idle).await,
                }
            }
        })
    }

    /// Everything the server runs in the background until `shutdown`: the proactive refresher
    /// ([`refresh_in_background`](Self::refresh_in_background)) and the refresh-token keep-alive
    /// ([`spawn_keepalive`](Self::spawn_keepalive)).
    pub fn spawn_background(
        self: &Arc<Self>,
        keepalive_every: Duration,
        keepalive_max_idle: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let keepalive = self.spawn_keepalive(keepalive_every, keepalive_max_idle, shutdown.clone());
        let me = Arc::clone(self);
        tokio::spawn(async move {
            me.refresh_in_background(shutdown).await;
            keepalive.abort();
        })
    }

    /// Until `shutdown`: for every account in use, fetch a new access token when its cached one
    /// reaches its (jittered) refresh point, so no client login waits on the token endpoint; after
    /// a failure retry with backoff (`Retry-After` honoured, see `finish`).
    pub async fn refresh_in_background(&self, shutdown: CancellationToken) {
        loop {
            let now = Instant::now();
            let mut next = now + Duration::from_secs(3600);
            for slot in &self.slots {
                let mut st = slot.lock();
                match st.refresh_due(now) {
                    Some(due) if due <= now => {
                        tracing::debug!(
                            account = slot.name(),
                            "refreshing the access token in the background"
                        );
                        // Nobody waits on this fetch; its outcome lands in the cache and status.
                        let _ = self.start_fetch(slot, &mut st);
                    }
                    Some(due) => next = next.min(due),
                    None => {}
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(next.into()) => {}
                () = self.ctx.wake.notified() => {}
            }
        }
    }
}
