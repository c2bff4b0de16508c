//! The admin endpoint, driven over a real Unix socket and real TCP.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use liveswap::{Runtime, RuntimeBuilder};
use liveswap_ops::admin::{AdminOptions, AdminServer, Client, Final};

use crate::support::*;

/// A runtime with its admin endpoint on a Unix socket in a fresh
/// directory (and on TCP with a token when asked), stopped and removed on
/// drop.
pub(crate) struct Served {
    pub rt: Arc<Runtime>,
    pub server: AdminServer,
    // Dropped after the server (fields drop in order): removed once the
    // socket is no longer served.
    _dir: TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        // Stop first: its accept loop sees the flag within 20 ms.
        self.server.stop();
    }
}

pub(crate) fn served(tcp: bool) -> Served {
    let dir = TempDir::new("admin");
    let rt = Arc::new(
        RuntimeBuilder::default()
            .call_deadline(Duration::from_secs(2))
            .build()
            .unwrap(),
    );
    let server = AdminServer::start(
        rt.clone(),
        AdminOptions {
            unix: Some(dir.0.join("admin.sock")),
            tcp: tcp.then(|| "127.0.0.1:0".parse().unwrap()),
            token: tcp.then(|| "correct horse battery staple".to_string()),
            idle: None,
            ..Default::default()
        },
    )
    .unwrap();
    Served {
        rt,
        server,
        _dir: dir,
    }
}

impl Served {
    fn client(&self) -> Client {
        Client::unix(self.server.unix_path().unwrap()).unwrap()
    }
    fn raw(&self) -> UnixStream {
        UnixStream::connect(self.server.unix_path().unwrap()).unwrap()
    }
}

fn run(c: &mut Client, line: &str) -> (Final, Vec<String>) {
    let mut out = Vec::new();
    let f = c.command(line, |l| out.push(l.to_string())).unwrap();
    (f, out)
}

#[test]
fn upgrades_over_the_socket_report_their_outcome_and_exit_status() {
    let s = served(false);
    let mode = std::fs::metadata(s.server.unix_path().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the socket is for its owner only");
    let mut c = s.client();
    assert_eq!(
        run(&mut c, &format!("Load A {V1}")).0,
        Final::Ok("done".into())
    );
    let (f, out) = run(&mut c, &format!("Replace A {V2}"));
    assert_eq!(f, Final::Ok("committed".into()));
    assert_eq!(f.exit_code(), 0);
    assert!(
        out.iter()
            .any(|l| l.starts_with(".. voting: waiting for A")),
        "{out:?}"
    );
    let (f, _) = run(&mut c, &format!("Replace A {V1}"));
    assert_eq!((f.clone(), f.exit_code()), (Final::Ok("aborted".into()), 3));
    let (f, _) = run(&mut c, &format!("Replace GHOST {V1}"));
    assert_eq!((f.clone(), f.exit_code()), (Final::Ok("refused".into()), 2));
    let (f, _) = run(&mut c, "Unload GHOST");
    assert_eq!(f, Final::Err("no module named `GHOST` is loaded".into()));
    assert_eq!(f.exit_code(), 1);
    // Every command is in History with its origin and outcome.
    let (_, history) = run(&mut c, "History");
    let text = history.join("\n");
    assert!(
        text.contains("unix:1 `Replace A") && text.contains("-> committed"),
        "{text}"
    );
    assert!(
        text.contains("-> aborted") && text.contains("-> refused"),
        "{text}"
    );
    assert!(
        text.contains("`Unload GHOST` -> error: no module named"),
        "{text}"
    );
    // JSON replies, for scripts.
    run(&mut c, "Json on");
    let (f, out) = run(&mut c, &format!("Replace A {V2}"));
    assert_eq!(f, Final::Ok("committed".into()));
    let last: serde_json::Value = serde_json::from_str(out.last().unwrap()).unwrap();
    assert_eq!(last["transaction"]["outcome"], "committed");
    assert_eq!(last["transaction"]["modules"][0]["to"], "2.0");
}

#[test]
fn tcp_needs_the_right_token() {
    let s = served(true);
    let addr = s.server.tcp_addr().unwrap();
    let e = Client::tcp(addr, "wrong")
        .err()
        .expect("a wrong token is refused");
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
    // No token at all: the first line is taken as the token and refused.
    let mut raw = std::net::TcpStream::connect(addr).unwrap();
    raw.write_all(b"Status\n").unwrap();
    let mut reply = String::new();
    raw.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("ERR unauthorized"), "{reply}");
    let mut c = Client::tcp(addr, "correct horse battery staple").unwrap();
    let (f, _) = run(&mut c, &format!("Load A {V1}"));
    assert_eq!(f, Final::Ok("done".into()));
    assert!(s.rt.module("A").is_some());
}

