//! Fetching one bundle from one bundle endpoint (SPIFFE Federation §5.2.1.4 and
//! §5.2.2.4).
//!
//! Owns one fetch: TLS per profile (`tls`), the GET request, redirects, limits on
//! size and time, and parsing the body as the bundle of the **configured** trust
//! domain. It does not own mirrors or retries (the caller tries its list of URLs),
//! scheduling, acceptance policy (sequence, rollback) or storage, and it never
//! remembers anything between fetches: a redirect, even a permanent one, applies to
//! the fetch that saw it only (§5.2.1.4, §7.5.1).
//!
//! # Rules, and where they are enforced
//! - **The trust domain is never inferred** (§5.2.1.4, §5.2.2.4): the body is parsed
//!   for [`FetchRequest::trust_domain`], whatever the URL host or the document say.
//! - **One profile, no fallback** (§7.2): an `https_spiffe` failure is final, and so is
//!   an `https_web` one.
//! - **`https_web`**: the system roots (unless turned off) plus the extra roots, and
//!   RFC 6125 name checks against subjectAltName only (no Common Name fallback).
//! - **`https_spiffe`**: the server must present a valid X509-SVID for the endpoint ID,
//!   chaining to the bundle of that ID's trust domain; no hostname check.
//! - **Redirects** (§5.2.1.4, §5.2.2.4, §7.5.1): 301, 302, 303, 307 and 308 are
//!   followed, at most [`FetchLimits::max_redirects`] times, only to a URL that is a
//!   valid endpoint URL (`https`, no userinfo), with the same TLS checks (the same
//!   SPIFFE ID under `https_spiffe`); [`Fetched::redirects`] lists the hops for the
//!   audit log and is not meant to be stored.
//! - **Status**: only 200 is a success (EXT-1).
//! - **Limits**: a body over [`FetchLimits::max_body_bytes`] is refused without reading
//!   the rest (EXT-2); the whole fetch runs under [`FetchLimits::total_timeout`] (EXT-3).
//! - **Proxy**: [`ProxySetting`] per relationship; by default `HTTPS_PROXY`/`NO_PROXY`
//!   (EXT-5).
//!
//! # Example
//! ```no_run
//! use spiffe_federation::endpoint::client::{FetchRequest, Fetcher, ServerAuth};
//! use spiffe_federation::endpoint::{EndpointUrl, FetchLimits, ProxySetting, WebOptions};
//! use spiffe_federation::TrustDomain;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let fetcher = Fetcher::new();
//! let trust_domain: TrustDomain = "example.org".parse()?;
//! let url: EndpointUrl = "https://example.org/bundle.json".parse()?;
//! let web = WebOptions::default();
//! let fetched = fetcher
//!     .fetch(&FetchRequest {
//!         trust_domain: &trust_domain,
//!         url: &url,
//!         auth: ServerAuth::Web(&web),
//!         limits: &FetchLimits::default(),
//!         proxy: &ProxySetting::FromEnvironment,
//!     })
//!     .await?;
//! assert_eq!(fetched.parsed.bundle.trust_domain(), &trust_domain);
//! # Ok(())
//! # }
//! ```

mod error;
mod tls;

pub use self::tls::SpiffeServerVerifier;

use std::sync::Arc;

use bytes::Bytes;
use http::{StatusCode, header};
use reqwest::redirect;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::CertificateDer;
use tokio::sync::OnceCell;
use url::{Host, Url};

pub use self::error::FetchError;
use crate::bundle::{Bundle, Parsed};
use crate::endpoint::{EndpointUrl, FetchLimits, Profile, ProxySetting, UrlError, WebOptions};
use crate::trust_domain::{SpiffeId, TrustDomain};

/// Fetches bundles. Holds what fetches share: the crypto provider (aws-lc-rs) and the
/// operating system's root certificates, loaded once, on first use, off the async
/// reactor. Every fetch builds its own HTTP client, so nothing (connections, redirect
/// targets, cookies) carries over from one fetch to the next.
#[derive(Debug)]
pub struct Fetcher {
    provider: Arc<CryptoProvider>,
    system_roots: SystemRoots,
}

