//! Fuzz `SpiffeId::parse` and `TrustDomain::new` on arbitrary UTF-8.
//!
//! Invariants:
//! - neither parser panics;
//! - on success, `Display` gives back exactly the input (no normalisation, ID-5/ID-8);
//! - an accepted ID's trust domain is itself a valid trust domain name, and
//!   `SpiffeId::new` rebuilds the same ID from its parts;
//! - the entry points agree: `FromStr`/`TryFrom` with `parse`/`new`, and for
//!   `spiffe://X`, `TrustDomain::from_spiffe_id` with `SpiffeId::parse`, and (when `X`
//!   has no `/`) with `TrustDomain::new(X)`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spiffe_federation::{SpiffeId, TrustDomain};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    check_spiffe_id(input);
    check_trust_domain(input);
});

fn check_spiffe_id(input: &str) {
    let parsed = SpiffeId::parse(input);
    assert_eq!(input.parse::<SpiffeId>(), parsed, "FromStr disagrees");
    assert_eq!(SpiffeId::try_from(input), parsed, "TryFrom<&str> disagrees");
    assert_eq!(
        SpiffeId::try_from(input.to_owned()),
        parsed,
        "TryFrom<String> disagrees"
    );
    let Ok(id) = parsed else {
        return;
    };
    assert_eq!(id.to_string(), input, "Display does not round-trip");
    assert!(input.len() <= spiffe_federation::trust_domain::MAX_SPIFFE_ID_LEN);

    let td = TrustDomain::new(id.trust_domain().as_str())
        .expect("an accepted ID's trust domain must be a valid name");
    assert_eq!(&td, id.trust_domain());
    assert_eq!(
        TrustDomain::from_spiffe_id(input).as_ref(),
        Ok(id.trust_domain())
    );
    assert_eq!(SpiffeId::new(td, id.path()).as_ref(), Ok(&id));
    assert_eq!(id.is_root(), id.path().is_empty());
}

fn check_trust_domain(input: &str) {
    let parsed = TrustDomain::new(input);
    assert_eq!(input.parse::<TrustDomain>(), parsed, "FromStr disagrees");
    assert_eq!(
        TrustDomain::try_from(input),
        parsed,
        "TryFrom<&str> disagrees"
    );

    let as_id = format!("spiffe://{input}");
    let from_id = TrustDomain::from_spiffe_id(&as_id);
    let id_td = SpiffeId::parse(&as_id).map(|id| id.trust_domain().clone());
    assert_eq!(
        from_id, id_td,
        "from_spiffe_id disagrees with SpiffeId::parse"
    );
    if !input.contains('/') {
        assert_eq!(
            parsed.as_ref().ok(),
            id_td.as_ref().ok(),
            "TrustDomain::new({input:?}) disagrees with SpiffeId::parse({as_id:?})"
        );
    }

    let Ok(td) = parsed else {
        return;
    };
    assert_eq!(td.to_string(), input, "Display does not round-trip");
    assert_eq!(td.as_str(), input);
    assert_eq!(td.id().to_string(), as_id);
    assert_eq!(SpiffeId::parse(&as_id).as_ref(), Ok(&td.id()));
}
