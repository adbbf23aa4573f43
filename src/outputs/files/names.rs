//! The file names of a files sink: which name holds which trust domain.
//!
//! A trust domain's files are `<td>.pem` and `<td>.json` whenever that name can be a
//! file of the directory. It cannot when it is too long (a trust domain may have 255
//! bytes; with `.json` that is over `NAME_MAX`, 255 bytes on Linux filesystems), when
//! it starts with `.` (hidden, and the sink's own `.fedgw-*` files start so), or when
//! it is one of the sink's own file names (`bundle-map.json`, `bundle-files.json`).
//! Such a domain's files get an encoded stem instead:
//!
//! ```text
//! <prefix>+<hash>      prefix: the trust domain without leading dots, cut to 64 bytes
//!                      hash:   the first 32 hex digits of SHA-256(trust domain)
//! ```
//!
//! The name is deterministic (the same on every gateway and `fedgw agent`, and across
//! restarts), at most 102 bytes with its suffix, and never the plain name of another
//! trust domain: `+` is not a trust domain character. Consumers find every domain's
//! files in `bundle-files.json` ([`INDEX_FILE`]), written with each change.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Serialize;
use spiffe_federation::TrustDomain;

use crate::digest::sha256_hex;

/// The SPIFFE Bundle Map of every included trust domain.
pub const MAP_FILE: &str = "bundle-map.json";

/// The index of every included trust domain's file names.
pub const INDEX_FILE: &str = "bundle-files.json";

/// The longest file name the sink writes, in bytes (`NAME_MAX` of ext4, XFS, btrfs
/// and tmpfs).
pub const NAME_MAX: usize = 255;

/// Bytes of the trust domain kept at the front of an encoded stem.
const PREFIX_LEN: usize = 64;

/// Hex digits of SHA-256 in an encoded stem (128 bits).
const HASH_LEN: usize = 32;

/// A trust domain's two files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct DomainFiles {
    /// The X.509 authorities, PEM.
    pub(super) pem: String,
    /// The SPIFFE bundle document.
    pub(super) json: String,
}

/// The file names of `td`: plain when they can be, encoded otherwise (module docs).
pub(super) fn domain_files(td: &TrustDomain) -> DomainFiles {
    let stem = stem(td);
    DomainFiles {
        pem: format!("{stem}.pem"),
        json: format!("{stem}.json"),
    }
}

/// The stem of `td`'s file names.
fn stem(td: &TrustDomain) -> Cow<'_, str> {
    let name = td.as_str();
    let json = format!("{name}.json");
    let plain =
        !name.starts_with('.') && json.len() <= NAME_MAX && json != MAP_FILE && json != INDEX_FILE;
    if plain {
        return Cow::Borrowed(name);
    }
    let trimmed = name.trim_start_matches('.');
    // Trust domain names are ASCII, so any byte offset is a character boundary.
    let prefix = trimmed.get(..PREFIX_LEN.min(trimmed.len())).unwrap_or("");
    let prefix = if prefix.is_empty() { "td" } else { prefix };
    let hash = sha256_hex(name.as_bytes());
    let hash = hash.get(..HASH_LEN).unwrap_or(&hash);
    Cow::Owned(format!("{prefix}+{hash}"))
}

/// The content of [`INDEX_FILE`]: `{"trust_domains": {"<td>": {"pem": …, "json": …}}}`.
pub(super) fn index(files: &BTreeMap<&TrustDomain, DomainFiles>) -> Vec<u8> {
    #[derive(Serialize)]
    struct Index<'a> {
        trust_domains: &'a BTreeMap<&'a TrustDomain, DomainFiles>,
    }
    // Serialising strings into a Vec cannot fail.
    serde_json::to_vec(&Index {
        trust_domains: files,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td(name: &str) -> TrustDomain {
        name.parse().unwrap()
    }

    fn files(name: &str) -> DomainFiles {
        domain_files(&td(name))
    }

    #[test]
    fn ordinary_names_are_plain() {
        assert_eq!(
            files("east.example"),
            DomainFiles {
                pem: "east.example.pem".into(),
                json: "east.example.json".into()
            }
        );
        // 250 bytes + ".json" is exactly NAME_MAX.
        let longest = "a".repeat(250);
        assert_eq!(files(&longest).json, format!("{longest}.json"));
    }

    #[test]
    fn names_that_cannot_be_files_are_encoded_deterministically() {
        let long = format!("{}.example", "a".repeat(247));
        assert_eq!(long.len(), 255);
        for name in [
            long.as_str(),
            ".hidden",
            ".",
            "..",
            "bundle-map",
            "bundle-files",
            ".fedgw-tmp.1",
        ] {
            let first = files(name);
            assert_eq!(first, files(name), "{name}: deterministic");
            let stem = first.json.strip_suffix(".json").unwrap();
            assert!(stem.contains('+'), "{name}: {stem}");
            assert!(!stem.starts_with('.'), "{name}: {stem}");
            assert_eq!(first.pem, format!("{stem}.pem"));
            assert!(first.json.len() <= 102, "{name}: {}", first.json);
            assert!(first.json != MAP_FILE && first.json != INDEX_FILE);
        }
        let encoded = files(&long).json;
        assert!(encoded.starts_with(&"a".repeat(64)), "{encoded}");
        assert_eq!(files("..").json.split('+').next(), Some("td"));
        assert_ne!(files("bundle-map").json, files("bundle-files").json);
        // Two long names with the same first 64 bytes differ by their hash.
        let other = format!("{}.example", "a".repeat(246));
        assert_ne!(files(&other).json, encoded);
    }

    #[test]
    fn the_index_names_each_domain_s_files() {
        let (a, long) = (td("a.example"), td(&"b".repeat(255)));
        let map: BTreeMap<&TrustDomain, DomainFiles> =
            [(&a, domain_files(&a)), (&long, domain_files(&long))].into();
        let value: serde_json::Value = serde_json::from_slice(&index(&map)).unwrap();
        assert_eq!(value["trust_domains"]["a.example"]["pem"], "a.example.pem");
        assert_eq!(
            value["trust_domains"][long.as_str()]["json"],
            domain_files(&long).json
        );
    }
}
