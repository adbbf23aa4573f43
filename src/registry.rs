//! The federation relationship registry: which foreign trust domains this gateway
//! fetches, and the single writer of that set.
//!
//! Relationships have two origins. Those of the configuration file (`[[federation]]`
//! and the ClusterFederatedTrustDomain objects of `relationship_files`, [`cftd`];
//! origin [`Origin::Configuration`]) are read-only through the API; those created
//! through the admin API (origin [`Origin::Api`], body [`RelationshipSpec`]) are kept
//! in the store's `relationships` keyspace (as its own record type), flushed before they are announced, and
//! polled again after a restart. When both name the same trust domain the
//! configuration's wins and a warning is logged; the stored one is kept, unused.
//!
//! Every change is serialised (one writer), runs to its end even if the caller goes
//! away, and goes in this order: check, persist with its audit record (who, what, the
//! relationship's JSON before and after), start, stop or replace the poller, then
//! publish a new [`Listing`] to the admin API's [`RelationshipsView`]. Deleting one
//! (POLL-4) stops its poller and waits for it, removes its bundle and fetch status
//! through the [`TrustStore`] (audited there), then removes it from the store. Every
//! listing carries each relationship's trust chain ([`chain`], SPF-9, SEC-5).
//!
//! It does not own fetching (the [`Pollers`]), bundle storage (the [`TrustStore`]),
//! the shape of a relationship and the rules it must follow ([`crate::relationship`])
//! or the HTTP shapes (`admin/routes_relationships.rs`).

pub mod cftd;
pub mod chain;
pub mod follow;
mod listing;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use spiffe_federation::TrustDomain;
use time::OffsetDateTime;
use tokio::sync::Mutex;

use self::cftd::FileObject;
use self::chain::Link;
pub use self::listing::{Details, Listed, Listing, RelationshipsView};
use crate::config::{self, ConfigError};
pub use crate::relationship::RelationshipSpec;
use crate::relationship::{Limits, Refused, Relationship, RelationshipError};
use crate::shutdown::Shutdown;
use crate::sources::pollers::Pollers;
use crate::telemetry::Metrics;
use crate::trust::db::{
    AuditAction, AuditRecord, RelationshipRecord, StoreError, StoredRelationship,
};
use crate::trust::store::TrustStore;

/// Where a relationship comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The configuration file's `[[federation]]`: read-only through the API.
    Configuration,
    /// Created through the admin API and kept in the store.
    Api,
    /// A ClusterFederatedTrustDomain object of the Kubernetes API (`[kubernetes]`):
    /// read-only through the admin API, changed by editing the object.
    Kubernetes,
}

/// Why a relationship change was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The relationship breaks a rule (FED-4, SPF-2, WEB-1, EXT-7); names the field.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// Its material (bootstrap bundle, extra roots) is unusable, or a configured file
    /// cannot be read.
    #[error(transparent)]
    Material(#[from] RelationshipError),
    /// A relationship with this trust domain exists already.
    #[error("a relationship with {trust_domain} exists already ({})", describe_origin(*.origin))]
    AlreadyExists {
        /// The trust domain.
        trust_domain: TrustDomain,
        /// Where the existing one comes from.
        origin: Origin,
    },
    /// No relationship with this trust domain.
    #[error("no federation relationship with {trust_domain}")]
    NotFound {
        /// The trust domain.
        trust_domain: TrustDomain,
    },
    /// The relationship comes from the configuration file, which the API does not
    /// change.
    #[error(
        "the relationship with {trust_domain} is managed in the configuration file ({place}); edit it there and restart the gateway"
    )]
    ManagedInConfiguration {
        /// The trust domain.
        trust_domain: TrustDomain,
        /// Where: `federation[N]`, or a `relationship_files` entry and its document.
        place: String,
    },
    /// The relationship is a ClusterFederatedTrustDomain object of the Kubernetes
    /// API, which the admin API does not change.
    #[error(
        "the relationship with {trust_domain} is managed in Kubernetes (ClusterFederatedTrustDomain {name:?}); edit or delete that object"
    )]
    ManagedInKubernetes {
        /// The trust domain.
        trust_domain: TrustDomain,
        /// The object's name.
        name: String,
    },
    /// A replacement names another trust domain than the one it replaces.
    #[error("the body's trust_domain {body} differs from {path} in the path")]
    TrustDomainMismatch {
        /// The trust domain in the path.
        path: TrustDomain,
        /// The trust domain in the body.
        body: TrustDomain,
    },
    /// Other relationships' `https_spiffe` endpoints are authenticated by this trust
    /// domain's bundle; deleting it would leave them unable to connect.
    #[error(
        "the bundle of {trust_domain} authenticates the endpoints of {}; delete or update those first, or force the deletion",
        list(.dependents)
    )]
    InUse {
        /// The trust domain.
        trust_domain: TrustDomain,
        /// The relationships that depend on it.
        dependents: Vec<TrustDomain>,
    },
    /// Storage failed; nothing was announced.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A blocking step or the change's task ended early (the gateway is stopping).
    #[error("relationship change interrupted: {step}")]
    Interrupted {
        /// The step.
        step: &'static str,
    },
}

