//! Everything an operator runs besides a gateway: the admin API client, the CLI's
//! verbs and their rendering, the node agent, offline bundle validation, the embedded
//! default configuration of `fedgw serve` with no `--config`, and `fedgw demo`
//! (gateways started in one process and shown).
//!
//! Owns nothing a gateway runs; it reaches a gateway through the admin API, or, for
//! the demo, starts gateways through [`crate::app`] like `fedgw serve` does.

pub mod admin_client;
pub mod agent;
pub mod cli;
pub mod defaults;
pub mod demo;
pub mod store_copy;
pub mod validate;
