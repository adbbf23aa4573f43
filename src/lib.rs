//! fedgw: a SPIFFE trust-domain federation gateway.
//!
//! The protocol lives in the `spiffe-federation` crate; this crate is the service
//! and its command line: offline bundle validation ([`validate`]), configuration
//! ([`config`]), acceptance policy ([`policy`]), durable storage ([`store`]) and the
//! in-memory trust store every reader uses ([`trust_store`]).

pub mod admin;
pub mod admin_client;
pub mod agent;
pub mod cli;
pub mod config;
pub mod data_dir;
pub mod defaults;
pub mod demo;
pub mod dev_pki;
pub mod endpoint;
pub mod gateway;
pub mod local_source;
pub mod log_guard;
pub mod net;
pub mod policy;
pub mod poller;
pub mod relationships;
pub mod shutdown;
pub mod sinks;
pub mod store;
pub mod supervise;
pub mod telemetry;
pub mod trust_store;
pub mod url_check;
pub mod validate;
