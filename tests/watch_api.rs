//! The watch API (`GET /v1/bundles?wait=…`, `GET /v1/events`) of a gateway started
//! in-process, over its real unix socket and TCP listeners, and `fedgw agent` as a
//! real process following a real `fedgw serve`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

#[path = "support/files_watch.rs"]
mod files_watch;
#[path = "support/gateway.rs"]
mod gateway;

use std::path::Path;
use std::process::Command;

use fedgw::admin::listen::BoundAddr;
use fedgw::client::admin_client::{AdminClient, AdminTarget, Body, ClientError};
use fedgw::digest::sha256_hex;
use fedgw::shutdown::Ended;
use fedgw_testkit::{DEADLINE, Process, wait_for, wait_until};
use files_watch::{InProcess, bundle_of, dev_ca, read_map, td};
use gateway::GatewayBuilder;
use reqwest::Method;
use serde_json::Value;
use spiffe_federation::{Bundle, TrustDomain};

const READ_TOKEN: &str = "watch-read-token";

async fn get(client: &AdminClient, path: &str) -> Value {
    let answer = client.call(Method::GET, path, None).await;
    answer
        .unwrap_or_else(|err| panic!("GET {path}: {err}"))
        .json
        .unwrap()
}

fn unix_client(running: &InProcess) -> AdminClient {
    AdminClient::new(&AdminTarget::Unix(running.socket()), None).unwrap()
}

/// The trust domains of a `GET /v1/bundles` body or event, in order.
fn domains(state: &Value) -> Vec<String> {
    state["bundles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["trust_domain"].as_str().unwrap().to_owned())
        .collect()
}

fn revision(state: &Value) -> u64 {
    state["revision"].as_u64().unwrap()
}

/// The SPIFFE bundle of `td` embedded in a state, parsed with the library.
fn embedded(state: &Value, td: &TrustDomain) -> Bundle {
    let item = state["bundles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["trust_domain"] == td.as_str())
        .unwrap_or_else(|| panic!("{td} missing from {state}"));
    let document = item["bundle"].to_string();
    assert_eq!(
        item["digest"],
        sha256_hex(document.as_bytes()),
        "digest of the stored document"
    );
    Bundle::parse(td, document.as_bytes()).unwrap().bundle
}

/// DIST-5, FED-11 (watch): a call waiting on the current revision answers after a
/// change with the full state; after a removal the domain is simply absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dist_5_fed_11_waiting_call_answers_the_full_state_after_each_change() {
    let running = InProcess::start("").await;
    let pki = tempfile::tempdir().unwrap();
    let client = unix_client(&running);
    let before = get(&client, "/v1/bundles").await;
    assert!(domains(&before).is_empty());

    let waiting = {
        let client = client.clone();
        let path = format!("/v1/bundles?wait={}&timeout=50s", revision(&before));
        tokio::spawn(async move { get(&client, &path).await })
    };
    let (a, b) = (td("a.example"), td("b.example"));
    let a_bundle = bundle_of(&a, &[dev_ca(pki.path(), &a)], 5);
    running.put(&a_bundle).await;
    let changed = waiting.await.unwrap();
    assert!(revision(&changed) > revision(&before));
    assert_eq!(domains(&changed), ["a.example"]);
    assert!(embedded(&changed, &a).same_authorities(&a_bundle));
    assert_eq!(embedded(&changed, &a).sequence(), Some(5));

    running
        .put(&bundle_of(&b, &[dev_ca(pki.path(), &b)], 1))
        .await;
    let both = get(&client, &format!("/v1/bundles?wait={}", revision(&changed))).await;
    assert_eq!(domains(&both), ["a.example", "b.example"]);
    // Each domain keeps its own bundle: a's CA is not in b's entry.
    assert!(embedded(&both, &b).x509_authorities() != a_bundle.x509_authorities());

    let waiting = {
        let client = client.clone();
        let path = format!("/v1/bundles?wait={}&timeout=50s", revision(&both));
        tokio::spawn(async move { get(&client, &path).await })
    };
    running.remove(&a).await;
    let removed = waiting.await.unwrap();
    assert_eq!(domains(&removed), ["b.example"]);
    assert_eq!(running.stop().await, Ended::Clean);
}

/// DIST-5: a wait that times out answers the unchanged state (same revision); a wait
/// on a revision that is not the current one answers at once (a 300 s wait would
/// outlast the client's 60 s timeout); bad queries are refused; without `wait` the
/// body has the same shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dist_5_wait_timeout_and_query_rules() {
    let running = InProcess::start("").await;
    let pki = tempfile::tempdir().unwrap();
    let a = td("a.example");
    running
        .put(&bundle_of(&a, &[dev_ca(pki.path(), &a)], 1))
        .await;
    let client = unix_client(&running);
    let now = get(&client, "/v1/bundles").await;
    let current = revision(&now);
    let item = &now["bundles"][0];
    for field in [
        "trust_domain",
        "role",
        "sequence",
        "digest",
        "source",
        "accepted_at",
        "authorities",
        "revision",
        "warnings",
        "bundle",
    ] {
        assert!(item.get(field).is_some(), "{field} missing from {item}");
    }

    let timed_out = get(&client, &format!("/v1/bundles?wait={current}&timeout=1s")).await;
    assert_eq!(timed_out, now);
    let other = get(
        &client,
        &format!("/v1/bundles?wait={}&timeout=300s", current + 100),
    )
    .await;
    assert_eq!(revision(&other), current);

    for bad in [
        format!("/v1/bundles?wait={current}&timeout=10m"),
        format!("/v1/bundles?wait={current}&timeout=0"),
        "/v1/bundles?timeout=5s".to_owned(),
        "/v1/bundles?wait=soon".to_owned(),
    ] {
        let err = client.call(Method::GET, &bad, None).await.unwrap_err();
        assert!(
            matches!(err, ClientError::Api { status: 400, ref code, .. } if code == "invalid_argument"),
            "{bad}: {err}"
        );
    }
    assert_eq!(running.stop().await, Ended::Clean);
}

