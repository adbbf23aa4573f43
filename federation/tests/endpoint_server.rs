//! Conformance: the bundle endpoint server (FED-2, FED-3, SRV-1..SRV-8, SVID-6, EXT-6;
//! SPIFFE Federation §5, §5.2.1.3, §5.2.2.3; X509-SVID §4.3, §4.4).
//!
//! Every network test runs a real server (`support/serve.rs`: tokio-rustls + hyper on
//! loopback, answering with `respond`) and probes it with independent peers: the
//! Debian `openssl s_client` and `curl` binaries, and a rustls client whose verifier
//! calls `verify_x509_svid_for`. A missing binary fails the test with a message; the
//! test command (`scripts/test.sh`) installs them. Peers run on the blocking pool.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

#[path = "support/ca.rs"]
mod ca;
#[path = "support/serve.rs"]
mod serve;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{CustomExtension, ExtendedKeyUsagePurpose, KeyUsagePurpose, SanType};
use rustls::crypto::aws_lc_rs;
use rustls::{CertificateError, CipherSuite, OtherError, RootCertStore};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use spiffe_federation::bundle::X509Authority;
use spiffe_federation::endpoint::client::SpiffeServerVerifier;
use spiffe_federation::endpoint::server::{
    KeyPurpose, ServerError, ServerTls, ServerWarning, https_spiffe_server_config,
    https_web_server_config,
};
use spiffe_federation::verify::VerifyError;
use spiffe_federation::{Bundle, SpiffeId};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use ca::{CertSpec, Issued, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, TestCa};
use serve::TestServer;

const TD: &str = "td.example";
const ENDPOINT_ID: &str = "spiffe://td.example/bundle-endpoint";
const PUBLIC_NAME: &str = "bundle.td.example";
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

// ---- certificates and configurations ----------------------------------------------

/// The local trust domain's bundle: `ca` as its only X.509 authority.
fn bundle(ca: &TestCa, sequence: u64, hint_secs: u64) -> Bundle {
    let mut bundle = Bundle::new(TD.parse().unwrap());
    bundle.add_x509_authority(X509Authority::from_der(ca.der.clone()).unwrap());
    bundle.set_sequence(Some(sequence));
    bundle.set_refresh_hint(Some(std::time::Duration::from_secs(hint_secs)));
    bundle
}

/// A Web PKI serving leaf with the given DNS and IP SANs.
fn web_leaf(ca: &TestCa, dns: &[&str], ips: &[IpAddr]) -> Issued {
    let mut spec = CertSpec::web_server(dns);
    // The CA's algorithm, so that an RSA server is RSA throughout.
    spec.alg = ca.key.algorithm();
    ca.issue_with(&spec, |params| {
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    })
}

fn names(list: &[&str]) -> Vec<ServerName<'static>> {
    list.iter()
        .map(|n| ServerName::try_from(*n).unwrap().to_owned())
        .collect()
}

fn roots(ca: &TestCa) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca.der.clone())).unwrap();
    roots
}

fn web_config(ca: &TestCa, leaf: &Issued, public: &[&str]) -> Result<ServerTls, ServerError> {
    https_web_server_config(
        vec![leaf.cert_der()],
        leaf.key_der(),
        &names(public),
        &roots(ca),
        UnixTime::now(),
    )
}

fn spiffe_config(leaf: &Issued, local: &Bundle, id: &str) -> Result<ServerTls, ServerError> {
    https_spiffe_server_config(
        vec![leaf.cert_der()],
        leaf.key_der(),
        local,
        &id.parse().unwrap(),
        UnixTime::now(),
    )
}

/// An `https_web` server for `PUBLIC_NAME` and 127.0.0.1, with a key of `alg`.
async fn web_server(alg: &'static rcgen::SignatureAlgorithm) -> (TestCa, TestServer, Bundle) {
    let ca = TestCa::from_spec(&CertSpec::ca(TD).alg(alg));
    let leaf = web_leaf(&ca, &[PUBLIC_NAME], &[LOOPBACK]);
    let tls = web_config(&ca, &leaf, &[PUBLIC_NAME, "127.0.0.1"]).unwrap();
    assert_eq!(tls.warnings, vec![]);
    let served = bundle(&ca, 1, 60);
    let server = TestServer::start(tls.config, "/", &served).await;
    (ca, server, served)
}

