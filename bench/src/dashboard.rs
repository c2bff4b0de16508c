//! What a watching dashboard costs: relay throughput and swap pauses with
//! a headless Chromium on the page (its event stream open, a status every
//! second) against none, alternating, in one sitting.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use liveswap_ops::web::{WebOptions, WebServer};

use super::{Bench, LOAD_RATE, Table, exec, pace, pct, runtime, served, txn};

/// A headless Chromium showing one page, killed when dropped.
struct Browser(Child, std::path::PathBuf);

impl Browser {
    fn open(url: &str) -> anyhow::Result<Browser> {
        let profile = std::env::temp_dir().join(format!(
            "liveswap-bench-chromium-{}-{}",
            std::process::id(),
            url.len()
        ));
        let child = Command::new("/usr/bin/chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting /usr/bin/chromium (Debian: apt-get install chromium)")?;
        Ok(Browser(child, profile))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// One measurement: relay messages/s, and swap pauses (µs) under a steady
/// load.
fn measure(b: &Bench<'_>, watched: bool, n: u64, swaps: usize) -> anyhow::Result<(f64, Vec<u64>)> {
    let rt = std::sync::Arc::new(runtime(true)?);
    let web = WebServer::start(
        rt.clone(),
        WebOptions {
            addr: "127.0.0.1:0".parse().expect("an address"),
            token: None,
        },
    )?;
    let _browser = if watched {
        let browser = Browser::open(&format!("http://{}/", web.addr()))?;
        let until = Instant::now() + Duration::from_secs(60);
        while web.streams() == 0 {
            anyhow::ensure!(Instant::now() < until, "the browser never opened the page");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(browser)
    } else {
        None
    };
    exec(&rt, &format!("Load B {} config quiet", b.v1))?;
    exec(&rt, &format!("Load A {} config quiet", b.v1))?;
    let t0 = Instant::now();
    exec(&rt, &format!("Send A do \"send B {n}\""))?;
    served(&rt, "B", n)?;
    let rate = n as f64 / t0.elapsed().as_secs_f64();

    exec(&rt, &format!("Load X {} config \"quiet; pad 1024\"", b.v2))?;
    let stop = AtomicBool::new(false);
    let pauses = std::thread::scope(|scope| -> anyhow::Result<Vec<u64>> {
        let feeder = scope.spawn(|| pace(&rt, "X", &stop));
        std::thread::sleep(Duration::from_millis(100));
        let mut pauses = Vec::new();
        let result = (|| -> anyhow::Result<()> {
            for _ in 0..swaps {
                let r = txn(&rt, &format!("Replace X {}", b.v2))?;
                pauses.push(r.modules[0].pause_us.unwrap_or(0));
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        let _ = feeder.join();
        result.map(|()| pauses)
    })?;
    drop(web);
    rt.shutdown();
    Ok((rate, pauses))
}

impl Bench<'_> {
    /// Scenario: the dashboard's cost.
    pub(crate) fn dashboard(&self, say: &mut dyn FnMut(&str)) -> anyhow::Result<Table> {
        let (rounds, n, swaps) = if self.opts.quick {
            (1, 20_000, 5)
        } else {
            (5, 1_000_000, 50)
        };
        let mut t = Table::new(
            "dashboard",
            &format!(
                "dashboard cost: relay A->B of {n} messages, and {swaps} swaps of 1 KiB state under {LOAD_RATE} msgs/s, with a browser watching the dashboard or not (alternating)"
            ),
            &[
                "round",
                "browser",
                "relay_msgs_per_s",
                "pause_p50_us",
                "pause_p99_us",
            ],
        );
        for round in 1..=rounds {
            let order = if round % 2 == 1 {
                [false, true]
            } else {
                [true, false]
            };
            for watched in order {
                say(&format!(
                    "dashboard cost, round {round}: {}",
                    if watched {
                        "a browser watching"
                    } else {
                        "no browser"
                    }
                ));
                let (rate, mut pauses) = measure(self, watched, n, swaps)?;
                t.rows.push(vec![
                    round.to_string(),
                    if watched { "watching" } else { "none" }.to_string(),
                    format!("{rate:.0}"),
                    pct(&mut pauses, 0.5).to_string(),
                    pct(&mut pauses, 0.99).to_string(),
                ]);
            }
        }
        Ok(t)
    }
}
