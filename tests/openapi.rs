//! The OpenAPI document (`docs/openapi.json`, served at `GET /v1/openapi.json`)
//! against what it describes, with nothing read from the source text:
//!
//! - Routes: the document's operations (path, method, `x-fedgw-scope`) are exactly the
//!   table the router is built from, `fedgw::admin::ROUTES`.
//! - A real gateway (`fedgw::app::start`: real store, registry and pollers, its TCP
//!   admin listener with a read and a write token): on every documented path, the
//!   methods it answers (anything but `405 method_not_allowed`) are exactly the
//!   documented ones, and every answer has a status the operation documents, a
//!   documented content type and, as JSON, a body that validates against the
//!   documented schema (JSON Schema 2020-12, formats checked).
//! - Scopes: each operation's `x-fedgw-scope` is what the gateway enforces: `none`
//!   answers without a token, `read` refuses no token (401) but not a read token,
//!   `write` refuses a read token (403).
//! - Types: each component schema is the type of the API contract
//!   (`fedgw::admin::api`) it names: its properties are the type's fields both ways,
//!   its `required` members are those an answer always carries (or that a request
//!   cannot leave out), `additionalProperties: false` where a request type refuses
//!   unknown members, and values of the type validate against it. Enumerations list
//!   exactly the Rust enums' values; query parameters are the query types' fields.
//! - Answers: a gateway driven through every operation's success answers with bodies
//!   that validate against the document and read back into the contract's type byte
//!   for byte.
//! - Error codes: the `ErrorCode` schema is `api::ErrorCode::ALL`, which is also the
//!   set of codes in the error tables of `docs/admin-api.md`.
//! - The served document is byte for byte the committed file.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use fedgw::admin::api::{
    self, BundleEntry, BundleList, BundleQuery, ChainEnd, Change, ChangeOutcome, DeleteQuery,
    DomainState, ErrorCode, ErrorResponse, FetchStatus, History, HistoryEntry, JwtSvid, LastError,
    Origin, RefreshOutcome, RefreshReport, Relationship, RelationshipList, RelationshipSpec, Role,
    Status, StatusDomain, StoreBackend, StoreCondition, StoreState, TaskRecord, TrustChain,
    WaitingListener, Warning, WatchQuery,
};
use fedgw::admin::listen::BoundAddr;
use fedgw::admin::{self, ROUTES};
use fedgw::app::Config;
use fedgw::app::Running;
use fedgw::config::{DocumentFormat, ProfileName, Scope};
use fedgw::digest::sha256_hex;
use fedgw::shutdown::Ended;
use fedgw_testkit::{Answer, BundleServer, DEADLINE, TestCa, wait_for};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use spiffe_federation::bundle::{EcCurve, JwtAuthority, PublicKey};
use spiffe_federation::endpoint::ProxySetting;
use spiffe_federation::{Bundle, TrustDomain};
use tempfile::TempDir;
use time::OffsetDateTime;

const WRITE_TOKEN: &str = "write-secret";
const READ_TOKEN: &str = "read-secret";

/// Every method a route could be registered for; HEAD is left out (axum answers it
/// wherever GET is registered, and OpenAPI does not list it separately).
const METHODS: [&str; 7] = ["GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS", "TRACE"];

/// The trust domain put into `{td}` by the sweeps: one the gateway knows nothing of.
const NOBODY: &str = "nobody.test";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn committed() -> Value {
    let text = std::fs::read_to_string(repo().join("docs/openapi.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn concrete(path: &str, td: &str) -> String {
    path.replace("{td}", td)
}

// ---- The document ---------------------------------------------------------------

/// The committed document and what is read out of it.
struct Doc {
    doc: Value,
}

impl Doc {
    fn load() -> Self {
        Self { doc: committed() }
    }

    /// `(METHOD, path)` → operation, for every operation.
    fn operations(&self) -> BTreeMap<(String, String), &Value> {
        let mut found = BTreeMap::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for (key, operation) in item.as_object().unwrap() {
                if key == "parameters" {
                    continue;
                }
                found.insert((key.to_uppercase(), path.clone()), operation);
            }
        }
        found
    }

    fn paths(&self) -> BTreeSet<String> {
        self.doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }

    fn operation(&self, method: &str, path: &str) -> Option<&Value> {
        self.doc["paths"].get(path)?.get(method.to_lowercase())
    }

    /// The response object of `operation` for `status`, a `$ref` followed.
    fn response<'a>(&'a self, operation: &'a Value, status: u16) -> Option<&'a Value> {
        let response = operation["responses"].get(status.to_string())?;
        match response.get("$ref").and_then(Value::as_str) {
            Some(reference) => self.resolve(reference),
            None => Some(response),
        }
    }

    fn resolve(&self, reference: &str) -> Option<&Value> {
        self.doc.pointer(reference.strip_prefix('#')?)
    }

    fn schema(&self, name: &str) -> &Value {
        self.doc["components"]["schemas"]
            .get(name)
            .unwrap_or_else(|| panic!("no component schema {name}"))
    }

    fn schema_names(&self) -> BTreeSet<String> {
        self.doc["components"]["schemas"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }

    /// Validate `instance` against `schema`, whose `$ref`s point into this document.
    fn validate(&self, schema: &Value, instance: &Value) -> Result<(), String> {
        let wrapped = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.doc["components"],
            "allOf": [schema],
        });
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&wrapped)
            .map_err(|err| format!("the schema does not compile: {err}"))?;
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|err| format!("{err} (at {})", err.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    fn validate_named(&self, name: &str, instance: &Value) -> Result<(), String> {
        self.validate(
            &json!({ "$ref": format!("#/components/schemas/{name}") }),
            instance,
        )
    }

    /// Check `reply` to `method path` (a documented path): its status is documented,
    /// its content type is one documented for that status (no body where none is),
    /// and a JSON body validates against the documented schema, a text body equals a
    /// documented `const`. A 405 has no operation: it is checked as an `Error`.
    fn check(&self, method: &str, path: &str, reply: &Reply) -> Result<(), String> {
        let Some(operation) = self.operation(method, path) else {
            if reply.status == 405 {
                return match &reply.json {
                    Some(json) => self.validate_named("Error", json),
                    None => Err(format!("405 without a JSON body: {reply:?}")),
                };
            }
            return Err(format!("not documented, answered {reply:?}"));
        };
        let response = self
            .response(operation, reply.status)
            .ok_or_else(|| format!("status {} is not documented ({reply:?})", reply.status))?;
        let Some(content) = response.get("content") else {
            return if reply.body.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} is documented without a body: {reply:?}",
                    reply.status
                ))
            };
        };
        let essence = reply.content_type.split(';').next().unwrap_or("").trim();
        let media = content.get(essence).ok_or_else(|| {
            format!(
                "content type {:?} is not documented for {}",
                reply.content_type, reply.status
            )
        })?;
        let schema = &media["schema"];
        if essence == "application/json" {
            let json = reply
                .json
                .as_ref()
                .ok_or_else(|| format!("not JSON: {reply:?}"))?;
            return self.validate(schema, json);
        }
        if let Some(constant) = schema.get("const").and_then(Value::as_str)
            && reply.body != constant.as_bytes()
        {
            return Err(format!("the body is not {constant:?}: {reply:?}"));
        }
        Ok(())
    }
}

