//! Real Envoys take their trust from the real `fedgw` binary's SDS.
//!
//! Three trust domains, each with a `fedgw serve` gateway (SDS on a unix socket), a
//! backend and an Envoy configured with `tests/envoy/envoy.yaml` (the configuration
//! docs/envoy.md shows): its own X509-SVID, issued by its domain's CA, from a watched
//! file (standing in for a SPIRE agent's SDS), and its trust from fedgw's `ALL`
//! secret with Envoy's SPIFFE certificate validator.
//!
//! - a.test federates with b.test through the admin API (so the relationship can be
//!   deleted); b.test and c.test federate with a.test in their configuration. a.test
//!   does not federate with c.test.
//! - Envoy b calls Envoy a, Envoy a calls Envoy b, Envoy c calls Envoy a.
//!
//! Checked: cross-domain mTLS reaches the other backend (which sees the caller's
//! SPIFFE ID and certificate hash in `x-forwarded-client-cert`); c.test is refused by
//! Envoy a; a CA rotation of b.test (new CA added, leaf re-issued, old CA removed)
//! reaches Envoy a through SDS with no restart; deleting a.test's relationship with
//! b.test makes Envoy a refuse b.test, with no restart; after gateway a is killed and
//! restarted, Envoy a reconnects by itself and a relationship created again reaches
//! it. Envoy is observed through its own admin API (secrets in `/config_dump`,
//! `sds.ALL.update_success`, TLS failure counters). Every wait polls up to a
//! deadline.
//!
//! Needs Envoy: `tests/interop/run.sh --setup-only` installs it (see
//! `tests/support/envoy.rs`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

#[path = "support/envoy.rs"]
mod envoy;
#[path = "support/gateway.rs"]
mod gateway;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use envoy::{Backend, Envoy, EnvoyPorts, EnvoySpec};
use fedgw_testkit::{DEADLINE, Issued as Svid, TestCa, wait_for, wait_until, write_atomically};
use gateway::{Gateway, GatewayBuilder, Via};
use reqwest::Method;
use spiffe_federation::{Bundle, TrustDomain};

/// The path of every Envoy's SPIFFE ID.
const WORKLOAD: &str = "/envoy";

/// A bundle of `td` holding `cas`.
fn bundle(td: &str, cas: &[&TestCa]) -> Bundle {
    let td: TrustDomain = td.parse().unwrap();
    let mut bundle = Bundle::new(td);
    for ca in cas {
        bundle.add_x509_authority(ca.authority());
    }
    bundle
}

/// A gateway builder for `td` serving `cas` as its local bundle, with SDS on
/// `<root>/<td>.sds.sock`.
fn builder(root: &Path, td: &str, cas: &[&TestCa]) -> GatewayBuilder {
    let sds = sds_socket(root, td);
    let builder = GatewayBuilder::new(root, td).web().extra_toml(&format!(
        "[sinks.sds]\nlisten = \"unix:{}\"\n",
        sds.display()
    ));
    let local = bundle(td, cas).to_json_pretty();
    write_atomically(&builder.pki().bundle, local.as_bytes());
    builder
}

/// Where the gateway of `td` serves SDS.
fn sds_socket(root: &Path, td: &str) -> std::path::PathBuf {
    root.join(format!("{td}.sds.sock"))
}

/// Trust as Envoy's SPIFFE validator should hold it: domain -> CA DERs.
fn trust(domains: &[(&str, &[&TestCa])]) -> BTreeMap<String, BTreeSet<Vec<u8>>> {
    domains
        .iter()
        .map(|(td, cas)| {
            (
                (*td).to_owned(),
                cas.iter().map(|ca| ca.der.clone()).collect(),
            )
        })
        .collect()
}

/// Wait until `envoy` holds exactly `expected` in its `ALL` secret.
async fn wait_trust(envoy: &Envoy, expected: &BTreeMap<String, BTreeSet<Vec<u8>>>, what: &str) {
    wait_until(DEADLINE, what, || async {
        envoy.spiffe_trust("ALL").await.as_ref() == Some(expected)
    })
    .await;
}

