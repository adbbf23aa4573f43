//! [`PgStore`]: the [`Database`] on a PostgreSQL server, shared by every replica.
//!
//! Owns the SQL of every store call. Each call that changes something is one
//! transaction; a change of a bundle (and every audit append) first locks the one
//! `fedgw_meta` row, which serialises them across replicas and makes revisions commit
//! in the order they are given out. A committed change is durable as PostgreSQL makes
//! it (`synchronous_commit`, its WAL), and announced with `NOTIFY fedgw_changes` at
//! commit. The records are the same serde_json encodings the sled [`Store`](super::Store)
//! keeps, so both hold the same bytes and a copy between them is exact.
//!
//! The methods block, like every [`Database`] call: each runs on the store's own small
//! tokio runtime (a thread of its own, so a caller on a blocking thread of another
//! runtime, or on no runtime at all, can use it) and gives up after
//! `storage.postgres.statement_timeout` with [`StoreError::PostgresTimeout`]. What it
//! keeps is bounded as `[storage]` says, like the sled store; PostgreSQL's own
//! autovacuum gives space back, so [`Database::maintain`] does nothing here.
//!
//! Schema and migrations: [`schema`]. Connections, TLS and passwords: `connect`.

mod connect;
pub mod leases;
pub mod schema;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use deadpool_postgres::{GenericClient, Object, Pool, Transaction};
use spiffe_federation::TrustDomain;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

use super::retention::bound_audit;
use super::{
    AuditRecord, BundleRecord, Changes, Database, DigestOf, Dump, Fence, Keyspace, NewBundle,
    RelationshipRecord, RelationshipStatus, StoreError, StoreUsage, decode, describe_key, encode,
    history_key,
};
use crate::config::storage::{PostgresConfig, StorageConfig};
use crate::digest::sha256_hex;
use crate::telemetry::Metrics;
use crate::trust::db::AuditNote;

/// The channel every change of a bundle is announced on, with the new revision as
/// its payload.
pub const CHANGES_CHANNEL: &str = "fedgw_changes";

/// The channel every change of a relationship created through the API is announced on.
pub const RELATIONSHIPS_CHANNEL: &str = "fedgw_relationships";

/// Wake-ups for a replica that follows the others ([`PgStore::listen`]). Each is a
/// [`Notify`]: any number of announcements between two looks at it count as one.
#[derive(Debug, Default)]
pub struct Signals {
    /// A bundle was accepted or removed somewhere, or the listening connection was
    /// (re)made and what happened meanwhile is unknown.
    pub bundles: Notify,
    /// A relationship created through the API changed somewhere, or as above.
    pub relationships: Notify,
}

/// The PostgreSQL store. Cloning is cheap: every clone is the same pool.
#[derive(Clone)]
pub struct PgStore {
    shared: Arc<Shared>,
}

struct Shared {
    /// Runs the driver's connections and every call's future; `None` only while
    /// being dropped.
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    /// Dials the listening connection.
    dialer: connect::Dialer,
    settings: StorageConfig,
    metrics: Metrics,
    timeout: Duration,
    /// The URL, for logs and `Debug` (it holds no password).
    url: String,
    /// Whether the schema was checked and migrated (the first call that reaches the
    /// server does it).
    prepared: std::sync::atomic::AtomicBool,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which a tokio worker may not do; let it go in
        // the background instead.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The `fedgw_meta` row, read under its lock.
#[derive(Debug, Clone, Copy)]
struct Meta {
    revision: u64,
    audit_seq: u64,
    audit_entries: u64,
    audit_bytes: u64,
}

impl PgStore {
    /// Connect to the database `config` names, bring its schema to this build's
    /// version, and trim history and the audit log to `settings`. Blocks; call it on a
    /// blocking thread.
    ///
    /// # Errors
    /// [`StoreError::PostgresSettings`] for a password or CA file that cannot be used,
    /// [`StoreError::PostgresPool`] or [`StoreError::PostgresTimeout`] when the server
    /// cannot be reached, [`StoreError::PostgresSchemaTooNew`], or the database's error.
    pub fn open(
        config: &PostgresConfig,
        settings: StorageConfig,
        metrics: Metrics,
    ) -> Result<Self, StoreError> {
        let store = Self::new(config, settings, metrics)?;
        store.block("open", async { Ok(()) })?;
        tracing::info!(url = %store.shared.url, "PostgreSQL store open");
        Ok(store)
    }

