//! `GET /v1/status`: every local and foreign trust domain with its state, bundle age,
//! soonest certificate expiry, fetch health and warnings.
//!
//! Owns the status JSON shapes (also used by the relationship routes for their
//! `status` member). The state rules themselves are pure functions in
//! `domain_state`; the clock is read once per request, here.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Serialize;
use spiffe_federation::TrustDomain;
use time::OffsetDateTime;

use super::AdminState;
use super::domain_state::{self, DomainState, ForeignFacts};
use super::error::ApiError;
use crate::config::{ProfileName, Relationship, Scope, Seconds};
use crate::trust::db::RelationshipStatus;
use crate::trust::store::{Entry, Snapshot};

/// `GET /v1/status`.
pub(super) async fn status(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> Result<Json<StatusView>, ApiError> {
    state.access.authorize(&headers, Scope::Read)?;
    let now = OffsetDateTime::now_utc();
    Ok(Json(status_view(&state, now)))
}

/// The body of `GET /v1/status`.
#[derive(Debug, Serialize)]
pub(super) struct StatusView {
    revision: u64,
    domains: Vec<DomainView>,
    /// Supervised tasks (pollers, sinks, followers) that have panicked since start,
    /// each with code `task_panicked`; empty on a healthy gateway.
    tasks: Vec<crate::supervise::TaskRecord>,
    /// Configured listeners not serving yet, each with code `listener_waiting` and
    /// what it waits for; empty once every listener serves.
    waiting_listeners: Vec<crate::supervise::WaitingListener>,
}

#[derive(Debug, Serialize)]
struct DomainView {
    trust_domain: TrustDomain,
    role: Role,
    sequence: Option<u64>,
    accepted_at: Option<String>,
    age_seconds: Option<i64>,
    soonest_expiry: Option<String>,
    #[serde(flatten)]
    fetch: FetchStatus,
    warnings: Vec<WarningView>,
}

/// A warning about a trust domain's stored bundle or its configuration, with a stable
/// code (documented in docs/admin-api.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct WarningView {
    code: &'static str,
    message: String,
}

/// The warnings shown for a domain: a stored bundle with no authorities (`revoked`),
/// the stored bundle's own (ID-16, SEC-7) and, for a local domain, the lint on its
/// served refresh hint (SEC-6).
pub(super) fn warnings(entry: Option<&Entry>, served_hint: Option<Seconds>) -> Vec<WarningView> {
    let hint = served_hint
        .and_then(crate::config::served_hint_warning)
        .map(|message| WarningView {
            code: "served_refresh_hint_too_long",
            message: format!("refresh_hint {message}"),
        });
    let revoked = entry.filter(|e| e.bundle.is_empty()).map(|e| WarningView {
        code: "revoked",
        message: format!(
            "the stored bundle has no authorities ({}): no SVID of the trust domain is trusted",
            e.source
        ),
    });
    let stored = entry
        .into_iter()
        .flat_map(|e| &e.warnings)
        .map(|w| WarningView {
            code: w.code(),
            message: w.to_string(),
        });
    revoked.into_iter().chain(hint).chain(stored).collect()
}

/// Whether the gateway speaks for a domain or fetches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Role {
    /// Served by this gateway.
    Local,
    /// Fetched (or pushed by an operator).
    Foreign,
}

/// A domain's state and fetch health; the `status` member of a relationship.
#[derive(Debug, Clone, Serialize)]
pub(super) struct FetchStatus {
    state: DomainState,
    last_success: Option<String>,
    last_error: Option<LastErrorView>,
    next_attempt: Option<String>,
    consecutive_failures: u32,
}

#[derive(Debug, Clone, Serialize)]
struct LastErrorView {
    at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    message: String,
}

fn status_view(state: &AdminState, now: OffsetDateTime) -> StatusView {
    let snapshot = state.trust_store.snapshot();
    let relationships = state.relationships.load();
    let locals: BTreeSet<&TrustDomain> = state.local.iter().map(|l| &l.trust_domain).collect();
    let mut domains: Vec<DomainView> = state
        .local
        .iter()
        .map(|local| {
            let has_bundle = snapshot.get(&local.trust_domain).is_some();
            let fetch = match &local.workload_api {
                Some(health) => FetchStatus::from_workload_api(has_bundle, &health.load()),
                None => FetchStatus::idle(domain_state::local_state(has_bundle)),
            };
            let mut view = domain_view(&snapshot, &local.trust_domain, Role::Local, fetch, now);
            view.warnings = warnings(snapshot.get(&local.trust_domain), Some(local.refresh_hint));
            view
        })
        .collect();
    let foreign: BTreeSet<&TrustDomain> = relationships
        .iter()
        .map(|r| &r.trust_domain)
        .chain(snapshot.domains.keys())
        .filter(|td| !locals.contains(td))
        .collect();
    for td in foreign {
        let relationship = relationships.iter().find(|r| &r.trust_domain == td);
        let fetch = fetch_status(state, &snapshot, td, relationship, now);
        domains.push(domain_view(&snapshot, td, Role::Foreign, fetch, now));
    }
    StatusView {
        revision: snapshot.revision,
        domains,
        tasks: state.tasks.records(),
        waiting_listeners: state.tasks.waiting_listeners(),
    }
}

