//! The services every module reaches through its imports: names, pub/sub,
//! timers and the event stream, plus the delivery rules of `send` and
//! `publish`. One `Services` per runtime; no globals, so runtimes (and
//! tests) are independent.

use std::sync::{Arc, Weak};

use crossbeam_channel::{Sender, unbounded};

use crate::bindings::Message;
use crate::events::EventBus;
use crate::implementation::Implementation;
use crate::names::NameService;
use crate::pubsub::PubSub;
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
    reaper: Sender<Box<Implementation>>,
}

impl Services {
    pub(crate) fn new(mailbox_capacity: usize, max_state_bytes: usize) -> Arc<Self> {
        Arc::new_cyclic(|weak: &Weak<Services>| {
            let (reaper, graves) = unbounded::<Box<Implementation>>();
            // Dropping a Store frees its memory; that is done here, off the
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
                reaper,
            }
        })
    }

    /// Drop `imp` on the reaper thread.
    pub(crate) fn bury(&self, imp: Box<Implementation>) {
        if let Err(e) = self.reaper.send(imp) {
            drop(e.into_inner());
        }
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
