//! The shared record of one upgrade transaction between its coordinator
//! (the upgrader) and its participants (the module threads): the deadline,
//! the single decision, and the channel on which votes and completions come
//! back.

use std::sync::{Condvar, Mutex};
use std::time::Instant;

use crossbeam_channel::Sender;

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
        no: Option<String>,
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
        }
    }
}

/// One transaction as its participants see it.
pub(crate) struct Txn {
    /// Identifies the TERM markers of this transaction in mailboxes.
    pub id: u64,
    /// End of the quiescence bound (`SetTimer`).
    pub deadline: Instant,
    /// When every participant is a replacement (nothing to register at
    /// commit), the last YES in time decides commit itself: that saves the
    /// round trip through the coordinator inside every target's pause.
    pub auto_commit: bool,
    /// Participants that must vote YES.
    voters: usize,
    /// The probation the replaced modules enter if this commits.
    pub probation: Option<std::sync::Arc<crate::proxy::Group>>,
    /// YES votes so far.
    yes: std::sync::atomic::AtomicUsize,
    // Mutex + Condvar: every participant parks on the same decision, and
    // one `notify_all` starts them together (the commit barrier).
    decision: Mutex<Decision>,
    decided: Condvar,
    reports: Sender<Report>,
}

impl Txn {
    pub(crate) fn new(
        id: u64,
        deadline: Instant,
        auto_commit: bool,
        voters: usize,
        reports: Sender<Report>,
    ) -> Self {
        Txn {
            id,
            deadline,
            auto_commit,
            voters,
            probation: None,
            yes: std::sync::atomic::AtomicUsize::new(0),
            decision: Mutex::new(Decision::Pending),
            decided: Condvar::new(),
            reports,
        }
    }

    /// Send a report to the coordinator (ignored if it is gone).
    pub(crate) fn report(&self, r: Report) {
        let _ = self.reports.send(r);
    }

    /// Decide, if nobody has: the first decision wins and is returned.
    pub(crate) fn decide(&self, d: Decision) -> Decision {
        let mut cur = self.decision.lock().expect("txn poisoned");
        if *cur == Decision::Pending {
            *cur = d;
            self.decided.notify_all();
        }
        cur.clone()
    }

    /// Count a YES vote; true if it was the last one needed.
    pub(crate) fn vote_yes(&self) -> bool {
        self.yes.fetch_add(1, std::sync::atomic::Ordering::AcqRel) + 1 == self.voters
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
