//! What only the PostgreSQL store does: its schema versions, its connection settings
//! (password, TLS), a server that is away, several replicas writing at once, and a
//! server killed with `kill -9`. Behaviour both stores share is in `conformance.rs`.
//! Every test runs against a real PostgreSQL server from Debian's packages.

#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use std::collections::BTreeSet;

use fedgw_testkit::postgres::Postgres;

use super::testing::TestDatabase;
use super::*;
use crate::config::storage::{PostgresTls, StorageBackend};
use crate::trust::db::AuditAction;
use crate::trust::db::testing::{new_bundle, note};
use crate::trust::policy::testing::td;

fn open(config: &PostgresConfig) -> Result<PgStore, StoreError> {
    let settings = StorageConfig {
        backend: StorageBackend::Postgres,
        postgres: Some(config.clone()),
        ..StorageConfig::default()
    };
    PgStore::open(config, settings, Metrics::new())
}

/// The database name in a backend's URL.
fn database(config: &PostgresConfig) -> String {
    config.url.rsplit('/').next().unwrap().to_owned()
}

#[test]
fn a_schema_newer_than_this_build_is_refused_and_left_untouched() {
    let backend = TestDatabase::new();
    let store = open(&backend.config).unwrap();
    store
        .put_bundle(new_bundle("east.example", 1), note())
        .unwrap();
    drop(store);
    let server = Postgres::shared().unwrap();
    let db = database(&backend.config);
    server
        .psql(&db, "INSERT INTO fedgw_schema (version) VALUES (99)")
        .unwrap();
    let err = open(&backend.config).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::PostgresSchemaTooNew {
                found: 99,
                known: schema::CURRENT
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("newer than"), "{err}");
    assert_eq!(
        server
            .psql(&db, "SELECT count(*) FROM fedgw_bundles")
            .unwrap()
            .trim(),
        "1",
        "nothing was changed"
    );
}

#[test]
fn replicas_starting_together_migrate_once() {
    let backend = TestDatabase::new();
    let stores: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| open(&backend.config)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for store in &stores {
        assert!(store.is_ok(), "{store:?}");
    }
    let server = Postgres::shared().unwrap();
    let versions = server
        .psql(
            &database(&backend.config),
            "SELECT count(*) || ' ' || max(version) FROM fedgw_schema",
        )
        .unwrap();
    assert_eq!(
        versions.trim(),
        format!("{} {}", schema::CURRENT, schema::CURRENT),
        "each migration once"
    );
}

#[test]
fn a_tampered_record_is_a_named_error() {
    let backend = TestDatabase::new();
    let store = open(&backend.config).unwrap();
    store
        .put_bundle(new_bundle("east.example", 1), note())
        .unwrap();
    let server = Postgres::shared().unwrap();
    server
        .psql(
            &database(&backend.config),
            "UPDATE fedgw_bundles SET record = convert_to('{not json', 'UTF8')",
        )
        .unwrap();
    let err = store.bundle(&td("east.example")).unwrap_err();
    assert!(
        matches!(&err, StoreError::Decode { keyspace: Keyspace::Bundles, key, .. } if key == "east.example"),
        "{err:?}"
    );
    assert!(!err.is_unreachable());
}

