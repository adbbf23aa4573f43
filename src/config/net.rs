//! The configuration of connection limits: `[net]` (process-wide) and the `limits`
//! table of each listener (`[endpoint.https_web.limits]`,
//! `[endpoint.https_spiffe.limits]`, `[admin.limits]`, `[sinks.sds.limits]`).
//!
//! Owns the schema, each listener kind's documented defaults and the checks (pure:
//! nothing is bound here). Every key of a `limits` table is optional; an absent key
//! takes the default of its listener's [`Kind`]. A key that does not apply to a
//! listener (such as `max_request_bytes` outside `[admin.limits]`) is refused naming
//! it, never ignored.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Seconds};

/// The default of `net.reserved_file_descriptors`.
pub const DEFAULT_RESERVED_FILE_DESCRIPTORS: u64 = 256;

/// The smallest `net.reserved_file_descriptors` accepted: the gateway's own files,
/// database, listeners and outbound fetches need at least this many.
pub const MIN_RESERVED_FILE_DESCRIPTORS: u64 = 32;

/// The longest timeout accepted for any `*_timeout` or `ping_interval` key (1 day):
/// beyond it a timeout protects nothing.
pub const MAX_TIMEOUT: Seconds = Seconds(86_400);

/// The largest `max_request_bytes` accepted (64 MiB).
pub const MAX_REQUEST_BYTES_LIMIT: u64 = 64 * 1024 * 1024;

/// The `[net]` table: process-wide connection settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetConfig {
    /// File descriptors kept out of the connection budget, for everything but inbound
    /// connections: the database, listeners, TLS and bundle file reads, outbound
    /// fetches, the files sink. The budget shared by every listener is the file
    /// limit (raised to the hard limit at start) minus this.
    pub reserved_file_descriptors: u64,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            reserved_file_descriptors: DEFAULT_RESERVED_FILE_DESCRIPTORS,
        }
    }
}

impl NetConfig {
    /// Check the table.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `net.reserved_file_descriptors`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.reserved_file_descriptors < MIN_RESERVED_FILE_DESCRIPTORS {
            return Err(ConfigError::Invalid {
                key: "net.reserved_file_descriptors".into(),
                reason: format!(
                    "{} is below the minimum of {MIN_RESERVED_FILE_DESCRIPTORS}: the gateway's database, files and outbound fetches need descriptors that connections must not take",
                    self.reserved_file_descriptors
                ),
            });
        }
        Ok(())
    }
}

/// Which listener a `limits` table belongs to; decides its defaults and which keys
/// apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A bundle endpoint listener (`https_web` or `https_spiffe`): faces other data
    /// centres, answers small documents quickly.
    BundleEndpoint,
    /// The admin API (unix socket, TCP or TLS), including the watch API's long polls
    /// and event streams.
    Admin,
    /// The Envoy SDS server (unix socket or TCP), HTTP/2 with long-lived streams.
    Sds,
}

/// One listener's limits, resolved from its table and its kind's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From accept to the first complete request: TCP to TLS handshake done to the
    /// first request head (HTTP/1) or the HTTP/2 preface and first request.
    pub header_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Connections open at once on this listener.
    pub max_connections: usize,
    /// Connections open at once from one peer: an IP address over TCP, a user ID on a
    /// unix socket.
    pub max_connections_per_peer: usize,
    /// HTTP/2 PING interval; a peer that does not answer within the same time is
    /// closed.
    pub ping_interval: Duration,
    /// A request whose response is not fully sent within this is closed with its
    /// connection (`None`: requests may be long-lived, e.g. event streams).
    pub request_timeout: Option<Duration>,
}

/// Request body limits of the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Largest body of a route that does not carry a bundle document (those are held
    /// to `policy.max_document_bytes`).
    pub max_request_bytes: usize,
    /// Time to receive a whole request body once the request is authorized.
    pub body_timeout: Duration,
}

impl Default for BodyLimits {
    fn default() -> Self {
        Self {
            max_request_bytes: usize::try_from(DEFAULT_MAX_REQUEST_BYTES).unwrap_or(usize::MAX),
            body_timeout: DEFAULT_BODY_TIMEOUT.duration(),
        }
    }
}

/// The default of `admin.limits.max_request_bytes` (64 KiB): the largest admin body
/// that is not a bundle document is a JWT to validate.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 64 * 1024;

/// The default of `admin.limits.body_timeout`.
pub const DEFAULT_BODY_TIMEOUT: Seconds = Seconds(30);

/// The defaults of one listener kind (documented in docs/configuration.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    /// `header_timeout`.
    pub header_timeout: Seconds,
    /// `idle_timeout`.
    pub idle_timeout: Seconds,
    /// `max_connections`.
    pub max_connections: u32,
    /// `max_connections_per_peer`.
    pub max_connections_per_peer: u32,
    /// `ping_interval`.
    pub ping_interval: Seconds,
    /// `request_timeout`, where the kind has one.
    pub request_timeout: Option<Seconds>,
}

