//! The kind testbed's gateway configurations, as the chart renders them for each
//! cluster (`helm template charts/fedgw -f testbed/kind/overlays/*/values.yaml`),
//! load with fedgw's own loader and agree with the manifests: the admin socket the
//! exec probes use, the SPIRE agent's Workload API socket (mounted from the node) as
//! the local source and as the source of the `https_spiffe` SVID, `[kubernetes]`
//! watching the ClusterFederatedTrustDomains, two replicas. Each overlay's
//! `federation.yaml` is read with fedgw's own ClusterFederatedTrustDomain reader into
//! relationships with exactly the other clusters (a full mesh); SPIRE server (through
//! its own fedgw's relay, over `https_spiffe`) and the demo's Envoy federate with the
//! same peers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed check should fail the test loudly"
)]

use std::collections::BTreeSet;
use std::path::Path;

use fedgw::app::Config;
use fedgw::config::{AdminListen, LocalSource, ProfileName};
use fedgw::registry::cftd;

#[path = "support/kube.rs"]
mod kube;

const CLUSTERS: [&str; 3] = ["east", "west", "north"];

/// The SPIRE agent's Workload API socket, as fedgw's configuration names it; the
/// Deployment mounts its directory from the node.
const AGENT_SOCKET: &str = "unix:///run/spire/agent-sockets/api.sock";

fn kind_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testbed/kind")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