    /// The store `config` describes, without reaching the server: the schema is
    /// checked (and migrated, and history and the audit log trimmed) by the first
    /// call that reaches it. For a replica that starts while the database is away and
    /// serves its last-known-good copy meanwhile. Blocks only to start the store's
    /// runtime.
    ///
    /// # Errors
    /// [`StoreError::PostgresSettings`] for a password or CA file that cannot be used.
    pub fn new(
        config: &PostgresConfig,
        settings: StorageConfig,
        metrics: Metrics,
    ) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fedgw-postgres")
            .enable_all()
            .build()
            .map_err(|err| StoreError::PostgresSettings {
                problem: format!("cannot start the store's runtime: {err}"),
            })?;
        // The pool's timers need a runtime when it is built.
        let (pool, dialer) = {
            let _entered = runtime.enter();
            connect::pool(config)?
        };
        Ok(Self {
            shared: Arc::new(Shared {
                runtime: Some(runtime),
                pool,
                dialer,
                settings,
                metrics,
                timeout: config.statement_timeout.duration(),
                url: config.url.clone(),
                prepared: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// Bring the schema to this build's version and trim what is kept, once.
    async fn prepare(&self) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        if self.shared.prepared.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut client = self.client("open").await?;
        let tx = client.transaction().await.map_err(pg("open", None))?;
        schema::upgrade(&tx).await?;
        self.trim_everything(&tx).await?;
        tx.commit().await.map_err(pg("open", None))?;
        self.shared.prepared.store(true, Ordering::Release);
        Ok(())
    }

    /// The URL of the database (no password).
    pub fn url(&self) -> &str {
        &self.shared.url
    }

    /// Listen for what any replica commits, waking `signals` for each, until the
    /// connection ends (`Ok`) or fails. Runs on the caller's runtime and does not
    /// block. Both signals are woken once listening starts: whatever was committed
    /// while nobody listened must be caught up.
    ///
    /// # Errors
    /// The connection could not be made or broke.
    pub async fn listen(&self, signals: &Signals) -> Result<(), StoreError> {
        let dialer = self.shared.dialer.clone();
        let limit = self.shared.timeout;
        let connecting = async {
            match dialer.tls {
                Some(tls) => {
                    let connected = tokio::time::timeout(limit, dialer.driver.connect(tls))
                        .await
                        .map_err(|_| ListenError::Timeout)?;
                    listen_on(connected, signals, &self.shared.metrics).await
                }
                None => {
                    let connected =
                        tokio::time::timeout(limit, dialer.driver.connect(tokio_postgres::NoTls))
                            .await
                            .map_err(|_| ListenError::Timeout)?;
                    listen_on(connected, signals, &self.shared.metrics).await
                }
            }
        };
        let listening = Listening(&self.shared.metrics);
        let result = connecting.await;
        drop(listening);
        result.map_err(|err| match err {
            ListenError::Store(err) => err,
            ListenError::Timeout => StoreError::PostgresTimeout {
                operation: "listen",
                seconds: limit.as_secs(),
            },
        })
    }

    /// Run `call` on the store's runtime, bounded by the statement timeout (after the
    /// schema check and trim of the first call, bounded on its own).
    fn block<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let runtime = self
            .shared
            .runtime
            .as_ref()
            .ok_or_else(|| StoreError::PostgresSettings {
                problem: "the store is closing".into(),
            })?;
        let timeout = self.shared.timeout;
        runtime.block_on(async move {
            // The first call also checks the schema and trims: a call of its own,
            // with its own time (it makes more round trips than any other).
            let result = match within(timeout, "open", self.prepare()).await {
                Ok(()) => within(timeout, operation, call).await,
                Err(err) => Err(err),
            };
            if result.as_ref().is_err_and(StoreError::is_unreachable) {
                // A call that got no answer may have left its connection waiting on
                // a dead peer, back in the pool: drop every idle one, so the next
                // call dials afresh instead of queueing behind it.
                self.shared.pool.retain(|_, _| false);
            }
            result
        })
    }

    async fn client(&self, operation: &'static str) -> Result<Object, StoreError> {
        self.shared
            .pool
            .get()
            .await
            .map_err(|source| StoreError::PostgresPool { operation, source })
    }

    /// Trim every domain's history and the audit log to the settings, recounting the
    /// audit log's size (run when the store opens, as the sled store does).
    async fn trim_everything(&self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        let op = "open";
        let mut meta = lock_meta(tx, op).await?;
        let row = tx
            .cached_query_one(
                "SELECT count(*), coalesce(sum(8 + octet_length(record)), 0)::bigint FROM fedgw_audit",
                &[],
            )
            .await
            .map_err(pg(op, None))?;
        meta.audit_entries = from_db(row.get(0));
        meta.audit_bytes = from_db(row.get(1));
        trim_all_histories(tx, &self.shared.settings).await?;
        trim_audit(tx, &mut meta, &self.shared.settings).await?;
        write_meta(tx, &meta, op).await
    }

    /// Append `record` (cut to the audit bounds) under the next sequence number,
    /// keeping the log within its caps; `meta` is the locked row, written back by the
    /// caller.
    async fn append_audit_in(
        &self,
        tx: &Transaction<'_>,
        meta: &mut Meta,
        record: &AuditRecord,
    ) -> Result<u64, StoreError> {
        let seq = bump(meta.audit_seq, "audit_seq")?;
        let key = seq.to_be_bytes();
        let value = encode(Keyspace::Audit, &key, bound_audit(record).as_ref())?;
        let len = u64::try_from(value.len()).unwrap_or(u64::MAX);
        tx.cached_execute(
            "INSERT INTO fedgw_audit (seq, record) VALUES ($1, $2)",
            &[&to_db(seq, "audit_seq")?, &value],
        )
        .await
        .map_err(pg("audit", record.trust_domain.as_ref()))?;
        meta.audit_seq = seq;
        meta.audit_entries = meta.audit_entries.saturating_add(1);
        meta.audit_bytes = meta.audit_bytes.saturating_add(8 + len);
        trim_audit(tx, meta, &self.shared.settings).await?;
        Ok(seq)
    }

    /// Every record `sql` selects as `(trust_domain, record)` rows, decoded as
    /// `keyspace`'s records.
    fn keyed_records<T: serde::de::DeserializeOwned>(
        &self,
        op: &'static str,
        keyspace: Keyspace,
        sql: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        self.block(op, async {
            let client = self.client(op).await?;
            let rows = client.cached_query(sql, &[]).await.map_err(pg(op, None))?;
            rows.iter()
                .map(|row| {
                    let key: &str = row.get(0);
                    decode(keyspace, key.as_bytes(), row.get(1))
                })
                .collect()
        })
    }

    fn publish_gauges(&self, usage: &StoreUsage) {
        #[expect(clippy::cast_precision_loss, reason = "a gauge of bytes")]
        let (disk, live) = (usage.disk_bytes as f64, usage.live_bytes as f64);
        let metrics = &self.shared.metrics;
        metrics.set(crate::telemetry::families::STORE_DISK_BYTES, &[], disk);
        metrics.set(crate::telemetry::families::STORE_LIVE_BYTES, &[], live);
    }
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.shared.url)
            .finish_non_exhaustive()
    }
}

impl Database for PgStore {
    fn revision(&self) -> Result<u64, StoreError> {
        self.block("revision", async {
            let client = self.client("revision").await?;
            let row = client
                .cached_query_one("SELECT revision FROM fedgw_meta WHERE id = 1", &[])
                .await
                .map_err(pg("revision", None))?;
            Ok(from_db(row.get(0)))
        })
    }

