//! Test CAs made with rcgen at test time (ECDSA P-256, aws-lc-rs).
//!
//! Owns the certificates tests make: [`TestCa`], a SPIFFE X.509 CA of a trust domain
//! (CA, keyCertSign + cRLSign, URI SAN `spiffe://<td>`) that issues X509-SVIDs, or a
//! Web PKI root (no SPIFFE ID) that issues server certificates for `localhost` and
//! `127.0.0.1`; [`self_signed_leaf`], a certificate that is not a CA; [`EcKey`], a P-256
//! key as a JWT authority. Validity is an hour in the past to 30 days ahead unless a
//! constructor says otherwise.
//!
//! Does not own the gateway's development PKI (`fedgw::dev::pki`, which tests use
//! through the gateway harness) nor any verification: what a certificate is good for
//! is decided by the code under test.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use spiffe_federation::bundle::{EcCurve, JwtAuthority, PublicKey, X509Authority};
use time::OffsetDateTime;

/// A CA made with rcgen: its certificate and what it needs to sign.
pub struct TestCa {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM.
    pub key_pem: String,
    /// The trust domain of a SPIFFE CA; `None` for a Web PKI root.
    trust_domain: Option<String>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

/// The default validity: an hour ago to 30 days ahead.
fn default_validity() -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (
        now - time::Duration::hours(1),
        now + time::Duration::days(30),
    )
}

impl TestCa {
    /// A SPIFFE CA for `td`: CA, keyCertSign + cRLSign, URI SAN `spiffe://td`.
    pub fn spiffe(td: &str) -> Self {
        Self::make(&format!("{td} e2e SPIFFE CA"), Some(td), default_validity())
    }

    /// A SPIFFE CA for `td` whose common name carries `label` (`<td> <label> CA`), to
    /// tell CAs of one domain apart (a verifier that picks an issuer by subject name
    /// needs distinct names).
    pub fn spiffe_named(td: &str, label: &str) -> Self {
        Self::make(&format!("{td} {label} CA"), Some(td), default_validity())
    }

    /// A SPIFFE CA for `td` valid from `not_before` to `not_after`.
    pub fn spiffe_valid(td: &str, not_before: OffsetDateTime, not_after: OffsetDateTime) -> Self {
        Self::make(
            &format!("{td} e2e SPIFFE CA"),
            Some(td),
            (not_before, not_after),
        )
    }

    /// A SPIFFE CA for `td` that expired a day ago (valid for the month before).
    pub fn spiffe_expired(td: &str) -> Self {
        let now = OffsetDateTime::now_utc();
        Self::make(
            &format!("{td} e2e expired SPIFFE CA"),
            Some(td),
            (
                now - time::Duration::days(31),
                now - time::Duration::days(1),
            ),
        )
    }

    /// A Web PKI root with no SPIFFE ID.
    pub fn web(name: &str) -> Self {
        Self::make(&format!("{name} e2e web root"), None, default_validity())
    }

