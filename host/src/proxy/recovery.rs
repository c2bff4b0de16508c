//! Recovery points, poison messages, probation and automatic rollback.
//!
//! Each module keeps a *recovery point*: a base it can be rebuilt from
//! (its `init` config, or a state snapshot taken with `put-state`) and the
//! log of every message served since. When its instance traps, the worker
//! rebuilds it: a fresh instance of the same version, the base, and the
//! log replayed with every outbound effect suppressed (those sends,
//! publishes, subscriptions, timers and log lines already happened). The
//! message that trapped is then served once more, its first effects
//! suppressed as far as the failed call got; if it traps again it is set
//! aside as a *poison message* — kept, listed by `Poison NAME`, never
//! silently dropped — and the module is rebuilt without it. A message of
//! the log that traps on replay is set aside the same way.
//!
//! Snapshots are taken at every commit (the state just handed over, which
//! the new version accepted) and then every `SetCheckpoint` interval or
//! every [`CHECKPOINT_EVERY`] messages, whichever comes first — but never
//! so often that taking them costs more than 1% of the module's time.
//!
//! After a commit, for the `SetProbation` window, the recovery point of
//! each replaced module is the one of the version it replaced: the state
//! that version handed over, and the log since. A trap, or an error rate
//! over the threshold, in any new version of the group starts a rollback
//! transaction: every member prepares its old version from that point,
//! votes, and all of them swap back or none does. When the window ends the
//! recovery point moves to the new version (a fresh snapshot).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::unbounded;

use super::{Control, ModuleProxy, Worker};
use crate::bindings::{Level, Message};
use crate::context::Failures;
use crate::events::{Event, ModuleState};
use crate::implementation::Implementation;
use crate::report::{ModuleReport, Outcome, TransactionReport};
use crate::repository::Version;
use crate::runtime::CommandRecord;
use crate::services::Services;
use crate::txn::{Decision, Report, Txn};
use crate::upgrader::{Done, collect_dones, tally};

/// A snapshot is taken at least every this many served messages, so that
/// a replay stays short whatever the checkpoint interval.
pub const CHECKPOINT_EVERY: usize = 10_000;

/// With checkpoints failing, the log is dropped (and with it the recovery
/// point) past this many messages, rather than grow without bound.
const MAX_LOG: usize = 100_000;

/// Checkpoints are spaced so that taking them costs at most 1/this of a
/// module's time (a 20 ms snapshot of a large state: at most one every 2 s).
const CHECKPOINT_SHARE: u64 = 100;

/// At least this many messages must be served in probation before an
/// error rate counts.
const MIN_RATE_SAMPLE: u64 = 10;

/// What a module can be rebuilt from.
#[derive(Clone)]
pub(crate) enum Base {
    /// `init` with the config it was loaded with (and the effects of that
    /// `init` that failed).
    Init(Arc<[u8]>, Arc<Failures>),
    /// `get-state` with a snapshot.
    State(Arc<Vec<u8>>),
}

impl Base {
    fn describe(&self) -> String {
        match self {
            Base::Init(c, _) => format!("its config ({} bytes)", c.len()),
            Base::State(s) => format!("a snapshot of {} bytes", s.len()),
        }
    }
}

/// A message served since the recovery point, with the effects of its
/// call that failed, so a replay gives the guest the same results.
pub(crate) struct Logged {
    pub message: Message,
    pub failed: Failures,
}

/// A module's recovery point.
pub(crate) struct Recovery {
    /// None once checkpoints failed for too long.
    pub base: Option<Base>,
    /// Messages served since the base, in order.
    pub log: Vec<Logged>,
    /// When the base was taken, in ns since the proxy's origin.
    pub taken_ns: u64,
    /// Off after a checkpoint's `put-state` trapped (each try would fault
    /// the module); on again at the next commit.
    pub checkpoints: bool,
    /// The last checkpoint failed (an error or a state over the limit):
    /// the next due one tries again.
    pub failing: bool,
    /// How long the last checkpoint's `put-state` took, in ns.
    pub cost_ns: u64,
}

impl Recovery {
    pub(crate) fn new(base: Base) -> Self {
        Recovery {
            base: Some(base),
            log: Vec::new(),
            taken_ns: 0,
            checkpoints: true,
            failing: false,
            cost_ns: 0,
        }
    }
}