    fn bundle(&self, trust_domain: &TrustDomain) -> Result<Option<BundleRecord>, StoreError> {
        let op = "bundle";
        self.block(op, async {
            let client = self.client(op).await?;
            let row = client
                .cached_query_opt(
                    "SELECT record FROM fedgw_bundles WHERE trust_domain = $1 AND record IS NOT NULL",
                    &[&trust_domain.as_str()],
                )
                .await
                .map_err(pg(op, Some(trust_domain)))?;
            row.map(|row| {
                let value: Vec<u8> = row.get(0);
                decode(Keyspace::Bundles, trust_domain.as_str().as_bytes(), &value)
            })
            .transpose()
        })
    }

    fn bundles(&self) -> Result<Vec<BundleRecord>, StoreError> {
        self.keyed_records(
            "bundles",
            Keyspace::Bundles,
            "SELECT trust_domain, record FROM fedgw_bundles WHERE record IS NOT NULL ORDER BY trust_domain",
        )
    }

    fn put_bundle(&self, new: NewBundle, note: AuditNote) -> Result<BundleRecord, StoreError> {
        let op = "put bundle";
        let td = new.trust_domain.clone();
        self.block(op, async {
            let mut client = self.client(op).await?;
            let tx = client.transaction().await.map_err(pg(op, Some(&td)))?;
            let mut meta = lock_meta(&tx, op).await?;
            let key = td.as_str().as_bytes();
            let old = current_record(&tx, &td, op)
                .await?
                .map(|old| decode::<DigestOf>(Keyspace::Bundles, key, &old))
                .transpose()?;
            let found = old.as_ref().map(|old| old.revision);
            if !new.expected.holds(found) {
                return Err(StoreError::Stale {
                    trust_domain: td.clone(),
                    expected: new.expected,
                    found,
                });
            }
            if let Some(fence) = &new.fence {
                check_fence(&tx, &td, fence, op).await?;
            }
            let old_digest = old.map(|old| old.digest);
            let revision = bump(meta.revision, "revision")?;
            let digest = sha256_hex(&new.document);
            let record = BundleRecord {
                trust_domain: td.clone(),
                document: new.document,
                source: new.source,
                accepted_at: new.accepted_at,
                digest: digest.clone(),
                sequence: new.sequence,
                revision,
            };
            let value = encode(Keyspace::Bundles, key, &record)?;
            let db_revision = to_db(revision, "revision")?;
            tx.cached_execute(
                "INSERT INTO fedgw_bundles (trust_domain, revision, record) VALUES ($1, $2, $3)
                 ON CONFLICT (trust_domain) DO UPDATE SET revision = EXCLUDED.revision, record = EXCLUDED.record",
                &[&td.as_str(), &db_revision, &value],
            )
            .await
            .map_err(pg(op, Some(&td)))?;
            tx.cached_execute(
                "INSERT INTO fedgw_history (trust_domain, revision, record) VALUES ($1, $2, $3)",
                &[&td.as_str(), &db_revision, &value],
            )
            .await
            .map_err(pg(op, Some(&td)))?;
            trim_history(&tx, td.as_str(), &self.shared.settings).await?;
            meta.revision = revision;
            let entry = note.bundle_change(new.accepted_at, &td, old_digest, Some(digest));
            self.append_audit_in(&tx, &mut meta, &entry).await?;
            write_meta(&tx, &meta, op).await?;
            notify(&tx, revision, op).await?;
            tx.commit().await.map_err(pg(op, Some(&td)))?;
            Ok(record)
        })
    }

    fn remove_bundle(
        &self,
        trust_domain: &TrustDomain,
        note: AuditNote,
        at: i64,
    ) -> Result<Option<u64>, StoreError> {
        let op = "remove bundle";
        let td = trust_domain;
        self.block(op, async {
            let mut client = self.client(op).await?;
            let tx = client.transaction().await.map_err(pg(op, Some(td)))?;
            let mut meta = lock_meta(&tx, op).await?;
            // Nobody polls it any more: a lease holder's write in flight is refused.
            tx.cached_execute(
                "DELETE FROM fedgw_status WHERE trust_domain = $1",
                &[&td.as_str()],
            )
            .await
            .map_err(pg(op, Some(td)))?;
            tx.cached_execute(
                "DELETE FROM fedgw_leases WHERE trust_domain = $1",
                &[&td.as_str()],
            )
            .await
            .map_err(pg(op, Some(td)))?;
            let Some(old) = current_record(&tx, td, op).await? else {
                tx.commit().await.map_err(pg(op, Some(td)))?;
                return Ok(None);
            };
            let old = decode::<DigestOf>(Keyspace::Bundles, td.as_str().as_bytes(), &old)?;
            let revision = bump(meta.revision, "revision")?;
            tx.cached_execute(
                "UPDATE fedgw_bundles SET revision = $2, record = NULL WHERE trust_domain = $1",
                &[&td.as_str(), &to_db(revision, "revision")?],
            )
            .await
            .map_err(pg(op, Some(td)))?;
            meta.revision = revision;
            let entry = note.bundle_change(at, td, Some(old.digest), None);
            self.append_audit_in(&tx, &mut meta, &entry).await?;
            write_meta(&tx, &meta, op).await?;
            notify(&tx, revision, op).await?;
            tx.commit().await.map_err(pg(op, Some(td)))?;
            Ok(Some(revision))
        })
    }

