//! What the watch API shares between its clients: the full state serialised once per
//! revision, the cap on clients waiting or streaming at once, and the drop of a client
//! that stops reading.
//!
//! Every long-poll answer and every event is the full state at one revision, so the
//! bytes are made once per revision and shared (reference-counted) by every client
//! that is sent them: a thousand clients that do not read hold one copy, not a
//! thousand. An event stream holds nothing queued: it asks for the current state when
//! the client can take more ([`super::routes_watch`]). A client that is owed a newer
//! state (or the rest of an event) and takes nothing within the stall timeout is
//! dropped: its connection is closed through the listener's [`ConnectionHandle`],
//! counted in `fedgw_watch_clients_dropped_total`. It does not own the routes or the
//! shape of the state (`super::routes_bundles::list_view`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::AdminState;
use super::api::ErrorCode;
use super::error::ApiError;
use super::routes_bundles::list_view;
pub use crate::config::WatchLimits;
use crate::net::ConnectionHandle;
use crate::shutdown::Shutdown;
use crate::telemetry::Metrics;
use crate::telemetry::families::{WATCH_CLIENTS, WATCH_CLIENTS_DROPPED, WATCH_CLIENTS_REFUSED};
use crate::telemetry::log_guard::RateLimit;
use crate::trust::store::Snapshot;

/// The watch API's shared part; cheap to clone.
#[derive(Debug, Clone)]
pub struct Watchers {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limits: WatchLimits,
    metrics: Metrics,
    open: AtomicUsize,
    /// The serialised state of the newest revision asked for.
    cache: tokio::sync::Mutex<Option<(u64, Bytes)>>,
    drop_log: RateLimit,
    /// Owns the supervisors of event streams.
    shutdown: Shutdown,
}

impl Watchers {
    /// Bounded by `limits`, counted in `metrics`; supervisors of event streams run
    /// under `shutdown`.
    pub fn new(limits: WatchLimits, metrics: Metrics, shutdown: Shutdown) -> Self {
        metrics.set(WATCH_CLIENTS, &[], 0.0);
        Self {
            inner: Arc::new(Inner {
                limits,
                metrics,
                open: AtomicUsize::new(0),
                cache: tokio::sync::Mutex::new(None),
                drop_log: RateLimit::new(Duration::from_secs(10), 5),
                shutdown,
            }),
        }
    }

    /// The configured bounds.
    pub fn limits(&self) -> WatchLimits {
        self.inner.limits
    }

