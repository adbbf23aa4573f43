//! Conformance: X509-SVID verification for `https_spiffe` endpoints (SVID-1..SVID-6,
//! SVID-8, SPF-6, DIST-3; X509-SVID §2-§5, SPIFFE Federation §5.2.2.4, §7.3).
//!
//! Every certificate is made by rcgen with an explicit validity window around the fixed
//! instant `t0()`, and verification takes `now` as an input: nothing depends on the clock.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

#[path = "support/ca.rs"]
mod ca;

use rcgen::{
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, GeneralSubtree, KeyUsagePurpose,
    NameConstraints,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use spiffe_federation::Bundle;
use spiffe_federation::bundle::X509Authority;
use spiffe_federation::verify::{
    SigningUsage, VerifyError, verify_x509_svid, verify_x509_svid_for,
};
use spiffe_federation::{IdError, SpiffeId, TrustDomain};
use time::{Duration, OffsetDateTime};

use ca::{CertSpec, TestCa};

const TD: &str = "td.example";
const OTHER_TD: &str = "other.example";
const ENDPOINT: &str = "spiffe://td.example/bundle-endpoint";

// ---- helpers ---------------------------------------------------------------------

/// The instant every test verifies at (2033-05-18T03:33:20Z).
fn t0() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(2_000_000_000).unwrap()
}

fn at(instant: OffsetDateTime) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(instant.unix_timestamp()).unwrap(),
    ))
}

fn now() -> UnixTime {
    at(t0())
}

/// A root CA spec for `td`, valid from 30 days before `t0` for a year.
fn ca_spec(td: &str) -> CertSpec {
    CertSpec::ca(td).validity(t0() - Duration::days(30), t0() + Duration::days(365))
}

/// An intermediate CA spec for `td`, with its own subject name.
fn intermediate_spec(td: &str) -> CertSpec {
    let mut spec = ca_spec(td);
    spec.common_name = format!("{td} intermediate CA");
    spec
}

/// An SVID leaf spec for `id`, valid from an hour before `t0` for a day.
fn svid_spec(id: &str) -> CertSpec {
    CertSpec::svid(id).validity(t0() - Duration::hours(1), t0() + Duration::days(1))
}

fn root(td: &str) -> TestCa {
    TestCa::from_spec(&ca_spec(td))
}

fn td(name: &str) -> TrustDomain {
    name.parse().unwrap()
}

fn id(id: &str) -> SpiffeId {
    id.parse().unwrap()
}

fn bundle(name: &str, cas: &[&TestCa]) -> Bundle {
    let mut bundle = Bundle::new(td(name));
    for ca in cas {
        assert!(bundle.add_x509_authority(X509Authority::from_der(ca.der.clone()).unwrap()));
    }
    bundle
}

fn chain(certs: &[&[u8]]) -> Vec<CertificateDer<'static>> {
    certs
        .iter()
        .map(|der| CertificateDer::from(der.to_vec()))
        .collect()
}

/// A root for `TD`, its bundle, and the chain of a leaf it issued from `spec`.
fn issued(spec: &CertSpec) -> (Vec<CertificateDer<'static>>, Bundle) {
    let ca = root(TD);
    let leaf = ca.issue(spec);
    (chain(&[&leaf.der]), bundle(TD, &[&ca]))
}

fn verify(spec: &CertSpec) -> Result<SpiffeId, VerifyError> {
    let (chain, bundle) = issued(spec);
    verify_x509_svid(&chain, &bundle, now())
}

fn verify_for(spec: &CertSpec, expected: &str) -> Result<(), VerifyError> {
    let (chain, bundle) = issued(spec);
    verify_x509_svid_for(&chain, &bundle, &id(expected), now())
}

// ---- SVID-1: exactly one URI SAN (X509-SVID §2, §5.2) ----------------------------

#[test]
fn svid_1_two_uri_sans_rejected() {
    let spec = svid_spec(ENDPOINT).uris(&[ENDPOINT, "spiffe://td.example/second"]);
    assert!(matches!(
        verify(&spec),
        Err(VerifyError::UriSanCount { found: 2 })
    ));
}

