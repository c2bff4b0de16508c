//! The non-stop router of the thesis (chapter 5), as liveswap modules.
//!
//! - TIMER publishes `broadcast` every `interval` ms (a host timer).
//! - IP and VRRP, on every `broadcast`, send OSPF the next relay number
//!   (message kind `relay`, consecutive from 1, kept in their state) and
//!   emit a packet (ICMP, HEARTBEAT) to the monitor.
//! - OSPF emits a HELLO packet on every `broadcast`, logs every relay it
//!   gets (`got msg : 99 from IP v2`) and checks each sender's numbers stay
//!   consecutive, logging `GAP`/`DUP` lines when they do not.
//! - Protocol 3 adds a timestamp to relay messages: IP v3 speaks it, OSPF
//!   v3 accepts protocols 1 and 3.
//! - IP, told `route-flap N`, queues N route recomputations to itself,
//!   each about 100 ms of real shortest-path work: a backlog that keeps it
//!   from reaching quiescence for a while.
//!
//! Packets are UDP datagrams `NAME VERSION TS_US KIND SEQ`, sent through
//! WASI sockets to the `monitor` address of the config; a module can only
//! send them if the administrator granted it that address.
//!
//! Every version reads every other version's state (one CBOR map; fields a
//! version does not know are ignored), so upgrades and downgrades both
//! work. Each crate `<role>-v<N>` is one line: [`router_module!`].

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use liveswap_guest as sdk;
use liveswap_guest::host;
pub use liveswap_guest::{Level, Message, ModuleInfo};

/// Which part of the router a module plays.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Publishes `broadcast`.
    Timer,
    /// Relays to OSPF, emits ICMP.
    Ip,
    /// Receives relays, emits HELLO.
    Ospf,
    /// Relays to OSPF, emits HEARTBEAT.
    Vrrp,
}

/// One version of one role.
pub struct Spec {
    /// The role.
    pub role: Role,
    /// `info().version`.
    pub version: &'static str,
    /// Protocols it sends: 3 adds timestamps to relay messages.
    pub speaks: &'static [u32],
    /// Protocols it understands.
    pub accepts: &'static [u32],
    /// A protocol whose relay messages it traps on although it claims to
    /// accept it (a deliberate defect), or 0.
    pub defect: u32,
}

/// Define a router module crate: `router_module!(Role::Ip, "2", [1], [1]);`
#[macro_export]
macro_rules! router_module {
    ($role:expr, $version:literal, [$($speaks:literal),*], [$($accepts:literal),*]) => {
        $crate::router_module!($role, $version, [$($speaks),*], [$($accepts),*], traps on protocol 0);
    };
    ($role:expr, $version:literal, [$($speaks:literal),*], [$($accepts:literal),*], traps on protocol $defect:literal) => {
        struct Module;
        const SPEC: $crate::Spec = $crate::Spec {
            role: $role,
            version: $version,
            speaks: &[$($speaks),*],
            accepts: &[$($accepts),*],
            defect: $defect,
        };
        impl $crate::sdk::Module for Module {
            const VERSION: &'static str = $version;
            const SPEAKS: &'static [u32] = &[$($speaks),*];
            const ACCEPTS: &'static [u32] = &[$($accepts),*];
            fn init(config: &[u8]) -> Result<Self, String> { SPEC.init(config.to_vec()).map(|()| Module) }
            fn service(&mut self, msg: $crate::Message) -> Result<(), String> { SPEC.service(msg) }
        }
        impl $crate::sdk::RawState for Module {
            fn save(&self) -> Result<Vec<u8>, String> { SPEC.put_state() }
            fn restore(state: &[u8]) -> Result<Self, String> { SPEC.get_state(state.to_vec()).map(|()| Module) }
        }
        $crate::sdk::export!(Module, state Raw);
    };
}

/// The stable state every version of every role reads and writes.
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct State {
    /// TIMER: broadcasts published.
    beats: u64,
    /// TIMER: its period.
    interval_ms: u32,
    /// IP, VRRP: last relay number sent to OSPF.
    relay: u64,
    /// OSPF: last relay number per sender.
    last: BTreeMap<String, u64>,
    /// OSPF: relay messages that carried a timestamp (protocol 3).
    stamped: u64,
    /// Packets emitted.
    packets: u64,
    /// Where packets go.
    monitor: Option<String>,
}

/// A relay message body.
#[derive(Serialize, Deserialize)]
struct Relay {
    n: u64,
    version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ts: Option<u64>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
    /// The packet socket, bound on first use (not part of the state: each
    /// instance binds its own).
    static SOCKET: RefCell<Option<Result<UdpSocket, String>>> = const { RefCell::new(None) };
}

fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    STATE.with(|s| f(&mut s.borrow_mut()))
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn cbor<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).expect("encoding to a Vec cannot fail");
    out
}

impl Spec {
    fn name(&self) -> &'static str {
        match self.role {
            Role::Timer => "TIMER",
            Role::Ip => "IP",
            Role::Ospf => "OSPF",
            Role::Vrrp => "VRRP",
        }
    }

    /// The answer to `info`.
    pub fn info(&self) -> ModuleInfo {
        ModuleInfo {
            version: self.version.to_string(),
            speaks: self.speaks.to_vec(),
            accepts: self.accepts.to_vec(),
        }
    }

    /// `init`: read `monitor ADDR` and `interval MS` from the config, then
    /// come alive (start the timer, or subscribe to it).
    pub fn init(&self, config: Vec<u8>) -> Result<(), String> {
        let text = String::from_utf8(config).map_err(|_| "config is not UTF-8".to_string())?;
        let mut interval = 100u32;
        for item in text
            .split([';', '\n'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            match item.split_once(' ') {
                Some(("monitor", addr)) => {
                    let addr = addr.trim().to_string();
                    with(|s| s.monitor = Some(addr));
                }
                Some(("interval", ms)) => {
                    interval = ms
                        .trim()
                        .parse()
                        .map_err(|_| format!("interval `{ms}` is not a number of ms"))?;
                }
                _ => {
                    return Err(format!(
                        "unknown config item `{item}` (monitor ADDR; interval MS)"
                    ));
                }
            }
        }
        with(|s| s.interval_ms = interval);
        self.come_alive()
    }

    fn come_alive(&self) -> Result<(), String> {
        match self.role {
            Role::Timer => {
                let ms = with(|s| s.interval_ms.max(1));
                host::set_timer("beat", ms);
            }
            _ => host::subscribe("TIMER", "broadcast")?,
        }
        Ok(())
    }

    /// `service`: one message.
    pub fn service(&self, msg: Message) -> Result<(), String> {
        if self.defect != 0 && msg.kind == "relay" && msg.proto == self.defect {
            panic!(
                "version {} mishandles a protocol-{} relay from {}",
                self.version, self.defect, msg.from
            );
        }
        match (self.role, msg.kind.as_str()) {
            (Role::Timer, "beat") => {
                let n = with(|s| {
                    s.beats += 1;
                    s.beats
                });
                host::publish("broadcast", &cbor(&n))?;
            }
            (Role::Ip | Role::Vrrp, "broadcast") => {
                let n = with(|s| {
                    s.relay += 1;
                    s.relay
                });
                let proto = self.speaks.iter().copied().max().unwrap_or(1);
                let relay = Relay {
                    n,
                    version: self.version.to_string(),
                    ts: (proto >= 3).then(now_us),
                };
                let m = Message {
                    from: String::new(),
                    kind: "relay".into(),
                    proto,
                    body: cbor(&relay),
                };
                if let Err(e) = host::send("OSPF", &m) {
                    // Not accepted: the number is not used, so the next
                    // one OSPF sees is still consecutive.
                    with(|s| s.relay -= 1);
                    host::log(Level::Warn, &format!("relay {n} to OSPF refused: {e}"));
                }
                let kind = if self.role == Role::Ip {
                    "ICMP"
                } else {
                    "HEARTBEAT"
                };
                self.packet(kind, n);
            }
            (Role::Ospf, "broadcast") => {
                let n = with(|s| {
                    s.packets += 1;
                    s.packets
                });
                self.packet("HELLO", n);
            }
            (Role::Ospf, "relay") => self.relay(&msg)?,
            (Role::Ip, "route-flap") => {
                let n: u32 = String::from_utf8_lossy(&msg.body)
                    .trim()
                    .parse()
                    .map_err(|_| "route-flap takes a count".to_string())?;
                let me = host::self_name();
                for _ in 0..n {
                    let m = Message {
                        from: String::new(),
                        kind: "route-recompute".into(),
                        proto: self.speaks[0],
                        body: Vec::new(),
                    };
                    host::send(&me, &m)?;
                }
                host::log(
                    Level::Info,
                    &format!("route flap: {n} recomputations queued"),
                );
            }
            (Role::Ip, "route-recompute") => {
                let runs = recompute_routes(Duration::from_millis(100));
                host::log(
                    Level::Debug,
                    &format!("recomputed routes ({runs} shortest-path runs)"),
                );
            }
            (_, kind) => return Err(format!("{} does not handle `{kind}`", self.name())),
        }
        Ok(())
    }

    fn relay(&self, msg: &Message) -> Result<(), String> {
        if !self.accepts.contains(&msg.proto) {
            return Err(format!("protocol {} not accepted", msg.proto));
        }
        let r: Relay = ciborium::from_reader(msg.body.as_slice())
            .map_err(|e| format!("unreadable relay from {}: {e}", msg.from))?;
        let expected = with(|s| {
            let last = s.last.entry(msg.from.clone()).or_insert(0);
            let expected = *last + 1;
            if r.n >= expected {
                *last = r.n;
            }
            if r.ts.is_some() {
                s.stamped += 1;
            }
            expected
        });
        let line = if r.n == expected {
            match r.ts {
                Some(ts) => format!("got msg : {} from {} v{} ts {ts}", r.n, msg.from, r.version),
                None => format!("got msg : {} from {} v{}", r.n, msg.from, r.version),
            }
        } else if r.n > expected {
            format!("GAP from {}: expected {expected}, got {}", msg.from, r.n)
        } else {
            format!("DUP from {}: expected {expected}, got {}", msg.from, r.n)
        };
        host::log(
            if r.n == expected {
                Level::Info
            } else {
                Level::Warn
            },
            &line,
        );
        Ok(())
    }

    /// Emit one packet to the monitor, if there is one and it is granted.
    fn packet(&self, kind: &str, seq: u64) {
        let Some(addr) = with(|s| s.monitor.clone()) else {
            return;
        };
        let text = format!("{} {} {} {kind} {seq}", self.name(), self.version, now_us());
        let sent = SOCKET.with(|sock| {
            let mut sock = sock.borrow_mut();
            let fresh = sock.is_none();
            let socket = sock.get_or_insert_with(|| {
                UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("cannot open a UDP socket: {e}"))
            });
            match socket {
                Ok(s) => s
                    .send_to(text.as_bytes(), addr.as_str())
                    .map(|_| ())
                    .map_err(|e| format!("cannot send to {addr}: {e} (is it granted?)")),
                Err(e) if fresh => Err(e.clone()),
                Err(_) => Ok(()), // said once already
            }
        });
        match sent {
            Ok(()) => with(|s| s.packets += u64::from(self.role != Role::Ospf)),
            Err(e) => host::log(Level::Warn, &format!("{kind} packet not sent: {e}")),
        }
    }

    /// `put-state`.
    pub fn put_state(&self) -> Result<Vec<u8>, String> {
        Ok(with(|s| cbor(&*s)))
    }

    /// `get-state`: any version's state.
    pub fn get_state(&self, bytes: Vec<u8>) -> Result<(), String> {
        let state: State = ciborium::from_reader(bytes.as_slice())
            .map_err(|e| format!("state unreadable: {e}"))?;
        let summary = match self.role {
            Role::Timer => format!("beat {}", state.beats),
            Role::Ip | Role::Vrrp => format!("relay number {}", state.relay),
            Role::Ospf => {
                let l: Vec<String> = state.last.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                format!("last relays {}", l.join(", "))
            }
        };
        host::log(
            Level::Info,
            &format!("v{} takes over at {summary}", self.version),
        );
        with(|s| *s = state);
        Ok(())
    }
}

/// Real work for about `budget`: shortest paths over a fixed 300-node
/// graph, again and again. Returns how many runs it made.
fn recompute_routes(budget: Duration) -> u32 {
    const N: usize = 300;
    let start = Instant::now();
    let mut runs = 0u32;
    let weight = |a: usize, b: usize| -> Option<u64> {
        let h = (a * 7919 + b * 104_729) % 97;
        (h < 8).then_some(1 + (h as u64 * 13) % 50)
    };
    while start.elapsed() < budget {
        let src = runs as usize % N;
        let mut dist = vec![u64::MAX; N];
        let mut done = vec![false; N];
        dist[src] = 0;
        for _ in 0..N {
            let Some(u) = (0..N)
                .filter(|&v| !done[v] && dist[v] != u64::MAX)
                .min_by_key(|&v| dist[v])
            else {
                break;
            };
            done[u] = true;
            for v in 0..N {
                if let Some(w) = weight(u, v) {
                    dist[v] = dist[v].min(dist[u] + w);
                }
            }
        }
        std::hint::black_box(&dist);
        runs += 1;
    }
    runs
}
