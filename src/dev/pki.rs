//! Development PKI for the embedded default configuration and the local testbed.
//!
//! Owns making, on first start, a SPIFFE CA for a local trust domain (kept across
//! restarts in `data_dir`, so peers that fetched the bundle keep trusting it), a Web
//! PKI CA, and on every start fresh short-lived leaves signed by them: a server
//! certificate for the `https_web` endpoint and an X509-SVID for the `https_spiffe`
//! endpoint. Private keys are written with mode 0600.
//!
//! This is for trying fedgw out and for tests. In production, certificates come from
//! the operator (files in the configuration) and SPIFFE CAs from SPIRE.
//!
//! Every function here does blocking file I/O: call it from `spawn_blocking`.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use spiffe_federation::bundle::X509Authority;
use spiffe_federation::{Bundle, SpiffeId, TrustDomain};
use time::{Duration, OffsetDateTime};

/// Why the development PKI could not be made or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevPkiError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Certificate generation or loading failed.
    #[error("certificate generation for {what}: {reason}")]
    Certificate {
        /// Which certificate.
        what: &'static str,
        /// rcgen's explanation.
        reason: String,
    },
}

/// Where the files of one trust domain's development PKI are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevPkiPaths {
    /// The SPIFFE CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// The SPIFFE CA key (PEM, 0600).
    pub ca_key: PathBuf,
    /// The trust domain's bundle (SPIFFE JSON) holding the CA.
    pub bundle: PathBuf,
    /// The Web PKI CA certificate that signs the `https_web` server certificate; peers
    /// add it as `extra_ca_roots`.
    pub web_ca_cert: PathBuf,
    /// The `https_web` server certificate chain (PEM).
    pub web_cert: PathBuf,
    /// Its key (PEM, 0600).
    pub web_key: PathBuf,
    /// The `https_spiffe` X509-SVID chain (PEM).
    pub svid: PathBuf,
    /// Its key (PEM, 0600).
    pub svid_key: PathBuf,
}

/// Make or load the development PKI of `trust_domain` under `dir/dev-pki/<td>/`.
///
/// The CAs are made once and kept; the leaves are made fresh (valid 30 days): a server
/// certificate for `web_names` (DNS names or IP addresses) and an X509-SVID for
/// `endpoint_id`.
///
/// # Errors
/// [`DevPkiError`] naming the file or certificate at fault.
pub fn ensure(
    dir: &Path,
    trust_domain: &TrustDomain,
    endpoint_id: &SpiffeId,
    web_names: &[String],
    now: OffsetDateTime,
) -> Result<DevPkiPaths, DevPkiError> {
    let base = dir.join("dev-pki").join(trust_domain.as_str());
    create_dir(&base)?;
    let paths = DevPkiPaths {
        ca_cert: base.join("ca.pem"),
        ca_key: base.join("ca.key"),
        bundle: base.join("bundle.json"),
        web_ca_cert: base.join("web-ca.pem"),
        web_cert: base.join("web.pem"),
        web_key: base.join("web.key"),
        svid: base.join("svid.pem"),
        svid_key: base.join("svid.key"),
    };
    let web_ca_key = base.join("web-ca.key");

    let spiffe_ca = load_or_make_ca(
        &paths.ca_cert,
        &paths.ca_key,
        "SPIFFE CA",
        |params| {
            params.subject_alt_names = vec![san_uri(&trust_domain.id().to_string())?];
            Ok(())
        },
        &format!("{trust_domain} development SPIFFE CA"),
        now,
    )?;
    let web_ca = load_or_make_ca(
        &paths.web_ca_cert,
        &web_ca_key,
        "Web CA",
        |_| Ok(()),
        &format!("{trust_domain} development Web CA"),
        now,
    )?;

    // The bundle holds the SPIFFE CA, with a served refresh hint set by the gateway.
    let ca_pem = read(&paths.ca_cert)?;
    let mut bundle = Bundle::new(trust_domain.clone());
    for authority in Bundle::from_pem(trust_domain, ca_pem.as_bytes())
        .map_err(|err| certificate_error("SPIFFE CA", err))?
        .x509_authorities()
    {
        bundle.add_x509_authority(authority.clone());
    }
    write(&paths.bundle, bundle.to_json_pretty().as_bytes(), false)?;

    let mut web = leaf_params(now, "fedgw development endpoint");
    web.subject_alt_names = web_names
        .iter()
        .map(|name| match name.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => name
                .as_str()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|err| certificate_error("web certificate", err)),
        })
        .collect::<Result<_, _>>()?;
    issue(
        &web,
        &web_ca,
        &paths.web_cert,
        &paths.web_key,
        "web certificate",
    )?;

    let mut svid = leaf_params(now, "fedgw bundle endpoint");
    svid.subject_alt_names = vec![san_uri(&endpoint_id.to_string())?];
    issue(&svid, &spiffe_ca, &paths.svid, &paths.svid_key, "X509-SVID")?;
    Ok(paths)
}

