//! The admin HTTP API (axum, JSON under `/v1`): the router, its shared state, and the
//! listener that serves it.
//!
//! Owns which route goes to which handler, with which scope and body cap (the
//! [`ROUTES`] table the router is built from), and what every handler may read
//! ([`AdminState`]). The request and answer bodies and the error codes are the
//! contract in [`api`], which client code uses too. Handlers live one area per file
//! (`routes_*`), access control in [`auth`], errors in [`error`], the
//! unix-socket/TCP listener in [`listen`], and the time-dependent status rules, as
//! pure functions, in `domain_state`. It does not own fetching (a refresh asks the
//! [`Pollers`]), storage (the [`TrustStore`]) or the set of relationships
//! (read through [`RelationshipsView`], changed through the [`Registry`]). The routes
//! are documented in `docs/admin-api.md` and described in `docs/openapi.json`, served
//! at `GET /v1/openapi.json` ([`openapi`]); `tests/openapi.rs` checks that document
//! against [`ROUTES`], the types of [`api`] and a running gateway.
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
//! let (_ready_tx, ready) = tokio::sync::watch::channel(true);
//! let state = AdminState {
//!     trust_store: TrustStore::open(dir.path(), PolicySettings::default()).await?,
//!     metrics: Metrics::new(),
//!     access: Access::LocalSocket,
//!     local: Vec::new(),
//!     relationships: RelationshipsView::new(Vec::new()),
//!     registry: None,
//!     pollers: None,
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

pub mod api;
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
use axum::routing::{MethodFilter, MethodRouter, on};
use spiffe_federation::TrustDomain;
use tokio::sync::watch;

use self::api::ErrorCode;
use self::error::ApiError;
use crate::config::{Scope, Seconds};
use crate::registry::Registry;
pub use crate::registry::RelationshipsView;
use crate::sources::pollers::Pollers;
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
    /// The running pollers, which `POST …/refresh` asks for a fetch now; `None`
    /// where the API runs without them (the route then answers 503).
    pub pollers: Option<Pollers>,
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

/// An HTTP method a route answers (HEAD is answered wherever GET is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// `GET`.
    Get,
    /// `PUT`.
    Put,
    /// `POST`.
    Post,
    /// `DELETE`.
    Delete,
}

impl Verb {
    /// The method's name, e.g. `GET`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Put => "PUT",
            Self::Post => "POST",
            Self::Delete => "DELETE",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Self::Get => MethodFilter::GET,
            Self::Put => MethodFilter::PUT,
            Self::Post => MethodFilter::POST,
            Self::Delete => MethodFilter::DELETE,
        }
    }
}

/// The body a route reads, which sets the cap its guard enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyCap {
    /// None: a body sent anyway is never read.
    Unread,
    /// `admin.limits.max_request_bytes`.
    Small,
    /// A bundle document (JSON or PEM): `policy.max_document_bytes`; the handler
    /// turns the extractor's refusal into a JSON 413.
    Document,
    /// A relationship body, with room for inline material
    /// ([`routes_relationships::body_limit`]).
    Relationship,
}

/// Which handler answers a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handler {
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
    Status,
    BundleList,
    Events,
    BundleShow,
    BundlePut,
    BundleDelete,
    BundleHistory,
    BundleRollback,
    RelationshipList,
    RelationshipCreate,
    RelationshipShow,
    RelationshipReplace,
    RelationshipDelete,
    RelationshipRefresh,
    JwtValidate,
}

/// One route of the admin API: the router is built from [`ROUTES`], and
/// `docs/openapi.json` describes exactly these (`tests/openapi.rs`).
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// The method.
    pub verb: Verb,
    /// The path, with `{td}` for a trust domain name.
    pub path: &'static str,
    /// The scope a caller needs, checked by the route's guard before any body is
    /// read; `None` for the probes, which answer anyone.
    pub scope: Option<Scope>,
    body: BodyCap,
    handler: Handler,
}

const fn route(
    verb: Verb,
    path: &'static str,
    scope: Option<Scope>,
    body: BodyCap,
    handler: Handler,
) -> Route {
    Route {
        verb,
        path,
        scope,
        body,
        handler,
    }
}

