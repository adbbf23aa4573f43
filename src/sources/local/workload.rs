//! Local bundles, and the `https_spiffe` endpoint's X509-SVID, from a SPIFFE Workload
//! API (a SPIRE agent's socket), through the `spiffe` crate's client.
//!
//! Owns following the agent's X.509 bundle and JWT bundle streams, turning the local
//! trust domain's authorities into a bundle document handed to a sink (the trust
//! store's submit) only when it changed, following the X509-SVID stream for the
//! endpoint, reconnecting with a capped backoff, and the health the status routes
//! show. It does not own acceptance (policy) or numbering (the trust store).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::StreamExt as _;
use spiffe::transport::Endpoint;
use spiffe::{WorkloadApiClient, WorkloadApiError};
use spiffe_federation::bundle::X509Authority;
use spiffe_federation::{Bundle, SpiffeId, TrustDomain};
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{ChangeFilter, Event, Loaded, LocalSourceError};
use crate::config::DocumentFormat;

/// How long a starting gateway waits for a Workload API's first answer (a bundle, an
/// SVID, or a failure) before it goes on; a failure is retried in the background.
pub const FIRST_ANSWER_WAIT: Duration = Duration::from_secs(15);

/// The first retry after a failure; doubled on each further failure.
pub const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// `last_error.code` when the socket is missing, refuses, or the stream broke.
pub const CODE_UNAVAILABLE: &str = "workload_api_unavailable";
/// `last_error.code` when the agent answered but its bundles are unusable (no bundle
/// for the trust domain, an authority that is not a CA certificate, …).
pub const CODE_BUNDLE: &str = "workload_api_bundle";

/// What the status routes show of a Workload API source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// When the agent last pushed usable material.
    pub last_success: Option<OffsetDateTime>,
    /// The last failure.
    pub last_error: Option<HealthError>,
    /// When the next connection attempt is due, while failing.
    pub next_attempt: Option<OffsetDateTime>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
}

/// A recorded failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthError {
    /// When.
    pub at: OffsetDateTime,
    /// [`CODE_UNAVAILABLE`] or [`CODE_BUNDLE`].
    pub code: &'static str,
    /// The socket and the cause.
    pub message: String,
}

/// The shared, lock-free health of one Workload API source.
#[derive(Debug, Clone)]
pub struct WorkloadHealth {
    socket: Arc<str>,
    state: Arc<ArcSwap<Health>>,
}

impl WorkloadHealth {
    /// A source of `socket` that has not answered yet.
    pub fn new(socket: &str) -> Self {
        Self {
            socket: socket.into(),
            state: Arc::new(ArcSwap::from_pointee(Health::default())),
        }
    }

    /// The configured socket.
    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// The health now.
    pub fn load(&self) -> Arc<Health> {
        self.state.load_full()
    }

    fn succeeded(&self) {
        let mut next = Health::clone(&self.state.load());
        next.last_success = Some(OffsetDateTime::now_utc());
        next.next_attempt = None;
        next.consecutive_failures = 0;
        self.state.store(Arc::new(next));
    }

    fn failed(&self, failure: &Failure, retry_in: Duration) {
        let now = OffsetDateTime::now_utc();
        let mut next = Health::clone(&self.state.load());
        next.consecutive_failures = next.consecutive_failures.saturating_add(1);
        next.last_error = Some(HealthError {
            at: now,
            code: failure.code(),
            message: failure.message(&self.socket),
        });
        next.next_attempt = Some(now + retry_in);
        self.state.store(Arc::new(next));
    }
}

/// Why an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// The socket could not be reached, or the stream failed or ended.
    Unavailable(String),
    /// The agent answered with material that cannot be used.
    Bundle(String),
}

impl Failure {
    fn code(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => CODE_UNAVAILABLE,
            Self::Bundle(_) => CODE_BUNDLE,
        }
    }

    fn message(&self, socket: &str) -> String {
        match self {
            Self::Unavailable(cause) => format!("Workload API {socket} unavailable: {cause}"),
            Self::Bundle(cause) => format!("Workload API {socket}: {cause}"),
        }
    }

    /// An error of the client: the agent refusing this workload is an answer (no
    /// registration entry matches it), anything else means it could not be reached.
    fn unavailable(err: &WorkloadApiError) -> Self {
        match err {
            WorkloadApiError::NoIdentityIssued | WorkloadApiError::PermissionDenied(_) => {
                Self::Bundle(format!(
                    "{}: no registration entry matches this process",
                    chain(err)
                ))
            }
            _ => Self::Unavailable(chain(err)),
        }
    }
}

