//! The admin API over mTLS (SEC-3): the real gateway started in process through its
//! app wiring (`fedgw::app::start`), its TLS admin listener on loopback with client
//! X509-SVIDs verified under the trust store's current bundles, the same client the
//! CLI uses, `curl` as an independent peer, and the real `fedgw` binary end to end.
//!
//! Certificates come from the development PKI (`fedgw::dev::pki`): the admin server
//! serves the `https_web` certificate (for `localhost` and `127.0.0.1`), and client
//! SVIDs are issued by the SPIFFE CA of their trust domain. The federated domain's
//! bundle is fetched by the gateway's poller from a loopback bundle endpoint (the test
//! kit's `BundleServer`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

#[path = "support/gateway.rs"]
mod gateway;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bytes::Bytes;
use fedgw::admin::auth::TlsAccess;
use fedgw::admin::listen::{self, BoundAddr, ListenError};
use fedgw::app::Config;
use fedgw::app::Running;
use fedgw::client::admin_client::{AdminClient, AdminTarget, Answer, Body, ClientError, ClientTls};
use fedgw::config::{AdminClientId, AdminTls, Scope};
use fedgw::dev::pki::{self as dev_pki, DevPkiPaths};
use fedgw::digest::sha256_hex;
use fedgw::trust::policy::{PolicySettings, Source};
use fedgw::trust::store::TrustStore;
use fedgw_testkit::{
    Answer as Served, BundleServer, DEADLINE, TestCa, free_port, require_tool, wait_until,
    write_atomically,
};
use reqwest::Method;
use spiffe_federation::{Bundle, SpiffeId, TrustDomain};
use tempfile::TempDir;
use time::OffsetDateTime;
use url::Url;

use gateway::GatewayBuilder;

const HOME: &str = "home.example";
const PARTNER: &str = "partner.example";
const OPS: &str = "spiffe://home.example/ops";
const VIEWER: &str = "spiffe://partner.example/viewer";
const INTRUDER: &str = "spiffe://home.example/intruder";
const WRITE_TOKEN: &str = "write-secret";

fn id(text: &str) -> SpiffeId {
    text.parse().unwrap()
}

fn td(name: &str) -> TrustDomain {
    name.parse().unwrap()
}

/// A client SVID written to files, as `--admin-cert` and `--admin-key` take it.
struct Svid {
    cert: PathBuf,
    key: PathBuf,
}

/// Issue an SVID for `spiffe_id` from the SPIFFE CA at `pki`, into `dir`.
fn issue(dir: &Path, pki: &DevPkiPaths, spiffe_id: &str, name: &str) -> Svid {
    let (cert_pem, key_pem) =
        dev_pki::issue_svid(pki, &id(spiffe_id), OffsetDateTime::now_utc()).unwrap();
    let svid = Svid {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&svid.cert, cert_pem).unwrap();
    std::fs::write(&svid.key, key_pem).unwrap();
    svid
}

/// The development PKI of `trust_domain` under `dir/<label>`.
fn pki(dir: &Path, label: &str, trust_domain: &str) -> DevPkiPaths {
    let names = ["localhost".to_owned(), "127.0.0.1".to_owned()];
    let endpoint = id(&format!("spiffe://{trust_domain}/fedgw"));
    dev_pki::ensure(
        &dir.join(label),
        &td(trust_domain),
        &endpoint,
        &names,
        OffsetDateTime::now_utc(),
    )
    .unwrap()
}

fn bundle_of(pki: &DevPkiPaths, trust_domain: &str) -> Bundle {
    Bundle::parse(&td(trust_domain), &std::fs::read(&pki.bundle).unwrap())
        .unwrap()
        .bundle
}

/// The real gateway in process (`fedgw::app::start`) with a TLS admin listener on
/// `127.0.0.1:0`: `home.example` is its local domain (a bundle file it watches),
/// `partner.example` a federated one whose bundle its poller fetched from a loopback
/// `https_web` endpoint before the test begins.
struct Harness {
    dir: TempDir,
    gateway: Running,
    store: TrustStore,
    home: DevPkiPaths,
    partner: DevPkiPaths,
    tls: AdminTls,
    addr: SocketAddr,
    // Kept serving for the gateway's polls.
    _partner_endpoint: BundleServer,
}

