//! Starting and stopping a gateway: load, bind, then spawn.
//!
//! Owns the order of startup: open the trust store (every stored bundle is served
//! before any re-fetch, STO-1), load local bundles, bind the bundle endpoint
//! listeners, start the relationship registry (a poller per relationship, from the
//! configuration and the store), then report ready. It does not own what
//! each part does.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use spiffe_federation::TrustDomain;
use spiffe_federation::endpoint::client::Fetcher;

use crate::admin::auth::Access;
use crate::admin::listen::{BoundAddr, ListenError};
use crate::admin::{AdminState, LocalDomainInfo, RelationshipsView};
use crate::config::{AdminListen, LocalSource};
use crate::net::{Kind, Net};
use crate::outputs::endpoint::EndpointError;
use crate::outputs::{SinkError, SinkParts};
use crate::registry::{
    Parts as RegistryParts, Registry, RegistryError, Settings as RegistrySettings,
};
use crate::shutdown::{Ended, Shutdown};
use crate::sources::local;
use crate::sources::local::workload::WorkloadHealth;
use crate::sources::pollers::{PollerContext, Pollers};
use crate::sources::schedule::Schedule;
use crate::supervise::{Supervisor, TaskHealth};
use crate::telemetry::Metrics;
use crate::trust::data_dir::{DataDir, DataDirError};
use crate::trust::db::StoreError;
use crate::trust::policy::PolicySettings;
use crate::trust::store::TrustStore;

