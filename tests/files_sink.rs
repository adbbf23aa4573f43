//! The files sink (`[[sinks.files]]`) through its public API: the writer under a
//! concurrent reader, and a gateway started in-process whose trust store changes
//! reach the directory and the `on_change` hook.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

#[path = "support/files_watch.rs"]
mod files_watch;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fedgw::app::Config;
use fedgw::outputs::files::{FilesSink, FilesSinkConfig, MAP_FILE, Published, State};
use fedgw::shutdown::{Ended, Shutdown};
use fedgw::telemetry::Metrics;
use fedgw_testkit::{DEADLINE, wait_until};
use files_watch::{InProcess, bundle_of, dev_ca, read_map, td};
use spiffe_federation::bundle::X509Authority;
use spiffe_federation::{Bundle, BundleMap};

/// MAP-7: every write is atomic. A reader thread reads `bundle-map.json` and
/// `a.example.pem` in a loop while the sink applies 1,000 updates that change the
/// number of authorities (so the files change size) and the sequence; every read must
/// parse in full, with the library's parsers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_7_readers_never_see_a_partial_file_during_1000_updates() {
    let pki = tempfile::tempdir().unwrap();
    // On tmpfs when there is one: rename is as atomic there, and 4,000 fsyncs of a
    // disk would dominate the test's time without testing anything more.
    let shm = Path::new("/dev/shm");
    let out = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let a = td("a.example");
    let cas: Vec<X509Authority> = (0..3)
        .map(|i| dev_ca(&pki.path().join(i.to_string()), &a))
        .collect();
    let shutdown = Shutdown::new();
    let sink = FilesSink::open(&FilesSinkConfig::new(out.path()), Metrics::new(), &shutdown)
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = Arc::clone(&stop);
        let dir = out.path().to_owned();
        let a = a.clone();
        std::thread::spawn(move || {
            let (mut reads, mut sequences) = (0_u64, BTreeSet::new());
            while !stop.load(Ordering::Relaxed) {
                let (Ok(map), Ok(pem)) = (
                    std::fs::read(dir.join(MAP_FILE)),
                    std::fs::read(dir.join("a.example.pem")),
                ) else {
                    continue; // not written yet
                };
                let map = BundleMap::parse(&map)
                    .unwrap_or_else(|err| panic!("partial bundle map ({err}): {map:?}"))
                    .map;
                sequences.insert(map.get(&a).unwrap().sequence().unwrap());
                let pem = Bundle::from_pem(&a, &pem)
                    .unwrap_or_else(|err| panic!("partial PEM ({err}): {pem:?}"));
                assert!((1..=3).contains(&pem.x509_authorities().len()));
                reads += 1;
                // Leave the writer some CPU on a small machine.
                std::thread::yield_now();
            }
            (reads, sequences)
        })
    };
    for sequence in 1..=1000_u64 {
        let count = usize::try_from(sequence % 3).unwrap() + 1;
        let bundle = bundle_of(&a, &cas[..count], sequence);
        let state = State::from([(
            a.clone(),
            Published {
                json: Bytes::from(bundle.to_json()),
                bundle: Arc::new(bundle),
            },
        )]);
        let applied = sink.apply(Arc::new(state)).await.unwrap();
        assert!(applied.written.contains(&MAP_FILE.to_owned()));
    }
    stop.store(true, Ordering::Relaxed);
    let (reads, sequences) = reader.join().unwrap();
    assert!(reads > 0, "the reader never read the files");
    assert!(sequences.len() > 1, "the reader saw one version only");
    let last = read_map(out.path()).unwrap();
    assert_eq!(last.get(&a).unwrap().sequence(), Some(1000));
    shutdown.shutdown(std::time::Duration::from_secs(5)).await;
}

/// A gateway started in-process with two files sinks: one for every domain with an
/// `on_change` hook (appending a line to `hook.log` per run), one limited to
/// `b.example` (MAP-8) with mode 0640. `all/` holds a file fedgw did not write.
async fn start_gateway() -> InProcess {
    let running = InProcess::start(
        r#"
[[sinks.files]]
dir = "{dir}/all"
on_change = ["sh", "-c", "echo changed >> \"$0\"", "{dir}/hook.log"]

[[sinks.files]]
dir = "{dir}/only-b"
trust_domains = ["b.example"]
mode = "0640"
"#,
    )
    .await;
    std::fs::write(running.path("all/operator-notes.txt"), "mine").unwrap();
    running
}

