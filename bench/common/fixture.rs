//! The benchmarks' bundle endpoint fixture: one TLS listener in the benchmark process
//! (rustls, HTTP/1.1 and h2, on loopback) serving each foreign trust domain's SPIFFE
//! bundle at `/d/<index>`, with the PKI it needs.
//!
//! - [`Pki`]: the listener's certificate (`localhost`, `127.0.0.1`), issued by a CA
//!   that fedgw trusts through `extra_ca_roots`;
//! - [`Domains`]: N foreign trust domains, `d<index>.<label>.fedgw.test`, each with a
//!   CA of its own (the domain's SPIFFE ID as URI SAN, [`spiffe_ca`]);
//! - [`Fixture`]: the listener. Each domain's document has the sequence of the current
//!   generation (generation 0 serves sequence 1, generation 1 sequence 2) and a
//!   one-hour refresh hint ([`SLOW_HINT`]), so that no scheduled poll falls inside a
//!   measurement; [`FixtureOptions`] can give one domain a one-second hint
//!   ([`FAST_HINT`]) and record when each domain was last asked for. It counts the
//!   documents it served;
//! - fedgw's configuration around it: [`Pki::write_files`], [`serve_toml`] (data
//!   directory, admin socket, an `https_web` endpoint with the fixture's certificate)
//!   and [`Fixture::federation_toml`] (one `https_web` relationship per domain).
//!
//! Included by `bench/scale.rs` and `bench/replicas.rs` (`#[path]` modules: the
//! benchmarks are single-file examples).

#![allow(
    dead_code,
    reason = "shared by several benchmarks, each uses part (scale switches generations \
              and counts what was served, replicas watches request times)"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark stops on any failure"
)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use spiffe_federation::bundle::X509Authority;
use spiffe_federation::{Bundle, TrustDomain};
use tokio_util::sync::CancellationToken;

/// The refresh hint of every domain's document: longer than any measurement.
pub(crate) const SLOW_HINT: Duration = Duration::from_secs(3600);
/// The refresh hint of [`FixtureOptions::fast`]'s domain.
pub(crate) const FAST_HINT: Duration = Duration::from_secs(1);

/// The fixture's TLS identity and the CA fedgw trusts it through.
pub(crate) struct Pki {
    pub(crate) ca_pem: String,
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

impl Pki {
    /// A new CA (`fedgw <label> fixture CA`) and a `localhost` certificate it issued.
    pub(crate) fn generate(label: &str) -> anyhow::Result<Self> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        ca.distinguished_name
            .push(DnType::CommonName, format!("fedgw {label} fixture CA"));
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate()?;
        let mut leaf = CertificateParams::new(vec!["localhost".to_owned()])?;
        leaf.subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        let cert = leaf.signed_by(&key, &issuer)?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Write the CA (`fixture-ca.pem`) and the certificate and key (`tls.crt`,
    /// `tls.key`, which fedgw's `https_web` endpoint serves with too) into `dir`.
    pub(crate) fn write_files(&self, dir: &Path) -> anyhow::Result<PkiFiles> {
        let write = |name: &str, text: &str| -> anyhow::Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, text)?;
            Ok(path)
        };
        Ok(PkiFiles {
            ca: write("fixture-ca.pem", &self.ca_pem)?,
            cert: write("tls.crt", &self.cert_pem)?,
            key: write("tls.key", &self.key_pem)?,
        })
    }

    fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        use rustls_pki_types::pem::PemObject as _;
        let chain = rustls_pki_types::CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()?;
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Where [`Pki::write_files`] wrote the PEM files.
pub(crate) struct PkiFiles {
    pub(crate) ca: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// The start of a fedgw configuration: `data_dir`, the admin API on the unix socket
/// `admin`, and an `https_web` endpoint on `127.0.0.1:<endpoint_port>` serving as
/// `localhost` with the fixture's certificate.
pub(crate) fn serve_toml(
    data_dir: &Path,
    admin: &Path,
    endpoint_port: u16,
    files: &PkiFiles,
) -> String {
    format!(
        "data_dir = {data_dir:?}\n\n[admin]\nlisten = \"unix:{admin}\"\n\n\
         [endpoint.https_web]\nlisten = \"127.0.0.1:{endpoint_port}\"\ncert = {cert:?}\n\
         key = {key:?}\npublic_names = [\"localhost\"]\n",
        admin = admin.display(),
        cert = files.cert,
        key = files.key,
    )
}

/// A CA certificate with `td`'s SPIFFE ID as URI SAN.
pub(crate) fn spiffe_ca(td: &str) -> anyhow::Result<rcgen::Certificate> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    params.subject_alt_names = vec![SanType::URI(format!("spiffe://{td}").try_into()?)];
    Ok(params.self_signed(&key)?)
}

/// Every foreign domain's name and its CA.
pub(crate) struct Domains {
    pub(crate) names: Vec<TrustDomain>,
    authorities: Vec<X509Authority>,
}

impl Domains {
    /// `n` domains named `d<index>.<label>.fedgw.test`, each with a CA of its own.
    pub(crate) fn generate(n: usize, label: &str) -> anyhow::Result<Self> {
        let mut names = Vec::with_capacity(n);
        let mut authorities = Vec::with_capacity(n);
        for i in 0..n {
            let td = TrustDomain::new(&format!("d{i:05}.{label}.fedgw.test"))?;
            let cert = spiffe_ca(&td.to_string())?;
            authorities.push(X509Authority::from_der(cert.der().to_vec())?);
            names.push(td);
        }
        Ok(Self { names, authorities })
    }

