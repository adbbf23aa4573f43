//! The shape of `src/`: the top level shows the data flow, and no module imports from
//! a sibling that imports it back (directly or around a longer circle).
//!
//! Reads the source tree as text: every `crate::…`, `super::…` and `self::…` path
//! outside comments is resolved to the module it names, and each reference is
//! counted as an edge between the two siblings under their nearest common parent.
//! Test modules count too (a circle through a test is still a circle).

#![allow(clippy::unwrap_used, reason = "test code")]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// One reference: from which module, to which module path, and where.
struct Reference {
    from: Vec<String>,
    to: Vec<String>,
    at: String,
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every library source file with its module path (`src/a/b.rs` → `[a, b]`).
fn modules(dir: &Path, prefix: &[String], out: &mut Vec<(PathBuf, Vec<String>)>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if path.is_dir() {
            let mut next = prefix.to_vec();
            next.push(name);
            modules(&path, &next, out);
        } else if let Some(stem) = name.strip_suffix(".rs") {
            if prefix.is_empty() && stem == "main" {
                continue; // the binary: a separate crate that uses the library by name
            }
            let mut module = prefix.to_vec();
            if !(prefix.is_empty() && stem == "lib") {
                module.push(stem.to_owned());
            }
            out.push((path, module));
        }
    }
}

/// The text of a line without its comment (`//…`), keeping string literals.
fn code(line: &str) -> &str {
    let trimmed = line.trim_start();
    if trimmed.starts_with("//") {
        return "";
    }
    let mut in_string = false;
    let bytes = line.as_bytes();
    for i in 0..bytes.len() {
        match bytes[i] {
            b'"' if i == 0 || bytes[i - 1] != b'\\' => in_string = !in_string,
            b'/' if !in_string && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
    }
    line
}

/// The paths starting at `crate::`, `super::` or `self::` in one line of code,
/// resolved against the module the file defines (`here`).
fn paths(line: &str, here: &[String]) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !line.is_char_boundary(i) {
            i += 1;
            continue;
        }
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let rest = &line[i..];
        let root = ["crate::", "super::", "self::"]
            .into_iter()
            .find(|r| starts_word && rest.starts_with(r));
        let Some(root) = root else {
            i += 1;
            continue;
        };
        let mut resolved: Vec<String> = match root {
            "crate::" => Vec::new(),
            "self::" => here.to_vec(),
            _ => here[..here.len().saturating_sub(1)].to_vec(),
        };
        let mut j = i + root.len();
        // Further `super::` hops.
        while line[j..].starts_with("super::") {
            resolved.pop();
            j += "super::".len();
        }
        loop {
            let segment: String = line[j..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if segment.is_empty() {
                break;
            }
            j += segment.len();
            resolved.push(segment);
            if line[j..].starts_with("::") {
                j += 2;
            } else {
                break;
            }
        }
        found.push(resolved);
        i = j.max(i + 1);
    }
    found
}

fn references() -> (BTreeSet<Vec<String>>, Vec<Reference>) {
    let mut files = Vec::new();
    modules(&src(), &[], &mut files);
    let known: BTreeSet<Vec<String>> = files.iter().map(|(_, m)| m.clone()).collect();
    let mut refs = Vec::new();
    for (path, module) in &files {
        let text = fs::read_to_string(path).unwrap();
        for (n, line) in text.lines().enumerate() {
            for target in paths(code(line), module) {
                // The longest prefix that is a module file.
                let to = (0..=target.len())
                    .rev()
                    .map(|k| target[..k].to_vec())
                    .find(|p| known.contains(p))
                    .unwrap_or_default();
                refs.push(Reference {
                    from: module.clone(),
                    to,
                    at: format!("{}:{}", path.strip_prefix(src()).unwrap().display(), n + 1),
                });
            }
        }
    }
    (known, refs)
}

/// Sibling edges per parent module: parent → (child a → child b → example places).
type Edges = BTreeMap<Vec<String>, BTreeMap<String, BTreeMap<String, Vec<String>>>>;

fn sibling_edges(refs: &[Reference]) -> Edges {
    let mut edges = Edges::new();
    for r in refs {
        let common = r.from.iter().zip(&r.to).take_while(|(a, b)| a == b).count();
        // A reference to an ancestor or a descendant is not between siblings.
        if common == r.from.len() || common == r.to.len() {
            continue;
        }
        let parent = r.from[..common].to_vec();
        edges
            .entry(parent)
            .or_default()
            .entry(r.from[common].clone())
            .or_default()
            .entry(r.to[common].clone())
            .or_default()
            .push(r.at.clone());
    }
    edges
}