#[derive(Debug)]
enum SystemRoots {
    /// Loaded from the operating system on first use.
    Native(OnceCell<Arc<[CertificateDer<'static>]>>),
    /// Given by the caller.
    Fixed(Arc<[CertificateDer<'static>]>),
}

/// One fetch: which trust domain, from where, authenticated how, within which limits.
#[derive(Debug, Clone, Copy)]
pub struct FetchRequest<'a> {
    /// The trust domain the endpoint serves, as configured (never derived from the URL
    /// or the response, §5.2.1.4): the body is parsed as this domain's bundle.
    pub trust_domain: &'a TrustDomain,
    /// The configured endpoint URL.
    pub url: &'a EndpointUrl,
    /// How the server is authenticated.
    pub auth: ServerAuth<'a>,
    /// Size, time and redirect limits.
    pub limits: &'a FetchLimits,
    /// Which proxy to use.
    pub proxy: &'a ProxySetting,
}

/// How the server of one fetch is authenticated: the [`Profile`] with what it needs.
#[derive(Debug, Clone, Copy)]
pub enum ServerAuth<'a> {
    /// `https_web`.
    Web(&'a WebOptions),
    /// `https_spiffe`, with the bundle of the endpoint ID's trust domain.
    Spiffe(SpiffeEndpoint<'a>),
}

/// An `https_spiffe` endpoint ID and the bundle of its trust domain: the pair a client
/// must hold before it can fetch (§5.2.2.2). Built only by [`SpiffeEndpoint::new`],
/// which checks that they belong together.
#[derive(Debug, Clone, Copy)]
pub struct SpiffeEndpoint<'a> {
    id: &'a SpiffeId,
    bundle: &'a Bundle,
}

/// A successful fetch, with what an audit log needs (EXT-8).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Fetched {
    /// The bundle, parsed for the configured trust domain, with what was left out.
    pub parsed: Parsed,
    /// The URL that served the body: the configured URL, or the last redirect target.
    pub final_url: Url,
    /// The redirect targets followed, in order; empty without redirects. For logging
    /// only: the next fetch starts from the configured URL again (§5.2.1.4).
    pub redirects: Vec<Url>,
    /// Who served the body, as authenticated by TLS.
    pub peer: PeerIdentity,
    /// The HTTP status of the final response (always 200).
    pub status: u16,
    /// The body's length in bytes.
    pub body_len: usize,
}

/// The identity a server was authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerIdentity {
    /// `https_web`: the final URL's host, which the server certificate's SANs matched.
    Web(Host<String>),
    /// `https_spiffe`: the endpoint SPIFFE ID the server's X509-SVID carries.
    Spiffe(SpiffeId),
}

impl Default for Fetcher {
    fn default() -> Self {
        Self::new()
    }
}

impl Fetcher {
    /// A fetcher that trusts the operating system's roots for `https_web` (loaded on
    /// first use; certificates that fail to load are skipped).
    pub fn new() -> Self {
        Self {
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            system_roots: SystemRoots::Native(OnceCell::new()),
        }
    }

    /// A fetcher that uses `roots` wherever the operating system's roots would be used
    /// ([`WebOptions::system_roots`]): for hosts without a usable trust store, and for
    /// tests.
    pub fn with_system_roots(roots: Vec<CertificateDer<'static>>) -> Self {
        Self {
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            system_roots: SystemRoots::Fixed(roots.into()),
        }
    }

    /// Fetch the bundle at `request.url` once, following redirects within the limits.
    ///
    /// # Errors
    /// A [`FetchError`] naming the step that failed and the URL it failed at: the
    /// setup ([`EndpointBundleMismatch`](FetchError::EndpointBundleMismatch),
    /// [`NoTrustAnchors`](FetchError::NoTrustAnchors), ...), the connection
    /// ([`Connect`](FetchError::Connect), [`Tls`](FetchError::Tls),
    /// [`Svid`](FetchError::Svid)), the response ([`Status`](FetchError::Status), the
    /// redirect variants, [`BodyTooLarge`](FetchError::BodyTooLarge)), the document
    /// ([`Bundle`](FetchError::Bundle)), or the deadline
    /// ([`Timeout`](FetchError::Timeout)).
    pub async fn fetch(&self, request: &FetchRequest<'_>) -> Result<Fetched, FetchError> {
        let after = request.limits.total_timeout;
        tokio::time::timeout(after, self.fetch_within_deadline(request))
            .await
            .unwrap_or_else(|_elapsed| {
                Err(FetchError::Timeout {
                    url: request.url.as_url().clone(),
                    after,
                })
            })
    }

