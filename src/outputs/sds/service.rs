//! The `envoy.service.secret.v3.SecretDiscoveryService` gRPC service, served at the
//! HTTP level so that responses can be written from the catalog's shared bytes.
//!
//! Owns routing the three methods (`StreamSecrets` and `DeltaSecrets` become
//! [`super::stream`] streams; `FetchSecrets` is answered once), the gRPC framing
//! around them (request checks, decoding under a size limit, trailers), the cap on
//! open streams (counted by [`super::gauges`]). What it logs of a request is clipped and
//! rate-limited ([`crate::telemetry::log_guard`]): a client controls NACK details, nonces and
//! resource names. A stream ends when the client goes away, on a request that cannot
//! be served (wrong type URL: `INVALID_ARGUMENT`; undecodable frame: a non-OK
//! status), when it stops reading (dropped), or at shutdown; one stream's end never
//! affects another.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf as _, Bytes};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use hyper::body::Frame;
use tokio::sync::watch;
use tonic::codec::{DecodeBuf, Decoder, Streaming};
use tonic::server::NamedService;
use tonic::{Code, Status};
use tracing::Instrument as _;

use super::gauges::{Gauges, OpenStream, Variant};
use super::protocol::{Delta, Sotw};
use super::resources::Catalog;
use super::stream::{self, Conversation, StreamLimits};
use super::wire::Frames;
use crate::net::ConnectionHandle;
use crate::shutdown::Shutdown;
use crate::telemetry::Metrics;
use crate::telemetry::families::SDS_STREAMS_REFUSED;
use crate::telemetry::log_guard::{Clip, RateLimit};

/// The gRPC service name.
const SERVICE: &str = "envoy.service.secret.v3.SecretDiscoveryService";

/// How long a `FetchSecrets` caller has to send its request.
const FETCH_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How often each kind of client-caused warning may be logged: a burst of this many
/// per [`WARN_INTERVAL`], then one line with the count held back.
const WARN_BURST: u32 = 5;
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// How the service is bounded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServiceLimits {
    /// Open streams at most (both variants).
    pub max_streams: usize,
    /// The largest request message decoded, in bytes.
    pub max_request_bytes: usize,
    /// See [`StreamLimits::stall_timeout`].
    pub stall_timeout: Duration,
}

/// The service behind the SDS listener; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct SdsService {
    catalog: watch::Receiver<Arc<Catalog>>,
    shutdown: Shutdown,
    gauges: Arc<Gauges>,
    limits: ServiceLimits,
}

impl SdsService {
    pub(crate) fn new(
        catalog: watch::Receiver<Arc<Catalog>>,
        metrics: Metrics,
        shutdown: Shutdown,
        limits: ServiceLimits,
    ) -> Self {
        let gauges = Arc::new(Gauges {
            metrics,
            sotw: AtomicI64::new(0),
            delta: AtomicI64::new(0),
            open: AtomicUsize::new(0),
            nack_log: RateLimit::new(WARN_INTERVAL, WARN_BURST),
            request_log: RateLimit::new(WARN_INTERVAL, WARN_BURST),
            drop_log: RateLimit::new(WARN_INTERVAL, WARN_BURST),
        });
        for variant in [Variant::Sotw, Variant::Delta] {
            gauges.add(variant, 0);
        }
        Self {
            catalog,
            shutdown,
            gauges,
            limits,
        }
    }

    async fn call<B>(self, request: http::Request<B>) -> http::Response<tonic::body::Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<tonic::codegen::StdError>,
    {
        let method = request
            .uri()
            .path()
            .strip_prefix("/")
            .and_then(|path| path.strip_prefix(SERVICE))
            .and_then(|rest| rest.strip_prefix('/'))
            .map(str::to_owned);
        if let Err(status) = check_request(&request) {
            return status.into_http();
        }
        match method.as_deref() {
            Some("StreamSecrets") => self.stream::<Sotw, B>(request),
            Some("DeltaSecrets") => self.stream::<Delta, B>(request),
            Some("FetchSecrets") => self.fetch(request).await,
            _ => Status::unimplemented(
                "this server offers StreamSecrets, DeltaSecrets and FetchSecrets",
            )
            .into_http(),
        }
    }

