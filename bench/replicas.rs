//! Replicas on PostgreSQL: several release `fedgw serve` processes sharing one
//! PostgreSQL database (`[storage] backend = "postgres"`), polling N foreign trust
//! domains served by a local fixture over real HTTPS on loopback.
//!
//! The fixture is the one of `bench/scale.rs` (`bench/common/fixture.rs`): one TLS
//! listener in this process serving each domain's bundle at `/d/<index>`, one CA per
//! domain, a one-hour refresh hint (or one second for the domain a failover watches),
//! and here it also records when each domain was last asked for. PostgreSQL is a
//! throwaway server from Debian's packages (`fedgw_testkit::postgres`), reached over
//! TCP with TLS (verify-full) and a password file, a fresh database per set-up. Every
//! replica gets the same generated configuration (one `[[federation]]` per domain)
//! but its own `data_dir`, admin socket and `https_web` endpoint port.
//!
//! 1. **first round** with 1 replica and with 3 (each on a fresh database): from
//!    spawning the replicas until every domain's bundle is stored
//!    (`SELECT count(*) FROM fedgw_bundles WHERE record IS NOT NULL` reaches N); CPU
//!    seconds (`/proc/PID/stat`) and peak RSS (`VmHWM`) of each replica at that
//!    point; the database's size (`pg_database_size`).
//! 2. **change propagation**, with the 3 replicas of the first round still running:
//!    an operator bundle for a new trust domain is put through replica 1's admin API
//!    (`PUT /v1/bundles/<td>`, PEM); the time from sending it until every replica's
//!    admin API answers `GET /v1/bundles/<td>` with 200. `--rounds` times.
//! 3. **failover**, per lease time (`--lease-times`), on a fresh database with
//!    `--failover-domains` domains and 3 replicas: domain 0 has a one-second refresh
//!    hint; once the leases are spread (`fedgw_replicas` 3 everywhere and
//!    `fedgw_leases_held` summing to the domains), the holder of domain 0 is the
//!    replica whose `fedgw_fetches_total` for it grows; it gets `kill -9`, and the
//!    time runs until the fixture sees the next request for domain 0 (from another
//!    replica). The killed replica is then started again, `--failovers` times.
//!
//! `cargo run --release --example replicas -- --fedgw target/release/fedgw
//! [--domains 10000] [--replicas 1,3] [--rounds 200] [--lease-times 3,15]
//! [--failovers 3] [--failover-domains 30] [--deadline 300] [--markdown FILE]`: with
//! `--markdown`, the tables replace the section between `<!-- replicas:start -->` and
//! `<!-- replicas:end -->`. `REPLICAS_KEEP_LOGS=1` keeps each set-up's directory.
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
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fedgw::client::admin_client::{AdminClient, AdminTarget, Body};
use fedgw_testkit::postgres::Postgres;
use reqwest::Method;
use spiffe_federation::TrustDomain;
use tokio::process::Child;

use fixture::{Domains, Fixture, FixtureOptions, Pki, serve_toml, spiffe_ca};
use markdown::replace_section;
use metrics::metric;
use proc_stats::{cpu_seconds, read_peak_rss_mib};
use process::signal;

/// How long a propagation or a takeover may take before the benchmark gives up.
const STEP_DEADLINE: Duration = Duration::from_secs(120);

struct Args {
    fedgw: PathBuf,
    domains: usize,
    replicas: Vec<usize>,
    rounds: usize,
    lease_times: Vec<u64>,
    failovers: usize,
    failover_domains: usize,
    deadline: Duration,
    markdown: Option<PathBuf>,
}

