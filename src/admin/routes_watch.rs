//! Watch routes: the bundle list with an optional blocking wait (`GET
//! /v1/bundles?wait=REVISION`, a long poll) and a Server-Sent Events stream (`GET
//! /v1/events`), for agents and proxies that follow a gateway's bundles.
//!
//! Every answer and every event is the full state at one global revision, the body
//! of `GET /v1/bundles` (DIST-5: a removed trust domain is simply absent; a client
//! keeps nothing it is not sent again). Both follow the trust store's change feed and
//! read its snapshot, never sled. Waiting ends early when the gateway shuts down
//! (`ready` turns false), so that in-flight calls let the listener stop; the client
//! then reconnects. It does not own the list's shape (`routes_bundles::list_view`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse as _, Response};
use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::sync::watch;
use tokio_util::sync::DropGuard;

use super::AdminState;
use super::api::{BUNDLES_EVENT, WatchQuery};
use super::error::ApiError;
use super::watchers::{Admitted, Progress};
use crate::config::{Scope, Seconds};
use crate::net::ConnectionHandle;
use crate::outputs::sds::wire::CHUNK;

/// How long `wait` blocks without `timeout`.
pub(super) const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// The longest `timeout` accepted.
pub(super) const MAX_WAIT: Duration = Duration::from_secs(300);

/// How often an idle event stream sends a keep-alive comment.
pub(super) const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `GET /v1/bundles[?wait=REVISION[&timeout=30s]]`: the full state; with `wait`, not
/// before the global revision differs from `REVISION` or the timeout passes (then the
/// state is answered unchanged, with `revision == REVISION`). A waiting call counts
/// against `admin.watch.max_clients`; the answer is the state's shared serialisation.
pub(super) async fn bundles(
    State(state): State<AdminState>,
    query: Result<Query<WatchQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.access.authorize(&headers, Scope::Read)?;
    let Query(query) = query.map_err(|err| ApiError::invalid(err.body_text()))?;
    let timeout = wait_timeout(query.timeout.as_deref())?;
    if let Some(wait) = query.wait {
        if query.timeout.is_some() && timeout.is_zero() {
            return Err(ApiError::invalid("timeout must be positive"));
        }
        // Subscribe before reading the snapshot, so a change in between is not missed.
        let mut feed = state.trust_store.subscribe();
        if state.trust_store.snapshot().revision == wait {
            let _admitted = state.watchers.admit()?;
            let mut ready = state.ready.clone();
            tokio::select! {
                _changed = feed.wait_for(|revision| *revision != wait) => {}
                () = tokio::time::sleep(timeout) => {}
                () = shutting_down(&mut ready) => {}
            }
        }
    } else if query.timeout.is_some() {
        return Err(ApiError::invalid(
            "timeout is only meaningful with wait=REVISION",
        ));
    }
    let snapshot = state.trust_store.snapshot();
    let json = state.watchers.state_json(&state, &snapshot).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json,
    )
        .into_response())
}

/// `GET /v1/events`: `text/event-stream` of `bundles` events, each the full state
/// with the global revision as its `id`. The first event comes at once unless the
/// client's `Last-Event-ID` is the current revision; then one per change (changes
/// that follow each other quickly, or happen while the client is not reading, share
/// one event: each carries the whole state). Idle streams carry a keep-alive comment
/// every [`KEEP_ALIVE`]. A client that stops reading is dropped
/// ([`super::watchers`]).
pub(super) async fn events(
    State(state): State<AdminState>,
    connection: Option<axum::Extension<ConnectionHandle>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.access.authorize(&headers, Scope::Read)?;
    let admitted = state.watchers.admit()?;
    let last_id = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<u64>().ok());
    let progress = Progress::new(last_id);
    let supervisor = state.watchers.supervise(
        progress.clone(),
        connection.map(|axum::Extension(handle)| handle),
        state.trust_store.subscribe(),
    );
    let follower = Follower {
        feed: state.trust_store.subscribe(),
        ready: state.ready.clone(),
        sent: last_id,
        pending: VecDeque::new(),
        progress,
        _supervisor: supervisor,
        _admitted: admitted,
        state,
    };
    let stream = futures_util::stream::unfold(follower, |mut follower| async move {
        let chunk = follower.next().await?;
        Some((chunk, follower))
    });
    let body = axum::body::Body::from_stream(stream.map(Ok::<_, Infallible>));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response())
}