impl Harness {
    /// Clients `OPS` (write) and `VIEWER` (read); with `tokens`, also the write token.
    async fn start(tokens: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let home = pki(dir.path(), "home", HOME);
        let partner = pki(dir.path(), "partner", PARTNER);
        // partner.example's bundle endpoint, trusted through its own web root.
        let partner_web_ca = TestCa::web(PARTNER);
        let partner_ca_file = dir.path().join("partner-web-ca.pem");
        partner_web_ca.write_cert(&partner_ca_file);
        let document = Bytes::from(std::fs::read(&partner.bundle).unwrap());
        let partner_endpoint = BundleServer::start(&partner_web_ca, Served::Fixed(document)).await;
        // The admin server's own files, copied so that a test may replace them.
        let tls = AdminTls {
            cert: dir.path().join("admin.pem"),
            key: dir.path().join("admin.key"),
        };
        std::fs::copy(&home.web_cert, &tls.cert).unwrap();
        std::fs::copy(&home.web_key, &tls.key).unwrap();

        let path = |p: &Path| p.display().to_string();
        let mut toml = format!(
            r#"data_dir = {data:?}

[[local]]
trust_domain = "{HOME}"
source = {{ file = {bundle:?} }}

[[federation]]
trust_domain = "{PARTNER}"
url = "{url}"
profile = "https_web"
extra_ca_roots = {ca:?}
proxy = "off"

[admin]
listen = "127.0.0.1:0"

[admin.tls]
cert = {cert:?}
key = {key:?}

[[admin.clients]]
spiffe_id = "{OPS}"
scope = "write"

[[admin.clients]]
spiffe_id = "{VIEWER}"
scope = "read"
"#,
            data = path(&dir.path().join("data")),
            bundle = path(&home.bundle),
            url = partner_endpoint.url(),
            ca = path(&partner_ca_file),
            cert = path(&tls.cert),
            key = path(&tls.key),
        );
        if tokens {
            toml.push_str(&format!(
                "\n[[admin.tokens]]\nname = \"ops\"\nsha256 = \"{}\"\nscope = \"write\"\n",
                sha256_hex(WRITE_TOKEN.as_bytes())
            ));
        }
        let config = Config::from_toml(&toml).unwrap_or_else(|err| panic!("{err}\n{toml}"));
        let gateway = fedgw::app::start(&config).await.unwrap();
        let Some(BoundAddr::Tcp(addr)) = gateway.admin_addr.clone() else {
            panic!("no TCP admin listener: {:?}", gateway.admin_addr);
        };
        let store = gateway.trust_store.clone();
        let fetched = bundle_of(&partner, PARTNER);
        wait_until(DEADLINE, "partner.example's bundle fetched", || async {
            store
                .snapshot()
                .get(&td(PARTNER))
                .is_some_and(|entry| entry.bundle.x509_authorities() == fetched.x509_authorities())
        })
        .await;
        Self {
            dir,
            gateway,
            store,
            home,
            partner,
            tls,
            addr,
            _partner_endpoint: partner_endpoint,
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/", self.addr.port())
    }

    /// The CLI's client, trusting the home web CA, with `svid` and/or `token`.
    fn client(&self, svid: Option<&Svid>, token: Option<&str>) -> AdminClient {
        self.client_trusting(&self.home.web_ca_cert, svid, token)
    }

    fn client_trusting(&self, ca: &Path, svid: Option<&Svid>, token: Option<&str>) -> AdminClient {
        let identity = svid.map(|s| (s.cert.as_path(), s.key.as_path()));
        let tls = ClientTls::from_files(Some(ca), identity).unwrap().unwrap();
        let target = AdminTarget::Url(Url::parse(&self.url()).unwrap());
        AdminClient::with_tls(&target, token.map(str::to_owned), Some(&tls)).unwrap()
    }

    fn svid(&self, pki: &DevPkiPaths, spiffe_id: &str, name: &str) -> Svid {
        issue(self.dir.path(), pki, spiffe_id, name)
    }

    async fn stop(self) {
        let ended = self
            .gateway
            .shutdown(std::time::Duration::from_secs(10))
            .await;
        assert_eq!(ended, fedgw::shutdown::Ended::Clean);
    }
}

async fn put_empty(client: &AdminClient, trust_domain: &str) -> Result<Answer, ClientError> {
    client
        .call(
            Method::PUT,
            &format!("/v1/bundles/{trust_domain}"),
            Some(Body::Raw {
                content_type: "application/json",
                bytes: br#"{"keys":[],"spiffe_sequence":1}"#.to_vec(),
            }),
        )
        .await
}

/// The status, code and message of an API error.
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

/// A refusal during the TLS handshake reaches the client as a transport error.
fn assert_handshake_refused(result: Result<Answer, ClientError>) {
    assert!(
        matches!(result, Err(ClientError::Unreachable { .. })),
        "expected a TLS handshake failure, got {result:?}"
    );
}

// ---- in process ---------------------------------------------------------------------

#[tokio::test]
async fn sec_3_mtls_write_client_puts_a_bundle_and_is_audited_by_spiffe_id() {
    let h = Harness::start(false).await;
    let ops = h.svid(&h.home, OPS, "ops");
    let client = h.client(Some(&ops), None);
    let answer = put_empty(&client, "fresh.example").await.unwrap();
    assert_eq!(answer.status, 200);
    let who = format!("spiffe:{OPS}");
    assert_eq!(
        h.store.snapshot().get(&td("fresh.example")).unwrap().source,
        Source::Operator { who: who.clone() }
    );
    let log = h.store.audit_log(0, 100).await.unwrap();
    let record = log
        .iter()
        .map(|(_, record)| record)
        .find(|record| record.trust_domain == Some(td("fresh.example")))
        .expect("an audit record for the change");
    assert!(record.who.contains(&who), "{record:?}");
    h.stop().await;
}

#[tokio::test]
async fn sec_3_mtls_read_client_of_a_federated_domain_reads_but_cannot_write() {
    let h = Harness::start(false).await;
    // VIEWER lives in partner.example: its SVID verifies under the federated bundle.
    let viewer = h.svid(&h.partner, VIEWER, "viewer");
    let client = h.client(Some(&viewer), None);
    let status = client.call(Method::GET, "/v1/status", None).await.unwrap();
    assert_eq!(status.status, 200);
    let (status, code, message) = api_error(put_empty(&client, "fresh.example").await);
    assert_eq!((status, code.as_str()), (403, "permission_denied"));
    assert!(message.contains(VIEWER), "{message}");
    assert!(
        h.store.snapshot().get(&td("fresh.example")).is_none(),
        "nothing written"
    );
    h.stop().await;
}

#[tokio::test]
async fn sec_3_mtls_unlisted_client_id_is_forbidden_by_name() {
    let h = Harness::start(true).await;
    let intruder = h.svid(&h.home, INTRUDER, "intruder");
    // Even with a valid token: the certificate's ID decides.
    let client = h.client(Some(&intruder), Some(WRITE_TOKEN));
    for result in [
        client.call(Method::GET, "/v1/status", None).await,
        put_empty(&client, "fresh.example").await,
    ] {
        let (status, code, message) = api_error(result);
        assert_eq!((status, code.as_str()), (403, "permission_denied"));
        assert!(message.contains(INTRUDER), "{message}");
    }
    assert!(h.store.snapshot().get(&td("fresh.example")).is_none());
    h.stop().await;
}

#[tokio::test]
async fn sec_3_mtls_client_certificate_from_an_unknown_ca_fails_the_handshake() {
    let h = Harness::start(true).await;
    // Another CA for the same trust domain (not in the bundle): OPS's ID, forged.
    let rogue = pki(h.dir.path(), "rogue", HOME);
    let forged = h.svid(&rogue, OPS, "forged");
    assert_handshake_refused(put_empty(&h.client(Some(&forged), None), "fresh.example").await);
    // DIST-3: partner.example's CA, although trusted for partner.example, cannot vouch
    // for an ID in home.example.
    let cross = h.svid(&h.partner, OPS, "cross");
    assert_handshake_refused(put_empty(&h.client(Some(&cross), None), "fresh.example").await);
    // The same with a token: a certificate that does not verify is never ignored.
    assert_handshake_refused(
        put_empty(&h.client(Some(&forged), Some(WRITE_TOKEN)), "fresh.example").await,
    );
    assert!(h.store.snapshot().get(&td("fresh.example")).is_none());
    h.stop().await;
}

#[tokio::test]
async fn sec_3_mtls_without_certificate_or_token_is_refused() {
    // mTLS only: a client certificate is required in the handshake.
    let h = Harness::start(false).await;
    assert_handshake_refused(
        h.client(None, None)
            .call(Method::GET, "/v1/status", None)
            .await,
    );
    h.stop().await;
    // With tokens too: the handshake admits the client, the request needs a token.
    let h = Harness::start(true).await;
    let (status, code, _) = api_error(
        h.client(None, None)
            .call(Method::GET, "/v1/status", None)
            .await,
    );
    assert_eq!((status, code.as_str()), (401, "unauthenticated"));
    let (status, _, _) = api_error(
        h.client(None, Some("guess"))
            .call(Method::GET, "/v1/status", None)
            .await,
    );
    assert_eq!(status, 401);
    h.stop().await;
}

#[tokio::test]
async fn sec_3_mtls_tokens_still_work_alongside_client_ids() {
    let h = Harness::start(true).await;
    let client = h.client(None, Some(WRITE_TOKEN));
    put_empty(&client, "fresh.example").await.unwrap();
    assert_eq!(
        h.store.snapshot().get(&td("fresh.example")).unwrap().source,
        Source::Operator {
            who: "token:ops".into()
        }
    );
    // And a listed SVID on the same listener.
    let ops = h.svid(&h.home, OPS, "ops");
    let answer = h
        .client(Some(&ops), None)
        .call(Method::GET, "/v1/bundles", None)
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    h.stop().await;
}

#[tokio::test]
async fn sec_3_mtls_follows_the_current_bundle_of_the_clients_domain() {
    let h = Harness::start(false).await;
    let ops = h.svid(&h.home, OPS, "ops");
    h.client(Some(&ops), None)
        .call(Method::GET, "/v1/status", None)
        .await
        .unwrap();
    // home.example rotates to a new CA (its bundle file is replaced, as an operator
    // does): once the gateway holds the new bundle, SVIDs of the old CA stop verifying
    // at once, SVIDs of the new one verify, without restarting the listener.
    let rotated = pki(h.dir.path(), "rotated", HOME);
    write_atomically(&h.home.bundle, &std::fs::read(&rotated.bundle).unwrap());
    let expected = bundle_of(&rotated, HOME);
    wait_until(
        DEADLINE,
        "the rotated home.example bundle stored",
        || async {
            h.store
                .snapshot()
                .get(&td(HOME))
                .is_some_and(|entry| entry.bundle.x509_authorities() == expected.x509_authorities())
        },
    )
    .await;
    assert_handshake_refused(
        h.client(Some(&ops), None)
            .call(Method::GET, "/v1/status", None)
            .await,
    );
    let renewed = h.svid(&rotated, OPS, "renewed");
    h.client(Some(&renewed), None)
        .call(Method::GET, "/v1/status", None)
        .await
        .unwrap();
    h.stop().await;
}

#[tokio::test]
async fn sec_3_mtls_sessions_are_never_resumed() {
    use rustls::pki_types::ServerName;
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    let h = Harness::start(false).await;
    let ops = h.svid(&h.home, OPS, "ops");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&h.home.web_ca_cert).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&ops.cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&ops.key).unwrap();
    // A client that would resume if offered (rustls keeps a session cache by default).
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    for attempt in 0..3 {
        let tcp = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(
            &mut tls,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let mut reply = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut reply)
            .await
            .unwrap();
        assert!(reply.starts_with(b"HTTP/1.1 200"), "{attempt}");
        assert_eq!(
            tls.get_ref().1.handshake_kind(),
            Some(rustls::HandshakeKind::Full),
            "connection {attempt}: the client certificate is checked every time"
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn sec_3_admin_tls_identity_reloads_when_its_files_change() {
    let h = Harness::start(false).await;
    let ops = h.svid(&h.home, OPS, "ops");
    let other = pki(h.dir.path(), "other-web", HOME);
    // Until the files change, a client trusting only the other web CA is refused.
    let result = h
        .client_trusting(&other.web_ca_cert, Some(&ops), None)
        .call(Method::GET, "/v1/status", None)
        .await;
    assert_handshake_refused(result);
    write_atomically(&h.tls.key, &std::fs::read(&other.web_key).unwrap());
    write_atomically(&h.tls.cert, &std::fs::read(&other.web_cert).unwrap());
    let client = h.client_trusting(&other.web_ca_cert, Some(&ops), None);
    wait_until(
        DEADLINE,
        "the new admin certificate to be served",
        || async { client.call(Method::GET, "/v1/status", None).await.is_ok() },
    )
    .await;
    h.stop().await;
}

#[tokio::test]
async fn sec_3_tls_listener_without_tokens_or_clients_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = TrustStore::open(dir.path().join("db"), PolicySettings::default())
        .await
        .unwrap();
    let files = AdminTls {
        cert: dir.path().join("missing.pem"),
        key: dir.path().join("missing.key"),
    };
    let err = listen::tls::bind(
        "127.0.0.1:0".parse().unwrap(),
        &files,
        &TlsAccess::default(),
        &store,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ListenError::TcpWithoutTokens { .. }), "{err}");
    // With clients, the missing certificate is named.
    let access = TlsAccess::new(
        Vec::new(),
        vec![AdminClientId {
            spiffe_id: id(OPS),
            scope: Scope::Read,
        }],
    );
    let err = listen::tls::bind("127.0.0.1:0".parse().unwrap(), &files, &access, &store)
        .await
        .unwrap_err();
    assert!(matches!(err, ListenError::TlsFiles(_)), "{err}");
    assert!(err.to_string().contains("missing.pem"), "{err}");
}

