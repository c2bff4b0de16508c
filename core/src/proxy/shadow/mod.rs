//! Shadow runs: a new version beside the one that acts, proven on live
//! traffic before it takes over.
//!
//! `Shadow` hands the old version's state to the new one once, at a
//! message boundary, like a swap. From then on the worker gives every
//! message the old version served, with the effects it made and how it
//! ended, to the shadow's own thread through a bounded queue. That thread
//! serves the message on the new version in replay mode (every effect is
//! dropped, socket sends and guest output too, and a fallible effect gets
//! the result the old version's had) and compares: the outcome and every
//! effect, in order. A difference, a trap or an error ends the shadow;
//! the old version never waits for it and never notices.
//!
//! `Promote` is a transaction like `Replace`, whose candidate is the
//! shadow. At its CanCommit the shadow's thread serves what it was given
//! and hands the shadow back to the worker, which from then on serves
//! each message on both versions itself, one after the other, until TERM.
//! At TERM the shadow is in step and in hand: the commit installs it, and
//! the pause is the switch alone, whatever the state's size.
//!
//! Files: this one is the worker's side; `runner.rs` the shadow's.

mod runner;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::collections::VecDeque;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use super::worker::Worker;
use super::{Control, ModuleProxy};
use crate::bindings::{Level, Message};
use crate::guest::Failures;
use crate::instance::Implementation;
use crate::report::Cause;
use crate::txn::Txn;
use runner::{Mirror, Runner, Served};

/// How a shadow runs.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    /// Most messages it may be behind the old version; one more drops it.
    pub queue: usize,
    /// Message kinds whose effects the new version changes on purpose:
    /// not compared.
    pub except: Vec<String>,
}

/// A shadow's progress, shared by the worker, the shadow's thread and
/// `Status`. Kept after the shadow ends, with why it ended.
#[derive(Debug)]
pub struct Progress {
    /// The shadow's version label.
    pub version: String,
    /// The version it runs beside.
    pub beside: String,
    /// Its version, what a promote installs.
    pub candidate: Arc<crate::repo::Version>,
    started: Instant,
    mirrored: AtomicU64,
    compared: AtomicU64,
    matched: AtomicU64,
    ended: Mutex<Option<String>>,
    /// Bytes of state it started from.
    pub state_bytes: usize,
    /// How long the old version paused for the hand-over.
    pub handover_us: u64,
}

impl Progress {
    /// Why it ended, if it has: the first writer wins.
    fn end(&self, why: String) -> bool {
        let mut e = self.ended.lock().expect("shadow poisoned");
        if e.is_some() {
            return false;
        }
        *e = Some(why);
        true
    }

    /// Whether it still runs.
    pub(crate) fn running(&self) -> bool {
        self.ended.lock().expect("shadow poisoned").is_none()
    }

    /// Why it ended, if it has.
    pub fn ended(&self) -> Option<String> {
        self.ended.lock().expect("shadow poisoned").clone()
    }

    /// A snapshot for `Status`.
    pub fn status(&self) -> ShadowStatus {
        let mirrored = self.mirrored.load(Ordering::Relaxed);
        let compared = self.compared.load(Ordering::Relaxed);
        ShadowStatus {
            version: self.version.clone(),
            mirrored,
            matched: self.matched.load(Ordering::Relaxed),
            behind: mirrored.saturating_sub(compared),
            running: self.started.elapsed(),
            ended: self.ended(),
        }
    }
}

/// A shadow as `Status` shows it.
#[derive(Clone, Debug)]
pub struct ShadowStatus {
    /// Its version label.
    pub version: String,
    /// Messages given to it.
    pub mirrored: u64,
    /// Messages it served with the same outcome and effects.
    pub matched: u64,
    /// Messages given to it and not yet served.
    pub behind: u64,
    /// Time since it started.
    pub running: Duration,
    /// Why it ended (dropped, or promoted), if it has.
    pub ended: Option<String>,
}

/// How long a promote's CanCommit on an idle module waits for the
/// shadow to come back from its thread before TERM goes in.
const AWAIT_SHADOW: Duration = Duration::from_millis(20);

/// The worker's end of a running shadow.
pub(super) struct Link {
    feed: Sender<Mirror>,
    back: Receiver<Runner>,
    pub progress: Arc<Progress>,
    plan: Plan,
    /// From a promote's CanCommit: the shadow back on the worker's thread
    /// (once it came), and the messages served since that it has not seen.
    collecting: Option<Collect>,
}

#[derive(Default)]
struct Collect {
    runner: Option<Runner>,
    held: VecDeque<Served>,
    /// The promote was aborted before the shadow came back: when it does,
    /// it goes to a thread again.
    cancelled: bool,
}