/// What the registry needs to know about the gateway.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The trust domains this gateway serves (EXT-7).
    pub locals: BTreeSet<TrustDomain>,
    /// `policy.max_document_bytes`: the limit on fetched bundles and inline material.
    pub max_document_bytes: usize,
    /// `polling.fetch_timeout`.
    pub fetch_timeout: Duration,
    /// `policy.max_trust_chain_depth` (SPF-9, SEC-5).
    pub max_trust_chain_depth: usize,
}

impl Settings {
    fn limits(&self) -> Limits {
        Limits {
            max_document_bytes: self.max_document_bytes,
            fetch_timeout: self.fetch_timeout,
        }
    }
}

impl From<Refused> for RegistryError {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Invalid(err) => Self::Invalid(err),
            Refused::Material(err) => Self::Material(err),
        }
    }
}

/// The parts of the gateway the registry drives.
#[derive(Debug, Clone)]
pub struct Parts {
    /// Bundles (removed on delete) and the store (relationships, audit).
    pub trust_store: TrustStore,
    /// The pollers it starts and stops.
    pub pollers: Pollers,
    /// Where it publishes each new listing.
    pub view: RelationshipsView,
    /// The owner of the tasks changes run in.
    pub shutdown: Shutdown,
    /// Where `fedgw_relationships{origin}` is set.
    pub metrics: Metrics,
}

/// The registry; cloning is cheap and every clone is the same registry.
#[derive(Debug, Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    parts: Parts,
    settings: Settings,
    /// The current set; the lock is held for a whole change (the single writer).
    entries: Mutex<Entries>,
}

/// A relationship of the configuration: a `[[federation]]` table or an object of a
/// `relationship_files` entry.
#[derive(Debug, Clone)]
struct Configured {
    /// The relationship.
    relationship: Relationship,
    /// Where it is written, for refusals.
    place: String,
}

#[derive(Debug, Default)]
struct Entries {
    /// In configuration order: `[[federation]]`, then `relationship_files`.
    configured: Vec<Configured>,
    /// Created through the API and active (not shadowed by the configuration).
    api: BTreeMap<TrustDomain, Relationship>,
    /// ClusterFederatedTrustDomain objects of the Kubernetes API, by trust domain.
    kubernetes: BTreeMap<TrustDomain, Watched>,
}

/// A relationship of a ClusterFederatedTrustDomain object.
#[derive(Debug, Clone)]
struct Watched {
    relationship: Relationship,
    /// The object's name.
    name: String,
}

/// A ClusterFederatedTrustDomain object as the registry is given it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesObject {
    /// Its `metadata.name`.
    pub name: String,
    /// The relationship it describes.
    pub spec: RelationshipSpec,
}

