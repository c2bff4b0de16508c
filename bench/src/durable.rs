//! Scenario 7, durability: what a state directory costs and buys. The
//! relay A -> B under each sync policy next to the in-memory figure;
//! restart recovery time against module count and log length (the host's
//! store file copied while it runs: exactly what a crash leaves, torn
//! commit and all); and the handoff pause against module count (in
//! process: the old host stops its modules between two messages with a
//! fresh recovery point and lets the directory go, the new one restores
//! every module and serves; a real handoff adds only the fd passing).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use liveswap::store::SyncPolicy;
use liveswap::{Runtime, RuntimeBuilder};

use super::{Bench, Table, exec, served};

/// A fresh, empty directory for one run's state.
fn scratch(out: &Path, tag: &str) -> anyhow::Result<PathBuf> {
    let dir = out.join("state").join(tag);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir.join("s"))
}

fn durable(dir: &Path, sync: SyncPolicy) -> anyhow::Result<Runtime> {
    RuntimeBuilder::default()
        .mailbox_capacity(2_000_000)
        .memory_limit(128 << 20)
        .state_dir(Some(dir.to_path_buf()))
        .sync(sync)
        .build()
}

/// Until every module of `rt` has served a message sent after it came
/// back (so after its restore), and its queue is empty.
fn all_serving(rt: &Runtime, names: &[String]) -> anyhow::Result<()> {
    for n in names {
        rt.send(n, "do", b"quiet")
            .map_err(|e| anyhow::anyhow!("{n}: {e}"))?;
    }
    let end = Instant::now() + Duration::from_secs(120);
    for n in names {
        let p = rt.module(n).ok_or_else(|| anyhow::anyhow!("{n} gone"))?;
        while p.status().served == 0 || p.depth() > 0 {
            anyhow::ensure!(Instant::now() < end, "{n} did not come back in time");
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    Ok(())
}

impl Bench<'_> {
    /// Scenario 7a: relay throughput under each sync policy.
    pub(super) fn durable_relay(&self, say: &mut dyn FnMut(&str)) -> anyhow::Result<Table> {
        let n: u64 = if self.opts.quick { 5_000 } else { 300_000 };
        let mut t = Table::new(
            "durable_relay",
            &format!("7a. relay A -> B with a state directory ({n} messages; messages/s)"),
            &["sync", "msgs_per_s", "ns_per_msg", "store_MiB"],
        );
        let policies: [(&str, Option<SyncPolicy>); 4] = [
            ("in-memory", None),
            ("none", Some(SyncPolicy::Never)),
            ("10ms", Some(SyncPolicy::DEFAULT)),
            ("always", Some(SyncPolicy::Always)),
        ];
        for (label, policy) in policies {
            say(&format!("durable relay: sync {label}"));
            let dir = scratch(&self.opts.out, &format!("relay-{label}"))?;
            let rt = match policy {
                None => super::runtime(true)?,
                Some(p) => durable(&dir, p)?,
            };
            exec(&rt, &format!("Load B {} config quiet", self.v1))?;
            exec(&rt, &format!("Load A {} config quiet", self.v1))?;
            let t0 = Instant::now();
            exec(&rt, &format!("Send A do \"send B {n}\""))?;
            served(&rt, "B", n)?;
            let secs = t0.elapsed().as_secs_f64();
            rt.shutdown();
            let size = std::fs::metadata(dir.join("state.redb")).map_or(0, |m| m.len());
            t.rows.push(vec![
                label.into(),
                format!("{:.0}", n as f64 / secs),
                format!("{:.0}", secs * 1e9 / n as f64),
                format!("{:.1}", size as f64 / (1 << 20) as f64),
            ]);
        }
        Ok(t)
    }

    /// Scenario 7b: restart after a crash against module count and log
    /// length.
    pub(super) fn durable_restart(&self, say: &mut dyn FnMut(&str)) -> anyhow::Result<Table> {
        let (counts, logs): (&[usize], &[u64]) = if self.opts.quick {
            (&[1, 4], &[0, 100])
        } else {
            (&[1, 10, 100], &[0, 1000, 9000])
        };
        let mut t = Table::new(
            "durable_restart",
            "7b. restart after a crash: until every module serves again (ms)",
            &["modules", "logged_per_module", "restart_ms", "store_MiB"],
        );
        for &k in counts {
            for &logged in logs {
                say(&format!("restart: {k} modules, {logged} logged each"));
                let (ms, size) = self.crash_and_restart(k, logged)?;
                t.rows.push(vec![
                    k.to_string(),
                    logged.to_string(),
                    format!("{ms:.1}"),
                    format!("{:.1}", size as f64 / (1 << 20) as f64),
                ]);
            }
        }
        Ok(t)
    }

    /// `k` modules each with `logged` messages since its recovery point;
    /// the store copied as a crash leaves it; the restart on the copy
    /// timed. Returns (ms, store bytes).
    fn crash_and_restart(&self, k: usize, logged: u64) -> anyhow::Result<(f64, u64)> {
        let dir = scratch(&self.opts.out, &format!("restart-{k}-{logged}"))?;
        let rt = durable(&dir, SyncPolicy::DEFAULT)?;
        // Recovery points only every 10 000 messages: the logs stay.
        exec(&rt, "SetCheckpoint 0")?;
        let names: Vec<String> = (0..k).map(|i| format!("M{i}")).collect();
        for n in &names {
            exec(&rt, &format!("Load {n} {} config quiet", self.v1))?;
            if logged > 0 {
                exec(&rt, &format!("Send {n} do \"send {n} {logged}\""))?;
            }
        }
        if logged > 0 {
            for n in &names {
                served(&rt, n, logged + 1)?;
            }
        }
        // Two batches later everything served is durable.
        std::thread::sleep(Duration::from_millis(50));
        let crashed = dir.with_file_name("crashed");
        std::fs::create_dir_all(&crashed)?;
        std::fs::copy(dir.join("state.redb"), crashed.join("state.redb"))?;
        let size = std::fs::metadata(crashed.join("state.redb"))?.len();
        rt.shutdown();
        drop(rt);
        let t0 = Instant::now();
        let rt = durable(&crashed, SyncPolicy::DEFAULT)?;
        all_serving(&rt, &names)?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        rt.shutdown();
        Ok((ms, size))
    }

    /// Scenario 7c: the handoff pause against module count, 1 KiB of
    /// state each.
    pub(super) fn durable_handoff(&self, say: &mut dyn FnMut(&str)) -> anyhow::Result<Table> {
        let (counts, runs): (&[usize], usize) = if self.opts.quick {
            (&[1, 4], 2)
        } else {
            (&[1, 10, 100], 5)
        };
        let mut t = Table::new(
            "durable_handoff",
            "7c. handoff pause (in process): from stopping the first module to every module serving again, 1 KiB of state each (ms)",
            &[
                "modules",
                "runs",
                "pause_p50_ms",
                "pause_min_ms",
                "pause_max_ms",
            ],
        );
        for &k in counts {
            say(&format!("handoff: {k} modules"));
            let dir = scratch(&self.opts.out, &format!("handoff-{k}"))?;
            let names: Vec<String> = (0..k).map(|i| format!("M{i}")).collect();
            let mut rt = durable(&dir, SyncPolicy::DEFAULT)?;
            for n in &names {
                exec(
                    &rt,
                    &format!("Load {n} {} config \"quiet; pad 1024\"", self.v2),
                )?;
            }
            let mut pauses = Vec::new();
            for _ in 0..runs {
                let t0 = Instant::now();
                rt.shutdown();
                drop(rt);
                rt = durable(&dir, SyncPolicy::DEFAULT)?;
                all_serving(&rt, &names)?;
                pauses.push(t0.elapsed().as_secs_f64() * 1e3);
            }
            rt.shutdown();
            pauses.sort_by(f64::total_cmp);
            t.rows.push(vec![
                k.to_string(),
                runs.to_string(),
                format!("{:.1}", pauses[pauses.len() / 2]),
                format!("{:.1}", pauses[0]),
                format!("{:.1}", pauses[pauses.len() - 1]),
            ]);
        }
        Ok(t)
    }
}