    fn history(&self, trust_domain: &TrustDomain) -> Result<Vec<BundleRecord>, StoreError> {
        let op = "history";
        self.block(op, async {
            let client = self.client(op).await?;
            let rows = client
                .cached_query(
                    "SELECT revision, record FROM fedgw_history WHERE trust_domain = $1 ORDER BY revision DESC",
                    &[&trust_domain.as_str()],
                )
                .await
                .map_err(pg(op, Some(trust_domain)))?;
            rows.iter()
                .map(|row| {
                    let key = history_key(trust_domain, from_db(row.get(0)));
                    decode(Keyspace::History, &key, row.get(1))
                })
                .collect()
        })
    }

    fn history_entry(
        &self,
        trust_domain: &TrustDomain,
        revision: u64,
    ) -> Result<Option<BundleRecord>, StoreError> {
        let op = "history entry";
        let Ok(db_revision) = i64::try_from(revision) else {
            return Ok(None);
        };
        self.block(op, async {
            let client = self.client(op).await?;
            let row = client
                .cached_query_opt(
                    "SELECT record FROM fedgw_history WHERE trust_domain = $1 AND revision = $2",
                    &[&trust_domain.as_str(), &db_revision],
                )
                .await
                .map_err(pg(op, Some(trust_domain)))?;
            row.map(|row| {
                decode(
                    Keyspace::History,
                    &history_key(trust_domain, revision),
                    row.get(0),
                )
            })
            .transpose()
        })
    }

    fn statuses(&self) -> Result<Vec<(TrustDomain, RelationshipStatus)>, StoreError> {
        let op = "statuses";
        self.block(op, async {
            let client = self.client(op).await?;
            let rows = client
                .cached_query(
                    "SELECT trust_domain, record FROM fedgw_status ORDER BY trust_domain",
                    &[],
                )
                .await
                .map_err(pg(op, None))?;
            rows.iter()
                .map(|row| {
                    let name: &str = row.get(0);
                    let td = TrustDomain::new(name).map_err(|_| StoreError::InvalidKey {
                        keyspace: Keyspace::Status,
                        key: describe_key(Keyspace::Status, name.as_bytes()),
                        problem: "not a trust domain name",
                    })?;
                    let status = decode(Keyspace::Status, name.as_bytes(), row.get(1))?;
                    Ok((td, status))
                })
                .collect()
        })
    }

    fn put_status(
        &self,
        trust_domain: &TrustDomain,
        status: &RelationshipStatus,
    ) -> Result<(), StoreError> {
        let op = "put status";
        let value = encode(Keyspace::Status, trust_domain.as_str().as_bytes(), status)?;
        self.block(op, async {
            let client = self.client(op).await?;
            client
                .cached_execute(
                    "INSERT INTO fedgw_status (trust_domain, record) VALUES ($1, $2)
                     ON CONFLICT (trust_domain) DO UPDATE SET record = EXCLUDED.record",
                    &[&trust_domain.as_str(), &value],
                )
                .await
                .map_err(pg(op, Some(trust_domain)))?;
            Ok(())
        })
    }

    fn append_audit(&self, record: &AuditRecord) -> Result<u64, StoreError> {
        let op = "append audit";
        self.block(op, async {
            let mut client = self.client(op).await?;
            let tx = client.transaction().await.map_err(pg(op, None))?;
            let mut meta = lock_meta(&tx, op).await?;
            let seq = self.append_audit_in(&tx, &mut meta, record).await?;
            write_meta(&tx, &meta, op).await?;
            tx.commit().await.map_err(pg(op, None))?;
            Ok(seq)
        })
    }

    fn audit_log(&self, after: u64, limit: usize) -> Result<Vec<(u64, AuditRecord)>, StoreError> {
        let op = "audit log";
        let (Ok(after), Ok(limit)) = (i64::try_from(after), i64::try_from(limit)) else {
            return Ok(Vec::new());
        };
        self.block(op, async {
            let client = self.client(op).await?;
            let rows = client
                .cached_query(
                    "SELECT seq, record FROM fedgw_audit WHERE seq > $1 ORDER BY seq LIMIT $2",
                    &[&after, &limit],
                )
                .await
                .map_err(pg(op, None))?;
            rows.iter()
                .map(|row| {
                    let seq = from_db(row.get(0));
                    Ok((
                        seq,
                        decode(Keyspace::Audit, &seq.to_be_bytes(), row.get(1))?,
                    ))
                })
                .collect()
        })
    }

    fn next_local_sequence(&self, trust_domain: &TrustDomain) -> Result<u64, StoreError> {
        let op = "local sequence";
        self.block(op, async {
            let client = self.client(op).await?;
            let row = client
                .cached_query_one(
                    "INSERT INTO fedgw_local_sequences (trust_domain, value) VALUES ($1, 1)
                     ON CONFLICT (trust_domain) DO UPDATE SET value = fedgw_local_sequences.value + 1
                     RETURNING value",
                    &[&trust_domain.as_str()],
                )
                .await
                .map_err(pg(op, Some(trust_domain)))?;
            Ok(from_db(row.get(0)))
        })
    }

    fn relationships(&self) -> Result<Vec<RelationshipRecord>, StoreError> {
        self.keyed_records(
            "relationships",
            Keyspace::Relationships,
            "SELECT trust_domain, record FROM fedgw_relationships ORDER BY trust_domain",
        )
    }

