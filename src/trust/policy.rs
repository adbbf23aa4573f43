//! Acceptance policy: whether a well-formed candidate bundle may replace the stored one.
//!
//! Owns the rules that sit between the format gate (`spiffe_federation::Bundle::parse`)
//! and the [`TrustStore`](crate::trust::store::TrustStore): trust domain match
//! (FED-7), sequence ordering (STO-2, STO-3, L-3), operator overrides (STO-4, L-5),
//! "nothing changed" detection (POLL-1), revocation by an empty bundle (BUN-11, L-4)
//! and who may revoke, documents whose every element was left out, expired-only
//! bundles and size limits. Every rule is a pure function of
//! `(current, candidate, document, source, settings, now)`: no I/O, no clock, no
//! state.
//!
//! An empty bundle means two different things. From a deliberately empty `keys` list
//! it is a revocation (TDB §4.1.3): every key of the domain is withdrawn. From a
//! document whose elements were all left out by the parser (one leaf certificate,
//! thousands of `{}`), it is a publisher's mistake, and storing it would revoke every
//! key just the same: one broken deploy on the peer's side would become an outage on
//! this side. So the second is always refused ([`PolicyError::AllElementsIgnored`]),
//! and the first is accepted only where the caller allows revocation
//! ([`DocumentFacts::allow_revocation`]: a relationship's `allow_revocation`, off by
//! default; always for an operator's `PUT` and a local file, which are deliberate);
//! otherwise it is refused ([`PolicyError::RevocationRefused`]). Either way the stored
//! bundle stays.
//!
//! It also owns the lints on *stored* bundles that never refuse anything
//! ([`BundleWarning`]): a CA without its trust domain's path-less SPIFFE ID (ID-16)
//! and a CA public key shared between trust domains (SEC-7), as pure functions of the
//! bundles held ([`bundle_warnings`]).
//!
//! It does not own the document format (the `spiffe-federation` crate), storage
//! ([`store`](crate::trust::db)) or publishing ([`trust_store`](crate::trust::store)).
//!
//! ```
//! use fedgw::trust::policy::{evaluate, Decision, PolicySettings, Source, Warning};
//! use spiffe_federation::{Bundle, TrustDomain};
//!
//! let td: TrustDomain = "east.example".parse()?;
//! let candidate = Bundle::new(td.clone()); // no authorities: a revocation
//! let source = Source::Operator { who: "alice".into() };
//! let now = time::OffsetDateTime::UNIX_EPOCH;
//! let settings = PolicySettings::default();
//! let decision = evaluate(&td, None, &candidate, None, &source, &settings, now)?;
//! assert_eq!(decision, Decision::Accept { warnings: vec![Warning::Revocation] });
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use spiffe_federation::bundle::{IgnoredSummary, PublicKey, X509Authority};
use spiffe_federation::{Bundle, TrustDomain};
use time::OffsetDateTime;
use url::Url;

/// The default cap on authorities in one bundle (X.509, JWT and WIT together).
pub const DEFAULT_MAX_AUTHORITIES: usize = 10_000;

pub use crate::config::SequencePolicy;

/// Tunable acceptance rules; the `[policy]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PolicySettings {
    /// Reaction to a sequence regression (default `reject`).
    pub sequence: SequencePolicy,
    /// Most authorities one bundle may carry (default [`DEFAULT_MAX_AUTHORITIES`]).
    pub max_authorities: usize,
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            sequence: SequencePolicy::default(),
            max_authorities: DEFAULT_MAX_AUTHORITIES,
        }
    }
}

/// Where a bundle came from; stored with it and shown in the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Source {
    /// Fetched from a foreign bundle endpoint (FED §5).
    Fetched {
        /// The configured endpoint URL.
        url: Url,
        /// The URL that answered, after redirects.
        final_url: Url,
        /// The peer's socket address or authenticated SPIFFE ID, as the fetcher saw it.
        peer: String,
    },
    /// Read from a local file (a local domain's own bundle).
    LocalFile {
        /// The file read.
        path: PathBuf,
    },
    /// Pushed by a SPIFFE Workload API (a SPIRE agent; a local domain's own bundle).
    WorkloadApi {
        /// The socket, as configured.
        socket: String,
    },
    /// Set by an operator through the admin API or CLI (STO-4).
    Operator {
        /// The authenticated caller.
        who: String,
    },
    /// The bootstrap bundle from configuration, used to authenticate the first
    /// `https_spiffe` fetch.
    Bootstrap {
        /// Who configured it (e.g. the configuration file path).
        who: String,
    },
}

impl Source {
    /// Whether this is an operator override, which resets the sequence baseline (L-5).
    pub fn is_operator(&self) -> bool {
        matches!(self, Self::Operator { .. })
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fetched { url, final_url, .. } if url == final_url => {
                write!(f, "fetched from {url}")
            }
            Self::Fetched { url, final_url, .. } => {
                write!(f, "fetched from {url} (redirected to {final_url})")
            }
            Self::LocalFile { path } => write!(f, "local file {}", path.display()),
            Self::WorkloadApi { socket } => write!(f, "Workload API {socket}"),
            Self::Operator { who } => write!(f, "operator {who}"),
            Self::Bootstrap { who } => write!(f, "bootstrap from {who}"),
        }
    }
}

