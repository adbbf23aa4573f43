//! Outputs: what redistributes the trust store's bundles to agents and proxies.
//!
//! Every sink follows the trust store's change feed
//! ([`TrustStore::subscribe`](crate::trust::store::TrustStore::subscribe)) and reads
//! its immutable snapshot; none reads sled. Bundles of different trust domains are
//! never merged (SPIFFE Federation §4.2): each output keeps the domain ↔ bundle
//! binding.
//!
//! Each sink is one folder: its table (`config.rs`), its code, its tests. The
//! `[sinks]` table below gathers the tables and [`start_sinks`] starts them; both take
//! the table apart field by field, so a sink added to [`SinksConfig`] that is not
//! validated and started does not compile. The bundle endpoints ([`endpoint`]) are
//! started on their own: they serve the local domains and are configured under
//! `[endpoint]`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use spiffe_federation::TrustDomain;

use crate::config::ConfigError;
use crate::net::{BoundAddr, Net};
use crate::supervise::Supervisor;
use crate::telemetry::Metrics;
use crate::trust::store::TrustStore;

pub mod endpoint;
pub mod files;
pub mod sds;

/// The `[sinks]` table: each sink is configured by its own sub-table, defined in the
/// sink's folder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SinksConfig {
    /// `[sinks.sds]`: the Envoy SDS server, off when absent.
    pub sds: Option<sds::SdsConfig>,
    /// `[[sinks.files]]`: directories of PEM and JSON bundle files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<files::FilesSinkConfig>,
}

impl SinksConfig {
    /// Check every sink's table; `data_dir` is where sinks put their default sockets.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key at fault.
    pub fn validate(&self, data_dir: &Path) -> Result<(), ConfigError> {
        let Self { sds, files } = self;
        files::validate(files)?;
        if let Some(sds) = sds {
            sds.validate(data_dir)?;
        }
        Ok(())
    }
}

/// What the sinks share: the store they follow and the gateway's common parts.
#[derive(Debug, Clone, Copy)]
pub struct SinkParts<'a> {
    /// The data directory (default sockets).
    pub data_dir: &'a Path,
    /// The configured local trust domains, in order.
    pub locals: &'a [TrustDomain],
    /// The trust store whose changes they follow.
    pub trust_store: &'a TrustStore,
    /// Metrics.
    pub metrics: &'a Metrics,
    /// The connection budget and limits, for sinks that listen.
    pub net: &'a Net,
    /// The owner of their tasks.
    pub supervisor: &'a Supervisor,
}

/// What the started sinks expose.
#[derive(Debug, Default)]
pub struct StartedSinks {
    /// Where the Envoy SDS server listens, when `[sinks.sds]` is configured.
    pub sds_addr: Option<BoundAddr>,
}

/// Why a sink could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The Envoy SDS server could not listen.
    #[error(transparent)]
    Sds(#[from] sds::SdsError),
    /// A `[[sinks.files]]` directory could not be opened or written at startup.
    #[error(transparent)]
    Files(#[from] files::FilesError),
}

/// Start every configured sink, each writing or serving the current snapshot first and
/// then following the trust store's changes under the supervisor.
///
/// # Errors
/// [`SinkError`] for the first sink that cannot start.
pub async fn start_sinks(
    config: &SinksConfig,
    parts: SinkParts<'_>,
) -> Result<StartedSinks, SinkError> {
    let SinksConfig { sds, files } = config;
    for table in files {
        files::start(
            table,
            parts.trust_store.clone(),
            parts.metrics.clone(),
            parts.supervisor,
        )
        .await?;
    }
    let sds_addr = match sds {
        Some(table) => Some(
            sds::start(
                table,
                parts.data_dir,
                parts.locals.iter(),
                parts.trust_store,
                parts.metrics,
                parts.net,
                parts.supervisor,
            )
            .await?,
        ),
        None => None,
    };
    Ok(StartedSinks { sds_addr })
}
