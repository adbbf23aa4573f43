//! Federation relationship routes: list and show (with origin, trust chain and fetch
//! status), create, replace and delete (through the relationship
//! [`Registry`](crate::registry::Registry)), and "refresh now", which the relationship's
//! poller answers ([`Pollers::refresh`](crate::sources::pollers::Pollers::refresh)).
//!
//! Owns reading the request body ([`RelationshipSpec`], JSON), building the answers
//! (the API contract's [`api::Relationship`] and friends) and which error is which
//! status and code. It does not own the rules a relationship must follow,
//! persistence or polling (the registry), or fetching.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use spiffe_federation::TrustDomain;
use time::OffsetDateTime;

use super::api::{self, DeleteQuery, ErrorCode, RefreshReport, RelationshipList};
use super::error::ApiError;
use super::routes_status::fetch_status;
use super::{AdminState, trust_domain};
use crate::config::{ConfigError, Scope};
use crate::registry::chain::{Chain, ChainEnd};
use crate::registry::{Details, Origin, Registry, RegistryError, RelationshipSpec};
use crate::relationship::Relationship;
use crate::relationship::{MaterialSource, RelationshipError};
use crate::sources::pollers::PollReport;
use crate::trust::store::Snapshot;

/// The largest create or replace body: room for a bootstrap bundle and extra roots of
/// up to `policy.max_document_bytes` each, as JSON strings, and the other fields.
pub(super) fn body_limit(max_document_bytes: usize) -> usize {
    max_document_bytes
        .saturating_mul(2)
        .saturating_add(64 * 1024)
}

