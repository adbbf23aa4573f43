//! The Helm chart (`charts/fedgw`): `helm lint` (Helm v4 built from the Go module proxy
//! by `scripts/peers.sh helm`), and what `helm template` renders, sent to a real
//! Kubernetes 1.37 API server in a server-side dry run (schemas, strict field
//! validation, admission), with the default values and with every part turned on. The
//! rendered fedgw.toml is loaded with fedgw's own loader.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

#[path = "support/kube.rs"]
mod kube;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kube::{ApiServer, Identity};

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/fedgw")
}

fn helm(args: &[&str]) -> Output {
    Command::new(kube::helm())
        .args(args)
        // No user configuration or cache of the machine's.
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("fedgw-helm-config"),
        )
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("fedgw-helm-cache"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("fedgw-helm-data"),
        )
        .output()
        .unwrap()
}

fn helm_ok(args: &[&str]) -> String {
    let out = helm(args);
    assert!(
        out.status.success(),
        "helm {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every part turned on: local domains from a SPIRE agent, both endpoints,
/// ClusterFederatedTrustDomains and [[federation]] relationships, ConfigMaps in two
/// namespaces, PostgreSQL, metrics with a ServiceMonitor (left out of the dry run: its
/// CRD is Prometheus Operator's), extra configuration.
const FULL: &str = r#"
replicaCount: 3
local:
  - trustDomain: east.example
    workloadApiSocket: unix:///run/spire/agent-sockets/api.sock
spireAgentSocket:
  enabled: true
endpoints:
  httpsWeb:
    enabled: true
    tlsSecret: fedgw-tls
    publicNames: [bundle.east.example]
  httpsSpiffe:
    enabled: true
    workloadApiSocket: unix:///run/spire/agent-sockets/api.sock
    endpointSpiffeId: spiffe://east.example/ns/fedgw-system/sa/fedgw
relationships:
  clusterFederatedTrustDomains:
    - name: west
      trustDomain: west.example
      bundleEndpointURL: https://bundle.west.example/
  federation:
    - trustDomain: north.example
      url: https://bundle.north.example/
sinks:
  sds:
    enabled: true
    trustDomains: [west.example]
  files:
    - dir: /var/run/fedgw-bundles
extraVolumes:
  - {name: bundles, emptyDir: {}}
extraVolumeMounts:
  - {name: bundles, mountPath: /var/run/fedgw-bundles}
kubernetes:
  lease:
    duration: 20s
  clusterTrustBundles:
    signerName: example.com/federation
  configMaps:
    - {namespace: spire, name: fedgw-bundle}
    - {namespace: spire, name: fedgw-bundle-west}
    - {namespace: istio-system, name: federated-roots, key: roots.pem}
storage:
  postgres:
    enabled: true
    url: postgres://fedgw@db.example:5432/fedgw
    passwordSecret: {name: fedgw-db}
    caSecret: fedgw-db-ca
metrics:
  enabled: true
  tokenSha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
  tokenSecret: {name: fedgw-metrics}
  serviceMonitor:
    enabled: SERVICE_MONITOR
extraConfig: |
  [polling]
  min_refresh = "30s"
"#;

/// The documents of a rendering, by kind.
fn documents(rendered: &str) -> Vec<serde_yaml_ng::Value> {
    serde_yaml_ng::Deserializer::from_str(rendered)
        .map(|doc| {
            use serde::Deserialize as _;
            serde_yaml_ng::Value::deserialize(doc).unwrap()
        })
        .filter(|doc| !doc.is_null())
        .collect()
}

fn kind(doc: &serde_yaml_ng::Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

/// The fedgw.toml of a rendering, loaded with fedgw's loader.
fn config(docs: &[serde_yaml_ng::Value]) -> fedgw::app::Config {
    let map = docs
        .iter()
        .find(|d| kind(d) == "ConfigMap" && d["metadata"]["name"] == "fedgw-config")
        .expect("the configuration ConfigMap");
    let text = map["data"]["fedgw.toml"].as_str().unwrap();
    fedgw::app::Config::from_toml(text).unwrap_or_else(|err| panic!("{err}\n{text}"))
}

#[test]
fn the_chart_lints_and_refuses_unknown_values() {
    let chart = chart();
    let chart = chart.to_str().unwrap();
    let out = helm_ok(&["lint", "--strict", chart]);
    assert!(out.contains("0 chart(s) failed"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.yaml");
    std::fs::write(&full, FULL.replace("SERVICE_MONITOR", "true")).unwrap();
    helm_ok(&["lint", "--strict", chart, "-f", full.to_str().unwrap()]);

    // A misspelt key is refused, naming it (values.schema.json).
    let typo = dir.path().join("typo.yaml");
    std::fs::write(&typo, "kubernetes:\n  leese:\n    duration: 20s\n").unwrap();
    let out = helm(&["template", chart, "-f", typo.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("leese"), "{stderr}");
    // A required value missing is named too.
    let out = helm(&["template", chart, "--set", "metrics.enabled=true"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("metrics.tokenSha256 is required"),
        "{stderr}"
    );
}

#[test]
fn the_rendered_chart_is_accepted_by_the_api_server_and_fedgw() {
    let server = ApiServer::start();
    let chart = chart();
    let chart = chart.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.yaml");
    std::fs::write(&full, FULL.replace("SERVICE_MONITOR", "false")).unwrap();
    let with_monitor = dir.path().join("monitor.yaml");
    std::fs::write(&with_monitor, FULL.replace("SERVICE_MONITOR", "true")).unwrap();

    // The CRDs the chart ships, installed for real (as helm install does first).
    let crds = helm_ok(&["show", "crds", chart]);
    let out = server.kubectl_stdin(
        Identity::Admin,
        &["apply", "--server-side", "-f", "-"],
        &crds,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert_eq!(
        std::fs::read_to_string(root.join("charts/fedgw/crds/clusterfederatedtrustdomains.yaml"))
            .unwrap(),
        std::fs::read_to_string(root.join("testbed/kind/kubernetes/crd.yaml")).unwrap(),
        "the chart's CRD and testbed/kind/kubernetes/crd.yaml are one file's copies"
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
    for namespace in ["fedgw-system", "spire", "istio-system"] {
        server.kubectl_ok(Identity::Admin, &["create", "namespace", namespace]);
    }

    for (values, expect_kinds) in [
        (
            None,
            &[
                "Deployment",
                "ClusterRole",
                "Role",
                "ConfigMap",
                "PodDisruptionBudget",
            ][..],
        ),
        (
            Some(full.to_str().unwrap()),
            &["Deployment", "Service", "ClusterFederatedTrustDomain"][..],
        ),
    ] {
        let mut args = vec!["template", "fedgw", chart, "--namespace", "fedgw-system"];
        if let Some(values) = values {
            args.extend(["-f", values]);
        }
        let rendered = helm_ok(&args);
        let docs = documents(&rendered);
        for wanted in expect_kinds {
            assert!(
                docs.iter().any(|d| kind(d) == *wanted),
                "{values:?}: no {wanted}"
            );
        }
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
            &rendered,
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{values:?}: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        let applied = stdout
            .lines()
            .filter(|line| line.ends_with("serverside-applied (server dry run)"))
            .count();
        assert_eq!(applied, docs.len(), "{values:?}:\n{stdout}");
        let config = config(&docs);
        let kubernetes = config.kubernetes.as_ref().expect("[kubernetes]");
        assert_eq!(kubernetes.lease.namespace, "fedgw-system");
        if values.is_some() {
            assert_eq!(config.local.len(), 1);
            assert_eq!(config.federation.len(), 1);
            assert_eq!(kubernetes.config_maps.len(), 3);
            assert_eq!(kubernetes.lease.duration.0, 20);
            assert_eq!(
                kubernetes
                    .cluster_trust_bundles
                    .as_ref()
                    .unwrap()
                    .signer_name,
                "example.com/federation"
            );
            assert!(config.storage.postgres.is_some());
            assert_eq!(config.polling.min_refresh.0, 30);
            let sds = config.sinks.sds.as_ref().expect("[sinks.sds]");
            assert_eq!(sds.trust_domains.as_ref().unwrap().len(), 1);
            assert_eq!(config.sinks.files.len(), 1);
            assert!(
                docs.iter()
                    .any(|d| kind(d) == "Service" && d["metadata"]["name"] == "fedgw-sds")
            );
            // One Role per namespace of ConfigMaps, naming exactly its ConfigMaps.
            let roles: Vec<_> = docs
                .iter()
                .filter(|d| kind(d) == "Role" && d["metadata"]["name"] == "fedgw-bundle")
                .collect();
            assert_eq!(roles.len(), 2);
            let spire = roles
                .iter()
                .find(|r| r["metadata"]["namespace"] == "spire")
                .unwrap();
            assert_eq!(
                serde_yaml_ng::to_string(&spire["rules"][1]["resourceNames"]).unwrap(),
                "- fedgw-bundle\n- fedgw-bundle-west\n"
            );
        }
        // Non-root, read-only root filesystem, nothing to escalate.
        let deployment = docs.iter().find(|d| kind(d) == "Deployment").unwrap();
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        let container = &pod["containers"][0];
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(
            container["securityContext"]["allowPrivilegeEscalation"],
            false
        );
        assert_eq!(pod["automountServiceAccountToken"], true);
        assert_eq!(
            serde_yaml_ng::to_string(&container["command"]).unwrap(),
            "- fedgw\n- serve\n- --config\n- /etc/fedgw/fedgw.toml\n"
        );
    }

    // The ServiceMonitor, when asked for, scrapes the admin port with the token.
    let rendered = helm_ok(&[
        "template",
        "fedgw",
        chart,
        "--namespace",
        "fedgw-system",
        "-f",
        with_monitor.to_str().unwrap(),
    ]);
    let docs = documents(&rendered);
    let monitor = docs
        .iter()
        .find(|d| kind(d) == "ServiceMonitor")
        .expect("a ServiceMonitor");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "admin");
    assert_eq!(
        monitor["spec"]["endpoints"][0]["authorization"]["credentials"]["name"],
        "fedgw-metrics"
    );
}
