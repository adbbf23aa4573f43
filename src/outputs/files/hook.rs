//! The `on_change` hook of a files sink: a program (argv, no shell) run after a
//! change set is written, e.g. to make a proxy reload its trust bundles.
//!
//! At most one run at a time: changes that arrive while the hook runs are coalesced
//! into one more run after it. A run's exit status and standard error are logged; a
//! failing or hanging hook never blocks the sink (a run is killed after
//! [`HOOK_TIMEOUT`], and at shutdown). The program gets the sink directory in
//! `FEDGW_FILES_DIR`.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::shutdown::Shutdown;

/// How long one run of the hook may take before it is killed.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// How much of the hook's standard error is logged.
const STDERR_LOGGED: usize = 4096;

/// The handle the sink signals changes through.
#[derive(Debug, Clone)]
pub(super) struct Hook {
    pending: Arc<Notify>,
}

impl Hook {
    /// Ask for a run; returns at once. Several calls before the next run start it once.
    pub(super) fn changed(&self) {
        self.pending.notify_one();
    }
}

/// Start the runner of `argv` for the sink in `dir`, owned by `shutdown`.
pub(super) fn spawn(argv: Vec<String>, dir: PathBuf, shutdown: &Shutdown) -> Hook {
    let pending = Arc::new(Notify::new());
    let waiting = Arc::clone(&pending);
    let cancel = shutdown.token();
    shutdown.spawn(async move {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = waiting.notified() => {}
            }
            run_once(&argv, &dir, &cancel).await;
        }
    });
    Hook { pending }
}

async fn run_once(argv: &[String], dir: &PathBuf, cancel: &CancellationToken) {
    let Some((program, args)) = argv.split_first() else {
        return;
    };
    let child = Command::new(program)
        .args(args)
        .env("FEDGW_FILES_DIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(child) => child,
        Err(err) => {
            tracing::error!(dir = %dir.display(), program, error = %err, "files sink: on_change hook could not start");
            return;
        }
    };
    // Dropping the future drops the child, which kills it (kill_on_drop).
    let output = tokio::select! {
        () = cancel.cancelled() => return,
        output = tokio::time::timeout(HOOK_TIMEOUT, child.wait_with_output()) => output,
    };
    match output {
        Err(_elapsed) => {
            tracing::error!(dir = %dir.display(), program, timeout = ?HOOK_TIMEOUT, "files sink: on_change hook killed: it ran too long");
        }
        Ok(Err(err)) => {
            tracing::error!(dir = %dir.display(), program, error = %err, "files sink: on_change hook could not be waited for");
        }
        Ok(Ok(output)) => {
            let stderr = &output.stderr[..output.stderr.len().min(STDERR_LOGGED)];
            let stderr = String::from_utf8_lossy(stderr);
            let stderr = stderr.trim_end();
            if output.status.success() {
                tracing::info!(dir = %dir.display(), program, status = %output.status, stderr, "files sink: on_change hook ran");
            } else {
                tracing::warn!(dir = %dir.display(), program, status = %output.status, stderr, "files sink: on_change hook failed");
            }
            tracing::debug!(dir = %dir.display(), program, stdout = %String::from_utf8_lossy(&output.stdout).trim_end(), "files sink: on_change hook output");
        }
    }
}
