//! The authorities a bundle carries: X.509 CA certificates and JWT/WIT signing keys.
//!
//! Owns the key material model and its JWK member encoding (RFC 7518 §6). It does not
//! own the bundle document rules (see the parent module) or any trust decision.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};
use x509_parser::public_key::PublicKey as ParsedKey;

use crate::trust_domain::SpiffeId;

/// Why a certificate cannot be an X.509 authority of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorityError {
    /// The bytes are not a DER X.509 certificate.
    #[error("not a DER X.509 certificate: {reason}")]
    NotACertificate {
        /// The parser's explanation.
        reason: String,
    },
    /// Trailing bytes after the certificate.
    #[error("{count} unexpected bytes after the DER certificate")]
    TrailingBytes {
        /// How many bytes follow the certificate.
        count: usize,
    },
    /// The certificate is not a CA (basicConstraints `cA` is absent or false), so it
    /// cannot be a signing authority (X509-SVID §3.2, §6.1).
    #[error("not a CA certificate (basicConstraints cA is not true)")]
    NotCa,
    /// The certificate's public key is of a type SPIFFE bundles cannot express.
    #[error("unsupported public key type in certificate: {algorithm}")]
    UnsupportedKey {
        /// The SPKI algorithm OID, or the curve OID for EC keys.
        algorithm: String,
    },
}

/// An X.509 CA certificate trusted to sign X509-SVIDs (X509-SVID §6).
///
/// Equality and order are those of the DER bytes.
#[derive(Clone)]
pub struct X509Authority {
    der: CertificateDer<'static>,
    info: CertInfo,
}

/// What a human or a policy wants to know about an authority certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject distinguished name, RFC 4514 style.
    pub subject: String,
    /// The issuer distinguished name.
    pub issuer: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// Self-signed: issuer equals subject and the certificate's own key verifies its
    /// signature (X509-SVID §6.1 says bundle CAs SHOULD be).
    pub self_signed: bool,
    /// The URI SANs that parse as SPIFFE IDs.
    pub spiffe_ids: Vec<SpiffeId>,
    /// How many URI SANs the certificate carries in total.
    pub uri_san_count: usize,
    /// The public key, as JWK members.
    pub key: PublicKey,
    /// SHA-256 of the DER certificate, lower-case hex (the usual certificate fingerprint).
    pub sha256: String,
}

impl X509Authority {
    /// Accept a DER certificate as an authority: it must parse, be a CA, and carry a key
    /// type that a JWK can express (EC P-256/P-384/P-521, RSA, Ed25519).
    ///
    /// # Errors
    /// An [`AuthorityError`] naming what is wrong with the certificate.
    pub fn from_der(der: impl Into<Vec<u8>>) -> Result<Self, AuthorityError> {
        let der: Vec<u8> = der.into();
        let info = inspect(&der)?;
        Ok(Self {
            der: CertificateDer::from(der),
            info,
        })
    }

    /// The certificate, DER encoded.
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// Facts read from the certificate.
    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    /// Whether `now` is inside the validity period.
    pub fn is_valid_at(&self, now: OffsetDateTime) -> bool {
        self.info.not_before <= now && now <= self.info.not_after
    }
}

impl PartialEq for X509Authority {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}

impl Eq for X509Authority {}

impl PartialOrd for X509Authority {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for X509Authority {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.der.as_ref().cmp(other.der.as_ref())
    }
}

impl fmt::Debug for X509Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X509Authority")
            .field("subject", &self.info.subject)
            .field("not_after", &self.info.not_after)
            .finish_non_exhaustive()
    }
}

/// A public key as the JWK members that carry it (RFC 7518 §6). Byte strings are the
/// decoded base64url values; integers are big-endian without leading zeros.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum PublicKey {
    /// `kty: EC`.
    Ec {
        /// The curve (`crv`).
        curve: EcCurve,
        /// The x coordinate, exactly the curve's field size.
        x: Vec<u8>,
        /// The y coordinate, exactly the curve's field size.
        y: Vec<u8>,
    },
    /// `kty: RSA`.
    Rsa {
        /// The modulus.
        n: Vec<u8>,
        /// The public exponent.
        e: Vec<u8>,
    },
    /// `kty: OKP` with `crv: Ed25519` (RFC 8037).
    Ed25519 {
        /// The 32-byte public key.
        x: Vec<u8>,
    },
}

