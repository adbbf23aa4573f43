//! Outputs: what redistributes the trust store's bundles to agents and proxies.
//!
//! Every sink follows the trust store's change feed
//! ([`TrustStore::subscribe`](crate::trust::store::TrustStore::subscribe)) and reads
//! its immutable snapshot; none reads sled. Bundles of different trust domains are
//! never merged (SPIFFE Federation §4.2): each output keeps the domain ↔ bundle
//! binding.

pub mod endpoint;
pub mod files;
pub mod sds;
