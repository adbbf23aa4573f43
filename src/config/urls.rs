//! Reading the URLs an operator gives a relationship, as serde adapters over the
//! library's rules, and taking passwords out of quoted input.
//!
//! Every endpoint URL rule is `spiffe_federation::endpoint::EndpointUrl::parse`'s
//! (https, no userinfo, a host, no fragment, and no text the WHATWG parser would
//! repair: a control character, a space at either end, `https:///x`), and every
//! proxy rule is `spiffe_federation::endpoint::ProxySetting`'s. The configuration and
//! the admin API body read `url` and `urls` with [`deserialize_endpoint`] and
//! [`deserialize_endpoints`]: a URL refused on its text (or for userinfo) is refused
//! as it is read, on the line that holds it and without repeating it (it may hold a
//! password), while a URL whose only fault is its scheme or a fragment is kept, for
//! `config::validate_relationship_with` to refuse naming the key
//! (`federation[0].url`). [`redact_userinfo`] takes userinfo out of messages written
//! by others (the TOML reader quotes the offending line).

use serde::{Deserialize, Deserializer};
use spiffe_federation::endpoint::{EndpointUrl, UrlError};
use url::Url;

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

/// An endpoint URL as a relationship's `url` or `urls` is read: refused for what
/// [`EndpointUrl::parse`] refuses, except a wrong scheme or a fragment, which the
/// relationship's validation refuses naming the key (the URL has no userinfo by then,
/// so that message may show it).
fn read_endpoint(raw: &str) -> Result<Url, UrlError> {
    match EndpointUrl::parse(raw) {
        Ok(url) => Ok(url.into()),
        Err(UrlError::NotHttps { .. } | UrlError::Fragment) => {
            Url::parse(raw).map_err(|source| UrlError::Unparseable { source })
        }
        Err(err) => Err(err),
    }
}

/// serde: a bundle endpoint URL, by [`EndpointUrl::parse`] (see the module
/// documentation for the refusals left to validation).
///
/// # Errors
/// The deserializer's error carrying the [`UrlError`]'s message.
pub fn deserialize_endpoint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Url>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|raw| read_endpoint(&raw).map_err(serde::de::Error::custom))
        .transpose()
}

/// serde: a list of bundle endpoint URLs, each as [`deserialize_endpoint`] reads one.
///
/// # Errors
/// The deserializer's error naming the item and the rule broken.
pub fn deserialize_endpoints<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Url>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            read_endpoint(raw).map_err(|err| serde::de::Error::custom(format!("[{i}]: {err}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_and_fragment_are_left_to_validation_the_text_is_not() {
        for raw in ["http://w.example/", "https://w.example/#frag"] {
            assert_eq!(read_endpoint(raw).unwrap().as_str(), raw);
        }
        for (raw, refused) in [
            ("https://w.example/a\nb", UrlError::ControlCharacter),
            ("https:///w.example/", UrlError::NoHost),
            ("http://u:s3cret@w.example/", UrlError::Userinfo),
        ] {
            assert_eq!(read_endpoint(raw), Err(refused), "{raw:?}");
        }
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
