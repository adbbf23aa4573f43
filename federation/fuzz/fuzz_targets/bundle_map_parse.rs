//! Fuzz `BundleMap::parse` on arbitrary bytes.
//!
//! Invariants:
//! - parsing never panics, whatever the input;
//! - every bundle is filed under its own trust domain;
//! - no bundle in a parsed map carries a refresh hint (MAP-6), and none is written
//!   (MAP-5; seed `with-refresh-hint.json` has one on input);
//! - when parsing succeeds, the serialised map parses again with nothing ignored, into
//!   an equal map;
//! - `to_json` is a fixed point: serialising the re-parsed map gives the same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spiffe_federation::BundleMap;

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = BundleMap::parse(data) else {
        return;
    };
    for (td, bundle) in parsed.map.iter() {
        assert_eq!(
            bundle.trust_domain(),
            td,
            "bundle filed under another domain"
        );
        assert!(bundle.refresh_hint().is_none(), "a map kept a refresh hint (MAP-6)");
    }

    let json = parsed.map.to_json();
    let again = BundleMap::parse(&json).expect("to_json output must parse");
    assert!(
        again.ignored.is_empty(),
        "to_json output had ignored elements: {:?}",
        again.ignored
    );
    assert!(
        again.map.iter().all(|(_, b)| b.refresh_hint().is_none()),
        "to_json wrote a refresh hint into a map (MAP-5)"
    );
    assert_eq!(again.map, parsed.map, "round trip changed the map");
    assert_eq!(again.map.to_json(), json, "to_json is not a fixed point");
});
