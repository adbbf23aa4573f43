//! Every metric family the gateway records, by subsystem: the one place a
//! `fedgw_…` name is written.
//!
//! Each declaration gives the name, the label names of its series and the `# HELP`
//! text; its doc comment says what the label values are. A counter can only be given
//! to [`Metrics::inc`](super::Metrics::inc) and a gauge to
//! [`Metrics::set`](super::Metrics::set). The operator's list is the `/metrics`
//! section of `docs/admin-api.md`; a test checks that it names every family here.

use super::{Counter, Family, Gauge};

/// Declare the families and [`ALL`], their list.
macro_rules! families {
    ($(
        $(#[$doc:meta])*
        $id:ident: $kind:ident($name:literal, [$($label:literal),* $(,)?], $help:literal $(,)?);
    )*) => {
        $(
            $(#[$doc])*
            pub const $id: $kind = $kind::new($name, &[$($label),*], $help);
        )*

        /// Every family, in the order declared.
        pub const ALL: &[Family] = &[$($id.family()),*];
    };
}

families! {
    // The trust store, which every bundle passes through (fetched, local source,
    // `PUT`, rollback).

    /// Bundles refused by policy; `reason` is the policy's code
    /// ([`PolicyError::code`](crate::trust::policy::PolicyError::code)).
    BUNDLE_REJECTIONS: Counter(
        "fedgw_bundle_rejections_total",
        ["trust_domain", "reason"],
        "Bundles refused by policy, by trust domain and reason.",
    );
    /// Warnings on accepted bundles, by `warning` code (the policy's and the stored
    /// bundle's).
    BUNDLE_WARNINGS: Counter(
        "fedgw_bundle_warnings_total",
        ["trust_domain", "warning"],
        "Warnings on accepted bundles, by trust domain and warning.",
    );

    // The pollers.

    /// Fetches, by `outcome`: `accepted`, `unchanged`, `rejected`, `failed`,
    /// `awaiting_bootstrap`.
    FETCHES: Counter(
        "fedgw_fetches_total",
        ["trust_domain", "outcome"],
        "Bundle fetches by trust domain and outcome.",
    );
    /// The `spiffe_sequence` of the last fetched bundle.
    FETCHED_SEQUENCE: Gauge(
        "fedgw_fetched_sequence",
        ["trust_domain"],
        "spiffe_sequence of the last fetched bundle.",
    );
    /// Unix time of the last successful fetch.
    LAST_SUCCESS_TIMESTAMP: Gauge(
        "fedgw_last_success_timestamp_seconds",
        ["trust_domain"],
        "Unix time of the last successful fetch.",
    );

    // The SDS server; `variant` is `sotw` or `delta`.

    /// Streams open.
    SDS_STREAMS: Gauge("fedgw_sds_streams", ["variant"], "Open SDS streams.");
    /// Responses sent.
    SDS_PUSHES: Counter("fedgw_sds_pushes_total", ["variant"], "SDS responses sent.");
    /// Responses the client rejected (NACKs).
    SDS_NACKS: Counter(
        "fedgw_sds_nacks_total",
        ["variant"],
        "SDS responses rejected by the client.",
    );
    /// Streams refused at the start, by `reason`: `limit` (`sinks.sds.max_streams`
    /// were open).
    SDS_STREAMS_REFUSED: Counter(
        "fedgw_sds_streams_refused_total",
        ["reason"],
        "SDS streams refused at the start.",
    );
    /// Streams ended by the server, by `reason`: `stalled` (the client stopped
    /// reading) or `malformed` (an undecodable request).
    SDS_STREAMS_DROPPED: Counter(
        "fedgw_sds_streams_dropped_total",
        ["variant", "reason"],
        "SDS streams ended by the server: stalled (the client stopped reading) or malformed (an undecodable request).",
    );

    // The admin API's watch clients (event streams and waiting long polls).

    /// Clients open at once.
    WATCH_CLIENTS: Gauge(
        "fedgw_watch_clients",
        [],
        "Watch API clients open (event streams and waiting long polls).",
    );
    /// Clients refused (503 `too_many_watchers`) because `admin.watch.max_clients`
    /// were open.
    WATCH_CLIENTS_REFUSED: Counter(
        "fedgw_watch_clients_refused_total",
        [],
        "Watch API clients refused because admin.watch.max_clients were open.",
    );
    /// Event streams dropped (their connection closed) for not reading.
    WATCH_CLIENTS_DROPPED: Counter(
        "fedgw_watch_clients_dropped_total",
        [],
        "Watch API event streams dropped because the client stopped reading.",
    );

    // The task supervisor.

    /// Panics caught in supervised tasks, by `task` kind: `poller`, `files`,
    /// `endpoint`, `sds`.
    TASK_PANICS: Counter(
        "fedgw_task_panics_total",
        ["task"],
        "Panics caught in supervised tasks (each restarted after a backoff).",
    );

    // The files sinks; `dir` is the sink's directory.

    /// Change sets applied, by `outcome`: `written`, or `failed` when any file of the
    /// set failed.
    FILES_SINK_UPDATES: Counter(
        "fedgw_files_sink_updates_total",
        ["dir", "outcome"],
        "Change sets applied to a files sink directory.",
    );
    /// Files the last change set could not write or delete; 0 when every file is in
    /// place.
    FILES_SINK_FAILED_FILES: Gauge(
        "fedgw_files_sink_failed_files",
        ["dir"],
        "Files a files sink could not write or delete in its last change set.",
    );

    // The relationship registry.

    /// Relationships, by `origin`: `configuration` or `api`.
    RELATIONSHIPS: Gauge(
        "fedgw_relationships",
        ["origin"],
        "Federation relationships by origin (configuration file or admin API).",
    );

    // Every listener; `listener` is `https_web`, `https_spiffe`, `admin` or `sds`.

    /// Connections open.
    CONNECTIONS_OPEN: Gauge(
        "fedgw_connections_open",
        ["listener"],
        "Connections open, by listener.",
    );
    /// Connections closed at accept because a cap was reached, by `reason`:
    /// `peer_limit`, `listener_limit`, `file_descriptors`, `not_owner`,
    /// `no_credentials`.
    CONNECTIONS_REFUSED: Counter(
        "fedgw_connections_refused_total",
        ["listener", "reason"],
        "Connections closed at accept because a cap was reached, by listener and reason.",
    );
    /// Connections the gateway closed, by `reason`: `header_timeout`,
    /// `idle_timeout`, `request_timeout`, `setup_failed`, or the reason given to
    /// [`ConnectionHandle::close`](crate::net::ConnectionHandle::close).
    CONNECTIONS_CLOSED: Counter(
        "fedgw_connections_closed_total",
        ["listener", "reason"],
        "Connections the gateway closed, by listener and reason.",
    );
    /// Failed accepts (e.g. out of file descriptors).
    ACCEPT_ERRORS: Counter(
        "fedgw_accept_errors_total",
        ["listener"],
        "Failed accepts (e.g. out of file descriptors), by listener.",
    );
    /// The connection budget every listener shares.
    CONNECTION_BUDGET: Gauge(
        "fedgw_connection_budget",
        [],
        "Connections all listeners together may hold (open-file limit minus net.reserved_file_descriptors).",
    );

    // The store (the sled database).

    /// Bytes the database's files take on disk (allocated blocks).
    STORE_DISK_BYTES: Gauge(
        "fedgw_store_disk_bytes",
        [],
        "Bytes the database's files take on disk (allocated blocks), at the last measurement.",
    );
    /// Bytes of the records the database holds (keys and values).
    STORE_LIVE_BYTES: Gauge(
        "fedgw_store_live_bytes",
        [],
        "Bytes of the records the database holds (keys and values of every keyspace).",
    );
    /// Rewrites that give disk space back, by `outcome`: `done`, `failed`.
    STORE_COMPACTIONS: Counter(
        "fedgw_store_compactions_total",
        ["outcome"],
        "Rewrites of the database to give back disk space, by outcome.",
    );

    // Shared polling (storage.backend = "postgres").

    /// Whether the shared store answered the last call.
    STORE_REACHABLE: Gauge(
        "fedgw_store_reachable",
        [],
        "1 while the shared store answers, 0 while it cannot be reached (the last snapshot keeps serving; changes are refused). Always 1 with sled.",
    );
    /// Whether this replica listens for the others' changes.
    STORE_LISTENING: Gauge(
        "fedgw_store_listening",
        [],
        "1 while this replica listens for what the other replicas commit (PostgreSQL LISTEN), 0 while it reconnects (it then catches up every 5 s only; shared store only).",
    );
    /// Polling leases this replica holds.
    LEASES_HELD: Gauge(
        "fedgw_leases_held",
        [],
        "Trust domains this replica holds the polling lease of (shared store only).",
    );
    /// This replica's fair share of the trust domains to poll.
    LEASES_SHARE: Gauge(
        "fedgw_leases_share",
        [],
        "This replica's fair share of the trust domains to poll: all of them divided by the replicas alive, rounded up (shared store only).",
    );
    /// Whether this replica holds the Kubernetes writer Lease.
    KUBERNETES_LEADER: Gauge(
        "fedgw_kubernetes_leader",
        [],
        "1 while this replica holds the Kubernetes Lease and writes ClusterTrustBundles, ConfigMaps and statuses, 0 otherwise ([kubernetes] only).",
    );
    /// Writes to the Kubernetes API; `kind` is `cluster_trust_bundle`, `config_map`
    /// or `status`, `result` is `applied`, `deleted`, `failed` or `refused_unowned`.
    KUBERNETES_WRITES: Counter(
        "fedgw_kubernetes_writes_total",
        ["kind", "result"],
        "Writes to the Kubernetes API by object kind and result; refused_unowned counts objects left alone because fedgw does not own them.",
    );
    /// Replicas seen within one lease time.
    REPLICAS: Gauge(
        "fedgw_replicas",
        [],
        "Replicas that ran a lease round within one lease time, this one included (shared store only).",
    );
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::telemetry::Kind;

    /// A Prometheus metric or label name in snake case: lower-case ASCII letters,
    /// digits and single underscores, starting with a letter.
    fn snake_case(name: &str) -> bool {
        name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !name.ends_with('_')
            && !name.contains("__")
    }

    #[test]
    fn names_are_unique_and_follow_prometheus_naming() {
        let mut names = BTreeSet::new();
        for family in ALL {
            let name = family.name;
            assert!(names.insert(name), "{name} is declared twice");
            assert!(name.starts_with("fedgw_") && snake_case(name), "{name}");
            match family.kind {
                Kind::Counter => assert!(name.ends_with("_total"), "counter {name}"),
                Kind::Gauge => assert!(!name.ends_with("_total"), "gauge {name}"),
            }
            // One line, nothing the exposition format would have to escape.
            let help = family.help;
            assert!(help.ends_with('.'), "{name}: {help:?}");
            assert!(!help.contains(['\n', '\\']), "{name}: {help:?}");
            let mut labels = BTreeSet::new();
            for label in family.labels {
                assert!(snake_case(label), "{name}: label {label:?}");
                assert!(labels.insert(label), "{name}: label {label} twice");
            }
        }
        assert_eq!(names.len(), 32, "{names:?}");
    }

    /// The `fedgw_…` names in `text`: each run of name characters after `fedgw_`.
    fn metric_names(text: &str) -> BTreeSet<&str> {
        let is_name = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
        text.match_indices("fedgw_")
            .filter(|(at, _)| !text[..*at].ends_with(is_name))
            .map(|(at, _)| {
                let rest = &text[at..];
                &rest[..rest.find(|c: char| !is_name(c)).unwrap_or(rest.len())]
            })
            .collect()
    }

    #[test]
    fn the_docs_list_every_family_and_no_other_metric() {
        let read = |doc: &str| {
            let path = format!("{}/docs/{doc}", env!("CARGO_MANIFEST_DIR"));
            std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
        };
        let declared: BTreeSet<&str> = ALL.iter().map(|family| family.name).collect();
        let listed = read("admin-api.md");
        let section = listed
            .split_once("### `GET /metrics`")
            .and_then(|(_, after)| after.split("\n## ").next())
            .expect("docs/admin-api.md has a GET /metrics section");
        let in_list = metric_names(section);
        let missing: Vec<_> = declared.difference(&in_list).collect();
        assert!(
            missing.is_empty(),
            "docs/admin-api.md (GET /metrics) does not list {missing:?}"
        );
        // Alerts and explanations elsewhere name only metrics that exist.
        for doc in ["admin-api.md", "operations.md"] {
            let text = read(doc);
            let unknown: Vec<_> = metric_names(&text).difference(&declared).copied().collect();
            assert!(unknown.is_empty(), "docs/{doc} names {unknown:?}");
        }
    }
}
