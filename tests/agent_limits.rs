//! `fedgw agent` against a hostile "gateway" that answers 1 GiB: the real agent
//! binary stops reading at its cap (`--max-response-bytes`), says so, keeps its
//! memory small, and retries. The hostile peer is a stand-in written here: no real
//! gateway answers like this, which is the point.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fedgw_testkit::Process;
use fedgw_testkit::wait::poll_for;
use futures_util::StreamExt as _;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper_util::rt::TokioIo;

const CHUNK: usize = 1 << 20;
const GIB: u64 = 1 << 30;

/// Serve every request on `socket` with 1 GiB of `x`, declared (`Content-Length`) or
/// not; count the bytes handed to the connection.
fn hostile_gateway(socket: &Path, declare_length: bool, sent: Arc<AtomicU64>) {
    let listener = tokio::net::UnixListener::bind(socket).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let sent = Arc::clone(&sent);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request| {
                    let sent = Arc::clone(&sent);
                    let chunks = futures_util::stream::iter(0..GIB / CHUNK as u64).map(move |_| {
                        sent.fetch_add(CHUNK as u64, Ordering::SeqCst);
                        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![
                            b'x';
                            CHUNK
                        ])))
                    });
                    let mut response = hyper::Response::new(StreamBody::new(chunks));
                    response
                        .headers_mut()
                        .insert("content-type", "application/json".parse().unwrap());
                    if declare_length {
                        response
                            .headers_mut()
                            .insert("content-length", GIB.to_string().parse().unwrap());
                    }
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let _ended = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

async fn agent_refuses(declare_length: bool) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let sent = Arc::new(AtomicU64::new(0));
    hostile_gateway(&socket, declare_length, Arc::clone(&sent));
    let log = dir.path().join("agent.log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_fedgw"));
    command
        .arg("agent")
        .arg("--admin")
        .arg(format!("unix:{}", socket.display()))
        .arg("--dir")
        .arg(dir.path().join("files"))
        .args(["--max-response-bytes", "4194304"])
        .env("NO_COLOR", "1");
    let agent = Process::spawn("fedgw agent", &mut command, &log);
    let peak_kib = AtomicU64::new(0);
    let refused = poll_for(
        Duration::from_secs(30),
        Duration::from_millis(20),
        "the agent to refuse the answer",
        || async {
            peak_kib.fetch_max(rss_kib(agent.pid()), Ordering::SeqCst);
            let text = agent.log_text();
            text.contains("answered more than 4194304 bytes")
                .then_some(text)
        },
        || agent.log_text(),
    )
    .await;
    peak_kib.fetch_max(rss_kib(agent.pid()), Ordering::SeqCst);
    agent.kill();
    let peak_kib = peak_kib.load(Ordering::SeqCst);
    // The agent's own footprint (a debug binary: about 60 MiB, growing with the code)
    // plus the 4 MiB cap, with room; reading the answer whole took 0.6 to 3.2 GB.
    assert!(
        peak_kib < 160 * 1024,
        "the agent grew to {peak_kib} KiB reading a 1 GiB answer:\n{refused}"
    );
    assert!(
        sent.load(Ordering::SeqCst) < GIB / 4,
        "the agent kept reading: {} bytes sent",
        sent.load(Ordering::SeqCst)
    );
    assert!(!refused.contains("panicked"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_stops_reading_an_undeclared_1_gib_answer_at_its_cap() {
    agent_refuses(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_refuses_a_declared_1_gib_answer_before_reading_it() {
    agent_refuses(true).await;
}