mod config;
pub use self::config::Config;

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The data directory could not be created or is held by another fedgw.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The trust store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A local bundle could not be loaded, was refused, or its Workload API cannot be
    /// used.
    #[error(transparent)]
    Local(#[from] local::StartError),
    /// A bundle endpoint listener could not start.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// The relationships could not be loaded (a configured file unusable, the store
    /// unreadable).
    #[error(transparent)]
    Relationships(#[from] RegistryError),
    /// The admin API could not listen.
    #[error("admin API: {0}")]
    Admin(#[from] ListenError),
    /// A sink could not start: the Envoy SDS server could not listen, a
    /// `[[sinks.files]]` directory could not be opened or written.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The open-file limit leaves no room for connections.
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    /// `[kubernetes]` could not start (kubeconfig, service account).
    #[error(transparent)]
    Kubernetes(#[from] crate::kubernetes::KubernetesError),
    /// A blocking startup step was interrupted.
    #[error("startup interrupted: {step}")]
    Interrupted {
        /// The step.
        step: &'static str,
    },
}

/// A running gateway.
#[derive(Debug)]
pub struct Running {
    /// The `https_web` endpoint's address, when configured.
    pub web_addr: Option<SocketAddr>,
    /// The `https_spiffe` endpoint's address, when configured.
    pub spiffe_addr: Option<SocketAddr>,
    /// Where the admin API listens.
    pub admin_addr: Option<BoundAddr>,
    /// Where the Envoy SDS server listens, when `[sinks.sds]` is configured.
    pub sds_addr: Option<BoundAddr>,
    /// The trust store every part reads.
    pub trust_store: TrustStore,
    /// The pollers.
    pub pollers: Pollers,
    /// Metrics.
    pub metrics: Metrics,
    /// Local trust domains and the paths they are served at.
    pub locals: Vec<(TrustDomain, String)>,
    shutdown: Shutdown,
    /// Held until the gateway has stopped: no other fedgw opens the same data_dir.
    data_dir: DataDir,
}

impl Running {
    /// The owner of every task, for parts started after [`start`] (the admin API).
    pub fn shutdown_handle(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Stop every task, waiting at most `grace`; the data directory is free again
    /// afterwards.
    pub async fn shutdown(self, grace: Duration) -> Ended {
        let ended = self.shutdown.shutdown(grace).await;
        drop(self.data_dir);
        ended
    }
}

/// Take `data_dir` (created if missing) for a gateway. Blocks nothing: the file work
/// runs on the blocking pool.
///
/// # Errors
/// [`GatewayError::DataDir`] when it cannot be created or another fedgw holds it.
pub async fn acquire_data_dir(path: &Path) -> Result<DataDir, GatewayError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || DataDir::acquire(&path))
        .await
        .map_err(|_| GatewayError::Interrupted { step: "data_dir" })?
        .map_err(GatewayError::from)
}

/// Start a gateway from a validated configuration.
///
/// # Errors
/// [`GatewayError`] naming the first part that could not start; nothing is left
/// running on error, and nothing the start made is left in `data_dir`.
pub async fn start(config: &Config) -> Result<Running, GatewayError> {
    let data_dir = acquire_data_dir(&config.data_dir).await?;
    start_in(config, data_dir).await
}

/// [`start`] in a `data_dir` already taken with [`acquire_data_dir`] (by a caller
/// that prepares files in it first, as the embedded default does with its
/// development PKI). On error everything made in it since it was taken is removed.
///
/// # Errors
/// [`GatewayError`] naming the first part that could not start.
pub async fn start_in(config: &Config, data_dir: DataDir) -> Result<Running, GatewayError> {
    let shutdown = Shutdown::new();
    match start_inner(config, shutdown.clone()).await {
        Ok(parts) => Ok(parts.into_running(shutdown, data_dir)),
        Err(err) => {
            shutdown.shutdown(Duration::from_secs(5)).await;
            // The database may close a moment later on a blocking thread; unlinking
            // its files meanwhile is harmless.
            let _undone = tokio::task::spawn_blocking(move || data_dir.undo()).await;
            Err(err)
        }
    }
}

/// What [`start_inner`] built, before it becomes a [`Running`].
struct Started {
    web_addr: Option<SocketAddr>,
    spiffe_addr: Option<SocketAddr>,
    admin_addr: Option<BoundAddr>,
    sds_addr: Option<BoundAddr>,
    trust_store: TrustStore,
    pollers: Pollers,
    metrics: Metrics,
    locals: Vec<(TrustDomain, String)>,
}

impl Started {
    fn into_running(self, shutdown: Shutdown, data_dir: DataDir) -> Running {
        Running {
            web_addr: self.web_addr,
            spiffe_addr: self.spiffe_addr,
            admin_addr: self.admin_addr,
            sds_addr: self.sds_addr,
            trust_store: self.trust_store,
            pollers: self.pollers,
            metrics: self.metrics,
            locals: self.locals,
            shutdown,
            data_dir,
        }
    }
}

async fn start_inner(config: &Config, shutdown: Shutdown) -> Result<Started, GatewayError> {
    for warning in config.warnings() {
        tracing::warn!(key = %warning.key, "configuration: {}", warning.message);
    }
    let data_dir = config.data_dir.clone();
    let settings = PolicySettings {
        sequence: config.policy.sequence,
        max_authorities: config.policy.max_authorities,
    };
    let trust_store =
        TrustStore::open_with(&data_dir.join("db"), settings, config.storage.clone()).await?;
    let metrics = trust_store.metrics().clone();
    let supervisor = Supervisor::new(shutdown.clone(), TaskHealth::new(), metrics.clone());
    // Before any listener: the open-file limit raised, the connection budget set.
    let net = Net::start(&config.net, metrics.clone(), shutdown.clone())?;

    // Local bundles: loaded before the listeners, which serve them and (https_spiffe)
    // verify their own SVID against them.
    let local::Started {
        locals,
        workload_health,
    } = local::start(
        &config.local,
        config.policy.max_document_bytes,
        &trust_store,
        &supervisor,
    )
    .await?;

    let endpoints = crate::outputs::endpoint::start(
        &config.endpoint,
        locals.clone(),
        &trust_store,
        &net,
        &supervisor,
    )
    .await?;
    let (web_addr, spiffe_addr) = (endpoints.web_addr, endpoints.spiffe_addr);

    // With a shared store the replicas share the polling: a poller polls only under
    // this replica's lease on its domain.
    let shared = trust_store.store().postgres();
    let leases = shared
        .as_ref()
        .map(|_| crate::sources::leases::Leases::new());
    let pollers = Pollers::new(
        PollerContext {
            trust_store: trust_store.clone(),
            fetcher: Fetcher::new(),
            schedule: Schedule::from(&config.polling),
            metrics: metrics.clone(),
            fetch_slots: Arc::new(tokio::sync::Semaphore::new(
                usize::try_from(config.polling.max_concurrent_fetches).unwrap_or(usize::MAX),
            )),
            supervisor: supervisor.clone(),
            leases: leases.clone(),
        },
        shutdown.clone(),
    );
    // Relationships: the configuration's ([[federation]], then the objects of
    // relationship_files), then those created through the admin API and kept in the
    // store, each polled from here on.
    let paths = config.relationship_files.clone();
    let files = tokio::task::spawn_blocking(move || crate::registry::cftd::read_files(&paths))
        .await
        .map_err(|_| GatewayError::Interrupted {
            step: "relationship files",
        })?
        .map_err(RegistryError::from)?;
    let registry = Registry::start(
        RegistryParts {
            trust_store: trust_store.clone(),
            pollers: pollers.clone(),
            view: RelationshipsView::default(),
            shutdown: shutdown.clone(),
            metrics: metrics.clone(),
        },
        RegistrySettings {
            locals: config
                .local
                .iter()
                .map(|l| l.trust_domain.clone())
                .collect(),
            max_document_bytes: config.policy.max_document_bytes,
            fetch_timeout: config.polling.fetch_timeout.duration(),
            max_trust_chain_depth: config.policy.max_trust_chain_depth,
        },
        &config.federation,
        &files,
    )
    .await?;
    // With a shared store, follow what the other replicas commit, and take part in
    // the lease rounds over every relationship this replica knows.
    if let (Some(store), Some(leases)) = (shared, leases) {
        crate::registry::follow::start(
            store.clone(),
            trust_store.clone(),
            registry.clone(),
            &supervisor,
        );
        let view = registry.view().clone();
        let wanted: crate::sources::leases::Wanted = Arc::new(move || {
            let listing = view.listing();
            let mut configured = Vec::new();
            let mut api = Vec::new();
            for (relationship, details) in listing.entries() {
                let td = relationship.trust_domain.clone();
                match details.origin {
                    // Every replica watches the same ClusterFederatedTrustDomains.
                    crate::registry::Origin::Configuration
                    | crate::registry::Origin::Kubernetes => configured.push(td),
                    crate::registry::Origin::Api => api.push(td),
                }
            }
            (configured, api)
        });
        let lease_time = config
            .storage
            .postgres
            .as_ref()
            .map_or(crate::config::storage::DEFAULT_LEASE_TIME, |pg| {
                pg.lease_time
            });
        crate::sources::leases::start(
            leases,
            store,
            lease_time.duration(),
            wanted,
            metrics.clone(),
            &supervisor,
        );
    }
    if config.local.is_empty() && registry.view().load().is_empty() {
        tracing::warn!(
            "configuration: no [[local]] trust domain and no federation relationship (none in [[federation]] or relationship_files, none created through the admin API): this gateway serves and fetches nothing until one is added, e.g. with `fedgw federation create`"
        );
    }
    // Sinks start after the local bundles and the relationships, so their first write
    // already holds them.
    let local_domains: Vec<TrustDomain> = config
        .local
        .iter()
        .map(|local| local.trust_domain.clone())
        .collect();
    let sinks = crate::outputs::start_sinks(
        &config.sinks,
        SinkParts {
            data_dir: &config.data_dir,
            locals: &local_domains,
            trust_store: &trust_store,
            metrics: &metrics,
            net: &net,
            supervisor: &supervisor,
        },
    )
    .await?;
    let sds_addr = sinks.sds_addr;
    if let Some(kubernetes) = &config.kubernetes {
        crate::kubernetes::start(
            kubernetes,
            crate::kubernetes::KubernetesParts {
                registry: &registry,
                trust_store: &trust_store,
                locals: &local_domains,
                metrics: &metrics,
                supervisor: &supervisor,
            },
        )
        .await?;
    }
    let admin_addr = start_admin(
        config,
        &workload_health,
        &trust_store,
        &pollers,
        &registry,
        &net,
        &supervisor,
    )
    .await?;
    tracing::info!(
        locals = locals.len(),
        relationships = registry.view().load().len(),
        web_addr = web_addr.map(tracing::field::display),
        spiffe_addr = spiffe_addr.map(tracing::field::display),
        admin_addr = admin_addr.as_ref().map(bound_addr),
        sds_addr = sds_addr.as_ref().map(bound_addr),
        "gateway started"
    );
    Ok(Started {
        web_addr,
        spiffe_addr,
        admin_addr,
        sds_addr,
        trust_store,
        pollers,
        metrics,
        locals,
    })
}

/// Bind the admin API over the gateway's parts.
async fn start_admin(
    config: &Config,
    workload_health: &BTreeMap<TrustDomain, WorkloadHealth>,
    trust_store: &TrustStore,
    pollers: &Pollers,
    registry: &Registry,
    net: &Net,
    supervisor: &Supervisor,
) -> Result<Option<BoundAddr>, GatewayError> {
    // The trust store's metrics are the gateway's (start_inner takes them from it).
    let metrics = trust_store.metrics();
    let shutdown = net.shutdown();
    let listen = config.admin_listen();
    let access = Access::for_listener(&listen, &config.admin);
    // Ready as soon as the admin API answers: every stored bundle is already served.
    // Not ready once shutdown begins: `/readyz` answers 503, and long polls and event
    // streams of the watch API end, so the listener's graceful stop is not held up.
    let (ready_tx, ready) = tokio::sync::watch::channel(true);
    let cancel = shutdown.token();
    shutdown.spawn(async move {
        cancel.cancelled().await;
        ready_tx.send_replace(false);
    });
    let local = config
        .local
        .iter()
        .enumerate()
        .map(|(index, local)| LocalDomainInfo {
            trust_domain: local.trust_domain.clone(),
            path: config.local_path(index).unwrap_or_else(|| "/".to_owned()),
            refresh_hint: local.refresh_hint,
            source_file: match &local.source {
                LocalSource::File { file, .. } => Some(file.clone()),
                LocalSource::Admin { .. } | LocalSource::WorkloadApi { .. } => None,
            },
            workload_api: workload_health.get(&local.trust_domain).cloned(),
        })
        .collect();
    let state = AdminState {
        trust_store: trust_store.clone(),
        metrics: metrics.clone(),
        access: access.clone(),
        local,
        relationships: registry.view().clone(),
        registry: Some(registry.clone()),
        pollers: Some(pollers.clone()),
        ready,
        schedule: Schedule::from(&config.polling),
        max_document_bytes: config.policy.max_document_bytes,
        watchers: crate::admin::watchers::Watchers::new(
            config.admin.watch,
            metrics.clone(),
            shutdown.clone(),
        ),
        tasks: supervisor.health().clone(),
        body_limits: config.admin.limits.body_limits(),
    };
    let limits = config.admin.limits.resolve(Kind::Admin);
    if let (AdminListen::Tcp(tcp), Some(files), Access::Tls(tls_access)) =
        (&listen, &config.admin.tls, &access)
    {
        let bound = crate::admin::listen::tls::bind(*tcp, files, tls_access, trust_store).await?;
        let addr = bound.local_addr().ok().map(BoundAddr::Tcp);
        shutdown.spawn(bound.serve(state, limits, net.clone()));
        return Ok(addr);
    }
    let bound = crate::admin::listen::bind(&listen, &access).await?;
    let addr = bound.local_addr().ok();
    let router = crate::admin::router(state);
    shutdown.spawn(bound.serve(router, limits, net.clone()));
    Ok(addr)
}

/// Run a gateway until SIGINT or SIGTERM, then shut down gracefully.
///
/// # Errors
/// [`GatewayError`] if it cannot start.
pub async fn run(config: &Config) -> Result<(), GatewayError> {
    let data_dir = acquire_data_dir(&config.data_dir).await?;
    run_in(config, data_dir).await
}

/// [`run`] in a `data_dir` already taken ([`start_in`]).
///
/// # Errors
/// [`GatewayError`] if it cannot start.
pub async fn run_in(config: &Config, data_dir: DataDir) -> Result<(), GatewayError> {
    let running = start_in(config, data_dir).await?;
    running.shutdown.signalled().await;
    tracing::info!("shutting down");
    let ended = running.shutdown(crate::shutdown::DEFAULT_GRACE).await;
    match ended {
        Ended::Clean => tracing::info!("stopped"),
        Ended::GraceExpired => tracing::warn!(
            "stopped: the grace period ran out before every task ended; the rest were abandoned"
        ),
    }
    Ok(())
}

/// A bound admin or SDS address as logged: `unix:/path` or `host:port`.
fn bound_addr(addr: &BoundAddr) -> String {
    match addr {
        BoundAddr::Unix(path) => format!("unix:{}", path.display()),
        BoundAddr::Tcp(addr) => addr.to_string(),
    }
}
