//! The state a trust domain is reported in by `GET /v1/status` and the relationship
//! routes, and the time arithmetic behind it, as pure functions of their inputs and an
//! explicit `now` (the handler reads the clock once per request).
//!
//! Owns the state rules and their order; not the states themselves ([`DomainState`],
//! of the API contract), the JSON shapes or the fetch schedule itself ([`Schedule`]).

use std::time::Duration;

use spiffe_federation::Bundle;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::api::DomainState;
use crate::sources::schedule::Schedule;

/// How many refresh intervals may pass without a fresh bundle before a foreign domain
/// is `stale`. The poller polls every quarter interval, so this is about eight polls.
pub(super) const STALE_AFTER_INTERVALS: u32 = 2;

/// What the foreign-domain rule needs to know, gathered by the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ForeignFacts {
    /// A relationship polls this domain.
    pub(super) managed: bool,
    /// `https_spiffe` and no bundle for the endpoint ID's trust domain.
    pub(super) awaiting_bootstrap: bool,
    /// A bundle is stored for this domain.
    pub(super) has_bundle: bool,
    /// The stored bundle has no authorities (a revocation).
    pub(super) revoked: bool,
    /// Failed fetches since the last success.
    pub(super) consecutive_failures: u32,
    /// The later of the last successful fetch and the stored bundle's acceptance.
    pub(super) fresh_at: Option<OffsetDateTime>,
    /// The refresh interval of the stored bundle (its hint, clamped; or the default).
    pub(super) refresh_interval: Duration,
}

/// The state of a local domain.
pub(super) fn local_state(has_bundle: bool) -> DomainState {
    if has_bundle {
        DomainState::Serving
    } else {
        DomainState::Missing
    }
}

/// The state of a foreign domain at `now`. The first rule that holds wins:
/// unmanaged, awaiting_bootstrap, failing, pending, revoked, stale, healthy.
pub(super) fn foreign_state(facts: &ForeignFacts, now: OffsetDateTime) -> DomainState {
    if !facts.managed {
        return DomainState::Unmanaged;
    }
    if facts.awaiting_bootstrap {
        return DomainState::AwaitingBootstrap;
    }
    if facts.consecutive_failures > 0 {
        return DomainState::Failing;
    }
    if !facts.has_bundle {
        return DomainState::Pending;
    }
    if facts.revoked {
        return DomainState::Revoked;
    }
    let limit = facts.refresh_interval.saturating_mul(STALE_AFTER_INTERVALS);
    let stale = facts.fresh_at.is_none_or(|at| now - at > limit);
    if stale {
        DomainState::Stale
    } else {
        DomainState::Healthy
    }
}

/// The refresh interval the `stale` rule measures against: the bundle's hint clamped
/// to the polling bounds, or the default when it has none (as the poller does).
pub(super) fn refresh_interval(schedule: &Schedule, bundle: Option<&Bundle>) -> Duration {
    schedule.refresh_interval(bundle.and_then(Bundle::refresh_hint))
}

/// Whole seconds from `then` to `now`; zero when `then` is in the future (clock skew
/// between replicas must not show negative ages).
pub(super) fn age_seconds(then: OffsetDateTime, now: OffsetDateTime) -> i64 {
    (now - then).whole_seconds().max(0)
}

/// The earliest `notAfter` of the bundle's X.509 authorities, if it has any.
pub(super) fn soonest_expiry(bundle: &Bundle) -> Option<OffsetDateTime> {
    bundle
        .x509_authorities()
        .iter()
        .map(|a| a.info().not_after)
        .min()
}

/// RFC 3339 text; a time RFC 3339 cannot express (year > 9999) falls back to the
/// `time` crate's display form rather than disappearing.
pub(super) fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_else(|_| at.to_string())
}

/// A stored Unix-seconds timestamp as RFC 3339; out-of-range values are shown as the
/// raw number of seconds.
pub(super) fn unix_rfc3339(seconds: i64) -> String {
    OffsetDateTime::from_unix_timestamp(seconds).map_or_else(|_| format!("@{seconds}"), rfc3339)
}

