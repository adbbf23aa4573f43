//! Step (c) of the demonstration: west rotates its CA without breaking a call.
//!
//! The order is what matters: publish the new CA next to the old one and wait until
//! the peer (east) holds both; only then re-issue from the new CA, the bundle
//! endpoint's SVID first (peers fetch west's bundle over `https_spiffe`,
//! authenticated with the west bundle they hold), then the server workload's; then
//! withdraw the old CA and wait until the peer holds the new one only. Calls made
//! during the overlap and after the withdrawal must work, with the new server SVID.

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use rustls::pki_types::CertificateDer;
use spiffe_federation::endpoint::client::{FetchRequest, Fetcher, ServerAuth, SpiffeEndpoint};
use spiffe_federation::endpoint::{EndpointUrl, FetchLimits, ProxySetting};
use spiffe_federation::{Bundle, SpiffeId, TrustDomain};

use super::files::{
    authority, blocking, issue, read_bundle, replace_file, wait_for_pem, write_bundle,
};
use super::gateways::{ENDPOINT_PATH, make_ca, wait_for};
use super::workloads::{Exchange, Identity, Server};
use super::{EAST, Ids, Mesh, WEST, say};

impl Mesh {
    /// Step (c): publish a new CA next to the old one, wait for east to hold both,
    /// re-issue west's endpoint and server SVIDs from the new CA, withdraw the old CA,
    /// wait for east to hold only the new one; call before and after.
    pub(super) async fn rotate_west(
        &self,
        east_client: &Identity,
        west_server: &mut Server,
        ids: &Ids,
    ) -> anyhow::Result<Rotation> {
        let west = self.prepared(WEST)?;
        let west_td = WEST.td()?;
        let next_ca = blocking({
            let dir = west.dir.join("ca-next");
            move || make_ca(&dir, WEST)
        })
        .await?;
        let old = authority(&west.ca, WEST).await?;
        let next_authority = authority(&next_ca, WEST).await?;

        let mut bundle = read_bundle(&west.bundle_file(), &west_td).await?;
        ensure!(
            bundle.add_x509_authority(next_authority.clone()),
            "the new CA is already in west's bundle"
        );
        self.publish_west(&bundle, "publish", "the old CA and the new CA")
            .await?;

        // Only now may anything present a certificate from the new CA: every peer
        // already trusts it. The bundle endpoint's SVID first, or peers could not
        // fetch west's bundle once the old CA is gone.
        blocking({
            let (from_svid, from_key) = (next_ca.svid.clone(), next_ca.svid_key.clone());
            let pki = west.dir.join("pki");
            move || {
                replace_file(&from_key, &pki.join("endpoint-svid.key"))?;
                replace_file(&from_svid, &pki.join("endpoint-svid.pem"))
            }
        })
        .await?;
        let endpoint_id = WEST.id(ENDPOINT_PATH)?;
        let url = self
            .gateway(WEST)?
            .spiffe_url
            .clone()
            .context("west has no https_spiffe listener")?;
        let mut new_only = Bundle::new(west_td.clone());
        new_only.add_x509_authority(next_authority);
        let waiting = Instant::now();
        wait_for(
            "west's bundle endpoint to present its SVID from the new CA",
            || fetch_spiffe(&url, &west_td, &endpoint_id, &new_only),
        )
        .await?;
        say(&format!(
            "(west) re-issue: the bundle endpoint presents an SVID from the new CA after {:.1} s (certificate file reload)",
            waiting.elapsed().as_secs_f64()
        ));
        let new_server = issue(&next_ca, &west.dir, "server-next", &ids.west_server).await?;
        let new_leaf = new_server.leaf().cloned().context("empty SVID")?;
        west_server.set_identity(new_server);
        say("(west) re-issue: the server workload now presents an SVID from the new CA");
        let during = self
            .call_rotated(
                east_client,
                west_server,
                ids,
                &new_leaf,
                "while east trusts both CAs",
            )
            .await?;

        ensure!(
            bundle.remove_x509_authority(old.der()),
            "the old CA is not in west's bundle"
        );
        self.publish_west(&bundle, "withdraw", "the new CA only")
            .await?;
        let after = self
            .call_rotated(
                east_client,
                west_server,
                ids,
                &new_leaf,
                "after the withdrawal",
            )
            .await?;
        Ok(Rotation {
            during,
            after,
            new_leaf,
        })
    }

    /// Write west's local bundle file and wait until east's files sink holds exactly
    /// its CAs.
    async fn publish_west(&self, bundle: &Bundle, verb: &str, holds: &str) -> anyhow::Result<()> {
        let west = self.prepared(WEST)?;
        write_bundle(&west.bundle_file(), bundle).await?;
        say(&format!("(west) {verb}: pki/bundle.json now holds {holds}"));
        let expected = bundle
            .x509_authorities()
            .iter()
            .map(|authority| authority.der().to_vec())
            .collect();
        let waiting = Instant::now();
        wait_for_pem(self.gateway(EAST)?, WEST, &expected).await?;
        say(&format!(
            "east/bundles/{}.pem holds {holds} after {:.1} s (west's file check, then east's next poll)",
            WEST.trust_domain,
            waiting.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// East client to west server, which must answer with its re-issued SVID.
    async fn call_rotated(
        &self,
        east_client: &Identity,
        west_server: &mut Server,
        ids: &Ids,
        new_leaf: &CertificateDer<'static>,
        when: &str,
    ) -> anyhow::Result<Exchange> {
        say(&format!("call {when}:"));
        let exchange = self
            .expect_served(east_client, west_server, &ids.east_client)
            .await
            .with_context(|| format!("call {when}"))?;
        ensure!(
            exchange.server_leaf == *new_leaf,
            "{when}: the server did not present its SVID from the new CA"
        );
        say(
            "the server presented its SVID from the new CA; east verified it with the bundle from its files sink",
        );
        Ok(exchange)
    }
}

/// What step (c) returns.
pub(super) struct Rotation {
    pub(super) during: Exchange,
    pub(super) after: Exchange,
    pub(super) new_leaf: CertificateDer<'static>,
}

/// One fetch of `td`'s bundle from an `https_spiffe` endpoint authenticated with
/// `bundle`, as a peer's gateway does it; `Some` when it succeeds.
async fn fetch_spiffe(
    url: &str,
    td: &TrustDomain,
    endpoint_id: &SpiffeId,
    bundle: &Bundle,
) -> Option<()> {
    let url = EndpointUrl::parse(url).ok()?;
    let endpoint = SpiffeEndpoint::new(endpoint_id, bundle).ok()?;
    let limits = FetchLimits {
        connect_timeout: Duration::from_secs(2),
        total_timeout: Duration::from_secs(5),
        ..FetchLimits::default()
    };
    let request = FetchRequest {
        trust_domain: td,
        url: &url,
        auth: ServerAuth::Spiffe(endpoint),
        limits: &limits,
        proxy: &ProxySetting::Off,
    };
    Fetcher::with_system_roots(Vec::new())
        .fetch(&request)
        .await
        .ok()
        .map(|_| ())
}
