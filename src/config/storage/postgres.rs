//! `[storage.postgres]`: the shared PostgreSQL database replicas keep their state in.
//!
//! Owns the table's schema, defaults and checks (pure: nothing is opened or read here;
//! the password file and variable are read when the store opens). The URL names the
//! server, user and database; the password never sits in the configuration file, and
//! TLS is chosen by `tls`, not by a `sslmode` in the URL, so there is one place that
//! says whether the connection is encrypted.

use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Seconds};

/// Default of `storage.postgres.pool_size`.
pub const DEFAULT_POOL_SIZE: u32 = 8;
/// Largest `storage.postgres.pool_size`.
pub const MAX_POOL_SIZE: u32 = 128;
/// Default of `storage.postgres.connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Seconds = Seconds(5);
/// Default of `storage.postgres.statement_timeout`.
pub const DEFAULT_STATEMENT_TIMEOUT: Seconds = Seconds(10);
/// Default of `storage.postgres.lease_time`.
pub const DEFAULT_LEASE_TIME: Seconds = Seconds(15);
/// Shortest `storage.postgres.lease_time`.
pub const MIN_LEASE_TIME: Seconds = Seconds(3);

/// The `[storage.postgres]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://USER@HOST[:PORT]/DATABASE`, without a password and without
    /// `sslmode` (see `tls`). Required.
    pub url: String,
    /// A file whose content (trailing newline trimmed) is the password. At most one
    /// of `password_file` and `password_env`; with neither, no password is sent
    /// (trust or certificate authentication on the server).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The environment variable that holds the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// `"verify-full"` (default): TLS, the server's certificate checked against
    /// `ca_file` (or the system's roots) and its name against the URL's host.
    /// `"disable"`: plain TCP, for a database on loopback or a unix socket only.
    #[serde(default)]
    pub tls: PostgresTls,
    /// PEM file of the CAs that may sign the server's certificate; default: the
    /// system's trust roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Most connections this replica opens (default 8).
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    /// Longest wait to connect, or for a free connection (default 5 s).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Seconds,
    /// Longest one store call may take, on the server and on the client (default
    /// 10 s): past it the call fails with a named error and the replica counts the
    /// database as away.
    #[serde(default = "default_statement_timeout")]
    pub statement_timeout: Seconds,
    /// How long a replica's lease on polling a trust domain lasts unless renewed
    /// (default 15 s): a replica that dies or loses the database stops polling its
    /// domains within it, and the others take them over right after. Renewed every
    /// third of it.
    #[serde(default = "default_lease_time")]
    pub lease_time: Seconds,
}

fn default_pool_size() -> u32 {
    DEFAULT_POOL_SIZE
}

fn default_connect_timeout() -> Seconds {
    DEFAULT_CONNECT_TIMEOUT
}

fn default_statement_timeout() -> Seconds {
    DEFAULT_STATEMENT_TIMEOUT
}

fn default_lease_time() -> Seconds {
    DEFAULT_LEASE_TIME
}

/// `storage.postgres.tls`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PostgresTls {
    /// TLS with the certificate and host name verified.
    #[default]
    VerifyFull,
    /// No TLS.
    Disable,
}

