//! The sending side of the lattice's contract: per receiving module, an
//! outbox of numbered messages kept until the receiving host acknowledges
//! them. NATS may lose a batch (core NATS delivers at most once, and not at
//! all while a link is down); the outbox sends again from the first
//! message not acknowledged (go-back-N), and the receiver's marks drop what
//! it already holds. So accepted means delivered once, in order.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bindings::Message;
use crate::bus::{Budget, SendError};
use crate::limits::message_cost;
use crate::store::Producer;

/// How long an outbox waits for an acknowledgement before it sends again
/// what is not acknowledged.
pub(crate) const RESEND_AFTER: Duration = Duration::from_millis(300);

/// How many messages of one outbox may be sent and not yet acknowledged.
pub(crate) const WINDOW: usize = 16_384;

struct Entry {
    seq: u64,
    from: Arc<str>,
    msg: Message,
    /// Bytes it holds of the host's budget.
    cost: usize,
    /// On a host with a state directory: what must be durable before the
    /// message may leave (none: it may leave now).
    hold: Option<Hold>,
}

/// A journaled message leaves once it is durable and the call that sent
/// it completed durably: a restart then never sends it again from a call
/// that runs again.
struct Hold {
    durable: bool,
    producer: Option<Producer>,
}

/// The last call of each module known to have completed durably.
pub(crate) type Sealed = HashMap<Arc<str>, u64>;

fn ready(e: &Entry, sealed: &Sealed) -> bool {
    match &e.hold {
        None => true,
        Some(h) => {
            h.durable
                && h.producer
                    .as_ref()
                    .is_none_or(|(m, n)| sealed.get(m).is_some_and(|s| s >= n))
        }
    }
}

/// The messages for one module on another host.
pub(crate) struct Outbox {
    /// The number the next accepted message gets (the first is 1).
    next: u64,
    queue: VecDeque<Entry>,
    /// How many of `queue`'s first entries have been sent since the last
    /// go-back.
    sent: usize,
    /// When something was last acknowledged, and when the outbox last
    /// went back to send again what was not.
    last_acked: Instant,
    last_rewind: Instant,
}

impl Outbox {
    fn new() -> Self {
        let now = Instant::now();
        Outbox {
            next: 1,
            queue: VecDeque::new(),
            sent: 0,
            last_acked: now,
            last_rewind: now,
        }
    }

    /// Messages waiting for their acknowledgement.
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Drop every message up to `seq`, which the receiver holds; the
    /// bytes they held of the host's budget go back to it.
    pub(crate) fn acked(&mut self, seq: u64, budget: &Budget) {
        let mut n = 0;
        while self.queue.front().is_some_and(|e| e.seq <= seq) {
            let e = self.queue.pop_front().expect("checked");
            budget.give(e.cost);
            n += 1;
        }
        if n > 0 {
            self.sent = self.sent.saturating_sub(n);
            self.last_acked = Instant::now();
        }
    }

    /// Send again from the first unacknowledged message if no
    /// acknowledgement came for [`RESEND_AFTER`] (since the last one, or
    /// the last time it went back), however much is being sent after it.
    pub(crate) fn maybe_go_back(&mut self, now: Instant) -> bool {
        let stale = now.duration_since(self.last_acked.max(self.last_rewind)) >= RESEND_AFTER;
        if self.sent > 0 && stale {
            self.rewind();
            return true;
        }
        false
    }

    /// The number of the last message it accepted (0: none yet).
    pub(crate) fn last_number(&self) -> u64 {
        self.next - 1
    }

    /// Take every message it holds, in order, with its number and
    /// sender. Its numbering goes on: a receiver's mark for this stream
    /// stays right.
    pub(crate) fn drain<'a>(
        &'a mut self,
        budget: &'a Budget,
    ) -> impl Iterator<Item = (u64, Arc<str>, Message)> + 'a {
        self.sent = 0;
        self.queue.drain(..).map(move |e| {
            budget.give(e.cost);
            (e.seq, e.from, e.msg)
        })
    }

    /// Send again from the first unacknowledged message, now.
    pub(crate) fn rewind(&mut self) {
        self.sent = 0;
        self.last_rewind = Instant::now();
    }

    /// Whether there is something to send within the window.
    pub(crate) fn has_unsent(&self, sealed: &Sealed) -> bool {
        self.sent < self.queue.len().min(WINDOW) && ready(&self.queue[self.sent], sealed)
    }

    /// Visit what is to be sent now, in order, until `f` says stop; what
    /// it took counts as sent.
    pub(crate) fn take_unsent(
        &mut self,
        sealed: &Sealed,
        mut f: impl FnMut(u64, &str, &Message) -> bool,
    ) {
        let end = self.queue.len().min(WINDOW);
        while self.sent < end {
            let e = &self.queue[self.sent];
            if !ready(e, sealed) || !f(e.seq, &e.from, &e.msg) {
                break;
            }
            self.sent += 1;
        }
    }

    /// Message `seq` is durable.
    pub(crate) fn durable(&mut self, seq: u64) {
        let Some(first) = self.queue.front().map(|e| e.seq) else {
            return;
        };
        let at = seq.checked_sub(first).and_then(|i| usize::try_from(i).ok());
        if let Some(h) = at
            .and_then(|i| self.queue.get_mut(i))
            .and_then(|e| e.hold.as_mut())
        {
            h.durable = true;
        }
    }
}

