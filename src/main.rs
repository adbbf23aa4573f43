//! The `fedgw` command line: parses arguments, calls the library, prints, and sets
//! the exit code. Nothing else lives here.
//!
//! Exit codes: 0 success; 1 the input was refused, could not be read, or the gateway
//! could not start; 2 usage error.

#![expect(clippy::print_stdout, reason = "the CLI's output is stdout")]

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use fedgw::admin_client::{AdminClient, AdminTarget, ClientTls};
use fedgw::cli::{self, Output, RelationshipArgs, RelationshipBody};
use fedgw::config::{Config, DocumentFormat, ProfileName, ProxyConfig, Seconds};
use fedgw::shutdown::Shutdown;
use fedgw::sinks::files::{FileMode, FilesSinkConfig};
use fedgw::telemetry::LogFormat;
use fedgw::validate::{self, Format, ValidateError};
use spiffe_federation::{SpiffeId, TrustDomain};
use url::Url;

/// The allocator. glibc's malloc keeps what many short-lived connections freed in its
/// per-thread arenas: after 1,500 clients that did not read had come and gone, a
/// gateway stayed ~110 MiB above its baseline. mimalloc returns freed pages to the
/// operating system, so the process shrinks back once an attack ends.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// fedgw: SPIFFE trust-domain federation gateway.
#[derive(Debug, Parser)]
#[command(name = "fedgw", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (with no --config: one local development trust domain).
    Serve(ServeArgs),
    /// Start a local federation of several trust domains with embedded defaults and
    /// show what each gateway holds.
    Demo(DemoArgs),
    /// Federation relationships (like `spire-server federation`).
    #[command(subcommand)]
    Federation(FederationCommand),
    /// Work with SPIFFE bundles (like `spire-server bundle`).
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Freshness of every trust domain the gateway knows.
    Status(AdminArgs),
    /// Admin helpers.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// JWT-SVIDs.
    #[command(subcommand)]
    Jwt(JwtCommand),
    /// Follow a gateway's bundles and keep them as files on this node.
    Agent(AgentArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// The TOML configuration file.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// With no --config: where the embedded default keeps its data, its development
    /// PKI (`dev-pki/<td>/`) and its admin socket (`admin.sock`).
    #[arg(long, default_value = "fedgw-data")]
    data_dir: PathBuf,
    /// With no --config: the local trust domain.
    #[arg(
        long,
        value_name = "TD",
        conflicts_with = "config",
        default_value = "dev.fedgw.localhost"
    )]
    trust_domain: TrustDomain,
    /// With no --config: where the https_web bundle endpoint listens.
    #[arg(
        long,
        value_name = "ADDR",
        conflicts_with = "config",
        default_value = "127.0.0.1:8443"
    )]
    web_listen: std::net::SocketAddr,
    /// With no --config: where the https_spiffe bundle endpoint listens.
    #[arg(
        long,
        value_name = "ADDR",
        conflicts_with = "config",
        default_value = "127.0.0.1:8444"
    )]
    spiffe_listen: std::net::SocketAddr,
    /// With no --config: the spiffe_refresh_hint served with the local bundle
    /// (`[[local]] refresh_hint`).
    #[arg(
        long,
        value_name = "DURATION",
        conflicts_with = "config",
        default_value = "5m"
    )]
    refresh_hint: Seconds,
    /// With no --config: the shortest refresh interval for foreign bundles
    /// (`[polling] min_refresh`); foreign hints below it are raised to it.
    #[arg(
        long,
        value_name = "DURATION",
        conflicts_with = "config",
        default_value = "60s"
    )]
    min_refresh: Seconds,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log filter (RUST_LOG syntax).
    #[arg(long, default_value = "info", env = "FEDGW_LOG")]
    log: String,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Trust domains to federate (at least two).
    #[arg(long = "domain", default_values = ["east.demo.localhost", "west.demo.localhost", "edge.demo.localhost"])]
    domains: Vec<TrustDomain>,
    /// Where the gateways keep their data.
    #[arg(long, default_value = "fedgw-demo")]
    data_dir: PathBuf,
    /// Exit after showing the converged federation instead of running until Ctrl-C.
    #[arg(long)]
    once: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Log filter (RUST_LOG syntax).
    #[arg(long, default_value = "error", env = "FEDGW_LOG")]
    log: String,
}

