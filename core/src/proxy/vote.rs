//! A participant's side of two-phase commit (architecture.md §4, thesis 3.7): on
//! CanCommit the worker appends TERM to its own mailbox, serves everything
//! ahead of it, hands the old version's state to the candidate and votes;
//! on the decision it swaps (commit) or resumes the old version (abort).
//!
//! Inside the pause — from TERM reached to the next message servable —
//! nothing is formatted, allocated or woken unless the vote is NO.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::recovery::{Base, Logged};
use super::worker::Worker;
use crate::events::ModuleState;
use crate::instance::{EPOCH_PERIOD, GuestFault, Implementation};
use crate::report::{Cause, Phase, Refusal};
use crate::txn::{Decision, Report, Txn};

/// A vote in progress: TERM is queued, the candidate waits.
pub(super) struct PendingVote {
    pub txn: Arc<Txn>,
    /// The candidate; none for a promote (the shadow is).
    pub new: Option<Box<Implementation>>,
    pub started: Instant,
}

/// What a participant measured when it acted on the decision.
struct Done {
    /// When the next message became servable.
    resumed: Instant,
    /// Messages that waited behind TERM.
    buffered: usize,
    /// Bytes of state handed over, if it was.
    state_bytes: Option<usize>,
}

impl Done {
    /// What the pause of a participant that reached TERM at `q.at`
    /// spent in `put-state` and `get-state`, from when each returned.
    fn state_calls(q: &Quiesced, [put, get]: [Option<Instant>; 2]) -> (Option<u64>, Option<u64>) {
        let us = |a: Instant, b: Instant| b.saturating_duration_since(a).as_micros() as u64;
        let put_us = put.map(|p| us(q.at, p));
        let get_us = put.zip(get).map(|(p, g)| us(p, g));
        (put_us, get_us)
    }
}

/// When the old version reached TERM, for the report.
pub(super) struct Quiesced {
    pub at: Instant,
    pub quiesce_us: u64,
}

/// When `put-state` and `get-state` are interrupted: a tenth of the
/// vote's bound before it ends (at least two epoch periods, at most
/// 100 ms), so that the NO naming the call reaches the coordinator before
/// it gives up on the module as late, even on a loaded machine where the
/// worker's thread is not scheduled at once.
pub(super) fn state_calls_end(txn: &Txn) -> Instant {
    let margin = (txn.bound / 10).clamp(2 * EPOCH_PERIOD, Duration::from_millis(100));
    txn.deadline.checked_sub(margin).unwrap_or(txn.deadline)
}

/// Why a state call that faulted votes NO: out of time if the vote's
/// bound interrupted it, else its trap.
fn fault_cause(version: &str, f: &GuestFault, txn: &Txn) -> Cause {
    if f.interrupted && Instant::now() >= state_calls_end(txn) {
        Cause::OutOfTime {
            version: version.to_string(),
            bound: txn.bound,
        }
    } else {
        Cause::Trap {
            version: version.to_string(),
            fault: f.to_string(),
        }
    }
}

