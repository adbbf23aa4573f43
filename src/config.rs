//! The vocabulary and the tables of the gateway's TOML configuration: the error every
//! table reports ([`ConfigError`], naming the key), the number-or-text values
//! ([`value`], [`Seconds`]), and the tables of the parts that do not keep their own:
//! admin, policy, polling, local domains, bundle endpoints, relationships, the
//! connection limits ([`net`]) and storage ([`storage`]).
//!
//! Owns turning TOML into those validated values with no side effects: nothing is
//! bound, opened or spawned here. Unknown keys are errors that name the key; bad
//! values are errors that name the key and say why; nothing is silently fixed. It does
//! not own the whole file ([`crate::app::Config`] gathers the tables and checks the
//! rules between them) or the tables of the outputs (each sink's table is in its own
//! folder, e.g. [`crate::outputs::sds::SdsConfig`]), and it imports no other part of
//! the crate: every part may use it.

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

pub mod net;
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

impl LocalDomain {
    /// The path this domain is served at when it is the `index`-th `[[local]]` table:
    /// configured, else `/` for the first and `/<trust domain>` for the others.
    pub fn served_path(&self, index: usize) -> String {
        self.path.clone().unwrap_or_else(|| {
            if index == 0 {
                "/".to_owned()
            } else {
                format!("/{}", self.trust_domain)
            }
        })
    }
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

impl AdminConfig {
    /// The admin rules: TLS only on TCP, clients only with TLS, TCP only with tokens
    /// and/or clients, each client ID once. `listen` is where the admin API listens
    /// (configured, or the default socket in `data_dir`).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the `admin.*` key at fault.
    pub fn validate(&self, listen: &AdminListen) -> Result<(), ConfigError> {
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
