//! Compiles every guest crate under `guest-modules/` to a wasm32-wasip2
//! component with one nested `cargo build`, and writes their paths to
//! `$OUT_DIR/guests.rs`.
//!
//! The nested build uses its own target directory (`target/guests` next to
//! the outer one): the outer cargo holds the lock on its own profile
//! directory, and a shared directory keeps the guests warm across debug and
//! release builds of the host.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let guests_dir = manifest_dir
        .parent()
        .expect("artifacts sits in guest-modules/");
    let workspace = guests_dir
        .parent()
        .expect("guest-modules sits in the workspace");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));

    let guests = guest_crates(guests_dir);
    let target_dir = nested_target_dir(&out_dir, workspace);

    check_target_installed();

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--release", "--target", TARGET])
        .env("CARGO_TARGET_DIR", &target_dir)
        // The outer build's flags are for the host, not for wasm.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_MAKEFLAGS")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "s");
    for g in &guests {
        cmd.args(["-p", g]);
    }
    let status = cmd
        .status()
        .expect("could not run the nested cargo build of the guests");
    if !status.success() {
        panic!("building the guest modules failed (see the cargo output above)");
    }

    let release = target_dir.join(TARGET).join("release");
    let mut code = String::from(
        "/// Every guest: (crate name, path of its component).\npub const ALL: &[(&str, &str)] = &[\n",
    );
    let mut consts = String::new();
    for g in &guests {
        let file = g.replace('-', "_");
        let wasm = release.join(format!("{file}.wasm"));
        assert!(
            wasm.exists(),
            "guest {g} built but {} is missing",
            wasm.display()
        );
        let path = wasm.to_str().expect("target path is UTF-8");
        writeln!(code, "    ({g:?}, {path:?}),").unwrap();
        writeln!(
            consts,
            "/// The `{g}` component.\npub const {}: &str = {path:?};",
            file.to_uppercase()
        )
        .unwrap();
        rerun_from_depfile(&release.join(format!("{file}.d")));
    }
    code.push_str("];\n");
    code.push_str(&consts);
    fs::write(out_dir.join("guests.rs"), code).expect("writing guests.rs");

    println!(
        "cargo:rerun-if-changed={}",
        guests_dir.join("Cargo.toml").display()
    );
    println!("cargo:rerun-if-changed={}", workspace.join("wit").display());
    for g in &guests {
        println!("cargo:rerun-if-changed={}", guests_dir.join(g).display());
    }
}

/// Guest crates: directories under `guest-modules/` holding a cdylib, that
/// is every crate but this one and the shared libraries.
fn guest_crates(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).expect("reading guest-modules/") {
        let path = entry.expect("reading guest-modules/").path();
        let manifest = path.join("Cargo.toml");
        let Ok(text) = fs::read_to_string(&manifest) else {
            continue;
        };
        if text.contains("cdylib") {
            out.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

/// `<outer target dir>/guests`: OUT_DIR is `<target>/<profile>/build/<pkg>/out`.
fn nested_target_dir(out_dir: &Path, workspace: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .nth(4)
        .map(|t| t.join("guests"))
        .unwrap_or_else(|| workspace.join("target").join("guests"))
}

fn check_target_installed() {
    let Ok(out) = Command::new("rustc").args(["--print", "sysroot"]).output() else {
        return;
    };
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let lib = Path::new(&sysroot).join("lib/rustlib").join(TARGET);
    if lib.exists() {
        return;
    }
    // rustup installs the targets of rust-toolchain.toml with a new
    // toolchain, but not into one that was already there: add it now.
    let added = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !added || !lib.exists() {
        panic!(
            "the Rust target {TARGET} is not installed; run `rustup target add {TARGET}` \
             (rust-toolchain.toml names it, so rustup normally installs it by itself)"
        );
    }
}

/// Turn cargo's dep-info file into `rerun-if-changed` lines.
fn rerun_from_depfile(depfile: &Path) {
    let Ok(text) = fs::read_to_string(depfile) else {
        return;
    };
    for line in text.lines() {
        let Some((_, deps)) = line.split_once(": ") else {
            continue;
        };
        for dep in deps.split_whitespace() {
            if !dep.contains("/.cargo/registry/") {
                println!("cargo:rerun-if-changed={dep}");
            }
        }
    }
}
