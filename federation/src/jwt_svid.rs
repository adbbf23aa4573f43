//! JWT-SVID validation: is this token a valid JWT-SVID for this audience, and whose?
//!
//! Owns the JWT-SVID rules (JWT-SVID §2-§4, Appendix A) and the choice of key: only
//! the `jwt-svid` authorities (JWT-SVID §6.2) of the bundle of the trust domain the
//! token's `sub` resides in (TDB §3; SPIFFE Federation §7.3). It does not own where
//! bundles come from (the caller passes a lookup), the clock (the caller passes
//! `now`), replay protection (`jti` is not tracked, JWT-SVID §6.1) or any transport.
//! Signatures are checked by the `jsonwebtoken` crate on the aws-lc-rs provider.
//!
//! # What is checked, in this order
//! 1. The token is a JWS Compact Serialization: three base64url parts without padding
//!    (JWT-SVID §5.1), a header and a claims set that are JSON objects without
//!    duplicate member names.
//! 2. `alg` is one of the JWT-SVID algorithms (§2.1); `none`, HMAC and every other
//!    value are refused. `ES512` is allowed by the standard, but `jsonwebtoken` cannot
//!    verify it (it has no P-521), so it is refused with its own error,
//!    [`JwtSvidError::AlgorithmNotImplemented`].
//! 3. `typ`, if present, is `JWT` or `JOSE` (§2.3).
//! 4. The header has no member other than `alg`, `kid` and `typ` (§2: any other
//!    header "MUST NOT be included"), so `crit`, `jku`, `jwk`, `x5u`, `x5c` are refused.
//! 5. `kid` is present and a non-empty string. The standard makes it optional (§2.2),
//!    but bundles index JWT authorities by key ID (JWT-SVID §6.1 makes `kid` mandatory
//!    there), so a token without one could only be checked by trying every key; as
//!    go-spiffe does, we refuse it.
//! 6. `sub` is a SPIFFE ID (§3.1).
//! 7. The lookup has a bundle for that ID's trust domain, and its JWT authorities hold
//!    the `kid`. Keys of any other trust domain are never consulted, even when one has
//!    the same `kid` (DIST-3); WIT-SVID and X.509 keys are never consulted (JWK-2).
//! 8. The key fits the algorithm (RSA for `RS*`/`PS*`, EC P-256 for `ES256`, EC P-384
//!    for `ES384`), and the signature verifies (RFC 7515 §5.2).
//! 9. `exp` is present and a number; `aud` is present and a string or a non-empty
//!    array of strings (§3.2, §3.3, §4).
//! 10. `now` is before `exp` and not before `nbf` (when present), each with
//!     [`LEEWAY`] for clock skew (RFC 7519 §4.1.4, §4.1.5; Appendix A allows "a small
//!     amount of leeway").
//! 11. `audience` is one of the `aud` values (§3.2).
//!
//! ```
//! use spiffe_federation::jwt_svid;
//!
//! let now = time::OffsetDateTime::now_utc();
//! let result = jwt_svid::validate("not-a-token", "reports", now, |_| None);
//! assert_eq!(result.unwrap_err().code(), "malformed_token");
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::bundle::json::{Json, Members};
use crate::bundle::{Bundle, EcCurve, PublicKey};
use crate::trust_domain::{IdError, SpiffeId, TrustDomain};

/// Clock skew allowed on `exp` and `nbf`: 30 seconds. Small against usual JWT-SVID
/// lifetimes (SPIRE's default is 5 minutes) and enough for hosts kept in sync by NTP.
pub const LEEWAY: Duration = Duration::from_secs(30);

/// A validated JWT-SVID.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtSvid {
    spiffe_id: SpiffeId,
    key_id: String,
    algorithm: Algorithm,
    audience: Vec<String>,
    expires_at: OffsetDateTime,
    claims: Map<String, Value>,
}

impl JwtSvid {
    /// The SPIFFE ID in `sub`.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The trust domain whose bundle vouched for the token.
    pub fn trust_domain(&self) -> &TrustDomain {
        self.spiffe_id.trust_domain()
    }

