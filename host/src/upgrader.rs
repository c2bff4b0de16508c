//! The software upgrader: validates an upgrade command, prepares every new
//! version before anything pauses, runs two-phase commit over the targets
//! (each module thread is the slave of its own target), and reports.
//!
//! Phases (DESIGN §3): validate → prepare → vote (CanCommit) → commit or
//! abort. A refusal in validation or preparation touches nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, unbounded};

use crate::command::{Grant, GroupKind, LoadOptions, Mode, Target};
use crate::error::CommandError;
use crate::events::{Event, ModuleState};
use crate::implementation::Implementation;
use crate::proxy::{Control, Group, ModuleProxy, Start};
use crate::report::{ModuleReport, Outcome, TransactionReport};
use crate::repository::Version;
use crate::runtime::{AdminState, Runtime};
use crate::scope::{self, Side};
use crate::txn::{Decision, Report, Txn};

/// A target after preparation.
struct Prepared {
    name: String,
    /// Options of a module being loaded.
    options: LoadOptions,
    /// The running proxy, for a replacement; none for a load.
    old: Option<ModuleProxy>,
    version: Arc<Version>,
    imp: Box<Implementation>,
}

/// What a participant reported when it acted on the decision.
pub(crate) struct Done {
    pub pause_us: Option<u64>,
    pub buffered: usize,
    pub state_bytes: Option<usize>,
}

/// Record a participant's report; a NO vote's reason is returned.
pub(crate) fn tally(
    votes: &mut HashMap<String, Option<u64>>,
    dones: &mut HashMap<String, Done>,
    r: Report,
) -> Option<String> {
    match r {
        Report::Vote {
            module,
            quiesce_us,
            no,
        } => {
            votes.insert(module, quiesce_us);
            no
        }
        Report::Done {
            module,
            pause_us,
            buffered,
            state_bytes,
        } => {
            dones.insert(
                module,
                Done {
                    pause_us,
                    buffered,
                    state_bytes,
                },
            );
            None
        }
    }
}

/// After the decision: wait until `expected` participants reported Done,
/// or `until`.
pub(crate) fn collect_dones(
    rx: &crossbeam_channel::Receiver<Report>,
    votes: &mut HashMap<String, Option<u64>>,
    dones: &mut HashMap<String, Done>,
    expected: usize,
    until: Instant,
) {
    while dones.len() < expected {
        match rx.recv_deadline(until) {
            Ok(r) => {
                tally(votes, dones, r);
            }
            Err(_) => break,
        }
    }
}

/// A version's protocol declarations, for the scope check.
fn side(info: &crate::bindings::ModuleInfo) -> Side {
    Side {
        version: info.version.clone(),
        speaks: info.speaks.clone(),
        accepts: info.accepts.clone(),
    }
}

impl Runtime {
    pub(crate) fn progress(&self, origin: &str, text: String) {
        self.services.events.emit(Event::Progress {
            origin: origin.to_string(),
            text,
        });
    }

    /// Run one upgrade command to its end.
    pub(crate) fn transact(
        &self,
        admin: &mut AdminState,
        kind: GroupKind,
        targets: &[Target],
        text: &str,
        origin: &str,
    ) -> TransactionReport {
        let started = Instant::now();
        let id = self.services.next_txn();
        let mut report = TransactionReport {
            id,
            command: text.to_string(),
            origin: origin.to_string(),
            outcome: Outcome::Refused,
            reason: None,
            modules: targets
                .iter()
                .map(|t| ModuleReport {
                    name: t.name.clone(),
                    from: self
                        .services
                        .names
                        .resolve(&t.name)
                        .map(|p| p.version().label().to_string()),
                    ..Default::default()
                })
                .collect(),
            prepare_us: 0,
            total_us: 0,
            mode: admin.mode.as_str().to_string(),
        };

        let files: Vec<String> = targets
            .iter()
            .map(|t| t.path.display().to_string())
            .collect();
        self.progress(
            origin,
            format!(
                "preparing: reading, compiling and instantiating {}",
                files.join(", ")
            ),
        );
        match self.prepare(kind, targets) {
            Err(e) => {
                report.reason = Some(e.to_string());
            }
            Ok(prepared) => {
                for (m, p) in report.modules.iter_mut().zip(&prepared) {
                    m.to = Some(p.imp.label().to_string());
                }
                report.prepare_us = started.elapsed().as_micros() as u64;
                self.vote_and_complete(admin, id, prepared, &mut report, origin);
            }
        }
        report.total_us = started.elapsed().as_micros() as u64;
        self.release_unused();
        self.services.record_transaction(&report);
        report
    }

