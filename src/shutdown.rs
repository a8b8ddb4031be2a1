//! Shutdown: one cancellation token and one task tracker shared by every task the proxy spawns
//! (connections, tunnels, WebSocket relays), so SIGINT/SIGTERM drains them all, bounded.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long in-flight calls may take to finish after a shutdown signal.
pub const DRAIN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    pub token: CancellationToken,
    pub tracker: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stop accepting and ask every task to finish.
    pub fn trigger(&self) {
        self.token.cancel();
        self.tracker.close();
    }

    /// Wait for the tracked tasks, at most `grace`; `false` when some were still running.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
