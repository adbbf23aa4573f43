//! Durable storage: the sled 0.34 database behind the trust store.
//!
//! Owns the on-disk layout (keyspaces, key encodings, serde_json record codecs) and
//! durability: every call that changes something commits its writes in one sled
//! transaction and then calls `Db::flush` (never `flush_async`, spacejam/sled#1241)
//! before it returns, so an acknowledged change survives `kill -9` (STO-1).
//!
//! **Every method blocks** (sled I/O and fsync). Call them from a blocking thread:
//! [`TrustStore`](crate::trust_store::TrustStore) runs each one inside
//! `tokio::task::spawn_blocking` and is the only writer. This module does not decide
//! what to accept ([`policy`](crate::policy)) or serve readers
//! ([`trust_store`](crate::trust_store)).
//!
//! Keyspaces (sled trees):
//!
//! | tree      | key                                   | value                   |
//! |-----------|---------------------------------------|-------------------------|
//! | `bundles` | trust domain                          | [`BundleRecord`] (current) |
//! | `history` | trust domain, `0x00`, revision (u64 BE) | [`BundleRecord`], newest [`HISTORY_DEPTH`] kept |
//! | `status`  | trust domain                          | [`RelationshipStatus`]  |
//! | `audit`   | sequence number (u64 BE)              | [`AuditRecord`]         |
//! | `meta`    | `revision`, `audit_seq`, `local_sequence\0<td>` | u64 BE counters |
//! | `relationships` | trust domain                    | [`RelationshipRecord`] (created through the admin API) |
//!
//! Trust domain names never contain `0x00`, so a `history` prefix scan is exact.
//!
//! ```
//! use fedgw::policy::Source;
//! use fedgw::store::{AuditAction, AuditNote, NewBundle, Store};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path())?; // blocking: async code uses spawn_blocking
//! let new = NewBundle {
//!     trust_domain: "east.example".parse()?,
//!     document: br#"{"keys":[]}"#.to_vec(),
//!     source: Source::Operator { who: "alice".into() },
//!     accepted_at: 1_700_000_000,
//!     sequence: None,
//! };
//! let note = AuditNote { who: "alice".into(), action: AuditAction::Accept, detail: String::new() };
//! let record = store.put_bundle(new, note)?; // committed and flushed
//! assert_eq!(record.revision, 1);
//! assert_eq!(store.history(&record.trust_domain)?.len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod records;

use std::fmt;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionError,
    TransactionalTree,
};
use sled::{Batch, Db, IVec, Transactional as _, Tree};
use spiffe_federation::TrustDomain;

pub use self::error::{Keyspace, StoreError};
pub use self::records::{
    AuditAction, AuditNote, AuditRecord, BundleRecord, LastError, NewBundle, RelationshipRecord,
    RelationshipStatus,
};

/// How many past versions of each trust domain's bundle `history` keeps.
pub const HISTORY_DEPTH: usize = 20;

const REVISION_KEY: &[u8] = b"revision";
const AUDIT_SEQ_KEY: &[u8] = b"audit_seq";
const LOCAL_SEQUENCE_PREFIX: &[u8] = b"local_sequence\0";