/// What became of each object given to [`Registry::sync_kubernetes`], by name:
/// polled, or refused and why.
pub type KubernetesOutcome = BTreeMap<String, Result<(), String>>;

impl Registry {
    /// Resolve and poll the configured relationships (`[[federation]]`, then the
    /// objects of `relationship_files`, read beforehand with
    /// [`cftd::read_files`]), then load, resolve and poll the
    /// stored API ones (skipping, with a logged warning or error, one that a
    /// configured relationship shadows or that no longer passes the rules), and
    /// publish the first listing.
    ///
    /// # Errors
    /// [`RegistryError`] when a configured relationship's files cannot be used, a
    /// file's object repeats a `[[federation]]` trust domain or breaks the rules, or
    /// the store cannot be read; nothing is left polling then.
    pub async fn start(
        parts: Parts,
        settings: Settings,
        configured: &[config::FederationEntry],
        files: &[FileObject],
    ) -> Result<Self, RegistryError> {
        let limits = settings.limits();
        let mut entries = Entries::default();
        for (index, entry) in configured.iter().enumerate() {
            let entry = entry.clone();
            let relationship = blocking("relationships", move || {
                Relationship::from_entry(&entry, limits)
            })
            .await??;
            entries.configured.push(Configured {
                relationship,
                place: format!("federation[{index}]"),
            });
        }
        // From the database, or from the last-known-good copy while it is away.
        let stored = parts.trust_store.stored_relationships().await?;
        for found in files {
            let spec = &found.object.spec;
            let td = &spec.trust_domain;
            let invalid = |reason: String| {
                RegistryError::Invalid(ConfigError::Invalid {
                    key: format!("relationship_files[{}]", found.index),
                    reason: format!("{}: {reason}", found.place()),
                })
            };
            if let Some(i) = entries.configured_index(td) {
                return Err(invalid(format!(
                    "{td} is federated with already by {}",
                    entries.configured[i].place
                )));
            }
            let relationship = Relationship::from_body(spec, &settings.locals, limits)
                .map_err(|err| invalid(err.to_string()))?;
            entries.configured.push(Configured {
                relationship,
                place: found.place(),
            });
        }
        for record in stored {
            let spec = body_of(record.relationship);
            let td = spec.trust_domain.clone();
            if entries.configured_index(&td).is_some() {
                tracing::warn!(trust_domain = %td, "a relationship created through the admin API has the trust domain of one in the configuration file; the configuration's is used and the stored one is ignored");
                continue;
            }
            match Relationship::from_body(&spec, &settings.locals, limits) {
                Ok(relationship) => {
                    entries.api.insert(td, relationship);
                }
                Err(err) => {
                    tracing::error!(trust_domain = %td, error = %err, "stored relationship not polled");
                }
            }
        }
        for relationship in entries
            .configured
            .iter()
            .map(|c| &c.relationship)
            .chain(entries.api.values())
        {
            parts.pollers.start(relationship.clone());
        }
        let registry = Self {
            inner: Arc::new(Inner {
                parts,
                settings,
                entries: Mutex::new(Entries::default()),
            }),
        };
        {
            let mut current = registry.inner.entries.lock().await;
            *current = entries;
            registry.inner.publish(&current);
        }
        Ok(registry)
    }

    /// The view the admin API reads.
    pub fn view(&self) -> &RelationshipsView {
        &self.inner.parts.view
    }

    /// Create a relationship through the API, as `who`.
    ///
    /// # Errors
    /// [`RegistryError::Invalid`] or [`RegistryError::Material`] for a bad
    /// relationship, [`RegistryError::AlreadyExists`], or a storage fault; nothing is
    /// changed on error.
    pub async fn create(&self, spec: RelationshipSpec, who: String) -> Result<(), RegistryError> {
        self.change(move |inner| async move { inner.create(spec, &who).await })
            .await
    }

