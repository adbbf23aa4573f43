//! One polling task per federation relationship.
//!
//! Owns the task loop: bootstrap (SPF-3/SPF-4), fetch from each mirror in order,
//! submit to the trust store (which applies policy and persists), record the outcome,
//! and wait the time the [`Schedule`] gives, or until an operator asks for a refresh.
//! A failed fetch never touches the stored bundle (FED §6.2). Deleting a relationship
//! cancels its task (POLL-4). It does not own the wire (the library's endpoint client)
//! or acceptance rules (policy).
//!
//! An `https_spiffe` endpoint is authenticated with the *current* stored bundle of
//! its endpoint ID's trust domain, whichever source put it there: the relationship's
//! own fetches (self-serving, SPF-7), another relationship or an operator
//! (non-self-serving, SPF-5, SPF-8). Until that bundle exists no connection is made
//! (SPF-2): the poll ends as `awaiting_bootstrap`, naming the missing trust domain,
//! and the task polls again as soon as the bundle is stored rather than after its
//! backoff.
//!
//! Every attempt is logged once (EXT-8), with the configured URL, the final URL after
//! redirects, the authenticated peer, the fetched sequence and the outcome
//! (`accepted`, `unchanged`, `rejected`, `failed`, `awaiting_bootstrap`); an accepted
//! bundle is also stored with its URL, final URL and peer (`Source::Fetched`), and
//! each poll's result is kept as the relationship's status. Redirects are followed
//! for one fetch only: the next poll starts at the configured URL again (RDR-4).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use spiffe_federation::TrustDomain;
use spiffe_federation::endpoint::EndpointUrl;
use spiffe_federation::endpoint::client::{
    FetchError, FetchRequest, Fetcher, PeerIdentity, ServerAuth,
};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::leases::Leases;
use super::schedule::Schedule;
use crate::relationship::Relationship;
use crate::shutdown::Shutdown;
use crate::supervise::{self, Supervisor};
use crate::telemetry::Metrics;
use crate::trust::db::{Fence, StoreError};
use crate::trust::policy::{DocumentFacts, Source};
use crate::trust::store::{Outcome, SubmitError, TrustStore};

/// What the pollers share.
#[derive(Debug)]
pub struct PollerContext {
    /// Where fetched bundles go.
    pub trust_store: TrustStore,
    /// The endpoint client.
    pub fetcher: Fetcher,
    /// Refresh-hint bounds.
    pub schedule: Schedule,
    /// Metrics.
    pub metrics: Metrics,
    /// Fetch slots across all relationships (`polling.max_concurrent_fetches`).
    pub fetch_slots: Arc<tokio::sync::Semaphore>,
    /// Restarts a poller that panicked, and records the panic.
    pub supervisor: Supervisor,
    /// With a shared store: the polling leases; a poller polls only while this
    /// replica holds its domain's. `None`: every poller polls.
    pub leases: Option<Leases>,
}

/// The result of one poll, as the admin API reports a manual refresh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PollReport {
    /// The relationship.
    pub trust_domain: TrustDomain,
    /// `accepted`, `unchanged`, `rejected`, `failed` or `awaiting_bootstrap`.
    pub outcome: &'static str,
    /// The new revision when accepted.
    pub revision: Option<u64>,
    /// The URL that answered, after redirects.
    pub final_url: Option<String>,
    /// The authenticated peer.
    pub peer: Option<String>,
    /// The fetched bundle's sequence.
    pub sequence: Option<u64>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// A stable name for the failure (`connect`, `tls`, `sequence_regression`, …).
    pub error_code: Option<&'static str>,
    /// When the next poll is planned, RFC 3339.
    pub next_attempt: Option<String>,
}

struct Handle {
    cancel: CancellationToken,
    refresh: mpsc::Sender<oneshot::Sender<PollReport>>,
    task: tokio::task::JoinHandle<()>,
}

