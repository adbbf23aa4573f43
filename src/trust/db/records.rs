//! The records the store keeps, as serde_json values: what each keyspace holds.
//!
//! Owns the record shapes and their codecs; not where or how they are stored.

use serde::{Deserialize, Serialize};
use spiffe_federation::TrustDomain;
use spiffe_federation::endpoint::ProxySetting;

use url::Url;

use crate::config::{DocumentFormat, ProfileName};
use crate::trust::policy::Source;

/// A stored bundle version (POLL-3: kept under the trust domain it belongs to).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRecord {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// The canonical SPIFFE bundle document (`Bundle::to_json`), served byte for byte.
    #[serde(with = "utf8_document")]
    pub document: Vec<u8>,
    /// Where it came from.
    pub source: Source,
    /// When it was accepted, in Unix seconds.
    pub accepted_at: i64,
    /// SHA-256 of `document`, lower-case hex.
    pub digest: String,
    /// Its `spiffe_sequence`, if any.
    pub sequence: Option<u64>,
    /// The global revision at which it was accepted.
    pub revision: u64,
}

/// A bundle to store; the store adds the digest and the revision.
#[derive(Debug, Clone)]
pub struct NewBundle {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// The canonical document (`Bundle::to_json`).
    pub document: Vec<u8>,
    /// Where it came from.
    pub source: Source,
    /// When it was accepted, in Unix seconds.
    pub accepted_at: i64,
    /// Its `spiffe_sequence`, if any.
    pub sequence: Option<u64>,
    /// What the stored current bundle must be for the write to go ahead.
    pub expected: Expected,
    /// For a fetched bundle with shared polling: the poller's lease, which must still
    /// be current when the write commits.
    pub fence: Option<Fence>,
}

/// A replica's lease on polling one trust domain: the write of a fetched bundle
/// carries it, and a shared store refuses the write unless this replica still holds
/// this very lease ([`StoreError::Fenced`](super::StoreError::Fenced)), so a replica
/// that lost its lease (a pause, a partition) cannot write over its successor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The replica's ID.
    pub holder: String,
    /// The fencing token: new, and higher, each time a lease is taken.
    pub token: u64,
}

/// The current bundle a new one was judged against (by policy, from this replica's
/// snapshot). With a shared store another replica may have changed it since; the
/// store then refuses the write ([`StoreError::Stale`](super::StoreError::Stale))
/// instead of overwriting a change this replica has not seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// No check (an import, a test).
    Any,
    /// There was no current bundle.
    Nothing,
    /// The current bundle was the one accepted at this revision.
    Revision(u64),
}

impl Expected {
    /// Whether a store whose current bundle is at `found` (`None`: none) meets it.
    pub fn holds(self, found: Option<u64>) -> bool {
        match self {
            Self::Any => true,
            Self::Nothing => found.is_none(),
            Self::Revision(revision) => found == Some(revision),
        }
    }
}

/// What changed in a shared store after a revision: what a replica applies to catch
/// up with the others ([`Database::changes_since`](super::Database::changes_since)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    /// The global revision the store is at; everything up to it is included.
    pub revision: u64,
    /// The current bundle of each domain accepted after the revision asked for,
    /// oldest first.
    pub accepted: Vec<BundleRecord>,
    /// The domains whose bundle was removed after it (and not accepted since).
    pub removed: Vec<TrustDomain>,
}

/// Fetch health of one federation relationship.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelationshipStatus {
    /// Last successful fetch, Unix seconds.
    pub last_success: Option<i64>,
    /// Last failed fetch (kept after a later success, for the operator).
    pub last_error: Option<LastError>,
    /// When the poller plans the next fetch, Unix seconds.
    pub next_attempt: Option<i64>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
}

/// A failed fetch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    /// When it failed, Unix seconds.
    pub at: i64,
    /// A stable name for the failure (`connect`, `tls`, `sequence_regression`, …);
    /// absent in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// What went wrong, as shown to the operator.
    pub message: String,
}

