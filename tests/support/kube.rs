//! A real Kubernetes API server for a test, run as controller-runtime's envtest runs
//! one: etcd and kube-apiserver (`tests/peers/etcd` and `tests/peers/kube`, built by
//! `scripts/peers.sh` from the Go module proxy), on loopback, with RBAC authorization,
//! and no kubelet, scheduler or controller manager.
//!
//! Include with `#[path = "support/kube.rs"] mod kube;`. [`ApiServer::start`] makes
//! a PKI of its own (a CA; the server's certificate for 127.0.0.1 and localhost; a
//! service-account signing key; one client certificate per [`Identity`]), starts
//! etcd on a fresh data directory and kube-apiserver on free ports, and waits until
//! `/readyz` answers. Each identity gets a kubeconfig; [`ApiServer::kubectl`] runs
//! the matching kubectl (the same Kubernetes release) as one of them. Both processes
//! are killed when the handle is dropped, and their logs printed if the test failed.
//!
//! Without Go, or when the build fails, the test fails saying what to install: never
//! a skip.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test crate uses a different subset"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fedgw_testkit::Process;
use fedgw_testkit::TestCa;
use fedgw_testkit::net::free_port;
use rcgen::KeyPair;

/// How long building the peers may take (a first build compiles kube-apiserver).
const BUILD_DEADLINE: Duration = Duration::from_secs(3600);
/// How long the API server may take to answer `/readyz`.
const READY_DEADLINE: Duration = Duration::from_secs(120);

/// Who a kubeconfig authenticates as (a client certificate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// `kubernetes-admin` in `system:masters`: may do anything (sets the test up).
    Admin,
    /// The service account `fedgw` of namespace [`FEDGW_NAMESPACE`]
    /// (`system:serviceaccount:fedgw-system:fedgw`): only what RBAC grants it.
    Fedgw,
    /// Another service account of that namespace, granted nothing.
    Stranger,
}

/// The namespace of the fedgw service account.
pub const FEDGW_NAMESPACE: &str = "fedgw-system";

impl Identity {
    fn file_stem(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Fedgw => "fedgw",
            Self::Stranger => "stranger",
        }
    }

    /// The certificate's subject: common name (the user) and organizations (groups).
    fn subject(self) -> (String, Vec<String>) {
        let service_account = |name: &str| {
            (
                format!("system:serviceaccount:{FEDGW_NAMESPACE}:{name}"),
                vec![
                    "system:serviceaccounts".to_owned(),
                    format!("system:serviceaccounts:{FEDGW_NAMESPACE}"),
                ],
            )
        };
        match self {
            Self::Admin => (
                "kubernetes-admin".to_owned(),
                vec!["system:masters".to_owned()],
            ),
            Self::Fedgw => service_account("fedgw"),
            Self::Stranger => service_account("stranger"),
        }
    }
}

/// The directory of a peer module's binaries, from `scripts/peers.sh NAME`.
///
/// # Panics
/// If the script fails (Go missing, a build error) or names no directory.
fn peer_bin(name: &str) -> PathBuf {
    static DIRS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    let (kube, etcd) = DIRS.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let script = root.join("scripts/peers.sh");
        let started = Instant::now();
        let output = Command::new(&script)
            .args(["kube", "etcd"])
            .current_dir(root)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|err| panic!("cannot run {}: {err}", script.display()));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "the Kubernetes API server could not be built: `scripts/peers.sh kube etcd` {}.\n\
             These tests need Go 1.26 or later with the Go module proxy: install Go \
             (https://go.dev/dl/), then run them again.\n{stderr}",
            output.status
        );
        assert!(
            started.elapsed() < BUILD_DEADLINE,
            "`scripts/peers.sh kube etcd` took {:?}",
            started.elapsed()
        );
        let dir = |name: &str| {
            stdout
                .lines()
                .find_map(|line| line.strip_prefix(&format!("{name}=")))
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    panic!("`scripts/peers.sh kube etcd` printed no {name}= line:\n{stdout}")
                })
        };
        (dir("kube"), dir("etcd"))
    });
    match name {
        "kube" => kube.clone(),
        _ => etcd.clone(),
    }
}

/// The `helm` binary of tests/peers/helm (Helm v4), built by `scripts/peers.sh helm`
/// when missing.
pub fn helm() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let script = root.join("scripts/peers.sh");
        let output = Command::new(&script)
            .arg("helm")
            .current_dir(root)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|err| panic!("cannot run {}: {err}", script.display()));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "helm could not be built: `scripts/peers.sh helm` {}.\n\
             These tests need Go 1.26 or later with the Go module proxy: install Go \
             (https://go.dev/dl/), then run them again.\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
            .lines()
            .find_map(|line| line.strip_prefix("helm="))
            .map(|dir| PathBuf::from(dir).join("helm"))
            .unwrap_or_else(|| panic!("`scripts/peers.sh helm` printed no helm= line:\n{stdout}"))
    })
    .clone()
}

