//! What the store keeps: history per trust domain by count and bytes, the audit log
//! by count and bytes, audit records of bounded size, and the live bytes they add up
//! to.
//!
//! Owns the pruning rules and the byte accounting the compaction trigger relies on;
//! not when to prune (the [`Store`](super::Store) calls these after its writes) nor
//! the rewrite itself ([`compact`](super::compact)).

use std::borrow::Cow;

use serde_json::Value;
use sled::{Batch, IVec, Tree};
use spiffe_federation::TrustDomain;

use super::records::AuditRecord;
use super::{Keyspace, StoreError, history_prefix, storage};
use crate::config::storage::StorageConfig;
use crate::digest::sha256_hex as digest;

/// Longest `detail` text kept in an audit record, in bytes; longer text is cut and
/// its length noted.
pub const AUDIT_DETAIL_MAX: usize = 1024;
/// Longest string kept inside an audit record's `old_value` or `new_value` (e.g. an
/// inline bootstrap bundle), in bytes; a longer one is replaced by an excerpt, its
/// length and its SHA-256.
pub const AUDIT_STRING_MAX: usize = 4096;
/// Largest `old_value` or `new_value` kept, in bytes of JSON after strings are cut;
/// a larger one is replaced by `{"truncated": {"bytes": N, "sha256": "…"}}`.
pub const AUDIT_VALUE_MAX: usize = 16 * 1024;
/// Characters of a cut string kept as its excerpt.
const EXCERPT_CHARS: usize = 128;

/// Bytes added to and freed from the live records by one write, as sled counts them
/// (key plus value).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Change {
    /// Bytes of records written.
    pub(super) put: u64,
    /// Bytes of records replaced or removed.
    pub(super) freed: u64,
}

impl Change {
    /// `key` was set to a value of `len` bytes, replacing `old`.
    pub(super) fn set(key: &[u8], len: usize, old: Option<&IVec>) -> Self {
        Self {
            put: record_len(key, len),
            freed: old.map_or(0, |old| record_len(key, old.len())),
        }
    }

    /// `key` was removed; it held `old`.
    pub(super) fn removed(key: &[u8], old: Option<&IVec>) -> Self {
        Self {
            put: 0,
            freed: old.map_or(0, |old| record_len(key, old.len())),
        }
    }
}

impl std::ops::AddAssign for Change {
    fn add_assign(&mut self, other: Self) {
        self.put = self.put.saturating_add(other.put);
        self.freed = self.freed.saturating_add(other.freed);
    }
}

/// The size sled stores for one record: key plus value.
pub(super) fn record_len(key: &[u8], value: usize) -> u64 {
    u64::try_from(key.len().saturating_add(value)).unwrap_or(u64::MAX)
}

/// Drop the versions of `trust_domain` beyond the newest `history_max_versions`, or
/// beyond `history_max_bytes_per_domain` bytes of records counted from the newest;
/// the newest is always kept. Not part of the accept transaction: a crash in between
/// leaves extra history, which the next accept (or the next start) trims.
pub(super) fn trim_history(
    history: &Tree,
    trust_domain: &TrustDomain,
    settings: &StorageConfig,
) -> Result<Change, StoreError> {
    let mut kept = 0usize;
    let mut kept_bytes = 0u64;
    let mut batch = Batch::default();
    let mut change = Change::default();
    let mut dropping = false;
    for item in history.scan_prefix(history_prefix(trust_domain)).rev() {
        let (key, value) = item.map_err(storage(Keyspace::History, Some(trust_domain)))?;
        let len = record_len(&key, value.len());
        if !dropping {
            let fits = kept < settings.history_max_versions
                && (kept == 0
                    || kept_bytes.saturating_add(len) <= settings.history_max_bytes_per_domain.0);
            if fits {
                kept += 1;
                kept_bytes = kept_bytes.saturating_add(len);
                continue;
            }
            // Versions are kept newest first without gaps: all older ones go too.
            dropping = true;
        }
        change += Change::removed(&key, Some(&value));
        batch.remove(key);
    }
    if dropping {
        history
            .apply_batch(batch)
            .map_err(storage(Keyspace::History, Some(trust_domain)))?;
    }
    Ok(change)
}

