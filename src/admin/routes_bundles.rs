//! Bundle routes: the list view (served by `routes_watch`, which adds waiting), show
//! (SPIFFE JSON or PEM), operator override (`PUT`, STO-4, L-5), delete (POLL-4),
//! history and rollback.
//!
//! Owns turning requests into trust store calls and outcomes into the API contract's
//! answers ([`super::api`]). Every bundle
//! goes through the same gates as a fetched one: the format (`Bundle::parse` under the
//! trust domain named in the path, never one read from the document, FED-7) and then
//! policy inside [`TrustStore::submit`](crate::trust::store::TrustStore::submit). The
//! trust store writes the audit record of every change it makes (who, old and new
//! digest) and counts every refusal, so these handlers do not do either again. A
//! bundle pushed for a *local* domain is served like one from a local file: with the
//! configured refresh hint, and numbered when it has no `spiffe_sequence` (BUN-3).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use spiffe_federation::bundle::{Ignored, IgnoredSummary, Lint};
use spiffe_federation::{Bundle, BundleError, TrustDomain};
use time::OffsetDateTime;

use super::api::{
    self, BundleEntry, BundleList, BundleQuery, Change, ChangeOutcome, ErrorCode, History,
    HistoryEntry, Role, RollbackRequest,
};
use super::domain_state;
use super::error::ApiError;
use super::routes_status;
use super::{AdminState, trust_domain};
use crate::config::Scope;
use crate::trust::policy::{DocumentFacts, PolicyError, Source, Warning};
use crate::trust::store::{Outcome, Snapshot, SubmitError};

const JSON: &str = "application/json";
const PEM: &str = "application/x-pem-file";
/// Also accepted for PEM uploads (RFC 8555 §7.4.2).
const PEM_CHAIN: &str = "application/pem-certificate-chain";
/// One response header per warning on the bundle (`<code>: <message>`), so that the
/// body stays exactly the served document.
const WARNING_HEADER: &str = "fedgw-warning";

/// The body of `GET /v1/bundles` (with or without `wait`, see `routes_watch`) and of
/// each `GET /v1/events` event: the full state at one revision (DIST-5).
pub(super) fn list_view(state: &AdminState, snapshot: &Snapshot) -> BundleList {
    let bundles = snapshot
        .domains
        .iter()
        .map(|(td, entry)| BundleEntry {
            trust_domain: td.clone(),
            role: role(state, td),
            sequence: entry.sequence,
            digest: entry.digest.clone(),
            source: entry.source.to_string(),
            accepted_at: domain_state::rfc3339(entry.accepted_at),
            authorities: authority_count(&entry.bundle),
            revision: entry.revision,
            warnings: routes_status::warnings(Some(entry), None),
            // The stored document is JSON the store wrote; it always parses.
            bundle: serde_json::from_slice(&entry.json).unwrap_or(serde_json::Value::Null),
        })
        .collect();
    BundleList {
        revision: snapshot.revision,
        bundles,
    }
}

