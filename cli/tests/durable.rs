//! Durable hosts, as an operator meets them: a real `liveswap run` on a
//! state directory, under load, killed with SIGKILL at random moments —
//! some while a `Replace` runs, some while a 4 MB recovery point is being
//! written — and started again on the same directory each time. What is
//! checked comes from the modules' own records: the numbers each sender
//! counted as sent were each received once and in order (a probe logs
//! `GAP`/`DUP` otherwise, and its count must equal the sender's), the
//! receiver's state (its 4 MB of ballast and its counters) carried across
//! every restart, and every transaction a kill interrupted was ended,
//! committed or aborted, and said so.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// A running `liveswap run` whose stdout is collected.
struct Host {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Host {
    /// A test that fails leaves no host behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, sock: &Path, script: Option<&Path>) -> Host {
    start_with(dir, sock, script, &[])
}

fn start_with(dir: &Path, sock: &Path, script: Option<&Path>, extra: &[&str]) -> Host {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_liveswap"));
    cmd.arg("run")
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--admin")
        .arg(sock)
        .args(extra);
    if let Some(s) = script {
        cmd.arg(s);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("liveswap runs");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let lines = lines.clone();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(l);
            }
        })
    };
    Host {
        child,
        lines,
        reader: Some(reader),
    }
}

impl Host {
    /// Wait until the host has run its script (or restored) and serves.
    fn wait_ready(&self) {
        self.wait_line("-- script done");
    }

    /// Wait for a line starting with `prefix`, and return it.
    fn wait_line(&self, prefix: &str) -> String {
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            let found = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.starts_with(prefix))
                .cloned();
            if let Some(l) = found {
                return l;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no `{prefix}`: {:?}", self.lines.lock().unwrap());
    }

    /// Wait for a line starting with `prefix` and holding `part`.
    fn wait_line_with(&self, prefix: &str, part: &str) {
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if self
                .lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.starts_with(prefix) && l.contains(part))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no `{prefix}...{part}`");
    }

    /// Wait for the process to end by itself, and what it printed.
    fn wait_exit(mut self) -> (bool, Vec<String>) {
        let status = self.child.wait().unwrap();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        (
            status.success(),
            std::mem::take(&mut *self.lines.lock().unwrap()),
        )
    }

    /// SIGKILL, and what it printed.
    fn kill(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::take(&mut *self.lines.lock().unwrap())
    }

    /// SIGINT (a clean stop), and what it printed.
    fn stop(mut self) -> Vec<String> {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "a clean stop: {status}");
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        std::mem::take(&mut *self.lines.lock().unwrap())
    }
}

fn ctl(sock: &Path, args: &[&str]) -> String {
    let o = common::ctl_in(None, sock, args);
    o.stdout + &o.stderr
}

/// Stop the senders, let everything queued be served, ask each module
/// what it counted, stop the host; and check that every number sent was
/// received once, in order. Returns (numbers T sent, events PUB sent).
fn settle_and_check(host: Host, sock: &Path, mut out: Vec<String>) -> (u64, u64, Vec<String>) {
    ctl(sock, &["Send", "T", "do", "cancel t"]);
    ctl(sock, &["Send", "PUB", "do", "cancel p"]);
    // Everything queued served (a backlog can be long after many kills).
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let status = ctl(sock, &["Status"]);
        let queued: u64 = status
            .lines()
            .filter(|l| {
                ["SINK ", "SUB ", "T ", "PUB "]
                    .iter()
                    .any(|m| l.starts_with(m))
            })
            .filter_map(|l| l.split_whitespace().nth(4)?.parse::<u64>().ok())
            .sum();
        if queued == 0 {
            break;
        }
        assert!(Instant::now() < until, "still {queued} queued: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
    for m in ["T", "PUB", "SINK", "SUB"] {
        ctl(sock, &["Send", m, "do", "report"]);
        host.wait_line_with(&format!("{m} v"), " | report ");
    }
    let history = ctl(sock, &["History"]);
    out.extend(host.stop());
    if std::env::var("DURABLE_TRACE").is_ok() {
        for l in out.iter().filter(|l| {
            l.starts_with("--") || l.contains("DUP") || l.contains("GAP") || l.contains("restored")
        }) {
            eprintln!("{l}");
        }
    }
    let bad: Vec<&String> = out
        .iter()
        .filter(|l| l.contains("GAP") || l.contains("DUP"))
        .collect();
    assert!(bad.is_empty(), "numbers lost or repeated: {bad:?}");
    let sent = count(&out, "T", "sent=", "SINK");
    let seen = count(&out, "SINK", "seen=", "T");
    assert_eq!(seen, sent, "SINK saw every number T counted as sent");
    let published = count(&out, "PUB", "sent=", "event:ev");
    let heard = count(&out, "SUB", "seen=", "PUB");
    assert_eq!(heard, published, "SUB heard every event PUB counted");
    let report = out
        .iter()
        .rev()
        .find(|l| l.starts_with("SINK v") && l.contains(" | report "))
        .unwrap();
    assert!(
        report.contains("pad=4000000"),
        "SINK's state carried across every restart: {report}"
    );
    out.push(history);
    (sent, published, out)
}

/// The modules of both tests: T sends SINK a number every millisecond;
/// PUB publishes one every 5 ms to SUB. SINK carries 4 MB of state, and
/// checkpoints every 100 ms.
fn load_script(dir: &Path) -> PathBuf {
    let v2 = liveswap_guests::PROBE_V2;
    let script = dir.join("load.ls");
    std::fs::write(
        &script,
        format!(
            "SetCheckpoint 100ms\n\
             Load SINK {v2} config \"pad 4000000; quiet\"\n\
             Load SUB {v2} config \"sub PUB ev; quiet\"\n\
             Load T {v2} config \"timer t 1; tick-send SINK; quiet\"\n\
             Load PUB {v2} config \"timer p 5; tick-publish ev; quiet\"\n"
        ),
    )
    .unwrap();
    script
}

fn fresh_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("liveswap-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // The admin socket's directory: no one else may write in it.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    dir
}

/// The count `key` of `who`'s last `report` line, for `peer`.
fn count(lines: &[String], who: &str, key: &str, peer: &str) -> u64 {
    let line = lines
        .iter()
        .rev()
        .find(|l| l.starts_with(&format!("{who} v")) && l.contains(" | report "))
        .unwrap_or_else(|| panic!("{who} reported nothing: {lines:?}"));
    let field = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line}"));
    field
        .split(',')
        .find_map(|kv| kv.strip_prefix(&format!("{peer}:")))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count for {peer} in {line}"))
}

