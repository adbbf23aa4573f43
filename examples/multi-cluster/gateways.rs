//! The three `fedgw serve` processes of the demonstration, and the `fedgw` command
//! line used on them.
//!
//! Owns, per trust domain: its directory (`<work>/<name>/`), the development CA that
//! stands in for the domain's SPIRE server (`ca/`, made with `fedgw::dev::pki`), the
//! files the gateway is configured with (`pki/`), the copy of the committed
//! configuration with free loopback ports in place of the example ones, the process
//! (started in that directory, so the configuration's relative paths resolve there;
//! its log in `fedgw.log`), and waiting for it to serve. Processes are killed when
//! their [`Gateway`] is dropped, on every exit path.
//!
//! It does not own the scenario (`demo.rs`) or the workloads (`workloads.rs`).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fedgw::app::Config;
use fedgw::client::admin_client::{AdminClient, AdminTarget};
use fedgw::dev::pki::{self as dev_pki, DevPkiPaths};
use reqwest::Method;
use spiffe_federation::{SpiffeId, TrustDomain};
use time::OffsetDateTime;
use tokio::process::{Child, Command};

/// How long any condition may take to become true before the demonstration gives up.
/// Generous, so that a slow machine never fails a correct gateway.
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

/// How often conditions are checked again.
const POLL: Duration = Duration::from_millis(100);

/// How often a start that lost a free port to another process is retried.
const START_ATTEMPTS: u32 = 5;

/// The path of every gateway's bundle endpoint SPIFFE ID.
pub(crate) const ENDPOINT_PATH: &str = "/fedgw/bundle-endpoint";

/// Which bundle endpoint listeners a gateway has (as in its committed configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Listeners {
    /// `[endpoint.https_web]`.
    pub(crate) web: bool,
    /// `[endpoint.https_spiffe]`.
    pub(crate) spiffe: bool,
}

/// One trust domain of the demonstration and its gateway's committed configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Domain {
    /// The short name: the configuration file is `<name>.toml`.
    pub(crate) name: &'static str,
    /// The trust domain.
    pub(crate) trust_domain: &'static str,
    /// The listeners its configuration declares.
    pub(crate) listeners: Listeners,
}

impl Domain {
    /// The trust domain, parsed.
    pub(crate) fn td(&self) -> anyhow::Result<TrustDomain> {
        Ok(self.trust_domain.parse()?)
    }

    /// A workload ID in this domain, e.g. `spiffe://east.fedgw.test/client`.
    pub(crate) fn id(&self, path: &str) -> anyhow::Result<SpiffeId> {
        Ok(SpiffeId::new(self.td()?, path)?)
    }
}

