//! Federation relationship routes: list and show (with origin, trust chain and fetch
//! status), create, replace and delete (through the relationship
//! [`Registry`](crate::registry::Registry)), and "refresh now", which the poller
//! manager answers through a [`RefreshRequest`].
//!
//! Owns the HTTP shapes: the request body ([`RelationshipSpec`], JSON), the views, and
//! which error is which status and code. It does not own the rules a relationship
//! must follow, persistence or polling (the registry), or fetching.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use spiffe_federation::{SpiffeId, TrustDomain};
use time::OffsetDateTime;
use tokio::sync::oneshot;
use url::Url;

use super::error::ApiError;
use super::routes_status::{FetchStatus, fetch_status};
use super::{AdminState, RefreshRequest, trust_domain};
use crate::config::{ConfigError, ProfileName, ProxyConfig, Relationship, Scope};
use crate::registry::chain::Chain;
use crate::registry::{Details, Origin, Registry, RegistryError, RelationshipSpec};
use crate::sources::resolved::{MaterialSource, RelationshipError};
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
) -> Result<Json<ListView>, ApiError> {
    state.access.authorize(&headers, Scope::Read)?;
    let now = OffsetDateTime::now_utc();
    let snapshot = state.trust_store.snapshot();
    let listing = state.relationships.listing();
    let relationships = listing
        .entries()
        .map(|(r, details)| view(&state, &snapshot, r, details, now))
        .collect();
    Ok(Json(ListView { relationships }))
}

/// `GET /v1/federation-relationships/{td}`.
pub(super) async fn show(
    State(state): State<AdminState>,
    Path(td): Path<String>,
    headers: HeaderMap,
) -> Result<Json<RelationshipView>, ApiError> {
    state.access.authorize(&headers, Scope::Read)?;
    let td = trust_domain(&td)?;
    current_view(&state, &td).map(Json)
}

/// `POST /v1/federation-relationships`: create one (201 with its view).
pub(super) async fn create(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Result<Json<RelationshipSpec>, JsonRejection>,
) -> Result<(StatusCode, Json<RelationshipView>), ApiError> {
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
) -> Result<Json<RelationshipView>, ApiError> {
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
/// poller's result.
pub(super) async fn refresh(
    State(state): State<AdminState>,
    Path(td): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.access.authorize(&headers, Scope::Write)?;
    let td = trust_domain(&td)?;
    if state.relationships.find(&td).is_none() {
        return Err(not_found(&td));
    }
    let (reply, answer) = oneshot::channel();
    let request = RefreshRequest {
        trust_domain: td,
        reply,
    };
    state
        .refresh
        .send(request)
        .await
        .map_err(|_| poller_unavailable())?;
    let value = answer.await.map_err(|_| poller_unavailable())??;
    Ok(Json(value))
}

/// `?force=` of a delete.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeleteQuery {
    #[serde(default)]
    force: bool,
}

/// The body of `GET /v1/federation-relationships`.
#[derive(Debug, Serialize)]
pub(super) struct ListView {
    relationships: Vec<RelationshipView>,
}

/// One relationship as the API shows it.
#[derive(Debug, Serialize)]
pub(super) struct RelationshipView {
    trust_domain: TrustDomain,
    origin: Origin,
    urls: Vec<Url>,
    profile: ProfileName,
    endpoint_spiffe_id: Option<SpiffeId>,
    follow_redirects: bool,
    proxy: ProxyConfig,
    allow_revocation: bool,
    #[serde(flatten)]
    chain: Chain,
    warnings: Vec<String>,
    status: FetchStatus,
}

fn view(
    state: &AdminState,
    snapshot: &Snapshot,
    relationship: &Relationship,
    details: &Details,
    now: OffsetDateTime,
) -> RelationshipView {
    let td = &relationship.trust_domain;
    RelationshipView {
        trust_domain: td.clone(),
        origin: details.origin,
        urls: relationship.endpoint_urls(),
        profile: relationship.profile,
        endpoint_spiffe_id: relationship.endpoint_spiffe_id.clone(),
        follow_redirects: relationship.follow_redirects,
        proxy: relationship.proxy.clone(),
        allow_revocation: relationship.allow_revocation,
        chain: details.chain.clone(),
        warnings: details.warnings.clone(),
        status: fetch_status(state, snapshot, td, Some(relationship), now),
    }
}

/// The view of `td` as now listed.
fn current_view(state: &AdminState, td: &TrustDomain) -> Result<RelationshipView, ApiError> {
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
            "unavailable",
            "relationship changes are not available here: no relationship registry runs",
        )
    })
}

/// A body the JSON extractor refused: malformed (400), of the wrong shape, naming
/// the field (422), too large (413) or not JSON (415).
fn body_error(err: &JsonRejection) -> ApiError {
    let status = err.status();
    let code = match status {
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_relationship",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        _ => "invalid_argument",
    };
    ApiError::new(status, code, err.body_text())
}

fn registry_error(err: RegistryError) -> ApiError {
    let unprocessable = |message: String| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_relationship",
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
            ApiError::conflict("already_exists", err.to_string())
        }
        err @ RegistryError::NotFound { .. } => ApiError::not_found(err.to_string()),
        err @ RegistryError::ManagedInConfiguration { .. } => {
            ApiError::conflict("managed_in_configuration", err.to_string())
        }
        err @ RegistryError::TrustDomainMismatch { .. } => ApiError::invalid(err.to_string()),
        err @ RegistryError::InUse { .. } => {
            ApiError::conflict("relationship_in_use", err.to_string())
        }
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
                "payload_too_large",
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
        "invalid_relationship",
        message,
    )
}

fn not_found(td: &TrustDomain) -> ApiError {
    ApiError::not_found(format!("no federation relationship with {td}"))
}

fn poller_unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the poller is not running (the gateway is starting or shutting down)",
    )
}
