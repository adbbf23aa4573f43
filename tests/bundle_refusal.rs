//! Empty bundles from a peer, end to end: the real `fedgw` binary polls real HTTPS
//! bundle endpoints (the test kit's `BundleServer`) that first serve a good bundle, then
//!
//! - (a) one non-CA certificate as their only `x509-svid` key,
//! - (b) 100,000 `{}` JWKs,
//! - (c) a deliberately empty `keys` list, under a relationship that does not allow
//!   revocation (the default),
//! - (d) the same, under a relationship with `allow_revocation = true`.
//!
//! (a)–(c) are refused with a named code: the last good bundle is still relayed byte
//! for byte, the status is `failing` with the code and a message saying what the peer
//! served and that the last good bundle is kept, and the refusal is counted in
//! `fedgw_bundle_rejections_total`. (d) is accepted as a revocation: the relay serves
//! the empty bundle and the status shows `revoked`, with a `revoked` warning.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

#[path = "support/gateway.rs"]
mod gateway;

use std::path::Path;

use bytes::Bytes;
use fedgw_testkit::ca::self_signed_leaf;
use fedgw_testkit::{Answer, BundleServer, DEADLINE, TestCa, wait_for, wait_until};
use gateway::{Gateway, GatewayBuilder};
use serde_json::{Value, json};
use spiffe_federation::{Bundle, TrustDomain};

fn td(name: &str) -> TrustDomain {
    name.parse().unwrap()
}

/// A good bundle document of `td` with one SPIFFE CA and `sequence`.
fn good_document(td: &TrustDomain, sequence: u64) -> Bytes {
    let mut bundle = Bundle::new(td.clone());
    bundle.add_x509_authority(TestCa::spiffe(td.as_str()).authority());
    bundle.set_sequence(Some(sequence));
    Bytes::from(bundle.to_json())
}

/// (a) A document whose only `x509-svid` key is a leaf certificate (cA false), with
/// key members that match it, as a publisher that put the wrong file in place would
/// serve.
fn leaf_only_document(sequence: u64) -> Bytes {
    let leaf = self_signed_leaf("a leaf, not a CA");
    // The PEM body is the standard base64 of the DER, as `x5c` wants it.
    let x5c: String = leaf
        .cert_pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let public = leaf.public_key();
    let mut element = serde_json::Map::new();
    element.insert("use".into(), "x509-svid".into());
    element.insert("kty".into(), "EC".into());
    for (name, value) in public.jwk_members() {
        element.insert(name.into(), value.into());
    }
    element.insert("x5c".into(), json!([x5c]));
    let document = json!({"keys": [element], "spiffe_sequence": sequence});
    Bytes::from(serde_json::to_vec(&document).unwrap())
}

/// (b) 100,000 `{}` JWKs (300 kB, within the default 1 MiB document limit).
fn empty_objects_document(sequence: u64) -> Bytes {
    let keys = vec!["{}"; 100_000].join(",");
    Bytes::from(format!(
        r#"{{"keys":[{keys}],"spiffe_sequence":{sequence}}}"#
    ))
}

/// (c), (d) A deliberately empty `keys` list.
fn revocation_document(sequence: u64) -> Bytes {
    Bytes::from(format!(r#"{{"keys":[],"spiffe_sequence":{sequence}}}"#))
}

/// The bytes the gateway serves at `/relay/<td>` over `https_web`, as a SPIRE server
/// federating with it reads them.
async fn relay_bytes(gw: &Gateway, td: &TrustDomain) -> Option<Bytes> {
    let root = std::fs::read(&gw.pki.web_ca_cert).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&root).unwrap()])
        .no_proxy()
        .build()
        .unwrap();
    let response = client
        .get(gw.web_url(&format!("/relay/{td}")))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.bytes().await.ok()
}

