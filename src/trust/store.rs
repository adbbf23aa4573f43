//! The trust store: the single writer of bundles and the lock-free view every reader uses.
//!
//! Owns the publish step of the data flow (sources → format → policy → **trust store**
//! → readers): it runs [`policy::evaluate`], makes an accepted change durable through
//! [`Store`] on a blocking thread, and only then swaps in a new immutable [`Snapshot`]
//! (`ArcSwap`) and announces the new global revision on a `watch` channel. Readers
//! call [`TrustStore::snapshot`] and never lock or touch sled; a rejected bundle
//! changes nothing, so the last good snapshot keeps serving.
//!
//! Writers are serialised by a tokio mutex whose guard moves into the blocking task,
//! so a write that started always finishes and publishes, even if its caller stops
//! waiting. It does not fetch, parse documents from the network, schedule polls or
//! serve HTTP; sinks follow [`TrustStore::subscribe`].
//!
//! Because every bundle passes through it, it also keeps the books on them: each
//! refusal is counted in `fedgw_bundle_rejections_total{trust_domain,reason}`, each
//! accepted bundle's warnings are logged and counted in
//! `fedgw_bundle_warnings_total{trust_domain,warning}`, and every snapshot entry
//! carries the [`BundleWarning`](crate::trust::policy::BundleWarning)s that hold for it among all stored bundles (ID-16,
//! SEC-7).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use fedgw::trust::policy::{PolicySettings, Source};
//! use fedgw::trust::store::{Outcome, TrustStore};
//! use spiffe_federation::{Bundle, TrustDomain};
//!
//! let dir = tempfile::tempdir()?;
//! let store = TrustStore::open(dir.path(), PolicySettings::default()).await?;
//! let mut feed = store.subscribe();
//! let td: TrustDomain = "east.example".parse()?;
//! let bundle = Bundle::parse(&td, br#"{"keys":[],"spiffe_sequence":1}"#)?.bundle;
//! let source = Source::Operator { who: "alice".into() };
//! let now = time::OffsetDateTime::now_utc();
//! let outcome = store.submit(&td, bundle, source, now).await?;
//! assert!(matches!(outcome, Outcome::Accepted { revision: 1, .. }));
//! assert_eq!(*feed.borrow_and_update(), 1);
//! assert_eq!(&store.snapshot().get(&td).unwrap().json[..], br#"{"keys":[],"spiffe_sequence":1}"#);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use spiffe_federation::{Bundle, TrustDomain};
use time::OffsetDateTime;
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

use crate::config::storage::StorageBackend;
use crate::telemetry::Metrics;
use crate::telemetry::families::{BUNDLE_REJECTIONS, BUNDLE_WARNINGS};
use crate::trust::db::postgres::PgStore;
use crate::trust::db::{
    AuditAction, AuditNote, AuditRecord, BundleRecord, Changes, Database, Expected, Fence,
    LastError, NewBundle, RelationshipRecord, RelationshipStatus, StorageConfig, Store, StoreError,
};
use crate::trust::policy::{
    self, Current, Decision, DocumentFacts, PolicyError, PolicySettings, Source, Warning,
};

pub mod cache;
#[cfg(test)]
mod shared;
mod snapshot;

pub use self::snapshot::{Entry, Snapshot};
use self::snapshot::{
    KeyIndex, entry, load_entry, load_warnings, parse_record, update_warnings, whole_seconds,
};

/// What a submission did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Stored, flushed and announced at `revision`.
    Accepted {
        /// The new global revision.
        revision: u64,
        /// What policy flagged about the bundle.
        warnings: Vec<Warning>,
    },
    /// Equal to the stored bundle: nothing written or announced (POLL-1).
    Unchanged,
}

/// Why a submission or rollback changed nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// Policy refused the bundle; the stored one keeps serving.
    #[error(transparent)]
    Rejected(#[from] PolicyError),
    /// Storage failed; the snapshot was not changed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Rollback to a revision the history of this trust domain does not hold.
    #[error("{trust_domain}: no stored version at revision {revision}")]
    UnknownRevision {
        /// The trust domain.
        trust_domain: TrustDomain,
        /// The revision asked for.
        revision: u64,
    },
}

/// Handle to the trust store; cloning is cheap and every clone is the same store.
#[derive(Clone)]
pub struct TrustStore {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Database>,
    settings: PolicySettings,
    metrics: Metrics,
    snapshot: ArcSwap<Snapshot>,
    /// The key holders of `snapshot`'s bundles; changed only by the writer, with it.
    key_index: std::sync::Mutex<KeyIndex>,
    /// Fetch health per relationship; a persistent map, so a status update (one per
    /// fetch) costs O(log n), not a copy of every status.
    statuses: ArcSwap<imbl::OrdMap<TrustDomain, RelationshipStatus>>,
    feed: watch::Sender<u64>,
    writer: Arc<Mutex<()>>,
    /// Set while a shared store cannot be reached (the last call found it away).
    away: std::sync::Mutex<Option<StoreAway>>,
    /// A shared store's last-known-good copy; `None` with sled.
    cache: Option<Cache>,
}

/// Where a replica keeps its last-known-good copy, and what it knows of it.
struct Cache {
    /// The data directory.
    dir: std::path::PathBuf,
    /// The revision of the last copy written (or started from).
    saved: std::sync::Mutex<Option<u64>>,
    /// The relationships of the copy this replica started from, while the database
    /// was away.
    relationships: std::sync::Mutex<Option<Vec<RelationshipRecord>>>,
}

/// What opening a store gives.
struct Opened {
    store: Arc<dyn Database>,
    snapshot: Snapshot,
    key_index: KeyIndex,
    statuses: imbl::OrdMap<TrustDomain, RelationshipStatus>,
    away: Option<StoreAway>,
    relationships: Option<Vec<RelationshipRecord>>,
}

/// A shared store that cannot be reached at start: serve the last-known-good copy in
/// `dir`, if there is one, and reach the database later. Blocks.
fn from_copy(
    dir: &Path,
    storage: StorageConfig,
    metrics: Metrics,
    err: StoreError,
) -> Result<Opened, StoreError> {
    let Some(copy) = cache::read(dir)? else {
        return Err(err);
    };
    let Some(postgres) = storage.postgres.clone() else {
        return Err(err);
    };
    tracing::warn!(error = %err, revision = copy.revision, bundles = copy.bundles.len(), "the shared store cannot be reached; serving the last-known-good copy until it answers");
    let store: Arc<dyn Database> = Arc::new(PgStore::new(&postgres, storage, metrics)?);
    let mut domains = copy
        .bundles
        .into_iter()
        .map(|record| Ok((record.trust_domain.clone(), Arc::new(load_entry(record)?))))
        .collect::<Result<_, StoreError>>()?;
    let mut key_index = KeyIndex::default();
    load_warnings(&mut domains, &mut key_index);
    Ok(Opened {
        store,
        snapshot: Snapshot {
            revision: copy.revision,
            domains,
        },
        key_index,
        statuses: copy.statuses.into_iter().collect(),
        away: Some(StoreAway {
            since: OffsetDateTime::now_utc(),
            reason: err.to_string(),
        }),
        relationships: Some(copy.relationships),
    })
}

/// The stored record of a served entry (what the copy keeps).
fn record_of(entry: &Entry) -> BundleRecord {
    BundleRecord {
        trust_domain: entry.bundle.trust_domain().clone(),
        document: entry.json.to_vec(),
        source: entry.source.clone(),
        accepted_at: entry.accepted_at.unix_timestamp(),
        digest: entry.digest.clone(),
        sequence: entry.sequence,
        revision: entry.revision,
    }
}

/// A shared store that cannot be reached: since when, and the last error that said so.
/// The snapshot keeps serving meanwhile; writes fail with the store's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreAway {
    /// When a call first found it away.
    pub since: OffsetDateTime,
    /// The last such error.
    pub reason: String,
}

