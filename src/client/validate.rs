//! `fedgw bundle validate`: check a bundle document offline and describe it.
//!
//! Owns the report (what a person or a script sees) built from the library's parse
//! results. It does not read files or print: `main.rs` does that, so the report can
//! be tested as a value.

use serde::Serialize;
use spiffe_federation::bundle::{Ignored, Lint, X509Authority};
use spiffe_federation::{Bundle, BundleError, BundleMap, TrustDomain};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The document formats `fedgw bundle validate` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A SPIFFE bundle (JWK Set), TDB §4.
    Spiffe,
    /// PEM `CERTIFICATE` blocks (X.509 authorities only).
    Pem,
    /// A SPIFFE Bundle Map, TDB §5.1.1.
    Map,
}

/// Why validation could not run or the document was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ValidateError {
    /// `--trust-domain` is required for this format.
    #[error(
        "--trust-domain is required for --format {0}: the document does not name its trust domain"
    )]
    TrustDomainRequired(&'static str),
    /// `--trust-domain` was given for a bundle map, whose keys name the trust domains.
    #[error("--trust-domain does not apply to --format map: a bundle map names its trust domains")]
    TrustDomainWithMap,
    /// The document was refused.
    #[error(transparent)]
    Invalid(#[from] BundleError),
}

/// The outcome of validating one document.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always true in a report; refusals are [`ValidateError`]s.
    pub valid: bool,
    /// The format read.
    pub format: Format,
    /// One entry per trust domain (one for `spiffe` and `pem`).
    pub bundles: Vec<BundleSummary>,
    /// Elements left out, with their JSON location and why.
    pub ignored: Vec<Note>,
    /// Warnings about content that was kept.
    pub warnings: Vec<Note>,
}

/// One trust domain's bundle as shown to the operator.
#[derive(Debug, Clone, Serialize)]
pub struct BundleSummary {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// `spiffe_sequence`.
    pub sequence: Option<u64>,
    /// `spiffe_refresh_hint` in seconds.
    pub refresh_hint_seconds: Option<u64>,
    /// True when the bundle has no authority at all: a revocation (TDB §4.1.3).
    pub empty: bool,
    /// Every authority, X.509 first, then JWT, then WIT.
    pub authorities: Vec<AuthoritySummary>,
}

/// One authority line.
#[derive(Debug, Clone, Serialize)]
pub struct AuthoritySummary {
    /// `x509-svid`, `jwt-svid` or `wit-svid`.
    pub kind: &'static str,
    /// The certificate subject (X.509 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The key ID (JWT and WIT only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// SHA-256 fingerprint of the certificate, hex (X.509 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Key type, e.g. `EC P-256`, `RSA 2048`.
    pub key_type: String,
    /// End of validity, RFC 3339 (X.509 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// Whether the certificate is outside its validity period at `now` (X.509 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expired: Option<bool>,
}

/// A located message.
#[derive(Debug, Clone, Serialize)]
pub struct Note {
    /// JSON Pointer to what the message is about.
    pub location: String,
    /// The message.
    pub message: String,
}

/// Validate `document` read in `format`, judging expiry at `now`.
///
/// # Errors
/// [`ValidateError`] when the options do not fit the format or the document is refused.
pub fn validate(
    document: &[u8],
    format: Format,
    trust_domain: Option<&TrustDomain>,
    now: OffsetDateTime,
) -> Result<Report, ValidateError> {
    let (bundles, ignored, lints) = match (format, trust_domain) {
        (Format::Spiffe, Some(td)) => {
            let parsed = Bundle::parse(td, document)?;
            (vec![parsed.bundle], parsed.ignored, parsed.lints)
        }
        (Format::Pem, Some(td)) => (vec![Bundle::from_pem(td, document)?], vec![], vec![]),
        (Format::Map, None) => {
            let parsed = BundleMap::parse(document)?;
            let bundles = parsed.map.iter().map(|(_, b)| b.clone()).collect();
            (bundles, parsed.ignored, parsed.lints)
        }
        (Format::Spiffe, None) => return Err(ValidateError::TrustDomainRequired("spiffe")),
        (Format::Pem, None) => return Err(ValidateError::TrustDomainRequired("pem")),
        (Format::Map, Some(_)) => return Err(ValidateError::TrustDomainWithMap),
    };
    Ok(Report {
        valid: true,
        format,
        bundles: bundles.iter().map(|b| summarise(b, now)).collect(),
        ignored: ignored.iter().map(ignored_note).collect(),
        warnings: lints.iter().map(lint_note).collect(),
    })
}

