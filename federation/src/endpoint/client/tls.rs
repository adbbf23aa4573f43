//! The rustls client configuration of each profile, and the `https_spiffe` server
//! certificate verifier.
//!
//! Owns how a bundle endpoint's TLS server is authenticated: Web PKI for `https_web`
//! (SPIFFE Federation §5.2.1.4) and X509-SVID for `https_spiffe` (§5.2.2.4). It does
//! not own the X509-SVID checks themselves ([`crate::verify`]), where roots or bundles
//! come from (the caller), or HTTP.
//!
//! One configuration serves one fetch, including every redirect hop, so a redirect
//! target is held to the same checks as the configured URL (§5.2.1.4, §5.2.2.4).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::bundle::Bundle;
use crate::trust_domain::SpiffeId;
use crate::verify::{VerifyError, verify_x509_svid_for};

/// ALPN: HTTP/2 when the server offers it, else HTTP/1.1.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The `https_web` client configuration: the given roots and rustls's standard Web PKI
/// verifier.
///
/// The verifier checks the chain to one of `roots` and the server name per RFC 6125
/// (SPIFFE Federation §5.2.1.4) against **subjectAltName only**: rustls-webpki never
/// falls back to the subject Common Name, as current browsers and TLS stacks do not.
/// A DNS URL host matches a `dNSName` SAN (wildcards per RFC 6125 §6.4.3); an IP URL
/// host matches an `iPAddress` SAN.
pub(super) fn web_config(
    provider: &Arc<CryptoProvider>,
    roots: RootCertStore,
) -> Result<ClientConfig, rustls::Error> {
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn();
    Ok(config)
}

/// The `https_spiffe` client configuration: a [`SpiffeServerVerifier`] for
/// `endpoint_id` under `bundle`.
pub(super) fn spiffe_config(
    provider: &Arc<CryptoProvider>,
    endpoint_id: &SpiffeId,
    bundle: &Bundle,
) -> Result<ClientConfig, rustls::Error> {
    let verifier = Arc::new(SpiffeServerVerifier {
        endpoint_id: endpoint_id.clone(),
        bundle: bundle.clone(),
        provider: provider.clone(),
    });
    finish(provider, verifier)
}

/// Finish a configuration around a custom verifier.
fn finish(
    provider: &Arc<CryptoProvider>,
    verifier: Arc<dyn ServerCertVerifier>,
) -> Result<ClientConfig, rustls::Error> {
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = alpn();
    Ok(config)
}

fn alpn() -> Vec<Vec<u8>> {
    ALPN.iter().map(|proto| proto.to_vec()).collect()
}

/// The `https_spiffe` server certificate verifier (SPIFFE Federation §5.2.2.4).
///
/// **What it replaces.** It takes the place of rustls's Web PKI verifier, and so skips
/// its two checks: the chain is not checked against Web PKI roots, and the server
/// certificate is **not checked against the URL host** (no RFC 6125 name check, no
/// DNS or IP SAN match). Why: an `https_spiffe` endpoint is authenticated by its SPIFFE
/// ID, not by a DNS name (§5.2.2.4, conformance SPF-6).
///
/// **What it checks instead**, through [`verify_x509_svid_for`]: the peer's chain is a
/// valid X509-SVID at rustls's `now`, chaining to an X.509 authority of the bundle of
/// the endpoint ID's trust domain, for exactly the configured endpoint SPIFFE ID. The
/// handshake signature is verified with the crypto provider's algorithms, as rustls
/// does. On failure the [`VerifyError`] travels inside
/// `rustls::Error::InvalidCertificate(CertificateError::Other(..))` so that the fetch
/// error can name it ([`svid_error`]).
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    endpoint_id: SpiffeId,
    bundle: Bundle,
    provider: Arc<CryptoProvider>,
}

impl SpiffeServerVerifier {
    /// A verifier accepting only an X509-SVID for `endpoint_id` that chains to
    /// `bundle` (the bundle of `endpoint_id`'s trust domain), with handshake signatures
    /// checked by `provider`'s algorithms. Use it in any rustls client that must
    /// authenticate a SPIFFE peer by ID rather than by host name.
    pub fn new(endpoint_id: SpiffeId, bundle: Bundle, provider: Arc<CryptoProvider>) -> Self {
        Self {
            endpoint_id,
            bundle,
            provider,
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // `_server_name` is deliberately unused: no hostname check (see type docs).
        let mut chain = Vec::with_capacity(1 + intermediates.len());
        chain.push(end_entity.clone());
        chain.extend(intermediates.iter().cloned());
        verify_x509_svid_for(&chain, &self.bundle, &self.endpoint_id, now)
            .map(|()| ServerCertVerified::assertion())
            .map_err(|err| {
                rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                    err,
                ))))
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The [`VerifyError`] a [`SpiffeServerVerifier`] put into a rustls error, if any.
pub(super) fn svid_error(err: &rustls::Error) -> Option<&VerifyError> {
    match err {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            let inner: &(dyn std::error::Error + Send + Sync + 'static) = inner.as_ref();
            inner.downcast_ref::<VerifyError>()
        }
        _ => None,
    }
}
