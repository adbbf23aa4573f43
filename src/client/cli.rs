//! The CLI's admin verbs: turn arguments into admin API calls and answers into tables
//! or JSON. Names mirror `spire-server federation …` and `spire-server bundle …` where
//! they overlap.
//!
//! Owns building requests and formatting answers, which it reads into the API
//! contract's types ([`crate::admin::api`]); `--json` prints the answer as received.
//! It does not own argument parsing (`main.rs`), the transport
//! ([`crate::client::admin_client`]) or the shapes themselves.

use std::path::PathBuf;

use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};
use spiffe_federation::endpoint::ProxySetting;
use spiffe_federation::{SpiffeId, TrustDomain};
use url::Url;

use crate::admin::api::{
    BundleList, Change, History, JwtSvid, JwtValidateRequest, LastError, RefreshOutcome,
    RefreshReport, Relationship, RelationshipList, Status, Warning,
};
use crate::client::admin_client::{AdminClient, Answer, Body, ClientError};
use crate::config::{DocumentFormat, ProfileName};
use crate::registry::cftd::Cftd;

pub mod args;
pub mod exit;
pub mod operands;
pub mod spire_flags;

/// The default admin address: the socket of the embedded default configuration.
pub const DEFAULT_ADMIN: &str = "unix:fedgw-data/admin.sock";

/// What a CLI verb prints.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Text for people.
    Text(String),
    /// JSON for scripts.
    Json(Value),
    /// Raw bytes (a bundle document).
    Raw(Vec<u8>),
}

/// Why a verb failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The admin API call failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A `--data` body has no valid `trust_domain` to name the relationship to update.
    #[error("the --data body must name the relationship to update in trust_domain: {reason}")]
    NoTrustDomain {
        /// What is wrong.
        reason: String,
    },
    /// `federation apply` stopped at an object the gateway refused.
    #[error("{object}: {source} (applied before it: {})", if .applied.is_empty() { "nothing" } else { .applied.as_str() })]
    Apply {
        /// The object: trust domain, document, metadata.name.
        object: String,
        /// What was applied before it.
        applied: String,
        /// Why it was refused.
        source: Box<CliError>,
    },
    /// `federation refresh`: the fetch ran and failed, or its bundle was refused; the
    /// gateway keeps its last good bundle.
    #[error("{trust_domain}: refresh {outcome}{}: {message}", code_suffix(.code.as_deref(), .outcome))]
    RefreshFailed {
        /// The relationship.
        trust_domain: TrustDomain,
        /// `failed`, `rejected` or `awaiting_bootstrap`.
        outcome: String,
        /// The failure's stable code (`connect`, `tls`, `sequence_regression`, …).
        code: Option<String>,
        /// Why, as the gateway says it.
        message: String,
        /// The gateway's whole answer, printed with `--json`.
        answer: Value,
    },
    /// A local file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The fields of a federation relationship given on the command line (the flags of
/// `spire-server federation create`, spelled the GNU way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationshipArgs {
    /// The foreign trust domain (`--trust-domain`; never inferred from the URL).
    pub trust_domain: TrustDomain,
    /// Endpoint URLs, tried in order (`--bundle-endpoint-url`, repeatable).
    pub urls: Vec<Url>,
    /// The profile (`--bundle-endpoint-profile`).
    pub profile: ProfileName,
    /// `https_spiffe`: the endpoint's SPIFFE ID (`--endpoint-spiffe-id`).
    pub endpoint_spiffe_id: Option<SpiffeId>,
    /// `https_spiffe`: a bootstrap bundle file (`--trust-domain-bundle-path`).
    pub bootstrap_bundle: Option<PathBuf>,
    /// Its format (`--trust-domain-bundle-format`); when absent, PEM if the file is
    /// PEM, else SPIFFE bundle JSON.
    pub bootstrap_format: Option<DocumentFormat>,
    /// `https_web`: extra CA roots, a PEM file (`--extra-ca-roots`).
    pub extra_ca_roots: Option<PathBuf>,
    /// Whether redirects are followed (`--no-follow-redirects` turns them off).
    pub follow_redirects: bool,
    /// `--proxy`: `env`, `off` or a proxy URL; the gateway's default when absent.
    pub proxy: Option<ProxySetting>,
    /// Accept a fetched empty `keys` list, a revocation (`--allow-revocation`).
    pub allow_revocation: bool,
}

