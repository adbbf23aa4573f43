//! The admin API's contract as Rust types: the request and answer bodies of every
//! route, the query strings, the probe answers and the error codes.
//!
//! The handlers build their answers from these types and read their requests into
//! them; the client side (the CLI's admin verbs, `fedgw agent`) reads answers into
//! them. `docs/openapi.json` describes each type under the schema of the same name
//! (a few are renamed there: see each type), and `tests/openapi.rs` holds the two
//! together: each schema's properties are the type's fields both ways, its `required`
//! members are the ones always sent, values of the type validate against it, and so
//! does every answer of a real gateway.
//!
//! Field order is the order on the wire: reordering fields changes the bytes an
//! answer is sent as. Request bodies, and the queries of the long poll and of a
//! relationship deletion, refuse unknown members (as the handlers always have);
//! answer types accept them when read, so that a client reads a newer gateway's
//! answer. Codes that a newer gateway may add (error and warning codes) are
//! strings in the bodies; [`ErrorCode`] lists the error codes this version answers.
//!
//! This module uses nothing of the rest of the admin API (router, state, handlers),
//! so client code depends on the contract alone. The relationship body,
//! [`RelationshipSpec`], is the registry's: it is re-exported here, not defined.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use spiffe_federation::endpoint::ProxySetting;
use spiffe_federation::{SpiffeId, TrustDomain};
use url::Url;

use crate::config::ProfileName;
pub use crate::registry::RelationshipSpec;

// ---- Errors -----------------------------------------------------------------------

/// Every error answer: `{"error": {"code": …, "message": …}}` (schema `Error`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The error.
    pub error: ApiErrorBody,
}

/// The `error` member of an error answer (schema `ErrorBody`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    /// A stable code: one of [`ErrorCode`] from this version (a string, so that a
    /// client reads the codes of a newer gateway too).
    pub code: String,
    /// What happened, for people. A 500 says only to see the gateway log.
    pub message: String,
}

macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $code:literal,)*) => {
        /// Every error code the admin API answers (schema `ErrorCode`;
        /// `docs/admin-api.md` says which status carries which code).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum ErrorCode {
            $(
                $(#[doc = $doc])*
                #[serde(rename = $code)]
                $variant,
            )*
        }

        impl ErrorCode {
            /// Every code, in the order of the document.
            pub const ALL: &'static [Self] = &[$(Self::$variant),*];

            /// The code as sent, e.g. `not_found`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $code,)*
                }
            }

            /// The code sent as `code`, if this version knows it.
            pub fn from_code(code: &str) -> Option<Self> {
                match code {
                    $($code => Some(Self::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    /// 400: a malformed path segment, query or body.
    InvalidArgument = "invalid_argument",
    /// 400: an uploaded document is not a usable bundle.
    InvalidBundle = "invalid_bundle",
    /// 401: no valid credentials over TCP.
    Unauthenticated = "unauthenticated",
    /// 403: credentials without the route's scope, or an unknown client ID.
    PermissionDenied = "permission_denied",
    /// 404: no such route, bundle, relationship or stored revision.
    NotFound = "not_found",
    /// 405: the route does not take that method.
    MethodNotAllowed = "method_not_allowed",
    /// 409: a relationship with that trust domain exists already.
    AlreadyExists = "already_exists",
    /// 409: the relationship comes from the configuration file.
    ManagedInConfiguration = "managed_in_configuration",
    /// 409: the relationship is a ClusterFederatedTrustDomain object in Kubernetes.
    ManagedInKubernetes = "managed_in_kubernetes",
    /// 409: other relationships' endpoints are authenticated by this bundle.
    RelationshipInUse = "relationship_in_use",
    /// 409: a local domain whose bundle comes from a file or a Workload API.
    ManagedBySource = "managed_by_source",
    /// 409: policy: the bundle is for another trust domain (FED-7).
    TrustDomainMismatch = "trust_domain_mismatch",
    /// 409: policy: the sequence went back.
    SequenceRegression = "sequence_regression",
    /// 409: policy: more authorities than `policy.max_authorities`.
    TooManyAuthorities = "too_many_authorities",
    /// 409: policy: a bootstrap bundle would replace a stored one.
    BootstrapOverStored = "bootstrap_over_stored",
    /// 409: policy: every element of the document was left out.
    AllElementsIgnored = "all_elements_ignored",
    /// 409: policy: an empty `keys` list the relationship does not allow.
    RevocationRefused = "revocation_refused",
    /// 413: the body is larger than the route takes.
    PayloadTooLarge = "payload_too_large",
    /// 408: the body did not arrive within `admin.limits.body_timeout`.
    RequestTimeout = "request_timeout",
    /// 415: a body of a type the route does not take.
    UnsupportedMediaType = "unsupported_media_type",
    /// 422: a relationship body of the wrong shape, or one breaking a rule.
    InvalidRelationship = "invalid_relationship",
    /// 422: JWT-SVID: not a JWS compact serialisation.
    MalformedToken = "malformed_token",
    /// 422: JWT-SVID: an algorithm JWT-SVID does not allow.
    UnsupportedAlgorithm = "unsupported_algorithm",
    /// 422: JWT-SVID: an allowed algorithm this gateway does not implement.
    AlgorithmNotImplemented = "algorithm_not_implemented",
    /// 422: JWT-SVID: a `typ` header other than `JWT` or `JOSE`.
    InvalidType = "invalid_type",
    /// 422: JWT-SVID: a header member that is not allowed.
    UnexpectedHeader = "unexpected_header",
    /// 422: JWT-SVID: no `kid` header.
    MissingKeyId = "missing_key_id",
    /// 422: JWT-SVID: `sub` is not a SPIFFE ID.
    SubjectNotSpiffeId = "subject_not_spiffe_id",
    /// 422: JWT-SVID: no bundle for the token's trust domain.
    NoBundle = "no_bundle",
    /// 422: JWT-SVID: that bundle has no JWT authority with the `kid`.
    UnknownKeyId = "unknown_key_id",
    /// 422: JWT-SVID: the key cannot verify the token's algorithm.
    KeyAlgorithmMismatch = "key_algorithm_mismatch",
    /// 422: JWT-SVID: the signature does not verify.
    BadSignature = "bad_signature",
    /// 422: JWT-SVID: no `exp` claim.
    MissingExpiration = "missing_expiration",
    /// 422: JWT-SVID: no `aud` claim.
    MissingAudience = "missing_audience",
    /// 422: JWT-SVID: a registered claim of the wrong type.
    InvalidClaim = "invalid_claim",
    /// 422: JWT-SVID: expired.
    Expired = "expired",
    /// 422: JWT-SVID: not valid yet.
    NotYetValid = "not_yet_valid",
    /// 422: JWT-SVID: not for this audience.
    AudienceMismatch = "audience_mismatch",
    /// 500: a storage fault; the cause is logged, not returned.
    Internal = "internal",
    /// 503: `admin.watch.max_clients` watch clients are open.
    TooManyWatchers = "too_many_watchers",
    /// 503: the shared store cannot be reached; nothing was changed, the last
    /// snapshot keeps serving. Retry once it is back.
    StoreUnavailable = "store_unavailable",
    /// 503: no relationship registry or poller runs (starting, stopping, or an API
    /// without a gateway).
    Unavailable = "unavailable",
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---- Probes -----------------------------------------------------------------------

/// The body of `GET /healthz` (`text/plain`).
pub const HEALTHZ: &str = "ok\n";

/// The body of `GET /readyz` once the gateway serves (200, `text/plain`).
pub const READY: &str = "ready\n";

/// The body of `GET /readyz` while the gateway serves but its shared store cannot be
/// reached (200: it serves its last snapshot; details in `GET /v1/status`).
pub const READY_DEGRADED: &str = "ready, degraded: the shared store cannot be reached\n";

/// The body of `GET /readyz` before the gateway serves and while it stops (503).
pub const NOT_READY: &str = "not ready\n";

// ---- Status -----------------------------------------------------------------------

/// The body of `GET /v1/status`: every local domain (configuration order), then every
/// foreign domain (by name) (schema `Status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The global revision.
    pub revision: u64,
    /// The domains.
    pub domains: Vec<StatusDomain>,
    /// Supervised tasks (pollers, sinks, followers) that have panicked since start,
    /// each with code `task_panicked`; empty on a healthy gateway.
    pub tasks: Vec<TaskRecord>,
    /// Configured listeners not serving yet, each with code `listener_waiting` and
    /// what it waits for; empty once every listener serves.
    pub waiting_listeners: Vec<WaitingListener>,
    /// The state store.
    pub store: StoreState,
}

/// The state store and whether it answers (schema `StoreState`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreState {
    /// `sled` or `postgres`.
    pub backend: StoreBackend,
    /// `ok`, or `away`: the shared store cannot be reached; the last snapshot keeps
    /// serving and changes are refused with `store_unavailable`.
    pub state: StoreCondition,
    /// While away: since when, RFC 3339.
    pub since: Option<String>,
    /// While away: the last error that said so.
    pub reason: Option<String>,
}

/// Which store (schema `StoreState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    /// The embedded sled database.
    Sled,
    /// A shared PostgreSQL database.
    Postgres,
}

/// Whether the store answers (schema `StoreState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreCondition {
    /// It answers.
    Ok,
    /// It cannot be reached.
    Away,
}