    fn put_relationship(
        &self,
        record: &RelationshipRecord,
        audit: &AuditRecord,
    ) -> Result<u64, StoreError> {
        let op = "put relationship";
        let td = &record.relationship.trust_domain;
        let value = encode(Keyspace::Relationships, td.as_str().as_bytes(), record)?;
        self.block(op, async {
            let mut client = self.client(op).await?;
            let tx = client.transaction().await.map_err(pg(op, Some(td)))?;
            let mut meta = lock_meta(&tx, op).await?;
            tx.cached_execute(
                "INSERT INTO fedgw_relationships (trust_domain, record) VALUES ($1, $2)
                 ON CONFLICT (trust_domain) DO UPDATE SET record = EXCLUDED.record",
                &[&td.as_str(), &value],
            )
            .await
            .map_err(pg(op, Some(td)))?;
            let seq = self.append_audit_in(&tx, &mut meta, audit).await?;
            write_meta(&tx, &meta, op).await?;
            notify_relationships(&tx, op).await?;
            tx.commit().await.map_err(pg(op, Some(td)))?;
            Ok(seq)
        })
    }

    fn remove_relationship(
        &self,
        trust_domain: &TrustDomain,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let op = "remove relationship";
        let td = trust_domain;
        self.block(op, async {
            let mut client = self.client(op).await?;
            let tx = client.transaction().await.map_err(pg(op, Some(td)))?;
            let mut meta = lock_meta(&tx, op).await?;
            let removed = tx
                .cached_execute(
                    "DELETE FROM fedgw_relationships WHERE trust_domain = $1",
                    &[&td.as_str()],
                )
                .await
                .map_err(pg(op, Some(td)))?;
            if removed == 0 {
                return Ok(false);
            }
            tx.cached_execute(
                "DELETE FROM fedgw_leases WHERE trust_domain = $1",
                &[&td.as_str()],
            )
            .await
            .map_err(pg(op, Some(td)))?;
            self.append_audit_in(&tx, &mut meta, audit).await?;
            write_meta(&tx, &meta, op).await?;
            notify_relationships(&tx, op).await?;
            tx.commit().await.map_err(pg(op, Some(td)))?;
            Ok(true)
        })
    }

    fn usage(&self) -> Result<StoreUsage, StoreError> {
        let op = "usage";
        let usage = self.block(op, async {
            let client = self.client(op).await?;
            let row = client
                .cached_query_one(
                    "SELECT pg_database_size(current_database()),
                        (SELECT coalesce(sum(octet_length(trust_domain) + octet_length(record)), 0) FROM fedgw_bundles)
                      + (SELECT coalesce(sum(octet_length(trust_domain) + 9 + octet_length(record)), 0) FROM fedgw_history)
                      + (SELECT coalesce(sum(octet_length(trust_domain) + octet_length(record)), 0) FROM fedgw_status)
                      + (SELECT coalesce(sum(8 + octet_length(record)), 0) FROM fedgw_audit)
                      + (SELECT coalesce(sum(octet_length(trust_domain) + octet_length(record)), 0) FROM fedgw_relationships)",
                    &[],
                )
                .await
                .map_err(pg(op, None))?;
            let disk = from_db(row.get(0));

            Ok(StoreUsage {
                disk_bytes: disk,
                apparent_bytes: disk,
                live_bytes: from_db(row.get(1)),
                compactions: 0,
            })
        })?;
        self.publish_gauges(&usage);
        Ok(usage)
    }

    fn export(&self) -> Result<Dump, StoreError> {
        let op = "export";
        let mut dump = Dump {
            bundles: self.bundles()?,
            statuses: self.statuses()?,
            relationships: self.relationships()?,
            ..Dump::default()
        };
        self.block(op, async {
            let client = self.client(op).await?;
            let row = client
                .cached_query_one("SELECT revision, audit_seq FROM fedgw_meta WHERE id = 1", &[])
                .await
                .map_err(pg(op, None))?;
            dump.revision = from_db(row.get(0));
            dump.audit_seq = from_db(row.get(1));
            for row in client
                .cached_query(
                    "SELECT trust_domain, revision, record FROM fedgw_history ORDER BY trust_domain, revision",
                    &[],
                )
                .await
                .map_err(pg(op, None))?
            {
                let name: &str = row.get(0);
                let key = [name.as_bytes(), &[0], &from_db(row.get(1)).to_be_bytes()].concat();
                dump.history.push(decode(Keyspace::History, &key, row.get(2))?);
            }
            for row in client
                .cached_query("SELECT seq, record FROM fedgw_audit ORDER BY seq", &[])
                .await
                .map_err(pg(op, None))?
            {
                let seq = from_db(row.get(0));
                dump.audit.push((seq, decode(Keyspace::Audit, &seq.to_be_bytes(), row.get(1))?));
            }
            for row in client
                .cached_query(
                    "SELECT trust_domain, value FROM fedgw_local_sequences ORDER BY trust_domain",
                    &[],
                )
                .await
                .map_err(pg(op, None))?
            {
                let name: &str = row.get(0);
                let td = TrustDomain::new(name).map_err(|_| StoreError::InvalidKey {
                    keyspace: Keyspace::Meta,
                    key: format!("local_sequence/{name}"),
                    problem: "not a trust domain name",
                })?;
                dump.local_sequences.push((td, from_db(row.get(1))));
            }
            Ok(())
        })?;
        Ok(dump)
    }