impl Kind {
    /// The kind's defaults.
    pub const fn defaults(self) -> Defaults {
        match self {
            // Peers in other data centres: a handshake and a request head take a few
            // round trips, so 10 s is generous; a poller comes back every few minutes,
            // so a connection idle for 60 s is not worth its descriptor. A poller
            // holds one or two connections: 128 per address leaves room for a NAT or
            // proxy in front of many.
            Self::BundleEndpoint => Defaults {
                header_timeout: Seconds(10),
                idle_timeout: Seconds(60),
                max_connections: 4096,
                max_connections_per_peer: 128,
                ping_interval: Seconds(30),
                request_timeout: Some(Seconds(30)),
            },
            // Operators, monitoring and `fedgw agent`s, each holding one watch call.
            Self::Admin => Defaults {
                header_timeout: Seconds(10),
                idle_timeout: Seconds(60),
                max_connections: 1024,
                max_connections_per_peer: 256,
                ping_interval: Seconds(30),
                request_timeout: None,
            },
            // One HTTP/2 connection per Envoy, its streams open for as long as Envoy
            // runs.
            Self::Sds => Defaults {
                header_timeout: Seconds(10),
                idle_timeout: Seconds(60),
                max_connections: 1024,
                max_connections_per_peer: 256,
                ping_interval: Seconds(30),
                request_timeout: None,
            },
        }
    }
}

/// A listener's `limits` table. Every key is optional; see [`Kind::defaults`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// From accept to the first complete request (TLS handshake included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_timeout: Option<Seconds>,
    /// Close a connection with no request in flight after this long.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Seconds>,
    /// Most connections open at once on the listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Most connections open at once from one IP address (TCP) or user (unix socket).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_peer: Option<u32>,
    /// HTTP/2 PING interval (and the time a peer has to answer one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ping_interval: Option<Seconds>,
    /// Bundle endpoint only: longest time to send one response.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<Seconds>,
    /// Admin API only: largest request body of a route that carries no bundle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_request_bytes: Option<u64>,
    /// Admin API only: time to receive a whole request body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_timeout: Option<Seconds>,
}

impl LimitsConfig {
    /// The limits of a listener of `kind`: configured values, else the defaults.
    pub fn resolve(&self, kind: Kind) -> Limits {
        let d = kind.defaults();
        let count = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
        let max_connections = self.max_connections.unwrap_or(d.max_connections);
        // A lowered listener cap lowers the default per-peer cap with it.
        let per_peer = self
            .max_connections_per_peer
            .unwrap_or(d.max_connections_per_peer.min(max_connections));
        Limits {
            header_timeout: self.header_timeout.unwrap_or(d.header_timeout).duration(),
            idle_timeout: self.idle_timeout.unwrap_or(d.idle_timeout).duration(),
            max_connections: count(max_connections),
            max_connections_per_peer: count(per_peer),
            ping_interval: self.ping_interval.unwrap_or(d.ping_interval).duration(),
            request_timeout: self
                .request_timeout
                .or(d.request_timeout)
                .map(Seconds::duration),
        }
    }

    /// The admin API's body limits (defaults where not configured).
    pub fn body_limits(&self) -> BodyLimits {
        BodyLimits {
            max_request_bytes: usize::try_from(
                self.max_request_bytes.unwrap_or(DEFAULT_MAX_REQUEST_BYTES),
            )
            .unwrap_or(usize::MAX),
            body_timeout: self.body_timeout.unwrap_or(DEFAULT_BODY_TIMEOUT).duration(),
        }
    }

