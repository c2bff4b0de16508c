//! `liveswap new` and `liveswap build`: a guest project that builds as it
//! is, in Rust or Python, and its build into a component.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, bail};

/// The WIT of `liveswap:module@0.1.0`, as the SDKs ship it.
const WIT: &str = include_str!("../../wit/module.wit");
const RUST_SDK_LIB: &str = include_str!("../../guest-sdk/rust/src/lib.rs");
const RUST_SDK_STATE: &str = include_str!("../../guest-sdk/rust/src/state.rs");
const RUST_SDK_BATCH: &str = include_str!("../../guest-sdk/rust/src/batch.rs");
const RUST_TEMPLATE: &str = include_str!("../../guest-modules/counter-v1/src/lib.rs");
const PY_SDK: &str = include_str!("../../guest-sdk/python/liveswap_guest.py");
const PY_TEMPLATE: &str = include_str!("../../guest-sdk/python/template/app.py");
const PY_TEMPLATE_TEST: &str = include_str!("../../guest-sdk/python/template/test_app.py");
const JS_SDK: &str = include_str!("../../guest-sdk/js/liveswap-guest.js");
const JS_APP: &str = include_str!("../../guest-sdk/js/template/app.js");
const JS_COUNTER: &str = include_str!("../../guest-sdk/js/template/counter.js");
const JS_TEST: &str = include_str!("../../guest-sdk/js/template/counter.test.js");
const JS_PACKAGE: &str = include_str!("../../guest-sdk/js/template/package.json");

/// The componentize-py release the Python SDK is built and tested with.
pub const COMPONENTIZE_PY: &str = "0.25.1";
/// The componentize-js release the JavaScript SDK is built and tested with.
pub const COMPONENTIZE_JS: &str = "0.23.0";
const TARGET: &str = "wasm32-wasip2";

/// A guest's language.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// A Rust crate on the liveswap-guest SDK, built with cargo.
    Rust,
    /// A Python module on the liveswap_guest helper, built with
    /// componentize-py.
    Python,
    /// A JavaScript module on the liveswap-guest.js helper, built with
    /// componentize-js.
    Js,
}

