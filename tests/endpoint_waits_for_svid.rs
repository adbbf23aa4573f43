//! The `https_spiffe` endpoint of a gateway whose X509-SVID comes from a SPIRE agent's
//! Workload API (v1.13, built by `scripts/peers.sh`), started before the agent can
//! give it one: the rest of the gateway serves, the endpoint's port stays closed and
//! the log says why, and the listener opens on its own once the SVID and the local
//! bundle to verify it against are both there, presenting SPIRE's SVID for
//! `endpoint_spiffe_id` and serving the local bundle.
//!
//! What the gateway exposes of the wait: `GET /readyz` is 200 (everything else
//! serves); `GET /v1/status` lists the endpoint in `waiting_listeners` with what it
//! waits for (the SVID, then the local bundle), and the local domain as `missing`
//! until its bundle is stored; the log has the startup warning, the SVID follower's
//! warnings (the socket and the agent's answer) and the bind retry's warning.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

#[path = "support/gateway.rs"]
mod gateway;
#[path = "support/spire.rs"]
mod spire;

use std::path::Path;
use std::time::Duration;

use fedgw_testkit::{DEADLINE, free_port, wait_until};
use gateway::{Gateway, GatewayBuilder, authorities};
use serde_json::Value;
use spiffe_federation::{SpiffeId, TrustDomain};
use spire::{Spire, SpireOptions};

/// The path the SPIRE trust domain is served at.
const PATH: &str = "/spire";

/// A wait for the gateway's next Workload API attempt: its backoff reaches 30 s, and a
/// new registration entry reaches a running agent at its next sync (every 5 s).
const AGENT_DEADLINE: Duration = Duration::from_secs(90);

