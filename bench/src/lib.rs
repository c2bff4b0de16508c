//! `liveswap bench`: the thesis' open performance questions (6.3 item 4),
//! measured on liveswap's own code paths with real guest components:
//! pause against state size and against backlog, group size in concurrent
//! and sequential mode, relay and fan-out throughput, and scale. Each
//! scenario prints a table and writes a CSV; three get SVG plots.
//!
//! Figures come from the host's own transaction reports (pause, quiescence)
//! and from the receiver's side: the largest gap between the starts of two
//! consecutive messages (`ModuleProxy::max_gap_us`), against the same
//! measure with no swap (the noise floor).

mod dashboard;
mod durable;
mod lattice;
mod shadow;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use plotters::prelude::*;

use liveswap::{Mode, Outcome, Runtime, RuntimeBuilder, TransactionReport};
use liveswap_ops::{Reply, ToText as _};

/// What to run.
pub struct BenchOptions {
    /// A brief run of every scenario (for the test suite).
    pub quick: bool,
    /// Where CSV and SVG files go.
    pub out: PathBuf,
    /// The probe component, version 1 (state shape 1).
    pub probe_v1: PathBuf,
    /// The probe component, version 2 (state shape 2; replaces itself).
    pub probe_v2: PathBuf,
    /// The probe component, version 4 (version 2 that traps on `audit`).
    pub probe_v4: PathBuf,
    /// Run only the scenarios with these names (all when empty).
    pub only: Vec<String>,
}

/// One result table.
#[derive(Clone, Debug)]
pub struct Table {
    /// File stem and title.
    pub name: String,
    /// What it shows.
    pub title: String,
    /// Column names.
    pub header: Vec<String>,
    /// Rows of cells.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    fn new(name: &str, title: &str, header: &[&str]) -> Self {
        Table {
            name: name.into(),
            title: title.into(),
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Aligned text.
    pub fn to_text(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(String::len).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                widths[i] = widths[i].max(c.len());
            }
        }
        let line = |cells: &[String]| {
            cells
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:>w$}", w = widths[i]))
                .collect::<Vec<_>>()
                .join("  ")
        };
        let mut out = format!("{}\n{}\n", self.title, line(&self.header));
        for r in &self.rows {
            let _ = writeln!(out, "{}", line(r));
        }
        out
    }

    fn to_csv(&self) -> String {
        let mut out = self.header.join(",") + "\n";
        for r in &self.rows {
            out += &r.join(",");
            out.push('\n');
        }
        out
    }
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

struct Bench<'a> {
    opts: &'a BenchOptions,
    v1: String,
    v2: String,
    v4: String,
}

/// Wait for `name`'s next event in `state`; its detail.
fn next_state(
    events: &crossbeam_channel::Receiver<liveswap::events::Event>,
    name: &str,
    state: liveswap::events::ModuleState,
) -> anyhow::Result<Option<String>> {
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        match events.recv_deadline(end) {
            Ok(liveswap::events::Event::Module {
                module,
                state: s,
                detail,
                ..
            }) if module == name && s == state => return Ok(detail),
            Ok(_) => {}
            Err(_) => anyhow::bail!("{name} did not reach {state} in time"),
        }
    }
}

fn runtime(epoch: bool) -> anyhow::Result<Runtime> {
    RuntimeBuilder::default()
        .mailbox_capacity(2_000_000)
        .memory_limit(512 << 20)
        .epoch_deadlines(epoch)
        .build()
}

/// A runtime whose instances come from a pool with resident memory.
fn pooled_runtime() -> anyhow::Result<Runtime> {
    RuntimeBuilder::default()
        .mailbox_capacity(2_000_000)
        .memory_limit(128 << 20)
        .pooled(Some(16))
        .build()
}

fn exec(rt: &Runtime, line: &str) -> anyhow::Result<Reply> {
    liveswap_ops::execute_line(rt, line, "bench")
        .with_context(|| format!("`{line}`"))?
        .with_context(|| format!("`{line}` is not a command"))
}

