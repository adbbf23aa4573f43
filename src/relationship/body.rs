//! A federation relationship as the admin API receives it: the configuration's
//! `[[federation]]` fields, with file paths replaced by the files' content
//! (`bootstrap_bundle`, `extra_ca_roots_pem`), so the gateway never reads the
//! caller's filesystem. ClusterFederatedTrustDomain documents are read into it too.
//!
//! Owns the body's shape and its mapping onto the configuration's checks
//! ([`config::validate_relationship_with`]) and onto a
//! [`Relationship`](super::Relationship) ([`super::Relationship::from_body`]). It
//! does not own the registry's rules (which relationship may be created, replaced or
//! deleted) or how the store keeps it (its own record type, of the same JSON shape).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use spiffe_federation::endpoint::ProxySetting;
use spiffe_federation::{SpiffeId, TrustDomain};
use url::Url;

use super::{Material, MaterialSource};
use crate::config::{self, Attached, ConfigError, DocumentFormat, ProfileName};

/// The body of `POST /v1/federation-relationships` and `PUT …/{td}`: nothing is
/// inferred, every field is the caller's (SEC-1). Unknown fields are refused, naming
/// them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelationshipSpec {
    /// The foreign trust domain.
    pub trust_domain: TrustDomain,
    /// The bundle endpoint URL (use either `url` or `urls`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::config::urls::deserialize_endpoint"
    )]
    pub url: Option<Url>,
    /// Mirror URLs, tried in order.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::config::urls::deserialize_endpoints"
    )]
    pub urls: Vec<Url>,
    /// The endpoint profile.
    pub profile: ProfileName,
    /// `https_spiffe`: the endpoint server's SPIFFE ID (SPF-2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_spiffe_id: Option<SpiffeId>,
    /// `https_spiffe`: a bundle of the endpoint ID's trust domain to start from
    /// (SPF-3), the document itself in `bootstrap_format`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_bundle: Option<String>,
    /// Format of `bootstrap_bundle`.
    #[serde(default)]
    pub bootstrap_format: DocumentFormat,
    /// `https_web`: PEM CA roots trusted besides the system store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_ca_roots_pem: Option<String>,
    /// Follow HTTP redirects (at most 3 hops, never remembered; SEC-4).
    #[serde(default = "yes")]
    pub follow_redirects: bool,
    /// `env` (the default), `off`, or a proxy URL (EXT-5).
    #[serde(default)]
    pub proxy: ProxySetting,
    /// Accept a fetched empty `keys` list (a revocation); off by default.
    #[serde(default)]
    pub allow_revocation: bool,
}

fn yes() -> bool {
    true
}

impl RelationshipSpec {
    /// The configuration form: the same fields, with no file paths (the content is in
    /// [`RelationshipSpec::material`]).
    pub fn to_entry(&self) -> config::FederationEntry {
        config::FederationEntry {
            trust_domain: self.trust_domain.clone(),
            url: self.url.clone(),
            urls: self.urls.clone(),
            profile: self.profile,
            endpoint_spiffe_id: self.endpoint_spiffe_id.clone(),
            bootstrap_bundle: None,
            bootstrap_format: self.bootstrap_format,
            extra_ca_roots: None,
            follow_redirects: self.follow_redirects,
            proxy: self.proxy.clone(),
            allow_revocation: self.allow_revocation,
        }
    }

    /// The inline content, as the poller's resolving takes it.
    pub fn material(&self) -> Material {
        let inline = |field, content: &Option<String>| {
            content
                .as_ref()
                .map(|text| (MaterialSource::Inline(field), text.clone().into_bytes()))
        };
        Material {
            extra_roots: inline("extra_ca_roots_pem", &self.extra_ca_roots_pem),
            bootstrap: inline("bootstrap_bundle", &self.bootstrap_bundle),
        }
    }

