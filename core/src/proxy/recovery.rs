//! Recovery points: what a module is rebuilt from after a trap.
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
//! Probation (`probation.rs`) keeps the recovery point of the replaced
//! version for a while after a commit; poison messages are `poison.rs`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::worker::Worker;
use crate::bindings::{Level, Message};
use crate::events::ModuleState;
use crate::guest::Failures;
use crate::instance::Implementation;
use crate::limits::message_cost;
use crate::repo::Version;

/// A snapshot is taken at least every this many served messages, so that
/// a replay stays short whatever the checkpoint interval.
pub const CHECKPOINT_EVERY: usize = 10_000;

/// With checkpoints failing, the log is dropped (and with it the recovery
/// point) past this many messages, rather than grow without bound.
pub(super) const MAX_LOG: usize = 100_000;

/// Checkpoints are spaced so that taking them costs at most 1/this of a
/// module's time (a 20 ms snapshot of a large state: at most one every 2 s).
const CHECKPOINT_SHARE: u64 = 100;

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
    /// Its id in the journal (0 without a state directory).
    pub id: u64,
    pub message: Message,
    pub failed: Failures,
}

/// A module's recovery point.
pub(crate) struct Recovery {
    /// None once checkpoints failed for too long.
    pub base: Option<Base>,
    /// Messages served since the base, in order.
    pub log: Vec<Logged>,
    /// What the log holds, in bytes (`limits::message_cost`).
    pub log_bytes: usize,
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
    /// When the recent recoveries happened (ns since the proxy's origin),
    /// for the restart intensity.
    pub recent: std::collections::VecDeque<u64>,
}

impl Recovery {
    pub(crate) fn new(base: Base) -> Self {
        Recovery {
            base: Some(base),
            log: Vec::new(),
            log_bytes: 0,
            taken_ns: 0,
            checkpoints: true,
            failing: false,
            cost_ns: 0,
            recent: std::collections::VecDeque::new(),
        }
    }
}

/// A message whose call trapped, to be served again: with how many
/// effects the failed call made and which of them failed.
pub(crate) struct Retry {
    pub message: Message,
    /// Its id in the journal (0 without a state directory).
    pub id: u64,
    pub effects: u64,
    pub failed: Failures,
}

/// How a rebuild ended short of an instance.
pub(super) enum Rebuild {
    /// A logged message trapped and was set aside: try again.
    SetAside,
    /// The base or a replay failed: no instance can be made.
    Failed(String),
}

impl Worker {
    /// Bookkeeping after a message was served (`failed`: it returned an
    /// error): log it, count it for probation, take a snapshot when due.
    pub(super) fn served(
        &mut self,
        m: Message,
        id: u64,
        failed: bool,
        now_ns: u64,
        effects_failed: Failures,
    ) {
        self.completed(id, &m, &effects_failed);
        if self.recovery.base.is_none() {
            // Nothing to replay onto: no log either.
            return;
        }
        self.recovery.log_bytes += message_cost(&m.kind, &m.from, &m.body);
        self.recovery.log.push(Logged {
            id,
            message: m,
            failed: effects_failed,
        });
        if self.early.is_some() {
            self.mirror_last();
        }
        self.publish_log_size();
        if self.probation.is_some() {
            self.served_in_probation(failed, now_ns);
            return;
        }
        let interval = self.env.settings.checkpoint_ns();
        let since = now_ns.saturating_sub(self.recovery.taken_ns);
        // Past its byte limit the log forces a checkpoint, whatever it costs.
        let max_bytes = self.env.bus.limits.log_bytes;
        let due = ((self.recovery.log.len() >= CHECKPOINT_EVERY
            || (interval > 0 && since >= interval))
            && since >= self.recovery.cost_ns * CHECKPOINT_SHARE)
            || self.recovery.log_bytes >= max_bytes;
        // An early vote needs the log since its TERM until the decision.
        if !due || self.no_checkpoint || self.early.is_some() {
            return;
        }
        if self.recovery.checkpoints {
            self.checkpoint(now_ns);
        }
        let stuck = self.recovery.failing || !self.recovery.checkpoints;
        let too_long = self.recovery.log.len() > MAX_LOG || self.recovery.log_bytes > 2 * max_bytes;
        if stuck && too_long && self.recovery.base.is_some() {
            self.recovery.base = None;
            self.lost_base();
            let log = std::mem::take(&mut self.recovery.log);
            self.recovery.log_bytes = 0;
            self.env.reaper.bury(log);
            self.publish_log_size();
            self.describe_point();
            self.log(
                Level::Error,
                format!(
                    "no recovery point any more: put-state keeps failing and the log passed {MAX_LOG} messages or {} bytes (--log-bytes); a trap will leave the module faulted",
                    2 * max_bytes
                ),
            );
        }
    }

