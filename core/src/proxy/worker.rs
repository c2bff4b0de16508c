//! The worker: the one thread that owns a module's current
//! implementation. It serves the control channel first, then the mailbox;
//! a guest trap becomes a `faulted` event and a recovery (or a rollback in
//! probation), never a host panic.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError, select};

use super::probation::Probation;
use super::recovery::{Base, Recovery, Retry};
use super::vote::PendingVote;
use super::{Control, Ends, Env, Shared, Start};
use crate::bindings::{Level, Message};
use crate::bus::Item;
use crate::events::{Event, ModuleState};
use crate::guest::Failures;
use crate::instance::{GuestFault, Implementation};
use crate::report::{Cause, Phase, Refusal};
use crate::txn::{Decision, Report};

pub(super) struct Worker {
    pub(super) shared: Arc<Shared>,
    pub(super) env: Env,
    pub(super) imp: Box<Implementation>,
    pub(super) data_rx: Receiver<Item>,
    ctl_rx: Receiver<Control>,
    /// Enabled: the mailbox is served.
    pub(super) serving: bool,
    pub(super) vote: Option<PendingVote>,
    /// Aborted transactions whose TERM is still in the mailbox.
    pub(super) skip: Vec<u64>,
    /// The state the old version put in the last vote, until the
    /// decision: the new version's recovery point on commit, and its size
    /// goes into the report either way.
    pub(super) handed: Option<Vec<u8>>,
    /// When the last vote's `put-state` and `get-state` returned (the
    /// pause began at TERM): where the pause went, for the report.
    pub(super) handed_at: [Option<Instant>; 2],
    /// An early vote cast, waiting for the decision's TERM.
    pub(super) early: Option<super::early::Early>,
    /// At a switch after an early vote: its first pause, for the report.
    pub(super) early_first: Option<super::early::FirstPause>,
    /// What the module is rebuilt from after a trap.
    pub(super) recovery: Recovery,
    /// After a commit: what a rollback would return to.
    pub(super) probation: Option<Probation>,
    /// A message the instance trapped on during probation, with the count
    /// of effects it made, to be served again once the group rolled back
    /// (or, after a crash loop, by the version that replaces this one).
    pub(super) retry: Option<Retry>,
    /// Why the module is held after a crash loop: it serves nothing until
    /// a new version commits (its instance, rebuilt, can still hand its
    /// state over).
    pub(super) held: Option<String>,
    /// `service` calls completed (with a state directory, the number the
    /// journal knows the module's calls by).
    pub(super) seq: u64,
    /// Messages (and TERMs) taken out of the mailbox and set back, in
    /// order, ahead of it: the rest of a batch whose guest trapped.
    pub(super) pending: VecDeque<Item>,
    /// The batch being served, and its packed form (kept for their
    /// capacity).
    pub(super) batch: Vec<(Message, u64)>,
    pub(super) packed: Vec<u8>,
    /// Set while the messages of a batch are logged, but for the last:
    /// no snapshot may be taken (the instance is past them all).
    pub(super) no_checkpoint: bool,
    /// Messages arrive close together (one had others queued behind it,
    /// or came soon after the worker slept): after emptying the mailbox it
    /// lingers rather than sleeps.
    streaming: bool,
    /// A new version running beside this one, if `Shadow` started one.
    pub(super) shadow: Option<super::shadow::Link>,
}

/// How long a worker that just emptied its mailbox waits awake for more
/// before it sleeps.
const LINGER: Duration = Duration::from_micros(50);

enum Step {
    Ctl(Control),
    Data(Item),
    /// Nothing came before the probation window ended.
    Idle,
    Exit,
}

impl Worker {
    pub(super) fn new(
        shared: Arc<Shared>,
        env: Env,
        mut imp: Box<Implementation>,
        config: &[u8],
        ends: Ends,
    ) -> Self {
        Worker {
            recovery: Recovery::new(Base::Init(Arc::from(config), Arc::new(imp.take_failures()))),
            probation: None,
            retry: None,
            held: None,
            handed: None,
            handed_at: [None; 2],
            early: None,
            early_first: None,
            shared,
            env,
            imp,
            data_rx: ends.data_rx,
            ctl_rx: ends.ctl_rx,
            serving: false,
            vote: None,
            skip: Vec::new(),
            seq: 0,
            pending: VecDeque::new(),
            batch: Vec::new(),
            packed: Vec::new(),
            no_checkpoint: false,
            streaming: false,
            shadow: None,
        }
    }

