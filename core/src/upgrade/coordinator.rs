//! The one coordinator of two-phase commit, for every transaction: the
//! operator's upgrades (`Replace`, `Syn_*`) and the automatic rollbacks
//! of a broken probation alike. One vote loop ([`Core::collect_votes`]),
//! one collection of completions, one report filler, one history write
//! ([`Core::record_transaction`]).
//!
//! Every transaction runs inside the command serializer
//! ([`Core::serialized`]): one at a time, so none sees another's half-done
//! changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::Core;
use crate::events::ModuleState;
use crate::proxy::{Control, ModuleProxy};
use crate::report::{Cause, ModuleReport, Outcome, Phase, Refusal, TransactionReport};
use crate::txn::{Report, Txn};

/// What a participant reported when it acted on the decision.
pub(super) struct Done {
    pub pause_us: Option<u64>,
    pub buffered: usize,
    pub state_bytes: Option<usize>,
    pub put_state_us: Option<u64>,
    pub get_state_us: Option<u64>,
}

/// One participant: its proxy and the CanCommit it is sent.
pub(super) struct Ask {
    pub proxy: ModuleProxy,
    pub control: Control,
}

/// How a vote is run.
pub(super) struct Ballot<'a> {
    pub txn: &'a Arc<Txn>,
    pub rx: &'a Receiver<Report>,
    pub asks: Vec<Ask>,
    /// One participant at a time, each after the previous vote.
    pub sequential: bool,
    /// How a missed bound is worded: `Bound` (quiescence) or `Rebuild`.
    pub late_phase: Phase,
    /// The bound, for the wording.
    pub bound: Duration,
    /// Whose command it is, for progress lines (none: no progress).
    pub progress: Option<&'a str>,
}

/// What a vote gathered.
pub(super) struct Tally {
    /// Participant → time to quiescence, for every vote received.
    pub votes: HashMap<String, Option<u64>>,
    /// Participant → what it reported when it acted on the decision.
    pub dones: HashMap<String, Done>,
    /// The first NO, if any.
    pub no: Option<Refusal>,
    /// The participants, in order.
    pub voters: Vec<ModuleProxy>,
    /// How many of them were asked (fewer in sequential mode after a NO).
    pub asked: usize,
}

impl Tally {
    /// Record a participant's report; a NO vote's refusal is returned.
    fn take(&mut self, r: Report) -> Option<Refusal> {
        match r {
            Report::Vote {
                module,
                quiesce_us,
                no,
            } => {
                self.votes.insert(module, quiesce_us);
                no
            }
            Report::Done {
                module,
                pause_us,
                buffered,
                state_bytes,
                put_state_us,
                get_state_us,
            } => {
                let done = Done {
                    pause_us,
                    buffered,
                    state_bytes,
                    put_state_us,
                    get_state_us,
                };
                self.dones.insert(module, done);
                None
            }
        }
    }

    /// The participants that have not voted, described with `describe`.
    fn late(&self, describe: impl Fn(&ModuleProxy) -> String) -> Vec<String> {
        self.voters
            .iter()
            .filter(|p| !self.votes.contains_key(p.name()))
            .map(describe)
            .collect()
    }

    /// After the decision: wait until `expected` participants reported
    /// Done, or `until`.
    pub(super) fn collect_dones(&mut self, rx: &Receiver<Report>, expected: usize, until: Instant) {
        while self.dones.len() < expected {
            match rx.recv_deadline(until) {
                Ok(r) => {
                    self.take(r);
                }
                Err(_) => break,
            }
        }
    }

    /// Copy what the participants reported into the report's rows.
    pub(super) fn fill(&self, report: &mut TransactionReport) {
        for m in report.modules.iter_mut() {
            if let Some(q) = self.votes.get(&m.name) {
                m.quiesce_us = *q;
            }
            if let Some(d) = self.dones.get(&m.name) {
                m.pause_us = d.pause_us;
                m.buffered = d.buffered;
                m.state_bytes = d.state_bytes;
                m.put_state_us = d.put_state_us;
                m.get_state_us = d.get_state_us;
            }
        }
    }
}