/// One domain of `GET /v1/status` (schema `StatusDomain`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusDomain {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// Served here, or fetched.
    pub role: Role,
    /// The stored bundle's `spiffe_sequence`.
    pub sequence: Option<u64>,
    /// When the stored bundle was accepted, RFC 3339.
    pub accepted_at: Option<String>,
    /// Seconds since then (never negative).
    pub age_seconds: Option<i64>,
    /// The earliest `notAfter` of the stored bundle's X.509 authorities, RFC 3339.
    pub soonest_expiry: Option<String>,
    /// The state and fetch health, as members of this object.
    #[serde(flatten)]
    pub fetch: FetchStatus,
    /// Doubtful things about the domain.
    pub warnings: Vec<Warning>,
}

/// Whether the gateway speaks for a domain or fetches it (schema `Role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Served by this gateway.
    Local,
    /// Fetched (or pushed by an operator).
    Foreign,
}

/// A warning about a trust domain's stored bundle or its configuration, never a
/// refusal (schema `Warning`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    /// A stable code: `revoked`, `shared_ca_key`, `ca_without_trust_domain_id` or
    /// `served_refresh_hint_too_long`.
    pub code: String,
    /// What it is about, for people.
    pub message: String,
}

/// A domain's state and fetch health; members of a status domain, and the `status`
/// of a relationship (schema `FetchStatus`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchStatus {
    /// The state.
    pub state: DomainState,
    /// The last successful fetch (or Workload API answer), RFC 3339.
    pub last_success: Option<String>,
    /// The last failure since then.
    pub last_error: Option<LastError>,
    /// When the next fetch is planned, RFC 3339.
    pub next_attempt: Option<String>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
}

/// The last failure of a domain's fetches (schema `LastError`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    /// When, RFC 3339.
    pub at: String,
    /// A stable name for the failure (`connect`, `tls`, `sequence_regression`, …);
    /// absent from failures recorded before codes existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// What happened.
    pub message: String,
}

/// A trust domain's state, as the API spells it (schema `DomainState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainState {
    /// Local: a bundle is stored and served.
    Serving,
    /// Local: no bundle yet.
    Missing,
    /// Foreign, `https_spiffe`: no bundle is stored for the endpoint SPIFFE ID's trust
    /// domain, so the endpoint cannot be authenticated yet (SPF-3).
    AwaitingBootstrap,
    /// Foreign: the last fetch failed (`consecutive_failures > 0`); local, from a
    /// Workload API: the agent cannot be reached or its bundles are unusable. The last
    /// good bundle, if any, keeps serving.
    Failing,
    /// Foreign: no bundle yet and no failure yet (the first fetch has not finished).
    Pending,
    /// Foreign: the stored bundle has no authorities: the peer revoked every key (an
    /// empty `keys` list its relationship allows, or an operator's), so no SVID of the
    /// domain is trusted. A warning state, never `healthy`.
    Revoked,
    /// Foreign: the newest of the last successful fetch and the stored bundle's
    /// acceptance is older than two refresh intervals.
    Stale,
    /// Foreign: fetched recently, no failure.
    Healthy,
    /// A stored bundle no relationship polls (pushed by an operator, or a bootstrap
    /// bundle); it changes only by hand.
    Unmanaged,
}

/// A supervised task that has panicked at least once (schema `TaskRecord`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task, e.g. `files sink /var/run/bundles` or `poller b.example`.
    pub task: String,
    /// Always `task_panicked`.
    pub code: String,
    /// Panics caught since the gateway started.
    pub panics: u64,
    /// The last panic's message (clipped).
    pub message: String,
    /// When the last panic happened, RFC 3339.
    pub at: String,
    /// When the task starts again, RFC 3339; absent once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts_at: Option<String>,
}

/// A configured listener that is not serving yet, and why (schema
/// `WaitingListener`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingListener {
    /// The listener, e.g. `https_spiffe endpoint`.
    pub listener: String,
    /// The address it binds once it can.
    pub listen: String,
    /// Always `listener_waiting`.
    pub code: String,
    /// What it waits for (clipped).
    pub reason: String,
    /// Since when it has been waiting, RFC 3339.
    pub since: String,
}

// ---- Bundles and the watch API ------------------------------------------------------