/// An `https_spiffe` server presenting an SVID for `ENDPOINT_ID`.
async fn spiffe_server() -> (TestServer, Bundle) {
    let ca = TestCa::new(TD);
    let local = bundle(&ca, 1, 60);
    let tls = spiffe_config(&ca.svid(ENDPOINT_ID), &local, ENDPOINT_ID).unwrap();
    assert_eq!(tls.warnings, vec![]);
    (TestServer::start(tls.config, "/", &local).await, local)
}

// ---- independent peers -----------------------------------------------------------

/// What `openssl s_client` did: whether it exited successfully, and all it printed.
struct Probe {
    success: bool,
    output: String,
}

/// `openssl s_client -connect 127.0.0.1:<port> <args>` with stdin closed (connect,
/// handshake, print the session, quit).
async fn s_client(port: u16, args: &[&str]) -> Probe {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let output = Command::new("openssl")
            .arg("s_client")
            .arg("-connect")
            .arg(format!("127.0.0.1:{port}"))
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|err| {
                panic!("cannot run `openssl` ({err}): install the Debian package `openssl` (scripts/test.sh does)")
            });
        Probe {
            success: output.status.success(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        }
    })
    .await
    .unwrap()
}

/// `openssl ciphers <args>`: cipher names, one per entry.
async fn openssl_ciphers(args: &[&str]) -> Vec<String> {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let output = Command::new("openssl")
            .arg("ciphers")
            .args(&args)
            .output()
            .unwrap_or_else(|err| {
                panic!("cannot run `openssl` ({err}): install the Debian package `openssl` (scripts/test.sh does)")
            });
        assert!(output.status.success(), "openssl ciphers {args:?} failed");
        String::from_utf8(output.stdout)
            .unwrap()
            .trim()
            .split(':')
            .map(str::to_owned)
            .collect()
    })
    .await
    .unwrap()
}

/// An HTTP response as curl printed it.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    /// Every value of header `name` (case-insensitive).
    fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The only value of header `name`.
    fn header(&self, name: &str) -> &str {
        match self.header_values(name).as_slice() {
            [value] => value,
            other => panic!("expected one {name} header, found {other:?} in {self:?}"),
        }
    }
}

static TEMP_FILES: AtomicUsize = AtomicUsize::new(0);

/// `curl -sS -i --cacert <ca> <args> <url>`: the request goes to 127.0.0.1:`port`
/// whatever the URL host (`--resolve`).
async fn curl(ca: &TestCa, port: u16, host: &str, path: &str, args: &[&str]) -> Reply {
    let pem = ca.pem();
    let url = format!("https://{host}:{port}{path}");
    let mut all: Vec<String> = vec!["-sS".into(), "-i".into()];
    if host.parse::<IpAddr>().is_err() {
        all.push("--resolve".into());
        all.push(format!("{host}:{port}:127.0.0.1"));
    }
    all.extend(args.iter().map(|a| (*a).to_owned()));
    tokio::task::spawn_blocking(move || {
        let ca_file = std::env::temp_dir().join(format!(
            "fedgw-endpoint-server-{}-{}.pem",
            std::process::id(),
            TEMP_FILES.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&ca_file, pem).unwrap();
        let output = Command::new("curl")
            .args(&all)
            .arg("--cacert")
            .arg(&ca_file)
            .arg(&url)
            .output();
        std::fs::remove_file(&ca_file).unwrap();
        let output = output.unwrap_or_else(|err| {
            panic!("cannot run `curl` ({err}): install the Debian package `curl` (scripts/test.sh does)")
        });
        assert!(
            output.status.success(),
            "curl {all:?} {url} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        parse_reply(&output.stdout)
    })
    .await
    .unwrap()
}

/// Split `curl -i` (or a raw HTTP/1.1 response) into status, headers and body.
fn parse_reply(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.trim().to_owned(), value.trim().to_owned())
        })
        .collect();
    Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// GET `/` over HTTP/1.1 with the `https_spiffe` client; the handshake error if the
/// server is not authenticated.
async fn spiffe_get(port: u16, bundle: &Bundle, expected: &str) -> Result<Reply, std::io::Error> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let verifier =
        SpiffeServerVerifier::new(expected.parse().unwrap(), bundle.clone(), provider.clone());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    // The name is only SNI: the verifier ignores it.
    let name = ServerName::try_from("bundle-endpoint.invalid").unwrap();
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    tls.write_all(b"GET / HTTP/1.1\r\nHost: bundle-endpoint.invalid\r\nConnection: close\r\n\r\n")
        .await?;
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw).await?;
    Ok(parse_reply(&raw))
}