impl TrustStore {
    /// Open the database in directory `path` with the default storage settings and
    /// load every stored bundle into the first snapshot; see [`TrustStore::open_with`].
    ///
    /// # Errors
    /// As [`TrustStore::open_with`].
    pub async fn open(
        path: impl AsRef<Path>,
        settings: PolicySettings,
    ) -> Result<Self, StoreError> {
        Self::open_with(path, settings, StorageConfig::default()).await
    }

    /// Open the database `storage` selects (its `backend`: a sled database in
    /// directory `path`, bounded and rewritten as `storage` says, or the shared
    /// PostgreSQL database of `[storage.postgres]`) and load every stored bundle into the first snapshot before returning,
    /// so a restarted gateway serves everything it had before any re-fetch (STO-1).
    ///
    /// # Errors
    /// A [`StoreError`] if the database cannot be opened or a stored record does not
    /// decode or parse (naming its key).
    pub async fn open_with(
        path: impl AsRef<Path>,
        settings: PolicySettings,
        storage: StorageConfig,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref().to_owned();
        let metrics = Metrics::new();
        metrics.set(crate::telemetry::families::STORE_REACHABLE, &[], 1.0);
        let store_metrics = metrics.clone();
        let shared = storage.backend == StorageBackend::Postgres;
        // A shared store's last-known-good copy lives beside where sled would.
        let cache_dir = path.parent().map_or_else(|| path.clone(), Path::to_owned);
        let dir = cache_dir.clone();
        let opened = run_blocking("open", move || {
            let store = match open_database(&path, storage.clone(), store_metrics.clone()) {
                Ok(store) => store,
                Err(err) if shared && err.is_unreachable() => {
                    return from_copy(&dir, storage, store_metrics, err);
                }
                Err(err) => return Err(err),
            };
            let revision = store.revision()?;
            let mut domains = store
                .bundles()?
                .into_iter()
                .map(|record| Ok((record.trust_domain.clone(), Arc::new(load_entry(record)?))))
                .collect::<Result<_, StoreError>>()?;
            let mut key_index = KeyIndex::default();
            load_warnings(&mut domains, &mut key_index);
            let statuses = store.statuses()?.into_iter().collect();
            Ok(Opened {
                store,
                snapshot: Snapshot { revision, domains },
                key_index,
                statuses,
                away: None,
                relationships: None,
            })
        })
        .await?;
        if opened.away.is_some() {
            metrics.set(crate::telemetry::families::STORE_REACHABLE, &[], 0.0);
        }
        let (feed, _) = watch::channel(opened.snapshot.revision);
        let saved = opened.snapshot.revision;
        Ok(Self {
            inner: Arc::new(Inner {
                store: opened.store,
                settings,
                metrics,
                snapshot: ArcSwap::from_pointee(opened.snapshot),
                key_index: std::sync::Mutex::new(opened.key_index),
                statuses: ArcSwap::from_pointee(opened.statuses),
                feed,
                writer: Arc::new(Mutex::new(())),
                away: std::sync::Mutex::new(opened.away),
                cache: shared.then(|| Cache {
                    dir: cache_dir,
                    saved: std::sync::Mutex::new(opened.relationships.as_ref().map(|_| saved)),
                    relationships: std::sync::Mutex::new(opened.relationships),
                }),
            }),
        })
    }

    /// Write the last-known-good copy of a shared store's state into the data
    /// directory when the served revision moved since the last copy (or no copy was
    /// written yet by this process). Nothing to do with sled. The relationships are
    /// read from the database, so nothing is written while it is away (the last copy
    /// stays).
    ///
    /// # Errors
    /// A [`StoreError`]: the database is away, or the file cannot be written.
    pub async fn save_last_known_good(&self) -> Result<(), StoreError> {
        let Some(cache) = &self.inner.cache else {
            return Ok(());
        };
        let snapshot = self.snapshot();
        let saved = *cache
            .saved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if saved == Some(snapshot.revision) {
            return Ok(());
        }
        let inner = Arc::clone(&self.inner);
        run_blocking("save last-known-good copy", move || {
            let Some(cache) = &inner.cache else {
                return Ok(());
            };
            let relationships = inner.store.relationships()?;
            let bundles = snapshot
                .domains
                .values()
                .map(|entry| record_of(entry))
                .collect();
            let statuses = inner
                .statuses
                .load()
                .iter()
                .map(|(td, s)| (td.clone(), s.clone()))
                .collect();
            let copy =
                cache::LastKnownGood::new(snapshot.revision, bundles, relationships, statuses);
            cache::write(&cache.dir, &copy)?;
            *cache
                .saved
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(snapshot.revision);
            Ok(())
        })
        .await
    }

    /// The relationships created through the API: from the database, or, while a
    /// shared store is away, from the last-known-good copy this replica started from.
    ///
    /// # Errors
    /// A [`StoreError`] when the database cannot be read and no copy holds them.
    pub async fn stored_relationships(&self) -> Result<Vec<RelationshipRecord>, StoreError> {
        let inner = Arc::clone(&self.inner);
        run_blocking("stored relationships", move || {
            match inner.store.relationships() {
                Ok(relationships) => Ok(relationships),
                Err(err) if err.is_unreachable() => {
                    let cached = inner.cache.as_ref().and_then(|cache| {
                        cache
                            .relationships
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .clone()
                    });
                    cached.ok_or(err)
                }
                Err(err) => Err(err),
            }
        })
        .await
    }

