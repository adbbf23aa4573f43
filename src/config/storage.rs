//! `[storage]`: where the state lives (`backend`: the embedded sled database, or a
//! shared PostgreSQL database in `[storage.postgres]`), how much the store keeps, and
//! when it rewrites its sled database.
//!
//! Owns the schema, its defaults and its checks (pure: nothing is opened here). What
//! the caps mean on disk is worked out in `docs/operations.md` ("What a domain can
//! cost on disk").

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

mod postgres;

pub use self::postgres::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_LEASE_TIME, DEFAULT_POOL_SIZE, DEFAULT_STATEMENT_TIMEOUT,
    MAX_POOL_SIZE, MIN_LEASE_TIME, PostgresConfig, PostgresTls,
};

/// Default of `storage.history_max_versions`.
pub const DEFAULT_HISTORY_MAX_VERSIONS: usize = 20;
/// Default of `storage.history_max_bytes_per_domain`: 8 MiB.
pub const DEFAULT_HISTORY_MAX_BYTES: ByteSize = ByteSize(8 * MIB);
/// Default of `storage.audit_max_entries`.
pub const DEFAULT_AUDIT_MAX_ENTRIES: usize = 100_000;
/// Default of `storage.audit_max_bytes`: 64 MiB.
pub const DEFAULT_AUDIT_MAX_BYTES: ByteSize = ByteSize(64 * MIB);
/// Default of `storage.compact_waste_ratio`.
pub const DEFAULT_COMPACT_WASTE_RATIO: u32 = 2;
/// Default of `storage.compact_min_waste_bytes`: 64 MiB.
pub const DEFAULT_COMPACT_MIN_WASTE: ByteSize = ByteSize(64 * MIB);

/// Smallest accepted `storage.compact_min_waste_bytes`: below it sled's own fixed
/// files (a 512 KiB log segment, its snapshot) would count as waste to reclaim.
pub const MIN_COMPACT_MIN_WASTE: ByteSize = ByteSize(MIB);
/// Smallest accepted `storage.audit_max_bytes`: room for a few bounded records.
pub const MIN_AUDIT_MAX_BYTES: ByteSize = ByteSize(64 * KIB);

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// The `[storage]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Where the state lives: `"sled"` (default: a database in the data directory,
    /// for one gateway) or `"postgres"` (`[storage.postgres]`, shared by replicas).
    pub backend: StorageBackend,
    /// The shared database; required with `backend = "postgres"`, refused otherwise.
    pub postgres: Option<PostgresConfig>,
    /// Most versions of one trust domain's bundle kept in `history`, the current one
    /// included (default 20).
    pub history_max_versions: usize,
    /// Most bytes of stored records one trust domain's `history` keeps (default
    /// 8 MiB). The newest version is always kept, even when it alone is larger.
    pub history_max_bytes_per_domain: ByteSize,
    /// Most entries the audit log keeps; the oldest go first (default 100,000).
    pub audit_max_entries: usize,
    /// Most bytes of records the audit log keeps; the oldest go first (default 64 MiB).
    pub audit_max_bytes: ByteSize,
    /// Rewrite the database when the bytes on disk beyond the live records exceed
    /// this many times the live records (default 2) ...
    pub compact_waste_ratio: u32,
    /// ... and exceed this many bytes (default 64 MiB).
    pub compact_min_waste_bytes: ByteSize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: StorageBackend::default(),
            postgres: None,
            history_max_versions: DEFAULT_HISTORY_MAX_VERSIONS,
            history_max_bytes_per_domain: DEFAULT_HISTORY_MAX_BYTES,
            audit_max_entries: DEFAULT_AUDIT_MAX_ENTRIES,
            audit_max_bytes: DEFAULT_AUDIT_MAX_BYTES,
            compact_waste_ratio: DEFAULT_COMPACT_WASTE_RATIO,
            compact_min_waste_bytes: DEFAULT_COMPACT_MIN_WASTE,
        }
    }
}

