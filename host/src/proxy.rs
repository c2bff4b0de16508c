//! The module proxy (thesis `ModuleType`): a module's stable name and
//! mailbox, and the thread that owns its current implementation.
//!
//! A `ModuleProxy` is a cloneable handle. Exactly one thread — the module's
//! worker — touches the implementation's `Store`; everyone else talks to it
//! through two channels: the *mailbox* (application messages and TERM
//! markers, in order) and the *control* channel (enable, disable, vote,
//! abort, stop), which the worker reads first.
//!
//! An upgrade needs no separate buffer: the worker appends TERM to the
//! mailbox, serves everything ahead of it, and whatever arrives after TERM
//! simply waits in the same queue behind it. On commit the new
//! implementation continues from that queue, on abort the old one does, so
//! order is kept and nothing is lost either way.

mod recovery;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TryRecvError, select, unbounded};

use crate::bindings::{Level, Message};
use crate::command::Grant;
use crate::events::{Event, ModuleState};
use crate::implementation::{GuestFault, Implementation, InstanceLimits};
use crate::rates::RateWindow;
use crate::repository::Version;
use crate::services::{SendError, Services, TIMER_SENDER};
use crate::txn::{Decision, Report, Txn};

use recovery::Base;
pub use recovery::Poisoned;
pub(crate) use recovery::{CHECKPOINT_EVERY, Group};
use recovery::{Probation, Recovery, Retry};

/// What the mailbox holds.
pub(crate) enum Item {
    /// An application message (or timer tick, or event).
    Msg(Message),
    /// The end of the old implementation's share of the mailbox.
    Term(Arc<Txn>),
}

/// Control messages, served before the mailbox.
pub(crate) enum Control {
    /// Run the guest's `enable` and serve the mailbox again.
    Enable(Sender<Result<(), String>>),
    /// Run the guest's `disable` and hold the mailbox.
    Disable(Sender<Result<(), String>>),
    /// CanCommit: start the vote with `new` as the candidate.
    Vote {
        txn: Arc<Txn>,
        new: Box<Implementation>,
    },
    /// The coordinator aborted before this module reached TERM.
    Abort { txn: u64 },
    /// Unload: drain what is queued, then end. The name is already gone.
    Stop(Sender<()>),
    /// CanCommit of the automatic rollback of transaction `group`.
    Rollback { txn: Arc<Txn>, group: u64 },
}

/// How a new worker starts.
pub(crate) enum Start {
    /// Call `enable` and serve at once (`Load`); say so on the channel.
    Now(Sender<()>),
    /// Wait for a transaction's decision (`Syn_Load`, `Syn_Upgrade`):
    /// start on commit, end on abort.
    OnDecision(Arc<Txn>),
}

/// A point-in-time view of a module, for `Status`.
#[derive(Clone, Debug)]
pub struct ProxyStatus {
    /// Module name.
    pub name: String,
    /// Lifecycle state.
    pub state: ModuleState,
    /// The version behind the name.
    pub version: Arc<Version>,
    /// Messages queued and not yet served.
    pub depth: usize,
    /// Mailbox capacity.
    pub capacity: usize,
    /// Messages served.
    pub served: u64,
    /// `service` calls that returned an error.
    pub errors: u64,
    /// Traps and deadline overruns.
    pub faults: u64,
    /// The last fault, if any.
    pub last_fault: Option<String>,
    /// Arrivals per second, per sender, over the recent window.
    pub rates: Vec<(String, f64)>,
    /// Capabilities granted at `Load`.
    pub grants: Vec<Grant>,
    /// Linear-memory limit of each of its instances, in bytes.
    pub memory_limit: usize,
    /// Times it was rebuilt from its recovery point after a trap.
    pub recoveries: u64,
    /// Messages set aside as poison (`Poison NAME` lists them).
    pub poisoned: usize,
    /// What it would be rebuilt from, and whether it is on probation.
    pub recovery_point: String,
    /// Messages served since that point (replayed by a recovery).
    pub logged: usize,
}