    fn make(
        common_name: &str,
        trust_domain: Option<&str>,
        (not_before, not_after): (OffsetDateTime, OffsetDateTime),
    ) -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = not_before;
        params.not_after = not_after;
        if let Some(td) = trust_domain {
            params.subject_alt_names =
                vec![SanType::URI(format!("spiffe://{td}").try_into().unwrap())];
        }
        let cert = params.self_signed(&key).unwrap();
        Self {
            der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            trust_domain: trust_domain.map(str::to_owned),
            issuer: Issuer::new(params, key),
        }
    }

    /// The trust domain of a SPIFFE CA; `None` for a Web PKI root.
    pub fn trust_domain(&self) -> Option<&str> {
        self.trust_domain.as_deref()
    }

    /// This CA as a bundle authority.
    pub fn authority(&self) -> X509Authority {
        X509Authority::from_der(self.der.clone()).unwrap()
    }

    /// Write the certificate and the key as PEM files.
    pub fn write(&self, cert: &Path, key: &Path) {
        std::fs::write(cert, &self.cert_pem).unwrap();
        std::fs::write(key, &self.key_pem).unwrap();
    }

    /// Write the certificate alone as a PEM file (e.g. for `extra_ca_roots`).
    pub fn write_cert(&self, cert: &Path) {
        std::fs::write(cert, &self.cert_pem).unwrap();
    }

    /// A server certificate for `localhost` and `127.0.0.1` signed by this CA.
    pub fn localhost_server(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let (cert, key) = self.leaf(
            "e2e bundle server",
            &[],
            ExtendedKeyUsagePurpose::ServerAuth,
            vec![
                SanType::DnsName("localhost".try_into().unwrap()),
                SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            ],
        );
        (
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }

    /// [`TestCa::localhost_server`] named `common_name`, as PEM: `(certificate, key)`.
    pub fn localhost_server_pem(&self, common_name: &str) -> (String, String) {
        let (cert, key) = self.leaf(
            common_name,
            &[],
            ExtendedKeyUsagePurpose::ServerAuth,
            vec![
                SanType::DnsName("localhost".try_into().unwrap()),
                SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            ],
        );
        (cert.pem(), key.serialize_pem())
    }

    /// A client certificate for `common_name` with these organizations (a
    /// Kubernetes user and its groups), as PEM: `(certificate, key)`.
    pub fn client_pem(&self, common_name: &str, organizations: &[String]) -> (String, String) {
        let (cert, key) = self.leaf(
            common_name,
            organizations,
            ExtendedKeyUsagePurpose::ClientAuth,
            Vec::new(),
        );
        (cert.pem(), key.serialize_pem())
    }

    /// A leaf for `common_name` (with `organizations`), valid an hour ago to 30 days
    /// ahead, for `usage`, with `names`.
    fn leaf(
        &self,
        common_name: &str,
        organizations: &[String],
        usage: ExtendedKeyUsagePurpose,
        names: Vec<SanType>,
    ) -> (rcgen::Certificate, KeyPair) {
        let (not_before, not_after) = default_validity();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        for organization in organizations {
            dn.push(DnType::OrganizationName, organization.as_str());
        }
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.not_before = not_before;
        params.not_after = not_after;
        params.subject_alt_names = names;
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert, key)
    }

    /// An X509-SVID for `spiffe://<td><path>` (X509-SVID §4: URI SAN, not a CA,
    /// digitalSignature; client and server auth), valid for a day, signed by this CA.
    ///
    /// # Panics
    /// If this is a Web PKI root (no trust domain).
    pub fn svid(&self, path: &str) -> Issued {
        let td = self
            .trust_domain
            .as_deref()
            .unwrap_or_else(|| panic!("a Web PKI root issues no X509-SVID"));
        let now = OffsetDateTime::now_utc();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{td}{path}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(1);
        params.subject_alt_names = vec![SanType::URI(
            format!("spiffe://{td}{path}").try_into().unwrap(),
        )];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued::new(cert.pem(), cert.der().to_vec(), &key)
    }
}

/// A certificate (an X509-SVID, a self-signed leaf) and its key.
#[derive(Clone)]
pub struct Issued {
    /// The certificate (leaf only), PEM.
    pub cert_pem: String,
    /// The PKCS#8 key, PEM.
    pub key_pem: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
    key_der: Vec<u8>,
    public_key_raw: Vec<u8>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").finish_non_exhaustive()
    }
}

impl Issued {
    fn new(cert_pem: String, der: Vec<u8>, key: &KeyPair) -> Self {
        Self {
            cert_pem,
            key_pem: key.serialize_pem(),
            der,
            key_der: key.serialize_der(),
            public_key_raw: key.public_key_raw().to_vec(),
        }
    }

