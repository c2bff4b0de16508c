//! The message bus: names (→ mailboxes), mailboxes, pub/sub, timers and
//! arrival rates, and the delivery rules of `send` and `publish`. One `Bus`
//! per runtime; no globals, so runtimes (and tests) are independent. It is
//! what a guest's imports reach ([`HostView`]).

mod mailbox;
mod names;
mod pubsub;
mod rates;
mod timers;

use std::sync::Arc;
use std::time::Duration;

use crate::bindings::Message;
use crate::events::EventSink;
use crate::guest::HostView;

pub(crate) use mailbox::Item;
pub use mailbox::{Mailbox, TIMER_SENDER};
pub use names::NameService;
pub use pubsub::PubSub;
pub use rates::WINDOW_SECS;
pub use timers::TimerService;

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

/// The bus of one runtime.
pub struct Bus {
    /// Name → mailbox. An `Arc`: the timer thread holds it weakly.
    pub names: Arc<NameService>,
    /// Subscriptions.
    pub pubsub: PubSub,
    /// Timers by module name.
    pub timers: TimerService,
    /// Where events go.
    pub events: EventSink,
}

impl Bus {
    pub(crate) fn new(events: EventSink) -> Arc<Self> {
        let names = Arc::new(NameService::default());
        let sink: Arc<dyn timers::TickSink> = names.clone();
        let timers = TimerService::start(Arc::downgrade(&sink));
        Arc::new(Bus {
            names,
            pubsub: PubSub::default(),
            timers,
            events,
        })
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
        let mailbox = self
            .names
            .resolve(to)
            .ok_or_else(|| SendError::UnknownModule(to.to_string()))?;
        msg.from = from.to_string();
        mailbox.deliver(from, msg)
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
                Some(mailbox) => {
                    if let Err(e) = mailbox.deliver(publisher, msg) {
                        refused.push((sub, e));
                    }
                }
            }
        }
        refused
    }

    /// Stop the timer thread.
    pub(crate) fn shutdown(&self) {
        self.timers.shutdown();
    }

    /// Forget what module `name` set up on the bus: its timers and
    /// subscriptions (after an Unload, or a failed `init`).
    pub(crate) fn forget(&self, name: &str) {
        self.timers.cancel_all(name);
        self.pubsub.forget(name);
    }
}

impl HostView for Bus {
    fn send(&self, from: &Arc<str>, speaks: &[u32], to: &str, msg: Message) -> Result<(), String> {
        Bus::send(self, from, speaks, to, msg).map_err(|e| e.to_string())
    }

    fn publish(
        &self,
        publisher: &Arc<str>,
        speaks: &[u32],
        event: &str,
        body: &[u8],
    ) -> Result<(), String> {
        let refused = Bus::publish(self, publisher, speaks, event, body);
        if refused.is_empty() {
            return Ok(());
        }
        let why: Vec<String> = refused.iter().map(|(_, e)| e.to_string()).collect();
        Err(format!(
            "{} subscriber(s) refused the event: {}",
            refused.len(),
            why.join("; ")
        ))
    }

    fn subscribe(&self, who: &str, publisher: &str, event: &str) {
        self.pubsub.subscribe(who, publisher, event);
    }

    fn unsubscribe(&self, who: &str, publisher: &str, event: &str) {
        self.pubsub.unsubscribe(who, publisher, event);
    }

    fn set_timer(&self, who: &str, timer: &str, every: Duration) {
        self.timers.set(who, timer, every);
    }

    fn cancel_timer(&self, who: &str, timer: &str) {
        self.timers.cancel(who, timer);
    }
}
