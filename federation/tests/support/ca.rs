//! Test certificate authorities made with rcgen at test time.
//!
//! Include with `#[path = "support/ca.rs"] mod ca;`. Every certificate is real: signed,
//! DER encoded, parseable by any X.509 library.

#![allow(
    dead_code,
    unused_imports,
    reason = "each test crate uses a different subset"
)]

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SignatureAlgorithm,
};
use time::{Duration, OffsetDateTime};

pub(crate) use rcgen::{
    PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ECDSA_P521_SHA512, PKCS_ED25519,
    PKCS_RSA_SHA256,
};

/// A CA: its certificate (DER) and what it needs to sign more.
pub(crate) struct TestCa {
    pub(crate) der: Vec<u8>,
    pub(crate) params: CertificateParams,
    pub(crate) key: KeyPair,
}

/// A leaf or intermediate certificate with its key.
pub(crate) struct Issued {
    pub(crate) der: Vec<u8>,
    pub(crate) key: KeyPair,
}

/// Options for a certificate; defaults make a valid SPIFFE CA for `td`.
#[derive(Clone)]
pub(crate) struct CertSpec {
    pub(crate) alg: &'static SignatureAlgorithm,
    pub(crate) common_name: String,
    pub(crate) uris: Vec<String>,
    pub(crate) dns: Vec<String>,
    pub(crate) is_ca: bool,
    pub(crate) key_usages: Vec<KeyUsagePurpose>,
    pub(crate) ekus: Vec<ExtendedKeyUsagePurpose>,
    pub(crate) not_before: OffsetDateTime,
    pub(crate) not_after: OffsetDateTime,
}

impl CertSpec {
    /// A self-signable SPIFFE CA for `td`: CA=true, keyCertSign+cRLSign, URI SAN
    /// `spiffe://td`, valid from an hour ago for a year.
    pub(crate) fn ca(td: &str) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            alg: &PKCS_ECDSA_P256_SHA256,
            common_name: format!("{td} test CA"),
            uris: vec![format!("spiffe://{td}")],
            dns: vec![],
            is_ca: true,
            key_usages: vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign],
            ekus: vec![],
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(365),
        }
    }

    /// An X509-SVID leaf for `id`: CA=false, digitalSignature, server+client auth.
    pub(crate) fn svid(id: &str) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            alg: &PKCS_ECDSA_P256_SHA256,
            common_name: "svid".to_owned(),
            uris: vec![id.to_owned()],
            dns: vec![],
            is_ca: false,
            key_usages: vec![KeyUsagePurpose::DigitalSignature],
            ekus: vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(1),
        }
    }

    pub(crate) fn alg(mut self, alg: &'static SignatureAlgorithm) -> Self {
        self.alg = alg;
        self
    }

    pub(crate) fn validity(
        mut self,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Self {
        self.not_before = not_before;
        self.not_after = not_after;
        self
    }

    pub(crate) fn uris(mut self, uris: &[&str]) -> Self {
        self.uris = uris.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    pub(crate) fn params(&self) -> CertificateParams {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, self.common_name.as_str());
        params.distinguished_name = dn;
        params.subject_alt_names = self
            .uris
            .iter()
            .map(|u| SanType::URI(u.as_str().try_into().unwrap()))
            .chain(
                self.dns
                    .iter()
                    .map(|d| SanType::DnsName(d.as_str().try_into().unwrap())),
            )
            .collect();
        params.is_ca = if self.is_ca {
            IsCa::Ca(BasicConstraints::Unconstrained)
        } else {
            IsCa::ExplicitNoCa
        };
        params.key_usages = self.key_usages.clone();
        params.extended_key_usages = self.ekus.clone();
        params.not_before = self.not_before;
        params.not_after = self.not_after;
        params.use_authority_key_identifier_extension = true;
        params
    }
}

impl TestCa {
    /// A self-signed SPIFFE CA for `td` with default options.
    pub(crate) fn new(td: &str) -> Self {
        Self::from_spec(&CertSpec::ca(td))
    }

    /// A self-signed certificate made from `spec` (a CA unless `spec.is_ca` is false).
    pub(crate) fn from_spec(spec: &CertSpec) -> Self {
        let key = KeyPair::generate_for(spec.alg).unwrap();
        let params = spec.params();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        Self { der, params, key }
    }

    /// A certificate signed by this CA.
    pub(crate) fn issue(&self, spec: &CertSpec) -> Issued {
        let key = KeyPair::generate_for(spec.alg).unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let der = spec
            .params()
            .signed_by(&key, &issuer)
            .unwrap()
            .der()
            .to_vec();
        Issued { der, key }
    }