/// The full state at one global revision (DIST-5): the body of `GET /v1/bundles`
/// (with or without `wait`) and of each `GET /v1/events` event (schema `BundleList`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleList {
    /// The global revision.
    pub revision: u64,
    /// Every stored bundle.
    pub bundles: Vec<BundleEntry>,
}

/// One stored bundle of the full state (schema `BundleEntry`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleEntry {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// Served here, or fetched.
    pub role: Role,
    /// The bundle's `spiffe_sequence`.
    pub sequence: Option<u64>,
    /// SHA-256 (hex) of the served document.
    pub digest: String,
    /// Where it came from (`fetched from URL`, `operator WHO`, …).
    pub source: String,
    /// When it was accepted, RFC 3339.
    pub accepted_at: String,
    /// How many authorities (X.509, JWT, WIT) it has.
    pub authorities: usize,
    /// The global revision at which it was accepted.
    pub revision: u64,
    /// Doubtful things about it.
    pub warnings: Vec<Warning>,
    /// The SPIFFE bundle document as a JSON object (re-serialised compactly, it is
    /// byte for byte the stored document).
    pub bundle: Value,
}

/// The query of `GET /v1/bundles`: `?wait=REVISION[&timeout=30s]` (the `watch`
/// parameter).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchQuery {
    /// The revision the caller holds: answer once the global revision differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait: Option<u64>,
    /// How long to wait at most (`30`, `"30s"`, `"5m"`); only with `wait`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// The name of every event of `GET /v1/events` (its `event:` field); each carries a
/// [`BundleList`] on one `data:` line, with the revision as its `id:`.
pub const BUNDLES_EVENT: &str = "bundles";

/// The query of `GET /v1/bundles/{td}`: `?format=spiffe|pem`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleQuery {
    /// `spiffe` (the default) or `pem`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// The answer to `PUT /v1/bundles/{td}` and a rollback (schema `Change`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Whether the stored bundle changed.
    pub outcome: ChangeOutcome,
    /// The global revision now (the one already serving when unchanged).
    pub revision: u64,
    /// The parser's lints and the policy's warnings, as text.
    pub warnings: Vec<String>,
    /// Elements of the document that were left out.
    pub ignored: Vec<Ignored>,
}

/// What a bundle change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOutcome {
    /// Stored and served.
    Accepted,
    /// The same bundle was stored already; nothing was written.
    Unchanged,
}

/// An element of an uploaded document that was left out, and why (schema `Ignored`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ignored {
    /// Where in the document, e.g. `keys[2]`.
    pub location: String,
    /// Why.
    pub reason: String,
}

/// The body of `GET /v1/bundles/{td}/history`: stored versions, newest first (schema
/// `History`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The versions.
    pub history: Vec<HistoryEntry>,
}

/// One stored version of a bundle (schema `HistoryEntry`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The global revision it was accepted at.
    pub revision: u64,
    /// Its `spiffe_sequence`.
    pub sequence: Option<u64>,
    /// SHA-256 (hex) of the document.
    pub digest: String,
    /// Where it came from.
    pub source: String,
    /// When it was accepted, RFC 3339.
    pub accepted_at: String,
}

/// The body of `POST /v1/bundles/{td}/rollback` (schema `Rollback`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The global revision of the stored version to accept again.
    pub revision: u64,
}

// ---- Federation relationships -------------------------------------------------------

/// The body of `GET /v1/federation-relationships` (schema `RelationshipList`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelationshipList {
    /// Every relationship, by trust domain.
    pub relationships: Vec<Relationship>,
}

/// A relationship as the API shows it, with its origin, trust chain and fetch status
/// (schema `Relationship`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relationship {
    /// The foreign trust domain.
    pub trust_domain: TrustDomain,
    /// Where it comes from.
    pub origin: Origin,
    /// The endpoint URLs, tried in order.
    pub urls: Vec<Url>,
    /// The endpoint profile.
    pub profile: ProfileName,
    /// `https_spiffe`: the endpoint server's SPIFFE ID.
    pub endpoint_spiffe_id: Option<SpiffeId>,
    /// Whether redirects are followed.
    pub follow_redirects: bool,
    /// `env`, `off` or a proxy URL.
    pub proxy: ProxySetting,
    /// Whether a fetched empty `keys` list (a revocation) is accepted.
    pub allow_revocation: bool,
    /// The trust chain, as members of this object.
    #[serde(flatten)]
    pub chain: TrustChain,
    /// Doubtful things about the relationship.
    pub warnings: Vec<String>,
    /// Its state and fetch health.
    pub status: FetchStatus,
}

/// Where a relationship comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The configuration file: read-only through the API.
    Configuration,
    /// Created through the admin API.
    Api,
    /// A ClusterFederatedTrustDomain object in Kubernetes: read-only through the API.
    Kubernetes,
}

