//! Helpers of the files sink and watch API tests: bundles with development CAs, and a
//! gateway started in-process (`fedgw::app::start`) whose trust store the test
//! changes directly.
//!
//! Include with `#[path = "support/files_watch.rs"] mod files_watch;`.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test crate uses a different subset"
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use fedgw::app::Config;
use fedgw::app::Running;
use fedgw::dev::pki as dev_pki;
use fedgw::trust::policy::Source;
use spiffe_federation::bundle::X509Authority;
use spiffe_federation::{Bundle, BundleMap, SpiffeId, TrustDomain};
use time::OffsetDateTime;

/// A trust domain from a literal.
pub fn td(name: &str) -> TrustDomain {
    name.parse().unwrap()
}

/// A development SPIFFE CA of `trust_domain`, made under `dir` (a new one per `dir`).
pub fn dev_ca(dir: &Path, trust_domain: &TrustDomain) -> X509Authority {
    let id = SpiffeId::new(trust_domain.clone(), "/fedgw").unwrap();
    let now = OffsetDateTime::now_utc();
    let paths = dev_pki::ensure(dir, trust_domain, &id, &["localhost".into()], now).unwrap();
    dev_pki::ca_authority(&paths, trust_domain).unwrap()
}

/// A bundle of `trust_domain` holding `cas`, with `sequence`.
pub fn bundle_of(trust_domain: &TrustDomain, cas: &[X509Authority], sequence: u64) -> Bundle {
    let mut bundle = Bundle::new(trust_domain.clone());
    for ca in cas {
        bundle.add_x509_authority(ca.clone());
    }
    bundle.set_sequence(Some(sequence));
    bundle
}

/// The bundle map in `dir`, if it is there yet.
pub fn read_map(dir: &Path) -> Option<BundleMap> {
    let bytes = std::fs::read(dir.join(fedgw::outputs::files::MAP_FILE)).ok()?;
    Some(BundleMap::parse(&bytes).unwrap().map)
}

/// A gateway running in this process on a temporary `data_dir`.
pub struct InProcess {
    pub gateway: Running,
    pub dir: tempfile::TempDir,
}

impl InProcess {
    /// Start a gateway whose configuration is `data_dir` plus `toml`; `{dir}` in
    /// `toml` stands for the temporary directory.
    pub async fn start(toml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display().to_string();
        let text = format!(
            "data_dir = {:?}\n{}",
            dir.path().join("data").display().to_string(),
            toml.replace("{dir}", &root)
        );
        let config = Config::from_toml(&text).unwrap_or_else(|err| panic!("{err}\n{text}"));
        let gateway = fedgw::app::start(&config).await.unwrap();
        Self { gateway, dir }
    }

    /// A path in the temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The admin socket (the default listener).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("data/admin.sock")
    }

    /// Accept `bundle` as an operator's.
    pub async fn put(&self, bundle: &Bundle) {
        let source = Source::Operator { who: "test".into() };
        let td = bundle.trust_domain().clone();
        self.gateway
            .trust_store
            .submit(&td, bundle.clone(), source, OffsetDateTime::now_utc())
            .await
            .unwrap();
    }

    /// Remove the bundle of `td`.
    pub async fn remove(&self, td: &TrustDomain) {
        let removed = self
            .gateway
            .trust_store
            .remove(td, "test", OffsetDateTime::now_utc())
            .await
            .unwrap();
        assert!(removed.is_some(), "{td} was not stored");
    }

    /// The current global revision.
    pub fn revision(&self) -> u64 {
        self.gateway.trust_store.snapshot().revision
    }

    /// Shut down and report whether every task ended within the grace period.
    pub async fn stop(self) -> fedgw::shutdown::Ended {
        self.gateway.shutdown(Duration::from_secs(10)).await
    }
}