#[test]
fn svid_1_no_uri_san_rejected() {
    let mut spec = svid_spec(ENDPOINT).uris(&[]);
    spec.dns = vec!["bundle.td.example".to_owned()];
    assert!(matches!(
        verify(&spec),
        Err(VerifyError::UriSanCount { found: 0 })
    ));
}

#[test]
fn svid_1_no_san_extension_rejected() {
    let spec = svid_spec(ENDPOINT).uris(&[]);
    assert!(matches!(
        verify(&spec),
        Err(VerifyError::UriSanCount { found: 0 })
    ));
}

// ---- SVID-2: non-root path (X509-SVID §3.1, §5.2) --------------------------------

#[test]
fn svid_2_root_id_rejected() {
    let err = verify(&svid_spec("spiffe://td.example")).unwrap_err();
    assert!(matches!(err, VerifyError::RootId { ref id } if id == &td(TD).id()));
}

// ---- SVID-3: the leaf cannot sign (X509-SVID §4.1, §4.3, §5.2) -------------------

#[test]
fn svid_3_leaf_ca_true_rejected() {
    let mut spec = svid_spec(ENDPOINT);
    spec.is_ca = true;
    assert!(matches!(verify(&spec), Err(VerifyError::LeafIsCa { .. })));
}

#[test]
fn svid_3_key_cert_sign_rejected() {
    let mut spec = svid_spec(ENDPOINT);
    spec.key_usages.push(KeyUsagePurpose::KeyCertSign);
    assert!(matches!(
        verify(&spec),
        Err(VerifyError::LeafCanSign {
            usage: SigningUsage::KeyCertSign,
            ..
        })
    ));
}

#[test]
fn svid_3_crl_sign_rejected() {
    let mut spec = svid_spec(ENDPOINT);
    spec.key_usages.push(KeyUsagePurpose::CrlSign);
    assert!(matches!(
        verify(&spec),
        Err(VerifyError::LeafCanSign {
            usage: SigningUsage::CrlSign,
            ..
        })
    ));
}

// ---- SVID-4: the scheme is spiffe (X509-SVID §5.2) -------------------------------

#[test]
fn svid_4_non_spiffe_scheme_rejected() {
    let err = verify(&svid_spec("sparfe://td.example/bundle-endpoint")).unwrap_err();
    assert!(
        matches!(err, VerifyError::NotSpiffeScheme { ref uri } if uri.starts_with("sparfe://"))
    );
}

#[test]
fn svid_4_https_uri_san_rejected() {
    assert!(matches!(
        verify(&svid_spec("https://td.example/bundle-endpoint")),
        Err(VerifyError::NotSpiffeScheme { .. })
    ));
}

#[test]
fn svid_4_malformed_spiffe_id_rejected() {
    assert!(matches!(
        verify(&svid_spec("spiffe://td.example/a//b")),
        Err(VerifyError::InvalidId {
            source: IdError::EmptySegment { .. },
            ..
        })
    ));
}

// ---- SVID-5: RFC 5280 path validation (X509-SVID §5.1) ---------------------------

#[test]
fn svid_5_expired_leaf_rejected() {
    let spec = svid_spec(ENDPOINT).validity(t0() - Duration::days(2), t0() - Duration::days(1));
    assert!(matches!(verify(&spec), Err(VerifyError::Expired { .. })));
}

#[test]
fn svid_5_not_yet_valid_leaf_rejected() {
    let spec = svid_spec(ENDPOINT).validity(t0() + Duration::days(1), t0() + Duration::days(2));
    assert!(matches!(
        verify(&spec),
        Err(VerifyError::NotYetValid { .. })
    ));
}

#[test]
fn svid_5_leaf_valid_at_its_boundaries() {
    let not_before = t0() - Duration::hours(1);
    let not_after = t0() + Duration::hours(1);
    let (chain, bundle) = issued(&svid_spec(ENDPOINT).validity(not_before, not_after));
    for instant in [not_before, not_after] {
        assert!(verify_x509_svid(&chain, &bundle, at(instant)).is_ok());
    }
    let after = at(not_after + Duration::seconds(1));
    assert!(matches!(
        verify_x509_svid(&chain, &bundle, after),
        Err(VerifyError::Expired { now, .. }) if now == after
    ));
}

