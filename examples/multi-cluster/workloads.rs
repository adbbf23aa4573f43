//! The workloads of the demonstration: an mTLS server and client on loopback, each
//! holding an X509-SVID from its own domain's CA, each trusting only the bundles its
//! own gateway's files sink wrote.
//!
//! Owns the two rustls configurations and one request/response exchange:
//!
//! - the **server** requires a client certificate and verifies it with the library's
//!   [`SpiffeClientVerifier`] under the bundle of the client ID's own trust domain,
//!   looked up in the `bundle-map.json` of its gateway's files sink, read afresh for
//!   every connection (so a bundle the gateway adds, rotates or removes applies to the
//!   next handshake); its authorizer admits the configured client IDs only;
//! - the **client** reads `<server's td>.pem` from its own gateway's files sink for
//!   every call and verifies the server with [`SpiffeServerVerifier`] for the one
//!   SPIFFE ID it expects. No bundle file, no call.
//!
//! It does not own the gateways or the certificates (the CAs are `dev_pki`'s).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use fedgw::outputs::files::MAP_FILE;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use spiffe_federation::endpoint::client::SpiffeServerVerifier;
use spiffe_federation::{
    Bundle, BundleError, BundleMap, SpiffeClientVerifier, SpiffeId, TrustDomain, peer_spiffe_id,
};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// How long one connection may take, handshake and exchange included.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// A workload's X509-SVID and key, in memory and as PEM files (for `openssl`).
#[derive(Debug)]
pub(crate) struct Identity {
    /// The SPIFFE ID in the SVID.
    pub(crate) id: SpiffeId,
    /// The SVID chain, leaf first.
    pub(crate) chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// The chain as a PEM file.
    pub(crate) cert_file: PathBuf,
    /// The key as a PEM file (0600).
    pub(crate) key_file: PathBuf,
}

impl Identity {
    /// Read an identity from the PEM files `cert_file` and `key_file`.
    pub(crate) fn load(
        id: SpiffeId,
        cert_file: PathBuf,
        key_file: PathBuf,
    ) -> anyhow::Result<Self> {
        let chain = CertificateDer::pem_file_iter(&cert_file)?.collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(&key_file)?;
        Ok(Self {
            id,
            chain,
            key,
            cert_file,
            key_file,
        })
    }

    /// The leaf certificate.
    pub(crate) fn leaf(&self) -> Option<&CertificateDer<'static>> {
        self.chain.first()
    }
}

/// One successful call.
#[derive(Debug, Clone)]
pub(crate) struct Exchange {
    /// The server's verified SPIFFE ID.
    pub(crate) server_id: SpiffeId,
    /// The leaf certificate the server presented.
    pub(crate) server_leaf: CertificateDer<'static>,
    /// The server's answer, which names the client ID the server verified.
    pub(crate) reply: String,
}

/// Why a call failed, as the client saw it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// The client's gateway distributes no bundle for the server's trust domain, so
    /// nothing can authenticate the server: the client does not even connect.
    #[error("no bundle for trust domain {trust_domain}: {} does not exist, so no server of that domain can be authenticated", path.display())]
    MissingBundle {
        /// The server's trust domain.
        trust_domain: TrustDomain,
        /// The file the client looked for.
        path: PathBuf,
    },
    /// The bundle file is not a PEM bundle.
    #[error("{}: {source}", path.display())]
    BadBundle {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: BundleError,
    },
    /// The TLS handshake or the exchange failed (a verification refused on either
    /// side arrives here: ours directly, the server's as an alert).
    #[error("TLS: {0}")]
    Tls(rustls::Error),
    /// A socket error.
    #[error("I/O: {0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for CallError {
    fn from(err: std::io::Error) -> Self {
        match err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(tls) => Self::Tls(tls.clone()),
            None => Self::Io(err),
        }
    }
}

impl From<rustls::Error> for CallError {
    fn from(err: rustls::Error) -> Self {
        Self::Tls(err)
    }
}

