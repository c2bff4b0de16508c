//! componentize-py for the tests that build Python guests (shared by the
//! CLI tests and tests/python).

use std::path::{Path, PathBuf};

/// `componentize-py` 0.25.1: on the PATH, or installed here (in a venv
/// under the target directory) with `python3 -m venv` and pip.
pub fn componentize_py() -> PathBuf {
    const VERSION: &str = "0.25.1";
    let on_path = std::process::Command::new("componentize-py")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(VERSION));
    if on_path {
        return PathBuf::from("componentize-py");
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("componentize-py");
    let bin = venv.join("bin/componentize-py");
    if bin.exists() {
        return bin;
    }
    let made = std::process::Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        made,
        "the Python guest test needs componentize-py {VERSION}, and python3 with venv to install it (Debian: apt-get install python3 python3-venv; or pip install componentize-py=={VERSION})"
    );
    let pip = std::process::Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", &format!("componentize-py=={VERSION}")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        pip,
        "installing componentize-py {VERSION} with pip failed (pip install componentize-py=={VERSION})"
    );
    bin
}

/// `componentize-js` 0.23.0: installed here (under the target directory)
/// with npm.
pub fn componentize_js() -> PathBuf {
    const VERSION: &str = "0.23.0";
    let prefix = Path::new(env!("CARGO_TARGET_TMPDIR")).join("componentize-js");
    let bin = prefix.join("node_modules/.bin/componentize-js");
    if bin.exists() {
        return bin;
    }
    std::fs::create_dir_all(&prefix).expect("a folder for componentize-js");
    let installed = std::process::Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&prefix)
        .arg(format!("@bytecodealliance/componentize-js@{VERSION}"))
        .status();
    assert!(
        installed.is_ok_and(|s| s.success()),
        "the JavaScript guest test needs componentize-js {VERSION}, and node with npm to install it (Debian: apt-get install nodejs npm; or npm install -g @bytecodealliance/componentize-js@{VERSION})"
    );
    bin
}
