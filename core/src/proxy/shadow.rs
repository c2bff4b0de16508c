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
//! shadow: at TERM the worker waits for the shadow to serve what it was
//! given, takes the instance back, and the commit installs it. No state
//! moves inside the pause.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use super::worker::Worker;
use super::{Control, ModuleProxy, Reaper};
use crate::bindings::{Level, Message};
use crate::guest::tap::{Effect, describe};
use crate::guest::{Failures, LogGate};
use crate::instance::Implementation;
use crate::report::Cause;
use crate::txn::Txn;

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
    /// A promote has asked for it: its thread waits awake for the end of
    /// the mirror, so that handing the instance back wakes no one.
    promoting: std::sync::atomic::AtomicBool,
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

/// What starting a shadow cost, told to whoever asked for it.
pub(crate) struct Started {
    pub progress: Arc<Progress>,
}

/// One message for the shadow: what the old version did with it.
enum Mirror {
    Serve(Box<Served>),
    /// Give the instance back (`Promote`).
    Finish,
}

struct Served {
    message: Message,
    outcome: Result<(), String>,
    effects: Vec<Effect>,
    failed: Failures,
}

/// The worker's end of a running shadow.
pub(super) struct Link {
    feed: Sender<Mirror>,
    back: Receiver<Box<Implementation>>,
    pub progress: Arc<Progress>,
    plan: Plan,
}

/// The shadow's thread: serves what it is given and compares.
struct Runner {
    imp: Box<Implementation>,
    progress: Arc<Progress>,
    except: Vec<String>,
    /// Protocols each side speaks: a send under a protocol the other side
    /// does not speak is a declared change, not compared.
    old_speaks: Vec<u32>,
    new_speaks: Vec<u32>,
    gate: Arc<LogGate>,
    reaper: Reaper,
}

impl Runner {
    fn run(mut self, feed: Receiver<Mirror>, back: Sender<Box<Implementation>>) {
        while let Some(mirror) = self.next(&feed) {
            match mirror {
                Mirror::Finish => {
                    if let Err(e) = back.send(self.imp) {
                        self.reaper.bury(e.into_inner());
                    }
                    return;
                }
                Mirror::Serve(s) => {
                    if let Err(why) = self.serve(*s) {
                        let line = format!(
                            "shadow v{} dropped: {why}; v{} serves on untouched",
                            self.progress.version, self.progress.beside
                        );
                        if self.progress.end(format!("dropped: {why}")) {
                            self.gate.log(&self.progress.version, Level::Error, line);
                        }
                        self.reaper.bury(self.imp);
                        return;
                    }
                }
            }
        }
        // The worker dropped the shadow (and said why).
        self.reaper.bury(self.imp);
    }

    /// The next message for the shadow; none once the worker dropped it.
    /// While a promote waits for it, it waits awake (yielding the core).
    fn next(&self, feed: &Receiver<Mirror>) -> Option<Mirror> {
        loop {
            if !self.progress.promoting.load(Ordering::Relaxed) {
                return feed.recv().ok();
            }
            match feed.try_recv() {
                Ok(m) => return Some(m),
                Err(crossbeam_channel::TryRecvError::Disconnected) => return None,
                Err(crossbeam_channel::TryRecvError::Empty) => std::thread::yield_now(),
            }
        }
    }

