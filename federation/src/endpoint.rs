//! SPIFFE bundle endpoints (SPIFFE Federation §5): the two profiles, fetching a
//! foreign trust domain's bundle (`client`, feature `client`) and serving a local one
//! (`server`, feature `server`).
//!
//! This file owns the values both sides share: the endpoint URL rules
//! ([`EndpointUrl`], SPIFFE Federation §5.2.1.1 and §5.2.2.1), the client profile of a
//! federation relationship ([`Profile`], §5.2), the fetch limits ([`FetchLimits`]) and
//! the proxy choice ([`ProxySetting`]). It owns the wire protocol only: URLs, TLS per
//! profile, HTTP, limits, and the text forms of endpoint URLs and proxy settings with
//! their rules. It does not own scheduling, storage or acceptance policy (the gateway
//! does), nor configuration parsing (the gateway maps its TOML onto these types).

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
/// Its text form ([`FromStr`], [`Display`](fmt::Display), serde) is `env`, `off` or a
/// proxy URL. The text is checked by the proxy URL rules (see [`ProxyError`]): scheme
/// `http` or `https` (the HTTP client speaks to no other proxy), a host, no user name
/// or password (credentials belong in `HTTPS_PROXY`, with `env`), and nothing the URL
/// parser would silently repair (a control character, a space at either end). A
/// [`ProxySetting::Url`] made in code may carry credentials; `Debug` hides a password,
/// but `Display` and serde write the URL as it is.
///
/// ```
/// use spiffe_federation::endpoint::{ProxyError, ProxySetting};
///
/// assert_eq!("off".parse::<ProxySetting>(), Ok(ProxySetting::Off));
/// let proxy: ProxySetting = "http://proxy.internal:3128".parse()?;
/// assert_eq!(proxy.to_string(), "http://proxy.internal:3128/");
/// assert_eq!("http://me:pw@proxy:3128".parse::<ProxySetting>(), Err(ProxyError::Userinfo));
/// # Ok::<(), ProxyError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
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

/// Why a text is not a [`ProxySetting`]. No variant repeats the text: a proxy URL may
/// carry a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// A control character (a line break, a tab, …) or a space at either end, which the
    /// URL parser would silently remove.
    #[error("not \"env\", \"off\" or a proxy URL: {}", UrlError::ControlCharacter)]
    ControlCharacter,
    /// Neither `env`, `off` nor a URL.
    #[error("not \"env\", \"off\" or a proxy URL: not a valid URL: {source}")]
    Unparseable {
        /// The parser's reason.
        #[source]
        source: url::ParseError,
    },
    /// A scheme other than `http` and `https`, which the HTTP client does not speak to
    /// (it is built without SOCKS).
    #[error(
        "not \"env\", \"off\" or a proxy URL: a proxy URL must start with http:// or https://, not {scheme}://"
    )]
    Scheme {
        /// The scheme found, lower-cased.
        scheme: String,
    },
    /// A user name or password in the URL: a proxy setting is shown wherever its
    /// relationship is, so credentials belong in `HTTPS_PROXY`.
    #[error(
        "not \"env\", \"off\" or a proxy URL: the proxy URL must not include a user name or password (it is shown by the admin API); give proxy credentials in HTTPS_PROXY with proxy = \"env\""
    )]
    Userinfo,
    /// No host, or `///` where the host belongs.
    #[error("not \"env\", \"off\" or a proxy URL: the proxy URL has no host")]
    NoHost,
}

impl ProxySetting {
    /// Parse `env`, `off` or a proxy URL, by the rules [`ProxyError`] lists.
    ///
    /// # Errors
    /// A [`ProxyError`] naming the first rule the text breaks.
    pub fn parse(input: &str) -> Result<Self, ProxyError> {
        match input {
            "env" => return Ok(Self::FromEnvironment),
            "off" => return Ok(Self::Off),
            _ => {}
        }
        if needs_repair(input) {
            return Err(ProxyError::ControlCharacter);
        }
        let url = Url::parse(input).map_err(|source| ProxyError::Unparseable { source })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ProxyError::Scheme {
                scheme: url.scheme().to_owned(),
            });
        }
        if has_userinfo(&url) {
            return Err(ProxyError::Userinfo);
        }
        if url.host().is_none() || authority_missing(input) {
            return Err(ProxyError::NoHost);
        }
        Ok(Self::Url(url))
    }
}

