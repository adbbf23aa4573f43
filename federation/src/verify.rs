//! X509-SVID verification: is this certificate chain a valid X509-SVID, and for which
//! SPIFFE ID?
//!
//! Owns the checks that authenticate an `https_spiffe` bundle endpoint (SPIFFE
//! Federation §5.2.2.4) from the chain the peer presented, the bundle of the endpoint's
//! trust domain, and the time `now` (X509-SVID §5). It does not own TLS (a caller wires
//! these functions into a rustls verifier and checks the handshake signature), the
//! choice of bundle (the caller passes the bundle of the trust domain the endpoint ID
//! lives in), bundle acceptance policy, the clock, revocation (SPIFFE has none), or
//! JWT-SVIDs.
//!
//! # What is checked, in this order
//! 1. The chain is not empty; `chain[0]` is the leaf and parses as DER X.509.
//! 2. The leaf has exactly one URI SAN (X509-SVID §2, §5.2).
//! 3. That URI has the `spiffe` scheme (X509-SVID §5.2) and is a valid SPIFFE ID
//!    (SPIFFE-ID §2).
//! 4. The ID has a non-root path (X509-SVID §3.1, §5.2).
//! 5. The leaf's basicConstraints `cA` is not true, and its keyUsage has neither
//!    `keyCertSign` nor `cRLSign` (X509-SVID §4.1, §4.3, §5.2).
//! 6. The ID's trust domain is the bundle's: only the bundle of the trust domain the ID
//!    resides in may vouch for it (TDB §3; SPIFFE Federation §7.3).
//! 7. RFC 5280 path validation from the leaf, through the intermediates the peer
//!    supplied (`chain[1..]`, in any order), to one of the bundle's X.509 authorities,
//!    at `now` (X509-SVID §5.1). This is rustls-webpki's path building; we add no path
//!    logic of our own.
//!
//! # Deliberate choices
//! - **No hostname check.** An `https_spiffe` endpoint is authenticated by its SPIFFE
//!   ID, not by a DNS name (SPIFFE Federation §5.2.2.4): a DNS SAN that does not match
//!   the URL host is ignored.
//! - **Any extended key usage is accepted**, including none (see
//!   [`AnyExtendedKeyUsage`]): X509-SVID §4.4 makes EKU a SHOULD, and go-spiffe verifies
//!   peers with `x509.ExtKeyUsageAny`. A missing or non-critical keyUsage is not
//!   rejected either: X509-SVID §4.3 binds the issuer, and we check our own serving SVID
//!   at startup instead.
//! - **Trust anchors have no validity period.** As in RFC 5280 §6.1.1(d), a bundle
//!   authority is a name and a key; webpki does not check its `notBefore`/`notAfter`,
//!   so an expired CA still in the bundle still anchors a chain. (Go's `crypto/x509`,
//!   and so go-spiffe, does check roots.) Removing expired authorities is bundle policy.
//!   Intermediates and the leaf are checked.
//! - **Authorities webpki cannot read are skipped**, as rustls's
//!   `RootCertStore::add_parsable_certificates` does: ignoring a trust anchor can only
//!   narrow trust. If none is usable the error is [`VerifyError::NoAuthorities`], which
//!   says how many were skipped.
//!
//! # URI name constraints (X509-SVID §4.2)
//! X509-SVID §4.2 lets a signing certificate carry URI name constraints. rustls-webpki
//! 0.103 does not implement the URI name form and fails closed
//! (`subject_name::check_presented_id_conforms_to_constraints`): when the trust anchor
//! or any intermediate on the path has a nameConstraints extension with a
//! `uniformResourceIdentifier` subtree,
//! - in `permittedSubtrees`: every URI SAN of every certificate below it counts as
//!   outside the subtree, even `spiffe://td/x` under a permitted `td`;
//! - in `excludedSubtrees`: every URI SAN counts as excluded;
//!
//! so the path fails with a name constraint violation. Since an X509-SVID always has a
//! URI SAN, **no SVID verifies under a CA with any URI name constraint**. Constraints of
//! other forms do not touch URI SANs (a `dNSName` subtree only constrains DNS SANs), but
//! webpki also fails closed on any `directoryName` subtree. We do not work around this
//! (stripping constraints would widen trust; our own path validation is out of scope):
//! the error is [`VerifyError::UriNameConstraint`], naming the constrained CA, so that
//! the cause is visible rather than a generic path failure.
//!
//! # Example
//! ```
//! use rustls_pki_types::{CertificateDer, UnixTime};
//! use spiffe_federation::bundle::X509Authority;
//! use spiffe_federation::verify::{VerifyError, verify_x509_svid, verify_x509_svid_for};
//! use spiffe_federation::{Bundle, SpiffeId};
//!
//! // A CA for `example.org` and an SVID it signed (rcgen's defaults: valid 1975-4096).
//! let ca_key = rcgen::KeyPair::generate()?;
//! let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
//! ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
//! let ca_cert = ca.self_signed(&ca_key)?;
//! let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
//! let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new())?;
//! leaf.subject_alt_names = vec![rcgen::SanType::URI("spiffe://example.org/endpoint".try_into()?)];
//! let leaf_cert = leaf.signed_by(&rcgen::KeyPair::generate()?, &issuer)?;
//!
//! let mut bundle = Bundle::new("example.org".parse()?);
//! bundle.add_x509_authority(X509Authority::from_der(ca_cert.der().to_vec())?);
//! let chain = [CertificateDer::from(leaf_cert.der().to_vec())];
//! let now = UnixTime::now();
//!
//! let id = verify_x509_svid(&chain, &bundle, now)?;
//! assert_eq!(id.to_string(), "spiffe://example.org/endpoint");
//! let other: SpiffeId = "spiffe://example.org/other".parse()?;
//! assert!(matches!(
//!     verify_x509_svid_for(&chain, &bundle, &other, now),
//!     Err(VerifyError::UnexpectedId { .. })
//! ));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeIdIter};
use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};

