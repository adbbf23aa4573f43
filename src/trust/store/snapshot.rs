//! The immutable view readers get ([`Snapshot`], [`Entry`]) and how a stored record
//! becomes an entry: its document re-parsed, its time restored, and the warnings that
//! hold for it among all stored bundles (ID-16, SEC-7). Pure: no store, no clock.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use imbl::OrdMap;
use spiffe_federation::bundle::PublicKey;
use spiffe_federation::{Bundle, TrustDomain};
use time::OffsetDateTime;

use crate::trust::db::{BundleRecord, Keyspace, StoreError};
use crate::trust::policy::{self, BundleWarning, Source};

/// An immutable view of every stored bundle at one revision.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The global revision this view reflects.
    pub revision: u64,
    /// Current bundle per trust domain. A persistent map: a new snapshot shares
    /// everything but the changed domain's path with the previous one, so a change
    /// costs O(log n) whatever the number of domains, and readers holding an older
    /// snapshot keep it unchanged.
    pub domains: OrdMap<TrustDomain, Arc<Entry>>,
}

impl Snapshot {
    /// The entry of `trust_domain`, if stored.
    pub fn get(&self, trust_domain: &TrustDomain) -> Option<&Entry> {
        self.domains.get(trust_domain).map(Arc::as_ref)
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

/// Which trust domains hold each X.509 authority key among the stored bundles: kept
/// next to the snapshot by the trust store's single writer, so that a change
/// re-derives the warnings of only the domains it touches (SEC-7), not of all.
#[derive(Debug, Default)]
pub(super) struct KeyIndex {
    holders: BTreeMap<PublicKey, BTreeSet<TrustDomain>>,
}

impl KeyIndex {
    /// Forget `bundle` of `td`; the other holders of its keys are `affected`.
    fn remove(&mut self, td: &TrustDomain, bundle: &Bundle, affected: &mut BTreeSet<TrustDomain>) {
        for authority in bundle.x509_authorities() {
            let key = &authority.info().key;
            if let Some(tds) = self.holders.get_mut(key) {
                tds.remove(td);
                affected.extend(tds.iter().cloned());
                if tds.is_empty() {
                    self.holders.remove(key);
                }
            }
        }
    }

    /// Record `bundle` of `td`; the other holders of its keys are `affected`.
    fn add(&mut self, td: &TrustDomain, bundle: &Bundle, affected: &mut BTreeSet<TrustDomain>) {
        for authority in bundle.x509_authorities() {
            let tds = self
                .holders
                .entry(authority.info().key.clone())
                .or_default();
            affected.extend(tds.iter().filter(|other| *other != td).cloned());
            tds.insert(td.clone());
        }
    }
}

/// Index every bundle of `domains` into an empty `index` and set every entry's
/// [`BundleWarning`]s: the first snapshot, at open.
pub(super) fn load_warnings(domains: &mut OrdMap<TrustDomain, Arc<Entry>>, index: &mut KeyIndex) {
    let mut affected = BTreeSet::new();
    for (td, entry) in domains.iter() {
        index.add(td, &entry.bundle, &mut affected);
    }
    let all: Vec<TrustDomain> = domains.keys().cloned().collect();
    rederive(all, domains, index);
}

/// Bring the [`BundleWarning`]s of `domains` up to date after the entry of `td` was
/// replaced, added or removed (it was `old`), with `index` describing the domains
/// before the change on entry and after it on return. Only `td` and the domains
/// sharing a key with its old or new bundle get their warnings re-derived; the others
/// are left as they are (and stay shared with the previous snapshot).
pub(super) fn update_warnings(
    td: &TrustDomain,
    old: Option<&Arc<Entry>>,
    domains: &mut OrdMap<TrustDomain, Arc<Entry>>,
    index: &mut KeyIndex,
) {
    let mut affected = BTreeSet::from([td.clone()]);
    if let Some(old) = old {
        index.remove(td, &old.bundle, &mut affected);
    }
    if let Some(new) = domains.get(td) {
        index.add(td, &new.bundle, &mut affected);
    }
    rederive(affected, domains, index);
}

fn rederive(
    affected: impl IntoIterator<Item = TrustDomain>,
    domains: &mut OrdMap<TrustDomain, Arc<Entry>>,
    index: &KeyIndex,
) {
    for td in affected {
        if let Some(entry) = domains.get_mut(&td) {
            let warnings = policy::domain_warnings(&td, &entry.bundle, |key| {
                index.holders.get(key).into_iter().flatten()
            });
            if warnings != entry.warnings {
                Arc::make_mut(entry).warnings = warnings;
            }
        }
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
