//! The HTTP side of a bundle endpoint server: a request's response, computed from the
//! request head and the bundle to serve, with no framework.
//!
//! Owns the response rules (SPIFFE Federation §5.2.1.3, §5.2.2.3; fedgw conformance
//! SRV-1..SRV-5, EXT-6), the pre-serialised [`ServedBundle`] and the exact-match
//! [`Routes`] table. It does not own reading the request body (none is read), TLS,
//! connection handling, or choosing which bundle is current (the caller passes the
//! latest one on every request, so nothing here can serve a stale copy: SRV-2).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, ETAG, HeaderValue, IF_NONE_MATCH,
};
use http::{Method, Response, StatusCode, request};

use super::ServerError;
use crate::bundle::Bundle;

/// The refresh hint served when a bundle has none, and the longest `Cache-Control`
/// max-age served: five minutes, the default TDB §6.1 and SPIFFE Federation §4.1
/// recommend (BUN-6, EXT-6).
const DEFAULT_REFRESH_HINT: Duration = Duration::from_secs(300);

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// A bundle as served: the SPIFFE bundle JSON, its entity tag and cache lifetime,
/// computed once when the bundle changes rather than on every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedBundle {
    json: Bytes,
    etag: HeaderValue,
    cache_control: HeaderValue,
    max_age: Duration,
}

impl ServedBundle {
    /// Serialise `bundle` for serving.
    ///
    /// - The document is [`Bundle::to_json`] (UTF-8 JSON, SRV-3). A bundle without
    ///   `spiffe_refresh_hint` is served with the recommended default of 300 s (TDB
    ///   §4.1.2 SHOULD set it; §6.1 recommends five minutes). A missing
    ///   `spiffe_sequence` is not invented: the gateway's trust store assigns it.
    /// - The entity tag is strong: the SHA-256 of the document, in hex (RFC 9110
    ///   §8.8.3), so it changes whenever a byte of the body does.
    /// - `max-age` is the refresh hint, capped at 300 s: a shared cache may hold the
    ///   bundle no longer than clients are told to wait, and never so long that a key
    ///   rotation waits on it (SRV-2, EXT-6).
    pub fn new(bundle: &Bundle) -> Self {
        let json = match bundle.refresh_hint() {
            Some(_) => bundle.to_json(),
            None => {
                let mut with_hint = bundle.clone();
                with_hint.set_refresh_hint(Some(DEFAULT_REFRESH_HINT));
                with_hint.to_json()
            }
        };
        let max_age = bundle
            .refresh_hint()
            .map_or(DEFAULT_REFRESH_HINT, |hint| hint.min(DEFAULT_REFRESH_HINT));

        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &json);
        let mut etag = String::with_capacity(2 + 2 * digest.as_ref().len());
        etag.push('"');
        for byte in digest.as_ref() {
            for nibble in [byte >> 4, byte & 0x0f] {
                etag.push(char::from(HEX_DIGITS[usize::from(nibble)]));
            }
        }
        etag.push('"');

        Self {
            json: Bytes::from(json),
            etag: ascii_header(etag),
            cache_control: ascii_header(format!("max-age={}", max_age.as_secs())),
            max_age,
        }
    }

    /// The SPIFFE bundle document served as the body.
    pub fn json(&self) -> Bytes {
        self.json.clone()
    }

    /// The strong entity tag, with its quotes (`"…"`), as sent in `ETag`.
    pub fn etag(&self) -> &str {
        // Built from quotes and hex digits only.
        self.etag.to_str().unwrap_or_default()
    }

    /// The `Cache-Control: max-age` served.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }
}

/// The response to a request for a bundle endpoint path.
///
/// `bundle` is what the caller's routing found for `parts.uri.path()`: `None` when no
/// bundle is served there. Rules:
/// - no bundle: `404` with a JSON error body;
/// - a method other than GET or HEAD: `405` with `Allow: GET, HEAD` (SRV-5; bundle
///   endpoints are read-only);
/// - `If-None-Match` matching the entity tag (weak comparison, or `*`): `304` with
///   `ETag` and `Cache-Control` and no body (RFC 9110 §13.1.2, §15.4.5; EXT-6);
/// - otherwise `200` with `Content-Type: application/json` exactly (SRV-4), the UTF-8
///   document (SRV-3), `ETag`, `Cache-Control: max-age=N` (EXT-6) and
///   `Content-Length`; HEAD gets the same headers and an empty body.
///
/// No header is required: `Authorization`, cookies and client certificates are never
/// read (SRV-1).
pub fn respond(parts: &request::Parts, bundle: Option<&ServedBundle>) -> Response<Bytes> {
    let head = parts.method == Method::HEAD;
    let Some(bundle) = bundle else {
        let mut response = json_error(
            StatusCode::NOT_FOUND,
            r#"{"error":"no bundle is served at this path"}"#,
        );
        // A HEAD response never has a body (RFC 9110 §9.3.2); over HTTP/2 one would
        // be a protocol error. The headers say what a GET would get.
        if head {
            *response.body_mut() = Bytes::new();
        }
        return response;
    };
    if parts.method != Method::GET && !head {
        let mut response = json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            r#"{"error":"method not allowed; bundle endpoints serve GET and HEAD"}"#,
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }

    let mut response = Response::new(Bytes::new());
    let headers = response.headers_mut();
    headers.insert(ETAG, bundle.etag.clone());
    headers.insert(CACHE_CONTROL, bundle.cache_control.clone());
    if if_none_match(parts, bundle.etag()) {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        return response;
    }
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(bundle.json.len()));
    if !head {
        *response.body_mut() = bundle.json.clone();
    }
    response
}

