//! Regenerates the example bundles in `examples/bundles/` with fresh certificates.
//!
//! Run from the repository root:
//! `cargo run -p spiffe-federation --example make_example_bundles -- examples/bundles`
//!
//! The documents follow the SPIFFE Trust Domain and Bundle standard's Appendix A
//! (an `example.com` CA rotation), with real RSA CA certificates substituted for the
//! standard's placeholders, valid for ten years from the start of 2026.

#![expect(clippy::print_stdout, reason = "a command-line tool")]

use std::error::Error;
use std::path::PathBuf;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, SanType, SignatureAlgorithm,
};
use spiffe_federation::bundle::{EcCurve, JwtAuthority, PublicKey, X509Authority};
use spiffe_federation::{Bundle, BundleMap, TrustDomain};
use time::macros::datetime;

fn ca(td: &str, alg: &'static SignatureAlgorithm) -> Result<X509Authority, Box<dyn Error>> {
    let key = KeyPair::generate_for(alg)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, td);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.subject_alt_names = vec![SanType::URI(format!("spiffe://{td}").try_into()?)];
    params.not_before = datetime!(2026-01-01 00:00 UTC);
    params.not_after = datetime!(2036-01-01 00:00 UTC);
    let cert = params.self_signed(&key)?;
    Ok(X509Authority::from_der(cert.der().to_vec())?)
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "examples/bundles".into()),
    );
    let com: TrustDomain = "example.com".parse()?;

    // TDB Appendix A: bundle #1 holds certificate #1; bundle #2 adds certificate #2.
    let mut one = Bundle::new(com);
    one.add_x509_authority(ca("example.com", &PKCS_RSA_SHA256)?);
    one.set_sequence(Some(1));
    one.set_refresh_hint(Some(Duration::from_secs(2_419_200)));
    let mut two = one.clone();
    two.add_x509_authority(ca("example.com", &PKCS_RSA_SHA256)?);
    two.set_sequence(Some(2));

    // A second trust domain with an X.509 CA and a JWT-SVID key, for the bundle map.
    let mut org = Bundle::new("example.org".parse()?);
    org.add_x509_authority(ca("example.org", &PKCS_ECDSA_P256_SHA256)?);
    let jwt_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    // The raw public key is the uncompressed point 0x04 || x || y.
    let point = jwt_key.public_key_raw();
    org.insert_jwt_authority(JwtAuthority::new(
        "jwt-2026-01",
        PublicKey::Ec {
            curve: EcCurve::P256,
            x: point[1..33].to_vec(),
            y: point[33..65].to_vec(),
        },
    )?);
    org.set_sequence(Some(12));
    org.set_refresh_hint(Some(Duration::from_secs(300)));

    let map: BundleMap = [two.clone(), org.clone()].into_iter().collect();
    let files = [
        ("example.com.1.json", one.to_json_pretty() + "\n"),
        ("example.com.2.json", two.to_json_pretty() + "\n"),
        ("example.com.pem", two.to_pem()),
        ("example.org.json", org.to_json_pretty() + "\n"),
        ("bundle-map.json", map.to_json_pretty() + "\n"),
    ];
    for (name, contents) in files {
        let path = dir.join(name);
        std::fs::write(&path, contents)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
