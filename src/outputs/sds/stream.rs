//! One SDS stream (`StreamSecrets` or `DeltaSecrets`): a response body that holds at
//! most one response, computed when the client can take it, and a task that reads
//! the client's requests, follows the catalog and drops a client that stops reading.
//!
//! Every response carries the current state of what the client subscribed to
//! (DIST-5), so a slow client needs no queue: when the HTTP/2 layer asks the body for
//! more, the body asks the conversation for the response to the *current* catalog.
//! Changes that happen while a client is not reading are folded into the next
//! response. What a stream holds is its conversation and the chunks of one response,
//! whose large parts are the catalog's shared bytes (`super::wire`).
//!
//! A client that does not take what it is owed within the stall timeout (a change is
//! waiting, or a response is half sent, and the body has not been asked for anything
//! since) is dropped: its connection is closed through the [`ConnectionHandle`] the
//! listener gave the request, because a body HTTP/2 no longer polls cannot end itself.
//! A request that cannot be decoded ends the stream with that non-OK status. It does
//! not own the rules of the conversation (`super::protocol`) or the gRPC routing
//! (`super::service`).

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use futures_util::task::AtomicWaker;
use hyper::body::Frame;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status, Streaming};

use super::gauges::{Gauges, OpenStream, Variant};
use super::protocol::{Delta, ProtocolError, Received, Sotw, Step};
use super::resources::Catalog;
use super::wire::Frames;
use crate::net::ConnectionHandle;
use crate::telemetry::log_guard::{Clip, ClipList};

/// A conversation the stream can hold: `Sotw` or `Delta`.
pub(crate) trait Conversation: Default + Send + 'static {
    /// The request message.
    type Request: prost::Message + Default + Send + 'static;
    /// The label in metrics and logs.
    const VARIANT: Variant;

    /// Take in a request.
    fn receive(&mut self, request: &Self::Request) -> Result<Received, ProtocolError>;

    /// The response owed for `catalog`, if any, and its version.
    fn respond(&mut self, catalog: &Catalog, force: bool) -> Option<Frames>;

    /// The names a request subscribes to, for logs.
    fn names(request: &Self::Request) -> &[String];
}

impl Conversation for Sotw {
    type Request = DiscoveryRequest;
    const VARIANT: Variant = Variant::Sotw;

    fn receive(&mut self, request: &DiscoveryRequest) -> Result<Received, ProtocolError> {
        Sotw::receive(self, request)
    }

    fn respond(&mut self, catalog: &Catalog, force: bool) -> Option<Frames> {
        Sotw::respond(self, catalog, force).map(|response| response.frames())
    }

    fn names(request: &DiscoveryRequest) -> &[String] {
        &request.resource_names
    }
}

impl Conversation for Delta {
    type Request = DeltaDiscoveryRequest;
    const VARIANT: Variant = Variant::Delta;

    fn receive(&mut self, request: &DeltaDiscoveryRequest) -> Result<Received, ProtocolError> {
        Delta::receive(self, request)
    }

    fn respond(&mut self, catalog: &Catalog, _force: bool) -> Option<Frames> {
        // Delta answers what changed for the client; a new subscription is a change.
        Delta::respond(self, catalog).map(|response| response.frames())
    }

    fn names(request: &DeltaDiscoveryRequest) -> &[String] {
        &request.resource_names_subscribe
    }
}

/// What the body and the task share.
struct Shared<C> {
    state: Mutex<State<C>>,
    waker: AtomicWaker,
}

struct State<C> {
    conversation: C,
    /// A request asked for a response now.
    force: bool,
    /// The status to end the stream with, once the current response is out.
    end: Option<Status>,
    /// The rest of the response being sent.
    frames: Frames,
    /// The catalog revision the body last answered for.
    evaluated: u64,
    /// When the body last handed out a chunk or looked at the catalog.
    progress: Instant,
}

impl<C> Shared<C> {
    fn lock(&self) -> MutexGuard<'_, State<C>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Change the state, then wake the body so that it looks.
    fn update(&self, change: impl FnOnce(&mut State<C>)) {
        change(&mut self.lock());
        self.waker.wake();
    }
}

