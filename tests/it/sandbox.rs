//! The sandbox: a module reaches only what it was granted at `Load`
//! (directories, environment variables, socket addresses), a refusal is
//! reported by the guest and, for sockets, by the host too, and a Replace
//! keeps the grants.

use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};

use liveswap::{Event, Outcome};
use liveswap_ops::Reply;
use liveswap_ops::ToText as _;

use crate::support::*;

/// A fresh directory under the system's temporary directory, removed when
/// dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "liveswap-sandbox-{what}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// A subdirectory, created.
    fn dir(&self, name: &str) -> PathBuf {
        let d = self.0.join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Have `module` run the probe command `cmd` and return the line it logs
/// about it (the first line since now starting with the command and its
/// first argument, then `:`).
fn try_in(h: &mut Host, module: &str, cmd: &str) -> String {
    let since = h.mark();
    h.ok(&format!("Send {module} do \"{cmd}\""));
    let words: Vec<&str> = cmd.split_whitespace().take(2).collect();
    let prefix = format!("{}:", words.join(" "));
    match h.wait_event_since(since, &format!("{module}: {cmd}"), |e| {
        matches!(e, Event::Log { module: m, line, .. } if m == module && line.starts_with(&prefix))
    }) {
        Event::Log { line, .. } => line,
        _ => unreachable!(),
    }
}

fn refused(line: &str, cmd: &str) {
    assert!(
        line.starts_with(&format!("{cmd}: refused: ")),
        "expected a refusal: {line}"
    );
}

fn status(h: &Host) -> String {
    match h.ok("Status") {
        Reply::Text(t) => t,
        other => panic!("{other:?}"),
    }
}

/// Both probes still serve: each sends the other numbers, which arrive.
fn both_serve(h: &mut Host, a: &str, b: &str) {
    h.ok(&format!("Send {a} do \"send {b} 2\""));
    h.ok(&format!("Send {b} do \"send {a} 2\""));
    h.wait_line(b, &format!("got 2 from {a}"));
    h.wait_line(a, &format!("got 2 from {b}"));
}

#[test]
fn an_ungranted_module_is_refused_files_env_and_sockets_and_serves_on() {
    let scratch = Scratch::new("none");
    let mut h = Host::new();
    h.ok(&format!("Load A {V1}"));
    h.ok(&format!("Load B {V1}"));

    // No preopened directory: no path resolves, absolute or relative.
    refused(
        &try_in(&mut h, "A", "read-file /etc/hostname"),
        "read-file /etc/hostname",
    );
    refused(
        &try_in(&mut h, "A", "read-file data.txt"),
        "read-file data.txt",
    );
    let target = scratch.0.join("escaped.txt");
    let cmd = format!("write-file {} hello", target.display());
    let line = try_in(&mut h, "A", &cmd);
    refused(&line, &format!("write-file {}", target.display()));
    assert!(!target.exists(), "the host file was not created");

    // No environment: not even the host's PATH.
    assert!(std::env::var_os("PATH").is_some());
    assert_eq!(try_in(&mut h, "A", "env PATH"), "env PATH: absent");

    // Sockets: refused by the sandbox, and the host says so.
    refused(
        &try_in(&mut h, "A", "udp-send 127.0.0.1:9"),
        "udp-send 127.0.0.1:9",
    );
    // With no grant of a kind, no socket of that kind is made at all.
    h.wait_line("A", "sandbox: refused a udp socket (no udp grant)");
    refused(
        &try_in(&mut h, "A", "tcp-connect 127.0.0.1:9"),
        "tcp-connect 127.0.0.1:9",
    );
    h.wait_line("A", "sandbox: refused a tcp socket (no tcp grant)");
    let report = h.wait_event("the host's report at warn level", |e| {
        matches!(e, Event::Log { module, level: liveswap::Level::Warn, line, .. }
            if module == "A" && line.starts_with("sandbox: refused"))
    });
    assert!(
        report.to_text().starts_with("A v1.0 | warn: sandbox:"),
        "{report:?}"
    );

    // Nothing of that hurt either module.
    both_serve(&mut h, "A", "B");
    let s = status(&h);
    assert!(s.contains("grants: none"), "{s}");
    for m in ["A", "B"] {
        let st = h.rt.module(m).unwrap().status();
        assert_eq!(st.state, liveswap::ModuleState::Serving, "{m}");
        assert_eq!(st.faults, 0, "{m}");
    }
}

#[test]
fn a_granted_directory_is_readable_and_writable_only_as_granted() {
    let scratch = Scratch::new("dirs");
    let ro = scratch.dir("ro");
    let rw = scratch.dir("rw");
    std::fs::write(ro.join("a.txt"), "hello sandbox").unwrap();
    let mut h = Host::new();
    h.ok(&format!(
        "Load A {V1} grant dir {} /data ro grant dir {} /out rw grant env MODE=fast",
        ro.display(),
        rw.display()
    ));
    h.ok(&format!("Load B {V1}"));

    assert_eq!(
        try_in(&mut h, "A", "read-file /data/a.txt"),
        "read-file /data/a.txt: ok 13 bytes \"hello sandbox\""
    );
    // Read-only: no new file, no overwrite.
    refused(
        &try_in(&mut h, "A", "write-file /data/new.txt no"),
        "write-file /data/new.txt",
    );
    refused(
        &try_in(&mut h, "A", "write-file /data/a.txt no"),
        "write-file /data/a.txt",
    );
    assert!(!ro.join("new.txt").exists());
    assert_eq!(
        std::fs::read_to_string(ro.join("a.txt")).unwrap(),
        "hello sandbox"
    );
    // Read-write: the file really appears on the host.
    assert_eq!(
        try_in(&mut h, "A", "write-file /out/b.txt written by the guest"),
        "write-file /out/b.txt: ok 20 bytes"
    );
    assert_eq!(
        std::fs::read_to_string(rw.join("b.txt")).unwrap(),
        "written by the guest"
    );
    // Nothing outside the granted directories, not even through `..`.
    refused(
        &try_in(&mut h, "A", "read-file /data/../../../../etc/passwd"),
        "read-file /data/../../../../etc/passwd",
    );
    refused(
        &try_in(&mut h, "A", "read-file /etc/passwd"),
        "read-file /etc/passwd",
    );
    // The granted variable, and only it.
    assert_eq!(try_in(&mut h, "A", "env MODE"), "env MODE: ok \"fast\"");
    assert_eq!(try_in(&mut h, "A", "env PATH"), "env PATH: absent");
    // Another module has none of it.
    refused(
        &try_in(&mut h, "B", "read-file /data/a.txt"),
        "read-file /data/a.txt",
    );
    assert_eq!(try_in(&mut h, "B", "env MODE"), "env MODE: absent");
    both_serve(&mut h, "A", "B");
}

#[test]
fn granted_addresses_are_reached_and_no_others() {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(PATIENCE)).unwrap();
    let udp_addr = udp.local_addr().unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    let mut h = Host::new();
    h.ok(&format!(
        "Load A {V1} grant udp {udp_addr} grant tcp {tcp_addr}"
    ));

    let cmd = format!("udp-send {udp_addr}");
    assert_eq!(try_in(&mut h, "A", &cmd), format!("{cmd}: ok 5 bytes"));
    let mut buf = [0u8; 64];
    let (n, _) = udp.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"probe");

    let cmd = format!("tcp-connect {tcp_addr}");
    assert_eq!(
        try_in(&mut h, "A", &cmd),
        format!("{cmd}: ok connected, 6 bytes written")
    );
    // The connection is in the listener's backlog: accept returns at once.
    let (mut conn, _) = tcp.accept().unwrap();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut got = String::new();
    conn.read_to_string(&mut got).unwrap();
    assert_eq!(got, "probe\n");

    // The other protocol to the same address is not granted.
    let cmd = format!("tcp-connect {udp_addr}");
    refused(&try_in(&mut h, "A", &cmd), &cmd);
    h.wait_line(
        "A",
        &format!("sandbox: refused tcp connect to {udp_addr} (not granted)"),
    );
}

