//! The live demo: the non-stop router (`examples/router/router.ls`) run in
//! one process with a monitor, narrated, and checked. It passes only if
//! every transaction did what its `# expect` comment says, OSPF saw every
//! relay number of every sender exactly once and in order, OSPF v3 served
//! both protocols, and the monitor heard every module with no outage
//! outside a transaction.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::unbounded;

mod handoff;
pub mod monitor;
mod spread;

use liveswap::{Event, ModuleState, Outcome, Runtime, RuntimeBuilder, TransactionReport};
use liveswap_ops::Reply;
use liveswap_ops::script::Vars;
use monitor::{Heard, Monitor, Notice, Outage};

/// The router scenario, as shipped.
pub const ROUTER_SCRIPT: &str = include_str!("../../examples/router/router.ls");

/// The router spread over three hosts of a lattice, as shipped.
pub const LATTICE_SCRIPT: &str = include_str!("../../examples/router/lattice.ls");

pub use spread::LatticeDemo;

/// How to run the demo.
pub struct DemoOptions {
    /// Script variables (`GUESTS` at least; `BEAT`, `SETTLE`, `FLAP`,
    /// `ABORT_BOUND` to shorten it). `MONITOR` is set by the demo.
    pub vars: Vars,
    /// A silence longer than this in a module's packets is an outage.
    pub gap: Duration,
    /// The script to run.
    pub script: String,
    /// Where the monitor listens (port 0: any free port).
    pub monitor: SocketAddr,
    /// The admin endpoint to serve while the demo runs, if any.
    pub admin: Option<liveswap_ops::admin::AdminOptions>,
    /// The web dashboard to serve while the demo runs, if any.
    pub http: Option<liveswap_ops::web::WebOptions>,
    /// Keys whose signatures the host requires (none: not checked).
    pub trusted_keys: Vec<liveswap::signing::PublicKey>,
    /// The host's state directory. None: a fresh one under the temp
    /// directory if the script hands the host over (`#! handoff`), removed
    /// at the end; no state directory otherwise.
    pub state_dir: Option<PathBuf>,
    /// The `liveswap` binary a handoff starts as the fresh host process
    /// (which serves for `handoff_stay`, then is taken back). None: the
    /// fresh host is made in this process.
    pub host_binary: Option<PathBuf>,
    /// How long the fresh host process serves before it is taken back.
    pub handoff_stay: Duration,
    /// Spread the router over a lattice of three hosts: this process
    /// (host a) and two `liveswap run` processes (b and c).
    pub lattice: Option<LatticeDemo>,
}

/// A script line (a comment to `liveswap run`) at which the demo hands
/// the running router over to a fresh host on its state directory.
pub const HANDOFF: &str = "#! handoff";

/// A handoff the demo made, between two transactions.
#[derive(Clone, Debug)]
pub struct Handoff {
    /// From the old host stopping its modules to the new one serving.
    pub window: (Instant, Instant),
    /// Modules and queued messages the new host restored.
    pub restored: (usize, usize),
    /// The new host: `pid N` (a fresh process) or `this process`.
    pub to: String,
}

/// Something to tell the person watching.
#[derive(Clone, Debug)]
pub enum Narration {
    /// A `##` heading of the script.
    Heading(String),
    /// A command about to run.
    Command(String),
    /// What a non-transaction command answered.
    Reply(String),
    /// A transaction ended.
    Transaction(Box<TransactionReport>),
    /// A module's log line worth showing.
    Log(String),
    /// The monitor noticed something.
    Monitor(String),
}

/// One upgrade command of the scenario and what came of it.
#[derive(Clone, Debug)]
pub struct Step {
    /// The `##` heading it falls under.
    pub heading: String,
    /// What the `# expect` comment asked for: an outcome and maybe a name.
    pub expect: Option<(Outcome, Option<String>)>,
    /// `# expect committed then rolled-back`: an automatic transaction
    /// with this outcome must follow (a rollback after a broken probation).
    pub then: Option<Outcome>,
    /// The report.
    pub report: TransactionReport,
    /// When the command started and ended.
    pub window: (Instant, Instant),
}

