//! The gateway's TOML configuration: schema, defaults, and validation.
//!
//! Owns turning a file into a validated [`Config`] with no side effects: nothing is
//! bound, opened or spawned here. Unknown keys are errors that name the
//! key; bad values are errors that name the key and say why; nothing is silently
//! fixed. It does not own reading certificate or bundle files (their paths are checked
//! for presence by the subsystem that loads them).
//!
//! ```
//! let config = fedgw::config::Config::from_toml(r#"
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
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spiffe_federation::endpoint::{EndpointUrl, ProxySetting, UrlError};
use spiffe_federation::{SpiffeId, TrustDomain};
use url::Url;

pub mod files;
pub mod net;
pub mod sds;
pub mod storage;
pub mod urls;
pub mod value;

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The TOML is malformed, has an unknown key, or a value of the wrong type. The
    /// message from the TOML reader names the key and the position.
    #[error("invalid configuration: {message}")]
    Syntax {
        /// What the reader said, including line and column.
        message: String,
    },
    /// A value is well-typed but not acceptable.
    #[error("invalid configuration: {key}: {reason}")]
    Invalid {
        /// The key, as a path such as `federation[1].url`.
        key: String,
        /// Why it was refused.
        reason: String,
    },
}

/// A setting that is legal but probably a mistake: not refused, but logged when the
/// gateway starts (and, for a local domain's served hint, shown by `GET /v1/status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The key, as a path such as `local[0].refresh_hint`.
    pub key: String,
    /// What is doubtful and why.
    pub message: String,
}

/// Served refresh hints above this are warned about (SEC-6; SPIRE warns above a day
/// too): consumers would see a revocation or a new key that much later.
pub const MAX_ADVISED_SERVED_HINT: Seconds = Seconds(86_400);

/// The SEC-6 lint on a local domain's served `refresh_hint`, if it applies.
pub fn served_hint_warning(hint: Seconds) -> Option<String> {
    (hint > MAX_ADVISED_SERVED_HINT).then(|| {
        format!(
            "{}s is above 24 h: peers would poll so rarely that a revocation or a new key reaches them that much later (TDB §6.1 recommends 5 minutes)",
            hint.0
        )
    })
}

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
}

/// The `[sinks]` table: each sink is configured by its own sub-table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SinksConfig {
    /// `[sinks.sds]`: the Envoy SDS server, off when absent.
    pub sds: Option<sds::SdsConfig>,
    /// `[[sinks.files]]`: directories of PEM and JSON bundle files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<files::FilesSinkConfig>,
}

/// Where the admin API listens. Default: a unix socket `admin.sock` in `data_dir`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `unix:/path/to.sock`, or `host:port` for TCP (which requires authentication).
    pub listen: Option<AdminListen>,
    /// Bearer tokens accepted on a TCP listener, stored as SHA-256 hashes.
    #[serde(default)]
    pub tokens: Vec<AdminToken>,
    /// Serve the TCP listener over TLS with this certificate (required by `clients`).
    pub tls: Option<AdminTls>,
    /// Client SPIFFE IDs allowed over mTLS, each with its scope.
    #[serde(default)]
    pub clients: Vec<AdminClientId>,
    /// `[admin.watch]`: bounds of the watch API (long polls and event streams).
    #[serde(default)]
    pub watch: WatchLimits,
    /// Connection and request body limits (`[admin.limits]`).
    #[serde(default)]
    pub limits: net::LimitsConfig,
}

/// The admin listener's TLS identity, reloaded when the files change.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTls {
    /// PEM certificate chain, leaf first (may be an X509-SVID); clients check it
    /// against their `--admin-ca`, including the host name they connect to.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// A client allowed on the admin API by the SPIFFE ID of its X509-SVID.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminClientId {
    /// The client's SPIFFE ID; its SVID must verify under the current bundle of this
    /// ID's trust domain (local or federated).
    pub spiffe_id: SpiffeId,
    /// What it may do.
    pub scope: Scope,
}