impl StorageConfig {
    /// Check the table, naming the key of the first bad value.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the `storage.*` key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            key: format!("storage.{key}"),
            reason,
        };
        match (self.backend, &self.postgres) {
            (StorageBackend::Postgres, Some(postgres)) => postgres.validate()?,
            (StorageBackend::Postgres, None) => {
                return Err(invalid(
                    "postgres.url",
                    "is required with backend = \"postgres\" (a [storage.postgres] table)".into(),
                ));
            }
            (StorageBackend::Sled, Some(_)) => {
                return Err(invalid(
                    "postgres",
                    "is set but backend is \"sled\": set storage.backend = \"postgres\" to use it"
                        .into(),
                ));
            }
            (StorageBackend::Sled, None) => {}
        }
        if self.history_max_versions == 0 {
            return Err(invalid(
                "history_max_versions",
                "must be at least 1 (the current bundle is always kept)".into(),
            ));
        }
        if self.history_max_bytes_per_domain.0 == 0 {
            return Err(invalid(
                "history_max_bytes_per_domain",
                "must be positive".into(),
            ));
        }
        if self.audit_max_entries == 0 {
            return Err(invalid("audit_max_entries", "must be at least 1".into()));
        }
        if self.audit_max_bytes < MIN_AUDIT_MAX_BYTES {
            return Err(invalid(
                "audit_max_bytes",
                format!("must be at least {MIN_AUDIT_MAX_BYTES}"),
            ));
        }
        if self.compact_waste_ratio == 0 {
            return Err(invalid(
                "compact_waste_ratio",
                "must be at least 1 (waste is measured against the live records)".into(),
            ));
        }
        if self.compact_min_waste_bytes < MIN_COMPACT_MIN_WASTE {
            return Err(invalid(
                "compact_min_waste_bytes",
                format!(
                    "must be at least {MIN_COMPACT_MIN_WASTE}: below that, sled's own fixed files would count as waste"
                ),
            ));
        }
        Ok(())
    }

    /// Whether a database of `live` record bytes taking `disk` bytes should be
    /// rewritten: its waste (`disk - live`) exceeds both `compact_min_waste_bytes`
    /// and `compact_waste_ratio` times `live`.
    pub fn should_compact(&self, disk: u64, live: u64) -> bool {
        disk.saturating_sub(live) > self.waste_allowance(live)
    }

    /// The waste allowed over `live` bytes before a rewrite.
    pub fn waste_allowance(&self, live: u64) -> u64 {
        live.saturating_mul(u64::from(self.compact_waste_ratio))
            .max(self.compact_min_waste_bytes.0)
    }
}

/// `storage.backend`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// An embedded sled database in the data directory.
    #[default]
    Sled,
    /// A PostgreSQL database shared by every replica.
    Postgres,
}

/// A size in bytes, written `1048576`, `"512KiB"`, `"64MiB"` or `"1GiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(into = "u64")]
pub struct ByteSize(pub u64);

impl super::value::FromNumber for ByteSize {
    const EXPECTING: &'static str = "a size like 1048576, \"512KiB\", \"64MiB\" or \"1GiB\"";

    fn from_number(number: u64) -> Result<Self, String> {
        Ok(Self(number))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        super::value::deserialize(deserializer)
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let value: u64 = digits.parse().map_err(|_| {
            format!("{text:?} is not a size like 1048576, \"512KiB\", \"64MiB\" or \"1GiB\"")
        })?;
        let factor = match unit.trim() {
            "" | "B" => 1,
            "KiB" => KIB,
            "MiB" => MIB,
            "GiB" => GIB,
            other => {
                return Err(format!(
                    "unknown unit {other:?} in {text:?}: use B, KiB, MiB or GiB"
                ));
            }
        };
        value
            .checked_mul(factor)
            .map(Self)
            .ok_or_else(|| format!("{text:?} is too large"))
    }
}

impl From<ByteSize> for u64 {
    fn from(value: ByteSize) -> Self {
        value.0
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (factor, unit) in [(GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")] {
            if n >= factor && n.is_multiple_of(factor) {
                return write!(f, "{} {unit}", n / factor);
            }
        }
        write!(f, "{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn compaction_needs_both_the_ratio_and_the_minimum() {
        let s = StorageConfig::default();
        let mib = 1 << 20;
        // 10 MiB live: the 64 MiB minimum rules.
        assert!(!s.should_compact(74 * mib, 10 * mib));
        assert!(s.should_compact(75 * mib, 10 * mib));
        // 100 MiB live: twice the live bytes rules.
        assert!(!s.should_compact(300 * mib, 100 * mib));
        assert!(s.should_compact(301 * mib, 100 * mib));
        assert!(!s.should_compact(0, 0));
    }
}
