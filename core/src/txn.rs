//! The two-phase-commit record: what one transaction's coordinator
//! (`upgrade::coordinator`) and its participants (the module workers)
//! share — the deadline, the single decision, the channel on which votes
//! and completions come back — and the probation record of a committed
//! group, through which a participant asks for a rollback. This is all the
//! proxy knows of the upgrade protocol.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::bus::Mailbox;
use crate::report::Refusal;

/// The coordinator's decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Votes still coming.
    Pending,
    /// Every target voted YES in time: swap.
    Commit,
    /// Some target voted NO or missed the bound: resume the old versions.
    Abort,
}

/// What a participant tells the coordinator.
#[derive(Debug)]
pub(crate) enum Report {
    /// The vote: YES, or NO with the reason. `quiesce_us` is the time from
    /// TERM being queued to the module reaching it.
    Vote {
        module: String,
        quiesce_us: Option<u64>,
        no: Option<Refusal>,
    },
    /// The participant acted on the decision. `pause_us` is the time from
    /// the old version reaching TERM to the next message being servable;
    /// `buffered` how many messages waited meanwhile.
    Done {
        module: String,
        pause_us: Option<u64>,
        buffered: usize,
        /// Bytes of state handed over, if the handover happened.
        state_bytes: Option<usize>,
        /// Of the pause: the old version's `put-state` and the new one's
        /// `get-state`, if they ran.
        put_state_us: Option<u64>,
        get_state_us: Option<u64>,
    },
}

impl Report {
    /// `Done` of a participant that did not swap.
    pub(crate) fn done(module: &str) -> Report {
        Report::Done {
            module: module.to_string(),
            pause_us: None,
            buffered: 0,
            state_bytes: None,
            put_state_us: None,
            get_state_us: None,
        }
    }
}

/// One transaction as its participants see it.
pub(crate) struct Txn {
    /// Identifies the TERM markers of this transaction in mailboxes.
    pub id: u64,
    /// End of the quiescence bound (`SetTimer`).
    pub deadline: Instant,
    /// The bound itself, for the words of a refusal.
    pub bound: Duration,
    /// When every participant is a replacement (nothing to register at
    /// commit), the last YES in time decides commit itself: that saves the
    /// round trip through the coordinator inside every target's pause.
    pub auto_commit: bool,
    /// Participants that must vote YES.
    voters: usize,
    /// The probation the replaced modules enter if this commits.
    pub probation: Option<Arc<Probation>>,
    /// YES votes so far.
    yes: AtomicUsize,
    // Mutex + Condvar: every participant parks on the same decision, and
    // one `notify_all` starts them together (the commit barrier).
    decision: Mutex<Decision>,
    decided: Condvar,
    /// The decision once made (`COMMITTED` or `ABORTED`), read without
    /// the lock by targets that voted early, before each message.
    made: AtomicU8,
    reports: Sender<Report>,
    /// Set when the targets vote early (`SetMode early`): their mailboxes.
    /// A target serves on after its vote, and switches (or drops its
    /// candidate) before it serves the first message it takes out after
    /// the decision, so no old version serves a message a new version
    /// sent (a new version sends only after the decision). The decision
    /// also queues a TERM into each mailbox, to wake an idle target.
    switch_at: OnceLock<Vec<Mailbox>>,
}

const UNDECIDED: u8 = 0;
const COMMITTED: u8 = 1;
const ABORTED: u8 = 2;

impl Txn {
    /// Transaction `id`, whose votes are due by `deadline`, at the end of
    /// a bound of `bound`.
    pub(crate) fn new(
        id: u64,
        (deadline, bound): (Instant, Duration),
        auto_commit: bool,
        voters: usize,
        reports: Sender<Report>,
    ) -> Self {
        Txn {
            id,
            deadline,
            bound,
            auto_commit,
            voters,
            probation: None,
            yes: AtomicUsize::new(0),
            decision: Mutex::new(Decision::Pending),
            decided: Condvar::new(),
            made: AtomicU8::new(UNDECIDED),
            reports,
            switch_at: OnceLock::new(),
        }
    }

    /// Make the targets vote early: each serves on after its vote and
    /// switches at the TERM the decision queues into `mailboxes`. Set
    /// before any target is asked.
    pub(crate) fn vote_early(&self, mailboxes: Vec<Mailbox>) {
        let _ = self.switch_at.set(mailboxes);
    }

    /// Whether the targets vote early.
    pub(crate) fn early(&self) -> bool {
        self.switch_at.get().is_some()
    }