    /// The lower-case hex SHA-256 of the certificate (as Envoy writes it in the
    /// `Hash=` element of `x-forwarded-client-cert`).
    pub fn sha256_hex(&self) -> String {
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.der)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The certificate as a one-element chain and its key, for a rustls config.
    pub fn chain_and_key(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (
            vec![CertificateDer::from(self.der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
        )
    }

    /// The certificate's public key as a JWK public key.
    pub fn public_key(&self) -> PublicKey {
        p256_public_key(&self.public_key_raw)
    }

    /// Write the certificate and the key as PEM files.
    pub fn write(&self, cert: &Path, key: &Path) {
        std::fs::write(cert, &self.cert_pem).unwrap();
        std::fs::write(key, &self.key_pem).unwrap();
    }
}

/// A self-signed certificate that is not a CA (cA false), with `common_name`.
pub fn self_signed_leaf(common_name: &str) -> Issued {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    let cert = params.self_signed(&key).unwrap();
    Issued::new(cert.pem(), cert.der().to_vec(), &key)
}

/// An EC P-256 key pair, e.g. a JWT-SVID signing key.
pub struct EcKey {
    key: KeyPair,
}

impl std::fmt::Debug for EcKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcKey").finish_non_exhaustive()
    }
}

impl EcKey {
    /// A fresh key.
    pub fn generate() -> Self {
        Self {
            key: KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
        }
    }

    /// The private key, PKCS#8 DER (what `jsonwebtoken::EncodingKey::from_ec_der`
    /// takes).
    pub fn pkcs8_der(&self) -> Vec<u8> {
        self.key.serialize_der()
    }

    /// The public key as a JWK public key.
    pub fn public_key(&self) -> PublicKey {
        p256_public_key(self.key.public_key_raw())
    }

    /// The public key as a JWT authority under `kid`.
    pub fn jwt_authority(&self, kid: &str) -> JwtAuthority {
        JwtAuthority::new(kid, self.public_key()).unwrap()
    }
}

/// A P-256 public key from its raw form, the uncompressed point `0x04 || x || y`.
fn p256_public_key(raw: &[u8]) -> PublicKey {
    assert_eq!(raw.len(), 65, "not an uncompressed P-256 point");
    PublicKey::Ec {
        curve: EcCurve::P256,
        x: raw[1..33].to_vec(),
        y: raw[33..65].to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ca_is_an_authority_and_web_root_is_not_a_spiffe_ca() {
        let ca = TestCa::spiffe("kit.test");
        assert!(ca.authority().info().not_after > OffsetDateTime::now_utc());
        assert_eq!(ca.trust_domain(), Some("kit.test"));
        assert_eq!(TestCa::web("kit").trust_domain(), None);
        assert!(
            TestCa::spiffe_expired("kit.test")
                .authority()
                .info()
                .not_after
                < OffsetDateTime::now_utc()
        );
    }

    #[test]
    fn svid_carries_its_spiffe_id_and_chains_to_its_ca() {
        use rustls_pki_types::UnixTime;
        let ca = TestCa::spiffe_named("kit.test", "first");
        let svid = ca.svid("/workload");
        let id: spiffe_federation::SpiffeId = "spiffe://kit.test/workload".parse().unwrap();
        let mut bundle = spiffe_federation::Bundle::new(id.trust_domain().clone());
        bundle.add_x509_authority(ca.authority());
        let (chain, _key) = svid.chain_and_key();
        let verified =
            spiffe_federation::verify::verify_x509_svid(&chain, &bundle, UnixTime::now()).unwrap();
        assert_eq!(verified, id);
        // Another CA of the same domain does not vouch for it.
        let mut other = spiffe_federation::Bundle::new(id.trust_domain().clone());
        other.add_x509_authority(TestCa::spiffe("kit.test").authority());
        assert!(
            spiffe_federation::verify::verify_x509_svid(&chain, &other, UnixTime::now()).is_err()
        );
        assert_eq!(svid.sha256_hex().len(), 64);
    }

    #[test]
    fn ec_key_and_leaf_public_keys_are_p256_points() {
        let key = EcKey::generate();
        assert!(matches!(
            key.public_key(),
            PublicKey::Ec {
                curve: EcCurve::P256,
                ..
            }
        ));
        key.jwt_authority("kid-1");
        let leaf = self_signed_leaf("not a CA");
        assert!(matches!(leaf.public_key(), PublicKey::Ec { .. }));
        assert!(leaf.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    }
}