/// The set of running pollers; cheap to clone.
#[derive(Clone)]
pub struct Pollers {
    ctx: Arc<PollerContext>,
    tasks: Arc<Mutex<BTreeMap<TrustDomain, Handle>>>,
    shutdown: Shutdown,
}

impl std::fmt::Debug for Pollers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pollers").finish_non_exhaustive()
    }
}

impl Pollers {
    /// No pollers yet.
    pub fn new(ctx: PollerContext, shutdown: Shutdown) -> Self {
        Self {
            ctx: Arc::new(ctx),
            tasks: Arc::default(),
            shutdown,
        }
    }

    /// Start polling `relationship` (replacing a running poller of the same domain).
    pub fn start(&self, relationship: Relationship) {
        let cancel = self.shutdown.token().child_token();
        let (refresh, requests) = mpsc::channel(4);
        let td = relationship.trust_domain.clone();
        let ctx = Arc::clone(&self.ctx);
        let stop = cancel.clone();
        // Cancelling ends the task at its next await, an in-flight fetch included
        // (POLL-4: nothing is fetched after a stop). A trust store write it already
        // began still completes: the write holds the store's writer lock, so a
        // removal that follows the stop comes after it.
        let task = self
            .shutdown
            .spawn(supervised(ctx, relationship, stop, requests));
        let previous = self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                td,
                Handle {
                    cancel,
                    refresh,
                    task,
                },
            );
        if let Some(previous) = previous {
            previous.cancel.cancel();
        }
        if let Some(leases) = &self.ctx.leases {
            leases.nudge();
        }
    }

    /// Stop polling `trust_domain` and wait until its task has ended, so nothing it
    /// does comes after the caller's next step; returns whether a poller was running.
    pub async fn stop(&self, trust_domain: &TrustDomain) -> bool {
        let handle = self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(trust_domain);
        let Some(handle) = handle else {
            return false;
        };
        handle.cancel.cancel();
        // A task that panicked has ended too; there is nothing else to wait for.
        let _ended = handle.task.await;
        true
    }

    /// Poll `trust_domain` now and wait for the result; `None` if it has no poller.
    pub async fn refresh(&self, trust_domain: &TrustDomain) -> Option<PollReport> {
        let sender = self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(trust_domain)
            .map(|h| h.refresh.clone())?;
        let (reply, answer) = oneshot::channel();
        sender.send(reply).await.ok()?;
        answer.await.ok()
    }
}

/// Run a relationship's poller until `stop`; a panic (a bug) is caught, recorded as
/// the relationship's last error (`poller_panicked`) and in the task registry, and the
/// poller starts again after a backoff.
async fn supervised(
    ctx: Arc<PollerContext>,
    relationship: Relationship,
    stop: CancellationToken,
    mut requests: mpsc::Receiver<oneshot::Sender<PollReport>>,
) {
    let name = format!("poller {}", relationship.trust_domain);
    let mut restarts = 0_u32;
    loop {
        let outcome = tokio::select! {
            () = stop.cancelled() => return,
            outcome = supervise::catch(run(&ctx, &relationship, &stop, &mut requests)) => outcome,
        };
        let Err(message) = outcome else {
            return;
        };
        restarts = restarts.saturating_add(1);
        let wait = supervise::backoff(restarts);
        ctx.supervisor.record(&name, &message, wait);
        let now = OffsetDateTime::now_utc();
        let next = after(now, wait);
        let report = PollReport {
            trust_domain: relationship.trust_domain.clone(),
            outcome: "failed",
            revision: None,
            final_url: None,
            peer: None,
            sequence: None,
            error: Some(format!(
                "the poller panicked (a bug: please report it): {}; it restarts in {}s",
                crate::telemetry::log_guard::Clip::new(&message),
                wait.as_secs()
            )),
            error_code: Some(POLLER_PANICKED),
            next_attempt: rfc3339(next),
        };
        record(&ctx, &relationship, &report, false, now, next).await;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        ctx.supervisor.health().restarted(&name);
    }
}