    /// Validate and prepare: every check that can refuse, and every slow
    /// step (reading, compiling, instantiating, `init` of new modules),
    /// before any module is disturbed.
    fn prepare(&self, kind: GroupKind, targets: &[Target]) -> Result<Vec<Prepared>, CommandError> {
        let keyword = kind.keyword(targets.len());
        let mut seen = BTreeSet::new();
        let mut olds = Vec::new();
        for t in targets {
            if !seen.insert(t.name.clone()) {
                return Err(CommandError::DuplicateTarget(t.name.clone()));
            }
            let old = self.services.names.resolve(&t.name);
            match (kind, &old) {
                (GroupKind::Replace, None) => {
                    return Err(CommandError::Parse(format!(
                        "{keyword}: no module named `{}` is loaded (use Load, or Syn_Upgrade to load and replace together)",
                        t.name
                    )));
                }
                (GroupKind::Load, Some(_)) => {
                    return Err(CommandError::AlreadyLoaded(t.name.clone()));
                }
                _ => {}
            }
            let kept = LoadOptions {
                pin: None,
                ..t.options.clone()
            };
            if old.is_some() && !kept.is_empty() {
                return Err(CommandError::Parse(format!(
                    "{keyword}: `{}` is loaded: its config, capacity and grants are kept by an upgrade (only `pin` applies; Unload and Load to change them)",
                    t.name
                )));
            }
            if let Some(p) = &old {
                let state = p.state();
                if state != ModuleState::Serving {
                    return Err(CommandError::BadState {
                        name: t.name.clone(),
                        state: state.to_string(),
                        hint: match state {
                            ModuleState::Disabled => "Enable it before upgrading it".into(),
                            _ => "only a serving module can be upgraded".into(),
                        },
                    });
                }
            }
            olds.push(old);
        }

        // Read every file and check its pin and signature before compiling
        // any, so that one bad file refuses the group with nothing compiled.
        let mut files = Vec::new();
        for t in targets {
            files.push(self.repo.read_checked(&t.path, t.options.pin.as_deref())?);
        }
        // Compile (or find) every version first: the slow part.
        let mut versions = Vec::new();
        for f in files {
            versions.push(self.repo.version_of(f)?);
        }

        // Instantiate and make the first call (`info`) now, so the pause
        // never pays for it.
        let mut prepared = Vec::new();
        for ((t, old), version) in targets.iter().zip(olds).zip(versions) {
            let (grants, limits): (Arc<[Grant]>, _) = match &old {
                Some(p) => (p.grants(), p.limits().clone()),
                None => (
                    Arc::from(t.options.grants.as_slice()),
                    self.limits_for(&t.options),
                ),
            };
            let imp = self.instantiate(&version, &t.name, &grants, &limits)?;
            prepared.push(Prepared {
                name: t.name.clone(),
                options: t.options.clone(),
                old,
                version,
                imp: Box::new(imp),
            });
        }

        self.check_scope(&prepared)?;

        // New modules: `init` now; a failure refuses the whole group.
        for i in 0..prepared.len() {
            if prepared[i].old.is_none() {
                let name = prepared[i].name.clone();
                let config = prepared[i].options.config.clone();
                if let Err(e) = self.init(&mut prepared[i].imp, &name, &config) {
                    for p in &prepared[..i] {
                        if p.old.is_none() {
                            self.services.timers.cancel_all(&p.name);
                            self.services.pubsub.forget(&p.name);
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(prepared)
    }

    /// The protocol-edge check of DESIGN §5 over the system as it would be.
    fn check_scope(&self, prepared: &[Prepared]) -> Result<(), CommandError> {
        let mut after: BTreeMap<String, Side> = BTreeMap::new();
        let mut edges: BTreeSet<(String, String)> = BTreeSet::new();
        for p in self.services.names.all() {
            if let Some(info) = p.version().info() {
                after.insert(p.name().to_string(), side(info));
            }
            for s in p.senders() {
                edges.insert((s, p.name().to_string()));
            }
        }
        for e in self.services.pubsub.edges() {
            edges.insert(e);
        }
        let mut targets = BTreeSet::new();
        for p in prepared {
            if let Some(info) = p.version.info() {
                after.insert(p.name.clone(), side(info));
            }
            targets.insert(p.name.clone());
        }
        scope::check(&after, &edges, &targets).map_err(CommandError::Scope)
    }

    /// Two-phase commit over the prepared targets.
    fn vote_and_complete(
        &self,
        admin: &AdminState,
        id: u64,
        prepared: Vec<Prepared>,
        report: &mut TransactionReport,
        origin: &str,
    ) {
        let (tx, rx) = unbounded();
        let replacing = prepared.iter().filter(|p| p.old.is_some()).count();
        let auto_commit = replacing == prepared.len();
        let mut txn = Txn::new(id, Instant::now() + admin.bound, auto_commit, replacing, tx);
        let probation = self.services.settings.probation();
        if !probation.0.is_zero() && replacing > 0 {
            txn.probation = Some(Arc::new(Group::new(
                id,
                report.command.clone(),
                probation,
                admin.bound,
                prepared.iter().filter_map(|p| p.old.clone()).collect(),
                self.services.clone(),
            )));
        }
        let txn = Arc::new(txn);

        // New modules wait on the decision, unregistered.
        let mut fresh: Vec<ModuleProxy> = Vec::new();
        let mut voters: Vec<(String, ModuleProxy, Box<Implementation>)> = Vec::new();
        for p in prepared {
            match p.old {
                Some(old) => voters.push((p.name, old, p.imp)),
                None => {
                    let (proxy, data_rx, ctl_rx) = ModuleProxy::new(
                        Arc::from(p.name.as_str()),
                        p.version.clone(),
                        p.options.capacity.unwrap_or(self.services.mailbox_capacity),
                        Arc::from(p.options.grants.as_slice()),
                        self.limits_for(&p.options),
                    );
                    proxy.spawn(
                        p.imp,
                        &p.options.config,
                        self.services.clone(),
                        data_rx,
                        ctl_rx,
                        Start::OnDecision(txn.clone()),
                    );
                    fresh.push(proxy);
                }
            }
        }

        // CanCommit: concurrently (all at once) or one after the other.
        let mut votes: HashMap<String, Option<u64>> = HashMap::new();
        let mut dones: HashMap<String, Done> = HashMap::new();
        let mut no: Option<String> = None;
        let total = voters.len();
        let voter_proxies: Vec<ModuleProxy> = voters.iter().map(|v| v.1.clone()).collect();
        let mut pending_sends = voters.into_iter();
        let sequential = admin.mode == Mode::Sequential;
        let asked_first = if sequential { 1.min(total) } else { total };
        let mut ask = |n: usize| {
            for (_, proxy, imp) in pending_sends.by_ref().take(n) {
                proxy.control(Control::Vote {
                    txn: txn.clone(),
                    new: imp,
                });
            }
        };
        ask(asked_first);
        let mut asked = asked_first;
        if total > 0 {
            let names: Vec<&str> = voter_proxies.iter().map(|p| p.name()).collect();
            self.progress(
                origin,
                format!(
                    "voting: waiting for {} to reach quiescence (bound {:?})",
                    names.join(", "),
                    admin.bound
                ),
            );
        }
        let mut next_note = Instant::now() + Duration::from_secs(1);
        while votes.len() < total && no.is_none() {
            let wake = txn.deadline.min(next_note);
            let got = rx.recv_deadline(wake);
            if matches!(got, Err(RecvTimeoutError::Timeout)) && Instant::now() < txn.deadline {
                next_note += Duration::from_secs(1);
                let late: Vec<String> = voter_proxies
                    .iter()
                    .filter(|p| !votes.contains_key(p.name()))
                    .map(|p| format!("{} ({} queued)", p.name(), p.depth()))
                    .collect();
                self.progress(
                    origin,
                    format!("voting: still waiting for {}", late.join(", ")),
                );
                continue;
            }
            match got {
                Ok(r) => {
                    let is_vote = matches!(r, Report::Vote { .. });
                    if let Some(refusal) = tally(&mut votes, &mut dones, r) {
                        no = Some(refusal);
                    } else if is_vote && sequential && asked < total && votes.len() == asked {
                        ask(1);
                        asked += 1;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let late: Vec<String> = voter_proxies
                        .iter()
                        .filter(|p| !votes.contains_key(p.name()))
                        .map(|p| {
                            if asked < total
                                && !votes.contains_key(p.name())
                                && p.state() == ModuleState::Serving
                            {
                                format!("{} (not yet asked)", p.name())
                            } else {
                                format!("{} ({} message(s) still queued)", p.name(), p.depth())
                            }
                        })
                        .collect();
                    no = Some(format!(
                        "{} did not reach quiescence within the bound of {:?}",
                        late.join(", "),
                        admin.bound
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    no = Some("a module thread went away during the vote".into());
                }
            }
        }

        // The decision. Register new names first so that, once started,
        // the group can reach them.
        let decision = if no.is_none() {
            for p in &fresh {
                self.services.names.register(p.clone());
            }
            txn.decide(Decision::Commit)
        } else {
            txn.decide(Decision::Abort)
        };
        if decision == Decision::Abort {
            // New modules were never registered; undo what their `init` set up.
            for p in &fresh {
                self.services.timers.cancel_all(p.name());
                self.services.pubsub.forget(p.name());
            }
            for p in &voter_proxies {
                if !votes.contains_key(p.name()) {
                    p.control(Control::Abort { txn: id });
                }
            }
            if no.is_none() {
                no = Some("the bound passed as the last vote came in".into());
            }
        }

        // Completion reports: every participant that heard the decision.
        let expected = total.min(asked) + fresh.len();
        collect_dones(
            &rx,
            &mut votes,
            &mut dones,
            expected,
            Instant::now() + self.call_deadline + Duration::from_secs(1),
        );
        for p in &fresh {
            if decision == Decision::Abort {
                p.join();
            }
        }

        for m in report.modules.iter_mut() {
            if let Some(q) = votes.get(&m.name) {
                m.quiesce_us = *q;
            }
            if let Some(d) = dones.get(&m.name) {
                m.pause_us = d.pause_us;
                m.buffered = d.buffered;
                m.state_bytes = d.state_bytes;
            }
        }
        report.outcome = if decision == Decision::Commit {
            Outcome::Committed
        } else {
            Outcome::Aborted
        };
        report.reason = if decision == Decision::Commit {
            None
        } else {
            no
        };
    }
}
