//! Orderly shutdown: one cancellation tree and one task tracker for every task the
//! gateway spawns.
//!
//! Owns: spawning owned tasks, turning SIGINT/SIGTERM into cancellation, and the
//! grace period (cancel, wait up to the grace period, then abort). It does not own
//! what a task does when cancelled: each task selects on its token and finishes its
//! current step.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The default time tasks get to finish after cancellation.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// The owner of every gateway task.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
}

/// How a shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Every task finished within the grace period.
    Clean,
    /// The grace period ran out; the remaining tasks were abandoned to the runtime's
    /// shutdown, which drops them.
    GraceExpired,
}

impl Shutdown {
    /// A fresh tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// A token that is cancelled when the gateway shuts down; child tokens let a
    /// subsystem stop its own tasks early (e.g. a deleted relationship's poller).
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Spawn a task owned by the gateway. It should return soon after `token()` is
    /// cancelled.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Whether shutdown has begun.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Cancel every task and wait for them, at most `grace`.
    pub async fn shutdown(&self, grace: Duration) -> Ended {
        self.token.cancel();
        self.tracker.close();
        match tokio::time::timeout(grace, self.tracker.wait()).await {
            Ok(()) => Ended::Clean,
            Err(_) => Ended::GraceExpired,
        }
    }

    /// Resolve when SIGINT or SIGTERM arrives, or when the tree is cancelled some other
    /// way (e.g. by a test).
    pub async fn signalled(&self) {
        let token = self.token.clone();
        tokio::select! {
            () = token.cancelled() => {}
            () = terminate_signal() => {}
        }
    }
}

#[cfg(unix)]
async fn terminate_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the gateway still stops when cancelled.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(not(unix))]
async fn terminate_signal() {
    // Without a handler there is nothing to wait for: the gateway then stops only
    // when its task is cancelled.
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cooperative_tasks_end_cleanly() {
        let shutdown = Shutdown::new();
        for _ in 0..3 {
            let token = shutdown.token();
            shutdown.spawn(async move { token.cancelled().await });
        }
        assert_eq!(
            shutdown.shutdown(Duration::from_secs(5)).await,
            Ended::Clean
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_task_does_not_hold_shutdown_forever() {
        let shutdown = Shutdown::new();
        shutdown.spawn(std::future::pending::<()>());
        assert_eq!(
            shutdown.shutdown(Duration::from_secs(1)).await,
            Ended::GraceExpired
        );
    }

    #[tokio::test]
    async fn signalled_resolves_on_cancellation() {
        let shutdown = Shutdown::new();
        shutdown.token().cancel();
        shutdown.signalled().await;
        assert!(shutdown.is_cancelled());
    }
}
