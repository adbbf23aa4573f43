//! Durable storage: the [`Database`] the trust store writes through, and [`Store`],
//! its implementation on an embedded sled 0.34 database.
//!
//! Owns the on-disk layout (keyspaces, key encodings, serde_json record codecs),
//! durability, and how much is kept. Every call that changes something commits its
//! writes in one sled transaction and then calls `Db::flush` (never `flush_async`,
//! spacejam/sled#1241) before it returns, so an acknowledged change survives `kill -9`
//! (STO-1).
//!
//! What is kept is bounded ([`StorageConfig`], the `[storage]` table): history per
//! trust domain by count and bytes (the newest version always stays), the audit log
//! by count and bytes, each audit record by size ([`retention`]). Because sled 0.34
//! does not give back the space of large replaced values (see [`compact`]), the store
//! counts the bytes of its live records and measures the files on disk, and when the
//! difference passes `compact_min_waste_bytes` and `compact_waste_ratio` times the
//! live bytes, [`Store::maintain`] rewrites the database into a fresh directory and
//! swaps it in, crash-safely; [`Store::open`] does the same at start. Both figures are
//! the gauges `fedgw_store_disk_bytes` and `fedgw_store_live_bytes`.
//!
//! **Every method blocks** (sled I/O and fsync). Call them from a blocking thread:
//! [`TrustStore`](crate::trust::store::TrustStore) runs each one inside
//! `tokio::task::spawn_blocking` and is the only writer of bundles. This module does
//! not decide what to accept ([`policy`](crate::trust::policy)) or serve readers
//! ([`trust_store`](crate::trust::store)).
//!
//! Keyspaces (sled trees):
//!
//! | tree      | key                                   | value                   |
//! |-----------|---------------------------------------|-------------------------|
//! | `bundles` | trust domain                          | [`BundleRecord`] (current) |
//! | `history` | trust domain, `0x00`, revision (u64 BE) | [`BundleRecord`], the newest `history_max_versions` within `history_max_bytes_per_domain` |
//! | `status`  | trust domain                          | [`RelationshipStatus`]  |
//! | `audit`   | sequence number (u64 BE)              | [`AuditRecord`], the newest `audit_max_entries` within `audit_max_bytes` |
//! | `meta`    | `revision`, `audit_seq`, `local_sequence\0<td>` | u64 BE counters |
//! | `relationships` | trust domain                    | [`RelationshipRecord`] (created through the admin API) |
//!
//! Trust domain names never contain `0x00`, so a `history` prefix scan is exact.
//!
//! ```
//! use fedgw::trust::policy::Source;
//! use fedgw::trust::db::{AuditAction, AuditNote, Database as _, Expected, NewBundle, Store};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(&dir.path().join("db"))?; // blocking: async code uses spawn_blocking
//! let new = NewBundle {
//!     trust_domain: "east.example".parse()?,
//!     document: br#"{"keys":[]}"#.to_vec(),
//!     source: Source::Operator { who: "alice".into() },
//!     accepted_at: 1_700_000_000,
//!     sequence: None,
//!     expected: Expected::Nothing, // there was no current bundle
//!     fence: None,
//! };
//! let note = AuditNote { who: "alice".into(), action: AuditAction::Accept, detail: String::new() };
//! let record = store.put_bundle(new, note)?; // committed and flushed
//! assert_eq!(record.revision, 1);
//! assert_eq!(store.history(&record.trust_domain)?.len(), 1);
//! assert!(store.usage()?.live_bytes > 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod compact;
#[cfg(test)]
mod conformance;
pub mod dump;
mod error;
pub mod postgres;
mod records;
mod retention;
pub mod schema;
#[cfg(test)]
mod testing;

use std::fmt;
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionError,
    TransactionalTree,
};
use sled::{Db, Transactional as _, Tree};
use spiffe_federation::TrustDomain;

pub use self::dump::{CopyReport, Dump, copy};
pub use self::error::{Keyspace, StoreError};
pub use self::records::{
    AuditAction, AuditNote, AuditRecord, BundleRecord, Changes, Expected, Fence, LastError,
    NewBundle, RelationshipRecord, RelationshipStatus, StoredRelationship,
};
pub use self::retention::{AUDIT_DETAIL_MAX, AUDIT_STRING_MAX, AUDIT_VALUE_MAX};
use self::retention::{AuditSize, Change};
pub use crate::config::storage::{
    ByteSize, DEFAULT_AUDIT_MAX_BYTES, DEFAULT_AUDIT_MAX_ENTRIES, DEFAULT_COMPACT_MIN_WASTE,
    DEFAULT_COMPACT_WASTE_RATIO, DEFAULT_HISTORY_MAX_BYTES, DEFAULT_HISTORY_MAX_VERSIONS,
    MIN_AUDIT_MAX_BYTES, MIN_COMPACT_MIN_WASTE, StorageConfig,
};
use crate::digest::sha256_hex;
use crate::telemetry::Metrics;

/// How many past versions of each trust domain's bundle `history` keeps by default
/// (`storage.history_max_versions`).
pub const HISTORY_DEPTH: usize = DEFAULT_HISTORY_MAX_VERSIONS;

/// The files are measured again once this many bytes of records were written since
/// the last measurement (every change of a bundle over 128 KiB; every few dozen of
/// small ones).
const MEASURE_EVERY: u64 = 256 * 1024;

const REVISION_KEY: &[u8] = b"revision";
const AUDIT_SEQ_KEY: &[u8] = b"audit_seq";
const LOCAL_SEQUENCE_PREFIX: &[u8] = b"local_sequence\0";

/// The sled database and its keyspaces. Cloning is cheap: every clone is the same
/// store.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

struct Shared {
    dirs: compact::Dirs,
    settings: StorageConfig,
    metrics: Metrics,
    /// The open database; every call holds the read side for its duration, a rewrite
    /// the write side. `None` only after a rewrite that could not reopen anything.
    trees: RwLock<Option<Trees>>,
    books: Mutex<Books>,
}

