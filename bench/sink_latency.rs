//! Change → sinks latency: how long after a bundle change is submitted to the trust
//! store do the sinks have it?
//!
//! One gateway runs in this process with an Envoy SDS server on a unix socket, a files
//! sink and the admin API on a unix socket. Three observers follow it the way real
//! consumers do: an SDS v3 `StreamSecrets` client (tonic, over the socket, ACKing each
//! response), a watch client (`GET /v1/bundles?wait=REVISION` over the admin socket,
//! in a loop), and a reader of the files sink's `<td>.json` (a thread re-reading the
//! file every 200 µs, so its figures carry up to 0.2 ms of sampling delay). The
//! benchmark submits `--rounds` changes of one foreign domain (a new
//! `spiffe_sequence` each time, and a second CA added or removed, since SDS resources
//! carry only the CAs), one at a time: each round starts once every observer
//! has seen the previous one, so no change is coalesced. Per round it records the time
//! `TrustStore::submit` took (policy, the flushed sled write, the snapshot swap) and,
//! for each observer, the time from the start of the submit to the moment it saw the
//! new revision. It prints p50, p99 and max.
//!
//! `cargo run --release --example sink_latency -- [--rounds N] [--markdown FILE]`;
//! with `--markdown`, the table replaces the section between the
//! `<!-- sink-latency:start -->` and `<!-- sink-latency:end -->` markers of FILE.
//! `bench/run.sh` runs it and describes the machine.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark reports on the terminal"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use fedgw::app::Config;
use fedgw::client::admin_client::{AdminClient, AdminTarget};
use fedgw::trust::policy::Source;
use fedgw::trust::store::Outcome;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
use reqwest::Method;
use spiffe_federation::bundle::X509Authority;
use spiffe_federation::{Bundle, TrustDomain};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const TRUST_DOMAIN: &str = "bench.fedgw.test";
const ROUND_DEADLINE: Duration = Duration::from_secs(10);

/// When each observer saw each revision (SDS, watch) or sequence (files).
#[derive(Default)]
struct Seen {
    sds: BTreeMap<u64, Instant>,
    watch: BTreeMap<u64, Instant>,
    files: BTreeMap<u64, Instant>,
}

type Shared = Arc<Mutex<Seen>>;

fn record(seen: &Shared, pick: fn(&mut Seen) -> &mut BTreeMap<u64, Instant>, revision: u64) {
    let now = Instant::now();
    let mut guard = seen.lock().unwrap_or_else(PoisonError::into_inner);
    pick(&mut guard).entry(revision).or_insert(now);
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let (rounds, markdown) = arguments()?;
    let dir = tempfile::tempdir()?;
    let config = Config::from_toml(&format!(
        r#"
data_dir = "{data}"
[admin]
listen = "unix:{admin}"
[sinks.sds]
listen = "unix:{sds}"
[[sinks.files]]
dir = "{files}"
"#,
        data = dir.path().join("data").display(),
        admin = dir.path().join("admin.sock").display(),
        sds = dir.path().join("sds.sock").display(),
        files = dir.path().join("files").display(),
    ))?;
    let running = fedgw::app::start(&config).await?;
    let td: TrustDomain = TRUST_DOMAIN.parse()?;
    // Every round must change what every sink carries: SDS resources hold only the
    // CAs (not the sequence), so rounds alternate between {A} and {A, B}.
    let cas = [ca_authority(&td)?, ca_authority(&td)?];
    let store = running.trust_store.clone();

    // The first version, so that every observer has something to follow.
    let mut sequence = 1_u64;
    let first = submit(&store, &td, &cas, sequence).await?;

    let seen: Shared = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sds = tokio::spawn(report(
        "SDS",
        follow_sds(dir.path().join("sds.sock"), Arc::clone(&seen)),
    ));
    let watch = tokio::spawn(report(
        "watch",
        follow_watch(dir.path().join("admin.sock"), first, Arc::clone(&seen)),
    ));
    let files = {
        let path = dir
            .path()
            .join("files")
            .join(format!("{TRUST_DOMAIN}.json"));
        let seen = Arc::clone(&seen);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || follow_files(&path, &seen, &stop))
    };
    wait_all(&seen, first, sequence)
        .await
        .context("observers never saw the first version")?;

    let mut submit_times = Vec::with_capacity(rounds);
    // Per round: the revision, the sequence it carries, and when its submit started.
    let mut starts = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        sequence += 1;
        let start = Instant::now();
        let revision = submit(&store, &td, &cas, sequence).await?;
        submit_times.push(start.elapsed());
        starts.push((revision, sequence, start));
        wait_all(&seen, revision, sequence)
            .await
            .with_context(|| format!("round with revision {revision} never reached every sink"))?;
    }
    stop.store(true, Ordering::Relaxed);
    let _ignored = files.join();

    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(PoisonError::into_inner));
    // SDS and watch report revisions; the files reader sees sequences.
    let latencies = |map: &BTreeMap<u64, Instant>, by_sequence: bool| -> Vec<Duration> {
        starts
            .iter()
            .filter_map(|(revision, sequence, start)| {
                let key = if by_sequence { sequence } else { revision };
                map.get(key).map(|at| at.duration_since(*start))
            })
            .collect()
    };
    let rows = [
        (
            "submit returns (policy, flushed sled write, snapshot swap)",
            submit_times,
        ),
        (
            "Envoy SDS stream (StreamSecrets over a unix socket)",
            latencies(&seen.sds, false),
        ),
        (
            "watch call (GET /v1/bundles?wait= over the admin socket)",
            latencies(&seen.watch, false),
        ),
        (
            "files sink (<td>.json replaced, seen by a reader)",
            latencies(&seen.files, true),
        ),
    ];
    let table = table(rounds, &rows);
    println!("{table}");
    if let Some(path) = markdown {
        write_section(&path, &table)?;
        eprintln!("wrote the table into {}", path.display());
    }
    sds.abort();
    watch.abort();
    running.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

