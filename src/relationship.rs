//! The federation relationship: the one validated shape every input becomes.
//!
//! A relationship arrives in three forms: a `[[federation]]` table of the
//! configuration ([`config::FederationEntry`], material named by file path), the
//! admin API's body ([`RelationshipSpec`], material inline) and a
//! ClusterFederatedTrustDomain document (`crate::registry::cftd`, which becomes a
//! body). Each is checked by the configuration's rules, naming the field at fault
//! (`federation[2].url`, `extra_ca_roots_pem`, …), and turned into a
//! [`Relationship`]: endpoint URLs checked by the protocol's rules, the profile
//! resolved, the material parsed (extra roots, the bootstrap bundle) and kept with
//! where it came from. The registry lists it, the pollers fetch with it, the admin
//! API shows it, and an API relationship is stored as its body again
//! ([`Relationship::to_body`]).
//!
//! Owns the shape and the conversions. It does not own which relationships exist
//! (the registry), how they are stored (the database's own record types), or
//! fetching.

mod body;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use spiffe_federation::endpoint::{
    EndpointUrl, FetchLimits, Profile, ProxySetting, UrlError, WebOptions,
};
use spiffe_federation::{Bundle, BundleError, SpiffeId, TrustDomain};
use url::Url;

pub use self::body::RelationshipSpec;
use crate::config::{self, ConfigError, DocumentFormat, ProfileName};

/// Why a configured relationship cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelationshipError {
    /// A URL breaks the bundle endpoint URL rules.
    #[error("relationship {trust_domain}: {url}: {source}")]
    Url {
        /// The relationship.
        trust_domain: TrustDomain,
        /// The URL.
        url: String,
        /// The rule broken.
        source: UrlError,
    },
    /// A referenced file cannot be read.
    #[error("relationship {trust_domain}: cannot read {path}: {source}")]
    Read {
        /// The relationship.
        trust_domain: TrustDomain,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The extra CA roots hold no usable certificate.
    #[error("relationship {trust_domain}: {from} holds no PEM certificate")]
    NoRoots {
        /// The relationship.
        trust_domain: TrustDomain,
        /// Where the roots came from.
        from: MaterialSource,
    },
    /// Material is larger than the document limit (`policy.max_document_bytes`).
    #[error("relationship {trust_domain}: {from} is larger than {limit} bytes")]
    TooLarge {
        /// The relationship.
        trust_domain: TrustDomain,
        /// Where the material came from.
        from: MaterialSource,
        /// The limit.
        limit: usize,
    },
    /// The bootstrap bundle is invalid.
    #[error("relationship {trust_domain}: bootstrap_bundle {from}: {source}")]
    Bootstrap {
        /// The relationship.
        trust_domain: TrustDomain,
        /// Where the bundle came from.
        from: MaterialSource,
        /// What is wrong with it.
        source: BundleError,
    },
    /// The bootstrap bundle holds no X.509 authority, so it could not authenticate
    /// the endpoint: storing it would only put an empty bundle in the slot.
    #[error(
        "relationship {trust_domain}: bootstrap_bundle {from} holds no X.509 authority \
         ({elements} elements in keys, {ignored} of them ignored); it could not \
         authenticate the endpoint"
    )]
    BootstrapWithoutAuthority {
        /// The relationship.
        trust_domain: TrustDomain,
        /// Where the bundle came from.
        from: MaterialSource,
        /// Elements the document listed.
        elements: usize,
        /// Elements left out of them.
        ignored: usize,
    },
    /// Configuration validation should have caught this; named rather than assumed.
    #[error("relationship {trust_domain}: profile https_spiffe needs endpoint_spiffe_id")]
    MissingEndpointId {
        /// The relationship.
        trust_domain: TrustDomain,
    },
}

/// Where a piece of a relationship's material came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaterialSource {
    /// A file named in the configuration.
    File(PathBuf),
    /// A field of an admin API request, holding the content itself.
    Inline(&'static str),
}