/// `GET /v1/bundles/{td}?format=spiffe|pem`: the document itself.
pub(super) async fn show(
    State(state): State<AdminState>,
    Path(td): Path<String>,
    query: Result<Query<BundleQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.access.authorize(&headers, Scope::Read)?;
    let td = trust_domain(&td)?;
    let Query(query) = query.map_err(|err| ApiError::invalid(err.body_text()))?;
    let format = query.format.as_deref().unwrap_or("spiffe");
    if !matches!(format, "spiffe" | "pem") {
        return Err(ApiError::invalid(format!(
            "unknown format {format:?}: use spiffe or pem"
        )));
    }
    let snapshot = state.trust_store.snapshot();
    let entry = snapshot.get(&td).ok_or_else(|| no_bundle(&td))?;
    let mut response = if format == "pem" {
        ([(CONTENT_TYPE, PEM)], entry.bundle.to_pem()).into_response()
    } else {
        ([(CONTENT_TYPE, JSON)], entry.json.clone()).into_response()
    };
    for warning in &entry.warnings {
        // Messages are built from certificate subjects; a byte a header cannot carry
        // is replaced rather than dropping the warning.
        let text: String = format!("{}: {warning}", warning.code())
            .chars()
            .map(|c| {
                if c.is_ascii() && !c.is_ascii_control() {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        if let Ok(value) = HeaderValue::from_str(&text) {
            response.headers_mut().append(WARNING_HEADER, value);
        }
    }
    Ok(response)
}

/// `PUT /v1/bundles/{td}`: an operator sets the bundle (STO-4); the override resets
/// the sequence baseline (L-5).
pub(super) async fn put(
    State(state): State<AdminState>,
    Path(td): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Change>, ApiError> {
    let principal = state.access.authorize(&headers, Scope::Write)?;
    let td = trust_domain(&td)?;
    refuse_source_managed(&state, &td, "replaced")?;
    let body = body.map_err(|err| body_error(&err, state.max_document_bytes))?;
    let mut parsed = parse(&td, &headers, &body, state.max_document_bytes)?;
    if let Some(local) = state.local.iter().find(|l| l.trust_domain == td) {
        parsed
            .bundle
            .set_refresh_hint(Some(local.refresh_hint.duration()));
        state
            .trust_store
            .number_local(&td, &mut parsed.bundle)
            .await
            .map_err(|err| ApiError::store(&err))?;
    }
    let source = Source::Operator {
        who: principal.audit_name(),
    };
    let now = OffsetDateTime::now_utc();
    let submitted = match parsed.document {
        // An operator's empty `keys` list is deliberate: a revocation is allowed.
        // A document whose elements were all left out is still refused.
        Some(elements) => {
            let document = DocumentFacts {
                elements,
                allow_revocation: true,
            };
            state
                .trust_store
                .submit_document(&td, parsed.bundle, document, source, now)
                .await
        }
        None => {
            state
                .trust_store
                .submit(&td, parsed.bundle, source, now)
                .await
        }
    };
    let outcome = submitted.map_err(|err| submit_error(&td, err))?;
    Ok(Json(change_view(
        &state,
        outcome,
        &parsed.lints,
        &parsed.ignored,
    )))
}

/// `DELETE /v1/bundles/{td}`: stop trusting the domain's current bundle (POLL-4).
pub(super) async fn delete(
    State(state): State<AdminState>,
    Path(td): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let principal = state.access.authorize(&headers, Scope::Write)?;
    let td = trust_domain(&td)?;
    refuse_source_managed(&state, &td, "deleted")?;
    let removed = state
        .trust_store
        .remove(&td, &principal.audit_name(), OffsetDateTime::now_utc())
        .await
        .map_err(|err| ApiError::store(&err))?;
    match removed {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(no_bundle(&td)),
    }
}

/// `GET /v1/bundles/{td}/history`: stored versions, newest first.
pub(super) async fn history(
    State(state): State<AdminState>,
    Path(td): Path<String>,
    headers: HeaderMap,
) -> Result<Json<History>, ApiError> {
    state.access.authorize(&headers, Scope::Read)?;
    let td = trust_domain(&td)?;
    let records = state
        .trust_store
        .history(&td)
        .await
        .map_err(|err| ApiError::store(&err))?;
    if records.is_empty() {
        return Err(ApiError::not_found(format!("no stored versions for {td}")));
    }
    let history = records
        .into_iter()
        .map(|r| HistoryEntry {
            revision: r.revision,
            sequence: r.sequence,
            digest: r.digest,
            source: r.source.to_string(),
            accepted_at: domain_state::unix_rfc3339(r.accepted_at),
        })
        .collect();
    Ok(Json(History { history }))
}

/// `POST /v1/bundles/{td}/rollback` with `{"revision": N}`: re-accept a stored version
/// as an operator override.
pub(super) async fn rollback(
    State(state): State<AdminState>,
    Path(td): Path<String>,
    headers: HeaderMap,
    body: Result<Json<RollbackRequest>, JsonRejection>,
) -> Result<Json<Change>, ApiError> {
    let principal = state.access.authorize(&headers, Scope::Write)?;
    let td = trust_domain(&td)?;
    refuse_source_managed(&state, &td, "rolled back")?;
    let Json(body) = body.map_err(|err| ApiError::invalid(err.body_text()))?;
    let outcome = state
        .trust_store
        .rollback(
            &td,
            body.revision,
            &principal.audit_name(),
            OffsetDateTime::now_utc(),
        )
        .await
        .map_err(|err| submit_error(&td, err))?;
    Ok(Json(change_view(&state, outcome, &[], &[])))
}

/// A parsed upload: the bundle and what the parser left out or flagged.
struct Upload {
    bundle: Bundle,
    ignored: Vec<Ignored>,
    lints: Vec<Lint>,
    /// What a SPIFFE bundle document held (none for PEM, whose parse is strict).
    document: Option<IgnoredSummary>,
}

/// Parse the body as the content type says, under `td` (never a name from the body).
fn parse(
    td: &TrustDomain,
    headers: &HeaderMap,
    body: &[u8],
    limit: usize,
) -> Result<Upload, ApiError> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match content_type.as_str() {
        JSON => {
            let parsed = Bundle::parse_with_limit(td, body, limit).map_err(bundle_error)?;
            Ok(Upload {
                document: Some(parsed.ignored_summary()),
                bundle: parsed.bundle,
                ignored: parsed.ignored,
                lints: parsed.lints,
            })
        }
        PEM | PEM_CHAIN => Ok(Upload {
            bundle: Bundle::from_pem(td, body).map_err(bundle_error)?,
            ignored: Vec::new(),
            lints: Vec::new(),
            document: None,
        }),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            format!("Content-Type {other:?}: send {JSON} (SPIFFE bundle) or {PEM}"),
        )),
    }
}

fn change_view(
    state: &AdminState,
    outcome: Outcome,
    lints: &[Lint],
    ignored: &[Ignored],
) -> Change {
    let mut warnings: Vec<String> = lints
        .iter()
        .map(|l| format!("{}: {}", l.location, l.kind))
        .collect();
    let (outcome, revision) = match outcome {
        Outcome::Accepted {
            revision,
            warnings: policy,
        } => {
            warnings.extend(policy.iter().map(Warning::to_string));
            (ChangeOutcome::Accepted, revision)
        }
        // Nothing was written: the revision is the one already serving.
        Outcome::Unchanged => (
            ChangeOutcome::Unchanged,
            state.trust_store.snapshot().revision,
        ),
    };
    Change {
        outcome,
        revision,
        warnings,
        ignored: ignored
            .iter()
            .map(|i| api::Ignored {
                location: i.location.clone(),
                reason: i.reason.to_string(),
            })
            .collect(),
    }
}

/// A local domain whose bundle comes from a file cannot be changed through the API: an
/// override would last only until the file changes, and a deletion would leave the
/// gateway without its own bundle (mTLS admin clients of the domain locked out) until
/// a restart, since the unchanged file is never read again. 409 `managed_by_source`,
/// naming the file.
fn refuse_source_managed(state: &AdminState, td: &TrustDomain, verb: &str) -> Result<(), ApiError> {
    let local = state.local.iter().find(|local| &local.trust_domain == td);
    if let Some(health) = local.and_then(|local| local.workload_api.as_ref()) {
        return Err(ApiError::conflict(
            ErrorCode::ManagedBySource,
            format!(
                "{td} is a local trust domain whose bundle comes from the Workload API {}; it cannot be {verb} through the API: the SPIRE server that issues it is the only source",
                health.socket()
            ),
        ));
    }
    let file = local.and_then(|local| local.source_file.as_ref());
    match file {
        Some(file) => Err(ApiError::conflict(
            ErrorCode::ManagedBySource,
            format!(
                "{td} is a local trust domain whose bundle comes from the file {}; it cannot be {verb} through the API: change the file instead (it is read again within 5 s)",
                file.display()
            ),
        )),
        None => Ok(()),
    }
}

fn role(state: &AdminState, td: &TrustDomain) -> Role {
    if state.local.iter().any(|l| &l.trust_domain == td) {
        Role::Local
    } else {
        Role::Foreign
    }
}

fn authority_count(bundle: &Bundle) -> usize {
    bundle.x509_authorities().len()
        + bundle.jwt_authorities().len()
        + bundle.wit_authorities().len()
}

fn no_bundle(td: &TrustDomain) -> ApiError {
    ApiError::not_found(format!("no bundle stored for {td}"))
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
        format!("the bundle document exceeds policy.max_document_bytes ({limit} bytes)"),
    )
}

