//! Authenticating TLS *clients* by their X509-SVID: a rustls client certificate
//! verifier for SPIFFE mTLS.
//!
//! Owns the server side of an mTLS handshake with a SPIFFE peer: take the chain the
//! client presented, read the SPIFFE ID it claims, pick **only the bundle of that ID's
//! trust domain** (through a caller's lookup, so that the bundle is the current one at
//! each handshake, local or federated), verify the chain as an X509-SVID under it
//! ([`crate::verify`]), and ask the caller's authorizer whether that ID may connect.
//! It does not own where bundles come from, which IDs are allowed (both are the
//! caller's closures), the serving certificate, or anything after the handshake:
//! [`peer_spiffe_id`] reads the verified peer's ID for the application.
//!
//! Bundle endpoints never use it: SPIFFE Federation §5.2.1.3 and §5.2.2.3 forbid
//! requiring client authentication there. It is for other services, such as an admin
//! API or a workload-to-workload demo across trust domains.
//!
//! # Rules
//! - **Only the ID's own trust domain's bundle** (SPIFFE Federation §7.3, TDB §3;
//!   conformance DIST-3): a CA of another trust domain cannot vouch for the ID, even if
//!   the lookup knows that other domain.
//! - **X509-SVID validation** is [`verify_x509_svid`]: one URI SAN with a SPIFFE ID
//!   that has a path, a leaf that is not a CA and cannot sign, and RFC 5280 path
//!   validation to one of the bundle's X.509 authorities at rustls's `now` (X509-SVID
//!   §5). Any extended key usage is accepted, as go-spiffe does.
//! - **Authorization** comes after verification: the authorizer sees only IDs whose
//!   SVID verified, and a refused ID fails the handshake.
//! - **No CA hints.** The `CertificateRequest` names no acceptable CAs
//!   ([`ClientCertVerifier::root_hint_subjects`] is empty): which bundle applies is
//!   known only once the client's ID is read. rustls, OpenSSL (curl) and Go clients
//!   send their certificate when the list is empty.
//!
//! # Example
//! ```
//! use std::sync::Arc;
//!
//! use rustls::crypto::aws_lc_rs;
//! use spiffe_federation::{Bundle, SpiffeClientVerifier, SpiffeId, TrustDomain};
//!
//! let provider = Arc::new(aws_lc_rs::default_provider());
//! let bundles = std::collections::BTreeMap::<TrustDomain, Arc<Bundle>>::new();
//! let allowed: SpiffeId = "spiffe://east.example/ops".parse()?;
//! let verifier = SpiffeClientVerifier::new(
//!     move |td: &TrustDomain| bundles.get(td).cloned(),
//!     move |id: &SpiffeId| *id == allowed,
//!     &provider,
//! );
//! let config = rustls::ServerConfig::builder_with_provider(provider)
//!     .with_safe_default_protocol_versions()?
//!     .with_client_cert_verifier(Arc::new(verifier));
//! # drop(config);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError};
use rustls::{Error as TlsError, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::bundle::Bundle;
use crate::trust_domain::{SpiffeId, TrustDomain};
use crate::verify::{VerifyError, check_leaf, verify_x509_svid};

/// Why a client's certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientAuthError {
    /// The lookup has no bundle for the trust domain the client's ID is in, so nothing
    /// can vouch for it.
    #[error("no bundle is known for trust domain {} of the client ID {id}", id.trust_domain())]
    UnknownTrustDomain {
        /// The ID the client's certificate claims.
        id: SpiffeId,
    },
    /// The chain is not a valid X509-SVID under the bundle of its ID's trust domain.
    #[error("the client certificate is not a valid X509-SVID: {0}")]
    Svid(#[from] VerifyError),
    /// A valid X509-SVID, for an ID the authorizer refused.
    #[error("client ID {id} is not authorized")]
    NotAuthorized {
        /// The verified ID.
        id: SpiffeId,
    },
}

/// A rustls [`ClientCertVerifier`] that accepts X509-SVIDs (see the module docs).
///
/// `B` looks up the current bundle of a trust domain (`None`: unknown; an `Arc` so
/// that a snapshot's bundle is shared, not copied, per handshake); `A` decides
/// whether a verified ID may connect. Both run during every handshake, so they should
/// be cheap and must not block (read a snapshot, not a file).
///
/// **What it replaces.** rustls's `WebPkiClientVerifier`, which checks a chain against
/// one fixed root store. That would let any trust domain's CA in the store vouch for
/// any ID (DIST-3), and could not follow bundle rotation. Nothing is skipped: every
/// check of that verifier (path to a trust anchor, validity period, signatures) is done
/// by [`verify_x509_svid`], with any extended key usage accepted (X509-SVID §4.4), and
/// without revocation (SPIFFE has none).
pub struct SpiffeClientVerifier<B, A> {
    bundle_for: B,
    authorize: A,
    algorithms: WebPkiSupportedAlgorithms,
    mandatory: bool,
}

impl<B, A> SpiffeClientVerifier<B, A>
where
    B: Fn(&TrustDomain) -> Option<Arc<Bundle>> + Send + Sync,
    A: Fn(&SpiffeId) -> bool + Send + Sync,
{
    /// A verifier that requires a client certificate, verifies it under
    /// `bundle_for(its trust domain)`, and admits its ID if `authorize(id)` is true.
    /// Handshake signatures are checked with `provider`'s algorithms.
    pub fn new(bundle_for: B, authorize: A, provider: &CryptoProvider) -> Self {
        Self {
            bundle_for,
            authorize,
            algorithms: provider.signature_verification_algorithms,
            mandatory: true,
        }
    }

    /// Let clients without a certificate complete the handshake (the application then
    /// authenticates them another way, e.g. a bearer token). A certificate that is
    /// presented is still verified, and one that fails still fails the handshake.
    #[must_use]
    pub fn allow_unauthenticated(mut self) -> Self {
        self.mandatory = false;
        self
    }

    /// The checks of a handshake, without TLS: `chain[0]` is the client's leaf, the
    /// rest its intermediates. Returns the verified, authorized SPIFFE ID.
    ///
    /// # Errors
    /// [`ClientAuthError::Svid`] when the leaf is not an X509-SVID or its path does not
    /// verify at `now`; [`ClientAuthError::UnknownTrustDomain`] when there is no bundle
    /// for the ID's trust domain; [`ClientAuthError::NotAuthorized`] when the
    /// authorizer refuses the verified ID.
    pub fn verify_chain(
        &self,
        chain: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<SpiffeId, ClientAuthError> {
        let claimed = peer_spiffe_id(chain)?;
        // DIST-3: only the bundle of the trust domain the ID resides in.
        let bundle = (self.bundle_for)(claimed.trust_domain())
            .ok_or(ClientAuthError::UnknownTrustDomain { id: claimed })?;
        let id = verify_x509_svid(chain, &bundle, now)?;
        if (self.authorize)(&id) {
            Ok(id)
        } else {
            Err(ClientAuthError::NotAuthorized { id })
        }
    }
}

impl<B, A> fmt::Debug for SpiffeClientVerifier<B, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeClientVerifier")
            .field("mandatory", &self.mandatory)
            .finish_non_exhaustive()
    }
}

