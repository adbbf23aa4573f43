//! `GET /v1/openapi.json`: the OpenAPI 3.1 document of the admin API.
//!
//! Owns serving the document. The document itself is `docs/openapi.json`, kept by
//! hand next to `docs/admin-api.md` and compiled in, so a gateway serves exactly the
//! description of the routes it was built with. `tests/openapi.rs` pins it to the
//! code, with nothing read from the source text: its operations and their
//! `x-fedgw-scope` are the router's table ([`super::ROUTES`]), a running gateway
//! answers exactly the documented methods and enforces those scopes, each component
//! schema is the type of the same name in [`super::api`] (properties both ways,
//! `required`, enumerations), and every answer of the gateway validates against the
//! documented schema and reads back into its type.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use super::AdminState;
use super::error::ApiError;
use crate::config::Scope;

/// The OpenAPI document, byte for byte `docs/openapi.json`.
pub const DOCUMENT: &str = include_str!("../../docs/openapi.json");

/// `GET /v1/openapi.json` (read scope, like every other `/v1` route).
pub(super) async fn document(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.access.authorize(&headers, Scope::Read)?;
    Ok(([(CONTENT_TYPE, "application/json")], DOCUMENT).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_json_of_this_version() {
        let value: serde_json::Value = serde_json::from_str(DOCUMENT).unwrap();
        assert_eq!(value["openapi"], "3.1.0");
        assert_eq!(value["info"]["version"], env!("CARGO_PKG_VERSION"));
    }
}
