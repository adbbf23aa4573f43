//! The SPIFFE Bundle Map (TDB §5.1.1, Appendix B): many trust domains' bundles in one
//! document, `{"trust_domains": {"<td>": <bundle>, …}}`.
//!
//! A map is the "state of the world": a trust domain absent from it is not trusted.
//! Each bundle keeps its own domain binding (SPIFFE Federation §4.2: bundles of
//! different trust domains are never merged).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::json::{Json, Members, pointer};
use super::parse::{bundle_from_json, read_document};
use super::{Bundle, BundleError, DEFAULT_MAX_DOCUMENT_SIZE, Ignored, Lint};
use crate::trust_domain::TrustDomain;

/// Bundles keyed by trust domain; at most one per domain by construction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundleMap {
    bundles: BTreeMap<TrustDomain, Bundle>,
}

/// A parsed bundle map with what was left out of each bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedMap {
    /// The map.
    pub map: BundleMap,
    /// Elements left out, with locations under `/trust_domains/<td>/keys/…`.
    pub ignored: Vec<Ignored>,
    /// Warnings about kept content.
    pub lints: Vec<Lint>,
}

impl BundleMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parse a bundle map document with the default 1 MiB limit.
    ///
    /// The map is refused as a whole if `trust_domains` is missing or not an object, a
    /// key is not a valid trust domain name (TDB §5.1.1), a trust domain occurs twice
    /// (TDB §5.1.1 MUST), or any bundle in it is refused. A `spiffe_refresh_hint` inside
    /// a bundle is validated but dropped (TDB §5.1.1: it must not drive refreshes).
    ///
    /// # Errors
    /// A [`BundleError`] naming the location of the fault.
    pub fn parse(document: &[u8]) -> Result<ParsedMap, BundleError> {
        Self::parse_with_limit(document, DEFAULT_MAX_DOCUMENT_SIZE)
    }

    /// As [`BundleMap::parse`] with an explicit size limit in bytes.
    ///
    /// # Errors
    /// A [`BundleError`] naming the location of the fault.
    pub fn parse_with_limit(document: &[u8], limit: usize) -> Result<ParsedMap, BundleError> {
        let json = read_document(document, limit)?;
        let Json::Object(top) = &json else {
            return Err(BundleError::WrongType {
                location: String::new(),
                expected: "a JSON object (a SPIFFE bundle map)",
                found: json.type_name(),
            });
        };
        let top = Members(top);
        if let Some(name) = top.first_duplicate() {
            return Err(BundleError::DuplicateMember {
                location: String::new(),
                name: name.to_owned(),
            });
        }
        let domains = match top.get("trust_domains") {
            Some(Json::Object(domains)) => domains,
            Some(other) => {
                return Err(BundleError::WrongType {
                    location: "/trust_domains".to_owned(),
                    expected: "an object of trust domain name to bundle",
                    found: other.type_name(),
                });
            }
            None => {
                return Err(BundleError::MissingMember {
                    location: String::new(),
                    member: "trust_domains",
                    found_instead: top.case_variant("trust_domains").map(str::to_owned),
                });
            }
        };
        let mut parsed = ParsedMap {
            map: Self::new(),
            ignored: Vec::new(),
            lints: Vec::new(),
        };
        for (name, document) in domains {
            let location = pointer("/trust_domains", name);
            let trust_domain =
                TrustDomain::new(name).map_err(|source| BundleError::InvalidTrustDomain {
                    location: location.clone(),
                    name: name.clone(),
                    source,
                })?;
            if parsed.map.bundles.contains_key(&trust_domain) {
                return Err(BundleError::DuplicateTrustDomain { name: name.clone() });
            }
            let mut one = bundle_from_json(&trust_domain, document, &location)?;
            // TDB §5.1.1: a map's consumers must not let per-bundle refresh hints
            // change their refresh behaviour, and producers omit them; the map drops
            // them so that a map means the same whatever produced it.
            one.bundle.set_refresh_hint(None);
            parsed.ignored.extend(one.ignored);
            parsed.lints.extend(one.lints);
            parsed.map.bundles.insert(trust_domain, one.bundle);
        }
        Ok(parsed)
    }

    /// Add or replace the bundle of its trust domain; returns the one replaced.
    pub fn insert(&mut self, bundle: Bundle) -> Option<Bundle> {
        self.bundles.insert(bundle.trust_domain().clone(), bundle)
    }

    /// Remove a trust domain's bundle.
    pub fn remove(&mut self, trust_domain: &TrustDomain) -> Option<Bundle> {
        self.bundles.remove(trust_domain)
    }

    /// The bundle of a trust domain.
    pub fn get(&self, trust_domain: &TrustDomain) -> Option<&Bundle> {
        self.bundles.get(trust_domain)
    }

    /// Bundles in trust domain order.
    pub fn iter(&self) -> impl Iterator<Item = (&TrustDomain, &Bundle)> {
        self.bundles.iter()
    }

    /// How many trust domains the map holds.
    pub fn len(&self) -> usize {
        self.bundles.len()
    }

    /// Whether the map holds no trust domain.
    pub fn is_empty(&self) -> bool {
        self.bundles.is_empty()
    }

    /// The map document, deterministic; bundles carry no refresh hint (TDB §5.1.1
    /// SHOULD omit) but keep their `spiffe_sequence` (TDB Appendix B.1).
    pub fn to_json(&self) -> Vec<u8> {
        self.to_value().to_string().into_bytes()
    }

    /// As [`BundleMap::to_json`], indented for people.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(&self.to_value()).unwrap_or_default()
    }

    fn to_value(&self) -> Value {
        let domains: Map<String, Value> = self
            .bundles
            .iter()
            .map(|(td, bundle)| (td.to_string(), bundle.to_value(false)))
            .collect();
        let mut top = Map::new();
        top.insert("trust_domains".into(), Value::Object(domains));
        Value::Object(top)
    }
}

impl FromIterator<Bundle> for BundleMap {
    fn from_iter<I: IntoIterator<Item = Bundle>>(iter: I) -> Self {
        let mut map = Self::new();
        for bundle in iter {
            map.insert(bundle);
        }
        map
    }
}
