//! Several replicas of one gateway on one PostgreSQL database: what one is told, all
//! serve. Three real `fedgw serve` processes (the same trust domain, the same
//! development PKI, their own data directories and ports) share a database on a real
//! PostgreSQL server from Debian's packages, reached over TCP with TLS and a password
//! file.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

#[path = "support/gateway.rs"]
mod gateway;

use bytes::Bytes;
use fedgw::client::admin_client::{Body, ClientError};
use fedgw_testkit::postgres::Postgres;
use fedgw_testkit::{Answer, BundleServer, DEADLINE, TestCa, wait_for, wait_until};
use gateway::{Gateway, GatewayBuilder};
use reqwest::Method;
use serde_json::json;
use spiffe_federation::{Bundle, TrustDomain};

/// `[storage]` for a new database on the shared server; the password file lives in
/// `dir`.
fn shared_storage(dir: &std::path::Path) -> String {
    storage_on(
        Postgres::shared().unwrap_or_else(|err| panic!("{err}")),
        dir,
    )
}

/// `[storage]` for a new database on `server`.
fn storage_on(server: &Postgres, dir: &std::path::Path) -> String {
    let database = server.create_database().unwrap();
    let password = dir.join("pg-password");
    std::fs::write(&password, server.password()).unwrap();
    format!(
        "\n[storage]\nbackend = \"postgres\"\n\n[storage.postgres]\nurl = {url:?}\npassword_file = {password:?}\nca_file = {ca:?}\n",
        url = server.url(&database),
        password = password.display().to_string(),
        ca = server.ca_file().display().to_string(),
    )
}

async fn replicas(dir: &std::path::Path, n: usize) -> Vec<Gateway> {
    replicas_with(dir, n, "").await
}

/// `n` replicas whose `[storage.postgres]` also holds `postgres_toml`.
async fn replicas_with(dir: &std::path::Path, n: usize, postgres_toml: &str) -> Vec<Gateway> {
    let storage = format!("{}{postgres_toml}", shared_storage(dir));
    let first = GatewayBuilder::new(&dir.join("r0"), "home.test")
        .web()
        .extra_toml(&storage);
    let pki = first.pki().clone();
    let mut started = vec![first.start().await];
    for i in 1..n {
        let replica = GatewayBuilder::new(&dir.join(format!("r{i}")), "home.test")
            .with_pki(pki.clone())
            .web()
            .extra_toml(&storage);
        started.push(replica.start().await);
    }
    started
}