/// An admin listener address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum AdminListen {
    /// A unix socket path, created with mode 0600.
    Unix(PathBuf),
    /// A TCP address.
    Tcp(SocketAddr),
}

/// A bearer token for the admin API, by hash: the configuration never holds the secret.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    /// Who the token belongs to, for the audit log.
    pub name: String,
    /// Lower-case hex SHA-256 of the token.
    pub sha256: String,
    /// What the token may do.
    pub scope: Scope,
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminToken")
            .field("name", &self.name)
            .field("sha256", &"<redacted>")
            .field("scope", &self.scope)
            .finish()
    }
}

/// Admin API permission scopes: reads and writes are separate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read-only routes.
    Read,
    /// Read and mutate.
    Write,
}

/// The default of `policy.max_trust_chain_depth`.
pub const DEFAULT_MAX_TRUST_CHAIN_DEPTH: usize = 2;

/// What to do when a candidate's `spiffe_sequence` is lower than the stored one (STO-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SequencePolicy {
    /// Refuse the candidate and keep the stored bundle (the default: a stale replica
    /// behind a load balancer must not roll keys back).
    #[default]
    Reject,
    /// Accept the candidate and report a sequence regression warning.
    Warn,
    /// Accept the candidate silently (for publishers known to reset their sequence).
    Accept,
}

/// Acceptance policy settings (see `policy`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// What to do when a fetched bundle's sequence is lower than the stored one.
    pub sequence: SequencePolicy,
    /// Most authorities accepted in one bundle.
    pub max_authorities: usize,
    /// Largest bundle document accepted, in bytes.
    pub max_document_bytes: usize,
    /// `https_spiffe` trust chains longer than this are warned about (SPF-9, SEC-5;
    /// SPIFFE Federation §7.6 discourages long chains).
    pub max_trust_chain_depth: usize,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            sequence: SequencePolicy::Reject,
            max_authorities: 10_000,
            max_document_bytes: spiffe_federation::bundle::DEFAULT_MAX_DOCUMENT_SIZE,
            max_trust_chain_depth: DEFAULT_MAX_TRUST_CHAIN_DEPTH,
        }
    }
}

/// How often foreign bundles are fetched (SPIFFE Federation §4.1; SPIRE polls at a
/// quarter of the refresh hint).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PollingConfig {
    /// Refresh interval used when a bundle has no hint (TDB §6.1 recommends 5 minutes).
    pub default_refresh: Seconds,
    /// Hints below this are raised to it.
    pub min_refresh: Seconds,
    /// Hints above this are lowered to it.
    pub max_refresh: Seconds,
    /// Per-fetch deadline (connect, TLS, headers, body, redirects).
    pub fetch_timeout: Seconds,
    /// At most this many fetches in flight at once, across all relationships; the
    /// others wait their turn. Bounds memory and CPU when thousands of relationships
    /// fall due together (at start, or after an outage).
    pub max_concurrent_fetches: u32,
}

impl Default for PollingConfig {
    fn default() -> Self {
        Self {
            default_refresh: Seconds(300),
            min_refresh: Seconds(60),
            max_refresh: Seconds(3600),
            fetch_timeout: Seconds(30),
            max_concurrent_fetches: 64,
        }
    }
}

/// A trust domain this gateway serves.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocalDomain {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// Where its bundle comes from.
    pub source: LocalSource,
    /// The HTTP path it is served at on the endpoint listeners (default `/` for the
    /// first local domain, `/<trust domain>` otherwise).
    pub path: Option<String>,
    /// `spiffe_refresh_hint` served with the bundle (default 300 s; TDB §6.1).
    #[serde(default = "default_served_hint")]
    pub refresh_hint: Seconds,
}

fn default_served_hint() -> Seconds {
    Seconds(300)
}

