//! End to end: `fedgw demo` (the one-process demonstration), run as the real binary: three
//! gateways with embedded defaults federate in a full mesh over both profiles.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

use std::process::Command;

use serde_json::Value;

#[test]
fn fed_1_demo_federates_three_domains_over_both_profiles() {
    // Without --data-dir, --once works in a temporary directory and removes it: the
    // working directory and the temporary directory are as empty afterwards.
    let cwd = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_fedgw"))
        .args(["demo", "--once", "--json"])
        .current_dir(cwd.path())
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    let left = |dir: &std::path::Path| std::fs::read_dir(dir).unwrap().count();
    assert_eq!(left(cwd.path()), 0, "fedgw demo --once left files behind");
    assert_eq!(
        left(tmp.path()),
        0,
        "fedgw demo --once left its temporary directory"
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json_line = stdout.lines().find(|l| l.starts_with('{')).unwrap();
    let held: Value = serde_json::from_str(json_line).unwrap();
    let bundles = held["bundles"].as_array().unwrap();
    // 3 gateways × (1 local + 2 foreign).
    assert_eq!(bundles.len(), 9, "{bundles:#?}");
    let foreign: Vec<&Value> = bundles.iter().filter(|b| b["role"] == "foreign").collect();
    assert_eq!(foreign.len(), 6);
    for bundle in &foreign {
        let source = bundle["source"].as_str().unwrap();
        assert!(source.starts_with("fetched from https://"), "{source}");
        assert_eq!(bundle["x509_authorities"], 1);
        assert_ne!(bundle["gateway"], bundle["trust_domain"]);
    }
    // Both profiles were used: web endpoints are reached by name, spiffe ones by IP.
    assert!(
        foreign
            .iter()
            .any(|b| b["source"].as_str().unwrap().contains("//localhost:"))
    );
    assert!(
        foreign
            .iter()
            .any(|b| b["source"].as_str().unwrap().contains("//127.0.0.1:"))
    );
    assert!(stdout.contains("federation converged"));
}
