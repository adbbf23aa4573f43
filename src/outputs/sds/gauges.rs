//! The SDS streams' shared accounting: the stream gauges and counters, the cap on
//! open streams, and the rate-limited log of what clients send (NACK details, bad
//! requests, dropped streams).
//!
//! Owns the numbers and log lines every stream and the service report. It does not
//! own a stream's conversation ([`super::stream`]) or routing ([`super::service`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Instant;

use tonic::Status;

use super::protocol::{ProtocolError, Received};
use crate::telemetry::families::{SDS_NACKS, SDS_PUSHES, SDS_STREAMS, SDS_STREAMS_DROPPED};
use crate::telemetry::log_guard::{Clip, ClipList, RateLimit};
use crate::telemetry::{Counter, Metrics};

/// The stream metrics and the client-caused warnings, shared by every stream.
#[derive(Debug)]
pub(crate) struct Gauges {
    pub(super) metrics: Metrics,
    pub(super) sotw: AtomicI64,
    pub(super) delta: AtomicI64,
    pub(super) open: AtomicUsize,
    pub(super) nack_log: RateLimit,
    pub(super) request_log: RateLimit,
    pub(super) drop_log: RateLimit,
}

/// The two streaming methods.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Variant {
    Sotw,
    Delta,
}

impl Variant {
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Sotw => "sotw",
            Self::Delta => "delta",
        }
    }
}

impl Gauges {
    pub(super) fn add(&self, variant: Variant, by: i64) {
        let counter = match variant {
            Variant::Sotw => &self.sotw,
            Variant::Delta => &self.delta,
        };
        let now = counter.fetch_add(by, Ordering::SeqCst) + by;
        self.metrics
            .set(SDS_STREAMS, &[("variant", variant.label())], now as f64);
    }

    pub(super) fn count(&self, counter: Counter, variant: Variant) {
        self.metrics
            .inc(counter, &[("variant", variant.label())], 1.0);
    }

    /// Log what a request says besides its step: a NACK (counted; logged at a
    /// bounded rate, its client-supplied text clipped) or a stale nonce.
    pub(crate) fn note(&self, variant: Variant, received: &Received) {
        if let Some(nack) = &received.nack {
            self.count(SDS_NACKS, variant);
            if let Some(held_back) = self.nack_log.check(Instant::now()) {
                tracing::warn!(
                    variant = variant.label(),
                    nonce = %Clip::with_max(&nack.nonce, 40),
                    version = %Clip::with_max(&nack.version_info, 40),
                    error = %Clip::new(&nack.message),
                    similar_warnings_held_back = held_back,
                    "SDS client rejected a response (NACK); it keeps its previous secrets"
                );
            }
        }
        if received.stale {
            tracing::debug!("SDS request with a stale nonce ignored");
        }
    }

    /// A stream ended by the server for `reason`.
    pub(crate) fn dropped(&self, variant: Variant, reason: &'static str) {
        self.metrics.inc(
            SDS_STREAMS_DROPPED,
            &[("variant", variant.label()), ("reason", reason)],
            1.0,
        );
        if reason == "stalled"
            && let Some(held_back) = self.drop_log.check(Instant::now())
        {
            tracing::info!(
                variant = variant.label(),
                similar_messages_held_back = held_back,
                "SDS client stopped reading; its connection was closed"
            );
        }
    }

    /// A request the conversation refused (the stream ends).
    pub(crate) fn refused_request(&self, variant: Variant, err: &ProtocolError) {
        if let Some(held_back) = self.request_log.check(Instant::now()) {
            tracing::warn!(
                variant = variant.label(),
                error = %Clip::new(&err.to_string()),
                similar_warnings_held_back = held_back,
                "SDS request refused"
            );
        }
    }

    /// A request frame that could not be decoded (the stream ends with its status).
    pub(crate) fn malformed(&self, variant: Variant, status: &Status) {
        if let Some(held_back) = self.request_log.check(Instant::now()) {
            tracing::warn!(
                variant = variant.label(),
                code = status.code().description(),
                error = %Clip::new(status.message()),
                similar_warnings_held_back = held_back,
                "SDS request could not be decoded; the stream ends"
            );
        }
    }

    /// Names asked for that are not offered (yet).
    pub(crate) fn not_offered(&self, missing: &[&String]) {
        tracing::debug!(
            missing = %ClipList::new(missing),
            "SDS names not offered (yet); sent when they are"
        );
    }
}

/// Counts a stream as open while alive.
#[derive(Debug)]
pub(crate) struct OpenStream {
    gauges: Arc<Gauges>,
    variant: Variant,
}

impl OpenStream {
    /// Count a new stream, unless `max` are open already.
    pub(super) fn new(gauges: &Arc<Gauges>, variant: Variant, max: usize) -> Option<Self> {
        if gauges.open.fetch_add(1, Ordering::SeqCst) >= max {
            gauges.open.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        gauges.add(variant, 1);
        Some(Self {
            gauges: Arc::clone(gauges),
            variant,
        })
    }

    /// A response was handed to the HTTP layer.
    pub(crate) fn pushed(&self) {
        self.gauges.count(SDS_PUSHES, self.variant);
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.gauges.open.fetch_sub(1, Ordering::SeqCst);
        self.gauges.add(self.variant, -1);
    }
}