/// Wait until a call through `from`'s client listener reaches the backend of `to_td`,
/// presenting `svid` (checked in the `Hash=` and `URI=` elements of the
/// `x-forwarded-client-cert` header Envoy `to` sets).
async fn wait_reaches(from: &Envoy, to_td: &str, from_td: &str, svid: &Svid) -> String {
    let hash = format!("Hash={}", svid.sha256_hex());
    let uri = format!("URI=spiffe://{from_td}{WORKLOAD}");
    let what = format!(
        "Envoy {} to reach the backend of {to_td} with the SVID {hash}",
        from.name
    );
    wait_for(DEADLINE, &what, || async {
        match from.call_peer().await {
            Ok((200, body))
                if body.starts_with(&format!("backend of {to_td}\n"))
                    && body.contains(&hash)
                    && body.contains(&uri) =>
            {
                Some(body)
            }
            _ => None,
        }
    })
    .await
}

/// Wait until a call through `from` fails because an Envoy refused the handshake:
/// the call answers an upstream error (never the backend), and `refusals` (that
/// Envoy's TLS failure counters) grows.
async fn wait_refused<F, Fut>(from: &Envoy, what: &str, refusals: F) -> String
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let before = refusals().await;
    wait_for(DEADLINE, what, || async {
        let answer = from.call_peer().await;
        let refused = matches!(&answer, Ok((status, body)) if *status >= 500 && !body.starts_with("backend of"));
        (refused && refusals().await > before).then(|| format!("{answer:?}"))
    })
    .await
}

