//! Early votes (`SetMode early`), a participant's side: at its TERM a
//! target hands its state to the candidate and votes as usual, but then
//! serves on with the old version instead of waiting, paused, for the
//! others; the candidate, which holds the state of that TERM, serves each
//! message after the old version, its effects suppressed (they happened).
//! Before it serves the first message it takes out after the decision
//! ([`crate::txn::Txn::made`]), or at the TERM the decision queues to wake
//! it, a commit switches to the candidate and an abort drops it.
//!
//! A group's largest pause is then one target's hand-over, not the time
//! from the first TERM to the last vote. The cut stays consistent: a new
//! version sends only after the decision, so its message is taken out
//! after it too, and finds the receiver switched. The recovery point after
//! the switch is the state of the first TERM and the messages since, which
//! is what the new version was built from.

use std::sync::Arc;
use std::time::Instant;

use super::recovery::Logged;
use super::vote::Quiesced;
use super::worker::Worker;
use crate::bindings::Level;
use crate::instance::Implementation;
use crate::limits::message_cost;
use crate::txn::{Decision, Report, Txn};

/// A target that voted YES early, serving on until the decision's TERM.
pub(super) struct Early {
    pub txn: Arc<Txn>,
    /// The candidate, holding the state of the first TERM.
    pub new: Box<Implementation>,
    /// That state: the recovery point after the switch.
    pub state: Option<Vec<u8>>,
    /// The log's length at the first TERM: what was served since follows.
    pub from: usize,
    /// When the recovery point was taken then: another one since means
    /// the log no longer holds what the old version served since.
    pub base_ns: u64,
    /// Of the messages served since, how many the candidate has served
    /// too (each right after the old version, its effects suppressed), so
    /// that the switch has little or nothing left to replay.
    pub caught: usize,
    /// The old version trapped since: the log was rebuilt, and may hold
    /// less than the candidate saw.
    pub old_failed: bool,
    /// The first pause, and the state calls inside it.
    pub first: FirstPause,
}

/// What the hand-over at the first TERM took.
#[derive(Clone, Copy)]
pub(super) struct FirstPause {
    pub pause_us: u64,
    pub put_state_us: Option<u64>,
    pub get_state_us: Option<u64>,
}

impl Worker {
    /// YES at the first TERM: count the vote (the last one of a pure
    /// replacement decides), keep the candidate, and serve on.
    pub(super) fn vote_early(&mut self, txn: Arc<Txn>, new: Box<Implementation>, q: &Quiesced) {
        if txn.vote_yes() && txn.auto_commit {
            let d = if Instant::now() <= txn.deadline {
                Decision::Commit
            } else {
                Decision::Abort
            };
            txn.decide(d);
        }
        let (put_state_us, get_state_us) = self.state_calls(q);
        self.early = Some(Early {
            txn: txn.clone(),
            new,
            state: self.handed.take(),
            from: self.recovery.log.len(),
            base_ns: self.recovery.taken_ns,
            caught: 0,
            old_failed: false,
            first: FirstPause {
                pause_us: 0,
                put_state_us,
                get_state_us,
            },
        });
        let _ = self.switch(true);
        let pause_us = q.at.elapsed().as_micros() as u64;
        if let Some(e) = &mut self.early {
            e.first.pause_us = pause_us;
        }
        txn.report(self.vote_report(q, None));
    }

    /// The old version faulted while an early vote waits (a trap, or a
    /// call cut at its deadline): the group aborts if it has not decided
    /// yet, and the switch will not trust the log since the vote.
    pub(super) fn early_old_failed(&mut self) {
        if let Some(e) = &mut self.early {
            e.old_failed = true;
            e.txn.decide(Decision::Abort);
        }
    }

    /// The message just logged, served by the candidate too, its effects
    /// suppressed. A trap leaves the candidate dead (see `catch_up`).
    pub(super) fn mirror_last(&mut self) {
        let Some(mut e) = self.early.take() else {
            return;
        };
        let len = self.recovery.log.len();
        if !e.new.is_dead() && e.from + e.caught + 1 == len {
            self.catch_up(&mut e.new, &self.recovery.log[len - 1..]);
            e.caught += 1;
        }
        self.early = Some(e);
    }

