//! The state directory's refusals and guarantees, in process: one host
//! per directory (the second is told the owner's pid), a newer format and
//! a damaged store refused with nothing written, permissions, a version
//! whose .wasm file is gone restored from the store's copy, a restart that
//! loads the stored compiled artifact instead of compiling, an admin
//! `Send` answered OK served after a restart, and the journal's rule for
//! a transaction a stop interrupted.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use liveswap::RuntimeBuilder;

use crate::support::{Host, TempDir, V1};

fn on(dir: &Path) -> RuntimeBuilder {
    RuntimeBuilder::default()
        .call_deadline(Duration::from_secs(2))
        .state_dir(Some(dir.to_path_buf()))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn one_host_per_directory_and_its_files_are_private() {
    let t = TempDir::new("owner");
    let dir = t.0.join("state");
    let first = on(&dir).build().unwrap();
    let second = on(&dir).build().err().expect("a second host is refused");
    let e = format!("{second:#}");
    assert!(
        e.contains("in use by another liveswap host")
            && e.contains(&format!("pid {}", std::process::id())),
        "{e}"
    );
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("state.redb")), 0o600);
    assert_eq!(mode(&dir.join("lock")), 0o600);
    first.shutdown();
    drop(first);
    // Let go at shutdown: the next host opens it.
    on(&dir)
        .build()
        .expect("free after a clean stop")
        .shutdown();
}

#[test]
fn a_newer_format_and_a_damaged_store_are_refused_and_left_untouched() {
    let t = TempDir::new("format");
    let dir = t.0.join("state");
    on(&dir).build().unwrap().shutdown();
    let file = dir.join("state.redb");
    {
        let db = redb::Database::open(&file).unwrap();
        let txn = db.begin_write().unwrap();
        let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
        txn.open_table(meta).unwrap().insert("format", 99).unwrap();
        txn.commit().unwrap();
    }
    let before = std::fs::read(&file).unwrap();
    let e = format!("{:#}", on(&dir).build().err().expect("refused"));
    assert!(
        e.contains("written by a newer liveswap (store format 99"),
        "{e}"
    );
    assert!(std::fs::read(&file).unwrap() == before, "nothing written");

    // Half of the file: redb finds no valid header or commit.
    let half = &before[..before.len() / 2];
    std::fs::write(&file, half).unwrap();
    let e = format!("{:#}", on(&dir).build().err().expect("refused"));
    assert!(
        e.contains(&format!("store {} cannot be read", file.display()))
            && e.contains("nothing was written to it"),
        "{e}"
    );
    assert!(std::fs::read(&file).unwrap() == half, "nothing written");

    // Not a store at all.
    std::fs::write(&file, b"these are not the bytes of a store").unwrap();
    let e = format!("{:#}", on(&dir).build().err().expect("refused"));
    assert!(e.contains("cannot be read"), "{e}");
    assert!(std::fs::read(&file).unwrap() == b"these are not the bytes of a store");
}

#[test]
fn a_restart_comes_back_without_the_wasm_file_and_without_compiling() {
    let t = TempDir::new("restart");
    let dir = t.0.join("state");
    let wasm = t.0.join("probe.wasm");
    std::fs::copy(liveswap_guests::PROBE_V2, &wasm).unwrap();
    let compiled = {
        let h = Host::with(on(&dir));
        h.ok(&format!("Load SINK {} config \"quiet\"", wasm.display()));
        h.ok("Disable SINK");
        // Accepted (OK) while SINK holds its mailbox: queued, not served.
        for i in 1..=5 {
            h.ok(&format!("Send SINK num {i}"));
        }
        let v = h.rt.repository().all();
        assert!(!v[0].precompiled, "the first load compiles");
        let us = v[0].compile_us;
        h.rt.shutdown();
        us
    };
    std::fs::remove_file(&wasm).unwrap();

    let mut h = Host::with(on(&dir));
    // (Restored on SINK's own thread; a command waits for that.)
    let s = h.rt.restart_summary().expect("a restart");
    assert_eq!((s.modules, s.queued), (1, 5), "{s:?}");
    let v = h.rt.repository().all();
    assert!(v[0].precompiled, "the restart loads the stored artifact");
    eprintln!(
        "probe v2 ({} KiB): compiled in {compiled} µs, loaded from the state directory in {} µs",
        v[0].size / 1024,
        v[0].compile_us
    );
    // Still disabled, as it was; enabled, it serves the five.
    h.ok("Enable SINK");
    h.ok("Send SINK do report");
    h.wait_event("the report", |e| {
        matches!(e, liveswap::Event::Log { module, line, .. }
            if module == "SINK" && line.contains("report served=6"))
    });
    h.rt.shutdown();
}

