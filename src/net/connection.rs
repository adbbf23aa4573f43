//! One connection: its setup (e.g. a TLS handshake), HTTP/1 or HTTP/2 (hyper), and
//! the watchdog that closes it.
//!
//! Owns the per-connection rules of a listener's [`Limits`]:
//! - **header timeout**: accept → setup → the first request (its head over HTTP/1,
//!   the preface and first request over HTTP/2) must complete within
//!   `header_timeout`, or the connection is dropped;
//! - **idle timeout**: a connection with no request in flight for `idle_timeout` is
//!   closed (gracefully: HTTP/2 GOAWAY, HTTP/1 close; dropped if that does not finish
//!   within [`CLOSE_GRACE`]). In-flight requests are counted from the service call to
//!   the end of the response body, so a long poll or an event stream is never idle,
//!   over HTTP/1 and HTTP/2 alike. Over HTTP/1, hyper's `header_read_timeout` also
//!   bounds the head of each later request;
//! - **request timeout** (where set): a response not fully sent within it closes the
//!   connection;
//! - HTTP/2 keep-alive PINGs every `ping_interval` find dead peers;
//! - [`ConnectionHandle::close`]: request code may end its connection at once;
//! - shutdown: graceful, then the connection ends when its requests have.
//!
//! Closing means dropping hyper's connection and with it the socket, so it takes
//! effect even when hyper is not polling a response body (an HTTP/2 stream stalled
//! on flow control, an HTTP/1 client that never reads). It does not own accepting or
//! the caps on connections ([`super::accept`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use super::stream::{Peer, Stream};
use super::{BoxError, Connector, Protocols};
use crate::config::net::Limits;
use crate::shutdown::Shutdown;
use crate::telemetry::Metrics;
use crate::telemetry::families::CONNECTIONS_CLOSED;

/// How long a connection closed gracefully (idle, or at shutdown once its requests
/// are done) may take to say goodbye before it is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A handle on the connection a request arrived on, found in every request's
/// [`http::Extensions`] (`request.extensions().get::<ConnectionHandle>()`; axum:
/// `Extension<ConnectionHandle>`; tonic: `request.extensions()`).
///
/// [`close`](Self::close) ends the connection promptly: its socket is closed by the
/// connection's own task, whatever hyper is doing, including when it is waiting for a
/// client to read (HTTP/1) or to open its flow-control window (HTTP/2), and every
/// request on the connection ends with it. Use it to drop a client that does not
/// read: it is the only way to reclaim such a connection's memory and descriptor.
///
/// ```
/// # fn f(request: http::Request<()>) {
/// use fedgw::net::ConnectionHandle;
/// if let Some(connection) = request.extensions().get::<ConnectionHandle>() {
///     connection.close("slow_reader");
/// }
/// # }
/// ```
#[derive(Clone)]
pub struct ConnectionHandle {
    shared: Arc<Shared>,
}

impl ConnectionHandle {
    /// Close the connection now. `reason` labels
    /// `fedgw_connections_closed_total{listener,reason}` (keep it a short constant,
    /// such as `"slow_reader"`). Only the first reason given counts.
    pub fn close(&self, reason: &'static str) {
        let _first = self.shared.reason.set(reason);
        self.shared.close.cancel();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.shared.close.is_cancelled()
    }

    /// Resolves once [`close`](Self::close) has been called.
    pub fn closed(&self) -> impl Future<Output = ()> + Send + '_ {
        self.shared.close.cancelled()
    }

    /// The other end.
    pub fn peer(&self) -> Peer {
        self.shared.peer
    }

    /// The listener's name (`https_web`, `https_spiffe`, `admin`, `sds`).
    pub fn listener(&self) -> &'static str {
        self.shared.listener
    }
}

impl std::fmt::Debug for ConnectionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionHandle")
            .field("listener", &self.shared.listener)
            .field("peer", &self.shared.peer)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// What the watchdog and the requests of one connection share.
