//! A guest of over 10 MB: the Python counter (componentize-py, 18 MB),
//! loaded on a host with a state directory, then restarted: the restart
//! loads its compiled artifact from the store instead of compiling it
//! again (both times printed), and its state and the numbers it counts
//! carry on. Its own test binary: compiling 18 MB of Python runtime takes
//! both cores for seconds, which would disturb timing-sensitive tests
//! running beside it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use liveswap::RuntimeBuilder;

#[path = "../it/support.rs"]
#[allow(dead_code)]
mod support;

use support::{Host, TempDir};

#[path = "../../cli/tests/common/componentize.rs"]
#[allow(dead_code)]
mod componentize;
use componentize::componentize_py;

fn on(dir: &Path) -> RuntimeBuilder {
    RuntimeBuilder::default()
        .call_deadline(Duration::from_secs(10))
        .state_dir(Some(dir.to_path_buf()))
}

/// The Python counter guest (guest-modules/python/counter), built with
/// componentize-py when its source is newer than the last build.
fn python_counter() -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-modules/python/counter");
    let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-counter.wasm");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&out) > modified(&src.join("app.py")) {
        return out;
    }
    let built = std::process::Command::new(componentize_py())
        .arg("-d")
        .arg(&wit)
        .args(["-w", "module-imp", "componentize", "-p"])
        .arg(&src)
        .arg("app")
        .arg("-o")
        .arg(&out)
        .output()
        .expect("componentize-py runs");
    assert!(
        built.status.success(),
        "componentize-py failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    out
}

/// The Python guest's version in `h`'s repository (the one of `size` bytes).
fn python_version(h: &Host, size: u64) -> std::sync::Arc<liveswap::repo::Version> {
    h.rt.repository()
        .all()
        .into_iter()
        .find(|v| v.size as u64 == size)
        .expect("the Python guest is loaded")
}

#[test]
fn a_restart_loads_an_18_mb_python_guest_from_its_compiled_artifact() {
    let wasm = python_counter();
    let size = std::fs::metadata(&wasm).unwrap().len();
    assert!(size > 10 << 20, "a guest of over 10 MB: {size} bytes");
    let t = TempDir::new("python");
    let dir = t.0.join("state");
    let compiled = {
        let mut h = Host::with(on(&dir));
        let mark = h.mark();
        h.ok(&format!("Load P {}", wasm.display()));
        // The long compile said how it went, each second, to whoever
        // asked for the Load.
        h.drain();
        let expected = format!("compiling {}: ", wasm.display());
        let ticks: Vec<String> = h.seen[mark..]
            .iter()
            .filter_map(|e| match e {
                liveswap::Event::Progress { origin, text } if origin == "test" => {
                    Some(text.clone())
                }
                _ => None,
            })
            .collect();
        h.ok(&format!(
            "Load T {} config \"timer t 2; tick-send P; quiet\"",
            liveswap_guests::PROBE_V2
        ));
        std::thread::sleep(Duration::from_millis(300));
        let v = python_version(&h, size);
        assert!(!v.precompiled, "the first load compiles");
        if v.compile_us > 1_500_000 {
            assert!(
                !ticks.is_empty()
                    && ticks
                        .iter()
                        .all(|t| t.starts_with(&expected) && t.ends_with(" s so far")),
                "{ticks:?}"
            );
            assert_eq!(ticks[0], format!("{expected}1 s so far"));
        }
        h.rt.shutdown();
        v.compile_us
    };
    let mut h = Host::with(on(&dir));
    let s = h.rt.restart_summary().unwrap();
    assert_eq!(s.modules, 2, "{s:?}");
    let v = python_version(&h, size);
    assert!(v.precompiled, "the restart loads the stored artifact");
    eprintln!(
        "Python guest ({} MiB): compiled in {:.0} ms; after a restart, loaded from the state directory in {:.1} ms (restart of 2 modules: {:.0} ms)",
        size >> 20,
        compiled as f64 / 1e3,
        v.compile_us as f64 / 1e3,
        s.took.as_secs_f64() * 1e3
    );
    // Its state came back too: the numbers go on, none twice.
    std::thread::sleep(Duration::from_millis(300));
    h.ok("Send T do \"cancel t\"");
    std::thread::sleep(Duration::from_millis(300));
    h.ok("Send T do report");
    h.ok("Send P do report");
    let sent = h.wait_event("T's report", |e| {
        matches!(e, liveswap::Event::Log { module, line, .. } if module == "T" && line.contains("report"))
    });
    let got = h.wait_event("P's report", |e| {
        matches!(e, liveswap::Event::Log { module, line, .. } if module == "P" && line.contains("report"))
    });
    let field = |e: &liveswap::Event, key: &str| -> String {
        let liveswap::Event::Log { line, .. } = e else {
            unreachable!()
        };
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or("")
            .split(',')
            .find_map(|kv| kv.split_once(':').map(|(_, n)| n.to_string()))
            .unwrap_or_default()
    };
    let n = field(&sent, "sent=");
    assert!(!n.is_empty() && n != "0", "{sent:?}");
    assert_eq!(field(&got, "seen="), n, "P saw every number T sent");
    let bad: Vec<&liveswap::Event> = h
        .seen
        .iter()
        .filter(|e| {
            matches!(e, liveswap::Event::Log { line, .. } if line.contains("GAP") || line.contains("DUP"))
        })
        .collect();
    assert!(bad.is_empty(), "no number lost or repeated: {bad:?}");
    h.rt.shutdown();
}
