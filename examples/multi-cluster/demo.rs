//! The multi-cluster demonstration: three trust domains, three real `fedgw`
//! processes, and workloads in different domains completing mTLS with only the
//! bundles the gateways distributed (files sink) and SVIDs from their own domain's CA.
//!
//! Shared by `cargo run --example multi-cluster` (`main.rs`) and the test
//! `tests/multi_cluster.rs`, which runs the same code and asserts on the [`Report`].
//! Steps (README.md says what each proves):
//!
//! 1. each domain gets a CA and a gateway started from its committed configuration
//!    (`east.toml`, `west.toml`, `edge.toml`);
//! 2. the gateways are federated in a full mesh with `fedgw federation create`;
//! 3. (a) an east client calls a west server: mTLS succeeds;
//! 4. (b) a client with an SVID from a CA no gateway distributes, and an edge client
//!    the west server does not authorize, are both refused by the server;
//! 5. (c) west rotates its CA (new CA published next to the old one, endpoint and
//!    server SVIDs re-issued, old CA withdrawn): the call still works, with the new SVID;
//! 6. (d) east deletes its relationship with west: the call is refused by the client,
//!    which no longer has a bundle for west, while east to edge still works.
//!
//! Every step checks its own outcome and stops the run with an error naming what went
//! wrong; the gateways are killed on every exit path.

#![allow(
    clippy::print_stdout,
    reason = "a demonstration narrates its steps on standard output"
)]

#[path = "files.rs"]
mod files;
#[path = "gateways.rs"]
mod gateways;
#[path = "rotation.rs"]
mod rotation;
#[path = "workloads.rs"]
mod workloads;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use fedgw::outputs::files::MAP_FILE;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use spiffe_federation::{ClientAuthError, SpiffeId, client_auth_error};

use self::files::{authority, blocking, issue, read_map, wait_for_pem};
use self::gateways::{Domain, ENDPOINT_PATH, Gateway, Listeners, Prepared, make_ca, wait_for};
pub(crate) use self::workloads::CallError;
use self::workloads::{Exchange, Identity, Server, ServerEvent, call, openssl_call};

/// The "east" cluster: serves its bundle over `https_web`.
pub(crate) const EAST: Domain = Domain {
    name: "east",
    trust_domain: "east.fedgw.test",
    listeners: Listeners {
        web: true,
        spiffe: false,
    },
};

/// The "west" cluster: serves its bundle over `https_spiffe`; it rotates its CA.
pub(crate) const WEST: Domain = Domain {
    name: "west",
    trust_domain: "west.fedgw.test",
    listeners: Listeners {
        web: false,
        spiffe: true,
    },
};

/// The "edge" site: serves its bundle over both profiles.
pub(crate) const EDGE: Domain = Domain {
    name: "edge",
    trust_domain: "edge.fedgw.test",
    listeners: Listeners {
        web: true,
        spiffe: true,
    },
};

/// The three domains, in the order of the gateways.
pub(crate) const DOMAINS: [Domain; 3] = [EAST, WEST, EDGE];

/// How one gateway fetches another's bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// `https_web`, trusting the peer's web CA (`--extra-ca-roots`).
    Web,
    /// `https_spiffe`, bootstrapped from a copy of the peer's bundle.
    Spiffe,
}

/// The full mesh: (gateway, peer it fetches, profile). Every relationship is one way,
/// so mutual trust between two domains is two relationships.
const MESH: [(Domain, Domain, Via); 6] = [
    (EAST, WEST, Via::Spiffe),
    (EAST, EDGE, Via::Spiffe),
    (WEST, EAST, Via::Web),
    (WEST, EDGE, Via::Web),
    (EDGE, EAST, Via::Web),
    (EDGE, WEST, Via::Spiffe),
];

/// Whether the independent `openssl s_client` check must run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Openssl {
    /// Fail when `openssl` is missing (the test).
    #[allow(dead_code, reason = "the test requires openssl, the example does not")]
    Required,
    /// Skip the check when `openssl` is missing (the example).
    IfInstalled,
}

/// What to run with.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// The `fedgw` binary.
    pub(crate) fedgw: PathBuf,
    /// The directory of the committed configurations (`examples/multi-cluster`).
    pub(crate) configs: PathBuf,
    /// An empty directory for everything the run makes.
    pub(crate) work_dir: PathBuf,
    /// The `openssl s_client` check.
    pub(crate) openssl: Openssl,
}