    /// After the decision: switch on a commit, drop the candidate on an
    /// abort.
    pub(super) fn reach_switch(&mut self, e: Early) {
        let at = Instant::now();
        let txn = e.txn.clone();
        if txn.made() != Some(Decision::Commit) {
            self.env.reaper.bury(e.new);
            txn.report(Report::Done {
                module: self.shared.seat.name.to_string(),
                pause_us: Some(e.first.pause_us),
                buffered: 0,
                state_bytes: e.state.as_ref().map(Vec::len),
                put_state_us: e.first.put_state_us,
                get_state_us: e.first.get_state_us,
            });
            return;
        }
        let q = Quiesced { at, quiesce_us: 0 };
        let intact = !e.old_failed
            && self.recovery.taken_ns == e.base_ns
            && e.from + e.caught <= self.recovery.log.len()
            && self.recovery.base.is_some()
            && self.held.is_none()
            && !self.imp.is_dead();
        self.early_first = Some(e.first);
        if !intact {
            return self.switch_afresh(&txn, e.new, &q);
        }
        let since = self.recovery.log.split_off(e.from);
        let mut new = e.new;
        if !new.is_dead() {
            self.catch_up(&mut new, &since[e.caught..]);
        }
        self.handed = e.state;
        self.commit(&txn, new, &q, false, since);
    }

    /// Serve on `new` messages the old version served since the first
    /// TERM, their effects suppressed. A trap leaves `new` dead: the
    /// commit then rebuilds it from the recovery point, setting that
    /// message aside.
    fn catch_up(&self, new: &mut Implementation, served: &[Logged]) {
        new.replaying(true);
        for entry in served {
            new.script(&entry.failed);
            if let Err(f) = new.service(&entry.message) {
                let m = &entry.message;
                self.log(
                    Level::Warn,
                    format!(
                        "v{} trapped serving `{}` from {} after its vote: {f}; at the switch it is rebuilt from the state handed over",
                        new.label(),
                        m.kind,
                        m.from
                    ),
                );
                break;
            }
        }
        new.replaying(false);
    }

    /// The log no longer holds what the old version served since the
    /// first TERM (it was rebuilt, or a checkpoint was forced): hand the
    /// state over again, now, to a fresh instance of the new version.
    fn switch_afresh(&mut self, txn: &Txn, stale: Box<Implementation>, q: &Quiesced) {
        let version = stale.version().clone();
        self.env.reaper.bury(stale);
        // The vote's bound has passed: the calls run under the call
        // deadline alone.
        let no = match Implementation::instantiate(&version, &self.shared.seat) {
            Ok(fresh) => match self.hand_over(fresh) {
                Ok(fresh) => return self.commit(txn, fresh, q, false, Vec::new()),
                Err(e) => e,
            },
            Err(e) => e,
        };
        self.early_first = None;
        self.handed = None;
        self.log(
            Level::Error,
            format!(
                "transaction {} committed, but v{} could not take over here: {no}; v{} serves on",
                txn.id,
                version.label(),
                self.imp.label()
            ),
        );
        txn.report(Report::done(&self.shared.seat.name));
    }

    /// The old version's state handed to `fresh` (kept as `handed`), or
    /// why not.
    fn hand_over(&mut self, fresh: Implementation) -> Result<Box<Implementation>, String> {
        let mut fresh = Box::new(fresh);
        let limit = self.env.settings.max_state_bytes;
        let state = match self.imp.put_state(None) {
            Ok(Ok(s)) if s.len() <= limit => s,
            Ok(Ok(s)) => {
                return Err(format!(
                    "put-state returned {} bytes, over {limit}",
                    s.len()
                ));
            }
            Ok(Err(e)) => return Err(format!("put-state: {e}")),
            Err(f) => {
                let why = f.to_string();
                self.fault(f);
                self.recover(None);
                return Err(why);
            }
        };
        match fresh.get_state(&state, None) {
            Ok(Ok(())) => {
                self.handed = Some(state);
                Ok(fresh)
            }
            Ok(Err(e)) => Err(format!("get-state: {e}")),
            Err(f) => Err(f.to_string()),
        }
    }

    /// Messages `since` become the recovery log after a switch.
    pub(super) fn keep_log(&mut self, since: Vec<Logged>) {
        if since.is_empty() {
            return;
        }
        self.recovery.log_bytes = since
            .iter()
            .map(|l| message_cost(&l.message.kind, &l.message.from, &l.message.body))
            .sum();
        self.recovery.log = since;
        self.publish_log_size();
    }
}
