//! A real SPIRE deployment for tests: one `spire-server` and one `spire-agent`
//! (SPIRE v1.13, built by `scripts/peers.sh` from `tests/peers/spire`), every file in a
//! temporary directory, on a free loopback port.
//!
//! Include with `#[path = "support/spire.rs"] mod spire;`. [`Spire::start`] starts the
//! server (sqlite datastore, `join_token` node attestor, `disk` key manager, its admin
//! socket in the temporary directory, short CA and SVID lifetimes), generates a join
//! token whose agent gets the alias `spiffe://<td>/agent`, starts the agent (the
//! `unix` workload attestor, bootstrapped with `spire-server bundle show`), registers
//! `spiffe://<td>/fedgw` for the current uid, and returns once the agent's Workload
//! API serves that SVID. [`Spire::start_server_only`] stops after the server, for a
//! test that registers the workload ([`Spire::register_workload`]) and starts the agent
//! ([`Spire::start_agent`], [`Spire::start_agent_unregistered`]) later, in its own
//! order. The server and the agent are `fedgw_testkit::Process`es (killed on drop;
//! failures quote the tail of their logs), waits are the kit's `poll_for`, the port the
//! kit's `free_port`. A missing SPIRE (no Go to build it) fails the test, naming what to
//! install.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test crate uses a different subset"
)]

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use fedgw_testkit::wait::poll_for;
use fedgw_testkit::{Process, free_port};

/// How long SPIRE may take to come up or to answer.
const DEADLINE: Duration = Duration::from_secs(60);

/// How often SPIRE is asked again while it comes up.
const POLL: Duration = Duration::from_millis(200);

/// The directory holding `spire-server` and `spire-agent`, from `scripts/peers.sh`.
///
/// # Panics
/// If the script fails (Go missing, build failed), with its message.
pub fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Ok(dir) = std::env::var("FEDGW_SPIRE_BIN") {
            return PathBuf::from(dir);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let output = Command::new("bash")
            .arg(root.join("scripts/peers.sh"))
            .arg("spire")
            .output()
            .expect("run scripts/peers.sh (bash is needed)");
        assert!(
            output.status.success(),
            "scripts/peers.sh spire failed: SPIRE v1.13 is built from tests/peers/spire with Go 1.26 or later (install Go); it said:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let dir = stdout
            .lines()
            .find_map(|line| line.strip_prefix("spire="))
            .unwrap_or_else(|| panic!("scripts/peers.sh printed no spire= line: {stdout}"));
        let dir = PathBuf::from(dir.trim());
        for binary in ["spire-server", "spire-agent"] {
            assert!(
                dir.join(binary).is_file(),
                "{binary} missing from {}",
                dir.display()
            );
        }
        dir
    })
    .clone()
}

/// Lifetimes of the deployment.
#[derive(Debug, Clone)]
pub struct SpireOptions {
    /// The trust domain.
    pub trust_domain: String,
    /// `ca_ttl`, SPIRE duration syntax.
    pub ca_ttl: String,
    /// The workload entry's X509-SVID lifetime, seconds (the agent rotates at half).
    pub svid_ttl_seconds: u32,
}

impl Default for SpireOptions {
    fn default() -> Self {
        Self {
            trust_domain: "spire.test".to_owned(),
            ca_ttl: "1h".to_owned(),
            svid_ttl_seconds: 3600,
        }
    }
}

/// A running SPIRE server and agent.
#[derive(Debug)]
pub struct Spire {
    /// The trust domain.
    pub trust_domain: String,
    dir: PathBuf,
    bin: PathBuf,
    server: Option<Process>,
    agent: Option<Process>,
    agent_starts: u32,
    svid_ttl_seconds: u32,
}

impl Spire {
    /// Start a server and an agent under `dir` and register `spiffe://<td>/fedgw` for
    /// this uid; returns once the agent serves that SVID.
    pub async fn start(dir: &Path, options: SpireOptions) -> Self {
        let mut spire = Self::start_server_only(dir, options).await;
        spire.register_workload().await;
        spire.start_agent().await;
        spire
    }

