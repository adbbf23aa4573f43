//! The embedded default configuration: what `fedgw serve` runs with no `--config`.
//!
//! One local development trust domain whose CA, bundle endpoint certificate and
//! X509-SVID are generated in `data_dir` ([`crate::dev::pki`]), served over both
//! profiles on loopback, with the admin API on the default unix socket. It goes
//! through the same validation as a written configuration.

use std::net::SocketAddr;
use std::path::Path;

use spiffe_federation::{SpiffeId, TrustDomain};
use time::OffsetDateTime;

use crate::app::Config;
use crate::config::{ConfigError, Seconds};
use crate::dev::pki::{self, DevPkiError, DevPkiPaths};

/// Why the embedded default could not be prepared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DefaultsError {
    /// The development PKI could not be made.
    #[error(transparent)]
    Pki(#[from] DevPkiError),
    /// The generated configuration was refused (a bug, named rather than hidden).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A generated name was invalid.
    #[error("invalid generated name: {0}")]
    Name(#[from] spiffe_federation::IdError),
}

/// Parameters of an embedded gateway.
#[derive(Debug, Clone)]
pub struct DefaultGateway {
    /// The local trust domain.
    pub trust_domain: TrustDomain,
    /// Where the `https_web` endpoint listens.
    pub web_listen: SocketAddr,
    /// Where the `https_spiffe` endpoint listens.
    pub spiffe_listen: SocketAddr,
}

impl Default for DefaultGateway {
    fn default() -> Self {
        Self {
            trust_domain: TrustDomain::new("dev.fedgw.localhost")
                .unwrap_or_else(|_| unreachable_td()),
            web_listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            spiffe_listen: SocketAddr::from(([127, 0, 0, 1], 8444)),
        }
    }
}

#[expect(
    clippy::panic,
    reason = "a constant, valid trust domain name; covered by a unit test"
)]
fn unreachable_td() -> TrustDomain {
    panic!("the default trust domain name is valid")
}

/// The endpoint SPIFFE ID a development gateway serves `https_spiffe` with.
///
/// # Errors
/// Never for a valid trust domain; the path is constant.
pub fn endpoint_id(td: &TrustDomain) -> Result<SpiffeId, DefaultsError> {
    Ok(SpiffeId::new(td.clone(), "/fedgw/bundle-endpoint")?)
}

/// Prepare the development PKI and return the configuration and its files. Blocks.
///
/// # Errors
/// [`DefaultsError`] if the PKI cannot be written or the result is invalid.
pub fn embedded(
    data_dir: &Path,
    gateway: &DefaultGateway,
    extra_toml: &str,
) -> Result<(Config, DevPkiPaths), DefaultsError> {
    render(data_dir, gateway, None, extra_toml)
}

fn render(
    data_dir: &Path,
    gateway: &DefaultGateway,
    refresh_hint: Option<Seconds>,
    extra_toml: &str,
) -> Result<(Config, DevPkiPaths), DefaultsError> {
    let td = &gateway.trust_domain;
    let hint = refresh_hint.map_or_else(String::new, |h| format!("refresh_hint = {}\n", h.0));
    let id = endpoint_id(td)?;
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let paths = pki::ensure(data_dir, td, &id, &names, OffsetDateTime::now_utc())?;
    let toml = format!(
        r#"
data_dir = {data_dir:?}

[[local]]
trust_domain = "{td}"
source = {{ file = {bundle:?} }}
{hint}
[endpoint.https_web]
listen = "{web}"
cert = {web_cert:?}
key = {web_key:?}
public_names = ["localhost", "127.0.0.1"]

[endpoint.https_spiffe]
listen = "{spiffe}"
svid = {svid:?}
key = {svid_key:?}
endpoint_spiffe_id = "{id}"
{extra_toml}
"#,
        data_dir = data_dir.display().to_string(),
        bundle = paths.bundle.display().to_string(),
        web = gateway.web_listen,
        web_cert = paths.web_cert.display().to_string(),
        web_key = paths.web_key.display().to_string(),
        spiffe = gateway.spiffe_listen,
        svid = paths.svid.display().to_string(),
        svid_key = paths.svid_key.display().to_string(),
    );
    Ok((Config::from_toml(&toml)?, paths))
}

