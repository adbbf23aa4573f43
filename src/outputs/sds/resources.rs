//! The SDS resources of one trust store snapshot: pure, no I/O.
//!
//! Owns what each resource name means and holds, the same as SPIRE's agent
//! (`pkg/agent/endpoints/sdsv3`):
//! - `spiffe://<td>` (DIST-7): a `Secret` whose validation context's `trusted_ca` is
//!   the inline PEM of that domain's X.509 authorities only (DIST-3, DIST-6);
//! - the all-bundles name (`ALL`): a validation context using Envoy's SPIFFE
//!   certificate validator (`envoy.tls.cert_validator.spiffe`) with one
//!   `trust_domains` entry per offered domain, each with that domain's X.509
//!   authorities only, so bundles are never merged into one pool (FED-11, DIST-2);
//! - the default-bundle name (`ROOTCA`): like `spiffe://<td>` for the default domain.
//!
//! A domain with no X.509 authority (a JWT-only bundle) has nothing to offer here and
//! is left out: an empty `trusted_ca` would be refused by Envoy. Domains outside the
//! allow-list (MAP-8) are left out everywhere. It does not own streams, nonces or
//! versions of a conversation (`super::service`).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::{DataSource, TypedExtensionConfig, data_source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, SpiffeCertValidatorConfig, secret,
    spiffe_cert_validator_config,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;
use prost::Message as _;
use spiffe_federation::{Bundle, TrustDomain};

use super::SdsConfig;
use crate::trust::store::Snapshot;

/// The type URL of every resource served: Envoy's `Secret`.
pub const SECRET_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// The name of Envoy's SPIFFE certificate validator extension.
pub const SPIFFE_VALIDATOR: &str = "envoy.tls.cert_validator.spiffe";

/// How resources are named and which domains are offered, resolved from the
/// configuration once at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    /// The name of the SPIFFE-validator resource (`ALL`).
    pub all_bundles_name: String,
    /// The name of the default domain's resource (`ROOTCA`).
    pub default_bundle_name: String,
    /// The domain `default_bundle_name` stands for, if any.
    pub default_domain: Option<TrustDomain>,
    /// Offer only these domains; `None` offers every stored domain.
    pub allowed: Option<BTreeSet<TrustDomain>>,
}

impl Naming {
    /// Resolve `config` against the configured local domains.
    pub fn new<'a>(config: &'a SdsConfig, locals: impl Iterator<Item = &'a TrustDomain>) -> Self {
        Self {
            all_bundles_name: config.all_bundles_name.clone(),
            default_bundle_name: config.default_bundle_name.clone(),
            default_domain: config.default_domain(locals),
            allowed: config
                .trust_domains
                .as_ref()
                .map(|domains| domains.iter().cloned().collect()),
        }
    }

    fn offers(&self, td: &TrustDomain) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|allowed| allowed.contains(td))
    }
}

/// One named resource, ready to send. Its encoding is made once per catalog and shared
/// (reference-counted) by every response of every stream that carries it, so a
/// thousand streams cost one copy of each secret, not a thousand.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// The resource (and secret) name.
    pub name: String,
    /// The `Secret` packed in a `google.protobuf.Any`, encoded.
    pub encoded: Bytes,
    /// A digest of the encoded secret: the resource's version in Delta xDS.
    pub version: String,
}

impl Resource {
    /// The packed `Secret` as a message (for unary answers and tests).
    pub fn any(&self) -> Any {
        // The bytes were encoded from an `Any` by `Catalog::insert`.
        Any::decode(self.encoded.clone()).unwrap_or_default()
    }
}

/// Every resource the server offers at one revision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    /// The trust store revision it was built from: the `version_info` sent.
    pub revision: u64,
    resources: BTreeMap<String, Resource>,
    domains: Vec<String>,
}

impl Catalog {
    /// The catalog of `snapshot`.
    pub fn from_snapshot(snapshot: &Snapshot, naming: &Naming) -> Self {
        Self::build(
            snapshot.revision,
            snapshot.domains.values().map(|entry| entry.bundle.as_ref()),
            naming,
        )
    }

