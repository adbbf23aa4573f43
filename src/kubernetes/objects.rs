//! What fedgw writes to the Kubernetes API, as values: ClusterTrustBundle and
//! ConfigMap bodies with their names and labels, and a ClusterFederatedTrustDomain's
//! status. Pure: no client, no clock (the time is given).
//!
//! ClusterTrustBundles (KEP-3257, `certificates.k8s.io/v1`): one per trust domain,
//! linked to the configured signer, so named `<signer with '/' as ':'>:<trust
//! domain>` (a trust domain that is not a DNS name, or too long, gets a digest
//! instead), holding exactly that domain's X.509 authorities as PEM. Labels follow
//! the SPIFFE proposal for ClusterTrustBundles (spiffe/spiffe#376, a draft):
//! `k8s.spiffe.io/trust-domain: <trust domain>` (when the name fits a label value)
//! and `k8s.spiffe.io/canarying: live`; `app.kubernetes.io/managed-by: fedgw` marks
//! what fedgw owns, and the annotation `fedgw.dev/trust-domain` always carries the
//! full name.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use spiffe_federation::TrustDomain;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::trust::db::RelationshipStatus;

/// The label that marks what fedgw owns.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Its value.
pub const MANAGED_BY: &str = "fedgw";
/// The trust domain label of spiffe/spiffe#376.
pub const LABEL_TRUST_DOMAIN: &str = "k8s.spiffe.io/trust-domain";
/// The canarying label of spiffe/spiffe#376 (`live` or `preview`).
pub const LABEL_CANARYING: &str = "k8s.spiffe.io/canarying";
/// The annotation holding the full trust domain name.
pub const ANNOTATION_TRUST_DOMAIN: &str = "fedgw.dev/trust-domain";

/// The name of the ClusterTrustBundle of `trust_domain` linked to `signer`.
pub fn cluster_trust_bundle_name(signer: &str, trust_domain: &TrustDomain) -> String {
    let td = trust_domain.as_str();
    let suffix = if super::config::dns_subdomain(td, 200) {
        td.to_owned()
    } else {
        // `_`, a leading or trailing `-`, or a very long name: a digest instead.
        let digest = crate::digest::sha256_hex(td.as_bytes());
        format!("td-{}", &digest[..32])
    };
    format!("{}:{suffix}", signer.replace('/', ":"))
}

/// Whether `value` can be a label value: at most 63 characters of letters, digits,
/// `-`, `_` and `.`, starting and ending with a letter or digit.
pub fn label_value_ok(value: &str) -> bool {
    value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// The labels of the ClusterTrustBundle of `trust_domain`.
pub fn cluster_trust_bundle_labels(trust_domain: &TrustDomain) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
        (LABEL_CANARYING.to_owned(), "live".to_owned()),
    ]);
    if label_value_ok(trust_domain.as_str()) {
        labels.insert(
            LABEL_TRUST_DOMAIN.to_owned(),
            trust_domain.as_str().to_owned(),
        );
    }
    labels
}

/// The ClusterTrustBundle fedgw applies for `trust_domain`: `pem` is its X.509
/// authorities.
pub fn cluster_trust_bundle(signer: &str, trust_domain: &TrustDomain, pem: &str) -> Value {
    json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "ClusterTrustBundle",
        "metadata": {
            "name": cluster_trust_bundle_name(signer, trust_domain),
            "labels": cluster_trust_bundle_labels(trust_domain),
            "annotations": { ANNOTATION_TRUST_DOMAIN: trust_domain.as_str() },
        },
        "spec": {
            "signerName": signer,
            "trustBundle": pem,
        },
    })
}

/// The ConfigMap fedgw applies: `key` holds `pem`, as SPIRE's k8sbundle notifier
/// writes it.
pub fn config_map(namespace: &str, name: &str, key: &str, pem: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": { LABEL_MANAGED_BY: MANAGED_BY },
        },
        "data": { key: pem },
    })
}

