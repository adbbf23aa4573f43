//! Rewriting the database to give back the space sled 0.34 keeps, and finishing or
//! undoing a rewrite that a crash interrupted.
//!
//! Why it exists: sled writes every value or page larger than a quarter of its 512 KiB
//! log segment to a file of its own under `blobs/`, and deletes a replaced one only
//! when the log segment that was being written at the time fills up. With large
//! bundles the log grows by a few hundred bytes per change, so the segment hardly
//! ever fills, and the pending deletions live only in memory: a restart forgets them
//! and the files stay forever. docs/operations.md has the figures.
//!
//! A rewrite copies every keyspace, under the store's exclusive lock, into a fresh
//! database in the sibling directory `<db>.compact`, makes it durable (every file and
//! directory fsynced, which sled itself does not do for its blob files), checks it
//! against the source, and swaps it in by renames, each followed by an fsync of the
//! parent directory:
//!
//! 1. `<db>.compact` → `<db>.compacted` (the copy is complete);
//! 2. `<db>` → `<db>.old`;
//! 3. `<db>.compacted` → `<db>`; then `<db>.old` is deleted.
//!
//! [`recover`] runs before every open and resolves any state a crash can leave:
//! `<db>.compact` is deleted (incomplete); `<db>.compacted` is deleted when `<db>`
//! exists (the swap had not started) and renamed to `<db>` otherwise (step 2 was
//! done); `<db>.old` is deleted when `<db>` exists. Every state therefore opens with
//! every record, from either the old database or its complete copy.
//!
//! A `fedgw.lock` file in each directory, held with an exclusive `flock` while the
//! directory is in use, keeps a second process from "recovering" a rewrite that is
//! in progress.

use std::fs::{self, File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Keyspace, StoreError, Trees, retention};

/// The lock file in each database directory.
pub(super) const LOCK_FILE: &str = "fedgw.lock";

/// Inline records written after the copy so that sled rolls its log segments and
/// deletes the blob files the copy itself replaced (3 segments of 512 KiB). They cost
/// about 5 MiB of log file (reused by later writes), so the copy is padded only when
/// it holds more than [`PAD_WORTH`] bytes beyond its records.
const PAD_RECORDS: usize = 1536;
const PAD_WORTH: u64 = 8 * 1024 * 1024;
const PAD_RECORD_BYTES: usize = 1024;
const PAD_TREE: &str = "__fedgw_compaction_pad";

/// How long to wait for a closed sled database to release its files.
const RELEASE_DEADLINE: Duration = Duration::from_secs(30);

/// The database directory and its siblings.
#[derive(Debug, Clone)]
pub(super) struct Dirs {
    pub(super) db: PathBuf,
    compact: PathBuf,
    compacted: PathBuf,
    old: PathBuf,
}

impl Dirs {
    pub(super) fn new(db: &Path) -> Result<Self, StoreError> {
        let name = db.file_name().ok_or_else(|| StoreError::Filesystem {
            operation: "name the database directory",
            path: db.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"),
        })?;
        let sibling = |suffix: &str| {
            let mut name = name.to_owned();
            name.push(suffix);
            db.with_file_name(name)
        };
        Ok(Self {
            db: db.to_owned(),
            compact: sibling(".compact"),
            compacted: sibling(".compacted"),
            old: sibling(".old"),
        })
    }

    fn parent(&self) -> &Path {
        self.db
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    }
}

/// What a rewrite did.
#[derive(Debug, Clone, Copy)]
pub(super) struct Report {
    /// Bytes of records copied (keys and values of every keyspace).
    pub(super) live: u64,
    /// Records copied.
    pub(super) records: u64,
    /// How long it took.
    pub(super) took: Duration,
}

/// The handles to use after a rewrite (the new database, or the old one reopened when
/// the rewrite failed; `None` only if even that failed), and what happened.
pub(super) struct Rewritten {
    pub(super) trees: Option<Trees>,
    pub(super) result: Result<Report, StoreError>,
}

