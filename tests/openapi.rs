//! The OpenAPI document (`docs/openapi.json`, served at `GET /v1/openapi.json`) against
//! the admin router it describes: a real trust store, the real TCP listener with
//! bearer tokens, and plain HTTP requests.
//!
//! - The paths registered in `src/admin.rs` (every `.route("…"` literal) are exactly
//!   the document's paths.
//! - On every documented path, the methods the server answers (anything but
//!   `405 method_not_allowed`) are exactly the documented ones, and every status seen
//!   is one the operation documents, with an error code of the `ErrorCode` enum.
//! - Each operation's `x-fedgw-scope` is what the server enforces: `none` answers
//!   without a token, `read` refuses no token (401) but not a read token, `write`
//!   refuses a read token (403).
//! - Every error code of `docs/admin-api.md` and every code literal the admin code
//!   builds an error with is in `ErrorCode`, and `ErrorCode` has no other.
//! - The served document is byte for byte the committed file.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use fedgw::admin::auth::Access;
use fedgw::admin::listen::{self, BoundAddr};
use fedgw::admin::{self, AdminState, RefreshRequest, RelationshipsView};
use fedgw::config::{AdminListen, AdminToken, PollingConfig, Scope};
use fedgw::digest::sha256_hex;
use fedgw::telemetry::Metrics;
use fedgw::trust::policy::PolicySettings;
use fedgw::trust::store::TrustStore;
use reqwest::Method;
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::{mpsc, watch};

const WRITE_TOKEN: &str = "write-secret";
const READ_TOKEN: &str = "read-secret";

/// Every method a route could be registered for; HEAD is left out (axum answers it
/// wherever GET is registered, and OpenAPI does not list it separately).
const METHODS: [&str; 7] = ["GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS", "TRACE"];

