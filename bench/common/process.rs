//! Running the release `fedgw serve` process for a benchmark: spawning it with its
//! output in a log file, and signalling it (`kill -<NAME> <PID>`).
//!
//! Included by `bench/scale.rs`, `bench/replicas.rs` and `bench/disk.rs` (`#[path]`
//! modules: the benchmarks are single-file examples).

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

/// `fedgw serve --config <config>`, stdout and stderr to `log`, killed when dropped.
pub(crate) fn spawn(fedgw: &Path, config: &Path, log: &Path) -> anyhow::Result<Child> {
    let log = std::fs::File::create(log)?;
    let child = Command::new(fedgw)
        .arg("serve")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawn {}", fedgw.display()))?;
    Ok(child)
}

/// `kill -<name> <pid>`.
pub(crate) async fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .await?;
    if !status.success() {
        bail!("kill -{name} {pid}: {status}");
    }
    Ok(())
}