/// How a stream is bounded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamLimits {
    /// How long a client may leave what it is owed untaken.
    pub stall_timeout: Duration,
}

/// Start a stream over `inbound`: the response body to return, and the task that
/// drives it (spawned by the caller under the shutdown tree).
pub(crate) fn start<C: Conversation>(
    inbound: Streaming<C::Request>,
    catalog: watch::Receiver<Arc<Catalog>>,
    connection: Option<ConnectionHandle>,
    limits: StreamLimits,
    gauges: Arc<Gauges>,
    open: OpenStream,
    cancel: CancellationToken,
) -> (StreamBody<C>, impl Future<Output = ()> + Send + 'static) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            conversation: C::default(),
            force: false,
            end: None,
            frames: Frames::default(),
            evaluated: 0,
            progress: Instant::now(),
        }),
        waker: AtomicWaker::new(),
    });
    let body_gone = CancellationToken::new();
    let body = StreamBody {
        shared: Arc::clone(&shared),
        catalog: catalog.clone(),
        finished: false,
        open,
        _gone: body_gone.clone().drop_guard(),
    };
    let task = drive(Driver {
        inbound,
        shared,
        catalog,
        connection,
        limits,
        gauges,
        cancel,
        body_gone,
    });
    (body, task)
}

/// The response body of one stream.
pub(crate) struct StreamBody<C> {
    shared: Arc<Shared<C>>,
    catalog: watch::Receiver<Arc<Catalog>>,
    finished: bool,
    open: OpenStream,
    /// Tells the task the body is gone (the stream ended or the connection closed).
    _gone: tokio_util::sync::DropGuard,
}

impl<C: Conversation> hyper::body::Body for StreamBody<C> {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        let mut state = this.shared.lock();
        state.progress = Instant::now();
        if let Some(chunk) = state.frames.pop() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(status) = state.end.take() {
            this.finished = true;
            return Poll::Ready(Some(Ok(Frame::trailers(trailers(&status)))));
        }
        this.shared.waker.register(cx.waker());
        let catalog = Arc::clone(&this.catalog.borrow());
        state.evaluated = catalog.revision;
        let force = std::mem::take(&mut state.force);
        if let Some(frames) = state.conversation.respond(&catalog, force) {
            state.frames = frames;
            this.open.pushed();
            tracing::debug!(version = catalog.revision, "SDS push");
            if let Some(chunk) = state.frames.pop() {
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
        }
        Poll::Pending
    }
}

/// The gRPC trailers for `status`.
pub(crate) fn trailers(status: &Status) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    if status.add_header(&mut map).is_err() {
        // Only a message that cannot be a header value fails; send the code alone.
        map.insert(
            Status::GRPC_STATUS,
            http::HeaderValue::from(status.code() as i32),
        );
    }
    map
}

struct Driver<C: Conversation> {
    inbound: Streaming<C::Request>,
    shared: Arc<Shared<C>>,
    catalog: watch::Receiver<Arc<Catalog>>,
    connection: Option<ConnectionHandle>,
    limits: StreamLimits,
    gauges: Arc<Gauges>,
    cancel: CancellationToken,
    body_gone: CancellationToken,
}

