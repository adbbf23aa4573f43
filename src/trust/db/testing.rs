//! What the store's tests (both stores', and each store's own) write: a small bundle
//! of a trust domain with a sequence, as an operator's, and its audit note.

#![allow(clippy::unwrap_used, reason = "test code")]

use super::{AuditAction, AuditNote, Expected, NewBundle};
use crate::trust::policy::Source;
use crate::trust::policy::testing::td;

/// Alice, the operator.
pub(super) fn operator() -> Source {
    Source::Operator {
        who: "alice".into(),
    }
}

/// A bundle of `name` with no keys and `sequence`, accepted `sequence` seconds after a
/// fixed instant, written without a check on the current one.
pub(super) fn new_bundle(name: &str, sequence: u64) -> NewBundle {
    let document = format!(r#"{{"keys":[],"spiffe_sequence":{sequence}}}"#).into_bytes();
    NewBundle {
        trust_domain: td(name),
        document,
        source: operator(),
        accepted_at: 1_700_000_000 + i64::try_from(sequence).unwrap(),
        sequence: Some(sequence),
        expected: Expected::Any,
        fence: None,
    }
}

/// Alice's accept.
pub(super) fn note() -> AuditNote {
    AuditNote {
        who: "alice".into(),
        action: AuditAction::Accept,
        detail: String::new(),
    }
}
