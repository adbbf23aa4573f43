//! Envoy Secret Discovery Service (SDS v3) sink: serves every trusted domain's X.509
//! authorities to Envoy as validation-context secrets, the way SPIRE's agent does, so
//! Envoy configurations written for SPIRE work unchanged.
//!
//! Owns the listener (a unix socket by default, or TCP), following the trust store's
//! change feed (one [`resources::Catalog`] per revision, shared by every stream), and
//! the server's lifetime under the shutdown tree. What each resource holds is
//! [`resources`]; the xDS conversation rules are [`protocol`]; the gRPC glue is
//! `service`. It never reads storage: only snapshots.
//!
//! The socket serves public trust material only (CA certificates, never keys), so its
//! mode (default 0660) lets an Envoy in the gateway's group connect; a stale socket
//! left by a crash is replaced, a live one or a non-socket file is an error.

use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryServiceServer;
use spiffe_federation::TrustDomain;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};

use crate::admin::listen::{BoundAddr, ListenError, clear_stale_socket};
use crate::shutdown::Shutdown;
use crate::telemetry::Metrics;
use crate::trust_store::TrustStore;

mod config;
pub mod protocol;
pub mod resources;
mod service;

pub use config::{
    DEFAULT_ALL_BUNDLES_NAME, DEFAULT_BUNDLE_NAME, DEFAULT_SOCKET_MODE, SdsConfig, SdsListen,
    SocketMode,
};
pub use service::{NACKS_METRIC, PUSHES_METRIC, STREAMS_METRIC};

use resources::{Catalog, Naming};
use service::SdsService;

/// Why the SDS server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SdsError {
    /// Something that is not a socket sits at the socket path; it is not removed.
    #[error("SDS socket {path} exists and is not a unix socket; refusing to replace it")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// Another process accepts connections on the socket (another gateway?).
    #[error("SDS socket {path} is in use by a running process")]
    InUse {
        /// The path.
        path: PathBuf,
    },
    /// A filesystem step (directory, stale socket, permissions) failed.
    #[error("SDS socket {path}: cannot {step}: {source}")]
    Filesystem {
        /// The path concerned.
        path: PathBuf,
        /// What was being done.
        step: &'static str,
        /// The OS error.
        source: io::Error,
    },
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
    shutdown: &Shutdown,
) -> Result<BoundAddr, SdsError> {
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
    let catalog = follow(trust_store.clone(), naming, shutdown);
    let service = SdsService::new(catalog, metrics.clone(), shutdown.clone());
    let cancel = shutdown.token();
    let router = tonic::transport::Server::builder()
        .add_service(SecretDiscoveryServiceServer::new(service));
    let socket = match &listen {
        SdsListen::Unix(path) => Some(path.clone()),
        SdsListen::Tcp(_) => None,
    };
    shutdown.spawn(async move {
        let stop = cancel.cancelled_owned();
        let served = match bound {
            Bound::Unix(listener) => {
                router
                    .serve_with_incoming_shutdown(UnixListenerStream::new(listener), stop)
                    .await
            }
            Bound::Tcp(listener) => {
                router
                    .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop)
                    .await
            }
        };
        if let Err(err) = served {
            tracing::error!(error = %err, "SDS server stopped");
        }
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

enum Bound {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// Keep a catalog equal to the trust store's snapshot until shutdown; streams wait
/// on the returned receiver. When the follower stops, every stream ends.
pub(crate) fn follow(
    trust_store: TrustStore,
    naming: Naming,
    shutdown: &Shutdown,
) -> watch::Receiver<Arc<Catalog>> {
    // Subscribe before reading the snapshot, so that a change in between is pending
    // on the feed instead of lost.
    let mut changes = trust_store.subscribe();
    let first = Catalog::from_snapshot(&trust_store.snapshot(), &naming);
    let (publish, catalog) = watch::channel(Arc::new(first));
    let cancel = shutdown.token();
    shutdown.spawn(async move {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                changed = changes.changed() => if changed.is_err() { return },
            }
            publish.send_replace(Arc::new(Catalog::from_snapshot(
                &trust_store.snapshot(),
                &naming,
            )));
        }
    });
    catalog
}

async fn bind_unix(path: &Path, mode: SocketMode) -> Result<UnixListener, SdsError> {
    let fs_error = |step: &'static str| {
        move |source| SdsError::Filesystem {
            path: path.to_owned(),
            step,
            source,
        }
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(fs_error("create the parent directory"))?;
    }
    clear_stale_socket(path).await.map_err(|err| match err {
        ListenError::NotASocket { path } => SdsError::NotASocket { path },
        ListenError::InUse { path } => SdsError::InUse { path },
        ListenError::Filesystem { path, step, source } => {
            SdsError::Filesystem { path, step, source }
        }
        other => SdsError::Filesystem {
            path: path.to_owned(),
            step: "clear a stale socket",
            source: io::Error::other(other.to_string()),
        },
    })?;
    let listener = UnixListener::bind(path).map_err(|source| SdsError::Bind {
        address: format!("unix:{}", path.display()),
        source,
    })?;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(mode.bits()))
        .await
        .map_err(fs_error("set the socket mode"))?;
    Ok(listener)
}