fn domain_view(
    snapshot: &Snapshot,
    td: &TrustDomain,
    role: Role,
    fetch: FetchStatus,
    now: OffsetDateTime,
) -> DomainView {
    let entry = snapshot.get(td);
    DomainView {
        trust_domain: td.clone(),
        role,
        sequence: entry.and_then(|e| e.sequence),
        accepted_at: entry.map(|e| domain_state::rfc3339(e.accepted_at)),
        age_seconds: entry.map(|e| domain_state::age_seconds(e.accepted_at, now)),
        soonest_expiry: entry
            .and_then(|e| domain_state::soonest_expiry(&e.bundle))
            .map(domain_state::rfc3339),
        fetch,
        warnings: warnings(entry, None),
    }
}

impl FetchStatus {
    /// A domain nothing fetches (local domains).
    fn idle(state: DomainState) -> Self {
        Self {
            state,
            last_success: None,
            last_error: None,
            next_attempt: None,
            consecutive_failures: 0,
        }
    }
    /// A local domain streamed from a Workload API: `failing` while the agent cannot
    /// be reached (the stored bundle keeps serving), with the socket and the cause.
    fn from_workload_api(
        has_bundle: bool,
        health: &crate::sources::local::workload::Health,
    ) -> Self {
        let state = if health.consecutive_failures > 0 {
            DomainState::Failing
        } else {
            domain_state::local_state(has_bundle)
        };
        Self {
            state,
            last_success: health.last_success.map(domain_state::rfc3339),
            last_error: health.last_error.as_ref().map(|e| LastErrorView {
                at: domain_state::rfc3339(e.at),
                code: Some(e.code.to_owned()),
                message: e.message.clone(),
            }),
            next_attempt: health.next_attempt.map(domain_state::rfc3339),
            consecutive_failures: health.consecutive_failures,
        }
    }
    fn from_record(state: DomainState, status: &RelationshipStatus) -> Self {
        Self {
            state,
            last_success: status.last_success.map(domain_state::unix_rfc3339),
            last_error: status.last_error.as_ref().map(|e| LastErrorView {
                at: domain_state::unix_rfc3339(e.at),
                code: e.code.clone(),
                message: e.message.clone(),
            }),
            next_attempt: status.next_attempt.map(domain_state::unix_rfc3339),
            consecutive_failures: status.consecutive_failures,
        }
    }
}

/// The fetch status of foreign domain `td` at `now`; `relationship` is the one that
/// polls it, if any.
pub(super) fn fetch_status(
    state: &AdminState,
    snapshot: &Snapshot,
    td: &TrustDomain,
    relationship: Option<&Relationship>,
    now: OffsetDateTime,
) -> FetchStatus {
    let statuses = state.trust_store.statuses();
    let status = statuses.get(td).cloned().unwrap_or_default();
    let entry = snapshot.get(td);
    let last_success = status
        .last_success
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok());
    let facts = ForeignFacts {
        managed: relationship.is_some(),
        awaiting_bootstrap: relationship.is_some_and(|r| awaiting_bootstrap(r, snapshot)),
        has_bundle: entry.is_some(),
        revoked: entry.is_some_and(|e| e.bundle.is_empty()),
        consecutive_failures: status.consecutive_failures,
        fresh_at: domain_state::latest(last_success, entry.map(|e| e.accepted_at)),
        refresh_interval: domain_state::refresh_interval(
            &state.schedule,
            entry.map(|e| e.bundle.as_ref()),
        ),
    };
    FetchStatus::from_record(domain_state::foreign_state(&facts, now), &status)
}

/// `https_spiffe` needs the bundle of the endpoint SPIFFE ID's trust domain to
/// authenticate the endpoint (SPF-3); until it is stored the relationship waits.
fn awaiting_bootstrap(relationship: &Relationship, snapshot: &Snapshot) -> bool {
    relationship.profile == ProfileName::HttpsSpiffe
        && relationship
            .endpoint_spiffe_id
            .as_ref()
            .is_some_and(|id| snapshot.get(id.trust_domain()).is_none())
}
