//! Federation relationships through the admin API, in process: a real gateway
//! (`fedgw::app::start`) on a temporary `data_dir` (real sled), its real admin
//! listener on a unix socket (TCP with tokens for the scope test), real pollers fetching
//! from loopback HTTPS fixtures (the test kit's `BundleServer`, which counts requests),
//! and the same client the CLI uses.
//!
//! Every refused request is checked to leave the stored relationships, the audit log,
//! the trust store's snapshot and the listing as they were. Nothing sleeps to
//! synchronise: steps wait for an observable condition (a fixture's request count, a
//! stored bundle) up to a generous deadline.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use fedgw::admin::listen::BoundAddr;
use fedgw::app::Config;
use fedgw::app::{GatewayError, Running};
use fedgw::client::admin_client::{AdminClient, AdminTarget, Answer as Reply, Body, ClientError};
use fedgw::client::cli;
use fedgw::config::{DocumentFormat, ProfileName};
use fedgw::digest::sha256_hex;
use fedgw::shutdown::Ended;
use fedgw::trust::db::{AuditAction, AuditRecord, RelationshipRecord, StoreError};
use fedgw_testkit::{Answer, BundleServer, DEADLINE, TestCa, wait_for, wait_until};
use reqwest::Method;
use serde_json::{Value, json};
use spiffe_federation::endpoint::ProxySetting;
use spiffe_federation::{Bundle, TrustDomain};
use tempfile::TempDir;

const RELATIONSHIPS: &str = "/v1/federation-relationships";

/// A refresh hint of 1 s with `min_refresh = "1s"`: a fixture is polled about every
/// 250 ms.
const BASE: &str = r#"
[polling]
min_refresh = "1s"
default_refresh = "1s"
fetch_timeout = "2s"

[[local]]
trust_domain = "home.test"
source = { admin = true }

[[federation]]
trust_domain = "conf.test"
url = "https://127.0.0.1:1/"
profile = "https_web"
proxy = "off"
"#;

/// One in-process gateway and a client on its admin socket.
struct Gw {
    running: Running,
    client: AdminClient,
    data_dir: PathBuf,
}

impl Gw {
    /// Start on `dir/data` with [`BASE`] and `extra` TOML after it.
    async fn start(dir: &Path, extra: &str) -> Self {
        let data_dir = dir.join("data");
        let text = format!(
            "data_dir = {:?}\n{BASE}\n{extra}",
            data_dir.display().to_string()
        );
        let config = Config::from_toml(&text).unwrap();
        // In process, the database of a gateway just shut down may be closed a moment
        // after `shutdown` returns (its last handle dropped on a blocking thread).
        let running = wait_for(DEADLINE, "the database to be free", || async {
            match fedgw::app::start(&config).await {
                Ok(running) => Some(running),
                Err(GatewayError::Store(StoreError::Open { .. } | StoreError::Locked { .. })) => {
                    None
                }
                Err(err) => panic!("gateway did not start: {err}"),
            }
        })
        .await;
        let client = match running.admin_addr.clone().unwrap() {
            BoundAddr::Unix(path) => AdminClient::new(&AdminTarget::Unix(path), None).unwrap(),
            BoundAddr::Tcp(addr) => {
                let url = format!("http://{addr}/").parse().unwrap();
                AdminClient::new(&AdminTarget::Url(url), None).unwrap()
            }
        };
        Self {
            running,
            client,
            data_dir,
        }
    }

