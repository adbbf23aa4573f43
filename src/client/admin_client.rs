//! A client for the admin API, used by the CLI verbs (`fedgw federation …`,
//! `fedgw bundle …`, `fedgw status`).
//!
//! Owns reaching the gateway (unix socket by default, or an `https://` / `http://` URL
//! with a bearer token and, over `https://`, the roots that authenticate the server and
//! an optional client X509-SVID for mTLS: [`ClientTls`]), turning its JSON errors
//! into [`ClientError`]s that keep the API's code and message, and reading answers
//! into the API contract's types ([`Answer::decode`], [`crate::admin::api`]). It does
//! not own output formatting (the CLI does).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use rustls::RootCertStore;
use rustls::crypto::aws_lc_rs;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize as _;
use serde::de::DeserializeOwned;
use serde_json::Value;
use spiffe_federation::{Bundle, TrustDomain};

use crate::admin::api::ErrorResponse;

/// Where the admin API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminTarget {
    /// A unix socket.
    Unix(PathBuf),
    /// A TCP base URL, e.g. `https://gw.example:8081`.
    Url(url::Url),
}

impl std::str::FromStr for AdminTarget {
    type Err = String;

    /// `unix:/path`, a bare path, or an `http(s)://` URL.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if s.starts_with("http://") || s.starts_with("https://") {
            return url::Url::parse(s)
                .map(Self::Url)
                .map_err(|err| format!("{s:?}: {err}"));
        }
        if s.is_empty() {
            return Err("empty admin address".to_owned());
        }
        Ok(Self::Unix(PathBuf::from(s)))
    }
}

impl fmt::Display for AdminTarget {
    /// `unix:/path` or the URL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&describe(self))
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The gateway could not be reached.
    #[error("cannot reach the admin API at {target}: {reason}")]
    Unreachable {
        /// Where we tried.
        target: String,
        /// Why.
        reason: String,
    },
    /// The gateway answered with an API error.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The API's stable code.
        code: String,
        /// The API's message.
        message: String,
    },
    /// The gateway answered something that is not the API's JSON.
    #[error("unexpected answer from the admin API (HTTP {status}): {body}")]
    Unexpected {
        /// HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// A successful answer is not the shape the API contract gives it.
    #[error("unexpected answer from the admin API (HTTP {status}): not a {what}: {reason}")]
    Shape {
        /// HTTP status.
        status: u16,
        /// The type it was read as, e.g. `fedgw::admin::api::Status`.
        what: &'static str,
        /// Why it does not read as one.
        reason: String,
    },
    /// A TLS file (`--admin-ca`, `--admin-cert`, `--admin-key`) cannot be used.
    #[error("{path}: {reason}")]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The TLS policy cannot be applied with the crypto provider.
    #[error("admin TLS policy: {0}")]
    TlsPolicy(#[source] rustls::Error),
    /// The answer is larger than the client accepts.
    #[error(
        "the admin API at {target} answered more than {limit} bytes; refusing to read it (raise --max-response-bytes if this gateway really holds that much)"
    )]
    TooLarge {
        /// Where from.
        target: String,
        /// The cap, in bytes.
        limit: u64,
    },
    /// TLS settings were given for a target that does not use TLS.
    #[error("--admin-ca, --admin-cert and --admin-key need an https:// admin URL, not {target}")]
    TlsNeedsHttps {
        /// The target.
        target: String,
    },
}