/// Every trust domain with history, for trimming them all when the store opens.
pub(super) fn history_domains(history: &Tree) -> Result<Vec<TrustDomain>, StoreError> {
    let mut domains: Vec<TrustDomain> = Vec::new();
    for key in history.iter().keys() {
        let key = key.map_err(storage(Keyspace::History, None))?;
        let Some(at) = key.iter().position(|&b| b == 0) else {
            continue;
        };
        let name = std::str::from_utf8(&key[..at]).ok();
        let Some(td) = name.and_then(|name| TrustDomain::new(name).ok()) else {
            continue;
        };
        if domains.last() != Some(&td) {
            domains.push(td);
        }
    }
    Ok(domains)
}

/// Entries and bytes the audit log holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct AuditSize {
    pub(super) entries: u64,
    pub(super) bytes: u64,
}

/// Count the audit log (when the store opens).
pub(super) fn audit_size(audit: &Tree) -> Result<AuditSize, StoreError> {
    let mut size = AuditSize::default();
    for item in audit.iter() {
        let (key, value) = item.map_err(storage(Keyspace::Audit, None))?;
        size.entries += 1;
        size.bytes = size.bytes.saturating_add(record_len(&key, value.len()));
    }
    Ok(size)
}

/// Remove the oldest audit entries until at most `audit_max_entries` and
/// `audit_max_bytes` remain; `size` is updated to what is left.
pub(super) fn trim_audit(
    audit: &Tree,
    size: &mut AuditSize,
    settings: &StorageConfig,
) -> Result<Change, StoreError> {
    let max_entries = u64::try_from(settings.audit_max_entries).unwrap_or(u64::MAX);
    let mut change = Change::default();
    while size.entries > max_entries || size.bytes > settings.audit_max_bytes.0 {
        let Some((key, value)) = audit.pop_min().map_err(storage(Keyspace::Audit, None))? else {
            *size = AuditSize::default();
            break;
        };
        let len = record_len(&key, value.len());
        size.entries = size.entries.saturating_sub(1);
        size.bytes = size.bytes.saturating_sub(len);
        change += Change::removed(&key, Some(&value));
    }
    Ok(change)
}

/// `record` with its free text and values cut to the audit bounds
/// ([`AUDIT_DETAIL_MAX`], [`AUDIT_STRING_MAX`], [`AUDIT_VALUE_MAX`]); borrowed
/// unchanged when it is within them, as every bundle change's record is.
pub(super) fn bound_audit(record: &AuditRecord) -> Cow<'_, AuditRecord> {
    let detail_fits = record.detail.len() <= AUDIT_DETAIL_MAX;
    let values_fit = [&record.old_value, &record.new_value]
        .into_iter()
        .flatten()
        .all(value_fits);
    if detail_fits && values_fit {
        return Cow::Borrowed(record);
    }
    let mut bounded = record.clone();
    if !detail_fits {
        bounded.detail = cut(&record.detail, AUDIT_DETAIL_MAX);
    }
    bounded.old_value = bounded.old_value.map(bound_value);
    bounded.new_value = bounded.new_value.map(bound_value);
    Cow::Owned(bounded)
}

fn value_fits(value: &Value) -> bool {
    fn strings_fit(value: &Value) -> bool {
        match value {
            Value::String(text) => text.len() <= AUDIT_STRING_MAX,
            Value::Array(items) => items.iter().all(strings_fit),
            Value::Object(members) => members.values().all(strings_fit),
            _ => true,
        }
    }
    strings_fit(value) && encoded_len(value) <= AUDIT_VALUE_MAX
}

