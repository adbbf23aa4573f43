//! The TLS side of a bundle endpoint server: one policy for both profiles, and the
//! startup checks of the serving certificate for each.
//!
//! Owns the rustls [`ServerConfig`] a bundle endpoint serves with. It does not own
//! loading certificates and keys (the caller passes DER), rotation (build again and
//! publish the new config) or the clock (`now` is an input).
//!
//! # TLS policy (FED-3: SPIFFE Federation §5, Mozilla "intermediate")
//! - Protocol versions TLS 1.2 and TLS 1.3 only.
//! - TLS 1.3: `TLS_AES_128_GCM_SHA256`, `TLS_AES_256_GCM_SHA384`,
//!   `TLS_CHACHA20_POLY1305_SHA256`.
//! - TLS 1.2: ECDHE key exchange with ECDSA or RSA certificates, and only the AEAD
//!   ciphers AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305. The intermediate list also
//!   names `DHE-RSA-*` suites; rustls implements no finite-field DHE, so they are absent.
//! - Key exchange groups: X25519, P-256, P-384 (the intermediate list) and the hybrid
//!   X25519MLKEM768, which only adds post-quantum protection on top of X25519.
//! - The suite list is an allow-list applied to the aws-lc-rs provider, so a future
//!   provider default cannot widen it.
//! - Client certificates are never requested (SRV-1, SPIFFE Federation §5.2.1.3 and
//!   §5.2.2.3: servers MUST NOT require client authentication).
//! - ALPN offers `h2` and `http/1.1`.

use std::sync::Arc;

use rustls::crypto::{CryptoProvider, SupportedKxGroup, aws_lc_rs};
use rustls::server::ParsedCertificate;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{CipherSuite, InconsistentKeys, NamedGroup, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use x509_parser::prelude::{FromDer as _, X509Certificate};

use super::{KeyPurpose, ServerError, ServerTls, ServerWarning};
use crate::bundle::Bundle;
use crate::trust_domain::SpiffeId;
use crate::verify::verify_x509_svid_for;

/// The cipher suites of the Mozilla "intermediate" configuration that rustls implements.
const MOZILLA_INTERMEDIATE_SUITES: [CipherSuite; 9] = [
    CipherSuite::TLS13_AES_128_GCM_SHA256,
    CipherSuite::TLS13_AES_256_GCM_SHA384,
    CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// Key exchange groups allowed (see the module docs).
const KX_GROUPS: [NamedGroup; 4] = [
    NamedGroup::X25519MLKEM768,
    NamedGroup::X25519,
    NamedGroup::secp256r1,
    NamedGroup::secp384r1,
];

/// The TLS configuration of an `https_web` bundle endpoint (SPIFFE Federation §5.2.1.3).
///
/// `chain` is the serving certificate chain, leaf first; `key` its private key;
/// `public_names` the DNS names and IP addresses clients use in the endpoint URL;
/// `public_roots` the roots the operator considers public (for example the system
/// store, as an `https_web` client uses), checked at `now`.
///
/// Checks, in order: the chain is not empty and the leaf parses; SRV-6: every public
/// name is covered by the leaf's subjectAltName, using the matcher rustls clients use
/// (RFC 6125: a `*` wildcard is a whole left-most label and covers exactly one label;
/// IP addresses match IP SANs; the Common Name is ignored); the key is the leaf's.
/// SRV-7 ("SHOULD be issued by a public certificate authority") cannot be known
/// offline; instead, a chain that does not verify against `public_roots` at `now` is
/// reported as [`ServerWarning::NotPubliclyTrusted`], not refused: a private CA is
/// allowed when the clients are configured with it.
///
/// # Errors
/// [`ServerError::NoCertificate`], [`ServerError::MalformedCertificate`],
/// [`ServerError::NoPublicNames`], [`ServerError::NameNotInCertificate`] (SRV-6),
/// [`ServerError::UnsupportedKey`], [`ServerError::KeyMismatch`], and
/// [`ServerError::TlsPolicy`] if the provider cannot apply the policy.
pub fn https_web_server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    public_names: &[ServerName<'static>],
    public_roots: &RootCertStore,
    now: UnixTime,
) -> Result<ServerTls, ServerError> {
    let provider = mozilla_intermediate();
    let (leaf, intermediates) = chain.split_first().ok_or(ServerError::NoCertificate)?;
    let parsed = ParsedCertificate::try_from(leaf).map_err(malformed)?;

    if public_names.is_empty() {
        return Err(ServerError::NoPublicNames);
    }
    for name in public_names {
        rustls::client::verify_server_name(&parsed, name).map_err(|_| {
            ServerError::NameNotInCertificate {
                name: name.to_owned(),
            }
        })?;
    }

    let mut warnings = Vec::new();
    if let Err(err) = rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        public_roots,
        intermediates,
        now,
        provider.signature_verification_algorithms.all,
    ) {
        warnings.push(ServerWarning::NotPubliclyTrusted {
            reason: err.to_string(),
        });
    }

    let config = server_config(provider, chain, key)?;
    Ok(ServerTls { config, warnings })
}

/// The TLS configuration of an `https_spiffe` bundle endpoint (SPIFFE Federation
/// §5.2.2.3).
///
/// `chain` is the serving X509-SVID, leaf first, with any intermediates; `key` its
/// private key; `local_bundle` the bundle of the endpoint's trust domain (the one this
/// server publishes, which clients verify it with); `endpoint_id` the SPIFFE ID clients
/// are configured to expect.
///
/// Checks, in order:
/// 1. SRV-8: the chain is a valid X509-SVID for exactly `endpoint_id` that verifies
///    to `local_bundle` at `now` ([`verify_x509_svid_for`], the check clients make,
///    SPIFFE Federation §5.2.2.4).
/// 2. X509-SVID §4.3 on our own leaf: keyUsage present, critical, with
///    `digitalSignature`.
/// 3. X509-SVID §4.4: if extendedKeyUsage is present it has `serverAuth` and
///    `clientAuth`; if absent, [`ServerWarning::NoExtendedKeyUsage`].
/// 4. The key is the leaf's.
///
/// We hold our own SVID to the MUSTs a verifier is told not to enforce on peers.
///
/// # Errors
/// [`ServerError::NoCertificate`], [`ServerError::InvalidSvid`] (SRV-8),
/// [`ServerError::MalformedCertificate`], [`ServerError::KeyUsageMissing`],
/// [`ServerError::KeyUsageNotCritical`], [`ServerError::NoDigitalSignature`],
/// [`ServerError::ExtendedKeyUsageLacks`], [`ServerError::UnsupportedKey`],
/// [`ServerError::KeyMismatch`], [`ServerError::TlsPolicy`].
pub fn https_spiffe_server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    local_bundle: &Bundle,
    endpoint_id: &SpiffeId,
    now: UnixTime,
) -> Result<ServerTls, ServerError> {
    let leaf = chain.first().ok_or(ServerError::NoCertificate)?;
    verify_x509_svid_for(&chain, local_bundle, endpoint_id, now)
        .map_err(|source| ServerError::InvalidSvid { source })?;
    let warnings = check_own_svid(leaf, endpoint_id)?;
    let config = server_config(mozilla_intermediate(), chain, key)?;
    Ok(ServerTls { config, warnings })
}

