//! What a host comes back to: the image of every module (its definition,
//! recovery point, log, mailbox, timers and subscriptions), the open
//! transactions and the command history, and the journal operations that
//! change it. The writer keeps one image in memory, applies each committed
//! batch to it, and writes it whole at a compaction; a restart reads the
//! last image written and applies the journal since.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::codec::{Damaged, Dec, Enc};
use crate::bindings::Message;
use crate::guest::Grant;
use crate::history::CommandRecord;

/// Effects of a call that failed, by index (see `guest::Failures`).
pub type Failures = Vec<(u64, String)>;

/// Who sent a message from inside a `service` call: the module and the
/// number its call will have once it completes.
pub type Producer = (Arc<str>, u64);

/// Where a message another host of a lattice sent comes in its stream:
/// the sending host, its run, the message's number.
pub type Stream = (Arc<str>, u64, u64);

/// How a module was loaded: what a restart needs to load it again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModuleDef {
    /// The file it was (last) loaded from, for display.
    pub path: PathBuf,
    /// `sha256:<hex>` of the version it runs.
    pub digest: String,
    /// Bytes given to `init`.
    pub config: Vec<u8>,
    /// Mailbox capacity, if not the host's default.
    pub capacity: Option<u64>,
    /// Capabilities.
    pub grants: Vec<Grant>,
    /// Linear-memory limit, if not the host's default.
    pub memory: Option<u64>,
}

/// What a module is rebuilt from.
#[derive(Clone, Debug)]
pub enum BaseImage {
    /// `init` with the definition's config; the effects of that `init`
    /// that failed.
    Init(Failures),
    /// `get-state` with a snapshot.
    State(Arc<Vec<u8>>),
}

/// A message served since the base.
#[derive(Clone, Debug)]
pub struct LoggedImage {
    /// Its id.
    pub id: u64,
    /// The message.
    pub message: Message,
    /// Effects of its call that failed.
    pub failed: Failures,
}

/// One module as a restart finds it.
#[derive(Clone, Debug, Default)]
pub struct ModuleImage {
    /// How it was loaded.
    pub def: ModuleDef,
    /// Enabled (serving) or disabled.
    pub enabled: bool,
    /// `service` calls completed (a producer's number).
    pub seq: u64,
    /// The recovery point's base; none once checkpoints kept failing.
    pub base: Option<BaseImage>,
    /// Served since the base.
    pub log: Vec<LoggedImage>,
    /// Accepted, not yet served, by id (id order is arrival order per
    /// sender), with who produced it.
    pub inbox: BTreeMap<u64, (Message, Option<Producer>)>,
    /// Timers: name → interval in ms.
    pub timers: BTreeMap<String, u64>,
    /// Subscriptions: (publisher, event).
    pub subs: BTreeSet<(String, String)>,
    /// A transaction committed elsewhere that this module did not reach
    /// before the host stopped: (transaction, the digest to swap to).
    pub finish: Option<(u64, String)>,
    /// A call that trapped, to be served again with its first effects
    /// suppressed (they stand).
    pub retry: Option<RetryImage>,
    /// Messages set aside as poison, oldest first.
    pub poison: Vec<PoisonImage>,
}

/// Most poison messages kept per module (the host's own limit is usually
/// lower: `--max-poison`).
pub const MAX_POISON: usize = 1000;

/// A message set aside as poison.
#[derive(Clone, Debug)]
pub struct PoisonImage {
    /// When, in ms since the Unix epoch.
    pub at_ms: u64,
    /// The version it trapped.
    pub version: String,
    /// The trap, in one line.
    pub reason: String,
    /// The message.
    pub message: Message,
}

/// A call that trapped and has not been served again yet.
#[derive(Clone, Debug)]
pub struct RetryImage {
    /// The call's number.
    pub seq: u64,
    /// The message's id.
    pub id: u64,
    /// The message.
    pub message: Message,
    /// How many effects the trapped call made.
    pub effects: u64,
    /// Which of them failed.
    pub failed: Failures,
}

/// A transaction begun and not ended.
#[derive(Clone, Debug, Default)]
pub struct TxnImage {
    /// The command.
    pub line: String,
    /// (module, digest) of every target.
    pub targets: Vec<(String, String)>,
    /// The targets whose swap was recorded.
    pub swapped: Vec<String>,
}

/// What a host of a lattice accepted for one module on another host and
/// the other host has not acknowledged: kept so that a restart sends it
/// again, with its number in the stream to that module.
#[derive(Clone, Debug, Default)]
pub struct OutboxImage {
    /// The last number the other host acknowledged.
    pub acked: u64,
    /// Not acknowledged, by number: the message (stamped with its sender)
    /// and the call that sent it.
    pub entries: BTreeMap<u64, (Message, Option<Producer>)>,
}

/// Most command records a store keeps.
pub const MAX_COMMANDS: usize = 10_000;