    async fn stop(self) {
        let ended = self.running.shutdown(Duration::from_secs(10)).await;
        assert_eq!(ended, Ended::Clean);
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Reply, ClientError> {
        self.client.call(method, path, body.map(Body::Json)).await
    }

    async fn create(&self, body: Value) -> Result<Reply, ClientError> {
        self.call(Method::POST, RELATIONSHIPS, Some(body)).await
    }

    async fn show(&self, td: &str) -> Result<Reply, ClientError> {
        self.call(Method::GET, &format!("{RELATIONSHIPS}/{td}"), None)
            .await
    }

    async fn list(&self) -> Vec<Value> {
        let answer = self.call(Method::GET, RELATIONSHIPS, None).await.unwrap();
        answer.json.unwrap()["relationships"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Everything a refused request must leave alone.
    async fn state(&self) -> State {
        let store = self.running.trust_store.store().clone();
        let stored = tokio::task::spawn_blocking(move || store.relationships().unwrap())
            .await
            .unwrap();
        let audit = self.running.trust_store.audit_log(0, 10_000).await.unwrap();
        let listing: Vec<String> = self
            .list()
            .await
            .iter()
            .map(|r| format!("{} {} {}", r["trust_domain"], r["origin"], r["urls"]))
            .collect();
        State {
            stored,
            audit,
            revision: self.running.trust_store.snapshot().revision,
            listing,
        }
    }

    fn has_bundle(&self, td: &str) -> bool {
        self.running.trust_store.snapshot().get(&name(td)).is_some()
    }
}

#[derive(Debug, PartialEq)]
struct State {
    stored: Vec<RelationshipRecord>,
    audit: Vec<(u64, AuditRecord)>,
    revision: u64,
    listing: Vec<String>,
}

/// A loopback `https_web` bundle endpoint serving a bundle of `td`, and the body of a
/// relationship to it.
struct Fixture {
    server: BundleServer,
    web_ca: TestCa,
    td: String,
}

impl Fixture {
    async fn start(td: &str) -> Self {
        let web_ca = TestCa::web(td);
        let mut bundle = Bundle::new(name(td));
        bundle.add_x509_authority(TestCa::spiffe(td).authority());
        bundle.set_sequence(Some(1));
        bundle.set_refresh_hint(Some(Duration::from_secs(1)));
        let server =
            BundleServer::start(&web_ca, Answer::Fixed(Bytes::from(bundle.to_json()))).await;
        Self {
            server,
            web_ca,
            td: td.to_owned(),
        }
    }

    fn body(&self) -> Value {
        json!({
            "trust_domain": self.td,
            "url": self.server.url(),
            "profile": "https_web",
            "extra_ca_roots_pem": self.web_ca.cert_pem,
            "proxy": "off",
        })
    }

    /// Wait until the fixture has answered `more` requests beyond `from`.
    async fn polled(&self, from: u64, more: u64) {
        let what = format!("{more} polls of {} beyond {from}", self.td);
        wait_until(DEADLINE, &what, || async {
            self.server.requests() >= from + more
        })
        .await;
    }
}

/// An `https_web` relationship body to an address where nothing listens.
fn unreachable_web(td: &str) -> Value {
    json!({"trust_domain": td, "url": "https://127.0.0.1:1/", "profile": "https_web", "proxy": "off"})
}

/// An `https_spiffe` relationship body whose endpoint ID is in `endpoint_td`.
fn spiffe(td: &str, endpoint_td: &str) -> Value {
    json!({
        "trust_domain": td,
        "url": "https://127.0.0.1:1/",
        "profile": "https_spiffe",
        "endpoint_spiffe_id": format!("spiffe://{endpoint_td}/bundle-endpoint"),
        "proxy": "off",
    })
}

fn name(td: &str) -> TrustDomain {
    td.parse().unwrap()
}

fn json_of(answer: &Reply) -> &Value {
    answer.json.as_ref().unwrap()
}

fn api_error(result: Result<Reply, ClientError>) -> (u16, String, String) {
    match result {
        Err(ClientError::Api {
            status,
            code,
            message,
        }) => (status, code, message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn assert_refused(result: Result<Reply, ClientError>, status: u16, code: &str, names: &str) {
    let (got_status, got_code, message) = api_error(result);
    assert_eq!((got_status, got_code.as_str()), (status, code), "{message}");
    assert!(message.contains(names), "{names:?} not in {message:?}");
}

fn relationship_audit(state: &State) -> Vec<&AuditRecord> {
    state
        .audit
        .iter()
        .map(|(_, record)| record)
        .filter(|r| {
            matches!(
                r.action,
                AuditAction::RelationshipCreate
                    | AuditAction::RelationshipUpdate
                    | AuditAction::RelationshipDelete
            )
        })
        .collect()
}

/// FED-4 through the API: a created relationship answers 201 with its view (origin
/// `api`), is polled at once, listed after the configuration's, shown in the status,
/// and stored in sled; a second one for the same trust domain, or one for a
/// configured domain, is 409 `already_exists`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fed_4_create_answers_201_and_the_relationship_is_polled_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gw::start(dir.path(), "").await;
    let fix = Fixture::start("fix.test").await;

    let answer = gw.create(fix.body()).await.unwrap();
    assert_eq!(answer.status, 201);
    let view = json_of(&answer);
    assert_eq!(view["trust_domain"], "fix.test");
    assert_eq!(view["origin"], "api");
    assert_eq!(view["urls"], json!([fix.server.url()]));
    assert_eq!(view["profile"], "https_web");
    assert_eq!(view["proxy"], "off");
    assert_eq!(view["chain_end"], "web_pki");

    fix.polled(0, 1).await;
    wait_until(DEADLINE, "the fixture's bundle stored", || async {
        gw.has_bundle("fix.test")
    })
    .await;
    let listed: Vec<(String, String)> = gw
        .list()
        .await
        .iter()
        .map(|r| {
            (
                r["trust_domain"].as_str().unwrap().to_owned(),
                r["origin"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("conf.test".into(), "configuration".into()),
            ("fix.test".into(), "api".into())
        ]
    );
    let status = gw.call(Method::GET, "/v1/status", None).await.unwrap();
    assert!(
        json_of(&status)["domains"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["trust_domain"] == "fix.test"),
        "{:?}",
        status.json
    );
    let stored = gw.state().await.stored;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].relationship.trust_domain.as_str(), "fix.test");
    assert_eq!(stored[0].changed_by, "unix-socket");

    let before = gw.state().await;
    assert_refused(
        gw.create(fix.body()).await,
        409,
        "already_exists",
        "fix.test",
    );
    assert_refused(
        gw.create(unreachable_web("conf.test")).await,
        409,
        "already_exists",
        "configuration",
    );
    assert_eq!(gw.state().await.stored, before.stored);
    assert_eq!(relationship_audit(&gw.state().await).len(), 1);
    gw.stop().await;
}

/// FED-4: a relationship missing its URL, profile or trust domain is 422, and the
/// message names the field.
#[tokio::test]
async fn fed_4_missing_url_profile_or_trust_domain_is_422_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gw::start(dir.path(), "").await;
    let before = gw.state().await;
    let full = unreachable_web("new.test");
    for field in ["url", "profile", "trust_domain"] {
        let mut body = full.clone();
        body.as_object_mut().unwrap().remove(field);
        assert_refused(gw.create(body).await, 422, "invalid_relationship", field);
    }
    assert_eq!(gw.state().await, before, "refused requests change nothing");
    gw.stop().await;
}

/// SEC-1: nothing is inferred. A body with a URL whose host is a trust domain name but
/// no `trust_domain` is refused, naming the field; the CLI refuses to send one.
#[tokio::test]
async fn sec_1_trust_domain_is_never_inferred_from_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gw::start(dir.path(), "").await;
    let before = gw.state().await;
    let body = json!({"url": "https://new.test/", "profile": "https_web"});
    assert_refused(
        gw.create(body).await,
        422,
        "invalid_relationship",
        "trust_domain",
    );
    let body = json!({"trust_domain": "new.test", "url": "https://new.test/"});
    assert_refused(
        gw.create(body).await,
        422,
        "invalid_relationship",
        "profile",
    );
    assert_eq!(gw.state().await, before);

    let socket = gw.data_dir.join("admin.sock");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fedgw"))
        .args([
            "federation",
            "create",
            "--bundle-endpoint-url",
            "https://new.test/",
        ])
        .args(["--bundle-endpoint-profile", "https_web", "--admin"])
        .arg(format!("unix:{}", socket.display()))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--trust-domain"), "{stderr}");
    assert_eq!(gw.state().await, before);
    gw.stop().await;
}

/// EXT-7: a relationship with a trust domain this gateway serves is refused.
#[tokio::test]
async fn ext_7_relationship_with_a_local_trust_domain_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gw::start(dir.path(), "").await;
    let before = gw.state().await;
    let (status, code, message) = api_error(gw.create(unreachable_web("home.test")).await);
    assert_eq!((status, code.as_str()), (422, "invalid_relationship"));
    assert!(
        message.starts_with("trust_domain:") && message.contains("served by this gateway"),
        "{message}"
    );
    assert_eq!(gw.state().await, before);
    gw.stop().await;
}

/// FED-4, WEB-1, SPF-2: bodies that break a rule are refused with the field named and
/// a stable code, and leave sled, the audit log, the snapshot and the listing as they
/// were.
#[tokio::test]
async fn fed_4_bad_bodies_are_refused_naming_the_field_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gw::start(dir.path(), "[policy]\nmax_document_bytes = 4096\n").await;
    let before = gw.state().await;
    let with = |field: &str, value: Value| {
        let mut body = unreachable_web("new.test");
        body[field] = value;
        body
    };
    let cases = [
        (
            with("extra_ca_roots", json!("/etc/roots.pem")),
            422,
            "invalid_relationship",
            "extra_ca_roots",
        ),
        (
            with("url", json!("http://new.test/")),
            422,
            "invalid_relationship",
            "url",
        ),
        (
            with("url", json!("not a url")),
            422,
            "invalid_relationship",
            "url",
        ),
        (
            with("trust_domain", json!("New.Test")),
            422,
            "invalid_relationship",
            "trust_domain",
        ),
        (
            with("profile", json!("https_spiffe")),
            422,
            "invalid_relationship",
            "endpoint_spiffe_id",
        ),
        (
            with("bootstrap_bundle", json!("{}")),
            422,
            "invalid_relationship",
            "bootstrap_bundle",
        ),
        (
            with("extra_ca_roots_pem", json!("not PEM")),
            422,
            "invalid_relationship",
            "extra_ca_roots_pem",
        ),
        (
            with("extra_ca_roots_pem", json!("x".repeat(5000))),
            413,
            "payload_too_large",
            "extra_ca_roots_pem",
        ),
        (
            with("follow_redirects", json!("yes")),
            422,
            "invalid_relationship",
            "follow_redirects",
        ),
        (
            with("proxy", json!("sometimes")),
            422,
            "invalid_relationship",
            // Named by its field; the value is not repeated (a proxy URL may hold a
            // password).
            "proxy: ",
        ),
        (
            with("urls", json!(["https://mirror.test/"])),
            422,
            "invalid_relationship",
            "urls",
        ),
        (
            {
                let mut body = spiffe("new.test", "anchor.test");
                body["bootstrap_bundle"] = json!("{not json");
                body
            },
            422,
            "invalid_relationship",
            "bootstrap_bundle",
        ),
        (
            // Every element ignored: an empty bundle cannot authenticate the endpoint.
            {
                let mut body = spiffe("new.test", "anchor.test");
                body["bootstrap_bundle"] = json!(r#"{"keys":[{},{}]}"#);
                body
            },
            422,
            "invalid_relationship",
            "bootstrap_bundle: holds no X.509 authority (2 elements in keys, 2 of them ignored)",
        ),
    ];
    for (body, status, code, names) in cases {
        let shown = body.to_string();
        let (got_status, got_code, message) = api_error(gw.create(body).await);
        assert_eq!(
            (got_status, got_code.as_str()),
            (status, code),
            "{shown}: {message}"
        );
        assert!(
            message.contains(names),
            "{shown}: {names:?} not in {message:?}"
        );
    }
    // Not JSON, not labelled JSON, too large for any body.
    let raw = |content_type, bytes: &[u8]| {
        Some(Body::Raw {
            content_type,
            bytes: bytes.to_vec(),
        })
    };
    let (status, code, _) = api_error(
        gw.client
            .call(
                Method::POST,
                RELATIONSHIPS,
                raw("application/json", b"{\"trust_domain\":"),
            )
            .await,
    );
    assert_eq!((status, code.as_str()), (400, "invalid_argument"));
    let body = unreachable_web("new.test").to_string();
    let (status, code, _) = api_error(
        gw.client
            .call(
                Method::POST,
                RELATIONSHIPS,
                raw("text/plain", body.as_bytes()),
            )
            .await,
    );
    assert_eq!((status, code.as_str()), (415, "unsupported_media_type"));
    let huge = vec![b' '; 200 * 1024];
    let (status, code, _) = api_error(
        gw.client
            .call(Method::POST, RELATIONSHIPS, raw("application/json", &huge))
            .await,
    );
    assert_eq!((status, code.as_str()), (413, "payload_too_large"));

    assert_eq!(gw.state().await, before, "refused requests change nothing");
    gw.stop().await;
}

/// PUT replaces a relationship created through the API: 404 when there is none, 400
/// when the body names another trust domain, 409 for a configured one; a replacement
/// restarts the poller on the new URL and the old endpoint is not polled again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fed_4_put_replaces_an_api_relationship_and_restarts_its_poller() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gw::start(dir.path(), "").await;
    let first = Fixture::start("fix.test").await;
    let second = Fixture::start("fix.test").await;
    gw.create(first.body()).await.unwrap();
    // Once stored, later polls of the same bundle change nothing.
    wait_until(DEADLINE, "the first fixture's bundle stored", || async {
        gw.has_bundle("fix.test")
    })
    .await;

    let before = gw.state().await;
    let put = |td: &str, body: Value| {
        let path = format!("{RELATIONSHIPS}/{td}");
        let gw = &gw;
        async move { gw.call(Method::PUT, &path, Some(body)).await }
    };
    assert_refused(
        put("none.test", unreachable_web("none.test")).await,
        404,
        "not_found",
        "none.test",
    );
    assert_refused(
        put("fix.test", unreachable_web("other.test")).await,
        400,
        "invalid_argument",
        "other.test",
    );
    assert_refused(
        put("conf.test", unreachable_web("conf.test")).await,
        409,
        "managed_in_configuration",
        "federation[0]",
    );
    let mut missing = second.body();
    missing.as_object_mut().unwrap().remove("url");
    assert_refused(
        put("fix.test", missing).await,
        422,
        "invalid_relationship",
        "url",
    );
    assert_eq!(gw.state().await, before, "refused requests change nothing");

    let answer = put("fix.test", second.body()).await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(json_of(&answer)["urls"], json!([second.server.url()]));
    // The old poller ended before the answer: its fixture's count is final.
    let old_polls = first.server.requests();
    second.polled(0, 4).await;
    assert_eq!(
        first.server.requests(),
        old_polls,
        "the replaced URL is not polled"
    );
    let stored = gw.state().await.stored;
    assert_eq!(
        stored[0].relationship.url.as_ref().unwrap().as_str(),
        second.server.url()
    );
    gw.stop().await;
}

/// POLL-4: deleting a relationship stops its poller (no more fetches), removes its
/// bundle and fetch status, removes it from sled, and it disappears from the
/// relationship list, `/v1/bundles` and `/v1/status`. A configured one is 409, an
/// unknown one 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_4_delete_stops_polling_and_removes_the_bundle_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gw::start(dir.path(), "").await;
    let fix = Fixture::start("fix.test").await;
    let clock = Fixture::start("clock.test").await;
    gw.create(fix.body()).await.unwrap();
    gw.create(clock.body()).await.unwrap();
    wait_until(DEADLINE, "the fixture's bundle stored", || async {
        gw.has_bundle("fix.test")
    })
    .await;
    fix.polled(0, 2).await;

