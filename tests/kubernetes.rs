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

/// The kind testbed's manifests mean something: each overlay, as up.sh installs it
/// (SPIRE and the demo built by kubectl's own kustomize, fedgw rendered by the chart
/// with the overlay's values, the ClusterFederatedTrustDomains of federation.yaml), is
/// accepted by the real API server in a server-side dry run (schemas, strict field
/// validation, admission), as its namespaces' objects, cluster-scoped objects and all.
/// The namespaces and the chart's CRD are created for real first: a dry run persists
/// nothing, so objects in a namespace it would create, or of a kind it would define,
/// could not be checked.
#[test]
fn the_kind_testbed_overlays_pass_a_server_side_dry_run() {
    let server = ApiServer::start();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let crd = root.join("charts/fedgw/crds/clusterfederatedtrustdomains.yaml");
    server.kubectl_ok(
        Identity::Admin,
        &["apply", "--server-side", "-f", crd.to_str().unwrap()],
    );
    server.kubectl_ok(
        Identity::Admin,
        &[
            "wait",
            "--for=condition=Established",
            "crd/clusterfederatedtrustdomains.spire.spiffe.io",
            "--timeout=30s",
        ],
    );
    for overlay in ["east", "west", "north"] {
        let dir = root.join("testbed/kind/overlays").join(overlay);
        let built = server.kubectl_ok(Identity::Admin, &["kustomize", dir.to_str().unwrap()]);
        let chart = std::process::Command::new(kube::helm())
            .args(["template", "fedgw"])
            .arg(root.join("charts/fedgw"))
            .args(["--namespace", "fedgw", "-f"])
            .arg(dir.join("values.yaml"))
            .output()
            .unwrap();
        assert!(
            chart.status.success(),
            "{overlay}: {}",
            String::from_utf8_lossy(&chart.stderr)
        );
        let federation = std::fs::read_to_string(dir.join("federation.yaml")).unwrap();
        let manifests = format!(
            "{built}\n---\n{}\n---\n{federation}",
            String::from_utf8(chart.stdout).unwrap()
        );
        let documents: Vec<&str> = manifests
            .split("\n---\n")
            .filter(|doc| {
                doc.lines()
                    .any(|line| !line.trim().is_empty() && !line.starts_with('#'))
            })
            .collect();
        assert!(
            documents.len() > 10,
            "{overlay}: {} documents",
            documents.len()
        );
        let namespaces: Vec<&str> = documents
            .iter()
            .copied()
            .filter(|doc| doc.lines().any(|line| line == "kind: Namespace"))
            .collect();
        assert!(!namespaces.is_empty(), "{overlay}: no Namespace");
        let out = server.kubectl_stdin(
            Identity::Admin,
            &[
                "apply",
                "--server-side",
                "--field-manager=fedgw-test",
                "-f",
                "-",
            ],
            &namespaces.join("\n---\n"),
        );
        assert!(
            out.status.success(),
            "{overlay}: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let out = server.kubectl_stdin(
            Identity::Admin,
            &[
                "apply",
                "--server-side",
                "--dry-run=server",
                "--field-manager=fedgw-test",
                "-f",
                "-",
            ],
            &manifests,
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{overlay}: {stderr}\n{stdout}");
        let applied = stdout
            .lines()
            .filter(|line| line.ends_with("serverside-applied (server dry run)"))
            .count();
        assert_eq!(applied, documents.len(), "{overlay}:\n{stdout}");
        // Every workload the testbed runs is among them.
        for object in [
            "deployment.apps/fedgw",
            "statefulset.apps/spire-server",
            "daemonset.apps/spire-agent",
            "clusterrole.rbac.authorization.k8s.io/fedgw",
            "service/fedgw-spiffe",
            "clusterfederatedtrustdomain.spire.spiffe.io/",
        ] {
            assert!(stdout.contains(object), "{overlay}: no {object}:\n{stdout}");
        }
    }
}