    /// Replace the API relationship with `trust_domain`, as `who`, and restart its
    /// poller.
    ///
    /// # Errors
    /// [`RegistryError::TrustDomainMismatch`], [`RegistryError::ManagedInConfiguration`],
    /// [`RegistryError::NotFound`], a bad relationship, or a storage fault; nothing is
    /// changed on error.
    pub async fn replace(
        &self,
        trust_domain: TrustDomain,
        spec: RelationshipSpec,
        who: String,
    ) -> Result<(), RegistryError> {
        self.change(move |inner| async move { inner.replace(&trust_domain, spec, &who).await })
            .await
    }

    /// Delete the API relationship with `trust_domain`, as `who` (POLL-4): stop its
    /// poller, remove its bundle and fetch status, then the relationship. Refused
    /// while other relationships depend on its bundle, unless `force`.
    ///
    /// # Errors
    /// [`RegistryError::ManagedInConfiguration`], [`RegistryError::NotFound`],
    /// [`RegistryError::InUse`], or a storage fault (the poller is restarted then).
    pub async fn delete(
        &self,
        trust_domain: TrustDomain,
        force: bool,
        who: String,
    ) -> Result<(), RegistryError> {
        self.change(move |inner| async move { inner.delete(&trust_domain, force, &who).await })
            .await
    }

    /// Take the relationships other replicas created, replaced or deleted through
    /// the API in a shared store: start, restart or stop their pollers and publish
    /// the new listing. Nothing is written (the replica that made the change wrote
    /// it and its audit record); bundles of deleted ones were removed by it too.
    ///
    /// # Errors
    /// A storage fault reading the relationships; nothing is changed then.
    pub async fn sync(&self) -> Result<(), RegistryError> {
        self.change(move |inner| async move { inner.sync().await })
            .await
    }

    /// Make the ClusterFederatedTrustDomain relationships exactly `objects` (the
    /// whole current set): start pollers for new ones, restart changed ones, and stop
    /// those gone, removing their bundle and status (POLL-4, audited as `who`).
    /// An object is refused (not polled) when it breaks a rule, names a trust domain
    /// already federated with by the configuration, the admin API or another object
    /// (the first by name keeps it), or names a local domain.
    ///
    /// # Errors
    /// A storage fault removing a bundle; the other changes are made.
    pub async fn sync_kubernetes(
        &self,
        objects: Vec<KubernetesObject>,
        who: String,
    ) -> Result<KubernetesOutcome, RegistryError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.change(move |inner| async move {
            let outcome = inner.sync_kubernetes(objects, &who).await;
            let failed = outcome.1;
            let _sent = tx.send(outcome.0);
            failed.map_or(Ok(()), Err)
        })
        .await?;
        rx.await
            .map_err(|_| RegistryError::Interrupted { step: "change" })
    }

    /// Run a change on a task of its own, so that it completes even when the caller
    /// stops waiting (an HTTP client that disconnects).
    async fn change<F, Fut>(&self, change: F) -> Result<(), RegistryError>
    where
        F: FnOnce(Arc<Inner>) -> Fut,
        Fut: Future<Output = Result<(), RegistryError>> + Send + 'static,
    {
        let task = self
            .inner
            .parts
            .shutdown
            .spawn(change(Arc::clone(&self.inner)));
        task.await
            .map_err(|_| RegistryError::Interrupted { step: "change" })?
    }
}

