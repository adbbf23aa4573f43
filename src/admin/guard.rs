//! Authorization before the body: every authenticated route is wrapped in a guard
//! that checks the caller's credentials and the route's scope from the request head
//! alone, and only then reads the body, capped and under a deadline.
//!
//! Owns the order "authorize, then read": an unauthenticated or unauthorized request
//! gets its 401 or 403 without a byte of its body being read, and over HTTP/1 the
//! answer says `Connection: close`, so the connection is not kept for a body nobody
//! will read. A route that takes no body never reads one. On a route that does, the
//! body of an authorized request is read as a stream into one buffer of at most the
//! route's limit: a declared or actual size above it answers 413, a
//! body not received within `admin.limits.body_timeout` answers 408 (both close an
//! HTTP/1 connection). Handlers then extract from the buffered body as before, and
//! still call [`Access::authorize`](super::auth::Access::authorize) themselves to
//! learn the principal (the guard is a first lock, not the only one). It does not own
//! the access rules ([`super::auth`]).

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{CONNECTION, CONTENT_LENGTH};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Version};
use axum::middleware::{FromFnLayer, Next, from_fn_with_state};
use axum::response::{IntoResponse as _, Response};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};

use super::AdminState;
use super::api::ErrorCode;
use super::error::ApiError;
use crate::config::Scope;

/// What one route requires: a scope, and a body of at most `limit` bytes (`None`:
/// the route takes no body, which is then never read).
#[derive(Clone)]
pub(super) struct Guard {
    state: AdminState,
    scope: Scope,
    limit: Option<usize>,
    /// The setting the limit comes from, named in a 413.
    limit_key: &'static str,
    timeout: Duration,
}

/// The middleware layer of one route.
pub(super) type GuardLayer = FromFnLayer<GuardFn, Guard, (State<Guard>, Request)>;

/// The guard as a plain function (so that its layer has a nameable type).
pub(super) type GuardFn = fn(State<Guard>, Request, Next) -> GuardFuture;

/// The future the guard runs.
pub(super) type GuardFuture = std::pin::Pin<Box<dyn Future<Output = Response> + Send>>;

/// Builds the guards of one router.
pub(super) struct Guards {
    state: AdminState,
}

impl Guards {
    pub(super) fn new(state: &AdminState) -> Self {
        Self {
            state: state.clone(),
        }
    }

    /// A route with `scope` that takes no body: a body sent anyway is never read
    /// (over HTTP/1 the connection then closes after the answer).
    pub(super) fn scope(&self, scope: Scope) -> GuardLayer {
        self.layer(scope, None, "")
    }

    /// A route with `scope` whose body is at most `admin.limits.max_request_bytes`.
    pub(super) fn small_body(&self, scope: Scope) -> GuardLayer {
        let limit = self.state.body_limits.max_request_bytes;
        self.layer(scope, Some(limit), "admin.limits.max_request_bytes")
    }

    /// A route with `scope` whose body is at most `limit` bytes, set by `limit_key`.
    pub(super) fn with_body(
        &self,
        scope: Scope,
        limit: usize,
        limit_key: &'static str,
    ) -> GuardLayer {
        self.layer(scope, Some(limit), limit_key)
    }

    fn layer(&self, scope: Scope, limit: Option<usize>, limit_key: &'static str) -> GuardLayer {
        let guard = Guard {
            state: self.state.clone(),
            scope,
            limit,
            limit_key,
            timeout: self.state.body_limits.body_timeout,
        };
        from_fn_with_state(guard, run as GuardFn)
    }
}

fn run(State(guard): State<Guard>, request: Request, next: Next) -> GuardFuture {
    Box::pin(check(guard, request, next))
}

async fn check(guard: Guard, request: Request, next: Next) -> Response {
    let version = request.version();
    if let Err(err) = guard.state.access.authorize(request.headers(), guard.scope) {
        return closing(err, version);
    }
    let Some(limit) = guard.limit else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    if declared_length(&parts.headers)
        .is_some_and(|length| length > u64::try_from(limit).unwrap_or(u64::MAX))
    {
        return closing(too_large(&guard, limit), version);
    }
    let reading = Limited::new(body, limit).collect();
    let bytes = match tokio::time::timeout(guard.timeout, reading).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(err)) if err.downcast_ref::<LengthLimitError>().is_some() => {
            return closing(too_large(&guard, limit), version);
        }
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "admin API: request body unreadable");
            return closing(
                ApiError::invalid("the request body could not be read"),
                version,
            );
        }
        Err(_elapsed) => {
            let timeout = guard.timeout.as_secs();
            let err = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                ErrorCode::RequestTimeout,
                format!(
                    "the request body did not arrive within admin.limits.body_timeout ({timeout}s)"
                ),
            );
            return closing(err, version);
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn too_large(guard: &Guard, limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
        format!(
            "the request body exceeds {} ({limit} bytes)",
            guard.limit_key
        ),
    )
}

/// `err` as a response that ends an HTTP/1 connection: its body, if any, is not
/// read, so the connection cannot be reused for another request.
fn closing(err: ApiError, version: Version) -> Response {
    let mut response = err.into_response();
    if matches!(version, Version::HTTP_10 | Version::HTTP_11) {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
