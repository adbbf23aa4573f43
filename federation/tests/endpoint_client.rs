//! Conformance: the bundle endpoint client (FED-1, FED-7, WEB-1..4, SPF-1, SPF-2, SPF-6,
//! RDR-1..5, EXT-1..3, EXT-5, EXT-8, SEC-2, SEC-4; SPIFFE Federation §5, §7).
//!
//! Every test fetches from a real TLS server on 127.0.0.1 (`support/fixture.rs`) with
//! certificates made by rcgen at test time. Nothing sleeps and nothing asserts a
//! duration: the timeout tests use a fixture that never finishes its response.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

#[path = "support/ca.rs"]
mod ca;
#[path = "support/fixture.rs"]
mod fixture;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use rustls::CertificateError;
use rustls_pki_types::CertificateDer;
use spiffe_federation::bundle::LintKind;
use spiffe_federation::endpoint::client::{
    FetchError, FetchRequest, Fetched, Fetcher, PeerIdentity, ServerAuth, SpiffeEndpoint,
};
use spiffe_federation::endpoint::{
    EndpointUrl, FetchLimits, Profile, ProxySetting, UrlError, WebOptions,
};
use spiffe_federation::verify::VerifyError;
use spiffe_federation::{Bundle, SpiffeId, TrustDomain};
use time::OffsetDateTime;
use url::Host;

use ca::TestCa;
use fixture::{
    Fixture, Route, bundle_of, fixture, localhost_identity, svid_identity, web_ca, web_identity,
    web_identity_from, web_leaf_spec,
};

const BUNDLE_PATH: &str = "/bundle.json";
const ENDPOINT_ID: &str = "spiffe://example.org/bundle-endpoint";

fn td() -> TrustDomain {
    "example.org".parse().unwrap()
}

/// The document the fixtures serve: one X.509 authority of `example.org`, sequence 7.
fn served_document() -> Vec<u8> {
    let mut bundle = bundle_of("example.org", &TestCa::new("example.org"));
    bundle.set_sequence(Some(7));
    bundle.to_json()
}

fn url(text: &str) -> EndpointUrl {
    text.parse().unwrap()
}

fn short_limits() -> FetchLimits {
    FetchLimits {
        connect_timeout: Duration::from_secs(5),
        total_timeout: Duration::from_secs(20),
        ..FetchLimits::default()
    }
}

/// `https_web` trusting only `roots` (no system store: hermetic).
fn web_only(roots: &[&TestCa]) -> WebOptions {
    WebOptions {
        extra_roots: roots
            .iter()
            .map(|ca| CertificateDer::from(ca.der.clone()))
            .collect(),
        system_roots: false,
    }
}

async fn fetch_web(
    url_text: &str,
    options: &WebOptions,
    limits: &FetchLimits,
) -> Result<Fetched, FetchError> {
    Fetcher::new()
        .fetch(&FetchRequest {
            trust_domain: &td(),
            url: &url(url_text),
            auth: ServerAuth::Web(options),
            limits,
            proxy: &ProxySetting::Off,
        })
        .await
}

async fn fetch_spiffe(
    url_text: &str,
    endpoint_id: &str,
    bundle: &Bundle,
    limits: &FetchLimits,
) -> Result<Fetched, FetchError> {
    let endpoint_id: SpiffeId = endpoint_id.parse().unwrap();
    Fetcher::new()
        .fetch(&FetchRequest {
            trust_domain: &td(),
            url: &url(url_text),
            auth: ServerAuth::Spiffe(SpiffeEndpoint::new(&endpoint_id, bundle).unwrap()),
            limits,
            proxy: &ProxySetting::Off,
        })
        .await
}

/// A Web PKI fixture for `localhost`/`127.0.0.1` serving the bundle, and its CA.
async fn web_fixture() -> (TestCa, Fixture) {
    let ca = web_ca("trusted");
    let server = fixture(localhost_identity(&ca))
        .route(BUNDLE_PATH, Route::ok(served_document()))
        .start()
        .await;
    (ca, server)
}

/// An `https_spiffe` fixture presenting `id` signed by `ca`, serving the bundle.
async fn spiffe_fixture(ca: &TestCa, id: &str) -> Fixture {
    fixture(svid_identity(ca, id))
        .route(BUNDLE_PATH, Route::ok(served_document()))
        .start()
        .await
}

