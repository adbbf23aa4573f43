//! The admin HTTP API (axum, JSON under `/v1`): the router, its shared state, and the
//! listener that serves it.
//!
//! Owns which route goes to which handler and what every handler may read
//! ([`AdminState`]). Handlers live one area per file (`routes_*`), access control in
//! [`auth`], errors in [`error`], the unix-socket/TCP listener in [`listen`], and the
//! time-dependent status rules, as pure functions, in `domain_state`. It does not
//! own fetching (the poller answers [`RefreshRequest`]s), storage (the
//! [`TrustStore`]) or the set of relationships (read through [`RelationshipsView`],
//! changed through the [`Registry`]). The routes are documented in
//! `docs/admin-api.md` and described in `docs/openapi.json`, served at
//! `GET /v1/openapi.json` ([`openapi`]); `tests/openapi.rs` checks that the routes
//! registered below and that document agree.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use fedgw::admin::{self, AdminState, RelationshipsView};
//! use fedgw::admin::auth::Access;
//! use fedgw::config::PollingConfig;
//! use fedgw::trust::policy::PolicySettings;
//! use fedgw::telemetry::Metrics;
//! use fedgw::trust::store::TrustStore;
//!
//! let dir = tempfile::tempdir()?;
//! let (refresh, _poller) = tokio::sync::mpsc::channel(8);
//! let (_ready_tx, ready) = tokio::sync::watch::channel(true);
//! let state = AdminState {
//!     trust_store: TrustStore::open(dir.path(), PolicySettings::default()).await?,
//!     metrics: Metrics::new(),
//!     access: Access::LocalSocket,
//!     local: Vec::new(),
//!     relationships: RelationshipsView::new(Vec::new()),
//!     registry: None,
//!     refresh,
//!     ready,
//!     schedule: (&PollingConfig::default()).into(),
//!     max_document_bytes: 1024 * 1024,
//!     watchers: admin::watchers::Watchers::new(
//!         Default::default(),
//!         Metrics::new(),
//!         fedgw::shutdown::Shutdown::new(),
//!     ),
//!     tasks: fedgw::supervise::TaskHealth::new(),
//!     body_limits: Default::default(),
//! };
//! let router: axum::Router = admin::router(state);
//! # drop(router);
//! # Ok(())
//! # }
//! ```

pub mod auth;
mod domain_state;
pub mod error;
mod guard;
pub mod listen;
pub mod openapi;
mod routes_bundles;
mod routes_health;
mod routes_jwt;
mod routes_relationships;
mod routes_status;
mod routes_watch;
pub mod watchers;

use std::path::PathBuf;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler as _;
use axum::routing::{get, post};
use spiffe_federation::TrustDomain;
use tokio::sync::{mpsc, oneshot, watch};

use self::error::ApiError;
use crate::config::{Scope, Seconds};
use crate::registry::Registry;
pub use crate::registry::RelationshipsView;
use crate::sources::schedule::Schedule;
use crate::telemetry::Metrics;
use crate::trust::store::TrustStore;

/// Everything the handlers read. Cloned per request (every field is a cheap handle).
#[derive(Clone)]
pub struct AdminState {
    /// The bundles, their history, fetch statuses and the audit log.
    pub trust_store: TrustStore,
    /// Rendered by `GET /metrics`.
    pub metrics: Metrics,
    /// Who may call: trusted unix-socket callers or bearer tokens over TCP.
    pub access: auth::Access,
    /// The trust domains this gateway speaks for.
    pub local: Vec<LocalDomainInfo>,
    /// The federation relationships (published by the registry).
    pub relationships: RelationshipsView,
    /// Creates, replaces and deletes relationships; `None` where the API runs without
    /// a gateway (those routes then answer 503).
    pub registry: Option<Registry>,
    /// Where `POST …/refresh` asks the poller manager for a fetch now.
    pub refresh: mpsc::Sender<RefreshRequest>,
    /// `true` once the gateway serves; `GET /readyz` reports it.
    pub ready: watch::Receiver<bool>,
    /// The polling bounds, for the `stale` rule of `GET /v1/status`.
    pub schedule: Schedule,
    /// Largest bundle document `PUT /v1/bundles/{td}` accepts (`policy.max_document_bytes`).
    pub max_document_bytes: usize,
    /// The watch API's shared state and bounds.
    pub watchers: watchers::Watchers,
    /// Supervised tasks that have panicked, for `GET /v1/status`.
    pub tasks: crate::supervise::TaskHealth,
    /// Largest other request body and the time to receive a body (`[admin.limits]`).
    pub body_limits: crate::net::BodyLimits,
}

