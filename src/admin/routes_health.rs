//! Probe and metrics routes: `GET /healthz`, `GET /readyz` (no authentication: they
//! reveal nothing but liveness) and `GET /metrics` (read scope).
//!
//! Owns only these three answers; what is measured belongs to the subsystems that
//! record into [`Metrics`](crate::telemetry::Metrics).

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AdminState;
use super::api::{HEALTHZ, NOT_READY, READY, READY_DEGRADED};
use super::error::ApiError;
use crate::config::Scope;

/// The Prometheus text exposition content type.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /healthz`: the process answers.
pub(super) async fn healthz() -> &'static str {
    HEALTHZ
}

/// `GET /readyz`: 200 once the gateway serves (saying `degraded` while its shared
/// store cannot be reached: it still serves), 503 before (and during shutdown).
pub(super) async fn readyz(State(state): State<AdminState>) -> Response {
    if *state.ready.borrow() {
        let body = if state.trust_store.store_away().is_some() {
            READY_DEGRADED
        } else {
            READY
        };
        (StatusCode::OK, body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, NOT_READY).into_response()
    }
}

/// `GET /metrics`: every series in the Prometheus text format 0.0.4.
pub(super) async fn metrics(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.access.authorize(&headers, Scope::Read)?;
    Ok(([(CONTENT_TYPE, PROMETHEUS_TEXT)], state.metrics.render()).into_response())
}