/// What an audit entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditAction {
    /// A bundle was accepted (fetched, local, operator or bootstrap).
    Accept,
    /// A trust domain's bundle was removed (POLL-4).
    Remove,
    /// An operator re-accepted a past version.
    Rollback,
    /// A federation relationship was created through the admin API.
    RelationshipCreate,
    /// A federation relationship created through the admin API was replaced.
    RelationshipUpdate,
    /// A federation relationship created through the admin API was deleted (POLL-4).
    RelationshipDelete,
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When, Unix seconds.
    pub at: i64,
    /// Who did it: an operator identity or a bundle source.
    pub who: String,
    /// What was done.
    pub action: AuditAction,
    /// The trust domain concerned, if any.
    pub trust_domain: Option<TrustDomain>,
    /// Digest of the bundle before.
    pub old_digest: Option<String>,
    /// Digest of the bundle after.
    pub new_digest: Option<String>,
    /// Free text for people (warnings, rollback target).
    pub detail: String,
    /// The value before, for changes that are not bundles (a relationship's JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_value: Option<serde_json::Value>,
    /// The value after, for changes that are not bundles (a relationship's JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_value: Option<serde_json::Value>,
}

/// A federation relationship created through the admin API, as stored in the
/// `relationships` keyspace (relationships from the configuration file are not stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelationshipRecord {
    /// The relationship as the API accepted it (file contents inline).
    pub relationship: StoredRelationship,
    /// When it was created or last replaced, Unix seconds.
    pub changed_at: i64,
    /// Who created or last replaced it.
    pub changed_by: String,
}

/// A relationship's fields as stored (schema version 1): the admin API body's JSON
/// shape when the keyspace was introduced. The store keeps its own type so that the
/// API can change without changing what is on disk; a change of this shape needs a
/// new schema version and a migration ([`super::schema`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredRelationship {
    /// The foreign trust domain.
    pub trust_domain: TrustDomain,
    /// The bundle endpoint URL, when one was given as `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<Url>,
    /// The endpoint URLs, when given as the list `urls`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<Url>,
    /// The endpoint profile.
    pub profile: ProfileName,
    /// `https_spiffe`: the endpoint server's SPIFFE ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_spiffe_id: Option<spiffe_federation::SpiffeId>,
    /// `https_spiffe`: the bootstrap bundle document, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_bundle: Option<String>,
    /// Format of `bootstrap_bundle`.
    #[serde(default)]
    pub bootstrap_format: DocumentFormat,
    /// `https_web`: extra PEM CA roots, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_ca_roots_pem: Option<String>,
    /// Follow HTTP redirects.
    #[serde(default = "yes")]
    pub follow_redirects: bool,
    /// `env`, `off`, or a proxy URL.
    #[serde(default)]
    pub proxy: ProxySetting,
    /// Accept a fetched empty `keys` list.
    #[serde(default)]
    pub allow_revocation: bool,
}

fn yes() -> bool {
    true
}

/// The caller's part of the audit entry a change writes.
#[derive(Debug, Clone)]
pub struct AuditNote {
    /// Who made the change.
    pub who: String,
    /// What kind of change.
    pub action: AuditAction,
    /// Free text for people.
    pub detail: String,
}

/// `document` is stored as a JSON string (it is always UTF-8 JSON), not a byte array.
mod utf8_document {
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        let text = std::str::from_utf8(bytes).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(text)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        String::deserialize(deserializer).map(String::into_bytes)
    }
}

impl AuditNote {
    /// The audit entry of a change of `trust_domain`'s bundle at `at`, from the digest
    /// it replaced (`None`: there was none) to the new one (`None`: removed).
    pub fn bundle_change(
        &self,
        at: i64,
        trust_domain: &TrustDomain,
        old_digest: Option<String>,
        new_digest: Option<String>,
    ) -> AuditRecord {
        AuditRecord {
            at,
            who: self.who.clone(),
            action: self.action,
            trust_domain: Some(trust_domain.clone()),
            old_digest,
            new_digest,
            detail: self.detail.clone(),
            old_value: None,
            new_value: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status stored before failures had a code still loads, with no code; one
    /// with a code keeps it.
    #[test]
    fn last_error_code_is_optional_in_stored_records() {
        let old: RelationshipStatus = serde_json::from_str(
            r#"{"last_success":null,"last_error":{"at":5,"message":"timeout"},"next_attempt":null,"consecutive_failures":1}"#,
        )
        .unwrap();
        let error = old.last_error.unwrap();
        assert_eq!(
            (error.at, error.code, error.message.as_str()),
            (5, None, "timeout")
        );

        let new = LastError {
            at: 6,
            code: Some("connect".to_owned()),
            message: "cannot connect".to_owned(),
        };
        let text = serde_json::to_string(&new).unwrap();
        assert!(text.contains(r#""code":"connect""#), "{text}");
        assert_eq!(serde_json::from_str::<LastError>(&text).unwrap(), new);
    }
}