struct Shared {
    name: Arc<str>,
    /// Capabilities, kept across swaps: every version gets the same.
    grants: Arc<[Grant]>,
    /// Memory limit and call deadline of every instance of this module.
    limits: InstanceLimits,
    /// Messages set aside after trapping twice.
    poison: Mutex<Vec<Poisoned>>,
    recoveries: AtomicU64,
    /// Messages logged since the recovery point.
    logged: AtomicUsize,
    /// Description of the recovery point, for `Status`.
    point: Mutex<String>,
    data_tx: Sender<Item>,
    ctl_tx: Sender<Control>,
    // The gate closes at Unload. A read lock per `send` (uncontended: a few
    // ns) makes "accepted" and "queued before the worker's final drain" the
    // same thing: Unload takes the write lock, so no send is half done when
    // the worker drains.
    gate: RwLock<bool>,
    depth: AtomicUsize,
    capacity: AtomicUsize,
    /// Timer ticks are only queued while the module is enabled.
    ticking: AtomicBool,
    state: Mutex<(ModuleState, Arc<Version>, Option<String>)>,
    served: AtomicU64,
    errors: AtomicU64,
    faults: AtomicU64,
    // Per-sender arrival counts. A Mutex per receiver: senders to the same
    // module contend briefly; senders to different modules never do.
    arrivals: Mutex<HashMap<Arc<str>, RateWindow>>,
    /// Timers with a tick waiting in the mailbox: not queued twice.
    pending_ticks: Mutex<HashSet<String>>,
    origin: Instant,
    /// Start of the last `service` call, in ns since `origin`.
    last_start_ns: AtomicU64,
    /// Longest time between the starts of two consecutive `service` calls
    /// since the last reset: the outside view of a pause.
    max_gap_ns: AtomicU64,
    worker: Mutex<Option<JoinHandle<()>>>,
}

/// Handle on one module: its name, mailbox and worker.
#[derive(Clone)]
pub struct ModuleProxy(Arc<Shared>);

impl ModuleProxy {
    /// A proxy for `name` whose worker will run `imp`. Nothing runs until
    /// [`ModuleProxy::spawn`].
    pub(crate) fn new(
        name: Arc<str>,
        version: Arc<Version>,
        capacity: usize,
        grants: Arc<[Grant]>,
        limits: InstanceLimits,
    ) -> (Self, Receiver<Item>, Receiver<Control>) {
        let (data_tx, data_rx) = unbounded();
        let (ctl_tx, ctl_rx) = unbounded();
        let shared = Shared {
            name,
            grants,
            limits,
            poison: Mutex::new(Vec::new()),
            recoveries: AtomicU64::new(0),
            logged: AtomicUsize::new(0),
            point: Mutex::new(String::new()),
            data_tx,
            ctl_tx,
            gate: RwLock::new(true),
            depth: AtomicUsize::new(0),
            capacity: AtomicUsize::new(capacity),
            ticking: AtomicBool::new(false),
            state: Mutex::new((ModuleState::Disabled, version, None)),
            served: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            arrivals: Mutex::new(HashMap::new()),
            pending_ticks: Mutex::new(HashSet::new()),
            origin: Instant::now(),
            last_start_ns: AtomicU64::new(0),
            max_gap_ns: AtomicU64::new(0),
            worker: Mutex::new(None),
        };
        (ModuleProxy(Arc::new(shared)), data_rx, ctl_rx)
    }

