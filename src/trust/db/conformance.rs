//! The store's conformance tests: one body per behaviour, run against every backend
//! (the embedded sled [`Store`] and the shared [`PgStore`] on a real PostgreSQL
//! server the test kit starts from Debian's packages). A behaviour a backend does not
//! share (sled's directory lock, its files) is tested next to that backend instead.

#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use super::postgres::PgStore;
use super::postgres::testing::TestDatabase;
use super::testing::{new_bundle, note};
use super::*;
use crate::trust::policy::testing::td;

/// A store that can be opened, and opened again over the same state.
pub(super) trait Backend {
    /// Open the store (again) with `settings`.
    fn open_with(&self, settings: StorageConfig) -> Box<dyn Database>;

    /// Open the store (again) with the default settings.
    fn open(&self) -> Box<dyn Database> {
        self.open_with(StorageConfig::default())
    }
}

/// A sled database in a temporary directory.
pub(super) struct SledBackend {
    dir: tempfile::TempDir,
}

impl SledBackend {
    pub(super) fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
}

impl Backend for SledBackend {
    /// A reopen right after `drop` can find sled's file lock still held for a moment
    /// by its background flusher (in-process only; a restarted process never sees
    /// it), so a failed open is retried for up to 2 s.
    fn open_with(&self, settings: StorageConfig) -> Box<dyn Database> {
        let path = self.dir.path().join("db");
        let mut attempts = 0;
        loop {
            match Store::open_with(&path, settings.clone(), Metrics::new()) {
                Ok(store) => return Box::new(store),
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
}

/// A fresh database on the test process's PostgreSQL server.
pub(super) struct PgBackend(TestDatabase);

impl PgBackend {
    pub(super) fn new() -> Self {
        Self(TestDatabase::new())
    }
}

impl Backend for PgBackend {
    fn open_with(&self, settings: StorageConfig) -> Box<dyn Database> {
        let settings = self.0.storage_with(settings);
        Box::new(
            PgStore::open(&self.0.config, settings, Metrics::new())
                .unwrap_or_else(|err| panic!("{err}")),
        )
    }
}

/// One `#[test]` per backend for each body.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sled {
            $(
                #[test]
                fn $name() {
                    super::$name(&super::SledBackend::new());
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    super::$name(&super::PgBackend::new());
                }
            )*
        }
    };
}

conformance!(
    put_get_remove,
    history_keeps_at_most_the_configured_count_and_bytes_and_always_the_newest,
    audit_log_keeps_the_newest_entries_within_its_caps,
    history_keeps_the_newest_twenty,
    revision_is_monotonic_across_reopen,
    bun_4_local_sequence_only_grows_across_removal_and_reopen,
    audit_appends_in_order,
    relationships_are_stored_with_their_audit_entry_and_survive_reopen,
);

