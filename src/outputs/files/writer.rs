//! Writing a files sink's directory: blocking code, run on the blocking pool.
//!
//! Every file is replaced atomically: written to a temporary file in the same
//! directory (`.fedgw-tmp.*`, created with the sink's mode), fsynced, renamed over
//! the target; the directory is fsynced once per change set, after its renames and
//! deletions. A reader therefore sees the old file or the new one, never a part
//! (MAP-7: a bundle map is loaded "atomically").
//!
//! What fedgw wrote is recorded in a manifest, `.fedgw-files.manifest` (one file name
//! per line), so only those files are ever deleted: anything else in the directory is
//! left alone. Names of new files are added to the manifest *before* the files are
//! created, and removed only after the files are deleted, so a crash at any point
//! never leaves a file of ours the manifest does not name. The SHA-256 of each file's
//! content is kept in memory (read back from disk at open), and a file is written only
//! when its content changes. A lock file, `.fedgw-files.lock`, keeps a second writer
//! out of the directory.
//!
//! One file that cannot be written or deleted never holds up the others: the change
//! set goes on, the bundle map and the index are still written, and the file is
//! reported in [`Applied::failed`] (and kept in the manifest, so that it is tried
//! again and never orphaned). Only a fault of the directory itself (its manifest, its
//! fsync) fails the whole change set. A manifest that names a file which cannot exist
//! (a name over `NAME_MAX` written by an older version) is not an error: the name is
//! dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use spiffe_federation::{BundleMap, TrustDomain};

use super::names::{self, DomainFiles, INDEX_FILE, MAP_FILE};
use super::{Applied, FailedFile, FilesError, State};
use crate::digest::sha256_hex;

/// The names of the files fedgw wrote in the directory, one per line.
pub const MANIFEST_FILE: &str = ".fedgw-files.manifest";

const LOCK_FILE: &str = ".fedgw-files.lock";
const TEMP_PREFIX: &str = ".fedgw-tmp.";
const MANIFEST_HEADER: &str =
    "# files written by the fedgw files sink; the rest of the directory is left alone";

/// A sink directory, opened and locked.
pub(super) struct Writer {
    dir: PathBuf,
    mode: u32,
    allow: Option<BTreeSet<TrustDomain>>,
    /// File name → SHA-256 of the content on disk, for every file in the manifest.
    written: BTreeMap<String, String>,
    /// The names the manifest on disk lists.
    manifest: BTreeSet<String>,
    temp_counter: u64,
    _lock: File,
}