fn tls_cert_error(err: &FetchError) -> &CertificateError {
    match err {
        FetchError::Tls { source, .. } => match &**source {
            rustls::Error::InvalidCertificate(cert) => cert,
            other => panic!("expected a certificate error, got {other:?}"),
        },
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

fn svid_error(err: &FetchError) -> &VerifyError {
    match err {
        FetchError::Svid { source, .. } => source,
        other => panic!("expected an X509-SVID error, got {other:?}"),
    }
}

// ---- FED-1, FED-7, EXT-8 ---------------------------------------------------------

#[tokio::test]
async fn fed_1_https_web_fetch_ok() {
    let (ca, server) = web_fixture().await;
    let target = server.url_with_host("localhost", BUNDLE_PATH);
    let fetched = fetch_web(&target, &web_only(&[&ca]), &short_limits())
        .await
        .unwrap();
    assert_eq!(fetched.parsed.bundle.trust_domain(), &td());
    assert_eq!(fetched.parsed.bundle.sequence(), Some(7));
    assert_eq!(fetched.parsed.bundle.x509_authorities().len(), 1);
    // EXT-8: what the audit log needs.
    assert_eq!(fetched.final_url.as_str(), target);
    assert!(fetched.redirects.is_empty());
    assert_eq!(
        fetched.peer,
        PeerIdentity::Web(Host::Domain("localhost".into()))
    );
    assert_eq!(fetched.status, 200);
    // The fixture serves `Bundle::to_json` output, which round-trips byte for byte.
    assert_eq!(fetched.body_len, fetched.parsed.bundle.to_json().len());
    assert_eq!(server.hits(BUNDLE_PATH), 1);
}

#[tokio::test]
async fn fed_1_https_spiffe_fetch_ok() {
    let ca = TestCa::new("example.org");
    let server = spiffe_fixture(&ca, ENDPOINT_ID).await;
    let bundle = bundle_of("example.org", &ca);
    let fetched = fetch_spiffe(
        &server.url(BUNDLE_PATH),
        ENDPOINT_ID,
        &bundle,
        &short_limits(),
    )
    .await
    .unwrap();
    assert_eq!(fetched.parsed.bundle.sequence(), Some(7));
    assert_eq!(
        fetched.peer,
        PeerIdentity::Spiffe(ENDPOINT_ID.parse().unwrap())
    );
    assert_eq!(server.hits(BUNDLE_PATH), 1);
}

#[tokio::test]
async fn fed_7_bundle_stored_under_configured_domain() {
    // The URL and the document both point at `other.example`; the configured name wins.
    let other_ca = TestCa::new("other.example");
    let document = bundle_of("other.example", &other_ca).to_json();
    let ca = TestCa::new("example.org");
    let server = fixture(svid_identity(&ca, ENDPOINT_ID))
        .route("/other.example/bundle.json", Route::ok(document))
        .start()
        .await;
    let fetched = fetch_spiffe(
        &server.url_with_host("localhost", "/other.example/bundle.json"),
        ENDPOINT_ID,
        &bundle_of("example.org", &ca),
        &short_limits(),
    )
    .await
    .unwrap();
    assert_eq!(fetched.parsed.bundle.trust_domain(), &td());
    // The CA names another domain: kept, with a warning, never re-homed.
    assert!(
        fetched
            .parsed
            .lints
            .iter()
            .any(|lint| matches!(&lint.kind, LintKind::CaIdMismatch { trust_domain } if *trust_domain == td())),
        "{:?}",
        fetched.parsed.lints
    );
}

#[tokio::test]
async fn ext_8_fetch_reports_what_the_audit_log_needs() {
    let ca = TestCa::new("example.org");
    let target = spiffe_fixture(&ca, ENDPOINT_ID).await;
    let server = fixture(svid_identity(&ca, ENDPOINT_ID))
        .route("/a", Route::redirect(302, &target.url(BUNDLE_PATH)))
        .start()
        .await;
    let fetched = fetch_spiffe(
        &server.url("/a"),
        ENDPOINT_ID,
        &bundle_of("example.org", &ca),
        &short_limits(),
    )
    .await
    .unwrap();
    assert_eq!(fetched.final_url.as_str(), target.url(BUNDLE_PATH));
    assert_eq!(
        fetched
            .redirects
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [target.url(BUNDLE_PATH)]
    );
    assert_eq!(
        fetched.peer,
        PeerIdentity::Spiffe(ENDPOINT_ID.parse().unwrap())
    );
    assert_eq!(fetched.parsed.bundle.sequence(), Some(7));

    // A failure names the URL it happened at.
    let err = fetch_spiffe(
        &server.url("/missing"),
        ENDPOINT_ID,
        &bundle_of("example.org", &ca),
        &short_limits(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, FetchError::Status { url, status: 404 } if url.as_str() == server.url("/missing")),
        "{err:?}"
    );
}

// ---- WEB-1, SPF-1: URL rules -------------------------------------------------------

#[test]
fn web_1_http_scheme_rejected() {
    assert_eq!(
        EndpointUrl::parse("http://127.0.0.1:8443/bundle.json"),
        Err(UrlError::NotHttps {
            scheme: "http".into()
        })
    );
}

#[test]
fn web_1_userinfo_rejected() {
    for input in [
        "HTTPS://user:pw@example.org/bundle",
        "https://user@example.org/bundle",
        "https://:pw@example.org/bundle",
    ] {
        assert_eq!(
            EndpointUrl::parse(input),
            Err(UrlError::Userinfo),
            "{input}"
        );
    }
}

#[test]
fn web_1_missing_host_rejected() {
    assert_eq!(EndpointUrl::parse("https:///bundle"), Err(UrlError::NoHost));
    assert!(matches!(
        EndpointUrl::parse("/bundle.json"),
        Err(UrlError::Unparseable { .. })
    ));
}

#[test]
fn spf_1_same_url_rules_and_fragment_rejected() {
    assert_eq!(
        EndpointUrl::parse("https://example.org/bundle#x"),
        Err(UrlError::Fragment)
    );
    assert!(
        "spiffe://example.org/bundle"
            .parse::<EndpointUrl>()
            .is_err()
    );
}

#[tokio::test]
async fn web_1_uppercase_scheme_accepted() {
    let (ca, server) = web_fixture().await;
    let target = format!("HTTPS://localhost:{}{BUNDLE_PATH}", server.port());
    let fetched = fetch_web(&target, &web_only(&[&ca]), &short_limits())
        .await
        .unwrap();
    assert_eq!(fetched.final_url.scheme(), "https");
}

// ---- WEB-2: no parameter beyond the URL --------------------------------------------

#[tokio::test]
async fn web_2_default_options_use_system_roots() {
    assert_eq!(
        WebOptions::default(),
        WebOptions {
            extra_roots: vec![],
            system_roots: true
        }
    );
    let (ca, server) = web_fixture().await;
    // The fixture's CA stands in for the operating system's store.
    let fetcher = Fetcher::with_system_roots(vec![CertificateDer::from(ca.der.clone())]);
    let (trust_domain, limits) = (td(), short_limits());
    let target = url(&server.url_with_host("localhost", BUNDLE_PATH));
    let request = |options| FetchRequest {
        trust_domain: &trust_domain,
        url: &target,
        auth: ServerAuth::Web(options),
        limits: &limits,
        proxy: &ProxySetting::Off,
    };
    let defaults = WebOptions::default();
    fetcher.fetch(&request(&defaults)).await.unwrap();

    let no_roots = WebOptions {
        system_roots: false,
        ..WebOptions::default()
    };
    let err = fetcher.fetch(&request(&no_roots)).await.unwrap_err();
    assert!(matches!(err, FetchError::NoTrustAnchors { .. }), "{err:?}");
}

// ---- WEB-3: RFC 6125 server certificate checks --------------------------------------

#[tokio::test]
async fn web_3_untrusted_ca_rejected() {
    let (_ca, server) = web_fixture().await;
    let other = web_ca("other");
    let err = fetch_web(
        &server.url_with_host("localhost", BUNDLE_PATH),
        &web_only(&[&other]),
        &short_limits(),
    )
    .await
    .unwrap_err();
    assert_eq!(tls_cert_error(&err), &CertificateError::UnknownIssuer);
    assert_eq!(server.hits(BUNDLE_PATH), 0);
}

#[tokio::test]
async fn web_3_san_mismatch_rejected() {
    let ca = web_ca("trusted");
    let server = fixture(web_identity(&ca, &["other.example"], &[]))
        .route(BUNDLE_PATH, Route::ok(served_document()))
        .start()
        .await;
    let err = fetch_web(
        &server.url_with_host("localhost", BUNDLE_PATH),
        &web_only(&[&ca]),
        &short_limits(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            tls_cert_error(&err),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
        ),
        "{err:?}"
    );
    assert_eq!(server.hits(BUNDLE_PATH), 0);
}

#[tokio::test]
async fn web_3_common_name_without_san_rejected() {
    // Our documented choice: SAN only, no CN fallback.
    let ca = web_ca("trusted");
    let mut spec = web_leaf_spec(&[]);
    spec.common_name = "localhost".to_owned();
    let server = fixture(web_identity_from(&ca, &spec, &[]))
        .route(BUNDLE_PATH, Route::ok(served_document()))
        .start()
        .await;
    let err = fetch_web(
        &server.url_with_host("localhost", BUNDLE_PATH),
        &web_only(&[&ca]),
        &short_limits(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, FetchError::Tls { .. }), "{err:?}");
}

#[tokio::test]
async fn web_3_expired_server_cert_rejected() {
    let ca = web_ca("trusted");
    let now = OffsetDateTime::now_utc();
    let spec = web_leaf_spec(&["localhost"]).validity(
        now - time::Duration::days(10),
        now - time::Duration::days(1),
    );
    let server = fixture(web_identity_from(&ca, &spec, &[]))
        .route(BUNDLE_PATH, Route::ok(served_document()))
        .start()
        .await;
    let err = fetch_web(
        &server.url_with_host("localhost", BUNDLE_PATH),
        &web_only(&[&ca]),
        &short_limits(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            tls_cert_error(&err),
            CertificateError::Expired | CertificateError::ExpiredContext { .. }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn web_3_ip_url_with_ip_san_ok() {
    let ca = web_ca("trusted");
    let server = fixture(web_identity(&ca, &[], &[IpAddr::V4(Ipv4Addr::LOCALHOST)]))
        .route(BUNDLE_PATH, Route::ok(served_document()))
        .start()
        .await;
    let fetched = fetch_web(&server.url(BUNDLE_PATH), &web_only(&[&ca]), &short_limits())
        .await
        .unwrap();
    assert_eq!(
        fetched.peer,
        PeerIdentity::Web(Host::Ipv4(Ipv4Addr::LOCALHOST))
    );
}

#[tokio::test]
async fn web_3_ip_url_with_only_dns_san_rejected() {
    let ca = web_ca("trusted");
    let server = fixture(web_identity(&ca, &["localhost"], &[]))
        .route(BUNDLE_PATH, Route::ok(served_document()))
        .start()
        .await;
    let err = fetch_web(&server.url(BUNDLE_PATH), &web_only(&[&ca]), &short_limits())
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Tls { .. }), "{err:?}");
}

// ---- WEB-4: the request ------------------------------------------------------------

#[tokio::test]
async fn web_4_get_with_configured_path_and_query() {
    let ca = web_ca("trusted");
    let server = fixture(localhost_identity(&ca))
        .route("/v1/bundles/example.org", Route::ok(served_document()))
        .start()
        .await;
    let path_and_query = "/v1/bundles/example.org?format=spiffe&x=%2Fa%20b";
    fetch_web(
        &server.url_with_host("localhost", path_and_query),
        &web_only(&[&ca]),
        &short_limits(),
    )
    .await
    .unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].path_and_query, path_and_query);
}

// ---- SPF-2, SPF-6: https_spiffe authentication -------------------------------------

#[test]
fn spf_2_endpoint_bundle_is_required() {
    let profile = Profile::HttpsSpiffe {
        endpoint_id: ENDPOINT_ID.parse().unwrap(),
    };
    let err = ServerAuth::for_profile(&profile, |_| None).unwrap_err();
    assert!(
        matches!(err, FetchError::NoEndpointBundle { .. }),
        "{err:?}"
    );

    let wrong = bundle_of("other.example", &TestCa::new("other.example"));
    let err = ServerAuth::for_profile(&profile, |_| Some(&wrong)).unwrap_err();
    assert!(
        matches!(err, FetchError::EndpointBundleMismatch { .. }),
        "{err:?}"
    );

    let right = bundle_of("example.org", &TestCa::new("example.org"));
    let auth =
        ServerAuth::for_profile(&profile, |asked| (asked == &td()).then_some(&right)).unwrap();
    assert!(matches!(auth, ServerAuth::Spiffe(endpoint) if endpoint.bundle() == &right));
}

#[tokio::test]
async fn spf_6_exact_id_ok() {
    let ca = TestCa::new("example.org");
    let server = spiffe_fixture(&ca, ENDPOINT_ID).await;
    fetch_spiffe(
        &server.url(BUNDLE_PATH),
        ENDPOINT_ID,
        &bundle_of("example.org", &ca),
        &short_limits(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn spf_6_other_path_rejected() {
    let ca = TestCa::new("example.org");
    let server = spiffe_fixture(&ca, "spiffe://example.org/someone-else").await;
    let err = fetch_spiffe(
        &server.url(BUNDLE_PATH),
        ENDPOINT_ID,
        &bundle_of("example.org", &ca),
        &short_limits(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(svid_error(&err), VerifyError::UnexpectedId { .. }),
        "{err:?}"
    );
    assert_eq!(server.hits(BUNDLE_PATH), 0);
}

#[tokio::test]
async fn spf_6_other_trust_domain_rejected() {
    let other_ca = TestCa::new("other.example");
    let server = spiffe_fixture(&other_ca, "spiffe://other.example/bundle-endpoint").await;
    let err = fetch_spiffe(
        &server.url(BUNDLE_PATH),
        ENDPOINT_ID,
        &bundle_of("example.org", &TestCa::new("example.org")),
        &short_limits(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(svid_error(&err), VerifyError::TrustDomainMismatch { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn spf_6_chain_to_ca_not_in_bundle_rejected() {
    let rogue = TestCa::new("example.org");
    let server = spiffe_fixture(&rogue, ENDPOINT_ID).await;
    let err = fetch_spiffe(
        &server.url(BUNDLE_PATH),
        ENDPOINT_ID,
        &bundle_of("example.org", &TestCa::new("example.org")),
        &short_limits(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            svid_error(&err),
            VerifyError::UnknownIssuer { .. } | VerifyError::BadSignature { .. }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn spf_6_expired_svid_rejected() {
    let ca = TestCa::new("example.org");
    let now = OffsetDateTime::now_utc();
    let spec = ca::CertSpec::svid(ENDPOINT_ID)
        .validity(now - time::Duration::days(2), now - time::Duration::days(1));
    let server = fixture(fixture::ServerIdentity::new(&ca.issue(&spec), &[]))
        .route(BUNDLE_PATH, Route::ok(served_document()))
        .start()
        .await;
    let err = fetch_spiffe(
        &server.url(BUNDLE_PATH),
        ENDPOINT_ID,
        &bundle_of("example.org", &ca),
        &short_limits(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(svid_error(&err), VerifyError::Expired { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn spf_6_dns_mismatch_ok() {
    // A correct SVID whose DNS SAN names another host: no hostname check.
    let ca = TestCa::new("example.org");
    let mut spec = ca::CertSpec::svid(ENDPOINT_ID);
    spec.dns = vec!["not-this-host.example".to_owned()];
    let server = fixture(fixture::ServerIdentity::new(&ca.issue(&spec), &[]))
        .route(BUNDLE_PATH, Route::ok(served_document()))
        .start()
        .await;
    fetch_spiffe(
        &server.url_with_host("localhost", BUNDLE_PATH),
        ENDPOINT_ID,
        &bundle_of("example.org", &ca),
        &short_limits(),
    )
    .await
    .unwrap();
}

// ---- SEC-2: no fallback between profiles -------------------------------------------

#[tokio::test]
async fn sec_2_spiffe_failure_never_tries_web() {
    // The server has a Web PKI certificate that would pass https_web.
    let (_web_root, server) = web_fixture().await;
    let ca = TestCa::new("example.org");
    let err = fetch_spiffe(
        &server.url_with_host("localhost", BUNDLE_PATH),
        ENDPOINT_ID,
        &bundle_of("example.org", &ca),
        &short_limits(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, FetchError::Svid { .. }), "{err:?}");
    assert_eq!(server.accepted(), 1, "exactly one connection attempt");
    assert_eq!(server.handshakes(), 0);
    assert_eq!(server.hits(BUNDLE_PATH), 0);
}

#[tokio::test]
async fn sec_2_web_failure_never_tries_spiffe() {
    // The server has an SVID that would pass https_spiffe.
    let ca = TestCa::new("example.org");
    let server = spiffe_fixture(&ca, ENDPOINT_ID).await;
    let err = fetch_web(&server.url(BUNDLE_PATH), &web_only(&[&ca]), &short_limits())
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Tls { .. }), "{err:?}");
    assert_eq!(server.accepted(), 1, "exactly one connection attempt");
    assert_eq!(server.hits(BUNDLE_PATH), 0);
}

// ---- RDR-*, SEC-4: redirects -------------------------------------------------------

#[tokio::test]
async fn rdr_1_302_and_307_followed() {
    let ca = web_ca("trusted");
    let server = fixture(localhost_identity(&ca))
        .route("/a", Route::redirect(302, "/b"))
        .route("/b", Route::redirect(307, BUNDLE_PATH))
        .route(BUNDLE_PATH, Route::ok(served_document()))
        .start()
        .await;
    let fetched = fetch_web(
        &server.url_with_host("localhost", "/a"),
        &web_only(&[&ca]),
        &short_limits(),
    )
    .await
    .unwrap();
    let hops: Vec<String> = fetched.redirects.iter().map(ToString::to_string).collect();
    assert_eq!(
        hops,
        [
            server.url_with_host("localhost", "/b"),
            server.url_with_host("localhost", BUNDLE_PATH)
        ]
    );
    assert_eq!(
        fetched.final_url.as_str(),
        server.url_with_host("localhost", BUNDLE_PATH)
    );
    assert_eq!(
        (
            server.hits("/a"),
            server.hits("/b"),
            server.hits(BUNDLE_PATH)
        ),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn rdr_2_redirect_to_http_refused() {
    let (ca, server) = web_fixture().await;
    let plain = format!("http://localhost:{}{BUNDLE_PATH}", server.port());
    let server = fixture(localhost_identity(&ca))
        .route("/a", Route::redirect(302, &plain))
        .start()
        .await;
    let err = fetch_web(
        &server.url_with_host("localhost", "/a"),
        &web_only(&[&ca]),
        &short_limits(),
    )
    .await
    .unwrap_err();
    match err {
        FetchError::InvalidRedirect {
            location, reason, ..
        } => {
            assert_eq!(&*location, plain);
            assert_eq!(
                *reason,
                UrlError::NotHttps {
                    scheme: "http".into()
                }
            );
        }
        other => panic!("expected InvalidRedirect, got {other:?}"),
    }
}

#[tokio::test]
async fn rdr_2_redirect_with_userinfo_refused() {
    let ca = web_ca("trusted");
    let server = fixture(localhost_identity(&ca))
        .route("/a", Route::redirect(307, "https://user:pw@localhost/b"))
        .start()
        .await;
    let err = fetch_web(
        &server.url_with_host("localhost", "/a"),
        &web_only(&[&ca]),
        &short_limits(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, FetchError::InvalidRedirect { reason, .. } if **reason == UrlError::Userinfo),
        "{err:?}"
    );
}

#[tokio::test]
async fn rdr_2_redirect_to_untrusted_host_refused() {
    let untrusted = web_ca("untrusted");
    let target = fixture(localhost_identity(&untrusted))
        .route(BUNDLE_PATH, Route::ok(served_document()))
        .start()
        .await;
    let ca = web_ca("trusted");
    let target_url = target.url_with_host("localhost", BUNDLE_PATH);
    let server = fixture(localhost_identity(&ca))
        .route("/a", Route::redirect(302, &target_url))
        .start()
        .await;
    let err = fetch_web(
        &server.url_with_host("localhost", "/a"),
        &web_only(&[&ca]),
        &short_limits(),
    )
    .await
    .unwrap_err();
    assert_eq!(tls_cert_error(&err), &CertificateError::UnknownIssuer);
    assert!(matches!(&err, FetchError::Tls { url, .. } if url.as_str() == target_url));
    assert_eq!(target.accepted(), 1);
    assert_eq!(target.hits(BUNDLE_PATH), 0);
}

#[tokio::test]
async fn rdr_3_redirect_to_other_spiffe_id_refused() {
    let ca = TestCa::new("example.org");
    let target = spiffe_fixture(&ca, "spiffe://example.org/someone-else").await;
    let target_url = target.url(BUNDLE_PATH);
    let server = fixture(svid_identity(&ca, ENDPOINT_ID))
        .route("/a", Route::redirect(307, &target_url))
        .start()
        .await;
    let err = fetch_spiffe(
        &server.url("/a"),
        ENDPOINT_ID,
        &bundle_of("example.org", &ca),
        &short_limits(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(svid_error(&err), VerifyError::UnexpectedId { .. }),
        "{err:?}"
    );
    assert!(matches!(&err, FetchError::Svid { url, .. } if url.as_str() == target_url));
    assert_eq!(target.hits(BUNDLE_PATH), 0);
}

#[tokio::test]
async fn rdr_3_same_id_on_other_host_ok() {
    let ca = TestCa::new("example.org");
    let target = spiffe_fixture(&ca, ENDPOINT_ID).await;
    let server = fixture(svid_identity(&ca, ENDPOINT_ID))
        .route("/a", Route::redirect(302, &target.url(BUNDLE_PATH)))
        .start()
        .await;
    let fetched = fetch_spiffe(
        &server.url_with_host("localhost", "/a"),
        ENDPOINT_ID,
        &bundle_of("example.org", &ca),
        &short_limits(),
    )
    .await
    .unwrap();
    assert_eq!(fetched.final_url.as_str(), target.url(BUNDLE_PATH));
    assert_eq!(target.hits(BUNDLE_PATH), 1);
}

#[tokio::test]
async fn rdr_4_permanent_redirect_not_remembered() {
    let ca = web_ca("trusted");
    let server = fixture(localhost_identity(&ca))
        .route("/old", Route::redirect(301, "/older"))
        .route("/older", Route::redirect(308, BUNDLE_PATH))
        .route(BUNDLE_PATH, Route::ok(served_document()))
        .start()
        .await;
    let fetcher = Fetcher::new();
    let options = web_only(&[&ca]);
    let configured = url(&server.url_with_host("localhost", "/old"));
    for round in 1..=2 {
        let fetched = fetcher
            .fetch(&FetchRequest {
                trust_domain: &td(),
                url: &configured,
                auth: ServerAuth::Web(&options),
                limits: &short_limits(),
                proxy: &ProxySetting::Off,
            })
            .await
            .unwrap();
        assert_eq!(fetched.redirects.len(), 2);
        // RDR-4/RDR-5: every fetch starts at the configured URL.
        assert_eq!(server.hits("/old"), round);
        assert_eq!(server.hits(BUNDLE_PATH), round);
    }
}

#[tokio::test]
async fn rdr_5_every_redirect_status_is_temporary() {
    let ca = web_ca("trusted");
    let mut builder =
        fixture(localhost_identity(&ca)).route(BUNDLE_PATH, Route::ok(served_document()));
    for status in [301, 302, 303, 307, 308] {
        builder = builder.route(&format!("/{status}"), Route::redirect(status, BUNDLE_PATH));
    }
    let server = builder.start().await;
    let fetcher = Fetcher::new();
    let (options, limits) = (web_only(&[&ca]), short_limits());
    for status in [301, 302, 303, 307, 308] {
        let path = format!("/{status}");
        let configured = url(&server.url_with_host("localhost", &path));
        for _ in 0..2 {
            let fetched = fetcher
                .fetch(&FetchRequest {
                    trust_domain: &td(),
                    url: &configured,
                    auth: ServerAuth::Web(&options),
                    limits: &limits,
                    proxy: &ProxySetting::Off,
                })
                .await
                .unwrap();
            assert_eq!(fetched.redirects.len(), 1, "{status}");
        }
        assert_eq!(
            server.hits(&path),
            2,
            "{status}: second fetch went elsewhere"
        );
    }
    assert_eq!(server.hits(BUNDLE_PATH), 10);
}

#[tokio::test]
async fn rdr_too_many_hops_refused() {
    let ca = web_ca("trusted");
    let server = fixture(localhost_identity(&ca))
        .route("/r0", Route::redirect(302, "/r1"))
        .route("/r1", Route::redirect(302, "/r2"))
        .route("/r2", Route::redirect(302, "/r3"))
        .route("/r3", Route::redirect(302, BUNDLE_PATH))
        .route(BUNDLE_PATH, Route::ok(served_document()))
        .start()
        .await;
    let options = web_only(&[&ca]);
    let limits = FetchLimits {
        max_redirects: 3,
        ..short_limits()
    };
    // Three hops: within the limit.
    fetch_web(&server.url_with_host("localhost", "/r1"), &options, &limits)
        .await
        .unwrap();
    // Four hops: refused after three.
    let err = fetch_web(&server.url_with_host("localhost", "/r0"), &options, &limits)
        .await
        .unwrap_err();
    match err {
        FetchError::TooManyRedirects { limit, hops, .. } => {
            assert_eq!(limit, 3);
            assert_eq!(hops.len(), 3);
        }
        other => panic!("expected TooManyRedirects, got {other:?}"),
    }
    assert_eq!(server.hits(BUNDLE_PATH), 1);
}

#[tokio::test]
async fn sec_4_redirects_disabled() {
    let ca = web_ca("trusted");
    let server = fixture(localhost_identity(&ca))
        .route("/a", Route::redirect(302, BUNDLE_PATH))
        .route(BUNDLE_PATH, Route::ok(served_document()))
        .start()
        .await;
    let limits = FetchLimits {
        follow_redirects: false,
        ..short_limits()
    };
    let err = fetch_web(
        &server.url_with_host("localhost", "/a"),
        &web_only(&[&ca]),
        &limits,
    )
    .await
    .unwrap_err();
    match err {
        FetchError::RedirectNotAllowed {
            status, location, ..
        } => {
            assert_eq!(status, 302);
            assert_eq!(location, BUNDLE_PATH);
        }
        other => panic!("expected RedirectNotAllowed, got {other:?}"),
    }
    assert_eq!(server.hits(BUNDLE_PATH), 0);
}

// ---- EXT-1, EXT-2, EXT-3: status, size, time -----------------------------------------

#[tokio::test]
async fn ext_1_404_with_bundle_body_is_failure() {
    let ca = web_ca("trusted");
    let server = fixture(localhost_identity(&ca))
        .route(
            BUNDLE_PATH,
            Route::status(404, served_document()).header("content-type", "application/json"),
        )
        .route("/partial", Route::status(203, served_document()))
        .start()
        .await;
    for (path, expected) in [(BUNDLE_PATH, 404), ("/partial", 203)] {
        let err = fetch_web(
            &server.url_with_host("localhost", path),
            &web_only(&[&ca]),
            &short_limits(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, FetchError::Status { status, .. } if status == expected),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn ext_1_unparseable_200_is_failure() {
    let ca = web_ca("trusted");
    let server = fixture(localhost_identity(&ca))
        .route(BUNDLE_PATH, Route::ok("<html>not a bundle</html>"))
        .start()
        .await;
    let err = fetch_web(
        &server.url_with_host("localhost", BUNDLE_PATH),
        &web_only(&[&ca]),
        &short_limits(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, FetchError::Bundle { trust_domain, .. } if *trust_domain == td()),
        "{err:?}"
    );
}

#[tokio::test]
async fn ext_2_oversized_body_refused() {
    // 2 MiB sent in chunks without a declared length: refused while streaming.
    let ca = web_ca("trusted");
    let server = fixture(localhost_identity(&ca))
        .route(
            BUNDLE_PATH,
            Route::ok(vec![b' '; 2 * 1024 * 1024]).chunked(16 * 1024),
        )
        .start()
        .await;
    let err = fetch_web(
        &server.url_with_host("localhost", BUNDLE_PATH),
        &web_only(&[&ca]),
        &short_limits(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::BodyTooLarge {
                limit: 1_048_576,
                declared: None,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn ext_2_declared_length_over_limit_refused() {
    let ca = web_ca("trusted");
    let document = served_document();
    let server = fixture(localhost_identity(&ca))
        .route(BUNDLE_PATH, Route::ok(document.clone()))
        .route("/chunked", Route::ok(document.clone()).chunked(7))
        .start()
        .await;
    let at_limit = FetchLimits {
        max_body_bytes: document.len(),
        ..short_limits()
    };
    let below = FetchLimits {
        max_body_bytes: document.len() - 1,
        ..short_limits()
    };
    let options = web_only(&[&ca]);
    for path in [BUNDLE_PATH, "/chunked"] {
        let target = server.url_with_host("localhost", path);
        fetch_web(&target, &options, &at_limit).await.unwrap();
        let err = fetch_web(&target, &options, &below).await.unwrap_err();
        assert!(
            matches!(err, FetchError::BodyTooLarge { limit, .. } if limit == document.len() - 1),
            "{path}: {err:?}"
        );
    }
}

#[tokio::test]
async fn ext_3_stall_after_headers_times_out() {
    let ca = web_ca("trusted");
    let server = fixture(localhost_identity(&ca))
        .route(
            BUNDLE_PATH,
            Route::ok(&b"{\"keys\":"[..]).stall_after_headers(),
        )
        .route("/silent", Route::ok(Vec::new()).stall_after_headers())
        .start()
        .await;
    let limits = FetchLimits {
        total_timeout: Duration::from_millis(300),
        ..short_limits()
    };
    for path in [BUNDLE_PATH, "/silent"] {
        let err = fetch_web(
            &server.url_with_host("localhost", path),
            &web_only(&[&ca]),
            &limits,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, FetchError::Timeout { .. }), "{path}: {err:?}");
        assert_eq!(
            server.hits(path),
            1,
            "the request was answered with headers"
        );
    }
}

// ---- EXT-5: proxy -------------------------------------------------------------------

#[tokio::test]
async fn ext_5_proxy_off_and_explicit() {
    let (ca, server) = web_fixture().await;
    let options = web_only(&[&ca]);
    let target = url(&server.url_with_host("localhost", BUNDLE_PATH));
    let (trust_domain, limits) = (td(), short_limits());
    let request = |proxy| FetchRequest {
        trust_domain: &trust_domain,
        url: &target,
        auth: ServerAuth::Web(&options),
        limits: &limits,
        proxy,
    };
    let fetcher = Fetcher::new();
    fetcher.fetch(&request(&ProxySetting::Off)).await.unwrap();
    assert_eq!(server.accepted(), 1);

    // A "proxy" that reads the tunnel request and hangs up: the fetch must go there
    // (not to the server) and fail to connect.
    let proxy_listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let proxy_port = proxy_listener.local_addr().unwrap().port();
    let proxy_seen = tokio::spawn(async move {
        let (mut conn, _) = proxy_listener.accept().await.unwrap();
        let mut buf = vec![0; 4096];
        let n = tokio::io::AsyncReadExt::read(&mut conn, &mut buf)
            .await
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    let proxy = ProxySetting::Url(format!("http://127.0.0.1:{proxy_port}").parse().unwrap());
    let err = fetcher.fetch(&request(&proxy)).await.unwrap_err();
    assert!(matches!(err, FetchError::Connect { .. }), "{err:?}");
    let seen = proxy_seen.await.unwrap();
    assert!(
        seen.starts_with(&format!("CONNECT localhost:{} ", server.port())),
        "{seen:?}"
    );

    // A proxy on a port where nothing listens.
    let closed = {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.local_addr().unwrap().port()
    };
    let proxy = ProxySetting::Url(format!("http://127.0.0.1:{closed}").parse().unwrap());
    let err = fetcher.fetch(&request(&proxy)).await.unwrap_err();
    assert!(matches!(err, FetchError::Connect { .. }), "{err:?}");
    assert_eq!(server.accepted(), 1, "the proxy setting bypassed the proxy");
}

/// A failed connection says why (the DNS or socket error at the end of the HTTP
/// client's cause chain), not only "error sending request for url".
#[tokio::test]
async fn connect_failures_name_their_cause() {
    let closed = {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.local_addr().unwrap().port()
    };
    let options = WebOptions::default();
    let (trust_domain, limits) = (td(), short_limits());
    let fetcher = Fetcher::new();
    for (target, expected) in [
        (format!("https://127.0.0.1:{closed}/"), "refused"),
        // RFC 6761: .invalid never resolves.
        ("https://fedgw-test.invalid/".to_owned(), "dns"),
    ] {
        let target = url(&target);
        let request = FetchRequest {
            trust_domain: &trust_domain,
            url: &target,
            auth: ServerAuth::Web(&options),
            limits: &limits,
            proxy: &ProxySetting::Off,
        };
        let err = fetcher.fetch(&request).await.unwrap_err();
        assert!(matches!(err, FetchError::Connect { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.to_lowercase().contains(expected),
            "{target:?}: {message}"
        );
        assert!(!message.contains("error sending request"), "{message}");
    }
}