/// The later of two optional times.
pub(super) fn latest(
    a: Option<OffsetDateTime>,
    b: Option<OffsetDateTime>,
) -> Option<OffsetDateTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const NOW: OffsetDateTime = datetime!(2026-01-10 12:00 UTC);

    fn healthy() -> ForeignFacts {
        ForeignFacts {
            managed: true,
            awaiting_bootstrap: false,
            has_bundle: true,
            revoked: false,
            consecutive_failures: 0,
            fresh_at: Some(NOW - Duration::from_secs(60)),
            refresh_interval: Duration::from_secs(300),
        }
    }

    macro_rules! foreign_cases {
        ($($name:ident: $change:expr => $expected:ident,)*) => {$(
            #[test]
            fn $name() {
                let mut facts = healthy();
                #[allow(clippy::redundant_closure_call, reason = "table test")]
                ($change)(&mut facts);
                assert_eq!(foreign_state(&facts, NOW), DomainState::$expected);
            }
        )*};
    }

    foreign_cases! {
        recent_fetch_is_healthy: |_: &mut ForeignFacts| {} => Healthy,
        unmanaged_wins_over_everything: |f: &mut ForeignFacts| {
            f.managed = false;
            f.consecutive_failures = 3;
        } => Unmanaged,
        awaiting_bootstrap_wins_over_failing: |f: &mut ForeignFacts| {
            f.awaiting_bootstrap = true;
            f.consecutive_failures = 2;
        } => AwaitingBootstrap,
        one_failure_is_failing_even_with_a_bundle: |f: &mut ForeignFacts| {
            f.consecutive_failures = 1;
        } => Failing,
        no_bundle_and_no_failure_is_pending: |f: &mut ForeignFacts| {
            f.has_bundle = false;
            f.fresh_at = None;
        } => Pending,
        exactly_two_intervals_old_is_still_healthy: |f: &mut ForeignFacts| {
            f.fresh_at = Some(NOW - Duration::from_secs(600));
        } => Healthy,
        just_over_two_intervals_is_stale: |f: &mut ForeignFacts| {
            f.fresh_at = Some(NOW - Duration::from_secs(601));
        } => Stale,
        bundle_without_any_time_is_stale: |f: &mut ForeignFacts| {
            f.fresh_at = None;
        } => Stale,
        an_empty_stored_bundle_is_revoked_never_healthy: |f: &mut ForeignFacts| {
            f.revoked = true;
        } => Revoked,
        revoked_and_stale_is_revoked: |f: &mut ForeignFacts| {
            f.revoked = true;
            f.fresh_at = None;
        } => Revoked,
        a_failure_wins_over_revoked: |f: &mut ForeignFacts| {
            f.revoked = true;
            f.consecutive_failures = 1;
        } => Failing,
    }

    #[test]
    fn local_states() {
        assert_eq!(local_state(true), DomainState::Serving);
        assert_eq!(local_state(false), DomainState::Missing);
    }

    #[test]
    fn refresh_interval_follows_the_clamped_hint() {
        let schedule = Schedule {
            default_refresh: Duration::from_secs(300),
            min_refresh: Duration::from_secs(60),
            max_refresh: Duration::from_secs(3600),
        };
        let td = "east.example".parse().unwrap();
        let mut bundle = Bundle::new(td);
        assert_eq!(refresh_interval(&schedule, None), Duration::from_secs(300));
        bundle.set_refresh_hint(Some(Duration::from_secs(5)));
        assert_eq!(
            refresh_interval(&schedule, Some(&bundle)),
            Duration::from_secs(60)
        );
        bundle.set_refresh_hint(Some(Duration::from_secs(86_400)));
        assert_eq!(
            refresh_interval(&schedule, Some(&bundle)),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn ages_never_go_negative() {
        assert_eq!(age_seconds(NOW - Duration::from_secs(90), NOW), 90);
        assert_eq!(age_seconds(NOW + Duration::from_secs(90), NOW), 0);
    }

    #[test]
    fn times_render_as_rfc3339() {
        assert_eq!(rfc3339(NOW), "2026-01-10T12:00:00Z");
        assert_eq!(unix_rfc3339(NOW.unix_timestamp()), "2026-01-10T12:00:00Z");
        assert_eq!(unix_rfc3339(i64::MAX), format!("@{}", i64::MAX));
    }

    #[test]
    fn latest_picks_the_later_time() {
        let a = Some(NOW);
        let b = Some(NOW - Duration::from_secs(1));
        assert_eq!(latest(a, b), a);
        assert_eq!(latest(None, b), b);
        assert_eq!(latest(None, None), None);
    }

    #[test]
    fn soonest_expiry_of_a_bundle_without_certificates_is_none() {
        let bundle = Bundle::new("east.example".parse().unwrap());
        assert_eq!(soonest_expiry(&bundle), None);
    }
}
