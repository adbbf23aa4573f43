//! Bundle endpoint listeners: serve every local trust domain's bundle at its path and
//! every foreign one at `/relay/<trust domain>`, over `https_web` and/or `https_spiffe`.
//!
//! Owns binding, the TLS handshake with the current identity, and the table of what
//! is served at which path, rebuilt from the trust store's snapshot on every change
//! (SRV-2) so that requests only read a pre-serialised document. TLS material is
//! reloaded when its files change, without dropping the listener. It does not own
//! accepting, HTTP framing and the connection limits ([`crate::net`]), the response
//! rules (the library's `respond`) or which bundle is current (the trust store).

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use spiffe_federation::endpoint::server::{
    ServedBundle, ServerError, ServerTls, https_spiffe_server_config, https_web_server_config,
    respond,
};
use spiffe_federation::{SpiffeId, TrustDomain};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

mod start;

pub use self::start::{Started, start};
use crate::net::tls::{self, RELOAD_INTERVAL};
use crate::net::{self, Connector, Limits, Net, Peer, Protocols, Stream};
use crate::supervise::Supervisor;
use crate::trust::store::{Snapshot, TrustStore};

/// The shortest gap between two rebuilds of the served table. The first change after
/// a quiet spell is served at once; during a burst (thousands of relationships
/// fetched at start) the changes that arrive within the gap are served together, so
/// the O(stored domains) rebuild runs at most 50 times a second, not once per change.
const MIN_REBUILD_GAP: Duration = Duration::from_millis(20);

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// A certificate or key file cannot be read or holds no PEM item.
    #[error("cannot load {path}: {reason}")]
    Load {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The TLS configuration was refused (SRV-6, SRV-8, key mismatch, …), naming the
    /// configuration key and the file.
    #[error("endpoint.{profile}.{key} {}: {source}", file.display())]
    Tls {
        /// `https_web` or `https_spiffe`.
        profile: &'static str,
        /// The configuration key of the certificate: `cert`, `svid` or
        /// `workload_api_socket`.
        key: &'static str,
        /// The certificate file.
        file: Box<Path>,
        /// The library's reason.
        source: ServerError,
    },
    /// `https_spiffe` needs the local bundle its SVID chains to, and it is not stored.
    #[error(
        "https_spiffe endpoint: no bundle for local trust domain {trust_domain} to verify the SVID against"
    )]
    NoLocalBundle {
        /// The endpoint ID's trust domain.
        trust_domain: TrustDomain,
    },
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A name in `public_names` is neither a DNS name nor an IP address.
    #[error("endpoint.https_web.public_names: {name:?} is not a DNS name or IP address")]
    PublicName {
        /// The name.
        name: String,
    },
    /// The `https_spiffe` Workload API cannot be used, naming the configuration key.
    #[error("{key}: {reason}")]
    WorkloadApi {
        /// The configuration key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A blocking startup step was interrupted.
    #[error("startup interrupted: {step}")]
    Interrupted {
        /// The step.
        step: &'static str,
    },
}

/// What is served at which path; rebuilt on every trust store change, re-serialising
/// only the bundles whose revision changed.
#[derive(Debug, Default)]
pub struct ServedTable {
    paths: BTreeMap<String, Served>,
}

/// One served path: the bundle as served, and the trust store revision it came from.
#[derive(Debug, Clone)]
struct Served {
    revision: u64,
    bundle: ServedBundle,
}

impl ServedTable {
    /// Local domains at their configured paths, foreign ones at `/relay/<td>`.
    pub fn build(snapshot: &Snapshot, locals: &[(TrustDomain, String)]) -> Self {
        Self::default().rebuild(snapshot, locals)
    }

    /// The table for `snapshot`, reusing this table's serialised bundles whose
    /// revision is unchanged: a change to one domain costs one serialisation, not one
    /// per stored domain.
    #[must_use]
    pub fn rebuild(&self, snapshot: &Snapshot, locals: &[(TrustDomain, String)]) -> Self {
        let served = |path: &String, entry: &crate::trust::store::Entry| -> Served {
            match self.paths.get(path) {
                Some(previous) if previous.revision == entry.revision => previous.clone(),
                _ => Served {
                    revision: entry.revision,
                    bundle: ServedBundle::new(&entry.bundle),
                },
            }
        };
        let mut paths = BTreeMap::new();
        for (td, path) in locals {
            if let Some(entry) = snapshot.get(td) {
                paths.insert(path.clone(), served(path, entry));
            }
        }
        let local: BTreeSet<&TrustDomain> = locals.iter().map(|(td, _)| td).collect();
        for (td, entry) in &snapshot.domains {
            if !local.contains(td) {
                let path = format!("/relay/{td}");
                let value = served(&path, entry);
                paths.insert(path, value);
            }
        }
        Self { paths }
    }

