//! Interop with go-spiffe (v2.9.0), the reference Go library, through real processes.
//!
//! The peer is `tests/peers/go` (`fedgw-peer`), built by `scripts/peers.sh go`; Go 1.26
//! is needed and its absence fails the tests (never a skip). Each test runs real
//! `fedgw serve` processes (`support/gateway.rs`) and real `fedgw-peer` processes.
//!
//! - fetch: `federation.FetchBundle` reads a gateway's own bundle (`/`) and a relayed
//!   one (`/relay/<td>`) over `https_web` (`WithWebPKIRoots`, the development web CA)
//!   and `https_spiffe` (`WithSPIFFEAuth`, the local bundle and the endpoint's SPIFFE
//!   ID); what go-spiffe gets must equal what the gateway stores (`GET
//!   /v1/bundles/<td>`) after a canonical parse: X.509 and JWT authorities, sequence,
//!   refresh hint. A wrong endpoint ID or missing roots must make go-spiffe refuse.
//! - serve: the gateway polls two `federation.NewHandler` endpoints, one per profile,
//!   and stores exactly the served documents; rewriting a served file (a rotation)
//!   reaches the gateway's store and its `/relay/<td>`.
//! - workload API: the subcommands the SPIRE testbed uses pass the peer module's own
//!   Go tests (`go test` in `tests/peers/go`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

#[path = "support/gateway.rs"]
mod gateway;
#[path = "support/go_peer.rs"]
mod go_peer;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use fedgw::client::admin_client::ClientError;
use fedgw::dev::pki::{self as dev_pki, DevPkiPaths};
use fedgw_testkit::{DEADLINE, EcKey, TestCa, wait_for, write_atomically};
use gateway::{Gateway, GatewayBuilder, Via, authorities};
use go_peer::ServePeer;
use reqwest::Method;
use spiffe_federation::bundle::JwtAuthority;
use spiffe_federation::{Bundle, SpiffeId, TrustDomain};
use time::OffsetDateTime;

fn td(name: &str) -> TrustDomain {
    name.parse().unwrap()
}

/// A bundle reduced to what the comparison is about: the X.509 authorities (DER, as a
/// set), the JWT authorities by key ID, the sequence and the refresh hint.
#[derive(Debug, PartialEq, Eq)]
struct Canonical {
    x509: BTreeSet<Vec<u8>>,
    jwt: BTreeMap<String, JwtAuthority>,
    sequence: Option<u64>,
    refresh_hint: Option<Duration>,
}

impl Canonical {
    fn of(bundle: &Bundle) -> Self {
        Self {
            x509: authorities(bundle),
            jwt: bundle.jwt_authorities().clone(),
            sequence: bundle.sequence(),
            refresh_hint: bundle.refresh_hint(),
        }
    }
}

/// Parse `document` as `trust_domain`'s bundle with the crate's parser, refusing a
/// document any element of which had to be left out.
fn parse_strict(trust_domain: &TrustDomain, document: &[u8], what: &str) -> Bundle {
    let parsed = Bundle::parse(trust_domain, document).unwrap_or_else(|err| {
        panic!(
            "{what}: not a bundle of {trust_domain}: {err}\n{}",
            String::from_utf8_lossy(document)
        )
    });
    assert!(
        parsed.ignored.is_empty(),
        "{what}: elements left out: {:?}\n{}",
        parsed.ignored,
        String::from_utf8_lossy(document)
    );
    parsed.bundle
}

/// What the gateway stores for `trust_domain` (`GET /v1/bundles/<td>`), or `None`
/// while it holds nothing.
async fn stored(gw: &Gateway, trust_domain: &TrustDomain) -> Option<Bundle> {
    let answer = gw
        .admin()
        .call(Method::GET, &format!("/v1/bundles/{trust_domain}"), None)
        .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(ClientError::Api { status: 404, .. }) => return None,
        Err(err) => panic!("GET /v1/bundles/{trust_domain}: {err}"),
    };
    assert_eq!(
        answer.status,
        200,
        "GET /v1/bundles/{trust_domain}: {}",
        String::from_utf8_lossy(&answer.body)
    );
    Some(parse_strict(
        trust_domain,
        &answer.body,
        &format!("stored {trust_domain}"),
    ))
}

/// An EC P-256 public key as a JWT authority under `kid` (a fresh key each time).
fn jwt_authority(kid: &str) -> JwtAuthority {
    EcKey::generate().jwt_authority(kid)
}