    fn import(&self, dump: &Dump) -> Result<(), StoreError> {
        let op = "import";
        self.block(op, async {
            let mut client = self.client(op).await?;
            let tx = client.transaction().await.map_err(pg(op, None))?;
            let mut meta = lock_meta(&tx, op).await?;
            let row = tx
                .cached_query_one(
                    "SELECT (SELECT count(*) FROM fedgw_bundles) + (SELECT count(*) FROM fedgw_history)
                          + (SELECT count(*) FROM fedgw_status) + (SELECT count(*) FROM fedgw_audit)
                          + (SELECT count(*) FROM fedgw_local_sequences) + (SELECT count(*) FROM fedgw_relationships)",
                    &[],
                )
                .await
                .map_err(pg(op, None))?;
            let rows: i64 = row.get(0);
            if meta.revision > 0 || meta.audit_seq > 0 || rows > 0 {
                return Err(StoreError::NotEmpty {
                    what: format!("revision {}, {rows} rows", meta.revision),
                });
            }
            for record in &dump.bundles {
                let key = record.trust_domain.as_str();
                let value = encode(Keyspace::Bundles, key.as_bytes(), record)?;
                tx.cached_execute(
                    "INSERT INTO fedgw_bundles (trust_domain, revision, record) VALUES ($1, $2, $3)",
                    &[&key, &to_db(record.revision, "revision")?, &value],
                )
                .await
                .map_err(pg(op, Some(&record.trust_domain)))?;
            }
            for record in &dump.history {
                let key = record.trust_domain.as_str();
                let value = encode(Keyspace::History, key.as_bytes(), record)?;
                tx.cached_execute(
                    "INSERT INTO fedgw_history (trust_domain, revision, record) VALUES ($1, $2, $3)",
                    &[&key, &to_db(record.revision, "revision")?, &value],
                )
                .await
                .map_err(pg(op, Some(&record.trust_domain)))?;
            }
            for (td, status) in &dump.statuses {
                let value = encode(Keyspace::Status, td.as_str().as_bytes(), status)?;
                tx.cached_execute(
                    "INSERT INTO fedgw_status (trust_domain, record) VALUES ($1, $2)",
                    &[&td.as_str(), &value],
                )
                .await
                .map_err(pg(op, Some(td)))?;
            }
            meta.audit_entries = 0;
            meta.audit_bytes = 0;
            for (seq, record) in &dump.audit {
                let value = encode(Keyspace::Audit, &seq.to_be_bytes(), record)?;
                meta.audit_entries += 1;
                meta.audit_bytes = meta
                    .audit_bytes
                    .saturating_add(8 + u64::try_from(value.len()).unwrap_or(u64::MAX));
                tx.cached_execute(
                    "INSERT INTO fedgw_audit (seq, record) VALUES ($1, $2)",
                    &[&to_db(*seq, "audit_seq")?, &value],
                )
                .await
                .map_err(pg(op, None))?;
            }
            for (td, value) in &dump.local_sequences {
                tx.cached_execute(
                    "INSERT INTO fedgw_local_sequences (trust_domain, value) VALUES ($1, $2)",
                    &[&td.as_str(), &to_db(*value, "local_sequence")?],
                )
                .await
                .map_err(pg(op, Some(td)))?;
            }
            for record in &dump.relationships {
                let td = &record.relationship.trust_domain;
                let value = encode(Keyspace::Relationships, td.as_str().as_bytes(), record)?;
                tx.cached_execute(
                    "INSERT INTO fedgw_relationships (trust_domain, record) VALUES ($1, $2)",
                    &[&td.as_str(), &value],
                )
                .await
                .map_err(pg(op, Some(td)))?;
            }
            meta.revision = dump.revision;
            meta.audit_seq = dump.audit_seq;
            write_meta(&tx, &meta, op).await?;
            notify(&tx, dump.revision, op).await?;
            tx.commit().await.map_err(pg(op, None))?;
            Ok(())
        })
    }

    fn maintain(&self) {}

    fn postgres(&self) -> Option<PgStore> {
        Some(self.clone())
    }

    fn changes_since(&self, revision: u64) -> Result<Option<Changes>, StoreError> {
        let op = "changes";
        let after = i64::try_from(revision).unwrap_or(i64::MAX);
        self.block(op, async {
            let mut client = self.client(op).await?;
            // One view: every change up to the revision read is in it, none after.
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(pg(op, None))?;
            let row = tx
                .cached_query_one("SELECT revision FROM fedgw_meta WHERE id = 1", &[])
                .await
                .map_err(pg(op, None))?;
            let mut changes = Changes {
                revision: from_db(row.get(0)),
                accepted: Vec::new(),
                removed: Vec::new(),
            };
            for row in tx
                .cached_query(
                    "SELECT trust_domain, record FROM fedgw_bundles WHERE revision > $1 ORDER BY revision",
                    &[&after],
                )
                .await
                .map_err(pg(op, None))?
            {
                let name: &str = row.get(0);
                match row.get::<_, Option<&[u8]>>(1) {
                    Some(value) => changes
                        .accepted
                        .push(decode(Keyspace::Bundles, name.as_bytes(), value)?),
                    None => changes.removed.push(TrustDomain::new(name).map_err(|_| {
                        StoreError::InvalidKey {
                            keyspace: Keyspace::Bundles,
                            key: name.to_owned(),
                            problem: "not a trust domain name",
                        }
                    })?),
                }
            }
            tx.commit().await.map_err(pg(op, None))?;
            Ok(Some(changes))
        })
    }
}

/// Sets `fedgw_store_listening` to 0 when listening ends, however it ends.
struct Listening<'a>(&'a Metrics);

impl Drop for Listening<'_> {
    fn drop(&mut self) {
        self.0
            .set(crate::telemetry::families::STORE_LISTENING, &[], 0.0);
    }
}

/// Why listening stopped.
enum ListenError {
    Store(StoreError),
    Timeout,
}