#[test]
fn kill_9_at_random_moments_loses_and_repeats_nothing() {
    let dir = fresh_dir("durable");
    let sock = dir.join("admin.sock");
    let (v2, v4) = (liveswap_guests::PROBE_V2, liveswap_guests::PROBE_V4);
    let script = load_script(&dir);

    let mut rng = Rng(0x00d1_5ab1_e5ee_d001);
    let mut out: Vec<String> = Vec::new();
    let mut replaces = 0;
    let kills = 24;
    for i in 0..kills {
        let host = start(&dir, &sock, (i == 0).then_some(script.as_path()));
        host.wait_ready();
        std::thread::sleep(Duration::from_millis(rng.between(150, 700)));
        let replace = (i % 3 == 1).then(|| {
            replaces += 1;
            // SINK is busy for a while: the Replace waits for it to reach
            // quiescence, and the kill lands in that wait (every other
            // time: SINK sleeps 1 s) or around the 4 MB hand-over and
            // the commit's write (SINK sleeps 200 ms).
            let long = replaces % 2 == 1;
            let busy = if long { "sleep 1000" } else { "sleep 200" };
            ctl(&sock, &["Send", "SINK", "do", busy]);
            let to = if replaces % 4 < 2 { v4 } else { v2 };
            let sock = sock.clone();
            let r = std::thread::spawn(move || ctl(&sock, &["Replace", "SINK", to]));
            (r, long)
        });
        if let Some((_, long)) = &replace {
            let (lo, hi) = if *long { (300, 900) } else { (100, 900) };
            std::thread::sleep(Duration::from_millis(rng.between(lo, hi)));
        }
        out.extend(host.kill());
        if let Some((r, _)) = replace {
            let _ = r.join();
        }
    }

    // A last start, to count.
    let host = start(&dir, &sock, None);
    host.wait_ready();
    let (sent, published, out) = settle_and_check(host, &sock, out);
    let history = out.last().unwrap().clone();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(sent > 1_000, "T kept sending across the restarts: {sent}");

    // Every restart said what it found; every transaction a kill cut off
    // was ended and says how.
    let restarts = out
        .iter()
        .filter(|l| l.starts_with("-- state directory") && l.contains("restored 4 module(s)"))
        .count();
    assert_eq!(restarts, kills, "every restart restored the four modules");
    let interrupted: Vec<&String> = out
        .iter()
        .filter(|l| l.contains("was interrupted by the stop"))
        .collect();
    assert!(!interrupted.is_empty(), "some kill cut a Replace off");
    for l in &interrupted {
        assert!(
            l.contains(": committed; finished") || l.contains(": not decided; aborted"),
            "{l}"
        );
    }
    for l in history.lines().filter(|l| l.contains("`Replace SINK")) {
        assert!(
            l.contains("-> committed") || l.contains("-> aborted") || l.contains("-> refused"),
            "every Replace ended decided: {l}"
        );
    }
    let committed = history
        .lines()
        .filter(|l| l.contains("`Replace SINK") && l.contains("-> committed"))
        .count();
    eprintln!(
        "{kills} kills ({replaces} during a Replace); {} transaction(s) ended by a restart, {committed} Replace(s) committed; T sent {sent}, PUB published {published}",
        interrupted.len()
    );
}