/// What the server saw of one connection.
#[derive(Debug)]
pub(crate) enum ServerEvent {
    /// An authorized client with this verified ID was answered.
    Served(SpiffeId),
    /// The handshake failed; a refused client certificate carries the verifier's
    /// `ClientAuthError` (read it with `spiffe_federation::client_auth_error`).
    Refused(rustls::Error),
    /// Something else went wrong (unreadable bundle map, socket error, timeout).
    Failed(String),
}

/// A running mTLS server workload. Dropping it stops it.
pub(crate) struct Server {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    identity: Arc<ArcSwap<Identity>>,
    events: mpsc::UnboundedReceiver<ServerEvent>,
    task: JoinHandle<()>,
}

impl Server {
    /// Listen on a free loopback port as `identity`, trusting the bundles in
    /// `bundles_dir/bundle-map.json` and admitting the client IDs in `allowed`.
    pub(crate) async fn start(
        identity: Identity,
        bundles_dir: &Path,
        allowed: Vec<SpiffeId>,
        provider: Arc<CryptoProvider>,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let identity = Arc::new(ArcSwap::from_pointee(identity));
        let (events_tx, events) = mpsc::unbounded_channel();
        let serving = Serving {
            identity: Arc::clone(&identity),
            map_file: bundles_dir.join(MAP_FILE),
            allowed: Arc::new(allowed),
            provider,
        };
        let task = tokio::spawn(async move {
            // One connection at a time: the demonstration makes one call at a time.
            while let Ok((tcp, _peer)) = listener.accept().await {
                let event = tokio::time::timeout(CONNECTION_TIMEOUT, serving.connection(tcp))
                    .await
                    .unwrap_or_else(|_| ServerEvent::Failed("connection timed out".to_owned()));
                if events_tx.send(event).is_err() {
                    return;
                }
            }
        });
        Ok(Self {
            addr,
            identity,
            events,
            task,
        })
    }

    /// The SVID the server presents from the next connection on.
    pub(crate) fn set_identity(&self, identity: Identity) {
        self.identity.store(Arc::new(identity));
    }

    /// The SPIFFE ID it presents.
    pub(crate) fn id(&self) -> SpiffeId {
        self.identity.load().id.clone()
    }

    /// Forget events of earlier connections.
    pub(crate) fn drain(&mut self) {
        while self.events.try_recv().is_ok() {}
    }