/// What `fedgw federation create|update` sends: built from flags, or a whole JSON
/// body given with `--data`.
#[derive(Debug, Clone, PartialEq)]
pub enum RelationshipBody {
    /// From flags; files are read when the body is made.
    Args(RelationshipArgs),
    /// A JSON body as the admin API takes it (`--data FILE|-`), sent as is.
    Data(Value),
}

impl RelationshipArgs {
    /// The JSON body of a create or update call. Files are read here and sent inline,
    /// so the gateway does not need access to the caller's filesystem.
    ///
    /// # Errors
    /// [`CliError::Read`] when a referenced file cannot be read.
    pub async fn to_json(&self) -> Result<Value, CliError> {
        let mut body = json!({
            "trust_domain": self.trust_domain,
            "urls": self.urls,
            "profile": self.profile,
            "follow_redirects": self.follow_redirects,
            "allow_revocation": self.allow_revocation,
        });
        if let Some(id) = &self.endpoint_spiffe_id {
            body["endpoint_spiffe_id"] = json!(id);
        }
        if let Some(path) = &self.bootstrap_bundle {
            let document = read(path).await?;
            let format = self.bootstrap_format.unwrap_or_else(|| {
                if exit::looks_like_pem(document.as_bytes()) {
                    DocumentFormat::Pem
                } else {
                    DocumentFormat::Spiffe
                }
            });
            body["bootstrap_bundle"] = json!(document);
            body["bootstrap_format"] = json!(format);
        }
        if let Some(path) = &self.extra_ca_roots {
            body["extra_ca_roots_pem"] = json!(read(path).await?);
        }
        if let Some(proxy) = &self.proxy {
            body["proxy"] = json!(proxy);
        }
        Ok(body)
    }
}

impl RelationshipBody {
    /// The JSON to send.
    ///
    /// # Errors
    /// [`CliError::Read`] when a file named by a flag cannot be read.
    pub async fn to_json(&self) -> Result<Value, CliError> {
        match self {
            Self::Args(args) => args.to_json().await,
            Self::Data(value) => Ok(value.clone()),
        }
    }

    /// The trust domain an update replaces: the flag's, or the body's
    /// `trust_domain` member.
    ///
    /// # Errors
    /// [`CliError::NoTrustDomain`] when a `--data` body has no valid `trust_domain`.
    pub fn trust_domain(&self) -> Result<TrustDomain, CliError> {
        match self {
            Self::Args(args) => Ok(args.trust_domain.clone()),
            Self::Data(value) => {
                let name = value
                    .get("trust_domain")
                    .and_then(Value::as_str)
                    .ok_or_else(|| CliError::NoTrustDomain {
                        reason: "no \"trust_domain\" string".to_owned(),
                    })?;
                name.parse().map_err(|err| CliError::NoTrustDomain {
                    reason: format!("{name:?}: {err}"),
                })
            }
        }
    }
}

/// ` (code)` when the code says more than the outcome.
fn code_suffix(code: Option<&str>, outcome: &str) -> String {
    code.filter(|code| *code != outcome)
        .map(|code| format!(" ({code})"))
        .unwrap_or_default()
}

async fn read(path: &PathBuf) -> Result<String, CliError> {
    tokio::fs::read_to_string(path)
        .await
        .map_err(|source| CliError::Read {
            path: path.clone(),
            source,
        })
}

/// `fedgw federation create`: answers with the created relationship.
///
/// # Errors
/// [`CliError`] from the file reads or the API.
pub async fn federation_create(
    client: &AdminClient,
    body: &RelationshipBody,
    json: bool,
) -> Result<Output, CliError> {
    let answer = client
        .call(
            Method::POST,
            "/v1/federation-relationships",
            Some(Body::Json(body.to_json().await?)),
        )
        .await?;
    relationship_output(answer, json, "created")
}

/// `fedgw federation update` (replaces a relationship created through the API and
/// restarts its polling).
///
/// # Errors
/// [`CliError`] from the file reads or the API.
pub async fn federation_update(
    client: &AdminClient,
    body: &RelationshipBody,
    json: bool,
) -> Result<Output, CliError> {
    let path = format!("/v1/federation-relationships/{}", body.trust_domain()?);
    let answer = client
        .call(Method::PUT, &path, Some(Body::Json(body.to_json().await?)))
        .await?;
    relationship_output(answer, json, "updated")
}

