//! The `fedgw` command line: parses arguments, calls the library, prints, and sets
//! the exit code. Nothing else lives here.
//!
//! Exit codes: 0 success; 1 the input was refused or could not be read; 2 usage error.

#![expect(clippy::print_stdout, reason = "the CLI's output is stdout")]

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use fedgw::validate::{self, Format, ValidateError};
use spiffe_federation::TrustDomain;

/// fedgw: SPIFFE trust-domain federation gateway.
#[derive(Debug, Parser)]
#[command(name = "fedgw", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with SPIFFE bundles.
    #[command(subcommand)]
    Bundle(BundleCommand),
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
    }
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