#[test]
fn a_replace_keeps_every_grant() {
    let scratch = Scratch::new("replace");
    let ro = scratch.dir("ro");
    std::fs::write(ro.join("a.txt"), "kept").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(PATIENCE)).unwrap();
    let addr = udp.local_addr().unwrap();
    let mut h = Host::new();
    h.ok(&format!(
        "Load A {V1} grant udp {addr} grant dir {} /data ro grant env MODE=fast",
        ro.display()
    ));
    let r = h.txn(&format!("Replace A {V2}"));
    assert_eq!(r.outcome, Outcome::Committed, "{}", r.to_text());

    let since = h.mark();
    h.ok(&format!(
        "Send A do \"read-file /data/a.txt; env MODE; write-file /data/b.txt no; udp-send {addr}\""
    ));
    let by_v2 = |h: &mut Host, line: &str| {
        h.wait_event_since(since, line, |e| {
            matches!(e, Event::Log { module, version, line: l, .. }
                if module == "A" && version == "2.0" && l == line)
        });
    };
    by_v2(&mut h, "read-file /data/a.txt: ok 4 bytes \"kept\"");
    by_v2(&mut h, "env MODE: ok \"fast\"");
    by_v2(&mut h, &format!("udp-send {addr}: ok 5 bytes"));
    let line = h.wait_log("A", |l| l.starts_with("write-file /data/b.txt:"));
    refused(&line, "write-file /data/b.txt");
    let mut buf = [0u8; 16];
    let (n, _) = udp.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"probe");

    let s = status(&h);
    let expected = format!(
        "grants: udp {addr}, dir {} -> /data (ro), env MODE=fast",
        ro.display()
    );
    assert!(
        s.lines()
            .skip_while(|l| !l.starts_with("A "))
            .any(|l| l.trim() == expected),
        "{s}"
    );
    assert!(s.contains("v2.0"), "{s}");
}

