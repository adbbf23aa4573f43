//! Federation relationships written as spire-controller-manager's
//! `ClusterFederatedTrustDomain` objects (`apiVersion: spire.spiffe.io/v1alpha1`),
//! read from a YAML file of one or more documents and turned into
//! [`RelationshipSpec`]s, the admin API's body.
//!
//! The mapping: `spec.trustDomain` → `trust_domain`, `spec.bundleEndpointURL` →
//! `url`, `spec.bundleEndpointProfile.type` → `profile`,
//! `spec.bundleEndpointProfile.endpointSPIFFEID` → `endpoint_spiffe_id`,
//! `spec.trustDomainBundle` → `bootstrap_bundle` (SPIFFE format) when it can serve
//! as one (profile `https_spiffe` with the endpoint in `spec.trustDomain`). Fields
//! fedgw has no use for (`spec.className`; `spec.trustDomainBundle` otherwise) are
//! kept out of the relationship and reported as [`Cftd::notes`]. Everything else is
//! the API body's defaults (redirects followed, proxy from the environment).
//!
//! Strict: an unknown `apiVersion` or `kind`, an unknown field at the top level, in
//! `spec` or in `spec.bundleEndpointProfile`, a missing or mistyped field, or a
//! relationship the configuration's rules refuse
//! ([`RelationshipSpec::validate`], [`Relationship::resolve`]) is an error naming
//! the document, its `metadata.name`, the field and the problem. `metadata` beyond
//! `name` (labels, annotations, …) and `status` are ignored, so the output of
//! `kubectl get clusterfederatedtrustdomain -o yaml` is accepted, as are `List` and
//! `ClusterFederatedTrustDomainList` documents holding such objects in `items`.
//!
//! It does not own applying them (the CLI's `federation apply`) nor the rules a
//! relationship must follow (`config::validate_relationship_with`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use spiffe_federation::endpoint::{EndpointUrl, ProxySetting};
use spiffe_federation::{SpiffeId, TrustDomain};
use url::Url;

use crate::config::{ConfigError, DocumentFormat, ProfileName};
use crate::relationship::{Limits, Relationship, RelationshipSpec};

/// The `apiVersion` of a ClusterFederatedTrustDomain.
pub const API_VERSION: &str = "spire.spiffe.io/v1alpha1";
/// Its `kind`.
pub const KIND: &str = "ClusterFederatedTrustDomain";

const TOP_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];
const SPEC_FIELDS: &[&str] = &[
    "trustDomain",
    "bundleEndpointURL",
    "bundleEndpointProfile",
    "trustDomainBundle",
    "className",
];
const PROFILE_FIELDS: &[&str] = &["type", "endpointSPIFFEID"];

/// The limit used to check a `trustDomainBundle` while parsing (the gateway checks
/// it again against its own `policy.max_document_bytes`).
const CHECK_MAX_DOCUMENT_BYTES: usize = spiffe_federation::bundle::DEFAULT_MAX_DOCUMENT_SIZE;

/// One ClusterFederatedTrustDomain, as a relationship.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cftd {
    /// Where it is in the file: `document 2`, or `document 1, items[3]`.
    pub location: String,
    /// Its `metadata.name`.
    pub name: String,
    /// Its `spec.className`, which fedgw does not use.
    pub class_name: Option<String>,
    /// The relationship.
    pub spec: RelationshipSpec,
    /// What of the object is not part of the relationship, for the operator.
    pub notes: Vec<String>,
}

