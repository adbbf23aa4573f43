//! Which write failures of a files sink are worth a log line.
//!
//! A sink that cannot write a file retries every few seconds; logging each retry would
//! fill the log with the same line. [`FailureLog`] lets a failure through when it is
//! new (its text differs from the last one), again after [`REPEAT_AFTER`] with the
//! number of retries in between, and once more when the writes succeed again. It is a
//! pure state machine with the time passed in, so it is tested without a clock.

use std::time::{Duration, Instant};

/// How long the same failure stays quiet before it is logged again.
pub const REPEAT_AFTER: Duration = Duration::from_secs(300);

/// What to log for one change set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Report {
    /// Nothing new.
    Quiet,
    /// A failure to log; `repeated` is how many times it happened unlogged since it
    /// was last logged.
    Failed {
        /// The failure's text.
        message: String,
        /// Occurrences not logged since the last log line.
        repeated: u64,
    },
    /// The writes succeed again after `failures` failed change sets.
    Recovered {
        /// Failed change sets in a row before this one.
        failures: u64,
    },
}

/// The failure state of one sink.
#[derive(Debug, Default)]
pub(super) struct FailureLog {
    last: Option<String>,
    logged_at: Option<Instant>,
    unlogged: u64,
    failures: u64,
}

impl FailureLog {
    /// Record the outcome of a change set at `now`: `Some(text)` when it failed.
    pub(super) fn observe(&mut self, failure: Option<String>, now: Instant) -> Report {
        let Some(message) = failure else {
            let failures = std::mem::take(&mut self.failures);
            self.last = None;
            self.logged_at = None;
            self.unlogged = 0;
            return if failures > 0 {
                Report::Recovered { failures }
            } else {
                Report::Quiet
            };
        };
        self.failures = self.failures.saturating_add(1);
        let due = self
            .logged_at
            .is_none_or(|at| now.saturating_duration_since(at) >= REPEAT_AFTER);
        if self.last.as_deref() == Some(message.as_str()) && !due {
            self.unlogged = self.unlogged.saturating_add(1);
            return Report::Quiet;
        }
        let repeated = if self.last.as_deref() == Some(message.as_str()) {
            std::mem::take(&mut self.unlogged)
        } else {
            self.unlogged = 0;
            0
        };
        self.last = Some(message.clone());
        self.logged_at = Some(now);
        Report::Failed { message, repeated }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_failure_is_logged_once_then_every_five_minutes_with_a_count() {
        let start = Instant::now();
        let mut log = FailureLog::default();
        let failure = || Some("a.example.json: cannot rename".to_owned());
        assert_eq!(
            log.observe(failure(), start),
            Report::Failed {
                message: "a.example.json: cannot rename".into(),
                repeated: 0
            }
        );
        for seconds in (5..300).step_by(5) {
            let at = start + Duration::from_secs(seconds);
            assert_eq!(log.observe(failure(), at), Report::Quiet, "{seconds}");
        }
        assert_eq!(
            log.observe(failure(), start + REPEAT_AFTER),
            Report::Failed {
                message: "a.example.json: cannot rename".into(),
                repeated: 59
            }
        );
        // Another failure is new: logged at once.
        let other = Some("b.example.pem: cannot fsync".to_owned());
        let at = start + REPEAT_AFTER + Duration::from_secs(5);
        assert!(matches!(
            log.observe(other, at),
            Report::Failed { repeated: 0, .. }
        ));
        assert_eq!(
            log.observe(None, at + Duration::from_secs(5)),
            Report::Recovered { failures: 62 }
        );
        assert_eq!(
            log.observe(None, at + Duration::from_secs(10)),
            Report::Quiet
        );
        // After a recovery the same failure is new again.
        assert!(matches!(
            log.observe(failure(), at + Duration::from_secs(15)),
            Report::Failed { repeated: 0, .. }
        ));
    }
}
