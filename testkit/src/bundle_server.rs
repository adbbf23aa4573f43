//! Loopback bundle endpoints a test scripts, for peers a real gateway cannot play: a
//! stale replica serving an older sequence, a publisher whose bundle changes on every
//! request, an endpoint that is down or redirects, one that accepts and never answers.
//!
//! Owns [`BundleServer`]: real TLS (tokio-rustls, aws-lc-rs) and real HTTP/1.1 and
//! HTTP/2 (hyper) on `127.0.0.1:0`, either profile: `https_web` (a `localhost` and
//! `127.0.0.1` server certificate from a Web PKI [`TestCa`]) or `https_spiffe` (an
//! X509-SVID from a SPIFFE [`TestCa`]). Every path serves the same [`Answer`], which the
//! test may change at any time. Requests are counted before they are answered, so a
//! test can wait for "n more polls" instead of sleeping. And [`StallServer`]: a TCP
//! listener that accepts and never answers (a fetch to it waits for its deadline),
//! counting the connections it holds. Dropping either stops it and every connection.
//!
//! Does not own what a client does with the answers (the code under test), nor the
//! gateway's own bundle endpoints (`fedgw::outputs::endpoint`).

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::ca::TestCa;

/// What the server answers.
#[derive(Clone)]
pub enum Answer {
    /// `200 application/json` with this body, every time.
    Fixed(Bytes),
    /// `200 application/json` with `make(n)`, where `n` counts the bundles served this
    /// way (1, 2, 3, …): a publisher that changes on every request.
    Counting(Arc<dyn Fn(u64) -> Bytes + Send + Sync>),
    /// `503 Service Unavailable`: the endpoint is down.
    Unavailable,
    /// A redirect (`status`, e.g. 302 or 308) to `location`.
    Redirect {
        /// The 3xx status.
        status: u16,
        /// The `Location` header.
        location: String,
    },
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fixed(body) => write!(f, "Fixed({} bytes)", body.len()),
            Self::Counting(_) => f.write_str("Counting"),
            Self::Unavailable => f.write_str("Unavailable"),
            Self::Redirect { status, location } => write!(f, "Redirect({status} {location})"),
        }
    }
}

struct State {
    answer: Mutex<Answer>,
    requests: AtomicU64,
    counted: AtomicU64,
}

/// A running loopback bundle endpoint.
pub struct BundleServer {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for BundleServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl BundleServer {
    /// Serve `answer` over `https_web`, with a server certificate for `localhost` and
    /// `127.0.0.1` from `ca` (a peer trusts it with `ca` as an extra root).
    pub async fn start(ca: &TestCa, answer: Answer) -> Self {
        let (chain, key) = ca.localhost_server();
        Self::start_with(chain, key, answer).await
    }

    /// Serve `answer` over `https_spiffe`, presenting an X509-SVID for
    /// `spiffe://<ca's trust domain><endpoint_path>` from `ca` (a peer authenticates it
    /// with a bundle holding `ca`).
    ///
    /// # Panics
    /// If `ca` is a Web PKI root.
    pub async fn start_spiffe(ca: &TestCa, endpoint_path: &str, answer: Answer) -> Self {
        let (chain, key) = ca.svid(endpoint_path).chain_and_key();
        Self::start_with(chain, key, answer).await
    }

    async fn start_with(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        answer: Answer,
    ) -> Self {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            answer: Mutex::new(answer),
            requests: AtomicU64::new(0),
            counted: AtomicU64::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, acceptor, Arc::clone(&state)));
        Self { addr, state, task }
    }

    /// `https://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/", self.addr.port())
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Change the answer for the following requests.
    pub fn set(&self, answer: Answer) {
        *self.state.answer.lock().unwrap() = answer;
    }

    /// Requests received so far (counted before they are answered).
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Bundles served so far by [`Answer::Counting`].
    pub fn counted(&self) -> u64 {
        self.state.counted.load(Ordering::SeqCst)
    }
}

