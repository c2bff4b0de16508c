//! An operator's upgrade (`Replace`, `Syn_Replace`, `Syn_Load`,
//! `Syn_Upgrade`) as a short driver over its phases (architecture.md §4): prepare,
//! start the new modules waiting on the decision, vote, decide, complete.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, unbounded};

use super::coordinator::{Ask, Ballot, Tally};
use super::prepare::Prepared;
use super::{AdminState, Core};
use crate::command::{GroupKind, Mode, Target};
use crate::proxy::{Control, ModuleProxy, Start};
use crate::report::{Cause, Outcome, Phase, Refusal, TransactionReport};
use crate::store::Op;
use crate::txn::{Decision, Probation, Report, Txn};

/// A prepared transaction about to vote.
pub(super) struct Voting {
    pub txn: Arc<Txn>,
    pub rx: Receiver<Report>,
    /// The running modules being replaced, with their candidates.
    pub asks: Vec<Ask>,
    /// New modules, started unregistered and waiting on the decision.
    pub fresh: Vec<ModuleProxy>,
    /// What the journal records for each new module, on commit.
    pub loads: Vec<Op>,
}

impl Core {
    /// Run one upgrade command to its end.
    pub(crate) fn transact(
        &self,
        admin: &AdminState,
        kind: GroupKind,
        targets: &[Target],
        text: &str,
        origin: &str,
    ) -> TransactionReport {
        let started = Instant::now();
        let id = self.next_txn();
        let names = targets.iter().map(|t| t.name.clone());
        let mut report = self.new_report(id, text.to_string(), origin, names, admin.mode.as_str());
        match self.prepare(kind, targets, origin) {
            Err(e) => report.reason = Some(e.to_string()),
            Ok(prepared) => {
                for (m, p) in report.modules.iter_mut().zip(&prepared) {
                    m.to = Some(p.imp.label().to_string());
                    m.same_version = p
                        .old
                        .as_ref()
                        .is_some_and(|o| o.version().digest == p.version.digest);
                }
                self.bus.record(|| Op::TxnBegin {
                    txn: id,
                    line: text.to_string(),
                    targets: prepared
                        .iter()
                        .map(|p| (p.name.clone(), p.version.digest.clone()))
                        .collect(),
                });
                report.prepare_us = started.elapsed().as_micros() as u64;
                let voting = self.start_voting(admin, id, &report.command, prepared);
                self.vote_and_complete(admin, voting, &mut report, origin);
                self.bus.record(|| Op::TxnEnd { txn: id });
            }
        }
        report.total_us = started.elapsed().as_micros() as u64;
        self.release_unused();
        self.record_transaction(&report);
        report
    }

    /// The transaction record, its probation if one is set, and every
    /// participant: replaced modules get a CanCommit, new modules a worker
    /// that waits for the decision.
    fn start_voting(
        &self,
        admin: &AdminState,
        id: u64,
        command: &str,
        prepared: Vec<Prepared>,
    ) -> Voting {
        let replacing: Vec<String> = prepared
            .iter()
            .filter(|p| p.old.is_some())
            .map(|p| p.name.clone())
            .collect();
        let auto_commit = replacing.len() == prepared.len();
        let (txn, rx) = self.new_txn(admin, id, command, replacing, auto_commit);
        let mut asks = Vec::new();
        let mut fresh = Vec::new();
        let mut loads = Vec::new();
        for p in prepared {
            if p.old.is_none() && self.bus.journal.is_some() {
                loads.push(Op::Load {
                    module: Arc::from(p.name.as_str()),
                    def: self.def_of(&p.version, &p.options),
                    failed: Vec::new(),
                });
            }
            match p.old {
                Some(proxy) => {
                    let control = Control::Vote {
                        txn: txn.clone(),
                        new: p.imp,
                    };
                    asks.push(Ask { proxy, control });
                }
                None => fresh.push(self.spawn_waiting(p, &txn)),
            }
        }
        Voting {
            txn,
            rx,
            asks,
            fresh,
            loads,
        }
    }

