//! Admin API errors: a stable machine code (one of [`ErrorCode`], so a handler cannot
//! answer a code the API contract does not list), an HTTP status and a message.
//!
//! Client faults (4xx) carry the reason. Internal faults (500) carry a generic message;
//! the cause is logged once, here, when the response is built.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::api::{ApiErrorBody, ErrorCode, ErrorResponse};

/// An error answered by the admin API as `{"error": {"code": …, "message": …}}`
/// ([`ErrorResponse`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code, e.g. `not_found`, `invalid_argument`, `sequence_regression`.
    pub code: ErrorCode,
    /// What happened, for people.
    pub message: String,
}

impl ApiError {
    /// 400 `invalid_argument`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidArgument, message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }

    /// 409 with a code that says which conflict.
    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 401 `unauthenticated`.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthenticated,
            message,
        )
    }

    /// 403 `permission_denied`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::PermissionDenied, message)
    }

    /// A store error: 503 `store_unavailable`, naming the failure, when the shared
    /// store cannot be reached (nothing was changed); otherwise 500 `internal`.
    pub fn store(err: &crate::trust::db::StoreError) -> Self {
        if err.is_unreachable() {
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::StoreUnavailable,
                format!("the shared store cannot be reached, nothing was changed: {err}"),
            );
        }
        Self::internal(err)
    }

    /// 500 `internal`: the cause is logged, not returned.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(%cause, "admin API internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal error; see the gateway log",
        )
    }

    /// Any status and code.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorResponse {
            error: ApiErrorBody {
                code: self.code.as_str().to_owned(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn body_carries_code_and_message() {
        let response = ApiError::not_found("no bundle for b.example").into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let bytes = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["error"]["code"], "not_found");
        assert_eq!(value["error"]["message"], "no bundle for b.example");
    }

    #[tokio::test]
    async fn internal_errors_do_not_leak_their_cause() {
        let response = ApiError::internal(&"sled: corrupted page 7").into_response();
        let bytes = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("sled"));
    }
}
