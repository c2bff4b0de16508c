//! The probe: a scriptable liveswap module used by the tests and the
//! examples. Each versioned crate (`probe-v1`, `probe-v2`) is a thin
//! component over this logic with its own version label and state shape.
//!
//! A probe is driven by text commands, one per line (or `;`-separated), given as its `Load`
//! config or sent to it as messages of kind `do`:
//!
//! ```text
//! sub P E | unsub P E         subscribe to / drop event E of publisher P
//! timer NAME MS | cancel NAME start / stop a host timer
//! tick-send TO                on every tick, send the next number to TO
//! tick-publish EVENT          on every tick, publish the next number as EVENT
//! tick-count N                send N numbers (not 1) per tick to each receiver
//! relay TO                    for every number received, send the next to TO
//! send TO N                   send the next N numbers to TO now
//! forge TO                    send one number to TO with a forged `from`
//! publish EVENT [N]           publish the next (N) number(s) as EVENT now
//! flag F | unflag F           set / clear a behaviour flag (see below)
//! pad N                       carry N extra bytes of state
//! work US                     spend US microseconds on every message
//! quiet | verbose             stop / resume logging every message
//! report                      log a summary line
//! spin | trap | grow          loop forever / trap / exhaust memory, right now
//! read-file PATH              read a file, log what it holds or why not
//! write-file PATH TEXT        create or overwrite a file with TEXT
//! env NAME                    log an environment variable, or `absent`
//! udp-send ADDR               send one datagram to ADDR (an ip:port)
//! tcp-connect ADDR            open a TCP connection to ADDR, write a line
//! ```
//!
//! Commands that push on the host's limits as a hostile guest would
//! (`blob`, `subs`, `timers`, `log-flood`, `udp-sockets`, `sleep`, ...) are
//! listed in `hostile.rs`.
//!
//! The last five try the sandbox: each logs one line, `read-file /data/a:
//! ok 5 bytes "hello"` or `read-file /data/a: refused: <error>`.
//!
//! Flags: `fail-put`, `trap-put`, `loop-put`, `grow-put`, `sleep-put` and `fail-get`,
//! `trap-get`, `loop-get`, `grow-get` (the next `put-state` / `get-state`
//! errors, traps, loops forever or grows memory until it runs out; the
//! `-get` ones only when another version takes the state over, not when a
//! version is rebuilt from its own snapshot);
//! `fail-init`, `trap-init`, `loop-init`, `grow-init` (config only);
//! `trap-enable`, `trap-disable` (every later `enable` / `disable` traps).
//! `grow` as a command grows memory until it runs out, now.
//!
//! Numbers are CBOR-encoded `u64`s in messages of kind `num`, counted from 1
//! per (sender, receiver). A receiving probe logs `got N from S` and checks
//! that each sender's numbers are consecutive, logging `GAP` or `DUP` lines
//! when they are not; those lines are what the tests read.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

mod hostile;
mod sandbox;
mod shape;

pub use liveswap_guest as sdk;
use liveswap_guest::host;
pub use liveswap_guest::{Level, Message, ModuleInfo};

/// Define a probe component crate:
/// `probe_module!("2.0", shape 2, speaks [1], accepts [1]);`
#[macro_export]
macro_rules! probe_module {
    ($version:literal, shape $shape:literal, speaks [$($s:literal),*], accepts [$($a:literal),*]) => {
        $crate::probe_module!($version, shape $shape, speaks [$($s),*], accepts [$($a),*], traps on "");
    };
    ($version:literal, shape $shape:literal, speaks [$($s:literal),*], accepts [$($a:literal),*], traps on $defect:literal) => {
        $crate::probe_module!($version, shape $shape, speaks [$($s),*], accepts [$($a),*], traps on $defect, tells auditor on "", spins on "");
    };
    ($version:literal, shape $shape:literal, speaks [$($s:literal),*], accepts [$($a:literal),*], traps on $defect:literal, tells auditor on $odd:literal, spins on $stall:literal) => {
        struct Module;
        const PROBE: $crate::Probe = $crate::Probe {
            version: $version,
            shape: $shape,
            speaks: &[$($s),*],
            accepts: &[$($a),*],
            defect: $defect,
            odd: $odd,
            stall: $stall,
        };
        // The probe keeps its state itself (and its own shapes of it).
        impl $crate::sdk::Module for Module {
            const VERSION: &'static str = $version;
            fn info() -> $crate::ModuleInfo { PROBE.info() }
            fn init(config: &[u8]) -> Result<Self, String> { PROBE.init(config.to_vec()).map(|()| Module) }
            fn service(&mut self, msg: $crate::Message) -> Result<(), String> { PROBE.service(msg) }
            fn enable(&mut self) { PROBE.enable() }
            fn disable(&mut self) { PROBE.disable() }
        }
        impl $crate::sdk::RawState for Module {
            fn save(&self) -> Result<Vec<u8>, String> { PROBE.put_state() }
            fn restore(state: &[u8]) -> Result<Self, String> { PROBE.get_state(state.to_vec()).map(|()| Module) }
            fn restore_owned(state: Vec<u8>) -> Result<Self, String> { PROBE.get_state(state).map(|()| Module) }
        }
        $crate::sdk::export!(Module, state Raw);
    };
}

