//! Trust domain names and SPIFFE IDs as validated values.
//!
//! Owns the syntax rules of the SPIFFE ID standard (`standards/SPIFFE-ID.md` §2):
//! a [`TrustDomain`] or [`SpiffeId`] can only be built by a constructor that checks
//! every rule, so holding one is proof that it is well formed. It does not own any
//! notion of trust: whether an ID is *trusted* is for [`crate::verify`].
//!
//! Decisions the standard leaves open (see `docs/conformance.md`):
//! - upper case in the scheme or trust domain is rejected, never silently lowered
//!   (the trust domain is a security identifier); the error suggests the lower-case form;
//! - a SPIFFE ID longer than 2048 bytes is rejected when parsed, not only when generated;
//! - a trust domain longer than 255 bytes is rejected.
//!
//! ```
//! use spiffe_federation::{SpiffeId, TrustDomain};
//!
//! let id: SpiffeId = "spiffe://example.org/ns/prod/sa/web".parse()?;
//! assert_eq!(id.trust_domain(), &"example.org".parse::<TrustDomain>()?);
//! assert_eq!(id.path(), "/ns/prod/sa/web");
//! assert!("spiffe://Example.org/x".parse::<SpiffeId>().is_err());
//! # Ok::<(), spiffe_federation::IdError>(())
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The scheme prefix of every SPIFFE ID.
const SCHEME_PREFIX: &str = "spiffe://";

/// Longest SPIFFE ID, in bytes, that we parse or produce (SPIFFE-ID §2.3).
pub const MAX_SPIFFE_ID_LEN: usize = 2048;

/// Longest trust domain name, in bytes (SPIFFE-ID §2.3: a DNS name is at most 255 bytes).
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Why a string is not a valid trust domain name or SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The input is empty.
    #[error("empty input: a trust domain name is required")]
    Empty,
    /// A SPIFFE ID did not start with `spiffe://` (SPIFFE-ID §2).
    #[error("a SPIFFE ID must start with \"spiffe://\"")]
    WrongScheme,
    /// The scheme was written in upper or mixed case (`Spiffe://`).
    #[error("the scheme must be lower case: did you mean {suggestion:?}?")]
    UpperCaseScheme {
        /// The input with the scheme lowered.
        suggestion: String,
    },
    /// A trust domain name was given where a SPIFFE ID was expected or vice versa:
    /// the input to a trust domain constructor contained `://`.
    #[error("expected a bare trust domain name, not a URI: did you mean {suggestion:?}?")]
    TrustDomainIsUri {
        /// The trust domain part of the input, when one could be found.
        suggestion: String,
    },
    /// The trust domain part is empty (`spiffe:///path`, `spiffe://`).
    #[error("the trust domain name is empty")]
    EmptyTrustDomain,
    /// The trust domain contains upper-case letters (SPIFFE-ID §2.1).
    #[error("trust domain names must be lower case: did you mean {suggestion:?}?")]
    UpperCaseTrustDomain {
        /// The trust domain lowered.
        suggestion: String,
    },
    /// The authority has a userinfo part (`spiffe://user@td`) (SPIFFE-ID §2.1).
    #[error("a SPIFFE ID must not carry userinfo (\"…@\") in its authority")]
    UserInfo,
    /// The authority has a port (`spiffe://td:443`) (SPIFFE-ID §2.1).
    #[error("a SPIFFE ID must not carry a port in its authority")]
    Port,
    /// A percent-encoded character (SPIFFE-ID §2.1, §2.2).
    #[error("percent-encoded characters are not allowed at byte {position}")]
    PercentEncoded {
        /// Byte offset of the `%` in the input.
        position: usize,
    },
    /// A byte outside `[a-z0-9._-]` in the trust domain (SPIFFE-ID §2.1).
    #[error(
        "invalid character {found:?} in trust domain at byte {position}: only a-z, 0-9, '.', '-' and '_' are allowed"
    )]
    TrustDomainChar {
        /// The offending character (or the replacement character for a non-UTF-8 byte).
        found: char,
        /// Byte offset in the input.
        position: usize,
    },
    /// A query (`?`) or fragment (`#`) component (SPIFFE-ID §2).
    #[error("a SPIFFE ID must not have a query or fragment (found {found:?} at byte {position})")]
    QueryOrFragment {
        /// `?` or `#`.
        found: char,
        /// Byte offset in the input.
        position: usize,
    },
    /// An empty path segment (`//`) (SPIFFE-ID §2.2).
    #[error("empty path segment at byte {position}")]
    EmptySegment {
        /// Byte offset of the segment's leading `/`.
        position: usize,
    },
    /// A `.` or `..` path segment (SPIFFE-ID §2.2).
    #[error("path segments must not be \".\" or \"..\" (at byte {position})")]
    DotSegment {
        /// Byte offset of the segment's leading `/`.
        position: usize,
    },
    /// The path ends with `/` (SPIFFE-ID §2.2).
    #[error("the path must not end with '/'")]
    TrailingSlash,
    /// A byte outside `[a-zA-Z0-9._-]` in a path segment (SPIFFE-ID §2.2).
    #[error(
        "invalid character {found:?} in path at byte {position}: only letters, digits, '.', '-' and '_' are allowed"
    )]
    PathChar {
        /// The offending character.
        found: char,
        /// Byte offset in the input.
        position: usize,
    },
    /// A path that does not start with `/` was given to [`SpiffeId::new`].
    #[error("a non-empty path must start with '/'")]
    PathWithoutSlash,
    /// The trust domain name is longer than 255 bytes.
    #[error("trust domain name is {actual} bytes long; the limit is {limit}")]
    TrustDomainTooLong {
        /// The limit, [`MAX_TRUST_DOMAIN_LEN`].
        limit: usize,
        /// The length found.
        actual: usize,
    },
    /// The SPIFFE ID is longer than 2048 bytes (SPIFFE-ID §2.3).
    #[error("SPIFFE ID is {actual} bytes long; the limit is {limit}")]
    TooLong {
        /// The limit, [`MAX_SPIFFE_ID_LEN`].
        limit: usize,
        /// The length found.
        actual: usize,
    },
}

