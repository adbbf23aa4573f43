//! Disk: bytes the sled database takes after N accepted changes of a ~1 MiB bundle.
//!
//! Runs the release `fedgw serve` process (no relationships, the admin API on a unix
//! socket) and submits N changes of one foreign trust domain's bundle through
//! `PUT /v1/bundles/{td}`: the same ~1 MiB document (about 1,500 distinct CA
//! certificates) under a new `spiffe_sequence` each time, the worst case of a peer
//! whose bundle changes on every poll. Every change is accepted, stored with its
//! history entry and audit record, and flushed, as a fetched one is.
//!
//! After every `--every` changes, and then after a SIGTERM, after a restart (when
//! the store compacts if it has that), and after a second restart, it records the size
//! of `data_dir/db`: the sum of the files' lengths ("apparent", what `du
//! --apparent-size` shows) and the blocks allocated to them ("allocated", what `du`
//! shows), split into sled's log file (`db`), its blob files (`blobs/`, one per value
//! too large to go inline) and the rest (`conf`, `snap.*`). The last bundle is checked
//! to be served after each restart.
//!
//! `--baseline PATH` runs the same with another `fedgw` binary first (e.g. one built
//! from an older commit) so that the table shows before and after side by side.
//!
//! `cargo run --release --example disk -- --fedgw target/release/fedgw
//! [--baseline OLD_FEDGW] [--changes 500] [--every 50] [--bundle-kib 1024]
//! [--markdown FILE]`: with `--markdown`, the table replaces the section between
//! `<!-- disk:start -->` and `<!-- disk:end -->`. `DISK_KEEP=1` keeps each run's
//! directory.
//!
//! The process, `/metrics` and Markdown helpers are shared with the other benchmarks,
//! in `bench/common/`.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark reports on the terminal, and stops on any failure"
)]

#[path = "common/markdown.rs"]
mod markdown;
#[path = "common/metrics.rs"]
mod metrics;
#[path = "common/process.rs"]
mod process;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fedgw::client::admin_client::{AdminClient, AdminTarget, Body};
use rcgen::{
    BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use reqwest::Method;
use spiffe_federation::bundle::X509Authority;
use spiffe_federation::{Bundle, TrustDomain};
use tokio::process::Child;

use markdown::replace_section;
use process::spawn;

const TRUST_DOMAIN: &str = "churn.disk.fedgw.test";
const READY_DEADLINE: Duration = Duration::from_secs(120);

struct Args {
    fedgw: PathBuf,
    baseline: Option<PathBuf>,
    changes: usize,
    every: usize,
    bundle_bytes: usize,
    markdown: Option<PathBuf>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = std::env::args().skip(1);
    let mut parsed = Args {
        fedgw: PathBuf::from("target/release/fedgw"),
        baseline: None,
        changes: 500,
        every: 50,
        bundle_bytes: 1024 * 1024,
        markdown: None,
    };
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--fedgw" => parsed.fedgw = PathBuf::from(value()?),
            "--baseline" => parsed.baseline = Some(PathBuf::from(value()?)),
            "--changes" => parsed.changes = value()?.parse().context("--changes N")?,
            "--every" => parsed.every = value()?.parse().context("--every N")?,
            "--bundle-kib" => {
                parsed.bundle_bytes = value()?.parse::<usize>().context("--bundle-kib N")? * 1024;
            }
            "--markdown" => parsed.markdown = Some(PathBuf::from(value()?)),
            other => bail!(
                "unknown argument {other:?} (use --fedgw PATH, --baseline PATH, --changes N, --every N, --bundle-kib N, --markdown FILE)"
            ),
        }
    }
    if parsed.changes == 0 || parsed.every == 0 || parsed.bundle_bytes == 0 {
        bail!("--changes, --every and --bundle-kib must be positive");
    }
    Ok(parsed)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let td = TrustDomain::new(TRUST_DOMAIN)?;
    eprintln!("generating a bundle of about {} bytes", args.bundle_bytes);
    let template = big_bundle(&td, args.bundle_bytes)?;
    let document_len = document(&template, 1).len();
    eprintln!(
        "{} authorities, {document_len} bytes as served",
        template.x509_authorities().len()
    );

    let mut runs = Vec::new();
    let binaries = args
        .baseline
        .iter()
        .map(|path| ("before", path))
        .chain([("after", &args.fedgw)]);
    for (label, binary) in binaries {
        let binary = std::fs::canonicalize(binary)
            .with_context(|| format!("fedgw binary {}", binary.display()))?;
        eprintln!("{label}: {}", binary.display());
        let rows = runtime.block_on(one_run(&binary, &td, &template, &args))?;
        runs.push((label, rows));
    }
    let table = markdown(&runs, &args, document_len);
    println!("{table}");
    if let Some(path) = args.markdown {
        replace_section(&path, "disk", &table)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// One bundle of `td` whose served document is about `target` bytes: distinct
/// self-signed CA certificates (one key, a serial each) until it is that large.
fn big_bundle(td: &TrustDomain, target: usize) -> anyhow::Result<Bundle> {
    let key = KeyPair::generate()?;
    let mut bundle = Bundle::new(td.clone());
    bundle.set_sequence(Some(u64::MAX / 2));
    let mut serial = 1u64;
    while bundle.to_json().len() < target {
        // Add in steps, checking the size now and then (to_json is not free).
        for _ in 0..64 {
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            params.subject_alt_names = vec![SanType::URI(format!("spiffe://{td}").try_into()?)];
            params.serial_number = Some(SerialNumber::from(serial));
            serial += 1;
            let der = params.self_signed(&key)?.der().to_vec();
            bundle.add_x509_authority(X509Authority::from_der(der)?);
        }
    }
    while bundle.to_json().len() > target && bundle.x509_authorities().len() > 1 {
        let der = bundle.x509_authorities()[0].der().to_vec();
        bundle.remove_x509_authority(&der);
    }
    Ok(bundle)
}

fn document(template: &Bundle, sequence: u64) -> Vec<u8> {
    let mut bundle = template.clone();
    bundle.set_sequence(Some(sequence));
    bundle.to_json()
}

/// What one measurement found under `data_dir/db`.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    apparent: u64,
    allocated: u64,
    log: u64,
    blobs: u64,
    blob_files: u64,
}

