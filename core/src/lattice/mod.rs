//! A lattice of hosts on NATS: names that resolve on every host, and
//! messages between hosts with the local contract — accepted means
//! delivered once, in order per sender — which NATS alone does not give
//! (core NATS delivers at most once). The sending host numbers each
//! message per receiving module and keeps it in an outbox until the
//! receiving host acknowledges it ([`outbox`]); the receiving host keeps,
//! per sending host and module, a mark of the last number its mailbox took
//! and drops what it already holds. Hosts announce themselves with a lease
//! ([`directory`]); a host not heard of within it is down, and messages for
//! its modules wait for it. The link to the NATS server runs on a thread
//! of its own ([`link`]); module threads reach it through the bus's
//! [`Remote`] face, never by waiting on it.

mod directory;
mod group;
mod link;
mod moving;
mod outbox;
mod rejoin;
mod wire;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::bindings::Message;
use crate::bus::{Bus, LatticeView, ModuleSide, Mover, Remote, SendError};
use crate::events::Event;
use crate::runtime::Runtime;
use crate::upgrade::Core;
use directory::Directory;
use outbox::Outboxes;
use wire::{Acks, Batch, BatchWriter, Presence};

/// How a host joins a lattice.
#[derive(Clone, Debug)]
pub struct LatticeOptions {
    /// The NATS server, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// The lattice's name: hosts of one lattice see each other only.
    pub name: String,
    /// This host's id, unique in the lattice.
    pub host: String,
    /// A token the NATS server asks for (read from a file, never given on
    /// a command line).
    pub token: Option<String>,
    /// How many unacknowledged messages one outbox may hold.
    pub outbox: usize,
    /// How long this host's announcement holds; it announces itself four
    /// times per lease.
    pub lease: Duration,
}

impl LatticeOptions {
    /// Options with the defaults: outboxes of 100,000 messages, a lease of
    /// two seconds.
    pub fn new(url: &str, name: &str, host: &str) -> Self {
        LatticeOptions {
            url: url.to_string(),
            name: name.to_string(),
            host: host.to_string(),
            token: None,
            outbox: 100_000,
            lease: Duration::from_secs(2),
        }
    }

    /// Read the token from `path` (its first line).
    pub fn token_file(mut self, path: &PathBuf) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read the lattice token", path.display()))?;
        let token = text.lines().next().unwrap_or("").trim().to_string();
        anyhow::ensure!(
            !token.is_empty(),
            "{}: the lattice token file is empty",
            path.display()
        );
        self.token = Some(token);
        Ok(self)
    }

    fn check(&self) -> anyhow::Result<()> {
        for (what, v) in [("lattice name", &self.name), ("host id", &self.host)] {
            anyhow::ensure!(
                valid_id(v),
                "{what} `{v}` must be 1 to 64 letters, digits, `-` or `_` (it names NATS subjects)"
            );
        }
        anyhow::ensure!(self.outbox > 0, "--lattice-outbox must be at least 1");
        anyhow::ensure!(
            self.lease >= Duration::from_millis(200),
            "a lease under 200 ms would expire between two announcements"
        );
        Ok(())
    }
}

/// Runs one command line for an origin: its answer in text, or why it
/// failed.
pub type CommandRunner = Box<dyn Fn(&str, &str) -> Result<String, String> + Send + Sync>;

/// How long a forwarded command may take (a transaction's bound and more).
const FORWARD_BOUND: Duration = Duration::from_secs(120);

/// Whether `id` may name a lattice or a host: 1 to 64 letters, digits,
/// `-` or `_` (it names NATS subjects).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A receiving mark: the last number taken from one run of one host for
/// one module.
struct Mark {
    incarnation: u64,
    last: u64,
}