/// Every route of the admin API (`docs/admin-api.md`), in the order of the document.
pub const ROUTES: &[Route] = {
    use BodyCap::{Document, Relationship, Small, Unread};
    use Scope::{Read, Write};
    use Verb::{Delete, Get, Post, Put};
    const TD: &str = "/v1/bundles/{td}";
    const RELATIONSHIPS: &str = "/v1/federation-relationships";
    const RELATIONSHIP: &str = "/v1/federation-relationships/{td}";
    &[
        route(Get, "/healthz", None, Unread, Handler::Healthz),
        route(Get, "/readyz", None, Unread, Handler::Readyz),
        route(Get, "/metrics", Some(Read), Unread, Handler::Metrics),
        route(
            Get,
            "/v1/openapi.json",
            Some(Read),
            Unread,
            Handler::OpenApi,
        ),
        route(Get, "/v1/status", Some(Read), Unread, Handler::Status),
        route(Get, "/v1/bundles", Some(Read), Unread, Handler::BundleList),
        route(Get, "/v1/events", Some(Read), Unread, Handler::Events),
        route(Get, TD, Some(Read), Unread, Handler::BundleShow),
        route(Put, TD, Some(Write), Document, Handler::BundlePut),
        route(Delete, TD, Some(Write), Unread, Handler::BundleDelete),
        route(
            Get,
            "/v1/bundles/{td}/history",
            Some(Read),
            Unread,
            Handler::BundleHistory,
        ),
        route(
            Post,
            "/v1/bundles/{td}/rollback",
            Some(Write),
            Small,
            Handler::BundleRollback,
        ),
        route(
            Get,
            RELATIONSHIPS,
            Some(Read),
            Unread,
            Handler::RelationshipList,
        ),
        route(
            Post,
            RELATIONSHIPS,
            Some(Write),
            Relationship,
            Handler::RelationshipCreate,
        ),
        route(
            Get,
            RELATIONSHIP,
            Some(Read),
            Unread,
            Handler::RelationshipShow,
        ),
        route(
            Put,
            RELATIONSHIP,
            Some(Write),
            Relationship,
            Handler::RelationshipReplace,
        ),
        route(
            Delete,
            RELATIONSHIP,
            Some(Write),
            Unread,
            Handler::RelationshipDelete,
        ),
        route(
            Post,
            "/v1/federation-relationships/{td}/refresh",
            Some(Write),
            Unread,
            Handler::RelationshipRefresh,
        ),
        route(
            Post,
            "/v1/jwt-svid/validate",
            Some(Read),
            Small,
            Handler::JwtValidate,
        ),
    ]
};

/// The admin API: every route of [`ROUTES`] over `state`. Every route but the probes
/// is guarded: the caller is authorized for the route's scope from the request head
/// before any body is read, and bodies are capped ([`guard`]).
pub fn router(state: AdminState) -> Router {
    let guards = guard::Guards::new(&state);
    let document = state.max_document_bytes;
    let relationship = routes_relationships::body_limit(document);
    let mut router = Router::new();
    for route in ROUTES {
        let mut endpoint = handler(route.handler, route.verb.filter());
        let cap = match route.body {
            BodyCap::Unread | BodyCap::Small => None,
            BodyCap::Document => Some((document, "policy.max_document_bytes")),
            BodyCap::Relationship => {
                Some((relationship, "twice policy.max_document_bytes plus 64 KiB"))
            }
        };
        if let Some((limit, _)) = cap {
            endpoint = endpoint.layer(DefaultBodyLimit::max(limit));
        }
        if let Some(scope) = route.scope {
            let guard = match (route.body, cap) {
                (BodyCap::Small, _) => guards.small_body(scope),
                (_, Some((limit, key))) => guards.with_body(scope, limit, key),
                (_, None) => guards.scope(scope),
            };
            endpoint = endpoint.route_layer(guard);
        }
        // Routes of one path merge into one method router.
        router = router.route(route.path, endpoint);
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// The handler of `handler`, for the methods of `filter`.
fn handler(handler: Handler, filter: MethodFilter) -> MethodRouter<AdminState> {
    match handler {
        Handler::Healthz => on(filter, routes_health::healthz),
        Handler::Readyz => on(filter, routes_health::readyz),
        Handler::Metrics => on(filter, routes_health::metrics),
        Handler::OpenApi => on(filter, openapi::document),
        Handler::Status => on(filter, routes_status::status),
        Handler::BundleList => on(filter, routes_watch::bundles),
        Handler::Events => on(filter, routes_watch::events),
        Handler::BundleShow => on(filter, routes_bundles::show),
        Handler::BundlePut => on(filter, routes_bundles::put),
        Handler::BundleDelete => on(filter, routes_bundles::delete),
        Handler::BundleHistory => on(filter, routes_bundles::history),
        Handler::BundleRollback => on(filter, routes_bundles::rollback),
        Handler::RelationshipList => on(filter, routes_relationships::list),
        Handler::RelationshipCreate => on(filter, routes_relationships::create),
        Handler::RelationshipShow => on(filter, routes_relationships::show),
        Handler::RelationshipReplace => on(filter, routes_relationships::replace),
        Handler::RelationshipDelete => on(filter, routes_relationships::delete),
        Handler::RelationshipRefresh => on(filter, routes_relationships::refresh),
        Handler::JwtValidate => on(filter, routes_jwt::validate),
    }
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
        ErrorCode::MethodNotAllowed,
        "this route does not accept that method; see docs/admin-api.md",
    )
}