/// Poll `check` until it yields `Some`, every [`POLL`], for at most [`DEADLINE`].
///
/// # Errors
/// When the deadline passes, naming `what`.
pub(crate) async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if start.elapsed() > DEADLINE {
            bail!("timed out after {DEADLINE:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A domain's files before its gateway runs: CA made, gateway PKI in place.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The domain.
    pub(crate) domain: Domain,
    /// `<work>/<name>/`, the gateway's working directory.
    pub(crate) dir: PathBuf,
    /// The domain's development CA (its private key stays here, as with SPIRE).
    pub(crate) ca: DevPkiPaths,
}

impl Prepared {
    /// Make the domain's CA under `dir/ca/` and put what the gateway needs where its
    /// configuration says: `pki/bundle.json` (the local bundle); with `https_web`,
    /// `pki/web.pem` and `pki/web.key` (its certificate) and `pki/web-ca.pem` (the
    /// web CA peers trust for it); with `https_spiffe`, `pki/endpoint-svid.pem` and
    /// `.key` (its X509-SVID). Blocking: call it off the async reactor.
    ///
    /// # Errors
    /// When a certificate or file cannot be made.
    pub(crate) fn make(work: &Path, domain: Domain) -> anyhow::Result<Self> {
        let dir = work.join(domain.name);
        let ca = make_ca(&dir.join("ca"), domain)?;
        let pki = dir.join("pki");
        std::fs::create_dir_all(&pki)?;
        let mut files = vec![(&ca.bundle, "bundle.json")];
        if domain.listeners.web {
            files.extend([
                (&ca.web_ca_cert, "web-ca.pem"),
                (&ca.web_cert, "web.pem"),
                (&ca.web_key, "web.key"),
            ]);
        }
        if domain.listeners.spiffe {
            files.extend([
                (&ca.svid, "endpoint-svid.pem"),
                (&ca.svid_key, "endpoint-svid.key"),
            ]);
        }
        for (from, to) in files {
            std::fs::copy(from, pki.join(to))
                .with_context(|| format!("copying {}", from.display()))?;
        }
        Ok(Self { domain, dir, ca })
    }

    /// The local bundle file the gateway watches.
    pub(crate) fn bundle_file(&self) -> PathBuf {
        self.dir.join("pki/bundle.json")
    }

    /// The files sink's directory.
    pub(crate) fn bundles_dir(&self) -> PathBuf {
        self.dir.join("bundles")
    }
}

/// A development CA for `domain` under `dir` (`dir/dev-pki/<td>/`), with a bundle
/// holding it, and an endpoint X509-SVID and web certificate issued from it.
/// Blocking.
///
/// # Errors
/// When a certificate or file cannot be made.
pub(crate) fn make_ca(dir: &Path, domain: Domain) -> anyhow::Result<DevPkiPaths> {
    let td = domain.td()?;
    let endpoint_id = domain.id(ENDPOINT_PATH)?;
    let names = ["localhost".to_owned(), "127.0.0.1".to_owned()];
    Ok(dev_pki::ensure(
        dir,
        &td,
        &endpoint_id,
        &names,
        OffsetDateTime::now_utc(),
    )?)
}

/// A running `fedgw serve`. Dropping it kills the process.
#[derive(Debug)]
pub(crate) struct Gateway {
    /// The domain.
    pub(crate) domain: Domain,
    /// Its working directory.
    pub(crate) dir: PathBuf,
    /// `https://127.0.0.1:<port>/` of its `https_web` listener.
    pub(crate) web_url: Option<String>,
    /// `https://127.0.0.1:<port>/` of its `https_spiffe` listener.
    pub(crate) spiffe_url: Option<String>,
    fedgw: PathBuf,
    child: Child,
}

impl Gateway {
    /// Copy `configs/<name>.toml` into the domain's directory with free loopback
    /// ports, check it with fedgw's own loader, start `fedgw serve` there and wait
    /// until its admin API is ready and its files sink holds its own bundle. A start
    /// that lost a port to another process is retried with new ports.
    ///
    /// # Errors
    /// When the configuration is refused or the gateway does not come up; with the
    /// end of its log.
    pub(crate) async fn start(
        fedgw: &Path,
        configs: &Path,
        prepared: &Prepared,
    ) -> anyhow::Result<Self> {
        let domain = prepared.domain;
        let committed = configs.join(format!("{}.toml", domain.name));
        let text = tokio::fs::read_to_string(&committed)
            .await
            .with_context(|| format!("reading {}", committed.display()))?;
        let log = prepared.dir.join("fedgw.log");
        for attempt in 1..=START_ATTEMPTS {
            let web = if domain.listeners.web {
                Some(free_port().await?)
            } else {
                None
            };
            let spiffe = if domain.listeners.spiffe {
                Some(free_port().await?)
            } else {
                None
            };
            let config = with_ports(&text, web, spiffe)
                .with_context(|| format!("templating {}", committed.display()))?;
            tokio::fs::write(prepared.dir.join("fedgw.toml"), &config).await?;
            let log_file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .await?
                .into_std()
                .await;
            let child = Command::new(fedgw)
                .args(["serve", "--config", "fedgw.toml", "--log", "info"])
                .current_dir(&prepared.dir)
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(log_file.try_clone()?)
                .stderr(log_file)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {}", fedgw.display()))?;
            let mut gateway = Self {
                domain,
                dir: prepared.dir.clone(),
                web_url: web.map(|port| format!("https://127.0.0.1:{port}/")),
                spiffe_url: spiffe.map(|port| format!("https://127.0.0.1:{port}/")),
                fedgw: fedgw.to_path_buf(),
                child,
            };
            match gateway.wait_ready().await {
                Ok(()) => return Ok(gateway),
                Err(err) => {
                    let tail = gateway.log_tail(20).await;
                    let lost_port = tail.contains("Address already in use");
                    if !lost_port || attempt == START_ATTEMPTS {
                        return Err(err.context(format!(
                            "{} did not start; its log ends:\n{tail}",
                            domain.trust_domain
                        )));
                    }
                }
            }
        }
        bail!("{} did not start", domain.trust_domain)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let socket = self.dir.join("data/admin.sock");
        let admin = AdminClient::new(&AdminTarget::Unix(socket), None)?;
        let own_pem = self
            .bundles_dir()
            .join(format!("{}.pem", self.domain.trust_domain));
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("fedgw exited during startup ({status})");
            }
            let ready = admin.call(Method::GET, "/readyz", None).await.is_ok();
            if ready && tokio::fs::try_exists(&own_pem).await.unwrap_or(false) {
                return Ok(());
            }
            if start.elapsed() > DEADLINE {
                bail!("not ready within {DEADLINE:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The files sink's directory.
    pub(crate) fn bundles_dir(&self) -> PathBuf {
        self.dir.join("bundles")
    }

    /// Run `fedgw <args> --admin unix:data/admin.sock` in the gateway's directory, as
    /// an operator on that host would; its standard output.
    ///
    /// # Errors
    /// When the command fails, with its standard error.
    pub(crate) async fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = Command::new(&self.fedgw)
            .args(args)
            .args(["--admin", "unix:data/admin.sock"])
            .current_dir(&self.dir)
            .kill_on_drop(true)
            .output()
            .await?;
        if !output.status.success() {
            bail!(
                "({}) fedgw {} failed ({}): {}",
                self.domain.name,
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim_end()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The last `lines` lines of the gateway's log.
    pub(crate) async fn log_tail(&self, lines: usize) -> String {
        let text = tokio::fs::read_to_string(self.dir.join("fedgw.log"))
            .await
            .unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Kill the process and wait for it to end.
    pub(crate) async fn stop(mut self) {
        // An error means it has already exited: nothing left to stop.
        self.child.kill().await.ok();
    }
}

/// A free loopback port: bind port 0, read it, release it. The gateway binds it
/// later; a start that loses the race is retried.
async fn free_port() -> anyhow::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Ok(listener.local_addr()?.port())
}

/// The configuration `text` with the `listen` address of each endpoint listener
/// replaced by `127.0.0.1:<port>`, checked by fedgw's configuration loader.
///
/// # Errors
/// When the text is not TOML, a listener is missing, or fedgw refuses the result.
pub(crate) fn with_ports(
    text: &str,
    web: Option<u16>,
    spiffe: Option<u16>,
) -> anyhow::Result<String> {
    let mut table: toml::Table = text.parse()?;
    let endpoint = table
        .get_mut("endpoint")
        .and_then(toml::Value::as_table_mut)
        .context("no [endpoint] table")?;
    for (profile, port) in [("https_web", web), ("https_spiffe", spiffe)] {
        let Some(port) = port else { continue };
        let listener = endpoint
            .get_mut(profile)
            .and_then(toml::Value::as_table_mut)
            .with_context(|| format!("no [endpoint.{profile}] table"))?;
        listener.insert("listen".to_owned(), format!("127.0.0.1:{port}").into());
    }
    let text = toml::to_string(&table)?;
    Config::from_toml(&text)?;
    Ok(text)
}
