//! An existing data directory opens and serves unchanged.
//!
//! `tests/fixtures/datadir-v1/db` is a sled database written by fedgw before the
//! store carried a schema version (the binary of 2026-12-05, through its CLI: two
//! relationships created through the admin API — one `https_spiffe` with an inline
//! bootstrap bundle, one `https_web` with inline extra roots, mirrors, no redirects,
//! then replaced with `allow_revocation` — an operator bundle set three times, and
//! failed fetches recorded as status). `expected/` holds what that gateway answered
//! then. The real `fedgw serve` of this build, started on a copy, must read every
//! record, serve the same bytes, keep the history and the relationships, stamp the
//! schema version, and carry on counting revisions from where the old one stopped.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/datadir-v1")
}

fn fedgw(admin: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fedgw"))
        .args(args)
        .arg("--admin")
        .arg(format!("unix:{}", admin.display()))
        .env_remove("FEDGW_ADMIN")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stdout_of(admin: &Path, args: &[&str]) -> Vec<u8> {
    let out = fedgw(admin, args);
    assert!(
        out.status.success(),
        "fedgw {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn json_of(admin: &Path, args: &[&str]) -> Value {
    serde_json::from_slice(&stdout_of(admin, args)).unwrap()
}

struct Serving {
    child: Child,
    log: PathBuf,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve(data_dir: &Path) -> Serving {
    serve_with(
        data_dir,
        &[
            "serve",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--web-listen",
            "127.0.0.1:0",
            "--spiffe-listen",
            "127.0.0.1:0",
        ],
    )
    .await
}

/// `fedgw serve` with `args`, whose admin socket is `data_dir/admin.sock`.
async fn serve_with(data_dir: &Path, args: &[&str]) -> Serving {
    let log = data_dir.with_extension("log");
    let file = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_fedgw"))
        .args(args)
        .env_remove("FEDGW_LOG")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let mut serving = Serving { child, log };
    let socket = data_dir.join("admin.sock");
    let start = Instant::now();
    loop {
        if let Some(status) = serving.child.try_wait().unwrap() {
            panic!(
                "fedgw serve exited ({status}):\n{}",
                std::fs::read_to_string(&serving.log).unwrap_or_default()
            );
        }
        if socket.exists() && fedgw(&socket, &["status", "--json"]).status.success() {
            return serving;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "fedgw serve did not answer within 60 s:\n{}",
            std::fs::read_to_string(&serving.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn copy_fixture(to: &Path) {
    std::fs::create_dir_all(to.join("db")).unwrap();
    for file in ["conf", "db"] {
        std::fs::copy(fixture().join("db").join(file), to.join("db").join(file)).unwrap();
    }
}

/// The fields of a listed relationship that do not move with time.
fn settled(relationship: &Value) -> Value {
    let mut kept = serde_json::Map::new();
    for key in [
        "trust_domain",
        "origin",
        "urls",
        "profile",
        "endpoint_spiffe_id",
        "follow_redirects",
        "proxy",
        "allow_revocation",
        "chain_depth",
        "chain_end",
        "depends_on",
        "cycle",
        "warnings",
    ] {
        kept.insert(key.to_owned(), relationship[key].clone());
    }
    Value::Object(kept)
}

#[tokio::test]
async fn a_data_directory_written_before_schema_versions_opens_and_serves_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    copy_fixture(&data_dir);
    let serving = serve(&data_dir).await;
    let admin = data_dir.join("admin.sock");
    let expected = fixture().join("expected");

    // The stored bundles, byte for byte.
    for td in ["other.example", "remote.example"] {
        let served = stdout_of(&admin, &["bundle", "show", td]);
        let then = std::fs::read(expected.join(format!("{td}.json"))).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&served),
            String::from_utf8_lossy(&then),
            "{td}"
        );
    }

    // The history of the operator's three versions.
    let history = json_of(&admin, &["bundle", "history", "other.example", "--json"]);
    let then: Value = serde_json::from_slice(
        &std::fs::read(expected.join("other.example.history.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(history, then);

    // Both API relationships, as created and replaced, polled again.
    let listed = json_of(&admin, &["federation", "list", "--json"]);
    let then: Value =
        serde_json::from_slice(&std::fs::read(expected.join("relationships.json")).unwrap())
            .unwrap();
    let settle = |list: &Value| -> Vec<Value> {
        list["relationships"]
            .as_array()
            .unwrap()
            .iter()
            .map(settled)
            .collect()
    };
    assert_eq!(settle(&listed), settle(&then));
    assert_eq!(settle(&listed).len(), 2);
    let web = &listed["relationships"][1];
    assert_eq!(web["trust_domain"], "web.example");
    assert_eq!(web["allow_revocation"], true, "the replacement's field");

    // Revisions carry on: this start's local bundle is newer than anything stored.
    let local = json_of(
        &admin,
        &["bundle", "history", "dev.fedgw.localhost", "--json"],
    );
    let newest = local["history"][0]["revision"].as_u64().unwrap();
    assert!(newest > 5, "the fixture ended at revision 5; got {newest}");
    drop(serving);

    // Stamped now: a second start reads the stamped directory the same way.
    let serving = serve(&data_dir).await;
    let served = stdout_of(&admin, &["bundle", "show", "other.example"]);
    let then = std::fs::read(expected.join("other.example.json")).unwrap();
    assert_eq!(served, then);
    drop(serving);
}

/// The acceptance test of `fedgw store copy`: the same fixture, copied from its sled
/// directory into a real PostgreSQL database (over TCP, TLS verified, password from a
/// file), then served by a gateway whose `[storage]` is that database and whose data
/// directory is new: every answer is the one the sled gateway gave.
#[tokio::test]
async fn a_sled_data_directory_copied_to_postgres_serves_the_same_bytes() {
    let server = fedgw_testkit::postgres::Postgres::shared().unwrap_or_else(|err| panic!("{err}"));
    let database = server.create_database().unwrap();
    let url = server.url(&database);
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("pg-password");
    std::fs::write(&password_file, server.password()).unwrap();
    let sled_dir = dir.path().join("sled");
    copy_fixture(&sled_dir);

    let copy = |from: &str, to: &str| {
        Command::new(env!("CARGO_BIN_EXE_fedgw"))
            .args([
                "store",
                "copy",
                "--from",
                from,
                "--to",
                to,
                "--password-file",
            ])
            .arg(&password_file)
            .arg("--ca-file")
            .arg(server.ca_file())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let from = format!("sled:{}", sled_dir.display());
    let out = copy(&from, &url);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fedgw store copy: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("revision 5"), "{stdout}");
    assert!(stdout.contains("read back and verified"), "{stdout}");

    // A second copy into the same database is refused; nothing is changed.
    let out = copy(&from, &url);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not empty"), "{stderr}");

    // A gateway on PostgreSQL, with a new data directory.
    let data_dir = dir.path().join("pg-gateway");
    std::fs::create_dir_all(&data_dir).unwrap();
    let config = dir.path().join("fedgw.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {data_dir:?}\n\n[[local]]\ntrust_domain = \"dev.fedgw.localhost\"\nsource = {{ admin = true }}\n\n[storage]\nbackend = \"postgres\"\n\n[storage.postgres]\nurl = {url:?}\npassword_file = {password:?}\nca_file = {ca:?}\n",
            data_dir = data_dir.display().to_string(),
            password = password_file.display().to_string(),
            ca = server.ca_file().display().to_string(),
        ),
    )
    .unwrap();
    let serving = serve_with(&data_dir, &["serve", "--config", config.to_str().unwrap()]).await;
    let admin = data_dir.join("admin.sock");
    let expected = fixture().join("expected");
    for td in ["other.example", "remote.example"] {
        let served = stdout_of(&admin, &["bundle", "show", td]);
        let then = std::fs::read(expected.join(format!("{td}.json"))).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&served),
            String::from_utf8_lossy(&then),
            "{td}"
        );
    }
    let history = json_of(&admin, &["bundle", "history", "other.example", "--json"]);
    let then: Value = serde_json::from_slice(
        &std::fs::read(expected.join("other.example.history.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(history, then);
    let listed = json_of(&admin, &["federation", "list", "--json"]);
    let then: Value =
        serde_json::from_slice(&std::fs::read(expected.join("relationships.json")).unwrap())
            .unwrap();
    let settle = |list: &Value| -> Vec<Value> {
        list["relationships"]
            .as_array()
            .unwrap()
            .iter()
            .map(settled)
            .collect()
    };
    assert_eq!(settle(&listed), settle(&then));
    assert!(
        !data_dir.join("db").exists(),
        "the gateway kept nothing in a sled database of its own"
    );
    drop(serving);

    // And back: the PostgreSQL state copies into a new sled directory.
    let back = dir.path().join("back");
    let out = copy(&url, &format!("sled:{}", back.display()));
    assert!(
        out.status.success(),
        "copy back: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(back.join("db").is_dir());
}
