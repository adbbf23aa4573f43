//! The kind testbed's gateway configurations (`testbed/kind/overlays/*/fedgw.toml`,
//! mounted into the fedgw pods from a ConfigMap) load with fedgw's own loader, and
//! agree with the manifests: the admin socket the exec probes use, the SPIRE agent's
//! Workload API socket (mounted from the node) as the local source and as the source
//! of the `https_spiffe` SVID, `relationship_files` naming the mounted
//! `federation.yaml`. Each overlay's `federation.yaml` is read with fedgw's own
//! `relationship_files` reader into relationships with exactly the other clusters (a
//! full mesh); SPIRE server (through its own fedgw's relay, over `https_spiffe`) and
//! the demo's Envoy federate with the same peers.

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

#[test]
fn testbed_kind_fedgw_configs_load() {
    let kind = kind_dir();
    let deployment = read(&kind.join("base/deployment.yaml"));
    for me in CLUSTERS {
        let path = kind.join("overlays").join(me).join("fedgw.toml");
        let text = read(&path);
        let config =
            Config::from_toml(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        assert_eq!(config.local.len(), 1, "{}", path.display());
        assert_eq!(
            config.local[0].trust_domain.as_str(),
            format!("{me}.kind.test")
        );
        match config.admin_listen() {
            AdminListen::Unix(socket) => {
                let probe = format!("unix:{}", socket.display());
                assert!(deployment.contains(&probe), "probes must use {probe}");
            }
            other => panic!(
                "{}: admin must be a unix socket, got {other:?}",
                path.display()
            ),
        }
        assert_eq!(
            config.local[0].source,
            LocalSource::WorkloadApi {
                workload_api_socket: AGENT_SOCKET.to_owned()
            },
            "{}: the local bundle comes from the SPIRE agent",
            path.display()
        );
        let spiffe = config
            .endpoint
            .https_spiffe
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no [endpoint.https_spiffe]", path.display()));
        assert_eq!(
            spiffe.workload_api_socket.as_deref(),
            Some(AGENT_SOCKET),
            "{}: the https_spiffe SVID comes from the SPIRE agent",
            path.display()
        );
        assert_eq!(
            spiffe.endpoint_spiffe_id.to_string(),
            format!("spiffe://{me}.kind.test/ns/fedgw/sa/fedgw"),
            "{}: register.sh's entry",
            path.display()
        );
        assert!(
            deployment.contains("mountPath: /run/spire/agent-sockets, readOnly: true}"),
            "the agent's socket directory is mounted at /run/spire/agent-sockets"
        );
        assert!(
            config.federation.is_empty(),
            "{}: the relationships are in federation.yaml",
            path.display()
        );
        assert_eq!(
            config.relationship_files,
            [Path::new("/etc/fedgw/federation.yaml")],
            "{}",
            path.display()
        );
        assert!(
            deployment.contains("{name: config, mountPath: /etc/fedgw, readOnly: true}"),
            "ConfigMap fedgw-config is mounted at /etc/fedgw"
        );
        assert!(
            text.contains(&format!("\"fedgw.{me}.kind.test\"")),
            "{}: the peers reach it by this name",
            path.display()
        );
    }
}

/// Each federation.yaml, read by the reader `relationship_files` uses (the local
/// copy of what is mounted at /etc/fedgw/federation.yaml): one https_web
/// relationship with each other cluster's gateway.
#[test]
fn testbed_kind_federation_yaml_is_a_full_mesh() {
    let kind = kind_dir();
    let deployment = read(&kind.join("base/deployment.yaml"));
    assert!(
        deployment.contains("{name: SSL_CERT_FILE, value: /etc/fedgw-tls/ca.crt}"),
        "the testbed CA is fedgw's trust store for https_web"
    );
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
        let kustomization = read(&overlay.join("kustomization.yaml"));
        assert!(
            kustomization.contains("- federation.yaml"),
            "{me}: federation.yaml is in ConfigMap fedgw-config"
        );
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
