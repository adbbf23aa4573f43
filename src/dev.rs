//! Trying fedgw out: the development PKI that the embedded default configuration
//! (`fedgw serve` with no `--config`, [`crate::client::defaults`]), `fedgw demo`
//! ([`crate::client::demo`]) and the testbeds use.
//!
//! Owns nothing a production gateway needs; production certificates come from the
//! operator or SPIRE.

pub mod pki;
