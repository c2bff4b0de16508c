//! The outside view (the thesis' IP, OSPF and VRRP monitor nodes): listens
//! for the packets modules send over UDP (`NAME VERSION TS_US KIND SEQ`),
//! and records per module the version it hears, the last timestamp, and
//! every outage window — a silence longer than the gap threshold. Outages
//! are what a swap's downtime looks like from outside.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

/// A silence in one module's packets.
#[derive(Clone, Debug)]
pub struct Outage {
    /// The module.
    pub module: String,
    /// Arrival of the last packet before the silence.
    pub start: Instant,
    /// Arrival of the first packet after it.
    pub end: Instant,
}

impl Outage {
    /// How long it lasted.
    pub fn duration(&self) -> Duration {
        self.end.duration_since(self.start)
    }
}

/// What the monitor heard from one module.
#[derive(Clone, Debug)]
pub struct Heard {
    /// Module name.
    pub module: String,
    /// Versions heard, in order, with when each was first heard.
    pub versions: Vec<(String, Instant)>,
    /// Packets by kind.
    pub packets: BTreeMap<String, u64>,
    /// Sender's timestamp of the last packet (µs since the Unix epoch).
    pub last_ts_us: u64,
    /// When the last packet arrived.
    pub last_at: Instant,
    /// Silences longer than the threshold.
    pub outages: Vec<Outage>,
}

/// Something the monitor noticed, as it happens.
#[derive(Clone, Debug)]
pub enum Notice {
    /// First packet from a module.
    Heard { module: String, version: String },
    /// A module's packets now carry another version.
    Version {
        module: String,
        from: String,
        to: String,
    },
    /// A silence just ended.
    Outage(Outage),
}

/// A running monitor.
pub struct Monitor {
    addr: SocketAddr,
    heard: Arc<Mutex<BTreeMap<String, Heard>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Monitor {
    /// Listen on `addr` (port 0 picks one); a silence longer than `gap` is
    /// an outage. Notices go to `notices`, if given.
    pub fn start(
        addr: SocketAddr,
        gap: Duration,
        notices: Option<Sender<Notice>>,
    ) -> std::io::Result<Monitor> {
        let socket = UdpSocket::bind(addr)?;
        // Short timeout: the thread checks for stop between datagrams.
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = socket.local_addr()?;
        let heard: Arc<Mutex<BTreeMap<String, Heard>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let heard = heard.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("liveswap-monitor".into())
                .spawn(move || listen(socket, gap, heard, stop, notices))?
        };
        Ok(Monitor {
            addr,
            heard,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it has heard so far, by module.
    pub fn snapshot(&self) -> Vec<Heard> {
        self.heard
            .lock()
            .expect("monitor poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// Stop listening.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop();
    }
}

fn listen(
    socket: UdpSocket,
    gap: Duration,
    heard: Arc<Mutex<BTreeMap<String, Heard>>>,
    stop: Arc<AtomicBool>,
    notices: Option<Sender<Notice>>,
) {
    let mut buf = [0u8; 1500];
    let notify = |n: Notice| {
        if let Some(tx) = &notices {
            let _ = tx.send(n);
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let Ok((len, _)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let now = Instant::now();
        let text = String::from_utf8_lossy(&buf[..len]);
        let mut words = text.split_whitespace();
        let (Some(module), Some(version), Some(ts), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            continue; // not ours
        };
        let ts: u64 = ts.parse().unwrap_or(0);
        let mut map = heard.lock().expect("monitor poisoned");
        match map.get_mut(module) {
            None => {
                map.insert(
                    module.to_string(),
                    Heard {
                        module: module.to_string(),
                        versions: vec![(version.to_string(), now)],
                        packets: [(kind.to_string(), 1)].into(),
                        last_ts_us: ts,
                        last_at: now,
                        outages: Vec::new(),
                    },
                );
                notify(Notice::Heard {
                    module: module.to_string(),
                    version: version.to_string(),
                });
            }
            Some(h) => {
                if now.duration_since(h.last_at) > gap {
                    let o = Outage {
                        module: module.to_string(),
                        start: h.last_at,
                        end: now,
                    };
                    h.outages.push(o.clone());
                    notify(Notice::Outage(o));
                }
                let current = h.versions.last().map(|v| v.0.as_str()).unwrap_or("");
                if current != version {
                    notify(Notice::Version {
                        module: module.to_string(),
                        from: current.to_string(),
                        to: version.to_string(),
                    });
                    h.versions.push((version.to_string(), now));
                }
                *h.packets.entry(kind.to_string()).or_insert(0) += 1;
                h.last_ts_us = ts;
                h.last_at = now;
            }
        }
    }
}
