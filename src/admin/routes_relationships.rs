//! Federation relationship routes: list and show (with fetch status), and "refresh
//! now", which the poller manager answers through a [`RefreshRequest`].
//!
//! Relationships come from the configuration file for now: creating, replacing and
//! deleting them through the API is answered 405 with a message saying so, rather
//! than pretending to work. It does not own fetching or the relationship list (the
//! gateway swaps [`RelationshipsView`](super::RelationshipsView)).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use spiffe_federation::{SpiffeId, TrustDomain};
use time::OffsetDateTime;
use tokio::sync::oneshot;
use url::Url;

use super::error::ApiError;
use super::routes_status::{FetchStatus, fetch_status};
use super::{AdminState, RefreshRequest, trust_domain};
use crate::config::{ProfileName, Relationship, Scope};
use crate::trust_store::Snapshot;

/// `GET /v1/federation-relationships`.
pub(super) async fn list(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> Result<Json<ListView>, ApiError> {
    state.access.authorize(&headers, Scope::Read)?;
    let now = OffsetDateTime::now_utc();
    let snapshot = state.trust_store.snapshot();
    let relationships = state
        .relationships
        .load()
        .iter()
        .map(|r| view(&state, &snapshot, r, now))
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
    let relationship = configured(&state, &td)?;
    let snapshot = state.trust_store.snapshot();
    let now = OffsetDateTime::now_utc();
    Ok(Json(view(&state, &snapshot, &relationship, now)))
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
    configured(&state, &td)?;
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

/// Any create, replace or delete of a relationship.
pub(super) async fn managed_in_config(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> Result<(), ApiError> {
    state.access.authorize(&headers, Scope::Write)?;
    Err(ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "managed_in_configuration",
        "federation relationships are managed in the configuration file ([[federation]]); \
         edit it and restart the gateway",
    ))
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
    urls: Vec<Url>,
    profile: ProfileName,
    endpoint_spiffe_id: Option<SpiffeId>,
    follow_redirects: bool,
    status: FetchStatus,
}

fn view(
    state: &AdminState,
    snapshot: &Snapshot,
    relationship: &Relationship,
    now: OffsetDateTime,
) -> RelationshipView {
    let td = &relationship.trust_domain;
    RelationshipView {
        trust_domain: td.clone(),
        urls: relationship.endpoint_urls(),
        profile: relationship.profile,
        endpoint_spiffe_id: relationship.endpoint_spiffe_id.clone(),
        follow_redirects: relationship.follow_redirects,
        status: fetch_status(state, snapshot, td, Some(relationship), now),
    }
}

fn configured(state: &AdminState, td: &TrustDomain) -> Result<Relationship, ApiError> {
    state
        .relationships
        .find(td)
        .ok_or_else(|| ApiError::not_found(format!("no federation relationship with {td}")))
}

fn poller_unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the poller is not running (the gateway is starting or shutting down)",
    )
}
