//! Conformance: authenticating TLS clients by X509-SVID with `SpiffeClientVerifier`
//! (SEC-3 for the admin API's mTLS; DIST-3: only the bundle of the client ID's own
//! trust domain may vouch for it; X509-SVID §5).
//!
//! The verifier's checks are exercised directly (`verify_chain` and rustls's
//! `verify_client_cert`), then in real TLS 1.2 and 1.3 handshakes on loopback
//! (tokio-rustls on both sides).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

#[path = "support/ca.rs"]
mod ca;

use std::collections::BTreeMap;
use std::sync::Arc;

use rustls::crypto::aws_lc_rs;
use rustls::server::danger::ClientCertVerifier as _;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use spiffe_federation::bundle::X509Authority;
use spiffe_federation::endpoint::client::SpiffeServerVerifier;
use spiffe_federation::verify::VerifyError;
use spiffe_federation::{
    Bundle, ClientAuthError, SpiffeClientVerifier, SpiffeId, TrustDomain, client_auth_error,
    peer_spiffe_id,
};
use time::{Duration, OffsetDateTime};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use ca::{CertSpec, Issued, TestCa};

const TD: &str = "td.example";
const OTHER_TD: &str = "other.example";
const ALLOWED: &str = "spiffe://td.example/ops";
const SERVER_ID: &str = "spiffe://td.example/admin";

fn id(text: &str) -> SpiffeId {
    text.parse().unwrap()
}

fn bundle(td: &str, ca: &TestCa) -> Bundle {
    let mut bundle = Bundle::new(td.parse().unwrap());
    bundle.add_x509_authority(X509Authority::from_der(ca.der.clone()).unwrap());
    bundle
}

fn chain(issued: &Issued) -> Vec<CertificateDer<'static>> {
    vec![issued.cert_der()]
}

/// Two trust domains, each with its own CA; the lookup knows both.
struct Domains {
    td: TestCa,
    other: TestCa,
    bundles: Arc<BTreeMap<TrustDomain, Arc<Bundle>>>,
}

impl Domains {
    fn new() -> Self {
        let td = TestCa::new(TD);
        let other = TestCa::new(OTHER_TD);
        let bundles = BTreeMap::from([
            (TD.parse().unwrap(), Arc::new(bundle(TD, &td))),
            (
                OTHER_TD.parse().unwrap(),
                Arc::new(bundle(OTHER_TD, &other)),
            ),
        ]);
        Self {
            td,
            other,
            bundles: Arc::new(bundles),
        }
    }

    /// A verifier admitting `allowed` only (or any verified ID when `None`).
    fn verifier(
        &self,
        allowed: Option<&str>,
    ) -> SpiffeClientVerifier<
        impl Fn(&TrustDomain) -> Option<Arc<Bundle>> + Send + Sync + use<>,
        impl Fn(&SpiffeId) -> bool + Send + Sync + use<>,
    > {
        let bundles = Arc::clone(&self.bundles);
        let allowed = allowed.map(id);
        SpiffeClientVerifier::new(
            move |td: &TrustDomain| bundles.get(td).cloned(),
            move |found: &SpiffeId| allowed.as_ref().is_none_or(|a| a == found),
            &aws_lc_rs::default_provider(),
        )
    }
}

fn now() -> UnixTime {
    UnixTime::now()
}

// ---- the checks, without TLS --------------------------------------------------------

#[test]
fn sec_3_client_svid_of_the_ids_domain_is_accepted() {
    let domains = Domains::new();
    let verifier = domains.verifier(Some(ALLOWED));
    let svid = domains.td.svid(ALLOWED);
    assert_eq!(verifier.verify_chain(&chain(&svid), now()), Ok(id(ALLOWED)));
    // The same through the rustls trait, as a handshake calls it.
    assert!(
        verifier
            .verify_client_cert(&svid.cert_der(), &[], now())
            .is_ok()
    );
    assert!(verifier.client_auth_mandatory());
    assert!(verifier.root_hint_subjects().is_empty());
    // A client of the other (federated) domain verifies under its own bundle.
    let any = domains.verifier(None);
    let foreign = domains.other.svid("spiffe://other.example/app");
    assert_eq!(
        any.verify_chain(&chain(&foreign), now()),
        Ok(id("spiffe://other.example/app"))
    );
}

