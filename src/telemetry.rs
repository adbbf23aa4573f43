//! Logs and metrics.
//!
//! Owns tracing initialisation (human or JSON lines on stderr, filtered by
//! `RUST_LOG`-style directives) and a small metrics registry rendered in the
//! Prometheus text exposition format (version 0.0.4) for the admin `/metrics` route.
//! It does not decide when something is measured: subsystems record into [`Metrics`],
//! each into a family declared in [`families`] (its name, kind, help text and labels),
//! the one list of what `/metrics` can show.
//!
//! The registry is deliberately small: counters and gauges with label sets, stored in
//! a map behind a short-lived std mutex (never held across `.await`).

pub mod families;
pub mod log_guard;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::sync::{Arc, Mutex, PoisonError};

use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Install the global tracing subscriber. `directives` uses the `RUST_LOG` syntax
/// (e.g. `info,fedgw=debug`); an invalid directive falls back to `info` and says so.
/// Text lines are coloured only when standard error is a terminal and `NO_COLOR` is
/// unset or empty ([`use_colour`]), so a log redirected to a file holds plain text.
pub fn init_logging(format: LogFormat, directives: &str) {
    let (filter, bad) = match EnvFilter::try_new(directives) {
        Ok(filter) => (filter, None),
        Err(err) => (EnvFilter::new("info"), Some(err.to_string())),
    };
    let colour = use_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    // A second initialisation (e.g. in tests) keeps the first subscriber.
    let installed = match format {
        LogFormat::Text => builder.try_init().is_ok(),
        LogFormat::Json => builder.json().try_init().is_ok(),
    };
    if let (true, Some(reason)) = (installed, bad) {
        tracing::warn!(directives, %reason, "invalid log filter; using \"info\"");
    }
}

/// Whether log lines get ANSI colours: only on a terminal, and never when `NO_COLOR`
/// is set to a non-empty value (<https://no-color.org>).
pub fn use_colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(std::ffi::OsStr::is_empty)
}

/// Whether a metric only goes up or can go both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic.
    Counter,
    /// Arbitrary value.
    Gauge,
}

impl Kind {
    /// The word on the `# TYPE` line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
        }
    }
}

/// A metric family: what its series measure and how they are told apart. Every one
/// is declared in [`families`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    /// The metric name, e.g. `fedgw_fetches_total`.
    pub name: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// The `# HELP` text.
    pub help: &'static str,
    /// The label names every series of the family carries, e.g. `trust_domain`.
    pub labels: &'static [&'static str],
}

/// A counter family, recorded with [`Metrics::inc`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter(Family);

/// A gauge family, recorded with [`Metrics::set`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gauge(Family);

impl Counter {
    /// A counter family; the gateway's own are declared in [`families`], and a name
    /// ends in `_total`.
    pub const fn new(
        name: &'static str,
        labels: &'static [&'static str],
        help: &'static str,
    ) -> Self {
        Self(Family {
            name,
            kind: Kind::Counter,
            help,
            labels,
        })
    }

    /// What the counter is.
    pub const fn family(self) -> Family {
        self.0
    }

    /// The metric name.
    pub const fn name(self) -> &'static str {
        self.0.name
    }
}

impl Gauge {
    /// A gauge family; the gateway's own are declared in [`families`].
    pub const fn new(
        name: &'static str,
        labels: &'static [&'static str],
        help: &'static str,
    ) -> Self {
        Self(Family {
            name,
            kind: Kind::Gauge,
            help,
            labels,
        })
    }

    /// What the gauge is.
    pub const fn family(self) -> Family {
        self.0
    }

    /// The metric name.
    pub const fn name(self) -> &'static str {
        self.0.name
    }
}

impl From<Counter> for Family {
    fn from(counter: Counter) -> Self {
        counter.0
    }
}

impl From<Gauge> for Family {
    fn from(gauge: Gauge) -> Self {
        gauge.0
    }
}

