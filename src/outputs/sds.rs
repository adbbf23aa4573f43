//! Envoy Secret Discovery Service (SDS v3) sink: serves every trusted domain's X.509
//! authorities to Envoy as validation-context secrets, the way SPIRE's agent does, so
//! Envoy configurations written for SPIRE work unchanged.
//!
//! Owns the listener (a unix socket by default, or TCP), following the trust store's
//! change feed (one [`resources::Catalog`] per revision, shared by every stream), and
//! the server's lifetime under the shutdown tree; connections are served by
//! [`crate::net`] (HTTP/2 only) under `[sinks.sds.limits]`. What each resource holds is
//! [`resources`]; the xDS conversation rules are [`protocol`]; the gRPC glue is
//! `service`. It never reads storage: only snapshots.
//!
//! The socket serves public trust material only (CA certificates, never keys), so its
//! mode (default 0660) lets an Envoy in the gateway's group connect; a stale socket
//! left by a crash is replaced, a live one or a non-socket file is an error.

use std::io;
use std::path::Path;
use std::sync::Arc;

use spiffe_federation::TrustDomain;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tonic::service::Routes;

use crate::net::BoundAddr;
use crate::net::unix::{self, SocketError};
use crate::net::{self, Kind, Net, Plain, Protocols};
use crate::supervise::Supervisor;
use crate::telemetry::Metrics;
use crate::trust::store::TrustStore;

mod config;
mod gauges;
pub mod protocol;
pub mod resources;
mod service;
mod stream;
pub mod wire;

pub use self::config::{
    DEFAULT_ALL_BUNDLES_NAME, DEFAULT_BUNDLE_NAME, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_STREAMS,
    DEFAULT_SOCKET_MODE, DEFAULT_STALL_TIMEOUT, SdsConfig, SdsListen, SocketMode,
};

use resources::{Catalog, Naming};
use service::{SdsService, ServiceLimits};

/// Why the SDS server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SdsError {
    /// The unix socket could not be made.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// The address could not be bound.
    #[error("cannot bind the SDS server to {address}: {source}")]
    Bind {
        /// The address, as configured.
        address: String,
        /// The OS error.
        source: io::Error,
    },
}

/// Bind the SDS listener and serve until shutdown. `locals` are the configured local
/// domains (the default-bundle name means the only one, unless configured).
///
/// # Errors
/// [`SdsError`] naming the path or address that could not be used; nothing is left
/// running then.
pub async fn start<'a>(
    config: &'a SdsConfig,
    data_dir: &Path,
    locals: impl Iterator<Item = &'a TrustDomain>,
    trust_store: &TrustStore,
    metrics: &Metrics,
    net: &Net,
    supervisor: &Supervisor,
) -> Result<BoundAddr, SdsError> {
    let shutdown = net.shutdown();
    let naming = Naming::new(config, locals);
    let listen = config.listen(data_dir);
    let (bound, addr) = match &listen {
        SdsListen::Unix(path) => (
            Bound::Unix(bind_unix(path, config.socket_mode()).await?),
            BoundAddr::Unix(path.clone()),
        ),
        SdsListen::Tcp(addr) => {
            let bind_error = |source| SdsError::Bind {
                address: addr.to_string(),
                source,
            };
            let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
            let local = listener.local_addr().map_err(bind_error)?;
            (Bound::Tcp(listener), BoundAddr::Tcp(local))
        }
    };
    let catalog = follow(trust_store.clone(), naming, supervisor);
    let service_limits = ServiceLimits {
        max_streams: config.max_streams,
        max_request_bytes: config.max_request_bytes,
        stall_timeout: config.stall_timeout.duration(),
    };
    let service = SdsService::new(catalog, metrics.clone(), shutdown.clone(), service_limits);
    let routes = Routes::new(service);
    let limits = config.limits.resolve(Kind::Sds);
    let socket = match &listen {
        SdsListen::Unix(path) => Some(path.clone()),
        SdsListen::Tcp(_) => None,
    };
    let listener = match bound {
        // Anyone who can open the socket (its mode decides) may read public CAs.
        Bound::Unix(listener) => net::Listener::Unix {
            listener,
            owner: None,
        },
        Bound::Tcp(listener) => net::Listener::Tcp(listener),
    };
    let serving = net.serve(NAME, listener, limits, Protocols::Http2Only, Plain(routes));
    shutdown.spawn(async move {
        serving.await;
        if let Some(path) = socket
            && let Err(err) = tokio::fs::remove_file(&path).await
            && err.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), %err, "cannot remove the SDS socket");
        }
    });
    tracing::info!(listen = %String::from(listen), "SDS server listening");
    Ok(addr)
}

/// The listener's name in metrics and logs.
const NAME: &str = "sds";