    /// Start the worker thread that owns `imp`, whose last call was its
    /// `init` with `config`: the first recovery point.
    pub(crate) fn spawn(
        &self,
        mut imp: Box<Implementation>,
        config: &[u8],
        services: Arc<Services>,
        data_rx: Receiver<Item>,
        ctl_rx: Receiver<Control>,
        start: Start,
    ) {
        let worker = Worker {
            recovery: Recovery::new(Base::Init(Arc::from(config), Arc::new(imp.take_failures()))),
            probation: None,
            retry: None,
            handed: None,
            shared: self.0.clone(),
            services,
            imp,
            data_rx,
            ctl_rx,
            serving: false,
            vote: None,
            skip: Vec::new(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("module-{}", self.0.name))
            .spawn(move || worker.run(start))
            .expect("spawning a module thread");
        *self.0.worker.lock().expect("proxy poisoned") = Some(handle);
    }

    /// The module's name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Capabilities granted at `Load`.
    pub fn grants(&self) -> Arc<[Grant]> {
        self.0.grants.clone()
    }

    /// Memory limit and call deadline of its instances.
    pub(crate) fn limits(&self) -> &InstanceLimits {
        &self.0.limits
    }

    /// The messages set aside as poison, oldest first.
    pub fn poison(&self) -> Vec<Poisoned> {
        self.0.poison.lock().expect("proxy poisoned").clone()
    }

    /// The version behind the name.
    pub fn version(&self) -> Arc<Version> {
        self.0.state.lock().expect("proxy poisoned").1.clone()
    }

    /// The lifecycle state.
    pub fn state(&self) -> ModuleState {
        self.0.state.lock().expect("proxy poisoned").0
    }

    /// Messages queued, not yet served.
    pub fn depth(&self) -> usize {
        self.0.depth.load(Ordering::Relaxed)
    }

    /// Longest time between the starts of two consecutive messages since
    /// the last [`ModuleProxy::reset_max_gap`], in microseconds.
    pub fn max_gap_us(&self) -> u64 {
        self.0.max_gap_ns.load(Ordering::Relaxed) / 1000
    }

    /// Start a new measure of [`ModuleProxy::max_gap_us`].
    pub fn reset_max_gap(&self) {
        self.0.max_gap_ns.store(0, Ordering::Relaxed);
        self.0.last_start_ns.store(0, Ordering::Relaxed);
    }

    /// Change the mailbox capacity.
    pub fn set_capacity(&self, capacity: usize) {
        self.0.capacity.store(capacity, Ordering::Relaxed);
    }

    /// Senders seen so far (for the protocol-edge check).
    pub fn senders(&self) -> Vec<String> {
        self.0
            .arrivals
            .lock()
            .expect("proxy poisoned")
            .keys()
            .filter(|k| !k.starts_with('$'))
            .map(|k| k.to_string())
            .collect()
    }

    /// A snapshot for `Status`.
    pub fn status(&self) -> ProxyStatus {
        let (state, version, last_fault) = self.0.state.lock().expect("proxy poisoned").clone();
        let now = Instant::now();
        let mut rates: Vec<(String, f64)> = self
            .0
            .arrivals
            .lock()
            .expect("proxy poisoned")
            .iter()
            .map(|(k, w)| (k.to_string(), w.rate(self.0.origin, now)))
            .collect();
        rates.sort_by(|a, b| a.0.cmp(&b.0));
        ProxyStatus {
            name: self.0.name.to_string(),
            state,
            version,
            depth: self.depth(),
            capacity: self.0.capacity.load(Ordering::Relaxed),
            served: self.0.served.load(Ordering::Relaxed),
            errors: self.0.errors.load(Ordering::Relaxed),
            faults: self.0.faults.load(Ordering::Relaxed),
            last_fault,
            rates,
            grants: self.0.grants.to_vec(),
            memory_limit: self.0.limits.memory,
            recoveries: self.0.recoveries.load(Ordering::Relaxed),
            poisoned: self.0.poison.lock().expect("proxy poisoned").len(),
            recovery_point: self.0.point.lock().expect("proxy poisoned").clone(),
            logged: self.0.logged.load(Ordering::Relaxed),
        }
    }

    /// Accept `msg` into the mailbox, or say why not.
    pub(crate) fn deliver(&self, from: &Arc<str>, msg: Message) -> Result<(), SendError> {
        let s = &*self.0;
        let open = s.gate.read().expect("proxy poisoned");
        if !*open {
            return Err(SendError::Closing(s.name.to_string()));
        }
        let capacity = s.capacity.load(Ordering::Relaxed);
        if s.depth.fetch_add(1, Ordering::AcqRel) >= capacity {
            s.depth.fetch_sub(1, Ordering::AcqRel);
            return Err(SendError::Full {
                name: s.name.to_string(),
                capacity,
            });
        }
        {
            let mut arrivals = s.arrivals.lock().expect("proxy poisoned");
            let now = Instant::now();
            match arrivals.get_mut(&**from) {
                Some(w) => w.record(s.origin, now),
                None => {
                    let mut w = RateWindow::default();
                    w.record(s.origin, now);
                    arrivals.insert(from.clone(), w);
                }
            }
        }
        // The receiver lives as long as `Shared`, which we hold: cannot fail.
        let _ = s.data_tx.send(Item::Msg(msg));
        Ok(())
    }

    /// Queue a tick of timer `timer`, unless the module is held or a tick
    /// of that timer is already waiting.
    pub(crate) fn tick(&self, timer: &str) {
        let s = &*self.0;
        if !s.ticking.load(Ordering::Acquire) {
            return;
        }
        {
            let mut pending = s.pending_ticks.lock().expect("proxy poisoned");
            if !pending.insert(timer.to_string()) {
                return;
            }
        }
        s.depth.fetch_add(1, Ordering::AcqRel);
        let _ = s.data_tx.send(Item::Msg(Message {
            from: TIMER_SENDER.to_string(),
            kind: timer.to_string(),
            proto: 0,
            body: Vec::new(),
        }));
    }

    pub(crate) fn control(&self, c: Control) -> bool {
        self.0.ctl_tx.send(c).is_ok()
    }

    /// Close the mailbox: every later send fails. Waits for sends under way.
    pub(crate) fn close(&self) {
        *self.0.gate.write().expect("proxy poisoned") = false;
    }

    /// Wait for the worker thread to end (after `Stop`).
    pub(crate) fn join(&self) {
        let handle = self.0.worker.lock().expect("proxy poisoned").take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// A vote in progress: TERM is queued, the candidate waits.
struct PendingVote {
    txn: Arc<Txn>,
    new: Box<Implementation>,
    started: Instant,
}

struct Worker {
    shared: Arc<Shared>,
    services: Arc<Services>,
    imp: Box<Implementation>,
    data_rx: Receiver<Item>,
    ctl_rx: Receiver<Control>,
    /// Enabled: the mailbox is served.
    serving: bool,
    vote: Option<PendingVote>,
    /// Aborted transactions whose TERM is still in the mailbox.
    skip: Vec<u64>,
    /// The state the old version put in the last vote, until the
    /// decision: the new version's recovery point on commit, and its size
    /// goes into the report either way.
    handed: Option<Vec<u8>>,
    /// What the module is rebuilt from after a trap.
    recovery: Recovery,
    /// After a commit: what a rollback would return to.
    probation: Option<Probation>,
    /// A message the instance trapped on during probation, with the count
    /// of effects it made, to be served again once the group rolled back.
    retry: Option<Retry>,
}

enum Step {
    Ctl(Control),
    Data(Item),
    /// Nothing came before the probation window ended.
    Idle,
    Exit,
}

impl Worker {
    fn run(mut self, start: Start) {
        self.describe_point();
        match start {
            Start::Now(started) => {
                self.start();
                let _ = started.send(());
            }
            Start::OnDecision(txn) => {
                let decision = txn.wait();
                let committed = decision == Decision::Commit;
                if committed {
                    self.start();
                }
                txn.report(Report::done(&self.shared.name));
                if !committed {
                    return;
                }
            }
        }
        loop {
            let step = match self.ctl_rx.try_recv() {
                Ok(c) => Step::Ctl(c),
                Err(TryRecvError::Disconnected) => Step::Exit,
                Err(TryRecvError::Empty) if self.draining() => match self.probation_left() {
                    None => select! {
                        recv(self.ctl_rx) -> c => c.map(Step::Ctl).unwrap_or(Step::Exit),
                        recv(self.data_rx) -> d => d.map(Step::Data).unwrap_or(Step::Exit),
                    },
                    Some(left) => select! {
                        recv(self.ctl_rx) -> c => c.map(Step::Ctl).unwrap_or(Step::Exit),
                        recv(self.data_rx) -> d => d.map(Step::Data).unwrap_or(Step::Exit),
                        default(left) => Step::Idle,
                    },
                },
                Err(TryRecvError::Empty) => self.ctl_rx.recv().map(Step::Ctl).unwrap_or(Step::Exit),
            };
            match step {
                Step::Ctl(c) => {
                    if !self.control(c) {
                        return;
                    }
                }
                Step::Data(item) => self.item(item),
                Step::Idle => {
                    let now = self.shared.origin.elapsed().as_nanos() as u64;
                    if self.probation.as_ref().is_some_and(|p| now >= p.until_ns) {
                        self.end_probation(now);
                    }
                }
                Step::Exit => return,
            }
        }
    }

    /// Time left in the probation window, if on probation.
    fn probation_left(&self) -> Option<std::time::Duration> {
        let p = self.probation.as_ref()?;
        let now = self.shared.origin.elapsed().as_nanos() as u64;
        Some(std::time::Duration::from_nanos(
            p.until_ns.saturating_sub(now),
        ))
    }

    /// Whether the mailbox is being served: enabled, or quiescing for a
    /// vote, and alive.
    fn draining(&self) -> bool {
        !self.imp.is_dead() && (self.serving || self.vote.is_some())
    }

    fn start(&mut self) {
        let _ = self.switch(true);
    }

    /// Run the guest's `enable` (or `disable`), then serve (or hold) the
    /// mailbox and its timer ticks. A trap faults the module.
    fn switch(&mut self, on: bool) -> Result<(), String> {
        if self.imp.is_dead() {
            return Err("the module is faulted".to_string());
        }
        self.serving = on;
        self.shared.ticking.store(on, Ordering::Release);
        match if on {
            self.imp.enable()
        } else {
            self.imp.disable()
        } {
            Ok(()) => {
                let state = if on {
                    ModuleState::Serving
                } else {
                    ModuleState::Disabled
                };
                self.set_state(state, None);
                Ok(())
            }
            Err(f) => {
                let e = f.to_string();
                self.fault(f);
                Err(e)
            }
        }
    }

    /// Record `state` (transient ones, swapped and resumed, are recorded as
    /// serving) and announce it.
    fn set_state(&self, state: ModuleState, detail: Option<String>) {
        {
            let mut st = self.shared.state.lock().expect("proxy poisoned");
            st.0 = match state {
                ModuleState::Swapped | ModuleState::Resumed => ModuleState::Serving,
                s => s,
            };
            if state == ModuleState::Faulted {
                st.2 = detail.clone();
            }
        }
        self.emit_state(state, detail);
    }

    /// Announce `state` on the event stream.
    fn emit_state(&self, state: ModuleState, detail: Option<String>) {
        let version = self.shared.state.lock().expect("proxy poisoned").1.clone();
        self.services.events.emit(Event::Module {
            module: self.shared.name.to_string(),
            version: version.label().to_string(),
            state,
            detail,
        });
    }

    fn log(&self, level: Level, line: String) {
        self.services.events.emit(Event::Log {
            module: self.shared.name.to_string(),
            version: self.imp.label().to_string(),
            level,
            line,
        });
    }

    fn fault(&mut self, f: GuestFault) {
        self.shared.faults.fetch_add(1, Ordering::Relaxed);
        self.shared.ticking.store(false, Ordering::Release);
        self.set_state(ModuleState::Faulted, Some(f.to_string()));
    }

    /// Serve one control message; false ends the worker.
    fn control(&mut self, c: Control) -> bool {
        match c {
            Control::Enable(reply) => {
                let _ = reply.send(self.switch(true));
            }
            Control::Disable(reply) => {
                let _ = reply.send(self.switch(false));
            }
            Control::Vote { txn, new } => self.begin_vote(txn, new),
            Control::Abort { txn } => {
                if self.vote.as_ref().is_some_and(|v| v.txn.id == txn) {
                    let pv = self.vote.take().expect("checked");
                    self.services.bury(pv.new);
                    self.skip.push(txn);
                    self.resume_old();
                    pv.txn.report(Report::done(&self.shared.name));
                }
            }
            Control::Rollback { txn, group } => self.rollback(txn, group),
            Control::Stop(reply) => {
                if self.imp.is_dead() {
                    // Drain with a rebuilt instance rather than drop.
                    let retry = self.retry.take();
                    self.recover(retry);
                }
                let kept = self.data_rx.len();
                if self.imp.is_dead() && kept > 0 {
                    self.log(
                        Level::Error,
                        format!("unloaded while faulted: {kept} queued message(s) were not served"),
                    );
                }
                self.serving = false;
                self.shared.ticking.store(false, Ordering::Release);
                if !self.imp.is_dead()
                    && let Err(f) = self.imp.disable()
                {
                    self.fault(f);
                }
                // The gate is closed: this drains everything ever accepted.
                while let Ok(item) = self.data_rx.try_recv() {
                    match item {
                        Item::Msg(m) if !self.imp.is_dead() => self.serve(m),
                        _ => {}
                    }
                }
                self.set_state(ModuleState::Stopped, None);
                let _ = reply.send(());
                return false;
            }
        }
        true
    }

    fn item(&mut self, item: Item) {
        match item {
            Item::Msg(m) => self.serve(m),
            Item::Term(txn) => self.reach_term(txn),
        }
    }

    fn serve(&mut self, m: Message) {
        self.shared.depth.fetch_sub(1, Ordering::AcqRel);
        // Only this thread writes `last_start_ns`; readers reset it to 0.
        let now = self.shared.origin.elapsed().as_nanos() as u64;
        let last = self.shared.last_start_ns.swap(now, Ordering::Relaxed);
        if last != 0 {
            self.shared
                .max_gap_ns
                .fetch_max(now.saturating_sub(last), Ordering::Relaxed);
        }
        if m.from == TIMER_SENDER {
            self.shared
                .pending_ticks
                .lock()
                .expect("proxy poisoned")
                .remove(&m.kind);
        }
        if self.probation.as_ref().is_some_and(|p| now >= p.until_ns) {
            self.end_probation(now);
        }
        self.call(m, now);
    }

    /// `service(m)`, and what follows from its outcome: the log of the
    /// recovery point, probation, and on a trap recovery or rollback.
    fn call(&mut self, m: Message, now_ns: u64) {
        match self.imp.service(&m) {
            Ok(Ok(())) => {
                self.shared.served.fetch_add(1, Ordering::Relaxed);
                self.served(m, false, now_ns);
            }
            Ok(Err(e)) => {
                self.shared.served.fetch_add(1, Ordering::Relaxed);
                self.shared.errors.fetch_add(1, Ordering::Relaxed);
                self.log(
                    Level::Warn,
                    format!("service error on `{}` from {}: {e}", m.kind, m.from),
                );
                self.served(m, true, now_ns);
            }
            Err(f) => {
                let retry = Retry {
                    effects: self.imp.effects(),
                    failed: self.imp.take_failures(),
                    message: m,
                };
                let m = &retry.message;
                let reason = format!(
                    "{} v{}: {f} on `{}` from {}",
                    self.shared.name,
                    self.imp.label(),
                    m.kind,
                    m.from
                );
                self.fault(f);
                if let Some(pv) = self.vote.take() {
                    // The old version died before TERM: vote NO now.
                    self.skip.push(pv.txn.id);
                    let no = format!("{reason} (old version, before quiescence)");
                    self.refuse_vote(&pv.txn, pv.new, no);
                }
                if self.probation.is_some() {
                    self.retry = Some(retry);
                    self.breach(reason);
                } else {
                    self.recover(Some(retry));
                }
            }
        }
    }

    fn begin_vote(&mut self, txn: Arc<Txn>, new: Box<Implementation>) {
        let name = self.shared.name.to_string();
        let refuse = if self.imp.is_dead() {
            Some(format!("{name} is faulted"))
        } else if self.vote.is_some() {
            Some(format!("{name} is already in a transaction"))
        } else {
            None
        };
        if let Some(reason) = refuse {
            self.refuse_vote(&txn, new, reason);
            return;
        }
        self.shared.ticking.store(false, Ordering::Release);
        self.set_state(ModuleState::Quiescing, None);
        let _ = self.shared.data_tx.send(Item::Term(txn.clone()));
        self.vote = Some(PendingVote {
            txn,
            new,
            started: Instant::now(),
        });
        if let Err(f) = self.imp.disable() {
            self.fault(f);
            // reach_term will find the instance dead and vote NO.
        }
    }

    /// Vote NO without swapping: abort `txn`, drop the candidate, done.
    fn refuse_vote(&self, txn: &Txn, new: Box<Implementation>, reason: String) {
        txn.report(Report::Vote {
            module: self.shared.name.to_string(),
            quiesce_us: None,
            no: Some(reason),
        });
        txn.decide(Decision::Abort);
        self.services.bury(new);
        txn.report(Report::done(&self.shared.name));
    }

    /// The old implementation has served everything queued before TERM.
    fn reach_term(&mut self, txn: Arc<Txn>) {
        if let Some(i) = self.skip.iter().position(|id| *id == txn.id) {
            self.skip.swap_remove(i);
            return;
        }
        let Some(pv) = self.vote.take_if(|v| v.txn.id == txn.id) else {
            return;
        };
        let quiesced = Instant::now();
        let quiesce_us = quiesced.duration_since(pv.started).as_micros() as u64;
        let name = self.shared.name.clone();
        let mut new = pv.new;

        // Vote: put-state on the old version, get-state on the new one.
        let no = if txn.decision() == Decision::Abort {
            Some(format!("{name}: the transaction was already aborted"))
        } else {
            self.transfer(&name, &mut new)
        };
        let vote = |no| Report::Vote {
            module: name.to_string(),
            quiesce_us: Some(quiesce_us),
            no,
        };
        // The last YES of a pure replacement decides at once; its vote is
        // built and sent after the swap, so nothing is allocated and no
        // other thread is woken inside the pause.
        let (decision, vote_after) = match no {
            Some(reason) => {
                txn.report(vote(Some(reason)));
                (txn.decide(Decision::Abort), false)
            }
            None if txn.vote_yes() && txn.auto_commit => {
                let d = if Instant::now() <= txn.deadline {
                    txn.decide(Decision::Commit)
                } else {
                    txn.decide(Decision::Abort)
                };
                (d, true)
            }
            None => {
                txn.report(vote(None));
                (txn.wait(), false)
            }
        };
        if decision == Decision::Commit {
            let old = std::mem::replace(&mut self.imp, new);
            let enabled = self.imp.enable();
            let resumed = Instant::now();
            let buffered = self.data_rx.len();
            let replaced = old.version().clone();
            self.services.bury(old);
            self.serving = true;
            {
                // Serving before the coordinator hears Done, so that the
                // next command finds the module ready to upgrade again.
                let mut st = self.shared.state.lock().expect("proxy poisoned");
                st.1 = self.imp.version().clone();
                if enabled.is_ok() {
                    st.0 = ModuleState::Serving;
                }
            }
            // The recovery point is now the state just handed over: the
            // new version accepted it, and the old one wrote it. Set before
            // the coordinator hears Done, as the state above is.
            let now_ns = self.shared.origin.elapsed().as_nanos() as u64;
            self.probation = None;
            let state_bytes = self.handed.as_ref().map(Vec::len);
            if let Some(state) = self.handed.take() {
                self.new_base(Base::State(Arc::new(state)), now_ns);
            }
            self.recovery.checkpoints = true;
            self.recovery.failing = false;
            if let Some(group) = &txn.probation {
                self.begin_probation(group.clone(), replaced, now_ns);
            }
            if vote_after {
                txn.report(vote(None));
            }
            txn.report(Report::Done {
                module: name.to_string(),
                pause_us: Some(resumed.duration_since(quiesced).as_micros() as u64),
                buffered,
                state_bytes,
            });
            match enabled {
                Ok(()) => {
                    self.shared.ticking.store(true, Ordering::Release);
                    self.emit_state(ModuleState::Swapped, None);
                    self.emit_state(ModuleState::Serving, None);
                }
                Err(f) => {
                    let reason = format!("{name} v{}: {f}", self.imp.label());
                    self.fault(f);
                    if self.probation.is_some() {
                        self.breach(reason);
                    } else {
                        self.recover(None);
                    }
                }
            }
        } else {
            self.services.bury(new);
            let resumed = Instant::now();
            let buffered = self.data_rx.len();
            let state_bytes = self.handed.as_ref().map(Vec::len);
            self.resume_old();
            if vote_after {
                txn.report(vote(None));
            }
            txn.report(Report::Done {
                module: name.to_string(),
                pause_us: Some(resumed.duration_since(quiesced).as_micros() as u64),
                buffered,
                state_bytes,
            });
        }
    }

    /// Hand the old version's state to the new one. `Some(reason)` is NO.
    /// Runs inside the pause: nothing is formatted unless the vote is NO.
    fn transfer(&mut self, name: &str, new: &mut Implementation) -> Option<String> {
        let state = match self.imp.put_state() {
            Ok(Ok(state)) if state.len() > self.services.max_state_bytes => {
                return Some(format!(
                    "{name} v{}: put-state returned {} bytes, over the limit of {}",
                    self.imp.label(),
                    state.len(),
                    self.services.max_state_bytes
                ));
            }
            Ok(Ok(state)) => state,
            Ok(Err(e)) => {
                return Some(format!(
                    "{name} v{}: put-state returned an error: {e}",
                    self.imp.label()
                ));
            }
            Err(f) => {
                let reason = format!("{name} v{}: {f}", self.imp.label());
                self.fault(f);
                return Some(reason);
            }
        };
        let state = self.handed.insert(state);
        match new.get_state(state) {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!(
                "{name} v{}: get-state returned an error: {e}",
                new.label()
            )),
            Err(f) => Some(format!("{name} v{}: {f}", new.label())),
        }
    }

    /// After an abort: the old version serves on, rebuilt from its
    /// recovery point if its instance trapped during the vote.
    fn resume_old(&mut self) {
        self.handed = None;
        if self.imp.is_dead() {
            self.recover(None);
        }
        if self.switch(true).is_ok() {
            self.emit_state(ModuleState::Resumed, None);
        }
    }
}