/// The bundle stored now for the trust domain, and where it came from.
#[derive(Debug, Clone, Copy)]
pub struct Current<'a> {
    /// The stored bundle.
    pub bundle: &'a Bundle,
    /// Where it came from.
    pub source: &'a Source,
}

/// What policy knows of the bundle document a candidate was read from. A bundle that
/// was not read from a bundle document (built in code, read from PEM, restored from
/// history) has none, and the rules below do not apply to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentFacts {
    /// The document's elements and those the parser left out
    /// ([`Parsed::ignored_summary`](spiffe_federation::Parsed::ignored_summary)).
    pub elements: IgnoredSummary,
    /// Whether a deliberately empty `keys` list (a revocation) may replace the stored
    /// bundle: a relationship's `allow_revocation` for a fetched document; `true` for
    /// an operator's upload and a local file, which are deliberate.
    pub allow_revocation: bool,
}

/// The verdict on an acceptable candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Store the candidate and announce it; the warnings say what was odd about it.
    Accept {
        /// Facts worth an operator's attention, in the order the rules ran.
        warnings: Vec<Warning>,
    },
    /// The candidate equals the stored bundle (content and sequence): nothing to store
    /// or announce (POLL-1, no sink churn).
    Unchanged,
}

/// Something odd about an accepted bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Warning {
    /// The sequence went down and [`SequencePolicy::Warn`] let it through (STO-2).
    #[error("spiffe_sequence went down from {current} to {candidate}; accepted by policy")]
    SequenceRegression {
        /// The stored sequence.
        current: u64,
        /// The candidate's sequence.
        candidate: u64,
    },
    /// The authorities changed but the sequence did not: a publisher bug (BUN-4, L-3).
    #[error("authorities changed but spiffe_sequence stayed {sequence} (publisher bug)")]
    SameSequenceNewContent {
        /// The unchanged sequence.
        sequence: u64,
    },
    /// The stored bundle had a sequence and the candidate has none (STO-3).
    #[error("spiffe_sequence dropped (was {previous}); the latest bundle is taken as current")]
    SequenceDropped {
        /// The stored sequence.
        previous: u64,
    },
    /// The candidate has no authorities: the trust domain revoked every key (BUN-11).
    #[error("bundle has no authorities: every SVID of the trust domain is now untrusted")]
    Revocation,
    /// Every X.509 authority has expired; the bundle is stored but cannot verify
    /// X509-SVIDs.
    #[error("all {count} X.509 authorities expired; the latest expired at {latest_not_after}")]
    ExpiredOnly {
        /// How many X.509 authorities the bundle has.
        count: usize,
        /// The latest `notAfter` among them.
        latest_not_after: OffsetDateTime,
    },
}

impl Warning {
    /// A stable label for metrics and the admin API.
    pub fn code(&self) -> &'static str {
        match self {
            Self::SequenceRegression { .. } => "sequence_regression",
            Self::SameSequenceNewContent { .. } => "same_sequence_new_content",
            Self::SequenceDropped { .. } => "sequence_dropped",
            Self::Revocation => "revocation",
            Self::ExpiredOnly { .. } => "expired_only",
        }
    }
}

/// Why a well-formed candidate was refused; the stored bundle stays as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The candidate belongs to another trust domain than the one it was fetched or
    /// submitted for (FED-7).
    #[error("bundle is for trust domain {actual}, expected {expected}")]
    TrustDomainMismatch {
        /// The configured trust domain.
        expected: TrustDomain,
        /// The candidate's trust domain.
        actual: TrustDomain,
    },
    /// The candidate's sequence is lower than the stored one (STO-2).
    #[error(
        "{trust_domain}: spiffe_sequence went down from {current} to {candidate}; keeping the stored bundle"
    )]
    SequenceRegression {
        /// The trust domain.
        trust_domain: TrustDomain,
        /// The stored sequence.
        current: u64,
        /// The candidate's sequence.
        candidate: u64,
    },
    /// The candidate carries more authorities than allowed.
    #[error("bundle has {actual} authorities; the limit is {limit}")]
    TooManyAuthorities {
        /// The configured limit.
        limit: usize,
        /// The candidate's count.
        actual: usize,
    },
    /// A bootstrap bundle only seeds an empty slot: it never replaces a stored bundle,
    /// which is newer than the configuration's copy.
    #[error("{trust_domain}: a bundle is already stored; the bootstrap bundle is not used")]
    BootstrapOverStored {
        /// The trust domain.
        trust_domain: TrustDomain,
    },
    /// The document's `keys` listed elements and every one was left out (a leaf
    /// certificate as the only authority, unknown key types, `{}`s): the empty bundle
    /// left is a publisher's mistake, not a revocation, and is never stored.
    #[error(
        "{trust_domain}: every element of \"keys\" was left out ({summary}); the document is refused and {}",
        kept(*.stored)
    )]
    AllElementsIgnored {
        /// The trust domain.
        trust_domain: TrustDomain,
        /// What the document held and why each kind of element was left out.
        summary: IgnoredSummary,
        /// Whether a bundle is stored (and kept) for the trust domain.
        stored: bool,
    },
    /// A deliberately empty `keys` list, which would revoke every key of the trust
    /// domain (TDB §4.1.3), from a source that may not revoke: a relationship without
    /// `allow_revocation = true`.
    #[error(
        "{trust_domain}: the document's \"keys\" list is empty, which would revoke every key of the trust domain; the relationship does not allow revocation (allow_revocation = false), so {}",
        kept(*.stored)
    )]
    RevocationRefused {
        /// The trust domain.
        trust_domain: TrustDomain,
        /// Whether a bundle is stored (and kept) for the trust domain.
        stored: bool,
    },
}