/// A running etcd and kube-apiserver; both are killed on drop.
pub struct ApiServer {
    url: String,
    dir: tempfile::TempDir,
    kubectl: PathBuf,
    // Dropped (killed) in this order: the API server, then etcd.
    apiserver: Process,
    etcd: Process,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl ApiServer {
    /// Build the peers if needed, make the PKI, start etcd and kube-apiserver, and
    /// wait until `/readyz` answers ok. Blocks (run it off the async runtime).
    ///
    /// # Panics
    /// If the peers cannot be built or either process does not come up, with its log.
    pub fn start() -> Self {
        let kube = peer_bin("kube");
        // The etcd server (Go names the binary after `go.etcd.io/etcd/server/v3`).
        let etcd_bin = peer_bin("etcd").join("server");
        let dir = tempfile::tempdir().unwrap();
        let path = |file: &str| dir.path().join(file);

        let ca = TestCa::web("fedgw test cluster");
        std::fs::write(path("ca.pem"), &ca.cert_pem).unwrap();
        let (cert, key) = ca.localhost_server_pem("kube-apiserver");
        std::fs::write(path("apiserver.pem"), cert).unwrap();
        std::fs::write(path("apiserver.key"), key).unwrap();
        // The service-account token signing key (the API server wants one even
        // though these tests authenticate with client certificates).
        let signing = KeyPair::generate().unwrap();
        std::fs::write(path("sa.key"), signing.serialize_pem()).unwrap();
        std::fs::write(path("sa.pub"), signing.public_key_pem()).unwrap();

        let etcd_port = free_port();
        let peer_port = free_port();
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let etcd = Process::spawn(
            "etcd",
            Command::new(&etcd_bin)
                .arg("--data-dir")
                .arg(path("etcd"))
                .arg(format!("--listen-client-urls={etcd_url}"))
                .arg(format!("--advertise-client-urls={etcd_url}"))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"
                ))
                .arg(format!(
                    "--initial-cluster=default=http://127.0.0.1:{peer_port}"
                ))
                // A throwaway store: no fsync (as envtest runs it).
                .arg("--unsafe-no-fsync"),
            &path("etcd.log"),
        );

        let port = free_port();
        let url = format!("https://127.0.0.1:{port}");
        let apiserver = Process::spawn(
            "kube-apiserver",
            Command::new(kube.join("kube-apiserver"))
                .arg(format!("--etcd-servers={etcd_url}"))
                .arg("--bind-address=127.0.0.1")
                .arg("--advertise-address=127.0.0.1")
                // No kubernetes Service endpoints to keep: a loopback address may not
                // be advertised through them.
                .arg("--endpoint-reconciler-type=none")
                .arg(format!("--secure-port={port}"))
                .arg("--tls-cert-file")
                .arg(path("apiserver.pem"))
                .arg("--tls-private-key-file")
                .arg(path("apiserver.key"))
                .arg("--client-ca-file")
                .arg(path("ca.pem"))
                .arg("--cert-dir")
                .arg(path("certs"))
                .arg("--authorization-mode=RBAC")
                .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
                .arg("--service-account-key-file")
                .arg(path("sa.pub"))
                .arg("--service-account-signing-key-file")
                .arg(path("sa.key"))
                .arg("--service-cluster-ip-range=10.0.0.0/24")
                .arg("--disable-admission-plugins=ServiceAccount")
                .arg("--allow-privileged=true")
                .arg("--profiling=false"),
            &path("kube-apiserver.log"),
        );

        for identity in [Identity::Admin, Identity::Fedgw, Identity::Stranger] {
            let (common_name, groups) = identity.subject();
            let (cert, key) = ca.client_pem(&common_name, &groups);
            let stem = identity.file_stem();
            std::fs::write(path(&format!("{stem}.pem")), cert).unwrap();
            std::fs::write(path(&format!("{stem}.key")), key).unwrap();
            std::fs::write(
                path(&format!("{stem}.kubeconfig")),
                kubeconfig(
                    &url,
                    &path("ca.pem"),
                    &path(&format!("{stem}.pem")),
                    &path(&format!("{stem}.key")),
                ),
            )
            .unwrap();
        }

        let server = Self {
            url,
            kubectl: kube.join("kubectl"),
            apiserver,
            etcd,
            dir,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let started = Instant::now();
        loop {
            self.etcd.assert_running();
            self.apiserver.assert_running();
            let out = self.kubectl(Identity::Admin, &["get", "--raw", "/readyz"]);
            if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok" {
                return;
            }
            assert!(
                started.elapsed() < READY_DEADLINE,
                "kube-apiserver did not become ready within {READY_DEADLINE:?}: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.apiserver.log_text()
            );
            pause(Duration::from_millis(250));
        }
    }

    /// The API server's URL (`https://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The CA that issued the server's and the clients' certificates.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A kubeconfig that authenticates as `who`.
    pub fn kubeconfig(&self, who: Identity) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.kubeconfig", who.file_stem()))
    }

    /// Run kubectl (the API server's release) as `who`, to completion.
    pub fn kubectl(&self, who: Identity, args: &[&str]) -> Output {
        Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(self.kubeconfig(who))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|err| panic!("cannot run {}: {err}", self.kubectl.display()))
    }

    /// Run kubectl as `who` with `stdin` as standard input (`apply -f -`).
    pub fn kubectl_stdin(&self, who: Identity, args: &[&str], stdin: &str) -> Output {
        use std::io::Write as _;
        let mut child = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(self.kubeconfig(who))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run {}: {err}", self.kubectl.display()));
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// kubectl as `who`, which must succeed; its standard output.
    ///
    /// # Panics
    /// If kubectl fails, with what it printed.
    pub fn kubectl_ok(&self, who: Identity, args: &[&str]) -> String {
        let out = self.kubectl(who, args);
        assert!(
            out.status.success(),
            "kubectl {} as {who:?} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Wait a little between polls: this harness is synchronous by design (std::process).
#[expect(
    clippy::disallowed_methods,
    reason = "a synchronous harness polling a server process; no async runtime here"
)]
fn pause(duration: Duration) {
    std::thread::sleep(duration);
}

/// A kubeconfig for `url` with one client certificate.
fn kubeconfig(url: &str, ca: &Path, cert: &Path, key: &Path) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: {url}
    certificate-authority: {ca}
users:
- name: test
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: test
  context:
    cluster: test
    user: test
current-context: test
",
        ca = ca.display(),
        cert = cert.display(),
        key = key.display(),
    )
}
