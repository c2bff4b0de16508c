//! The demo's handoff to a fresh host process: the running router is
//! handed to a new `liveswap run --take-over` process on the demo's state
//! directory, which serves it for a while (the monitor, in the demo's
//! process, keeps listening; the new host's log lines come back through
//! its stdout), and is then taken back the same way into a fresh host in
//! the demo's process, which runs the rest of the script.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use liveswap::{Event, Level, Runtime};
use liveswap_ops::admin::Listeners;
use liveswap_ops::handoff::{self, HandoffPoint};

use super::Handoff;

/// How long either side waits for the other.
const BOUND: Duration = Duration::from_secs(60);

/// A log line of `liveswap run` (`OSPF v2 | got msg : 95 from IP v2`) as
/// the event it printed.
fn as_event(line: &str) -> Option<Event> {
    let (who, text) = line.split_once(" | ")?;
    let (module, version) = who.split_once(" v")?;
    let (level, text) = match text.split_once(": ") {
        Some(("warn", t)) => (Level::Warn, t),
        Some(("error", t)) => (Level::Error, t),
        _ => (Level::Info, text),
    };
    Some(Event::Log {
        module: module.to_string(),
        version: version.to_string(),
        level,
        line: text.to_string(),
    })
}

/// `-- state directory D (sync 10ms): restored 3 module(s) and 0 queued
/// message(s) in 4 ms` as (3, 0).
fn restored_line(line: &str) -> Option<(usize, usize)> {
    let rest = line.strip_prefix("-- state directory")?;
    let (_, rest) = rest.split_once("restored ")?;
    let (modules, rest) = rest.split_once(" module(s) and ")?;
    let (queued, _) = rest.split_once(" queued")?;
    Some((modules.parse().ok()?, queued.parse().ok()?))
}

/// Hand `rt` over to a new `bin` process on `dir`, let it serve for
/// `stay`, take the host back into a fresh `rt`. Returns both handoffs and
/// the process's pid.
pub(crate) fn round_trip(
    bin: &Path,
    dir: &Path,
    rt: &mut Arc<Runtime>,
    build: &dyn Fn() -> anyhow::Result<Arc<Runtime>>,
    events: &Sender<Event>,
    stay: Duration,
) -> anyhow::Result<(Handoff, Handoff, u32)> {
    let point = HandoffPoint::start(dir)?;
    let mut child = Command::new(bin)
        .arg("run")
        .arg("--state-dir")
        .arg(dir)
        .args(["--take-over", "--no-admin", "--verbose"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let pid = child.id();
    // What the new host said it restored.
    let said = Arc::new(std::sync::Mutex::new((0, 0)));
    let reader = {
        let out = child.stdout.take().expect("piped");
        let events = events.clone();
        let said = said.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(counts) = restored_line(&l) {
                    *said.lock().expect("poisoned") = counts;
                }
                if let Some(e) = as_event(&l) {
                    let _ = events.send(e);
                }
            }
        })
    };
    let Ok((stream, _)) = point.requests().recv_timeout(BOUND) else {
        let _ = child.kill();
        anyhow::bail!("{} did not ask to take over", bin.display());
    };
    let t0 = Instant::now();
    rt.release_state_dir();
    handoff::send_ready(&stream, &Listeners::default())?;
    rt.shutdown();
    let served = handoff::await_serving(&stream, BOUND);
    let t1 = Instant::now();
    let restored = |r: &Runtime| {
        r.restart_summary()
            .map_or((0, 0), |s| (s.modules, s.queued))
    };
    if let Err(why) = served {
        // All or nothing: this process serves again.
        *rt = build()?;
        let _ = child.wait();
        anyhow::bail!("the handoff to pid {pid} failed: {why}");
    }
    drop(point);
    std::thread::sleep(stay);
    let t2 = Instant::now();
    let (back, _) = handoff::take_over(dir, BOUND)?;
    *rt = build()?;
    handoff::answer(&back, Ok("taken back by the demo".into()));
    let t3 = Instant::now();
    let _ = child.wait();
    let _ = reader.join();
    let away = Handoff {
        window: (t0, t1),
        restored: *said.lock().expect("poisoned"),
        to: format!("pid {pid}, a fresh `liveswap run --take-over`"),
    };
    let home = Handoff {
        window: (t2, t3),
        restored: restored(rt),
        to: "a fresh host in the demo's process".into(),
    };
    Ok((away, home, pid))
}