    pub(super) fn run(mut self, start: Start) {
        self.describe_point();
        match start {
            Start::Now(started) => {
                let _ = started.send(self.switch(true));
            }
            Start::Restore(r) => self.restore(*r),
            Start::Moved(state) => self.arrive(state),
            Start::OnDecision(txn) => {
                let decision = txn.wait();
                let committed = decision == Decision::Commit;
                if committed {
                    self.start();
                }
                txn.report(Report::done(&self.shared.seat.name));
                if !committed {
                    return;
                }
            }
        }
        loop {
            let step = self.next_step();
            match step {
                Step::Ctl(c) => {
                    if !self.control(c) {
                        return;
                    }
                }
                Step::Data(item) => self.item(item),
                Step::Idle => {
                    let now = self.now_ns();
                    self.probation_due(now);
                }
                Step::Exit => return,
            }
        }
    }

    /// What to do next: control first, then (while serving) what was set
    /// back, then the mailbox; waiting for either when both are empty.
    fn next_step(&mut self) -> Step {
        loop {
            match self.ctl_rx.try_recv() {
                Ok(c) => return Step::Ctl(c),
                Err(TryRecvError::Disconnected) => return Step::Exit,
                Err(TryRecvError::Empty) if !self.draining() => {
                    return self.ctl_rx.recv().map(Step::Ctl).unwrap_or(Step::Exit);
                }
                Err(TryRecvError::Empty) => {}
            }
            if let Some(item) = self.pending.pop_front() {
                return Step::Data(item);
            }
            match self.data_rx.try_recv() {
                Ok(item) => {
                    // Others queued behind it: messages are streaming in.
                    if !self.data_rx.is_empty() {
                        self.streaming = true;
                    }
                    return Step::Data(item);
                }
                Err(TryRecvError::Disconnected) => return Step::Exit,
                Err(TryRecvError::Empty) => {}
            }
            // Just emptied a mailbox that messages stream into: more is
            // likely on its way, and waiting for it awake a little costs
            // less than being woken for it (a system call for the sender,
            // a context switch here). A module fed now and then sleeps at
            // once, leaving the cores to others.
            if self.streaming {
                if self.linger() {
                    continue;
                }
                self.streaming = false;
            }
            let slept = Instant::now();
            let step = match self.probation_left() {
                None => select! {
                    recv(self.ctl_rx) -> c => c.map(Step::Ctl).unwrap_or(Step::Exit),
                    recv(self.data_rx) -> d => d.map(Step::Data).unwrap_or(Step::Exit),
                },
                Some(left) => select! {
                    recv(self.ctl_rx) -> c => c.map(Step::Ctl).unwrap_or(Step::Exit),
                    recv(self.data_rx) -> d => d.map(Step::Data).unwrap_or(Step::Exit),
                    default(left) => Step::Idle,
                },
            };
            // Woken soon after it slept: messages are streaming in.
            if matches!(step, Step::Data(_)) && slept.elapsed() < 4 * LINGER {
                self.streaming = true;
            }
            return step;
        }
    }

