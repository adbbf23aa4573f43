//! (being written; temporary minimal content for config)

use serde::{Deserialize, Serialize};

/// What to do with a sequence regression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SequencePolicy {
    /// Refuse.
    #[default]
    Reject,
    /// Accept with a warning.
    Warn,
    /// Accept.
    Accept,
}
