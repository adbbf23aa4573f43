//! `[kubernetes]` end to end: the real `fedgw` binary against a real Kubernetes 1.37
//! API server (`support/kube.rs`: etcd and kube-apiserver with RBAC on), authenticated
//! as the `fedgw-system/fedgw` service account with exactly the permissions of
//! `testbed/kind/kubernetes/rbac.yaml`. The foreign bundle endpoints are testkit's
//! scripted `https_spiffe` servers (real TLS), so a test can rotate a bundle or take
//! an endpoint down.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

#[path = "support/kube.rs"]
mod kube;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fedgw_testkit::{Answer, BundleServer, DEADLINE, Process, TestCa, wait_for};
use kube::{ApiServer, Identity};
use serde_json::Value;
use spiffe_federation::{Bundle, TrustDomain};

const SIGNER: &str = "fedgw.dev/federation";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The API server with the CRD and fedgw's RBAC applied, and the namespaces they use.
fn cluster() -> ApiServer {
    let server = ApiServer::start();
    for file in ["crd.yaml", "rbac.yaml"] {
        let path = root().join("testbed/kind/kubernetes").join(file);
        server.kubectl_ok(
            Identity::Admin,
            &["apply", "--server-side", "-f", path.to_str().unwrap()],
        );
    }
    server.kubectl_ok(
        Identity::Admin,
        &[
            "wait",
            "--for=condition=Established",
            "crd/clusterfederatedtrustdomains.spire.spiffe.io",
            "--timeout=30s",
        ],
    );
    server
}

/// A foreign trust domain: its CA and its `https_spiffe` endpoint.
struct Peer {
    td: TrustDomain,
    ca: TestCa,
    server: BundleServer,
}

impl Peer {
    async fn start(name: &str) -> Self {
        let td: TrustDomain = name.parse().unwrap();
        let ca = TestCa::spiffe(name);
        let server =
            BundleServer::start_spiffe(&ca, "/endpoint", Answer::Fixed(document(&td, &[&ca], 1)))
                .await;
        Self { td, ca, server }
    }

    /// Its ClusterFederatedTrustDomain, named `name`.
    fn cftd(&self, name: &str) -> String {
        let bootstrap = String::from_utf8(document(&self.td, &[&self.ca], 0).to_vec()).unwrap();
        let indented: String = bootstrap.lines().map(|l| format!("    {l}\n")).collect();
        format!(
            "apiVersion: spire.spiffe.io/v1alpha1\n\
             kind: ClusterFederatedTrustDomain\n\
             metadata:\n  name: {name}\n\
             spec:\n  \
               trustDomain: {td}\n  \
               bundleEndpointURL: {url}\n  \
               bundleEndpointProfile:\n    \
                 type: https_spiffe\n    \
                 endpointSPIFFEID: spiffe://{td}/endpoint\n  \
               trustDomainBundle: |\n{indented}",
            td = self.td,
            url = self.server.url(),
        )
    }
}

/// A bundle document of `cas` with `sequence` (none for 0) and a 1 s refresh hint.
fn document(td: &TrustDomain, cas: &[&TestCa], sequence: u64) -> Bytes {
    let mut bundle = Bundle::new(td.clone());
    for ca in cas {
        bundle.add_x509_authority(ca.authority());
    }
    if sequence > 0 {
        bundle.set_sequence(Some(sequence));
    }
    bundle.set_refresh_hint(Some(Duration::from_secs(1)));
    Bytes::from(bundle.to_json())
}

/// A `fedgw serve` with `[kubernetes]` (lease `identity`, 3 s), killed on drop.
struct Fedgw {
    process: Process,
    socket: PathBuf,
}

fn start_fedgw(server: &ApiServer, dir: &Path, identity: &str) -> Fedgw {
    let data = dir.join(identity);
    std::fs::create_dir_all(&data).unwrap();
    let config = data.join("fedgw.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{data}\"\n\
             [polling]\nmin_refresh = \"1s\"\n\
             [kubernetes]\nkubeconfig = \"{kubeconfig}\"\n\
             [kubernetes.lease]\nidentity = \"{identity}\"\nduration = 3\n\
             [kubernetes.cluster_trust_bundles]\n\
             [[kubernetes.config_maps]]\nnamespace = \"spire\"\nname = \"fedgw-bundle\"\n",
            data = data.join("data").display(),
            kubeconfig = server.kubeconfig(Identity::Fedgw).display(),
        ),
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_fedgw"));
    command
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info");
    Fedgw {
        process: Process::spawn(
            &format!("fedgw {identity}"),
            &mut command,
            &data.join("serve.log"),
        ),
        socket: data.join("data/admin.sock"),
    }
}