    /// The bundle served at exactly `path`.
    pub fn get(&self, path: &str) -> Option<&ServedBundle> {
        self.paths.get(path).map(|served| &served.bundle)
    }

    /// Every served path.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.paths.keys().map(String::as_str)
    }
}

/// Keep `table` equal to the trust store's snapshot until cancelled (restarted after
/// a panic by `supervisor`).
pub fn follow(
    trust_store: TrustStore,
    locals: Vec<(TrustDomain, String)>,
    supervisor: &Supervisor,
) -> Arc<ArcSwap<ServedTable>> {
    let table = Arc::new(ArcSwap::from_pointee(ServedTable::build(
        &trust_store.snapshot(),
        &locals,
    )));
    let cancel = supervisor.shutdown().token();
    let out = Arc::clone(&table);
    let locals = Arc::new(locals);
    supervisor.spawn("endpoint table".to_owned(), cancel.clone(), move || {
        let (trust_store, table, locals) =
            (trust_store.clone(), Arc::clone(&table), Arc::clone(&locals));
        let cancel = cancel.clone();
        async move {
            // A (re)start serves the current snapshot at once, then follows the feed.
            let mut changes = trust_store.subscribe();
            loop {
                let next = table.load().rebuild(&trust_store.snapshot(), &locals);
                table.store(Arc::new(next));
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(MIN_REBUILD_GAP) => {}
                }
                tokio::select! {
                    () = cancel.cancelled() => return,
                    changed = changes.changed() => if changed.is_err() { return },
                }
            }
        }
    });
    out
}

/// The files and parameters of one listener's TLS identity.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// `https_web`: a Web PKI certificate for `public_names`.
    Web {
        /// PEM chain.
        cert: PathBuf,
        /// PEM key.
        key: PathBuf,
        /// Names clients use (SRV-6).
        public_names: Vec<ServerName<'static>>,
        /// Roots considered public (SRV-7 warning).
        public_roots: Arc<RootCertStore>,
    },
    /// `https_spiffe`: an X509-SVID for `endpoint_id` (SRV-8).
    Spiffe {
        /// Where the SVID and its key come from.
        identity: SvidSource,
        /// The SPIFFE ID it must carry.
        endpoint_id: SpiffeId,
    },
}

/// Where the `https_spiffe` endpoint's X509-SVID comes from.
#[derive(Debug, Clone)]
pub enum SvidSource {
    /// PEM files, checked every [`RELOAD_INTERVAL`].
    Files {
        /// PEM chain.
        svid: PathBuf,
        /// PEM key.
        key: PathBuf,
    },
    /// A SPIFFE Workload API: the newest SVID its stream published, applied as soon as
    /// it arrives.
    WorkloadApi {
        /// The socket, as configured (for messages).
        socket: String,
        /// The newest SVID.
        svid: tokio::sync::watch::Receiver<
            Option<Arc<crate::sources::local::workload::SvidMaterial>>,
        >,
    },
}

impl SvidSource {
    /// The chain, key and a fingerprint of both, now. Blocks (file reads).
    fn load(
        &self,
    ) -> Result<
        (
            Vec<CertificateDer<'static>>,
            PrivateKeyDer<'static>,
            Vec<u8>,
        ),
        EndpointError,
    > {
        match self {
            Self::Files { svid, key } => Ok(tls::load_pair(svid, key)?.into_parts()),
            Self::WorkloadApi { socket, svid } => {
                let current = svid.borrow().clone();
                let Some(material) = current else {
                    return Err(EndpointError::Load {
                        path: PathBuf::from(socket),
                        reason: "no X509-SVID received from the Workload API yet".to_owned(),
                    });
                };
                let chain: Vec<CertificateDer<'static>> = material
                    .chain
                    .iter()
                    .map(|der| CertificateDer::from(der.clone()))
                    .collect();
                let key = PrivateKeyDer::try_from(material.key.clone()).map_err(|reason| {
                    EndpointError::Load {
                        path: PathBuf::from(socket),
                        reason: format!("the Workload API's SVID key: {reason}"),
                    }
                })?;
                let mut fingerprint = material.chain.concat();
                fingerprint.extend_from_slice(&material.key);
                let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &fingerprint);
                Ok((chain, key, digest.as_ref().to_vec()))
            }
        }
    }

    /// The configuration key and the file (or socket) named in a refusal.
    fn origin(&self) -> (&'static str, PathBuf) {
        match self {
            Self::Files { svid, .. } => ("svid", svid.clone()),
            Self::WorkloadApi { socket, .. } => ("workload_api_socket", PathBuf::from(socket)),
        }
    }

    /// A receiver that wakes the reload loop when a new SVID is pushed.
    fn updates(
        &self,
    ) -> Option<
        tokio::sync::watch::Receiver<Option<Arc<crate::sources::local::workload::SvidMaterial>>>,
    > {
        match self {
            Self::Files { .. } => None,
            Self::WorkloadApi { svid, .. } => Some(svid.clone()),
        }
    }
}