/// The development Web CA that signs `cert`, when `cert` is the `https_web`
/// certificate of a development PKI made by [`ensure`] (`…/dev-pki/<td>/web.pem`, with
/// `web-ca.pem` beside it). Blocks (a file check).
pub fn web_ca_of(cert: &Path) -> Option<PathBuf> {
    let dir = cert.parent()?;
    let is_dev = cert.file_name()? == "web.pem" && dir.parent()?.file_name()? == "dev-pki";
    let ca = dir.join("web-ca.pem");
    (is_dev && ca.is_file()).then_some(ca)
}

/// Issue an X509-SVID for `id` from the development SPIFFE CA whose files are at
/// `paths` (used by the testbed for workloads). Returns `(chain_pem, key_pem)`.
///
/// # Errors
/// [`DevPkiError`] if the CA cannot be loaded or the certificate made.
pub fn issue_svid(
    paths: &DevPkiPaths,
    id: &SpiffeId,
    now: OffsetDateTime,
) -> Result<(String, String), DevPkiError> {
    let ca = load_ca(&paths.ca_cert, &paths.ca_key, "SPIFFE CA")?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|err| certificate_error("X509-SVID", err))?;
    let mut params = leaf_params(now, "workload");
    params.subject_alt_names = vec![san_uri(&id.to_string())?];
    let cert = params
        .signed_by(&key, &ca)
        .map_err(|err| certificate_error("X509-SVID", err))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The development SPIFFE CA as an authority, for tests and status output.
///
/// # Errors
/// [`DevPkiError`] if the file cannot be read or parsed.
pub fn ca_authority(paths: &DevPkiPaths, td: &TrustDomain) -> Result<X509Authority, DevPkiError> {
    let pem = read(&paths.ca_cert)?;
    Bundle::from_pem(td, pem.as_bytes())
        .map_err(|err| certificate_error("SPIFFE CA", err))?
        .x509_authorities()
        .first()
        .cloned()
        .ok_or_else(|| certificate_error("SPIFFE CA", "no certificate in ca.pem"))
}

fn san_uri(uri: &str) -> Result<SanType, DevPkiError> {
    uri.try_into()
        .map(SanType::URI)
        .map_err(|err| certificate_error("URI SAN", err))
}

fn leaf_params(now: OffsetDateTime, common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(30);
    params.use_authority_key_identifier_extension = true;
    params
}

fn load_or_make_ca(
    cert_path: &Path,
    key_path: &Path,
    what: &'static str,
    customise: impl FnOnce(&mut CertificateParams) -> Result<(), DevPkiError>,
    common_name: &str,
    now: OffsetDateTime,
) -> Result<Issuer<'static, KeyPair>, DevPkiError> {
    if cert_path.exists() && key_path.exists() {
        return load_ca(cert_path, key_path, what);
    }
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|err| certificate_error(what, err))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(365);
    customise(&mut params)?;
    let cert = params
        .self_signed(&key)
        .map_err(|err| certificate_error(what, err))?;
    write(key_path, key.serialize_pem().as_bytes(), true)?;
    write(cert_path, cert.pem().as_bytes(), false)?;
    Ok(Issuer::new(params, key))
}

fn load_ca(
    cert_path: &Path,
    key_path: &Path,
    what: &'static str,
) -> Result<Issuer<'static, KeyPair>, DevPkiError> {
    let key = KeyPair::from_pem(&read(key_path)?).map_err(|err| certificate_error(what, err))?;
    Issuer::from_ca_cert_pem(&read(cert_path)?, key).map_err(|err| certificate_error(what, err))
}

