//! `fedgw agent`: keep a node-local files sink in step with a gateway, so that agents
//! and proxies on the node read bundles from disk without reaching the gateway's
//! database.
//!
//! Owns the follow loop: a long poll on the gateway's watch API (`GET
//! /v1/bundles?wait=REVISION`, see `docs/admin-api.md`) through the admin client
//! (unix socket, `http://` with a token, or `https://` with mTLS), each answer — the
//! full state at one revision (DIST-5), read as the API contract's [`BundleList`] —
//! written by the same [`FilesSink`] the
//! gateway's `[[sinks.files]]` use. A failed call or write is retried with a
//! doubling, jittered backoff ([`retry_after`]) and the files in place stay, so the
//! agent rides out a gateway restart; an answer it cannot read changes nothing. It
//! does not own argument parsing (`main.rs`) or how files are written
//! ([`crate::outputs::files`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use serde::Deserialize as _;
use serde_json::Value;
use spiffe_federation::{Bundle, TrustDomain};

use crate::admin::api::BundleList;
use crate::client::admin_client::{AdminClient, ClientError};
use crate::digest::sha256_hex;
use crate::outputs::files::{FilesError, FilesSink, FilesSinkConfig, Published, State};
use crate::shutdown::Shutdown;
use crate::telemetry::Metrics;

/// How long one long poll asks the gateway to wait (below the admin client's 60 s
/// request timeout).
pub const WAIT: Duration = Duration::from_secs(30);

/// The first retry delay after a failure; it doubles with each further failure.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);

/// The longest retry delay.
pub const MAX_RETRY: Duration = Duration::from_secs(30);

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The directory cannot be opened (created, locked, read).
    #[error(transparent)]
    Sink(#[from] FilesError),
}

/// Why one answer of the gateway was not used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnswerError {
    /// The call failed (unreachable, refused, an API error).
    #[error(transparent)]
    Call(#[from] ClientError),
    /// The answer is not the watch API's shape.
    #[error("unexpected answer from GET /v1/bundles: {reason}")]
    Shape {
        /// What is wrong.
        reason: String,
    },
    /// A bundle in the answer does not parse under its trust domain.
    #[error("bundle of {trust_domain} in the answer: {reason}")]
    Bundle {
        /// Its trust domain.
        trust_domain: TrustDomain,
        /// The parser's reason.
        reason: String,
    },
}

/// Follow the gateway behind `client` and keep the sink of `config` equal to its
/// state until `shutdown` is cancelled.
///
/// # Errors
/// [`AgentError::Sink`] if the directory cannot be opened; every later failure is
/// logged and retried.
pub async fn run(
    client: AdminClient,
    config: FilesSinkConfig,
    shutdown: Shutdown,
) -> Result<(), AgentError> {
    let sink = FilesSink::open(&config, Metrics::new(), &shutdown).await?;
    let cancel = shutdown.token();
    let mut held: Option<u64> = None;
    let mut failures = 0_u32;
    tracing::info!(dir = %config.dir.display(), "agent started");
    loop {
        let path = match held {
            None => "/v1/bundles".to_owned(),
            Some(revision) => format!("/v1/bundles?wait={revision}&timeout={}s", WAIT.as_secs()),
        };
        let answer = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            answer = client.call(Method::GET, &path, None) => answer,
        };
        let outcome = match answer
            .map_err(AnswerError::from)
            .and_then(|answer| state_from_answer(answer.json.as_ref().unwrap_or(&Value::Null)))
        {
            Ok((revision, _)) if held == Some(revision) => Ok(()),
            Ok((revision, state)) => match sink.apply(Arc::new(state)).await {
                // Some files could not be written (logged by the sink): not held, so
                // the same state is applied again after the backoff.
                Ok(applied) if !applied.failed.is_empty() => Err(format!(
                    "{} file(s) could not be written",
                    applied.failed.len()
                )),
                Ok(applied) => {
                    tracing::debug!(
                        revision,
                        written = applied.written.len(),
                        removed = applied.removed.len(),
                        "agent: state applied"
                    );
                    held = Some(revision);
                    Ok(())
                }
                Err(err) => Err(err.to_string()),
            },
            Err(err) => Err(err.to_string()),
        };
        match outcome {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(failures, "agent: following the gateway again");
                }
                failures = 0;
            }
            Err(reason) => {
                failures = failures.saturating_add(1);
                let wait = retry_after(failures, rand::random());
                tracing::warn!(
                    failures,
                    retry_in_seconds = wait.as_secs(),
                    "agent: {reason}; the files in place stay"
                );
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// The wait after the `failures`-th failure in a row (1 for the first):
/// [`FIRST_RETRY`] doubled per further failure, at most [`MAX_RETRY`], scaled by a
/// factor in `[0.8, 1.2)` from `jitter` (a uniform sample in `[0, 1)`) so that many
/// agents do not call a restarted gateway at the same instant.
pub fn retry_after(failures: u32, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let wait = FIRST_RETRY
        .saturating_mul(1_u32 << doublings)
        .min(MAX_RETRY);
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.5
    };
    wait.mul_f64(0.8 + 0.4 * jitter)
}