#[derive(Debug, Args, Clone)]
struct AdminArgs {
    #[command(flatten)]
    connection: AdminConnection,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

/// How to reach the admin API.
#[derive(Debug, Args, Clone)]
struct AdminConnection {
    /// The admin API: `unix:/path/to.sock`, `https://host:port` or `http://host:port`.
    #[arg(long, env = "FEDGW_ADMIN", default_value = cli::DEFAULT_ADMIN)]
    admin: AdminTarget,
    /// A file holding a bearer token for a TCP admin API.
    #[arg(long, env = "FEDGW_ADMIN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// https: PEM CA certificates, or a SPIFFE bundle, that the admin server's
    /// certificate must chain to (default: the system's roots).
    #[arg(long, env = "FEDGW_ADMIN_CA")]
    admin_ca: Option<PathBuf>,
    /// https: the client certificate chain for mTLS (PEM; an X509-SVID).
    #[arg(long, env = "FEDGW_ADMIN_CERT", requires = "admin_key")]
    admin_cert: Option<PathBuf>,
    /// https: the private key (PEM) of --admin-cert.
    #[arg(long, env = "FEDGW_ADMIN_KEY", requires = "admin_cert")]
    admin_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct AgentArgs {
    #[command(flatten)]
    connection: AdminConnection,
    /// The directory to keep bundle files in (`<td>.pem`, `<td>.json`,
    /// `bundle-map.json`), as a `[[sinks.files]]` does.
    #[arg(long)]
    dir: PathBuf,
    /// Write only this trust domain (repeat for several); all by default.
    #[arg(long = "trust-domain", short = 't', value_name = "TD")]
    trust_domains: Vec<TrustDomain>,
    /// A program to run after each change, with its arguments (no shell). Takes every
    /// argument after it, so put it last.
    #[arg(long = "on-change", value_name = "CMD", num_args = 1.., allow_hyphen_values = true)]
    on_change: Vec<String>,
    /// Permission bits of the files written.
    #[arg(long, default_value = "0644")]
    mode: FileMode,
    /// The largest answer read from the gateway, in bytes (default 256 MiB); a larger
    /// one is refused, logged and retried after the backoff.
    #[arg(long, value_name = "BYTES", default_value_t = fedgw::admin_client::DEFAULT_MAX_RESPONSE_BYTES)]
    max_response_bytes: u64,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log filter (RUST_LOG syntax).
    #[arg(long, default_value = "info", env = "FEDGW_LOG")]
    log: String,
}

/// The flags of `spire-server federation create|update` (`-trustDomain`,
/// `-bundleEndpointURL`, …), spelled the GNU way; or the whole body with `--data`.
#[derive(Debug, Args)]
struct RelationshipFlags {
    /// The foreign trust domain (never inferred from the URL).
    #[arg(long, short = 't', required_unless_present = "data")]
    trust_domain: Option<TrustDomain>,
    /// The bundle endpoint URL; repeat for mirrors, tried in order.
    #[arg(
        long = "bundle-endpoint-url",
        value_name = "URL",
        required_unless_present = "data"
    )]
    urls: Vec<Url>,
    /// The bundle endpoint profile.
    #[arg(
        long = "bundle-endpoint-profile",
        value_enum,
        value_name = "PROFILE",
        required_unless_present = "data"
    )]
    profile: Option<ProfileArg>,
    /// https_spiffe: the endpoint server's SPIFFE ID.
    #[arg(long, value_name = "ID")]
    endpoint_spiffe_id: Option<SpiffeId>,
    /// https_spiffe: a bundle of the endpoint SPIFFE ID's trust domain to start from,
    /// sent inline.
    #[arg(long = "trust-domain-bundle-path", value_name = "FILE")]
    bundle_path: Option<PathBuf>,
    /// Format of --trust-domain-bundle-path.
    #[arg(
        long = "trust-domain-bundle-format",
        value_enum,
        value_name = "FORMAT",
        default_value = "spiffe",
        requires = "bundle_path"
    )]
    bundle_format: FormatArg,
    /// https_web: extra PEM CA roots trusted besides the system store, sent inline.
    #[arg(long, value_name = "FILE")]
    extra_ca_roots: Option<PathBuf>,
    /// Do not follow redirects.
    #[arg(long)]
    no_follow_redirects: bool,
    /// Accept a fetched empty `keys` list, which revokes every key of the trust
    /// domain (refused by default).
    #[arg(long)]
    allow_revocation: bool,
    /// `env` (HTTPS_PROXY/NO_PROXY, the gateway's default), `off`, or a proxy URL.
    #[arg(long, value_parser = parse_proxy)]
    proxy: Option<ProxyConfig>,
    /// The whole JSON body of the admin API instead of the flags above; `-` reads
    /// standard input.
    #[arg(
        long,
        value_name = "FILE|-",
        conflicts_with_all = [
            "trust_domain", "urls", "profile", "endpoint_spiffe_id", "bundle_path",
            "extra_ca_roots", "no_follow_redirects", "allow_revocation", "proxy",
        ]
    )]
    data: Option<PathBuf>,
}