fn measure(db: &Path) -> anyhow::Result<Usage> {
    use std::os::unix::fs::MetadataExt as _;
    let mut total = Usage::default();
    let mut stack = vec![db.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
                continue;
            }
            total.apparent += meta.len();
            total.allocated += meta.blocks() * 512;
            let in_blobs = entry
                .path()
                .parent()
                .and_then(Path::file_name)
                .is_some_and(|name| name == "blobs");
            if in_blobs {
                total.blobs += meta.len();
                total.blob_files += 1;
            } else if entry.file_name() == "db" {
                total.log += meta.len();
            }
        }
    }
    Ok(total)
}

struct Row {
    step: String,
    usage: Usage,
    /// Highest allocated bytes seen so far (measured after every change).
    peak: u64,
    /// `fedgw_store_live_bytes`, when the binary has it.
    live: Option<u64>,
    seconds: f64,
}

async fn one_run(
    fedgw: &Path,
    td: &TrustDomain,
    template: &Bundle,
    args: &Args,
) -> anyhow::Result<Vec<Row>> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("fedgw.toml");
    let socket = dir.path().join("admin.sock");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n\n[admin]\nlisten = \"unix:{}\"\n",
            dir.path().join("data"),
            socket.display()
        ),
    )?;
    let db = dir.path().join("data").join("db");
    let admin = AdminClient::new(&AdminTarget::Unix(socket), None)?;
    let mut rows = Vec::new();
    let mut child = spawn(fedgw, &config, &dir.path().join("fedgw-1.log"))?;
    wait_ready(&admin).await?;
    let start = Instant::now();
    let mut last = Vec::new();
    let mut peak = 0;
    for change in 1..=args.changes {
        let sequence = u64::try_from(change)?;
        last = document(template, sequence);
        let answer = admin
            .call(
                Method::PUT,
                &format!("/v1/bundles/{td}"),
                Some(Body::Raw {
                    content_type: "application/json",
                    bytes: last.clone(),
                }),
            )
            .await
            .with_context(|| format!("change {change}"))?;
        if answer.status != 200 {
            bail!("change {change}: HTTP {}", answer.status);
        }
        let usage = measure(&db)?;
        peak = peak.max(usage.allocated);
        if change % args.every == 0 || change == args.changes {
            let live = live_bytes(&admin).await?;
            eprintln!("  {change} changes: {usage:?}, peak {peak}, live {live:?}");
            rows.push(Row {
                step: format!("{change} changes"),
                usage,
                peak,
                live,
                seconds: start.elapsed().as_secs_f64(),
            });
        }
    }
    let live = live_bytes(&admin).await?;
    stop(&mut child).await?;
    let usage = measure(&db)?;
    eprintln!("  stopped: {usage:?}");
    rows.push(Row {
        step: "stopped (SIGTERM)".to_owned(),
        usage,
        peak,
        live,
        seconds: start.elapsed().as_secs_f64(),
    });
    for restart in 1..=2 {
        let started = Instant::now();
        let log = dir.path().join(format!("fedgw-{}.log", restart + 1));
        let mut child = spawn(fedgw, &config, &log)?;
        wait_ready(&admin).await?;
        let ready = started.elapsed().as_secs_f64();
        check_served(&admin, td, &last).await?;
        let usage = measure(&db)?;
        let live = live_bytes(&admin).await?;
        eprintln!("  restart {restart}, ready in {ready:.2} s: {usage:?}");
        rows.push(Row {
            step: format!("restart {restart} (ready in {ready:.1} s)"),
            usage,
            peak: peak.max(usage.allocated),
            live,
            seconds: start.elapsed().as_secs_f64(),
        });
        stop(&mut child).await?;
    }
    if std::env::var_os("DISK_KEEP").is_some() {
        let kept = dir.keep();
        eprintln!("  kept {}", kept.display());
    }
    Ok(rows)
}