impl fmt::Display for MaterialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Inline(field) => write!(f, "(inline {field})"),
        }
    }
}

/// The optional material of a relationship, already read: the content and where it
/// came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Material {
    /// `https_web`: PEM CA roots trusted besides the system store.
    pub extra_roots: Option<(MaterialSource, Vec<u8>)>,
    /// `https_spiffe`: a bundle document for the endpoint ID's trust domain, in the
    /// relationship's `bootstrap_format`.
    pub bootstrap: Option<(MaterialSource, Vec<u8>)>,
}

/// Why a relationship given by the configuration, the API or a CFTD document was
/// refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// It breaks a rule (FED-4, SPF-2, WEB-1, EXT-7); names the field.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// Its material (bootstrap bundle, extra roots) is unusable, or a file cannot be
    /// read.
    #[error(transparent)]
    Material(#[from] RelationshipError),
}

/// The limits material and fetches are held to: `policy.max_document_bytes` and
/// `polling.fetch_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest bundle document or PEM file accepted.
    pub max_document_bytes: usize,
    /// How long one fetch may take in all.
    pub fetch_timeout: Duration,
}

/// A piece of material, as given and as parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Given<T> {
    /// Where it came from.
    pub from: MaterialSource,
    /// The bytes as given (a PEM file, a bundle document).
    pub content: Vec<u8>,
    /// What they hold.
    pub parsed: T,
}

/// A federation relationship, checked and resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relationship {
    /// The foreign trust domain.
    pub trust_domain: TrustDomain,
    /// Endpoint URLs, tried in order (mirrors).
    pub urls: Vec<EndpointUrl>,
    /// Whether the URLs were given as a list (`urls`) rather than one `url`.
    pub listed_urls: bool,
    /// The endpoint profile.
    pub profile: ProfileName,
    /// `https_spiffe`: the endpoint server's SPIFFE ID (SPF-2).
    pub endpoint_spiffe_id: Option<SpiffeId>,
    /// `https_spiffe`: the bundle of the endpoint ID's trust domain to start from,
    /// used only while none is stored (SPF-3, SPF-4).
    pub bootstrap: Option<Given<Bundle>>,
    /// The format `bootstrap` was given in.
    pub bootstrap_format: DocumentFormat,
    /// `https_web`: CA roots trusted besides the system store.
    pub extra_roots: Option<Given<Vec<CertificateDer<'static>>>>,
    /// Follow HTTP redirects (at most 3 hops, never remembered; SEC-4).
    pub follow_redirects: bool,
    /// Proxy choice (EXT-5), as the fetcher takes it.
    pub proxy: ProxySetting,
    /// Accept a fetched empty `keys` list (a revocation).
    pub allow_revocation: bool,
    /// Size, time and redirect limits of a fetch.
    pub limits: FetchLimits,
}

impl Relationship {
    /// A `[[federation]]` table (already checked with the configuration), reading
    /// the files it names. Blocks: call from `spawn_blocking`.
    ///
    /// # Errors
    /// [`RelationshipError`] naming the relationship and the file or content at fault.
    pub fn from_entry(
        entry: &config::FederationEntry,
        limits: Limits,
    ) -> Result<Self, RelationshipError> {
        let td = &entry.trust_domain;
        let read_file = |path: &PathBuf| {
            read(td, path).map(|bytes| (MaterialSource::File(path.clone()), bytes))
        };
        let material = Material {
            extra_roots: entry.extra_ca_roots.as_ref().map(read_file).transpose()?,
            bootstrap: entry.bootstrap_bundle.as_ref().map(read_file).transpose()?,
        };
        Self::resolve(entry, material, limits)
    }