/// One family's recorded series.
#[derive(Debug)]
struct Recorded {
    family: Family,
    series: BTreeMap<Vec<(&'static str, String)>, f64>,
}

/// The metrics registry; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    families: Arc<Mutex<BTreeMap<&'static str, Recorded>>>,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `by` to the series of `counter` with these labels (those the family
    /// declares, in any order).
    pub fn inc(&self, counter: Counter, labels: &[(&'static str, &str)], by: f64) {
        self.update(counter.0, labels, |v| *v += by);
    }

    /// Set the series of `gauge` with these labels (those the family declares, in any
    /// order).
    pub fn set(&self, gauge: Gauge, labels: &[(&'static str, &str)], value: f64) {
        self.update(gauge.0, labels, |v| *v = value);
    }

    /// Drop every series of `name` whose labels include `label = value` (e.g. when a
    /// trust domain is removed, its series go too).
    pub fn forget(&self, label: &str, value: &str) {
        let mut families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        for family in families.values_mut() {
            family
                .series
                .retain(|labels, _| !labels.iter().any(|(k, v)| *k == label && v == value));
        }
    }

    /// The current value of one series of a [`Counter`] or [`Gauge`], if recorded.
    pub fn value(&self, family: impl Into<Family>, labels: &[(&'static str, &str)]) -> Option<f64> {
        let families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        families
            .get(family.into().name)?
            .series
            .get(&key(labels))
            .copied()
    }

    fn update(
        &self,
        family: Family,
        labels: &[(&'static str, &str)],
        change: impl FnOnce(&mut f64),
    ) {
        let key = key(labels);
        debug_assert!(
            key.iter().map(|(name, _)| *name).eq(sorted(family.labels)),
            "{} is recorded with labels {key:?}; its family declares {:?}",
            family.name,
            family.labels,
        );
        let mut families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        let recorded = families.entry(family.name).or_insert_with(|| Recorded {
            family,
            series: BTreeMap::new(),
        });
        change(recorded.series.entry(key).or_insert(0.0));
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        for (name, recorded) in families.iter() {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "# HELP {name} {}", recorded.family.help);
            let _ = writeln!(out, "# TYPE {name} {}", recorded.family.kind.as_str());
            for (labels, value) in &recorded.series {
                out.push_str(name);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (k, v)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{k}=\"{}\"", escape(v));
                    }
                    out.push('}');
                }
                let _ = writeln!(out, " {value}");
            }
        }
        out
    }
}

/// Label names in the order of a series key.
fn sorted(labels: &[&'static str]) -> Vec<&'static str> {
    let mut labels = labels.to_vec();
    labels.sort_unstable();
    labels
}

fn key(labels: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut key: Vec<_> = labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
    key.sort();
    key
}

/// Escape a label value: backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, None));
        assert!(!use_colour(false, Some(OsStr::new("1"))));
    }

    #[test]
    fn counters_and_gauges_render_in_text_format() {
        let (fetches, sequence) = (families::FETCHES, families::FETCHED_SEQUENCE);
        let metrics = Metrics::new();
        metrics.inc(
            fetches,
            &[("trust_domain", "b.example"), ("outcome", "ok")],
            1.0,
        );
        metrics.inc(
            fetches,
            &[("outcome", "ok"), ("trust_domain", "b.example")],
            2.0,
        );
        metrics.set(sequence, &[("trust_domain", "b.example")], 7.0);
        let text = metrics.render();
        let (fetches, sequence) = (fetches.name(), sequence.name());
        assert!(
            text.contains(&format!("# TYPE {fetches} counter\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "{fetches}{{outcome=\"ok\",trust_domain=\"b.example\"}} 3\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("{sequence}{{trust_domain=\"b.example\"}} 7\n")),
            "{text}"
        );
        // The help text and kind are the declared ones.
        let help = families::FETCHED_SEQUENCE.family().help;
        assert!(
            text.contains(&format!(
                "# HELP {sequence} {help}\n# TYPE {sequence} gauge\n"
            )),
            "{text}"
        );
    }

    /// A gauge for the tests below, with one label.
    const fn gauge(label: &'static [&'static str]) -> Gauge {
        Gauge::new("m", label, "h")
    }

    #[test]
    fn label_values_are_escaped() {
        let metrics = Metrics::new();
        metrics.set(gauge(&["error"]), &[("error", "say \"hi\"\\\n")], 1.0);
        assert!(metrics.render().contains(r#"m{error="say \"hi\"\\\n"} 1"#));
    }

    #[test]
    fn forgetting_a_domain_drops_its_series() {
        let metrics = Metrics::new();
        let m = gauge(&["trust_domain"]);
        metrics.set(m, &[("trust_domain", "a.example")], 1.0);
        metrics.set(m, &[("trust_domain", "b.example")], 2.0);
        metrics.forget("trust_domain", "a.example");
        assert_eq!(metrics.value(m, &[("trust_domain", "a.example")]), None);
        assert_eq!(
            metrics.value(m, &[("trust_domain", "b.example")]),
            Some(2.0)
        );
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "its family declares")]
    fn labels_other_than_the_declared_ones_are_a_bug() {
        Metrics::new().set(gauge(&["trust_domain"]), &[("domain", "a.example")], 1.0);
    }
}