/// Where a local trust domain's bundle comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(
    deny_unknown_fields,
    untagged,
    expecting = "exactly one source: { file = \"…\" } (with an optional format), { workload_api_socket = \"unix:///…\" } or { admin = true }"
)]
pub enum LocalSource {
    /// A file, watched for changes.
    File {
        /// The file.
        file: PathBuf,
        /// Its format.
        #[serde(default)]
        format: DocumentFormat,
    },
    /// Pushed through the admin API only.
    Admin {
        /// Always `true`.
        admin: bool,
    },
    /// Streamed from a SPIFFE Workload API (a SPIRE agent): the trust domain's X.509
    /// and JWT authorities, as the agent pushes them.
    WorkloadApi {
        /// The socket, in `SPIFFE_ENDPOINT_SOCKET` syntax (`unix:///path` or
        /// `tcp://ip:port`).
        workload_api_socket: String,
    },
}

/// Check a Workload API socket address (`SPIFFE_ENDPOINT_SOCKET` syntax) under `key`.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the key and what is wrong with the address.
pub fn check_workload_api_socket(key: &str, socket: &str) -> Result<(), ConfigError> {
    spiffe::transport::Endpoint::parse(socket)
        .map(|_| ())
        .map_err(|err| ConfigError::Invalid {
            key: key.to_owned(),
            reason: format!(
                "{socket:?} is not a Workload API socket address ({err}); write e.g. \"unix:///run/spire/agent.sock\""
            ),
        })
}

/// The formats a bundle file may be in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DocumentFormat {
    /// SPIFFE bundle JSON.
    #[default]
    Spiffe,
    /// PEM certificates.
    Pem,
}

/// Bundle endpoint listeners. At least one profile is needed to serve (FED-2); with
/// neither, the gateway only fetches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// The `https_web` listener.
    pub https_web: Option<WebListener>,
    /// The `https_spiffe` listener.
    pub https_spiffe: Option<SpiffeListener>,
}

/// An `https_web` listener: Web PKI certificate, reloaded when the files change.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebListener {
    /// Address to bind.
    pub listen: SocketAddr,
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// DNS names or IPs clients use; each must be in the certificate (SRV-6).
    #[serde(default)]
    pub public_names: Vec<String>,
    /// Connection limits (`[endpoint.https_web.limits]`).
    #[serde(default)]
    pub limits: net::LimitsConfig,
}

/// An `https_spiffe` listener: an X509-SVID from files (reloaded when they change) or
/// from a SPIFFE Workload API (rotated as the agent pushes), exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpiffeListener {
    /// Address to bind.
    pub listen: SocketAddr,
    /// PEM X509-SVID chain, leaf first.
    pub svid: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// The Workload API socket the SVID comes from (`SPIFFE_ENDPOINT_SOCKET` syntax),
    /// instead of `svid` and `key`.
    pub workload_api_socket: Option<String>,
    /// The SPIFFE ID the SVID must carry (SRV-8); its trust domain must be local.
    pub endpoint_spiffe_id: SpiffeId,
    /// Connection limits (`[endpoint.https_spiffe.limits]`).
    #[serde(default)]
    pub limits: net::LimitsConfig,
}

/// The two bundle endpoint profiles (SPIFFE Federation §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProfileName {
    /// Server authenticated by Web PKI.
    HttpsWeb,
    /// Server authenticated by its X509-SVID.
    HttpsSpiffe,
}

