//! Verified versions: a host given trusted keys loads only files whose
//! signature one of them made, refuses every other file by name, and a
//! refusal changes nothing — the old versions serve on, no message lost.

use std::path::{Path, PathBuf};
use std::time::Duration;

use liveswap::signing::{self, PublicKey, SecretKey};
use liveswap::{Event, ModuleState, Outcome, RuntimeBuilder};
use liveswap_ops::Reply;
use liveswap_ops::ToText as _;

use crate::support::*;

/// A fresh folder for one test's copies of the guests.
fn folder(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("liveswap-verify-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Copy the guest `from` into `dir` as `name`.
fn copy(from: &str, dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::copy(from, &p).unwrap();
    p
}

/// A copy of `from` in `dir`, signed by `key`.
fn signed(from: &str, dir: &Path, name: &str, key: &SecretKey) -> PathBuf {
    let p = copy(from, dir, name);
    signing::sign_file(key, &p).unwrap();
    p
}

fn trusting(keys: Vec<PublicKey>) -> Host {
    Host::with(
        RuntimeBuilder::default()
            .call_deadline(Duration::from_secs(2))
            .trusted_keys(keys),
    )
}

fn key() -> SecretKey {
    signing::generate().unwrap()
}

fn versions(h: &Host) -> String {
    match h.ok("Versions") {
        Reply::Text(t) => t,
        other => panic!("{other:?}"),
    }
}

/// `Load X <file>` is refused for `why`, naming the file, and leaves no
/// module and nothing new in the repository.
fn load_refused(h: &Host, file: &Path, why: &str) -> String {
    let held = h.rt.repository().all().len();
    let err = h.err(&format!("Load X {}", file.display()));
    assert!(
        err.starts_with(&format!("{}: refused: ", file.display())),
        "the error names the file: {err}"
    );
    assert!(err.contains(why), "{err}");
    assert!(h.rt.module("X").is_none());
    assert_eq!(h.rt.repository().all().len(), held, "nothing was cached");
    err
}

/// SINK keeps getting T's numbers, consecutive, `more` past the last one.
fn consecutive(h: &mut Host, more: u64) {
    h.drain();
    let n = *h.got("SINK", "T").last().unwrap();
    h.wait_line("SINK", &format!("got {} from T", n + more));
    let got = h.got("SINK", "T");
    assert_eq!(got, one_to(got.len() as u64));
    assert!(
        h.violations("SINK").is_empty(),
        "{:?}",
        h.violations("SINK")
    );
}

#[test]
fn an_unsigned_file_is_refused_naming_the_file_and_its_missing_signature() {
    let dir = folder("unsigned");
    let h = trusting(vec![key().verifying_key()]);
    let wasm = copy(V1, &dir, "probe.wasm");
    let err = load_refused(&h, &wasm, "unsigned");
    assert!(
        err.contains(&format!("no {}.sig", wasm.display())),
        "says where the signature was looked for: {err}"
    );
}

#[test]
fn a_signature_over_another_file_is_refused() {
    let dir = folder("other-file");
    let k = key();
    let h = trusting(vec![k.verifying_key()]);
    let v2 = signed(V2, &dir, "v2.wasm", &k);
    let v1 = copy(V1, &dir, "v1.wasm");
    std::fs::copy(signing::sig_path(&v2), signing::sig_path(&v1)).unwrap();
    let err = load_refused(&h, &v1, "bad signature");
    assert!(
        err.contains("does not verify over this file's digest"),
        "{err}"
    );
}

#[test]
fn a_signature_by_an_untrusted_key_is_refused_naming_the_key() {
    let dir = folder("untrusted");
    let (trusted, stranger) = (key(), key());
    let h = trusting(vec![trusted.verifying_key()]);
    let wasm = signed(V1, &dir, "probe.wasm", &stranger);
    let err = load_refused(&h, &wasm, "bad signature");
    let hex: String = stranger
        .verifying_key()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(
        err.contains(&format!(
            "signed by key {hex}, which this host does not trust"
        )),
        "{err}"
    );
}

#[test]
fn a_file_changed_after_signing_is_refused() {
    let dir = folder("tampered");
    let k = key();
    let h = trusting(vec![k.verifying_key()]);
    let wasm = signed(V1, &dir, "probe.wasm", &k);
    let mut bytes = std::fs::read(&wasm).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x01;
    std::fs::write(&wasm, bytes).unwrap();
    load_refused(&h, &wasm, "does not verify");
}

#[test]
fn a_malformed_signature_file_is_refused() {
    let dir = folder("malformed");
    let k = key();
    let h = trusting(vec![k.verifying_key()]);
    let wasm = copy(V1, &dir, "probe.wasm");
    std::fs::write(signing::sig_path(&wasm), "a signature, honestly\n").unwrap();
    let err = load_refused(&h, &wasm, "bad signature");
    assert!(
        err.contains("probe.wasm.sig") && err.contains("not `liveswap-ed25519-signature`"),
        "{err}"
    );
}

#[test]
fn a_validly_signed_file_loads_and_serves() {
    let dir = folder("valid");
    let (k1, k2) = (key(), key());
    let mut h = trusting(vec![k1.verifying_key(), k2.verifying_key()]);
    let sink = signed(V1, &dir, "sink.wasm", &k1);
    // The second trusted key is as good as the first.
    let timer = signed(V1, &dir, "timer.wasm", &k2);
    h.ok(&format!("Load SINK {}", sink.display()));
    h.ok(&format!(
        "Load T {} config \"timer t 2; tick-send SINK\"",
        timer.display()
    ));
    h.wait_line("SINK", "got 5 from T");
    assert_eq!(h.got("SINK", "T")[..5], one_to(5));
    let v = versions(&h);
    assert_eq!(
        v.lines().last(),
        Some("signatures: required (2 trusted keys)"),
        "{v}"
    );
}

#[test]
fn a_digest_already_held_is_taken_only_with_a_valid_signature_now() {
    let dir = folder("cached");
    let k = key();
    let h = trusting(vec![k.verifying_key()]);
    let wasm = signed(V1, &dir, "probe.wasm", &k);
    h.ok(&format!("Load A {}", wasm.display()));
    assert_eq!(h.rt.repository().all().len(), 1);
    // The same bytes under another name, unsigned: the digest is held,
    // but this file is not signed.
    let twin = copy(V1, &dir, "twin.wasm");
    load_refused(&h, &twin, "unsigned");
    // The signature taken away from the first file: refused too.
    std::fs::remove_file(signing::sig_path(&wasm)).unwrap();
    load_refused(&h, &wasm, "unsigned");
    // Signed again, it is the held version, not a second compile.
    signing::sign_file(&k, &twin).unwrap();
    h.ok(&format!("Load B {}", twin.display()));
    assert_eq!(h.rt.repository().all().len(), 1);
}

#[test]
fn an_upgrade_with_a_bad_signature_is_refused_and_the_old_version_serves_on() {
    let dir = folder("replace");
    let (k, stranger) = (key(), key());
    let mut h = trusting(vec![k.verifying_key()]);
    let v1 = signed(V1, &dir, "v1.wasm", &k);
    h.ok(&format!("Load SINK {}", v1.display()));
    h.ok(&format!(
        "Load T {} config \"timer t 2; tick-send SINK\"",
        v1.display()
    ));
    h.wait_line("SINK", "got 3 from T");
    let before = h.mark();

    let unsigned = copy(V2, &dir, "unsigned.wasm");
    let foreign = signed(V2, &dir, "foreign.wasm", &stranger);
    let good = signed(V2, &dir, "v2.wasm", &k);
    for (cmd, file, why) in [
        (
            format!("Replace SINK {}", unsigned.display()),
            &unsigned,
            "unsigned",
        ),
        (
            format!("Replace SINK {}", foreign.display()),
            &foreign,
            "does not trust",
        ),
        (
            format!(
                "Syn_Replace SINK {} T {}",
                good.display(),
                foreign.display()
            ),
            &foreign,
            "does not trust",
        ),
        (
            format!("Syn_Load NEW {}", unsigned.display()),
            &unsigned,
            "unsigned",
        ),
        (
            format!(
                "Syn_Upgrade SINK {} NEW {}",
                good.display(),
                unsigned.display()
            ),
            &unsigned,
            "unsigned",
        ),
    ] {
        let r = h.txn(&cmd);
        assert_eq!(r.outcome, Outcome::Refused, "{cmd}: {}", r.to_text());
        let reason = r.reason.unwrap_or_default();
        assert!(
            reason.starts_with(&format!("{}: refused: ", file.display())) && reason.contains(why),
            "{cmd}: {reason}"
        );
    }
    assert!(h.rt.module("NEW").is_none());
    assert_eq!(
        h.rt.repository().all().len(),
        1,
        "no group compiled its good file before refusing the bad one"
    );
    for m in ["SINK", "T"] {
        assert_eq!(h.rt.module(m).unwrap().version().label(), "1.0", "{m}");
    }
    consecutive(&mut h, 20);
    h.drain();
    let paused = h.seen[before..].iter().any(|e| {
        matches!(
            e,
            Event::Module {
                state: ModuleState::Quiescing,
                ..
            }
        )
    });
    assert!(!paused, "a refused upgrade paused a module");

    // The validly signed version commits, and still nothing is lost.
    let r = h.txn(&format!("Replace SINK {}", good.display()));
    assert_eq!(r.outcome, Outcome::Committed, "{}", r.to_text());
    assert_eq!(h.rt.module("SINK").unwrap().version().label(), "2.0");
    consecutive(&mut h, 20);
}

#[test]
fn a_host_without_trusted_keys_ignores_signature_files() {
    let dir = folder("ignored");
    let mut h = Host::new();
    let garbage = copy(V1, &dir, "garbage.wasm");
    std::fs::write(signing::sig_path(&garbage), "not a signature").unwrap();
    let foreign = signed(V1, &dir, "foreign.wasm", &key());
    let unsigned = copy(V1, &dir, "unsigned.wasm");
    h.ok(&format!("Load SINK {}", garbage.display()));
    h.ok(&format!(
        "Load T {} config \"timer t 2; tick-send SINK\"",
        foreign.display()
    ));
    h.ok(&format!("Load U {}", unsigned.display()));
    h.wait_line("SINK", "got 3 from T");
    let v = versions(&h);
    assert_eq!(v.lines().last(), Some("signatures: not checked"), "{v}");
}
