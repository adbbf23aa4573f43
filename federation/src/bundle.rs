//! SPIFFE bundles: the model, the bundle JSON document, and PEM.
//!
//! Owns the rules of the SPIFFE Trust Domain and Bundle standard (TDB §4), the
//! X509-SVID, JWT-SVID and WIT-SVID bundle sections (§6 of each) and RFC 7517 as they
//! apply to one bundle document. It does not decide whether a bundle should replace
//! another (sequence, expiry and size *policy* belong to the gateway), and it never
//! infers the trust domain: the caller names it (SPIFFE Federation §5.2.1.4).
//!
//! Parsing is strict about the document and lenient about elements, as TDB §4.1.3 and
//! RFC 7517 §5 require: a broken document is a [`BundleError`]; a broken or unknown
//! element is left out and reported as an [`Ignored`] entry, so the caller can show
//! why. Facts worth a warning that do not remove anything are [`Lint`]s. A document
//! whose elements were *all* left out parses to an empty bundle just like a
//! deliberately empty `keys` list (a revocation); [`Parsed::all_ignored`] and
//! [`Parsed::ignored_summary`] tell the two apart, so that a caller can refuse the
//! first without refusing the second.
//!
//! Serialisation is deterministic: equal bundles serialise to equal bytes (authorities
//! sorted, members in a fixed order, only members the standards define).
//!
//! ```
//! use spiffe_federation::{Bundle, TrustDomain};
//!
//! let td: TrustDomain = "example.org".parse()?;
//! let parsed = Bundle::parse(&td, br#"{"keys":[],"spiffe_sequence":3}"#)?;
//! assert_eq!(parsed.bundle.sequence(), Some(3));
//! assert!(parsed.bundle.is_empty()); // an empty key set is a revocation (TDB §4.1.3)
//! assert_eq!(parsed.bundle.to_json(), br#"{"keys":[],"spiffe_sequence":3}"#);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod authority;
pub(crate) mod json;
mod map;
mod parse;
mod pem;
mod summary;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

pub use self::authority::{
    AuthorityError, CertInfo, EcCurve, EmptyKeyId, JwtAuthority, PublicKey, X509Authority,
};
pub use self::map::{BundleMap, ParsedMap};
pub use self::pem::PemError;
pub use self::summary::{IgnoredSummary, ReasonCount};
use crate::trust_domain::{IdError, TrustDomain};

/// The default cap on a bundle document's size, 1 MiB (see `docs/conformance.md`, EXT-2).
pub const DEFAULT_MAX_DOCUMENT_SIZE: usize = 1024 * 1024;

/// A trust domain's bundle: the authorities its SVIDs are verified against.
///
/// Equality compares the trust domain, every authority, the sequence and the refresh
/// hint; two equal bundles serialise to the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    trust_domain: TrustDomain,
    x509_authorities: Vec<X509Authority>,
    jwt_authorities: BTreeMap<String, JwtAuthority>,
    wit_authorities: BTreeMap<String, JwtAuthority>,
    sequence: Option<u64>,
    refresh_hint: Option<u64>,
}

/// The result of parsing a document: the bundle, the elements left out and why, and
/// warnings about what was kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The bundle built from the elements that passed.
    pub bundle: Bundle,
    /// Elements left out, with the JSON location and the reason.
    pub ignored: Vec<Ignored>,
    /// Warnings about kept content.
    pub lints: Vec<Lint>,
    /// How many elements the document's `keys` list held, kept or not.
    pub elements: usize,
}

/// A JWK element (or other part) left out of the bundle, as TDB §4.1.3 and RFC 7517 §5
/// require for unknown or broken elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// JSON Pointer (RFC 6901) to the element, e.g. `/keys/2`.
    pub location: String,
    /// Why it was left out.
    pub reason: IgnoreReason,
}