/// What the module threads and the link thread share.
pub(crate) struct Shared {
    lattice: String,
    host: String,
    lease: Duration,
    /// This run of this host: receivers start a fresh stream when it
    /// changes.
    incarnation: u64,
    bus: Weak<Bus>,
    /// What modules moved here are made with.
    core: Weak<Core>,
    /// Requests for the link thread to make (steps of a move).
    asks: tokio::sync::mpsc::UnboundedSender<moving::Ask>,
    arrivals: Mutex<moving::Arrivals>,
    outboxes: Mutex<Outboxes>,
    directory: Mutex<Directory>,
    marks: Mutex<HashMap<(String, String), Mark>>,
    /// Set when an outbox has something new to send.
    wake: tokio::sync::Notify,
    connected: AtomicBool,
    /// Whether this host's modules or subscriptions changed since it last
    /// announced itself.
    announce: AtomicBool,
    /// What runs commands forwarded here by other hosts (the operator
    /// surface installs it: it reads and renders the command language).
    commands: std::sync::OnceLock<CommandRunner>,
    /// Modules this host gave up, where each went and when.
    gone: Mutex<Vec<(String, String, Instant)>>,
    /// Whether a refusal by the server was said since the last connect.
    refused_said: AtomicBool,
    /// The NATS server's largest payload (1 MiB until it says).
    max_payload: AtomicUsize,
    sent: AtomicU64,
    received: AtomicU64,
    /// With a state directory: the marks that are durable, by (sending
    /// host, module), and the hosts (and runs) owed acknowledgements.
    durable_marks: Mutex<HashMap<(String, String), (u64, u64)>>,
    acks_due: Mutex<BTreeMap<String, u64>>,
    /// Groups this host voted yes in before a restart, undecided for it.
    voted: Mutex<Vec<String>>,
    /// This, for the threads a group's steps are asked on.
    this: Weak<Shared>,
    /// The link's runtime, for the key-value store's calls.
    handle: std::sync::OnceLock<tokio::runtime::Handle>,
    /// Where groups spanning hosts record their decisions (none if the
    /// NATS server has no JetStream).
    kv: Mutex<Option<async_nats::jetstream::kv::Store>>,
    /// Groups this host takes part in, by id.
    groups: Mutex<group::Joined>,
}

impl Shared {
    fn subject(&self, what: &str, host: &str) -> String {
        format!("liveswap.{}.{what}.{host}", self.lattice)
    }

    fn say(&self, text: String) {
        if let Some(bus) = self.bus.upgrade() {
            bus.events.emit(Event::Progress {
                origin: "lattice".into(),
                text,
            });
        }
    }

    /// This host's announcement. Leaving, its lease is zero but its names
    /// stay: messages for them wait for it (or for the host that takes
    /// over from it) to come back.
    fn presence(&self, hello: bool, leaving: bool) -> Presence {
        let (modules, subs, sides) = match self.bus.upgrade() {
            Some(bus) => {
                let names = bus
                    .names
                    .all()
                    .iter()
                    .map(|m| m.name().to_string())
                    .collect();
                let subs = bus.pubsub.all();
                let sides = match self.core.upgrade() {
                    Some(core) => core.modules.all().iter().map(|m| side(m, &subs)).collect(),
                    None => Vec::new(),
                };
                (names, subs, sides)
            }
            None => (Vec::new(), Vec::new(), Vec::new()),
        };
        Presence {
            host: self.host.clone(),
            incarnation: self.incarnation,
            lease_ms: if leaving {
                0
            } else {
                self.lease.as_millis() as u32
            },
            hello,
            modules,
            subs,
            moved: self.gone(),
            sides,
        }
    }

    /// Modules given up in the last two leases, and where each went.
    fn gone(&self) -> Vec<(String, String)> {
        let mut gone = self.gone.lock().expect("gone poisoned");
        gone.retain(|(_, _, at)| at.elapsed() < self.lease * 2);
        gone.iter()
            .map(|(n, h, _)| (n.clone(), h.clone()))
            .collect()
    }

    /// Another host's announcement.
    fn heard(&self, mut p: Presence) {
        p.moved.retain(|(_, to)| *to != self.host);
        let said = self
            .directory
            .lock()
            .expect("directory poisoned")
            .heard(p, Instant::now());
        for s in said {
            self.say(s);
        }
        // Names may resolve now, or a host be back: send what waits.
        self.wake.notify_one();
    }