/// `GET /v1/federation-relationships`.
pub(super) async fn list(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> Result<Json<RelationshipList>, ApiError> {
    state.access.authorize(&headers, Scope::Read)?;
    let now = OffsetDateTime::now_utc();
    let snapshot = state.trust_store.snapshot();
    let listing = state.relationships.listing();
    let relationships = listing
        .entries()
        .map(|(r, details)| view(&state, &snapshot, r, details, now))
        .collect();
    Ok(Json(RelationshipList { relationships }))
}

/// `GET /v1/federation-relationships/{td}`.
pub(super) async fn show(
    State(state): State<AdminState>,
    Path(td): Path<String>,
    headers: HeaderMap,
) -> Result<Json<api::Relationship>, ApiError> {
    state.access.authorize(&headers, Scope::Read)?;
    let td = trust_domain(&td)?;
    current_view(&state, &td).map(Json)
}

/// `POST /v1/federation-relationships`: create one (201 with its view).
pub(super) async fn create(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Result<Json<RelationshipSpec>, JsonRejection>,
) -> Result<(StatusCode, Json<api::Relationship>), ApiError> {
    let principal = state.access.authorize(&headers, Scope::Write)?;
    let registry = registry(&state)?;
    let Json(spec) = body.map_err(|err| body_error(&err))?;
    let td = spec.trust_domain.clone();
    registry
        .create(spec, principal.audit_name())
        .await
        .map_err(registry_error)?;
    Ok((StatusCode::CREATED, Json(current_view(&state, &td)?)))
}

/// `PUT /v1/federation-relationships/{td}`: replace one created through the API.
pub(super) async fn replace(
    State(state): State<AdminState>,
    Path(td): Path<String>,
    headers: HeaderMap,
    body: Result<Json<RelationshipSpec>, JsonRejection>,
) -> Result<Json<api::Relationship>, ApiError> {
    let principal = state.access.authorize(&headers, Scope::Write)?;
    let td = trust_domain(&td)?;
    let registry = registry(&state)?;
    let Json(spec) = body.map_err(|err| body_error(&err))?;
    registry
        .replace(td.clone(), spec, principal.audit_name())
        .await
        .map_err(registry_error)?;
    current_view(&state, &td).map(Json)
}

/// `DELETE /v1/federation-relationships/{td}[?force=true]`: stop polling and remove
/// the bundle everywhere (POLL-4).
pub(super) async fn delete(
    State(state): State<AdminState>,
    Path(td): Path<String>,
    query: Result<Query<DeleteQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let principal = state.access.authorize(&headers, Scope::Write)?;
    let td = trust_domain(&td)?;
    let Query(query) = query.map_err(|err| ApiError::invalid(err.body_text()))?;
    let registry = registry(&state)?;
    registry
        .delete(td, query.force, principal.audit_name())
        .await
        .map_err(registry_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/federation-relationships/{td}/refresh`: fetch now and answer with the
/// poller's report, which must read as a [`RefreshReport`].
pub(super) async fn refresh(
    State(state): State<AdminState>,
    Path(td): Path<String>,
    headers: HeaderMap,
) -> Result<Json<RefreshReport>, ApiError> {
    state.access.authorize(&headers, Scope::Write)?;
    let td = trust_domain(&td)?;
    if state.relationships.find(&td).is_none() {
        return Err(not_found(&td));
    }
    let pollers = state.pollers.as_ref().ok_or_else(poller_unavailable)?;
    let Some(poll) = pollers.refresh(&td).await else {
        return Err(ApiError::not_found(format!("no poller for {td}")));
    };
    let report = refresh_report(poll)?;
    Ok(Json(report))
}

fn view(
    state: &AdminState,
    snapshot: &Snapshot,
    relationship: &Relationship,
    details: &Details,
    now: OffsetDateTime,
) -> api::Relationship {
    let td = &relationship.trust_domain;
    api::Relationship {
        trust_domain: td.clone(),
        origin: origin(details.origin),
        urls: relationship.endpoint_urls(),
        profile: relationship.profile,
        endpoint_spiffe_id: relationship.endpoint_spiffe_id.clone(),
        follow_redirects: relationship.follow_redirects,
        proxy: relationship.proxy.clone(),
        allow_revocation: relationship.allow_revocation,
        chain: chain(&details.chain),
        warnings: details.warnings.clone(),
        status: fetch_status(state, snapshot, td, Some(relationship), now),
    }
}

fn origin(origin: Origin) -> api::Origin {
    match origin {
        Origin::Configuration => api::Origin::Configuration,
        Origin::Api => api::Origin::Api,
        Origin::Kubernetes => api::Origin::Kubernetes,
    }
}

fn chain(chain: &Chain) -> api::TrustChain {
    api::TrustChain {
        depends_on: chain.depends_on.clone(),
        chain_depth: chain.chain_depth,
        chain_end: match chain.chain_end {
            ChainEnd::WebPki => api::ChainEnd::WebPki,
            ChainEnd::SelfServing => api::ChainEnd::SelfServing,
            ChainEnd::Local => api::ChainEnd::Local,
            ChainEnd::Bootstrap => api::ChainEnd::Bootstrap,
            ChainEnd::Static => api::ChainEnd::Static,
            ChainEnd::Cycle => api::ChainEnd::Cycle,
        },
        cycle: chain.cycle,
    }
}

/// The view of `td` as now listed.
fn current_view(state: &AdminState, td: &TrustDomain) -> Result<api::Relationship, ApiError> {
    let listing = state.relationships.listing();
    let (relationship, details) = listing
        .entries()
        .find(|(r, _)| &r.trust_domain == td)
        .ok_or_else(|| not_found(td))?;
    let snapshot = state.trust_store.snapshot();
    Ok(view(
        state,
        &snapshot,
        relationship,
        details,
        OffsetDateTime::now_utc(),
    ))
}

fn registry(state: &AdminState) -> Result<&Registry, ApiError> {
    state.registry.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "relationship changes are not available here: no relationship registry runs",
        )
    })
}

/// A body the JSON extractor refused: malformed (400), of the wrong shape, naming
/// the field (422), too large (413) or not JSON (415).
fn body_error(err: &JsonRejection) -> ApiError {
    let status = err.status();
    let code = match status {
        StatusCode::UNPROCESSABLE_ENTITY => ErrorCode::InvalidRelationship,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        _ => ErrorCode::InvalidArgument,
    };
    ApiError::new(status, code, err.body_text())
}

fn registry_error(err: RegistryError) -> ApiError {
    let unprocessable = |message: String| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidRelationship,
            message,
        )
    };
    match err {
        RegistryError::Invalid(ConfigError::Invalid { key, reason }) => {
            unprocessable(format!("{key}: {reason}"))
        }
        RegistryError::Invalid(other) => unprocessable(other.to_string()),
        RegistryError::Material(material) => material_error(material),
        err @ RegistryError::AlreadyExists { .. } => {
            ApiError::conflict(ErrorCode::AlreadyExists, err.to_string())
        }
        err @ RegistryError::NotFound { .. } => ApiError::not_found(err.to_string()),
        err @ RegistryError::ManagedInConfiguration { .. } => {
            ApiError::conflict(ErrorCode::ManagedInConfiguration, err.to_string())
        }
        err @ RegistryError::ManagedInKubernetes { .. } => {
            ApiError::conflict(ErrorCode::ManagedInKubernetes, err.to_string())
        }
        err @ RegistryError::TrustDomainMismatch { .. } => ApiError::invalid(err.to_string()),
        err @ RegistryError::InUse { .. } => {
            ApiError::conflict(ErrorCode::RelationshipInUse, err.to_string())
        }
        RegistryError::Store(err) => ApiError::store(&err),
        other => ApiError::internal(&other),
    }
}

/// Inline material the poller cannot use, naming the body's field.
fn material_error(err: RelationshipError) -> ApiError {
    let field = |from: &MaterialSource| match from {
        MaterialSource::Inline(field) => (*field).to_owned(),
        MaterialSource::File(path) => path.display().to_string(),
    };
    let message = match &err {
        RelationshipError::Bootstrap { from, source, .. } => format!("{}: {source}", field(from)),
        RelationshipError::NoRoots { from, .. } => {
            format!("{}: holds no PEM certificate", field(from))
        }
        RelationshipError::BootstrapWithoutAuthority {
            from,
            elements,
            ignored,
            ..
        } => format!(
            "{}: holds no X.509 authority ({elements} elements in keys, {ignored} of them \
             ignored); it could not authenticate the endpoint",
            field(from)
        ),
        RelationshipError::TooLarge { from, limit, .. } => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge,
                format!(
                    "{}: larger than policy.max_document_bytes ({limit} bytes)",
                    field(from)
                ),
            );
        }
        RelationshipError::Url { url, source, .. } => format!("url: {url}: {source}"),
        RelationshipError::MissingEndpointId { .. } => {
            "endpoint_spiffe_id: required for profile https_spiffe".to_owned()
        }
        _ => return ApiError::internal(&err),
    };
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::InvalidRelationship,
        message,
    )
}

fn not_found(td: &TrustDomain) -> ApiError {
    ApiError::not_found(format!("no federation relationship with {td}"))
}

/// The API's form of a poller's report.
fn refresh_report(poll: PollReport) -> Result<api::RefreshReport, ApiError> {
    let outcome = match poll.outcome {
        "accepted" => api::RefreshOutcome::Accepted,
        "unchanged" => api::RefreshOutcome::Unchanged,
        "rejected" => api::RefreshOutcome::Rejected,
        "failed" => api::RefreshOutcome::Failed,
        "awaiting_bootstrap" => api::RefreshOutcome::AwaitingBootstrap,
        other => {
            return Err(ApiError::internal(&format!(
                "a poller reported the outcome {other:?}, which the API does not know"
            )));
        }
    };
    Ok(api::RefreshReport {
        error: poll.error,
        error_code: poll.error_code.map(str::to_owned),
        final_url: poll.final_url,
        next_attempt: poll.next_attempt,
        outcome,
        peer: poll.peer,
        revision: poll.revision,
        sequence: poll.sequence,
        trust_domain: poll.trust_domain,
    })
}

fn poller_unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Unavailable,
        "the poller is not running (the gateway is starting or shutting down)",
    )
}
