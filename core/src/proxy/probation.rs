//! Probation after a commit, a member's side of it: for the
//! `SetProbation` window, the recovery point of each replaced module stays
//! the one of the version it replaced — the state that version handed
//! over, and the log since. A trap, or an error rate over the threshold, in
//! any new version of the group asks the coordinator for a rollback
//! transaction ([`crate::txn::Probation::breach`]); when it comes, every
//! member rebuilds its old version from that point and votes, and all of
//! them swap back or none does. When the window ends the recovery point
//! moves to the new version (a fresh snapshot).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::recovery::{MAX_LOG, Rebuild};
use super::worker::Worker;
use crate::bindings::Level;
use crate::events::ModuleState;
use crate::repo::Version;
use crate::report::{Cause, Phase, Refusal};
use crate::txn::{Breach, Decision, Probation as Group, Report, Txn};

/// At least this many messages must be served in probation before an
/// error rate counts.
const MIN_RATE_SAMPLE: u64 = 10;

/// One module's probation after a commit.
pub(crate) struct Probation {
    pub group: Arc<Group>,
    /// The version the commit replaced: what a rollback returns to.
    pub old: Arc<Version>,
    pub until_ns: u64,
    pub served: u64,
    pub errors: u64,
}

impl Worker {
    /// Count a message served in probation (`failed`: it returned an
    /// error); an error rate over the threshold breaks probation.
    pub(super) fn served_in_probation(&mut self, failed: bool, now_ns: u64) {
        let Some(p) = &mut self.probation else { return };
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
                self.shared.seat.name,
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
    }

    /// Whether the window has passed (and no rollback of the group is
    /// queued or under way): then the recovery point moves to the new
    /// version.
    pub(super) fn probation_due(&mut self, now_ns: u64) {
        if self
            .probation
            .as_ref()
            .is_some_and(|p| now_ns >= p.until_ns && !p.group.rolling_back())
            && self.early.is_none()
        {
            self.end_probation(now_ns);
        }
    }

    /// Time left in the probation window, if on probation.
    pub(super) fn probation_left(&self) -> Option<Duration> {
        let p = self.probation.as_ref()?;
        Some(Duration::from_nanos(
            p.until_ns.saturating_sub(self.now_ns()),
        ))
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
        match p.group.breach(reason) {
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

    /// CanCommit of a rollback: prepare the old version from the recovery
    /// point, vote, and swap back on commit.
    pub(super) fn rollback(&mut self, txn: Arc<Txn>, group: u64) {
        let name = self.shared.seat.name.to_string();
        let started = Instant::now();
        let prepared = match (&self.probation, self.recovery.base.clone()) {
            (Some(p), Some(base)) if p.group.txn == group => {
                let old = p.old.clone();
                self.rebuild(&old, &base, true).map_err(|e| {
                    let why = match e {
                        Rebuild::Failed(why) => why,
                        Rebuild::SetAside => format!("a logged message trapped v{}", old.label()),
                    };
                    Refusal::new(&name, Phase::Rebuild, Cause::Rebuild(why))
                })
            }
            _ => Err(Refusal::new(
                &name,
                Phase::Rebuild,
                Cause::NotOnProbation(group),
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
        let buffered = self.queued();
        match (decision, prepared) {
            (Decision::Commit, Ok(fresh)) => {
                let newer = self.imp.label().to_string();
                self.probation = None;
                self.install(fresh);
                self.swapped(txn.id, None);
                let resumed = Instant::now();
                txn.report(Report::Done {
                    module: name,
                    pause_us: Some(resumed.duration_since(paused).as_micros() as u64),
                    buffered,
                    state_bytes: None,
                    put_state_us: None,
                    get_state_us: None,
                });
                self.describe_point();
                self.emit_state(
                    ModuleState::RolledBack,
                    Some(format!("v{newer} -> v{}", self.imp.label())),
                );
                self.serve_retry(0);
                if !self.imp.is_dead() {
                    self.announce_serving();
                }
            }
            (_, prepared) => {
                if let Ok(fresh) = prepared {
                    self.env.reaper.bury(fresh);
                }
                txn.report(Report::Done {
                    module: name,
                    pause_us: None,
                    buffered,
                    state_bytes: None,
                    put_state_us: None,
                    get_state_us: None,
                });
                self.leave_probation();
            }
        }
    }
}