/// Subscribe on a new connection and pass on what arrives until it ends.
async fn listen_on<S, T>(
    connected: Result<
        (tokio_postgres::Client, tokio_postgres::Connection<S, T>),
        tokio_postgres::Error,
    >,
    signals: &Signals,
    metrics: &Metrics,
) -> Result<(), ListenError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let failed = |err| ListenError::Store(pg("listen", None)(err));
    let (client, mut connection) = connected.map_err(failed)?;
    let statement = format!("LISTEN {CHANGES_CHANNEL}; LISTEN {RELATIONSHIPS_CHANNEL}");
    let subscribe = client.batch_execute(&statement);
    let mut subscribe = std::pin::pin!(subscribe);
    let mut listening = false;
    loop {
        let message = tokio::select! {
            done = &mut subscribe, if !listening => {
                done.map_err(failed)?;
                listening = true;
                metrics.set(crate::telemetry::families::STORE_LISTENING, &[], 1.0);
                signals.bundles.notify_one();
                signals.relationships.notify_one();
                continue;
            }
            message = std::future::poll_fn(|cx| connection.poll_message(cx)) => message,
        };
        match message {
            Some(Ok(tokio_postgres::AsyncMessage::Notification(note))) => {
                if note.channel() == RELATIONSHIPS_CHANNEL {
                    signals.relationships.notify_one();
                } else {
                    signals.bundles.notify_one();
                }
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => return Err(failed(err)),
            None => return Ok(()),
        }
    }
}

/// Lock and read the `fedgw_meta` row.
async fn lock_meta(tx: &Transaction<'_>, op: &'static str) -> Result<Meta, StoreError> {
    let row = tx
        .cached_query_one(
            "SELECT revision, audit_seq, audit_entries, audit_bytes FROM fedgw_meta WHERE id = 1 FOR UPDATE",
            &[],
        )
        .await
        .map_err(pg(op, None))?;
    Ok(Meta {
        revision: from_db(row.get(0)),
        audit_seq: from_db(row.get(1)),
        audit_entries: from_db(row.get(2)),
        audit_bytes: from_db(row.get(3)),
    })
}

async fn write_meta(tx: &Transaction<'_>, meta: &Meta, op: &'static str) -> Result<(), StoreError> {
    tx.cached_execute(
        "UPDATE fedgw_meta SET revision = $1, audit_seq = $2, audit_entries = $3, audit_bytes = $4 WHERE id = 1",
        &[
            &to_db(meta.revision, "revision")?,
            &to_db(meta.audit_seq, "audit_seq")?,
            &to_db(meta.audit_entries, "audit_entries")?,
            &to_db(meta.audit_bytes, "audit_bytes")?,
        ],
    )
    .await
    .map_err(pg(op, None))?;
    Ok(())
}

/// Announce `revision` on [`CHANGES_CHANNEL`] when `tx` commits.
async fn notify(tx: &Transaction<'_>, revision: u64, op: &'static str) -> Result<(), StoreError> {
    tx.cached_execute(
        "SELECT pg_notify($1, $2)",
        &[&CHANGES_CHANNEL, &revision.to_string()],
    )
    .await
    .map_err(pg(op, None))?;
    Ok(())
}

/// Refuse the write unless `fence` is the current, unexpired lease on `td`. The
/// lease row is locked (shared) until the write commits, so a takeover or a removal
/// waits for it, or it for them.
async fn check_fence(
    tx: &Transaction<'_>,
    td: &TrustDomain,
    fence: &Fence,
    op: &'static str,
) -> Result<(), StoreError> {
    let token = to_db(fence.token, "lease token")?;
    let row = tx
        .cached_query_opt(
            "SELECT holder = $2 AND token = $3 AND expires_at > now() FROM fedgw_leases
             WHERE trust_domain = $1 FOR SHARE",
            &[&td.as_str(), &fence.holder, &token],
        )
        .await
        .map_err(pg(op, Some(td)))?;
    if row.is_some_and(|row| row.get::<_, bool>(0)) {
        Ok(())
    } else {
        Err(StoreError::Fenced {
            trust_domain: td.clone(),
            token: fence.token,
        })
    }
}

/// Announce a change of the relationships on [`RELATIONSHIPS_CHANNEL`] when `tx`
/// commits.
async fn notify_relationships(tx: &Transaction<'_>, op: &'static str) -> Result<(), StoreError> {
    tx.cached_execute("SELECT pg_notify($1, '')", &[&RELATIONSHIPS_CHANNEL])
        .await
        .map_err(pg(op, None))?;
    Ok(())
}

/// The current record of `td`, if it has one (not removed).
async fn current_record(
    client: &Transaction<'_>,
    td: &TrustDomain,
    op: &'static str,
) -> Result<Option<Vec<u8>>, StoreError> {
    let row = client
        .cached_query_opt(
            "SELECT record FROM fedgw_bundles WHERE trust_domain = $1",
            &[&td.as_str()],
        )
        .await
        .map_err(pg(op, Some(td)))?;
    Ok(row.and_then(|row| row.get::<_, Option<Vec<u8>>>(0)))
}