/// A message set aside because it trapped its module twice.
#[derive(Clone, Debug)]
pub struct Poisoned {
    /// When it was set aside.
    pub at: SystemTime,
    /// The version it trapped.
    pub version: String,
    /// The message as it was delivered.
    pub message: Message,
    /// The trap, in one line.
    pub reason: String,
}

impl std::fmt::Display for Poisoned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self
            .at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let body = &self.message.body;
        let shown = match std::str::from_utf8(body) {
            Ok(t) if !t.chars().any(|c| c.is_control() && c != '\n') => format!("{t:?}"),
            _ => format!(
                "0x{}",
                body.iter().map(|b| format!("{b:02x}")).collect::<String>()
            ),
        };
        write!(
            f,
            "[{secs:.3}] v{} `{}` from {} proto {} body {} ({} bytes): {}",
            self.version,
            self.message.kind,
            self.message.from,
            self.message.proto,
            shown,
            body.len(),
            self.reason
        )
    }
}

/// One module's probation after a commit.
pub(crate) struct Probation {
    pub group: Arc<Group>,
    /// The version the commit replaced: what a rollback returns to.
    pub old: Arc<Version>,
    pub until_ns: u64,
    pub served: u64,
    pub errors: u64,
}

const WATCHING: u8 = 0;
const ROLLING_BACK: u8 = 1;
const OVER: u8 = 2;

/// The replaced modules of one committed transaction, while on probation.
pub(crate) struct Group {
    /// The transaction that committed.
    pub txn: u64,
    /// Its command, for the rollback's report.
    pub command: String,
    pub window: Duration,
    pub max_error_pct: u32,
    /// Quiescence bound of the rollback's vote.
    pub bound: Duration,
    pub members: Vec<ModuleProxy>,
    state: AtomicU8,
    services: Arc<Services>,
}

/// What a member in breach should do next.
pub(crate) enum Breach {
    /// A rollback is under way: its `Rollback` control will come.
    Coming,
    /// The group's probation is over: recover in place.
    Over,
}

impl Group {
    pub(crate) fn new(
        txn: u64,
        command: String,
        (window, max_error_pct): (Duration, u32),
        bound: Duration,
        members: Vec<ModuleProxy>,
        services: Arc<Services>,
    ) -> Self {
        Group {
            txn,
            command,
            window,
            max_error_pct,
            bound,
            members,
            state: AtomicU8::new(WATCHING),
            services,
        }
    }