/// An error with its sources, `a: b: c`, without repeating a source whose text the
/// outer message already holds.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let part = inner.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = inner.source();
    }
    text
}

/// The wait before attempt `failures + 1`: [`MIN_BACKOFF`] doubled per failure,
/// capped at [`MAX_BACKOFF`].
pub fn backoff(failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(16);
    MIN_BACKOFF.saturating_mul(1 << shift).min(MAX_BACKOFF)
}

/// The SPIFFE bundle document of `trust_domain` holding `x509` (DER CA certificates)
/// and `jwt` (JWK JSON objects) authorities, parsed as a local file would be.
///
/// # Errors
/// A message naming the authority that is unusable.
pub fn loaded(
    trust_domain: &TrustDomain,
    x509: &[Vec<u8>],
    jwt: &[Vec<u8>],
    max_bytes: usize,
) -> Result<Loaded, String> {
    let mut bundle = Bundle::new(trust_domain.clone());
    for (index, der) in x509.iter().enumerate() {
        let authority = X509Authority::from_der(der.clone())
            .map_err(|err| format!("X.509 authority {index} of {trust_domain}: {err}"))?;
        bundle.add_x509_authority(authority);
    }
    let mut document: serde_json::Value = serde_json::from_slice(&bundle.to_json())
        .map_err(|err| format!("bundle of {trust_domain}: {err}"))?;
    let keys = document
        .get_mut("keys")
        .and_then(serde_json::Value::as_array_mut)
        .ok_or_else(|| format!("bundle of {trust_domain}: no keys member"))?;
    for (index, jwk) in jwt.iter().enumerate() {
        let mut key: serde_json::Value = serde_json::from_slice(jwk)
            .map_err(|err| format!("JWT authority {index} of {trust_domain}: {err}"))?;
        let Some(members) = key.as_object_mut() else {
            return Err(format!(
                "JWT authority {index} of {trust_domain}: not a JSON object"
            ));
        };
        // They come from the JWT bundle stream: JWT authorities by definition, whether
        // or not the agent wrote `use`.
        members.insert("use".to_owned(), "jwt-svid".into());
        keys.push(key);
    }
    let bytes =
        serde_json::to_vec(&document).map_err(|err| format!("bundle of {trust_domain}: {err}"))?;
    super::parse(
        &bytes,
        std::path::Path::new("workload API"),
        DocumentFormat::Spiffe,
        trust_domain,
        max_bytes,
    )
    .map_err(|err| match err {
        LocalSourceError::Invalid { source, .. } => {
            format!("bundle of {trust_domain} is invalid: {source}")
        }
        other => other.to_string(),
    })
}

/// A local trust domain's bundle as the agent pushes it.
#[derive(Debug, Clone)]
pub struct BundleFollower {
    /// The socket, as configured (for messages).
    pub socket: String,
    /// The socket, parsed.
    pub endpoint: Endpoint,
    /// The local trust domain.
    pub trust_domain: TrustDomain,
    /// `policy.max_document_bytes`.
    pub max_bytes: usize,
    /// Where the outcome of each attempt is shown.
    pub health: WorkloadHealth,
}

