//! End to end: real `fedgw serve` processes federating on loopback.
//!
//! The mesh: three gateways for `east.test`, `west.test` and `edge.test`. East and
//! west fetch each other over `https_web` (trusting the peer's development web CA);
//! edge fetches east and west, and they fetch edge, over `https_spiffe` (bootstrapped
//! with the peer's development bundle). Every gateway is observed as a peer would
//! observe it: through its bundle endpoints (`/` for its own bundle, `/relay/<td>` for
//! what it holds of a foreign domain) and its log. Where a real gateway cannot play
//! the peer (a stale replica, a publisher changing on every request), a loopback
//! HTTPS fixture does (the test kit's `BundleServer`, `fedgw_testkit`).
//!
//! Polling is fast (1 s refresh hints, polls every ~250 ms). Local bundle files and
//! TLS files are checked every 5 s by the gateway, which bounds how fast a rotation
//! can travel. Nothing here sleeps to synchronise or asserts a duration: every step
//! waits for an observable condition, up to a generous deadline.
//!
//! The interop tests need curl, openssl and `<repo>/.venv/bin/python` with the
//! packages of `tests/interop/requirements.txt` (`./scripts/test.sh` installs them).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

#[path = "support/gateway.rs"]
mod gateway;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fedgw::dev::pki::{self as dev_pki, DevPkiPaths};
use fedgw_testkit::{
    Answer, BundleServer, DEADLINE, TestCa, wait_for, wait_until, write_atomically,
};
use gateway::{Gateway, GatewayBuilder, Via, authorities};
use spiffe_federation::{Bundle, TrustDomain};
use tempfile::TempDir;

/// The three-domain mesh, started.
struct Mesh {
    east: Gateway,
    west: Gateway,
    edge: Gateway,
    // Last: the gateways are killed (on drop) before their files go.
    dir: TempDir,
}

async fn mesh() -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    let mut east = GatewayBuilder::new(dir.path(), "east.test").web().spiffe();
    let mut west = GatewayBuilder::new(dir.path(), "west.test").web().spiffe();
    let mut edge = GatewayBuilder::new(dir.path(), "edge.test").spiffe();
    east.federate(&west, Via::Web).federate(&edge, Via::Spiffe);
    west.federate(&east, Via::Web).federate(&edge, Via::Spiffe);
    edge.federate(&east, Via::Spiffe)
        .federate(&west, Via::Spiffe);
    let (east, west, edge) = tokio::join!(east.start(), west.start(), edge.start());
    Mesh {
        east,
        west,
        edge,
        dir,
    }
}

fn td(name: &str) -> TrustDomain {
    name.parse().unwrap()
}

/// Wait until `holder` relays exactly what `peer` serves as its own bundle (same X.509
/// authorities, same sequence); returns it.
async fn relays_peer(holder: &Gateway, peer: &Gateway) -> Bundle {
    let what = format!(
        "{} to relay the bundle {} serves",
        holder.trust_domain, peer.trust_domain
    );
    wait_for(DEADLINE, &what, || async {
        let own = peer.local_bundle().await.ok()?;
        let relayed = holder.relay(&peer.trust_domain).await.ok()?;
        (authorities(&own) == authorities(&relayed) && own.sequence() == relayed.sequence())
            .then_some(relayed)
    })
    .await
}

/// Wait until `holder` relays `td` with exactly `expected` as X.509 authorities and a
/// sequence above `above`; returns it.
async fn relays_exactly(
    holder: &Gateway,
    td: &TrustDomain,
    expected: &Bundle,
    above: Option<u64>,
) -> Bundle {
    let what = format!(
        "{} to relay {td} with the expected authorities and a sequence above {above:?}",
        holder.trust_domain
    );
    wait_for(DEADLINE, &what, || async {
        let relayed = holder.relay(td).await.ok()?;
        (authorities(&relayed) == authorities(expected) && relayed.sequence() > above)
            .then_some(relayed)
    })
    .await
}

/// `base` with `extra` added as an X.509 authority.
fn with_ca(base: &Bundle, extra: &TestCa) -> Bundle {
    let mut bundle = base.clone();
    bundle.add_x509_authority(extra.authority());
    bundle
}

/// A bundle of `td` holding exactly `cas`.
fn bundle_of(td: &TrustDomain, cas: &[&TestCa]) -> Bundle {
    let mut bundle = Bundle::new(td.clone());
    for ca in cas {
        bundle.add_x509_authority(ca.authority());
    }
    bundle
}

/// A served document: `bundle` with a sequence and a 1 s refresh hint.
fn document(bundle: &Bundle, sequence: u64) -> Bytes {
    let mut bundle = bundle.clone();
    bundle.set_sequence(Some(sequence));
    bundle.set_refresh_hint(Some(Duration::from_secs(1)));
    Bytes::from(bundle.to_json())
}

/// Re-issue `gw`'s endpoint SVID from `ca` (files in `dir`) and wait until its
/// `https_spiffe` endpoint presents it (its TLS files are checked every 5 s).
async fn reissue_svid(gw: &Gateway, ca: &TestCa, dir: &Path) {
    let name = gw.trust_domain.as_str();
    let ca_cert = dir.join(format!("{name}-next-ca.pem"));
    let ca_key = dir.join(format!("{name}-next-ca.key"));
    ca.write(&ca_cert, &ca_key);
    let paths = DevPkiPaths {
        ca_cert,
        ca_key,
        ..gw.pki.clone()
    };
    let now = time::OffsetDateTime::now_utc();
    let (svid, key) = dev_pki::issue_svid(&paths, &gw.endpoint_id, now).unwrap();
    write_atomically(&gw.pki.svid_key, key.as_bytes());
    write_atomically(&gw.pki.svid, svid.as_bytes());
    let only_ca = bundle_of(&gw.trust_domain, &[ca]);
    let what = format!("{name} to present its SVID from the new CA");
    wait_until(DEADLINE, &what, || async {
        gw.fetch_spiffe("/", &gw.trust_domain, &only_ca)
            .await
            .is_ok()
    })
    .await;
}