/// A circle in one parent's sibling graph, if any, as the list of modules on it.
fn circle(graph: &BTreeMap<String, BTreeMap<String, Vec<String>>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeMap<String, Vec<String>>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), 1);
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flat_map(|m| m.keys()) {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = stack.iter().position(|n| n == next).unwrap();
                    let mut found = stack[start..].to_vec();
                    found.push(next.clone());
                    return Some(found);
                }
                0 => {
                    if let Some(found) = visit(next, graph, state, stack) {
                        return Some(found);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(found) = visit(node, graph, &mut state, &mut stack) {
                return Some(found);
            }
        }
    }
    None
}

#[test]
fn no_module_imports_from_a_sibling_that_imports_it_back() {
    let (_, refs) = references();
    assert!(
        refs.len() > 300,
        "the scan found only {} references",
        refs.len()
    );
    let mut failures = Vec::new();
    for (parent, graph) in sibling_edges(&refs) {
        if let Some(found) = circle(&graph) {
            let parent = if parent.is_empty() {
                "crate".to_owned()
            } else {
                format!("crate::{}", parent.join("::"))
            };
            let mut report = format!("under {parent}: {}", found.join(" → "));
            for pair in found.windows(2) {
                let places = &graph[&pair[0]][&pair[1]];
                report.push_str(&format!(
                    "\n    {} → {}: {}",
                    pair[0],
                    pair[1],
                    places
                        .iter()
                        .take(3)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            failures.push(report);
        }
    }
    assert!(
        failures.is_empty(),
        "import circles:\n{}",
        failures.join("\n")
    );
}

#[test]
fn the_top_level_shows_the_flow() {
    let (known, _) = references();
    let top: BTreeSet<&str> = known
        .iter()
        .filter(|m| m.len() == 1)
        .map(|m| m[0].as_str())
        .collect();
    for wanted in [
        "sources",
        "trust",
        "outputs",
        "admin",
        "registry",
        "client",
        "net",
        "telemetry",
        "config",
        "app",
    ] {
        assert!(
            top.contains(wanted),
            "src/ has no `{wanted}` module: {top:?}"
        );
    }
}

#[test]
fn the_checker_finds_a_planted_circle() {
    // The checker itself: two siblings that name each other are a circle, a parent
    // and its child are not.
    let here = |m: &str| m.split("::").map(str::to_owned).collect::<Vec<_>>();
    let refs = [
        Reference {
            from: here("a::x"),
            to: here("a::y"),
            at: "a/x.rs:1".into(),
        },
        Reference {
            from: here("a::y"),
            to: here("a::x"),
            at: "a/y.rs:1".into(),
        },
        Reference {
            from: here("b"),
            to: here("b::c"),
            at: "b.rs:1".into(),
        },
        Reference {
            from: here("b::c"),
            to: here("b"),
            at: "b/c.rs:1".into(),
        },
    ];
    let edges = sibling_edges(&refs);
    assert_eq!(
        circle(&edges[&here("a")]),
        Some(vec!["x".into(), "y".into(), "x".into()])
    );
    assert!(!edges.contains_key(&here("b")) && !edges.contains_key(&Vec::new()));
    assert_eq!(
        paths(
            code("use super::super::q::R; // crate::ignored"),
            &here("a::b::c")
        ),
        vec![here("a::q::R")]
    );
    assert_eq!(
        paths(code("let x = crate::m::f(); // crate::n"), &here("a")),
        vec![here("m::f")]
    );
}

#[test]
fn the_architecture_table_names_every_source_file_and_no_other() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let table: String = doc
        .split("## The parts")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .unwrap()
        .lines()
        .filter(|line| line.starts_with('|'))
        .collect::<Vec<_>>()
        .join("\n");
    // Every `src/….rs` (and `src/main.rs`) in backticks in the table's rows.
    let named: BTreeSet<String> = table
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with("src/") && s.ends_with(".rs"))
        .map(str::to_owned)
        .collect();
    let mut files = Vec::new();
    modules(&src(), &[], &mut files);
    let mut on_disk: BTreeSet<String> = files
        .iter()
        .map(|(path, _)| format!("src/{}", path.strip_prefix(src()).unwrap().display()))
        .collect();
    on_disk.insert("src/main.rs".to_owned());
    let missing: Vec<_> = on_disk.difference(&named).collect();
    let stale: Vec<_> = named.difference(&on_disk).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/architecture.md \"The parts\" table is out of step with src/:\n  not in the table: {missing:?}\n  in the table but not in src/: {stale:?}"
    );
}