// ---- A gateway --------------------------------------------------------------------

/// The configuration of every gateway here: a local domain fed through the API, a
/// configured relationship with an endpoint that refuses connections, and the admin
/// API on loopback TCP with a write and a read token.
fn config_toml(data_dir: &str) -> String {
    format!(
        r#"data_dir = {data_dir:?}

[polling]
min_refresh = "1s"
default_refresh = "1s"
fetch_timeout = "2s"

[[local]]
trust_domain = "home.test"
source = {{ admin = true }}

[[federation]]
trust_domain = "conf.test"
url = "https://127.0.0.1:1/"
profile = "https_web"
proxy = "off"

[admin]
listen = "127.0.0.1:0"

[[admin.tokens]]
name = "ops"
sha256 = "{write}"
scope = "write"

[[admin.tokens]]
name = "viewer"
sha256 = "{read}"
scope = "read"
"#,
        write = sha256_hex(WRITE_TOKEN.as_bytes()),
        read = sha256_hex(READ_TOKEN.as_bytes()),
    )
}

/// A gateway started in process, and a plain HTTP client for its admin API.
struct Gw {
    _dir: TempDir,
    running: Running,
    base: String,
    http: reqwest::Client,
}

impl Gw {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data").display().to_string();
        let config = Config::from_toml(&config_toml(&data_dir)).unwrap();
        let running = fedgw::app::start(&config).await.unwrap();
        let Some(BoundAddr::Tcp(addr)) = running.admin_addr.clone() else {
            panic!("the admin API listens on TCP: {:?}", running.admin_addr)
        };
        Self {
            _dir: dir,
            running,
            base: format!("http://{addr}"),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    /// Send `method path` with `token` and an optional body (content type, bytes);
    /// the status, content type and body. The body of an event stream is not read.
    async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some((content_type, bytes)) = body {
            request = request.header("content-type", content_type).body(bytes);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = if content_type.starts_with("text/event-stream") {
            Bytes::new()
        } else {
            response.bytes().await.unwrap()
        };
        let json = if content_type.starts_with("application/json") {
            Some(serde_json::from_slice::<Value>(&body).unwrap())
        } else {
            None
        };
        Reply {
            status,
            content_type,
            body,
            json,
        }
    }

    async fn stop(self) {
        let ended = self.running.shutdown(Duration::from_secs(10)).await;
        assert_eq!(ended, Ended::Clean);
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: String,
    body: Bytes,
    json: Option<Value>,
}

impl Reply {
    fn code(&self) -> Option<&str> {
        self.json.as_ref()?["error"]["code"].as_str()
    }
}

// ---- Routes, methods, scopes ------------------------------------------------------

fn scope_name(scope: Option<Scope>) -> &'static str {
    match scope {
        None => "none",
        Some(Scope::Read) => "read",
        Some(Scope::Write) => "write",
    }
}

#[test]
fn the_routes_table_is_the_document() {
    let doc = Doc::load();
    let table: BTreeSet<(String, String, String)> = ROUTES
        .iter()
        .map(|route| {
            (
                route.verb.as_str().to_owned(),
                route.path.to_owned(),
                scope_name(route.scope).to_owned(),
            )
        })
        .collect();
    assert_eq!(table.len(), ROUTES.len(), "a route is listed twice");
    assert!(table.len() >= 19, "only {table:?}");
    let documented: BTreeSet<(String, String, String)> = doc
        .operations()
        .into_iter()
        .map(|((method, path), operation)| {
            let scope = operation["x-fedgw-scope"].as_str().unwrap_or("(missing)");
            (method, path, scope.to_owned())
        })
        .collect();
    assert_eq!(table, documented, "ROUTES vs docs/openapi.json");
    let paths: BTreeSet<String> = ROUTES.iter().map(|r| r.path.to_owned()).collect();
    assert_eq!(paths, doc.paths());
}

#[tokio::test]
async fn documented_methods_are_exactly_the_ones_answered() {
    let doc = Doc::load();
    let operations = doc.operations();
    let gw = Gw::start().await;
    for path in doc.paths() {
        let mut answered = BTreeSet::new();
        for method in METHODS {
            let reply = gw
                .send(method, &concrete(&path, NOBODY), Some(WRITE_TOKEN), None)
                .await;
            if let Some(code) = reply.code() {
                assert!(
                    ErrorCode::from_code(code).is_some(),
                    "{method} {path}: code {code} is not an api::ErrorCode"
                );
            }
            doc.check(method, &path, &reply)
                .unwrap_or_else(|err| panic!("{method} {path}: {err}"));
            if reply.status == 405 {
                assert_eq!(reply.code(), Some("method_not_allowed"), "{method} {path}");
                continue;
            }
            answered.insert(method.to_owned());
        }
        let documented: BTreeSet<String> = operations
            .keys()
            .filter(|(_, p)| *p == path)
            .map(|(m, _)| m.clone())
            .collect();
        assert_eq!(answered, documented, "methods of {path}");
    }
    // A path that is not documented gets the router's fallback.
    let reply = gw
        .send("GET", "/v1/nothing-here", Some(WRITE_TOKEN), None)
        .await;
    assert_eq!((reply.status, reply.code()), (404, Some("not_found")));
    doc.validate_named("Error", reply.json.as_ref().unwrap())
        .unwrap();
    gw.stop().await;
}

#[tokio::test]
async fn x_fedgw_scope_is_the_scope_the_server_enforces() {
    let doc = Doc::load();
    let gw = Gw::start().await;
    for ((method, path), operation) in doc.operations() {
        let scope = operation["x-fedgw-scope"].as_str();
        let url = concrete(&path, NOBODY);
        let anonymous = gw.send(&method, &url, None, None).await;
        let reader = gw.send(&method, &url, Some(READ_TOKEN), None).await;
        for reply in [&anonymous, &reader] {
            doc.check(&method, &path, reply)
                .unwrap_or_else(|err| panic!("{method} {path}: {err}"));
        }
        match scope {
            Some("none") => {
                assert_eq!(operation["security"], json!([]), "{method} {path}");
                assert!(
                    ![401, 403].contains(&anonymous.status),
                    "{method} {path}: {anonymous:?}"
                );
            }
            Some("read") => {
                assert!(operation.get("security").is_none(), "{method} {path}");
                assert_eq!(anonymous.status, 401, "{method} {path}");
                assert_eq!(anonymous.code(), Some("unauthenticated"));
                assert!(
                    ![401, 403].contains(&reader.status),
                    "{method} {path}: {reader:?}"
                );
            }
            Some("write") => {
                assert!(operation.get("security").is_none(), "{method} {path}");
                assert_eq!(anonymous.status, 401, "{method} {path}");
                assert_eq!(reader.status, 403, "{method} {path}");
                assert_eq!(reader.code(), Some("permission_denied"));
            }
            other => panic!("{method} {path}: x-fedgw-scope {other:?}"),
        }
        if scope != Some("none") {
            for status in ["401", "403"] {
                assert!(
                    operation["responses"].get(status).is_some(),
                    "{method} {path} does not document {status}"
                );
            }
        }
    }
    gw.stop().await;
}

#[tokio::test]
async fn the_served_document_is_the_committed_file() {
    let gw = Gw::start().await;
    let reply = gw
        .send("GET", "/v1/openapi.json", Some(READ_TOKEN), None)
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type, "application/json");
    let served = reply.json.unwrap();
    assert_eq!(served, committed());
    assert_eq!(served["openapi"], "3.1.0");
    assert_eq!(served["info"]["version"], env!("CARGO_PKG_VERSION"));
    let file = std::fs::read_to_string(repo().join("docs/openapi.json")).unwrap();
    assert_eq!(admin::openapi::DOCUMENT, file, "byte for byte");
    assert_eq!(&reply.body[..], file.as_bytes(), "served byte for byte");
    gw.stop().await;
}

