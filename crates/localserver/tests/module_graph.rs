//! Ownership runs one way: in no crate of the workspace do two modules import each other
//! (`crate::a` in `b` and `crate::b` in `a`, outside comments and test modules).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level module each file belongs to, and the top-level modules it names via `crate::`.
fn imports(src_dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = vec![src_dir.to_owned()];
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if p.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let rel = p.strip_prefix(src_dir).unwrap();
        let top = rel
            .iter()
            .next()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if top == "lib" || top == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let names = out.entry(top.clone()).or_default();
        for line in code
            .lines()
            .map(str::trim_start)
            .filter(|l| !l.starts_with("//"))
        {
            for part in line.split("crate::").skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                // `crate::{a, b}` names several.
                if name.is_empty() && part.starts_with('{') {
                    let inner = part[1..].split('}').next().unwrap_or("");
                    for n in inner.split(',') {
                        let n: String = n
                            .trim()
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        if !n.is_empty() && n != top {
                            names.insert(n);
                        }
                    }
                } else if !name.is_empty() && name != top {
                    names.insert(name);
                }
            }
        }
    }
    out
}

#[test]
fn no_two_modules_import_each_other() {
    let crates = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cycles = Vec::new();
    let mut seen = 0;
    for entry in std::fs::read_dir(&crates).unwrap() {
        let src = entry.unwrap().path().join("src");
        if !src.is_dir() {
            continue;
        }
        seen += 1;
        let graph = imports(&src);
        for (a, deps) in &graph {
            for b in deps {
                if a < b && graph.get(b).is_some_and(|d| d.contains(a)) {
                    cycles.push(format!("{}: {a} <-> {b}", src.display()));
                }
            }
        }
    }
    assert!(
        seen >= 6,
        "found only {seen} crates under {}",
        crates.display()
    );
    assert!(
        cycles.is_empty(),
        "modules importing each other:\n{}",
        cycles.join("\n")
    );
}