    /// Check the table of a `kind` listener found at `key` (e.g. `admin.limits`).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key at fault.
    pub fn validate(&self, key: &str, kind: Kind) -> Result<(), ConfigError> {
        let invalid = |field: &str, reason: String| ConfigError::Invalid {
            key: format!("{key}.{field}"),
            reason,
        };
        let only = |field: &str, owner: &str| {
            invalid(
                field,
                format!("applies to {owner} only; this listener does not have it"),
            )
        };
        if kind != Kind::BundleEndpoint && self.request_timeout.is_some() {
            return Err(only(
                "request_timeout",
                "the bundle endpoint listeners (requests here may be long-lived streams)",
            ));
        }
        if kind != Kind::Admin {
            if self.max_request_bytes.is_some() {
                return Err(only("max_request_bytes", "[admin.limits]"));
            }
            if self.body_timeout.is_some() {
                return Err(only("body_timeout", "[admin.limits]"));
            }
        }
        for (field, value) in [
            ("header_timeout", self.header_timeout),
            ("idle_timeout", self.idle_timeout),
            ("ping_interval", self.ping_interval),
            ("request_timeout", self.request_timeout),
            ("body_timeout", self.body_timeout),
        ] {
            match value {
                Some(Seconds(0)) => return Err(invalid(field, "must be positive".into())),
                Some(seconds) if seconds > MAX_TIMEOUT => {
                    return Err(invalid(
                        field,
                        format!(
                            "{}s is above the maximum of {}s (1 day)",
                            seconds.0, MAX_TIMEOUT.0
                        ),
                    ));
                }
                _ => {}
            }
        }
        let resolved = self.resolve(kind);
        if self.max_connections == Some(0) {
            return Err(invalid("max_connections", "must be at least 1".into()));
        }
        if self.max_connections_per_peer == Some(0) {
            return Err(invalid(
                "max_connections_per_peer",
                "must be at least 1".into(),
            ));
        }
        if resolved.max_connections_per_peer > resolved.max_connections {
            return Err(invalid(
                "max_connections_per_peer",
                format!(
                    "{} is above {key}.max_connections ({})",
                    resolved.max_connections_per_peer, resolved.max_connections
                ),
            ));
        }
        match self.max_request_bytes {
            Some(0) => {
                return Err(invalid("max_request_bytes", "must be at least 1".into()));
            }
            Some(bytes) if bytes > MAX_REQUEST_BYTES_LIMIT => {
                return Err(invalid(
                    "max_request_bytes",
                    format!("{bytes} is above the maximum of {MAX_REQUEST_BYTES_LIMIT} (64 MiB)"),
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> LimitsConfig {
        toml::from_str(text).unwrap()
    }

    fn refused(text: &str, kind: Kind) -> String {
        match parse(text).validate("x.limits", kind) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn absent_keys_take_the_kinds_defaults() {
        let limits = LimitsConfig::default().resolve(Kind::BundleEndpoint);
        assert_eq!(limits.header_timeout, Duration::from_secs(10));
        assert_eq!(limits.idle_timeout, Duration::from_secs(60));
        assert_eq!(limits.max_connections, 4096);
        assert_eq!(limits.max_connections_per_peer, 128);
        assert_eq!(limits.request_timeout, Some(Duration::from_secs(30)));
        let admin = LimitsConfig::default().resolve(Kind::Admin);
        assert_eq!(admin.request_timeout, None);
        assert_eq!(admin.max_connections_per_peer, 256);
        let body = LimitsConfig::default().body_limits();
        assert_eq!(body.max_request_bytes, 64 * 1024);
        assert_eq!(body.body_timeout, Duration::from_secs(30));
    }

    #[test]
    fn configured_keys_win() {
        let config = parse(
            "header_timeout = \"2s\"\nidle_timeout = 5\nmax_connections = 10\nmax_connections_per_peer = 3\n",
        );
        config.validate("x.limits", Kind::Sds).unwrap();
        let limits = config.resolve(Kind::Sds);
        assert_eq!(limits.header_timeout, Duration::from_secs(2));
        assert_eq!(limits.idle_timeout, Duration::from_secs(5));
        assert_eq!(limits.max_connections, 10);
        assert_eq!(limits.max_connections_per_peer, 3);
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        let kind = Kind::BundleEndpoint;
        assert_eq!(
            refused("header_timeout = 0", kind),
            "x.limits.header_timeout"
        );
        assert_eq!(
            refused("idle_timeout = \"2d\"", kind),
            "x.limits.idle_timeout"
        );
        assert_eq!(
            refused("max_connections = 0", kind),
            "x.limits.max_connections"
        );
        assert_eq!(
            refused("max_connections = 10\nmax_connections_per_peer = 11", kind),
            "x.limits.max_connections_per_peer"
        );
        let lowered = parse("max_connections = 100");
        lowered.validate("x.limits", kind).unwrap();
        assert_eq!(
            lowered.resolve(kind).max_connections_per_peer,
            100,
            "the default per-peer cap (128) follows a lowered listener cap"
        );
        assert_eq!(
            refused("max_request_bytes = 10", kind),
            "x.limits.max_request_bytes"
        );
        assert_eq!(
            refused("request_timeout = 10", Kind::Admin),
            "x.limits.request_timeout"
        );
        assert_eq!(
            refused("max_request_bytes = 0", Kind::Admin),
            "x.limits.max_request_bytes"
        );
        assert_eq!(
            refused("body_timeout = 5", Kind::Sds),
            "x.limits.body_timeout"
        );
        assert!(toml::from_str::<LimitsConfig>("header_timout = 1").is_err());
    }

    #[test]
    fn reserve_has_a_floor() {
        let config: NetConfig = toml::from_str("reserved_file_descriptors = 8").unwrap();
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Invalid { key, .. }) if key == "net.reserved_file_descriptors"
        ));
        assert_eq!(
            NetConfig::default().reserved_file_descriptors,
            DEFAULT_RESERVED_FILE_DESCRIPTORS
        );
    }
}
