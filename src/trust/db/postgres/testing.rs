//! A fresh database for a test, on the test process's PostgreSQL server (the test
//! kit's, from Debian's packages), reached as a deployment reaches one: over TCP,
//! with a password from a file and TLS verified against the kit's CA.

#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use crate::config::storage::{PostgresConfig, PostgresTls, StorageBackend, StorageConfig};

/// A new, empty database and the `[storage.postgres]` table that reaches it.
pub(crate) struct TestDatabase {
    /// The table.
    pub(crate) config: PostgresConfig,
    /// Holds the password file.
    _secrets: tempfile::TempDir,
}

impl TestDatabase {
    /// Create one; fails the test, saying what to install, when PostgreSQL cannot run.
    pub(crate) fn new() -> Self {
        let server =
            fedgw_testkit::postgres::Postgres::shared().unwrap_or_else(|err| panic!("{err}"));
        let database = server
            .create_database()
            .unwrap_or_else(|err| panic!("{err}"));
        let secrets = tempfile::tempdir().unwrap();
        let password_file = secrets.path().join("pg-password");
        std::fs::write(&password_file, format!("{}\n", server.password())).unwrap();
        let config = PostgresConfig {
            password_file: Some(password_file),
            tls: PostgresTls::VerifyFull,
            ca_file: Some(server.ca_file()),
            ..PostgresConfig::with_url(server.url(&database))
        };
        Self {
            config,
            _secrets: secrets,
        }
    }

    /// `settings` with this database as the store (`backend = "postgres"`).
    pub(crate) fn storage_with(&self, settings: StorageConfig) -> StorageConfig {
        StorageConfig {
            backend: StorageBackend::Postgres,
            postgres: Some(self.config.clone()),
            ..settings
        }
    }
}