/// Everything a host comes back to.
#[derive(Clone, Debug, Default)]
pub struct Image {
    /// Modules by name.
    pub modules: BTreeMap<Arc<str>, ModuleImage>,
    /// Above every message id used.
    pub next_id: u64,
    /// Above every transaction id used.
    pub next_txn: u64,
    /// Transactions begun and not ended.
    pub open: BTreeMap<u64, TxnImage>,
    /// The command history, oldest first.
    pub commands: Vec<CommandRecord>,
    /// The administrator's settings (`SetCheckpoint`, `SetProbation`,
    /// `SetTimer`, `SetMode`), by name.
    pub settings: BTreeMap<String, u64>,
    /// A lattice host's outboxes, by receiving module.
    pub outboxes: BTreeMap<Arc<str>, OutboxImage>,
    /// A lattice host's receiving marks: (sending host, module) → (its
    /// run, the last number taken).
    pub marks: BTreeMap<(Arc<str>, Arc<str>), (u64, u64)>,
}

/// One change to the image, in journal order.
#[derive(Clone, Debug)]
pub enum Op {
    /// A message accepted for `to` (from another host: where it comes in
    /// that host's stream, recorded with it so that the receiving mark
    /// is durable exactly when the message is).
    Enq {
        id: u64,
        to: Arc<str>,
        msg: Message,
        producer: Option<Producer>,
        stream: Option<Stream>,
    },
    /// `module` completed call number `seq` on message `id` (a timer tick,
    /// never queued in the journal, comes with its message).
    Served {
        module: Arc<str>,
        seq: u64,
        id: u64,
        tick: Option<Message>,
        failed: Failures,
    },
    /// Message `id` was set aside: from the mailbox, completing call
    /// `seq`, or (no `seq`) from the log; kept as poison with the version
    /// it trapped and why (`aside`), or dropped (none).
    Poisoned {
        module: Arc<str>,
        seq: Option<u64>,
        id: u64,
        aside: Option<(String, String)>,
    },
    /// Message `id` was taken out unserved.
    Dropped { module: Arc<str>, id: u64 },
    /// Call `seq` on message `id` trapped after `effects` effects: they
    /// stand, and the message is served again with them suppressed.
    Trapped {
        module: Arc<str>,
        seq: u64,
        id: u64,
        effects: u64,
        failed: Failures,
    },
    /// A new recovery point: this state, an empty log.
    Snapshot {
        module: Arc<str>,
        state: Arc<Vec<u8>>,
    },
    /// No recovery point any more.
    NoBase { module: Arc<str> },
    /// A module was loaded.
    Load {
        module: Arc<str>,
        def: ModuleDef,
        failed: Failures,
    },
    /// A module committed (or rolled back) to another version in
    /// transaction `txn`, with the state handed over as its base.
    Swap {
        module: Arc<str>,
        txn: u64,
        path: PathBuf,
        digest: String,
        state: Option<Arc<Vec<u8>>>,
    },
    /// A module was unloaded.
    Unload { module: Arc<str> },
    /// Enabled or disabled.
    Enable { module: Arc<str>, on: bool },
    /// A timer set (with its interval) or cancelled.
    Timer {
        module: Arc<str>,
        name: String,
        every_ms: Option<u64>,
    },
    /// A subscription made or dropped.
    Sub {
        module: Arc<str>,
        publisher: String,
        event: String,
        on: bool,
    },
    /// A transaction began.
    TxnBegin {
        txn: u64,
        line: String,
        targets: Vec<(String, String)>,
    },
    /// A transaction ended.
    TxnEnd { txn: u64 },
    /// A command ran.
    Command(CommandRecord),
    /// An administrator's setting changed.
    Setting { name: String, value: u64 },
    /// A message accepted for `to` on another host of the lattice, number
    /// `seq` of the stream to it.
    Out {
        to: Arc<str>,
        seq: u64,
        msg: Message,
        producer: Option<Producer>,
    },
    /// The other host acknowledged the stream to `to` up to `upto`.
    OutAcked { to: Arc<str>, upto: u64 },
}

impl Image {
    /// Apply one committed operation.
    pub fn apply(&mut self, op: Op) {
        match op {
            Op::Enq {
                id,
                to,
                msg,
                producer,
                stream,
            } => {
                self.next_id = self.next_id.max(id + 1);
                if let Some((host, incarnation, seq)) = stream {
                    self.marks.insert((host, to.clone()), (incarnation, seq));
                }
                if let Some(m) = self.modules.get_mut(&to) {
                    m.inbox.insert(id, (msg, producer));
                }
            }
            Op::Load {
                module,
                def,
                failed,
            } => {
                // Loading a target of an open transaction is its commit.
                for t in self.open.values_mut() {
                    if t.targets.iter().any(|(n, _)| **n == *module) {
                        t.swapped.push(module.to_string());
                    }
                }
                let image = ModuleImage {
                    def,
                    enabled: true,
                    base: Some(BaseImage::Init(failed)),
                    ..ModuleImage::default()
                };
                self.modules.insert(module, image);
            }
            Op::Unload { module } => {
                self.modules.remove(&module);
            }
            Op::TxnBegin { txn, line, targets } => {
                self.next_txn = self.next_txn.max(txn + 1);
                let t = TxnImage {
                    line,
                    targets,
                    swapped: Vec::new(),
                };
                self.open.insert(txn, t);
            }
            Op::TxnEnd { txn } => {
                self.open.remove(&txn);
            }
            Op::Command(record) => {
                self.commands.push(record);
                if self.commands.len() > MAX_COMMANDS {
                    let over = self.commands.len() - MAX_COMMANDS;
                    self.commands.drain(..over);
                }
            }
            Op::Setting { name, value } => {
                self.settings.insert(name, value);
            }
            Op::Out {
                to,
                seq,
                msg,
                producer,
            } => {
                let ob = self.outboxes.entry(to).or_default();
                ob.entries.insert(seq, (msg, producer));
            }
            Op::OutAcked { to, upto } => {
                if let Some(ob) = self.outboxes.get_mut(&to) {
                    ob.acked = ob.acked.max(upto);
                    ob.entries.retain(|seq, _| *seq > upto);
                }
            }
            op => self.apply_module(op),
        }
    }

