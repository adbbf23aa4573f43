//! The `SecretDiscoveryService` gRPC service: one task per stream, driven by the
//! stream's requests and the catalog's changes.
//!
//! Owns the I/O around [`super::protocol`]: receiving requests, pushing responses,
//! logging NACKs and stale nonces, the stream gauge and push counters. A stream ends
//! when the client goes away, on a request that cannot be served (wrong type URL), or
//! at shutdown; one stream's end never affects another.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryService;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;

use super::protocol::{Delta, ProtocolError, Received, Sotw, Step};
use super::resources::{Catalog, SECRET_TYPE_URL};
use crate::shutdown::Shutdown;
use crate::telemetry::Metrics;

/// Open streams, by variant.
pub const STREAMS_METRIC: &str = "fedgw_sds_streams";
/// Responses sent, by variant.
pub const PUSHES_METRIC: &str = "fedgw_sds_pushes_total";
/// Responses the client rejected, by variant.
pub const NACKS_METRIC: &str = "fedgw_sds_nacks_total";

/// Responses queued per stream before the task waits for the client.
const STREAM_BUFFER: usize = 4;

/// The service behind the SDS listener; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct SdsService {
    catalog: watch::Receiver<Arc<Catalog>>,
    shutdown: Shutdown,
    gauges: Arc<Gauges>,
}

#[derive(Debug)]
struct Gauges {
    metrics: Metrics,
    sotw: AtomicI64,
    delta: AtomicI64,
}

#[derive(Debug, Clone, Copy)]
enum Variant {
    Sotw,
    Delta,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Self::Sotw => "sotw",
            Self::Delta => "delta",
        }
    }
}

/// Counts a stream as open while alive.
struct OpenStream {
    gauges: Arc<Gauges>,
    variant: Variant,
}

impl Gauges {
    fn add(&self, variant: Variant, by: i64) {
        let counter = match variant {
            Variant::Sotw => &self.sotw,
            Variant::Delta => &self.delta,
        };
        let now = counter.fetch_add(by, Ordering::SeqCst) + by;
        self.metrics.set(
            STREAMS_METRIC,
            "Open SDS streams.",
            &[("variant", variant.label())],
            now as f64,
        );
    }

    fn count(&self, name: &'static str, help: &'static str, variant: Variant) {
        self.metrics
            .inc(name, help, &[("variant", variant.label())], 1.0);
    }
}

impl OpenStream {
    fn new(gauges: &Arc<Gauges>, variant: Variant) -> Self {
        gauges.add(variant, 1);
        Self {
            gauges: Arc::clone(gauges),
            variant,
        }
    }

    fn pushed(&self) {
        self.gauges
            .count(PUSHES_METRIC, "SDS responses sent.", self.variant);
    }

    /// Log what a request says besides its step.
    fn note(&self, received: &Received) {
        if let Some(nack) = &received.nack {
            self.gauges.count(
                NACKS_METRIC,
                "SDS responses rejected by the client.",
                self.variant,
            );
            tracing::warn!(
                nonce = %nack.nonce,
                version = %nack.version_info,
                error = %nack.message,
                "SDS client rejected a response (NACK); it keeps its previous secrets"
            );
        }
        if received.stale {
            tracing::debug!("SDS request with a stale nonce ignored");
        }
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.gauges.add(self.variant, -1);
    }
}

impl SdsService {
    pub(crate) fn new(
        catalog: watch::Receiver<Arc<Catalog>>,
        metrics: Metrics,
        shutdown: Shutdown,
    ) -> Self {
        let gauges = Arc::new(Gauges {
            metrics,
            sotw: AtomicI64::new(0),
            delta: AtomicI64::new(0),
        });
        for variant in [Variant::Sotw, Variant::Delta] {
            gauges.add(variant, 0);
        }
        Self {
            catalog,
            shutdown,
            gauges,
        }
    }
}

type Outbox<T> = mpsc::Sender<Result<T, Status>>;

