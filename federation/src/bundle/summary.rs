//! What became of a document's elements: [`Parsed::all_ignored`] and
//! [`IgnoredSummary`], which tell a document whose every element was left out from a
//! deliberately empty `keys` list (a revocation, TDB §4.1.3), and count what was left
//! out by reason in a form small enough to keep and show.

use std::fmt;

use super::{Ignored, Parsed};

/// What became of a document's `keys` elements, small enough to keep and show
/// whatever the document's size: how many there were, how many authorities were
/// kept, and the elements left out counted by reason. Made by
/// [`Parsed::ignored_summary`].
///
/// ```
/// use spiffe_federation::{Bundle, TrustDomain};
///
/// let td: TrustDomain = "example.org".parse()?;
/// let parsed = Bundle::parse(&td, br#"{"keys":[{},{},{"use":"sig"}]}"#)?;
/// let summary = parsed.ignored_summary();
/// assert!(summary.all_ignored());
/// assert_eq!(summary.ignored, 3);
/// assert_eq!(summary.by_reason[0].code, "missing_use");
/// assert_eq!(summary.by_reason[0].count, 2);
/// assert_eq!(
///     summary.to_string(),
///     "3 of 3 elements left out: 2 × no \"use\" member (first at /keys/0); 1 × unknown use \"sig\" (first at /keys/2)"
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IgnoredSummary {
    /// Elements in `keys`, kept or not.
    pub elements: usize,
    /// Authorities in the bundle built from them (duplicates count once).
    pub authorities: usize,
    /// Elements left out.
    pub ignored: usize,
    /// One entry per [`IgnoreReason::code`](super::IgnoreReason::code), in the order the reasons first occur.
    pub by_reason: Vec<ReasonCount>,
}

/// How many elements were left out for one reason, and the first of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasonCount {
    /// The reason's [`IgnoreReason::code`](super::IgnoreReason::code).
    pub code: &'static str,
    /// How many elements were left out for it.
    pub count: usize,
    /// The first element left out for it.
    pub first: Ignored,
}

/// The longest reason text [`IgnoredSummary`]'s `Display` shows; reasons quote
/// values from the document, which may be long.
const MAX_REASON_TEXT: usize = 160;

impl Parsed {
    /// Whether `keys` listed elements and none of them was kept: the empty bundle left
    /// is not what the publisher wrote. A deliberately empty `keys` list (a
    /// revocation, TDB §4.1.3) is not "all ignored".
    ///
    /// ```
    /// use spiffe_federation::{Bundle, TrustDomain};
    ///
    /// let td: TrustDomain = "example.org".parse()?;
    /// assert!(Bundle::parse(&td, br#"{"keys":[{}]}"#)?.all_ignored());
    /// assert!(!Bundle::parse(&td, br#"{"keys":[]}"#)?.all_ignored());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn all_ignored(&self) -> bool {
        self.elements > 0 && self.bundle.is_empty()
    }

    /// The elements left out, counted by reason (see [`IgnoredSummary`]).
    pub fn ignored_summary(&self) -> IgnoredSummary {
        let mut by_reason: Vec<ReasonCount> = Vec::new();
        for ignored in &self.ignored {
            let code = ignored.reason.code();
            match by_reason.iter_mut().find(|group| group.code == code) {
                Some(group) => group.count += 1,
                None => by_reason.push(ReasonCount {
                    code,
                    count: 1,
                    first: ignored.clone(),
                }),
            }
        }
        IgnoredSummary {
            elements: self.elements,
            authorities: self.bundle.x509_authorities().len()
                + self.bundle.jwt_authorities().len()
                + self.bundle.wit_authorities().len(),
            ignored: self.ignored.len(),
            by_reason,
        }
    }
}

impl IgnoredSummary {
    /// Whether `keys` listed elements and none of them was kept (see
    /// [`Parsed::all_ignored`]).
    pub fn all_ignored(&self) -> bool {
        self.elements > 0 && self.authorities == 0
    }
}

impl fmt::Display for IgnoredSummary {
    /// `N of M elements left out: C × REASON (first at LOCATION); …`, each reason cut
    /// to 160 characters with its length shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {} elements left out", self.ignored, self.elements)?;
        for (i, group) in self.by_reason.iter().enumerate() {
            let separator = if i == 0 { ": " } else { "; " };
            let reason = group.first.reason.to_string();
            let count = reason.chars().count();
            let reason = if count > MAX_REASON_TEXT {
                let cut: String = reason.chars().take(MAX_REASON_TEXT).collect();
                format!("{cut}… ({count} characters)")
            } else {
                reason
            };
            write!(
                f,
                "{separator}{} × {reason} (first at {})",
                group.count, group.first.location
            )?;
        }
        Ok(())
    }
}
