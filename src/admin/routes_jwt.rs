//! `POST /v1/jwt-svid/validate`: is this token a valid JWT-SVID for this audience,
//! under the bundles the gateway holds now?
//!
//! Owns the request and answer shapes and the mapping of refusals to API errors. The
//! rules are the library's ([`spiffe_federation::jwt_svid`]): only the JWT authorities
//! of the bundle of the token's own trust domain are used (DIST-3, JWK-2). The route
//! reads one trust store snapshot and changes nothing, so the `read` scope suffices.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use spiffe_federation::jwt_svid::{self, JwtSvidError};
use spiffe_federation::{SpiffeId, TrustDomain};
use time::OffsetDateTime;

use super::AdminState;
use super::domain_state;
use super::error::ApiError;
use crate::config::Scope;

/// `POST /v1/jwt-svid/validate` with `{"token": …, "audience": …}`.
pub(super) async fn validate(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Result<Json<ValidateBody>, JsonRejection>,
) -> Result<Json<ValidView>, ApiError> {
    state.access.authorize(&headers, Scope::Read)?;
    let Json(body) = body.map_err(|err| ApiError::invalid(err.body_text()))?;
    if body.audience.is_empty() {
        return Err(ApiError::invalid(
            "audience must name the service the token is for (JWT-SVID §3.2)",
        ));
    }
    let snapshot = state.trust_store.snapshot();
    let svid = jwt_svid::validate(
        &body.token,
        &body.audience,
        OffsetDateTime::now_utc(),
        |td| snapshot.get(td).map(|entry| Arc::clone(&entry.bundle)),
    )
    .map_err(|err| refused(&err))?;
    Ok(Json(ValidView {
        spiffe_id: svid.spiffe_id().clone(),
        trust_domain: svid.trust_domain().clone(),
        key_id: svid.key_id().to_owned(),
        algorithm: svid.algorithm().name(),
        expires_at: domain_state::rfc3339(svid.expires_at()),
        claims: svid.claims().clone(),
    }))
}

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ValidateBody {
    token: String,
    audience: String,
}

/// The answer for a valid token.
#[derive(Debug, Serialize)]
pub(super) struct ValidView {
    spiffe_id: SpiffeId,
    trust_domain: TrustDomain,
    key_id: String,
    algorithm: &'static str,
    expires_at: String,
    claims: Map<String, Value>,
}

/// A refused token: 422 with the validator's stable code. The request itself was
/// well formed, so this is not `invalid_argument`.
fn refused(err: &JwtSvidError) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        err.code(),
        err.to_string(),
    )
}
