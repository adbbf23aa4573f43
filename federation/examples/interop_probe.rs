//! A command-line probe that exposes the crate's parsers and serialiser as JSON, for
//! the independent cross-checks in `tests/interop/` (Python, PyPI `spiffe` and
//! `cryptography`). It is test tooling, not an API.
//!
//! Run from the repository root:
//! `cargo run -q -p spiffe-federation --example interop_probe -- <verb> [args]`
//!
//! Verbs (output is one JSON document per line on stdout):
//! - `ids`: stdin holds one JSON string per line (JSON so that any character,
//!   newline included, can be a candidate); prints for each
//!   `{"input","ok","trust_domain","path","error","error_kind"}` from `SpiffeId::parse`.
//! - `trust-domains`: as `ids`, through `TrustDomain::new` (`path` is always null).
//! - `bundle-parse TD`: stdin holds a bundle document; prints
//!   `{"ok","error","error_kind","sequence","refresh_hint","x509":[…],"jwt":[…],
//!   "wit":[…],"ignored":[…],"lints":[…],"json"}` where `json` is `Bundle::to_json`.
//! - `bundle-make [TD] [--keys-out PATH]`: prints a bundle (`Bundle::to_json`) holding
//!   rcgen CAs of every supported key type and JWT-SVID/WIT-SVID keys; with
//!   `--keys-out`, also writes `{"jwt":{kid:spki_b64},"wit":{kid:spki_b64}}` so that
//!   the keys can be checked against the serialised members independently.
//!
//! Error kinds are variant names (`UpperCaseTrustDomain`, `Certificate/NotCa`), so the
//! tests assert variants rather than messages.

use std::error::Error;
use std::io::{BufRead as _, BufWriter, Read as _, Write as _};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ECDSA_P521_SHA512, PKCS_ED25519,
    PKCS_RSA_SHA256, PublicKeyData as _, SanType, SignatureAlgorithm,
};
use serde_json::{Map, Value, json};
use spiffe_federation::bundle::{IgnoreReason, JwtAuthority, PublicKey, X509Authority};
use spiffe_federation::{Bundle, SpiffeId, TrustDomain};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const USAGE: &str = "usage: interop_probe ids | trust-domains | bundle-parse TD | \
                     bundle-make [TD] [--keys-out PATH]";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut out = BufWriter::new(std::io::stdout().lock());
    match args.first().map(String::as_str) {
        Some("ids") => each_line(&mut out, id_report)?,
        Some("trust-domains") => each_line(&mut out, trust_domain_report)?,
        Some("bundle-parse") => {
            let td = args.get(1).ok_or(USAGE)?;
            let td = TrustDomain::new(td)?;
            let mut document = Vec::new();
            std::io::stdin().read_to_end(&mut document)?;
            writeln!(out, "{}", bundle_report(&td, &document))?;
        }
        Some("bundle-make") => {
            let mut td = "example.org".to_owned();
            let mut keys_out = None;
            let mut rest = args.iter().skip(1);
            while let Some(arg) = rest.next() {
                if arg == "--keys-out" {
                    keys_out = Some(rest.next().ok_or(USAGE)?);
                } else {
                    td.clone_from(arg);
                }
            }
            let (bundle, keys) = make_bundle(&TrustDomain::new(&td)?)?;
            if let Some(path) = keys_out {
                std::fs::write(path, keys.to_string())?;
            }
            out.write_all(&bundle.to_json())?;
            writeln!(out)?;
        }
        _ => return Err(USAGE.into()),
    }
    out.flush()?;
    Ok(())
}

/// Read stdin as JSON strings, one per line, and print `report` of each.
fn each_line(out: &mut impl std::io::Write, report: fn(&str) -> Value) -> Result<()> {
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let input: String = serde_json::from_str(&line)?;
        writeln!(out, "{}", report(&input))?;
    }
    Ok(())
}

fn id_report(input: &str) -> Value {
    match SpiffeId::parse(input) {
        Ok(id) => json!({
            "input": input,
            "ok": true,
            "trust_domain": id.trust_domain().as_str(),
            "path": id.path(),
            "display": id.to_string(),
            "error": null,
            "error_kind": null,
        }),
        Err(err) => json!({
            "input": input,
            "ok": false,
            "trust_domain": null,
            "path": null,
            "error": err.to_string(),
            "error_kind": variant_name(&err),
        }),
    }
}

fn trust_domain_report(input: &str) -> Value {
    match TrustDomain::new(input) {
        Ok(td) => json!({
            "input": input,
            "ok": true,
            "trust_domain": td.as_str(),
            "path": null,
            "error": null,
            "error_kind": null,
        }),
        Err(err) => json!({
            "input": input,
            "ok": false,
            "trust_domain": null,
            "path": null,
            "error": err.to_string(),
            "error_kind": variant_name(&err),
        }),
    }
}

