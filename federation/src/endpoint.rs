//! SPIFFE bundle endpoints (SPIFFE Federation §5): the two profiles, fetching a
//! foreign trust domain's bundle (`client`, feature `client`) and serving a local one
//! (`server`, feature `server`).
//!
//! This file owns the values both sides share: the endpoint URL rules
//! ([`EndpointUrl`], SPIFFE Federation §5.2.1.1 and §5.2.2.1), the client profile of a
//! federation relationship ([`Profile`], §5.2), the fetch limits ([`FetchLimits`]) and
//! the proxy choice ([`ProxySetting`]). It owns the wire protocol only: URLs, TLS per
//! profile, HTTP, limits. It does not own scheduling, storage or acceptance policy (the
//! gateway does), nor configuration parsing (the gateway maps its TOML onto these
//! types).

#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod client;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod server;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use url::{Host, Url};

use crate::bundle::DEFAULT_MAX_DOCUMENT_SIZE;
use crate::trust_domain::SpiffeId;

/// How a client authenticates a bundle endpoint (SPIFFE Federation §5.2): one of the
/// two profiles every client must support (§5).
///
/// A relationship has exactly one profile, and a failure under it is final: there is
/// no fallback to the other one (§7.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Profile {
    /// `https_web` (§5.2.1): the server is authenticated by Web PKI, its certificate
    /// checked against locally trusted roots and the URL host (RFC 6125).
    HttpsWeb(WebOptions),
    /// `https_spiffe` (§5.2.2): the server is authenticated by its X509-SVID, which must
    /// be for `endpoint_id` and chain to the bundle of `endpoint_id`'s trust domain.
    HttpsSpiffe {
        /// The bundle endpoint SPIFFE ID (§5.2.2.2), the profile's one parameter.
        endpoint_id: SpiffeId,
    },
}

/// Optional settings of the `https_web` profile.
///
/// The profile needs no parameter beyond the URL (SPIFFE Federation §5.2.1.2), so the
/// default, the operating system's roots and nothing else, works on its own; extra
/// roots are an optional addition (a private CA), never a requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebOptions {
    /// CA certificates trusted in addition to (or, with `system_roots` off, instead of)
    /// the system's.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Whether the operating system's trust store is used. Default: `true`.
    pub system_roots: bool,
}

impl Default for WebOptions {
    fn default() -> Self {
        Self {
            extra_roots: Vec::new(),
            system_roots: true,
        }
    }
}

/// Limits on one bundle fetch (`docs/conformance.md` EXT-2, EXT-3, RDR-1, SEC-4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchLimits {
    /// The largest body accepted, in bytes. Default: 1 MiB.
    pub max_body_bytes: usize,
    /// The deadline for establishing the TCP connection. Default: 10 s.
    pub connect_timeout: Duration,
    /// The deadline for the whole fetch: every connection, TLS handshake, redirect hop
    /// and the body. Default: 30 s.
    pub total_timeout: Duration,
    /// The most redirects followed in one fetch. Default: 3.
    pub max_redirects: u8,
    /// Whether redirects are followed at all (SPIFFE Federation §7.5.1 suggests an
    /// operator may turn them off). Default: `true`.
    pub follow_redirects: bool,
}

impl Default for FetchLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_DOCUMENT_SIZE,
            connect_timeout: Duration::from_secs(10),
            total_timeout: Duration::from_secs(30),
            max_redirects: 3,
            follow_redirects: true,
        }
    }
}

/// Which HTTP proxy a fetch goes through (`docs/conformance.md` EXT-5).
///
/// `Debug` hides a proxy password.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum ProxySetting {
    /// `HTTPS_PROXY` (or `ALL_PROXY`) and `NO_PROXY` from the environment, as SPIRE and
    /// go-spiffe do. The default.
    #[default]
    FromEnvironment,
    /// Connect directly, whatever the environment says.
    Off,
    /// Always use this proxy (`http://host:port`, optionally with credentials).
    Url(Url),
}

impl fmt::Debug for ProxySetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FromEnvironment => f.write_str("FromEnvironment"),
            Self::Off => f.write_str("Off"),
            Self::Url(url) => {
                let mut shown = url.clone();
                if shown.password().is_some() {
                    // Cannot fail: the URL already has a password, so it can hold one.
                    let _ignored = shown.set_password(Some("REDACTED"));
                }
                f.debug_tuple("Url").field(&shown.as_str()).finish()
            }
        }
    }
}

/// A bundle endpoint URL that meets SPIFFE Federation §5.2.1.1 and §5.2.2.1: scheme
/// `https`, no userinfo, a host, and (our rule) no fragment, which would never reach
/// the server.
///
/// The scheme compares case-insensitively (RFC 3986 §3.1): `HTTPS://h/b` is accepted
/// and displayed as `https://h/b`. Redirect targets are held to the same rules.
///
/// ```
/// use spiffe_federation::endpoint::{EndpointUrl, UrlError};
///
/// let url: EndpointUrl = "https://example.org/bundle.json".parse()?;
/// assert_eq!(url.as_url().path(), "/bundle.json");
/// assert_eq!("http://example.org/".parse::<EndpointUrl>(), Err(UrlError::NotHttps { scheme: "http".into() }));
/// assert_eq!("https://u:p@example.org/".parse::<EndpointUrl>(), Err(UrlError::Userinfo));
/// # Ok::<(), UrlError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EndpointUrl(Url);

