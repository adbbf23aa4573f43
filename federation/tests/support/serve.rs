//! A loopback bundle endpoint server for tests: tokio-rustls and hyper on
//! `127.0.0.1:0`, answering every request with `endpoint::server::respond`.
//!
//! Include with `#[path = "support/serve.rs"] mod serve;`. Owns only the accept loop
//! and the test's handle on the served bundle; every HTTP rule is `respond`'s and every
//! TLS rule is the `ServerConfig`'s. One connection's error (a refused handshake, a
//! probe that hangs up) never ends the loop. Dropping the [`TestServer`] aborts the
//! loop and every connection task.

#![allow(dead_code, reason = "each test crate uses a different subset")]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use spiffe_federation::endpoint::server::{Routes, ServedBundle, respond};
use spiffe_federation::{Bundle, TrustDomain};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// What the serving path reads: the routes, and the latest bundle per trust domain.
struct State {
    routes: Routes<TrustDomain>,
    /// Held only to clone a `ServedBundle` out (no `.await` under the lock).
    bundles: Mutex<BTreeMap<TrustDomain, ServedBundle>>,
}

/// A running loopback server; aborted on drop.
pub(crate) struct TestServer {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl TestServer {
    /// Serve `bundle` at `path` with `tls` on a fresh loopback port.
    pub(crate) async fn start(tls: Arc<rustls::ServerConfig>, path: &str, bundle: &Bundle) -> Self {
        let mut routes = Routes::new();
        routes
            .insert(path, bundle.trust_domain().clone())
            .expect("valid test path");
        let bundles = BTreeMap::from([(bundle.trust_domain().clone(), ServedBundle::new(bundle))]);
        let state = Arc::new(State {
            routes,
            bundles: Mutex::new(bundles),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(accept_loop(listener, TlsAcceptor::from(tls), state.clone()));
        Self { addr, state, task }
    }

    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Replace the served bundle of its trust domain (what the gateway's trust store
    /// does on every accepted change); the next request sees it.
    pub(crate) fn set_bundle(&self, bundle: &Bundle) {
        self.state
            .bundles
            .lock()
            .expect("not poisoned")
            .insert(bundle.trust_domain().clone(), ServedBundle::new(bundle));
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, state: Arc<State>) {
    // Owned here so that aborting the loop aborts every connection too.
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok((tcp, _peer)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let state = state.clone();
        connections.spawn(async move {
            // A refused handshake (the point of several tests) ends this connection only.
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = service_fn(move |request: hyper::Request<Incoming>| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, request)) }
            });
            // Errors here are the peer's (reset, malformed request); nothing to do.
            if let Err(_peer_error) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await
            {}
        });
    }
}

fn handle(state: &State, request: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
    let (parts, _body) = request.into_parts();
    let bundle = state
        .routes
        .route(parts.uri.path())
        .and_then(|td| state.bundles.lock().expect("not poisoned").get(td).cloned());
    respond(&parts, bundle.as_ref()).map(Full::new)
}
