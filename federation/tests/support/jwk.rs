//! Building bundle documents for tests as `serde_json` values.
//!
//! Include with `#[path = "support/jwk.rs"] mod jwk;` after `ca`.

#![allow(dead_code, reason = "each test crate uses a different subset")]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// The JWK members (`kty`, `crv`, `x`, `y` / `n`, `e`) of a certificate's key, as a
/// SPIRE server would emit them.
///
/// Read with x509-parser directly, not through the code under test.
pub(crate) fn key_members(der: &[u8]) -> serde_json::Map<String, Value> {
    use x509_parser::prelude::{FromDer as _, X509Certificate};
    use x509_parser::public_key::PublicKey;
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    let spki = cert.public_key();
    let b64 = |bytes: &[u8]| Value::from(URL_SAFE_NO_PAD.encode(bytes));
    let strip = |bytes: &[u8]| {
        bytes
            .iter()
            .skip_while(|b| **b == 0)
            .copied()
            .collect::<Vec<u8>>()
    };
    let mut members = serde_json::Map::new();
    match spki.parsed().unwrap() {
        PublicKey::RSA(rsa) => {
            members.insert("kty".into(), "RSA".into());
            members.insert("n".into(), b64(&strip(rsa.modulus)));
            members.insert("e".into(), b64(&strip(rsa.exponent)));
        }
        PublicKey::EC(point) => {
            let data = point.data();
            let len = (data.len() - 1) / 2;
            let crv = match len {
                32 => "P-256",
                48 => "P-384",
                _ => "P-521",
            };
            members.insert("kty".into(), "EC".into());
            members.insert("crv".into(), crv.into());
            members.insert("x".into(), b64(&data[1..=len]));
            members.insert("y".into(), b64(&data[1 + len..]));
        }
        PublicKey::Unknown(raw) if raw.len() == 32 => {
            members.insert("kty".into(), "OKP".into());
            members.insert("crv".into(), "Ed25519".into());
            members.insert("x".into(), b64(raw));
        }
        other => panic!("unexpected key {other:?}"),
    }
    members
}

/// An `x509-svid` element for a DER CA certificate.
pub(crate) fn x509_element(der: &[u8]) -> Value {
    use base64::engine::general_purpose::STANDARD;
    let mut element = key_members(der);
    element.insert("use".into(), "x509-svid".into());
    element.insert("x5c".into(), json!([STANDARD.encode(der)]));
    Value::Object(element)
}

/// A `jwt-svid` (or other `use_`) EC P-256 element with arbitrary but well-formed
/// coordinates derived from `seed`.
pub(crate) fn ec_element(use_: &str, kid: &str, seed: u8) -> Value {
    json!({
        "use": use_,
        "kty": "EC",
        "kid": kid,
        "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode([seed; 32]),
        "y": URL_SAFE_NO_PAD.encode([seed.wrapping_add(1); 32]),
    })
}

/// A bundle document from elements and optional top-level members.
pub(crate) fn document(keys: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({ "keys": keys })).unwrap()
}
