//! Scale: the release `fedgw serve` process polling 1,000 or 10,000 foreign trust
//! domains served by a local fixture over real HTTPS on loopback.
//!
//! The fixture is one TLS listener in this process (rustls, HTTP/1.1 and h2) serving
//! each domain's bundle at `/d/<index>`: one CA of its own per domain (with the
//! domain's SPIFFE ID as URI SAN), a sequence, and a one-hour refresh hint, so that no
//! scheduled poll falls inside a run. Its certificate is issued by a CA that fedgw
//! trusts through `extra_ca_roots`. fedgw gets a generated configuration with one
//! `[[federation]]` `https_web` relationship per domain and an `https_web` bundle
//! endpoint (serving `/relay/<td>`), and runs as a separate process with its default
//! log level (info; its output goes to a file).
//!
//! Per run, on a fresh data directory:
//! 1. **first round**: from spawning `fedgw serve` until every domain's bundle is
//!    stored (`fedgw_fetches_total{outcome="accepted"}` in `/metrics` for all of them;
//!    the fixture's count of served documents says when to start looking), or until
//!    `--deadline` (then the count stored so far is reported and the second round is
//!    skipped);
//! 2. **second round**: the fixture switches every domain to a new sequence, and the
//!    benchmark asks for a refresh of every relationship through the admin API
//!    (`POST /v1/federation-relationships/{td}/refresh`, 64 in flight), which answers
//!    after the fetch and the store; the round ends when all have answered `accepted`;
//! 3. CPU seconds of the fedgw process (`utime + stime` from `/proc/PID/stat`) at the
//!    end of each round, and its peak RSS (`VmHWM` from `/proc/PID/status`);
//! 4. **restart to serving**: the fixture stops, fedgw gets SIGTERM, and a new process
//!    starts on the same data directory; the time from its spawn until
//!    `/relay/<td>` of the last stored domain answers 200 (the endpoint's table is
//!    built from the whole stored snapshot at once, so one domain answering means all
//!    do; every stored domain is then checked to serve its last bundle, untimed). Then
//!    the same after SIGKILL.
//!
//! `cargo run --release --example scale -- --fedgw target/release/fedgw
//! [--domains 1000,10000] [--runs 3,1] [--deadline 120] [--markdown FILE]`: `--runs`
//! gives the runs per size (the last count repeats); with `--markdown`, the table
//! replaces the section between `<!-- scale:start -->` and `<!-- scale:end -->`.
//! `SCALE_KEEP_LOGS=1` keeps each run's directory (configuration, fedgw's logs).
//!
//! The fixture, the `/proc` readers, the process and `/metrics` helpers are shared
//! with the other benchmarks, in `bench/common/`.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark reports on the terminal, and stops on any failure"
)]

#[path = "common/fixture.rs"]
mod fixture;
#[path = "common/markdown.rs"]
mod markdown;
#[path = "common/metrics.rs"]
mod metrics;
#[path = "common/proc_stats.rs"]
mod proc_stats;
#[path = "common/process.rs"]
mod process;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fedgw::client::admin_client::{AdminClient, AdminTarget};
use reqwest::Method;
use spiffe_federation::TrustDomain;

use fixture::{Domains, Fixture, FixtureOptions, Pki, serve_toml};
use markdown::replace_section;
use proc_stats::{cpu_seconds, read_peak_rss_mib};
use process::{signal, spawn};

const RESTART_DEADLINE: Duration = Duration::from_secs(60);
const REFRESHES_IN_FLIGHT: usize = 64;