async fn stop(child: &mut Child) -> anyhow::Result<()> {
    let pid = child.id().context("fedgw pid")?;
    process::signal(pid, "TERM").await?;
    child.wait().await?;
    Ok(())
}

async fn wait_ready(admin: &AdminClient) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        if let Ok(answer) = admin.call(Method::GET, "/readyz", None).await
            && answer.status == 200
        {
            return Ok(());
        }
        if start.elapsed() > READY_DEADLINE {
            bail!("fedgw not ready after {READY_DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `fedgw_store_live_bytes` from `/metrics`, if the binary has it.
async fn live_bytes(admin: &AdminClient) -> anyhow::Result<Option<u64>> {
    let text = metrics::scrape(admin).await?;
    Ok(metrics::metric(&text, "fedgw_store_live_bytes").map(|v| v as u64))
}

async fn check_served(admin: &AdminClient, td: &TrustDomain, last: &[u8]) -> anyhow::Result<()> {
    let answer = admin
        .call(Method::GET, &format!("/v1/bundles/{td}"), None)
        .await?;
    if answer.status != 200 || answer.body != last {
        bail!(
            "after the restart {td} serves {} bytes (HTTP {}), not the last accepted bundle",
            answer.body.len(),
            answer.status
        );
    }
    Ok(())
}

fn mib(bytes: u64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "a figure for people")]
    let mib = bytes as f64 / (1024.0 * 1024.0);
    format!("{mib:.1}")
}

fn markdown(runs: &[(&str, Vec<Row>)], args: &Args, document_len: usize) -> String {
    let mut out = format!(
        "{} changes of one trust domain's bundle ({document_len} bytes as served, a new \
         `spiffe_sequence` each), through `PUT /v1/bundles/{{td}}` of the release binary. \
         MiB of `data_dir/db`: apparent (file lengths) / allocated (blocks), the highest \
         allocated figure so far (measured after every change), sled's log file and its blob \
         files (count), and the live records (`fedgw_store_live_bytes`, where the binary has \
         it).\n\n",
        args.changes
    );
    let labels: Vec<&str> = runs.iter().map(|(label, _)| *label).collect();
    out.push_str("| step |");
    for label in &labels {
        let _ = write!(
            out,
            " {label}: apparent / allocated MiB | {label}: peak allocated MiB | \
             {label}: log, blobs MiB (files) | {label}: live MiB |"
        );
    }
    out.push_str("\n|---|");
    for _ in &labels {
        out.push_str("---|---|---|---|");
    }
    out.push('\n');
    let steps = runs.first().map_or(0, |(_, rows)| rows.len());
    for i in 0..steps {
        let step = runs
            .iter()
            .map(|(_, rows)| rows.get(i).map_or("", |r| r.step.as_str()))
            .max_by_key(|s| s.len())
            .unwrap_or("");
        // Restart steps carry each run's own ready time; show the step's kind only.
        let step = step.split(" (ready").next().unwrap_or(step);
        let _ = write!(out, "| {step} |");
        for (_, rows) in runs {
            match rows.get(i) {
                Some(row) => {
                    let u = row.usage;
                    let _ = write!(
                        out,
                        " {} / {} | {} | {}, {} ({}) | {} |",
                        mib(u.apparent),
                        mib(u.allocated),
                        mib(row.peak),
                        mib(u.log),
                        mib(u.blobs),
                        u.blob_files,
                        row.live.map_or_else(|| "—".to_owned(), mib),
                    );
                }
                None => out.push_str(" | | | |"),
            }
        }
        out.push('\n');
    }
    out.push('\n');
    for (label, rows) in runs {
        let changes = rows.iter().rfind(|r| r.step.ends_with("changes"));
        if let Some(row) = changes {
            let _ = writeln!(
                out,
                "- {label}: {} changes took {:.0} s ({:.0} ms each); {}",
                args.changes,
                row.seconds,
                row.seconds * 1000.0 / args.changes as f64,
                rows.iter()
                    .filter(|r| r.step.starts_with("restart"))
                    .map(|r| r.step.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    out
}
