//! Property: for any bundle, parse(serialise(b)) == b, serialisation is a fixed point,
//! and a bundle map round-trips every member (BUN-*, MAP-*).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

#[path = "support/ca.rs"]
mod ca;

use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;
use spiffe_federation::bundle::{EcCurve, JwtAuthority, PublicKey, X509Authority};
use spiffe_federation::{Bundle, BundleMap, TrustDomain};

/// Real CA certificates of every supported key type, made once (key generation is the
/// slow part; the properties are about the document, not the keys).
fn ca_pool() -> &'static [X509Authority] {
    static POOL: OnceLock<Vec<X509Authority>> = OnceLock::new();
    POOL.get_or_init(|| {
        [
            &ca::PKCS_ECDSA_P256_SHA256,
            &ca::PKCS_ECDSA_P256_SHA256,
            &ca::PKCS_ECDSA_P384_SHA384,
            &ca::PKCS_ECDSA_P521_SHA512,
            &ca::PKCS_RSA_SHA256,
            &ca::PKCS_ED25519,
        ]
        .into_iter()
        .map(|alg| {
            let ca = ca::TestCa::from_spec(&ca::CertSpec::ca("example.org").alg(alg));
            X509Authority::from_der(ca.der).unwrap()
        })
        .collect()
    })
}

fn public_key() -> impl Strategy<Value = PublicKey> {
    prop_oneof![
        (
            prop_oneof![
                Just(EcCurve::P256),
                Just(EcCurve::P384),
                Just(EcCurve::P521)
            ],
            any::<u8>()
        )
            .prop_map(|(curve, seed)| PublicKey::Ec {
                curve,
                x: vec![seed; curve.coordinate_len()],
                y: vec![seed.wrapping_add(7); curve.coordinate_len()],
            }),
        (1u8.., prop::collection::vec(any::<u8>(), 0..300), 1u32..).prop_map(|(lead, rest, e)| {
            let mut n = vec![lead];
            n.extend(rest);
            let e: Vec<u8> = e
                .to_be_bytes()
                .into_iter()
                .skip_while(|b| *b == 0)
                .collect();
            PublicKey::Rsa { n, e }
        }),
        prop::collection::vec(any::<u8>(), 32).prop_map(|x| PublicKey::Ed25519 { x }),
    ]
}

fn kid() -> impl Strategy<Value = String> {
    // Any non-empty string, including quotes, escapes and non-ASCII.
    "\\PC{1,24}"
}

fn trust_domain() -> impl Strategy<Value = TrustDomain> {
    "[a-z0-9][a-z0-9._-]{0,30}".prop_map(|s| TrustDomain::new(&s).unwrap())
}

prop_compose! {
    fn bundle()(
        td in trust_domain(),
        cas in prop::collection::vec(0..6usize, 0..6),
        jwt in prop::collection::btree_map(kid(), public_key(), 0..5),
        wit in prop::collection::btree_map(kid(), public_key(), 0..3),
        sequence in prop::option::of(any::<u64>()),
        hint in prop::option::of(1u64..=u64::MAX),
    ) -> Bundle {
        let mut bundle = Bundle::new(td);
        for index in cas {
            bundle.add_x509_authority(ca_pool()[index].clone());
        }
        for (kid, key) in &jwt {
            bundle.insert_jwt_authority(JwtAuthority::new(kid.clone(), key.clone()).unwrap());
        }
        for (kid, key) in wit {
            // A WIT kid must not reuse a JWT kid (WIT-SVID §6.1); such keys are not
            // representable in a valid bundle, so the generator skips them.
            if !jwt.contains_key(&kid) {
                bundle.insert_wit_authority(JwtAuthority::new(kid, key).unwrap());
            }
        }
        bundle.set_sequence(sequence);
        bundle.set_refresh_hint(hint.map(Duration::from_secs));
        bundle
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn bundle_parse_of_serialise_is_identity(bundle in bundle()) {
        let json = bundle.to_json();
        let parsed = Bundle::parse(bundle.trust_domain(), &json).unwrap();
        prop_assert!(parsed.ignored.is_empty(), "{:?}", parsed.ignored);
        prop_assert_eq!(&parsed.bundle, &bundle);
        prop_assert_eq!(parsed.bundle.to_json(), json);
    }

    #[test]
    fn bundle_pretty_and_compact_parse_alike(bundle in bundle()) {
        let pretty = Bundle::parse(bundle.trust_domain(), bundle.to_json_pretty().as_bytes()).unwrap();
        prop_assert_eq!(pretty.bundle, bundle);
    }

    #[test]
    fn bundle_map_round_trips(bundles in prop::collection::vec(bundle(), 0..4)) {
        let map: BundleMap = bundles.into_iter().collect();
        let json = map.to_json();
        let parsed = BundleMap::parse(&json).unwrap();
        prop_assert!(parsed.ignored.is_empty());
        prop_assert_eq!(parsed.map.len(), map.len());
        for (td, bundle) in map.iter() {
            let back = parsed.map.get(td).unwrap();
            prop_assert!(back.same_authorities(bundle));
            prop_assert_eq!(back.sequence(), bundle.sequence());
            prop_assert_eq!(back.refresh_hint(), None); // MAP-5
        }
        prop_assert_eq!(parsed.map.to_json(), json);
    }
}