impl PublicKey {
    /// The JWK `kty` value.
    pub fn kty(&self) -> &'static str {
        match self {
            Self::Ec { .. } => "EC",
            Self::Rsa { .. } => "RSA",
            Self::Ed25519 { .. } => "OKP",
        }
    }

    /// A short human description: `EC P-256`, `RSA 2048`, `OKP Ed25519`.
    pub fn describe(&self) -> String {
        match self {
            Self::Ec { curve, .. } => format!("EC {}", curve.name()),
            Self::Rsa { n, .. } => format!("RSA {}", bit_length(n)),
            Self::Ed25519 { .. } => "OKP Ed25519".to_owned(),
        }
    }

    /// The JWK members that carry the key, in a fixed order, base64url encoded.
    pub fn jwk_members(&self) -> Vec<(&'static str, String)> {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        match self {
            Self::Ec { curve, x, y } => vec![
                ("crv", curve.name().to_owned()),
                ("x", b64(x)),
                ("y", b64(y)),
            ],
            Self::Rsa { n, e } => vec![("n", b64(n)), ("e", b64(e))],
            Self::Ed25519 { x } => vec![("crv", "Ed25519".to_owned()), ("x", b64(x))],
        }
    }
}

/// The NIST curves a JWK `crv` can name for `kty: EC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EcCurve {
    /// `P-256`.
    P256,
    /// `P-384`.
    P384,
    /// `P-521`.
    P521,
}

impl EcCurve {
    /// The JWK `crv` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::P256 => "P-256",
            Self::P384 => "P-384",
            Self::P521 => "P-521",
        }
    }

    /// Parse a JWK `crv` name (case-sensitive, RFC 7518 §6.2.1.1).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "P-256" => Some(Self::P256),
            "P-384" => Some(Self::P384),
            "P-521" => Some(Self::P521),
            _ => None,
        }
    }

    /// The size in bytes of a coordinate.
    pub fn coordinate_len(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
            Self::P521 => 66,
        }
    }

    fn from_oid(oid: &str) -> Option<Self> {
        match oid {
            "1.2.840.10045.3.1.7" => Some(Self::P256),
            "1.3.132.0.34" => Some(Self::P384),
            "1.3.132.0.35" => Some(Self::P521),
            _ => None,
        }
    }
}

/// A key that signs JWT-SVIDs or WIT-SVIDs, selected by its key ID.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JwtAuthority {
    kid: String,
    key: PublicKey,
}

impl JwtAuthority {
    /// A key with its (non-empty) key ID.
    ///
    /// # Errors
    /// [`EmptyKeyId`] if `kid` is empty: such a key could never be selected.
    pub fn new(kid: impl Into<String>, key: PublicKey) -> Result<Self, EmptyKeyId> {
        let kid = kid.into();
        if kid.is_empty() {
            return Err(EmptyKeyId);
        }
        Ok(Self { kid, key })
    }

    /// The key ID (`kid`).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key.
    pub fn key(&self) -> &PublicKey {
        &self.key
    }
}

/// A JWT or WIT authority was given an empty key ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a JWT or WIT authority needs a non-empty key ID (kid)")]
pub struct EmptyKeyId;

/// Strip leading zero bytes from a big-endian unsigned integer.
pub(crate) fn trim_leading_zeros(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes[start..].to_vec()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            // Writing to a String cannot fail.
            let _ = write!(out, "{b:02x}");
            out
        })
}

fn bit_length(n: &[u8]) -> usize {
    let trimmed = trim_leading_zeros(n);
    match trimmed.first() {
        Some(first) => trimmed.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

fn inspect(der: &[u8]) -> Result<CertInfo, AuthorityError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|err| AuthorityError::NotACertificate {
            reason: err.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(AuthorityError::TrailingBytes { count: rest.len() });
    }
    let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    if !is_ca {
        return Err(AuthorityError::NotCa);
    }
    let key = cert_public_key(&cert)?;
    let mut spiffe_ids = Vec::new();
    let mut uri_san_count = 0;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name {
                uri_san_count += 1;
                if let Ok(id) = SpiffeId::parse(uri) {
                    spiffe_ids.push(id);
                }
            }
        }
    }
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        self_signed: cert.subject().as_raw() == cert.issuer().as_raw()
            && verifies_own_signature(&cert, &key),
        spiffe_ids,
        uri_san_count,
        key,
        sha256: hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref()),
    })
}

