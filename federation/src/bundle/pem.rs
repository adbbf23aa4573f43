//! PEM import and export of X.509 authorities (RFC 7468 `CERTIFICATE` blocks).
//!
//! Owns only the text encoding; whether a certificate may be an authority is decided
//! by [`X509Authority::from_der`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::pem::{PemObject as _, SectionKind};

use super::authority::{AuthorityError, X509Authority};

/// Why a PEM document could not be turned into X.509 authorities.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PemError {
    /// The input exceeds the size limit.
    #[error("PEM input is {actual} bytes; the limit is {limit}")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
        /// The input's size.
        actual: usize,
    },
    /// A block is malformed (missing END line, bad base64, …).
    #[error("malformed PEM: {reason}")]
    Malformed {
        /// The decoder's explanation.
        reason: String,
    },
    /// No `CERTIFICATE` block was found.
    #[error("no CERTIFICATE block found in the PEM input")]
    NoCertificates,
    /// A certificate cannot be an authority.
    #[error("certificate #{index} (counting from 1): {source}")]
    Certificate {
        /// 1-based position among the CERTIFICATE blocks.
        index: usize,
        /// Why it was refused.
        source: AuthorityError,
    },
}

/// Read every `CERTIFICATE` block; other block types (keys, CRLs) are skipped.
pub(crate) fn read_certificates(pem: &[u8], limit: usize) -> Result<Vec<X509Authority>, PemError> {
    if pem.len() > limit {
        return Err(PemError::TooLarge {
            limit,
            actual: pem.len(),
        });
    }
    let mut authorities = Vec::new();
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
        let (kind, der) = section.map_err(|err| PemError::Malformed {
            reason: err.to_string(),
        })?;
        if kind != SectionKind::Certificate {
            continue;
        }
        let index = authorities.len() + 1;
        let authority = X509Authority::from_der(der)
            .map_err(|source| PemError::Certificate { index, source })?;
        authorities.push(authority);
    }
    if authorities.is_empty() {
        return Err(PemError::NoCertificates);
    }
    Ok(authorities)
}

/// Write certificates as PEM blocks with 64-character lines.
pub(crate) fn write_certificates(authorities: &[X509Authority]) -> String {
    let mut out = String::new();
    for authority in authorities {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let encoded = STANDARD.encode(authority.der());
        for line in encoded.as_bytes().chunks(64) {
            // base64 output is ASCII, so every chunk is valid UTF-8.
            out.push_str(std::str::from_utf8(line).unwrap_or_default());
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}