/// The relay numbers OSPF saw from one sender.
#[derive(Clone, Debug, Default)]
pub struct RelayCheck {
    /// Numbers seen, in order.
    pub count: u64,
    /// Whether they were exactly 1, 2, 3, ...
    pub consecutive: bool,
    /// GAP or DUP lines OSPF logged.
    pub violations: Vec<String>,
}

/// What the demo saw.
#[derive(Debug)]
pub struct DemoResult {
    /// Every upgrade command.
    pub steps: Vec<Step>,
    /// Per sender to OSPF.
    pub relays: BTreeMap<String, RelayCheck>,
    /// Relay messages OSPF v3 served: (protocol 1, protocol 3).
    pub ospf_v3: (u64, u64),
    /// What the monitor heard.
    pub heard: Vec<Heard>,
    /// Every outage, with the transaction (index into `steps`) it fell in.
    pub outages: Vec<(Outage, Option<usize>)>,
    /// What did not hold.
    pub failures: Vec<String>,
    /// When the demo started, for relative times.
    pub started: Instant,
    /// The handoffs it made.
    pub handoffs: Vec<Handoff>,
    /// Shadows dropped: (module, the line that said why).
    pub shadows: Vec<(String, String)>,
    /// What each `Move` answered (on a lattice).
    pub moves: Vec<String>,
}

fn parse_expect(raw: &str) -> Option<(Outcome, Option<String>)> {
    let (_, comment) = raw.split_once("# expect ")?;
    let mut words = comment.split_whitespace();
    let outcome = match words.next()? {
        "committed" => Outcome::Committed,
        "aborted" => Outcome::Aborted,
        "rolled-back" => Outcome::RolledBack,
        _ => Outcome::Refused,
    };
    let naming = match (words.next(), words.next()) {
        (Some("naming"), Some(n)) => Some(n.to_string()),
        _ => None,
    };
    Some((outcome, naming))
}

/// `# expect committed then rolled-back` → the outcome after `then`.
fn parse_then(raw: &str) -> Option<Outcome> {
    let (_, comment) = raw.split_once("# expect ")?;
    match comment.split_once(" then ")?.1.split_whitespace().next()? {
        "rolled-back" => Some(Outcome::RolledBack),
        "aborted" => Some(Outcome::Aborted),
        _ => None,
    }
}

/// `Rollback of transaction 9: ...` → 9.
fn rolled_back_id(command: &str) -> Option<u64> {
    command
        .strip_prefix("Rollback of transaction ")?
        .split(':')
        .next()?
        .parse()
        .ok()
}

/// `got msg : 12 from IP v2 ts 123` → (sender, n, sender version, stamped).
fn parse_relay(line: &str) -> Option<(String, u64, String, bool)> {
    let rest = line.strip_prefix("got msg : ")?;
    let mut w = rest.split_whitespace();
    let n = w.next()?.parse().ok()?;
    let _from = w.next()?;
    let sender = w.next()?.to_string();
    let version = w.next()?.trim_start_matches('v').to_string();
    Some((sender, n, version, w.next() == Some("ts")))
}