    /// The record of transaction `id` over the running modules
    /// `replacing` (and new ones unless `auto_commit`), with the
    /// probation the host sets, and the channel its reports come on.
    pub(super) fn new_txn(
        &self,
        admin: &AdminState,
        id: u64,
        command: &str,
        replacing: Vec<String>,
        auto_commit: bool,
    ) -> (Arc<Txn>, Receiver<Report>) {
        let (tx, rx) = unbounded();
        let deadline = Instant::now() + admin.bound;
        let mut txn = Txn::new(
            id,
            (deadline, admin.bound),
            auto_commit,
            replacing.len(),
            tx,
        );
        let probation = self.env.settings.probation();
        if !probation.0.is_zero() && !replacing.is_empty() {
            let group = Probation::new(
                id,
                command.to_string(),
                probation,
                admin.bound,
                replacing,
                self.rollbacks.clone(),
            );
            txn.probation = Some(Arc::new(group));
        }
        (Arc::new(txn), rx)
    }

    /// A new module's worker, started unregistered: it starts serving on
    /// commit and ends on abort.
    fn spawn_waiting(&self, p: Prepared, txn: &Arc<Txn>) -> ModuleProxy {
        let capacity = p.options.capacity.unwrap_or(self.mailbox_capacity);
        let (proxy, ends) = ModuleProxy::new(
            &p.name,
            (p.version.clone(), &p.imp),
            capacity,
            Arc::from(p.options.grants.as_slice()),
            self.limits_for(&p.options),
            &self.env,
        );
        let start = Start::OnDecision(txn.clone());
        proxy.spawn(p.imp, &p.options.config, self.env.clone(), ends, start);
        proxy
    }

    /// Vote, decide, and collect what every participant did.
    pub(super) fn vote_and_complete(
        &self,
        admin: &AdminState,
        v: Voting,
        report: &mut TransactionReport,
        origin: &str,
    ) {
        let total = v.asks.len();
        let mut tally = self.collect_votes(Ballot {
            txn: &v.txn,
            rx: &v.rx,
            asks: v.asks,
            sequential: admin.mode == Mode::Sequential,
            late_phase: Phase::Bound,
            bound: admin.bound,
            progress: Some(origin),
        });
        let decision = self.decide(&v.txn, (&v.fresh, v.loads), &mut tally);
        // Completion reports: every participant that heard the decision.
        let expected = total.min(tally.asked) + v.fresh.len();
        let until = Instant::now() + self.call_deadline + Duration::from_secs(1);
        tally.collect_dones(&v.rx, expected, until);
        if decision == Decision::Abort {
            for p in &v.fresh {
                p.join();
            }
        }
        tally.fill(report);
        if decision == Decision::Commit {
            report.outcome = Outcome::Committed;
        } else {
            report.outcome = Outcome::Aborted;
            report.reason = tally.no.as_ref().map(Refusal::to_string);
            report.refusal = tally.no;
        }
    }

    /// The decision. New names are registered first so that, once
    /// started, the group can reach them; on abort they are never
    /// registered, and what their `init` set up is undone.
    fn decide(
        &self,
        txn: &Txn,
        (fresh, loads): (&[ModuleProxy], Vec<Op>),
        tally: &mut Tally,
    ) -> Decision {
        let decision = if tally.no.is_none() {
            for op in loads {
                let name = match &op {
                    Op::Load { module, .. } => module.clone(),
                    _ => unreachable!("only loads"),
                };
                self.bus.record(|| op);
                self.bus.record_setup(&name);
            }
            for p in fresh {
                self.modules.register(p.clone());
            }
            txn.decide(Decision::Commit)
        } else {
            txn.decide(Decision::Abort)
        };
        if decision == Decision::Commit {
            return decision;
        }
        for p in fresh {
            self.modules.unregister(p.name());
            self.bus.forget(p.name());
        }
        for p in &tally.voters {
            if !tally.votes.contains_key(p.name()) {
                p.control(Control::Abort { txn: txn.id });
            }
        }
        if tally.no.is_none() {
            let module = tally.voters.first().map(|p| p.name()).unwrap_or("");
            tally.no = Some(Refusal::new(module, Phase::Bound, Cause::BoundPassed));
        }
        decision
    }
}
