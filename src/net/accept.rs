//! The accept loop of one listener: admission against the caps, and accept errors.
//!
//! Owns, per listener: the count of open connections (a gauge) and per peer, the
//! refusal of a connection over a cap (per peer, per listener, the process-wide
//! [`Budget`], or a unix-socket peer that is not the socket's owner: accepted and
//! closed at once, counted by reason, logged at most every [`LOG_EVERY`]), and the
//! backoff after a failed accept (5 ms doubling to 1 s, reset by a success), so that
//! running out of descriptors never turns into a busy loop. Each admitted connection
//! is served in a task of the gateway ([`super::connection`]).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use tokio::time::Instant;
use tracing::Instrument as _;

use super::connection::{self, ListenerContext};
use super::fd::{Budget, BudgetSlot};
use super::stream::{Peer, PeerKey, Stream};
use super::{BoxError, Connector, Listener};
use crate::shutdown::Shutdown;
use crate::telemetry::families::{ACCEPT_ERRORS, CONNECTIONS_OPEN, CONNECTIONS_REFUSED};

/// The shortest pause after a failed accept.
const FIRST_BACKOFF: Duration = Duration::from_millis(5);

/// The longest pause after failed accepts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// At most one warning per listener and kind (refusals, accept errors) this often.
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(10);

/// Accept on `listener` until shutdown, admitting connections within the caps.
pub(crate) async fn run<C, S, B>(
    listener: Listener,
    context: Arc<ListenerContext<C>>,
    budget: Budget,
    shutdown: Shutdown,
) where
    C: Connector<Service = S>,
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let admission = Arc::new(Admission::new(context.name, &context, budget));
    let cancel = shutdown.token();
    let mut backoff = Backoff::default();
    let accept_errors = RateLimited::default();
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff.reset();
                pair
            }
            // The connection went away before it was accepted: nothing is wrong here.
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(err) => {
                context
                    .metrics
                    .inc(ACCEPT_ERRORS, &[("listener", context.name)], 1.0);
                let pause = backoff.failed();
                if let Some(counts) = accept_errors.note("accept", Instant::now()) {
                    tracing::warn!(
                        listener = context.name,
                        error = %err,
                        failures = counts.values().sum::<u64>(),
                        pause_ms = pause.as_millis(),
                        "accept failed; backing off (failures counted since the last such message)"
                    );
                }
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
        };
        let accepted_at = Instant::now();
        let Some(peer) = peer else {
            admission.refuse("no_credentials", None);
            continue;
        };
        let slot = match admission.admit(&peer, listener.owner()) {
            Ok(slot) => slot,
            Err(reason) => {
                // Dropping the stream closes it at once.
                drop(stream);
                admission.refuse(reason, Some(peer));
                continue;
            }
        };
        let context = Arc::clone(&context);
        let span = tracing::debug_span!("connection", listener = context.name, %peer);
        shutdown.spawn(
            async move {
                connection::serve(stream, peer, accepted_at, context).await;
                drop(slot);
            }
            .instrument(span),
        );
    }
}

/// The connections open on one listener, and how to refuse one.
struct Admission {
    name: &'static str,
    max_connections: usize,
    max_per_peer: usize,
    budget: Budget,
    metrics: crate::telemetry::Metrics,
    open: Mutex<Open>,
    refusals: RateLimited,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_peer: HashMap<PeerKey, usize>,
}

/// An admitted connection's place in its listener's counts and in the budget; both
/// are given back when it is dropped.
struct Slot {
    admission: Arc<Admission>,
    key: PeerKey,
    _budget: BudgetSlot,
}

impl Admission {
    fn new<C>(name: &'static str, context: &ListenerContext<C>, budget: Budget) -> Self {
        let admission = Self {
            name,
            max_connections: context.limits.max_connections,
            max_per_peer: context.limits.max_connections_per_peer,
            budget,
            metrics: context.metrics.clone(),
            open: Mutex::new(Open::default()),
            refusals: RateLimited::default(),
        };
        admission.gauge(0);
        admission
    }

    fn open(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admit a connection from `peer` if every cap allows it; else the reason.
    fn admit(self: &Arc<Self>, peer: &Peer, owner: Option<u32>) -> Result<Slot, &'static str> {
        if let (Some(owner), Peer::Unix { uid }) = (owner, peer)
            && *uid != owner
        {
            return Err("not_owner");
        }
        let key = peer.key();
        let mut open = self.open();
        if open.by_peer.get(&key).copied().unwrap_or(0) >= self.max_per_peer {
            return Err("peer_limit");
        }
        if open.total >= self.max_connections {
            return Err("listener_limit");
        }
        let budget = self.budget.try_take().ok_or("file_descriptors")?;
        *open.by_peer.entry(key).or_insert(0) += 1;
        open.total += 1;
        self.gauge(open.total);
        Ok(Slot {
            admission: Arc::clone(self),
            key,
            _budget: budget,
        })
    }