fn write_ca_pem(dir: &Path, name: &str, ca: &TestCa) -> PathBuf {
    let path = dir.join(name);
    ca.write_cert(&path);
    path
}

/// FED-1 (both profiles, fetched and stored) and FED-7 (stored under the configured
/// name, never one taken from the URL): every gateway relays every peer's bundle,
/// equal to what the peer serves itself, at `/relay/<configured name>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fed_1_fed_7_full_mesh_federates() {
    let mesh = mesh().await;
    let gateways = [&mesh.east, &mesh.west, &mesh.edge];
    for holder in gateways {
        for peer in gateways {
            if holder.trust_domain != peer.trust_domain {
                relays_peer(holder, peer).await;
            }
        }
    }
    // Nothing is stored under a name taken from the endpoint URLs (all 127.0.0.1).
    for name in ["127.0.0.1", "localhost"] {
        let err = mesh.east.relay(&td(name)).await.unwrap_err();
        assert!(err.contains("404"), "/relay/{name}: {err}");
    }
    // A gateway does not relay its own domain.
    let err = mesh.east.relay(&td("east.test")).await.unwrap_err();
    assert!(err.contains("404"), "/relay/east.test on east: {err}");
}

/// SPF-7 and SPF-4, with a real rotation at edge (served over `https_spiffe`):
/// 1. edge's bundle becomes {CA2} (CA1 removed); edge still presents its CA1 SVID,
///    which the peers authenticate with the bundle they stored, {CA1}; they relay
///    exactly {CA2} with a higher sequence (ROT-4: removals are mirrored).
/// 2. edge switches to an SVID from CA2; a client pinned to the bootstrap bundle
///    {CA1} now fails (negative control).
/// 3. edge's bundle becomes {CA2, CA3}; the peers can only fetch it by authenticating
///    the CA2 SVID with the latest bundle they stored, not the configured bootstrap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spf_7_spf_4_rotation_reaches_every_peer() {
    let mesh = mesh().await;
    let edge_td = mesh.edge.trust_domain.clone();
    let bootstrap = relays_peer(&mesh.east, &mesh.edge).await;
    let first = relays_peer(&mesh.west, &mesh.edge).await;
    assert_eq!(authorities(&bootstrap), authorities(&first));

    // 1. New CA in, old CA out.
    let ca2 = TestCa::spiffe("edge.test");
    let rotated = bundle_of(&edge_td, &[&ca2]);
    mesh.edge.write_local_bundle(&rotated);
    let at_east = relays_exactly(&mesh.east, &edge_td, &rotated, first.sequence()).await;
    let at_west = relays_exactly(&mesh.west, &edge_td, &rotated, first.sequence()).await;
    assert_eq!(at_east.sequence(), at_west.sequence());

    // 2. The endpoint's SVID now chains only to CA2.
    reissue_svid(&mesh.edge, &ca2, mesh.dir.path()).await;
    let pinned = mesh
        .edge
        .fetch_spiffe("/", &edge_td, &bootstrap)
        .await
        .expect_err("a client pinned to the bootstrap bundle must not authenticate the CA2 SVID");
    assert!(
        pinned.to_lowercase().contains("certificate") || pinned.to_lowercase().contains("svid"),
        "{pinned}"
    );

    // 3. A further change is fetched over the CA2 SVID.
    let ca3 = TestCa::spiffe("edge.test");
    let next = bundle_of(&edge_td, &[&ca2, &ca3]);
    mesh.edge.write_local_bundle(&next);
    let at_east = relays_exactly(&mesh.east, &edge_td, &next, at_east.sequence()).await;
    let at_west = relays_exactly(&mesh.west, &edge_td, &next, at_west.sequence()).await;
    assert_eq!(at_east.sequence(), at_west.sequence());
    // Edge itself serves the same (SRV-2: the latest version).
    let own = mesh.edge.local_bundle().await.unwrap();
    assert_eq!(authorities(&own), authorities(&next));
    assert_eq!(own.sequence(), at_east.sequence());
}

/// POLL-2: while west is down, east and edge keep serving the last good west bundle
/// across several failed polls (seen in their logs, and bracketed by a later event:
/// a change at edge reaching east); when west comes back, changes flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_2_endpoint_down_keeps_last_good_bundle() {
    let mut mesh = mesh().await;
    let west_td = mesh.west.trust_domain.clone();
    let edge_td = mesh.edge.trust_domain.clone();
    let last_good = relays_peer(&mesh.east, &mesh.west).await;
    relays_peer(&mesh.edge, &mesh.west).await;
    let edge_before = relays_peer(&mesh.east, &mesh.edge).await;

    mesh.west.kill();
    let failed_at = |gw: &Gateway| {
        gw.log_lines_with(&["bundle fetch failed", &format!("trust_domain={west_td}")])
    };
    let (east_failures, edge_failures) = (failed_at(&mesh.east), failed_at(&mesh.edge));
    let extra = TestCa::spiffe("edge.test");
    let edge_next = with_ca(&mesh.edge.local_bundle().await.unwrap(), &extra);
    mesh.edge.write_local_bundle(&edge_next);
    relays_exactly(&mesh.east, &edge_td, &edge_next, edge_before.sequence()).await;
    wait_until(
        DEADLINE,
        "three failed polls of west at east and at edge",
        || async {
            failed_at(&mesh.east) >= east_failures + 3 && failed_at(&mesh.edge) >= edge_failures + 3
        },
    )
    .await;
    for holder in [&mesh.east, &mesh.edge] {
        let kept = holder.relay(&west_td).await.unwrap();
        assert_eq!(
            authorities(&kept),
            authorities(&last_good),
            "{} must keep the last good bundle of west",
            holder.trust_domain
        );
        assert_eq!(kept.sequence(), last_good.sequence());
        // The operator sees it: `fedgw status` over the admin socket says failing.
        let status = cli_status(holder);
        let west = status["domains"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["trust_domain"] == west_td.as_str())
            .unwrap_or_else(|| panic!("west missing from status: {status}"));
        assert_eq!(west["state"], "failing", "{west}");
        assert!(
            west["consecutive_failures"].as_u64().unwrap() >= 3,
            "{west}"
        );
        assert_eq!(west["sequence"], serde_json::json!(last_good.sequence()));
    }

    // Recovery: west restarts on the same data_dir and a change reaches both peers.
    mesh.west.restart().await;
    let west_next = with_ca(&last_good, &TestCa::spiffe("west.test"));
    mesh.west.write_local_bundle(&west_next);
    relays_exactly(&mesh.east, &west_td, &west_next, last_good.sequence()).await;
    relays_exactly(&mesh.edge, &west_td, &west_next, last_good.sequence()).await;
}

