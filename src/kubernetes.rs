//! Kubernetes-native federation (`[kubernetes]`): ClusterFederatedTrustDomain objects
//! in as relationships, one ClusterTrustBundle per trusted trust domain and
//! ConfigMaps of PEM bundles out, federation health written back on each object's
//! status, and a Lease electing the one replica that writes.
//!
//! Every replica watches the ClusterFederatedTrustDomains ([`relationships`]) and
//! polls and serves as usual; only the Lease's holder ([`lease`]) writes to the API
//! ([`writer`]). What fedgw writes is server-side applied under the field manager
//! `fedgw` and labelled `app.kubernetes.io/managed-by: fedgw`; an object without that
//! label is never changed or deleted, whatever its name.
//!
//! It does not own relationships' rules and polling (the [`Registry`]), bundles (the
//! [`TrustStore`]), or the object shapes of a ClusterFederatedTrustDomain
//! ([`crate::registry::cftd`]).

pub mod config;
mod lease;
pub mod objects;
mod relationships;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use spiffe_federation::TrustDomain;
use tokio::sync::watch;

pub use self::config::KubernetesConfig;
use crate::registry::Registry;
use crate::supervise::Supervisor;
use crate::telemetry::Metrics;
use crate::trust::store::TrustStore;

/// The field manager of everything fedgw applies.
pub const FIELD_MANAGER: &str = "fedgw";

/// Why `[kubernetes]` could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KubernetesError {
    /// The kubeconfig could not be read or used.
    #[error("kubernetes.kubeconfig {path}: {reason}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Not in a pod (no service account) and no kubeconfig given.
    #[error(
        "kubernetes: no kubeconfig given and not running in a pod ({0}); set kubernetes.kubeconfig"
    )]
    InCluster(String),
    /// The client could not be built from the configuration.
    #[error("kubernetes: {0}")]
    Client(String),
}

/// What `[kubernetes]` drives.
#[derive(Debug, Clone, Copy)]
pub struct KubernetesParts<'a> {
    /// The relationships the ClusterFederatedTrustDomains become.
    pub registry: &'a Registry,
    /// The bundles written out.
    pub trust_store: &'a TrustStore,
    /// The local trust domains (not written unless asked).
    pub locals: &'a [TrustDomain],
    /// Metrics.
    pub metrics: &'a Metrics,
    /// The owner of the tasks.
    pub supervisor: &'a Supervisor,
}

/// Connect (lazily: nothing is sent yet) and start the watch, the election and the
/// writer under the supervisor.
///
/// # Errors
/// [`KubernetesError`] when the kubeconfig or the pod's service account cannot be
/// used.
pub async fn start(
    config: &KubernetesConfig,
    parts: KubernetesParts<'_>,
) -> Result<(), KubernetesError> {
    let client = client(config).await?;
    let request_timeout = config.request_timeout.duration();
    let cancel = parts.supervisor.shutdown().token();

    let (leader_tx, leader) = watch::channel(false);
    let election = Arc::new(lease::Settings {
        api: kube::Api::namespaced(client.clone(), &config.lease.namespace),
        name: config.lease.name.clone(),
        identity: identity(config.lease.identity.as_deref()),
        duration: config.lease.duration.duration(),
        request_timeout,
        metrics: parts.metrics.clone(),
    });
    tracing::info!(lease = %format!("{}/{}", config.lease.namespace, config.lease.name), identity = %election.identity, "taking part in the Kubernetes writer election");
    parts
        .metrics
        .set(crate::telemetry::families::KUBERNETES_LEADER, &[], 0.0);
    {
        let leader_tx = leader_tx.clone();
        let cancel_run = cancel.clone();
        // Not stopped from outside: when the gateway stops, the election ends itself
        // after giving the lease up (bounded), so the next replica takes over at once.
        parts.supervisor.spawn(
            "kubernetes lease".to_owned(),
            tokio_util::sync::CancellationToken::new(),
            move || lease::run(Arc::clone(&election), leader_tx.clone(), cancel_run.clone()),
        );
    }

    let (objects_tx, objects) = watch::channel(Arc::new(relationships::Objects::default()));
    if config.relationships {
        let watch = relationships::Watch {
            client: client.clone(),
            selector: config.relationship_selector.clone(),
            registry: parts.registry.clone(),
            objects: objects_tx,
        };
        let watch = Arc::new(watch);
        parts.supervisor.spawn(
            "kubernetes ClusterFederatedTrustDomain watch".to_owned(),
            cancel.clone(),
            move || relationships::run(Arc::clone(&watch)),
        );
    }

    let writer = Arc::new(writer::Writer {
        client,
        config: config.clone(),
        trust_store: parts.trust_store.clone(),
        locals: parts.locals.to_vec(),
        metrics: parts.metrics.clone(),
        request_timeout,
        warned: std::sync::Mutex::default(),
    });
    parts
        .supervisor
        .spawn("kubernetes writer".to_owned(), cancel, move || {
            writer::run(Arc::clone(&writer), leader.clone(), objects.clone())
        });
    Ok(())
}

/// A client for the kubeconfig's cluster, or the pod's own.
async fn client(config: &KubernetesConfig) -> Result<Client, KubernetesError> {
    let mut kube_config = match &config.kubeconfig {
        Some(path) => {
            let shown = path.display().to_string();
            let fail = |reason: String| KubernetesError::Kubeconfig {
                path: shown.clone(),
                reason,
            };
            let file = path.clone();
            let kubeconfig = tokio::task::spawn_blocking(move || Kubeconfig::read_from(&file))
                .await
                .map_err(|_| fail("reading was interrupted".to_owned()))?
                .map_err(|err| fail(err.to_string()))?;
            let options = KubeConfigOptions {
                context: config.context.clone(),
                ..KubeConfigOptions::default()
            };
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|err| fail(err.to_string()))?
        }
        // Reads the service account's token and CA files: off the reactor.
        None => tokio::task::spawn_blocking(kube::Config::incluster)
            .await
            .map_err(|_| KubernetesError::InCluster("interrupted".to_owned()))?
            .map_err(|err| KubernetesError::InCluster(err.to_string()))?,
    };
    kube_config.connect_timeout = Some(config.request_timeout.duration());
    Client::try_from(kube_config).map_err(|err| KubernetesError::Client(err.to_string()))
}

/// This replica's name in the Lease: the configured one, or the pod's (or host's)
/// name with a random suffix, so that a restarted process never passes for its
/// predecessor.
fn identity(configured: Option<&str>) -> String {
    if let Some(identity) = configured {
        return identity.to_owned();
    }
    let base = std::env::var("POD_NAME")
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .filter(|name| !name.is_empty())
        })
        .unwrap_or_else(|| "fedgw".to_owned());
    let suffix: u32 = rand::random();
    format!("{base}_{suffix:08x}")
}

/// Run one API call within `limit`.
async fn within<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(kube::Error::Service(Box::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "no answer from the Kubernetes API within {} s",
                limit.as_secs()
            ),
        )))),
    }
}

/// The HTTP status of an API error.
fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}