fn issue(
    params: &CertificateParams,
    issuer: &Issuer<'static, KeyPair>,
    cert_path: &Path,
    key_path: &Path,
    what: &'static str,
) -> Result<(), DevPkiError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|err| certificate_error(what, err))?;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|err| certificate_error(what, err))?;
    write(key_path, key.serialize_pem().as_bytes(), true)?;
    write(cert_path, cert.pem().as_bytes(), false)?;
    Ok(())
}

fn certificate_error(what: &'static str, err: impl std::fmt::Display) -> DevPkiError {
    DevPkiError::Certificate {
        what,
        reason: err.to_string(),
    }
}

fn create_dir(path: &Path) -> Result<(), DevPkiError> {
    std::fs::create_dir_all(path).map_err(|source| DevPkiError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read(path: &Path) -> Result<String, DevPkiError> {
    std::fs::read_to_string(path).map_err(|source| DevPkiError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Write a file, replacing it atomically (temp file, fsync, rename); `secret` files
/// get mode 0600 before any content is written.
fn write(path: &Path, contents: &[u8], secret: bool) -> Result<(), DevPkiError> {
    use std::io::Write as _;
    let io = |source| DevPkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(&tmp).map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use rustls_pki_types::{CertificateDer, UnixTime, pem::PemObject as _};
    use spiffe_federation::verify::verify_x509_svid_for;

    use super::*;

    fn td() -> TrustDomain {
        "dev.example".parse().unwrap()
    }

    fn endpoint_id() -> SpiffeId {
        "spiffe://dev.example/fedgw".parse().unwrap()
    }

    fn chain(path: &Path) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_file_iter(path)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn svid_verifies_against_the_bundle_and_ca_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let names = ["localhost".to_owned(), "127.0.0.1".to_owned()];
        let first = ensure(dir.path(), &td(), &endpoint_id(), &names, now).unwrap();
        let bundle_json = std::fs::read(&first.bundle).unwrap();
        let bundle = Bundle::parse(&td(), &bundle_json).unwrap().bundle;
        let unix_now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            now.unix_timestamp().try_into().unwrap(),
        ));
        verify_x509_svid_for(&chain(&first.svid), &bundle, &endpoint_id(), unix_now).unwrap();

        // A second start keeps the CA (and so the bundle) and issues fresh leaves.
        let ca_before = std::fs::read(&first.ca_cert).unwrap();
        let svid_before = std::fs::read(&first.svid).unwrap();
        let second = ensure(dir.path(), &td(), &endpoint_id(), &names, now).unwrap();
        assert_eq!(std::fs::read(&second.ca_cert).unwrap(), ca_before);
        assert_eq!(std::fs::read(&second.bundle).unwrap(), bundle_json);
        assert_ne!(std::fs::read(&second.svid).unwrap(), svid_before);
        verify_x509_svid_for(&chain(&second.svid), &bundle, &endpoint_id(), unix_now).unwrap();

        // Workload SVIDs from the same CA verify too.
        let (pem, _key) =
            issue_svid(&second, &"spiffe://dev.example/app".parse().unwrap(), now).unwrap();
        let workload: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        verify_x509_svid_for(
            &workload,
            &bundle,
            &"spiffe://dev.example/app".parse().unwrap(),
            unix_now,
        )
        .unwrap();
    }

    #[test]
    fn the_development_web_ca_is_found_beside_its_certificate_only() {
        let dir = tempfile::tempdir().unwrap();
        let names = ["localhost".to_owned()];
        let now = OffsetDateTime::now_utc();
        let paths = ensure(dir.path(), &td(), &endpoint_id(), &names, now).unwrap();
        assert_eq!(web_ca_of(&paths.web_cert), Some(paths.web_ca_cert.clone()));
        assert_eq!(web_ca_of(&paths.svid), None);
        let elsewhere = dir.path().join("web.pem");
        std::fs::copy(&paths.web_cert, &elsewhere).unwrap();
        assert_eq!(web_ca_of(&elsewhere), None);
    }

    #[cfg(unix)]
    #[test]
    fn private_keys_are_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let paths = ensure(
            dir.path(),
            &td(),
            &endpoint_id(),
            &["localhost".to_owned()],
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        for key in [&paths.ca_key, &paths.web_key, &paths.svid_key] {
            let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
    }
}