/// Why a URL cannot be a bundle endpoint URL (SPIFFE Federation §5.2.1.1, §5.2.2.1).
///
/// No variant repeats the URL: it may carry a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// Not a URL at all (RFC 3986 as the WHATWG URL parser reads it).
    #[error("not a valid URL: {source}")]
    Unparseable {
        /// The parser's reason.
        #[source]
        source: url::ParseError,
    },
    /// The bytes of a `Location` header are not UTF-8.
    #[error("the URL is not valid UTF-8")]
    NotUtf8,
    /// The scheme is not `https` (§5.2.1.1: the scheme MUST be `https`).
    #[error("the scheme must be https, not {scheme:?}")]
    NotHttps {
        /// The scheme found, lower-cased.
        scheme: String,
    },
    /// The authority has a user name or password (§5.2.1.1: MUST NOT include userinfo).
    #[error("the URL must not include userinfo (user name or password)")]
    Userinfo,
    /// There is no host to connect to.
    #[error("the URL has no host")]
    NoHost,
    /// The URL has a fragment, which is never sent to the server.
    #[error("the URL must not have a fragment")]
    Fragment,
}

impl EndpointUrl {
    /// Parse and check an endpoint URL.
    ///
    /// # Errors
    /// A [`UrlError`] naming the first rule the input breaks.
    pub fn parse(input: &str) -> Result<Self, UrlError> {
        let url = Url::parse(input).map_err(|source| UrlError::Unparseable { source })?;
        let checked = Self::from_url(url)?;
        // The WHATWG parser reads `https:///b` and `https:b` as host `b`; RFC 3986 reads
        // an empty or absent authority. Refuse rather than guess what was meant.
        let after_scheme = input.split_once(':').map_or("", |(_, rest)| rest);
        let authority_start = after_scheme.strip_prefix("//").unwrap_or_default();
        if authority_start.is_empty() || authority_start.starts_with(['/', '\\', '?', '#']) {
            return Err(UrlError::NoHost);
        }
        Ok(checked)
    }

    /// Check an already parsed URL.
    ///
    /// # Errors
    /// A [`UrlError`] naming the first rule the URL breaks.
    pub fn from_url(url: Url) -> Result<Self, UrlError> {
        // `Url` lower-cases the scheme, so `HTTPS` arrives here as `https`.
        if url.scheme() != "https" {
            return Err(UrlError::NotHttps {
                scheme: url.scheme().to_owned(),
            });
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::Userinfo);
        }
        if url.host().is_none() {
            return Err(UrlError::NoHost);
        }
        if url.fragment().is_some() {
            return Err(UrlError::Fragment);
        }
        Ok(Self(url))
    }

    /// The URL.
    pub fn as_url(&self) -> &Url {
        &self.0
    }

    /// The host: a DNS name or an IP address.
    pub fn host(&self) -> Host<&str> {
        // The constructor refused URLs without a host; an empty domain never matches
        // a certificate, so the fallback cannot widen trust.
        self.0.host().unwrap_or(Host::Domain(""))
    }
}

impl fmt::Display for EndpointUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl fmt::Debug for EndpointUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EndpointUrl({:?})", self.0.as_str())
    }
}

impl FromStr for EndpointUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for EndpointUrl {
    type Error = UrlError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl TryFrom<&str> for EndpointUrl {
    type Error = UrlError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl TryFrom<Url> for EndpointUrl {
    type Error = UrlError;

    fn try_from(value: Url) -> Result<Self, Self::Error> {
        Self::from_url(value)
    }
}

impl From<EndpointUrl> for String {
    fn from(value: EndpointUrl) -> Self {
        value.0.into()
    }
}

impl From<EndpointUrl> for Url {
    fn from(value: EndpointUrl) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_case_scheme_is_normalised() {
        let url = EndpointUrl::parse("HTTPS://Example.ORG/b?x=1").unwrap();
        assert_eq!(url.to_string(), "https://example.org/b?x=1");
    }

    #[test]
    fn url_rules() {
        let cases = [
            (
                "http://h/",
                UrlError::NotHttps {
                    scheme: "http".into(),
                },
            ),
            ("HTTPS://user:pw@h/", UrlError::Userinfo),
            ("https://user@h/", UrlError::Userinfo),
            ("https://h/#frag", UrlError::Fragment),
            (
                "unix:/run/sock",
                UrlError::NotHttps {
                    scheme: "unix".into(),
                },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(EndpointUrl::parse(input), Err(expected), "{input}");
        }
        for input in ["https:///bundle", "https:bundle", "https:/bundle"] {
            assert_eq!(EndpointUrl::parse(input), Err(UrlError::NoHost), "{input}");
        }
        for input in ["https://", "https:///"] {
            assert!(
                matches!(EndpointUrl::parse(input), Err(UrlError::Unparseable { .. })),
                "{input}"
            );
        }
        assert!(matches!(
            EndpointUrl::parse("not a url"),
            Err(UrlError::Unparseable { .. })
        ));
    }

    #[test]
    fn proxy_password_is_redacted() {
        let proxy = ProxySetting::Url(Url::parse("http://me:secret@proxy:3128").unwrap());
        let shown = format!("{proxy:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("REDACTED"), "{shown}");
    }
}
