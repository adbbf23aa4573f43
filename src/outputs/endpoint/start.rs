//! Starting the bundle endpoint listeners from their configuration: the served table
//! both follow, `https_web` with its Web PKI certificate and the public roots its
//! SRV-7 check is held to, and `https_spiffe` with its X509-SVID from files or from a
//! Workload API — whose listener, when the agent has not answered yet, binds later,
//! as soon as an SVID and the local bundle it chains to have both arrived.
//!
//! Owns that order and the waiting (shown in `GET /v1/status` `waiting_listeners`).
//! It does not own serving ([`super::Listener`]) or the TLS rules ([`super::TlsSource`]).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject as _;
use spiffe_federation::TrustDomain;

use super::{EndpointError, Listener, SvidSource, TlsSource};
use crate::config::EndpointConfig;
use crate::config::net::Kind;
use crate::net::Net;
use crate::sources::local::workload;
use crate::supervise::Supervisor;
use crate::trust::store::TrustStore;

/// The `https_spiffe` listener's name in `GET /v1/status` `waiting_listeners`.
const SPIFFE_LISTENER: &str = "https_spiffe endpoint";

/// Where the endpoints listen.
#[derive(Debug, Clone, Copy, Default)]
pub struct Started {
    /// The `https_web` endpoint, when configured.
    pub web_addr: Option<SocketAddr>,
    /// The `https_spiffe` endpoint, when configured and bound (it may bind later).
    pub spiffe_addr: Option<SocketAddr>,
}

/// Start the configured endpoints, serving `locals` at their paths and every foreign
/// domain at `/relay/<td>`.
///
/// # Errors
/// [`EndpointError`] naming the key or file at fault; nothing is left listening then.
pub async fn start(
    config: &EndpointConfig,
    locals: Vec<(TrustDomain, String)>,
    trust_store: &TrustStore,
    net: &Net,
    supervisor: &Supervisor,
) -> Result<Started, EndpointError> {
    let shutdown = net.shutdown();
    let table = super::follow(trust_store.clone(), locals, supervisor);
    let mut web_addr = None;
    if let Some(web) = &config.https_web {
        let public_names = web
            .public_names
            .iter()
            .map(|name| {
                ServerName::try_from(name.clone())
                    .map_err(|_| EndpointError::PublicName { name: name.clone() })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cert = web.cert.clone();
        let public_roots = tokio::task::spawn_blocking(move || public_roots(&cert))
            .await
            .map_err(|_| EndpointError::Interrupted {
                step: "system roots",
            })?;
        let source = TlsSource::Web {
            cert: web.cert.clone(),
            key: web.key.clone(),
            public_names,
            public_roots: Arc::new(public_roots),
        };
        let listener = Listener::bind(web.listen, source, trust_store).await?;
        web_addr = listener.local_addr().ok();
        let limits = web.limits.resolve(Kind::BundleEndpoint);
        listener.serve(
            Arc::clone(&table),
            trust_store.clone(),
            limits,
            net,
            supervisor,
        );
    }
    let mut spiffe_addr = None;
    if let Some(spiffe) = &config.https_spiffe {
        let (identity, ready) = match (&spiffe.workload_api_socket, &spiffe.svid, &spiffe.key) {
            (Some(socket), _, _) => {
                svid_from_workload_api(socket, &spiffe.endpoint_spiffe_id, supervisor).await?
            }
            (None, Some(svid), Some(key)) => (
                SvidSource::Files {
                    svid: svid.clone(),
                    key: key.clone(),
                },
                true,
            ),
            // Config::validate allows no other combination.
            (None, _, _) => {
                return Err(EndpointError::WorkloadApi {
                    key: "endpoint.https_spiffe.svid".to_owned(),
                    reason: "svid and key, or workload_api_socket, are required".to_owned(),
                });
            }
        };
        let source = TlsSource::Spiffe {
            identity: identity.clone(),
            endpoint_id: spiffe.endpoint_spiffe_id.clone(),
        };
        let limits = spiffe.limits.resolve(Kind::BundleEndpoint);
        let from_workload_api = matches!(identity, SvidSource::WorkloadApi { .. });
        let bound = if ready {
            match Listener::bind(spiffe.listen, source.clone(), trust_store).await {
                Ok(listener) => Some(listener),
                // The agent's SVID came before the first local bundle from the same
                // agent (two streams): wait for both below rather than stop.
                Err(err @ EndpointError::NoLocalBundle { .. }) if from_workload_api => {
                    tracing::warn!(listen = %spiffe.listen, error = %err, "https_spiffe endpoint: waiting for the local bundle from the Workload API");
                    supervisor.health().listener_waiting(
                        SPIFFE_LISTENER,
                        &spiffe.listen.to_string(),
                        &err.to_string(),
                    );
                    None
                }
                Err(err) => return Err(err),
            }
        } else {
            // The agent is not answering yet: everything else serves (the stored local
            // bundle included), and this listener binds once the first SVID arrives.
            tracing::warn!(
                listen = %spiffe.listen,
                "https_spiffe endpoint: no X509-SVID from the Workload API yet; the listener starts when the agent issues one"
            );
            supervisor.health().listener_waiting(
                SPIFFE_LISTENER,
                &spiffe.listen.to_string(),
                "no X509-SVID from the Workload API yet (see the local domain's last_error)",
            );
            None
        };
        if let Some(listener) = bound {
            spiffe_addr = listener.local_addr().ok();
            listener.serve(
                Arc::clone(&table),
                trust_store.clone(),
                limits,
                net,
                supervisor,
            );
        } else {
            // Supervised: a panic starts the wait again (binding twice cannot happen,
            // as the task ends once the listener serves).
            let (table, store, net, listen) = (
                Arc::clone(&table),
                trust_store.clone(),
                net.clone(),
                spiffe.listen,
            );
            let cancel = shutdown.token();
            let task_supervisor = supervisor.clone();
            supervisor.spawn(
                "https_spiffe endpoint bind".to_owned(),
                cancel.clone(),
                move || {
                    bind_when_ready(
                        identity.clone(),
                        source.clone(),
                        listen,
                        Arc::clone(&table),
                        store.clone(),
                        limits,
                        net.clone(),
                        task_supervisor.clone(),
                        cancel.clone(),
                    )
                },
            );
        }
    }
    Ok(Started {
        web_addr,
        spiffe_addr,
    })
}

/// Bind the `https_spiffe` listener once the Workload API has given an SVID and the
/// local bundle it chains to is stored, retrying every 500 ms; a failure is logged
/// once and shown in `waiting_listeners` until the listener serves.
#[expect(
    clippy::too_many_arguments,
    reason = "the listener's parts, each used once"
)]
async fn bind_when_ready(
    identity: SvidSource,
    source: TlsSource,
    listen: SocketAddr,
    table: Arc<arc_swap::ArcSwap<super::ServedTable>>,
    store: TrustStore,
    limits: crate::net::Limits,
    net: Net,
    supervisor: Supervisor,
    cancel: tokio_util::sync::CancellationToken,
) {
    let SvidSource::WorkloadApi { mut svid, .. } = identity else {
        return;
    };
    let health = supervisor.health().clone();
    let mut logged = false;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            seen = svid.wait_for(Option::is_some) => if seen.is_err() { return },
        }
        match Listener::bind(listen, source.clone(), &store).await {
            Ok(listener) => {
                tracing::info!(%listen, "https_spiffe endpoint started with the Workload API's SVID");
                listener.serve(table, store, limits, &net, &supervisor);
                health.listener_serving(SPIFFE_LISTENER);
                return;
            }
            Err(err) => {
                health.listener_waiting(SPIFFE_LISTENER, &listen.to_string(), &err.to_string());
                if !logged {
                    tracing::warn!(%listen, error = %err, "https_spiffe endpoint could not start yet; retrying every 500 ms");
                    logged = true;
                }
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
        }
    }
}

