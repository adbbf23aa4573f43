//! The database's schema version: which layout of keyspaces and records it holds.
//!
//! Owns the version stamp (`meta` key `schema_version`, a u64 big-endian) and the
//! migrations between versions, run by [`super::Store::open_with`] before anything
//! else reads the records. A database written before the stamp existed holds the
//! version 1 layout and is stamped as such; one stamped with a version newer than
//! [`CURRENT`] is refused and left untouched, so an older fedgw never misreads (or
//! rewrites) what a newer one wrote. It does not own the record shapes
//! (`records.rs`).
//!
//! Versions:
//!
//! | version | layout |
//! |---------|--------|
//! | 1 | keyspaces `bundles`, `history`, `status`, `audit`, `meta`, `relationships` as described in [`super`]; relationship records are [`super::StoredRelationship`] |

use std::path::Path;

use sled::Tree;

use super::{Keyspace, StoreError, decode_counter, storage};

/// The newest layout this build reads and writes.
pub const CURRENT: u64 = 1;

/// The `meta` key of the version stamp.
pub const KEY: &[u8] = b"schema_version";

/// Bring the database in `meta`'s directory to [`CURRENT`]; true when it wrote
/// something (the caller flushes).
///
/// # Errors
/// [`StoreError::SchemaTooNew`], or a storage fault.
pub(super) fn upgrade(meta: &Tree, path: &Path) -> Result<bool, StoreError> {
    let found = match meta.get(KEY).map_err(storage(Keyspace::Meta, None))? {
        Some(value) => decode_counter(KEY, &value)?,
        // Written before the stamp: the version 1 layout.
        None => 0,
    };
    if found > CURRENT {
        return Err(StoreError::SchemaTooNew {
            path: path.to_owned(),
            found,
            known: CURRENT,
        });
    }
    if found == CURRENT {
        return Ok(false);
    }
    // 0 → 1: the layout is unchanged; only the stamp is new.
    meta.insert(KEY, &CURRENT.to_be_bytes()[..])
        .map_err(storage(Keyspace::Meta, None))?;
    Ok(true)
}

/// The version stamped in `meta` (0 when none).
///
/// # Errors
/// A storage fault or a malformed stamp.
pub fn stamped(meta: &Tree) -> Result<u64, StoreError> {
    match meta.get(KEY).map_err(storage(Keyspace::Meta, None))? {
        Some(value) => decode_counter(KEY, &value),
        None => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unstamped_database_is_stamped_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let meta = db.open_tree("meta").unwrap();
        assert_eq!(stamped(&meta).unwrap(), 0);
        assert!(upgrade(&meta, dir.path()).unwrap(), "stamped");
        assert_eq!(stamped(&meta).unwrap(), CURRENT);
        assert!(!upgrade(&meta, dir.path()).unwrap(), "nothing to do");
        meta.insert(KEY, &(CURRENT + 1).to_be_bytes()[..]).unwrap();
        let err = upgrade(&meta, dir.path()).unwrap_err();
        assert!(
            matches!(err, StoreError::SchemaTooNew { found, known, .. } if found == CURRENT + 1 && known == CURRENT),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("newer than the 1 this fedgw knows"),
            "{err}"
        );
        assert_eq!(stamped(&meta).unwrap(), CURRENT + 1, "left untouched");
    }
}