#[test]
fn the_overlays_are_the_three_clusters() {
    let overlays: BTreeSet<String> = std::fs::read_dir(kind_dir().join("overlays"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        overlays,
        CLUSTERS.iter().map(|c| (*c).to_owned()).collect(),
        "update CLUSTERS, the scripts and docs/testbed-kind.md together"
    );
}

/// What the chart renders for `me` (`helm template charts/fedgw -f
/// overlays/<me>/values.yaml`, Helm built by `scripts/peers.sh helm`): the
/// configuration, loaded with fedgw's loader, and the Deployment.
fn rendered(me: &str) -> (Config, String, serde_yaml_ng::Value) {
    use serde::Deserialize as _;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let values = kind_dir().join("overlays").join(me).join("values.yaml");
    let out = std::process::Command::new(kube::helm())
        .args(["template", "fedgw"])
        .arg(root.join("charts/fedgw"))
        .args(["--namespace", "fedgw", "-f"])
        .arg(&values)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{me}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<serde_yaml_ng::Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde_yaml_ng::Value::deserialize(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .collect();
    let find = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{me}: no {kind} {name}"))
            .clone()
    };
    let toml = find("ConfigMap", "fedgw-config")["data"]["fedgw.toml"]
        .as_str()
        .unwrap()
        .to_owned();
    let config = Config::from_toml(&toml).unwrap_or_else(|err| panic!("{me}: {err}\n{toml}"));
    (config, toml, find("Deployment", "fedgw"))
}

#[test]
fn testbed_kind_fedgw_configs_load() {
    for me in CLUSTERS {
        let (config, text, deployment) = rendered(me);
        let pod = &deployment["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let yaml = serde_yaml_ng::to_string(&deployment).unwrap();
        assert_eq!(config.local.len(), 1, "{me}");
        assert_eq!(
            config.local[0].trust_domain.as_str(),
            format!("{me}.kind.test")
        );
        match config.admin_listen() {
            AdminListen::Unix(socket) => {
                let probe = format!("unix:{}", socket.display());
                assert!(yaml.contains(&probe), "{me}: probes must use {probe}");
            }
            other => panic!("{me}: admin must be a unix socket, got {other:?}"),
        }
        assert_eq!(
            config.local[0].source,
            LocalSource::WorkloadApi {
                workload_api_socket: AGENT_SOCKET.to_owned()
            },
            "{me}: the local bundle comes from the SPIRE agent"
        );
        let spiffe = config
            .endpoint
            .https_spiffe
            .as_ref()
            .unwrap_or_else(|| panic!("{me}: no [endpoint.https_spiffe]"));
        assert_eq!(
            spiffe.workload_api_socket.as_deref(),
            Some(AGENT_SOCKET),
            "{me}: the https_spiffe SVID comes from the SPIRE agent"
        );
        assert_eq!(
            spiffe.endpoint_spiffe_id.to_string(),
            format!("spiffe://{me}.kind.test/ns/fedgw/sa/fedgw"),
            "{me}: register.sh's entry"
        );
        assert!(
            container["volumeMounts"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|m| m["mountPath"] == "/run/spire/agent-sockets" && m["readOnly"] == true),
            "{me}: the agent's socket directory is mounted at /run/spire/agent-sockets"
        );
        // The relationships are the cluster's ClusterFederatedTrustDomains (applied
        // from federation.yaml), watched through [kubernetes].
        assert!(config.federation.is_empty() && config.relationship_files.is_empty());
        let kubernetes = config.kubernetes.as_ref().expect("[kubernetes]");
        assert!(kubernetes.relationships && kubernetes.status);
        assert!(kubernetes.cluster_trust_bundles.is_some());
        assert_eq!(kubernetes.lease.namespace, "fedgw");
        assert_eq!(deployment["spec"]["replicas"], 2, "{me}: two replicas");
        assert!(
            text.contains(&format!("\"fedgw.{me}.kind.test\"")),
            "{me}: the peers reach it by this name"
        );
        assert!(
            container["env"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|e| e["name"] == "SSL_CERT_FILE" && e["value"] == "/etc/fedgw-tls/ca.crt"),
            "{me}: the testbed CA is fedgw's trust store for https_web"
        );
    }
}

/// Each federation.yaml, read by fedgw's ClusterFederatedTrustDomain reader (the
/// objects up.sh applies and fedgw watches): one https_web relationship with each
/// other cluster's gateway.
#[test]
fn testbed_kind_federation_yaml_is_a_full_mesh() {
    let kind = kind_dir();
    let register = read(&kind.join("register.sh"));
    assert!(
        register.contains("clusters=(east west north)"),
        "register.sh"
    );
    assert!(
        register.contains("\"spiffe://$td/ns/fedgw/sa/fedgw\""),
        "register.sh registers fedgw"
    );
    for me in CLUSTERS {
        let overlay = kind.join("overlays").join(me);
        let path = overlay.join("federation.yaml");
        let parsed: Vec<cftd::Cftd> = cftd::read_files(std::slice::from_ref(&path))
            .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
            .into_iter()
            .map(|found| found.object)
            .collect();
        let peers: Vec<&str> = CLUSTERS.iter().copied().filter(|c| *c != me).collect();
        let got: Vec<String> = parsed
            .iter()
            .map(|c| c.spec.trust_domain.to_string())
            .collect();
        let want: Vec<String> = peers.iter().map(|p| format!("{p}.kind.test")).collect();
        assert_eq!(got, want, "{}", path.display());
        for (object, peer) in parsed.iter().zip(&peers) {
            assert_eq!(object.name, *peer);
            assert_eq!(object.spec.profile, ProfileName::HttpsWeb);
            assert_eq!(
                object.spec.url.as_ref().unwrap().as_str(),
                format!("https://fedgw.{peer}.kind.test:30443/"),
                "{}",
                path.display()
            );
            assert!(object.notes.is_empty(), "{:?}", object.notes);
        }
        // SPIRE server takes each peer's bundle from this cluster's fedgw relay, over
        // https_spiffe with fedgw's own SPIFFE ID.
        let server = read(&overlay.join("server.conf"));
        for peer in &peers {
            assert!(
                server.contains(&format!(
                    "bundle_endpoint_url = \"https://fedgw-spiffe.fedgw.svc:8444/relay/{peer}.kind.test\""
                )),
                "{me}/server.conf federates with {peer}"
            );
        }
        assert_eq!(
            server
                .matches("bundle_endpoint_profile \"https_spiffe\"")
                .count(),
            peers.len(),
            "{me}/server.conf"
        );
        assert_eq!(
            server
                .matches(&format!(
                    "endpoint_spiffe_id = \"spiffe://{me}.kind.test/ns/fedgw/sa/fedgw\""
                ))
                .count(),
            peers.len(),
            "{me}/server.conf"
        );
        let envoy = read(&overlay.join("envoy.yaml"));
        for peer in &peers {
            assert!(
                envoy.contains(&format!("spiffe://{peer}.kind.test/ns/demo/sa/demo")),
                "{me}/envoy.yaml accepts {peer}"
            );
        }
    }
}