    /// What the server saw of the next connection.
    pub(crate) async fn next_event(&mut self) -> Option<ServerEvent> {
        tokio::time::timeout(CONNECTION_TIMEOUT, self.events.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What every connection of one server shares.
struct Serving {
    identity: Arc<ArcSwap<Identity>>,
    map_file: PathBuf,
    allowed: Arc<Vec<SpiffeId>>,
    provider: Arc<CryptoProvider>,
}

impl Serving {
    async fn connection(&self, tcp: TcpStream) -> ServerEvent {
        let config = match self.config().await {
            Ok(config) => config,
            Err(err) => return ServerEvent::Failed(format!("{err:#}")),
        };
        let mut tls = match TlsAcceptor::from(Arc::new(config)).accept(tcp).await {
            Ok(tls) => tls,
            Err(err) => {
                return match CallError::from(err) {
                    CallError::Tls(tls) => ServerEvent::Refused(tls),
                    other => ServerEvent::Failed(other.to_string()),
                };
            }
        };
        // The verifier accepted the chain, so its ID is the verified one.
        let client_id = match tls.get_ref().1.peer_certificates().map(peer_spiffe_id) {
            Some(Ok(id)) => id,
            other => return ServerEvent::Failed(format!("no verified client ID: {other:?}")),
        };
        let server_id = self.identity.load().id.clone();
        let mut request = String::new();
        let mut reader = BufReader::new(&mut tls);
        if let Err(err) = reader.read_line(&mut request).await {
            return ServerEvent::Failed(format!("reading the request: {err}"));
        }
        let reply = format!("hello {client_id}, this is {server_id}\n");
        let written = async {
            tls.write_all(reply.as_bytes()).await?;
            tls.shutdown().await
        };
        match written.await {
            Ok(()) => ServerEvent::Served(client_id),
            Err(err) => ServerEvent::Failed(format!("answering: {err}")),
        }
    }

    /// A server configuration for one connection: the current SVID, and a client
    /// verifier over the bundle map as the files sink holds it now.
    async fn config(&self) -> anyhow::Result<rustls::ServerConfig> {
        let document = tokio::fs::read(&self.map_file).await?;
        let map = BundleMap::parse(&document)?.map;
        let bundles: BTreeMap<TrustDomain, Arc<Bundle>> = map
            .iter()
            .map(|(td, bundle)| (td.clone(), Arc::new(bundle.clone())))
            .collect();
        let allowed = Arc::clone(&self.allowed);
        let verifier = SpiffeClientVerifier::new(
            move |td: &TrustDomain| bundles.get(td).cloned(),
            move |id: &SpiffeId| allowed.contains(id),
            &self.provider,
        );
        let identity = self.identity.load();
        let config = rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
        Ok(config)
    }
}

/// Call the server at `addr`, which must prove it is `server_id`, as `client`,
/// trusting the bundle of `server_id`'s trust domain found in `bundles_dir` (the
/// client's own gateway's files sink) at this moment.
pub(crate) async fn call(
    client: &Identity,
    bundles_dir: &Path,
    server_id: &SpiffeId,
    addr: SocketAddr,
    provider: &Arc<CryptoProvider>,
) -> Result<Exchange, CallError> {
    let trust_domain = server_id.trust_domain();
    let path = bundles_dir.join(format!("{trust_domain}.pem"));
    let pem = match tokio::fs::read(&path).await {
        Ok(pem) => pem,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(CallError::MissingBundle {
                trust_domain: trust_domain.clone(),
                path,
            });
        }
        Err(err) => return Err(CallError::Io(err)),
    };
    let bundle = Bundle::from_pem(trust_domain, &pem)
        .map_err(|source| CallError::BadBundle { path, source })?;
    let verifier = SpiffeServerVerifier::new(server_id.clone(), bundle, Arc::clone(provider));
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()?
        .dangerous()
        // Not a skipped check: the server is authenticated by its SPIFFE ID, not by
        // a host name (see `SpiffeServerVerifier`).
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(client.chain.clone(), client.key.clone_key())?;
    let exchange = async {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::IpAddress(addr.ip().into());
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        let server_leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| leaf.clone().into_owned())
            .ok_or(CallError::Tls(rustls::Error::NoCertificatesPresented))?;
        tls.write_all(b"hello\n").await?;
        tls.flush().await?;
        // With TLS 1.3 a server that refuses our certificate says so only now, with
        // an alert in place of the answer.
        let mut reply = String::new();
        tls.read_to_string(&mut reply).await?;
        Ok::<_, CallError>(Exchange {
            server_id: server_id.clone(),
            server_leaf,
            reply: reply.trim_end().to_owned(),
        })
    };
    tokio::time::timeout(CONNECTION_TIMEOUT, exchange)
        .await
        .map_err(|_| CallError::Io(std::io::ErrorKind::TimedOut.into()))?
}

/// Call the server at `addr` with `openssl s_client` as `client`, trusting the PEM
/// roots in `ca_file` (a files sink's `<td>.pem`): the same exchange through an
/// independent TLS stack. OpenSSL checks the path to those roots but no names (none
/// is asked for), so it authenticates the server's CA, not its SPIFFE ID. `None`
/// when `openssl` is not installed.
///
/// # Errors
/// When `openssl` cannot be run or does not finish in time.
pub(crate) async fn openssl_call(
    addr: SocketAddr,
    ca_file: &Path,
    client: &Identity,
) -> std::io::Result<Option<std::process::Output>> {
    let spawned = tokio::process::Command::new("openssl")
        .args(["s_client", "-quiet", "-verify_return_error", "-connect"])
        .arg(addr.to_string())
        .arg("-CAfile")
        .arg(ca_file)
        .arg("-cert")
        .arg(&client.cert_file)
        .arg("-key")
        .arg(&client.key_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    if let Some(mut stdin) = child.stdin.take() {
        // `-quiet` keeps reading after this input ends, until the server closes.
        stdin.write_all(b"hello\n").await?;
    }
    tokio::time::timeout(CONNECTION_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
        .map(Some)
}
