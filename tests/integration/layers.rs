//! The layer order stated in `src/lib.rs`'s module doc is the one the code follows: no module
//! uses a module of a higher layer, and there is no import cycle. The doc is parsed, so it
//! cannot drift from what this test enforces.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `//! N. \`a\`, \`b\`: …` lines (and their continuation lines) of lib.rs: module → layer.
fn stated_layers(lib: &str) -> BTreeMap<String, usize> {
    let mut layers = BTreeMap::new();
    let mut current = None;
    for line in lib.lines() {
        let Some(doc) = line.strip_prefix("//!") else {
            continue;
        };
        let doc = doc.trim_start();
        let numbered = doc
            .split_once(". ")
            .and_then(|(n, _)| n.parse::<usize>().ok());
        if let Some(n) = numbered {
            current = Some(n);
        } else if !line.starts_with("//!    ") {
            current = None;
        }
        let Some(n) = current else { continue };
        // Only the names before the first colon are the layer's modules.
        let head = if numbered.is_some() {
            doc.split_once(": ").map(|(h, _)| h).unwrap_or(doc)
        } else {
            continue;
        };
        for name in head.split('`').skip(1).step_by(2) {
            layers.insert(name.to_string(), n);
        }
    }
    layers
}

/// The top-level modules each module's non-test code names as `crate::x`.
fn uses(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = Vec::new();
    crate::common::walk(src, &mut files);
    for f in files {
        let rel = f.strip_prefix(src).unwrap();
        if rel.extension().is_none_or(|e| e != "rs")
            || rel == Path::new("main.rs")
            || rel == Path::new("lib.rs")
        {
            continue;
        }
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        let text = std::fs::read_to_string(&f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        for line in code.lines() {
            let line = line.trim_start();
            if line.starts_with("//") {
                continue;
            }
            let mut rest = line;
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if name != module && name != "Result" && name != "Error" && !name.is_empty() {
                    deps.entry(module.clone()).or_default().insert(name);
                }
            }
            // `use crate::{a, b::c}` groups.
            if let Some(g) = line.strip_prefix("use crate::{") {
                for part in g.split(',') {
                    let name: String = part
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if name != module && name != "Result" && name != "Error" && !name.is_empty() {
                        deps.entry(module.clone()).or_default().insert(name);
                    }
                }
            }
        }
    }
    deps
}

#[test]
fn modules_use_only_their_own_layer_or_below_and_form_no_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    let layers = stated_layers(&lib);
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';').to_string())
        .collect();
    let placed: BTreeSet<String> = layers.keys().cloned().collect();
    assert_eq!(
        declared, placed,
        "every module of lib.rs has a stated layer"
    );

    let deps = uses(&root.join("src"));
    let mut upward = Vec::new();
    for (m, ds) in &deps {
        for d in ds {
            let (Some(lm), Some(ld)) = (layers.get(m), layers.get(d)) else {
                continue;
            };
            if ld > lm {
                upward.push(format!("{m} (layer {lm}) uses {d} (layer {ld})"));
            }
        }
    }
    assert!(upward.is_empty(), "upward imports: {upward:#?}");

    // No cycle, even within a layer: depth-first search with an explicit path.
    fn visit(
        m: &str,
        deps: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(i) = path.iter().position(|p| p == m) {
            panic!("import cycle: {} -> {m}", path[i..].join(" -> "));
        }
        path.push(m.to_string());
        for d in deps.get(m).into_iter().flatten() {
            visit(d, deps, path, done);
        }
        path.pop();
        done.insert(m.to_string());
    }
    let mut done = BTreeSet::new();
    for m in deps.keys() {
        visit(m, &deps, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_layer_parser_reads_the_stated_order() {
    let doc = "//! 1. `a`, `b`: base\n//!    more `c` text\n//! 2. `d`: top `e`\n//! other\n";
    let l = stated_layers(doc);
    assert_eq!(l.get("a"), Some(&1));
    assert_eq!(l.get("b"), Some(&1));
    assert_eq!(l.get("d"), Some(&2));
    assert_eq!(l.get("c"), None, "continuation lines are prose");
    assert_eq!(l.get("e"), None, "names after the colon are prose");
}