/// How an `https://` admin API is reached: the roots that authenticate the server
/// (Web PKI rules: the chain and the URL's host name) and, for mTLS, the client's
/// certificate chain (its X509-SVID) and key.
#[derive(Clone)]
pub struct ClientTls {
    config: rustls::ClientConfig,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field(
                "client_certificate",
                &self.config.client_auth_cert_resolver.has_certs(),
            )
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// The settings of `--admin-ca` (PEM certificates, or a SPIFFE bundle whose X.509
    /// authorities become the roots; without it, the operating system's roots) and
    /// `--admin-cert`/`--admin-key` (PEM chain and key); `None` when neither is given.
    /// Blocks (file reads).
    ///
    /// # Errors
    /// [`ClientError::TlsFile`] naming the file that cannot be read, holds nothing
    /// usable, or (the key) does not match the certificate; [`ClientError::TlsPolicy`].
    pub fn from_files(
        ca: Option<&Path>,
        identity: Option<(&Path, &Path)>,
    ) -> Result<Option<Self>, ClientError> {
        if ca.is_none() && identity.is_none() {
            return Ok(None);
        }
        let mut roots = RootCertStore::empty();
        match ca {
            Some(path) => {
                for root in read_roots(path)? {
                    roots.add(root).map_err(|err| tls_file(path, err))?;
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
            }
        }
        let builder =
            rustls::ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(ClientError::TlsPolicy)?
                .with_root_certificates(roots);
        let mut config = match identity {
            Some((cert, key)) => {
                let chain = read_certificates(cert)?;
                let key_der = PrivateKeyDer::from_pem_slice(&read_file(key)?)
                    .map_err(|err| tls_file(key, err))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|err| tls_file(key, err))?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(Self { config }))
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|err| tls_file(path, err))
}

fn tls_file(path: &Path, reason: impl fmt::Display) -> ClientError {
    ClientError::TlsFile {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// PEM `CERTIFICATE` blocks; at least one.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read_file(path)?)
        .collect::<Result<_, _>>()
        .map_err(|err| tls_file(path, err))?;
    if certs.is_empty() {
        return Err(tls_file(path, "no PEM CERTIFICATE block"));
    }
    Ok(certs)
}

/// PEM certificates, or the X.509 authorities of a SPIFFE bundle document.
fn read_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let bytes = read_file(path)?;
    if !bytes.trim_ascii_start().starts_with(b"{") {
        return read_certificates(path);
    }
    // A bundle document does not say whose it is; the name only labels parser lints,
    // which are not shown.
    let unnamed = TrustDomain::new("admin-ca.invalid").map_err(|err| tls_file(path, err))?;
    let bundle = Bundle::parse(&unnamed, &bytes)
        .map_err(|err| tls_file(path, err))?
        .bundle;
    let roots: Vec<CertificateDer<'static>> = bundle
        .x509_authorities()
        .iter()
        .map(|authority| CertificateDer::from(authority.der().to_vec()))
        .collect();
    if roots.is_empty() {
        return Err(tls_file(path, "the SPIFFE bundle has no X.509 authority"));
    }
    Ok(roots)
}

/// A connected admin client.
#[derive(Debug, Clone)]
pub struct AdminClient {
    http: reqwest::Client,
    base: url::Url,
    token: Option<String>,
    target: String,
    max_response_bytes: u64,
    unix: bool,
}

/// The largest answer a client reads by default: 256 MiB, far above the full state
/// of 10,000 trust domains, far below what would hurt a node.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 256 << 20;

/// A successful answer: the status and the body (JSON, or text for non-JSON routes).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The `Content-Type` header, when present.
    pub content_type: Option<String>,
    /// Parsed JSON, when the body is JSON.
    pub json: Option<Value>,
    /// The raw body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The JSON body read as `T`, one of the API contract's answer types
    /// ([`crate::admin::api`]).
    ///
    /// # Errors
    /// [`ClientError::Shape`] when the body is not JSON or not a `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body).map_err(|err| ClientError::Shape {
            status: self.status,
            what: std::any::type_name::<T>(),
            reason: err.to_string(),
        })
    }
}

impl AdminClient {
    /// A client for `target`, sending `token` as a bearer token when given.
    ///
    /// # Errors
    /// [`ClientError::Unreachable`] when the HTTP client cannot be built.
    pub fn new(target: &AdminTarget, token: Option<String>) -> Result<Self, ClientError> {
        Self::with_tls(target, token, None)
    }