fn list<T: std::str::FromStr>(value: &str, what: &str) -> anyhow::Result<Vec<T>> {
    value
        .split(',')
        .map(|n| n.trim().parse::<T>().ok().context(what.to_owned()))
        .collect()
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = std::env::args().skip(1);
    let mut parsed = Args {
        fedgw: PathBuf::from("target/release/fedgw"),
        domains: 10_000,
        replicas: vec![1, 3],
        rounds: 200,
        lease_times: vec![3, 15],
        failovers: 3,
        failover_domains: 30,
        deadline: Duration::from_secs(300),
        markdown: None,
    };
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--fedgw" => parsed.fedgw = PathBuf::from(value()?),
            "--domains" => parsed.domains = value()?.parse().context("--domains N")?,
            "--replicas" => parsed.replicas = list(&value()?, "--replicas N[,N…]")?,
            "--rounds" => parsed.rounds = value()?.parse().context("--rounds N")?,
            "--lease-times" => {
                parsed.lease_times = list(&value()?, "--lease-times SECONDS[,SECONDS…]")?;
            }
            "--failovers" => parsed.failovers = value()?.parse().context("--failovers N")?,
            "--failover-domains" => {
                parsed.failover_domains = value()?.parse().context("--failover-domains N")?;
            }
            "--deadline" => {
                parsed.deadline =
                    Duration::from_secs(value()?.parse().context("--deadline SECONDS")?);
            }
            "--markdown" => parsed.markdown = Some(PathBuf::from(value()?)),
            other => bail!(
                "unknown argument {other:?} (use --fedgw PATH, --domains N, --replicas N[,N…], --rounds N, --lease-times S[,S…], --failovers N, --failover-domains N, --deadline SECONDS, --markdown FILE)"
            ),
        }
    }
    if parsed.domains == 0 || parsed.replicas.is_empty() || parsed.replicas.contains(&0) {
        bail!("--domains and --replicas must be positive");
    }
    if parsed.failover_domains == 0 {
        bail!("--failover-domains must be positive");
    }
    if parsed.lease_times.iter().any(|&s| s < 3) {
        bail!("--lease-times: the shortest lease is 3 s");
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
    eprintln!("starting PostgreSQL");
    let pg = Postgres::shared().map_err(|err| anyhow::anyhow!("{err}"))?;
    let max = args.domains.max(args.failover_domains);
    eprintln!("generating {max} foreign domains' bundles");
    let pki = Pki::generate("replicas")?;
    let domains = Domains::generate(max, "replicas")?;
    let bench = Bench {
        fedgw,
        pg,
        pki,
        domains,
    };

    let mut rounds = Vec::new();
    let mut propagation = None;
    let most = args.replicas.iter().copied().max().unwrap_or(1);
    for &r in &args.replicas {
        eprintln!("first round: {} domains, {r} replica(s)", args.domains);
        let mut set = runtime.block_on(bench.start_set(args.domains, r, 15, None))?;
        let result = runtime.block_on(bench.first_round(&mut set, args.deadline))?;
        eprintln!("  {result:?}");
        rounds.push(result);
        if r == most && r > 1 && args.rounds > 0 && propagation.is_none() {
            eprintln!(
                "propagation: {} operator bundles through replica 1",
                args.rounds
            );
            propagation = Some(runtime.block_on(propagate(&set, args.rounds))?);
        }
        runtime.block_on(set.stop())?;
    }
    let mut failovers = Vec::new();
    for &lease in &args.lease_times {
        eprintln!(
            "failover: lease_time {lease} s, {} domains, 3 replicas",
            args.failover_domains
        );
        let mut set =
            runtime.block_on(bench.start_set(args.failover_domains, 3, lease, Some(0)))?;
        let times = runtime.block_on(failover(&bench, &mut set, args.failovers))?;
        eprintln!("  {times:?}");
        failovers.push((lease, times));
        runtime.block_on(set.stop())?;
    }

    let table = markdown(&rounds, propagation.as_ref(), &failovers);
    println!("{table}");
    if let Some(path) = args.markdown {
        replace_section(&path, "replicas", &table)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

struct Bench {
    fedgw: PathBuf,
    pg: &'static Postgres,
    pki: Pki,
    domains: Domains,
}

/// One replica: its configuration, admin client and process.
struct Replica {
    config: PathBuf,
    log_dir: PathBuf,
    admin: AdminClient,
    child: Option<Child>,
    starts: usize,
}

impl Replica {
    fn spawn(&mut self, fedgw: &Path) -> anyhow::Result<u32> {
        self.starts += 1;
        let log = self.log_dir.join(format!("fedgw-{}.log", self.starts));
        let child = process::spawn(fedgw, &self.config, &log)?;
        let pid = child.id().context("fedgw pid")?;
        self.child = Some(child);
        Ok(pid)
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.child
            .as_ref()
            .and_then(Child::id)
            .context("replica not running")
    }

    async fn metrics(&self) -> anyhow::Result<String> {
        metrics::scrape(&self.admin).await
    }
}

/// Replicas on one fresh database, with their fixture.
struct Set {
    dir: tempfile::TempDir,
    database: String,
    fixture: Fixture,
    replicas: Vec<Replica>,
    domains: usize,
    spawned: Instant,
}

impl Set {
    async fn stop(mut self) -> anyhow::Result<()> {
        for replica in &mut self.replicas {
            if let Some(child) = replica.child.as_mut() {
                let pid = child.id().context("fedgw pid")?;
                signal(pid, "TERM").await?;
                child.wait().await?;
            }
        }
        if std::env::var_os("REPLICAS_KEEP_LOGS").is_some() {
            let kept = self.dir.keep();
            eprintln!("  logs kept in {}", kept.display());
        }
        Ok(())
    }
}

impl Bench {
    /// Write `r` replicas' configurations for `n` domains on a new database and spawn
    /// them all; domain `fast` with the one-second refresh hint.
    async fn start_set(
        &self,
        n: usize,
        r: usize,
        lease_secs: u64,
        fast: Option<usize>,
    ) -> anyhow::Result<Set> {
        let dir = tempfile::tempdir()?;
        let options = FixtureOptions {
            fast,
            record_requests: true,
        };
        let fixture = Fixture::start(&self.pki, &self.domains, n, options).await?;
        let pg = self.pg;
        let database = tokio::task::spawn_blocking(move || pg.create_database())
            .await?
            .map_err(|err| anyhow::anyhow!("{err}"))?;
        let files = self.pki.write_files(dir.path())?;
        let password = dir.path().join("pg-password");
        std::fs::write(&password, self.pg.password())?;
        let shared = format!(
            "\n[polling]\nmin_refresh = \"1s\"\n\n[storage]\nbackend = \"postgres\"\n\n\
             [storage.postgres]\nurl = {url:?}\npassword_file = {password:?}\nca_file = {pg_ca:?}\n\
             lease_time = \"{lease_secs}s\"\n{federation}",
            url = self.pg.url(&database),
            pg_ca = self.pg.ca_file(),
            federation = fixture.federation_toml(&self.domains, &files.ca),
        );
        let mut replicas = Vec::new();
        for k in 0..r {
            let own = dir.path().join(format!("r{k}"));
            std::fs::create_dir_all(&own)?;
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let socket = own.join("admin.sock");
            let toml = serve_toml(&own.join("data"), &socket, port, &files) + &shared;
            let config = own.join("fedgw.toml");
            std::fs::write(&config, toml)?;
            replicas.push(Replica {
                config,
                log_dir: own,
                admin: AdminClient::new(&AdminTarget::Unix(socket), None)?,
                child: None,
                starts: 0,
            });
        }
        let spawned = Instant::now();
        for replica in &mut replicas {
            replica.spawn(&self.fedgw)?;
        }
        Ok(Set {
            dir,
            database,
            fixture,
            replicas,
            domains: n,
            spawned,
        })
    }

    async fn psql(&self, database: &str, sql: &'static str) -> anyhow::Result<String> {
        let (pg, database) = (self.pg, database.to_owned());
        tokio::task::spawn_blocking(move || pg.psql(&database, sql))
            .await?
            .map_err(|err| anyhow::anyhow!("{err}"))
    }

    /// From the spawn until every domain is stored in the database.
    async fn first_round(&self, set: &mut Set, deadline: Duration) -> anyhow::Result<RoundResult> {
        let n = set.domains;
        let stored = loop {
            let count: usize = self
                .psql(
                    &set.database,
                    "SELECT count(*) FROM fedgw_bundles WHERE record IS NOT NULL",
                )
                .await
                .unwrap_or_else(|_| "0".to_owned())
                .trim()
                .parse()
                .unwrap_or(0);
            if count >= n || set.spawned.elapsed() > deadline {
                break count;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let elapsed = set.spawned.elapsed();
        let mut cpu = Vec::new();
        let mut rss = Vec::new();
        for replica in &set.replicas {
            let pid = replica.pid()?;
            cpu.push(cpu_seconds(pid)?);
            rss.push(read_peak_rss_mib(pid)?);
        }
        let mut leases = Vec::new();
        for replica in &set.replicas {
            leases.push(metric(&replica.metrics().await?, "fedgw_leases_held").unwrap_or(0.0));
        }
        let size: f64 = self
            .psql(&set.database, "SELECT pg_database_size(current_database())")
            .await?
            .trim()
            .parse()?;
        Ok(RoundResult {
            replicas: set.replicas.len(),
            domains: n,
            stored,
            elapsed,
            deadline,
            cpu,
            rss,
            leases,
            db_mib: size / (1024.0 * 1024.0),
        })
    }
}

#[derive(Debug)]
struct RoundResult {
    replicas: usize,
    domains: usize,
    stored: usize,
    elapsed: Duration,
    deadline: Duration,
    cpu: Vec<f64>,
    rss: Vec<f64>,
    leases: Vec<f64>,
    db_mib: f64,
}

/// The sum of `fedgw_fetches_total` for `td`, every outcome.
fn fetches_of(text: &str, td: &TrustDomain) -> f64 {
    let td = td.to_string();
    metrics::series(text, "fedgw_fetches_total")
        .filter(|series| series.label("trust_domain") == Some(td.as_str()))
        .map(|series| series.value)
        .sum()
}

/// Milliseconds from each `PUT` through replica 1 until every replica answers the
/// bundle, and until the slowest other replica does.
async fn propagate(set: &Set, rounds: usize) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let td = format!("op{round:04}.replicas.fedgw.test");
        let pem = spiffe_ca(&td)?.pem();
        let path = format!("/v1/bundles/{td}");
        let start = Instant::now();
        let answer = set.replicas[0]
            .admin
            .call(
                Method::PUT,
                &path,
                Some(Body::Raw {
                    content_type: "application/x-pem-file",
                    bytes: pem.into_bytes(),
                }),
            )
            .await?;
        if !(200..300).contains(&answer.status) {
            bail!("PUT {path}: {answer:?}");
        }
        let waits = set.replicas.iter().map(|replica| {
            let path = path.clone();
            async move {
                loop {
                    if let Ok(answer) = replica.admin.call(Method::GET, &path, None).await
                        && answer.status == 200
                    {
                        return Ok(());
                    }
                    if start.elapsed() > STEP_DEADLINE {
                        bail!("{path} not served by every replica after {STEP_DEADLINE:?}");
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        });
        futures_util::future::try_join_all(waits).await?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(times)
}

/// Wait until the 3 replicas see each other and the leases cover every domain.
async fn wait_spread(set: &Set) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let mut seen = true;
        let mut held = 0.0;
        for replica in set.replicas.iter().filter(|r| r.child.is_some()) {
            let text = replica.metrics().await.unwrap_or_default();
            seen &= metric(&text, "fedgw_replicas") == Some(set.replicas.len() as f64);
            held += metric(&text, "fedgw_leases_held").unwrap_or(0.0);
        }
        if seen && held == set.domains as f64 {
            return Ok(());
        }
        if start.elapsed() > STEP_DEADLINE {
            bail!("leases not spread over the replicas after {STEP_DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Seconds from `kill -9` of domain 0's lease holder until its next fetch, per
/// failover.
async fn failover(bench: &Bench, set: &mut Set, count: usize) -> anyhow::Result<Vec<f64>> {
    let td = bench.domains.names[0].clone();
    let mut times = Vec::new();
    for _ in 0..count {
        wait_spread(set).await?;
        // The holder: the replica whose fetches of domain 0 grow (1 s refresh hint).
        let start = Instant::now();
        let holder = loop {
            let mut before = Vec::new();
            for replica in &set.replicas {
                before.push(fetches_of(&replica.metrics().await?, &td));
            }
            tokio::time::sleep(Duration::from_millis(2500)).await;
            let mut grown = Vec::new();
            for (k, replica) in set.replicas.iter().enumerate() {
                if fetches_of(&replica.metrics().await?, &td) > before[k] {
                    grown.push(k);
                }
            }
            if let [one] = grown[..] {
                break one;
            }
            if start.elapsed() > STEP_DEADLINE {
                bail!("no single replica polls {td} (growing: {grown:?})");
            }
        };
        let killed = Instant::now();
        let child = set.replicas[holder].child.as_mut().context("holder")?;
        child.start_kill()?;
        child.wait().await?;
        let taken = loop {
            if let Some(at) = set.fixture.last_request(0)
                && at > killed
            {
                break at;
            }
            if killed.elapsed() > STEP_DEADLINE {
                bail!("{td} not fetched again {STEP_DEADLINE:?} after kill -9");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let seconds = taken.duration_since(killed).as_secs_f64();
        eprintln!(
            "  replica {} held {td}: fetched again {seconds:.2} s after kill -9",
            holder + 1
        );
        times.push(seconds);
        set.replicas[holder].spawn(&bench.fedgw)?;
    }
    Ok(times)
}

/// The `q` quantile (nearest rank) of `values`.
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn joined(values: &[f64], digits: usize) -> String {
    values
        .iter()
        .map(|v| format!("{v:.digits$}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

fn markdown(
    rounds: &[RoundResult],
    propagation: Option<&Vec<f64>>,
    failovers: &[(u64, Vec<f64>)],
) -> String {
    let mut out = String::from(
        "One run each; each first round on a fresh database. Per-replica values are \
         listed replica 1 / 2 / 3.\n\n\
         | foreign domains | replicas | first round s | speed-up | CPU s per replica | peak RSS MiB per replica | leases held at the end | database MiB |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    let single = rounds
        .iter()
        .find(|r| r.replicas == 1 && r.stored == r.domains)
        .map(|r| r.elapsed.as_secs_f64());
    for r in rounds {
        let first = if r.stored >= r.domains {
            format!("{:.2}", r.elapsed.as_secs_f64())
        } else {
            format!(
                "not done after {} s: {} of {} stored",
                r.deadline.as_secs(),
                r.stored,
                r.domains
            )
        };
        let speedup = match single {
            Some(s) if r.stored >= r.domains => format!("{:.2}×", s / r.elapsed.as_secs_f64()),
            _ => "–".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {first} | {speedup} | {} | {} | {} | {:.1} |",
            r.domains,
            r.replicas,
            joined(&r.cpu, 1),
            joined(&r.rss, 0),
            joined(&r.leases, 0),
            r.db_mib,
        );
    }
    if let Some(times) = propagation {
        let _ = write!(
            out,
            "\nChange propagation, {} operator bundles put through replica 1 with {} replicas running \
             (from sending the `PUT` until every replica's admin API answers the bundle):\n\n\
             | changes | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|\n\
             | {} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
            times.len(),
            rounds.iter().map(|r| r.replicas).max().unwrap_or(0),
            times.len(),
            quantile(times, 0.5),
            quantile(times, 0.9),
            quantile(times, 0.99),
            quantile(times, 1.0),
        );
    }
    if !failovers.is_empty() {
        out.push_str(
            "\nFailover, 3 replicas: `kill -9` of the replica holding a domain's polling lease \
             (refresh hint 1 s) until another replica fetches it:\n\n\
             | lease_time | failovers | takeover s (each) |\n|---|---|---|\n",
        );
        for (lease, times) in failovers {
            let _ = writeln!(
                out,
                "| {lease} s | {} | {} |",
                times.len(),
                joined(times, 2)
            );
        }
    }
    out
}