/// Why a file of ClusterFederatedTrustDomains was refused: where, which field, what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}{}: {field}: {problem}", .name.as_ref().map(|n| format!(" (metadata.name {n:?})")).unwrap_or_default())]
pub struct CftdError {
    /// `document 2`, or `document 1, items[3]` (documents count from 1).
    pub location: String,
    /// The object's `metadata.name`, when it has one.
    pub name: Option<String>,
    /// The field at fault, as written in the YAML (`spec.bundleEndpointURL`), or
    /// `(document)` for the document as a whole.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

/// Parse a YAML file of ClusterFederatedTrustDomain documents (separated by `---`;
/// empty documents are skipped). Does not block beyond the parsing itself.
///
/// # Errors
/// [`CftdError`] for the first document, field or relationship at fault; also when
/// the file holds no object, or two objects name the same trust domain.
pub fn parse(text: &str) -> Result<Vec<Cftd>, CftdError> {
    let mut out: Vec<Cftd> = Vec::new();
    for (i, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let location = format!("document {}", i + 1);
        let value = Value::deserialize(document).map_err(|err| CftdError {
            location: location.clone(),
            name: None,
            field: "(document)".to_owned(),
            problem: format!("not valid YAML for a Kubernetes object: {err}"),
        })?;
        if value.is_null() {
            continue;
        }
        for cftd in objects(&location, &value)? {
            if let Some(first) = out
                .iter()
                .find(|c| c.spec.trust_domain == cftd.spec.trust_domain)
            {
                return Err(CftdError {
                    location: cftd.location,
                    name: Some(cftd.name),
                    field: "spec.trustDomain".to_owned(),
                    problem: format!(
                        "{} is federated with already by {} (metadata.name {:?})",
                        cftd.spec.trust_domain, first.location, first.name
                    ),
                });
            }
            out.push(cftd);
        }
    }
    if out.is_empty() {
        return Err(CftdError {
            location: "file".to_owned(),
            name: None,
            field: "(document)".to_owned(),
            problem: format!("no {KIND} object (apiVersion {API_VERSION})"),
        });
    }
    Ok(out)
}

/// One object of a `relationship_files` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileObject {
    /// Its position in `relationship_files`.
    pub index: usize,
    /// The file.
    pub file: PathBuf,
    /// The object.
    pub object: Cftd,
}

impl FileObject {
    /// Where it is written: `relationship_files[0] (/etc/fedgw/federation.yaml,
    /// document 2, metadata.name "west")`.
    pub fn place(&self) -> String {
        format!(
            "relationship_files[{}] ({}, {}, metadata.name {:?})",
            self.index,
            self.file.display(),
            self.object.location,
            self.object.name
        )
    }
}

