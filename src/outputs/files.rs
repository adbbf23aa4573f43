//! The files sink (`[[sinks.files]]`): one directory of bundle files per sink, for
//! node-local agents and proxies that read trust bundles from disk.
//!
//! In its directory it keeps, for every trust domain it includes:
//!
//! - `<td>.pem`: that domain's X.509 authorities only (WAPI §5.2.1: X.509 bundles
//!   authenticate X509-SVIDs only); empty when the domain has none, e.g. after it
//!   revoked every key;
//! - `<td>.json`: the domain's SPIFFE bundle as stored (with `spiffe_sequence`);
//!
//! (a domain whose name cannot be a file name gets an encoded name instead, see
//! `names`), one index of those names, `bundle-files.json`, and one SPIFFE Bundle
//! Map, `bundle-map.json` (TDB §5.1.1, the format Envoy's
//! SPIFFE validator `trust_bundles` and gRPC's SPIFFE bundle map read), written by
//! the library's [`BundleMap`](spiffe_federation::BundleMap): each bundle under its
//! own trust domain, keeping its `spiffe_sequence`, without refresh hints (MAP-5).
//! Bundles are never merged into one pool (FED-11). A file that cannot be written is
//! reported and retried without holding up the others; repeated failures are logged
//! once, then every five minutes (`failures`).
//!
//! Owns the sink's configuration ([`FilesSinkConfig`]), the state it writes
//! ([`State`]), the gateway-side follower of the trust store's change feed
//! ([`start`]) and the [`FilesSink`] handle that `fedgw agent` reuses with a state
//! read from a gateway's watch API. How files are written (atomically, only what
//! changed, a manifest of what fedgw wrote) lives in `writer`; the `on_change` hook
//! in `hook`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//!
//! use fedgw::shutdown::Shutdown;
//! use fedgw::outputs::files::{FilesSink, FilesSinkConfig, Published, State};
//! use fedgw::telemetry::Metrics;
//! use spiffe_federation::{Bundle, BundleMap, TrustDomain};
//!
//! let dir = tempfile::tempdir()?;
//! let shutdown = Shutdown::new();
//! let sink = FilesSink::open(&FilesSinkConfig::new(dir.path()), Metrics::new(), &shutdown).await?;
//! let td: TrustDomain = "east.example".parse()?;
//! let bundle = Bundle::parse(&td, br#"{"keys":[],"spiffe_sequence":1}"#)?.bundle;
//! let json = bundle.to_json().into();
//! let state = State::from([(td.clone(), Published { bundle: Arc::new(bundle), json })]);
//! let applied = sink.apply(Arc::new(state)).await?;
//! assert_eq!(
//!     applied.written,
//!     ["east.example.pem", "east.example.json", "bundle-files.json", "bundle-map.json"]
//! );
//! let map = BundleMap::parse(&std::fs::read(dir.path().join("bundle-map.json"))?)?.map;
//! assert_eq!(map.get(&td).and_then(Bundle::sequence), Some(1));
//! # Ok(())
//! # }
//! ```

mod config;
mod failures;
mod hook;
mod names;
mod writer;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use spiffe_federation::{Bundle, TrustDomain};

pub use self::config::{FileMode, FilesSinkConfig, validate};
pub use self::failures::REPEAT_AFTER;
use self::failures::{FailureLog, Report};
pub use self::hook::HOOK_TIMEOUT;
pub use self::names::{INDEX_FILE, MAP_FILE, NAME_MAX};
pub use self::writer::MANIFEST_FILE;
use self::writer::Writer;
use crate::shutdown::Shutdown;
use crate::supervise::Supervisor;
use crate::telemetry::Metrics;
use crate::telemetry::families::{FILES_SINK_FAILED_FILES, FILES_SINK_UPDATES};
use crate::trust::store::{Snapshot, TrustStore};

/// How long after a failed write the sink tries again, even without a new change.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// One trust domain's bundle as a sink writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The parsed bundle (for `<td>.pem` and the bundle map).
    pub bundle: Arc<Bundle>,
    /// The SPIFFE bundle document as stored (for `<td>.json`).
    pub json: Bytes,
}