/// A Server-Sent Events stream read with reqwest, one event at a time.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

/// One SSE event: its `id`, `event` and `data` (parsed as JSON).
#[derive(Debug)]
struct SseEvent {
    id: u64,
    event: String,
    data: Value,
}

impl Events {
    async fn open(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Self {
        let mut request = client.get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event; keep-alive comments are skipped.
    async fn next(&mut self) -> SseEvent {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                        .map(|value| value.trim_start().to_owned())
                };
                let Some(data) = field("data") else {
                    continue; // a comment
                };
                return SseEvent {
                    id: field("id").unwrap().parse().unwrap(),
                    event: field("event").unwrap(),
                    data: serde_json::from_str(&data).unwrap(),
                };
            }
            let chunk = tokio::time::timeout(DEADLINE, self.response.chunk())
                .await
                .expect("no event within the deadline")
                .unwrap()
                .expect("the stream ended");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// Whether the server ends the stream (within the deadline).
    async fn ends(&mut self) -> bool {
        loop {
            match tokio::time::timeout(DEADLINE, self.response.chunk()).await {
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None) | Err(_)) => return true,
                Err(_) => return false,
            }
        }
    }
}

/// DIST-5, FED-11 (watch): the event stream sends the current state at once, then one
/// event per change, each the full state with its revision as id; a removed domain is
/// absent from the next event. `Last-Event-ID` equal to the current revision skips
/// the initial state; one behind gets it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dist_5_fed_11_event_stream_sends_state_then_each_change() {
    let running = InProcess::start("").await;
    let pki = tempfile::tempdir().unwrap();
    let (a, b, c) = (td("a.example"), td("b.example"), td("c.example"));
    running
        .put(&bundle_of(&a, &[dev_ca(pki.path(), &a)], 1))
        .await;
    let http = reqwest::Client::builder()
        .unix_socket(running.socket())
        .build()
        .unwrap();
    let url = "http://fedgw.local/v1/events";
    let mut events = Events::open(&http, url, &[]).await;
    let first = events.next().await;
    assert_eq!(
        (first.event.as_str(), first.id),
        ("bundles", running.revision())
    );
    assert_eq!(revision(&first.data), first.id);
    assert_eq!(domains(&first.data), ["a.example"]);

    let b_bundle = bundle_of(&b, &[dev_ca(pki.path(), &b)], 3);
    running.put(&b_bundle).await;
    let second = events.next().await;
    assert!(second.id > first.id);
    assert_eq!(domains(&second.data), ["a.example", "b.example"]);
    assert!(embedded(&second.data, &b).same_authorities(&b_bundle));

    running.remove(&a).await;
    let third = events.next().await;
    assert_eq!(domains(&third.data), ["b.example"]);

    // Caught up: no initial event; the first one is the next change.
    let current = running.revision().to_string();
    let mut resumed = Events::open(&http, url, &[("last-event-id", &current)]).await;
    // Behind: the current state at once.
    let mut behind = Events::open(&http, url, &[("last-event-id", "1")]).await;
    assert_eq!(behind.next().await.id, running.revision());
    running
        .put(&bundle_of(&c, &[dev_ca(pki.path(), &c)], 1))
        .await;
    let next = resumed.next().await;
    assert_eq!(next.id, running.revision());
    assert_eq!(domains(&next.data), ["b.example", "c.example"]);
    assert_eq!(running.stop().await, Ended::Clean);
}