#[test]
fn history_and_settings_survive_a_restart() {
    let t = TempDir::new("history");
    let dir = t.0.join("state");
    {
        let h = Host::with(on(&dir));
        h.ok("SetCheckpoint 250ms");
        h.ok("SetTimer 3s");
        // Early votes would journal a switch after messages the new
        // version replays: refused here, saying why.
        let e = h.err("SetMode early");
        assert!(e.contains("not on a host with a state directory"), "{e}");
        h.ok(&format!("Load A {}", liveswap_guests::PROBE_V1));
        let r = h.txn(&format!("Replace A {}", liveswap_guests::PROBE_V2));
        assert_eq!(r.outcome.as_str(), "committed");
        h.rt.shutdown();
    }
    let h = Host::with(on(&dir));
    let lines: Vec<String> = h.rt.commands().iter().map(|c| c.line.clone()).collect();
    assert!(
        lines.iter().any(|l| l.starts_with("Replace A")),
        "{lines:?}"
    );
    let status = match h.ok("Status") {
        liveswap_ops::Reply::Text(t) => t,
        other => panic!("{other:?}"),
    };
    assert!(
        status.contains("quiescence bound 3s") && status.contains("checkpoint every 250ms"),
        "{status}"
    );
    assert!(
        status.contains("v2.0"),
        "A runs the committed version: {status}"
    );
    h.rt.shutdown();
}

#[test]
fn poison_messages_are_kept_across_a_restart() {
    let t = TempDir::new("poison");
    let dir = t.0.join("state");
    let listing = |h: &Host| match h.ok("Poison A") {
        liveswap_ops::Reply::Text(t) => t,
        other => panic!("Poison: {other:?}"),
    };
    {
        let mut h = Host::with(on(&dir));
        h.ok(&format!(
            "Load A {} config quiet",
            liveswap_guests::PROBE_V2
        ));
        h.ok("Send A do \"trap\"");
        h.wait_event("the message set aside", |e| {
            matches!(e, liveswap::Event::Log { module, line, .. }
                if module == "A" && line.contains("poison message set aside"))
        });
        let before = listing(&h);
        assert!(before.contains("service trapped"), "{before}");
        h.rt.shutdown();
    }
    let h = Host::with(on(&dir));
    let after = listing(&h);
    assert!(
        after.contains("service trapped") && after.contains("v2.0") && after.contains("`do`"),
        "the poison message, its version and its trap came back: {after}"
    );
    h.rt.shutdown();
}

/// Files under `dir`, however deep.
fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() { files_under(&p) } else { 1 }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn a_compile_cache_lets_a_later_host_load_a_guest_without_compiling_it() {
    let t = TempDir::new("compile-cache");
    let cache = t.0.join("compiled");
    let cached = || RuntimeBuilder::default().compile_cache(Some(cache.clone()));
    let compile_us = |h: &Host| {
        h.rt.repository()
            .all()
            .iter()
            .map(|v| v.compile_us)
            .max()
            .expect("a version")
    };
    let first = {
        let h = Host::with(cached());
        h.ok(&format!("Load A {V1}"));
        let us = compile_us(&h);
        h.rt.shutdown();
        us
    };
    assert!(files_under(&cache) > 0, "nothing was kept in the cache");
    assert_eq!(mode(&cache), 0o700);
    // A new host, no state directory: the same file comes from the cache.
    let h = Host::with(cached());
    h.ok(&format!("Load A {V1}"));
    let second = compile_us(&h);
    h.rt.shutdown();
    eprintln!("probe v1: compiled in {first} µs; from the compile cache in {second} µs");
    assert!(
        second * 3 < first,
        "loaded from the cache in {second} µs, compiled in {first} µs"
    );
    // A cache others may write is refused: what is in it is run.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = cached().build().err().expect("refused");
    assert!(
        format!("{err:#}").contains("others may write in it"),
        "{err:#}"
    );
}
