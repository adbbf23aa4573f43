//! `cargo run --example multi-cluster [-- DIR]`: three trust domains, three `fedgw`
//! processes, and cross-domain mTLS with only the bundles the gateways distributed.
//! See README.md in this directory; the steps are in `demo.rs`, which
//! `tests/multi_cluster.rs` runs too.
//!
//! It runs the `fedgw` binary next to this example's directory (`target/debug/fedgw`
//! for `target/debug/examples/multi-cluster`), so build it first with `cargo build`;
//! `FEDGW_BIN` names another one. With `DIR`, everything the run makes (CAs, configs,
//! logs, bundle files) is kept there; without it, a temporary directory is removed at
//! the end.

mod demo;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("\nerror: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let fedgw = fedgw_binary()?;
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/multi-cluster");
    let (work_dir, _temporary) = match std::env::args_os().nth(1) {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            std::fs::create_dir_all(&dir)?;
            if std::fs::read_dir(&dir)?.next().is_some() {
                bail!("{} is not empty", dir.display());
            }
            (std::path::absolute(&dir)?, None)
        }
        None => {
            let temporary = tempfile::tempdir()?;
            (temporary.path().to_path_buf(), Some(temporary))
        }
    };
    let options = demo::Options {
        fedgw,
        configs,
        work_dir,
        openssl: demo::Openssl::IfInstalled,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(demo::run(&options))?;
    Ok(())
}

/// `FEDGW_BIN`, else `fedgw` in the target directory this example was built in.
fn fedgw_binary() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os("FEDGW_BIN") {
        Some(path) => PathBuf::from(path),
        None => {
            let exe = std::env::current_exe()?;
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .context("cannot tell the target directory of this example")?;
            profile_dir.join(format!("fedgw{}", std::env::consts::EXE_SUFFIX))
        }
    };
    if !path.is_file() {
        bail!(
            "{} does not exist: build the gateway first with `cargo build` (or set FEDGW_BIN)",
            path.display()
        );
    }
    Ok(path)
}
