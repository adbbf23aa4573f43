//! End to end: what a new operator meets on the README's path, with the real `fedgw`
//! binary: exit statuses, error messages that say each cause once and name what to
//! fix, SPIRE's flag spellings, trust domains as arguments or flags, a failed refresh
//! that says why and exits 4, URLs with passwords refused without repeating them, a
//! data directory held by a running gateway, a start that fails leaving nothing
//! behind, and logs written to a file as plain text.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

#[path = "support/gateway.rs"]
mod gateway;

use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use fedgw_testkit::{DEADLINE, Process, free_port, wait_until};
use gateway::GatewayBuilder;
use serde_json::Value;

fn fedgw(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fedgw"))
        .args(args)
        .current_dir(dir)
        .env_remove("FEDGW_ADMIN")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn fedgw_stdin(dir: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fedgw"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `fedgw serve` with the embedded default in `data_dir` on the given ports, its
/// standard error to `log` (a file, not a terminal) and `NO_COLOR` unset.
fn serve(dir: &Path, data_dir: &str, web: u16, spiffe: u16, log: &Path) -> Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fedgw"));
    command
        .args(["serve", "--data-dir", data_dir])
        .args(["--trust-domain", "ops.test"])
        .args(["--web-listen", &format!("127.0.0.1:{web}")])
        .args(["--spiffe-listen", &format!("127.0.0.1:{spiffe}")])
        .current_dir(dir)
        .env_remove("NO_COLOR")
        .env_remove("FEDGW_LOG");
    Process::spawn("fedgw serve", &mut command, log)
}

async fn wait_for_socket(socket: &Path, process: &Process) {
    let what = format!("an admin socket at {}", socket.display());
    wait_until(DEADLINE, &what, || async {
        process.assert_running();
        socket.exists()
    })
    .await;
}

#[test]
fn usage_and_configuration_errors_exit_with_their_documented_status() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // clap's own usage errors.
    assert_eq!(fedgw(d, &["no-such-verb"]).status.code(), Some(2));
    assert_eq!(fedgw(d, &["federation", "show"]).status.code(), Some(2));
    // Both forms of the trust domain at once.
    let out = fedgw(d, &["bundle", "history", "a.example", "-t", "b.example"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // A PEM document given as the default SPIFFE JSON, before anything is sent.
    std::fs::write(
        d.join("ca.pem"),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let out = fedgw(
        d,
        &[
            "bundle",
            "set",
            "--trust-domain",
            "w.example",
            "--file",
            "ca.pem",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("ca.pem looks like PEM; pass --format pem"));
    // TLS flags with a unix socket target.
    let out = fedgw(d, &["status", "--admin-ca", "ca.pem"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    // Configuration: unreadable, empty, refused: exit 3, naming the file.
    let out = fedgw(d, &["serve", "--config", "missing.toml"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("cannot read missing.toml"));
    std::fs::write(d.join("empty.toml"), "\n").unwrap();
    let out = fedgw(d, &["serve", "--config", "empty.toml"]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("empty.toml") && stderr.contains("the configuration is empty"),
        "{stderr}"
    );
    std::fs::write(
        d.join("secret.toml"),
        "data_dir = \"data\"\n[[federation]]\ntrust_domain = \"w.example\"\nurl = \"https://ops:s3cret@w.example/\"\nprofile = \"https_web\"\n",
    )
    .unwrap();
    let out = fedgw(d, &["serve", "--config", "secret.toml"]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("userinfo"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "{stderr}");
    // Nothing was created for a refused configuration.
    assert!(!d.join("data").exists());
}

#[test]
fn a_start_that_cannot_bind_leaves_nothing_behind_and_says_why_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = taken.local_addr().unwrap().port();
    let log = d.join("serve.log");
    let child = serve(d, "fresh", port, free_port(), &log);
    let status = child.wait();
    assert_eq!(status.code(), Some(1));
    let log = std::fs::read_to_string(&log).unwrap();
    let error = log.lines().find(|l| l.starts_with("error: ")).unwrap();
    assert!(
        error.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{error}"
    );
    assert_eq!(error.matches("os error 98").count(), 1, "{error}");
    // No data directory, no development PKI.
    assert!(!d.join("fresh").exists(), "{log}");

    // A data directory that exists keeps what it had, and gets nothing new.
    std::fs::create_dir(d.join("kept")).unwrap();
    std::fs::write(d.join("kept/notes"), "mine").unwrap();
    let child = serve(d, "kept", port, free_port(), &d.join("serve2.log"));
    assert_eq!(child.wait().code(), Some(1));
    let left: Vec<_> = std::fs::read_dir(d.join("kept"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["notes"]);
    drop(taken);
}

#[tokio::test]
async fn a_data_dir_in_use_is_named_with_its_process_and_logs_are_plain() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let log = d.join("first.log");
    let first = serve(d, "data", free_port(), free_port(), &log);
    wait_for_socket(&d.join("data/admin.sock"), &first).await;

    let second_log = d.join("second.log");
    let second = serve(d, "data", free_port(), free_port(), &second_log);
    assert_eq!(second.wait().code(), Some(1));
    let second_log = std::fs::read_to_string(&second_log).unwrap();
    assert!(
        second_log.contains(&format!(
            "error: data_dir data is in use by another fedgw process (pid {})",
            first.pid()
        )),
        "{second_log}"
    );
    assert!(!second_log.contains("WouldBlock"), "{second_log}");

    first.kill();
    let log = std::fs::read_to_string(&log).unwrap();
    // Standard error is a file: no colour codes, and no Rust Debug of values.
    assert!(!log.contains('\u{1b}'), "{log}");
    assert!(!log.contains("Some("), "{log}");
    assert!(log.contains("sequence=1 "), "{log}");
    // The development PKI is said to be one, once, at INFO; no public-roots warning.
    assert_eq!(log.matches("development PKI").count(), 1, "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains(" INFO ") && l.contains("development PKI"))
    );
    assert!(!log.contains("public roots"), "{log}");
    assert!(!log.contains(" WARN "), "{log}");
}

#[tokio::test]
async fn federation_verbs_take_spire_flags_and_either_form_of_the_trust_domain() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBuilder::new(dir.path(), "home.test")
        .web()
        .start()
        .await;
    let socket = format!("unix:{}", gw.data_dir.join("admin.sock").display());
    let d = dir.path();
    let admin = ["--admin", socket.as_str()];
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&admin);
        fedgw(d, &all)
    };

    // spire-server's spelling, as in SPIRE's documentation.
    let out = run(&[
        "federation",
        "create",
        "-trustDomain",
        "far.test",
        "-bundleEndpointURL",
        "https://fedgw-test.invalid/bundle",
        "-bundleEndpointProfile=https_web",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for show in [
        &["federation", "show", "far.test"][..],
        &["federation", "show", "--trust-domain", "far.test"],
        &["federation", "show", "-trustDomain", "far.test"],
        &["federation", "show", "-t", "far.test"],
    ] {
        let out = run(show);
        assert!(out.status.success(), "{show:?}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("far.test"));
    }

    // A fetch that fails: exit 4, the code and the cause (the name does not resolve).
    let out = run(&["federation", "refresh", "far.test"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("far.test: refresh failed (connect): "),
        "{stderr}"
    );
    assert!(stderr.to_lowercase().contains("dns"), "{stderr}");
    let out = run(&["federation", "refresh", "-t", "far.test", "--json"]);
    assert_eq!(out.status.code(), Some(4));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["outcome"], "failed");
    assert_eq!(answer["error_code"], "connect");
    // The status table shows the same cause.
    let out = run(&["status"]);
    assert!(
        text(&out.stdout).to_lowercase().contains("dns"),
        "{}",
        text(&out.stdout)
    );

    // Passwords in URLs are refused and never repeated: flags, proxy, API body.
    let out = run(&[
        "federation",
        "create",
        "near.test",
        "--bundle-endpoint-url",
        "https://ops:s3cret@near.test/",
        "--bundle-endpoint-profile",
        "https_web",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        !text(&out.stderr).contains("s3cret"),
        "{}",
        text(&out.stderr)
    );
    for proxy in ["socks5://proxy:1080", "http://ops:s3cret@proxy:3128"] {
        let out = run(&[
            "federation",
            "create",
            "near.test",
            "--bundle-endpoint-url",
            "https://near.test/",
            "--bundle-endpoint-profile",
            "https_web",
            "--proxy",
            proxy,
        ]);
        assert_eq!(out.status.code(), Some(2), "{proxy}");
        assert!(
            !text(&out.stderr).contains("s3cret"),
            "{}",
            text(&out.stderr)
        );
    }
    let mut args = vec!["federation", "create", "--data", "-"];
    args.extend_from_slice(&admin);
    for body in [
        r#"{"trust_domain": "near.test", "url": "https://ops:s3cret@near.test/", "profile": "https_web"}"#,
        r#"{"trust_domain": "near.test", "url": "https://near.test/\r\nx", "profile": "https_web"}"#,
        r#"{"trust_domain": "near.test", "url": "https:///near.test/", "profile": "https_web"}"#,
    ] {
        let out = fedgw_stdin(d, &args, body.as_bytes());
        assert_eq!(out.status.code(), Some(1), "{body}");
        assert!(
            !text(&out.stderr).contains("s3cret"),
            "{}",
            text(&out.stderr)
        );
    }
    let out = run(&["federation", "list"]);
    assert!(
        !text(&out.stdout).contains("near.test"),
        "{}",
        text(&out.stdout)
    );

    // Delete takes the argument form too.
    let out = run(&["federation", "delete", "far.test"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}
