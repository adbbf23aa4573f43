//! Starting the local bundle sources of the configuration's `[[local]]` domains: a
//! file is loaded (refusing to start on a bad one), submitted, then watched; a
//! Workload API is followed, its first answer awaited a while so that a reachable
//! agent's bundle is stored before the listeners bind. Each delivers through a
//! [`Delivery`] under the supervisor.
//!
//! Owns that order. It does not own reading files or the Workload API
//! ([`super::load`], [`super::workload`]) or acceptance (the trust store).

use std::collections::BTreeMap;
use std::sync::Arc;

use spiffe_federation::TrustDomain;

use super::workload::{BundleFollower, FIRST_ANSWER_WAIT, WorkloadHealth};
use super::{Delivery, LocalSourceError, Origin};
use crate::config::{LocalDomain, LocalSource};
use crate::supervise::Supervisor;
use crate::trust::policy::Source;
use crate::trust::store::{SubmitError, TrustStore};

/// Why the local sources could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A local bundle file could not be loaded.
    #[error(transparent)]
    Load(#[from] LocalSourceError),
    /// A local bundle was refused.
    #[error("local bundle of {trust_domain} refused: {source}")]
    Refused {
        /// The local trust domain.
        trust_domain: TrustDomain,
        /// Why.
        source: SubmitError,
    },
    /// A Workload API source could not be set up, naming the configuration key.
    #[error("{key}: {reason}")]
    WorkloadApi {
        /// The configuration key.
        key: String,
        /// Why.
        reason: String,
    },
}

/// What the local sources started.
#[derive(Debug, Default)]
pub struct Started {
    /// Each local domain with the path it is served at, in configuration order.
    pub locals: Vec<(TrustDomain, String)>,
    /// The health of the domains followed on a Workload API.
    pub workload_health: BTreeMap<TrustDomain, WorkloadHealth>,
}

/// Start the sources of the `[[local]]` domains, in configuration order; a bundle
/// document may be at most `max_document_bytes` (`policy.max_document_bytes`).
///
/// # Errors
/// [`StartError`] naming the domain, file or key at fault.
pub async fn start(
    domains: &[LocalDomain],
    max_document_bytes: usize,
    trust_store: &TrustStore,
    supervisor: &Supervisor,
) -> Result<Started, StartError> {
    let mut locals = Vec::new();
    let mut workload_health = BTreeMap::new();
    for (index, local) in domains.iter().enumerate() {
        let path = local.served_path(index);
        locals.push((local.trust_domain.clone(), path));
        let max = max_document_bytes;
        let (file, format) = match &local.source {
            LocalSource::File { file, format } => (file, *format),
            LocalSource::Admin { .. } => continue,
            LocalSource::WorkloadApi {
                workload_api_socket,
            } => {
                let health = follow_workload_api(
                    trust_store,
                    supervisor,
                    local,
                    index,
                    workload_api_socket,
                    max,
                )
                .await?;
                workload_health.insert(local.trust_domain.clone(), health);
                continue;
            }
        };
        let loaded = super::load(file, format, &local.trust_domain, max).await?;
        let delivery = Delivery {
            trust_store: trust_store.clone(),
            trust_domain: local.trust_domain.clone(),
            refresh_hint: local.refresh_hint.duration(),
            source: Source::LocalFile { path: file.clone() },
            origin: Origin::File,
        };
        delivery
            .accept(loaded)
            .await
            .map_err(|source| StartError::Refused {
                trust_domain: local.trust_domain.clone(),
                source,
            })?;
        let on_event = move |event| {
            let delivery = delivery.clone();
            async move { delivery.handle(event).await }
        };
        // Supervised: a panic restarts the watch, which reads the file afresh.
        let (file, td, cancel) = (
            file.clone(),
            local.trust_domain.clone(),
            supervisor.shutdown().token(),
        );
        supervisor.spawn(
            format!("local bundle file {td}"),
            cancel.clone(),
            move || {
                super::watch(
                    file.clone(),
                    format,
                    td.clone(),
                    max,
                    super::DEFAULT_CHECK_INTERVAL,
                    cancel.clone(),
                    on_event.clone(),
                )
            },
        );
    }
    Ok(Started {
        locals,
        workload_health,
    })
}

/// Start following the Workload API of local domain `local` (the `index`th), and
/// wait for its first answer, so that a reachable agent's bundle is stored before the
/// listeners bind. An unreachable agent does not stop the start: the stored bundle,
/// if any, keeps serving, and the status shows the failure.
async fn follow_workload_api(
    trust_store: &TrustStore,
    supervisor: &Supervisor,
    local: &LocalDomain,
    index: usize,
    socket: &str,
    max_bytes: usize,
) -> Result<WorkloadHealth, StartError> {
    let endpoint =
        spiffe::transport::Endpoint::parse(socket).map_err(|err| StartError::WorkloadApi {
            key: format!("local[{index}].source.workload_api_socket"),
            reason: format!("{socket:?}: {err}"),
        })?;
    let health = WorkloadHealth::new(socket);
    let follower = BundleFollower {
        socket: socket.to_owned(),
        endpoint,
        trust_domain: local.trust_domain.clone(),
        max_bytes,
        health: health.clone(),
    };
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let first = Arc::new(std::sync::Mutex::new(Some(first_tx)));
    let delivery = Delivery {
        trust_store: trust_store.clone(),
        trust_domain: local.trust_domain.clone(),
        refresh_hint: local.refresh_hint.duration(),
        source: Source::WorkloadApi {
            socket: socket.to_owned(),
        },
        origin: Origin::WorkloadApi,
    };
    let cancel = supervisor.shutdown().token();
    let token = cancel.clone();
    supervisor.spawn(
        format!("workload API source of {}", local.trust_domain),
        cancel,
        move || {
            let first = first.lock().ok().and_then(|mut first| first.take());
            let delivery = delivery.clone();
            follower.clone().run(token.clone(), first, move |event| {
                let delivery = delivery.clone();
                async move { delivery.handle(event).await }
            })
        },
    );
    let _answered = tokio::time::timeout(FIRST_ANSWER_WAIT, first_rx).await;
    Ok(health)
}
