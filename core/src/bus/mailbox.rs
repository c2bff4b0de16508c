//! The sender half of a module's mailbox: what `send`, `publish` and the
//! timers reach through the name service. The receiving half belongs to the
//! module's worker (`proxy::worker`), the only reader.
//!
//! One queue holds application messages and TERM markers, in order: an
//! upgrade appends TERM and needs no second buffer, since whatever arrives
//! after TERM simply waits behind it (architecture.md §4).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, unbounded};

use super::SendError;
use super::rates::RateWindow;
use crate::bindings::Message;
use crate::limits::message_cost;
use crate::store::{Journal, Op};

/// The host-wide budget of queued bytes, shared by every mailbox.
pub struct Budget {
    used: AtomicUsize,
    max: usize,
}

impl Budget {
    pub(crate) fn new(max: usize) -> Self {
        Budget {
            used: AtomicUsize::new(0),
            max,
        }
    }

    /// Bytes queued in every mailbox together.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The budget.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Take `n` bytes, or say the budget is spent.
    pub(crate) fn take(&self, n: usize) -> Result<(), SendError> {
        if self.used.fetch_add(n, Ordering::AcqRel) + n > self.max {
            self.used.fetch_sub(n, Ordering::AcqRel);
            return Err(SendError::HostFull { limit: self.max });
        }
        Ok(())
    }

    pub(crate) fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Sender name stamped on timer ticks.
pub const TIMER_SENDER: &str = "$timer";

/// What the mailbox holds.
pub(crate) enum Item {
    /// An application message (or timer tick, or event), with its id in
    /// the journal (0 without a state directory).
    Msg(Message, u64),
    /// The end of the old implementation's share of the mailbox in
    /// transaction `id`.
    Term(u64),
}

struct Inner {
    name: Arc<str>,
    tx: Sender<Item>,
    // The gate closes at Unload. A read lock per `send` (uncontended: a few
    // ns) makes "accepted" and "queued before the worker's final drain" the
    // same thing: Unload takes the write lock, so no send is half done when
    // the worker drains.
    gate: RwLock<bool>,
    depth: AtomicUsize,
    /// Messages this mailbox refused for being full (messages or bytes).
    refused: AtomicU64,
    capacity: AtomicUsize,
    /// Bytes queued (see `limits::message_cost`), and the most it may.
    bytes: AtomicUsize,
    max_bytes: usize,
    /// The host-wide budget the bytes also count against.
    budget: Arc<Budget>,
    /// Timer ticks are only queued while the module is enabled.
    ticking: AtomicBool,
    /// Set while the module is faulted with no instance that could serve
    /// (it could not be rebuilt): sends are refused rather than kept for
    /// nobody.
    dead: AtomicBool,
    // Per-sender arrival counts. A Mutex per receiver: senders to the same
    // module contend briefly; senders to different modules never do.
    arrivals: Mutex<HashMap<Arc<str>, RateWindow>>,
    /// Timers with a tick waiting in the mailbox: not queued twice.
    pending_ticks: Mutex<HashSet<String>>,
    origin: Instant,
    /// With a state directory: every accepted message is journaled
    /// before it is queued.
    journal: Option<Arc<Journal>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Messages never taken out (a worker that ended with some queued)
        // give their bytes back to the host's budget with the mailbox.
        self.budget.give(*self.bytes.get_mut());
    }
}

/// Handle on the sending side of one module's mailbox.
#[derive(Clone)]
pub struct Mailbox(Arc<Inner>);

impl Mailbox {
    /// A mailbox for `name` holding at most `capacity` messages and
    /// `max_bytes` bytes (within the host's `budget`), and the receiver its
    /// worker reads.
    pub(crate) fn new(
        name: Arc<str>,
        capacity: usize,
        max_bytes: usize,
        budget: Arc<Budget>,
        journal: Option<Arc<Journal>>,
    ) -> (Self, Receiver<Item>) {
        let (tx, rx) = unbounded();
        let inner = Inner {
            journal,
            name,
            tx,
            gate: RwLock::new(true),
            depth: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            capacity: AtomicUsize::new(capacity),
            bytes: AtomicUsize::new(0),
            max_bytes,
            budget,
            ticking: AtomicBool::new(false),
            dead: AtomicBool::new(false),
            arrivals: Mutex::new(HashMap::new()),
            pending_ticks: Mutex::new(HashSet::new()),
            origin: Instant::now(),
        };
        (Mailbox(Arc::new(inner)), rx)
    }