fn body_error(err: &BytesRejection, limit: usize) -> ApiError {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large(limit)
    } else {
        ApiError::invalid(err.body_text())
    }
}

fn bundle_error(err: BundleError) -> ApiError {
    match err {
        BundleError::TooLarge { limit, .. } => too_large(limit),
        other => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidBundle,
            other.to_string(),
        ),
    }
}

fn submit_error(td: &TrustDomain, err: SubmitError) -> ApiError {
    match err {
        SubmitError::Rejected(policy) => {
            ApiError::conflict(policy_code(&policy), policy.to_string())
        }
        SubmitError::UnknownRevision { revision, .. } => {
            ApiError::not_found(format!("{td}: no stored version at revision {revision}"))
        }
        SubmitError::Store(err) => ApiError::store(&err),
    }
}

/// The API's code for a policy refusal: the same word as [`PolicyError::code`].
fn policy_code(err: &PolicyError) -> ErrorCode {
    match err {
        PolicyError::TrustDomainMismatch { .. } => ErrorCode::TrustDomainMismatch,
        PolicyError::SequenceRegression { .. } => ErrorCode::SequenceRegression,
        PolicyError::TooManyAuthorities { .. } => ErrorCode::TooManyAuthorities,
        PolicyError::BootstrapOverStored { .. } => ErrorCode::BootstrapOverStored,
        PolicyError::AllElementsIgnored { .. } => ErrorCode::AllElementsIgnored,
        PolicyError::RevocationRefused { .. } => ErrorCode::RevocationRefused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_refusals_answer_the_policys_own_code() {
        let td: TrustDomain = "b.example".parse().unwrap();
        let refusals = [
            PolicyError::TrustDomainMismatch {
                expected: td.clone(),
                actual: "c.example".parse().unwrap(),
            },
            PolicyError::SequenceRegression {
                trust_domain: td.clone(),
                current: 2,
                candidate: 1,
            },
            PolicyError::TooManyAuthorities {
                limit: 1,
                actual: 2,
            },
            PolicyError::BootstrapOverStored {
                trust_domain: td.clone(),
            },
            PolicyError::AllElementsIgnored {
                trust_domain: td.clone(),
                summary: IgnoredSummary::default(),
                stored: false,
            },
            PolicyError::RevocationRefused {
                trust_domain: td,
                stored: true,
            },
        ];
        for refusal in refusals {
            assert_eq!(policy_code(&refusal).as_str(), refusal.code());
        }
    }
}