/// Why an element was left out of a bundle; [`IgnoreReason::code`] names each kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IgnoreReason {
    /// The element is not a JSON object.
    #[error("element is a JSON {found}, not an object")]
    NotAnObject {
        /// The JSON type found.
        found: &'static str,
    },
    /// A member name occurs twice in the element (RFC 7517 §4).
    #[error("member {name:?} occurs more than once")]
    DuplicateMember {
        /// The repeated name.
        name: String,
    },
    /// No `use` member (TDB §4.2.2).
    #[error("no \"use\" member")]
    MissingUse,
    /// A `use` value other than `x509-svid`, `jwt-svid` or `wit-svid` (case-sensitive).
    #[error("unknown use {value:?}")]
    UnknownUse {
        /// The value found (JSON text when it was not a string).
        value: String,
    },
    /// No `kty` member (TDB §4.2.1).
    #[error("no \"kty\" member")]
    MissingKty,
    /// A `kty` other than `EC`, `RSA` or `OKP`.
    #[error("unknown key type {value:?}")]
    UnknownKty {
        /// The value found.
        value: String,
    },
    /// An `x509-svid` element without a non-empty `x5c` array (X509-SVID §6.2).
    #[error("x509-svid element has no certificate: \"x5c\" is missing or empty")]
    MissingX5c,
    /// `x5c[0]` is not standard base64 (RFC 7517 §4.7 forbids base64url).
    #[error("x5c[0] is not standard base64 (RFC 7517 §4.7): {reason}")]
    X5cNotBase64 {
        /// Decoder message.
        reason: String,
    },
    /// The certificate in `x5c[0]` cannot be an authority.
    #[error("x5c[0]: {0}")]
    Certificate(AuthorityError),
    /// The key members do not match the certificate's key (RFC 7517 §4.7).
    #[error("key members do not match the public key of the x5c certificate")]
    KeyMismatch,
    /// A key member is missing or malformed (RFC 7517 §5, RFC 7518 §6).
    #[error("member {member:?}: {problem}")]
    BadKeyMember {
        /// The member name, e.g. `x`.
        member: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A curve this implementation does not support.
    #[error("unsupported curve {crv:?} for kty {kty}")]
    UnsupportedCurve {
        /// The key type.
        kty: &'static str,
        /// The curve named.
        crv: String,
    },
    /// A `jwt-svid` or `wit-svid` element without a non-empty string `kid`.
    #[error("no usable \"kid\": a {use_} key must carry a non-empty key ID")]
    MissingKid {
        /// `jwt-svid` or `wit-svid`.
        use_: &'static str,
    },
    /// Two elements of the same use carry the same `kid` with different keys; neither
    /// can be selected safely.
    #[error("kid {kid:?} is used by more than one {use_} key with different key material")]
    DuplicateKid {
        /// The key ID.
        kid: String,
        /// `jwt-svid` or `wit-svid`.
        use_: &'static str,
    },
    /// A `wit-svid` key reuses the `kid` of a `jwt-svid` key (WIT-SVID §6.1).
    #[error("wit-svid kid {kid:?} is also the kid of a jwt-svid key")]
    KidCollision {
        /// The key ID.
        kid: String,
    },
}

/// A warning about content that was kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lint {
    /// JSON Pointer to what the warning is about.
    pub location: String,
    /// The warning.
    pub kind: LintKind,
}

/// Warnings that do not remove anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LintKind {
    /// An `x509-svid` element has a `kid`, which producers must not set (X509-SVID §6.1).
    #[error("x509-svid element carries a kid, which X509-SVID §6.1 forbids; ignored")]
    KidOnX509,
    /// `x5c` has more than one certificate; all but the first are ignored (X509-SVID §6.2).
    #[error("x5c has {count} certificates; only the first is used")]
    ExtraX5c {
        /// How many certificates `x5c` holds.
        count: usize,
    },
    /// The CA certificate is not self-issued (X509-SVID §6.1 says it SHOULD be).
    #[error("CA certificate is not self-signed (issuer differs from subject)")]
    NotSelfSigned,
    /// The CA certificate carries no SPIFFE ID of this trust domain without a path
    /// (SPIFFE-ID §3.1).
    #[error("CA certificate has no URI SAN spiffe://{trust_domain} (SPIFFE-ID §3.1 SHOULD)")]
    CaIdMismatch {
        /// The bundle's trust domain.
        trust_domain: TrustDomain,
    },
    /// The same certificate or key appears twice; it is kept once.
    #[error("duplicate of an earlier element; kept once")]
    DuplicateElement,
    /// `spiffe_refresh_hint` is zero or negative and is treated as absent.
    #[error("spiffe_refresh_hint {value} is not positive; treated as unset")]
    RefreshHintNotPositive {
        /// The value found.
        value: i64,
    },
    /// A top-level member that is probably a mistake (e.g. `refresh_hint`, `KEYS`).
    #[error("unknown member {name:?} ignored; did you mean {suggestion:?}?")]
    SuspiciousMember {
        /// The member found.
        name: String,
        /// The member the standard defines.
        suggestion: &'static str,
    },
}