    /// A member broke probation: start the rollback, unless one is under
    /// way or over.
    pub(crate) fn breach(self: &Arc<Self>, reason: String) -> Breach {
        match self.state.compare_exchange(
            WATCHING,
            ROLLING_BACK,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                let group = self.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("liveswap-rollback-{}", self.txn))
                    .spawn(move || group.roll_back(reason));
                match spawned {
                    Ok(_) => Breach::Coming,
                    Err(_) => {
                        self.state.store(OVER, Ordering::Release);
                        Breach::Over
                    }
                }
            }
            Err(ROLLING_BACK) => Breach::Coming,
            Err(_) => Breach::Over,
        }
    }

    /// The rollback transaction: every member prepares its old version
    /// from its recovery point and votes; all swap back or none does.
    fn roll_back(&self, reason: String) {
        let started = Instant::now();
        let services = &self.services;
        let id = services.next_txn();
        let (tx, rx) = unbounded();
        let n = self.members.len();
        let txn = Arc::new(Txn::new(id, started + self.bound, false, n, tx));
        services.events.emit(Event::Log {
            module: "$host".into(),
            version: String::new(),
            level: Level::Warn,
            line: format!(
                "probation of transaction {} broken: {reason}; rolling the group back (transaction {id})",
                self.txn
            ),
        });
        let mut report = TransactionReport {
            id,
            command: format!("Rollback of transaction {}: {}", self.txn, self.command),
            origin: "probation".into(),
            outcome: Outcome::Aborted,
            reason: None,
            modules: self
                .members
                .iter()
                .map(|p| ModuleReport {
                    name: p.name().to_string(),
                    from: Some(p.version().label().to_string()),
                    ..Default::default()
                })
                .collect(),
            prepare_us: 0,
            total_us: 0,
            mode: "concurrent".into(),
        };
        let mut no = None;
        let mut asked = 0;
        for p in &self.members {
            if p.control(Control::Rollback {
                txn: txn.clone(),
                group: self.txn,
            }) {
                asked += 1;
            } else {
                no = Some(format!("{} has stopped", p.name()));
            }
        }
        let mut votes = std::collections::HashMap::new();
        let mut dones: std::collections::HashMap<String, Done> = std::collections::HashMap::new();
        while votes.len() < asked && no.is_none() {
            match rx.recv_deadline(txn.deadline) {
                Ok(r) => no = tally(&mut votes, &mut dones, r),
                Err(_) => {
                    let late: Vec<&str> = self
                        .members
                        .iter()
                        .map(|p| p.name())
                        .filter(|m| !votes.contains_key(*m))
                        .collect();
                    no = Some(format!(
                        "{} did not prepare its old version within {:?}",
                        late.join(", "),
                        self.bound
                    ));
                }
            }
        }
        report.prepare_us = started.elapsed().as_micros() as u64;
        let decision = txn.decide(if no.is_none() {
            Decision::Commit
        } else {
            Decision::Abort
        });
        collect_dones(
            &rx,
            &mut votes,
            &mut dones,
            asked,
            Instant::now() + Duration::from_secs(10),
        );
        self.state.store(OVER, Ordering::Release);
        for m in report.modules.iter_mut() {
            if let Some(p) = self.members.iter().find(|p| p.name() == m.name) {
                m.to = Some(p.version().label().to_string());
            }
            if let Some(d) = dones.get(&m.name) {
                m.pause_us = d.pause_us;
                m.buffered = d.buffered;
            }
        }
        if decision == Decision::Commit {
            report.outcome = Outcome::RolledBack;
            report.reason = Some(reason);
        } else {
            report.reason = Some(format!(
                "{reason}; the rollback failed: {}; the new versions serve on, recovered in place",
                no.unwrap_or_else(|| "the bound passed".into())
            ));
        }
        report.total_us = started.elapsed().as_micros() as u64;
        services
            .records
            .lock()
            .expect("records poisoned")
            .commands
            .push(CommandRecord {
                at: SystemTime::now(),
                origin: "probation".into(),
                line: format!("Rollback {}", self.txn),
                outcome: report.outcome.as_str().to_string(),
                transaction: Some(id),
            });
        services.record_transaction(&report);
    }
}

/// A message whose call trapped, to be served again: with how many
/// effects the failed call made and which of them failed.
pub(crate) struct Retry {
    pub message: Message,
    pub effects: u64,
    pub failed: Failures,
}

/// How a rebuild ended short of an instance.
enum Rebuild {
    /// A logged message trapped and was set aside: try again.
    SetAside,
    /// The base or a replay failed: no instance can be made.
    Failed(String),
}

impl Worker {
    /// Bookkeeping after a message was served (`failed`: it returned an
    /// error): log it, count it for probation, take a snapshot when due.
    pub(super) fn served(&mut self, m: Message, failed: bool, now_ns: u64) {
        if self.recovery.base.is_none() {
            // Nothing to replay onto: no log either.
            return;
        }
        let effects_failed = self.imp.take_failures();
        self.recovery.log.push(Logged {
            message: m,
            failed: effects_failed,
        });
        self.shared
            .logged
            .store(self.recovery.log.len(), Ordering::Relaxed);
        if let Some(p) = &mut self.probation {
            p.served += 1;
            if failed {
                p.errors += 1;
            }
            if p.errors > 0
                && p.served >= MIN_RATE_SAMPLE
                && p.errors * 100 > u64::from(p.group.max_error_pct) * p.served
            {
                let reason = format!(
                    "{} v{}: {} of {} messages failed, over the probation threshold of {}%",
                    self.shared.name,
                    self.imp.label(),
                    p.errors,
                    p.served,
                    p.group.max_error_pct
                );
                self.breach(reason);
            } else if self.recovery.log.len() > MAX_LOG {
                self.log(
                    Level::Warn,
                    format!(
                        "probation ended early: {MAX_LOG} messages since the commit are as many as a rollback keeps"
                    ),
                );
                self.end_probation(now_ns);
            }
            return;
        }
        let interval = self.services.settings.checkpoint_ns();
        let since = now_ns.saturating_sub(self.recovery.taken_ns);
        let due = (self.recovery.log.len() >= CHECKPOINT_EVERY
            || (interval > 0 && since >= interval))
            && since >= self.recovery.cost_ns * CHECKPOINT_SHARE;
        if !due {
            return;
        }
        if self.recovery.checkpoints {
            self.checkpoint(now_ns);
        }
        let stuck = self.recovery.failing || !self.recovery.checkpoints;
        if stuck && self.recovery.log.len() > MAX_LOG && self.recovery.base.is_some() {
            self.recovery.base = None;
            let log = std::mem::take(&mut self.recovery.log);
            self.services.bury(log);
            self.shared.logged.store(0, Ordering::Relaxed);
            self.describe_point();
            self.log(
                Level::Error,
                format!(
                    "no recovery point any more: put-state keeps failing and {MAX_LOG} messages were logged; a trap will leave the module faulted"
                ),
            );
        }
    }

