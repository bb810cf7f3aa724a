//! The layering rules of docs/architecture.md, checked on the source: no import cycle
//! between modules, and no module reaching up a layer.
//!
//! A module is one file under src/. Its imports are the `crate::…` and `super::…` paths
//! in its code (comments and `#[cfg(test)]` modules left out), resolved to the longest
//! module path that exists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn modules(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if path.is_dir() {
            modules(&path, &format!("{prefix}{name}::"), out);
        } else if let Some(stem) = name.strip_suffix(".rs") {
            let module = match stem {
                "mod" => prefix.trim_end_matches("::").to_string(),
                "lib" | "main" if prefix.is_empty() => continue,
                s => format!("{prefix}{s}"),
            };
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            out.insert(module, strip(&text, stem == "mod"));
        }
    }
}

/// The code without comments and without its test module.
fn strip(text: &str, _is_mod: bool) -> String {
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    code.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn imports(module: &str, code: &str, all: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let bytes = code.as_bytes();
    for root in ["crate::", "super::"] {
        let mut at = 0;
        while let Some(i) = code[at..].find(root) {
            let start = at + i;
            at = start + root.len();
            if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
                continue;
            }
            let path: String = code[start..]
                .chars()
                .take_while(|c| {
                    c.is_ascii_alphanumeric()
                        || *c == '_'
                        || *c == ':'
                        || *c == '{'
                        || *c == ' '
                        || *c == ','
                })
                .collect();
            // `use crate::a::{b, c}`: each of b and c is a candidate.
            let (head, group) = match path.split_once('{') {
                Some((h, g)) => (
                    h.to_string(),
                    g.split(',').map(|s| s.trim().to_string()).collect(),
                ),
                None => (
                    path.split([' ', ',']).next().unwrap_or("").to_string(),
                    vec![String::new()],
                ),
            };
            for item in group {
                let full = format!("{head}{item}");
                let mut parts: Vec<&str> = full.split("::").filter(|p| !p.is_empty()).collect();
                let mut base: Vec<String> = Vec::new();
                if parts.first() == Some(&"crate") {
                    parts.remove(0);
                } else {
                    // A file `a/b.rs` is module a::b; `super` is a.
                    base = module.split("::").map(str::to_string).collect();
                    let is_dir_module = all.keys().any(|k| k.starts_with(&format!("{module}::")));
                    if !is_dir_module {
                        base.pop();
                    }
                    while parts.first() == Some(&"super") {
                        parts.remove(0);
                        if parts.first() == Some(&"super") {
                            base.pop();
                        }
                    }
                    if is_dir_module {
                        base.pop();
                    }
                }
                for n in (1..=parts.len()).rev() {
                    let mut candidate = base.clone();
                    candidate.extend(parts[..n].iter().map(|s| s.to_string()));
                    let candidate = candidate.join("::");
                    if all.contains_key(&candidate) {
                        if candidate != module && !module.starts_with(&format!("{candidate}::")) {
                            found.insert(candidate);
                        }
                        break;
                    }
                }
            }
        }
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    graph_of("src")
}

/// The module graph of the crate whose sources are under `dir` (relative to the
/// workspace root).
fn graph_of(dir: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut all = BTreeMap::new();
    modules(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join(dir),
        "",
        &mut all,
    );
    all.iter()
        .map(|(m, code)| (m.clone(), imports(m, code, &all)))
        .collect()
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low[v];
                t.low.insert(v, lv.min(lw));
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low[v];
                t.low.insert(v, lv.min(iw));
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn no_module_imports_form_a_cycle() {
    let g = graph();
    assert!(
        g.len() > 40,
        "found only {} modules: is the walk right?",
        g.len()
    );
    assert!(
        g["dispatch"].contains("handlers"),
        "resolution sanity check"
    );
    assert!(
        g["replica::partition"].contains("log"),
        "resolution sanity check"
    );
    let found = cycles(&g);
    assert!(found.is_empty(), "import cycles between modules: {found:?}");
}

#[test]
fn the_other_crates_have_no_import_cycle_either() {
    for dir in ["crates/protocol/src", "crates/runtime/src", "loadgen/src"] {
        let g = graph_of(dir);
        assert!(g.len() > 3, "found only {} modules in {dir}", g.len());
        let found = cycles(&g);
        assert!(found.is_empty(), "import cycles in {dir}: {found:?}");
    }
}

#[test]
fn the_codec_of_the_on_disk_formats_depends_on_nothing_in_the_crate() {
    let g = graph();
    assert_eq!(g["codec"], BTreeSet::new());
}

/// Layers from the bottom up; a module may use its own layer and those below. A module
/// belongs to the entry that names the longest prefix of its path.
const LAYERS: &[&[&str]] = &[
    &["clock", "codec", "config", "config_file", "metrics"],
    &["io"],
    &["log"],
    &["replica", "metadata"],
    &["error", "group"],
    // Between nodes: peers, the wire, the transport and the raft loop over it.
    &["cluster"],
    // The shard's services: partitions, metadata, the controller, the mesh between shards.
    &[
        "shard::state",
        "shard::controller",
        "shard::router",
        "shard::mesh",
        "shard::controller_client",
        "shard::producer_ids",
        "shard::placement",
        "shard::cluster_view",
        "shard::cluster_state",
    ],
    // What a handler sees of them, and the shape of its answer.
    &["dispatch::context", "dispatch::respond"],
    &["handlers"],
    &["dispatch"],
    &["net"],
    // Starts a node: its shards, listeners and metrics endpoint.
    &["shard::runtime", "shard"],
];

fn layer(module: &str) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (i, names) in LAYERS.iter().enumerate() {
        for name in *names {
            let matches = module == *name || module.starts_with(&format!("{name}::"));
            if matches && best.is_none_or(|(len, _)| name.len() > len) {
                best = Some((name.len(), i));
            }
        }
    }
    best.map(|(_, i)| i)
}

#[test]
fn dependencies_point_down_the_layers() {
    let mut upward = Vec::new();
    for (m, deps) in graph() {
        let Some(lm) = layer(&m) else { continue };
        for d in deps {
            if let Some(ld) = layer(&d) {
                if ld > lm {
                    upward.push(format!("{m} -> {d}"));
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports reaching up a layer: {upward:#?}"
    );
}