// ---- an independent peer: curl --------------------------------------------------------

/// curl must be installed (`scripts/test.sh` installs it): a missing peer fails the
/// test rather than skipping it.
fn require_curl() {
    require_tool(
        "curl",
        &["--version"],
        "install it (apt-get install curl) or run scripts/test.sh, which does",
    );
}

async fn curl(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || Command::new("curl").args(args).output().unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn sec_3_mtls_curl_with_an_allowed_svid_succeeds_and_without_fails() {
    require_curl();
    let h = Harness::start(false).await;
    let ops = h.svid(&h.home, OPS, "ops");
    let url = format!("{}v1/status", h.url());
    let base = |extra: &[&Path]| {
        let mut args = vec![
            "-sS".to_owned(),
            "--cacert".to_owned(),
            h.home.web_ca_cert.display().to_string(),
            "-w".to_owned(),
            "\n%{http_code}".to_owned(),
        ];
        if let [cert, key] = extra {
            args.extend([
                "--cert".to_owned(),
                cert.display().to_string(),
                "--key".to_owned(),
                key.display().to_string(),
            ]);
        }
        args.push(url.clone());
        args
    };
    let out = curl(base(&[&ops.cert, &ops.key])).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.ends_with("\n200"), "{text}");
    assert!(text.contains(HOME), "{text}");

    let out = curl(base(&[])).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "no client certificate: {text}");
    assert!(!text.contains(HOME), "{text}");
    h.stop().await;
}