fn parse_proxy(value: &str) -> Result<ProxyConfig, String> {
    ProxyConfig::try_from(value.to_owned())
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ProfileArg {
    /// Server authenticated by Web PKI.
    #[value(name = "https_web", alias = "https-web")]
    HttpsWeb,
    /// Server authenticated by its X509-SVID.
    #[value(name = "https_spiffe", alias = "https-spiffe")]
    HttpsSpiffe,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    Spiffe,
    Pem,
}

impl From<FormatArg> for DocumentFormat {
    fn from(value: FormatArg) -> Self {
        match value {
            FormatArg::Spiffe => Self::Spiffe,
            FormatArg::Pem => Self::Pem,
        }
    }
}

#[derive(Debug, Subcommand)]
enum FederationCommand {
    /// Create a relationship (kept by the gateway across restarts).
    Create {
        #[command(flatten)]
        relationship: RelationshipFlags,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List relationships with their state.
    List(AdminArgs),
    /// Show one relationship.
    Show {
        /// The trust domain.
        trust_domain: TrustDomain,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Replace a relationship created through the admin API.
    Update {
        #[command(flatten)]
        relationship: RelationshipFlags,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Delete a relationship created through the admin API: stop polling and remove
    /// its bundle everywhere.
    Delete {
        /// The trust domain.
        #[arg(long, short = 't')]
        trust_domain: TrustDomain,
        /// Delete even while other relationships' https_spiffe endpoints are
        /// authenticated by this trust domain's bundle.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Create or update relationships from spire-controller-manager
    /// ClusterFederatedTrustDomain YAML (one or more documents); unchanged ones are
    /// left alone.
    Apply {
        /// The YAML file; `-` reads standard input.
        #[arg(long, short = 'f', value_name = "FILE|-")]
        file: PathBuf,
        /// Only parse and check the file; send nothing to the gateway.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Fetch a foreign bundle now.
    Refresh {
        /// The trust domain.
        trust_domain: TrustDomain,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
enum BundleCommand {
    /// Check a bundle document offline: list its authorities and everything ignored.
    Validate {
        /// The trust domain the bundle belongs to (not used with --format map).
        #[arg(long, short = 't', value_name = "TD")]
        trust_domain: Option<TrustDomain>,
        /// Document format.
        #[arg(long, short = 'f', value_enum, default_value = "spiffe")]
        format: Format,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// The document; `-` reads standard input.
        file: PathBuf,
    },
    /// List the bundles the gateway holds.
    List(AdminArgs),
    /// Print one bundle document.
    Show {
        /// The trust domain.
        trust_domain: TrustDomain,
        /// Output format.
        #[arg(long, value_enum, default_value = "spiffe")]
        format: FormatArg,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Set a bundle as an operator override (replaced by the next successful fetch).
    Set {
        /// The trust domain.
        trust_domain: TrustDomain,
        /// The document; `-` reads standard input.
        file: PathBuf,
        /// Document format.
        #[arg(long, value_enum, default_value = "spiffe")]
        format: FormatArg,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Delete a bundle.
    Delete {
        /// The trust domain.
        trust_domain: TrustDomain,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Past versions of a bundle.
    History {
        /// The trust domain.
        trust_domain: TrustDomain,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Read a token on standard input and print the SHA-256 to put in
    /// `[[admin.tokens]] sha256`.
    HashToken,
}

#[derive(Debug, Subcommand)]
enum JwtCommand {
    /// Validate a JWT-SVID with the gateway's bundles: only the JWT keys of the bundle
    /// of the token's own trust domain are used.
    Validate {
        /// The audience the token must name in `aud`.
        #[arg(long)]
        audience: String,
        /// The token; `-` (the default) reads it from standard input, which keeps it
        /// out of the process list.
        #[arg(default_value = "-")]
        token: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Bundle(BundleCommand::Validate {
            trust_domain,
            format,
            json,
            file,
        }) => run_validate(trust_domain.as_ref(), format, json, &file),
        Command::Serve(args) => run_serve(args),
        Command::Demo(args) => run_demo(args),
        Command::Admin(AdminCommand::HashToken) => hash_token(),
        Command::Agent(args) => run_agent(args),
        other => run_admin_verb(other),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run_serve(args: ServeArgs) -> ExitCode {
    fedgw::telemetry::init_logging(args.log_format, &args.log);
    let result = runtime().and_then(|rt| {
        rt.block_on(async {
            let config = match &args.config {
                Some(path) => {
                    let text = tokio::fs::read_to_string(path)
                        .await
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    Config::from_toml(&text).with_context(|| path.display().to_string())?
                }
                None => {
                    let dir = args.data_dir.clone();
                    let gateway = fedgw::defaults::DefaultGateway {
                        trust_domain: args.trust_domain.clone(),
                        web_listen: args.web_listen,
                        spiffe_listen: args.spiffe_listen,
                    };
                    let timing = fedgw::defaults::DevTiming {
                        refresh_hint: args.refresh_hint,
                        min_refresh: args.min_refresh,
                    };
                    let (config, _paths) = tokio::task::spawn_blocking(move || {
                        fedgw::defaults::embedded_with(&dir, &gateway, timing)
                    })
                    .await
                    .context("preparing the embedded default")??;
                    tracing::info!(
                        data_dir = %args.data_dir.display(),
                        trust_domain = %args.trust_domain,
                        "no --config: running the embedded development default"
                    );
                    config
                }
            };
            fedgw::gateway::run(&config)
                .await
                .map_err(anyhow::Error::from)
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_demo(args: DemoArgs) -> ExitCode {
    fedgw::telemetry::init_logging(LogFormat::Text, &args.log);
    if args.domains.len() < 2 {
        eprintln!("error: a federation needs at least two --domain");
        return ExitCode::from(2);
    }
    let result = runtime().and_then(|rt| {
        rt.block_on(async {
            let gateways = fedgw::demo::start(&args.data_dir, &args.domains).await?;
            for g in &gateways {
                println!(
                    "{}: https_web https://localhost:{}/  https_spiffe https://127.0.0.1:{}/  admin unix:{}",
                    g.trust_domain,
                    g.web_addr.port(),
                    g.spiffe_addr.port(),
                    g.data_dir.join("admin.sock").display()
                );
            }
            let converged =
                fedgw::demo::converge(&gateways, std::time::Duration::from_secs(60)).await;
            let held = fedgw::demo::held(&gateways);
            if args.json {
                println!("{}", serde_json::json!({ "bundles": held }));
            } else {
                let rows: Vec<Vec<String>> = held
                    .iter()
                    .map(|h| {
                        vec![
                            h.gateway.to_string(),
                            h.trust_domain.to_string(),
                            h.role.to_owned(),
                            h.sequence.map_or_else(|| "-".to_owned(), |s| s.to_string()),
                            h.x509_authorities.to_string(),
                            h.source.clone(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    cli::table(
                        &["GATEWAY", "TRUST DOMAIN", "ROLE", "SEQUENCE", "X509 CAS", "SOURCE"],
                        &rows
                    )
                );
            }
            converged?;
            println!("federation converged: every gateway holds every other domain's bundle");
            if !args.once {
                println!("running; press Ctrl-C to stop");
                let _ = tokio::signal::ctrl_c().await;
            }
            fedgw::demo::stop(gateways).await;
            anyhow::Ok(())
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn hash_token() -> ExitCode {
    let mut token = String::new();
    if let Err(err) = std::io::stdin().read_to_string(&mut token) {
        eprintln!("error: cannot read standard input: {err}");
        return ExitCode::FAILURE;
    }
    let token = token.trim();
    if token.is_empty() {
        eprintln!("error: empty token on standard input");
        return ExitCode::FAILURE;
    }
    println!("{}", fedgw::admin::auth::sha256_hex(token.as_bytes()));
    ExitCode::SUCCESS
}

fn run_admin_verb(command: Command) -> ExitCode {
    let result = runtime().and_then(|rt| rt.block_on(admin_verb(command)));
    match result {
        Ok(Output::Text(text)) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Ok(Output::Json(value)) => {
            println!("{value}");
            ExitCode::SUCCESS
        }
        Ok(Output::Raw(bytes)) => {
            let mut stdout = std::io::stdout();
            if stdout
                .write_all(&bytes)
                .and_then(|()| stdout.flush())
                .is_err()
            {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_agent(args: AgentArgs) -> ExitCode {
    fedgw::telemetry::init_logging(args.log_format, &args.log);
    let config = FilesSinkConfig {
        dir: args.dir,
        trust_domains: (!args.trust_domains.is_empty()).then_some(args.trust_domains),
        on_change: (!args.on_change.is_empty()).then_some(args.on_change),
        mode: args.mode,
    };
    let result = runtime().and_then(|rt| {
        rt.block_on(async {
            let client =
                connect(&args.connection)?.with_max_response_bytes(args.max_response_bytes);
            let shutdown = Shutdown::new();
            let mut agent = shutdown.spawn(fedgw::agent::run(client, config, shutdown.clone()));
            let stopped = tokio::select! {
                () = shutdown.signalled() => Ok(()),
                joined = &mut agent => joined.context("the agent task failed")?,
            };
            shutdown.shutdown(fedgw::shutdown::DEFAULT_GRACE).await;
            tracing::info!("agent stopped");
            stopped.map_err(anyhow::Error::from)
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn client(args: &AdminArgs) -> anyhow::Result<AdminClient> {
    connect(&args.connection)
}

fn connect(args: &AdminConnection) -> anyhow::Result<AdminClient> {
    let token = match &args.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let identity = args.admin_cert.as_deref().zip(args.admin_key.as_deref());
    let tls = ClientTls::from_files(args.admin_ca.as_deref(), identity)?;
    Ok(AdminClient::with_tls(&args.admin, token, tls.as_ref())?)
}

fn relationship(flags: RelationshipFlags) -> anyhow::Result<RelationshipBody> {
    if let Some(data) = &flags.data {
        let bytes = read_input(data)?;
        let value = serde_json::from_slice(&bytes)
            .with_context(|| format!("--data {}: not JSON", data.display()))?;
        return Ok(RelationshipBody::Data(value));
    }
    // clap requires these unless --data is given.
    let missing = |flag: &str| anyhow::anyhow!("{flag} is required");
    Ok(RelationshipBody::Args(RelationshipArgs {
        trust_domain: flags
            .trust_domain
            .ok_or_else(|| missing("--trust-domain"))?,
        urls: flags.urls,
        profile: match flags
            .profile
            .ok_or_else(|| missing("--bundle-endpoint-profile"))?
        {
            ProfileArg::HttpsWeb => ProfileName::HttpsWeb,
            ProfileArg::HttpsSpiffe => ProfileName::HttpsSpiffe,
        },
        endpoint_spiffe_id: flags.endpoint_spiffe_id,
        bootstrap_bundle: flags.bundle_path,
        bootstrap_format: flags.bundle_format.into(),
        extra_ca_roots: flags.extra_ca_roots,
        follow_redirects: !flags.no_follow_redirects,
        proxy: flags.proxy,
        allow_revocation: flags.allow_revocation,
    }))
}

async fn admin_verb(command: Command) -> anyhow::Result<Output> {
    use BundleCommand as B;
    use FederationCommand as F;
    let output = match command {
        Command::Status(a) => cli::status(&client(&a)?, a.json).await?,
        Command::Federation(F::Create {
            relationship: r,
            admin: a,
        }) => cli::federation_create(&client(&a)?, &relationship(r)?, a.json).await?,
        Command::Federation(F::Update {
            relationship: r,
            admin: a,
        }) => cli::federation_update(&client(&a)?, &relationship(r)?, a.json).await?,
        Command::Federation(F::Apply {
            file,
            dry_run,
            admin: a,
        }) => {
            let objects = read_cftd(file).await?;
            let client = if dry_run { None } else { Some(client(&a)?) };
            cli::federation_apply(client.as_ref(), &objects, a.json).await?
        }
        Command::Federation(F::List(a)) => cli::federation_list(&client(&a)?, a.json).await?,
        Command::Federation(F::Show {
            trust_domain,
            admin: a,
        }) => cli::federation_show(&client(&a)?, &trust_domain, a.json).await?,
        Command::Federation(F::Delete {
            trust_domain,
            force,
            admin: a,
        }) => cli::federation_delete(&client(&a)?, &trust_domain, force, a.json).await?,
        Command::Federation(F::Refresh {
            trust_domain,
            admin: a,
        }) => cli::federation_refresh(&client(&a)?, &trust_domain, a.json).await?,
        Command::Bundle(B::List(a)) => cli::bundle_list(&client(&a)?, a.json).await?,
        Command::Bundle(B::Show {
            trust_domain,
            format,
            admin: a,
        }) => cli::bundle_show(&client(&a)?, &trust_domain, format.into()).await?,
        Command::Bundle(B::Set {
            trust_domain,
            file,
            format,
            admin: a,
        }) => {
            let document = read_input(&file)?;
            cli::bundle_set(&client(&a)?, &trust_domain, document, format.into(), a.json).await?
        }
        Command::Bundle(B::Delete {
            trust_domain,
            admin: a,
        }) => cli::bundle_delete(&client(&a)?, &trust_domain).await?,
        Command::Bundle(B::History {
            trust_domain,
            admin: a,
        }) => cli::bundle_history(&client(&a)?, &trust_domain, a.json).await?,
        Command::Jwt(JwtCommand::Validate {
            audience,
            token,
            admin: a,
        }) => {
            let token = read_token(token).await?;
            cli::jwt_validate(&client(&a)?, &token, &audience, a.json).await?
        }
        Command::Bundle(B::Validate { .. })
        | Command::Serve(_)
        | Command::Demo(_)
        | Command::Admin(_)
        | Command::Agent(_) => {
            anyhow::bail!("not an admin API verb")
        }
    };
    Ok(output)
}

fn run_validate(
    trust_domain: Option<&TrustDomain>,
    format: Format,
    json: bool,
    file: &PathBuf,
) -> ExitCode {
    let outcome = read_input(file).map(|document| {
        validate::validate(
            &document,
            format,
            trust_domain,
            time::OffsetDateTime::now_utc(),
        )
    });
    match outcome {
        Ok(Ok(report)) => {
            if json {
                println!("{}", serde_json::json!(report));
            } else {
                print!("{}", report.to_text());
            }
            ExitCode::SUCCESS
        }
        Ok(Err(err)) => fail(
            json,
            &err.to_string(),
            matches!(err, ValidateError::Invalid(_)),
        ),
        Err(err) => fail(json, &format!("{err:#}"), false),
    }
}

/// Report a failure: on stderr, and as a JSON object on stdout with `--json`.
fn fail(json: bool, message: &str, invalid_document: bool) -> ExitCode {
    eprintln!("error: {message}");
    if json {
        println!(
            "{}",
            serde_json::json!({ "valid": false, "invalid_document": invalid_document, "error": message })
        );
    }
    ExitCode::FAILURE
}

/// A token from the command line, or from standard input for `-` (surrounding
/// whitespace, such as the final newline, removed).
async fn read_token(arg: String) -> anyhow::Result<String> {
    let token = if arg == "-" {
        let bytes = tokio::task::spawn_blocking(|| read_input(&PathBuf::from("-")))
            .await
            .context("reading standard input")??;
        String::from_utf8(bytes).context("the token on standard input is not UTF-8")?
    } else {
        arg
    };
    Ok(token.trim().to_owned())
}

/// The ClusterFederatedTrustDomain objects of a file, or of standard input for `-`.
async fn read_cftd(file: PathBuf) -> anyhow::Result<Vec<fedgw::relationships::cftd::Cftd>> {
    let shown = file.display().to_string();
    let bytes = tokio::task::spawn_blocking(move || read_input(&file))
        .await
        .context("reading the file")??;
    let text = String::from_utf8(bytes).with_context(|| format!("{shown}: not UTF-8"))?;
    fedgw::relationships::cftd::parse(&text).with_context(|| shown)
}

fn read_input(file: &PathBuf) -> anyhow::Result<Vec<u8>> {
    let mut document = Vec::new();
    if file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut document)
            .context("cannot read standard input")?;
    } else {
        document =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    }
    Ok(document)
}