impl Writer {
    /// Create `dir` if missing, lock it, remove temporary files left by a crash and
    /// read the manifest (digests are taken from the files on disk, so a file changed
    /// by hand is rewritten at the first [`Writer::apply`]).
    pub(super) fn open(
        dir: PathBuf,
        mode: u32,
        allow: Option<BTreeSet<TrustDomain>>,
    ) -> Result<Self, FilesError> {
        let io = |step: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| FilesError::Io { path, step, source }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(io("create the directory", &dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io("open the lock file", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(FilesError::InUse { dir }),
            Err(TryLockError::Error(source)) => {
                return Err(FilesError::Io {
                    path: lock_path,
                    step: "lock the directory",
                    source,
                });
            }
        }
        for entry in std::fs::read_dir(&dir).map_err(io("list the directory", &dir))? {
            let entry = entry.map_err(io("list the directory", &dir))?;
            if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(io("remove a stale temporary file", &path))?;
            }
        }
        let manifest_path = dir.join(MANIFEST_FILE);
        let manifest: BTreeSet<String> = match std::fs::read_to_string(&manifest_path) {
            Ok(text) => text
                .lines()
                .filter(|line| is_ours(line))
                .map(str::to_owned)
                .collect(),
            Err(err) if err.kind() == io::ErrorKind::NotFound => BTreeSet::new(),
            Err(source) => {
                return Err(FilesError::Io {
                    path: manifest_path,
                    step: "read the manifest",
                    source,
                });
            }
        };
        let mut written = BTreeMap::new();
        let mut manifest = manifest;
        let mut impossible = Vec::new();
        for name in &manifest {
            let path = dir.join(name);
            match std::fs::read(&path) {
                Ok(content) => {
                    written.insert(name.clone(), sha256_hex(&content));
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) if cannot_exist(&err) => impossible.push(name.clone()),
                // Unreadable now: no digest, so it is rewritten (or deleted) by the
                // first change set, where a failure is reported for that file alone.
                Err(err) => tracing::warn!(
                    dir = %dir.display(),
                    file = name.as_str(),
                    error = %err,
                    "files sink: a file of the manifest cannot be read; it is written again"
                ),
            }
        }
        let dropped = !impossible.is_empty();
        for name in impossible {
            tracing::warn!(
                dir = %dir.display(),
                length = name.len(),
                "files sink: the manifest names a file that cannot exist (its name is too long); dropped"
            );
            manifest.remove(&name);
        }
        let mut writer = Self {
            dir,
            mode,
            allow,
            written,
            manifest: manifest.clone(),
            temp_counter: 0,
            _lock: lock,
        };
        if dropped {
            writer.write_manifest(manifest)?;
        }
        Ok(writer)
    }

    /// Make the directory hold exactly the files of `state`; see the module docs.
    pub(super) fn apply(&mut self, state: &State) -> Result<Applied, FilesError> {
        let desired = self.desired(state);
        let wanted: BTreeSet<String> = desired.iter().map(|file| file.name.clone()).collect();
        let mut applied = Applied::default();

        // Name new files in the manifest before they exist.
        if !wanted.is_subset(&self.manifest) {
            let names = self.manifest.union(&wanted).cloned().collect();
            self.write_manifest(names)?;
        }
        for file in &desired {
            let digest = sha256_hex(&file.content);
            if self.written.get(&file.name) == Some(&digest) {
                continue;
            }
            match self.write_atomically(&file.name, &file.content) {
                Ok(()) => {
                    self.written.insert(file.name.clone(), digest);
                    applied.written.push(file.name.clone());
                }
                Err(err) => {
                    // Whatever was on disk is no longer known to be current.
                    self.written.remove(&file.name);
                    applied
                        .failed
                        .push(failed(&file.name, file.trust_domain.as_ref(), &err));
                }
            }
        }
        let stale: Vec<String> = self.manifest.difference(&wanted).cloned().collect();
        let mut kept = BTreeSet::new();
        for name in stale {
            let path = self.dir.join(&name);
            match std::fs::remove_file(&path) {
                Ok(()) => applied.removed.push(name.clone()),
                Err(err) if err.kind() == io::ErrorKind::NotFound || cannot_exist(&err) => {}
                Err(source) => {
                    let err = FilesError::Io {
                        path,
                        step: "delete the file of a removed trust domain",
                        source,
                    };
                    applied.failed.push(failed(&name, None, &err));
                    // Still ours: kept in the manifest and deleted by a later change set.
                    kept.insert(name.clone());
                    continue;
                }
            }
            self.written.remove(&name);
        }
        if !applied.written.is_empty() || !applied.removed.is_empty() {
            self.sync_dir()?;
        }
        let manifest: BTreeSet<String> = wanted.union(&kept).cloned().collect();
        if self.manifest != manifest {
            self.write_manifest(manifest)?;
        }
        Ok(applied)
    }

    /// Every file of `state` with its content: each included domain's PEM and JSON
    /// (under the names of [`names::domain_files`]), then the index of those names,
    /// then the bundle map, last, so that a reader watching the map sees a change
    /// after the per-domain files already hold it.
    fn desired(&self, state: &State) -> Vec<Desired> {
        let mut files = Vec::new();
        let mut map = BundleMap::new();
        let mut index = BTreeMap::new();
        for (td, published) in state {
            if self.allow.as_ref().is_some_and(|allow| !allow.contains(td)) {
                continue;
            }
            map.insert(published.bundle.as_ref().clone());
            let DomainFiles { pem, json } = names::domain_files(td);
            files.push(Desired {
                name: pem.clone(),
                trust_domain: Some(td.clone()),
                content: published.bundle.to_pem().into_bytes(),
            });
            files.push(Desired {
                name: json.clone(),
                trust_domain: Some(td.clone()),
                content: published.json.to_vec(),
            });
            index.insert(td, DomainFiles { pem, json });
        }
        files.push(Desired {
            name: INDEX_FILE.to_owned(),
            trust_domain: None,
            content: names::index(&index),
        });
        files.push(Desired {
            name: MAP_FILE.to_owned(),
            trust_domain: None,
            content: map.to_json(),
        });
        files
    }

    fn write_manifest(&mut self, names: BTreeSet<String>) -> Result<(), FilesError> {
        let mut text = format!("{MANIFEST_HEADER}\n");
        for name in &names {
            text.push_str(name);
            text.push('\n');
        }
        self.write_atomically(MANIFEST_FILE, text.as_bytes())?;
        self.sync_dir()?;
        self.manifest = names;
        Ok(())
    }

    /// Temporary file (created with the sink's mode), write, fsync, rename over `name`.
    fn write_atomically(&mut self, name: &str, content: &[u8]) -> Result<(), FilesError> {
        self.temp_counter += 1;
        let temp = self.dir.join(format!(
            "{TEMP_PREFIX}{}.{}",
            std::process::id(),
            self.temp_counter
        ));
        let target = self.dir.join(name);
        let io = |step: &'static str| {
            let path = target.clone();
            move |source| FilesError::Io { path, step, source }
        };
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(self.mode)
                .open(&temp)
                .map_err(io("create a temporary file"))?;
            // The umask may have cleared bits at creation; the mode is exact.
            file.set_permissions(std::fs::Permissions::from_mode(self.mode))
                .map_err(io("set the file mode"))?;
            file.write_all(content).map_err(io("write"))?;
            file.sync_all().map_err(io("fsync"))?;
            std::fs::rename(&temp, &target).map_err(io("rename into place"))
        })();
        if result.is_err() {
            // Best effort: a leftover is removed at the next open anyway.
            let _ignored = std::fs::remove_file(&temp);
        }
        result
    }

    fn sync_dir(&self) -> Result<(), FilesError> {
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|source| FilesError::Io {
                path: self.dir.clone(),
                step: "fsync the directory",
                source,
            })
    }
}

