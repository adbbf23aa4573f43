//! The admin API over TLS on TCP, with client X509-SVIDs (mTLS) when
//! `[[admin.clients]]` are configured.
//!
//! Owns the TLS side of the admin listener: the server identity of `[admin.tls]` (PEM
//! files, checked every few seconds and swapped in when they change, the last good one
//! kept if the new one is unusable), the TLS policy (aws-lc-rs, TLS 1.3 and 1.2 with
//! the provider's AEAD suites, as the bundle endpoint; no session resumption, so that
//! every connection's client certificate is checked against the bundles of the day),
//! and the client certificate check: a [`SpiffeClientVerifier`] that verifies a
//! client's X509-SVID under the **current** bundle of its ID's own trust domain in the
//! trust store snapshot, local or federated (DIST-3). Client certificates are
//! mandatory when no token is configured, optional otherwise. A certificate that does
//! not verify fails the handshake; a verified ID that is not listed is answered 403 by
//! [`super::super::auth`] (the handshake admits any verified ID so that the refusal
//! can name it).
//!
//! Handshakes run in each connection's own task under the listener's header timeout
//! ([`crate::net`]), so a slow client does not hold up others; a failed one is logged
//! and ends that connection only. Each connection is served by a router whose
//! [`Access`] carries the client ID its handshake verified.
//! It does not own request authorization ([`super::super::auth`]) or the routes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;
use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, version};
use spiffe_federation::{SpiffeClientVerifier, SpiffeId, client_auth_error, peer_spiffe_id};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use super::ListenError;
use crate::admin::AdminState;
use crate::admin::auth::{Access, TlsAccess};
use crate::config::AdminTls;
use crate::net::tls::{RELOAD_INTERVAL, load_pair};
use crate::net::{self, Connector, Limits, Net, Peer, Protocols, Stream};
use crate::trust::store::TrustStore;

/// A bound TLS admin listener, not yet accepting.
#[derive(Debug)]
pub struct TlsBound {
    listener: TcpListener,
    config: Arc<ServerConfig>,
    identity: Arc<Identity>,
    fingerprint: Vec<u8>,
    files: AdminTls,
    provider: Arc<CryptoProvider>,
    access: TlsAccess,
}

/// Load the identity of `files`, build the TLS configuration and bind `addr`.
///
/// # Errors
/// [`ListenError::TcpWithoutTokens`] if `access` has neither tokens nor clients (the
/// second lock after configuration validation); [`ListenError::TlsFiles`] or
/// [`ListenError::TlsKey`] if the certificate or key cannot be used;
/// [`ListenError::TlsPolicy`]; [`ListenError::Bind`].
pub async fn bind(
    addr: SocketAddr,
    files: &AdminTls,
    access: &TlsAccess,
    trust_store: &TrustStore,
) -> Result<TlsBound, ListenError> {
    if access.tokens().is_empty() && access.clients().is_empty() {
        return Err(ListenError::TcpWithoutTokens { addr });
    }
    let provider = Arc::new(aws_lc_rs::default_provider());
    let (certified, fingerprint) = load_identity(files.clone(), Arc::clone(&provider)).await?;
    let identity = Arc::new(Identity(ArcSwap::from_pointee(certified)));
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])
        .map_err(ListenError::TlsPolicy)?;
    let builder = if access.clients().is_empty() {
        builder.with_no_client_auth()
    } else {
        let bundles = trust_store.clone();
        let verifier = SpiffeClientVerifier::new(
            move |td: &spiffe_federation::TrustDomain| {
                bundles
                    .snapshot()
                    .get(td)
                    .map(|entry| Arc::clone(&entry.bundle))
            },
            // Any verified ID completes the handshake; the allow-list is applied per
            // request, so that an unlisted ID gets a 403 naming it.
            |_: &SpiffeId| true,
            &provider,
        );
        if access.tokens().is_empty() {
            builder.with_client_cert_verifier(Arc::new(verifier))
        } else {
            builder.with_client_cert_verifier(Arc::new(verifier.allow_unauthenticated()))
        }
    };
    let mut config =
        builder.with_cert_resolver(Arc::clone(&identity) as Arc<dyn ResolvesServerCert>);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // No session resumption: a resumed session skips the client certificate check, so
    // a client whose CA was rotated out of its bundle could go on as its old ID.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError::Bind {
            address: addr.to_string(),
            source,
        })?;
    Ok(TlsBound {
        listener,
        config: Arc::new(config),
        identity,
        fingerprint,
        files: files.clone(),
        provider,
        access: access.clone(),
    })
}