fn hook_runs(running: &InProcess) -> usize {
    std::fs::read_to_string(running.path("hook.log"))
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

/// FED-11, DIST-1, POLL-4 (files): a bundle accepted by the trust store reaches the
/// sink's directory as per-domain files and a map entry; a removed domain's files are
/// deleted; the hook runs after changes; a file fedgw did not write stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fed_11_dist_1_poll_4_trust_store_changes_reach_the_files_sink_and_hook() {
    let running = start_gateway().await;
    let pki = tempfile::tempdir().unwrap();
    let (a, b) = (td("a.example"), td("b.example"));
    let a_bundle = bundle_of(&a, &[dev_ca(pki.path(), &a)], 1);
    let b_bundle = bundle_of(&b, &[dev_ca(pki.path(), &b)], 7);
    running.put(&a_bundle).await;
    running.put(&b_bundle).await;

    let all = running.path("all");
    wait_until(DEADLINE, "both domains in the bundle map", || {
        let all = all.clone();
        async move { read_map(&all).is_some_and(|map| map.len() == 2) }
    })
    .await;
    let map = read_map(&all).unwrap();
    assert!(map.get(&a).unwrap().same_authorities(&a_bundle));
    assert_eq!(map.get(&b).unwrap().sequence(), Some(7));
    let pem = std::fs::read(all.join("b.example.pem")).unwrap();
    assert!(
        Bundle::from_pem(&b, &pem)
            .unwrap()
            .same_authorities(&b_bundle)
    );
    wait_until(DEADLINE, "the on_change hook ran", || async {
        hook_runs(&running) > 0
    })
    .await;

    let runs = hook_runs(&running);
    running.remove(&b).await;
    wait_until(DEADLINE, "b.example's files deleted", || {
        let all = all.clone();
        async move { !all.join("b.example.pem").exists() && !all.join("b.example.json").exists() }
    })
    .await;
    assert_eq!(
        read_map(&all).unwrap().len(),
        1,
        "a removed domain leaves the map"
    );
    wait_until(DEADLINE, "the hook ran after the removal", || async {
        hook_runs(&running) > runs
    })
    .await;
    assert!(all.join("a.example.pem").exists());
    assert_eq!(
        std::fs::read_to_string(all.join("operator-notes.txt")).unwrap(),
        "mine"
    );
    assert_eq!(running.stop().await, Ended::Clean);
}

/// MAP-8: a sink with a trust-domain allow-list writes those domains only, in its
/// files and its map, with its configured mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_8_allow_listed_sink_writes_only_its_domains() {
    use std::os::unix::fs::PermissionsExt as _;
    let running = start_gateway().await;
    let pki = tempfile::tempdir().unwrap();
    let (a, b) = (td("a.example"), td("b.example"));
    running
        .put(&bundle_of(&a, &[dev_ca(pki.path(), &a)], 1))
        .await;
    running
        .put(&bundle_of(&b, &[dev_ca(pki.path(), &b)], 1))
        .await;
    let (all, only_b) = (running.path("all"), running.path("only-b"));
    wait_until(DEADLINE, "both domains written by both sinks", || {
        let (all, only_b) = (all.clone(), only_b.clone());
        async move {
            read_map(&all).is_some_and(|map| map.len() == 2)
                && read_map(&only_b).is_some_and(|map| map.get(&td("b.example")).is_some())
        }
    })
    .await;
    let map = read_map(&only_b).unwrap();
    assert_eq!(map.len(), 1);
    assert!(!only_b.join("a.example.pem").exists());
    let mode = std::fs::metadata(only_b.join("b.example.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
    assert_eq!(running.stop().await, Ended::Clean);
}

/// FED-11, DIST-2: no output merges domains. Each PEM file holds its own domain's
/// authorities only, the map keeps one entry per domain, and there is no setting that
/// would write a union of roots (the configuration refuses one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fed_11_dist_2_no_file_merges_domains_and_no_union_mode_exists() {
    for key in ["merge = true", "union = true", "single_pem = true"] {
        let toml = format!("data_dir = \"/x\"\n[[sinks.files]]\ndir = \"/y\"\n{key}\n");
        let err = Config::from_toml(&toml).unwrap_err().to_string();
        assert!(err.contains("unknown field"), "{key}: {err}");
    }
    let pki = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (a, b) = (td("a.example"), td("b.example"));
    let bundles = [
        bundle_of(&a, &[dev_ca(pki.path(), &a)], 1),
        bundle_of(&b, &[dev_ca(pki.path(), &b)], 1),
    ];
    let state: State = bundles
        .iter()
        .map(|bundle| {
            let published = Published {
                json: Bytes::from(bundle.to_json()),
                bundle: Arc::new(bundle.clone()),
            };
            (bundle.trust_domain().clone(), published)
        })
        .collect();
    let shutdown = Shutdown::new();
    let sink = FilesSink::open(&FilesSinkConfig::new(out.path()), Metrics::new(), &shutdown)
        .await
        .unwrap();
    sink.apply(Arc::new(state)).await.unwrap();
    let map = read_map(out.path()).unwrap();
    for bundle in &bundles {
        let td = bundle.trust_domain();
        let pem = std::fs::read(out.path().join(format!("{td}.pem"))).unwrap();
        let in_pem = Bundle::from_pem(td, &pem).unwrap();
        assert_eq!(in_pem.x509_authorities(), bundle.x509_authorities(), "{td}");
        assert_eq!(
            map.get(td).unwrap().x509_authorities(),
            bundle.x509_authorities()
        );
    }
    shutdown.shutdown(std::time::Duration::from_secs(5)).await;
}