    /// The catalog of `bundles` (one per trust domain) at `revision`.
    pub fn build<'a>(
        revision: u64,
        bundles: impl IntoIterator<Item = &'a Bundle>,
        naming: &Naming,
    ) -> Self {
        let mut offered: BTreeMap<&TrustDomain, Vec<u8>> = BTreeMap::new();
        for bundle in bundles {
            let td = bundle.trust_domain();
            if naming.offers(td) && !bundle.x509_authorities().is_empty() {
                offered.insert(td, bundle.to_pem().into_bytes());
            }
        }
        let mut catalog = Self {
            revision,
            ..Self::default()
        };
        for (td, pem) in &offered {
            let name = td.id().to_string();
            catalog.domains.push(name.clone());
            catalog.insert(trusted_ca_secret(name, pem));
        }
        if let Some(pem) = naming
            .default_domain
            .as_ref()
            .and_then(|td| offered.get(td))
        {
            catalog.insert(trusted_ca_secret(naming.default_bundle_name.clone(), pem));
        }
        if !offered.is_empty() {
            catalog.insert(spiffe_validator_secret(
                naming.all_bundles_name.clone(),
                &offered,
            ));
        }
        catalog
    }

    /// The resource called `name`, if offered.
    pub fn get(&self, name: &str) -> Option<&Resource> {
        self.resources.get(name)
    }

    /// Every offered name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.resources.keys().map(String::as_str)
    }

    /// The `spiffe://<td>` names, one per offered domain.
    pub fn domain_names(&self) -> &[String] {
        &self.domains
    }

    /// The resources a request for `names` gets: those offered, in name order. An
    /// empty set means every `spiffe://<td>` resource (not `ALL` nor `ROOTCA`), as
    /// SPIRE's agent answers a request without names.
    pub fn select(&self, names: &BTreeSet<String>) -> Vec<&Resource> {
        if names.is_empty() {
            return self.domains.iter().filter_map(|n| self.get(n)).collect();
        }
        names.iter().filter_map(|name| self.get(name)).collect()
    }

    fn insert(&mut self, secret: Secret) {
        let name = secret.name.clone();
        let encoded = secret.encode_to_vec();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &encoded);
        let version = digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let any = Any {
            type_url: SECRET_TYPE_URL.to_owned(),
            value: encoded,
        };
        let encoded = Bytes::from(any.encode_to_vec());
        self.resources.insert(
            name.clone(),
            Resource {
                name,
                encoded,
                version,
            },
        );
    }
}

fn inline(pem: &[u8]) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(pem.to_vec())),
        ..DataSource::default()
    })
}

fn validation_secret(name: String, context: CertificateValidationContext) -> Secret {
    Secret {
        name,
        r#type: Some(secret::Type::ValidationContext(context)),
    }
}

/// One domain's CAs as `trusted_ca`.
fn trusted_ca_secret(name: String, pem: &[u8]) -> Secret {
    validation_secret(
        name,
        CertificateValidationContext {
            trusted_ca: inline(pem),
            ..CertificateValidationContext::default()
        },
    )
}

