//! Store errors and the keyspace names they carry.

use std::fmt;
use std::path::PathBuf;

use spiffe_federation::{BundleError, TrustDomain};

/// One sled tree of the store, named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Keyspace {
    /// Current bundle per trust domain.
    Bundles,
    /// Past bundles per trust domain.
    History,
    /// Fetch status per federation relationship.
    Status,
    /// Append-only audit log.
    Audit,
    /// Counters: global revision, audit sequence, local served sequences.
    Meta,
    /// Federation relationships created through the admin API.
    Relationships,
}

impl Keyspace {
    /// The sled tree name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bundles => "bundles",
            Self::History => "history",
            Self::Status => "status",
            Self::Audit => "audit",
            Self::Meta => "meta",
            Self::Relationships => "relationships",
        }
    }
}

impl fmt::Display for Keyspace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A storage failure, naming the keyspace and the key or trust domain concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened (missing permissions, locked by another
    /// process, corrupt files).
    #[error("cannot open the store at {path}: {source}")]
    Open {
        /// The database directory.
        path: PathBuf,
        /// sled's error.
        source: sled::Error,
    },
    /// sled failed reading or writing.
    #[error("store keyspace {keyspace}{}: {source}", for_domain(.trust_domain.as_ref()))]
    Storage {
        /// The keyspace concerned.
        keyspace: Keyspace,
        /// The trust domain concerned, if one.
        trust_domain: Option<TrustDomain>,
        /// sled's error.
        source: sled::Error,
    },
    /// Writing the change to disk failed; the change may not survive a crash.
    #[error("cannot flush the store to disk: {source}")]
    Flush {
        /// sled's error.
        source: sled::Error,
    },
    /// A stored record is not valid JSON of the expected shape.
    #[error("store keyspace {keyspace}, key {key:?}: record does not decode: {source}")]
    Decode {
        /// The keyspace.
        keyspace: Keyspace,
        /// The key, readable (`td@revision` in `history`).
        key: String,
        /// The decoder's error.
        source: serde_json::Error,
    },
    /// A record could not be encoded.
    #[error("store keyspace {keyspace}, key {key:?}: record does not encode: {source}")]
    Encode {
        /// The keyspace.
        keyspace: Keyspace,
        /// The key.
        key: String,
        /// The encoder's error.
        source: serde_json::Error,
    },
    /// A stored key does not have the layout of its keyspace.
    #[error("store keyspace {keyspace}: key {key:?} is malformed: {problem}")]
    InvalidKey {
        /// The keyspace.
        keyspace: Keyspace,
        /// The key, lossily printed.
        key: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// A counter in `meta` is not 8 bytes.
    #[error("store keyspace meta, counter {key:?}: expected 8 bytes, found {len}")]
    InvalidCounter {
        /// The counter's key.
        key: String,
        /// The stored length.
        len: usize,
    },
    /// The database was written by a newer fedgw, in a layout this one does not
    /// know; it is left untouched.
    #[error(
        "the store at {path} has schema version {found}, newer than the {known} this fedgw knows; run the fedgw that wrote it, or a newer one"
    )]
    SchemaTooNew {
        /// The database directory.
        path: PathBuf,
        /// The version found.
        found: u64,
        /// The newest version this build knows.
        known: u64,
    },
    /// A counter reached `u64::MAX`.
    #[error("store counter {key:?} cannot grow past {}", u64::MAX)]
    CounterExhausted {
        /// The counter's key.
        key: String,
    },
    /// A stored document no longer parses as a bundle of its trust domain.
    #[error("{trust_domain}: stored bundle at revision {revision} does not parse: {source}")]
    InvalidDocument {
        /// The trust domain.
        trust_domain: TrustDomain,
        /// The record's revision.
        revision: u64,
        /// The parser's error.
        source: BundleError,
    },
    /// A stored timestamp is out of range.
    #[error("store keyspace {keyspace}, key {key:?}: timestamp {value} is out of range")]
    InvalidTimestamp {
        /// The keyspace.
        keyspace: Keyspace,
        /// The key.
        key: String,
        /// The stored Unix seconds.
        value: i64,
    },
    /// The database directory is in use by another process, or by another store in
    /// this one.
    #[error(
        "the store at {path} is in use by another fedgw process (or another store in this one)"
    )]
    Locked {
        /// The database directory.
        path: PathBuf,
    },
    /// A file operation on the database directory failed (locking, measuring,
    /// rewriting).
    #[error("cannot {operation} {path}: {source}")]
    Filesystem {
        /// What was being done.
        operation: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A rename while swapping in a rewritten database failed.
    #[error("cannot rename {from} to {to}: {source}")]
    Rename {
        /// The directory renamed.
        from: PathBuf,
        /// Its new name.
        to: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A rewritten database does not hold what was copied into it; it was discarded
    /// and the database kept as it was.
    #[error(
        "the rewritten store at {path} does not match its source (copied {expected}; found {found})"
    )]
    RewriteMismatch {
        /// The rewritten copy.
        path: PathBuf,
        /// Records and bytes per keyspace copied.
        expected: String,
        /// Records and bytes per keyspace found.
        found: String,
    },
    /// A rewrite failed and the database could not be reopened; the next start
    /// finishes or undoes the rewrite.
    #[error("the store at {path} is unavailable after a failed rewrite; restart the gateway")]
    Unavailable {
        /// The database directory.
        path: PathBuf,
    },
    /// The blocking task running a store call panicked or was cancelled.
    #[error("store task for {operation} did not finish: {source}")]
    Blocking {
        /// The store call.
        operation: &'static str,
        /// tokio's error.
        source: tokio::task::JoinError,
    },
}

fn for_domain(trust_domain: Option<&TrustDomain>) -> String {
    trust_domain
        .map(|td| format!(" ({td})"))
        .unwrap_or_default()
}
