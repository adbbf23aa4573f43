//! fedgw: a SPIFFE trust-domain federation gateway.
//!
//! The protocol lives in the `spiffe-federation` crate; this crate is the service
//! and its command line. Today it provides offline bundle validation
//! ([`validate`]); the gateway itself (serve, poll, store, distribute) follows the
//! design in `docs/`.

pub mod validate;
