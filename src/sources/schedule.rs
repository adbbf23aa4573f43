//! When to fetch a foreign bundle next: the polling schedule as pure functions.
//!
//! Owns the schedule rules (SPIFFE Federation §4.1, §6.2; TDB §6.1): poll at a
//! quarter of the bundle's refresh hint, as SPIRE does, after clamping the hint to the
//! configured bounds; use the default (5 minutes) when there is no hint; after a
//! failure, retry no sooner than the next polling interval and back off exponentially,
//! never waiting longer than the clamped hint itself; spread polls with jitter. Time
//! and randomness are inputs, so every rule is tested without a clock.
//!
//! The per-relationship task loop is in [`super::pollers`]; the relationship it polls
//! is a [`crate::relationship::Relationship`].

use std::time::Duration;

use crate::config::PollingConfig;

/// Polls happen at `interval / POLLS_PER_INTERVAL` (SPIRE's factor).
pub const POLLS_PER_INTERVAL: u32 = 4;

/// Jitter spreads each wait by up to ±10 %.
pub const JITTER_FRACTION: f64 = 0.1;

/// The schedule's bounds, from [`PollingConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Interval used when a bundle has no refresh hint.
    pub default_refresh: Duration,
    /// Lower clamp for hints.
    pub min_refresh: Duration,
    /// Upper clamp for hints.
    pub max_refresh: Duration,
}

impl From<&PollingConfig> for Schedule {
    fn from(config: &PollingConfig) -> Self {
        Self {
            default_refresh: config.default_refresh.duration(),
            min_refresh: config.min_refresh.duration(),
            max_refresh: config.max_refresh.duration(),
        }
    }
}

impl Schedule {
    /// The refresh interval for a bundle: its hint clamped to the bounds, or the
    /// default when it has none (FED-9, FED-10).
    pub fn refresh_interval(&self, hint: Option<Duration>) -> Duration {
        hint.unwrap_or(self.default_refresh)
            .clamp(self.min_refresh, self.max_refresh)
    }

    /// The normal wait between polls: a quarter of the refresh interval.
    pub fn poll_period(&self, hint: Option<Duration>) -> Duration {
        self.refresh_interval(hint) / POLLS_PER_INTERVAL
    }

    /// Wait after a successful fetch. `jitter` is a uniform sample in `[0, 1)`.
    pub fn after_success(&self, hint: Option<Duration>, jitter: f64) -> Duration {
        apply_jitter(self.poll_period(hint), jitter)
    }

    /// Wait after the `consecutive_failures`-th failure in a row (1 for the first).
    ///
    /// The first retry waits one normal poll period (POLL-2: "at the next polling
    /// interval, rather than immediately"); each further failure doubles the wait, up
    /// to the refresh interval itself, so a peer that comes back is seen within one
    /// hint. `hint` is that of the last good bundle, if any.
    pub fn after_failure(
        &self,
        consecutive_failures: u32,
        hint: Option<Duration>,
        jitter: f64,
    ) -> Duration {
        let period = self.poll_period(hint);
        let cap = self.refresh_interval(hint);
        let doublings = consecutive_failures.saturating_sub(1).min(16);
        let wait = period.saturating_mul(1_u32 << doublings).min(cap);
        apply_jitter(wait, jitter)
    }
}

/// Scale `wait` by a factor in `[1 - JITTER_FRACTION, 1 + JITTER_FRACTION)`.
fn apply_jitter(wait: Duration, jitter: f64) -> Duration {
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.5
    };
    let factor = 1.0 - JITTER_FRACTION + 2.0 * JITTER_FRACTION * jitter;
    // Never panics: an unrepresentable product keeps the unjittered wait.
    Duration::try_from_secs_f64(wait.as_secs_f64() * factor).unwrap_or(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIDDLE: f64 = 0.5; // no jitter

    fn schedule() -> Schedule {
        Schedule::from(&PollingConfig::default())
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn fed_9_polls_at_a_quarter_of_the_hint() {
        assert_eq!(schedule().after_success(Some(secs(600)), MIDDLE), secs(150));
        assert!(schedule().after_success(Some(secs(600)), MIDDLE) <= secs(600));
    }

    #[test]
    fn fed_10_no_hint_uses_the_five_minute_default() {
        assert_eq!(schedule().refresh_interval(None), secs(300));
        assert_eq!(schedule().after_success(None, MIDDLE), secs(75));
    }

    #[test]
    fn hints_are_clamped_to_the_bounds() {
        assert_eq!(schedule().refresh_interval(Some(secs(1))), secs(60));
        assert_eq!(
            schedule().refresh_interval(Some(secs(2_419_200))),
            secs(3600)
        );
    }

    #[test]
    fn poll_2_first_retry_waits_a_full_poll_period() {
        assert_eq!(
            schedule().after_failure(1, Some(secs(600)), MIDDLE),
            secs(150)
        );
    }

    #[test]
    fn poll_2_backoff_doubles_and_caps_at_the_refresh_interval() {
        let s = schedule();
        assert_eq!(s.after_failure(2, Some(secs(600)), MIDDLE), secs(300));
        assert_eq!(s.after_failure(3, Some(secs(600)), MIDDLE), secs(600));
        assert_eq!(s.after_failure(40, Some(secs(600)), MIDDLE), secs(600));
        assert_eq!(s.after_failure(u32::MAX, None, MIDDLE), secs(300));
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let s = schedule();
        assert_eq!(s.after_success(Some(secs(400)), 0.0), secs(90));
        assert!(s.after_success(Some(secs(400)), 0.999_999) < secs(110));
        assert!(s.after_success(Some(secs(400)), 0.999_999) > secs(109));
        // Out-of-range or non-finite samples cannot widen the spread.
        assert_eq!(s.after_success(Some(secs(400)), -3.0), secs(90));
        assert_eq!(s.after_success(Some(secs(400)), f64::NAN), secs(100));
    }
}
