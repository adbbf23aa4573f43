//! Against a real Kubernetes API server (etcd and kube-apiserver of Kubernetes 1.37,
//! built from the Go module proxy by `scripts/peers.sh kube etcd`; see
//! `tests/support/kube.rs`): no fake API server.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

#[path = "support/kube.rs"]
mod kube;

use kube::{ApiServer, Identity};

/// What the later tests stand on: the test API server runs with RBAC, serves
/// ClusterTrustBundles at `certificates.k8s.io/v1`, and tells the identities apart (the
/// admin may do anything; the fedgw service account, granted nothing yet, is refused).
#[test]
fn the_test_api_server_serves_cluster_trust_bundles_and_enforces_rbac() {
    let server = ApiServer::start();

    let resources = server.kubectl_ok(
        Identity::Admin,
        &[
            "api-resources",
            "--api-group=certificates.k8s.io",
            "-o",
            "wide",
        ],
    );
    let ctb = resources
        .lines()
        .find(|line| line.starts_with("clustertrustbundles "))
        .unwrap_or_else(|| panic!("no clustertrustbundles resource:\n{resources}"));
    assert!(ctb.contains("certificates.k8s.io/v1 "), "{ctb}");
    assert!(
        ctb.contains("false"),
        "cluster-scoped (not namespaced): {ctb}"
    );

    // RBAC: the admin may, the fedgw service account (no binding yet) may not.
    let can = |who, verb: &str| {
        let out = server.kubectl(who, &["auth", "can-i", verb, "clustertrustbundles"]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(can(Identity::Admin, "create"), "yes");
    assert_eq!(can(Identity::Fedgw, "list"), "no");
    let refused = server.kubectl(Identity::Fedgw, &["get", "clustertrustbundles"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("Forbidden") && stderr.contains("system:serviceaccount:fedgw-system:fedgw"),
        "{stderr}"
    );
}