/// `fedgw status --json` against a gateway's admin socket, as an operator runs it.
fn cli_status(gw: &Gateway) -> serde_json::Value {
    let socket = gw.data_dir.join("admin.sock");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fedgw"))
        .args(["status", "--json", "--admin"])
        .arg(format!("unix:{}", socket.display()))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "fedgw status: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// STO-2: a foreign endpoint (a stale replica) goes from sequence 5 back to 4 with
/// other content; the gateway keeps relaying the sequence-5 bundle over several polls
/// and says why in its log; a later sequence 6 is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sto_2_rolled_back_sequence_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let stale = td("stale.test");
    let (ca_a, ca_b) = (TestCa::spiffe("stale.test"), TestCa::spiffe("stale.test"));
    let five = bundle_of(&stale, &[&ca_a]);
    let four = bundle_of(&stale, &[&ca_b]);
    let web_ca = TestCa::web("stale.test");
    let server = BundleServer::start(&web_ca, Answer::Fixed(document(&five, 5))).await;
    let mut builder = GatewayBuilder::new(dir.path(), "east.test").web();
    let ca_path = write_ca_pem(dir.path(), "stale-web-ca.pem", &web_ca);
    builder.federate_web("stale.test", &server.url(), &ca_path);
    let gw = builder.start().await;

    let relayed = relays_exactly(&gw, &stale, &five, Some(4)).await;
    assert_eq!(relayed.sequence(), Some(5));

    server.set(Answer::Fixed(document(&four, 4)));
    let polls = server.requests();
    // Four more requests: the poller is sequential, so at least three answers with
    // sequence 4 have been handled.
    wait_until(DEADLINE, "three polls answered with sequence 4", || async {
        server.requests() >= polls + 4
    })
    .await;
    let kept = gw.relay(&stale).await.unwrap();
    assert_eq!(kept.sequence(), Some(5));
    assert_eq!(authorities(&kept), authorities(&five));
    assert!(
        gw.log_lines_with(&["fetched bundle rejected", "trust_domain=stale.test"]) >= 3,
        "the refusals are logged:\n{}",
        gw.log_text()
    );
    // ... and counted under their reason.
    let regressions =
        r#"fedgw_bundle_rejections_total{reason="sequence_regression",trust_domain="stale.test"}"#;
    let counted = gw.metric(regressions).await;
    assert!(counted >= Some(3.0), "{regressions} = {counted:?}");
    // The status names the refusal by its code, as the metric does.
    let status = domain_status(&gw, &stale);
    assert_eq!(status["state"], "failing", "{status}");
    assert_eq!(
        status["last_error"]["code"], "sequence_regression",
        "{status}"
    );
    assert!(
        status["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("went down from 5 to 4"),
        "{status}"
    );

    // The relationship is not stuck: a genuinely newer bundle is taken.
    server.set(Answer::Fixed(document(&four, 6)));
    relays_exactly(&gw, &stale, &four, Some(5)).await;
}

/// STO-1: a foreign publisher changes its bundle on every poll (~4 per second); the
/// gateway is killed with SIGKILL in the middle of that, the publisher goes down, and
/// the restarted gateway (same data_dir) serves, on its very first request and
/// before any re-fetch could succeed, a bundle at least as new as the last one it
/// served before the kill, exactly as the publisher issued it. Three rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sto_1_kill_9_during_updates_then_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let busy = td("busy.test");
    let cas: Arc<Vec<TestCa>> = Arc::new((0..4).map(|_| TestCa::spiffe("busy.test")).collect());
    let version = {
        let busy = busy.clone();
        let cas = Arc::clone(&cas);
        move |n: u64| bundle_of(&busy, &[&cas[usize::try_from(n % 4).unwrap()]])
    };
    let publishing = {
        let version = version.clone();
        Answer::Counting(Arc::new(move |n| document(&version(n), n)))
    };
    let web_ca = TestCa::web("busy.test");
    let server = BundleServer::start(&web_ca, publishing.clone()).await;
    let mut builder = GatewayBuilder::new(dir.path(), "east.test").web();
    let ca_path = write_ca_pem(dir.path(), "busy-web-ca.pem", &web_ca);
    builder.federate_web("busy.test", &server.url(), &ca_path);
    let mut gw = builder.start().await;

    let mut seen = 0;
    for round in 1..=3 {
        server.set(publishing.clone());
        let before_kill = wait_for(DEADLINE, "three more accepted versions", || async {
            let relayed = gw.relay(&busy).await.ok()?;
            (relayed.sequence()? >= seen + 3).then_some(relayed)
        })
        .await;
        gw.kill();
        server.set(Answer::Unavailable);
        let issued = server.counted();
        let acknowledged = before_kill.sequence().unwrap();

        gw.restart().await;
        // One request, no waiting: the stored bundle is served before any re-fetch.
        let after = gw
            .relay(&busy)
            .await
            .unwrap_or_else(|err| panic!("round {round}: nothing served after restart: {err}"));
        let sequence = after.sequence().unwrap();
        assert!(
            sequence >= acknowledged && sequence <= issued,
            "round {round}: served sequence {sequence}, acknowledged {acknowledged} before the kill, {issued} issued"
        );
        assert_eq!(
            authorities(&after),
            authorities(&version(sequence)),
            "round {round}: the content of version {sequence} as issued"
        );
        seen = sequence;
    }
}

