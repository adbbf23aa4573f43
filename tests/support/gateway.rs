//! End-to-end harness: real `fedgw serve` processes on loopback.
//!
//! Include with `#[path = "support/gateway.rs"] mod gateway;`. A [`GatewayBuilder`]
//! makes one gateway's development PKI ([`fedgw::dev::pki::ensure`]) in a directory of
//! the test's tempdir, picks free loopback ports for the `https_web` and/or
//! `https_spiffe` listeners, collects federation relationships (to other builders or
//! to any bundle endpoint), and writes a TOML configuration with fast polling (a 1 s
//! refresh hint everywhere, so a peer is polled about every 250 ms). [`Gateway`] is the
//! running child process: it is observed only through its bundle endpoints (as a real
//! peer would) and its log, can be killed with SIGKILL and restarted on the same
//! `data_dir`, and prints its log when the test fails.
//!
//! Certificates, ports, waiting and the child process come from the test kit
//! (`fedgw_testkit`): synchronisation is by its `wait_until` / `wait_for` (poll a
//! condition with short sleeps up to a generous deadline; nothing asserts how long
//! anything took), and the process is a `fedgw_testkit::Process` named after the trust
//! domain, whose log is printed when the test fails.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test crate uses a different subset"
)]

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fedgw::client::admin_client::{AdminClient, AdminTarget};
use fedgw::dev::pki::{self as dev_pki, DevPkiPaths};
use fedgw_testkit::process::strip_ansi;
use fedgw_testkit::{DEADLINE, Process, free_port, wait_for, write_atomically};
use reqwest::Method;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use spiffe_federation::endpoint::client::{FetchRequest, Fetcher, ServerAuth, SpiffeEndpoint};
use spiffe_federation::endpoint::{EndpointUrl, FetchLimits, ProxySetting, WebOptions};
use spiffe_federation::{Bundle, SpiffeId, TrustDomain};
use time::OffsetDateTime;

/// How often a start that hit `EADDRINUSE` is retried.
const START_ATTEMPTS: u32 = 20;

/// The path of the endpoint SPIFFE ID of every test gateway.
pub const ENDPOINT_PATH: &str = "/fedgw/bundle-endpoint";

/// The X.509 authorities of a bundle, as a set of DER certificates.
pub fn authorities(bundle: &Bundle) -> BTreeSet<Vec<u8>> {
    bundle
        .x509_authorities()
        .iter()
        .map(|authority| authority.der().to_vec())
        .collect()
}

/// How a relationship reaches a peer built by this harness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `https_web` to the peer's web listener, trusting the peer's development web CA.
    Web,
    /// `https_spiffe` to the peer's SPIFFE listener, bootstrapped with the peer's
    /// development bundle.
    Spiffe,
}

/// One gateway, before it runs: PKI made, ports picked, relationships collected.
#[derive(Debug)]
pub struct GatewayBuilder {
    trust_domain: TrustDomain,
    endpoint_id: SpiffeId,
    dir: PathBuf,
    pki: DevPkiPaths,
    web_port: Option<u16>,
    spiffe_port: Option<u16>,
    relationships: Vec<String>,
    extra_toml: String,
    nofile: Option<u64>,
}