fn bound_value(mut value: Value) -> Value {
    fn cut_strings(value: &mut Value) {
        match value {
            Value::String(text) if text.len() > AUDIT_STRING_MAX => {
                *text = format!(
                    "{} (sha256 {})",
                    cut(text, EXCERPT_CHARS),
                    digest(text.as_bytes())
                );
            }
            Value::Array(items) => items.iter_mut().for_each(cut_strings),
            Value::Object(members) => members.values_mut().for_each(cut_strings),
            _ => {}
        }
    }
    let full = serde_json::to_vec(&value).unwrap_or_default();
    cut_strings(&mut value);
    if encoded_len(&value) <= AUDIT_VALUE_MAX {
        return value;
    }
    serde_json::json!({"truncated": {"bytes": full.len(), "sha256": digest(&full)}})
}

fn encoded_len(value: &Value) -> usize {
    serde_json::to_vec(value).map_or(usize::MAX, |bytes| bytes.len())
}

/// `text` cut to at most `max` bytes on a character boundary, with its length
/// noted: `"abc… (5000 bytes)"`.
pub(super) fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

/// Key plus value bytes of every record in every tree of `db`.
pub(super) fn live_bytes(db: &sled::Db) -> Result<u64, StoreError> {
    let mut live = 0u64;
    for name in db.tree_names() {
        let tree = db.open_tree(&name).map_err(storage(Keyspace::Meta, None))?;
        for item in tree.iter() {
            let (key, value) = item.map_err(storage(Keyspace::Meta, None))?;
            live = live.saturating_add(record_len(&key, value.len()));
        }
    }
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::db::records::AuditAction;

    fn record(detail: &str, new_value: Option<Value>) -> AuditRecord {
        AuditRecord {
            at: 1,
            who: "alice".into(),
            action: AuditAction::RelationshipCreate,
            trust_domain: None,
            old_digest: None,
            new_digest: None,
            detail: detail.into(),
            old_value: None,
            new_value,
        }
    }

    #[test]
    fn small_audit_records_are_kept_as_they_are() {
        let small = record(
            "two warnings",
            Some(serde_json::json!({"url": "https://x"})),
        );
        assert!(matches!(bound_audit(&small), Cow::Borrowed(_)));
    }

    #[test]
    fn long_detail_and_inline_documents_are_cut_with_length_and_digest() {
        let bundle = "x".repeat(1024 * 1024);
        let big = record(
            &"w".repeat(5000),
            Some(serde_json::json!({"trust_domain": "w.example", "bootstrap_bundle": bundle})),
        );
        let bounded = bound_audit(&big).into_owned();
        assert!(
            bounded.detail.len() < AUDIT_DETAIL_MAX + 32,
            "{}",
            bounded.detail
        );
        assert!(
            bounded.detail.ends_with("… (5000 bytes)"),
            "{}",
            bounded.detail
        );
        let value = bounded.new_value.unwrap();
        assert_eq!(value["trust_domain"], "w.example", "short members stay");
        let cut = value["bootstrap_bundle"].as_str().unwrap();
        assert!(cut.starts_with(&"x".repeat(EXCERPT_CHARS)), "{cut}");
        assert!(
            cut.ends_with(&format!(
                "… (1048576 bytes) (sha256 {})",
                digest(bundle.as_bytes())
            )),
            "{cut}"
        );
        assert!(serde_json::to_vec(&big).unwrap().len() > 1024 * 1024);
        assert!(serde_json::to_vec(&value).unwrap().len() < 1024);
    }

    #[test]
    fn a_value_of_many_short_strings_is_summarised() {
        let urls: Vec<String> = (0..2000)
            .map(|i| format!("https://m{i}.example/"))
            .collect();
        let big = serde_json::json!({"urls": urls});
        let full = serde_json::to_vec(&big).unwrap();
        let bounded = bound_audit(&record("", Some(big))).into_owned();
        assert_eq!(
            bounded.new_value.unwrap(),
            serde_json::json!({"truncated": {"bytes": full.len(), "sha256": digest(&full)}})
        );
    }

    #[test]
    fn cut_respects_character_boundaries() {
        assert_eq!(cut("héllo", 2), "h… (6 bytes)");
        assert_eq!(cut("short", 10), "short");
    }
}
