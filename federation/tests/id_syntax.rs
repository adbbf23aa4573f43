//! Conformance: SPIFFE ID and trust domain syntax (ID-1..ID-15, SPIFFE-ID §2).
//!
//! Named cases become one test each (`cases!`); the 256-byte loops (ID-6, ID-12) check
//! every byte value in one test and report every mismatch at once.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::redundant_pattern_matching,
    reason = "test code: a failed step should fail the test loudly"
)]

use spiffe_federation::trust_domain::{MAX_SPIFFE_ID_LEN, MAX_TRUST_DOMAIN_LEN};
use spiffe_federation::{IdError, SpiffeId, TrustDomain};

/// One test per case: `name: input => pattern` checks `SpiffeId::parse(input)`.
macro_rules! cases {
    ($($name:ident: $input:expr => $expected:pat),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let input: &str = &$input;
                let result = SpiffeId::parse(input);
                assert!(
                    matches!(result, $expected),
                    "{input:?} gave {result:?}, expected {}",
                    stringify!($expected)
                );
                if let Ok(id) = &result {
                    assert_eq!(id.to_string(), input, "Display must round-trip");
                }
            }
        )*
    };
}

cases! {
    id_1_valid_id_with_path: "spiffe://td/p" => Ok(_),
    id_1_https_scheme_rejected: "https://td/p" => Err(IdError::WrongScheme),
    id_1_single_slash_rejected: "spiffe:/td" => Err(IdError::WrongScheme),
    id_1_no_scheme_rejected: "td/p" => Err(IdError::WrongScheme),
    id_1_empty_rejected: "" => Err(IdError::Empty),
    id_1_scheme_only_rejected: "spiffe://" => Err(IdError::EmptyTrustDomain),
    id_1_upper_case_scheme_rejected_with_suggestion: "SPIFFE://td/p" =>
        Err(IdError::UpperCaseScheme { .. }),
    id_2_query_rejected: "spiffe://td/p?x" => Err(IdError::QueryOrFragment { found: '?', .. }),
    id_2_fragment_rejected: "spiffe://td/p#f" => Err(IdError::QueryOrFragment { found: '#', .. }),
    id_2_query_on_root_rejected: "spiffe://td?x=1" => Err(IdError::QueryOrFragment { .. }),
    id_3_empty_host_rejected: "spiffe:///path" => Err(IdError::EmptyTrustDomain),
    id_4_userinfo_rejected: "spiffe://u@td/p" => Err(IdError::UserInfo),
    id_4_user_and_password_rejected: "spiffe://u:pw@td/p" => Err(IdError::UserInfo),
    id_4_port_rejected: "spiffe://td:443/p" => Err(IdError::Port),
    id_5_upper_case_trust_domain_rejected: "spiffe://Example.org/p" =>
        Err(IdError::UpperCaseTrustDomain { .. }),
    id_6_multibyte_utf8_in_trust_domain_rejected: "spiffe://exämple.org/p" =>
        Err(IdError::TrustDomainChar { found: 'ä', .. }),
    id_6_underscore_dash_dot_digits_allowed: "spiffe://a_b-c.0-9/p" => Ok(_),
    id_7_percent_encoded_host_rejected: "spiffe://%62ad/p" => Err(IdError::PercentEncoded { .. }),
    id_8_ipv4_trust_domain_allowed: "spiffe://127.0.0.1/p" => Ok(_),
    id_8_ipv6_trust_domain_rejected: "spiffe://[::1]/p" => Err(IdError::TrustDomainChar { found: '[', .. }),
    id_8_punycode_kept_verbatim: "spiffe://xn--bcher-kva.example/p" => Ok(_),
    id_9_percent_encoded_path_rejected: "spiffe://td/%41" => Err(IdError::PercentEncoded { .. }),
    id_10_empty_segment_rejected: "spiffe://td/a//b" => Err(IdError::EmptySegment { .. }),
    id_10_leading_empty_segment_rejected: "spiffe://td//a" => Err(IdError::EmptySegment { .. }),
    id_10_dot_segment_rejected: "spiffe://td/./a" => Err(IdError::DotSegment { .. }),
    id_10_dot_dot_segment_rejected: "spiffe://td/../a" => Err(IdError::DotSegment { .. }),
    id_10_trailing_dot_rejected: "spiffe://td/a/." => Err(IdError::DotSegment { .. }),
    id_10_trailing_dot_dot_rejected: "spiffe://td/a/.." => Err(IdError::DotSegment { .. }),
    id_10_dot_prefixed_segment_allowed: "spiffe://td/.a" => Ok(_),
    id_10_dot_dot_prefixed_segment_allowed: "spiffe://td/..a" => Ok(_),
    id_10_three_dots_allowed: "spiffe://td/..." => Ok(_),
    id_11_trailing_slash_on_root_rejected: "spiffe://td/" => Err(IdError::TrailingSlash),
    id_11_trailing_slash_on_path_rejected: "spiffe://td/p/" => Err(IdError::TrailingSlash),
    id_12_upper_case_path_allowed: "spiffe://td/Prod/API" => Ok(_),
    id_12_space_in_path_rejected: "spiffe://td/a b" => Err(IdError::PathChar { found: ' ', .. }),
    id_13_2048_byte_id_accepted: long_id(MAX_SPIFFE_ID_LEN) => Ok(_),
    id_13_2049_byte_id_rejected: long_id(MAX_SPIFFE_ID_LEN + 1) =>
        Err(IdError::TooLong { limit: 2048, actual: 2049 }),
    id_14_255_byte_trust_domain_accepted: format!("spiffe://{}/p", "a".repeat(255)) => Ok(_),
    id_14_256_byte_trust_domain_rejected: format!("spiffe://{}/p", "a".repeat(256)) =>
        Err(IdError::TrustDomainTooLong { limit: 255, actual: 256 }),
}