/// Every offered domain, each with its own CAs, for Envoy's SPIFFE validator.
fn spiffe_validator_secret(name: String, offered: &BTreeMap<&TrustDomain, Vec<u8>>) -> Secret {
    let config = SpiffeCertValidatorConfig {
        trust_domains: offered
            .iter()
            .map(|(td, pem)| spiffe_cert_validator_config::TrustDomain {
                name: td.to_string(),
                trust_bundle: inline(pem),
                ..spiffe_cert_validator_config::TrustDomain::default()
            })
            .collect(),
        trust_bundles: None,
    };
    validation_secret(
        name,
        CertificateValidationContext {
            custom_validator_config: Some(TypedExtensionConfig {
                name: SPIFFE_VALIDATOR.to_owned(),
                typed_config: Some(pack_any(config)),
            }),
            ..CertificateValidationContext::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use prost::Name as _;
    use spiffe_federation::bundle::{JwtAuthority, PublicKey};

    use super::*;
    use crate::trust::policy::testing::{bundle, td};

    fn naming() -> Naming {
        Naming {
            all_bundles_name: "ALL".into(),
            default_bundle_name: "ROOTCA".into(),
            default_domain: Some(td("a.test")),
            allowed: None,
        }
    }

    fn secret(resource: &Resource) -> Secret {
        let any = resource.any();
        assert_eq!(any.type_url, Secret::type_url());
        let secret = Secret::decode(any.value.as_slice()).unwrap();
        assert_eq!(secret.name, resource.name);
        secret
    }

    fn context(resource: &Resource) -> CertificateValidationContext {
        match secret(resource).r#type {
            Some(secret::Type::ValidationContext(context)) => context,
            other => panic!("not a validation context: {other:?}"),
        }
    }

    fn inline_bytes(source: Option<&DataSource>) -> Vec<u8> {
        match source.and_then(|s| s.specifier.clone()) {
            Some(data_source::Specifier::InlineBytes(bytes)) => bytes,
            other => panic!("not inline bytes: {other:?}"),
        }
    }

    /// `(name, PEM)` of every trust domain in the `ALL` resource.
    fn all_domains(resource: &Resource) -> Vec<(String, Vec<u8>)> {
        let validator = context(resource).custom_validator_config.unwrap();
        assert_eq!(validator.name, SPIFFE_VALIDATOR);
        let any = validator.typed_config.unwrap();
        assert_eq!(any.type_url, SpiffeCertValidatorConfig::type_url());
        SpiffeCertValidatorConfig::decode(any.value.as_slice())
            .unwrap()
            .trust_domains
            .into_iter()
            .map(|d| (d.name.clone(), inline_bytes(d.trust_bundle.as_ref())))
            .collect()
    }

    fn pem(bundle: &Bundle) -> Vec<u8> {
        bundle.to_pem().into_bytes()
    }

    #[test]
    fn dist_1_dist_3_dist_7_one_resource_per_domain_named_by_its_id_with_its_cas_only() {
        let (a, b) = (bundle(&td("a.test"), None), bundle(&td("b.test"), None));
        let catalog = Catalog::build(7, [&a, &b], &naming());
        assert_eq!(catalog.revision, 7);
        assert_eq!(
            catalog.names().collect::<Vec<_>>(),
            ["ALL", "ROOTCA", "spiffe://a.test", "spiffe://b.test"]
        );
        assert_eq!(
            catalog.domain_names(),
            ["spiffe://a.test", "spiffe://b.test"]
        );
        for (name, expected) in [("spiffe://a.test", &a), ("spiffe://b.test", &b)] {
            let context = context(catalog.get(name).unwrap());
            assert_eq!(inline_bytes(context.trusted_ca.as_ref()), pem(expected));
            assert!(context.custom_validator_config.is_none());
        }
        let rootca = context(catalog.get("ROOTCA").unwrap());
        assert_eq!(inline_bytes(rootca.trusted_ca.as_ref()), pem(&a));
    }

    #[test]
    fn fed_11_dist_2_all_lists_each_domain_with_its_own_bundle() {
        let (a, b) = (bundle(&td("a.test"), None), bundle(&td("b.test"), None));
        let catalog = Catalog::build(1, [&b, &a], &naming());
        let all = catalog.get("ALL").unwrap();
        assert!(context(all).trusted_ca.is_none(), "no merged pool");
        assert_eq!(
            all_domains(all),
            [
                ("a.test".to_owned(), pem(&a)),
                ("b.test".to_owned(), pem(&b))
            ]
        );
    }

    #[test]
    fn dist_6_jwt_keys_never_reach_x509_resources() {
        let mut a = bundle(&td("a.test"), None);
        let key = PublicKey::Ed25519 { x: vec![7; 32] };
        a.insert_jwt_authority(JwtAuthority::new("jwt-1", key).unwrap());
        let mut jwt_only = Bundle::new(td("j.test"));
        let key = PublicKey::Ed25519 { x: vec![9; 32] };
        jwt_only.insert_jwt_authority(JwtAuthority::new("jwt-2", key).unwrap());
        let catalog = Catalog::build(1, [&a, &jwt_only], &naming());
        let context = context(catalog.get("spiffe://a.test").unwrap());
        let text = String::from_utf8(inline_bytes(context.trusted_ca.as_ref())).unwrap();
        assert_eq!(text.matches("BEGIN").count(), 1);
        assert_eq!(text.matches("BEGIN CERTIFICATE").count(), 1);
        assert!(
            catalog.get("spiffe://j.test").is_none(),
            "nothing X.509 to offer"
        );
        let names: Vec<_> = all_domains(catalog.get("ALL").unwrap())
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(names, ["a.test"]);
    }

    #[test]
    fn map_8_allow_list_limits_every_resource() {
        let (a, b) = (bundle(&td("a.test"), None), bundle(&td("b.test"), None));
        let naming = Naming {
            allowed: Some(BTreeSet::from([td("b.test")])),
            ..naming()
        };
        let catalog = Catalog::build(1, [&a, &b], &naming);
        assert_eq!(
            catalog.names().collect::<Vec<_>>(),
            ["ALL", "spiffe://b.test"],
            "a.test and so ROOTCA (which means a.test) are not offered"
        );
        assert_eq!(all_domains(catalog.get("ALL").unwrap()).len(), 1);
    }

    #[test]
    fn rootca_needs_a_default_domain_and_all_needs_a_domain() {
        let a = bundle(&td("a.test"), None);
        let naming = Naming {
            default_domain: None,
            ..naming()
        };
        let catalog = Catalog::build(1, [&a], &naming);
        assert!(catalog.get("ROOTCA").is_none());
        let empty = Catalog::build(1, [], &naming);
        assert_eq!(
            empty.names().count(),
            0,
            "an ALL without domains is refused by Envoy"
        );
    }

    #[test]
    fn select_empty_means_every_domain_resource_and_unknown_names_are_skipped() {
        let (a, b) = (bundle(&td("a.test"), None), bundle(&td("b.test"), None));
        let catalog = Catalog::build(1, [&a, &b], &naming());
        let names = |set: &[&str]| {
            let set: BTreeSet<String> = set.iter().map(|s| (*s).to_owned()).collect();
            catalog
                .select(&set)
                .into_iter()
                .map(|r| r.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&[]), ["spiffe://a.test", "spiffe://b.test"]);
        assert_eq!(names(&["ALL", "spiffe://x.test"]), ["ALL"]);
    }

    #[test]
    fn versions_change_with_content_only() {
        let (a, b) = (bundle(&td("a.test"), None), bundle(&td("b.test"), None));
        let before = Catalog::build(1, [&a, &b], &naming());
        let b2 = bundle(&td("b.test"), None);
        let after = Catalog::build(2, [&a, &b2], &naming());
        let version = |c: &Catalog, n: &str| c.get(n).unwrap().version.clone();
        assert_eq!(
            version(&before, "spiffe://a.test"),
            version(&after, "spiffe://a.test")
        );
        assert_ne!(
            version(&before, "spiffe://b.test"),
            version(&after, "spiffe://b.test")
        );
        assert_ne!(version(&before, "ALL"), version(&after, "ALL"));
    }
}