    /// The module's name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Messages refused so far for a full mailbox (messages or bytes).
    pub fn refused(&self) -> u64 {
        self.0.refused.load(Ordering::Relaxed)
    }

    /// Messages queued and not yet served.
    pub fn depth(&self) -> usize {
        self.0.depth.load(Ordering::Relaxed)
    }

    /// Bytes queued, not yet served.
    pub fn bytes(&self) -> usize {
        self.0.bytes.load(Ordering::Relaxed)
    }

    /// Most bytes it holds.
    pub fn max_bytes(&self) -> usize {
        self.0.max_bytes
    }

    /// Most messages it holds.
    pub fn capacity(&self) -> usize {
        self.0.capacity.load(Ordering::Relaxed)
    }

    /// Change the capacity.
    pub fn set_capacity(&self, capacity: usize) {
        self.0.capacity.store(capacity, Ordering::Relaxed);
    }

    /// Accept `msg` into the mailbox, or say why not.
    pub(crate) fn deliver(&self, from: &Arc<str>, msg: Message) -> Result<(), SendError> {
        self.deliver_all(from, std::iter::once(Ok(msg)))
            .map(|_| ())
            .map_err(|(_, e)| e)
    }

    /// Accept `msgs` in order, from one sender, stopping at the first that
    /// is refused (an `Err` in `msgs` is refused as it stands): how many
    /// were accepted, and why the next was not. The gate, the journal and
    /// the arrival count are visited once for all.
    pub(crate) fn deliver_all(
        &self,
        from: &Arc<str>,
        msgs: impl Iterator<Item = Result<Message, SendError>>,
    ) -> Result<usize, (usize, SendError)> {
        let s = &*self.0;
        let open = s.gate.read().expect("mailbox poisoned");
        if !*open {
            return Err((0, SendError::Closing(s.name.to_string())));
        }
        if s.dead.load(Ordering::Relaxed) {
            return Err((0, SendError::Faulted(s.name.to_string())));
        }
        if let Some(j) = &s.journal {
            j.check().map_err(|e| (0, SendError::Store(e)))?;
        }
        let now = Instant::now();
        let mut n = 0;
        let mut refused = None;
        for msg in msgs {
            if let Err(e) = msg.and_then(|m| self.accept(from, m)) {
                refused = Some(e);
                break;
            }
            n += 1;
        }
        if n > 0 {
            let mut arrivals = s.arrivals.lock().expect("mailbox poisoned");
            match arrivals.get_mut(&**from) {
                Some(w) => w.record_n(s.origin, now, n as u64),
                None => {
                    let mut w = RateWindow::default();
                    w.record_n(s.origin, now, n as u64);
                    arrivals.insert(from.clone(), w);
                }
            }
        }
        match refused {
            None => Ok(n),
            Some(e) => Err((n, e)),
        }
    }

