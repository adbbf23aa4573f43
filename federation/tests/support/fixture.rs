//! Loopback HTTPS bundle endpoints for client tests: real TLS (tokio-rustls, aws-lc-rs)
//! and real HTTP/1.1 and HTTP/2 (hyper) on `127.0.0.1:0`.
//!
//! Include with `#[path = "support/fixture.rs"] mod fixture;` next to `mod ca;`. A
//! [`FixtureBuilder`] takes the server's certificate ([`ServerIdentity`]: a Web PKI
//! certificate or an X509-SVID) and programmable responses per path ([`Route`]); the
//! running [`Fixture`] counts TCP connections, completed TLS handshakes and requests.
//! Counters are updated before the client can observe the effect (a connection is
//! counted before the handshake starts, a request before it is answered), so tests
//! read them without waiting. Dropping the fixture stops it and every connection.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test crate uses a different subset"
)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::SanType;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use spiffe_federation::Bundle;
use spiffe_federation::bundle::X509Authority;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::ca::{CertSpec, Issued, TestCa};

/// The certificate chain and key a fixture serves.
#[derive(Debug)]
pub(crate) struct ServerIdentity {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
}

impl ServerIdentity {
    /// `leaf` followed by `intermediates` (leaf's issuer first).
    pub(crate) fn new(leaf: &Issued, intermediates: &[&TestCa]) -> Self {
        let mut chain = vec![CertificateDer::from(leaf.der.clone())];
        chain.extend(
            intermediates
                .iter()
                .map(|ca| CertificateDer::from(ca.der.clone())),
        );
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key.serialize_der()));
        Self { chain, key }
    }
}

/// A Web PKI root: a CA with no SPIFFE ID.
pub(crate) fn web_ca(name: &str) -> TestCa {
    let mut spec = CertSpec::ca(name).uris(&[]);
    spec.common_name = format!("{name} web root");
    TestCa::from_spec(&spec)
}

/// A Web PKI server leaf spec: no URI SAN, `dns` names, serverAuth.
pub(crate) fn web_leaf_spec(dns: &[&str]) -> CertSpec {
    let mut spec = CertSpec::svid("spiffe://unused/x").uris(&[]);
    spec.common_name = "web server".to_owned();
    spec.dns = dns.iter().map(|d| (*d).to_owned()).collect();
    spec.ekus = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    spec
}

/// A Web PKI server certificate from `ca` for `dns` names and `ips`.
pub(crate) fn web_identity(ca: &TestCa, dns: &[&str], ips: &[IpAddr]) -> ServerIdentity {
    web_identity_from(ca, &web_leaf_spec(dns), ips)
}

/// A Web PKI server certificate from `ca` made from `spec`, plus IP SANs.
pub(crate) fn web_identity_from(ca: &TestCa, spec: &CertSpec, ips: &[IpAddr]) -> ServerIdentity {
    let leaf = ca.issue_with(spec, |params| {
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    });
    ServerIdentity::new(&leaf, &[])
}

/// The usual Web PKI server certificate: SANs `localhost` and `127.0.0.1`.
pub(crate) fn localhost_identity(ca: &TestCa) -> ServerIdentity {
    web_identity(ca, &["localhost"], &[IpAddr::V4(Ipv4Addr::LOCALHOST)])
}

/// An X509-SVID for `id` signed by `ca`, as a server identity.
pub(crate) fn svid_identity(ca: &TestCa, id: &str) -> ServerIdentity {
    ServerIdentity::new(&ca.svid(id), &[])
}

/// The bundle of `td` holding `ca` as its only X.509 authority.
pub(crate) fn bundle_of(td: &str, ca: &TestCa) -> Bundle {
    let mut bundle = Bundle::new(td.parse().unwrap());
    bundle.add_x509_authority(X509Authority::from_der(ca.der.clone()).unwrap());
    bundle
}

/// A programmed response.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    status: u16,
    headers: Vec<(String, String)>,
    body: Bytes,
    /// `None`: one frame with `Content-Length`; `Some(n)`: frames of `n` bytes, no
    /// declared length (chunked in HTTP/1.1).
    chunk: Option<usize>,
    /// After the body bytes, never finish the body (the client must give up).
    stall: bool,
}

impl Route {
    /// `200 OK`, `application/json`, with `body`.
    pub(crate) fn ok(body: impl Into<Bytes>) -> Self {
        Self::status(200, body).header("content-type", "application/json")
    }

    /// Any status with `body`.
    pub(crate) fn status(status: u16, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
            chunk: None,
            stall: false,
        }
    }

    /// A redirect with `status` to `location` (sent as is).
    pub(crate) fn redirect(status: u16, location: &str) -> Self {
        Self::status(status, Bytes::new()).header("location", location)
    }

    /// Add a response header.
    pub(crate) fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Send the body in frames of `size` bytes without declaring its length.
    pub(crate) fn chunked(mut self, size: usize) -> Self {
        self.chunk = Some(size.max(1));
        self
    }

    /// Send the headers (and any body bytes), then never finish.
    pub(crate) fn stall_after_headers(mut self) -> Self {
        self.stall = true;
        if self.chunk.is_none() {
            self.chunk = Some(self.body.len().max(1));
        }
        self
    }
}

