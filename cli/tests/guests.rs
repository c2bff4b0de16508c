//! Writing guests as a user does: `liveswap new` in Rust, Python and
//! JavaScript, `liveswap build`, and the builds taking over from each
//! other in a running host under a steady load, state carried every time.
//! Needs the wasm32-wasip2 target (rustup target add wasm32-wasip2),
//! python3 with venv, which installs componentize-py, and node with npm,
//! which installs componentize-js (Debian: apt-get install python3
//! python3-venv nodejs npm; `.ci/run` does).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::componentize::{componentize_js, componentize_py};
use common::{BIN, Out, liveswap_in};

fn temp_dir(what: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("liveswap-guests-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `liveswap build` in `dir`, with `env`; the outer cargo's flags are for
/// the host, not for the guest.
fn build(dir: &Path, env: &[(&str, &Path)]) -> Out {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .arg("build")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("liveswap runs");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// The component `liveswap build` said it made.
fn built(o: &Out) -> PathBuf {
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    let path = o
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("built "))
        .and_then(|l| l.split(" (").next())
        .unwrap_or_else(|| panic!("no `built` line: {}", o.stdout));
    let path = PathBuf::from(path);
    assert!(path.exists(), "{}", path.display());
    path
}

#[test]
fn rust_python_and_js_scaffolds_build_and_take_over_from_each_other_under_load() {
    let dir = temp_dir("scaffolds");
    let made = liveswap_in(Some(&dir), &["new", "counter"]);
    assert_eq!(made.code, 0, "{}", made.stderr);
    assert!(
        made.stdout.contains("cd counter && liveswap build"),
        "{}",
        made.stdout
    );
    let made = liveswap_in(Some(&dir), &["new", "pycounter", "--lang", "python"]);
    assert_eq!(made.code, 0, "{}", made.stderr);
    let made = liveswap_in(Some(&dir), &["new", "jscounter", "--lang", "js"]);
    assert_eq!(made.code, 0, "{}", made.stderr);

    // Bad input changes nothing and says why.
    let again = liveswap_in(Some(&dir), &["new", "counter", "--lang", "python"]);
    assert_eq!(again.code, 1);
    assert!(
        again
            .stderr
            .contains("counter already exists: nothing was written"),
        "{}",
        again.stderr
    );
    assert!(dir.join("counter/Cargo.toml").exists() && !dir.join("counter/app.py").exists());
    let nothing = build(&dir, &[]);
    assert_eq!(nothing.code, 1);
    assert!(
        nothing.stderr.contains("holds no guest project"),
        "{}",
        nothing.stderr
    );
    let no_tool = build(
        &dir.join("pycounter"),
        &[("COMPONENTIZE_PY", Path::new("/nonexistent/componentize-py"))],
    );
    assert_eq!(no_tool.code, 1);
    assert!(
        no_tool
            .stderr
            .contains("pip install componentize-py==0.25.1"),
        "{}",
        no_tool.stderr
    );

    let no_js = build(
        &dir.join("jscounter"),
        &[("COMPONENTIZE_JS", Path::new("/nonexistent/componentize-js"))],
    );
    assert_eq!(no_js.code, 1);
    assert!(
        no_js
            .stderr
            .contains("npm install -g @bytecodealliance/componentize-js@0.23.0"),
        "{}",
        no_js.stderr
    );

    // The handlers' unit tests run without a host.
    let unit = Command::new("node")
        .current_dir(dir.join("jscounter"))
        .arg("--test")
        .output()
        .expect("node runs");
    let said = String::from_utf8_lossy(&unit.stdout);
    assert!(unit.status.success() && said.contains("# pass 3"), "{said}");
    let unit = Command::new("python3")
        .current_dir(dir.join("pycounter"))
        .args(["-B", "-m", "unittest", "-v"])
        .output()
        .expect("python3 runs");
    let said = String::from_utf8_lossy(&unit.stderr);
    assert!(
        unit.status.success() && said.contains("Ran 3 tests"),
        "{said}"
    );

    // A shared target directory keeps the Rust guest's dependencies warm
    // from one run of the tests to the next.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("scaffold-target");
    let rust = built(&build(
        &dir.join("counter"),
        &[("CARGO_TARGET_DIR", &target)],
    ));
    let py = built(&build(
        &dir.join("pycounter"),
        &[("COMPONENTIZE_PY", &componentize_py())],
    ));
    let js = built(&build(
        &dir.join("jscounter"),
        &[("COMPONENTIZE_JS", &componentize_js())],
    ));
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    eprintln!(
        "scaffolds built: Rust {} bytes, Python {} bytes, JavaScript {} bytes",
        size(&rust),
        size(&py),
        size(&js)
    );

    // Rust -> Python -> JavaScript -> Rust -> Rust v2 (migrates) -> Python
    // (refuses v2's state), while T sends C a number every 5 ms.
    let v2 = liveswap_guests::COUNTER_V2;
    let script = format!(
        "Load C {rust}\n\
         Load T $GUESTS/probe_v1.wasm config \"timer t 5; tick-send C\"\n\
         Wait 300ms\n\
         Replace C {py}\n\
         Wait 300ms\n\
         Replace C {js}\n\
         Wait 300ms\n\
         Replace C {rust}\n\
         Wait 300ms\n\
         Replace C {v2}\n\
         Wait 300ms\n\
         Replace C {py}\n\
         Wait 300ms\n\
         Send T do \"cancel t\"\n\
         Wait 200ms\n\
         Quit\n",
        rust = rust.display(),
        py = py.display(),
        js = js.display(),
    );
    std::fs::write(dir.join("swaps.txt"), script).unwrap();
    let cache = dir.join("compiled");
    let run = liveswap_in(
        Some(&dir),
        &[
            "run",
            "--no-admin",
            "--verbose",
            "--compile-cache",
            cache.to_str().unwrap(),
            "swaps.txt",
        ],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let out = run.stdout;
    std::fs::write(dir.join("run.out"), &out).unwrap();
    let outcomes: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("== transaction "))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(
        outcomes,
        [
            "COMMITTED:",
            "COMMITTED:",
            "COMMITTED:",
            "COMMITTED:",
            "ABORTED:"
        ],
        "{out}"
    );
    assert!(
        out.contains(
            "get-state returned an error: py-1 reads state version 1 and older; this state is version 2"
        ),
        "{out}"
    );
    assert!(out.contains("C v2 | migrated state version 1:"), "{out}");
    // Every number once and in order, whichever version served it.
    let mut numbers = Vec::new();
    let mut versions: Vec<&str> = Vec::new();
    for l in out.lines() {
        let Some((who, what)) = l.split_once(" | ") else {
            continue;
        };
        let Some(rest) = what.strip_prefix("got ") else {
            continue;
        };
        let Some((n, from)) = rest.split_once(" from ") else {
            continue;
        };
        if !who.starts_with("C ") || !from.starts_with('T') {
            continue;
        }
        numbers.push(n.parse::<u64>().unwrap());
        let v = who.trim_start_matches("C ");
        if versions.last() != Some(&v) {
            versions.push(v);
        }
    }
    assert!(numbers.len() > 100, "{out}");
    let holes: Vec<(u64, u64)> = numbers
        .windows(2)
        .filter(|w| w[1] != w[0] + 1)
        .map(|w| (w[0], w[1]))
        .collect();
    assert!(
        numbers[0] == 1 && holes.is_empty(),
        "numbers from T not consecutive: first {}, jumps {holes:?} (the run: {})",
        numbers[0],
        dir.join("run.out").display()
    );
    assert_eq!(versions, ["v1", "vpy-1", "vjs-1", "v1", "v2"], "{out}");
    assert!(!out.contains("GAP"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_python_and_js_helpers_pass_their_own_tests_without_a_host() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk/python");
    let o = Command::new("python3")
        .current_dir(&dir)
        .args(["-B", "-m", "unittest", "-v", "test_liveswap_guest"])
        .output()
        .expect("python3 runs");
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && said.trim_end().ends_with("OK"),
        "{said}"
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk/js");
    let o = Command::new("node")
        .current_dir(&dir)
        .args(["--test", "liveswap-guest.test.js"])
        .output()
        .expect("node runs");
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && said.contains("# pass 7") && said.contains("# fail 0"),
        "{said}"
    );
}
