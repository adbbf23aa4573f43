//! Guards the dependency decisions in the design: one crypto provider (aws-lc-rs) for
//! the whole tree, no OpenSSL, and a protocol crate that knows nothing of storage,
//! an HTTP framework or configuration.

#![allow(clippy::unwrap_used, reason = "test code")]

use std::path::Path;

/// Every package actually built for the workspace on this host (all dependency kinds),
/// as resolved by cargo with the features in use. Cargo.lock alone is not enough: it
/// also lists optional dependencies that no enabled feature pulls in.
fn built_packages() -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = std::process::Command::new(cargo)
        .args([
            "tree",
            "--workspace",
            "--edges",
            "normal,build,dev",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn one_crypto_provider_and_no_openssl() {
    let packages = built_packages();
    assert!(
        packages.iter().any(|p| p == "aws-lc-rs"),
        "aws-lc-rs is the provider"
    );
    for banned in ["ring", "openssl", "openssl-sys", "native-tls"] {
        assert!(
            !packages.iter().any(|p| p == banned),
            "{banned} is built: the tree must use one crypto provider (aws-lc-rs)"
        );
    }
}

#[test]
fn federation_crate_has_no_service_dependencies() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("federation/Cargo.toml")).unwrap();
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    for banned in ["sled", "axum", "config", "toml"] {
        assert!(
            !deps.lines().any(|l| l.trim_start().starts_with(banned)),
            "federation/ must not depend on {banned}"
        );
    }
}
