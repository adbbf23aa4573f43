//! The elected replica's writing: ClusterTrustBundles and ConfigMaps from the trust
//! store's snapshot, and each ClusterFederatedTrustDomain's status from the fetch
//! statuses.
//!
//! Owns making the API match: it writes when the trust store changes, when the
//! objects change, and every two seconds (fetch statuses change without a new
//! bundle); it applies only what differs from what it last wrote, and lists its
//! ClusterTrustBundles again every minute, so an object edited or deleted by hand is
//! put back. It never changes or deletes an object without the
//! `app.kubernetes.io/managed-by: fedgw` label: such an object is reported once and
//! left as it is. Deletions carry the object's UID as a precondition.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::ClusterTrustBundle;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, Preconditions,
};
use kube::{Api, Client};
use spiffe_federation::TrustDomain;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::time::Instant;

use super::config::KubernetesConfig;
use super::objects::{self, LABEL_MANAGED_BY, MANAGED_BY, StatusInput};
use super::relationships::{self, Objects};
use super::{FIELD_MANAGER, status_code, within};
use crate::telemetry::{Metrics, families};
use crate::trust::store::Snapshot;
use crate::trust::store::TrustStore;

/// How often statuses are compared with the fetch statuses.
const TICK: Duration = Duration::from_secs(2);
/// How often the owned ClusterTrustBundles are listed again.
const RESYNC: Duration = Duration::from_secs(60);
/// How often one failing operation is logged at warn level.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The writer's parts.
pub(crate) struct Writer {
    pub(crate) client: Client,
    pub(crate) config: KubernetesConfig,
    pub(crate) trust_store: TrustStore,
    pub(crate) locals: Vec<TrustDomain>,
    pub(crate) metrics: Metrics,
    pub(crate) request_timeout: Duration,
    /// When each failing operation was last logged at warn level.
    pub(crate) warned: std::sync::Mutex<BTreeMap<String, Instant>>,
}

/// What this replica wrote since it was elected.
#[derive(Debug, Default)]
struct Written {
    /// Owned ClusterTrustBundles by name (UID and PEM); `None` until listed.
    bundles: Option<BTreeMap<String, Owned>>,
    /// ConfigMaps by namespace and name: the PEM written.
    maps: BTreeMap<(String, String), String>,
    /// Objects found without fedgw's label, reported once.
    refused: BTreeSet<String>,
}

#[derive(Debug, Clone)]
struct Owned {
    uid: Option<String>,
    pem: String,
}

/// Write while elected, until the gateway stops.
pub(crate) async fn run(
    writer: Arc<Writer>,
    mut leader: watch::Receiver<bool>,
    mut objects: watch::Receiver<Arc<Objects>>,
) {
    let mut feed = writer.trust_store.subscribe();
    // Without the watch (`relationships = false`) nothing ever sends objects.
    let mut watching = true;
    loop {
        while !*leader.borrow_and_update() {
            if leader.changed().await.is_err() {
                return;
            }
        }
        let mut written = Written::default();
        let mut listed_at: Option<Instant> = None;
        while *leader.borrow() {
            if listed_at.is_none_or(|at| at.elapsed() >= RESYNC) {
                written.bundles = None;
                written.maps.clear();
                listed_at = Some(Instant::now());
            }
            let current = Arc::clone(&objects.borrow_and_update());
            feed.borrow_and_update();
            writer.write(&mut written, &current, &leader).await;
            tokio::select! {
                changed = leader.changed() => if changed.is_err() { return },
                changed = feed.changed() => if changed.is_err() { return },
                changed = objects.changed(), if watching => watching = changed.is_ok(),
                () = tokio::time::sleep(TICK) => {}
            }
        }
    }
}

impl Writer {
    async fn write(
        &self,
        written: &mut Written,
        current: &Objects,
        leader: &watch::Receiver<bool>,
    ) {
        let snapshot = self.trust_store.snapshot();
        if let Some(ctb) = &self.config.cluster_trust_bundles {
            let allow = ctb.trust_domains.as_ref();
            let wanted = self.pems(&snapshot, ctb.include_local, allow);
            self.bundles(written, &ctb.signer_name, wanted, leader)
                .await;
        }
        for map in &self.config.config_maps {
            if !*leader.borrow() {
                return;
            }
            let pem: String = self
                .pems(&snapshot, map.include_local, map.trust_domains.as_ref())
                .into_values()
                .collect();
            self.config_map(written, &map.namespace, &map.name, &map.key, pem)
                .await;
        }
        if self.config.status && current.listed {
            self.statuses(current, &snapshot, leader).await;
        }
    }