#[test]
fn several_replicas_writing_at_once_get_unique_ordered_revisions() {
    let backend = TestDatabase::new();
    let replicas: Vec<PgStore> = (0..3).map(|_| open(&backend.config).unwrap()).collect();
    let revisions: Vec<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = replicas
            .iter()
            .enumerate()
            .map(|(n, store)| {
                scope.spawn(move || {
                    (1..=20)
                        .map(|sequence| {
                            store
                                .put_bundle(
                                    new_bundle(
                                        &format!("d{}.example", sequence % 4),
                                        sequence + 100 * n as u64,
                                    ),
                                    note(),
                                )
                                .unwrap()
                                .revision
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let unique: BTreeSet<u64> = revisions.iter().copied().collect();
    assert_eq!(
        unique,
        (1..=60).collect(),
        "one revision per change, no gaps"
    );
    for store in &replicas {
        assert_eq!(store.revision().unwrap(), 60);
    }
    // Every current bundle is the one with the highest revision of its domain.
    let current = replicas[0].bundles().unwrap();
    assert_eq!(current.len(), 4);
    for record in &current {
        let history = replicas[1].history(&record.trust_domain).unwrap();
        assert_eq!(history[0], *record, "history's newest is the current one");
    }
    let audit = replicas[2].audit_log(0, 1000).unwrap();
    let seqs: Vec<u64> = audit.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=60).collect::<Vec<_>>());
}

#[test]
fn the_password_comes_from_a_file_or_the_environment_and_a_wrong_one_is_named() {
    let backend = TestDatabase::new();
    let server = Postgres::shared().unwrap();
    // A variable that is not set is named (setting one needs `unsafe` in this edition,
    // which the crate forbids; the binary's end-to-end test reads one that is set).
    let from_env = PostgresConfig {
        password_file: None,
        password_env: Some("FEDGW_TEST_PG_PASSWORD_UNSET".into()),
        ..backend.config.clone()
    };
    let err = open(&from_env).unwrap_err();
    assert!(
        err.to_string()
            .contains("$FEDGW_TEST_PG_PASSWORD_UNSET is not set"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let config = PostgresConfig {
        password_file: Some(wrong),
        ..backend.config.clone()
    };
    let err = open(&config).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");
    assert!(!text.contains(server.password()), "{text}");

    let missing = PostgresConfig {
        password_file: Some(dir.path().join("missing")),
        ..backend.config.clone()
    };
    let err = open(&missing).unwrap_err();
    assert!(err.to_string().contains("password_file"), "{err}");
}

#[test]
fn tls_is_verified_against_the_configured_ca() {
    let backend = TestDatabase::new();
    // A CA that did not sign the server's certificate.
    let dir = tempfile::tempdir().unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&other).unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, ca.pem()).unwrap();
    let config = PostgresConfig {
        ca_file: Some(other_ca),
        ..backend.config.clone()
    };
    let err = open(&config).unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "the TLS failure is named: {err}"
    );

    // The server's certificate names 127.0.0.1 and localhost, not another host.
    let renamed = PostgresConfig {
        url: backend.config.url.replace("127.0.0.1", "127.0.0.2"),
        ..backend.config.clone()
    };
    assert!(
        open(&renamed).is_err(),
        "a name the certificate lacks is refused"
    );

    // With the right CA the connection is encrypted.
    let store = open(&backend.config).unwrap();
    let ssl = store
        .block("test", async {
            let client = store.client("test").await?;
            let row = client
                .query_one(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                )
                .await
                .map_err(pg("test", None))?;
            Ok(row.get::<_, bool>(0))
        })
        .unwrap();
    assert!(ssl, "the session is TLS");

    let plain = PostgresConfig {
        tls: PostgresTls::Disable,
        ca_file: None,
        ..backend.config.clone()
    };
    let store = open(&plain).unwrap();
    let ssl = store
        .block("test", async {
            let client = store.client("test").await?;
            let row = client
                .query_one(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                )
                .await
                .map_err(pg("test", None))?;
            Ok(row.get::<_, bool>(0))
        })
        .unwrap();
    assert!(!ssl, "tls = \"disable\" is plain");
}

#[test]
fn a_server_that_is_away_is_an_unreachable_error_within_the_timeout() {
    let backend = TestDatabase::new();
    // A loopback port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let server = Postgres::shared().unwrap();
    let config = PostgresConfig {
        url: backend
            .config
            .url
            .replace(&format!(":{}/", server.port()), &format!(":{port}/")),
        connect_timeout: crate::config::Seconds(2),
        ..backend.config.clone()
    };
    let err = open(&config).unwrap_err();
    assert!(err.is_unreachable(), "{err:?}");
    assert!(
        err.to_string().contains("no connection to PostgreSQL"),
        "{err}"
    );
}

#[test]
fn acknowledged_changes_survive_kill_9_of_the_server() {
    let server = Postgres::start().unwrap();
    let database = server.create_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, server.password()).unwrap();
    let config = PostgresConfig {
        password_file: Some(password_file),
        ca_file: Some(server.ca_file()),
        connect_timeout: crate::config::Seconds(2),
        ..PostgresConfig::with_url(server.url(&database))
    };
    let store = open(&config).unwrap();
    let mut acknowledged = Vec::new();
    for sequence in 1..=20 {
        acknowledged.push(
            store
                .put_bundle(new_bundle("east.example", sequence), note())
                .unwrap(),
        );
    }
    server.kill9().unwrap();
    let err = store.bundles().unwrap_err();
    assert!(err.is_unreachable(), "{err:?}");
    server.start_again().unwrap();
    // The pool drops the broken connections and makes new ones.
    let mut reopened = None;
    for _ in 0..50 {
        match store.bundle(&td("east.example")) {
            Ok(record) => {
                reopened = record;
                break;
            }
            Err(err) => {
                assert!(err.is_unreachable(), "{err:?}");
                #[expect(
                    clippy::disallowed_methods,
                    reason = "a synchronous test waiting for the server"
                )]
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
    assert_eq!(reopened.as_ref(), acknowledged.last());
    assert_eq!(store.revision().unwrap(), 20);
    assert_eq!(store.history(&td("east.example")).unwrap().len(), 20);
}

mod leasing {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::trust::db::Fence;
    use crate::trust::db::postgres::leases::{LeaseGrant, LeaseRound};

    fn domains(n: usize) -> Vec<TrustDomain> {
        (0..n).map(|i| td(&format!("d{i}.example"))).collect()
    }

    fn round(replica: &str, lease: Duration, configured: &[TrustDomain]) -> LeaseRound {
        LeaseRound {
            replica: replica.to_owned(),
            name: format!("test/{replica}"),
            lease,
            configured: configured.to_vec(),
            api: Vec::new(),
        }
    }

    fn fenced(name: &str, sequence: u64, fence: Fence) -> NewBundle {
        NewBundle {
            fence: Some(fence),
            ..new_bundle(name, sequence)
        }
    }

    #[test]
    fn three_replicas_spread_three_thousand_domains_none_above_forty_percent() {
        let db = TestDatabase::new();
        let store = open(&db.config).unwrap();
        let all = domains(3000);
        let lease = Duration::from_secs(60);
        let replicas = ["a", "b", "c"];
        // Each announces itself first, as replicas starting together do; then rounds
        // in turn until nothing moves.
        let mut grants: BTreeMap<&str, LeaseGrant> = BTreeMap::new();
        for _ in 0..4 {
            for replica in replicas {
                grants.insert(
                    replica,
                    store.lease_round(&round(replica, lease, &all)).unwrap(),
                );
            }
        }
        let mut owners: BTreeMap<TrustDomain, &str> = BTreeMap::new();
        for (replica, grant) in &grants {
            assert_eq!(grant.replicas, 3);
            assert_eq!(grant.share, 1000);
            let share = grant.held.len() as f64 / 3000.0;
            assert!(share <= 0.40, "{replica} holds {:.0}%", share * 100.0);
            for td in grant.held.keys() {
                assert!(
                    owners.insert(td.clone(), replica).is_none(),
                    "{td} held twice"
                );
            }
        }
        assert_eq!(owners.len(), 3000, "every domain has exactly one holder");
    }

    #[test]
    fn a_lease_that_runs_out_is_taken_over_with_a_higher_token_and_the_old_one_is_fenced() {
        let db = TestDatabase::new();
        let store = open(&db.config).unwrap();
        let east = vec![td("east.example")];
        let lease = Duration::from_secs(1);
        let first = store.lease_round(&round("a", lease, &east)).unwrap();
        let old_token = first.held[&east[0]];
        // The holder writes under its lease.
        store
            .put_bundle(
                fenced(
                    "east.example",
                    1,
                    Fence {
                        holder: "a".into(),
                        token: old_token,
                    },
                ),
                note(),
            )
            .unwrap();
        // Another replica cannot take it while it is current.
        let other = store.lease_round(&round("b", lease, &east)).unwrap();
        assert!(other.held.is_empty());
        assert!(other.next_expiry.is_some_and(|d| d <= lease));
        // "a" stops renewing (killed, partitioned); once its lease runs out "b" takes it.
        #[expect(
            clippy::disallowed_methods,
            reason = "waiting for a lease to run out on the database's clock"
        )]
        std::thread::sleep(lease + Duration::from_millis(200));
        let taken = store.lease_round(&round("b", lease, &east)).unwrap();
        let new_token = taken.held[&east[0]];
        assert!(new_token > old_token, "{new_token} > {old_token}");
        // The old holder comes back: its write is refused, nothing changes.
        let err = store
            .put_bundle(
                fenced(
                    "east.example",
                    2,
                    Fence {
                        holder: "a".into(),
                        token: old_token,
                    },
                ),
                note(),
            )
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Fenced { token, .. } if token == old_token),
            "{err:?}"
        );
        assert_eq!(store.bundle(&east[0]).unwrap().unwrap().sequence, Some(1));
        assert_eq!(store.revision().unwrap(), 1);
        // Its next round does not get it back while "b" renews.
        let back = store.lease_round(&round("a", lease, &east)).unwrap();
        assert!(back.held.is_empty());
        store
            .put_bundle(
                fenced(
                    "east.example",
                    2,
                    Fence {
                        holder: "b".into(),
                        token: new_token,
                    },
                ),
                note(),
            )
            .unwrap();
    }

    #[test]
    fn a_deleted_relationship_can_be_neither_leased_nor_written() {
        let db = TestDatabase::new();
        let store = open(&db.config).unwrap();
        let west = td("west.example");
        let spec: crate::trust::db::StoredRelationship =
            serde_json::from_value(serde_json::json!({
                "trust_domain": "west.example",
                "url": "https://west.example/bundle",
                "profile": "https_web",
            }))
            .unwrap();
        let record = crate::trust::db::RelationshipRecord {
            relationship: spec,
            changed_at: 1,
            changed_by: "alice".into(),
        };
        let audit = AuditRecord {
            at: 1,
            who: "alice".into(),
            action: AuditAction::RelationshipCreate,
            trust_domain: Some(west.clone()),
            old_digest: None,
            new_digest: None,
            detail: String::new(),
            old_value: None,
            new_value: None,
        };
        store.put_relationship(&record, &audit).unwrap();
        let lease = Duration::from_secs(30);
        let api_round = |replica: &str| LeaseRound {
            api: vec![west.clone()],
            ..round(replica, lease, &[])
        };
        let grant = store.lease_round(&api_round("a")).unwrap();
        let token = grant.held[&west];
        store.remove_relationship(&west, &audit).unwrap();
        // The holder's write in flight is refused; a replica that has not heard of the
        // deletion cannot lease it again.
        let err = store
            .put_bundle(
                fenced(
                    "west.example",
                    1,
                    Fence {
                        holder: "a".into(),
                        token,
                    },
                ),
                note(),
            )
            .unwrap_err();
        assert!(matches!(err, StoreError::Fenced { .. }), "{err:?}");
        assert!(store.lease_round(&api_round("b")).unwrap().held.is_empty());
        assert!(store.lease_round(&api_round("a")).unwrap().held.is_empty());
        assert_eq!(store.bundle(&west).unwrap(), None);
    }
}
