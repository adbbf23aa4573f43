//! Conformance: the SPIFFE bundle document (BUN-*, X5C-*, JWK-*, WIT-*, RFC-*, EXT-4;
//! TDB §4, X509-SVID §6, JWT-SVID §6, WIT-SVID §6, RFC 7517).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

#[path = "support/ca.rs"]
mod ca;
#[path = "support/jwk.rs"]
mod jwk;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use spiffe_federation::bundle::{IgnoreReason, JwtAuthority, LintKind, PublicKey, X509Authority};
use spiffe_federation::{Bundle, BundleError, Parsed, TrustDomain};

fn td() -> TrustDomain {
    "example.org".parse().unwrap()
}

fn parse(doc: &[u8]) -> Parsed {
    Bundle::parse(&td(), doc).unwrap_or_else(|err| panic!("refused: {err}"))
}

fn parse_value(doc: Value) -> Parsed {
    parse(&serde_json::to_vec(&doc).unwrap())
}

fn refuse(doc: &[u8]) -> BundleError {
    match Bundle::parse(&td(), doc) {
        Ok(parsed) => panic!("accepted: {parsed:?}"),
        Err(err) => err,
    }
}

fn only_ignored(parsed: &Parsed) -> &IgnoreReason {
    assert_eq!(parsed.ignored.len(), 1, "{:?}", parsed.ignored);
    &parsed.ignored[0].reason
}

// ---- BUN: the JWK Set document -------------------------------------------------

#[test]
fn bun_1_tdb_appendix_a_rotation_example_accepted() {
    // The TDB Appendix A example, with real RSA CA certificates substituted.
    let ca1 = ca::TestCa::from_spec(&ca::CertSpec::ca("example.com").alg(&ca::PKCS_RSA_SHA256));
    let ca2 = ca::TestCa::from_spec(&ca::CertSpec::ca("example.com").alg(&ca::PKCS_RSA_SHA256));
    let td: TrustDomain = "example.com".parse().unwrap();
    let one = json!({"spiffe_sequence": 1, "spiffe_refresh_hint": 2419200,
        "keys": [jwk::x509_element(&ca1.der)]});
    let two = json!({"spiffe_sequence": 2, "spiffe_refresh_hint": 2419200,
        "keys": [jwk::x509_element(&ca1.der), jwk::x509_element(&ca2.der)]});
    let one = Bundle::parse(&td, &serde_json::to_vec(&one).unwrap()).unwrap();
    let two = Bundle::parse(&td, &serde_json::to_vec(&two).unwrap()).unwrap();
    assert!(one.ignored.is_empty() && two.ignored.is_empty());
    assert_eq!(one.bundle.sequence(), Some(1));
    assert_eq!(two.bundle.sequence(), Some(2));
    assert_eq!(
        two.bundle.refresh_hint(),
        Some(std::time::Duration::from_secs(2_419_200))
    );
    assert_eq!(one.bundle.x509_authorities().len(), 1);
    assert_eq!(two.bundle.x509_authorities().len(), 2);
    assert!(
        two.bundle
            .x509_authorities()
            .iter()
            .any(|a| a.der().as_ref() == ca1.der.as_slice())
    );
    assert!(matches!(
        two.bundle.x509_authorities()[0].info().key,
        PublicKey::Rsa { .. }
    ));
}