/// What the store knows about its size.
#[derive(Debug, Default)]
struct Books {
    /// Bytes of live records (keys and values), counted at open and at each rewrite
    /// and kept up to date by each write.
    live: u64,
    /// Allocated bytes of the database files at the last measurement.
    disk: u64,
    /// Their lengths at the last measurement.
    apparent: u64,
    /// Bytes of records written since the last measurement.
    unmeasured: u64,
    /// What the audit log holds.
    audit: AuditSize,
    /// Rewrites done since the store was opened.
    compactions: u64,
    /// Allocated bytes right after the last rewrite: the next one waits until the
    /// files have grown `compact_min_waste_bytes` past it, so a database whose fresh
    /// copy is itself over the ratio is not rewritten again and again.
    floor: u64,
}

/// What the database takes on disk and holds, from [`Store::usage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreUsage {
    /// Bytes allocated to the database's files (what `du` shows).
    pub disk_bytes: u64,
    /// The files' lengths (what `du --apparent-size` shows).
    pub apparent_bytes: u64,
    /// Bytes of the records it holds: keys and values of every keyspace.
    pub live_bytes: u64,
    /// Rewrites since it was opened.
    pub compactions: u64,
}

/// One open sled database: its keyspaces and the lock on its directory.
struct Trees {
    db: Db,
    bundles: Tree,
    history: Tree,
    status: Tree,
    audit: Tree,
    meta: Tree,
    relationships: Tree,
    lock: File,
}

impl Trees {
    /// Open the database in `path`, whose directory lock `lock` the caller holds.
    fn open(path: &Path, lock: File) -> Result<Self, StoreError> {
        let open_error = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let db = sled::open(path).map_err(open_error)?;
        let tree = |keyspace: Keyspace| db.open_tree(keyspace.name()).map_err(open_error);
        Ok(Self {
            bundles: tree(Keyspace::Bundles)?,
            history: tree(Keyspace::History)?,
            status: tree(Keyspace::Status)?,
            audit: tree(Keyspace::Audit)?,
            meta: tree(Keyspace::Meta)?,
            relationships: tree(Keyspace::Relationships)?,
            db,
            lock,
        })
    }

    /// Drop the sled handles, keeping the directory lock.
    fn close(self) -> File {
        self.lock
    }

    /// Make every committed write durable (STO-1). Synchronous by design.
    fn flush(&self) -> Result<(), StoreError> {
        self.db
            .flush()
            .map(drop)
            .map_err(|source| StoreError::Flush { source })
    }
}