/// A call the server refused.
#[derive(Debug)]
pub(crate) struct Refusal {
    /// What the client saw.
    pub(crate) client: CallError,
    /// The server's handshake error, carrying the verifier's `ClientAuthError`.
    pub(crate) server: rustls::Error,
}

impl Refusal {
    /// Why the server's verifier refused the client.
    pub(crate) fn reason(&self) -> Option<&ClientAuthError> {
        client_auth_error(&self.server)
    }
}

/// The outcome of every step, for the test to assert on.
#[derive(Debug)]
#[allow(
    dead_code,
    reason = "the example prints the run, the test reads the report"
)]
pub(crate) struct Report {
    /// (a) east client to west server.
    pub(crate) first_call: Exchange,
    /// (a) `openssl s_client` with east's copy of west's bundle: the server's reply,
    /// `None` when skipped.
    pub(crate) openssl_reply: Option<String>,
    /// (b) a client whose SVID comes from a CA no gateway distributes.
    pub(crate) impostor: Refusal,
    /// (b) an edge client, valid, but not authorized by the west server.
    pub(crate) unauthorized: Refusal,
    /// (c) while west's bundle holds the old and the new CA.
    pub(crate) during_rotation: Exchange,
    /// (c) after the old CA was withdrawn.
    pub(crate) after_rotation: Exchange,
    /// (c) the west server's SVID before the rotation (old CA).
    pub(crate) old_server_leaf: CertificateDer<'static>,
    /// (c) the west server's re-issued SVID (new CA).
    pub(crate) new_server_leaf: CertificateDer<'static>,
    /// (d) east client to west server after east deleted its relationship with west.
    pub(crate) after_delete: CallError,
    /// (d) east client to the edge server, at the same time.
    pub(crate) east_to_edge_after_delete: Exchange,
    /// How long the whole run took.
    pub(crate) elapsed: Duration,
}

/// Run the demonstration.
///
/// # Errors
/// When a step does not turn out as it should; the message names the step and ends
/// with the end of each gateway's log.
pub(crate) async fn run(options: &Options) -> anyhow::Result<Report> {
    let started = Instant::now();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    headline(
        "1",
        "three trust domains, each with its own CA and fedgw gateway",
    );
    let work = options.work_dir.clone();
    let prepared = blocking(move || {
        DOMAINS
            .iter()
            .map(|domain| Prepared::make(&work, *domain))
            .collect::<anyhow::Result<Vec<_>>>()
    })
    .await?;
    let mut gateways = Vec::new();
    for domain in &prepared {
        gateways.push(Gateway::start(&options.fedgw, &options.configs, domain).await?);
    }
    let mesh = Mesh {
        prepared,
        gateways,
        provider,
    };
    let outcome = mesh.scenario(options, started).await;
    let outcome = match outcome {
        Ok(report) => Ok(report),
        Err(err) => {
            let mut logs = String::new();
            for gateway in &mesh.gateways {
                logs.push_str(&format!(
                    "\n--- end of {} ---\n{}\n",
                    gateway.dir.join("fedgw.log").display(),
                    gateway.log_tail(25).await
                ));
            }
            Err(anyhow::anyhow!("{err:#}\n{logs}"))
        }
    };
    for gateway in mesh.gateways {
        gateway.stop().await;
    }
    outcome
}

/// The running gateways and their domains' files.
struct Mesh {
    prepared: Vec<Prepared>,
    gateways: Vec<Gateway>,
    provider: Arc<CryptoProvider>,
}

impl Mesh {
    fn gateway(&self, domain: Domain) -> anyhow::Result<&Gateway> {
        self.gateways
            .iter()
            .find(|g| g.domain == domain)
            .with_context(|| format!("no gateway for {}", domain.trust_domain))
    }

    fn prepared(&self, domain: Domain) -> anyhow::Result<&Prepared> {
        self.prepared
            .iter()
            .find(|p| p.domain == domain)
            .with_context(|| format!("no files for {}", domain.trust_domain))
    }