use crate::bundle::Bundle;
use crate::trust_domain::{IdError, SpiffeId, TrustDomain};

/// Why a certificate chain is not a valid X509-SVID for the bundle, or not for the
/// expected SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The peer presented no certificate.
    #[error("the peer presented no certificate")]
    EmptyChain,
    /// The leaf is not a well-formed DER X.509 certificate, or one of its extensions
    /// (subjectAltName, basicConstraints, keyUsage) is malformed or repeated.
    #[error("malformed leaf certificate: {reason}")]
    Malformed {
        /// The parser's explanation.
        reason: String,
    },
    /// The leaf does not have exactly one URI SAN (X509-SVID §2, §5.2).
    #[error("an X509-SVID must have exactly one URI SAN; the leaf has {found}")]
    UriSanCount {
        /// How many URI SANs the leaf has.
        found: usize,
    },
    /// The leaf's URI SAN has a scheme other than `spiffe` (X509-SVID §5.2).
    #[error("the leaf's URI SAN {uri:?} is not a spiffe:// URI")]
    NotSpiffeScheme {
        /// The URI SAN as found.
        uri: String,
    },
    /// The leaf's URI SAN has the `spiffe` scheme but is not a valid SPIFFE ID
    /// (SPIFFE-ID §2).
    #[error("the leaf's URI SAN {uri:?} is not a valid SPIFFE ID: {source}")]
    InvalidId {
        /// The URI SAN as found.
        uri: String,
        /// The first SPIFFE-ID rule it breaks.
        #[source]
        source: IdError,
    },
    /// The leaf's SPIFFE ID has no path: it names a trust domain, not a workload
    /// (X509-SVID §3.1, §5.2).
    #[error("the leaf's SPIFFE ID {id} has no path; leaf SVIDs must name a workload")]
    RootId {
        /// The ID found.
        id: SpiffeId,
    },
    /// The leaf's basicConstraints has `cA` set to true (X509-SVID §4.1, §5.2).
    #[error("the leaf for {id} is a CA certificate (basicConstraints cA is true)")]
    LeafIsCa {
        /// The leaf's SPIFFE ID.
        id: SpiffeId,
    },
    /// The leaf's keyUsage lets it sign certificates or CRLs (X509-SVID §4.3, §5.2).
    #[error("the leaf for {id} has keyUsage {usage}, which only signing certificates may have")]
    LeafCanSign {
        /// The leaf's SPIFFE ID.
        id: SpiffeId,
        /// The forbidden usage found (`keyCertSign` first when both are set).
        usage: SigningUsage,
    },
    /// The SVID's trust domain is not the bundle's: only the bundle of the trust domain
    /// an ID resides in may vouch for it (TDB §3; SPIFFE Federation §7.3).
    #[error("the SVID {svid} is not in trust domain {bundle}, whose bundle was given")]
    TrustDomainMismatch {
        /// The bundle's trust domain.
        bundle: TrustDomain,
        /// The SPIFFE ID the leaf claims.
        svid: SpiffeId,
    },
    /// The bundle has no X.509 authority that can anchor a path.
    #[error(
        "the bundle for {trust_domain} has no usable X.509 authority ({unusable} could not be read as trust anchors)"
    )]
    NoAuthorities {
        /// The bundle's trust domain.
        trust_domain: TrustDomain,
        /// How many authorities were present but unreadable by the path validator.
        unusable: usize,
    },
    /// A certificate on the path (leaf or intermediate) expired before `now`
    /// (X509-SVID §5.1; RFC 5280 §4.1.2.5).
    #[error(
        "a certificate in the chain expired at {}; now is {}",
        when(not_after),
        when(now)
    )]
    Expired {
        /// The time the chain was verified at.
        now: UnixTime,
        /// The expired certificate's `notAfter`.
        not_after: UnixTime,
    },
    /// A certificate on the path (leaf or intermediate) is not valid until after `now`.
    #[error(
        "a certificate in the chain is not valid before {}; now is {}",
        when(not_before),
        when(now)
    )]
    NotYetValid {
        /// The time the chain was verified at.
        now: UnixTime,
        /// The certificate's `notBefore`.
        not_before: UnixTime,
    },
    /// No path leads from the leaf to an authority of the bundle: the issuer names of
    /// the chain match no authority (the chain belongs to another CA, or an
    /// intermediate is missing).
    #[error("the chain does not lead to any X.509 authority in the bundle for {trust_domain}")]
    UnknownIssuer {
        /// The bundle's trust domain.
        trust_domain: TrustDomain,
    },
    /// A certificate names an issuer found in the bundle or chain, but its signature
    /// does not verify with that issuer's key. Often a bundle that is stale after the
    /// peer rotated its CA key, or an impostor CA reusing the name.
    #[error(
        "a certificate's signature does not verify with the key of the issuer it names (a bundle for {trust_domain} that is stale after a CA key rotation, or an impostor CA)"
    )]
    BadSignature {
        /// The bundle's trust domain.
        trust_domain: TrustDomain,
    },
    /// A CA in the bundle or chain has a URI name constraint, which the path validator
    /// (rustls-webpki) cannot evaluate and treats as violated; see the module docs.
    #[error(
        "the CA {ca:?} carries a URI name constraint, which the path validator does not support (it rejects every URI SAN under it)"
    )]
    UriNameConstraint {
        /// The subject distinguished name of the first CA found with a URI subtree.
        ca: String,
    },
    /// Path validation failed for another reason (X509-SVID §5.1).
    #[error("certificate path validation failed: {reason}")]
    Path {
        /// The path validator's error.
        reason: String,
    },
    /// The SVID is valid but for another SPIFFE ID than the endpoint's (SPIFFE
    /// Federation §5.2.2.4).
    #[error("expected SPIFFE ID {expected}, the peer presented {found}")]
    UnexpectedId {
        /// The ID the caller expected.
        expected: SpiffeId,
        /// The ID the valid SVID carries.
        found: SpiffeId,
    },
}