    fn apply_module(&mut self, op: Op) {
        let name = match &op {
            Op::Served { module, .. }
            | Op::Poisoned { module, .. }
            | Op::Dropped { module, .. }
            | Op::Trapped { module, .. }
            | Op::Snapshot { module, .. }
            | Op::NoBase { module }
            | Op::Swap { module, .. }
            | Op::Enable { module, .. }
            | Op::Timer { module, .. }
            | Op::Sub { module, .. } => module.clone(),
            _ => unreachable!("applied by Image::apply"),
        };
        if let Op::Swap { txn, module, .. } = &op
            && let Some(t) = self.open.get_mut(txn)
        {
            t.swapped.push(module.to_string());
        }
        let Some(m) = self.modules.get_mut(&name) else {
            return;
        };
        m.apply(op, &mut self.next_id);
    }

    /// Whether [`Image::settle`] would change anything: a transaction to
    /// end, or a queued message whose sending call is not complete.
    pub fn unsettled(&self) -> bool {
        if !self.open.is_empty() {
            return true;
        }
        let done = |p: &Arc<str>| {
            self.modules
                .get(p)
                .map(|m| m.retry.as_ref().map_or(m.seq, |r| r.seq))
        };
        self.modules.values().any(|m| {
            m.inbox.values().any(|(_, producer)| match producer {
                Some((p, n)) => done(p).is_some_and(|d| *n > d),
                None => false,
            })
        }) || self.outboxes.values().any(|o| !o.entries.is_empty())
    }

    /// After a restart, before anything runs: drop every queued message
    /// whose producer's call did not complete in the durable prefix (that
    /// call runs again and sends it again), and end every open
    /// transaction: committed if any target's swap was recorded (the others
    /// are marked to finish it), aborted if none was. Returns a line per
    /// transaction ended.
    pub fn settle(&mut self) -> Vec<(u64, String, bool)> {
        // A call that trapped completed as far as its effects go.
        let seqs: BTreeMap<Arc<str>, u64> = self
            .modules
            .iter()
            .map(|(n, m)| (n.clone(), m.retry.as_ref().map_or(m.seq, |r| r.seq)))
            .collect();
        for m in self.modules.values_mut() {
            m.inbox.retain(|_, (_, producer)| match producer {
                Some((p, n)) => seqs.get(p).is_none_or(|done| *n <= *done),
                None => true,
            });
        }
        // The same for messages to other hosts. None of them (nor any
        // after them) ever left: a message leaves only once its call
        // completed durably, in order. What is kept is numbered on from the
        // last acknowledged, as it was up to the first message dropped.
        for o in self.outboxes.values_mut() {
            let kept = std::mem::take(&mut o.entries)
                .into_values()
                .filter(|(_, producer)| match producer {
                    Some((p, n)) => seqs.get(p).is_none_or(|done| *n <= *done),
                    None => true,
                });
            o.entries = (o.acked + 1..).zip(kept).collect();
        }
        let mut ended = Vec::new();
        for (txn, t) in std::mem::take(&mut self.open) {
            let committed = !t.swapped.is_empty();
            if committed {
                for (name, digest) in &t.targets {
                    if t.swapped.contains(name) {
                        continue;
                    }
                    if let Some(m) = self.modules.get_mut(name.as_str()) {
                        m.finish = Some((txn, digest.clone()));
                    }
                }
            }
            ended.push((txn, t.line, committed));
        }
        ended
    }
}

impl ModuleImage {
    fn set_aside(&mut self, message: Message, version: String, reason: String) {
        if self.poison.len() >= MAX_POISON {
            self.poison.remove(0);
        }
        let at_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.poison.push(PoisonImage {
            at_ms,
            version,
            reason,
            message,
        });
    }

    /// Take message `id` out of the mailbox (or the call retried).
    fn take(&mut self, id: u64) -> Option<Message> {
        if self.retry.as_ref().is_some_and(|r| r.id == id) {
            return self.retry.take().map(|r| r.message);
        }
        self.inbox.remove(&id).map(|(m, _)| m)
    }