impl Inner {
    /// [`Registry::sync_kubernetes`]: the outcome per object, and the first storage
    /// fault if any.
    async fn sync_kubernetes(
        &self,
        mut objects: Vec<KubernetesObject>,
        who: &str,
    ) -> (KubernetesOutcome, Option<RegistryError>) {
        let mut entries = self.entries.lock().await;
        objects.sort_by(|a, b| a.name.cmp(&b.name));
        let mut outcome = KubernetesOutcome::new();
        let mut wanted: BTreeMap<TrustDomain, (String, Relationship)> = BTreeMap::new();
        for object in objects {
            let td = object.spec.trust_domain.clone();
            let refused = if let Some(index) = entries.configured_index(&td) {
                Some(format!(
                    "{td} is federated with already by the configuration file ({})",
                    entries.configured[index].place
                ))
            } else if entries.api.contains_key(&td) {
                Some(format!(
                    "{td} is federated with already by a relationship created through the admin API"
                ))
            } else if let Some((first, _)) = wanted.get(&td) {
                Some(format!(
                    "{td} is federated with already by ClusterFederatedTrustDomain {first:?}"
                ))
            } else {
                object
                    .spec
                    .validate(&self.settings.locals)
                    .map_err(RegistryError::from)
                    .and_then(|()| self.resolve(&object.spec))
                    .map(|relationship| {
                        wanted.insert(td.clone(), (object.name.clone(), relationship));
                    })
                    .err()
                    .map(|err| err.to_string())
            };
            outcome.insert(object.name, refused.map_or(Ok(()), Err));
        }
        let mut changed = false;
        let mut fault = None;
        let gone: Vec<TrustDomain> = entries
            .kubernetes
            .keys()
            .filter(|td| !wanted.contains_key(*td))
            .cloned()
            .collect();
        for td in gone {
            // No fetch may land after the bundle is removed: stop and wait first.
            self.parts.pollers.stop(&td).await;
            if let Some(watched) = entries.kubernetes.remove(&td) {
                let by = format!(
                    "{who} (ClusterFederatedTrustDomain {:?} gone)",
                    watched.name
                );
                let now = OffsetDateTime::now_utc();
                if let Err(err) = self.parts.trust_store.remove(&td, &by, now).await {
                    tracing::error!(trust_domain = %td, error = %err, "could not remove the bundle of a deleted ClusterFederatedTrustDomain");
                    fault.get_or_insert(RegistryError::from(err));
                }
                tracing::info!(trust_domain = %td, name = %watched.name, "ClusterFederatedTrustDomain deleted: relationship removed");
            }
            changed = true;
        }
        for (td, (name, relationship)) in wanted {
            let known = entries.kubernetes.get(&td);
            if known.is_some_and(|k| k.relationship.to_body() == relationship.to_body()) {
                if let Some(k) = entries.kubernetes.get_mut(&td)
                    && k.name != name
                {
                    k.name = name;
                    changed = true;
                }
                continue;
            }
            if known.is_some() {
                self.parts.pollers.stop(&td).await;
            }
            self.parts.pollers.start(relationship.clone());
            tracing::info!(trust_domain = %td, %name, "ClusterFederatedTrustDomain polled");
            entries
                .kubernetes
                .insert(td, Watched { relationship, name });
            changed = true;
        }
        if changed {
            self.publish(&entries);
        }
        (outcome, fault)
    }

    async fn sync(&self) -> Result<(), RegistryError> {
        let mut entries = self.entries.lock().await;
        let store = self.parts.trust_store.store().clone();
        let stored = blocking("stored relationships", move || store.relationships()).await??;
        let mut wanted: BTreeMap<TrustDomain, RelationshipSpec> = BTreeMap::new();
        for record in stored {
            let spec = body_of(record.relationship);
            let td = &spec.trust_domain;
            if entries.configured_index(td).is_none() && !entries.kubernetes.contains_key(td) {
                wanted.insert(spec.trust_domain.clone(), spec);
            }
        }
        let mut changed = false;
        let gone: Vec<TrustDomain> = entries
            .api
            .keys()
            .filter(|td| !wanted.contains_key(*td))
            .cloned()
            .collect();
        for td in gone {
            self.parts.pollers.stop(&td).await;
            entries.api.remove(&td);
            tracing::info!(trust_domain = %td, "relationship deleted on another replica");
            changed = true;
        }
        for (td, spec) in wanted {
            if entries
                .api
                .get(&td)
                .is_some_and(|known| known.to_body() == spec)
            {
                continue;
            }
            let relationship = match self.resolve(&spec) {
                Ok(relationship) => relationship,
                Err(err) => {
                    tracing::error!(trust_domain = %td, error = %err, "relationship from another replica not polled");
                    continue;
                }
            };
            if entries.api.contains_key(&td) {
                self.parts.pollers.stop(&td).await;
            }
            self.parts.pollers.start(relationship.clone());
            tracing::info!(trust_domain = %td, "relationship created or replaced on another replica");
            entries.api.insert(td, relationship);
            changed = true;
        }
        if changed {
            self.publish(&entries);
        }
        Ok(())
    }