    /// Replace the recovery point by a fresh snapshot of the live instance.
    pub(super) fn checkpoint(&mut self, now_ns: u64) {
        self.recovery.taken_ns = now_ns;
        let started = Instant::now();
        let state = self.imp.put_state(None);
        self.recovery.cost_ns = started.elapsed().as_nanos() as u64;
        let why = match state {
            Ok(Ok(bytes)) if bytes.len() <= self.env.settings.max_state_bytes => {
                let state = Arc::new(bytes);
                self.snapshot(&state);
                self.new_base(Base::State(state), now_ns);
                if self.recovery.failing {
                    self.recovery.failing = false;
                    self.log(Level::Info, "checkpoints work again".into());
                }
                return;
            }
            Ok(Ok(bytes)) => format!(
                "put-state returned {} bytes, over the state limit of {}",
                bytes.len(),
                self.env.settings.max_state_bytes
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
        self.recovery.log_bytes = 0;
        self.env.reaper.bury(old);
        self.recovery.taken_ns = now_ns;
        self.publish_log_size();
        self.describe_point();
    }

    /// Publish the log's length and bytes for `Status`.
    pub(super) fn publish_log_size(&self) {
        let s = &self.shared;
        s.logged.store(self.recovery.log.len(), Ordering::Relaxed);
        s.logged_bytes
            .store(self.recovery.log_bytes, Ordering::Relaxed);
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
        let until = self.probation.as_ref().map_or(0, |p| p.until_ns.max(1));
        self.shared
            .probation_until_ns
            .store(until, std::sync::atomic::Ordering::Relaxed);
    }

    /// A fresh instance of `version` brought to the recovery point: base,
    /// `enable`, and the log replayed with its effects suppressed. With
    /// `strict`, any trap fails the rebuild; without, the message that
    /// trapped is set aside.
    pub(super) fn rebuild(
        &mut self,
        version: &Arc<Version>,
        base: &Base,
        strict: bool,
    ) -> Result<Box<Implementation>, Rebuild> {
        let mut fresh = Implementation::instantiate(version, &self.shared.seat)
            .map(Box::new)
            .map_err(Rebuild::Failed)?;
        fresh.replaying(true);
        let based = match base {
            Base::Init(config, failed) => {
                fresh.script(failed);
                fresh.init(config)
            }
            Base::State(state) => fresh.get_state(state, None),
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
                    let Logged { id, message: m, .. } = self.recovery.log.remove(i);
                    let why = f.to_string();
                    self.poisoned(id, false, Some((version.label(), &why)));
                    self.recovery.log_bytes -= message_cost(&m.kind, &m.from, &m.body);
                    self.set_aside(m, version, why);
                    self.env.reaper.bury(fresh);
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
            self.shared.mailbox.set_dead(true);
            self.log(
                Level::Error,
                "no recovery point: the module stays faulted and refuses new messages".into(),
            );
            return;
        };
        if self.crash_loop() {
            self.hold(base, failed);
            return;
        }
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
                    // Refusing before saying so: whoever reads the line
                    // finds new messages refused.
                    self.shared.mailbox.set_dead(true);
                    self.log(
                        Level::Error,
                        format!(
                            "recovery failed: {why}; the module stays faulted, its mailbox kept, and refuses new messages"
                        ),
                    );
                    return;
                }
            };
            if let Some(retry) = failed.take()
                && !self.retry_on(&mut fresh, retry, &version)
            {
                set_aside += 1;
                self.env.reaper.bury(fresh);
                continue;
            }
            break fresh;
        };
        self.install(fresh);
        self.shared.recoveries.fetch_add(1, Ordering::Relaxed);
        self.publish_log_size();
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

    /// Serve the message a trapped call left on a rebuilt instance, its
    /// first effects suppressed; false if it trapped again (it is then set
    /// aside).
    fn retry_on(&mut self, fresh: &mut Implementation, r: Retry, version: &Arc<Version>) -> bool {
        let Retry {
            message: m,
            id,
            effects,
            failed: first,
        } = r;
        fresh.skip_effects(effects, first);
        self.producing(true);
        let result = fresh.service(&m);
        self.producing(false);
        match result {
            Ok(r) => {
                let effects_failed = fresh.take_failures();
                fresh.skip_effects(0, Vec::new());
                self.completed(id, &m, &effects_failed);
                self.shared.served.fetch_add(1, Ordering::Relaxed);
                if r.is_err() {
                    self.shared.errors.fetch_add(1, Ordering::Relaxed);
                }
                self.recovery.log_bytes += message_cost(&m.kind, &m.from, &m.body);
                self.recovery.log.push(Logged {
                    id,
                    message: m,
                    failed: effects_failed,
                });
                true
            }
            Err(f) => {
                let why = f.to_string();
                self.poisoned(id, true, Some((version.label(), &why)));
                self.set_aside(m, version, why);
                false
            }
        }
    }