struct Shared {
    listener: &'static str,
    peer: Peer,
    activity: Mutex<Activity>,
    /// Woken when a request starts or ends.
    changed: Notify,
    close: CancellationToken,
    reason: OnceLock<&'static str>,
}

struct Activity {
    next_id: u64,
    /// In-flight requests by number (ascending = oldest first), with their start.
    in_flight: BTreeMap<u64, Instant>,
    /// Requests seen so far.
    requests: u64,
    /// When the last in-flight request ended (or the connection was set up).
    idle_since: Instant,
}

/// Which timer the watchdog waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Header,
    Idle,
    Request,
    Drain,
}

impl Shared {
    fn activity(&self) -> std::sync::MutexGuard<'_, Activity> {
        self.activity.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next deadline and what it is for; `None` while requests without a
    /// request timeout are in flight.
    fn next_deadline(
        &self,
        limits: &Limits,
        header_deadline: Instant,
        draining_since: Option<Instant>,
    ) -> Option<(Instant, Timer)> {
        let activity = self.activity();
        if activity.requests == 0 {
            return Some((header_deadline, Timer::Header));
        }
        if let Some((_, oldest)) = activity.in_flight.first_key_value() {
            return limits
                .request_timeout
                .map(|timeout| (*oldest + timeout, Timer::Request));
        }
        Some(match draining_since {
            Some(since) => (since.max(activity.idle_since) + CLOSE_GRACE, Timer::Drain),
            None => (activity.idle_since + limits.idle_timeout, Timer::Idle),
        })
    }
}

/// A request in flight, from the service call until its response body is dropped.
struct InFlight {
    shared: Arc<Shared>,
    id: u64,
}

impl InFlight {
    fn start(shared: &Arc<Shared>) -> Self {
        let id = {
            let mut activity = shared.activity();
            let id = activity.next_id;
            activity.next_id += 1;
            activity.requests += 1;
            activity.in_flight.insert(id, Instant::now());
            id
        };
        shared.changed.notify_one();
        Self {
            shared: Arc::clone(shared),
            id,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        {
            let mut activity = self.shared.activity();
            activity.in_flight.remove(&self.id);
            if activity.in_flight.is_empty() {
                activity.idle_since = Instant::now();
            }
        }
        self.shared.changed.notify_one();
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted as in flight until dropped.
    pub struct Counted<B> {
        #[pin]
        body: B,
        in_flight: InFlight,
    }
}

impl<B: Body> Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The connector's service, counting requests and handing each its
/// [`ConnectionHandle`].
struct Tracked<S> {
    inner: S,
    shared: Arc<Shared>,
}

type Responding<B> = Pin<Box<dyn Future<Output = Result<Response<Counted<B>>, BoxError>> + Send>>;

impl<S, B> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<Counted<B>>;
    type Error = BoxError;
    type Future = Responding<B>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::start(&self.shared);
        request.extensions_mut().insert(ConnectionHandle {
            shared: Arc::clone(&self.shared),
        });
        let call = self.inner.clone().oneshot(request);
        Box::pin(async move {
            let response = call.await.map_err(Into::into)?;
            Ok(response.map(|body| Counted { body, in_flight }))
        })
    }
}

/// Spawns hyper's HTTP/2 stream tasks as tasks of the gateway.
#[derive(Clone)]
pub(crate) struct TaskExecutor(pub(crate) Shutdown);

impl<F> hyper::rt::Executor<F> for TaskExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        drop(self.0.spawn(future));
    }
}

/// What every connection of one listener shares.
pub(crate) struct ListenerContext<C> {
    pub(crate) name: &'static str,
    pub(crate) limits: Limits,
    pub(crate) connector: C,
    pub(crate) builder: auto::Builder<TaskExecutor>,
    pub(crate) metrics: Metrics,
    pub(crate) cancel: CancellationToken,
}

