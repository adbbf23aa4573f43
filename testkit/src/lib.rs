//! The test kit of fedgw's integration tests (`tests/*.rs`): what every test needs
//! around the gateway, in one place.
//!
//! Owns:
//! - [`ca`]: test CAs made with rcgen at test time: SPIFFE X.509 CAs that issue
//!   X509-SVIDs, Web PKI roots that issue `localhost` server certificates, self-signed
//!   leaves and P-256 keys for JWT authorities;
//! - [`bundle_server`]: loopback bundle endpoints a test scripts (`https_web` and
//!   `https_spiffe`: a fixed document, one that changes on every request, an endpoint
//!   that is down, a redirect) and a listener that accepts and never answers;
//! - [`net`]: free loopback ports;
//! - [`wait`]: waiting for a condition up to a deadline that names what it waited for;
//! - [`process`]: child processes (the `fedgw` binary, a peer) with their output in a
//!   log file, killed on drop, the log printed when the test fails; and the rule that
//!   a missing tool fails the test, saying what to install;
//! - [`fs`]: atomic file replacement, as operators and the gateway's watchers expect;
//! - [`postgres`]: throwaway PostgreSQL servers from Debian's packages (TLS, a
//!   password, a database per test, stop, restart and `kill -9`), which return errors
//!   rather than panic.
//!
//! Does not own anything that needs fedgw's own types: the gateway harness
//! (`tests/support/gateway.rs`, which configures and starts real gateways), the
//! in-process gateway of `tests/support/files_watch.rs`, and the peers' harnesses
//! (SPIRE, go-spiffe, Envoy in `tests/support/`) stay with the tests and build on this
//! kit. It must never depend on the `fedgw` crate: a test would link two copies of its
//! types.
//!
//! Everything here panics on failure, naming what failed: a fixture that cannot do its
//! part fails the test that called it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test kit: a fixture that cannot do its part fails the calling test, loudly"
)]

pub mod bundle_server;
pub mod ca;
pub mod fs;
pub mod net;
pub mod postgres;
pub mod process;
pub mod wait;

pub use bundle_server::{Answer, BundleServer, StallServer};
pub use ca::{EcKey, Issued, TestCa};
pub use fs::write_atomically;
pub use net::free_port;
pub use process::{Process, require_tool};
pub use wait::{DEADLINE, wait_for, wait_until};