/// The X.509 authority of a development PKI's SPIFFE CA, as a bundle holding it.
fn dev_bundle(pki: &DevPkiPaths, trust_domain: &TrustDomain) -> Bundle {
    let mut bundle = Bundle::new(trust_domain.clone());
    bundle.add_x509_authority(dev_pki::ca_authority(pki, trust_domain).unwrap());
    bundle
}

/// How go-spiffe authenticates a fetch.
enum Auth<'a> {
    /// `https_web` with these PEM roots (`None`: the system roots).
    Web(Option<&'a Path>),
    /// `https_spiffe` with this bundle file of the endpoint's trust domain and the
    /// expected endpoint ID.
    Spiffe(&'a Path, &'a SpiffeId),
}

/// `fedgw-peer fetch`: go-spiffe's `federation.FetchBundle`.
async fn go_fetch(trust_domain: &TrustDomain, url: &str, auth: &Auth<'_>) -> go_peer::Outcome {
    let mut args: Vec<String> = vec![
        "fetch".into(),
        "--trust-domain".into(),
        trust_domain.to_string(),
        "--url".into(),
        url.into(),
        "--timeout".into(),
        "10s".into(),
    ];
    match auth {
        Auth::Web(ca) => {
            args.extend(["--profile".into(), "https_web".into()]);
            if let Some(ca) = ca {
                args.extend(["--ca".into(), ca.display().to_string()]);
            }
        }
        Auth::Spiffe(bundle, id) => args.extend([
            "--profile".into(),
            "https_spiffe".into(),
            "--endpoint-bundle".into(),
            bundle.display().to_string(),
            "--endpoint-id".into(),
            id.to_string(),
        ]),
    }
    go_peer::run(&args).await
}