impl TlsSource {
    fn profile(&self) -> &'static str {
        match self {
            Self::Web { .. } => "https_web",
            Self::Spiffe { .. } => "https_spiffe",
        }
    }

    /// Build the TLS configuration from the files now. Blocks (file reads).
    ///
    /// # Errors
    /// [`EndpointError`] naming the file or the check that failed.
    pub fn build(&self, snapshot: &Snapshot) -> Result<(ServerTls, Vec<u8>), EndpointError> {
        let now = UnixTime::now();
        let tls_error = |key, file: &PathBuf, source| EndpointError::Tls {
            profile: self.profile(),
            key,
            file: file.as_path().into(),
            source,
        };
        match self {
            Self::Web {
                cert,
                key,
                public_names,
                public_roots,
            } => {
                let (chain, key_der, fingerprint) = tls::load_pair(cert, key)?.into_parts();
                let tls = https_web_server_config(chain, key_der, public_names, public_roots, now)
                    .map_err(|err| tls_error("cert", cert, err))?;
                Ok((tls, fingerprint))
            }
            Self::Spiffe {
                identity,
                endpoint_id,
            } => {
                let local = snapshot.get(endpoint_id.trust_domain()).ok_or_else(|| {
                    EndpointError::NoLocalBundle {
                        trust_domain: endpoint_id.trust_domain().clone(),
                    }
                })?;
                let (chain, key_der, mut fingerprint) = identity.load()?;
                // A rotated local CA can invalidate (or validate) the SVID: rebuild then too.
                fingerprint.extend_from_slice(local.digest.as_bytes());
                let (key, origin) = identity.origin();
                let tls =
                    https_spiffe_server_config(chain, key_der, &local.bundle, endpoint_id, now)
                        .map_err(|err| tls_error(key, &origin, err))?;
                Ok((tls, fingerprint))
            }
        }
    }
}

impl From<tls::LoadError> for EndpointError {
    fn from(err: tls::LoadError) -> Self {
        Self::Load {
            path: err.path,
            reason: err.reason,
        }
    }
}

/// A bound listener, not yet accepting.
#[derive(Debug)]
pub struct Listener {
    listener: TcpListener,
    source: TlsSource,
    tls: Arc<ArcSwap<rustls::ServerConfig>>,
    fingerprint: Vec<u8>,
}

impl Listener {
    /// Build the TLS configuration (refusing to start on a failed check) and bind.
    ///
    /// # Errors
    /// [`EndpointError`] from the TLS checks or the bind.
    pub async fn bind(
        addr: SocketAddr,
        source: TlsSource,
        trust_store: &TrustStore,
    ) -> Result<Self, EndpointError> {
        let snapshot = trust_store.snapshot();
        let built_source = source.clone();
        let (tls, fingerprint) = tokio::task::spawn_blocking(move || built_source.build(&snapshot))
            .await
            .map_err(|err| EndpointError::Load {
                path: PathBuf::new(),
                reason: err.to_string(),
            })??;
        for warning in &tls.warnings {
            tracing::warn!(profile = source.profile(), %warning, "bundle endpoint certificate");
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| EndpointError::Bind { addr, source })?;
        Ok(Self {
            listener,
            source,
            tls: Arc::new(ArcSwap::new(tls.config)),
            fingerprint,
        })
    }

    /// The bound address (useful with port 0).
    ///
    /// # Errors
    /// The socket's error if it has no local address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accept connections until shutdown under `limits`, serving `table`, and reload
    /// the TLS identity when its files (or, for `https_spiffe`, the local bundle)
    /// change; the reload runs under `supervisor` (a panic restarts it, and it then
    /// reloads whatever changed since the start). The TLS handshake and the first
    /// request must complete within the header timeout.
    pub fn serve(
        self,
        table: Arc<ArcSwap<ServedTable>>,
        trust_store: TrustStore,
        limits: Limits,
        net: &Net,
        supervisor: &Supervisor,
    ) {
        let profile = self.source.profile();
        let shutdown = net.shutdown();
        let (source, tls, fingerprint, cancel) = (
            self.source,
            Arc::clone(&self.tls),
            self.fingerprint,
            shutdown.token(),
        );
        supervisor.spawn(format!("{profile} TLS reload"), cancel.clone(), move || {
            reload(
                source.clone(),
                Arc::clone(&tls),
                fingerprint.clone(),
                trust_store.clone(),
                cancel.clone(),
            )
        });
        let connector = BundleConnector {
            tls: self.tls,
            service: BundleService { table },
        };
        shutdown.spawn(net.serve(
            profile,
            net::Listener::Tcp(self.listener),
            limits,
            Protocols::Auto,
            connector,
        ));
    }
}