fn txn(rt: &Runtime, line: &str) -> anyhow::Result<TransactionReport> {
    match exec(rt, line)? {
        Reply::Transaction(r) if r.outcome == Outcome::Committed => Ok(*r),
        Reply::Transaction(r) => anyhow::bail!("`{line}`: {}", r.to_text()),
        other => anyhow::bail!("`{line}`: {other:?}"),
    }
}

/// Wait until `name` has served `n` messages in all.
fn served(rt: &Runtime, name: &str, n: u64) -> anyhow::Result<()> {
    let end = Instant::now() + Duration::from_secs(120);
    let proxy = rt.module(name).context("no such module")?;
    while proxy.served() < n {
        anyhow::ensure!(
            Instant::now() < end,
            "{name} did not serve {n} messages in time"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

/// Messages per second of the steady load in scenario 1.
const LOAD_RATE: u64 = 50_000;

/// Send consecutive numbers to `to` at `LOAD_RATE` until `stop`.
fn pace(rt: &Runtime, to: &str, stop: &std::sync::atomic::AtomicBool) {
    let period = Duration::from_nanos(1_000_000_000 / LOAD_RATE);
    let start = Instant::now();
    let mut n: u64 = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        n += 1;
        let mut body = Vec::with_capacity(9);
        let _ = ciborium::into_writer(&n, &mut body);
        if rt.send(to, "num", &body).is_err() {
            n -= 1;
        }
        let due = start + period * n as u32;
        while Instant::now() < due {
            std::thread::yield_now();
        }
    }
}

/// The target for a figure that should be at most `bound`, and whether
/// `value` meets it (dashes where there is none).
fn at_most(bound: Option<u64>, value: u64, unit: &str) -> (String, String) {
    match bound {
        None => ("-".into(), "-".into()),
        Some(b) => (
            format!("<= {b} {unit}"),
            if value <= b { "yes" } else { "NO" }.into(),
        ),
    }
}

/// The pause targets: p50 <= 5 µs and p99 <= 30 µs up to 1 KiB; pooled,
/// p50 <= 250 µs at 1 MiB and <= 8 ms at 16 MiB.
fn pause_target(size: u64, pooled: bool, p50: u64, p99: u64) -> (String, String) {
    match (size, pooled) {
        (s, _) if s <= 1 << 10 => (
            "<= 5 µs p50, <= 30 µs p99".into(),
            if p50 <= 5 && p99 <= 30 { "yes" } else { "NO" }.into(),
        ),
        (s, true) if s == 1 << 20 => at_most(Some(250), p50, "µs p50"),
        (s, true) if s == 16 << 20 => at_most(Some(8000), p50, "µs p50"),
        _ => at_most(None, 0, ""),
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{}MiB", n >> 20),
        n if n >= 1 << 10 => format!("{}KiB", n >> 10),
        n => format!("{n}B"),
    }
}

impl Bench<'_> {
    /// 1. Pause against state size, under a steady load.
    fn state_size(&self, say: &mut dyn FnMut(&str)) -> anyhow::Result<Table> {
        let sizes: &[u64] = if self.opts.quick {
            &[16, 1 << 10, 64 << 10]
        } else {
            &[16, 1 << 10, 64 << 10, 1 << 20, 16 << 20]
        };
        let swaps = if self.opts.quick { 10 } else { 200 };
        let mut t = Table::new(
            "pause_vs_state",
            &format!(
                "1. pause vs state size ({swaps} swaps each, under a steady {LOAD_RATE} msgs/s; µs)"
            ),
            &[
                "pad",
                "memory",
                "state_bytes",
                "load_msgs_per_s",
                "pause_p50",
                "pause_p99",
                "pause_max",
                "put_state_p50",
                "get_state_p50",
                "host_p50",
                "gap_p50",
                "gap_p99",
                "noise_gap_p50",
                "noise_gap_p99",
                "target",
                "met",
            ],
        );
        let cases = sizes.iter().flat_map(|s| [(*s, false), (*s, true)]);
        for (size, pooled) in cases {
            let memory = if pooled { "pooled" } else { "on-demand" };
            say(&format!(
                "pause vs state size: {}, {memory}",
                human_bytes(size)
            ));
            let rt = if pooled {
                pooled_runtime()?
            } else {
                runtime(true)?
            };
            exec(
                &rt,
                &format!("Load X {} config \"quiet; pad {size}\"", self.v2),
            )?;
            let x = rt.module("X").context("X")?;
            let (mut pause, mut gap, mut noise) = (Vec::new(), Vec::new(), Vec::new());
            let (mut put, mut get, mut host) = (Vec::new(), Vec::new(), Vec::new());
            let mut state_bytes = 0;
            let stop = std::sync::atomic::AtomicBool::new(false);
            let rate = std::thread::scope(|scope| -> anyhow::Result<f64> {
                // A steady stream into X, one message every 1/LOAD_RATE s.
                let feeder = scope.spawn(|| pace(&rt, "X", &stop));
                std::thread::sleep(Duration::from_millis(100));
                let served0 = x.status().served;
                let t0 = Instant::now();
                let result = (|| -> anyhow::Result<()> {
                    for _ in 0..swaps {
                        x.reset_max_gap();
                        let r = txn(&rt, &format!("Replace X {}", self.v2))?;
                        std::thread::sleep(Duration::from_millis(2));
                        gap.push(x.max_gap_us());
                        let m = &r.modules[0];
                        pause.push(m.pause_us.unwrap_or(0));
                        let (p, g) = (m.put_state_us.unwrap_or(0), m.get_state_us.unwrap_or(0));
                        put.push(p);
                        get.push(g);
                        // The pause less the guest's two state calls.
                        host.push(m.pause_us.unwrap_or(0).saturating_sub(p + g));
                        state_bytes = m.state_bytes.unwrap_or(0);
                        // The same window with no swap: the noise floor.
                        x.reset_max_gap();
                        std::thread::sleep(
                            Duration::from_millis(2)
                                + Duration::from_micros(r.total_us.min(50_000)),
                        );
                        noise.push(x.max_gap_us());
                    }
                    Ok(())
                })();
                let rate = (x.status().served - served0) as f64 / t0.elapsed().as_secs_f64();
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                let _ = feeder.join();
                result.map(|_| rate)
            })?;
            let (p50, p99) = (pct(&mut pause, 0.5), pct(&mut pause, 0.99));
            let (aim, met) = pause_target(size, pooled, p50, p99);
            t.rows.push(vec![
                human_bytes(size),
                memory.to_string(),
                state_bytes.to_string(),
                format!("{rate:.0}"),
                p50.to_string(),
                p99.to_string(),
                pct(&mut pause, 1.0).to_string(),
                pct(&mut put, 0.5).to_string(),
                pct(&mut get, 0.5).to_string(),
                pct(&mut host, 0.5).to_string(),
                pct(&mut gap, 0.5).to_string(),
                pct(&mut gap, 0.99).to_string(),
                pct(&mut noise, 0.5).to_string(),
                pct(&mut noise, 0.99).to_string(),
                aim,
                met,
            ]);
            rt.shutdown();
        }
        Ok(t)
    }

    /// Scenario 2: quiescence (delay, still serving) and pause (downtime)
    /// against the backlog pending when the vote starts.
    fn backlog(&self, say: &mut dyn FnMut(&str)) -> anyhow::Result<Table> {
        let backlogs: &[u64] = if self.opts.quick {
            &[0, 1000]
        } else {
            &[0, 1000, 100_000]
        };
        let reps = if self.opts.quick { 3 } else { 9 };
        let mut t = Table::new(
            "pause_vs_backlog",
            &format!(
                "2. quiescence vs pause against backlog, 10 µs of work a message (median of {reps}; µs)"
            ),
            &[
                "backlog",
                "pending_at_vote",
                "quiesce_p50",
                "pause_p50",
                "buffered_p50",
            ],
        );
        for &n in backlogs {
            say(&format!("pause vs backlog: {n}"));
            let rt = runtime(true)?;
            // 10 µs of work per message keeps the backlog there while the
            // new version is being prepared.
            exec(
                &rt,
                &format!("Load X {} config \"quiet; work 10\"", self.v2),
            )?;
            exec(&rt, &format!("Load F {} config quiet", self.v1))?;
            let (mut q, mut p, mut b, mut pend) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let f = rt.module("F").context("F")?;
            for _ in 0..reps {
                let before = f.status().served;
                exec(&rt, &format!("Send F do \"send X {n}\""))?;
                served(&rt, "F", before + 1)?;
                pend.push(rt.module("X").context("X")?.depth() as u64);
                let r = txn(&rt, &format!("Replace X {}", self.v2))?;
                let m = &r.modules[0];
                q.push(m.quiesce_us.unwrap_or(0));
                p.push(m.pause_us.unwrap_or(0));
                b.push(m.buffered as u64);
            }
            t.rows.push(vec![
                n.to_string(),
                pct(&mut pend, 0.5).to_string(),
                pct(&mut q, 0.5).to_string(),
                pct(&mut p, 0.5).to_string(),
                pct(&mut b, 0.5).to_string(),
            ]);
            rt.shutdown();
        }
        Ok(t)
    }

    /// 3. Group size, concurrent against sequential votes.
    fn group(&self, say: &mut dyn FnMut(&str)) -> anyhow::Result<Table> {
        let ks: &[usize] = if self.opts.quick {
            &[1, 2, 4]
        } else {
            &[1, 2, 4, 8, 16, 32]
        };
        let reps = if self.opts.quick { 3 } else { 20 };
        let mut t = Table::new(
            "group_scaling",
            &format!(
                "3. group size: Syn_Replace of k modules under load (votes concurrent, sequential, early), and Promote of k shadows (median of {reps}; µs)"
            ),
            &[
                "k",
                "mode",
                "txn_p50",
                "max_pause_p50",
                "max_pause_p99",
                "target",
                "met",
            ],
        );
        for &k in ks {
            for mode in [Mode::Concurrent, Mode::Sequential, Mode::Early] {
                say(&format!("group of {k}, {}", mode.as_str()));
                let rt = runtime(true)?;
                exec(&rt, &format!("SetMode {}", mode.as_str()))?;
                let mut feed = String::from("quiet; timer t 1");
                for i in 0..k {
                    exec(&rt, &format!("Load M{i} {} config quiet", self.v2))?;
                    feed += &format!("; tick-send M{i}");
                }
                exec(&rt, &format!("Load F {} config \"{feed}\"", self.v1))?;
                let args: Vec<String> = (0..k).map(|i| format!("M{i} {}", self.v2)).collect();
                let line = format!("Syn_Replace {}", args.join(" "));
                let (mut total, mut worst) = (Vec::new(), Vec::new());
                for _ in 0..reps {
                    let r = txn(&rt, &line)?;
                    total.push(r.total_us - r.prepare_us);
                    worst.push(
                        r.modules
                            .iter()
                            .filter_map(|m| m.pause_us)
                            .max()
                            .unwrap_or(0),
                    );
                }
                let p50 = pct(&mut worst, 0.5);
                let bound = match (mode, k) {
                    (Mode::Concurrent | Mode::Early, 8) => Some(60),
                    (Mode::Concurrent | Mode::Early, 32) => Some(250),
                    _ => None,
                };
                let (aim, met) = at_most(bound, p50, "µs p50");
                t.rows.push(vec![
                    k.to_string(),
                    mode.as_str().to_string(),
                    pct(&mut total, 0.5).to_string(),
                    p50.to_string(),
                    pct(&mut worst, 0.99).to_string(),
                    aim,
                    met,
                ]);
                rt.shutdown();
            }
            say(&format!("group of {k}, shadows promoted"));
            let (total, p50, p99) = self.group_promote(k, reps)?;
            let bound = match k {
                8 => Some(60),
                32 => Some(250),
                _ => None,
            };
            let (aim, met) = at_most(bound, p50, "µs p50");
            t.rows.push(vec![
                k.to_string(),
                "promote".to_string(),
                total.to_string(),
                p50.to_string(),
                p99.to_string(),
                aim,
                met,
            ]);
        }
        Ok(t)
    }

    /// Scenario 4: one hop (A to B), two hops (A to B to C) and publish
    /// fan-out (1 to 10), with and without deadlines, several runs each.
    fn throughput(&self, say: &mut dyn FnMut(&str)) -> anyhow::Result<Table> {
        let n: u64 = if self.opts.quick { 20_000 } else { 500_000 };
        let runs = if self.opts.quick { 2 } else { 5 };
        let mut t = Table::new(
            "throughput",
            &format!(
                "4. throughput ({n} messages per run, {runs} runs; messages/s; median, min-max)"
            ),
            &[
                "scenario",
                "epoch_deadline",
                "msgs_per_s",
                "min",
                "max",
                "ns_per_msg",
                "target",
                "met",
            ],
        );
        type Run<'s, 'o> = fn(&'s Bench<'o>, bool, u64) -> anyhow::Result<f64>;
        let scenarios: [(&str, f64, Run<'_, '_>); 3] = [
            ("one hop A->B", 2.0e6, Bench::one_hop),
            ("two hops A->B->C", 1.2e6, Bench::two_hops),
            ("publish 1->10", 1.5e6, Bench::fan_out),
        ];
        for epoch in [true, false] {
            for (name, target, run) in scenarios {
                say(&format!("{name}, deadlines {epoch}, {runs} runs"));
                // Alternating would mix the scenarios' warm-up; each runs
                // its own series back to back.
                let mut rates = Vec::new();
                for _ in 0..runs {
                    rates.push(run(self, epoch, n)?);
                }
                rates.sort_by(f64::total_cmp);
                let median = rates[rates.len() / 2];
                let (aim, met) = if epoch {
                    (
                        format!(">= {:.1}M", target / 1e6),
                        if median >= target { "yes" } else { "NO" }.to_string(),
                    )
                } else {
                    ("-".to_string(), "-".to_string())
                };
                t.rows.push(vec![
                    name.into(),
                    epoch.to_string(),
                    format!("{median:.0}"),
                    format!("{:.0}", rates[0]),
                    format!("{:.0}", rates[rates.len() - 1]),
                    format!("{:.0}", 1e9 / median),
                    aim,
                    met,
                ]);
            }
        }
        Ok(t)
    }

    /// A sends `n` numbers to B (in batches of sends); B's messages/s.
    fn one_hop(&self, epoch: bool, n: u64) -> anyhow::Result<f64> {
        self.chain(epoch, n, &["B"])
    }

    /// A sends `n` numbers to B, which passes each on to C; C's
    /// messages/s.
    fn two_hops(&self, epoch: bool, n: u64) -> anyhow::Result<f64> {
        self.chain(epoch, n, &["B", "C"])
    }

    /// A sends `n` numbers to the first of `hops`, each of which passes
    /// every number on to the next; the last one's messages/s.
    fn chain(&self, epoch: bool, n: u64, hops: &[&str]) -> anyhow::Result<f64> {
        let rt = runtime(epoch)?;
        for (i, hop) in hops.iter().enumerate().rev() {
            let config = match hops.get(i + 1) {
                Some(next) => format!("\"quiet; relay {next}\""),
                None => "quiet".to_string(),
            };
            exec(&rt, &format!("Load {hop} {} config {config}", self.v1))?;
        }
        exec(&rt, &format!("Load A {} config quiet", self.v1))?;
        let t0 = Instant::now();
        exec(&rt, &format!("Send A do \"send {} {n}\"", hops[0]))?;
        served(&rt, hops[hops.len() - 1], n)?;
        let rate = n as f64 / t0.elapsed().as_secs_f64();
        rt.shutdown();
        Ok(rate)
    }

    /// P publishes `n / 10` events to 10 subscribers; deliveries/s.
    fn fan_out(&self, epoch: bool, n: u64) -> anyhow::Result<f64> {
        let rt = runtime(epoch)?;
        for i in 0..10 {
            exec(
                &rt,
                &format!("Load S{i} {} config \"quiet; sub P e\"", self.v1),
            )?;
        }
        exec(&rt, &format!("Load P {} config quiet", self.v1))?;
        let per = n / 10;
        let t0 = Instant::now();
        exec(&rt, &format!("Send P do \"publish e {per}\""))?;
        for i in 0..10 {
            served(&rt, &format!("S{i}"), per)?;
        }
        let rate = (per * 10) as f64 / t0.elapsed().as_secs_f64();
        rt.shutdown();
        Ok(rate)
    }

    /// Scenario 6, faults: rebuilding a trapped module from its recovery
    /// point, and an automatic rollback after a trap in probation, against
    /// the number of messages logged since the recovery point.
    fn faults(&self, say: &mut dyn FnMut(&str)) -> anyhow::Result<Table> {
        let logs: &[u64] = if self.opts.quick {
            &[100]
        } else {
            &[0, 1000, 9000]
        };
        let mut t = Table::new(
            "faults",
            "6. faults: recovery and automatic rollback against messages logged since the recovery point",
            &[
                "logged",
                "recovery_ms",
                "rebuilds",
                "rollback_total_ms",
                "rollback_pause_us",
            ],
        );
        for &n in logs {
            say(&format!("faults: {n} logged messages"));
            let rt = runtime(true)?;
            let events = rt.watch();
            exec(&rt, "SetCheckpoint 0")?;
            exec(&rt, &format!("Load B {} config quiet", self.v1))?;
            exec(&rt, &format!("Load A {} config quiet", self.v1))?;
            exec(&rt, &format!("Send A do \"send B {n}\""))?;
            served(&rt, "B", n)?;
            // The trap recurs on the retry, so a recovery here rebuilds
            // twice: once to retry the message, once without it.
            exec(&rt, "Send B do trap")?;
            let detail = next_state(&events, "B", liveswap::events::ModuleState::Recovered)?
                .unwrap_or_default();
            let us: f64 = detail
                .split(" in ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);

            exec(&rt, "SetProbation 1m")?;
            txn(&rt, &format!("Replace B {}", self.v4))?;
            let before = rt.module("B").context("B")?.status().served;
            exec(&rt, &format!("Send A do \"send B {n}\""))?;
            served(&rt, "B", before + n)?;
            exec(&rt, "Send B audit x")?;
            let end = Instant::now() + Duration::from_secs(120);
            let back = loop {
                match events.recv_deadline(end) {
                    Ok(liveswap::events::Event::Transaction(r)) if r.origin == "probation" => {
                        break r;
                    }
                    Ok(_) => {}
                    Err(_) => anyhow::bail!("no rollback within 120 s"),
                }
            };
            anyhow::ensure!(
                back.outcome == Outcome::RolledBack,
                "rollback: {}",
                back.to_text()
            );
            t.rows.push(vec![
                n.to_string(),
                format!("{:.2}", us / 1000.0),
                "2".into(),
                format!("{:.2}", back.total_us as f64 / 1000.0),
                back.modules[0].pause_us.unwrap_or(0).to_string(),
            ]);
            rt.shutdown();
        }
        Ok(t)
    }

    /// 5. Many modules on one host.
    fn scale(&self, say: &mut dyn FnMut(&str)) -> anyhow::Result<Table> {
        let counts: &[usize] = if self.opts.quick { &[20] } else { &[100, 1000] };
        let mut t = Table::new(
            "scale",
            "5. scale: modules on one host",
            &[
                "modules",
                "rss_per_module_KiB",
                "rss_total_MiB",
                "load_us_per_module",
                "swap_pause_us",
            ],
        );
        for &n in counts {
            say(&format!("scale: {n} modules"));
            let rt = runtime(true)?;
            // Compile once before measuring.
            exec(&rt, &format!("Load WARM {} config quiet", self.v1))?;
            exec(&rt, "Unload WARM").ok();
            exec(&rt, &format!("Load KEEP {} config quiet", self.v2))?;
            let before = rss_bytes();
            let t0 = Instant::now();
            for i in 0..n {
                exec(&rt, &format!("Load M{i} {} config quiet", self.v1))?;
            }
            let load = t0.elapsed();
            let after = rss_bytes();
            exec(
                &rt,
                &format!(
                    "Load F {} config \"quiet; timer t 1; tick-send M0\"",
                    self.v1
                ),
            )?;
            std::thread::sleep(Duration::from_millis(50));
            let mut pauses = Vec::new();
            for _ in 0..5 {
                let r = txn(&rt, &format!("Replace M0 {}", self.v2))?;
                pauses.push(r.modules[0].pause_us.unwrap_or(0));
            }
            t.rows.push(vec![
                n.to_string(),
                format!("{}", after.saturating_sub(before) / n as u64 / 1024),
                format!("{}", after >> 20),
                format!("{}", load.as_micros() / n as u128),
                pct(&mut pauses, 0.5).to_string(),
            ]);
            rt.shutdown();
        }
        Ok(t)
    }
}

fn num(cell: &str) -> f64 {
    cell.parse().unwrap_or(0.0)
}

/// A log-log line plot of `series`.
fn plot(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> anyhow::Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("plotting {}: {e}", path.display());
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let xs = series.iter().flat_map(|s| s.1.iter().map(|p| p.0));
    let ys = series.iter().flat_map(|s| s.1.iter().map(|p| p.1));
    let x_max = xs.fold(1.0f64, f64::max) * 1.5;
    let y_max = ys.fold(1.0f64, f64::max) * 1.5;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((1.0f64..x_max).log_scale(), (1.0f64..y_max).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(|e| err(&e))?;
    let colors = [&BLUE, &RED, &GREEN, &MAGENTA, &BLACK];
    for (i, (name, pts)) in series.iter().enumerate() {
        let c = colors[i % colors.len()];
        let pts: Vec<(f64, f64)> = pts.iter().map(|(x, y)| (x.max(1.0), y.max(1.0))).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), c))
            .map_err(|e| err(&e))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c));
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 3, c.filled())))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

