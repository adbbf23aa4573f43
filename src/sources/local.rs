//! Where local trust domains' bundles come from: files, watched for changes.
//!
//! Owns reading a local bundle file (SPIFFE JSON or PEM) off the reactor, noticing
//! that it changed, and handing each new version to a caller-supplied sink; and that
//! sink for both local sources (files and the Workload API, [`workload`]):
//! [`Delivery`] submits each version to the trust store with the domain's refresh
//! hint and a sequence number, and logs what became of it. It does not own acceptance
//! (policy) or the served sequence number (the trust store assigns it when the source
//! has none).
//!
//! Change detection polls the file's metadata and content digest at a fixed interval:
//! it works the same on every filesystem, including Kubernetes ConfigMap volumes whose
//! files are replaced through symlink swaps, where inotify-style watches miss updates.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use spiffe_federation::bundle::{Ignored, IgnoredSummary, Lint};
use spiffe_federation::{Bundle, BundleError, TrustDomain};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::config::DocumentFormat;
use crate::trust::policy::{DocumentFacts, Source};
use crate::trust::store::{SubmitError, TrustStore};

mod start;
pub mod workload;

pub use self::start::{StartError, Started, start};

/// How often a watched file is checked.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Why a local bundle could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalSourceError {
    /// The file could not be read.
    #[error("cannot read local bundle {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid bundle document.
    #[error("local bundle {path} is invalid: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: BundleError,
    },
    /// The blocking read task was lost (runtime shutting down).
    #[error("reading {path} was interrupted")]
    Interrupted {
        /// The file.
        path: PathBuf,
    },
}

/// A loaded local bundle with what its parse reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The bundle, under the configured trust domain.
    pub bundle: Bundle,
    /// Elements left out.
    pub ignored: Vec<Ignored>,
    /// Warnings about kept content.
    pub lints: Vec<Lint>,
    /// What a SPIFFE bundle document's `keys` held (policy refuses a document whose
    /// elements were all left out); `None` for PEM, whose parse is strict.
    pub elements: Option<IgnoredSummary>,
    /// SHA-256 of the file's bytes, to notice changes.
    pub digest: [u8; 32],
}

