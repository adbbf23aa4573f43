//! Conformance: the SPIFFE Bundle Map (MAP-*, TDB §5.1.1) and PEM import/export.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

#[path = "support/ca.rs"]
mod ca;

use serde_json::{Value, json};
use spiffe_federation::bundle::{PemError, X509Authority};
use spiffe_federation::{Bundle, BundleError, BundleMap, IdError, TrustDomain};

fn td(name: &str) -> TrustDomain {
    name.parse().unwrap()
}

fn refuse(doc: &[u8]) -> BundleError {
    match BundleMap::parse(doc) {
        Ok(parsed) => panic!("accepted: {parsed:?}"),
        Err(err) => err,
    }
}

fn bundle_with_ca(name: &str, sequence: u64) -> Bundle {
    let ca = ca::TestCa::new(name);
    let mut bundle = Bundle::new(td(name));
    bundle.add_x509_authority(X509Authority::from_der(ca.der).unwrap());
    bundle.set_sequence(Some(sequence));
    bundle.set_refresh_hint(Some(std::time::Duration::from_secs(300)));
    bundle
}

#[test]
fn map_1_trust_domains_member_required() {
    assert!(matches!(
        refuse(b"{}"),
        BundleError::MissingMember {
            member: "trust_domains",
            ..
        }
    ));
    assert!(matches!(
        refuse(br#"{"trust_domains":[]}"#),
        BundleError::WrongType { .. }
    ));
}

#[test]
fn map_1_empty_map_is_an_empty_world() {
    let parsed = BundleMap::parse(br#"{"trust_domains":{}}"#).unwrap();
    assert!(parsed.map.is_empty());
    assert_eq!(BundleMap::new().to_json(), br#"{"trust_domains":{}}"#);
}

#[test]
fn map_2_invalid_trust_domain_key_rejects_the_map() {
    assert!(matches!(
        refuse(br#"{"trust_domains":{"Example.org":{"keys":[]}}}"#),
        BundleError::InvalidTrustDomain {
            source: IdError::UpperCaseTrustDomain { .. },
            ..
        }
    ));
    assert!(matches!(
        refuse(br#"{"trust_domains":{"bad td":{"keys":[]}}}"#),
        BundleError::InvalidTrustDomain { .. }
    ));
    assert!(matches!(
        refuse(br#"{"trust_domains":{"spiffe://example.org":{"keys":[]}}}"#),
        BundleError::InvalidTrustDomain {
            source: IdError::TrustDomainIsUri { .. },
            ..
        }
    ));
}

#[test]
fn map_3_produced_map_has_unique_sorted_trust_domains() {
    let mut map = BundleMap::new();
    map.insert(bundle_with_ca("b.example", 1));
    map.insert(bundle_with_ca("a.example", 1));
    map.insert(bundle_with_ca("b.example", 2)); // replaces, never duplicates
    assert_eq!(map.len(), 2);
    let text = String::from_utf8(map.to_json()).unwrap();
    assert_eq!(text.matches("\"b.example\"").count(), 1);
    assert!(text.find("a.example").unwrap() < text.find("b.example").unwrap());
}

#[test]
fn map_4_duplicate_trust_domain_rejects_the_map() {
    let doc = br#"{"trust_domains":{"example.org":{"keys":[]},"example.org":{"keys":[]}}}"#;
    assert_eq!(
        refuse(doc),
        BundleError::DuplicateTrustDomain {
            name: "example.org".to_owned()
        }
    );
}

#[test]
fn map_4_duplicate_trust_domains_member_rejects_the_map() {
    let doc = br#"{"trust_domains":{},"trust_domains":{"example.org":{"keys":[]}}}"#;
    assert!(matches!(refuse(doc), BundleError::DuplicateMember { .. }));
}

#[test]
fn map_5_bundles_in_a_map_carry_no_refresh_hint() {
    let map: BundleMap = [bundle_with_ca("a.example", 3)].into_iter().collect();
    let doc: Value = serde_json::from_slice(&map.to_json()).unwrap();
    let bundle = &doc["trust_domains"]["a.example"];
    assert!(bundle.get("spiffe_refresh_hint").is_none());
    assert!(bundle.get("refresh_hint").is_none());
}

#[test]
fn map_7_each_bundle_keeps_its_own_sequence() {
    let map: BundleMap = [
        bundle_with_ca("a.example", 3),
        bundle_with_ca("b.example", 8),
    ]
    .into_iter()
    .collect();
    let parsed = BundleMap::parse(&map.to_json()).unwrap();
    assert_eq!(
        parsed.map.get(&td("a.example")).unwrap().sequence(),
        Some(3)
    );
    assert_eq!(
        parsed.map.get(&td("b.example")).unwrap().sequence(),
        Some(8)
    );
}

#[test]
fn map_round_trip_keeps_domain_binding() {
    let map: BundleMap = [
        bundle_with_ca("a.example", 1),
        bundle_with_ca("b.example", 2),
    ]
    .into_iter()
    .collect();
    let parsed = BundleMap::parse(&map.to_json()).unwrap();
    assert!(parsed.ignored.is_empty());
    for (name, bundle) in parsed.map.iter() {
        let original = map.get(name).unwrap();
        assert_eq!(bundle.trust_domain(), name);
        assert!(bundle.same_authorities(original));
        assert_eq!(bundle.sequence(), original.sequence());
    }
}

#[test]
fn map_broken_bundle_rejects_the_map_and_names_it() {
    let err = refuse(br#"{"trust_domains":{"a.example":{"keys":[]},"b.example":{"keys":{}}}}"#);
    assert!(
        matches!(err, BundleError::WrongType { ref location, .. } if location == "/trust_domains/b.example/keys"),
        "{err:?}"
    );
}

#[test]
fn map_ignored_elements_are_located_inside_their_bundle() {
    let doc = json!({"trust_domains": {"a.example": {"keys": [{"use": "frob", "kty": "EC"}]}}});
    let parsed = BundleMap::parse(&serde_json::to_vec(&doc).unwrap()).unwrap();
    assert_eq!(parsed.ignored.len(), 1);
    assert_eq!(
        parsed.ignored[0].location,
        "/trust_domains/a.example/keys/0"
    );
}

#[test]
fn pem_round_trip() {
    let bundle = bundle_with_ca("example.org", 1);
    let pem = bundle.to_pem();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
    assert!(pem.lines().all(|line| line.len() <= 64));
    let back = Bundle::from_pem(&td("example.org"), pem.as_bytes()).unwrap();
    assert!(back.same_authorities(&bundle));
}

#[test]
fn pem_skips_other_block_types() {
    let ca = ca::TestCa::new("example.org");
    let pem = format!(
        "{}{}",
        ca.key.serialize_pem(),
        Bundle::from_pem(&td("example.org"), pem_of(&ca.der).as_bytes())
            .unwrap()
            .to_pem()
    );
    let bundle = Bundle::from_pem(&td("example.org"), pem.as_bytes()).unwrap();
    assert_eq!(bundle.x509_authorities().len(), 1);
}

#[test]
fn pem_without_certificates_rejected() {
    assert_eq!(
        Bundle::from_pem(&td("example.org"), b"hello"),
        Err(BundleError::Pem(PemError::NoCertificates))
    );
}

#[test]
fn pem_with_leaf_certificate_names_the_block() {
    let ca = ca::TestCa::new("example.org");
    let leaf = ca.svid("spiffe://example.org/w");
    let pem = format!("{}{}", pem_of(&ca.der), pem_of(&leaf.der));
    assert!(matches!(
        Bundle::from_pem(&td("example.org"), pem.as_bytes()),
        Err(BundleError::Pem(PemError::Certificate { index: 2, .. }))
    ));
}

#[test]
fn pem_truncated_block_rejected() {
    let ca = ca::TestCa::new("example.org");
    let pem = pem_of(&ca.der);
    let truncated = &pem[..pem.len() - 30];
    assert!(matches!(
        Bundle::from_pem(&td("example.org"), truncated.as_bytes()),
        Err(BundleError::Pem(PemError::Malformed { .. }))
    ));
}

fn pem_of(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let body: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        body.join("\n")
    )
}

#[test]
fn sec_8_duplicate_keys_are_refused_wherever_they_would_be_ambiguous() {
    // A map naming a trust domain twice, and a bundle naming `keys` twice, are refused:
    // the last-one-wins behaviour of common JSON parsers would be a security risk.
    assert!(matches!(
        refuse(br#"{"trust_domains":{"a.example":{"keys":[]},"a.example":{"keys":[]}}}"#),
        BundleError::DuplicateTrustDomain { .. }
    ));
    assert!(matches!(
        Bundle::parse(
            &td("a.example"),
            br#"{"keys":[],"keys":[{"use":"jwt-svid"}]}"#
        ),
        Err(BundleError::DuplicateMember { .. })
    ));
}

#[test]
fn spf_3_bootstrap_bundle_formats_spiffe_json_and_pem() {
    let original = bundle_with_ca("example.org", 5);
    let from_json = Bundle::parse(&td("example.org"), &original.to_json()).unwrap();
    let from_pem = Bundle::from_pem(&td("example.org"), original.to_pem().as_bytes()).unwrap();
    assert!(from_json.bundle.same_authorities(&original));
    assert!(from_pem.same_authorities(&original));
    // Garbage is refused in either format.
    assert!(Bundle::parse(&td("example.org"), b"garbage").is_err());
    assert!(Bundle::from_pem(&td("example.org"), b"garbage").is_err());
}

#[test]
fn map_6_refresh_hints_inside_a_map_are_dropped() {
    let doc = br#"{"trust_domains":{"a.example":{"keys":[],"spiffe_refresh_hint":60}}}"#;
    let parsed = BundleMap::parse(doc).unwrap();
    assert_eq!(
        parsed.map.get(&td("a.example")).unwrap().refresh_hint(),
        None
    );
    // And so a map round-trips exactly.
    assert_eq!(
        BundleMap::parse(&parsed.map.to_json()).unwrap().map,
        parsed.map
    );
}