/// What a sink writes: every trust domain's bundle, each under its own name.
pub type State = BTreeMap<TrustDomain, Published>;

/// The state of a trust store snapshot; cheap (reference-counted bundles and bytes).
pub fn state_of(snapshot: &Snapshot) -> State {
    snapshot
        .domains
        .iter()
        .map(|(td, entry)| {
            let published = Published {
                bundle: Arc::clone(&entry.bundle),
                json: entry.json.clone(),
            };
            (td.clone(), published)
        })
        .collect()
}

/// Why a files sink could not write.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FilesError {
    /// A filesystem step on the sink's directory or one of its files failed.
    #[error("files sink {path}: cannot {step}: {source}")]
    Io {
        /// The directory or file concerned.
        path: PathBuf,
        /// What was being done.
        step: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another writer (a second gateway sink or `fedgw agent`) holds the directory.
    #[error(
        "files sink {dir}: the directory is in use by another fedgw writer (lock file .fedgw-files.lock)"
    )]
    InUse {
        /// The directory.
        dir: PathBuf,
    },
    /// The blocking write task did not complete.
    #[error("files sink {dir}: the write was interrupted")]
    Interrupted {
        /// The directory.
        dir: PathBuf,
    },
}

/// What one change set did, by file name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Files (re)written, in the order they were renamed into place.
    pub written: Vec<String>,
    /// Files deleted (trust domains removed or no longer included).
    pub removed: Vec<String>,
    /// Files that could not be written or deleted; the others were, and these are
    /// tried again by the next change set.
    pub failed: Vec<FailedFile>,
}

/// A file a change set could not write or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedFile {
    /// The file name.
    pub name: String,
    /// The trust domain it belongs to (`None` for the bundle map and the index).
    pub trust_domain: Option<TrustDomain>,
    /// What failed, naming the file, the step and the OS error.
    pub error: String,
}

impl Applied {
    /// Whether the directory was left as it was.
    pub fn is_empty(&self) -> bool {
        self.written.is_empty() && self.removed.is_empty()
    }
}

/// An open files sink: the directory's writer and its `on_change` hook. Cheap to
/// clone; every clone writes through the same writer, one change set at a time.
#[derive(Clone)]
pub struct FilesSink {
    dir: PathBuf,
    writer: Arc<Mutex<Writer>>,
    hook: Option<hook::Hook>,
    metrics: Metrics,
    failures: Arc<Mutex<FailureLog>>,
}

