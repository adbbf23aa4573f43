//! `[kubernetes]`: how fedgw reaches a Kubernetes API server, and what it reads and
//! writes there.
//!
//! Owns the schema and the rules that need no API server (a signer name Kubernetes
//! accepts, a lease long enough to renew, ConfigMaps named once). It does not own
//! talking to the server ([`crate::kubernetes`]).

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use spiffe_federation::TrustDomain;

use crate::config::{ConfigError, Seconds};

/// Default signer name of the ClusterTrustBundles fedgw writes.
pub const DEFAULT_SIGNER_NAME: &str = "fedgw.dev/federation";
/// Default namespace and name of the writer's Lease.
pub const DEFAULT_LEASE_NAMESPACE: &str = "fedgw-system";
/// Default name of the writer's Lease.
pub const DEFAULT_LEASE_NAME: &str = "fedgw-writer";
/// Default `kubernetes.lease.duration`.
pub const DEFAULT_LEASE_DURATION: Seconds = Seconds(15);
/// Shortest `kubernetes.lease.duration`: it is renewed every third of it.
pub const MIN_LEASE_DURATION: Seconds = Seconds(3);
/// Default `kubernetes.request_timeout`.
pub const DEFAULT_REQUEST_TIMEOUT: Seconds = Seconds(10);
/// Default key of a `[[kubernetes.config_maps]]` entry, as SPIRE's k8sbundle
/// notifier writes it.
pub const DEFAULT_CONFIG_MAP_KEY: &str = "bundle.crt";

/// The `[kubernetes]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// A kubeconfig file; absent: the pod's service account (in-cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context; absent: its current context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Each API request's time limit (default 10 s; a watch is held open longer).
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Seconds,
    /// Watch ClusterFederatedTrustDomain objects as relationships (default true).
    #[serde(default = "yes")]
    pub relationships: bool,
    /// Only the ClusterFederatedTrustDomains matching this label selector
    /// (`fedgw.dev/gateway=east`); every one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relationship_selector: Option<String>,
    /// Write each ClusterFederatedTrustDomain's `status` (default true).
    #[serde(default = "yes")]
    pub status: bool,
    /// The Lease electing the one replica that writes.
    #[serde(default)]
    pub lease: LeaseConfig,
    /// One ClusterTrustBundle per trusted trust domain; off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_trust_bundles: Option<ClusterTrustBundlesConfig>,
    /// ConfigMaps of PEM bundles in the format of SPIRE's k8sbundle notifier.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_maps: Vec<ConfigMapConfig>,
}

/// `[kubernetes.lease]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaseConfig {
    /// Its namespace (default `fedgw-system`).
    pub namespace: String,
    /// Its name (default `fedgw-writer`).
    pub name: String,
    /// How long a holder that stops renewing keeps it (default 15 s); renewed every
    /// third of it.
    pub duration: Seconds,
    /// This replica's name in it; default the `POD_NAME` environment variable or the
    /// host name, with a random suffix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_LEASE_NAMESPACE.to_owned(),
            name: DEFAULT_LEASE_NAME.to_owned(),
            duration: DEFAULT_LEASE_DURATION,
            identity: None,
        }
    }
}

/// `[kubernetes.cluster_trust_bundles]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterTrustBundlesConfig {
    /// The signer the objects are linked to (default `fedgw.dev/federation`); each
    /// object is named after it, and writing needs `attest` on it.
    #[serde(default = "default_signer_name")]
    pub signer_name: String,
    /// Also write the local trust domains' bundles (default false).
    #[serde(default)]
    pub include_local: bool,
    /// Only these trust domains; every trusted one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_domains: Option<Vec<TrustDomain>>,
}

/// One `[[kubernetes.config_maps]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigMapConfig {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The data key holding the PEM certificates (default `bundle.crt`).
    #[serde(default = "default_config_map_key")]
    pub key: String,
    /// Only these trust domains' X.509 authorities; every trusted one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_domains: Option<Vec<TrustDomain>>,
    /// Also the local trust domains' (default false).
    #[serde(default)]
    pub include_local: bool,
}