/// The trust domain put into `{td}`.
const TD: &str = "west.example";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn committed() -> Value {
    let text = std::fs::read_to_string(repo().join("docs/openapi.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `(path, method)` → operation, for every operation of `doc`.
fn operations(doc: &Value) -> BTreeMap<(String, String), Value> {
    let mut found = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (key, operation) in item.as_object().unwrap() {
            if key == "parameters" {
                continue;
            }
            found.insert((path.clone(), key.to_uppercase()), operation.clone());
        }
    }
    found
}

fn documented_paths(doc: &Value) -> BTreeSet<String> {
    doc["paths"].as_object().unwrap().keys().cloned().collect()
}

/// The first string literal of every `.route(` call in `source`.
fn registered_paths(source: &str) -> BTreeSet<String> {
    source
        .split(".route(")
        .skip(1)
        .map(|rest| {
            let rest = rest.trim_start();
            assert!(
                rest.starts_with('"'),
                "a route path that is not a literal: {rest:.60}"
            );
            rest[1..].split('"').next().unwrap().to_owned()
        })
        .collect()
}

struct Server {
    _dir: TempDir,
    base: String,
    http: reqwest::Client,
    shutdown: fedgw::shutdown::Shutdown,
}

impl Server {
    /// A TCP admin API with a write and a read token, no relationship registry (the
    /// relationship changes answer 503) and a poller that answers every refresh.
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = TrustStore::open(dir.path().join("db"), PolicySettings::default())
            .await
            .unwrap();
        let access = Access::Tokens(vec![
            AdminToken {
                name: "ops".into(),
                sha256: sha256_hex(WRITE_TOKEN.as_bytes()),
                scope: Scope::Write,
            },
            AdminToken {
                name: "viewer".into(),
                sha256: sha256_hex(READ_TOKEN.as_bytes()),
                scope: Scope::Read,
            },
        ]);
        let (refresh, mut requests) = mpsc::channel::<RefreshRequest>(4);
        tokio::spawn(async move {
            while let Some(request) = requests.recv().await {
                let answer = serde_json::json!({
                    "outcome": "unchanged", "trust_domain": request.trust_domain,
                });
                let _ignored = request.reply.send(Ok(answer));
            }
        });
        let (_ready_tx, ready) = watch::channel(true);
        let state = AdminState {
            trust_store: store,
            metrics: Metrics::new(),
            access: access.clone(),
            local: Vec::new(),
            relationships: RelationshipsView::new(Vec::new()),
            registry: None,
            refresh,
            ready,
            schedule: (&PollingConfig::default()).into(),
            max_document_bytes: 64 * 1024,
            watchers: fedgw::admin::watchers::Watchers::new(
                Default::default(),
                fedgw::telemetry::Metrics::new(),
                fedgw::shutdown::Shutdown::new(),
            ),
            tasks: fedgw::supervise::TaskHealth::new(),
            body_limits: Default::default(),
        };
        let listen = AdminListen::Tcp("127.0.0.1:0".parse().unwrap());
        let bound = listen::bind(&listen, &access).await.unwrap();
        let BoundAddr::Tcp(addr) = bound.local_addr().unwrap() else {
            panic!("a TCP listener has a TCP address")
        };
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
            base: format!("http://{addr}"),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            shutdown,
        }
    }

    /// Send `method path` with `token`, no body; the status, content type and, for
    /// a JSON answer, the body. The body of an event stream is not read.
    async fn send(&self, method: &str, path: &str, token: Option<&str>) -> Reply {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let json = if content_type.starts_with("application/json") {
            let bytes = response.bytes().await.unwrap();
            Some(serde_json::from_slice::<Value>(&bytes).unwrap())
        } else {
            None
        };
        Reply {
            status,
            content_type,
            json,
        }
    }

    async fn stop(self) {
        let ended = self
            .shutdown
            .shutdown(std::time::Duration::from_secs(10))
            .await;
        assert_eq!(ended, fedgw::shutdown::Ended::Clean);
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: String,
    json: Option<Value>,
}

impl Reply {
    fn code(&self) -> Option<&str> {
        self.json.as_ref()?["error"]["code"].as_str()
    }
}

fn concrete(path: &str) -> String {
    path.replace("{td}", TD)
}

fn error_codes(doc: &Value) -> BTreeSet<String> {
    doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn every_registered_route_is_documented_and_no_other() {
    let source = std::fs::read_to_string(repo().join("src/admin.rs")).unwrap();
    let registered = registered_paths(&source);
    assert!(registered.len() >= 10, "found only {registered:?}");
    assert_eq!(registered, documented_paths(&committed()));
}

#[tokio::test]
async fn documented_methods_are_exactly_the_ones_answered() {
    let doc = committed();
    let operations = operations(&doc);
    let codes = error_codes(&doc);
    let server = Server::start().await;
    for path in documented_paths(&doc) {
        let mut answered = BTreeSet::new();
        for method in METHODS {
            let reply = server
                .send(method, &concrete(&path), Some(WRITE_TOKEN))
                .await;
            if let Some(code) = reply.code() {
                assert!(
                    codes.contains(code),
                    "{method} {path}: code {code} is not in ErrorCode"
                );
            }
            if reply.status == 405 {
                assert_eq!(reply.code(), Some("method_not_allowed"), "{method} {path}");
                continue;
            }
            answered.insert(method.to_owned());
            let key = (path.clone(), method.to_owned());
            let Some(operation) = operations.get(&key) else {
                panic!("{method} {path} answers {reply:?} but is not documented");
            };
            let status = reply.status.to_string();
            assert!(
                operation["responses"].get(&status).is_some(),
                "{method} {path}: status {status} is not documented ({reply:?})"
            );
        }
        let documented: BTreeSet<String> = operations
            .keys()
            .filter(|(p, _)| *p == path)
            .map(|(_, m)| m.clone())
            .collect();
        assert_eq!(answered, documented, "methods of {path}");
    }
    // A path that is not documented gets the router's fallback.
    let reply = server
        .send("GET", "/v1/nothing-here", Some(WRITE_TOKEN))
        .await;
    assert_eq!((reply.status, reply.code()), (404, Some("not_found")));
    server.stop().await;
}

#[tokio::test]
async fn x_fedgw_scope_is_the_scope_the_server_enforces() {
    let doc = committed();
    let server = Server::start().await;
    for ((path, method), operation) in operations(&doc) {
        let scope = operation["x-fedgw-scope"].as_str();
        let path = concrete(&path);
        let anonymous = server.send(&method, &path, None).await;
        let reader = server.send(&method, &path, Some(READ_TOKEN)).await;
        match scope {
            Some("none") => {
                assert_eq!(
                    operation["security"],
                    serde_json::json!([]),
                    "{method} {path}"
                );
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
    server.stop().await;
}

#[tokio::test]
async fn the_served_document_is_the_committed_file() {
    let server = Server::start().await;
    let reply = server
        .send("GET", "/v1/openapi.json", Some(READ_TOKEN))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type, "application/json");
    let served = reply.json.unwrap();
    assert_eq!(served, committed());
    assert_eq!(served["openapi"], "3.1.0");
    assert_eq!(served["info"]["version"], env!("CARGO_PKG_VERSION"));
    let file = std::fs::read_to_string(repo().join("docs/openapi.json")).unwrap();
    assert_eq!(admin::openapi::DOCUMENT, file, "byte for byte");
    server.stop().await;
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

/// The code literals of `ApiError::new(…, "code", …)`, `Self::new(…, "code", …)` and
/// `…conflict("code", …)` calls in the admin code.
fn codes_in_source(dir: &Path, files: &mut Vec<PathBuf>) -> BTreeSet<String> {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            codes_in_source(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    let mut codes = BTreeSet::new();
    for file in files.iter() {
        let source = std::fs::read_to_string(file).unwrap();
        for call in ["ApiError::new(", "Self::new(", "conflict("] {
            for rest in source.split(call).skip(1) {
                let args = rest.split(')').next().unwrap();
                let Some(literal) = args.split('"').nth(1) else {
                    continue;
                };
                if !literal.is_empty()
                    && literal.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                {
                    codes.insert(literal.to_owned());
                }
            }
        }
    }
    codes
}

#[test]
fn error_code_enum_is_the_documented_and_built_codes() {
    let enumerated = error_codes(&committed());
    let documented = codes_in_admin_api_md();
    assert!(documented.len() >= 30, "parsed only {documented:?}");
    assert_eq!(enumerated, documented, "ErrorCode vs docs/admin-api.md");
    let mut files = vec![repo().join("src/admin.rs")];
    let built = codes_in_source(&repo().join("src/admin"), &mut files);
    assert!(built.contains("method_not_allowed") && built.contains("permission_denied"));
    let missing: Vec<_> = built.difference(&enumerated).collect();
    assert!(
        missing.is_empty(),
        "codes built in src/admin but not in ErrorCode: {missing:?}"
    );
}
