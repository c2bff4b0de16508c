//! Scenario 8, shadow runs: the pause of a `Promote` against state size,
//! beside the `Replace` pause of the same module under the same load
//! (alternating, one sitting), and what a shadow costs the version it
//! runs beside (the relay A -> B with and without a shadow of B).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::{
    Bench, LOAD_RATE, Table, exec, human_bytes, pace, pct, pooled_runtime, runtime, served, txn,
};

/// Until `name`'s shadow has matched `n` messages; an error if it ended.
fn matched(rt: &liveswap::Runtime, name: &str, n: u64) -> anyhow::Result<()> {
    let proxy = rt.module(name).context("no such module")?;
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let s = proxy.status().shadow.context("no shadow")?;
        if let Some(why) = s.ended {
            anyhow::bail!("the shadow of {name} ended: {why}");
        }
        if s.matched >= n {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < end, "the shadow of {name} is stuck");
        std::thread::sleep(Duration::from_millis(1));
    }
}

impl Bench<'_> {
    /// A group of `k` modules under load, each shadowed by the same
    /// version and the shadows promoted together, `reps` times: the
    /// transaction's time and its largest pause (p50, p99), in µs.
    pub(super) fn group_promote(&self, k: usize, reps: usize) -> anyhow::Result<(u64, u64, u64)> {
        let rt = runtime(true)?;
        let mut feed = String::from("quiet; timer t 1");
        for i in 0..k {
            exec(&rt, &format!("Load M{i} {} config quiet", self.v2))?;
            feed += &format!("; tick-send M{i}");
        }
        exec(&rt, &format!("Load F {} config \"{feed}\"", self.v1))?;
        let names: Vec<String> = (0..k).map(|i| format!("M{i}")).collect();
        let (mut total, mut worst) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            for n in &names {
                exec(&rt, &format!("Shadow {n} {}", self.v2))?;
            }
            for n in &names {
                matched(&rt, n, 10)?;
            }
            let r = txn(&rt, &format!("Promote {}", names.join(" ")))?;
            total.push(r.total_us - r.prepare_us);
            worst.push(
                r.modules
                    .iter()
                    .filter_map(|m| m.pause_us)
                    .max()
                    .unwrap_or(0),
            );
        }
        rt.shutdown();
        let p50 = pct(&mut worst, 0.5);
        Ok((pct(&mut total, 0.5), p50, pct(&mut worst, 0.99)))
    }

    /// 8a. Promote pause against state size, beside Replace's.
    pub(super) fn shadow(&self, say: &mut dyn FnMut(&str)) -> anyhow::Result<Table> {
        let sizes: &[u64] = if self.opts.quick {
            &[16, 64 << 10]
        } else {
            &[16, 1 << 10, 64 << 10, 1 << 20, 16 << 20]
        };
        let rounds = if self.opts.quick { 3 } else { 30 };
        let mut t = Table::new(
            "shadow_promote",
            &format!(
                "8a. promote pause vs state size, beside the Replace pause ({rounds} of each, alternating, pooled memory, under a steady {LOAD_RATE} msgs/s; µs)"
            ),
            &[
                "pad",
                "state_bytes",
                "replace_p50",
                "replace_p99",
                "promote_p50",
                "promote_p99",
                "promote_gap_p50",
                "handover_p50",
                "target",
                "met",
            ],
        );
        let mut base_p50 = None;
        for &size in sizes {
            say(&format!("promote vs replace: {}", human_bytes(size)));
            let rt = pooled_runtime()?;
            exec(
                &rt,
                &format!("Load X {} config \"quiet; pad {size}\"", self.v2),
            )?;
            let x = rt.module("X").context("X")?;
            let (mut replace, mut promote, mut gap, mut handover) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let mut state_bytes = 0;
            let stop = AtomicBool::new(false);
            std::thread::scope(|scope| -> anyhow::Result<()> {
                let feeder = scope.spawn(|| pace(&rt, "X", &stop));
                std::thread::sleep(Duration::from_millis(100));
                let result = (|| -> anyhow::Result<()> {
                    for _ in 0..rounds {
                        let r = txn(&rt, &format!("Replace X {}", self.v2))?;
                        replace.push(r.modules[0].pause_us.unwrap_or(0));
                        state_bytes = r.modules[0].state_bytes.unwrap_or(0);
                        exec(&rt, &format!("Shadow X {} queue 1000000", self.v2))?;
                        let s = x.shadow().context("a shadow")?;
                        handover.push(s.handover_us);
                        // A shadow runs a while before it is promoted: the
                        // hand-over's buffers are freed by then.
                        std::thread::sleep(Duration::from_millis(50));
                        matched(&rt, "X", 50)?;
                        x.reset_max_gap();
                        let r = txn(&rt, "Promote X")?;
                        std::thread::sleep(Duration::from_millis(2));
                        gap.push(x.max_gap_us());
                        promote.push(r.modules[0].pause_us.unwrap_or(0));
                    }
                    Ok(())
                })();
                stop.store(true, Ordering::Relaxed);
                let _ = feeder.join();
                result
            })?;
            let p50 = pct(&mut promote, 0.5);
            let base = *base_p50.get_or_insert(p50);
            let (aim, met) = if size == 16 << 20 {
                (
                    format!("<= 2x the 16B p50 ({} µs)", 2 * base),
                    if p50 <= 2 * base { "yes" } else { "NO" }.to_string(),
                )
            } else {
                ("-".to_string(), "-".to_string())
            };
            t.rows.push(vec![
                human_bytes(size),
                state_bytes.to_string(),
                pct(&mut replace, 0.5).to_string(),
                pct(&mut replace, 0.99).to_string(),
                p50.to_string(),
                pct(&mut promote, 0.99).to_string(),
                pct(&mut gap, 0.5).to_string(),
                pct(&mut handover, 0.5).to_string(),
                aim,
                met,
            ]);
            rt.shutdown();
        }
        Ok(t)
    }

    /// 8b. What a shadow costs the version it runs beside: the relay
    /// A -> B, B alone and B with a shadow, alternating.
    pub(super) fn shadow_cost(&self, say: &mut dyn FnMut(&str)) -> anyhow::Result<Table> {
        let n: u64 = if self.opts.quick { 20_000 } else { 200_000 };
        let runs = if self.opts.quick { 2 } else { 5 };
        let mut t = Table::new(
            "shadow_cost",
            &format!(
                "8b. relay A -> B with and without a shadow of B ({n} messages, {runs} runs each, alternating; messages/s, median and min-max)"
            ),
            &["B", "msgs_per_s", "min", "max", "ns_per_msg"],
        );
        let (mut alone, mut shadowed) = (Vec::new(), Vec::new());
        for i in 0..runs {
            say(&format!("shadow cost: run {} of {runs}", i + 1));
            alone.push(self.relay_to_b(n, false)?);
            shadowed.push(self.relay_to_b(n, true)?);
        }
        for (what, mut rates) in [("alone", alone), ("with a shadow", shadowed)] {
            rates.sort_by(f64::total_cmp);
            let median = rates[rates.len() / 2];
            t.rows.push(vec![
                what.to_string(),
                format!("{median:.0}"),
                format!("{:.0}", rates[0]),
                format!("{:.0}", rates[rates.len() - 1]),
                format!("{:.0}", 1e9 / median),
            ]);
        }
        Ok(t)
    }

    /// A sends `n` numbers to B (shadowed by the same version, or not);
    /// B's messages/s.
    fn relay_to_b(&self, n: u64, shadow: bool) -> anyhow::Result<f64> {
        let rt = runtime(true)?;
        exec(&rt, &format!("Load B {} config quiet", self.v2))?;
        exec(&rt, &format!("Load A {} config quiet", self.v2))?;
        if shadow {
            exec(&rt, &format!("Shadow B {} queue 1000000", self.v2))?;
        }
        let t0 = Instant::now();
        exec(&rt, &format!("Send A do \"send B {n}\""))?;
        served(&rt, "B", n)?;
        let rate = n as f64 / t0.elapsed().as_secs_f64();
        if shadow {
            let s = rt
                .module("B")
                .context("B")?
                .status()
                .shadow
                .context("shadow")?;
            anyhow::ensure!(s.ended.is_none(), "the shadow ended: {:?}", s.ended);
        }
        rt.shutdown();
        Ok(rate)
    }
}