/// A request as the fixture saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recorded {
    pub(crate) method: String,
    /// Path and query exactly as sent.
    pub(crate) path_and_query: String,
}

/// Builds a [`Fixture`].
pub(crate) struct FixtureBuilder {
    identity: ServerIdentity,
    routes: HashMap<String, Route>,
}

/// Start building a fixture that serves `identity`.
pub(crate) fn fixture(identity: ServerIdentity) -> FixtureBuilder {
    FixtureBuilder {
        identity,
        routes: HashMap::new(),
    }
}

impl FixtureBuilder {
    /// Answer requests for `path` (query ignored) with `route`; other paths get 404.
    pub(crate) fn route(mut self, path: &str, route: Route) -> Self {
        self.routes.insert(path.to_owned(), route);
        self
    }

    /// Bind `127.0.0.1:0` and serve.
    pub(crate) async fn start(self) -> Fixture {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(self.identity.chain, self.identity.key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            routes: self.routes,
            requests: Mutex::new(Vec::new()),
            accepted: AtomicUsize::new(0),
            handshakes: AtomicUsize::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, acceptor, state.clone()));
        Fixture { addr, state, task }
    }
}

/// A running loopback HTTPS server.
pub(crate) struct Fixture {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

struct State {
    routes: HashMap<String, Route>,
    requests: Mutex<Vec<Recorded>>,
    accepted: AtomicUsize,
    handshakes: AtomicUsize,
}

impl Fixture {
    /// `https://127.0.0.1:<port><path>`.
    pub(crate) fn url(&self, path: &str) -> String {
        self.url_with_host("127.0.0.1", path)
    }

    /// `https://<host>:<port><path>`; `host` must resolve to 127.0.0.1.
    pub(crate) fn url_with_host(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.addr.port())
    }

    /// The bound port.
    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// TCP connections accepted.
    pub(crate) fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// TLS handshakes completed.
    pub(crate) fn handshakes(&self) -> usize {
        self.state.handshakes.load(Ordering::SeqCst)
    }

    /// Every request seen, in order.
    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Requests seen for `path` (query ignored).
    pub(crate) fn hits(&self, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.path_and_query.split('?').next() == Some(path))
            .count()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _peer)) = accepted else { continue };
                state.accepted.fetch_add(1, Ordering::SeqCst);
                connections.spawn(serve(tcp, acceptor.clone(), state.clone()));
            }
            Some(_done) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve(tcp: TcpStream, acceptor: TlsAcceptor, state: Arc<State>) {
    // A failed handshake is the client refusing us: nothing to serve.
    let Ok(tls) = acceptor.accept(tcp).await else {
        return;
    };
    state.handshakes.fetch_add(1, Ordering::SeqCst);
    let service = service_fn(move |request: Request<Incoming>| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(respond(&state, &request)) }
    });
    let _closed = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tls), service)
        .await;
}

fn respond(state: &State, request: &Request<Incoming>) -> Response<FixtureBody> {
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or_else(|| request.uri().path().to_owned(), ToString::to_string);
    state.requests.lock().unwrap().push(Recorded {
        method: request.method().to_string(),
        path_and_query,
    });
    let Some(route) = state.routes.get(request.uri().path()) else {
        let mut response = Response::new(FixtureBody::full(Bytes::from_static(b"not found")));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    };
    let body = match route.chunk {
        None => FixtureBody::full(route.body.clone()),
        Some(size) => FixtureBody {
            remaining: route.body.clone(),
            chunk: size,
            exact: false,
            stall: route.stall,
        },
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(route.status).unwrap();
    for (name, value) in &route.headers {
        response.headers_mut().append(
            hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            hyper::header::HeaderValue::from_str(value).unwrap(),
        );
    }
    response
}

/// A response body: bytes in frames, optionally never ending.
struct FixtureBody {
    remaining: Bytes,
    chunk: usize,
    /// Declare the length (`Content-Length`).
    exact: bool,
    /// After the bytes, stay pending forever.
    stall: bool,
}

impl FixtureBody {
    fn full(body: Bytes) -> Self {
        Self {
            chunk: body.len().max(1),
            remaining: body,
            exact: true,
            stall: false,
        }
    }
}

impl Body for FixtureBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if !self.remaining.is_empty() {
            let n = self.chunk.min(self.remaining.len());
            let data = self.remaining.split_to(n);
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if self.stall {
            // Never woken: the connection stays open with the body unfinished until
            // the client gives up or the fixture is dropped.
            return Poll::Pending;
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.remaining.is_empty() && !self.stall
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact(self.remaining.len() as u64)
        } else {
            SizeHint::default()
        }
    }
}
