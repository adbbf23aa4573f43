//! The `fedgw` command line: parses arguments, calls the library, prints, and sets
//! the exit code. Nothing else lives here.
//!
//! Exit codes ([`Exit`]): 0 success; 1 the input was refused, could not be read, the
//! gateway was unreachable or refused the call, or it could not start; 2 usage error;
//! 3 `serve --config`: the configuration cannot be read or is refused; 4 `federation
//! refresh`: the fetch failed or its bundle was refused.

#![expect(clippy::print_stdout, reason = "the CLI's output is stdout")]

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use fedgw::app::Config;
use fedgw::client::admin_client::{AdminClient, AdminTarget, ClientError, ClientTls};
use fedgw::client::cli::args::{
    AdminArgs, AdminCommand, AdminConnection, AgentArgs, BundleCommand, Cli, Command, DemoArgs,
    FederationCommand, FormatArg, JwtCommand, ProfileArg, RelationshipFlags, ServeArgs,
    StoreCommand, StoreCopyArgs,
};
use fedgw::client::cli::exit::{Exit, UsageError, describe, looks_like_pem};
use fedgw::client::cli::{self, CliError, Output, RelationshipArgs, RelationshipBody, operands};
use fedgw::client::validate::{self, Format, ValidateError};
use fedgw::config::{DocumentFormat, ProfileName};
use fedgw::outputs::files::FilesSinkConfig;
use fedgw::shutdown::Shutdown;
use fedgw::telemetry::LogFormat;
use spiffe_federation::TrustDomain;
use spiffe_federation::endpoint::{EndpointUrl, ProxySetting};
use url::Url;

/// The allocator. glibc's malloc keeps what many short-lived connections freed in its
/// per-thread arenas: after 1,500 clients that did not read had come and gone, a
/// gateway stayed ~110 MiB above its baseline. mimalloc returns freed pages to the
/// operating system, so the process shrinks back once an attack ends.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // SPIRE's spelling of the federation flags (`-trustDomain x`) before clap, which
    // would read `-t rustDomain`. clap exits 2 on a usage error.
    let cli = Cli::parse_from(cli::spire_flags::rewrite(std::env::args_os().collect()));
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
        Command::Store(StoreCommand::Copy(args)) => store_copy(&args),
        other => run_admin_verb(other),
    }
}

/// Print `err` with each of its causes once, and the exit status its kind documents.
fn failed(err: &anyhow::Error) -> ExitCode {
    eprintln!("error: {}", describe(err.as_ref()));
    exit_for(err).into()
}

fn exit_for(err: &anyhow::Error) -> Exit {
    for cause in err.chain() {
        if cause.is::<UsageError>()
            || matches!(
                cause.downcast_ref::<ClientError>(),
                Some(ClientError::TlsNeedsHttps { .. })
            )
        {
            return Exit::Usage;
        }
        match cause.downcast_ref::<CliError>() {
            Some(CliError::RefreshFailed { .. }) => return Exit::RefreshFailed,
            Some(CliError::Client(ClientError::TlsNeedsHttps { .. })) => return Exit::Usage,
            _ => {}
        }
    }
    Exit::Failure
}

fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => failed(&err),
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
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(err) => return failed(&err),
    };
    rt.block_on(async {
        let Some(path) = &args.config else {
            return finish(serve_embedded(&args).await);
        };
        let config = match tokio::fs::read_to_string(path).await {
            Ok(text) => Config::from_toml(&text).with_context(|| path.display().to_string()),
            Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
        };
        match config {
            Ok(config) => finish(fedgw::app::run(&config).await.map_err(anyhow::Error::from)),
            Err(err) => {
                eprintln!("error: {}", describe(err.as_ref()));
                Exit::Config.into()
            }
        }
    })
}