impl Core {
    /// A report of a transaction over `names` that has not run yet.
    pub(super) fn new_report(
        &self,
        id: u64,
        command: String,
        origin: &str,
        names: impl Iterator<Item = String>,
        mode: &str,
    ) -> TransactionReport {
        TransactionReport {
            id,
            command,
            origin: origin.to_string(),
            outcome: Outcome::Refused,
            reason: None,
            refusal: None,
            waited_for: None,
            modules: names
                .map(|name| ModuleReport {
                    from: self
                        .modules
                        .get(&name)
                        .map(|p| p.version().label().to_string()),
                    name,
                    ..Default::default()
                })
                .collect(),
            prepare_us: 0,
            total_us: 0,
            mode: mode.to_string(),
        }
    }

    /// CanCommit and the votes: the one vote loop. Asks every participant
    /// at once (or one after the other), and waits for every vote, the
    /// first NO, or the deadline. Does not decide.
    pub(super) fn collect_votes(&self, ballot: Ballot<'_>) -> Tally {
        let Ballot {
            txn,
            rx,
            asks,
            sequential,
            late_phase,
            bound,
            progress,
        } = ballot;
        let mut tally = Tally {
            votes: HashMap::new(),
            dones: HashMap::new(),
            no: None,
            voters: asks.iter().map(|a| a.proxy.clone()).collect(),
            asked: 0,
        };
        let total = asks.len();
        let mut pending = asks.into_iter();
        let mut ask = |n: usize, tally: &mut Tally| {
            for a in pending.by_ref().take(n) {
                let name = a.proxy.name().to_string();
                if a.proxy.control(a.control) {
                    tally.asked += 1;
                } else if tally.no.is_none() {
                    tally.no = Some(Refusal::new(&name, Phase::Join, Cause::Stopped));
                }
            }
        };
        ask(if sequential { 1 } else { total }, &mut tally);
        if let Some(origin) = progress
            && total > 0
        {
            let names: Vec<&str> = tally.voters.iter().map(|p| p.name()).collect();
            let text = format!(
                "voting: waiting for {} to reach quiescence (bound {bound:?})",
                names.join(", ")
            );
            self.progress(origin, text);
        }
        let mut next_note = Instant::now() + Duration::from_secs(1);
        while tally.votes.len() < tally.asked && tally.no.is_none() {
            let wake = if progress.is_some() {
                txn.deadline.min(next_note)
            } else {
                txn.deadline
            };
            match rx.recv_deadline(wake) {
                Ok(r) => {
                    let is_vote = matches!(r, Report::Vote { .. });
                    if let Some(no) = tally.take(r) {
                        tally.no = Some(no);
                    } else if is_vote && tally.asked < total && tally.votes.len() == tally.asked {
                        ask(1, &mut tally);
                    }
                }
                Err(RecvTimeoutError::Timeout) if Instant::now() < txn.deadline => {
                    next_note += Duration::from_secs(1);
                    let late = tally.late(|p| format!("{} ({} queued)", p.name(), p.depth()));
                    if let Some(origin) = progress {
                        self.progress(
                            origin,
                            format!("voting: still waiting for {}", late.join(", ")),
                        );
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    tally.no = Some(self.missed_bound(&tally, total, late_phase, bound));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let first = tally.late(|p| p.name().to_string());
                    let module = first.first().map(String::as_str).unwrap_or("");
                    tally.no = Some(Refusal::new(module, Phase::Bound, Cause::Gone));
                }
            }
        }
        tally
    }

    /// The NO of a vote whose bound passed, naming every late participant.
    fn missed_bound(&self, tally: &Tally, total: usize, phase: Phase, bound: Duration) -> Refusal {
        let late = tally.late(|p| {
            if phase == Phase::Rebuild {
                p.name().to_string()
            } else if tally.asked < total && p.state() == ModuleState::Serving {
                format!("{} (not yet asked)", p.name())
            } else {
                format!("{} ({} message(s) still queued)", p.name(), p.depth())
            }
        });
        let first = tally.late(|p| p.name().to_string());
        let module = first.first().cloned().unwrap_or_default();
        Refusal::new(&module, phase, Cause::Late { late, bound })
    }

    /// Record a finished transaction in the history and announce it: the
    /// one place that does.
    pub(super) fn record_transaction(&self, r: &TransactionReport) {
        self.history
            .lock()
            .expect("history poisoned")
            .transactions
            .push(r.clone());
        self.bus
            .events
            .emit(crate::events::Event::Transaction(Box::new(r.clone())));
    }
}
