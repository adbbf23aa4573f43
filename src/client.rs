//! Everything that talks to a gateway from outside it: the admin API client, the
//! CLI's verbs and their rendering, the node agent, and offline bundle validation.
//!
//! Owns nothing the gateway runs; it reaches the gateway only through the admin API.

pub mod admin_client;
pub mod agent;
pub mod cli;
pub mod validate;
