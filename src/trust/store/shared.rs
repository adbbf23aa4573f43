//! The trust store over a shared PostgreSQL store: two trust stores on one database
//! play two replicas (each with its own snapshot and writer lock, as two processes
//! have), against a real PostgreSQL server.

#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use super::*;
use crate::trust::db::postgres::testing::TestDatabase;
use crate::trust::policy::testing::{bundle, now, td};

async fn replica(db: &TestDatabase) -> TrustStore {
    super::tests::replica(db, tempfile::tempdir().unwrap().path()).await
}

fn fetched() -> Source {
    let url: url::Url = "https://peer.example/bundle".parse().unwrap();
    Source::Fetched {
        final_url: url.clone(),
        url,
        peer: "192.0.2.7:443".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_catches_up_with_anothers_changes_in_order() {
    let db = TestDatabase::new();
    let a = replica(&db).await;
    let b = replica(&db).await;
    let east = td("east.example");
    let west = td("west.example");
    let mut feed = b.subscribe();
    for sequence in 1..=3 {
        a.submit(&east, bundle(&east, Some(sequence)), fetched(), now())
            .await
            .unwrap();
    }
    a.submit(&west, bundle(&west, Some(1)), fetched(), now())
        .await
        .unwrap();
    assert_eq!(b.snapshot().revision, 0, "nothing until it catches up");
    assert_eq!(b.catch_up().await.unwrap(), 4);
    assert_eq!(*feed.borrow_and_update(), 4);
    let (sa, sb) = (a.snapshot(), b.snapshot());
    assert_eq!(sb.revision, sa.revision);
    for td in [&east, &west] {
        assert_eq!(sb.get(td).unwrap().json, sa.get(td).unwrap().json, "{td}");
        assert_eq!(sb.get(td).unwrap().revision, sa.get(td).unwrap().revision);
    }

    // A removal on one is a removal on the other; its status goes with it.
    a.remove(&west, "alice", now()).await.unwrap();
    assert_eq!(b.catch_up().await.unwrap(), 5);
    assert!(b.snapshot().get(&west).is_none());
    // Catching up again changes nothing and never goes back.
    let before = b.snapshot();
    assert_eq!(b.catch_up().await.unwrap(), 5);
    assert!(Arc::ptr_eq(&before, &b.snapshot()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regression_is_judged_against_the_shared_current_not_a_stale_snapshot() {
    let db = TestDatabase::new();
    let a = replica(&db).await;
    let b = replica(&db).await;
    let east = td("east.example");
    a.submit(&east, bundle(&east, Some(1)), fetched(), now())
        .await
        .unwrap();
    b.catch_up().await.unwrap();
    // A moves on to 5; B has not seen it.
    a.submit(&east, bundle(&east, Some(5)), fetched(), now())
        .await
        .unwrap();
    assert_eq!(b.snapshot().get(&east).unwrap().sequence, Some(1));

    // Against its own snapshot 4 would be an advance; against the shared current it
    // is a regression, and refused.
    let err = b
        .submit(&east, bundle(&east, Some(4)), fetched(), now())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SubmitError::Rejected(PolicyError::SequenceRegression {
                current: 5,
                candidate: 4,
                ..
            })
        ),
        "{err:?}"
    );
    assert_eq!(
        b.snapshot().get(&east).unwrap().sequence,
        Some(5),
        "it caught up"
    );

    // A real advance from the stale replica lands after the other's change.
    let outcome = b
        .submit(&east, bundle(&east, Some(6)), fetched(), now())
        .await
        .unwrap();
    assert!(
        matches!(outcome, Outcome::Accepted { revision: 3, .. }),
        "{outcome:?}"
    );
    a.catch_up().await.unwrap();
    let history: Vec<_> = a
        .history(&east)
        .await
        .unwrap()
        .iter()
        .map(|r| r.sequence)
        .collect();
    assert_eq!(history, [Some(6), Some(5), Some(1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_lands_after_other_replicas_publishes_theirs_too() {
    let db = TestDatabase::new();
    let a = replica(&db).await;
    let b = replica(&db).await;
    let (east, west) = (td("east.example"), td("west.example"));
    a.submit(&east, bundle(&east, Some(1)), fetched(), now())
        .await
        .unwrap();
    // B writes another domain without having seen A's change: its revision is 2,
    // and its snapshot holds both, never skipping revision 1.
    b.submit(&west, bundle(&west, Some(1)), fetched(), now())
        .await
        .unwrap();
    let snapshot = b.snapshot();
    assert_eq!(snapshot.revision, 2);
    assert!(snapshot.get(&east).is_some(), "A's change came with it");
    assert_eq!(snapshot.get(&west).unwrap().revision, 2);
}