/// The error code of a poll that ended in a panic.
pub const POLLER_PANICKED: &str = "poller_panicked";

/// `now + wait`, or the latest representable time if that overflows (a refresh hint
/// or backoff far in the future must never end the poller).
fn after(now: OffsetDateTime, wait: std::time::Duration) -> OffsetDateTime {
    time::Duration::try_from(wait)
        .ok()
        .and_then(|wait| now.checked_add(wait))
        .unwrap_or(time::PrimitiveDateTime::MAX.assume_utc())
}

async fn run(
    ctx: &PollerContext,
    relationship: &Relationship,
    cancel: &CancellationToken,
    requests: &mut mpsc::Receiver<oneshot::Sender<PollReport>>,
) {
    let mut failures = 0_u32;
    let mut reply: Option<oneshot::Sender<PollReport>> = None;
    let mut held = ctx.leases.as_ref().map(Leases::subscribe);
    loop {
        // Shared polling: without this domain's lease, wait until this replica gets
        // it (another replica polls it meanwhile). An operator's refresh polls once
        // anyway, unfenced: the store still judges it against the shared current.
        let fence = match (&ctx.leases, held.as_mut()) {
            (Some(leases), Some(watch)) => {
                watch.mark_seen();
                let fence = leases.fence(&relationship.trust_domain);
                if fence.is_none() && reply.is_none() {
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = watch.changed() => {}
                        request = requests.recv() => match request {
                            Some(request) => reply = Some(request),
                            None => return,
                        },
                    }
                    continue;
                }
                fence
            }
            _ => None,
        };
        let now = OffsetDateTime::now_utc();
        let mut report = poll_once(ctx, relationship, now, fence).await;
        let hint = ctx
            .trust_store
            .snapshot()
            .get(&relationship.trust_domain)
            .and_then(|entry| entry.bundle.refresh_hint());
        let succeeded = matches!(report.outcome, "accepted" | "unchanged");
        let jitter: f64 = rand::random();
        let wait = if succeeded {
            failures = 0;
            ctx.schedule.after_success(hint, jitter)
        } else {
            failures = failures.saturating_add(1);
            ctx.schedule.after_failure(failures, hint, jitter)
        };
        let next = after(now, wait);
        report.next_attempt = rfc3339(next);
        record(ctx, relationship, &report, succeeded, now, next).await;
        let awaiting = (report.outcome == AWAITING_BOOTSTRAP)
            .then(|| relationship.endpoint_trust_domain())
            .flatten();
        if let Some(reply) = reply.take() {
            // The caller may have given up waiting; the poll still counted.
            let _ignored = reply.send(report);
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            () = bundle_stored(&ctx.trust_store, awaiting) => {}
            request = requests.recv() => match request {
                Some(request) => reply = Some(request),
                None => return,
            },
        }
    }
}

const AWAITING_BOOTSTRAP: &str = "awaiting_bootstrap";

/// The error code of a fetch whose write was refused because this replica's lease
/// on the domain ran out or moved meanwhile.
pub const LEASE_LOST: &str = "lease_lost";