    /// An intermediate CA signed by this CA, usable to sign further.
    pub(crate) fn intermediate(&self, spec: &CertSpec) -> TestCa {
        let key = KeyPair::generate_for(spec.alg).unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let params = spec.params();
        let der = params.signed_by(&key, &issuer).unwrap().der().to_vec();
        TestCa { der, params, key }
    }

    /// An X509-SVID leaf for `id` signed by this CA.
    pub(crate) fn svid(&self, id: &str) -> Issued {
        self.issue(&CertSpec::svid(id))
    }

    /// The CA certificate as standard base64 (an `x5c` value).
    pub(crate) fn x5c(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(&self.der)
    }
}

// ---- Extensions `CertSpec` does not model (name constraints, odd extensions) -----

impl TestCa {
    /// Like [`TestCa::from_spec`], with `edit` applied to the parameters before signing.
    pub(crate) fn from_spec_with(
        spec: &CertSpec,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> Self {
        let key = KeyPair::generate_for(spec.alg).unwrap();
        let mut params = spec.params();
        edit(&mut params);
        let der = params.self_signed(&key).unwrap().der().to_vec();
        Self { der, params, key }
    }

    /// Like [`TestCa::issue`], with `edit` applied to the parameters before signing.
    pub(crate) fn issue_with(
        &self,
        spec: &CertSpec,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> Issued {
        let key = KeyPair::generate_for(spec.alg).unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let mut params = spec.params();
        edit(&mut params);
        let der = params.signed_by(&key, &issuer).unwrap().der().to_vec();
        Issued { der, key }
    }

    /// Like [`TestCa::intermediate`], with `edit` applied to the parameters before signing.
    pub(crate) fn intermediate_with(
        &self,
        spec: &CertSpec,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> TestCa {
        let key = KeyPair::generate_for(spec.alg).unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let mut params = spec.params();
        edit(&mut params);
        let der = params.signed_by(&key, &issuer).unwrap().der().to_vec();
        TestCa { der, params, key }
    }
}

/// A critical nameConstraints extension (RFC 5280 §4.2.1.10) whose subtrees are
/// `uniformResourceIdentifier` names (`td.example` or `.example`, per RFC 5280 a host or
/// domain, not a full URI). rcgen's `GeneralSubtree` has no URI form, so the DER is
/// built here. Add it with `params.custom_extensions.push(..)` in a `*_with` edit.
pub(crate) fn uri_name_constraints(
    permitted: &[&str],
    excluded: &[&str],
) -> rcgen::CustomExtension {
    // GeneralSubtrees ::= SEQUENCE OF GeneralSubtree; GeneralSubtree ::= SEQUENCE { base };
    // base is GeneralName [6] IA5String, implicitly tagged (0x86).
    fn subtrees(tag: u8, hosts: &[&str]) -> Vec<u8> {
        if hosts.is_empty() {
            return Vec::new();
        }
        let body: Vec<u8> = hosts
            .iter()
            .flat_map(|host| der_tlv(0x30, &der_tlv(0x86, host.as_bytes())))
            .collect();
        der_tlv(tag, &body)
    }
    let mut body = subtrees(0xA0, permitted);
    body.extend(subtrees(0xA1, excluded));
    let mut ext = rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 30], der_tlv(0x30, &body));
    ext.set_criticality(true);
    ext
}

/// One DER tag-length-value with a definite length.
fn der_tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(value);
    out
}

// ---- Serving certificates (bundle endpoint server tests) --------------------------

impl CertSpec {
    /// A Web PKI server leaf: no URI SAN, the given DNS SANs, CA=false,
    /// digitalSignature, serverAuth+clientAuth. Add IP SANs with an `issue_with` edit.
    pub(crate) fn web_server(dns: &[&str]) -> Self {
        let mut spec = Self::svid("spiffe://unused.invalid/x");
        spec.common_name = "bundle endpoint".to_owned();
        spec.uris = vec![];
        spec.dns = dns.iter().map(|d| (*d).to_owned()).collect();
        spec
    }
}

impl TestCa {
    /// The CA certificate as one PEM `CERTIFICATE` block (for `curl --cacert`).
    pub(crate) fn pem(&self) -> String {
        pem_certificate(&self.der)
    }
}

impl Issued {
    /// The certificate as rustls takes it.
    pub(crate) fn cert_der(&self) -> rustls_pki_types::CertificateDer<'static> {
        rustls_pki_types::CertificateDer::from(self.der.clone())
    }

    /// The private key as PKCS#8 DER, as rustls takes it.
    pub(crate) fn key_der(&self) -> rustls_pki_types::PrivateKeyDer<'static> {
        rustls_pki_types::PrivateKeyDer::Pkcs8(self.key.serialize_der().into())
    }
}

/// One PEM `CERTIFICATE` block, 64 base64 characters a line (RFC 7468).
pub(crate) fn pem_certificate(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}