impl Worker {
    /// CanCommit: queue TERM and hold timer ticks; the old version serves
    /// on until it reaches TERM.
    pub(super) fn begin_vote(&mut self, txn: Arc<Txn>, new: Option<Box<Implementation>>) {
        let name = &self.shared.seat.name;
        let refuse = if self.imp.is_dead() {
            Some(Cause::Faulted)
        } else if self.vote.is_some() || self.early.is_some() {
            Some(Cause::Busy)
        } else {
            None
        };
        if let Some(cause) = refuse {
            let no = Refusal::new(name, Phase::Join, cause);
            self.refuse_vote(&txn, new, no);
            return;
        }
        if self.held.is_some() {
            // Held after a crash loop, it serves nothing: its quiescent
            // point is now, and everything queued (the message it trapped
            // on first) waits for the version that commits.
            let id = txn.id;
            self.vote = Some(PendingVote {
                txn,
                new,
                started: Instant::now(),
            });
            self.reach_term(id);
            return;
        }
        self.shared.mailbox.set_ticking(false);
        self.set_state(ModuleState::Quiescing, None);
        self.shared.mailbox.push_term(txn.id);
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
    pub(super) fn refuse_vote(&self, txn: &Txn, new: Option<Box<Implementation>>, no: Refusal) {
        txn.report(Report::Vote {
            module: self.shared.seat.name.to_string(),
            quiesce_us: None,
            no: Some(no),
        });
        txn.decide(Decision::Abort);
        self.env.reaper.bury(new);
        txn.report(Report::done(&self.shared.seat.name));
    }

    /// The old implementation has served everything queued before TERM of
    /// transaction `id`: vote, wait for the decision, act on it.
    pub(super) fn reach_term(&mut self, id: u64) {
        if let Some(i) = self.skip.iter().position(|s| *s == id) {
            self.skip.swap_remove(i);
            return;
        }
        if let Some(e) = self
            .early
            .take_if(|e| e.txn.id == id && e.txn.made().is_some())
        {
            return self.reach_switch(e);
        }
        let Some(pv) = self.vote.take_if(|v| v.txn.id == id) else {
            return;
        };
        let at = Instant::now();
        let q = Quiesced {
            at,
            quiesce_us: at.duration_since(pv.started).as_micros() as u64,
        };
        let txn = pv.txn;
        let promote = pv.new.is_none();
        let (new, no) = if txn.decision() == Decision::Abort {
            let no = Refusal::new(
                &self.shared.seat.name,
                Phase::Quiescence,
                Cause::AlreadyAborted,
            );
            (pv.new, Some(no))
        } else {
            self.candidate(pv.new, &txn)
        };
        let new = match new {
            Some(new) if no.is_none() && txn.early() && !promote && self.held.is_none() => {
                return self.vote_early(txn, new, &q);
            }
            new => new,
        };
        let (decision, vote_after) = self.vote(&txn, &q, no);
        match (decision, new) {
            (Decision::Commit, Some(mut new)) => {
                if promote {
                    self.promoted(&mut new, txn.id);
                }
                // A promote keeps the recovery point: the old version's
                // snapshot and the log since, from which the shadow itself
                // was brought up; the next checkpoint renews it as usual
                // (taking one now would stall the next message behind a
                // `put-state`).
                self.commit(&txn, new, &q, vote_after, Vec::new());
            }
            (_, new) => {
                match new {
                    // Taken back at TERM, in step: to its thread again.
                    Some(new) if promote => self.resume_shadow(new),
                    new => {
                        self.env.reaper.bury(new);
                        self.unpromote();
                    }
                }
                self.abort(&txn, &q, vote_after);
            }
        }
    }

    /// The candidate, ready to take over (the state handed to it, or the
    /// shadow taken back), or the NO.
    fn candidate(
        &mut self,
        new: Option<Box<Implementation>>,
        txn: &Txn,
    ) -> (Option<Box<Implementation>>, Option<Refusal>) {
        match new {
            Some(mut new) => {
                let no = self.transfer(&mut new, txn);
                (Some(new), no)
            }
            None => match self.take_shadow(txn) {
                Ok(shadow) => (Some(shadow), None),
                Err(cause) => {
                    let no = Refusal::new(&self.shared.seat.name, Phase::Quiescence, cause);
                    (None, Some(no))
                }
            },
        }
    }

    /// Send the vote and learn the decision. The last YES of a pure
    /// replacement decides at once; its vote is built and sent after the
    /// swap (`true` returned), so nothing is allocated and no other thread
    /// is woken inside the pause.
    fn vote(&self, txn: &Txn, q: &Quiesced, no: Option<Refusal>) -> (Decision, bool) {
        match no {
            Some(no) => {
                txn.report(self.vote_report(q, Some(no)));
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
                txn.report(self.vote_report(q, None));
                (txn.wait(), false)
            }
        }
    }

    pub(super) fn vote_report(&self, q: &Quiesced, no: Option<Refusal>) -> Report {
        Report::Vote {
            module: self.shared.seat.name.to_string(),
            quiesce_us: Some(q.quiesce_us),
            no,
        }
    }

    /// Commit: the candidate, which already holds the state, takes over;
    /// the messages `since` that state (an early vote's) stay logged.
    pub(super) fn commit(
        &mut self,
        txn: &Txn,
        new: Box<Implementation>,
        q: &Quiesced,
        vote_after: bool,
        since: Vec<Logged>,
    ) {
        let old = std::mem::replace(&mut self.imp, new);
        let enabled = self.imp.enable();
        let was_held = self.held.take().is_some();
        let resumed = Instant::now();
        let buffered = self.queued();
        let replaced = old.version().clone();
        self.env.reaper.bury(old);
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
        // The recovery point is now the state just handed over: the new
        // version accepted it, and the old one wrote it. Set before the
        // coordinator hears Done, as the state above is.
        let now_ns = self.now_ns();
        self.probation = None;
        let state_bytes = self.handed.as_ref().map(Vec::len);
        if let Some(state) = self.handed.take() {
            let state = Arc::new(state);
            self.swapped(txn.id, Some(state.clone()));
            self.new_base(Base::State(state), now_ns);
        } else {
            self.swapped(txn.id, None);
        }
        self.keep_log(since);
        self.recovery.checkpoints = true;
        self.recovery.failing = false;
        self.recovery.recent.clear();
        if let Some(group) = &txn.probation {
            self.begin_probation(group.clone(), replaced, now_ns);
        }
        let done = Done {
            resumed,
            buffered,
            state_bytes,
        };
        self.report_done(txn, q, vote_after, done);
        match enabled {
            Ok(()) => {
                self.shared.mailbox.set_ticking(true);
                self.shared.mailbox.set_dead(false);
                self.emit_state(ModuleState::Swapped, None);
                self.emit_state(ModuleState::Serving, None);
                if was_held {
                    // The message the old version trapped on, first.
                    self.serve_retry(self.now_ns());
                }
            }
            Err(f) => {
                let reason = format!("{} v{}: {f}", self.shared.seat.name, self.imp.label());
                self.fault(f);
                if self.probation.is_some() {
                    self.breach(reason);
                } else {
                    self.recover(None);
                }
            }
        }
    }

    /// Abort: the old version serves on with everything that waited.
    fn abort(&mut self, txn: &Txn, q: &Quiesced, vote_after: bool) {
        let resumed = Instant::now();
        let buffered = self.queued();
        let state_bytes = self.handed.as_ref().map(Vec::len);
        let done = Done {
            resumed,
            buffered,
            state_bytes,
        };
        if self.imp.is_dead() {
            // The old version died in the vote (a trap, or interrupted at
            // the bound): the transaction ends now, and the rebuild from
            // its recovery point follows outside it.
            self.report_done(txn, q, vote_after, done);
            self.resume_old();
        } else {
            self.resume_old();
            self.report_done(txn, q, vote_after, done);
        }
    }

    /// Tell the coordinator this participant acted on the decision (and,
    /// after a commit it decided itself, how it voted): outside the pause.
    fn report_done(&mut self, txn: &Txn, q: &Quiesced, vote_after: bool, done: Done) {
        if vote_after {
            txn.report(self.vote_report(q, None));
        }
        let (mut put_state_us, mut get_state_us) = self.state_calls(q);
        let mut pause_us = done.resumed.duration_since(q.at).as_micros() as u64;
        if let Some(first) = self.early_first.take() {
            // An early vote paused twice: the longer pause is reported,
            // with the state calls of the first.
            pause_us = pause_us.max(first.pause_us);
            (put_state_us, get_state_us) = (first.put_state_us, first.get_state_us);
        }
        txn.report(Report::Done {
            module: self.shared.seat.name.to_string(),
            pause_us: Some(pause_us),
            buffered: done.buffered,
            state_bytes: done.state_bytes,
            put_state_us,
            get_state_us,
        });
    }

    /// How long the last hand-over's `put-state` and `get-state` took.
    pub(super) fn state_calls(&mut self, q: &Quiesced) -> (Option<u64>, Option<u64>) {
        Done::state_calls(q, std::mem::take(&mut self.handed_at))
    }

    /// Hand the old version's state to the new one. `Some(refusal)` is NO.
    /// Runs inside the pause: nothing is formatted unless the vote is NO.
    /// Both calls end at the vote's bound: one still running then is
    /// interrupted and votes NO, naming the call.
    fn transfer(&mut self, new: &mut Implementation, txn: &Txn) -> Option<Refusal> {
        let name = &self.shared.seat.name;
        let limit = self.env.settings.max_state_bytes;
        let by = state_calls_end(txn);
        let state = match self.imp.put_state(Some(by)) {
            Ok(Ok(state)) if state.len() > limit => {
                let cause = Cause::OverLimit {
                    version: self.imp.label().to_string(),
                    bytes: state.len(),
                    limit,
                };
                return Some(Refusal::new(name, Phase::PutState, cause));
            }
            Ok(Ok(state)) => state,
            Ok(Err(error)) => {
                let cause = Cause::Error {
                    version: self.imp.label().to_string(),
                    error,
                };
                return Some(Refusal::new(name, Phase::PutState, cause));
            }
            Err(f) => {
                let cause = fault_cause(self.imp.label(), &f, txn);
                let no = Refusal::new(name, Phase::PutState, cause);
                self.fault(f);
                return Some(no);
            }
        };
        self.handed_at[0] = Some(Instant::now());
        let state = self.handed.insert(state);
        let got = new.get_state(state, Some(by));
        self.handed_at[1] = Some(Instant::now());
        let cause = match got {
            Ok(Ok(())) => return None,
            Ok(Err(error)) => Cause::Error {
                version: new.label().to_string(),
                error,
            },
            Err(f) => fault_cause(new.label(), &f, txn),
        };
        Some(Refusal::new(&self.shared.seat.name, Phase::GetState, cause))
    }

    /// After an abort: the old version serves on, rebuilt from its
    /// recovery point if its instance trapped during the vote.
    pub(super) fn resume_old(&mut self) {
        self.handed = None;
        if let Some(why) = self.held.clone() {
            // Still held: the aborted upgrade leaves it as it was.
            if self.imp.is_dead() {
                self.recover_held();
            }
            self.set_state(ModuleState::Held, Some(why));
            return;
        }
        if self.imp.is_dead() {
            self.recover(None);
        }
        if self.switch(true).is_ok() {
            self.emit_state(ModuleState::Resumed, None);
        }
    }
}
