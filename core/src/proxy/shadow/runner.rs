//! The shadow's side: serve each message the old version served, in
//! replay mode, and compare what the two versions did with it. Runs on
//! the shadow's own thread; from a promote's CanCommit to its TERM, on the
//! worker's, message by message as the old version serves them.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crossbeam_channel::{Receiver, Sender};

use super::Progress;
use crate::bindings::{Level, Message};
use crate::guest::tap::{Effect, describe};
use crate::guest::{Failures, LogGate};
use crate::instance::Implementation;
use crate::proxy::Reaper;

/// One message for the shadow's thread.
pub(super) enum Mirror {
    Serve(Box<Served>),
    /// A promote's CanCommit: hand the runner back to the worker.
    Finish,
}

/// A message the old version served, with what it did with it.
pub(super) struct Served {
    pub message: Message,
    pub outcome: Result<(), String>,
    pub effects: Vec<Effect>,
    pub failed: Failures,
}

/// The shadow: its instance, and what it is compared by.
pub(super) struct Runner {
    pub imp: Box<Implementation>,
    pub progress: Arc<Progress>,
    pub except: Vec<String>,
    /// Protocols each side speaks: a send under a protocol the other side
    /// does not speak is a declared change, not compared.
    pub old_speaks: Vec<u32>,
    pub new_speaks: Vec<u32>,
    pub gate: Arc<LogGate>,
    pub reaper: Reaper,
}

impl Runner {
    /// The shadow's thread: serve what comes until the worker drops the
    /// shadow, the shadow differs, or a promote takes the runner back.
    pub(super) fn run(self, feed: Receiver<Mirror>, back: Sender<Runner>) {
        let mut me = self;
        while let Ok(mirror) = feed.recv() {
            match mirror {
                Mirror::Finish => {
                    if let Err(e) = back.send(me) {
                        let me = e.into_inner();
                        me.reaper.bury(me.imp);
                    }
                    return;
                }
                Mirror::Serve(s) => {
                    if let Err(why) = me.serve(*s) {
                        me.fail(&why);
                        me.reaper.bury(me.imp);
                        return;
                    }
                }
            }
        }
        // The worker dropped the shadow (and said why).
        me.reaper.bury(me.imp);
    }

    /// The shadow ends at `why`: said once, at `error`, by the module.
    pub(super) fn fail(&self, why: &str) {
        let line = format!(
            "shadow v{} dropped: {why}; v{} serves on untouched",
            self.progress.version, self.progress.beside
        );
        if self.progress.end(format!("dropped: {why}")) {
            self.gate.log(&self.progress.version, Level::Error, line);
        }
    }

    /// Serve `s` on the shadow and compare; why they differ, if they do.
    pub(super) fn serve(&mut self, s: Served) -> Result<(), String> {
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
