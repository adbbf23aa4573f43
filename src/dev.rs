//! Trying fedgw out: the embedded default configuration (`fedgw serve` with no
//! `--config`) and the development PKI it, `fedgw demo` ([`crate::client::demo`]) and
//! the testbeds use.
//!
//! Owns nothing a production gateway needs; production certificates come from the
//! operator or SPIRE.

pub mod defaults;
pub mod pki;