#[test]
fn bun_2_unknown_top_level_members_ignored() {
    let parsed = parse(br#"{"keys":[],"foo":1,"bar":{"nested":[1,2]}}"#);
    assert!(parsed.ignored.is_empty());
    assert!(parsed.bundle.is_empty());
}

#[test]
fn bun_2_sequence_and_hint_not_required() {
    let parsed = parse(br#"{"keys":[]}"#);
    assert_eq!(parsed.bundle.sequence(), None);
    assert_eq!(parsed.bundle.refresh_hint(), None);
}

#[test]
fn bun_2_unknown_top_level_members_not_reserved() {
    let parsed = parse(br#"{"keys":[],"foo":1}"#);
    assert_eq!(parsed.bundle.to_json(), br#"{"keys":[]}"#);
}

#[test]
fn bun_3_bun_6_sequence_and_hint_serialised_when_set() {
    let mut bundle = Bundle::new(td());
    bundle.set_sequence(Some(7));
    bundle.set_refresh_hint(Some(std::time::Duration::from_secs(300)));
    let doc: Value = serde_json::from_slice(&bundle.to_json()).unwrap();
    assert_eq!(doc["spiffe_sequence"], 7);
    assert_eq!(doc["spiffe_refresh_hint"], 300);
}

macro_rules! refused_sequence {
    ($($name:ident: $value:literal),* $(,)?) => {$(
        #[test]
        fn $name() {
            let doc = format!(r#"{{"keys":[],"spiffe_sequence":{}}}"#, $value);
            assert!(matches!(refuse(doc.as_bytes()), BundleError::InvalidSequence { .. }));
        }
    )*};
}

refused_sequence! {
    bun_4_sequence_string_rejected: r#""5""#,
    bun_4_sequence_fraction_rejected: "1.5",
    bun_4_sequence_negative_rejected: "-1",
    bun_4_sequence_bool_rejected: "true",
    bun_4_sequence_null_rejected: "null",
    bun_4_sequence_exponent_rejected: "1e3",
    bun_5_sequence_above_u64_rejected: "18446744073709551616",
}

#[test]
fn bun_5_sequence_keeps_64_bit_precision() {
    for value in [9_007_199_254_740_993_u64, u64::MAX, 0] {
        let doc = format!(r#"{{"keys":[],"spiffe_sequence":{value}}}"#);
        let parsed = parse(doc.as_bytes());
        assert_eq!(parsed.bundle.sequence(), Some(value));
        assert!(
            String::from_utf8(parsed.bundle.to_json())
                .unwrap()
                .contains(&value.to_string())
        );
    }
}

#[test]
fn bun_7_refresh_hint_must_be_an_integer() {
    for bad in [r#""300""#, "300.5", "true", "[]", "null"] {
        let doc = format!(r#"{{"keys":[],"spiffe_refresh_hint":{bad}}}"#);
        assert!(
            matches!(
                refuse(doc.as_bytes()),
                BundleError::InvalidRefreshHint { .. }
            ),
            "{bad}"
        );
    }
}

#[test]
fn bun_7_non_positive_refresh_hint_is_unset_with_warning() {
    for value in [0_i64, -5] {
        let doc = format!(r#"{{"keys":[],"spiffe_refresh_hint":{value}}}"#);
        let parsed = parse(doc.as_bytes());
        assert_eq!(parsed.bundle.refresh_hint(), None);
        assert_eq!(
            parsed.lints[0].kind,
            LintKind::RefreshHintNotPositive { value }
        );
    }
}

#[test]
fn bun_7_producer_rounds_hint_up_to_whole_seconds() {
    let mut bundle = Bundle::new(td());
    bundle.set_refresh_hint(Some(std::time::Duration::from_millis(1500)));
    assert_eq!(
        bundle.refresh_hint(),
        Some(std::time::Duration::from_secs(2))
    );
    bundle.set_refresh_hint(Some(std::time::Duration::ZERO));
    assert_eq!(bundle.refresh_hint(), None);
}

#[test]
fn bun_8_l_1_refresh_hint_without_prefix_is_only_a_warning() {
    let parsed = parse(br#"{"keys":[],"refresh_hint":10}"#);
    assert_eq!(parsed.bundle.refresh_hint(), None);
    assert!(matches!(
        parsed.lints[0].kind,
        LintKind::SuspiciousMember {
            suggestion: "spiffe_refresh_hint",
            ..
        }
    ));
}

#[test]
fn bun_9_keys_missing_rejected() {
    assert!(matches!(
        refuse(br#"{"spiffe_refresh_hint":10}"#),
        BundleError::MissingMember {
            member: "keys",
            found_instead: None,
            ..
        }
    ));
    assert!(matches!(refuse(b"{}"), BundleError::MissingMember { .. }));
}

#[test]
fn bun_9_keys_of_wrong_type_rejected() {
    for bad in ["null", "{}", r#""x""#, "1"] {
        let doc = format!(r#"{{"keys":{bad}}}"#);
        assert!(
            matches!(refuse(doc.as_bytes()), BundleError::WrongType { ref location, .. } if location == "/keys"),
            "{bad}"
        );
    }
}

#[test]
fn bun_9_document_not_an_object_rejected() {
    for bad in ["[]", "null", "1", r#""keys""#] {
        assert!(
            matches!(refuse(bad.as_bytes()), BundleError::WrongType { ref location, .. } if location.is_empty()),
            "{bad}"
        );
    }
}

#[test]
fn bun_10_unknown_key_types_and_uses_ignored() {
    let ca = ca::TestCa::new("example.org");
    let parsed = parse_value(json!({"keys": [
        jwk::x509_element(&ca.der),
        {"kty": "FOO", "use": "x509-svid", "x5c": [ca.x5c()]},
        {"kty": "EC", "use": "frob", "crv": "P-256"},
    ]}));
    assert_eq!(parsed.bundle.x509_authorities().len(), 1);
    assert_eq!(parsed.ignored.len(), 2);
    assert_eq!(parsed.ignored[0].location, "/keys/1");
    assert!(
        matches!(parsed.ignored[0].reason, IgnoreReason::UnknownKty { ref value } if value == "FOO")
    );
    assert_eq!(parsed.ignored[1].location, "/keys/2");
    assert!(
        matches!(parsed.ignored[1].reason, IgnoreReason::UnknownUse { ref value } if value == "frob")
    );
}

#[test]
fn bun_11_empty_keys_is_a_revocation_not_an_error() {
    let parsed = parse(br#"{"keys":[],"spiffe_sequence":9}"#);
    assert!(parsed.bundle.is_empty());
    assert!(parsed.ignored.is_empty());
    assert_eq!(parsed.bundle.sequence(), Some(9));
}

#[test]
fn bun_11_all_elements_ignored_gives_an_empty_bundle() {
    let parsed = parse(br#"{"keys":[{"use":"sig","kty":"EC"}]}"#);
    assert!(parsed.bundle.is_empty());
    assert_eq!(parsed.ignored.len(), 1);
}

/// An empty bundle from a document whose every element was left out is told apart from
/// a deliberately empty `keys` list (the revocation of BUN-11), so that a caller can
/// refuse the first; the summary counts the elements by reason.
#[test]
fn bun_11_all_ignored_is_told_apart_from_an_empty_keys_list() {
    let empty = parse(br#"{"keys":[]}"#);
    assert_eq!(empty.elements, 0);
    assert!(!empty.all_ignored() && !empty.ignored_summary().all_ignored());

    // One leaf certificate (cA false) as the only x509-svid key.
    let ca = ca::TestCa::new("example.org");
    let leaf = ca.svid("spiffe://example.org/workload");
    let parsed = parse_value(json!({"keys": [jwk::x509_element(&leaf.der)]}));
    assert!(parsed.bundle.is_empty() && parsed.all_ignored());
    let summary = parsed.ignored_summary();
    assert!(summary.all_ignored());
    assert_eq!(
        (summary.elements, summary.authorities, summary.ignored),
        (1, 0, 1)
    );
    assert_eq!(summary.by_reason.len(), 1);
    assert_eq!(summary.by_reason[0].code, "certificate");
    assert!(
        summary.to_string().contains("not a CA certificate"),
        "{summary}"
    );

    // 100,000 `{}` JWKs: one reason, counted, shown once.
    let many = format!("{{\"keys\":[{}]}}", vec!["{}"; 100_000].join(","));
    let parsed = parse(many.as_bytes());
    let summary = parsed.ignored_summary();
    assert!(summary.all_ignored());
    assert_eq!(summary.elements, 100_000);
    assert_eq!(summary.by_reason.len(), 1);
    assert_eq!(summary.by_reason[0].count, 100_000);
    assert_eq!(
        summary.to_string(),
        "100000 of 100000 elements left out: 100000 × no \"use\" member (first at /keys/0)"
    );

    // One good key among broken ones: not all ignored.
    let mixed = parse_value(json!({"keys": [{}, jwk::x509_element(&ca.der), {"use": "sig"}]}));
    assert!(!mixed.all_ignored());
    let summary = mixed.ignored_summary();
    assert_eq!(
        (summary.elements, summary.authorities, summary.ignored),
        (3, 1, 2)
    );
    assert!(!summary.all_ignored());
    assert_eq!(
        summary.by_reason.iter().map(|r| r.code).collect::<Vec<_>>(),
        ["missing_use", "unknown_use"]
    );
}

/// Two keys under one kid cancel each other (neither can be selected): the bundle is
/// empty although not every element is reported as ignored, and it still counts as
/// "all ignored".
#[test]
fn bun_11_conflicting_kids_alone_count_as_all_ignored() {
    let one = jwk::ec_element("jwt-svid", "k1", 1);
    let other = jwk::ec_element("jwt-svid", "k1", 2);
    let parsed = parse_value(json!({"keys": [one.clone(), one, other]}));
    assert!(parsed.bundle.is_empty());
    assert_eq!(parsed.ignored.len(), 2);
    assert!(parsed.all_ignored() && parsed.ignored_summary().all_ignored());
}

/// A reason quoting a long value from the document is cut in the summary's text.
#[test]
fn ignored_summary_cuts_long_values() {
    let long = "x".repeat(5_000);
    let parsed = parse_value(json!({"keys": [{"use": long}]}));
    let text = parsed.ignored_summary().to_string();
    assert!(text.len() < 400, "{text}");
    assert!(text.contains("characters)"), "{text}");
}

#[test]
fn bun_13_serialiser_emits_only_defined_members() {
    let ca = ca::TestCa::new("example.org");
    let mut input = jwk::x509_element(&ca.der);
    input["alg"] = "ES256".into();
    input["x5t"] = "abc".into();
    let mut jwt = jwk::ec_element("jwt-svid", "k1", 3);
    jwt["key_ops"] = json!(["verify"]);
    let parsed = parse_value(json!({"keys": [input, jwt], "extra": true, "spiffe_sequence": 1}));
    let doc: Value = serde_json::from_slice(&parsed.bundle.to_json()).unwrap();
    let top: Vec<&str> = doc
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(top, ["keys", "spiffe_sequence"]);
    let allowed = ["kty", "use", "kid", "x5c", "crv", "x", "y", "n", "e"];
    for key in doc["keys"].as_array().unwrap() {
        for member in key.as_object().unwrap().keys() {
            assert!(allowed.contains(&member.as_str()), "emitted {member}");
        }
    }
}

#[test]
fn bun_14_missing_kty_ignored() {
    let ca = ca::TestCa::new("example.org");
    let mut element = jwk::x509_element(&ca.der);
    element.as_object_mut().unwrap().remove("kty");
    let parsed = parse_value(json!({"keys": [element]}));
    assert_eq!(only_ignored(&parsed), &IgnoreReason::MissingKty);
}

#[test]
fn bun_14_okp_with_unsupported_curve_ignored() {
    let parsed = parse_value(
        json!({"keys": [{"use": "jwt-svid", "kty": "OKP", "kid": "a",
        "crv": "X25519", "x": URL_SAFE_NO_PAD.encode([1u8; 32])}]}),
    );
    assert!(matches!(
        only_ignored(&parsed),
        IgnoreReason::UnsupportedCurve { kty: "OKP", .. }
    ));
}

#[test]
fn bun_15_use_is_case_sensitive() {
    let ca = ca::TestCa::new("example.org");
    let mut element = jwk::x509_element(&ca.der);
    element["use"] = "X509-SVID".into();
    let parsed = parse_value(json!({"keys": [element]}));
    assert!(matches!(
        only_ignored(&parsed),
        IgnoreReason::UnknownUse { .. }
    ));
}

#[test]
fn bun_15_missing_use_ignored() {
    let mut element = jwk::ec_element("jwt-svid", "k", 1);
    element.as_object_mut().unwrap().remove("use");
    let parsed = parse_value(json!({"keys": [element]}));
    assert_eq!(only_ignored(&parsed), &IgnoreReason::MissingUse);
}

#[test]
fn bun_15_use_sig_ignored() {
    let parsed = parse_value(json!({"keys": [jwk::ec_element("sig", "k", 1)]}));
    assert!(matches!(only_ignored(&parsed), IgnoreReason::UnknownUse { value } if value == "sig"));
}

#[test]
fn bun_15_non_string_use_ignored() {
    let mut element = jwk::ec_element("jwt-svid", "k", 1);
    element["use"] = json!(5);
    let parsed = parse_value(json!({"keys": [element]}));
    assert!(matches!(
        only_ignored(&parsed),
        IgnoreReason::UnknownUse { .. }
    ));
}

#[test]
fn non_object_element_ignored() {
    let parsed = parse(br#"{"keys":[1,"x",null,[]]}"#);
    assert_eq!(parsed.ignored.len(), 4);
    assert!(
        parsed
            .ignored
            .iter()
            .all(|i| matches!(i.reason, IgnoreReason::NotAnObject { .. }))
    );
}

// ---- X5C: x509-svid entries ------------------------------------------------------

#[test]
fn x5c_1_serialised_x509_entries_have_use_and_no_kid() {
    let ca = ca::TestCa::new("example.org");
    let mut bundle = Bundle::new(td());
    bundle.add_x509_authority(X509Authority::from_der(ca.der.clone()).unwrap());
    let doc: Value = serde_json::from_slice(&bundle.to_json()).unwrap();
    let entry = &doc["keys"][0];
    assert_eq!(entry["use"], "x509-svid");
    assert!(entry.get("kid").is_none());
}

#[test]
fn x5c_2_serialised_x5c_holds_exactly_the_ca_certificate() {
    let ca = ca::TestCa::new("example.org");
    let mut bundle = Bundle::new(td());
    bundle.add_x509_authority(X509Authority::from_der(ca.der.clone()).unwrap());
    let doc: Value = serde_json::from_slice(&bundle.to_json()).unwrap();
    let x5c = doc["keys"][0]["x5c"].as_array().unwrap();
    assert_eq!(x5c.len(), 1);
    assert_eq!(STANDARD.decode(x5c[0].as_str().unwrap()).unwrap(), ca.der);
}

#[test]
fn x5c_2_non_ca_certificate_ignored() {
    let ca = ca::TestCa::new("example.org");
    let leaf = ca.svid("spiffe://example.org/workload");
    let parsed = parse_value(json!({"keys": [jwk::x509_element(&leaf.der)]}));
    assert!(matches!(
        only_ignored(&parsed),
        IgnoreReason::Certificate(spiffe_federation::bundle::AuthorityError::NotCa)
    ));
}

#[test]
fn x5c_2_intermediate_ca_kept_with_not_self_signed_warning() {
    let root = ca::TestCa::new("example.org");
    let mut spec = ca::CertSpec::ca("example.org");
    spec.common_name = "example.org intermediate".to_owned();
    let intermediate = root.intermediate(&spec);
    let parsed = parse_value(json!({"keys": [jwk::x509_element(&intermediate.der)]}));
    assert!(parsed.ignored.is_empty());
    assert_eq!(parsed.bundle.x509_authorities().len(), 1);
    assert!(
        parsed
            .lints
            .iter()
            .any(|l| l.kind == LintKind::NotSelfSigned)
    );
}

#[test]
fn x5c_3_missing_x5c_ignored() {
    let ca = ca::TestCa::new("example.org");
    let mut element = jwk::x509_element(&ca.der);
    element.as_object_mut().unwrap().remove("x5c");
    let good = jwk::x509_element(&ca::TestCa::new("example.org").der);
    let parsed = parse_value(json!({"keys": [element, good]}));
    assert_eq!(only_ignored(&parsed), &IgnoreReason::MissingX5c);
    assert_eq!(parsed.bundle.x509_authorities().len(), 1);
}

#[test]
fn x5c_3_empty_x5c_ignored() {
    let ca = ca::TestCa::new("example.org");
    let mut element = jwk::x509_element(&ca.der);
    element["x5c"] = json!([]);
    let parsed = parse_value(json!({"keys": [element]}));
    assert_eq!(only_ignored(&parsed), &IgnoreReason::MissingX5c);
}

#[test]
fn x5c_4_only_the_first_x5c_certificate_is_used() {
    let first = ca::TestCa::new("example.org");
    let second = ca::TestCa::new("example.org");
    let mut element = jwk::x509_element(&first.der);
    element["x5c"] = json!([first.x5c(), second.x5c()]);
    let parsed = parse_value(json!({"keys": [element]}));
    assert!(parsed.ignored.is_empty());
    assert_eq!(parsed.bundle.x509_authorities().len(), 1);
    assert_eq!(
        parsed.bundle.x509_authorities()[0].der().as_ref(),
        first.der.as_slice()
    );
    assert_eq!(parsed.lints[0].kind, LintKind::ExtraX5c { count: 2 });
}

#[test]
fn x5c_5_jwt_only_bundle_has_no_x509_authorities() {
    let parsed = parse_value(json!({"keys": [jwk::ec_element("jwt-svid", "k", 1)]}));
    assert!(parsed.bundle.x509_authorities().is_empty());
    assert_eq!(parsed.bundle.jwt_authorities().len(), 1);
    assert!(!parsed.bundle.is_empty());
}

#[test]
fn x5c_6_kid_on_x509_entry_accepted_with_warning() {
    let ca = ca::TestCa::new("example.org");
    let mut element = jwk::x509_element(&ca.der);
    element["kid"] = "should-not-be-here".into();
    let parsed = parse_value(json!({"keys": [element]}));
    assert!(parsed.ignored.is_empty());
    assert_eq!(parsed.bundle.x509_authorities().len(), 1);
    assert!(parsed.lints.iter().any(|l| l.kind == LintKind::KidOnX509));
    let doc: Value = serde_json::from_slice(&parsed.bundle.to_json()).unwrap();
    assert!(doc["keys"][0].get("kid").is_none());
}

#[test]
fn id_16_ca_without_trust_domain_id_warned() {
    let spec = ca::CertSpec::ca("other.example");
    let ca = ca::TestCa::from_spec(&spec);
    let parsed = parse_value(json!({"keys": [jwk::x509_element(&ca.der)]}));
    assert!(
        parsed
            .lints
            .iter()
            .any(|l| matches!(l.kind, LintKind::CaIdMismatch { .. }))
    );
    let own = ca::TestCa::new("example.org");
    let parsed = parse_value(json!({"keys": [jwk::x509_element(&own.der)]}));
    assert!(parsed.lints.is_empty(), "{:?}", parsed.lints);
}

#[test]
fn x509_authorities_of_every_supported_key_type_accepted() {
    for alg in [
        &ca::PKCS_ECDSA_P256_SHA256,
        &ca::PKCS_ECDSA_P384_SHA384,
        &ca::PKCS_ECDSA_P521_SHA512,
        &ca::PKCS_RSA_SHA256,
        &ca::PKCS_ED25519,
    ] {
        let ca = ca::TestCa::from_spec(&ca::CertSpec::ca("example.org").alg(alg));
        let parsed = parse_value(json!({"keys": [jwk::x509_element(&ca.der)]}));
        assert!(parsed.ignored.is_empty(), "{alg:?}: {:?}", parsed.ignored);
        // Each CA is self-signed; the warning must not fire for any key type.
        assert!(
            !parsed
                .lints
                .iter()
                .any(|l| l.kind == LintKind::NotSelfSigned),
            "{alg:?}: {:?}",
            parsed.lints
        );
        let again = parse(&parsed.bundle.to_json());
        assert_eq!(again.bundle, parsed.bundle);
    }
}

// ---- JWK / WIT: jwt-svid and wit-svid entries ----------------------------------

#[test]
fn jwk_1_serialised_jwt_entries_carry_kid() {
    let mut bundle = Bundle::new(td());
    let key = PublicKey::Ed25519 { x: vec![7; 32] };
    bundle.insert_jwt_authority(JwtAuthority::new("key-1", key).unwrap());
    let doc: Value = serde_json::from_slice(&bundle.to_json()).unwrap();
    assert_eq!(doc["keys"][0]["use"], "jwt-svid");
    assert_eq!(doc["keys"][0]["kid"], "key-1");
    assert_eq!(doc["keys"][0]["kty"], "OKP");
    assert_eq!(doc["keys"][0]["crv"], "Ed25519");
}

#[test]
fn jwk_2_jwt_keys_are_kept_apart_from_x509_authorities() {
    let ca = ca::TestCa::new("example.org");
    let parsed = parse_value(json!({"keys": [
        jwk::x509_element(&ca.der),
        jwk::ec_element("jwt-svid", "j", 1),
        jwk::ec_element("wit-svid", "w", 2),
    ]}));
    assert_eq!(parsed.bundle.x509_authorities().len(), 1);
    assert_eq!(
        parsed.bundle.jwt_authorities().keys().collect::<Vec<_>>(),
        ["j"]
    );
    assert_eq!(
        parsed.bundle.wit_authorities().keys().collect::<Vec<_>>(),
        ["w"]
    );
}

#[test]
fn jwk_3_jwt_entry_without_kid_ignored() {
    let mut element = jwk::ec_element("jwt-svid", "k", 1);
    element.as_object_mut().unwrap().remove("kid");
    let parsed = parse_value(json!({"keys": [element, jwk::ec_element("jwt-svid", "", 2)]}));
    assert_eq!(parsed.ignored.len(), 2);
    assert!(
        parsed
            .ignored
            .iter()
            .all(|i| i.reason == IgnoreReason::MissingKid { use_: "jwt-svid" })
    );
}

#[test]
fn jwk_4_x509_only_bundle_has_no_jwt_authorities() {
    let ca = ca::TestCa::new("example.org");
    let parsed = parse_value(json!({"keys": [jwk::x509_element(&ca.der)]}));
    assert!(parsed.bundle.jwt_authorities().is_empty());
}

#[test]
fn jwk_duplicate_kid_with_different_keys_ignores_both() {
    let parsed = parse_value(json!({"keys": [
        jwk::ec_element("jwt-svid", "same", 1),
        jwk::ec_element("jwt-svid", "same", 2),
        jwk::ec_element("jwt-svid", "other", 3),
    ]}));
    assert_eq!(parsed.ignored.len(), 2);
    assert_eq!(parsed.ignored[0].location, "/keys/0");
    assert_eq!(parsed.ignored[1].location, "/keys/1");
    assert!(matches!(
        parsed.ignored[0].reason,
        IgnoreReason::DuplicateKid { .. }
    ));
    assert_eq!(
        parsed.bundle.jwt_authorities().keys().collect::<Vec<_>>(),
        ["other"]
    );
}

#[test]
fn jwk_identical_duplicate_kept_once() {
    let parsed = parse_value(json!({"keys": [
        jwk::ec_element("jwt-svid", "same", 1),
        jwk::ec_element("jwt-svid", "same", 1),
    ]}));
    assert!(parsed.ignored.is_empty());
    assert_eq!(parsed.bundle.jwt_authorities().len(), 1);
    assert_eq!(parsed.lints[0].kind, LintKind::DuplicateElement);
}

#[test]
fn wit_1_wit_keys_are_stored_and_serialised() {
    let parsed = parse_value(json!({"keys": [jwk::ec_element("wit-svid", "w1", 4)]}));
    assert_eq!(parsed.bundle.wit_authorities().len(), 1);
    let doc: Value = serde_json::from_slice(&parsed.bundle.to_json()).unwrap();
    assert_eq!(doc["keys"][0]["use"], "wit-svid");
    assert_eq!(doc["keys"][0]["kid"], "w1");
}

#[test]
fn wit_1_kid_shared_with_jwt_key_ignores_the_wit_key() {
    let parsed = parse_value(json!({"keys": [
        jwk::ec_element("wit-svid", "shared", 1),
        jwk::ec_element("jwt-svid", "shared", 2),
    ]}));
    assert_eq!(parsed.ignored.len(), 1);
    assert_eq!(parsed.ignored[0].location, "/keys/0");
    assert!(matches!(
        parsed.ignored[0].reason,
        IgnoreReason::KidCollision { .. }
    ));
    assert_eq!(parsed.bundle.jwt_authorities().len(), 1);
    assert!(parsed.bundle.wit_authorities().is_empty());
}

#[test]
fn wit_1_wit_entry_without_kid_ignored() {
    let mut element = jwk::ec_element("wit-svid", "k", 1);
    element.as_object_mut().unwrap().remove("kid");
    let parsed = parse_value(json!({"keys": [element]}));
    assert_eq!(
        only_ignored(&parsed),
        &IgnoreReason::MissingKid { use_: "wit-svid" }
    );
}

// ---- RFC 7517 ---------------------------------------------------------------------

#[test]
fn rfc_1_base64url_x5c_ignored() {
    let ca = ca::TestCa::new("example.org");
    let mut element = jwk::x509_element(&ca.der);
    // Force characters that differ between the alphabets by re-encoding as base64url.
    let url = URL_SAFE_NO_PAD.encode(&ca.der);
    assert_ne!(url, ca.x5c());
    element["x5c"] = json!([url]);
    let parsed = parse_value(json!({"keys": [element]}));
    assert!(matches!(
        only_ignored(&parsed),
        IgnoreReason::X5cNotBase64 { .. }
    ));
}

#[test]
fn rfc_1_key_members_must_match_certificate() {
    let ca = ca::TestCa::new("example.org");
    let other = ca::TestCa::new("example.org");
    let mut element = jwk::x509_element(&ca.der);
    let other_members = jwk::key_members(&other.der);
    element["x"] = other_members["x"].clone();
    element["y"] = other_members["y"].clone();
    let parsed = parse_value(json!({"keys": [element]}));
    assert_eq!(only_ignored(&parsed), &IgnoreReason::KeyMismatch);
}

#[test]
fn rfc_1_kty_must_match_certificate_key() {
    let ca = ca::TestCa::new("example.org");
    let mut element = jwk::x509_element(&ca.der);
    element["kty"] = "RSA".into();
    element["n"] = URL_SAFE_NO_PAD.encode([0xC5u8; 256]).into();
    element["e"] = "AQAB".into();
    let parsed = parse_value(json!({"keys": [element]}));
    assert_eq!(only_ignored(&parsed), &IgnoreReason::KeyMismatch);
}

#[test]
fn rfc_1_emitted_key_members_derive_from_certificate() {
    let ca = ca::TestCa::new("example.org");
    let authority = X509Authority::from_der(ca.der.clone()).unwrap();
    let mut bundle = Bundle::new(td());
    bundle.add_x509_authority(authority.clone());
    let doc: Value = serde_json::from_slice(&bundle.to_json()).unwrap();
    let PublicKey::Ec { x, y, .. } = &authority.info().key else {
        panic!("P-256 CA expected")
    };
    assert_eq!(doc["keys"][0]["x"], URL_SAFE_NO_PAD.encode(x));
    assert_eq!(doc["keys"][0]["y"], URL_SAFE_NO_PAD.encode(y));
    assert_eq!(doc["keys"][0]["crv"], "P-256");
}

#[test]
fn rfc_2_ec_key_with_short_x_ignored() {
    let mut element = jwk::ec_element("jwt-svid", "k", 1);
    element["x"] = URL_SAFE_NO_PAD.encode([1u8; 31]).into();
    let parsed = parse_value(json!({"keys": [element, jwk::ec_element("jwt-svid", "ok", 2)]}));
    assert!(matches!(
        only_ignored(&parsed),
        IgnoreReason::BadKeyMember { member: "x", .. }
    ));
    assert_eq!(parsed.bundle.jwt_authorities().len(), 1);
}

#[test]
fn rfc_2_rsa_key_missing_n_ignored() {
    let parsed =
        parse_value(json!({"keys": [{"use": "jwt-svid", "kty": "RSA", "kid": "r", "e": "AQAB"}]}));
    assert!(matches!(
        only_ignored(&parsed),
        IgnoreReason::BadKeyMember { member: "n", .. }
    ));
}

#[test]
fn rfc_2_ed25519_key_with_31_bytes_ignored() {
    let parsed = parse_value(
        json!({"keys": [{"use": "jwt-svid", "kty": "OKP", "kid": "e",
        "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode([1u8; 31])}]}),
    );
    assert!(matches!(
        only_ignored(&parsed),
        IgnoreReason::BadKeyMember { member: "x", .. }
    ));
}

#[test]
fn rfc_2_padded_base64url_member_ignored() {
    let mut element = jwk::ec_element("jwt-svid", "k", 1);
    element["x"] = format!("{}=", URL_SAFE_NO_PAD.encode([1u8; 32])).into();
    let parsed = parse_value(json!({"keys": [element]}));
    assert!(matches!(
        only_ignored(&parsed),
        IgnoreReason::BadKeyMember { member: "x", .. }
    ));
}

#[test]
fn rfc_2_unknown_members_in_a_jwk_ignored() {
    let mut element = jwk::ec_element("jwt-svid", "k", 1);
    element["frobnicate"] = json!({"deep": [1, 2, 3]});
    let parsed = parse_value(json!({"keys": [element]}));
    assert!(parsed.ignored.is_empty());
    assert_eq!(parsed.bundle.jwt_authorities().len(), 1);
}

#[test]
fn rfc_2_unsupported_ec_curve_ignored() {
    let mut element = jwk::ec_element("jwt-svid", "k", 1);
    element["crv"] = "secp256k1".into();
    let parsed = parse_value(json!({"keys": [element]}));
    assert!(matches!(
        only_ignored(&parsed),
        IgnoreReason::UnsupportedCurve { kty: "EC", .. }
    ));
}

#[test]
fn rfc_3_duplicate_member_in_a_jwk_ignores_the_element() {
    let x = URL_SAFE_NO_PAD.encode([1u8; 32]);
    let doc = format!(
        r#"{{"keys":[{{"use":"jwt-svid","use":"x509-svid","kty":"EC","kid":"k","crv":"P-256","x":"{x}","y":"{x}"}}]}}"#
    );
    let parsed = parse(doc.as_bytes());
    assert!(
        matches!(only_ignored(&parsed), IgnoreReason::DuplicateMember { name } if name == "use")
    );
}

#[test]
fn rfc_3_duplicate_top_level_member_rejects_the_document() {
    assert!(matches!(
        refuse(br#"{"keys":[],"keys":[]}"#),
        BundleError::DuplicateMember { ref name, .. } if name == "keys"
    ));
    assert!(matches!(
        refuse(br#"{"keys":[],"spiffe_sequence":1,"spiffe_sequence":2}"#),
        BundleError::DuplicateMember { .. }
    ));
}

// ---- EXT-4 and other document-level faults ------------------------------------

#[test]
fn ext_4_trailing_data_rejected() {
    assert!(matches!(
        refuse(br#"{"keys":[]} x"#),
        BundleError::TrailingData { line: 1, .. }
    ));
    assert!(matches!(
        refuse(br#"{"keys":[]}{"keys":[]}"#),
        BundleError::TrailingData { .. }
    ));
    // Trailing whitespace is not data.
    parse(b"{\"keys\":[]}\n\t \r\n");
}

#[test]
fn ext_4_member_names_are_case_sensitive() {
    assert!(matches!(
        refuse(br#"{"KEYS":[]}"#),
        BundleError::MissingMember { found_instead: Some(ref name), .. } if name == "KEYS"
    ));
    let parsed = parse(br#"{"keys":[],"SPIFFE_SEQUENCE":4}"#);
    assert_eq!(parsed.bundle.sequence(), None);
    assert!(matches!(
        parsed.lints[0].kind,
        LintKind::SuspiciousMember { .. }
    ));
}

#[test]
fn ext_2_oversized_document_rejected_before_parsing() {
    let doc = vec![b' '; 2 * 1024 * 1024];
    assert_eq!(
        refuse(&doc),
        BundleError::TooLarge {
            limit: 1024 * 1024,
            actual: 2 * 1024 * 1024
        }
    );
    assert!(matches!(
        Bundle::parse_with_limit(&td(), br#"{"keys":[]}"#, 5),
        Err(BundleError::TooLarge {
            limit: 5,
            actual: 11
        })
    ));
}

#[test]
fn malformed_json_names_line_and_column() {
    let err = refuse(b"{\n  \"keys\": [,]\n}");
    assert!(
        matches!(
            err,
            BundleError::Syntax {
                line: 2,
                column: 12,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn invalid_utf8_rejected_with_offset() {
    assert_eq!(
        refuse(b"{\"keys\":[], \"a\":\"\xff\"}"),
        BundleError::NotUtf8 { offset: 17 }
    );
}

#[test]
fn byte_order_mark_rejected() {
    assert_eq!(
        refuse(b"\xEF\xBB\xBF{\"keys\":[]}"),
        BundleError::ByteOrderMark
    );
}

#[test]
fn deep_nesting_rejected_without_stack_overflow() {
    let doc = format!(
        r#"{{"keys":[],"x":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(matches!(refuse(doc.as_bytes()), BundleError::Syntax { .. }));
}

#[test]
fn serialisation_is_independent_of_element_order() {
    let a = ca::TestCa::new("example.org");
    let b = ca::TestCa::new("example.org");
    let forward = parse_value(
        json!({"keys": [jwk::x509_element(&a.der), jwk::x509_element(&b.der),
        jwk::ec_element("jwt-svid", "k2", 1), jwk::ec_element("jwt-svid", "k1", 2)]}),
    );
    let backward = parse_value(json!({"keys": [jwk::ec_element("jwt-svid", "k1", 2),
        jwk::ec_element("jwt-svid", "k2", 1), jwk::x509_element(&b.der), jwk::x509_element(&a.der)]}));
    assert_eq!(forward.bundle, backward.bundle);
    assert_eq!(forward.bundle.to_json(), backward.bundle.to_json());
}

#[test]
fn fed_7_trust_domain_comes_from_the_caller_never_the_document() {
    // A CA of another trust domain in a document parsed for example.org stays under
    // example.org (the caller's name), with a warning; nothing is inferred.
    let foreign = ca::TestCa::new("other.example");
    let parsed = parse_value(json!({"keys": [jwk::x509_element(&foreign.der)]}));
    assert_eq!(parsed.bundle.trust_domain(), &td());
}

#[test]
fn svid_7_signing_certificates_must_be_path_less_cas() {
    // A leaf SVID (cA=false) is never an authority; a CA whose SPIFFE ID has a path is
    // kept but flagged, since X509-SVID §3.2 says its ID MUST NOT have one.
    let ca = ca::TestCa::new("example.org");
    let leaf = ca.svid("spiffe://example.org/w");
    let parsed = parse_value(json!({"keys": [jwk::x509_element(&leaf.der)]}));
    assert!(parsed.bundle.x509_authorities().is_empty());
    let with_path =
        ca::TestCa::from_spec(&ca::CertSpec::ca("example.org").uris(&["spiffe://example.org/ca"]));
    let parsed = parse_value(json!({"keys": [jwk::x509_element(&with_path.der)]}));
    assert_eq!(parsed.bundle.x509_authorities().len(), 1);
    assert!(
        parsed
            .lints
            .iter()
            .any(|l| matches!(l.kind, LintKind::CaIdMismatch { .. }))
    );
}