fn plots(out: &Path, tables: &[Table]) -> anyhow::Result<()> {
    let by = |name: &str| tables.iter().find(|t| t.name == name);
    if let Some(t) = by("pause_vs_state") {
        let col = |memory: &str, c: usize| -> Vec<(f64, f64)> {
            t.rows
                .iter()
                .filter(|r| r[1] == memory)
                .map(|r| (num(&r[2]), num(&r[c])))
                .collect()
        };
        plot(
            &out.join("pause_vs_state.svg"),
            "swap pause vs state size",
            "state handed over (bytes)",
            "µs",
            &[
                ("pause p50, on-demand memory".into(), col("on-demand", 4)),
                ("pause p99, on-demand memory".into(), col("on-demand", 5)),
                ("pause p50, pooled memory".into(), col("pooled", 4)),
                ("receiver gap p50, pooled".into(), col("pooled", 7)),
                ("noise gap p50".into(), col("on-demand", 9)),
            ],
        )?;
    }
    if let Some(t) = by("pause_vs_backlog") {
        let col = |c: usize| -> Vec<(f64, f64)> {
            t.rows
                .iter()
                .map(|r| (num(&r[1]).max(1.0), num(&r[c])))
                .collect()
        };
        plot(
            &out.join("pause_vs_backlog.svg"),
            "quiescence (delay) vs pause (downtime) against backlog",
            "messages pending at the vote",
            "µs",
            &[
                ("time to quiescence".into(), col(2)),
                ("pause".into(), col(3)),
            ],
        )?;
    }
    if let Some(t) = by("durable_restart") {
        let mut logs: Vec<&str> = t.rows.iter().map(|r| r[1].as_str()).collect();
        logs.dedup();
        logs.sort_unstable();
        logs.dedup();
        let series: Vec<(String, Vec<(f64, f64)>)> = logs
            .iter()
            .map(|l| {
                let pts = t
                    .rows
                    .iter()
                    .filter(|r| r[1] == *l)
                    .map(|r| (num(&r[0]), num(&r[2])))
                    .collect();
                (format!("{l} messages logged per module"), pts)
            })
            .collect();
        plot(
            &out.join("durable_restart.svg"),
            "restart after a crash: until every module serves again",
            "modules",
            "ms",
            &series,
        )?;
    }
    if let Some(t) = by("durable_handoff") {
        let col = |c: usize| -> Vec<(f64, f64)> {
            t.rows.iter().map(|r| (num(&r[0]), num(&r[c]))).collect()
        };
        plot(
            &out.join("durable_handoff.svg"),
            "handoff pause (in process), 1 KiB of state per module",
            "modules",
            "ms",
            &[("p50".into(), col(2)), ("max".into(), col(4))],
        )?;
    }
    if let Some(t) = by("group_scaling") {
        let pick = |mode: &str, c: usize| -> Vec<(f64, f64)> {
            t.rows
                .iter()
                .filter(|r| r[1] == mode)
                .map(|r| (num(&r[0]), num(&r[c])))
                .collect()
        };
        plot(
            &out.join("group_scaling.svg"),
            "largest pause in a Syn_Replace of k modules",
            "k",
            "µs (p50)",
            &[
                ("concurrent".into(), pick("concurrent", 3)),
                ("sequential".into(), pick("sequential", 3)),
                ("promote of k shadows".into(), pick("promote", 3)),
            ],
        )?;
    }
    Ok(())
}