/// What `fedgw federation apply` did with one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyOutcome {
    /// `--dry-run`: parsed and checked, nothing sent.
    Valid,
    /// No relationship with its trust domain existed; created.
    Created,
    /// One existed with other endpoint fields; replaced (its polling restarts).
    Updated,
    /// One existed with the same endpoint fields; left alone.
    Unchanged,
}

/// `fedgw federation apply -f FILE`: create each ClusterFederatedTrustDomain's
/// relationship, or replace the one created through the API when its URL, profile,
/// endpoint SPIFFE ID, redirects or proxy differ; leave it alone otherwise, so
/// applying the same file twice changes nothing. A `trustDomainBundle` alone does not
/// make a relationship differ: the API does not show bootstrap bundles, and one only
/// matters before the first fetch. Without a client (`--dry-run`) nothing is sent and
/// each object is reported valid. Stops at the first refusal, naming what was applied
/// before it.
///
/// # Errors
/// [`CliError::Apply`] naming the object and what was applied before it.
pub async fn federation_apply(
    client: Option<&AdminClient>,
    objects: &[Cftd],
    json: bool,
) -> Result<Output, CliError> {
    let dry_run = client.is_none();
    let mut results: Vec<(&Cftd, ApplyOutcome)> = Vec::new();
    for object in objects {
        let outcome = match client {
            None => Ok(ApplyOutcome::Valid),
            Some(client) => apply_one(client, object).await,
        };
        match outcome {
            Ok(outcome) => results.push((object, outcome)),
            Err(source) => {
                return Err(CliError::Apply {
                    object: describe(object),
                    applied: results
                        .iter()
                        .map(|(o, outcome)| format!("{} {}", o.spec.trust_domain, outcome.label()))
                        .collect::<Vec<_>>()
                        .join(", "),
                    source: Box::new(source),
                });
            }
        }
    }
    if json {
        let items: Vec<Value> = results
            .iter()
            .map(|(o, outcome)| {
                json!({
                    "location": o.location,
                    "name": o.name,
                    "trust_domain": o.spec.trust_domain,
                    "outcome": outcome,
                    "notes": o.notes,
                })
            })
            .collect();
        return Ok(Output::Json(
            json!({ "dry_run": dry_run, "results": items }),
        ));
    }
    let mut out = String::new();
    for (object, outcome) in &results {
        out.push_str(&format!("{}: {}\n", outcome.label(), describe(object)));
        for note in &object.notes {
            out.push_str(&format!("  note: {note}\n"));
        }
    }
    if dry_run {
        out.push_str("dry run: nothing was sent to the gateway\n");
    }
    Ok(Output::Text(out))
}

impl ApplyOutcome {
    /// The word printed for it (also its JSON value).
    pub fn label(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Unchanged => "unchanged",
        }
    }
}

fn describe(object: &Cftd) -> String {
    format!(
        "{} ({}, metadata.name {:?})",
        object.spec.trust_domain, object.location, object.name
    )
}

async fn apply_one(client: &AdminClient, object: &Cftd) -> Result<ApplyOutcome, CliError> {
    let td = &object.spec.trust_domain;
    let path = format!("/v1/federation-relationships/{td}");
    let body = json!(object.spec);
    let current: Relationship = match client.call(Method::GET, &path, None).await {
        Ok(answer) => answer.decode()?,
        Err(ClientError::Api { status: 404, .. }) => {
            client
                .call(
                    Method::POST,
                    "/v1/federation-relationships",
                    Some(Body::Json(body)),
                )
                .await?;
            return Ok(ApplyOutcome::Created);
        }
        Err(err) => return Err(err.into()),
    };
    let spec = &object.spec;
    let same = current.urls == spec.to_entry().endpoint_urls()
        && current.profile == spec.profile
        && current.endpoint_spiffe_id == spec.endpoint_spiffe_id
        && current.follow_redirects == spec.follow_redirects
        && current.proxy == spec.proxy
        && current.allow_revocation == spec.allow_revocation;
    if same {
        return Ok(ApplyOutcome::Unchanged);
    }
    // A relationship of the configuration file is refused here by the API, naming it.
    client
        .call(Method::PUT, &path, Some(Body::Json(body)))
        .await?;
    Ok(ApplyOutcome::Updated)
}

