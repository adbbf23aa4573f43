//! Moving a gateway's whole state between stores (`fedgw store copy`): a [`Dump`] of
//! everything a [`Database`] keeps, and [`copy`], which writes it into an empty store
//! and reads it back to check it arrived whole.
//!
//! Owns what "everything" is: current bundles, history, fetch statuses, the audit log
//! and its sequence, the global revision, local sequence counters and relationships.
//! Both stores keep the same record encodings, so a copy is exact: the same bytes are
//! served before and after.

use spiffe_federation::TrustDomain;

use super::{
    AuditRecord, BundleRecord, Database, RelationshipRecord, RelationshipStatus, StoreError,
};

/// Everything a store keeps, in key order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Dump {
    /// The global revision.
    pub revision: u64,
    /// The last audit sequence number given out (entries may have been trimmed).
    pub audit_seq: u64,
    /// Current bundles, by trust domain.
    pub bundles: Vec<BundleRecord>,
    /// Every kept version, by trust domain and then revision.
    pub history: Vec<BundleRecord>,
    /// Fetch statuses, by trust domain.
    pub statuses: Vec<(TrustDomain, RelationshipStatus)>,
    /// The audit log, oldest first.
    pub audit: Vec<(u64, AuditRecord)>,
    /// The counters behind local domains' `spiffe_sequence`, by trust domain.
    pub local_sequences: Vec<(TrustDomain, u64)>,
    /// Relationships created through the admin API, by trust domain.
    pub relationships: Vec<RelationshipRecord>,
}

impl Dump {
    /// Whether nothing is kept at all (a new store).
    pub fn is_empty(&self) -> bool {
        self.what().is_none()
    }

    /// What a store that is not new holds, for [`StoreError::NotEmpty`].
    pub fn what(&self) -> Option<String> {
        let counts = [
            ("revision", usize::from(self.revision > 0)),
            ("bundles", self.bundles.len()),
            ("history versions", self.history.len()),
            ("statuses", self.statuses.len()),
            ("audit entries", self.audit.len()),
            ("local sequences", self.local_sequences.len()),
            ("relationships", self.relationships.len()),
        ];
        let held: Vec<String> = counts
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(what, n)| {
                if *what == "revision" {
                    format!("revision {}", self.revision)
                } else {
                    format!("{n} {what}")
                }
            })
            .collect();
        (!held.is_empty()).then(|| held.join(", "))
    }

    /// The first difference between `self` and `other`, described.
    pub fn first_difference(&self, other: &Self) -> Option<String> {
        if self.revision != other.revision {
            return Some(format!("revision {} vs {}", self.revision, other.revision));
        }
        if self.audit_seq != other.audit_seq {
            return Some(format!(
                "audit sequence {} vs {}",
                self.audit_seq, other.audit_seq
            ));
        }
        fn list<T: PartialEq>(name: &str, a: &[T], b: &[T]) -> Option<String> {
            if a.len() != b.len() {
                return Some(format!("{} {name} vs {}", a.len(), b.len()));
            }
            a.iter()
                .zip(b)
                .position(|(x, y)| x != y)
                .map(|at| format!("{name}: entry {at} differs"))
        }
        list("bundles", &self.bundles, &other.bundles)
            .or_else(|| list("history versions", &self.history, &other.history))
            .or_else(|| list("statuses", &self.statuses, &other.statuses))
            .or_else(|| list("audit entries", &self.audit, &other.audit))
            .or_else(|| {
                list(
                    "local sequences",
                    &self.local_sequences,
                    &other.local_sequences,
                )
            })
            .or_else(|| list("relationships", &self.relationships, &other.relationships))
    }
}

/// What [`copy`] moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopyReport {
    /// The global revision copied.
    pub revision: u64,
    /// Current bundles.
    pub bundles: usize,
    /// History versions.
    pub history: usize,
    /// Audit entries.
    pub audit: usize,
    /// Relationships.
    pub relationships: usize,
}

/// Copy everything `from` keeps into `to`, which must be new, then read `to` back and
/// compare. Blocks. Neither store may be in use by a gateway meanwhile (a sled
/// store's directory lock sees to that for sled; stop the replicas for PostgreSQL).
///
/// # Errors
/// [`StoreError::NotEmpty`] when `to` holds anything (nothing is written),
/// [`StoreError::CopyMismatch`] when the read-back differs, or either store's error.
pub fn copy(from: &dyn Database, to: &dyn Database) -> Result<CopyReport, StoreError> {
    let dump = from.export()?;
    to.import(&dump)?;
    let back = to.export()?;
    if let Some(what) = dump.first_difference(&back) {
        return Err(StoreError::CopyMismatch { what });
    }
    Ok(CopyReport {
        revision: dump.revision,
        bundles: dump.bundles.len(),
        history: dump.history.len(),
        audit: dump.audit.len(),
        relationships: dump.relationships.len(),
    })
}