    /// The configuration's rules (FED-4, SPF-2, WEB-1, EXT-7), naming the body's
    /// fields (`url`, `extra_ca_roots_pem`, …).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field at fault.
    pub fn validate(&self, locals: &BTreeSet<TrustDomain>) -> Result<(), ConfigError> {
        let attached = Attached {
            bootstrap: self.bootstrap_bundle.as_ref().map(|_| "bootstrap_bundle"),
            extra_roots: self
                .extra_ca_roots_pem
                .as_ref()
                .map(|_| "extra_ca_roots_pem"),
        };
        config::validate_relationship_with(&self.to_entry(), "", locals, attached)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use std::time::Duration;

    use super::*;
    use crate::relationship::{Limits, Relationship, RelationshipError};

    fn limits(max_document_bytes: usize) -> Limits {
        Limits {
            max_document_bytes,
            fetch_timeout: Duration::from_secs(5),
        }
    }

    fn resolve(spec: &RelationshipSpec, max: usize) -> Result<Relationship, RelationshipError> {
        Relationship::resolve(&spec.to_entry(), spec.material(), limits(max))
    }

    fn spec(value: serde_json::Value) -> RelationshipSpec {
        serde_json::from_value(value).unwrap()
    }

    fn invalid_key(spec: &RelationshipSpec, locals: &BTreeSet<TrustDomain>) -> String {
        match spec.validate(locals) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn fed_4_body_defaults_match_the_configuration() {
        let web = spec(json!({
            "trust_domain": "w.example", "url": "https://w.example/", "profile": "https_web"
        }));
        assert!(web.follow_redirects);
        assert!(
            !web.allow_revocation,
            "revocations are refused unless allowed"
        );
        assert!(!web.to_entry().allow_revocation);
        assert_eq!(web.proxy, ProxySetting::FromEnvironment);
        assert_eq!(web.bootstrap_format, DocumentFormat::Spiffe);
        assert!(web.validate(&BTreeSet::new()).is_ok());
        let missing = spec(json!({"trust_domain": "w.example", "profile": "https_web"}));
        assert_eq!(invalid_key(&missing, &BTreeSet::new()), "url");
    }

    #[test]
    fn fed_4_unknown_and_missing_fields_are_named() {
        let err = serde_json::from_value::<RelationshipSpec>(json!({
            "trust_domain": "w.example", "url": "https://w/", "profile": "https_web",
            "extra_ca_roots": "/etc/roots.pem"
        }))
        .unwrap_err();
        assert!(err.to_string().contains("extra_ca_roots"), "{err}");
        let err =
            serde_json::from_value::<RelationshipSpec>(json!({"url": "https://w/"})).unwrap_err();
        assert!(err.to_string().contains("trust_domain"), "{err}");
    }

    #[test]
    fn inline_material_is_checked_for_its_profile_naming_the_api_field() {
        let roots_on_spiffe = spec(json!({
            "trust_domain": "w.example", "url": "https://w.example/", "profile": "https_spiffe",
            "endpoint_spiffe_id": "spiffe://w.example/ep", "extra_ca_roots_pem": "x"
        }));
        assert_eq!(
            invalid_key(&roots_on_spiffe, &BTreeSet::new()),
            "extra_ca_roots_pem"
        );
        let bootstrap_on_web = spec(json!({
            "trust_domain": "w.example", "url": "https://w.example/", "profile": "https_web",
            "bootstrap_bundle": "{}"
        }));
        assert_eq!(
            invalid_key(&bootstrap_on_web, &BTreeSet::new()),
            "bootstrap_bundle"
        );
    }

    #[test]
    fn ext_7_local_trust_domain_is_refused() {
        let local: BTreeSet<TrustDomain> = ["w.example".parse().unwrap()].into();
        let rel = spec(json!({
            "trust_domain": "w.example", "url": "https://w.example/", "profile": "https_web"
        }));
        assert_eq!(invalid_key(&rel, &local), "trust_domain");
    }

    /// A bundle document of `td` holding one self-signed CA certificate.
    fn one_ca_document(td: &str) -> String {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose, SanType};
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        params.subject_alt_names = vec![SanType::URI(format!("spiffe://{td}").try_into().unwrap())];
        let der = params.self_signed(&key).unwrap().der().to_vec();
        let mut bundle = spiffe_federation::Bundle::new(TrustDomain::new(td).unwrap());
        bundle.add_x509_authority(spiffe_federation::bundle::X509Authority::from_der(der).unwrap());
        String::from_utf8(bundle.to_json()).unwrap()
    }

    #[test]
    fn a_bootstrap_bundle_without_an_x509_authority_is_refused_by_name() {
        for (document, elements, ignored) in [
            (r#"{"keys":[]}"#.to_owned(), 0, 0),
            (r#"{"keys":[{},{}]}"#.to_owned(), 2, 2),
        ] {
            let rel = spec(json!({
                "trust_domain": "w.example", "url": "https://w.example/", "profile": "https_spiffe",
                "endpoint_spiffe_id": "spiffe://anchor.example/ep",
                "bootstrap_bundle": document
            }));
            let err = resolve(&rel, 1024).unwrap_err();
            assert!(
                matches!(
                    err,
                    RelationshipError::BootstrapWithoutAuthority { elements: e, ignored: i, .. }
                        if e == elements && i == ignored
                ),
                "{err}"
            );
            let message = err.to_string();
            assert!(
                message.contains("relationship w.example: bootstrap_bundle")
                    && message.contains("holds no X.509 authority"),
                "{message}"
            );
        }
    }

    #[test]
    fn inline_content_is_resolved_like_a_file() {
        let rel = spec(json!({
            "trust_domain": "w.example", "url": "https://w.example/", "profile": "https_spiffe",
            "endpoint_spiffe_id": "spiffe://anchor.example/ep",
            "bootstrap_bundle": one_ca_document("anchor.example")
        }));
        let resolved = resolve(&rel, 64 * 1024).unwrap();
        let bootstrap = resolved.bootstrap_bundle().unwrap();
        assert_eq!(bootstrap.trust_domain().as_str(), "anchor.example");
        assert_eq!(bootstrap.x509_authorities().len(), 1);
        assert!(resolve(&rel, 4).is_err(), "size limit");

        let bad_roots = spec(json!({
            "trust_domain": "w.example", "url": "https://w.example/", "profile": "https_web",
            "extra_ca_roots_pem": "not pem"
        }));
        let err = resolve(&bad_roots, 1024).unwrap_err();
        assert!(
            matches!(
                &err,
                RelationshipError::NoRoots {
                    from: MaterialSource::Inline("extra_ca_roots_pem"),
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
