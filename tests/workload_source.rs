//! fedgw as a SPIRE workload, against a real SPIRE server and agent (v1.13, built by
//! `scripts/peers.sh`): a local trust domain's bundle streamed from the agent's
//! Workload API, the `https_spiffe` endpoint's X509-SVID from the same socket, both
//! following rotations without a restart, and the agent's loss shown in the status
//! while the last bundle keeps serving (across a gateway restart too).

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

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fedgw_testkit::{DEADLINE, free_port, wait_for, wait_until};
use gateway::{Gateway, GatewayBuilder};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;
use spiffe_federation::{Bundle, SpiffeId, TrustDomain};
use spire::{Spire, SpireOptions};

/// Rotation waits: an SVID of 20 s is rotated by the agent at about half its life.
const ROTATION_DEADLINE: Duration = Duration::from_secs(90);

/// The path the SPIRE domain is served at.
const PATH: &str = "/spire";

struct Setup {
    spire: Spire,
    gateway: Gateway,
    spiffe_port: u16,
    td: TrustDomain,
    _dir: tempfile::TempDir,
}

/// SPIRE, then a gateway whose second local domain (at `/spire`) and `https_spiffe`
/// identity come from the agent; its first local domain is a development one with an
/// `https_web` listener, through which the served SPIRE bundle is read.
async fn setup(options: SpireOptions) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let spire = Spire::start(dir.path(), options).await;
    let td: TrustDomain = spire.trust_domain.parse().unwrap();
    let spiffe_port = free_port();
    let toml = format!(
        "\n[[local]]\ntrust_domain = \"{td}\"\npath = \"{PATH}\"\nrefresh_hint = \"1s\"\nsource = {{ workload_api_socket = \"{socket}\" }}\n\n[endpoint.https_spiffe]\nlisten = \"127.0.0.1:{spiffe_port}\"\nworkload_api_socket = \"{socket}\"\nendpoint_spiffe_id = \"{id}\"\n",
        socket = spire.socket(),
        id = spire.workload_id(),
    );
    let gateway = GatewayBuilder::new(dir.path(), "dev.test")
        .web()
        .extra_toml(&toml)
        .start()
        .await;
    wait_until(DEADLINE, "the https_spiffe listener", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", spiffe_port))
            .await
            .is_ok()
    })
    .await;
    Setup {
        spire,
        gateway,
        spiffe_port,
        td,
        _dir: dir,
    }
}

fn x509_set(bundle: &Bundle) -> BTreeSet<Vec<u8>> {
    gateway::authorities(bundle)
}

fn jwt_kids(bundle: &Bundle) -> BTreeSet<String> {
    bundle.jwt_authorities().keys().cloned().collect()
}

/// The served SPIRE bundle (over `https_web`).
async fn served(setup: &Setup) -> Result<Bundle, String> {
    setup.gateway.fetch_web(PATH, &setup.td).await
}