    /// Serve `s` on the shadow and compare; why they differ, if they do.
    fn serve(&mut self, s: Served) -> Result<(), String> {
        let n = self.progress.compared.load(Ordering::Relaxed) + 1;
        let m = &s.message;
        let which = format!("message {n} (`{}` from {})", m.kind, m.from);
        self.imp.script(&s.failed);
        let r = self.imp.service(m);
        let effects = self.imp.take_tap();
        self.progress.compared.fetch_add(1, Ordering::Relaxed);
        let outcome = r.map_err(|f| format!("{which}: the shadow trapped: {f}"))?;
        if self.except.contains(&m.kind) {
            return Ok(());
        }
        let (old_v, new_v) = (&self.progress.beside, &self.progress.version);
        if outcome != s.outcome {
            return Err(format!(
                "{which}: v{old_v} {}, shadow v{new_v} {}",
                ended(&s.outcome),
                ended(&outcome)
            ));
        }
        let old = compared(s.effects, &self.new_speaks);
        let new = compared(effects, &self.old_speaks);
        if old != new {
            let at = old.iter().zip(&new).take_while(|(a, b)| a == b).count();
            return Err(format!(
                "{which} diverged at effect {}: v{old_v}: {}; shadow v{new_v}: {}",
                at + 1,
                describe(&old[at..]),
                describe(&new[at..])
            ));
        }
        self.progress.matched.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// How a call ended, in a report.
fn ended(outcome: &Result<(), String>) -> String {
    match outcome {
        Ok(()) => "served it".into(),
        Err(e) => format!("returned the error \"{}\"", crate::limits::clip(e, 120)),
    }
}

/// The effects that are compared: all but sends under a protocol the
/// other side does not speak (a change the versions declared).
fn compared(effects: Vec<Effect>, other_speaks: &[u32]) -> Vec<Effect> {
    if other_speaks.is_empty() {
        return effects;
    }
    effects
        .into_iter()
        .filter(|e| e.proto().is_none_or(|p| other_speaks.contains(&p)))
        .collect()
}

impl Worker {
    /// `Shadow`: hand the old version's state to `new` at this message
    /// boundary and start it beside the old one.
    pub(super) fn start_shadow(
        &mut self,
        mut new: Box<Implementation>,
        plan: Plan,
    ) -> Result<Started, String> {
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
        let state = match self.imp.put_state(None) {
            Ok(Ok(state)) => state,
            Ok(Err(e)) => return Err(self.no_shadow(new, format!("put-state: {e}"))),
            Err(f) => {
                let why = format!("put-state: {f}");
                self.fault(f);
                self.recover(None);
                return Err(self.no_shadow(new, why));
            }
        };
        match new.get_state(&state, None) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(self.no_shadow(new, format!("get-state: {e}"))),
            Err(f) => return Err(self.no_shadow(new, format!("get-state: {f}"))),
        }
        new.replaying(true);
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
            promoting: Default::default(),
            state_bytes: state.len(),
            handover_us: paused.elapsed().as_micros() as u64,
        });
        self.env.reaper.bury(state);
        *self.shared.shadow.lock().expect("proxy poisoned") = Some(progress.clone());
        self.run_shadow(new, progress.clone(), plan);
        Ok(Started { progress })
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
        });
    }

    /// Give the shadow `m`, which the old version just served with
    /// `outcome`. A shadow that fell too far behind is dropped.
    pub(super) fn mirror(&mut self, m: &Message, outcome: &Result<(), String>, failed: &Failures) {
        let Some(link) = &self.shadow else { return };
        let served = Served {
            message: m.clone(),
            outcome: outcome.clone(),
            effects: self.imp.take_tap(),
            failed: failed.clone(),
        };
        match link.feed.try_send(Mirror::Serve(Box::new(served))) {
            Ok(()) => {
                link.progress.mirrored.fetch_add(1, Ordering::Relaxed);
            }
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
        if link.progress.end(format!("dropped: {why}")) {
            let line = format!(
                "shadow v{} dropped: {why}; v{} serves on",
                link.progress.version,
                self.imp.label()
            );
            self.log(Level::Warn, line);
        }
    }

    /// Whether a shadow runs that can be promoted; why not, if not. If
    /// it can, its thread starts waiting awake for the promote.
    pub(super) fn promotable(&self) -> Result<(), Cause> {
        match &self.shadow {
            None => Err(Cause::NoShadow(self.last_shadow())),
            Some(l) => match l.progress.ended() {
                Some(why) => Err(Cause::NoShadow(format!(
                    "its shadow v{} {why}",
                    l.progress.version
                ))),
                None => {
                    l.progress.promoting.store(true, Ordering::Relaxed);
                    Ok(())
                }
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

    /// At TERM of a promote: the shadow serves what it was given and
    /// hands its instance back, by the state calls' end of the vote.
    pub(super) fn take_shadow(&mut self, txn: &Txn) -> Result<Box<Implementation>, Cause> {
        self.promotable()?;
        let link = self.shadow.as_ref().expect("checked");
        let by = super::vote::state_calls_end(txn);
        let given = link.feed.send_deadline(Mirror::Finish, by).is_ok();
        // Awake: the shadow is (almost) done, and being woken costs more.
        let back = loop {
            match link.back.try_recv() {
                Err(crossbeam_channel::TryRecvError::Empty) if given && Instant::now() < by => {
                    std::thread::yield_now()
                }
                r => break r.ok(),
            }
        };
        match back {
            Some(imp) => Ok(imp),
            None => {
                let status = link.progress.status();
                let why = match status.ended {
                    Some(why) => format!("its shadow v{} {why}", status.version),
                    None => format!(
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

    /// A promote will not come (aborted): the shadow's thread sleeps
    /// again while it waits for messages.
    pub(super) fn unpromote(&self) {
        if let Some(l) = &self.shadow {
            l.progress.promoting.store(false, Ordering::Relaxed);
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
            Ok(r) => r.map(|s| s.progress),
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