impl Drop for BundleServer {
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
                let acceptor = acceptor.clone();
                let state = Arc::clone(&state);
                connections.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = service_fn(move |request: Request<Incoming>| {
                        let response = respond(&state, &request);
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _closed = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
            Some(_done) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

fn respond(state: &State, _request: &Request<Incoming>) -> Response<Full<Bytes>> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let answer = state.answer.lock().unwrap().clone();
    let (status, body) = match answer {
        Answer::Redirect { status, location } => {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::from_u16(status).unwrap();
            response.headers_mut().insert(
                hyper::header::LOCATION,
                hyper::header::HeaderValue::from_str(&location).unwrap(),
            );
            return response;
        }
        Answer::Fixed(body) => (StatusCode::OK, body),
        Answer::Counting(make) => {
            let n = state.counted.fetch_add(1, Ordering::SeqCst) + 1;
            (StatusCode::OK, make(n))
        }
        Answer::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from_static(b"down for the test"),
        ),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    if status == StatusCode::OK {
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
    }
    response
}

/// A TCP listener on `127.0.0.1:0` that accepts every connection and never reads or
/// answers: a TLS handshake with it, and so a fetch, waits until its own deadline.
pub struct StallServer {
    port: u16,
    accepted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for StallServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StallServer")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl StallServer {
    /// Start accepting.
    pub async fn start() -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            // Held, never read: dropped (closed) only when the server stops.
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                held.push(socket);
            }
        });
        Self {
            port,
            accepted,
            task,
        }
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `https://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for StallServer {
    fn drop(&mut self) {
        // The held sockets go with the task.
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use spiffe_federation::endpoint::client::{FetchRequest, Fetcher, ServerAuth, SpiffeEndpoint};
    use spiffe_federation::endpoint::{EndpointUrl, FetchLimits, ProxySetting, WebOptions};
    use spiffe_federation::{Bundle, SpiffeId, TrustDomain};

    use super::*;

    fn document(td: &TrustDomain, sequence: u64) -> Bytes {
        let mut bundle = Bundle::new(td.clone());
        bundle.add_x509_authority(TestCa::spiffe(td.as_str()).authority());
        bundle.set_sequence(Some(sequence));
        Bytes::from(bundle.to_json())
    }

    async fn fetch(url: &str, td: &TrustDomain, auth: ServerAuth<'_>) -> Result<Bundle, String> {
        let url = EndpointUrl::parse(url).unwrap();
        let limits = FetchLimits {
            total_timeout: Duration::from_secs(2),
            ..FetchLimits::default()
        };
        let request = FetchRequest {
            trust_domain: td,
            url: &url,
            auth,
            limits: &limits,
            proxy: &ProxySetting::Off,
        };
        Fetcher::with_system_roots(Vec::new())
            .fetch(&request)
            .await
            .map(|fetched| fetched.parsed.bundle)
            .map_err(|err| err.to_string())
    }

    #[tokio::test]
    async fn https_web_server_serves_counts_and_changes_its_answer() {
        let td: TrustDomain = "web.kit.test".parse().unwrap();
        let web_ca = TestCa::web("kit");
        let server = BundleServer::start(&web_ca, Answer::Fixed(document(&td, 1))).await;
        let options = WebOptions {
            extra_roots: vec![CertificateDer::from(web_ca.der.clone())],
            system_roots: false,
        };
        let bundle = fetch(&server.url(), &td, ServerAuth::Web(&options))
            .await
            .unwrap();
        assert_eq!(bundle.sequence(), Some(1));
        server.set(Answer::Counting(Arc::new({
            let td = td.clone();
            move |n| document(&td, 10 + n)
        })));
        let bundle = fetch(&server.url(), &td, ServerAuth::Web(&options))
            .await
            .unwrap();
        assert_eq!(bundle.sequence(), Some(11));
        assert_eq!((server.requests(), server.counted()), (2, 1));
        server.set(Answer::Unavailable);
        let err = fetch(&server.url(), &td, ServerAuth::Web(&options))
            .await
            .unwrap_err();
        assert!(err.contains("503"), "{err}");
        // Another root does not vouch for the server.
        let other = WebOptions {
            extra_roots: vec![CertificateDer::from(TestCa::web("other").der.clone())],
            system_roots: false,
        };
        assert!(
            fetch(&server.url(), &td, ServerAuth::Web(&other))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn https_spiffe_server_presents_an_svid_of_its_ca() {
        let td: TrustDomain = "spiffe.kit.test".parse().unwrap();
        let ca = TestCa::spiffe(td.as_str());
        let server =
            BundleServer::start_spiffe(&ca, "/endpoint", Answer::Fixed(document(&td, 4))).await;
        let id: SpiffeId = "spiffe://spiffe.kit.test/endpoint".parse().unwrap();
        let mut trusted = Bundle::new(td.clone());
        trusted.add_x509_authority(ca.authority());
        let endpoint = SpiffeEndpoint::new(&id, &trusted).unwrap();
        let bundle = fetch(&server.url(), &td, ServerAuth::Spiffe(endpoint))
            .await
            .unwrap();
        assert_eq!(bundle.sequence(), Some(4));
        // A bundle without the CA does not authenticate it.
        let mut untrusted = Bundle::new(td.clone());
        untrusted.add_x509_authority(TestCa::spiffe(td.as_str()).authority());
        let endpoint = SpiffeEndpoint::new(&id, &untrusted).unwrap();
        assert!(
            fetch(&server.url(), &td, ServerAuth::Spiffe(endpoint))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn stall_server_accepts_and_never_answers() {
        let stall = StallServer::start().await;
        let td: TrustDomain = "stall.kit.test".parse().unwrap();
        let options = WebOptions {
            extra_roots: vec![CertificateDer::from(TestCa::web("kit").der.clone())],
            system_roots: false,
        };
        let err = fetch(&stall.url("/"), &td, ServerAuth::Web(&options))
            .await
            .unwrap_err();
        assert!(err.contains("did not finish within"), "{err}");
        assert_eq!(stall.accepted(), 1);
    }
}
