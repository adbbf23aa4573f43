//! `fedgw demo`: a local federation of several trust domains in one process, with the
//! embedded development defaults: the quickest way to see fedgw work.
//!
//! Owns wiring N gateways together: each gets its own data directory, development PKI,
//! loopback listeners on free ports and sled database; then every gateway federates
//! with every other, alternating the two profiles (`https_web` with the peer's
//! development Web CA as an extra root, and `https_spiffe` bootstrapped from the peer's
//! bundle file), and polls fast. It does not own any gateway behaviour.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use spiffe_federation::TrustDomain;
use spiffe_federation::endpoint::ProxySetting;
use url::Url;

use crate::app::{self, GatewayError, Running};
use crate::client::defaults::{self, DefaultGateway, DefaultsError};
use crate::config::{DocumentFormat, FederationEntry, ProfileName};
use crate::dev::pki::DevPkiPaths;
use crate::relationship::{Limits, Relationship, RelationshipError};
use crate::trust::policy::Source;

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// Preparing a gateway's defaults failed.
    #[error(transparent)]
    Defaults(#[from] DefaultsError),
    /// A gateway could not start.
    #[error(transparent)]
    Gateway(#[from] Box<GatewayError>),
    /// A relationship could not be resolved.
    #[error(transparent)]
    Relationship(#[from] RelationshipError),
    /// The federation did not converge in time.
    #[error("the federation did not converge within {}s: {}", .0.as_secs(), .1)]
    NotConverged(Duration, String),
    /// A step was interrupted.
    #[error("interrupted: {0}")]
    Interrupted(&'static str),
}

/// One gateway of the demo.
#[derive(Debug)]
pub struct DemoGateway {
    /// Its trust domain.
    pub trust_domain: TrustDomain,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its `https_web` bundle endpoint.
    pub web_addr: SocketAddr,
    /// Its `https_spiffe` bundle endpoint.
    pub spiffe_addr: SocketAddr,
    /// Its development PKI files.
    pub pki: DevPkiPaths,
    /// The running gateway.
    pub running: Running,
}

/// What each gateway holds, for the status printout.
#[derive(Debug, Clone, Serialize)]
pub struct HeldBundle {
    /// The gateway's own trust domain.
    pub gateway: TrustDomain,
    /// A trust domain it holds a bundle for.
    pub trust_domain: TrustDomain,
    /// `local` or `foreign`.
    pub role: &'static str,
    /// The bundle's sequence.
    pub sequence: Option<u64>,
    /// How many X.509 authorities.
    pub x509_authorities: usize,
    /// Where it came from.
    pub source: String,
}

/// Start `domains` gateways under `base_dir` and federate them in a full mesh.
///
/// # Errors
/// [`DemoError`] if a gateway cannot start.
pub async fn start(
    base_dir: &Path,
    domains: &[TrustDomain],
) -> Result<Vec<DemoGateway>, DemoError> {
    let mut gateways = Vec::new();
    for td in domains {
        let data_dir = base_dir.join(td.as_str());
        let defaults = DefaultGateway {
            trust_domain: td.clone(),
            web_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            spiffe_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        // Fast polling so that changes show within seconds; the served hint is 5 s.
        let extra = "\n[polling]\nmin_refresh = \"1s\"\ndefault_refresh = \"5s\"\nmax_refresh = \"1h\"\nfetch_timeout = \"10s\"\n";
        let dir = data_dir.clone();
        let (mut config, pki) =
            tokio::task::spawn_blocking(move || defaults::embedded(&dir, &defaults, extra))
                .await
                .map_err(|_| DemoError::Interrupted("preparing defaults"))??;
        for local in &mut config.local {
            local.refresh_hint = crate::config::Seconds(5);
        }
        let running = app::start(&config).await.map_err(Box::new)?;
        let (Some(web_addr), Some(spiffe_addr)) = (running.web_addr, running.spiffe_addr) else {
            return Err(DemoError::Interrupted(
                "listeners did not report their addresses",
            ));
        };
        gateways.push(DemoGateway {
            trust_domain: td.clone(),
            data_dir,
            web_addr,
            spiffe_addr,
            pki,
            running,
        });
    }
    for (i, gateway) in gateways.iter().enumerate() {
        for (j, peer) in gateways.iter().enumerate() {
            if i == j {
                continue;
            }
            let config = relationship(peer, (i + j) % 2 == 0)?;
            let resolved = tokio::task::spawn_blocking(move || {
                Relationship::from_entry(
                    &config,
                    Limits {
                        max_document_bytes: 1024 * 1024,
                        fetch_timeout: Duration::from_secs(10),
                    },
                )
            })
            .await
            .map_err(|_| DemoError::Interrupted("resolving relationships"))??;
            gateway.running.pollers.start(resolved);
        }
    }
    Ok(gateways)
}

/// The relationship a gateway forms with `peer`: `https_web` or `https_spiffe`.
fn relationship(peer: &DemoGateway, web: bool) -> Result<FederationEntry, DemoError> {
    let url = |addr: SocketAddr, host: &str| {
        Url::parse(&format!("https://{host}:{}/", addr.port()))
            .map_err(|_| DemoError::Interrupted("building a URL"))
    };
    Ok(if web {
        FederationEntry {
            trust_domain: peer.trust_domain.clone(),
            url: Some(url(peer.web_addr, "localhost")?),
            urls: Vec::new(),
            profile: ProfileName::HttpsWeb,
            endpoint_spiffe_id: None,
            bootstrap_bundle: None,
            bootstrap_format: DocumentFormat::Spiffe,
            extra_ca_roots: Some(peer.pki.web_ca_cert.clone()),
            follow_redirects: true,
            proxy: ProxySetting::Off,
            allow_revocation: false,
        }
    } else {
        FederationEntry {
            trust_domain: peer.trust_domain.clone(),
            url: Some(url(peer.spiffe_addr, "127.0.0.1")?),
            urls: Vec::new(),
            profile: ProfileName::HttpsSpiffe,
            endpoint_spiffe_id: Some(defaults::endpoint_id(&peer.trust_domain)?),
            bootstrap_bundle: Some(peer.pki.bundle.clone()),
            bootstrap_format: DocumentFormat::Spiffe,
            extra_ca_roots: None,
            follow_redirects: true,
            proxy: ProxySetting::Off,
            allow_revocation: false,
        }
    })
}

/// Every bundle every gateway holds, sorted.
pub fn held(gateways: &[DemoGateway]) -> Vec<HeldBundle> {
    let mut out = Vec::new();
    for gateway in gateways {
        let snapshot = gateway.running.trust_store.snapshot();
        for (td, entry) in &snapshot.domains {
            out.push(HeldBundle {
                gateway: gateway.trust_domain.clone(),
                trust_domain: td.clone(),
                role: if *td == gateway.trust_domain {
                    "local"
                } else {
                    "foreign"
                },
                sequence: entry.bundle.sequence(),
                x509_authorities: entry.bundle.x509_authorities().len(),
                source: entry.source.to_string(),
            });
        }
    }
    out
}

/// Wait until every gateway holds a fetched bundle of every other domain equal (in
/// authorities) to that domain's own, or `deadline` passes.
///
/// # Errors
/// [`DemoError::NotConverged`] naming what is still missing.
pub async fn converge(gateways: &[DemoGateway], deadline: Duration) -> Result<(), DemoError> {
    let start = tokio::time::Instant::now();
    loop {
        let missing = missing(gateways);
        if missing.is_empty() {
            return Ok(());
        }
        if start.elapsed() > deadline {
            return Err(DemoError::NotConverged(deadline, missing.join("; ")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn missing(gateways: &[DemoGateway]) -> Vec<String> {
    let mut missing = Vec::new();
    for gateway in gateways {
        let snapshot = gateway.running.trust_store.snapshot();
        for peer in gateways {
            if peer.trust_domain == gateway.trust_domain {
                continue;
            }
            let own = peer.running.trust_store.snapshot();
            let (Some(held), Some(own)) = (
                snapshot.get(&peer.trust_domain),
                own.get(&peer.trust_domain),
            ) else {
                missing.push(format!(
                    "{} lacks {}",
                    gateway.trust_domain, peer.trust_domain
                ));
                continue;
            };
            if !held.bundle.same_authorities(&own.bundle)
                || !matches!(held.source, Source::Fetched { .. })
            {
                missing.push(format!(
                    "{} has a stale {}",
                    gateway.trust_domain, peer.trust_domain
                ));
            }
        }
    }
    missing
}

/// Stop every gateway.
pub async fn stop(gateways: Vec<DemoGateway>) {
    for gateway in gateways {
        gateway.running.shutdown(Duration::from_secs(5)).await;
    }
}