/// BUN-4 (producer): every content change of a local bundle raises the served
/// sequence, also after the source once set its own (e.g. a bundle copied from SPIRE
/// with `spiffe_sequence` 100, then a file without one): the gateway's own numbering
/// continues above 100 instead of going down, which its policy would refuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bun_4_local_sequence_rises_past_an_explicit_one() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBuilder::new(dir.path(), "east.test")
        .web()
        .start()
        .await;
    let east = gw.trust_domain.clone();
    let first = gw.local_bundle().await.unwrap();

    let mut explicit = with_ca(&first, &TestCa::spiffe("east.test"));
    explicit.set_sequence(Some(100));
    write_atomically(&gw.pki.bundle, explicit.to_json_pretty().as_bytes());
    wait_until(
        DEADLINE,
        "east to serve its bundle with sequence 100",
        || async {
            gw.local_bundle().await.is_ok_and(|served| {
                served.sequence() == Some(100) && authorities(&served) == authorities(&explicit)
            })
        },
    )
    .await;

    let unnumbered = with_ca(&explicit, &TestCa::spiffe("east.test"));
    gw.write_local_bundle(&unnumbered);
    let what = "east to serve the unnumbered change with a sequence above 100";
    wait_until(DEADLINE, what, || async {
        gw.local_bundle().await.is_ok_and(|served| {
            served.sequence() > Some(100) && authorities(&served) == authorities(&unnumbered)
        })
    })
    .await;
    assert_eq!(gw.local_bundle().await.unwrap().trust_domain(), &east);
}

/// A single gateway with both listeners and no relationships, for the interop tests.
async fn lone_gateway(dir: &Path) -> Gateway {
    GatewayBuilder::new(dir, "interop.test")
        .web()
        .spiffe()
        .start()
        .await
}

/// SRV-3, SRV-4 by an independent client: curl fetches the `https_web` endpoint,
/// verifying it with the development web CA: 200, `application/json`, a body that
/// parses as the bundle the gateway serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_4_curl_fetches_the_web_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let gw = lone_gateway(dir.path()).await;
    let body = dir.path().join("body.json");
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--cacert"])
        .arg(&gw.pki.web_ca_cert)
        .arg("--output")
        .arg(&body)
        .args(["--write-out", "%{http_code} %{content_type}"])
        .arg(gw.web_url("/"))
        .output()
        .expect("curl must be installed (./scripts/test.sh installs it)");
    let written = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "curl failed: {written} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(written, "200 application/json");
    let bytes = std::fs::read(&body).unwrap();
    let text = std::str::from_utf8(&bytes).expect("SRV-3: the body is UTF-8");
    let parsed = Bundle::parse(&gw.trust_domain, text.as_bytes())
        .unwrap()
        .bundle;
    let served = gw.local_bundle().await.unwrap();
    assert_eq!(authorities(&parsed), authorities(&served));
    assert_eq!(parsed.sequence(), served.sequence());
}

/// SRV-6 by an independent client: `openssl s_client` verifies the `https_web`
/// endpoint's chain with the development web CA and the name `localhost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_6_openssl_s_client_verifies_the_web_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let gw = lone_gateway(dir.path()).await;
    let output = Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{}", gw.web_port().unwrap()))
        .args([
            "-servername",
            "localhost",
            "-verify_hostname",
            "localhost",
            "-verify_return_error",
            "-CAfile",
        ])
        .arg(&gw.pki.web_ca_cert)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl must be installed (./scripts/test.sh installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "openssl s_client failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("Verify return code: 0 (ok)"),
        "{stdout}\n{stderr}"
    );
}

/// SRV-8 by an independent implementation: Python `ssl` + `cryptography` read the
/// `https_spiffe` endpoint's leaf and check it is an X509-SVID for the configured
/// endpoint ID, signed by the CA in the gateway's bundle
/// (`tests/interop/check_spiffe_endpoint.py`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_8_python_checks_the_spiffe_endpoint_svid() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = repo.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run the README test command (./scripts/test.sh), which creates the \
         venv with tests/interop/requirements.txt",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let gw = lone_gateway(dir.path()).await;
    let output = Command::new(&python)
        .arg(repo.join("tests/interop/check_spiffe_endpoint.py"))
        .args(["--host", "127.0.0.1", "--port"])
        .arg(gw.spiffe_port().unwrap().to_string())
        .args(["--spiffe-id", &gw.endpoint_id.to_string(), "--bundle"])
        .arg(&gw.pki.bundle)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "check_spiffe_endpoint.py failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The entry of `td` in `fedgw status --json` at `gw`.
fn domain_status(gw: &Gateway, td: &TrustDomain) -> serde_json::Value {
    let status = cli_status(gw);
    status["domains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["trust_domain"] == td.as_str())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{td} missing from the status of {}: {status}",
                gw.trust_domain
            )
        })
}

