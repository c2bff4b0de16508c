//! The state every command and every transaction reaches, and the
//! command serializer. It lives at the upgrade layer because the
//! coordinator and the rollback thread run on it; the runtime adds the
//! lifecycle commands and the inspections on top.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::bindings::Message;
use crate::bus::{ADMIN_SENDER, Bus, SendError};
use crate::command::Mode;
use crate::error::CommandError;
use crate::events::Event;
use crate::history::{CommandRecord, History};
use crate::instance::InstanceLimits;
use crate::proxy::{Env, Modules};
use crate::repo::Repository;
use crate::report::TransactionReport;
use crate::txn::RollbackRequest;

/// What the command serializer guards: the settings transactions read.
pub(crate) struct AdminState {
    pub bound: Duration,
    pub mode: Mode,
}

/// What the history keeps of a command's result.
pub(crate) trait Recorded {
    /// `done`, `committed`, ..., or `error: ...`.
    fn outcome(&self) -> String;
    /// The transaction it ran, if any.
    fn transaction(&self) -> Option<u64>;
}

impl Recorded for Result<TransactionReport, CommandError> {
    fn outcome(&self) -> String {
        match self {
            Ok(r) => r.outcome.as_str().to_string(),
            Err(e) => format!("error: {e}"),
        }
    }
    fn transaction(&self) -> Option<u64> {
        self.as_ref().ok().map(|r| r.id)
    }
}

impl Recorded for Result<String, CommandError> {
    fn outcome(&self) -> String {
        match self {
            Ok(_) => "done".to_string(),
            Err(e) => format!("error: {e}"),
        }
    }
    fn transaction(&self) -> Option<u64> {
        None
    }
}

/// Everything one host shares between the runtime handle, the coordinator
/// and the rollback thread.
pub(crate) struct Core {
    pub bus: Arc<Bus>,
    pub env: Env,
    pub modules: Modules,
    pub repo: Repository,
    pub limits: InstanceLimits,
    pub call_deadline: Duration,
    /// How long Unload waits for a module to drain and stop.
    pub drain_deadline: Duration,
    /// Default mailbox capacity of new modules.
    pub mailbox_capacity: usize,
    // The command serializer: held for the whole of each command and of
    // each automatic rollback, so that a transaction never sees another
    // one's half-done changes.
    pub admin: Mutex<AdminState>,
    // Outside the serializer, so a client (or a rollback) waiting for it
    // can be told what it waits for.
    pub current: Mutex<Option<(String, String)>>,
    pub history: Mutex<History>,
    pub next_txn: AtomicU64,
    /// The rollback thread's queue.
    pub rollbacks: Sender<RollbackRequest>,
}

impl Core {
    /// A new transaction number.
    pub(crate) fn next_txn(&self) -> u64 {
        self.next_txn.fetch_add(1, Ordering::Relaxed)
    }

    /// Tell whoever asked for the command running now what it is doing.
    pub(crate) fn progress(&self, origin: &str, text: String) {
        self.bus.events.emit(Event::Progress {
            origin: origin.to_string(),
            text,
        });
    }

    /// Run `f`, a slow step (`what`: `compiling x.wasm`), telling `origin`
    /// each second it takes how long it has taken so far.
    pub(crate) fn timed<T>(&self, origin: &str, what: &str, f: impl FnOnce() -> T) -> T {
        let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                let started = std::time::Instant::now();
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    done_rx.recv_timeout(std::time::Duration::from_secs(1))
                {
                    let secs = started.elapsed().as_secs();
                    self.progress(origin, format!("{what}: {secs} s so far"));
                }
            });
            let r = f();
            drop(done_tx);
            r
        })
    }

    /// What command is running now, and for whom: (line, origin).
    pub(crate) fn current_command(&self) -> Option<(String, String)> {
        self.current.lock().expect("poisoned").clone()
    }

    /// Run `f` in the command serializer, as command `text` of `origin`,
    /// and keep it in the history unless it is an inspection.
    pub(crate) fn serialized<R: Recorded>(
        &self,
        text: &str,
        origin: &str,
        inspection: bool,
        f: impl FnOnce(&mut AdminState) -> R,
    ) -> R {
        let mut admin = self.admin.lock().expect("admin poisoned");
        *self.current.lock().expect("poisoned") = Some((text.to_string(), origin.to_string()));
        let result = f(&mut admin);
        if !inspection {
            let record = CommandRecord {
                at: std::time::SystemTime::now(),
                origin: origin.to_string(),
                line: text.to_string(),
                outcome: result.outcome(),
                transaction: result.transaction(),
            };
            // Durable before the command's answer: what it did (a Load, a
            // Send) is journaled ahead of this record, so an OK means it
            // survives a crash.
            if let Some(j) = &self.bus.journal
                && let Err(e) = j.record_durable(crate::store::Op::Command(record.clone()))
            {
                tracing::error!("state directory: `{text}` is not durable: {e}");
            }
            self.history
                .lock()
                .expect("history poisoned")
                .commands
                .push(record);
        }
        *self.current.lock().expect("poisoned") = None;
        result
    }

    /// Inject a message from `$admin`.
    pub(crate) fn send(&self, to: &str, kind: &str, body: &[u8]) -> Result<(), SendError> {
        let from: Arc<str> = Arc::from(ADMIN_SENDER);
        let msg = Message {
            from: String::new(),
            kind: kind.to_string(),
            proto: 0,
            body: body.to_vec(),
        };
        // The administrator speaks protocol 0 (any receiver takes it).
        self.bus.send(&from, &[0], to, msg)
    }

    pub(crate) fn history(&self) -> History {
        self.history.lock().expect("history poisoned").clone()
    }
}