/// Read and parse the configuration's `relationship_files`, in order. Blocks
/// (reads files): run it off the reactor.
///
/// # Errors
/// [`ConfigError::Invalid`] with key `relationship_files[N]`, naming the file and
/// the problem (unreadable, not UTF-8, a [`CftdError`]), or two objects, in one file
/// or two, with the same trust domain.
pub fn read_files(paths: &[PathBuf]) -> Result<Vec<FileObject>, ConfigError> {
    let mut out: Vec<FileObject> = Vec::new();
    for (index, file) in paths.iter().enumerate() {
        let invalid = |reason: String| ConfigError::Invalid {
            key: format!("relationship_files[{index}]"),
            reason: format!("{}: {reason}", file.display()),
        };
        let bytes = std::fs::read(file).map_err(|err| invalid(err.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|_| invalid("not UTF-8".to_owned()))?;
        for object in parse(&text).map_err(|err| invalid(err.to_string()))? {
            let found = FileObject {
                index,
                file: file.clone(),
                object,
            };
            if let Some(first) = out
                .iter()
                .find(|o| o.object.spec.trust_domain == found.object.spec.trust_domain)
            {
                return Err(invalid(format!(
                    "{}: {} is federated with already by {}",
                    found.object.location,
                    found.object.spec.trust_domain,
                    first.place()
                )));
            }
            out.push(found);
        }
    }
    Ok(out)
}

/// One ClusterFederatedTrustDomain object as the Kubernetes API returns it (JSON),
/// under the same rules as a file's; `location` says where it was read, e.g.
/// `ClusterFederatedTrustDomain "west"`.
///
/// # Errors
/// [`CftdError`] naming the field and the problem.
pub fn from_object(location: String, value: &Value) -> Result<Cftd, CftdError> {
    let map = value.as_object().ok_or_else(|| CftdError {
        location: location.clone(),
        name: None,
        field: "(object)".to_owned(),
        problem: format!("expected a mapping, found {}", kind_of(value)),
    })?;
    object(location, map)
}

/// The objects of one document: itself, or the items of a list.
fn objects(location: &str, value: &Value) -> Result<Vec<Cftd>, CftdError> {
    let fail = |field: &str, problem: String| CftdError {
        location: location.to_owned(),
        name: None,
        field: field.to_owned(),
        problem,
    };
    let map = value.as_object().ok_or_else(|| {
        fail(
            "(document)",
            format!("expected a mapping, found {}", kind_of(value)),
        )
    })?;
    let api_version = map.get("apiVersion").and_then(Value::as_str);
    let kind = map.get("kind").and_then(Value::as_str);
    let list = matches!(
        (api_version, kind),
        (Some("v1"), Some("List")) | (Some(API_VERSION), Some("ClusterFederatedTrustDomainList"))
    );
    if !list {
        return Ok(vec![object(location.to_owned(), map)?]);
    }
    let items = map
        .get("items")
        .and_then(Value::as_array)
        .ok_or_else(|| fail("items", "a list needs an items sequence".to_owned()))?;
    items
        .iter()
        .enumerate()
        .map(|(j, item)| {
            let location = format!("{location}, items[{j}]");
            let map = item.as_object().ok_or_else(|| CftdError {
                location: location.clone(),
                name: None,
                field: "(object)".to_owned(),
                problem: format!("expected a mapping, found {}", kind_of(item)),
            })?;
            object(location, map)
        })
        .collect()
}

/// One ClusterFederatedTrustDomain object.
fn object(location: String, map: &Map<String, Value>) -> Result<Cftd, CftdError> {
    let name = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let fail = |field: &str, problem: String| CftdError {
        location: location.clone(),
        name: name.clone(),
        field: field.to_owned(),
        problem,
    };
    match map.get("apiVersion") {
        Some(Value::String(v)) if v == API_VERSION => {}
        Some(Value::String(v)) => {
            return Err(fail(
                "apiVersion",
                format!("expected {API_VERSION}, found {v:?}"),
            ));
        }
        other => return Err(fail("apiVersion", expected_string(other))),
    }
    match map.get("kind") {
        Some(Value::String(k)) if k == KIND => {}
        Some(Value::String(k)) => {
            return Err(fail("kind", format!("expected {KIND}, found {k:?}")));
        }
        other => return Err(fail("kind", expected_string(other))),
    }
    unknown_fields(map, "", TOP_FIELDS).map_err(|(f, p)| fail(&f, p))?;
    match map.get("metadata") {
        Some(Value::Object(_)) => {}
        None => {
            return Err(fail(
                "metadata",
                "missing (metadata.name is required)".to_owned(),
            ));
        }
        Some(other) => {
            return Err(fail(
                "metadata",
                format!("expected a mapping, found {}", kind_of(other)),
            ));
        }
    }
    let name = match map.get("metadata").and_then(|m| m.get("name")) {
        Some(Value::String(n)) if !n.is_empty() => n.clone(),
        other => return Err(fail("metadata.name", expected_string(other))),
    };
    let spec = match map.get("spec") {
        Some(Value::Object(spec)) => spec,
        None => return Err(fail("spec", "missing".to_owned())),
        Some(other) => {
            return Err(fail(
                "spec",
                format!("expected a mapping, found {}", kind_of(other)),
            ));
        }
    };
    unknown_fields(spec, "spec.", SPEC_FIELDS).map_err(|(f, p)| fail(&f, p))?;

    let trust_domain: TrustDomain =
        parse_field(required_string(spec, "trustDomain"), "spec.trustDomain")
            .map_err(|(f, p)| fail(&f, p))?;
    // Checked on its text and never repeated (it may carry a password).
    let url: Url = required_string(spec, "bundleEndpointURL")
        .and_then(|raw| {
            EndpointUrl::parse(raw)
                .map(Url::from)
                .map_err(|err| err.to_string())
        })
        .map_err(|problem| fail("spec.bundleEndpointURL", problem))?;
    let profile_map = match spec.get("bundleEndpointProfile") {
        Some(Value::Object(p)) => p,
        None => return Err(fail("spec.bundleEndpointProfile", "missing".to_owned())),
        Some(other) => {
            return Err(fail(
                "spec.bundleEndpointProfile",
                format!("expected a mapping, found {}", kind_of(other)),
            ));
        }
    };
    unknown_fields(profile_map, "spec.bundleEndpointProfile.", PROFILE_FIELDS)
        .map_err(|(f, p)| fail(&f, p))?;
    let profile = match required_string(profile_map, "type") {
        Ok("https_web") => ProfileName::HttpsWeb,
        Ok("https_spiffe") => ProfileName::HttpsSpiffe,
        Ok(other) => {
            return Err(fail(
                "spec.bundleEndpointProfile.type",
                format!("expected https_web or https_spiffe, found {other:?}"),
            ));
        }
        Err(problem) => return Err(fail("spec.bundleEndpointProfile.type", problem)),
    };
    const ENDPOINT_ID: &str = "spec.bundleEndpointProfile.endpointSPIFFEID";
    let endpoint_spiffe_id: Option<SpiffeId> = optional_string(profile_map, "endpointSPIFFEID")
        .map_err(|p| fail(ENDPOINT_ID, p))?
        .map(|id| parse_field(Ok(id), ENDPOINT_ID).map_err(|(f, p)| fail(&f, p)))
        .transpose()?;
    let bundle = optional_string(spec, "trustDomainBundle")
        .map_err(|p| fail("spec.trustDomainBundle", p))?;
    let class_name = optional_string(spec, "className")
        .map_err(|p| fail("spec.className", p))?
        .map(str::to_owned);

    let mut notes = Vec::new();
    if let Some(class) = &class_name {
        notes.push(format!(
            "spec.className {class:?} is not used: fedgw applies every object it is given"
        ));
    }
    let bootstrap_bundle = match (bundle, profile, &endpoint_spiffe_id) {
        (None, _, _) => None,
        (Some(bundle), ProfileName::HttpsSpiffe, Some(id))
            if id.trust_domain() == &trust_domain =>
        {
            Some(bundle.to_owned())
        }
        (Some(_), ProfileName::HttpsSpiffe, _) => {
            notes.push(format!(
                "spec.trustDomainBundle is not used: the endpoint is authenticated with the bundle of {}, which another relationship (or a local trust domain) provides",
                endpoint_spiffe_id
                    .as_ref()
                    .map_or_else(|| "its trust domain".to_owned(), |id| id.trust_domain().to_string())
            ));
            None
        }
        (Some(_), ProfileName::HttpsWeb, _) => {
            notes.push(
                "spec.trustDomainBundle is not used: an https_web endpoint is authenticated with Web PKI, and the bundle is fetched from it".to_owned(),
            );
            None
        }
    };

    let relationship = RelationshipSpec {
        trust_domain,
        url: Some(url),
        urls: Vec::new(),
        profile,
        endpoint_spiffe_id,
        bootstrap_bundle,
        bootstrap_format: DocumentFormat::Spiffe,
        extra_ca_roots_pem: None,
        follow_redirects: true,
        proxy: ProxySetting::default(),
        // The ClusterFederatedTrustDomain schema has no such field: an object's
        // relationship keeps the default (revocations refused).
        allow_revocation: false,
    };
    relationship
        .validate(&BTreeSet::new())
        .map_err(|err| match err {
            ConfigError::Invalid { key, reason } => fail(yaml_field(&key), reason),
            other => fail("spec", other.to_string()),
        })?;
    let limits = Limits {
        max_document_bytes: CHECK_MAX_DOCUMENT_BYTES,
        fetch_timeout: Duration::from_secs(30),
    };
    Relationship::resolve(&relationship.to_entry(), relationship.material(), limits)
        .map_err(|err| fail("spec.trustDomainBundle", err.to_string()))?;
    Ok(Cftd {
        location,
        name,
        class_name,
        spec: relationship,
        notes,
    })
}

/// The YAML field of an API body field named by the configuration's rules.
fn yaml_field(key: &str) -> &'static str {
    let fields: BTreeMap<&str, &'static str> = [
        ("trust_domain", "spec.trustDomain"),
        ("url", "spec.bundleEndpointURL"),
        ("profile", "spec.bundleEndpointProfile.type"),
        (
            "endpoint_spiffe_id",
            "spec.bundleEndpointProfile.endpointSPIFFEID",
        ),
        ("bootstrap_bundle", "spec.trustDomainBundle"),
    ]
    .into();
    fields.get(key).copied().unwrap_or("spec")
}

