//! Sinks: the outputs that redistribute trusted bundles to agents and proxies.
//!
//! Every sink follows the trust store's change feed and reads its snapshots; none
//! reads storage. Bundles of different trust domains are never merged into one pool:
//! each output keeps the domain ↔ bundle binding (FED-11, DIST-1..DIST-7).

pub mod sds;