    async fn create(&self, spec: RelationshipSpec, who: &str) -> Result<(), RegistryError> {
        let mut entries = self.entries.lock().await;
        let td = spec.trust_domain.clone();
        spec.validate(&self.settings.locals)?;
        if let Some(origin) = entries.origin(&td) {
            return Err(RegistryError::AlreadyExists {
                trust_domain: td,
                origin,
            });
        }
        let relationship = self.resolve(&spec)?;
        let audit = self.audit(who, AuditAction::RelationshipCreate, &td, None, Some(&spec))?;
        self.persist(&spec, who, audit).await?;
        self.parts.pollers.start(relationship.clone());
        tracing::info!(trust_domain = %td, %who, "relationship created");
        entries.api.insert(td, relationship);
        self.publish(&entries);
        Ok(())
    }

    async fn replace(
        &self,
        td: &TrustDomain,
        spec: RelationshipSpec,
        who: &str,
    ) -> Result<(), RegistryError> {
        let mut entries = self.entries.lock().await;
        if &spec.trust_domain != td {
            return Err(RegistryError::TrustDomainMismatch {
                path: td.clone(),
                body: spec.trust_domain,
            });
        }
        entries.refuse_configured(td)?;
        let old = entries.api.get(td).ok_or_else(|| not_found(td))?.to_body();
        let relationship = self.resolve(&spec)?;
        if old == spec {
            return Ok(());
        }
        let audit = self.audit(
            who,
            AuditAction::RelationshipUpdate,
            td,
            Some(&old),
            Some(&spec),
        )?;
        self.persist(&spec, who, audit).await?;
        self.parts.pollers.stop(td).await;
        self.parts.pollers.start(relationship.clone());
        tracing::info!(trust_domain = %td, %who, "relationship replaced");
        entries.api.insert(td.clone(), relationship);
        self.publish(&entries);
        Ok(())
    }

    async fn delete(&self, td: &TrustDomain, force: bool, who: &str) -> Result<(), RegistryError> {
        let mut entries = self.entries.lock().await;
        entries.refuse_configured(td)?;
        let old = entries.api.get(td).cloned().ok_or_else(|| not_found(td))?;
        let dependents = chain::dependents(td, &entries.links());
        if !dependents.is_empty() && !force {
            return Err(RegistryError::InUse {
                trust_domain: td.clone(),
                dependents,
            });
        }
        let audit = self.audit(
            who,
            AuditAction::RelationshipDelete,
            td,
            Some(&old.to_body()),
            None,
        )?;
        // No fetch may land after the bundle is removed: stop and wait first.
        self.parts.pollers.stop(td).await;
        if let Err(err) = self.remove(td, who, audit).await {
            // Still registered: keep polling it, as before the request.
            self.parts.pollers.start(old);
            return Err(err);
        }
        if !dependents.is_empty() {
            tracing::warn!(trust_domain = %td, dependents = %list(&dependents), "relationship deleted by force; its dependents can no longer authenticate their endpoints");
        }
        tracing::info!(trust_domain = %td, %who, "relationship deleted");
        entries.api.remove(td);
        self.publish(&entries);
        Ok(())
    }