/// Wait until the served bundle has exactly SPIRE's X.509 and JWT authorities now.
async fn wait_served_equals_spire(setup: &Setup, what: &str) -> Bundle {
    let expected = setup.spire.bundle().await;
    assert!(!expected.x509_authorities().is_empty());
    wait_for(DEADLINE, what, || async {
        let bundle = served(setup).await.ok()?;
        (x509_set(&bundle) == x509_set(&expected) && jwt_kids(&bundle) == jwt_kids(&expected))
            .then_some(bundle)
    })
    .await
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

/// Records the certificate chain the server presents and accepts it (the chain is
/// checked afterwards, against SPIRE's bundle, with the library's verifier).
#[derive(Debug)]
struct Capture {
    chain: Mutex<Vec<Vec<u8>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.to_vec()];
        chain.extend(intermediates.iter().map(|c| c.to_vec()));
        *self.chain.lock().unwrap() = chain;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The chain the `https_spiffe` listener presents on a new handshake, leaf first.
async fn presented_chain(port: u16) -> Vec<Vec<u8>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let capture = Arc::new(Capture {
        chain: Mutex::new(Vec::new()),
        provider: Arc::clone(&provider),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(capture.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let _tls = connector.connect(name, tcp).await.unwrap();
    let chain = capture.chain.lock().unwrap().clone();
    assert!(!chain.is_empty(), "no certificate presented");
    chain
}

/// Check that `chain` is an X509-SVID for `id` under `bundle` (library verifier).
fn assert_svid_for(chain: &[Vec<u8>], bundle: &Bundle, id: &SpiffeId) {
    let certs: Vec<CertificateDer<'static>> = chain
        .iter()
        .map(|der| CertificateDer::from(der.clone()))
        .collect();
    spiffe_federation::verify::verify_x509_svid_for(&certs, bundle, id, UnixTime::now())
        .unwrap_or_else(|err| panic!("the presented SVID is not one for {id}: {err}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spire_bundle_is_served_follows_rotations_and_survives_the_agent() {
    let mut setup = setup(SpireOptions::default()).await;
    let id: SpiffeId = setup.spire.workload_id().parse().unwrap();

    // The agent's bundle: SPIRE's X.509 and JWT authorities, as `bundle show` has them.
    let first = wait_served_equals_spire(&setup, "SPIRE's bundle served").await;
    assert!(!first.jwt_authorities().is_empty(), "SPIRE has a JWT key");
    let local = status_of(&setup.gateway, &setup.td).await;
    assert_eq!(local["role"], "local");
    assert_eq!(local["state"], "serving", "{local}");
    assert_eq!(local["consecutive_failures"], 0);
    assert!(local["last_success"].is_string(), "{local}");

    // The https_spiffe endpoint presents the agent's SVID, which a peer holding
    // SPIRE's bundle accepts for spiffe://<td>/fedgw.
    let spire_bundle = setup.spire.bundle().await;
    assert_svid_for(
        &presented_chain(setup.spiffe_port).await,
        &spire_bundle,
        &id,
    );
    let over_spiffe = setup
        .gateway
        .fetch_spiffe_at(setup.spiffe_port, PATH, &setup.td, &id, &spire_bundle)
        .await
        .unwrap_or_else(|err| panic!("https_spiffe fetch: {err}"));
    assert_eq!(x509_set(&over_spiffe), x509_set(&first));

    // The agent is the only source: the admin API refuses to replace the bundle.
    let refused = setup
        .gateway
        .admin()
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/bundles/{}", setup.td),
            None,
        )
        .await
        .unwrap_err();
    let refused = format!("{refused:?}");
    assert!(
        refused.contains("409")
            && refused.contains("managed_by_source")
            && refused.contains(&setup.spire.socket()),
        "{refused}"
    );

    // A new X.509 authority (prepared, then activated) and a new JWT authority reach
    // the endpoint without a restart.
    setup.spire.rotate_x509_authority().await;
    let after_x509 = wait_served_equals_spire(&setup, "the rotated X.509 authority").await;
    assert!(x509_set(&after_x509).len() > x509_set(&first).len());
    setup.spire.prepare_jwt_authority().await;
    let after_jwt = wait_served_equals_spire(&setup, "the prepared JWT authority").await;
    assert!(jwt_kids(&after_jwt).len() > jwt_kids(&first).len());
    assert!(
        after_jwt.sequence() > first.sequence(),
        "each change is a new sequence"
    );

    // The agent dies: the status says so, naming the socket; the last bundle serves.
    setup.spire.kill_agent();
    let socket = setup.spire.socket();
    let failing = wait_for(DEADLINE, "the status to show the agent's loss", || async {
        let local = status_of(&setup.gateway, &setup.td).await;
        (local["state"] == "failing").then_some(local)
    })
    .await;
    assert_eq!(failing["last_error"]["code"], "workload_api_unavailable");
    let message = failing["last_error"]["message"].as_str().unwrap();
    assert!(message.contains(&socket), "{message}");
    assert!(failing["next_attempt"].is_string(), "{failing}");
    assert!(failing["consecutive_failures"].as_u64().unwrap() >= 1);
    let during = served(&setup).await.unwrap();
    assert_eq!(x509_set(&during), x509_set(&after_jwt));
    assert_eq!(jwt_kids(&during), jwt_kids(&after_jwt));

    // `fedgw status` shows it too.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fedgw"))
        .arg("status")
        .arg("--admin")
        .arg(format!(
            "unix:{}",
            setup.gateway.data_dir.join("admin.sock").display()
        ))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find(|line| line.contains(setup.td.as_str()))
        .unwrap_or_else(|| panic!("{} missing from fedgw status:\n{text}", setup.td));
    assert!(
        line.contains("failing") && line.contains("workload_api_unavailable"),
        "{line}"
    );

    // A gateway restarted while the agent is down serves the stored bundle.
    setup.gateway.restart().await;
    wait_until(DEADLINE, "the admin API after the restart", || async {
        setup
            .gateway
            .admin()
            .call(reqwest::Method::GET, "/v1/status", None)
            .await
            .is_ok()
    })
    .await;
    let restarted = wait_for(DEADLINE, "the stored bundle after a restart", || async {
        served(&setup).await.ok()
    })
    .await;
    assert_eq!(x509_set(&restarted), x509_set(&after_jwt));
    let local = status_of(&setup.gateway, &setup.td).await;
    assert_eq!(local["state"], "failing", "{local}");

    // The agent is back: the source recovers, and a rotation made meanwhile arrives.
    setup.spire.rotate_x509_authority().await;
    setup.spire.start_agent().await;
    wait_until(DEADLINE, "the source to recover", || async {
        let local = status_of(&setup.gateway, &setup.td).await;
        local["state"] == "serving" && local["consecutive_failures"] == 0
    })
    .await;
    wait_served_equals_spire(&setup, "the rotation made while the agent was down").await;
    // The https_spiffe listener, which waited for an SVID, serves the agent's.
    wait_until(
        DEADLINE,
        "the https_spiffe listener after the restart",
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", setup.spiffe_port))
                .await
                .is_ok()
        },
    )
    .await;
    let spire_bundle = setup.spire.bundle().await;
    assert_svid_for(
        &presented_chain(setup.spiffe_port).await,
        &spire_bundle,
        &id,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_svid_rotates_without_a_restart() {
    let setup = setup(SpireOptions {
        svid_ttl_seconds: 20,
        ..SpireOptions::default()
    })
    .await;
    let id: SpiffeId = setup.spire.workload_id().parse().unwrap();
    let bundle = setup.spire.bundle().await;
    let first = presented_chain(setup.spiffe_port).await;
    assert_svid_for(&first, &bundle, &id);
    // The agent rotates a 20 s SVID at about half its life; the next handshake after
    // that presents the new one, with no restart of the gateway.
    let rotated = wait_for(ROTATION_DEADLINE, "a rotated SVID to be served", || async {
        let chain = presented_chain(setup.spiffe_port).await;
        (chain[0] != first[0]).then_some(chain)
    })
    .await;
    assert_svid_for(&rotated, &bundle, &id);
    assert!(
        setup
            .gateway
            .log_lines_with(&["bundle endpoint TLS identity reloaded"])
            >= 1
    );
}