    /// Batches of what is to be sent now, by receiving host, none larger
    /// than `limit` bytes (a single message may be: it was checked against
    /// the server's largest payload when it was accepted).
    fn batches(&self, limit: usize, now: Instant) -> Vec<(String, Vec<u8>, u32)> {
        let mut outboxes = self.outboxes.lock().expect("outboxes poisoned");
        let directory = self.directory.lock().expect("directory poisoned");
        let mut open: BTreeMap<String, BatchWriter> = BTreeMap::new();
        let mut done = Vec::new();
        let outboxes = &mut *outboxes;
        let sealed = &outboxes.sealed;
        for (to, ob) in outboxes.by_name.iter_mut() {
            let Some(host) = directory.host_of(to).filter(|h| directory.is_alive(h)) else {
                continue;
            };
            ob.maybe_go_back(now);
            while ob.has_unsent(sealed) {
                let batch = open
                    .entry(host.to_string())
                    .or_insert_with(|| BatchWriter::new(&self.host, self.incarnation));
                ob.take_unsent(sealed, |seq, from, msg| {
                    let fits = batch.frames() == 0 || batch.len() + msg.body.len() + 256 <= limit;
                    if fits {
                        batch.push(to, seq, from, msg);
                    }
                    fits
                });
                if ob.has_unsent(sealed) {
                    let full = open.remove(host).expect("just used");
                    let n = full.frames();
                    done.push((host.to_string(), full.finish(), n));
                }
            }
        }
        for (host, b) in open {
            let n = b.frames();
            done.push((host, b.finish(), n));
        }
        done
    }

    /// Take a batch into local mailboxes: what to acknowledge.
    fn take(&self, mut b: Batch) -> Option<Acks> {
        let durable = self.bus.upgrade().is_some_and(|bus| bus.journal.is_some());
        let acks = self.take_frames(&mut b);
        if !durable {
            return Some(acks);
        }
        // With a state directory, what was taken is acknowledged once it
        // is durable (the commit hook says so); resends are acknowledged
        // as far as that goes now.
        self.acks_due
            .lock()
            .expect("acks poisoned")
            .insert(b.host.clone(), b.incarnation);
        self.wake.notify_one();
        None
    }

    /// Take a batch's frames into local mailboxes, as far as each stream
    /// goes in order: the last number taken of each.
    fn take_frames(&self, b: &mut Batch) -> Acks {
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        let Some(bus) = self.bus.upgrade() else {
            return self.acks(b, last);
        };
        let mut marks = self.marks.lock().expect("marks poisoned");
        let mut stuck: HashSet<String> = HashSet::new();
        let mut senders = Vec::new();
        let mut taken = 0;
        for f in std::mem::take(&mut b.frames) {
            if stuck.contains(&f.to) {
                continue;
            }
            // A name not served here gets no mark: its frames wait (a
            // module moving here has its marks brought at the commit).
            let Some(mailbox) = bus.names.resolve(&f.to) else {
                stuck.insert(f.to);
                continue;
            };
            let mark = marks
                .entry((b.host.clone(), f.to.clone()))
                .or_insert_with(|| {
                    tracing::debug!(from = %b.host, to = %f.to, seq = f.seq, "a new stream");
                    Mark {
                        incarnation: b.incarnation,
                        last: f.seq.saturating_sub(1),
                    }
                });
            if mark.incarnation != b.incarnation {
                // A new run of the sending host: a new stream.
                *mark = Mark {
                    incarnation: b.incarnation,
                    last: f.seq.saturating_sub(1),
                };
            }
            if f.seq <= mark.last {
                last.insert(f.to, mark.last); // held already: a resend
                continue;
            }
            let delivered = f.seq == mark.last + 1 && {
                let from = wire::interned(&mut senders, &f.msg.from);
                // Journaled with the message (a host with a state
                // directory): the mark is durable exactly when it is.
                let host: Arc<str> = Arc::from(b.host.as_str());
                crate::store::set_stream(Some((host, b.incarnation, f.seq)));
                let ok = mailbox.deliver(&from, f.msg).is_ok();
                crate::store::set_stream(None);
                ok
            };
            if delivered {
                mark.last = f.seq;
                taken += 1;
                last.insert(f.to, f.seq);
            } else {
                // Out of order after a loss, or refused (full):
                // the rest of this stream waits for the resend.
                stuck.insert(f.to);
            }
        }
        self.received.fetch_add(taken, Ordering::Relaxed);
        self.acks(b, last)
    }

    /// Acknowledgements of what is durable, for the hosts that are due
    /// them.
    fn durable_acks(&self) -> Vec<(String, Acks)> {
        let due = std::mem::take(&mut *self.acks_due.lock().expect("acks poisoned"));
        if due.is_empty() {
            return Vec::new();
        }
        let durable = self.durable_marks.lock().expect("marks poisoned");
        due.into_iter()
            .map(|(host, incarnation)| {
                let acks = Acks {
                    host: self.host.clone(),
                    incarnation,
                    last: durable
                        .iter()
                        .filter(|((h, _), (i, _))| *h == host && *i == incarnation)
                        .map(|((_, to), (_, last))| (to.clone(), *last))
                        .collect(),
                };
                (host, acks)
            })
            .collect()
    }