    /// Wait up to [`LINGER`] without sleeping (yielding the core) for a
    /// message or a control; whether one came.
    fn linger(&self) -> bool {
        let until = Instant::now() + LINGER;
        loop {
            if !self.data_rx.is_empty() || !self.ctl_rx.is_empty() {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::yield_now();
        }
    }

    /// Nanoseconds since the proxy was made: the clock of recovery points
    /// and probation windows.
    pub(super) fn now_ns(&self) -> u64 {
        self.shared.origin.elapsed().as_nanos() as u64
    }

    /// Whether the mailbox is being served: enabled, or quiescing for a
    /// vote, and alive.
    fn draining(&self) -> bool {
        !self.imp.is_dead() && self.held.is_none() && (self.serving || self.vote.is_some())
    }

    fn start(&mut self) {
        let _ = self.switch(true);
    }

    /// Run the guest's `enable` (or `disable`), then serve (or hold) the
    /// mailbox and its timer ticks. A trap faults the module.
    pub(super) fn switch(&mut self, on: bool) -> Result<(), String> {
        if let Some(why) = &self.held {
            return Err(format!("the module is held after a {why}"));
        }
        if self.imp.is_dead() {
            return Err("the module is faulted".to_string());
        }
        self.serving = on;
        self.shared.mailbox.set_ticking(on);
        match if on {
            self.imp.enable()
        } else {
            self.imp.disable()
        } {
            Ok(()) => {
                let state = if on {
                    ModuleState::Serving
                } else {
                    ModuleState::Disabled
                };
                self.set_state(state, None);
                Ok(())
            }
            Err(f) => {
                // Recovered like any trap: rebuilt as enabled (a rebuild
                // runs `enable`) and, for a trapped `disable`, then held by
                // the host without asking the guest a second time.
                let e = f.to_string();
                self.fault(f);
                self.serving = true;
                self.recover(None);
                if !on {
                    self.serving = false;
                    self.shared.mailbox.set_ticking(false);
                    if !self.imp.is_dead() && self.held.is_none() {
                        let detail = format!("its disable trapped ({e}); held by the host");
                        self.set_state(ModuleState::Disabled, Some(detail));
                    }
                }
                if self.imp.is_dead() { Err(e) } else { Ok(()) }
            }
        }
    }

    /// Record `state` (transient ones, swapped and resumed, are recorded as
    /// serving) and announce it.
    pub(super) fn set_state(&self, state: ModuleState, detail: Option<String>) {
        {
            let mut st = self.shared.state.lock().expect("proxy poisoned");
            st.0 = match state {
                ModuleState::Swapped | ModuleState::Resumed => ModuleState::Serving,
                s => s,
            };
            if state == ModuleState::Faulted {
                st.2 = detail.clone();
            }
        }
        self.emit_state(state, detail);
    }

    /// Announce `state` on the event stream.
    pub(super) fn emit_state(&self, state: ModuleState, detail: Option<String>) {
        let version = self.shared.state.lock().expect("proxy poisoned").1.clone();
        self.env.bus.events.emit(Event::Module {
            module: self.shared.seat.name.to_string(),
            version: version.label().to_string(),
            state,
            detail,
        });
    }

    pub(super) fn log(&self, level: Level, line: String) {
        self.shared.seat.gate.log(self.imp.label(), level, line);
    }

    pub(super) fn fault(&mut self, f: GuestFault) {
        // The old version after an early vote: the log may be rebuilt.
        self.early_old_failed();
        self.shared.faults.fetch_add(1, Ordering::Relaxed);
        self.shared.mailbox.set_ticking(false);
        self.set_state(ModuleState::Faulted, Some(f.to_string()));
    }

    /// Serve one control message; false ends the worker.
    fn control(&mut self, c: Control) -> bool {
        match c {
            Control::Enable(reply) => {
                let _ = reply.send(self.switch(true));
            }
            Control::Disable(reply) => {
                self.drop_shadow("the module was disabled");
                let _ = reply.send(self.switch(false));
            }
            Control::Vote { txn, new } => {
                let why = format!("transaction {} replaces the module", txn.id);
                self.drop_shadow(&why);
                self.begin_vote(txn, Some(new));
            }
            Control::Promote { txn } => match self.promotable() {
                Ok(()) => {
                    self.expect_promote();
                    self.await_shadow();
                    self.begin_vote(txn, None);
                }
                Err(cause) => {
                    let no = Refusal::new(&self.shared.seat.name, Phase::Join, cause);
                    self.refuse_vote(&txn, None, no);
                }
            },
            Control::Shadow { new, plan, reply } => {
                let _ = reply.send(self.start_shadow(new, plan));
            }
            Control::Unshadow { why, reply } => {
                let ran = self.shadow.as_ref().is_some_and(|l| l.progress.running());
                self.drop_shadow(&why);
                let _ = reply.send(ran);
            }
            Control::Abort { txn } => {
                if self.vote.as_ref().is_some_and(|v| v.txn.id == txn) {
                    let pv = self.vote.take().expect("checked");
                    self.env.reaper.bury(pv.new);
                    self.unpromote();
                    self.skip.push(txn);
                    self.resume_old();
                    pv.txn.report(Report::done(&self.shared.seat.name));
                }
            }
            Control::Rollback { txn, group } => {
                let why = format!("transaction {group} is rolled back");
                self.drop_shadow(&why);
                self.rollback(txn, group);
            }
            Control::Park(reply) => {
                self.park(reply);
                return false;
            }
            Control::Detach(d) => return self.detach(d),
            Control::Stop(reply) => {
                self.stop(reply);
                return false;
            }
        }
        true
    }

    /// The host stops (or hands over) with a state directory: end now,
    /// between two messages, with a fresh recovery point.
    fn park(&mut self, reply: crossbeam_channel::Sender<()>) {
        self.drop_shadow("the host stops");
        // A fresh recovery point: the next host replays nothing.
        if self.recovery.checkpoints
            && !self.recovery.log.is_empty()
            && !self.imp.is_dead()
            && self.held.is_none()
        {
            self.checkpoint(self.now_ns());
        }
        self.serving = false;
        self.shared.mailbox.set_ticking(false);
        let _ = reply.send(());
    }

    /// Unload: drain what is queued, then end.
    fn stop(&mut self, reply: crossbeam_channel::Sender<()>) {
        self.drop_shadow("the module is unloaded");
        if self.held.is_some() {
            // A crash loop would only go round again: what is
            // queued is dropped, and said so.
            self.drop_queue("held after a crash loop");
        } else if self.imp.is_dead() {
            // Drain with a rebuilt instance rather than drop.
            let retry = self.retry.take();
            self.recover(retry);
        }
        if self.held.is_none()
            && !self.imp.is_dead()
            && let Err(f) = self.imp.disable()
        {
            // Rebuilt (as enabled: no second disable) to drain.
            self.fault(f);
            self.serving = true;
            self.recover(None);
        }
        let kept = self.queued();
        if self.imp.is_dead() && kept > 0 {
            self.log(
                Level::Error,
                format!("unloaded while faulted: {kept} queued message(s) were not served"),
            );
        }
        self.serving = false;
        self.shared.mailbox.set_ticking(false);
        // The gate is closed: this drains everything ever accepted.
        while let Some(item) = self.next_queued() {
            match item {
                Item::Msg(m, id) if !self.imp.is_dead() => self.serve(m, id),
                Item::Msg(m, id) => {
                    self.shared.mailbox.took(&m);
                    self.dropped(id);
                }
                Item::Term(_) => {}
            }
        }
        self.set_state(ModuleState::Stopped, None);
        let _ = reply.send(());
    }

    /// Take every queued message out unserved, and say how many.
    fn drop_queue(&mut self, why: &str) {
        let retry = self.retry.take();
        let mut dropped = usize::from(retry.is_some());
        if let Some(r) = retry {
            self.poisoned(r.id, true, None);
        }
        while let Some(item) = self.next_queued() {
            if let Item::Msg(m, id) = item {
                self.shared.mailbox.took(&m);
                self.dropped(id);
                dropped += 1;
            }
        }
        self.log(
            Level::Error,
            format!("unloaded while {why}: {dropped} queued message(s) were dropped, not served"),
        );
    }

    fn item(&mut self, item: Item) {
        if matches!(item, Item::Msg(..)) {
            // After an early vote's decision, the switch comes before the
            // next message (which a new version may have sent).
            if let Some(e) = self.early.take_if(|e| e.txn.made().is_some()) {
                self.reach_switch(e);
            }
        }
        match item {
            Item::Msg(m, id) if self.batching() => self.serve_batch(m, id),
            Item::Msg(m, id) => self.serve(m, id),
            Item::Term(txn) => self.reach_term(txn),
        }
    }

    pub(super) fn serve(&mut self, m: Message, id: u64) {
        self.shared.mailbox.took(&m);
        let now = self.starting();
        self.call(m, id, now);
    }

    /// A call on the mailbox starts now: note the gap since the last one
    /// (the outside view of a pause) and end a probation that is over.
    pub(super) fn starting(&mut self) -> u64 {
        // Only this thread writes `last_start_ns`; readers reset it to 0.
        let now = self.shared.origin.elapsed().as_nanos() as u64;
        let last = self.shared.last_start_ns.swap(now, Ordering::Relaxed);
        if last != 0 {
            self.shared
                .max_gap_ns
                .fetch_max(now.saturating_sub(last), Ordering::Relaxed);
        }
        self.probation_due(now);
        now
    }

    /// The next message or TERM taken out of the mailbox: one set back
    /// first, then the queue.
    pub(super) fn next_queued(&mut self) -> Option<Item> {
        self.pending
            .pop_front()
            .or_else(|| self.data_rx.try_recv().ok())
    }

    /// Messages and TERMs waiting.
    pub(super) fn queued(&self) -> usize {
        self.pending.len() + self.data_rx.len()
    }

    /// `service(m)`, and what follows from its outcome: the log of the
    /// recovery point, probation, and on a trap recovery or rollback.
    pub(super) fn call(&mut self, m: Message, id: u64, now_ns: u64) {
        self.producing(true);
        let result = self.imp.service(&m);
        self.producing(false);
        self.shared.calls.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(outcome) => {
                let failed = self.imp.take_failures();
                if self.shadow.is_some() {
                    let effects = self.imp.take_tap();
                    self.mirror(&m, &outcome, &failed, effects);
                }
                self.outcome(m, id, outcome, failed, now_ns);
            }
            Err(f) => {
                let retry = Retry {
                    effects: self.imp.effects(),
                    failed: self.imp.take_failures(),
                    message: m,
                    id,
                };
                self.trap(f, retry);
            }
        }
    }