/// `fedgw federation list`.
///
/// # Errors
/// [`CliError`] from the API.
pub async fn federation_list(client: &AdminClient, json: bool) -> Result<Output, CliError> {
    let answer = client
        .call(Method::GET, "/v1/federation-relationships", None)
        .await?;
    let list: RelationshipList = answer.decode()?;
    if json {
        return Ok(Output::Json(received(answer)));
    }
    let rows: Vec<Vec<String>> = list
        .relationships
        .iter()
        .map(|r| {
            vec![
                r.trust_domain.to_string(),
                word(&r.origin),
                word(&r.profile),
                r.urls
                    .first()
                    .map_or_else(|| "-".to_owned(), Url::to_string),
                word(&r.status.state),
            ]
        })
        .collect();
    Ok(Output::Text(table(
        &["TRUST DOMAIN", "ORIGIN", "PROFILE", "URL", "STATE"],
        &rows,
    )))
}

/// `fedgw federation show TD`.
///
/// # Errors
/// [`CliError`] from the API.
pub async fn federation_show(
    client: &AdminClient,
    td: &TrustDomain,
    json: bool,
) -> Result<Output, CliError> {
    let answer = client
        .call(
            Method::GET,
            &format!("/v1/federation-relationships/{td}"),
            None,
        )
        .await?;
    relationship_output(answer, json, "relationship")
}

/// `fedgw federation delete --trust-domain TD [--force]`: stops polling and removes
/// the bundle everywhere (POLL-4); `force` deletes even while other relationships'
/// endpoints are authenticated by this trust domain's bundle.
///
/// # Errors
/// [`CliError`] from the API.
pub async fn federation_delete(
    client: &AdminClient,
    td: &TrustDomain,
    force: bool,
    json: bool,
) -> Result<Output, CliError> {
    let query = if force { "?force=true" } else { "" };
    client
        .call(
            Method::DELETE,
            &format!("/v1/federation-relationships/{td}{query}"),
            None,
        )
        .await?;
    if json {
        return Ok(Output::Json(json!({"trust_domain": td, "deleted": true})));
    }
    Ok(Output::Text(format!(
        "deleted the relationship with {td} and its bundle\n"
    )))
}

/// `fedgw federation refresh TD`: fetch now. An `accepted` or `unchanged` bundle is
/// success; any other outcome (`failed`, `rejected`, `awaiting_bootstrap`) is
/// [`CliError::RefreshFailed`] with the gateway's code and message.
///
/// # Errors
/// [`CliError`] from the API; [`CliError::RefreshFailed`].
pub async fn federation_refresh(
    client: &AdminClient,
    td: &TrustDomain,
    json: bool,
) -> Result<Output, CliError> {
    let answer = client
        .call(
            Method::POST,
            &format!("/v1/federation-relationships/{td}/refresh"),
            None,
        )
        .await?;
    let report: RefreshReport = answer.decode()?;
    let value = received(answer);
    let outcome = word(&report.outcome);
    if !matches!(
        report.outcome,
        RefreshOutcome::Accepted | RefreshOutcome::Unchanged
    ) {
        let message = match report.error {
            Some(message) => message,
            None if report.outcome == RefreshOutcome::AwaitingBootstrap => {
                "no bundle of the endpoint SPIFFE ID's trust domain is stored yet, so the endpoint cannot be authenticated".to_owned()
            }
            None => "the gateway gave no reason".to_owned(),
        };
        return Err(CliError::RefreshFailed {
            trust_domain: td.clone(),
            outcome,
            code: report.error_code,
            message,
            answer: value,
        });
    }
    if json {
        return Ok(Output::Json(value));
    }
    let mut line = format!("{td}: {outcome}");
    if let Some(revision) = report.revision {
        line.push_str(&format!(", revision {revision}"));
    }
    if let Some(sequence) = report.sequence {
        line.push_str(&format!(", sequence {sequence}"));
    }
    Ok(Output::Text(line + "\n"))
}