    assert_refused(
        gw.call(Method::DELETE, &format!("{RELATIONSHIPS}/conf.test"), None)
            .await,
        409,
        "managed_in_configuration",
        "configuration file",
    );
    let answer = gw
        .call(Method::DELETE, &format!("{RELATIONSHIPS}/fix.test"), None)
        .await
        .unwrap();
    assert_eq!(answer.status, 204);

    // The poller was stopped and waited for before the answer: over several polls of
    // another relationship, the deleted one's endpoint sees nothing more.
    let polls = fix.server.requests();
    clock.polled(clock.server.requests(), 4).await;
    assert_eq!(fix.server.requests(), polls, "no fetch after the delete");
    assert!(!gw.has_bundle("fix.test"));
    assert!(
        !gw.running
            .trust_store
            .statuses()
            .contains_key(&name("fix.test"))
    );
    assert_refused(gw.show("fix.test").await, 404, "not_found", "fix.test");
    assert!(
        gw.list()
            .await
            .iter()
            .all(|r| r["trust_domain"] != "fix.test")
    );
    let bundles = gw.call(Method::GET, "/v1/bundles", None).await.unwrap();
    assert!(
        json_of(&bundles)["bundles"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["trust_domain"] != "fix.test")
    );
    let status = gw.call(Method::GET, "/v1/status", None).await.unwrap();
    assert!(
        json_of(&status)["domains"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["trust_domain"] != "fix.test")
    );
    let state = gw.state().await;
    assert_eq!(state.stored.len(), 1, "only clock.test is left in sled");
    assert_eq!(
        state.stored[0].relationship.trust_domain.as_str(),
        "clock.test"
    );
    assert!(
        state
            .audit
            .iter()
            .any(|(_, r)| r.action == AuditAction::Remove
                && r.trust_domain == Some(name("fix.test"))),
        "the bundle's removal is audited"
    );
    assert_refused(
        gw.call(Method::DELETE, &format!("{RELATIONSHIPS}/fix.test"), None)
            .await,
        404,
        "not_found",
        "fix.test",
    );
    gw.stop().await;
}