/// Resolves once a bundle of `trust_domain` is stored; never when `None` (or when the
/// trust store goes away).
async fn bundle_stored(trust_store: &TrustStore, trust_domain: Option<&TrustDomain>) {
    let Some(td) = trust_domain else {
        return std::future::pending().await;
    };
    let mut changes = trust_store.subscribe();
    while trust_store.snapshot().get(td).is_none() {
        if changes.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Test seam: the next this-many polls panic, standing in for a bug (no input can
/// make a poll panic on purpose).
#[cfg(test)]
static PANICS_TO_INJECT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// One poll: bootstrap if needed, then each URL in order until one succeeds.
async fn poll_once(
    ctx: &PollerContext,
    rel: &Relationship,
    now: OffsetDateTime,
    fence: Option<Fence>,
) -> PollReport {
    #[cfg(test)]
    if PANICS_TO_INJECT
        .fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |n| n.checked_sub(1),
        )
        .is_ok()
    {
        panic!("injected by a test");
    }
    let td = &rel.trust_domain;
    let mut report = PollReport {
        trust_domain: td.clone(),
        outcome: "failed",
        revision: None,
        final_url: None,
        peer: None,
        sequence: None,
        error: None,
        error_code: None,
        next_attempt: None,
    };
    bootstrap(ctx, rel, now).await;
    let snapshot = ctx.trust_store.snapshot();
    let profile = rel.fetch_profile();
    let auth = match ServerAuth::for_profile(&profile, |endpoint_td| {
        snapshot.get(endpoint_td).map(|entry| entry.bundle.as_ref())
    }) {
        Ok(auth) => auth,
        Err(err @ FetchError::NoEndpointBundle { .. }) => {
            // SPF-2, SPF-5: never fetch over an unauthenticated connection.
            report.outcome = AWAITING_BOOTSTRAP;
            report.error = Some(err.to_string());
            report.error_code = Some(AWAITING_BOOTSTRAP);
            log_attempt(&report, None);
            return report;
        }
        Err(err) => {
            report.error = Some(err.to_string());
            log_attempt(&report, None);
            return report;
        }
    };
    for url in &rel.urls {
        let request = FetchRequest {
            trust_domain: td,
            url,
            auth,
            limits: &rel.limits,
            proxy: &rel.proxy,
        };
        // Each attempt starts from the report's empty fetch fields: a mirror's
        // failure must not show the previous mirror's final URL or peer.
        report.final_url = None;
        report.peer = None;
        report.sequence = None;
        // The semaphore is never closed; if it were, fetch without a slot rather
        // than not at all.
        let slot = Arc::clone(&ctx.fetch_slots).acquire_owned().await.ok();
        let result = ctx.fetcher.fetch(&request).await;
        drop(slot);
        let fetched = match result {
            Ok(fetched) => fetched,
            Err(err) => {
                report.outcome = "failed";
                report.error = Some(err.to_string());
                report.error_code = Some(err.code());
                log_attempt(&report, Some(url));
                continue;
            }
        };
        let peer = match &fetched.peer {
            PeerIdentity::Spiffe(id) => id.to_string(),
            PeerIdentity::Web(host) => host.to_string(),
            other => format!("{other:?}"),
        };
        let sequence = fetched.parsed.bundle.sequence();
        // One line per document, however many elements were left out: counts by
        // reason, with the first of each.
        let document = DocumentFacts {
            elements: fetched.parsed.ignored_summary(),
            allow_revocation: rel.allow_revocation,
        };
        if document.elements.ignored > 0 {
            tracing::warn!(trust_domain = %td, url = %url.as_url(), ignored = %document.elements, "bundle elements ignored");
        }
        let source = Source::Fetched {
            url: url.as_url().clone(),
            final_url: fetched.final_url.clone(),
            peer: peer.clone(),
        };
        report.final_url = Some(fetched.final_url.to_string());
        report.peer = Some(peer.clone());
        report.sequence = sequence;
        match ctx
            .trust_store
            .submit_fetched(
                td,
                fetched.parsed.bundle,
                document,
                source,
                now,
                fence.clone(),
            )
            .await
        {
            Ok(outcome) => {
                let (name, revision) = match outcome {
                    Outcome::Accepted { revision, .. } => ("accepted", Some(revision)),
                    Outcome::Unchanged => ("unchanged", None),
                };
                report.outcome = name;
                report.revision = revision;
                report.error = None;
                report.error_code = None;
                log_attempt(&report, Some(url));
                return report;
            }
            Err(SubmitError::Rejected(err)) => {
                // A stale mirror (STO-2) or another policy refusal: try the next URL.
                report.outcome = "rejected";
                report.error = Some(err.to_string());
                report.error_code = Some(err.code());
                log_attempt(&report, Some(url));
            }
            Err(SubmitError::Store(err @ StoreError::Fenced { .. })) => {
                // The lease ran out or moved while fetching: the new holder polls.
                report.outcome = "failed";
                report.error = Some(err.to_string());
                report.error_code = Some(LEASE_LOST);
                log_attempt(&report, Some(url));
                return report;
            }
            Err(err) => {
                // Fetched but not made durable: logged once, as this attempt's outcome.
                report.outcome = "failed";
                report.error = Some(format!("storing the fetched bundle failed: {err}"));
                report.error_code = Some("store");
                log_attempt(&report, Some(url));
                return report;
            }
        }
    }
    report
}

/// EXT-8: one line per attempt, with the configured URL (`None` when no connection
/// was made), the final URL, the peer, the sequence and the outcome; the message says
/// what happened, so that each outcome can be found in the log by its words.
fn log_attempt(report: &PollReport, url: Option<&EndpointUrl>) {
    let td = &report.trust_domain;
    let url = url.map(|u| u.as_url().as_str());
    let (final_url, peer, sequence, outcome) = (
        report.final_url.as_deref(),
        report.peer.as_deref(),
        report.sequence,
        report.outcome,
    );
    let error = report.error.as_deref().unwrap_or_default();
    match outcome {
        "accepted" | "unchanged" => tracing::info!(
            trust_domain = %td, url, final_url, peer, sequence, outcome, "bundle fetched"
        ),
        "rejected" => tracing::warn!(
            trust_domain = %td, url, final_url, peer, sequence, outcome, error,
            "fetched bundle rejected"
        ),
        AWAITING_BOOTSTRAP => tracing::warn!(
            trust_domain = %td, outcome, error, "bundle fetch not attempted"
        ),
        _ => tracing::warn!(
            trust_domain = %td, url, final_url, peer, sequence, outcome, error,
            "bundle fetch failed"
        ),
    }
}

/// SPF-3/SPF-4: while no bundle of the endpoint's trust domain is stored, the
/// configured bootstrap bundle fills the slot; afterwards it is never used again
/// (policy refuses a bootstrap over a stored bundle).
async fn bootstrap(ctx: &PollerContext, rel: &Relationship, now: OffsetDateTime) {
    let (Some(bundle), Some(endpoint_td)) = (rel.bootstrap_bundle(), rel.endpoint_trust_domain())
    else {
        return;
    };
    if ctx.trust_store.snapshot().get(endpoint_td).is_some() {
        return;
    }
    let source = Source::Bootstrap {
        who: format!("configuration (relationship {})", rel.trust_domain),
    };
    if let Err(err) = ctx
        .trust_store
        .submit(endpoint_td, bundle.clone(), source, now)
        .await
    {
        tracing::warn!(trust_domain = %endpoint_td, error = %err, "bootstrap bundle not stored");
    }
}

async fn record(
    ctx: &PollerContext,
    rel: &Relationship,
    report: &PollReport,
    succeeded: bool,
    now: OffsetDateTime,
    next: OffsetDateTime,
) {
    let td = &rel.trust_domain;
    let td_label = td.as_str();
    ctx.metrics.inc(
        crate::telemetry::families::FETCHES,
        &[("trust_domain", td_label), ("outcome", report.outcome)],
        1.0,
    );
    if let Some(sequence) = report.sequence {
        #[expect(
            clippy::cast_precision_loss,
            reason = "a metric value; precision loss above 2^53 is acceptable"
        )]
        let value = sequence as f64;
        ctx.metrics.set(
            crate::telemetry::families::FETCHED_SEQUENCE,
            &[("trust_domain", td_label)],
            value,
        );
    }
    let result = if succeeded {
        #[expect(
            clippy::cast_precision_loss,
            reason = "Unix seconds fit an f64 exactly"
        )]
        let seconds = now.unix_timestamp() as f64;
        ctx.metrics.set(
            crate::telemetry::families::LAST_SUCCESS_TIMESTAMP,
            &[("trust_domain", td_label)],
            seconds,
        );
        ctx.trust_store
            .record_fetch_success(td, now, Some(next))
            .await
    } else {
        let message = report
            .error
            .clone()
            .unwrap_or_else(|| report.outcome.to_owned());
        let code = report.error_code.unwrap_or(report.outcome).to_owned();
        ctx.trust_store
            .record_fetch_failure(td, now, code, message, Some(next))
            .await
    };
    if let Err(err) = result {
        tracing::error!(trust_domain = %td, error = %err, "recording fetch status failed");
    }
}