/// The `VerifyError` inside a handshake failure of [`spiffe_get`].
fn verify_error(err: &std::io::Error) -> &VerifyError {
    let rustls_error = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .unwrap_or_else(|| panic!("not a TLS error: {err}"));
    let rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) =
        rustls_error
    else {
        panic!("not a verifier error: {rustls_error}")
    };
    inner.downcast_ref::<VerifyError>().unwrap()
}

// ---- FED-2: each profile starts and serves ----------------------------------------

#[tokio::test]
async fn fed_2_each_profile_starts() {
    let (ca, web, served) = web_server(&PKCS_ECDSA_P256_SHA256).await;
    let reply = curl(&ca, web.port(), PUBLIC_NAME, "/", &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, served.to_json());

    let (spiffe, local) = spiffe_server().await;
    let reply = spiffe_get(spiffe.port(), &local, ENDPOINT_ID)
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, local.to_json());
}

#[tokio::test]
async fn fed_2_key_not_matching_certificate_refused() {
    let ca = TestCa::new(TD);
    let leaf = web_leaf(&ca, &[PUBLIC_NAME], &[]);
    let other = web_leaf(&ca, &[PUBLIC_NAME], &[]);
    let err = https_web_server_config(
        vec![leaf.cert_der()],
        other.key_der(),
        &names(&[PUBLIC_NAME]),
        &roots(&ca),
        UnixTime::now(),
    )
    .unwrap_err();
    assert_eq!(err, ServerError::KeyMismatch);

    let local = bundle(&ca, 1, 60);
    let svid = ca.svid(ENDPOINT_ID);
    let err = https_spiffe_server_config(
        vec![svid.cert_der()],
        other.key_der(),
        &local,
        &ENDPOINT_ID.parse().unwrap(),
        UnixTime::now(),
    )
    .unwrap_err();
    assert_eq!(err, ServerError::KeyMismatch);
}

// ---- FED-3: Mozilla intermediate -------------------------------------------------

/// `-cipher` for old protocol probes: without `@SECLEVEL=0` OpenSSL 3 would refuse to
/// offer TLS 1.0/1.1 itself, and the test would prove nothing about the server.
const ANY_CIPHER: &str = "DEFAULT:@SECLEVEL=0";

/// The client offered `version` (its session line says so) and the server answered
/// with an alert: the refusal is the server's, not OpenSSL's own policy.
fn assert_server_refused(probe: &Probe, version: &str) {
    assert!(
        probe.output.contains(&format!("Protocol  : {version}\n")),
        "the client did not offer {version}:\n{}",
        probe.output
    );
    assert!(
        probe.output.contains("SSL alert number"),
        "no alert from the server:\n{}",
        probe.output
    );
}

#[tokio::test]
async fn fed_3_tls10_refused() {
    let (_ca, server, _) = web_server(&PKCS_ECDSA_P256_SHA256).await;
    let probe = s_client(server.port(), &["-tls1", "-cipher", ANY_CIPHER]).await;
    assert!(
        !probe.success,
        "TLS 1.0 handshake succeeded:\n{}",
        probe.output
    );
    assert_server_refused(&probe, "TLSv1");
}

#[tokio::test]
async fn fed_3_tls11_refused() {
    let (_ca, server, _) = web_server(&PKCS_ECDSA_P256_SHA256).await;
    let probe = s_client(server.port(), &["-tls1_1", "-cipher", ANY_CIPHER]).await;
    assert!(
        !probe.success,
        "TLS 1.1 handshake succeeded:\n{}",
        probe.output
    );
    assert_server_refused(&probe, "TLSv1.1");
}

#[tokio::test]
async fn fed_3_tls12_and_tls13_accepted() {
    let (_ca, server, _) = web_server(&PKCS_ECDSA_P256_SHA256).await;
    for (flag, version) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let probe = s_client(server.port(), &[flag]).await;
        assert!(probe.success, "{flag} refused:\n{}", probe.output);
        assert!(
            probe.output.contains(&format!("New, {version}, Cipher is")),
            "{flag}:\n{}",
            probe.output
        );
    }
}