/// SPF-5, SPF-8 (non-self-serving `https_spiffe` endpoints), and SPF-3 with a PEM
/// bootstrap bundle. Gateway C fetches domain A over `https_spiffe` (bootstrapped
/// with A's CA as PEM) and relays it at `/relay/a.test` on its own `https_spiffe`
/// listener, with C's own SVID: for A, `https://C/relay/a.test` with endpoint ID
/// `spiffe://c.test/…` is a non-self-serving endpoint. Gateway X federates with A
/// through that URL, with no bootstrap bundle:
/// 1. SPF-5: X holds no bundle of c.test, so A is `awaiting_bootstrap` and its error
///    names c.test; nothing is fetched.
/// 2. X also federates with C (over `https_web`; added to its configuration, then a
///    restart): A is fetched, authenticated with the c.test bundle X fetched.
/// 3. SPF-8: C rotates its CA (bundle {CA1, CA2}, SVID from CA2, then bundle {CA2}); X
///    picks each version up through its C relationship, and a later change at A
///    still reaches X, which can only happen by authenticating C's CA2 SVID with the
///    latest c.test bundle it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spf_5_spf_8_non_self_serving_endpoint_uses_its_domain_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let a = GatewayBuilder::new(dir.path(), "a.test").spiffe();
    let mut c = GatewayBuilder::new(dir.path(), "c.test").web().spiffe();
    let mut x = GatewayBuilder::new(dir.path(), "x.test").web();
    c.relationship(&format!(
        "[[federation]]\ntrust_domain = \"a.test\"\nurl = \"{url}\"\nprofile = \"https_spiffe\"\nendpoint_spiffe_id = \"{id}\"\nbootstrap_bundle = {pem:?}\nbootstrap_format = \"pem\"\nproxy = \"off\"\n",
        url = a.spiffe_url("/"),
        id = a.endpoint_id(),
        pem = a.pki().ca_cert.display().to_string(),
    ));
    x.relationship(&format!(
        "[[federation]]\ntrust_domain = \"a.test\"\nurl = \"{url}\"\nprofile = \"https_spiffe\"\nendpoint_spiffe_id = \"{id}\"\nproxy = \"off\"\n",
        url = c.spiffe_url("/relay/a.test"),
        id = c.endpoint_id(),
    ));
    let (a, c, mut x) = tokio::join!(a.start(), c.start(), x.start());
    let (a_td, c_td) = (a.trust_domain.clone(), c.trust_domain.clone());
    // SPF-3 (PEM): C fetched A, starting from A's CA in PEM.
    relays_peer(&c, &a).await;

    // 1. SPF-5: no bundle of c.test at X, so no fetch of A.
    let waiting = wait_for(DEADLINE, "a.test to await c.test's bundle at x", || async {
        let status = domain_status(&x, &a_td);
        status["last_error"]["message"]
            .is_string()
            .then_some(status)
    })
    .await;
    assert_eq!(waiting["state"], "awaiting_bootstrap", "{waiting}");
    assert_eq!(
        waiting["last_error"]["code"], "awaiting_bootstrap",
        "{waiting}"
    );
    let message = waiting["last_error"]["message"].as_str().unwrap();
    assert!(message.contains("c.test"), "{message}");
    assert!(x.relay(&a_td).await.unwrap_err().contains("404"));
    assert!(x.log_lines_with(&["bundle fetch not attempted", "trust_domain=a.test"]) >= 1);
    assert_eq!(
        x.log_lines_with(&["bundle fetch failed", "trust_domain=a.test"]),
        0,
        "no connection is attempted without the endpoint's trust domain bundle"
    );

    // 2. X federates with C too; A is fetched through C.
    x.append_config(&format!(
        "[[federation]]\ntrust_domain = \"c.test\"\nurl = \"{url}\"\nprofile = \"https_web\"\nextra_ca_roots = {ca:?}\nproxy = \"off\"\n",
        url = c.web_url("/"),
        ca = c.pki.web_ca_cert.display().to_string(),
    ));
    x.restart().await;
    let c_first = relays_peer(&x, &c).await;
    let a_first = relays_peer(&x, &a).await;
    assert_eq!(domain_status(&x, &a_td)["state"], "healthy");

    // 3. SPF-8: C rotates; its new bundle reaches X through the C relationship.
    let ca2 = TestCa::spiffe("c.test");
    let both = with_ca(&c_first, &ca2);
    c.write_local_bundle(&both);
    let c_both = relays_exactly(&x, &c_td, &both, c_first.sequence()).await;
    reissue_svid(&c, &ca2, dir.path()).await;
    let only_ca2 = bundle_of(&c_td, &[&ca2]);
    c.write_local_bundle(&only_ca2);
    relays_exactly(&x, &c_td, &only_ca2, c_both.sequence()).await;
    let pinned = c.fetch_spiffe("/relay/a.test", &a_td, &c_first).await;
    assert!(pinned.is_err(), "C must now present its CA2 SVID");
    // A changes; X gets it from C, authenticated with c.test's latest bundle {CA2}.
    let a_next = with_ca(&a_first, &TestCa::spiffe("a.test"));
    a.write_local_bundle(&a_next);
    relays_exactly(&c, &a_td, &a_next, a_first.sequence()).await;
    relays_exactly(&x, &a_td, &a_next, a_first.sequence()).await;
}

