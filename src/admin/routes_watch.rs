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

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::watch;

use super::AdminState;
use super::error::ApiError;
use super::routes_bundles::{ListView, list_view};
use crate::config::{Scope, Seconds};

/// How long `wait` blocks without `timeout`.
pub(super) const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// The longest `timeout` accepted.
pub(super) const MAX_WAIT: Duration = Duration::from_secs(300);

/// How often an idle event stream sends a keep-alive comment.
pub(super) const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The query of `GET /v1/bundles`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WatchQuery {
    /// The revision the caller holds: answer once the global revision differs.
    wait: Option<u64>,
    /// How long to wait at most (`30`, `"30s"`, `"5m"`); only with `wait`.
    timeout: Option<String>,
}

/// `GET /v1/bundles[?wait=REVISION[&timeout=30s]]`: the full state; with `wait`, not
/// before the global revision differs from `REVISION` or the timeout passes (then the
/// state is answered unchanged, with `revision == REVISION`).
pub(super) async fn bundles(
    State(state): State<AdminState>,
    query: Result<Query<WatchQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<ListView>, ApiError> {
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
    Ok(Json(list_view(&state, &state.trust_store.snapshot())))
}

/// `GET /v1/events`: `text/event-stream` of `bundles` events, each the full state
/// with the global revision as its `id`. The first event comes at once unless the
/// client's `Last-Event-ID` is the current revision; then one per change (changes
/// that follow each other quickly may share one event: each carries the whole state).
/// Idle streams carry a keep-alive comment every [`KEEP_ALIVE`].
pub(super) async fn events(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    state.access.authorize(&headers, Scope::Read)?;
    let last_id = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<u64>().ok());
    let follower = Follower {
        feed: state.trust_store.subscribe(),
        ready: state.ready.clone(),
        sent: last_id,
        state,
    };
    let stream = futures_util::stream::unfold(follower, |mut follower| async move {
        let event = follower.next().await?;
        Some((Ok(event), follower))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")))
}

/// One event stream's position.
struct Follower {
    state: AdminState,
    feed: watch::Receiver<u64>,
    ready: watch::Receiver<bool>,
    /// The revision the client holds (sent last, or named by `Last-Event-ID`).
    sent: Option<u64>,
}

impl Follower {
    /// The next event, or `None` when the stream should end (shutdown, or the trust
    /// store is gone).
    async fn next(&mut self) -> Option<Event> {
        loop {
            let snapshot = self.state.trust_store.snapshot();
            if self.sent != Some(snapshot.revision) {
                let view = list_view(&self.state, &snapshot);
                let data = match serde_json::to_string(&view) {
                    Ok(data) => data,
                    Err(err) => {
                        tracing::error!(error = %err, "event stream: cannot serialise the state");
                        return None;
                    }
                };
                self.sent = Some(snapshot.revision);
                return Some(
                    Event::default()
                        .event("bundles")
                        .id(snapshot.revision.to_string())
                        .data(data),
                );
            }
            tokio::select! {
                changed = self.feed.changed() => changed.ok()?,
                () = shutting_down(&mut self.ready) => return None,
            }
        }
    }
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
    fn timeouts_default_parse_and_are_capped() {
        assert_eq!(wait_timeout(None).unwrap(), DEFAULT_WAIT);
        assert_eq!(wait_timeout(Some("90")).unwrap(), Duration::from_secs(90));
        assert_eq!(wait_timeout(Some("5m")).unwrap(), MAX_WAIT);
        assert!(wait_timeout(Some("6m")).is_err());
        assert!(wait_timeout(Some("soon")).is_err());
    }
}