/// Follow the `https_spiffe` endpoint's X509-SVID from the Workload API at `socket`
/// and wait a while for the first one; `true` when it came.
async fn svid_from_workload_api(
    socket: &str,
    endpoint_id: &spiffe_federation::SpiffeId,
    supervisor: &Supervisor,
) -> Result<(SvidSource, bool), EndpointError> {
    const KEY: &str = "endpoint.https_spiffe.workload_api_socket";
    let endpoint =
        spiffe::transport::Endpoint::parse(socket).map_err(|err| EndpointError::WorkloadApi {
            key: KEY.to_owned(),
            reason: format!("{socket:?}: {err}"),
        })?;
    let (tx, mut rx) = tokio::sync::watch::channel(None);
    let tx = Arc::new(tx);
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel();
    let failed_tx = Arc::new(std::sync::Mutex::new(Some(failed_tx)));
    let cancel = supervisor.shutdown().token();
    let token = cancel.clone();
    let (owned_socket, id) = (socket.to_owned(), endpoint_id.clone());
    supervisor.spawn(
        "https_spiffe SVID from the Workload API".to_owned(),
        cancel,
        move || {
            let failed = failed_tx.lock().ok().and_then(|mut tx| tx.take());
            workload::follow_svid(
                owned_socket.clone(),
                endpoint.clone(),
                id.clone(),
                Arc::clone(&tx),
                failed,
                token.clone(),
            )
        },
    );
    // The first SVID, or the first failure (then the listener starts later).
    let first = tokio::time::timeout(workload::FIRST_ANSWER_WAIT, async {
        tokio::select! {
            seen = rx.wait_for(Option::is_some) => seen.is_ok(),
            _ = failed_rx => false,
        }
    })
    .await
    .unwrap_or(false);
    let source = SvidSource::WorkloadApi {
        socket: socket.to_owned(),
        svid: rx,
    };
    Ok((source, first))
}

/// The roots the `https_web` certificate `cert` is held to for the SRV-7 "publicly
/// trusted" warning: the operating system's. A certificate of the development PKI
/// ([`crate::dev::pki`]) is not publicly trusted by design, so its own Web CA counts as
/// public instead, and it is said once, plainly, that this is a development PKI.
/// Blocks.
fn public_roots(cert: &Path) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let loaded = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(loaded.certs);
    tracing::debug!(added, "system roots loaded");
    if let Some(ca) = crate::dev::pki::web_ca_of(cert) {
        let pem = std::fs::read(&ca).unwrap_or_default();
        let certs = rustls_pki_types::CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok);
        let (dev, _ignored) = roots.add_parsable_certificates(certs);
        if dev > 0 {
            tracing::info!(
                web_ca = %ca.display(),
                "https_web serves a certificate of the development PKI: peers trust it by adding this Web CA as extra_ca_roots; not for production"
            );
        }
    }
    roots
}