/// Whether anything accepts connections on the `https_spiffe` port.
async fn accepts(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

/// `GET /v1/status` `waiting_listeners`: the one entry, the https_spiffe endpoint
/// (`None` when it is empty).
async fn waiting_listener(gateway: &Gateway) -> Option<Value> {
    let status = gateway.admin_json("/v1/status").await;
    let waiting = status["waiting_listeners"]
        .as_array()
        .unwrap_or_else(|| panic!("no waiting_listeners in {status}"));
    assert!(waiting.len() <= 1, "{status}");
    let entry = waiting.first().cloned()?;
    assert_eq!(entry["listener"], "https_spiffe endpoint", "{entry}");
    assert_eq!(entry["code"], "listener_waiting", "{entry}");
    Some(entry)
}

/// The local domain's entry in `GET /v1/status`.
async fn status_of(gateway: &Gateway, td: &TrustDomain) -> Value {
    let status = gateway.admin_json("/v1/status").await;
    status["domains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["trust_domain"] == td.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("{td} missing from {status}"))
}

/// Wait until one log line holds every one of `needles`.
async fn wait_for_log(gateway: &Gateway, deadline: Duration, what: &str, needles: &[&str]) {
    wait_until(deadline, what, || async {
        gateway.log_lines_with(needles) >= 1
    })
    .await;
}

/// The bind retry in `outputs::endpoint::start` (`bind_when_ready`), end to end.
///
/// The SPIRE domain's local bundle is pushed through the admin API (`source = { admin
/// = true }`) rather than streamed from the same agent: with both from the agent, its
/// two streams race, and whether the SVID or the bundle comes first is luck. Here the
/// order is fixed: no socket, then an agent that refuses the gateway, then the SVID
/// with no local bundle, then the bundle.
///
/// Why it fails without the retry: the gateway's first bind attempt after the SVID
/// arrives fails for the missing local bundle, and the test waits for that failure
/// (its log line) before it pushes the bundle. From then on only a later attempt can
/// open the listener. With the retry loop cut to one attempt (bind when the SVID
/// arrives, give up on an error) the port never opens and the bounded wait after the
/// push fails; without the deferred bind at all (nothing binds when the SVID was
/// missing at startup) no attempt is logged and the wait for that line fails. Both
/// were checked by running this test against a gateway built with each change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_spiffe_endpoint_binds_once_the_svid_and_the_local_bundle_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let mut spire = Spire::start_server_only(dir.path(), SpireOptions::default()).await;
    let td: TrustDomain = spire.trust_domain.parse().unwrap();
    let id: SpiffeId = spire.workload_id().parse().unwrap();
    let socket = spire.socket();
    let socket_path = socket.strip_prefix("unix://").unwrap().to_owned();
    assert!(
        !Path::new(&socket_path).exists(),
        "no agent runs yet, so {socket_path} must not exist"
    );
    let spiffe_port = free_port();
    let toml = format!(
        "\n[[local]]\ntrust_domain = \"{td}\"\npath = \"{PATH}\"\nrefresh_hint = \"1s\"\nsource = {{ admin = true }}\n\n[endpoint.https_spiffe]\nlisten = \"127.0.0.1:{spiffe_port}\"\nworkload_api_socket = \"{socket}\"\nendpoint_spiffe_id = \"{id}\"\n",
    );
    // Returns once the https_web listener accepts (the https_spiffe one is not in the
    // builder's list of ports to wait for: it is configured through `extra_toml`).
    let gateway = GatewayBuilder::new(dir.path(), "dev.test")
        .web()
        .extra_toml(&toml)
        .start()
        .await;

    // 1. No socket: everything but the https_spiffe listener serves.
    wait_until(DEADLINE, "the admin API", || async {
        gateway
            .admin()
            .call(reqwest::Method::GET, "/v1/status", None)
            .await
            .is_ok()
    })
    .await;
    let ready = gateway
        .admin()
        .call(reqwest::Method::GET, "/readyz", None)
        .await
        .unwrap();
    assert_eq!(
        ready.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&ready.body)
    );
    let local = status_of(&gateway, &td).await;
    assert_eq!(local["role"], "local", "{local}");
    assert_eq!(local["state"], "missing", "{local}");
    gateway.local_bundle().await.unwrap();
    wait_for_log(
        &gateway,
        DEADLINE,
        "the startup warning that https_spiffe waits for an SVID",
        &["https_spiffe endpoint: no X509-SVID from the Workload API yet"],
    )
    .await;
    wait_for_log(
        &gateway,
        DEADLINE,
        "the SVID follower's warning naming the missing socket",
        &[
            "https_spiffe endpoint SVID",
            "workload_api_unavailable",
            &socket,
        ],
    )
    .await;
    assert!(
        !accepts(spiffe_port).await,
        "https_spiffe serves without an SVID"
    );
    let waiting = waiting_listener(&gateway)
        .await
        .expect("the endpoint listed as waiting");
    assert!(
        waiting["reason"]
            .as_str()
            .unwrap()
            .contains("no X509-SVID from the Workload API yet"),
        "{waiting}"
    );
    assert!(
        waiting["listen"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{spiffe_port}")),
        "{waiting}"
    );
    let since = waiting["since"].clone();

    // 2. The agent runs but has no registration entry for this uid: it refuses.
    spire.start_agent_unregistered().await;
    wait_for_log(
        &gateway,
        AGENT_DEADLINE,
        "the SVID follower's warning that the agent has no entry for fedgw",
        &[
            "https_spiffe endpoint SVID",
            "workload_api_bundle",
            &socket,
            "no registration entry matches this process",
        ],
    )
    .await;
    assert!(
        !accepts(spiffe_port).await,
        "https_spiffe serves though the agent refused an SVID"
    );

    // 3. The entry exists: the SVID arrives, but no local bundle of its trust domain
    // is stored to verify it against, so the first bind attempt fails.
    spire.register_workload().await;
    wait_for_log(
        &gateway,
        AGENT_DEADLINE,
        "the bind attempt with the SVID but no local bundle",
        &[
            "https_spiffe endpoint could not start yet; retrying every 500 ms",
            &format!("no bundle for local trust domain {td}"),
        ],
    )
    .await;
    assert_eq!(
        spire.fetch_svid().await.unwrap(),
        id.to_string(),
        "the agent issues the registered SVID now"
    );
    assert!(
        !accepts(spiffe_port).await,
        "https_spiffe serves without the local bundle"
    );
    assert_eq!(status_of(&gateway, &td).await["state"], "missing");
    assert_eq!(
        gateway.log_lines_with(&["https_spiffe endpoint started with the Workload API's SVID"]),
        0
    );
    // Status says what is missing now, waiting since the start.
    let waiting = waiting_listener(&gateway)
        .await
        .expect("the endpoint still listed as waiting");
    assert!(
        waiting["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("no bundle for local trust domain {td}")),
        "{waiting}"
    );
    assert_eq!(waiting["since"], since, "{waiting}");

    // 4. The local bundle (SPIRE's) is pushed: a later attempt binds.
    let spire_bundle = spire.bundle().await;
    assert!(!spire_bundle.x509_authorities().is_empty());
    let body = fedgw::client::admin_client::Body::Raw {
        content_type: "application/json",
        bytes: spire_bundle.to_json(),
    };
    gateway
        .admin()
        .call(
            reqwest::Method::PUT,
            &format!("/v1/bundles/{td}"),
            Some(body),
        )
        .await
        .unwrap();
    assert_eq!(status_of(&gateway, &td).await["state"], "serving");
    wait_until(DEADLINE, "the https_spiffe listener to open", || {
        accepts(spiffe_port)
    })
    .await;
    assert_eq!(
        gateway.log_lines_with(&["https_spiffe endpoint started with the Workload API's SVID"]),
        1
    );
    wait_until(DEADLINE, "waiting_listeners to empty", || async {
        waiting_listener(&gateway).await.is_none()
    })
    .await;

    // It presents SPIRE's SVID for endpoint_spiffe_id (a peer holding SPIRE's bundle
    // accepts it for that ID, and refuses it for any other) and serves the local bundle.
    let served = gateway
        .fetch_spiffe_at(spiffe_port, PATH, &td, &id, &spire_bundle)
        .await
        .unwrap_or_else(|err| panic!("https_spiffe fetch as {id}: {err}"));
    assert_eq!(authorities(&served), authorities(&spire_bundle));
    let other: SpiffeId = format!("spiffe://{td}/not-fedgw").parse().unwrap();
    let refused = gateway
        .fetch_spiffe_at(spiffe_port, PATH, &td, &other, &spire_bundle)
        .await;
    assert!(
        refused.is_err(),
        "a peer expecting {other} accepted the endpoint's SVID"
    );
}
