//! Talking to systemd (`Type=notify`): `READY=1` once heartbeats run and
//! every group has settled (held, released or backed off, nothing starting
//! or stopping), and `WATCHDOG=1` from the heartbeat thread, so a hung or
//! stopped heartbeat loop is what systemd's `WatchdogSec` catches.
//! Without `NOTIFY_SOCKET` (not started by systemd) every call is a no-op.

use std::time::{Duration, Instant};

/// Readiness and watchdog state, driven by the heartbeat loop.
pub(crate) struct Systemd {
    ready_sent: bool,
    started: Instant,
    watchdog: Option<Duration>,
    last_ping: Option<Instant>,
}

/// Readiness is sent at the latest this long after start, settled or not,
/// so a group that keeps failing cannot hold `systemctl start` for ever.
const READY_AT_LATEST: Duration = Duration::from_secs(30);

impl Systemd {
    /// Reads `WATCHDOG_USEC` (pinging at half the interval, as systemd advises).
    pub(crate) fn new() -> Systemd {
        let mut usec = 0u64;
        let watchdog = sd_notify::watchdog_enabled(false, &mut usec)
            .then(|| Duration::from_micros(usec / 2).max(Duration::from_millis(10)));
        if let Some(w) = watchdog {
            tracing::info!("systemd watchdog on: pinging every {w:?}");
        }
        Systemd {
            ready_sent: false,
            started: Instant::now(),
            watchdog,
            last_ping: None,
        }
    }

    /// Called every turn of the heartbeat loop; `steady` says whether every
    /// group has settled, `status` describes the node for `systemctl status`.
    pub(crate) fn on_turn(&mut self, steady: bool, status: impl FnOnce() -> String) {
        let now = Instant::now();
        if !self.ready_sent && (steady || now.duration_since(self.started) >= READY_AT_LATEST) {
            self.ready_sent = true;
            let status = status();
            if let Err(e) = sd_notify::notify(
                false,
                &[
                    sd_notify::NotifyState::Ready,
                    sd_notify::NotifyState::Status(&status),
                ],
            ) {
                tracing::warn!("cannot tell systemd the agent is ready: {e}");
            }
        }
        if let Some(every) = self.watchdog {
            if self
                .last_ping
                .is_none_or(|t| now.duration_since(t) >= every)
            {
                self.last_ping = Some(now);
                if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]) {
                    tracing::warn!("cannot ping the systemd watchdog: {e}");
                }
            }
        }
    }

    /// The loop wakes at least this often when the watchdog is on.
    pub(crate) fn max_wait(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Tells systemd the agent is stopping (releasing its groups).
    pub(crate) fn stopping(&self) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    }
}