/// Run the scenario. `narrate` is called from more than one thread.
pub fn run(
    opts: DemoOptions,
    narrate: Arc<dyn Fn(Narration) + Send + Sync>,
) -> anyhow::Result<DemoResult> {
    let started = Instant::now();
    let (notice_tx, notice_rx) = unbounded();
    let mut monitor = Monitor::start(opts.monitor, opts.gap, Some(notice_tx))?;
    let mut vars = opts.vars;
    vars.set("MONITOR", monitor.addr().to_string());

    let hands_over = opts.script.lines().any(|l| l.trim() == HANDOFF);
    let own_dir = (opts.state_dir.is_none() && hands_over)
        .then(|| std::env::temp_dir().join(format!("liveswap-demo-{}", std::process::id())));
    if let Some(d) = &own_dir {
        let _ = std::fs::remove_dir_all(d);
    }
    let state_dir = opts.state_dir.clone().or(own_dir.clone());
    // Every host's events, one stream (a handoff starts a new host), each
    // from its first: a restored OSPF's first relays are in it.
    let (events_tx, events) = unbounded::<Event>();
    let build = || -> anyhow::Result<Arc<Runtime>> {
        let (rt, rx) = RuntimeBuilder::default()
            .trusted_keys(opts.trusted_keys.clone())
            .state_dir(state_dir.clone())
            .build_watched()?;
        let tx = events_tx.clone();
        std::thread::spawn(move || {
            for e in rx {
                if tx.send(e).is_err() {
                    return;
                }
            }
        });
        Ok(Arc::new(rt))
    };
    let mut rt = build()?;
    let spread = match &opts.lattice {
        Some(how) => Some(spread::Spread::start(&rt, how, &events_tx, &narrate)?),
        None => None,
    };
    let mut endpoint = match opts.admin.clone() {
        None => None,
        Some(a) => match liveswap_ops::admin::AdminServer::start(rt.clone(), a) {
            Ok(e) => {
                if let Some(p) = e.unix_path() {
                    narrate(Narration::Reply(format!(
                        "admin endpoint: {} (try: liveswap ctl --connect {} Status)",
                        p.display(),
                        p.display()
                    )));
                }
                Some(e)
            }
            Err(e) => {
                narrate(Narration::Reply(format!("no admin endpoint: {e}")));
                None
            }
        },
    };
    // The dashboard, on the same address again after each handoff (the
    // port it was given the first time, if it was asked for any).
    let mut http = opts.http.clone();
    let start_web = |rt: &Arc<Runtime>, http: &mut Option<liveswap_ops::web::WebOptions>| {
        let w = http.as_mut()?;
        match liveswap_ops::web::WebServer::start(rt.clone(), w.clone()) {
            Ok(s) => {
                w.addr = s.addr();
                Some(s)
            }
            Err(e) => {
                narrate(Narration::Reply(format!("no dashboard: {e}")));
                None
            }
        }
    };
    let mut web = start_web(&rt, &mut http);
    if let Some(w) = &web {
        narrate(Narration::Reply(format!(
            "dashboard: http://{}/ (metrics: http://{}/metrics)",
            w.addr(),
            w.addr()
        )));
    }
    let seen: Arc<Mutex<Vec<Event>>> = Arc::default();
    // Transactions the host started by itself, with when they were heard.
    let automatic: Arc<Mutex<Vec<(Instant, TransactionReport)>>> = Arc::default();
    // OSPF lines to show after each command: a few, not all.
    let budget = Arc::new(AtomicUsize::new(0));
    let collector = {
        let seen = seen.clone();
        let automatic = automatic.clone();
        let budget = budget.clone();
        let narrate = narrate.clone();
        std::thread::spawn(move || {
            loop {
                crossbeam_channel::select! {
                    recv(events) -> e => {
                        let Ok(e) = e else { return };
                        if let Event::Log { module, version, line, .. } = &e {
                            let show = if line.starts_with("got msg") {
                                budget
                                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
                                    .is_ok()
                            } else {
                                !line.starts_with("recomputed")
                            };
                            if show {
                                let who = if version.is_empty() { module.clone() } else { format!("{module} v{version}") };
                                narrate(Narration::Log(format!("{who} | {line}")));
                            }
                        }
                        if let Event::Module { module, state: ModuleState::Faulted, detail, .. } = &e {
                            narrate(Narration::Log(format!("{module} FAULTED: {}", detail.clone().unwrap_or_default())));
                        }
                        if let Event::Module { module, state: state @ (ModuleState::RolledBack | ModuleState::Recovered), detail, .. } = &e {
                            narrate(Narration::Log(format!("{module} {state}: {}", detail.clone().unwrap_or_default())));
                        }
                        // Of what the other hosts say, their arrivals and groups.
                        if let Event::Progress { origin, text } = &e
                            && origin.starts_with("host ")
                            && (text.contains(" moved here ") || text.starts_with("group "))
                        {
                            narrate(Narration::Reply(format!("({origin}) {text}")));
                        }
                        if let Event::Transaction(r) = &e
                            && r.origin == "probation"
                        {
                            narrate(Narration::Transaction(r.clone()));
                            automatic.lock().expect("poisoned").push((Instant::now(), (**r).clone()));
                        }
                        seen.lock().expect("poisoned").push(e);
                    }
                    recv(notice_rx) -> n => {
                        let Ok(n) = n else { continue };
                        let text = match n {
                            Notice::Heard { module, version } => format!("monitor hears {module} v{version}"),
                            Notice::Version { module, from, to } => format!("monitor hears {module} v{from} -> v{to}"),
                            Notice::Outage(o) => format!(
                                "monitor: {} silent for {:.0} ms (from +{:.2}s)",
                                o.module,
                                o.duration().as_secs_f64() * 1000.0,
                                o.start.duration_since(started).as_secs_f64()
                            ),
                        };
                        narrate(Narration::Monitor(text));
                    }
                }
            }
        })
    };

    let mut steps = Vec::new();
    let mut heading = String::new();
    let mut failures = Vec::new();
    let mut handoffs = Vec::new();
    let mut moves = Vec::new();
    // `Shadow NAME ... # expect dropped`: (NAME, script line).
    let mut shadows = Vec::new();
    for (i, raw) in opts.script.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed == HANDOFF {
            let listeners = endpoint.as_mut().map(|e| e.hand_over()).unwrap_or_default();
            drop(web.take());
            let dir = state_dir.clone().expect("a handoff has a state directory");
            match &opts.host_binary {
                Some(bin) => {
                    narrate(Narration::Command(format!(
                        "(hand the host over to a fresh `{} run --take-over` process, and take it back after {:?})",
                        bin.display(),
                        opts.handoff_stay
                    )));
                    let (away, home, pid) = handoff::round_trip(
                        bin,
                        &dir,
                        &mut rt,
                        &build,
                        &events_tx,
                        opts.handoff_stay,
                    )?;
                    narrate(Narration::Reply(format!(
                        "pid {pid} took the router over (modules paused {:.0} ms), served it, and handed it back to a fresh host here: {} modules and {} queued messages restored (paused {:.0} ms)",
                        (away.window.1 - away.window.0).as_secs_f64() * 1000.0,
                        home.restored.0,
                        home.restored.1,
                        (home.window.1 - home.window.0).as_secs_f64() * 1000.0
                    )));
                    handoffs.push(away);
                    handoffs.push(home);
                }
                None => {
                    narrate(Narration::Command("(hand the host over)".into()));
                    let t0 = Instant::now();
                    rt.shutdown();
                    rt = build()?;
                    let t1 = Instant::now();
                    let restored = rt
                        .restart_summary()
                        .map_or((0, 0), |s| (s.modules, s.queued));
                    narrate(Narration::Reply(format!(
                        "a fresh host took the router over from {}: {} modules and {} queued messages restored, modules paused {:.0} ms",
                        dir.display(),
                        restored.0,
                        restored.1,
                        (t1 - t0).as_secs_f64() * 1000.0
                    )));
                    handoffs.push(Handoff {
                        window: (t0, t1),
                        restored,
                        to: "a fresh host in this process".into(),
                    });
                }
            }
            if let (Some(mut a), true) = (opts.admin.clone(), endpoint.is_some()) {
                a.inherited = listeners;
                endpoint = liveswap_ops::admin::AdminServer::start(rt.clone(), a).ok();
            }
            web = start_web(&rt, &mut http);
            continue;
        }
        if let Some(h) = trimmed.strip_prefix("##") {
            heading = h.trim().to_string();
            narrate(Narration::Heading(heading.clone()));
            continue;
        }
        let line = vars
            .expand(raw)
            .map_err(|e| anyhow::anyhow!("router script line {}: {e}", i + 1))?;
        let command = match liveswap_ops::command::parse(&line) {
            Ok(None) => continue,
            Ok(Some(c)) => c,
            Err(e) => anyhow::bail!("router script line {}: {e}", i + 1),
        };
        if let liveswap::Command::Shadow(s) = &command
            && raw.contains("# expect dropped")
        {
            shadows.push((s.name.clone(), i + 1));
        }
        let shown = shorten(line.split(" # ").next().unwrap_or(&line).trim(), &vars);
        let label = label(&command).unwrap_or_else(|| shown.clone());
        narrate(Narration::Command(shown.clone()));
        let t0 = Instant::now();
        let origin = format!("demo:{}", i + 1);
        let moving = matches!(command, liveswap::Command::Move { .. });
        let reply = match command {
            // A Move is run by the host that serves the module.
            liveswap::Command::Move { .. } => {
                liveswap_ops::execute_line(&rt, &line, &origin).map(|r| r.unwrap_or(Reply::Quit))
            }
            _ => rt
                .execute(command, &label, &origin)
                .map(|r| liveswap_ops::render(r).0),
        };
        let t1 = Instant::now();
        budget.store(4, Ordering::Relaxed);
        match reply {
            Ok(Reply::Transaction(report)) => {
                narrate(Narration::Transaction(report.clone()));
                steps.push(Step {
                    heading: heading.clone(),
                    expect: parse_expect(raw),
                    then: parse_then(raw),
                    report: *report,
                    window: (t0, t1),
                });
            }
            Ok(Reply::Done(msg)) | Ok(Reply::Text(msg)) => {
                if moving {
                    moves.push(msg.clone());
                }
                narrate(Narration::Reply(msg))
            }
            Ok(Reply::Quit) => break,
            Err(e) => {
                failures.push(format!("line {}: `{shown}` failed: {e}", i + 1));
                narrate(Narration::Reply(format!("error: {e}")));
                break;
            }
        }
    }
    drop(web);
    if let Some(e) = endpoint.as_mut() {
        e.stop();
    }
    if let Some(s) = spread {
        s.stop();
    }
    rt.shutdown();
    drop(rt);
    drop(events_tx);
    if let Some(d) = &own_dir {
        let _ = std::fs::remove_dir_all(d);
    }
    // Let the last packets land before the monitor stops.
    std::thread::sleep(Duration::from_millis(100));
    monitor.stop();
    let heard = monitor.snapshot();
    drop(monitor);
    let _ = collector.join();
    let events = std::mem::take(&mut *seen.lock().expect("poisoned"));

    // Each automatic transaction goes right after the one it undid.
    for (heard, r) in std::mem::take(&mut *automatic.lock().expect("poisoned")) {
        let after = rolled_back_id(&r.command)
            .and_then(|id| steps.iter().position(|s| s.report.id == id))
            .map(|i| i + 1)
            .unwrap_or(steps.len());
        let began = heard
            .checked_sub(Duration::from_micros(r.total_us))
            .unwrap_or(heard);
        let heading = steps
            .get(after.saturating_sub(1))
            .map(|s| s.heading.clone())
            .unwrap_or_default();
        steps.insert(
            after,
            Step {
                heading,
                expect: None,
                then: None,
                report: r,
                window: (began, heard),
            },
        );
    }

    // Relay numbers, from OSPF's own log.
    let mut relays: BTreeMap<String, RelayCheck> = BTreeMap::new();
    let mut numbers: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut ospf_v3 = (0, 0);
    for e in &events {
        let Event::Log {
            module,
            version,
            line,
            ..
        } = e
        else {
            continue;
        };
        if module != "OSPF" {
            continue;
        }
        if let Some((sender, n, _, stamped)) = parse_relay(line) {
            numbers.entry(sender).or_default().push(n);
            if version == "3" {
                if stamped {
                    ospf_v3.1 += 1;
                } else {
                    ospf_v3.0 += 1;
                }
            }
        } else if line.starts_with("GAP") || line.starts_with("DUP") {
            let sender = line
                .split_whitespace()
                .nth(2)
                .unwrap_or("?")
                .trim_end_matches(':');
            relays
                .entry(sender.to_string())
                .or_default()
                .violations
                .push(line.clone());
        }
    }
    for (sender, mut ns) in numbers {
        if opts.lattice.is_some() {
            // Lines from three processes, each read on its own thread,
            // may interleave out of order where OSPF moved; OSPF checks
            // the order itself (its GAP and DUP lines).
            ns.sort_unstable();
        }
        let check = relays.entry(sender).or_default();
        check.count = ns.len() as u64;
        check.consecutive = ns.iter().copied().eq(1..=ns.len() as u64);
    }

    // Outages, against the transaction windows.
    let slack = opts.gap;
    let mut outages = Vec::new();
    for h in &heard {
        for o in &h.outages {
            let within = steps
                .iter()
                .position(|s| o.start <= s.window.1 + slack && o.end + slack >= s.window.0);
            outages.push((o.clone(), within));
        }
    }

    for (n, s) in steps.iter().enumerate() {
        if let Some(then) = s.then {
            let next = steps.get(n + 1).filter(|x| x.report.origin == "probation");
            match next {
                Some(x) if x.report.outcome == then => {}
                Some(x) => failures.push(format!(
                    "transaction {} `{}` should have been followed by {}, got {} ({})",
                    n + 1,
                    s.report.command,
                    then.as_str(),
                    x.report.outcome.as_str(),
                    x.report.reason.clone().unwrap_or_default()
                )),
                None => failures.push(format!(
                    "transaction {} `{}` should have been followed by an automatic {}, none came",
                    n + 1,
                    s.report.command,
                    then.as_str()
                )),
            }
        }
        if let Some((outcome, naming)) = &s.expect {
            if s.report.outcome != *outcome {
                failures.push(format!(
                    "transaction {} `{}`: expected {}, got {} ({})",
                    n + 1,
                    s.report.command,
                    outcome.as_str(),
                    s.report.outcome.as_str(),
                    s.report.reason.clone().unwrap_or_default()
                ));
            } else if let Some(name) = naming {
                let reason = s.report.reason.clone().unwrap_or_default();
                if !reason.contains(name.as_str()) {
                    failures.push(format!(
                        "transaction {}: the reason does not name {name}: {reason}",
                        n + 1
                    ));
                }
            }
        }
    }
    let mut dropped = Vec::new();
    for (name, line) in &shadows {
        let caught = events.iter().find_map(|e| match e {
            Event::Log { module, line, .. }
                if module == name
                    && line.starts_with("shadow v")
                    && line.contains(" dropped: message ") =>
            {
                Some(line.clone())
            }
            _ => None,
        });
        if let Some(why) = caught {
            dropped.push((name.clone(), why));
        } else {
            failures.push(format!(
                "line {line}: the shadow of {name} should have been dropped at a message it served differently, and was not"
            ));
        }
    }
    for sender in ["IP", "VRRP"] {
        match relays.get(sender) {
            None => failures.push(format!("OSPF got no relay message from {sender}")),
            Some(c) if !c.consecutive || !c.violations.is_empty() => failures.push(format!(
                "relay numbers from {sender} were not consecutive: {:?}",
                c.violations
            )),
            Some(_) => {}
        }
    }
    if ospf_v3.0 == 0 || ospf_v3.1 == 0 {
        failures.push(format!(
            "OSPF v3 should serve protocol 1 and 3 messages, served {} and {}",
            ospf_v3.0, ospf_v3.1
        ));
    }
    for m in ["IP", "OSPF", "VRRP"] {
        if !heard.iter().any(|h| h.module == m) {
            failures.push(format!("the monitor never heard {m}"));
        }
    }
    let in_handoff = |o: &Outage| {
        handoffs
            .iter()
            .any(|h| o.start <= h.window.1 + slack && o.end + slack >= h.window.0)
    };
    for (o, within) in &outages {
        if within.is_none() && !in_handoff(o) {
            failures.push(format!(
                "{} was silent for {:.0} ms outside any transaction or handoff (from +{:.2}s)",
                o.module,
                o.duration().as_secs_f64() * 1000.0,
                o.start.duration_since(started).as_secs_f64()
            ));
        }
    }
    Ok(DemoResult {
        steps,
        relays,
        ospf_v3,
        heard,
        outages,
        failures,
        started,
        handoffs,
        shadows: dropped,
        moves,
    })
}