// ---- the real binary end to end ----------------------------------------------------------

#[tokio::test]
async fn sec_3_mtls_cli_status_over_https_with_an_svid() {
    let root = tempfile::tempdir().unwrap();
    let admin_port = free_port();
    let builder = GatewayBuilder::new(root.path(), "mtls.example").web();
    let pki = builder.pki().clone();
    let admin = format!(
        "\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n[admin.tls]\ncert = {cert:?}\nkey = {key:?}\n[[admin.clients]]\nspiffe_id = \"spiffe://mtls.example/ops\"\nscope = \"read\"\n",
        cert = pki.web_cert.display().to_string(),
        key = pki.web_key.display().to_string(),
    );
    let gateway = builder.extra_toml(&admin).start().await;
    let ops = issue(root.path(), &pki, "spiffe://mtls.example/ops", "ops");
    let url = format!("https://127.0.0.1:{admin_port}");
    let status = |with_svid: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fedgw"));
        command
            .args(["status", "--admin", &url, "--admin-ca"])
            .arg(&pki.web_ca_cert)
            .env_remove("FEDGW_ADMIN_TOKEN_FILE");
        if with_svid {
            command
                .arg("--admin-cert")
                .arg(&ops.cert)
                .arg("--admin-key")
                .arg(&ops.key);
        }
        async move {
            tokio::task::spawn_blocking(move || command.output().unwrap())
                .await
                .unwrap()
        }
    };
    wait_until(DEADLINE, "the admin API to answer over mTLS", || async {
        status(true).await.status.success()
    })
    .await;
    let out = status(true).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("mtls.example"), "{text}");

    let out = status(false).await;
    assert!(!out.status.success(), "no client certificate");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach the admin API"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(gateway);
}

