//! An operator's upgrade (`Replace`, `Syn_Replace`, `Syn_Load`,
//! `Syn_Upgrade`) as a short driver over its phases (architecture.md §4): prepare,
//! start the new modules waiting on the decision, vote, decide, complete.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, unbounded};

use super::coordinator::{Ask, Ballot, Tally};
use super::prepare::Prepared;
use super::{AdminState, Core};
use crate::bus::{Group, ModuleSide, PartTarget};
use crate::command::{GroupKind, Mode, Target};
use crate::error::CommandError;
use crate::proxy::{Control, ModuleProxy, Start};
use crate::repo::Version;
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
    /// Run one upgrade command to its end. Targets another host of the
    /// lattice serves make it a group spanning hosts: this host
    /// coordinates, the lattice asks the others at each phase.
    pub(crate) fn transact(
        &self,
        admin: &AdminState,
        kind: GroupKind,
        targets: &[Target],
        text: &str,
        origin: &str,
    ) -> TransactionReport {
        let (local, parts) = self.split_by_host(kind, targets);
        let group = match parts.is_empty() {
            true => Ok(None),
            false => self.coordinate(admin, text, parts).map(Some),
        };
        self.transact_with(admin, kind, (targets, &local), text, origin, group)
    }

    /// Run an upgrade of the local targets `local` (of `all`), as part of
    /// `group` if it spans hosts (or refused: why it cannot start).
    pub(crate) fn transact_with(
        &self,
        admin: &AdminState,
        kind: GroupKind,
        (all, local): (&[Target], &[Target]),
        text: &str,
        origin: &str,
        group: Result<Option<Box<dyn Group>>, String>,
    ) -> TransactionReport {
        let started = Instant::now();
        let id = self.next_txn();
        let names = all.iter().map(|t| t.name.clone());
        let mut report = self.new_report(id, text.to_string(), origin, names, admin.mode.as_str());
        let prepared = group.and_then(|mut g| {
            // In a group spanning hosts, the coordinator checks the scope
            // of the whole group, once every host has prepared.
            let local = self.prepare(kind, local, origin, g.is_none());
            match g.as_mut() {
                None => local.map(|p| (p, g)).map_err(|e| e.to_string()),
                Some(gr) => {
                    let p = self.prepared_in_group(gr.as_mut(), local)?;
                    match gr.vote() {
                        Ok(()) => Ok((p, g)),
                        Err(e) => Err(self.unprepare(p, e)),
                    }
                }
            }
        });
        match prepared {
            Err(e) => report.reason = Some(e),
            Ok((prepared, mut group)) => {
                for p in &prepared {
                    if let Some(m) = report.modules.iter_mut().find(|m| m.name == p.name) {
                        m.to = Some(p.imp.label().to_string());
                        m.same_version = p
                            .old
                            .as_ref()
                            .is_some_and(|o| o.version().digest == p.version.digest);
                    }
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
                let alone = group.is_none();
                let voting = self.start_voting(admin, (id, alone), &report.command, prepared);
                self.vote_and_complete(admin, voting, &mut report, origin, &mut group);
                self.bus.record(|| Op::TxnEnd { txn: id });
            }
        }
        report.total_us = started.elapsed().as_micros() as u64;
        self.release_unused();
        self.record_transaction(&report);
        report
    }

    /// This host's part of a group spanning hosts is prepared (or not):
    /// tell the group; the coordinator checks the whole group's protocol
    /// scope with the other hosts' new versions.
    fn prepared_in_group(
        &self,
        group: &mut dyn Group,
        local: Result<Vec<Prepared>, CommandError>,
    ) -> Result<Vec<Prepared>, String> {
        let sides = local.as_ref().map(|ps| {
            ps.iter()
                .map(|p| side_of(&p.name, &p.version))
                .collect::<Vec<_>>()
        });
        let asked = group.prepared(sides.map_err(|e| e.to_string()));
        match (local, asked) {
            (Ok(p), Ok(None)) => Ok(p),
            (Ok(p), Ok(Some(theirs))) => {
                let ours: Vec<(&str, &Arc<Version>)> =
                    p.iter().map(|p| (p.name.as_str(), &p.version)).collect();
                match self.check_scope_with(&ours, &theirs) {
                    Ok(()) => Ok(p),
                    Err(e) => {
                        let why = e.to_string();
                        group.abandon(&why);
                        Err(self.unprepare(p, why))
                    }
                }
            }
            (Ok(p), Err(e)) => Err(self.unprepare(p, e)),
            (Err(e), _) => Err(e.to_string()),
        }
    }

    /// Targets served here (or to be loaded here), and those other hosts
    /// of the lattice serve, by host.
    fn split_by_host(
        &self,
        kind: GroupKind,
        targets: &[Target],
    ) -> (Vec<Target>, BTreeMap<String, Vec<Target>>) {
        let mut local = Vec::new();
        let mut parts: BTreeMap<String, Vec<Target>> = BTreeMap::new();
        for t in targets {
            let elsewhere = match kind {
                GroupKind::Load => None,
                _ if self.modules.contains(&t.name) => None,
                _ => self.bus.served_elsewhere(&t.name),
            };
            match elsewhere {
                Some(host) => parts.entry(host).or_default().push(t.clone()),
                None => local.push(t.clone()),
            }
        }
        (local, parts)
    }

    /// Start a group spanning hosts: read and check the other hosts'
    /// files here (pins and signatures as for local ones), and hand them
    /// to the lattice.
    fn coordinate(
        &self,
        admin: &AdminState,
        text: &str,
        parts: BTreeMap<String, Vec<Target>>,
    ) -> Result<Box<dyn Group>, String> {
        let remote = self.bus.remote.get().ok_or("this host is in no lattice")?;
        let mut sent = BTreeMap::new();
        for (host, targets) in parts {
            let mut files: Vec<PartTarget> = Vec::new();
            for t in targets {
                let f = self
                    .repo
                    .read_checked(&t.path, t.options.pin.as_deref())
                    .map_err(|e| CommandError::from(e).to_string())?;
                // A version travels once to each host, however many of
                // its modules take it.
                let sent = files.iter().any(|p| p.digest == f.digest());
                files.push(PartTarget {
                    name: t.name,
                    digest: f.digest().to_string(),
                    wasm: if sent { Vec::new() } else { f.bytes().to_vec() },
                });
            }
            sent.insert(host, files);
        }
        remote.coordinate(text, admin.bound, sent)
    }

    /// Undo what preparing did for a group that ends before its vote:
    /// what new modules' `init` set up. Gives back `why`.
    fn unprepare(&self, prepared: Vec<Prepared>, why: String) -> String {
        for p in prepared.iter().filter(|p| p.old.is_none()) {
            self.bus.forget(&p.name);
        }
        why
    }

    /// The transaction record, its probation if one is set, and every
    /// participant: replaced modules get a CanCommit, new modules a worker
    /// that waits for the decision. A transaction that is part of a group
    /// spanning hosts (not `alone`) never decides on its last vote.
    fn start_voting(
        &self,
        admin: &AdminState,
        (id, alone): (u64, bool),
        command: &str,
        prepared: Vec<Prepared>,
    ) -> Voting {
        let replacing: Vec<String> = prepared
            .iter()
            .filter(|p| p.old.is_some())
            .map(|p| p.name.clone())
            .collect();
        let auto_commit = alone && replacing.len() == prepared.len();
        let (txn, rx) = self.new_txn(admin, id, command, replacing, auto_commit);
        // Early votes need every target here, and a host without a state
        // directory (its journal would record the switch after messages
        // the new version replays).
        if admin.mode == Mode::Early && alone && self.bus.journal.is_none() {
            let mailboxes = prepared.iter().filter_map(|p| p.old.as_ref());
            txn.vote_early(mailboxes.map(|p| p.mailbox().clone()).collect());
        }
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
        group: &mut Option<Box<dyn Group>>,
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
        if let Some(g) = group.as_mut() {
            // A group spanning hosts: the decision is the group's.
            tally.no = g.decide(tally.no.take());
        }
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
        if let Some(g) = group {
            g.finish(report);
        }
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

/// A new version's protocol declarations, for the group's scope check.
fn side_of(name: &str, version: &Version) -> ModuleSide {
    let info = version.info();
    ModuleSide {
        name: name.to_string(),
        version: info.map(|i| i.version.clone()).unwrap_or_default(),
        speaks: info.map(|i| i.speaks.clone()).unwrap_or_default(),
        accepts: info.map(|i| i.accepts.clone()).unwrap_or_default(),
        senders: Vec::new(),
    }
}