    /// The `kid` of the key that verified the signature.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The signature algorithm (`alg`).
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Every `aud` value, in token order.
    pub fn audience(&self) -> &[String] {
        &self.audience
    }

    /// `exp`, to the second (a fractional `exp` is rounded down).
    pub fn expires_at(&self) -> OffsetDateTime {
        self.expires_at
    }

    /// The whole claims set, as sent.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }
}

/// The `alg` values this validator verifies: JWT-SVID §2.1 less `ES512`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// ECDSA with P-256 and SHA-256.
    ES256,
    /// ECDSA with P-384 and SHA-384.
    ES384,
    /// RSASSA-PSS with SHA-256 and MGF1 with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384 and MGF1 with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512 and MGF1 with SHA-512.
    PS512,
}

impl Algorithm {
    /// The `alg` header value.
    pub fn name(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::PS256 => "PS256",
            Self::PS384 => "PS384",
            Self::PS512 => "PS512",
        }
    }

    /// Read an `alg` value (case-sensitive, RFC 7515 §4.1.1).
    fn from_name(name: &str) -> Result<Self, JwtSvidError> {
        Ok(match name {
            "RS256" => Self::RS256,
            "RS384" => Self::RS384,
            "RS512" => Self::RS512,
            "ES256" => Self::ES256,
            "ES384" => Self::ES384,
            "PS256" => Self::PS256,
            "PS384" => Self::PS384,
            "PS512" => Self::PS512,
            "ES512" => {
                return Err(JwtSvidError::AlgorithmNotImplemented {
                    alg: name.to_owned(),
                });
            }
            _ => {
                return Err(JwtSvidError::UnsupportedAlgorithm {
                    alg: name.to_owned(),
                });
            }
        })
    }

    fn to_jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as A;
        match self {
            Self::RS256 => A::RS256,
            Self::RS384 => A::RS384,
            Self::RS512 => A::RS512,
            Self::ES256 => A::ES256,
            Self::ES384 => A::ES384,
            Self::PS256 => A::PS256,
            Self::PS384 => A::PS384,
            Self::PS512 => A::PS512,
        }
    }

    /// The verification key for `key`, if it is of the kind this algorithm uses.
    fn decoding_key(self, key: &PublicKey) -> Option<DecodingKey> {
        match (self, key) {
            (
                Self::RS256 | Self::RS384 | Self::RS512 | Self::PS256 | Self::PS384 | Self::PS512,
                PublicKey::Rsa { n, e },
            ) => Some(DecodingKey::from_rsa_raw_components(n, e)),
            (
                Self::ES256,
                PublicKey::Ec {
                    curve: EcCurve::P256,
                    x,
                    y,
                },
            )
            | (
                Self::ES384,
                PublicKey::Ec {
                    curve: EcCurve::P384,
                    x,
                    y,
                },
            ) => DecodingKey::from_ec_components(
                &URL_SAFE_NO_PAD.encode(x),
                &URL_SAFE_NO_PAD.encode(y),
            )
            .ok(),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a token is not a valid JWT-SVID. [`JwtSvidError::code`] gives a stable name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtSvidError {
    /// Not a JWS Compact Serialization of a JSON header and claims set (JWT-SVID §5.1).
    #[error("malformed token: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: String,
    },
    /// `alg` is not a JWT-SVID algorithm (JWT-SVID §2.1): e.g. `none` or `HS256`.
    #[error(
        "algorithm {alg:?} is not allowed for JWT-SVIDs (RS256/384/512, ES256/384/512, PS256/384/512)"
    )]
    UnsupportedAlgorithm {
        /// The `alg` found.
        alg: String,
    },
    /// `alg` is allowed by JWT-SVID §2.1 but this implementation cannot verify it
    /// (`ES512`: the `jsonwebtoken` crate has no P-521 support).
    #[error("algorithm {alg:?} is a JWT-SVID algorithm, but this gateway cannot verify it")]
    AlgorithmNotImplemented {
        /// The `alg` found.
        alg: String,
    },
    /// `typ` is neither `JWT` nor `JOSE` (JWT-SVID §2.3).
    #[error("header typ {typ} is not allowed: JWT-SVID §2.3 allows only \"JWT\" or \"JOSE\"")]
    InvalidType {
        /// The `typ` found, as JSON text.
        typ: String,
    },
    /// A header member JWT-SVID §2 does not allow (only `alg`, `kid`, `typ`).
    #[error(
        "header member {name:?} is not allowed in a JWT-SVID (JWT-SVID §2: only alg, kid, typ)"
    )]
    UnexpectedHeader {
        /// The member's name.
        name: String,
    },
    /// No `kid`, or not a non-empty string: the key cannot be selected.
    #[error("the header has no key ID (kid), so no bundle key can be selected")]
    MissingKeyId,
    /// `sub` is missing or not a SPIFFE ID (JWT-SVID §3.1).
    #[error("sub {}is not a SPIFFE ID: {reason}", subject_text(.sub))]
    InvalidSubject {
        /// The `sub` found, if it was a string.
        sub: Option<String>,
        /// Why it is not a SPIFFE ID.
        reason: String,
    },
    /// No bundle is known for the trust domain of `sub`.
    #[error("no bundle for trust domain {trust_domain}, the trust domain of sub")]
    NoBundle {
        /// The trust domain of `sub`.
        trust_domain: TrustDomain,
    },
    /// The bundle of `sub`'s trust domain has no JWT authority with this key ID. Keys
    /// of other uses (X.509, WIT-SVID) and of other trust domains are not considered.
    #[error("the bundle of {trust_domain} has no jwt-svid key with kid {kid:?}")]
    UnknownKeyId {
        /// The trust domain whose bundle was searched.
        trust_domain: TrustDomain,
        /// The `kid` of the token.
        kid: String,
    },
    /// The key with this `kid` cannot verify this algorithm (e.g. an RSA key for
    /// `ES256`, or a P-384 key for `ES256`).
    #[error("kid {kid:?} of {trust_domain} is an {key} key, which cannot verify {alg}")]
    KeyAlgorithmMismatch {
        /// The trust domain of the key.
        trust_domain: TrustDomain,
        /// The key ID.
        kid: String,
        /// The token's algorithm.
        alg: Algorithm,
        /// The key's type, e.g. `EC P-384`.
        key: String,
    },
    /// The signature does not verify with the selected key.
    #[error("the signature does not verify with key {kid:?} of {trust_domain}")]
    BadSignature {
        /// The trust domain of the key.
        trust_domain: TrustDomain,
        /// The key ID.
        kid: String,
    },
    /// No `exp` claim (JWT-SVID §3.3).
    #[error("the token has no exp claim, which JWT-SVID §3.3 requires")]
    MissingExpiration,
    /// No `aud` claim, or an empty array (JWT-SVID §3.2).
    #[error("the token has no aud value, which JWT-SVID §3.2 requires")]
    MissingAudience,
    /// A registered claim has the wrong type or an unusable value.
    #[error("claim {claim}: {reason}")]
    InvalidClaim {
        /// `exp`, `nbf` or `aud`.
        claim: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// `exp` (plus the leeway) is not after `now`.
    #[error("the token expired at {expired_at} (leeway {}s)", LEEWAY.as_secs())]
    Expired {
        /// `exp`.
        expired_at: OffsetDateTime,
    },
    /// `nbf` is after `now` plus the leeway.
    #[error("the token is not valid before {not_before} (leeway {}s)", LEEWAY.as_secs())]
    NotYetValid {
        /// `nbf`.
        not_before: OffsetDateTime,
    },
    /// The validator's audience is not among the token's `aud` values.
    #[error("audience {expected:?} is not among the token's aud values {found:?}")]
    AudienceMismatch {
        /// The audience the caller validates for.
        expected: String,
        /// The token's `aud` values.
        found: Vec<String>,
    },
}