    /// `m` was served with `outcome` (its effects that failed: `failed`).
    pub(super) fn outcome(
        &mut self,
        m: Message,
        id: u64,
        outcome: Result<(), String>,
        failed: Failures,
        now_ns: u64,
    ) {
        self.shared.served.fetch_add(1, Ordering::Relaxed);
        let error = outcome.is_err();
        if let Err(e) = outcome {
            self.shared.errors.fetch_add(1, Ordering::Relaxed);
            self.log(
                Level::Warn,
                format!("service error on `{}` from {}: {e}", m.kind, m.from),
            );
        }
        self.served(m, id, error, now_ns, failed);
    }

    /// The call serving `retry.message` trapped with `f`: the module is
    /// faulted, a pending vote is NO, and it is rebuilt (or, in
    /// probation, rolled back).
    pub(super) fn trap(&mut self, f: GuestFault, retry: Retry) {
        self.old_trapped(Some(&retry.message));
        self.trapped(&retry);
        let m = &retry.message;
        let fault = format!("{f} on `{}` from {}", m.kind, m.from);
        let reason = format!("{} v{}: {fault}", self.shared.seat.name, self.imp.label());
        let version = self.imp.label().to_string();
        self.fault(f);
        // The old version died before TERM: its vote is NO.
        let pending = self.vote.take();
        if let Some(pv) = &pending {
            self.skip.push(pv.txn.id);
        }
        let cause = Cause::Trap { version, fault };
        if self.probation.is_some() {
            // Queued before the NO is sent, so that the rollback is
            // due while that transaction still runs (and waits for
            // it), never after it.
            self.retry = Some(retry);
            self.breach(reason);
            self.refuse_pending(pending, cause);
        } else {
            self.refuse_pending(pending, cause);
            self.recover(Some(retry));
        }
    }

    /// A call trapped with `f` outside any message (after the last one of
    /// a batch): faulted and rebuilt, with nothing to serve again.
    pub(super) fn trap_between(&mut self, f: GuestFault) {
        self.old_trapped(None);
        let cause = Cause::Trap {
            version: self.imp.label().to_string(),
            fault: f.to_string(),
        };
        self.fault(f);
        let pending = self.vote.take();
        if let Some(pv) = &pending {
            self.skip.push(pv.txn.id);
        }
        self.refuse_pending(pending, cause);
        self.recover(None);
    }

    /// The old version died before TERM of `pending`: vote NO.
    fn refuse_pending(&self, pending: Option<PendingVote>, cause: Cause) {
        if let Some(pv) = pending {
            let no = Refusal::new(&self.shared.seat.name, Phase::Quiescence, cause);
            self.refuse_vote(&pv.txn, pv.new, no);
        }
    }
}