/// The durable storage under the trust store: what it keeps and the one way each
/// change is written (in one transaction, flushed before the call returns, with its
/// audit record). The trust store holds it as `Arc<dyn Database>` and is its only
/// writer of bundles; the registry writes relationships through it. Every method
/// blocks: call it from a blocking thread. [`Store`] is the implementation on an
/// embedded sled database.
pub trait Database: fmt::Debug + Send + Sync + 'static {
    /// The global revision: bumped by every accepted change and removal. Blocks.
    ///
    /// # Errors
    /// A [`StoreError`] if `meta` cannot be read.
    fn revision(&self) -> Result<u64, StoreError>;

    /// The current bundle of `trust_domain`. Blocks.
    ///
    /// # Errors
    /// A [`StoreError`] if it cannot be read or decoded.
    fn bundle(&self, trust_domain: &TrustDomain) -> Result<Option<BundleRecord>, StoreError>;

    /// Every current bundle, ordered by trust domain. Blocks.
    ///
    /// # Errors
    /// A [`StoreError`] naming the first record that cannot be read or decoded.
    fn bundles(&self) -> Result<Vec<BundleRecord>, StoreError>;

    /// Store `new` as the current bundle of its trust domain under the next global
    /// revision, add it to `history` (trimmed to `history_max_versions` and
    /// `history_max_bytes_per_domain`, the newest kept), append an audit entry, and
    /// flush. Blocks. Call [`Store::maintain`] once the change is published.
    ///
    /// # Errors
    /// A [`StoreError`]; nothing is changed unless the transaction committed, and an
    /// error from the flush means the change may not survive a crash.
    fn put_bundle(&self, new: NewBundle, note: AuditNote) -> Result<BundleRecord, StoreError>;

    /// Remove the current bundle and the status of `trust_domain` (POLL-4), keeping its
    /// history and the audit log, and flush. Returns the new global revision if a
    /// bundle was removed. Blocks. Call [`Store::maintain`] once it is published.
    ///
    /// # Errors
    /// A [`StoreError`]; nothing is changed unless the transaction committed.
    fn remove_bundle(
        &self,
        trust_domain: &TrustDomain,
        note: AuditNote,
        at: i64,
    ) -> Result<Option<u64>, StoreError>;

    /// The stored versions of `trust_domain`, newest first. Blocks.
    ///
    /// # Errors
    /// A [`StoreError`] naming the first record that cannot be read or decoded.
    fn history(&self, trust_domain: &TrustDomain) -> Result<Vec<BundleRecord>, StoreError>;

    /// The version of `trust_domain` accepted at `revision`, if still kept. Blocks.
    ///
    /// # Errors
    /// A [`StoreError`] if it cannot be read or decoded.
    fn history_entry(
        &self,
        trust_domain: &TrustDomain,
        revision: u64,
    ) -> Result<Option<BundleRecord>, StoreError>;

    /// The fetch status of every relationship. Blocks.
    ///
    /// # Errors
    /// A [`StoreError`] naming the first key or record that is malformed.
    fn statuses(&self) -> Result<Vec<(TrustDomain, RelationshipStatus)>, StoreError>;

    /// Replace the fetch status of `trust_domain`, and flush. Blocks.
    ///
    /// # Errors
    /// A [`StoreError`] if it cannot be written or flushed.
    fn put_status(
        &self,
        trust_domain: &TrustDomain,
        status: &RelationshipStatus,
    ) -> Result<(), StoreError>;

    /// Append `record` to the audit log (cut to the audit bounds), and flush; returns
    /// its sequence number. Blocks.
    ///
    /// # Errors
    /// A [`StoreError`] if it cannot be written or flushed.
    fn append_audit(&self, record: &AuditRecord) -> Result<u64, StoreError>;

    /// Up to `limit` audit entries with a sequence number above `after`, oldest first.
    /// Blocks.
    ///
    /// # Errors
    /// A [`StoreError`] naming the first entry that cannot be read or decoded.
    fn audit_log(&self, after: u64, limit: usize) -> Result<Vec<(u64, AuditRecord)>, StoreError>;

    /// The next `spiffe_sequence` to serve for local domain `trust_domain`: a persisted
    /// counter that only grows, even across removal and re-creation (BUN-4). Flushes
    /// before returning. Blocks.
    ///
    /// # Errors
    /// A [`StoreError`] if the counter cannot be updated or flushed.
    fn next_local_sequence(&self, trust_domain: &TrustDomain) -> Result<u64, StoreError>;

    /// Every federation relationship created through the admin API, ordered by trust
    /// domain. Blocks.
    ///
    /// # Errors
    /// A [`StoreError`] naming the first record that cannot be read or decoded.
    fn relationships(&self) -> Result<Vec<RelationshipRecord>, StoreError>;

    /// Store `record` as the relationship of its trust domain (created or replaced)
    /// and append `audit`, in one transaction, then flush; returns the audit entry's
    /// sequence number. Blocks.
    ///
    /// # Errors
    /// A [`StoreError`]; nothing is changed unless the transaction committed.
    fn put_relationship(
        &self,
        record: &RelationshipRecord,
        audit: &AuditRecord,
    ) -> Result<u64, StoreError>;

    /// Remove the relationship with `trust_domain` and append `audit`, in one
    /// transaction, then flush; returns whether one was stored (nothing is written
    /// when none was). Blocks.
    ///
    /// # Errors
    /// A [`StoreError`]; nothing is changed unless the transaction committed.
    fn remove_relationship(
        &self,
        trust_domain: &TrustDomain,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError>;

    /// What the database takes on disk now and the live bytes it holds; also sets the
    /// `fedgw_store_disk_bytes` and `fedgw_store_live_bytes` gauges. Blocks.
    ///
    /// # Errors
    /// [`StoreError::Filesystem`] if the files cannot be measured.
    fn usage(&self) -> Result<StoreUsage, StoreError>;

    /// What other writers changed after `revision`, in one consistent view; `None`
    /// for a store only this process writes (sled), where there is nothing to follow.
    /// Blocks.
    ///
    /// # Errors
    /// A [`StoreError`] naming the first record that cannot be read or decoded.
    fn changes_since(&self, revision: u64) -> Result<Option<Changes>, StoreError> {
        let _ = revision;
        Ok(None)
    }

    /// The shared PostgreSQL store, when this is one: a replica follows what the
    /// others commit through it ([`PgStore::listen`](postgres::PgStore::listen)).
    fn postgres(&self) -> Option<postgres::PgStore> {
        None
    }

    /// Everything the store keeps ([`Dump`]), read in one pass. Blocks; for
    /// `fedgw store copy`, not for a serving gateway.
    ///
    /// # Errors
    /// A [`StoreError`] naming the first record that cannot be read or decoded.
    fn export(&self) -> Result<Dump, StoreError>;

    /// Write `dump` into this store, which must be new (nothing stored, revision 0),
    /// as one transaction, and make it durable. Blocks.
    ///
    /// # Errors
    /// [`StoreError::NotEmpty`] (nothing written), or a [`StoreError`].
    fn import(&self, dump: &Dump) -> Result<(), StoreError>;

    /// Measure the files when enough was written since the last measurement, and
    /// rewrite the database when its waste is past the `[storage]` threshold. Called
    /// after each change is published (the change is already durable): failures are
    /// logged and counted, never returned. Blocks, for the length of a rewrite when
    /// one is due (other store calls wait for it; readers of the trust store's
    /// snapshot do not).
    fn maintain(&self);
}

impl Database for Store {
    fn revision(&self) -> Result<u64, StoreError> {
        self.with_trees(|trees| {
            let value = trees
                .meta
                .get(REVISION_KEY)
                .map_err(storage(Keyspace::Meta, None))?;
            value.map_or(Ok(0), |v| decode_counter(REVISION_KEY, &v))
        })
    }

    fn bundle(&self, trust_domain: &TrustDomain) -> Result<Option<BundleRecord>, StoreError> {
        let key = trust_domain.as_str().as_bytes();
        self.with_trees(|trees| {
            let value = trees
                .bundles
                .get(key)
                .map_err(storage(Keyspace::Bundles, Some(trust_domain)))?;
            value
                .map(|v| decode(Keyspace::Bundles, key, &v))
                .transpose()
        })
    }

    fn bundles(&self) -> Result<Vec<BundleRecord>, StoreError> {
        self.with_trees(|trees| {
            trees
                .bundles
                .iter()
                .map(|item| {
                    let (key, value) = item.map_err(storage(Keyspace::Bundles, None))?;
                    decode(Keyspace::Bundles, &key, &value)
                })
                .collect()
        })
    }