    async fn fetch_within_deadline(
        &self,
        request: &FetchRequest<'_>,
    ) -> Result<Fetched, FetchError> {
        let tls = match request.auth {
            ServerAuth::Web(options) => self.web_tls(options, request.url).await?,
            ServerAuth::Spiffe(endpoint) => {
                tls::spiffe_config(&self.provider, endpoint.id, endpoint.bundle)
                    .map_err(|source| FetchError::TlsConfig { source })?
            }
        };
        let client = http_client(tls, request.limits, request.proxy)?;
        let endpoint_id = match request.auth {
            ServerAuth::Web(_) => None,
            ServerAuth::Spiffe(endpoint) => Some(endpoint.id),
        };

        let limits = request.limits;
        let mut url = request.url.clone();
        let mut redirects = Vec::new();
        let response = loop {
            let response = client
                .get(url.as_url().clone())
                .header(header::ACCEPT, "application/json")
                .send()
                .await
                .map_err(|err| error::classify_send(err, url.as_url(), limits.connect_timeout))?;
            let status = response.status();
            if !is_redirect(status) {
                break response;
            }
            let next = redirect_target(&response, &url, limits)?;
            if redirects.len() >= usize::from(limits.max_redirects) {
                return Err(FetchError::TooManyRedirects {
                    url: request.url.as_url().clone(),
                    limit: limits.max_redirects,
                    hops: redirects,
                });
            }
            redirects.push(next.as_url().clone());
            url = next;
        };

        let final_url = url.as_url().clone();
        if response.status() != StatusCode::OK {
            return Err(FetchError::Status {
                url: final_url,
                status: response.status().as_u16(),
            });
        }
        let body = read_body(response, limits.max_body_bytes, &final_url).await?;
        let parsed = Bundle::parse_with_limit(request.trust_domain, &body, limits.max_body_bytes)
            .map_err(|source| FetchError::Bundle {
            url: final_url.clone(),
            trust_domain: request.trust_domain.clone(),
            source: Box::new(source),
        })?;
        let peer = match endpoint_id {
            Some(id) => PeerIdentity::Spiffe(id.clone()),
            None => PeerIdentity::Web(url.host().to_owned()),
        };
        Ok(Fetched {
            parsed,
            final_url,
            redirects,
            peer,
            status: StatusCode::OK.as_u16(),
            body_len: body.len(),
        })
    }

    /// The `https_web` TLS configuration: system roots (if enabled) plus extra roots.
    async fn web_tls(
        &self,
        options: &WebOptions,
        url: &EndpointUrl,
    ) -> Result<rustls::ClientConfig, FetchError> {
        let mut roots = RootCertStore::empty();
        let system = if options.system_roots {
            let certs = self.system_roots().await?;
            roots.add_parsable_certificates(certs.iter().cloned()).0
        } else {
            0
        };
        let extra = roots
            .add_parsable_certificates(options.extra_roots.iter().cloned())
            .0;
        if roots.is_empty() {
            return Err(FetchError::NoTrustAnchors {
                url: url.as_url().clone(),
                system,
                extra,
            });
        }
        tls::web_config(&self.provider, roots).map_err(|source| FetchError::TlsConfig { source })
    }

    async fn system_roots(&self) -> Result<Arc<[CertificateDer<'static>]>, FetchError> {
        match &self.system_roots {
            SystemRoots::Fixed(roots) => Ok(roots.clone()),
            SystemRoots::Native(cell) => cell
                .get_or_try_init(|| async {
                    // Reads files: keep it off the reactor. Errors for
                    // some certificates or directories leave out only those.
                    tokio::task::spawn_blocking(|| {
                        Arc::from(rustls_native_certs::load_native_certs().certs)
                    })
                    .await
                    .map_err(|source| FetchError::SystemRoots { source })
                })
                .await
                .cloned(),
        }
    }
}

impl<'a> ServerAuth<'a> {
    /// The authentication for a relationship's `profile`. Under `https_spiffe`,
    /// `bundle_of` is asked for the bundle of the endpoint ID's trust domain (from the
    /// caller's trust store, or the operator's bootstrap bundle).
    ///
    /// # Errors
    /// [`FetchError::NoEndpointBundle`] if `bundle_of` has none, and
    /// [`FetchError::EndpointBundleMismatch`] if it returns another domain's bundle.
    pub fn for_profile(
        profile: &'a Profile,
        bundle_of: impl FnOnce(&TrustDomain) -> Option<&'a Bundle>,
    ) -> Result<Self, FetchError> {
        match profile {
            Profile::HttpsWeb(options) => Ok(Self::Web(options)),
            Profile::HttpsSpiffe { endpoint_id } => {
                let bundle = bundle_of(endpoint_id.trust_domain()).ok_or_else(|| {
                    FetchError::NoEndpointBundle {
                        endpoint_id: endpoint_id.clone(),
                    }
                })?;
                SpiffeEndpoint::new(endpoint_id, bundle).map(Self::Spiffe)
            }
        }
    }
}

impl<'a> SpiffeEndpoint<'a> {
    /// Pair an endpoint SPIFFE ID with the bundle of its trust domain.
    ///
    /// # Errors
    /// [`FetchError::EndpointBundleMismatch`] if `bundle` is another trust domain's.
    pub fn new(id: &'a SpiffeId, bundle: &'a Bundle) -> Result<Self, FetchError> {
        if bundle.trust_domain() != id.trust_domain() {
            return Err(FetchError::EndpointBundleMismatch {
                endpoint_id: id.clone(),
                bundle: bundle.trust_domain().clone(),
            });
        }
        Ok(Self { id, bundle })
    }