#[tokio::test]
async fn fed_3_cbc_suites_refused() {
    const CBC: &str = "AES128-SHA:AES256-SHA:AES128-SHA256:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES256-SHA384:ECDHE-ECDSA-AES256-SHA384:DES-CBC3-SHA:@SECLEVEL=0";
    for (alg, aead) in [
        (&PKCS_ECDSA_P256_SHA256, "ECDHE-ECDSA-AES128-GCM-SHA256"),
        (&PKCS_RSA_SHA256, "ECDHE-RSA-AES128-GCM-SHA256"),
    ] {
        let (_ca, server, _) = web_server(alg).await;
        let probe = s_client(server.port(), &["-tls1_2", "-cipher", CBC]).await;
        assert!(
            !probe.success,
            "a CBC suite was accepted:\n{}",
            probe.output
        );
        assert!(
            probe.output.contains("alert handshake failure"),
            "{}",
            probe.output
        );
        // Control: the same probe with an AEAD suite succeeds.
        let probe = s_client(server.port(), &["-tls1_2", "-cipher", aead]).await;
        assert!(probe.success, "{aead} refused:\n{}", probe.output);
    }
}

/// The TLS 1.2 suites among `ciphers` the server at `port` completes a handshake with,
/// probing each alone (16 probes at a time).
async fn accepted_tls12_suites(port: u16, ciphers: &[String]) -> BTreeSet<String> {
    let mut accepted = BTreeSet::new();
    for batch in ciphers.chunks(16) {
        let mut probes = tokio::task::JoinSet::new();
        for cipher in batch {
            let cipher = cipher.clone();
            probes.spawn(async move {
                let list = format!("{cipher}:@SECLEVEL=0");
                let probe = s_client(port, &["-tls1_2", "-cipher", &list]).await;
                (cipher, probe.success)
            });
        }
        while let Some(result) = probes.join_next().await {
            let (cipher, success) = result.unwrap();
            if success {
                accepted.insert(cipher);
            }
        }
    }
    accepted
}

#[tokio::test]
async fn fed_3_only_aead_ecdhe_suites_offered() {
    // Configuration: exactly the Mozilla intermediate suites rustls implements.
    let (ca, server, _) = web_server(&PKCS_ECDSA_P256_SHA256).await;
    let leaf = web_leaf(&ca, &[PUBLIC_NAME], &[]);
    let tls = web_config(&ca, &leaf, &[PUBLIC_NAME]).unwrap();
    let suites: BTreeSet<u16> = tls
        .config
        .crypto_provider()
        .cipher_suites
        .iter()
        .map(|s| u16::from(s.suite()))
        .collect();
    let expected: BTreeSet<u16> = [
        CipherSuite::TLS13_AES_128_GCM_SHA256,
        CipherSuite::TLS13_AES_256_GCM_SHA384,
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ]
    .into_iter()
    .map(u16::from)
    .collect();
    assert_eq!(suites, expected);

    // Probe: every TLS 1.2 suite OpenSSL knows, one at a time; the server accepts
    // exactly the ECDHE AEAD suites for its key type.
    let all = openssl_ciphers(&["-tls1_2", "ALL:COMPLEMENTOFALL:@SECLEVEL=0"]).await;
    let tls12: Vec<String> = all.into_iter().filter(|c| !c.starts_with("TLS_")).collect();
    assert!(tls12.len() > 20, "openssl lists few suites: {tls12:?}");
    let (rsa_ca, rsa_server, _) = web_server(&PKCS_RSA_SHA256).await;
    drop(rsa_ca);
    for (server, key_type) in [(&server, "ECDSA"), (&rsa_server, "RSA")] {
        let accepted = accepted_tls12_suites(server.port(), &tls12).await;
        let expected: BTreeSet<String> = [
            "AES128-GCM-SHA256",
            "AES256-GCM-SHA384",
            "CHACHA20-POLY1305",
        ]
        .iter()
        .map(|tail| format!("ECDHE-{key_type}-{tail}"))
        .collect();
        assert_eq!(
            accepted, expected,
            "TLS 1.2 suites accepted with an {key_type} key"
        );
    }

    // TLS 1.3: the three AEAD suites; not the CCM ones OpenSSL can offer.
    let mut accepted = BTreeSet::new();
    for suite in [
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_AES_128_CCM_SHA256",
        "TLS_AES_128_CCM_8_SHA256",
    ] {
        if s_client(server.port(), &["-tls1_3", "-ciphersuites", suite])
            .await
            .success
        {
            accepted.insert(suite);
        }
    }
    assert_eq!(
        accepted,
        BTreeSet::from([
            "TLS_AES_128_GCM_SHA256",
            "TLS_AES_256_GCM_SHA384",
            "TLS_CHACHA20_POLY1305_SHA256"
        ])
    );
}