    fn put_bundle(&self, new: NewBundle, note: AuditNote) -> Result<BundleRecord, StoreError> {
        let td = new.trust_domain.clone();
        let key = td.as_str().as_bytes();
        let digest = sha256_hex(&new.document);
        let (record, change) = self.with_trees(|trees| {
            let result = (&trees.bundles, &trees.history, &trees.audit, &trees.meta).transaction(
                |(bundles, history, audit, meta)| {
                    let old = match bundles.get(key)? {
                        // Only the digest: skipping the document is cheaper than copying it.
                        Some(old) => Some(abort(decode::<DigestOf>(Keyspace::Bundles, key, &old))?),
                        None => None,
                    };
                    let found = old.as_ref().map(|old| old.revision);
                    if !new.expected.holds(found) {
                        return Err(ConflictableTransactionError::Abort(StoreError::Stale {
                            trust_domain: td.clone(),
                            expected: new.expected,
                            found,
                        }));
                    }
                    let old_digest = old.map(|old| old.digest);
                    let revision = bump(meta, REVISION_KEY)?;
                    let record = BundleRecord {
                        trust_domain: new.trust_domain.clone(),
                        document: new.document.clone(),
                        source: new.source.clone(),
                        accepted_at: new.accepted_at,
                        digest: digest.clone(),
                        sequence: new.sequence,
                        revision,
                    };
                    let value = abort(encode(Keyspace::Bundles, key, &record))?;
                    let old = bundles.insert(key, value.as_slice())?;
                    let mut change = Change::set(key, value.len(), old.as_ref());
                    let history_key = history_key(&td, revision);
                    let old = history.insert(history_key.as_slice(), value.as_slice())?;
                    change += Change::set(&history_key, value.len(), old.as_ref());
                    let entry =
                        note.bundle_change(new.accepted_at, &td, old_digest, Some(digest.clone()));
                    let (_, audited) = append_audit_in(audit, meta, &entry)?;
                    Ok((record, change, audited))
                },
            );
            let (record, mut change, audited) = finish(result, Keyspace::Bundles, Some(&td))?;
            change += retention::trim_history(&trees.history, &td, &self.shared.settings)?;
            change += self.trim_audit(trees, audited)?;
            trees.flush()?;
            Ok((record, change))
        })?;
        self.account(change);
        Ok(record)
    }

    fn remove_bundle(
        &self,
        trust_domain: &TrustDomain,
        note: AuditNote,
        at: i64,
    ) -> Result<Option<u64>, StoreError> {
        let key = trust_domain.as_str().as_bytes();
        let (revision, change) = self.with_trees(|trees| {
            let result = (&trees.bundles, &trees.status, &trees.audit, &trees.meta).transaction(
                |(bundles, status, audit, meta)| {
                    let old_status = status.remove(key)?;
                    let had_status = old_status.is_some();
                    let mut change = Change::removed(key, old_status.as_ref());
                    let Some(old) = bundles.remove(key)? else {
                        return Ok((None, had_status, change, Change::default()));
                    };
                    change += Change::removed(key, Some(&old));
                    let old = abort(decode::<BundleRecord>(Keyspace::Bundles, key, &old))?;
                    let revision = bump(meta, REVISION_KEY)?;
                    let entry = note.bundle_change(at, trust_domain, Some(old.digest), None);
                    let (_, audited) = append_audit_in(audit, meta, &entry)?;
                    Ok((Some(revision), had_status, change, audited))
                },
            );
            let (revision, had_status, mut change, audited) =
                finish(result, Keyspace::Bundles, Some(trust_domain))?;
            if revision.is_some() {
                change += self.trim_audit(trees, audited)?;
            }
            if revision.is_some() || had_status {
                trees.flush()?;
            }
            Ok((revision, change))
        })?;
        self.account(change);
        Ok(revision)
    }

    fn history(&self, trust_domain: &TrustDomain) -> Result<Vec<BundleRecord>, StoreError> {
        self.with_trees(|trees| {
            trees
                .history
                .scan_prefix(history_prefix(trust_domain))
                .rev()
                .map(|item| {
                    let (key, value) =
                        item.map_err(storage(Keyspace::History, Some(trust_domain)))?;
                    decode(Keyspace::History, &key, &value)
                })
                .collect()
        })
    }

    fn history_entry(
        &self,
        trust_domain: &TrustDomain,
        revision: u64,
    ) -> Result<Option<BundleRecord>, StoreError> {
        let key = history_key(trust_domain, revision);
        self.with_trees(|trees| {
            let value = trees
                .history
                .get(&key)
                .map_err(storage(Keyspace::History, Some(trust_domain)))?;
            value
                .map(|v| decode(Keyspace::History, &key, &v))
                .transpose()
        })
    }

    fn statuses(&self) -> Result<Vec<(TrustDomain, RelationshipStatus)>, StoreError> {
        self.with_trees(|trees| {
            trees
                .status
                .iter()
                .map(|item| {
                    let (key, value) = item.map_err(storage(Keyspace::Status, None))?;
                    let td = std::str::from_utf8(&key)
                        .ok()
                        .and_then(|name| TrustDomain::new(name).ok())
                        .ok_or_else(|| StoreError::InvalidKey {
                            keyspace: Keyspace::Status,
                            key: describe_key(Keyspace::Status, &key),
                            problem: "not a trust domain name",
                        })?;
                    Ok((td, decode(Keyspace::Status, &key, &value)?))
                })
                .collect()
        })
    }

    fn put_status(
        &self,
        trust_domain: &TrustDomain,
        status: &RelationshipStatus,
    ) -> Result<(), StoreError> {
        let key = trust_domain.as_str().as_bytes();
        let value = encode(Keyspace::Status, key, status)?;
        let len = value.len();
        let old = self.with_trees(|trees| {
            let old = trees
                .status
                .insert(key, value)
                .map_err(storage(Keyspace::Status, Some(trust_domain)))?;
            trees.flush()?;
            Ok(old)
        })?;
        self.account(Change::set(key, len, old.as_ref()));
        Ok(())
    }