struct Args {
    fedgw: PathBuf,
    domains: Vec<usize>,
    runs: Vec<usize>,
    deadline: Duration,
    markdown: Option<PathBuf>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = std::env::args().skip(1);
    let mut parsed = Args {
        fedgw: PathBuf::from("target/release/fedgw"),
        domains: vec![1000, 10_000],
        runs: vec![3],
        deadline: Duration::from_secs(120),
        markdown: None,
    };
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--fedgw" => parsed.fedgw = PathBuf::from(value()?),
            "--domains" => {
                parsed.domains = value()?
                    .split(',')
                    .map(|n| n.trim().parse::<usize>().context("--domains N[,N…]"))
                    .collect::<Result<_, _>>()?;
            }
            "--runs" => {
                parsed.runs = value()?
                    .split(',')
                    .map(|n| n.trim().parse::<usize>().context("--runs N[,N…]"))
                    .collect::<Result<_, _>>()?;
            }
            "--deadline" => {
                parsed.deadline =
                    Duration::from_secs(value()?.parse().context("--deadline SECONDS")?);
            }
            "--markdown" => parsed.markdown = Some(PathBuf::from(value()?)),
            other => bail!(
                "unknown argument {other:?} (use --fedgw PATH, --domains N[,N…], --runs N[,N…], --deadline SECONDS, --markdown FILE)"
            ),
        }
    }
    if parsed.runs.is_empty()
        || parsed.runs.contains(&0)
        || parsed.domains.is_empty()
        || parsed.domains.contains(&0)
    {
        bail!("--runs and --domains must be positive");
    }
    Ok(parsed)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let fedgw = std::fs::canonicalize(&args.fedgw)
        .with_context(|| format!("fedgw binary {}", args.fedgw.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let max = args.domains.iter().copied().max().unwrap_or(0);
    eprintln!("generating {max} foreign domains' bundles");
    let pki = Pki::generate("scale")?;
    let domains = Domains::generate(max, "scale")?;
    let mut rows = Vec::new();
    for (k, &n) in args.domains.iter().enumerate() {
        // One count for every size, or one per size; the last one repeats.
        let count = args.runs.get(k).or(args.runs.last()).copied().unwrap_or(1);
        let mut runs = Vec::new();
        for run in 1..=count {
            eprintln!("{n} domains, run {run}/{count}");
            let result = runtime.block_on(one_run(&fedgw, &pki, &domains, n, args.deadline))?;
            eprintln!("  {result:?}");
            runs.push(result);
        }
        rows.push((n, runs));
    }
    let table = markdown(&rows, args.deadline);
    println!("{table}");
    if let Some(path) = args.markdown {
        replace_section(&path, "scale", &table)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct RunResult {
    /// Domains stored at the end of the first round (all, unless the deadline passed).
    stored: usize,
    first_round: Duration,
    first_round_cpu: f64,
    /// `None` when the first round missed its deadline (the second is then skipped).
    second_round: Option<Duration>,
    cpu_seconds: f64,
    peak_rss_mib: f64,
    restart_term: Duration,
    restart_kill: Duration,
    restart_peak_rss_mib: f64,
    shutdown: Duration,
}

async fn one_run(
    fedgw: &Path,
    pki: &Pki,
    domains: &Domains,
    n: usize,
    deadline: Duration,
) -> anyhow::Result<RunResult> {
    let dir = tempfile::tempdir()?;
    let fixture = Fixture::start(pki, domains, n, FixtureOptions::default()).await?;
    let endpoint_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = write_config(dir.path(), pki, domains, &fixture, endpoint_port)?;
    let socket = dir.path().join("admin.sock");
    let admin = AdminClient::new(&AdminTarget::Unix(socket), None)?;

    // 1. The first round: spawn → every domain stored (or the deadline).
    let start = Instant::now();
    let mut child = spawn(fedgw, &config, &dir.path().join("fedgw-1.log"))?;
    let pid = child.id().context("fedgw pid")?;
    let stored = wait_all_accepted(&admin, &fixture, n, start, deadline).await?;
    let first_round = start.elapsed();
    let first_round_cpu = cpu_seconds(pid)?;
    eprintln!(
        "  first round {first_round:.2?}, {first_round_cpu:.1} CPU s, {} of {n} stored",
        stored.len()
    );

    // 2. The second round: a new sequence everywhere, every relationship refreshed.
    let second_round = if stored.len() == n {
        fixture.set_generation(1);
        let start = Instant::now();
        refresh_all(&admin, &domains.names[..n]).await?;
        let second_round = start.elapsed();
        eprintln!("  second round {second_round:.2?}");
        Some(second_round)
    } else {
        eprintln!("  second round skipped: the first did not finish");
        None
    };
    let expected_sequence = if second_round.is_some() { 2 } else { 1 };
    let cpu_seconds = cpu_seconds(pid)?;
    let peak_rss_mib = read_peak_rss_mib(pid)?;

    // 3. Restart with the fixture down: SIGTERM, then SIGKILL. The probe is the
    //    last stored domain.
    drop(fixture);
    let stop = Instant::now();
    signal(pid, "TERM").await?;
    child.wait().await?;
    let shutdown = stop.elapsed();
    let relay = relay_client(pki)?;
    let probe = stored.last().context("nothing stored")?;
    let base = format!("https://localhost:{endpoint_port}");

    let start = Instant::now();
    let mut child = spawn(fedgw, &config, &dir.path().join("fedgw-2.log"))?;
    wait_serving(&relay, &base, probe, start).await?;
    let restart_term = start.elapsed();
    check_all_served(&relay, &base, &stored, expected_sequence).await?;
    let pid = child.id().context("fedgw pid")?;
    let restart_peak_rss_mib = read_peak_rss_mib(pid)?;
    child.start_kill()?;
    child.wait().await?;

    let start = Instant::now();
    let mut child = spawn(fedgw, &config, &dir.path().join("fedgw-3.log"))?;
    wait_serving(&relay, &base, probe, start).await?;
    let restart_kill = start.elapsed();
    check_all_served(&relay, &base, &stored, expected_sequence).await?;
    let pid = child.id().context("fedgw pid")?;
    signal(pid, "TERM").await?;
    child.wait().await?;
    if std::env::var_os("SCALE_KEEP_LOGS").is_some() {
        let kept = dir.keep();
        eprintln!("  logs kept in {}", kept.display());
    }

    Ok(RunResult {
        stored: stored.len(),
        first_round,
        first_round_cpu,
        second_round,
        cpu_seconds,
        peak_rss_mib,
        restart_term,
        restart_kill,
        restart_peak_rss_mib,
        shutdown,
    })
}

fn write_config(
    dir: &Path,
    pki: &Pki,
    domains: &Domains,
    fixture: &Fixture,
    endpoint_port: u16,
) -> anyhow::Result<PathBuf> {
    let files = pki.write_files(dir)?;
    let toml = serve_toml(
        &dir.join("data"),
        &dir.join("admin.sock"),
        endpoint_port,
        &files,
    ) + &fixture.federation_toml(domains, &files.ca);
    let path = dir.join("fedgw.toml");
    std::fs::write(&path, toml)?;
    Ok(path)
}

/// The trust domains with an `accepted` fetch in `fedgw_fetches_total`, sorted, and
/// how many have a failed one.
async fn fetch_counts(admin: &AdminClient) -> anyhow::Result<(Vec<TrustDomain>, usize)> {
    let text = metrics::scrape(admin).await?;
    let (mut accepted, mut failed) = (Vec::new(), 0);
    for series in metrics::series(&text, "fedgw_fetches_total") {
        if series.value < 1.0 {
            continue;
        }
        match series.label("outcome") {
            Some("accepted") => {
                let td = series.label("trust_domain").context("trust_domain label")?;
                accepted.push(TrustDomain::new(td)?);
            }
            Some("failed") => failed += 1,
            _ => {}
        }
    }
    accepted.sort();
    Ok((accepted, failed))
}

/// Wait until every domain is stored, or `deadline` after `start`; the stored ones.
async fn wait_all_accepted(
    admin: &AdminClient,
    fixture: &Fixture,
    n: usize,
    start: Instant,
    deadline: Duration,
) -> anyhow::Result<Vec<TrustDomain>> {
    let mut last_served = (0, Instant::now());
    loop {
        if start.elapsed() > deadline {
            let (accepted, failed) = fetch_counts(admin).await?;
            eprintln!(
                "  deadline {deadline:?} passed: {} stored, {failed} failed fetches, {} served by the fixture",
                accepted.len(),
                fixture.served()
            );
            return Ok(accepted);
        }
        let served = fixture.served();
        if served != last_served.0 {
            last_served = (served, Instant::now());
        }
        // Look at fedgw's metrics once the fixture has served every domain (or its
        // count stopped moving: some fetches failed).
        if served < n && last_served.1.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let (accepted, failed) = fetch_counts(admin).await?;
        if accepted.len() >= n {
            return Ok(accepted);
        }
        if accepted.len() + failed >= n && failed > 0 {
            bail!("{failed} of {n} first fetches failed (see fedgw's log)");
        }
        // Rendering `/metrics` costs fedgw CPU in proportion to the domains: look
        // often only near the end.
        let pause = if n - accepted.len() <= n / 100 + 1 {
            20
        } else {
            500
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

async fn refresh_all(admin: &AdminClient, names: &[TrustDomain]) -> anyhow::Result<()> {
    let semaphore = Arc::new(tokio::sync::Semaphore::new(REFRESHES_IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    for td in names {
        let permit = Arc::clone(&semaphore).acquire_owned().await?;
        let admin = admin.clone();
        let path = format!("/v1/federation-relationships/{td}/refresh");
        tasks.spawn(async move {
            let answer = admin.call(Method::POST, &path, None).await;
            drop(permit);
            answer
        });
    }
    let mut not_accepted = 0;
    while let Some(joined) = tasks.join_next().await {
        let answer = joined??;
        let outcome = answer
            .json
            .as_ref()
            .and_then(|v| v.get("outcome"))
            .and_then(|v| v.as_str())
            .unwrap_or("");
        if outcome != "accepted" {
            not_accepted += 1;
        }
    }
    if not_accepted > 0 {
        bail!("{not_accepted} refreshes did not end in `accepted`");
    }
    Ok(())
}

fn relay_client(pki: &Pki) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(pki.ca_pem.as_bytes())?])
        .no_proxy()
        .http1_only()
        .timeout(Duration::from_secs(5))
        .build()?)
}

async fn wait_serving(
    client: &reqwest::Client,
    base: &str,
    td: &TrustDomain,
    start: Instant,
) -> anyhow::Result<()> {
    let url = format!("{base}/relay/{td}");
    loop {
        if let Ok(response) = client.get(&url).send().await
            && response.status() == reqwest::StatusCode::OK
        {
            return Ok(());
        }
        if start.elapsed() > RESTART_DEADLINE {
            bail!("{url} not served after {RESTART_DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn check_all_served(
    client: &reqwest::Client,
    base: &str,
    names: &[TrustDomain],
    sequence: u64,
) -> anyhow::Result<()> {
    for td in names {
        let response = client.get(format!("{base}/relay/{td}")).send().await?;
        if response.status() != reqwest::StatusCode::OK {
            bail!(
                "/relay/{td} answered {} after the restart",
                response.status()
            );
        }
        let bundle: serde_json::Value = serde_json::from_slice(&response.bytes().await?)?;
        if bundle
            .get("spiffe_sequence")
            .and_then(serde_json::Value::as_u64)
            != Some(sequence)
        {
            bail!("/relay/{td} does not serve the last stored bundle");
        }
    }
    Ok(())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn markdown(rows: &[(usize, Vec<RunResult>)], deadline: Duration) -> String {
    let mut out = String::from(
        "Medians over the runs, with (min–max) when there were several; each run on a fresh data directory.\n\n\
         | foreign domains | runs | first round s | CPU s to end of first round | second round s | CPU s, both rounds | peak RSS MiB | restart → serving s (SIGTERM) | restart → serving s (SIGKILL) | RSS after restart MiB | shutdown s |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (n, results) in rows {
        let cell = |values: Vec<f64>, digits: usize| {
            let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let several = values.len() > 1;
            let m = median(values);
            if several {
                format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})")
            } else {
                format!("{m:.digits$}")
            }
        };
        let of = |f: &dyn Fn(&RunResult) -> f64, digits: usize| {
            cell(results.iter().map(f).collect(), digits)
        };
        let complete = results.iter().all(|r| r.stored == *n);
        let first = if complete {
            of(&|r| r.first_round.as_secs_f64(), 2)
        } else {
            let stored: Vec<String> = results.iter().map(|r| r.stored.to_string()).collect();
            format!(
                "not done after {} s: {} of {n} stored",
                deadline.as_secs(),
                stored.join(", ")
            )
        };
        let seconds: Vec<f64> = results
            .iter()
            .filter_map(|r| r.second_round.map(|d| d.as_secs_f64()))
            .collect();
        let second = if seconds.len() == results.len() {
            cell(seconds, 2)
        } else {
            "skipped".to_owned()
        };
        let _ = writeln!(
            out,
            "| {n} | {} | {first} | {} | {second} | {} | {} | {} | {} | {} | {} |",
            results.len(),
            of(&|r| r.first_round_cpu, 1),
            of(&|r| r.cpu_seconds, 1),
            of(&|r| r.peak_rss_mib, 0),
            of(&|r| r.restart_term.as_secs_f64(), 2),
            of(&|r| r.restart_kill.as_secs_f64(), 2),
            of(&|r| r.restart_peak_rss_mib, 0),
            of(&|r| r.shutdown.as_secs_f64(), 2),
        );
    }
    out
}