/// Sets a connection up: the TLS handshake with the identity current at accept.
struct BundleConnector {
    tls: Arc<ArcSwap<rustls::ServerConfig>>,
    service: BundleService,
}

impl Connector for BundleConnector {
    type Io = TlsStream<Stream>;
    type Service = BundleService;

    async fn connect(&self, stream: Stream, peer: &Peer) -> Option<(Self::Io, BundleService)> {
        let acceptor = TlsAcceptor::from(self.tls.load_full());
        match acceptor.accept(stream).await {
            Ok(tls) => Some((tls, self.service.clone())),
            Err(err) => {
                tracing::trace!(%peer, error = %err, "bundle endpoint: TLS handshake failed");
                None
            }
        }
    }
}

/// Answers every request from the served table (the library's `respond`); the
/// request body is never read.
#[derive(Clone)]
struct BundleService {
    table: Arc<ArcSwap<ServedTable>>,
}

impl tower::Service<hyper::Request<hyper::body::Incoming>> for BundleService {
    type Response = hyper::Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        let table = self.table.load();
        let (parts, _body) = request.into_parts();
        let response = respond(&parts, table.get(parts.uri.path())).map(Full::<Bytes>::new);
        std::future::ready(Ok(response))
    }
}

async fn reload(
    source: TlsSource,
    tls: Arc<ArcSwap<rustls::ServerConfig>>,
    mut fingerprint: Vec<u8>,
    trust_store: TrustStore,
    cancel: CancellationToken,
) {
    let mut pushed = match &source {
        TlsSource::Spiffe { identity, .. } => identity.updates(),
        TlsSource::Web { .. } => None,
    };
    loop {
        // A pushed SVID is applied at once; files (and the local bundle an SVID is
        // checked against) are looked at every RELOAD_INTERVAL.
        let pushed_changed = async {
            match pushed.as_mut() {
                Some(rx) => {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(RELOAD_INTERVAL) => {}
            () = pushed_changed => {}
        }
        let snapshot = trust_store.snapshot();
        let candidate = source.clone();
        let Ok(built) = tokio::task::spawn_blocking(move || candidate.build(&snapshot)).await
        else {
            return;
        };
        match built {
            Ok((_, new)) if new == fingerprint => {}
            Ok((config, new)) => {
                fingerprint = new;
                tls.store(config.config);
                tracing::info!(
                    profile = source.profile(),
                    "bundle endpoint TLS identity reloaded"
                );
            }
            Err(err) => {
                // Keep serving with the last good identity.
                tracing::error!(profile = source.profile(), error = %err, "TLS identity reload failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::policy::testing::{bundle, now, td};
    use crate::trust::policy::{PolicySettings, Source};

    async fn put(store: &TrustStore, name: &str, sequence: u64) {
        let source = Source::Operator { who: "test".into() };
        let domain = td(name);
        store
            .submit(&domain, bundle(&domain, Some(sequence)), source, now())
            .await
            .unwrap();
    }

    /// A rebuild keeps the served form of every bundle whose revision did not change
    /// (a placeholder planted under `a.test` survives), and re-serialises the one that
    /// did.
    #[tokio::test]
    async fn rebuild_serialises_only_changed_bundles() {
        let dir = tempfile::tempdir().unwrap();
        let store = TrustStore::open(dir.path(), PolicySettings::default())
            .await
            .unwrap();
        put(&store, "a.test", 1).await;
        put(&store, "b.test", 1).await;
        let locals = vec![(td("a.test"), "/".to_owned())];
        let mut table = ServedTable::build(&store.snapshot(), &locals);
        let placeholder = ServedBundle::new(&bundle(&td("other.test"), Some(99)));
        table.paths.get_mut("/").unwrap().bundle = placeholder.clone();

        put(&store, "b.test", 2).await;
        let snapshot = store.snapshot();
        let next = table.rebuild(&snapshot, &locals);
        assert_eq!(next.get("/"), Some(&placeholder), "unchanged a.test reused");
        let b = snapshot.get(&td("b.test")).unwrap();
        assert_eq!(
            next.get("/relay/b.test"),
            Some(&ServedBundle::new(&b.bundle)),
            "changed b.test re-served"
        );

        put(&store, "a.test", 2).await;
        let snapshot = store.snapshot();
        let last = next.rebuild(&snapshot, &locals);
        let a = snapshot.get(&td("a.test")).unwrap();
        assert_eq!(last.get("/"), Some(&ServedBundle::new(&a.bundle)));
        assert_eq!(last.paths().count(), 2);
    }
}