impl Fedgw {
    fn metrics(&self) -> String {
        let out = Command::new("curl")
            .args(["-sS", "--unix-socket"])
            .arg(&self.socket)
            .arg("http://fedgw/metrics")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The value of the series `series` (name and labels, as exposed).
    fn metric(&self, series: &str) -> Option<f64> {
        self.metrics().lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
    }
}

/// kubectl `get` as JSON, `None` when not found.
fn get(server: &ApiServer, args: &[&str]) -> Option<Value> {
    let mut all = vec!["get", "-o", "json"];
    all.extend_from_slice(args);
    let out = server.kubectl(Identity::Admin, &all);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("NotFound"), "kubectl {args:?}: {stderr}");
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

fn apply(server: &ApiServer, yaml: &str) {
    let out = server.kubectl_stdin(Identity::Admin, &["apply", "-f", "-"], yaml);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ctb_name(td: &TrustDomain) -> String {
    format!("fedgw.dev:federation:{td}")
}

/// The PEM of `cas`, as fedgw writes a bundle's X.509 authorities.
fn pem(td: &TrustDomain, cas: &[&TestCa]) -> String {
    let mut bundle = Bundle::new(td.clone());
    for ca in cas {
        bundle.add_x509_authority(ca.authority());
    }
    bundle.to_pem()
}

fn condition(cftd: &Value, kind: &str) -> Option<(String, String)> {
    cftd["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_owned(),
                c["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
}

/// ClusterFederatedTrustDomains in, ClusterTrustBundles and a ConfigMap out, status
/// written back; rotation, a failing and recovering endpoint, deletion, and objects
/// fedgw does not own left untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cftd_in_cluster_trust_bundles_out_status_follows_the_endpoint() {
    let server = tokio::task::block_in_place(cluster);
    let dir = tempfile::tempdir().unwrap();
    let west = Peer::start("west.test").await;
    let north = Peer::start("north.test").await;
    let south = Peer::start("south.test").await;

    // Objects fedgw must never touch: one with the name it would give south's
    // bundle, one of its signer it has no domain for, both made by someone else.
    let unowned = |name: &str, ca: &TestCa| {
        let indented: String = ca.cert_pem.lines().map(|l| format!("    {l}\n")).collect();
        format!(
            "apiVersion: certificates.k8s.io/v1\nkind: ClusterTrustBundle\n\
             metadata:\n  name: {name}\n\
             spec:\n  signerName: {SIGNER}\n  trustBundle: |\n{indented}"
        )
    };
    let stranger_ca = TestCa::spiffe("stranger.test");
    apply(&server, &unowned(&ctb_name(&south.td), &stranger_ca));
    apply(
        &server,
        &unowned("fedgw.dev:federation:hand-made", &stranger_ca),
    );
    let version = |name: &str| {
        get(&server, &["clustertrustbundle", name]).unwrap()["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let south_version = version(&ctb_name(&south.td));
    let hand_version = version("fedgw.dev:federation:hand-made");

    let fedgw = start_fedgw(&server, dir.path(), "replica-a");
    apply(&server, &west.cftd("west"));
    apply(&server, &north.cftd("north"));
    apply(&server, &south.cftd("south"));

    // West's and north's bundles appear, each its own object with exactly its CAs.
    for peer in [&west, &north] {
        let expected = pem(&peer.td, &[&peer.ca]);
        let ctb = wait_for(DEADLINE, "the ClusterTrustBundle", || async {
            get(
                &server,
                &[
                    "clustertrustbundle",
                    &ctb_name(&peer.td),
                    "--show-managed-fields",
                ],
            )
            .filter(|ctb| ctb["spec"]["trustBundle"] == expected.as_str())
        })
        .await;
        assert_eq!(ctb["spec"]["signerName"], SIGNER);
        let labels = &ctb["metadata"]["labels"];
        assert_eq!(labels["k8s.spiffe.io/trust-domain"], peer.td.as_str());
        assert_eq!(labels["k8s.spiffe.io/canarying"], "live");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "fedgw");
        let managers: Vec<&str> = ctb["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["manager"].as_str().unwrap())
            .collect();
        assert_eq!(managers, ["fedgw"], "server-side applied by fedgw alone");
    }
    // A label selector for one domain selects one object, as a pod's projection would.
    let selected = server.kubectl_ok(
        Identity::Admin,
        &[
            "get",
            "clustertrustbundles",
            "-l",
            "k8s.spiffe.io/trust-domain=west.test",
            "-o",
            "name",
        ],
    );
    assert_eq!(
        selected.trim(),
        format!(
            "clustertrustbundle.certificates.k8s.io/{}",
            ctb_name(&west.td)
        )
    );

    // Status: Ready, fetched, the sequence served.
    let status = wait_for(DEADLINE, "west's status", || async {
        get(&server, &["clusterfederatedtrustdomain", "west"])
            .filter(|c| condition(c, "Ready") == Some(("True".into(), "BundleServed".into())))
    })
    .await;
    assert_eq!(
        condition(&status, "FetchFailing"),
        Some(("False".into(), "Fetched".into()))
    );
    assert_eq!(status["status"]["sequence"], 1);
    assert_eq!(status["status"]["trustDomain"], "west.test");
    assert!(status["status"]["lastSuccessfulFetch"].is_string());
    assert!(status["status"]["nextAttempt"].is_string());

    // The ConfigMap in SPIRE's k8sbundle format holds every trusted domain's CAs.
    let map = wait_for(DEADLINE, "the ConfigMap", || async {
        get(&server, &["-n", "spire", "configmap", "fedgw-bundle"]).filter(|m| {
            let data = m["data"]["bundle.crt"].as_str().unwrap_or_default();
            data.contains(&west.ca.cert_pem) && data.contains(&north.ca.cert_pem)
        })
    })
    .await;
    assert_eq!(
        map["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "fedgw"
    );

    // Rotation: west adds a CA; its object follows.
    let next = TestCa::spiffe("west.test");
    west.server
        .set(Answer::Fixed(document(&west.td, &[&west.ca, &next], 2)));
    let rotated = pem(&west.td, &[&west.ca, &next]);
    wait_for(DEADLINE, "the rotated ClusterTrustBundle", || async {
        get(&server, &["clustertrustbundle", &ctb_name(&west.td)])
            .filter(|ctb| ctb["spec"]["trustBundle"] == rotated.as_str())
    })
    .await;

    // West's endpoint goes down: FetchFailing with the failure's code, the last
    // bundle still served; then it recovers.
    west.server.set(Answer::Unavailable);
    let failing = wait_for(DEADLINE, "FetchFailing", || async {
        get(&server, &["clusterfederatedtrustdomain", "west"])
            .filter(|c| condition(c, "FetchFailing").is_some_and(|(s, _)| s == "True"))
    })
    .await;
    let (_, reason) = condition(&failing, "FetchFailing").unwrap();
    assert!(
        reason.starts_with("Http"),
        "{reason}: {}",
        failing["status"]
    );
    assert_eq!(condition(&failing, "Ready").unwrap().0, "True");
    west.server
        .set(Answer::Fixed(document(&west.td, &[&west.ca, &next], 3)));
    let recovered = wait_for(DEADLINE, "recovery", || async {
        get(&server, &["clusterfederatedtrustdomain", "west"])
            .filter(|c| condition(c, "FetchFailing").is_some_and(|(s, _)| s == "False"))
    })
    .await;
    assert_eq!(recovered["status"]["sequence"], 3);

    // Deleting north's object removes its bundle from the cluster.
    server.kubectl_ok(
        Identity::Admin,
        &["delete", "clusterfederatedtrustdomain", "north"],
    );
    wait_for(DEADLINE, "north's ClusterTrustBundle gone", || async {
        get(&server, &["clustertrustbundle", &ctb_name(&north.td)])
            .is_none()
            .then_some(())
    })
    .await;

    // South was fetched (its status says so) but its name is taken by an object
    // fedgw does not own: left exactly as it was, and counted.
    wait_for(DEADLINE, "south fetched", || async {
        get(&server, &["clusterfederatedtrustdomain", "south"])
            .filter(|c| condition(c, "Ready").is_some_and(|(s, _)| s == "True"))
    })
    .await;
    wait_for(DEADLINE, "the refusal counted", || async {
        fedgw
            .metric("fedgw_kubernetes_writes_total{kind=\"cluster_trust_bundle\",result=\"refused_unowned\"}")
            .is_some_and(|n| n >= 1.0)
            .then_some(())
    })
    .await;
    assert_eq!(version(&ctb_name(&south.td)), south_version);
    assert_eq!(version("fedgw.dev:federation:hand-made"), hand_version);
    let log = fedgw.process.log_text();
    assert!(
        log.contains("without the label app.kubernetes.io/managed-by=fedgw"),
        "{log}"
    );

    // The admin API lists the objects' relationships as read-only.
    let out = Command::new(env!("CARGO_BIN_EXE_fedgw"))
        .args([
            "federation",
            "delete",
            "--trust-domain",
            "west.test",
            "--admin",
        ])
        .arg(format!("unix:{}", fedgw.socket.display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("managed in Kubernetes"), "{stderr}");
}

/// The fedgw service account may attest only for its own signer: a
/// ClusterTrustBundle linked to another signer is refused by the API server.
#[test]
fn rbac_refuses_a_cluster_trust_bundle_for_another_signer() {
    let server = cluster();
    let ca = TestCa::spiffe("west.test");
    let indented: String = ca.cert_pem.lines().map(|l| format!("    {l}\n")).collect();
    let object = |signer: &str, name: &str| {
        format!(
            "apiVersion: certificates.k8s.io/v1\nkind: ClusterTrustBundle\n\
             metadata:\n  name: {name}\n\
             spec:\n  signerName: {signer}\n  trustBundle: |\n{indented}"
        )
    };
    let refused = server.kubectl_stdin(
        Identity::Fedgw,
        &["create", "-f", "-"],
        &object("example.com/other", "example.com:other:west.test"),
    );
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("Forbidden") && stderr.contains("example.com/other"),
        "{stderr}"
    );
    // Its own signer: allowed.
    let allowed = server.kubectl_stdin(
        Identity::Fedgw,
        &["create", "-f", "-"],
        &object(SIGNER, "fedgw.dev:federation:west.test"),
    );
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    // And nothing beyond its grants: no Secrets, no other namespace's ConfigMaps.
    for args in [
        &["get", "secrets", "-n", "fedgw-system"][..],
        &["get", "configmaps", "-n", "default"][..],
    ] {
        let out = server.kubectl(Identity::Fedgw, args);
        assert!(!out.status.success(), "{args:?}");
    }
}

/// Two replicas: one holds the Lease and writes; killing it hands writing to the
/// other within the lease duration (3 s) plus one retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_lease_holder_hands_writing_over() {
    let server = tokio::task::block_in_place(cluster);
    let dir = tempfile::tempdir().unwrap();
    let west = Peer::start("west.test").await;
    // The ConfigMap fedgw is configured to write exists already, made by someone
    // else: fedgw leaves it alone.
    apply(
        &server,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fedgw-bundle\n  namespace: spire\ndata:\n  bundle.crt: hand-made\n",
    );
    let a = start_fedgw(&server, dir.path(), "replica-a");
    let holder = || {
        get(&server, &["-n", "fedgw-system", "lease", "fedgw-writer"])
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
    };
    wait_for(DEADLINE, "replica-a holds the lease", || async {
        (holder().as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let b = start_fedgw(&server, dir.path(), "replica-b");
    apply(&server, &west.cftd("west"));
    wait_for(DEADLINE, "west's ClusterTrustBundle", || async {
        get(&server, &["clustertrustbundle", &ctb_name(&west.td)])
    })
    .await;
    // Both fetch and serve; only the holder writes.
    wait_for(DEADLINE, "replica-b polls west too", || async {
        (b.metric("fedgw_kubernetes_leader") == Some(0.0)).then_some(())
    })
    .await;
    assert_eq!(a.metric("fedgw_kubernetes_leader"), Some(1.0));
    assert!(!b.process.log_text().contains("ClusterTrustBundle written"));

    a.process.kill();
    let killed = Instant::now();
    wait_for(DEADLINE, "replica-b holds the lease", || async {
        (holder().as_deref() == Some("replica-b")).then_some(())
    })
    .await;
    let handover = killed.elapsed();
    // Writing really moved: a rotation now reaches the cluster through replica-b.
    let next = TestCa::spiffe("west.test");
    west.server
        .set(Answer::Fixed(document(&west.td, &[&west.ca, &next], 2)));
    let rotated = pem(&west.td, &[&west.ca, &next]);
    wait_for(DEADLINE, "the rotated ClusterTrustBundle", || async {
        get(&server, &["clustertrustbundle", &ctb_name(&west.td)])
            .filter(|ctb| ctb["spec"]["trustBundle"] == rotated.as_str())
    })
    .await;
    assert!(b.process.log_text().contains("ClusterTrustBundle written"));
    let map = get(&server, &["-n", "spire", "configmap", "fedgw-bundle"]).unwrap();
    assert_eq!(
        map["data"]["bundle.crt"], "hand-made",
        "an unowned ConfigMap is never written"
    );
    assert!(
        b.metric("fedgw_kubernetes_writes_total{kind=\"config_map\",result=\"refused_unowned\"}")
            .is_some_and(|n| n >= 1.0)
    );
    eprintln!("handover after {handover:?}");
    assert!(
        handover <= Duration::from_millis(3_500) + Duration::from_secs(1),
        "handover took {handover:?}; lease 3 s, retry 0.5 s"
    );

    // A holder that stops gracefully gives the lease up: the next replica takes over
    // within one retry (0.5 s), not the lease's 3 s.
    let c = start_fedgw(&server, dir.path(), "replica-c");
    wait_for(DEADLINE, "replica-c runs", || async {
        (c.metric("fedgw_kubernetes_leader") == Some(0.0)).then_some(())
    })
    .await;
    let term = Command::new("kill")
        .args(["-TERM", &b.process.pid().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let stopped = Instant::now();
    wait_for(DEADLINE, "replica-c holds the lease", || async {
        (holder().as_deref() == Some("replica-c")).then_some(())
    })
    .await;
    let graceful = stopped.elapsed();
    eprintln!("graceful handover after {graceful:?}");
    tokio::task::block_in_place(|| b.process.wait());
    assert!(
        b.process
            .log_text()
            .contains("gave the Kubernetes lease up"),
        "{}",
        b.process.log_text()
    );
    assert!(
        graceful < Duration::from_millis(2_500),
        "graceful handover took {graceful:?}"
    );
}

/// `[kubernetes]` that cannot be used stops the gateway at start, saying why: no
/// kubeconfig outside a pod, a kubeconfig that does not exist.
#[test]
fn an_unusable_kubernetes_table_stops_the_start_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    for (table, expected) in [
        ("[kubernetes]\n", "not running in a pod"),
        (
            "[kubernetes]\nkubeconfig = \"/nonexistent/kubeconfig\"\n",
            "kubernetes.kubeconfig /nonexistent/kubeconfig",
        ),
    ] {
        let config = dir.path().join("fedgw.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\n{table}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_fedgw"))
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{table}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{table}: {stderr}");
    }
}

/// Nothing changes, nothing is written: with a bundle that is not due again for
/// minutes, the status written once stays as it is (the API server keeps it exactly
/// as written, so the comparison every 2 s finds no difference), and so do the
/// ClusterTrustBundle and the ConfigMap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_domain_causes_no_writes() {
    let server = tokio::task::block_in_place(cluster);
    let dir = tempfile::tempdir().unwrap();
    let west = Peer::start("west.test").await;
    let mut bundle = Bundle::new(west.td.clone());
    bundle.add_x509_authority(west.ca.authority());
    bundle.set_sequence(Some(1));
    bundle.set_refresh_hint(Some(Duration::from_secs(3600)));
    west.server
        .set(Answer::Fixed(Bytes::from(bundle.to_json())));
    let fedgw = start_fedgw(&server, dir.path(), "replica-a");
    apply(&server, &west.cftd("west"));
    wait_for(DEADLINE, "west's status", || async {
        get(&server, &["clusterfederatedtrustdomain", "west"]).filter(|c| {
            condition(c, "Ready") == Some(("True".into(), "BundleServed".into()))
                && c["status"]["sequence"] == 1
        })
    })
    .await;
    let writes = |kind: &str| {
        fedgw
            .metric(&format!(
                "fedgw_kubernetes_writes_total{{kind=\"{kind}\",result=\"applied\"}}"
            ))
            .unwrap_or(0.0)
    };
    // Let what is in flight land, then watch three comparison rounds.
    fedgw_testkit::wait_until(DEADLINE, "the writes settle", || async {
        let before = (
            writes("status"),
            writes("cluster_trust_bundle"),
            writes("config_map"),
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        before
            == (
                writes("status"),
                writes("cluster_trust_bundle"),
                writes("config_map"),
            )
    })
    .await;
    let before = (
        writes("status"),
        writes("cluster_trust_bundle"),
        writes("config_map"),
    );
    let version = get(&server, &["clusterfederatedtrustdomain", "west"]).unwrap()["metadata"]
        ["resourceVersion"]
        .clone();
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        before,
        (
            writes("status"),
            writes("cluster_trust_bundle"),
            writes("config_map")
        )
    );
    assert_eq!(
        get(&server, &["clusterfederatedtrustdomain", "west"]).unwrap()["metadata"]["resourceVersion"],
        version
    );
    assert!(before.0 >= 1.0 && before.1 >= 1.0, "{before:?}");
}
