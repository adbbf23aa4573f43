//! Checks of the URLs an operator gives a relationship (bundle endpoint URLs and proxy
//! URLs), on the text as written, wherever it comes from: the configuration file, the
//! admin API's body, the CLI's flags and ClusterFederatedTrustDomain YAML.
//!
//! The WHATWG parser behind the `url` crate quietly repairs what it reads: it drops
//! tabs and line breaks anywhere and spaces at the ends, and reads `https:///x` as
//! host `x`. A URL that needed repair is refused here instead, before it is parsed.
//! A URL with userinfo (`user:password@`) is refused, and no error here repeats the
//! text it refuses, which may hold a password; [`redact_userinfo`] takes userinfo out
//! of messages written by others (the TOML reader quotes the offending line).
//!
//! Proxies: reqwest (built without its `socks` feature) speaks to `http://` and
//! `https://` proxies only, so other schemes are refused here rather than at the first
//! fetch. Proxy credentials belong in `HTTPS_PROXY` (`proxy = "env"`), never in a
//! relationship, which the admin API and `fedgw federation show` print.
//!
//! It owns the textual rules only; the endpoint URL rules themselves (https, a host,
//! no fragment) are `spiffe_federation::endpoint::EndpointUrl`'s.

use serde::{Deserialize, Deserializer};
use spiffe_federation::endpoint::{EndpointUrl, UrlError};
use url::Url;

/// Why a URL was refused. No variant repeats the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlCheckError {
    /// A control character (a line break, a tab, …) or a space at either end, which the
    /// URL parser would silently remove.
    #[error(
        "the URL contains a control character (such as a line break or tab) or leading or trailing space; remove it"
    )]
    ControlCharacter,
    /// Not a valid bundle endpoint URL (SPIFFE Federation §5.2.1.1, §5.2.2.1).
    #[error(transparent)]
    Endpoint(#[from] UrlError),
    /// Not a URL at all.
    #[error("not a valid URL: {0}")]
    ProxyUnparseable(#[source] url::ParseError),
    /// A proxy scheme the HTTP client does not speak.
    #[error("a proxy URL must start with http:// or https://, not {scheme}://")]
    ProxyScheme {
        /// The scheme found.
        scheme: String,
    },
    /// A proxy URL with a user name or password.
    #[error(
        "the proxy URL must not include a user name or password (it is shown by the admin API); give proxy credentials in HTTPS_PROXY with proxy = \"env\""
    )]
    ProxyUserinfo,
    /// A proxy URL without a host, or with `///` where the host belongs.
    #[error("the proxy URL has no host")]
    ProxyNoHost,
}

/// A bundle endpoint URL, checked on its text and then by the protocol's rules.
///
/// # Errors
/// [`UrlCheckError::ControlCharacter`], or [`UrlCheckError::Endpoint`] naming the
/// rule broken (userinfo, no host, not https, …).
pub fn endpoint_url(raw: &str) -> Result<Url, UrlCheckError> {
    let url = endpoint_text(raw)?;
    Ok(EndpointUrl::from_url(url)?.as_url().clone())
}

/// The textual rules of [`endpoint_url`] only: no repaired text, no userinfo, a host
/// where `//` says one is. The configuration and the API body are read with these, and
/// the rest (https, a host, no fragment) is checked with the relationship's other
/// fields, naming the key.
///
/// # Errors
/// [`UrlCheckError::ControlCharacter`], or [`UrlCheckError::Endpoint`] with
/// `Unparseable`, `Userinfo` or `NoHost`.
pub fn endpoint_text(raw: &str) -> Result<Url, UrlCheckError> {
    check_text(raw)?;
    let url = Url::parse(raw).map_err(|source| UrlError::Unparseable { source })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Userinfo.into());
    }
    // The WHATWG parser reads `https:///b` as host `b`: refuse rather than guess.
    let authority = raw.split_once("://").map(|(_, rest)| rest);
    if authority.is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '\\', '?', '#'])) {
        return Err(UrlError::NoHost.into());
    }
    Ok(url)
}