/// Watch over TCP with a read token; unauthenticated callers are refused; an open
/// event stream and a pending long poll end when the gateway shuts down, which then
/// ends cleanly within its grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_over_tcp_with_a_read_token_ends_at_shutdown() {
    let running = InProcess::start(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[admin.tokens]]\nname = \"watcher\"\nsha256 = \"{}\"\nscope = \"read\"\n",
        sha256_hex(READ_TOKEN.as_bytes())
    ))
    .await;
    let Some(BoundAddr::Tcp(addr)) = running.gateway.admin_addr.clone() else {
        panic!("not on TCP: {:?}", running.gateway.admin_addr);
    };
    let base = format!("http://{addr}");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let refused = http.get(format!("{base}/v1/events")).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let auth = format!("Bearer {READ_TOKEN}");
    let mut events = Events::open(
        &http,
        &format!("{base}/v1/events"),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(events.next().await.id, running.revision());

    let target = AdminTarget::Url(url::Url::parse(&base).unwrap());
    let client = AdminClient::new(&target, Some(READ_TOKEN.to_owned())).unwrap();
    let current = running.revision();
    let waiting = {
        let client = client.clone();
        let path = format!("/v1/bundles?wait={current}&timeout=50s");
        tokio::spawn(async move { client.call(Method::GET, &path, None).await })
    };
    // The long poll is in flight once the server counts it beside the event stream
    // (`fedgw_watch_clients` 2); only then is the gateway stopped, so that the poll is
    // answered by the shutdown, with the state it waited on.
    wait_until(DEADLINE, "the long poll counted as a watch client", || {
        let client = client.clone();
        async move {
            client
                .call(Method::GET, "/metrics", None)
                .await
                .is_ok_and(|answer| {
                    String::from_utf8_lossy(&answer.body)
                        .lines()
                        .any(|line| line == "fedgw_watch_clients 2")
                })
        }
    })
    .await;
    assert_eq!(running.stop().await, Ended::Clean);
    assert!(
        events.ends().await,
        "the event stream did not end at shutdown"
    );
    let answer = waiting
        .await
        .unwrap()
        .expect("the pending long poll is answered at shutdown");
    assert_eq!(revision(&answer.json.unwrap()), current);
}