    fn apply(&mut self, op: Op, next_id: &mut u64) {
        match op {
            Op::Served { .. } | Op::Poisoned { .. } | Op::Trapped { .. } | Op::Dropped { .. } => {
                self.apply_taken(op, next_id)
            }
            Op::Snapshot { state, .. } => {
                self.base = Some(BaseImage::State(state));
                self.log.clear();
            }
            Op::NoBase { .. } => {
                self.base = None;
                self.log.clear();
            }
            Op::Swap {
                path,
                digest,
                state,
                ..
            } => {
                self.def.path = path;
                self.def.digest = digest;
                self.finish = None;
                if let Some(state) = state {
                    self.base = Some(BaseImage::State(state));
                    self.log.clear();
                }
            }
            Op::Enable { on, .. } => self.enabled = on,
            Op::Timer { name, every_ms, .. } => match every_ms {
                Some(ms) => {
                    self.timers.insert(name, ms);
                }
                None => {
                    self.timers.remove(&name);
                }
            },
            Op::Sub {
                publisher,
                event,
                on,
                ..
            } => {
                if on {
                    self.subs.insert((publisher, event));
                } else {
                    self.subs.remove(&(publisher, event));
                }
            }
            _ => {}
        }
    }

    /// A message taken out of the mailbox: served, trapped on, set aside
    /// or dropped.
    fn apply_taken(&mut self, op: Op, next_id: &mut u64) {
        match op {
            Op::Served {
                seq,
                id,
                tick,
                failed,
                ..
            } => {
                *next_id = (*next_id).max(id + 1);
                self.seq = self.seq.max(seq);
                let message = match tick {
                    Some(m) => Some(m),
                    None => self.take(id),
                };
                if let (Some(message), Some(_)) = (message, &self.base) {
                    self.log.push(LoggedImage {
                        id,
                        message,
                        failed,
                    });
                }
            }
            Op::Poisoned { seq, id, aside, .. } => {
                let message = match seq {
                    Some(seq) => {
                        self.seq = self.seq.max(seq);
                        self.take(id)
                    }
                    None => self
                        .log
                        .iter()
                        .position(|l| l.id == id)
                        .map(|i| self.log.remove(i).message),
                };
                if let (Some(message), Some((version, reason))) = (message, aside) {
                    self.set_aside(message, version, reason);
                }
            }
            Op::Trapped {
                seq,
                id,
                effects,
                failed,
                ..
            } => {
                if let Some(message) = self.take(id) {
                    self.retry = Some(RetryImage {
                        seq,
                        id,
                        message,
                        effects,
                        failed,
                    });
                }
            }
            Op::Dropped { id, .. } => {
                self.inbox.remove(&id);
            }
            _ => {}
        }
    }
}

// ---- encoding ----

fn enc_grant(e: &mut Enc, g: &Grant) {
    match g {
        Grant::Udp(a) => {
            e.u8(0);
            e.str(&a.to_string());
        }
        Grant::Tcp(a) => {
            e.u8(1);
            e.str(&a.to_string());
        }
        Grant::Dir {
            host,
            guest,
            writable,
        } => {
            e.u8(2);
            e.str(&host.to_string_lossy());
            e.str(guest);
            e.bool(*writable);
        }
        Grant::Env { name, value } => {
            e.u8(3);
            e.str(name);
            e.str(value);
        }
    }
}

fn dec_grant(d: &mut Dec) -> Result<Grant, Damaged> {
    let addr = |s: String| {
        s.parse()
            .map_err(|_| Damaged(format!("a granted address `{s}`")))
    };
    Ok(match d.u8()? {
        0 => Grant::Udp(addr(d.str()?)?),
        1 => Grant::Tcp(addr(d.str()?)?),
        2 => Grant::Dir {
            host: PathBuf::from(d.str()?),
            guest: d.str()?,
            writable: d.bool()?,
        },
        3 => Grant::Env {
            name: d.str()?,
            value: d.str()?,
        },
        t => return Err(Damaged(format!("a grant of unknown kind {t}"))),
    })
}

fn enc_def(e: &mut Enc, def: &ModuleDef) {
    e.str(&def.path.to_string_lossy());
    e.str(&def.digest);
    e.bytes(&def.config);
    e.opt_u64(def.capacity);
    e.u64(def.grants.len() as u64);
    for g in &def.grants {
        enc_grant(e, g);
    }
    e.opt_u64(def.memory);
}

fn dec_def(d: &mut Dec) -> Result<ModuleDef, Damaged> {
    let path = PathBuf::from(d.str()?);
    let digest = d.str()?;
    let config = d.bytes()?;
    let capacity = d.opt_u64()?;
    let mut grants = Vec::new();
    for _ in 0..d.u64()? {
        grants.push(dec_grant(d)?);
    }
    Ok(ModuleDef {
        path,
        digest,
        config,
        capacity,
        grants,
        memory: d.opt_u64()?,
    })
}