impl Report {
    /// The report as lines for a terminal.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for bundle in &self.bundles {
            let sequence = bundle
                .sequence
                .map_or_else(|| "no sequence".to_owned(), |s| format!("sequence {s}"));
            let hint = bundle.refresh_hint_seconds.map_or_else(
                || "no refresh hint".to_owned(),
                |s| format!("refresh hint {s}s"),
            );
            line(
                &mut out,
                format!(
                    "{}: valid ({sequence}, {hint}), {} {}",
                    bundle.trust_domain,
                    bundle.authorities.len(),
                    if bundle.authorities.len() == 1 {
                        "authority"
                    } else {
                        "authorities"
                    },
                ),
            );
            if bundle.empty {
                line(
                    &mut out,
                    format!(
                        "  no authorities: this bundle revokes every key of {} (TDB §4.1.3)",
                        bundle.trust_domain
                    ),
                );
            }
            for authority in &bundle.authorities {
                let name = match (&authority.subject, &authority.kid) {
                    (Some(subject), _) => {
                        let short = authority.sha256.as_deref().unwrap_or_default();
                        format!("{subject} sha256:{}", short.get(..16).unwrap_or(short))
                    }
                    (None, Some(kid)) => format!("kid={kid}"),
                    (None, None) => String::new(),
                };
                let not_after = authority.not_after.as_deref().unwrap_or("-");
                let expired = if authority.expired == Some(true) {
                    "  EXPIRED"
                } else {
                    ""
                };
                line(
                    &mut out,
                    format!(
                        "  {:<9} {:<48} {:<11} not after {not_after}{expired}",
                        authority.kind, name, authority.key_type
                    ),
                );
            }
        }
        for note in &self.ignored {
            line(
                &mut out,
                format!("ignored {}: {}", note.location, note.message),
            );
        }
        for note in &self.warnings {
            line(
                &mut out,
                format!("warning {}: {}", note.location, note.message),
            );
        }
        out
    }
}

fn line(out: &mut String, text: String) {
    out.push_str(&text);
    out.push('\n');
}

fn summarise(bundle: &Bundle, now: OffsetDateTime) -> BundleSummary {
    let mut authorities: Vec<AuthoritySummary> = bundle
        .x509_authorities()
        .iter()
        .map(|authority| x509_summary(authority, now))
        .collect();
    for (kind, keys) in [
        ("jwt-svid", bundle.jwt_authorities()),
        ("wit-svid", bundle.wit_authorities()),
    ] {
        authorities.extend(keys.values().map(|authority| AuthoritySummary {
            kind,
            subject: None,
            kid: Some(authority.kid().to_owned()),
            sha256: None,
            key_type: authority.key().describe(),
            not_after: None,
            expired: None,
        }));
    }
    BundleSummary {
        trust_domain: bundle.trust_domain().clone(),
        sequence: bundle.sequence(),
        refresh_hint_seconds: bundle.refresh_hint().map(|d| d.as_secs()),
        empty: bundle.is_empty(),
        authorities,
    }
}

fn x509_summary(authority: &X509Authority, now: OffsetDateTime) -> AuthoritySummary {
    let info = authority.info();
    AuthoritySummary {
        kind: "x509-svid",
        subject: Some(info.subject.clone()),
        kid: None,
        sha256: Some(info.sha256.clone()),
        key_type: info.key.describe(),
        not_after: Some(
            info.not_after
                .format(&Rfc3339)
                .unwrap_or_else(|_| info.not_after.to_string()),
        ),
        expired: Some(!authority.is_valid_at(now)),
    }
}

fn ignored_note(ignored: &Ignored) -> Note {
    Note {
        location: ignored.location.clone(),
        message: ignored.reason.to_string(),
    }
}

fn lint_note(lint: &Lint) -> Note {
    Note {
        location: lint.location.clone(),
        message: lint.kind.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td() -> TrustDomain {
        "example.org".parse().unwrap()
    }

    #[test]
    fn empty_bundle_is_reported_as_revocation() {
        let report = validate(
            br#"{"keys":[]}"#,
            Format::Spiffe,
            Some(&td()),
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        assert!(report.bundles[0].empty);
        assert!(report.to_text().contains("revokes every key"));
    }

    #[test]
    fn map_refuses_trust_domain_option() {
        let err = validate(
            br#"{"trust_domains":{}}"#,
            Format::Map,
            Some(&td()),
            OffsetDateTime::now_utc(),
        )
        .unwrap_err();
        assert!(matches!(err, ValidateError::TrustDomainWithMap));
    }

    #[test]
    fn spiffe_requires_trust_domain() {
        let err = validate(b"{}", Format::Spiffe, None, OffsetDateTime::now_utc()).unwrap_err();
        assert!(matches!(err, ValidateError::TrustDomainRequired("spiffe")));
    }

    #[test]
    fn ignored_elements_are_listed_with_location() {
        let report = validate(
            br#"{"keys":[{"use":"frob","kty":"EC"}]}"#,
            Format::Spiffe,
            Some(&td()),
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        assert_eq!(report.ignored.len(), 1);
        assert_eq!(report.ignored[0].location, "/keys/0");
        assert!(
            report
                .to_text()
                .contains("ignored /keys/0: unknown use \"frob\"")
        );
    }
}
