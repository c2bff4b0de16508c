//! A module coming back after a restart: rebuilt from the recovery point
//! the state directory kept (base, and the log replayed with its effects
//! suppressed, as after a trap), a transaction it had not reached
//! finished, then serving what was queued.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::recovery::{Base, Logged, Rebuild, Retry};
use super::worker::Worker;
use crate::bindings::Level;
use crate::events::ModuleState;
use crate::instance::Implementation;
use crate::limits::message_cost;
use crate::repo::Version;
use crate::store::{BaseImage, ModuleImage};

/// What a restarted module is rebuilt from.
pub(crate) struct Restored {
    /// Its image in the store.
    pub image: ModuleImage,
    /// A transaction to finish: its id and the version to swap to.
    pub finish: Option<(u64, Arc<Version>)>,
}

impl Worker {
    /// Rebuild from `r`, then serve (or stay disabled).
    pub(super) fn restore(&mut self, r: Restored) {
        let started = Instant::now();
        let image = r.image;
        self.seq = image.seq;
        self.recovery.base = image.base.map(|b| match b {
            BaseImage::Init(failed) => Base::Init(Arc::from(image.def.config), Arc::new(failed)),
            BaseImage::State(s) => Base::State(s),
        });
        self.recovery.log = image
            .log
            .into_iter()
            .map(|l| Logged {
                id: l.id,
                message: l.message,
                failed: l.failed,
            })
            .collect();
        self.recovery.log_bytes = self
            .recovery
            .log
            .iter()
            .map(|l| message_cost(&l.message.kind, &l.message.from, &l.message.body))
            .sum();
        self.retry = image.retry.map(|r| Retry {
            message: r.message,
            id: r.id,
            effects: r.effects,
            failed: r.failed,
        });
        self.serving = image.enabled;
        let replayed = self.recovery.log.len();
        let Some(fresh) = self.rebuild_restored() else {
            return;
        };
        self.install(fresh);
        if let Some((txn, version)) = r.finish {
            self.finish(txn, &version);
        }
        self.publish_log_size();
        self.describe_point();
        let detail = format!(
            "restored v{} from the state directory: {} replayed message(s), {} queued, in {} µs",
            self.imp.label(),
            replayed,
            self.queued(),
            started.elapsed().as_micros()
        );
        self.emit_state(ModuleState::Recovered, Some(detail));
        self.announce_serving();
        if self.serving {
            self.serve_retry(self.now_ns());
        }
    }

    /// An instance at the recovery point, or none (the module is then
    /// faulted and refuses messages, its queue kept).
    fn rebuild_restored(&mut self) -> Option<Box<Implementation>> {
        let version = self.imp.version().clone();
        let why = match self.recovery.base.clone() {
            None => "no recovery point was kept".to_string(),
            Some(base) => loop {
                match self.rebuild(&version, &base, false) {
                    Ok(fresh) => return Some(fresh),
                    Err(Rebuild::SetAside) => continue,
                    Err(Rebuild::Failed(why)) => break why,
                }
            },
        };
        self.log(
            Level::Error,
            format!(
                "not restored: {why}; the module stays faulted, its mailbox kept (Replace or Unload it)"
            ),
        );
        self.shared.mailbox.set_dead(true);
        self.shared.faults.fetch_add(1, Ordering::Relaxed);
        self.set_state(ModuleState::Faulted, Some(why));
        None
    }

    /// Finish transaction `txn`, committed before the host stopped, which
    /// this module had not reached: its state, at the same quiescent point
    /// the vote would have found, handed to `version`.
    fn finish(&mut self, txn: u64, version: &Arc<Version>) {
        let state = match self.imp.put_state(None) {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return self.not_finished(txn, format!("put-state returned an error: {e}"));
            }
            Err(f) => return self.not_finished(txn, f.to_string()),
        };
        let mut new = match Implementation::instantiate(version, &self.shared.seat) {
            Ok(i) => Box::new(i),
            Err(e) => return self.not_finished(txn, e),
        };
        match new.get_state(&state, None) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return self.not_finished(txn, format!("get-state returned an error: {e}"));
            }
            Err(f) => return self.not_finished(txn, f.to_string()),
        }
        if self.serving && new.enable().is_err() {
            return self.not_finished(txn, "enable trapped".into());
        }
        let old = std::mem::replace(&mut self.imp, new);
        self.env.reaper.bury(old);
        self.shared.state.lock().expect("proxy poisoned").1 = version.clone();
        let state = Arc::new(state);
        self.swapped(txn, Some(state.clone()));
        let now = self.now_ns();
        self.new_base(Base::State(state), now);
        self.log(
            Level::Info,
            format!(
                "transaction {txn}, committed before the restart, finished: now v{}",
                self.imp.label()
            ),
        );
    }

    fn not_finished(&self, txn: u64, why: String) {
        self.log(
            Level::Error,
            format!(
                "transaction {txn}, committed before the restart, could not be finished here: {why}; still on v{}",
                self.imp.label()
            ),
        );
    }
}