/// A local trust domain as the status routes show it.
#[derive(Debug, Clone)]
pub struct LocalDomainInfo {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// The HTTP path it is served at on the bundle endpoint.
    pub path: String,
    /// The `spiffe_refresh_hint` it is served with.
    pub refresh_hint: Seconds,
    /// The file its bundle comes from (`source = { file = … }`); `None` when it is
    /// pushed through the API (`source = { admin = true }`). A domain with a source
    /// file cannot be replaced, rolled back or deleted through the API: the file is
    /// the only source, and it would not restore an unchanged bundle.
    pub source_file: Option<PathBuf>,
    /// The Workload API its bundle is streamed from (`source = { workload_api_socket
    /// = … }`), with that source's health; such a domain cannot be changed through the
    /// API either.
    pub workload_api: Option<crate::sources::local::workload::WorkloadHealth>,
}

/// "Fetch this trust domain's bundle now", sent by `POST
/// /v1/federation-relationships/{td}/refresh` to the poller manager, which answers on
/// `reply` with the JSON returned to the caller (e.g. `{"outcome": "accepted", …}`) or
/// an [`ApiError`].
#[derive(Debug)]
pub struct RefreshRequest {
    /// The relationship to refresh.
    pub trust_domain: TrustDomain,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<serde_json::Value, ApiError>>,
}

/// The admin API: every route of `docs/admin-api.md` over `state`. Every route but
/// the probes is guarded: the caller is authorized for the route's scope from the
/// request head before any body is read, and bodies are capped ([`guard`]).
pub fn router(state: AdminState) -> Router {
    use Scope::{Read, Write};
    let guards = guard::Guards::new(&state);
    let read = || guards.scope(Read);
    let write = || guards.scope(Write);
    // A bundle body (JSON or PEM) is held to the document limit; the handler turns
    // the extractor's refusal into a JSON 413.
    let document = state.max_document_bytes;
    let document_key = "policy.max_document_bytes";
    let relationship = routes_relationships::body_limit(document);
    let relationship_key = "twice policy.max_document_bytes plus 64 KiB";
    let body_limit = DefaultBodyLimit::max(document);
    let relationship_limit = DefaultBodyLimit::max(relationship);
    Router::new()
        .route("/healthz", get(routes_health::healthz))
        .route("/readyz", get(routes_health::readyz))
        .route("/metrics", get(routes_health::metrics.layer(read())))
        .route("/v1/openapi.json", get(openapi::document.layer(read())))
        .route("/v1/status", get(routes_status::status.layer(read())))
        .route("/v1/bundles", get(routes_watch::bundles.layer(read())))
        .route("/v1/events", get(routes_watch::events.layer(read())))
        .route(
            "/v1/bundles/{td}",
            get(routes_bundles::show.layer(read()))
                .put(routes_bundles::put.layer(guards.with_body(Write, document, document_key)))
                .delete(routes_bundles::delete.layer(write()))
                .layer(body_limit),
        )
        .route(
            "/v1/bundles/{td}/history",
            get(routes_bundles::history.layer(read())),
        )
        .route(
            "/v1/bundles/{td}/rollback",
            post(routes_bundles::rollback.layer(guards.small_body(Write))),
        )
        .route(
            "/v1/federation-relationships",
            get(routes_relationships::list.layer(read()))
                .post(routes_relationships::create.layer(guards.with_body(
                    Write,
                    relationship,
                    relationship_key,
                )))
                .layer(relationship_limit),
        )
        .route(
            "/v1/federation-relationships/{td}",
            get(routes_relationships::show.layer(read()))
                .put(routes_relationships::replace.layer(guards.with_body(
                    Write,
                    relationship,
                    relationship_key,
                )))
                .delete(routes_relationships::delete.layer(write()))
                .layer(relationship_limit),
        )
        .route(
            "/v1/federation-relationships/{td}/refresh",
            post(routes_relationships::refresh.layer(write())),
        )
        .route(
            "/v1/jwt-svid/validate",
            post(routes_jwt::validate.layer(guards.small_body(Read))),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Parse a `{td}` path segment; never normalised (ID-5, L-2: no silent lower-casing).
fn trust_domain(raw: &str) -> Result<TrustDomain, ApiError> {
    raw.parse()
        .map_err(|err| ApiError::invalid(format!("{raw:?} is not a trust domain name: {err}")))
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see docs/admin-api.md")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method; see docs/admin-api.md",
    )
}