fn yes() -> bool {
    true
}

fn default_request_timeout() -> Seconds {
    DEFAULT_REQUEST_TIMEOUT
}

fn default_signer_name() -> String {
    DEFAULT_SIGNER_NAME.to_owned()
}

fn default_config_map_key() -> String {
    DEFAULT_CONFIG_MAP_KEY.to_owned()
}

impl KubernetesConfig {
    /// Check the table, naming the key of the first bad value.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the `kubernetes.*` key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, reason: String| ConfigError::Invalid {
            key: format!("kubernetes.{key}"),
            reason,
        };
        if self.request_timeout.0 == 0 {
            return Err(invalid("request_timeout".into(), "must be above 0".into()));
        }
        if let Some(selector) = &self.relationship_selector
            && selector.trim().is_empty()
        {
            return Err(invalid(
                "relationship_selector".into(),
                "is empty; leave it out to watch every ClusterFederatedTrustDomain".into(),
            ));
        }
        let lease = &self.lease;
        for (key, value) in [("namespace", &lease.namespace), ("name", &lease.name)] {
            if let Err(reason) = dns_label_or_subdomain(value, key == "namespace") {
                return Err(invalid(format!("lease.{key}"), reason));
            }
        }
        if lease.duration < MIN_LEASE_DURATION || lease.duration > Seconds(3600) {
            return Err(invalid(
                "lease.duration".into(),
                format!(
                    "{} s is outside 3 s to 1 h (it is renewed every third of it)",
                    lease.duration.0
                ),
            ));
        }
        if let Some(identity) = &lease.identity
            && (identity.is_empty() || identity.len() > 128)
        {
            return Err(invalid(
                "lease.identity".into(),
                "must be 1 to 128 characters".into(),
            ));
        }
        if let Some(ctb) = &self.cluster_trust_bundles {
            check_signer_name(&ctb.signer_name)
                .map_err(|reason| invalid("cluster_trust_bundles.signer_name".into(), reason))?;
            twice(ctb.trust_domains.as_deref())
                .map_err(|reason| invalid("cluster_trust_bundles.trust_domains".into(), reason))?;
        }
        let mut seen = BTreeSet::new();
        for (i, map) in self.config_maps.iter().enumerate() {
            let key = |field: &str| format!("config_maps[{i}].{field}");
            dns_label_or_subdomain(&map.namespace, true)
                .map_err(|reason| invalid(key("namespace"), reason))?;
            dns_label_or_subdomain(&map.name, false)
                .map_err(|reason| invalid(key("name"), reason))?;
            if !valid_config_map_key(&map.key) {
                return Err(invalid(
                    key("key"),
                    format!(
                        "{:?} is not a ConfigMap key (letters, digits, '-', '_' and '.', at most 253)",
                        map.key
                    ),
                ));
            }
            twice(map.trust_domains.as_deref())
                .map_err(|reason| invalid(key("trust_domains"), reason))?;
            if !seen.insert((&map.namespace, &map.name)) {
                return Err(invalid(
                    key("name"),
                    format!("{}/{} is listed twice", map.namespace, map.name),
                ));
            }
        }
        Ok(())
    }
}

fn twice(domains: Option<&[TrustDomain]>) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for td in domains.into_iter().flatten() {
        if !seen.insert(td) {
            return Err(format!("{td} is listed twice"));
        }
    }
    Ok(())
}

/// Whether `part` is a DNS-1123 label's characters: lower-case letters, digits and
/// `-`, not at either end.
fn dns_label_chars(part: &str) -> bool {
    !part.is_empty()
        && part
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !part.starts_with('-')
        && !part.ends_with('-')
}

/// Whether `value` is a DNS-1123 subdomain of at most `max` characters.
pub(crate) fn dns_subdomain(value: &str, max: usize) -> bool {
    value.len() <= max && value.split('.').all(dns_label_chars)
}