    /// Write the server's and the agent's configuration under `dir` and start only
    /// the server: no registration entry, no agent, so no Workload API socket yet.
    pub async fn start_server_only(dir: &Path, options: SpireOptions) -> Self {
        let bin = bin_dir();
        let dir = dir.join("spire");
        for sub in ["server/data", "agent"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let port = free_port();
        let td = &options.trust_domain;
        let server_conf = format!(
            r#"server {{
    bind_address = "127.0.0.1"
    bind_port = "{port}"
    socket_path = "{server_sock}"
    trust_domain = "{td}"
    data_dir = "{data}"
    log_level = "DEBUG"
    ca_ttl = "{ca_ttl}"
    default_x509_svid_ttl = "{svid_ttl}s"
    default_jwt_svid_ttl = "5m"
}}

plugins {{
    DataStore "sql" {{
        plugin_data {{
            database_type = "sqlite3"
            connection_string = "{data}/datastore.sqlite3"
        }}
    }}
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
    KeyManager "disk" {{
        plugin_data {{
            keys_path = "{data}/keys.json"
        }}
    }}
}}
"#,
            server_sock = dir.join("server/api.sock").display(),
            data = dir.join("server/data").display(),
            ca_ttl = options.ca_ttl,
            svid_ttl = options.svid_ttl_seconds,
        );
        std::fs::write(dir.join("server/server.conf"), server_conf).unwrap();
        let agent_conf = format!(
            r#"agent {{
    data_dir = "{data}"
    log_level = "DEBUG"
    server_address = "127.0.0.1"
    server_port = "{port}"
    socket_path = "{agent_sock}"
    trust_bundle_path = "{bootstrap}"
    trust_domain = "{td}"
}}

