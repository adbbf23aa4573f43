//! The connection server over real loopback sockets: timeouts, caps, the connection
//! handle and graceful shutdown. Limits are small (hundreds of milliseconds) to keep
//! the tests fast; every wait is an upper bound.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Extension;
use axum::routing::get;
use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use super::*;
use crate::shutdown::{Ended, Shutdown};

/// Upper bound for anything that should happen "soon".
const SOON: Duration = Duration::from_secs(10);

static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];

fn limits() -> Limits {
    Limits {
        header_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(500),
        max_connections: 100,
        max_connections_per_peer: 100,
        ping_interval: Duration::from_secs(30),
        request_timeout: None,
    }
}

/// The handles of the requests that reached `/stall` and `/flood`.
type Handles = Arc<Mutex<Vec<ConnectionHandle>>>;

struct Server {
    addr: SocketAddr,
    metrics: Metrics,
    shutdown: Shutdown,
    handles: Handles,
    /// Bytes `/flood` has produced.
    produced: Arc<AtomicUsize>,
}

impl Server {
    /// Routes: `/` answers "ok"; `/stall` sends one chunk then never ends; `/flood`
    /// sends 64 KiB chunks forever; `/slow` answers after 3 idle timeouts.
    async fn start(limits: Limits, protocols: Protocols) -> Self {
        let handles: Handles = Arc::default();
        let produced = Arc::new(AtomicUsize::new(0));
        let stall_handles = Arc::clone(&handles);
        let flood_handles = Arc::clone(&handles);
        let counter = Arc::clone(&produced);
        let slow = limits.idle_timeout * 3;
        let router = Router::new()
            .route("/", get(|| async { "ok" }))
            .route(
                "/stall",
                get(move |Extension(handle): Extension<ConnectionHandle>| {
                    stall_handles.lock().unwrap().push(handle);
                    let first = futures_util::stream::once(async {
                        Ok::<_, Infallible>(Bytes::from_static(b"first chunk"))
                    });
                    async move { Body::from_stream(first.chain(futures_util::stream::pending())) }
                }),
            )
            .route(
                "/flood",
                get(move |Extension(handle): Extension<ConnectionHandle>| {
                    flood_handles.lock().unwrap().push(handle);
                    let counter = Arc::clone(&counter);
                    let flood = futures_util::stream::repeat_with(move || {
                        counter.fetch_add(CHUNK.len(), Ordering::SeqCst);
                        Ok::<_, Infallible>(Bytes::from_static(&CHUNK))
                    });
                    async move { Body::from_stream(flood) }
                }),
            )
            .route(
                "/slow",
                get(move || async move {
                    tokio::time::sleep(slow).await;
                    "late"
                }),
            );
        let shutdown = Shutdown::new();
        let metrics = Metrics::new();
        let net = Net::new(Budget::new(1000), metrics.clone(), shutdown.clone());
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        shutdown.spawn(net.serve(
            "test",
            Listener::Tcp(listener),
            limits,
            protocols,
            Plain(router),
        ));
        Self {
            addr,
            metrics,
            shutdown,
            handles,
            produced,
        }
    }

    fn closed(&self, reason: &'static str) -> f64 {
        self.metrics
            .value(
                families::CONNECTIONS_CLOSED,
                &[("listener", "test"), ("reason", reason)],
            )
            .unwrap_or(0.0)
    }

    fn refused(&self, reason: &'static str) -> f64 {
        self.metrics
            .value(
                families::CONNECTIONS_REFUSED,
                &[("listener", "test"), ("reason", reason)],
            )
            .unwrap_or(0.0)
    }

    fn open(&self) -> f64 {
        self.metrics
            .value(families::CONNECTIONS_OPEN, &[("listener", "test")])
            .unwrap_or(-1.0)
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }

    /// A connection from `ip` (any address of 127.0.0.0/8 works on loopback).
    async fn connect_from(&self, ip: Ipv4Addr) -> TcpStream {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(IpAddr::V4(ip), 0)).unwrap();
        socket.connect(self.addr).await.unwrap()
    }

    /// The handle of the `n`th request to `/stall` or `/flood`, once it arrived.
    async fn handle(&self, n: usize) -> ConnectionHandle {
        wait(|| self.handles.lock().unwrap().get(n).cloned()).await
    }
}

