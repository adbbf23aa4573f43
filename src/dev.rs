//! Trying fedgw out: the `fedgw demo` federation, the embedded default configuration,
//! and the development PKI both use.
//!
//! Owns nothing a production gateway needs; production certificates come from the
//! operator or SPIRE.

pub mod defaults;
pub mod demo;
pub mod pki;
