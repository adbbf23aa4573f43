//! The immutable view readers get ([`Snapshot`], [`Entry`]) and how a stored record
//! becomes an entry: its document re-parsed, its time restored, and the warnings that
//! hold for it among all stored bundles (ID-16, SEC-7). Pure: no store, no clock.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use spiffe_federation::{Bundle, TrustDomain};
use time::OffsetDateTime;

use crate::policy::{self, BundleWarning, Source};
use crate::store::{BundleRecord, Keyspace, StoreError};

/// An immutable view of every stored bundle at one revision.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The global revision this view reflects.
    pub revision: u64,
    /// Current bundle per trust domain.
    pub domains: BTreeMap<TrustDomain, Entry>,
}

impl Snapshot {
    /// The entry of `trust_domain`, if stored.
    pub fn get(&self, trust_domain: &TrustDomain) -> Option<&Entry> {
        self.domains.get(trust_domain)
    }
}

/// One trust domain's current bundle, ready to serve.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The parsed bundle.
    pub bundle: Arc<Bundle>,
    /// The canonical document, pre-serialised: what the bundle endpoint serves.
    pub json: Bytes,
    /// SHA-256 of `json`, lower-case hex.
    pub digest: String,
    /// `spiffe_sequence`, if any.
    pub sequence: Option<u64>,
    /// Where it came from.
    pub source: Source,
    /// When it was accepted (whole seconds, as stored).
    pub accepted_at: OffsetDateTime,
    /// The global revision at which it was accepted.
    pub revision: u64,
    /// What holds for it among every stored bundle (ID-16, SEC-7); recomputed on
    /// every change, so a warning caused by another domain's bundle goes with it.
    pub warnings: Vec<BundleWarning>,
}

/// Re-parse a stored document under its trust domain.
pub(super) fn parse_record(record: &BundleRecord) -> Result<Bundle, StoreError> {
    Bundle::parse(&record.trust_domain, &record.document)
        .map(|parsed| parsed.bundle)
        .map_err(|source| StoreError::InvalidDocument {
            trust_domain: record.trust_domain.clone(),
            revision: record.revision,
            source,
        })
}

/// A snapshot entry for a stored record, re-parsing its document.
pub(super) fn load_entry(record: BundleRecord) -> Result<Entry, StoreError> {
    let bundle = parse_record(&record)?;
    let accepted_at = whole_seconds(&record.trust_domain, record.accepted_at)?;
    Ok(entry(Arc::new(bundle), record, accepted_at))
}

pub(super) fn entry(
    bundle: Arc<Bundle>,
    record: BundleRecord,
    accepted_at: OffsetDateTime,
) -> Entry {
    Entry {
        bundle,
        json: Bytes::from(record.document),
        digest: record.digest,
        sequence: record.sequence,
        source: record.source,
        accepted_at,
        revision: record.revision,
        warnings: Vec::new(),
    }
}

/// Set every entry's [`BundleWarning`]s from the bundles held together.
pub(super) fn with_warnings(domains: &mut BTreeMap<TrustDomain, Entry>) {
    let mut warnings = policy::bundle_warnings(
        domains
            .iter()
            .map(|(td, entry)| (td, entry.bundle.as_ref())),
    );
    for (td, entry) in domains.iter_mut() {
        entry.warnings = warnings.remove(td).unwrap_or_default();
    }
}

/// `accepted_at` as stored (Unix seconds) back to a date.
pub(super) fn whole_seconds(
    trust_domain: &TrustDomain,
    unix: i64,
) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(|_| StoreError::InvalidTimestamp {
        keyspace: Keyspace::Bundles,
        key: trust_domain.to_string(),
        value: unix,
    })
}