/// POLL-4 with dependents: deleting a domain whose bundle authenticates another
/// relationship's `https_spiffe` endpoint is 409 `relationship_in_use`, naming the
/// dependent, and changes nothing; `?force=true` deletes it.
#[tokio::test]
async fn poll_4_delete_is_refused_while_in_use_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gw::start(dir.path(), "").await;
    gw.create(unreachable_web("anchor.test")).await.unwrap();
    gw.create(spiffe("dep.test", "anchor.test")).await.unwrap();
    gw.create(spiffe("self.test", "self.test")).await.unwrap();
    let before = gw.state().await;
    let delete = |query: &str| {
        let path = format!("{RELATIONSHIPS}/anchor.test{query}");
        let gw = &gw;
        async move { gw.call(Method::DELETE, &path, None).await }
    };
    assert_refused(delete("").await, 409, "relationship_in_use", "dep.test");
    assert_refused(
        delete("?force=maybe").await,
        400,
        "invalid_argument",
        "force",
    );
    assert_eq!(gw.state().await, before, "refused requests change nothing");
    // A self-serving endpoint depends on nobody else.
    assert_eq!(
        gw.call(Method::DELETE, &format!("{RELATIONSHIPS}/self.test"), None)
            .await
            .unwrap()
            .status,
        204
    );
    assert_eq!(delete("?force=true").await.unwrap().status, 204);
    let left: Vec<Value> = gw
        .list()
        .await
        .iter()
        .map(|r| r["trust_domain"].clone())
        .collect();
    assert_eq!(left, [json!("conf.test"), json!("dep.test")]);
    gw.stop().await;
}

