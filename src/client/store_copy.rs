//! `fedgw store copy`: move a gateway's whole state between a sled data directory
//! and a PostgreSQL database (either way), verified by reading it back.
//!
//! Owns naming a store on the command line (`sled:DATA_DIR`, `postgres://…`) and
//! opening it for the copy; what is copied and the check are the store's own
//! ([`crate::trust::db::copy`]).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::config::storage::{PostgresConfig, PostgresTls, StorageBackend, StorageConfig};
use crate::telemetry::Metrics;
use crate::trust::db::postgres::PgStore;
use crate::trust::db::{CopyReport, Database, Store, StoreError};

/// A store named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// `sled:DATA_DIR`: the sled database of a gateway whose `data_dir` is
    /// `DATA_DIR` (it lives in `DATA_DIR/db`).
    Sled(PathBuf),
    /// `postgres://USER@HOST[:PORT]/DATABASE` (also written `postgres:postgres://…`).
    Postgres(String),
}

impl FromStr for StoreLocation {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(dir) = text.strip_prefix("sled:") {
            if dir.is_empty() {
                return Err(
                    "sled: needs the gateway's data directory, e.g. sled:/var/lib/fedgw".into(),
                );
            }
            return Ok(Self::Sled(PathBuf::from(dir)));
        }
        let url = text
            .strip_prefix("postgres:")
            .filter(|rest| rest.starts_with("postgres"))
            .unwrap_or(text);
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        Err(format!(
            "{text:?} names no store: use sled:DATA_DIR or postgres://USER@HOST/DATABASE"
        ))
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sled(dir) => write!(f, "sled:{}", dir.display()),
            Self::Postgres(url) => f.write_str(url),
        }
    }
}

/// How to reach whichever side is PostgreSQL: the keys of `[storage.postgres]` other
/// than the URL.
#[derive(Debug, Clone, Default)]
pub struct PostgresAccess {
    /// `storage.postgres.password_file`.
    pub password_file: Option<PathBuf>,
    /// `storage.postgres.password_env`.
    pub password_env: Option<String>,
    /// `storage.postgres.ca_file`.
    pub ca_file: Option<PathBuf>,
    /// `storage.postgres.tls`.
    pub tls: PostgresTls,
}

/// Why a copy did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    /// The source names a sled data directory that holds no database.
    #[error("{location}: no sled database at {path} (is this the gateway's data_dir?)")]
    NoSledDatabase {
        /// The location given.
        location: String,
        /// Where the database was looked for.
        path: PathBuf,
    },
    /// The PostgreSQL settings are refused.
    #[error("{location}: {reason}")]
    Settings {
        /// The location given.
        location: String,
        /// Why, naming the key.
        reason: String,
    },
    /// Opening either store, or the copy itself, failed.
    #[error("{location}: {source}")]
    Store {
        /// The store concerned.
        location: String,
        /// The store's error.
        source: Box<StoreError>,
    },
}

/// Copy everything in `from` into `to` (which must be new) and read it back. Blocks.
///
/// # Errors
/// A [`CopyError`] naming the store concerned; nothing is written to `to` unless the
/// copy's one transaction committed.
pub fn copy(
    from: &StoreLocation,
    to: &StoreLocation,
    access: &PostgresAccess,
) -> Result<CopyReport, CopyError> {
    let source = open(from, access, false)?;
    let target = open(to, access, true)?;
    crate::trust::db::copy(&*source, &*target).map_err(|source| CopyError::Store {
        location: format!("{from} -> {to}"),
        source: Box::new(source),
    })
}

fn open(
    location: &StoreLocation,
    access: &PostgresAccess,
    create: bool,
) -> Result<Box<dyn Database>, CopyError> {
    let failed = |source| CopyError::Store {
        location: location.to_string(),
        source: Box::new(source),
    };
    match location {
        StoreLocation::Sled(dir) => {
            let path = dir.join("db");
            if !create && !path.is_dir() {
                return Err(CopyError::NoSledDatabase {
                    location: location.to_string(),
                    path,
                });
            }
            if create {
                std::fs::create_dir_all(dir).map_err(|source| {
                    failed(StoreError::Filesystem {
                        operation: "create",
                        path: dir.clone(),
                        source,
                    })
                })?;
            }
            let store = Store::open_with(&path, StorageConfig::default(), Metrics::new())
                .map_err(failed)?;
            Ok(Box::new(store))
        }
        StoreLocation::Postgres(url) => {
            let config = PostgresConfig {
                password_file: access.password_file.clone(),
                password_env: access.password_env.clone(),
                ca_file: access.ca_file.clone(),
                tls: access.tls,
                ..PostgresConfig::with_url(url.clone())
            };
            config.validate().map_err(|err| CopyError::Settings {
                location: location.to_string(),
                reason: err.to_string(),
            })?;
            let storage = StorageConfig {
                backend: StorageBackend::Postgres,
                postgres: Some(config.clone()),
                ..StorageConfig::default()
            };
            let store = PgStore::open(&config, storage, Metrics::new()).map_err(failed)?;
            Ok(Box::new(store))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_sled_directories_or_postgres_urls() {
        assert_eq!(
            "sled:/var/lib/fedgw".parse(),
            Ok(StoreLocation::Sled("/var/lib/fedgw".into()))
        );
        for url in [
            "postgres://fedgw@db/fedgw",
            "postgresql://fedgw@db/fedgw",
            "postgres:postgres://fedgw@db/fedgw",
        ] {
            let parsed: StoreLocation = url.parse().unwrap();
            assert!(matches!(parsed, StoreLocation::Postgres(u) if u.ends_with("fedgw@db/fedgw")));
        }
        for bad in ["sled:", "/var/lib/fedgw", "mysql://x"] {
            assert!(bad.parse::<StoreLocation>().is_err(), "{bad}");
        }
    }
}
