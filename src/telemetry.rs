//! Logs and metrics.
//!
//! Owns tracing initialisation (human or JSON lines on stderr, filtered by
//! `RUST_LOG`-style directives) and a small metrics registry rendered in the
//! Prometheus text exposition format (version 0.0.4) for the admin `/metrics` route.
//! It does not decide what is measured: subsystems record into [`Metrics`].
//!
//! The registry is deliberately small: counters and gauges with label sets, stored in
//! a map behind a short-lived std mutex (never held across `.await`).

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

#[derive(Debug, Default)]
struct Family {
    kind: Option<Kind>,
    help: &'static str,
    series: BTreeMap<Vec<(&'static str, String)>, f64>,
}

/// The metrics registry; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    families: Arc<Mutex<BTreeMap<&'static str, Family>>>,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `by` to a counter.
    pub fn inc(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        by: f64,
    ) {
        self.update(name, help, Kind::Counter, labels, |v| *v += by);
    }

    /// Set a gauge.
    pub fn set(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        value: f64,
    ) {
        self.update(name, help, Kind::Gauge, labels, |v| *v = value);
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

    /// The current value of one series, if recorded.
    pub fn value(&self, name: &str, labels: &[(&'static str, &str)]) -> Option<f64> {
        let families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        families.get(name)?.series.get(&key(labels)).copied()
    }

    fn update(
        &self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: &[(&'static str, &str)],
        change: impl FnOnce(&mut f64),
    ) {
        let mut families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        let family = families.entry(name).or_default();
        family.kind = Some(kind);
        family.help = help;
        change(family.series.entry(key(labels)).or_insert(0.0));
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        for (name, family) in families.iter() {
            let kind = match family.kind {
                Some(Kind::Counter) => "counter",
                _ => "gauge",
            };
            // Writing to a String cannot fail.
            let _ = writeln!(out, "# HELP {name} {}", family.help);
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in &family.series {
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
        let metrics = Metrics::new();
        metrics.inc(
            "fedgw_fetches_total",
            "Fetches.",
            &[("trust_domain", "b.example"), ("outcome", "ok")],
            1.0,
        );
        metrics.inc(
            "fedgw_fetches_total",
            "Fetches.",
            &[("outcome", "ok"), ("trust_domain", "b.example")],
            2.0,
        );
        metrics.set(
            "fedgw_bundle_sequence",
            "Sequence.",
            &[("trust_domain", "b.example")],
            7.0,
        );
        let text = metrics.render();
        assert!(
            text.contains("# TYPE fedgw_fetches_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("fedgw_fetches_total{outcome=\"ok\",trust_domain=\"b.example\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("fedgw_bundle_sequence{trust_domain=\"b.example\"} 7\n"),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let metrics = Metrics::new();
        metrics.set("m", "h", &[("error", "say \"hi\"\\\n")], 1.0);
        assert!(metrics.render().contains(r#"m{error="say \"hi\"\\\n"} 1"#));
    }

    #[test]
    fn forgetting_a_domain_drops_its_series() {
        let metrics = Metrics::new();
        metrics.set("m", "h", &[("trust_domain", "a.example")], 1.0);
        metrics.set("m", "h", &[("trust_domain", "b.example")], 2.0);
        metrics.forget("trust_domain", "a.example");
        assert_eq!(metrics.value("m", &[("trust_domain", "a.example")]), None);
        assert_eq!(
            metrics.value("m", &[("trust_domain", "b.example")]),
            Some(2.0)
        );
    }
}