/// A `fedgw agent` process: killed on drop, its log printed when a test fails.
struct Agent {
    process: Process,
}

impl Agent {
    fn start(admin: &Path, dir: &Path, hook_log: &Path, log: &Path) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fedgw"));
        command
            .arg("agent")
            .arg("--admin")
            .arg(format!("unix:{}", admin.display()))
            .arg("--dir")
            .arg(dir)
            .args([
                "--log",
                "info,fedgw=debug",
                "--on-change",
                "sh",
                "-c",
                "echo x >> \"$0\"",
            ])
            .arg(hook_log)
            .env("NO_COLOR", "1");
        Self {
            process: Process::spawn("fedgw agent", &mut command, log),
        }
    }
}

/// DIST-1, DIST-4, POLL-4 (files, end to end): a real `fedgw agent` follows a real
/// `fedgw serve` over its admin socket and keeps the gateway's bundles as files: the
/// local bundle at once, a bundle set through the admin API, its deletion (files
/// removed) after the gateway was killed and restarted, the hook after changes; it
/// exits cleanly on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dist_1_dist_4_poll_4_agent_process_mirrors_a_gateway_and_survives_its_restart() {
    let root = tempfile::tempdir().unwrap();
    let mut gw = GatewayBuilder::new(root.path(), "home.test")
        .web()
        .start()
        .await;
    let out = root.path().join("agent-out");
    let hook_log = root.path().join("hook.log");
    let agent = Agent::start(
        &gw.data_dir.join("admin.sock"),
        &out,
        &hook_log,
        &root.path().join("agent.log"),
    );
    let home = gw.trust_domain.clone();
    wait_until(
        DEADLINE,
        "the local bundle in the agent's directory",
        || {
            let out = out.clone();
            let home = home.clone();
            async move {
                out.join("home.test.pem").exists()
                    && read_map(&out).is_some_and(|m| m.get(&home).is_some())
            }
        },
    )
    .await;

    let away = td("away.test");
    let away_bundle = bundle_of(&away, &[dev_ca(root.path(), &away)], 11);
    let put = gw
        .admin()
        .call(
            Method::PUT,
            "/v1/bundles/away.test",
            Some(Body::Raw {
                content_type: "application/json",
                bytes: away_bundle.to_json(),
            }),
        )
        .await;
    put.unwrap();
    let json = wait_for(DEADLINE, "away.test.json written by the agent", || {
        let path = out.join("away.test.json");
        async move { std::fs::read(path).ok() }
    })
    .await;
    let written = Bundle::parse(&away, &json).unwrap().bundle;
    assert_eq!(written.sequence(), Some(11));
    assert!(written.same_authorities(&away_bundle));
    wait_until(DEADLINE, "the agent's hook ran", || {
        let hook_log = hook_log.clone();
        async move { hook_log.exists() }
    })
    .await;

    gw.restart().await;
    let deleted = wait_for(DEADLINE, "DELETE after the restart", || {
        let admin = gw.admin();
        async move {
            admin
                .call(Method::DELETE, "/v1/bundles/away.test", None)
                .await
                .ok()
        }
    })
    .await;
    assert_eq!(deleted.status, 204);
    wait_until(DEADLINE, "away.test's files removed by the agent", || {
        let out = out.clone();
        async move {
            !out.join("away.test.pem").exists()
                && !out.join("away.test.json").exists()
                && read_map(&out).is_some_and(|m| m.get(&td("away.test")).is_none())
        }
    })
    .await;
    assert!(out.join("home.test.pem").exists());

    let pid = agent.process.pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = wait_for(DEADLINE, "the agent to exit after SIGTERM", || {
        let exited = agent.process.exit_status();
        async move { exited }
    })
    .await;
    assert!(status.success(), "agent exit status {status}");
}
