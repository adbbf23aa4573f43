//! End to end: real `fedgw serve` processes federating on loopback.
//!
//! The mesh: three gateways for `east.test`, `west.test` and `edge.test`. East and
//! west fetch each other over `https_web` (trusting the peer's development web CA);
//! edge fetches east and west, and they fetch edge, over `https_spiffe` (bootstrapped
//! with the peer's development bundle). Every gateway is observed as a peer would
//! observe it: through its bundle endpoints (`/` for its own bundle, `/relay/<td>` for
//! what it holds of a foreign domain) and its log. Where a real gateway cannot play
//! the peer (a stale replica, a publisher changing on every request), a loopback
//! HTTPS fixture does (`support/bundle_server.rs`).
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

#[path = "support/bundle_server.rs"]
mod bundle_server;
#[path = "support/gateway.rs"]
mod gateway;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bundle_server::{Answer, BundleServer, TestCa};
use bytes::Bytes;
use fedgw::dev_pki::{self, DevPkiPaths};
use gateway::{
    DEADLINE, Gateway, GatewayBuilder, Via, authorities, wait_for, wait_until, write_atomically,
};
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
    std::fs::write(&path, &ca.cert_pem).unwrap();
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
