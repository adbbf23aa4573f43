//! SPIFFE bundle endpoints (SPIFFE Federation §5): the two profiles, fetching a
//! foreign trust domain's bundle ([`client`]) and serving a local one ([`server`]).
//!
//! Owns the wire protocol: URLs, TLS per profile, HTTP, limits. It does not own
//! scheduling, storage or acceptance policy (the gateway does).

pub mod client;
pub mod server;
