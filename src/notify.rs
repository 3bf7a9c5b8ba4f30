//! Service-manager notifications (systemd `sd_notify`, through the `sd-notify` crate): `READY=1`
//! once every listener is bound, `RELOADING=1` with `MONOTONIC_USEC` then `READY=1` around a
//! reload (what `Type=notify-reload` expects), `STOPPING=1` at shutdown, `STATUS=` a short line,
//! and `WATCHDOG=1` every half `WATCHDOG_USEC` while the runtime is alive. Without
//! `NOTIFY_SOCKET` every call does nothing. A failed send is logged at debug level and never
//! stops the server.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// The watchdog is fed at least this often, however long `WATCHDOG_USEC` is.
const MAX_WATCHDOG_PERIOD: Duration = Duration::from_secs(3600);
/// … and at most this often.
const MIN_WATCHDOG_PERIOD: Duration = Duration::from_millis(50);

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "cannot notify the service manager");
    }
}

/// All listeners are bound: the service is ready.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload starts.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[
            NotifyState::Reloading,
            now,
            NotifyState::Status("reloading the config"),
        ]),
        Err(_) => send(&[
            NotifyState::Reloading,
            NotifyState::Status("reloading the config"),
        ]),
    }
}

/// The service stops.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// Feed the watchdog every half `WATCHDOG_USEC` (when the service manager set one for this
/// process) until `stop`.
pub fn spawn_watchdog(stop: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
    let timeout = sd_notify::watchdog_enabled()?;
    let period = (timeout / 2).clamp(MIN_WATCHDOG_PERIOD, MAX_WATCHDOG_PERIOD);
    tracing::info!(
        period_ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX),
        "feeding the service manager's watchdog"
    );
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => send(&[NotifyState::Watchdog]),
            }
        }
    }))
}