/// A keyUsage bit that marks a signing certificate and must not be set on a leaf
/// X509-SVID (X509-SVID §4.3, §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SigningUsage {
    /// `keyCertSign`.
    KeyCertSign,
    /// `cRLSign`.
    CrlSign,
}

impl fmt::Display for SigningUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::KeyCertSign => "keyCertSign",
            Self::CrlSign => "cRLSign",
        })
    }
}

/// Verify that `chain` is a valid X509-SVID vouched for by `bundle` at time `now`, and
/// return its SPIFFE ID.
///
/// `chain[0]` is the leaf; the rest are intermediates supplied by the peer, used to
/// build the path in any order (X509-SVID §5.1). The checks and their order are listed
/// in the [module docs](self). There is no hostname check.
///
/// # Errors
/// A [`VerifyError`] naming the first check that fails: [`EmptyChain`] and
/// [`Malformed`] for unreadable input; [`UriSanCount`], [`NotSpiffeScheme`],
/// [`InvalidId`], [`RootId`], [`LeafIsCa`], [`LeafCanSign`] for a leaf that is not an
/// X509-SVID; [`TrustDomainMismatch`] when the bundle is not the ID's trust domain's;
/// [`NoAuthorities`] for a bundle with no usable X.509 authority; [`Expired`],
/// [`NotYetValid`], [`UnknownIssuer`], [`BadSignature`], [`UriNameConstraint`] and
/// [`Path`] when path validation fails.
///
/// [`EmptyChain`]: VerifyError::EmptyChain
/// [`Malformed`]: VerifyError::Malformed
/// [`UriSanCount`]: VerifyError::UriSanCount
/// [`NotSpiffeScheme`]: VerifyError::NotSpiffeScheme
/// [`InvalidId`]: VerifyError::InvalidId
/// [`RootId`]: VerifyError::RootId
/// [`LeafIsCa`]: VerifyError::LeafIsCa
/// [`LeafCanSign`]: VerifyError::LeafCanSign
/// [`TrustDomainMismatch`]: VerifyError::TrustDomainMismatch
/// [`NoAuthorities`]: VerifyError::NoAuthorities
/// [`Expired`]: VerifyError::Expired
/// [`NotYetValid`]: VerifyError::NotYetValid
/// [`UnknownIssuer`]: VerifyError::UnknownIssuer
/// [`BadSignature`]: VerifyError::BadSignature
/// [`UriNameConstraint`]: VerifyError::UriNameConstraint
/// [`Path`]: VerifyError::Path
pub fn verify_x509_svid(
    chain: &[CertificateDer<'_>],
    bundle: &Bundle,
    now: UnixTime,
) -> Result<SpiffeId, VerifyError> {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err(VerifyError::EmptyChain);
    };
    let id = check_leaf(leaf)?;

    // TDB §3, SPIFFE Federation §7.3: a CA of another trust domain must never vouch for
    // this ID, even if the caller handed us the wrong bundle.
    if id.trust_domain() != bundle.trust_domain() {
        return Err(VerifyError::TrustDomainMismatch {
            bundle: bundle.trust_domain().clone(),
            svid: id,
        });
    }

    let authorities = bundle.x509_authorities();
    let anchors: Vec<TrustAnchor<'_>> = authorities
        .iter()
        .filter_map(|authority| webpki::anchor_from_trusted_cert(authority.der()).ok())
        .collect();
    if anchors.is_empty() {
        return Err(VerifyError::NoAuthorities {
            trust_domain: bundle.trust_domain().clone(),
            unusable: authorities.len(),
        });
    }

    // webpki parses more strictly than x509-parser (e.g. unknown critical extensions):
    // its objections are path validation errors.
    let end_entity =
        EndEntityCert::try_from(leaf).map_err(|err| path_error(err, bundle, intermediates, now))?;
    // X509-SVID §5.1: RFC 5280 path validation, done entirely by webpki. No revocation
    // (SPIFFE rotates through bundles) and no extra per-path callback.
    end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            intermediates,
            now,
            AnyExtendedKeyUsage,
            None,
            None,
        )
        .map_err(|err| path_error(err, bundle, intermediates, now))?;
    Ok(id)
}