// ---- SRV-1: no client authentication -----------------------------------------------

#[tokio::test]
async fn srv_1_no_client_certificate_requested() {
    let (ca, server, served) = web_server(&PKCS_ECDSA_P256_SHA256).await;
    for flag in ["-tls1_2", "-tls1_3"] {
        let probe = s_client(server.port(), &[flag]).await;
        assert!(probe.success, "{flag}:\n{}", probe.output);
        assert!(
            probe.output.contains("No client certificate CA names sent"),
            "{flag}: the server asked for a client certificate:\n{}",
            probe.output
        );
    }

    // Control: a server that does request a client certificate is seen as such, so
    // the assertion above can fail.
    let leaf = web_leaf(&ca, &[PUBLIC_NAME], &[LOOPBACK]);
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(&ca)),
        Arc::new(aws_lc_rs::default_provider()),
    )
    .allow_unauthenticated()
    .build()
    .unwrap();
    let asking =
        rustls::ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![leaf.cert_der()], leaf.key_der())
            .unwrap();
    let control = TestServer::start(Arc::new(asking), "/", &served).await;
    let probe = s_client(control.port(), &["-tls1_2"]).await;
    assert!(
        !probe.output.contains("No client certificate CA names sent"),
        "{}",
        probe.output
    );

    // HTTP layer: no certificate, no Authorization header, and a 200.
    let reply = curl(&ca, server.port(), PUBLIC_NAME, "/", &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, served.to_json());
}

// ---- SRV-2..SRV-5: the response ----------------------------------------------------

#[tokio::test]
async fn srv_2_latest_bundle_served() {
    let (ca, server, first) = web_server(&PKCS_ECDSA_P256_SHA256).await;
    let reply = curl(&ca, server.port(), PUBLIC_NAME, "/", &[]).await;
    assert_eq!(reply.body, first.to_json());

    let mut second = bundle(&TestCa::new(TD), 2, 60);
    second.add_x509_authority(X509Authority::from_der(ca.der.clone()).unwrap());
    server.set_bundle(&second);
    let reply = curl(&ca, server.port(), PUBLIC_NAME, "/", &[]).await;
    assert_eq!(reply.status, 200);
    let parsed = Bundle::parse(&TD.parse().unwrap(), &reply.body).unwrap();
    assert_eq!(parsed.bundle.sequence(), Some(2));
    assert_eq!(parsed.bundle, second);
}

#[tokio::test]
async fn srv_3_body_is_utf8() {
    let (ca, server, served) = web_server(&PKCS_ECDSA_P256_SHA256).await;
    let reply = curl(&ca, server.port(), PUBLIC_NAME, "/", &[]).await;
    let text = std::str::from_utf8(&reply.body).expect("strict UTF-8");
    assert!(!text.starts_with('\u{feff}'), "no byte order mark");
    assert_eq!(
        Bundle::parse(&TD.parse().unwrap(), &reply.body)
            .unwrap()
            .bundle,
        served
    );
}

#[tokio::test]
async fn srv_4_content_type_application_json() {
    let (ca, server, _) = web_server(&PKCS_ECDSA_P256_SHA256).await;
    for args in [&["--http1.1"][..], &["--http2"], &["--head"]] {
        let reply = curl(&ca, server.port(), PUBLIC_NAME, "/", args).await;
        assert_eq!(reply.status, 200, "{args:?}");
        assert_eq!(reply.header("content-type"), "application/json", "{args:?}");
    }
}

