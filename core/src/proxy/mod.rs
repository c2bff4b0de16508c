//! The module proxy (thesis `ModuleType`): a module's stable name and
//! mailbox, and the thread that owns its current implementation.
//!
//! A `ModuleProxy` is a cloneable handle. Exactly one thread — the module's
//! worker ([`worker`]) — touches the implementation's `Store`; everyone else
//! talks to it through two channels: the *mailbox* (application messages
//! and TERM markers, in order; its sending half is the bus's
//! [`Mailbox`]) and the *control* channel (enable, disable, vote, abort,
//! rollback, stop), which the worker reads first.
//!
//! An upgrade needs no separate buffer: the worker appends TERM to the
//! mailbox, serves everything ahead of it, and whatever arrives after TERM
//! simply waits in the same queue behind it. On commit the new
//! implementation continues from that queue, on abort the old one does, so
//! order is kept and nothing is lost either way ([`vote`]). The proxy knows
//! the upgrade protocol only through the two-phase-commit record
//! ([`crate::txn`]).
//!
//! Files: this one is the handle; `worker.rs` the loop that serves;
//! `vote.rs` a participant's side of two-phase commit; `recovery.rs`
//! recovery points and rebuilds; `probation.rs` probation and the
//! participant's side of a rollback; `poison.rs` messages set aside;
//! `table.rs` the module table (name → proxy).

mod batch;
mod durable;
mod early;
mod moving;
mod poison;
mod probation;
mod recovery;
mod restart;
mod shadow;
mod table;
mod vote;
mod worker;

pub(crate) use moving::Detach;

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};

use crate::bus::{Bus, Item, Mailbox};
use crate::events::ModuleState;
use crate::guest::{Grant, HostView, LogGate};
use crate::instance::{Implementation, InstanceLimits, Seat};
use crate::repo::Version;
use crate::txn::Txn;

pub use poison::Poisoned;
pub use recovery::CHECKPOINT_EVERY;
pub(crate) use restart::Restored;
pub(crate) use shadow::Plan as ShadowPlan;
pub use shadow::{Progress as ShadowProgress, ShadowStatus};
pub(crate) use table::Modules;
use worker::Worker;

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
    /// The host stops (or hands over) with a state directory: end at once,
    /// between two messages; what is queued stays in the store.
    Park(Sender<()>),
    /// CanCommit of the automatic rollback of transaction `group`.
    Rollback { txn: Arc<Txn>, group: u64 },
    /// `Shadow`: start `new` beside the running version.
    Shadow {
        new: Box<Implementation>,
        plan: shadow::Plan,
        reply: Sender<Result<Arc<shadow::Progress>, String>>,
    },
    /// Drop the shadow, saying `why`; whether one ran.
    Unshadow { why: String, reply: Sender<bool> },
    /// CanCommit of `Promote`: the shadow is the candidate.
    Promote { txn: Arc<Txn> },
    /// `Move`: hand the state over and wait for the decision.
    Detach(moving::Detach),
}

/// How a new worker starts.
pub(crate) enum Start {
    /// Call `enable` and serve at once (`Load`); say on the channel how
    /// `enable` went (an error: it trapped and the module could not be
    /// rebuilt).
    Now(Sender<Result<(), String>>),
    /// Wait for a transaction's decision (`Syn_Load`, `Syn_Upgrade`):
    /// start on commit, end on abort.
    OnDecision(Arc<Txn>),
    /// After a restart: rebuild from the state directory's recovery point,
    /// then serve (or hold, if it was disabled) what was queued.
    Restore(Box<Restored>),
    /// Moved here from another host: `get-state` has run with this state,
    /// its recovery point; serve.
    Moved(Vec<u8>),
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
    /// Guest calls that served them (`service`, or `service-batch` for
    /// many at once).
    pub calls: u64,
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
    /// Their bytes (`--log-bytes` forces a checkpoint).
    pub logged_bytes: usize,
    /// Bytes queued in its mailbox, and the most it may hold.
    pub queued_bytes: (usize, usize),
    /// Log lines dropped for going over the log rate.
    pub log_dropped: u64,
    /// Timers it holds (filled in by the runtime, which owns them).
    pub timers: usize,
    /// Subscriptions it holds (filled in by the runtime).
    pub subscriptions: usize,
    /// Messages its mailbox refused for being full.
    pub refused: u64,
    /// Time left on probation, if it is on probation.
    pub probation_left: Option<Duration>,
    /// Its shadow: the running one, or the last one with why it ended.
    pub shadow: Option<ShadowStatus>,
}

/// Recovery and probation settings (`SetCheckpoint`, `SetProbation`) and
/// the state limit, which the administrator can change at run time and
/// every worker reads.
pub(crate) struct Settings {
    /// Largest state a `put-state` may hand over; more votes NO.
    pub max_state_bytes: usize,
    checkpoint_ms: AtomicU64,
    probation_ms: AtomicU64,
    max_error_pct: AtomicU32,
}

