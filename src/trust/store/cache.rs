//! The last-known-good copy of a replica on a shared store: what it served, kept in
//! its data directory, so that a replica restarted while the database is away still
//! serves.
//!
//! Owns the file (`last-known-good.json`: the revision, every current bundle record,
//! the relationships created through the API and the fetch statuses, as the store
//! keeps them) and writing it safely: a new file, fsynced, renamed over the old one,
//! and the directory fsynced, so a crash leaves the old copy or the new one, never a
//! torn one. It is a cache: the database stays the truth, and a replica that started
//! from the copy catches up from its revision as soon as the database answers.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use spiffe_federation::TrustDomain;

use crate::trust::db::{BundleRecord, RelationshipRecord, RelationshipStatus, StoreError};

/// The file's name in the data directory.
pub const FILE: &str = "last-known-good.json";

/// The layout of the file this build writes and reads.
const FORMAT: u32 = 1;

/// What the copy holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastKnownGood {
    /// The layout.
    pub format: u32,
    /// The global revision of `bundles`.
    pub revision: u64,
    /// Every current bundle.
    pub bundles: Vec<BundleRecord>,
    /// The relationships created through the API.
    pub relationships: Vec<RelationshipRecord>,
    /// The fetch statuses.
    pub statuses: Vec<(TrustDomain, RelationshipStatus)>,
}

impl LastKnownGood {
    /// A copy of these records.
    pub fn new(
        revision: u64,
        bundles: Vec<BundleRecord>,
        relationships: Vec<RelationshipRecord>,
        statuses: Vec<(TrustDomain, RelationshipStatus)>,
    ) -> Self {
        Self {
            format: FORMAT,
            revision,
            bundles,
            relationships,
            statuses,
        }
    }
}

fn fs_error(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Filesystem {
        operation,
        path,
        source,
    }
}

/// Write `copy` into `dir`, replacing the last one. Blocks.
///
/// # Errors
/// [`StoreError::Filesystem`] or [`StoreError::Encode`]; the previous copy is then
/// left as it was.
pub fn write(dir: &Path, copy: &LastKnownGood) -> Result<(), StoreError> {
    let path = dir.join(FILE);
    let temporary: PathBuf = dir.join(format!("{FILE}.new"));
    let bytes = serde_json::to_vec(copy).map_err(|source| StoreError::Encode {
        keyspace: crate::trust::db::Keyspace::Bundles,
        key: FILE.to_owned(),
        source,
    })?;
    {
        let mut file = std::fs::File::create(&temporary).map_err(fs_error("create", &temporary))?;
        file.write_all(&bytes)
            .map_err(fs_error("write", &temporary))?;
        file.sync_all().map_err(fs_error("fsync", &temporary))?;
    }
    std::fs::rename(&temporary, &path).map_err(|source| StoreError::Rename {
        from: temporary.clone(),
        to: path.clone(),
        source,
    })?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(fs_error("fsync", dir))
}

/// The copy in `dir`, if there is one. Blocks.
///
/// # Errors
/// [`StoreError::Filesystem`] if it cannot be read, [`StoreError::Decode`] if it is not
/// a copy this build can read.
pub fn read(dir: &Path) -> Result<Option<LastKnownGood>, StoreError> {
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(fs_error("read", &path)(err)),
    };
    let copy: LastKnownGood =
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Decode {
            keyspace: crate::trust::db::Keyspace::Bundles,
            key: path.display().to_string(),
            source,
        })?;
    if copy.format != FORMAT {
        return Ok(None);
    }
    Ok(Some(copy))
}
