//! `spiffe-federation`: the SPIFFE federation protocol, reusable on its own.
//!
//! This crate implements the data formats and checks that SPIFFE federation is built
//! on, following the standards in `spiffe/spiffe` (folder `standards/`):
//!
//! - [`TrustDomain`] and [`SpiffeId`]: validated names (SPIFFE-ID §2);
//! - [`Bundle`]: a trust domain's authorities and the SPIFFE bundle JSON document
//!   (SPIFFE Trust Domain and Bundle §4; X509-SVID, JWT-SVID and WIT-SVID §6), with
//!   PEM import/export and the [`BundleMap`] (TDB §5.1.1);
//! - [`verify`]: X509-SVID chain and SPIFFE ID checks used to authenticate an
//!   `https_spiffe` bundle endpoint (X509-SVID §5, SPIFFE Federation §5.2.2.4);
//! - [`endpoint`]: bundle endpoint URL rules and fetch settings, and with features the
//!   bundle endpoint client (`endpoint::client`) and server pieces (`endpoint::server`)
//!   (SPIFFE Federation §5);
//! - `SpiffeClientVerifier`: a rustls verifier that authenticates TLS clients by
//!   their X509-SVID, under the current bundle of the client ID's own trust domain
//!   (SPIFFE mTLS for services other than bundle endpoints);
//! - `jwt_svid`: JWT-SVID validation against the JWT authorities of the bundle of
//!   the token's own trust domain only (JWT-SVID §2-§4, TDB §3).
//!
//! It knows nothing of storage, configuration or any service; `docs/conformance.md`
//! in the fedgw repository maps every rule to the tests that check it.
//!
//! # Features
//! The core needs no feature: [`TrustDomain`], [`SpiffeId`], [`Bundle`] and
//! [`BundleMap`] with their JSON and PEM formats, the endpoint URL rules and fetch
//! settings ([`endpoint::EndpointUrl`], [`endpoint::Profile`], [`endpoint::FetchLimits`],
//! [`endpoint::ProxySetting`]), and [`verify`]. Its dependencies are the parsers and
//! the crypto they need (serde_json, base64, url, x509-parser, rustls-webpki, aws-lc-rs);
//! `cargo build --no-default-features` builds no HTTP client or server, async runtime,
//! TLS stack or JOSE library.
//!
//! | Feature | Adds | Pulls in |
//! |---|---|---|
//! | `tls` | `SpiffeClientVerifier`, `peer_spiffe_id`, `client_auth_error` (`tls_client_auth.rs`) | rustls |
//! | `client` (+ `tls`) | `endpoint::client`: fetching a bundle under either profile | reqwest, tokio, rustls-native-certs, http, bytes |
//! | `server` (+ `tls`) | `endpoint::server`: TLS server configurations and the response to a bundle request | http, bytes |
//! | `jwt` | `jwt_svid`: JWT-SVID validation | jsonwebtoken |
//!
//! `default = ["client", "server", "jwt"]` (and so `tls`): everything. For the core
//! alone: `spiffe-federation = { version = "0.1", default-features = false }`, adding
//! `features = [...]` for the parts wanted.
//!
//! Where the X.509 pieces sit, and why:
//! - **[`verify`] is core.** It needs x509-parser (certificate fields), which the core
//!   has anyway since [`Bundle`] reads every X.509 authority with it, and rustls-webpki
//!   (RFC 5280 path validation), which brings no TLS stack, runtime or I/O. A caller
//!   with another TLS stack can verify SVIDs with the core alone.
//! - **`SpiffeClientVerifier` is behind `tls`.** It implements rustls's
//!   `ClientCertVerifier`, so it needs rustls itself, which nothing in the core does;
//!   `client` and `server` are built on rustls and turn `tls` on.
//!
//! # Quick start
//! ```
//! use spiffe_federation::{Bundle, TrustDomain};
//!
//! let td: TrustDomain = "example.org".parse()?;
//! let doc = br#"{"keys":[{"use":"frob","kty":"EC"}],"spiffe_refresh_hint":300}"#;
//! let parsed = Bundle::parse(&td, doc)?;
//! assert_eq!(parsed.ignored.len(), 1); // unknown `use`: left out, not an error
//! assert_eq!(parsed.bundle.refresh_hint(), Some(std::time::Duration::from_secs(300)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod bundle;
pub mod endpoint;
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub mod jwt_svid;
#[cfg(feature = "tls")]
mod tls_client_auth;
pub mod trust_domain;
pub mod verify;

pub use crate::bundle::{Bundle, BundleError, BundleMap, Parsed};
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub use crate::tls_client_auth::{
    ClientAuthError, SpiffeClientVerifier, client_auth_error, peer_spiffe_id,
};
pub use crate::trust_domain::{IdError, SpiffeId, TrustDomain};