/// The revision and state of a `GET /v1/bundles` answer. Each bundle is parsed under
/// the trust domain it is listed with; its document is written as received.
///
/// # Errors
/// [`AnswerError`] naming what is wrong; one bad bundle refuses the whole answer, so
/// that a domain is never dropped by mistake.
pub fn state_from_answer(json: &Value) -> Result<(u64, State), AnswerError> {
    let list = BundleList::deserialize(json).map_err(|err| AnswerError::Shape {
        reason: err.to_string(),
    })?;
    let mut state = State::new();
    for item in list.bundles {
        let trust_domain = item.trust_domain;
        if !item.bundle.is_object() {
            return Err(AnswerError::Shape {
                reason: format!("{trust_domain}: the bundle document is not a JSON object"),
            });
        }
        let document = item.bundle.to_string().into_bytes();
        let bundle = Bundle::parse(&trust_domain, &document)
            .map_err(|err| AnswerError::Bundle {
                trust_domain: trust_domain.clone(),
                reason: err.to_string(),
            })?
            .bundle;
        if item.digest != sha256_hex(&document) {
            // Re-serialised, the document is byte for byte the stored one; if a
            // gateway ever sends it otherwise, the content still is what it stores.
            tracing::debug!(trust_domain = %trust_domain, "agent: document digest differs from the gateway's");
        }
        let published = Published {
            bundle: Arc::new(bundle),
            json: Bytes::from(document),
        };
        if state.insert(trust_domain.clone(), published).is_some() {
            return Err(AnswerError::Shape {
                reason: format!("{trust_domain} is listed twice"),
            });
        }
    }
    Ok((list.revision, state))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn retries_double_from_one_second_up_to_thirty() {
        let middle = 0.5;
        assert_eq!(retry_after(1, middle), Duration::from_secs(1));
        assert_eq!(retry_after(2, middle), Duration::from_secs(2));
        assert_eq!(retry_after(5, middle), Duration::from_secs(16));
        assert_eq!(retry_after(6, middle), MAX_RETRY);
        assert_eq!(retry_after(u32::MAX, middle), MAX_RETRY);
        assert!(retry_after(1, 0.0) >= Duration::from_millis(800));
        assert!(retry_after(1, 0.999) < Duration::from_millis(1200));
        assert_eq!(retry_after(1, f64::NAN), Duration::from_secs(1));
    }

    /// A `GET /v1/bundles` entry for `td` carrying `bundle`.
    fn entry(td: &str, bundle: Value) -> Value {
        json!({
            "trust_domain": td, "role": "foreign", "sequence": 4,
            "digest": sha256_hex(bundle.to_string().as_bytes()),
            "source": "operator test", "accepted_at": "2026-01-10T12:00:00Z",
            "authorities": 0, "revision": 9, "warnings": [], "bundle": bundle,
        })
    }

    #[test]
    fn dist_5_answers_are_read_whole_or_refused() {
        let document = json!({"keys": [], "spiffe_sequence": 4});
        let good = json!({"revision": 9, "bundles": [entry("a.example", document)]});
        let (revision, state) = state_from_answer(&good).unwrap();
        assert_eq!(revision, 9);
        let a = state.get(&"a.example".parse().unwrap()).unwrap();
        assert_eq!(a.bundle.sequence(), Some(4));
        assert_eq!(&a.json[..], br#"{"keys":[],"spiffe_sequence":4}"#);

        let empty = json!({"revision": 10, "bundles": []});
        assert!(state_from_answer(&empty).unwrap().1.is_empty());

        let bad_bundle = json!({"revision": 9, "bundles": [
            entry("a.example", json!({"keys": 3}))
        ]});
        assert!(matches!(
            state_from_answer(&bad_bundle),
            Err(AnswerError::Bundle { .. })
        ));
        for shape in [
            json!({"bundles": []}),
            json!({"revision": 1}),
            json!({"revision": 1, "bundles": [{"trust_domain": "a.example"}]}),
            json!({"revision": 1, "bundles": [{"trust_domain": "A B", "bundle": {"keys": []}}]}),
            json!({"revision": 1, "bundles": [entry("A B", json!({"keys": []}))]}),
            json!({"revision": 1, "bundles": [entry("a.example", json!([]))]}),
            json!({"revision": 1, "bundles": [
                entry("a.example", json!({"keys": []})),
                entry("a.example", json!({"keys": []})),
            ]}),
        ] {
            assert!(
                matches!(state_from_answer(&shape), Err(AnswerError::Shape { .. })),
                "{shape}"
            );
        }
    }
}
