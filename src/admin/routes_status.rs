//! `GET /v1/status`: every local and foreign trust domain with its state, bundle age,
//! soonest certificate expiry, fetch health and warnings.
//!
//! Owns building the status answer ([`Status`]) and a domain's fetch health (also
//! the `status` member of a relationship); the shapes are the API contract's
//! ([`super::api`]). The state rules themselves are pure functions in
//! `domain_state`; the clock is read once per request, here.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use spiffe_federation::TrustDomain;
use time::OffsetDateTime;

use super::AdminState;
use super::api::{
    DomainState, FetchStatus, LastError, Role, Status, StatusDomain, StoreBackend, StoreCondition,
    StoreState, TaskRecord, WaitingListener, Warning,
};
use super::domain_state::{self, ForeignFacts};
use super::error::ApiError;
use crate::config::{ProfileName, Scope, Seconds};
use crate::relationship::Relationship;
use crate::trust::db::RelationshipStatus;
use crate::trust::store::{Entry, Snapshot};

/// `GET /v1/status`.
pub(super) async fn status(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> Result<Json<Status>, ApiError> {
    state.access.authorize(&headers, Scope::Read)?;
    let now = OffsetDateTime::now_utc();
    Ok(Json(status_view(&state, now)))
}

/// The warnings shown for a domain: a stored bundle with no authorities (`revoked`),
/// the stored bundle's own (ID-16, SEC-7) and, for a local domain, the lint on its
/// served refresh hint (SEC-6).
pub(super) fn warnings(entry: Option<&Entry>, served_hint: Option<Seconds>) -> Vec<Warning> {
    let hint = served_hint
        .and_then(crate::config::served_hint_warning)
        .map(|message| Warning {
            code: "served_refresh_hint_too_long".to_owned(),
            message: format!("refresh_hint {message}"),
        });
    let revoked = entry.filter(|e| e.bundle.is_empty()).map(|e| Warning {
        code: "revoked".to_owned(),
        message: format!(
            "the stored bundle has no authorities ({}): no SVID of the trust domain is trusted",
            e.source
        ),
    });
    let stored = entry
        .into_iter()
        .flat_map(|e| &e.warnings)
        .map(|w| Warning {
            code: w.code().to_owned(),
            message: w.to_string(),
        });
    revoked.into_iter().chain(hint).chain(stored).collect()
}

fn status_view(state: &AdminState, now: OffsetDateTime) -> Status {
    let snapshot = state.trust_store.snapshot();
    let relationships = state.relationships.load();
    let locals: BTreeSet<&TrustDomain> = state.local.iter().map(|l| &l.trust_domain).collect();
    let mut domains: Vec<StatusDomain> = state
        .local
        .iter()
        .map(|local| {
            let has_bundle = snapshot.get(&local.trust_domain).is_some();
            let fetch = match &local.workload_api {
                Some(health) => from_workload_api(has_bundle, &health.load()),
                None => idle(domain_state::local_state(has_bundle)),
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
    Status {
        revision: snapshot.revision,
        domains,
        tasks: state.tasks.records().into_iter().map(task).collect(),
        waiting_listeners: state
            .tasks
            .waiting_listeners()
            .into_iter()
            .map(waiting)
            .collect(),
        store: store_state(&state.trust_store),
    }
}

fn store_state(trust_store: &crate::trust::store::TrustStore) -> StoreState {
    let backend = if trust_store.store().postgres().is_some() {
        StoreBackend::Postgres
    } else {
        StoreBackend::Sled
    };
    match trust_store.store_away() {
        None => StoreState {
            backend,
            state: StoreCondition::Ok,
            since: None,
            reason: None,
        },
        Some(away) => StoreState {
            backend,
            state: StoreCondition::Away,
            since: away
                .since
                .format(&time::format_description::well_known::Rfc3339)
                .ok(),
            reason: Some(away.reason),
        },
    }
}

fn task(record: crate::supervise::TaskRecord) -> TaskRecord {
    TaskRecord {
        task: record.task,
        code: record.code.to_owned(),
        panics: record.panics,
        message: record.message,
        at: record.at,
        restarts_at: record.restarts_at,
    }
}

fn waiting(listener: crate::supervise::WaitingListener) -> WaitingListener {
    WaitingListener {
        listener: listener.listener,
        listen: listener.listen,
        code: listener.code.to_owned(),
        reason: listener.reason,
        since: listener.since,
    }
}

fn domain_view(
    snapshot: &Snapshot,
    td: &TrustDomain,
    role: Role,
    fetch: FetchStatus,
    now: OffsetDateTime,
) -> StatusDomain {
    let entry = snapshot.get(td);
    StatusDomain {
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

/// The fetch status of a domain nothing fetches (local domains).
fn idle(state: DomainState) -> FetchStatus {
    FetchStatus {
        state,
        last_success: None,
        last_error: None,
        next_attempt: None,
        consecutive_failures: 0,
    }
}

/// A local domain streamed from a Workload API: `failing` while the agent cannot be
/// reached (the stored bundle keeps serving), with the socket and the cause.
fn from_workload_api(
    has_bundle: bool,
    health: &crate::sources::local::workload::Health,
) -> FetchStatus {
    let state = if health.consecutive_failures > 0 {
        DomainState::Failing
    } else {
        domain_state::local_state(has_bundle)
    };
    FetchStatus {
        state,
        last_success: health.last_success.map(domain_state::rfc3339),
        last_error: health.last_error.as_ref().map(|e| LastError {
            at: domain_state::rfc3339(e.at),
            code: Some(e.code.to_owned()),
            message: e.message.clone(),
        }),
        next_attempt: health.next_attempt.map(domain_state::rfc3339),
        consecutive_failures: health.consecutive_failures,
    }
}

fn from_record(state: DomainState, status: &RelationshipStatus) -> FetchStatus {
    FetchStatus {
        state,
        last_success: status.last_success.map(domain_state::unix_rfc3339),
        last_error: status.last_error.as_ref().map(|e| LastError {
            at: domain_state::unix_rfc3339(e.at),
            code: e.code.clone(),
            message: e.message.clone(),
        }),
        next_attempt: status.next_attempt.map(domain_state::unix_rfc3339),
        consecutive_failures: status.consecutive_failures,
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
    from_record(domain_state::foreign_state(&facts, now), &status)
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