/// SEC-3 (relationship changes): each create, update and delete is audited once,
/// with who, the action, the trust domain and the relationship's JSON before and
/// after.
#[tokio::test]
async fn sec_3_relationship_changes_are_audited_with_who_old_and_new() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gw::start(dir.path(), "").await;
    let created = unreachable_web("new.test");
    let mut updated = created.clone();
    updated["follow_redirects"] = json!(false);
    gw.create(created.clone()).await.unwrap();
    gw.call(
        Method::PUT,
        &format!("{RELATIONSHIPS}/new.test"),
        Some(updated.clone()),
    )
    .await
    .unwrap();
    gw.call(Method::DELETE, &format!("{RELATIONSHIPS}/new.test"), None)
        .await
        .unwrap();

    let state = gw.state().await;
    let audit = relationship_audit(&state);
    let actions: Vec<AuditAction> = audit.iter().map(|r| r.action).collect();
    assert_eq!(
        actions,
        [
            AuditAction::RelationshipCreate,
            AuditAction::RelationshipUpdate,
            AuditAction::RelationshipDelete
        ]
    );
    // The stored JSON has every field, defaults included.
    let full = |body: &Value| {
        let mut body = body.clone();
        body["bootstrap_format"] = json!("spiffe");
        body.as_object_mut()
            .unwrap()
            .entry("follow_redirects")
            .or_insert(json!(true));
        body["allow_revocation"] = json!(false);
        body
    };
    let values: Vec<(Option<Value>, Option<Value>)> = audit
        .iter()
        .map(|r| (r.old_value.clone(), r.new_value.clone()))
        .collect();
    assert_eq!(
        values,
        [
            (None, Some(full(&created))),
            (Some(full(&created)), Some(full(&updated))),
            (Some(full(&updated)), None),
        ]
    );
    for record in audit {
        assert_eq!(record.who, "unix-socket");
        assert_eq!(record.trust_domain, Some(name("new.test")));
    }
    gw.stop().await;
}