    fn acks(&self, b: &Batch, last: BTreeMap<String, u64>) -> Acks {
        Acks {
            host: self.host.clone(),
            incarnation: b.incarnation,
            last: last.into_iter().collect(),
        }
    }

    /// A receiving host's acknowledgements.
    fn acked(&self, a: Acks) {
        if a.incarnation != self.incarnation {
            return; // for an earlier run of this host
        }
        let journal = self.bus.upgrade().and_then(|b| b.journal.clone());
        let mut outboxes = self.outboxes.lock().expect("outboxes poisoned");
        let directory = self.directory.lock().expect("directory poisoned");
        for (to, seq) in a.last {
            // Only the host that serves `to` speaks for it.
            if directory.host_of(&to) != Some(a.host.as_str()) {
                continue;
            }
            let budget = outboxes.budget.clone();
            if let Some(ob) = outboxes.by_name.get_mut(&to) {
                ob.acked(seq, &budget);
                if let Some(j) = &journal {
                    let to = Arc::from(to.as_str());
                    j.record(crate::store::Op::OutAcked { to, upto: seq });
                }
            }
        }
    }
}

impl Remote for Shared {
    fn host_of(&self, name: &str) -> Option<String> {
        let directory = self.directory.lock().expect("directory poisoned");
        directory.host_of(name).map(str::to_string)
    }

    fn send(&self, from: &Arc<str>, to: &str, msg: Message) -> Result<(), SendError> {
        let Some(host) = self.host_of(to) else {
            return Err(SendError::UnknownModule(to.to_string()));
        };
        let max = self
            .max_payload
            .load(Ordering::Relaxed)
            .saturating_sub(1024);
        if msg.body.len() + msg.kind.len() > max {
            return Err(SendError::TooLarge {
                what: "body",
                bytes: msg.body.len(),
                limit: max,
                flag: "the NATS server's max_payload",
            });
        }
        let bus = self.bus.upgrade();
        // With a state directory the message is journaled (made before the
        // lock is taken), and leaves once durable with the call that sent
        // it.
        let journal = bus.as_ref().and_then(|b| b.journal.clone());
        let producer = journal.as_ref().map(|_| crate::store::producer());
        let copy = journal.as_ref().map(|_| Message {
            from: from.to_string(),
            ..msg.clone()
        });
        let mut outboxes = self.outboxes.lock().expect("outboxes poisoned");
        // A module may have moved here while this sender waited for the
        // lock (it is registered under it): its mailbox, then.
        if let Some(mailbox) = bus.as_ref().and_then(|b| b.names.resolve(to)) {
            drop(outboxes);
            return mailbox.deliver(from, msg);
        }
        let seq = outboxes.push(to, &host, from, (msg, producer.clone()))?;
        drop(outboxes);
        if let (Some(j), Some(msg)) = (journal, copy) {
            j.record(crate::store::Op::Out {
                to: Arc::from(to),
                seq,
                msg,
                producer: producer.flatten(),
            });
        }
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
        Ok(())
    }

    fn publish(&self, publisher: &Arc<str>, msg: &Message) -> Vec<(String, SendError)> {
        let subscribers = self
            .directory
            .lock()
            .expect("directory poisoned")
            .subscribers(publisher, &msg.kind);
        let mut refused = Vec::new();
        for s in subscribers {
            match self.send(publisher, &s, msg.clone()) {
                // Unloaded since: not there to receive, as on one host.
                Ok(()) | Err(SendError::UnknownModule(_)) => {}
                Err(e) => refused.push((s, e)),
            }
        }
        refused
    }