/// The sled database and its keyspaces. Cloning is cheap (sled handles are shared).
#[derive(Clone)]
pub struct Store {
    db: Db,
    bundles: Tree,
    history: Tree,
    status: Tree,
    audit: Tree,
    meta: Tree,
    relationships: Tree,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Open (or create) the database in directory `path`. Blocks.
    ///
    /// # Errors
    /// [`StoreError::Open`] if sled cannot open it, e.g. another process holds it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
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
        })
    }

    /// The global revision: bumped by every accepted change and removal. Blocks.
    ///
    /// # Errors
    /// A [`StoreError`] if `meta` cannot be read.
    pub fn revision(&self) -> Result<u64, StoreError> {
        let value = self
            .meta
            .get(REVISION_KEY)
            .map_err(storage(Keyspace::Meta, None))?;
        value.map_or(Ok(0), |v| decode_counter(REVISION_KEY, &v))
    }

    /// The current bundle of `trust_domain`. Blocks.
    ///
    /// # Errors
    /// A [`StoreError`] if it cannot be read or decoded.
    pub fn bundle(&self, trust_domain: &TrustDomain) -> Result<Option<BundleRecord>, StoreError> {
        let key = trust_domain.as_str().as_bytes();
        let value = self
            .bundles
            .get(key)
            .map_err(storage(Keyspace::Bundles, Some(trust_domain)))?;
        value
            .map(|v| decode(Keyspace::Bundles, key, &v))
            .transpose()
    }

    /// Every current bundle, ordered by trust domain. Blocks.
    ///
    /// # Errors
    /// A [`StoreError`] naming the first record that cannot be read or decoded.
    pub fn bundles(&self) -> Result<Vec<BundleRecord>, StoreError> {
        self.bundles
            .iter()
            .map(|item| {
                let (key, value) = item.map_err(storage(Keyspace::Bundles, None))?;
                decode(Keyspace::Bundles, &key, &value)
            })
            .collect()
    }

    /// Store `new` as the current bundle of its trust domain under the next global
    /// revision, add it to `history` (keeping the newest [`HISTORY_DEPTH`]), append
    /// an audit entry, and flush. Blocks.
    ///
    /// # Errors
    /// A [`StoreError`]; nothing is changed unless the transaction committed, and an
    /// error from the flush means the change may not survive a crash.
    pub fn put_bundle(&self, new: NewBundle, note: AuditNote) -> Result<BundleRecord, StoreError> {
        let td = new.trust_domain.clone();
        let key = td.as_str().as_bytes();
        let digest = digest(&new.document);
        let result = (&self.bundles, &self.history, &self.audit, &self.meta).transaction(
            |(bundles, history, audit, meta)| {
                let old_digest = match bundles.get(key)? {
                    Some(old) => {
                        Some(abort(decode::<BundleRecord>(Keyspace::Bundles, key, &old))?.digest)
                    }
                    None => None,
                };
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
                bundles.insert(key, value.as_slice())?;
                history.insert(history_key(&td, revision), value)?;
                let entry = AuditRecord {
                    at: new.accepted_at,
                    who: note.who.clone(),
                    action: note.action,
                    trust_domain: Some(td.clone()),
                    old_digest,
                    new_digest: Some(digest.clone()),
                    detail: note.detail.clone(),
                    old_value: None,
                    new_value: None,
                };
                append_audit_in(audit, meta, &entry)?;
                Ok(record)
            },
        );
        let record = finish(result, Keyspace::Bundles, Some(&td))?;
        self.trim_history(&td)?;
        self.flush()?;
        Ok(record)
    }

    /// Remove the current bundle and the status of `trust_domain` (POLL-4), keeping its
    /// history and the audit log, and flush. Returns the new global revision if a
    /// bundle was removed. Blocks.
    ///
    /// # Errors
    /// A [`StoreError`]; nothing is changed unless the transaction committed.
    pub fn remove_bundle(
        &self,
        trust_domain: &TrustDomain,
        note: AuditNote,
        at: i64,
    ) -> Result<Option<u64>, StoreError> {
        let key = trust_domain.as_str().as_bytes();
        let result = (&self.bundles, &self.status, &self.audit, &self.meta).transaction(
            |(bundles, status, audit, meta)| {
                let had_status = status.remove(key)?.is_some();
                let Some(old) = bundles.remove(key)? else {
                    return Ok((None, had_status));
                };
                let old = abort(decode::<BundleRecord>(Keyspace::Bundles, key, &old))?;
                let revision = bump(meta, REVISION_KEY)?;
                let entry = AuditRecord {
                    at,
                    who: note.who.clone(),
                    action: note.action,
                    trust_domain: Some(trust_domain.clone()),
                    old_digest: Some(old.digest),
                    new_digest: None,
                    detail: note.detail.clone(),
                    old_value: None,
                    new_value: None,
                };
                append_audit_in(audit, meta, &entry)?;
                Ok((Some(revision), had_status))
            },
        );
        let (revision, had_status) = finish(result, Keyspace::Bundles, Some(trust_domain))?;
        if revision.is_some() || had_status {
            self.flush()?;
        }
        Ok(revision)
    }

    /// The stored versions of `trust_domain`, newest first. Blocks.
    ///
    /// # Errors
    /// A [`StoreError`] naming the first record that cannot be read or decoded.
    pub fn history(&self, trust_domain: &TrustDomain) -> Result<Vec<BundleRecord>, StoreError> {
        self.history
            .scan_prefix(history_prefix(trust_domain))
            .rev()
            .map(|item| {
                let (key, value) = item.map_err(storage(Keyspace::History, Some(trust_domain)))?;
                decode(Keyspace::History, &key, &value)
            })
            .collect()
    }

    /// The version of `trust_domain` accepted at `revision`, if still kept. Blocks.
    ///
    /// # Errors
    /// A [`StoreError`] if it cannot be read or decoded.
    pub fn history_entry(
        &self,
        trust_domain: &TrustDomain,
        revision: u64,
    ) -> Result<Option<BundleRecord>, StoreError> {
        let key = history_key(trust_domain, revision);
        let value = self
            .history
            .get(&key)
            .map_err(storage(Keyspace::History, Some(trust_domain)))?;
        value
            .map(|v| decode(Keyspace::History, &key, &v))
            .transpose()
    }

    /// The fetch status of every relationship. Blocks.
    ///
    /// # Errors
    /// A [`StoreError`] naming the first key or record that is malformed.
    pub fn statuses(&self) -> Result<Vec<(TrustDomain, RelationshipStatus)>, StoreError> {
        self.status
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
    }

    /// Replace the fetch status of `trust_domain`, and flush. Blocks.
    ///
    /// # Errors
    /// A [`StoreError`] if it cannot be written or flushed.
    pub fn put_status(
        &self,
        trust_domain: &TrustDomain,
        status: &RelationshipStatus,
    ) -> Result<(), StoreError> {
        let key = trust_domain.as_str().as_bytes();
        let value = encode(Keyspace::Status, key, status)?;
        self.status
            .insert(key, value)
            .map_err(storage(Keyspace::Status, Some(trust_domain)))?;
        self.flush()
    }

    /// Append `record` to the audit log, and flush; returns its sequence number. Blocks.
    ///
    /// # Errors
    /// A [`StoreError`] if it cannot be written or flushed.
    pub fn append_audit(&self, record: &AuditRecord) -> Result<u64, StoreError> {
        let result = (&self.audit, &self.meta)
            .transaction(|(audit, meta)| append_audit_in(audit, meta, record));
        let seq = finish(result, Keyspace::Audit, record.trust_domain.as_ref())?;
        self.flush()?;
        Ok(seq)
    }

    /// Up to `limit` audit entries with a sequence number above `after`, oldest first.
    /// Blocks.
    ///
    /// # Errors
    /// A [`StoreError`] naming the first entry that cannot be read or decoded.
    pub fn audit_log(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, AuditRecord)>, StoreError> {
        let Some(start) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        self.audit
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
    }

    /// The next `spiffe_sequence` to serve for local domain `trust_domain`: a persisted
    /// counter that only grows, even across removal and re-creation (BUN-4). Flushes
    /// before returning. Blocks.
    ///
    /// # Errors
    /// A [`StoreError`] if the counter cannot be updated or flushed.
    pub fn next_local_sequence(&self, trust_domain: &TrustDomain) -> Result<u64, StoreError> {
        let key = [LOCAL_SEQUENCE_PREFIX, trust_domain.as_str().as_bytes()].concat();
        let result = self.meta.transaction(|meta| bump(meta, &key));
        let next = finish(result, Keyspace::Meta, Some(trust_domain))?;
        self.flush()?;
        Ok(next)
    }

    /// Every federation relationship created through the admin API, ordered by trust
    /// domain. Blocks.
    ///
    /// # Errors
    /// A [`StoreError`] naming the first record that cannot be read or decoded.
    pub fn relationships(&self) -> Result<Vec<RelationshipRecord>, StoreError> {
        self.relationships
            .iter()
            .map(|item| {
                let (key, value) = item.map_err(storage(Keyspace::Relationships, None))?;
                decode(Keyspace::Relationships, &key, &value)
            })
            .collect()
    }

    /// Store `record` as the relationship of its trust domain (created or replaced)
    /// and append `audit`, in one transaction, then flush; returns the audit entry's
    /// sequence number. Blocks.
    ///
    /// # Errors
    /// A [`StoreError`]; nothing is changed unless the transaction committed.
    pub fn put_relationship(
        &self,
        record: &RelationshipRecord,
        audit: &AuditRecord,
    ) -> Result<u64, StoreError> {
        let td = &record.relationship.trust_domain;
        let key = td.as_str().as_bytes();
        let value = encode(Keyspace::Relationships, key, record)?;
        let result = (&self.relationships, &self.audit, &self.meta).transaction(
            |(relationships, audit_tree, meta)| {
                relationships.insert(key, value.as_slice())?;
                append_audit_in(audit_tree, meta, audit)
            },
        );
        let seq = finish(result, Keyspace::Relationships, Some(td))?;
        self.flush()?;
        Ok(seq)
    }

    /// Remove the relationship with `trust_domain` and append `audit`, in one
    /// transaction, then flush; returns whether one was stored (nothing is written
    /// when none was). Blocks.
    ///
    /// # Errors
    /// A [`StoreError`]; nothing is changed unless the transaction committed.
    pub fn remove_relationship(
        &self,
        trust_domain: &TrustDomain,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let key = trust_domain.as_str().as_bytes();
        let result = (&self.relationships, &self.audit, &self.meta).transaction(
            |(relationships, audit_tree, meta)| {
                if relationships.remove(key)?.is_none() {
                    return Ok(false);
                }
                append_audit_in(audit_tree, meta, audit)?;
                Ok(true)
            },
        );
        let removed = finish(result, Keyspace::Relationships, Some(trust_domain))?;
        if removed {
            self.flush()?;
        }
        Ok(removed)
    }

    /// Drop history entries of `trust_domain` beyond the newest [`HISTORY_DEPTH`].
    /// Not part of the accept transaction: a crash in between leaves extra history,
    /// which the next accept trims.
    fn trim_history(&self, trust_domain: &TrustDomain) -> Result<(), StoreError> {
        let keys = self
            .history
            .scan_prefix(history_prefix(trust_domain))
            .keys()
            .collect::<Result<Vec<IVec>, _>>()
            .map_err(storage(Keyspace::History, Some(trust_domain)))?;
        let excess = keys.len().saturating_sub(HISTORY_DEPTH);
        if excess == 0 {
            return Ok(());
        }
        let mut batch = Batch::default();
        for key in &keys[..excess] {
            batch.remove(key);
        }
        self.history
            .apply_batch(batch)
            .map_err(storage(Keyspace::History, Some(trust_domain)))
    }

    /// Make every committed write durable (STO-1). Synchronous by design.
    fn flush(&self) -> Result<(), StoreError> {
        self.db
            .flush()
            .map(drop)
            .map_err(|source| StoreError::Flush { source })
    }

    #[cfg(test)]
    fn tree(&self, keyspace: Keyspace) -> &Tree {
        match keyspace {
            Keyspace::Bundles => &self.bundles,
            Keyspace::History => &self.history,
            Keyspace::Status => &self.status,
            Keyspace::Audit => &self.audit,
            Keyspace::Meta => &self.meta,
            Keyspace::Relationships => &self.relationships,
        }
    }
}