    async fn scenario(&self, options: &Options, started: Instant) -> anyhow::Result<Report> {
        for gateway in &self.gateways {
            let profiles: Vec<String> = [
                gateway
                    .web_url
                    .as_ref()
                    .map(|url| format!("https_web {url}")),
                gateway
                    .spiffe_url
                    .as_ref()
                    .map(|url| format!("https_spiffe {url}")),
            ]
            .into_iter()
            .flatten()
            .collect();
            say(&format!(
                "{:<16} {}  (config {name}/fedgw.toml from {name}.toml, log {name}/fedgw.log, bundle files {name}/bundles/)",
                gateway.domain.trust_domain,
                profiles.join(", "),
                name = gateway.domain.name,
            ));
        }
        say(&format!("work directory: {}", options.work_dir.display()));

        headline("2", "full-mesh federation with `fedgw federation create`");
        self.federate().await?;
        let converging = Instant::now();
        for gateway in &self.gateways {
            for peer in DOMAINS {
                let ca = authority(&self.prepared(peer)?.ca, peer).await?;
                wait_for_pem(gateway, peer, &BTreeSet::from([ca.der().to_vec()])).await?;
            }
        }
        say(&format!(
            "converged in {:.1} s: every gateway's files sink holds east's, west's and edge's bundle, each in its own file",
            converging.elapsed().as_secs_f64()
        ));

        let ids = Ids::new()?;
        let east = self.prepared(EAST)?;
        let west = self.prepared(WEST)?;
        let edge = self.prepared(EDGE)?;
        let east_client = issue(&east.ca, &east.dir, "client", &ids.east_client).await?;
        let edge_client = issue(&edge.ca, &edge.dir, "client", &ids.edge_client).await?;
        let west_server_svid = issue(&west.ca, &west.dir, "server", &ids.west_server).await?;
        let old_server_leaf = west_server_svid.leaf().cloned().context("empty SVID")?;
        let edge_server_svid = issue(&edge.ca, &edge.dir, "server", &ids.edge_server).await?;
        let allowed = vec![ids.east_client.clone()];
        let mut west_server = Server::start(
            west_server_svid,
            &west.bundles_dir(),
            allowed.clone(),
            Arc::clone(&self.provider),
        )
        .await?;
        let mut edge_server = Server::start(
            edge_server_svid,
            &edge.bundles_dir(),
            allowed,
            Arc::clone(&self.provider),
        )
        .await?;

        headline("a", "an east client calls a west server over mTLS");
        say(&format!(
            "server {} on {}: requires a client SVID, verifies it with the bundle of the client's own trust domain from west/bundles/{MAP_FILE}, admits {} only",
            ids.west_server, west_server.addr, ids.east_client
        ));
        say(&format!(
            "client {}: verifies the server as {} with east/bundles/{}.pem",
            ids.east_client, ids.west_server, WEST.trust_domain
        ));
        let first_call = self
            .expect_served(&east_client, &mut west_server, &ids.east_client)
            .await
            .context("(a) east client to west server")?;
        let openssl_reply = self
            .openssl_check(options.openssl, &east_client, &mut west_server, &ids)
            .await
            .context("(a) openssl s_client")?;

        headline("b", "negative controls: the west server refuses");
        let impostor_ca = blocking({
            let dir = options.work_dir.join("impostor");
            move || make_ca(&dir.join("ca"), EAST)
        })
        .await?;
        let impostor = issue(
            &impostor_ca,
            &options.work_dir.join("impostor"),
            "client",
            &ids.east_client,
        )
        .await?;
        say(&format!(
            "impostor: an SVID for {} from a CA of the same name that no gateway distributes",
            ids.east_client
        ));
        let impostor = self
            .expect_refused(&impostor, &mut west_server, |reason| {
                matches!(reason, ClientAuthError::Svid(_))
            })
            .await
            .context("(b) impostor client")?;
        say(&format!(
            "edge client {}: a valid SVID from edge's CA (west holds edge's bundle), but the server admits {} only",
            ids.edge_client, ids.east_client
        ));
        let unauthorized = self
            .expect_refused(&edge_client, &mut west_server, |reason| {
                matches!(reason, ClientAuthError::NotAuthorized { id } if *id == ids.edge_client)
            })
            .await
            .context("(b) edge client")?;

        headline("c", "west rotates its CA");
        let rotation = self
            .rotate_west(&east_client, &mut west_server, &ids)
            .await
            .context("(c) west CA rotation")?;

        headline("d", "east deletes its federation relationship with west");
        let east_gateway = self.gateway(EAST)?;
        let args = ["federation", "delete", "--trust-domain", WEST.trust_domain];
        say(&format!(
            "(east) $ fedgw {} --admin unix:data/admin.sock",
            args.join(" ")
        ));
        east_gateway.cli(&args).await?;
        for file in [
            format!("{}.pem", WEST.trust_domain),
            format!("{}.json", WEST.trust_domain),
        ] {
            let path = east_gateway.bundles_dir().join(&file);
            wait_for(&format!("east's files sink to remove {file}"), || async {
                (!tokio::fs::try_exists(&path).await.unwrap_or(true)).then_some(())
            })
            .await?;
        }
        let map = read_map(&east_gateway.bundles_dir()).await?;
        let west_td = WEST.td()?;
        ensure!(
            map.get(&west_td).is_none(),
            "east's {MAP_FILE} still holds west"
        );
        let held: Vec<String> = map.iter().map(|(td, _)| td.to_string()).collect();
        say(&format!(
            "east/bundles/ lost west's files; east/bundles/{MAP_FILE} now holds: {}",
            held.join(", ")
        ));
        west_server.drain();
        let after_delete = match call(
            &east_client,
            &east_gateway.bundles_dir(),
            &ids.west_server,
            west_server.addr,
            &self.provider,
        )
        .await
        {
            Ok(exchange) => bail!("(d) the call to west still worked: {:?}", exchange.reply),
            Err(err @ CallError::MissingBundle { .. }) => err,
            Err(other) => bail!("(d) the call failed, but not for the missing bundle: {other}"),
        };
        say(&format!(
            "east client to west server: refused by the client: {after_delete}"
        ));
        let east_to_edge_after_delete = self
            .expect_served(&east_client, &mut edge_server, &ids.east_client)
            .await
            .context("(d) east client to edge server")?;

        let elapsed = started.elapsed();
        headline(
            "done",
            &format!(
                "every step turned out as expected, in {:.1} s",
                elapsed.as_secs_f64()
            ),
        );
        Ok(Report {
            first_call,
            openssl_reply,
            impostor,
            unauthorized,
            during_rotation: rotation.during,
            after_rotation: rotation.after,
            old_server_leaf,
            new_server_leaf: rotation.new_leaf,
            after_delete,
            east_to_edge_after_delete,
            elapsed,
        })
    }

