//! The worker's side of a `Move`: between two messages it hands its state
//! over and waits, serving nothing, for the decision. Moved: it gives up
//! everything its mailbox held (the name is no longer registered here and
//! the mailbox is closed) and ends. Not moved: it serves on, as if nothing
//! happened.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::worker::Worker;
use crate::bindings::Message;
use crate::bus::Item;
use crate::events::ModuleState;

/// How long a detached worker waits for its move's decision before it
/// serves again on its own (the mover decides within its bound, far less).
const DECISION_BOUND: Duration = Duration::from_secs(60);

/// What a worker is asked at the start of a move.
pub(crate) struct Detach {
    /// Its state, or why it cannot move now.
    pub reply: Sender<Result<Vec<u8>, String>>,
    /// True: moved (the mailbox is closed); false: serve on.
    pub decision: Receiver<bool>,
    /// What its mailbox held, in order, once moved.
    pub queue: Sender<Vec<Message>>,
}

impl Worker {
    /// Why the module cannot move now, if it cannot.
    fn not_movable(&self) -> Option<String> {
        if self.vote.is_some() {
            return Some("it is in a transaction".into());
        }
        if self.probation.is_some() {
            return Some("it is on probation after a commit".into());
        }
        if let Some(why) = &self.held {
            return Some(format!("it is held ({why})"));
        }
        if self.retry.is_some() || self.imp.is_dead() {
            return Some("it is recovering from a fault".into());
        }
        if !self.serving {
            return Some("it is disabled".into());
        }
        None
    }

    /// `Move`: hand the state over, wait for the decision. False if the
    /// worker ends (moved).
    pub(super) fn detach(&mut self, d: Detach) -> bool {
        if let Some(why) = self.not_movable() {
            let _ = d.reply.send(Err(why));
            return true;
        }
        self.drop_shadow("the module moves to another host");
        let limit = self.env.settings.max_state_bytes;
        let state = match self.imp.put_state(None) {
            Ok(Ok(s)) if s.len() > limit => Err(format!(
                "its state of {} bytes is over the limit of {limit} (--max-state)",
                s.len()
            )),
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(format!("its put-state failed: {e}")),
            Err(f) => {
                let why = format!("its put-state trapped: {f}");
                self.fault(f);
                self.recover(None);
                Err(why)
            }
        };
        let handed = state.is_ok();
        let _ = d.reply.send(state);
        if !handed || d.decision.recv_timeout(DECISION_BOUND) != Ok(true) {
            return true;
        }
        // The name is gone and the mailbox closed: what it holds now is
        // all it will ever hold.
        let mut queue = Vec::with_capacity(self.queued());
        while let Some(item) = self.next_queued() {
            if let Item::Msg(m, _) = item {
                self.shared.mailbox.took(&m);
                queue.push(m);
            }
        }
        let _ = d.queue.send(queue);
        self.serving = false;
        self.set_state(ModuleState::Stopped, Some("moved to another host".into()));
        false
    }

    /// Start as a module moved here: `get-state` has run on the instance;
    /// its recovery point is that state.
    pub(super) fn arrive(&mut self, state: Vec<u8>) {
        self.recovery.base = Some(super::recovery::Base::State(Arc::new(state)));
        let _ = self.switch(true);
    }
}
