//! In-process gateways with real TLS on loopback: a change at one trust domain reaches
//! its peers by polling alone, over both profiles.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose, SanType};
use spiffe_federation::bundle::X509Authority;
use spiffe_federation::{Bundle, TrustDomain};

fn new_ca(td: &TrustDomain) -> X509Authority {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.subject_alt_names = vec![SanType::URI(format!("spiffe://{td}").try_into().unwrap())];
    X509Authority::from_der(params.self_signed(&key).unwrap().der().to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fed_8_change_is_fetched_without_operator_action() {
    let dir = tempfile::tempdir().unwrap();
    let domains: Vec<TrustDomain> = vec!["a.test".parse().unwrap(), "b.test".parse().unwrap()];
    let gateways = fedgw::demo::start(dir.path(), &domains).await.unwrap();
    fedgw::demo::converge(&gateways, Duration::from_secs(30))
        .await
        .unwrap();

    // Add a CA to a.test's local bundle file (replaced atomically, as operators do).
    let a = &gateways[0];
    let current = a.running.trust_store.snapshot();
    let mut bundle: Bundle = (*current.get(&domains[0]).unwrap().bundle).clone();
    let before = bundle.sequence().unwrap();
    bundle.add_x509_authority(new_ca(&domains[0]));
    bundle.set_sequence(None); // the gateway assigns the served sequence
    let tmp = a.pki.bundle.with_extension("tmp");
    std::fs::write(&tmp, bundle.to_json()).unwrap();
    std::fs::rename(&tmp, &a.pki.bundle).unwrap();

    // b.test picks it up through its poller (https_web or https_spiffe, whichever the
    // demo chose), with no refresh requested.
    let b = &gateways[1];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let held = b.running.trust_store.snapshot();
        let entry = held.get(&domains[0]).unwrap();
        if entry.bundle.x509_authorities().len() == 2 {
            assert!(
                entry.bundle.sequence().unwrap() > before,
                "sequence must grow (BUN-4)"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the change never reached b.test"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fedgw::demo::stop(gateways).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_3_fetched_bundle_is_stored_under_its_trust_domain_with_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let domains: Vec<TrustDomain> = vec!["c.test".parse().unwrap(), "d.test".parse().unwrap()];
    let gateways = fedgw::demo::start(dir.path(), &domains).await.unwrap();
    fedgw::demo::converge(&gateways, Duration::from_secs(30))
        .await
        .unwrap();
    let data_dir = gateways[1].data_dir.clone();
    let peer_port = [gateways[0].web_addr.port(), gateways[0].spiffe_addr.port()];
    fedgw::demo::stop(gateways).await;

    // Reopen d.test's database as a new process would: the fetched bundle of c.test is
    // there under its name, with where it came from and when.
    let store = fedgw::trust_store::TrustStore::open(
        &data_dir.join("db"),
        fedgw::policy::PolicySettings::default(),
    )
    .await
    .unwrap();
    let snapshot = store.snapshot();
    let entry = snapshot
        .get(&domains[0])
        .expect("c.test stored under its name");
    let fedgw::policy::Source::Fetched {
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