/// A relationship's trust chain (SPF-9, SEC-5): members of [`Relationship`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustChain {
    /// The trust domains whose bundles authenticate the endpoint, nearest first.
    pub depends_on: Vec<TrustDomain>,
    /// How many links the chain has: the length of `depends_on`.
    pub chain_depth: usize,
    /// Where it ends.
    pub chain_end: ChainEnd,
    /// Whether it comes back to a trust domain already in it.
    pub cycle: bool,
}

/// Where a trust chain ends (SPIFFE Federation §7.6; schema `ChainEnd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainEnd {
    /// An `https_web` endpoint, authenticated by Web PKI.
    WebPki,
    /// A self-serving `https_spiffe` endpoint: authenticated by its own trust
    /// domain's previous bundle.
    SelfServing,
    /// A trust domain this gateway serves.
    Local,
    /// A trust domain no relationship fetches, whose first bundle is the bootstrap
    /// bundle of the relationship that needs it.
    Bootstrap,
    /// A trust domain no relationship fetches and no bootstrap bundle gives.
    Static,
    /// The chain comes back to a trust domain already in it.
    Cycle,
}

/// The query of `DELETE /v1/federation-relationships/{td}`: `?force=true`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Delete even while other relationships' endpoints are authenticated with this
    /// trust domain's bundle.
    #[serde(default)]
    pub force: bool,
}

/// The answer to `POST /v1/federation-relationships/{td}/refresh`: the poller's
/// report of the fetch it just made (schema `RefreshReport`). Its members are in
/// alphabetical order, the order this answer has always had on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshReport {
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// A stable name for the failure (`connect`, `tls`, `sequence_regression`, …).
    pub error_code: Option<String>,
    /// The URL that answered, after redirects.
    pub final_url: Option<String>,
    /// When the next poll is planned, RFC 3339.
    pub next_attempt: Option<String>,
    /// What the fetch came to.
    pub outcome: RefreshOutcome,
    /// The authenticated peer.
    pub peer: Option<String>,
    /// The new global revision when accepted.
    pub revision: Option<u64>,
    /// The fetched bundle's sequence.
    pub sequence: Option<u64>,
    /// The relationship.
    pub trust_domain: TrustDomain,
}

/// What a refresh's fetch came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefreshOutcome {
    /// A new bundle was stored.
    Accepted,
    /// The peer serves the bundle already stored.
    Unchanged,
    /// Policy refused the fetched bundle; the last good one stays.
    Rejected,
    /// The fetch failed.
    Failed,
    /// `https_spiffe`: the endpoint cannot be authenticated yet (SPF-3).
    AwaitingBootstrap,
}

// ---- JWT-SVID -----------------------------------------------------------------------

/// The body of `POST /v1/jwt-svid/validate` (schema `JwtValidateRequest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtValidateRequest {
    /// The JWT-SVID, JWS compact serialisation.
    pub token: String,
    /// The audience the token must be for.
    pub audience: String,
}

/// The answer for a valid JWT-SVID (schema `JwtSvid`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtSvid {
    /// The token's `sub`.
    pub spiffe_id: SpiffeId,
    /// Its trust domain, whose bundle verified the token.
    pub trust_domain: TrustDomain,
    /// The `kid` of the key that verified it.
    pub key_id: String,
    /// The `alg`, e.g. `ES256`.
    pub algorithm: String,
    /// `exp`, RFC 3339.
    pub expires_at: String,
    /// The token's whole claims set as sent.
    pub claims: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_unique_and_read_back() {
        let mut seen = std::collections::BTreeSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert_eq!(ErrorCode::from_code(code.as_str()), Some(*code));
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                Value::String(code.as_str().to_owned())
            );
        }
        assert_eq!(ErrorCode::from_code("conflict"), None);
    }

    #[test]
    fn flattened_members_read_back() {
        let text = r#"{"trust_domain":"b.example","role":"foreign","sequence":null,"accepted_at":null,"age_seconds":null,"soonest_expiry":null,"state":"pending","last_success":null,"last_error":{"at":"2026-01-10T12:00:00Z","message":"refused"},"next_attempt":null,"consecutive_failures":0,"warnings":[]}"#;
        let domain: StatusDomain = serde_json::from_str(text).unwrap();
        assert_eq!(domain.fetch.state, DomainState::Pending);
        assert_eq!(domain.fetch.last_error.as_ref().unwrap().code, None);
        assert_eq!(
            serde_json::to_string(&domain).unwrap(),
            text,
            "byte for byte"
        );
    }
}