/// A local domain whose bundle comes from a file cannot be deleted, replaced or rolled
/// back through the API (409 `managed_by_source`, naming the file): deleting it used to
/// lock out every mTLS admin client of the domain until a restart, since the unchanged
/// file was never read again. The mTLS client keeps working and the bundle still serves.
#[tokio::test]
async fn local_bundle_from_a_file_is_not_deleted_or_replaced_through_the_api() {
    let root = tempfile::tempdir().unwrap();
    let admin_port = free_port();
    let builder = GatewayBuilder::new(root.path(), "mtls.example").web();
    let pki = builder.pki().clone();
    let admin = format!(
        "\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n[admin.tls]\ncert = {cert:?}\nkey = {key:?}\n[[admin.clients]]\nspiffe_id = \"spiffe://mtls.example/ops\"\nscope = \"write\"\n",
        cert = pki.web_cert.display().to_string(),
        key = pki.web_key.display().to_string(),
    );
    let gateway = builder.extra_toml(&admin).start().await;
    let ops = issue(root.path(), &pki, "spiffe://mtls.example/ops", "ops");
    let tls = ClientTls::from_files(
        Some(&pki.web_ca_cert),
        Some((ops.cert.as_path(), ops.key.as_path())),
    )
    .unwrap()
    .unwrap();
    let target = AdminTarget::Url(Url::parse(&format!("https://127.0.0.1:{admin_port}/")).unwrap());
    let client = AdminClient::with_tls(&target, None, Some(&tls)).unwrap();
    wait_until(DEADLINE, "the admin API to answer over mTLS", || async {
        client.call(Method::GET, "/v1/status", None).await.is_ok()
    })
    .await;
    let served = gateway.local_bundle().await.unwrap();
    let file = pki.bundle.display().to_string();

    let path = "/v1/bundles/mtls.example";
    let refusals = [
        ("DELETE", client.call(Method::DELETE, path, None).await),
        ("PUT", put_empty(&client, "mtls.example").await),
        (
            "rollback",
            client
                .call(
                    Method::POST,
                    &format!("{path}/rollback"),
                    Some(Body::Json(serde_json::json!({"revision": 1}))),
                )
                .await,
        ),
    ];
    for (what, result) in refusals {
        let (status, code, message) = api_error(result);
        assert_eq!(
            (status, code.as_str()),
            (409, "managed_by_source"),
            "{what}"
        );
        assert!(message.contains(&file), "{what}: {message}");
    }
    // The mTLS client still gets in, and the bundle is still served.
    let status = client.call(Method::GET, "/v1/status", None).await.unwrap();
    assert_eq!(status.status, 200);
    let answer = client.call(Method::GET, path, None).await.unwrap();
    assert_eq!(answer.status, 200);
    let now = gateway.local_bundle().await.unwrap();
    assert_eq!(now, served);
    drop(gateway);
}