/// Whether an object's labels say fedgw owns it.
pub fn owned(labels: Option<&BTreeMap<String, String>>) -> bool {
    labels
        .and_then(|labels| labels.get(LABEL_MANAGED_BY))
        .is_some_and(|value| value == MANAGED_BY)
}

/// What fedgw knows of one ClusterFederatedTrustDomain, for its status.
#[derive(Debug, Clone, Copy)]
pub struct StatusInput<'a> {
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `spec.trustDomain`, when readable.
    pub trust_domain: Option<&'a TrustDomain>,
    /// Polled, or why not.
    pub outcome: &'a Result<(), String>,
    /// Its fetch status, once it has been fetched or failed.
    pub fetch: Option<&'a RelationshipStatus>,
    /// `spiffe_sequence` of the stored bundle, and whether one is stored.
    pub stored: Option<Option<u64>>,
    /// The status the object holds now (for the conditions' transition times).
    pub current: Option<&'a Value>,
}

/// The status to write: conditions `Ready` (a bundle is served for the domain) and
/// `FetchFailing` (the last fetch failed; its failure code is the reason), the last
/// success, the next attempt and the sequence. A condition keeps its
/// `lastTransitionTime` while its status stays the same.
pub fn status(input: &StatusInput<'_>, now: OffsetDateTime) -> Value {
    let (ready, failing) = conditions(input);
    let mut status = serde_json::Map::new();
    if let Some(generation) = input.generation {
        status.insert("observedGeneration".to_owned(), json!(generation));
    }
    if let Some(td) = input.trust_domain {
        status.insert("trustDomain".to_owned(), json!(td.as_str()));
    }
    if input.outcome.is_ok() {
        if let Some(fetch) = input.fetch {
            if let Some(at) = fetch.last_success.and_then(rfc3339) {
                status.insert("lastSuccessfulFetch".to_owned(), json!(at));
            }
            if let Some(at) = fetch.next_attempt.and_then(rfc3339) {
                status.insert("nextAttempt".to_owned(), json!(at));
            }
        }
        if let Some(Some(sequence)) = input.stored {
            status.insert("sequence".to_owned(), json!(sequence));
        }
    }
    let conditions: Vec<Value> = [("Ready", ready), ("FetchFailing", failing)]
        .into_iter()
        .map(|(kind, (state, reason, message))| {
            let since = previous_transition(input.current, kind, state)
                .or_else(|| rfc3339(now.unix_timestamp()))
                .unwrap_or_default();
            let mut condition = json!({
                "type": kind,
                "status": state,
                "reason": reason,
                "message": message,
                "lastTransitionTime": since,
            });
            if let (Some(generation), Some(map)) = (input.generation, condition.as_object_mut()) {
                map.insert("observedGeneration".to_owned(), json!(generation));
            }
            condition
        })
        .collect();
    status.insert("conditions".to_owned(), Value::Array(conditions));
    Value::Object(status)
}