impl JwtSvidError {
    /// A stable, machine-readable name for the problem (`snake_case`), e.g.
    /// `bad_signature`; see `docs/admin-api.md` for the list.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "malformed_token",
            Self::UnsupportedAlgorithm { .. } => "unsupported_algorithm",
            Self::AlgorithmNotImplemented { .. } => "algorithm_not_implemented",
            Self::InvalidType { .. } => "invalid_type",
            Self::UnexpectedHeader { .. } => "unexpected_header",
            Self::MissingKeyId => "missing_key_id",
            Self::InvalidSubject { .. } => "subject_not_spiffe_id",
            Self::NoBundle { .. } => "no_bundle",
            Self::UnknownKeyId { .. } => "unknown_key_id",
            Self::KeyAlgorithmMismatch { .. } => "key_algorithm_mismatch",
            Self::BadSignature { .. } => "bad_signature",
            Self::MissingExpiration => "missing_expiration",
            Self::MissingAudience => "missing_audience",
            Self::InvalidClaim { .. } => "invalid_claim",
            Self::Expired { .. } => "expired",
            Self::NotYetValid { .. } => "not_yet_valid",
            Self::AudienceMismatch { .. } => "audience_mismatch",
        }
    }
}

fn subject_text(sub: &Option<String>) -> String {
    match sub {
        Some(sub) => format!("{sub:?} "),
        None => "(missing) ".to_owned(),
    }
}

