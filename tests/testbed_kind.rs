//! The kind testbed's gateway configurations (`testbed/kind/overlays/*/fedgw.toml`,
//! mounted into the fedgw pods from a ConfigMap) load with fedgw's own loader, and
//! agree with the manifests: the admin socket the exec probes use, the SPIRE bundle
//! file as a PEM local source, and a relationship with the peer cluster.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed check should fail the test loudly"
)]

use std::path::Path;

use fedgw::config::{AdminListen, Config};

#[test]
fn testbed_kind_fedgw_configs_load() {
    let overlays = Path::new(env!("CARGO_MANIFEST_DIR")).join("testbed/kind/overlays");
    let deployment = std::fs::read_to_string(overlays.join("../base/deployment.yaml")).unwrap();
    for (me, peer) in [("east", "west"), ("west", "east")] {
        let path = overlays.join(me).join("fedgw.toml");
        let text = std::fs::read_to_string(&path).unwrap();
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
        assert!(
            text.contains("/run/spire/bundle/bundle.crt"),
            "{}",
            path.display()
        );
        assert!(text.contains(r#"format = "pem""#), "{}", path.display());
        assert!(
            text.contains(&format!("trust_domain = \"{peer}.kind.test\"")),
            "{}",
            path.display()
        );
    }
}
