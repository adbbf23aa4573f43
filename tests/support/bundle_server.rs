//! A tiny loopback `https_web` bundle endpoint whose answers the test programs, for
//! peers a real gateway cannot play (a stale replica serving an older sequence, a
//! publisher whose bundle changes on every request, an endpoint that is down), and
//! rcgen CAs made at test time.
//!
//! Include with `#[path = "support/bundle_server.rs"] mod bundle_server;`. Real TLS
//! (tokio-rustls, aws-lc-rs) and real HTTP/1.1 and HTTP/2 (hyper) on `127.0.0.1:0`.
//! Every path serves the same answer. Requests are counted before they are answered,
//! so a test can wait for "n more polls" instead of sleeping. Dropping the server stops
//! it and every connection.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test crate uses a different subset"
)]

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use spiffe_federation::bundle::X509Authority;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// A CA made with rcgen: its certificate and what it needs to sign.
pub struct TestCa {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM.
    pub key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    /// A SPIFFE CA for `td`: CA, keyCertSign + cRLSign, URI SAN `spiffe://td`.
    pub fn spiffe(td: &str) -> Self {
        Self::make(
            &format!("{td} e2e SPIFFE CA"),
            Some(&format!("spiffe://{td}")),
        )
    }

    /// A Web PKI root with no SPIFFE ID.
    pub fn web(name: &str) -> Self {
        Self::make(&format!("{name} e2e web root"), None)
    }

    /// A SPIFFE CA for `td` that expired a day ago (valid for the month before).
    pub fn spiffe_expired(td: &str) -> Self {
        let now = time::OffsetDateTime::now_utc();
        Self::make_valid(
            &format!("{td} e2e expired SPIFFE CA"),
            Some(&format!("spiffe://{td}")),
            (
                now - time::Duration::days(31),
                now - time::Duration::days(1),
            ),
        )
    }

    fn make(common_name: &str, uri: Option<&str>) -> Self {
        let now = time::OffsetDateTime::now_utc();
        let validity = (
            now - time::Duration::hours(1),
            now + time::Duration::days(30),
        );
        Self::make_valid(common_name, uri, validity)
    }

    fn make_valid(
        common_name: &str,
        uri: Option<&str>,
        (not_before, not_after): (time::OffsetDateTime, time::OffsetDateTime),
    ) -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = not_before;
        params.not_after = not_after;
        if let Some(uri) = uri {
            params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
        }
        let cert = params.self_signed(&key).unwrap();
        Self {
            der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// This CA as a bundle authority.
    pub fn authority(&self) -> X509Authority {
        X509Authority::from_der(self.der.clone()).unwrap()
    }

    /// Write the certificate and the key as PEM files.
    pub fn write(&self, cert: &Path, key: &Path) {
        std::fs::write(cert, &self.cert_pem).unwrap();
        std::fs::write(key, &self.key_pem).unwrap();
    }

    /// A server certificate for `localhost` and `127.0.0.1` signed by this CA.
    pub fn localhost_server(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let now = time::OffsetDateTime::now_utc();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "e2e bundle server");
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(30);
        params.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into().unwrap()),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }
}

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

impl BundleServer {
    /// Serve `answer` with a server certificate from `ca`.
    pub async fn start(ca: &TestCa, answer: Answer) -> Self {
        let (chain, key) = ca.localhost_server();
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