    /// Replace the recovery point by a fresh snapshot of the live instance.
    pub(super) fn checkpoint(&mut self, now_ns: u64) {
        self.recovery.taken_ns = now_ns;
        let started = Instant::now();
        let state = self.imp.put_state();
        self.recovery.cost_ns = started.elapsed().as_nanos() as u64;
        let why = match state {
            Ok(Ok(bytes)) if bytes.len() <= self.services.max_state_bytes => {
                self.new_base(Base::State(Arc::new(bytes)), now_ns);
                if self.recovery.failing {
                    self.recovery.failing = false;
                    self.log(Level::Info, "checkpoints work again".into());
                }
                return;
            }
            Ok(Ok(bytes)) => format!(
                "put-state returned {} bytes, over the state limit of {}",
                bytes.len(),
                self.services.max_state_bytes
            ),
            Ok(Err(e)) => format!("put-state returned an error: {e}"),
            Err(f) => {
                let why = f.to_string();
                self.fault(f);
                self.recovery.checkpoints = false;
                self.recover(None);
                self.log(
                    Level::Warn,
                    format!("checkpoints stop until the next commit: {why}"),
                );
                return;
            }
        };
        if std::mem::replace(&mut self.recovery.failing, true) {
            return;
        }
        self.log(
            Level::Warn,
            format!(
                "checkpoint failed ({why}); recovery keeps {} and a growing log until one succeeds",
                self.recovery
                    .base
                    .as_ref()
                    .map(Base::describe)
                    .unwrap_or_else(|| "nothing".into())
            ),
        );
    }

    /// A new base; the log starts empty (the old one is freed elsewhere).
    pub(super) fn new_base(&mut self, base: Base, now_ns: u64) {
        let old = (
            self.recovery.base.replace(base),
            std::mem::take(&mut self.recovery.log),
        );
        self.services.bury(old);
        self.recovery.taken_ns = now_ns;
        self.shared.logged.store(0, Ordering::Relaxed);
        self.describe_point();
    }

    /// Publish the recovery point's description for `Status`.
    pub(super) fn describe_point(&self) {
        let text = match (&self.recovery.base, &self.probation) {
            (None, _) => "none".to_string(),
            (Some(b), None) => b.describe(),
            (Some(b), Some(p)) => format!(
                "{} of v{} (on probation after transaction {}, for {:?})",
                b.describe(),
                p.old.label(),
                p.group.txn,
                p.group.window
            ),
        };
        *self.shared.point.lock().expect("proxy poisoned") = text;
    }

    /// Start probation after the commit of `group`'s transaction.
    pub(super) fn begin_probation(&mut self, group: Arc<Group>, old: Arc<Version>, now_ns: u64) {
        let until_ns = now_ns + group.window.as_nanos() as u64;
        self.probation = Some(Probation {
            group,
            old,
            until_ns,
            served: 0,
            errors: 0,
        });
        self.describe_point();
    }

    /// The window passed: the recovery point moves to the new version.
    pub(super) fn end_probation(&mut self, now_ns: u64) {
        if let Some(p) = self.probation.take() {
            self.checkpoint(now_ns);
            self.describe_point();
            self.log(
                Level::Info,
                format!(
                    "probation after transaction {} ended: v{} stays, v{} is no longer a rollback target",
                    p.group.txn,
                    self.imp.label(),
                    p.old.label()
                ),
            );
        }
    }

    /// A new version in probation trapped or erred too often.
    pub(super) fn breach(&mut self, reason: String) {
        let Some(p) = &self.probation else { return };
        match p.group.clone().breach(reason) {
            Breach::Coming => {}
            Breach::Over => self.leave_probation(),
        }
    }

