//! What the gateway trusts: acceptance policy, the single-writer trust store that
//! applies it, and the durable database under it.
//!
//! Owns the rule that every accepted change is durable before it is visible: the
//! [`store`] runs [`policy`] (pure) against the current bundle, writes through [`db`],
//! then swaps its in-memory snapshot and announces the new revision. Also owns the
//! data directory's lock ([`data_dir`]). It does not own where bundles come from
//! ([`crate::sources`]) or how they are served ([`crate::outputs`]).

pub mod data_dir;
pub mod db;
pub mod policy;
pub mod store;