/// A trust domain name, such as `example.org` (SPIFFE-ID §2.1).
///
/// Always lower case, `[a-z0-9._-]`, 1 to 255 bytes. IP-address-like names are kept
/// verbatim: `127.0.0.1` and `127.000.000.001` are different trust domains.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TrustDomain(std::sync::Arc<str>);

impl TrustDomain {
    /// Parse a bare trust domain name (`example.org`, not `spiffe://example.org`).
    ///
    /// # Errors
    /// An [`IdError`] naming the first rule the input breaks.
    pub fn new(name: &str) -> Result<Self, IdError> {
        if name.is_empty() {
            return Err(IdError::Empty);
        }
        if let Some(index) = name.find("://") {
            let rest = &name[index + 3..];
            let suggestion = rest.split(['/', '?', '#']).next().unwrap_or_default();
            return Err(IdError::TrustDomainIsUri {
                suggestion: suggestion.to_owned(),
            });
        }
        check_trust_domain(name, 0)?;
        Ok(Self(name.into()))
    }

    /// Parse the trust domain from a SPIFFE ID string (`spiffe://example.org/anything`).
    ///
    /// # Errors
    /// An [`IdError`] when the input is not a valid SPIFFE ID.
    pub fn from_spiffe_id(id: &str) -> Result<Self, IdError> {
        SpiffeId::from_str(id).map(|id| id.td)
    }

    /// The name, e.g. `example.org`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SPIFFE ID of the trust domain itself, `spiffe://<name>`, as used for
    /// Workload API map keys and Envoy SDS resource names.
    pub fn id(&self) -> SpiffeId {
        SpiffeId {
            td: self.clone(),
            path: "".into(),
        }
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({:?})", &*self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for TrustDomain {
    type Error = IdError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl TryFrom<&str> for TrustDomain {
    type Error = IdError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<TrustDomain> for String {
    fn from(value: TrustDomain) -> Self {
        String::from(&*value.0)
    }
}

/// A SPIFFE ID, `spiffe://<trust domain><path>` (SPIFFE-ID §2).
///
/// The path is empty for the trust domain's own ID or a sequence of `/segment`s.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SpiffeId {
    td: TrustDomain,
    path: Box<str>,
}

impl SpiffeId {
    /// Parse a SPIFFE ID.
    ///
    /// # Errors
    /// An [`IdError`] naming the first rule the input breaks.
    pub fn parse(id: &str) -> Result<Self, IdError> {
        if id.is_empty() {
            return Err(IdError::Empty);
        }
        if id.len() > MAX_SPIFFE_ID_LEN {
            return Err(IdError::TooLong {
                limit: MAX_SPIFFE_ID_LEN,
                actual: id.len(),
            });
        }
        let Some(rest) = id.strip_prefix(SCHEME_PREFIX) else {
            let lowered = id
                .get(..SCHEME_PREFIX.len())
                .map(str::to_ascii_lowercase)
                .filter(|prefix| prefix == SCHEME_PREFIX);
            return Err(match lowered {
                Some(prefix) => IdError::UpperCaseScheme {
                    suggestion: format!("{prefix}{}", &id[SCHEME_PREFIX.len()..]),
                },
                None => IdError::WrongScheme,
            });
        };
        if let Some(position) = id.find(['?', '#']) {
            return Err(IdError::QueryOrFragment {
                found: char::from(id.as_bytes()[position]),
                position,
            });
        }
        let authority_end = rest.find('/').unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        check_trust_domain(authority, SCHEME_PREFIX.len())?;
        check_path(path, SCHEME_PREFIX.len() + authority_end)?;
        Ok(Self {
            td: TrustDomain(authority.into()),
            path: path.into(),
        })
    }

    /// Build a SPIFFE ID from a trust domain and a path (`""` or `/seg/…`).
    ///
    /// # Errors
    /// An [`IdError`] if the path breaks SPIFFE-ID §2.2, or the result would exceed
    /// 2048 bytes.
    pub fn new(td: TrustDomain, path: &str) -> Result<Self, IdError> {
        if !path.is_empty() && !path.starts_with('/') {
            return Err(IdError::PathWithoutSlash);
        }
        let offset = SCHEME_PREFIX.len() + td.as_str().len();
        check_path(path, offset)?;
        let actual = offset + path.len();
        if actual > MAX_SPIFFE_ID_LEN {
            return Err(IdError::TooLong {
                limit: MAX_SPIFFE_ID_LEN,
                actual,
            });
        }
        Ok(Self {
            td,
            path: path.into(),
        })
    }

    /// The trust domain the ID belongs to.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.td
    }

    /// The path, `""` for a trust domain's own ID.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether the ID has no path (it names the trust domain itself). X509-SVID leaf
    /// certificates must not carry such an ID (X509-SVID §3.1).
    pub fn is_root(&self) -> bool {
        self.path.is_empty()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME_PREFIX}{}{}", self.td, self.path)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId(\"{self}\")")
    }
}