/// Whether the certificate's own key verifies its signature.
///
/// Done with aws-lc-rs directly because x509-parser's check does not cover P-521 or
/// ecdsa-with-SHA512. An algorithm outside the table (e.g. RSASSA-PSS) cannot be
/// checked here; a self-issued certificate is then taken as self-signed, since the
/// result only decides a warning, never trust.
fn verifies_own_signature(cert: &X509Certificate<'_>, key: &PublicKey) -> bool {
    use aws_lc_rs::signature::{self, VerificationAlgorithm};

    let oid = cert.signature_algorithm.algorithm.to_id_string();
    let algorithm: &'static dyn VerificationAlgorithm = match (oid.as_str(), key) {
        (
            "1.2.840.10045.4.3.2",
            PublicKey::Ec {
                curve: EcCurve::P256,
                ..
            },
        ) => &signature::ECDSA_P256_SHA256_ASN1,
        (
            "1.2.840.10045.4.3.3",
            PublicKey::Ec {
                curve: EcCurve::P256,
                ..
            },
        ) => &signature::ECDSA_P256_SHA384_ASN1,
        (
            "1.2.840.10045.4.3.2",
            PublicKey::Ec {
                curve: EcCurve::P384,
                ..
            },
        ) => &signature::ECDSA_P384_SHA256_ASN1,
        (
            "1.2.840.10045.4.3.3",
            PublicKey::Ec {
                curve: EcCurve::P384,
                ..
            },
        ) => &signature::ECDSA_P384_SHA384_ASN1,
        (
            "1.2.840.10045.4.3.2",
            PublicKey::Ec {
                curve: EcCurve::P521,
                ..
            },
        ) => &signature::ECDSA_P521_SHA256_ASN1,
        (
            "1.2.840.10045.4.3.3",
            PublicKey::Ec {
                curve: EcCurve::P521,
                ..
            },
        ) => &signature::ECDSA_P521_SHA384_ASN1,
        (
            "1.2.840.10045.4.3.4",
            PublicKey::Ec {
                curve: EcCurve::P521,
                ..
            },
        ) => &signature::ECDSA_P521_SHA512_ASN1,
        ("1.2.840.113549.1.1.11", PublicKey::Rsa { .. }) => &signature::RSA_PKCS1_2048_8192_SHA256,
        ("1.2.840.113549.1.1.12", PublicKey::Rsa { .. }) => &signature::RSA_PKCS1_2048_8192_SHA384,
        ("1.2.840.113549.1.1.13", PublicKey::Rsa { .. }) => &signature::RSA_PKCS1_2048_8192_SHA512,
        ("1.3.101.112", PublicKey::Ed25519 { .. }) => &signature::ED25519,
        _ => return true,
    };
    // EC: the uncompressed point; RSA: the DER RSAPublicKey; Ed25519: the raw key —
    // in each case the content of the SPKI's BIT STRING.
    let public_key = cert.public_key().subject_public_key.data.as_ref();
    signature::UnparsedPublicKey::new(algorithm, public_key)
        .verify(
            cert.tbs_certificate.as_ref(),
            cert.signature_value.data.as_ref(),
        )
        .is_ok()
}

/// Read a certificate's subject public key as JWK members.
pub(crate) fn cert_public_key(cert: &X509Certificate<'_>) -> Result<PublicKey, AuthorityError> {
    let spki = cert.public_key();
    let algorithm = spki.algorithm.algorithm.to_id_string();
    match algorithm.as_str() {
        "1.2.840.113549.1.1.1" => match spki.parsed() {
            Ok(ParsedKey::RSA(rsa)) => Ok(PublicKey::Rsa {
                n: trim_leading_zeros(rsa.modulus),
                e: trim_leading_zeros(rsa.exponent),
            }),
            _ => Err(AuthorityError::UnsupportedKey { algorithm }),
        },
        "1.2.840.10045.2.1" => {
            let curve_oid = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|params| params.as_oid().ok())
                .map(|oid| oid.to_id_string())
                .unwrap_or_default();
            let Some(curve) = EcCurve::from_oid(&curve_oid) else {
                return Err(AuthorityError::UnsupportedKey {
                    algorithm: format!("EC curve {curve_oid}"),
                });
            };
            let point = spki.subject_public_key.data.as_ref();
            let len = curve.coordinate_len();
            // Only the uncompressed form (0x04 || x || y) maps onto JWK members.
            match point.split_first() {
                Some((0x04, coords)) if coords.len() == 2 * len => Ok(PublicKey::Ec {
                    curve,
                    x: coords[..len].to_vec(),
                    y: coords[len..].to_vec(),
                }),
                _ => Err(AuthorityError::UnsupportedKey {
                    algorithm: format!("EC {} point not in uncompressed form", curve.name()),
                }),
            }
        }
        "1.3.101.112" => {
            let x = spki.subject_public_key.data.to_vec();
            if x.len() == 32 {
                Ok(PublicKey::Ed25519 { x })
            } else {
                Err(AuthorityError::UnsupportedKey {
                    algorithm: "Ed25519 key of the wrong length".to_owned(),
                })
            }
        }
        _ => Err(AuthorityError::UnsupportedKey { algorithm }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_length_ignores_leading_zeros() {
        assert_eq!(bit_length(&[0, 0x80, 0]), 16);
        assert_eq!(bit_length(&[0x01]), 1);
        assert_eq!(bit_length(&[]), 0);
    }

    #[test]
    fn empty_kid_is_refused() {
        let key = PublicKey::Ed25519 { x: vec![0; 32] };
        assert_eq!(JwtAuthority::new("", key), Err(EmptyKeyId));
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(matches!(
            X509Authority::from_der(vec![1, 2, 3]),
            Err(AuthorityError::NotACertificate { .. })
        ));
    }
}