    /// Probation is over without a rollback: the new version stays, and
    /// if it trapped it is recovered in place (the message it trapped on
    /// served again).
    fn leave_probation(&mut self) {
        self.probation = None;
        self.describe_point();
        if self.imp.is_dead() {
            let retry = self.retry.take();
            self.recover(retry);
        }
    }

    /// Keep `m` aside as a poison message.
    fn set_aside(&self, m: Message, version: &Version, reason: String) {
        self.log(
            Level::Error,
            format!(
                "poison message set aside: `{}` from {} trapped v{} again ({reason}); see `Poison {}`",
                m.kind,
                m.from,
                version.label(),
                self.shared.name
            ),
        );
        self.shared
            .poison
            .lock()
            .expect("proxy poisoned")
            .push(Poisoned {
                at: SystemTime::now(),
                version: version.label().to_string(),
                message: m,
                reason,
            });
    }

    /// A fresh instance of `version` brought to the recovery point: base,
    /// `enable`, and the log replayed with its effects suppressed. With
    /// `strict`, any trap fails the rebuild; without, the message that
    /// trapped is set aside.
    fn rebuild(
        &mut self,
        version: &Arc<Version>,
        base: &Base,
        strict: bool,
    ) -> Result<Box<Implementation>, Rebuild> {
        let s = &self.shared;
        let mut fresh = Implementation::instantiate(
            version,
            s.name.clone(),
            self.services.clone(),
            &s.limits,
            &s.grants,
        )
        .map(Box::new)
        .map_err(Rebuild::Failed)?;
        fresh.replaying(true);
        let based = match base {
            Base::Init(config, failed) => {
                fresh.script(failed);
                fresh.init(config)
            }
            Base::State(state) => fresh.get_state(state),
        };
        let what = match base {
            Base::Init(..) => "init",
            Base::State(_) => "get-state",
        };
        match based {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(Rebuild::Failed(format!(
                    "{what} from the recovery point returned an error: {e}"
                )));
            }
            Err(f) => return Err(Rebuild::Failed(format!("{f} (from the recovery point)"))),
        }
        fresh.enable().map_err(|f| Rebuild::Failed(f.to_string()))?;
        let mut i = 0;
        while i < self.recovery.log.len() {
            let entry = &self.recovery.log[i];
            fresh.script(&entry.failed);
            match fresh.service(&entry.message) {
                Ok(_) => i += 1,
                Err(f) if strict => {
                    let m = &self.recovery.log[i].message;
                    return Err(Rebuild::Failed(format!(
                        "replaying message {} of {} (`{}` from {}) on v{}: {f}",
                        i + 1,
                        self.recovery.log.len(),
                        m.kind,
                        m.from,
                        version.label()
                    )));
                }
                Err(f) => {
                    let m = self.recovery.log.remove(i).message;
                    self.set_aside(m, version, f.to_string());
                    self.services.bury(fresh);
                    return Err(Rebuild::SetAside);
                }
            }
        }
        fresh.replaying(false);
        Ok(fresh)
    }

    /// The instance trapped (the fault is already reported): rebuild it
    /// from the recovery point, serve `failed` (the message it trapped on,
    /// with the effects it made before trapping) once more, and go on from
    /// the mailbox. The module stays faulted, its mailbox kept, only if no
    /// instance can be rebuilt.
    pub(super) fn recover(&mut self, mut failed: Option<Retry>) {
        let Some(base) = self.recovery.base.clone() else {
            self.log(
                Level::Error,
                "no recovery point: the module stays faulted with its mailbox kept".into(),
            );
            return;
        };
        let version = self.imp.version().clone();
        let started = Instant::now();
        let mut set_aside = 0;
        let fresh = loop {
            let mut fresh = match self.rebuild(&version, &base, false) {
                Ok(f) => f,
                Err(Rebuild::SetAside) => {
                    set_aside += 1;
                    continue;
                }
                Err(Rebuild::Failed(why)) => {
                    self.log(
                        Level::Error,
                        format!(
                            "recovery failed: {why}; the module stays faulted with its mailbox kept"
                        ),
                    );
                    return;
                }
            };
            if let Some(Retry {
                message: m,
                effects,
                failed: first,
            }) = failed.take()
            {
                fresh.skip_effects(effects, first);
                match fresh.service(&m) {
                    Ok(r) => {
                        let effects_failed = fresh.take_failures();
                        fresh.skip_effects(0, Vec::new());
                        self.shared.served.fetch_add(1, Ordering::Relaxed);
                        if r.is_err() {
                            self.shared.errors.fetch_add(1, Ordering::Relaxed);
                        }
                        self.recovery.log.push(Logged {
                            message: m,
                            failed: effects_failed,
                        });
                    }
                    Err(f) => {
                        self.set_aside(m, &version, f.to_string());
                        set_aside += 1;
                        self.services.bury(fresh);
                        continue;
                    }
                }
            }
            break fresh;
        };
        self.install(fresh);
        self.shared.recoveries.fetch_add(1, Ordering::Relaxed);
        self.shared
            .logged
            .store(self.recovery.log.len(), Ordering::Relaxed);
        let detail = format!(
            "rebuilt v{} from {} and {} replayed message(s) in {} µs; {set_aside} poison message(s) set aside",
            version.label(),
            base.describe(),
            self.recovery.log.len(),
            started.elapsed().as_micros()
        );
        self.emit_state(ModuleState::Recovered, Some(detail));
        self.announce_serving();
    }

    /// Put `fresh` in place of the current (dead or replaced) instance,
    /// enabled or held as the module was.
    fn install(&mut self, mut fresh: Box<Implementation>) {
        if !self.serving {
            fresh.replaying(true);
            let _ = fresh.disable();
            fresh.replaying(false);
        }
        let dead = std::mem::replace(&mut self.imp, fresh);
        self.services.bury(dead);
        // Recorded before anything is announced, so whoever hears of the
        // recovery or rollback finds the module ready for a command.
        let mut st = self.shared.state.lock().expect("proxy poisoned");
        st.0 = self.resting_state();
        st.1 = self.imp.version().clone();
        drop(st);
        self.shared.ticking.store(self.serving, Ordering::Release);
    }

    fn resting_state(&self) -> ModuleState {
        if self.serving {
            ModuleState::Serving
        } else {
            ModuleState::Disabled
        }
    }

    /// Announce serving (or disabled) after a rebuild.
    fn announce_serving(&mut self) {
        self.emit_state(self.resting_state(), None);
    }

    /// CanCommit of a rollback: prepare the old version from the recovery
    /// point, vote, and swap back on commit.
    pub(super) fn rollback(&mut self, txn: Arc<Txn>, group: u64) {
        let name = self.shared.name.to_string();
        let started = Instant::now();
        let prepared = match (&self.probation, self.recovery.base.clone()) {
            (Some(p), Some(base)) if p.group.txn == group => {
                let old = p.old.clone();
                self.rebuild(&old, &base, true).map_err(|e| match e {
                    Rebuild::Failed(why) => format!("{name}: {why}"),
                    Rebuild::SetAside => {
                        format!("{name}: a logged message trapped v{}", old.label())
                    }
                })
            }
            _ => Err(format!(
                "{name} is no longer on probation after transaction {group}"
            )),
        };
        let quiesce_us = Some(started.elapsed().as_micros() as u64);
        txn.report(Report::Vote {
            module: name.clone(),
            quiesce_us,
            no: prepared.as_ref().err().cloned(),
        });
        if prepared.is_err() {
            txn.decide(Decision::Abort);
        }
        let decision = txn.wait();
        let paused = Instant::now();
        let buffered = self.data_rx.len();
        match (decision, prepared) {
            (Decision::Commit, Ok(fresh)) => {
                let newer = self.imp.label().to_string();
                self.probation = None;
                self.install(fresh);
                let resumed = Instant::now();
                txn.report(Report::Done {
                    module: name,
                    pause_us: Some(resumed.duration_since(paused).as_micros() as u64),
                    buffered,
                    state_bytes: None,
                });
                self.describe_point();
                self.emit_state(
                    ModuleState::RolledBack,
                    Some(format!("v{newer} -> v{}", self.imp.label())),
                );
                if let Some(r) = self.retry.take() {
                    self.imp.skip_effects(r.effects, r.failed);
                    self.call(r.message, 0);
                    self.imp.skip_effects(0, Vec::new());
                }
                if !self.imp.is_dead() {
                    self.announce_serving();
                }
            }
            (_, prepared) => {
                if let Ok(fresh) = prepared {
                    self.services.bury(fresh);
                }
                txn.report(Report::Done {
                    module: name,
                    pause_us: None,
                    buffered,
                    state_bytes: None,
                });
                self.leave_probation();
            }
        }
    }
}