/// Write a new guest project `dir` (its last component is the name).
pub fn new(dir: &Path, lang: Lang) -> anyhow::Result<ExitCode> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("the project needs a name, e.g. `liveswap new counter`")?;
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        bail!(
            "`{name}` cannot name a module project: use letters, digits, - and _, starting with a letter"
        );
    }
    if dir.exists() {
        bail!("{} already exists: nothing was written", dir.display());
    }
    let files = match lang {
        Lang::Rust => rust_files(name),
        Lang::Python => python_files(),
        Lang::Js => js_files(name),
    };
    for (path, text) in &files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("a file in the project"))
            .with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "made {} ({lang:?} guest, {} files): cd {} && liveswap build",
        dir.display(),
        files.len(),
        dir.display()
    );
    match lang {
        Lang::Rust => {}
        Lang::Python => println!("  its handlers run without a host too: python3 -m unittest"),
        Lang::Js => println!(
            "  npm install (componentize-js {COMPONENTIZE_JS}) first; its handlers run without a host too: node --test"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn rust_files(name: &str) -> Vec<(&'static str, String)> {
    let manifest = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

# A component: `liveswap build`, or `cargo build --release` (the target
# is set in .cargo/config.toml), makes target/wasm32-wasip2/release/{file}.wasm.
[lib]
crate-type = ["cdylib"]

[dependencies]
liveswap-guest = {{ path = "vendor/liveswap-guest" }}
serde = {{ version = "1", features = ["derive"] }}

[profile.release]
opt-level = "s"
strip = "debuginfo"

# A project of its own, not a member of an enclosing workspace.
[workspace]
"#,
        file = name.replace('-', "_")
    );
    let sdk_manifest = r#"[package]
name = "liveswap-guest"
description = "Write liveswap modules in Rust (liveswap:module@0.1.0)."
version = "0.1.0"
edition = "2024"

[dependencies]
wit-bindgen = "0.61"
serde = { version = "1", features = ["derive"] }
ciborium = "0.2"
"#;
    vec![
        ("Cargo.toml", manifest),
        (
            ".cargo/config.toml",
            format!("[build]\ntarget = \"{TARGET}\"\n"),
        ),
        (".gitignore", "/target\n".into()),
        ("src/lib.rs", RUST_TEMPLATE.into()),
        ("vendor/liveswap-guest/Cargo.toml", sdk_manifest.into()),
        ("vendor/liveswap-guest/src/lib.rs", RUST_SDK_LIB.into()),
        ("vendor/liveswap-guest/src/state.rs", RUST_SDK_STATE.into()),
        ("vendor/liveswap-guest/src/batch.rs", RUST_SDK_BATCH.into()),
        ("vendor/liveswap-guest/wit/module.wit", WIT.into()),
    ]
}

fn python_files() -> Vec<(&'static str, String)> {
    vec![
        ("app.py", PY_TEMPLATE.into()),
        ("test_app.py", PY_TEMPLATE_TEST.into()),
        ("liveswap_guest.py", PY_SDK.into()),
        ("wit/module.wit", WIT.into()),
        (".gitignore", "/*.wasm\n__pycache__/\n".into()),
    ]
}

fn js_files(name: &str) -> Vec<(&'static str, String)> {
    vec![
        ("app.js", JS_APP.into()),
        ("counter.js", JS_COUNTER.into()),
        ("counter.test.js", JS_TEST.into()),
        ("liveswap-guest.js", JS_SDK.into()),
        (
            "package.json",
            JS_PACKAGE.replace("\"name\": \"NAME\"", &format!("\"name\": \"{name}\"")),
        ),
        ("wit/module.wit", WIT.into()),
        (".gitignore", "/*.wasm\nnode_modules/\n".into()),
    ]
}

/// Build the guest project in `dir` into a component; print where it went.
pub fn build(dir: &Path) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let (lang, wasm) = if dir.join("Cargo.toml").exists() {
        (Lang::Rust, build_rust(dir)?)
    } else if dir.join("app.py").exists() {
        (Lang::Python, build_python(dir)?)
    } else if dir.join("app.js").exists() {
        (Lang::Js, build_js(dir)?)
    } else {
        bail!(
            "{} holds no guest project (no Cargo.toml, app.py or app.js): make one with `liveswap new NAME --lang rust|python|js`",
            dir.display()
        );
    };
    let size = std::fs::metadata(&wasm)
        .with_context(|| format!("the build made no {}", wasm.display()))?
        .len();
    let shown = wasm.canonicalize().unwrap_or(wasm);
    println!(
        "built {} ({lang:?}, {}, {:.1} s): Load NAME {}",
        shown.display(),
        liveswap_ops::text::bytes(size as usize),
        started.elapsed().as_secs_f64(),
        shown.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn build_rust(dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml"))
        .with_context(|| format!("reading {}", dir.join("Cargo.toml").display()))?;
    let name = package_name(&manifest)
        .with_context(|| format!("{} has no [package] name", dir.join("Cargo.toml").display()))?;
    if !manifest.contains("cdylib") {
        bail!(
            "{} builds no component: add `[lib] crate-type = [\"cdylib\"]`",
            dir.join("Cargo.toml").display()
        );
    }
    target_installed()?;
    let status = Command::new("cargo")
        .current_dir(dir)
        .args(["build", "--release", "--target", TARGET])
        .status()
        .context("cargo not found: install Rust (https://rustup.rs)")?;
    if !status.success() {
        bail!("cargo build failed (its output is above)");
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("target"));
    Ok(target_dir
        .join(TARGET)
        .join("release")
        .join(format!("{}.wasm", name.replace('-', "_"))))
}

/// `name = "..."` of the `[package]` table.
fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package && let Some(v) = line.strip_prefix("name") {
            let v = v.trim_start().strip_prefix('=')?.trim();
            return Some(v.trim_matches('"').to_string());
        }
    }
    None
}

