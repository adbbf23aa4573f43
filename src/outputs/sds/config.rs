//! `[sinks.sds]`: where the Envoy SDS server listens and which names it answers to.
//!
//! Owns the schema, its defaults and its checks (pure: nothing is bound here). The
//! resource names default to what SPIRE's agent uses (`ALL`, `ROOTCA`, `spiffe://<td>`),
//! so Envoy configurations written for SPIRE work unchanged.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use spiffe_federation::TrustDomain;

use crate::config::net::Kind;
use crate::config::value::{self, FromNumber};
use crate::config::{AdminListen, ConfigError, Seconds};

/// The default name of the resource holding every offered domain (SPIRE's
/// `default_all_bundles_name`).
pub const DEFAULT_ALL_BUNDLES_NAME: &str = "ALL";
/// The default name of the resource holding the default domain's CAs (SPIRE's
/// `default_bundle_name`).
pub const DEFAULT_BUNDLE_NAME: &str = "ROOTCA";
/// The unix socket's default mode: owner and group may connect.
pub const DEFAULT_SOCKET_MODE: SocketMode = SocketMode(0o660);

/// The `[sinks.sds]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SdsConfig {
    /// `unix:/path/sds.sock` or `host:port`; default `unix:<data_dir>/sds.sock`.
    pub listen: Option<SdsListen>,
    /// Mode of the unix socket (default 0660); only with a unix `listen`.
    pub socket_mode: Option<SocketMode>,
    /// Offer only these trust domains (MAP-8); default every stored domain.
    pub trust_domains: Option<Vec<TrustDomain>>,
    /// Name of the SPIFFE-validator resource listing every offered domain.
    #[serde(default = "default_all_bundles_name")]
    pub all_bundles_name: String,
    /// Name of the resource holding the default domain's CAs.
    #[serde(default = "default_bundle_name")]
    pub default_bundle_name: String,
    /// The domain `default_bundle_name` stands for; default the only local domain
    /// when there is exactly one.
    pub default_trust_domain: Option<TrustDomain>,
    /// Open streams at most, both variants together (default 1024); more are refused
    /// with `RESOURCE_EXHAUSTED`.
    #[serde(default = "default_max_streams")]
    pub max_streams: usize,
    /// The largest request message accepted, in bytes (default 1 MiB); a larger one
    /// ends its stream with `OUT_OF_RANGE`.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// How long a stream may leave a change (or the rest of a response) untaken
    /// before the client is taken to have stopped reading and its connection is
    /// closed (default 60 s).
    #[serde(default = "default_stall_timeout")]
    pub stall_timeout: Seconds,
    /// Connection limits (`[sinks.sds.limits]`).
    #[serde(default)]
    pub limits: super::net::LimitsConfig,
}

/// The default of `max_streams`.
pub const DEFAULT_MAX_STREAMS: usize = 1024;
/// The default of `max_request_bytes`.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1 << 20;
/// The default of `stall_timeout`.
pub const DEFAULT_STALL_TIMEOUT: Seconds = Seconds(60);

fn default_max_streams() -> usize {
    DEFAULT_MAX_STREAMS
}

fn default_max_request_bytes() -> usize {
    DEFAULT_MAX_REQUEST_BYTES
}

fn default_stall_timeout() -> Seconds {
    DEFAULT_STALL_TIMEOUT
}

fn default_all_bundles_name() -> String {
    DEFAULT_ALL_BUNDLES_NAME.to_owned()
}

fn default_bundle_name() -> String {
    DEFAULT_BUNDLE_NAME.to_owned()
}

/// Where the SDS server listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SdsListen {
    /// A unix socket path.
    Unix(PathBuf),
    /// A TCP address.
    Tcp(SocketAddr),
}

/// Unix permission bits, written `0o660` (a TOML octal integer) or `"0660"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "u32")]
pub struct SocketMode(u32);

impl SocketMode {
    /// The permission bits.
    pub fn bits(self) -> u32 {
        self.0
    }
}

impl FromStr for SocketMode {
    type Err = String;

    /// Octal digits, e.g. `0660`, `660` or `0o660`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bits = u32::from_str_radix(text.trim_start_matches("0o"), 8)
            .map_err(|_| format!("{text:?} is not an octal mode such as \"0660\""))?;
        Self::from_number(bits.into())
    }
}

