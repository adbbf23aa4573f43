//! Restarting a long-lived task after a panic: the panic is caught, logged once with
//! its message (clipped), counted in `fedgw_task_panics_total{task}`, kept in a
//! [`TaskHealth`] registry that `GET /v1/status` shows, and the task starts again
//! after a capped exponential backoff.
//!
//! A panic is a bug; a gateway that loses a poller or a sink to one goes on serving
//! stale state while reporting health. Catching it keeps the rest of the gateway
//! honest: the status says which task failed and why, and the task comes back. It
//! does not own what a task does (the callers) or the task tree ([`crate::shutdown`]).

use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::FutureExt as _;
use serde::Serialize;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::shutdown::Shutdown;
use crate::telemetry::Metrics;
use crate::telemetry::families::TASK_PANICS;
use crate::telemetry::log_guard::Clip;

/// The first wait before a restart.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait before a restart.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A task that ran this long before panicking starts its backoff afresh.
const HEALTHY_RUN: Duration = Duration::from_secs(300);

/// The panic message of a caught panic payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Run `future`, catching a panic as its message.
///
/// # Errors
/// The panic message if `future` panicked.
pub async fn catch<T>(future: impl Future<Output = T>) -> Result<T, String> {
    AssertUnwindSafe(future)
        .catch_unwind()
        .await
        .map_err(|payload| panic_message(payload.as_ref()))
}

/// The wait before the `n`th restart (1-based): 1 s, 2 s, 4 s … at most 60 s.
pub fn backoff(n: u32) -> Duration {
    let shift = n.saturating_sub(1).min(6);
    (FIRST_BACKOFF * (1_u32 << shift)).min(MAX_BACKOFF)
}

/// Which supervised tasks have panicked, and which listeners are configured but not
/// serving yet, for `GET /v1/status`; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct TaskHealth {
    inner: Arc<Mutex<BTreeMap<String, TaskRecord>>>,
    waiting: Arc<Mutex<BTreeMap<String, WaitingListener>>>,
}

/// A configured listener that is not serving yet (e.g. the `https_spiffe` endpoint
/// before the Workload API has given it an X509-SVID), and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaitingListener {
    /// The listener, e.g. `https_spiffe endpoint`.
    pub listener: String,
    /// The address it binds once it can.
    pub listen: String,
    /// Always `listener_waiting`.
    pub code: &'static str,
    /// What it waits for (clipped).
    pub reason: String,
    /// Since when it has been waiting, RFC 3339.
    pub since: String,
}

/// A supervised task that has panicked at least once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskRecord {
    /// The task, e.g. `files sink /var/run/bundles` or `poller b.example`.
    pub task: String,
    /// Always `task_panicked`.
    pub code: &'static str,
    /// Panics caught since the gateway started.
    pub panics: u64,
    /// The last panic's message (clipped).
    pub message: String,
    /// When the last panic happened, RFC 3339.
    pub at: String,
    /// When the task starts again, RFC 3339; absent once it has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restarts_at: Option<String>,
}

impl TaskHealth {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every task that has panicked, by name.
    pub fn records(&self) -> Vec<TaskRecord> {
        self.lock().values().cloned().collect()
    }