/// The wasm32-wasip2 target, where rustup can tell.
fn target_installed() -> anyhow::Result<()> {
    let Ok(out) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        return Ok(()); // no rustup: cargo says what is missing
    };
    let listed = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && !listed.lines().any(|l| l.trim() == TARGET) {
        bail!("the {TARGET} target is not installed: rustup target add {TARGET}");
    }
    Ok(())
}

fn build_python(dir: &Path) -> anyhow::Result<PathBuf> {
    let tool = std::env::var_os("COMPONENTIZE_PY")
        .map(PathBuf::from)
        .unwrap_or_else(|| "componentize-py".into());
    componentize(
        dir,
        Componentizer {
            lang: "python",
            tool,
            name: "componentize-py",
            version: COMPONENTIZE_PY,
            fix: format!(
                "install it: pip install componentize-py=={COMPONENTIZE_PY} (or set COMPONENTIZE_PY to its path)"
            ),
            args: &[
                "-d",
                "wit",
                "-w",
                "module-imp",
                "componentize",
                "app",
                "-p",
                ".",
            ],
        },
    )
}

/// A tool that makes a component of a project in another language.
struct Componentizer {
    lang: &'static str,
    tool: PathBuf,
    name: &'static str,
    /// The release the SDK is tested with.
    version: &'static str,
    /// How to get it.
    fix: String,
    /// Its arguments before `-o OUT`.
    args: &'static [&'static str],
}

/// Run `c` in `dir` into `<dir name>.wasm`.
fn componentize(dir: &Path, c: Componentizer) -> anyhow::Result<PathBuf> {
    let name = project_name(dir, c.lang)?;
    let version = Command::new(&c.tool)
        .arg("--version")
        .output()
        .map_err(|_| anyhow::anyhow!("{} not found: {}", c.name, c.fix))?;
    let version = String::from_utf8_lossy(&version.stdout);
    if !version.contains(c.version) {
        eprintln!(
            "note: {} --version says `{}`; the SDK is tested with {}",
            c.name,
            version.trim(),
            c.version
        );
    }
    let out = dir.join(format!("{name}.wasm"));
    eprintln!("{}: building {} (about 10-20 s)", c.name, out.display());
    let status = Command::new(&c.tool)
        .current_dir(dir)
        .args(c.args)
        .arg("-o")
        .arg(format!("{name}.wasm"))
        .status()?;
    if !status.success() {
        bail!("{} failed (its output is above)", c.name);
    }
    Ok(out)
}

/// The folder's name, which names the .wasm; the project must have the WIT.
fn project_name(dir: &Path, lang: &str) -> anyhow::Result<String> {
    if !dir.join("wit").is_dir() {
        bail!(
            "{} has no wit/ folder: copy it from a project made by `liveswap new NAME --lang {lang}`",
            dir.display()
        );
    }
    Ok(dir
        .canonicalize()?
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("app")
        .to_string())
}

fn build_js(dir: &Path) -> anyhow::Result<PathBuf> {
    let local = dir.join("node_modules/.bin/componentize-js");
    let tool = std::env::var_os("COMPONENTIZE_JS")
        .map(PathBuf::from)
        .or_else(|| local.exists().then_some(local))
        .unwrap_or_else(|| "componentize-js".into());
    componentize(
        dir,
        Componentizer {
            lang: "js",
            tool,
            name: "componentize-js",
            version: COMPONENTIZE_JS,
            fix: format!(
                "npm install (it is a devDependency of the project), or npm install -g @bytecodealliance/componentize-js@{COMPONENTIZE_JS} (or set COMPONENTIZE_JS to its path)"
            ),
            // wasi:http is not among what the host provides: leave it out.
            args: &[
                "app.js",
                "-w",
                "wit",
                "-n",
                "module-imp",
                "-d",
                "http",
                "fetch-event",
            ],
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_package_name_is_read_from_its_table() {
        let m = "[lib]\nname = \"x\"\n[package]\nversion = \"1\"\nname = \"my-mod\"\n";
        assert_eq!(package_name(m).as_deref(), Some("my-mod"));
        assert_eq!(package_name("[lib]\nname = \"x\"\n"), None);
    }
}
