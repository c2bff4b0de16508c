//! Scenario 9, the lattice: two hosts — two runtimes of this process, each
//! joined through a real `nats-server` on a free loopback port — and the
//! relay A -> B with A on one host and B on the other, against the same
//! relay on one host (alternating, one sitting); and the latency of one
//! message, sent and then waited for, across hosts and on one host.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use liveswap::Runtime;
use liveswap::lattice::{Lattice, LatticeOptions};

use std::sync::atomic::{AtomicBool, Ordering};

use liveswap_ops::Reply;

use super::{Bench, Table, exec, pace, pct, runtime, served, txn};

/// The NATS server the scenario starts, stopped when it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nats_server() -> Option<&'static str> {
    ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

/// `nats-server` on a free port, with JetStream (groups spanning hosts
/// record their decisions there) in a fresh directory.
fn start_server(path: &str) -> anyhow::Result<(Server, u16)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let store = std::env::temp_dir().join(format!("liveswap-bench-js-{port}"));
    let _ = std::fs::remove_dir_all(&store);
    let child = Command::new(path)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(&store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {path}"))?;
    let server = Server(child);
    let end = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(Instant::now() < end, "nats-server never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((server, port))
}

/// Two hosts `a` and `b` of one lattice, each seeing the other.
struct Pair {
    a: (Runtime, Lattice),
    b: (Runtime, Lattice),
}

impl Pair {
    fn join(port: u16, lattice: &str) -> anyhow::Result<Pair> {
        let url = format!("nats://127.0.0.1:{port}");
        let host = |id: &str| -> anyhow::Result<(Runtime, Lattice)> {
            let rt = runtime(true)?;
            let mut o = LatticeOptions::new(&url, lattice, id);
            o.outbox = 4_000_000;
            let l = Lattice::join(&rt, o)?;
            Ok((rt, l))
        };
        Ok(Pair {
            a: host("a")?,
            b: host("b")?,
        })
    }

    /// Until host `a` routes `name` to host `b`.
    fn routed(&self, name: &str) -> anyhow::Result<()> {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.a.1.view();
            let there = v
                .hosts
                .iter()
                .any(|h| h.id == "b" && h.alive && h.modules.iter().any(|m| m == name));
            if there {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < end, "host a never saw {name} on b");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop(self) {
        for (rt, l) in [self.a, self.b] {
            l.leave();
            rt.shutdown();
        }
    }
}

/// `n` numbers from A to B: on one host, or A on host a and B on host b.
fn relay(bench: &Bench<'_>, n: u64, across: Option<u16>) -> anyhow::Result<f64> {
    let load_b = |rt: &Runtime| exec(rt, &format!("Load B {} config quiet", bench.v1));
    let load_a = |rt: &Runtime| exec(rt, &format!("Load A {} config quiet", bench.v1));
    let run = |from: &Runtime, to: &Runtime| -> anyhow::Result<f64> {
        let t0 = Instant::now();
        exec(from, &format!("Send A do \"send B {n}\""))?;
        served(to, "B", n)?;
        Ok(n as f64 / t0.elapsed().as_secs_f64())
    };
    match across {
        None => {
            let rt = runtime(true)?;
            load_b(&rt)?;
            load_a(&rt)?;
            let rate = run(&rt, &rt);
            rt.shutdown();
            rate
        }
        Some(port) => {
            let pair = Pair::join(port, &format!("relay{}", rand_id()))?;
            load_b(&pair.b.0)?;
            load_a(&pair.a.0)?;
            pair.routed("B")?;
            let rate = run(&pair.a.0, &pair.b.0);
            pair.stop();
            rate
        }
    }
}

/// One message at a time from the administrator of `from` to B on `to`,
/// each waited for (B's served count, spun on): its latencies in µs.
fn latencies(from: &Runtime, to: &Runtime, samples: usize) -> anyhow::Result<Vec<u64>> {
    let proxy = to.module("B").context("no B")?;
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples {
        let before = proxy.served();
        let t0 = Instant::now();
        from.send("B", "noop", b"")?;
        let end = t0 + Duration::from_secs(10);
        while proxy.served() == before {
            anyhow::ensure!(Instant::now() < end, "message {i} never served");
            std::hint::spin_loop();
        }
        out.push(t0.elapsed().as_micros() as u64);
    }
    Ok(out)
}

fn rand_id() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        % 1_000_000
}

impl Bench<'_> {
    /// Scenario 9: the relay and one message's latency, across two hosts
    /// of a lattice and on one host.
    pub(super) fn lattice(&self, say: &mut dyn FnMut(&str)) -> anyhow::Result<Table> {
        let n: u64 = if self.opts.quick { 5_000 } else { 200_000 };
        let runs = if self.opts.quick { 2 } else { 5 };
        let samples = if self.opts.quick { 200 } else { 5_000 };
        let mut t = Table::new(
            "lattice",
            &format!(
                "9. lattice: two hosts on a local nats-server ({n} messages per relay run, {runs} runs alternating; one message's latency over {samples} samples)"
            ),
            &[
                "figure",
                "one_host",
                "across_hosts",
                "spread_across",
                "target",
                "met",
            ],
        );
        let Some(server) = nats_server() else {
            say("lattice: skipped, nats-server is not installed (apt-get install nats-server)");
            t.rows.push(vec![
                "skipped: nats-server is not installed (apt-get install nats-server)".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
            return Ok(t);
        };
        let (_server, port) = start_server(server)?;
        let (mut local, mut across) = (Vec::new(), Vec::new());
        for i in 0..runs {
            say(&format!("lattice relay, run {} of {runs}", i + 1));
            local.push(relay(self, n, None)?);
            across.push(relay(self, n, Some(port))?);
        }
        local.sort_by(f64::total_cmp);
        across.sort_by(f64::total_cmp);
        let median = |v: &[f64]| v[v.len() / 2];
        let target = 100_000.0;
        t.rows.push(vec![
            "relay A->B, msgs/s (median)".into(),
            format!("{:.0}", median(&local)),
            format!("{:.0}", median(&across)),
            format!("{:.0}-{:.0}", across[0], across[across.len() - 1]),
            ">= 100000 across".into(),
            if median(&across) >= target {
                "yes"
            } else {
                "NO"
            }
            .into(),
        ]);
        say("lattice latency");
        let rt = runtime(true)?;
        exec(&rt, &format!("Load B {} config quiet", self.v1))?;
        let mut one = latencies(&rt, &rt, samples)?;
        rt.shutdown();
        let pair = Pair::join(port, "latency")?;
        exec(&pair.b.0, &format!("Load B {} config quiet", self.v1))?;
        pair.routed("B")?;
        let mut two = latencies(&pair.a.0, &pair.b.0, samples)?;
        pair.stop();
        for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
            t.rows.push(vec![
                format!("one message's latency {label}, µs"),
                pct(&mut one, p).to_string(),
                pct(&mut two, p).to_string(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for k in [3, 9] {
            say(&format!("lattice group of {k} over three hosts"));
            let reps = if self.opts.quick { 3 } else { 15 };
            let [(mut one_t, mut one_p), (mut t3, mut p3)] = self.groups(port, k, reps)?;
            let (one, over) = (pct(&mut one_t, 0.5), pct(&mut t3, 0.5));
            t.rows.push(vec![
                format!("Syn_Replace of {k} modules ({} per host across), vote to end p50, µs ({reps} runs each, alternating)", k / 3),
                one.to_string(),
                over.to_string(),
                format!("{}-{}", t3[0], t3[t3.len() - 1]),
                "<= 3x one host".into(),
                if over <= 3 * one { "yes" } else { "NO" }.into(),
            ]);
            t.rows.push(vec![
                format!("Syn_Replace of {k} modules, largest pause p50, µs"),
                pct(&mut one_p, 0.5).to_string(),
                pct(&mut p3, 0.5).to_string(),
                format!("{}-{}", p3[0], p3[p3.len() - 1]),
                "-".into(),
                "-".into(),
            ]);
        }
        say("lattice swap and move pauses");
        let moves = if self.opts.quick { 4 } else { 20 };
        let (mut swaps, mut moved) = self.pauses(port, moves)?;
        t.rows.push(vec![
            "Replace of the receiver under a relay from the other host, pause p50 / p99, µs".into(),
            "-".into(),
            format!("{} / {}", pct(&mut swaps, 0.5), pct(&mut swaps, 0.99)),
            format!("{}-{}", swaps[0], swaps[swaps.len() - 1]),
            "-".into(),
            "-".into(),
        ]);
        let p50 = pct(&mut moved, 0.5);
        t.rows.push(vec![
            format!("Move of a module with 1 KiB of state between the hosts, under a relay, pause p50 / p99, µs ({moves} moves)"),
            "-".into(),
            format!("{p50} / {}", pct(&mut moved, 0.99)),
            format!("{}-{}", moved[0], moved[moved.len() - 1]),
            "<= 5000 p50".into(),
            if p50 <= 5000 { "yes" } else { "NO" }.into(),
        ]);
        Ok(t)
    }

    /// A on host a sends B (1 KiB of state) numbers at the steady rate;
    /// B is replaced on its host, then moved from host to host, `n` times
    /// each: the pauses in µs (Replace from its report, Move as it said).
    fn pauses(&self, port: u16, n: usize) -> anyhow::Result<(Vec<u64>, Vec<u64>)> {
        let pair = Pair::join(port, &format!("pauses{}", rand_id()))?;
        let hosts = [&pair.a.0, &pair.b.0];
        exec(
            hosts[1],
            &format!("Load B {} config \"quiet; pad 1024\"", self.v2),
        )?;
        exec(hosts[0], &format!("Load A {} config quiet", self.v1))?;
        pair.routed("B")?;
        let stop = AtomicBool::new(false);
        let result = std::thread::scope(|s| {
            s.spawn(|| pace(hosts[0], "B", &stop));
            let mut swaps = Vec::new();
            for _ in 0..n {
                std::thread::sleep(Duration::from_millis(20));
                swaps.push(
                    txn(hosts[1], &format!("Replace B {}", self.v2))?.modules[0]
                        .pause_us
                        .unwrap_or(0),
                );
            }
            let mut moved = Vec::new();
            let ids = ["a", "b"];
            for i in 0..n {
                std::thread::sleep(Duration::from_millis(20));
                let (from, to) = (1 - i % 2, i % 2);
                let said = exec(hosts[from], &format!("Move B {}", ids[to]))?;
                moved.push(moved_pause(&said)?);
            }
            stop.store(true, Ordering::Relaxed);
            Ok::<_, anyhow::Error>((swaps, moved))
        });
        pair.stop();
        result
    }
}

impl Bench<'_> {
    /// `Syn_Replace` of `k` idle modules, all on one host, and spread over
    /// three hosts of a lattice (coordinated by host a), `reps` times each,
    /// alternating: for each, the time from the end of preparing to the
    /// end, and the largest pause, in µs.
    fn groups(
        &self,
        port: u16,
        k: usize,
        reps: usize,
    ) -> anyhow::Result<[(Vec<u64>, Vec<u64>); 2]> {
        let line = (0..k).fold("Syn_Replace".to_string(), |l, i| {
            format!("{l} M{i} {}", self.v2)
        });
        let one = runtime(true)?;
        for i in 0..k {
            exec(&one, &format!("Load M{i} {} config quiet", self.v2))?;
        }
        let url = format!("nats://127.0.0.1:{port}");
        let name = format!("groups{}", rand_id());
        let mut hosts = Vec::new();
        for id in ["a", "b", "c"] {
            let rt = runtime(true)?;
            let l = Lattice::join(&rt, LatticeOptions::new(&url, &name, id))?;
            hosts.push((rt, l));
        }
        for i in 0..k {
            exec(
                &hosts[i % 3].0,
                &format!("Load M{i} {} config quiet", self.v2),
            )?;
        }
        let end = Instant::now() + Duration::from_secs(20);
        while hosts[0]
            .1
            .view()
            .hosts
            .iter()
            .map(|h| h.modules.len())
            .sum::<usize>()
            < k
        {
            anyhow::ensure!(Instant::now() < end, "host a never saw the {k} modules");
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut out = [(Vec::new(), Vec::new()), (Vec::new(), Vec::new())];
        for _ in 0..reps {
            for (i, rt) in [&one, &hosts[0].0].into_iter().enumerate() {
                let r = txn(rt, &line)?;
                out[i].0.push(r.total_us - r.prepare_us);
                out[i].1.push(
                    r.modules
                        .iter()
                        .filter_map(|m| m.pause_us)
                        .max()
                        .unwrap_or(0),
                );
            }
        }
        one.shutdown();
        for (rt, l) in hosts {
            l.leave();
            rt.shutdown();
        }
        Ok(out)
    }
}

/// The pause a `Move` reported.
fn moved_pause(reply: &Reply) -> anyhow::Result<u64> {
    let Reply::Done(text) = reply else {
        anyhow::bail!("Move answered {reply:?}");
    };
    text.split("paused ")
        .nth(1)
        .and_then(|p| p.split(' ').next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no pause in `{text}`"))
}
