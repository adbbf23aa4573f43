//! Waiting for a condition, never for a duration.
//!
//! Owns synchronisation by observation: poll a condition with short sleeps up to a
//! generous deadline, and when the deadline passes, fail naming what was awaited (and,
//! with [`poll_for`], what the test knows at that moment, such as a process log).
//! Nothing here asserts how long anything took. Does not own the conditions: the test
//! observes the system the way a peer would (its endpoints, its admin API, its log).

use std::future::Future;
use std::time::{Duration, Instant};

/// How long any single condition may take to become true. Generous: a slow CI machine
/// must never fail a correct gateway.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// How often [`wait_for`] and [`wait_until`] re-check a condition.
pub const POLL: Duration = Duration::from_millis(50);

/// Poll `condition` until it yields `Some`, with short sleeps, for at most `deadline`.
///
/// # Panics
/// When the deadline passes, naming `what`.
pub async fn wait_for<T, F, Fut>(deadline: Duration, what: &str, condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll_for(deadline, POLL, what, condition, String::new).await
}

/// Poll `condition` until it is true, for at most `deadline`.
///
/// # Panics
/// When the deadline passes, naming `what`.
pub async fn wait_until<F, Fut>(deadline: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(deadline, what, || {
        let fut = condition();
        async move { fut.await.then_some(()) }
    })
    .await;
}

/// [`wait_for`] re-checking every `poll`; when the deadline passes, the message also
/// holds what `context` says then (e.g. the last error seen, a process's log), unless
/// it says nothing.
///
/// # Panics
/// When the deadline passes, naming `what`, with the context.
pub async fn poll_for<T, F, Fut, C>(
    deadline: Duration,
    poll: Duration,
    what: &str,
    mut condition: F,
    context: C,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
    C: FnOnce() -> String,
{
    let start = Instant::now();
    loop {
        if let Some(value) = condition().await {
            return value;
        }
        if start.elapsed() >= deadline {
            let context = context();
            if context.is_empty() {
                panic!("timed out after {deadline:?} waiting for {what}");
            }
            panic!("timed out after {deadline:?} waiting for {what}:\n{context}");
        }
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn wait_for_returns_the_first_value() {
        let calls = AtomicU32::new(0);
        let got = wait_for(DEADLINE, "the third call", || async {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            (n == 3).then_some(n)
        })
        .await;
        assert_eq!(got, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for nothing to happen:\nlast seen: never")]
    async fn poll_for_names_what_it_waited_for_and_the_context() {
        poll_for(
            Duration::from_millis(100),
            Duration::from_millis(10),
            "nothing to happen",
            || async { None::<()> },
            || "last seen: never".to_owned(),
        )
        .await;
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after 100ms waiting for a false condition")]
    async fn wait_until_names_what_it_waited_for() {
        wait_until(Duration::from_millis(100), "a false condition", || async {
            false
        })
        .await;
    }
}