#[tokio::test]
async fn srv_5_wrong_path_404_and_post_405() {
    let (ca, server, _) = web_server(&PKCS_ECDSA_P256_SHA256).await;
    for path in ["/wrong", "/?", "//", "/bundle"] {
        let reply = curl(&ca, server.port(), PUBLIC_NAME, path, &[]).await;
        // `/?` has path `/`: the query is not part of the route.
        let expected = if path == "/?" { 200 } else { 404 };
        assert_eq!(reply.status, expected, "{path}");
    }
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let reply = curl(&ca, server.port(), PUBLIC_NAME, "/", &["-X", method]).await;
        assert_eq!(reply.status, 405, "{method}");
        assert_eq!(reply.header("allow"), "GET, HEAD");
    }
    let reply = curl(&ca, server.port(), PUBLIC_NAME, "/wrong", &["-X", "POST"]).await;
    assert_eq!(reply.status, 404);
}

// ---- SRV-6, SRV-7: the https_web certificate ---------------------------------------

#[test]
fn srv_6_cert_without_public_name_refused() {
    let ca = TestCa::new(TD);
    let leaf = web_leaf(&ca, &["other.example", "*.wild.example"], &[LOOPBACK]);
    for missing in [
        PUBLIC_NAME,
        "a.b.wild.example", // a wildcard covers one label
        "wild.example",     // and not the parent
        "127.0.0.2",
        "::1",
    ] {
        let err = web_config(&ca, &leaf, &["other.example", missing]).unwrap_err();
        assert_eq!(
            err,
            ServerError::NameNotInCertificate {
                name: names(&[missing]).remove(0)
            }
        );
    }

    // The Common Name is not a subjectAltName.
    let mut spec = CertSpec::web_server(&[]);
    spec.common_name = PUBLIC_NAME.to_owned();
    let cn_only = ca.issue(&spec);
    assert!(matches!(
        web_config(&ca, &cn_only, &[PUBLIC_NAME]),
        Err(ServerError::NameNotInCertificate { .. })
    ));

    assert_eq!(
        web_config(&ca, &leaf, &[]).unwrap_err(),
        ServerError::NoPublicNames
    );
}

#[tokio::test]
async fn srv_6_ip_and_wildcard_names_accepted() {
    let ca = TestCa::new(TD);
    let leaf = web_leaf(&ca, &["*.wild.example"], &[LOOPBACK]);
    let tls = web_config(
        &ca,
        &leaf,
        &["a.wild.example", "b.wild.example", "127.0.0.1"],
    )
    .unwrap();
    let served = bundle(&ca, 1, 60);
    let server = TestServer::start(tls.config, "/", &served).await;
    // Independent clients agree with the startup check.
    for host in ["a.wild.example", "127.0.0.1"] {
        let reply = curl(&ca, server.port(), host, "/", &[]).await;
        assert_eq!(reply.status, 200, "{host}");
    }
}

#[test]
fn srv_7_private_ca_is_a_warning_not_an_error() {
    let ca = TestCa::new(TD);
    let leaf = web_leaf(&ca, &[PUBLIC_NAME], &[]);
    let chain = vec![leaf.cert_der()];
    let public = names(&[PUBLIC_NAME]);

    let tls = https_web_server_config(
        chain.clone(),
        leaf.key_der(),
        &public,
        &RootCertStore::empty(),
        UnixTime::now(),
    )
    .unwrap();
    assert!(matches!(
        tls.warnings.as_slice(),
        [ServerWarning::NotPubliclyTrusted { .. }]
    ));

    let tls = https_web_server_config(chain, leaf.key_der(), &public, &roots(&ca), UnixTime::now())
        .unwrap();
    assert_eq!(tls.warnings, vec![]);
}

// ---- SRV-8, SVID-6: the https_spiffe certificate -----------------------------------

#[test]
fn srv_8_svid_for_other_id_refused() {
    let ca = TestCa::new(TD);
    let local = bundle(&ca, 1, 60);
    let svid = ca.svid("spiffe://td.example/other");
    let err = spiffe_config(&svid, &local, ENDPOINT_ID).unwrap_err();
    assert!(
        matches!(
            err,
            ServerError::InvalidSvid {
                source: VerifyError::UnexpectedId { .. }
            }
        ),
        "{err:?}"
    );

    // A Web PKI certificate is not an X509-SVID at all.
    let web = web_leaf(&ca, &[PUBLIC_NAME], &[]);
    assert!(matches!(
        spiffe_config(&web, &local, ENDPOINT_ID),
        Err(ServerError::InvalidSvid {
            source: VerifyError::UriSanCount { found: 0 }
        })
    ));
}