    /// The current view; lock-free, never waits for a writer.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.snapshot.load_full()
    }

    /// The registry the trust store counts refusals and warnings in; the gateway
    /// serves it on the admin API's `/metrics` and records its other series in it.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// `Some` while the shared store cannot be reached (always `None` for sled).
    pub fn store_away(&self) -> Option<StoreAway> {
        self.inner
            .away
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The change feed: the global revision, updated after each durable change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.feed.subscribe()
    }

    /// Fetch status of every relationship; lock-free.
    pub fn statuses(&self) -> Arc<imbl::OrdMap<TrustDomain, RelationshipStatus>> {
        self.inner.statuses.load_full()
    }

    /// Offer `candidate` as the bundle of `expected` (the configured trust domain,
    /// FED-7). If policy accepts it, it is written and flushed, then published and
    /// announced; otherwise nothing changes.
    ///
    /// # Errors
    /// [`SubmitError::Rejected`] when policy refuses it, [`SubmitError::Store`] when
    /// it could not be made durable.
    pub async fn submit(
        &self,
        expected: &TrustDomain,
        candidate: Bundle,
        source: Source,
        now: OffsetDateTime,
    ) -> Result<Outcome, SubmitError> {
        self.submit_inner(expected, candidate, None, source, now, None)
            .await
    }

    /// As [`TrustStore::submit`], for a bundle read from a bundle document: policy
    /// also judges what the document held (`document`), refusing a document whose
    /// elements were all left out, and an empty `keys` list where revocation is not
    /// allowed ([`DocumentFacts`]).
    ///
    /// # Errors
    /// As [`TrustStore::submit`].
    pub async fn submit_document(
        &self,
        expected: &TrustDomain,
        candidate: Bundle,
        document: DocumentFacts,
        source: Source,
        now: OffsetDateTime,
    ) -> Result<Outcome, SubmitError> {
        self.submit_inner(expected, candidate, Some(&document), source, now, None)
            .await
    }

    /// As [`TrustStore::submit_document`], for a bundle a poller fetched under a
    /// polling lease (shared polling): the write carries `fence`, and the store
    /// refuses it ([`StoreError::Fenced`]) unless the lease is still this replica's.
    ///
    /// # Errors
    /// As [`TrustStore::submit`], and [`SubmitError::Store`] with
    /// [`StoreError::Fenced`].
    pub async fn submit_fetched(
        &self,
        expected: &TrustDomain,
        candidate: Bundle,
        document: DocumentFacts,
        source: Source,
        now: OffsetDateTime,
        fence: Option<Fence>,
    ) -> Result<Outcome, SubmitError> {
        self.submit_inner(expected, candidate, Some(&document), source, now, fence)
            .await
    }

    async fn submit_inner(
        &self,
        expected: &TrustDomain,
        candidate: Bundle,
        document: Option<&DocumentFacts>,
        source: Source,
        now: OffsetDateTime,
        fence: Option<Fence>,
    ) -> Result<Outcome, SubmitError> {
        let mut attempt = 0;
        loop {
            let guard = Arc::clone(&self.inner.writer).lock_owned().await;
            let warnings = match self.evaluate(expected, &candidate, document, &source, now)? {
                Decision::Accept { warnings } => warnings,
                Decision::Unchanged => return Ok(Outcome::Unchanged),
            };
            let note = AuditNote {
                who: source.to_string(),
                action: AuditAction::Accept,
                detail: describe(&warnings),
            };
            let committed = self
                .commit(
                    guard,
                    Change {
                        bundle: candidate.clone(),
                        source: source.clone(),
                        now,
                        note,
                        fence: fence.clone(),
                    },
                    warnings.clone(),
                )
                .await;
            match committed {
                Ok(revision) => return Ok(Outcome::Accepted { revision, warnings }),
                // Another replica changed this domain since the snapshot policy read:
                // take its change, then judge again (it may be a regression now).
                Err(StoreError::Stale { .. }) if attempt < STALE_RETRIES => {
                    attempt += 1;
                    self.catch_up().await?;
                }
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// Stop trusting `trust_domain` (POLL-4): delete its current bundle and status,
    /// keep its history and the audit log, and announce. Returns the new revision, or
    /// `None` if no bundle was stored.
    ///
    /// # Errors
    /// A [`StoreError`]; the snapshot is unchanged unless the removal was durable.
    pub async fn remove(
        &self,
        trust_domain: &TrustDomain,
        who: &str,
        now: OffsetDateTime,
    ) -> Result<Option<u64>, StoreError> {
        let guard = Arc::clone(&self.inner.writer).lock_owned().await;
        let inner = Arc::clone(&self.inner);
        let td = trust_domain.clone();
        let note = AuditNote {
            who: who.to_owned(),
            action: AuditAction::Remove,
            detail: String::new(),
        };
        run_blocking("remove", move || {
            let _writer = guard;
            let previous = inner.snapshot.load().revision;
            let revision = inner.store.remove_bundle(&td, note, now.unix_timestamp())?;
            inner.replace_statuses(|statuses| {
                statuses.remove(&td);
            });
            if let Some(revision) = revision {
                if revision == previous.saturating_add(1) {
                    inner.publish(revision, &td, None);
                } else {
                    inner.catch_up_now();
                }
                tracing::info!(trust_domain = %td, revision, "bundle removed");
            }
            inner.store.maintain();
            Ok(revision)
        })
        .await
    }

    /// Stored versions of `trust_domain`, newest first (also after removal).
    ///
    /// # Errors
    /// A [`StoreError`] naming a record that cannot be read.
    pub async fn history(
        &self,
        trust_domain: &TrustDomain,
    ) -> Result<Vec<BundleRecord>, StoreError> {
        let store = self.inner.store.clone();
        let td = trust_domain.clone();
        run_blocking("history", move || store.history(&td)).await
    }

    /// Re-accept the version of `trust_domain` stored at `revision`, as an operator
    /// override by `who` (L-5), recorded in the audit log as a rollback.
    ///
    /// # Errors
    /// [`SubmitError::UnknownRevision`] if history does not hold it; otherwise as
    /// [`TrustStore::submit`].
    pub async fn rollback(
        &self,
        trust_domain: &TrustDomain,
        revision: u64,
        who: &str,
        now: OffsetDateTime,
    ) -> Result<Outcome, SubmitError> {
        let guard = Arc::clone(&self.inner.writer).lock_owned().await;
        let store = self.inner.store.clone();
        let td = trust_domain.clone();
        let bundle = run_blocking("rollback", move || {
            let Some(record) = store.history_entry(&td, revision)? else {
                return Ok(None);
            };
            parse_record(&record).map(Some)
        })
        .await?
        .ok_or_else(|| SubmitError::UnknownRevision {
            trust_domain: trust_domain.clone(),
            revision,
        })?;
        let source = Source::Operator {
            who: who.to_owned(),
        };
        let warnings = match self.evaluate(trust_domain, &bundle, None, &source, now)? {
            Decision::Accept { warnings } => warnings,
            Decision::Unchanged => return Ok(Outcome::Unchanged),
        };
        let mut detail = format!("rollback to revision {revision}");
        if !warnings.is_empty() {
            detail = format!("{detail}; {}", describe(&warnings));
        }
        let note = AuditNote {
            who: who.to_owned(),
            action: AuditAction::Rollback,
            detail,
        };
        let new_revision = self
            .commit(
                guard,
                Change {
                    bundle,
                    source,
                    now,
                    note,
                    fence: None,
                },
                warnings.clone(),
            )
            .await?;
        Ok(Outcome::Accepted {
            revision: new_revision,
            warnings,
        })
    }

    /// Record a successful fetch of `trust_domain` at `at` (persisted, then visible in
    /// [`TrustStore::statuses`]).
    ///
    /// # Errors
    /// A [`StoreError`] if the status cannot be made durable.
    pub async fn record_fetch_success(
        &self,
        trust_domain: &TrustDomain,
        at: OffsetDateTime,
        next_attempt: Option<OffsetDateTime>,
    ) -> Result<RelationshipStatus, StoreError> {
        self.update_status(trust_domain, move |status| {
            status.last_success = Some(at.unix_timestamp());
            status.consecutive_failures = 0;
            status.next_attempt = next_attempt.map(OffsetDateTime::unix_timestamp);
        })
        .await
    }

    /// Record a failed fetch of `trust_domain`; the stored bundle is not touched (the
    /// last good one keeps serving).
    ///
    /// # Errors
    /// A [`StoreError`] if the status cannot be made durable.
    pub async fn record_fetch_failure(
        &self,
        trust_domain: &TrustDomain,
        at: OffsetDateTime,
        code: String,
        message: String,
        next_attempt: Option<OffsetDateTime>,
    ) -> Result<RelationshipStatus, StoreError> {
        self.update_status(trust_domain, move |status| {
            status.last_error = Some(LastError {
                at: at.unix_timestamp(),
                code: Some(code),
                message,
            });
            status.consecutive_failures = status.consecutive_failures.saturating_add(1);
            status.next_attempt = next_attempt.map(OffsetDateTime::unix_timestamp);
        })
        .await
    }

    /// Append `record` to the audit log (for actions outside bundle changes, which
    /// are logged by the store itself); returns its sequence number.
    ///
    /// # Errors
    /// A [`StoreError`] if it cannot be made durable.
    pub async fn audit(&self, record: AuditRecord) -> Result<u64, StoreError> {
        let guard = Arc::clone(&self.inner.writer).lock_owned().await;
        let store = self.inner.store.clone();
        run_blocking("audit", move || {
            let _writer = guard;
            store.append_audit(&record)
        })
        .await
    }

    /// Up to `limit` audit entries after sequence number `after`, oldest first.
    ///
    /// # Errors
    /// A [`StoreError`] naming an entry that cannot be read.
    pub async fn audit_log(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, AuditRecord)>, StoreError> {
        let store = self.inner.store.clone();
        run_blocking("audit log", move || store.audit_log(after, limit)).await
    }

    /// The next `spiffe_sequence` to serve for local domain `trust_domain`: persisted,
    /// only grows, never resets, even after removal (BUN-4).
    ///
    /// # Errors
    /// A [`StoreError`] if the counter cannot be made durable.
    pub async fn next_local_sequence(&self, trust_domain: &TrustDomain) -> Result<u64, StoreError> {
        let guard = Arc::clone(&self.inner.writer).lock_owned().await;
        let store = self.inner.store.clone();
        let td = trust_domain.clone();
        run_blocking("local sequence", move || {
            let _writer = guard;
            store.next_local_sequence(&td)
        })
        .await
    }

    /// The `spiffe_sequence` for a bundle of local domain `trust_domain` whose source
    /// sets none (BUN-3, BUN-4): the stored one when the authorities are unchanged;
    /// otherwise the next value of the persisted counter, and always above the stored
    /// sequence (which a source that sets its own, e.g. SPIRE, may have put past the
    /// counter). A bundle that has a sequence keeps it.
    ///
    /// # Errors
    /// A [`StoreError`] if the counter cannot be made durable.
    pub async fn number_local(
        &self,
        trust_domain: &TrustDomain,
        bundle: &mut Bundle,
    ) -> Result<(), StoreError> {
        if bundle.sequence().is_some() {
            return Ok(());
        }
        let current = self.snapshot();
        let stored = current.get(trust_domain).map(|entry| &entry.bundle);
        let same = stored
            .filter(|stored| stored.same_authorities(bundle))
            .and_then(|stored| stored.sequence());
        let sequence = match same {
            Some(sequence) => sequence,
            None => {
                let next = self.next_local_sequence(trust_domain).await?;
                // The counter only knows the numbers it gave out; never go down.
                match stored.and_then(|stored| stored.sequence()) {
                    Some(stored) => next.max(stored.saturating_add(1)),
                    None => next,
                }
            }
        };
        bundle.set_sequence(Some(sequence));
        Ok(())
    }

    /// Take what other replicas committed to a shared store since this snapshot's
    /// revision, and publish it as one new snapshot (never moving backwards). Nothing
    /// to do for a store only this process writes. Returns the revision served.
    ///
    /// # Errors
    /// A [`StoreError`] (the database is away, a record does not parse); the snapshot
    /// is then unchanged and keeps serving.
    pub async fn catch_up(&self) -> Result<u64, StoreError> {
        let guard = Arc::clone(&self.inner.writer).lock_owned().await;
        let inner = Arc::clone(&self.inner);
        let result = run_blocking("catch up", move || {
            let _writer = guard;
            let since = inner.snapshot.load().revision;
            if let Some(changes) = inner.store.changes_since(since)? {
                inner.apply(changes)?;
            }
            Ok(inner.snapshot.load().revision)
        })
        .await;
        self.inner.observe(&result);
        result
    }

    /// Read every fetch status again from the store (with a shared store, the
    /// replica that polls a domain is the one that records its status).
    ///
    /// # Errors
    /// A [`StoreError`]; the statuses served are then unchanged.
    pub async fn reload_statuses(&self) -> Result<(), StoreError> {
        let inner = Arc::clone(&self.inner);
        run_blocking("reload statuses", move || {
            let statuses: imbl::OrdMap<TrustDomain, RelationshipStatus> =
                inner.store.statuses()?.into_iter().collect();
            inner.statuses.store(Arc::new(statuses));
            Ok(())
        })
        .await
    }

    /// The database, for records that are not bundles (the relationship registry's
    /// keyspace). Its calls block: run them with `spawn_blocking`.
    pub fn store(&self) -> &Arc<dyn Database> {
        &self.inner.store
    }

    /// Policy against the current snapshot; call with the writer lock held. A refusal
    /// is counted by trust domain and reason.
    fn evaluate(
        &self,
        expected: &TrustDomain,
        candidate: &Bundle,
        document: Option<&DocumentFacts>,
        source: &Source,
        now: OffsetDateTime,
    ) -> Result<Decision, PolicyError> {
        let snapshot = self.inner.snapshot.load();
        let current = snapshot.get(expected).map(|entry| Current {
            bundle: &entry.bundle,
            source: &entry.source,
        });
        let decision = policy::evaluate(
            expected,
            current,
            candidate,
            document,
            source,
            &self.inner.settings,
            now,
        );
        if let Err(err) = &decision {
            self.inner.metrics.inc(
                BUNDLE_REJECTIONS,
                &[("trust_domain", expected.as_str()), ("reason", err.code())],
                1.0,
            );
        }
        decision
    }

    /// Write, flush, then publish and announce, all on one blocking task that owns the
    /// writer lock.
    async fn commit(
        &self,
        guard: OwnedMutexGuard<()>,
        change: Change,
        policy_warnings: Vec<Warning>,
    ) -> Result<u64, StoreError> {
        let inner = Arc::clone(&self.inner);
        let Change {
            bundle,
            source,
            now,
            note,
            fence,
        } = change;
        let result = run_blocking("submit", move || {
            let _writer = guard;
            let td = bundle.trust_domain().clone();
            // Checked before writing so nothing can fail between durable and published.
            let accepted_at = whole_seconds(&td, now.unix_timestamp())?;
            let previous = inner.snapshot.load_full();
            let expected = previous.get(&td).map_or(Expected::Nothing, |entry| {
                Expected::Revision(entry.revision)
            });
            let new = NewBundle {
                trust_domain: td.clone(),
                document: bundle.to_json(),
                source,
                accepted_at: now.unix_timestamp(),
                sequence: bundle.sequence(),
                expected,
                fence,
            };
            let record = inner.store.put_bundle(new, note)?;
            let revision = record.revision;
            tracing::info!(
                trust_domain = %td,
                revision,
                sequence = record.sequence,
                source = %record.source,
                digest = %record.digest,
                "bundle accepted"
            );
            if revision == previous.revision.saturating_add(1) {
                let entry = entry(Arc::new(bundle), record, accepted_at);
                inner.publish(revision, &td, Some(entry));
            } else {
                // Other replicas wrote in between: take their changes with this one, in
                // order, so the snapshot never skips a revision.
                inner.catch_up_now();
            }
            inner.report_warnings(&td, &policy_warnings);
            // Published first: a rewrite, when one is due, delays the next change only.
            inner.store.maintain();
            Ok(revision)
        })
        .await;
        self.inner.observe(&result);
        result
    }

    async fn update_status(
        &self,
        trust_domain: &TrustDomain,
        change: impl FnOnce(&mut RelationshipStatus) + Send + 'static,
    ) -> Result<RelationshipStatus, StoreError> {
        let guard = Arc::clone(&self.inner.writer).lock_owned().await;
        let inner = Arc::clone(&self.inner);
        let td = trust_domain.clone();
        run_blocking("status", move || {
            let _writer = guard;
            let mut status = inner.statuses.load().get(&td).cloned().unwrap_or_default();
            change(&mut status);
            inner.store.put_status(&td, &status)?;
            let stored = status.clone();
            inner.replace_statuses(|statuses| {
                statuses.insert(td, stored);
            });
            Ok(status)
        })
        .await
    }
}

impl Inner {
    /// Swap in a snapshot with `change` applied and announce `revision`. Only called
    /// with the writer lock held and after the change is durable.
    /// Publish the snapshot at `revision` in which `td` holds `entry` (or nothing).
    /// Only the writer calls this. The persistent map is cloned in O(1) and changed
    /// in O(log n), and only the warnings the change touches are re-derived.
    fn publish(&self, revision: u64, td: &TrustDomain, entry: Option<Entry>) {
        let previous = self.snapshot.load_full();
        let mut domains = previous.domains.clone();
        let old = match entry {
            Some(entry) => domains.insert(td.clone(), Arc::new(entry)),
            None => domains.remove(td),
        };
        {
            // Only the writer publishes, so the lock is never contended. A poisoned
            // lock (a panic inside update_warnings, a bug) is taken over rather than
            // failing every later change.
            let mut index = self
                .key_index
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            update_warnings(td, old.as_ref(), &mut domains, &mut index);
        }
        self.snapshot
            .store(Arc::new(Snapshot { revision, domains }));
        self.feed.send_replace(revision);
    }

    /// Note whether a store call found the store reachable.
    fn observe<T>(&self, result: &Result<T, StoreError>) {
        let mut away = self
            .away
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match result {
            Err(err) if err.is_unreachable() => {
                let reason = err.to_string();
                match away.as_mut() {
                    Some(known) => known.reason = reason,
                    None => {
                        tracing::warn!(error = %reason, "the shared store cannot be reached; serving the last snapshot, refusing changes");
                        *away = Some(StoreAway {
                            since: OffsetDateTime::now_utc(),
                            reason,
                        });
                        self.metrics
                            .set(crate::telemetry::families::STORE_REACHABLE, &[], 0.0);
                    }
                }
            }
            Ok(_) => {
                if let Some(was) = away.take() {
                    tracing::info!(since = %was.since, "the shared store answers again");
                    self.metrics
                        .set(crate::telemetry::families::STORE_REACHABLE, &[], 1.0);
                }
            }
            Err(_) => {}
        }
    }

    /// Publish `changes` from a shared store as one snapshot at their revision.
    /// Every record is parsed before anything is swapped, so a record that does not
    /// parse leaves the snapshot as it was. Only the writer calls this.
    fn apply(&self, changes: Changes) -> Result<(), StoreError> {
        let previous = self.snapshot.load_full();
        if changes.revision <= previous.revision {
            return Ok(());
        }
        let accepted = changes
            .accepted
            .into_iter()
            .map(|record| Ok((record.trust_domain.clone(), Arc::new(load_entry(record)?))))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let mut domains = previous.domains.clone();
        {
            let mut index = self
                .key_index
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (td, entry) in accepted {
                let old = domains.insert(td.clone(), entry);
                update_warnings(&td, old.as_ref(), &mut domains, &mut index);
            }
            for td in &changes.removed {
                if let Some(old) = domains.remove(td) {
                    update_warnings(td, Some(&old), &mut domains, &mut index);
                }
            }
        }
        if !changes.removed.is_empty() {
            self.replace_statuses(|statuses| {
                for td in &changes.removed {
                    statuses.remove(td);
                }
            });
        }
        tracing::debug!(
            from = previous.revision,
            to = changes.revision,
            "caught up with the shared store"
        );
        self.snapshot.store(Arc::new(Snapshot {
            revision: changes.revision,
            domains,
        }));
        self.feed.send_replace(changes.revision);
        Ok(())
    }

    /// Catch up right after this replica's own write landed past other replicas'
    /// (its revision is not the next one). The write is durable already: if the
    /// catch-up fails, the follower's next one publishes it.
    fn catch_up_now(&self) {
        let since = self.snapshot.load().revision;
        let caught = self
            .store
            .changes_since(since)
            .and_then(|changes| changes.map_or(Ok(()), |changes| self.apply(changes)));
        if let Err(err) = caught {
            tracing::warn!(error = %err, "could not read the other replicas' changes after a write; the next catch-up publishes it");
        }
    }

    /// Log and count what is odd about the bundle just accepted for `td`: the
    /// policy's warnings on the submission and the stored bundle's own warnings.
    fn report_warnings(&self, td: &TrustDomain, policy_warnings: &[Warning]) {
        let snapshot = self.snapshot.load();
        let stored = snapshot
            .get(td)
            .map_or(&[][..], |entry| &entry.warnings[..]);
        // One line per kind of warning, however many authorities it concerns: a
        // peer's bundle of a thousand CAs without a SPIFFE ID is one line, not a
        // thousand (the count and the first example are shown).
        let mut by_code: std::collections::BTreeMap<&'static str, (usize, String)> =
            std::collections::BTreeMap::new();
        for (code, message) in policy_warnings
            .iter()
            .map(|w| (w.code(), w.to_string()))
            .chain(stored.iter().map(|w| (w.code(), w.to_string())))
        {
            by_code.entry(code).or_insert((0, message)).0 += 1;
        }
        for (code, (count, first)) in by_code {
            let first = crate::telemetry::log_guard::Clip::new(&first);
            if count == 1 {
                tracing::warn!(trust_domain = %td, warning = code, "accepted bundle: {first}");
            } else {
                tracing::warn!(trust_domain = %td, warning = code, count, "accepted bundle: {count} warnings like: {first}");
            }
            #[expect(
                clippy::cast_precision_loss,
                reason = "a count of warnings, far below 2^53"
            )]
            let by = count as f64;
            self.metrics.inc(
                BUNDLE_WARNINGS,
                &[("trust_domain", td.as_str()), ("warning", code)],
                by,
            );
        }
    }

    fn replace_statuses(
        &self,
        change: impl FnOnce(&mut imbl::OrdMap<TrustDomain, RelationshipStatus>),
    ) {
        let mut statuses = imbl::OrdMap::clone(&self.statuses.load());
        change(&mut statuses);
        self.statuses.store(Arc::new(statuses));
    }
}