    /// Forget `task` (it was removed, e.g. a deleted relationship's poller).
    pub fn forget(&self, task: &str) {
        self.lock().remove(task);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, TaskRecord>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Record a panic of `task`, restarting after `wait`; returns the panic count.
    pub fn panicked(&self, task: &str, message: &str, wait: Duration) -> u64 {
        let now = OffsetDateTime::now_utc();
        let mut records = self.lock();
        let record = records
            .entry(task.to_owned())
            .or_insert_with(|| TaskRecord {
                task: task.to_owned(),
                code: "task_panicked",
                panics: 0,
                message: String::new(),
                at: String::new(),
                restarts_at: None,
            });
        record.panics += 1;
        record.message = Clip::new(message).to_string();
        record.at = rfc3339(now);
        record.restarts_at = Some(rfc3339(now + wait));
        record.panics
    }

    /// `listener` (binding `listen`) is not serving yet, because of `reason`; the
    /// time it started waiting is kept across calls.
    pub fn listener_waiting(&self, listener: &str, listen: &str, reason: &str) {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        let record = waiting
            .entry(listener.to_owned())
            .or_insert_with(|| WaitingListener {
                listener: listener.to_owned(),
                listen: listen.to_owned(),
                code: "listener_waiting",
                reason: String::new(),
                since: rfc3339(OffsetDateTime::now_utc()),
            });
        record.listen = listen.to_owned();
        record.reason = Clip::new(reason).to_string();
    }

    /// `listener` serves now.
    pub fn listener_serving(&self, listener: &str) {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(listener);
    }

    /// Every listener that waits to start, by name.
    pub fn waiting_listeners(&self) -> Vec<WaitingListener> {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// `task` is running again.
    pub fn restarted(&self, task: &str) {
        if let Some(record) = self.lock().get_mut(task) {
            record.restarts_at = None;
        }
    }
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// What a supervisor needs: the task tree, the registry, the metrics.
#[derive(Debug, Clone)]
pub struct Supervisor {
    shutdown: Shutdown,
    health: TaskHealth,
    metrics: Metrics,
}

impl Supervisor {
    /// Tasks spawned under `shutdown`, panics recorded in `health` and `metrics`.
    pub fn new(shutdown: Shutdown, health: TaskHealth, metrics: Metrics) -> Self {
        Self {
            shutdown,
            health,
            metrics,
        }
    }

    /// The registry.
    pub fn health(&self) -> &TaskHealth {
        &self.health
    }

    /// The task tree.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Spawn `task` (made anew by `make` for each start) under the task tree; restart
    /// it after a panic, until it returns or `cancel` fires.
    pub fn spawn<F, Fut>(
        &self,
        name: String,
        cancel: CancellationToken,
        make: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let this = self.clone();
        self.shutdown
            .spawn(async move { this.run(name, cancel, make).await })
    }

    /// Run the task in the current one, restarting it after a panic.
    pub async fn run<F, Fut>(&self, name: String, cancel: CancellationToken, mut make: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut restarts = 0_u32;
        loop {
            let started = tokio::time::Instant::now();
            let outcome = tokio::select! {
                () = cancel.cancelled() => return,
                outcome = catch(make()) => outcome,
            };
            let Err(message) = outcome else {
                return;
            };
            if started.elapsed() >= HEALTHY_RUN {
                restarts = 0;
            }
            restarts = restarts.saturating_add(1);
            let wait = backoff(restarts);
            self.record(&name, &message, wait);
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            self.health.restarted(&name);
            tracing::info!(task = %name, "task restarted after a panic");
        }
    }

    /// Log, count and register a panic of `name`.
    pub fn record(&self, name: &str, message: &str, wait: Duration) {
        let panics = self.health.panicked(name, message, wait);
        self.metrics
            .inc(TASK_PANICS, &[("task", task_kind(name))], 1.0);
        tracing::error!(
            task = %name,
            panic = %Clip::new(message),
            panics,
            restart_in_seconds = wait.as_secs(),
            "task panicked (a bug: please report it); it restarts after a backoff"
        );
    }
}

/// The metric label of a task: its kind (the first word of its name), so that one
/// series per relationship or sink directory is not created.
fn task_kind(name: &str) -> &str {
    name.split_whitespace().next().unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let waits: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn a_waiting_listener_keeps_its_start_and_takes_the_latest_reason_until_it_serves() {
        let health = TaskHealth::new();
        assert!(health.waiting_listeners().is_empty());
        health.listener_waiting("https_spiffe endpoint", "127.0.0.1:8443", "no SVID yet");
        let first = health.waiting_listeners();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].code, "listener_waiting");
        assert_eq!(first[0].reason, "no SVID yet");
        health.listener_waiting("https_spiffe endpoint", "127.0.0.1:8443", &"x".repeat(5000));
        let second = health.waiting_listeners();
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].since, first[0].since, "the wait's start is kept");
        assert!(second[0].reason.len() < 1000, "the reason is clipped");
        // Panics and waits are separate lists.
        assert!(health.records().is_empty());
        health.listener_serving("https_spiffe endpoint");
        assert!(health.waiting_listeners().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_recorded_and_restarted_until_it_ends() {
        let supervisor = Supervisor::new(Shutdown::new(), TaskHealth::new(), Metrics::new());
        let starts = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&starts);
        let health = supervisor.health().clone();
        let seen = health.clone();
        let handle = supervisor.spawn(
            "poller b.test".into(),
            CancellationToken::new(),
            move || {
                let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                let seen = seen.clone();
                async move {
                    if n < 3 {
                        panic!("boom {n}");
                    }
                    // The third start sees the two panics recorded, then ends normally.
                    assert_eq!(seen.records()[0].panics, 2);
                }
            },
        );
        handle.await.unwrap();
        assert_eq!(starts.load(Ordering::SeqCst), 3);
        let records = health.records();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].task, "poller b.test");
        assert_eq!(records[0].code, "task_panicked");
        assert_eq!(records[0].message, "boom 2");
        assert_eq!(records[0].restarts_at, None, "running again");
        assert_eq!(
            supervisor.metrics.value(TASK_PANICS, &[("task", "poller")]),
            Some(2.0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_ends_the_backoff() {
        let supervisor = Supervisor::new(Shutdown::new(), TaskHealth::new(), Metrics::new());
        let cancel = CancellationToken::new();
        let handle = supervisor.spawn("sink x".into(), cancel.clone(), || async {
            panic!("always");
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        cancel.cancel();
        handle.await.unwrap();
        assert_eq!(supervisor.health().records()[0].panics, 1);
    }
}
