//! ClusterFederatedTrustDomain objects in: every replica watches them and hands the
//! whole current set to the [`Registry`] after each change, exactly as
//! `relationship_files` objects are read ([`cftd::from_object`]).
//!
//! Owns the watch (a list, then a watch from its resourceVersion, listed again
//! after a gap, with backoff while the API server is away) and [`Objects`], what
//! the writer needs to write each object's status: its generation, its trust
//! domain, whether it is polled or why not, and the status it holds now.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::{FutureExt, StreamExt};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use serde_json::Value;
use spiffe_federation::TrustDomain;
use tokio::sync::watch;

use crate::registry::cftd::{self, API_VERSION, KIND};
use crate::registry::{KubernetesObject, Registry};

/// Who changes relationships in the audit log.
const WHO: &str = "kubernetes";

/// The ClusterFederatedTrustDomain resource.
pub(crate) fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("spire.spiffe.io", "v1alpha1", KIND),
        "clusterfederatedtrustdomains",
    )
}

/// The objects as last seen.
#[derive(Debug, Default)]
pub(crate) struct Objects {
    /// Whether the first list has completed (before it, no status is written).
    pub(crate) listed: bool,
    /// By `metadata.name`.
    pub(crate) items: BTreeMap<String, Seen>,
}

/// One object as last seen.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Seen {
    /// `metadata.generation`.
    pub(crate) generation: Option<i64>,
    /// `spec.trustDomain`, when the object could be read.
    pub(crate) trust_domain: Option<TrustDomain>,
    /// Polled, or why not.
    pub(crate) outcome: Result<(), String>,
    /// Its `status` now.
    pub(crate) status: Option<Value>,
}

/// The watch's parts.
pub(crate) struct Watch {
    pub(crate) client: Client,
    pub(crate) selector: Option<String>,
    pub(crate) registry: Registry,
    pub(crate) objects: watch::Sender<Arc<Objects>>,
}

/// Watch until the stream ends (it does not: it retries with backoff).
pub(crate) async fn run(watch: Arc<Watch>) {
    let api: Api<DynamicObject> = Api::all_with(watch.client.clone(), &resource());
    let mut config = watcher::Config::default();
    if let Some(selector) = &watch.selector {
        config = config.labels(selector);
    }
    let mut stream = std::pin::pin!(watcher::watcher(api, config).default_backoff());
    let mut current: BTreeMap<String, DynamicObject> = BTreeMap::new();
    let mut buffer: Option<BTreeMap<String, DynamicObject>> = None;
    let mut listed = false;
    let mut failing = false;
    while let Some(event) = stream.next().await {
        // Take what else is ready too, then sync once.
        let mut events = vec![event];
        while let Some(Some(more)) = stream.next().now_or_never() {
            events.push(more);
        }
        let mut changed = false;
        for event in events {
            match event {
                Ok(Event::Init) => buffer = Some(BTreeMap::new()),
                Ok(Event::InitApply(object)) => {
                    if let (Some(buffer), Some(name)) =
                        (buffer.as_mut(), object.metadata.name.clone())
                    {
                        buffer.insert(name, object);
                    }
                }
                Ok(Event::InitDone) => {
                    current = buffer.take().unwrap_or_default();
                    listed = true;
                    changed = true;
                }
                Ok(Event::Apply(object)) => {
                    if let Some(name) = object.metadata.name.clone() {
                        current.insert(name, object);
                        changed = true;
                    }
                }
                Ok(Event::Delete(object)) => {
                    if let Some(name) = &object.metadata.name {
                        current.remove(name);
                        changed = true;
                    }
                }
                Err(err) => {
                    if !failing {
                        tracing::warn!(error = %err, "watching ClusterFederatedTrustDomains failed (is the CRD installed, and may fedgw list and watch it?); retrying with backoff");
                    }
                    failing = true;
                    continue;
                }
            }
            if failing {
                tracing::info!("watching ClusterFederatedTrustDomains again");
                failing = false;
            }
        }
        if changed && listed {
            sync(&watch, &current).await;
        }
    }
}

/// Read every object, hand the readable ones to the registry, publish the outcome.
async fn sync(watch: &Watch, current: &BTreeMap<String, DynamicObject>) {
    let mut items = BTreeMap::new();
    let mut given = Vec::new();
    for (name, object) in current {
        let mut value = serde_json::to_value(object).unwrap_or(Value::Null);
        if let Some(map) = value.as_object_mut() {
            map.insert("apiVersion".to_owned(), Value::from(API_VERSION));
            map.insert("kind".to_owned(), Value::from(KIND));
        }
        let status = value.get("status").cloned();
        let read = cftd::from_object(format!("{KIND} {name:?}"), &value);
        let (trust_domain, outcome) = match read {
            Ok(parsed) => {
                given.push(KubernetesObject {
                    name: name.clone(),
                    spec: parsed.spec.clone(),
                });
                for note in &parsed.notes {
                    tracing::debug!(name = %name, "{note}");
                }
                (Some(parsed.spec.trust_domain), Ok(()))
            }
            Err(err) => {
                let td = value
                    .pointer("/spec/trustDomain")
                    .and_then(Value::as_str)
                    .and_then(|td| td.parse().ok());
                (td, Err(format!("{}: {}", err.field, err.problem)))
            }
        };
        items.insert(
            name.clone(),
            Seen {
                generation: object.metadata.generation,
                trust_domain,
                outcome,
                status,
            },
        );
    }
    match watch.registry.sync_kubernetes(given, WHO.to_owned()).await {
        Ok(outcome) => {
            for (name, result) in outcome {
                if let (Some(seen), Err(why)) = (items.get_mut(&name), result) {
                    seen.outcome = Err(why);
                }
            }
        }
        Err(err) => {
            tracing::error!(error = %err, "applying the ClusterFederatedTrustDomains failed; retried on the next change");
        }
    }
    let previous = Arc::clone(&watch.objects.borrow());
    for (name, seen) in &items {
        let before = previous.items.get(name).map(|p| &p.outcome);
        if let Err(why) = &seen.outcome
            && before != Some(&seen.outcome)
        {
            tracing::warn!(name = %name, "ClusterFederatedTrustDomain not polled: {why}");
        }
    }
    watch.objects.send_replace(Arc::new(Objects {
        listed: true,
        items,
    }));
}