impl FromNumber for SocketMode {
    const EXPECTING: &'static str = "an octal mode such as 0o660 or \"0660\"";

    fn from_number(number: u64) -> Result<Self, String> {
        match u32::try_from(number) {
            Ok(bits) if bits <= 0o777 => Ok(Self(bits)),
            _ => Err(format!(
                "{number:#o} has bits beyond 0o777: write the mode in octal (0o660 or \"0660\")"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for SocketMode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        value::deserialize(deserializer)
    }
}

impl From<SocketMode> for u32 {
    fn from(value: SocketMode) -> Self {
        value.0
    }
}

impl TryFrom<String> for SdsListen {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        // The same two forms as the admin listener's `listen`.
        Ok(match AdminListen::try_from(value)? {
            AdminListen::Unix(path) => Self::Unix(path),
            AdminListen::Tcp(addr) => Self::Tcp(addr),
        })
    }
}

impl From<SdsListen> for String {
    fn from(value: SdsListen) -> Self {
        String::from(match value {
            SdsListen::Unix(path) => AdminListen::Unix(path),
            SdsListen::Tcp(addr) => AdminListen::Tcp(addr),
        })
    }
}

impl SdsConfig {
    /// The listener, defaulting to `<data_dir>/sds.sock`.
    pub fn listen(&self, data_dir: &Path) -> SdsListen {
        self.listen
            .clone()
            .unwrap_or_else(|| SdsListen::Unix(data_dir.join("sds.sock")))
    }

    /// The unix socket's mode, defaulting to [`DEFAULT_SOCKET_MODE`].
    pub fn socket_mode(&self) -> SocketMode {
        self.socket_mode.unwrap_or(DEFAULT_SOCKET_MODE)
    }

    /// The domain `default_bundle_name` stands for: the configured one, else the only
    /// local domain, else none (the name is then not offered).
    pub fn default_domain<'a>(
        &'a self,
        mut locals: impl Iterator<Item = &'a TrustDomain>,
    ) -> Option<TrustDomain> {
        if let Some(td) = &self.default_trust_domain {
            return Some(td.clone());
        }
        match (locals.next(), locals.next()) {
            (Some(only), None) => Some(only.clone()),
            _ => None,
        }
    }

    /// Check the table; `data_dir` resolves the default listener.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the `sinks.sds.*` key at fault.
    pub fn validate(&self, data_dir: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            key: format!("sinks.sds.{key}"),
            reason,
        };
        self.limits.validate("sinks.sds.limits", Kind::Sds)?;
        if self.socket_mode.is_some() && matches!(self.listen(data_dir), SdsListen::Tcp(_)) {
            return Err(invalid(
                "socket_mode",
                "applies to a unix socket only; listen is a TCP address".into(),
            ));
        }
        for (key, name) in [
            ("all_bundles_name", &self.all_bundles_name),
            ("default_bundle_name", &self.default_bundle_name),
        ] {
            if name.is_empty() || name.starts_with("spiffe://") {
                return Err(invalid(
                    key,
                    format!(
                        "{name:?} must be non-empty and not a spiffe:// name (those are the per-domain resources)"
                    ),
                ));
            }
        }
        if self.max_streams == 0 {
            return Err(invalid(
                "max_streams",
                "0 would refuse every stream; give at least 1".into(),
            ));
        }
        if self.max_request_bytes < 1024 {
            return Err(invalid(
                "max_request_bytes",
                format!(
                    "{} bytes is too small for an Envoy request; give at least 1024",
                    self.max_request_bytes
                ),
            ));
        }
        if self.stall_timeout.0 == 0 {
            return Err(invalid(
                "stall_timeout",
                "0 would drop every client at its first change; give at least 1s".into(),
            ));
        }
        if self.all_bundles_name == self.default_bundle_name {
            return Err(invalid(
                "default_bundle_name",
                format!(
                    "{:?} is also all_bundles_name; the two resources need different names",
                    self.default_bundle_name
                ),
            ));
        }
        if let Some(allowed) = &self.trust_domains {
            if allowed.is_empty() {
                return Err(invalid(
                    "trust_domains",
                    "an empty allow-list offers nothing; leave the key out to offer every domain"
                        .into(),
                ));
            }
            let mut seen = BTreeSet::new();
            for (i, td) in allowed.iter().enumerate() {
                if !seen.insert(td) {
                    return Err(invalid(
                        &format!("trust_domains[{i}]"),
                        format!("{td} is listed twice"),
                    ));
                }
            }
            if let Some(td) = &self.default_trust_domain
                && !seen.contains(td)
            {
                return Err(invalid(
                    "default_trust_domain",
                    format!("{td} is not in sinks.sds.trust_domains, so it is never offered"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td(name: &str) -> spiffe_federation::TrustDomain {
        name.parse().unwrap()
    }

    fn parse(text: &str) -> Result<SdsConfig, String> {
        toml::from_str::<SdsConfig>(text).map_err(|err| err.to_string())
    }

    fn invalid_key(text: &str) -> String {
        match parse(text).unwrap().validate(Path::new("/data")) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_spire_names_and_a_group_socket_in_data_dir() {
        let config = parse("").unwrap();
        config.validate(Path::new("/data")).unwrap();
        assert_eq!(
            config.listen(Path::new("/data")),
            SdsListen::Unix("/data/sds.sock".into())
        );
        assert_eq!(config.socket_mode().bits(), 0o660);
        assert_eq!(config.all_bundles_name, "ALL");
        assert_eq!(config.default_bundle_name, "ROOTCA");
        assert_eq!(config.trust_domains, None);
    }

    #[test]
    fn listen_and_mode_forms() {
        let config = parse("listen = \"unix:/run/sds.sock\"\nsocket_mode = 0o600").unwrap();
        assert_eq!(config.listen, Some(SdsListen::Unix("/run/sds.sock".into())));
        assert_eq!(config.socket_mode().bits(), 0o600);
        let config = parse("socket_mode = \"0640\"").unwrap();
        assert_eq!(config.socket_mode().bits(), 0o640);
        let config = parse("listen = \"127.0.0.1:8234\"").unwrap();
        assert_eq!(
            config.listen,
            Some(SdsListen::Tcp("127.0.0.1:8234".parse().unwrap()))
        );
        assert!(parse("socket_mode = 660").unwrap_err().contains("octal"));
        assert!(parse("socket_mode = \"rw\"").unwrap_err().contains("octal"));
        assert!(parse("listen = \"nowhere\"").is_err());
        assert!(parse("colour = \"blue\"").unwrap_err().contains("colour"));
    }

    #[test]
    fn bad_settings_name_their_key() {
        assert_eq!(
            invalid_key("listen = \"127.0.0.1:1\"\nsocket_mode = 0o600"),
            "sinks.sds.socket_mode"
        );
        assert_eq!(
            invalid_key("all_bundles_name = \"\""),
            "sinks.sds.all_bundles_name"
        );
        assert_eq!(
            invalid_key("default_bundle_name = \"spiffe://x\""),
            "sinks.sds.default_bundle_name"
        );
        assert_eq!(
            invalid_key("default_bundle_name = \"ALL\""),
            "sinks.sds.default_bundle_name"
        );
        assert_eq!(invalid_key("trust_domains = []"), "sinks.sds.trust_domains");
        assert_eq!(
            invalid_key("trust_domains = [\"a.test\", \"a.test\"]"),
            "sinks.sds.trust_domains[1]"
        );
        assert_eq!(
            invalid_key("trust_domains = [\"a.test\"]\ndefault_trust_domain = \"b.test\""),
            "sinks.sds.default_trust_domain"
        );
    }

    #[test]
    fn default_domain_is_configured_or_the_only_local_one() {
        let config = parse("").unwrap();
        let one = [td("a.test")];
        let two = [td("a.test"), td("b.test")];
        assert_eq!(config.default_domain(one.iter()), Some(td("a.test")));
        assert_eq!(config.default_domain(two.iter()), None);
        assert_eq!(config.default_domain([].iter()), None);
        let config = parse("default_trust_domain = \"b.test\"").unwrap();
        assert_eq!(config.default_domain(two.iter()), Some(td("b.test")));
    }
}