/// Validate `token` as a JWT-SVID for `audience` at `now`, with the bundle that
/// `bundle_of` returns for the trust domain of the token's `sub`.
///
/// `bundle_of` is asked once, for that trust domain only; no other bundle is used.
///
/// # Errors
/// A [`JwtSvidError`] naming the first rule the token breaks, in the order of the
/// module documentation.
pub fn validate<F>(
    token: &str,
    audience: &str,
    now: OffsetDateTime,
    bundle_of: F,
) -> Result<JwtSvid, JwtSvidError>
where
    F: Fn(&TrustDomain) -> Option<Arc<Bundle>>,
{
    let parts = Compact::split(token)?;
    let header = Header::read(parts.header)?;
    let claims = object(parts.claims, "claims set")?;
    // Checked after the header, so that an unsigned (`alg: none`) token is refused
    // for its algorithm rather than for its empty signature.
    parts.check_signature_encoding()?;

    let spiffe_id = subject(&claims)?;
    let trust_domain = spiffe_id.trust_domain();
    let bundle = bundle_of(trust_domain).ok_or_else(|| JwtSvidError::NoBundle {
        trust_domain: trust_domain.clone(),
    })?;
    let authority =
        bundle
            .jwt_authorities()
            .get(&header.kid)
            .ok_or_else(|| JwtSvidError::UnknownKeyId {
                trust_domain: trust_domain.clone(),
                kid: header.kid.clone(),
            })?;
    let key = header.alg.decoding_key(authority.key()).ok_or_else(|| {
        JwtSvidError::KeyAlgorithmMismatch {
            trust_domain: trust_domain.clone(),
            kid: header.kid.clone(),
            alg: header.alg,
            key: authority.key().describe(),
        }
    })?;
    // The signing input is the first two parts as sent (RFC 7515 §5.2 step 8).
    let verified = jsonwebtoken::crypto::verify(
        parts.signature,
        parts.signing_input.as_bytes(),
        &key,
        header.alg.to_jsonwebtoken(),
    );
    if !matches!(verified, Ok(true)) {
        return Err(JwtSvidError::BadSignature {
            trust_domain: trust_domain.clone(),
            kid: header.kid,
        });
    }

    let members = Members(&claims);
    let expires_at = match members.get("exp") {
        None => return Err(JwtSvidError::MissingExpiration),
        Some(exp) => numeric_date(exp, "exp")?,
    };
    let found = audiences(members.get("aud"))?;
    let now_seconds = now.unix_timestamp_nanos() as f64 / 1e9;
    let leeway = LEEWAY.as_secs_f64();
    if now_seconds >= expires_at + leeway {
        return Err(JwtSvidError::Expired {
            expired_at: datetime(expires_at, "exp")?,
        });
    }
    if let Some(nbf) = members.get("nbf") {
        let not_before = numeric_date(nbf, "nbf")?;
        if now_seconds + leeway < not_before {
            return Err(JwtSvidError::NotYetValid {
                not_before: datetime(not_before, "nbf")?,
            });
        }
    }
    if !found.iter().any(|value| value == audience) {
        return Err(JwtSvidError::AudienceMismatch {
            expected: audience.to_owned(),
            found,
        });
    }
    Ok(JwtSvid {
        spiffe_id,
        key_id: header.kid,
        algorithm: header.alg,
        audience: found,
        expires_at: datetime(expires_at, "exp")?,
        claims: claims
            .into_iter()
            .map(|(name, value)| (name, to_value(value)))
            .collect(),
    })
}

