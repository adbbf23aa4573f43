//! File descriptors: the process's open-file limit and the connection budget carved
//! out of it.
//!
//! Owns raising the soft `RLIMIT_NOFILE` to the hard limit (once, at start) and the
//! [`Budget`]: the number of inbound connections every listener together may hold,
//! the soft limit minus `net.reserved_file_descriptors`. Connections beyond the budget
//! are refused at once, so that a flood of connections can never take the
//! descriptors that TLS identity reloads, local bundle reads, the database and
//! outbound fetches need. It does not own the listeners.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The soft limit used when the hard limit is "unlimited" (Linux's default
/// `fs.nr_open`).
const UNLIMITED_TARGET: u64 = 1 << 20;

/// The open-file limits after [`raise_nofile_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimits {
    /// The soft limit in force.
    pub soft: u64,
    /// The hard limit (`None`: unlimited).
    pub hard: Option<u64>,
    /// The soft limit before it was raised, when it was.
    pub raised_from: Option<u64>,
}

/// Raise the soft open-file limit to the hard limit and report both. A refusal by
/// the system leaves the limit as it was (and says so in the returned value: nothing
/// raised).
pub fn raise_nofile_limit() -> FileLimits {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    let soft = before.current.unwrap_or(UNLIMITED_TARGET);
    let target = before.maximum.unwrap_or(UNLIMITED_TARGET);
    if target <= soft {
        return FileLimits {
            soft,
            hard: before.maximum,
            raised_from: None,
        };
    }
    let raised = Rlimit {
        current: Some(target),
        maximum: before.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => FileLimits {
            soft: target,
            hard: before.maximum,
            raised_from: Some(soft),
        },
        Err(err) => {
            tracing::warn!(
                soft,
                target,
                error = %err,
                "cannot raise the open-file limit; keeping the current one"
            );
            FileLimits {
                soft,
                hard: before.maximum,
                raised_from: None,
            }
        }
    }
}

/// The connections all listeners together may hold; cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Budget {
    slots: Arc<Semaphore>,
    total: usize,
}

/// One connection's place in the [`Budget`], returned when dropped.
#[derive(Debug)]
pub struct BudgetSlot {
    _permit: OwnedSemaphorePermit,
}

impl Budget {
    /// A budget of `total` connections.
    pub fn new(total: usize) -> Self {
        let total = total.min(Semaphore::MAX_PERMITS);
        Self {
            slots: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// The budget for `limits` with `reserved` descriptors kept back; `None` when the
    /// reserve leaves nothing for connections.
    pub fn for_limits(limits: &FileLimits, reserved: u64) -> Option<Self> {
        let total = limits.soft.checked_sub(reserved).filter(|n| *n > 0)?;
        Some(Self::new(usize::try_from(total).unwrap_or(usize::MAX)))
    }

    /// The budget's size.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Connections that could still be admitted.
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }

    /// Take a slot, if one is free.
    pub fn try_take(&self) -> Option<BudgetSlot> {
        Arc::clone(&self.slots)
            .try_acquire_owned()
            .ok()
            .map(|permit| BudgetSlot { _permit: permit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_come_back_when_dropped() {
        let budget = Budget::new(2);
        let a = budget.try_take().unwrap();
        let _b = budget.try_take().unwrap();
        assert!(budget.try_take().is_none());
        drop(a);
        assert_eq!(budget.available(), 1);
        assert!(budget.try_take().is_some());
    }

    #[test]
    fn the_reserve_comes_off_the_soft_limit() {
        let limits = FileLimits {
            soft: 1024,
            hard: Some(1024),
            raised_from: None,
        };
        assert_eq!(Budget::for_limits(&limits, 256).unwrap().total(), 768);
        assert!(Budget::for_limits(&limits, 1024).is_none());
        assert!(Budget::for_limits(&limits, 4096).is_none());
    }

    #[test]
    fn raising_keeps_the_soft_limit_at_or_below_the_hard_one() {
        let limits = raise_nofile_limit();
        if let Some(hard) = limits.hard {
            assert!(limits.soft <= hard);
        }
        // Idempotent: a second call finds nothing to raise.
        let again = raise_nofile_limit();
        assert_eq!(again.soft, limits.soft);
        assert_eq!(again.raised_from, None);
    }
}
