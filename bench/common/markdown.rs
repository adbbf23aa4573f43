//! Writing a benchmark's table into a Markdown file (`--markdown FILE`): it replaces
//! the section between the `<!-- <name>:start -->` and `<!-- <name>:end -->` markers.
//!
//! Included by `bench/scale.rs`, `bench/replicas.rs` and `bench/disk.rs` (`#[path]`
//! modules: the benchmarks are single-file examples).

use std::path::Path;

use anyhow::Context as _;

/// Replace the section `name` of the Markdown file at `path` with `text`.
pub(crate) fn replace_section(path: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    let doc = std::fs::read_to_string(path)?;
    let (start, end) = (
        format!("<!-- {name}:start -->"),
        format!("<!-- {name}:end -->"),
    );
    let i = doc
        .find(&start)
        .with_context(|| format!("{start} in {}", path.display()))?;
    let j = doc
        .find(&end)
        .with_context(|| format!("{end} in {}", path.display()))?;
    let updated = format!(
        "{}\n{}\n{}",
        &doc[..i + start.len()],
        text.trim_end(),
        &doc[j..]
    );
    std::fs::write(path, updated)?;
    Ok(())
}
