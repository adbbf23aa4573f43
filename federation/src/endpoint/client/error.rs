//! [`FetchError`]: why one bundle fetch failed, and the mapping from HTTP and TLS
//! client errors to it.
//!
//! Owns the classification (connect, TLS, SVID, HTTP) of `reqwest` errors. It does not
//! decide what a failure means for the stored bundle: the caller keeps its last good
//! bundle on any error (`docs/conformance.md` O-section decisions).

use std::error::Error as StdError;
use std::time::Duration;

use url::Url;

use super::tls::svid_error;
use crate::bundle::BundleError;
use crate::endpoint::UrlError;
use crate::trust_domain::{SpiffeId, TrustDomain};
use crate::verify::VerifyError;

/// Why a bundle fetch failed. Every variant that involves a request names its URL
/// (the configured one or a redirect hop), so that the caller can log it (EXT-8).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// An `https_spiffe` relationship whose endpoint ID's trust domain has no bundle
    /// yet: the client cannot authenticate the endpoint (SPIFFE Federation §5.2.2.2).
    #[error("no bundle for trust domain {} is known, so endpoint {endpoint_id} cannot be authenticated", endpoint_id.trust_domain())]
    NoEndpointBundle {
        /// The endpoint SPIFFE ID of the relationship.
        endpoint_id: SpiffeId,
    },
    /// The bundle given for an `https_spiffe` endpoint is not the bundle of the
    /// endpoint ID's trust domain; only that bundle may vouch for it (§7.3).
    #[error(
        "endpoint {endpoint_id} must be verified with the bundle of its own trust domain, not {bundle}'s"
    )]
    EndpointBundleMismatch {
        /// The endpoint SPIFFE ID.
        endpoint_id: SpiffeId,
        /// The trust domain of the bundle that was given.
        bundle: TrustDomain,
    },
    /// `https_web` with no usable root certificate: system roots off or none found, and
    /// no usable extra root.
    #[error(
        "no trusted root certificate for {url}: system roots {system} usable, {extra} usable extra roots"
    )]
    NoTrustAnchors {
        /// The configured URL.
        url: Url,
        /// How many system roots could be used.
        system: usize,
        /// How many extra roots could be used.
        extra: usize,
    },
    /// Loading the operating system's roots did not complete (the loader task
    /// panicked or was cancelled).
    #[error("loading the system's root certificates failed: {source}")]
    SystemRoots {
        /// The task error.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The explicit proxy URL is not usable by the HTTP client.
    #[error("the proxy URL is not usable: {}", cause(source))]
    InvalidProxy {
        /// The HTTP client's reason.
        #[source]
        source: reqwest::Error,
    },
    /// The HTTP client could not be built from the TLS and proxy settings.
    #[error("the HTTP client could not be built: {}", cause(source))]
    Client {
        /// The HTTP client's reason.
        #[source]
        source: reqwest::Error,
    },
    /// The TLS client configuration could not be built (no protocol version the
    /// crypto provider supports).
    #[error("the TLS client configuration could not be built: {source}")]
    TlsConfig {
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
    /// No TCP connection to the host (or proxy) could be made.
    #[error("cannot connect to {url}: {}", cause(source))]
    Connect {
        /// The URL being fetched.
        url: Url,
        /// The HTTP client's error, with the cause chain.
        #[source]
        source: reqwest::Error,
    },
    /// The TCP connection was not established within the connect timeout.
    #[error("connecting to {url} timed out after {}", seconds(*after))]
    ConnectTimeout {
        /// The URL being fetched.
        url: Url,
        /// The connect timeout.
        after: Duration,
    },
    /// The TLS handshake failed: for `https_web`, typically an untrusted CA, an expired
    /// certificate or a name mismatch (§5.2.1.4); or a protocol error or an alert.
    #[error("TLS with {url} failed: {source}")]
    Tls {
        /// The URL being fetched.
        url: Url,
        /// rustls's error (boxed: it is large).
        #[source]
        source: Box<rustls::Error>,
    },
    /// The `https_spiffe` server did not present a valid X509-SVID for the endpoint ID
    /// (§5.2.2.4): another ID, a chain to a CA not in the bundle, an expired SVID...
    /// The expected endpoint ID is the caller's (it is in [`VerifyError::UnexpectedId`]
    /// when another ID was presented).
    #[error("{url} did not present a valid X509-SVID for the endpoint ID: {source}")]
    Svid {
        /// The URL being fetched.
        url: Url,
        /// Which X509-SVID check failed (boxed: it is large).
        #[source]
        source: Box<VerifyError>,
    },
    /// The request failed after connecting (HTTP protocol error, connection reset).
    #[error("the request to {url} failed: {}", cause(source))]
    Http {
        /// The URL being fetched.
        url: Url,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The response status is not 200 (a 3xx is only followed as a redirect; any
    /// other status fails even if the body looks like a bundle, EXT-1).
    #[error("{url} answered HTTP {status}")]
    Status {
        /// The URL that answered.
        url: Url,
        /// The HTTP status code.
        status: u16,
    },
    /// A redirect, but redirects are turned off for this relationship (§7.5.1).
    #[error("{url} redirects (HTTP {status}) to {location:?}, and redirects are turned off")]
    RedirectNotAllowed {
        /// The URL that answered.
        url: Url,
        /// The redirect status.
        status: u16,
        /// The `Location` header as sent (empty if absent).
        location: String,
    },
    /// A redirect status without a `Location` header.
    #[error("{url} answered HTTP {status} without a Location header")]
    MissingLocation {
        /// The URL that answered.
        url: Url,
        /// The redirect status.
        status: u16,
    },
    /// The redirect target is not a valid bundle endpoint URL (§5.2.1.4, §5.2.2.4: a
    /// redirect is followed only to a URL that meets every endpoint URL rule).
    #[error("{url} redirects to {location:?}, which is not a valid endpoint URL: {reason}")]
    InvalidRedirect {
        /// The URL that answered.
        url: Url,
        /// The `Location` header as sent (lossily decoded).
        location: Box<str>,
        /// The rule the target breaks (boxed: keeps the error small).
        #[source]
        reason: Box<UrlError>,
    },
    /// More redirects than allowed in one fetch.
    #[error("more than {limit} redirects from {url}")]
    TooManyRedirects {
        /// The configured URL.
        url: Url,
        /// The limit.
        limit: u8,
        /// The hops followed before giving up.
        hops: Vec<Url>,
    },
    /// The body is larger than the limit (EXT-2). The connection is dropped without
    /// reading the rest.
    #[error("the body from {url} is larger than the limit of {limit} bytes")]
    BodyTooLarge {
        /// The URL that answered.
        url: Url,
        /// The limit in bytes.
        limit: usize,
        /// The `Content-Length` the server declared, if any.
        declared: Option<u64>,
    },
    /// Reading the body failed.
    #[error("reading the body from {url} failed: {}", cause(source))]
    Body {
        /// The URL that answered.
        url: Url,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The body is not a usable SPIFFE bundle for the configured trust domain.
    #[error("the bundle for {trust_domain} from {url} is refused: {source}")]
    Bundle {
        /// The URL that answered.
        url: Url,
        /// The configured trust domain the bundle was parsed for.
        trust_domain: TrustDomain,
        /// Why the document was refused (boxed: it is large).
        #[source]
        source: Box<BundleError>,
    },
    /// The whole fetch (connections, redirects, body) did not finish within the total
    /// timeout (EXT-3).
    #[error("fetching {url} did not finish within {}", seconds(*after))]
    Timeout {
        /// The configured URL.
        url: Url,
        /// The total timeout.
        after: Duration,
    },
}

impl FetchError {
    /// A stable, machine-readable name for the failure, for status views and
    /// alerts (the message says the rest).
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoEndpointBundle { .. } => "no_endpoint_bundle",
            Self::EndpointBundleMismatch { .. } => "endpoint_bundle_mismatch",
            Self::NoTrustAnchors { .. } => "no_trust_anchors",
            Self::SystemRoots { .. } => "system_roots",
            Self::InvalidProxy { .. } => "invalid_proxy",
            Self::Client { .. } | Self::TlsConfig { .. } => "client_config",
            Self::Connect { .. } => "connect",
            Self::ConnectTimeout { .. } => "connect_timeout",
            Self::Tls { .. } => "tls",
            Self::Svid { .. } => "endpoint_svid",
            Self::Http { .. } | Self::Body { .. } => "http",
            Self::Status { .. } => "http_status",
            Self::RedirectNotAllowed { .. } => "redirect_not_allowed",
            Self::MissingLocation { .. } | Self::InvalidRedirect { .. } => "invalid_redirect",
            Self::TooManyRedirects { .. } => "too_many_redirects",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::Bundle { .. } => "invalid_bundle",
            Self::Timeout { .. } => "timeout",
        }
    }
}

/// What an HTTP client error's own message leaves out: `reqwest` says only "error
/// sending request for url (…)", and the reason an operator can act on (a DNS name
/// that does not resolve, a refused connection, a reset) is at the end of its cause
/// chain. The last two causes (`dns error: failed to lookup address information: …`,
/// `tcp connect error: Connection refused (os error 111)`), or reqwest's own message
/// when it has no cause.
pub(crate) fn cause(err: &reqwest::Error) -> String {
    let mut causes: Vec<String> = Vec::new();
    let mut current = StdError::source(err);
    while let Some(err) = current {
        let text = err.to_string();
        // An io::Error that wraps another error shows that error's text and skips it
        // as a source; either way each text is said once.
        if !text.is_empty() && !causes.iter().any(|c| c.contains(&text)) {
            causes.push(text);
        }
        current = err.source();
    }
    match causes.len() {
        0 => err.to_string(),
        n => causes[n.saturating_sub(2)..].join(": "),
    }
}

/// A duration as an operator reads it: `30s`, `2.5s`.
fn seconds(duration: Duration) -> String {
    format!("{}s", duration.as_secs_f64())
}

/// Map a `reqwest` send error to the variant an operator can act on.
pub(super) fn classify_send(
    err: reqwest::Error,
    url: &Url,
    connect_timeout: Duration,
) -> FetchError {
    if let Some(tls) = find_rustls_error(&err) {
        if let Some(verify) = svid_error(tls) {
            return FetchError::Svid {
                url: url.clone(),
                source: Box::new(verify.clone()),
            };
        }
        return FetchError::Tls {
            url: url.clone(),
            source: Box::new(tls.clone()),
        };
    }
    if err.is_connect() {
        if err.is_timeout() {
            return FetchError::ConnectTimeout {
                url: url.clone(),
                after: connect_timeout,
            };
        }
        return FetchError::Connect {
            url: url.clone(),
            source: err,
        };
    }
    FetchError::Http {
        url: url.clone(),
        source: err,
    }
}

/// The rustls error somewhere in the cause chain. `io::Error::source` skips the error
/// it wraps (it returns that error's source), so wrapped errors are opened by hand.
fn find_rustls_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(err);
    while let Some(err) = current {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            let inner: &(dyn StdError + 'static) = inner;
            if let Some(tls) = find_rustls_error(inner) {
                return Some(tls);
            }
        }
        current = err.source();
    }
    None
}