fn enc_producer(e: &mut Enc, p: &Option<Producer>) {
    match p {
        None => e.u8(0),
        Some((n, s)) => {
            e.u8(1);
            e.str(n);
            e.u64(*s);
        }
    }
}

fn dec_producer(d: &mut Dec) -> Result<Option<Producer>, Damaged> {
    Ok(match d.u8()? {
        0 => None,
        _ => Some((d.name()?, d.u64()?)),
    })
}

fn enc_record(e: &mut Enc, r: &CommandRecord) {
    let ms =
        r.at.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
    e.u64(ms);
    e.str(&r.origin);
    e.str(&r.line);
    e.str(&r.outcome);
    e.opt_u64(r.transaction);
}

fn dec_record(d: &mut Dec) -> Result<CommandRecord, Damaged> {
    Ok(CommandRecord {
        at: SystemTime::UNIX_EPOCH + Duration::from_millis(d.u64()?),
        origin: d.str()?,
        line: d.str()?,
        outcome: d.str()?,
        transaction: d.opt_u64()?,
    })
}

fn enc_targets(e: &mut Enc, t: &[(String, String)]) {
    e.u64(t.len() as u64);
    for (a, b) in t {
        e.str(a);
        e.str(b);
    }
}

fn dec_targets(d: &mut Dec) -> Result<Vec<(String, String)>, Damaged> {
    let mut v = Vec::new();
    for _ in 0..d.u64()? {
        v.push((d.str()?, d.str()?));
    }
    Ok(v)
}

impl Op {
    /// Append this operation to `e`.
    pub(crate) fn encode(&self, e: &mut Enc) {
        match self {
            Op::Enq {
                id,
                to,
                msg,
                producer,
                stream,
            } => {
                e.u8(if stream.is_some() { 19 } else { 0 });
                e.u64(*id);
                e.str(to);
                e.message(msg);
                enc_producer(e, producer);
                if let Some((host, incarnation, seq)) = stream {
                    e.str(host);
                    e.u64(*incarnation);
                    e.u64(*seq);
                }
            }
            Op::Served {
                module,
                seq,
                id,
                tick,
                failed,
            } => {
                e.u8(1);
                e.str(module);
                e.u64(*seq);
                e.u64(*id);
                match tick {
                    None => e.u8(0),
                    Some(m) => {
                        e.u8(1);
                        e.message(m);
                    }
                }
                e.failures(failed);
            }
            Op::Poisoned {
                module,
                seq,
                id,
                aside,
            } => {
                e.u8(2);
                e.str(module);
                e.opt_u64(*seq);
                e.u64(*id);
                match aside {
                    None => e.u8(0),
                    Some((v, r)) => {
                        e.u8(1);
                        e.str(v);
                        e.str(r);
                    }
                }
            }
            Op::Dropped { module, id } => {
                e.u8(3);
                e.str(module);
                e.u64(*id);
            }
            Op::Snapshot { module, state } => {
                e.u8(4);
                e.str(module);
                e.bytes(state);
            }
            Op::NoBase { module } => {
                e.u8(5);
                e.str(module);
            }
            op => op.encode_admin(e),
        }
    }

    fn encode_admin(&self, e: &mut Enc) {
        match self {
            Op::Load {
                module,
                def,
                failed,
            } => {
                e.u8(6);
                e.str(module);
                enc_def(e, def);
                e.failures(failed);
            }
            Op::Swap {
                module,
                txn,
                path,
                digest,
                state,
            } => {
                e.u8(7);
                e.str(module);
                e.u64(*txn);
                e.str(&path.to_string_lossy());
                e.str(digest);
                match state {
                    None => e.u8(0),
                    Some(s) => {
                        e.u8(1);
                        e.bytes(s);
                    }
                }
            }
            Op::Unload { module } => {
                e.u8(8);
                e.str(module);
            }
            Op::Enable { module, on } => {
                e.u8(9);
                e.str(module);
                e.bool(*on);
            }
            Op::Timer {
                module,
                name,
                every_ms,
            } => {
                e.u8(10);
                e.str(module);
                e.str(name);
                e.opt_u64(*every_ms);
            }
            Op::Sub {
                module,
                publisher,
                event,
                on,
            } => {
                e.u8(11);
                e.str(module);
                e.str(publisher);
                e.str(event);
                e.bool(*on);
            }
            op => op.encode_records(e),
        }
    }

    fn encode_records(&self, e: &mut Enc) {
        match self {
            Op::Trapped {
                module,
                seq,
                id,
                effects,
                failed,
            } => {
                e.u8(15);
                e.str(module);
                e.u64(*seq);
                e.u64(*id);
                e.u64(*effects);
                e.failures(failed);
            }
            Op::TxnBegin { txn, line, targets } => {
                e.u8(12);
                e.u64(*txn);
                e.str(line);
                enc_targets(e, targets);
            }
            Op::TxnEnd { txn } => {
                e.u8(13);
                e.u64(*txn);
            }
            Op::Command(r) => {
                e.u8(14);
                enc_record(e, r);
            }
            Op::Setting { name, value } => {
                e.u8(16);
                e.str(name);
                e.u64(*value);
            }
            Op::Out {
                to,
                seq,
                msg,
                producer,
            } => {
                e.u8(17);
                e.str(to);
                e.u64(*seq);
                e.message(msg);
                enc_producer(e, producer);
            }
            Op::OutAcked { to, upto } => {
                e.u8(18);
                e.str(to);
                e.u64(*upto);
            }
            _ => unreachable!("encoded by Op::encode"),
        }
    }