impl<B, A> ClientCertVerifier for SpiffeClientVerifier<B, A>
where
    B: Fn(&TrustDomain) -> Option<Arc<Bundle>> + Send + Sync,
    A: Fn(&SpiffeId) -> bool + Send + Sync,
{
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: the bundle is chosen by the client's ID (module docs).
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        let mut chain = Vec::with_capacity(1 + intermediates.len());
        chain.push(end_entity.clone());
        chain.extend(intermediates.iter().cloned());
        self.verify_chain(&chain, now)
            .map(|_| ClientCertVerified::assertion())
            .map_err(|err| {
                TlsError::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(err))))
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The SPIFFE ID of a peer's X509-SVID chain (`chain[0]` is the leaf), read from its
/// one URI SAN after the leaf checks of X509-SVID §5.2, **without path validation**.
///
/// Use it on a chain a handshake already verified, e.g. rustls's
/// `ServerConnection::peer_certificates()` once a [`SpiffeClientVerifier`] accepted it;
/// on an unverified chain it is only a claim.
///
/// # Errors
/// [`VerifyError::EmptyChain`], or the leaf errors of
/// [`verify_x509_svid`](crate::verify::verify_x509_svid) (malformed leaf, not exactly one
/// URI SAN, not a SPIFFE ID, root ID, CA leaf, signing key usage).
pub fn peer_spiffe_id(chain: &[CertificateDer<'_>]) -> Result<SpiffeId, VerifyError> {
    chain
        .first()
        .ok_or(VerifyError::EmptyChain)
        .and_then(check_leaf)
}

/// The [`ClientAuthError`] a [`SpiffeClientVerifier`] put into a rustls error, if any:
/// to log why a handshake was refused.
pub fn client_auth_error(err: &TlsError) -> Option<&ClientAuthError> {
    match err {
        TlsError::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            let inner: &(dyn std::error::Error + Send + Sync + 'static) = inner.as_ref();
            inner.downcast_ref::<ClientAuthError>()
        }
        _ => None,
    }
}