/// The bundle `gw` serves at `path`, as canonical bytes.
async fn served(gw: &Gateway, path: &str, td: &TrustDomain) -> Option<Vec<u8>> {
    gw.fetch(path, td).await.ok().map(|bundle| bundle.to_json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_one_replica_is_told_every_replica_serves() {
    let dir = tempfile::tempdir().unwrap();
    let gateways = replicas(dir.path(), 3).await;

    // An operator bundle put through one replica's API.
    let operated: TrustDomain = "operated.test".parse().unwrap();
    let pem = TestCa::spiffe_named("operated.test", "operated").cert_pem;
    let answer = gateways[0]
        .admin()
        .call(
            Method::PUT,
            "/v1/bundles/operated.test",
            Some(Body::Raw {
                content_type: "application/x-pem-file",
                bytes: pem.into_bytes(),
            }),
        )
        .await
        .unwrap();
    assert!((200..300).contains(&answer.status), "{answer:?}");
    let expected = served(&gateways[0], "/relay/operated.test", &operated)
        .await
        .expect("the replica told serves it");
    for gw in &gateways[1..] {
        wait_until(
            DEADLINE,
            "every replica serves the operator's bundle",
            || async {
                served(gw, "/relay/operated.test", &operated).await.as_ref() == Some(&expected)
            },
        )
        .await;
    }

    // A relationship created through another replica's API: listed by every
    // replica, and its bundle served by every one.
    let peer: TrustDomain = "peer.test".parse().unwrap();
    let web_ca = TestCa::web("peer.test");
    let mut bundle = Bundle::new(peer.clone());
    bundle.add_x509_authority(TestCa::spiffe("peer.test").authority());
    bundle.set_sequence(Some(7));
    let server = BundleServer::start(&web_ca, Answer::Fixed(Bytes::from(bundle.to_json()))).await;
    let answer = gateways[1]
        .admin()
        .call(
            Method::POST,
            "/v1/federation-relationships",
            Some(Body::Json(json!({
                "trust_domain": "peer.test",
                "url": server.url(),
                "profile": "https_web",
                "extra_ca_roots_pem": web_ca.cert_pem,
                "proxy": "off",
            }))),
        )
        .await
        .unwrap();
    assert!((200..300).contains(&answer.status), "{answer:?}");
    let from_creator = wait_for(
        DEADLINE,
        "the creating replica serves the peer's bundle",
        || async { served(&gateways[1], "/relay/peer.test", &peer).await },
    )
    .await;
    let parsed = Bundle::parse(&peer, &from_creator).unwrap().bundle;
    assert_eq!(parsed.sequence(), Some(7));
    assert!(parsed.same_authorities(&bundle));
    for gw in &gateways {
        wait_until(
            DEADLINE,
            "every replica lists the new relationship",
            || async {
                let listed = gw.admin_json("/v1/federation-relationships").await;
                listed["relationships"]
                    .as_array()
                    .is_some_and(|all| all.iter().any(|r| r["trust_domain"] == "peer.test"))
            },
        )
        .await;
        wait_until(
            DEADLINE,
            "every replica serves the same bytes of the peer's bundle",
            || async {
                served(gw, "/relay/peer.test", &peer).await.as_ref() == Some(&from_creator)
            },
        )
        .await;
    }

    // Deleted through the third: gone from every replica.
    let answer = gateways[2]
        .admin()
        .call(
            Method::DELETE,
            "/v1/federation-relationships/peer.test",
            None,
        )
        .await
        .unwrap();
    assert!((200..300).contains(&answer.status), "{answer:?}");
    for gw in &gateways {
        wait_until(
            DEADLINE,
            "every replica drops the deleted relationship",
            || async {
                let listed = gw.admin_json("/v1/federation-relationships").await;
                let gone = listed["relationships"]
                    .as_array()
                    .is_some_and(|all| all.iter().all(|r| r["trust_domain"] != "peer.test"));
                gone && served(gw, "/relay/peer.test", &peer).await.is_none()
            },
        )
        .await;
    }
}

/// The polling lease of each replica (`fedgw_leases_held`).
async fn leases_held(gateways: &[Gateway]) -> Vec<u64> {
    let mut held = Vec::new();
    for gw in gateways {
        held.push(gw.metric("fedgw_leases_held").await.unwrap_or(0.0) as u64);
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_replica_polls_each_domain_and_another_takes_over_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    // The shortest lease, so that the takeover comes quickly.
    let mut gateways = replicas_with(dir.path(), 3, "lease_time = \"3s\"\n").await;
    let peer: TrustDomain = "peer.test".parse().unwrap();
    let web_ca = TestCa::web("peer.test");
    let mut bundle = Bundle::new(peer.clone());
    bundle.add_x509_authority(TestCa::spiffe("peer.test").authority());
    bundle.set_sequence(Some(1));
    bundle.set_refresh_hint(Some(std::time::Duration::from_secs(1)));
    let server = BundleServer::start(&web_ca, Answer::Fixed(Bytes::from(bundle.to_json()))).await;
    let answer = gateways[0]
        .admin()
        .call(
            Method::POST,
            "/v1/federation-relationships",
            Some(Body::Json(json!({
                "trust_domain": "peer.test",
                "url": server.url(),
                "profile": "https_web",
                "extra_ca_roots_pem": web_ca.cert_pem,
                "proxy": "off",
            }))),
        )
        .await
        .unwrap();
    assert!((200..300).contains(&answer.status), "{answer:?}");

    // Exactly one replica holds the lease, and the peer is polled.
    let holder = wait_for(DEADLINE, "one replica holds the peer's lease", || async {
        let held = leases_held(&gateways).await;
        (held.iter().sum::<u64>() == 1).then(|| held.iter().position(|n| *n == 1).unwrap())
    })
    .await;
    let polled = server.requests();
    wait_until(DEADLINE, "the holder polls every second", || async {
        server.requests() >= polled + 3
    })
    .await;
    // Only the holder's log shows fetches.
    for (i, gw) in gateways.iter().enumerate() {
        let fetched = gw.log_lines_with(&["bundle fetched", "peer.test"]);
        if i == holder {
            assert!(fetched >= 3, "the holder fetched {fetched} times");
        } else {
            assert_eq!(fetched, 0, "replica {i} is not the holder and fetched");
        }
    }

    // kill -9 the holder: another replica takes the lease over and polls.
    gateways[holder].kill();
    let at_kill = server.requests();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != holder).collect();
    let new_holder = wait_for(
        DEADLINE,
        "a surviving replica takes the lease over",
        || async {
            for &i in &survivors {
                if gateways[i].metric("fedgw_leases_held").await == Some(1.0) {
                    return Some(i);
                }
            }
            None
        },
    )
    .await;
    wait_until(DEADLINE, "the new holder polls", || async {
        server.requests() >= at_kill + 2
            && gateways[new_holder].log_lines_with(&["bundle fetched", "peer.test"]) >= 1
    })
    .await;
    let other = survivors
        .iter()
        .copied()
        .find(|i| *i != new_holder)
        .unwrap();
    assert_eq!(
        gateways[other].log_lines_with(&["bundle fetched", "peer.test"]),
        0,
        "the third replica never polled"
    );
    // Every survivor still serves the bundle.
    for &i in &survivors {
        assert!(
            served(&gateways[i], "/relay/peer.test", &peer)
                .await
                .is_some()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_database_away_a_replica_serves_refuses_changes_by_name_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    // A server of its own, to stop.
    let server = Postgres::start().unwrap_or_else(|err| panic!("{err}"));
    let storage = storage_on(&server, dir.path());
    let gw = GatewayBuilder::new(&dir.path().join("r0"), "home.test")
        .web()
        .extra_toml(&format!(
            "{storage}connect_timeout = \"2s\"\nstatement_timeout = \"2s\"\n"
        ))
        .start()
        .await;
    let put = |td: &'static str| {
        let gw = &gw;
        async move {
            let pem = TestCa::spiffe_named(td, td).cert_pem;
            gw.admin()
                .call(
                    Method::PUT,
                    &format!("/v1/bundles/{td}"),
                    Some(Body::Raw {
                        content_type: "application/x-pem-file",
                        bytes: pem.into_bytes(),
                    }),
                )
                .await
                .map(|answer| answer.status)
        }
    };
    assert_eq!(put("before.test").await.unwrap(), 200);
    let before: TrustDomain = "before.test".parse().unwrap();
    let served_before = served(&gw, "/relay/before.test", &before).await.unwrap();
    let status = gw.admin_json("/v1/status").await;
    assert_eq!(
        status["store"],
        json!({"backend": "postgres", "state": "ok", "since": null, "reason": null})
    );

    wait_until(DEADLINE, "the replica listens for changes", || async {
        gw.metric("fedgw_store_listening").await == Some(1.0)
    })
    .await;

    server.stop().unwrap();
    // It no longer listens (and says so), ...
    wait_until(DEADLINE, "fedgw_store_listening drops to 0", || async {
        gw.metric("fedgw_store_listening").await == Some(0.0)
    })
    .await;
    // Changes are refused with the named error; nothing is half-done.
    match put("during.test").await {
        Err(ClientError::Api {
            status,
            code,
            message,
        }) => {
            assert_eq!((status, code.as_str()), (503, "store_unavailable"));
            assert!(message.contains("cannot be reached"), "{message}");
        }
        other => panic!("expected 503 store_unavailable, got {other:?}"),
    }
    // Status and readiness say so; the bundles keep being served.
    wait_until(DEADLINE, "the status says the store is away", || async {
        gw.admin_json("/v1/status").await["store"]["state"] == "away"
    })
    .await;
    let status = gw.admin_json("/v1/status").await;
    assert!(
        status["store"]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{status}"
    );
    let readyz = gw.admin().call(Method::GET, "/readyz", None).await.unwrap();
    assert_eq!(readyz.status, 200);
    assert_eq!(
        String::from_utf8_lossy(&readyz.body),
        "ready, degraded: the shared store cannot be reached\n"
    );
    assert_eq!(
        served(&gw, "/relay/before.test", &before).await.as_ref(),
        Some(&served_before)
    );

    // Back: the replica catches up on its own, and takes changes again.
    server.start_again().unwrap();
    wait_until(DEADLINE, "the status says the store is back", || async {
        gw.admin_json("/v1/status").await["store"]["state"] == "ok"
    })
    .await;
    assert_eq!(put("after.test").await.unwrap(), 200);
    let readyz = gw.admin().call(Method::GET, "/readyz", None).await.unwrap();
    assert_eq!(&readyz.body[..], b"ready\n");
    // ... and listens again without a restart.
    wait_until(DEADLINE, "the replica listens again", || async {
        gw.metric("fedgw_store_listening").await == Some(1.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_restarted_while_the_database_is_away_serves_its_last_known_good_copy() {
    let dir = tempfile::tempdir().unwrap();
    let server = Postgres::start().unwrap_or_else(|err| panic!("{err}"));
    let storage = storage_on(&server, dir.path());
    let mut gw = GatewayBuilder::new(&dir.path().join("r0"), "home.test")
        .web()
        .extra_toml(&format!(
            "{storage}connect_timeout = \"2s\"\nstatement_timeout = \"2s\"\n"
        ))
        .start()
        .await;
    let pem = TestCa::spiffe_named("kept.test", "kept").cert_pem;
    gw.admin()
        .call(
            Method::PUT,
            "/v1/bundles/kept.test",
            Some(Body::Raw {
                content_type: "application/x-pem-file",
                bytes: pem.into_bytes(),
            }),
        )
        .await
        .unwrap();
    let kept: TrustDomain = "kept.test".parse().unwrap();
    let before = served(&gw, "/relay/kept.test", &kept).await.unwrap();
    let copy = gw.data_dir.join("last-known-good.json");
    wait_until(
        DEADLINE,
        "the last-known-good copy holds the bundle",
        || async { std::fs::read_to_string(&copy).is_ok_and(|text| text.contains("kept.test")) },
    )
    .await;

    server.stop().unwrap();
    gw.restart().await;
    assert_eq!(
        served(&gw, "/relay/kept.test", &kept).await.as_ref(),
        Some(&before),
        "served from the copy, byte for byte"
    );
    let status = gw.admin_json("/v1/status").await;
    assert_eq!(status["store"]["state"], "away", "{status}");
    assert!(gw.log_lines_with(&["last-known-good copy"]) >= 1);

    server.start_again().unwrap();
    wait_until(
        DEADLINE,
        "the replica reaches the database again",
        || async { gw.admin_json("/v1/status").await["store"]["state"] == "ok" },
    )
    .await;
    let pem = TestCa::spiffe_named("later.test", "later").cert_pem;
    let answer = gw
        .admin()
        .call(
            Method::PUT,
            "/v1/bundles/later.test",
            Some(Body::Raw {
                content_type: "application/x-pem-file",
                bytes: pem.into_bytes(),
            }),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
}