/// `fedgw bundle list`.
///
/// # Errors
/// [`CliError`] from the API.
pub async fn bundle_list(client: &AdminClient, json: bool) -> Result<Output, CliError> {
    let answer = client.call(Method::GET, "/v1/bundles", None).await?;
    let list: BundleList = answer.decode()?;
    if json {
        return Ok(Output::Json(received(answer)));
    }
    let rows: Vec<Vec<String>> = list
        .bundles
        .iter()
        .map(|b| {
            vec![
                b.trust_domain.to_string(),
                word(&b.sequence),
                b.authorities.to_string(),
                b.source.clone(),
                b.accepted_at.clone(),
            ]
        })
        .collect();
    Ok(Output::Text(table(
        &[
            "TRUST DOMAIN",
            "SEQUENCE",
            "AUTHORITIES",
            "SOURCE",
            "ACCEPTED",
        ],
        &rows,
    )))
}

/// `fedgw bundle show TD [--format pem]`: the document itself.
///
/// # Errors
/// [`CliError`] from the API.
pub async fn bundle_show(
    client: &AdminClient,
    td: &TrustDomain,
    format: DocumentFormat,
) -> Result<Output, CliError> {
    let format = match format {
        DocumentFormat::Spiffe => "spiffe",
        DocumentFormat::Pem => "pem",
    };
    let answer = client
        .call(
            Method::GET,
            &format!("/v1/bundles/{td}?format={format}"),
            None,
        )
        .await?;
    Ok(Output::Raw(answer.body))
}

/// `fedgw bundle set TD FILE`: an operator override (STO-4).
///
/// # Errors
/// [`CliError`] from the file read or the API.
pub async fn bundle_set(
    client: &AdminClient,
    td: &TrustDomain,
    document: Vec<u8>,
    format: DocumentFormat,
    json: bool,
) -> Result<Output, CliError> {
    let content_type = match format {
        DocumentFormat::Spiffe => "application/json",
        DocumentFormat::Pem => "application/x-pem-file",
    };
    let answer = client
        .call(
            Method::PUT,
            &format!("/v1/bundles/{td}"),
            Some(Body::Raw {
                content_type,
                bytes: document,
            }),
        )
        .await?;
    let change: Change = answer.decode()?;
    if json {
        return Ok(Output::Json(received(answer)));
    }
    Ok(Output::Text(format!("{td}: {}\n", word(&change.outcome))))
}

/// `fedgw bundle delete TD`.
///
/// # Errors
/// [`CliError`] from the API.
pub async fn bundle_delete(client: &AdminClient, td: &TrustDomain) -> Result<Output, CliError> {
    client
        .call(Method::DELETE, &format!("/v1/bundles/{td}"), None)
        .await?;
    Ok(Output::Text(format!("deleted the bundle of {td}\n")))
}

/// `fedgw bundle history TD`.
///
/// # Errors
/// [`CliError`] from the API.
pub async fn bundle_history(
    client: &AdminClient,
    td: &TrustDomain,
    json: bool,
) -> Result<Output, CliError> {
    let answer = client
        .call(Method::GET, &format!("/v1/bundles/{td}/history"), None)
        .await?;
    let history: History = answer.decode()?;
    if json {
        return Ok(Output::Json(received(answer)));
    }
    let rows: Vec<Vec<String>> = history
        .history
        .iter()
        .map(|h| {
            vec![
                h.revision.to_string(),
                word(&h.sequence),
                h.source.clone(),
                h.accepted_at.clone(),
                h.digest.chars().take(16).collect(),
            ]
        })
        .collect();
    Ok(Output::Text(table(
        &["REVISION", "SEQUENCE", "SOURCE", "ACCEPTED", "SHA-256"],
        &rows,
    )))
}