#[test]
fn svid_5_expired_intermediate_rejected() {
    let ca = root(TD);
    let spec = intermediate_spec(TD).validity(t0() - Duration::days(30), t0() - Duration::days(1));
    let intermediate = ca.intermediate(&spec);
    let leaf = intermediate.issue(&svid_spec(ENDPOINT));
    let result = verify_x509_svid(
        &chain(&[&leaf.der, &intermediate.der]),
        &bundle(TD, &[&ca]),
        now(),
    );
    assert!(matches!(result, Err(VerifyError::Expired { .. })));
}

#[test]
fn svid_5_not_yet_valid_intermediate_rejected() {
    let ca = root(TD);
    let spec = intermediate_spec(TD).validity(t0() + Duration::days(1), t0() + Duration::days(30));
    let intermediate = ca.intermediate(&spec);
    let leaf = intermediate.issue(&svid_spec(ENDPOINT));
    let result = verify_x509_svid(
        &chain(&[&leaf.der, &intermediate.der]),
        &bundle(TD, &[&ca]),
        now(),
    );
    assert!(matches!(result, Err(VerifyError::NotYetValid { .. })));
}

#[test]
fn svid_5_intermediate_supplied_by_peer_honoured() {
    let ca = root(TD);
    let first = ca.intermediate(&intermediate_spec(TD));
    let mut second_spec = intermediate_spec(TD);
    second_spec.common_name = "td.example second intermediate CA".to_owned();
    let second = first.intermediate(&second_spec);
    let leaf = second.issue(&svid_spec(ENDPOINT));
    let bundle = bundle(TD, &[&ca]);
    // In order, and in any order: webpki builds the path from what the peer sent.
    for certs in [
        chain(&[&leaf.der, &second.der, &first.der]),
        chain(&[&leaf.der, &first.der, &second.der]),
    ] {
        assert_eq!(verify_x509_svid(&certs, &bundle, now()), Ok(id(ENDPOINT)));
    }
}

#[test]
fn svid_5_missing_intermediate_rejected() {
    let ca = root(TD);
    let intermediate = ca.intermediate(&intermediate_spec(TD));
    let leaf = intermediate.issue(&svid_spec(ENDPOINT));
    assert!(matches!(
        verify_x509_svid(&chain(&[&leaf.der]), &bundle(TD, &[&ca]), now()),
        Err(VerifyError::UnknownIssuer { .. })
    ));
}

/// Pinned: RFC 5280 §6.1.1(d) gives a trust anchor no validity period, and webpki does
/// not check it; bundle policy, not the verifier, removes expired authorities.
#[test]
fn svid_5_expired_bundle_authority_still_anchors() {
    let spec = ca_spec(TD).validity(t0() - Duration::days(30), t0() - Duration::days(1));
    let ca = TestCa::from_spec(&spec);
    let leaf = ca.issue(&svid_spec(ENDPOINT));
    assert_eq!(
        verify_x509_svid(&chain(&[&leaf.der]), &bundle(TD, &[&ca]), now()),
        Ok(id(ENDPOINT))
    );
}

// ---- SVID-6: extended key usage is not required of peers (X509-SVID §4.4) ---------

#[test]
fn svid_6_no_eku_accepted() {
    let mut spec = svid_spec(ENDPOINT);
    spec.ekus = vec![];
    assert_eq!(verify(&spec), Ok(id(ENDPOINT)));
}

#[test]
fn svid_6_client_auth_only_accepted() {
    let mut spec = svid_spec(ENDPOINT);
    spec.ekus = vec![ExtendedKeyUsagePurpose::ClientAuth];
    assert_eq!(verify(&spec), Ok(id(ENDPOINT)));
}

#[test]
fn svid_6_unrelated_eku_accepted() {
    let mut spec = svid_spec(ENDPOINT);
    spec.ekus = vec![ExtendedKeyUsagePurpose::CodeSigning];
    assert_eq!(verify(&spec), Ok(id(ENDPOINT)));
}

#[test]
fn svid_6_no_key_usage_accepted() {
    let mut spec = svid_spec(ENDPOINT);
    spec.key_usages = vec![];
    assert_eq!(verify(&spec), Ok(id(ENDPOINT)));
}

