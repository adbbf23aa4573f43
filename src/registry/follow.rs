//! Following the other replicas of a shared store: the trust store's snapshot and
//! the API relationships track what any replica commits.
//!
//! Owns when to catch up: at once on each announcement (PostgreSQL `LISTEN`), after
//! every (re)connection of the listening connection (what was committed while it was
//! down is unknown), and every [`CATCH_UP_EVERY`] in any case, so a lost announcement
//! costs at most that long. Catching up reads by revision from where the snapshot is,
//! so it never moves backwards and never skips a change. Fetch statuses, written by
//! whichever replica polls a domain, are read again every [`STATUSES_EVERY`]; the
//! last-known-good copy in the data directory is written on the timer when the served
//! revision moved ([`TrustStore::save_last_known_good`]). It does
//! not own what a change does ([`TrustStore::catch_up`], [`Registry::sync`]).

use std::sync::Arc;
use std::time::Duration;

use crate::supervise::{Supervisor, backoff};
use crate::trust::db::postgres::{PgStore, Signals};
use crate::trust::store::TrustStore;

use super::Registry;

/// The longest a replica goes without reading the others' changes.
pub const CATCH_UP_EVERY: Duration = Duration::from_secs(5);
/// How often fetch statuses are read again.
pub const STATUSES_EVERY: Duration = Duration::from_secs(5);

/// Start following `store` under `supervisor` (three tasks: the listening
/// connection, catching up with the bundles, and syncing the relationships; the last
/// two on their own, so that neither waits for the other's round trips).
pub fn start(store: PgStore, trust_store: TrustStore, registry: Registry, supervisor: &Supervisor) {
    let signals = Arc::new(Signals::default());
    let cancel = supervisor.shutdown().token();
    {
        let signals = Arc::clone(&signals);
        supervisor.spawn("store listener".to_owned(), cancel.clone(), move || {
            listen(store.clone(), Arc::clone(&signals))
        });
    }
    {
        let signals = Arc::clone(&signals);
        supervisor.spawn(
            "relationship follower".to_owned(),
            cancel.clone(),
            move || follow_relationships(registry.clone(), Arc::clone(&signals)),
        );
    }
    supervisor.spawn("store follower".to_owned(), cancel, move || {
        follow_bundles(trust_store.clone(), Arc::clone(&signals))
    });
}

/// Keep a listening connection open, reconnecting with backoff.
async fn listen(store: PgStore, signals: Arc<Signals>) {
    let mut failures = 0_u32;
    loop {
        let started = tokio::time::Instant::now();
        match store.listen(&signals).await {
            Ok(()) => {
                tracing::warn!("the shared store's listening connection closed; reconnecting")
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for the other replicas' changes; retrying")
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            failures = 0;
        }
        failures = failures.saturating_add(1);
        tokio::time::sleep(backoff(failures).min(Duration::from_secs(5))).await;
    }
}

/// Sync the API relationships on each announcement and on a timer.
async fn follow_relationships(registry: Registry, signals: Arc<Signals>) {
    let mut tick = tokio::time::interval(CATCH_UP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = signals.relationships.notified() => {}
            _ = tick.tick() => {}
        }
        if let Err(err) = registry.sync().await {
            tracing::warn!(error = %err, "cannot read the relationships other replicas changed");
        }
    }
}

/// Catch up with the bundles on each announcement and on a timer; read the fetch
/// statuses and write the last-known-good copy on timers of their own.
async fn follow_bundles(trust_store: TrustStore, signals: Arc<Signals>) {
    let mut tick = tokio::time::interval(CATCH_UP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut statuses = tokio::time::interval(STATUSES_EVERY);
    statuses.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (announced, timer, reload) = tokio::select! {
            () = signals.bundles.notified() => (true, false, false),
            _ = tick.tick() => (false, true, false),
            _ = statuses.tick() => (false, false, true),
        };
        if (announced || timer)
            && let Err(err) = trust_store.catch_up().await
        {
            tracing::warn!(error = %err, "cannot read the bundles other replicas changed; serving the last snapshot");
        }
        // On the timer only: the copy is for restarts while the database is away, and
        // need not follow every change.
        if timer && let Err(err) = trust_store.save_last_known_good().await {
            tracing::warn!(error = %err, "cannot write the last-known-good copy; the previous one stays");
        }
        if reload && let Err(err) = trust_store.reload_statuses().await {
            tracing::warn!(error = %err, "cannot read the fetch statuses");
        }
    }
}
