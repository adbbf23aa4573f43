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
    /// The current bundle is no longer the one a new bundle was judged against:
    /// another replica changed it. Nothing was written; judge again against it.
    #[error("{trust_domain}: the stored bundle changed ({}) since this one was judged against {}; nothing was written", describe_found(*.found), describe_expected(*.expected))]
    Stale {
        /// The trust domain.
        trust_domain: TrustDomain,
        /// What it was judged against.
        expected: super::Expected,
        /// The revision of the current bundle found (`None`: none).
        found: Option<u64>,
    },
    /// A fetched bundle's write carried a lease this replica no longer holds (it
    /// expired, was taken over, or its relationship was deleted): nothing was written.
    #[error(
        "{trust_domain}: this replica's polling lease (token {token}) is no longer current; nothing was written"
    )]
    Fenced {
        /// The trust domain.
        trust_domain: TrustDomain,
        /// The token the write carried.
        token: u64,
    },
    /// PostgreSQL refused or failed a statement, or the connection broke during it.
    #[error("database {operation}{}: {}", for_domain(.trust_domain.as_ref()), chain(.source))]
    Postgres {
        /// The store call.
        operation: &'static str,
        /// The trust domain concerned, if one.
        trust_domain: Option<TrustDomain>,
        /// The driver's error.
        source: tokio_postgres::Error,
    },
    /// No connection to PostgreSQL could be had within `storage.postgres.connect_timeout`.
    #[error("database {operation}: no connection to PostgreSQL: {}", chain(.source))]
    PostgresPool {
        /// The store call.
        operation: &'static str,
        /// The pool's error.
        source: deadpool_postgres::PoolError,
    },
    /// A store call took longer than `storage.postgres.statement_timeout`.
    #[error("database {operation}: no answer from PostgreSQL within {seconds} s")]
    PostgresTimeout {
        /// The store call.
        operation: &'static str,
        /// The timeout, in seconds.
        seconds: u64,
    },
    /// The PostgreSQL schema was written by a newer fedgw; it is left untouched.
    #[error(
        "the PostgreSQL store has schema version {found}, newer than the {known} this fedgw knows; run the fedgw that wrote it, or a newer one"
    )]
    PostgresSchemaTooNew {
        /// The version found.
        found: u64,
        /// The newest version this build knows.
        known: u64,
    },
    /// The PostgreSQL settings could not be used (password file, CA file, URL).
    #[error("storage.postgres: {problem}")]
    PostgresSettings {
        /// What is wrong, naming the key or file.
        problem: String,
    },
    /// A copy (`fedgw store copy`) into a store that already holds state.
    #[error("the target store is not empty ({what}); copy only into a new store")]
    NotEmpty {
        /// What it holds.
        what: String,
    },
    /// A copy read back from the target differs from what was written.
    #[error("the copy read back differs from the source: {what}")]
    CopyMismatch {
        /// The first difference found.
        what: String,
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

impl StoreError {
    /// Whether the error says the database could not be reached (no connection, no
    /// answer in time, the connection broke) rather than that a record or a call was
    /// wrong: the replica then counts the database as away.
    pub fn is_unreachable(&self) -> bool {
        match self {
            Self::PostgresPool { .. } | Self::PostgresTimeout { .. } => true,
            Self::Postgres { source, .. } => {
                source.is_closed()
                    || source.as_db_error().is_none_or(|db| {
                        // Class 08: connection exception; 57P01..03: the server is shutting
                        // down or cannot accept connections now.
                        let code = db.code().code();
                        code.starts_with("08") || code.starts_with("57P")
                    })
            }
            _ => false,
        }
    }
}

/// `err` and its causes, each once: the driver's own text says only "db error" or
/// "error performing TLS handshake", the server's message and the TLS reason are
/// its causes.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(next) = cause {
        let part = next.to_string();
        if !text.contains(&part) {
            text = format!("{text}: {part}");
        }
        cause = next.source();
    }
    text
}

fn describe_found(found: Option<u64>) -> String {
    found.map_or_else(
        || "now none".to_owned(),
        |revision| format!("now at revision {revision}"),
    )
}

fn describe_expected(expected: super::Expected) -> String {
    match expected {
        super::Expected::Any => "any".to_owned(),
        super::Expected::Nothing => "no bundle".to_owned(),
        super::Expected::Revision(revision) => format!("revision {revision}"),
    }
}

fn for_domain(trust_domain: Option<&TrustDomain>) -> String {
    trust_domain
        .map(|td| format!(" ({td})"))
        .unwrap_or_default()
}