/// ROT-3 and ROT-4 at a real gateway. A new key at the local source appears on the
/// endpoint within the source's check interval (polled with a deadline); a key
/// removed at the local source, or at a foreign endpoint, is removed from what the
/// gateway serves or relays; and the gateway never prunes by itself: a CA that has
/// expired but is still published upstream stays, across many polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rot_3_rot_4_changes_are_mirrored_and_nothing_is_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let up = td("up.test");
    let (ca1, ca2) = (TestCa::spiffe("up.test"), TestCa::spiffe("up.test"));
    let up_expired = TestCa::spiffe_expired("up.test");
    let published = bundle_of(&up, &[&ca1, &ca2, &up_expired]);
    let web_ca = TestCa::web("up.test");
    let server = BundleServer::start(&web_ca, Answer::Fixed(document(&published, 1))).await;
    let mut builder = GatewayBuilder::new(dir.path(), "east.test").web();
    let ca_path = write_ca_pem(dir.path(), "up-web-ca.pem", &web_ca);
    builder.federate_web("up.test", &server.url(), &ca_path);
    let gw = builder.start().await;
    let east = gw.trust_domain.clone();
    let first = gw.local_bundle().await.unwrap();

    // ROT-3: a new key (and an expired one) at the local source is served.
    let (new_key, expired) = (
        TestCa::spiffe("east.test"),
        TestCa::spiffe_expired("east.test"),
    );
    let grown = with_ca(&with_ca(&first, &new_key), &expired);
    gw.write_local_bundle(&grown);
    let what = "the new local key on the endpoint";
    let served = wait_for(DEADLINE, what, || async {
        let served = gw.local_bundle().await.ok()?;
        (authorities(&served) == authorities(&grown)).then_some(served)
    })
    .await;
    // ROT-4: a key removed at the source goes; the expired one still published stays.
    let shrunk = with_ca(&first, &expired);
    gw.write_local_bundle(&shrunk);
    let what = "the removal at the local source on the endpoint";
    wait_until(DEADLINE, what, || async {
        gw.local_bundle().await.is_ok_and(|now| {
            authorities(&now) == authorities(&shrunk) && now.sequence() > served.sequence()
        })
    })
    .await;

    // The relay mirrors a removal upstream and keeps the expired CA.
    let relayed = relays_exactly(&gw, &up, &published, None).await;
    let removed = bundle_of(&up, &[&ca2, &up_expired]);
    server.set(Answer::Fixed(document(&removed, 2)));
    relays_exactly(&gw, &up, &removed, relayed.sequence()).await;
    let polls = server.requests();
    wait_until(DEADLINE, "four more polls of up.test", || async {
        server.requests() >= polls + 4
    })
    .await;
    assert_eq!(
        authorities(&gw.relay(&up).await.unwrap()),
        authorities(&removed)
    );
    assert_eq!(
        authorities(&gw.local_bundle().await.unwrap()),
        authorities(&shrunk)
    );
    assert_eq!(gw.local_bundle().await.unwrap().trust_domain(), &east);
}

/// RDR-4 and EXT-8. A relationship's URL answers 308 (permanent) to another
/// endpoint. Every poll starts at the configured URL again, also after a restart
/// (nothing about the redirect is kept); each fetch is logged with the configured
/// URL, the final URL, the peer, the sequence and the outcome, a failed one too; the
/// stored bundle's history names both URLs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rdr_4_ext_8_redirects_are_logged_and_never_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let moved = td("moved.test");
    let bundle = bundle_of(&moved, &[&TestCa::spiffe("moved.test")]);
    let web_ca = TestCa::web("moved.test");
    let target = BundleServer::start(&web_ca, Answer::Fixed(document(&bundle, 3))).await;
    let redirect = Answer::Redirect {
        status: 308,
        location: target.url(),
    };
    let configured = BundleServer::start(&web_ca, redirect).await;
    let mut builder = GatewayBuilder::new(dir.path(), "east.test").web();
    let ca_path = write_ca_pem(dir.path(), "moved-web-ca.pem", &web_ca);
    builder.federate_web("moved.test", &configured.url(), &ca_path);
    let mut gw = builder.start().await;
    relays_exactly(&gw, &moved, &bundle, Some(2)).await;

    // Every poll goes to the configured URL first: the target is never asked more
    // often than the configured URL (each count is taken before answering).
    for round in ["before", "after"] {
        let (c0, t0) = (configured.requests(), target.requests());
        wait_until(DEADLINE, "three more redirected polls", || async {
            configured.requests() >= c0 + 3 && target.requests() >= t0 + 3
        })
        .await;
        // Target first: a poll between the two reads can only raise the second.
        let t = target.requests();
        let c = configured.requests();
        assert!(
            c >= t,
            "{round} restart: {t} fetches at the target, {c} at the configured URL"
        );
        if round == "before" {
            gw.restart().await;
        }
    }

    // EXT-8: the log says where, who, what and how it went.
    let fetched = [
        "bundle fetched",
        "trust_domain=moved.test",
        &format!("url=\"{}\"", configured.url()),
        &format!("final_url=\"{}\"", target.url()),
        "peer=\"127.0.0.1\"",
        "sequence=3",
    ];
    assert!(gw.log_lines_with(&[&fetched[..], &["outcome=\"accepted\""]].concat()) >= 1);
    assert!(gw.log_lines_with(&[&fetched[..], &["outcome=\"unchanged\""]].concat()) >= 3);
    target.set(Answer::Unavailable);
    let url = format!("url=\"{}\"", configured.url());
    let failed = [
        "bundle fetch failed",
        "trust_domain=moved.test",
        &url,
        "outcome=\"failed\"",
        "503",
    ];
    wait_until(DEADLINE, "a failed fetch in the log", || async {
        gw.log_lines_with(&failed) >= 1
    })
    .await;
    // The stored version records both URLs.
    let history = gw.admin_json("/v1/bundles/moved.test/history").await;
    let source = history["history"][0]["source"].as_str().unwrap();
    assert_eq!(
        source,
        format!(
            "fetched from {} (redirected to {})",
            configured.url(),
            target.url()
        )
    );
}