#[test]
fn a_grant_that_cannot_be_given_refuses_the_load() {
    let mut h = Host::new();
    let missing = Path::new("/nonexistent/liveswap-sandbox");
    let e = h.err(&format!(
        "Load A {V1} grant dir {} /data ro",
        missing.display()
    ));
    assert!(
        e.contains(&format!(
            "cannot grant `dir {} /data ro`",
            missing.display()
        )) && e.contains("No such file or directory"),
        "{e}"
    );
    assert!(h.rt.module("A").is_none());
    let e = h.err(&format!("Load A {V1} grant dir {V1} /data rw"));
    assert!(e.contains("is not a directory"), "{e}");
    assert!(h.rt.module("A").is_none());
    // In a group: nothing is loaded.
    let r = h.txn(&format!(
        "Syn_Load A {V1} B {V1} grant dir {} /data ro",
        missing.display()
    ));
    assert_eq!(r.outcome, Outcome::Refused, "{}", r.to_text());
    assert!(
        r.reason.as_deref().unwrap_or("").contains("cannot grant"),
        "{}",
        r.to_text()
    );
    assert!(h.rt.module("A").is_none() && h.rt.module("B").is_none());
    // Bad grant syntax is a parse error naming the problem.
    assert!(
        h.err(&format!("Load A {V1} grant dir /tmp /data rx"))
            .contains("`rx` is not ro or rw")
    );
    assert!(
        h.err(&format!("Load A {V1} grant env =x"))
            .contains("is not NAME=VALUE")
    );
    assert!(
        h.err(&format!("Load A {V1} grant fs /tmp"))
            .contains("cannot grant `fs`")
    );
    // And the host still loads a good module.
    h.ok(&format!("Load A {V1}"));
    h.ok("Send A do \"report\"");
    h.wait_log("A", |l| l.starts_with("report served="));
}
