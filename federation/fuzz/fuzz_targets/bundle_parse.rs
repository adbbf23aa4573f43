//! Fuzz `Bundle::parse` on arbitrary bytes for a fixed trust domain.
//!
//! Invariants:
//! - parsing never panics, whatever the input;
//! - when it succeeds, the serialised bundle parses again with nothing ignored,
//!   into an equal bundle;
//! - `to_json` is a fixed point: serialising the re-parsed bundle gives the same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spiffe_federation::{Bundle, TrustDomain};

fuzz_target!(|data: &[u8]| {
    let td = TrustDomain::new("example.org").expect("a valid trust domain");
    let Ok(parsed) = Bundle::parse(&td, data) else {
        return;
    };
    assert_eq!(parsed.bundle.trust_domain(), &td);

    let json = parsed.bundle.to_json();
    let again = Bundle::parse(&td, &json).expect("to_json output must parse");
    assert!(
        again.ignored.is_empty(),
        "to_json output had ignored elements: {:?}",
        again.ignored
    );
    assert_eq!(again.bundle, parsed.bundle, "round trip changed the bundle");
    assert_eq!(again.bundle.to_json(), json, "to_json is not a fixed point");
});