/// The end of a refusal's message: what keeps serving.
fn kept(stored: bool) -> &'static str {
    if stored {
        "the last good bundle is kept"
    } else {
        "nothing is stored for it"
    }
}

impl PolicyError {
    /// A stable label for each refusal: the admin API's error code and the `reason`
    /// label of `fedgw_bundle_rejections_total` (documented in docs/admin-api.md).
    pub fn code(&self) -> &'static str {
        match self {
            Self::TrustDomainMismatch { .. } => "trust_domain_mismatch",
            Self::SequenceRegression { .. } => "sequence_regression",
            Self::TooManyAuthorities { .. } => "too_many_authorities",
            Self::BootstrapOverStored { .. } => "bootstrap_over_stored",
            Self::AllElementsIgnored { .. } => "all_elements_ignored",
            Self::RevocationRefused { .. } => "revocation_refused",
        }
    }
}

/// Something about a stored bundle worth an operator's attention that never refuses
/// it. Unlike [`Warning`], which is about one submission, these hold as long as the
/// bundles stored say so: they are recomputed whenever any bundle changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleWarning {
    /// An X.509 authority does not carry the URI SAN `spiffe://<trust domain>`
    /// (SPIFFE-ID §3.1: a signing certificate SHOULD reside in the trust domain it is
    /// authoritative for, with no path; ID-16).
    #[error(
        "X.509 authority {subject} (sha256 {sha256}) has no URI SAN spiffe://{trust_domain} (SPIFFE-ID §3.1)"
    )]
    CaWithoutTrustDomainId {
        /// The bundle's trust domain.
        trust_domain: TrustDomain,
        /// The certificate's subject.
        subject: String,
        /// SHA-256 of the certificate.
        sha256: String,
    },
    /// An X.509 authority's public key is also an authority key of another trust
    /// domain (TDB §6.2: keys should not be reused across trust domains; SEC-7). The
    /// other domain's CA could then vouch for this domain's SVIDs wherever a validator
    /// picks a bundle by key rather than by trust domain.
    #[error(
        "X.509 authority {subject} (sha256 {sha256}) has the same public key ({key}) as an authority of {other} (TDB §6.2: keys should not be shared between trust domains)"
    )]
    SharedCaKey {
        /// The other trust domain.
        other: TrustDomain,
        /// The certificate's subject, in this bundle.
        subject: String,
        /// SHA-256 of the certificate, in this bundle.
        sha256: String,
        /// The key type, e.g. `EC P-256`.
        key: String,
    },
}

impl BundleWarning {
    /// A stable label for metrics and the admin API.
    pub fn code(&self) -> &'static str {
        match self {
            Self::CaWithoutTrustDomainId { .. } => "ca_without_trust_domain_id",
            Self::SharedCaKey { .. } => "shared_ca_key",
        }
    }
}

/// The [`BundleWarning`]s of every bundle in `domains`, keyed like it (a domain with
/// none has an empty list): ID-16 per bundle, and SEC-7 across them, reported on
/// every bundle that holds a shared key, once per other trust domain.
pub fn bundle_warnings<'a>(
    domains: impl IntoIterator<Item = (&'a TrustDomain, &'a Bundle)>,
) -> BTreeMap<TrustDomain, Vec<BundleWarning>> {
    let domains: Vec<(&TrustDomain, &Bundle)> = domains.into_iter().collect();
    let mut holders: BTreeMap<&PublicKey, Vec<&TrustDomain>> = BTreeMap::new();
    for (td, bundle) in &domains {
        for authority in bundle.x509_authorities() {
            let tds = holders.entry(&authority.info().key).or_default();
            if !tds.contains(td) {
                tds.push(td);
            }
        }
    }
    domains
        .iter()
        .map(|(td, bundle)| {
            let warnings = domain_warnings(td, bundle, |key| {
                holders.get(key).into_iter().flatten().copied()
            });
            ((*td).clone(), warnings)
        })
        .collect()
}