/// The three parts of a JWS Compact Serialization, still encoded.
struct Compact<'a> {
    header: &'a str,
    claims: &'a str,
    signature: &'a str,
    signing_input: &'a str,
}

impl<'a> Compact<'a> {
    fn split(token: &'a str) -> Result<Self, JwtSvidError> {
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtSvidError::Malformed {
                reason: "a JWT-SVID is three base64url parts separated by dots (JWS Compact \
                         Serialization)"
                    .to_owned(),
            });
        };
        Ok(Self {
            header,
            claims,
            signature,
            signing_input: &token[..header.len() + 1 + claims.len()],
        })
    }

    fn check_signature_encoding(&self) -> Result<(), JwtSvidError> {
        if self.signature.is_empty() {
            return Err(JwtSvidError::Malformed {
                reason: "the signature part is empty".to_owned(),
            });
        }
        URL_SAFE_NO_PAD
            .decode(self.signature)
            .map(drop)
            .map_err(|err| JwtSvidError::Malformed {
                reason: format!("signature: not base64url without padding: {err}"),
            })
    }
}

/// The JOSE header, checked.
struct Header {
    alg: Algorithm,
    kid: String,
}

impl Header {
    fn read(encoded: &str) -> Result<Self, JwtSvidError> {
        let members = object(encoded, "header")?;
        let members = Members(&members);
        let alg = match members.get("alg") {
            Some(Json::String(alg)) => Algorithm::from_name(alg)?,
            Some(other) => {
                return Err(JwtSvidError::UnsupportedAlgorithm {
                    alg: json_text(other),
                });
            }
            None => {
                return Err(JwtSvidError::Malformed {
                    reason: "the header has no alg".to_owned(),
                });
            }
        };
        match members.get("typ") {
            None => {}
            Some(Json::String(typ)) if typ == "JWT" || typ == "JOSE" => {}
            Some(other) => {
                return Err(JwtSvidError::InvalidType {
                    typ: json_text(other),
                });
            }
        }
        if let Some(name) = members
            .names()
            .find(|name| !matches!(*name, "alg" | "kid" | "typ"))
        {
            return Err(JwtSvidError::UnexpectedHeader {
                name: name.to_owned(),
            });
        }
        match members.get("kid") {
            Some(Json::String(kid)) if !kid.is_empty() => Ok(Self {
                alg,
                kid: kid.clone(),
            }),
            _ => Err(JwtSvidError::MissingKeyId),
        }
    }
}

/// Decode one base64url part into a JSON object's members, refusing duplicate names
/// (RFC 7515 §4 and RFC 7519 §4 allow refusing them; a validator that kept the last
/// could disagree with another about which `sub` or `aud` a token carries).
fn object(encoded: &str, what: &str) -> Result<Vec<(String, Json)>, JwtSvidError> {
    let malformed = |reason: String| JwtSvidError::Malformed {
        reason: format!("{what}: {reason}"),
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|err| malformed(format!("not base64url without padding: {err}")))?;
    let json: Json =
        serde_json::from_slice(&bytes).map_err(|err| malformed(format!("not JSON: {err}")))?;
    let Json::Object(members) = json else {
        return Err(malformed(format!(
            "a JSON {}, not an object",
            json.type_name()
        )));
    };
    if let Some(name) = Members(&members).first_duplicate() {
        return Err(malformed(format!("member {name:?} occurs more than once")));
    }
    Ok(members)
}