impl fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let snapshot = self.inner.snapshot.load();
        f.debug_struct("TrustStore")
            .field("revision", &snapshot.revision)
            .field("domains", &snapshot.domains.len())
            .finish_non_exhaustive()
    }
}

/// The database `storage` selects: sled in directory `path`, or the PostgreSQL
/// database of `[storage.postgres]`. Blocks.
fn open_database(
    path: &Path,
    storage: StorageConfig,
    metrics: Metrics,
) -> Result<Arc<dyn Database>, StoreError> {
    match (storage.backend, storage.postgres.clone()) {
        (StorageBackend::Postgres, Some(postgres)) => {
            Ok(Arc::new(PgStore::open(&postgres, storage, metrics)?))
        }
        (StorageBackend::Postgres, None) => Err(StoreError::PostgresSettings {
            problem: "storage.backend is \"postgres\" but [storage.postgres] is missing".into(),
        }),
        (StorageBackend::Sled, _) => Ok(Arc::new(Store::open_with(path, storage, metrics)?)),
    }
}

/// One accepted bundle on its way to the store.
struct Change {
    bundle: Bundle,
    source: Source,
    now: OffsetDateTime,
    note: AuditNote,
    fence: Option<Fence>,
}

/// How many times a submission is judged again after another replica changed its
/// domain first.
const STALE_RETRIES: u32 = 3;