    /// An admin API body (or a ClusterFederatedTrustDomain document made into one):
    /// checked by the configuration's rules, naming the body's fields, then resolved.
    /// `locals` are the trust domains this gateway serves (EXT-7). Does not block.
    ///
    /// # Errors
    /// [`Refused::Invalid`] naming the field, or [`Refused::Material`].
    pub fn from_body(
        body: &RelationshipSpec,
        locals: &BTreeSet<TrustDomain>,
        limits: Limits,
    ) -> Result<Self, Refused> {
        body.validate(locals)?;
        Ok(Self::resolve(&body.to_entry(), body.material(), limits)?)
    }

    /// Resolve a table whose material is already read (from files or inline);
    /// `entry`'s own `extra_ca_roots` and `bootstrap_bundle` paths are not read here.
    ///
    /// # Errors
    /// [`RelationshipError`] naming the relationship and the fault.
    pub fn resolve(
        entry: &config::FederationEntry,
        material: Material,
        limits: Limits,
    ) -> Result<Self, RelationshipError> {
        let td = &entry.trust_domain;
        let urls = entry
            .endpoint_urls()
            .into_iter()
            .map(|url| {
                EndpointUrl::from_url(url.clone()).map_err(|source| RelationshipError::Url {
                    trust_domain: td.clone(),
                    url: url.to_string(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let max = limits.max_document_bytes;
        let extra_roots = match (entry.profile, material.extra_roots) {
            (ProfileName::HttpsWeb, Some((from, content))) => {
                let parsed = parse_roots(td, &from, &content, max)?;
                Some(Given {
                    from,
                    content,
                    parsed,
                })
            }
            _ => None,
        };
        let endpoint_spiffe_id = match entry.profile {
            ProfileName::HttpsSpiffe => {
                Some(entry.endpoint_spiffe_id.clone().ok_or_else(|| {
                    RelationshipError::MissingEndpointId {
                        trust_domain: td.clone(),
                    }
                })?)
            }
            ProfileName::HttpsWeb => entry.endpoint_spiffe_id.clone(),
        };
        let bootstrap = match (entry.profile, &endpoint_spiffe_id, material.bootstrap) {
            (ProfileName::HttpsSpiffe, Some(endpoint_id), Some((from, content))) => {
                let parsed = parse_bootstrap(
                    td,
                    endpoint_id.trust_domain(),
                    &from,
                    &content,
                    entry.bootstrap_format,
                    max,
                )?;
                Some(Given {
                    from,
                    content,
                    parsed,
                })
            }
            _ => None,
        };
        Ok(Self {
            trust_domain: td.clone(),
            urls,
            listed_urls: entry.url.is_none(),
            profile: entry.profile,
            endpoint_spiffe_id,
            bootstrap,
            bootstrap_format: entry.bootstrap_format,
            extra_roots,
            follow_redirects: entry.follow_redirects,
            proxy: entry.proxy.clone(),
            allow_revocation: entry.allow_revocation,
            limits: FetchLimits {
                max_body_bytes: max,
                total_timeout: limits.fetch_timeout,
                follow_redirects: entry.follow_redirects,
                ..FetchLimits::default()
            },
        })
    }

    /// The admin API body that gives this relationship, material inline (how an API
    /// relationship is stored and audited).
    pub fn to_body(&self) -> RelationshipSpec {
        let text = |content: &[u8]| String::from_utf8_lossy(content).into_owned();
        let urls = self.endpoint_urls();
        let (url, urls) = if self.listed_urls {
            (None, urls)
        } else {
            (urls.into_iter().next(), Vec::new())
        };
        RelationshipSpec {
            trust_domain: self.trust_domain.clone(),
            url,
            urls,
            profile: self.profile,
            endpoint_spiffe_id: self.endpoint_spiffe_id.clone(),
            bootstrap_bundle: self.bootstrap.as_ref().map(|b| text(&b.content)),
            bootstrap_format: self.bootstrap_format,
            extra_ca_roots_pem: self.extra_roots.as_ref().map(|r| text(&r.content)),
            follow_redirects: self.follow_redirects,
            proxy: self.proxy.clone(),
            allow_revocation: self.allow_revocation,
        }
    }

    /// The endpoint URLs, in order.
    pub fn endpoint_urls(&self) -> Vec<Url> {
        self.urls.iter().map(|u| u.as_url().clone()).collect()
    }

    /// How the endpoint is authenticated, as the fetcher takes it.
    pub fn fetch_profile(&self) -> Profile {
        match (&self.profile, &self.endpoint_spiffe_id) {
            (ProfileName::HttpsSpiffe, Some(endpoint_id)) => Profile::HttpsSpiffe {
                endpoint_id: endpoint_id.clone(),
            },
            _ => {
                let mut options = WebOptions::default();
                if let Some(roots) = &self.extra_roots {
                    options.extra_roots.clone_from(&roots.parsed);
                }
                Profile::HttpsWeb(options)
            }
        }
    }

    /// The bootstrap bundle, if one was given.
    pub fn bootstrap_bundle(&self) -> Option<&Bundle> {
        self.bootstrap.as_ref().map(|b| &b.parsed)
    }

    /// The trust domain whose bundle authenticates the endpoint (https_spiffe), which
    /// is the relationship's own for a self-serving endpoint.
    pub fn endpoint_trust_domain(&self) -> Option<&TrustDomain> {
        match self.profile {
            ProfileName::HttpsSpiffe => {
                self.endpoint_spiffe_id.as_ref().map(SpiffeId::trust_domain)
            }
            ProfileName::HttpsWeb => None,
        }
    }
}

fn read(td: &TrustDomain, path: &Path) -> Result<Vec<u8>, RelationshipError> {
    std::fs::read(path).map_err(|source| RelationshipError::Read {
        trust_domain: td.clone(),
        path: path.to_path_buf(),
        source,
    })
}

fn parse_roots(
    td: &TrustDomain,
    from: &MaterialSource,
    bytes: &[u8],
    max: usize,
) -> Result<Vec<CertificateDer<'static>>, RelationshipError> {
    if bytes.len() > max {
        return Err(RelationshipError::TooLarge {
            trust_domain: td.clone(),
            from: from.clone(),
            limit: max,
        });
    }
    let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(bytes)
        .filter_map(Result::ok)
        .collect();
    if roots.is_empty() {
        return Err(RelationshipError::NoRoots {
            trust_domain: td.clone(),
            from: from.clone(),
        });
    }
    Ok(roots)
}

fn parse_bootstrap(
    td: &TrustDomain,
    endpoint_td: &TrustDomain,
    from: &MaterialSource,
    bytes: &[u8],
    format: DocumentFormat,
    max: usize,
) -> Result<Bundle, RelationshipError> {
    if bytes.len() > max {
        return Err(RelationshipError::TooLarge {
            trust_domain: td.clone(),
            from: from.clone(),
            limit: max,
        });
    }
    let invalid = |source| RelationshipError::Bootstrap {
        trust_domain: td.clone(),
        from: from.clone(),
        source,
    };
    let (bundle, elements, ignored) = match format {
        DocumentFormat::Spiffe => {
            let parsed = Bundle::parse_with_limit(endpoint_td, bytes, max).map_err(invalid)?;
            (parsed.bundle, parsed.elements, parsed.ignored.len())
        }
        DocumentFormat::Pem => {
            let bundle = Bundle::from_pem(endpoint_td, bytes).map_err(invalid)?;
            let count = bundle.x509_authorities().len();
            (bundle, count, 0)
        }
    };
    // The bootstrap bundle exists to authenticate the https_spiffe endpoint's X509-SVID
    // (SPF-3); one without X.509 authorities would store an empty bundle in the slot.
    if bundle.x509_authorities().is_empty() {
        return Err(RelationshipError::BootstrapWithoutAuthority {
            trust_domain: td.clone(),
            from: from.clone(),
            elements,
            ignored,
        });
    }
    Ok(bundle)
}