    /// Count a new client, or refuse it with 503 `too_many_watchers` when
    /// `max_clients` are open.
    ///
    /// # Errors
    /// [`ApiError`] 503 when full.
    pub fn admit(&self) -> Result<Admitted, ApiError> {
        let max = self.inner.limits.max_clients;
        if self.inner.open.fetch_add(1, Ordering::SeqCst) >= max {
            self.inner.open.fetch_sub(1, Ordering::SeqCst);
            self.inner.metrics.inc(WATCH_CLIENTS_REFUSED, &[], 1.0);
            return Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::TooManyWatchers,
                format!("{max} watch clients are open (admin.watch.max_clients); retry later"),
            ));
        }
        self.gauge();
        Ok(Admitted {
            watchers: self.clone(),
        })
    }

    fn gauge(&self) {
        let open = self.inner.open.load(Ordering::SeqCst);
        self.inner.metrics.set(WATCH_CLIENTS, &[], open as f64);
    }

    /// The full state of `snapshot` as JSON (the body of `GET /v1/bundles`), made
    /// once per revision and shared.
    ///
    /// # Errors
    /// [`ApiError::internal`] if the state cannot be serialised.
    pub async fn state_json(
        &self,
        state: &AdminState,
        snapshot: &Snapshot,
    ) -> Result<Bytes, ApiError> {
        let mut cache = self.inner.cache.lock().await;
        if let Some((revision, bytes)) = cache.as_ref()
            && *revision == snapshot.revision
        {
            return Ok(bytes.clone());
        }
        let view = list_view(state, snapshot);
        let bytes = Bytes::from(serde_json::to_vec(&view).map_err(|err| ApiError::internal(&err))?);
        // Keep the newest: an older snapshot asked for late must not replace it.
        if cache
            .as_ref()
            .is_none_or(|(revision, _)| *revision < snapshot.revision)
        {
            *cache = Some((snapshot.revision, bytes.clone()));
        }
        Ok(bytes)
    }

    /// Follow an event stream's progress on behalf of its client, and close the
    /// client's connection if it stops taking what it is owed. The returned guard,
    /// kept by the stream's body, ends the follower when the stream goes.
    pub fn supervise(
        &self,
        progress: Progress,
        connection: Option<ConnectionHandle>,
        feed: tokio::sync::watch::Receiver<u64>,
    ) -> DropGuard {
        let gone = CancellationToken::new();
        let guard = gone.clone().drop_guard();
        let stall = self.inner.limits.stall_timeout.duration();
        let watchers = self.clone();
        let shutdown = &self.inner.shutdown;
        let cancel = shutdown.token();
        shutdown.spawn(async move {
            let mut feed = feed;
            let mut owed_since: Option<Instant> = None;
            loop {
                let deadline = owed_since.map(|since| since.max(progress.last()) + stall);
                tokio::select! {
                    () = gone.cancelled() => return,
                    () = cancel.cancelled() => return,
                    changed = feed.changed() => if changed.is_err() { return },
                    () = sleep_until(deadline) => {
                        if progress.owed(*feed.borrow()) && Instant::now() >= deadline.unwrap_or_else(Instant::now) {
                            watchers.dropped(connection.as_ref());
                            return;
                        }
                    }
                }
                owed_since = progress
                    .owed(*feed.borrow())
                    .then(|| owed_since.unwrap_or_else(Instant::now));
            }
        });
        guard
    }

    fn dropped(&self, connection: Option<&ConnectionHandle>) {
        self.inner.metrics.inc(WATCH_CLIENTS_DROPPED, &[], 1.0);
        if let Some(held_back) = self.inner.drop_log.check(std::time::Instant::now()) {
            tracing::info!(
                similar_messages_held_back = held_back,
                "watch API client stopped reading; its connection was closed"
            );
        }
        if let Some(connection) = connection {
            connection.close("watch_stalled");
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A client counted as open until dropped.
#[derive(Debug)]
pub struct Admitted {
    watchers: Watchers,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.watchers.inner.open.fetch_sub(1, Ordering::SeqCst);
        self.watchers.gauge();
    }
}

/// What an event stream has handed to the HTTP layer, for its supervisor: the
/// revision of the last event begun, whether the rest of it is still to be taken,
/// and when the body last handed anything out.
#[derive(Debug, Clone)]
pub struct Progress {
    inner: Arc<Mutex<ProgressState>>,
}

#[derive(Debug)]
struct ProgressState {
    revision: Option<u64>,
    partial: bool,
    last: Instant,
}

impl Progress {
    /// A stream whose client holds `revision` (from `Last-Event-ID`), if any.
    pub fn new(revision: Option<u64>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(ProgressState {
                revision,
                partial: false,
                last: Instant::now(),
            })),
        }
    }

    /// The body handed out a chunk of the event for `revision`; `partial` when more
    /// of it follows.
    pub fn handed(&self, revision: Option<u64>, partial: bool) {
        let mut state = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if revision.is_some() {
            state.revision = revision;
        }
        state.partial = partial;
        state.last = Instant::now();
    }

    fn last(&self) -> Instant {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last
    }

    /// Whether the client is owed something at `current` (a newer revision, or the
    /// rest of an event).
    fn owed(&self, current: u64) -> bool {
        let state = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        state.partial || state.revision != Some(current)
    }
}