/// Poll `condition` every 10 ms until it yields, at most [`SOON`].
async fn wait<T>(mut condition: impl FnMut() -> Option<T>) -> T {
    tokio::time::timeout(SOON, async {
        loop {
            if let Some(value) = condition() {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("condition not met in time")
}

/// Read until the server closes the connection (EOF or reset), at most [`SOON`];
/// returns what was read.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = vec![0; 256 * 1024];
    tokio::time::timeout(SOON, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server did not close the connection in time");
    all
}

/// One HTTP/1.1 GET on `stream`; the response head and body as text.
async fn get_h1(stream: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(SOON, stream.read(&mut buf))
        .await
        .expect("no response in time")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn header_timeout_closes_a_partial_request_head_while_others_are_served() {
    let server = Server::start(limits(), Protocols::Auto).await;
    let mut slow = server.connect().await;
    slow.write_all(b"GET / HTTP/1.1\r\nhost: te").await.unwrap();
    let mut silent = server.connect().await;
    let mut normal = server.connect().await;
    assert!(get_h1(&mut normal, "/").await.ends_with("ok"));
    let read = read_until_closed(&mut slow).await;
    assert!(read.is_empty(), "no answer to an incomplete head");
    read_until_closed(&mut silent).await;
    assert_eq!(server.closed("header_timeout"), 2.0);
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_but_a_long_request_is_not() {
    let server = Server::start(limits(), Protocols::Auto).await;
    let mut idle = server.connect().await;
    assert!(get_h1(&mut idle, "/").await.ends_with("ok"));
    read_until_closed(&mut idle).await;
    assert_eq!(server.closed("idle_timeout"), 1.0);

    // A request in flight for three idle timeouts is answered.
    let mut long = server.connect().await;
    assert!(get_h1(&mut long, "/slow").await.ends_with("late"));
}

#[tokio::test]
async fn request_timeout_closes_a_response_that_never_ends() {
    let mut limits = limits();
    limits.request_timeout = Some(Duration::from_millis(300));
    let server = Server::start(limits, Protocols::Auto).await;
    let mut stream = server.connect().await;
    let read = {
        stream
            .write_all(b"GET /stall HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .unwrap();
        read_until_closed(&mut stream).await
    };
    assert!(String::from_utf8_lossy(&read).contains("first chunk"));
    assert_eq!(server.closed("request_timeout"), 1.0);
}

#[tokio::test]
async fn handle_closes_an_http1_connection_whose_body_never_ends() {
    let server = Server::start(limits(), Protocols::Auto).await;
    let mut stream = server.connect().await;
    stream
        .write_all(b"GET /stall HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let handle = server.handle(0).await;
    assert!(!handle.is_closed());
    assert_eq!(handle.listener(), "test");
    assert!(matches!(handle.peer(), Peer::Tcp(_)));
    handle.close("slow_reader");
    handle.close("ignored: only the first reason counts");
    assert!(handle.is_closed());
    handle.closed().await;
    read_until_closed(&mut stream).await;
    assert_eq!(server.closed("slow_reader"), 1.0);
    wait(|| (server.open() == 0.0).then_some(())).await;
}

/// The client never reads: hyper stops polling the body once the socket buffers are
/// full, and the handle still closes the connection.
#[tokio::test]
async fn handle_closes_an_http1_connection_the_client_does_not_read() {
    let server = Server::start(limits(), Protocols::Auto).await;
    let mut stream = server.connect().await;
    stream
        .write_all(b"GET /flood HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let handle = server.handle(0).await;
    wait_until_stalled(&server.produced).await;
    handle.close("slow_reader");
    // What the kernel buffered is still readable; then the connection ends.
    read_until_closed(&mut stream).await;
    assert_eq!(server.closed("slow_reader"), 1.0);
    wait(|| (server.open() == 0.0).then_some(())).await;
}

/// Over HTTP/2, a stream stalled on flow control (the client never reads, so never
/// opens its window) is ended by closing its connection.
#[tokio::test]
async fn handle_closes_an_http2_connection_stalled_on_flow_control() {
    let server = Server::start(limits(), Protocols::Http2Only).await;
    let stream = server.connect().await;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let driving = tokio::spawn(connection);
    let request = http::Request::get(format!("http://{}/flood", server.addr))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let handle = server.handle(0).await;
    wait_until_stalled(&server.produced).await;
    handle.close("slow_reader");
    // The client's connection ends, and the body it never read fails.
    tokio::time::timeout(SOON, driving)
        .await
        .expect("the client connection did not end")
        .unwrap()
        .ok();
    let body = tokio::time::timeout(SOON, response.into_body().collect())
        .await
        .expect("the body did not end");
    assert!(
        body.is_err(),
        "a closed connection cannot complete the body"
    );
    assert_eq!(server.closed("slow_reader"), 1.0);
    wait(|| (server.open() == 0.0).then_some(())).await;
}

/// Wait until the endless body stops being produced (its reader's buffers are full).
async fn wait_until_stalled(produced: &AtomicUsize) {
    tokio::time::timeout(SOON, async {
        let mut last = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = produced.load(Ordering::SeqCst);
            if now == last && now > 0 {
                return;
            }
            last = now;
        }
    })
    .await
    .expect("the body never stalled");
}

#[tokio::test]
async fn per_peer_and_per_listener_caps_refuse_at_once() {
    let mut limits = limits();
    limits.header_timeout = Duration::from_secs(60);
    limits.max_connections = 3;
    limits.max_connections_per_peer = 2;
    let server = Server::start(limits, Protocols::Auto).await;
    let one = Ipv4Addr::new(127, 0, 0, 1);
    let two = Ipv4Addr::new(127, 0, 0, 2);
    let _held = [
        server.connect_from(one).await,
        server.connect_from(one).await,
    ];
    wait(|| (server.open() == 2.0).then_some(())).await;
    let mut over_peer = server.connect_from(one).await;
    read_until_closed(&mut over_peer).await;
    assert_eq!(server.refused("peer_limit"), 1.0);
    let mut other = server.connect_from(two).await;
    assert!(
        get_h1(&mut other, "/").await.ends_with("ok"),
        "another peer is served"
    );
    let mut over_listener = server.connect_from(Ipv4Addr::new(127, 0, 0, 3)).await;
    read_until_closed(&mut over_listener).await;
    assert_eq!(server.refused("listener_limit"), 1.0);
}

#[tokio::test]
async fn the_budget_is_shared_and_given_back() {
    let shutdown = Shutdown::new();
    let metrics = Metrics::new();
    let budget = Budget::new(1);
    let net = Net::new(budget.clone(), metrics.clone(), shutdown.clone());
    let mut limits = limits();
    limits.header_timeout = Duration::from_secs(60);
    let mut addrs = Vec::new();
    for name in ["first", "second"] {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        addrs.push(listener.local_addr().unwrap());
        let router = Router::new().route("/", get(|| async { "ok" }));
        shutdown.spawn(net.serve(
            name,
            Listener::Tcp(listener),
            limits,
            Protocols::Auto,
            Plain(router),
        ));
    }
    let held = TcpStream::connect(addrs[0]).await.unwrap();
    wait(|| (budget.available() == 0).then_some(())).await;
    let mut refused = TcpStream::connect(addrs[1]).await.unwrap();
    read_until_closed(&mut refused).await;
    let refusals = &[("listener", "second"), ("reason", "file_descriptors")];
    assert_eq!(
        metrics.value(families::CONNECTIONS_REFUSED, refusals),
        Some(1.0)
    );
    drop(held);
    wait(|| (budget.available() == 1).then_some(())).await;
    let mut served = TcpStream::connect(addrs[1]).await.unwrap();
    assert!(get_h1(&mut served, "/").await.ends_with("ok"));
    assert_eq!(metrics.value(families::CONNECTION_BUDGET, &[]), Some(1.0));
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish() {
    let server = Server::start(limits(), Protocols::Auto).await;
    let mut long = server.connect().await;
    long.write_all(b"GET /slow HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    wait(|| (server.open() == 1.0).then_some(())).await;
    let stopping = {
        let shutdown = server.shutdown.clone();
        tokio::spawn(async move { shutdown.shutdown(SOON).await })
    };
    let read = read_until_closed(&mut long).await;
    assert!(String::from_utf8_lossy(&read).ends_with("late"));
    assert_eq!(stopping.await.unwrap(), Ended::Clean);
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "no longer accepting"
    );
}
