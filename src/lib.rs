//! fedgw: a SPIFFE trust-domain federation gateway.
//!
//! The protocol lives in the `spiffe-federation` crate; this crate is the service and
//! its command line. The tree follows the data: [`sources`] (foreign bundle endpoints
//! polled on a schedule, local bundles from files or the SPIFFE Workload API) feed
//! [`trust`] (acceptance policy, the single-writer trust store and its durable
//! database), which [`outputs`] redistribute (bundle endpoints, SDS, files). Beside
//! that flow: [`registry`] (the set of federation relationships), [`kubernetes`]
//! (ClusterFederatedTrustDomains in, ClusterTrustBundles out, one elected writer), [`admin`] (the HTTP
//! API), [`client`] (CLI, agent and the admin client), [`net`] (listeners and their
//! limits), [`telemetry`] (logs and metrics), [`config`] (the TOML schema), and
//! [`app`], which wires them together and holds no logic of its own.

pub mod admin;
pub mod app;
pub mod client;
pub mod config;
pub mod dev;
pub mod digest;
pub mod kubernetes;
pub mod net;
pub mod outputs;
pub mod registry;
pub mod relationship;
pub mod shutdown;
pub mod sources;
pub mod supervise;
pub mod telemetry;
pub mod trust;