/// `fedgw status`.
///
/// # Errors
/// [`CliError`] from the API.
pub async fn status(client: &AdminClient, json: bool) -> Result<Output, CliError> {
    let answer = client.call(Method::GET, "/v1/status", None).await?;
    let status: Status = answer.decode()?;
    if json {
        return Ok(Output::Json(received(answer)));
    }
    let rows: Vec<Vec<String>> = status
        .domains
        .iter()
        .map(|d| {
            vec![
                d.trust_domain.to_string(),
                word(&d.role),
                word(&d.fetch.state),
                word(&d.sequence),
                word(&d.age_seconds),
                word(&d.soonest_expiry),
                warning_codes(&d.warnings),
                d.fetch
                    .last_error
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), last_error),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "TRUST DOMAIN",
            "ROLE",
            "STATE",
            "SEQUENCE",
            "AGE (s)",
            "SOONEST EXPIRY",
            "WARNINGS",
            "LAST ERROR",
        ],
        &rows,
    );
    // Supervised tasks that panicked: a bug in the gateway, shown until it restarts.
    for task in &status.tasks {
        let restarts = task.restarts_at.as_ref().map_or_else(
            || "running again".to_owned(),
            |at| format!("restarts at {at}"),
        );
        out.push_str(&format!(
            "\ntask_panicked: {} panicked {} time(s), last at {}: {} ({restarts})",
            task.task, task.panics, task.at, task.message,
        ));
    }
    // Listeners that are configured but not serving yet.
    for waiting in &status.waiting_listeners {
        out.push_str(&format!(
            "\nlistener_waiting: {} ({}) not serving since {}: {}",
            waiting.listener, waiting.listen, waiting.since, waiting.reason,
        ));
    }
    Ok(Output::Text(out))
}

/// The codes of a domain's warnings, comma-separated (`-` for none); `--json` and
/// `GET /v1/status` carry their messages.
fn warning_codes(warnings: &[Warning]) -> String {
    let codes: Vec<&str> = warnings.iter().map(|w| w.code.as_str()).collect();
    if codes.is_empty() {
        "-".to_owned()
    } else {
        codes.join(",")
    }
}

/// `fedgw jwt validate --audience AUD TOKEN`: validated by the gateway, with the
/// bundle of the token's own trust domain.
///
/// # Errors
/// [`CliError`] from the API; a refused token is an API error whose code names why
/// (e.g. `bad_signature`, `expired`).
pub async fn jwt_validate(
    client: &AdminClient,
    token: &str,
    audience: &str,
    json: bool,
) -> Result<Output, CliError> {
    let body = JwtValidateRequest {
        token: token.to_owned(),
        audience: audience.to_owned(),
    };
    let answer = client
        .call(
            Method::POST,
            "/v1/jwt-svid/validate",
            Some(Body::Json(json!(body))),
        )
        .await?;
    let svid: JwtSvid = answer.decode()?;
    if json {
        return Ok(Output::Json(received(answer)));
    }
    let row = vec![
        svid.spiffe_id.to_string(),
        svid.trust_domain.to_string(),
        svid.key_id,
        svid.algorithm,
        svid.expires_at,
    ];
    Ok(Output::Text(table(
        &[
            "SPIFFE ID",
            "TRUST DOMAIN",
            "KEY ID",
            "ALGORITHM",
            "EXPIRES",
        ],
        &[row],
    )))
}

/// A relationship answer: as received with `--json`, else one line per field.
fn relationship_output(answer: Answer, json: bool, verb: &str) -> Result<Output, CliError> {
    let r: Relationship = answer.decode()?;
    if json {
        return Ok(Output::Json(received(answer)));
    }
    let mut out = format!("{verb}: {}\n", r.trust_domain);
    let fields = [
        ("origin", json!(r.origin)),
        ("profile", json!(r.profile)),
        ("endpoint_spiffe_id", json!(r.endpoint_spiffe_id)),
        ("follow_redirects", json!(r.follow_redirects)),
        ("allow_revocation", json!(r.allow_revocation)),
        ("proxy", json!(r.proxy)),
    ];
    for (key, value) in fields.iter().filter(|(_, v)| !v.is_null()) {
        out.push_str(&format!("  {key}: {}\n", plain(value)));
    }
    for url in &r.urls {
        out.push_str(&format!("  url: {url}\n"));
    }
    let path = if r.chain.depends_on.is_empty() {
        "-".to_owned()
    } else {
        let names: Vec<&str> = r.chain.depends_on.iter().map(TrustDomain::as_str).collect();
        names.join(" -> ")
    };
    out.push_str(&format!(
        "  trust chain: {path} (depth {}, ends {})\n",
        r.chain.chain_depth,
        word(&r.chain.chain_end)
    ));
    for warning in &r.warnings {
        out.push_str(&format!("  warning: {warning}\n"));
    }
    let status = &r.status;
    out.push_str(&format!("  state: {}\n", word(&status.state)));
    if let Some(at) = &status.last_success {
        out.push_str(&format!("  last_success: {at}\n"));
    }
    if let Some(error) = &status.last_error {
        // Shown as "code: message (at)".
        out.push_str(&format!(
            "  last_error: {} ({})\n",
            last_error(error),
            error.at
        ));
    }
    if let Some(at) = &status.next_attempt {
        out.push_str(&format!("  next_attempt: {at}\n"));
    }
    out.push_str(&format!(
        "  consecutive_failures: {}\n",
        status.consecutive_failures
    ));
    Ok(Output::Text(out))
}

