//! Batches: a module that exports `service-batch` gets the messages
//! waiting in its mailbox in one call instead of one call each, which is
//! most of what a message costs. The contract of `service` holds per
//! message: the guest reports each one done (`batch-served`), so its
//! effects, outcome and recovery log entry are its own, and a trap is
//! charged to the first message not reported; the messages after it go
//! back to the head of the queue, ahead of anything (a TERM included)
//! behind them.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use super::recovery::Retry;
use super::worker::Worker;
use crate::bindings::Message;
use crate::bus::Item;
use crate::guest::Failures;
use crate::guest::batch::pack;

/// A batch stops growing past this many bytes of messages (one message
/// alone may be larger).
const BATCH_BYTES: usize = 256 << 10;

impl Worker {
    /// Whether waiting messages may go to the guest in one call: it takes
    /// batches, and nothing needs them one call each (probation weighs
    /// each message against its version, a retry is served alone first,
    /// a journal names every message's call).
    pub(super) fn batching(&self) -> bool {
        self.imp.takes_batches()
            && self.env.bus.limits.batch > 1
            && self.probation.is_none()
            && self.retry.is_none()
            && self.held.is_none()
            && self.env.bus.journal.is_none()
            // Each message taken out is checked for an early vote's
            // decision before it is served.
            && self.early.is_none()
    }

    /// Serve `first` and the messages queued behind it (up to the bound,
    /// and never past a TERM) in one `service-batch` call.
    pub(super) fn serve_batch(&mut self, first: Message, id: u64) {
        let mut batch = self.gather(first, id);
        if batch.len() == 1 {
            let (m, id) = batch.pop().expect("one");
            self.batch = batch;
            self.serve(m, id);
            return;
        }
        // The first message is in the call, the others still count as
        // queued until the guest reports them (as one call each would).
        self.shared.mailbox.took(&batch[0].0);
        let now = self.starting();
        let mut packed = std::mem::take(&mut self.packed);
        pack(&mut packed, batch.iter().map(|(m, _)| m));
        let (done, result) = self.imp.service_batch(&packed);
        self.shared.calls.fetch_add(1, Ordering::Relaxed);
        self.packed = packed;
        let mut failures = self.imp.take_failures();
        // The effects of every message, in order, if a shadow compares them.
        let tapped = self.imp.take_tap();
        let reported = done.len().min(batch.len());
        if reported > 1 {
            let counted = batch[1..reported].iter().map(|(m, _)| m);
            self.shared.mailbox.took_all(counted);
        }
        let mut queue = batch.drain(..);
        let mut start = 0;
        // The instance is past the whole batch: a snapshot taken while an
        // earlier message is logged would hold the later ones twice.
        let last = if result.is_ok() { reported } else { 0 };
        for (i, (end, outcome)) in done.into_iter().take(reported).enumerate() {
            let (m, id) = queue.next().expect("counted");
            let mine = split_off(&mut failures, start, end);
            if self.shadow.is_some() {
                let range = (start as usize).min(tapped.len())..(end as usize).min(tapped.len());
                self.mirror(&m, &outcome, &mine, tapped[range].to_vec());
            }
            start = end;
            self.no_checkpoint = i + 1 != last;
            self.outcome(m, id, outcome, mine, now);
        }
        self.no_checkpoint = false;
        let mut rest: VecDeque<(Message, u64)> = queue.collect();
        self.batch = batch;
        let Some((m, id)) = rest.pop_front() else {
            if let Err(f) = result {
                // Every message was reported served: the trap came after
                // them, and is the instance's alone.
                self.trap_between(f);
            }
            return;
        };
        if reported > 0 {
            self.shared.mailbox.took(&m);
        }
        match result {
            // Returned without reporting these: one call each.
            Ok(()) => {
                self.call(m, id, now);
                self.serve_each(rest);
            }
            Err(f) => {
                for (m, id) in rest.into_iter().rev() {
                    self.pending.push_front(Item::Msg(m, id));
                }
                let retry = Retry {
                    effects: self.imp.effects().saturating_sub(start),
                    failed: split_off(&mut failures, start, u64::MAX),
                    message: m,
                    id,
                };
                self.trap(f, retry);
            }
        }
    }

    /// `first` and the messages queued behind it, up to the bound and
    /// never past a TERM.
    fn gather(&mut self, first: Message, id: u64) -> Vec<(Message, u64)> {
        let mut batch = std::mem::take(&mut self.batch);
        let mut bytes = first.body.len();
        batch.push((first, id));
        while batch.len() < self.env.bus.limits.batch && bytes < BATCH_BYTES {
            match self.next_queued() {
                Some(Item::Msg(m, id)) => {
                    bytes += m.body.len();
                    batch.push((m, id));
                }
                Some(term) => {
                    self.pending.push_front(term);
                    break;
                }
                None => break,
            }
        }
        batch
    }

    /// Messages a batch returned without reporting: served one call each
    /// (set back in the queue if the module can no longer serve).
    fn serve_each(&mut self, mut rest: VecDeque<(Message, u64)>) {
        while !self.imp.is_dead() && self.held.is_none() {
            let Some((m, id)) = rest.pop_front() else {
                return;
            };
            self.serve(m, id);
        }
        for (m, id) in rest.into_iter().rev() {
            self.pending.push_front(Item::Msg(m, id));
        }
    }
}

/// The failures among effects `start..end` of a batch call, numbered from
/// `start` (as one message's own call would number them).
fn split_off(failures: &mut Failures, start: u64, end: u64) -> Failures {
    let mut mine = Failures::new();
    failures.retain(|(i, e)| {
        if (start..end).contains(i) {
            mine.push((i - start, e.clone()));
            false
        } else {
            true
        }
    });
    mine
}