    fn append_audit(&self, record: &AuditRecord) -> Result<u64, StoreError> {
        let (seq, change) = self.with_trees(|trees| {
            let result = (&trees.audit, &trees.meta)
                .transaction(|(audit, meta)| append_audit_in(audit, meta, record));
            let (seq, audited) = finish(result, Keyspace::Audit, record.trust_domain.as_ref())?;
            let mut change = audited;
            change += self.trim_audit(trees, audited)?;
            trees.flush()?;
            Ok((seq, change))
        })?;
        self.account(change);
        self.maintain();
        Ok(seq)
    }

    fn audit_log(&self, after: u64, limit: usize) -> Result<Vec<(u64, AuditRecord)>, StoreError> {
        let Some(start) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        self.with_trees(|trees| {
            trees
                .audit
                .range(start.to_be_bytes()..)
                .take(limit)
                .map(|item| {
                    let (key, value) = item.map_err(storage(Keyspace::Audit, None))?;
                    let seq = u64_from_key(&key).ok_or_else(|| StoreError::InvalidKey {
                        keyspace: Keyspace::Audit,
                        key: describe_key(Keyspace::Audit, &key),
                        problem: "not an 8-byte sequence number",
                    })?;
                    Ok((seq, decode(Keyspace::Audit, &key, &value)?))
                })
                .collect()
        })
    }

    fn next_local_sequence(&self, trust_domain: &TrustDomain) -> Result<u64, StoreError> {
        let key = [LOCAL_SEQUENCE_PREFIX, trust_domain.as_str().as_bytes()].concat();
        self.with_trees(|trees| {
            let result = trees.meta.transaction(|meta| bump(meta, &key));
            let next = finish(result, Keyspace::Meta, Some(trust_domain))?;
            trees.flush()?;
            Ok(next)
        })
    }

    fn relationships(&self) -> Result<Vec<RelationshipRecord>, StoreError> {
        self.with_trees(|trees| {
            trees
                .relationships
                .iter()
                .map(|item| {
                    let (key, value) = item.map_err(storage(Keyspace::Relationships, None))?;
                    decode(Keyspace::Relationships, &key, &value)
                })
                .collect()
        })
    }

    fn put_relationship(
        &self,
        record: &RelationshipRecord,
        audit: &AuditRecord,
    ) -> Result<u64, StoreError> {
        let td = &record.relationship.trust_domain;
        let key = td.as_str().as_bytes();
        let value = encode(Keyspace::Relationships, key, record)?;
        let (seq, change) = self.with_trees(|trees| {
            let result = (&trees.relationships, &trees.audit, &trees.meta).transaction(
                |(relationships, audit_tree, meta)| {
                    let old = relationships.insert(key, value.as_slice())?;
                    let (seq, audited) = append_audit_in(audit_tree, meta, audit)?;
                    Ok((seq, Change::set(key, value.len(), old.as_ref()), audited))
                },
            );
            let (seq, mut change, audited) = finish(result, Keyspace::Relationships, Some(td))?;
            change += audited;
            change += self.trim_audit(trees, audited)?;
            trees.flush()?;
            Ok((seq, change))
        })?;
        self.account(change);
        self.maintain();
        Ok(seq)
    }

    fn remove_relationship(
        &self,
        trust_domain: &TrustDomain,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let key = trust_domain.as_str().as_bytes();
        let removed = self.with_trees(|trees| {
            let result = (&trees.relationships, &trees.audit, &trees.meta).transaction(
                |(relationships, audit_tree, meta)| {
                    let Some(old) = relationships.remove(key)? else {
                        return Ok(None);
                    };
                    let (_, audited) = append_audit_in(audit_tree, meta, audit)?;
                    Ok(Some((Change::removed(key, Some(&old)), audited)))
                },
            );
            let removed = finish(result, Keyspace::Relationships, Some(trust_domain))?;
            let Some((mut change, audited)) = removed else {
                return Ok(None);
            };
            change += audited;
            change += self.trim_audit(trees, audited)?;
            trees.flush()?;
            Ok(Some(change))
        })?;
        let Some(change) = removed else {
            return Ok(false);
        };
        self.account(change);
        self.maintain();
        Ok(true)
    }

    fn usage(&self) -> Result<StoreUsage, StoreError> {
        self.measure()?;
        let books = self.books();
        Ok(StoreUsage {
            disk_bytes: books.disk,
            apparent_bytes: books.apparent,
            live_bytes: books.live,
            compactions: books.compactions,
        })
    }

    fn export(&self) -> Result<Dump, StoreError> {
        let mut dump = Dump {
            revision: self.revision()?,
            bundles: self.bundles()?,
            statuses: self.statuses()?,
            audit: self.audit_log(0, usize::MAX)?,
            relationships: self.relationships()?,
            ..Dump::default()
        };
        self.with_trees(|trees| {
            dump.audit_seq = match trees
                .meta
                .get(AUDIT_SEQ_KEY)
                .map_err(storage(Keyspace::Meta, None))?
            {
                Some(value) => decode_counter(AUDIT_SEQ_KEY, &value)?,
                None => 0,
            };
            for item in trees.history.iter() {
                let (key, value) = item.map_err(storage(Keyspace::History, None))?;
                dump.history.push(decode(Keyspace::History, &key, &value)?);
            }
            for item in trees.meta.scan_prefix(LOCAL_SEQUENCE_PREFIX) {
                let (key, value) = item.map_err(storage(Keyspace::Meta, None))?;
                let name = std::str::from_utf8(&key[LOCAL_SEQUENCE_PREFIX.len()..]).ok();
                let td = name
                    .and_then(|name| TrustDomain::new(name).ok())
                    .ok_or_else(|| StoreError::InvalidKey {
                        keyspace: Keyspace::Meta,
                        key: describe_key(Keyspace::Meta, &key),
                        problem: "not a trust domain name after local_sequence",
                    })?;
                dump.local_sequences
                    .push((td, decode_counter(&key, &value)?));
            }
            Ok(())
        })?;
        Ok(dump)
    }