/// One `[[federation]]` table: "trust domain X, fetched from URL U with profile P"
/// (SPIFFE Federation §5.1: all three are configured, never inferred), its material
/// named by file path. The gateway turns it into a
/// [`Relationship`](crate::relationship::Relationship) by reading those files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FederationEntry {
    /// The foreign trust domain.
    pub trust_domain: TrustDomain,
    /// The bundle endpoint URL.
    #[serde(
        default,
        deserialize_with = "crate::config::urls::deserialize_endpoint"
    )]
    pub url: Option<Url>,
    /// Mirror URLs tried in order (use either `url` or `urls`).
    #[serde(
        default,
        deserialize_with = "crate::config::urls::deserialize_endpoints"
    )]
    pub urls: Vec<Url>,
    /// The endpoint profile.
    pub profile: ProfileName,
    /// `https_spiffe`: the endpoint server's SPIFFE ID (SPF-2).
    pub endpoint_spiffe_id: Option<SpiffeId>,
    /// `https_spiffe`: a bundle for the endpoint's trust domain to start from (SPF-3).
    pub bootstrap_bundle: Option<PathBuf>,
    /// Format of `bootstrap_bundle`.
    #[serde(default)]
    pub bootstrap_format: DocumentFormat,
    /// `https_web`: extra PEM CA roots trusted besides the system store.
    pub extra_ca_roots: Option<PathBuf>,
    /// Follow HTTP redirects (at most 3 hops, never remembered; SEC-4).
    #[serde(default = "yes")]
    pub follow_redirects: bool,
    /// `env` (HTTPS_PROXY/NO_PROXY, the default), `off`, or a proxy URL (EXT-5).
    #[serde(default)]
    pub proxy: ProxySetting,
    /// Accept a fetched bundle with an empty `keys` list, which revokes every key of
    /// the trust domain (TDB §4.1.3). Off by default: such a document is refused with
    /// `revocation_refused` and the last good bundle stays.
    #[serde(default)]
    pub allow_revocation: bool,
}

fn yes() -> bool {
    true
}

/// A duration in whole seconds, written `300`, `"300s"`, `"5m"`, `"1h"` or `"1d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(into = "u64")]
pub struct Seconds(pub u64);

impl Seconds {
    /// As a [`Duration`].
    pub fn duration(self) -> Duration {
        Duration::from_secs(self.0)
    }
}

impl Seconds {
    /// The longest duration any key accepts: 365 days. Bounding every duration where
    /// it is parsed keeps schedule arithmetic (now + wait, backoff, jitter) far from
    /// overflow, and no refresh interval, timeout or hint is sensibly longer.
    pub const MAX: Self = Self(365 * 86_400);

    fn bounded(self, written: &str) -> Result<Self, String> {
        if self > Self::MAX {
            return Err(format!(
                "{written} is above the longest duration accepted, 365d"
            ));
        }
        Ok(self)
    }
}

impl value::FromNumber for Seconds {
    const EXPECTING: &'static str = "a duration like 300, \"300s\", \"5m\" or \"1h\"";

    fn from_number(number: u64) -> Result<Self, String> {
        Self(number).bounded(&number.to_string())
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        value::deserialize(deserializer)
    }
}

impl FromStr for Seconds {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let value: u64 = digits.parse().map_err(|_| {
            format!("{text:?} is not a duration like 300, \"300s\", \"5m\" or \"1h\"")
        })?;
        let factor = match unit {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => {
                return Err(format!(
                    "unknown unit {unit:?} in {text:?}: use s, m, h or d"
                ));
            }
        };
        value
            .checked_mul(factor)
            .map(Self)
            .ok_or_else(|| format!("{text:?} is above the longest duration accepted, 365d"))?
            .bounded(&format!("{text:?}"))
    }
}

impl From<Seconds> for u64 {
    fn from(value: Seconds) -> Self {
        value.0
    }
}

impl TryFrom<String> for AdminListen {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        if let Some(path) = value.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a socket path".to_owned());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        value
            .parse()
            .map(Self::Tcp)
            .map_err(|_| format!("{value:?} is neither unix:/path/to.sock nor a host:port address"))
    }
}

impl From<AdminListen> for String {
    fn from(value: AdminListen) -> Self {
        match value {
            AdminListen::Unix(path) => format!("unix:{}", path.display()),
            AdminListen::Tcp(addr) => addr.to_string(),
        }
    }
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
        let local = self.local.get(index)?;
        Some(local.path.clone().unwrap_or_else(|| {
            if index == 0 {
                "/".to_owned()
            } else {
                format!("/{}", local.trust_domain)
            }
        }))
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
        files::validate(&self.sinks.files)?;
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
        if let Some(sds) = &self.sinks.sds {
            sds.validate(&self.data_dir)?;
        }
        self.storage.validate()?;
        Ok(())
    }
}