#[test]
fn two_clients_are_served_one_command_at_a_time() {
    let s = served(false);
    let mut c1 = s.client();
    // SLOW has 20 messages of 25 ms queued: its Replace takes half a second.
    run(&mut c1, &format!("Load SLOW {V1} config \"work 25000\""));
    run(&mut c1, &format!("Load A {V1}"));
    run(&mut c1, "Send A do \"send SLOW 20\"");
    let path = s.server.unix_path().unwrap().to_path_buf();
    let first = std::thread::spawn(move || {
        let mut c = Client::unix(&path).unwrap();
        run(&mut c, &format!("Replace SLOW {V2}"))
    });
    // Wait until the Replace holds the host, then ask for something else.
    while s.rt.current_command().is_none() {
        std::thread::yield_now();
    }
    let mut c2 = s.client();
    let (f, out) = run(&mut c2, "Status");
    assert_eq!(f, Final::Ok("done".into()));
    assert!(
        out.iter()
            .any(|l| l.starts_with(".. waiting: the host is running `Replace SLOW")),
        "{out:?}"
    );
    let (f, _) = first.join().unwrap();
    assert_eq!(f, Final::Ok("committed".into()));
    // By the time Status ran, the Replace had finished: SLOW is v2.
    assert!(
        out.iter()
            .any(|l| l.starts_with("SLOW") && l.contains("v2.0")),
        "{out:?}"
    );
}

#[test]
fn malformed_input_gets_an_error_and_the_host_carries_on() {
    let s = served(false);
    let mut c = s.client();
    run(
        &mut c,
        &format!("Load A {V1} config \"timer t 2; tick-send B\""),
    );
    run(&mut c, &format!("Load B {V1}"));

    // A 1 MiB line: refused, connection closed.
    let mut raw = s.raw();
    let big = vec![b'x'; 1 << 20];
    let _ = raw.write_all(&big);
    let _ = raw.write_all(b"\n");
    let mut reply = String::new();
    let _ = BufReader::new(&raw).read_line(&mut reply);
    assert!(reply.starts_with("ERR line longer than"), "{reply}");

    // Invalid UTF-8: an error, and the session goes on.
    let mut raw = s.raw();
    raw.write_all(b"Sta\xfftus\nStatus\n").unwrap();
    let mut r = BufReader::new(raw.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line.trim_end(), "ERR the line is not UTF-8");
    let mut rest = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        rest.push_str(&line);
        if line.starts_with("OK") {
            break;
        }
    }
    assert!(rest.contains("| A "), "{rest}");

    // Half a line, then gone.
    let mut raw = s.raw();
    raw.write_all(b"Replace A ").unwrap();
    drop(raw);

    // A flood of commands on one connection: every one answered, in order.
    let mut raw = s.raw();
    let flood: String = (0..500).map(|i| format!("Send B report{i}\n")).collect();
    raw.write_all(flood.as_bytes()).unwrap();
    let r = BufReader::new(raw.try_clone().unwrap());
    let finals = r
        .lines()
        .map(|l| l.unwrap())
        .filter(|l| l.starts_with("OK") || l.starts_with("ERR"))
        .take(500)
        .count();
    assert_eq!(finals, 500);

    // The host and the other client carry on.
    let (f, _) = run(&mut c, "Status");
    assert_eq!(f, Final::Ok("done".into()));
    let b = s.rt.module("B").unwrap().status();
    assert_eq!(b.state, liveswap::ModuleState::Serving);
    assert!(b.served > 0);
}

#[test]
fn watch_streams_a_transaction_report() {
    let s = served(false);
    let mut c = s.client();
    run(&mut c, &format!("Load A {V1}"));
    let mut watcher = s.raw();
    watcher.write_all(b"Watch\n").unwrap();
    let mut r = BufReader::new(watcher.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("| watching"), "{line}");
    let (f, _) = run(&mut c, &format!("Replace A {V2}"));
    assert_eq!(f, Final::Ok("committed".into()));
    let mut seen = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        seen.push(line.clone());
        if line.starts_with("| == transaction 1 COMMITTED: Replace A") {
            break;
        }
        assert!(seen.len() < 1000, "no transaction report in {seen:?}");
    }
    watcher.write_all(b"\n").unwrap();
    line.clear();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line.starts_with("OK") {
            break;
        }
    }
    assert_eq!(line.trim_end(), "OK done");
}

fn start_at(path: PathBuf) -> std::io::Result<AdminServer> {
    let rt = Arc::new(RuntimeBuilder::default().build().unwrap());
    AdminServer::start(
        rt,
        AdminOptions {
            unix: Some(path),
            ..AdminOptions::default()
        },
    )
}