#[test]
fn dist_3_client_svid_signed_by_another_domains_ca_is_refused() {
    let domains = Domains::new();
    let verifier = domains.verifier(None);
    // other.example's CA signs an SVID claiming td.example's ID: only td.example's
    // bundle may vouch for it, although the lookup also knows other.example.
    let forged = domains.other.svid(ALLOWED);
    assert!(matches!(
        verifier.verify_chain(&chain(&forged), now()),
        Err(ClientAuthError::Svid(VerifyError::UnknownIssuer { ref trust_domain }))
            if trust_domain.as_str() == TD
    ));
    // An impostor CA with the very same name as td.example's: a bad signature.
    let impostor = TestCa::new(TD);
    let forged = impostor.svid(ALLOWED);
    assert!(matches!(
        verifier.verify_chain(&chain(&forged), now()),
        Err(ClientAuthError::Svid(VerifyError::BadSignature { .. }))
    ));
    let err = verifier
        .verify_client_cert(&forged.cert_der(), &[], now())
        .unwrap_err();
    assert!(matches!(
        client_auth_error(&err),
        Some(ClientAuthError::Svid(VerifyError::BadSignature { .. }))
    ));
}

#[test]
fn sec_3_client_id_of_an_unknown_trust_domain_is_refused() {
    let domains = Domains::new();
    let stranger = TestCa::new("stranger.example");
    let svid = stranger.svid("spiffe://stranger.example/app");
    assert!(matches!(
        domains.verifier(None).verify_chain(&chain(&svid), now()),
        Err(ClientAuthError::UnknownTrustDomain { ref id })
            if id.to_string() == "spiffe://stranger.example/app"
    ));
}

#[test]
fn sec_3_client_certificate_that_is_not_an_svid_is_refused() {
    let domains = Domains::new();
    let verifier = domains.verifier(None);
    let web = domains
        .td
        .issue(&CertSpec::web_server(&["client.td.example"]));
    assert_eq!(
        verifier.verify_chain(&chain(&web), now()),
        Err(ClientAuthError::Svid(VerifyError::UriSanCount { found: 0 }))
    );
    let not_spiffe = domains
        .td
        .issue(&CertSpec::svid(ALLOWED).uris(&["https://td.example/ops"]));
    assert!(matches!(
        verifier.verify_chain(&chain(&not_spiffe), now()),
        Err(ClientAuthError::Svid(VerifyError::NotSpiffeScheme { .. }))
    ));
    let garbage = CertificateDer::from(b"not a certificate".to_vec());
    assert!(matches!(
        verifier.verify_chain(&[garbage], now()),
        Err(ClientAuthError::Svid(VerifyError::Malformed { .. }))
    ));
}

#[test]
fn sec_3_expired_client_svid_is_refused() {
    let domains = Domains::new();
    let now_utc = OffsetDateTime::now_utc();
    let expired = domains.td.issue(
        &CertSpec::svid(ALLOWED).validity(now_utc - Duration::days(2), now_utc - Duration::days(1)),
    );
    assert!(matches!(
        domains
            .verifier(Some(ALLOWED))
            .verify_chain(&chain(&expired), now()),
        Err(ClientAuthError::Svid(VerifyError::Expired { .. }))
    ));
}

#[test]
fn sec_3_verified_client_id_that_is_not_authorized_is_refused() {
    let domains = Domains::new();
    let verifier = domains.verifier(Some(ALLOWED));
    let svid = domains.td.svid("spiffe://td.example/intruder");
    assert_eq!(
        verifier.verify_chain(&chain(&svid), now()),
        Err(ClientAuthError::NotAuthorized {
            id: id("spiffe://td.example/intruder")
        })
    );
    let err = verifier
        .verify_client_cert(&svid.cert_der(), &[], now())
        .unwrap_err();
    assert!(matches!(
        client_auth_error(&err),
        Some(ClientAuthError::NotAuthorized { .. })
    ));
}

#[test]
fn sec_3_peer_id_is_read_from_the_leaf() {
    let domains = Domains::new();
    let svid = domains.td.svid(ALLOWED);
    assert_eq!(peer_spiffe_id(&chain(&svid)), Ok(id(ALLOWED)));
    assert_eq!(peer_spiffe_id(&[]), Err(VerifyError::EmptyChain));
}

// ---- real handshakes ------------------------------------------------------------------