    /// Serve the message a trapped instance left to be served again, if
    /// any, by the current instance: its first effects suppressed as far
    /// as the failed call got, with the results they had then.
    pub(super) fn serve_retry(&mut self, now_ns: u64) {
        if let Some(r) = self.retry.take() {
            self.imp.skip_effects(r.effects, r.failed);
            self.call(r.message, r.id, now_ns);
            self.imp.skip_effects(0, Vec::new());
        }
    }

    /// Whether this recovery would go over the restart intensity (more
    /// than `restarts` within the window): a crash loop. Counts it if not.
    fn crash_loop(&mut self) -> bool {
        let now = self.now_ns();
        let limits = &self.env.bus.limits;
        let window = limits.restart_window_ms.saturating_mul(1_000_000);
        let recent = &mut self.recovery.recent;
        while recent
            .front()
            .is_some_and(|t| now.saturating_sub(*t) >= window)
        {
            recent.pop_front();
        }
        if recent.len() >= limits.restarts as usize {
            return true;
        }
        recent.push_back(now);
        false
    }

    /// A crash loop: rebuild the instance to the recovery point so that a
    /// fixed version can take its state over, but serve nothing; the
    /// message it trapped on and everything queued wait for that version
    /// (`Replace`) or are dropped, counted, by `Unload`.
    fn hold(&mut self, base: Base, failed: Option<Retry>) {
        let limits = &self.env.bus.limits;
        let why = format!(
            "crash loop: more than {} recoveries within {:?}; held, mailbox kept, until a fixed version is Replaced in or the module is Unloaded",
            limits.restarts,
            std::time::Duration::from_millis(limits.restart_window_ms)
        );
        self.retry = failed;
        self.rebuild_held(&base);
        self.held = Some(why.clone());
        self.shared.mailbox.set_ticking(false);
        self.log(Level::Error, why.clone());
        self.set_state(ModuleState::Held, Some(why));
    }

    /// Rebuild a held module's instance after it trapped again (in a vote
    /// that then aborted): still held, still serving nothing.
    pub(super) fn recover_held(&mut self) {
        if let Some(base) = self.recovery.base.clone() {
            self.rebuild_held(&base);
        }
    }

    /// A fresh instance at the recovery point, in place of the dead one,
    /// not enabled; if none can be made, sends are refused.
    fn rebuild_held(&mut self, base: &Base) {
        let version = self.imp.version().clone();
        let rebuilt = loop {
            match self.rebuild(&version, base, false) {
                Ok(fresh) => break Some(fresh),
                Err(Rebuild::SetAside) => continue,
                Err(Rebuild::Failed(_)) => break None,
            }
        };
        match rebuilt {
            Some(fresh) => {
                let dead = std::mem::replace(&mut self.imp, fresh);
                self.env.reaper.bury(dead);
            }
            // Nothing can take a state over: sends are refused.
            None => self.shared.mailbox.set_dead(true),
        }
    }

    /// Put `fresh` in place of the current (dead or replaced) instance,
    /// enabled or held as the module was.
    pub(super) fn install(&mut self, mut fresh: Box<Implementation>) {
        self.shared.mailbox.set_dead(false);
        if !self.serving {
            fresh.replaying(true);
            let _ = fresh.disable();
            fresh.replaying(false);
        }
        let dead = std::mem::replace(&mut self.imp, fresh);
        self.env.reaper.bury(dead);
        // Recorded before anything is announced, so whoever hears of the
        // recovery or rollback finds the module ready for a command.
        let mut st = self.shared.state.lock().expect("proxy poisoned");
        st.0 = self.resting_state();
        st.1 = self.imp.version().clone();
        drop(st);
        self.shared.mailbox.set_ticking(self.serving);
    }

    pub(super) fn resting_state(&self) -> ModuleState {
        if self.serving {
            ModuleState::Serving
        } else {
            ModuleState::Disabled
        }
    }

    /// Announce serving (or disabled) after a rebuild.
    pub(super) fn announce_serving(&mut self) {
        self.emit_state(self.resting_state(), None);
    }
}
