//! The multi-cluster demonstration (`examples/multi-cluster/`) as a test: the same
//! code `cargo run --example multi-cluster` runs, with the real `fedgw` binary, real
//! TLS on loopback and real files, and assertions on what each step reported. Also
//! checks that the three committed gateway configurations load.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

#[path = "../examples/multi-cluster/demo.rs"]
mod demo;

use std::path::{Path, PathBuf};

use demo::{CallError, DOMAINS, Openssl, Options};
use fedgw::app::Config;
use fedgw::config::AdminListen;
use rustls::AlertDescription;
use spiffe_federation::verify::VerifyError;
use spiffe_federation::{ClientAuthError, SpiffeId};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/multi-cluster")
}

fn id(text: &str) -> SpiffeId {
    text.parse().unwrap()
}

/// DIST-3 and FED-11 end to end: an east client and a west server complete mTLS
/// with SVIDs from their own domain's CA and only the bundles their gateways' files
/// sinks wrote; a client from a CA no gateway distributes and a valid but
/// unauthorized edge client are refused by the server's SPIFFE verifier; west's CA
/// rotation (publish, re-issue, withdraw) keeps the call working with the new SVID;
/// after `fedgw federation delete` on east, east's client refuses to call west for
/// want of west's bundle, while east to edge still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dist_3_cross_domain_mtls_with_distributed_bundles_rotation_and_deletion() {
    let work = tempfile::tempdir().unwrap();
    let options = Options {
        fedgw: PathBuf::from(env!("CARGO_BIN_EXE_fedgw")),
        configs: examples_dir(),
        work_dir: work.path().to_path_buf(),
        openssl: Openssl::Required,
    };
    let report = demo::run(&options)
        .await
        .unwrap_or_else(|err| panic!("the demonstration failed: {err:#}"));

    let east_client = id("spiffe://east.fedgw.test/client");
    let west_server = id("spiffe://west.fedgw.test/server");
    let expected_reply = format!("hello {east_client}, this is {west_server}");

    // (a) success, with both identities verified.
    assert_eq!(report.first_call.server_id, west_server);
    assert_eq!(report.first_call.reply, expected_reply);
    assert_eq!(report.first_call.server_leaf, report.old_server_leaf);
    assert_eq!(
        report.openssl_reply.as_deref(),
        Some(expected_reply.as_str())
    );

    // (b) refused by the server's verifier, each for its stated reason; the client
    // learns it from the server's alert.
    match report.impostor.reason() {
        Some(ClientAuthError::Svid(VerifyError::BadSignature { trust_domain })) => {
            assert_eq!(trust_domain.as_str(), "east.fedgw.test");
        }
        other => panic!("impostor refused for {other:?}"),
    }
    match report.unauthorized.reason() {
        Some(ClientAuthError::NotAuthorized { id: refused }) => {
            assert_eq!(*refused, id("spiffe://edge.fedgw.test/client"));
        }
        other => panic!("edge client refused for {other:?}"),
    }
    for refusal in [&report.impostor, &report.unauthorized] {
        assert!(
            matches!(
                refusal.client,
                CallError::Tls(rustls::Error::AlertReceived(
                    AlertDescription::CertificateUnknown
                ))
            ),
            "{:?}",
            refusal.client
        );
    }

    // (c) the rotation: both calls answered with the re-issued SVID.
    assert_ne!(report.new_server_leaf, report.old_server_leaf);
    for exchange in [&report.during_rotation, &report.after_rotation] {
        assert_eq!(exchange.reply, expected_reply);
        assert_eq!(exchange.server_leaf, report.new_server_leaf);
    }

    // (d) refused by the client, naming west's missing bundle; east to edge still works.
    match &report.after_delete {
        CallError::MissingBundle { trust_domain, path } => {
            assert_eq!(trust_domain.as_str(), "west.fedgw.test");
            assert!(
                path.ends_with("east/bundles/west.fedgw.test.pem"),
                "{}",
                path.display()
            );
        }
        other => panic!("after the delete: {other}"),
    }
    assert_eq!(
        report.east_to_edge_after_delete.reply,
        format!("hello {east_client}, this is spiffe://edge.fedgw.test/server")
    );
}

/// The committed configurations are real ones: fedgw's loader accepts each, with its
/// trust domain, a unix admin socket, a files sink and the listeners the
/// demonstration relies on.
#[test]
fn multi_cluster_example_configs_load() {
    let mut served = Vec::new();
    for domain in DOMAINS {
        let path = examples_dir().join(format!("{}.toml", domain.name));
        let text = std::fs::read_to_string(&path).unwrap();
        let config =
            Config::from_toml(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        assert_eq!(config.local.len(), 1, "{}", path.display());
        assert_eq!(config.local[0].trust_domain.as_str(), domain.trust_domain);
        assert!(
            matches!(config.admin_listen(), AdminListen::Unix(_)),
            "{}",
            path.display()
        );
        assert_eq!(config.sinks.files.len(), 1, "{}", path.display());
        assert!(
            config.federation.is_empty(),
            "relationships are made with the CLI"
        );
        assert_eq!(config.endpoint.https_web.is_some(), domain.listeners.web);
        assert_eq!(
            config.endpoint.https_spiffe.is_some(),
            domain.listeners.spiffe
        );
        served.push((
            config.endpoint.https_web.is_some(),
            config.endpoint.https_spiffe.is_some(),
        ));
    }
    // Both profiles are served, and not every gateway serves both.
    assert!(
        served.iter().any(|&(web, spiffe)| web && !spiffe),
        "{served:?}"
    );
    assert!(
        served.iter().any(|&(web, spiffe)| spiffe && !web),
        "{served:?}"
    );
}