/// `fedgw serve` without `--config`: take the data directory, make (or load) the
/// development PKI in it, run. A start that fails removes what it made.
async fn serve_embedded(args: &ServeArgs) -> anyhow::Result<()> {
    let data_dir = fedgw::app::acquire_data_dir(&args.data_dir).await?;
    let dir = args.data_dir.clone();
    let gateway = fedgw::client::defaults::DefaultGateway {
        trust_domain: args.trust_domain.clone(),
        web_listen: args.web_listen,
        spiffe_listen: args.spiffe_listen,
    };
    let timing = fedgw::client::defaults::DevTiming {
        refresh_hint: args.refresh_hint,
        min_refresh: args.min_refresh,
    };
    let prepared = tokio::task::spawn_blocking(move || {
        fedgw::client::defaults::embedded_with(&dir, &gateway, timing)
    })
    .await;
    let config = match prepared {
        Ok(Ok((config, _paths))) => config,
        failed => {
            let _undone = tokio::task::spawn_blocking(move || data_dir.undo()).await;
            return Err(match failed {
                Ok(Err(err)) => anyhow::Error::from(err),
                _ => anyhow::anyhow!("preparing the embedded default was interrupted"),
            });
        }
    };
    tracing::info!(
        data_dir = %args.data_dir.display(),
        trust_domain = %args.trust_domain,
        "no --config: running the embedded development default"
    );
    fedgw::app::run_in(&config, data_dir).await?;
    Ok(())
}

fn run_demo(args: DemoArgs) -> ExitCode {
    fedgw::telemetry::init_logging(LogFormat::Text, &args.log);
    if args.domains.len() < 2 {
        eprintln!("error: a federation needs at least two --domain");
        return Exit::Usage.into();
    }
    // With --once and no --data-dir, everything goes in a temporary directory that
    // is removed at the end: a quick look leaves nothing behind.
    let (base, temporary) = match (&args.data_dir, args.once) {
        (Some(dir), _) => (dir.clone(), false),
        (None, false) => (PathBuf::from("fedgw-demo"), false),
        (None, true) => match demo_temp_dir() {
            Ok(dir) => (dir, true),
            Err(err) => return failed(&err),
        },
    };
    let result = runtime().and_then(|rt| rt.block_on(demo(&args, &base)));
    if temporary && let Err(err) = std::fs::remove_dir_all(&base) {
        eprintln!("warning: cannot remove {}: {err}", base.display());
    }
    finish(result)
}

/// A new directory of our own under the system's temporary directory.
fn demo_temp_dir() -> anyhow::Result<PathBuf> {
    let tmp = std::env::temp_dir();
    let mut attempt = 0u32;
    loop {
        let dir = tmp.join(format!("fedgw-demo-{}-{attempt}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                attempt += 1;
            }
            Err(err) => {
                return Err(err).with_context(|| format!("cannot create {}", dir.display()));
            }
        }
    }
}

async fn demo(args: &DemoArgs, base: &std::path::Path) -> anyhow::Result<()> {
    let gateways = fedgw::client::demo::start(base, &args.domains).await?;
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
        fedgw::client::demo::converge(&gateways, std::time::Duration::from_secs(60)).await;
    let held = fedgw::client::demo::held(&gateways);
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
                &[
                    "GATEWAY",
                    "TRUST DOMAIN",
                    "ROLE",
                    "SEQUENCE",
                    "X509 CAS",
                    "SOURCE"
                ],
                &rows
            )
        );
    }
    if let Err(err) = converged {
        fedgw::client::demo::stop(gateways).await;
        return Err(err.into());
    }
    println!("federation converged: every gateway holds every other domain's bundle");
    if !args.once {
        println!("running; press Ctrl-C to stop");
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!(%err, "cannot wait for Ctrl-C; stopping the demo now");
        }
    }
    fedgw::client::demo::stop(gateways).await;
    Ok(())
}

