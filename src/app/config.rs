//! The whole configuration file of one gateway: the tables of every part, gathered,
//! and the rules between them (a local domain needs a listener to be fetched, an
//! `https_spiffe` endpoint's ID must be in a local domain, a relationship must not
//! name a local domain, and so on).
//!
//! Owns reading one TOML document into a validated [`Config`], with no side effects.
//! It does not own the tables themselves: the shared ones and the error type are in
//! [`crate::config`], each output's in its folder, gathered by
//! [`crate::outputs::SinksConfig`].
//!
//! ```
//! let config = fedgw::app::Config::from_toml(r#"
//!     data_dir = "/var/lib/fedgw"
//!
//!     [[local]]
//!     trust_domain = "east.example"
//!     source = { file = "/etc/fedgw/east.json" }
//!
//!     [[federation]]
//!     trust_domain = "west.example"
//!     url = "https://bundle.west.example/"
//!     profile = "https_web"
//! "#)?;
//! assert_eq!(config.federation[0].trust_domain.as_str(), "west.example");
//! # Ok::<(), fedgw::config::ConfigError>(())
//! ```

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::net::{self, Kind};
use crate::config::{
    AdminConfig, AdminListen, ConfigError, ConfigWarning, EndpointConfig, FederationEntry,
    LocalDomain, LocalSource, PolicyConfig, PollingConfig, check_workload_api_socket,
    served_hint_warning, storage, validate_relationship,
};
use crate::outputs::SinksConfig;

/// The whole configuration of one gateway.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the gateway keeps its sled database and generated material.
    pub data_dir: PathBuf,
    /// The admin API listener.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Acceptance policy for fetched and pushed bundles.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Polling schedule bounds.
    #[serde(default)]
    pub polling: PollingConfig,
    /// Trust domains this gateway speaks for.
    #[serde(default)]
    pub local: Vec<LocalDomain>,
    /// Listeners serving the local bundles (and relayed foreign ones).
    #[serde(default)]
    pub endpoint: EndpointConfig,
    /// Foreign trust domains to fetch.
    #[serde(default)]
    pub federation: Vec<FederationEntry>,
    /// Files of spire-controller-manager ClusterFederatedTrustDomain YAML whose
    /// objects are relationships like `[[federation]]` ones (read-only through the
    /// API); read when the gateway starts (`relationships::cftd`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relationship_files: Vec<PathBuf>,
    /// Outputs that redistribute bundles to agents and proxies (`[sinks]`).
    #[serde(default)]
    pub sinks: SinksConfig,
    /// Process-wide connection settings (`[net]`: the file descriptor reserve).
    #[serde(default)]
    pub net: net::NetConfig,
    /// What the store keeps and when it rewrites its database (`[storage]`).
    #[serde(default)]
    pub storage: storage::StorageConfig,
    /// The Kubernetes API (`[kubernetes]`): ClusterFederatedTrustDomains in,
    /// ClusterTrustBundles, ConfigMaps and statuses out; off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<crate::kubernetes::KubernetesConfig>,
}