// ---- Error codes ------------------------------------------------------------------

fn documented_error_codes(doc: &Doc) -> BTreeSet<String> {
    doc.schema("ErrorCode")["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// The codes of the error tables of `docs/admin-api.md`: `| 409 | \`code\` |` rows,
/// and the JWT-SVID refusal table (`| \`code\` | the token … |`).
fn codes_in_admin_api_md() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo().join("docs/admin-api.md")).unwrap();
    let mut codes = BTreeSet::new();
    let mut in_jwt = false;
    for line in text.lines() {
        if line.starts_with("## ") {
            in_jwt = line == "## JWT-SVID validation";
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let cell = match cells.as_slice() {
            ["", status, code, ..] if status.len() == 3 && status.parse::<u16>().is_ok() => code,
            ["", code, ..] if in_jwt => code,
            _ => continue,
        };
        if let Some(code) = cell.strip_prefix('`').and_then(|c| c.strip_suffix('`')) {
            codes.insert(code.to_owned());
        }
    }
    codes
}

#[test]
fn error_code_enum_is_the_api_codes_and_the_documented_ones() {
    let doc = Doc::load();
    let rust: BTreeSet<String> = ErrorCode::ALL
        .iter()
        .map(|code| code.as_str().to_owned())
        .collect();
    assert_eq!(rust.len(), ErrorCode::ALL.len(), "a code is listed twice");
    let enumerated = documented_error_codes(&doc);
    assert_eq!(
        enumerated, rust,
        "ErrorCode in docs/openapi.json vs api::ErrorCode"
    );
    let documented = codes_in_admin_api_md();
    assert!(documented.len() >= 30, "parsed only {documented:?}");
    assert_eq!(documented, rust, "docs/admin-api.md vs api::ErrorCode");
    // Serialised, each is its own string.
    for code in ErrorCode::ALL {
        assert_eq!(json!(code), json!(code.as_str()));
    }
}

// ---- Component schemas against the Rust types ------------------------------------

const AT: &str = "2026-01-10T12:00:00Z";

fn td(name: &str) -> TrustDomain {
    name.parse().unwrap()
}

/// A value of an answer type with every optional field set (`full`) or none
/// (`minimal`).
fn last_error(full: bool) -> LastError {
    LastError {
        at: AT.to_owned(),
        code: full.then(|| "connect".to_owned()),
        message: "connection refused".to_owned(),
    }
}

fn fetch_status(full: bool) -> FetchStatus {
    FetchStatus {
        state: DomainState::Failing,
        last_success: full.then(|| AT.to_owned()),
        last_error: full.then(|| last_error(true)),
        next_attempt: full.then(|| AT.to_owned()),
        consecutive_failures: 2,
    }
}

fn warning() -> Warning {
    Warning {
        code: "revoked".to_owned(),
        message: "the stored bundle has no authorities".to_owned(),
    }
}

fn status_domain(full: bool) -> StatusDomain {
    StatusDomain {
        trust_domain: td("b.example"),
        role: Role::Foreign,
        sequence: full.then_some(4),
        accepted_at: full.then(|| AT.to_owned()),
        age_seconds: full.then_some(60),
        soonest_expiry: full.then(|| AT.to_owned()),
        fetch: fetch_status(full),
        warnings: vec![warning()],
    }
}

fn task_record(full: bool) -> TaskRecord {
    TaskRecord {
        task: "poller b.example".to_owned(),
        code: "task_panicked".to_owned(),
        panics: 1,
        message: "index out of bounds".to_owned(),
        at: AT.to_owned(),
        restarts_at: full.then(|| AT.to_owned()),
    }
}

fn waiting_listener() -> WaitingListener {
    WaitingListener {
        listener: "https_spiffe endpoint".to_owned(),
        listen: "127.0.0.1:8443".to_owned(),
        code: "listener_waiting".to_owned(),
        reason: "no X509-SVID yet".to_owned(),
        since: AT.to_owned(),
    }
}

fn status(full: bool) -> Status {
    Status {
        revision: 3,
        domains: vec![status_domain(full)],
        tasks: vec![task_record(full)],
        waiting_listeners: vec![waiting_listener()],
        store: if full {
            StoreState {
                backend: StoreBackend::Postgres,
                state: StoreCondition::Away,
                since: Some(AT.to_owned()),
                reason: Some(
                    "database catch up: no connection to PostgreSQL: connection refused".to_owned(),
                ),
            }
        } else {
            StoreState {
                backend: StoreBackend::Sled,
                state: StoreCondition::Ok,
                since: None,
                reason: None,
            }
        },
    }
}

fn bundle_document() -> Value {
    json!({"keys": [], "spiffe_sequence": 4, "spiffe_refresh_hint": 300})
}

fn bundle_entry(full: bool) -> BundleEntry {
    BundleEntry {
        trust_domain: td("b.example"),
        role: Role::Foreign,
        sequence: full.then_some(4),
        digest: sha256_hex(bundle_document().to_string().as_bytes()),
        source: "operator test".to_owned(),
        accepted_at: AT.to_owned(),
        authorities: 0,
        revision: 3,
        warnings: vec![warning()],
        bundle: bundle_document(),
    }
}

fn bundle_list(full: bool) -> BundleList {
    BundleList {
        revision: 3,
        bundles: vec![bundle_entry(full)],
    }
}

fn ignored() -> api::Ignored {
    api::Ignored {
        location: "keys[1]".to_owned(),
        reason: "unknown use".to_owned(),
    }
}

fn change() -> Change {
    Change {
        outcome: ChangeOutcome::Accepted,
        revision: 3,
        warnings: vec!["keys[0]: x5c has two certificates".to_owned()],
        ignored: vec![ignored()],
    }
}

fn history_entry(full: bool) -> HistoryEntry {
    HistoryEntry {
        revision: 3,
        sequence: full.then_some(4),
        digest: sha256_hex(b"document"),
        source: "operator test".to_owned(),
        accepted_at: AT.to_owned(),
    }
}

fn relationship(full: bool) -> Relationship {
    Relationship {
        trust_domain: td("b.example"),
        origin: Origin::Api,
        urls: vec!["https://b.example/bundle".parse().unwrap()],
        profile: ProfileName::HttpsSpiffe,
        endpoint_spiffe_id: full.then(|| "spiffe://b.example/bundle-endpoint".parse().unwrap()),
        follow_redirects: true,
        proxy: ProxySetting::Off,
        allow_revocation: false,
        chain: TrustChain {
            depends_on: vec![td("c.example")],
            chain_depth: 1,
            chain_end: ChainEnd::Static,
            cycle: false,
        },
        warnings: vec!["no bundle of c.example is stored".to_owned()],
        status: fetch_status(full),
    }
}

fn refresh_report(full: bool) -> RefreshReport {
    RefreshReport {
        error: full.then(|| "connection refused".to_owned()),
        error_code: full.then(|| "connect".to_owned()),
        final_url: full.then(|| "https://b.example/bundle".to_owned()),
        next_attempt: full.then(|| AT.to_owned()),
        outcome: RefreshOutcome::Failed,
        peer: full.then(|| "b.example".to_owned()),
        revision: full.then_some(3),
        sequence: full.then_some(4),
        trust_domain: td("b.example"),
    }
}

fn jwt_svid() -> JwtSvid {
    JwtSvid {
        spiffe_id: "spiffe://b.example/workload".parse().unwrap(),
        trust_domain: td("b.example"),
        key_id: "k1".to_owned(),
        algorithm: "ES256".to_owned(),
        expires_at: AT.to_owned(),
        claims: json!({"sub": "spiffe://b.example/workload", "aud": "reports", "exp": 1})
            .as_object()
            .unwrap()
            .clone(),
    }
}

fn error_response() -> ErrorResponse {
    ErrorResponse {
        error: api::ApiErrorBody {
            code: ErrorCode::NotFound.as_str().to_owned(),
            message: "no bundle stored for b.example".to_owned(),
        },
    }
}

/// Every answer schema: its name, a value with every optional field set, and one
/// with none.
fn answer_types() -> Vec<(&'static str, Value, Value)> {
    fn both<T: Serialize>(
        name: &'static str,
        full: &T,
        minimal: &T,
    ) -> (&'static str, Value, Value) {
        (name, json!(full), json!(minimal))
    }
    vec![
        both("Error", &error_response(), &error_response()),
        both(
            "ErrorBody",
            &error_response().error,
            &error_response().error,
        ),
        both("Warning", &warning(), &warning()),
        both("LastError", &last_error(true), &last_error(false)),
        both("FetchStatus", &fetch_status(true), &fetch_status(false)),
        both("StatusDomain", &status_domain(true), &status_domain(false)),
        both("Status", &status(true), &status(false)),
        both("TaskRecord", &task_record(true), &task_record(false)),
        both("WaitingListener", &waiting_listener(), &waiting_listener()),
        both("StoreState", &status(true).store, &status(false).store),
        both("BundleEntry", &bundle_entry(true), &bundle_entry(false)),
        both("BundleList", &bundle_list(true), &bundle_list(false)),
        both("Change", &change(), &change()),
        both("Ignored", &ignored(), &ignored()),
        both(
            "History",
            &History {
                history: vec![history_entry(true)],
            },
            &History {
                history: vec![history_entry(false)],
            },
        ),
        both("HistoryEntry", &history_entry(true), &history_entry(false)),
        both("Relationship", &relationship(true), &relationship(false)),
        both(
            "RelationshipList",
            &RelationshipList {
                relationships: vec![relationship(true)],
            },
            &RelationshipList {
                relationships: vec![relationship(false)],
            },
        ),
        both(
            "RefreshReport",
            &refresh_report(true),
            &refresh_report(false),
        ),
        both("JwtSvid", &jwt_svid(), &jwt_svid()),
    ]
}

/// Reads a request body as the handler does.
type Reader = fn(Value) -> Result<Value, String>;

fn reader<T: DeserializeOwned + Serialize>(value: Value) -> Result<Value, String> {
    let read: T = serde_json::from_value(value).map_err(|err| err.to_string())?;
    Ok(json!(read))
}

/// Every request schema: its name, a body with every member, and its reader.
fn request_types() -> Vec<(&'static str, Value, Reader)> {
    vec![
        (
            "Rollback",
            json!({"revision": 3}),
            reader::<api::RollbackRequest>,
        ),
        (
            "JwtValidateRequest",
            json!({"token": "aGVhZGVy.Y2xhaW1z.c2ln", "audience": "reports"}),
            reader::<api::JwtValidateRequest>,
        ),
        (
            "RelationshipSpec",
            json!({
                "trust_domain": "b.example",
                "url": "https://b.example/bundle",
                "urls": ["https://b.example/bundle", "https://mirror.example/bundle"],
                "profile": "https_spiffe",
                "endpoint_spiffe_id": "spiffe://b.example/bundle-endpoint",
                "bootstrap_bundle": "{\"keys\": []}",
                "bootstrap_format": "spiffe",
                "extra_ca_roots_pem": "-----BEGIN CERTIFICATE-----\n",
                "follow_redirects": false,
                "proxy": "off",
                "allow_revocation": true,
            }),
            reader::<RelationshipSpec>,
        ),
    ]
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect()
}

fn properties(schema: &Value) -> BTreeSet<String> {
    schema["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

fn required(schema: &Value) -> BTreeSet<String> {
    schema["required"]
        .as_array()
        .map(|r| r.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// Schemas with no type of their own: enumerations (checked against the Rust enums
/// below) and documents the API passes through (the SPIFFE bundle document, checked
/// against real documents, and the framing of an event, checked against a real one).
const NOT_TYPES: [&str; 6] = [
    "ErrorCode",
    "Role",
    "DomainState",
    "ChainEnd",
    "SpiffeBundle",
    "BundlesEvent",
];

#[test]
fn every_component_schema_is_its_rust_type() {
    let doc = Doc::load();
    let mut failures = Vec::new();
    let mut covered: BTreeSet<String> = NOT_TYPES.iter().map(|n| (*n).to_owned()).collect();
    for (name, full, minimal) in answer_types() {
        covered.insert(name.to_owned());
        let schema = doc.schema(name);
        for value in [&full, &minimal] {
            if let Err(err) = doc.validate_named(name, value) {
                failures.push(format!(
                    "{name}: a value of the type does not validate: {err}"
                ));
            }
        }
        let (fields, documented) = (keys(&full), properties(schema));
        if fields != documented {
            failures.push(format!(
                "{name}: fields not documented {:?}, documented but not fields {:?}",
                fields.difference(&documented).collect::<Vec<_>>(),
                documented.difference(&fields).collect::<Vec<_>>(),
            ));
        }
        // An answer always carries the members that are not skipped when empty.
        let (always, listed) = (keys(&minimal), required(schema));
        if always != listed {
            failures.push(format!(
                "{name}: always sent {always:?}, but required lists {listed:?}"
            ));
        }
    }
    for (name, full, read) in request_types() {
        covered.insert(name.to_owned());
        let schema = doc.schema(name);
        if let Err(err) = doc.validate_named(name, &full) {
            failures.push(format!("{name}: a full body does not validate: {err}"));
        }
        // Every member, as sent and as read back (a new field with a default shows
        // here even if `full` does not send it).
        let read_back = read(full.clone()).unwrap_or_else(|err| panic!("{name}: {err}"));
        let mut fields = keys(&full);
        fields.extend(keys(&read_back));
        let documented = properties(schema);
        if fields != documented {
            failures.push(format!(
                "{name}: fields not documented {:?}, documented but not fields {:?}",
                fields.difference(&documented).collect::<Vec<_>>(),
                documented.difference(&fields).collect::<Vec<_>>(),
            ));
        }
        // Required: the members a body cannot leave out.
        let cannot_leave_out: BTreeSet<String> = keys(&full)
            .into_iter()
            .filter(|member| {
                let mut without = full.clone();
                without.as_object_mut().unwrap().remove(member);
                read(without).is_err()
            })
            .collect();
        if cannot_leave_out != required(schema) {
            failures.push(format!(
                "{name}: a body cannot leave out {cannot_leave_out:?}, but required lists {:?}",
                required(schema)
            ));
        }
        let mut unknown = full.clone();
        unknown["not_a_member"] = json!(1);
        let refused = read(unknown).is_err();
        let closed = schema["additionalProperties"] == json!(false);
        if refused != closed {
            failures.push(format!(
                "{name}: unknown members refused: {refused}, additionalProperties false: {closed}"
            ));
        }
    }
    let all = doc.schema_names();
    if covered != all {
        failures.push(format!(
            "schemas with no type here {:?}, types with no schema {:?}",
            all.difference(&covered).collect::<Vec<_>>(),
            covered.difference(&all).collect::<Vec<_>>(),
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every value of each enumeration of the contract; a `match` makes a new variant a
/// compile error here.
fn enumerations() -> Vec<(&'static str, Vec<Value>)> {
    let roles = [Role::Local, Role::Foreign];
    for role in roles {
        match role {
            Role::Local | Role::Foreign => {}
        }
    }
    let states = [
        DomainState::Serving,
        DomainState::Missing,
        DomainState::AwaitingBootstrap,
        DomainState::Failing,
        DomainState::Pending,
        DomainState::Revoked,
        DomainState::Stale,
        DomainState::Healthy,
        DomainState::Unmanaged,
    ];
    for state in states {
        match state {
            DomainState::Serving
            | DomainState::Missing
            | DomainState::AwaitingBootstrap
            | DomainState::Failing
            | DomainState::Pending
            | DomainState::Revoked
            | DomainState::Stale
            | DomainState::Healthy
            | DomainState::Unmanaged => {}
        }
    }
    let ends = [
        ChainEnd::WebPki,
        ChainEnd::SelfServing,
        ChainEnd::Local,
        ChainEnd::Bootstrap,
        ChainEnd::Static,
        ChainEnd::Cycle,
    ];
    for end in ends {
        match end {
            ChainEnd::WebPki
            | ChainEnd::SelfServing
            | ChainEnd::Local
            | ChainEnd::Bootstrap
            | ChainEnd::Static
            | ChainEnd::Cycle => {}
        }
    }
    let changes = [ChangeOutcome::Accepted, ChangeOutcome::Unchanged];
    for change in changes {
        match change {
            ChangeOutcome::Accepted | ChangeOutcome::Unchanged => {}
        }
    }
    let origins = [Origin::Configuration, Origin::Api, Origin::Kubernetes];
    for origin in origins {
        match origin {
            Origin::Configuration | Origin::Api | Origin::Kubernetes => {}
        }
    }
    let refreshes = [
        RefreshOutcome::Accepted,
        RefreshOutcome::Unchanged,
        RefreshOutcome::Rejected,
        RefreshOutcome::Failed,
        RefreshOutcome::AwaitingBootstrap,
    ];
    for refresh in refreshes {
        match refresh {
            RefreshOutcome::Accepted
            | RefreshOutcome::Unchanged
            | RefreshOutcome::Rejected
            | RefreshOutcome::Failed
            | RefreshOutcome::AwaitingBootstrap => {}
        }
    }
    let profiles = [ProfileName::HttpsWeb, ProfileName::HttpsSpiffe];
    for profile in profiles {
        match profile {
            ProfileName::HttpsWeb | ProfileName::HttpsSpiffe => {}
        }
    }
    let formats = [DocumentFormat::Spiffe, DocumentFormat::Pem];
    for format in formats {
        match format {
            DocumentFormat::Spiffe | DocumentFormat::Pem => {}
        }
    }
    fn values<T: Serialize>(all: &[T]) -> Vec<Value> {
        all.iter().map(|v| json!(v)).collect()
    }
    vec![
        ("/components/schemas/ErrorCode", values(ErrorCode::ALL)),
        ("/components/schemas/Role", values(&roles)),
        ("/components/schemas/DomainState", values(&states)),
        ("/components/schemas/ChainEnd", values(&ends)),
        (
            "/components/schemas/Change/properties/outcome",
            values(&changes),
        ),
        (
            "/components/schemas/Relationship/properties/origin",
            values(&origins),
        ),
        (
            "/components/schemas/RefreshReport/properties/outcome",
            values(&refreshes),
        ),
        (
            "/components/schemas/Relationship/properties/profile",
            values(&profiles),
        ),
        (
            "/components/schemas/RelationshipSpec/properties/profile",
            values(&profiles),
        ),
        (
            "/components/schemas/RelationshipSpec/properties/bootstrap_format",
            values(&formats),
        ),
    ]
}

#[test]
fn enumerations_are_the_rust_enums() {
    let doc = Doc::load();
    for (pointer, rust) in enumerations() {
        let documented: BTreeSet<String> = doc
            .doc
            .pointer(pointer)
            .and_then(|schema| schema["enum"].as_array())
            .unwrap_or_else(|| panic!("{pointer} has no enum"))
            .iter()
            .map(Value::to_string)
            .collect();
        let rust: BTreeSet<String> = rust.iter().map(Value::to_string).collect();
        assert_eq!(documented, rust, "{pointer}");
    }
}

#[test]
fn query_parameters_are_the_query_types() {
    let doc = Doc::load();
    let types: BTreeMap<(&str, &str), Value> = BTreeMap::from([
        (
            ("GET", "/v1/bundles"),
            json!(WatchQuery {
                wait: Some(3),
                timeout: Some("30s".to_owned()),
            }),
        ),
        (
            ("GET", "/v1/bundles/{td}"),
            json!(BundleQuery {
                format: Some("pem".to_owned()),
            }),
        ),
        (
            ("DELETE", "/v1/federation-relationships/{td}"),
            json!(DeleteQuery { force: true }),
        ),
    ]);
    let mut with_query = BTreeSet::new();
    for ((method, path), operation) in doc.operations() {
        let parameters: Vec<&Value> = operation["parameters"]
            .as_array()
            .map(|p| p.iter().filter(|p| p["in"] == "query").collect())
            .unwrap_or_default();
        if parameters.is_empty() {
            continue;
        }
        let key = (method.as_str(), path.as_str());
        let value = types
            .iter()
            .find(|(k, _)| **k == key)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("{method} {path}: query parameters with no type here"));
        with_query.insert((method.clone(), path.clone()));
        let mut names = BTreeSet::new();
        for parameter in parameters {
            let schema = &parameter["schema"];
            // A form-style, exploded object parameter is its properties.
            if schema["type"] == "object" && parameter["explode"] == json!(true) {
                names.extend(properties(schema));
                doc.validate(schema, value)
                    .unwrap_or_else(|err| panic!("{method} {path}: {err}"));
            } else {
                let name = parameter["name"].as_str().unwrap();
                names.insert(name.to_owned());
                doc.validate(schema, &value[name])
                    .unwrap_or_else(|err| panic!("{method} {path} {name}: {err}"));
            }
        }
        assert_eq!(names, keys(value), "{method} {path}: query parameters");
    }
    let typed: BTreeSet<(String, String)> = types
        .keys()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(with_query, typed, "operations with a query type");
}

// ---- A gateway's answers ----------------------------------------------------------

/// An EC P-256 JWT-SVID signing key and its public half as a JWT authority.
struct JwtKey {
    kid: &'static str,
    encoding: jsonwebtoken::EncodingKey,
    authority: JwtAuthority,
}

impl JwtKey {
    fn new(kid: &'static str) -> Self {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        // The raw public key is the uncompressed point 0x04 || x || y.
        let point = key.public_key_raw();
        let public = PublicKey::Ec {
            curve: EcCurve::P256,
            x: point[1..33].to_vec(),
            y: point[33..].to_vec(),
        };
        Self {
            kid,
            encoding: jsonwebtoken::EncodingKey::from_ec_der(&key.serialize_der()),
            authority: JwtAuthority::new(kid, public).unwrap(),
        }
    }

    fn token(&self, sub: &str, aud: &str) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.to_owned());
        let exp = OffsetDateTime::now_utc().unix_timestamp() + 300;
        let claims = json!({"sub": sub, "aud": aud, "exp": exp});
        jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap()
    }
}

/// Calls made with the write token, each checked against the document; records which
/// documented answers were seen.
struct Driver<'a> {
    gw: &'a Gw,
    doc: &'a Doc,
    seen: BTreeSet<(String, String, u16)>,
}

impl Driver<'_> {
    /// `method template` (with `{td}` = `td`, and `query`) answers `status`, as the
    /// document says; the reply.
    async fn call(
        &mut self,
        method: &str,
        template: &str,
        td: &str,
        query: &str,
        body: Option<(&str, Vec<u8>)>,
        status: u16,
    ) -> Reply {
        let path = format!("{}{query}", concrete(template, td));
        let reply = self.gw.send(method, &path, Some(WRITE_TOKEN), body).await;
        assert_eq!(reply.status, status, "{method} {path}: {reply:?}");
        self.doc
            .check(method, template, &reply)
            .unwrap_or_else(|err| panic!("{method} {path}: {err}"));
        self.seen
            .insert((method.to_owned(), template.to_owned(), status));
        reply
    }

    /// As [`Self::call`] with a JSON body or none, read as `T` of the contract: it
    /// must read back into the same bytes.
    async fn typed<T: DeserializeOwned + Serialize>(
        &mut self,
        method: &str,
        template: &str,
        td: &str,
        body: Option<&Value>,
        status: u16,
    ) -> T {
        let body = body.map(|b| ("application/json", serde_json::to_vec(b).unwrap()));
        let reply = self.call(method, template, td, "", body, status).await;
        let read: T = serde_json::from_slice(&reply.body).unwrap_or_else(|err| {
            panic!(
                "{method} {template}: not a {}: {err}",
                std::any::type_name::<T>()
            )
        });
        assert_eq!(
            String::from_utf8(serde_json::to_vec(&read).unwrap()).unwrap(),
            String::from_utf8_lossy(&reply.body),
            "{method} {template}: the type reads back into the same bytes"
        );
        read
    }
}

/// A relationship body to a loopback endpoint serving a bundle of `td`.
async fn fixture(td_name: &str) -> (BundleServer, Value) {
    let web_ca = TestCa::web(td_name);
    let mut bundle = Bundle::new(td(td_name));
    bundle.add_x509_authority(TestCa::spiffe(td_name).authority());
    bundle.set_sequence(Some(1));
    bundle.set_refresh_hint(Some(Duration::from_secs(1)));
    let server = BundleServer::start(&web_ca, Answer::Fixed(Bytes::from(bundle.to_json()))).await;
    let body = json!({
        "trust_domain": td_name,
        "url": server.url(),
        "profile": "https_web",
        "extra_ca_roots_pem": web_ca.cert_pem,
        "proxy": "off",
    });
    (server, body)
}

#[tokio::test]
async fn a_gateways_answers_are_the_documented_schemas_and_the_api_types() {
    const BUNDLE: &str = "/v1/bundles/{td}";
    const RELATIONSHIPS: &str = "/v1/federation-relationships";
    const RELATIONSHIP: &str = "/v1/federation-relationships/{td}";
    let doc = Doc::load();
    let gw = Gw::start().await;
    let mut d = Driver {
        gw: &gw,
        doc: &doc,
        seen: BTreeSet::new(),
    };

    // Probes and text.
    let healthz = d.call("GET", "/healthz", "", "", None, 200).await;
    assert_eq!(&healthz.body[..], api::HEALTHZ.as_bytes());
    let readyz = d.call("GET", "/readyz", "", "", None, 200).await;
    assert_eq!(&readyz.body[..], api::READY.as_bytes());
    let readyz_doc = doc.operation("GET", "/readyz").unwrap();
    let not_ready = &doc.response(readyz_doc, 503).unwrap()["content"]["text/plain"]["schema"];
    assert_eq!(not_ready["const"], api::NOT_READY);
    d.call("GET", "/metrics", "", "", None, 200).await;
    d.call("GET", "/v1/openapi.json", "", "", None, 200).await;

    // The configured relationship fails (nothing listens): its last error shows.
    let failing = wait_for(DEADLINE, "conf.test to fail a fetch", || async {
        let reply = gw
            .send(
                "GET",
                "/v1/federation-relationships/conf.test",
                Some(READ_TOKEN),
                None,
            )
            .await;
        let relationship: Relationship = serde_json::from_slice(&reply.body).unwrap();
        (relationship.status.consecutive_failures > 0).then_some(relationship)
    })
    .await;
    assert_eq!(failing.origin, Origin::Configuration);
    let shown: Relationship = d.typed("GET", RELATIONSHIP, "conf.test", None, 200).await;
    assert!(shown.status.last_error.is_some(), "{shown:?}");

    // A relationship created through the API, fetched from a loopback endpoint.
    let (_server, body) = fixture("west.test").await;
    let created: Relationship = d.typed("POST", RELATIONSHIPS, "", Some(&body), 201).await;
    assert_eq!(created.origin, Origin::Api);
    wait_for(DEADLINE, "west.test to be fetched", || async {
        let reply = gw
            .send("GET", "/v1/bundles/west.test", Some(READ_TOKEN), None)
            .await;
        (reply.status == 200).then_some(())
    })
    .await;
    let mut replaced = body.clone();
    replaced["follow_redirects"] = json!(false);
    let after: Relationship = d
        .typed("PUT", RELATIONSHIP, "west.test", Some(&replaced), 200)
        .await;
    assert!(!after.follow_redirects);
    let report: RefreshReport = d
        .typed(
            "POST",
            "/v1/federation-relationships/{td}/refresh",
            "west.test",
            None,
            200,
        )
        .await;
    assert_eq!(report.trust_domain, td("west.test"));
    let _list: RelationshipList = d.typed("GET", RELATIONSHIPS, "", None, 200).await;

    // Bundles: the local domain with a JWT authority, then history and rollback.
    let key = JwtKey::new("k1");
    let mut home = Bundle::new(td("home.test"));
    home.insert_jwt_authority(key.authority.clone());
    let document = home.to_json();
    let upload = Some(("application/json", document.clone()));
    let put = d.call("PUT", BUNDLE, "home.test", "", upload, 200).await;
    let change: Change = serde_json::from_slice(&put.body).unwrap();
    assert_eq!(change.outcome, ChangeOutcome::Accepted);
    let shown = d.call("GET", BUNDLE, "home.test", "", None, 200).await;
    doc.validate_named("SpiffeBundle", shown.json.as_ref().unwrap())
        .unwrap();
    let pem = d
        .call("GET", BUNDLE, "home.test", "?format=pem", None, 200)
        .await;
    assert!(
        pem.content_type.starts_with("application/x-pem-file"),
        "{pem:?}"
    );
    let history: History = d
        .typed("GET", "/v1/bundles/{td}/history", "home.test", None, 200)
        .await;
    let first = history.history.last().unwrap().revision;
    let _rolled: Change = d
        .typed(
            "POST",
            "/v1/bundles/{td}/rollback",
            "home.test",
            Some(&json!({"revision": first})),
            200,
        )
        .await;
    // An operator's revocation: a stored bundle with no authorities, warned about.
    let empty = Some(("application/json", br#"{"keys": []}"#.to_vec()));
    d.call("PUT", BUNDLE, "gone.test", "", empty, 200).await;

    // The state: status and the watch API.
    let status: Status = d.typed("GET", "/v1/status", "", None, 200).await;
    let gone = status
        .domains
        .iter()
        .find(|domain| domain.trust_domain == td("gone.test"))
        .unwrap();
    assert_eq!(gone.warnings[0].code, "revoked");
    let list: BundleList = d.typed("GET", "/v1/bundles", "", None, 200).await;
    let waited = d
        .call(
            "GET",
            "/v1/bundles",
            "",
            &format!("?wait={}&timeout=1s", list.revision),
            None,
            200,
        )
        .await;
    let waited: BundleList = serde_json::from_slice(&waited.body).unwrap();
    assert_eq!(waited, list);
    let event = first_event(&gw).await;
    doc.validate_named("BundlesEvent", &event).unwrap();
    let data: Value = serde_json::from_str(event["data"].as_str().unwrap()).unwrap();
    doc.validate_named("BundleList", &data).unwrap();
    assert_eq!(serde_json::from_value::<BundleList>(data).unwrap(), list);
    d.seen
        .insert(("GET".to_owned(), "/v1/events".to_owned(), 200));

    // JWT-SVID validation: valid, and refused.
    let request = json!(api::JwtValidateRequest {
        token: key.token("spiffe://home.test/workload", "reports"),
        audience: "reports".to_owned(),
    });
    let svid: JwtSvid = d
        .typed("POST", "/v1/jwt-svid/validate", "", Some(&request), 200)
        .await;
    assert_eq!(svid.key_id, "k1");
    let mut wrong = request.clone();
    wrong["audience"] = json!("billing");
    let refused: ErrorResponse = d
        .typed("POST", "/v1/jwt-svid/validate", "", Some(&wrong), 422)
        .await;
    assert_eq!(refused.error.code, ErrorCode::AudienceMismatch.as_str());

    // Deletions.
    d.call("DELETE", RELATIONSHIP, "west.test", "", None, 204)
        .await;
    d.call("DELETE", BUNDLE, "gone.test", "", None, 204).await;

    // Every documented success was seen.
    let mut missing = Vec::new();
    for ((method, path), operation) in doc.operations() {
        for status in operation["responses"].as_object().unwrap().keys() {
            let status: u16 = status.parse().unwrap();
            if (200..300).contains(&status)
                && !d.seen.contains(&(method.clone(), path.clone(), status))
            {
                missing.push(format!("{method} {path} {status}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "documented answers not exercised: {missing:?}"
    );
    gw.stop().await;
}

/// The first event of `GET /v1/events` as an object of its fields (`event`, `id`,
/// `data`).
async fn first_event(gw: &Gw) -> Value {
    let mut response = gw
        .http
        .get(format!("{}/v1/events", gw.base))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut bytes = Vec::new();
    while !bytes.windows(2).any(|w| w == b"\n\n") {
        let chunk = tokio::time::timeout(DEADLINE, response.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        bytes.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(bytes).unwrap();
    let event = text.split("\n\n").next().unwrap();
    let mut fields = serde_json::Map::new();
    for line in event.lines() {
        let (name, value) = line.split_once(": ").unwrap();
        fields.insert(name.to_owned(), json!(value));
    }
    Value::Object(fields)
}