    fn changed(&self) {
        self.announce.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    fn mover(&self) -> &dyn Mover {
        self
    }

    fn forward(&self, host: &str, line: &str, origin: &str) -> Result<String, String> {
        let payload = wire::forward(&self.host, self.incarnation, origin, line);
        self.request(host, payload, FORWARD_BOUND)
    }

    fn sides(&self) -> Vec<ModuleSide> {
        self.directory.lock().expect("directory poisoned").sides()
    }

    fn coordinate(
        &self,
        line: &str,
        bound: Duration,
        parts: BTreeMap<String, Vec<crate::bus::PartTarget>>,
    ) -> Result<Box<dyn crate::bus::Group>, String> {
        let me = self.this.upgrade().ok_or("the lattice link has stopped")?;
        me.coordinating(line, bound, parts)
    }

    fn view(&self) -> LatticeView {
        let now = Instant::now();
        let me = self.presence(false, false);
        let mut hosts = vec![crate::bus::HostRow {
            id: self.host.clone(),
            alive: true,
            seen: Duration::ZERO,
            modules: me.modules,
            subscriptions: me.subs.len(),
        }];
        hosts.extend(self.directory.lock().expect("directory poisoned").rows(now));
        let outboxes = self.outboxes.lock().expect("outboxes poisoned");
        LatticeView {
            lattice: self.lattice.clone(),
            host: self.host.clone(),
            connected: self.connected.load(Ordering::Relaxed),
            lease: self.lease,
            hosts,
            outboxed: (outboxes.waiting(), outboxes.capacity),
            sent: self.sent.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            decisions: self
                .kv
                .lock()
                .expect("kv poisoned")
                .as_ref()
                .map(|s| s.name.clone()),
            groups: self.groups.lock().expect("groups poisoned").len(),
        }
    }
}

/// This host's run as its receivers know its streams: with a state
/// directory, the one it kept (its receivers' marks go on after a
/// restart), recorded the first time; otherwise a new one. And what the
/// directory kept of its outboxes.
fn incarnation(bus: &Bus) -> anyhow::Result<(u64, Option<crate::bus::RestoredLattice>)> {
    let restored = bus.restored.lock().expect("restored poisoned").take();
    if let Some(i) = restored.as_ref().and_then(|r| r.incarnation) {
        return Ok((i, restored));
    }
    let mut seed = [0u8; 8];
    getrandom::getrandom(&mut seed).context("a random incarnation")?;
    let incarnation = u64::from_le_bytes(seed);
    if let Some(j) = &bus.journal {
        j.record_durable(crate::store::Op::Setting {
            name: crate::store::LATTICE_INCARNATION.to_string(),
            value: incarnation,
        })
        .map_err(anyhow::Error::msg)?;
    }
    Ok((incarnation, restored))
}

impl Shared {
    /// Take back the outboxes a restart found: sent again at once.
    fn restore(&self, restored: Option<crate::bus::RestoredLattice>) {
        let Some(r) = restored else {
            return;
        };
        *self.voted.lock().expect("voted poisoned") = r.voted;
        let mut outboxes = self.outboxes.lock().expect("outboxes poisoned");
        let mut directory = self.directory.lock().expect("directory poisoned");
        for (to, o) in r.outboxes {
            let entries: Vec<(u64, Message)> = o
                .entries
                .into_iter()
                .map(|(seq, (m, _))| (seq, m))
                .collect();
            if !entries.is_empty() {
                tracing::debug!(to = %to, n = entries.len(), "outbox restored");
            }
            outboxes.restore(&to, o.acked, entries);
            // A name this host sent to before: its messages wait for the
            // host that serves it to be heard of, rather than be refused.
            directory.expect(&to);
        }
        drop((outboxes, directory));
        let mut marks = self.marks.lock().expect("marks poisoned");
        let mut durable = self.durable_marks.lock().expect("marks poisoned");
        for ((host, to), (incarnation, last)) in r.marks {
            let key = (host.to_string(), to.to_string());
            durable.insert(key.clone(), (incarnation, last));
            marks.insert(key, Mark { incarnation, last });
        }
    }

