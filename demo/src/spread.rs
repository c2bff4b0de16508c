//! The router spread over a lattice (`liveswap demo --lattice`): this
//! process is host a; hosts b and c are `liveswap run` processes joined
//! to the same NATS server (a local one the demo starts, when none is
//! given). What the other hosts' modules log comes back through their
//! `--json` output into the demo's one stream of events, so the demo's
//! checks read OSPF's relay numbers wherever OSPF runs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crossbeam_channel::Sender;
use liveswap::lattice::{Lattice, LatticeOptions};
use liveswap::{Event, Level, Runtime};

use crate::Narration;

/// How to spread the router over hosts.
#[derive(Clone, Debug)]
pub struct LatticeDemo {
    /// The NATS server (with JetStream); none: start a local one.
    pub url: Option<String>,
    /// The `liveswap` binary that runs hosts b and c.
    pub binary: PathBuf,
}

/// The other hosts and the NATS server, stopped with the demo.
pub(crate) struct Spread {
    lattice: Option<Lattice>,
    server: Option<Child>,
    hosts: Vec<Child>,
    dir: PathBuf,
}

fn nats_server() -> anyhow::Result<&'static str> {
    ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("nats-server is not installed: apt-get install nats-server, or give --lattice-url of a NATS server with JetStream")
}

/// A local `nats-server` with JetStream on a free loopback port: its URL.
fn start_server(dir: &Path) -> anyhow::Result<(Child, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(nats_server()?)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir.join("js"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nats-server")?;
    let end = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(Instant::now() < end, "nats-server never listened on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((child, format!("nats://127.0.0.1:{port}")))
}

/// An event of another host, from its `--json` line: its modules' log
/// lines and what the lattice says there.
fn event_of(host: &str, line: &str) -> Option<Event> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let text = |k: &str| v.get(k).and_then(|s| s.as_str()).unwrap_or("").to_string();
    match v.get("event")?.as_str()? {
        "log" => Some(Event::Log {
            module: text("module"),
            version: text("version"),
            level: match text("level").as_str() {
                "error" => Level::Error,
                "warn" => Level::Warn,
                "debug" => Level::Debug,
                "trace" => Level::Trace,
                _ => Level::Info,
            },
            line: text("line"),
        }),
        "progress" if text("origin") == "lattice" => Some(Event::Progress {
            origin: format!("host {host}"),
            text: text("text"),
        }),
        _ => None,
    }
}

impl Spread {
    /// Join `rt` to the lattice as host a, start hosts b and c, and wait
    /// until every host sees the others.
    pub(crate) fn start(
        rt: &Runtime,
        how: &LatticeDemo,
        events: &Sender<Event>,
        narrate: &Arc<dyn Fn(Narration) + Send + Sync>,
    ) -> anyhow::Result<Spread> {
        let dir =
            std::env::temp_dir().join(format!("liveswap-demo-lattice-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut spread = Spread {
            lattice: None,
            server: None,
            hosts: Vec::new(),
            dir: dir.clone(),
        };
        let url = match &how.url {
            Some(u) => u.clone(),
            None => {
                let (child, url) = start_server(&dir)?;
                spread.server = Some(child);
                narrate(Narration::Reply(format!(
                    "started a local nats-server with JetStream at {url}"
                )));
                url
            }
        };
        let name = format!("demo{}", std::process::id());
        spread.lattice = Some(Lattice::join(rt, LatticeOptions::new(&url, &name, "a"))?);
        let script = dir.join("empty.ls");
        std::fs::write(&script, "")?;
        for id in ["b", "c"] {
            let mut child = Command::new(&how.binary)
                .args(["run", "--json", "--no-admin", "--lattice", &url])
                .args(["--lattice-name", &name, "--host-id", id])
                .arg(&script)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("starting host {id}: {}", how.binary.display()))?;
            let out = BufReader::new(child.stdout.take().context("host output")?);
            let (tx, host) = (events.clone(), id.to_string());
            std::thread::spawn(move || {
                for line in out.lines().map_while(Result::ok) {
                    if let Some(e) = event_of(&host, &line)
                        && tx.send(e).is_err()
                    {
                        return;
                    }
                }
            });
            narrate(Narration::Reply(format!(
                "host {id}: `{} run --lattice {url} --lattice-name {name} --host-id {id}` (pid {})",
                how.binary.display(),
                child.id()
            )));
            spread.hosts.push(child);
        }
        spread.wait_for_hosts()?;
        Ok(spread)
    }

    fn wait_for_hosts(&self) -> anyhow::Result<()> {
        let lattice = self.lattice.as_ref().expect("joined");
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let v = lattice.view();
            let up = |id: &str| v.hosts.iter().any(|h| h.id == id && h.alive);
            if v.connected && up("b") && up("c") {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < end,
                "hosts b and c did not join the lattice within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Leave the lattice, stop the other hosts and the NATS server.
    pub(crate) fn stop(mut self) {
        if let Some(l) = self.lattice.take() {
            l.leave();
        }
        for mut h in self.hosts.drain(..).chain(self.server.take()) {
            let _ = h.kill();
            let _ = h.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