// ---- SVID-8: name-constrained CAs (X509-SVID §4.2) -------------------------------
//
// webpki 0.103 does not implement URI name constraints and fails closed: see the
// `verify` module docs. These tests pin exactly what happens.

#[test]
fn svid_8_uri_name_constraint_permitted_rejected_by_webpki() {
    // The SVID is inside the permitted subtree, yet every URI SAN fails the constraint.
    let ca = TestCa::from_spec_with(&ca_spec(TD), |params| {
        params
            .custom_extensions
            .push(ca::uri_name_constraints(&[TD], &[]));
    });
    let leaf = ca.issue(&svid_spec(ENDPOINT));
    let err = verify_x509_svid(&chain(&[&leaf.der]), &bundle(TD, &[&ca]), now()).unwrap_err();
    assert!(
        matches!(err, VerifyError::UriNameConstraint { ref ca } if ca.contains("td.example test CA"))
    );
}

#[test]
fn svid_8_uri_name_constraint_excluded_rejected_by_webpki() {
    // Only another trust domain is excluded, yet every URI SAN counts as excluded.
    let ca = TestCa::from_spec_with(&ca_spec(TD), |params| {
        params
            .custom_extensions
            .push(ca::uri_name_constraints(&[], &[OTHER_TD]));
    });
    let leaf = ca.issue(&svid_spec(ENDPOINT));
    assert!(matches!(
        verify_x509_svid(&chain(&[&leaf.der]), &bundle(TD, &[&ca]), now()),
        Err(VerifyError::UriNameConstraint { .. })
    ));
}

#[test]
fn svid_8_uri_name_constraint_on_intermediate_rejected_by_webpki() {
    let ca = root(TD);
    let intermediate = ca.intermediate_with(&intermediate_spec(TD), |params| {
        params
            .custom_extensions
            .push(ca::uri_name_constraints(&[TD], &[]));
    });
    let leaf = intermediate.issue(&svid_spec(ENDPOINT));
    let err = verify_x509_svid(
        &chain(&[&leaf.der, &intermediate.der]),
        &bundle(TD, &[&ca]),
        now(),
    )
    .unwrap_err();
    assert!(
        matches!(err, VerifyError::UriNameConstraint { ref ca } if ca.contains("intermediate"))
    );
}

#[test]
fn svid_8_dns_name_constraint_leaves_uri_san_alone() {
    // A dNSName subtree constrains DNS SANs only: the SVID (URI SAN plus a DNS SAN
    // inside the subtree) verifies.
    let ca = TestCa::from_spec_with(&ca_spec(TD), |params| {
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: vec![GeneralSubtree::DnsName(TD.to_owned())],
            excluded_subtrees: vec![],
        });
    });
    let mut spec = svid_spec(ENDPOINT);
    spec.dns = vec!["bundle.td.example".to_owned()];
    let leaf = ca.issue(&spec);
    assert_eq!(
        verify_x509_svid(&chain(&[&leaf.der]), &bundle(TD, &[&ca]), now()),
        Ok(id(ENDPOINT))
    );
}

#[test]
fn svid_8_directory_name_constraint_rejected_by_webpki() {
    // webpki also fails closed on directoryName subtrees; there is no URI subtree to
    // blame, so this is a generic path error.
    let ca = TestCa::from_spec_with(&ca_spec(TD), |params| {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "td.example");
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: vec![GeneralSubtree::DirectoryName(dn)],
            excluded_subtrees: vec![],
        });
    });
    let leaf = ca.issue(&svid_spec(ENDPOINT));
    assert!(matches!(
        verify_x509_svid(&chain(&[&leaf.der]), &bundle(TD, &[&ca]), now()),
        Err(VerifyError::Path { .. })
    ));
}

// ---- SPF-6: the endpoint's SVID is for exactly its SPIFFE ID (FED §5.2.2.4) -------

#[test]
fn spf_6_exact_id_ok() {
    assert_eq!(verify_for(&svid_spec(ENDPOINT), ENDPOINT), Ok(()));
}

#[test]
fn spf_6_other_path_same_td_rejected() {
    let err = verify_for(&svid_spec("spiffe://td.example/not-the-endpoint"), ENDPOINT).unwrap_err();
    assert!(matches!(
        err,
        VerifyError::UnexpectedId { ref expected, ref found }
            if expected == &id(ENDPOINT) && found.path() == "/not-the-endpoint"
    ));
}