impl Settings {
    pub(crate) fn new(max_state_bytes: usize) -> Self {
        Settings {
            max_state_bytes,
            checkpoint_ms: AtomicU64::new(1000),
            probation_ms: AtomicU64::new(0),
            max_error_pct: AtomicU32::new(50),
        }
    }
    /// How often a module's recovery point is refreshed (0: only at
    /// commits and every `CHECKPOINT_EVERY` messages).
    pub fn checkpoint_ns(&self) -> u64 {
        self.checkpoint_ms.load(Ordering::Relaxed) * 1_000_000
    }
    pub fn set_checkpoint(&self, d: Duration) {
        self.checkpoint_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }
    /// The window after a commit in which a fault rolls the group back
    /// (zero: no probation), and the error rate, in percent of the
    /// messages served, that counts as a fault.
    pub fn probation(&self) -> (Duration, u32) {
        (
            Duration::from_millis(self.probation_ms.load(Ordering::Relaxed)),
            self.max_error_pct.load(Ordering::Relaxed),
        )
    }
    pub fn set_probation(&self, window: Duration, max_error_pct: u32) {
        self.probation_ms
            .store(window.as_millis() as u64, Ordering::Relaxed);
        self.max_error_pct.store(max_error_pct, Ordering::Relaxed);
    }
}

/// Drops what it is given on a thread of its own. Dropping a `Store` frees
/// its memory (and dropping a message log frees thousands of small
/// buffers): done there, off the module threads, so it is never part of a
/// swap's pause. The thread ends by itself when the last `Reaper` goes.
#[derive(Clone)]
pub(crate) struct Reaper(Sender<Box<dyn Send>>);

impl Reaper {
    pub(crate) fn start() -> Self {
        let (tx, graves) = unbounded::<Box<dyn Send>>();
        std::thread::Builder::new()
            .name("liveswap-reaper".into())
            .spawn(move || for _ in graves {})
            .expect("spawning the reaper thread");
        Reaper(tx)
    }

    /// Drop `x` on the reaper thread.
    pub(crate) fn bury<T: Send + 'static>(&self, x: T) {
        if let Err(e) = self.0.send(Box::new(x)) {
            drop(e.into_inner());
        }
    }
}

/// What every worker of a runtime needs of the host: the bus (its guests'
/// view, and its events), the settings, the reaper.
#[derive(Clone)]
pub(crate) struct Env {
    pub bus: Arc<Bus>,
    pub settings: Arc<Settings>,
    pub reaper: Reaper,
}

struct Shared {
    /// Name, host view, grants and limits: the same for every version.
    seat: Seat,
    /// The sending half of the mailbox.
    mailbox: Mailbox,
    ctl_tx: Sender<Control>,
    /// Messages set aside after trapping twice.
    poison: Mutex<Vec<Poisoned>>,
    recoveries: AtomicU64,
    /// Messages logged since the recovery point, and their bytes.
    logged: AtomicUsize,
    logged_bytes: AtomicUsize,
    /// Description of the recovery point, for `Status`.
    point: Mutex<String>,
    /// End of its probation window in ns since `origin` (0: none).
    probation_until_ns: AtomicU64,
    state: Mutex<(ModuleState, Arc<Version>, Option<String>)>,
    served: AtomicU64,
    /// Guest calls that served messages.
    calls: AtomicU64,
    errors: AtomicU64,
    faults: AtomicU64,
    origin: Instant,
    /// Start of the last `service` call, in ns since `origin`.
    last_start_ns: AtomicU64,
    /// Longest time between the starts of two consecutive `service` calls
    /// since the last reset: the outside view of a pause.
    max_gap_ns: AtomicU64,
    worker: Mutex<Option<JoinHandle<()>>>,
    /// The shadow beside it (or the last one, ended).
    shadow: Mutex<Option<Arc<shadow::Progress>>>,
}

/// The receiving ends a new proxy's worker takes over at
/// [`ModuleProxy::spawn`].
pub(crate) struct Ends {
    data_rx: Receiver<Item>,
    ctl_rx: Receiver<Control>,
}

/// Handle on one module: its name, mailbox and worker.
#[derive(Clone)]
pub struct ModuleProxy(Arc<Shared>);

impl ModuleProxy {
    /// A proxy for `name` whose worker will run `imp`, a first instance
    /// of `version` (whose log gate becomes the module's). Nothing runs
    /// until [`ModuleProxy::spawn`].
    pub(crate) fn new(
        name: &str,
        (version, imp): (Arc<Version>, &Implementation),
        capacity: usize,
        grants: Arc<[Grant]>,
        limits: InstanceLimits,
        env: &Env,
    ) -> (Self, Ends) {
        let name: Arc<str> = Arc::from(name);
        let (mailbox, data_rx) = env.bus.mailbox(name.clone(), capacity);
        let (ctl_tx, ctl_rx) = unbounded();
        let host: Arc<dyn HostView> = env.bus.clone();
        let gate = imp.gate();
        let shared = Shared {
            seat: Seat {
                name,
                host,
                gate,
                grants,
                limits,
            },
            mailbox,
            ctl_tx,
            poison: Mutex::new(Vec::new()),
            recoveries: AtomicU64::new(0),
            logged: AtomicUsize::new(0),
            logged_bytes: AtomicUsize::new(0),
            point: Mutex::new(String::new()),
            state: Mutex::new((ModuleState::Disabled, version, None)),
            served: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            origin: Instant::now(),
            last_start_ns: AtomicU64::new(0),
            probation_until_ns: AtomicU64::new(0),
            max_gap_ns: AtomicU64::new(0),
            worker: Mutex::new(None),
            shadow: Mutex::new(None),
        };
        (ModuleProxy(Arc::new(shared)), Ends { data_rx, ctl_rx })
    }