/// SRV-1, SRV-9 and SRV-10 at a real gateway's bundle listener: an `Authorization`
/// header changes nothing; the admin routes are not served there (404); and no
/// answer is a redirect (unknown paths, trailing-slash and dot-segment variants, GET
/// and HEAD, a POST): fedgw's endpoint offers no redirects (decision).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_1_srv_9_srv_10_bundle_listener_never_redirects_nor_serves_admin_routes() {
    let dir = tempfile::tempdir().unwrap();
    let gw = lone_gateway(dir.path()).await;
    let cases: &[(&str, &str, &str)] = &[
        ("GET", "/", "200"),
        ("HEAD", "/", "200"),
        ("GET", "/?x=1", "200"),
        ("POST", "/", "405"),
        ("GET", "/v1/status", "404"),
        ("GET", "/metrics", "404"),
        ("GET", "/healthz", "404"),
        ("GET", "/v1/bundles/interop.test", "404"),
        ("GET", "/interop.test", "404"),
        ("GET", "/interop.test/", "404"),
        ("GET", "//", "404"),
        ("GET", "/./", "404"),
        ("GET", "/relay", "404"),
        ("GET", "/relay/", "404"),
        ("HEAD", "/relay/other.test", "404"),
        ("GET", "/relay/other.test/", "404"),
        ("HEAD", "/nothing/", "404"),
    ];
    for (method, path, expected) in cases {
        let method_args: &[&str] = if *method == "HEAD" {
            &["--head"]
        } else {
            &["-X", method]
        };
        let output = Command::new("curl")
            .args([
                "--silent",
                "--show-error",
                "--path-as-is",
                "--output",
                "/dev/null",
            ])
            .args(["--cacert"])
            .arg(&gw.pki.web_ca_cert)
            .args(method_args)
            .args(["-H", "Authorization: Bearer not-checked-anywhere"])
            .args(["--write-out", "%{http_code} %{redirect_url}"])
            .arg(gw.web_url(path))
            .output()
            .expect("curl must be installed (./scripts/test.sh installs it)");
        let written = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{method} {path}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            written.trim_end(),
            *expected,
            "{method} {path}: no redirect, no Location"
        );
    }
}

/// STO-4 at a real gateway: an operator's bundle for a polled foreign domain is
/// relayed at once, and the next successful fetch replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sto_4_operator_bundle_serves_at_once_until_the_next_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let peer = td("peer.test");
    let fetched = bundle_of(&peer, &[&TestCa::spiffe("peer.test")]);
    let web_ca = TestCa::web("peer.test");
    let server = BundleServer::start(&web_ca, Answer::Fixed(document(&fetched, 7))).await;
    let mut builder = GatewayBuilder::new(dir.path(), "east.test").web();
    let ca_path = write_ca_pem(dir.path(), "peer-web-ca.pem", &web_ca);
    builder.federate_web("peer.test", &server.url(), &ca_path);
    let gw = builder.start().await;
    relays_exactly(&gw, &peer, &fetched, Some(6)).await;

    // The endpoint is down, so only the operator's bundle can be relayed. A request
    // after the switch means the poll before it (sequential) has finished.
    server.set(Answer::Unavailable);
    let polls = server.requests();
    wait_until(DEADLINE, "a poll answered 503", || async {
        server.requests() > polls
    })
    .await;
    let operator = bundle_of(&peer, &[&TestCa::spiffe("peer.test")]);
    put_bundle(&gw, &peer, &operator).await.unwrap();
    let relayed = gw.relay(&peer).await.unwrap();
    assert_eq!(
        authorities(&relayed),
        authorities(&operator),
        "served at once"
    );
    assert_eq!(
        relayed.sequence(),
        None,
        "the operator's document, as given"
    );

    server.set(Answer::Fixed(document(&fetched, 7)));
    relays_exactly(&gw, &peer, &fetched, Some(6)).await;
}

/// `PUT /v1/bundles/<td>` of `bundle` as SPIFFE JSON through the admin socket.
async fn put_bundle(
    gw: &Gateway,
    td: &TrustDomain,
    bundle: &Bundle,
) -> Result<fedgw::client::admin_client::Answer, fedgw::client::admin_client::ClientError> {
    let body = fedgw::client::admin_client::Body::Raw {
        content_type: "application/json",
        bytes: bundle.to_json(),
    };
    let path = format!("/v1/bundles/{td}");
    gw.admin()
        .call(reqwest::Method::PUT, &path, Some(body))
        .await
}