/// The [`BundleWarning`]s of one bundle, given `holders`: every trust domain (in
/// order, `td` included or not) whose stored bundle has an X.509 authority with
/// that key. The trust store keeps such an index, so that a change re-derives the
/// warnings of only the domains it touches.
pub fn domain_warnings<'a, I>(
    td: &TrustDomain,
    bundle: &Bundle,
    holders: impl Fn(&PublicKey) -> I,
) -> Vec<BundleWarning>
where
    I: Iterator<Item = &'a TrustDomain>,
{
    let mut warnings = Vec::new();
    for authority in bundle.x509_authorities() {
        let info = authority.info();
        if !info.spiffe_ids.contains(&td.id()) {
            warnings.push(BundleWarning::CaWithoutTrustDomainId {
                trust_domain: td.clone(),
                subject: info.subject.clone(),
                sha256: info.sha256.clone(),
            });
        }
        for other in holders(&info.key).filter(|other| *other != td) {
            warnings.push(shared(authority, other));
        }
    }
    warnings
}

fn shared(authority: &X509Authority, other: &TrustDomain) -> BundleWarning {
    let info = authority.info();
    BundleWarning::SharedCaKey {
        other: other.clone(),
        subject: info.subject.clone(),
        sha256: info.sha256.clone(),
        key: info.key.describe(),
    }
}

/// Decide whether `candidate`, read from `document` (if it was read from a bundle
/// document) and submitted for `expected` by `source`, replaces `current`.
///
/// Rules, in order:
/// 1. the candidate's trust domain must be `expected` (FED-7);
/// 2. a document whose `keys` listed elements none of which was kept is refused
///    ([`PolicyError::AllElementsIgnored`]), whatever is stored;
/// 3. at most `settings.max_authorities` authorities;
/// 4. equal to the stored bundle (content and sequence) → [`Decision::Unchanged`];
/// 5. a [`Source::Bootstrap`] never replaces a stored bundle;
/// 6. sequences are compared unless either side is an operator override (L-5: an
///    override is always accepted and resets the baseline): lower → per
///    [`SequencePolicy`]; equal with other authorities → warning (L-3); dropped →
///    warning (STO-3); unsequenced on both sides → the latest wins;
/// 7. no authorities (BUN-11): refused when the document does not allow revocation
///    ([`PolicyError::RevocationRefused`]), else flagged ([`Warning::Revocation`]);
/// 8. flagged, never refused: every X.509 authority expired at `now`
///    ([`Warning::ExpiredOnly`]).
///
/// # Errors
/// A [`PolicyError`] naming the rule that refused the candidate.
pub fn evaluate(
    expected: &TrustDomain,
    current: Option<Current<'_>>,
    candidate: &Bundle,
    document: Option<&DocumentFacts>,
    source: &Source,
    settings: &PolicySettings,
    now: OffsetDateTime,
) -> Result<Decision, PolicyError> {
    if candidate.trust_domain() != expected {
        return Err(PolicyError::TrustDomainMismatch {
            expected: expected.clone(),
            actual: candidate.trust_domain().clone(),
        });
    }
    if let Some(facts) = document
        && (facts.elements.all_ignored() || (facts.elements.elements > 0 && candidate.is_empty()))
    {
        return Err(PolicyError::AllElementsIgnored {
            trust_domain: expected.clone(),
            summary: facts.elements.clone(),
            stored: current.is_some(),
        });
    }
    let count = authority_count(candidate);
    if count > settings.max_authorities {
        return Err(PolicyError::TooManyAuthorities {
            limit: settings.max_authorities,
            actual: count,
        });
    }
    let mut warnings = Vec::new();
    if let Some(current) = current {
        if current.bundle == candidate {
            return Ok(Decision::Unchanged);
        }
        if matches!(source, Source::Bootstrap { .. }) {
            return Err(PolicyError::BootstrapOverStored {
                trust_domain: expected.clone(),
            });
        }
        if !source.is_operator() && !current.source.is_operator() {
            sequence_rules(expected, current.bundle, candidate, settings, &mut warnings)?;
        }
    }
    if candidate.is_empty() {
        if document.is_some_and(|facts| !facts.allow_revocation) {
            return Err(PolicyError::RevocationRefused {
                trust_domain: expected.clone(),
                stored: current.is_some(),
            });
        }
        warnings.push(Warning::Revocation);
    }
    if let Some(latest_not_after) = expired_only(candidate, now) {
        warnings.push(Warning::ExpiredOnly {
            count: candidate.x509_authorities().len(),
            latest_not_after,
        });
    }
    Ok(Decision::Accept { warnings })
}

/// All authorities of every kind.
fn authority_count(bundle: &Bundle) -> usize {
    bundle.x509_authorities().len()
        + bundle.jwt_authorities().len()
        + bundle.wit_authorities().len()
}