/// Read requests, follow the catalog and watch for a stalled client until the
/// stream ends.
async fn drive<C: Conversation>(mut d: Driver<C>) {
    // Since when the client has been owed something (a change, a forced answer, the
    // rest of a response), if it is.
    let mut owed_since: Option<Instant> = None;
    loop {
        let deadline = owed_since.map(|since| {
            let progress = d.shared.lock().progress;
            since.max(progress) + d.limits.stall_timeout
        });
        tokio::select! {
            () = d.body_gone.cancelled() => return,
            () = d.cancel.cancelled() => {
                d.shared.update(|state| { state.end.get_or_insert_with(|| Status::ok("")); });
                return;
            }
            message = d.inbound.message() => match message {
                Ok(Some(request)) => {
                    if !receive(&d, &request) {
                        return;
                    }
                }
                Ok(None) => {
                    d.shared.update(|state| { state.end.get_or_insert_with(|| Status::ok("")); });
                    return;
                }
                Err(status) => {
                    end_on_error(&d, status);
                    return;
                }
            },
            changed = d.catalog.changed() => {
                if changed.is_err() {
                    d.shared.update(|state| { state.end.get_or_insert_with(|| Status::unavailable("the gateway is stopping")); });
                    return;
                }
                d.shared.waker.wake();
            }
            () = sleep_until(deadline) => {
                if stalled(&d, owed_since) {
                    d.gauges.dropped(C::VARIANT, "stalled");
                    if let Some(connection) = &d.connection {
                        connection.close("sds_stalled");
                    }
                    d.shared.update(|state| {
                        state.end = Some(Status::deadline_exceeded("the client stopped reading"));
                    });
                    return;
                }
            }
        }
        owed_since = owed(&d).then(|| owed_since.unwrap_or_else(Instant::now));
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Whether the client is owed something it has not taken: the rest of a response, a
/// forced answer, or a catalog revision the body has not answered for.
fn owed<C: Conversation>(d: &Driver<C>) -> bool {
    let current = d.catalog.borrow().revision;
    let state = d.shared.lock();
    !state.frames.is_empty() || state.force || state.evaluated < current
}

/// Owed something since `since` and no progress within the stall timeout.
fn stalled<C: Conversation>(d: &Driver<C>, since: Option<Instant>) -> bool {
    let Some(since) = since else {
        return false;
    };
    let progress = d.shared.lock().progress;
    owed(d) && Instant::now() >= since.max(progress) + d.limits.stall_timeout
}

/// Take in one request; `false` when the stream ends because of it.
fn receive<C: Conversation>(d: &Driver<C>, request: &C::Request) -> bool {
    tracing::debug!(names = %ClipList::new(C::names(request)), "SDS request");
    let received = {
        let mut state = d.shared.lock();
        match state.conversation.receive(request) {
            Err(err) => {
                d.gauges.refused_request(C::VARIANT, &err);
                state.end = Some(Status::invalid_argument(
                    Clip::new(&err.to_string()).to_string(),
                ));
                drop(state);
                d.shared.waker.wake();
                return false;
            }
            Ok(received) => {
                if received.step == Step::Respond {
                    state.force = true;
                }
                received
            }
        }
    };
    d.gauges.note(C::VARIANT, &received);
    if received.step == Step::Respond {
        let catalog = Arc::clone(&d.catalog.borrow());
        let missing: Vec<&String> = C::names(request)
            .iter()
            .filter(|name| !name.is_empty() && *name != "*" && catalog.get(name).is_none())
            .collect();
        if !missing.is_empty() {
            d.gauges.not_offered(&missing);
        }
        d.shared.waker.wake();
    }
    true
}

/// The client's request stream failed. A frame that cannot be decoded (malformed,
/// compressed without an encoding, over the size limit) ends the stream with that
/// status; a client that went away ends it quietly.
fn end_on_error<C: Conversation>(d: &Driver<C>, status: Status) {
    let malformed = matches!(
        status.code(),
        Code::Internal
            | Code::InvalidArgument
            | Code::OutOfRange
            | Code::ResourceExhausted
            | Code::Unimplemented
    );
    if malformed {
        d.gauges.dropped(C::VARIANT, "malformed");
        d.gauges.malformed(C::VARIANT, &status);
        let code = if status.code() == Code::Internal {
            Code::InvalidArgument
        } else {
            status.code()
        };
        let reason = format!("malformed request: {}", Clip::new(status.message()));
        d.shared
            .update(|state| state.end = Some(Status::new(code, reason)));
    } else {
        tracing::debug!(
            code = status.code().description(),
            "SDS stream ended by the client"
        );
        d.shared.update(|state| {
            state.end.get_or_insert_with(|| Status::ok(""));
        });
    }
}
