//! The one writer: a `coordination.k8s.io/v1` Lease elects the replica that writes
//! to the Kubernetes API (ClusterTrustBundles, ConfigMaps, status); the others keep
//! fetching and serving, and wait.
//!
//! Owns the election, as Kubernetes' own controllers run it: the holder renews
//! every third of the lease's duration, replacing the object at the resourceVersion
//! it read (the API server refuses the write of anyone who raced it). A candidate
//! takes the lease over once its record has not changed for a whole duration by the
//! candidate's own clock (never comparing clocks across machines), or at once when
//! it is free. A holder that cannot renew stops writing two thirds of a duration
//! after its last renewal began, before anyone can take over; one that stops
//! gracefully gives the lease up, so the next takes over within one retry.
//!
//! It does not own what the writer does ([`super::writer`]).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::telemetry::{Metrics, families};

/// The longest a stopping replica spends giving the lease up.
const RELEASE_WITHIN: Duration = Duration::from_secs(3);

/// One replica's part in the election.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) api: Api<Lease>,
    pub(crate) name: String,
    pub(crate) identity: String,
    pub(crate) duration: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) metrics: Metrics,
}

/// What this replica last saw of the lease, to time the holder's silence.
#[derive(Debug)]
struct Observed {
    resource_version: Option<String>,
    since: Instant,
}

/// What one round found.
enum Round {
    /// This replica holds it (renewed or taken).
    Held,
    /// Another holds it; try again after the wait.
    Other { wait: Duration },
}

impl Settings {
    /// Run rounds until `cancel`, publishing whether this replica writes on
    /// `leader`; gives the lease up on the way out if it holds it.
    async fn elect(&self, leader: watch::Sender<bool>, cancel: CancellationToken) {
        let renew_every = self.duration / 3;
        let retry_every = (self.duration / 6).max(Duration::from_millis(250));
        // Valid until then without a successful renewal.
        let mut held_until: Option<Instant> = None;
        let mut observed: Option<Observed> = None;
        // Failing rounds are logged at warn level once a minute.
        let mut warned: Option<Instant> = None;
        loop {
            let started = Instant::now();
            let result = self.round(&mut observed).await;
            if result.is_ok() && warned.take().is_some() {
                tracing::info!(lease = %self.name, "Kubernetes lease rounds succeed again");
            }
            let wait = match result {
                Ok(Round::Held) => {
                    held_until = Some(started + self.duration * 2 / 3);
                    renew_every
                }
                Ok(Round::Other { wait }) => {
                    held_until = None;
                    wait.min(retry_every).max(Duration::from_millis(50))
                }
                Err(err) => {
                    if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                        tracing::warn!(lease = %self.name, error = %err, "Kubernetes lease round failed; retrying (repeats are logged at debug level for a minute)");
                        warned = Some(Instant::now());
                    } else {
                        tracing::debug!(lease = %self.name, error = %err, "Kubernetes lease round failed");
                    }
                    retry_every
                }
            };
            let holds = held_until.is_some_and(|until| Instant::now() < until);
            self.announce(&leader, holds);
            // A holder whose renewals fail wakes when its hold would lapse.
            let wake = match held_until {
                Some(until) if holds => (started + wait).min(until),
                _ => started + wait,
            };
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep_until(wake) => {}
            }
        }
        if *leader.borrow() {
            self.announce(&leader, false);
            let released = tokio::time::timeout(RELEASE_WITHIN, self.release()).await;
            if let Some(err) = match released {
                Ok(Ok(())) => None,
                Ok(Err(err)) => Some(err.to_string()),
                Err(_) => Some(format!("no answer within {} s", RELEASE_WITHIN.as_secs())),
            } {
                tracing::warn!(lease = %self.name, error = %err, "could not give the Kubernetes lease up; the next replica takes it over when it expires");
            }
        }
    }

    fn announce(&self, leader: &watch::Sender<bool>, holds: bool) {
        let changed = leader.send_if_modified(|current| {
            let changed = *current != holds;
            *current = holds;
            changed
        });
        if changed {
            if holds {
                tracing::info!(lease = %self.name, identity = %self.identity, "this replica now writes to the Kubernetes API");
            } else {
                tracing::info!(lease = %self.name, identity = %self.identity, "this replica no longer writes to the Kubernetes API");
            }
        }
        self.metrics.set(
            families::KUBERNETES_LEADER,
            &[],
            if holds { 1.0 } else { 0.0 },
        );
    }

    async fn round(&self, observed: &mut Option<Observed>) -> Result<Round, kube::Error> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let current = self.within(self.api.get_opt(&self.name)).await?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now.clone(), now, 0)),
            };
            return match self
                .within(self.api.create(&PostParams::default(), &lease))
                .await
            {
                Ok(_) => Ok(Round::Held),
                Err(err) if conflict(&err) => Ok(Round::Other {
                    wait: Duration::ZERO,
                }),
                Err(err) => Err(err),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let resource_version = lease.metadata.resource_version.clone();
        let mine = holder.as_deref() == Some(self.identity.as_str());
        if !mine {
            let seen = observed.get_or_insert_with(|| Observed {
                resource_version: resource_version.clone(),
                since: Instant::now(),
            });
            if seen.resource_version != resource_version {
                *seen = Observed {
                    resource_version: resource_version.clone(),
                    since: Instant::now(),
                };
            }
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(self.duration, Duration::from_secs);
            let expires = seen.since + duration;
            if holder.is_some() && Instant::now() < expires {
                return Ok(Round::Other {
                    wait: expires.saturating_duration_since(Instant::now()),
                });
            }
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        lease.spec = Some(if mine {
            self.spec(
                spec.acquire_time.unwrap_or_else(|| now.clone()),
                now,
                transitions,
            )
        } else {
            tracing::info!(lease = %self.name, previous = holder.as_deref().unwrap_or("(none)"), "taking the Kubernetes lease over");
            self.spec(now.clone(), now, transitions.saturating_add(1))
        });
        match self
            .within(self.api.replace(&self.name, &PostParams::default(), &lease))
            .await
        {
            Ok(_) => {
                *observed = None;
                Ok(Round::Held)
            }
            // Someone else wrote it first: read it again next round.
            Err(err) if conflict(&err) => Ok(Round::Other {
                wait: Duration::ZERO,
            }),
            Err(err) => Err(err),
        }
    }

    fn spec(&self, acquired: MicroTime, renewed: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: i32::try_from(self.duration.as_secs()).ok(),
            acquire_time: Some(acquired),
            renew_time: Some(renewed),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Give the lease up (holder cleared), if it is still ours.
    async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.within(self.api.get_opt(&self.name)).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        self.within(self.api.replace(&self.name, &PostParams::default(), &lease))
            .await?;
        tracing::info!(lease = %self.name, "gave the Kubernetes lease up");
        Ok(())
    }

    async fn within<T>(
        &self,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, kube::Error> {
        super::within(self.request_timeout, call).await
    }
}

/// Take part in the election until `cancel`; see [`Settings`].
pub(crate) async fn run(
    settings: std::sync::Arc<Settings>,
    leader: watch::Sender<bool>,
    cancel: CancellationToken,
) {
    settings.elect(leader, cancel).await;
}

/// 409: another writer got there first.
fn conflict(err: &kube::Error) -> bool {
    super::status_code(err) == Some(409)
}
