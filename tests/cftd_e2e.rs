//! End to end: `fedgw federation apply -f FILE` with spire-controller-manager
//! ClusterFederatedTrustDomain YAML, run with the real `fedgw` binary against real
//! `fedgw serve` processes on loopback (`support/gateway.rs`), as an operator or the
//! kind testbed's up.sh does it.
//!
//! West serves an `https_spiffe` endpoint; east has no relationship until the YAML is
//! applied, then fetches and relays west's bundle, authenticating the endpoint with
//! the CFTD's `trustDomainBundle` as its bootstrap bundle. Applying the same file
//! again changes nothing; a changed URL replaces the relationship; a file with one bad
//! document is refused before anything is sent.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

#[path = "support/gateway.rs"]
mod gateway;

use std::path::Path;
use std::process::{Command, Output};

use fedgw_testkit::{DEADLINE, Process, wait_for};
use gateway::{Gateway, GatewayBuilder};
use serde_json::Value;

/// Run `fedgw federation apply <args> --admin unix:<gateway's socket>`.
fn apply(gw: &Gateway, args: &[&str]) -> Output {
    let socket = gw.data_dir.join("admin.sock");
    Command::new(env!("CARGO_BIN_EXE_fedgw"))
        .args(["federation", "apply"])
        .args(args)
        .arg("--admin")
        .arg(format!("unix:{}", socket.display()))
        .output()
        .unwrap()
}