/// `fedgw store copy`: exit 0 when the copy was read back equal, 1 otherwise.
fn store_copy(args: &StoreCopyArgs) -> ExitCode {
    use fedgw::client::store_copy::{PostgresAccess, copy};
    use fedgw::config::storage::PostgresTls;
    let access = PostgresAccess {
        password_file: args.password_file.clone(),
        password_env: args.password_env.clone(),
        ca_file: args.ca_file.clone(),
        tls: if args.tls == "disable" {
            PostgresTls::Disable
        } else {
            PostgresTls::VerifyFull
        },
    };
    match copy(&args.from, &args.to, &access) {
        Ok(report) => {
            println!(
                "copied {} -> {}: revision {}, {} bundles, {} history versions, {} audit entries, {} relationships; read back and verified",
                args.from,
                args.to,
                report.revision,
                report.bundles,
                report.history,
                report.audit,
                report.relationships
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {}", describe(&err));
            Exit::Failure.into()
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
    println!("{}", fedgw::digest::sha256_hex(token.as_bytes()));
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
        Err(err) => failed(&err),
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
            let mut agent =
                shutdown.spawn(fedgw::client::agent::run(client, config, shutdown.clone()));
            let stopped = tokio::select! {
                () = shutdown.signalled() => Ok(()),
                joined = &mut agent => joined.context("the agent task failed")?,
            };
            shutdown.shutdown(fedgw::shutdown::DEFAULT_GRACE).await;
            tracing::info!("agent stopped");
            stopped.map_err(anyhow::Error::from)
        })
    });
    finish(result)
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
    let https = matches!(&args.admin, AdminTarget::Url(url) if url.scheme() == "https");
    if (args.admin_ca.is_some() || identity.is_some()) && !https {
        // A usage error, found before any file is read.
        return Err(ClientError::TlsNeedsHttps {
            target: args.admin.to_string(),
        }
        .into());
    }
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
    let missing = |flag: &str| UsageError::new(format!("{flag} is required"));
    let trust_domain = match (flags.trust_domain_arg, flags.trust_domain) {
        (None, None) => return Err(missing("the trust domain (TD or --trust-domain)").into()),
        (argument, flag) => operands::trust_domain(argument, flag)?,
    };
    // Checked here rather than by clap, whose message would repeat the value (a URL
    // may carry a password).
    let urls = flags
        .urls
        .iter()
        .map(|raw| EndpointUrl::parse(raw).map(Url::from))
        .collect::<Result<Vec<Url>, _>>()
        .map_err(|err| UsageError::new(format!("--bundle-endpoint-url: {err}")))?;
    let proxy = flags
        .proxy
        .map(ProxySetting::try_from)
        .transpose()
        .map_err(|err| UsageError::new(format!("--proxy: {err}")))?;
    Ok(RelationshipBody::Args(RelationshipArgs {
        trust_domain,
        urls,
        profile: match flags
            .profile
            .ok_or_else(|| missing("--bundle-endpoint-profile"))?
        {
            ProfileArg::HttpsWeb => ProfileName::HttpsWeb,
            ProfileArg::HttpsSpiffe => ProfileName::HttpsSpiffe,
        },
        endpoint_spiffe_id: flags.endpoint_spiffe_id,
        bootstrap_bundle: flags.bundle_path,
        bootstrap_format: flags.bundle_format.map(DocumentFormat::from),
        extra_ca_roots: flags.extra_ca_roots,
        follow_redirects: !flags.no_follow_redirects,
        proxy,
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
        }) => cli::federation_show(&client(&a)?, &trust_domain.get()?, a.json).await?,
        Command::Federation(F::Delete {
            trust_domain,
            force,
            admin: a,
        }) => cli::federation_delete(&client(&a)?, &trust_domain.get()?, force, a.json).await?,
        Command::Federation(F::Refresh {
            trust_domain,
            admin: a,
        }) => {
            let td = trust_domain.get()?;
            match cli::federation_refresh(&client(&a)?, &td, a.json).await {
                Ok(output) => output,
                Err(err) => {
                    // --json: the gateway's answer on stdout as well, for scripts.
                    if let (true, CliError::RefreshFailed { answer, .. }) = (a.json, &err) {
                        println!("{answer}");
                    }
                    return Err(err.into());
                }
            }
        }
        Command::Bundle(B::List(a)) => cli::bundle_list(&client(&a)?, a.json).await?,
        Command::Bundle(B::Show {
            trust_domain,
            format,
            admin: a,
        }) => cli::bundle_show(&client(&a)?, &trust_domain.get()?, format.into()).await?,
        Command::Bundle(B::Set {
            operands: arguments,
            trust_domain,
            file,
            format,
            admin: a,
        }) => {
            let (td, file) = operands::bundle_set(&arguments, trust_domain, file)?;
            let document = read_input(&file)?;
            if matches!(format, FormatArg::Spiffe) && looks_like_pem(&document) {
                return Err(UsageError::new(format!(
                    "{} looks like PEM; pass --format pem (the default is spiffe, a SPIFFE bundle JSON document)",
                    shown(&file)
                ))
                .into());
            }
            cli::bundle_set(&client(&a)?, &td, document, format.into(), a.json).await?
        }
        Command::Bundle(B::Delete {
            trust_domain,
            admin: a,
        }) => cli::bundle_delete(&client(&a)?, &trust_domain.get()?).await?,
        Command::Bundle(B::History {
            trust_domain,
            admin: a,
        }) => cli::bundle_history(&client(&a)?, &trust_domain.get()?, a.json).await?,
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
        | Command::Agent(_)
        | Command::Store(_) => {
            anyhow::bail!("not an admin API verb")
        }
    };
    Ok(output)
}