/// Take the exclusive lock of database directory `dir` (creating its lock file).
///
/// # Errors
/// [`StoreError::Locked`] when another process (or another store in this one) holds
/// it; [`StoreError::Filesystem`] when the file cannot be created.
pub(super) fn lock(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(fs_error("create the lock file", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StoreError::Locked {
            path: dir.to_owned(),
        }),
        Err(TryLockError::Error(source)) => Err(StoreError::Filesystem {
            operation: "lock",
            path,
            source,
        }),
    }
}

/// Resolve what an interrupted rewrite left (see the module documentation), after
/// checking that no other process uses any of the directories. Call before opening.
///
/// # Errors
/// [`StoreError::Locked`] if a directory is in use; [`StoreError::Filesystem`] if a
/// rename or a removal fails.
pub(super) fn recover(dirs: &Dirs) -> Result<(), StoreError> {
    let mut held = Vec::new();
    for dir in [&dirs.db, &dirs.old, &dirs.compacted, &dirs.compact] {
        if dir.is_dir() {
            held.push(lock(dir)?);
        }
    }
    if dirs.compact.exists() {
        tracing::warn!(path = %dirs.compact.display(), "removing an incomplete store rewrite");
        remove_dir(&dirs.compact)?;
    }
    if dirs.compacted.exists() {
        if dirs.db.exists() {
            tracing::warn!(path = %dirs.compacted.display(), "removing a store rewrite that was not swapped in");
            remove_dir(&dirs.compacted)?;
        } else {
            tracing::warn!(path = %dirs.db.display(), "finishing an interrupted store rewrite");
            rename(&dirs.compacted, &dirs.db)?;
        }
    }
    if dirs.old.exists() {
        if dirs.db.exists() {
            remove_dir(&dirs.old)?;
        } else {
            // Not a state the rewrite leaves, but the old database is whole.
            tracing::warn!(path = %dirs.db.display(), "restoring the store from before a rewrite");
            rename(&dirs.old, &dirs.db)?;
        }
    }
    sync_dir(dirs.parent())?;
    drop(held);
    Ok(())
}

/// Rewrite the database held by `old` (see the module documentation). Call with the
/// store's exclusive lock held: nothing else may use `old` meanwhile.
pub(super) fn rewrite(dirs: &Dirs, old: Trees) -> Rewritten {
    let started = Instant::now();
    let copied = match prepare(dirs, &old) {
        Ok(copied) => copied,
        Err(err) => {
            discard(dirs);
            return Rewritten {
                trees: Some(old),
                result: Err(err),
            };
        }
    };
    let (new_lock, live, records) = copied;
    let old_lock = old.close();
    let swapped = swap(dirs, new_lock);
    let result = match swapped {
        Ok(trees) => {
            drop(old_lock);
            if let Err(err) = remove_dir(&dirs.old).and_then(|()| sync_dir(dirs.parent())) {
                // The next start removes it.
                tracing::warn!(error = %err, "the store before the rewrite could not be removed");
            }
            return Rewritten {
                trees: Some(trees),
                result: Ok(Report {
                    live,
                    records,
                    took: started.elapsed(),
                }),
            };
        }
        Err(err) => err,
    };
    discard(dirs);
    let trees = wait_released(&dirs.db)
        .and_then(|()| Trees::open(&dirs.db, old_lock))
        .map_err(|err| tracing::error!(error = %err, "the store could not be reopened after a failed rewrite"))
        .ok();
    Rewritten {
        trees,
        result: Err(result),
    }
}

/// Steps up to `<db>.compacted`: copy, make durable, verify. The old database is not
/// touched. Returns the new directory's lock, the live bytes and the record count.
fn prepare(dirs: &Dirs, old: &Trees) -> Result<(File, u64, u64), StoreError> {
    for leftover in [&dirs.compact, &dirs.compacted] {
        if leftover.exists() {
            remove_dir(leftover)?;
        }
    }
    fs::create_dir(&dirs.compact).map_err(fs_error("create", &dirs.compact))?;
    let new_lock = lock(&dirs.compact)?;
    let stats = copy(&old.db, &dirs.compact)?;
    wait_released(&dirs.compact)?;
    verify(&dirs.compact, &stats)?;
    wait_released(&dirs.compact)?;
    sync_tree(&dirs.compact)?;
    rename(&dirs.compact, &dirs.compacted)?;
    sync_dir(dirs.parent())?;
    checkpoint("copied");
    let live = stats.iter().map(|s| s.bytes).sum();
    let records = stats.iter().map(|s| s.records).sum();
    Ok((new_lock, live, records))
}