fn apply_json(gw: &Gateway, file: &Path) -> Value {
    let output = apply(gw, &["-f", file.to_str().unwrap(), "--json"]);
    assert!(
        output.status.success(),
        "apply failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn outcomes(answer: &Value) -> Vec<(String, String)> {
    answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["trust_domain"].as_str().unwrap().to_owned(),
                r["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn listed(gw: &Gateway) -> Value {
    let socket = gw.data_dir.join("admin.sock");
    let output = Command::new(env!("CARGO_BIN_EXE_fedgw"))
        .args(["federation", "list", "--json", "--admin"])
        .arg(format!("unix:{}", socket.display()))
        .output()
        .unwrap();
    assert!(output.status.success());
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A ClusterFederatedTrustDomain for `peer`'s https_spiffe endpoint at `url`, with
/// its bundle file as `trustDomainBundle`.
fn cftd(name: &str, peer: &Gateway, url: &str) -> String {
    let bundle = std::fs::read_to_string(&peer.pki.bundle).unwrap();
    let indented: String = bundle.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: spire.spiffe.io/v1alpha1\n\
         kind: ClusterFederatedTrustDomain\n\
         metadata:\n  name: {name}\n\
         spec:\n  \
           className: spire-system-spire\n  \
           trustDomain: {td}\n  \
           bundleEndpointURL: {url}\n  \
           bundleEndpointProfile:\n    \
             type: https_spiffe\n    \
             endpointSPIFFEID: {id}\n  \
           trustDomainBundle: |\n{indented}",
        td = peer.trust_domain,
        id = peer.endpoint_id,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_cftd_yaml_creates_polls_is_idempotent_and_updates() {
    let dir = tempfile::tempdir().unwrap();
    let east = GatewayBuilder::new(dir.path(), "east.test").web();
    let west = GatewayBuilder::new(dir.path(), "west.test").spiffe();
    let (east, west) = tokio::join!(east.start(), west.start());
    let file = dir.path().join("federation.yaml");
    let url = format!("https://127.0.0.1:{}/", west.spiffe_port().unwrap());
    std::fs::write(&file, cftd("west", &west, &url)).unwrap();

    // Dry run: checked, nothing sent.
    let output = apply(&east, &["-f", file.to_str().unwrap(), "--dry-run"]);
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("valid: west.test (document 1"), "{text}");
    assert!(text.contains("spec.className"), "{text}");
    assert!(
        listed(&east)["relationships"]
            .as_array()
            .unwrap()
            .is_empty(),
        "a dry run creates nothing"
    );

    // The same from standard input.
    let mut child = Command::new(env!("CARGO_BIN_EXE_fedgw"))
        .args(["federation", "apply", "-f", "-", "--dry-run", "--json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        cftd("west", &west, &url).as_bytes(),
    )
    .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["dry_run"], true);
    assert_eq!(
        outcomes(&answer),
        [("west.test".to_owned(), "valid".to_owned())]
    );

    // Apply: created, fetched through the https_spiffe endpoint, relayed.
    let answer = apply_json(&east, &file);
    assert_eq!(
        outcomes(&answer),
        [("west.test".to_owned(), "created".to_owned())]
    );
    let west_bundle = west.local_bundle().await.unwrap();
    east.wait_relays(&west.trust_domain, &west_bundle).await;
    let shown = &listed(&east)["relationships"][0];
    assert_eq!(shown["origin"], "api", "{shown}");
    assert_eq!(shown["profile"], "https_spiffe", "{shown}");
    assert_eq!(shown["endpoint_spiffe_id"], west.endpoint_id.to_string());

    // The same file again: nothing changes.
    let answer = apply_json(&east, &file);
    assert_eq!(
        outcomes(&answer),
        [("west.test".to_owned(), "unchanged".to_owned())]
    );

    // Another URL for the same endpoint: replaced, and still relayed.
    let moved = url.replace("127.0.0.1", "localhost");
    std::fs::write(&file, cftd("west", &west, &moved)).unwrap();
    let answer = apply_json(&east, &file);
    assert_eq!(
        outcomes(&answer),
        [("west.test".to_owned(), "updated".to_owned())]
    );
    let shown = &listed(&east)["relationships"][0];
    assert_eq!(shown["urls"][0], moved, "{shown}");
    east.wait_relays(&west.trust_domain, &west_bundle).await;

    // One bad document refuses the whole file, naming it; nothing is sent.
    let bad = format!(
        "{}---\napiVersion: spire.spiffe.io/v1alpha1\nkind: ClusterFederatedTrustDomain\nmetadata:\n  name: broken\nspec:\n  trustDomain: other.test\n  bundleEndpointURL: https://127.0.0.1:1/\n  bundleEndpointProfile:\n    type: https_spiffe\n",
        cftd("west", &west, &url)
    );
    std::fs::write(&file, bad).unwrap();
    let output = apply(&east, &["-f", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "document 2 (metadata.name \"broken\"): spec.bundleEndpointProfile.endpointSPIFFEID"
        ),
        "{stderr}"
    );
    let shown = &listed(&east)["relationships"];
    assert_eq!(shown.as_array().unwrap().len(), 1, "{shown}");
    assert_eq!(shown[0]["urls"][0], moved, "document 1 was not applied");

    // A document the gateway refuses (its own trust domain, EXT-7) stops the run,
    // naming it and what was applied before it.
    let own = format!(
        "{}---\napiVersion: spire.spiffe.io/v1alpha1\nkind: ClusterFederatedTrustDomain\nmetadata:\n  name: self\nspec:\n  trustDomain: east.test\n  bundleEndpointURL: https://127.0.0.1:1/\n  bundleEndpointProfile:\n    type: https_web\n",
        cftd("west", &west, &moved)
    );
    std::fs::write(&file, own).unwrap();
    let output = apply(&east, &["-f", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("east.test (document 2, metadata.name \"self\")"),
        "{stderr}"
    );
    assert!(stderr.contains("trust_domain"), "{stderr}");
    assert!(
        stderr.contains("applied before it: west.test unchanged"),
        "{stderr}"
    );
}

/// A relationship of the configuration file is not changed by `apply`: the API's
/// refusal is reported, naming the object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_refuses_to_change_a_configured_relationship() {
    let dir = tempfile::tempdir().unwrap();
    let west = GatewayBuilder::new(dir.path(), "west.test").spiffe();
    let mut east = GatewayBuilder::new(dir.path(), "east.test").web();
    east.federate(&west, gateway::Via::Spiffe);
    let (east, west) = tokio::join!(east.start(), west.start());
    let file = dir.path().join("federation.yaml");
    std::fs::write(
        &file,
        cftd(
            "west",
            &west,
            &format!("https://localhost:{}/", west.spiffe_port().unwrap()),
        ),
    )
    .unwrap();
    let output = apply(&east, &["-f", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("west.test (document 1, metadata.name \"west\")"),
        "{stderr}"
    );
    assert!(stderr.contains("configuration file"), "{stderr}");
    assert!(stderr.contains("applied before it: nothing"), "{stderr}");
}

/// A `fedgw serve` process started here with `SSL_CERT_FILE` (or without), killed on
/// drop (its log, `serve.log`, printed if the test fails); the harness's `Gateway`
/// starts processes with the test's environment.
struct Serve {
    _process: Process,
    socket: std::path::PathBuf,
}

impl Serve {
    async fn start(builder: &GatewayBuilder, dir: &Path, cert_file: Option<&Path>) -> Self {
        Self::start_with(builder, dir, cert_file, "").await
    }

    /// [`Serve::start`] with `top` (top-level keys) before the builder's tables.
    async fn start_with(
        builder: &GatewayBuilder,
        dir: &Path,
        cert_file: Option<&Path>,
        top: &str,
    ) -> Self {
        let mut command = serve_command(builder, dir, top);
        command
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR");
        if let Some(file) = cert_file {
            command.env("SSL_CERT_FILE", file);
        }
        let serve = Self {
            _process: Process::spawn("fedgw serve", &mut command, &dir.join("serve.log")),
            // The builder's data_dir is <dir>/<trust domain>/data.
            socket: dir
                .join(builder.trust_domain().as_str())
                .join("data/admin.sock"),
        };
        wait_for(DEADLINE, "the admin socket", || async {
            serve.fedgw(&["status"]).status.success().then_some(())
        })
        .await;
        serve
    }

    fn fedgw(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_fedgw"))
            .args(args)
            .arg("--admin")
            .arg(format!("unix:{}", self.socket.display()))
            .output()
            .unwrap()
    }

    fn relationship(&self, td: &str) -> Value {
        let output = self.fedgw(&["federation", "show", td, "--json"]);
        assert!(output.status.success(), "{output:?}");
        serde_json::from_slice(&output.stdout).unwrap()
    }
}

/// `fedgw serve` with the builder's configuration, `top` (top-level keys) first.
fn serve_command(builder: &GatewayBuilder, dir: &Path, top: &str) -> Command {
    let config = dir.join("fedgw.toml");
    std::fs::write(&config, format!("{top}\n{}", builder.config_toml())).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_fedgw"));
    command.args(["serve", "--config"]).arg(&config);
    command
}

/// A ClusterFederatedTrustDomain has no field for extra CA roots: an `https_web`
/// endpoint with a private CA is trusted only when the CA is in fedgw's system store,
/// which `SSL_CERT_FILE` replaces (as the kind testbed does). Without it the fetch
/// fails on the certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_web_cftd_trusts_a_private_ca_through_ssl_cert_file() {
    let dir = tempfile::tempdir().unwrap();
    let west = GatewayBuilder::new(dir.path(), "west.test")
        .web()
        .start()
        .await;
    let url = format!("https://127.0.0.1:{}/", west.web_port().unwrap());
    let yaml = format!(
        "apiVersion: spire.spiffe.io/v1alpha1\nkind: ClusterFederatedTrustDomain\nmetadata:\n  name: west\nspec:\n  trustDomain: west.test\n  bundleEndpointURL: {url}\n  bundleEndpointProfile:\n    type: https_web\n"
    );
    let file = dir.path().join("federation.yaml");
    std::fs::write(&file, yaml).unwrap();

    for (name, cert_file) in [
        ("plain.test", None),
        ("trusting.test", Some(west.pki.web_ca_cert.as_path())),
    ] {
        let home = dir.path().join(name);
        std::fs::create_dir_all(&home).unwrap();
        let builder = GatewayBuilder::new(&home, name);
        let serve = Serve::start(&builder, &home, cert_file).await;
        let output = serve.fedgw(&["federation", "apply", "-f", file.to_str().unwrap()]);
        assert!(output.status.success(), "{output:?}");
        let state = wait_for(DEADLINE, "a fetch outcome", || async {
            let shown = serve.relationship("west.test");
            let status = &shown["status"];
            if status["last_success"].is_string() {
                Some(Ok(()))
            } else if status["last_error"].is_object() {
                Some(Err(status["last_error"]["message"].to_string()))
            } else {
                None
            }
        })
        .await;
        match (cert_file, state) {
            (Some(_), Ok(())) => {}
            (None, Err(message)) => {
                assert!(message.to_lowercase().contains("certificate"), "{message}");
            }
            (cert_file, state) => panic!("SSL_CERT_FILE {cert_file:?}: {state:?}"),
        }
    }
}

/// `relationship_files`: the objects of a ClusterFederatedTrustDomain file are
/// configuration relationships. East polls west through one (https_spiffe, its
/// trustDomainBundle as the bootstrap bundle); the API shows it with origin
/// `configuration` and refuses to change or delete it, naming the file and document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relationship_files_are_configuration_relationships() {
    let dir = tempfile::tempdir().unwrap();
    let west = GatewayBuilder::new(dir.path(), "west.test")
        .spiffe()
        .start()
        .await;
    let url = format!("https://127.0.0.1:{}/", west.spiffe_port().unwrap());
    let file = dir.path().join("federation.yaml");
    std::fs::write(&file, cftd("west", &west, &url)).unwrap();
    let home = dir.path().join("east");
    std::fs::create_dir_all(&home).unwrap();
    let builder = GatewayBuilder::new(&home, "east.test");
    let top = format!("relationship_files = [{:?}]", file.display().to_string());
    let east = Serve::start_with(&builder, &home, None, &top).await;

    wait_for(DEADLINE, "west's bundle fetched", || async {
        let shown = east.relationship("west.test");
        shown["status"]["last_success"].is_string().then_some(())
    })
    .await;
    let shown = east.relationship("west.test");
    assert_eq!(shown["origin"], "configuration", "{shown}");
    assert_eq!(shown["endpoint_spiffe_id"], west.endpoint_id.to_string());

    let place = format!(
        "relationship_files[0] ({}, document 1, metadata.name \"west\")",
        file.display()
    );
    let moved = format!("https://localhost:{}/", west.spiffe_port().unwrap());
    let other = dir.path().join("moved.yaml");
    std::fs::write(&other, cftd("west", &west, &moved)).unwrap();
    let output = east.fedgw(&["federation", "apply", "-f", other.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&place), "{stderr}");
    let output = east.fedgw(&["federation", "delete", "--trust-domain", "west.test"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&place), "{stderr}");
}

/// A bad `relationship_files` entry stops `fedgw serve` at start, naming the entry,
/// the file, the document and the field; so does one that repeats a `[[federation]]`
/// trust domain, or a missing file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_relationship_files_stop_the_gateway_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let good = "apiVersion: spire.spiffe.io/v1alpha1\nkind: ClusterFederatedTrustDomain\nmetadata:\n  name: west\nspec:\n  trustDomain: west.test\n  bundleEndpointURL: https://127.0.0.1:1/\n  bundleEndpointProfile:\n    type: https_web\n";
    let bad = good.replace("https://127.0.0.1:1/", "http://127.0.0.1:1/");
    let mut federated = GatewayBuilder::new(dir.path(), "east.test");
    let ca = federated.pki().web_ca_cert.clone();
    federated.federate_web("west.test", "https://127.0.0.1:2/", &ca);
    let cases = [
        (
            "bad.yaml",
            bad.clone(),
            GatewayBuilder::new(dir.path(), "bad.test"),
            "document 1 (metadata.name \"west\"): spec.bundleEndpointURL",
        ),
        (
            "twice.yaml",
            good.to_owned(),
            federated,
            "west.test is federated with already by federation[0]",
        ),
        (
            "local.yaml",
            good.replace("west.test", "local.test"),
            GatewayBuilder::new(dir.path(), "local.test"),
            "local.test is served by this gateway",
        ),
        (
            "missing.yaml",
            String::new(),
            GatewayBuilder::new(dir.path(), "missing.test"),
            "missing.yaml",
        ),
    ];
    for (name, text, builder, expected) in cases {
        let file = dir.path().join(name);
        if !text.is_empty() {
            std::fs::write(&file, text).unwrap();
        }
        let home = dir.path().join(format!("home-{name}"));
        std::fs::create_dir_all(&home).unwrap();
        let top = format!("relationship_files = [{:?}]", file.display().to_string());
        let output = serve_command(&builder, &home, &top)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert!(!output.status.success(), "{name}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("relationship_files[0]"), "{name}: {stderr}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
    }
}
