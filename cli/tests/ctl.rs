//! `liveswap ctl` as a user runs it: the real binary against a host whose
//! admin endpoint listens on a real Unix socket. Its exit status is what
//! shell scripts act on.

mod common;

use std::path::Path;
use std::sync::Arc;

use liveswap::RuntimeBuilder;
use liveswap_ops::admin::{AdminOptions, AdminServer};

fn ctl(sock: &Path, args: &[&str]) -> (i32, String, String) {
    let o = common::ctl_in(None, sock, args);
    (o.code, o.stdout, o.stderr)
}

#[test]
fn ctl_exit_status_says_what_happened() {
    let dir = std::env::temp_dir().join(format!("liveswap-ctl-{}", std::process::id()));
    let sock = dir.join("admin.sock");
    let rt = Arc::new(RuntimeBuilder::default().build().unwrap());
    let mut server = AdminServer::start(
        rt.clone(),
        AdminOptions {
            unix: Some(sock.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let (v1, v2) = (liveswap_guests::PROBE_V1, liveswap_guests::PROBE_V2);

    let (code, out, _) = ctl(
        &sock,
        &["Load", "A", v1, "config", "timer t 5; tick-send A"],
    );
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = ctl(&sock, &["Replace", "A", v2]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("COMMITTED: Replace A"), "{out}");
    let (code, _, err) = ctl(&sock, &["Replace", "A", v1]);
    assert_eq!(code, 3, "a downgrade that get-state refuses aborts: {err}");
    let (code, _, _) = ctl(&sock, &["Replace", "B", v1]);
    assert_eq!(code, 2, "refused");
    let (code, _, err) = ctl(&sock, &["Unload", "B"]);
    assert_eq!(code, 1);
    assert!(err.contains("no module named `B`"), "{err}");

    // A script stops at the first command that does not succeed.
    let script = dir.join("steps.ls");
    std::fs::write(&script, format!("Status\nReplace A {v1}\nUnload A\n")).unwrap();
    let (code, _, _) = ctl(&sock, &["-f", script.to_str().unwrap()]);
    assert_eq!(code, 3);
    assert!(rt.module("A").is_some(), "the script stopped before Unload");

    server.stop();
    let (code, _, err) = ctl(&sock, &["Status"]);
    assert_eq!(code, 4, "unreachable: {err}");
    assert!(err.contains("cannot reach a host"), "{err}");
}