/// A proxy URL: `http://host:port` or `https://host:port`, without credentials.
///
/// # Errors
/// [`UrlCheckError`] naming the rule broken.
pub fn proxy_url(raw: &str) -> Result<Url, UrlCheckError> {
    check_text(raw)?;
    let url = Url::parse(raw).map_err(UrlCheckError::ProxyUnparseable)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlCheckError::ProxyScheme {
            scheme: url.scheme().to_owned(),
        });
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlCheckError::ProxyUserinfo);
    }
    let authority = raw.split_once("://").map_or("", |(_, rest)| rest);
    if url.host().is_none() || authority.is_empty() || authority.starts_with(['/', '\\']) {
        return Err(UrlCheckError::ProxyNoHost);
    }
    Ok(url)
}

/// `text` with the userinfo of every `scheme://user:password@host` in it replaced by
/// `***`, for messages that quote input (a TOML error shows the offending line).
pub fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        // The authority ends at the first of these; userinfo is what precedes its last '@'.
        let end = after
            .find(['/', '?', '#', '"', '\'', '\n', ' ', '\t'])
            .unwrap_or(after.len());
        match after[..end].rfind('@') {
            Some(userinfo_end) => {
                out.push_str("***");
                rest = &after[userinfo_end..];
            }
            None => rest = after,
        }
    }
    out.push_str(rest);
    out
}

/// Control characters anywhere (the parser drops tabs and line breaks) and space at
/// either end (the parser trims it).
fn check_text(raw: &str) -> Result<(), UrlCheckError> {
    if raw.chars().any(char::is_control) || raw.trim() != raw {
        return Err(UrlCheckError::ControlCharacter);
    }
    Ok(())
}

/// serde: a bundle endpoint URL through [`endpoint_text`].
///
/// # Errors
/// The deserializer's error carrying [`UrlCheckError`]'s message.
pub fn deserialize_endpoint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Url>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|raw| endpoint_text(&raw).map_err(serde::de::Error::custom))
        .transpose()
}

/// serde: a list of bundle endpoint URLs through [`endpoint_text`].
///
/// # Errors
/// The deserializer's error naming the item and the rule broken.
pub fn deserialize_endpoints<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Url>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            endpoint_text(raw).map_err(|err| serde::de::Error::custom(format!("[{i}]: {err}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
                endpoint_url(raw),
                Err(UrlCheckError::ControlCharacter),
                "{raw:?}"
            );
            assert_eq!(
                proxy_url(raw),
                Err(UrlCheckError::ControlCharacter),
                "{raw:?}"
            );
        }
        assert_eq!(
            endpoint_url("https:///w.example/"),
            Err(UrlCheckError::Endpoint(UrlError::NoHost))
        );
        assert_eq!(
            endpoint_url("https://w.example/b").unwrap().as_str(),
            "https://w.example/b"
        );
    }

    #[test]
    fn userinfo_is_refused_without_repeating_it() {
        let err = endpoint_url("https://alice:s3cret@w.example/").unwrap_err();
        assert_eq!(err, UrlCheckError::Endpoint(UrlError::Userinfo));
        assert!(!err.to_string().contains("s3cret"));
        let err = proxy_url("http://alice:s3cret@proxy:3128").unwrap_err();
        assert_eq!(err, UrlCheckError::ProxyUserinfo);
        assert!(!err.to_string().contains("s3cret"));
    }

    #[test]
    fn only_http_and_https_proxies() {
        assert!(proxy_url("http://proxy.internal:3128").is_ok());
        assert!(proxy_url("https://proxy.internal:3129/").is_ok());
        for (raw, scheme) in [
            ("socks5://proxy:1080", "socks5"),
            ("file:///etc/passwd", "file"),
            ("ftp://proxy/", "ftp"),
        ] {
            assert_eq!(
                proxy_url(raw),
                Err(UrlCheckError::ProxyScheme {
                    scheme: scheme.to_owned()
                })
            );
        }
        assert_eq!(
            proxy_url("http:///proxy:3128"),
            Err(UrlCheckError::ProxyNoHost)
        );
        assert!(matches!(
            proxy_url("proxy:3128"),
            Err(UrlCheckError::ProxyScheme { .. })
        ));
    }

    #[test]
    fn userinfo_is_redacted_from_quoted_text() {
        assert_eq!(
            redact_userinfo("3 | url = \"https://alice:s3cret@w.example/x\"\n  |       ^"),
            "3 | url = \"https://***@w.example/x\"\n  |       ^"
        );
        assert_eq!(
            redact_userinfo("a http://p:1/ and https://u@h and mailto:x@y"),
            "a http://p:1/ and https://***@h and mailto:x@y"
        );
    }
}
