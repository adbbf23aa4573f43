//! The admin API listener: a unix socket (the default), TCP with bearer tokens, or
//! TLS on TCP with tokens and/or client X509-SVIDs ([`tls`]).
//!
//! Owns binding and serving. A unix socket is created in a parent directory made
//! (mode 0700) if missing; a stale socket file left by a crashed gateway is removed,
//! but a live one (something accepts on it) or a non-socket file at that path is an
//! error. The socket is set to mode 0600 right after bind and before the first accept,
//! and, because a peer could connect in the instant between the two, every accepted
//! connection's peer user is checked against the socket's owner. TCP is refused
//! without configured tokens, TLS without tokens or client IDs (configuration
//! validation enforces it too; this is the second lock). Connections are served by
//! [`crate::net`] under `[admin.limits]`; shutdown is graceful: no new connection is
//! accepted and in-flight requests finish (the owner bounds the wait with its grace
//! period).
//!
//! It does not own routes or authentication of requests ([`super::auth`]).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use axum::Router;
use tokio::net::{TcpListener, UnixListener};

use super::auth::Access;
use crate::config::AdminListen;
pub use crate::net::BoundAddr;
use crate::net::tls::LoadError;
use crate::net::unix::{self, SocketError};
use crate::net::{self, Limits, Net, Plain, Protocols};

pub mod tls;

/// Why the admin listener could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// TCP without tokens (or, over TLS, without tokens or client IDs) would be an
    /// unauthenticated admin API.
    #[error(
        "refusing an admin TCP listener on {addr} without authentication ([[admin.tokens]], or [admin.tls] with [[admin.clients]])"
    )]
    TcpWithoutTokens {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The `[admin.tls]` certificate or key file cannot be read or holds no PEM item.
    #[error("admin TLS identity: {0}")]
    TlsFiles(#[source] LoadError),
    /// The `[admin.tls]` key cannot be used, or is not the certificate's.
    #[error("admin TLS key {key}: {reason}")]
    TlsKey {
        /// The key file.
        key: PathBuf,
        /// Why.
        reason: String,
    },
    /// The TLS policy cannot be applied with the crypto provider.
    #[error("admin TLS policy: {0}")]
    TlsPolicy(#[source] rustls::Error),
    /// The unix socket could not be made.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// The address could not be bound.
    #[error("cannot bind the admin API to {address}: {source}")]
    Bind {
        /// The address, as configured.
        address: String,
        /// The OS error.
        source: io::Error,
    },
}

/// A bound listener, not yet accepting.
#[derive(Debug)]
pub struct Bound {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Unix(OwnerOnly),
    Tcp(TcpListener),
}

/// Bind `listen`: for a unix socket, make the parent directory, clear a stale socket,
/// bind and set mode 0600; for TCP, check that `access` requires tokens.
///
/// # Errors
/// A [`ListenError`] naming the step and path or address that failed.
pub async fn bind(listen: &AdminListen, access: &Access) -> Result<Bound, ListenError> {
    let inner = match listen {
        AdminListen::Unix(path) => Inner::Unix(bind_unix(path).await?),
        AdminListen::Tcp(addr) => {
            if !matches!(access, Access::Tokens(tokens) if !tokens.is_empty()) {
                return Err(ListenError::TcpWithoutTokens { addr: *addr });
            }
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ListenError::Bind {
                    address: addr.to_string(),
                    source,
                })?;
            Inner::Tcp(listener)
        }
    };
    Ok(Bound { inner })
}

impl Bound {
    /// Where it listens.
    ///
    /// # Errors
    /// The OS error if a TCP listener cannot report its address.
    pub fn local_addr(&self) -> io::Result<BoundAddr> {
        match &self.inner {
            Inner::Unix(listener) => Ok(BoundAddr::Unix(listener.path.clone())),
            Inner::Tcp(listener) => listener.local_addr().map(BoundAddr::Tcp),
        }
    }

    /// Serve `router` under `limits` until shutdown: connections of `net`, closed
    /// gracefully at shutdown (in-flight requests finish within the owner's grace
    /// period). Resolves when accepting has stopped; a unix socket file is removed
    /// then. On a unix socket only the socket owner's connections are admitted.
    pub async fn serve(self, router: Router, limits: Limits, net: Net) {
        let connector = Plain(router);
        match self.inner {
            Inner::Tcp(listener) => {
                let listener = net::Listener::Tcp(listener);
                net.serve(NAME, listener, limits, Protocols::Auto, connector)
                    .await;
            }
            Inner::Unix(OwnerOnly {
                listener,
                owner,
                path,
            }) => {
                let listener = net::Listener::Unix {
                    listener,
                    owner: Some(owner),
                };
                net.serve(NAME, listener, limits, Protocols::Auto, connector)
                    .await;
                if let Err(err) = tokio::fs::remove_file(&path).await
                    && err.kind() != io::ErrorKind::NotFound
                {
                    tracing::warn!(path = %path.display(), %err, "cannot remove the admin socket");
                }
            }
        }
    }
}

/// The listener's name in metrics and logs.
pub(crate) const NAME: &str = "admin";

async fn bind_unix(path: &Path) -> Result<OwnerOnly, ListenError> {
    let file = unix::SocketFile {
        role: "admin API",
        mode: 0o600,
        parent_mode: Some(0o700),
    };
    let unix::BoundSocket { listener, owner } = unix::bind(path, file).await?;
    Ok(OwnerOnly {
        listener,
        owner,
        path: path.to_owned(),
    })
}

/// A unix listener whose connections are admitted only from the socket's owner.
#[derive(Debug)]
struct OwnerOnly {
    listener: UnixListener,
    owner: u32,
    path: PathBuf,
}