    /// A client for `target` as [`AdminClient::new`], reaching an `https://` target
    /// with `tls` (its roots, and its client certificate for mTLS) when given.
    ///
    /// # Errors
    /// [`ClientError::TlsNeedsHttps`] when `tls` is given for another target;
    /// [`ClientError::Unreachable`] when the HTTP client cannot be built.
    pub fn with_tls(
        target: &AdminTarget,
        token: Option<String>,
        tls: Option<&ClientTls>,
    ) -> Result<Self, ClientError> {
        let unreachable = |reason: String| ClientError::Unreachable {
            target: describe(target),
            reason,
        };
        let builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .no_proxy();
        let (builder, base) = match target {
            AdminTarget::Url(url) if url.scheme() == "https" => match tls {
                Some(tls) => (
                    builder.tls_backend_preconfigured(tls.config.clone()),
                    url.clone(),
                ),
                None => (builder, url.clone()),
            },
            _ if tls.is_some() => {
                return Err(ClientError::TlsNeedsHttps {
                    target: describe(target),
                });
            }
            AdminTarget::Unix(path) => (
                builder.unix_socket(path.as_path()),
                url::Url::parse("http://fedgw.local/").map_err(|e| unreachable(e.to_string()))?,
            ),
            AdminTarget::Url(url) => (builder, url.clone()),
        };
        let http = builder.build().map_err(|e| unreachable(e.to_string()))?;
        Ok(Self {
            http,
            base,
            token,
            target: describe(target),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            unix: matches!(target, AdminTarget::Unix(_)),
        })
    }

    /// Refuse answers larger than `limit` bytes (default
    /// [`DEFAULT_MAX_RESPONSE_BYTES`]): a declared length above it is refused before
    /// reading, and a body that grows past it is dropped as soon as it does.
    #[must_use]
    pub fn with_max_response_bytes(mut self, limit: u64) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// Call `method path` with an optional JSON or raw body.
    ///
    /// # Errors
    /// [`ClientError`]: unreachable, an API error, or an unexpected answer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
    ) -> Result<Answer, ClientError> {
        let url = self
            .base
            .join(path.trim_start_matches('/'))
            .map_err(|err| ClientError::Unreachable {
                target: self.target.clone(),
                reason: format!("bad path {path:?}: {err}"),
            })?;
        let mut request = self.http.request(method, url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request = match body {
            Some(Body::Json(value)) => request
                .header("content-type", "application/json")
                .body(value.to_string()),
            Some(Body::Raw {
                content_type,
                bytes,
            }) => request.header("content-type", content_type).body(bytes),
            None => request,
        };
        let response = request
            .send()
            .await
            .map_err(|err| ClientError::Unreachable {
                target: self.target.clone(),
                reason: unreachable_reason(self.unix, &err),
            })?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = self.read_capped(response).await?;
        let json: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status.is_success() {
            return Ok(Answer {
                status: status.as_u16(),
                content_type,
                json,
                body: bytes,
            });
        }
        Err(api_error(status, json.as_ref(), &bytes))
    }
}

impl AdminClient {
    /// The body of `response`, at most `max_response_bytes` of it.
    async fn read_capped(&self, mut response: reqwest::Response) -> Result<Vec<u8>, ClientError> {
        let too_large = || ClientError::TooLarge {
            target: self.target.clone(),
            limit: self.max_response_bytes,
        };
        if response
            .content_length()
            .is_some_and(|declared| declared > self.max_response_bytes)
        {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|err| ClientError::Unreachable {
                target: self.target.clone(),
                reason: error_chain(&err),
            })?
        {
            if (bytes.len() + chunk.len()) as u64 > self.max_response_bytes {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }
}

/// A request body.
#[derive(Debug, Clone)]
pub enum Body {
    /// JSON.
    Json(Value),
    /// Raw bytes with a content type (e.g. a PEM bundle).
    Raw {
        /// The content type.
        content_type: &'static str,
        /// The bytes.
        bytes: Vec<u8>,
    },
}

fn api_error(status: StatusCode, json: Option<&Value>, bytes: &[u8]) -> ClientError {
    let body = json.and_then(|json| ErrorResponse::deserialize(json).ok());
    match body {
        Some(ErrorResponse { error }) => ClientError::Api {
            status: status.as_u16(),
            code: error.code,
            message: error.message,
        },
        None => ClientError::Unexpected {
            status: status.as_u16(),
            body: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
        },
    }
}

fn describe(target: &AdminTarget) -> String {
    match target {
        AdminTarget::Unix(path) => format!("unix:{}", path.display()),
        AdminTarget::Url(url) => url.to_string(),
    }
}

/// An error and its sources on one line, each said once ("connection refused" is
/// usually a source).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let shown = cause.to_string();
        if !text.contains(&shown) {
            text.push_str(": ");
            text.push_str(&shown);
        }
        source = cause.source();
    }
    text
}