    /// Read one operation.
    pub(crate) fn decode(d: &mut Dec) -> Result<Op, Damaged> {
        Ok(match d.u8()? {
            tag @ (0 | 19) => Op::Enq {
                id: d.u64()?,
                to: d.name()?,
                msg: d.message()?,
                producer: dec_producer(d)?,
                stream: match tag {
                    19 => Some((d.name()?, d.u64()?, d.u64()?)),
                    _ => None,
                },
            },
            1 => Op::Served {
                module: d.name()?,
                seq: d.u64()?,
                id: d.u64()?,
                tick: match d.u8()? {
                    0 => None,
                    _ => Some(d.message()?),
                },
                failed: d.failures()?,
            },
            2 => Op::Poisoned {
                module: d.name()?,
                seq: d.opt_u64()?,
                id: d.u64()?,
                aside: match d.u8()? {
                    0 => None,
                    _ => Some((d.str()?, d.str()?)),
                },
            },
            3 => Op::Dropped {
                module: d.name()?,
                id: d.u64()?,
            },
            4 => Op::Snapshot {
                module: d.name()?,
                state: Arc::new(d.bytes()?),
            },
            5 => Op::NoBase { module: d.name()? },
            tag => Op::decode_admin(tag, d)?,
        })
    }

    fn decode_admin(tag: u8, d: &mut Dec) -> Result<Op, Damaged> {
        Ok(match tag {
            6 => Op::Load {
                module: d.name()?,
                def: dec_def(d)?,
                failed: d.failures()?,
            },
            7 => Op::Swap {
                module: d.name()?,
                txn: d.u64()?,
                path: PathBuf::from(d.str()?),
                digest: d.str()?,
                state: match d.u8()? {
                    0 => None,
                    _ => Some(Arc::new(d.bytes()?)),
                },
            },
            8 => Op::Unload { module: d.name()? },
            9 => Op::Enable {
                module: d.name()?,
                on: d.bool()?,
            },
            10 => Op::Timer {
                module: d.name()?,
                name: d.str()?,
                every_ms: d.opt_u64()?,
            },
            11 => Op::Sub {
                module: d.name()?,
                publisher: d.str()?,
                event: d.str()?,
                on: d.bool()?,
            },
            12 => Op::TxnBegin {
                txn: d.u64()?,
                line: d.str()?,
                targets: dec_targets(d)?,
            },
            13 => Op::TxnEnd { txn: d.u64()? },
            14 => Op::Command(dec_record(d)?),
            16 => Op::Setting {
                name: d.str()?,
                value: d.u64()?,
            },
            17 => Op::Out {
                to: d.name()?,
                seq: d.u64()?,
                msg: d.message()?,
                producer: dec_producer(d)?,
            },
            18 => Op::OutAcked {
                to: d.name()?,
                upto: d.u64()?,
            },
            15 => Op::Trapped {
                module: d.name()?,
                seq: d.u64()?,
                id: d.u64()?,
                effects: d.u64()?,
                failed: d.failures()?,
            },
            t => return Err(Damaged(format!("an operation of unknown kind {t}"))),
        })
    }
}