    /// Remove the bundle and status (audited by the trust store), then the
    /// relationship (audited here); with a shared store, the relationship first.
    async fn remove(
        &self,
        td: &TrustDomain,
        who: &str,
        audit: AuditRecord,
    ) -> Result<(), RegistryError> {
        let now = OffsetDateTime::now_utc();
        let store = self.parts.trust_store.store().clone();
        let shared = store.postgres().is_some();
        let remove_relationship = {
            let td = td.clone();
            move || {
                blocking("delete relationship", move || {
                    store.remove_relationship(&td, &audit)
                })
            }
        };
        if shared {
            // Other replicas may be polling it: the relationship (and with it its
            // lease) goes first, so no replica can fetch it again and a write in
            // flight is refused, then the bundle.
            remove_relationship().await??;
            self.parts.trust_store.remove(td, who, now).await?;
        } else {
            self.parts.trust_store.remove(td, who, now).await?;
            remove_relationship().await??;
        }
        Ok(())
    }

    fn resolve(&self, spec: &RelationshipSpec) -> Result<Relationship, RegistryError> {
        Ok(Relationship::from_body(
            spec,
            &self.settings.locals,
            self.settings.limits(),
        )?)
    }

    /// Write `spec` and its audit record, and flush.
    async fn persist(
        &self,
        spec: &RelationshipSpec,
        who: &str,
        audit: AuditRecord,
    ) -> Result<(), RegistryError> {
        let record = RelationshipRecord {
            relationship: record_of(spec.clone()),
            changed_at: audit.at,
            changed_by: who.to_owned(),
        };
        let store = self.parts.trust_store.store().clone();
        blocking("store relationship", move || {
            store.put_relationship(&record, &audit)
        })
        .await??;
        Ok(())
    }

    fn audit(
        &self,
        who: &str,
        action: AuditAction,
        td: &TrustDomain,
        old: Option<&RelationshipSpec>,
        new: Option<&RelationshipSpec>,
    ) -> Result<AuditRecord, RegistryError> {
        let value = |spec: Option<&RelationshipSpec>| {
            spec.map(serde_json::to_value)
                .transpose()
                .map_err(|source| StoreError::Encode {
                    keyspace: crate::trust::db::Keyspace::Audit,
                    key: td.to_string(),
                    source,
                })
        };
        Ok(AuditRecord {
            at: OffsetDateTime::now_utc().unix_timestamp(),
            who: who.to_owned(),
            action,
            trust_domain: Some(td.clone()),
            old_digest: None,
            new_digest: None,
            detail: String::new(),
            old_value: value(old)?,
            new_value: value(new)?,
        })
    }

    /// Publish the listing of `entries`, logging the chain warnings that are new.
    fn publish(&self, entries: &Entries) {
        let previous = self.parts.view.listing();
        let listed = entries
            .configured
            .iter()
            .map(|c| Listed {
                relationship: c.relationship.clone(),
                origin: Origin::Configuration,
            })
            .chain(entries.api.values().map(|relationship| Listed {
                relationship: relationship.clone(),
                origin: Origin::Api,
            }))
            .chain(entries.kubernetes.values().map(|watched| Listed {
                relationship: watched.relationship.clone(),
                origin: Origin::Kubernetes,
            }))
            .collect();
        let listing = Listing::new(
            listed,
            &self.settings.locals,
            self.settings.max_trust_chain_depth,
        );
        for (rel, details) in listing.entries() {
            let td = &rel.trust_domain;
            let before = previous.details(td).map(|d| d.warnings.as_slice());
            for warning in &details.warnings {
                if !before.is_some_and(|b| b.contains(warning)) {
                    tracing::warn!(trust_domain = %td, "{warning}");
                }
            }
        }
        for (origin, label) in [
            (Origin::Configuration, "configuration"),
            (Origin::Api, "api"),
            (Origin::Kubernetes, "kubernetes"),
        ] {
            let count = listing
                .entries()
                .filter(|(_, d)| d.origin == origin)
                .count();
            #[expect(
                clippy::cast_precision_loss,
                reason = "a metric value; relationship counts are far below 2^53"
            )]
            let value = count as f64;
            self.parts.metrics.set(
                crate::telemetry::families::RELATIONSHIPS,
                &[("origin", label)],
                value,
            );
        }
        self.parts.view.publish(listing);
    }
}

