//! The admin API end to end: the real gateway started in process through its app
//! wiring (`fedgw::app::start`) on a temporary `data_dir`, its real admin listener
//! (unix socket, or TCP with tokens), its real pollers, and the same client the CLI
//! uses. A wiring mistake in the gateway (the admin state it builds, the access rule
//! of its listener, the registry, the refresh path to the pollers) fails these tests.
//!
//! The relationships are polled from loopback endpoints of the test kit: by default a
//! `StallServer`, which accepts and never answers, so no poll ends while a test runs and
//! a fetch status is only what the test records through the gateway's own trust store;
//! a test of "refresh now" serves `old.example` from a `BundleServer` instead.
//!
//! Three cases need a state the real gateway never has, and keep a hand-built
//! `AdminState` (at the end of the file, each saying why): `/readyz` before the gateway
//! is ready, a refresh with no pollers, relationship changes without a registry.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use fedgw::admin::auth::Access;
use fedgw::admin::listen::{self, BoundAddr, ListenError};
use fedgw::admin::{self, AdminState, LocalDomainInfo, RelationshipsView};
use fedgw::app::Config;
use fedgw::app::Running;
use fedgw::client::admin_client::{AdminClient, AdminTarget, Answer, Body, ClientError};
use fedgw::client::cli;
use fedgw::config::{AdminListen, DocumentFormat};
use fedgw::digest::sha256_hex;
use fedgw::net::unix::SocketError;
use fedgw::telemetry::Metrics;
use fedgw::trust::db::AuditAction;
use fedgw::trust::policy::{PolicySettings, Source};
use fedgw::trust::store::TrustStore;
use fedgw_testkit::{
    Answer as Served, BundleServer, DEADLINE, EcKey, StallServer, TestCa, wait_until,
};
use reqwest::Method;
use serde_json::{Value, json};
use spiffe_federation::bundle::JwtAuthority;
use spiffe_federation::{Bundle, TrustDomain};
use tempfile::TempDir;
use time::OffsetDateTime;
use tokio::sync::watch;
use url::Url;

const WRITE_TOKEN: &str = "write-secret";
const READ_TOKEN: &str = "read-secret";

/// The local domains and relationships of every gateway here: two local domains and
/// four relationships covering both profiles; `endpoint(name)` gives the `url` line
/// (and any other line about the endpoint) of each relationship.
fn domains(endpoint: impl Fn(&str) -> String) -> String {
    format!(
        r#"
[[local]]
trust_domain = "home.example"
source = {{ admin = true }}

[[local]]
trust_domain = "empty.example"
source = {{ admin = true }}

[[federation]]
trust_domain = "fresh.example"
{fresh}
profile = "https_web"

[[federation]]
trust_domain = "broken.example"
{broken}
profile = "https_web"
follow_redirects = false

[[federation]]
trust_domain = "old.example"
{old}
profile = "https_web"

[[federation]]
trust_domain = "spiffe.example"
{spiffe}
profile = "https_spiffe"
endpoint_spiffe_id = "spiffe://anchor.example/bundle-endpoint"
"#,
        fresh = endpoint("fresh"),
        broken = endpoint("broken"),
        old = endpoint("old"),
        spiffe = endpoint("spiffe"),
    )
}

struct Options {
    tcp: bool,
    max_authorities: Option<usize>,
    max_document_bytes: usize,
    /// Serve `old.example` from a loopback endpoint that answers (a new sequence on
    /// every request), instead of one that never does.
    serve_old: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            tcp: false,
            max_authorities: None,
            max_document_bytes: 64 * 1024,
            serve_old: false,
        }
    }
}

/// A real gateway in process and a client of its admin API.
struct Harness {
    _dir: TempDir,
    gateway: Running,
    store: TrustStore,
    metrics: Metrics,
    client: AdminClient,
    addr: BoundAddr,
    /// Where the relationships are polled and never answered.
    stall: StallServer,
    /// `old.example`'s endpoint, with [`Options::serve_old`].
    old: Option<BundleServer>,
}

impl Harness {
    async fn start(options: Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stall = StallServer::start().await;
        let old_ca_file = dir.path().join("old-web-ca.pem");
        let old = if options.serve_old {
            let web_ca = TestCa::web("old.example");
            web_ca.write_cert(&old_ca_file);
            // A new CA and sequence on every request: each fetch is accepted.
            let document = |n: u64| bytes::Bytes::from(with_ca("old.example", n).into_bytes());
            Some(
                BundleServer::start(&web_ca, Served::Counting(std::sync::Arc::new(document))).await,
            )
        } else {
            None
        };
        let relationships = domains(|name| match (&old, name) {
            (Some(server), "old") => format!(
                "url = \"{}\"\nextra_ca_roots = {:?}",
                server.url(),
                old_ca_file.display().to_string()
            ),
            _ => format!("url = \"{}\"", stall.url(&format!("/{name}"))),
        });
        let listen = if options.tcp {
            let mut tcp = "[admin]\nlisten = \"127.0.0.1:0\"\n".to_owned();
            for (name, token, scope) in [
                ("ops", WRITE_TOKEN, "write"),
                ("viewer", READ_TOKEN, "read"),
            ] {
                tcp.push_str(&format!(
                    "[[admin.tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\nscope = \"{scope}\"\n",
                    sha256_hex(token.as_bytes())
                ));
            }
            tcp
        } else {
            let socket = dir.path().join("run/admin.sock");
            format!(
                "[admin]\nlisten = {:?}\n",
                format!("unix:{}", socket.display())
            )
        };
        let max_authorities = options
            .max_authorities
            .map(|max| format!("max_authorities = {max}\n"))
            .unwrap_or_default();
        // No poll may end while a test runs: a stalled fetch waits this long.
        let text = format!(
            "data_dir = {data:?}\n\n[policy]\nmax_document_bytes = {max_document_bytes}\n{max_authorities}\n[polling]\nfetch_timeout = \"3600s\"\n\n{listen}{relationships}",
            data = dir.path().join("data").display().to_string(),
            max_document_bytes = options.max_document_bytes,
        );
        let config = Config::from_toml(&text).unwrap_or_else(|err| panic!("{err}\n{text}"));
        let gateway = fedgw::app::start(&config).await.unwrap();
        let addr = gateway.admin_addr.clone().expect("an admin listener");
        let store = gateway.trust_store.clone();
        // Every poller has made its first attempt before the test begins: the stalled
        // fetches are in flight, and spiffe.example has recorded that it awaits a
        // bootstrap bundle (nothing is fetched without one).
        let stalled = if options.serve_old { 2 } else { 3 };
        wait_until(DEADLINE, "every poller's first attempt", || async {
            let awaiting = store
                .statuses()
                .get(&td("spiffe.example"))
                .is_some_and(|status| status.consecutive_failures == 1);
            let served = old.as_ref().is_none_or(|old| {
                old.requests() == 1 && store.snapshot().get(&td("old.example")).is_some()
            });
            awaiting && served && stall.accepted() >= stalled
        })
        .await;
        let metrics = gateway.metrics.clone();
        let client = client_for(&addr, options.tcp.then(|| WRITE_TOKEN.to_owned()));
        Self {
            _dir: dir,
            gateway,
            store,
            metrics,
            client,
            addr,
            stall,
            old,
        }
    }