impl Image {
    /// The whole image as bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        e.u64(self.next_id);
        e.u64(self.next_txn);
        e.u64(self.modules.len() as u64);
        for (name, m) in &self.modules {
            e.str(name);
            m.encode(&mut e);
        }
        e.u64(self.open.len() as u64);
        for (txn, t) in &self.open {
            e.u64(*txn);
            e.str(&t.line);
            enc_targets(&mut e, &t.targets);
            e.u64(t.swapped.len() as u64);
            for s in &t.swapped {
                e.str(s);
            }
        }
        e.u64(self.commands.len() as u64);
        for r in &self.commands {
            enc_record(&mut e, r);
        }
        e.u64(self.settings.len() as u64);
        for (n, v) in &self.settings {
            e.str(n);
            e.u64(*v);
        }
        e.u64(self.outboxes.len() as u64);
        for (to, o) in &self.outboxes {
            e.str(to);
            e.u64(o.acked);
            e.u64(o.entries.len() as u64);
            for (seq, (msg, producer)) in &o.entries {
                e.u64(*seq);
                e.message(msg);
                enc_producer(&mut e, producer);
            }
        }
        e.u64(self.marks.len() as u64);
        for ((host, to), (incarnation, last)) in &self.marks {
            e.str(host);
            e.str(to);
            e.u64(*incarnation);
            e.u64(*last);
        }
        e.0
    }

    /// Read an image written by [`Image::encode`].
    pub(crate) fn decode(bytes: &[u8]) -> Result<Image, Damaged> {
        let mut d = Dec::new(bytes);
        let mut image = Image {
            next_id: d.u64()?,
            next_txn: d.u64()?,
            ..Image::default()
        };
        for _ in 0..d.u64()? {
            let name = d.name()?;
            image.modules.insert(name, ModuleImage::decode(&mut d)?);
        }
        for _ in 0..d.u64()? {
            let txn = d.u64()?;
            let mut t = TxnImage {
                line: d.str()?,
                targets: dec_targets(&mut d)?,
                swapped: Vec::new(),
            };
            for _ in 0..d.u64()? {
                t.swapped.push(d.str()?);
            }
            image.open.insert(txn, t);
        }
        for _ in 0..d.u64()? {
            image.commands.push(dec_record(&mut d)?);
        }
        for _ in 0..d.u64()? {
            image.settings.insert(d.str()?, d.u64()?);
        }
        // An image written before hosts joined lattices ends here.
        if !d.at_end() {
            for _ in 0..d.u64()? {
                let to = d.name()?;
                let mut o = OutboxImage {
                    acked: d.u64()?,
                    ..OutboxImage::default()
                };
                for _ in 0..d.u64()? {
                    let seq = d.u64()?;
                    o.entries.insert(seq, (d.message()?, dec_producer(&mut d)?));
                }
                image.outboxes.insert(to, o);
            }
            for _ in 0..d.u64()? {
                let key = (d.name()?, d.name()?);
                image.marks.insert(key, (d.u64()?, d.u64()?));
            }
        }
        Ok(image)
    }
}

impl ModuleImage {
    fn encode(&self, e: &mut Enc) {
        enc_def(e, &self.def);
        e.bool(self.enabled);
        e.u64(self.seq);
        match &self.base {
            None => e.u8(0),
            Some(BaseImage::Init(f)) => {
                e.u8(1);
                e.failures(f);
            }
            Some(BaseImage::State(s)) => {
                e.u8(2);
                e.bytes(s);
            }
        }
        e.u64(self.log.len() as u64);
        for l in &self.log {
            e.u64(l.id);
            e.message(&l.message);
            e.failures(&l.failed);
        }
        e.u64(self.inbox.len() as u64);
        for (id, (m, p)) in &self.inbox {
            e.u64(*id);
            e.message(m);
            enc_producer(e, p);
        }
        e.u64(self.timers.len() as u64);
        for (n, ms) in &self.timers {
            e.str(n);
            e.u64(*ms);
        }
        e.u64(self.subs.len() as u64);
        for (p, ev) in &self.subs {
            e.str(p);
            e.str(ev);
        }
        match &self.finish {
            None => e.u8(0),
            Some((txn, digest)) => {
                e.u8(1);
                e.u64(*txn);
                e.str(digest);
            }
        }
        match &self.retry {
            None => e.u8(0),
            Some(r) => {
                e.u8(1);
                e.u64(r.seq);
                e.u64(r.id);
                e.message(&r.message);
                e.u64(r.effects);
                e.failures(&r.failed);
            }
        }
        e.u64(self.poison.len() as u64);
        for p in &self.poison {
            e.u64(p.at_ms);
            e.str(&p.version);
            e.str(&p.reason);
            e.message(&p.message);
        }
    }