/// Run an observer; say why it stopped, if it did.
async fn report(name: &str, observer: impl Future<Output = anyhow::Result<()>>) {
    if let Err(err) = observer.await {
        eprintln!("{name} observer stopped: {err:#}");
    }
}

fn arguments() -> anyhow::Result<(usize, Option<PathBuf>)> {
    let mut rounds = 500;
    let mut markdown = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => {
                rounds = args.next().context("--rounds needs a number")?.parse()?;
            }
            "--markdown" => {
                markdown = Some(PathBuf::from(
                    args.next().context("--markdown needs a file")?,
                ))
            }
            other => bail!("unknown argument {other:?} (use --rounds N, --markdown FILE)"),
        }
    }
    Ok((rounds, markdown))
}

fn ca_authority(td: &TrustDomain) -> anyhow::Result<X509Authority> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.subject_alt_names = vec![SanType::URI(format!("spiffe://{td}").try_into()?)];
    let cert = params.self_signed(&key)?;
    Ok(X509Authority::from_der(cert.der().to_vec())?)
}

async fn submit(
    store: &fedgw::trust::store::TrustStore,
    td: &TrustDomain,
    cas: &[X509Authority; 2],
    sequence: u64,
) -> anyhow::Result<u64> {
    let mut bundle = Bundle::new(td.clone());
    bundle.add_x509_authority(cas[0].clone());
    if sequence.is_multiple_of(2) {
        bundle.add_x509_authority(cas[1].clone());
    }
    bundle.set_sequence(Some(sequence));
    let source = Source::Operator {
        who: "bench".into(),
    };
    match store
        .submit(td, bundle, source, time::OffsetDateTime::now_utc())
        .await?
    {
        Outcome::Accepted { revision, .. } => Ok(revision),
        other => bail!("sequence {sequence} was not accepted: {other:?}"),
    }
}

