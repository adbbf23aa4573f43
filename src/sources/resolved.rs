//! A federation relationship in the form the poller uses: URLs validated, profile
//! resolved, extra roots and the bootstrap bundle parsed.
//!
//! Owns turning a [`config::Relationship`] and its
//! [`Material`] into that form. The material is read from files named in the
//! configuration ([`Relationship::from_config`], blocking: call from
//! `spawn_blocking`) or sent inline through the admin API; both go through
//! [`Relationship::resolve`]. It does not own configuration validation (config.rs)
//! or fetching.

use std::fmt;
use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use spiffe_federation::endpoint::{
    EndpointUrl, FetchLimits, Profile, ProxySetting, UrlError, WebOptions,
};
use spiffe_federation::{Bundle, BundleError, TrustDomain};

use crate::config::{self, DocumentFormat, ProfileName, ProxyConfig};

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

/// A relationship ready to poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relationship {
    /// The foreign trust domain.
    pub trust_domain: TrustDomain,
    /// Endpoint URLs, tried in order (mirrors).
    pub urls: Vec<EndpointUrl>,
    /// How the endpoint is authenticated.
    pub profile: Profile,
    /// The bootstrap bundle for the endpoint ID's trust domain (https_spiffe), used
    /// only while no bundle for that domain is stored (SPF-3, SPF-4).
    pub bootstrap: Option<Bundle>,
    /// Size, time and redirect limits.
    pub limits: FetchLimits,
    /// Proxy choice (EXT-5).
    pub proxy: ProxySetting,
    /// The configuration as written, for the admin API.
    pub config: config::Relationship,
}

impl Relationship {
    /// Resolve a configured relationship, reading its files. Blocks.
    ///
    /// # Errors
    /// [`RelationshipError`] naming the relationship and the fault.
    pub fn from_config(
        rel: &config::Relationship,
        max_document_bytes: usize,
        total_timeout: std::time::Duration,
    ) -> Result<Self, RelationshipError> {
        let td = &rel.trust_domain;
        let read_file = |path: &PathBuf| {
            read(td, path).map(|bytes| (MaterialSource::File(path.clone()), bytes))
        };
        let material = Material {
            extra_roots: rel.extra_ca_roots.as_ref().map(read_file).transpose()?,
            bootstrap: rel.bootstrap_bundle.as_ref().map(read_file).transpose()?,
        };
        Self::resolve(rel, material, max_document_bytes, total_timeout)
    }

    /// Resolve a relationship whose material is already read (from files or inline);
    /// `rel`'s own `extra_ca_roots` and `bootstrap_bundle` paths are not read here.
    /// Does not block.
    ///
    /// # Errors
    /// [`RelationshipError`] naming the relationship and the fault.
    pub fn resolve(
        rel: &config::Relationship,
        material: Material,
        max_document_bytes: usize,
        total_timeout: std::time::Duration,
    ) -> Result<Self, RelationshipError> {
        let td = &rel.trust_domain;
        let urls = rel
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
        let profile = match rel.profile {
            ProfileName::HttpsWeb => {
                let mut options = WebOptions::default();
                if let Some((from, bytes)) = &material.extra_roots {
                    options.extra_roots = parse_roots(td, from, bytes, max_document_bytes)?;
                }
                Profile::HttpsWeb(options)
            }
            ProfileName::HttpsSpiffe => Profile::HttpsSpiffe {
                endpoint_id: rel.endpoint_spiffe_id.clone().ok_or_else(|| {
                    RelationshipError::MissingEndpointId {
                        trust_domain: td.clone(),
                    }
                })?,
            },
        };
        let bootstrap = match (&profile, &material.bootstrap) {
            (Profile::HttpsSpiffe { endpoint_id }, Some((from, bytes))) => Some(parse_bootstrap(
                td,
                endpoint_id.trust_domain(),
                from,
                bytes,
                rel.bootstrap_format,
                max_document_bytes,
            )?),
            _ => None,
        };
        let limits = FetchLimits {
            max_body_bytes: max_document_bytes,
            total_timeout,
            follow_redirects: rel.follow_redirects,
            ..FetchLimits::default()
        };
        let proxy = match &rel.proxy {
            ProxyConfig::Environment => ProxySetting::FromEnvironment,
            ProxyConfig::Off => ProxySetting::Off,
            ProxyConfig::Url(url) => ProxySetting::Url(url.clone()),
        };
        Ok(Self {
            trust_domain: td.clone(),
            urls,
            profile,
            bootstrap,
            limits,
            proxy,
            config: rel.clone(),
        })
    }

    /// The trust domain whose bundle authenticates the endpoint (https_spiffe), which
    /// is the relationship's own for a self-serving endpoint.
    pub fn endpoint_trust_domain(&self) -> Option<&TrustDomain> {
        match &self.profile {
            Profile::HttpsSpiffe { endpoint_id } => Some(endpoint_id.trust_domain()),
            Profile::HttpsWeb(_) => None,
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