/// Steps from the closed old database to the new one open at `<db>`; on failure the
/// old one is back at `<db>` (closed).
fn swap(dirs: &Dirs, new_lock: File) -> Result<Trees, StoreError> {
    wait_released(&dirs.db)?;
    rename(&dirs.db, &dirs.old)?;
    sync_dir(dirs.parent())?;
    checkpoint("old_renamed");
    if let Err(err) = rename(&dirs.compacted, &dirs.db).and_then(|()| sync_dir(dirs.parent())) {
        restore_old(dirs);
        return Err(err);
    }
    checkpoint("swapped");
    match Trees::open(&dirs.db, new_lock) {
        Ok(trees) => Ok(trees),
        Err(err) => {
            // Put the copy aside (discarded later) and the old database back.
            // Best effort: if sled still holds the copy, the rename below fails and the
            // copy stays where it is, to be discarded at the next start.
            let _released = wait_released(&dirs.db);
            if rename(&dirs.db, &dirs.compacted).is_ok() {
                restore_old(dirs);
            }
            Err(err)
        }
    }
}

fn restore_old(dirs: &Dirs) {
    if let Err(err) = rename(&dirs.old, &dirs.db).and_then(|()| sync_dir(dirs.parent())) {
        // The next start finishes this (`<db>.old` or `<db>.compacted` to `<db>`).
        tracing::error!(error = %err, "the store could not be put back after a failed rewrite");
    }
}

/// Remove `<db>.compact` and `<db>.compacted`, logging what cannot be removed.
fn discard(dirs: &Dirs) {
    for dir in [&dirs.compact, &dirs.compacted] {
        if dir.exists()
            && let Err(err) = remove_dir(dir)
        {
            tracing::warn!(error = %err, "a store rewrite could not be cleaned up");
        }
    }
}

/// Records and bytes of one keyspace.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TreeStats {
    name: Vec<u8>,
    records: u64,
    bytes: u64,
}

/// Copy every tree of `source` into a new sled database at `target`, then pad its
/// log so that sled deletes the blob files the copy replaced, and flush.
fn copy(source: &sled::Db, target: &Path) -> Result<Vec<TreeStats>, StoreError> {
    let db = sled::open(target).map_err(|source| StoreError::Open {
        path: target.to_owned(),
        source,
    })?;
    let failed = |source| StoreError::Storage {
        keyspace: Keyspace::Meta,
        trust_domain: None,
        source,
    };
    let mut stats = Vec::new();
    let mut names = source.tree_names();
    names.sort();
    for name in names {
        let from = source.open_tree(&name).map_err(failed)?;
        let to = db.open_tree(&name).map_err(failed)?;
        let mut tree = TreeStats {
            name: name.to_vec(),
            records: 0,
            bytes: 0,
        };
        for item in from.iter() {
            let (key, value) = item.map_err(failed)?;
            tree.records += 1;
            tree.bytes = tree
                .bytes
                .saturating_add(retention::record_len(&key, value.len()));
            to.insert(key, value).map_err(failed)?;
        }
        stats.push(tree);
        checkpoint("copying");
    }
    db.flush().map_err(|source| StoreError::Flush { source })?;
    let live: u64 = stats.iter().map(|t| t.bytes).sum();
    let (disk, _) = disk_usage(target)?;
    if disk.saturating_sub(live) > PAD_WORTH {
        pad(&db)?;
    }
    Ok(stats)
}