    async fn unix() -> Self {
        Self::start(Options::default()).await
    }

    fn client_with(&self, token: Option<&str>) -> AdminClient {
        client_for(&self.addr, token.map(str::to_owned))
    }

    async fn get(&self, path: &str) -> Result<Answer, ClientError> {
        self.client.call(Method::GET, path, None).await
    }

    async fn put_json(&self, td: &str, document: &str) -> Result<Answer, ClientError> {
        put(&self.client, td, "application/json", document.as_bytes()).await
    }

    async fn stop(self) {
        let ended = self
            .gateway
            .shutdown(std::time::Duration::from_secs(10))
            .await;
        assert_eq!(ended, fedgw::shutdown::Ended::Clean);
    }
}

fn client_for(addr: &BoundAddr, token: Option<String>) -> AdminClient {
    let target = match addr {
        BoundAddr::Unix(path) => AdminTarget::Unix(path.clone()),
        BoundAddr::Tcp(addr) => AdminTarget::Url(Url::parse(&format!("http://{addr}/")).unwrap()),
    };
    AdminClient::new(&target, token).unwrap()
}

async fn put(
    client: &AdminClient,
    td: &str,
    content_type: &'static str,
    bytes: &[u8],
) -> Result<Answer, ClientError> {
    client
        .call(
            Method::PUT,
            &format!("/v1/bundles/{td}"),
            Some(Body::Raw {
                content_type,
                bytes: bytes.to_vec(),
            }),
        )
        .await
}

fn td(name: &str) -> TrustDomain {
    name.parse().unwrap()
}

fn json_of(answer: &Answer) -> &Value {
    answer.json.as_ref().expect("a JSON body")
}