/// A file argument as shown in messages: `standard input` for `-`.
fn shown(file: &std::path::Path) -> String {
    if file.as_os_str() == "-" {
        "standard input".to_owned()
    } else {
        file.display().to_string()
    }
}

fn run_validate(
    trust_domain: Option<&TrustDomain>,
    format: Format,
    json: bool,
    file: &PathBuf,
) -> ExitCode {
    let document = match read_input(file) {
        Ok(document) => document,
        Err(err) => return fail(json, &describe(err.as_ref()), false, Exit::Failure),
    };
    match validate::validate(
        &document,
        format,
        trust_domain,
        time::OffsetDateTime::now_utc(),
    ) {
        Ok(report) => {
            if json {
                println!("{}", serde_json::json!(report));
            } else {
                print!("{}", report.to_text());
            }
            ExitCode::SUCCESS
        }
        Err(err @ (ValidateError::TrustDomainRequired(_) | ValidateError::TrustDomainWithMap)) => {
            fail(json, &err.to_string(), false, Exit::Usage)
        }
        Err(ValidateError::Invalid(_))
            if !matches!(format, Format::Pem) && looks_like_pem(&document) =>
        {
            let message = format!("{} looks like PEM; pass --format pem", shown(file));
            fail(json, &message, false, Exit::Usage)
        }
        Err(err) => fail(
            json,
            &describe(&err),
            matches!(err, ValidateError::Invalid(_)),
            Exit::Failure,
        ),
    }
}

/// Report a failure: on stderr, and as a JSON object on stdout with `--json`.
fn fail(json: bool, message: &str, invalid_document: bool, exit: Exit) -> ExitCode {
    eprintln!("error: {message}");
    if json {
        println!(
            "{}",
            serde_json::json!({ "valid": false, "invalid_document": invalid_document, "error": message })
        );
    }
    exit.into()
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
async fn read_cftd(file: PathBuf) -> anyhow::Result<Vec<fedgw::registry::cftd::Cftd>> {
    let shown = file.display().to_string();
    let bytes = tokio::task::spawn_blocking(move || read_input(&file))
        .await
        .context("reading the file")??;
    let text = String::from_utf8(bytes).with_context(|| format!("{shown}: not UTF-8"))?;
    fedgw::registry::cftd::parse(&text).with_context(|| shown)
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