/// STO-2, STO-3 and L-3 between two non-operator bundles.
fn sequence_rules(
    trust_domain: &TrustDomain,
    current: &Bundle,
    candidate: &Bundle,
    settings: &PolicySettings,
    warnings: &mut Vec<Warning>,
) -> Result<(), PolicyError> {
    match (current.sequence(), candidate.sequence()) {
        (Some(old), Some(new)) if new < old => match settings.sequence {
            SequencePolicy::Reject => {
                return Err(PolicyError::SequenceRegression {
                    trust_domain: trust_domain.clone(),
                    current: old,
                    candidate: new,
                });
            }
            SequencePolicy::Warn => warnings.push(Warning::SequenceRegression {
                current: old,
                candidate: new,
            }),
            SequencePolicy::Accept => {}
        },
        // A refresh-hint-only change under the same sequence is not a content change.
        (Some(old), Some(new)) if new == old && !current.same_authorities(candidate) => {
            warnings.push(Warning::SameSequenceNewContent { sequence: new });
        }
        (Some(old), None) => warnings.push(Warning::SequenceDropped { previous: old }),
        _ => {}
    }
    Ok(())
}

/// The latest `notAfter` when there is at least one X.509 authority and all expired.
fn expired_only(bundle: &Bundle, now: OffsetDateTime) -> Option<OffsetDateTime> {
    let authorities = bundle.x509_authorities();
    let latest = authorities.iter().map(|a| a.info().not_after).max()?;
    (latest < now).then_some(latest)
}

#[cfg(test)]
pub(crate) mod testing {
    //! Bundles with real rcgen certificates, shared by the unit tests of the data path.

    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
    use spiffe_federation::bundle::X509Authority;
    use spiffe_federation::{Bundle, TrustDomain};
    use time::{Duration, OffsetDateTime};