plugins {{
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
    KeyManager "memory" {{
        plugin_data {{}}
    }}
    WorkloadAttestor "unix" {{
        plugin_data {{}}
    }}
}}
"#,
            data = dir.join("agent/data").display(),
            agent_sock = dir.join("agent/api.sock").display(),
            bootstrap = dir.join("agent/bootstrap.pem").display(),
        );
        std::fs::write(dir.join("agent/agent.conf"), agent_conf).unwrap();
        let mut spire = Self {
            trust_domain: td.clone(),
            dir,
            bin,
            server: None,
            agent: None,
            agent_starts: 0,
            svid_ttl_seconds: options.svid_ttl_seconds,
        };
        spire.start_server().await;
        spire
    }

    /// Register [`Self::workload_id`] for this uid under the agent (`entry create`).
    /// A running agent picks the entry up at its next sync with the server (every 5 s).
    pub async fn register_workload(&self) {
        let td = &self.trust_domain;
        let uid = rustix::process::getuid().as_raw();
        self.server_cmd(&[
            "entry",
            "create",
            "-parentID",
            &format!("spiffe://{td}/agent"),
            "-spiffeID",
            &format!("spiffe://{td}/fedgw"),
            "-selector",
            &format!("unix:uid:{uid}"),
            "-x509SVIDTTL",
            &self.svid_ttl_seconds.to_string(),
        ])
        .await;
    }

    /// The agent's Workload API, `unix:///…` (SPIFFE_ENDPOINT_SOCKET syntax).
    pub fn socket(&self) -> String {
        format!("unix://{}", self.dir.join("agent/api.sock").display())
    }

    /// The SPIFFE ID registered for this uid.
    pub fn workload_id(&self) -> String {
        format!("spiffe://{}/fedgw", self.trust_domain)
    }

    fn server_sock(&self) -> PathBuf {
        self.dir.join("server/api.sock")
    }

    /// Run `spire-server ARGS -socketPath <admin socket>` and return its stdout.
    ///
    /// # Panics
    /// If it fails, with its output.
    pub async fn server_cmd(&self, args: &[&str]) -> String {
        let output = self.try_server_cmd(args).await;
        assert!(
            output.status.success(),
            "spire-server {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    async fn try_server_cmd(&self, args: &[&str]) -> Output {
        let mut command = tokio::process::Command::new(self.bin.join("spire-server"));
        command
            .args(args)
            .arg("-socketPath")
            .arg(self.server_sock());
        command.output().await.unwrap()
    }

    /// `spire-server bundle show -format spiffe`, parsed.
    pub async fn bundle(&self) -> spiffe_federation::Bundle {
        let text = self
            .server_cmd(&["bundle", "show", "-format", "spiffe"])
            .await;
        let td = self.trust_domain.parse().unwrap();
        spiffe_federation::Bundle::parse(&td, text.as_bytes())
            .unwrap()
            .bundle
    }

    /// `localauthority x509 prepare` then `activate`: a new X.509 CA in the bundle.
    pub async fn rotate_x509_authority(&self) {
        let prepared = self
            .server_cmd(&["localauthority", "x509", "prepare", "-output", "json"])
            .await;
        let id = authority_id(&prepared);
        self.server_cmd(&[
            "localauthority",
            "x509",
            "activate",
            "-authorityID",
            &id,
            "-output",
            "json",
        ])
        .await;
    }

    /// `localauthority jwt prepare`: a new JWT authority in the bundle.
    pub async fn prepare_jwt_authority(&self) {
        self.server_cmd(&["localauthority", "jwt", "prepare", "-output", "json"])
            .await;
    }

    async fn start_server(&mut self) {
        let mut command = Command::new(self.bin.join("spire-server"));
        command
            .arg("run")
            .arg("-config")
            .arg(self.dir.join("server/server.conf"));
        let log = self.dir.join("server/server.log");
        self.server = Some(Process::spawn("spire-server", &mut command, &log).quiet());
        poll_for(
            DEADLINE,
            POLL,
            "spire-server to be healthy",
            || async {
                let output = self.try_server_cmd(&["healthcheck"]).await;
                if output.status.success() {
                    return Some(());
                }
                self.assert_alive();
                None
            },
            || self.logs(),
        )
        .await;
    }

    /// Start (again) the agent with a fresh join token and an empty data directory,
    /// and wait until its Workload API serves the registered SVID.
    pub async fn start_agent(&mut self) {
        self.spawn_agent().await;
        let last = RefCell::new(String::new());
        poll_for(
            DEADLINE,
            POLL,
            "the agent's Workload API to serve the registered SVID",
            || async {
                match self.fetch_svid().await {
                    Ok(id) if id == self.workload_id() => Some(()),
                    Ok(other) => panic!("the agent issued {other}, not {}", self.workload_id()),
                    Err(err) => {
                        self.assert_alive();
                        *last.borrow_mut() = err;
                        None
                    }
                }
            },
            || format!("(last: {})\n{}", last.borrow(), self.logs()),
        )
        .await;
    }

    /// Start the agent before [`Self::register_workload`], and wait until its Workload
    /// API answers this process, refusing it: no registration entry matches it yet.
    pub async fn start_agent_unregistered(&mut self) {
        self.spawn_agent().await;
        let last = RefCell::new(String::new());
        poll_for(
            DEADLINE,
            POLL,
            "the agent's Workload API to answer (refusing this process)",
            || async {
                let answer = match spiffe::WorkloadApiClient::connect_to(self.socket()).await {
                    Ok(client) => client
                        .fetch_x509_svid()
                        .await
                        .map(|svid| svid.spiffe_id().to_string()),
                    Err(err) => Err(err),
                };
                match answer {
                    Err(
                        spiffe::WorkloadApiError::NoIdentityIssued
                        | spiffe::WorkloadApiError::PermissionDenied(_),
                    ) => Some(()),
                    Ok(id) => panic!("the agent issued {id} before any registration entry"),
                    Err(err) => {
                        self.assert_alive();
                        *last.borrow_mut() = err.to_string();
                        None
                    }
                }
            },
            || format!("(last: {})\n{}", last.borrow(), self.logs()),
        )
        .await;
    }

    /// Start the agent process with a fresh join token and an empty data directory.
    async fn spawn_agent(&mut self) {
        assert!(self.agent.is_none(), "the agent is running");
        let td = self.trust_domain.clone();
        let bundle = self.server_cmd(&["bundle", "show"]).await;
        std::fs::write(self.dir.join("agent/bootstrap.pem"), bundle).unwrap();
        let out = self
            .server_cmd(&[
                "token",
                "generate",
                "-spiffeID",
                &format!("spiffe://{td}/agent"),
                "-ttl",
                "600",
            ])
            .await;
        let token = out
            .split_whitespace()
            .skip_while(|word| *word != "Token:")
            .nth(1)
            .unwrap_or_else(|| panic!("no token in {out:?}"))
            .to_owned();
        let data = self.dir.join("agent/data");
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).unwrap();
        let _ = std::fs::remove_file(self.dir.join("agent/api.sock"));
        self.agent_starts += 1;
        let log = self
            .dir
            .join(format!("agent/agent-{}.log", self.agent_starts));
        let mut command = Command::new(self.bin.join("spire-agent"));
        command
            .arg("run")
            .arg("-config")
            .arg(self.dir.join("agent/agent.conf"))
            .arg("-joinToken")
            .arg(&token);
        self.agent = Some(Process::spawn("spire-agent", &mut command, &log).quiet());
    }

    /// The SPIFFE ID of the SVID the agent serves this process now.
    ///
    /// # Errors
    /// The Workload API's error, as text.
    pub async fn fetch_svid(&self) -> Result<String, String> {
        let client = spiffe::WorkloadApiClient::connect_to(self.socket())
            .await
            .map_err(|err| err.to_string())?;
        let svid = client
            .fetch_x509_svid()
            .await
            .map_err(|err| err.to_string())?;
        Ok(svid.spiffe_id().to_string())
    }

    /// Kill the agent (SIGKILL) and wait for it.
    pub fn kill_agent(&mut self) {
        if let Some(agent) = self.agent.take() {
            agent.kill();
        }
    }

    fn assert_alive(&self) {
        let mut exited = None;
        for process in [&self.server, &self.agent].into_iter().flatten() {
            if let Some(status) = process.exit_status() {
                exited = Some(format!("{} exited ({status})", process.name()));
            }
        }
        if let Some(exited) = exited {
            panic!("{exited}:\n{}", self.logs());
        }
    }

    /// The server's and the agents' logs (for failure messages).
    pub fn logs(&self) -> String {
        let mut text = String::new();
        let mut files = vec![self.dir.join("server/server.log")];
        for n in 1..=self.agent_starts {
            files.push(self.dir.join(format!("agent/agent-{n}.log")));
        }
        for file in files {
            let body = std::fs::read_to_string(&file).unwrap_or_default();
            let tail: Vec<&str> = body.lines().rev().take(60).collect();
            text.push_str(&format!("--- {} (last lines)\n", file.display()));
            for line in tail.into_iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }
}

impl Drop for Spire {
    fn drop(&mut self) {
        // The agent first, then its server (each is killed as it is dropped).
        drop(self.agent.take());
        drop(self.server.take());
    }
}

/// The authority ID in `localauthority … prepare -output json`.
fn authority_id(json: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(json)
        .unwrap_or_else(|err| panic!("prepare output is not JSON ({err}): {json}"));
    fn find(value: &serde_json::Value) -> Option<String> {
        match value {
            serde_json::Value::Object(map) => map
                .get("authority_id")
                .and_then(|id| id.as_str().map(str::to_owned))
                .or_else(|| map.values().find_map(find)),
            serde_json::Value::Array(items) => items.iter().find_map(find),
            _ => None,
        }
    }
    find(&value).unwrap_or_else(|| panic!("no authority_id in {json}"))
}