/// SEC-3: changing relationships needs the write scope; a read token may list them.
#[tokio::test]
async fn sec_3_relationship_changes_need_the_write_scope() {
    let dir = tempfile::tempdir().unwrap();
    let token = |name: &str, secret: &[u8], scope: &str| {
        format!(
            "[[admin.tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\nscope = \"{scope}\"\n",
            sha256_hex(secret)
        )
    };
    let admin = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n{}{}",
        token("viewer", b"read-secret", "read"),
        token("ops", b"write-secret", "write")
    );
    let mut gw = Gw::start(dir.path(), &admin).await;
    let BoundAddr::Tcp(addr) = gw.running.admin_addr.clone().unwrap() else {
        panic!("a TCP listener");
    };
    let target = AdminTarget::Url(format!("http://{addr}/").parse().unwrap());
    let viewer = AdminClient::new(&target, Some("read-secret".into())).unwrap();
    let anonymous = AdminClient::new(&target, None).unwrap();
    gw.client = AdminClient::new(&target, Some("write-secret".into())).unwrap();
    let before = gw.state().await;
    let calls = [
        (
            Method::POST,
            RELATIONSHIPS.to_owned(),
            Some(unreachable_web("new.test")),
        ),
        (
            Method::PUT,
            format!("{RELATIONSHIPS}/new.test"),
            Some(unreachable_web("new.test")),
        ),
        (Method::DELETE, format!("{RELATIONSHIPS}/conf.test"), None),
    ];
    for (method, path, body) in calls {
        let (status, code, _) = api_error(
            viewer
                .call(method.clone(), &path, body.clone().map(Body::Json))
                .await,
        );
        assert_eq!(
            (status, code.as_str()),
            (403, "permission_denied"),
            "{method} {path}"
        );
        let (status, _, _) = api_error(
            anonymous
                .call(method.clone(), &path, body.map(Body::Json))
                .await,
        );
        assert_eq!(status, 401, "{method} {path} without a token");
    }
    assert_eq!(
        viewer
            .call(Method::GET, RELATIONSHIPS, None)
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(gw.state().await, before);
    gw.stop().await;
}

