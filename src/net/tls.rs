//! TLS identities kept in files: read a certificate chain and its key, and tell when
//! they changed.
//!
//! Owns reading a PEM pair (every listener that takes its certificate from files:
//! the bundle endpoints and the admin API) and the interval at which the files are
//! checked. A reload swaps a new configuration in only when the files' fingerprint
//! changed. It does not own building the TLS configuration (each listener's rules)
//! or serving.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How often certificate files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// A certificate or key file cannot be read or holds no PEM item.
#[derive(Debug, thiserror::Error)]
#[error("cannot load {}: {reason}", path.display())]
pub struct LoadError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

/// A certificate chain (leaf first), its private key, and a fingerprint of both files.
#[derive(Debug)]
pub struct PemPair {
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The key.
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 of the two files' bytes: equal fingerprints, same identity.
    pub fingerprint: Vec<u8>,
}

impl PemPair {
    /// Chain, key and fingerprint.
    pub fn into_parts(
        self,
    ) -> (
        Vec<CertificateDer<'static>>,
        PrivateKeyDer<'static>,
        Vec<u8>,
    ) {
        (self.chain, self.key, self.fingerprint)
    }
}

/// Read `cert` (PEM, at least one CERTIFICATE) and `key` (PEM). Blocks.
///
/// # Errors
/// [`LoadError`] naming the file.
pub fn load_pair(cert: &Path, key: &Path) -> Result<PemPair, LoadError> {
    let load_error = |path: &Path, reason: String| LoadError {
        path: path.to_owned(),
        reason,
    };
    let cert_pem = std::fs::read(cert).map_err(|e| load_error(cert, e.to_string()))?;
    let key_pem = std::fs::read(key).map_err(|e| load_error(key, e.to_string()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| load_error(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(load_error(cert, "no CERTIFICATE block".to_owned()));
    }
    let key_der =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| load_error(key, e.to_string()))?;
    let mut both = cert_pem;
    both.extend_from_slice(&key_pem);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &both);
    Ok(PemPair {
        chain,
        key: key_der,
        fingerprint: digest.as_ref().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let err = load_pair(&cert, &key).unwrap_err();
        assert_eq!(err.path, cert);
        std::fs::write(&cert, b"").unwrap();
        std::fs::write(&key, b"").unwrap();
        let err = load_pair(&cert, &key).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot load {}: no CERTIFICATE block", cert.display())
        );
    }
}
