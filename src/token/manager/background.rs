//! What the [`TokenManager`] runs in the background until shutdown: the proactive refresher (each
//! account in use gets a new access token at its jittered refresh point, with backoff after
//! failures; so does each of its other scope sets in use, such as the Graph token of a Graph
//! listener), the save retries of rotated refresh tokens the store refused (with backoff, and
//! once more at shutdown), and the refresh-token keep-alive (delegated refresh tokens expire
//! after 90 days unused).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use super::slot::{Slot, jittered};
use super::{Ctx, TokenManager, fetch, persist_in_background, rotation};
use crate::token::store::TokenStore;

/// While a save retry runs, the next one is not scheduled before this (the retry reschedules).
const SAVE_RETRY_RUNNING: Duration = Duration::from_secs(60);

impl TokenManager {
    /// Delegated refresh tokens expire after 90 days unused: refreshes every account whose stored
    /// token is older than `max_idle`.
    pub async fn keepalive_once(&self, max_idle: Duration) {
        for slot in &self.slots {
            if !slot.config().provider.flow.is_delegated() {
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
    /// a failure retry with backoff (`Retry-After` honoured, see `finish`). Rotated refresh
    /// tokens the store refused are saved again when due, and once more at shutdown.
    pub async fn refresh_in_background(&self, shutdown: CancellationToken) {
        loop {
            let now = Instant::now();
            let mut next = now + Duration::from_secs(3600);
            for slot in &self.all_slots() {
                let mut st = slot.lock();
                // A fetch in flight settles the unsaved token itself.
                let fetching = st.live_inflight().is_some();
                if let Some(u) = st.unsaved.as_mut().filter(|_| !fetching) {
                    if u.retry_at <= now {
                        u.retry_at = now + SAVE_RETRY_RUNNING;
                        tokio::spawn(save_unsaved(
                            Arc::clone(slot),
                            self.store.clone(),
                            Arc::clone(&self.ctx),
                        ));
                    } else {
                        next = next.min(u.retry_at);
                    }
                }
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
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep_until(next.into()) => {}
                () = self.ctx.wake.notified() => {}
            }
        }
        self.save_unsaved_before_exit().await;
    }

    /// The accounts' own slots, then the slots of their other scope sets (created on first use).
    fn all_slots(&self) -> Vec<Arc<Slot>> {
        let scoped = self.scoped.lock().unwrap_or_else(|p| p.into_inner());
        self.slots
            .iter()
            .chain(scoped.values())
            .map(Arc::clone)
            .collect()
    }

    /// One last save of every rotated refresh token still only in memory; says which are lost.
    async fn save_unsaved_before_exit(&self) {
        for slot in &self.all_slots() {
            if slot.pending().is_none() {
                continue;
            }
            save_unsaved(Arc::clone(slot), self.store.clone(), Arc::clone(&self.ctx)).await;
            if let Some(why) = slot.lock().store_behind() {
                tracing::error!(
                    account = slot.name(),
                    "exiting with the newest refresh token only in memory: {why}. The store \
                     keeps the one before it; if the provider refuses that one, run \
                     `authbridge login {}`",
                    slot.name()
                );
            }
        }
    }
}

/// Saves `slot`'s unsaved rotated token if it still has one (under its turn and the store's lock,
/// see `rotation::settle`), then updates its status file.
async fn save_unsaved(slot: Arc<Slot>, store: TokenStore, ctx: Arc<Ctx>) {
    {
        let _turn = slot.turn.lock().await;
        if slot.pending().is_none() {
            return;
        }
        let failed = match fetch::store_lock(&store, slot.name()).await {
            Ok(_lock) => {
                let for_settle = Arc::clone(&slot);
                store
                    .blocking(move |s| rotation::settle(s, &for_settle).map(drop))
                    .await
                    .err()
            }
            Err(e) => Some(e),
        };
        if let Some(e) = failed {
            let count = slot.save_failed_again(e.to_string());
            tracing::warn!(
                account = slot.name(),
                failed_saves = count,
                "cannot store the rotated refresh token yet (kept in memory, retried): {e}"
            );
        }
    }
    persist_in_background(&slot, &ctx).await;
    ctx.wake.notify_one();
}