impl Config {
    /// `[net]` and the `limits` table of every listener.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        use self::net::Kind;
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
        if let Some(sds) = &self.sinks.sds {
            sds.limits.validate("sinks.sds.limits", Kind::Sds)?;
        }
        Ok(())
    }
}

impl AdminConfig {
    /// The admin rules: TLS only on TCP, clients only with TLS, TCP only with tokens
    /// and/or clients, each client ID once.
    fn validate(&self, listen: &AdminListen) -> Result<(), ConfigError> {
        let invalid = |key: String, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.to_owned(),
        };
        let tcp = matches!(listen, AdminListen::Tcp(_));
        if self.tls.is_some() && !tcp {
            return Err(invalid(
                "admin.tls".into(),
                "TLS needs a TCP admin listener: set admin.listen to host:port",
            ));
        }
        if !self.clients.is_empty() && self.tls.is_none() {
            return Err(invalid(
                "admin.clients".into(),
                "client SPIFFE IDs are authenticated by mTLS: add [admin.tls] with cert and key",
            ));
        }
        if tcp && self.tokens.is_empty() && self.clients.is_empty() {
            return Err(invalid(
                "admin.listen".into(),
                "a TCP admin listener needs authentication: add [[admin.tokens]] and/or [admin.tls] with [[admin.clients]]",
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, client) in self.clients.iter().enumerate() {
            if !seen.insert(&client.spiffe_id) {
                return Err(ConfigError::Invalid {
                    key: format!("admin.clients[{i}].spiffe_id"),
                    reason: format!("{} is listed twice", client.spiffe_id),
                });
            }
            if client.spiffe_id.is_root() {
                return Err(invalid(
                    format!("admin.clients[{i}].spiffe_id"),
                    "an X509-SVID's SPIFFE ID needs a path (X509-SVID §3.1)",
                ));
            }
        }
        Ok(())
    }
}

impl FederationEntry {
    /// The URLs to try, in order.
    pub fn endpoint_urls(&self) -> Vec<Url> {
        self.url.iter().chain(self.urls.iter()).cloned().collect()
    }
}

/// Check a relationship; `key` is its path in the configuration, for messages.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the field at fault (FED-4, SPF-2, WEB-1, EXT-7).
pub fn validate_relationship(
    rel: &FederationEntry,
    key: &str,
    locals: &BTreeSet<TrustDomain>,
) -> Result<(), ConfigError> {
    let attached = Attached {
        bootstrap: rel.bootstrap_bundle.as_ref().map(|_| "bootstrap_bundle"),
        extra_roots: rel.extra_ca_roots.as_ref().map(|_| "extra_ca_roots"),
    };
    validate_relationship_with(rel, key, locals, attached)
}

/// The optional material a relationship carries, by the name of the field that holds
/// it: file paths in the configuration, inline content in the admin API (where
/// `rel.bootstrap_bundle` and `rel.extra_ca_roots` are `None`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attached<'a> {
    /// The field holding a bootstrap bundle, if one is given.
    pub bootstrap: Option<&'a str>,
    /// The field holding extra CA roots, if some are given.
    pub extra_roots: Option<&'a str>,
}