#[test]
fn spf_6_same_path_other_td_rejected() {
    // The peer shows a valid SVID of another trust domain, signed by that domain's CA,
    // while we verify with the endpoint trust domain's bundle.
    let other = root(OTHER_TD);
    let leaf = other.issue(&svid_spec("spiffe://other.example/bundle-endpoint"));
    let result = verify_x509_svid_for(
        &chain(&[&leaf.der]),
        &bundle(TD, &[&root(TD)]),
        &id(ENDPOINT),
        now(),
    );
    assert!(matches!(
        result,
        Err(VerifyError::TrustDomainMismatch { .. })
    ));
}

#[test]
fn spf_6_same_path_other_td_rejected_even_with_its_own_bundle() {
    let other = root(OTHER_TD);
    let leaf = other.issue(&svid_spec("spiffe://other.example/bundle-endpoint"));
    let result = verify_x509_svid_for(
        &chain(&[&leaf.der]),
        &bundle(OTHER_TD, &[&other]),
        &id(ENDPOINT),
        now(),
    );
    assert!(matches!(result, Err(VerifyError::UnexpectedId { .. })));
}

#[test]
fn spf_6_chain_to_foreign_ca_rejected() {
    let mut spec = ca_spec(TD);
    spec.common_name = "rogue CA".to_owned();
    let rogue = TestCa::from_spec(&spec);
    let leaf = rogue.issue(&svid_spec(ENDPOINT));
    let result = verify_x509_svid_for(
        &chain(&[&leaf.der]),
        &bundle(TD, &[&root(TD)]),
        &id(ENDPOINT),
        now(),
    );
    assert!(matches!(result, Err(VerifyError::UnknownIssuer { .. })));
}

#[test]
fn spf_6_chain_to_impostor_ca_with_same_name_rejected() {
    // Same subject name as the real CA, different key: the signature check catches it.
    let impostor = root(TD);
    let leaf = impostor.issue(&svid_spec(ENDPOINT));
    let result = verify_x509_svid_for(
        &chain(&[&leaf.der]),
        &bundle(TD, &[&root(TD)]),
        &id(ENDPOINT),
        now(),
    );
    assert!(matches!(result, Err(VerifyError::BadSignature { .. })));
}

#[test]
fn spf_6_dns_mismatch_ignored() {
    let mut spec = svid_spec(ENDPOINT);
    spec.dns = vec!["not-the-endpoint-host.invalid".to_owned()];
    assert_eq!(verify_for(&spec, ENDPOINT), Ok(()));
}

#[test]
fn spf_6_expired_leaf_rejected() {
    let spec = svid_spec(ENDPOINT).validity(t0() - Duration::days(2), t0() - Duration::days(1));
    assert!(matches!(
        verify_for(&spec, ENDPOINT),
        Err(VerifyError::Expired { .. })
    ));
}

#[test]
fn spf_6_leaf_ca_true_rejected() {
    let mut spec = svid_spec(ENDPOINT);
    spec.is_ca = true;
    assert!(matches!(
        verify_for(&spec, ENDPOINT),
        Err(VerifyError::LeafIsCa { .. })
    ));
}

#[test]
fn spf_6_two_uri_sans_rejected() {
    // Even when one of them is the expected ID.
    let spec = svid_spec(ENDPOINT).uris(&[ENDPOINT, "spiffe://td.example/other"]);
    assert!(matches!(
        verify_for(&spec, ENDPOINT),
        Err(VerifyError::UriSanCount { found: 2 })
    ));
}

#[test]
fn spf_6_no_uri_san_rejected() {
    let spec = svid_spec(ENDPOINT).uris(&[]);
    assert!(matches!(
        verify_for(&spec, ENDPOINT),
        Err(VerifyError::UriSanCount { found: 0 })
    ));
}

#[test]
fn spf_6_root_id_rejected() {
    assert!(matches!(
        verify_for(&svid_spec("spiffe://td.example"), "spiffe://td.example"),
        Err(VerifyError::RootId { .. })
    ));
}

// ---- DIST-3: only the ID's own trust domain's bundle vouches (FED §7.3; TDB §3) ----

