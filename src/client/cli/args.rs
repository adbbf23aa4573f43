//! The `fedgw` command line's arguments: every verb, flag and argument, as clap
//! parses them (after [`super::spire_flags::rewrite`] has turned SPIRE's spelling of
//! the federation flags into these).
//!
//! Owns the command line's shape and help text. It does not own running the verbs
//! (`main.rs`) or what an admin verb sends ([`super`]).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use spiffe_federation::{SpiffeId, TrustDomain};

use super::exit::UsageError;
use super::operands;
use crate::client::admin_client::AdminTarget;
use crate::client::store_copy::StoreLocation;
use crate::client::validate::Format;
use crate::config::{DocumentFormat, Seconds};
use crate::outputs::files::FileMode;
use crate::telemetry::LogFormat;

/// fedgw: SPIFFE trust-domain federation gateway.
#[derive(Debug, Parser)]
#[command(name = "fedgw", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
    /// The gateway's state store.
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy a gateway's whole state (bundles, history, statuses, audit log, counters,
    /// relationships) into a new, empty store and verify it by reading it back:
    /// sled to PostgreSQL, or back. Stop the gateways that use either store first.
    Copy(StoreCopyArgs),
}

#[derive(Debug, Args)]
pub struct StoreCopyArgs {
    /// The store to read: `sled:DATA_DIR` (a gateway's data_dir) or
    /// `postgres://USER@HOST[:PORT]/DATABASE`.
    #[arg(long)]
    pub from: StoreLocation,
    /// The new store to write, named the same way; it must hold nothing.
    #[arg(long)]
    pub to: StoreLocation,
    /// For a PostgreSQL side: a file holding the password.
    #[arg(long, conflicts_with = "password_env")]
    pub password_file: Option<PathBuf>,
    /// For a PostgreSQL side: the environment variable holding the password.
    #[arg(long)]
    pub password_env: Option<String>,
    /// For a PostgreSQL side: PEM file of the CAs that may sign the server's
    /// certificate (default: the system's roots).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// For a PostgreSQL side: `verify-full` (default) or `disable` (no TLS).
    #[arg(long, default_value = "verify-full", value_parser = ["verify-full", "disable"])]
    pub tls: String,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The TOML configuration file.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// With no --config: where the embedded default keeps its data, its development
    /// PKI (`dev-pki/<td>/`) and its admin socket (`admin.sock`).
    #[arg(long, default_value = "fedgw-data")]
    pub data_dir: PathBuf,
    /// With no --config: the local trust domain.
    #[arg(
        long,
        value_name = "TD",
        conflicts_with = "config",
        default_value = "dev.fedgw.localhost"
    )]
    pub trust_domain: TrustDomain,
    /// With no --config: where the https_web bundle endpoint listens.
    #[arg(
        long,
        value_name = "ADDR",
        conflicts_with = "config",
        default_value = "127.0.0.1:8443"
    )]
    pub web_listen: std::net::SocketAddr,
    /// With no --config: where the https_spiffe bundle endpoint listens.
    #[arg(
        long,
        value_name = "ADDR",
        conflicts_with = "config",
        default_value = "127.0.0.1:8444"
    )]
    pub spiffe_listen: std::net::SocketAddr,
    /// With no --config: the spiffe_refresh_hint served with the local bundle
    /// (`[[local]] refresh_hint`).
    #[arg(
        long,
        value_name = "DURATION",
        conflicts_with = "config",
        default_value = "5m"
    )]
    pub refresh_hint: Seconds,
    /// With no --config: the shortest refresh interval for foreign bundles
    /// (`[polling] min_refresh`); foreign hints below it are raised to it.
    #[arg(
        long,
        value_name = "DURATION",
        conflicts_with = "config",
        default_value = "60s"
    )]
    pub min_refresh: Seconds,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter (RUST_LOG syntax).
    #[arg(long, default_value = "info", env = "FEDGW_LOG")]
    pub log: String,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Trust domains to federate (at least two).
    #[arg(long = "domain", default_values = ["east.demo.localhost", "west.demo.localhost", "edge.demo.localhost"])]
    pub domains: Vec<TrustDomain>,
    /// Where the gateways keep their data [default: fedgw-demo; with --once, a
    /// temporary directory removed at the end].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Exit after showing the converged federation instead of running until Ctrl-C.
    #[arg(long)]
    pub once: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Log filter (RUST_LOG syntax).
    #[arg(long, default_value = "error", env = "FEDGW_LOG")]
    pub log: String,
}

