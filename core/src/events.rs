//! What happened, as a stream: guest log lines, lifecycle changes and
//! transaction reports. The CLI prints it (as text or JSON lines); tests
//! read it to check what the modules themselves recorded.

use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use crate::bindings::Level;
use crate::report::TransactionReport;

/// A module's lifecycle, as the proxy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleState {
    /// Registered and serving its mailbox.
    Serving,
    /// Held by `Disable`: its mailbox fills but nothing is served.
    Disabled,
    /// Serving the messages ahead of an upgrade's TERM.
    Quiescing,
    /// Reached TERM; its state is being handed over.
    Quiesced,
    /// The new version took over.
    Swapped,
    /// The upgrade was aborted; the old version serves on.
    Resumed,
    /// A guest call trapped or overran its deadline: the instance is dead
    /// and the mailbox is kept, unserved.
    Faulted,
    /// Held after a crash loop (more recoveries than the restart
    /// intensity allows): it serves nothing, its mailbox is kept, until a
    /// fixed version is `Replace`d in (which takes its state and mailbox
    /// over) or it is unloaded.
    Held,
    /// `Unload` drained it and removed the name.
    Stopped,
    /// Rebuilt from its recovery point after a fault; serving again.
    Recovered,
    /// Swapped back to the version it ran before, by an automatic rollback.
    RolledBack,
}

impl ModuleState {
    /// Lower-case name used in `Status` and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ModuleState::Serving => "serving",
            ModuleState::Disabled => "disabled",
            ModuleState::Quiescing => "quiescing",
            ModuleState::Quiesced => "quiesced",
            ModuleState::Swapped => "swapped",
            ModuleState::Resumed => "resumed",
            ModuleState::Faulted => "faulted",
            ModuleState::Held => "held",
            ModuleState::Stopped => "stopped",
            ModuleState::Recovered => "recovered",
            ModuleState::RolledBack => "rolled-back",
        }
    }
}

impl std::fmt::Display for ModuleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing that happened.
#[derive(Clone, Debug)]
pub enum Event {
    /// A line a guest logged (or wrote to stdout/stderr).
    Log {
        /// Module name.
        module: String,
        /// `info().version` of the implementation that logged it.
        version: String,
        /// Severity.
        level: Level,
        /// The line.
        line: String,
    },
    /// A lifecycle change.
    Module {
        /// Module name.
        module: String,
        /// `info().version` of the implementation concerned.
        version: String,
        /// The new state.
        state: ModuleState,
        /// Why, for faults and aborts.
        detail: Option<String>,
    },
    /// A transaction finished (committed, aborted or refused).
    Transaction(Box<TransactionReport>),
    /// A long phase of a command: what it is doing or waiting for.
    Progress {
        /// Who asked for the command.
        origin: String,
        /// What is happening.
        text: String,
    },
    /// This watcher did not keep up: so many events were skipped for it
    /// (its queue was full) before the next one.
    Skipped {
        /// How many.
        count: u64,
    },
}

impl Event {
    /// Whether this is a debug- or trace-level log line.
    pub fn is_chatty(&self) -> bool {
        matches!(
            self,
            Event::Log {
                level: Level::Debug | Level::Trace,
                ..
            }
        )
    }
}

/// Where a part of the host that only reports sends its events (a guest's
/// stdout, its sandbox's refusals, a module's lifecycle).
pub type EventSink = Arc<EventBus>;

/// Fans every event out to every watcher. A watcher that went away is
/// dropped at the next event; one that does not keep up has events skipped
/// (and is told how many), so that no reader can make the host hold more
/// than its queue.
pub struct EventBus {
    // A Mutex, not a RwLock: emitting also prunes dead watchers, and the
    // critical section is a few non-blocking channel sends.
    watchers: Mutex<Vec<Watcher>>,
    /// Events one watcher's queue holds.
    queue: usize,
}

struct Watcher {
    tx: Sender<Event>,
    /// Skipped since its last delivered event.
    skipped: u64,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new(crate::limits::Limits::default().watch_queue)
    }
}

impl EventBus {
    /// No watchers yet; each will hold at most `queue` unread events.
    pub fn new(queue: usize) -> Self {
        EventBus {
            watchers: Mutex::new(Vec::new()),
            queue: queue.max(2),
        }
    }

    /// A new receiver of every event from now on (while it keeps up).
    pub fn watch(&self) -> Receiver<Event> {
        let (tx, rx) = bounded(self.queue);
        self.watchers
            .lock()
            .expect("event bus poisoned")
            .push(Watcher { tx, skipped: 0 });
        rx
    }

    /// Emit one event.
    pub fn emit(&self, event: Event) {
        let mut watchers = self.watchers.lock().expect("event bus poisoned");
        if watchers.is_empty() {
            return;
        }
        watchers.retain_mut(|w| {
            if w.skipped > 0 {
                // First the note of what was skipped; the event follows it
                // only if there is room for both, or it is skipped too.
                let room_for_both = w.tx.len() + 2 <= self.queue;
                match w.tx.try_send(Event::Skipped { count: w.skipped }) {
                    Ok(()) => w.skipped = 0,
                    Err(TrySendError::Full(_)) => {}
                    Err(TrySendError::Disconnected(_)) => return false,
                }
                if !room_for_both {
                    w.skipped += 1;
                    return true;
                }
            }
            match w.tx.try_send(event.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    w.skipped += 1;
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            }
        })
    }
}