    /// Each selected trust domain's X.509 authorities as PEM (domains with none are
    /// left out: a ClusterTrustBundle must hold a certificate).
    fn pems(
        &self,
        snapshot: &Snapshot,
        include_local: bool,
        allow: Option<&Vec<TrustDomain>>,
    ) -> BTreeMap<TrustDomain, String> {
        snapshot
            .domains
            .iter()
            .filter(|(td, _)| include_local || !self.locals.contains(td))
            .filter(|(td, _)| allow.is_none_or(|allow| allow.contains(td)))
            .map(|(td, entry)| (td.clone(), entry.bundle.to_pem()))
            .filter(|(_, pem)| !pem.is_empty())
            .collect()
    }

    fn count(&self, kind: &str, result: &str) {
        self.metrics.inc(
            families::KUBERNETES_WRITES,
            &[("kind", kind), ("result", result)],
            1.0,
        );
    }

    async fn bundles(
        &self,
        written: &mut Written,
        signer: &str,
        wanted: BTreeMap<TrustDomain, String>,
        leader: &watch::Receiver<bool>,
    ) {
        let api: Api<ClusterTrustBundle> = Api::all(self.client.clone());
        if written.bundles.is_none() {
            match self.list_owned(&api, signer).await {
                Ok(owned) => written.bundles = Some(owned),
                Err(err) => {
                    self.failed(
                        "list ClusterTrustBundles",
                        &format!("listing ClusterTrustBundles failed: {err}"),
                    );
                    self.count("cluster_trust_bundle", "failed");
                    return;
                }
            }
        }
        let Some(owned) = written.bundles.as_mut() else {
            return;
        };
        let mut names = BTreeSet::new();
        for (td, pem) in &wanted {
            let name = objects::cluster_trust_bundle_name(signer, td);
            names.insert(name.clone());
            if owned.get(&name).is_some_and(|o| &o.pem == pem) {
                continue;
            }
            if !*leader.borrow() {
                return;
            }
            if !owned.contains_key(&name) {
                match self.within(api.get_opt(&name)).await {
                    Ok(Some(found)) if !objects::owned(found.metadata.labels.as_ref()) => {
                        refuse(&mut written.refused, "ClusterTrustBundle", &name);
                        self.count("cluster_trust_bundle", "refused_unowned");
                        continue;
                    }
                    Ok(_) => {}
                    Err(err) => {
                        self.failed(
                            &format!("read {name}"),
                            &format!("reading ClusterTrustBundle {name} failed: {err}"),
                        );
                        self.count("cluster_trust_bundle", "failed");
                        continue;
                    }
                }
            }
            let body = objects::cluster_trust_bundle(signer, td, pem);
            match self
                .within(api.patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER),
                    &Patch::Apply(&body),
                ))
                .await
            {
                Ok(applied) => {
                    tracing::info!(name = %name, trust_domain = %td, "ClusterTrustBundle written");
                    self.count("cluster_trust_bundle", "applied");
                    owned.insert(
                        name,
                        Owned {
                            uid: applied.metadata.uid,
                            pem: pem.clone(),
                        },
                    );
                }
                Err(err) => {
                    self.failed(
                        &format!("write {name}"),
                        &format!("writing ClusterTrustBundle {name} failed: {err}"),
                    );
                    self.count("cluster_trust_bundle", "failed");
                }
            }
        }
        let gone: Vec<(String, Owned)> = owned
            .iter()
            .filter(|(name, _)| !names.contains(*name))
            .map(|(name, o)| (name.clone(), o.clone()))
            .collect();
        for (name, old) in gone {
            if !*leader.borrow() {
                return;
            }
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: old.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match self.within(api.delete(&name, &params)).await {
                Ok(_) => {
                    tracing::info!(name = %name, "ClusterTrustBundle deleted: its trust domain is no longer trusted");
                    self.count("cluster_trust_bundle", "deleted");
                    owned.remove(&name);
                }
                // Gone already, or replaced by another object of that name.
                Err(err) if matches!(status_code(&err), Some(404 | 409)) => {
                    owned.remove(&name);
                }
                Err(err) => {
                    self.failed(
                        &format!("delete {name}"),
                        &format!("deleting ClusterTrustBundle {name} failed: {err}"),
                    );
                    self.count("cluster_trust_bundle", "failed");
                }
            }
        }
    }

    /// The ClusterTrustBundles fedgw owns for `signer`.
    async fn list_owned(
        &self,
        api: &Api<ClusterTrustBundle>,
        signer: &str,
    ) -> Result<BTreeMap<String, Owned>, kube::Error> {
        let params = ListParams::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
        let list = self.within(api.list(&params)).await?;
        Ok(list
            .items
            .into_iter()
            .filter(|ctb| ctb.spec.signer_name.as_deref() == Some(signer))
            .filter_map(|ctb| {
                Some((
                    ctb.metadata.name?,
                    Owned {
                        uid: ctb.metadata.uid,
                        pem: ctb.spec.trust_bundle,
                    },
                ))
            })
            .collect())
    }

    async fn config_map(
        &self,
        written: &mut Written,
        namespace: &str,
        name: &str,
        key: &str,
        pem: String,
    ) {
        let id = (namespace.to_owned(), name.to_owned());
        if written.maps.get(&id) == Some(&pem) {
            return;
        }
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let shown = format!("{namespace}/{name}");
        match self.within(api.get_opt(name)).await {
            Ok(Some(found)) if !objects::owned(found.metadata.labels.as_ref()) => {
                refuse(&mut written.refused, "ConfigMap", &shown);
                self.count("config_map", "refused_unowned");
                return;
            }
            // Already what it should be (a resync, or another replica wrote it).
            Ok(Some(found)) if found.data.as_ref().and_then(|data| data.get(key)) == Some(&pem) => {
                written.maps.insert(id, pem);
                return;
            }
            Ok(_) => {}
            Err(err) => {
                self.failed(
                    &format!("read {shown}"),
                    &format!("reading ConfigMap {shown} failed: {err}"),
                );
                self.count("config_map", "failed");
                return;
            }
        }
        let body = objects::config_map(namespace, name, key, &pem);
        match self
            .within(api.patch(
                name,
                &PatchParams::apply(FIELD_MANAGER),
                &Patch::Apply(&body),
            ))
            .await
        {
            Ok(_) => {
                tracing::info!(config_map = %shown, "ConfigMap written");
                self.count("config_map", "applied");
                written.maps.insert(id, pem);
            }
            Err(err) => {
                self.failed(
                    &format!("write {shown}"),
                    &format!("writing ConfigMap {shown} failed: {err}"),
                );
                self.count("config_map", "failed");
            }
        }
    }

    async fn statuses(
        &self,
        current: &Objects,
        snapshot: &Snapshot,
        leader: &watch::Receiver<bool>,
    ) {
        let api: Api<DynamicObject> =
            Api::all_with(self.client.clone(), &relationships::resource());
        let resource: ApiResource = relationships::resource();
        let fetch = self.trust_store.statuses();
        let now = OffsetDateTime::now_utc();
        for (name, seen) in &current.items {
            let polled = seen.outcome.is_ok();
            let td = seen.trust_domain.as_ref();
            let input = StatusInput {
                generation: seen.generation,
                trust_domain: td,
                outcome: &seen.outcome,
                fetch: td.filter(|_| polled).and_then(|td| fetch.get(td)),
                stored: td
                    .filter(|_| polled)
                    .and_then(|td| snapshot.get(td))
                    .map(|entry| entry.sequence),
                current: seen.status.as_ref(),
            };
            let status = objects::status(&input, now);
            if seen.status.as_ref() == Some(&status) {
                continue;
            }
            if !*leader.borrow() {
                return;
            }
            let body = serde_json::json!({
                "apiVersion": resource.api_version,
                "kind": resource.kind,
                "status": status,
            });
            let params = PatchParams::apply(FIELD_MANAGER).force();
            match self
                .within(api.patch_status(name, &params, &Patch::Apply(&body)))
                .await
            {
                Ok(_) => self.count("status", "applied"),
                Err(err) if status_code(&err) == Some(404) => {}
                Err(err) => {
                    self.failed(
                        &format!("status {name}"),
                        &format!(
                            "writing the status of ClusterFederatedTrustDomain {name} failed: {err}"
                        ),
                    );
                    self.count("status", "failed");
                }
            }
        }
    }

    /// Log a failed write: at warn level once a minute per operation (they are retried
    /// every two seconds), at debug level in between.
    fn failed(&self, operation: &str, message: &str) {
        let now = Instant::now();
        let loud = {
            let mut last = self
                .warned
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let loud = last
                .get(operation)
                .is_none_or(|at| now.duration_since(*at) >= WARN_EVERY);
            if loud {
                last.insert(operation.to_owned(), now);
            }
            loud
        };
        if loud {
            tracing::warn!("{message}; retrying (repeats are logged at debug level for a minute)");
        } else {
            tracing::debug!("{message}; retrying");
        }
    }

    async fn within<T>(
        &self,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, kube::Error> {
        within(self.request_timeout, call).await
    }
}

/// Report once that `name` is not fedgw's and is left alone.
fn refuse(refused: &mut BTreeSet<String>, kind: &str, name: &str) {
    if refused.insert(format!("{kind} {name}")) {
        tracing::warn!(
            kind,
            name,
            "an object of this name exists without the label app.kubernetes.io/managed-by=fedgw: fedgw leaves it alone and does not write this bundle there; delete it or add the label to let fedgw manage it"
        );
    }
}