fn bundle_report(td: &TrustDomain, document: &[u8]) -> Value {
    let parsed = match Bundle::parse(td, document) {
        Ok(parsed) => parsed,
        Err(err) => {
            return json!({
                "ok": false,
                "error": err.to_string(),
                "error_kind": variant_name(&err),
            });
        }
    };
    let bundle = &parsed.bundle;
    let x509: Vec<Value> = bundle
        .x509_authorities()
        .iter()
        .map(|authority| {
            let info = authority.info();
            json!({
                "der_b64": STANDARD.encode(authority.der()),
                "subject": info.subject,
                "issuer": info.issuer,
                "not_before": info.not_before.unix_timestamp(),
                "not_after": info.not_after.unix_timestamp(),
                "self_signed": info.self_signed,
                "spiffe_ids": info.spiffe_ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "sha256": info.sha256,
                "key": key_json(&info.key, None),
            })
        })
        .collect();
    let keyed = |authorities: &std::collections::BTreeMap<String, JwtAuthority>| -> Vec<Value> {
        authorities
            .values()
            .map(|authority| key_json(authority.key(), Some(authority.kid())))
            .collect()
    };
    let ignored: Vec<Value> = parsed
        .ignored
        .iter()
        .map(|ignored| {
            json!({
                "location": ignored.location,
                "kind": ignore_kind(&ignored.reason),
                "reason": ignored.reason.to_string(),
            })
        })
        .collect();
    let lints: Vec<Value> = parsed
        .lints
        .iter()
        .map(|lint| {
            json!({
                "location": lint.location,
                "kind": variant_name(&lint.kind),
                "message": lint.kind.to_string(),
            })
        })
        .collect();
    json!({
        "ok": true,
        "error": null,
        "error_kind": null,
        "trust_domain": bundle.trust_domain().as_str(),
        "sequence": bundle.sequence(),
        "refresh_hint": bundle.refresh_hint().map(|hint| hint.as_secs()),
        "x509": x509,
        "jwt": keyed(bundle.jwt_authorities()),
        "wit": keyed(bundle.wit_authorities()),
        "ignored": ignored,
        "lints": lints,
        "json": String::from_utf8_lossy(&bundle.to_json()),
    })
}

/// A key as its JWK members (`kty` plus `crv`/`x`/`y`/`n`/`e`), and `kid` when given.
fn key_json(key: &PublicKey, kid: Option<&str>) -> Value {
    let mut members = Map::new();
    if let Some(kid) = kid {
        members.insert("kid".into(), kid.into());
    }
    members.insert("kty".into(), key.kty().into());
    for (name, value) in key.jwk_members() {
        members.insert(name.into(), value.into());
    }
    Value::Object(members)
}

/// `Certificate/NotCa` for a wrapped certificate error, else the variant name.
fn ignore_kind(reason: &IgnoreReason) -> String {
    match reason {
        IgnoreReason::Certificate(inner) => format!("Certificate/{}", variant_name(inner)),
        other => variant_name(other),
    }
}

/// The variant name of an error enum, read from its `Debug` form.
fn variant_name(value: &impl std::fmt::Debug) -> String {
    format!("{value:?}")
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect()
}

/// Key types the bundle can carry, with the names the Python suite expects.
const KEY_TYPES: [(&str, &SignatureAlgorithm); 5] = [
    ("p256", &PKCS_ECDSA_P256_SHA256),
    ("p384", &PKCS_ECDSA_P384_SHA384),
    ("p521", &PKCS_ECDSA_P521_SHA512),
    ("rsa2048", &PKCS_RSA_SHA256),
    ("ed25519", &PKCS_ED25519),
];

/// A bundle with one CA and one JWT-SVID key per key type and one WIT-SVID key, plus
/// the SubjectPublicKeyInfo (DER, base64) of every JWT/WIT key by kid.
fn make_bundle(td: &TrustDomain) -> Result<(Bundle, Value)> {
    let mut bundle = Bundle::new(td.clone());
    let mut jwt_spki = Map::new();
    let mut wit_spki = Map::new();
    for (name, alg) in KEY_TYPES {
        let (ca, _) = self_signed_ca(td, &format!("interop {name} CA"), alg)?;
        bundle.add_x509_authority(ca);

        let kid = format!("jwt-{name}");
        let (key, spki) = jwt_key(td, alg)?;
        bundle.insert_jwt_authority(JwtAuthority::new(kid.clone(), key)?);
        jwt_spki.insert(kid, spki.into());
    }
    let (key, spki) = jwt_key(td, &PKCS_ECDSA_P256_SHA256)?;
    bundle.insert_wit_authority(JwtAuthority::new("wit-p256", key)?);
    wit_spki.insert("wit-p256".into(), spki.into());

    bundle.set_sequence(Some(42));
    bundle.set_refresh_hint(Some(Duration::from_secs(300)));
    Ok((bundle, json!({ "jwt": jwt_spki, "wit": wit_spki })))
}

/// A self-signed SPIFFE CA: CA=true, keyCertSign + cRLSign, URI SAN `spiffe://td`.
fn self_signed_ca(
    td: &TrustDomain,
    common_name: &str,
    alg: &'static SignatureAlgorithm,
) -> Result<(X509Authority, KeyPair)> {
    let key = KeyPair::generate_for(alg)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.subject_alt_names = vec![SanType::URI(td.id().to_string().try_into()?)];
    let cert = params.self_signed(&key)?;
    Ok((X509Authority::from_der(cert.der().to_vec())?, key))
}

/// A fresh signing key as JWK members, with its SPKI (DER, base64) from rcgen. The
/// members are read through a throwaway certificate, so every key type goes through
/// one path; the SPKI lets the Python side check them without this crate.
fn jwt_key(td: &TrustDomain, alg: &'static SignatureAlgorithm) -> Result<(PublicKey, String)> {
    let (holder, key) = self_signed_ca(td, "key holder", alg)?;
    Ok((
        holder.info().key.clone(),
        STANDARD.encode(key.subject_public_key_info()),
    ))
}