/// SPF-9, SEC-5: every relationship shows its trust chain: the trust domains whose
/// bundles authenticate its endpoint, followed through `https_spiffe` endpoint IDs,
/// its depth and end, and a cycle; a chain deeper than `policy.max_trust_chain_depth`
/// (here 1) or a cycle is a warning in the view.
#[tokio::test]
async fn spf_9_sec_5_relationships_show_their_trust_chain_and_warn() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gw::start(dir.path(), "[policy]\nmax_trust_chain_depth = 1\n").await;
    for body in [
        spiffe("a.test", "b.test"),
        spiffe("b.test", "c.test"),
        unreachable_web("c.test"),
        spiffe("x.test", "y.test"),
        spiffe("y.test", "x.test"),
        spiffe("l.test", "home.test"),
    ] {
        gw.create(body).await.unwrap();
    }
    let a = gw.show("a.test").await.unwrap().json.unwrap();
    assert_eq!(a["depends_on"], json!(["b.test", "c.test"]));
    assert_eq!(
        (&a["chain_depth"], &a["chain_end"], &a["cycle"]),
        (&json!(2), &json!("web_pki"), &json!(false))
    );
    let warnings = a["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("max_trust_chain_depth (1)"),
        "{warnings:?}"
    );
    let b = gw.show("b.test").await.unwrap().json.unwrap();
    assert_eq!(
        (&b["depends_on"], &b["warnings"]),
        (&json!(["c.test"]), &json!([]))
    );
    let x = gw.show("x.test").await.unwrap().json.unwrap();
    assert_eq!(
        (&x["cycle"], &x["chain_end"]),
        (&json!(true), &json!("cycle"))
    );
    assert!(x["warnings"][0].as_str().unwrap().contains("cycle"), "{x}");
    let l = gw.show("l.test").await.unwrap().json.unwrap();
    assert_eq!(
        (&l["depends_on"], &l["chain_end"]),
        (&json!(["home.test"]), &json!("local"))
    );
    // The list shows the same chains.
    let listed = gw.list().await;
    let listed_a = listed
        .iter()
        .find(|r| r["trust_domain"] == "a.test")
        .unwrap();
    assert_eq!(listed_a["depends_on"], a["depends_on"]);
    gw.stop().await;
}