    fn stream<C, B>(&self, request: http::Request<B>) -> http::Response<tonic::body::Body>
    where
        C: Conversation,
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<tonic::codegen::StdError>,
    {
        let Some(open) = OpenStream::new(&self.gauges, C::VARIANT, self.limits.max_streams) else {
            self.gauges
                .metrics
                .inc(SDS_STREAMS_REFUSED, &[("reason", "limit")], 1.0);
            return Status::resource_exhausted(format!(
                "too many SDS streams (sinks.sds.max_streams = {})",
                self.limits.max_streams
            ))
            .into_http();
        };
        let connection = request.extensions().get::<ConnectionHandle>().cloned();
        let inbound = Streaming::new_request(
            ProstDecoder::<C::Request>::default(),
            request.into_body(),
            None,
            Some(self.limits.max_request_bytes),
        );
        let (body, task) = stream::start::<C>(
            inbound,
            self.catalog.clone(),
            connection,
            StreamLimits {
                stall_timeout: self.limits.stall_timeout,
            },
            Arc::clone(&self.gauges),
            open,
            self.shutdown.token(),
        );
        self.shutdown.spawn(task.instrument(tracing::info_span!(
            "sds_stream",
            variant = C::VARIANT.label()
        )));
        grpc_response(tonic::body::Body::new(body))
    }

    /// `FetchSecrets`: one request, answered with the current state and no nonce.
    async fn fetch<B>(&self, request: http::Request<B>) -> http::Response<tonic::body::Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<tonic::codegen::StdError>,
    {
        let mut inbound = Streaming::new_request(
            ProstDecoder::<DiscoveryRequest>::default(),
            request.into_body(),
            None,
            Some(self.limits.max_request_bytes),
        );
        let request = match tokio::time::timeout(FETCH_REQUEST_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(request))) => request,
            Ok(Ok(None)) => {
                return Status::invalid_argument("FetchSecrets without a request").into_http();
            }
            Ok(Err(status)) => {
                self.gauges.malformed(Variant::Sotw, &status);
                return Status::new(
                    if status.code() == Code::Internal {
                        Code::InvalidArgument
                    } else {
                        status.code()
                    },
                    format!("malformed request: {}", Clip::new(status.message())),
                )
                .into_http();
            }
            Err(_elapsed) => {
                return Status::deadline_exceeded("no request within 10 s").into_http();
            }
        };
        let mut conversation = Sotw::default();
        if let Err(err) = conversation.receive(&request) {
            self.gauges.refused_request(Variant::Sotw, &err);
            return Status::invalid_argument(Clip::new(&err.to_string()).to_string()).into_http();
        }
        let catalog = Arc::clone(&self.catalog.borrow());
        let frames = match conversation.respond(&catalog, true) {
            // Unary: no ACK follows, so no nonce.
            Some(mut response) => {
                response.nonce.clear();
                response.frames()
            }
            None => super::wire::sotw(&catalog.revision.to_string(), "", &[]),
        };
        grpc_response(tonic::body::Body::new(FramesBody {
            frames,
            trailers: Some(stream::trailers(&Status::ok(""))),
        }))
    }
}

/// A gRPC request: `POST`, `application/grpc`, uncompressed.
fn check_request<B>(request: &http::Request<B>) -> Result<(), Status> {
    if request.method() != http::Method::POST {
        return Err(Status::unimplemented("gRPC needs POST"));
    }
    let content_type = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/grpc") {
        return Err(Status::invalid_argument(
            "content-type is not application/grpc",
        ));
    }
    let encoding = request
        .headers()
        .get("grpc-encoding")
        .and_then(|value| value.to_str().ok());
    if encoding.is_some_and(|encoding| encoding != "identity") {
        return Err(Status::unimplemented(
            "compressed requests are not accepted (grpc-encoding)",
        ));
    }
    Ok(())
}

fn grpc_response(body: tonic::body::Body) -> http::Response<tonic::body::Body> {
    let mut response = http::Response::new(body);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

impl NamedService for SdsService {
    const NAME: &'static str = SERVICE;
}

impl<B> tower::Service<http::Request<B>> for SdsService
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send + 'static>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let service = self.clone();
        Box::pin(async move { Ok(service.call(request).await) })
    }
}

/// Decodes one protobuf message per gRPC frame.
struct ProstDecoder<T>(PhantomData<fn() -> T>);

impl<T> Default for ProstDecoder<T> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T: prost::Message + Default> Decoder for ProstDecoder<T> {
    type Item = T;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<T>, Status> {
        let message = T::decode(buf.copy_to_bytes(buf.remaining()))
            .map_err(|err| Status::invalid_argument(format!("not a valid message: {err}")))?;
        Ok(Some(message))
    }
}

/// A whole answer: chunks, then trailers.
struct FramesBody {
    frames: Frames,
    trailers: Option<http::HeaderMap>,
}

impl hyper::body::Body for FramesBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(chunk) = this.frames.pop() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}
