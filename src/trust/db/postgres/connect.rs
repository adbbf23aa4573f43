//! Connecting to PostgreSQL: the password, TLS through rustls, timeouts, the pool.
//!
//! Owns turning `[storage.postgres]` into a connection pool; reads the password file
//! or variable and the CA file once, when the store opens. Nothing here runs a query.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

use crate::config::storage::{PostgresConfig, PostgresTls};
use crate::trust::db::StoreError;

/// TCP keep-alive: a peer that vanished (a cut network, a powered-off host) is found
/// within about `IDLE + INTERVAL * RETRIES`, not the kernel's two hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVE_RETRIES: u32 = 3;

fn settings(problem: String) -> StoreError {
    StoreError::PostgresSettings { problem }
}

/// How to dial the server outside the pool (the listening connection).
#[derive(Clone)]
pub(super) struct Dialer {
    /// The driver's settings, password included.
    pub(super) driver: tokio_postgres::Config,
    /// TLS, unless `tls = "disable"`.
    pub(super) tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

/// The pool `config` describes, and how to dial one connection of its own.
/// Connections are made lazily; nothing is dialled here.
///
/// # Errors
/// [`StoreError::PostgresSettings`] naming the key or file that cannot be used.
pub(super) fn pool(config: &PostgresConfig) -> Result<(Pool, Dialer), StoreError> {
    let mut driver = config
        .driver_config()
        .map_err(|reason| settings(format!("url: {reason}")))?;
    if let Some(password) = password(config)? {
        driver.password(password);
    }
    let statement_ms = config.statement_timeout.0.saturating_mul(1000);
    driver
        .application_name("fedgw")
        .connect_timeout(config.connect_timeout.duration())
        .keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE)
        .keepalives_interval(KEEPALIVE_INTERVAL)
        .keepalives_retries(KEEPALIVE_RETRIES)
        // Data the server never acknowledges (a cut network) fails the connection
        // after this long, rather than after the kernel's retransmissions (minutes).
        .tcp_user_timeout(config.statement_timeout.duration())
        .options(format!(
            "-c statement_timeout={statement_ms} -c idle_in_transaction_session_timeout={statement_ms}"
        ));
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let (manager, dialer) = match config.tls {
        PostgresTls::Disable => {
            driver.ssl_mode(tokio_postgres::config::SslMode::Disable);
            let dialer = Dialer {
                driver: driver.clone(),
                tls: None,
            };
            (
                Manager::from_config(driver, tokio_postgres::NoTls, manager_config),
                dialer,
            )
        }
        PostgresTls::VerifyFull => {
            driver.ssl_mode(tokio_postgres::config::SslMode::Require);
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_tls(config)?);
            let dialer = Dialer {
                driver: driver.clone(),
                tls: Some(tls.clone()),
            };
            (Manager::from_config(driver, tls, manager_config), dialer)
        }
    };
    let wait = config.connect_timeout.duration();
    Pool::builder(manager)
        .max_size(usize::try_from(config.pool_size).unwrap_or(usize::MAX))
        .runtime(Runtime::Tokio1)
        .timeouts(Timeouts {
            wait: Some(wait),
            create: Some(wait),
            recycle: Some(wait),
        })
        .build()
        .map(|pool| (pool, dialer))
        .map_err(|err| settings(format!("cannot build the connection pool: {err}")))
}

/// The password from `password_file` or `password_env`, if either is set.
fn password(config: &PostgresConfig) -> Result<Option<String>, StoreError> {
    if let Some(path) = &config.password_file {
        let text = std::fs::read_to_string(path).map_err(|err| {
            settings(format!(
                "password_file {}: cannot read it: {err}",
                path.display()
            ))
        })?;
        let password = text.trim_end_matches(['\r', '\n']).to_owned();
        if password.is_empty() {
            return Err(settings(format!(
                "password_file {} is empty",
                path.display()
            )));
        }
        return Ok(Some(password));
    }
    if let Some(name) = &config.password_env {
        return match std::env::var(name) {
            Ok(password) if !password.is_empty() => Ok(Some(password)),
            Ok(_) => Err(settings(format!("password_env: ${name} is empty"))),
            Err(_) => Err(settings(format!("password_env: ${name} is not set"))),
        };
    }
    Ok(None)
}

/// rustls client settings: the CAs of `ca_file`, or the system's roots; the host name
/// is checked by rustls against the URL's host.
fn client_tls(config: &PostgresConfig) -> Result<rustls::ClientConfig, StoreError> {
    let mut roots = RootCertStore::empty();
    match &config.ca_file {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(Iterator::collect)
                .map_err(|err| {
                    settings(format!(
                        "ca_file {}: cannot read PEM certificates: {err}",
                        path.display()
                    ))
                })?;
            if certs.is_empty() {
                return Err(settings(format!(
                    "ca_file {} holds no certificate",
                    path.display()
                )));
            }
            for cert in certs {
                roots.add(cert).map_err(|err| {
                    settings(format!(
                        "ca_file {}: unusable certificate: {err}",
                        path.display()
                    ))
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A system root rustls cannot use is skipped, as every TLS client does.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(settings(
                    "tls = \"verify-full\" without ca_file, and the system has no trust roots: set storage.postgres.ca_file".into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| settings(format!("TLS settings: {err}")))
        .map(|builder| builder.with_root_certificates(roots).with_no_client_auth())
}