impl BundleFollower {
    /// Follow the agent until `cancel` fires: connect, read both bundle streams, and
    /// call `sink` with each changed bundle; on a failure, record it, wait
    /// [`backoff`] and connect again. `first` is sent once, after the first attempt
    /// (delivered or failed), so a starting gateway can wait for it.
    pub async fn run<S, F>(
        self,
        cancel: CancellationToken,
        first: Option<tokio::sync::oneshot::Sender<()>>,
        mut sink: S,
    ) where
        S: FnMut(Event) -> F,
        F: Future<Output = ()>,
    {
        let mut first = first;
        let mut filter = ChangeFilter::default();
        loop {
            let failure = tokio::select! {
                () = cancel.cancelled() => return,
                failure = self.attempt(&mut filter, &mut sink, &mut first) => failure,
            };
            let wait = backoff(self.health.load().consecutive_failures.saturating_add(1));
            self.health.failed(&failure, wait);
            tracing::warn!(
                trust_domain = %self.trust_domain,
                code = failure.code(),
                retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "{}; the last good bundle keeps serving",
                failure.message(&self.socket)
            );
            if let Some(tx) = first.take() {
                let _ignored = tx.send(());
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One connection: returns why it ended.
    async fn attempt<S, F>(
        &self,
        filter: &mut ChangeFilter,
        sink: &mut S,
        first: &mut Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Failure
    where
        S: FnMut(Event) -> F,
        F: Future<Output = ()>,
    {
        let client = match WorkloadApiClient::connect(self.endpoint.clone()).await {
            Ok(client) => client,
            Err(err) => return Failure::unavailable(&err),
        };
        let mut x509_stream = match client.stream_x509_bundles().await {
            Ok(stream) => stream,
            Err(err) => return Failure::unavailable(&err),
        };
        let mut jwt_stream = match client.stream_jwt_bundles().await {
            Ok(stream) => stream,
            Err(err) => return Failure::unavailable(&err),
        };
        let td = match spiffe::TrustDomain::new(self.trust_domain.as_str()) {
            Ok(td) => td,
            Err(err) => return Failure::Bundle(err.to_string()),
        };
        let mut x509: Option<Vec<Vec<u8>>> = None;
        let mut jwt: Option<Vec<Vec<u8>>> = None;
        loop {
            tokio::select! {
                item = x509_stream.next() => match item {
                    Some(Ok(set)) => match set.get(&td) {
                        Some(bundle) => {
                            x509 = Some(bundle.authorities().iter().map(|c| c.as_bytes().to_vec()).collect());
                        }
                        None => return Failure::Bundle(format!("its X.509 bundles hold none for {}", self.trust_domain)),
                    },
                    Some(Err(err)) => return Failure::unavailable(&err),
                    None => return Failure::Unavailable("the X.509 bundle stream ended".to_owned()),
                },
                item = jwt_stream.next() => match item {
                    Some(Ok(set)) => {
                        // A trust domain without JWT authorities may be absent from the set.
                        jwt = Some(set.get(&td).map(|bundle| {
                            bundle.jwt_authorities().map(|a| a.jwk_json().to_vec()).collect()
                        }).unwrap_or_default());
                    }
                    Some(Err(err)) => return Failure::unavailable(&err),
                    None => return Failure::Unavailable("the JWT bundle stream ended".to_owned()),
                },
            }
            let (Some(x509), Some(jwt)) = (&x509, &jwt) else {
                continue;
            };
            match loaded(&self.trust_domain, x509, jwt, self.max_bytes) {
                Ok(loaded) => {
                    self.health.succeeded();
                    if let Some(event) = filter.observe(Ok(loaded)) {
                        sink(event).await;
                    }
                    if let Some(tx) = first.take() {
                        let _ignored = tx.send(());
                    }
                }
                Err(message) => return Failure::Bundle(message),
            }
        }
    }
}

/// An X509-SVID and its key, DER, as the endpoint serves them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvidMaterial {
    /// Leaf first.
    pub chain: Vec<Vec<u8>>,
    /// PKCS#8.
    pub key: Vec<u8>,
}

/// Follow the agent's X509-SVIDs for `endpoint_id` until `cancel` fires, publishing
/// each new one in `out`; reconnect with [`backoff`] on a failure, keeping the last
/// SVID published. `failed` is sent once, at the first failure, so a starting gateway
/// waits no longer for an agent that is not there.
pub async fn follow_svid(
    socket: String,
    endpoint: Endpoint,
    endpoint_id: SpiffeId,
    out: Arc<watch::Sender<Option<Arc<SvidMaterial>>>>,
    failed: Option<tokio::sync::oneshot::Sender<()>>,
    cancel: CancellationToken,
) {
    let mut failed = failed;
    let mut failures = 0_u32;
    loop {
        let failure = tokio::select! {
            () = cancel.cancelled() => return,
            failure = svid_attempt(&endpoint, &endpoint_id, &out, &mut failures) => failure,
        };
        if let Some(tx) = failed.take() {
            let _ignored = tx.send(());
        }
        failures = failures.saturating_add(1);
        let wait = backoff(failures);
        tracing::warn!(
            code = failure.code(),
            retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            "https_spiffe endpoint SVID: {}; the last SVID keeps serving",
            failure.message(&socket)
        );
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

async fn svid_attempt(
    endpoint: &Endpoint,
    endpoint_id: &SpiffeId,
    out: &watch::Sender<Option<Arc<SvidMaterial>>>,
    failures: &mut u32,
) -> Failure {
    let client = match WorkloadApiClient::connect(endpoint.clone()).await {
        Ok(client) => client,
        Err(err) => return Failure::unavailable(&err),
    };
    let mut stream = match client.stream_x509_contexts().await {
        Ok(stream) => stream,
        Err(err) => return Failure::unavailable(&err),
    };
    let wanted = endpoint_id.to_string();
    loop {
        let context = match stream.next().await {
            Some(Ok(context)) => context,
            Some(Err(err)) => return Failure::unavailable(&err),
            None => return Failure::Unavailable("the X509-SVID stream ended".to_owned()),
        };
        let Some(svid) = context
            .svids()
            .iter()
            .find(|svid| svid.spiffe_id().to_string() == wanted)
        else {
            let offered: Vec<String> = context
                .svids()
                .iter()
                .map(|svid| svid.spiffe_id().to_string())
                .collect();
            return Failure::Bundle(format!(
                "no X509-SVID for {wanted} (offered: {}); add a registration entry for it",
                if offered.is_empty() {
                    "none".to_owned()
                } else {
                    offered.join(", ")
                }
            ));
        };
        let material = SvidMaterial {
            chain: svid
                .cert_chain()
                .iter()
                .map(|cert| cert.as_bytes().to_vec())
                .collect(),
            key: svid.private_key().as_bytes().to_vec(),
        };
        *failures = 0;
        out.send_if_modified(|current| {
            if current.as_deref() == Some(&material) {
                return false;
            }
            *current = Some(Arc::new(material));
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn jwt_authorities_become_jwt_svid_keys() {
        let td: TrustDomain = "wl.example".parse().unwrap();
        let jwk = br#"{"kty":"EC","kid":"k1","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
        let loaded = loaded(&td, &[], &[jwk.to_vec()], 4096).unwrap();
        assert_eq!(loaded.bundle.jwt_authorities().len(), 1);
        assert!(loaded.bundle.jwt_authorities().contains_key("k1"));
        let bad = loaded_err(&td, b"[1]");
        assert!(bad.contains("JWT authority 0 of wl.example"), "{bad}");
        let not_ca = super::loaded(&td, &[b"not der".to_vec()], &[], 4096).unwrap_err();
        assert!(
            not_ca.contains("X.509 authority 0 of wl.example"),
            "{not_ca}"
        );
    }

    fn loaded_err(td: &TrustDomain, jwk: &[u8]) -> String {
        super::loaded(td, &[], &[jwk.to_vec()], 4096).unwrap_err()
    }

    #[tokio::test]
    async fn a_missing_socket_is_recorded_with_code_and_socket() {
        let dir = tempfile::tempdir().unwrap();
        let socket = format!("unix://{}", dir.path().join("agent.sock").display());
        let health = WorkloadHealth::new(&socket);
        let follower = BundleFollower {
            socket: socket.clone(),
            endpoint: Endpoint::parse(&socket).unwrap(),
            trust_domain: "wl.example".parse().unwrap(),
            max_bytes: 4096,
            health: health.clone(),
        };
        let cancel = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(follower.run(cancel.clone(), Some(tx), |_event| async {}));
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .unwrap()
            .unwrap();
        let now = health.load();
        assert_eq!(now.consecutive_failures, 1);
        let error = now.last_error.as_ref().unwrap();
        assert_eq!(error.code, CODE_UNAVAILABLE);
        assert!(error.message.contains(&socket), "{}", error.message);
        assert!(now.next_attempt.is_some());
        cancel.cancel();
        task.await.unwrap();
    }
}