impl Config {
    /// Parse and validate a TOML document.
    ///
    /// # Errors
    /// [`ConfigError::Syntax`] for malformed TOML, unknown keys and wrong types;
    /// [`ConfigError::Invalid`] for values that break a rule, naming the key.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Err(ConfigError::Invalid {
                key: "data_dir".to_owned(),
                reason: "the configuration is empty: data_dir is required, and a gateway needs [[local]] trust domains to serve and/or [[federation]] relationships to fetch (docs/configuration.md)".to_owned(),
            });
        }
        // The TOML reader quotes the offending line, which may hold a URL's password.
        let config: Self = toml::from_str(text).map_err(|err| ConfigError::Syntax {
            message: crate::config::urls::redact_userinfo(err.to_string().trim_end()),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The admin listener, defaulting to `<data_dir>/admin.sock`.
    pub fn admin_listen(&self) -> AdminListen {
        self.admin
            .listen
            .clone()
            .unwrap_or_else(|| AdminListen::Unix(self.data_dir.join("admin.sock")))
    }

    /// The path a local domain is served at: configured, else `/` for the first local
    /// domain and `/<trust domain>` for the others.
    pub fn local_path(&self, index: usize) -> Option<String> {
        Some(self.local.get(index)?.served_path(index))
    }

    /// Legal settings that are probably mistakes (SEC-6, FED-2), in key order. Pure:
    /// the gateway logs them when it starts.
    pub fn warnings(&self) -> Vec<ConfigWarning> {
        let mut warnings = Vec::new();
        let no_listener = self.endpoint.https_web.is_none() && self.endpoint.https_spiffe.is_none();
        if !self.local.is_empty() && no_listener {
            warnings.push(ConfigWarning {
                key: "endpoint".to_owned(),
                message: "local trust domains are configured but no bundle endpoint listener ([endpoint.https_web] or [endpoint.https_spiffe]): peers cannot fetch them from this gateway".to_owned(),
            });
        }
        for (i, local) in self.local.iter().enumerate() {
            if let Some(message) = served_hint_warning(local.refresh_hint) {
                warnings.push(ConfigWarning {
                    key: format!("local[{i}].refresh_hint"),
                    message,
                });
            }
        }
        warnings
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, reason: String| ConfigError::Invalid { key, reason };
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir".into(), "must not be empty".into()));
        }
        self.admin.validate(&self.admin_listen())?;
        self.validate_limits()?;
        for (i, token) in self.admin.tokens.iter().enumerate() {
            let hex = token.sha256.len() == 64
                && token
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hex {
                return Err(invalid(
                    format!("admin.tokens[{i}].sha256"),
                    "must be 64 lower-case hex digits (the SHA-256 of the token)".into(),
                ));
            }
        }
        let p = &self.polling;
        if p.min_refresh.0 == 0 || p.min_refresh > p.max_refresh {
            return Err(invalid(
                "polling.min_refresh".into(),
                format!(
                    "must be positive and at most polling.max_refresh ({}s)",
                    p.max_refresh.0
                ),
            ));
        }
        if p.default_refresh < p.min_refresh || p.default_refresh > p.max_refresh {
            return Err(invalid(
                "polling.default_refresh".into(),
                "must lie between polling.min_refresh and polling.max_refresh".into(),
            ));
        }
        if p.fetch_timeout.0 == 0 {
            return Err(invalid(
                "polling.fetch_timeout".into(),
                "must be positive".into(),
            ));
        }
        if p.max_concurrent_fetches == 0 {
            return Err(invalid(
                "polling.max_concurrent_fetches".into(),
                "must be at least 1".into(),
            ));
        }
        let mut locals = BTreeSet::new();
        let mut paths = BTreeSet::new();
        for (i, local) in self.local.iter().enumerate() {
            if !locals.insert(local.trust_domain.clone()) {
                return Err(invalid(
                    format!("local[{i}].trust_domain"),
                    format!("{} is configured twice", local.trust_domain),
                ));
            }
            if let LocalSource::Admin { admin: false } = local.source {
                return Err(invalid(
                    format!("local[{i}].source"),
                    "use { file = \"…\" }, { workload_api_socket = \"unix:///…\" } or { admin = true }".into(),
                ));
            }
            if let LocalSource::WorkloadApi {
                workload_api_socket,
            } = &local.source
            {
                check_workload_api_socket(
                    &format!("local[{i}].source.workload_api_socket"),
                    workload_api_socket,
                )?;
            }
            let path = self.local_path(i).unwrap_or_default();
            if !path.starts_with('/') || path.starts_with("/relay/") {
                return Err(invalid(
                    format!("local[{i}].path"),
                    "must start with '/' and not with /relay/ (reserved for relayed bundles)"
                        .into(),
                ));
            }
            if !paths.insert(path.clone()) {
                return Err(invalid(
                    format!("local[{i}].path"),
                    format!("{path} is used twice"),
                ));
            }
            if local.refresh_hint.0 == 0 {
                return Err(invalid(
                    format!("local[{i}].refresh_hint"),
                    "must be positive".into(),
                ));
            }
        }
        if let Some(spiffe) = &self.endpoint.https_spiffe {
            match (&spiffe.svid, &spiffe.key, &spiffe.workload_api_socket) {
                (Some(_), Some(_), None) => {}
                (None, None, Some(socket)) => {
                    check_workload_api_socket("endpoint.https_spiffe.workload_api_socket", socket)?;
                }
                (_, _, Some(_)) => {
                    return Err(invalid(
                        "endpoint.https_spiffe.workload_api_socket".into(),
                        "give either svid and key (files) or workload_api_socket, not both".into(),
                    ));
                }
                (None, _, None) => {
                    return Err(invalid(
                        "endpoint.https_spiffe.svid".into(),
                        "required (with key), unless the SVID comes from workload_api_socket"
                            .into(),
                    ));
                }
                (Some(_), None, None) => {
                    return Err(invalid(
                        "endpoint.https_spiffe.key".into(),
                        "required with svid".into(),
                    ));
                }
            }
            if !locals.contains(spiffe.endpoint_spiffe_id.trust_domain()) {
                return Err(invalid(
                    "endpoint.https_spiffe.endpoint_spiffe_id".into(),
                    format!(
                        "{} is not in a local trust domain: the endpoint's SVID must chain to a bundle this gateway serves",
                        spiffe.endpoint_spiffe_id
                    ),
                ));
            }
            if spiffe.endpoint_spiffe_id.is_root() {
                return Err(invalid(
                    "endpoint.https_spiffe.endpoint_spiffe_id".into(),
                    "an X509-SVID's SPIFFE ID needs a path (X509-SVID §3.1)".into(),
                ));
            }
        }
        self.sinks.validate(&self.data_dir)?;
        let mut foreign = BTreeSet::new();
        for (i, rel) in self.federation.iter().enumerate() {
            validate_relationship(rel, &format!("federation[{i}]"), &locals)?;
            if !foreign.insert(rel.trust_domain.clone()) {
                return Err(invalid(
                    format!("federation[{i}].trust_domain"),
                    format!("{} has two relationships", rel.trust_domain),
                ));
            }
        }
        self.storage.validate()?;
        if let Some(kubernetes) = &self.kubernetes {
            kubernetes.validate()?;
        }
        Ok(())
    }
}

