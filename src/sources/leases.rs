//! Shared polling, as this replica takes part in it: which trust domains it holds the
//! polling lease of now, and the task that runs its lease rounds.
//!
//! Owns the replica's view of its leases ([`Leases`]): a poller asks
//! [`Leases::fence`] before each fetch and polls only with a lease, carrying it into
//! the write so that the store can refuse it once the lease is gone; a poller without
//! one waits on [`Leases::subscribe`] until the held set changes. A lease counts as
//! held only until a little before it would expire by this replica's own clock (the
//! round started before the database stamped it, so the real expiry is later): if
//! rounds fail (the database is away), the replica stops polling before anyone can
//! take its domains over. What a round does in the database is
//! [`PgStore::lease_round`]; with the embedded sled store there are no leases and
//! every poller polls.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use spiffe_federation::TrustDomain;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::supervise::Supervisor;
use crate::telemetry::Metrics;
use crate::trust::db::Fence;
use crate::trust::db::postgres::PgStore;
use crate::trust::db::postgres::leases::LeaseRound;

/// The leases this replica holds; cheap to clone, every clone the same.
#[derive(Debug, Clone)]
pub struct Leases {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    replica: String,
    held: watch::Sender<Held>,
    /// Asks for a round now: a relationship was added.
    nudge: Notify,
}

/// The held set, changed only when its domains or tokens change (renewals move
/// `until` without waking anyone).
#[derive(Debug, Clone, Default)]
struct Held {
    tokens: Arc<BTreeMap<TrustDomain, u64>>,
    /// Held until then by this replica's clock; `None` before the first round.
    until: Option<Instant>,
}

impl Leases {
    /// No leases yet, for a replica with a new ID (random, so that a restarted
    /// process never passes for its predecessor and its leases).
    pub fn new() -> Self {
        let id: u64 = rand::random();
        let (held, _) = watch::channel(Held::default());
        Self {
            inner: Arc::new(Inner {
                replica: format!("{id:016x}"),
                held,
                nudge: Notify::new(),
            }),
        }
    }

    /// This replica's ID.
    pub fn replica(&self) -> &str {
        &self.inner.replica
    }

    /// The lease to poll `trust_domain` with now; `None` when another replica polls
    /// it (or this one's lease may have run out).
    pub fn fence(&self, trust_domain: &TrustDomain) -> Option<Fence> {
        let held = self.inner.held.borrow();
        if held.until.is_none_or(|until| Instant::now() >= until) {
            return None;
        }
        held.tokens.get(trust_domain).map(|token| Fence {
            holder: self.inner.replica.clone(),
            token: *token,
        })
    }

    /// Changes whenever the held set does.
    pub fn subscribe(&self) -> LeaseWatch {
        LeaseWatch(self.inner.held.subscribe())
    }

    /// Run a lease round now rather than at the next renewal: a poller started
    /// (a relationship was created or taken from another replica), so its domain
    /// gets a holder at once.
    pub fn nudge(&self) {
        self.inner.nudge.notify_one();
    }

    /// How many leases are held now.
    pub fn count(&self) -> usize {
        self.inner.held.borrow().tokens.len()
    }

    fn granted(&self, tokens: BTreeMap<TrustDomain, u64>, until: Instant) {
        self.inner.held.send_if_modified(|held| {
            let changed = *held.tokens != tokens;
            if changed {
                held.tokens = Arc::new(tokens);
            }
            held.until = Some(until);
            changed
        });
    }

    fn lapsed(&self, metrics: &Metrics) {
        self.inner.held.send_if_modified(|held| {
            if held.until.is_some_and(|until| Instant::now() >= until) && !held.tokens.is_empty() {
                held.tokens = Arc::default();
                return true;
            }
            false
        });
        #[expect(clippy::cast_precision_loss, reason = "a gauge of a count")]
        let held = self.count() as f64;
        metrics.set(crate::telemetry::families::LEASES_HELD, &[], held);
    }
}

/// Wakes when the held set changes ([`Leases::subscribe`]).
#[derive(Debug)]
pub struct LeaseWatch(watch::Receiver<Held>);

impl LeaseWatch {
    /// Wait for the next change; never returns if the leases go away.
    pub async fn changed(&mut self) {
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Count the current set as seen.
    pub fn mark_seen(&mut self) {
        self.0.borrow_and_update();
    }
}

impl Default for Leases {
    fn default() -> Self {
        Self::new()
    }
}

/// How long after another replica's lease would run out the round that may take it
/// over runs.
const TAKEOVER_SLACK: Duration = Duration::from_millis(100);

/// What a lease round needs from the rest of the gateway: the relationships of the
/// configuration and those created through the API, as this replica knows them.
pub type Wanted = Arc<dyn Fn() -> (Vec<TrustDomain>, Vec<TrustDomain>) + Send + Sync>;

/// Run lease rounds for `leases` against `store` every third of `lease`, under
/// `supervisor`.
pub fn start(
    leases: Leases,
    store: PgStore,
    lease: Duration,
    wanted: Wanted,
    metrics: Metrics,
    supervisor: &Supervisor,
) {
    let cancel = supervisor.shutdown().token();
    supervisor.spawn("lease rounds".to_owned(), cancel, move || {
        rounds(
            leases.clone(),
            store.clone(),
            lease,
            Arc::clone(&wanted),
            metrics.clone(),
        )
    });
}

async fn rounds(leases: Leases, store: PgStore, lease: Duration, wanted: Wanted, metrics: Metrics) {
    let every = lease / 3;
    // Held until a tenth of the lease before the database would let it go.
    let margin = lease / 10;
    let name = format!(
        "{}/{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "fedgw".to_owned()),
        std::process::id()
    );
    loop {
        let started = Instant::now();
        let (configured, api) = wanted();
        let round = LeaseRound {
            replica: leases.replica().to_owned(),
            name: name.clone(),
            lease,
            configured,
            api,
        };
        let store_for_round = store.clone();
        let result = tokio::task::spawn_blocking(move || store_for_round.lease_round(&round)).await;
        // At the next renewal, or as soon as another replica's lease could be taken
        // over (it renews well before then unless it is gone).
        let mut next = started + every;
        match result {
            Ok(Ok(grant)) => {
                let held = grant.held.len();
                if let Some(expiry) = grant.next_expiry {
                    next = next.min(Instant::now() + expiry + TAKEOVER_SLACK);
                }
                leases.granted(grant.held, started + lease.saturating_sub(margin));
                #[expect(clippy::cast_precision_loss, reason = "gauges of counts")]
                let (held, share, replicas) =
                    (held as f64, grant.share as f64, grant.replicas as f64);
                metrics.set(crate::telemetry::families::LEASES_HELD, &[], held);
                metrics.set(crate::telemetry::families::LEASES_SHARE, &[], share);
                metrics.set(crate::telemetry::families::REPLICAS, &[], replicas);
            }
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "lease round failed; polling stops when the leases held run out");
                leases.lapsed(&metrics);
            }
            Err(err) => {
                tracing::warn!(error = %err, "lease round task failed");
                leases.lapsed(&metrics);
            }
        }
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = leases.inner.nudge.notified() => {}
        }
        leases.lapsed(&metrics);
    }
}