/// One file a change set wants in the directory.
struct Desired {
    name: String,
    /// The trust domain whose file it is; `None` for the map and the index.
    trust_domain: Option<TrustDomain>,
    content: Vec<u8>,
}

fn failed(name: &str, trust_domain: Option<&TrustDomain>, err: &FilesError) -> FailedFile {
    FailedFile {
        name: name.to_owned(),
        trust_domain: trust_domain.cloned(),
        error: err.to_string(),
    }
}

/// The error of a path that no file can have (`ENAMETOOLONG`).
fn cannot_exist(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::InvalidFilename
}

/// A manifest line that names a file this writer could have written: one plain name
/// ending in `.pem` or `.json`. Anything else (an edited manifest) is never deleted.
fn is_ours(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains('/')
        && (name.ends_with(".pem") || name.ends_with(".json"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
    use spiffe_federation::Bundle;
    use spiffe_federation::bundle::{JwtAuthority, PublicKey, X509Authority};

    use super::*;
    use crate::outputs::files::Published;

    fn td(name: &str) -> TrustDomain {
        name.parse().unwrap()
    }

    fn ca() -> X509Authority {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        X509Authority::from_der(params.self_signed(&key).unwrap().der().to_vec()).unwrap()
    }

    /// A bundle of `name` with one CA, one JWT key and `sequence`.
    fn bundle(name: &str, sequence: u64) -> Bundle {
        let mut bundle = Bundle::new(td(name));
        bundle.add_x509_authority(ca());
        let jwt = JwtAuthority::new("k1", PublicKey::Ed25519 { x: vec![7; 32] }).unwrap();
        bundle.insert_jwt_authority(jwt);
        bundle.set_sequence(Some(sequence));
        bundle.set_refresh_hint(Some(std::time::Duration::from_secs(300)));
        bundle
    }

    fn state(bundles: &[&Bundle]) -> State {
        bundles
            .iter()
            .map(|b| {
                let published = Published {
                    bundle: Arc::new((*b).clone()),
                    json: Bytes::from(b.to_json()),
                };
                (b.trust_domain().clone(), published)
            })
            .collect()
    }

    fn open(dir: &Path, allow: Option<&[&str]>) -> Writer {
        let allow = allow.map(|names| names.iter().map(|n| td(n)).collect());
        Writer::open(dir.to_owned(), 0o644, allow).unwrap()
    }

    fn names(dir: &Path) -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect()
    }

    #[test]
    fn dist_1_dist_6_one_pem_and_one_json_per_domain_and_a_bundle_map() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (bundle("a.example", 3), bundle("b.example", 9));
        let mut writer = open(dir.path(), None);
        writer.apply(&state(&[&a, &b])).unwrap();
        let expected: BTreeSet<String> = [
            "a.example.json",
            "a.example.pem",
            "b.example.json",
            "b.example.pem",
            INDEX_FILE,
            MAP_FILE,
        ]
        .map(str::to_owned)
        .into();
        assert_eq!(names(dir.path()), expected);
        // The JSON file is the document as stored; the PEM holds X.509 authorities only.
        let json = std::fs::read(dir.path().join("a.example.json")).unwrap();
        assert_eq!(json, a.to_json());
        let pem = std::fs::read(dir.path().join("a.example.pem")).unwrap();
        let from_pem = Bundle::from_pem(&td("a.example"), &pem).unwrap();
        assert_eq!(from_pem.x509_authorities(), a.x509_authorities());
        assert!(from_pem.jwt_authorities().is_empty());
        // The map keeps each domain's bundle under its own name.
        let map = BundleMap::parse(&std::fs::read(dir.path().join(MAP_FILE)).unwrap())
            .unwrap()
            .map;
        assert_eq!(map.len(), 2);
        assert_eq!(map.get(&td("b.example")).unwrap().sequence(), Some(9));
        assert!(map.get(&td("a.example")).unwrap().same_authorities(&a));
    }

    #[test]
    fn only_changed_files_are_rewritten_and_the_map_with_any_domain() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (bundle("a.example", 1), bundle("b.example", 1));
        let mut writer = open(dir.path(), None);
        assert_eq!(writer.apply(&state(&[&a, &b])).unwrap().written.len(), 6);
        assert!(writer.apply(&state(&[&a, &b])).unwrap().is_empty());
        let mut b2 = b.clone();
        b2.set_sequence(Some(2));
        let applied = writer.apply(&state(&[&a, &b2])).unwrap();
        // Same authorities: the PEM is unchanged; the JSON and the map are not.
        assert_eq!(applied.written, ["b.example.json", MAP_FILE]);
        assert!(applied.removed.is_empty());
    }

    #[test]
    fn poll_4_dist_4_removed_domain_files_go_and_foreign_files_stay() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("operator.pem"), "mine").unwrap();
        // A file with a name of ours, written by someone else, for a domain we never
        // wrote: not in the manifest, so never deleted.
        std::fs::write(dir.path().join("c.example.pem"), "not fedgw's").unwrap();
        let (a, b) = (bundle("a.example", 1), bundle("b.example", 1));
        let mut writer = open(dir.path(), None);
        writer.apply(&state(&[&a, &b])).unwrap();
        let applied = writer.apply(&state(&[&a])).unwrap();
        assert_eq!(applied.removed, ["b.example.json", "b.example.pem"]);
        assert_eq!(applied.written, [INDEX_FILE, MAP_FILE]);
        assert!(!dir.path().join("b.example.pem").exists());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("operator.pem")).unwrap(),
            "mine"
        );
        assert!(dir.path().join("c.example.pem").exists());
        let map = BundleMap::parse(&std::fs::read(dir.path().join(MAP_FILE)).unwrap())
            .unwrap()
            .map;
        assert!(
            map.get(&td("b.example")).is_none(),
            "an absent domain is removed"
        );
    }

    #[test]
    fn map_8_allow_list_limits_files_and_map() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (bundle("a.example", 1), bundle("b.example", 1));
        let mut writer = open(dir.path(), Some(&["b.example", "z.example"]));
        writer.apply(&state(&[&a, &b])).unwrap();
        let expected: BTreeSet<String> = ["b.example.json", "b.example.pem", INDEX_FILE, MAP_FILE]
            .map(str::to_owned)
            .into();
        assert_eq!(names(dir.path()), expected);
        let map = BundleMap::parse(&std::fs::read(dir.path().join(MAP_FILE)).unwrap())
            .unwrap()
            .map;
        assert_eq!(
            map.iter().map(|(td, _)| td.as_str()).collect::<Vec<_>>(),
            ["b.example"]
        );
    }

    #[test]
    fn reopening_converges_from_the_manifest_and_clears_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (bundle("a.example", 1), bundle("b.example", 1));
        {
            let mut writer = open(dir.path(), None);
            writer.apply(&state(&[&a, &b])).unwrap();
        }
        std::fs::write(dir.path().join(".fedgw-tmp.1.1"), "left by a crash").unwrap();
        std::fs::write(dir.path().join("a.example.pem"), "edited by hand").unwrap();
        let mut writer = open(dir.path(), None);
        assert!(!dir.path().join(".fedgw-tmp.1.1").exists());
        // b.example went while the writer was away; a.example.pem was edited.
        let applied = writer.apply(&state(&[&a])).unwrap();
        assert_eq!(applied.written, ["a.example.pem", INDEX_FILE, MAP_FILE]);
        assert_eq!(applied.removed, ["b.example.json", "b.example.pem"]);
        let manifest = std::fs::read_to_string(dir.path().join(MANIFEST_FILE)).unwrap();
        assert!(manifest.contains("a.example.json\n") && !manifest.contains("b.example"));
    }

    #[test]
    fn a_second_writer_is_refused_and_the_mode_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = Writer::open(dir.path().to_owned(), 0o640, None).unwrap();
        assert!(matches!(
            Writer::open(dir.path().to_owned(), 0o644, None),
            Err(FilesError::InUse { .. })
        ));
        writer.apply(&state(&[&bundle("a.example", 1)])).unwrap();
        for name in ["a.example.pem", "a.example.json", MAP_FILE] {
            let mode = std::fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o640, "{name}");
        }
    }

    /// A 255-byte trust domain (legal, but `<td>.json` is over NAME_MAX) is written
    /// under its encoded name, listed in the index, and deleted cleanly; the other
    /// domains are written meanwhile.
    #[test]
    fn a_name_too_long_for_a_file_is_written_under_its_encoded_name() {
        let dir = tempfile::tempdir().unwrap();
        let long_name = format!("{}.example", "l".repeat(247));
        let (long, a) = (bundle(&long_name, 1), bundle("a.example", 1));
        let files = names::domain_files(&td(&long_name));
        let mut writer = open(dir.path(), None);
        let applied = writer.apply(&state(&[&long, &a])).unwrap();
        assert!(applied.failed.is_empty(), "{:?}", applied.failed);
        assert!(applied.written.contains(&files.json), "{applied:?}");
        let json = std::fs::read(dir.path().join(&files.json)).unwrap();
        assert_eq!(json, long.to_json());
        assert!(dir.path().join(&files.pem).exists());
        assert!(dir.path().join("a.example.json").exists());
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(INDEX_FILE)).unwrap()).unwrap();
        assert_eq!(
            index["trust_domains"][long_name.as_str()]["json"],
            files.json
        );
        assert_eq!(index["trust_domains"]["a.example"]["pem"], "a.example.pem");
        let map = BundleMap::parse(&std::fs::read(dir.path().join(MAP_FILE)).unwrap())
            .unwrap()
            .map;
        assert_eq!(map.len(), 2);

        let applied = writer.apply(&state(&[&a])).unwrap();
        assert!(applied.failed.is_empty(), "{:?}", applied.failed);
        assert_eq!(applied.removed, [files.json.clone(), files.pem.clone()]);
        assert!(!dir.path().join(&files.json).exists());
        // And a writer opened again (a restart) finds nothing to do.
        drop(writer);
        let mut writer = open(dir.path(), None);
        assert!(writer.apply(&state(&[&a])).unwrap().is_empty());
    }

    /// One file that cannot be written (a directory sits where it goes) is reported
    /// with its trust domain; every other file, the index and the map are written,
    /// and the next change set tries it again.
    #[test]
    fn one_unwritable_file_never_holds_up_the_others() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("b.example.json")).unwrap();
        std::fs::write(dir.path().join("b.example.json/x"), "keeps the rename out").unwrap();
        let (a, b, c) = (
            bundle("a.example", 1),
            bundle("b.example", 1),
            bundle("c.example", 1),
        );
        let mut writer = open(dir.path(), None);
        let applied = writer.apply(&state(&[&a, &b, &c])).unwrap();
        assert_eq!(applied.failed.len(), 1, "{:?}", applied.failed);
        let failed = &applied.failed[0];
        assert_eq!(failed.name, "b.example.json");
        assert_eq!(failed.trust_domain, Some(td("b.example")));
        assert!(failed.error.contains("b.example.json"), "{}", failed.error);
        for name in [
            "a.example.json",
            "b.example.pem",
            "c.example.json",
            INDEX_FILE,
            MAP_FILE,
        ] {
            assert!(
                applied.written.contains(&name.to_owned()),
                "{name}: {applied:?}"
            );
        }
        assert_eq!(
            BundleMap::parse(&std::fs::read(dir.path().join(MAP_FILE)).unwrap())
                .unwrap()
                .map
                .len(),
            3
        );
        // Still failing, still alone; once the obstacle goes, it is written.
        assert_eq!(writer.apply(&state(&[&a, &b, &c])).unwrap().failed.len(), 1);
        std::fs::remove_dir_all(dir.path().join("b.example.json")).unwrap();
        let applied = writer.apply(&state(&[&a, &b, &c])).unwrap();
        assert!(applied.failed.is_empty());
        assert_eq!(applied.written, ["b.example.json"]);
    }

    /// A manifest written by an older version can name a file over NAME_MAX (it tried
    /// `<td>.json` for a 255-byte domain). Opening the directory does not fail on it,
    /// and the name is dropped from the manifest.
    #[test]
    fn a_manifest_naming_a_file_that_cannot_exist_does_not_prevent_opening() {
        let dir = tempfile::tempdir().unwrap();
        let long = format!("{}.example.json", "l".repeat(247));
        std::fs::write(
            dir.path().join(MANIFEST_FILE),
            format!("{MANIFEST_HEADER}\n{long}\na.example.pem\n"),
        )
        .unwrap();
        let mut writer = open(dir.path(), None);
        let applied = writer.apply(&state(&[&bundle("a.example", 1)])).unwrap();
        assert!(applied.failed.is_empty(), "{:?}", applied.failed);
        let manifest = std::fs::read_to_string(dir.path().join(MANIFEST_FILE)).unwrap();
        assert!(!manifest.contains(&long), "{manifest}");
        assert!(manifest.contains("a.example.pem\n"), "{manifest}");
    }

    #[test]
    fn an_empty_state_writes_an_empty_world_map() {
        let dir = tempfile::tempdir().unwrap();
        open(dir.path(), None).apply(&State::new()).unwrap();
        let map = std::fs::read(dir.path().join(MAP_FILE)).unwrap();
        assert_eq!(map, br#"{"trust_domains":{}}"#);
    }
}