/// Why a bundle document was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The document exceeds the size limit.
    #[error("document is {actual} bytes; the limit is {limit}")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
        /// The document's size.
        actual: usize,
    },
    /// The document is not valid UTF-8 (TDB §4, SPIFFE Federation §5.2).
    #[error("document is not valid UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// The document starts with a byte order mark.
    #[error("document starts with a UTF-8 byte order mark, which JSON producers must not add")]
    ByteOrderMark,
    /// The document is not well-formed JSON.
    #[error("malformed JSON at line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// Non-whitespace follows the top-level value (EXT-4).
    #[error("unexpected data after the JSON document at line {line}, column {column}")]
    TrailingData {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// A value has the wrong JSON type where the document structure requires one.
    #[error("{}: expected {expected}, found {found}", at(.location))]
    WrongType {
        /// JSON Pointer (`""` for the whole document).
        location: String,
        /// What the standard requires.
        expected: &'static str,
        /// The JSON type found.
        found: &'static str,
    },
    /// A required member is absent (`keys`, TDB §4.1.3; `trust_domains`, TDB §5.1.1).
    #[error("{}: required member {member:?} is missing{}", at(.location), hint_text(.found_instead))]
    MissingMember {
        /// JSON Pointer of the object.
        location: String,
        /// The member required.
        member: &'static str,
        /// A member with the same name in another case, if present (names are case-sensitive).
        found_instead: Option<String>,
    },
    /// A top-level member occurs twice (RFC 7517 §4, TDB §6.3).
    #[error("{}: member {name:?} occurs more than once", at(.location))]
    DuplicateMember {
        /// JSON Pointer of the object.
        location: String,
        /// The repeated name.
        name: String,
    },
    /// `spiffe_sequence` is not an unsigned 64-bit integer (TDB §4.1.1).
    #[error("{location}: spiffe_sequence must be an unsigned 64-bit integer, found {found}")]
    InvalidSequence {
        /// JSON Pointer.
        location: String,
        /// The JSON text found.
        found: String,
    },
    /// `spiffe_refresh_hint` is not an integer (TDB §4.1.2).
    #[error("{location}: spiffe_refresh_hint must be an integer number of seconds, found {found}")]
    InvalidRefreshHint {
        /// JSON Pointer.
        location: String,
        /// The JSON text found.
        found: String,
    },
    /// A bundle map key is not a valid trust domain name (TDB §5.1.1).
    #[error("{location}: {name:?} is not a valid trust domain name: {source}")]
    InvalidTrustDomain {
        /// JSON Pointer.
        location: String,
        /// The key found.
        name: String,
        /// Why it is invalid.
        source: IdError,
    },
    /// A bundle map lists a trust domain twice (TDB §5.1.1 MUST reject).
    #[error("/trust_domains: trust domain {name:?} occurs more than once")]
    DuplicateTrustDomain {
        /// The repeated trust domain.
        name: String,
    },
    /// A PEM input could not be used.
    #[error(transparent)]
    Pem(#[from] PemError),
}

/// A JSON Pointer for messages: the empty pointer is the whole document.
fn at(location: &str) -> &str {
    if location.is_empty() {
        "document"
    } else {
        location
    }
}

fn hint_text(found: &Option<String>) -> String {
    match found {
        Some(name) => format!(" (found {name:?}; member names are case-sensitive)"),
        None => String::new(),
    }
}

impl IgnoreReason {
    /// A stable name for the kind of reason, e.g. `missing_use` or `certificate`, for
    /// counting and for messages that group elements.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotAnObject { .. } => "not_an_object",
            Self::DuplicateMember { .. } => "duplicate_member",
            Self::MissingUse => "missing_use",
            Self::UnknownUse { .. } => "unknown_use",
            Self::MissingKty => "missing_kty",
            Self::UnknownKty { .. } => "unknown_kty",
            Self::MissingX5c => "missing_x5c",
            Self::X5cNotBase64 { .. } => "x5c_not_base64",
            Self::Certificate(_) => "certificate",
            Self::KeyMismatch => "key_mismatch",
            Self::BadKeyMember { .. } => "bad_key_member",
            Self::UnsupportedCurve { .. } => "unsupported_curve",
            Self::MissingKid { .. } => "missing_kid",
            Self::DuplicateKid { .. } => "duplicate_kid",
            Self::KidCollision { .. } => "kid_collision",
        }
    }
}

