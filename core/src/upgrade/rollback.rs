//! The automatic rollback of a broken probation, as a transaction like
//! any other: queued by the member that broke it
//! ([`crate::txn::Probation::breach`]), run by one thread in turn with the
//! operator's commands through the command serializer, voted on by the
//! same coordinator. A rollback that becomes due while another transaction
//! runs waits for it; its report says which transaction it waited for.
//!
//! Every member rebuilds its old version from its recovery point and
//! votes; all swap back or none does (then the new versions serve on,
//! recovered in place).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, unbounded};

use super::Core;
use super::coordinator::{Ask, Ballot, Tally};
use crate::bindings::Level;
use crate::events::Event;
use crate::proxy::Control;
use crate::report::{Cause, Outcome, Phase, Refusal, TransactionReport};
use crate::txn::{Decision, Probation, RollbackRequest, Txn};

/// Serve rollback requests until every sender is gone (the runtime and
/// every probation record). Holds the runtime weakly: a rollback queued as
/// the host shuts down is dropped.
pub(crate) fn serve(core: Weak<Core>, requests: Receiver<RollbackRequest>) {
    for request in requests {
        let Some(core) = core.upgrade() else { return };
        core.roll_back(request);
    }
}

impl Core {
    /// Run the rollback in turn: after whatever command runs now, and any
    /// that took the serializer first.
    fn roll_back(&self, request: RollbackRequest) {
        let text = format!("Rollback {}", request.group.txn);
        let _ = self.serialized(&text, "probation", false, |_admin| {
            let mut report = self.rollback_transaction(&request);
            report.waited_for = self.ended_since(request.due);
            self.record_transaction(&report);
            Ok::<_, crate::error::CommandError>(report)
        });
    }

    /// The commands that ended since `due`: they held the serializer while
    /// a rollback due then waited.
    fn ended_since(&self, due: std::time::SystemTime) -> Option<String> {
        let history = self.history.lock().expect("history poisoned");
        let waited: Vec<String> = history
            .commands
            .iter()
            .filter(|c| c.at >= due)
            .map(|c| format!("`{}` ({})", c.line, c.origin))
            .collect();
        (!waited.is_empty()).then(|| waited.join(", "))
    }

    /// The rollback of `request.group` as one transaction.
    fn rollback_transaction(&self, request: &RollbackRequest) -> TransactionReport {
        let group = &request.group;
        let started = Instant::now();
        let id = self.next_txn();
        self.bus.events.emit(Event::Log {
            module: "$host".into(),
            version: String::new(),
            level: Level::Warn,
            line: format!(
                "probation of transaction {} broken: {}; rolling the group back (transaction {id})",
                group.txn, request.reason
            ),
        });
        let command = format!("Rollback of transaction {}: {}", group.txn, group.command);
        let names = group.members.iter().cloned();
        let mut report = self.new_report(id, command, "probation", names, "concurrent");
        let (tx, rx) = unbounded();
        let n = group.members.len();
        let txn = Arc::new(Txn::new(
            id,
            (started + group.bound, group.bound),
            false,
            n,
            tx,
        ));
        let (asks, missing) = self.rollback_asks(&txn, &request.group);
        let mut tally = self.collect_votes(Ballot {
            txn: &txn,
            rx: &rx,
            asks,
            sequential: false,
            late_phase: Phase::Rebuild,
            bound: group.bound,
            progress: None,
        });
        if tally.no.is_none() {
            tally.no = missing;
        }
        report.prepare_us = started.elapsed().as_micros() as u64;
        let committed = tally.no.is_none();
        let decision = txn.decide(if committed {
            Decision::Commit
        } else {
            Decision::Abort
        });
        let asked = tally.asked;
        tally.collect_dones(&rx, asked, Instant::now() + Duration::from_secs(10));
        group.end();
        self.fill_rollback(&mut report, &tally, decision, &request.reason);
        report.total_us = started.elapsed().as_micros() as u64;
        report
    }

    /// Every member's CanCommit of the rollback, and the NO of a member
    /// that is not loaded any more.
    fn rollback_asks(&self, txn: &Arc<Txn>, group: &Probation) -> (Vec<Ask>, Option<Refusal>) {
        let mut asks = Vec::new();
        let mut missing = None;
        for name in &group.members {
            match self.modules.get(name) {
                Some(proxy) => {
                    let control = Control::Rollback {
                        txn: txn.clone(),
                        group: group.txn,
                    };
                    asks.push(Ask { proxy, control });
                }
                None => missing = Some(Refusal::new(name, Phase::Join, Cause::Stopped)),
            }
        }
        (asks, missing)
    }

    /// The rollback's report: what each member runs now, and the outcome.
    fn fill_rollback(
        &self,
        report: &mut TransactionReport,
        tally: &Tally,
        decision: Decision,
        reason: &str,
    ) {
        tally.fill(report);
        for m in report.modules.iter_mut() {
            m.quiesce_us = None;
            m.state_bytes = None;
            if let Some(p) = self.modules.get(&m.name) {
                m.to = Some(p.version().label().to_string());
            }
        }
        if decision == Decision::Commit {
            report.outcome = Outcome::RolledBack;
            report.reason = Some(reason.to_string());
        } else {
            let why = tally
                .no
                .as_ref()
                .map(Refusal::to_string)
                .unwrap_or_else(|| "the bound passed".into());
            report.outcome = Outcome::Aborted;
            report.reason = Some(format!(
                "{}; the rollback failed: {why}; the new versions serve on, recovered in place",
                reason
            ));
            report.refusal = tally.no.clone();
        }
    }
}
