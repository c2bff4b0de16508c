//! A hostile guest against the real `liveswap run` process, as an attacker
//! with no grants would try it: for a bounded time it issues host calls of
//! random kinds, sizes and counts (messages to itself and to a held
//! mailbox, oversized kinds and names, subscriptions, timers, long and
//! many log lines, sockets, publishes, memory exhaustion). Beside it T
//! ticks numbers into SINK. The test samples the host's resident memory
//! from /proc and checks it stays within the configured limits plus a
//! stated margin, and that SINK got every number T sent, once, in order.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Queued bytes the host may hold (`--queued-bytes`).
const QUEUED: u64 = 32 << 20;
/// Each instance's memory limit (`--memory-limit`).
const MEMORY: u64 = 16 << 20;
/// What the host may grow by beyond its state right after loading:
/// the queued-byte budget, the linear memories of its four modules and of
/// as many being rebuilt, and 64 MiB for everything else (compiled code
/// of fresh instances, the reaper's backlog, allocator slack).
const MARGIN: u64 = QUEUED + 8 * MEMORY + (64 << 20);

/// A small deterministic generator (xorshift64*): the same run each time.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn upto(&mut self, n: u64) -> u64 {
        1 + self.next() % n
    }
}

/// One random hostile probe command.
fn hostile(r: &mut Rng) -> String {
    match r.next() % 11 {
        0 => format!("blob SLOW {} {}", r.upto(300_000), r.upto(200)),
        1 => format!("blob EVIL {} {}", r.upto(300_000), r.upto(50)),
        2 => format!("long-kind SLOW {}", r.upto(100_000)),
        3 => format!("long-to {}", r.upto(2_000_000)),
        4 => format!("subs {}", r.upto(100_000)),
        5 => format!("timers {} {}", r.upto(5_000), r.upto(3)),
        6 => format!("log-long {}", r.upto(8 << 20)),
        7 => format!("log-flood {}", r.upto(20_000)),
        8 => format!("udp-sockets {}", r.upto(1_000)),
        9 => format!("publish ev {}", r.upto(2_000)),
        _ => "grow".to_string(),
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn a_hostile_guest_cannot_grow_the_host_past_its_limits_or_disturb_a_pair() {
    let dir = std::env::temp_dir().join(format!("liveswap-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let v1 = liveswap_guests::PROBE_V1;
    let mut script = format!(
        "Load SINK {v1}\n\
         Load T {v1} config \"timer t 2; tick-send SINK\"\n\
         Load SLOW {v1}\n\
         Disable SLOW\n\
         Load EVIL {v1} config \"sub EVIL ev; quiet\"\n\
         Wait 1s\n"
    );
    let mut r = Rng(0x5eed_1234_abcd_0001);
    for _ in 0..150 {
        script.push_str(&format!(
            "Send EVIL do \"{}\"\nWait 20ms\n",
            hostile(&mut r)
        ));
    }
    // T stops (a tick already queued is served first), then says how far
    // it got; then SINK says what it saw.
    script.push_str(
        "Send T do \"cancel t\"\nWait 200ms\nSend T do report\nWait 300ms\nSend SINK do report\nWait 300ms\nStatus\n",
    );
    let path = dir.join("hostile.ls");
    std::fs::write(&path, script).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_liveswap"))
        .args(["run", "--once", "--no-admin", "--call-deadline", "1s"])
        .args(["--queued-bytes", &QUEUED.to_string()])
        .args(["--mailbox-bytes", "8MiB", "--max-message", "256KiB"])
        .args(["--memory-limit", &MEMORY.to_string()])
        .args(["--log-line", "1KiB", "--log-rate", "2000"])
        .args(["--max-timers", "16", "--max-subscriptions", "100"])
        .args(["--max-resources", "64"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("liveswap runs");
    let pid = child.id();
    let spawned = Instant::now();

    // Sample the host's resident memory until it exits.
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let loaded = Arc::new(Mutex::new(None::<u64>));
    let sampler = {
        let (done, peak, loaded) = (done.clone(), peak.clone(), loaded.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            while !done.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                    // The state right after loading: before the first
                    // hostile command (the script waits 1 s there).
                    if started.elapsed() > Duration::from_millis(800) {
                        loaded.lock().unwrap().get_or_insert(kib);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let stdout = child.stdout.take().unwrap();
    let lines: Vec<String> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .collect();
    let status = child.wait().unwrap();
    let ran = spawned.elapsed();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success(), "liveswap run failed: {stderr}");

    let loaded = loaded.lock().unwrap().expect("sampled after loading") * 1024;
    let peak = peak.load(Ordering::Relaxed) * 1024;
    eprintln!(
        "host RSS: {} MiB after loading, peak {} MiB (bound {} MiB)",
        loaded >> 20,
        peak >> 20,
        (loaded + MARGIN) >> 20
    );
    assert!(
        peak <= loaded + MARGIN,
        "the host grew from {} MiB to {} MiB",
        loaded >> 20,
        peak >> 20
    );

    // T's own count of what it sent SINK, and SINK's of what it got.
    let find = |who: &str, key: &str| -> u64 {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("{who} v1.0 | report ")))
            .unwrap_or_else(|| panic!("{who} reported nothing; stderr: {stderr}"));
        let field = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {line}"));
        field
            .split(',')
            .find_map(|kv| kv.strip_prefix(if who == "T" { "SINK:" } else { "T:" }))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count in {line}"))
    };
    let sent = find("T", "sent=");
    let seen = find("SINK", "seen=");
    // Alone, T sends 500 numbers a second (a 2 ms timer) for as long as
    // the script runs before it cancels it (the whole run but its last
    // second or so): beside the hostile guest it keeps at least a quarter
    // of that pace.
    let alone = 500.0 * (ran.as_secs_f64() - 2.0);
    eprintln!("T sent {sent} numbers in a run of {ran:?} ({alone:.0} at its pace alone)");
    assert!(
        sent as f64 >= alone / 4.0,
        "T sent {sent}, under a quarter of {alone:.0}"
    );
    assert_eq!(seen, sent, "SINK saw every number T sent");
    let bad: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("SINK") && (l.contains("GAP") || l.contains("DUP")))
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
    // The hostile guest was refused along the way, not ignored: the final
    // Status counts the messages refused for a limit.
    let refused: u64 = lines
        .iter()
        .find_map(|l| {
            let (_, rest) = l.split_once("host holds: ")?;
            let (_, n) = rest.split_once("; ")?;
            n.split(' ').next()?.parse().ok()
        })
        .expect("the final Status");
    eprintln!("{refused} message(s) refused for a limit");
    assert!(refused > 0, "nothing was refused");
}