/// The aws-lc-rs provider restricted to the policy in the module docs.
fn mozilla_intermediate() -> CryptoProvider {
    let mut provider = aws_lc_rs::default_provider();
    provider
        .cipher_suites
        .retain(|suite| MOZILLA_INTERMEDIATE_SUITES.contains(&suite.suite()));
    provider
        .kx_groups
        .retain(|group: &&dyn SupportedKxGroup| KX_GROUPS.contains(&group.name()));
    provider
}

/// The server configuration shared by both profiles, once the certificate checks pass.
fn server_config(
    provider: CryptoProvider,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, ServerError> {
    let signing_key =
        provider
            .key_provider
            .load_private_key(key)
            .map_err(|err| ServerError::UnsupportedKey {
                reason: err.to_string(),
            })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // `Unknown`: the provider cannot derive the public key to compare. aws-lc-rs
        // always can; rustls's own `with_single_cert` accepts this case too.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            return Err(ServerError::KeyMismatch);
        }
        Err(err) => return Err(malformed(err)),
    }

    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|source| ServerError::TlsPolicy { source })?
        // SRV-1: no CertificateRequest is ever sent.
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// X509-SVID §4.3 and §4.4 on our own serving SVID (SVID-6); returns the warnings.
fn check_own_svid(
    leaf: &CertificateDer<'_>,
    id: &SpiffeId,
) -> Result<Vec<ServerWarning>, ServerError> {
    let (_, cert) = X509Certificate::from_der(leaf).map_err(malformed)?;
    let key_usage = cert
        .key_usage()
        .map_err(malformed)?
        .ok_or_else(|| ServerError::KeyUsageMissing { id: id.clone() })?;
    if !key_usage.critical {
        return Err(ServerError::KeyUsageNotCritical { id: id.clone() });
    }
    if !key_usage.value.digital_signature() {
        return Err(ServerError::NoDigitalSignature { id: id.clone() });
    }
    let Some(eku) = cert.extended_key_usage().map_err(malformed)? else {
        return Ok(vec![ServerWarning::NoExtendedKeyUsage { id: id.clone() }]);
    };
    let missing = if !eku.value.server_auth {
        Some(KeyPurpose::ServerAuth)
    } else if !eku.value.client_auth {
        Some(KeyPurpose::ClientAuth)
    } else {
        None
    };
    match missing {
        Some(missing) => Err(ServerError::ExtendedKeyUsageLacks {
            id: id.clone(),
            missing,
        }),
        None => Ok(Vec::new()),
    }
}

fn malformed(err: impl std::fmt::Display) -> ServerError {
    ServerError::MalformedCertificate {
        reason: err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_keeps_only_allowed_suites_and_groups() {
        let provider = mozilla_intermediate();
        assert!(!provider.cipher_suites.is_empty());
        for suite in &provider.cipher_suites {
            assert!(MOZILLA_INTERMEDIATE_SUITES.contains(&suite.suite()));
        }
        for group in &provider.kx_groups {
            assert!(KX_GROUPS.contains(&group.name()));
        }
        assert!(
            provider
                .kx_groups
                .iter()
                .any(|g| g.name() == NamedGroup::X25519)
        );
    }
}