    fn decode(d: &mut Dec) -> Result<ModuleImage, Damaged> {
        let mut m = ModuleImage {
            def: dec_def(d)?,
            enabled: d.bool()?,
            seq: d.u64()?,
            ..ModuleImage::default()
        };
        m.base = match d.u8()? {
            0 => None,
            1 => Some(BaseImage::Init(d.failures()?)),
            _ => Some(BaseImage::State(Arc::new(d.bytes()?))),
        };
        for _ in 0..d.u64()? {
            m.log.push(LoggedImage {
                id: d.u64()?,
                message: d.message()?,
                failed: d.failures()?,
            });
        }
        for _ in 0..d.u64()? {
            let id = d.u64()?;
            m.inbox.insert(id, (d.message()?, dec_producer(d)?));
        }
        for _ in 0..d.u64()? {
            m.timers.insert(d.str()?, d.u64()?);
        }
        for _ in 0..d.u64()? {
            m.subs.insert((d.str()?, d.str()?));
        }
        m.finish = match d.u8()? {
            0 => None,
            _ => Some((d.u64()?, d.str()?)),
        };
        m.retry = match d.u8()? {
            0 => None,
            _ => Some(RetryImage {
                seq: d.u64()?,
                id: d.u64()?,
                message: d.message()?,
                effects: d.u64()?,
                failed: d.failures()?,
            }),
        };
        for _ in 0..d.u64()? {
            m.poison.push(PoisonImage {
                at_ms: d.u64()?,
                version: d.str()?,
                reason: d.str()?,
                message: d.message()?,
            });
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: u8) -> Message {
        Message {
            from: "A".into(),
            kind: "num".into(),
            proto: 1,
            body: vec![n],
        }
    }

    fn load(image: &mut Image, name: &str) {
        image.apply(Op::Load {
            module: Arc::from(name),
            def: ModuleDef::default(),
            failed: Vec::new(),
        });
    }

    /// A restart drops a queued message whose sending call did not
    /// complete (that call runs again), keeps one whose call did, and
    /// ends open transactions: committed where a target swapped (the
    /// others marked to finish it), aborted where none did.
    #[test]
    fn settle_keeps_a_consistent_cut_and_ends_every_open_transaction() {
        let mut image = Image::default();
        for m in ["A", "B", "C", "D"] {
            load(&mut image, m);
        }
        let a: Arc<str> = Arc::from("A");
        // A's call 1 sent message 10 and completed; its call 2 sent 11
        // and did not.
        for (id, call) in [(10, 1), (11, 2)] {
            image.apply(Op::Enq {
                id,
                to: Arc::from("B"),
                msg: msg(id as u8),
                producer: Some((a.clone(), call)),
                stream: None,
            });
        }
        image.apply(Op::Served {
            module: a.clone(),
            seq: 1,
            id: 9,
            tick: Some(msg(9)),
            failed: Vec::new(),
        });
        let t = |names: &[&str]| -> Vec<(String, String)> {
            names
                .iter()
                .map(|n| (n.to_string(), format!("sha256:{n}2")))
                .collect()
        };
        image.apply(Op::TxnBegin {
            txn: 7,
            line: "Syn_Replace C c2 D d2".into(),
            targets: t(&["C", "D"]),
        });
        image.apply(Op::Swap {
            module: Arc::from("C"),
            txn: 7,
            path: "c2.wasm".into(),
            digest: "sha256:C2".into(),
            state: Some(Arc::new(vec![1])),
        });
        image.apply(Op::TxnBegin {
            txn: 8,
            line: "Replace B b2".into(),
            targets: t(&["B"]),
        });
        assert!(image.unsettled());
        let ended = image.settle();
        let queued: Vec<u64> = image.modules["B"].inbox.keys().copied().collect();
        assert_eq!(queued, [10], "the message of the open call is dropped");
        assert_eq!(
            ended,
            [
                (7, "Syn_Replace C c2 D d2".to_string(), true),
                (8, "Replace B b2".to_string(), false)
            ]
        );
        assert_eq!(
            image.modules["D"].finish,
            Some((7, "sha256:D2".to_string())),
            "D finishes the committed transaction"
        );
        assert_eq!(image.modules["C"].finish, None);
        assert!(!image.unsettled());
    }

    /// A lattice host's outbox after a restart: what the other host
    /// acknowledged is gone, a message of a call that did not complete is
    /// dropped (the call runs again and sends it again), and what is kept
    /// is numbered on from the last acknowledged, without a gap.
    #[test]
    fn settle_drops_outbox_messages_of_open_calls_and_numbers_the_rest_on() {
        let mut image = Image::default();
        for m in ["A", "B"] {
            load(&mut image, m);
        }
        let sink: Arc<str> = Arc::from("SINK");
        let out = |seq: u64, by: &str, call: u64| Op::Out {
            to: sink.clone(),
            seq,
            msg: msg(seq as u8),
            producer: Some((Arc::from(by), call)),
        };
        for (seq, by, call) in [(4, "A", 1), (5, "A", 1), (6, "A", 2), (7, "B", 1)] {
            image.apply(out(seq, by, call));
        }
        for m in ["A", "B"] {
            image.apply(Op::Served {
                module: Arc::from(m),
                seq: 1,
                id: 1,
                tick: Some(msg(0)),
                failed: Vec::new(),
            });
        }
        image.apply(Op::OutAcked {
            to: sink.clone(),
            upto: 4,
        });
        let back = Image::decode(&image.encode()).unwrap();
        assert_eq!(back.outboxes["SINK"].acked, 4);
        assert!(back.unsettled(), "an outbox holds messages");
        image.settle();
        let kept: Vec<(u64, u8)> = image.outboxes["SINK"]
            .entries
            .iter()
            .map(|(seq, (m, _))| (*seq, m.body[0]))
            .collect();
        assert_eq!(kept, [(5, 5), (6, 7)]);
    }

    /// What is encoded reads back the same.
    #[test]
    fn an_image_reads_back_as_written() {
        let mut image = Image::default();
        load(&mut image, "A");
        image.apply(Op::Enq {
            id: 3,
            to: Arc::from("A"),
            msg: msg(3),
            producer: None,
            stream: Some((Arc::from("b"), 9, 41)),
        });
        image.apply(Op::Timer {
            module: Arc::from("A"),
            name: "t".into(),
            every_ms: Some(5),
        });
        let back = Image::decode(&image.encode()).unwrap();
        assert_eq!(back.encode(), image.encode());
        assert_eq!(back.modules["A"].timers["t"], 5);
        let mark = (Arc::from("b"), Arc::from("A"));
        assert_eq!(back.marks[&mark], (9, 41), "the mark came with the message");
        let cut = &image.encode()[..image.encode().len() - 3];
        assert!(Image::decode(cut).is_err(), "a torn image is an error");
    }
}