fn subject(claims: &[(String, Json)]) -> Result<SpiffeId, JwtSvidError> {
    match Members(claims).get("sub") {
        Some(Json::String(sub)) => {
            SpiffeId::parse(sub).map_err(|err: IdError| JwtSvidError::InvalidSubject {
                sub: Some(sub.clone()),
                reason: err.to_string(),
            })
        }
        Some(other) => Err(JwtSvidError::InvalidSubject {
            sub: None,
            reason: format!("sub is a JSON {}, not a string", other.type_name()),
        }),
        None => Err(JwtSvidError::InvalidSubject {
            sub: None,
            reason: "the token has no sub claim".to_owned(),
        }),
    }
}

/// A NumericDate (RFC 7519 §2): seconds since the epoch, possibly fractional.
fn numeric_date(value: &Json, claim: &'static str) -> Result<f64, JwtSvidError> {
    match value {
        Json::Number(n) => n.as_f64().ok_or_else(|| JwtSvidError::InvalidClaim {
            claim,
            reason: format!("{n} is not a usable number of seconds"),
        }),
        other => Err(JwtSvidError::InvalidClaim {
            claim,
            reason: format!(
                "a JSON {}, not a number of seconds (RFC 7519 NumericDate)",
                other.type_name()
            ),
        }),
    }
}

/// A NumericDate as a time, to the second.
fn datetime(seconds: f64, claim: &'static str) -> Result<OffsetDateTime, JwtSvidError> {
    let out_of_range = || JwtSvidError::InvalidClaim {
        claim,
        reason: format!("{seconds} seconds is outside the supported date range"),
    };
    let whole = seconds.floor();
    if !(-1e15..=1e15).contains(&whole) {
        return Err(out_of_range());
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "whole is integral and within ±1e15, well inside i64"
    )]
    let whole = whole as i64;
    OffsetDateTime::from_unix_timestamp(whole).map_err(|_| out_of_range())
}

/// `aud`: a string or a non-empty array of strings (RFC 7519 §4.1.3, JWT-SVID §3.2).
fn audiences(value: Option<&Json>) -> Result<Vec<String>, JwtSvidError> {
    let invalid = |reason: String| JwtSvidError::InvalidClaim {
        claim: "aud",
        reason,
    };
    match value {
        None => Err(JwtSvidError::MissingAudience),
        Some(Json::String(aud)) => Ok(vec![aud.clone()]),
        Some(Json::Array(items)) if items.is_empty() => Err(JwtSvidError::MissingAudience),
        Some(Json::Array(items)) => items
            .iter()
            .map(|item| match item {
                Json::String(aud) => Ok(aud.clone()),
                other => Err(invalid(format!(
                    "an array holding a JSON {}; every value must be a string",
                    other.type_name()
                ))),
            })
            .collect(),
        Some(other) => Err(invalid(format!(
            "a JSON {}, not a string or an array of strings",
            other.type_name()
        ))),
    }
}

fn to_value(json: Json) -> Value {
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(b),
        Json::Number(n) => Value::Number(n),
        Json::String(s) => Value::String(s),
        Json::Array(items) => Value::Array(items.into_iter().map(to_value).collect()),
        Json::Object(members) => Value::Object(
            members
                .into_iter()
                .map(|(name, value)| (name, to_value(value)))
                .collect(),
        ),
    }
}