    /// Domain `i`'s bundle document: its CA, `sequence` and `hint`.
    fn document(&self, i: usize, sequence: u64, hint: Duration) -> Bytes {
        let mut bundle = Bundle::new(self.names[i].clone());
        bundle.add_x509_authority(self.authorities[i].clone());
        bundle.set_sequence(Some(sequence));
        bundle.set_refresh_hint(Some(hint));
        Bytes::from(bundle.to_json())
    }
}

/// What a [`Fixture`] does beyond serving every domain with [`SLOW_HINT`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FixtureOptions {
    /// The domain served with [`FAST_HINT`] instead.
    pub(crate) fast: Option<usize>,
    /// Record when each domain was last asked for ([`Fixture::last_request`]).
    pub(crate) record_requests: bool,
}

/// The fixture's listener: serves `/d/<i>` for `i < n` from the current generation.
pub(crate) struct Fixture {
    pub(crate) addr: SocketAddr,
    /// How many domains it serves.
    n: usize,
    generation: Arc<AtomicUsize>,
    served: Arc<AtomicUsize>,
    last_request: Option<Arc<Mutex<HashMap<usize, Instant>>>>,
    cancel: CancellationToken,
}

impl Fixture {
    /// Listen on a loopback port and serve the first `n` of `domains` until dropped.
    pub(crate) async fn start(
        pki: &Pki,
        domains: &Domains,
        n: usize,
        options: FixtureOptions,
    ) -> anyhow::Result<Self> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind("127.0.0.1:0".parse()?)?;
        // A deep accept queue: fedgw opens a connection per domain at once.
        let listener = socket.listen(8192)?;
        let addr = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config()?);
        // Generation 0 and 1 of each domain: sequence 1 and 2.
        let documents: Arc<Vec<[Bytes; 2]>> = Arc::new(
            (0..n)
                .map(|i| {
                    let hint = if options.fast == Some(i) {
                        FAST_HINT
                    } else {
                        SLOW_HINT
                    };
                    [domains.document(i, 1, hint), domains.document(i, 2, hint)]
                })
                .collect(),
        );
        let generation = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(AtomicUsize::new(0));
        let last_request = options
            .record_requests
            .then(|| Arc::new(Mutex::new(HashMap::new())));
        let cancel = CancellationToken::new();
        let (g, s, l, c) = (
            Arc::clone(&generation),
            Arc::clone(&served),
            last_request.clone(),
            cancel.clone(),
        );
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    () = c.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(_) => continue,
                    },
                };
                let acceptor = acceptor.clone();
                let (documents, g, s, l, c) = (
                    Arc::clone(&documents),
                    Arc::clone(&g),
                    Arc::clone(&s),
                    l.clone(),
                    c.clone(),
                );
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service =
                        service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                            let index = request
                                .uri()
                                .path()
                                .strip_prefix("/d/")
                                .and_then(|i| i.parse::<usize>().ok());
                            let response = match index.and_then(|i| Some((i, documents.get(i)?))) {
                                Some((i, docs)) => {
                                    s.fetch_add(1, Ordering::Relaxed);
                                    if let Some(l) = &l {
                                        l.lock().unwrap().insert(i, Instant::now());
                                    }
                                    let body = docs[g.load(Ordering::Relaxed).min(1)].clone();
                                    hyper::Response::builder()
                                        .header("content-type", "application/json")
                                        .body(Full::new(body))
                                }
                                None => hyper::Response::builder()
                                    .status(404)
                                    .body(Full::new(Bytes::new())),
                            };
                            async move { Ok::<_, Infallible>(response.expect("static response")) }
                        });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    tokio::select! {
                        () = c.cancelled() => {}
                        _ = builder.serve_connection(TokioIo::new(tls), service) => {}
                    }
                });
            }
        });
        Ok(Self {
            addr,
            n,
            generation,
            served,
            last_request,
            cancel,
        })
    }

    /// One `[[federation]]` `https_web` relationship for each domain the fixture
    /// serves (of `domains`, the ones it started with), trusting its certificate
    /// through `extra_ca_roots = ca`, without a proxy.
    pub(crate) fn federation_toml(&self, domains: &Domains, ca: &Path) -> String {
        let mut toml = String::new();
        for (i, td) in domains.names[..self.n].iter().enumerate() {
            let _ = write!(
                toml,
                "\n[[federation]]\ntrust_domain = \"{td}\"\nurl = \"https://localhost:{port}/d/{i}\"\n\
                 profile = \"https_web\"\nextra_ca_roots = {ca:?}\nproxy = \"off\"\n",
                port = self.addr.port(),
            );
        }
        toml
    }

    /// Serve generation `generation` (0 or 1) from now on.
    pub(crate) fn set_generation(&self, generation: usize) {
        self.generation.store(generation, Ordering::SeqCst);
    }

    /// How many documents the fixture has served.
    pub(crate) fn served(&self) -> usize {
        self.served.load(Ordering::Relaxed)
    }

    /// When domain `index` was last asked for (with
    /// [`FixtureOptions::record_requests`]).
    pub(crate) fn last_request(&self, index: usize) -> Option<Instant> {
        self.last_request
            .as_ref()?
            .lock()
            .unwrap()
            .get(&index)
            .copied()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