#[test]
fn ten_handoffs_in_a_row_lose_nothing_and_a_failed_one_leaves_the_old_host_serving() {
    let dir = fresh_dir("handoff");
    let sock = dir.join("admin.sock");
    let script = load_script(&dir);
    let mut host = start(&dir, &sock, Some(&script));
    host.wait_ready();
    let mut out = Vec::new();
    let mut pauses = Vec::new();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(300));
        let next = start_with(&dir, &sock, None, &["--take-over"]);
        next.wait_line("-- took over");
        let (ok, lines) = host.wait_exit();
        assert!(ok, "the old host exits cleanly once handed over: {lines:?}");
        let said = lines
            .iter()
            .find(|l| l.starts_with("-- handed over"))
            .unwrap_or_else(|| panic!("no handoff line: {lines:?}"));
        let ms: u64 = said
            .split("paused ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no pause in {said}"));
        pauses.push(ms);
        out.extend(lines);
        host = next;
        host.wait_ready();
    }

    // A new host that cannot restore every module (a pool of one
    // instance) gives up; the old one serves on, with all four.
    std::thread::sleep(Duration::from_millis(300));
    let failing = start_with(&dir, &sock, None, &["--take-over", "--pooled", "1"]);
    let (ok, lines) = failing.wait_exit();
    assert!(!ok, "the failing host exits with an error: {lines:?}");
    let again = host.wait_line("-- the handoff to pid");
    assert!(
        again.contains("failed") && again.contains("serving again"),
        "{again}"
    );
    let status = ctl(&sock, &["Status"]);
    for m in ["SINK", "SUB", "T", "PUB"] {
        assert!(status.contains(m), "{m} still loaded: {status}");
    }
    std::thread::sleep(Duration::from_millis(300));

    let (sent, published, _) = settle_and_check(host, &sock, out);
    let _ = std::fs::remove_dir_all(&dir);
    pauses.sort_unstable();
    eprintln!(
        "10 handoffs: pause p50 {} ms, max {} ms (4 modules, one with 4 MB of state); T sent {sent}, PUB published {published}",
        pauses[pauses.len() / 2],
        pauses[pauses.len() - 1]
    );
}

#[test]
fn a_full_disk_refuses_new_messages_and_never_half_writes_the_store() {
    let dir = fresh_dir("full");
    let sock = dir.join("admin.sock");
    let v2 = liveswap_guests::PROBE_V2;
    let script = dir.join("load.ls");
    // SINK's 1 MB recovery point is written at every checkpoint: the store
    // soon reaches the file-size limit the host runs under (RLIMIT_FSIZE,
    // with SIGXFSZ ignored: a write past it fails with EFBIG, as on a full
    // disk).
    std::fs::write(
        &script,
        format!(
            "SetCheckpoint 50ms\n\
             Load SINK {v2} config \"pad 1000000; quiet\"\n\
             Load T {v2} config \"timer t 1; tick-send SINK; quiet\"\n"
        ),
    )
    .unwrap();
    let state = dir.join("state");
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f 12288; exec \"$0\" run --state-dir '{}' --admin '{}' '{}'",
            state.display(),
            sock.display(),
            script.display()
        ))
        .arg(env!("CARGO_BIN_EXE_liveswap"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash runs");
    let err = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let err = err.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(pipe).lines().map_while(Result::ok) {
                err.lock().unwrap().push(l);
            }
        })
    };
    let until = Instant::now() + Duration::from_secs(60);
    let refused = loop {
        let found = err
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("new messages are refused"))
            .cloned();
        if let Some(l) = found {
            break l;
        }
        assert!(
            Instant::now() < until,
            "the store never filled: {:?}",
            err.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(refused.contains("File too large"), "{refused}");
    // New messages are refused with the reason; the host still answers.
    let sent = ctl(&sock, &["Send", "SINK", "num", "1"]);
    assert!(
        sent.contains("not accepted: the state directory cannot be written"),
        "{sent}"
    );
    let status = ctl(&sock, &["Status"]);
    assert!(
        status.contains("SINK") && status.contains("serving"),
        "{status}"
    );
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let _ = reader.join();

    // Without the limit, the store opens at its last whole commit, and the
    // pair goes on from there, every number once.
    let host = start(&dir, &sock, None);
    host.wait_ready();
    let line = host.wait_line("-- state directory");
    assert!(line.contains("restored 2 module(s)"), "{line}");
    std::thread::sleep(Duration::from_millis(300));
    ctl(&sock, &["Send", "T", "do", "cancel t"]);
    std::thread::sleep(Duration::from_millis(300));
    for m in ["T", "SINK"] {
        ctl(&sock, &["Send", m, "do", "report"]);
        host.wait_line_with(&format!("{m} v"), " | report ");
    }
    let out = host.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let bad: Vec<&String> = out
        .iter()
        .filter(|l| l.contains("GAP") || l.contains("DUP"))
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(
        count(&out, "SINK", "seen=", "T"),
        count(&out, "T", "sent=", "SINK")
    );
}