/// What distinguishes one probe version from another.
pub struct Probe {
    /// The `info().version` label.
    pub version: &'static str,
    /// The state shape this version writes; it reads every shape up to it.
    pub shape: u32,
    /// Protocol versions it sends.
    pub speaks: &'static [u32],
    /// Protocol versions it understands.
    pub accepts: &'static [u32],
    /// A message kind this version traps on (a deliberate defect), or "".
    pub defect: &'static str,
    /// A message kind this version answers differently (it also sends
    /// `audited` with the same body to the module `auditor`), or "".
    pub odd: &'static str,
    /// A message kind this version loops forever on, or "".
    pub stall: &'static str,
}

/// The probe's stable state, whatever the shape it travels in.
#[derive(Default)]
struct State {
    /// Next number to send, per receiver (last number sent).
    sent: BTreeMap<String, u64>,
    /// Last number received, per sender.
    seen: BTreeMap<String, u64>,
    /// Receivers fed on every tick.
    tick_send: BTreeSet<String>,
    /// Events published on every tick.
    tick_publish: BTreeSet<String>,
    /// Behaviour flags.
    flags: BTreeSet<String>,
    /// Ballast, to make the state as large as a test wants.
    pad: shape::Ballast,
    /// Messages served since first load (shape 2 only; shape 1 loses it).
    served: u64,
    /// Microseconds of busy work per message.
    work_us: u64,
    /// Log every message or not.
    quiet: bool,
}

thread_local! {
    /// Numbers per tick (not part of the state: a load setting).
    static PER_TICK: std::cell::Cell<u64> = const { std::cell::Cell::new(1) };
    /// Where every number received is passed on (a load setting too).
    static RELAY: RefCell<Option<String>> = const { RefCell::new(None) };
    /// The message `send_next` fills in and sends.
    static OUTGOING: RefCell<Message> = const {
        RefCell::new(Message {
            from: String::new(),
            kind: String::new(),
            proto: 0,
            body: Vec::new(),
        })
    };
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    STATE.with(|s| f(&mut s.borrow_mut()))
}

fn log(level: Level, line: &str) {
    host::log(level, line);
}

/// A CBOR unsigned integer (major type 0), in its shortest form, on the
/// stack: it is on every message's path.
struct Num {
    buf: [u8; 9],
    len: usize,
}

impl Num {
    fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl shape::Sink for Num {
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }
}

fn encode_num(n: u64) -> Num {
    let mut num = Num {
        buf: [0; 9],
        len: 0,
    };
    shape::put_head(&mut num, shape::UINT, n);
    num
}

/// `n` in decimal, at the end of `line`.
fn push_num(line: &mut String, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    line.extend(digits[i..].iter().map(|&d| char::from(d)));
}

/// Read a CBOR unsigned integer; anything else goes through ciborium.
fn decode_num(body: &[u8]) -> Option<u64> {
    let mut rest = body;
    match shape::uint(&mut rest) {
        Some(n) => rest.is_empty().then_some(n),
        None => ciborium::from_reader(body).ok(),
    }
}