/// Write and drop [`PAD_RECORDS`] inline records, so that sled rolls its log
/// segments and deletes the blob files the copy replaced (it deletes a replaced blob
/// only when the segment written at the time is done).
fn pad(db: &sled::Db) -> Result<(), StoreError> {
    let failed = |source| StoreError::Storage {
        keyspace: Keyspace::Meta,
        trust_domain: None,
        source,
    };
    let pad = db.open_tree(PAD_TREE).map_err(failed)?;
    let filler = vec![0u8; PAD_RECORD_BYTES];
    for i in 0..PAD_RECORDS {
        pad.insert(i.to_be_bytes(), filler.as_slice())
            .map_err(failed)?;
    }
    db.flush().map_err(|source| StoreError::Flush { source })?;
    drop(pad);
    db.drop_tree(PAD_TREE).map_err(failed)?;
    db.flush().map_err(|source| StoreError::Flush { source })?;
    Ok(())
}

/// Open the copy at `dir` and check that every tree holds what was copied.
fn verify(dir: &Path, expected: &[TreeStats]) -> Result<(), StoreError> {
    let db = sled::open(dir).map_err(|source| StoreError::Open {
        path: dir.to_owned(),
        source,
    })?;
    let mut names = db.tree_names();
    names.sort();
    let mut found = Vec::new();
    for name in names {
        let tree = db.open_tree(&name).map_err(|source| StoreError::Open {
            path: dir.to_owned(),
            source,
        })?;
        let mut stats = TreeStats {
            name: name.to_vec(),
            records: 0,
            bytes: 0,
        };
        for item in tree.iter() {
            let (key, value) = item.map_err(|source| StoreError::Open {
                path: dir.to_owned(),
                source,
            })?;
            stats.records += 1;
            stats.bytes = stats
                .bytes
                .saturating_add(retention::record_len(&key, value.len()));
        }
        found.push(stats);
    }
    if found != expected {
        return Err(StoreError::RewriteMismatch {
            path: dir.to_owned(),
            expected: describe(expected),
            found: describe(&found),
        });
    }
    Ok(())
}

fn describe(stats: &[TreeStats]) -> String {
    stats
        .iter()
        .map(|t| {
            format!(
                "{}: {} records, {} bytes",
                String::from_utf8_lossy(&t.name),
                t.records,
                t.bytes
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Bytes the files under `dir` take: allocated blocks (what `du` shows) and lengths
/// (what `du --apparent-size` shows). Files sled deletes meanwhile are skipped.
pub(super) fn disk_usage(dir: &Path) -> Result<(u64, u64), StoreError> {
    use std::os::unix::fs::MetadataExt as _;
    let (mut allocated, mut apparent) = (0u64, 0u64);
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(fs_error("list", &dir)(source)),
        };
        for entry in entries {
            let entry = entry.map_err(fs_error("list", &dir))?;
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(fs_error("stat", &entry.path())(source)),
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                allocated = allocated.saturating_add(meta.blocks().saturating_mul(512));
                apparent = apparent.saturating_add(meta.len());
            }
        }
    }
    Ok((allocated, apparent))
}

/// Wait until the sled database in `dir` is closed: sled's background threads may
/// hold its file (and lock) a moment after the last handle is dropped, and they must
/// be gone before the directory is renamed (sled finds its blob files by path), or
/// opened again in this process (sled would refuse its own lock).
pub(super) fn wait_released(dir: &Path) -> Result<(), StoreError> {
    let path = dir.join("db");
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(fs_error("open", &path)(source)),
    };
    let started = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(TryLockError::WouldBlock) if started.elapsed() < RELEASE_DEADLINE => {
                #[expect(
                    clippy::disallowed_methods,
                    reason = "store calls run on a blocking thread; sled offers no close notification"
                )]
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    path: dir.to_owned(),
                });
            }
            Err(TryLockError::Error(source)) => return Err(fs_error("lock", &path)(source)),
        }
    }
}

