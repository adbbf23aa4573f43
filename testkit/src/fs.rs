//! Replacing a file atomically, as an operator's tooling (and the gateway's file
//! watchers) expect: a temporary file in the same directory, flushed, then a rename, so
//! a reader never sees a partial file.
//!
//! Owns only that. Does not own what the file holds (bundles, certificates, Envoy
//! secrets: the tests and harnesses that write them).

use std::fs::File;
use std::io::Write as _;
use std::path::Path;

/// Write `contents` to `path` atomically.
pub fn write_atomically(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("tmp-e2e");
    let mut file = File::create(&tmp).unwrap();
    file.write_all(contents).unwrap();
    file.sync_all().unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