impl PostgresConfig {
    /// A table with `url` and every default, for tests and `fedgw store copy`.
    pub fn with_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            password_file: None,
            password_env: None,
            tls: PostgresTls::default(),
            ca_file: None,
            pool_size: DEFAULT_POOL_SIZE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            lease_time: DEFAULT_LEASE_TIME,
        }
    }

    /// The URL parsed by the driver.
    ///
    /// # Errors
    /// Why the URL is refused.
    pub fn driver_config(&self) -> Result<tokio_postgres::Config, String> {
        let config = tokio_postgres::Config::from_str(&self.url)
            .map_err(|err| format!("not a PostgreSQL URL: {err}"))?;
        if config.get_password().is_some() {
            return Err("holds a password: put it in storage.postgres.password_file or password_env instead".into());
        }
        if self.url.contains("sslmode=") {
            return Err(
                "sets sslmode: use storage.postgres.tls (\"verify-full\" or \"disable\") instead"
                    .into(),
            );
        }
        if config.get_user().is_none() {
            return Err("names no user (postgres://USER@HOST/DATABASE)".into());
        }
        if config.get_dbname().is_none() {
            return Err("names no database (postgres://USER@HOST/DATABASE)".into());
        }
        if config.get_hosts().is_empty() {
            return Err("names no host".into());
        }
        Ok(config)
    }

    /// Check the table, naming the key of the first bad value.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the `storage.postgres.*` key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            key: format!("storage.postgres.{key}"),
            reason,
        };
        self.driver_config()
            .map_err(|reason| invalid("url", reason))?;
        if self.password_file.is_some() && self.password_env.is_some() {
            return Err(invalid(
                "password_env",
                "set password_file or password_env, not both".into(),
            ));
        }
        if let Some(name) = &self.password_env
            && (name.is_empty() || name.contains('='))
        {
            return Err(invalid(
                "password_env",
                format!("{name:?} is not an environment variable name"),
            ));
        }
        if self.tls == PostgresTls::Disable && self.ca_file.is_some() {
            return Err(invalid(
                "ca_file",
                "is set but tls = \"disable\": set tls = \"verify-full\" to use it".into(),
            ));
        }
        if self.pool_size == 0 || self.pool_size > MAX_POOL_SIZE {
            return Err(invalid(
                "pool_size",
                format!("must be between 1 and {MAX_POOL_SIZE}"),
            ));
        }
        if self.lease_time < MIN_LEASE_TIME {
            return Err(invalid(
                "lease_time",
                format!("must be at least {} seconds", MIN_LEASE_TIME.0),
            ));
        }
        for (key, value) in [
            ("connect_timeout", self.connect_timeout),
            ("statement_timeout", self.statement_timeout),
        ] {
            if value.0 == 0 {
                return Err(invalid(key, "must be at least 1 second".into()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str) -> Result<(), String> {
        PostgresConfig::with_url(url)
            .validate()
            .map_err(|err| err.to_string())
    }

    #[test]
    fn url_names_user_host_and_database_without_password_or_sslmode() {
        assert_eq!(check("postgres://fedgw@db.example:5432/fedgw"), Ok(()));
        for (url, says) in [
            ("postgres://fedgw:hunter2@db.example/fedgw", "password_file"),
            (
                "postgres://fedgw@db.example/fedgw?sslmode=disable",
                "storage.postgres.tls",
            ),
            ("postgres://db.example/fedgw", "no user"),
            ("postgres://fedgw@db.example", "no database"),
            ("mysql://x", "not a PostgreSQL URL"),
        ] {
            let err = check(url).unwrap_err();
            assert!(err.contains("storage.postgres.url"), "{err}");
            assert!(err.contains(says), "{url}: {err}");
            assert!(
                !err.contains("hunter2"),
                "the password is never echoed: {err}"
            );
        }
    }

    #[test]
    fn one_password_source_and_sane_bounds() {
        let base = PostgresConfig::with_url("postgres://fedgw@db.example/fedgw");
        let both = PostgresConfig {
            password_file: Some("/run/secrets/pg".into()),
            password_env: Some("PGPASS".into()),
            ..base.clone()
        };
        assert!(
            both.validate()
                .unwrap_err()
                .to_string()
                .contains("not both")
        );
        let pool = PostgresConfig {
            pool_size: 0,
            ..base.clone()
        };
        assert!(
            pool.validate()
                .unwrap_err()
                .to_string()
                .contains("pool_size")
        );
        let ca = PostgresConfig {
            tls: PostgresTls::Disable,
            ca_file: Some("/ca.pem".into()),
            ..base
        };
        assert!(ca.validate().unwrap_err().to_string().contains("ca_file"));
    }
}