/// Why a request did not reach the gateway: the causes under reqwest's "error sending
/// request for url (…)" (whose URL is made up for a unix socket), and for a socket that
/// is missing or not listened on, what to check.
fn unreachable_reason(unix: bool, err: &reqwest::Error) -> String {
    let mut causes: Vec<String> = Vec::new();
    let mut io_kind = None;
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
        }
        let shown = cause.to_string();
        if !causes.iter().any(|c| c.contains(&shown)) {
            causes.push(shown);
        }
        source = cause.source();
    }
    let reason = match causes.last() {
        Some(last) => last.clone(),
        None => err.to_string(),
    };
    match io_kind {
        Some(std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) if unix => {
            format!(
                "{reason}: no gateway listens on this socket (is `fedgw serve` running? its admin socket is <data_dir>/admin.sock unless [admin] listen says otherwise)"
            )
        }
        _ => reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            "unix:/run/fedgw.sock".parse::<AdminTarget>(),
            Ok(AdminTarget::Unix("/run/fedgw.sock".into()))
        );
        assert_eq!(
            "/run/fedgw.sock".parse::<AdminTarget>(),
            Ok(AdminTarget::Unix("/run/fedgw.sock".into()))
        );
        assert!(matches!(
            "https://gw:8081".parse::<AdminTarget>(),
            Ok(AdminTarget::Url(_))
        ));
        assert!("".parse::<AdminTarget>().is_err());
    }

    #[tokio::test]
    async fn missing_socket_is_unreachable_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let target = AdminTarget::Unix(dir.path().join("nothing.sock"));
        let client = AdminClient::new(&target, None).unwrap();
        let err = client
            .call(Method::GET, "/v1/status", None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ClientError::Unreachable { ref target, .. } if target.ends_with("nothing.sock")),
            "{err}"
        );
        // The cause and what to check, not reqwest's made-up URL.
        let message = err.to_string();
        assert!(message.contains("os error 2"), "{message}");
        assert!(message.contains("is `fedgw serve` running?"), "{message}");
        assert!(!message.contains("fedgw.local"), "{message}");
    }

    #[test]
    fn sec_3_client_tls_reads_pem_or_bundle_roots_and_names_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let td: TrustDomain = "client.example".parse().unwrap();
        let id = "spiffe://client.example/fedgw".parse().unwrap();
        let names = ["localhost".to_owned()];
        let now = time::OffsetDateTime::now_utc();
        let pki = crate::dev::pki::ensure(dir.path(), &td, &id, &names, now).unwrap();
        assert!(ClientTls::from_files(None, None).unwrap().is_none());
        // PEM roots, and a SPIFFE bundle document's authorities as roots.
        for ca in [&pki.web_ca_cert, &pki.bundle] {
            assert!(ClientTls::from_files(Some(ca), None).unwrap().is_some());
        }
        let identity = Some((pki.svid.as_path(), pki.svid_key.as_path()));
        let tls = ClientTls::from_files(Some(&pki.bundle), identity)
            .unwrap()
            .unwrap();

        let missing = dir.path().join("missing.pem");
        assert!(matches!(
            ClientTls::from_files(Some(&missing), None),
            Err(ClientError::TlsFile { ref path, .. }) if *path == missing
        ));
        // A key that is not the certificate's is named.
        let mismatched = Some((pki.svid.as_path(), pki.web_key.as_path()));
        assert!(matches!(
            ClientTls::from_files(None, mismatched),
            Err(ClientError::TlsFile { ref path, .. }) if *path == pki.web_key
        ));
        // TLS settings with a target that does not use TLS are refused, not ignored.
        for target in ["unix:/run/fedgw.sock", "http://127.0.0.1:8081"] {
            let target: AdminTarget = target.parse().unwrap();
            assert!(matches!(
                AdminClient::with_tls(&target, None, Some(&tls)),
                Err(ClientError::TlsNeedsHttps { .. })
            ));
        }
    }

    #[test]
    fn api_errors_keep_code_and_message() {
        let json = serde_json::json!({"error": {"code": "not_found", "message": "no bundle"}});
        let err = api_error(StatusCode::NOT_FOUND, Some(&json), b"");
        assert!(
            matches!(err, ClientError::Api { status: 404, ref code, .. } if code == "not_found")
        );
        let err = api_error(StatusCode::BAD_GATEWAY, None, b"<html>");
        assert!(matches!(err, ClientError::Unexpected { status: 502, .. }));
    }
}