impl GatewayBuilder {
    /// A gateway for `trust_domain`, its files under `root/<trust_domain>/`.
    pub fn new(root: &Path, trust_domain: &str) -> Self {
        let trust_domain: TrustDomain = trust_domain.parse().unwrap();
        let endpoint_id = SpiffeId::new(trust_domain.clone(), ENDPOINT_PATH).unwrap();
        let dir = root.join(trust_domain.as_str());
        let names = ["localhost".to_owned(), "127.0.0.1".to_owned()];
        let pki = dev_pki::ensure(
            &dir,
            &trust_domain,
            &endpoint_id,
            &names,
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        Self {
            trust_domain,
            endpoint_id,
            dir,
            pki,
            web_port: None,
            spiffe_port: None,
            relationships: Vec::new(),
            extra_toml: String::new(),
            nofile: None,
        }
    }

    /// Use another gateway's development PKI: a replica of it (the same local bundle
    /// file, the same endpoint certificates).
    pub fn with_pki(mut self, pki: DevPkiPaths) -> Self {
        self.pki = pki;
        self
    }

    /// Run the process with this open-file limit (soft and hard), as `ulimit -n`.
    pub fn nofile(mut self, limit: u64) -> Self {
        self.nofile = Some(limit);
        self
    }

    /// Serve over `https_web` (certificate for `localhost` and `127.0.0.1`).
    pub fn web(mut self) -> Self {
        self.web_port = Some(free_port());
        self
    }

    /// Serve over `https_spiffe`.
    pub fn spiffe(mut self) -> Self {
        self.spiffe_port = Some(free_port());
        self
    }

    /// Add TOML at the end of the configuration (e.g. a `[policy]` table).
    pub fn extra_toml(mut self, toml: &str) -> Self {
        self.extra_toml.push_str(toml);
        self
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The development PKI files.
    pub fn pki(&self) -> &DevPkiPaths {
        &self.pki
    }

    /// The SPIFFE ID its `https_spiffe` endpoint presents.
    pub fn endpoint_id(&self) -> &SpiffeId {
        &self.endpoint_id
    }

    /// `https://127.0.0.1:<https_spiffe port><path>`.
    ///
    /// # Panics
    /// If it has no `https_spiffe` listener.
    pub fn spiffe_url(&self, path: &str) -> String {
        let port = self.spiffe_port.expect("no https_spiffe listener");
        format!("https://127.0.0.1:{port}{path}")
    }

    /// Add a `[[federation]]` table written by hand (e.g. without a bootstrap bundle,
    /// or with a PEM one).
    pub fn relationship(&mut self, toml: &str) -> &mut Self {
        self.relationships.push(toml.to_owned());
        self
    }

    /// Federate with a peer built by this harness.
    ///
    /// # Panics
    /// If the peer has no listener for `via`.
    pub fn federate(&mut self, peer: &Self, via: Via) -> &mut Self {
        match via {
            Via::Web => {
                let port = peer.web_port.expect("the peer has no https_web listener");
                self.federate_web(
                    peer.trust_domain.as_str(),
                    &format!("https://127.0.0.1:{port}/"),
                    &peer.pki.web_ca_cert,
                )
            }
            Via::Spiffe => {
                let port = peer
                    .spiffe_port
                    .expect("the peer has no https_spiffe listener");
                self.federate_spiffe(
                    peer.trust_domain.as_str(),
                    &format!("https://127.0.0.1:{port}/"),
                    &peer.endpoint_id,
                    &peer.pki.bundle,
                )
            }
        }
    }

    /// Federate over `https_web` with any endpoint whose certificate chains to the PEM
    /// roots in `ca`.
    pub fn federate_web(&mut self, trust_domain: &str, url: &str, ca: &Path) -> &mut Self {
        self.relationships.push(format!(
            "[[federation]]\ntrust_domain = \"{trust_domain}\"\nurl = \"{url}\"\nprofile = \"https_web\"\nextra_ca_roots = {ca:?}\nproxy = \"off\"\n",
            ca = ca.display().to_string(),
        ));
        self
    }

    /// Federate over `https_spiffe`.
    pub fn federate_spiffe(
        &mut self,
        trust_domain: &str,
        url: &str,
        endpoint_id: &SpiffeId,
        bootstrap_bundle: &Path,
    ) -> &mut Self {
        self.relationships.push(format!(
            "[[federation]]\ntrust_domain = \"{trust_domain}\"\nurl = \"{url}\"\nprofile = \"https_spiffe\"\nendpoint_spiffe_id = \"{endpoint_id}\"\nbootstrap_bundle = {bootstrap:?}\nproxy = \"off\"\n",
            bootstrap = bootstrap_bundle.display().to_string(),
        ));
        self
    }

    /// The configuration this builder writes.
    pub fn config_toml(&self) -> String {
        let td = &self.trust_domain;
        let mut toml = format!(
            r#"data_dir = {data_dir:?}

[polling]
min_refresh = "1s"
default_refresh = "1s"
fetch_timeout = "2s"

[[local]]
trust_domain = "{td}"
source = {{ file = {bundle:?} }}
refresh_hint = "1s"
"#,
            data_dir = self.dir.join("data").display().to_string(),
            bundle = self.pki.bundle.display().to_string(),
        );
        if let Some(port) = self.web_port {
            toml.push_str(&format!(
                "\n[endpoint.https_web]\nlisten = \"127.0.0.1:{port}\"\ncert = {cert:?}\nkey = {key:?}\npublic_names = [\"localhost\", \"127.0.0.1\"]\n",
                cert = self.pki.web_cert.display().to_string(),
                key = self.pki.web_key.display().to_string(),
            ));
        }
        if let Some(port) = self.spiffe_port {
            toml.push_str(&format!(
                "\n[endpoint.https_spiffe]\nlisten = \"127.0.0.1:{port}\"\nsvid = {svid:?}\nkey = {key:?}\nendpoint_spiffe_id = \"{id}\"\n",
                svid = self.pki.svid.display().to_string(),
                key = self.pki.svid_key.display().to_string(),
                id = self.endpoint_id,
            ));
        }
        for rel in &self.relationships {
            toml.push('\n');
            toml.push_str(rel);
        }
        toml.push('\n');
        toml.push_str(&self.extra_toml);
        toml
    }

    /// Write the configuration and start the gateway; returns once every listener
    /// accepts connections.
    ///
    /// # Panics
    /// If the configuration is refused or the gateway exits, with its log.
    pub async fn start(self) -> Gateway {
        let toml = self.config_toml();
        // The same validation the binary does: a broken test config fails here, clearly.
        if let Err(err) = fedgw::app::Config::from_toml(&toml) {
            panic!("generated configuration refused: {err}\n{toml}");
        }
        let config = self.dir.join("fedgw.toml");
        std::fs::write(&config, &toml).unwrap();
        let mut gateway = Gateway {
            trust_domain: self.trust_domain,
            endpoint_id: self.endpoint_id,
            pki: self.pki,
            data_dir: self.dir.join("data"),
            log: self.dir.join("fedgw.log"),
            config,
            web_port: self.web_port,
            spiffe_port: self.spiffe_port,
            process: None,
            ended: None,
            fetcher: Fetcher::with_system_roots(Vec::new()),
            starts: 0,
            nofile: self.nofile,
        };
        gateway.spawn().await;
        gateway
    }
}

/// A running (or killed) `fedgw serve` process.
#[derive(Debug)]
pub struct Gateway {
    /// Its local trust domain.
    pub trust_domain: TrustDomain,
    /// The SPIFFE ID of its `https_spiffe` endpoint.
    pub endpoint_id: SpiffeId,
    /// Its development PKI; `pki.bundle` is the local bundle file it watches.
    pub pki: DevPkiPaths,
    /// Its data directory (sled).
    pub data_dir: PathBuf,
    log: PathBuf,
    config: PathBuf,
    web_port: Option<u16>,
    spiffe_port: Option<u16>,
    /// The running process.
    process: Option<Process>,
    /// The last process killed or exited during startup, kept so that its log (the
    /// whole file, every incarnation) is printed if the test fails.
    ended: Option<Process>,
    fetcher: Fetcher,
    starts: u32,
    nofile: Option<u64>,
}

impl Gateway {
    /// `https://localhost:<web port><path>`.
    pub fn web_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.web_port.unwrap())
    }

