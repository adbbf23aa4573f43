//! Storage stays bounded under churn (issue 11, item 5): 500 accepted changes of a
//! 1 MiB bundle, the worst case of a peer whose bundle changes on every poll, through
//! the real trust store on a real sled database. Before the `[storage]` bounds, sled
//! kept about 4 MB of files per change and never gave them back (2 GB after 500).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_precision_loss,
    reason = "test code"
)]

use fedgw::telemetry::Metrics;
use fedgw::telemetry::families::{STORE_DISK_BYTES, STORE_LIVE_BYTES};
use fedgw::trust::db::{
    AuditAction, AuditNote, Database, Expected, NewBundle, StorageConfig, Store, StoreUsage,
};
use fedgw::trust::policy::{PolicySettings, Source};
use fedgw::trust::store::TrustStore;
use fedgw_testkit::TestCa;
use spiffe_federation::{Bundle, TrustDomain};

const MIB: u64 = 1024 * 1024;
const CHANGES: u64 = 500;

/// A bundle of `td` whose document is just under 1 MiB: distinct CA certificates.
fn one_mib_bundle(td: &TrustDomain) -> Bundle {
    let mut bundle = Bundle::new(td.clone());
    bundle.set_sequence(Some(u64::MAX / 2));
    while bundle.to_json().len() < 1024 * 1024 - 2048 {
        for _ in 0..64 {
            bundle.add_x509_authority(TestCa::spiffe(td.as_str()).authority());
        }
    }
    while bundle.to_json().len() > 1024 * 1024 {
        let der = bundle.x509_authorities()[0].der().to_vec();
        bundle.remove_x509_authority(&der);
    }
    bundle
}

fn operator() -> Source {
    Source::Operator {
        who: "churn-test".into(),
    }
}

/// In process, a database just closed may be held a moment by sled's threads.
async fn reopen(path: &std::path::Path, storage: &StorageConfig) -> TrustStore {
    for _ in 0..100 {
        match TrustStore::open_with(path, PolicySettings::default(), storage.clone()).await {
            Ok(store) => return store,
            Err(err) => {
                eprintln!("reopen: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    panic!("the store did not reopen");
}

/// The most bytes on disk the `[storage]` caps allow for one domain whose stored
/// version takes `record` bytes (docs/operations.md, "What a domain can cost on
/// disk"): live records `L = record (current) + max(history cap, record) + audit`;
/// waste allowed before a rewrite `max(ratio × L, min waste)`; what one change writes
/// before the next measurement (two records and the two rewritten sled pages, the
/// history page at most the history cap plus a record); and sled's own files (log
/// segments, 8 MiB).
fn bound(storage: &StorageConfig, record: u64) -> u64 {
    let history = storage.history_max_bytes_per_domain.0.max(record);
    let audit = CHANGES * 1024;
    let live = record + history + audit;
    let one_change = 4 * record + history;
    live + storage.waste_allowance(live) + one_change + 8 * MIB
}

/// The documents of the churn: the template's JSON with `spiffe_sequence` set to
/// `BASE + n` (the same width, so each is patched in place).
const BASE: u64 = 1_000_000_000_000_000_000;

fn documents(template: &Bundle) -> impl Fn(u64) -> Vec<u8> + use<> {
    let mut bundle = template.clone();
    bundle.set_sequence(Some(BASE));
    let json = bundle.to_json();
    let digits = BASE.to_string();
    let at = json
        .windows(digits.len())
        .position(|w| w == digits.as_bytes())
        .unwrap();
    move |n| {
        let mut document = json.clone();
        document[at..at + digits.len()].copy_from_slice((BASE + n).to_string().as_bytes());
        document
    }
}

fn usage(store: &dyn Database) -> StoreUsage {
    store.usage().unwrap()
}

/// 500 changes through the store's write path (what an accepted fetch, push or
/// rollback does after policy: the bundle record, its history record and audit entry
/// in one flushed transaction, then the store's maintenance), measured after each;
/// then a restart through the trust store, which serves the last bundle and does not
/// grow the files. (Policy and snapshot work per change are left out to keep the
/// test near 40 s in a debug build; `bench/disk.rs` runs the same churn through the
/// release binary's admin API.)
#[test]
fn disk_bytes_stay_bounded_over_500_changes_of_a_1_mib_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let storage = StorageConfig::default();
    let store = Store::open_with(&path, storage.clone(), Metrics::new()).unwrap();
    let td: TrustDomain = "churn.example".parse().unwrap();
    let document = documents(&one_mib_bundle(&td));
    assert!(document(1).len() > 1024 * 1024 - 2048 && document(1).len() <= 1024 * 1024);

    let mut record = 0;
    let mut peak = 0;
    for n in 1..=CHANGES {
        let new = NewBundle {
            trust_domain: td.clone(),
            document: document(n),
            source: operator(),
            accepted_at: 1_700_000_000,
            sequence: Some(BASE + n),
            expected: Expected::Any,
            fence: None,
        };
        let note = AuditNote {
            who: "churn-test".into(),
            action: AuditAction::Accept,
            detail: String::new(),
        };
        store.put_bundle(new, note).unwrap();
        store.maintain();
        let now = usage(&store);
        if n == 1 {
            // One bundle record and one history record, an audit entry, counters.
            record = now.live_bytes / 2;
            assert!(record > MIB - 4096, "{now:?}");
        }
        peak = peak.max(now.disk_bytes);
        let limit = bound(&storage, record);
        assert!(
            now.disk_bytes <= limit,
            "after {n} changes the database takes {} bytes, over the bound of {limit} ({now:?})",
            now.disk_bytes
        );
    }
    let end = usage(&store);
    assert!(end.compactions > 0, "{end:?}");
    let history = store.history(&td).unwrap();
    assert_eq!(
        history[0].sequence,
        Some(BASE + CHANGES),
        "the newest version is kept"
    );
    let kept: u64 = history.iter().map(|r| r.document.len() as u64).sum();
    assert!(
        kept <= storage.history_max_bytes_per_domain.0 && history.len() > 1,
        "{} versions, {kept} bytes",
        history.len()
    );
    eprintln!(
        "peak {} MiB, end {end:?}, bound {} MiB",
        peak / MIB,
        bound(&storage, record) / MIB
    );
    drop(store);

    // A restart serves the last bundle and does not grow the files.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let trust_store = runtime.block_on(reopen(&path, &storage));
    assert_eq!(
        &trust_store.snapshot().get(&td).unwrap().json[..],
        &document(CHANGES)[..]
    );
    let after = usage(trust_store.store().as_ref());
    assert!(
        after.disk_bytes <= end.disk_bytes + 64 * 1024,
        "the restart grew the files: {end:?} → {after:?}"
    );
    assert_eq!(after.live_bytes, end.live_bytes);
    let gauges = (
        trust_store.metrics().value(STORE_DISK_BYTES, &[]),
        trust_store.metrics().value(STORE_LIVE_BYTES, &[]),
    );
    assert_eq!(
        gauges,
        (Some(after.disk_bytes as f64), Some(after.live_bytes as f64)),
        "the gauges on /metrics"
    );
}