#[test]
fn srv_8_svid_not_chaining_to_local_bundle_refused() {
    let ca = TestCa::new(TD);
    let local = bundle(&ca, 1, 60);

    // A CA of the same trust domain that is not in the bundle.
    let mut spec = CertSpec::ca(TD);
    spec.common_name = "another td.example CA".to_owned();
    let stranger = TestCa::from_spec(&spec);
    assert!(matches!(
        spiffe_config(&stranger.svid(ENDPOINT_ID), &local, ENDPOINT_ID),
        Err(ServerError::InvalidSvid {
            source: VerifyError::UnknownIssuer { .. }
        })
    ));

    // An impostor with the bundle CA's name but another key.
    let impostor = TestCa::new(TD);
    assert!(matches!(
        spiffe_config(&impostor.svid(ENDPOINT_ID), &local, ENDPOINT_ID),
        Err(ServerError::InvalidSvid {
            source: VerifyError::BadSignature { .. }
        })
    ));

    // A bundle of another trust domain never vouches for the endpoint ID.
    let other = TestCa::new("other.example");
    let mut other_bundle = Bundle::new("other.example".parse().unwrap());
    other_bundle.add_x509_authority(X509Authority::from_der(other.der.clone()).unwrap());
    assert!(matches!(
        spiffe_config(&other.svid(ENDPOINT_ID), &other_bundle, ENDPOINT_ID),
        Err(ServerError::InvalidSvid {
            source: VerifyError::TrustDomainMismatch { .. }
        })
    ));
}

#[tokio::test]
async fn srv_8_valid_svid_served_and_verified_by_client() {
    let (server, local) = spiffe_server().await;
    let reply = spiffe_get(server.port(), &local, ENDPOINT_ID)
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), "application/json");
    assert_eq!(reply.body, local.to_json());

    // Control: a client expecting another ID refuses the same server.
    let err = spiffe_get(server.port(), &local, "spiffe://td.example/other")
        .await
        .unwrap_err();
    assert!(
        matches!(verify_error(&err), VerifyError::UnexpectedId { .. }),
        "{err}"
    );
    // And one whose bundle holds another key under the same CA name.
    let err = spiffe_get(server.port(), &bundle(&TestCa::new(TD), 1, 60), ENDPOINT_ID)
        .await
        .unwrap_err();
    assert!(
        matches!(verify_error(&err), VerifyError::BadSignature { .. }),
        "{err}"
    );
}

/// An SVID for `ENDPOINT_ID` with `edit` applied to its spec and parameters.
fn svid_with(
    ca: &TestCa,
    spec_edit: impl FnOnce(&mut CertSpec),
    params_edit: impl FnOnce(&mut rcgen::CertificateParams),
) -> Issued {
    let mut spec = CertSpec::svid(ENDPOINT_ID);
    spec_edit(&mut spec);
    ca.issue_with(&spec, params_edit)
}

#[test]
fn svid_6_own_svid_without_digital_signature_refused() {
    let ca = TestCa::new(TD);
    let local = bundle(&ca, 1, 60);
    let id: SpiffeId = ENDPOINT_ID.parse().unwrap();

    let svid = svid_with(
        &ca,
        |s| s.key_usages = vec![KeyUsagePurpose::KeyEncipherment],
        |_| {},
    );
    assert_eq!(
        spiffe_config(&svid, &local, ENDPOINT_ID).unwrap_err(),
        ServerError::NoDigitalSignature { id: id.clone() }
    );
}

#[test]
fn svid_6_own_svid_key_usage_missing_or_not_critical_refused() {
    let ca = TestCa::new(TD);
    let local = bundle(&ca, 1, 60);
    let id: SpiffeId = ENDPOINT_ID.parse().unwrap();

    let svid = svid_with(&ca, |s| s.key_usages = vec![], |_| {});
    assert_eq!(
        spiffe_config(&svid, &local, ENDPOINT_ID).unwrap_err(),
        ServerError::KeyUsageMissing { id: id.clone() }
    );

    // keyUsage digitalSignature (BIT STRING, 7 unused bits, 0x80), not critical.
    let svid = svid_with(
        &ca,
        |s| s.key_usages = vec![],
        |p| {
            p.custom_extensions.push(CustomExtension::from_oid_content(
                &[2, 5, 29, 15],
                vec![0x03, 0x02, 0x07, 0x80],
            ));
        },
    );
    assert_eq!(
        spiffe_config(&svid, &local, ENDPOINT_ID).unwrap_err(),
        ServerError::KeyUsageNotCritical { id }
    );
}

