//! Bad input of every kind gets an error naming what was wrong, and the
//! running modules serve on as before.

use std::path::PathBuf;

use liveswap_ops::script;

use crate::support::*;

/// A host with T feeding SINK, to show that service goes on.
fn running() -> Host {
    let mut h = Host::new();
    h.ok(&format!("Load SINK {V1}"));
    h.ok(&format!("Load T {V1} config \"timer t 2; tick-send SINK\""));
    h.wait_line("SINK", "got 1 from T");
    h
}

/// SINK is still served: five more numbers from T arrive, in order.
fn still_serving(h: &mut Host) {
    h.drain();
    let n = *h.got("SINK", "T").last().unwrap();
    h.wait_line("SINK", &format!("got {} from T", n + 5));
    let names: Vec<String> = h.rt.status().into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"SINK".into()) && names.contains(&"T".into()),
        "{names:?}"
    );
    assert!(h.violations("SINK").is_empty());
}

fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("liveswap-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn files_that_are_not_modules_are_refused_by_name() {
    let mut h = running();
    let cases: Vec<(PathBuf, &str)> = vec![
        (PathBuf::from("/nonexistent/x.wasm"), "cannot read"),
        (
            temp_file("text.wasm", b"hello, not wasm"),
            "not a WebAssembly file",
        ),
        (
            temp_file("core.wasm", b"\0asm\x01\0\0\0"),
            "core WebAssembly module, not a component",
        ),
        (
            temp_file("empty-component.wasm", b"\0asm\x0d\0\x01\0"),
            "not a liveswap module",
        ),
        (
            temp_file("truncated.wasm", &std::fs::read(V1).unwrap()[..4000]),
            "invalid component",
        ),
    ];
    for (path, why) in cases {
        let err = h.err(&format!("Load X {}", path.display()));
        assert!(err.contains(why), "{}: {err}", path.display());
        assert!(
            err.contains(&path.display().to_string()),
            "error names the file: {err}"
        );
        assert!(h.rt.module("X").is_none());
        still_serving(&mut h);
    }
}

#[test]
fn commands_about_the_wrong_names_are_refused() {
    let mut h = running();
    let err = h.err(&format!("Load SINK {V2}"));
    assert_eq!(err, "a module named `SINK` is already loaded");
    assert_eq!(h.rt.module("SINK").unwrap().version().label(), "1.0");
    for cmd in ["Unload", "Enable", "Disable"] {
        let err = h.err(&format!("{cmd} GHOST"));
        assert_eq!(err, "no module named `GHOST` is loaded");
    }
    still_serving(&mut h);
}

#[test]
fn malformed_lines_are_refused() {
    let mut h = running();
    for (line, why) in [
        ("Frobnicate SINK", "unknown command `Frobnicate`"),
        ("Unload", "Unload takes 1 argument(s), got 0"),
        ("Enable SINK T", "Enable takes 1 argument(s), got 2"),
        ("Load SINK", "Load takes <name> <file.wasm>"),
        ("Wait forever", "`forever` is not a duration"),
        ("Load X x.wasm color blue", "unknown option `color`"),
    ] {
        let err = h.err(line);
        assert!(err.contains(why), "{line}: {err}");
    }
    still_serving(&mut h);
}

#[test]
fn a_guest_whose_init_fails_or_traps_is_not_registered() {
    let mut h = running();
    let err = h.err(&format!(
        "Load BAD {V1} config \"sub T x; timer z 1; fail-init\""
    ));
    assert!(
        err.contains("module `BAD`: init failed: returned an error"),
        "{err}"
    );
    assert!(h.rt.module("BAD").is_none());
    let err = h.err(&format!("Load BAD {V1} config trap-init"));
    assert!(
        err.contains("module `BAD`: init failed: init trapped"),
        "{err}"
    );
    assert!(h.rt.module("BAD").is_none());
    // The name is free, and nothing the failed init set up survived.
    h.ok(&format!("Load BAD {V1}"));
    h.ok("Send T do \"publish x\"");
    h.wait_line("T", "did publish x");
    still_serving(&mut h);
    h.drain();
    assert!(
        h.logs("BAD")
            .iter()
            .all(|l| !l.starts_with("got") && !l.starts_with("tick"))
    );
}

#[test]
fn a_script_error_names_the_file_the_line_and_the_command() {
    let mut h = running();
    let text = format!("# setup\nLoad A {V1}\n\nLoad B /missing/b.wasm\nLoad C {V1}\n");
    let err = script::run(
        &h.rt,
        "setup.ls",
        &text,
        (&script::Vars::default(), None),
        |_, _, _| {},
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("setup.ls:4: `Load B /missing/b.wasm`: /missing/b.wasm: cannot read"),
        "{msg}"
    );
    assert!(h.rt.module("A").is_some(), "lines before the error ran");
    assert!(h.rt.module("C").is_none(), "lines after the error did not");
    h.ok("Unload A");
    still_serving(&mut h);
}

#[test]
fn a_component_of_another_world_is_refused_before_compiling_naming_what_does_not_fit() {
    let mut h = running();
    let held = h.rt.repository().all().len();
    // What componentize-js makes by default: a component that imports
    // wasi:http, which the host does not provide (beside one it does).
    let http = wat::parse_str(
        r#"(component
             (import "wasi:http/outgoing-handler@0.2.0" (instance))
             (import "wasi:io/streams@0.2.3" (instance)))"#,
    )
    .unwrap();
    let path = temp_file("http.wasm", &http);
    let t0 = std::time::Instant::now();
    let err = h.err(&format!("Load X {}", path.display()));
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        t0.elapsed()
    );
    assert!(
        err.contains(&format!(
            "{}: not a liveswap module (world `module-imp`): it imports `wasi:http/outgoing-handler@0.2.0`, which this host does not provide",
            path.display()
        )) && !err.contains("wasi:io/streams")
            && err.ends_with("nothing was compiled"),
        "{err}"
    );
    // A component of the right imports that is no module: its missing
    // exports are named.
    let bare =
        wat::parse_str(r#"(component (import "liveswap:module/host@0.1.0" (instance)))"#).unwrap();
    let path = temp_file("bare.wasm", &bare);
    let err = h.err(&format!("Load X {}", path.display()));
    assert!(
        err.contains("it does not export `info`, `init`, `service`, `enable`, `disable`, `put-state`, `get-state`"),
        "{err}"
    );
    assert_eq!(h.rt.repository().all().len(), held, "nothing was kept");
    assert!(h.rt.module("X").is_none());
    still_serving(&mut h);
}