/// A SPIFFE ID of exactly `len` bytes, with path segments of 100 bytes.
fn long_id(len: usize) -> String {
    let mut id = String::from("spiffe://example.org");
    while id.len() < len {
        let room = len - id.len();
        let segment = room.saturating_sub(1).clamp(1, 100);
        if room == 1 {
            // A trailing "/" would be invalid; lengthen the last segment instead.
            id.push('x');
        } else {
            id.push('/');
            id.push_str(&"x".repeat(segment));
        }
    }
    id
}

#[test]
fn id_13_long_id_helper_is_exact() {
    assert_eq!(long_id(2048).len(), 2048);
    assert_eq!(long_id(2049).len(), 2049);
}

#[test]
fn id_5_upper_case_suggests_lower_case() {
    assert_eq!(
        TrustDomain::new("Example.ORG"),
        Err(IdError::UpperCaseTrustDomain {
            suggestion: "example.org".to_owned()
        })
    );
    assert_eq!(
        SpiffeId::parse("Spiffe://td/p"),
        Err(IdError::UpperCaseScheme {
            suggestion: "spiffe://td/p".to_owned()
        })
    );
}

#[test]
fn id_6_every_byte_as_trust_domain_suffix() {
    let mut wrong = Vec::new();
    for byte in 0u8..=255 {
        let ch = char::from(byte);
        let allowed = matches!(ch, 'a'..='z' | '0'..='9' | '.' | '-' | '_');
        // As a bare trust domain and inside a SPIFFE ID (where '/' ends the authority).
        let td = format!("trustdomain{ch}");
        let td_ok = TrustDomain::new(&td).is_ok();
        if td_ok != allowed {
            wrong.push(format!(
                "TrustDomain::new({td:?}) ok={td_ok}, expected {allowed}"
            ));
        }
        if ch != '/' {
            let id = format!("spiffe://trustdomain{ch}/path");
            let id_ok = SpiffeId::parse(&id).is_ok();
            if id_ok != allowed {
                wrong.push(format!(
                    "SpiffeId::parse({id:?}) ok={id_ok}, expected {allowed}"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} mismatches:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn id_12_every_byte_as_path_character() {
    let mut wrong = Vec::new();
    for byte in 0u8..=255 {
        let ch = char::from(byte);
        if ch == '/' {
            continue; // a separator, covered by ID-10 and ID-11
        }
        let allowed = matches!(ch, 'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_');
        let id = format!("spiffe://trustdomain/path{ch}");
        let ok = SpiffeId::parse(&id).is_ok();
        if ok != allowed {
            wrong.push(format!("{id:?} ok={ok}, expected {allowed}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} mismatches:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn id_8_ip_like_names_are_not_normalised() {
    let a = TrustDomain::new("127.0.0.1").unwrap();
    let b = TrustDomain::new("127.000.000.001").unwrap();
    assert_ne!(a, b);
    assert_eq!(b.as_str(), "127.000.000.001");
}

#[test]
fn id_13_generated_ids_are_capped() {
    let td = TrustDomain::new("example.org").unwrap();
    let path = format!("/{}", "x".repeat(MAX_SPIFFE_ID_LEN));
    assert!(matches!(
        SpiffeId::new(td, &path),
        Err(IdError::TooLong { limit: 2048, .. })
    ));
}

#[test]
fn id_14_bare_trust_domain_length_limit() {
    assert!(TrustDomain::new(&"a".repeat(MAX_TRUST_DOMAIN_LEN)).is_ok());
    assert_eq!(
        TrustDomain::new(&"a".repeat(MAX_TRUST_DOMAIN_LEN + 1)),
        Err(IdError::TrustDomainTooLong {
            limit: 255,
            actual: 256
        })
    );
}

#[test]
fn id_15_path_is_case_sensitive() {
    let upper = SpiffeId::parse("spiffe://td/A").unwrap();
    let lower = SpiffeId::parse("spiffe://td/a").unwrap();
    assert_ne!(upper, lower);
}

#[test]
fn trust_domain_constructor_refuses_uris_with_a_hint() {
    assert_eq!(
        TrustDomain::new("spiffe://example.org/x"),
        Err(IdError::TrustDomainIsUri {
            suggestion: "example.org".to_owned()
        })
    );
    assert_eq!(
        TrustDomain::from_spiffe_id("spiffe://example.org/x").unwrap(),
        TrustDomain::new("example.org").unwrap()
    );
}

#[test]
fn serde_uses_the_validating_constructor() {
    let id: SpiffeId = serde_json::from_str(r#""spiffe://td/a""#).unwrap();
    assert_eq!(serde_json::to_string(&id).unwrap(), r#""spiffe://td/a""#);
    assert!(serde_json::from_str::<SpiffeId>(r#""spiffe://TD/a""#).is_err());
    assert!(serde_json::from_str::<TrustDomain>(r#""bad td""#).is_err());
}

#[test]
fn sec_1_no_trust_domain_is_derived_from_a_url() {
    // The trust domain of a relationship is configured, never inferred from the
    // endpoint URL (SPIFFE Federation §7.2): a URL is not a trust domain name.
    for url in [
        "https://bundle.example.org/",
        "https://example.org",
        "example.org:443",
    ] {
        assert!(TrustDomain::new(url).is_err(), "{url}");
    }
}