    /// The `https_web` port.
    pub fn web_port(&self) -> Option<u16> {
        self.web_port
    }

    /// The `https_spiffe` port.
    pub fn spiffe_port(&self) -> Option<u16> {
        self.spiffe_port
    }

    /// The process ID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// The configuration file.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Append `toml` to the configuration file; it takes effect at the next
    /// [`Self::restart`].
    pub fn append_config(&self, toml: &str) {
        let mut file = OpenOptions::new().append(true).open(&self.config).unwrap();
        writeln!(file, "\n{toml}").unwrap();
    }

    /// A client for its admin API (the unix socket in `data_dir`), as the CLI uses.
    pub fn admin(&self) -> AdminClient {
        let socket = self.data_dir.join("admin.sock");
        AdminClient::new(&AdminTarget::Unix(socket), None).unwrap()
    }

    /// `GET path` on the admin API, as JSON.
    ///
    /// # Panics
    /// If the call fails or the answer is not JSON.
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        let answer = self.admin().call(Method::GET, path, None).await;
        let answer = answer.unwrap_or_else(|err| panic!("GET {path}: {err}"));
        answer
            .json
            .unwrap_or_else(|| panic!("GET {path}: not JSON: {:?}", answer.body))
    }

    /// The value of one series of the admin API's `/metrics`, e.g.
    /// `fedgw_bundle_rejections_total{reason="…",trust_domain="…"}` (labels in the
    /// order they are rendered: sorted by name); `None` when absent.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let answer = self
            .admin()
            .call(Method::GET, "/metrics", None)
            .await
            .ok()?;
        let text = String::from_utf8(answer.body).unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map(|value| value.parse().unwrap())
    }

    /// Everything the process (every incarnation) wrote to stdout and stderr.
    pub fn log_text(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// Log lines containing every one of `needles`.
    pub fn log_lines_with(&self, needles: &[&str]) -> usize {
        self.log_text()
            .lines()
            .filter(|line| needles.iter().all(|needle| line.contains(needle)))
            .count()
    }

    /// SIGKILL the process (like `kill -9`) and reap it.
    pub fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill();
            self.ended = Some(process);
        }
    }

    /// Start the process again with the same configuration and `data_dir`.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.process.as_ref().is_some_and(Process::is_running)
    }

    /// The bundle served at `path` as `trust_domain`'s, read over `https_web` when the
    /// gateway has that listener, else over `https_spiffe` authenticated with the local
    /// bundle file (as a peer that holds the current bundle would).
    ///
    /// # Errors
    /// Any fetch failure, as text (callers usually retry).
    pub async fn fetch(&self, path: &str, trust_domain: &TrustDomain) -> Result<Bundle, String> {
        if self.web_port.is_some() {
            return self.fetch_web(path, trust_domain).await;
        }
        let bundle = std::fs::read(&self.pki.bundle).map_err(|err| err.to_string())?;
        let bundle = Bundle::parse(&self.trust_domain, &bundle)
            .map_err(|err| err.to_string())?
            .bundle;
        self.fetch_spiffe(path, trust_domain, &bundle).await
    }

    /// [`Self::fetch`] over `https_web`, trusting only the development web CA.
    ///
    /// # Errors
    /// Any fetch failure, as text.
    pub async fn fetch_web(
        &self,
        path: &str,
        trust_domain: &TrustDomain,
    ) -> Result<Bundle, String> {
        let port = self.web_port.ok_or("no https_web listener")?;
        let roots: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(&self.pki.web_ca_cert)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        let options = WebOptions {
            extra_roots: roots,
            system_roots: false,
        };
        let url = EndpointUrl::parse(&format!("https://localhost:{port}{path}")).unwrap();
        self.fetch_with(trust_domain, &url, ServerAuth::Web(&options))
            .await
    }

    /// [`Self::fetch`] over `https_spiffe`, authenticating the endpoint's SVID with
    /// `endpoint_bundle` (a bundle of this gateway's trust domain).
    ///
    /// # Errors
    /// Any fetch failure, as text.
    pub async fn fetch_spiffe(
        &self,
        path: &str,
        trust_domain: &TrustDomain,
        endpoint_bundle: &Bundle,
    ) -> Result<Bundle, String> {
        let port = self.spiffe_port.ok_or("no https_spiffe listener")?;
        self.fetch_spiffe_at(port, path, trust_domain, &self.endpoint_id, endpoint_bundle)
            .await
    }

    /// [`Self::fetch`] over `https_spiffe` from `port` (a listener the builder did not
    /// set up, e.g. one configured with `extra_toml`), requiring the endpoint to
    /// present an X509-SVID for `endpoint_id` that chains to `endpoint_bundle`.
    ///
    /// # Errors
    /// Any fetch failure, as text.
    pub async fn fetch_spiffe_at(
        &self,
        port: u16,
        path: &str,
        trust_domain: &TrustDomain,
        endpoint_id: &SpiffeId,
        endpoint_bundle: &Bundle,
    ) -> Result<Bundle, String> {
        let endpoint =
            SpiffeEndpoint::new(endpoint_id, endpoint_bundle).map_err(|err| err.to_string())?;
        let url = EndpointUrl::parse(&format!("https://127.0.0.1:{port}{path}"))
            .map_err(|err| err.to_string())?;
        self.fetch_with(trust_domain, &url, ServerAuth::Spiffe(endpoint))
            .await
    }

    async fn fetch_with(
        &self,
        trust_domain: &TrustDomain,
        url: &EndpointUrl,
        auth: ServerAuth<'_>,
    ) -> Result<Bundle, String> {
        let limits = FetchLimits {
            connect_timeout: Duration::from_secs(2),
            total_timeout: Duration::from_secs(5),
            ..FetchLimits::default()
        };
        let request = FetchRequest {
            trust_domain,
            url,
            auth,
            limits: &limits,
            proxy: &ProxySetting::Off,
        };
        self.fetcher
            .fetch(&request)
            .await
            .map(|fetched| fetched.parsed.bundle)
            .map_err(|err| err.to_string())
    }

    /// The gateway's own bundle (its first local domain, served at `/`).
    ///
    /// # Errors
    /// Any fetch failure, as text.
    pub async fn local_bundle(&self) -> Result<Bundle, String> {
        self.fetch("/", &self.trust_domain).await
    }

    /// What the gateway holds for a foreign domain, at `/relay/<td>`.
    ///
    /// # Errors
    /// Any fetch failure (including 404 while it holds nothing), as text.
    pub async fn relay(&self, trust_domain: &TrustDomain) -> Result<Bundle, String> {
        self.fetch(&format!("/relay/{trust_domain}"), trust_domain)
            .await
    }

    /// Wait (up to [`DEADLINE`]) until the gateway relays `trust_domain` with exactly
    /// the X.509 authorities of `expected`.
    pub async fn wait_relays(&self, trust_domain: &TrustDomain, expected: &Bundle) {
        let what = format!("{} to relay {trust_domain}", self.trust_domain);
        wait_for(DEADLINE, &what, || async {
            self.relay(trust_domain)
                .await
                .ok()
                .filter(|b| authorities(b) == authorities(expected))
        })
        .await;
    }

    /// Replace the local bundle file atomically with `bundle` (written without a
    /// sequence: the gateway numbers local versions itself). The gateway notices
    /// within its file check interval.
    pub fn write_local_bundle(&self, bundle: &Bundle) {
        let mut bundle = bundle.clone();
        bundle.set_sequence(None);
        bundle.set_refresh_hint(None);
        write_atomically(&self.pki.bundle, bundle.to_json_pretty().as_bytes());
    }

    /// Start the process and wait until every listener accepts connections; retry on
    /// `EADDRINUSE` (a free port taken between picking and binding, or a port still
    /// held while restarting).
    async fn spawn(&mut self) {
        for attempt in 1..=START_ATTEMPTS {
            self.starts += 1;
            let mut log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .unwrap();
            writeln!(
                log,
                "===== e2e harness: start #{} (attempt {attempt}) =====",
                self.starts
            )
            .unwrap();
            drop(log);
            let before = std::fs::metadata(&self.log).unwrap().len();
            let mut command = match self.nofile {
                // `sh` sets the limit, then becomes the gateway (`exec`).
                Some(limit) => {
                    let mut sh = Command::new("sh");
                    sh.arg("-c")
                        .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                        .arg(env!("CARGO_BIN_EXE_fedgw"));
                    sh
                }
                None => Command::new(env!("CARGO_BIN_EXE_fedgw")),
            };
            command
                .arg("serve")
                .arg("--config")
                .arg(&self.config)
                .args(["--log", "info,fedgw=debug"])
                .env("NO_COLOR", "1");
            self.ended = None;
            self.process = Some(Process::spawn(
                self.trust_domain.as_str(),
                &mut command,
                &self.log,
            ));
            match self.wait_ready().await {
                Ready::Yes => return,
                Ready::Exited(status) => {
                    let text = std::fs::read(&self.log).unwrap_or_default();
                    let this_run =
                        String::from_utf8_lossy(&text[usize::try_from(before).unwrap()..])
                            .into_owned();
                    self.ended = self.process.take();
                    let in_use = this_run.contains("Address already in use")
                        || this_run.contains("os error 98");
                    assert!(
                        in_use && attempt < START_ATTEMPTS,
                        "{} exited during startup ({status}):\n{}",
                        self.trust_domain,
                        strip_ansi(&this_run)
                    );
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    async fn wait_ready(&mut self) -> Ready {
        let ports: Vec<u16> = self.web_port.into_iter().chain(self.spiffe_port).collect();
        let process = self.process.as_ref().unwrap();
        let what = format!("{} to start listening", self.trust_domain);
        wait_for(DEADLINE, &what, || async {
            if let Some(status) = process.exit_status() {
                return Some(Ready::Exited(status));
            }
            for port in &ports {
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, *port));
                tokio::net::TcpStream::connect(addr).await.ok()?;
            }
            Some(Ready::Yes)
        })
        .await
    }
}

enum Ready {
    Yes,
    Exited(std::process::ExitStatus),
}