/// fsync every file and directory under `dir`, `dir` last.
fn sync_tree(dir: &Path) -> Result<(), StoreError> {
    for entry in fs::read_dir(dir).map_err(fs_error("list", dir))? {
        let entry = entry.map_err(fs_error("list", dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(fs_error("stat", &path))?;
        if kind.is_dir() {
            sync_tree(&path)?;
        } else {
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(fs_error("fsync", &path))?;
        }
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(fs_error("fsync", dir))
}

fn rename(from: &Path, to: &Path) -> Result<(), StoreError> {
    fs::rename(from, to).map_err(|source| StoreError::Rename {
        from: from.to_owned(),
        to: to.to_owned(),
        source,
    })
}

fn remove_dir(dir: &Path) -> Result<(), StoreError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(fs_error("remove", dir)(source)),
    }
}

fn fs_error(operation: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Filesystem {
        operation,
        path,
        source,
    }
}

/// A crash point for the crash tests: aborts the process at `step` when the test
/// run asks for it. Nothing in other builds.
fn checkpoint(step: &str) {
    #[cfg(test)]
    if std::env::var(tests::CRASH_AT).is_ok_and(|at| at == step) {
        std::process::abort();
    }
    #[cfg(not(test))]
    let _ = step;
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::process::Command;

    use super::*;
    use crate::telemetry::Metrics;
    use crate::trust::db::{
        AuditAction, AuditNote, Database as _, NewBundle, RelationshipStatus, StorageConfig, Store,
    };
    use crate::trust::policy::Source;
    use crate::trust::policy::testing::td;

    /// The crash step the child process aborts at.
    pub(super) const CRASH_AT: &str = "FEDGW_TEST_COMPACT_CRASH_AT";
    /// The database directory of the child process.
    const CRASH_DIR: &str = "FEDGW_TEST_COMPACT_CRASH_DIR";
    const STEPS: [&str; 4] = ["copying", "copied", "old_renamed", "swapped"];

    fn settings() -> StorageConfig {
        StorageConfig {
            compact_min_waste_bytes: crate::trust::db::MIN_COMPACT_MIN_WASTE,
            ..StorageConfig::default()
        }
    }

    fn open(db: &Path) -> Store {
        Store::open_with(db, settings(), Metrics::new()).unwrap()
    }

    /// A document of about `len` bytes, distinct per `n`.
    fn document(n: u64, len: usize) -> Vec<u8> {
        let filler = "A".repeat(len);
        format!(r#"{{"keys":[],"spiffe_sequence":{n},"x":"{filler}"}}"#).into_bytes()
    }

    /// Three domains, one with large documents and more versions than history keeps,
    /// statuses and an audit entry of its own.
    fn fill(store: &Store) {
        let note = || AuditNote {
            who: "alice".into(),
            action: AuditAction::Accept,
            detail: String::new(),
        };
        for n in 1..=24u64 {
            let (name, len) = match n % 3 {
                0 => ("big.example", 200 * 1024),
                1 => ("small.example", 100),
                _ => ("mid.example", 20 * 1024),
            };
            let new = NewBundle {
                trust_domain: td(name),
                document: document(n, len),
                source: Source::Operator {
                    who: "alice".into(),
                },
                accepted_at: 1_700_000_000,
                sequence: Some(n),
                expected: crate::trust::db::Expected::Any,
                fence: None,
            };
            store.put_bundle(new, note()).unwrap();
        }
        let status = RelationshipStatus {
            last_success: Some(7),
            ..RelationshipStatus::default()
        };
        store.put_status(&td("big.example"), &status).unwrap();
        store.next_local_sequence(&td("small.example")).unwrap();
    }

    /// Everything the store holds, as JSON.
    fn dump(store: &Store) -> serde_json::Value {
        let domains = ["big.example", "mid.example", "small.example"];
        serde_json::json!({
            "revision": store.revision().unwrap(),
            "bundles": store.bundles().unwrap(),
            "history": domains.map(|d| store.history(&td(d)).unwrap()),
            "audit": store.audit_log(0, usize::MAX).unwrap(),
            "statuses": store.statuses().unwrap(),
            "relationships": store.relationships().unwrap(),
        })
    }

    fn siblings(db: &Path) -> Vec<String> {
        let dirs = Dirs::new(db).unwrap();
        [dirs.compact, dirs.compacted, dirs.old]
            .iter()
            .filter(|d| d.exists())
            .map(|d| d.display().to_string())
            .collect()
    }

    #[test]
    fn rewrite_keeps_every_record_and_gives_back_space() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let store = open(&db);
        fill(&store);
        let before = dump(&store);
        let disk = store.usage().unwrap();
        assert!(disk.disk_bytes > 2 * disk.live_bytes, "{disk:?}");

        store.compact().unwrap();
        let after = store.usage().unwrap();
        assert_eq!(dump(&store), before);
        assert_eq!(after.compactions, 1);
        assert!(siblings(&db).is_empty(), "{:?}", siblings(&db));
        // The copy holds the live records and sled's fixed files (a log segment).
        assert!(
            after.disk_bytes < after.live_bytes * 3 + (1 << 20),
            "{after:?} (before {disk:?})"
        );
        assert!(after.disk_bytes < disk.disk_bytes, "{after:?} {disk:?}");

        // It keeps working, and reopens with the same records.
        fill(&store);
        let later = dump(&store);
        drop(store);
        let store = reopen(&db);
        assert_eq!(dump(&store), later);
    }

    /// Reopen `db` in this process: sled's threads may hold its lock a moment.
    fn reopen(db: &Path) -> Store {
        wait_released(db).unwrap();
        let mut attempts = 0;
        loop {
            match Store::open_with(db, settings(), Metrics::new()) {
                Ok(store) => return store,
                Err(err) if attempts < 100 => {
                    attempts += 1;
                    eprintln!("reopen attempt {attempts}: {err}");
                    #[expect(clippy::disallowed_methods, reason = "a synchronous test")]
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(err) => panic!("reopen failed: {err}"),
            }
        }
    }

    /// Child half of the crash test; does nothing unless the parent set
    /// [`CRASH_DIR`]. Fills a store, prints its contents, then rewrites it and dies
    /// by `abort` (like `kill -9`: no destructors, no flush) at [`CRASH_AT`].
    #[test]
    fn crash_child() {
        let Some(dir) = std::env::var_os(CRASH_DIR) else {
            return;
        };
        let db = PathBuf::from(dir);
        let store = open(&db);
        fill(&store);
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "DUMP {}", dump(&store)).unwrap();
        stdout.flush().unwrap();
        let _ = store.compact();
        writeln!(stdout, "NOT REACHED").unwrap();
    }

    #[test]
    fn crash_at_any_step_of_a_rewrite_leaves_every_record() {
        for step in STEPS {
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join("db");
            let output = Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "trust::db::compact::tests::crash_child",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CRASH_DIR, &db)
                .env(CRASH_AT, step)
                .output()
                .unwrap();
            let stdout = String::from_utf8(output.stdout).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::process::ExitStatusExt as _;
                assert_eq!(output.status.signal(), Some(6), "{step}: SIGABRT: {stdout}");
            }
            assert!(!stdout.contains("NOT REACHED"), "{step}: {stdout}");
            let expected: serde_json::Value = stdout
                .lines()
                .find_map(|line| line.split_once("DUMP ").map(|(_, d)| d))
                .map(|d| serde_json::from_str(d).unwrap())
                .unwrap_or_else(|| panic!("{step}: no dump in {stdout}"));
            let left: Vec<String> = siblings(&db);
            assert!(
                !left.is_empty() || step == "copying",
                "{step}: the crash left nothing to recover"
            );

            let store = open(&db);
            assert_eq!(
                dump(&store),
                expected,
                "{step}: records differ after recovery"
            );
            assert!(siblings(&db).is_empty(), "{step}: {:?}", siblings(&db));
            // The recovered store takes changes, and rewrites again.
            fill(&store);
            store.compact().unwrap();
            let later = dump(&store);
            drop(store);
            assert_eq!(dump(&reopen(&db)), later, "{step}");
        }
    }

    #[test]
    fn a_database_in_use_is_not_recovered_by_another_opener() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let _store = open(&db);
        let dirs = Dirs::new(&db).unwrap();
        // A rewrite in progress looks like this to a second process.
        fs::create_dir(&dirs.compact).unwrap();
        let _copy_lock = lock(&dirs.compact).unwrap();
        assert!(matches!(
            Store::open_with(&db, settings(), Metrics::new()),
            Err(StoreError::Locked { .. })
        ));
        assert!(dirs.compact.exists(), "left alone");
    }
}