#[derive(Debug, Args, Clone)]
pub struct AdminArgs {
    #[command(flatten)]
    pub connection: AdminConnection,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// How to reach the admin API.
#[derive(Debug, Args, Clone)]
pub struct AdminConnection {
    /// The admin API: `unix:/path/to.sock`, `https://host:port` or `http://host:port`.
    #[arg(long, env = "FEDGW_ADMIN", default_value = super::DEFAULT_ADMIN)]
    pub admin: AdminTarget,
    /// A file holding a bearer token for a TCP admin API.
    #[arg(long, env = "FEDGW_ADMIN_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// https: PEM CA certificates, or a SPIFFE bundle, that the admin server's
    /// certificate must chain to (default: the system's roots).
    #[arg(long, env = "FEDGW_ADMIN_CA")]
    pub admin_ca: Option<PathBuf>,
    /// https: the client certificate chain for mTLS (PEM; an X509-SVID).
    #[arg(long, env = "FEDGW_ADMIN_CERT", requires = "admin_key")]
    pub admin_cert: Option<PathBuf>,
    /// https: the private key (PEM) of --admin-cert.
    #[arg(long, env = "FEDGW_ADMIN_KEY", requires = "admin_cert")]
    pub admin_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub connection: AdminConnection,
    /// The directory to keep bundle files in (`<td>.pem`, `<td>.json`,
    /// `bundle-map.json`), as a `[[sinks.files]]` does.
    #[arg(long)]
    pub dir: PathBuf,
    /// Write only this trust domain (repeat for several); all by default.
    #[arg(long = "trust-domain", short = 't', value_name = "TD")]
    pub trust_domains: Vec<TrustDomain>,
    /// A program to run after each change, with its arguments (no shell). Takes every
    /// argument after it, so put it last.
    #[arg(long = "on-change", value_name = "CMD", num_args = 1.., allow_hyphen_values = true)]
    pub on_change: Vec<String>,
    /// Permission bits of the files written.
    #[arg(long, default_value = "0644")]
    pub mode: FileMode,
    /// The largest answer read from the gateway, in bytes (default 256 MiB); a larger
    /// one is refused, logged and retried after the backoff.
    #[arg(long, value_name = "BYTES", default_value_t = crate::client::admin_client::DEFAULT_MAX_RESPONSE_BYTES)]
    pub max_response_bytes: u64,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter (RUST_LOG syntax).
    #[arg(long, default_value = "info", env = "FEDGW_LOG")]
    pub log: String,
}

/// The flags of `spire-server federation create|update` (`-trustDomain`,
/// `-bundleEndpointURL`, …), spelled the GNU way (SPIRE's own spelling is rewritten to
/// these before parsing: `cli::spire_flags`); or the whole body with `--data`.
#[derive(Debug, Args)]
pub struct RelationshipFlags {
    /// The foreign trust domain (or --trust-domain).
    #[arg(value_name = "TD", conflicts_with = "trust_domain")]
    pub trust_domain_arg: Option<TrustDomain>,
    /// The foreign trust domain (never inferred from the URL).
    #[arg(long, short = 't', value_name = "TD", required_unless_present_any = ["data", "trust_domain_arg"])]
    pub trust_domain: Option<TrustDomain>,
    /// The bundle endpoint URL; repeat for mirrors, tried in order.
    #[arg(
        long = "bundle-endpoint-url",
        value_name = "URL",
        required_unless_present = "data"
    )]
    pub urls: Vec<String>,
    /// The bundle endpoint profile.
    #[arg(
        long = "bundle-endpoint-profile",
        value_enum,
        value_name = "PROFILE",
        required_unless_present = "data"
    )]
    pub profile: Option<ProfileArg>,
    /// https_spiffe: the endpoint server's SPIFFE ID.
    #[arg(long, value_name = "ID")]
    pub endpoint_spiffe_id: Option<SpiffeId>,
    /// https_spiffe: a bundle of the endpoint SPIFFE ID's trust domain to start from,
    /// sent inline.
    #[arg(long = "trust-domain-bundle-path", value_name = "FILE")]
    pub bundle_path: Option<PathBuf>,
    /// Format of --trust-domain-bundle-path [default: pem if the file is PEM, else
    /// spiffe].
    #[arg(
        long = "trust-domain-bundle-format",
        value_enum,
        value_name = "FORMAT",
        requires = "bundle_path"
    )]
    pub bundle_format: Option<FormatArg>,
    /// https_web: extra PEM CA roots trusted besides the system store, sent inline.
    #[arg(long, value_name = "FILE")]
    pub extra_ca_roots: Option<PathBuf>,
    /// Do not follow redirects.
    #[arg(long)]
    pub no_follow_redirects: bool,
    /// Accept a fetched empty `keys` list, which revokes every key of the trust
    /// domain (refused by default).
    #[arg(long)]
    pub allow_revocation: bool,
    /// `env` (HTTPS_PROXY/NO_PROXY, the gateway's default), `off`, or a proxy URL
    /// (http:// or https://, without credentials).
    #[arg(long, value_name = "env|off|URL")]
    pub proxy: Option<String>,
    /// The whole JSON body of the admin API instead of the flags above; `-` reads
    /// standard input.
    #[arg(
        long,
        value_name = "FILE|-",
        conflicts_with_all = [
            "trust_domain_arg", "trust_domain", "urls", "profile", "endpoint_spiffe_id",
            "bundle_path", "extra_ca_roots", "no_follow_redirects", "allow_revocation", "proxy",
        ]
    )]
    pub data: Option<PathBuf>,
}