    fn import(&self, dump: &Dump) -> Result<(), StoreError> {
        if let Some(what) = self.export()?.what() {
            return Err(StoreError::NotEmpty { what });
        }
        self.with_trees(|trees| {
            let result = (
                &trees.bundles,
                &trees.history,
                &trees.status,
                &trees.audit,
                &trees.meta,
                &trees.relationships,
            )
                .transaction(
                    |(bundles, history, status, audit, meta, relationships)| {
                        for record in &dump.bundles {
                            let key = record.trust_domain.as_str().as_bytes();
                            bundles.insert(key, abort(encode(Keyspace::Bundles, key, record))?)?;
                        }
                        for record in &dump.history {
                            let key = history_key(&record.trust_domain, record.revision);
                            history.insert(
                                key.as_slice(),
                                abort(encode(Keyspace::History, &key, record))?,
                            )?;
                        }
                        for (td, record) in &dump.statuses {
                            let key = td.as_str().as_bytes();
                            status.insert(key, abort(encode(Keyspace::Status, key, record))?)?;
                        }
                        for (seq, record) in &dump.audit {
                            let key = seq.to_be_bytes();
                            audit
                                .insert(&key[..], abort(encode(Keyspace::Audit, &key, record))?)?;
                        }
                        for record in &dump.relationships {
                            let key = record.relationship.trust_domain.as_str().as_bytes();
                            relationships.insert(
                                key,
                                abort(encode(Keyspace::Relationships, key, record))?,
                            )?;
                        }
                        for (td, value) in &dump.local_sequences {
                            let key = [LOCAL_SEQUENCE_PREFIX, td.as_str().as_bytes()].concat();
                            meta.insert(key, &value.to_be_bytes()[..])?;
                        }
                        meta.insert(REVISION_KEY, &dump.revision.to_be_bytes()[..])?;
                        meta.insert(AUDIT_SEQ_KEY, &dump.audit_seq.to_be_bytes()[..])?;
                        Ok(())
                    },
                );
            finish(result, Keyspace::Bundles, None)?;
            trees.flush()?;
            // Recount what is kept, as an open does.
            let live = retention::live_bytes(&trees.db)?;
            let audit = retention::audit_size(&trees.audit)?;
            let mut books = self.books();
            books.live = live;
            books.audit = audit;
            Ok(())
        })
    }