/// Drop the versions of `trust_domain` beyond the newest `history_max_versions`, or
/// beyond `history_max_bytes_per_domain` counted from the newest (each counted as
/// the sled store counts it: key plus record); the newest always stays.
async fn trim_history(
    tx: &Transaction<'_>,
    trust_domain: &str,
    settings: &StorageConfig,
) -> Result<(), StoreError> {
    let key_len = i64::try_from(trust_domain.len() + 9).unwrap_or(i64::MAX);
    let max_versions = i64::try_from(settings.history_max_versions).unwrap_or(i64::MAX);
    let max_bytes = i64::try_from(settings.history_max_bytes_per_domain.0).unwrap_or(i64::MAX);
    tx.cached_execute(
        "DELETE FROM fedgw_history h USING (
            SELECT revision,
                   row_number() OVER w AS n,
                   (sum(octet_length(record) + $2::bigint) OVER w)::bigint AS bytes
            FROM fedgw_history WHERE trust_domain = $1
            WINDOW w AS (ORDER BY revision DESC ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
         ) kept
         WHERE h.trust_domain = $1 AND h.revision = kept.revision
           AND kept.n > 1 AND (kept.n > $3::bigint OR kept.bytes > $4::bigint)",
        &[&trust_domain, &key_len, &max_versions, &max_bytes],
    )
    .await
    .map_err(pg("trim history", None))?;
    Ok(())
}

/// Statements prepared once per pooled connection and reused: a call is one round trip
/// to the server instead of two (prepare, then execute). Across datacenters round
/// trips are most of a store call's time (a lease round, a bundle change).
pub(crate) trait Cached: GenericClient {
    /// `sql`, prepared on this connection the first time.
    async fn cached(&self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        self.prepare_cached(sql).await
    }

    async fn cached_execute(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        self.execute(&self.cached(sql).await?, params).await
    }

    async fn cached_query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        self.query(&self.cached(sql).await?, params).await
    }

    async fn cached_query_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, tokio_postgres::Error> {
        self.query_one(&self.cached(sql).await?, params).await
    }

    async fn cached_query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        self.query_opt(&self.cached(sql).await?, params).await
    }
}

impl<C: GenericClient> Cached for C {}

/// `call`, or [`StoreError::PostgresTimeout`] naming `operation` once `timeout` passed.
async fn within<T>(
    timeout: Duration,
    operation: &'static str,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::PostgresTimeout {
                operation,
                seconds: timeout.as_secs(),
            })
        })
}

/// [`trim_history`] for every domain at once: one statement, whatever the number of
/// domains (a replica opening a store of thousands of domains from another
/// datacenter pays one round trip, not one per domain). Kept apart from
/// [`trim_history`] on purpose: one prepared statement with an optional domain
/// (`$1 IS NULL OR trust_domain = $1`) gets a generic plan after a few runs that
/// cannot use the per-domain index, and every bundle change would scan all history.
async fn trim_all_histories(
    tx: &Transaction<'_>,
    settings: &StorageConfig,
) -> Result<(), StoreError> {
    let max_versions = i64::try_from(settings.history_max_versions).unwrap_or(i64::MAX);
    let max_bytes = i64::try_from(settings.history_max_bytes_per_domain.0).unwrap_or(i64::MAX);
    tx.cached_execute(
        "DELETE FROM fedgw_history h USING (
            SELECT trust_domain, revision,
                   row_number() OVER w AS n,
                   (sum(octet_length(record) + octet_length(trust_domain) + 9) OVER w)::bigint AS bytes
            FROM fedgw_history
            WINDOW w AS (PARTITION BY trust_domain ORDER BY revision DESC
                         ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
         ) kept
         WHERE h.trust_domain = kept.trust_domain AND h.revision = kept.revision
           AND kept.n > 1 AND (kept.n > $1::bigint OR kept.bytes > $2::bigint)",
        &[&max_versions, &max_bytes],
    )
    .await
    .map_err(pg("trim history", None))?;
    Ok(())
}

/// Drop the oldest audit entries while the log is past `audit_max_entries` or
/// `audit_max_bytes`; `meta` is the locked row.
async fn trim_audit(
    tx: &Transaction<'_>,
    meta: &mut Meta,
    settings: &StorageConfig,
) -> Result<(), StoreError> {
    let max_entries = u64::try_from(settings.audit_max_entries).unwrap_or(u64::MAX);
    let max_bytes = settings.audit_max_bytes.0;
    while meta.audit_entries > max_entries || meta.audit_bytes > max_bytes {
        let rows = tx
            .cached_query(
                "SELECT seq, 8 + octet_length(record) FROM fedgw_audit ORDER BY seq LIMIT 512",
                &[],
            )
            .await
            .map_err(pg("trim audit", None))?;
        if rows.is_empty() {
            meta.audit_entries = 0;
            meta.audit_bytes = 0;
            break;
        }
        let mut last = None;
        for row in &rows {
            if meta.audit_entries <= max_entries && meta.audit_bytes <= max_bytes {
                break;
            }
            let len: i32 = row.get(1);
            meta.audit_entries = meta.audit_entries.saturating_sub(1);
            meta.audit_bytes = meta
                .audit_bytes
                .saturating_sub(u64::try_from(len).unwrap_or(0));
            last = Some(row.get::<_, i64>(0));
        }
        if let Some(last) = last {
            tx.cached_execute("DELETE FROM fedgw_audit WHERE seq <= $1", &[&last])
                .await
                .map_err(pg("trim audit", None))?;
        }
    }
    Ok(())
}

/// The next value of a counter.
fn bump(value: u64, key: &str) -> Result<u64, StoreError> {
    value
        .checked_add(1)
        .filter(|next| i64::try_from(*next).is_ok())
        .ok_or_else(|| StoreError::CounterExhausted { key: key.into() })
}

/// A counter as PostgreSQL's `bigint`.
fn to_db(value: u64, key: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::CounterExhausted { key: key.into() })
}

/// A `bigint` the store wrote (never negative).
fn from_db(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn pg(
    operation: &'static str,
    trust_domain: Option<&TrustDomain>,
) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    let trust_domain = trust_domain.cloned();
    move |source| StoreError::Postgres {
        operation,
        trust_domain,
        source,
    }
}