    fn refuse(&self, reason: &'static str, peer: Option<Peer>) {
        self.metrics.inc(
            CONNECTIONS_REFUSED,
            &[("listener", self.name), ("reason", reason)],
            1.0,
        );
        tracing::trace!(listener = self.name, reason, "connection refused");
        if let Some(counts) = self.refusals.note(reason, Instant::now()) {
            let summary = counts
                .iter()
                .map(|(reason, n)| format!("{reason}: {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            let last_peer = peer.map(|p| p.key().to_string()).unwrap_or_default();
            tracing::warn!(
                listener = self.name,
                refused = %summary,
                last_peer = %last_peer,
                "connections refused at accept (counted by reason since the last such message); see docs/operations.md#limits"
            );
        }
    }

    fn gauge(&self, open: usize) {
        #[expect(
            clippy::cast_precision_loss,
            reason = "a connection count is far below 2^52"
        )]
        let open = open as f64;
        self.metrics
            .set(CONNECTIONS_OPEN, &[("listener", self.name)], open);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.admission.open();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_peer.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.by_peer.remove(&self.key);
            }
        }
        let total = open.total;
        drop(open);
        self.admission.gauge(total);
    }
}

/// Exponential backoff after failed accepts.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: FIRST_BACKOFF,
        }
    }
}

impl Backoff {
    /// The pause after this failure.
    fn failed(&mut self) -> Duration {
        let pause = self.next;
        self.next = (pause * 2).min(MAX_BACKOFF);
        pause
    }

    fn reset(&mut self) {
        self.next = FIRST_BACKOFF;
    }
}

/// Counts events by kind and lets one message through every [`LOG_EVERY`].
#[derive(Debug, Default)]
struct RateLimited {
    state: Mutex<(Option<Instant>, BTreeMap<&'static str, u64>)>,
}

impl RateLimited {
    /// Count one `kind` at `now`; the counts since the last message when a message is
    /// due.
    fn note(&self, kind: &'static str, now: Instant) -> Option<BTreeMap<&'static str, u64>> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        *state.1.entry(kind).or_insert(0) += 1;
        let due = state
            .0
            .is_none_or(|last| now.duration_since(last) >= LOG_EVERY);
        if !due {
            return None;
        }
        state.0 = Some(now);
        Some(std::mem::take(&mut state.1))
    }
}

impl Listener {
    /// Accept one connection; `None` as the peer when a unix peer's credentials
    /// cannot be read.
    async fn accept(&self) -> io::Result<(Stream, Option<Peer>)> {
        match self {
            Self::Tcp(listener) => {
                let (stream, addr) = listener.accept().await?;
                // Small request/response exchanges: do not wait to fill segments.
                if let Err(err) = stream.set_nodelay(true) {
                    tracing::trace!(error = %err, "cannot set TCP_NODELAY");
                }
                Ok((Stream::Tcp(stream), Some(Peer::Tcp(addr))))
            }
            Self::Unix { listener, .. } => {
                let (stream, _) = listener.accept().await?;
                let peer = stream
                    .peer_cred()
                    .ok()
                    .map(|cred| Peer::Unix { uid: cred.uid() });
                Ok((Stream::Unix(stream), peer))
            }
        }
    }

    /// The only user a unix listener admits.
    fn owner(&self) -> Option<u32> {
        match self {
            Self::Tcp(_) => None,
            Self::Unix { owner, .. } => *owner,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_second_and_resets() {
        let mut backoff = Backoff::default();
        let pauses: Vec<u128> = (0..10).map(|_| backoff.failed().as_millis()).collect();
        assert_eq!(pauses, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.failed(), FIRST_BACKOFF);
    }

    #[test]
    fn rate_limited_lets_one_message_through_per_period_with_counts() {
        let limited = RateLimited::default();
        let start = Instant::now();
        assert_eq!(
            limited.note("peer_limit", start),
            Some(BTreeMap::from([("peer_limit", 1)]))
        );
        for _ in 0..5 {
            assert_eq!(
                limited.note("peer_limit", start + Duration::from_secs(1)),
                None
            );
        }
        assert_eq!(
            limited.note("listener_limit", start + Duration::from_secs(2)),
            None
        );
        assert_eq!(
            limited.note("peer_limit", start + LOG_EVERY),
            Some(BTreeMap::from([("listener_limit", 1), ("peer_limit", 6)]))
        );
    }
}