/// Run every scenario; write `<name>.csv` and plots into `opts.out`.
pub fn run(opts: &BenchOptions, say: &mut dyn FnMut(&str)) -> anyhow::Result<Vec<Table>> {
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let b = Bench {
        opts,
        v1: opts.probe_v1.display().to_string(),
        v2: opts.probe_v2.display().to_string(),
        v4: opts.probe_v4.display().to_string(),
    };
    let mut tables = Vec::new();
    type Scenario<'b> = fn(&Bench<'b>, &mut dyn FnMut(&str)) -> anyhow::Result<Table>;
    let scenarios: [(&str, Scenario<'_>); 13] = [
        ("pause_vs_state", Bench::state_size),
        ("pause_vs_backlog", Bench::backlog),
        ("group_scaling", Bench::group),
        ("throughput", Bench::throughput),
        ("scale", Bench::scale),
        ("faults", Bench::faults),
        ("durable_relay", Bench::durable_relay),
        ("durable_restart", Bench::durable_restart),
        ("durable_handoff", Bench::durable_handoff),
        ("shadow_promote", Bench::shadow),
        ("shadow_cost", Bench::shadow_cost),
        ("lattice", Bench::lattice),
        ("dashboard", Bench::dashboard),
    ];
    for o in &opts.only {
        anyhow::ensure!(
            scenarios.iter().any(|(n, _)| n == o),
            "no scenario named `{o}` (known: {})",
            scenarios.map(|(n, _)| n).join(", ")
        );
    }
    for (name, s) in scenarios {
        // The dashboard's cost starts a browser: only when asked for.
        let asked = opts.only.iter().any(|o| o == name);
        if (!opts.only.is_empty() || name == "dashboard") && !asked {
            continue;
        }
        let t = s(&b, say)?;
        say(&t.to_text());
        std::fs::write(opts.out.join(format!("{}.csv", t.name)), t.to_csv())?;
        tables.push(t);
    }
    plots(&opts.out, &tables)?;
    let all: Vec<String> = tables.iter().map(Table::to_text).collect();
    std::fs::write(opts.out.join("summary.txt"), all.join("\n"))?;
    Ok(tables)
}
