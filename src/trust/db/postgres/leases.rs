//! Shared polling: which replica polls which trust domain, decided in the database.
//!
//! Owns one lease round ([`PgStore::lease_round`]), run by every replica every third
//! of the lease time, in one transaction on the database's clock: the replica says it
//! is alive (`fedgw_replicas`), gives up leases on domains no longer federated, renews
//! the leases it still holds, and then, against its fair share (the domains divided by
//! the replicas seen within one lease time, rounded up), gives back the ones above it
//! or takes free and expired ones up to it, chosen at random so that replicas starting
//! together spread. A lease taken gets a new fencing token from one sequence, so every
//! new holder's token is higher than any before it; a fetched bundle's write carries
//! it and the store refuses it once it is no longer current (`check_fence`). A domain
//! created through the API can only be leased while its relationship exists, so a
//! replica that has not yet heard of a deletion cannot take it up again. It does not
//! own when rounds run or what pollers do with the answer (`sources::leases`).

use std::collections::BTreeMap;
use std::time::Duration;

use spiffe_federation::TrustDomain;

use super::{Cached as _, PgStore, from_db, pg, to_db};
use crate::trust::db::StoreError;

/// What a replica asks for in a lease round.
#[derive(Debug, Clone)]
pub struct LeaseRound {
    /// This replica's ID (unique per process start).
    pub replica: String,
    /// A name for people: host and process.
    pub name: String,
    /// How long a lease lasts without renewal.
    pub lease: Duration,
    /// The domains of the configuration's relationships (the same on every replica).
    pub configured: Vec<TrustDomain>,
    /// The domains of the relationships created through the API, as this replica
    /// knows them; leased only while they exist in the database.
    pub api: Vec<TrustDomain>,
}

/// What a lease round gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The leases this replica holds now, with their tokens.
    pub held: BTreeMap<TrustDomain, u64>,
    /// Replicas seen within one lease time, this one included.
    pub replicas: u64,
    /// Domains to poll in all.
    pub domains: u64,
    /// This replica's fair share of them.
    pub share: u64,
    /// When the first lease held by another replica runs out unless renewed: a
    /// round then takes it over if that replica is gone.
    pub next_expiry: Option<Duration>,
}

impl PgStore {
    /// Run one lease round. Blocks.
    ///
    /// # Errors
    /// A [`StoreError`]: the database is away or refused; nothing changed then, and
    /// the leases held run out at their expiry.
    pub fn lease_round(&self, round: &LeaseRound) -> Result<LeaseGrant, StoreError> {
        let op = "lease round";
        let failed = |err| pg(op, None)(err);
        let secs = round.lease.as_secs_f64();
        let configured: Vec<&str> = round.configured.iter().map(TrustDomain::as_str).collect();
        let api: Vec<&str> = round.api.iter().map(TrustDomain::as_str).collect();
        self.block(op, async {
            let mut client = self.client(op).await?;
            let tx = client.transaction().await.map_err(failed)?;
            tx.cached_execute(
                "INSERT INTO fedgw_replicas (id, name, seen_at) VALUES ($1, $2, now())
                 ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, seen_at = now()",
                &[&round.replica, &round.name],
            )
            .await
            .map_err(failed)?;
            tx.cached_execute(
                "DELETE FROM fedgw_replicas WHERE seen_at < now() - make_interval(secs => $1::float8 * 4)",
                &[&secs],
            )
            .await
            .map_err(failed)?;
            let replicas = from_db(
                tx.cached_query_one(
                    "SELECT count(*) FROM fedgw_replicas WHERE seen_at > now() - make_interval(secs => $1::float8)",
                    &[&secs],
                )
                .await
                .map_err(failed)?
                .get(0),
            )
            .max(1);
            // The domains to poll: the configuration's, and the API's that exist.
            let wanted: Vec<String> = tx
                .cached_query(
                    "SELECT td FROM unnest($1::text[]) AS c(td)
                     UNION
                     SELECT r.trust_domain FROM fedgw_relationships r WHERE r.trust_domain = ANY($2::text[])",
                    &[&configured, &api],
                )
                .await
                .map_err(failed)?
                .iter()
                .map(|row| row.get(0))
                .collect();
            tx.cached_execute(
                "DELETE FROM fedgw_leases WHERE holder = $1 AND NOT (trust_domain = ANY($2::text[]))",
                &[&round.replica, &wanted],
            )
            .await
            .map_err(failed)?;
            let mut held: BTreeMap<String, i64> = tx
                .cached_query(
                    "UPDATE fedgw_leases SET expires_at = now() + make_interval(secs => $2::float8)
                     WHERE holder = $1 AND expires_at > now() RETURNING trust_domain, token",
                    &[&round.replica, &secs],
                )
                .await
                .map_err(failed)?
                .iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect();
            let domains = u64::try_from(wanted.len()).unwrap_or(u64::MAX);
            let share = domains.div_ceil(replicas);
            let holding = u64::try_from(held.len()).unwrap_or(u64::MAX);
            if holding > share {
                // Above the fair share (another replica joined): give the rest back.
                let extra = usize::try_from(holding - share).unwrap_or(usize::MAX);
                let give_back: Vec<String> = held.keys().rev().take(extra).cloned().collect();
                tx.cached_execute(
                    "DELETE FROM fedgw_leases WHERE holder = $1 AND trust_domain = ANY($2::text[])",
                    &[&round.replica, &give_back],
                )
                .await
                .map_err(failed)?;
                for td in &give_back {
                    held.remove(td);
                }
            } else if holding < share {
                let want = to_db(share - holding, "lease share")?;
                let taken = tx
                    .cached_query(
                        "INSERT INTO fedgw_leases (trust_domain, holder, token, expires_at)
                         SELECT c.td, $1, nextval('fedgw_lease_tokens'), now() + make_interval(secs => $3::float8)
                         FROM (
                             SELECT w.td FROM unnest($2::text[]) AS w(td)
                             LEFT JOIN fedgw_leases l ON l.trust_domain = w.td
                             WHERE l.trust_domain IS NULL OR l.expires_at <= now()
                             ORDER BY random() LIMIT $4
                         ) c
                         ON CONFLICT (trust_domain) DO UPDATE
                             SET holder = EXCLUDED.holder, token = EXCLUDED.token, expires_at = EXCLUDED.expires_at
                             WHERE fedgw_leases.expires_at <= now()
                         RETURNING trust_domain, token",
                        &[&round.replica, &wanted, &secs, &want],
                    )
                    .await
                    .map_err(failed)?;
                for row in &taken {
                    held.insert(row.get(0), row.get(1));
                }
            }
            let next_expiry: Option<f64> = tx
                .cached_query_one(
                    "SELECT extract(epoch FROM min(expires_at) - now())::float8 FROM fedgw_leases
                     WHERE holder <> $1 AND expires_at > now()",
                    &[&round.replica],
                )
                .await
                .map_err(failed)?
                .get(0);
            tx.commit().await.map_err(failed)?;
            let held = held
                .into_iter()
                .filter_map(|(td, token)| Some((TrustDomain::new(&td).ok()?, from_db(token))))
                .collect();
            Ok(LeaseGrant {
                held,
                replicas,
                domains,
                share,
                next_expiry: next_expiry
                    .filter(|secs| secs.is_finite() && *secs >= 0.0)
                    .map(Duration::from_secs_f64),
            })
        })
    }
}
