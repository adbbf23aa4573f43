//! Conformance tests for the SPIFFE bundle document (BUN-*, X5C-*, JWK-*, WIT-*, RFC-*).

#[path = "support/ca.rs"]
mod ca;

use spiffe_federation::{Bundle, TrustDomain};

fn td() -> TrustDomain {
    "example.org".parse().unwrap()
}

#[test]
fn bun_1_x509_entry_round_trips() {
    let ca = ca::TestCa::new("example.org");
    let doc = Bundle::new(td());
    let _ = doc;
    let authority = spiffe_federation::bundle::X509Authority::from_der(ca.der.clone()).unwrap();
    let mut bundle = Bundle::new(td());
    bundle.add_x509_authority(authority);
    bundle.set_sequence(Some(1));
    let parsed = Bundle::parse(&td(), &bundle.to_json()).unwrap();
    assert_eq!(parsed.bundle, bundle, "{:?}", parsed.ignored);
    assert!(parsed.ignored.is_empty());
}
