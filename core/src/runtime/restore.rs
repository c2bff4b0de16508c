//! A host coming back on its state directory: every module the image
//! holds loaded again on the version it ran, its timers and subscriptions
//! set again, its queued messages put back (all of them before any module
//! serves, so nothing sent now overtakes them), then each rebuilt on its
//! own thread (`proxy::restart`). Transactions the stop interrupted are
//! ended and said so in `History`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::Core;
use crate::bindings::Level;
use crate::events::Event;
use crate::guest::Grant;
use crate::history::CommandRecord;
use crate::instance::Implementation;
use crate::proxy::{Ends, ModuleProxy, Restored, Start};
use crate::store::{Image, ModuleImage, Op};

/// What a restart did, for the host's first lines.
#[derive(Debug, Default)]
pub struct RestartSummary {
    /// Modules restored.
    pub modules: usize,
    /// Messages put back in mailboxes.
    pub queued: usize,
    /// Transactions ended by the restart: (id, command, committed).
    pub ended: Vec<(u64, String, bool)>,
    /// Modules that could not be restored, and why.
    pub lost: Vec<(String, String)>,
    /// How long it took until every module was spawned.
    pub took: Duration,
}

impl Core {
    /// Bring back everything `image` holds.
    pub(crate) fn restore(&self, mut image: Image, all_or_nothing: bool) -> RestartSummary {
        let started = Instant::now();
        let mut summary = RestartSummary {
            ended: image.settle(),
            ..RestartSummary::default()
        };
        self.next_txn
            .store(image.next_txn.max(1), std::sync::atomic::Ordering::Relaxed);
        self.restore_history(&mut image, &summary.ended);
        self.restore_settings(&image);
        *self.bus.restored.lock().expect("restored poisoned") = Some(crate::bus::RestoredLattice {
            incarnation: image
                .settings
                .get(crate::store::LATTICE_INCARNATION)
                .copied(),
            outboxes: std::mem::take(&mut image.outboxes),
            marks: std::mem::take(&mut image.marks),
            voted: image
                .settings
                .iter()
                .filter(|(k, v)| k.starts_with(crate::store::LATTICE_VOTED) && **v == 1)
                .map(|(k, _)| k.clone())
                .collect(),
        });
        let mut ready = Vec::new();
        for (name, m) in std::mem::take(&mut image.modules) {
            match self.restore_one(&name, &m) {
                Ok(p) => ready.push((p, m)),
                Err(why) => summary.lost.push((name.to_string(), why)),
            }
        }
        if all_or_nothing && !summary.lost.is_empty() {
            // Nothing runs: the directory stays as it was for the host
            // that serves on.
            for (p, _) in &ready {
                self.modules.unregister(p.0.name());
                self.bus.forget(p.0.name());
            }
            summary.took = started.elapsed();
            return summary;
        }
        for ((proxy, _, _), m) in &mut ready {
            for (id, (msg, _)) in std::mem::take(&mut m.inbox) {
                proxy.mailbox().restore(msg, id);
                summary.queued += 1;
            }
            // Before the start returns, as the queue: a `Poison` right
            // after a restart lists what was set aside.
            proxy.restore_poison(std::mem::take(&mut m.poison));
        }
        for ((proxy, ends, imp), m) in ready {
            let finish = m.finish.as_ref().and_then(|(txn, digest)| {
                self.repo
                    .restore(digest, &m.def.path)
                    .ok()
                    .map(|v| (*txn, v))
            });
            let start = Start::Restore(Box::new(Restored { image: m, finish }));
            proxy.spawn(imp, &[], self.env.clone(), ends, start);
            summary.modules += 1;
        }
        for (name, why) in &summary.lost {
            self.bus.events.emit(Event::Log {
                module: name.clone(),
                version: String::new(),
                level: Level::Error,
                line: format!("not restored after the restart: {why}"),
            });
        }
        summary.took = started.elapsed();
        summary
    }

    /// The history the store kept, and a record of each transaction the
    /// restart ended.
    fn restore_history(&self, image: &mut Image, ended: &[(u64, String, bool)]) {
        let mut history = self.history.lock().expect("history poisoned");
        history.commands = std::mem::take(&mut image.commands);
        for (txn, line, committed) in ended {
            let outcome = if *committed {
                "committed (interrupted by a stop; finished after the restart)"
            } else {
                "aborted (interrupted by a stop before its decision; undone)"
            };
            let record = CommandRecord {
                at: SystemTime::now(),
                origin: "restart".into(),
                line: line.clone(),
                outcome: outcome.into(),
                transaction: Some(*txn),
            };
            self.bus.record(|| Op::Command(record.clone()));
            history.commands.push(record);
        }
    }

    /// The administrator's settings, as they were.
    fn restore_settings(&self, image: &Image) {
        let get = |n: &str| image.settings.get(n).copied();
        if let Some(ms) = get("checkpoint_ms") {
            self.env.settings.set_checkpoint(Duration::from_millis(ms));
        }
        if let Some(ms) = get("probation_ms") {
            let pct = get("max_error_pct").unwrap_or(50) as u32;
            self.env
                .settings
                .set_probation(Duration::from_millis(ms), pct);
        }
        let mut admin = self.admin.lock().expect("admin poisoned");
        if let Some(ms) = get("bound_ms") {
            admin.bound = Duration::from_millis(ms);
        }
        if let Some(seq) = get("sequential") {
            admin.mode = if seq == 1 {
                crate::command::Mode::Sequential
            } else {
                crate::command::Mode::Concurrent
            };
        }
    }

    /// The proxy of one module, registered, its timers and subscriptions
    /// set; not yet running.
    fn restore_one(
        &self,
        name: &str,
        m: &ModuleImage,
    ) -> Result<(ModuleProxy, Ends, Box<Implementation>), String> {
        let version = self
            .repo
            .restore(&m.def.digest, &m.def.path)
            .map_err(|e| e.to_string())?;
        let grants: Arc<[Grant]> = Arc::from(m.def.grants.as_slice());
        let limits = self.limits_with(m.def.memory.map(|b| b as usize));
        let imp = self
            .instantiate(&version, name, &grants, &limits)
            .map_err(|e| e.to_string())?;
        let capacity = m.def.capacity.map_or(self.mailbox_capacity, |c| c as usize);
        let (proxy, ends) = ModuleProxy::new(
            name,
            (version.clone(), &imp),
            capacity,
            grants,
            limits,
            &self.env,
        );
        if !self.modules.register(proxy.clone()) {
            return Err("the name is taken".into());
        }
        for (timer, ms) in &m.timers {
            let _ = self.bus.timers.set(name, timer, Duration::from_millis(*ms));
        }
        for (publisher, event) in &m.subs {
            let _ = self.bus.pubsub.subscribe(name, publisher, event);
        }
        Ok((proxy, ends, Box::new(imp)))
    }
}