impl Worker {
    /// `Shadow`: hand the old version's state to `new` at this message
    /// boundary and start it beside the old one.
    pub(super) fn start_shadow(
        &mut self,
        mut new: Box<Implementation>,
        plan: Plan,
    ) -> Result<Arc<Progress>, String> {
        if self.shadow.as_ref().is_some_and(|l| !l.progress.running()) {
            // It ended itself since the last message it was given.
            self.shadow = None;
            self.imp.tap(false);
        }
        let refuse = if self.imp.is_dead() {
            Some("it is faulted".to_string())
        } else if let Some(why) = &self.held {
            Some(format!("it is held after a {why}"))
        } else if !self.serving {
            Some("it is disabled".into())
        } else if self.vote.is_some() {
            Some("it is in a transaction".into())
        } else {
            self.shadow
                .as_ref()
                .map(|l| format!("shadow v{} already runs beside it", l.progress.version))
        };
        if let Some(why) = refuse {
            self.env.reaper.bury(new);
            return Err(why);
        }
        let paused = Instant::now();
        let limit = self.env.settings.max_state_bytes;
        let state = match self.imp.put_state(None) {
            Ok(Ok(state)) if state.len() > limit => {
                let why = format!(
                    "put-state handed over {} bytes, over the state limit of {limit}",
                    state.len()
                );
                return Err(self.no_shadow(new, why));
            }
            Ok(Ok(state)) => state,
            Ok(Err(e)) => return Err(self.no_shadow(new, format!("put-state: {e}"))),
            Err(f) => {
                let why = format!("put-state: {f}");
                self.fault(f);
                self.recover(None);
                return Err(self.no_shadow(new, why));
            }
        };
        // From its first call on, nothing the shadow does gets out.
        new.replaying(true);
        match new.get_state(&state, None) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(self.no_shadow(new, format!("get-state: {e}"))),
            Err(f) => return Err(self.no_shadow(new, format!("get-state: {f}"))),
        }
        if let Err(f) = new.enable() {
            return Err(self.no_shadow(new, format!("enable: {f}")));
        }
        new.tap(true);
        self.imp.tap(true);
        let progress = Arc::new(Progress {
            version: new.label().to_string(),
            candidate: new.version().clone(),
            beside: self.imp.label().to_string(),
            started: Instant::now(),
            mirrored: AtomicU64::new(0),
            compared: AtomicU64::new(0),
            matched: AtomicU64::new(0),
            ended: Mutex::new(None),
            state_bytes: state.len(),
            handover_us: paused.elapsed().as_micros() as u64,
        });
        self.env.reaper.bury(state);
        *self.shared.shadow.lock().expect("proxy poisoned") = Some(progress.clone());
        self.run_shadow(new, progress.clone(), plan);
        Ok(progress)
    }

    /// Refuse a shadow: `new` is dropped; the reason, for the reply.
    fn no_shadow(&self, new: Box<Implementation>, why: String) -> String {
        self.env.reaper.bury(new);
        why
    }

    /// Start (or restart, after an aborted promote) the shadow's thread.
    fn run_shadow(&mut self, imp: Box<Implementation>, progress: Arc<Progress>, plan: Plan) {
        let (feed, rx) = bounded(plan.queue);
        let (back_tx, back) = bounded(1);
        let runner = Runner {
            old_speaks: self
                .imp
                .version()
                .info()
                .map(|i| i.speaks.clone())
                .unwrap_or_default(),
            new_speaks: imp
                .version()
                .info()
                .map(|i| i.speaks.clone())
                .unwrap_or_default(),
            imp,
            progress: progress.clone(),
            except: plan.except.clone(),
            gate: self.shared.seat.gate.clone(),
            reaper: self.env.reaper.clone(),
        };
        std::thread::Builder::new()
            .name(format!("shadow-{}", self.shared.seat.name))
            .spawn(move || runner.run(rx, back_tx))
            .expect("spawning a shadow thread");
        self.shadow = Some(Link {
            feed,
            back,
            progress,
            plan,
            collecting: None,
        });
    }

    /// Give the shadow `m`, which the old version just served with
    /// `outcome` (and `effects`, `failed` of them): to its thread, or (a promote under way) serve it on the
    /// shadow here. A shadow that fell too far behind is dropped.
    pub(super) fn mirror(
        &mut self,
        m: &Message,
        outcome: &Result<(), String>,
        failed: &Failures,
        effects: Vec<crate::guest::tap::Effect>,
    ) {
        let Some(link) = &mut self.shadow else { return };
        let served = Served {
            message: m.clone(),
            outcome: outcome.clone(),
            effects,
            failed: failed.clone(),
        };
        link.progress.mirrored.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = &mut link.collecting {
            if c.runner.is_none() {
                c.runner = link.back.try_recv().ok();
            }
            if c.runner.is_none() && !link.progress.running() {
                // It ended itself on its thread, and said why.
                self.shadow = None;
                self.imp.tap(false);
                return;
            }
            c.held.push_back(served);
            if c.held.len() > link.plan.queue {
                let why = format!(
                    "it fell {} messages behind v{}",
                    link.plan.queue,
                    self.imp.label()
                );
                self.drop_shadow(&why);
            } else if c.cancelled {
                if c.runner.is_some() {
                    self.restart_shadow();
                }
            } else if let Err(why) = c.catch_up() {
                self.drop_shadow(&why);
            }
            return;
        }
        match link.feed.try_send(Mirror::Serve(Box::new(served))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let why = format!(
                    "it fell {} messages behind v{} (the bound; Shadow ... queue N)",
                    link.plan.queue,
                    self.imp.label()
                );
                self.drop_shadow(&why);
            }
            Err(TrySendError::Disconnected(_)) => {
                // It ended itself, and said why.
                self.shadow = None;
                self.imp.tap(false);
            }
        }
    }

    /// End the shadow, if one runs: the old version serves on alone.
    pub(super) fn drop_shadow(&mut self, why: &str) {
        let Some(link) = self.shadow.take() else {
            return;
        };
        self.imp.tap(false);
        if let Some(r) = link.collecting.and_then(|c| c.runner) {
            self.env.reaper.bury(r.imp);
        }
        if link.progress.end(format!("dropped: {why}")) {
            let line = format!(
                "shadow v{} dropped: {why}; v{} serves on",
                link.progress.version,
                self.imp.label()
            );
            self.log(Level::Warn, line);
        }
    }

    /// CanCommit of a promote: the shadow's thread serves what it was
    /// given and hands the shadow back; the worker serves it from then on.
    pub(super) fn expect_promote(&mut self) {
        let Some(l) = &mut self.shadow else { return };
        match &mut l.collecting {
            Some(c) => c.cancelled = false,
            None => {
                let by = Instant::now() + Duration::from_secs(1);
                if l.feed.send_deadline(Mirror::Finish, by).is_ok() {
                    l.collecting = Some(Collect::default());
                }
            }
        }
    }

    /// A promote's CanCommit found nothing queued: wait here, awake, for
    /// the shadow to come back before TERM goes in (no message waits
    /// meanwhile), so that TERM finds it in hand. Stops waiting as soon as
    /// a message comes, or after [`AWAIT_SHADOW`].
    pub(super) fn await_shadow(&mut self) {
        let Some(Link {
            back,
            collecting: Some(c),
            ..
        }) = &mut self.shadow
        else {
            return;
        };
        let until = Instant::now() + AWAIT_SHADOW;
        let idle = || self.pending.is_empty() && self.data_rx.is_empty();
        while c.runner.is_none() && idle() && Instant::now() < until {
            match back.try_recv() {
                Ok(r) => c.runner = Some(r),
                Err(crossbeam_channel::TryRecvError::Empty) => std::thread::yield_now(),
                Err(_) => return,
            }
        }
    }

    /// The old version trapped on `m`: a shadow does not follow a
    /// recovery.
    pub(super) fn old_trapped(&mut self, on: Option<&Message>) {
        if self.shadow.is_none() {
            return;
        }
        let why = match on {
            Some(m) => format!(
                "v{} trapped on `{}` from {} (a shadow does not follow a recovery)",
                self.imp.label(),
                m.kind,
                m.from
            ),
            None => format!(
                "v{} trapped (a shadow does not follow a recovery)",
                self.imp.label()
            ),
        };
        self.drop_shadow(&why);
    }

    /// Whether a shadow runs that can be promoted; why not, if not.
    pub(super) fn promotable(&self) -> Result<(), Cause> {
        match &self.shadow {
            None => Err(Cause::NoShadow(self.last_shadow())),
            Some(l) => match l.progress.ended() {
                Some(why) => Err(Cause::NoShadow(format!(
                    "its shadow v{} {why}",
                    l.progress.version
                ))),
                None => Ok(()),
            },
        }
    }

    /// What became of the last shadow, for a refusal.
    fn last_shadow(&self) -> String {
        match &*self.shared.shadow.lock().expect("proxy poisoned") {
            Some(p) => match p.ended() {
                Some(why) => format!("its last shadow, v{}, {why}", p.version),
                None => format!("its shadow v{} is not running", p.version),
            },
            None => "no shadow runs beside it".into(),
        }
    }

    /// At TERM of a promote: the shadow, in step with the old version. In
    /// hand already unless its thread is still serving what it was given
    /// at CanCommit: then that is waited for, by the state calls' end of
    /// the vote.
    pub(super) fn take_shadow(&mut self, txn: &Txn) -> Result<Box<Implementation>, Cause> {
        self.promotable()?;
        self.expect_promote();
        let by = super::vote::state_calls_end(txn);
        let link = self.shadow.as_mut().expect("checked");
        let c = link.collecting.as_mut();
        let got = match c {
            Some(c) => {
                if c.runner.is_none() {
                    c.runner = link.back.recv_deadline(by).ok();
                }
                match c.catch_up() {
                    Err(why) => Err(Some(why)),
                    Ok(()) => c.runner.take().ok_or(None),
                }
            }
            None => Err(None),
        };
        match got {
            Ok(r) => Ok(r.imp),
            Err(failed) => {
                let status = link.progress.status();
                let why = match (failed, status.ended) {
                    (Some(why), _) => format!("its shadow v{} dropped: {why}", status.version),
                    (None, Some(why)) => format!("its shadow v{} {why}", status.version),
                    (None, None) => format!(
                        "its shadow v{} still had {} message(s) to serve at the bound",
                        status.version, status.behind
                    ),
                };
                self.drop_shadow(&why);
                Err(Cause::NoShadow(why))
            }
        }
    }

    /// After a promote: the shadow's instance acts from now on.
    pub(super) fn promoted(&mut self, imp: &mut Implementation, txn: u64) {
        imp.replaying(false);
        imp.tap(false);
        if let Some(link) = self.shadow.take() {
            link.progress.end(format!("promoted in transaction {txn}"));
        }
    }

    /// A promote will not happen (aborted before TERM, or at it with the
    /// shadow still on its thread): the shadow goes back to its thread
    /// with what it has not seen.
    pub(super) fn unpromote(&mut self) {
        let Some(link) = &mut self.shadow else { return };
        let Some(c) = &mut link.collecting else {
            return;
        };
        if c.runner.is_none() {
            c.runner = link.back.try_recv().ok();
        }
        // Not waited for: if it is still on its way, the next message
        // served sends it back to a thread.
        c.cancelled = true;
        if c.runner.is_some() {
            self.restart_shadow();
        }
    }

    /// The shadow of an aborted promote, back from its thread: to a
    /// thread again, with the messages it has not seen.
    fn restart_shadow(&mut self) {
        let Some(link) = self.shadow.take() else {
            return;
        };
        let Some(Collect {
            runner: Some(r),
            held,
            ..
        }) = link.collecting
        else {
            self.shadow = Some(link);
            return;
        };
        let queue = link.plan.queue;
        self.run_shadow(r.imp, link.progress, link.plan);
        let feed = self.shadow.as_ref().map(|l| l.feed.clone());
        for s in held {
            let given = feed
                .as_ref()
                .is_some_and(|f| f.try_send(Mirror::Serve(Box::new(s))).is_ok());
            if !given {
                let why = format!("it fell {queue} messages behind v{}", self.imp.label());
                self.drop_shadow(&why);
                return;
            }
        }
    }

    /// After an aborted promote: the shadow goes on where it stopped.
    pub(super) fn resume_shadow(&mut self, imp: Box<Implementation>) {
        match self.shadow.take() {
            Some(link) => self.run_shadow(imp, link.progress, link.plan),
            None => self.env.reaper.bury(imp),
        }
    }
}