impl fmt::Debug for FilesSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilesSink")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl FilesSink {
    /// Open the directory of `config` (creating it, taking its lock, clearing
    /// temporary files left by a crash, reading the manifest of what fedgw wrote)
    /// and start its `on_change` hook runner under `shutdown`.
    ///
    /// # Errors
    /// [`FilesError`] naming the step that failed.
    pub async fn open(
        config: &FilesSinkConfig,
        metrics: Metrics,
        shutdown: &Shutdown,
    ) -> Result<Self, FilesError> {
        let dir = config.dir.clone();
        let mode = config.mode.bits();
        let allow: Option<BTreeSet<TrustDomain>> = config
            .trust_domains
            .as_ref()
            .map(|tds| tds.iter().cloned().collect());
        let opening = dir.clone();
        let writer = tokio::task::spawn_blocking(move || Writer::open(opening, mode, allow))
            .await
            .map_err(|_| FilesError::Interrupted { dir: dir.clone() })??;
        let hook = config
            .on_change
            .clone()
            .map(|argv| hook::spawn(argv, dir.clone(), shutdown));
        Ok(Self {
            dir,
            writer: Arc::new(Mutex::new(writer)),
            hook,
            metrics,
            failures: Arc::default(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Make the directory hold exactly `state` (restricted to the allow-list): write
    /// the files whose content changed, delete those of trust domains no longer
    /// present, then, if anything changed, ask the hook to run. A file that cannot
    /// be written or deleted is listed in [`Applied::failed`] and the rest is done.
    /// Failures are logged here, rate-limited (once, then every [`REPEAT_AFTER`]).
    ///
    /// # Errors
    /// [`FilesError`] when the directory itself fails (its manifest, its fsync);
    /// files already renamed into place stay (each is whole), the rest is written by
    /// the next call.
    pub async fn apply(&self, state: Arc<State>) -> Result<Applied, FilesError> {
        let writer = Arc::clone(&self.writer);
        let applied = tokio::task::spawn_blocking(move || {
            writer
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .apply(&state)
        })
        .await
        .map_err(|_| FilesError::Interrupted {
            dir: self.dir.clone(),
        })?;
        self.report(&applied);
        let changed = applied.as_ref().is_ok_and(|done| !done.is_empty());
        if changed {
            if let Ok(done) = &applied {
                tracing::info!(dir = %self.dir.display(), written = ?done.written, removed = ?done.removed, "files sink updated");
            }
            if let Some(hook) = &self.hook {
                hook.changed();
            }
        }
        let failed = match &applied {
            Ok(done) => !done.failed.is_empty(),
            Err(_) => true,
        };
        if changed || failed {
            let dir = self.dir.display().to_string();
            let outcome = if failed { "failed" } else { "written" };
            self.metrics.inc(
                FILES_SINK_UPDATES,
                &[("dir", dir.as_str()), ("outcome", outcome)],
                1.0,
            );
        }
        applied
    }

    /// Log (rate-limited) and measure what failed in one change set.
    fn report(&self, applied: &Result<Applied, FilesError>) {
        let (failure, count) = match applied {
            Ok(done) if done.failed.is_empty() => (None, 0),
            Ok(done) => {
                let errors: Vec<&str> = done.failed.iter().map(|f| f.error.as_str()).collect();
                (Some(errors.join("; ")), done.failed.len())
            }
            Err(err) => (Some(err.to_string()), 1),
        };
        let dir = self.dir.display().to_string();
        #[expect(
            clippy::cast_precision_loss,
            reason = "a count of files, far below 2^53"
        )]
        let value = count as f64;
        self.metrics
            .set(FILES_SINK_FAILED_FILES, &[("dir", dir.as_str())], value);
        let report = self
            .failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe(failure, Instant::now());
        match report {
            Report::Quiet => {}
            Report::Failed { message, repeated } => tracing::error!(
                dir,
                files = count,
                repeated,
                "files sink: {message}; the files in place stay and the other files are written; retrying"
            ),
            Report::Recovered { failures } => {
                tracing::info!(dir, failures, "files sink: every file written again");
            }
        }
    }
}

/// Open the sink of `config`, converge its directory to the trust store's current
/// snapshot, and keep it following the change feed until shutdown. A write that
/// fails later is logged and tried again on the next change or after
/// [`RETRY_AFTER`]; the files already in place keep serving.
///
/// # Errors
/// [`FilesError`] if the directory cannot be opened or the first convergence fails:
/// a gateway does not start with a sink it cannot write.
pub async fn start(
    config: &FilesSinkConfig,
    trust_store: TrustStore,
    metrics: Metrics,
    supervisor: &Supervisor,
) -> Result<FilesSink, FilesError> {
    let sink = FilesSink::open(config, metrics, supervisor.shutdown()).await?;
    sink.apply(Arc::new(state_of(&trust_store.snapshot())))
        .await?;
    let cancel = supervisor.shutdown().token();
    let following = sink.clone();
    let name = format!("files sink {}", sink.dir.display());
    supervisor.spawn(name, cancel.clone(), move || {
        let (trust_store, following, cancel) =
            (trust_store.clone(), following.clone(), cancel.clone());
        async move {
            // Subscribe before reading the snapshot: a change published in between is
            // then pending on the feed instead of missed. A restart after a panic
            // converges at once.
            let mut changes = trust_store.subscribe();
            loop {
                let state = Arc::new(state_of(&trust_store.snapshot()));
                // Failures were logged (rate-limited) by `apply`.
                let failing = !following
                    .apply(state)
                    .await
                    .is_ok_and(|applied| applied.failed.is_empty());
                tokio::select! {
                    () = cancel.cancelled() => return,
                    changed = changes.changed() => if changed.is_err() { return },
                    () = tokio::time::sleep(RETRY_AFTER), if failing => {}
                }
            }
        }
    });
    Ok(sink)
}
