//! Serving connections under limits: the one accept loop and connection server that
//! every listener uses (both bundle endpoint profiles, the admin API on its unix
//! socket, TCP or TLS, and the Envoy SDS server on its unix socket or TCP).
//!
//! Owns what a listener does with a connection before and around HTTP: the caps on
//! connections (per listener, per peer address or unix user, and the process-wide
//! [`Budget`] carved out of the open-file limit, see [`fd`]), accept errors backed
//! off, the connection's setup (a TLS handshake, by the listener's [`Connector`]),
//! HTTP/1 and HTTP/2 with hyper, the header, idle and request timeouts, HTTP/2
//! keep-alive pings, the [`ConnectionHandle`] every request carries, graceful
//! shutdown, and the metrics of all this (`fedgw_connections_open`,
//! `fedgw_connections_refused_total`, `fedgw_connections_closed_total`,
//! `fedgw_accept_errors_total`, `fedgw_connection_budget`). What each limit protects
//! and how to size it: `docs/operations.md#limits`. It does not own what is served
//! (the listener's service) or TLS configuration (the listener's connector).
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use fedgw::net::{Budget, Kind, LimitsConfig, Listener, Net, Plain, Protocols};
//! use fedgw::shutdown::Shutdown;
//! use fedgw::telemetry::Metrics;
//!
//! let shutdown = Shutdown::new();
//! let net = Net::new(Budget::new(1000), Metrics::new(), shutdown.clone());
//! let router = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
//! let listener = Listener::Tcp(tokio::net::TcpListener::bind("127.0.0.1:0").await?);
//! let limits = LimitsConfig::default().resolve(Kind::Admin);
//! shutdown.spawn(net.serve("example", listener, limits, Protocols::Auto, Plain(router)));
//! # Ok(())
//! # }
//! ```

mod accept;
mod connection;
pub mod fd;
mod stream;
#[cfg(test)]
mod tests;
pub mod tls;
pub mod unix;

use std::future::Future;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};

pub use self::connection::{CLOSE_GRACE, ConnectionHandle, Counted};
pub use self::fd::{Budget, FileLimits, raise_nofile_limit};
pub use self::stream::{Peer, PeerKey, Stream};
pub use self::unix::BoundAddr;
pub use crate::config::net::{BodyLimits, Kind, Limits, LimitsConfig, NetConfig};
use crate::shutdown::Shutdown;
use crate::telemetry::{Metrics, families};

/// The error type services and bodies are erased to.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why connections cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The reserve takes every descriptor the open-file limit allows.
    #[error(
        "the open-file limit ({limit}) leaves no connections after net.reserved_file_descriptors ({reserved}): raise the limit (ulimit -n, systemd LimitNOFILE=) or lower the reserve"
    )]
    NoBudget {
        /// The soft open-file limit in force.
        limit: u64,
        /// `net.reserved_file_descriptors`.
        reserved: u64,
    },
}

/// Which HTTP versions a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// HTTP/1.1 and HTTP/2 (told apart by the HTTP/2 preface, or ALPN's choice).
    Auto,
    /// HTTP/2 only (gRPC).
    Http2Only,
}

/// A bound listener, not yet accepting.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// A unix socket.
    Unix {
        /// The socket.
        listener: UnixListener,
        /// Admit only this user's connections (`None`: any user who can connect).
        owner: Option<u32>,
    },
}

/// Turns an accepted [`Stream`] into what HTTP is spoken over (e.g. a TLS stream) and
/// the service that answers its requests. Runs under the listener's header timeout.
pub trait Connector: Send + Sync + 'static {
    /// The byte stream HTTP runs over.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The service for this connection's requests (a `tower::Service`).
    type Service;

    /// Set the connection up; `None` ends it (the connector logs why, if worth it).
    fn connect(
        &self,
        stream: Stream,
        peer: &Peer,
    ) -> impl Future<Output = Option<(Self::Io, Self::Service)>> + Send;
}

/// A connector without setup: every connection is served by a clone of one service.
#[derive(Debug, Clone)]
pub struct Plain<S>(pub S);

impl<S: Clone + Send + Sync + 'static> Connector for Plain<S> {
    type Io = Stream;
    type Service = S;

    fn connect(
        &self,
        stream: Stream,
        _peer: &Peer,
    ) -> impl Future<Output = Option<(Stream, S)>> + Send {
        std::future::ready(Some((stream, self.0.clone())))
    }
}

/// What every listener of one gateway shares: the connection budget, the metrics and
/// the owner of every connection task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Net {
    budget: Budget,
    metrics: Metrics,
    shutdown: Shutdown,
}

impl Net {
    /// Listeners sharing `budget`, recording into `metrics`, their tasks owned by
    /// `shutdown`.
    pub fn new(budget: Budget, metrics: Metrics, shutdown: Shutdown) -> Self {
        #[expect(
            clippy::cast_precision_loss,
            reason = "a descriptor count is far below 2^52"
        )]
        let total = budget.total() as f64;
        metrics.set(families::CONNECTION_BUDGET, &[], total);
        Self {
            budget,
            metrics,
            shutdown,
        }
    }

    /// Raise the open-file limit to the hard limit, carve the connection budget out of
    /// it and log both (once per gateway start).
    ///
    /// # Errors
    /// [`NetError::NoBudget`] when the reserve leaves no connections.
    pub fn start(
        config: &NetConfig,
        metrics: Metrics,
        shutdown: Shutdown,
    ) -> Result<Self, NetError> {
        let limits = raise_nofile_limit();
        let reserved = config.reserved_file_descriptors;
        let budget = Budget::for_limits(&limits, reserved).ok_or(NetError::NoBudget {
            limit: limits.soft,
            reserved,
        })?;
        let hard = limits
            .hard
            .map_or_else(|| "unlimited".to_owned(), |h| h.to_string());
        match limits.raised_from {
            Some(raised_from) => tracing::info!(
                open_file_limit = limits.soft,
                raised_from,
                hard_limit = %hard,
                reserved_file_descriptors = reserved,
                connection_budget = budget.total(),
                "file descriptors: soft limit raised to the hard limit"
            ),
            None => tracing::info!(
                open_file_limit = limits.soft,
                hard_limit = %hard,
                reserved_file_descriptors = reserved,
                connection_budget = budget.total(),
                "file descriptors"
            ),
        }
        Ok(Self::new(budget, metrics, shutdown))
    }

    /// The shared connection budget.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// The owner of the connection tasks.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Accept on `listener` (named `name` in metrics and logs) until shutdown, serving
    /// each admitted connection as `connector` sets it up, under `limits`. Resolves
    /// when accepting has stopped; connections still open are tasks of the shutdown
    /// tree and close gracefully.
    pub fn serve<C, S, B>(
        &self,
        name: &'static str,
        listener: Listener,
        limits: Limits,
        protocols: Protocols,
        connector: C,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        C: Connector<Service = S>,
        S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let context = std::sync::Arc::new(connection::ListenerContext::new(
            name,
            limits,
            protocols,
            connector,
            self.metrics.clone(),
            &self.shutdown,
        ));
        accept::run(
            listener,
            context,
            self.budget.clone(),
            self.shutdown.clone(),
        )
    }
}