impl TlsBound {
    /// Where it listens (the real port when 0 was asked for).
    ///
    /// # Errors
    /// The OS error if the socket cannot report its address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve the admin API over `state` under `limits` until shutdown (connections of
    /// `net`, closed gracefully); reload the TLS identity when its files change
    /// meanwhile. The TLS handshake and the first request must complete within the
    /// header timeout. Resolves when accepting has stopped.
    pub async fn serve(self, state: AdminState, limits: Limits, net: Net) {
        let connector = Handshake {
            acceptor: TlsAcceptor::from(self.config),
            state,
            access: self.access,
        };
        let server = net.serve(
            super::NAME,
            net::Listener::Tcp(self.listener),
            limits,
            Protocols::Auto,
            connector,
        );
        let reloading = reload(
            self.files,
            self.identity,
            self.fingerprint,
            self.provider,
            net.shutdown().token(),
        );
        tokio::join!(server, reloading);
    }
}

/// The server's certificate and key, swapped when the files change.
#[derive(Debug)]
struct Identity(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Identity {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// Read the certificate chain and key of `files` (on the blocking pool) and check that
/// they belong together.
async fn load_identity(
    files: AdminTls,
    provider: Arc<CryptoProvider>,
) -> Result<(CertifiedKey, Vec<u8>), ListenError> {
    let key_path: PathBuf = files.key.clone();
    let loaded = tokio::task::spawn_blocking(move || load_pair(&files.cert, &files.key))
        .await
        .map_err(|err| ListenError::TlsKey {
            key: key_path.clone(),
            reason: format!("loading interrupted: {err}"),
        })?;
    let (chain, key, fingerprint) = loaded.map_err(ListenError::TlsFiles)?.into_parts();
    let certified =
        CertifiedKey::from_der(chain, key, &provider).map_err(|err| ListenError::TlsKey {
            key: key_path,
            reason: err.to_string(),
        })?;
    Ok((certified, fingerprint))
}

/// Check the files every [`RELOAD_INTERVAL`] until `cancel`; swap in a changed identity
/// that loads (`fingerprint`: SHA-256 of the files of the current one), keep the last
/// good one otherwise.
async fn reload(
    files: AdminTls,
    identity: Arc<Identity>,
    mut fingerprint: Vec<u8>,
    provider: Arc<CryptoProvider>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(RELOAD_INTERVAL) => {}
        }
        match load_identity(files.clone(), Arc::clone(&provider)).await {
            Ok((_, new)) if new == fingerprint => {}
            Ok((certified, new)) => {
                identity.0.store(Arc::new(certified));
                fingerprint = new;
                tracing::info!(cert = %files.cert.display(), "admin TLS identity reloaded");
            }
            Err(err) => {
                tracing::error!(error = %err, "admin TLS identity reload failed; keeping the last good one");
            }
        }
    }
}

/// Sets a connection up: the TLS handshake, then a router whose access knows the
/// client ID the handshake verified.
struct Handshake {
    acceptor: TlsAcceptor,
    state: AdminState,
    access: TlsAccess,
}

impl Connector for Handshake {
    type Io = TlsStream<Stream>;
    type Service = Router;

    async fn connect(&self, stream: Stream, peer: &Peer) -> Option<(Self::Io, Router)> {
        let (tls, id) = handshake(&self.acceptor, stream, peer).await?;
        tracing::debug!(%peer, client_id = %id.as_ref().map(ToString::to_string).unwrap_or_default(), "admin API: TLS connection");
        let mut state = self.state.clone();
        state.access = Access::Tls(self.access.for_peer(id));
        Some((tls, crate::admin::router(state)))
    }
}

/// One handshake (under the listener's header timeout) and the verified client ID;
/// `None` (logged) if it fails.
async fn handshake(
    acceptor: &TlsAcceptor,
    stream: Stream,
    addr: &Peer,
) -> Option<(TlsStream<Stream>, Option<SpiffeId>)> {
    let tls = match acceptor.accept(stream).await {
        Ok(tls) => tls,
        Err(err) => {
            let refused = err
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .and_then(client_auth_error);
            match refused {
                Some(reason) => {
                    tracing::warn!(peer = %addr, %reason, "admin API: client certificate refused");
                }
                None => {
                    tracing::debug!(peer = %addr, error = %err, "admin API: TLS handshake failed")
                }
            }
            return None;
        }
    };
    let id = match tls.get_ref().1.peer_certificates() {
        None => None,
        // The verifier accepted this chain, so its leaf is an X509-SVID; if its ID
        // could still not be read, drop the connection rather than treat it as
        // anonymous.
        Some(chain) => match peer_spiffe_id(chain) {
            Ok(id) => Some(id),
            Err(err) => {
                tracing::warn!(peer = %addr, error = %err, "admin API: verified client certificate without a readable SPIFFE ID");
                return None;
            }
        },
    };
    Some((tls, id))
}
