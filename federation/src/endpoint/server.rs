//! Serving a local trust domain's bundle at a bundle endpoint (SPIFFE Federation §5.2.1.3,
//! §5.2.2.3).
//!
//! Owns what a bundle endpoint server must get right whatever runs it:
//! - the TLS server configuration for each profile ([`https_web_server_config`],
//!   [`https_spiffe_server_config`]): the Mozilla "intermediate" TLS policy (FED-3), no
//!   client authentication (SRV-1), and startup checks of the serving certificate
//!   (SRV-6, SRV-7 for `https_web`; SRV-8 and the X509-SVID §4.3/§4.4 self-check for
//!   `https_spiffe`);
//! - the HTTP response to a request for a bundle ([`respond`]), independent of any
//!   framework: GET/HEAD only, `Content-Type: application/json`, UTF-8, `ETag`,
//!   `Cache-Control`, conditional requests, no authentication;
//! - a pre-serialised bundle ready to serve ([`ServedBundle`]) and an exact path table
//!   ([`Routes`]).
//!
//! It does not own listening, accepting or HTTP framing (the gateway runs hyper or axum
//! and calls [`respond`]), which bundle is the latest (the gateway's trust store hands a
//! new [`ServedBundle`] to the serving path on every change, SRV-2), where certificates
//! come from (files, ACME, SPIRE), their rotation (build a new config and publish it),
//! logging of [`ServerWarning`]s, or redirects (SRV-9, SRV-10: not offered).
//!
//! # Example
//! ```
//! use spiffe_federation::Bundle;
//! use spiffe_federation::endpoint::server::{ServedBundle, respond};
//!
//! let bundle = Bundle::new("example.org".parse()?);
//! let served = ServedBundle::new(&bundle);
//! let (parts, ()) = http::Request::get("/").body(())?.into_parts();
//! let response = respond(&parts, Some(&served));
//! assert_eq!(response.status(), http::StatusCode::OK);
//! assert_eq!(response.headers()[http::header::CONTENT_TYPE], "application/json");
//! assert_eq!(response.body(), &served.json());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod respond;
mod tls;

use std::fmt;
use std::sync::Arc;

use rustls_pki_types::ServerName;

pub use self::respond::{Routes, ServedBundle, respond};
pub use self::tls::{https_spiffe_server_config, https_web_server_config};
use crate::trust_domain::SpiffeId;
use crate::verify::VerifyError;

/// A TLS server configuration ready to serve, and what the startup checks found worth
/// telling the operator without refusing to start.
#[derive(Debug, Clone)]
#[must_use = "the warnings should be logged"]
pub struct ServerTls {
    /// The rustls configuration to accept connections with.
    pub config: Arc<rustls::ServerConfig>,
    /// Facts the operator should see (log them once at startup).
    pub warnings: Vec<ServerWarning>,
}