/// Timing of an embedded gateway that `fedgw serve` flags can change: how often it
/// polls and what refresh hint it serves. The defaults are those of a written
/// configuration (`[polling] min_refresh = "60s"`, `refresh_hint = "5m"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevTiming {
    /// `spiffe_refresh_hint` served with the local bundle (`[[local]] refresh_hint`).
    pub refresh_hint: Seconds,
    /// The shortest refresh interval used for foreign bundles
    /// (`[polling] min_refresh`).
    pub min_refresh: Seconds,
}

impl Default for DevTiming {
    fn default() -> Self {
        Self {
            refresh_hint: Seconds(300),
            min_refresh: Seconds(60),
        }
    }
}

/// [`embedded`] with `timing` applied. Blocks.
///
/// `[polling] default_refresh` (for foreign bundles without a hint) is raised to
/// `min_refresh` when that is above its 5 min default, so that any `min_refresh` up
/// to `max_refresh` (1 h) is accepted.
///
/// # Errors
/// [`DefaultsError`] if the PKI cannot be written or the result is invalid (for
/// example a zero `refresh_hint`).
pub fn embedded_with(
    data_dir: &Path,
    gateway: &DefaultGateway,
    timing: DevTiming,
) -> Result<(Config, DevPkiPaths), DefaultsError> {
    let polling = format!(
        "\n[polling]\nmin_refresh = {}\ndefault_refresh = {}\n",
        timing.min_refresh.0,
        timing.min_refresh.0.max(300)
    );
    render(data_dir, gateway, Some(timing.refresh_hint), &polling)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_gateway_is_valid_and_self_consistent() {
        let dir = tempfile::tempdir().unwrap();
        let gateway = DefaultGateway::default();
        let (config, paths) = embedded(dir.path(), &gateway, "").unwrap();
        assert_eq!(config.local[0].trust_domain, gateway.trust_domain);
        assert!(paths.bundle.exists());
        let spiffe = config.endpoint.https_spiffe.unwrap();
        assert_eq!(
            spiffe.endpoint_spiffe_id.trust_domain(),
            &gateway.trust_domain
        );
    }

    #[test]
    fn timing_and_addresses_reach_the_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let gateway = DefaultGateway {
            trust_domain: "a.testbed.localhost".parse().unwrap(),
            web_listen: "127.0.0.1:18443".parse().unwrap(),
            spiffe_listen: "127.0.0.1:18444".parse().unwrap(),
        };
        let timing = DevTiming {
            refresh_hint: Seconds(4),
            min_refresh: Seconds(1),
        };
        let (config, paths) = embedded_with(dir.path(), &gateway, timing).unwrap();
        assert_eq!(config.local[0].trust_domain, gateway.trust_domain);
        assert_eq!(config.local[0].refresh_hint, Seconds(4));
        assert_eq!(config.polling.min_refresh, Seconds(1));
        assert_eq!(config.polling.default_refresh, Seconds(300));
        let web = config.endpoint.https_web.unwrap();
        assert_eq!(web.listen, gateway.web_listen);
        let spiffe = config.endpoint.https_spiffe.unwrap();
        assert_eq!(spiffe.listen, gateway.spiffe_listen);
        assert_eq!(
            spiffe.endpoint_spiffe_id.to_string(),
            "spiffe://a.testbed.localhost/fedgw/bundle-endpoint"
        );
        assert!(
            paths
                .bundle
                .starts_with(dir.path().join("dev-pki/a.testbed.localhost"))
        );

        // A min_refresh above the 5 min default_refresh raises it; a zero hint is refused
        // with the key named.
        let slow = DevTiming {
            refresh_hint: Seconds(300),
            min_refresh: Seconds(600),
        };
        let (config, _) = embedded_with(dir.path(), &gateway, slow).unwrap();
        assert_eq!(config.polling.default_refresh, Seconds(600));
        let zero = DevTiming {
            refresh_hint: Seconds(0),
            min_refresh: Seconds(1),
        };
        let err = embedded_with(dir.path(), &gateway, zero).unwrap_err();
        assert!(err.to_string().contains("refresh_hint"), "{err}");

        // The defaults are those of a written configuration.
        let (config, _) = embedded_with(dir.path(), &gateway, DevTiming::default()).unwrap();
        assert_eq!(config.local[0].refresh_hint, Seconds(300));
        assert_eq!(config.polling.min_refresh, Seconds(60));
    }
}
