//! In-process gateways with real TLS on loopback: a change at one trust domain reaches
//! its peers by polling alone, over both profiles.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

use std::time::Duration;

use fedgw_testkit::{StallServer, TestCa, wait_for, wait_until};
use spiffe_federation::{Bundle, TrustDomain};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fed_8_change_is_fetched_without_operator_action() {
    let dir = tempfile::tempdir().unwrap();
    let domains: Vec<TrustDomain> = vec!["a.test".parse().unwrap(), "b.test".parse().unwrap()];
    let gateways = fedgw::client::demo::start(dir.path(), &domains)
        .await
        .unwrap();
    fedgw::client::demo::converge(&gateways, Duration::from_secs(30))
        .await
        .unwrap();

    // Add a CA to a.test's local bundle file (replaced atomically, as operators do).
    let a = &gateways[0];
    let current = a.running.trust_store.snapshot();
    let mut bundle: Bundle = (*current.get(&domains[0]).unwrap().bundle).clone();
    let before = bundle.sequence().unwrap();
    bundle.add_x509_authority(TestCa::spiffe(domains[0].as_str()).authority());
    bundle.set_sequence(None); // the gateway assigns the served sequence
    let tmp = a.pki.bundle.with_extension("tmp");
    std::fs::write(&tmp, bundle.to_json()).unwrap();
    std::fs::rename(&tmp, &a.pki.bundle).unwrap();

    // b.test picks it up through its poller (https_web or https_spiffe, whichever the
    // demo chose), with no refresh requested.
    let b = &gateways[1];
    let sequence = wait_for(
        Duration::from_secs(60),
        "the change to reach b.test",
        || async {
            let held = b.running.trust_store.snapshot();
            let entry = held.get(&domains[0]).unwrap();
            (entry.bundle.x509_authorities().len() == 2).then(|| entry.bundle.sequence().unwrap())
        },
    )
    .await;
    assert!(sequence > before, "sequence must grow (BUN-4)");
    fedgw::client::demo::stop(gateways).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_3_fetched_bundle_is_stored_under_its_trust_domain_with_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let domains: Vec<TrustDomain> = vec!["c.test".parse().unwrap(), "d.test".parse().unwrap()];
    let gateways = fedgw::client::demo::start(dir.path(), &domains)
        .await
        .unwrap();
    fedgw::client::demo::converge(&gateways, Duration::from_secs(30))
        .await
        .unwrap();
    let data_dir = gateways[1].data_dir.clone();
    let peer_port = [gateways[0].web_addr.port(), gateways[0].spiffe_addr.port()];
    fedgw::client::demo::stop(gateways).await;

    // Reopen d.test's database as a new process would: the fetched bundle of c.test is
    // there under its name, with where it came from and when.
    let store = fedgw::trust::store::TrustStore::open(
        &data_dir.join("db"),
        fedgw::trust::policy::PolicySettings::default(),
    )
    .await
    .unwrap();
    let snapshot = store.snapshot();
    let entry = snapshot
        .get(&domains[0])
        .expect("c.test stored under its name");
    let fedgw::trust::policy::Source::Fetched {
        url,
        final_url,
        peer,
    } = &entry.source
    else {
        panic!("not a fetched bundle: {:?}", entry.source)
    };
    assert!(peer_port.contains(&url.port().unwrap()), "{url}");
    assert_eq!(url, final_url);
    assert!(!peer.is_empty());
    assert_eq!(entry.digest.len(), 64);
    assert!(entry.accepted_at.unix_timestamp() > 0);
    let history = store.history(&domains[0]).await.unwrap();
    assert!(!history.is_empty());
}

/// `polling.max_concurrent_fetches`: with four relationships due at once and one slot,
/// only one fetch is in flight; the endpoint (the test kit's `StallServer`, which
/// accepts and never answers, so each fetch waits for its deadline) sees one
/// connection, not four.
/// With four slots it sees all four.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_in_flight_are_capped_by_max_concurrent_fetches() {
    async fn connections_seen(slots: u32) -> u64 {
        let server = StallServer::start().await;
        let port = server.port();
        let dir = tempfile::tempdir().unwrap();
        let mut toml = format!(
            "data_dir = {:?}\n[admin]\nlisten = \"unix:{}\"\n[polling]\nfetch_timeout = \"30s\"\nmax_concurrent_fetches = {slots}\n",
            dir.path().join("data").display().to_string(),
            dir.path().join("admin.sock").display(),
        );
        for n in 0..4 {
            toml.push_str(&format!(
                "[[federation]]\ntrust_domain = \"d{n}.test\"\nurl = \"https://127.0.0.1:{port}/d{n}\"\nprofile = \"https_web\"\nproxy = \"off\"\n"
            ));
        }
        let config = fedgw::app::Config::from_toml(&toml).unwrap();
        let running = fedgw::app::start(&config).await.unwrap();
        // Every relationship is due at start: wait for the connections expected (as
        // many as there are slots), then a second more for any beyond them.
        let expected = u64::from(slots);
        let what = format!("{expected} fetches in flight");
        wait_until(Duration::from_secs(20), &what, || async {
            server.accepted() >= expected
        })
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let seen = server.accepted();
        running.shutdown(Duration::from_secs(5)).await;
        drop(server);
        seen
    }
    assert_eq!(
        connections_seen(1).await,
        1,
        "one slot: one fetch in flight"
    );
    assert_eq!(
        connections_seen(4).await,
        4,
        "four slots: all four in flight"
    );
}