    fn maintain(&self) {
        if let Err(err) = self.try_maintain() {
            tracing::warn!(error = %err, "store maintenance failed; the database keeps its current files");
        }
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.shared.dirs.db)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Open (or create) the database in directory `path` with the default
    /// [`StorageConfig`]. Blocks.
    ///
    /// # Errors
    /// As [`Store::open_with`].
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, StorageConfig::default(), Metrics::new())
    }

    /// Open (or create) the database in directory `path`: finish or undo a rewrite a
    /// crash interrupted, trim history and the audit log to `settings`, count the
    /// live records, and rewrite the database first if its waste is past the
    /// threshold. Its figures go to `metrics`. Blocks.
    ///
    /// # Errors
    /// [`StoreError::Locked`] if another process uses the database,
    /// [`StoreError::Open`] if sled cannot open it, [`StoreError::Filesystem`] or
    /// [`StoreError::Rename`] if an interrupted rewrite cannot be resolved.
    pub fn open_with(
        path: &Path,
        settings: StorageConfig,
        metrics: Metrics,
    ) -> Result<Self, StoreError> {
        let dirs = compact::Dirs::new(path)?;
        compact::recover(&dirs)?;
        std::fs::create_dir_all(&dirs.db).map_err(|source| StoreError::Filesystem {
            operation: "create",
            path: dirs.db.clone(),
            source,
        })?;
        let lock = compact::lock(&dirs.db)?;
        // A store of this directory closed a moment ago in this process may still be
        // held by sled's background threads.
        compact::wait_released(&dirs.db)?;
        let trees = Trees::open(&dirs.db, lock)?;
        if schema::upgrade(&trees.meta, &dirs.db)? {
            trees.flush()?;
        }
        let mut freed = Change::default();
        for td in retention::history_domains(&trees.history)? {
            freed += retention::trim_history(&trees.history, &td, &settings)?;
        }
        let mut audit = retention::audit_size(&trees.audit)?;
        freed += retention::trim_audit(&trees.audit, &mut audit, &settings)?;
        if freed.freed > 0 {
            trees.flush()?;
        }
        let live = retention::live_bytes(&trees.db)?;
        let (disk, apparent) = compact::disk_usage(&dirs.db)?;
        let store = Self {
            shared: Arc::new(Shared {
                dirs,
                settings,
                metrics,
                trees: RwLock::new(Some(trees)),
                books: Mutex::new(Books {
                    live,
                    disk,
                    apparent,
                    audit,
                    ..Books::default()
                }),
            }),
        };
        store.publish_gauges();
        if store.due(disk, live)
            && let Err(err) = store.compact()
        {
            tracing::warn!(error = %err, "the store could not be rewritten at start; it keeps its current files");
        }
        Ok(store)
    }

    /// Rewrite the database now (see [`compact`]). Blocks every other store call
    /// until it is done.
    ///
    /// # Errors
    /// A [`StoreError`] if the copy could not be made or swapped in; the database is
    /// then as it was (or, if even reopening it failed, [`StoreError::Unavailable`]
    /// until a restart).
    pub fn compact(&self) -> Result<(), StoreError> {
        let before = self.books().disk;
        let mut guard = self
            .shared
            .trees
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let old = guard.take().ok_or_else(|| self.unavailable())?;
        let compact::Rewritten { trees, result } = compact::rewrite(&self.shared.dirs, old);
        *guard = trees;
        drop(guard);
        let outcome = if result.is_ok() { "done" } else { "failed" };
        self.shared.metrics.inc(
            crate::telemetry::families::STORE_COMPACTIONS,
            &[("outcome", outcome)],
            1.0,
        );
        let report = result?;
        {
            let mut books = self.books();
            books.live = report.live;
            books.compactions += 1;
        }
        let (after, _) = self.measure()?;
        self.books().floor = after;
        tracing::info!(
            disk_before = before,
            disk_after = after,
            live = report.live,
            records = report.records,
            took_ms = report.took.as_millis(),
            "store rewritten to give back disk space"
        );
        Ok(())
    }

    fn try_maintain(&self) -> Result<(), StoreError> {
        if self.books().unmeasured < MEASURE_EVERY {
            return Ok(());
        }
        let (disk, live) = self.measure()?;
        if !self.due(disk, live) {
            return Ok(());
        }
        // Count the live records exactly before deciding on a rewrite.
        let live = self.with_trees(|trees| retention::live_bytes(&trees.db))?;
        self.books().live = live;
        self.publish_gauges();
        if !self.due(disk, live) {
            return Ok(());
        }
        self.compact()
    }

    /// Whether `disk` bytes holding `live` are past the `[storage]` threshold, and
    /// the files grew `compact_min_waste_bytes` since the last rewrite.
    fn due(&self, disk: u64, live: u64) -> bool {
        let settings = &self.shared.settings;
        let floor = self.books().floor;
        settings.should_compact(disk, live)
            && disk > floor.saturating_add(settings.compact_min_waste_bytes.0)
    }

    /// Measure the files; returns (disk, live) bytes.
    fn measure(&self) -> Result<(u64, u64), StoreError> {
        let (disk, apparent) = compact::disk_usage(&self.shared.dirs.db)?;
        let live = {
            let mut books = self.books();
            books.disk = disk;
            books.apparent = apparent;
            books.unmeasured = 0;
            books.live
        };
        self.publish_gauges();
        Ok((disk, live))
    }

    fn publish_gauges(&self) {
        let (disk, live) = {
            let books = self.books();
            (books.disk, books.live)
        };
        #[expect(clippy::cast_precision_loss, reason = "a gauge of bytes")]
        let (disk, live) = (disk as f64, live as f64);
        self.shared
            .metrics
            .set(crate::telemetry::families::STORE_DISK_BYTES, &[], disk);
        self.shared
            .metrics
            .set(crate::telemetry::families::STORE_LIVE_BYTES, &[], live);
    }

    /// Count an appended audit record and drop the oldest entries past the caps.
    fn trim_audit(&self, trees: &Trees, appended: Change) -> Result<Change, StoreError> {
        let mut books = self.books();
        books.audit.entries += 1;
        books.audit.bytes = books.audit.bytes.saturating_add(appended.put);
        retention::trim_audit(&trees.audit, &mut books.audit, &self.shared.settings)
    }

    fn account(&self, change: Change) {
        let mut books = self.books();
        books.live = books
            .live
            .saturating_add(change.put)
            .saturating_sub(change.freed);
        books.unmeasured = books.unmeasured.saturating_add(change.put);
    }

    /// Run `f` on the open database, holding the read side of its lock for the whole
    /// call (a rewrite waits for it); [`StoreError::Unavailable`] when a rewrite that
    /// could not reopen anything left no database open.
    fn with_trees<R>(
        &self,
        f: impl FnOnce(&Trees) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let guard = self
            .shared
            .trees
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let trees = guard.as_ref().ok_or_else(|| self.unavailable())?;
        f(trees)
    }

    fn books(&self) -> MutexGuard<'_, Books> {
        self.shared
            .books
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn unavailable(&self) -> StoreError {
        StoreError::Unavailable {
            path: self.shared.dirs.db.clone(),
        }
    }

    #[cfg(test)]
    fn with_tree<R>(&self, keyspace: Keyspace, f: impl FnOnce(&Tree) -> R) -> R {
        self.with_trees(|trees| {
            Ok(f(match keyspace {
                Keyspace::Bundles => &trees.bundles,
                Keyspace::History => &trees.history,
                Keyspace::Status => &trees.status,
                Keyspace::Audit => &trees.audit,
                Keyspace::Meta => &trees.meta,
                Keyspace::Relationships => &trees.relationships,
            }))
        })
        .unwrap()
    }
}

/// The digest member of a stored [`BundleRecord`], read without its document.
#[derive(serde::Deserialize)]
struct DigestOf {
    digest: String,
    revision: u64,
}

fn history_prefix(trust_domain: &TrustDomain) -> Vec<u8> {
    let mut key = Vec::with_capacity(trust_domain.as_str().len() + 9);
    key.extend_from_slice(trust_domain.as_str().as_bytes());
    key.push(0);
    key
}

fn history_key(trust_domain: &TrustDomain, revision: u64) -> Vec<u8> {
    let mut key = history_prefix(trust_domain);
    key.extend_from_slice(&revision.to_be_bytes());
    key
}

fn u64_from_key(bytes: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(bytes).ok().map(u64::from_be_bytes)
}

/// A key as people read it: `td@revision` in `history`, a number in `audit`.
fn describe_key(keyspace: Keyspace, key: &[u8]) -> String {
    match keyspace {
        Keyspace::History => match key.iter().position(|&b| b == 0) {
            Some(at) => match u64_from_key(&key[at + 1..]) {
                Some(revision) => format!("{}@{revision}", String::from_utf8_lossy(&key[..at])),
                None => String::from_utf8_lossy(key).into_owned(),
            },
            None => String::from_utf8_lossy(key).into_owned(),
        },
        Keyspace::Audit => u64_from_key(key).map_or_else(
            || String::from_utf8_lossy(key).into_owned(),
            |seq| seq.to_string(),
        ),
        _ => String::from_utf8_lossy(key).replace('\0', "/"),
    }
}