impl fmt::Display for ProxySetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FromEnvironment => f.write_str("env"),
            Self::Off => f.write_str("off"),
            Self::Url(url) => f.write_str(url.as_str()),
        }
    }
}

impl FromStr for ProxySetting {
    type Err = ProxyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for ProxySetting {
    type Error = ProxyError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ProxySetting> for String {
    fn from(value: ProxySetting) -> Self {
        value.to_string()
    }
}

/// Whether `input` holds a control character anywhere (the WHATWG URL parser drops
/// tabs and line breaks) or space at either end (it trims it): text it would repair
/// rather than refuse.
fn needs_repair(input: &str) -> bool {
    input.chars().any(char::is_control) || input.trim() != input
}

/// Whether the URL has a user name or password.
fn has_userinfo(url: &Url) -> bool {
    !url.username().is_empty() || url.password().is_some()
}

/// Whether `input` has no host where it is written: the WHATWG parser reads
/// `https:///b`, `https:/b` and `https:b` as host `b`, where RFC 3986 reads an empty
/// or absent authority. Refuse rather than guess what was meant.
fn authority_missing(input: &str) -> bool {
    let after_scheme = input.split_once(':').map_or("", |(_, rest)| rest);
    let authority_start = after_scheme.strip_prefix("//").unwrap_or_default();
    authority_start.is_empty() || authority_start.starts_with(['/', '\\', '?', '#'])
}

/// A bundle endpoint URL that meets SPIFFE Federation §5.2.1.1 and §5.2.2.1: scheme
/// `https`, no userinfo, a host, and (our rule) no fragment, which would never reach
/// the server. [`EndpointUrl::parse`] also refuses text the WHATWG URL parser would
/// repair rather than refuse: a control character, a space at either end, and
/// `https:///host` (no host where `//` says one is).
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
    /// A control character (a line break, a tab, …) or a space at either end, which the
    /// URL parser would silently remove.
    #[error(
        "the URL contains a control character (such as a line break or tab) or leading or trailing space; remove it"
    )]
    ControlCharacter,
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
    /// Parse and check an endpoint URL as written: the one check of an endpoint URL
    /// given as text.
    ///
    /// The rules are checked in this order, and the first broken is reported: no
    /// text the parser would repair ([`UrlError::ControlCharacter`]), a URL at all,
    /// no userinfo, scheme `https`, a host where it is written (`https:///b` is
    /// [`UrlError::NoHost`]), then the rest of [`EndpointUrl::from_url`] (a host, no
    /// fragment).
    ///
    /// # Errors
    /// A [`UrlError`] naming the first rule the input breaks.
    pub fn parse(input: &str) -> Result<Self, UrlError> {
        if needs_repair(input) {
            return Err(UrlError::ControlCharacter);
        }
        let url = Url::parse(input).map_err(|source| UrlError::Unparseable { source })?;
        if has_userinfo(&url) {
            return Err(UrlError::Userinfo);
        }
        Self::check_scheme(&url)?;
        if authority_missing(input) {
            return Err(UrlError::NoHost);
        }
        Self::from_url(url)
    }

    /// Check an already parsed URL: no userinfo, scheme `https`, a host, no fragment,
    /// in this order. Userinfo comes first, so that a caller that reports a broken rule
    /// together with the URL never shows a password.
    ///
    /// # Errors
    /// A [`UrlError`] naming the first rule the URL breaks.
    pub fn from_url(url: Url) -> Result<Self, UrlError> {
        if has_userinfo(&url) {
            return Err(UrlError::Userinfo);
        }
        Self::check_scheme(&url)?;
        if url.host().is_none() {
            return Err(UrlError::NoHost);
        }
        if url.fragment().is_some() {
            return Err(UrlError::Fragment);
        }
        Ok(Self(url))
    }

    fn check_scheme(url: &Url) -> Result<(), UrlError> {
        // `Url` lower-cases the scheme, so `HTTPS` arrives here as `https`.
        if url.scheme() != "https" {
            return Err(UrlError::NotHttps {
                scheme: url.scheme().to_owned(),
            });
        }
        Ok(())
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
    fn repaired_urls_are_refused_not_repaired() {
        for raw in [
            "https://w.example/bun\ndle",
            "https://w.example/\r\n",
            "https://w.exa\tmple/",
            " https://w.example/",
            "https://w.example/ ",
        ] {
            assert_eq!(
                EndpointUrl::parse(raw),
                Err(UrlError::ControlCharacter),
                "{raw:?}"
            );
            assert_eq!(
                ProxySetting::parse(raw),
                Err(ProxyError::ControlCharacter),
                "{raw:?}"
            );
        }
        assert_eq!(
            EndpointUrl::parse("https:///w.example/"),
            Err(UrlError::NoHost)
        );
        assert_eq!(
            EndpointUrl::parse("https://w.example/b")
                .unwrap()
                .as_url()
                .as_str(),
            "https://w.example/b"
        );
    }

    #[test]
    fn userinfo_is_refused_without_repeating_it() {
        let err = EndpointUrl::parse("https://alice:s3cret@w.example/").unwrap_err();
        assert_eq!(err, UrlError::Userinfo);
        assert!(!err.to_string().contains("s3cret"));
        // Before the scheme: a caller that shows the URL with a scheme error never
        // shows a password.
        assert_eq!(
            EndpointUrl::parse("http://alice:s3cret@w.example/"),
            Err(UrlError::Userinfo)
        );
        let err = ProxySetting::parse("http://alice:s3cret@proxy:3128").unwrap_err();
        assert_eq!(err, ProxyError::Userinfo);
        assert!(!err.to_string().contains("s3cret"));
    }

    #[test]
    fn only_http_and_https_proxies() {
        assert!(ProxySetting::parse("http://proxy.internal:3128").is_ok());
        assert!(ProxySetting::parse("https://proxy.internal:3129/").is_ok());
        for (raw, scheme) in [
            ("socks5://proxy:1080", "socks5"),
            ("file:///etc/passwd", "file"),
            ("ftp://proxy/", "ftp"),
        ] {
            assert_eq!(
                ProxySetting::parse(raw),
                Err(ProxyError::Scheme {
                    scheme: scheme.to_owned()
                })
            );
        }
        assert_eq!(
            ProxySetting::parse("http:///proxy:3128"),
            Err(ProxyError::NoHost)
        );
        assert!(matches!(
            ProxySetting::parse("proxy:3128"),
            Err(ProxyError::Scheme { .. })
        ));
    }

    #[test]
    fn proxy_text_form() {
        for (text, setting) in [
            ("env", ProxySetting::FromEnvironment),
            ("off", ProxySetting::Off),
            (
                "http://proxy.internal:3128/",
                ProxySetting::Url(Url::parse("http://proxy.internal:3128").unwrap()),
            ),
        ] {
            assert_eq!(
                text.parse::<ProxySetting>().as_ref(),
                Ok(&setting),
                "{text}"
            );
            assert_eq!(setting.to_string(), text);
            let json = serde_json::to_string(&setting).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(
                serde_json::from_str::<ProxySetting>(&json).unwrap(),
                setting
            );
        }
        assert_eq!(ProxySetting::default(), ProxySetting::FromEnvironment);
        for text in ["sometimes", "ENV", ""] {
            let err = text.parse::<ProxySetting>().unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("not \"env\", \"off\" or a proxy URL: not a valid URL: "),
                "{err}"
            );
        }
        let message = ProxySetting::parse("socks5://proxy:1080")
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "not \"env\", \"off\" or a proxy URL: a proxy URL must start with http:// or https://, not socks5://"
        );
        let err = serde_json::from_str::<ProxySetting>("\"http://u:s3cret@p:3128\"").unwrap_err();
        assert!(err.to_string().contains("HTTPS_PROXY"), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn proxy_password_is_redacted() {
        let proxy = ProxySetting::Url(Url::parse("http://me:secret@proxy:3128").unwrap());
        let shown = format!("{proxy:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("REDACTED"), "{shown}");
    }
}
