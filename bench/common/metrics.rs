//! Reading fedgw's `/metrics` (Prometheus text) through its admin API: the text, an
//! unlabelled series' value, and the series of a labelled metric with their labels.
//!
//! Included by `bench/scale.rs`, `bench/replicas.rs` and `bench/disk.rs` (`#[path]`
//! modules: the benchmarks are single-file examples).

#![allow(
    dead_code,
    reason = "shared by several benchmarks, each uses part (disk reads only unlabelled \
              series, scale only labelled ones)"
)]

use fedgw::client::admin_client::AdminClient;
use reqwest::Method;

/// `GET /metrics` through the admin API.
pub(crate) async fn scrape(admin: &AdminClient) -> anyhow::Result<String> {
    let answer = admin.call(Method::GET, "/metrics", None).await?;
    Ok(String::from_utf8(answer.body)?)
}

/// The value of the unlabelled series `name` in a `/metrics` text.
pub(crate) fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// One series of a labelled metric.
pub(crate) struct Series<'a> {
    /// What stands between the braces: `name="value",…`.
    labels: &'a str,
    /// The value (0 when it does not parse).
    pub(crate) value: f64,
}

impl<'a> Series<'a> {
    /// The value of label `name`.
    pub(crate) fn label(&self, name: &str) -> Option<&'a str> {
        self.labels.split(',').find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            (key == name).then(|| value.trim_matches('"'))
        })
    }
}

/// Every series of the labelled metric `name` in a `/metrics` text.
pub(crate) fn series<'a>(text: &'a str, name: &str) -> impl Iterator<Item = Series<'a>> {
    let prefix = format!("{name}{{");
    text.lines().filter_map(move |line| {
        let rest = line.strip_prefix(&prefix)?;
        let (labels, value) = rest.rsplit_once('}')?;
        Some(Series {
            labels,
            value: value.trim().parse().unwrap_or(0.0),
        })
    })
}