/// What the server saw of one handshake: the client's verified ID, or the refusal.
type Seen = Result<Option<SpiffeId>, String>;

/// Accept one connection with `verifier`; report what the server saw.
async fn serve_once(
    domains: &Domains,
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
) -> (u16, tokio::task::JoinHandle<Seen>) {
    let server = domains.td.svid(SERVER_ID);
    let config = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain(&server), server.key_der())
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        match TlsAcceptor::from(Arc::new(config)).accept(tcp).await {
            Ok(mut tls) => {
                let peer = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(|certs| peer_spiffe_id(certs).unwrap());
                tls.write_all(b"hello").await.unwrap();
                tls.shutdown().await.unwrap();
                Ok(peer)
            }
            Err(err) => {
                let tls_error = err
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    .unwrap_or_else(|| panic!("not a TLS error: {err}"));
                Err(client_auth_error(tls_error)
                    .map_or_else(|| tls_error.to_string(), ToString::to_string))
            }
        }
    });
    (port, task)
}

/// Connect with `identity` (or none) over `version`, authenticating the server by its
/// SVID; `Ok` once the server's greeting arrives.
async fn connect(
    domains: &Domains,
    port: u16,
    identity: Option<&Issued>,
    version: &'static rustls::SupportedProtocolVersion,
) -> Result<(), std::io::Error> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let server_verifier = SpiffeServerVerifier::new(
        id(SERVER_ID),
        Bundle::clone(&domains.bundles[&TD.parse::<TrustDomain>().unwrap()]),
        provider.clone(),
    );
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(server_verifier));
    let config = match identity {
        Some(svid) => builder
            .with_client_auth_cert(chain(svid), svid.key_der())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from("admin.invalid").unwrap();
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    let mut greeting = Vec::new();
    tls.read_to_end(&mut greeting).await?;
    assert_eq!(greeting, b"hello");
    Ok(())
}

#[tokio::test]
async fn sec_3_mtls_handshake_admits_only_verified_authorized_svids() {
    let domains = Domains::new();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let allowed = domains.td.svid(ALLOWED);
        let (port, seen) = serve_once(&domains, Arc::new(domains.verifier(Some(ALLOWED)))).await;
        connect(&domains, port, Some(&allowed), version)
            .await
            .unwrap();
        assert_eq!(seen.await.unwrap(), Ok(Some(id(ALLOWED))), "{version:?}");

        let intruder = domains.td.svid("spiffe://td.example/intruder");
        let (port, seen) = serve_once(&domains, Arc::new(domains.verifier(Some(ALLOWED)))).await;
        assert!(
            connect(&domains, port, Some(&intruder), version)
                .await
                .is_err()
        );
        let refusal = seen.await.unwrap().unwrap_err();
        assert!(
            refusal.contains("spiffe://td.example/intruder"),
            "{refusal}"
        );

        let forged = domains.other.svid(ALLOWED);
        let (port, seen) = serve_once(&domains, Arc::new(domains.verifier(Some(ALLOWED)))).await;
        assert!(
            connect(&domains, port, Some(&forged), version)
                .await
                .is_err()
        );
        let refusal = seen.await.unwrap().unwrap_err();
        assert!(refusal.contains("not a valid X509-SVID"), "{refusal}");
    }
}

#[tokio::test]
async fn sec_3_client_certificate_is_mandatory_unless_allowed_unauthenticated() {
    let domains = Domains::new();
    let version = &rustls::version::TLS13;
    let (port, seen) = serve_once(&domains, Arc::new(domains.verifier(None))).await;
    assert!(connect(&domains, port, None, version).await.is_err());
    assert!(
        seen.await.unwrap().is_err(),
        "no certificate, handshake refused"
    );

    let optional = Arc::new(domains.verifier(None).allow_unauthenticated());
    assert!(!optional.client_auth_mandatory());
    let (port, seen) = serve_once(&domains, optional.clone()).await;
    connect(&domains, port, None, version).await.unwrap();
    assert_eq!(seen.await.unwrap(), Ok(None));

    // Optional does not mean unchecked: a bad certificate still fails.
    let forged = domains.other.svid(ALLOWED);
    let (port, seen) = serve_once(&domains, optional).await;
    assert!(
        connect(&domains, port, Some(&forged), version)
            .await
            .is_err()
    );
    assert!(seen.await.unwrap().is_err());
}