/// An upgrade command in short: `Syn_Replace OSPF ospf_v2.wasm IP ip_v2.wasm`.
fn label(c: &liveswap::Command) -> Option<String> {
    let liveswap::Command::Upgrade { kind, targets } = c else {
        return None;
    };
    let pairs: Vec<String> = targets
        .iter()
        .map(|t| {
            let file = t.path.file_name().map(|f| f.to_string_lossy().into_owned());
            format!("{} {}", t.name, file.unwrap_or_default())
        })
        .collect();
    Some(format!(
        "{} {}",
        kind.keyword(targets.len()),
        pairs.join(" ")
    ))
}

/// Show `$GUESTS/ip_v2.wasm` rather than a long absolute path.
fn shorten(line: &str, vars: &Vars) -> String {
    match vars.0.get("GUESTS") {
        Some(g) if !g.is_empty() => line.replace(g.as_str(), "$GUESTS"),
        _ => line.to_string(),
    }
}

fn us(v: Option<u64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v >= 10_000 => format!("{:.1}ms", v as f64 / 1000.0),
        Some(v) => format!("{v}µs"),
    }
}

impl DemoResult {
    /// Whether every check held.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The closing summary.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<4} {:<62} {:<11} {:<34} buffered",
            "#", "command", "outcome", "pause per module"
        );
        for s in &self.steps {
            let r = &s.report;
            let n = if r.origin == "probation" {
                "auto"
            } else {
                s.heading
                    .strip_prefix("Transaction ")
                    .and_then(|h| h.split(':').next())
                    .unwrap_or("?")
            };
            let cmd = &r.command;
            let pauses: Vec<String> = r
                .modules
                .iter()
                .map(|m| format!("{} {}", m.name, us(m.pause_us)))
                .collect();
            let buffered: Vec<String> = r
                .modules
                .iter()
                .map(|m| format!("{}", m.buffered))
                .collect();
            let _ = writeln!(
                out,
                "{:<4} {:<62} {:<11} {:<34} {}",
                n,
                cmd,
                r.outcome.as_str(),
                pauses.join(", "),
                buffered.join("/")
            );
            if let Some(reason) = &r.reason {
                let _ = writeln!(out, "     reason: {reason}");
            }
        }
        let _ = writeln!(out);
        for (sender, c) in &self.relays {
            let _ = writeln!(
                out,
                "relay numbers OSPF got from {sender:<5} 1..={:<5} {}",
                c.count,
                if c.consecutive && c.violations.is_empty() {
                    "consecutive, none lost or repeated"
                } else {
                    "BROKEN"
                }
            );
        }
        let _ = writeln!(
            out,
            "OSPF v3 served {} protocol-1 messages (VRRP v1) and {} protocol-3 messages (IP v3, timestamped)",
            self.ospf_v3.0, self.ospf_v3.1
        );
        for (module, why) in &self.shadows {
            let _ = writeln!(out, "caught before it served: {module} {why}");
        }
        for m in &self.moves {
            let _ = writeln!(out, "{m}");
        }
        let _ = writeln!(out);
        for h in &self.heard {
            let versions: Vec<String> = h.versions.iter().map(|(v, _)| format!("v{v}")).collect();
            let packets: Vec<String> = h.packets.iter().map(|(k, n)| format!("{n} {k}")).collect();
            let _ = writeln!(
                out,
                "monitor heard {:<5} {:<22} {}",
                h.module,
                versions.join(" -> "),
                packets.join(", ")
            );
        }
        if self.outages.is_empty() {
            let _ = writeln!(out, "outage windows: none");
        }
        for h in &self.handoffs {
            let _ = writeln!(
                out,
                "handoff at +{:.2}s to {}: restored {} modules and {} queued messages; modules paused {:.0} ms",
                h.window.0.duration_since(self.started).as_secs_f64(),
                h.to,
                h.restored.0,
                h.restored.1,
                (h.window.1 - h.window.0).as_secs_f64() * 1000.0
            );
        }
        for (o, within) in &self.outages {
            let during_handoff = self
                .handoffs
                .iter()
                .any(|h| o.start <= h.window.1 + Duration::from_secs(1) && o.end >= h.window.0);
            let _ = writeln!(
                out,
                "outage {:<5} {:>6.0} ms at +{:.2}s  {}",
                o.module,
                o.duration().as_secs_f64() * 1000.0,
                o.start.duration_since(self.started).as_secs_f64(),
                match within {
                    Some(i) => format!("during `{}`", self.steps[*i].report.command),
                    None if during_handoff => "during the handoff".into(),
                    None => "OUTSIDE any transaction".into(),
                }
            );
        }
        let _ = writeln!(out);
        if self.passed() {
            let _ = write!(out, "every invariant held");
        } else {
            let _ = writeln!(out, "FAILED:");
            for f in &self.failures {
                let _ = writeln!(out, "  - {f}");
            }
        }
        out
    }
}
