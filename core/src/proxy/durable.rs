//! What a worker tells the state directory's journal (nothing without
//! one): each completed call with the message it served, a trapped call,
//! a message set aside or dropped, a new recovery point, a swap. The
//! numbers of its calls (`seq`) tie the messages it sends to the call that
//! sent them (`store::journal`).

use std::sync::Arc;

use super::recovery::Retry;
use super::worker::Worker;
use crate::bindings::Message;
use crate::bus::TIMER_SENDER;
use crate::store::{Failures, Op};

impl Worker {
    fn record(&self, op: impl FnOnce(Arc<str>) -> Op) {
        if let Some(j) = &self.env.bus.journal {
            j.record(op(self.shared.seat.name.clone()));
        }
    }

    /// Sends from this thread are made by the `service` call about to run
    /// (`on`), or by no call a restart runs again (`init`, `enable`,
    /// `get-state`...: their sends are kept as they are).
    pub(super) fn producing(&self, on: bool) {
        if self.env.bus.journal.is_some() {
            let tag = on.then(|| (self.shared.seat.name.clone(), self.seq + 1));
            crate::store::set_producer(tag);
        }
    }

    /// A call on message `id` completed (with an error or not).
    pub(super) fn completed(&mut self, id: u64, m: &Message, failed: &Failures) {
        self.seq += 1;
        let seq = self.seq;
        self.record(|module| Op::Served {
            module,
            seq,
            id,
            tick: (m.from == TIMER_SENDER).then(|| m.clone()),
            failed: failed.clone(),
        });
    }

    /// A call trapped: what it did stands, and it is served again.
    pub(super) fn trapped(&self, r: &Retry) {
        let seq = self.seq + 1;
        self.record(|module| Op::Trapped {
            module,
            seq,
            id: r.id,
            effects: r.effects,
            failed: r.failed.clone(),
        });
    }

    /// Message `id` was taken out: the call retried (which then counts as
    /// completed), or one of the log; kept as poison (`aside`: the version
    /// it trapped and why) or dropped.
    pub(super) fn poisoned(&mut self, id: u64, retried: bool, aside: Option<(&str, &str)>) {
        let seq = if retried {
            self.seq += 1;
            Some(self.seq)
        } else {
            None
        };
        self.record(|module| Op::Poisoned {
            module,
            seq,
            id,
            aside: aside.map(|(v, r)| (v.to_string(), r.to_string())),
        });
    }

    /// Message `id` was taken out unserved.
    pub(super) fn dropped(&self, id: u64) {
        self.record(|module| Op::Dropped { module, id });
    }

    /// A new recovery point.
    pub(super) fn snapshot(&self, state: &Arc<Vec<u8>>) {
        self.record(|module| Op::Snapshot {
            module,
            state: state.clone(),
        });
    }

    /// No recovery point any more.
    pub(super) fn lost_base(&self) {
        self.record(|module| Op::NoBase { module });
    }

    /// Now running the current instance's version in transaction `txn`,
    /// from `state` (none: the recovery point stays, as in a rollback).
    pub(super) fn swapped(&self, txn: u64, state: Option<Arc<Vec<u8>>>) {
        let v = self.imp.version();
        self.record(|module| Op::Swap {
            module,
            txn,
            path: v.path.clone(),
            digest: v.digest.clone(),
            state,
        });
    }
}