    /// Create the six relationships of [`MESH`] with the CLI.
    async fn federate(&self) -> anyhow::Result<()> {
        for (from, to, via) in MESH {
            let gateway = self.gateway(from)?;
            let peer = self.gateway(to)?;
            let endpoint_id = to.id(ENDPOINT_PATH)?.to_string();
            let peer_files = format!("../{}/pki", to.name);
            let mut args = vec![
                "federation".to_owned(),
                "create".to_owned(),
                "--trust-domain".to_owned(),
                to.trust_domain.to_owned(),
                "--bundle-endpoint-url".to_owned(),
            ];
            match via {
                Via::Web => args.extend([
                    peer.web_url.clone().context("peer without https_web")?,
                    "--bundle-endpoint-profile".to_owned(),
                    "https_web".to_owned(),
                    "--extra-ca-roots".to_owned(),
                    format!("{peer_files}/web-ca.pem"),
                ]),
                Via::Spiffe => args.extend([
                    peer.spiffe_url
                        .clone()
                        .context("peer without https_spiffe")?,
                    "--bundle-endpoint-profile".to_owned(),
                    "https_spiffe".to_owned(),
                    "--endpoint-spiffe-id".to_owned(),
                    endpoint_id,
                    "--trust-domain-bundle-path".to_owned(),
                    format!("{peer_files}/bundle.json"),
                ]),
            }
            args.extend(["--proxy".to_owned(), "off".to_owned()]);
            say(&format!(
                "({}) $ fedgw {} --admin unix:data/admin.sock",
                from.name,
                args.join(" ")
            ));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            gateway.cli(&args).await?;
        }
        Ok(())
    }