impl Entries {
    fn configured_index(&self, td: &TrustDomain) -> Option<usize> {
        self.configured
            .iter()
            .position(|c| c.relationship.trust_domain == *td)
    }

    fn origin(&self, td: &TrustDomain) -> Option<Origin> {
        if self.configured_index(td).is_some() {
            Some(Origin::Configuration)
        } else if self.api.contains_key(td) {
            Some(Origin::Api)
        } else if self.kubernetes.contains_key(td) {
            Some(Origin::Kubernetes)
        } else {
            None
        }
    }

    /// Refuse a change through the admin API to a relationship it does not manage.
    fn refuse_configured(&self, td: &TrustDomain) -> Result<(), RegistryError> {
        if let Some(watched) = self.kubernetes.get(td) {
            return Err(RegistryError::ManagedInKubernetes {
                trust_domain: td.clone(),
                name: watched.name.clone(),
            });
        }
        match self.configured_index(td) {
            Some(index) => Err(RegistryError::ManagedInConfiguration {
                trust_domain: td.clone(),
                place: self.configured[index].place.clone(),
            }),
            None => Ok(()),
        }
    }

    fn links(&self) -> BTreeMap<TrustDomain, Link> {
        self.configured
            .iter()
            .map(|c| &c.relationship)
            .chain(self.api.values())
            .chain(
                self.kubernetes
                    .values()
                    .map(|watched| &watched.relationship),
            )
            .map(|relationship| (relationship.trust_domain.clone(), Link::of(relationship)))
            .collect()
    }
}

/// Run a blocking step (file reads, sled) off the reactor.
async fn blocking<T: Send + 'static>(
    step: &'static str,
    call: impl FnOnce() -> T + Send + 'static,
) -> Result<T, RegistryError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|_| RegistryError::Interrupted { step })
}

fn not_found(td: &TrustDomain) -> RegistryError {
    RegistryError::NotFound {
        trust_domain: td.clone(),
    }
}

fn describe_origin(origin: Origin) -> &'static str {
    match origin {
        Origin::Configuration => "in the configuration file",
        Origin::Api => "created through the admin API",
        Origin::Kubernetes => "a ClusterFederatedTrustDomain in Kubernetes",
    }
}

fn list(domains: &[TrustDomain]) -> String {
    domains
        .iter()
        .map(TrustDomain::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The store's record of an API body (the same JSON shape, its own type).
fn record_of(spec: RelationshipSpec) -> StoredRelationship {
    StoredRelationship {
        trust_domain: spec.trust_domain,
        url: spec.url,
        urls: spec.urls,
        profile: spec.profile,
        endpoint_spiffe_id: spec.endpoint_spiffe_id,
        bootstrap_bundle: spec.bootstrap_bundle,
        bootstrap_format: spec.bootstrap_format,
        extra_ca_roots_pem: spec.extra_ca_roots_pem,
        follow_redirects: spec.follow_redirects,
        proxy: spec.proxy,
        allow_revocation: spec.allow_revocation,
    }
}

/// The API body a stored record holds.
fn body_of(stored: StoredRelationship) -> RelationshipSpec {
    RelationshipSpec {
        trust_domain: stored.trust_domain,
        url: stored.url,
        urls: stored.urls,
        profile: stored.profile,
        endpoint_spiffe_id: stored.endpoint_spiffe_id,
        bootstrap_bundle: stored.bootstrap_bundle,
        bootstrap_format: stored.bootstrap_format,
        extra_ca_roots_pem: stored.extra_ca_roots_pem,
        follow_redirects: stored.follow_redirects,
        proxy: stored.proxy,
        allow_revocation: stored.allow_revocation,
    }
}
