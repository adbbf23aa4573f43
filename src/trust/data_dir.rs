//! The gateway's `data_dir`: made if missing, held for as long as the gateway runs, and
//! left as it was found when a start fails.
//!
//! Owns the lock file `data_dir/fedgw.lock`: the running gateway holds an exclusive
//! advisory lock on it (`flock`, released by the kernel when the process ends, even on
//! `kill -9`) and writes its process ID in it, so that a second fedgw started on the
//! same directory is refused with `data_dir X is in use by another fedgw process
//! (pid N)` before it touches anything. Owns undoing a failed start: every entry of
//! `data_dir` that the start created (the database, the development PKI, the admin
//! socket, the lock file) is removed again, and the directory itself if the start
//! created it, so that a start that could not bind leaves nothing behind. Entries that
//! were there before are never touched. It does not own what is inside (the store,
//! `dev_pki`).
//!
//! Every function here blocks (file I/O): call it from `spawn_blocking`.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

/// The lock file's name inside `data_dir`.
pub const LOCK_FILE: &str = "fedgw.lock";

/// Why `data_dir` cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataDirError {
    /// Another process holds the lock: another fedgw runs on this directory.
    #[error("data_dir {} is in use by another fedgw process{}", path.display(), pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default())]
    InUse {
        /// The directory.
        path: PathBuf,
        /// The process ID the holder wrote in the lock file, when readable.
        pid: Option<u32>,
    },
    /// The directory could not be created or listed.
    #[error("cannot create data_dir {}: {source}", path.display())]
    Create {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The lock file could not be opened, locked or written.
    #[error("cannot lock data_dir with {}: {source}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A `data_dir` held by this process: the lock lasts as long as this value.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    /// `None` where the file system cannot lock (the gateway then runs unguarded).
    lock: Option<File>,
    created_dir: bool,
    before: BTreeSet<OsString>,
}

impl DataDir {
    /// Create `path` if needed and take its lock.
    ///
    /// # Errors
    /// [`DataDirError::InUse`] when another process holds it; [`DataDirError::Create`]
    /// or [`DataDirError::Lock`] naming the directory or file that failed.
    pub fn acquire(path: &Path) -> Result<Self, DataDirError> {
        let create = |source| DataDirError::Create {
            path: path.to_path_buf(),
            source,
        };
        let created_dir = !path.exists();
        std::fs::create_dir_all(path).map_err(create)?;
        let before = entries(path).map_err(create)?;
        let lock_path = path.join(LOCK_FILE);
        let lock_error = |source| DataDirError::Lock {
            path: lock_path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(lock_error)?;
        let lock = match file.try_lock() {
            Ok(()) => {
                file.set_len(0).map_err(lock_error)?;
                file.seek(SeekFrom::Start(0)).map_err(lock_error)?;
                writeln!(file, "{}", std::process::id()).map_err(lock_error)?;
                Some(file)
            }
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let pid = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(DataDirError::InUse {
                    path: path.to_path_buf(),
                    pid,
                });
            }
            Err(TryLockError::Error(err)) if err.kind() == std::io::ErrorKind::Unsupported => {
                tracing::warn!(
                    file = %lock_path.display(),
                    "the file system of data_dir cannot lock files: nothing stops a second fedgw from opening the same data_dir"
                );
                None
            }
            Err(TryLockError::Error(err)) => return Err(lock_error(err)),
        };
        Ok(Self {
            path: path.to_path_buf(),
            lock,
            created_dir,
            before,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Undo a failed start: remove every entry created since [`Self::acquire`] (the
    /// lock file too, if it was new), then the directory if it was created, and
    /// release the lock. Failures are logged, never raised: the start's own error is
    /// the one to report.
    pub fn undo(self) {
        let Self {
            path,
            lock,
            created_dir,
            before,
        } = self;
        // Without a lock another process may be using the directory: touch nothing.
        if lock.is_none() {
            return;
        }
        match entries(&path) {
            Ok(now) => {
                for name in now.difference(&before) {
                    let entry = path.join(name);
                    let removed = if entry.is_dir() && !entry.is_symlink() {
                        std::fs::remove_dir_all(&entry)
                    } else {
                        std::fs::remove_file(&entry)
                    };
                    if let Err(err) = removed {
                        tracing::warn!(path = %entry.display(), error = %err, "cannot remove what a failed start made");
                    }
                }
            }
            Err(err) => {
                tracing::warn!(data_dir = %path.display(), error = %err, "cannot list data_dir to undo a failed start");
            }
        }
        drop(lock);
        if created_dir && let Err(err) = std::fs::remove_dir(&path) {
            tracing::warn!(data_dir = %path.display(), error = %err, "cannot remove the data_dir a failed start made");
        }
    }
}

fn entries(path: &Path) -> std::io::Result<BTreeSet<OsString>> {
    std::fs::read_dir(path)?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_naming_the_first_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let held = DataDir::acquire(&path).unwrap();
        match DataDir::acquire(&path) {
            Err(DataDirError::InUse { path: p, pid }) => {
                assert_eq!(p, path);
                assert_eq!(pid, Some(std::process::id()));
            }
            other => panic!("expected InUse, got {other:?}"),
        }
        let message = DataDir::acquire(&path).unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "data_dir {} is in use by another fedgw process (pid {})",
                path.display(),
                std::process::id()
            )
        );
        drop(held);
        // Released with the value: the next start gets it.
        DataDir::acquire(&path).unwrap();
    }

    #[test]
    fn undo_removes_what_the_start_made_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        // A fresh directory: everything goes, the directory too.
        let fresh = DataDir::acquire(&path).unwrap();
        std::fs::create_dir_all(path.join("dev-pki/td")).unwrap();
        std::fs::write(path.join("dev-pki/td/ca.pem"), "x").unwrap();
        fresh.undo();
        assert!(!path.exists());

        // An existing directory: what was there stays, the new entries go.
        std::fs::create_dir_all(path.join("db")).unwrap();
        std::fs::write(path.join("db/conf"), "kept").unwrap();
        let existing = DataDir::acquire(&path).unwrap();
        std::fs::write(path.join("db/new-inside-old"), "kept too").unwrap();
        std::fs::write(path.join("admin.sock"), "").unwrap();
        existing.undo();
        let mut left: Vec<_> = entries(&path).unwrap().into_iter().collect();
        left.sort();
        assert_eq!(left, [OsString::from("db")]);
        assert!(path.join("db/new-inside-old").exists());
    }
}
