//! Unix socket files: bind one safely, and say where a listener listens.
//!
//! Owns the steps every unix listener takes (the admin API's and the SDS server's):
//! make the parent directory if missing, remove a stale socket file a crashed
//! process left (but never a live socket, nor a file that is not a socket), bind,
//! set the socket's mode before the first accept, and read its owner. It does not own
//! what is served on the socket or who may connect ([`super::Listener::Unix`] checks
//! the peer user).

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};

/// Where a bound listener listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundAddr {
    /// A unix socket path.
    Unix(PathBuf),
    /// A TCP address (the real port when 0 was asked for).
    Tcp(SocketAddr),
}

/// Why a unix socket could not be bound. `role` names the listener (`admin API`,
/// `SDS server`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SocketError {
    /// Something that is not a socket sits at the socket path; it is not removed.
    #[error("{role} socket {path} exists and is not a unix socket; refusing to replace it")]
    NotASocket {
        /// The listener.
        role: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// Another process accepts connections on the socket (another gateway?).
    #[error("{role} socket {path} is in use by a running process")]
    InUse {
        /// The listener.
        role: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// A filesystem step (directory, stale socket, permissions) failed.
    #[error("{role} socket {path}: cannot {step}: {source}")]
    Filesystem {
        /// The listener.
        role: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// What was being done.
        step: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The path could not be bound.
    #[error("cannot bind the {role} to unix:{path}: {source}")]
    Bind {
        /// The listener.
        role: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// How to make a socket file.
#[derive(Debug, Clone, Copy)]
pub struct SocketFile {
    /// The listener, as errors name it.
    pub role: &'static str,
    /// Permission bits of the socket, set before the first accept.
    pub mode: u32,
    /// Permission bits of a parent directory made here (left as the umask gives when
    /// `None`, for sockets other users' processes must reach).
    pub parent_mode: Option<u32>,
}

/// A bound socket file and the user that owns it.
#[derive(Debug)]
pub struct BoundSocket {
    /// The listener, not yet accepting.
    pub listener: UnixListener,
    /// The socket file's owner (the gateway's user).
    pub owner: u32,
}

/// Bind `path` as `file` says: parent directory, stale socket, bind, mode, owner.
///
/// # Errors
/// A [`SocketError`] naming the step and the path.
pub async fn bind(path: &Path, file: SocketFile) -> Result<BoundSocket, SocketError> {
    let role = file.role;
    let fs_error = |step: &'static str| {
        move |source| SocketError::Filesystem {
            role,
            path: path.to_owned(),
            step,
            source,
        }
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let mut dirs = std::fs::DirBuilder::new();
        dirs.recursive(true);
        if let Some(mode) = file.parent_mode {
            dirs.mode(mode);
        }
        let parent = parent.to_owned();
        tokio::task::spawn_blocking(move || dirs.create(parent))
            .await
            .map_err(io::Error::other)
            .and_then(|made| made)
            .map_err(fs_error("create the parent directory"))?;
    }
    clear_stale(path, role).await?;
    let listener = UnixListener::bind(path).map_err(|source| SocketError::Bind {
        role,
        path: path.to_owned(),
        source,
    })?;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(file.mode))
        .await
        .map_err(fs_error("set the socket mode"))?;
    let owner = tokio::fs::metadata(path)
        .await
        .map_err(fs_error("read the owner"))?
        .uid();
    Ok(BoundSocket { listener, owner })
}

/// Remove a socket file nobody accepts on; refuse anything else at `path`.
///
/// # Errors
/// [`SocketError::NotASocket`], [`SocketError::InUse`], or the filesystem step that
/// failed.
pub async fn clear_stale(path: &Path, role: &'static str) -> Result<(), SocketError> {
    let metadata = match tokio::fs::symlink_metadata(path).await {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(SocketError::Filesystem {
                role,
                path: path.to_owned(),
                step: "inspect the existing file",
                source,
            });
        }
    };
    if !metadata.file_type().is_socket() {
        return Err(SocketError::NotASocket {
            role,
            path: path.to_owned(),
        });
    }
    if UnixStream::connect(path).await.is_ok() {
        return Err(SocketError::InUse {
            role,
            path: path.to_owned(),
        });
    }
    tokio::fs::remove_file(path)
        .await
        .map_err(|source| SocketError::Filesystem {
            role,
            path: path.to_owned(),
            step: "remove the stale socket",
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: SocketFile = SocketFile {
        role: "test",
        mode: 0o600,
        parent_mode: Some(0o700),
    };

    #[tokio::test]
    async fn a_stale_socket_is_replaced_a_live_one_or_a_file_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/s.sock");
        let bound = bind(&path, FILE).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let parent = std::fs::metadata(dir.path().join("sub")).unwrap();
        assert_eq!(parent.permissions().mode() & 0o777, 0o700);
        let again = bind(&path, FILE).await.unwrap_err();
        assert!(matches!(again, SocketError::InUse { .. }), "{again}");
        assert_eq!(
            again.to_string(),
            format!(
                "test socket {} is in use by a running process",
                path.display()
            )
        );
        drop(bound);
        bind(&path, FILE).await.unwrap();
        let plain = dir.path().join("file");
        std::fs::write(&plain, b"x").unwrap();
        let refused = bind(&plain, FILE).await.unwrap_err();
        assert!(
            matches!(refused, SocketError::NotASocket { .. }),
            "{refused}"
        );
        assert_eq!(std::fs::read(&plain).unwrap(), b"x", "left as found");
    }
}
