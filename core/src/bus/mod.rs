//! The message bus: names (→ mailboxes), mailboxes, pub/sub, timers and
//! arrival rates, and the delivery rules of `send` and `publish`. One `Bus`
//! per runtime; no globals, so runtimes (and tests) are independent. It is
//! what a guest's imports reach ([`HostView`]).

mod mailbox;
mod names;
mod pubsub;
mod rates;
mod remote;
mod timers;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::bindings::Message;
use crate::events::EventSink;
use crate::guest::{HostView, valid_name};
use crate::limits::{Limits, clip};
use crate::store::{Journal, Op};

pub(crate) use mailbox::Item;
pub use mailbox::{Budget, Mailbox, TIMER_SENDER};
pub use names::NameService;
pub use pubsub::PubSub;
pub use rates::WINDOW_SECS;
pub use remote::{Group, HostRow, LatticeView, ModuleSide, MoveStep, Mover, PartTarget, Remote};
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
    /// The outbox for a module on another host is at capacity: that host
    /// has not acknowledged so many messages (it is down, or unreachable).
    #[error(
        "outbox for `{name}` on host `{host}` is full ({capacity} messages unacknowledged; --lattice-outbox)"
    )]
    OutboxFull {
        /// Receiver.
        name: String,
        /// The host that serves it.
        host: String,
        /// The outbox's capacity.
        capacity: usize,
    },
    /// The receiver is being unloaded.
    #[error("`{0}` is being unloaded")]
    Closing(String),
    /// The receiver's mailbox holds as many bytes as it may.
    #[error("mailbox of `{name}` is full ({limit} bytes queued; --mailbox-bytes)")]
    FullBytes {
        /// Receiver.
        name: String,
        /// Its byte limit.
        limit: usize,
    },
    /// Every mailbox of the host together holds as many bytes as they may.
    #[error("the host's queued messages are at their budget ({limit} bytes; --queued-bytes)")]
    HostFull {
        /// The host-wide budget.
        limit: usize,
    },
    /// A part of the message is over its limit.
    #[error("message {what} of {bytes} bytes is over the limit of {limit} ({flag})")]
    TooLarge {
        /// `body` or `kind`.
        what: &'static str,
        /// Its size.
        bytes: usize,
        /// The limit.
        limit: usize,
        /// The flag that sets it.
        flag: &'static str,
    },
    /// The sender does not speak the protocol it claims.
    #[error(
        "protocol {proto} is not one this module speaks ({speaks:?}){}",
        if .speaks.is_empty() { ": a version that speaks none may send nothing" } else { "" }
    )]
    Protocol {
        /// The `proto` of the message.
        proto: u32,
        /// What the sender's version declared.
        speaks: Vec<u32>,
    },
    /// The state directory cannot be written: nothing new is accepted,
    /// what is queued is still served.
    #[error("not accepted: the state directory cannot be written ({0})")]
    Store(String),
    /// The receiver is faulted and could not be rebuilt: nothing sent to
    /// it could be served.
    #[error(
        "`{0}` is faulted and could not be rebuilt: nothing sent to it can be served (Unload it)"
    )]
    Faulted(String),
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
    /// The limits of what guests and clients can make the host hold.
    pub limits: Arc<Limits>,
    /// Bytes queued in every mailbox together.
    pub budget: Arc<Budget>,
    /// Messages refused for a limit (size, bytes, quotas), host-wide.
    pub refused: AtomicUsize,
    /// The state directory's journal, if the host has one.
    pub journal: Option<Arc<Journal>>,
    /// The lattice, if the host joined one: where messages for names
    /// served by other hosts go.
    pub remote: OnceLock<Arc<dyn Remote>>,
    /// What a restart found of the lattice in the state directory: this
    /// host's stream identity and its outboxes, for the lattice to take.
    pub restored: std::sync::Mutex<Option<RestoredLattice>>,
}

/// A lattice host's streams as its state directory kept them.
#[derive(Default)]
pub struct RestoredLattice {
    /// The run of this host its receivers know its streams by.
    pub incarnation: Option<u64>,
    /// Messages not acknowledged, by receiving module.
    pub outboxes: std::collections::BTreeMap<Arc<str>, crate::store::OutboxImage>,
    /// Receiving marks: (sending host, module) → (its run, the last taken).
    pub marks: std::collections::BTreeMap<(Arc<str>, Arc<str>), (u64, u64)>,
    /// Groups spanning hosts this host voted yes in and had not heard the
    /// decision of: the settings that say so.
    pub voted: Vec<String>,
}

impl Bus {
    pub(crate) fn new(
        events: EventSink,
        limits: Limits,
        journal: Option<Arc<Journal>>,
    ) -> Arc<Self> {
        let names = Arc::new(NameService::default());
        let sink: Arc<dyn timers::TickSink> = names.clone();
        let timers = TimerService::start(Arc::downgrade(&sink), &limits);
        Arc::new(Bus {
            names,
            pubsub: PubSub::new(limits.subscriptions),
            timers,
            events,
            budget: Arc::new(Budget::new(limits.queued_bytes)),
            limits: Arc::new(limits),
            refused: AtomicUsize::new(0),
            journal,
            remote: OnceLock::new(),
            restored: std::sync::Mutex::new(None),
        })
    }