    /// Start the worker thread that owns `imp`, whose last call was its
    /// `init` with `config`: the first recovery point.
    pub(crate) fn spawn(
        &self,
        imp: Box<Implementation>,
        config: &[u8],
        env: Env,
        ends: Ends,
        start: Start,
    ) {
        let worker = Worker::new(self.0.clone(), env, imp, config, ends);
        let handle = std::thread::Builder::new()
            .name(format!("module-{}", self.0.seat.name))
            .spawn(move || worker.run(start))
            .expect("spawning a module thread");
        *self.0.worker.lock().expect("proxy poisoned") = Some(handle);
    }

    /// The module's name.
    pub fn name(&self) -> &str {
        &self.0.seat.name
    }

    /// The poison messages a state directory kept (at a restart).
    pub(crate) fn restore_poison(&self, list: Vec<crate::store::PoisonImage>) {
        *self.0.poison.lock().expect("proxy poisoned") = list
            .into_iter()
            .map(|p| Poisoned {
                at: std::time::UNIX_EPOCH + Duration::from_millis(p.at_ms),
                version: p.version,
                body_bytes: p.message.body.len(),
                message: p.message,
                reason: p.reason,
            })
            .collect();
    }

    /// The sending half of its mailbox.
    pub fn mailbox(&self) -> &Mailbox {
        &self.0.mailbox
    }

    /// Capabilities granted at `Load`.
    pub fn grants(&self) -> Arc<[Grant]> {
        self.0.seat.grants.clone()
    }

    /// Memory limit and call deadline of its instances.
    pub fn limits(&self) -> &InstanceLimits {
        &self.0.seat.limits
    }

    /// Its log gate (shared by every version it runs).
    pub(crate) fn gate(&self) -> &Arc<LogGate> {
        &self.0.seat.gate
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

    /// Messages served so far (cheap: one atomic read).
    pub fn served(&self) -> u64 {
        self.0.served.load(Ordering::Relaxed)
    }

    /// Messages queued and not yet served.
    pub fn depth(&self) -> usize {
        self.0.mailbox.depth()
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
        self.0.mailbox.set_capacity(capacity);
    }

    /// Senders seen so far (for the protocol-edge check).
    pub fn senders(&self) -> Vec<String> {
        self.0.mailbox.senders()
    }

    /// A snapshot for `Status`.
    pub fn status(&self) -> ProxyStatus {
        let (state, version, last_fault) = self.0.state.lock().expect("proxy poisoned").clone();
        ProxyStatus {
            name: self.name().to_string(),
            state,
            version,
            depth: self.depth(),
            capacity: self.0.mailbox.capacity(),
            served: self.0.served.load(Ordering::Relaxed),
            calls: self.0.calls.load(Ordering::Relaxed),
            errors: self.0.errors.load(Ordering::Relaxed),
            faults: self.0.faults.load(Ordering::Relaxed),
            last_fault,
            rates: self.0.mailbox.rates(),
            grants: self.0.seat.grants.to_vec(),
            memory_limit: self.0.seat.limits.memory,
            recoveries: self.0.recoveries.load(Ordering::Relaxed),
            poisoned: self.0.poison.lock().expect("proxy poisoned").len(),
            recovery_point: self.0.point.lock().expect("proxy poisoned").clone(),
            logged: self.0.logged.load(Ordering::Relaxed),
            logged_bytes: self.0.logged_bytes.load(Ordering::Relaxed),
            queued_bytes: (self.0.mailbox.bytes(), self.0.mailbox.max_bytes()),
            log_dropped: self.0.seat.gate.dropped(),
            timers: 0,
            subscriptions: 0,
            refused: self.0.mailbox.refused(),
            probation_left: match self.0.probation_until_ns.load(Ordering::Relaxed) {
                0 => None,
                until => Some(Duration::from_nanos(
                    until.saturating_sub(self.0.origin.elapsed().as_nanos() as u64),
                )),
            },
            shadow: self.shadow().map(|p| p.status()),
        }
    }

    pub(crate) fn control(&self, c: Control) -> bool {
        self.0.ctl_tx.send(c).is_ok()
    }

    /// Close the mailbox: every later send fails. Waits for sends under way.
    pub(crate) fn close(&self) {
        self.0.mailbox.close();
    }

    /// Wait for the worker thread to end (after `Stop`).
    pub(crate) fn join(&self) {
        let handle = self.0.worker.lock().expect("proxy poisoned").take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}