#[tonic::async_trait]
impl SecretDiscoveryService for SdsService {
    type DeltaSecretsStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;
    type StreamSecretsStream = ReceiverStream<Result<DiscoveryResponse, Status>>;

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let (out, rx) = mpsc::channel(STREAM_BUFFER);
        let open = OpenStream::new(&self.gauges, Variant::Sotw);
        let task = sotw(
            request.into_inner(),
            out,
            self.catalog.clone(),
            self.shutdown.token(),
            open,
        );
        self.shutdown
            .spawn(task.instrument(tracing::info_span!("sds_stream", variant = "sotw")));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_secrets(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        let (out, rx) = mpsc::channel(STREAM_BUFFER);
        let open = OpenStream::new(&self.gauges, Variant::Delta);
        let task = delta(
            request.into_inner(),
            out,
            self.catalog.clone(),
            self.shutdown.token(),
            open,
        );
        self.shutdown
            .spawn(task.instrument(tracing::info_span!("sds_stream", variant = "delta")));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let request = request.into_inner();
        // A one-shot conversation: the first request, answered with the current state.
        let mut conversation = Sotw::default();
        conversation.receive(&request).map_err(refused)?;
        let catalog = Arc::clone(&self.catalog.borrow());
        let mut response =
            conversation
                .respond(&catalog, true)
                .unwrap_or_else(|| DiscoveryResponse {
                    type_url: SECRET_TYPE_URL.to_owned(),
                    ..DiscoveryResponse::default()
                });
        // Unary: no ACK follows, so no nonce.
        response.nonce.clear();
        Ok(Response::new(response))
    }
}

fn refused(err: ProtocolError) -> Status {
    tracing::warn!(error = %err, "SDS request refused");
    Status::invalid_argument(err.to_string())
}

/// What woke a stream's task.
enum Wake<T> {
    Request(T),
    Changed,
    End,
}

async fn next<T>(
    inbound: &mut Streaming<T>,
    catalog: &mut watch::Receiver<Arc<Catalog>>,
    out_closed: impl Future<Output = ()>,
    cancel: &CancellationToken,
) -> Wake<T> {
    tokio::select! {
        () = cancel.cancelled() => Wake::End,
        () = out_closed => Wake::End,
        message = inbound.message() => match message {
            Ok(Some(request)) => Wake::Request(request),
            Ok(None) => Wake::End,
            Err(status) => {
                tracing::debug!(%status, "SDS stream ended by the client");
                Wake::End
            }
        },
        changed = catalog.changed() => if changed.is_ok() { Wake::Changed } else { Wake::End },
    }
}

async fn sotw(
    mut inbound: Streaming<DiscoveryRequest>,
    out: Outbox<DiscoveryResponse>,
    mut catalog: watch::Receiver<Arc<Catalog>>,
    cancel: CancellationToken,
    open: OpenStream,
) {
    let mut conversation = Sotw::default();
    loop {
        let force = match next(&mut inbound, &mut catalog, out.closed(), &cancel).await {
            Wake::End => return,
            Wake::Changed => false,
            Wake::Request(request) => {
                tracing::debug!(names = ?request.resource_names, version = %request.version_info, nonce = %request.response_nonce, "SDS request");
                match conversation.receive(&request) {
                    Err(err) => {
                        let _closing = out.send(Err(refused(err))).await;
                        return;
                    }
                    Ok(received) => {
                        open.note(&received);
                        if received.step == Step::Nothing {
                            continue;
                        }
                        true
                    }
                }
            }
        };
        let current = Arc::clone(&catalog.borrow_and_update());
        let Some(response) = conversation.respond(&current, force) else {
            continue;
        };
        if force && let Some(names) = conversation.subscribed() {
            let missing: Vec<&String> = names.iter().filter(|n| current.get(n).is_none()).collect();
            if !missing.is_empty() {
                tracing::info!(?missing, "SDS names not offered (yet); sent when they are");
            }
        }
        tracing::debug!(version = %response.version_info, nonce = %response.nonce, resources = response.resources.len(), "SDS push");
        if out.send(Ok(response)).await.is_err() {
            return;
        }
        open.pushed();
    }
}

async fn delta(
    mut inbound: Streaming<DeltaDiscoveryRequest>,
    out: Outbox<DeltaDiscoveryResponse>,
    mut catalog: watch::Receiver<Arc<Catalog>>,
    cancel: CancellationToken,
    open: OpenStream,
) {
    let mut conversation = Delta::default();
    loop {
        match next(&mut inbound, &mut catalog, out.closed(), &cancel).await {
            Wake::End => return,
            Wake::Changed => {}
            Wake::Request(request) => match conversation.receive(&request) {
                Err(err) => {
                    let _closing = out.send(Err(refused(err))).await;
                    return;
                }
                Ok(received) => {
                    open.note(&received);
                    if received.step == Step::Nothing {
                        continue;
                    }
                }
            },
        }
        let current = Arc::clone(&catalog.borrow_and_update());
        let Some(response) = conversation.respond(&current) else {
            continue;
        };
        tracing::debug!(version = %response.system_version_info, resources = response.resources.len(), removed = ?response.removed_resources, "SDS delta push");
        if out.send(Ok(response)).await.is_err() {
            return;
        }
        open.pushed();
    }
}