fn unknown_fields(
    map: &Map<String, Value>,
    prefix: &str,
    known: &[&str],
) -> Result<(), (String, String)> {
    match map.keys().find(|k| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some(key) => Err((
            format!("{prefix}{key}"),
            format!(
                "unknown field (fedgw refuses what it would not apply); known fields: {}",
                known.join(", ")
            ),
        )),
    }
}

fn required_string<'a>(map: &'a Map<String, Value>, key: &str) -> Result<&'a str, String> {
    match optional_string(map, key)? {
        Some(s) => Ok(s),
        None => Err("missing".to_owned()),
    }
}

/// A string field; absent, `null` and `""` (Go's `omitempty`) are all absent.
fn optional_string<'a>(map: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("expected a string, found {}", kind_of(other))),
    }
}

fn parse_field<T>(value: Result<&str, String>, field: &str) -> Result<T, (String, String)>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let text = value.map_err(|p| (field.to_owned(), p))?;
    text.parse()
        .map_err(|err: T::Err| (field.to_owned(), format!("{text:?}: {err}")))
}

fn expected_string(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "missing".to_owned(),
        Some(Value::String(_)) => "must not be empty".to_owned(),
        Some(other) => format!("expected a string, found {}", kind_of(other)),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bundle of `west.example` in SPIFFE format, one CA certificate (a bootstrap
    /// bundle must hold an X.509 authority), on one line.
    fn west_bundle() -> String {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose, SanType};
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        params.subject_alt_names = vec![SanType::URI("spiffe://west.example".try_into().unwrap())];
        let der = params.self_signed(&key).unwrap().der().to_vec();
        let mut bundle = spiffe_federation::Bundle::new(TrustDomain::new("west.example").unwrap());
        bundle.add_x509_authority(spiffe_federation::bundle::X509Authority::from_der(der).unwrap());
        bundle.set_sequence(Some(1));
        String::from_utf8(bundle.to_json()).unwrap()
    }

    fn error(text: &str) -> CftdError {
        match parse(text) {
            Err(err) => err,
            Ok(parsed) => panic!("expected an error, parsed {parsed:?}"),
        }
    }

    #[test]
    fn https_spiffe_and_https_web_objects_become_relationships() {
        let west_bundle = west_bundle();
        let text = format!(
            r#"
apiVersion: spire.spiffe.io/v1alpha1
kind: ClusterFederatedTrustDomain
metadata:
  name: west
  labels:
    team: platform
spec:
  trustDomain: west.example
  bundleEndpointURL: https://spire-west.example:8443
  bundleEndpointProfile:
    type: https_spiffe
    endpointSPIFFEID: spiffe://west.example/spire/server
  trustDomainBundle: |-
    {west_bundle}
---
# a comment-only document separator is fine too
---
apiVersion: spire.spiffe.io/v1alpha1
kind: ClusterFederatedTrustDomain
metadata:
  name: partner
spec:
  trustDomain: partner.example
  bundleEndpointURL: https://bundle.partner.example/
  bundleEndpointProfile:
    type: https_web
status: {{}}
"#
        );
        let parsed = parse(&text).unwrap();
        assert_eq!(parsed.len(), 2);
        let west = &parsed[0];
        assert_eq!(west.location, "document 1");
        assert_eq!(west.name, "west");
        assert_eq!(west.spec.trust_domain.as_str(), "west.example");
        assert_eq!(
            west.spec.url.as_ref().unwrap().as_str(),
            "https://spire-west.example:8443/"
        );
        assert_eq!(west.spec.profile, ProfileName::HttpsSpiffe);
        assert_eq!(
            west.spec.endpoint_spiffe_id.as_ref().unwrap().to_string(),
            "spiffe://west.example/spire/server"
        );
        assert_eq!(
            west.spec.bootstrap_bundle.as_deref(),
            Some(west_bundle.as_str())
        );
        assert!(west.notes.is_empty(), "{:?}", west.notes);
        let partner = &parsed[1];
        assert_eq!(partner.location, "document 3");
        assert_eq!(partner.spec.profile, ProfileName::HttpsWeb);
        assert_eq!(partner.spec.endpoint_spiffe_id, None);
        assert_eq!(partner.spec.bootstrap_bundle, None);
        assert!(partner.spec.follow_redirects);
        assert_eq!(partner.spec.proxy, ProxySetting::FromEnvironment);
    }

    #[test]
    fn kubectl_list_output_is_accepted_item_by_item() {
        let text = r#"
apiVersion: v1
kind: List
items:
- apiVersion: spire.spiffe.io/v1alpha1
  kind: ClusterFederatedTrustDomain
  metadata: {name: a, uid: 1b2c, resourceVersion: "7"}
  spec:
    trustDomain: a.example
    bundleEndpointURL: https://a.example/
    bundleEndpointProfile: {type: https_web}
- apiVersion: spire.spiffe.io/v1alpha1
  kind: ClusterFederatedTrustDomain
  metadata: {name: b}
  spec:
    trustDomain: b.example
    bundleEndpointURL: https://b.example/
    bundleEndpointProfile: {type: https_webb}
"#;
        let err = error(text);
        assert_eq!(err.location, "document 1, items[1]");
        assert_eq!(err.name.as_deref(), Some("b"));
        assert_eq!(err.field, "spec.bundleEndpointProfile.type");
        assert!(err.problem.contains("https_webb"), "{err}");
        let fixed = text.replace("https_webb", "https_web");
        let parsed = parse(&fixed).unwrap();
        assert_eq!(parsed[1].location, "document 1, items[1]");
        assert_eq!(parsed[1].spec.trust_domain.as_str(), "b.example");
    }

    fn one(spec: &str) -> String {
        format!(
            "apiVersion: spire.spiffe.io/v1alpha1\nkind: ClusterFederatedTrustDomain\nmetadata:\n  name: x\nspec:\n{spec}"
        )
    }

    #[test]
    fn urls_with_passwords_or_repaired_text_are_refused_without_repeating_them() {
        let web = "  trustDomain: w.example\n  bundleEndpointURL: @@\n  bundleEndpointProfile:\n    type: https_web\n";
        for (url, problem) in [
            ("https://ops:s3cret@w.example/", "userinfo"),
            ("\"https://w.example/a\\nb\"", "control character"),
            ("https:///w.example/", "no host"),
        ] {
            let err = error(&one(&web.replace("@@", url)));
            assert_eq!(err.field, "spec.bundleEndpointURL", "{err}");
            assert!(err.problem.contains(problem), "{url}: {err}");
            assert!(!err.to_string().contains("s3cret"), "{err}");
        }
    }

    #[test]
    fn errors_name_the_document_the_field_and_the_problem() {
        let web = "  trustDomain: w.example\n  bundleEndpointURL: https://w.example/\n  bundleEndpointProfile:\n    type: https_web\n";
        let cases: Vec<(String, &str, &str)> = vec![
            (
                one(web).replace("v1alpha1", "v1beta1"),
                "apiVersion",
                "v1beta1",
            ),
            (
                one(web).replace("kind: ClusterFederatedTrustDomain", "kind: ClusterSPIFFEID"),
                "kind",
                "ClusterSPIFFEID",
            ),
            (
                one(&web.replace("  trustDomain: w.example\n", "")),
                "spec.trustDomain",
                "missing",
            ),
            (
                one(&web.replace("w.example\n", "W_Example\n")),
                "spec.trustDomain",
                "W_Example",
            ),
            (
                one(&web.replace("https://w.example/", "http://w.example/")),
                "spec.bundleEndpointURL",
                "https",
            ),
            (
                one(&web.replace("https://w.example/", "not a url")),
                "spec.bundleEndpointURL",
                "not a valid URL",
            ),
            (
                one(&web.replace("https_web", "https_spiffe")),
                "spec.bundleEndpointProfile.endpointSPIFFEID",
                "required",
            ),
            (
                one(&format!(
                    "{web}    endpointSPIFFEID: spiffe://w.example/server\n"
                )),
                "spec.bundleEndpointProfile.endpointSPIFFEID",
                "https_spiffe",
            ),
            (
                one(&format!("{web}  bundleEndpointUrl: https://typo/\n")),
                "spec.bundleEndpointUrl",
                "unknown field",
            ),
            (
                one(&format!("{web}    endpointSpiffeId: spiffe://w/x\n")),
                "spec.bundleEndpointProfile.endpointSpiffeId",
                "unknown field",
            ),
            (format!("{}extra: 1\n", one(web)), "extra", "unknown field"),
            (
                one(&web.replace("w.example\n", "[w.example]\n")),
                "spec.trustDomain",
                "a sequence",
            ),
            (
                one(&format!(
                    "{}    endpointSPIFFEID: https://w.example/server\n",
                    web.replace("https_web", "https_spiffe")
                )),
                "spec.bundleEndpointProfile.endpointSPIFFEID",
                "https://w.example/server",
            ),
            (
                one(&format!("{web}  className: [a]\n")),
                "spec.className",
                "expected a string",
            ),
            (
                one(web).replace("  name: x\n", "  labels: {}\n"),
                "metadata.name",
                "missing",
            ),
        ];
        for (text, field, problem) in cases {
            let err = error(&text);
            assert_eq!(err.location, "document 1", "{text}");
            assert_eq!(err.field, field, "{text}\n{err}");
            assert!(err.problem.contains(problem), "{text}\n{err}");
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    #[test]
    fn the_second_document_is_named_with_its_metadata_name() {
        let good = one(
            "  trustDomain: a.example\n  bundleEndpointURL: https://a.example/\n  bundleEndpointProfile: {type: https_web}\n",
        );
        let text = format!("{good}---\n{}", good.replace("name: x", "name: again"));
        let err = error(&text);
        assert_eq!(err.location, "document 2");
        assert_eq!(err.name.as_deref(), Some("again"));
        assert_eq!(err.field, "spec.trustDomain");
        assert!(err.problem.contains("document 1"), "{err}");
        assert_eq!(
            err.to_string(),
            "document 2 (metadata.name \"again\"): spec.trustDomain: a.example is federated with already by document 1 (metadata.name \"x\")"
        );
    }

    #[test]
    fn bad_yaml_empty_files_and_bad_bundles_are_refused() {
        let err = error("apiVersion: [unclosed\n");
        assert_eq!(err.field, "(document)");
        assert!(err.problem.contains("YAML"), "{err}");
        assert!(error("").problem.contains(KIND));
        assert!(error("---\n---\n").problem.contains(KIND));
        let err = error("- a\n- b\n");
        assert!(err.problem.contains("a sequence"), "{err}");

        let spiffe = "  trustDomain: w.example\n  bundleEndpointURL: https://w.example/\n  bundleEndpointProfile:\n    type: https_spiffe\n    endpointSPIFFEID: spiffe://w.example/server\n";
        let err = error(&one(&format!("{spiffe}  trustDomainBundle: not json\n")));
        assert_eq!(err.field, "spec.trustDomainBundle");
        // A bundle with no X.509 authority could not authenticate the endpoint.
        let err = error(&one(&format!(
            "{spiffe}  trustDomainBundle: '{{\"keys\":[]}}'\n"
        )));
        assert_eq!(err.field, "spec.trustDomainBundle");
        assert!(err.problem.contains("holds no X.509 authority"), "{err}");
    }

    #[test]
    fn fields_without_an_equivalent_become_notes() {
        // className: accepted, not used.
        let web = "  trustDomain: w.example\n  bundleEndpointURL: https://w.example/\n  bundleEndpointProfile:\n    type: https_web\n";
        let parsed = parse(&one(&format!("{web}  className: spire-mgmt\n"))).unwrap();
        assert_eq!(parsed[0].class_name.as_deref(), Some("spire-mgmt"));
        assert!(
            parsed[0].notes[0].contains("className"),
            "{:?}",
            parsed[0].notes
        );

        // https_web: the bundle is not a bootstrap bundle.
        let west_bundle = west_bundle();
        let parsed = parse(&one(&format!(
            "{web}  trustDomainBundle: '{west_bundle}'\n"
        )))
        .unwrap();
        assert_eq!(parsed[0].spec.bootstrap_bundle, None);
        assert!(
            parsed[0].notes[0].contains("https_web"),
            "{:?}",
            parsed[0].notes
        );

        // https_spiffe with the endpoint in another trust domain: the bundle of
        // spec.trustDomain cannot authenticate it.
        let other = "  trustDomain: w.example\n  bundleEndpointURL: https://w.example/\n  bundleEndpointProfile:\n    type: https_spiffe\n    endpointSPIFFEID: spiffe://hub.example/server\n";
        let parsed = parse(&one(&format!(
            "{other}  trustDomainBundle: '{west_bundle}'\n"
        )))
        .unwrap();
        assert_eq!(parsed[0].spec.bootstrap_bundle, None);
        assert!(
            parsed[0].notes[0].contains("hub.example"),
            "{:?}",
            parsed[0].notes
        );

        // Go's omitempty: an empty string is an absent field.
        let parsed = parse(&one(&format!(
            "{web}  trustDomainBundle: \"\"\n  className: \"\"\n"
        )))
        .unwrap();
        assert!(parsed[0].notes.is_empty(), "{:?}", parsed[0].notes);
    }
}