/// Read and parse a local bundle file, on a blocking thread.
///
/// # Errors
/// [`LocalSourceError`] naming the file and the fault.
pub async fn load(
    path: &Path,
    format: DocumentFormat,
    trust_domain: &TrustDomain,
    max_bytes: usize,
) -> Result<Loaded, LocalSourceError> {
    let owned = path.to_path_buf();
    let bytes = tokio::task::spawn_blocking(move || std::fs::read(&owned))
        .await
        .map_err(|_| LocalSourceError::Interrupted {
            path: path.to_path_buf(),
        })?
        .map_err(|source| LocalSourceError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    parse(&bytes, path, format, trust_domain, max_bytes)
}

fn parse(
    bytes: &[u8],
    path: &Path,
    format: DocumentFormat,
    trust_domain: &TrustDomain,
    max_bytes: usize,
) -> Result<Loaded, LocalSourceError> {
    let invalid = |source| LocalSourceError::Invalid {
        path: path.to_path_buf(),
        source,
    };
    let digest = digest(bytes);
    match format {
        DocumentFormat::Spiffe => {
            let parsed =
                Bundle::parse_with_limit(trust_domain, bytes, max_bytes).map_err(invalid)?;
            Ok(Loaded {
                elements: Some(parsed.ignored_summary()),
                bundle: parsed.bundle,
                ignored: parsed.ignored,
                lints: parsed.lints,
                digest,
            })
        }
        DocumentFormat::Pem => {
            if bytes.len() > max_bytes {
                return Err(invalid(BundleError::TooLarge {
                    limit: max_bytes,
                    actual: bytes.len(),
                }));
            }
            let bundle = Bundle::from_pem(trust_domain, bytes).map_err(invalid)?;
            Ok(Loaded {
                bundle,
                ignored: Vec::new(),
                lints: Vec::new(),
                elements: None,
                digest,
            })
        }
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// What the watcher reports to its sink.
#[derive(Debug)]
pub enum Event {
    /// A new version of the file loaded (also sent once at start).
    Changed(Box<Loaded>),
    /// The file could not be loaded; the last good version stays in force.
    Failed(LocalSourceError),
}

/// Which local source a [`Delivery`] serves, for its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A watched file.
    File,
    /// A SPIFFE Workload API (a SPIRE agent).
    WorkloadApi,
}

/// Where one local domain's bundles go: the trust store, with the configured
/// refresh hint. Cheap to clone; every event handler of a local source is one.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The trust store.
    pub trust_store: TrustStore,
    /// The local trust domain.
    pub trust_domain: TrustDomain,
    /// The refresh hint served with it (BUN-6).
    pub refresh_hint: Duration,
    /// Where the bundles come from, as stored with each version.
    pub source: Source,
    /// Which kind of source, for the log.
    pub origin: Origin,
}

impl Delivery {
    /// Submit one loaded version: the served refresh hint is the configured one
    /// (BUN-6), and a bundle without a sequence gets one from the persisted counter
    /// whenever its authorities change (BUN-3, BUN-4), and always above the stored
    /// bundle's (which a source that sets its own sequence, e.g. SPIRE, may have put
    /// past the counter); a source that sets its own sequence keeps it. A file whose
    /// elements were all left out is refused like a fetched one; an empty `keys` list
    /// in the operator's own file is a deliberate revocation and is accepted (flagged).
    ///
    /// # Errors
    /// [`SubmitError`] when the trust store refuses or cannot store it.
    pub async fn accept(&self, loaded: Loaded) -> Result<(), SubmitError> {
        let td = &self.trust_domain;
        let mut bundle = loaded.bundle;
        bundle.set_refresh_hint(Some(self.refresh_hint));
        self.trust_store
            .number_local(td, &mut bundle)
            .await
            .map_err(SubmitError::Store)?;
        let now = OffsetDateTime::now_utc();
        let source = self.source.clone();
        match loaded.elements {
            Some(elements) => {
                let document = DocumentFacts {
                    elements,
                    allow_revocation: true,
                };
                self.trust_store
                    .submit_document(td, bundle, document, source, now)
                    .await
            }
            None => self.trust_store.submit(td, bundle, source, now).await,
        }
        .map(|_| ())
    }

    /// Handle one event of the source: store a new version, or log why there is
    /// none (the last good version keeps serving).
    pub async fn handle(&self, event: Event) {
        let td = &self.trust_domain;
        match (event, self.origin) {
            (Event::Changed(loaded), origin) => match (self.accept(*loaded).await, origin) {
                (Ok(()), Origin::File) => {}
                (Ok(()), Origin::WorkloadApi) => {
                    tracing::info!(trust_domain = %td, "local bundle from the Workload API stored");
                }
                (Err(err), Origin::File) => {
                    tracing::error!(trust_domain = %td, error = %err, "local bundle refused");
                }
                (Err(err), Origin::WorkloadApi) => {
                    tracing::error!(trust_domain = %td, error = %err, "local bundle from the Workload API refused");
                }
            },
            (Event::Failed(err), Origin::File) => {
                tracing::error!(trust_domain = %td, error = %err, "local bundle unreadable; still serving the last good one");
            }
            (Event::Failed(err), Origin::WorkloadApi) => {
                tracing::error!(trust_domain = %td, error = %err, "local bundle from the Workload API unusable");
            }
        }
    }
}

/// Decides which load results are worth reporting: a version whose bytes differ from
/// the last one reported, and a failure whose message differs from the last failure
/// (so a broken file does not flood the log). Pure, so it is tested without a clock.
#[derive(Debug, Default)]
pub struct ChangeFilter {
    last_digest: Option<[u8; 32]>,
    last_error: Option<String>,
}

impl ChangeFilter {
    /// The event to report for this load result, if any.
    pub fn observe(&mut self, result: Result<Loaded, LocalSourceError>) -> Option<Event> {
        match result {
            Ok(loaded) => {
                self.last_error = None;
                if self.last_digest == Some(loaded.digest) {
                    return None;
                }
                self.last_digest = Some(loaded.digest);
                Some(Event::Changed(Box::new(loaded)))
            }
            Err(err) => {
                let message = err.to_string();
                if self.last_error.as_deref() == Some(message.as_str()) {
                    return None;
                }
                self.last_error = Some(message);
                Some(Event::Failed(err))
            }
        }
    }
}

/// Watch a file until `cancel` fires: load it now, then every `interval`, and call
/// `sink` with what [`ChangeFilter`] lets through.
pub async fn watch<S, F>(
    path: PathBuf,
    format: DocumentFormat,
    trust_domain: TrustDomain,
    max_bytes: usize,
    interval: Duration,
    cancel: CancellationToken,
    mut sink: S,
) where
    S: FnMut(Event) -> F,
    F: Future<Output = ()>,
{
    let mut filter = ChangeFilter::default();
    loop {
        let result = load(&path, format, &trust_domain, max_bytes).await;
        if let Some(event) = filter.observe(result) {
            sink(event).await;
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td() -> TrustDomain {
        "local.example".parse().unwrap()
    }

    #[tokio::test]
    async fn spiffe_file_loads_under_the_configured_domain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.json");
        std::fs::write(&path, br#"{"keys":[],"spiffe_sequence":4}"#).unwrap();
        let loaded = load(&path, DocumentFormat::Spiffe, &td(), 1024)
            .await
            .unwrap();
        assert_eq!(loaded.bundle.trust_domain(), &td());
        assert_eq!(loaded.bundle.sequence(), Some(4));
    }

    #[tokio::test]
    async fn missing_and_invalid_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.json");
        let err = load(&missing, DocumentFormat::Spiffe, &td(), 1024)
            .await
            .unwrap_err();
        assert!(matches!(err, LocalSourceError::Read { ref path, .. } if path == &missing));
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, b"{}").unwrap();
        let err = load(&bad, DocumentFormat::Spiffe, &td(), 1024)
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            LocalSourceError::Invalid {
                source: BundleError::MissingMember { .. },
                ..
            }
        ));
        let err = load(&bad, DocumentFormat::Pem, &td(), 1024)
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            LocalSourceError::Invalid {
                source: BundleError::Pem(_),
                ..
            }
        ));
        let err = load(&bad, DocumentFormat::Spiffe, &td(), 1)
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            LocalSourceError::Invalid {
                source: BundleError::TooLarge { .. },
                ..
            }
        ));
    }

    fn loaded(bytes: &[u8]) -> Result<Loaded, LocalSourceError> {
        parse(
            bytes,
            Path::new("b.json"),
            DocumentFormat::Spiffe,
            &td(),
            1024,
        )
    }

    fn describe(event: Option<Event>) -> String {
        match event {
            None => "none".to_owned(),
            Some(Event::Changed(loaded)) => format!("seq {:?}", loaded.bundle.sequence()),
            Some(Event::Failed(_)) => "failed".to_owned(),
        }
    }

    #[test]
    fn filter_reports_each_change_once_and_each_failure_once() {
        let mut filter = ChangeFilter::default();
        let one = br#"{"keys":[],"spiffe_sequence":1}"#;
        let two = br#"{"keys":[],"spiffe_sequence":2}"#;
        let seen: Vec<String> = [
            loaded(one),
            loaded(one),
            loaded(b"not json"),
            loaded(b"not json"),
            loaded(one),
            loaded(two),
        ]
        .into_iter()
        .map(|result| describe(filter.observe(result)))
        .collect();
        // After a failure, the same good bytes are not reported again: nothing changed
        // for readers, who kept the last good version.
        assert_eq!(
            seen,
            [
                "seq Some(1)",
                "none",
                "failed",
                "none",
                "none",
                "seq Some(2)"
            ]
        );
    }

    async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn watcher_reports_the_file_and_its_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.json");
        std::fs::write(&path, br#"{"keys":[],"spiffe_sequence":1}"#).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(watch(
            path.clone(),
            DocumentFormat::Spiffe,
            td(),
            1024,
            Duration::from_millis(10),
            cancel.clone(),
            move |event| {
                let _ = tx.send(describe(Some(event)));
                async {}
            },
        ));
        assert_eq!(next(&mut rx).await, "seq Some(1)");
        // Replace atomically, as operators (and Kubernetes) do, so that no read sees a
        // half-written file.
        let tmp = dir.path().join("b.json.tmp");
        std::fs::write(&tmp, br#"{"keys":[],"spiffe_sequence":2}"#).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(next(&mut rx).await, "seq Some(2)");
        cancel.cancel();
        task.await.unwrap();
    }
}