/// An exact-match table from request path to the key of what is served there (a
/// trust domain, for the gateway).
///
/// Paths are compared byte for byte with the request's path (`parts.uri.path()`, the
/// query excluded): nothing is normalised, decoded or case-folded, so `/a` and `/a/`
/// are different paths (SRV-5: the path is the operator's choice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes<K> {
    paths: BTreeMap<String, K>,
}

impl<K> Routes<K> {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            paths: BTreeMap::new(),
        }
    }

    /// Serve `key` at `path`; returns the key `path` was routed to before.
    ///
    /// # Errors
    /// [`ServerError::InvalidRoutePath`] if `path` does not start with `/`, or holds a
    /// `?`, `#`, whitespace or control character (it could never equal a request path).
    pub fn insert(&mut self, path: &str, key: K) -> Result<Option<K>, ServerError> {
        let valid = path.starts_with('/')
            && !path
                .chars()
                .any(|c| c == '?' || c == '#' || c.is_whitespace() || c.is_control());
        if !valid {
            return Err(ServerError::InvalidRoutePath {
                path: path.to_owned(),
            });
        }
        Ok(self.paths.insert(path.to_owned(), key))
    }

    /// The key served at exactly `path`, if any.
    pub fn route(&self, path: &str) -> Option<&K> {
        self.paths.get(path)
    }

    /// Every path and its key, in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &K)> {
        self.paths.iter().map(|(path, key)| (path.as_str(), key))
    }
}

impl<K> Default for Routes<K> {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether any `If-None-Match` field matches `etag` (RFC 9110 §13.1.2: `*`, or an
/// entity tag equal under weak comparison). Unreadable fields match nothing.
fn if_none_match(parts: &request::Parts, etag: &str) -> bool {
    parts
        .headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

fn json_error(status: StatusCode, body: &'static str) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from_static(body.as_bytes()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    response
}

/// A header value from a string made only of visible ASCII.
#[expect(
    clippy::expect_used,
    reason = "callers build the value from quotes, digits, letters and `=`, all valid header bytes"
)]
fn ascii_header(value: String) -> HeaderValue {
    HeaderValue::try_from(value).expect("visible ASCII is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: Method, if_none_match: Option<&str>) -> request::Parts {
        let mut builder = http::Request::builder().method(method).uri("/");
        if let Some(value) = if_none_match {
            builder = builder.header(IF_NONE_MATCH, value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn served() -> ServedBundle {
        ServedBundle::new(&Bundle::new("td.example".parse().unwrap()))
    }

    #[test]
    fn weak_and_listed_tags_match() {
        let bundle = served();
        let etag = bundle.etag().to_owned();
        for header in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"x\", {etag}"),
            "*".to_owned(),
        ] {
            let response = respond(&parts(Method::GET, Some(&header)), Some(&bundle));
            assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{header}");
            assert!(response.body().is_empty());
        }
        let response = respond(&parts(Method::GET, Some("\"other\"")), Some(&bundle));
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[test]
    fn head_has_length_and_no_body() {
        let bundle = served();
        let response = respond(&parts(Method::HEAD, None), Some(&bundle));
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.body().is_empty());
        assert_eq!(
            response.headers()[CONTENT_LENGTH],
            bundle.json().len().to_string().as_str()
        );
    }

    #[test]
    fn head_of_an_unknown_path_is_404_without_body() {
        let response = respond(&parts(Method::HEAD, None), None);
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(response.body().is_empty());
        let get = respond(&parts(Method::GET, None), None);
        assert_eq!(
            response.headers()[CONTENT_LENGTH],
            get.body().len().to_string().as_str()
        );
    }

    #[test]
    fn missing_hint_is_served_as_default() {
        let bundle = served();
        assert_eq!(bundle.max_age(), DEFAULT_REFRESH_HINT);
        assert!(
            std::str::from_utf8(&bundle.json())
                .unwrap()
                .contains(r#""spiffe_refresh_hint":300"#)
        );
    }

    #[test]
    fn route_paths_must_be_absolute() {
        let mut routes = Routes::new();
        assert_eq!(routes.insert("/", 1), Ok(None));
        assert_eq!(routes.insert("/", 2), Ok(Some(1)));
        for bad in ["", "x", "/a?b", "/a#b", "/a b"] {
            assert!(matches!(
                routes.insert(bad, 3),
                Err(ServerError::InvalidRoutePath { .. })
            ));
        }
        assert_eq!(routes.route("/"), Some(&2));
        assert_eq!(routes.route("//"), None);
    }
}