fn rfc3339(at: OffsetDateTime) -> Option<String> {
    at.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::supervise::TaskHealth;
    use crate::trust::policy::PolicySettings;

    /// A poller that panics is recorded (status `poller_panicked`, the task registry,
    /// the panic counter) and runs again after its backoff: its next poll records an
    /// ordinary outcome and a manual refresh is answered.
    #[tokio::test]
    async fn a_panicking_poller_is_reported_and_restarted() {
        let dir = tempfile::tempdir().unwrap();
        let trust_store = TrustStore::open(dir.path(), PolicySettings::default())
            .await
            .unwrap();
        let metrics = Metrics::new();
        let shutdown = Shutdown::new();
        let supervisor = Supervisor::new(shutdown.clone(), TaskHealth::new(), metrics.clone());
        let entry: crate::config::FederationEntry = toml::from_str(
            "trust_domain = \"b.test\"\nurl = \"https://127.0.0.1:1/\"\nprofile = \"https_web\"\n",
        )
        .unwrap();
        let relationship = Relationship::from_entry(
            &entry,
            crate::relationship::Limits {
                max_document_bytes: 1 << 20,
                fetch_timeout: Duration::from_secs(2),
            },
        )
        .unwrap();
        let pollers = Pollers::new(
            PollerContext {
                trust_store: trust_store.clone(),
                fetcher: Fetcher::new(),
                schedule: crate::sources::schedule::Schedule::from(
                    &crate::config::PollingConfig::default(),
                ),
                metrics: metrics.clone(),
                fetch_slots: Arc::new(tokio::sync::Semaphore::new(4)),
                supervisor: supervisor.clone(),
                leases: None,
            },
            shutdown.clone(),
        );
        let td: TrustDomain = "b.test".parse().unwrap();
        PANICS_TO_INJECT.store(1, std::sync::atomic::Ordering::SeqCst);
        pollers.start(relationship);

        let code = |store: &TrustStore| {
            store
                .statuses()
                .get(&td)
                .and_then(|status| status.last_error.as_ref())
                .and_then(|error| error.code.clone())
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while code(&trust_store).as_deref() != Some(POLLER_PANICKED) {
            assert!(tokio::time::Instant::now() < deadline, "panic not recorded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let records = supervisor.health().records();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].task, "poller b.test");
        assert_eq!(records[0].message, "injected by a test");
        assert_eq!(
            metrics.value(
                crate::telemetry::families::TASK_PANICS,
                &[("task", "poller")]
            ),
            Some(1.0)
        );
        // Restarted after the 1 s backoff: the next poll fails to connect, as it should.
        while code(&trust_store).as_deref() == Some(POLLER_PANICKED) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "poller not restarted"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(code(&trust_store).as_deref(), Some("connect"));
        assert_eq!(supervisor.health().records()[0].restarts_at, None);
        let report = pollers
            .refresh(&td)
            .await
            .expect("the restarted poller answers");
        assert_eq!(report.outcome, "failed");
        assert!(pollers.stop(&td).await);
    }

    #[test]
    fn a_wait_beyond_the_calendar_saturates() {
        let now = OffsetDateTime::now_utc();
        let far = after(now, std::time::Duration::from_secs(u64::MAX));
        assert_eq!(far, time::PrimitiveDateTime::MAX.assume_utc());
        assert_eq!(
            after(now, std::time::Duration::from_secs(5)),
            now + time::Duration::seconds(5)
        );
    }
}