/// Run a store call on the blocking pool.
async fn run_blocking<T: Send + 'static>(
    operation: &'static str,
    call: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|source| StoreError::Blocking { operation, source })?
}

fn describe(warnings: &[Warning]) -> String {
    warnings
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::io::Write as _;
    use std::process::Command;

    use time::Duration;

    use super::*;
    use crate::trust::db::postgres::testing::TestDatabase;
    use crate::trust::policy::BundleWarning;
    use crate::trust::policy::testing::{bundle, ca_with_key, now, td, with_sequence};

    fn fetched() -> Source {
        let url: url::Url = "https://peer.example/bundle".parse().unwrap();
        Source::Fetched {
            final_url: url.clone(),
            url,
            peer: "192.0.2.7:443".into(),
        }
    }

    async fn open(dir: &tempfile::TempDir) -> TrustStore {
        TrustStore::open(dir.path(), PolicySettings::default())
            .await
            .unwrap()
    }

    /// A trust store on the test database `db`, its last-known-good copy in `dir`:
    /// one replica.
    pub(super) async fn replica(db: &TestDatabase, dir: &Path) -> TrustStore {
        TrustStore::open_with(
            dir,
            PolicySettings::default(),
            db.storage_with(StorageConfig::default()),
        )
        .await
        .unwrap_or_else(|err| panic!("{err}"))
    }

    /// Where a test's trust store keeps what it stores: a sled data directory, or a
    /// fresh database on the test PostgreSQL server (with the data directory that
    /// holds its last-known-good copy).
    enum Place {
        Sled(tempfile::TempDir),
        Postgres(tempfile::TempDir, TestDatabase),
    }

    impl Place {
        fn sled() -> Self {
            Self::Sled(tempfile::tempdir().unwrap())
        }

        fn postgres() -> Self {
            Self::Postgres(tempfile::tempdir().unwrap(), TestDatabase::new())
        }

        /// A trust store on this place: the first, or one reopened after the last
        /// was dropped (a restart).
        async fn open(&self) -> TrustStore {
            match self {
                Self::Sled(dir) => open(dir).await,
                Self::Postgres(dir, db) => replica(db, dir.path()).await,
            }
        }
    }

    /// Each test body as two tests, `on_sled::<name>` and `on_postgres::<name>`,
    /// given its [`Place`].
    macro_rules! on_both_stores {
        ($($(#[$meta:meta])* async fn $name:ident($place:ident) $body:block)*) => {
            mod on_sled {
                use super::*;
                $(
                    $(#[$meta])*
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let $place = Place::sled();
                        $body
                    }
                )*
            }
            mod on_postgres {
                use super::*;
                $(
                    $(#[$meta])*
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let $place = Place::postgres();
                        $body
                    }
                )*
            }
        };
    }

    async fn accept(store: &TrustStore, bundle: &Bundle) -> u64 {
        let outcome = store
            .submit(bundle.trust_domain(), bundle.clone(), fetched(), now())
            .await
            .unwrap();
        match outcome {
            Outcome::Accepted { revision, .. } => revision,
            Outcome::Unchanged => panic!("expected an accepted change"),
        }
    }

    fn codes(store: &TrustStore, td: &TrustDomain) -> Vec<&'static str> {
        let snapshot = store.snapshot();
        let entry = snapshot.get(td).unwrap();
        entry.warnings.iter().map(BundleWarning::code).collect()
    }

    // Every test below runs twice from one body: on a sled directory and on a fresh
    // PostgreSQL database (`on_sled::…` and `on_postgres::…`).
    on_both_stores! {
        async fn accepted_change_is_visible_in_snapshot_and_feed(place) {
            let store = place.open().await;
            let mut feed = store.subscribe();
            let east = td("east.example");
            let b = bundle(&east, Some(1));

            let outcome = store
                .submit(&east, b.clone(), fetched(), now())
                .await
                .unwrap();
            assert_eq!(
                outcome,
                Outcome::Accepted {
                    revision: 1,
                    warnings: vec![]
                }
            );
            assert!(feed.has_changed().unwrap());
            assert_eq!(*feed.borrow_and_update(), 1);
            let snapshot = store.snapshot();
            assert_eq!(snapshot.revision, 1);
            let entry = snapshot.get(&east).unwrap();
            assert_eq!(*entry.bundle, b);
            assert_eq!(entry.json, b.to_json());
            assert_eq!(entry.digest, crate::digest::sha256_hex(&b.to_json()));
            assert_eq!(entry.sequence, Some(1));
            assert_eq!(entry.source, fetched());
            assert_eq!(entry.accepted_at, now());
        }

        async fn sto_2_rejected_regression_leaves_bytes_identical(place) {
            let store = place.open().await;
            let east = td("east.example");
            accept(&store, &bundle(&east, Some(5))).await;
            let before = store.snapshot();
            let feed = store.subscribe();

            let err = store
                .submit(&east, bundle(&east, Some(4)), fetched(), now())
                .await
                .unwrap_err();
            assert!(matches!(
                err,
                SubmitError::Rejected(PolicyError::SequenceRegression {
                    current: 5,
                    candidate: 4,
                    ..
                })
            ));
            let after = store.snapshot();
            assert!(Arc::ptr_eq(&before, &after), "snapshot not swapped");
            assert!(!feed.has_changed().unwrap(), "nothing announced");
            assert_eq!(
                store.history(&east).await.unwrap().len(),
                1,
                "sled untouched"
            );
            drop(store);
            let reopened = place.open().await;
            assert_eq!(
                reopened.snapshot().get(&east).unwrap().json,
                before.get(&east).unwrap().json
            );
            assert_eq!(reopened.snapshot().revision, 1);
        }

        async fn fed_7_bundle_of_another_domain_is_rejected(place) {
            let store = place.open().await;
            let err = store
                .submit(
                    &td("east.example"),
                    bundle(&td("west.example"), None),
                    fetched(),
                    now(),
                )
                .await
                .unwrap_err();
            assert!(matches!(
                err,
                SubmitError::Rejected(PolicyError::TrustDomainMismatch { .. })
            ));
            assert!(store.snapshot().domains.is_empty());
        }

        async fn poll_1_unchanged_bundle_is_not_announced(place) {
            let store = place.open().await;
            let east = td("east.example");
            let b = bundle(&east, Some(2));
            accept(&store, &b).await;
            let feed = store.subscribe();
            let outcome = store.submit(&east, b, fetched(), now()).await.unwrap();
            assert_eq!(outcome, Outcome::Unchanged);
            assert!(!feed.has_changed().unwrap());
            assert_eq!(store.snapshot().revision, 1);
        }

        async fn sto_1_restart_serves_everything_stored(place) {
            let store = place.open().await;
            for name in ["a.example", "b.example", "c.example"] {
                accept(&store, &bundle(&td(name), Some(1))).await;
            }
            store
                .record_fetch_success(&td("a.example"), now(), Some(now() + Duration::minutes(5)))
                .await
                .unwrap();
            let before = store.snapshot();
            let statuses = store.statuses();
            drop(store);

            let store = place.open().await;
            let after = store.snapshot();
            assert_eq!(after.revision, before.revision);
            assert_eq!(*store.subscribe().borrow(), before.revision);
            assert_eq!(
                after.domains.keys().collect::<Vec<_>>(),
                before.domains.keys().collect::<Vec<_>>()
            );
            for (td, entry) in &before.domains {
                let reloaded = after.get(td).unwrap();
                assert_eq!(reloaded.bundle, entry.bundle);
                assert_eq!(reloaded.json, entry.json);
                assert_eq!(reloaded.digest, entry.digest);
                assert_eq!(reloaded.source, entry.source);
                assert_eq!(reloaded.accepted_at, entry.accepted_at);
                assert_eq!(reloaded.revision, entry.revision);
            }
            assert_eq!(store.statuses(), statuses);
        }

        async fn revision_strictly_increases(place) {
            let store = place.open().await;
            let east = td("east.example");
            let mut last = store.snapshot().revision;
            for sequence in 1..=5 {
                let revision = accept(&store, &bundle(&east, Some(sequence))).await;
                assert!(revision > last, "{revision} after {last}");
                last = revision;
            }
            let removed = store.remove(&east, "alice", now()).await.unwrap().unwrap();
            assert!(removed > last);
        }

        async fn concurrent_submits_all_land_with_unique_revisions(place) {
            let store = place.open().await;
            let mut tasks = tokio::task::JoinSet::new();
            for writer in 0..8 {
                let store = store.clone();
                let bundles: Vec<Bundle> = (0..4)
                    .map(|n| bundle(&td(&format!("d{writer}.example")), Some(n + 1)))
                    .collect();
                tasks.spawn(async move {
                    let mut revisions = Vec::new();
                    for b in bundles {
                        revisions.push(accept(&store, &b).await);
                    }
                    revisions
                });
            }
            let mut all = Vec::new();
            while let Some(revisions) = tasks.join_next().await {
                all.extend(revisions.unwrap());
            }
            let unique: BTreeSet<u64> = all.iter().copied().collect();
            assert_eq!(unique.len(), 32, "every submit got its own revision");
            assert_eq!(unique, (1..=32).collect());
            let snapshot = store.snapshot();
            assert_eq!(snapshot.revision, 32);
            assert_eq!(snapshot.domains.len(), 8);
            assert!(snapshot.domains.values().all(|e| e.sequence == Some(4)));
        }

        async fn poll_4_removal_drops_the_domain_and_announces(place) {
            let store = place.open().await;
            let east = td("east.example");
            let west = td("west.example");
            accept(&store, &bundle(&east, Some(1))).await;
            accept(&store, &bundle(&west, Some(1))).await;
            store
                .record_fetch_failure(&east, now(), "timeout".into(), "timeout".into(), None)
                .await
                .unwrap();
            let mut feed = store.subscribe();

            let revision = store.remove(&east, "alice", now()).await.unwrap();
            assert_eq!(revision, Some(3));
            assert!(feed.has_changed().unwrap());
            assert_eq!(*feed.borrow_and_update(), 3);
            let snapshot = store.snapshot();
            assert!(snapshot.get(&east).is_none());
            assert!(snapshot.get(&west).is_some());
            assert!(!store.statuses().contains_key(&east));
            assert_eq!(store.history(&east).await.unwrap().len(), 1, "history kept");
            let log = store.audit_log(0, 100).await.unwrap();
            assert_eq!(log.last().unwrap().1.action, AuditAction::Remove);

            assert_eq!(store.remove(&east, "alice", now()).await.unwrap(), None);
            assert!(!feed.has_changed().unwrap(), "removing nothing is silent");
            drop(store);
            assert!(place.open().await.snapshot().get(&east).is_none());
        }

        async fn rollback_reaccepts_a_past_version_as_operator(place) {
            let store = place.open().await;
            let east = td("east.example");
            let v1 = bundle(&east, Some(1));
            let v2 = bundle(&east, Some(2));
            let r1 = accept(&store, &v1).await;
            accept(&store, &v2).await;

            let outcome = store.rollback(&east, r1, "alice", now()).await.unwrap();
            assert_eq!(
                outcome,
                Outcome::Accepted {
                    revision: 3,
                    warnings: vec![]
                }
            );
            let entry = store.snapshot().get(&east).cloned().unwrap();
            assert_eq!(*entry.bundle, v1);
            assert_eq!(
                entry.source,
                Source::Operator {
                    who: "alice".into()
                }
            );
            let log = store.audit_log(0, 100).await.unwrap();
            let (_, last) = log.last().unwrap();
            assert_eq!(last.action, AuditAction::Rollback);
            assert_eq!(last.who, "alice");
            assert_eq!(last.new_digest.as_deref(), Some(entry.digest.as_str()));

            // L-5: the override reset the baseline; the next fetch replaces it.
            assert_eq!(accept(&store, &with_sequence(&v2, Some(2))).await, 4);
            assert!(matches!(
                store.rollback(&east, 99, "alice", now()).await,
                Err(SubmitError::UnknownRevision { revision: 99, .. })
            ));
        }

        async fn fetch_status_is_persisted_and_readable_lock_free(place) {
            let store = place.open().await;
            let east = td("east.example");
            let later = now() + Duration::minutes(1);
            store
                .record_fetch_failure(
                    &east,
                    now(),
                    "connect".into(),
                    "connection refused".into(),
                    Some(later),
                )
                .await
                .unwrap();
            let status = store
                .record_fetch_failure(&east, later, "timeout".into(), "timeout".into(), None)
                .await
                .unwrap();
            assert_eq!(status.consecutive_failures, 2);
            assert_eq!(status.last_error.as_ref().unwrap().message, "timeout");
            let status = store
                .record_fetch_success(&east, later, Some(later))
                .await
                .unwrap();
            assert_eq!(status.consecutive_failures, 0);
            assert_eq!(status.last_success, Some(later.unix_timestamp()));
            assert!(
                status.last_error.is_some(),
                "last error kept for the operator"
            );
            assert_eq!(store.statuses().get(&east), Some(&status));
            drop(store);
            assert_eq!(place.open().await.statuses().get(&east), Some(&status));
        }

        async fn bun_4_local_sequence_never_resets(place) {
            let store = place.open().await;
            let local = td("local.example");
            assert_eq!(store.next_local_sequence(&local).await.unwrap(), 1);
            accept(&store, &bundle(&local, Some(1))).await;
            store.remove(&local, "alice", now()).await.unwrap();
            assert_eq!(store.next_local_sequence(&local).await.unwrap(), 2);
            drop(store);
            let store = place.open().await;
            assert_eq!(store.next_local_sequence(&local).await.unwrap(), 3);
        }

        async fn sto_2_refusals_are_counted_by_trust_domain_and_reason(place) {
            let store = place.open().await;
            let east = td("east.example");
            accept(&store, &bundle(&east, Some(5))).await;
            let count = |reason: &'static str| {
                store.metrics().value(
                    BUNDLE_REJECTIONS,
                    &[("trust_domain", "east.example"), ("reason", reason)],
                )
            };
            assert_eq!(count("sequence_regression"), None);
            for _ in 0..2 {
                store
                    .submit(&east, bundle(&east, Some(4)), fetched(), now())
                    .await
                    .unwrap_err();
            }
            let other = bundle(&td("west.example"), Some(9));
            store
                .submit(&east, other, fetched(), now())
                .await
                .unwrap_err();
            assert_eq!(count("sequence_regression"), Some(2.0));
            assert_eq!(count("trust_domain_mismatch"), Some(1.0));
            let text = store.metrics().render();
            assert!(
                text.contains("# TYPE fedgw_bundle_rejections_total counter"),
                "{text}"
            );
        }

        /// A document whose elements were all left out, and an empty `keys` list where
        /// revocation is not allowed, change nothing (same bytes, same revision, no
        /// announcement) and are counted under their codes; where revocation is allowed the
        /// empty list is stored as a revocation.
        async fn all_ignored_and_refused_revocations_leave_the_stored_bundle(place) {
            let store = place.open().await;
            let east = td("east.example");
            accept(&store, &bundle(&east, Some(5))).await;
            let before = store.snapshot();
            let mut feed = store.subscribe();
            feed.borrow_and_update();
            let submit = |document: &'static [u8], allow_revocation: bool| {
                let store = store.clone();
                let east = east.clone();
                async move {
                    let parsed = Bundle::parse(&east, document).unwrap();
                    let facts = DocumentFacts {
                        elements: parsed.ignored_summary(),
                        allow_revocation,
                    };
                    store
                        .submit_document(&east, parsed.bundle, facts, fetched(), now())
                        .await
                }
            };
            let err = submit(br#"{"keys":[{}],"spiffe_sequence":6}"#, true).await;
            assert!(
                matches!(
                    err,
                    Err(SubmitError::Rejected(PolicyError::AllElementsIgnored {
                        stored: true,
                        ..
                    }))
                ),
                "{err:?}"
            );
            let err = submit(br#"{"keys":[],"spiffe_sequence":6}"#, false).await;
            assert!(
                matches!(
                    err,
                    Err(SubmitError::Rejected(PolicyError::RevocationRefused {
                        stored: true,
                        ..
                    }))
                ),
                "{err:?}"
            );
            let after = store.snapshot();
            assert_eq!(after.revision, before.revision);
            assert_eq!(
                after.get(&east).unwrap().json,
                before.get(&east).unwrap().json
            );
            assert!(!feed.has_changed().unwrap());
            for reason in ["all_elements_ignored", "revocation_refused"] {
                let labels = [("trust_domain", "east.example"), ("reason", reason)];
                assert_eq!(
                    store.metrics().value(BUNDLE_REJECTIONS, &labels),
                    Some(1.0),
                    "{reason}"
                );
            }

            let outcome = submit(br#"{"keys":[],"spiffe_sequence":6}"#, true)
                .await
                .unwrap();
            assert!(
                matches!(&outcome, Outcome::Accepted { warnings, .. } if warnings == &[Warning::Revocation]),
                "{outcome:?}"
            );
            assert!(store.snapshot().get(&east).unwrap().bundle.is_empty());
        }

        async fn sec_7_shared_key_is_warned_on_both_entries_logged_and_counted(place) {
            let store = place.open().await;
            let (a, b) = (td("a.example"), td("b.example"));
            let key = rcgen::KeyPair::generate().unwrap();
            let year = now() + Duration::days(365);
            let mut in_a = Bundle::new(a.clone());
            in_a.add_x509_authority(ca_with_key(&key, Some(&a), year));
            let mut in_b = Bundle::new(b.clone());
            in_b.add_x509_authority(ca_with_key(&key, Some(&b), year));
            accept(&store, &in_a).await;
            assert!(store.snapshot().get(&a).unwrap().warnings.is_empty());

            let outcome = store.submit(&b, in_b, fetched(), now()).await.unwrap();
            assert!(matches!(outcome, Outcome::Accepted { .. }), "not a refusal");
            assert_eq!(codes(&store, &a), ["shared_ca_key"]);
            assert_eq!(codes(&store, &b), ["shared_ca_key"]);
            let counted = store.metrics().value(
                BUNDLE_WARNINGS,
                &[("trust_domain", "b.example"), ("warning", "shared_ca_key")],
            );
            assert_eq!(counted, Some(1.0));
            drop(store);

            // Recomputed from what is stored: after a restart, and when b goes.
            let store = place.open().await;
            assert_eq!(codes(&store, &a), ["shared_ca_key"]);
            store.remove(&b, "alice", now()).await.unwrap();
            assert!(store.snapshot().get(&a).unwrap().warnings.is_empty());
        }

        /// Every entry's warnings after each change equal those derived from scratch over
        /// all stored bundles, although a change re-derives only the domains it touches;
        /// untouched entries are the same allocation as in the previous snapshot.
        async fn sec_7_warnings_follow_each_change_and_untouched_entries_are_shared(place) {
            fn from_scratch(snapshot: &Snapshot) -> BTreeMap<TrustDomain, Vec<BundleWarning>> {
                policy::bundle_warnings(
                    snapshot
                        .domains
                        .iter()
                        .map(|(td, entry)| (td, entry.bundle.as_ref())),
                )
            }
            fn held(snapshot: &Snapshot) -> BTreeMap<TrustDomain, Vec<BundleWarning>> {
                snapshot
                    .domains
                    .iter()
                    .map(|(td, entry)| (td.clone(), entry.warnings.clone()))
                    .collect()
            }
            let store = place.open().await;
            let (a, b, c) = (td("a.example"), td("b.example"), td("c.example"));
            let key = rcgen::KeyPair::generate().unwrap();
            let year = now() + Duration::days(365);
            let shared_with = |td: &TrustDomain, sequence: u64| {
                let mut bundle = Bundle::new(td.clone());
                bundle.add_x509_authority(ca_with_key(&key, Some(td), year));
                bundle.set_sequence(Some(sequence));
                bundle
            };
            let own = |td: &TrustDomain, sequence: u64| {
                let mut bundle = Bundle::new(td.clone());
                bundle.add_x509_authority(ca_with_key(
                    &rcgen::KeyPair::generate().unwrap(),
                    Some(td),
                    year,
                ));
                bundle.set_sequence(Some(sequence));
                bundle
            };
            accept(&store, &shared_with(&a, 1)).await;
            accept(&store, &own(&c, 1)).await;
            accept(&store, &shared_with(&b, 1)).await;
            let before = store.snapshot();
            assert_eq!(codes(&store, &a), ["shared_ca_key"]);
            assert_eq!(codes(&store, &b), ["shared_ca_key"]);
            assert_eq!(held(&before), from_scratch(&before));

            // b moves to a key of its own: a's warning goes with it; c is untouched.
            accept(&store, &own(&b, 2)).await;
            let after = store.snapshot();
            assert!(codes(&store, &a).is_empty() && codes(&store, &b).is_empty());
            assert_eq!(held(&after), from_scratch(&after));
            assert!(Arc::ptr_eq(&before.domains[&c], &after.domains[&c]));
            assert!(!Arc::ptr_eq(&before.domains[&a], &after.domains[&a]));

            // ... and back; then c joins the shared key: all three warn, twice each.
            accept(&store, &shared_with(&b, 3)).await;
            accept(&store, &shared_with(&c, 2)).await;
            let last = store.snapshot();
            assert_eq!(held(&last), from_scratch(&last));
            assert_eq!(codes(&store, &a), ["shared_ca_key", "shared_ca_key"]);
            store.remove(&a, "alice", now()).await.unwrap();
            let removed = store.snapshot();
            assert_eq!(held(&removed), from_scratch(&removed));
            assert_eq!(codes(&store, &b), ["shared_ca_key"]);
        }

        async fn bun_3_local_bundle_without_a_sequence_is_numbered(place) {
            let store = place.open().await;
            let local = td("local.example");
            let mut first = bundle(&local, None);
            store.number_local(&local, &mut first).await.unwrap();
            assert_eq!(first.sequence(), Some(1));
            accept(&store, &first).await;
            // Same authorities: the same number (no churn); new ones: a higher number.
            let mut again = with_sequence(&first, None);
            store.number_local(&local, &mut again).await.unwrap();
            assert_eq!(again.sequence(), Some(1));
            let mut changed = bundle(&local, None);
            store.number_local(&local, &mut changed).await.unwrap();
            assert_eq!(changed.sequence(), Some(2));
            // Above a stored sequence the source set itself, and never replacing one.
            accept(&store, &with_sequence(&changed, Some(100))).await;
            let mut after = bundle(&local, None);
            store.number_local(&local, &mut after).await.unwrap();
            assert_eq!(after.sequence(), Some(101));
            let mut explicit = bundle(&local, Some(7));
            store.number_local(&local, &mut explicit).await.unwrap();
            assert_eq!(explicit.sequence(), Some(7));
        }
    }

    /// Set only for the child process of `sto_1_acknowledged_changes_survive_abort`.
    const ABORT_CHILD_DIR: &str = "FEDGW_TEST_STO_1_ABORT_CHILD_DIR";
    const ABORT_CHILD_SUBMITS: u64 = 24;

    /// Child half of the crash test; does nothing unless the parent set
    /// [`ABORT_CHILD_DIR`]. Submits bundles, prints `ACK <td> <revision> <digest>` for
    /// each acknowledged one, then aborts like `kill -9` (no destructors, no flush).
    #[tokio::test]
    async fn sto_1_abort_child() {
        let Some(dir) = std::env::var_os(ABORT_CHILD_DIR) else {
            return;
        };
        let store = TrustStore::open(&dir, PolicySettings::default())
            .await
            .unwrap();
        let mut stdout = std::io::stdout().lock();
        for n in 1..=ABORT_CHILD_SUBMITS {
            let domain = td(&format!("d{}.example", n % 4));
            let revision = accept(&store, &bundle(&domain, Some(n))).await;
            let digest = store.snapshot().get(&domain).unwrap().digest.clone();
            writeln!(stdout, "ACK {domain} {revision} {digest}").unwrap();
            stdout.flush().unwrap();
        }
        std::process::abort();
    }

    #[tokio::test]
    async fn sto_1_acknowledged_changes_survive_abort() {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "trust::store::tests::sto_1_abort_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ABORT_CHILD_DIR, dir.path())
            .output()
            .unwrap();
        assert!(
            !output.status.success(),
            "the child must die by abort: {output:?}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt as _;
            assert_eq!(output.status.signal(), Some(6), "SIGABRT: {output:?}");
        }
        let stdout = String::from_utf8(output.stdout).unwrap();
        let acks: Vec<(TrustDomain, u64, String)> = stdout
            .lines()
            // libtest may print "test ... " on the same line as the first ACK.
            .filter_map(|line| line.split_once("ACK ").map(|(_, ack)| ack))
            .map(|ack| {
                let parts: Vec<&str> = ack.split(' ').collect();
                (td(parts[0]), parts[1].parse().unwrap(), parts[2].to_owned())
            })
            .collect();
        assert_eq!(acks.len() as u64, ABORT_CHILD_SUBMITS, "{stdout}");

        let store = open(&dir).await;
        let snapshot = store.snapshot();
        let mut latest = BTreeMap::new();
        for (domain, revision, digest) in &acks {
            let history = store.history(domain).await.unwrap();
            assert!(
                history
                    .iter()
                    .any(|r| r.revision == *revision && r.digest == *digest),
                "{domain}@{revision} lost"
            );
            latest.insert(domain.clone(), (*revision, digest.clone()));
        }
        for (domain, (revision, digest)) in latest {
            let entry = snapshot.get(&domain).unwrap();
            assert_eq!((entry.revision, &entry.digest), (revision, &digest));
        }
        assert_eq!(snapshot.revision, ABORT_CHILD_SUBMITS);
    }
}