/// [`validate_relationship`] with the optional material described by `attached`;
/// an empty `key` names fields alone (`url`, as the admin API reports them).
///
/// # Errors
/// [`ConfigError::Invalid`] naming the field at fault (FED-4, SPF-2, WEB-1, EXT-7).
pub fn validate_relationship_with(
    rel: &FederationEntry,
    key: &str,
    locals: &BTreeSet<TrustDomain>,
    attached: Attached<'_>,
) -> Result<(), ConfigError> {
    let invalid = |field: &str, reason: String| ConfigError::Invalid {
        key: if key.is_empty() {
            field.to_owned()
        } else {
            format!("{key}.{field}")
        },
        reason,
    };
    if locals.contains(&rel.trust_domain) {
        return Err(invalid(
            "trust_domain",
            format!(
                "{} is served by this gateway; a relationship with a local trust domain is refused",
                rel.trust_domain
            ),
        ));
    }
    match (&rel.url, rel.urls.is_empty()) {
        (None, true) => return Err(invalid("url", "a bundle endpoint URL is required".into())),
        (Some(_), false) => {
            return Err(invalid("urls", "use either url or urls, not both".into()));
        }
        _ => {}
    }
    for (i, url) in rel.endpoint_urls().iter().enumerate() {
        let field = if rel.url.is_some() {
            "url".to_owned()
        } else {
            format!("urls[{i}]")
        };
        check_endpoint_url(url).map_err(|reason| invalid(&field, reason))?;
    }
    match rel.profile {
        ProfileName::HttpsSpiffe => {
            if rel.endpoint_spiffe_id.is_none() {
                return Err(invalid(
                    "endpoint_spiffe_id",
                    "required for profile https_spiffe (SPIFFE Federation §5.2.2.2)".into(),
                ));
            }
            if let Some(field) = attached.extra_roots {
                return Err(invalid(
                    field,
                    "only for profile https_web; https_spiffe trusts the endpoint trust domain's bundle".into(),
                ));
            }
        }
        ProfileName::HttpsWeb => {
            let field = if rel.endpoint_spiffe_id.is_some() {
                Some("endpoint_spiffe_id")
            } else {
                attached.bootstrap
            };
            if let Some(field) = field {
                return Err(invalid(field, "only for profile https_spiffe".into()));
            }
        }
    }
    Ok(())
}

/// SPIFFE Federation §5.2.1.1, §5.2.2.1: the rules are [`EndpointUrl::from_url`]'s;
/// this only words its refusal with the URL (`… must use https (found "http")`). The
/// URL is shown only for a rule checked after userinfo, so never with a password.
fn check_endpoint_url(url: &Url) -> Result<(), String> {
    EndpointUrl::from_url(url.clone())
        .map(drop)
        .map_err(|err| match err {
            UrlError::NotHttps { scheme } => format!("{url} must use https (found {scheme:?})"),
            UrlError::NoHost => format!("{url} has no host"),
            UrlError::Fragment => format!("{url} must not have a fragment"),
            other => other.to_string(),
        })
}

/// `[admin.watch]`: bounds of the watch API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WatchLimits {
    /// Event streams and waiting long polls open at once, at most (default 1024);
    /// more are answered 503 `too_many_watchers`.
    #[serde(default = "default_max_clients")]
    pub max_clients: usize,
    /// How long an event stream may leave a newer state (or the rest of an event)
    /// untaken before its client is taken to have stopped reading and its connection
    /// is closed (default 60 s).
    #[serde(default = "default_stall_timeout")]
    pub stall_timeout: Seconds,
}

impl Default for WatchLimits {
    fn default() -> Self {
        Self {
            max_clients: default_max_clients(),
            stall_timeout: default_stall_timeout(),
        }
    }
}

impl WatchLimits {
    /// Refuse values that cannot work, naming the key.
    ///
    /// # Errors
    /// `(key, reason)` of the first bad value.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.max_clients == 0 {
            return Err((
                "admin.watch.max_clients",
                "0 would refuse every watcher; give at least 1".into(),
            ));
        }
        if self.stall_timeout.0 == 0 {
            return Err((
                "admin.watch.stall_timeout",
                "0 would drop every client at its first change; give at least 1s".into(),
            ));
        }
        Ok(())
    }
}

fn default_max_clients() -> usize {
    1024
}

fn default_stall_timeout() -> Seconds {
    Seconds(60)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