/// A DNS-1123 label (a namespace: at most 63) or subdomain (a name: at most 253).
fn dns_label_or_subdomain(value: &str, label: bool) -> Result<(), String> {
    let max = if label { 63 } else { 253 };
    let ok = if label {
        value.len() <= max && dns_label_chars(value)
    } else {
        dns_subdomain(value, max)
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a Kubernetes {} (lower-case letters, digits and '-'{}, at most {max})",
            if label { "namespace" } else { "name" },
            if label { "" } else { ", dot-separated" }
        ))
    }
}

/// A signer name as KEP-3257 wants it: `<DNS subdomain>/<path>`, the path a DNS
/// subdomain too.
pub fn check_signer_name(signer: &str) -> Result<(), String> {
    let Some((domain, path)) = signer.split_once('/') else {
        return Err(format!(
            "{signer:?} is not a signer name: write a domain and a path, e.g. \"fedgw.dev/federation\""
        ));
    };
    dns_label_or_subdomain(domain, false)
        .and_then(|()| dns_label_or_subdomain(path, false))
        .map_err(|_| {
            format!(
                "{signer:?} is not a signer name: both the domain and the path after '/' must be lower-case DNS names, e.g. \"fedgw.dev/federation\""
            )
        })
}

fn valid_config_map_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<KubernetesConfig, String> {
        toml::from_str::<KubernetesConfig>(text).map_err(|err| err.to_string())
    }

    fn key_of(text: &str) -> String {
        match parse(text).map(|c| c.validate()) {
            Ok(Err(ConfigError::Invalid { key, .. })) => key,
            other => panic!("expected an invalid key for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn defaults_watch_and_write_status_but_write_no_bundles() {
        let config = parse("").unwrap();
        config.validate().unwrap();
        assert!(config.relationships && config.status);
        assert_eq!(config.lease, LeaseConfig::default());
        assert_eq!(config.lease.duration, Seconds(15));
        assert!(config.cluster_trust_bundles.is_none() && config.config_maps.is_empty());
        let ctb = parse("[cluster_trust_bundles]\n").unwrap();
        assert_eq!(
            ctb.cluster_trust_bundles.unwrap().signer_name,
            "fedgw.dev/federation"
        );
        let map = parse("[[config_maps]]\nnamespace = \"spire\"\nname = \"b\"\n").unwrap();
        assert_eq!(map.config_maps[0].key, "bundle.crt");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        assert!(
            parse("kubeconfg = \"/x\"")
                .unwrap_err()
                .contains("kubeconfg")
        );
        assert!(parse("[lease]\nnamspace = \"x\"").is_err());
        assert_eq!(key_of("[lease]\nduration = 2"), "kubernetes.lease.duration");
        assert_eq!(
            key_of("[lease]\nnamespace = \"Fedgw\""),
            "kubernetes.lease.namespace"
        );
        assert_eq!(key_of("request_timeout = 0"), "kubernetes.request_timeout");
        assert_eq!(
            key_of("relationship_selector = \" \""),
            "kubernetes.relationship_selector"
        );
        for bad in ["fedgw", "Fedgw.dev/x", "fedgw.dev/", "fedgw.dev/a/b"] {
            assert_eq!(
                key_of(&format!("[cluster_trust_bundles]\nsigner_name = \"{bad}\"")),
                "kubernetes.cluster_trust_bundles.signer_name",
                "{bad}"
            );
        }
        assert_eq!(
            key_of("[cluster_trust_bundles]\ntrust_domains = [\"a.example\", \"a.example\"]"),
            "kubernetes.cluster_trust_bundles.trust_domains"
        );
        let map = "[[config_maps]]\nnamespace = \"spire\"\nname = \"b\"\n";
        assert_eq!(
            key_of(&format!("{map}{map}")),
            "kubernetes.config_maps[1].name"
        );
        assert_eq!(
            key_of(&format!("{map}key = \"a/b\"")),
            "kubernetes.config_maps[0].key"
        );
        assert_eq!(
            key_of("[[config_maps]]\nnamespace = \"a.b\"\nname = \"b\"\n"),
            "kubernetes.config_maps[0].namespace"
        );
    }
}