async fn wait_all(seen: &Shared, revision: u64, sequence: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + ROUND_DEADLINE;
    loop {
        {
            let guard = seen.lock().unwrap_or_else(PoisonError::into_inner);
            if guard.sds.contains_key(&revision)
                && guard.watch.contains_key(&revision)
                && guard.files.contains_key(&sequence)
            {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            let guard = seen.lock().unwrap_or_else(PoisonError::into_inner);
            bail!(
                "not every sink reached revision {revision} within {ROUND_DEADLINE:?} \
                 (sds: {}, watch: {}, files: {})",
                guard.sds.contains_key(&revision),
                guard.watch.contains_key(&revision),
                guard.files.contains_key(&sequence)
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// An SDS client as Envoy runs one: subscribe, then ACK every response.
async fn follow_sds(socket: PathBuf, seen: Shared) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(format!("unix:{}", socket.display()))?
        .connect()
        .await?;
    let mut client = SecretDiscoveryServiceClient::new(channel);
    let (requests, outbound) = mpsc::channel(4);
    let subscribe = |version: String, nonce: String| DiscoveryRequest {
        version_info: version,
        resource_names: vec![format!("spiffe://{TRUST_DOMAIN}")],
        type_url: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret".into(),
        response_nonce: nonce,
        ..Default::default()
    };
    requests
        .send(subscribe(String::new(), String::new()))
        .await?;
    let mut inbound = client
        .stream_secrets(ReceiverStream::new(outbound))
        .await?
        .into_inner();
    while let Some(response) = inbound.message().await? {
        if let Ok(revision) = response.version_info.parse::<u64>() {
            record(&seen, |s| &mut s.sds, revision);
        }
        requests
            .send(subscribe(response.version_info, response.nonce))
            .await?;
    }
    Ok(())
}

/// A watch client: long-poll for the next revision, again and again.
async fn follow_watch(socket: PathBuf, mut revision: u64, seen: Shared) -> anyhow::Result<()> {
    let client = AdminClient::new(&AdminTarget::Unix(socket), None)?;
    // The state at `revision - 1` answers at once with `revision`.
    revision = revision.saturating_sub(1);
    loop {
        let path = format!("/v1/bundles?wait={revision}&timeout=60s");
        let answer = client.call(Method::GET, &path, None).await?;
        let new = answer
            .json
            .as_ref()
            .and_then(|json| json.get("revision"))
            .and_then(serde_json::Value::as_u64)
            .context("watch answer without a revision")?;
        if new != revision {
            record(&seen, |s| &mut s.watch, new);
            revision = new;
        }
    }
}

/// A reader of the files sink: re-read `<td>.json` until `stop`.
fn follow_files(path: &Path, seen: &Shared, stop: &AtomicBool) {
    let mut last = None;
    while !stop.load(Ordering::Relaxed) {
        if let Ok(bytes) = std::fs::read(path) {
            let sequence = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|json| {
                    json.get("spiffe_sequence")
                        .and_then(serde_json::Value::as_u64)
                });
            if sequence.is_some() && sequence != last {
                last = sequence;
                if let Some(sequence) = sequence {
                    record(seen, |s| &mut s.files, sequence);
                }
            }
        }
        #[expect(
            clippy::disallowed_methods,
            reason = "a dedicated observer thread, not async code: it samples the file"
        )]
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a short sorted list"
    )]
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn millis(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn table(rounds: usize, rows: &[(&str, Vec<Duration>)]) -> String {
    let mut out = format!(
        "{rounds} changes, one at a time. Milliseconds from the start of the submit.\n\n\
         | reaches | p50 ms | p99 ms | max ms | seen |\n|---|---|---|---|---|\n"
    );
    for (name, values) in rows {
        let mut sorted = values.clone();
        sorted.sort();
        out.push_str(&format!(
            "| {name} | {} | {} | {} | {}/{rounds} |\n",
            millis(percentile(&sorted, 0.5)),
            millis(percentile(&sorted, 0.99)),
            millis(sorted.last().copied().unwrap_or_default()),
            sorted.len(),
        ));
    }
    out
}

fn write_section(path: &Path, table: &str) -> anyhow::Result<()> {
    const START: &str = "<!-- sink-latency:start -->";
    const END: &str = "<!-- sink-latency:end -->";
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (Some(start), Some(end)) = (text.find(START), text.find(END)) else {
        bail!("{} has no {START} … {END} markers", path.display());
    };
    let updated = format!("{}{START}\n{table}{}", &text[..start], &text[end..]);
    std::fs::write(path, updated)?;
    Ok(())
}