fn put_get_remove(backend: &dyn Backend) {
    let store = backend.open();
    let east = td("east.example");
    assert_eq!(store.bundle(&east).unwrap(), None);

    let record = store
        .put_bundle(new_bundle("east.example", 1), note())
        .unwrap();
    assert_eq!(record.revision, 1);
    assert_eq!(
        record.digest,
        crate::digest::sha256_hex(br#"{"keys":[],"spiffe_sequence":1}"#)
    );
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

/// A bundle of `name` whose document is `len` bytes long.
fn sized_bundle(name: &str, sequence: u64, len: usize) -> NewBundle {
    let mut new = new_bundle(name, sequence);
    let head = format!(r#"{{"keys":[],"spiffe_sequence":{sequence},"x":""#);
    let filler = "a".repeat(len - head.len() - 2);
    new.document = format!("{head}{filler}\"}}").into_bytes();
    assert_eq!(new.document.len(), len);
    new
}

fn sequences(store: &dyn Database, name: &str) -> Vec<u64> {
    let history = store.history(&td(name)).unwrap();
    history.iter().filter_map(|r| r.sequence).collect()
}

fn history_keeps_at_most_the_configured_count_and_bytes_and_always_the_newest(
    backend: &dyn Backend,
) {
    let settings = StorageConfig {
        history_max_versions: 4,
        history_max_bytes_per_domain: ByteSize(5000),
        ..StorageConfig::default()
    };
    let store = backend.open_with(settings.clone());
    // Records of about 1.2 KB: the count rules.
    for sequence in 1..=6 {
        store
            .put_bundle(sized_bundle("east.example", sequence, 1000), note())
            .unwrap();
    }
    assert_eq!(sequences(&*store, "east.example"), [6, 5, 4, 3]);
    // Records of about 2.2 KB: the bytes rule, counted from the newest.
    for sequence in 7..=9 {
        store
            .put_bundle(sized_bundle("east.example", sequence, 2000), note())
            .unwrap();
    }
    assert_eq!(sequences(&*store, "east.example"), [9, 8]);
    // One version larger than the cap alone: it stays, the others go.
    store
        .put_bundle(sized_bundle("east.example", 10, 8000), note())
        .unwrap();
    assert_eq!(sequences(&*store, "east.example"), [10]);
    assert_eq!(
        store.bundle(&td("east.example")).unwrap().unwrap().sequence,
        Some(10)
    );
    // Other domains are counted on their own.
    for sequence in 1..=3 {
        store
            .put_bundle(sized_bundle("west.example", sequence, 1000), note())
            .unwrap();
    }
    assert_eq!(sequences(&*store, "west.example"), [3, 2, 1]);
    store
        .put_bundle(sized_bundle("north.example", 1, 1000), note())
        .unwrap();
    store
        .put_bundle(sized_bundle("north.example", 2, 1000), note())
        .unwrap();
    drop(store);

    // Lower caps apply to every domain when the store opens, before any write.
    let store = backend.open_with(StorageConfig {
        history_max_versions: 1,
        ..settings
    });
    assert_eq!(sequences(&*store, "east.example"), [10]);
    assert_eq!(sequences(&*store, "west.example"), [3]);
    assert_eq!(sequences(&*store, "north.example"), [2]);
    store
        .put_bundle(sized_bundle("west.example", 4, 1000), note())
        .unwrap();
    assert_eq!(sequences(&*store, "west.example"), [4]);
}

fn audit_log_keeps_the_newest_entries_within_its_caps(backend: &dyn Backend) {
    let settings = StorageConfig {
        audit_max_entries: 10,
        ..StorageConfig::default()
    };
    let store = backend.open_with(settings.clone());
    for sequence in 1..=25 {
        store
            .put_bundle(new_bundle("east.example", sequence), note())
            .unwrap();
    }
    let seqs: Vec<u64> = store
        .audit_log(0, 100)
        .unwrap()
        .iter()
        .map(|(seq, _)| *seq)
        .collect();
    assert_eq!(seqs, (16..=25).collect::<Vec<_>>());

    // Bytes: records of about 1.2 KB (a detail cut to 1 KiB) under a 64 KiB cap.
    let long = AuditRecord {
        at: 1,
        who: "bob".into(),
        action: AuditAction::RelationshipUpdate,
        trust_domain: None,
        old_digest: None,
        new_digest: None,
        detail: "d".repeat(100_000),
        old_value: None,
        new_value: None,
    };
    drop(store);
    let store = backend.open_with(StorageConfig {
        audit_max_entries: 1000,
        audit_max_bytes: MIN_AUDIT_MAX_BYTES,
        ..settings
    });
    for _ in 0..100 {
        store.append_audit(&long).unwrap();
    }
    let log = store.audit_log(0, 1000).unwrap();
    let bytes: usize = log
        .iter()
        .map(|(_, r)| 8 + serde_json::to_vec(r).unwrap().len())
        .sum();
    assert!(bytes as u64 <= MIN_AUDIT_MAX_BYTES.0, "{bytes}");
    assert!(log.len() > 40 && log.len() < 60, "{}", log.len());
    assert_eq!(log.last().unwrap().0, 125, "the newest is kept");
    let detail = &log[0].1.detail;
    assert!(detail.ends_with("… (100000 bytes)"), "{}", &detail[1000..]);
    assert!(detail.len() <= AUDIT_DETAIL_MAX + 32);
}

fn history_keeps_the_newest_twenty(backend: &dyn Backend) {
    let store = backend.open();
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

fn revision_is_monotonic_across_reopen(backend: &dyn Backend) {
    let store = backend.open();
    store
        .put_bundle(new_bundle("east.example", 1), note())
        .unwrap();
    store
        .put_bundle(new_bundle("west.example", 1), note())
        .unwrap();
    assert_eq!(store.revision().unwrap(), 2);
    drop(store);

    let store = backend.open();
    assert_eq!(store.revision().unwrap(), 2);
    let record = store
        .put_bundle(new_bundle("east.example", 2), note())
        .unwrap();
    assert_eq!(record.revision, 3);
    assert_eq!(store.bundles().unwrap().len(), 2);
}

fn bun_4_local_sequence_only_grows_across_removal_and_reopen(backend: &dyn Backend) {
    let store = backend.open();
    let local = td("local.example");
    assert_eq!(store.next_local_sequence(&local).unwrap(), 1);
    assert_eq!(store.next_local_sequence(&local).unwrap(), 2);
    assert_eq!(store.next_local_sequence(&td("other.example")).unwrap(), 1);
    store
        .put_bundle(new_bundle("local.example", 2), note())
        .unwrap();
    store.remove_bundle(&local, note(), 0).unwrap();
    drop(store);
    let store = backend.open();
    assert_eq!(store.next_local_sequence(&local).unwrap(), 3);
}

fn audit_appends_in_order(backend: &dyn Backend) {
    let store = backend.open();
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

fn relationships_are_stored_with_their_audit_entry_and_survive_reopen(backend: &dyn Backend) {
    let store = backend.open();
    let west = td("west.example");
    let spec: StoredRelationship = serde_json::from_value(serde_json::json!({
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
        |action, old: Option<&StoredRelationship>, new: Option<&StoredRelationship>| AuditRecord {
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

    let store = backend.open();
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

/// A store with a little of everything in it.
fn populate(store: &dyn Database) {
    for sequence in 1..=3 {
        store
            .put_bundle(new_bundle("east.example", sequence), note())
            .unwrap();
    }
    store
        .put_bundle(new_bundle("west.example", 1), note())
        .unwrap();
    store
        .put_bundle(new_bundle("gone.example", 1), note())
        .unwrap();
    store.remove_bundle(&td("gone.example"), note(), 5).unwrap();
    store
        .put_status(
            &td("east.example"),
            &RelationshipStatus {
                last_success: Some(7),
                consecutive_failures: 0,
                ..RelationshipStatus::default()
            },
        )
        .unwrap();
    store.next_local_sequence(&td("local.example")).unwrap();
    store.next_local_sequence(&td("local.example")).unwrap();
    let spec: StoredRelationship = serde_json::from_value(serde_json::json!({
        "trust_domain": "west.example",
        "url": "https://west.example/bundle",
        "profile": "https_web",
    }))
    .unwrap();
    let record = RelationshipRecord {
        relationship: spec,
        changed_at: 9,
        changed_by: "alice".into(),
    };
    let audit = AuditRecord {
        at: 9,
        who: "alice".into(),
        action: AuditAction::RelationshipCreate,
        trust_domain: Some(td("west.example")),
        old_digest: None,
        new_digest: None,
        detail: String::new(),
        old_value: None,
        new_value: Some(serde_json::json!({"trust_domain": "west.example"})),
    };
    store.put_relationship(&record, &audit).unwrap();
}

#[test]
fn a_copy_moves_everything_between_backends_and_back_exactly() {
    let sled = SledBackend::new();
    let postgres = PgBackend::new();
    let back = SledBackend::new();
    let source = sled.open();
    populate(&*source);
    let dump = source.export().unwrap();
    assert_eq!(dump.revision, 6);
    assert_eq!(dump.bundles.len(), 2, "the removed domain is not current");
    assert_eq!(dump.history.len(), 5, "its history is kept");
    assert_eq!(dump.local_sequences, vec![(td("local.example"), 2)]);

    let target = postgres.open();
    let report = copy(&*source, &*target).unwrap();
    assert_eq!(report.revision, 6);
    assert_eq!(target.export().unwrap(), dump);
    for record in source.bundles().unwrap() {
        let copied = target.bundle(&record.trust_domain).unwrap().unwrap();
        assert_eq!(
            copied.document, record.document,
            "the same bytes are served"
        );
    }
    // The copy keeps counting where the source stopped.
    assert_eq!(target.next_local_sequence(&td("local.example")).unwrap(), 3);
    let next = target
        .put_bundle(new_bundle("east.example", 4), note())
        .unwrap();
    assert_eq!(next.revision, 7);
    assert_eq!(
        target.audit_log(0, 100).unwrap().last().unwrap().0,
        dump.audit_seq + 1
    );

    // And back again, into a new sled store.
    let returned = back.open();
    copy(&*target, &*returned).unwrap();
    assert_eq!(returned.export().unwrap(), target.export().unwrap());

    // A store that holds anything is refused, and left as it was.
    let before = target.export().unwrap();
    let err = copy(&*source, &*target).unwrap_err();
    assert!(matches!(err, StoreError::NotEmpty { .. }), "{err:?}");
    assert!(err.to_string().contains("not empty"), "{err}");
    assert_eq!(target.export().unwrap(), before);
    let err = copy(&*target, &*source).unwrap_err();
    assert!(matches!(err, StoreError::NotEmpty { .. }), "{err:?}");
}