impl<C> ListenerContext<C> {
    pub(crate) fn new(
        name: &'static str,
        limits: Limits,
        protocols: Protocols,
        connector: C,
        metrics: Metrics,
        shutdown: &Shutdown,
    ) -> Self {
        let mut builder = auto::Builder::new(TaskExecutor(shutdown.clone()));
        builder
            .http1()
            .timer(TokioTimer::new())
            // hyper starts this timer when it waits for a request head, including
            // while a kept-alive connection is idle. The watchdog enforces the
            // header and idle timeouts (and counts them); this is a backstop inside
            // hyper, a little later so that the watchdog acts first.
            .header_read_timeout(limits.header_timeout.max(limits.idle_timeout) + CLOSE_GRACE);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(limits.ping_interval)
            .keep_alive_timeout(limits.ping_interval);
        let builder = match protocols {
            Protocols::Auto => builder,
            Protocols::Http2Only => builder.http2_only(),
        };
        Self {
            name,
            limits,
            connector,
            builder,
            metrics,
            cancel: shutdown.token(),
        }
    }

    fn closed(&self, reason: &'static str) {
        self.metrics.inc(
            CONNECTIONS_CLOSED,
            &[("listener", self.name), ("reason", reason)],
            1.0,
        );
    }
}

/// Serve one accepted connection until it ends or a limit closes it.
pub(crate) async fn serve<C, S, B>(
    stream: Stream,
    peer: Peer,
    accepted_at: Instant,
    context: Arc<ListenerContext<C>>,
) where
    C: Connector<Service = S>,
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let limits = context.limits;
    let header_deadline = accepted_at + limits.header_timeout;
    let connected = tokio::select! {
        connected = context.connector.connect(stream, &peer) => connected,
        () = tokio::time::sleep_until(header_deadline) => {
            tracing::trace!(listener = context.name, %peer, "setup timed out");
            context.closed("header_timeout");
            return;
        }
        () = context.cancel.cancelled() => return,
    };
    let Some((io, service)) = connected else {
        context.closed("setup_failed");
        return;
    };
    let shared = Arc::new(Shared {
        listener: context.name,
        peer,
        activity: Mutex::new(Activity {
            next_id: 0,
            in_flight: BTreeMap::new(),
            requests: 0,
            idle_since: Instant::now(),
        }),
        changed: Notify::new(),
        close: CancellationToken::new(),
        reason: OnceLock::new(),
    });
    let service = Tracked {
        inner: service,
        shared: Arc::clone(&shared),
    };
    let mut connection = Box::pin(context.builder.serve_connection(TokioIo::new(io), service));
    let mut draining_since: Option<Instant> = None;
    let mut reason: Option<&'static str> = None;
    loop {
        let next = shared.next_deadline(&limits, header_deadline, draining_since);
        let (deadline, timer) = next.unwrap_or((header_deadline, Timer::Header));
        tokio::select! {
            biased;
            () = shared.close.cancelled() => {
                reason = Some(shared.reason.get().copied().unwrap_or("closed"));
                break;
            }
            served = connection.as_mut() => {
                if let Err(err) = served {
                    tracing::trace!(listener = context.name, %peer, error = %err, "connection ended with an error");
                }
                break;
            }
            () = context.cancel.cancelled(), if draining_since.is_none() => {
                connection.as_mut().graceful_shutdown();
                draining_since = Some(Instant::now());
            }
            () = shared.changed.notified() => {}
            () = tokio::time::sleep_until(deadline), if next.is_some() => match timer {
                Timer::Header => {
                    reason = Some("header_timeout");
                    break;
                }
                Timer::Request => {
                    reason = Some("request_timeout");
                    break;
                }
                Timer::Idle => {
                    reason = Some("idle_timeout");
                    connection.as_mut().graceful_shutdown();
                    draining_since = Some(Instant::now());
                }
                Timer::Drain => break,
            },
        }
    }
    if let Some(reason) = reason {
        tracing::trace!(listener = context.name, %peer, reason, "connection closed");
        context.closed(reason);
    }
    // Dropping hyper's connection closes the socket, whatever it was waiting for.
    drop(connection);
}
