//! What happened, as a stream: guest log lines, lifecycle changes and
//! transaction reports. The CLI prints it (as text or JSON lines); tests
//! read it to check what the modules themselves recorded.

use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender, unbounded};

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
/// dropped at the next event.
#[derive(Default)]
pub struct EventBus {
    // A Mutex, not a RwLock: emitting also prunes dead watchers, and the
    // critical section is a few channel sends.
    watchers: Mutex<Vec<Sender<Event>>>,
}

impl EventBus {
    /// A new receiver of every event from now on.
    pub fn watch(&self) -> Receiver<Event> {
        let (tx, rx) = unbounded();
        self.watchers.lock().expect("event bus poisoned").push(tx);
        rx
    }

    /// Emit one event.
    pub fn emit(&self, event: Event) {
        let mut watchers = self.watchers.lock().expect("event bus poisoned");
        if watchers.is_empty() {
            return;
        }
        watchers.retain(|w| w.send(event.clone()).is_ok());
    }
}