impl Collect {
    /// Serve the held messages on the shadow, if it is back; why it
    /// differed, if it did (it is then dropped, and said so).
    fn catch_up(&mut self) -> Result<(), String> {
        let Some(r) = &mut self.runner else {
            return Ok(());
        };
        while let Some(s) = self.held.pop_front() {
            if let Err(why) = r.serve(s) {
                r.fail(&why);
                return Err(why);
            }
        }
        Ok(())
    }
}

impl ModuleProxy {
    /// The module's shadow (running, or the last one, with why it ended).
    pub fn shadow(&self) -> Option<Arc<Progress>> {
        self.0.shadow.lock().expect("proxy poisoned").clone()
    }

    /// Start `new` as a shadow beside the running version. Waits for the
    /// worker's next message boundary.
    pub(crate) fn start_shadow(
        &self,
        new: Box<Implementation>,
        plan: Plan,
        wait: Duration,
    ) -> Result<Arc<Progress>, String> {
        let (tx, rx) = bounded(1);
        if !self.control(Control::Shadow {
            new,
            plan,
            reply: tx,
        }) {
            return Err("the module has stopped".into());
        }
        match rx.recv_timeout(wait) {
            Ok(r) => r,
            Err(_) => Err(format!(
                "the module did not reach a message boundary within {wait:?}"
            )),
        }
    }

    /// Drop the module's shadow; false if none ran.
    pub(crate) fn drop_shadow(&self, why: &str) -> bool {
        let (tx, rx) = bounded(1);
        if !self.control(Control::Unshadow {
            why: why.to_string(),
            reply: tx,
        }) {
            return false;
        }
        rx.recv().unwrap_or(false)
    }
}