/// Relationships created through the API are kept across a restart and polled again;
/// when the configuration later names the same trust domain, the configuration's
/// wins (the API cannot delete it) and the stored one is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fed_4_api_relationships_survive_a_restart_and_the_configuration_wins_a_clash() {
    let dir: TempDir = tempfile::tempdir().unwrap();
    let fix = Fixture::start("fix.test").await;
    let gw = Gw::start(dir.path(), "").await;
    gw.create(fix.body()).await.unwrap();
    gw.create(unreachable_web("clash.test")).await.unwrap();
    fix.polled(0, 1).await;
    gw.stop().await;

    let clash = "[[federation]]\ntrust_domain = \"clash.test\"\nurl = \"https://127.0.0.1:2/\"\nprofile = \"https_web\"\n";
    let gw = Gw::start(dir.path(), clash).await;
    let polls = fix.server.requests();
    fix.polled(polls, 2).await;
    let origins: Vec<(Value, Value)> = gw
        .list()
        .await
        .iter()
        .map(|r| (r["trust_domain"].clone(), r["origin"].clone()))
        .collect();
    assert_eq!(
        origins,
        [
            (json!("conf.test"), json!("configuration")),
            (json!("clash.test"), json!("configuration")),
            (json!("fix.test"), json!("api")),
        ]
    );
    let clash_view = gw.show("clash.test").await.unwrap().json.unwrap();
    assert_eq!(clash_view["urls"], json!(["https://127.0.0.1:2/"]));
    assert_refused(
        gw.call(Method::DELETE, &format!("{RELATIONSHIPS}/clash.test"), None)
            .await,
        409,
        "managed_in_configuration",
        "federation[1]",
    );
    assert_eq!(gw.state().await.stored.len(), 2, "the shadowed one is kept");
    gw.stop().await;
}

/// The CLI verbs speak these routes: create from flags (files read and sent inline),
/// update from a `--data` body, list and show with origin and chain, delete.
#[tokio::test]
async fn fed_4_cli_verbs_create_update_show_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gw::start(dir.path(), "").await;
    let anchor = dir.path().join("anchor.json");
    let mut anchor_bundle = Bundle::new(name("anchor.test"));
    anchor_bundle.add_x509_authority(TestCa::spiffe("anchor.test").authority());
    let anchor_document = String::from_utf8(anchor_bundle.to_json()).unwrap();
    std::fs::write(&anchor, &anchor_document).unwrap();
    let args = cli::RelationshipArgs {
        trust_domain: name("new.test"),
        urls: vec!["https://127.0.0.1:1/".parse().unwrap()],
        profile: ProfileName::HttpsSpiffe,
        endpoint_spiffe_id: Some("spiffe://anchor.test/ep".parse().unwrap()),
        bootstrap_bundle: Some(anchor),
        bootstrap_format: Some(DocumentFormat::Spiffe),
        extra_ca_roots: None,
        follow_redirects: true,
        proxy: Some(ProxySetting::Off),
        allow_revocation: false,
    };
    let out = cli::federation_create(&gw.client, &cli::RelationshipBody::Args(args), false)
        .await
        .unwrap();
    let cli::Output::Text(text) = out else {
        panic!("text output");
    };
    assert!(text.starts_with("created: new.test\n"), "{text}");
    for line in [
        "origin: api",
        "profile: https_spiffe",
        "trust chain: anchor.test (depth 1, ends bootstrap)",
    ] {
        assert!(text.contains(line), "{line:?} not in {text}");
    }
    let stored = gw.state().await.stored;
    assert_eq!(
        stored[0].relationship.bootstrap_bundle.as_deref(),
        Some(anchor_document.as_str()),
        "the file's content is sent inline"
    );

    let data = cli::RelationshipBody::Data(unreachable_web("new.test"));
    let cli::Output::Json(view) = cli::federation_update(&gw.client, &data, true)
        .await
        .unwrap()
    else {
        panic!("JSON output");
    };
    assert_eq!(
        (&view["profile"], &view["chain_end"]),
        (&json!("https_web"), &json!("web_pki"))
    );
    let cli::Output::Text(list) = cli::federation_list(&gw.client, false).await.unwrap() else {
        panic!("text output");
    };
    assert!(list.starts_with("TRUST DOMAIN  ORIGIN"), "{list}");
    assert!(list.contains("new.test") && list.contains("api"), "{list}");
    let err = cli::federation_delete(&gw.client, &name("conf.test"), false, false)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, cli::CliError::Client(ClientError::Api { status: 409, code, .. }) if code == "managed_in_configuration"),
        "{err}"
    );
    cli::federation_delete(&gw.client, &name("new.test"), false, false)
        .await
        .unwrap();
    assert_refused(gw.show("new.test").await, 404, "not_found", "new.test");
    gw.stop().await;
}