    /// A fixed "now" for tests: 2030-01-01T00:00:00Z.
    pub(crate) fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_893_456_000).unwrap()
    }

    pub(crate) fn td(name: &str) -> TrustDomain {
        name.parse().unwrap()
    }

    /// A self-signed CA for `td` valid from a year before [`now`] until `not_after`.
    pub(crate) fn ca(td: &TrustDomain, not_after: OffsetDateTime) -> X509Authority {
        ca_with_key(&KeyPair::generate().unwrap(), Some(td), not_after)
    }

    /// A self-signed CA with `key`, carrying the URI SAN `spiffe://<id_of>` when given.
    pub(crate) fn ca_with_key(
        key: &KeyPair,
        id_of: Option<&TrustDomain>,
        not_after: OffsetDateTime,
    ) -> X509Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.subject_alt_names = id_of
            .map(|td| rcgen::SanType::URI(format!("spiffe://{td}").as_str().try_into().unwrap()))
            .into_iter()
            .collect();
        params.not_before = now() - Duration::days(365);
        params.not_after = not_after;
        let der = params.self_signed(key).unwrap().der().to_vec();
        X509Authority::from_der(der).unwrap()
    }

    /// A bundle for `td` with one fresh CA (valid a year past [`now`]) and `sequence`.
    pub(crate) fn bundle(td: &TrustDomain, sequence: Option<u64>) -> Bundle {
        let mut bundle = Bundle::new(td.clone());
        bundle.add_x509_authority(ca(td, now() + Duration::days(365)));
        bundle.set_sequence(sequence);
        bundle
    }

    /// `bundle` with `sequence` replaced.
    pub(crate) fn with_sequence(bundle: &Bundle, sequence: Option<u64>) -> Bundle {
        let mut bundle = bundle.clone();
        bundle.set_sequence(sequence);
        bundle
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration as StdDuration;

    use time::Duration;

    use super::testing::{bundle, ca, ca_with_key, now, td, with_sequence};
    use super::*;

    fn fetched() -> Source {
        let url: Url = "https://east.example/bundle".parse().unwrap();
        Source::Fetched {
            final_url: url.clone(),
            url,
            peer: "192.0.2.1:443".into(),
        }
    }

    fn operator() -> Source {
        Source::Operator {
            who: "alice".into(),
        }
    }

    /// One table row: the stored state, the candidate and how it arrives.
    struct Case {
        expected: TrustDomain,
        current: Option<(Bundle, Source)>,
        candidate: Bundle,
        document: Option<DocumentFacts>,
        source: Source,
        settings: PolicySettings,
    }

    impl Case {
        fn new(current: Option<(Bundle, Source)>, candidate: Bundle) -> Self {
            Self {
                expected: td("east.example"),
                current,
                candidate,
                document: None,
                source: fetched(),
                settings: PolicySettings::default(),
            }
        }

        /// The candidate was read from a document of `elements` elements, of which
        /// `ignored` were left out, from a source that may (or may not) revoke.
        fn document(mut self, elements: usize, ignored: usize, allow_revocation: bool) -> Self {
            let authorities = authority_count(&self.candidate);
            self.document = Some(DocumentFacts {
                elements: IgnoredSummary {
                    elements,
                    authorities,
                    ignored,
                    by_reason: Vec::new(),
                },
                allow_revocation,
            });
            self
        }

        fn source(mut self, source: Source) -> Self {
            self.source = source;
            self
        }

        fn sequence_policy(mut self, policy: SequencePolicy) -> Self {
            self.settings.sequence = policy;
            self
        }

        fn max_authorities(mut self, limit: usize) -> Self {
            self.settings.max_authorities = limit;
            self
        }

        fn run(&self) -> Result<Decision, PolicyError> {
            let current = self
                .current
                .as_ref()
                .map(|(bundle, source)| Current { bundle, source });
            evaluate(
                &self.expected,
                current,
                &self.candidate,
                self.document.as_ref(),
                &self.source,
                &self.settings,
                now(),
            )
        }
    }

    fn east() -> TrustDomain {
        td("east.example")
    }

    /// Stored (fetched, seq `seq`) and a candidate with other authorities and `next`.
    fn update(seq: Option<u64>, next: Option<u64>) -> Case {
        Case::new(
            Some((bundle(&east(), seq), fetched())),
            bundle(&east(), next),
        )
    }

    fn accept(warnings: &[Warning]) -> Result<Decision, PolicyError> {
        Ok(Decision::Accept {
            warnings: warnings.to_vec(),
        })
    }

    /// One `#[test]` per row: `name: case => expected result;`.
    macro_rules! policy_table {
        ($($name:ident: $case:expr => $expected:expr;)+) => {$(
            #[test]
            fn $name() {
                let case: Case = $case;
                assert_eq!(case.run(), $expected);
            }
        )+};
    }

    policy_table! {
        fed_7_other_trust_domain_is_refused:
            Case::new(None, bundle(&td("west.example"), Some(1)))
            => Err(PolicyError::TrustDomainMismatch { expected: east(), actual: td("west.example") });
        first_bundle_is_accepted:
            Case::new(None, bundle(&east(), Some(1))) => accept(&[]);
        sto_2_higher_sequence_is_accepted:
            update(Some(5), Some(6)) => accept(&[]);
        sto_2_regression_is_rejected_by_default:
            update(Some(5), Some(4))
            => Err(PolicyError::SequenceRegression { trust_domain: east(), current: 5, candidate: 4 });
        sto_2_regression_with_warn_policy_is_accepted_with_warning:
            update(Some(5), Some(4)).sequence_policy(SequencePolicy::Warn)
            => accept(&[Warning::SequenceRegression { current: 5, candidate: 4 }]);
        sto_2_regression_with_accept_policy_is_accepted_silently:
            update(Some(5), Some(4)).sequence_policy(SequencePolicy::Accept) => accept(&[]);
        sto_3_unsequenced_after_unsequenced_replaces:
            update(None, None) => accept(&[]);
        sto_3_unsequenced_after_sequenced_is_flagged:
            update(Some(5), None) => accept(&[Warning::SequenceDropped { previous: 5 }]);
        sto_3_sequenced_after_unsequenced_is_accepted:
            update(None, Some(1)) => accept(&[]);
        l_3_same_sequence_new_content_is_accepted_with_warning:
            update(Some(5), Some(5)) => accept(&[Warning::SameSequenceNewContent { sequence: 5 }]);
        sto_4_operator_override_with_lower_sequence_is_accepted:
            update(Some(5), Some(1)).source(operator()) => accept(&[]);
        l_5_fetch_after_operator_override_is_not_compared_by_sequence:
            Case::new(Some((bundle(&east(), Some(9)), operator())), bundle(&east(), Some(2)))
            => accept(&[]);
        poll_1_identical_bundle_is_unchanged:
            { let b = bundle(&east(), Some(3)); Case::new(Some((b.clone(), fetched())), b) }
            => Ok(Decision::Unchanged);
        poll_1_identical_bundle_from_operator_is_unchanged:
            { let b = bundle(&east(), None); Case::new(Some((b.clone(), fetched())), b).source(operator()) }
            => Ok(Decision::Unchanged);
        poll_1_same_authorities_new_sequence_is_accepted:
            { let b = bundle(&east(), Some(3)); Case::new(Some((b.clone(), fetched())), with_sequence(&b, Some(4))) }
            => accept(&[]);
        l_3_refresh_hint_change_under_same_sequence_is_not_flagged:
            {
                let b = bundle(&east(), Some(3));
                let mut c = b.clone();
                c.set_refresh_hint(Some(StdDuration::from_secs(300)));
                Case::new(Some((b, fetched())), c)
            }
            => accept(&[]);
        bun_11_empty_bundle_is_accepted_as_revocation:
            Case::new(Some((bundle(&east(), Some(1)), fetched())), with_sequence(&Bundle::new(east()), Some(2)))
            => accept(&[Warning::Revocation]);
        bun_11_first_bundle_empty_is_a_revocation:
            Case::new(None, Bundle::new(east())) => accept(&[Warning::Revocation]);
        expired_only_bundle_is_flagged_not_refused:
            {
                let mut b = Bundle::new(east());
                b.add_x509_authority(ca(&east(), now() - Duration::days(2)));
                b.add_x509_authority(ca(&east(), now() - Duration::days(1)));
                Case::new(None, b)
            }
            => accept(&[Warning::ExpiredOnly { count: 2, latest_not_after: now() - Duration::days(1) }]);
        one_valid_authority_is_not_expired_only:
            {
                let mut b = bundle(&east(), None);
                b.add_x509_authority(ca(&east(), now() - Duration::days(1)));
                Case::new(None, b)
            }
            => accept(&[]);
        too_many_authorities_are_refused:
            {
                let mut b = bundle(&east(), None);
                b.add_x509_authority(ca(&east(), now() + Duration::days(1)));
                Case::new(None, b).max_authorities(1)
            }
            => Err(PolicyError::TooManyAuthorities { limit: 1, actual: 2 });
        authorities_at_the_limit_are_accepted:
            Case::new(None, bundle(&east(), None)).max_authorities(1) => accept(&[]);
        bootstrap_fills_an_empty_slot:
            Case::new(None, bundle(&east(), None)).source(Source::Bootstrap { who: "fedgw.toml".into() })
            => accept(&[]);
        bootstrap_never_replaces_a_stored_bundle:
            update(Some(1), Some(2)).source(Source::Bootstrap { who: "fedgw.toml".into() })
            => Err(PolicyError::BootstrapOverStored { trust_domain: east() });
        all_elements_ignored_is_refused_and_the_stored_bundle_kept:
            Case::new(Some((bundle(&east(), Some(1)), fetched())), with_sequence(&Bundle::new(east()), Some(2)))
                .document(1, 1, true)
            => Err(PolicyError::AllElementsIgnored { trust_domain: east(), summary: summary(1, 1), stored: true });
        all_elements_ignored_is_refused_even_from_an_operator:
            Case::new(None, Bundle::new(east())).document(100_000, 100_000, true).source(operator())
            => Err(PolicyError::AllElementsIgnored { trust_domain: east(), summary: summary(100_000, 100_000), stored: false });
        all_elements_ignored_is_refused_even_over_an_empty_stored_bundle:
            Case::new(Some((Bundle::new(east()), operator())), Bundle::new(east())).document(2, 2, true)
            => Err(PolicyError::AllElementsIgnored { trust_domain: east(), summary: summary(2, 2), stored: true });
        some_elements_ignored_is_accepted:
            Case::new(None, bundle(&east(), Some(1))).document(3, 2, false) => accept(&[]);
        empty_keys_is_refused_where_revocation_is_not_allowed:
            Case::new(Some((bundle(&east(), Some(1)), fetched())), with_sequence(&Bundle::new(east()), Some(2)))
                .document(0, 0, false)
            => Err(PolicyError::RevocationRefused { trust_domain: east(), stored: true });
        empty_keys_as_a_first_bundle_is_refused_where_revocation_is_not_allowed:
            Case::new(None, Bundle::new(east())).document(0, 0, false)
            => Err(PolicyError::RevocationRefused { trust_domain: east(), stored: false });
        empty_keys_is_a_revocation_where_allowed:
            Case::new(Some((bundle(&east(), Some(1)), fetched())), with_sequence(&Bundle::new(east()), Some(2)))
                .document(0, 0, true)
            => accept(&[Warning::Revocation]);
        empty_keys_equal_to_the_stored_empty_bundle_is_unchanged:
            Case::new(Some((Bundle::new(east()), fetched())), Bundle::new(east())).document(0, 0, false)
            => Ok(Decision::Unchanged);
        a_sequence_regression_is_named_before_a_refused_revocation:
            Case::new(Some((bundle(&east(), Some(5)), fetched())), with_sequence(&Bundle::new(east()), Some(4)))
                .document(0, 0, false)
            => Err(PolicyError::SequenceRegression { trust_domain: east(), current: 5, candidate: 4 });
    }

    fn summary(elements: usize, ignored: usize) -> IgnoredSummary {
        IgnoredSummary {
            elements,
            authorities: 0,
            ignored,
            by_reason: Vec::new(),
        }
    }

    #[test]
    fn refusals_of_empty_bundles_say_what_was_served_and_what_is_kept() {
        let parsed = Bundle::parse(&east(), br#"{"keys":[{},{}]}"#).unwrap();
        let facts = DocumentFacts {
            elements: parsed.ignored_summary(),
            allow_revocation: true,
        };
        let stored = bundle(&east(), Some(1));
        let source = fetched();
        let current = Current {
            bundle: &stored,
            source: &source,
        };
        let settings = PolicySettings::default();
        let err = evaluate(
            &east(),
            Some(current),
            &parsed.bundle,
            Some(&facts),
            &source,
            &settings,
            now(),
        )
        .unwrap_err();
        assert_eq!(err.code(), "all_elements_ignored");
        assert_eq!(
            err.to_string(),
            "east.example: every element of \"keys\" was left out (2 of 2 elements left out: 2 × no \"use\" member (first at /keys/0)); the document is refused and the last good bundle is kept"
        );
        let refused = PolicyError::RevocationRefused {
            trust_domain: east(),
            stored: false,
        };
        assert_eq!(refused.code(), "revocation_refused");
        assert!(
            refused.to_string().ends_with("so nothing is stored for it"),
            "{refused}"
        );
        assert!(
            refused.to_string().contains("allow_revocation = false"),
            "{refused}"
        );
    }

    fn year() -> OffsetDateTime {
        now() + Duration::days(365)
    }

    fn codes(
        warnings: &BTreeMap<TrustDomain, Vec<BundleWarning>>,
        td: &TrustDomain,
    ) -> Vec<&'static str> {
        warnings[td].iter().map(BundleWarning::code).collect()
    }

    #[test]
    fn sec_7_ca_key_shared_between_domains_is_warned_on_both() {
        let (a, b, c) = (td("a.example"), td("b.example"), td("c.example"));
        let key = rcgen::KeyPair::generate().unwrap();
        // Two different certificates (each names its own domain) over one key.
        let mut in_a = Bundle::new(a.clone());
        in_a.add_x509_authority(ca_with_key(&key, Some(&a), year()));
        let mut in_b = Bundle::new(b.clone());
        in_b.add_x509_authority(ca_with_key(&key, Some(&b), year()));
        in_b.add_x509_authority(ca(&b, year()));
        let in_c = bundle(&c, Some(1));
        let warnings = bundle_warnings([(&a, &in_a), (&b, &in_b), (&c, &in_c)]);
        assert_eq!(codes(&warnings, &a), ["shared_ca_key"]);
        assert_eq!(codes(&warnings, &b), ["shared_ca_key"]);
        assert!(warnings[&c].is_empty(), "an unshared key is not warned");
        let BundleWarning::SharedCaKey {
            other, sha256, key, ..
        } = &warnings[&a][0]
        else {
            panic!("{:?}", warnings[&a]);
        };
        assert_eq!(other, &b);
        assert_eq!(sha256, &in_a.x509_authorities()[0].info().sha256);
        assert_eq!(key, "EC P-256");
        assert!(
            warnings[&b][0].to_string().contains("a.example"),
            "{}",
            warnings[&b][0]
        );
    }

    #[test]
    fn sec_7_same_key_within_one_domain_is_not_shared() {
        let a = td("a.example");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut in_a = Bundle::new(a.clone());
        in_a.add_x509_authority(ca_with_key(&key, Some(&a), year()));
        in_a.add_x509_authority(ca_with_key(&key, Some(&a), now() + Duration::days(30)));
        assert_eq!(in_a.x509_authorities().len(), 2);
        assert!(bundle_warnings([(&a, &in_a)])[&a].is_empty());
    }

    #[test]
    fn id_16_ca_without_its_trust_domain_id_is_warned_on_the_stored_bundle() {
        let a = td("a.example");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut in_a = Bundle::new(a.clone());
        in_a.add_x509_authority(ca_with_key(&key, None, year()));
        in_a.add_x509_authority(ca(&td("other.example"), year()));
        in_a.add_x509_authority(ca(&a, year()));
        let warnings = bundle_warnings([(&a, &in_a)]);
        assert_eq!(
            codes(&warnings, &a),
            ["ca_without_trust_domain_id", "ca_without_trust_domain_id"]
        );
        assert!(warnings[&a][0].to_string().contains("spiffe://a.example"));
    }

    #[test]
    fn refusals_and_warnings_have_stable_codes() {
        let refused = update(Some(5), Some(4)).run().unwrap_err();
        assert_eq!(refused.code(), "sequence_regression");
        assert_eq!(Warning::Revocation.code(), "revocation");
    }

    #[test]
    fn sequence_policy_is_lowercase_in_config_and_defaults_to_reject() {
        let settings: PolicySettings = serde_json::from_str(r#"{"sequence":"warn"}"#).unwrap();
        assert_eq!(settings.sequence, SequencePolicy::Warn);
        assert_eq!(settings.max_authorities, DEFAULT_MAX_AUTHORITIES);
        assert_eq!(PolicySettings::default().sequence, SequencePolicy::Reject);
        assert!(serde_json::from_str::<PolicySettings>(r#"{"sequence":"Warn"}"#).is_err());
    }

    #[test]
    fn source_round_trips_through_serde() {
        for source in [
            fetched(),
            operator(),
            Source::LocalFile {
                path: "/etc/fedgw/local.json".into(),
            },
            Source::Bootstrap {
                who: "fedgw.toml".into(),
            },
        ] {
            let json = serde_json::to_string(&source).unwrap();
            assert_eq!(serde_json::from_str::<Source>(&json).unwrap(), source);
        }
    }
}