impl Config {
    /// `[net]` and the `limits` table of every listener.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        self.net.validate()?;
        self.admin.limits.validate("admin.limits", Kind::Admin)?;
        if let Some(web) = &self.endpoint.https_web {
            web.limits
                .validate("endpoint.https_web.limits", Kind::BundleEndpoint)?;
        }
        if let Some(spiffe) = &self.endpoint.https_spiffe {
            spiffe
                .limits
                .validate("endpoint.https_spiffe.limits", Kind::BundleEndpoint)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use spiffe_federation::endpoint::ProxySetting;

    use super::*;
    use crate::config::storage::{ByteSize, StorageConfig};
    use crate::config::{Scope, Seconds, SequencePolicy};

    const MINIMAL: &str = r#"data_dir = "/tmp/fedgw""#;

    fn invalid_key(text: &str) -> String {
        match Config::from_toml(text) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn syntax(text: &str) -> String {
        match Config::from_toml(text) {
            Err(ConfigError::Syntax { message }) => message,
            other => panic!("expected Syntax, got {other:?}"),
        }
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let config = Config::from_toml(MINIMAL).unwrap();
        assert_eq!(
            config.admin_listen(),
            AdminListen::Unix("/tmp/fedgw/admin.sock".into())
        );
        assert_eq!(config.polling.default_refresh, Seconds(300));
        assert_eq!(config.polling.min_refresh, Seconds(60));
        assert_eq!(config.polling.max_refresh, Seconds(3600));
        assert_eq!(config.polling.fetch_timeout, Seconds(30));
        assert_eq!(config.polling.max_concurrent_fetches, 64);
        assert_eq!(config.policy.sequence, SequencePolicy::Reject);
        assert_eq!(config.policy.max_document_bytes, 1024 * 1024);
        assert_eq!(config.policy.max_trust_chain_depth, 2);
    }

    #[test]
    fn unknown_top_level_key_is_named() {
        let message = syntax("data_dir = \"/x\"\nfrobnicate = 1\n");
        assert!(message.contains("frobnicate"), "{message}");
    }

    #[test]
    fn unknown_nested_key_is_named() {
        let message = syntax(
            "data_dir = \"/x\"\n[[federation]]\ntrust_domain = \"w.example\"\nurl = \"https://w\"\nprofile = \"https_web\"\nfolow_redirects = false\n",
        );
        assert!(message.contains("folow_redirects"), "{message}");
    }

    #[test]
    fn fed_4_relationship_needs_url_profile_and_trust_domain() {
        assert_eq!(
            invalid_key(
                "data_dir = \"/x\"\n[[federation]]\ntrust_domain = \"w.example\"\nprofile = \"https_web\"\n"
            ),
            "federation[0].url"
        );
        let message = syntax(
            "data_dir = \"/x\"\n[[federation]]\ntrust_domain = \"w.example\"\nurl = \"https://w\"\n",
        );
        assert!(message.contains("profile"), "{message}");
        let message = syntax(
            "data_dir = \"/x\"\n[[federation]]\nurl = \"https://w\"\nprofile = \"https_web\"\n",
        );
        assert!(message.contains("trust_domain"), "{message}");
    }

    #[test]
    fn spf_2_https_spiffe_needs_endpoint_id() {
        assert_eq!(
            invalid_key(
                "data_dir = \"/x\"\n[[federation]]\ntrust_domain = \"w.example\"\nurl = \"https://w\"\nprofile = \"https_spiffe\"\n"
            ),
            "federation[0].endpoint_spiffe_id"
        );
    }

    #[test]
    fn web_1_http_and_userinfo_urls_refused() {
        let rel = |url: &str| {
            format!(
                "data_dir = \"/x\"\n[[federation]]\ntrust_domain = \"w.example\"\nurl = \"{url}\"\nprofile = \"https_web\"\n"
            )
        };
        for url in ["http://w.example/", "https://w.example/#frag"] {
            assert_eq!(invalid_key(&rel(url)), "federation[0].url", "{url}");
        }
        // Refused as it is read, on the line that holds it, without the password.
        let message = syntax(&rel("https://user:s3cret@w.example/"));
        assert!(message.contains("userinfo"), "{message}");
        assert!(message.contains("line 4"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
        let message = syntax(&format!(
            "{}urls = [\"https://w.example/\", \"https://u:s3cret@m.example/\"]\n",
            rel("x").replace("url = \"x\"\n", "")
        ));
        assert!(
            message.contains("[1]: ") && message.contains("userinfo"),
            "{message}"
        );
        assert!(!message.contains("s3cret"), "{message}");
    }

    #[test]
    fn urls_the_parser_would_repair_are_refused() {
        for url in [
            "https://w.example/a\\nb",
            "https:///w.example/",
            "https://w.exa\\tmple/",
        ] {
            let text = format!(
                "data_dir = \"/x\"\n[[federation]]\ntrust_domain = \"w.example\"\nurl = \"{url}\"\nprofile = \"https_web\"\n"
            );
            assert!(Config::from_toml(&text).is_err(), "{url}");
        }
    }

    #[test]
    fn proxies_are_http_or_https_without_credentials() {
        let rel = |proxy: &str| {
            format!(
                "data_dir = \"/x\"\n[[federation]]\ntrust_domain = \"w.example\"\nurl = \"https://w\"\nprofile = \"https_web\"\nproxy = \"{proxy}\"\n"
            )
        };
        for proxy in ["socks5://p:1080", "file:///tmp/p", "ftp://p/"] {
            let message = syntax(&rel(proxy));
            assert!(message.contains("http:// or https://"), "{message}");
        }
        let message = syntax(&rel("http://user:s3cret@p:3128"));
        assert!(message.contains("HTTPS_PROXY"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
    }

    #[test]
    fn an_empty_configuration_is_refused_saying_what_it_needs() {
        for text in ["", "\n  \n# nothing\n"] {
            match Config::from_toml(text) {
                Err(ConfigError::Invalid { key, reason }) if text.trim().is_empty() => {
                    assert_eq!(key, "data_dir");
                    assert!(reason.contains("[[local]]") && reason.contains("[[federation]]"));
                }
                // A comment only: TOML's own "missing field data_dir".
                Err(ConfigError::Syntax { message }) => assert!(message.contains("data_dir")),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn ext_7_relationship_with_local_trust_domain_refused() {
        let text = "data_dir = \"/x\"\n[[local]]\ntrust_domain = \"e.example\"\nsource = { admin = true }\n[[federation]]\ntrust_domain = \"e.example\"\nurl = \"https://e\"\nprofile = \"https_web\"\n";
        assert_eq!(invalid_key(text), "federation[0].trust_domain");
    }

    #[test]
    fn id_5_upper_case_trust_domain_refused_with_suggestion() {
        let message = syntax(
            "data_dir = \"/x\"\n[[local]]\ntrust_domain = \"East.example\"\nsource = { admin = true }\n",
        );
        assert!(message.contains("east.example"), "{message}");
    }

    #[test]
    fn duplicate_relationship_refused() {
        let rel = "[[federation]]\ntrust_domain = \"w.example\"\nurl = \"https://w\"\nprofile = \"https_web\"\n";
        assert_eq!(
            invalid_key(&format!("data_dir = \"/x\"\n{rel}{rel}")),
            "federation[1].trust_domain"
        );
    }

    #[test]
    fn tcp_admin_needs_tokens() {
        assert_eq!(
            invalid_key("data_dir = \"/x\"\n[admin]\nlisten = \"127.0.0.1:8081\"\n"),
            "admin.listen"
        );
        let ok = format!(
            "data_dir = \"/x\"\n[admin]\nlisten = \"127.0.0.1:8081\"\n[[admin.tokens]]\nname = \"ops\"\nsha256 = \"{}\"\nscope = \"write\"\n",
            "a".repeat(64)
        );
        let config = Config::from_toml(&ok).unwrap();
        assert!(
            !format!("{:?}", config.admin.tokens[0]).contains("aaaa"),
            "hash must be redacted in Debug"
        );
    }

    #[test]
    fn sec_3_admin_mtls_rules_name_the_key() {
        let tcp = "data_dir = \"/x\"\n[admin]\nlisten = \"127.0.0.1:8081\"\n";
        let tls = "[admin.tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n";
        let client = |id: &str, scope: &str| {
            format!("[[admin.clients]]\nspiffe_id = \"{id}\"\nscope = \"{scope}\"\n")
        };
        let ops = client("spiffe://td.example/ops", "write");
        let config = Config::from_toml(&format!("{tcp}{tls}{ops}")).unwrap();
        assert_eq!(config.admin.clients[0].scope, Scope::Write);
        assert_eq!(
            config.admin.tls.as_ref().map(|t| t.cert.clone()),
            Some("/c.pem".into())
        );
        // TLS with tokens only is fine too.
        let token = format!(
            "[[admin.tokens]]\nname = \"ops\"\nsha256 = \"{}\"\nscope = \"read\"\n",
            "b".repeat(64)
        );
        assert!(Config::from_toml(&format!("{tcp}{token}{tls}")).is_ok());

        assert_eq!(invalid_key(&format!("{tcp}{ops}")), "admin.clients");
        assert_eq!(invalid_key(&format!("{tcp}{tls}")), "admin.listen");
        assert_eq!(
            invalid_key(&format!("data_dir = \"/x\"\n{tls}")),
            "admin.tls"
        );
        assert_eq!(
            invalid_key(&format!(
                "{tcp}{tls}{ops}{}",
                client("spiffe://td.example/ops", "read")
            )),
            "admin.clients[1].spiffe_id"
        );
        assert_eq!(
            invalid_key(&format!(
                "{tcp}{tls}{}",
                client("spiffe://td.example", "read")
            )),
            "admin.clients[0].spiffe_id"
        );
        let message = syntax(&format!(
            "{tcp}{tls}{}",
            client("spiffe://td.example/x", "admin")
        ));
        assert!(message.contains("admin"), "{message}");
        let message = syntax(&format!(
            "{tcp}{tls}{}",
            client("https://td.example/x", "read")
        ));
        assert!(message.contains("spiffe_id"), "{message}");
    }

    #[test]
    fn durations_accept_units_and_refuse_nonsense() {
        assert_eq!("300".parse::<Seconds>(), Ok(Seconds(300)));
        assert_eq!("5m".parse::<Seconds>(), Ok(Seconds(300)));
        assert_eq!("1h".parse::<Seconds>(), Ok(Seconds(3600)));
        assert_eq!("2d".parse::<Seconds>(), Ok(Seconds(172_800)));
        assert_eq!("365d".parse::<Seconds>(), Ok(Seconds::MAX));
        for too_long in ["366d", "99999999999d", "18446744073709551615"] {
            let err = too_long.parse::<Seconds>().unwrap_err();
            assert!(err.contains("longest duration accepted, 365d"), "{err}");
        }
        let err = Config::from_toml("[polling]\nmax_refresh = \"99999999999d\"\n").unwrap_err();
        assert!(err.to_string().contains("max_refresh"), "{err}");
        assert!(err.to_string().contains("365d"), "{err}");
        let err = Config::from_toml("[polling]\nmax_refresh = 31622400\n").unwrap_err();
        assert!(err.to_string().contains("365d"), "{err}");
        assert!("5 minutes".parse::<Seconds>().is_err());
        assert!("m".parse::<Seconds>().is_err());
        let config =
            Config::from_toml("data_dir = \"/x\"\n[polling]\ndefault_refresh = \"10m\"\n").unwrap();
        assert_eq!(config.polling.default_refresh, Seconds(600));
    }

    #[test]
    fn polling_bounds_must_be_ordered() {
        assert_eq!(
            invalid_key("data_dir = \"/x\"\n[polling]\nmin_refresh = \"2h\"\n"),
            "polling.min_refresh"
        );
        assert_eq!(
            invalid_key("data_dir = \"/x\"\n[polling]\ndefault_refresh = \"10s\"\n"),
            "polling.default_refresh"
        );
        assert_eq!(
            invalid_key("data_dir = \"/x\"\n[polling]\nmax_concurrent_fetches = 0\n"),
            "polling.max_concurrent_fetches"
        );
    }

    #[test]
    fn workload_api_sources_are_checked_and_exclusive() {
        let local = |source: &str| {
            format!(
                "data_dir = \"/x\"\n[[local]]\ntrust_domain = \"a.example\"\nsource = {source}\n"
            )
        };
        let config = Config::from_toml(&local(
            "{ workload_api_socket = \"unix:///run/agent.sock\" }",
        ))
        .unwrap();
        assert_eq!(
            config.local[0].source,
            LocalSource::WorkloadApi {
                workload_api_socket: "unix:///run/agent.sock".to_owned()
            }
        );
        assert_eq!(
            invalid_key(&local("{ workload_api_socket = \"http://agent\" }")),
            "local[0].source.workload_api_socket"
        );
        // Exactly one source: a file and a socket together match no source kind.
        let both = syntax(&local(
            "{ file = \"/b.json\", workload_api_socket = \"unix:///run/agent.sock\" }",
        ));
        assert!(both.contains("exactly one source"), "{both}");

        let base = "data_dir = \"/x\"\n[[local]]\ntrust_domain = \"a.example\"\nsource = { admin = true }\n[endpoint.https_spiffe]\nlisten = \"127.0.0.1:0\"\nendpoint_spiffe_id = \"spiffe://a.example/fedgw\"\n";
        let socket = "workload_api_socket = \"unix:///run/agent.sock\"\n";
        let config = Config::from_toml(&format!("{base}{socket}")).unwrap();
        let spiffe = config.endpoint.https_spiffe.unwrap();
        assert_eq!(
            spiffe.workload_api_socket.as_deref(),
            Some("unix:///run/agent.sock")
        );
        assert_eq!(spiffe.svid, None);
        assert_eq!(
            invalid_key(&format!("{base}{socket}svid = \"/s\"\nkey = \"/k\"\n")),
            "endpoint.https_spiffe.workload_api_socket"
        );
        assert_eq!(
            invalid_key(&format!("{base}workload_api_socket = \"unix:\"\n")),
            "endpoint.https_spiffe.workload_api_socket"
        );
        assert_eq!(invalid_key(base), "endpoint.https_spiffe.svid");
        assert_eq!(
            invalid_key(&format!("{base}svid = \"/s\"\n")),
            "endpoint.https_spiffe.key"
        );
    }

    #[test]
    fn local_paths_default_and_must_be_unique() {
        let text = "data_dir = \"/x\"\n[[local]]\ntrust_domain = \"a.example\"\nsource = { admin = true }\n[[local]]\ntrust_domain = \"b.example\"\nsource = { file = \"/b.json\" }\n";
        let config = Config::from_toml(text).unwrap();
        assert_eq!(config.local_path(0).as_deref(), Some("/"));
        assert_eq!(config.local_path(1).as_deref(), Some("/b.example"));
        let clash = "data_dir = \"/x\"\n[[local]]\ntrust_domain = \"a.example\"\nsource = { admin = true }\npath = \"/x\"\n[[local]]\ntrust_domain = \"b.example\"\nsource = { admin = true }\npath = \"/x\"\n";
        assert_eq!(invalid_key(clash), "local[1].path");
        let relay = "data_dir = \"/x\"\n[[local]]\ntrust_domain = \"a.example\"\nsource = { admin = true }\npath = \"/relay/a\"\n";
        assert_eq!(invalid_key(relay), "local[0].path");
    }

    #[test]
    fn spiffe_endpoint_id_must_be_local_and_have_a_path() {
        let base = "data_dir = \"/x\"\n[[local]]\ntrust_domain = \"a.example\"\nsource = { admin = true }\n[endpoint.https_spiffe]\nlisten = \"127.0.0.1:0\"\nsvid = \"/s\"\nkey = \"/k\"\n";
        assert_eq!(
            invalid_key(&format!(
                "{base}endpoint_spiffe_id = \"spiffe://b.example/fedgw\"\n"
            )),
            "endpoint.https_spiffe.endpoint_spiffe_id"
        );
        assert_eq!(
            invalid_key(&format!(
                "{base}endpoint_spiffe_id = \"spiffe://a.example\"\n"
            )),
            "endpoint.https_spiffe.endpoint_spiffe_id"
        );
        assert!(
            Config::from_toml(&format!(
                "{base}endpoint_spiffe_id = \"spiffe://a.example/fedgw\"\n"
            ))
            .is_ok()
        );
    }

    #[test]
    fn sec_6_served_hint_defaults_to_300_s_and_above_a_day_is_warned() {
        let local = |hint: &str| {
            format!(
                "data_dir = \"/x\"\n[endpoint.https_web]\nlisten = \"127.0.0.1:0\"\ncert = \"/c\"\nkey = \"/k\"\n[[local]]\ntrust_domain = \"a.example\"\nsource = {{ admin = true }}\n{hint}"
            )
        };
        let config = Config::from_toml(&local("")).unwrap();
        assert_eq!(config.local[0].refresh_hint, Seconds(300));
        assert_eq!(config.warnings(), []);
        let at_limit = Config::from_toml(&local("refresh_hint = \"1d\"\n")).unwrap();
        assert_eq!(at_limit.warnings(), []);
        let above = Config::from_toml(&local("refresh_hint = 86401\n")).unwrap();
        let warnings = above.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].key, "local[0].refresh_hint");
        assert!(
            warnings[0].message.contains("86401s"),
            "{}",
            warnings[0].message
        );
    }

    #[test]
    fn fed_2_local_domains_without_a_listener_are_warned() {
        let text = "data_dir = \"/x\"\n[[local]]\ntrust_domain = \"a.example\"\nsource = { admin = true }\n";
        let warnings = Config::from_toml(text).unwrap().warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].key, "endpoint");
        assert!(warnings[0].message.contains("no bundle endpoint listener"));
        // An empty [endpoint] table is no listener either.
        let empty = format!("{text}[endpoint]\n");
        assert_eq!(Config::from_toml(&empty).unwrap().warnings(), warnings);
        // A relay-only gateway (a listener, no local domain) is fine.
        let relay = "data_dir = \"/x\"\n[endpoint.https_web]\nlisten = \"127.0.0.1:0\"\ncert = \"/c\"\nkey = \"/k\"\n";
        assert_eq!(Config::from_toml(relay).unwrap().warnings(), []);
    }

    #[test]
    fn fed_2_listener_without_a_profile_is_refused_naming_the_key() {
        // A listener exists only as [endpoint.https_web] or [endpoint.https_spiffe]:
        // one without a profile cannot be written, and the attempt names the key.
        let message = syntax("data_dir = \"/x\"\n[endpoint]\nlisten = \"127.0.0.1:0\"\n");
        assert!(message.contains("listen"), "{message}");
        let message = syntax(
            "data_dir = \"/x\"\n[endpoint.https]\nlisten = \"127.0.0.1:0\"\ncert = \"/c\"\nkey = \"/k\"\n",
        );
        assert!(message.contains("https"), "{message}");
    }

    #[test]
    fn proxy_setting_parses() {
        let rel = |proxy: &str| {
            format!(
                "data_dir = \"/x\"\n[[federation]]\ntrust_domain = \"w.example\"\nurl = \"https://w\"\nprofile = \"https_web\"\nproxy = \"{proxy}\"\n"
            )
        };
        assert_eq!(
            Config::from_toml(&rel("off")).unwrap().federation[0].proxy,
            ProxySetting::Off
        );
        assert!(matches!(
            Config::from_toml(&rel("http://proxy:3128"))
                .unwrap()
                .federation[0]
                .proxy,
            ProxySetting::Url(_)
        ));
        assert!(syntax(&rel("sometimes")).contains("sometimes"));
    }

    // The tables of the parts, read as part of a whole file.

    #[test]
    fn the_gateway_config_checks_sinks_sds() {
        let config = Config::from_toml("data_dir = \"/d\"\n[sinks.sds]\n").unwrap();
        let sds = config.sinks.sds.unwrap();
        assert_eq!(
            sds.listen(&config.data_dir),
            crate::outputs::sds::SdsListen::Unix("/d/sds.sock".into())
        );
        assert!(
            Config::from_toml("data_dir = \"/d\"")
                .unwrap()
                .sinks
                .sds
                .is_none()
        );
        let bad = "data_dir = \"/d\"\n[sinks.sds]\nall_bundles_name = \"\"";
        assert!(matches!(
            Config::from_toml(bad),
            Err(ConfigError::Invalid { key, .. }) if key == "sinks.sds.all_bundles_name"
        ));
        let unknown = Config::from_toml("data_dir = \"/d\"\n[sinks.sds]\nnames = 1");
        assert!(
            matches!(unknown, Err(ConfigError::Syntax { message }) if message.contains("names"))
        );
    }

    /// The tables sit under their listeners in a whole configuration, and a bad value
    /// is refused with its full key.
    #[test]
    fn tables_of_a_whole_configuration_name_their_key() {
        let base = "data_dir = \"/x\"\n[endpoint.https_web]\nlisten = \"127.0.0.1:0\"\ncert = \"/c\"\nkey = \"/k\"\n";
        let config = Config::from_toml(&format!(
            "{base}[endpoint.https_web.limits]\nheader_timeout = 3\n[admin.limits]\nmax_request_bytes = 1024\n[net]\nreserved_file_descriptors = 64\n"
        ))
        .unwrap();
        let web = config.endpoint.https_web.as_ref().unwrap();
        assert_eq!(
            web.limits.resolve(Kind::BundleEndpoint).header_timeout,
            Duration::from_secs(3)
        );
        assert_eq!(config.admin.limits.body_limits().max_request_bytes, 1024);
        assert_eq!(config.net.reserved_file_descriptors, 64);
        for (text, key) in [
            (
                "[endpoint.https_web.limits]\nidle_timeout = 0\n",
                "endpoint.https_web.limits.idle_timeout",
            ),
            (
                "[admin.limits]\nrequest_timeout = 5\n",
                "admin.limits.request_timeout",
            ),
            (
                "[sinks.sds]\n[sinks.sds.limits]\nmax_connections = 0\n",
                "sinks.sds.limits.max_connections",
            ),
            (
                "[net]\nreserved_file_descriptors = 1\n",
                "net.reserved_file_descriptors",
            ),
        ] {
            match Config::from_toml(&format!("{base}{text}")) {
                Err(ConfigError::Invalid { key: found, .. }) => assert_eq!(found, key),
                other => panic!("{text}: expected Invalid, got {other:?}"),
            }
        }
    }

    fn storage(text: &str) -> Result<StorageConfig, ConfigError> {
        Config::from_toml(&format!("data_dir = \"/d\"\n[storage]\n{text}")).map(|c| c.storage)
    }

    fn storage_invalid_key(text: &str) -> String {
        match storage(text) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_documented_values() {
        let config = Config::from_toml("data_dir = \"/d\"").unwrap();
        assert_eq!(config.storage, StorageConfig::default());
        let s = config.storage;
        assert_eq!(s.history_max_versions, 20);
        assert_eq!(s.history_max_bytes_per_domain, ByteSize(8 << 20));
        assert_eq!(s.audit_max_entries, 100_000);
        assert_eq!(s.audit_max_bytes, ByteSize(64 << 20));
        assert_eq!(s.compact_waste_ratio, 2);
        assert_eq!(s.compact_min_waste_bytes, ByteSize(64 << 20));
    }

    #[test]
    fn sizes_take_numbers_and_binary_units() {
        let s = storage(
            "history_max_bytes_per_domain = \"512KiB\"\naudit_max_bytes = 1048576\ncompact_min_waste_bytes = \"2 GiB\"\nhistory_max_versions = 5\n",
        )
        .unwrap();
        assert_eq!(s.history_max_bytes_per_domain, ByteSize(512 << 10));
        assert_eq!(s.audit_max_bytes, ByteSize(1 << 20));
        assert_eq!(s.compact_min_waste_bytes, ByteSize(2 << 30));
        assert_eq!(s.history_max_versions, 5);
        assert_eq!(ByteSize(64 << 20).to_string(), "64 MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000 bytes");
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        assert_eq!(
            storage_invalid_key("history_max_versions = 0"),
            "storage.history_max_versions"
        );
        assert_eq!(
            storage_invalid_key("history_max_bytes_per_domain = 0"),
            "storage.history_max_bytes_per_domain"
        );
        assert_eq!(
            storage_invalid_key("audit_max_entries = 0"),
            "storage.audit_max_entries"
        );
        assert_eq!(
            storage_invalid_key("audit_max_bytes = \"1KiB\""),
            "storage.audit_max_bytes"
        );
        assert_eq!(
            storage_invalid_key("compact_waste_ratio = 0"),
            "storage.compact_waste_ratio"
        );
        assert_eq!(
            storage_invalid_key("compact_min_waste_bytes = \"512KiB\""),
            "storage.compact_min_waste_bytes"
        );
        for bad in [
            "audit_max_bytes = \"64MB\"",
            "audit_max_bytes = \"lots\"",
            "audit_max_bytes = -1",
            "compact_ratio = 2",
        ] {
            match storage(bad) {
                Err(ConfigError::Syntax { message }) => {
                    assert!(
                        message.contains("storage") || message.contains("audit"),
                        "{message}"
                    );
                }
                other => panic!("{bad}: expected a syntax error, got {other:?}"),
            }
        }
    }
}