    /// The journal committed `ops`: messages they made durable, and calls
    /// they completed, may let messages leave; messages taken in that are
    /// durable now are owed acknowledgements. One lock of each, and one
    /// wake, per batch.
    fn committed(&self, ops: &[&crate::store::Op]) {
        use crate::store::Op;
        let mut woke = false;
        let mut outboxes = self.outboxes.lock().expect("outboxes poisoned");
        for op in ops {
            match op {
                Op::Out { to, seq, .. } => {
                    if let Some(ob) = outboxes.by_name.get_mut(&**to) {
                        ob.durable(*seq);
                        woke = true;
                    }
                }
                Op::Served { module, seq, .. } | Op::Trapped { module, seq, .. } => {
                    let s = outboxes.sealed.entry(module.clone()).or_default();
                    *s = (*s).max(*seq);
                    woke = true;
                }
                _ => {}
            }
        }
        drop(outboxes);
        let mut durable = self.durable_marks.lock().expect("marks poisoned");
        let mut due = self.acks_due.lock().expect("acks poisoned");
        for op in ops {
            if let Op::Enq {
                to,
                stream: Some((host, incarnation, seq)),
                ..
            } = op
            {
                let key = (host.to_string(), to.to_string());
                let mark = durable.entry(key).or_insert((*incarnation, 0));
                let last = if mark.0 == *incarnation {
                    mark.1.max(*seq)
                } else {
                    *seq
                };
                *mark = (*incarnation, last);
                due.insert(host.to_string(), *incarnation);
                woke = true;
            }
        }
        drop((durable, due));
        if woke {
            self.wake.notify_one();
        }
    }
}

/// A module's protocol declarations and senders (those that sent to it,
/// and the publishers of its subscriptions `subs`), as announced.
fn side(m: &crate::proxy::ModuleProxy, subs: &[(String, String, String)]) -> ModuleSide {
    let version = m.version();
    let info = version.info();
    let mut senders = m.senders();
    for (publisher, _, subscriber) in subs {
        if subscriber == m.name() && !senders.contains(publisher) {
            senders.push(publisher.clone());
        }
    }
    ModuleSide {
        name: m.name().to_string(),
        version: info.map(|i| i.version.clone()).unwrap_or_default(),
        speaks: info.map(|i| i.speaks.clone()).unwrap_or_default(),
        accepts: info.map(|i| i.accepts.clone()).unwrap_or_default(),
        senders,
    }
}

/// This host's membership of a lattice. Dropping it leaves the lattice.
pub struct Lattice {
    shared: Arc<Shared>,
    link: Option<link::Link>,
}

impl Lattice {
    /// Join the lattice `opts` names, through its NATS server. The host
    /// serves its local modules whether or not the server is reachable;
    /// the link connects (and reconnects) in the background.
    pub fn join(rt: &Runtime, opts: LatticeOptions) -> anyhow::Result<Lattice> {
        opts.check()?;
        let bus = rt.bus();
        let (asks, asked) = tokio::sync::mpsc::unbounded_channel();
        let (incarnation, restored) = incarnation(bus)?;
        let shared = Arc::new_cyclic(|this| Shared {
            lattice: opts.name.clone(),
            host: opts.host.clone(),
            lease: opts.lease,
            incarnation,
            bus: Arc::downgrade(bus),
            core: Arc::downgrade(rt.core()),
            asks,
            arrivals: Mutex::new(moving::Arrivals::default()),
            outboxes: Mutex::new(Outboxes::new(opts.outbox, bus.budget.clone())),
            directory: Mutex::new(Directory::default()),
            marks: Mutex::new(HashMap::new()),
            wake: tokio::sync::Notify::new(),
            connected: AtomicBool::new(false),
            refused_said: AtomicBool::new(false),
            gone: Mutex::new(Vec::new()),
            commands: std::sync::OnceLock::new(),
            announce: AtomicBool::new(false),
            max_payload: AtomicUsize::new(1 << 20),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            this: this.clone(),
            durable_marks: Mutex::new(HashMap::new()),
            acks_due: Mutex::new(BTreeMap::new()),
            voted: Mutex::new(Vec::new()),
            handle: std::sync::OnceLock::new(),
            kv: Mutex::new(None),
            groups: Mutex::new(group::Joined::new()),
        });
        let remote: Arc<dyn Remote> = shared.clone();
        anyhow::ensure!(
            bus.remote.set(remote).is_ok(),
            "this host has joined a lattice already"
        );
        shared.restore(restored);
        if let Some(j) = &bus.journal {
            let weak = Arc::downgrade(&shared);
            j.on_commit(Box::new(move |ops| {
                if let Some(s) = weak.upgrade() {
                    s.committed(ops);
                }
            }))
            .map_err(anyhow::Error::msg)?;
        }
        let link = link::Link::start(shared.clone(), &opts, asked)?;
        Ok(Lattice {
            shared,
            link: Some(link),
        })
    }

    /// Run commands other hosts forward here (for modules this host
    /// serves) with `run`.
    pub fn take_commands(&self, run: CommandRunner) {
        let _ = self.shared.commands.set(run);
    }

    /// What this host sees of the lattice.
    pub fn view(&self) -> LatticeView {
        self.shared.view()
    }

    /// Leave: tell the other hosts (they mark this one down at once) and
    /// stop the link.
    pub fn leave(mut self) {
        if let Some(l) = self.link.take() {
            l.stop();
        }
    }
}

impl Drop for Lattice {
    fn drop(&mut self) {
        if let Some(l) = self.link.take() {
            l.stop();
        }
    }
}
