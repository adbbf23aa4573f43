//! `POST /v1/jwt-svid/validate`: is this token a valid JWT-SVID for this audience,
//! under the bundles the gateway holds now?
//!
//! Owns building the answer ([`JwtSvid`]) and the mapping of refusals to API errors. The
//! rules are the library's ([`spiffe_federation::jwt_svid`]): only the JWT authorities
//! of the bundle of the token's own trust domain are used (DIST-3, JWK-2). The route
//! reads one trust store snapshot and changes nothing, so the `read` scope suffices.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use spiffe_federation::jwt_svid::{self, JwtSvidError};
use time::OffsetDateTime;

use super::AdminState;
use super::api::{ErrorCode, JwtSvid, JwtValidateRequest};
use super::domain_state;
use super::error::ApiError;
use crate::config::Scope;

/// `POST /v1/jwt-svid/validate` with `{"token": …, "audience": …}`.
pub(super) async fn validate(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Result<Json<JwtValidateRequest>, JsonRejection>,
) -> Result<Json<JwtSvid>, ApiError> {
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
    Ok(Json(JwtSvid {
        spiffe_id: svid.spiffe_id().clone(),
        trust_domain: svid.trust_domain().clone(),
        key_id: svid.key_id().to_owned(),
        algorithm: svid.algorithm().name().to_owned(),
        expires_at: domain_state::rfc3339(svid.expires_at()),
        claims: svid.claims().clone(),
    }))
}

/// A refused token: 422 with the validator's stable code. The request itself was
/// well formed, so this is not `invalid_argument`. A code the API does not list (a
/// validator newer than this table) is an internal error, logged.
fn refused(err: &JwtSvidError) -> ApiError {
    match ErrorCode::from_code(err.code()) {
        Some(code) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, err.to_string()),
        None => ApiError::internal(&format!(
            "JWT-SVID refusal code {:?} is not an admin API error code: {err}",
            err.code()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_the_validators_code() {
        let td: spiffe_federation::TrustDomain = "b.example".parse().unwrap();
        let refusals = [
            JwtSvidError::MissingKeyId,
            JwtSvidError::MissingExpiration,
            JwtSvidError::MissingAudience,
            JwtSvidError::BadSignature {
                trust_domain: td.clone(),
                kid: "k".to_owned(),
            },
            JwtSvidError::UnknownKeyId {
                trust_domain: td,
                kid: "k".to_owned(),
            },
            JwtSvidError::AudienceMismatch {
                expected: "a".to_owned(),
                found: Vec::new(),
            },
        ];
        for refusal in refusals {
            let err = refused(&refusal);
            assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(err.code.as_str(), refusal.code());
        }
    }
}