impl FromStr for SpiffeId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for SpiffeId {
    type Error = IdError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl TryFrom<&str> for SpiffeId {
    type Error = IdError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<SpiffeId> for String {
    fn from(value: SpiffeId) -> Self {
        value.to_string()
    }
}

/// Check a trust domain name; `offset` is where it starts in the caller's input, so
/// that positions in errors point into what the user typed.
fn check_trust_domain(name: &str, offset: usize) -> Result<(), IdError> {
    if name.is_empty() {
        return Err(IdError::EmptyTrustDomain);
    }
    if name.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(IdError::TrustDomainTooLong {
            limit: MAX_TRUST_DOMAIN_LEN,
            actual: name.len(),
        });
    }
    // Userinfo may itself contain ':' ("user:password@"), so look for '@' first.
    if name.contains('@') {
        return Err(IdError::UserInfo);
    }
    let mut has_upper = false;
    for (index, ch) in name.char_indices() {
        let position = offset + index;
        match ch {
            'a'..='z' | '0'..='9' | '.' | '-' | '_' => {}
            'A'..='Z' => has_upper = true,
            ':' => return Err(IdError::Port),
            '%' => return Err(IdError::PercentEncoded { position }),
            found => return Err(IdError::TrustDomainChar { found, position }),
        }
    }
    if has_upper {
        return Err(IdError::UpperCaseTrustDomain {
            suggestion: name.to_ascii_lowercase(),
        });
    }
    Ok(())
}

/// Check a SPIFFE ID path (`""` or `/seg(/seg)*`); `offset` as for [`check_trust_domain`].
fn check_path(path: &str, offset: usize) -> Result<(), IdError> {
    if path.is_empty() {
        return Ok(());
    }
    let mut segment_start = 0;
    // Segments follow each '/'; the first byte is always '/'.
    for segment in path.split('/').skip(1) {
        segment_start += 1;
        let position = offset + segment_start - 1;
        if segment.is_empty() {
            return Err(if segment_start == path.len() {
                IdError::TrailingSlash
            } else {
                IdError::EmptySegment { position }
            });
        }
        if segment == "." || segment == ".." {
            return Err(IdError::DotSegment { position });
        }
        for (char_index, ch) in segment.char_indices() {
            let position = offset + segment_start + char_index;
            match ch {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => {}
                '%' => return Err(IdError::PercentEncoded { position }),
                found => return Err(IdError::PathChar { found, position }),
            }
        }
        segment_start += segment.len();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_point_into_the_input() {
        assert_eq!(
            SpiffeId::parse("spiffe://td/a/b$c"),
            Err(IdError::PathChar {
                found: '$',
                position: 15
            })
        );
        assert_eq!(
            SpiffeId::parse("spiffe://td/a//b"),
            Err(IdError::EmptySegment { position: 13 })
        );
    }

    #[test]
    fn root_id_round_trips() {
        let td = TrustDomain::new("example.org").unwrap();
        assert_eq!(td.id().to_string(), "spiffe://example.org");
        assert!(td.id().is_root());
        assert_eq!(SpiffeId::parse("spiffe://example.org").unwrap(), td.id());
    }

    #[test]
    fn new_rejects_relative_path() {
        let td = TrustDomain::new("example.org").unwrap();
        assert_eq!(SpiffeId::new(td, "a/b"), Err(IdError::PathWithoutSlash));
    }
}