#[test]
fn svid_6_own_svid_extended_key_usage_needs_server_and_client_auth() {
    let ca = TestCa::new(TD);
    let local = bundle(&ca, 1, 60);
    let id: SpiffeId = ENDPOINT_ID.parse().unwrap();

    for (ekus, missing) in [
        (
            vec![ExtendedKeyUsagePurpose::ClientAuth],
            KeyPurpose::ServerAuth,
        ),
        (
            vec![ExtendedKeyUsagePurpose::ServerAuth],
            KeyPurpose::ClientAuth,
        ),
    ] {
        let svid = svid_with(&ca, |s| s.ekus = ekus, |_| {});
        assert_eq!(
            spiffe_config(&svid, &local, ENDPOINT_ID).unwrap_err(),
            ServerError::ExtendedKeyUsageLacks {
                id: id.clone(),
                missing
            }
        );
    }

    // Absent: allowed (X509-SVID §4.4 SHOULD), with a warning.
    let svid = svid_with(&ca, |s| s.ekus = vec![], |_| {});
    let tls = spiffe_config(&svid, &local, ENDPOINT_ID).unwrap();
    assert_eq!(tls.warnings, vec![ServerWarning::NoExtendedKeyUsage { id }]);
}

// ---- EXT-6: caching headers --------------------------------------------------------

#[tokio::test]
async fn ext_6_etag_and_if_none_match_304() {
    let (ca, server, _) = web_server(&PKCS_ECDSA_P256_SHA256).await;
    let first = curl(&ca, server.port(), PUBLIC_NAME, "/", &[]).await;
    let etag = first.header("etag").to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong tag: {etag}"
    );

    let header = format!("If-None-Match: {etag}");
    let cached = curl(&ca, server.port(), PUBLIC_NAME, "/", &["-H", &header]).await;
    assert_eq!(cached.status, 304);
    assert!(cached.body.is_empty());
    assert_eq!(cached.header("etag"), etag);

    let other = curl(
        &ca,
        server.port(),
        PUBLIC_NAME,
        "/",
        &["-H", "If-None-Match: \"x\""],
    )
    .await;
    assert_eq!(other.status, 200);

    // A new bundle has a new tag, so a client's stale tag fetches it (SRV-2).
    server.set_bundle(&bundle(&ca, 2, 60));
    let fresh = curl(&ca, server.port(), PUBLIC_NAME, "/", &["-H", &header]).await;
    assert_eq!(fresh.status, 200);
    assert_ne!(fresh.header("etag"), etag);
    assert_eq!(fresh.body, bundle(&ca, 2, 60).to_json());
}

#[tokio::test]
async fn ext_6_cache_control_max_age_at_most_refresh_hint() {
    let (ca, server, _) = web_server(&PKCS_ECDSA_P256_SHA256).await;
    for hint in [1, 60, 299, 300, 3600, 86_400] {
        server.set_bundle(&bundle(&ca, hint, hint));
        let reply = curl(&ca, server.port(), PUBLIC_NAME, "/", &[]).await;
        let max_age: u64 = reply
            .header("cache-control")
            .strip_prefix("max-age=")
            .unwrap()
            .parse()
            .unwrap();
        assert!(max_age <= hint, "hint {hint}: max-age {max_age}");
        assert!(
            max_age > 0 && max_age <= 300,
            "hint {hint}: max-age {max_age}"
        );
        assert_eq!(max_age, hint.min(300));
    }
}

// ---- BUN-6: the served refresh hint ----------------------------------------------

#[tokio::test]
async fn bun_6_served_bundle_without_hint_gets_the_300_s_default() {
    let (ca, server, _) = web_server(&PKCS_ECDSA_P256_SHA256).await;
    let mut no_hint = bundle(&ca, 7, 60);
    no_hint.set_refresh_hint(None);
    server.set_bundle(&no_hint);
    let reply = curl(&ca, server.port(), PUBLIC_NAME, "/", &[]).await;
    let served = Bundle::parse(&TD.parse().unwrap(), &reply.body)
        .unwrap()
        .bundle;
    assert_eq!(
        served.refresh_hint(),
        Some(std::time::Duration::from_secs(300))
    );
    assert_eq!(served.sequence(), Some(7));
    assert_eq!(reply.header("cache-control"), "max-age=300");
}