/// Never return: the host's call deadline must interrupt this.
fn spin_forever() -> ! {
    loop {
        std::hint::spin_loop();
    }
}

/// Allocate 16 MiB blocks, touching each, until memory runs out (the
/// host's memory limit turns that into a trap).
fn grow_forever() -> ! {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut b = vec![0u8; 16 << 20];
        b[(16 << 20) - 1] = 1;
        blocks.push(std::hint::black_box(b));
    }
}

fn busy(us: u64) {
    if us == 0 {
        return;
    }
    let start = std::time::Instant::now();
    while start.elapsed().as_micros() < u128::from(us) {
        std::hint::spin_loop();
    }
}

impl Probe {
    /// The answer to `info`.
    pub fn info(&self) -> ModuleInfo {
        hostile::declared(ModuleInfo {
            version: self.version.to_string(),
            speaks: self.speaks.to_vec(),
            accepts: self.accepts.to_vec(),
        })
    }

    /// `init`: run the config as commands.
    pub fn init(&self, config: Vec<u8>) -> Result<(), String> {
        hostile::report_info();
        let text = String::from_utf8(config).map_err(|_| "config is not UTF-8".to_string())?;
        for line in text
            .split(['\n', ';'])
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            match line {
                "fail-init" => return Err("init refused: config says fail-init".into()),
                "trap-init" => panic!("init trapped: config says trap-init"),
                "loop-init" => spin_forever(),
                "grow-init" => grow_forever(),
                _ => self.command(line)?,
            }
        }
        Ok(())
    }

    /// `service`: one message.
    pub fn service(&self, msg: Message) -> Result<(), String> {
        let (work, quiet) = with(|s| {
            s.served += 1;
            (s.work_us, s.quiet)
        });
        busy(work);
        if !self.defect.is_empty() && msg.kind == self.defect {
            panic!(
                "version {} cannot handle `{}` messages (defect)",
                self.version, self.defect
            );
        }
        if !self.stall.is_empty() && msg.kind == self.stall {
            spin_forever();
        }
        if !self.odd.is_empty() && msg.kind == self.odd {
            let told = Message {
                from: String::new(),
                kind: "audited".into(),
                proto: self.speaks.first().copied().unwrap_or(0),
                body: msg.body.clone(),
            };
            if let Err(e) = host::send("auditor", &told) {
                log(Level::Warn, &format!("send to auditor failed: {e}"));
            }
        }
        match (msg.from.as_str(), msg.kind.as_str()) {
            (_, "do") => {
                let text = String::from_utf8(msg.body).map_err(|_| "command is not UTF-8")?;
                for line in text
                    .split(['\n', ';'])
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                {
                    self.command(line)?;
                    log(Level::Debug, &format!("did {line}"));
                }
                Ok(())
            }
            ("$timer", name) => {
                let (sends, pubs) = with(|s| (s.tick_send.clone(), s.tick_publish.clone()));
                if !quiet {
                    log(Level::Debug, &format!("tick {name}"));
                }
                let per_tick = PER_TICK.with(|p| p.get());
                for to in sends {
                    for _ in 0..per_tick {
                        self.send_next(&to, false);
                    }
                }
                for event in pubs {
                    self.publish_next(&event);
                }
                Ok(())
            }
            (from, kind) => {
                let Some(n) = decode_num(&msg.body) else {
                    log(Level::Warn, &format!("unreadable {kind} from {from}"));
                    return Err(format!("body of {kind} is not a CBOR number"));
                };
                let expected = with(|s| {
                    if !s.seen.contains_key(from) {
                        s.seen.insert(from.to_string(), 0);
                    }
                    let last = s.seen.get_mut(from).expect("inserted above");
                    let expected = *last + 1;
                    if n >= expected {
                        *last = n;
                    }
                    expected
                });
                let what = if kind == "num" {
                    String::new()
                } else {
                    format!(" ({kind})")
                };
                RELAY.with(|r| {
                    if let Some(to) = r.borrow().as_deref() {
                        self.send_next(to, false);
                    }
                });

                if n == expected {
                    if !quiet {
                        log(Level::Info, &format!("got {n} from {from}{what}"));
                    }
                } else if n > expected {
                    log(
                        Level::Warn,
                        &format!("GAP from {from}: expected {expected}, got {n}"),
                    );
                } else {
                    log(
                        Level::Warn,
                        &format!("DUP from {from}: expected {expected}, got {n}"),
                    );
                }
                Ok(())
            }
        }
    }

    /// `enable` (traps with the flag `trap-enable`).
    pub fn enable(&self) {
        if with(|s| s.flags.contains("trap-enable")) {
            panic!("enable trapped: flag trap-enable");
        }
        log(Level::Debug, "enabled");
    }

    /// `disable` (traps with the flag `trap-disable`).
    pub fn disable(&self) {
        if with(|s| s.flags.contains("trap-disable")) {
            panic!("disable trapped: flag trap-disable");
        }
        log(Level::Debug, "disabled");
    }

    /// `put-state`: the state in this version's shape, unless a flag says
    /// otherwise.
    pub fn put_state(&self) -> Result<Vec<u8>, String> {
        with(|s| {
            if s.flags.contains("trap-put") {
                panic!("put-state trapped: flag trap-put");
            }
            if s.flags.contains("fail-put") {
                return Err("put-state refused: flag fail-put".to_string());
            }
            if s.flags.contains("loop-put") {
                spin_forever();
            }
            if s.flags.contains("sleep-put") {
                // Blocked in the host (a WASI wait), not running wasm.
                std::thread::sleep(std::time::Duration::from_secs(600));
            }
            if s.flags.contains("grow-put") {
                grow_forever();
            }
            Ok(shape::encode(s, self.shape, self.version))
        })
    }

    /// `get-state`: take over a state of any shape up to this version's.
    pub fn get_state(&self, bytes: Vec<u8>) -> Result<(), String> {
        let decoded = shape::decode(bytes)?;
        let shape = decoded.shape;
        if shape > self.shape {
            return Err(format!(
                "state shape {shape} is newer than version {} reads (up to {})",
                self.version, self.shape
            ));
        }
        let takeover = decoded.writer.as_deref() != Some(self.version);
        let state = decoded.state()?;
        // The get-state flags are about a takeover by another version; a
        // version rebuilt from its own snapshot (a recovery, a rollback)
        // reads its state as usual.
        if takeover && state.flags.contains("trap-get") {
            panic!("get-state trapped: flag trap-get");
        }
        if takeover && state.flags.contains("fail-get") {
            return Err("get-state refused: flag fail-get".into());
        }
        if takeover && state.flags.contains("loop-get") {
            spin_forever();
        }
        if takeover && state.flags.contains("grow-get") {
            grow_forever();
        }
        // Built without `format!`: this line is on an upgrade's pause.
        let mut line = String::with_capacity(64 + 16 * state.seen.len());
        line.push_str("took over state shape ");
        push_num(&mut line, u64::from(shape));
        line.push_str(", seen ");
        for (i, (k, v)) in state.seen.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            line.push_str(k);
            line.push(':');
            push_num(&mut line, *v);
        }
        log(Level::Info, &line);
        with(|s| *s = state);
        Ok(())
    }

    fn send_next(&self, to: &str, forged: bool) {
        let n = with(|s| match s.sent.get_mut(to) {
            Some(e) => {
                *e += 1;
                *e
            }
            None => {
                s.sent.insert(to.to_string(), 1);
                1
            }
        });
        // One message reused for every number (a relay sends one per
        // message it serves): no allocation on that path.
        let sent = OUTGOING.with(|m| {
            let mut msg = m.borrow_mut();
            msg.from.clear();
            if forged {
                msg.from.push_str("MALLORY");
            }
            if msg.kind != "num" {
                msg.kind = "num".into();
            }
            msg.proto = self.speaks.first().copied().unwrap_or(0);
            msg.body.clear();
            msg.body.extend_from_slice(encode_num(n).as_slice());
            host::send(to, &msg)
        });
        if let Err(e) = sent {
            // Not accepted, so not counted: the next number stays consecutive.
            with(|s| {
                if let Some(x) = s.sent.get_mut(to) {
                    *x -= 1;
                }
            });
            log(Level::Warn, &format!("send to {to} failed: {e}"));
        }
    }

    /// `n` consecutive numbers to `to`, many per host call; each refused
    /// one is logged and not counted, as `send_next` does.
    fn send_many(&self, to: &str, n: u64) {
        let proto = self.speaks.first().copied().unwrap_or(0);
        let mut out = liveswap_guest::Outbox::new();
        let mut left = n;
        while left > 0 {
            let chunk = left.min(256);
            let next = with(|s| s.sent.get(to).copied().unwrap_or(0)) + 1;
            for k in 0..chunk {
                out.push_bytes(to, "num", proto, encode_num(next + k).as_slice());
            }
            let (accepted, tried) = match out.flush() {
                Ok(_) => (chunk, chunk),
                Err(r) => {
                    log(Level::Warn, &format!("send to {to} failed: {}", r.reason));
                    (u64::from(r.accepted), u64::from(r.accepted) + 1)
                }
            };
            with(|s| *s.sent.entry(to.to_string()).or_insert(0) += accepted);
            left -= tried;
        }
    }

    fn publish_next(&self, event: &str) {
        let key = format!("event:{event}");
        let n = with(|s| {
            let e = s.sent.entry(key).or_insert(0);
            *e += 1;
            *e
        });
        if let Err(e) = host::publish(event, encode_num(n).as_slice()) {
            log(Level::Warn, &format!("publish {event} failed: {e}"));
        }
    }

    fn command(&self, line: &str) -> Result<(), String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| -> Result<u64, String> {
            words
                .get(i)
                .ok_or_else(|| format!("`{line}`: missing number"))?
                .parse::<u64>()
                .map_err(|_| format!("`{line}`: not a number"))
        };
        let word = |i: usize| -> Result<&str, String> {
            words
                .get(i)
                .copied()
                .ok_or_else(|| format!("`{line}`: missing argument"))
        };
        match words.first().copied().unwrap_or("") {
            "sub" => host::subscribe(word(1)?, word(2)?)?,
            "unsub" => host::unsubscribe(word(1)?, word(2)?),
            "timer" => host::set_timer(word(1)?, num(2)? as u32),
            "cancel" => host::cancel_timer(word(1)?),
            "tick-send" => {
                let to = word(1)?.to_string();
                with(|s| s.tick_send.insert(to));
            }
            "tick-publish" => {
                let event = word(1)?.to_string();
                with(|s| s.tick_publish.insert(event));
            }
            "send" => self.send_many(word(1)?, num(2)?),
            "forge" => self.send_next(word(1)?, true),
            "publish" => {
                let n = if words.len() > 2 { num(2)? } else { 1 };
                for _ in 0..n {
                    self.publish_next(word(1)?);
                }
            }
            "flag" => {
                let f = word(1)?.to_string();
                with(|s| s.flags.insert(f));
            }
            "unflag" => {
                let f = word(1)?;
                with(|s| s.flags.remove(f));
            }
            "pad" => {
                let n = num(1)? as usize;
                with(|s| s.pad = (0..n).map(|i| i as u8).collect::<Vec<u8>>().into());
            }
            "relay" => {
                let to = word(1)?.to_string();
                RELAY.with(|r| *r.borrow_mut() = Some(to));
            }
            "tick-count" => {
                let n = num(1)?.max(1);
                PER_TICK.with(|p| p.set(n));
            }
            "work" => {
                let us = num(1)?;
                with(|s| s.work_us = us);
            }
            "quiet" => with(|s| s.quiet = true),
            "verbose" => with(|s| s.quiet = false),
            "report" => {
                let line = with(|s| {
                    let seen: Vec<String> =
                        s.seen.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                    let sent: Vec<String> =
                        s.sent.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                    format!(
                        "report served={} seen={} sent={} pad={}",
                        s.served,
                        seen.join(","),
                        sent.join(","),
                        s.pad.len()
                    )
                });
                log(Level::Info, &line);
            }
            "spin" => spin_forever(),
            "grow" => grow_forever(),
            "trap" => panic!("trap requested"),
            cmd if sandbox::handles(cmd) => sandbox::run(line)?,
            cmd if hostile::handles(cmd) => hostile::run(&words)?,
            other => return Err(format!("unknown probe command `{other}`")),
        }
        Ok(())
    }
}