    /// The endpoint SPIFFE ID.
    pub fn id(&self) -> &'a SpiffeId {
        self.id
    }

    /// The bundle of the endpoint ID's trust domain.
    pub fn bundle(&self) -> &'a Bundle {
        self.bundle
    }
}

/// One HTTP client for one fetch: the profile's TLS, no automatic redirects or
/// retries, the connect timeout and the proxy setting.
fn http_client(
    tls: rustls::ClientConfig,
    limits: &FetchLimits,
    proxy: &ProxySetting,
) -> Result<reqwest::Client, FetchError> {
    let builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .https_only(true)
        // Redirects are followed by hand, to check each target (§5.2.1.4) and count hops.
        .redirect(redirect::Policy::none())
        // One attempt per fetch: the caller owns retries (and SEC-2 counts handshakes).
        .retry(reqwest::retry::never())
        .referer(false)
        .connect_timeout(limits.connect_timeout)
        .user_agent(concat!("spiffe-federation/", env!("CARGO_PKG_VERSION")));
    let builder = match proxy {
        // reqwest reads HTTPS_PROXY, ALL_PROXY and NO_PROXY by default.
        ProxySetting::FromEnvironment => builder,
        ProxySetting::Off => builder.no_proxy(),
        ProxySetting::Url(url) => builder.proxy(
            reqwest::Proxy::all(url.as_str())
                .map_err(|source| FetchError::InvalidProxy { source })?,
        ),
    };
    builder
        .build()
        .map_err(|source| FetchError::Client { source })
}

/// The statuses followed as redirects (RFC 9110 §15.4); 300, 304 and 305 are not.
fn is_redirect(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    )
}

/// The checked target of a redirect response from `url`.
fn redirect_target(
    response: &reqwest::Response,
    url: &EndpointUrl,
    limits: &FetchLimits,
) -> Result<EndpointUrl, FetchError> {
    let status = response.status().as_u16();
    let location = response.headers().get(header::LOCATION);
    if !limits.follow_redirects {
        return Err(FetchError::RedirectNotAllowed {
            url: url.as_url().clone(),
            status,
            location: location
                .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
                .unwrap_or_default(),
        });
    }
    let Some(location) = location else {
        return Err(FetchError::MissingLocation {
            url: url.as_url().clone(),
            status,
        });
    };
    let invalid = |reason| FetchError::InvalidRedirect {
        url: url.as_url().clone(),
        location: String::from_utf8_lossy(location.as_bytes()).into(),
        reason: Box::new(reason),
    };
    let text = std::str::from_utf8(location.as_bytes()).map_err(|_| invalid(UrlError::NotUtf8))?;
    // RFC 9110 §10.2.2: a relative reference resolves against the request URL.
    let target = url
        .as_url()
        .join(text)
        .map_err(|source| invalid(UrlError::Unparseable { source }))?;
    EndpointUrl::from_url(target).map_err(invalid)
}

/// Read the body, refusing it as soon as it exceeds `limit` (EXT-2): first by its
/// declared length, then by what arrives. Dropping the response closes the connection.
async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
    url: &Url,
) -> Result<Vec<u8>, FetchError> {
    let declared = response.content_length();
    let too_large = || FetchError::BodyTooLarge {
        url: url.clone(),
        limit,
        declared,
    };
    let capacity = match declared {
        Some(length) => usize::try_from(length)
            .ok()
            .filter(|length| *length <= limit)
            .ok_or_else(too_large)?,
        None => 0,
    };
    let mut body = Vec::with_capacity(capacity);
    while let Some(chunk) = next_chunk(&mut response, url).await? {
        if chunk.len() > limit.saturating_sub(body.len()) {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn next_chunk(
    response: &mut reqwest::Response,
    url: &Url,
) -> Result<Option<Bytes>, FetchError> {
    response.chunk().await.map_err(|source| FetchError::Body {
        url: url.clone(),
        source,
    })
}