    /// A new mailbox for `name` under this bus's limits, and the receiver
    /// its worker reads.
    pub(crate) fn mailbox(
        &self,
        name: Arc<str>,
        capacity: usize,
    ) -> (Mailbox, crossbeam_channel::Receiver<Item>) {
        Mailbox::new(
            name,
            capacity,
            self.limits.mailbox_bytes,
            self.budget.clone(),
            self.journal.clone(),
        )
    }

    /// Refuse a message whose kind or body is over its limit.
    fn check_size(&self, kind: &str, body: &[u8]) -> Result<(), SendError> {
        let l = &self.limits;
        let over = if body.len() > l.max_body {
            Some(("body", body.len(), l.max_body, "--max-message"))
        } else if kind.len() > l.max_kind {
            Some(("kind", kind.len(), l.max_kind, "--max-kind"))
        } else {
            None
        };
        match over {
            None => Ok(()),
            Some((what, bytes, limit, flag)) => Err(SendError::TooLarge {
                what,
                bytes,
                limit,
                flag,
            }),
        }
    }

    /// Count a refusal for a limit, and pass it on.
    fn counted<T>(&self, r: Result<T, SendError>) -> Result<T, SendError> {
        if let Err(
            SendError::Full { .. }
            | SendError::OutboxFull { .. }
            | SendError::FullBytes { .. }
            | SendError::HostFull { .. }
            | SendError::TooLarge { .. },
        ) = &r
        {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// The error a sender to an unknown name gets.
    fn unknown(to: &str) -> SendError {
        // Never echo a name of any length back whole (checked only here,
        // off the path of a message that is delivered).
        let shown = if valid_name(to) {
            to.to_string()
        } else {
            clip(to, 64).into_owned()
        };
        SendError::UnknownModule(shown)
    }

    /// The host of the lattice that serves `name`, if another one does.
    pub fn served_elsewhere(&self, name: &str) -> Option<String> {
        // Served here (moved here a moment ago, say, before the host it
        // left has said so): here.
        if self.names.contains(name) {
            return None;
        }
        self.remote.get().and_then(|r| r.host_of(name))
    }

    /// The lattice, if `to` runs on another host of it.
    fn remote_for(&self, to: &str) -> Option<&Arc<dyn Remote>> {
        self.remote.get().filter(|r| r.host_of(to).is_some())
    }

    /// Check `msg` as any send is checked, and stamp it with its sender.
    fn checked(
        &self,
        from: &Arc<str>,
        speaks: &[u32],
        mut msg: Message,
    ) -> Result<Message, SendError> {
        self.check_size(&msg.kind, &msg.body)?;
        if !speaks.contains(&msg.proto) {
            return Err(SendError::Protocol {
                proto: msg.proto,
                speaks: speaks.to_vec(),
            });
        }
        msg.from = from.to_string();
        Ok(msg)
    }

    /// Queue `msg` for `to`, stamped as coming from `from`, whose version
    /// speaks the protocols `speaks` (none: it may send nothing).
    pub fn send(
        &self,
        from: &Arc<str>,
        speaks: &[u32],
        to: &str,
        msg: Message,
    ) -> Result<(), SendError> {
        let msg = self.counted(self.checked(from, speaks, msg))?;
        match self.names.resolve(to) {
            Some(mailbox) => self.counted(mailbox.deliver(from, msg)),
            None => match self.remote_for(to) {
                Some(remote) => self.counted(remote.send(from, to, msg)),
                None => Err(Self::unknown(to)),
            },
        }
    }

    /// Queue `msgs` for `to` in order, as [`Bus::send`] would one by one,
    /// stopping at the first refused: how many were accepted, and why the
    /// next was not.
    pub fn send_all(
        &self,
        from: &Arc<str>,
        speaks: &[u32],
        to: &str,
        msgs: impl Iterator<Item = Message>,
    ) -> Result<usize, (usize, SendError)> {
        let Some(mailbox) = self.names.resolve(to) else {
            return self.send_all_remote(from, speaks, to, msgs);
        };
        let checked = msgs.map(|msg| self.checked(from, speaks, msg));
        mailbox
            .deliver_all(from, checked)
            .map_err(|(n, e)| (n, self.counted::<()>(Err(e)).unwrap_err()))
    }

    /// [`Bus::send_all`] to a module on another host.
    fn send_all_remote(
        &self,
        from: &Arc<str>,
        speaks: &[u32],
        to: &str,
        msgs: impl Iterator<Item = Message>,
    ) -> Result<usize, (usize, SendError)> {
        let Some(remote) = self.remote_for(to) else {
            return Err((0, Self::unknown(to)));
        };
        let mut n = 0;
        for msg in msgs {
            let sent = self
                .checked(from, speaks, msg)
                .and_then(|m| remote.send(from, to, m));
            self.counted(sent).map_err(|e| (n, e))?;
            n += 1;
        }
        Ok(n)
    }

    /// Fan `body` out as event `event` of `publisher` to its subscribers.
    /// Returns the names whose mailbox refused it, or why none was tried:
    /// the event is over a size limit, or the publisher speaks nothing.
    pub fn publish(
        &self,
        publisher: &Arc<str>,
        speaks: &[u32],
        event: &str,
        body: &[u8],
    ) -> Result<Vec<(String, SendError)>, SendError> {
        self.counted(self.check_size(event, body))?;
        let Some(proto) = speaks.iter().copied().max() else {
            return Err(SendError::Protocol {
                proto: 0,
                speaks: Vec::new(),
            });
        };
        let mut refused = match self.remote.get() {
            None => Vec::new(),
            Some(r) => {
                let msg = Message {
                    from: publisher.to_string(),
                    kind: event.to_string(),
                    proto,
                    body: body.to_vec(),
                };
                self.counted_all(r.publish(publisher, &msg))
            }
        };
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
                    if let Err(e) = self.counted(mailbox.deliver(publisher, msg)) {
                        refused.push((sub, e));
                    }
                }
            }
        }
        Ok(refused)
    }

    /// Count refusals for a limit among `refused`.
    fn counted_all(&self, refused: Vec<(String, SendError)>) -> Vec<(String, SendError)> {
        refused
            .into_iter()
            .map(|(n, e)| (n, self.counted::<()>(Err(e)).unwrap_err()))
            .collect()
    }

    /// Tell the lattice, if any, that subscriptions changed.
    pub(crate) fn changed(&self) {
        if let Some(r) = self.remote.get() {
            r.changed();
        }
    }

    /// Journal what `op` makes, if the host has a state directory.
    pub(crate) fn record(&self, op: impl FnOnce() -> Op) {
        if let Some(j) = &self.journal {
            j.record(op());
        }
    }

    /// Journal the timers and subscriptions `name` holds now (its `init`
    /// made them before the module was journaled as loaded).
    pub(crate) fn record_setup(&self, name: &str) {
        let Some(j) = &self.journal else {
            return;
        };
        let module: Arc<str> = Arc::from(name);
        for (timer, every) in self.timers.of(name) {
            j.record(Op::Timer {
                module: module.clone(),
                name: timer,
                every_ms: Some(every.as_millis() as u64),
            });
        }
        for (publisher, event) in self.pubsub.of(name) {
            j.record(Op::Sub {
                module: module.clone(),
                publisher,
                event,
                on: true,
            });
        }
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
        self.changed();
    }
}