/// A JSON value as compact text, for error messages.
fn json_text(json: &Json) -> String {
    match json {
        Json::String(s) => format!("{s:?}"),
        other => to_value(other.clone()).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    fn token(header: &str, claims: &str) -> String {
        format!("{}.{}.{}", part(header), part(claims), part("sig"))
    }

    fn refusal(token: &str) -> JwtSvidError {
        validate(token, "aud", OffsetDateTime::UNIX_EPOCH, |_| None).unwrap_err()
    }

    #[test]
    fn jwt_header_rules_come_before_any_bundle_lookup() {
        let claims = r#"{"sub":"spiffe://a.example/x"}"#;
        for (header, code) in [
            (r#"{"alg":"none","kid":"k"}"#, "unsupported_algorithm"),
            (r#"{"alg":"HS256","kid":"k"}"#, "unsupported_algorithm"),
            (r#"{"alg":"EdDSA","kid":"k"}"#, "unsupported_algorithm"),
            (r#"{"alg":"es256","kid":"k"}"#, "unsupported_algorithm"),
            (r#"{"alg":["ES256"],"kid":"k"}"#, "unsupported_algorithm"),
            (r#"{"alg":"ES512","kid":"k"}"#, "algorithm_not_implemented"),
            (r#"{"kid":"k"}"#, "malformed_token"),
            (r#"{"alg":"ES256","kid":"k","typ":"jwt"}"#, "invalid_type"),
            (r#"{"alg":"ES256","kid":"k","typ":1}"#, "invalid_type"),
            (
                r#"{"alg":"ES256","kid":"k","crit":["x"]}"#,
                "unexpected_header",
            ),
            (r#"{"alg":"ES256","kid":"k","jwk":{}}"#, "unexpected_header"),
            (r#"{"alg":"ES256"}"#, "missing_key_id"),
            (r#"{"alg":"ES256","kid":""}"#, "missing_key_id"),
            (r#"{"alg":"ES256","kid":7}"#, "missing_key_id"),
            (r#"{"alg":"ES256","kid":"k","kid":"j"}"#, "malformed_token"),
        ] {
            assert_eq!(refusal(&token(header, claims)).code(), code, "{header}");
        }
    }

    #[test]
    fn jwt_typ_jwt_and_jose_pass_the_header_rules() {
        for typ in ["JWT", "JOSE"] {
            let header = format!(r#"{{"alg":"ES256","kid":"k","typ":"{typ}"}}"#);
            let err = refusal(&token(&header, r#"{"sub":"spiffe://a.example/x"}"#));
            assert!(matches!(err, JwtSvidError::NoBundle { .. }), "{err}");
        }
    }

    #[test]
    fn jwt_malformed_serialisations_are_named() {
        let good_header = part(r#"{"alg":"ES256","kid":"k"}"#);
        let good_claims = part(r#"{"sub":"spiffe://a.example/x"}"#);
        for bad in [
            String::new(),
            "a.b".to_owned(),
            "a.b.c.d".to_owned(),
            format!("{good_header}.{good_claims}."),
            format!("{good_header}.{good_claims}.c2ln="),
            format!("{good_header}=.{good_claims}.c2ln"),
            format!("{}.{good_claims}.c2ln", part("[1]")),
            format!("{good_header}.{}.c2ln", part("not json")),
            format!("{good_header}.{}.c2ln", part(r#"{"sub":"a","sub":"b"}"#)),
        ] {
            assert!(
                matches!(refusal(&bad), JwtSvidError::Malformed { .. }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn jwt_sub_must_be_a_spiffe_id() {
        let header = r#"{"alg":"ES256","kid":"k"}"#;
        for claims in [
            r#"{"sub":"https://a.example/x"}"#,
            r#"{"sub":"spiffe://A.example/x"}"#,
            r#"{"sub":42}"#,
            r#"{"aud":"x"}"#,
        ] {
            assert_eq!(
                refusal(&token(header, claims)).code(),
                "subject_not_spiffe_id",
                "{claims}"
            );
        }
    }

    #[test]
    fn jwt_numeric_dates_may_be_fractional() {
        assert_eq!(numeric_date(&Json::Number(10_u64.into()), "exp"), Ok(10.0));
        let date = datetime(1.75, "exp").unwrap();
        assert_eq!(date.unix_timestamp(), 1);
        assert!(datetime(1e300, "exp").is_err());
    }
}