/// Verify that `chain` is a valid X509-SVID vouched for by `bundle` at time `now`, for
/// exactly the SPIFFE ID `expected`: the check an `https_spiffe` client makes of the
/// bundle endpoint (SPIFFE Federation §5.2.2.4).
///
/// Another path in the same trust domain, or the same path in another trust domain, is
/// a different ID and fails. There is no hostname check: a DNS SAN that does not match
/// the endpoint URL's host does not matter.
///
/// # Errors
/// Any error of [`verify_x509_svid`], then [`VerifyError::UnexpectedId`] if the valid
/// SVID is for another ID than `expected`.
pub fn verify_x509_svid_for(
    chain: &[CertificateDer<'_>],
    bundle: &Bundle,
    expected: &SpiffeId,
    now: UnixTime,
) -> Result<(), VerifyError> {
    let found = verify_x509_svid(chain, bundle, now)?;
    if found != *expected {
        return Err(VerifyError::UnexpectedId {
            expected: expected.clone(),
            found,
        });
    }
    Ok(())
}

/// An extended key usage policy that accepts any EKU list, or none at all.
///
/// What it skips: RFC 5280 §4.2.1.12's rule that a certificate with an EKU extension
/// be used only for a listed purpose (webpki's `KeyUsage::server_auth()` would demand
/// `id-kp-serverAuth` when EKU is present). Why: X509-SVID §4.4 makes EKU a SHOULD,
/// and go-spiffe, which SPIRE uses to verify federation peers, verifies with
/// `x509.ExtKeyUsageAny`; a peer SVID with no EKU or with only `clientAuth` must
/// verify here as it does there. It applies to every certificate on the path, as Go's
/// `ExtKeyUsageAny` does. It still reads every OID, so a malformed EKU extension is
/// an error, and webpki itself rejects an empty one.
struct AnyExtendedKeyUsage;

impl ExtendedKeyUsageValidator for AnyExtendedKeyUsage {
    fn validate(&self, purposes: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        for purpose in purposes {
            purpose?;
        }
        Ok(())
    }
}

/// The leaf checks of X509-SVID §5.2 (steps 1 to 5 of the module docs).
pub(crate) fn check_leaf(leaf: &CertificateDer<'_>) -> Result<SpiffeId, VerifyError> {
    let (rest, cert) = X509Certificate::from_der(leaf).map_err(|err| VerifyError::Malformed {
        reason: err.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(VerifyError::Malformed {
            reason: format!("{} unexpected bytes after the certificate", rest.len()),
        });
    }

    let uri = single_uri_san(&cert)?;
    let id = parse_uri_san(uri)?;
    if id.is_root() {
        return Err(VerifyError::RootId { id });
    }

    let basic_constraints = cert.basic_constraints().map_err(malformed)?;
    if basic_constraints.is_some_and(|bc| bc.value.ca) {
        return Err(VerifyError::LeafIsCa { id });
    }
    if let Some(key_usage) = cert.key_usage().map_err(malformed)? {
        let usage = if key_usage.value.key_cert_sign() {
            Some(SigningUsage::KeyCertSign)
        } else if key_usage.value.crl_sign() {
            Some(SigningUsage::CrlSign)
        } else {
            None
        };
        if let Some(usage) = usage {
            return Err(VerifyError::LeafCanSign { id, usage });
        }
    }
    Ok(id)
}

/// The one URI SAN of an X509-SVID (X509-SVID §2: "exactly one URI SAN"; §5.2:
/// validators MUST reject more than one).
fn single_uri_san<'a>(cert: &'a X509Certificate<'_>) -> Result<&'a str, VerifyError> {
    let mut uris = Vec::new();
    if let Some(san) = cert.subject_alternative_name().map_err(malformed)? {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name {
                uris.push(*uri);
            }
        }
    }
    match uris.as_slice() {
        [uri] => Ok(uri),
        _ => Err(VerifyError::UriSanCount { found: uris.len() }),
    }
}

/// Parse the URI SAN as a SPIFFE ID, telling a foreign scheme (X509-SVID §5.2: the
/// scheme MUST be `spiffe`) apart from a malformed SPIFFE ID (SPIFFE-ID §2).
fn parse_uri_san(uri: &str) -> Result<SpiffeId, VerifyError> {
    // RFC 3986 §3.1: the scheme ends at the first ':' and compares case-insensitively;
    // `SPIFFE://` is the right scheme in the wrong case, which the ID parser reports.
    let scheme = uri.split_once(':').map(|(scheme, _)| scheme);
    if !scheme.is_some_and(|scheme| scheme.eq_ignore_ascii_case("spiffe")) {
        return Err(VerifyError::NotSpiffeScheme {
            uri: uri.to_owned(),
        });
    }
    SpiffeId::parse(uri).map_err(|source| VerifyError::InvalidId {
        uri: uri.to_owned(),
        source,
    })
}

fn malformed(err: impl fmt::Display) -> VerifyError {
    VerifyError::Malformed {
        reason: err.to_string(),
    }
}

/// Map webpki's path validation error to the variant an operator can act on.
fn path_error(
    err: webpki::Error,
    bundle: &Bundle,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
) -> VerifyError {
    let trust_domain = bundle.trust_domain().clone();
    match err {
        webpki::Error::CertExpired { not_after, .. } => VerifyError::Expired { now, not_after },
        webpki::Error::CertNotValidYet { not_before, .. } => {
            VerifyError::NotYetValid { now, not_before }
        }
        webpki::Error::UnknownIssuer => VerifyError::UnknownIssuer { trust_domain },
        webpki::Error::InvalidSignatureForPublicKey => VerifyError::BadSignature { trust_domain },
        webpki::Error::NameConstraintViolation => match uri_constrained_ca(bundle, intermediates) {
            Some(ca) => VerifyError::UriNameConstraint { ca },
            None => VerifyError::Path {
                reason: err.to_string(),
            },
        },
        other => VerifyError::Path {
            reason: other.to_string(),
        },
    }
}

/// The subject of the first CA, among the bundle's authorities and the supplied
/// intermediates, whose name constraints have a URI subtree: after a name constraint
/// violation, that CA is why (see the module docs on X509-SVID §4.2).
fn uri_constrained_ca(bundle: &Bundle, intermediates: &[CertificateDer<'_>]) -> Option<String> {
    let authorities = bundle.x509_authorities().iter().map(|a| a.der().as_ref());
    let supplied = intermediates.iter().map(AsRef::as_ref);
    authorities.chain(supplied).find_map(|der| {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let constraints = cert.name_constraints().ok()??;
        let subtrees = [
            &constraints.value.permitted_subtrees,
            &constraints.value.excluded_subtrees,
        ];
        subtrees
            .into_iter()
            .flatten()
            .flatten()
            .any(|subtree| matches!(subtree.base, GeneralName::URI(_)))
            .then(|| cert.subject().to_string())
    })
}

/// A `UnixTime` for humans: a UTC date and time when representable, else seconds.
fn when(time: &UnixTime) -> String {
    i64::try_from(time.as_secs())
        .ok()
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .map_or_else(
            || format!("{} s after the Unix epoch", time.as_secs()),
            |at| at.to_string(),
        )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn scheme_is_found_before_parsing() {
        assert!(matches!(
            parse_uri_san("sparfe://td/x"),
            Err(VerifyError::NotSpiffeScheme { .. })
        ));
        assert!(matches!(
            parse_uri_san("no-scheme-at-all"),
            Err(VerifyError::NotSpiffeScheme { .. })
        ));
        assert!(matches!(
            parse_uri_san("SPIFFE://td/x"),
            Err(VerifyError::InvalidId {
                source: IdError::UpperCaseScheme { .. },
                ..
            })
        ));
        assert!(matches!(
            parse_uri_san("spiffe:td/x"),
            Err(VerifyError::InvalidId {
                source: IdError::WrongScheme,
                ..
            })
        ));
        assert_eq!(
            parse_uri_san("spiffe://td/x").unwrap().to_string(),
            "spiffe://td/x"
        );
    }

    #[test]
    fn times_are_readable() {
        let at = UnixTime::since_unix_epoch(Duration::from_secs(0));
        assert_eq!(when(&at), "1970-01-01 0:00:00.0 +00:00:00");
        let far = UnixTime::since_unix_epoch(Duration::from_secs(u64::MAX));
        assert!(when(&far).ends_with("s after the Unix epoch"));
    }
}