#[test]
fn a_socket_directory_another_user_could_plant_is_refused() {
    let t = TempDir::new("plant");
    // Writable by others: anyone could have put a socket there.
    let open = t.0.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = start_at(open.join("admin.sock")).err().expect("refused");
    assert!(e.to_string().contains("others may write in it"), "{e}");
    // A symbolic link to a directory of ours is refused too.
    let real = t.0.join("real");
    std::fs::create_dir(&real).unwrap();
    let link = t.0.join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let e = start_at(link.join("admin.sock")).err().expect("refused");
    assert!(e.to_string().contains("a symbolic link"), "{e}");
    // A file where the socket should be is not replaced.
    std::fs::write(real.join("admin.sock"), "not a socket").unwrap();
    let e = start_at(real.join("admin.sock")).err().expect("refused");
    assert!(e.to_string().contains("is not a socket"), "{e}");
    assert_eq!(
        std::fs::read_to_string(real.join("admin.sock")).unwrap(),
        "not a socket"
    );
    // A directory another user owns (made here as root, handed to
    // `nobody`; skipped, and said so, when the tests do not run as root).
    let theirs = t.0.join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
    let chowned = std::process::Command::new("chown")
        .args(["65534", theirs.to_str().unwrap()])
        .status()
        .is_ok_and(|s| s.success());
    if chowned {
        let e = start_at(theirs.join("admin.sock")).err().expect("refused");
        assert!(e.to_string().contains("owned by uid 65534"), "{e}");
    } else {
        eprintln!("skipped the other-owner case: chown needs root");
    }
    // A directory that does not exist yet is made 0700.
    let fresh = t.0.join("fresh").join("admin.sock");
    let mut s = start_at(fresh.clone()).expect("served");
    let mode = std::fs::metadata(fresh.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    s.stop();
}

#[test]
fn the_host_stops_even_when_its_socket_file_is_gone() {
    let t = TempDir::new("gone");
    let path = t.0.join("admin.sock");
    let mut s = start_at(path.clone()).unwrap();
    std::fs::remove_file(&path).unwrap();
    let started = std::time::Instant::now();
    s.stop();
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn idle_sessions_are_closed_and_tcp_clients_do_not_lock_out_the_socket() {
    let t = TempDir::new("idle");
    let rt = Arc::new(RuntimeBuilder::default().build().unwrap());
    let token = "a token long enough to pass".to_string();
    let short = AdminServer::start(
        rt.clone(),
        AdminOptions {
            unix: Some(t.0.join("short.sock")),
            tcp: Some("127.0.0.1:0".parse().unwrap()),
            token: Some("short".into()),
            idle: None,
            ..Default::default()
        },
    );
    let e = short.err().expect("a short token is refused");
    assert!(e.to_string().contains("at least 16"), "{e}");
    let mut server = AdminServer::start(
        rt,
        AdminOptions {
            unix: Some(t.0.join("admin.sock")),
            tcp: Some("127.0.0.1:0".parse().unwrap()),
            token: Some(token),
            idle: Some(Duration::from_millis(300)),
            ..Default::default()
        },
    )
    .unwrap();
    // Many silent TCP connections fill the TCP pool only.
    let addr = server.tcp_addr().unwrap();
    let _silent: Vec<_> = (0..20)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let mut c = Client::unix(server.unix_path().unwrap()).unwrap();
    let (f, _) = run(&mut c, "Status");
    assert_eq!(f, Final::Ok("done".into()));
    // A session that says nothing is told why it is closed.
    let mut idle = UnixStream::connect(server.unix_path().unwrap()).unwrap();
    idle.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut reply = String::new();
    idle.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("ERR idle for 300ms; closing"), "{reply}");
    server.stop();
}

/// Run `sh -c script` as the user `nobody` (uid 65534) with `setpriv`:
/// `None` when the tests do not run as root (or `setpriv` is missing).
fn as_nobody(script: &str) -> Option<std::process::Output> {
    let out = std::process::Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .args(["sh", "-c", script])
        .output()
        .ok()?;
    // setpriv itself fails (not root) with its own message.
    if String::from_utf8_lossy(&out.stderr).contains("setpriv:") {
        return None;
    }
    Some(out)
}

#[test]
fn a_second_local_user_cannot_plant_or_replace_the_admin_socket() {
    let t = TempDir::new("nobody");
    std::fs::set_permissions(&t.0, std::fs::Permissions::from_mode(0o1777)).unwrap();
    // Another user plants the socket directory first, open to all.
    let planted = t.0.join("planted");
    let Some(out) = as_nobody(&format!(
        "mkdir -m 0777 {0} && touch {0}/marker",
        planted.display()
    )) else {
        eprintln!("skipped: needs root and setpriv (util-linux) to act as a second user");
        return;
    };
    assert!(out.status.success(), "{out:?}");
    let e = start_at(planted.join("admin.sock")).err().expect("refused");
    assert!(e.to_string().contains("owned by uid 65534"), "{e}");
    // Where the host made its own directory, the other user can neither
    // replace the socket nor put anything beside it.
    let ours = t.0.join("ours").join("admin.sock");
    let mut s = start_at(ours.clone()).unwrap();
    let out = as_nobody(&format!(
        "rm -f {0}; ln -s /tmp/impostor.sock {0}; touch {1}/x; ls {1}",
        ours.display(),
        ours.parent().unwrap().display()
    ))
    .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("Permission denied"), "{said}");
    assert!(
        std::fs::symlink_metadata(&ours)
            .unwrap()
            .file_type()
            .is_socket()
    );
    let mut c = Client::unix(&ours).unwrap();
    let (f, _) = run(&mut c, "Status");
    assert_eq!(f, Final::Ok("done".into()), "the real host still answers");
    s.stop();
}