impl HostView for Bus {
    fn send(&self, from: &Arc<str>, speaks: &[u32], to: &str, msg: Message) -> Result<(), String> {
        Bus::send(self, from, speaks, to, msg).map_err(|e| e.to_string())
    }

    fn send_all(
        &self,
        from: &Arc<str>,
        speaks: &[u32],
        to: &str,
        msgs: &mut dyn Iterator<Item = Message>,
    ) -> Result<usize, (usize, String)> {
        Bus::send_all(self, from, speaks, to, msgs).map_err(|(n, e)| (n, e.to_string()))
    }

    fn publish(
        &self,
        publisher: &Arc<str>,
        speaks: &[u32],
        event: &str,
        body: &[u8],
    ) -> Result<(), String> {
        let refused =
            Bus::publish(self, publisher, speaks, event, body).map_err(|e| e.to_string())?;
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

    fn subscribe(&self, who: &str, publisher: &str, event: &str) -> Result<(), String> {
        if event.len() > self.limits.max_kind {
            return Err(SendError::TooLarge {
                what: "event name",
                bytes: event.len(),
                limit: self.limits.max_kind,
                flag: "--max-kind",
            }
            .to_string());
        }
        self.pubsub.subscribe(who, publisher, event)?;
        self.changed();
        self.record(|| Op::Sub {
            module: Arc::from(who),
            publisher: publisher.to_string(),
            event: event.to_string(),
            on: true,
        });
        Ok(())
    }

    fn unsubscribe(&self, who: &str, publisher: &str, event: &str) {
        self.pubsub.unsubscribe(who, publisher, event);
        self.changed();
        self.record(|| Op::Sub {
            module: Arc::from(who),
            publisher: publisher.to_string(),
            event: event.to_string(),
            on: false,
        });
    }

    fn set_timer(&self, who: &str, timer: &str, every: Duration) -> Result<(), String> {
        if timer.len() > self.limits.max_kind {
            return Err(format!(
                "timer name of {} bytes is over the limit of {} (--max-kind)",
                timer.len(),
                self.limits.max_kind
            ));
        }
        self.timers.set(who, timer, every)?;
        self.record(|| Op::Timer {
            module: Arc::from(who),
            name: timer.to_string(),
            every_ms: Some(every.as_millis() as u64),
        });
        Ok(())
    }

    fn cancel_timer(&self, who: &str, timer: &str) {
        self.timers.cancel(who, timer);
        self.record(|| Op::Timer {
            module: Arc::from(who),
            name: timer.to_string(),
            every_ms: None,
        });
    }
}