/// The one trust domain a verb acts on: the argument `TD` or `--trust-domain TD`.
#[derive(Debug, Args, Clone)]
#[group(required = true, multiple = false)]
pub struct TrustDomainArg {
    /// The trust domain (or --trust-domain TD).
    #[arg(value_name = "TD")]
    pub trust_domain_arg: Option<TrustDomain>,
    /// The trust domain (or as the argument TD).
    #[arg(long = "trust-domain", short = 't', value_name = "TD")]
    pub trust_domain: Option<TrustDomain>,
}

impl TrustDomainArg {
    pub fn get(self) -> Result<TrustDomain, UsageError> {
        operands::trust_domain(self.trust_domain_arg, self.trust_domain)
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ProfileArg {
    /// Server authenticated by Web PKI.
    #[value(name = "https_web", alias = "https-web")]
    HttpsWeb,
    /// Server authenticated by its X509-SVID.
    #[value(name = "https_spiffe", alias = "https-spiffe")]
    HttpsSpiffe,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FormatArg {
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
pub enum FederationCommand {
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
        #[command(flatten)]
        trust_domain: TrustDomainArg,
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
        #[command(flatten)]
        trust_domain: TrustDomainArg,
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
    /// Fetch a foreign bundle now (exit 4 when the fetch fails or its bundle is
    /// refused).
    Refresh {
        #[command(flatten)]
        trust_domain: TrustDomainArg,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
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
        #[command(flatten)]
        trust_domain: TrustDomainArg,
        /// Output format.
        #[arg(long, value_enum, default_value = "spiffe")]
        format: FormatArg,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Set a bundle as an operator override (replaced by the next successful fetch).
    Set {
        /// TD FILE: the trust domain and the document (`-` reads standard input);
        /// either may be given with its flag instead.
        #[arg(value_names = ["TD", "FILE"], num_args = 0..=2)]
        operands: Vec<String>,
        /// The trust domain (or as the first argument).
        #[arg(long = "trust-domain", short = 't', value_name = "TD")]
        trust_domain: Option<TrustDomain>,
        /// The document (or as the last argument); `-` reads standard input.
        #[arg(long, value_name = "FILE|-")]
        file: Option<PathBuf>,
        /// Document format.
        #[arg(long, value_enum, default_value = "spiffe")]
        format: FormatArg,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Delete a bundle.
    Delete {
        #[command(flatten)]
        trust_domain: TrustDomainArg,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Past versions of a bundle.
    History {
        #[command(flatten)]
        trust_domain: TrustDomainArg,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Read a token on standard input and print the SHA-256 to put in
    /// `[[admin.tokens]] sha256`.
    HashToken,
}

#[derive(Debug, Subcommand)]
pub enum JwtCommand {
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
