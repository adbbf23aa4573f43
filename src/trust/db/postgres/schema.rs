//! The PostgreSQL schema: versioned migrations applied when a replica opens the store.
//!
//! Owns the tables and the rule that a database is only ever moved forward, by one
//! replica at a time: the migrations run in one transaction holding a transaction-level
//! advisory lock, so replicas starting together wait for the first and then find the
//! schema current. A database whose version is newer than [`CURRENT`] is refused and
//! left untouched, so an older fedgw never misreads what a newer one wrote.
//!
//! Version 1, the tables (every record is the serde_json encoding the sled store also
//! uses, in a `bytea` column, so both stores hold the same bytes):
//!
//! | table | key | holds |
//! |-------|-----|-------|
//! | `fedgw_meta` | the one row `id = 1` | `revision` (global), `audit_seq`, and the audit log's `audit_entries` and `audit_bytes` |
//! | `fedgw_bundles` | `trust_domain` | the current [`BundleRecord`](crate::trust::db::BundleRecord) at `revision`; `record` NULL: removed at `revision` |
//! | `fedgw_history` | `trust_domain`, `revision` | past versions, trimmed as `[storage]` says |
//! | `fedgw_status` | `trust_domain` | [`RelationshipStatus`](crate::trust::db::RelationshipStatus) |
//! | `fedgw_audit` | `seq` | [`AuditRecord`](crate::trust::db::AuditRecord) |
//! | `fedgw_local_sequences` | `trust_domain` | the next `spiffe_sequence` counter of a local domain |
//! | `fedgw_relationships` | `trust_domain` | [`RelationshipRecord`](crate::trust::db::RelationshipRecord) |
//!
//! Version 2 adds shared polling: `fedgw_replicas` (`id`, `name`, `seen_at`: each
//! replica's last lease round) and `fedgw_leases` (`trust_domain`, `holder`, `token`
//! from the sequence `fedgw_lease_tokens`, `expires_at`: who polls which domain until
//! when; see `leases.rs`).
//!
//! Every change of a bundle locks the `fedgw_meta` row first, so revisions commit in
//! the order they are given out: a replica that has read every bundle up to revision
//! R and then reads `revision > R` misses nothing.

use deadpool_postgres::Transaction;

use super::Cached as _;

use crate::trust::db::StoreError;

/// The newest schema this build reads and writes.
pub const CURRENT: u64 = 2;

/// Key of the advisory lock migrations hold (`fedgw` in ASCII).
const MIGRATION_LOCK: i64 = 0x0066_6564_6777;

/// The migrations, in order: entry `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1
    r#"CREATE TABLE fedgw_meta (
        id smallint PRIMARY KEY CHECK (id = 1),
        revision bigint NOT NULL,
        audit_seq bigint NOT NULL,
        audit_entries bigint NOT NULL,
        audit_bytes bigint NOT NULL
    );
    INSERT INTO fedgw_meta VALUES (1, 0, 0, 0, 0);
    CREATE TABLE fedgw_bundles (
        trust_domain text COLLATE "C" PRIMARY KEY,
        revision bigint NOT NULL,
        record bytea
    );
    CREATE INDEX fedgw_bundles_by_revision ON fedgw_bundles (revision);
    CREATE TABLE fedgw_history (
        trust_domain text COLLATE "C" NOT NULL,
        revision bigint NOT NULL,
        record bytea NOT NULL,
        PRIMARY KEY (trust_domain, revision)
    );
    CREATE TABLE fedgw_status (
        trust_domain text COLLATE "C" PRIMARY KEY,
        record bytea NOT NULL
    );
    CREATE TABLE fedgw_audit (
        seq bigint PRIMARY KEY,
        record bytea NOT NULL
    );
    CREATE TABLE fedgw_local_sequences (
        trust_domain text COLLATE "C" PRIMARY KEY,
        value bigint NOT NULL
    );
    CREATE TABLE fedgw_relationships (
        trust_domain text COLLATE "C" PRIMARY KEY,
        record bytea NOT NULL
    );"#,
    // 1 -> 2: shared polling.
    r#"CREATE TABLE fedgw_replicas (
        id text PRIMARY KEY,
        name text NOT NULL,
        seen_at timestamptz NOT NULL
    );
    CREATE TABLE fedgw_leases (
        trust_domain text COLLATE "C" PRIMARY KEY,
        holder text NOT NULL,
        token bigint NOT NULL,
        expires_at timestamptz NOT NULL
    );
    CREATE SEQUENCE fedgw_lease_tokens;"#,
];

/// Bring the database to [`CURRENT`] inside `tx` (the caller commits); returns the
/// version found.
///
/// # Errors
/// [`StoreError::PostgresSchemaTooNew`], or the database's error.
pub(super) async fn upgrade(tx: &Transaction<'_>) -> Result<u64, StoreError> {
    let db = |source| StoreError::Postgres {
        operation: "schema migration",
        trust_domain: None,
        source,
    };
    tx.cached_execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS fedgw_schema (
            version bigint PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await
    .map_err(db)?;
    let row = tx
        .cached_query_one("SELECT coalesce(max(version), 0) FROM fedgw_schema", &[])
        .await
        .map_err(db)?;
    let found = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
    if found > CURRENT {
        return Err(StoreError::PostgresSchemaTooNew {
            found,
            known: CURRENT,
        });
    }
    for (from, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(usize::MAX))
    {
        tx.batch_execute(sql).await.map_err(db)?;
        let to = i64::try_from(from + 1).unwrap_or(i64::MAX);
        tx.cached_execute("INSERT INTO fedgw_schema (version) VALUES ($1)", &[&to])
            .await
            .map_err(db)?;
        tracing::info!(version = to, "PostgreSQL store schema migrated");
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_migration_per_version() {
        assert_eq!(MIGRATIONS.len() as u64, CURRENT);
    }
}