/// The warning codes `GET /v1/bundles` and `GET /v1/status` show for `td`, which
/// must agree.
async fn warning_codes(gw: &Gateway, td: &TrustDomain) -> Vec<String> {
    let codes = |entry: &serde_json::Value| -> Vec<String> {
        entry["warnings"]
            .as_array()
            .unwrap_or_else(|| panic!("no warnings member: {entry}"))
            .iter()
            .map(|w| w["code"].as_str().unwrap().to_owned())
            .collect()
    };
    let list = gw.admin_json("/v1/bundles").await;
    let listed = list["bundles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["trust_domain"] == td.as_str())
        .unwrap_or_else(|| panic!("{td} not listed: {list}"));
    let status = domain_status(gw, td);
    let shown = codes(&status);
    let stored = codes(listed);
    assert!(
        shown.ends_with(&stored),
        "status {shown:?}, bundles {stored:?}"
    );
    stored
}

/// SEC-7 and ID-16 through the admin API, and refusals counted by reason: an
/// operator pushes, for copy.test, a bundle holding east.test's own CA. It is
/// accepted (a warning, not a refusal); both bundles show the shared key and the copy
/// shows a CA without `spiffe://copy.test`, in `GET /v1/bundles`, `GET /v1/status`
/// and as `fedgw-warning` headers of `GET /v1/bundles/copy.test`; the log and
/// `fedgw_bundle_warnings_total` count it. Bundles over `policy.max_authorities`, one
/// pushed and one at the local source, are refused and counted in
/// `fedgw_bundle_rejections_total` under their trust domain and the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_7_id_16_warnings_are_shown_and_refusals_counted() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBuilder::new(dir.path(), "east.test")
        .web()
        .extra_toml("[policy]\nmax_authorities = 2\n")
        .start()
        .await;
    let (east, copy) = (gw.trust_domain.clone(), td("copy.test"));
    let own = gw.local_bundle().await.unwrap();
    let mut copied = Bundle::new(copy.clone());
    for authority in own.x509_authorities() {
        copied.add_x509_authority(authority.clone());
    }
    let answer = put_bundle(&gw, &copy, &copied).await.unwrap();
    assert_eq!(answer.json.unwrap()["outcome"], "accepted");

    assert_eq!(warning_codes(&gw, &east).await, ["shared_ca_key"]);
    let mut codes = warning_codes(&gw, &copy).await;
    codes.sort();
    assert_eq!(codes, ["ca_without_trust_domain_id", "shared_ca_key"]);
    let socket = gw.data_dir.join("admin.sock");
    let headers = Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--dump-header",
            "-",
            "--output",
            "/dev/null",
        ])
        .arg("--unix-socket")
        .arg(&socket)
        .arg("http://fedgw/v1/bundles/copy.test")
        .output()
        .unwrap();
    let headers = String::from_utf8_lossy(&headers.stdout).to_lowercase();
    assert!(
        headers.contains("fedgw-warning: shared_ca_key: "),
        "{headers}"
    );
    assert!(headers.contains("east.test"), "{headers}");
    assert!(
        headers.contains("fedgw-warning: ca_without_trust_domain_id: "),
        "{headers}"
    );
    assert!(
        gw.log_lines_with(&["accepted bundle", "trust_domain=copy.test", "shared_ca_key"]) >= 1
    );
    let shared = r#"fedgw_bundle_warnings_total{trust_domain="copy.test",warning="shared_ca_key"}"#;
    assert_eq!(gw.metric(shared).await, Some(1.0));

    // Refusals: pushed, then at the local source; nothing changes.
    let three = |td: &TrustDomain| {
        let cas: Vec<TestCa> = (0..3).map(|_| TestCa::spiffe(td.as_str())).collect();
        bundle_of(td, &cas.iter().collect::<Vec<_>>())
    };
    let refused = put_bundle(&gw, &copy, &three(&copy)).await.unwrap_err();
    assert!(
        refused.to_string().contains("too_many_authorities"),
        "{refused}"
    );
    let pushed =
        r#"fedgw_bundle_rejections_total{reason="too_many_authorities",trust_domain="copy.test"}"#;
    assert_eq!(gw.metric(pushed).await, Some(1.0));
    gw.write_local_bundle(&three(&east));
    let local =
        r#"fedgw_bundle_rejections_total{reason="too_many_authorities",trust_domain="east.test"}"#;
    wait_until(DEADLINE, "the local refusal to be counted", || async {
        gw.metric(local).await == Some(1.0)
    })
    .await;
    assert_eq!(
        authorities(&gw.local_bundle().await.unwrap()),
        authorities(&own)
    );
}

/// BUN-3 and SEC-6 for a local domain set through the admin API: a bundle pushed
/// without `spiffe_sequence` is served with one (and a higher one after a change),
/// with the configured refresh hint; a served hint above 24 h is a startup warning
/// naming the key, and a warning on the domain in `GET /v1/status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bun_3_sec_6_pushed_local_bundle_is_numbered_and_long_hint_warned() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBuilder::new(dir.path(), "east.test")
        .web()
        .extra_toml("[[local]]\ntrust_domain = \"pushed.test\"\nsource = { admin = true }\nrefresh_hint = \"2d\"\n")
        .start()
        .await;
    let pushed = td("pushed.test");
    assert!(gw.log_lines_with(&["configuration:", "key=local[1].refresh_hint", "172800s"]) == 1);
    let status = domain_status(&gw, &pushed);
    assert_eq!(
        status["warnings"][0]["code"], "served_refresh_hint_too_long",
        "{status}"
    );

    let mut sequences = Vec::new();
    for _ in 0..2 {
        let bundle = bundle_of(&pushed, &[&TestCa::spiffe("pushed.test")]);
        assert_eq!(bundle.sequence(), None);
        put_bundle(&gw, &pushed, &bundle).await.unwrap();
        let served = gw.fetch("/pushed.test", &pushed).await.unwrap();
        assert_eq!(authorities(&served), authorities(&bundle));
        assert_eq!(served.refresh_hint(), Some(Duration::from_secs(172_800)));
        sequences.push(
            served
                .sequence()
                .expect("BUN-3: served with a spiffe_sequence"),
        );
    }
    assert!(sequences[1] > sequences[0], "{sequences:?}");
    // The file-sourced local domain is numbered too, and no hint warning there.
    assert!(gw.local_bundle().await.unwrap().sequence().is_some());
    let east = domain_status(&gw, &gw.trust_domain);
    assert_eq!(east["warnings"], serde_json::json!([]), "{east}");
}

/// SPF-3: a bootstrap bundle that is not a bundle stops the gateway at startup, with
/// an error naming the relationship, the `bootstrap_bundle` key, the file and the
/// fault; nothing is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spf_3_garbage_bootstrap_bundle_is_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, b"{\"keys\": 42}").unwrap();
    let config = dir.path().join("fedgw.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\n[[federation]]\ntrust_domain = \"w.test\"\nurl = \"https://127.0.0.1:9/\"\nprofile = \"https_spiffe\"\nendpoint_spiffe_id = \"spiffe://w.test/fedgw\"\nbootstrap_bundle = {garbage:?}\n",
            data = dir.path().join("data").display().to_string(),
            garbage = garbage.display().to_string(),
        ),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_fedgw"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default();
    for needle in ["w.test", "bootstrap_bundle", "garbage.json", "keys"] {
        assert!(
            error.contains(needle),
            "{needle} missing from {error:?}\n{stderr}"
        );
    }
}