/// A `last_error` as `code: message` (or the message alone, from a gateway that
/// records no code).
fn last_error(error: &LastError) -> String {
    match &error.code {
        Some(code) => format!("{code}: {}", error.message),
        None => error.message.clone(),
    }
}

/// The answer's JSON as received, for `--json`.
fn received(answer: Answer) -> Value {
    answer.json.unwrap_or(Value::Null)
}

/// A value as the tables show it: a string as is, a number or boolean as JSON, none
/// (`null`) as `-`; enums as the API spells them.
fn word(value: &impl Serialize) -> String {
    serde_json::to_value(value).map_or_else(|_| "-".to_owned(), |value| plain(&value))
}

fn plain(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A plain text table with left-aligned columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let width = widths.get(i).copied().unwrap_or(0);
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table_shows_each_domains_warning_codes() {
        let warning = |code: &str| Warning {
            code: code.to_owned(),
            message: "…".to_owned(),
        };
        let with = [
            warning("shared_ca_key"),
            warning("ca_without_trust_domain_id"),
        ];
        assert_eq!(
            warning_codes(&with),
            "shared_ca_key,ca_without_trust_domain_id"
        );
        assert_eq!(warning_codes(&[]), "-");
    }

    #[test]
    fn table_aligns_columns() {
        let out = table(
            &["A", "LONG HEADER", "C"],
            &[vec!["xyz".into(), "1".into(), "end".into()]],
        );
        assert_eq!(out, "A    LONG HEADER  C\nxyz  1            end\n");
    }

    #[tokio::test]
    async fn relationship_body_inlines_files() {
        let dir = tempfile::tempdir().unwrap();
        let roots = dir.path().join("roots.pem");
        std::fs::write(&roots, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let args = RelationshipArgs {
            trust_domain: "w.example".parse().unwrap(),
            urls: vec![Url::parse("https://w.example/bundle").unwrap()],
            profile: ProfileName::HttpsWeb,
            endpoint_spiffe_id: None,
            bootstrap_bundle: None,
            bootstrap_format: None,
            extra_ca_roots: Some(roots),
            follow_redirects: false,
            proxy: Some(ProxySetting::Off),
            allow_revocation: true,
        };
        let body = args.to_json().await.unwrap();
        assert_eq!(body["trust_domain"], "w.example");
        assert_eq!(body["urls"], json!(["https://w.example/bundle"]));
        assert_eq!(body["profile"], "https_web");
        assert_eq!(body["follow_redirects"], false);
        assert_eq!(body["allow_revocation"], true);
        assert_eq!(body["proxy"], "off");
        assert_eq!(body["extra_ca_roots_pem"], "-----BEGIN CERTIFICATE-----\n");
        assert!(body.get("bootstrap_bundle").is_none());
    }

    #[tokio::test]
    async fn missing_file_is_named() {
        let args = RelationshipArgs {
            trust_domain: "w.example".parse().unwrap(),
            urls: vec![],
            profile: ProfileName::HttpsSpiffe,
            endpoint_spiffe_id: None,
            bootstrap_bundle: Some("/no/such/bundle.json".into()),
            bootstrap_format: Some(DocumentFormat::Pem),
            extra_ca_roots: None,
            follow_redirects: true,
            proxy: None,
            allow_revocation: false,
        };
        assert!(
            matches!(args.to_json().await, Err(CliError::Read { ref path, .. }) if path.ends_with("bundle.json"))
        );
    }

    #[test]
    fn data_bodies_name_the_relationship_they_update() {
        let body = RelationshipBody::Data(json!({"trust_domain": "w.example"}));
        assert_eq!(body.trust_domain().unwrap().as_str(), "w.example");
        for bad in [
            json!({"url": "https://w.example/"}),
            json!({"trust_domain": "W/x"}),
        ] {
            assert!(matches!(
                RelationshipBody::Data(bad).trust_domain(),
                Err(CliError::NoTrustDomain { .. })
            ));
        }
    }
}
