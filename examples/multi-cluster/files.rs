//! The demonstration's certificate and bundle files: workload SVIDs issued from a
//! domain's development CA, a domain's local bundle file as its CA publishes it, and
//! the files a gateway's files sink writes, read the way a workload reads them.
//!
//! Owns no process and no TLS; blocking work goes through [`blocking`].

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Context as _;
use fedgw::dev::pki::{self as dev_pki, DevPkiPaths};
use fedgw::outputs::files::MAP_FILE;
use spiffe_federation::bundle::X509Authority;
use spiffe_federation::{Bundle, BundleMap, SpiffeId, TrustDomain};
use time::OffsetDateTime;

use super::gateways::{Domain, Gateway, wait_for};
use super::workloads::Identity;

/// Issue an X509-SVID for `id` from `ca`, written to `dir/workloads/<name>.pem` and
/// `.key`.
pub(crate) async fn issue(
    ca: &DevPkiPaths,
    dir: &Path,
    name: &str,
    id: &SpiffeId,
) -> anyhow::Result<Identity> {
    let ca = ca.clone();
    let dir = dir.join("workloads");
    let cert_file = dir.join(format!("{name}.pem"));
    let key_file = dir.join(format!("{name}.key"));
    let id = id.clone();
    blocking(move || {
        let (chain, key) = dev_pki::issue_svid(&ca, &id, OffsetDateTime::now_utc())?;
        std::fs::create_dir_all(&dir)?;
        std::fs::write(&cert_file, chain)?;
        write_secret(&key_file, key.as_bytes())?;
        Identity::load(id, cert_file, key_file)
    })
    .await
}

/// The X.509 authority (CA certificate) of `domain`'s development CA `ca`.
pub(crate) async fn authority(ca: &DevPkiPaths, domain: Domain) -> anyhow::Result<X509Authority> {
    let ca = ca.clone();
    let td = domain.td()?;
    blocking(move || Ok(dev_pki::ca_authority(&ca, &td)?)).await
}

/// Wait until `gateway`'s files sink holds `peer`'s bundle with exactly `expected`.
pub(crate) async fn wait_for_pem(
    gateway: &Gateway,
    peer: Domain,
    expected: &BTreeSet<Vec<u8>>,
) -> anyhow::Result<()> {
    let td = peer.td()?;
    let path = gateway.bundles_dir().join(format!("{td}.pem"));
    let what = format!(
        "{}'s files sink to hold {} with {} CA(s)",
        gateway.domain.name,
        td,
        expected.len()
    );
    wait_for(&what, || async {
        let pem = tokio::fs::read(&path).await.ok()?;
        let bundle = Bundle::from_pem(&td, &pem).ok()?;
        let held: BTreeSet<Vec<u8>> = bundle
            .x509_authorities()
            .iter()
            .map(|a| a.der().to_vec())
            .collect();
        (held == *expected).then_some(())
    })
    .await
}

pub(crate) async fn read_bundle(path: &Path, td: &TrustDomain) -> anyhow::Result<Bundle> {
    let document = tokio::fs::read(path).await?;
    Ok(Bundle::parse(td, &document)?.bundle)
}

pub(crate) async fn read_map(dir: &Path) -> anyhow::Result<BundleMap> {
    let document = tokio::fs::read(dir.join(MAP_FILE)).await?;
    Ok(BundleMap::parse(&document)?.map)
}

/// Replace a local bundle file atomically, as a CA (SPIRE) would publish it: no
/// sequence, no refresh hint (the gateway numbers versions and serves its own hint).
pub(crate) async fn write_bundle(path: &Path, bundle: &Bundle) -> anyhow::Result<()> {
    let mut bundle = bundle.clone();
    bundle.set_sequence(None);
    bundle.set_refresh_hint(None);
    let text = bundle.to_json_pretty();
    let tmp = path.with_extension("json.tmp");
    tokio::fs::write(&tmp, text).await?;
    tokio::fs::rename(&tmp, path).await?;
    Ok(())
}

/// Copy `from` over `to` atomically (a temporary file, then a rename), keeping
/// `from`'s permissions. Blocking.
pub(crate) fn replace_file(from: &Path, to: &Path) -> anyhow::Result<()> {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp)?;
    std::fs::rename(&tmp, to)?;
    Ok(())
}

/// Write a private key, readable by its owner only. Blocking.
pub(crate) fn write_secret(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents)?;
    Ok(())
}

/// Run blocking work (certificates, files) off the async reactor.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .context("a blocking task was interrupted")?
}
