//! The core's shape, checked as a newcomer would read it
//! (docs/architecture.md): its layers import downwards only, no two of its
//! modules import each other in a circle, no function is longer than 80
//! lines, and it depends on nothing of the operator surface.
//!
//! `cargo test --test integration layers -- --nocapture` prints the import
//! graph it checked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The core's top-level modules, lowest layer first. A module may import
/// from its own layer's file only if it is itself (inside a folder), and
/// from lower layers freely; modules on the same layer do not import each
/// other.
const LAYERS: &[&[&str]] = &[
    &["bindings", "words"],
    &["report", "error", "limits"],
    &["events", "history"],
    &["guest"],
    &["store"],
    &["command", "repo", "bus"],
    &["instance"],
    &["txn"],
    &["proxy"],
    &["upgrade"],
    &["runtime"],
    &["lattice"],
    &["lib"],
];

fn core_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("core/src is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of core/src belongs to.
fn module_of(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).expect("under core/src");
    let first = rel.components().next().expect("a component");
    let name = first.as_os_str().to_string_lossy();
    name.trim_end_matches(".rs").to_string()
}

/// Top-level modules named by `crate::X` paths in `text` (comments left
/// out).
fn imports(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| panic!("core module `{module}` is in no layer of tests/it/layers.rs"))
}

/// Module → the modules it imports, over every file of core/src.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = core_src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let module = module_of(&root, &f);
        let text = std::fs::read_to_string(&f).expect("readable source");
        let entry = graph.entry(module.clone()).or_default();
        for i in imports(&text) {
            if i != module {
                entry.insert(i);
            }
        }
    }
    graph
}

#[test]
fn the_core_imports_downwards_only_and_has_no_circle() {
    let graph = import_graph();
    let mut wrong = Vec::new();
    for (module, deps) in &graph {
        println!(
            "{module} -> {}",
            deps.iter().cloned().collect::<Vec<_>>().join(", ")
        );
        for d in deps {
            if module != "lib" && layer_of(d) >= layer_of(module) {
                wrong.push(format!(
                    "{module} (layer {}) imports {d} (layer {})",
                    layer_of(module),
                    layer_of(d)
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
    // Downwards only means no circle; check it outright too, so that a
    // change of the layer table cannot hide one.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(i) = path.iter().position(|p| p == m) {
            panic!("import circle: {} -> {m}", path[i..].join(" -> "));
        }
        if !done.insert(m.to_string()) {
            return;
        }
        path.push(m.to_string());
        for d in graph.get(m).into_iter().flatten() {
            visit(d, graph, path, done);
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn no_function_of_the_core_is_longer_than_80_lines() {
    let root = core_src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut long = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("readable source");
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            let is_fn = (t.starts_with("fn ")
                || t.starts_with("pub fn ")
                || t.starts_with("pub(crate) fn ")
                || t.starts_with("pub(super) fn "))
                && !t.ends_with(';');
            if !is_fn {
                continue;
            }
            let indent = line.len() - t.len();
            let close = format!("{}}}", " ".repeat(indent));
            let end = lines[i..]
                .iter()
                .position(|l| *l == close)
                .map(|n| i + n)
                .unwrap_or(i);
            let n = end - i + 1;
            if n > 80 {
                let name: String = t.split('(').next().unwrap_or(t).to_string();
                long.push(format!("{}:{} `{name}`: {n} lines", f.display(), i + 1));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over 80 lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_core_depends_on_nothing_of_the_operator_surface() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        // `no-proc-macro`: what is compiled into the core, not what
        // wasmtime's `bindgen!` macro uses while it expands (wit-parser
        // reads the WIT with serde_json there, at compile time only).
        .args(["tree", "--offline", "-p", "liveswap-core"])
        .args(["-e", "normal,no-proc-macro"])
        // The NATS client of the lattice speaks NATS' JSON (the server's
        // INFO, the client's CONNECT) with serde_json: the protocol, not
        // the operator surface. Its own tree is left out; the core's
        // code still may not use serde_json (it is not a dependency of
        // the core's own).
        .args(["--prune", "async-nats"])
        .args(["--prefix", "none", "--format", "{p}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo tree");
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && tree.contains("wasmtime"),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: BTreeSet<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for banned in ["plotters", "clap", "serde_json", "rustyline"] {
        assert!(
            !names.contains(banned),
            "liveswap-core depends on {banned}:\n{tree}"
        );
    }
}
