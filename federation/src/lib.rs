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
//! - [`SpiffeClientVerifier`]: a rustls verifier that authenticates TLS clients by
//!   their X509-SVID, under the current bundle of the client ID's own trust domain
//!   (SPIFFE mTLS for services other than bundle endpoints);
//! - [`jwt_svid`]: JWT-SVID validation against the JWT authorities of the bundle of
//!   the token's own trust domain only (JWT-SVID §2-§4, TDB §3).
//!
//! It knows nothing of storage, configuration or any service; `docs/conformance.md`
//! in the fedgw repository maps every rule to the tests that check it.
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

pub mod bundle;
pub mod endpoint;
pub mod jwt_svid;
mod tls_client_auth;
pub mod trust_domain;
pub mod verify;

pub use crate::bundle::{Bundle, BundleError, BundleMap, Parsed};
pub use crate::tls_client_auth::{
    ClientAuthError, SpiffeClientVerifier, client_auth_error, peer_spiffe_id,
};
pub use crate::trust_domain::{IdError, SpiffeId, TrustDomain};