    /// Queue one message within the mailbox's bounds (the gate is held).
    fn accept(&self, from: &Arc<str>, msg: Message) -> Result<(), SendError> {
        let s = &*self.0;
        let capacity = s.capacity.load(Ordering::Relaxed);
        if s.depth.fetch_add(1, Ordering::AcqRel) >= capacity {
            s.depth.fetch_sub(1, Ordering::AcqRel);
            s.refused.fetch_add(1, Ordering::Relaxed);
            return Err(SendError::Full {
                name: s.name.to_string(),
                capacity,
            });
        }
        if let Err(e) = self.take_bytes(message_cost(&msg.kind, from, &msg.body)) {
            s.depth.fetch_sub(1, Ordering::AcqRel);
            s.refused.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        // Journaled before it can be served: the journal's order is causal.
        let id = match &s.journal {
            None => 0,
            Some(j) => {
                let id = j.next_id();
                j.record(Op::Enq {
                    id,
                    to: s.name.clone(),
                    msg: msg.clone(),
                    producer: crate::store::producer(),
                    stream: crate::store::stream(),
                });
                id
            }
        };
        // The worker holds the receiver until every sender is gone or it
        // has drained after the gate closed: a send here cannot be lost.
        let _ = s.tx.send(Item::Msg(msg, id));
        Ok(())
    }

    /// Queue a message a restart found accepted and not served (already
    /// journaled, with its id), before anything else can be sent.
    pub(crate) fn restore(&self, msg: Message, id: u64) {
        let s = &*self.0;
        s.depth.fetch_add(1, Ordering::AcqRel);
        let n = message_cost(&msg.kind, &msg.from, &msg.body);
        s.bytes.fetch_add(n, Ordering::AcqRel);
        s.budget.used.fetch_add(n, Ordering::AcqRel);
        let _ = s.tx.send(Item::Msg(msg, id));
    }

    /// Queue a tick of timer `timer`, unless the module is held or a tick
    /// of that timer is already waiting.
    pub(crate) fn tick(&self, timer: &str) {
        let s = &*self.0;
        if !s.ticking.load(Ordering::Acquire) {
            return;
        }
        {
            let mut pending = s.pending_ticks.lock().expect("mailbox poisoned");
            if !pending.insert(timer.to_string()) {
                return;
            }
        }
        if self
            .take_bytes(message_cost(timer, TIMER_SENDER, &[]))
            .is_err()
        {
            // Over a byte bound: this tick is skipped, like one that is
            // already waiting.
            s.pending_ticks
                .lock()
                .expect("mailbox poisoned")
                .remove(timer);
            return;
        }
        s.depth.fetch_add(1, Ordering::AcqRel);
        // A tick is journaled when served, not queued: one lost in a
        // crash is simply a later tick.
        let id = s.journal.as_ref().map_or(0, |j| j.next_id());
        let tick = Message {
            from: TIMER_SENDER.to_string(),
            kind: timer.to_string(),
            proto: 0,
            body: Vec::new(),
        };
        let _ = s.tx.send(Item::Msg(tick, id));
    }

    /// Append TERM of transaction `txn` behind everything queued.
    pub(crate) fn push_term(&self, txn: u64) {
        let _ = self.0.tx.send(Item::Term(txn));
    }

    /// Count `n` more bytes queued against this mailbox and the host.
    fn take_bytes(&self, n: usize) -> Result<(), SendError> {
        let s = &*self.0;
        if s.bytes.fetch_add(n, Ordering::AcqRel) + n > s.max_bytes {
            s.bytes.fetch_sub(n, Ordering::AcqRel);
            return Err(SendError::FullBytes {
                name: s.name.to_string(),
                limit: s.max_bytes,
            });
        }
        if let Err(e) = s.budget.take(n) {
            s.bytes.fetch_sub(n, Ordering::AcqRel);
            return Err(e);
        }
        Ok(())
    }

    /// The worker took `m` out of the queue to serve it (or to drop it).
    pub(crate) fn took(&self, m: &Message) {
        self.took_all(std::iter::once(m));
    }

    /// The worker took `msgs` out of the queue to serve them: one update
    /// of the counts for all.
    pub(crate) fn took_all<'a>(&self, msgs: impl Iterator<Item = &'a Message>) {
        let (mut n, mut bytes) = (0, 0);
        for m in msgs {
            n += 1;
            bytes += message_cost(&m.kind, &m.from, &m.body);
            if m.from == TIMER_SENDER {
                self.0
                    .pending_ticks
                    .lock()
                    .expect("mailbox poisoned")
                    .remove(&m.kind);
            }
        }
        self.0.bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.0.budget.give(bytes);
        self.0.depth.fetch_sub(n, Ordering::AcqRel);
    }

    /// Whether sends are refused because no instance can serve them.
    pub(crate) fn set_dead(&self, dead: bool) {
        self.0.dead.store(dead, Ordering::Relaxed);
    }

    /// Whether timer ticks are queued (only while the module is enabled).
    pub(crate) fn set_ticking(&self, on: bool) {
        self.0.ticking.store(on, Ordering::Release);
    }

    /// Close the mailbox: every later send fails. Waits for sends under way.
    pub(crate) fn close(&self) {
        *self.0.gate.write().expect("mailbox poisoned") = false;
    }

    /// Senders seen so far (for the protocol-edge check).
    pub fn senders(&self) -> Vec<String> {
        self.0
            .arrivals
            .lock()
            .expect("mailbox poisoned")
            .keys()
            .filter(|k| !k.starts_with('$'))
            .map(|k| k.to_string())
            .collect()
    }

    /// Arrivals per second, per sender, over the recent window, by sender.
    pub fn rates(&self) -> Vec<(String, f64)> {
        let now = Instant::now();
        let mut rates: Vec<(String, f64)> = self
            .0
            .arrivals
            .lock()
            .expect("mailbox poisoned")
            .iter()
            .map(|(k, w)| (k.to_string(), w.rate(self.0.origin, now)))
            .collect();
        rates.sort_by(|a, b| a.0.cmp(&b.0));
        rates
    }
}
