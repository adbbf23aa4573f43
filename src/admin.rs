//! The admin HTTP API (axum, JSON under `/v1`): access control and errors so far; the
//! routes follow the trust store.

pub mod auth;
pub mod error;