impl Bundle {
    /// An empty bundle (no authorities, no sequence, no refresh hint) for `trust_domain`.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            x509_authorities: Vec::new(),
            jwt_authorities: BTreeMap::new(),
            wit_authorities: BTreeMap::new(),
            sequence: None,
            refresh_hint: None,
        }
    }

    /// Parse a SPIFFE bundle document for `trust_domain`, with the default 1 MiB limit.
    ///
    /// # Errors
    /// A [`BundleError`] when the document as a whole is unusable.
    pub fn parse(trust_domain: &TrustDomain, document: &[u8]) -> Result<Parsed, BundleError> {
        Self::parse_with_limit(trust_domain, document, DEFAULT_MAX_DOCUMENT_SIZE)
    }

    /// Parse as [`Bundle::parse`] with an explicit size limit in bytes.
    ///
    /// # Errors
    /// A [`BundleError`] when the document as a whole is unusable.
    pub fn parse_with_limit(
        trust_domain: &TrustDomain,
        document: &[u8],
        limit: usize,
    ) -> Result<Parsed, BundleError> {
        let json = parse::read_document(document, limit)?;
        parse::bundle_from_json(trust_domain, &json, "")
    }

    /// Build a bundle holding the CA certificates of a PEM document (TDB allows PEM as
    /// an alternative bootstrap format, SPIFFE Federation §5.2.2.2).
    ///
    /// # Errors
    /// A [`BundleError::Pem`] if the input has no certificate, a malformed block, or a
    /// certificate that cannot be an authority.
    pub fn from_pem(trust_domain: &TrustDomain, pem: &[u8]) -> Result<Self, BundleError> {
        let mut bundle = Self::new(trust_domain.clone());
        for authority in pem::read_certificates(pem, DEFAULT_MAX_DOCUMENT_SIZE)? {
            bundle.add_x509_authority(authority);
        }
        Ok(bundle)
    }

    /// The X.509 authorities as concatenated PEM `CERTIFICATE` blocks, in bundle order.
    pub fn to_pem(&self) -> String {
        pem::write_certificates(&self.x509_authorities)
    }

    /// The trust domain this bundle belongs to.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// X.509 CA certificates, sorted by DER bytes, without duplicates.
    pub fn x509_authorities(&self) -> &[X509Authority] {
        &self.x509_authorities
    }

    /// JWT-SVID signing keys by key ID.
    pub fn jwt_authorities(&self) -> &BTreeMap<String, JwtAuthority> {
        &self.jwt_authorities
    }

    /// WIT-SVID signing keys by key ID.
    pub fn wit_authorities(&self) -> &BTreeMap<String, JwtAuthority> {
        &self.wit_authorities
    }

    /// `spiffe_sequence`, if set.
    pub fn sequence(&self) -> Option<u64> {
        self.sequence
    }

    /// `spiffe_refresh_hint`, if set (always a whole, positive number of seconds).
    pub fn refresh_hint(&self) -> Option<Duration> {
        self.refresh_hint.map(Duration::from_secs)
    }

    /// No authority of any kind: the trust domain has revoked every key (TDB §4.1.3).
    pub fn is_empty(&self) -> bool {
        self.x509_authorities.is_empty()
            && self.jwt_authorities.is_empty()
            && self.wit_authorities.is_empty()
    }

    /// Whether both bundles hold the same authorities, ignoring sequence and refresh hint.
    pub fn same_authorities(&self, other: &Self) -> bool {
        self.x509_authorities == other.x509_authorities
            && self.jwt_authorities == other.jwt_authorities
            && self.wit_authorities == other.wit_authorities
    }

    /// Set or clear `spiffe_sequence`.
    pub fn set_sequence(&mut self, sequence: Option<u64>) {
        self.sequence = sequence;
    }

    /// Set or clear `spiffe_refresh_hint`. Sub-second parts round up; zero clears it.
    pub fn set_refresh_hint(&mut self, hint: Option<Duration>) {
        self.refresh_hint = hint
            .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
            .filter(|secs| *secs > 0);
    }

    /// Add an X.509 authority; returns false if it was already present.
    pub fn add_x509_authority(&mut self, authority: X509Authority) -> bool {
        match self.x509_authorities.binary_search(&authority) {
            Ok(_) => false,
            Err(index) => {
                self.x509_authorities.insert(index, authority);
                true
            }
        }
    }

    /// Remove an X.509 authority by DER; returns whether it was present.
    pub fn remove_x509_authority(&mut self, der: &[u8]) -> bool {
        let before = self.x509_authorities.len();
        self.x509_authorities.retain(|a| a.der().as_ref() != der);
        before != self.x509_authorities.len()
    }

    /// Add or replace a JWT-SVID key; returns the key it replaced.
    pub fn insert_jwt_authority(&mut self, authority: JwtAuthority) -> Option<JwtAuthority> {
        self.jwt_authorities
            .insert(authority.kid().to_owned(), authority)
    }

    /// Remove a JWT-SVID key by key ID.
    pub fn remove_jwt_authority(&mut self, kid: &str) -> Option<JwtAuthority> {
        self.jwt_authorities.remove(kid)
    }

    /// Add or replace a WIT-SVID key; returns the key it replaced.
    pub fn insert_wit_authority(&mut self, authority: JwtAuthority) -> Option<JwtAuthority> {
        self.wit_authorities
            .insert(authority.kid().to_owned(), authority)
    }

    /// Remove a WIT-SVID key by key ID.
    pub fn remove_wit_authority(&mut self, kid: &str) -> Option<JwtAuthority> {
        self.wit_authorities.remove(kid)
    }

    /// The SPIFFE bundle document, compact and deterministic: `keys` (x509-svid entries
    /// by DER, then jwt-svid and wit-svid entries by kid), then `spiffe_refresh_hint`,
    /// then `spiffe_sequence`, each present only when set.
    pub fn to_json(&self) -> Vec<u8> {
        self.to_value(true).to_string().into_bytes()
    }

    /// As [`Bundle::to_json`], indented for people.
    pub fn to_json_pretty(&self) -> String {
        // Serialising a Value built from strings and integers cannot fail.
        serde_json::to_string_pretty(&self.to_value(true)).unwrap_or_default()
    }

    /// The document as a JSON value; `with_hint` is false inside bundle maps (TDB §5.1.1).
    pub(crate) fn to_value(&self, with_hint: bool) -> Value {
        let mut keys = Vec::with_capacity(
            self.x509_authorities.len() + self.jwt_authorities.len() + self.wit_authorities.len(),
        );
        for authority in &self.x509_authorities {
            let key = &authority.info().key;
            let mut jwk = Map::new();
            jwk.insert("use".into(), "x509-svid".into());
            jwk.insert("kty".into(), key.kty().into());
            for (name, value) in key.jwk_members() {
                jwk.insert(name.into(), value.into());
            }
            jwk.insert(
                "x5c".into(),
                Value::Array(vec![STANDARD.encode(authority.der()).into()]),
            );
            keys.push(Value::Object(jwk));
        }
        for (use_, authorities) in [
            ("jwt-svid", &self.jwt_authorities),
            ("wit-svid", &self.wit_authorities),
        ] {
            for authority in authorities.values() {
                let mut jwk = Map::new();
                jwk.insert("use".into(), use_.into());
                jwk.insert("kty".into(), authority.key().kty().into());
                jwk.insert("kid".into(), authority.kid().into());
                for (name, value) in authority.key().jwk_members() {
                    jwk.insert(name.into(), value.into());
                }
                keys.push(Value::Object(jwk));
            }
        }
        let mut document = Map::new();
        document.insert("keys".into(), Value::Array(keys));
        if with_hint && let Some(hint) = self.refresh_hint {
            document.insert("spiffe_refresh_hint".into(), hint.into());
        }
        if let Some(sequence) = self.sequence {
            document.insert("spiffe_sequence".into(), sequence.into());
        }
        Value::Object(document)
    }
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.reason)
    }
}

impl fmt::Display for Lint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.kind)
    }
}