enum Bound {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// Keep a catalog equal to the trust store's snapshot until shutdown; streams wait
/// on the returned receiver. When the follower stops, every stream ends.
pub(crate) fn follow(
    trust_store: TrustStore,
    naming: Naming,
    supervisor: &Supervisor,
) -> watch::Receiver<Arc<Catalog>> {
    let first = Catalog::from_snapshot(&trust_store.snapshot(), &naming);
    let (publish, catalog) = watch::channel(Arc::new(first));
    let publish = Arc::new(publish);
    let naming = Arc::new(naming);
    let cancel = supervisor.shutdown().token();
    supervisor.spawn("sds catalog".to_owned(), cancel.clone(), move || {
        let (trust_store, publish, naming) = (
            trust_store.clone(),
            Arc::clone(&publish),
            Arc::clone(&naming),
        );
        let cancel = cancel.clone();
        async move {
            // Subscribe before reading the snapshot, so that a change in between is
            // pending on the feed instead of lost; a restart publishes at once.
            let mut changes = trust_store.subscribe();
            loop {
                let current = trust_store.snapshot();
                if publish.borrow().revision != current.revision {
                    publish.send_replace(Arc::new(Catalog::from_snapshot(&current, &naming)));
                }
                tokio::select! {
                    () = cancel.cancelled() => return,
                    changed = changes.changed() => if changed.is_err() { return },
                }
            }
        }
    });
    catalog
}

async fn bind_unix(path: &Path, mode: SocketMode) -> Result<UnixListener, SdsError> {
    let file = unix::SocketFile {
        role: "SDS server",
        mode: mode.bits(),
        parent_mode: None,
    };
    Ok(unix::bind(path, file).await?.listener)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;
    use std::time::Duration;

    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        Secret, SpiffeCertValidatorConfig, secret,
    };
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryRequest, DiscoveryRequest, DiscoveryResponse,
    };
    use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
    use envoy_types::pb::google::rpc::Status as RpcStatus;
    use prost::Message as _;
    use spiffe_federation::Bundle;
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::Streaming;
    use tonic::transport::{Channel, Endpoint};

    use super::*;
    use crate::shutdown::Ended;
    use crate::shutdown::Shutdown;
    use crate::telemetry::Family;
    use crate::telemetry::families::{SDS_NACKS, SDS_PUSHES, SDS_STREAMS};
    use crate::trust::policy::testing::{bundle, now, td};
    use crate::trust::policy::{PolicySettings, Source};

    const DEADLINE: Duration = Duration::from_secs(20);

    struct Harness {
        _dir: tempfile::TempDir,
        store: TrustStore,
        metrics: Metrics,
        shutdown: Shutdown,
        socket: PathBuf,
    }

    impl Harness {
        /// A real trust store and an SDS server on a unix socket, `extra` added to
        /// `[sinks.sds]`; the local domain is a.test.
        async fn start(extra: &str) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let store = TrustStore::open(dir.path().join("db"), PolicySettings::default())
                .await
                .unwrap();
            let config: SdsConfig = toml::from_str(extra).unwrap();
            config.validate(dir.path()).unwrap();
            let metrics = Metrics::new();
            let shutdown = Shutdown::new();
            let net = Net::new(
                crate::net::Budget::new(64),
                metrics.clone(),
                shutdown.clone(),
            );
            let locals = [td("a.test")];
            let supervisor = crate::supervise::Supervisor::new(
                shutdown.clone(),
                crate::supervise::TaskHealth::new(),
                metrics.clone(),
            );
            let addr = start(
                &config,
                dir.path(),
                locals.iter(),
                &store,
                &metrics,
                &net,
                &supervisor,
            )
            .await
            .unwrap();
            let BoundAddr::Unix(socket) = addr else {
                panic!("expected the default unix socket, got {addr:?}");
            };
            assert_eq!(socket, dir.path().join("sds.sock"));
            Self {
                _dir: dir,
                store,
                metrics,
                shutdown,
                socket,
            }
        }

        async fn client(&self) -> SecretDiscoveryServiceClient<Channel> {
            let endpoint = Endpoint::from_shared(format!("unix:{}", self.socket.display()));
            SecretDiscoveryServiceClient::new(endpoint.unwrap().connect().await.unwrap())
        }

        async fn put(&self, bundle: &Bundle) -> u64 {
            let source = Source::Operator { who: "test".into() };
            match self
                .store
                .submit(bundle.trust_domain(), bundle.clone(), source, now())
                .await
                .unwrap()
            {
                crate::trust::store::Outcome::Accepted { revision, .. } => revision,
                other => panic!("not accepted: {other:?}"),
            }
        }

        async fn stream(&self, names: &[&str]) -> Stream {
            let (tx, rx) = mpsc::channel(4);
            tx.send(request(names, "", "")).await.unwrap();
            let inbound = self
                .client()
                .await
                .stream_secrets(ReceiverStream::new(rx))
                .await
                .unwrap()
                .into_inner();
            Stream { tx, inbound }
        }

        /// Wait until the counter or gauge `family{variant}` reaches `value`.
        async fn metric_reaches(
            &self,
            family: impl Into<Family>,
            variant: &'static str,
            value: f64,
        ) {
            let family = family.into();
            let name = family.name;
            let deadline = tokio::time::Instant::now() + DEADLINE;
            while self.metrics.value(family, &[("variant", variant)]) != Some(value) {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{name}{{variant={variant}}} stays at {:?}, expected {value}",
                    self.metrics.value(family, &[("variant", variant)])
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    struct Stream {
        tx: mpsc::Sender<DiscoveryRequest>,
        inbound: Streaming<DiscoveryResponse>,
    }

    impl Stream {
        async fn next(&mut self) -> DiscoveryResponse {
            tokio::time::timeout(DEADLINE, self.inbound.message())
                .await
                .expect("no SDS response in time")
                .unwrap()
                .expect("stream ended")
        }

        async fn ack(&self, names: &[&str], response: &DiscoveryResponse) {
            let ack = request(names, &response.version_info, &response.nonce);
            self.tx.send(ack).await.unwrap();
        }
    }

    fn request(names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            resource_names: names.iter().map(|s| (*s).to_owned()).collect(),
            version_info: version.to_owned(),
            response_nonce: nonce.to_owned(),
            type_url: resources::SECRET_TYPE_URL.to_owned(),
            ..DiscoveryRequest::default()
        }
    }

    /// Secret name → the PEM it trusts: `trusted_ca`, or for the SPIFFE validator one
    /// `<name>/<td>` entry per trust domain.
    fn decode(response: &DiscoveryResponse) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for any in &response.resources {
            let secret = Secret::decode(any.value.as_slice()).unwrap();
            let Some(secret::Type::ValidationContext(context)) = secret.r#type else {
                panic!("{} is not a validation context", secret.name);
            };
            let pem = |source: Option<&envoy_types::pb::envoy::config::core::v3::DataSource>| {
                match source.and_then(|s| s.specifier.clone()) {
                    Some(envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineBytes(b)) => {
                        String::from_utf8(b).unwrap()
                    }
                    other => panic!("not inline: {other:?}"),
                }
            };
            if let Some(validator) = context.custom_validator_config {
                let config = SpiffeCertValidatorConfig::decode(
                    validator.typed_config.unwrap().value.as_slice(),
                )
                .unwrap();
                for domain in config.trust_domains {
                    out.push((
                        format!("{}/{}", secret.name, domain.name),
                        pem(domain.trust_bundle.as_ref()),
                    ));
                }
            } else {
                out.push((secret.name, pem(context.trusted_ca.as_ref())));
            }
        }
        out
    }

    fn entries(pairs: &[(&str, &Bundle)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, bundle)| ((*name).to_owned(), bundle.to_pem()))
            .collect()
    }

    #[tokio::test]
    async fn dist_4_dist_5_poll_4_stream_pushes_initial_state_changes_and_removal() {
        let gw = Harness::start("").await;
        let (a, b) = (bundle(&td("a.test"), None), bundle(&td("b.test"), None));
        gw.put(&a).await;
        let revision = gw.put(&b).await;
        let names = ["ALL", "spiffe://a.test", "spiffe://b.test"];
        let mut stream = gw.stream(&names).await;
        let first = stream.next().await;
        assert_eq!(first.version_info, revision.to_string());
        assert_eq!(first.type_url, resources::SECRET_TYPE_URL);
        assert_eq!(
            decode(&first),
            entries(&[
                ("ALL/a.test", &a),
                ("ALL/b.test", &b),
                ("spiffe://a.test", &a),
                ("spiffe://b.test", &b)
            ])
        );
        gw.metric_reaches(SDS_STREAMS, "sotw", 1.0).await;
        stream.ack(&names, &first).await;

        let b2 = bundle(&td("b.test"), None);
        let revision = gw.put(&b2).await;
        let second = stream.next().await;
        assert_eq!(second.version_info, revision.to_string());
        assert_ne!(second.nonce, first.nonce);
        assert_eq!(
            decode(&second),
            entries(&[
                ("ALL/a.test", &a),
                ("ALL/b.test", &b2),
                ("spiffe://a.test", &a),
                ("spiffe://b.test", &b2)
            ])
        );
        stream.ack(&names, &second).await;

        let revision = gw.store.remove(&td("b.test"), "test", now()).await.unwrap();
        let third = stream.next().await;
        assert_eq!(Some(third.version_info.parse().unwrap()), revision);
        assert_eq!(
            decode(&third),
            entries(&[("ALL/a.test", &a), ("spiffe://a.test", &a)]),
            "b.test leaves ALL and its own resource is no longer sent"
        );
        gw.metric_reaches(SDS_PUSHES, "sotw", 3.0).await;
        // Shutdown ends open streams instead of waiting for the client.
        assert_eq!(gw.shutdown.shutdown(DEADLINE).await, Ended::Clean);
        assert!(!gw.socket.exists(), "the socket file is removed");
    }

    #[tokio::test]
    async fn stream_survives_a_nack_and_sends_unknown_names_once_they_exist() {
        let gw = Harness::start("").await;
        let a = bundle(&td("a.test"), None);
        gw.put(&a).await;
        let names = ["ALL", "spiffe://c.test"];
        let mut stream = gw.stream(&names).await;
        let first = stream.next().await;
        assert_eq!(
            decode(&first),
            entries(&[("ALL/a.test", &a)]),
            "c.test unknown"
        );
        let mut nack = request(&names, "", &first.nonce);
        nack.error_detail = Some(RpcStatus {
            code: 13,
            message: "cannot load trusted CA".into(),
            details: Vec::new(),
        });
        stream.tx.send(nack).await.unwrap();
        gw.metric_reaches(SDS_NACKS, "sotw", 1.0).await;

        let c = bundle(&td("c.test"), None);
        gw.put(&c).await;
        let second = stream.next().await;
        assert_eq!(
            decode(&second),
            entries(&[
                ("ALL/a.test", &a),
                ("ALL/c.test", &c),
                ("spiffe://c.test", &c)
            ])
        );
        drop(stream);
        gw.metric_reaches(SDS_STREAMS, "sotw", 0.0).await;
    }

    #[tokio::test]
    async fn map_8_allow_list_and_rootca_over_the_wire() {
        let gw = Harness::start("trust_domains = [\"a.test\"]").await;
        let (a, b) = (bundle(&td("a.test"), None), bundle(&td("b.test"), None));
        gw.put(&a).await;
        gw.put(&b).await;
        let mut stream = gw.stream(&["ALL", "ROOTCA", "spiffe://b.test"]).await;
        assert_eq!(
            decode(&stream.next().await),
            entries(&[("ALL/a.test", &a), ("ROOTCA", &a)]),
            "b.test is outside the allow-list"
        );
        // Empty names: every offered spiffe://<td> resource, as SPIRE answers; unary.
        let fetched = gw
            .client()
            .await
            .fetch_secrets(request(&[], "", ""))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(decode(&fetched), entries(&[("spiffe://a.test", &a)]));
        assert!(fetched.nonce.is_empty(), "no ACK follows a unary fetch");
    }

    #[tokio::test]
    async fn poll_4_dist_4_delta_lists_a_removed_domain() {
        let gw = Harness::start("").await;
        let (a, b) = (bundle(&td("a.test"), None), bundle(&td("b.test"), None));
        gw.put(&a).await;
        gw.put(&b).await;
        let (tx, rx) = mpsc::channel(4);
        tx.send(DeltaDiscoveryRequest {
            resource_names_subscribe: vec!["ALL".into(), "spiffe://b.test".into()],
            type_url: resources::SECRET_TYPE_URL.into(),
            ..DeltaDiscoveryRequest::default()
        })
        .await
        .unwrap();
        let mut inbound = gw
            .client()
            .await
            .delta_secrets(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let mut next = async || {
            tokio::time::timeout(DEADLINE, inbound.message())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
        };
        let first = next().await;
        let names: BTreeSet<_> = first.resources.iter().map(|r| r.name.clone()).collect();
        assert_eq!(
            names,
            BTreeSet::from(["ALL".into(), "spiffe://b.test".into()])
        );
        gw.store.remove(&td("b.test"), "test", now()).await.unwrap();
        let second = next().await;
        assert_eq!(second.removed_resources, ["spiffe://b.test"]);
        assert_eq!(second.resources.len(), 1, "the new ALL");
        drop(tx);
    }

    #[tokio::test]
    async fn socket_gets_its_mode_and_a_stale_one_is_replaced() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/sds.sock");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists(), "a stale socket file");
        let listener = bind_unix(&path, DEFAULT_SOCKET_MODE).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o660);
        let again = bind_unix(&path, DEFAULT_SOCKET_MODE).await.unwrap_err();
        assert!(
            matches!(again, SdsError::Socket(SocketError::InUse { .. })),
            "{again}"
        );
        drop(listener);
        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        let refused = bind_unix(&file, DEFAULT_SOCKET_MODE).await.unwrap_err();
        assert!(
            matches!(refused, SdsError::Socket(SocketError::NotASocket { .. })),
            "{refused}"
        );
    }
}