/// The API error's status and code.
fn api_error(result: Result<Answer, ClientError>) -> (u16, String, String) {
    match result {
        Err(ClientError::Api {
            status,
            code,
            message,
        }) => (status, code, message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// A self-signed SPIFFE CA for `td` as PEM, valid from 2020 until the start of
/// `expiry_year`.
fn ca_pem(td: &str, expiry_year: i32) -> String {
    let new_year = |year| {
        time::Date::from_calendar_date(year, time::Month::January, 1)
            .unwrap()
            .midnight()
            .assume_utc()
    };
    TestCa::spiffe_valid(td, new_year(2020), new_year(expiry_year)).cert_pem
}

fn sequenced(sequence: u64) -> String {
    format!(r#"{{"keys":[],"spiffe_sequence":{sequence}}}"#)
}

/// A document of `name` with one CA (expiring in 2031) and `sequence`: a bundle that
/// is not a revocation.
fn with_ca(name: &str, sequence: u64) -> String {
    let mut bundle = Bundle::from_pem(&td(name), ca_pem(name, 2031).as_bytes()).unwrap();
    bundle.set_sequence(Some(sequence));
    String::from_utf8(bundle.to_json()).unwrap()
}

fn fetched() -> Source {
    let url = Url::parse("https://fresh.example/bundle").unwrap();
    Source::Fetched {
        url: url.clone(),
        final_url: url,
        peer: "127.0.0.1:443".into(),
    }
}

async fn submit_fetched(store: &TrustStore, name: &str, document: &str, at: OffsetDateTime) {
    let bundle = Bundle::parse(&td(name), document.as_bytes())
        .unwrap()
        .bundle;
    store
        .submit(&td(name), bundle, fetched(), at)
        .await
        .unwrap();
}

fn domain<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["domains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["trust_domain"] == name)
        .unwrap_or_else(|| panic!("{name} not in {status}"))
}

#[tokio::test]
async fn sto_4_operator_put_then_get_round_trips() {
    let h = Harness::unix().await;
    let document = r#"{"keys":[],"spiffe_sequence":3,"spiffe_refresh_hint":300}"#;

    let answer = h.put_json("fresh.example", document).await.unwrap();
    let body = json_of(&answer);
    assert_eq!(body["outcome"], "accepted");
    assert_eq!(body["revision"], 1);
    assert!(
        body["warnings"][0]
            .as_str()
            .unwrap()
            .contains("no authorities"),
        "{body}"
    );
    let entry = h
        .store
        .snapshot()
        .get(&td("fresh.example"))
        .cloned()
        .unwrap();
    assert_eq!(
        entry.source,
        Source::Operator {
            who: "unix-socket".into()
        }
    );

    let shown = h.get("/v1/bundles/fresh.example").await.unwrap();
    assert_eq!(shown.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        shown.body,
        entry.json.to_vec(),
        "the stored bytes, verbatim"
    );
    assert_eq!(json_of(&shown)["spiffe_sequence"], 3);

    // Same document again: nothing written.
    let again = h.put_json("fresh.example", document).await.unwrap();
    assert_eq!(json_of(&again)["outcome"], "unchanged");
    assert_eq!(json_of(&again)["revision"], 1);

    // PEM in, PEM out; the JSON form carries the same certificate.
    let pem = ca_pem("home.example", 2031);
    let answer = put(
        &h.client,
        "home.example",
        "application/x-pem-file",
        pem.as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(json_of(&answer)["outcome"], "accepted");
    let shown = h.get("/v1/bundles/home.example?format=pem").await.unwrap();
    assert_eq!(
        shown.content_type.as_deref(),
        Some("application/x-pem-file")
    );
    let back = Bundle::from_pem(&td("home.example"), &shown.body).unwrap();
    assert_eq!(
        back,
        Bundle::from_pem(&td("home.example"), pem.as_bytes()).unwrap()
    );
    let as_json = h
        .get("/v1/bundles/home.example?format=spiffe")
        .await
        .unwrap();
    let parsed = Bundle::parse(&td("home.example"), &as_json.body).unwrap();
    assert_eq!(parsed.bundle.x509_authorities(), back.x509_authorities());

    let (status, code, message) = api_error(h.get("/v1/bundles/home.example?format=der").await);
    assert_eq!((status, code.as_str()), (400, "invalid_argument"));
    assert!(message.contains("der"), "{message}");
    let (status, code, _) = api_error(h.get("/v1/bundles/nothing.example").await);
    assert_eq!((status, code.as_str()), (404, "not_found"));
    h.stop().await;
}

#[tokio::test]
async fn sto_4_put_with_lower_sequence_accepted_as_operator() {
    let h = Harness::unix().await;
    submit_fetched(
        &h.store,
        "fresh.example",
        &sequenced(5),
        OffsetDateTime::now_utc(),
    )
    .await;

    let answer = h.put_json("fresh.example", &sequenced(2)).await.unwrap();
    assert_eq!(json_of(&answer)["outcome"], "accepted");
    let entry = h
        .store
        .snapshot()
        .get(&td("fresh.example"))
        .cloned()
        .unwrap();
    assert_eq!(entry.sequence, Some(2));
    assert!(entry.source.is_operator());

    // L-5: the override reset the baseline, so the next fetch replaces it even with a
    // lower sequence than the one fetched before the override.
    submit_fetched(
        &h.store,
        "fresh.example",
        &sequenced(1),
        OffsetDateTime::now_utc(),
    )
    .await;
    assert_eq!(
        h.store
            .snapshot()
            .get(&td("fresh.example"))
            .unwrap()
            .sequence,
        Some(1)
    );
    h.stop().await;
}

#[tokio::test]
async fn put_rejects_bundle_of_broken_document_with_named_fault() {
    let h = Harness::start(Options {
        max_document_bytes: 1024,
        ..Options::default()
    })
    .await;
    h.put_json("fresh.example", &sequenced(1)).await.unwrap();
    let before = h.store.snapshot();

    let (status, code, message) = api_error(h.put_json("fresh.example", r#"{"keys":[}"#).await);
    assert_eq!((status, code.as_str()), (400, "invalid_bundle"));
    assert!(message.contains("line 1, column 10"), "{message}");

    let (_, code, message) = api_error(h.put_json("fresh.example", r#"{"KEYS":[]}"#).await);
    assert_eq!(code, "invalid_bundle");
    assert!(
        message.contains("\"keys\"") && message.contains("KEYS"),
        "{message}"
    );

    let (_, code, message) = api_error(h.put_json("fresh.example", r#"{"keys":[]} x"#).await);
    assert_eq!(code, "invalid_bundle");
    assert!(message.contains("after the JSON document"), "{message}");

    let pem = b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n";
    let (_, code, message) =
        api_error(put(&h.client, "fresh.example", "application/x-pem-file", pem).await);
    assert_eq!(code, "invalid_bundle");
    assert!(message.contains("PEM"), "{message}");

    let big = format!(r#"{{"keys":[],"pad":"{}"}}"#, "x".repeat(2048));
    let (status, code, _) = api_error(h.put_json("fresh.example", &big).await);
    assert_eq!((status, code.as_str()), (413, "payload_too_large"));

    let (status, code, _) =
        api_error(put(&h.client, "fresh.example", "text/plain", b"{\"keys\":[]}").await);
    assert_eq!((status, code.as_str()), (415, "unsupported_media_type"));

    // The trust domain comes from the path and is never normalised (L-2).
    let (status, code, message) = api_error(h.put_json("Fresh.example", &sequenced(9)).await);
    assert_eq!((status, code.as_str()), (400, "invalid_argument"));
    assert!(message.contains("Fresh.example"), "{message}");

    assert_eq!(
        h.store.snapshot().revision,
        before.revision,
        "nothing stored"
    );
    h.stop().await;
}

#[tokio::test]
async fn put_over_the_authority_limit_is_refused_with_its_policy_code() {
    let h = Harness::start(Options {
        max_authorities: Some(1),
        ..Options::default()
    })
    .await;
    let two = ca_pem("fresh.example", 2030) + &ca_pem("fresh.example", 2031);
    let (status, code, message) = api_error(
        put(
            &h.client,
            "fresh.example",
            "application/x-pem-file",
            two.as_bytes(),
        )
        .await,
    );
    assert_eq!((status, code.as_str()), (409, "too_many_authorities"));
    assert!(message.contains("limit is 1"), "{message}");
    assert!(h.store.snapshot().get(&td("fresh.example")).is_none());
    h.stop().await;
}

#[tokio::test]
async fn poll_4_delete_removes_bundle_everywhere() {
    let h = Harness::unix().await;
    h.put_json("fresh.example", &sequenced(1)).await.unwrap();
    h.put_json("old.example", &sequenced(1)).await.unwrap();
    let mut feed = h.store.subscribe();
    feed.borrow_and_update();

    let answer = h
        .client
        .call(Method::DELETE, "/v1/bundles/fresh.example", None)
        .await
        .unwrap();
    assert_eq!(answer.status, 204);
    assert!(feed.has_changed().unwrap(), "the removal was announced");
    assert!(h.store.snapshot().get(&td("fresh.example")).is_none());
    assert!(h.store.snapshot().get(&td("old.example")).is_some());

    let (status, code, _) = api_error(h.get("/v1/bundles/fresh.example").await);
    assert_eq!((status, code.as_str()), (404, "not_found"));
    let list = h.get("/v1/bundles").await.unwrap();
    let names: Vec<&str> = json_of(&list)["bundles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["trust_domain"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["old.example"]);
    let status = h.get("/v1/status").await.unwrap();
    let fresh = domain(json_of(&status), "fresh.example");
    assert_eq!(
        fresh["state"], "pending",
        "the relationship is still configured"
    );
    assert!(fresh["sequence"].is_null());

    let (status, code, _) = api_error(
        h.client
            .call(Method::DELETE, "/v1/bundles/fresh.example", None)
            .await,
    );
    assert_eq!((status, code.as_str()), (404, "not_found"));
    h.stop().await;
}

#[tokio::test]
async fn history_lists_newest_first_and_rollback_restores() {
    let h = Harness::unix().await;
    let mut revisions = Vec::new();
    for sequence in 1..=3 {
        let answer = h
            .put_json("fresh.example", &sequenced(sequence))
            .await
            .unwrap();
        revisions.push(json_of(&answer)["revision"].as_u64().unwrap());
    }

    let history = h.get("/v1/bundles/fresh.example/history").await.unwrap();
    let entries = json_of(&history)["history"].as_array().unwrap().clone();
    let listed: Vec<u64> = entries
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    let mut newest_first = revisions.clone();
    newest_first.reverse();
    assert_eq!(listed, newest_first);
    assert_eq!(entries[0]["sequence"], 3);
    assert_eq!(entries[0]["source"], "operator unix-socket");
    assert!(entries[0]["accepted_at"].as_str().unwrap().ends_with('Z'));

    let rollback = |body: Value| {
        h.client.call(
            Method::POST,
            "/v1/bundles/fresh.example/rollback",
            Some(Body::Json(body)),
        )
    };
    let answer = rollback(json!({"revision": revisions[0]})).await.unwrap();
    assert_eq!(json_of(&answer)["outcome"], "accepted");
    let shown = h.get("/v1/bundles/fresh.example").await.unwrap();
    assert_eq!(json_of(&shown)["spiffe_sequence"], 1);
    let history = h.get("/v1/bundles/fresh.example/history").await.unwrap();
    assert_eq!(json_of(&history)["history"].as_array().unwrap().len(), 4);

    let (status, code, _) = api_error(rollback(json!({"revision": 999})).await);
    assert_eq!((status, code.as_str()), (404, "not_found"));
    let (status, code, _) = api_error(rollback(json!({"rev": 1})).await);
    assert_eq!((status, code.as_str()), (400, "invalid_argument"));
    let (status, _, _) = api_error(h.get("/v1/bundles/nothing.example/history").await);
    assert_eq!(status, 404);
    h.stop().await;
}

#[tokio::test]
async fn status_reports_roles_and_states() {
    let h = Harness::unix().await;
    let now = OffsetDateTime::now_utc();
    let pem = ca_pem("home.example", 2031);
    put(
        &h.client,
        "home.example",
        "application/x-pem-file",
        pem.as_bytes(),
    )
    .await
    .unwrap();
    submit_fetched(&h.store, "fresh.example", &with_ca("fresh.example", 7), now).await;
    h.store
        .record_fetch_success(&td("fresh.example"), now, None)
        .await
        .unwrap();
    h.store
        .record_fetch_failure(
            &td("broken.example"),
            now,
            "connect".into(),
            "connection refused".into(),
            None,
        )
        .await
        .unwrap();
    // Default refresh interval is 300 s; three hours without a fresh bundle is stale.
    let long_ago = now - time::Duration::hours(3);
    submit_fetched(
        &h.store,
        "old.example",
        &with_ca("old.example", 1),
        long_ago,
    )
    .await;
    h.store
        .record_fetch_success(&td("old.example"), long_ago, None)
        .await
        .unwrap();
    h.put_json("pushed.example", &sequenced(1)).await.unwrap();

    let answer = h.get("/v1/status").await.unwrap();
    let status = json_of(&answer);
    assert_eq!(status["revision"], h.store.snapshot().revision);
    let state = |name: &str| {
        let d = domain(status, name);
        (
            d["role"].as_str().unwrap().to_owned(),
            d["state"].as_str().unwrap().to_owned(),
        )
    };
    let pair = |role: &str, state: &str| (role.to_owned(), state.to_owned());
    assert_eq!(state("home.example"), pair("local", "serving"));
    assert_eq!(state("empty.example"), pair("local", "missing"));
    assert_eq!(state("fresh.example"), pair("foreign", "healthy"));
    assert_eq!(state("broken.example"), pair("foreign", "failing"));
    assert_eq!(state("old.example"), pair("foreign", "stale"));
    assert_eq!(
        state("spiffe.example"),
        pair("foreign", "awaiting_bootstrap")
    );
    assert_eq!(state("pushed.example"), pair("foreign", "unmanaged"));

    let home = domain(status, "home.example");
    assert_eq!(home["soonest_expiry"], "2031-01-01T00:00:00Z");
    assert!(home["age_seconds"].as_i64().unwrap() >= 0);
    let old = domain(status, "old.example");
    assert!(old["age_seconds"].as_i64().unwrap() >= 3 * 3600);
    assert_eq!(old["sequence"], 1);
    assert_eq!(old["soonest_expiry"], "2031-01-01T00:00:00Z");
    let broken = domain(status, "broken.example");
    assert_eq!(broken["consecutive_failures"], 1);
    assert_eq!(broken["last_error"]["message"], "connection refused");
    assert_eq!(broken["last_error"]["code"], "connect");
    assert!(broken["accepted_at"].is_null());

    // Storing the endpoint's trust domain bundle ends the wait for a bootstrap. The
    // poller recorded its attempt without one (`awaiting_bootstrap`) as a failure at
    // start, and the fetch it starts now never ends here (the endpoint never answers),
    // so the relationship shows that failure, no longer the wait.
    h.put_json("anchor.example", &sequenced(1)).await.unwrap();
    let answer = h.get("/v1/status").await.unwrap();
    let spiffe = domain(json_of(&answer), "spiffe.example");
    assert_eq!(spiffe["state"], "failing", "{spiffe}");
    assert_eq!(spiffe["consecutive_failures"], 1, "{spiffe}");
    assert_eq!(
        spiffe["last_error"]["code"], "awaiting_bootstrap",
        "{spiffe}"
    );
    h.stop().await;
}

#[tokio::test]
async fn sec_3_tcp_requires_token_and_read_token_cannot_write() {
    let h = Harness::start(Options {
        tcp: true,
        ..Options::default()
    })
    .await;
    let anonymous = h.client_with(None);
    let wrong = h.client_with(Some("guess"));
    let reader = h.client_with(Some(READ_TOKEN));

    for client in [&anonymous, &wrong] {
        for path in [
            "/v1/status",
            "/v1/bundles",
            "/metrics",
            "/v1/federation-relationships",
        ] {
            let (status, code, _) = api_error(client.call(Method::GET, path, None).await);
            assert_eq!((status, code.as_str()), (401, "unauthenticated"), "{path}");
        }
        let (status, _, _) =
            api_error(put(client, "fresh.example", "application/json", b"{}").await);
        assert_eq!(status, 401);
    }
    let probe = anonymous.call(Method::GET, "/healthz", None).await.unwrap();
    assert_eq!(probe.status, 200, "probes need no token");

    reader.call(Method::GET, "/v1/status", None).await.unwrap();
    let document = sequenced(1);
    let (status, code, _) = api_error(
        put(
            &reader,
            "fresh.example",
            "application/json",
            document.as_bytes(),
        )
        .await,
    );
    assert_eq!((status, code.as_str()), (403, "permission_denied"));
    let (status, _, _) = api_error(
        reader
            .call(Method::DELETE, "/v1/bundles/fresh.example", None)
            .await,
    );
    assert_eq!(status, 403);
    let (status, _, _) = api_error(
        reader
            .call(
                Method::POST,
                "/v1/federation-relationships/fresh.example/refresh",
                None,
            )
            .await,
    );
    assert_eq!(status, 403);
    assert!(h.store.snapshot().domains.is_empty(), "nothing written");

    let answer = h.put_json("fresh.example", &document).await.unwrap();
    assert_eq!(json_of(&answer)["outcome"], "accepted");
    assert_eq!(
        h.store.snapshot().get(&td("fresh.example")).unwrap().source,
        Source::Operator {
            who: "token:ops".into()
        }
    );
    h.stop().await;
}

#[tokio::test]
async fn sec_3_tcp_listener_without_tokens_is_refused() {
    let listen = AdminListen::Tcp("127.0.0.1:0".parse().unwrap());
    for access in [Access::LocalSocket, Access::Tokens(Vec::new())] {
        let err = listen::bind(&listen, &access).await.unwrap_err();
        assert!(matches!(err, ListenError::TcpWithoutTokens { .. }), "{err}");
    }
}

#[tokio::test]
async fn sec_3_mutations_are_audited_with_who_old_new() {
    let h = Harness::start(Options {
        tcp: true,
        ..Options::default()
    })
    .await;
    let first = h.put_json("fresh.example", &sequenced(1)).await.unwrap();
    let first_revision = json_of(&first)["revision"].as_u64().unwrap();
    let d1 = h
        .store
        .snapshot()
        .get(&td("fresh.example"))
        .unwrap()
        .digest
        .clone();
    h.put_json("fresh.example", &sequenced(2)).await.unwrap();
    let d2 = h
        .store
        .snapshot()
        .get(&td("fresh.example"))
        .unwrap()
        .digest
        .clone();
    h.client
        .call(
            Method::POST,
            "/v1/bundles/fresh.example/rollback",
            Some(Body::Json(json!({"revision": first_revision}))),
        )
        .await
        .unwrap();
    h.client
        .call(Method::DELETE, "/v1/bundles/fresh.example", None)
        .await
        .unwrap();

    let log: Vec<_> = h
        .store
        .audit_log(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, record)| record)
        .collect();
    assert_eq!(
        log.len(),
        4,
        "one record per change, no duplicates: {log:?}"
    );
    for record in &log {
        assert!(record.who.contains("token:ops"), "{record:?}");
        assert_eq!(record.trust_domain, Some(td("fresh.example")));
    }
    let actions: Vec<AuditAction> = log.iter().map(|r| r.action).collect();
    assert_eq!(
        actions,
        [
            AuditAction::Accept,
            AuditAction::Accept,
            AuditAction::Rollback,
            AuditAction::Remove
        ]
    );
    assert_eq!(
        (log[0].old_digest.as_deref(), log[0].new_digest.as_deref()),
        (None, Some(d1.as_str()))
    );
    assert_eq!(
        (log[1].old_digest.as_deref(), log[1].new_digest.as_deref()),
        (Some(d1.as_str()), Some(d2.as_str()))
    );
    assert_eq!(
        (log[2].old_digest.as_deref(), log[2].new_digest.as_deref()),
        (Some(d2.as_str()), Some(d1.as_str()))
    );
    assert_eq!(log[3].old_digest.as_deref(), Some(d1.as_str()));
    h.stop().await;
}

#[tokio::test]
async fn unix_socket_is_created_0600() {
    let h = Harness::unix().await;
    let BoundAddr::Unix(path) = h.addr.clone() else {
        panic!("unix harness");
    };
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let parent = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        parent & 0o777,
        0o700,
        "created parent directory: {parent:o}"
    );
    h.get("/healthz").await.unwrap();

    // A second gateway on the same socket is refused while the first runs.
    let err = listen::bind(&AdminListen::Unix(path.clone()), &Access::LocalSocket)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ListenError::Socket(SocketError::InUse { .. })),
        "{err}"
    );

    h.stop().await;
    assert!(!path.exists(), "the socket is removed on shutdown");
}

#[tokio::test]
async fn stale_socket_is_replaced_and_other_files_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("admin.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists(), "a stale socket file remains");
    let bound = listen::bind(&AdminListen::Unix(path.clone()), &Access::LocalSocket)
        .await
        .unwrap();
    assert_eq!(bound.local_addr().unwrap(), BoundAddr::Unix(path.clone()));
    drop(bound);

    let file = dir.path().join("file.sock");
    std::fs::write(&file, b"precious").unwrap();
    let err = listen::bind(&AdminListen::Unix(file.clone()), &Access::LocalSocket)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ListenError::Socket(SocketError::NotASocket { .. })),
        "{err}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
}

#[tokio::test]
async fn metrics_route_renders_text() {
    let h = Harness::unix().await;
    h.metrics.inc(
        fedgw::telemetry::Counter::new(
            "fedgw_test_fetches_total",
            &["trust_domain"],
            "Fetches in this test.",
        ),
        &[("trust_domain", "fresh.example")],
        2.0,
    );
    let answer = h.get("/metrics").await.unwrap();
    assert_eq!(answer.status, 200);
    assert!(
        answer
            .content_type
            .as_deref()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        answer.content_type
    );
    let text = String::from_utf8(answer.body).unwrap();
    assert!(
        text.contains("# TYPE fedgw_test_fetches_total counter"),
        "{text}"
    );
    assert!(
        text.contains("fedgw_test_fetches_total{trust_domain=\"fresh.example\"} 2"),
        "{text}"
    );
    h.stop().await;
}

#[tokio::test]
async fn readyz_and_healthz_answer_while_the_gateway_serves() {
    let h = Harness::unix().await;
    assert_eq!(h.get("/readyz").await.unwrap().status, 200);
    assert_eq!(h.get("/healthz").await.unwrap().status, 200);
    h.stop().await;
}

/// Hand-built (see [`HandBuilt`]): the gateway is ready from the moment its admin API
/// answers until its shutdown begins, when the listener stops taking requests; the
/// state before it is ready cannot be reached through it.
#[tokio::test]
async fn readyz_flips_when_ready() {
    let h = HandBuilt::start(false).await;
    let err = h.get("/readyz").await.unwrap_err();
    assert!(
        matches!(err, ClientError::Unexpected { status: 503, .. }),
        "{err}"
    );
    assert_eq!(
        h.get("/healthz").await.unwrap().status,
        200,
        "alive while not ready"
    );
    h.ready.send(true).unwrap();
    assert_eq!(h.get("/readyz").await.unwrap().status, 200);
    h.ready.send(false).unwrap();
    assert!(h.get("/readyz").await.is_err());
    h.stop().await;
}

#[tokio::test]
async fn relationships_are_listed_with_status() {
    let h = Harness::unix().await;
    h.store
        .record_fetch_failure(
            &td("broken.example"),
            OffsetDateTime::now_utc(),
            "timeout".into(),
            "timeout".into(),
            None,
        )
        .await
        .unwrap();

    let answer = h.get("/v1/federation-relationships").await.unwrap();
    let list = json_of(&answer)["relationships"]
        .as_array()
        .unwrap()
        .clone();
    let names: Vec<&str> = list
        .iter()
        .map(|r| r["trust_domain"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "fresh.example",
            "broken.example",
            "old.example",
            "spiffe.example"
        ]
    );

    let answer = h
        .get("/v1/federation-relationships/broken.example")
        .await
        .unwrap();
    let broken = json_of(&answer);
    assert_eq!(broken["urls"], json!([h.stall.url("/broken")]));
    assert_eq!(broken["origin"], "configuration");
    assert_eq!(broken["proxy"], "env");
    assert_eq!(broken["depends_on"], json!([]));
    assert_eq!(broken["chain_end"], "web_pki");
    assert_eq!(broken["profile"], "https_web");
    assert_eq!(broken["follow_redirects"], false);
    assert!(broken["endpoint_spiffe_id"].is_null());
    assert_eq!(broken["status"]["state"], "failing");
    assert_eq!(broken["status"]["consecutive_failures"], 1);
    assert_eq!(broken["status"]["last_error"]["message"], "timeout");
    assert_eq!(broken["status"]["last_error"]["code"], "timeout");

    let answer = h
        .get("/v1/federation-relationships/spiffe.example")
        .await
        .unwrap();
    let spiffe = json_of(&answer);
    assert_eq!(
        spiffe["endpoint_spiffe_id"],
        "spiffe://anchor.example/bundle-endpoint"
    );
    assert_eq!(spiffe["status"]["state"], "awaiting_bootstrap");
    assert_eq!(spiffe["depends_on"], json!(["anchor.example"]));
    assert_eq!(
        (&spiffe["chain_depth"], &spiffe["chain_end"]),
        (&json!(1), &json!("static"))
    );

    let (status, code, _) = api_error(h.get("/v1/federation-relationships/none.example").await);
    assert_eq!((status, code.as_str()), (404, "not_found"));
    h.stop().await;
}

/// Hand-built (see [`HandBuilt`]): the gateway always runs a relationship registry
/// (tests/relationships_api.rs covers its changes); the answer of an API without one
/// cannot be reached through it.
#[tokio::test]
async fn relationship_changes_need_a_registry() {
    let h = HandBuilt::start(true).await;
    let body = json!({"trust_domain": "new.example", "urls": ["https://new.example/"], "profile": "https_web"});
    for (method, path) in [
        (Method::POST, "/v1/federation-relationships"),
        (Method::PUT, "/v1/federation-relationships/fresh.example"),
        (Method::DELETE, "/v1/federation-relationships/fresh.example"),
    ] {
        let (status, code, message) = api_error(
            h.client
                .call(method.clone(), path, Some(Body::Json(body.clone())))
                .await,
        );
        // Without a registry (an API not run by a gateway) nothing can change them;
        // tests/relationships_api.rs covers the gateway's registry.
        assert_eq!(
            (status, code.as_str()),
            (503, "unavailable"),
            "{method} {path}"
        );
        assert!(message.contains("registry"), "{message}");
    }
    // Nothing changed: the relationship is still listed and polled.
    h.get("/v1/federation-relationships/fresh.example")
        .await
        .unwrap();
    h.stop().await;
}

#[tokio::test]
async fn refresh_forwards_to_the_poller() {
    let h = Harness::start(Options {
        serve_old: true,
        ..Options::default()
    })
    .await;
    let old = h.old.as_ref().unwrap();
    let polls = old.requests();
    let (status, code, _) = api_error(
        h.client
            .call(
                Method::POST,
                "/v1/federation-relationships/none.example/refresh",
                None,
            )
            .await,
    );
    assert_eq!((status, code.as_str()), (404, "not_found"));

    let answer = h
        .client
        .call(
            Method::POST,
            "/v1/federation-relationships/old.example/refresh",
            None,
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    // The poller's report of the fetch it made for the request: the endpoint serves a
    // new sequence on every request, so the bundle is accepted.
    let report = json_of(&answer);
    assert_eq!(
        (&report["outcome"], &report["trust_domain"]),
        (&json!("accepted"), &json!("old.example")),
        "{report}"
    );
    assert_eq!(report["sequence"], 2, "{report}");
    // The unknown domain never reached a poller; the known one fetched once.
    assert_eq!(old.requests(), polls + 1);
    h.stop().await;
}

/// Hand-built (see [`HandBuilt`]): the gateway's admin API always has its pollers; an
/// API without them cannot be reached through it.
#[tokio::test]
async fn refresh_without_a_running_poller_is_unavailable() {
    let h = HandBuilt::start(true).await;
    let (status, code, _) = api_error(
        h.client
            .call(
                Method::POST,
                "/v1/federation-relationships/old.example/refresh",
                None,
            )
            .await,
    );
    assert_eq!((status, code.as_str()), (503, "unavailable"));
    h.stop().await;
}

#[tokio::test]
async fn fed_6_bundle_listing_names_each_bundle_with_its_trust_domain() {
    let h = Harness::unix().await;
    put(
        &h.client,
        "home.example",
        "application/x-pem-file",
        ca_pem("home.example", 2030).as_bytes(),
    )
    .await
    .unwrap();
    h.put_json("fresh.example", &sequenced(4)).await.unwrap();

    let answer = h.get("/v1/bundles").await.unwrap();
    let body = json_of(&answer);
    assert_eq!(body["revision"], 2);
    let bundles = body["bundles"].as_array().unwrap();
    let snapshot = h.store.snapshot();
    assert_eq!(bundles.len(), 2);
    for b in bundles {
        let name = td(b["trust_domain"].as_str().unwrap());
        let entry = snapshot.get(&name).unwrap();
        assert_eq!(b["digest"], entry.digest);
        assert_eq!(b["revision"], entry.revision);
        assert_eq!(b["source"], "operator unix-socket");
    }
    let home = bundles
        .iter()
        .find(|b| b["trust_domain"] == "home.example")
        .unwrap();
    assert_eq!(
        (home["role"].as_str(), home["authorities"].as_u64()),
        (Some("local"), Some(1))
    );
    let fresh = bundles
        .iter()
        .find(|b| b["trust_domain"] == "fresh.example")
        .unwrap();
    assert_eq!(
        (fresh["role"].as_str(), fresh["sequence"].as_u64()),
        (Some("foreign"), Some(4))
    );
    h.stop().await;
}

#[tokio::test]
async fn cli_verbs_speak_the_same_shapes() {
    let h = Harness::start(Options {
        serve_old: true,
        ..Options::default()
    })
    .await;
    let document = sequenced(6).into_bytes();
    let out = cli::bundle_set(
        &h.client,
        &td("fresh.example"),
        document.clone(),
        DocumentFormat::Spiffe,
        false,
    )
    .await
    .unwrap();
    assert_eq!(out, cli::Output::Text("fresh.example: accepted\n".into()));
    let cli::Output::Raw(shown) =
        cli::bundle_show(&h.client, &td("fresh.example"), DocumentFormat::Spiffe)
            .await
            .unwrap()
    else {
        panic!("raw output");
    };
    assert_eq!(shown, document);
    let cli::Output::Text(list) = cli::bundle_list(&h.client, false).await.unwrap() else {
        panic!("text output");
    };
    assert!(
        list.contains("fresh.example") && list.contains("operator unix-socket"),
        "{list}"
    );
    let cli::Output::Text(history) = cli::bundle_history(&h.client, &td("fresh.example"), false)
        .await
        .unwrap()
    else {
        panic!("text output");
    };
    assert_eq!(history.lines().count(), 2, "{history}");
    let cli::Output::Text(status) = cli::status(&h.client, false).await.unwrap() else {
        panic!("text output");
    };
    assert!(
        status.contains("home.example") && status.contains("missing"),
        "{status}"
    );
    let cli::Output::Text(rels) = cli::federation_list(&h.client, false).await.unwrap() else {
        panic!("text output");
    };
    assert!(
        rels.contains("spiffe.example") && rels.contains("awaiting_bootstrap"),
        "{rels}"
    );
    let out = cli::federation_refresh(&h.client, &td("old.example"), false)
        .await
        .unwrap();
    // The poller's report: old.example's fetch at start was revision 1, the bundle set
    // above 2; the endpoint serves sequence 2 on its second request.
    assert_eq!(
        out,
        cli::Output::Text("old.example: accepted, revision 3, sequence 2\n".into())
    );
    // A relationship from the configuration is not deleted through the API; the CLI
    // passes the API's refusal on.
    let err = cli::federation_delete(&h.client, &td("old.example"), false, false)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            cli::CliError::Client(ClientError::Api { status: 409, code, .. })
                if code == "managed_in_configuration"
        ),
        "{err}"
    );
    cli::bundle_delete(&h.client, &td("fresh.example"))
        .await
        .unwrap();
    assert!(h.store.snapshot().get(&td("fresh.example")).is_none());
    h.stop().await;
}

// ---- POST /v1/jwt-svid/validate -------------------------------------------------------

/// An EC P-256 JWT-SVID signing key (the test kit's) and its public half as a JWT
/// authority.
struct JwtKey {
    kid: &'static str,
    encoding: jsonwebtoken::EncodingKey,
    authority: JwtAuthority,
}

impl JwtKey {
    fn new(kid: &'static str) -> Self {
        let key = EcKey::generate();
        Self {
            kid,
            encoding: jsonwebtoken::EncodingKey::from_ec_der(&key.pkcs8_der()),
            authority: key.jwt_authority(kid),
        }
    }

    /// An ES256 token for `sub` and `aud` expiring `lifetime` seconds from now.
    fn token(&self, sub: &str, aud: &str, lifetime: i64) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.to_owned());
        let exp = OffsetDateTime::now_utc().unix_timestamp() + lifetime;
        let claims = json!({"sub": sub, "aud": aud, "exp": exp, "env": "prod"});
        jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap()
    }
}

/// A TCP harness holding `fresh.example` (pushed) with `a_key` and `home.example`
/// (local) with `b_key`, both under the kid `shared`.
async fn jwt_harness() -> (Harness, JwtKey, JwtKey) {
    let h = Harness::start(Options {
        tcp: true,
        ..Options::default()
    })
    .await;
    let a_key = JwtKey::new("shared");
    let b_key = JwtKey::new("shared");
    for (name, key) in [("fresh.example", &a_key), ("home.example", &b_key)] {
        let mut bundle = Bundle::new(td(name));
        bundle.insert_jwt_authority(key.authority.clone());
        let document = String::from_utf8(bundle.to_json()).unwrap();
        h.put_json(name, &document).await.unwrap();
    }
    (h, a_key, b_key)
}

async fn validate_jwt(client: &AdminClient, body: Value) -> Result<Answer, ClientError> {
    client
        .call(
            Method::POST,
            "/v1/jwt-svid/validate",
            Some(Body::Json(body)),
        )
        .await
}

#[tokio::test]
async fn jwt_validate_route_answers_the_svid_to_a_read_token() {
    let (h, a_key, _) = jwt_harness().await;
    let reader = h.client_with(Some(READ_TOKEN));
    let token = a_key.token("spiffe://fresh.example/billing", "reports", 300);

    let answer = validate_jwt(&reader, json!({"token": token, "audience": "reports"}))
        .await
        .unwrap();
    let body = json_of(&answer);
    assert_eq!(body["spiffe_id"], "spiffe://fresh.example/billing");
    assert_eq!(body["trust_domain"], "fresh.example");
    assert_eq!(body["key_id"], "shared");
    assert_eq!(body["algorithm"], "ES256");
    assert_eq!(body["claims"]["env"], "prod");
    let exp = body["claims"]["exp"].as_i64().unwrap();
    let expires_at = OffsetDateTime::parse(
        body["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(expires_at.unix_timestamp(), exp);

    // The CLI verb shows the same as a table.
    let cli::Output::Text(table) = cli::jwt_validate(&reader, &token, "reports", false)
        .await
        .unwrap()
    else {
        panic!("text output");
    };
    assert!(table.starts_with("SPIFFE ID"), "{table}");
    assert!(table.contains("spiffe://fresh.example/billing"), "{table}");

    // Without a token the caller is not authenticated.
    let anonymous = h.client_with(None);
    let refused = validate_jwt(&anonymous, json!({"token": token, "audience": "reports"})).await;
    assert_eq!(api_error(refused).0, 401);
    h.stop().await;
}

#[tokio::test]
async fn dist_3_jwt_validate_route_uses_only_the_bundle_of_the_tokens_domain() {
    let (h, a_key, b_key) = jwt_harness().await;
    // home.example's key, under a kid fresh.example also uses, for a fresh.example ID.
    let token = b_key.token("spiffe://fresh.example/billing", "reports", 300);
    let (status, code, message) =
        api_error(validate_jwt(&h.client, json!({"token": token, "audience": "reports"})).await);
    assert_eq!((status, code.as_str()), (422, "bad_signature"), "{message}");
    assert!(message.contains("fresh.example"), "{message}");
    // Each key vouches for its own domain.
    for (key, sub) in [
        (&a_key, "spiffe://fresh.example/x"),
        (&b_key, "spiffe://home.example/x"),
    ] {
        let token = key.token(sub, "reports", 300);
        let body = json!({"token": token, "audience": "reports"});
        validate_jwt(&h.client, body).await.unwrap();
    }
    h.stop().await;
}

#[tokio::test]
async fn jwt_validate_route_names_each_refusal() {
    let (h, a_key, _) = jwt_harness().await;
    let sub = "spiffe://fresh.example/x";
    let good = a_key.token(sub, "reports", 300);
    let ask = |token: &str, audience: &str| json!({"token": token, "audience": audience});
    // The header {"alg":"none"}, base64url.
    let unsigned = "eyJhbGciOiJub25lIn0.e30.";
    for (body, status, code) in [
        (json!({"token": good}), 400, "invalid_argument"),
        (ask(&good, ""), 400, "invalid_argument"),
        (
            json!({"token": good, "audience": "a", "x": 1}),
            400,
            "invalid_argument",
        ),
        (ask(&good, "inventory"), 422, "audience_mismatch"),
        (
            ask(&a_key.token(sub, "reports", -120), "reports"),
            422,
            "expired",
        ),
        (
            ask(
                &a_key.token("spiffe://other.example/x", "reports", 300),
                "reports",
            ),
            422,
            "no_bundle",
        ),
        (ask(unsigned, "reports"), 422, "unsupported_algorithm"),
        (ask("e30.e30.e30", "reports"), 422, "malformed_token"),
        (ask("not a token", "reports"), 422, "malformed_token"),
    ] {
        let (got_status, got_code, message) =
            api_error(validate_jwt(&h.client, body.clone()).await);
        assert_eq!(
            (got_status, got_code.as_str()),
            (status, code),
            "{body}: {message}"
        );
    }
    h.stop().await;
}

// ---- The cases a real gateway cannot show ----------------------------------------------

/// The admin router over a hand-built `AdminState`, for the three states the real
/// gateway (`fedgw::app`) never has while its admin API takes requests: not ready
/// (it is ready as soon as the API answers, and stops taking requests when shutdown
/// makes it not ready), no pollers behind the refresh route (it always has them), and
/// no relationship registry (it always runs one). Everything
/// else here goes through [`Harness`]. The relationships are those of [`domains`],
/// never fetched; the socket is in a temporary directory.
struct HandBuilt {
    _dir: TempDir,
    client: AdminClient,
    ready: watch::Sender<bool>,
    shutdown: fedgw::shutdown::Shutdown,
}

impl HandBuilt {
    async fn start(ready: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "data_dir = \"/unused\"\n{}",
            domains(|name| format!("url = \"https://{name}.example/bundle\""))
        );
        let config = Config::from_toml(&text).unwrap();
        let store = TrustStore::open(dir.path().join("db"), PolicySettings::default())
            .await
            .unwrap();
        let socket = dir.path().join("run/admin.sock");
        let (access, listen) = (Access::LocalSocket, AdminListen::Unix(socket));
        // No pollers behind the refresh route.
        let (ready, ready_rx) = watch::channel(ready);
        let limits = fedgw::relationship::Limits {
            max_document_bytes: config.policy.max_document_bytes,
            fetch_timeout: config.polling.fetch_timeout.duration(),
        };
        let relationships = config
            .federation
            .iter()
            .map(|entry| fedgw::relationship::Relationship::from_entry(entry, limits).unwrap())
            .collect();
        let local = config
            .local
            .iter()
            .enumerate()
            .map(|(i, l)| LocalDomainInfo {
                trust_domain: l.trust_domain.clone(),
                path: config.local_path(i).unwrap(),
                refresh_hint: l.refresh_hint,
                source_file: None,
                workload_api: None,
            })
            .collect();
        let state = AdminState {
            trust_store: store.clone(),
            metrics: Metrics::new(),
            access: access.clone(),
            local,
            relationships: RelationshipsView::new(relationships),
            registry: None,
            pollers: None,
            ready: ready_rx,
            schedule: (&config.polling).into(),
            max_document_bytes: 64 * 1024,
            watchers: fedgw::admin::watchers::Watchers::new(
                Default::default(),
                fedgw::telemetry::Metrics::new(),
                fedgw::shutdown::Shutdown::new(),
            ),
            tasks: fedgw::supervise::TaskHealth::new(),
            body_limits: Default::default(),
        };
        let bound = listen::bind(&listen, &access).await.unwrap();
        let addr = bound.local_addr().unwrap();
        let shutdown = fedgw::shutdown::Shutdown::new();
        let net = fedgw::net::Net::new(
            fedgw::net::Budget::new(1024),
            Metrics::new(),
            shutdown.clone(),
        );
        let limits = fedgw::net::LimitsConfig::default().resolve(fedgw::net::Kind::Admin);
        shutdown.spawn(bound.serve(admin::router(state), limits, net));
        Self {
            _dir: dir,
            client: client_for(&addr, None),
            ready,
            shutdown,
        }
    }

    async fn get(&self, path: &str) -> Result<Answer, ClientError> {
        self.client.call(Method::GET, path, None).await
    }

    async fn stop(self) {
        let ended = self
            .shutdown
            .shutdown(std::time::Duration::from_secs(10))
            .await;
        assert_eq!(ended, fedgw::shutdown::Ended::Clean);
    }
}
