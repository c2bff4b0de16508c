//! The services every module reaches through its imports: names, pub/sub,
//! timers and the event stream, plus the delivery rules of `send` and
//! `publish`. One `Services` per runtime; no globals, so runtimes (and
//! tests) are independent.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crossbeam_channel::{Sender, unbounded};

use crate::bindings::Message;
use crate::events::EventBus;
use crate::names::NameService;
use crate::pubsub::PubSub;
use crate::report::TransactionReport;
use crate::runtime::CommandRecord;
use crate::timers::TimerService;

/// Sender name stamped on timer ticks.
pub const TIMER_SENDER: &str = "$timer";
/// Sender name stamped on messages injected by the administrator.
pub const ADMIN_SENDER: &str = "$admin";

/// Why a message was not accepted. Nothing was queued.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No module is registered under that name.
    #[error("no module named `{0}`")]
    UnknownModule(String),
    /// The receiver's mailbox is at capacity.
    #[error("mailbox of `{name}` is full ({capacity} messages)")]
    Full {
        /// Receiver.
        name: String,
        /// Its capacity.
        capacity: usize,
    },
    /// The receiver is being unloaded.
    #[error("`{0}` is being unloaded")]
    Closing(String),
    /// The sender does not speak the protocol it claims.
    #[error("protocol {proto} is not one this module speaks ({speaks:?})")]
    Protocol {
        /// The `proto` of the message.
        proto: u32,
        /// What the sender's version declared.
        speaks: Vec<u32>,
    },
}

/// The shared services of one runtime.
pub struct Services {
    /// Name → proxy.
    pub names: NameService,
    /// Subscriptions.
    pub pubsub: PubSub,
    /// Timers by module name.
    pub timers: TimerService,
    /// The event stream.
    pub events: EventBus,
    /// Default mailbox capacity for new modules.
    pub mailbox_capacity: usize,
    /// Largest state a `put-state` may hand over; more votes NO.
    pub max_state_bytes: usize,
    /// Fault-handling settings the administrator can change at run time.
    pub(crate) settings: Settings,
    /// Every command and every transaction so far, the automatic rollbacks
    /// included.
    pub(crate) records: Mutex<Records>,
    next_txn: AtomicU64,
    reaper: Sender<Box<dyn Send>>,
}

/// What `History` shows.
#[derive(Default)]
pub(crate) struct Records {
    pub commands: Vec<CommandRecord>,
    pub transactions: Vec<TransactionReport>,
}

/// Recovery and probation settings (`SetCheckpoint`, `SetProbation`).
pub(crate) struct Settings {
    checkpoint_ms: AtomicU64,
    probation_ms: AtomicU64,
    max_error_pct: AtomicU32,
}

impl Settings {
    /// How often a module's recovery point is refreshed (0: only at
    /// commits and every `CHECKPOINT_EVERY` messages).
    pub fn checkpoint_ns(&self) -> u64 {
        self.checkpoint_ms.load(Ordering::Relaxed) * 1_000_000
    }
    pub fn set_checkpoint(&self, d: Duration) {
        self.checkpoint_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }
    /// The window after a commit in which a fault rolls the group back
    /// (zero: no probation), and the error rate, in percent of the
    /// messages served, that counts as a fault.
    pub fn probation(&self) -> (Duration, u32) {
        (
            Duration::from_millis(self.probation_ms.load(Ordering::Relaxed)),
            self.max_error_pct.load(Ordering::Relaxed),
        )
    }
    pub fn set_probation(&self, window: Duration, max_error_pct: u32) {
        self.probation_ms
            .store(window.as_millis() as u64, Ordering::Relaxed);
        self.max_error_pct.store(max_error_pct, Ordering::Relaxed);
    }
}

impl Services {
    pub(crate) fn new(mailbox_capacity: usize, max_state_bytes: usize) -> Arc<Self> {
        Arc::new_cyclic(|weak: &Weak<Services>| {
            let (reaper, graves) = unbounded::<Box<dyn Send>>();
            // Dropping a Store frees its memory (and dropping a message log
            // frees thousands of small buffers); that is done here, off the
            // module threads, so it is never part of a swap's pause.
            // It ends by itself when `Services`, the last sender, goes.
            std::thread::Builder::new()
                .name("liveswap-reaper".into())
                .spawn(move || for _ in graves {})
                .expect("spawning the reaper thread");
            Services {
                names: NameService::default(),
                pubsub: PubSub::default(),
                timers: TimerService::start(weak.clone()),
                events: EventBus::default(),
                mailbox_capacity,
                max_state_bytes,
                settings: Settings {
                    checkpoint_ms: AtomicU64::new(1000),
                    probation_ms: AtomicU64::new(0),
                    max_error_pct: AtomicU32::new(50),
                },
                records: Mutex::new(Records::default()),
                next_txn: AtomicU64::new(1),
                reaper,
            }
        })
    }

    /// Drop `x` on the reaper thread.
    pub(crate) fn bury<T: Send + 'static>(&self, x: T) {
        if let Err(e) = self.reaper.send(Box::new(x)) {
            drop(e.into_inner());
        }
    }

    /// A new transaction number.
    pub(crate) fn next_txn(&self) -> u64 {
        self.next_txn.fetch_add(1, Ordering::Relaxed)
    }

    /// Record a finished transaction and announce it.
    pub(crate) fn record_transaction(&self, r: &TransactionReport) {
        self.records
            .lock()
            .expect("records poisoned")
            .transactions
            .push(r.clone());
        self.events
            .emit(crate::events::Event::Transaction(Box::new(r.clone())));
    }

    /// Queue `msg` for `to`, stamped as coming from `from`.
    pub fn send(
        &self,
        from: &Arc<str>,
        speaks: &[u32],
        to: &str,
        mut msg: Message,
    ) -> Result<(), SendError> {
        if !speaks.is_empty() && !speaks.contains(&msg.proto) {
            return Err(SendError::Protocol {
                proto: msg.proto,
                speaks: speaks.to_vec(),
            });
        }
        let proxy = self
            .names
            .resolve(to)
            .ok_or_else(|| SendError::UnknownModule(to.to_string()))?;
        msg.from = from.to_string();
        proxy.deliver(from, msg)
    }

    /// Fan `body` out as event `event` of `publisher` to its subscribers.
    /// Returns the names whose mailbox refused it.
    pub fn publish(
        &self,
        publisher: &Arc<str>,
        speaks: &[u32],
        event: &str,
        body: &[u8],
    ) -> Vec<(String, SendError)> {
        let proto = speaks.iter().copied().max().unwrap_or(0);
        let mut refused = Vec::new();
        for sub in self.pubsub.subscribers(publisher, event) {
            let msg = Message {
                from: publisher.to_string(),
                kind: event.to_string(),
                proto,
                body: body.to_vec(),
            };
            match self.names.resolve(&sub) {
                // A subscriber that is not loaded (yet, or any more) is
                // simply not there to receive: no error for the publisher.
                None => {}
                Some(proxy) => {
                    if let Err(e) = proxy.deliver(publisher, msg) {
                        refused.push((sub, e));
                    }
                }
            }
        }
        refused
    }

    /// Stop the service threads.
    pub(crate) fn shutdown(&self) {
        self.timers.shutdown();
    }
}