/// Why a bundle endpoint server cannot be configured as asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The certificate chain is empty.
    #[error("the serving certificate chain is empty")]
    NoCertificate,
    /// The leaf certificate cannot be read as DER X.509 (or one of the extensions the
    /// checks read is malformed).
    #[error("the serving certificate is malformed: {reason}")]
    MalformedCertificate {
        /// The parser's explanation.
        reason: String,
    },
    /// The crypto provider cannot use the private key (unknown algorithm or encoding).
    #[error("the private key cannot be used: {reason}")]
    UnsupportedKey {
        /// The provider's explanation.
        reason: String,
    },
    /// The private key is not the key of the leaf certificate.
    #[error("the private key does not match the serving certificate's public key")]
    KeyMismatch,
    /// An `https_web` endpoint was configured without any public DNS name or IP
    /// address, so SRV-6 (SPIFFE Federation §5.2.1.3) cannot be checked.
    #[error("no public DNS name or IP address is configured for the https_web endpoint")]
    NoPublicNames,
    /// The `https_web` certificate does not cover a configured public name in its
    /// subjectAltName (SPIFFE Federation §5.2.1.3; wildcards per RFC 6125 §6.4.3 cover
    /// one label; the Common Name is not used, as by rustls and browsers).
    #[error("the serving certificate's subjectAltName does not cover {} (listed in public_names)", .name.to_str())]
    NameNotInCertificate {
        /// The configured name that is not covered.
        name: ServerName<'static>,
    },
    /// A route path is not an absolute path (it must start with `/` and have no query,
    /// fragment, whitespace or control character).
    #[error("route path {path:?} is not an absolute path without query or fragment")]
    InvalidRoutePath {
        /// The path given.
        path: String,
    },
    /// The `https_spiffe` serving certificate is not a valid X509-SVID for the
    /// endpoint's SPIFFE ID under the local bundle (SRV-8, SPIFFE Federation §5.2.2.3):
    /// clients would refuse it (§5.2.2.4).
    #[error("the serving certificate is not a valid X509-SVID for the endpoint: {source}")]
    InvalidSvid {
        /// The first X509-SVID check that fails.
        #[source]
        source: VerifyError,
    },
    /// The serving SVID has no keyUsage extension (X509-SVID §4.3: MUST be set).
    #[error("the serving SVID {id} has no keyUsage extension (X509-SVID §4.3)")]
    KeyUsageMissing {
        /// The SVID's SPIFFE ID.
        id: SpiffeId,
    },
    /// The serving SVID's keyUsage is not marked critical (X509-SVID §4.3).
    #[error("the serving SVID {id} has a keyUsage extension not marked critical (X509-SVID §4.3)")]
    KeyUsageNotCritical {
        /// The SVID's SPIFFE ID.
        id: SpiffeId,
    },
    /// The serving SVID's keyUsage lacks `digitalSignature` (X509-SVID §4.3).
    #[error("the serving SVID {id} lacks keyUsage digitalSignature (X509-SVID §4.3)")]
    NoDigitalSignature {
        /// The SVID's SPIFFE ID.
        id: SpiffeId,
    },
    /// The serving SVID has an extendedKeyUsage extension without a purpose X509-SVID
    /// §4.4 requires when the extension is present.
    #[error(
        "the serving SVID {id} has extendedKeyUsage without {missing} (X509-SVID §4.4 requires serverAuth and clientAuth)"
    )]
    ExtendedKeyUsageLacks {
        /// The SVID's SPIFFE ID.
        id: SpiffeId,
        /// The first required purpose that is missing.
        missing: KeyPurpose,
    },
    /// rustls refused the TLS policy (protocol versions with no usable cipher suite in
    /// the crypto provider); a build of rustls without TLS 1.2 support would do this.
    #[error("the TLS policy cannot be built with this crypto provider: {source}")]
    TlsPolicy {
        /// rustls's error.
        #[source]
        source: rustls::Error,
    },
}

/// A fact about the serving configuration the operator should see, which is not a
/// reason to refuse to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServerWarning {
    /// The `https_web` certificate does not chain to any of the roots given as public
    /// (SRV-7: "SHOULD be issued by a public certificate authority", SPIFFE Federation
    /// §5.2.1.3). Clients relying on public roots will refuse it; clients configured
    /// with the private root will not.
    #[error("the serving certificate does not verify against the public roots: {reason}")]
    NotPubliclyTrusted {
        /// Why path validation against the public roots failed.
        reason: String,
    },
    /// The serving SVID has no extendedKeyUsage extension (X509-SVID §4.4 says it
    /// SHOULD; clients that require `serverAuth` when verifying, as rustls's default
    /// verifier does, refuse it, while go-spiffe and SPIRE accept it).
    #[error("the serving SVID {id} has no extendedKeyUsage (X509-SVID §4.4 SHOULD)")]
    NoExtendedKeyUsage {
        /// The SVID's SPIFFE ID.
        id: SpiffeId,
    },
}

/// A key purpose (RFC 5280 §4.2.1.12) that X509-SVID §4.4 requires in an
/// extendedKeyUsage extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyPurpose {
    /// `id-kp-serverAuth`.
    ServerAuth,
    /// `id-kp-clientAuth`.
    ClientAuth,
}

impl fmt::Display for KeyPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ServerAuth => "serverAuth",
            Self::ClientAuth => "clientAuth",
        })
    }
}
