//! End to end: federation relationships managed with the real `fedgw` binary, as an
//! operator does it: `fedgw serve` processes on loopback (`support/gateway.rs`) with
//! no `[[federation]]` in their configuration, changed only with `fedgw federation
//! create|update|delete` over the admin socket. Bundle endpoints are either another
//! real gateway or a loopback HTTPS fixture that counts its requests (the test kit's
//! `BundleServer`).
//!
//! Polling is fast (1 s refresh hints, polls every ~250 ms). "No more fetches" is
//! shown by the deleted relationship's fixture seeing no request while another
//! relationship's fixture is polled several times: nothing sleeps to synchronise and
//! nothing asserts a duration.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

#[path = "support/gateway.rs"]
mod gateway;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use bytes::Bytes;
use fedgw_testkit::{Answer, BundleServer, DEADLINE, TestCa, wait_until};
use gateway::{Gateway, GatewayBuilder};
use serde_json::{Value, json};
use spiffe_federation::{Bundle, TrustDomain};

/// A loopback `https_web` bundle endpoint for `td`, its bundle, and its web CA as a
/// PEM file.
struct Fixture {
    server: BundleServer,
    bundle: Bundle,
    ca_pem: PathBuf,
    td: String,
}

impl Fixture {
    async fn start(dir: &Path, td: &str) -> Self {
        let web_ca = TestCa::web(td);
        let mut bundle = Bundle::new(td.parse().unwrap());
        bundle.add_x509_authority(TestCa::spiffe(td).authority());
        bundle.set_sequence(Some(1));
        bundle.set_refresh_hint(Some(Duration::from_secs(1)));
        let document = Bytes::from(bundle.to_json());
        let server = BundleServer::start(&web_ca, Answer::Fixed(document)).await;
        let ca_pem = dir.join(format!("{td}-web-ca.pem"));
        web_ca.write_cert(&ca_pem);
        Self {
            server,
            bundle,
            ca_pem,
            td: td.to_owned(),
        }
    }

    /// Wait until the fixture has answered `more` requests beyond `from`.
    async fn polled(&self, from: u64, more: u64) {
        let what = format!("{more} polls of {} beyond {from}", self.td);
        wait_until(DEADLINE, &what, || async {
            self.server.requests() >= from + more
        })
        .await;
    }
}

/// Run `fedgw <args> --admin unix:<gateway's socket>`.
fn fedgw(gw: &Gateway, args: &[&str]) -> Output {
    let socket = gw.data_dir.join("admin.sock");
    Command::new(env!("CARGO_BIN_EXE_fedgw"))
        .args(args)
        .arg("--admin")
        .arg(format!("unix:{}", socket.display()))
        .output()
        .unwrap()
}