#[test]
fn dist_3_other_domain_ca_cannot_vouch() {
    // TD-A's CA signs an SVID for TD-B; TD-B's bundle does not hold TD-A's CA.
    let ca_a = root(TD);
    let leaf = ca_a.issue(&svid_spec("spiffe://other.example/x"));
    let result = verify_x509_svid(
        &chain(&[&leaf.der]),
        &bundle(OTHER_TD, &[&root(OTHER_TD)]),
        now(),
    );
    assert!(matches!(result, Err(VerifyError::UnknownIssuer { .. })));
}

#[test]
fn dist_3_bundle_of_signing_domain_is_not_used_for_other_ids() {
    // TD-A's CA signs an SVID for TD-B and TD-A's bundle is offered: refused before
    // any path is built, although the chain itself would verify.
    let ca_a = root(TD);
    let leaf = ca_a.issue(&svid_spec("spiffe://other.example/x"));
    let err = verify_x509_svid(&chain(&[&leaf.der]), &bundle(TD, &[&ca_a]), now()).unwrap_err();
    assert!(matches!(
        err,
        VerifyError::TrustDomainMismatch { ref bundle, ref svid }
            if bundle == &td(TD) && svid.trust_domain() == &td(OTHER_TD)
    ));
}

// ---- input shape -----------------------------------------------------------------

#[test]
fn empty_chain_rejected() {
    assert!(matches!(
        verify_x509_svid(&[], &bundle(TD, &[&root(TD)]), now()),
        Err(VerifyError::EmptyChain)
    ));
}

#[test]
fn empty_bundle_rejected() {
    let ca = root(TD);
    let leaf = ca.issue(&svid_spec(ENDPOINT));
    assert!(matches!(
        verify_x509_svid(&chain(&[&leaf.der]), &bundle(TD, &[]), now()),
        Err(VerifyError::NoAuthorities { unusable: 0, .. })
    ));
}

#[test]
fn garbage_leaf_rejected() {
    assert!(matches!(
        verify_x509_svid(
            &chain(&[b"not a certificate"]),
            &bundle(TD, &[&root(TD)]),
            now()
        ),
        Err(VerifyError::Malformed { .. })
    ));
}

#[test]
fn trailing_bytes_after_leaf_rejected() {
    let ca = root(TD);
    let mut der = ca.issue(&svid_spec(ENDPOINT)).der;
    der.push(0);
    assert!(matches!(
        verify_x509_svid(&chain(&[&der]), &bundle(TD, &[&ca]), now()),
        Err(VerifyError::Malformed { .. })
    ));
}

#[test]
fn right_ca_among_several_is_found() {
    let old = root(TD);
    let current = root(TD);
    let leaf = current.issue(&svid_spec(ENDPOINT));
    assert_eq!(
        verify_x509_svid(&chain(&[&leaf.der]), &bundle(TD, &[&old, &current]), now()),
        Ok(id(ENDPOINT))
    );
}

// ---- key types: one positive case per CA key algorithm ---------------------------

fn accepted_with_ca_key(alg: &'static rcgen::SignatureAlgorithm) {
    let ca = TestCa::from_spec(&ca_spec(TD).alg(alg));
    let leaf = ca.issue(&svid_spec(ENDPOINT));
    assert_eq!(
        verify_x509_svid_for(
            &chain(&[&leaf.der]),
            &bundle(TD, &[&ca]),
            &id(ENDPOINT),
            now()
        ),
        Ok(())
    );
}

#[test]
fn key_p256_ca_accepted() {
    accepted_with_ca_key(&ca::PKCS_ECDSA_P256_SHA256);
}

#[test]
fn key_p384_ca_accepted() {
    accepted_with_ca_key(&ca::PKCS_ECDSA_P384_SHA384);
}

#[test]
fn key_p521_ca_accepted() {
    accepted_with_ca_key(&ca::PKCS_ECDSA_P521_SHA512);
}

#[test]
fn key_rsa_ca_accepted() {
    accepted_with_ca_key(&ca::PKCS_RSA_SHA256);
}

#[test]
fn key_ed25519_ca_accepted() {
    accepted_with_ca_key(&ca::PKCS_ED25519);
}