type Condition = (&'static str, String, String);

fn conditions(input: &StatusInput<'_>) -> (Condition, Condition) {
    if let Err(why) = input.outcome {
        let reason = if why.contains("federated with already") {
            "Conflict"
        } else {
            "Invalid"
        };
        return (
            ("False", reason.to_owned(), clip(why)),
            (
                "False",
                "NotPolled".to_owned(),
                "fedgw does not poll this object's trust domain".to_owned(),
            ),
        );
    }
    let served = input.stored.is_some();
    let failure = input
        .fetch
        .filter(|fetch| fetch.consecutive_failures > 0)
        .and_then(|fetch| fetch.last_error.as_ref().map(|e| (fetch, e)));
    let failing = match failure {
        Some((fetch, error)) => (
            "True",
            error
                .code
                .as_deref()
                .map_or_else(|| "FetchFailed".to_owned(), reason_of),
            clip(&format!(
                "{} (failures in a row: {})",
                error.message, fetch.consecutive_failures
            )),
        ),
        None if input.fetch.is_some_and(|f| f.last_success.is_some()) => (
            "False",
            "Fetched".to_owned(),
            "the last fetch succeeded".to_owned(),
        ),
        None => ("False", "Pending".to_owned(), "not fetched yet".to_owned()),
    };
    let ready = if served {
        (
            "True",
            "BundleServed".to_owned(),
            if failure.is_some() {
                "the last accepted bundle is served while fetching fails".to_owned()
            } else {
                "the trust domain's bundle is fetched and served".to_owned()
            },
        )
    } else if failure.is_some() {
        (
            "False",
            "FetchFailing".to_owned(),
            "no bundle yet: fetching fails".to_owned(),
        )
    } else {
        (
            "False",
            "Pending".to_owned(),
            "no bundle yet: waiting for the first fetch".to_owned(),
        )
    };
    (ready, failing)
}

/// A failure code (`sequence_regression`) as a condition reason (`SequenceRegression`).
fn reason_of(code: &str) -> String {
    let reason: String = code
        .split(['_', '-', '.'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect();
    let valid = reason.starts_with(|c: char| c.is_ascii_alphabetic())
        && reason.chars().all(|c| c.is_ascii_alphanumeric());
    if valid {
        reason
    } else {
        "FetchFailed".to_owned()
    }
}

/// A condition message, at most 1,024 characters.
fn clip(message: &str) -> String {
    const MAX: usize = 1024;
    if message.len() <= MAX {
        return message.to_owned();
    }
    let mut end = MAX - 3;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

fn rfc3339(unix: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|at| at.format(&Rfc3339).ok())
}

/// The `lastTransitionTime` of condition `kind` in `current` if its status is `state`.
fn previous_transition(current: Option<&Value>, kind: &str, state: &str) -> Option<String> {
    current?
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
        .filter(|c| c.get("status").and_then(Value::as_str) == Some(state))?
        .get("lastTransitionTime")?
        .as_str()
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::db::LastError;

    fn td(name: &str) -> TrustDomain {
        name.parse().unwrap()
    }

    #[test]
    fn names_are_linked_to_the_signer_and_fit_kubernetes() {
        assert_eq!(
            cluster_trust_bundle_name("fedgw.dev/federation", &td("west.example")),
            "fedgw.dev:federation:west.example"
        );
        for odd in ["under_score.example", "-dash.example", &"a".repeat(240)] {
            let name = cluster_trust_bundle_name("fedgw.dev/federation", &td(odd));
            let suffix = name.strip_prefix("fedgw.dev:federation:td-").unwrap();
            assert_eq!(suffix.len(), 32, "{name}");
            assert!(suffix.chars().all(|c| c.is_ascii_hexdigit()));
        }
        // Two names that map to the same text would collide: digests differ.
        assert_ne!(
            cluster_trust_bundle_name("a.b/c", &td("x_y")),
            cluster_trust_bundle_name("a.b/c", &td("x-y"))
        );
    }

    #[test]
    fn labels_select_one_domain_and_mark_ownership() {
        let labels = cluster_trust_bundle_labels(&td("west.example"));
        assert_eq!(labels[LABEL_TRUST_DOMAIN], "west.example");
        assert_eq!(labels[LABEL_CANARYING], "live");
        assert!(owned(Some(&labels)));
        assert!(!owned(None));
        // Too long for a label value: only the annotation names it.
        let long = td(&format!("{}.example", "a".repeat(60)));
        assert!(!cluster_trust_bundle_labels(&long).contains_key(LABEL_TRUST_DOMAIN));
        let body = cluster_trust_bundle("fedgw.dev/federation", &long, "PEM");
        assert_eq!(
            body["metadata"]["annotations"][ANNOTATION_TRUST_DOMAIN],
            long.as_str()
        );
        assert!(label_value_ok("a_b.c-d") && !label_value_ok("_a") && !label_value_ok(""));
    }

    fn fetched(last_success: Option<i64>, failures: u32, code: Option<&str>) -> RelationshipStatus {
        RelationshipStatus {
            last_success,
            last_error: code.map(|code| LastError {
                at: 1_700_000_100,
                code: Some(code.to_owned()),
                message: format!("{code} went wrong"),
            }),
            next_attempt: Some(1_700_000_400),
            consecutive_failures: failures,
        }
    }

    fn condition<'a>(status: &'a Value, kind: &str) -> &'a Value {
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == kind)
            .unwrap()
    }

    #[test]
    fn conditions_follow_failing_and_recovering_fetches() {
        let domain = td("west.example");
        let ok = Ok(());
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_500).unwrap();
        let input = |fetch, stored, current| StatusInput {
            generation: Some(3),
            trust_domain: Some(&domain),
            outcome: &ok,
            fetch,
            stored,
            current,
        };
        let pending = status(&input(None, None, None), now);
        assert_eq!(condition(&pending, "Ready")["reason"], "Pending");
        assert_eq!(condition(&pending, "Ready")["status"], "False");

        let good = fetched(Some(1_700_000_000), 0, None);
        let ready = status(&input(Some(&good), Some(Some(7)), Some(&pending)), now);
        assert_eq!(condition(&ready, "Ready")["status"], "True");
        assert_eq!(condition(&ready, "FetchFailing")["status"], "False");
        assert_eq!(ready["sequence"], 7);
        assert_eq!(ready["lastSuccessfulFetch"], "2023-11-14T22:13:20Z");
        assert_eq!(ready["nextAttempt"], "2023-11-14T22:20:00Z");
        assert_eq!(ready["observedGeneration"], 3);

        let bad = fetched(Some(1_700_000_000), 2, Some("sequence_regression"));
        let later = OffsetDateTime::from_unix_timestamp(1_700_000_900).unwrap();
        let failing = status(&input(Some(&bad), Some(Some(7)), Some(&ready)), later);
        let fc = condition(&failing, "FetchFailing");
        assert_eq!(fc["status"], "True");
        assert_eq!(fc["reason"], "SequenceRegression");
        assert!(
            fc["message"]
                .as_str()
                .unwrap()
                .contains("failures in a row: 2")
        );
        // Ready did not change: its transition time is kept; FetchFailing's moved.
        assert_eq!(
            condition(&failing, "Ready")["lastTransitionTime"],
            condition(&ready, "Ready")["lastTransitionTime"]
        );
        assert_eq!(fc["lastTransitionTime"], "2023-11-14T22:28:20Z");

        let never = fetched(None, 1, Some("connect"));
        let down = status(&input(Some(&never), None, None), now);
        assert_eq!(condition(&down, "Ready")["reason"], "FetchFailing");
        assert_eq!(condition(&down, "FetchFailing")["reason"], "Connect");
    }

    #[test]
    fn refused_objects_say_why() {
        let why =
            Err("west.example is federated with already by the configuration file".to_owned());
        let now = OffsetDateTime::from_unix_timestamp(0).unwrap();
        let input = StatusInput {
            generation: Some(1),
            trust_domain: None,
            outcome: &why,
            fetch: None,
            stored: None,
            current: None,
        };
        let refused = status(&input, now);
        assert_eq!(condition(&refused, "Ready")["reason"], "Conflict");
        assert_eq!(condition(&refused, "FetchFailing")["reason"], "NotPolled");
        assert_eq!(reason_of("x"), "X");
        assert_eq!(reason_of("9x"), "FetchFailed");
        let clipped = clip(&"é".repeat(1000));
        assert!(
            clipped.len() <= 1024 && clipped.ends_with("é..."),
            "{}",
            clipped.len()
        );
    }
}
