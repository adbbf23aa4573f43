//! End to end: the real `fedgw` binary validating the example bundles in `examples/`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn fedgw(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fedgw"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

fn fedgw_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fedgw"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn example(name: &str) -> String {
    let path: PathBuf = Path::new("examples/bundles").join(name);
    path.to_string_lossy().into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

#[test]
fn bun_1_appendix_a_bundle_one_validates() {
    let out = fedgw(&[
        "bundle",
        "validate",
        "--trust-domain",
        "example.com",
        &example("example.com.1.json"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("example.com: valid (sequence 1, refresh hint 2419200s), 1 authority\n"),
        "{text}"
    );
    assert!(text.contains("x509-svid O=example.com sha256:"));
    assert!(text.contains("RSA 2048"));
    assert!(text.contains("not after 2036-01-01T00:00:00Z"));
}

#[test]
fn bun_1_appendix_a_bundle_two_validates_as_json() {
    let out = fedgw(&[
        "bundle",
        "validate",
        "-t",
        "example.com",
        "--json",
        &example("example.com.2.json"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["valid"], true);
    let bundle = &report["bundles"][0];
    assert_eq!(bundle["trust_domain"], "example.com");
    assert_eq!(bundle["sequence"], 2);
    assert_eq!(bundle["refresh_hint_seconds"], 2_419_200);
    let authorities = bundle["authorities"].as_array().unwrap();
    assert_eq!(authorities.len(), 2);
    for authority in authorities {
        assert_eq!(authority["kind"], "x509-svid");
        assert_eq!(authority["subject"], "O=example.com");
        assert_eq!(authority["expired"], false);
        assert_eq!(authority["sha256"].as_str().unwrap().len(), 64);
    }
    assert_ne!(authorities[0]["sha256"], authorities[1]["sha256"]);
}

#[test]
fn pem_example_validates() {
    let out = fedgw(&[
        "bundle",
        "validate",
        "-t",
        "example.com",
        "--format",
        "pem",
        &example("example.com.pem"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("2 authorities"));
}

#[test]
fn map_example_validates_with_every_domain() {
    let out = fedgw(&[
        "bundle",
        "validate",
        "--format",
        "map",
        "--json",
        &example("bundle-map.json"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let names: Vec<&str> = report["bundles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["trust_domain"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["example.com", "example.org"]);
    let org = &report["bundles"][1]["authorities"];
    assert_eq!(org[1]["kind"], "jwt-svid");
    assert_eq!(org[1]["kid"], "jwt-2026-01");
}

#[test]
fn bun_9_broken_document_exits_1_and_names_the_fault() {
    let out = fedgw(&[
        "bundle",
        "validate",
        "-t",
        "example.org",
        &example("broken/missing-keys.json"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: document: required member \"keys\" is missing\n"
    );
    assert!(stdout(&out).is_empty());
}

#[test]
fn bun_4_sequence_as_string_names_the_location() {
    let out = fedgw(&[
        "bundle",
        "validate",
        "-t",
        "example.org",
        "--json",
        &example("broken/sequence-as-string.json"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["valid"], false);
    assert_eq!(report["invalid_document"], true);
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .starts_with("/spiffe_sequence: ")
    );
}

#[test]
fn ext_4_trailing_data_names_line_and_column() {
    let out = fedgw(&[
        "bundle",
        "validate",
        "-t",
        "example.org",
        &example("broken/trailing-data.json"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("unexpected data after the JSON document at line 2, column 1"));
}

#[test]
fn map_4_duplicate_trust_domain_refused() {
    let out = fedgw(&[
        "bundle",
        "validate",
        "-f",
        "map",
        &example("broken/duplicate-trust-domain-map.json"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("trust domain \"example.org\" occurs more than once"));
}

#[test]
fn stdin_is_read_with_dash_and_ignored_elements_are_listed() {
    let doc = br#"{"keys":[{"use":"frob","kty":"EC"},{"kty":"EC","use":"jwt-svid","crv":"P-256"}],"spiffe_sequence":4}"#;
    let out = fedgw_stdin(&["bundle", "validate", "-t", "example.org", "-"], doc);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("ignored /keys/0: unknown use \"frob\""),
        "{text}"
    );
    assert!(
        text.contains("ignored /keys/1: no usable \"kid\""),
        "{text}"
    );
    assert!(text.contains("revokes every key of example.org"), "{text}");
}

#[test]
fn id_5_upper_case_trust_domain_is_a_usage_error_with_suggestion() {
    let out = fedgw(&[
        "bundle",
        "validate",
        "-t",
        "Example.org",
        &example("example.org.json"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("did you mean \"example.org\""));
}

#[test]
fn missing_trust_domain_for_spiffe_format_is_a_usage_error() {
    let out = fedgw(&["bundle", "validate", &example("example.org.json")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--trust-domain is required"));
    let out = fedgw(&[
        "bundle",
        "validate",
        "-f",
        "map",
        "-t",
        "example.org",
        &example("bundle-map.json"),
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_pem_document_read_as_json_says_to_pass_format_pem() {
    let pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let out = fedgw_stdin(&["bundle", "validate", "-t", "example.org", "-"], pem);
    assert_eq!(out.status.code(), Some(2));
    let text = stderr(&out);
    assert!(
        text.contains("standard input looks like PEM; pass --format pem"),
        "{text}"
    );
}

#[test]
fn unreadable_file_is_reported() {
    let out = fedgw(&[
        "bundle",
        "validate",
        "-t",
        "example.org",
        "no/such/file.json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("error: cannot read no/such/file.json"));
}