/// Every outbox of this host, by receiving module.
pub(crate) struct Outboxes {
    pub(crate) by_name: HashMap<String, Outbox>,
    /// How many messages one outbox may hold.
    pub(crate) capacity: usize,
    /// The host-wide budget of queued bytes, which outboxes share with
    /// mailboxes.
    pub(crate) budget: Arc<Budget>,
    /// Calls completed durably (a host with a state directory).
    pub(crate) sealed: Sealed,
}

impl Outboxes {
    pub(crate) fn new(capacity: usize, budget: Arc<Budget>) -> Self {
        Outboxes {
            by_name: HashMap::new(),
            capacity,
            budget,
            sealed: Sealed::new(),
        }
    }

    /// Messages a restart found not acknowledged, numbered on from `acked`
    /// (durable already: they may leave at once).
    pub(crate) fn restore(&mut self, to: &str, acked: u64, entries: Vec<(u64, Message)>) {
        let mut ob = Outbox::new();
        ob.next = acked + 1;
        for (seq, mut msg) in entries {
            let from: Arc<str> = Arc::from(std::mem::take(&mut msg.from));
            let cost = message_cost(&msg.kind, &from, &msg.body);
            // Held before the restart: over the budget or not, kept.
            let cost = if self.budget.take(cost).is_ok() {
                cost
            } else {
                0
            };
            ob.next = seq + 1;
            ob.queue.push_back(Entry {
                seq,
                from,
                msg,
                cost,
                hold: None,
            });
        }
        self.by_name.insert(to.to_string(), ob);
    }

    /// Accept `msg` for `to`, which `host` serves; refused if its outbox
    /// is full or the host's budget of queued bytes is spent. Its number;
    /// with a journal (`held`: the call sending it), it leaves only once
    /// durable.
    pub(crate) fn push(
        &mut self,
        to: &str,
        host: &str,
        from: &Arc<str>,
        (msg, held): (Message, Option<Option<Producer>>),
    ) -> Result<u64, SendError> {
        if !self.by_name.contains_key(to) {
            self.by_name.insert(to.to_string(), Outbox::new());
        }
        let ob = self.by_name.get_mut(to).expect("just made");
        if ob.queue.len() >= self.capacity {
            return Err(SendError::OutboxFull {
                name: to.to_string(),
                host: host.to_string(),
                capacity: self.capacity,
            });
        }
        let cost = message_cost(&msg.kind, from, &msg.body);
        self.budget.take(cost)?;
        let seq = ob.next;
        ob.next += 1;
        ob.queue.push_back(Entry {
            seq,
            from: from.clone(),
            msg,
            cost,
            hold: held.map(|producer| Hold {
                durable: false,
                producer,
            }),
        });
        Ok(seq)
    }

    /// Messages from `sender` waiting for their acknowledgement, and the
    /// first receiving module that holds one.
    pub(crate) fn from(&self, sender: &str) -> (usize, Option<&str>) {
        let mut n = 0;
        let mut first = None;
        for (to, ob) in &self.by_name {
            let k = ob.queue.iter().filter(|e| &*e.from == sender).count();
            if k > 0 {
                n += k;
                first.get_or_insert(to.as_str());
            }
        }
        (n, first)
    }

    /// Messages waiting in every outbox.
    pub(crate) fn waiting(&self) -> usize {
        self.by_name.values().map(Outbox::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: u8) -> Message {
        Message {
            from: "T".into(),
            kind: "n".into(),
            proto: 1,
            body: vec![n],
        }
    }

    fn unsent(ob: &mut Outbox) -> Vec<u64> {
        let mut seen = Vec::new();
        ob.take_unsent(&Sealed::new(), |seq, _, _| {
            seen.push(seq);
            true
        });
        seen
    }

    #[test]
    fn a_lost_batch_is_sent_again_from_the_first_unacknowledged() {
        let from: Arc<str> = Arc::from("T");
        let budget = Arc::new(Budget::new(usize::MAX));
        let mut obs = Outboxes::new(3, budget.clone());
        for n in 1..=3 {
            assert!(obs.push("SINK", "b", &from, (msg(n), None)).is_ok());
        }
        let full = obs.push("SINK", "b", &from, (msg(4), None)).unwrap_err();
        assert!(
            full.to_string()
                .contains("outbox for `SINK` on host `b` is full"),
            "{full}"
        );
        assert!(
            budget.used() > 0,
            "the outbox holds bytes of the host's budget"
        );
        let ob = obs.by_name.get_mut("SINK").unwrap();
        assert_eq!(unsent(ob), [1, 2, 3]);
        assert!(unsent(ob).is_empty(), "sent once until something is lost");
        ob.acked(1, &budget);
        let later = Instant::now() + RESEND_AFTER;
        assert!(ob.maybe_go_back(later));
        assert_eq!(unsent(ob), [2, 3], "again from the first unacknowledged");
        ob.acked(3, &budget);
        assert_eq!(ob.len(), 0);
        assert_eq!(
            budget.used(),
            0,
            "acknowledged: the bytes are the host's again"
        );
        assert!(!ob.maybe_go_back(later + RESEND_AFTER));
        assert!(obs.push("SINK", "b", &from, (msg(5), None)).is_ok());
        let ob = obs.by_name.get_mut("SINK").unwrap();
        assert_eq!(unsent(ob), [4], "numbers go on after acknowledgements");
    }
}