/// One event stream's position.
struct Follower {
    state: AdminState,
    feed: watch::Receiver<u64>,
    ready: watch::Receiver<bool>,
    /// The revision the client holds (sent last, or named by `Last-Event-ID`).
    sent: Option<u64>,
    /// The rest of the event being sent.
    pending: VecDeque<Bytes>,
    progress: Progress,
    _supervisor: DropGuard,
    _admitted: Admitted,
}

impl Follower {
    /// The next chunk to write, or `None` when the stream should end (shutdown, the
    /// trust store is gone, or the state cannot be serialised).
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(chunk) = self.pending.pop_front() {
            self.progress.handed(None, !self.pending.is_empty());
            return Some(chunk);
        }
        loop {
            let snapshot = self.state.trust_store.snapshot();
            if self.sent != Some(snapshot.revision) {
                let json = self
                    .state
                    .watchers
                    .state_json(&self.state, &snapshot)
                    .await
                    .ok()?;
                self.sent = Some(snapshot.revision);
                self.pending = event(snapshot.revision, &json);
                let first = self.pending.pop_front()?;
                self.progress
                    .handed(Some(snapshot.revision), !self.pending.is_empty());
                return Some(first);
            }
            tokio::select! {
                changed = self.feed.changed() => changed.ok()?,
                () = shutting_down(&mut self.ready) => return None,
                () = tokio::time::sleep(KEEP_ALIVE) => {
                    self.progress.handed(None, false);
                    return Some(Bytes::from_static(b": keep-alive\n\n"));
                }
            }
        }
    }
}

/// A `bundles` event for `revision` carrying `json` (one line: serde_json escapes
/// every newline), in chunks that share `json`'s bytes.
fn event(revision: u64, json: &Bytes) -> VecDeque<Bytes> {
    let mut chunks = VecDeque::new();
    chunks.push_back(Bytes::from(format!(
        "event: {BUNDLES_EVENT}\nid: {revision}\ndata: "
    )));
    let mut offset = 0;
    while offset < json.len() {
        let end = (offset + CHUNK).min(json.len());
        chunks.push_back(json.slice(offset..end));
        offset = end;
    }
    chunks.push_back(Bytes::from_static(b"\n\n"));
    chunks
}

/// `timeout` as a duration: [`DEFAULT_WAIT`] when absent, at most [`MAX_WAIT`].
fn wait_timeout(raw: Option<&str>) -> Result<Duration, ApiError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_WAIT);
    };
    let seconds: Seconds = raw
        .parse()
        .map_err(|reason: String| ApiError::invalid(format!("timeout: {reason}")))?;
    let timeout = seconds.duration();
    if timeout > MAX_WAIT {
        return Err(ApiError::invalid(format!(
            "timeout {raw:?} is above the maximum of {}s",
            MAX_WAIT.as_secs()
        )));
    }
    Ok(timeout)
}

/// Resolves when the gateway stops being ready (shutdown); never if nobody can tell
/// (the sender of `ready` is gone).
async fn shutting_down(ready: &mut watch::Receiver<bool>) {
    if ready.wait_for(|ready| !*ready).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_shares_the_state_bytes_and_is_one_sse_event() {
        let json = Bytes::from(format!("{{\"x\":\"{}\"}}", "y".repeat(3 * CHUNK)));
        let chunks = event(7, &json);
        let text: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let text = String::from_utf8(text).unwrap();
        assert!(text.starts_with("event: bundles\nid: 7\ndata: {"));
        assert!(text.ends_with("}\n\n"));
        assert_eq!(text.matches('\n').count(), 4, "one data line");
        let inside = json.as_ptr_range();
        let shared: usize = chunks
            .iter()
            .filter(|c| inside.contains(&c.as_ptr()))
            .map(Bytes::len)
            .sum();
        assert_eq!(
            shared,
            json.len(),
            "the JSON is the shared bytes, not a copy"
        );
    }

    #[test]
    fn timeouts_default_parse_and_are_capped() {
        assert_eq!(wait_timeout(None).unwrap(), DEFAULT_WAIT);
        assert_eq!(wait_timeout(Some("90")).unwrap(), Duration::from_secs(90));
        assert_eq!(wait_timeout(Some("5m")).unwrap(), MAX_WAIT);
        assert!(wait_timeout(Some("6m")).is_err());
        assert!(wait_timeout(Some("soon")).is_err());
    }
}