    /// A call that must succeed, and be seen by the server as `client_id`.
    async fn expect_served(
        &self,
        client: &Identity,
        server: &mut Server,
        client_id: &SpiffeId,
    ) -> anyhow::Result<Exchange> {
        let bundles = self.gateway(client_domain(client)?)?.bundles_dir();
        server.drain();
        let exchange = call(client, &bundles, &server.id(), server.addr, &self.provider).await?;
        match server.next_event().await {
            Some(ServerEvent::Served(id)) if id == *client_id => {}
            Some(ServerEvent::Failed(reason)) => bail!("the server failed: {reason}"),
            other => bail!("the server saw {other:?}, not {client_id}"),
        }
        say(&format!(
            "{} to {}: mTLS ok; the server answered {:?}",
            client.id, exchange.server_id, exchange.reply
        ));
        Ok(exchange)
    }

    /// A call the server must refuse for a reason `expected` accepts.
    async fn expect_refused(
        &self,
        client: &Identity,
        server: &mut Server,
        expected: impl Fn(&ClientAuthError) -> bool,
    ) -> anyhow::Result<Refusal> {
        let bundles = self.gateway(client_domain(client)?)?.bundles_dir();
        server.drain();
        let result = call(client, &bundles, &server.id(), server.addr, &self.provider).await;
        let client_error = match result {
            Ok(exchange) => bail!("the call worked: {:?}", exchange.reply),
            Err(err @ CallError::Tls(_)) => err,
            Err(other) => bail!("the call failed before the handshake: {other}"),
        };
        let server_error = match server.next_event().await {
            Some(ServerEvent::Refused(err)) => err,
            Some(ServerEvent::Failed(reason)) => bail!("the server failed: {reason}"),
            other => bail!("the server saw {other:?} (the client saw {client_error})"),
        };
        let refusal = Refusal {
            client: client_error,
            server: server_error,
        };
        match refusal.reason() {
            Some(reason) if expected(reason) => say(&format!(
                "refused by the server's SPIFFE verifier: {reason}; the client got: {}",
                refusal.client
            )),
            Some(reason) => bail!("refused, but for another reason: {reason}"),
            None => bail!(
                "refused, but not by the SPIFFE verifier: {}",
                refusal.server
            ),
        }
        Ok(refusal)
    }

    /// An independent TLS stack as the client: `openssl s_client` with east's copy of
    /// west's bundle as `-CAfile` and east's client SVID.
    async fn openssl_check(
        &self,
        mode: Openssl,
        client: &Identity,
        server: &mut Server,
        ids: &Ids,
    ) -> anyhow::Result<Option<String>> {
        let ca_file = self
            .gateway(EAST)?
            .bundles_dir()
            .join(format!("{}.pem", WEST.trust_domain));
        server.drain();
        let Some(output) = openssl_call(server.addr, &ca_file, client)
            .await
            .context("running openssl s_client")?
        else {
            ensure!(mode == Openssl::IfInstalled, "openssl is not installed");
            say("openssl is not installed: the independent s_client check is skipped");
            return Ok(None);
        };
        let stdout = String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_owned();
        let expected = format!("hello {}, this is {}", ids.east_client, ids.west_server);
        ensure!(
            output.status.success() && stdout == expected,
            "openssl s_client ({}) printed {stdout:?}, expected {expected:?}; stderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        match server.next_event().await {
            Some(ServerEvent::Served(id)) if id == ids.east_client => {}
            other => bail!("the server saw {other:?}"),
        }
        say(&format!(
            "openssl s_client -CAfile east/bundles/{}.pem -cert <east client SVID>: verified, the server answered {stdout:?}",
            WEST.trust_domain
        ));
        Ok(Some(stdout))
    }
}

/// The workload SPIFFE IDs.
struct Ids {
    east_client: SpiffeId,
    edge_client: SpiffeId,
    west_server: SpiffeId,
    edge_server: SpiffeId,
}

impl Ids {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            east_client: EAST.id("/client")?,
            edge_client: EDGE.id("/client")?,
            west_server: WEST.id("/server")?,
            edge_server: EDGE.id("/server")?,
        })
    }
}

/// The demonstration domain a workload belongs to (its gateway's files are its trust).
fn client_domain(client: &Identity) -> anyhow::Result<Domain> {
    DOMAINS
        .into_iter()
        .find(|d| d.trust_domain == client.id.trust_domain().as_str())
        .with_context(|| format!("{} is in no demonstration domain", client.id))
}

fn headline(step: &str, text: &str) {
    println!("\n==> [{step}] {text}");
}

fn say(text: &str) {
    println!("    {text}");
}