/// This domain's entry of `GET /v1/status`.
async fn status_of(gw: &Gateway, td: &TrustDomain) -> Value {
    let status = gw.admin_json("/v1/status").await;
    status["domains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["trust_domain"] == td.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("{td} missing from {status}"))
}

fn relationship(
    td: &TrustDomain,
    server: &BundleServer,
    ca: &Path,
    allow_revocation: bool,
) -> String {
    format!(
        "[[federation]]\ntrust_domain = \"{td}\"\nurl = \"{url}\"\nprofile = \"https_web\"\nextra_ca_roots = {ca:?}\nproxy = \"off\"\nallow_revocation = {allow_revocation}\n",
        url = server.url(),
        ca = ca.display().to_string(),
    )
}

struct Peer {
    td: TrustDomain,
    server: BundleServer,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_ignored_and_unallowed_revocations_are_refused_and_the_last_good_bundle_kept() {
    let dir = tempfile::tempdir().unwrap();
    let web_ca = TestCa::web("peers");
    let ca_path = dir.path().join("peers-web-ca.pem");
    web_ca.write_cert(&ca_path);
    let mut peers = Vec::new();
    for name in ["leaf.test", "objects.test", "revoked.test", "allowed.test"] {
        let td = td(name);
        let server = BundleServer::start(&web_ca, Answer::Fixed(good_document(&td, 1))).await;
        peers.push(Peer { td, server });
    }
    let mut builder = GatewayBuilder::new(dir.path(), "home.test").web();
    for peer in &peers {
        let allow = peer.td.as_str() == "allowed.test";
        builder.relationship(&relationship(&peer.td, &peer.server, &ca_path, allow));
    }
    let gw = builder.start().await;

    // Every peer's good bundle is relayed first.
    let mut last_good = Vec::new();
    for peer in &peers {
        let what = format!("{} relayed", peer.td);
        let bytes = wait_for(DEADLINE, &what, || relay_bytes(&gw, &peer.td)).await;
        assert!(!Bundle::parse(&peer.td, &bytes).unwrap().bundle.is_empty());
        last_good.push(bytes);
    }

    peers[0].server.set(Answer::Fixed(leaf_only_document(2)));
    peers[1]
        .server
        .set(Answer::Fixed(empty_objects_document(2)));
    peers[2].server.set(Answer::Fixed(revocation_document(2)));
    peers[3].server.set(Answer::Fixed(revocation_document(2)));

    let refused = [
        (
            "leaf.test",
            "all_elements_ignored",
            "x5c[0]: not a CA certificate",
        ),
        (
            "objects.test",
            "all_elements_ignored",
            "100000 × no \"use\" member",
        ),
        (
            "revoked.test",
            "revocation_refused",
            "allow_revocation = false",
        ),
    ];
    for (peer, (name, code, _detail)) in peers.iter().zip(refused) {
        assert_eq!(peer.td.as_str(), name);
        let series =
            format!(r#"fedgw_bundle_rejections_total{{reason="{code}",trust_domain="{name}"}}"#);
        let polls = peer.server.requests();
        wait_until(DEADLINE, &format!("{series} counted twice"), || async {
            gw.metric(&series).await >= Some(2.0) && peer.server.requests() > polls
        })
        .await;
    }
    // (d) is accepted: the relay serves the empty bundle.
    let allowed = &peers[3].td;
    wait_until(DEADLINE, "allowed.test relayed empty", || async {
        relay_bytes(&gw, allowed)
            .await
            .is_some_and(|bytes| Bundle::parse(allowed, &bytes).unwrap().bundle.is_empty())
    })
    .await;

    for ((peer, (name, code, detail)), good) in peers.iter().zip(refused).zip(&last_good) {
        // The last good bundle, byte for byte.
        let served = relay_bytes(&gw, &peer.td).await.unwrap();
        assert_eq!(
            served, good,
            "{name}: the last good bundle must still be relayed"
        );
        // Not healthy: failing, with the code and a message that says what the peer
        // served and what is kept.
        let status = status_of(&gw, &peer.td).await;
        assert_eq!(status["state"], "failing", "{status}");
        assert_eq!(status["last_error"]["code"], code, "{status}");
        let message = status["last_error"]["message"].as_str().unwrap();
        assert!(message.contains(detail), "{name}: {message}");
        assert!(
            message.contains("the last good bundle is kept"),
            "{name}: {message}"
        );
        assert_eq!(status["sequence"], json!(1), "{status}");
    }
    // The log says it once per poll, not once per element.
    assert!(
        gw.log_lines_with(&["bundle elements ignored", "trust_domain=objects.test"]) >= 1,
        "{}",
        gw.log_text()
    );
    assert!(
        gw.log_lines_with(&["trust_domain=objects.test"]) < 1_000,
        "one line per poll, not one per element"
    );

    // (d): accepted, and shown as a warning state.
    let status = status_of(&gw, allowed).await;
    assert_eq!(status["state"], "revoked", "{status}");
    assert!(
        status["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["code"] == "revoked"),
        "{status}"
    );
    let warned = gw
        .metric(r#"fedgw_bundle_warnings_total{trust_domain="allowed.test",warning="revocation"}"#)
        .await;
    assert_eq!(warned, Some(1.0));
    let relationship = gw
        .admin_json("/v1/federation-relationships/allowed.test")
        .await;
    assert_eq!(relationship["allow_revocation"], true, "{relationship}");

    // A peer that serves a good bundle again is taken at once.
    let fixed = good_document(&peers[1].td, 3);
    peers[1].server.set(Answer::Fixed(fixed));
    let objects = &peers[1].td;
    wait_until(DEADLINE, "objects.test relays its new bundle", || async {
        relay_bytes(&gw, objects).await.is_some_and(|bytes| {
            let bundle = Bundle::parse(objects, &bytes).unwrap().bundle;
            bundle.sequence() == Some(3) && !bundle.is_empty()
        })
    })
    .await;
    wait_until(DEADLINE, "objects.test healthy again", || async {
        status_of(&gw, objects).await["state"] == "healthy"
    })
    .await;
}