/// SHA-256 of `document`, lower-case hex.
pub fn digest(document: &[u8]) -> String {
    use std::fmt::Write as _;
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, document);
    hash.as_ref()
        .iter()
        .fold(String::with_capacity(64), |mut out, byte| {
            // Writing to a String cannot fail.
            let _ = write!(out, "{byte:02x}");
            out
        })
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

fn append_audit_in(
    audit: &TransactionalTree,
    meta: &TransactionalTree,
    record: &AuditRecord,
) -> ConflictableTransactionResult<u64, StoreError> {
    let seq = bump(meta, AUDIT_SEQ_KEY)?;
    let key = seq.to_be_bytes();
    let value = abort(encode(Keyspace::Audit, &key, record))?;
    audit.insert(&key[..], value)?;
    Ok(seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Source;
    use crate::policy::testing::td;

    fn operator() -> Source {
        Source::Operator {
            who: "alice".into(),
        }
    }

    fn new_bundle(name: &str, sequence: u64) -> NewBundle {
        let document = format!(r#"{{"keys":[],"spiffe_sequence":{sequence}}}"#).into_bytes();
        NewBundle {
            trust_domain: td(name),
            document,
            source: operator(),
            accepted_at: 1_700_000_000 + i64::try_from(sequence).unwrap(),
            sequence: Some(sequence),
        }
    }

    fn note() -> AuditNote {
        AuditNote {
            who: "alice".into(),
            action: AuditAction::Accept,
            detail: String::new(),
        }
    }

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
    fn put_get_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let east = td("east.example");
        assert_eq!(store.bundle(&east).unwrap(), None);

        let record = store
            .put_bundle(new_bundle("east.example", 1), note())
            .unwrap();
        assert_eq!(record.revision, 1);
        assert_eq!(record.digest, digest(br#"{"keys":[],"spiffe_sequence":1}"#));
        assert_eq!(store.bundle(&east).unwrap(), Some(record.clone()));
        assert_eq!(store.bundles().unwrap(), vec![record.clone()]);

        let status = RelationshipStatus {
            last_success: Some(5),
            ..RelationshipStatus::default()
        };
        store.put_status(&east, &status).unwrap();
        assert_eq!(store.statuses().unwrap(), vec![(east.clone(), status)]);

        assert_eq!(store.remove_bundle(&east, note(), 10).unwrap(), Some(2));
        assert_eq!(store.bundle(&east).unwrap(), None);
        assert!(
            store.statuses().unwrap().is_empty(),
            "POLL-4: status goes too"
        );
        assert_eq!(
            store.history(&east).unwrap(),
            vec![record],
            "history is kept"
        );
        assert_eq!(store.remove_bundle(&east, note(), 11).unwrap(), None);
        assert_eq!(
            store.revision().unwrap(),
            2,
            "removing nothing is no change"
        );
    }

    #[test]
    fn history_keeps_the_newest_twenty() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        for sequence in 1..=25 {
            store
                .put_bundle(new_bundle("east.example", sequence), note())
                .unwrap();
        }
        // Another domain whose name extends this one must not share its history.
        store
            .put_bundle(new_bundle("east.example.org", 1), note())
            .unwrap();

        let history = store.history(&td("east.example")).unwrap();
        let sequences: Vec<_> = history.iter().filter_map(|r| r.sequence).collect();
        assert_eq!(sequences, (6..=25).rev().collect::<Vec<_>>());
        assert_eq!(store.history_entry(&td("east.example"), 5).unwrap(), None);
        assert_eq!(
            store.history_entry(&td("east.example"), 25).unwrap(),
            Some(history[0].clone())
        );
        assert_eq!(store.history(&td("east.example.org")).unwrap().len(), 1);
    }

    #[test]
    fn revision_is_monotonic_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        store
            .put_bundle(new_bundle("east.example", 1), note())
            .unwrap();
        store
            .put_bundle(new_bundle("west.example", 1), note())
            .unwrap();
        assert_eq!(store.revision().unwrap(), 2);
        drop(store);

        let store = open(&dir);
        assert_eq!(store.revision().unwrap(), 2);
        let record = store
            .put_bundle(new_bundle("east.example", 2), note())
            .unwrap();
        assert_eq!(record.revision, 3);
        assert_eq!(store.bundles().unwrap().len(), 2);
    }

    #[test]
    fn bun_4_local_sequence_only_grows_across_removal_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let local = td("local.example");
        assert_eq!(store.next_local_sequence(&local).unwrap(), 1);
        assert_eq!(store.next_local_sequence(&local).unwrap(), 2);
        assert_eq!(store.next_local_sequence(&td("other.example")).unwrap(), 1);
        store
            .put_bundle(new_bundle("local.example", 2), note())
            .unwrap();
        store.remove_bundle(&local, note(), 0).unwrap();
        drop(store);
        let store = open(&dir);
        assert_eq!(store.next_local_sequence(&local).unwrap(), 3);
    }

    #[test]
    fn audit_appends_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        store
            .put_bundle(new_bundle("east.example", 1), note())
            .unwrap();
        store
            .put_bundle(new_bundle("east.example", 2), note())
            .unwrap();
        let manual = AuditRecord {
            at: 7,
            who: "bob".into(),
            action: AuditAction::Rollback,
            trust_domain: None,
            old_digest: None,
            new_digest: None,
            detail: "note".into(),
            old_value: None,
            new_value: Some(serde_json::json!({"trust_domain": "east.example"})),
        };
        assert_eq!(store.append_audit(&manual).unwrap(), 3);

        let log = store.audit_log(0, 100).unwrap();
        assert_eq!(
            log.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(log[0].1.old_digest, None);
        assert_eq!(log[1].1.old_digest, log[0].1.new_digest, "chain of digests");
        assert_eq!(log[2].1, manual);
        assert_eq!(store.audit_log(2, 100).unwrap().len(), 1);
        assert_eq!(store.audit_log(0, 1).unwrap().len(), 1);
        assert!(store.audit_log(u64::MAX, 1).unwrap().is_empty());
    }

    #[test]
    fn corrupted_record_is_a_named_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let east = td("east.example");
        store
            .put_bundle(new_bundle("east.example", 1), note())
            .unwrap();
        store
            .tree(Keyspace::Bundles)
            .insert("east.example", &b"{not json"[..])
            .unwrap();
        store
            .tree(Keyspace::History)
            .insert(history_key(&east, 9), &b"[]"[..])
            .unwrap();

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

        store
            .tree(Keyspace::Meta)
            .insert(REVISION_KEY, &b"abc"[..])
            .unwrap();
        assert!(matches!(
            store.revision(),
            Err(StoreError::InvalidCounter { len: 3, .. })
        ));
        store
            .tree(Keyspace::Status)
            .insert("Not A Domain", &b"{}"[..])
            .unwrap();
        assert!(matches!(
            store.statuses(),
            Err(StoreError::InvalidKey {
                keyspace: Keyspace::Status,
                ..
            })
        ));
    }

    #[test]
    fn relationships_are_stored_with_their_audit_entry_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let west = td("west.example");
        let spec: crate::relationships::RelationshipSpec =
            serde_json::from_value(serde_json::json!({
                "trust_domain": "west.example",
                "url": "https://west.example/bundle",
                "profile": "https_web",
            }))
            .unwrap();
        let record = RelationshipRecord {
            relationship: spec.clone(),
            changed_at: 9,
            changed_by: "alice".into(),
        };
        let audit =
            |action,
             old: Option<&crate::relationships::RelationshipSpec>,
             new: Option<&crate::relationships::RelationshipSpec>| AuditRecord {
                at: 9,
                who: "alice".into(),
                action,
                trust_domain: Some(west.clone()),
                old_digest: None,
                new_digest: None,
                detail: String::new(),
                old_value: old.map(|s| serde_json::to_value(s).unwrap()),
                new_value: new.map(|s| serde_json::to_value(s).unwrap()),
            };
        let created = audit(AuditAction::RelationshipCreate, None, Some(&spec));
        assert_eq!(store.put_relationship(&record, &created).unwrap(), 1);
        drop(store);

        let store = open(&dir);
        assert_eq!(store.relationships().unwrap(), vec![record]);
        let deleted = audit(AuditAction::RelationshipDelete, Some(&spec), None);
        assert!(store.remove_relationship(&west, &deleted).unwrap());
        assert!(store.relationships().unwrap().is_empty());
        assert!(
            !store.remove_relationship(&west, &deleted).unwrap(),
            "removing nothing writes no audit entry"
        );
        let log = store.audit_log(0, 10).unwrap();
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].1, created);
        assert_eq!(log[1].1, deleted);
        assert_eq!(
            store.revision().unwrap(),
            0,
            "relationships are not bundles"
        );
    }

    #[test]
    fn second_open_of_a_locked_database_is_an_open_error() {
        let dir = tempfile::tempdir().unwrap();
        let _store = open(&dir);
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::Open { .. })
        ));
    }
}
