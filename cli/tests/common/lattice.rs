//! A lattice for the tests: a real `nats-server` on a free loopback port
//! (token auth), `liveswap run` processes joined to it, and what they say.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{BIN, Proc, ctl_in};

pub const TOKEN: &str = "lattice-token-for-the-test";

pub fn nats_server() -> PathBuf {
    let found = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    found.expect(
        "nats-server is missing: install Debian's nats-server (apt-get install nats-server)",
    )
}

/// `nats-server` on `port`, asking for the test's token; returns once it
/// accepts connections.
pub fn start_nats(dir: &Path, port: u16, extra: &[&str]) -> Proc {
    let log = std::fs::File::create(
        dir.join(format!("nats-{}.log", Instant::now().elapsed().as_nanos())),
    )
    .unwrap();
    let child = Command::new(nats_server())
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "--auth", TOKEN])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("nats-server starts");
    let until = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < until,
            "nats-server never listened on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Proc(child)
}

/// `liveswap run` as host `id` of the lattice on `port`, its output in
/// `dir/<id>.out`.
pub fn start_host(dir: &Path, port: u16, id: &str, script: &str) -> Proc {
    start_host_with(dir, port, id, script, &[])
}

pub fn start_host_with(dir: &Path, port: u16, id: &str, script: &str, extra: &[&str]) -> Proc {
    start_host_env(dir, port, (id, script), extra, &[])
}

/// [`start_host_with`], with `envs` set; the output is appended to.
pub fn start_host_env(
    dir: &Path,
    port: u16,
    (id, script): (&str, &str),
    extra: &[&str],
    envs: &[(&str, &str)],
) -> Proc {
    let path = dir.join(format!("{id}.ls"));
    std::fs::write(&path, script).unwrap();
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{id}.out")))
        .unwrap();
    let child = Command::new(BIN)
        .arg("run")
        .arg("--admin")
        .arg(dir.join(format!("{id}.sock")))
        .args(["--lattice", &format!("nats://127.0.0.1:{port}")])
        .args(["--lattice-name", "test", "--host-id", id])
        .arg("--lattice-token-file")
        .arg(dir.join("token"))
        .args(extra)
        .envs(envs.iter().copied())
        .arg(&path)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("liveswap runs");
    Proc(child)
}

pub fn ctl(dir: &Path, id: &str, args: &[&str]) -> String {
    let o = ctl_in(None, &dir.join(format!("{id}.sock")), args);
    o.stdout + &o.stderr
}

/// Wait until host `id`'s `Status` satisfies `f`; how long it took.
pub fn status_until(dir: &Path, id: &str, what: &str, f: impl Fn(&str) -> bool) -> Duration {
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(60);
    loop {
        let s = ctl(dir, id, &["Status"]);
        if f(&s) {
            return t0.elapsed();
        }
        assert!(
            Instant::now() < until,
            "host {id} never showed {what}:\n{s}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The row of host `host` in a `Status`'s lattice table.
pub fn host_row<'a>(status: &'a str, host: &str) -> Option<&'a str> {
    let table = status.split("HOST ").nth(1)?;
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(host))
}

pub fn output(dir: &Path, id: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{id}.out"))).unwrap_or_default()
}

/// The count `key` (`sent=` or `seen=`) for `peer` on `who`'s last report.
pub fn count(out: &str, who: &str, key: &str, peer: &str) -> u64 {
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with(&format!("{who} v")) && l.contains(" | report "))
        .unwrap_or_else(|| panic!("{who} reported nothing:\n{out}"));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|f| {
            f.split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{peer}:")))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {key}{peer} in {line}"))
}

pub fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("liveswap-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    dir
}
