//! `fedgw serve` without `--config`, with the flags the local testbed starts each of
//! its gateways with (`testbed/local/lib.sh`), run as the real binary.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use fedgw_testkit::{Process, wait_for};
use serde_json::Value;

fn fedgw(args: &[&str], admin: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fedgw"))
        .args(args)
        .env("FEDGW_ADMIN", format!("unix:{}", admin.display()))
        .output()
        .unwrap()
}

#[tokio::test]
async fn serve_flags_set_trust_domain_listeners_and_refresh_hint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("one");
    // Stopped however the test ends (killed on drop, its log printed on failure).
    let gateway = Process::spawn(
        "fedgw serve",
        Command::new(env!("CARGO_BIN_EXE_fedgw"))
            .args(["serve", "--data-dir"])
            .arg(&data)
            .args([
                "--trust-domain",
                "one.testbed.localhost",
                "--web-listen",
                "127.0.0.1:0",
                "--spiffe-listen",
                "127.0.0.1:0",
                "--refresh-hint",
                "4s",
                "--min-refresh",
                "1s",
                "--log",
                "error",
            ]),
        &dir.path().join("serve.log"),
    );
    let admin = data.join("admin.sock");
    let status = wait_for(
        Duration::from_secs(30),
        "the admin socket to answer",
        || async {
            gateway.assert_running();
            let out = fedgw(&["status", "--json"], &admin);
            out.status
                .success()
                .then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap())
        },
    )
    .await;
    let domains = status["domains"].as_array().unwrap();
    assert_eq!(domains.len(), 1, "{status:#}");
    assert_eq!(domains[0]["trust_domain"], "one.testbed.localhost");
    assert_eq!(domains[0]["role"], "local");

    // The development PKI is named after the trust domain, and the bundle is served
    // with the refresh hint given.
    let pki = data.join("dev-pki/one.testbed.localhost");
    for file in ["ca.pem", "bundle.json", "web-ca.pem", "svid.pem"] {
        assert!(pki.join(file).exists(), "{file}");
    }
    let out = fedgw(&["bundle", "show", "one.testbed.localhost"], &admin);
    assert!(out.status.success(), "{out:?}");
    let bundle: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(bundle["spiffe_refresh_hint"], 4, "{bundle:#}");
}

#[test]
fn serve_flags_are_refused_with_a_config_file() {
    let out = Command::new(env!("CARGO_BIN_EXE_fedgw"))
        .args([
            "serve",
            "--config",
            "/nonexistent/fedgw.toml",
            "--trust-domain",
            "x.localhost",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--trust-domain"), "{stderr}");
}

/// `run.sh --help` prints its comment block and nothing of the script, and every
/// command it suggests is one fedgw accepts (`--admin` goes after the verb).
#[test]
fn run_sh_help_shows_only_the_usage_and_working_commands() {
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/testbed/local/run.sh"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(
        help.contains("testbed/local/run.sh [--gateways N] [--once]"),
        "{help}"
    );
    assert!(!help.contains("set -euo pipefail"), "{help}");
    assert!(!help.contains("fedgw --admin"), "{help}");
    assert!(help.contains("fedgw status --admin unix:PATH"), "{help}");
    // The suggested command parses (and fails only because nothing listens there).
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let out = Command::new(env!("CARGO_BIN_EXE_fedgw"))
        .args(["status", "--admin"])
        .arg(format!("unix:{}", socket.display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}