/// The `sds.ALL.update_success` counter of `envoy`.
async fn all_updates(envoy: &Envoy) -> u64 {
    envoy.stat("sds.ALL.update_success").await.unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_takes_trust_from_fedgw_sds() {
    let envoy_bin = envoy::envoy_binary();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();

    // The CAs: a.test, b.test (b1 now, b2 for the rotation), c.test.
    let ca_a = TestCa::spiffe_named("a.test", "first");
    let ca_b1 = TestCa::spiffe_named("b.test", "first");
    let ca_b2 = TestCa::spiffe_named("b.test", "second");
    let ca_c = TestCa::spiffe_named("c.test", "first");

    // The gateways. b and c trust a (configuration); a trusts b through the API, below.
    let a = builder(root, "a.test", &[&ca_a]);
    let mut b = builder(root, "b.test", &[&ca_b1]);
    let mut c = builder(root, "c.test", &[&ca_c]);
    b.federate(&a, Via::Web);
    c.federate(&a, Via::Web);
    let mut gw_a = a.start().await;
    let gw_b = b.start().await;
    let gw_c = c.start().await;
    create_relationship(&gw_a, &gw_b).await;

    // Backends and Envoys.
    let backend_a = Backend::start("a.test").await;
    let backend_b = Backend::start("b.test").await;
    let backend_c = Backend::start("c.test").await;
    let (ports_a, ports_b, ports_c) = (EnvoyPorts::pick(), EnvoyPorts::pick(), EnvoyPorts::pick());
    let svid_a = ca_a.svid(WORKLOAD);
    let svid_b1 = ca_b1.svid(WORKLOAD);
    let svid_c = ca_c.svid(WORKLOAD);
    let envoy_a = Envoy::start(
        &envoy_bin,
        EnvoySpec {
            dir: &root.join("envoy-a"),
            name: "a.test",
            ports: ports_a.clone(),
            sds_socket: &sds_socket(root, "a.test"),
            backend_port: backend_a.port,
            peer_port: ports_b.server,
            svid: &svid_a,
        },
    )
    .await;
    let envoy_b = Envoy::start(
        &envoy_bin,
        EnvoySpec {
            dir: &root.join("envoy-b"),
            name: "b.test",
            ports: ports_b.clone(),
            sds_socket: &sds_socket(root, "b.test"),
            backend_port: backend_b.port,
            peer_port: ports_a.server,
            svid: &svid_b1,
        },
    )
    .await;
    let envoy_c = Envoy::start(
        &envoy_bin,
        EnvoySpec {
            dir: &root.join("envoy-c"),
            name: "c.test",
            ports: ports_c.clone(),
            sds_socket: &sds_socket(root, "c.test"),
            backend_port: backend_c.port,
            peer_port: ports_a.server,
            svid: &svid_c,
        },
    )
    .await;

    // Each Envoy holds, in ALL, exactly the domains its gateway trusts, each with its
    // own CAs only.
    let ab = trust(&[("a.test", &[&ca_a]), ("b.test", &[&ca_b1])]);
    wait_trust(&envoy_a, &ab, "Envoy a to hold a.test and b.test in ALL").await;
    wait_trust(&envoy_b, &ab, "Envoy b to hold a.test and b.test in ALL").await;
    let ac = trust(&[("a.test", &[&ca_a]), ("c.test", &[&ca_c])]);
    wait_trust(&envoy_c, &ac, "Envoy c to hold a.test and c.test in ALL").await;
    for envoy in [&envoy_a, &envoy_b, &envoy_c] {
        assert!(
            all_updates(envoy).await >= 1,
            "Envoy {}: no sds.ALL.update_success",
            envoy.name
        );
    }

    // 1. Cross-domain mTLS, both ways.
    wait_reaches(&envoy_b, "a.test", "b.test", &svid_b1).await;
    wait_reaches(&envoy_a, "b.test", "a.test", &svid_a).await;

    // 2. c.test is not federated by a.test: Envoy a refuses Envoy c's client SVID,
    //    although Envoy c trusts a.test and would accept Envoy a's.
    wait_refused(
        &envoy_c,
        "Envoy a to refuse Envoy c (c.test is not federated by a.test)",
        || envoy_a.server_refusals(),
    )
    .await;
    assert_eq!(
        envoy_c.peer_refusals().await,
        0,
        "Envoy c refused Envoy a: the refusal must be Envoy a's"
    );

    // 3. CA rotation of b.test, seen by Envoy a through SDS.
    // 3a. A leaf of the new CA, before the CA is published: refused by Envoy a.
    let svid_b2 = ca_b2.svid(WORKLOAD);
    envoy_b.set_svid(&svid_b2);
    wait_refused(
        &envoy_b,
        "Envoy a to refuse b.test's leaf of a CA it does not know yet",
        || envoy_a.server_refusals(),
    )
    .await;
    envoy_b.set_svid(&svid_b1);
    wait_reaches(&envoy_b, "a.test", "b.test", &svid_b1).await;
    // 3b. The new CA is added to b.test's bundle; a fetches it and Envoy a gets it.
    let updates = all_updates(&envoy_a).await;
    gw_b.write_local_bundle(&bundle("b.test", &[&ca_b1, &ca_b2]));
    let both = trust(&[("a.test", &[&ca_a]), ("b.test", &[&ca_b1, &ca_b2])]);
    wait_trust(&envoy_a, &both, "Envoy a to hold b.test's old and new CAs").await;
    assert!(
        all_updates(&envoy_a).await > updates,
        "no new sds.ALL.update_success on Envoy a"
    );
    // 3c. The leaf is re-issued by the new CA: accepted by Envoy a, both ways.
    envoy_b.set_svid(&svid_b2);
    wait_reaches(&envoy_b, "a.test", "b.test", &svid_b2).await;
    wait_reaches(&envoy_a, "b.test", "a.test", &svid_a).await;
    // 3d. The old CA is removed: its leaves are refused, the new one still works.
    gw_b.write_local_bundle(&bundle("b.test", &[&ca_b2]));
    let rotated = trust(&[("a.test", &[&ca_a]), ("b.test", &[&ca_b2])]);
    wait_trust(&envoy_a, &rotated, "Envoy a to hold only b.test's new CA").await;
    wait_reaches(&envoy_b, "a.test", "b.test", &svid_b2).await;
    envoy_b.set_svid(&svid_b1);
    wait_refused(
        &envoy_b,
        "Envoy a to refuse a leaf of b.test's removed CA",
        || envoy_a.server_refusals(),
    )
    .await;
    envoy_b.set_svid(&svid_b2);
    wait_reaches(&envoy_b, "a.test", "b.test", &svid_b2).await;

    // 4. a.test ends its federation with b.test: Envoy a refuses b.test both as a
    //    client and as a server.
    let answer = gw_a
        .admin()
        .call(Method::DELETE, "/v1/federation-relationships/b.test", None)
        .await
        .unwrap();
    assert_eq!(
        answer.status,
        204,
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );
    let only_a = trust(&[("a.test", &[&ca_a])]);
    wait_trust(&envoy_a, &only_a, "Envoy a to drop b.test from ALL").await;
    wait_refused(
        &envoy_b,
        "Envoy a to refuse Envoy b's client SVID after the relationship is deleted",
        || envoy_a.server_refusals(),
    )
    .await;
    wait_refused(
        &envoy_a,
        "Envoy a to refuse Envoy b's server SVID after the relationship is deleted",
        || envoy_a.peer_refusals(),
    )
    .await;
    // b.test still trusts a.test: nothing changed on that side.
    wait_trust(
        &envoy_b,
        &trust(&[("a.test", &[&ca_a]), ("b.test", &[&ca_b2])]),
        "Envoy b to keep trusting a.test",
    )
    .await;

    // 5. Gateway a is killed (SIGKILL) and restarted on its database; Envoy a
    //    reconnects to the new SDS server on its own. Federating with b.test again
    //    reaches Envoy a: b.test is accepted again, with its current CA.
    gw_a.restart().await;
    create_relationship(&gw_a, &gw_b).await;
    let again = trust(&[("a.test", &[&ca_a]), ("b.test", &[&ca_b2])]);
    wait_trust(
        &envoy_a,
        &again,
        "Envoy a to trust b.test again after fedgw's restart",
    )
    .await;
    wait_reaches(&envoy_b, "a.test", "b.test", &svid_b2).await;
    wait_reaches(&envoy_a, "b.test", "a.test", &svid_a).await;

    // Envoy b took its re-issued leaves from the watched file, through SDS.
    assert!(
        envoy_b.stat("sds.svid.update_success").await.unwrap_or(0) >= 2,
        "Envoy b never reloaded its certificate file"
    );
    // Envoy accepted every state fedgw pushed, and fedgw saw no NACK.
    let mut envoys = [envoy_a, envoy_b, envoy_c];
    for envoy in &envoys {
        assert_eq!(
            envoy.stat("sds.ALL.update_rejected").await,
            Some(0),
            "Envoy {} rejected an ALL from fedgw",
            envoy.name
        );
    }
    for gw in [&gw_a, &gw_b, &gw_c] {
        let nacks = gw.metric("fedgw_sds_nacks_total{variant=\"sotw\"}").await;
        assert!(
            nacks.is_none_or(|n| n == 0.0),
            "{}: Envoy NACKed {nacks:?} responses",
            gw.trust_domain
        );
    }
    // No Envoy was restarted: each process started once and still runs.
    for envoy in &mut envoys {
        assert!(
            envoy.is_running(),
            "Envoy {} exited:\n{}",
            envoy.name,
            envoy.log_text()
        );
    }
}

/// `POST /v1/federation-relationships` on `gw` for `peer`'s trust domain, over
/// `https_web`, as an operator would.
async fn create_relationship(gw: &Gateway, peer: &Gateway) {
    let roots = std::fs::read_to_string(&peer.pki.web_ca_cert).unwrap();
    let body = serde_json::json!({
        "trust_domain": peer.trust_domain.as_str(),
        "url": format!("https://127.0.0.1:{}/", peer.web_port().unwrap()),
        "profile": "https_web",
        "extra_ca_roots_pem": roots,
        "proxy": "off",
    });
    let answer = gw
        .admin()
        .call(
            Method::POST,
            "/v1/federation-relationships",
            Some(fedgw::client::admin_client::Body::Json(body)),
        )
        .await
        .unwrap();
    assert_eq!(
        answer.status,
        201,
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );
}

/// docs/envoy.md shows the configuration this test runs, word for word.
#[test]
fn docs_show_the_tested_envoy_configuration() {
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/envoy.md")).unwrap();
    let blocks: Vec<&str> = docs
        .split("```yaml\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("```").map(|(block, _)| block))
        .collect();
    assert!(
        blocks.contains(&envoy::TEMPLATE),
        "docs/envoy.md has no ```yaml block equal to tests/envoy/envoy.yaml; copy the file \
         into the \"Envoy configuration\" section"
    );
}

/// Without Envoy the test fails, saying how to install it.
#[test]
fn missing_envoy_fails_saying_how_to_install_it() {
    let missing = std::env::temp_dir().join("fedgw-no-such-envoy/envoy");
    let panic = std::panic::catch_unwind(|| envoy::checked_envoy(missing)).unwrap_err();
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains("Envoy not found")
            && message.contains("tests/interop/run.sh --setup-only"),
        "{message}"
    );
}
