//! Fuzz `BundleMap::parse` on arbitrary bytes.
//!
//! Invariants:
//! - parsing never panics, whatever the input;
//! - every bundle is filed under its own trust domain;
//! - when parsing succeeds, the serialised map parses again with nothing ignored, into
//!   an equal map, except for refresh hints (see below);
//! - `to_json` is a fixed point: serialising the re-parsed map gives the same bytes.
//!
//! Refresh hints: `BundleMap::parse` keeps a bundle's `spiffe_refresh_hint`, while
//! `BundleMap::to_json` leaves hints out (TDB §5.1.1, MAP-5), so a map whose bundles
//! carry hints does not round-trip exactly (seed `with-refresh-hint.json`). Whether
//! parse should drop them too (MAP-6: a map consumer must not act on them) is an open
//! question for the crate; this target compares maps with hints cleared, which holds
//! either way, and checks that the serialised form carries none.

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
    assert_eq!(
        again.map,
        without_hints(&parsed.map),
        "round trip changed the map"
    );
    assert_eq!(again.map.to_json(), json, "to_json is not a fixed point");
});

fn without_hints(map: &BundleMap) -> BundleMap {
    map.iter()
        .map(|(_, bundle)| {
            let mut bundle = bundle.clone();
            bundle.set_refresh_hint(None);
            bundle
        })
        .collect()
}