    /// Send a report to the coordinator (ignored if it is gone).
    pub(crate) fn report(&self, r: Report) {
        let _ = self.reports.send(r);
    }

    /// Decide, if nobody has: the first decision wins and is returned.
    pub(crate) fn decide(&self, d: Decision) -> Decision {
        let mut cur = self.decision.lock().expect("txn poisoned");
        if *cur != Decision::Pending {
            return cur.clone();
        }
        *cur = d.clone();
        let made = if d == Decision::Commit {
            COMMITTED
        } else {
            ABORTED
        };
        self.made.store(made, Ordering::Release);
        self.decided.notify_all();
        drop(cur);
        for m in self.switch_at.get().into_iter().flatten() {
            m.push_term(self.id);
        }
        d
    }

    /// The decision if it is made, without waiting or locking.
    pub(crate) fn made(&self) -> Option<Decision> {
        match self.made.load(Ordering::Acquire) {
            COMMITTED => Some(Decision::Commit),
            ABORTED => Some(Decision::Abort),
            _ => None,
        }
    }

    /// Count a YES vote; true if it was the last one needed.
    pub(crate) fn vote_yes(&self) -> bool {
        self.yes.fetch_add(1, Ordering::AcqRel) + 1 == self.voters
    }

    /// The decision so far.
    pub(crate) fn decision(&self) -> Decision {
        self.decision.lock().expect("txn poisoned").clone()
    }

    /// Block until decided.
    pub(crate) fn wait(&self) -> Decision {
        let mut cur = self.decision.lock().expect("txn poisoned");
        while *cur == Decision::Pending {
            cur = self.decided.wait(cur).expect("txn poisoned");
        }
        cur.clone()
    }
}

const WATCHING: u8 = 0;
const ROLLING_BACK: u8 = 1;
const OVER: u8 = 2;

/// The replaced modules of one committed transaction, while on probation.
pub(crate) struct Probation {
    /// The transaction that committed.
    pub txn: u64,
    /// Its command, for the rollback's report.
    pub command: String,
    pub window: Duration,
    pub max_error_pct: u32,
    /// Quiescence bound of the rollback's vote.
    pub bound: Duration,
    /// The replaced modules: the rollback's participants.
    pub members: Vec<String>,
    state: AtomicU8,
    // The coordinator's queue of rollbacks: a rollback is a transaction
    // like any other, run in turn with the operator's commands.
    rollbacks: Sender<RollbackRequest>,
}

/// A member broke probation: roll its group back.
pub(crate) struct RollbackRequest {
    pub group: Arc<Probation>,
    /// What broke it, naming the module.
    pub reason: String,
    /// When it became due: the commands that end after this held the
    /// serializer while the rollback waited.
    pub due: std::time::SystemTime,
}

/// What a member in breach should do next.
pub(crate) enum Breach {
    /// A rollback is under way or queued: its `Rollback` control will come.
    Coming,
    /// The group's probation is over: recover in place.
    Over,
}

impl Probation {
    pub(crate) fn new(
        txn: u64,
        command: String,
        (window, max_error_pct): (Duration, u32),
        bound: Duration,
        members: Vec<String>,
        rollbacks: Sender<RollbackRequest>,
    ) -> Self {
        Probation {
            txn,
            command,
            window,
            max_error_pct,
            bound,
            members,
            state: AtomicU8::new(WATCHING),
            rollbacks,
        }
    }

    /// A member broke probation: queue the rollback, unless one is queued,
    /// under way or over.
    pub(crate) fn breach(self: &Arc<Self>, reason: String) -> Breach {
        match self.state.compare_exchange(
            WATCHING,
            ROLLING_BACK,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                let request = RollbackRequest {
                    group: self.clone(),
                    reason,
                    due: std::time::SystemTime::now(),
                };
                if self.rollbacks.send(request).is_ok() {
                    Breach::Coming
                } else {
                    self.end();
                    Breach::Over
                }
            }
            Err(ROLLING_BACK) => Breach::Coming,
            Err(_) => Breach::Over,
        }
    }

    /// Whether a rollback is queued or under way: members keep their
    /// probation (and their rollback target) until it ends.
    pub(crate) fn rolling_back(&self) -> bool {
        self.state.load(Ordering::Acquire) == ROLLING_BACK
    }

    /// The rollback ended (either way): later breaches recover in place.
    pub(crate) fn end(&self) {
        self.state.store(OVER, Ordering::Release);
    }
}