/// A gateway on `data_dir` with one files sink in `out`, started in-process.
async fn start_sink_gateway(root: &Path) -> fedgw::app::Running {
    let text = format!(
        "data_dir = {data:?}\n[[sinks.files]]\ndir = {out:?}\n",
        data = root.join("data").display().to_string(),
        out = root.join("out").display().to_string(),
    );
    let config = Config::from_toml(&text).unwrap();
    fedgw::app::start(&config)
        .await
        .unwrap_or_else(|err| panic!("the gateway must start: {err}"))
}

/// The `bundle-files.json` index in `dir`.
fn read_index(dir: &Path) -> serde_json::Value {
    let bytes = std::fs::read(dir.join(fedgw::outputs::files::INDEX_FILE)).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// A trust domain of 255 bytes (legal for SPIFFE; `<td>.json` is over NAME_MAX) is
/// written under a safe encoded name listed in `bundle-files.json`, while the other
/// domains' files keep being updated; it is deleted cleanly, and the gateway restarts
/// on the same directory, also when an older version's manifest names a file that
/// cannot exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_255_byte_trust_domain_is_written_under_a_safe_name_and_never_stalls_the_sink() {
    let root = tempfile::tempdir().unwrap();
    let pki = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    let long = td(&format!("{}.example", "l".repeat(247)));
    assert_eq!(long.as_str().len(), 255);
    let a = td("a.example");
    let a_ca = dev_ca(pki.path(), &a);

    let running = start_sink_gateway(root.path()).await;
    let put = |store: &fedgw::trust::store::TrustStore, bundle: Bundle| {
        let store = store.clone();
        async move {
            let td = bundle.trust_domain().clone();
            let source = fedgw::trust::policy::Source::Operator { who: "test".into() };
            store
                .submit(&td, bundle, source, time::OffsetDateTime::now_utc())
                .await
                .unwrap();
        }
    };
    let store = running.trust_store.clone();
    put(
        &store,
        bundle_of(&long, &[dev_ca(&pki.path().join("long"), &long)], 1),
    )
    .await;
    put(&store, bundle_of(&a, std::slice::from_ref(&a_ca), 1)).await;
    wait_until(DEADLINE, "both domains in the bundle map", || {
        let out = out.clone();
        async move { read_map(&out).is_some_and(|map| map.len() == 2) }
    })
    .await;
    let index = read_index(&out);
    let json_name = index["trust_domains"][long.as_str()]["json"]
        .as_str()
        .unwrap()
        .to_owned();
    let pem_name = index["trust_domains"][long.as_str()]["pem"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        json_name.len() <= fedgw::outputs::files::NAME_MAX,
        "{json_name}"
    );
    assert!(
        json_name.starts_with(&"l".repeat(64)) && json_name.contains('+'),
        "{json_name}"
    );
    let stored = Bundle::parse(&long, &std::fs::read(out.join(&json_name)).unwrap())
        .unwrap()
        .bundle;
    assert_eq!(stored.sequence(), Some(1));
    assert!(out.join(&pem_name).exists());
    assert_eq!(
        index["trust_domains"]["a.example"]["json"],
        "a.example.json"
    );

    // Other domains keep being written.
    put(&store, bundle_of(&a, std::slice::from_ref(&a_ca), 2)).await;
    wait_until(DEADLINE, "a.example's JSON file updated", || {
        let path = out.join("a.example.json");
        async move {
            std::fs::read(&path).is_ok_and(|bytes| {
                Bundle::parse(&td("a.example"), &bytes)
                    .is_ok_and(|parsed| parsed.bundle.sequence() == Some(2))
            })
        }
    })
    .await;

    // Deleted cleanly.
    running
        .trust_store
        .remove(&long, "test", time::OffsetDateTime::now_utc())
        .await
        .unwrap()
        .unwrap();
    wait_until(DEADLINE, "the long domain's files deleted", || {
        let (json, pem, out) = (out.join(&json_name), out.join(&pem_name), out.clone());
        async move { !json.exists() && !pem.exists() && read_map(&out).is_some_and(|m| m.len() == 1) }
    })
    .await;
    assert_eq!(
        running.shutdown(Duration::from_secs(10)).await,
        Ended::Clean
    );
    // The database closes with its last handle.
    drop(store);

    // An older version wrote `<td>.json` for the long domain into its manifest: the
    // gateway starts anyway, and converges.
    let manifest = out.join(fedgw::outputs::files::MANIFEST_FILE);
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str(&format!("{long}.json\n"));
    std::fs::write(&manifest, text).unwrap();
    let running = start_sink_gateway(root.path()).await;
    put(&running.trust_store, bundle_of(&a, &[a_ca], 3)).await;
    wait_until(DEADLINE, "a.example updated after the restart", || {
        let out = out.clone();
        async move {
            read_map(&out)
                .is_some_and(|map| map.get(&td("a.example")).unwrap().sequence() == Some(3))
        }
    })
    .await;
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(!text.contains(&format!("{long}.json")), "{text}");
    assert_eq!(
        running.shutdown(Duration::from_secs(10)).await,
        Ended::Clean
    );
}