/// go-spiffe fetches `url` and gets exactly what `gw` stores for `trust_domain`.
async fn assert_go_fetches_stored(
    gw: &Gateway,
    trust_domain: &TrustDomain,
    url: &str,
    auth: &Auth<'_>,
) {
    let outcome = go_fetch(trust_domain, url, auth).await;
    assert!(
        outcome.success(),
        "go-spiffe could not fetch {trust_domain} from {url}: exit {:?}\n{}",
        outcome.code,
        outcome.stderr
    );
    let fetched = parse_strict(
        trust_domain,
        outcome.stdout.as_bytes(),
        &format!("go-spiffe's {trust_domain} from {url}"),
    );
    let stored = stored(gw, trust_domain)
        .await
        .unwrap_or_else(|| panic!("the gateway stores no bundle for {trust_domain}"));
    assert_eq!(
        Canonical::of(&fetched),
        Canonical::of(&stored),
        "go-spiffe's {trust_domain} from {url} differs from the stored bundle"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_spiffe_fetches_what_fedgw_stores_over_both_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let home = td("home.test");
    let peer_td = td("peer.test");
    let peer = GatewayBuilder::new(dir.path(), "peer.test").web();
    let mut builder = GatewayBuilder::new(dir.path(), "home.test").web().spiffe();
    builder.federate(&peer, Via::Web);
    // The local bundle carries a JWT authority too, so JWT keys cross as well.
    let mut local = dev_bundle(builder.pki(), &home);
    local.insert_jwt_authority(jwt_authority("home-jwt-1"));
    write_atomically(&builder.pki().bundle, local.to_json_pretty().as_bytes());
    let (peer, gw) = tokio::join!(peer.start(), builder.start());

    // Wait until the gateway holds both domains.
    let peer_bundle = peer.local_bundle().await.unwrap();
    gw.wait_relays(&peer_td, &peer_bundle).await;
    let stored_home = wait_for(DEADLINE, "home.test stored", || stored(&gw, &home)).await;
    assert_eq!(stored_home.jwt_authorities().len(), 1);

    let web_ca = gw.pki.web_ca_cert.clone();
    let local_file = gw.pki.bundle.clone();
    let web = Auth::Web(Some(&web_ca));
    let spiffe = Auth::Spiffe(&local_file, &gw.endpoint_id);
    let web_port = gw.web_port().unwrap();
    let spiffe_port = gw.spiffe_port().unwrap();
    for (path, trust_domain) in [("/", &home), ("/relay/peer.test", &peer_td)] {
        let web_url = format!("https://localhost:{web_port}{path}");
        assert_go_fetches_stored(&gw, trust_domain, &web_url, &web).await;
        let spiffe_url = format!("https://127.0.0.1:{spiffe_port}{path}");
        assert_go_fetches_stored(&gw, trust_domain, &spiffe_url, &spiffe).await;
    }

    // go-spiffe's checks are real: another endpoint ID, or Web PKI without the
    // development CA, is refused.
    let other_id: SpiffeId = "spiffe://home.test/not-the-endpoint".parse().unwrap();
    let url = format!("https://127.0.0.1:{spiffe_port}/");
    let refused = go_fetch(&home, &url, &Auth::Spiffe(&local_file, &other_id)).await;
    assert_eq!(
        refused.code,
        Some(1),
        "wrong endpoint ID accepted: {refused:?}"
    );
    let url = format!("https://localhost:{web_port}/");
    let refused = go_fetch(&home, &url, &Auth::Web(None)).await;
    assert_eq!(
        refused.code,
        Some(1),
        "an unknown web CA accepted: {refused:?}"
    );
    // A bundle that is not the endpoint's (another domain's CA) does not authenticate it.
    let foreign_bundle = peer.pki.bundle.clone();
    let foreign = go_fetch(
        &home,
        &format!("https://127.0.0.1:{spiffe_port}/"),
        &Auth::Spiffe(&foreign_bundle, &gw.endpoint_id),
    )
    .await;
    assert_eq!(
        foreign.code,
        Some(1),
        "an SVID verified with the wrong bundle: {foreign:?}"
    );
}

/// A go-spiffe bundle endpoint and the file it serves.
struct Served {
    peer: ServePeer,
    file: std::path::PathBuf,
}

impl Served {
    fn write(&self, bundle: &Bundle) {
        write_atomically(&self.file, bundle.to_json_pretty().as_bytes());
    }
}

/// Wait until `gw` stores for `trust_domain` exactly `expected` (canonically), and
/// relays it at `/relay/<td>`.
async fn wait_stores(gw: &Gateway, expected: &Bundle) {
    let trust_domain = expected.trust_domain();
    let want = Canonical::of(expected);
    let what = format!(
        "the gateway to store {trust_domain} as served (sequence {:?})",
        expected.sequence()
    );
    let mut last = None;
    let found = tokio::time::timeout(DEADLINE, async {
        loop {
            let now = stored(gw, trust_domain).await.map(|b| Canonical::of(&b));
            if now.as_ref() == Some(&want) {
                return;
            }
            last = now;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "timed out waiting for {what}\nwant {want:?}\nlast stored {last:?}"
    );
    let relayed = wait_for(DEADLINE, "the relayed bundle", || async {
        gw.relay(trust_domain)
            .await
            .ok()
            .filter(|b| Canonical::of(b) == want)
    })
    .await;
    assert_eq!(Canonical::of(&relayed), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fedgw_stores_what_go_spiffe_serves_over_both_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let now = OffsetDateTime::now_utc();
    let names = ["localhost".to_owned(), "127.0.0.1".to_owned()];

    // go-web.test: served over https_web with its development web certificate; the
    // served bundle holds a SPIFFE CA made for the test and a JWT key.
    let web_td = td("go-web.test");
    let web_id = SpiffeId::new(web_td.clone(), "/go-spiffe/endpoint").unwrap();
    let web_pki =
        dev_pki::ensure(&dir.path().join("go-web"), &web_td, &web_id, &names, now).unwrap();
    let web_ca = TestCa::spiffe("go-web.test");
    let mut web_bundle = Bundle::new(web_td.clone());
    web_bundle.add_x509_authority(web_ca.authority());
    web_bundle.insert_jwt_authority(jwt_authority("go-web-jwt-1"));
    web_bundle.set_sequence(Some(1));
    web_bundle.set_refresh_hint(Some(Duration::from_secs(1)));
    let web_file = dir.path().join("go-web.json");
    write_atomically(&web_file, web_bundle.to_json_pretty().as_bytes());
    let web_serve = ServePeer::start(
        [
            "serve",
            "--profile",
            "https_web",
            "--trust-domain",
            "go-web.test",
            "--bundle",
            web_file.to_str().unwrap(),
            "--cert",
            web_pki.web_cert.to_str().unwrap(),
            "--key",
            web_pki.web_key.to_str().unwrap(),
        ],
        &dir.path().join("go-web.log"),
    )
    .await;
    let web = Served {
        peer: web_serve,
        file: web_file,
    };

    // go-spiffe.test: served over https_spiffe with an X509-SVID of its development
    // CA; the served bundle holds that CA (so the endpoint stays verifiable) and a JWT
    // key. The gateway bootstraps with the development bundle.
    let spiffe_td = td("go-spiffe.test");
    let spiffe_id = SpiffeId::new(spiffe_td.clone(), "/go-spiffe/endpoint").unwrap();
    let spiffe_pki = dev_pki::ensure(
        &dir.path().join("go-spiffe"),
        &spiffe_td,
        &spiffe_id,
        &names,
        now,
    )
    .unwrap();
    let mut spiffe_bundle = dev_bundle(&spiffe_pki, &spiffe_td);
    spiffe_bundle.insert_jwt_authority(jwt_authority("go-spiffe-jwt-1"));
    spiffe_bundle.set_sequence(Some(7));
    spiffe_bundle.set_refresh_hint(Some(Duration::from_secs(2)));
    let spiffe_file = dir.path().join("go-spiffe.json");
    write_atomically(&spiffe_file, spiffe_bundle.to_json_pretty().as_bytes());
    let spiffe_serve = ServePeer::start(
        [
            "serve",
            "--profile",
            "https_spiffe",
            "--trust-domain",
            "go-spiffe.test",
            "--bundle",
            spiffe_file.to_str().unwrap(),
            "--svid",
            spiffe_pki.svid.to_str().unwrap(),
            "--svid-key",
            spiffe_pki.svid_key.to_str().unwrap(),
        ],
        &dir.path().join("go-spiffe.log"),
    )
    .await;
    let spiffe = Served {
        peer: spiffe_serve,
        file: spiffe_file,
    };

    let mut builder = GatewayBuilder::new(dir.path(), "home.test").web();
    builder
        .federate_web("go-web.test", &web.peer.url("/"), &web_pki.web_ca_cert)
        .federate_spiffe(
            "go-spiffe.test",
            &spiffe.peer.url("/"),
            &spiffe_id,
            &spiffe_pki.bundle,
        );
    let gw = builder.start().await;

    wait_stores(&gw, &web_bundle).await;
    wait_stores(&gw, &spiffe_bundle).await;

    // Rotation: a second CA and a new JWT key join, the old JWT key goes, the sequence
    // moves on; the gateway's next poll brings each served file in as written.
    let web_ca_2 = TestCa::spiffe("go-web.test");
    web_bundle.add_x509_authority(web_ca_2.authority());
    web_bundle.remove_jwt_authority("go-web-jwt-1");
    web_bundle.insert_jwt_authority(jwt_authority("go-web-jwt-2"));
    web_bundle.set_sequence(Some(2));
    web.write(&web_bundle);

    let spiffe_ca_2 = TestCa::spiffe("go-spiffe.test");
    spiffe_bundle.add_x509_authority(spiffe_ca_2.authority());
    spiffe_bundle.remove_jwt_authority("go-spiffe-jwt-1");
    spiffe_bundle.insert_jwt_authority(jwt_authority("go-spiffe-jwt-2"));
    spiffe_bundle.set_sequence(Some(8));
    spiffe.write(&spiffe_bundle);

    wait_stores(&gw, &web_bundle).await;
    wait_stores(&gw, &spiffe_bundle).await;
    for served in [&web, &spiffe] {
        let log = served.peer.log_text();
        assert_eq!(
            log.matches("loaded ").count(),
            2,
            "the peer at {} should have loaded its file twice:\n{log}",
            served.peer.addr()
        );
    }
}

/// The Workload API subcommands (`mtls-server`, `mtls-client`, `jwt-fetch`,
/// `jwt-validate`), which the SPIRE testbed uses, checked by the peer module's own Go
/// tests against two in-test Workload API servers of federated trust domains:
/// cross-domain mTLS accepted only for the exact SPIFFE IDs, a JWT-SVID of one domain
/// validated in the other with the federated JWT bundle and refused without it or for
/// another audience, usage errors exiting 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_peer_workload_api_subcommands_pass_their_go_tests() {
    // Builds the peer first, which fails naming Go 1.26 when Go is missing.
    go_peer::binary().await;
    let module = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/go");
    let mut command = tokio::process::Command::new("go");
    command
        .args(["test", "-count=1", "./..."])
        .current_dir(&module)
        .env("GOFLAGS", "-mod=readonly")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(600), command.output())
        .await
        .expect("go test ran past 10 minutes")
        .unwrap_or_else(|err| panic!("cannot run go (install Go 1.26): {err}"));
    assert!(
        output.status.success(),
        "go test in tests/peers/go failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