/// [`fedgw`] that must succeed; its standard output.
fn fedgw_ok(gw: &Gateway, args: &[&str]) -> String {
    let output = fedgw(gw, args);
    assert!(
        output.status.success(),
        "fedgw {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// [`fedgw_ok`] with `--json`, parsed.
fn fedgw_json(gw: &Gateway, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    serde_json::from_str(&fedgw_ok(gw, &args)).unwrap()
}

fn names(value: &Value, list: &str) -> Vec<String> {
    value[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["trust_domain"].as_str().unwrap().to_owned())
        .collect()
}

/// POLL-4 with the real binary: a gateway with no relationships; `fedgw federation
/// create` (flags) makes it fetch and relay a fixture's bundle; after `kill -9` and a
/// restart the relationship is still there and polled; `fedgw federation delete`
/// stops the polling (the fixture sees no request while another relationship is
/// polled several times) and the bundle is gone from the API and the relay, also
/// after another restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_4_cli_create_survives_restart_and_delete_stops_polling() {
    let dir = tempfile::tempdir().unwrap();
    let fix = Fixture::start(dir.path(), "fix.test").await;
    let clock = Fixture::start(dir.path(), "clock.test").await;
    let mut gw = GatewayBuilder::new(dir.path(), "east.test")
        .web()
        .start()
        .await;
    let fix_td: TrustDomain = "fix.test".parse().unwrap();
    assert!(names(&fedgw_json(&gw, &["federation", "list"]), "relationships").is_empty());

    let created = fedgw_json(
        &gw,
        &[
            "federation",
            "create",
            "--trust-domain",
            "fix.test",
            "--bundle-endpoint-url",
            &fix.server.url(),
            "--bundle-endpoint-profile",
            "https_web",
            "--extra-ca-roots",
            fix.ca_pem.to_str().unwrap(),
            "--proxy",
            "off",
        ],
    );
    assert_eq!(created["origin"], "api", "{created}");
    // The second relationship, the test's clock, is created from a JSON body.
    let body = json!({
        "trust_domain": "clock.test",
        "url": clock.server.url(),
        "profile": "https_web",
        "extra_ca_roots_pem": std::fs::read_to_string(&clock.ca_pem).unwrap(),
        "proxy": "off",
    });
    let body_path = dir.path().join("clock.json");
    std::fs::write(&body_path, body.to_string()).unwrap();
    fedgw_ok(
        &gw,
        &[
            "federation",
            "create",
            "--data",
            body_path.to_str().unwrap(),
        ],
    );
    gw.wait_relays(&fix_td, &fix.bundle).await;

    gw.restart().await;
    let shown = fedgw_json(&gw, &["federation", "show", "fix.test"]);
    assert_eq!(shown["origin"], "api", "{shown}");
    fix.polled(fix.server.requests(), 2).await;

    let out = fedgw_ok(&gw, &["federation", "delete", "--trust-domain", "fix.test"]);
    assert!(out.contains("deleted"), "{out}");
    let polls = fix.server.requests();
    clock.polled(clock.server.requests(), 4).await;
    assert_eq!(fix.server.requests(), polls, "no fetch after the delete");
    assert!(gw.relay(&fix_td).await.is_err(), "no longer relayed");
    let bundles = fedgw_json(&gw, &["bundle", "list"]);
    assert!(!names(&bundles, "bundles").contains(&"fix.test".to_owned()));
    let status = fedgw_json(&gw, &["status"]);
    assert!(!names(&status, "domains").contains(&"fix.test".to_owned()));
    let shown = fedgw(&gw, &["federation", "show", "fix.test"]);
    assert_eq!(shown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&shown.stderr).contains("not_found"));

    gw.restart().await;
    clock.polled(clock.server.requests(), 2).await;
    assert_eq!(
        fix.server.requests(),
        polls,
        "not polled again after a restart"
    );
    let listed = fedgw_json(&gw, &["federation", "list"]);
    assert_eq!(names(&listed, "relationships"), ["clock.test"]);
}

/// POLL-5: relationships are one-way. Creating west's relationship on east makes east
/// fetch and relay west's bundle and changes nothing on west: no relationship, no
/// bundle of east.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_5_a_relationship_is_one_way() {
    let dir = tempfile::tempdir().unwrap();
    let east = GatewayBuilder::new(dir.path(), "east.test").web();
    let west = GatewayBuilder::new(dir.path(), "west.test").web();
    let (east, west) = tokio::join!(east.start(), west.start());
    let url = format!("https://127.0.0.1:{}/", west.web_port().unwrap());
    fedgw_ok(
        &east,
        &[
            "federation",
            "create",
            "--trust-domain",
            "west.test",
            "--bundle-endpoint-url",
            &url,
            "--bundle-endpoint-profile",
            "https_web",
            "--extra-ca-roots",
            west.pki.web_ca_cert.to_str().unwrap(),
            "--proxy",
            "off",
        ],
    );
    let west_bundle = west.local_bundle().await.unwrap();
    east.wait_relays(&west.trust_domain, &west_bundle).await;

    let relationships = fedgw_json(&west, &["federation", "list"]);
    assert!(
        names(&relationships, "relationships").is_empty(),
        "{relationships}"
    );
    let bundles = fedgw_json(&west, &["bundle", "list"]);
    assert_eq!(names(&bundles, "bundles"), ["west.test"]);
    assert!(west.relay(&east.trust_domain).await.is_err());
}