fn decode<T: DeserializeOwned>(
    keyspace: Keyspace,
    key: &[u8],
    value: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(value).map_err(|source| StoreError::Decode {
        keyspace,
        key: describe_key(keyspace, key),
        source,
    })
}

fn encode<T: Serialize>(keyspace: Keyspace, key: &[u8], value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Encode {
        keyspace,
        key: describe_key(keyspace, key),
        source,
    })
}

fn decode_counter(key: &[u8], value: &[u8]) -> Result<u64, StoreError> {
    u64_from_key(value).ok_or_else(|| StoreError::InvalidCounter {
        key: describe_key(Keyspace::Meta, key),
        len: value.len(),
    })
}

fn storage(
    keyspace: Keyspace,
    trust_domain: Option<&TrustDomain>,
) -> impl FnOnce(sled::Error) -> StoreError {
    let trust_domain = trust_domain.cloned();
    move |source| StoreError::Storage {
        keyspace,
        trust_domain,
        source,
    }
}

/// Turn a [`StoreError`] inside a transaction into an abort.
fn abort<T>(result: Result<T, StoreError>) -> ConflictableTransactionResult<T, StoreError> {
    result.map_err(ConflictableTransactionError::Abort)
}

/// Unwrap a transaction's result, naming the main keyspace on storage errors.
fn finish<T>(
    result: Result<T, TransactionError<StoreError>>,
    keyspace: Keyspace,
    trust_domain: Option<&TrustDomain>,
) -> Result<T, StoreError> {
    result.map_err(|err| match err {
        TransactionError::Abort(err) => err,
        TransactionError::Storage(source) => storage(keyspace, trust_domain)(source),
    })
}

/// Increment the u64 counter at `key` in `meta`; the first value is 1.
fn bump(meta: &TransactionalTree, key: &[u8]) -> ConflictableTransactionResult<u64, StoreError> {
    let current = match meta.get(key)? {
        Some(value) => abort(decode_counter(key, &value))?,
        None => 0,
    };
    let next = abort(
        current
            .checked_add(1)
            .ok_or_else(|| StoreError::CounterExhausted {
                key: describe_key(Keyspace::Meta, key),
            }),
    )?;
    meta.insert(key, &next.to_be_bytes()[..])?;
    Ok(next)
}

/// Append `record`, cut to the audit bounds, under the next audit sequence number;
/// returns the number and the bytes written.
fn append_audit_in(
    audit: &TransactionalTree,
    meta: &TransactionalTree,
    record: &AuditRecord,
) -> ConflictableTransactionResult<(u64, Change), StoreError> {
    let seq = bump(meta, AUDIT_SEQ_KEY)?;
    let key = seq.to_be_bytes();
    let value = abort(encode(
        Keyspace::Audit,
        &key,
        retention::bound_audit(record).as_ref(),
    ))?;
    let len = value.len();
    let old = audit.insert(&key[..], value)?;
    Ok((seq, Change::set(&key, len, old.as_ref())))
}

#[cfg(test)]
mod tests {
    use super::testing::{new_bundle, note};
    use super::*;
    use crate::trust::policy::testing::td;

    /// Open the store in `dir`. A reopen right after `drop` can find sled's file lock
    /// still held for a moment by its background flusher (in-process only; a restarted
    /// process never sees it), so a failed open is retried for up to 2 s.
    fn open(dir: &tempfile::TempDir) -> Store {
        let mut attempts = 0;
        loop {
            match Store::open(dir.path()) {
                Ok(store) => return store,
                Err(err) if attempts < 50 => {
                    attempts += 1;
                    eprintln!("store reopen attempt {attempts} failed: {err}");
                    #[expect(
                        clippy::disallowed_methods,
                        reason = "a synchronous unit test waiting for sled's lock"
                    )]
                    std::thread::sleep(std::time::Duration::from_millis(40));
                }
                Err(err) => panic!("opening the store failed: {err}"),
            }
        }
    }

    #[test]
    fn corrupted_record_is_a_named_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let east = td("east.example");
        store
            .put_bundle(new_bundle("east.example", 1), note())
            .unwrap();
        store.with_tree(Keyspace::Bundles, |t| {
            t.insert("east.example", &b"{not json"[..]).unwrap()
        });
        store.with_tree(Keyspace::History, |t| {
            t.insert(history_key(&east, 9), &b"[]"[..]).unwrap()
        });

        let err = store.bundle(&east).unwrap_err();
        assert!(
            matches!(&err, StoreError::Decode { keyspace: Keyspace::Bundles, key, .. } if key == "east.example"),
            "{err:?}"
        );
        assert!(matches!(store.bundles(), Err(StoreError::Decode { .. })));
        let err = store.history(&east).unwrap_err();
        assert!(
            matches!(&err, StoreError::Decode { keyspace: Keyspace::History, key, .. } if key == "east.example@9"),
            "{err:?}"
        );
        // A corrupt current record also blocks the audit chain of a new accept.
        assert!(matches!(
            store.put_bundle(new_bundle("east.example", 2), note()),
            Err(StoreError::Decode { .. })
        ));

        store.with_tree(Keyspace::Meta, |t| {
            t.insert(REVISION_KEY, &b"abc"[..]).unwrap()
        });
        assert!(matches!(
            store.revision(),
            Err(StoreError::InvalidCounter { len: 3, .. })
        ));
        store.with_tree(Keyspace::Status, |t| {
            t.insert("Not A Domain", &b"{}"[..]).unwrap()
        });
        assert!(matches!(
            store.statuses(),
            Err(StoreError::InvalidKey {
                keyspace: Keyspace::Status,
                ..
            })
        ));
    }

    #[test]
    fn second_open_of_a_locked_database_is_an_open_error() {
        let dir = tempfile::tempdir().unwrap();
        let _store = open(&dir);
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::Locked { .. })
        ));
    }
}
