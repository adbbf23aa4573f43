//! Where bundles come from: foreign trust domains' bundle endpoints, polled on a
//! schedule, and local trust domains' bundles, read from files or followed on the
//! SPIFFE Workload API.
//!
//! Owns deciding when to fetch ([`schedule`], pure), the polling task per relationship
//! and the handle the admin API holds ([`pollers`]), and the local sources
//! ([`local`]). Every source hands what
//! it gets to the trust store ([`crate::trust::store`]), which alone decides and
//! writes; no source stores or serves anything itself.

pub mod leases;
pub mod local;
pub mod pollers;
pub mod schedule;
