//! A module's life outside transactions (thesis 3.6): the
//! addition protocol (`Load`), the removal protocol (`Unload`), `Enable`
//! and `Disable`, and what `Load` and the upgrade protocol share:
//! instantiating a version for a name, and its `init`.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::bounded;

use super::Core;
use crate::command::LoadOptions;
use crate::error::{CommandError, LoadError};
use crate::guest::{Grant, LogGate};
use crate::instance::{Implementation, InstanceLimits, Seat};
use crate::proxy::{CHECKPOINT_EVERY, Control, ModuleProxy, Start};
use crate::repo::Version;
use crate::store::{ModuleDef, Op};

impl Core {
    /// What the state directory keeps of a module loaded with `options`.
    pub(crate) fn def_of(&self, version: &Version, options: &LoadOptions) -> ModuleDef {
        ModuleDef {
            path: version.path.clone(),
            digest: version.digest.clone(),
            config: options.config.clone(),
            capacity: options.capacity.map(|c| c as u64),
            grants: options.grants.clone(),
            memory: options.memory.map(|m| m as u64),
        }
    }

    /// The limits of a module loaded with `options`.
    pub(crate) fn limits_for(&self, options: &LoadOptions) -> InstanceLimits {
        self.limits_with(options.memory)
    }

    /// The host's instance limits, with this memory limit if one is given.
    pub(crate) fn limits_with(&self, memory: Option<usize>) -> InstanceLimits {
        InstanceLimits {
            memory: memory.unwrap_or(self.limits.memory),
            ..self.limits.clone()
        }
    }

    /// Instantiate `version` for `name`, as a `Load` or an upgrade does.
    pub(crate) fn instantiate(
        &self,
        version: &Arc<Version>,
        name: &str,
        grants: &Arc<[Grant]>,
        limits: &InstanceLimits,
    ) -> Result<Implementation, LoadError> {
        crate::guest::sandbox::check(grants)?;
        // A new version of a loaded module logs through the module's gate.
        let gate = match self.modules.get(name) {
            Some(p) => p.gate().clone(),
            None => Arc::new(LogGate::new(
                Arc::from(name),
                self.bus.events.clone(),
                &self.bus.limits,
            )),
        };
        let seat = Seat {
            name: Arc::from(name),
            host: self.bus.clone(),
            gate,
            grants: grants.clone(),
            limits: limits.clone(),
        };
        Implementation::instantiate(version, &seat).map_err(|reason| LoadError::Instantiate {
            path: version.path.clone(),
            reason,
        })
    }

    /// Run `init` on a fresh instance; on failure undo what it registered.
    pub(crate) fn init(
        &self,
        imp: &mut Implementation,
        name: &str,
        config: &[u8],
    ) -> Result<(), CommandError> {
        let failed = match imp.init(config) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => format!("returned an error: {e}"),
            Err(f) => f.to_string(),
        };
        self.bus.forget(name);
        Err(CommandError::InitFailed {
            name: name.to_string(),
            reason: failed,
        })
    }

    /// The thesis' addition protocol: upload, instantiate, init, register,
    /// enable. A compile that takes a while is reported to `origin` as it
    /// goes.
    pub(super) fn load(
        &self,
        name: &str,
        path: &std::path::Path,
        options: &LoadOptions,
        origin: &str,
    ) -> Result<String, CommandError> {
        if self.modules.contains(name) {
            return Err(CommandError::AlreadyLoaded(name.to_string()));
        }
        if let Some(host) = self.bus.served_elsewhere(name) {
            let name = name.to_string();
            return Err(CommandError::ServedElsewhere { name, host });
        }
        let file = self.repo.read_checked(path, options.pin.as_deref())?;
        let what = format!("compiling {}", path.display());
        let version = self.timed(origin, &what, || self.repo.version_of(file))?;
        let grants: Arc<[Grant]> = Arc::from(options.grants.as_slice());
        let limits = self.limits_for(options);
        let mut imp = self.instantiate(&version, name, &grants, &limits)?;
        self.init(&mut imp, name, &options.config)?;
        let label = imp.label().to_string();
        let capacity = options.capacity.unwrap_or(self.mailbox_capacity);
        let (proxy, ends) = ModuleProxy::new(
            name,
            (version.clone(), &imp),
            capacity,
            grants,
            limits,
            &self.env,
        );
        // Journaled before the name can be reached: what is sent to it
        // comes after.
        self.bus.record(|| Op::Load {
            module: Arc::from(name),
            def: self.def_of(&version, options),
            failed: Vec::new(),
        });
        self.bus.record_setup(name);
        if !self.modules.register(proxy.clone()) {
            return Err(CommandError::AlreadyLoaded(name.to_string()));
        }
        self.bus.changed();
        let (started_tx, started) = bounded(1);
        let start = Start::Now(started_tx);
        proxy.spawn(
            Box::new(imp),
            &options.config,
            self.env.clone(),
            ends,
            start,
        );
        // `enable` has run when the command returns. One that trapped, on a
        // module that could not be rebuilt, refuses the Load: the name is
        // taken back.
        if let Ok(Err(e)) = started.recv_timeout(self.call_deadline + Duration::from_secs(1)) {
            let _ = self.unload(name);
            return Err(CommandError::InitFailed {
                name: name.to_string(),
                reason: e,
            });
        }
        Ok(format!(
            "loaded {name} v{label} from {} ({})",
            path.display(),
            version.short_digest()
        ))
    }

    /// The removal protocol: unregister (later sends fail), disable, drain
    /// everything already accepted, stop.
    pub(super) fn unload(&self, name: &str) -> Result<String, CommandError> {
        let proxy = self
            .modules
            .unregister(name)
            .ok_or_else(|| CommandError::UnknownModule(name.to_string()))?;
        let label = proxy.version().label().to_string();
        let queued = proxy.depth();
        proxy.close();
        self.bus.timers.cancel_all(name);
        let (tx, rx) = bounded(1);
        let stopped = !proxy.control(Control::Stop(tx))
            || !matches!(
                rx.recv_timeout(self.drain_deadline),
                Err(crossbeam_channel::RecvTimeoutError::Timeout)
            );
        if !stopped {
            // Blocked where no deadline reaches (a guest in a blocking WASI
            // call): its thread is left behind, the name is already gone.
            self.bus.forget(name);
            self.bus.record(|| Op::Unload {
                module: Arc::from(name),
            });
            let left = proxy.depth();
            let line = format!(
                "unloaded {name} v{label}: it did not stop within the drain deadline of {:?} (busy in a call); {left} queued message(s) were not served and its thread is left behind",
                self.drain_deadline
            );
            proxy
                .gate()
                .log(&label, crate::bindings::Level::Error, line.clone());
            return Ok(line);
        }
        proxy.join();
        // After the drain: a drained message may have subscribed again.
        self.bus.forget(name);
        self.bus.record(|| Op::Unload {
            module: Arc::from(name),
        });
        self.release_unused();
        Ok(format!(
            "unloaded {name} v{label} after draining {queued} message(s)"
        ))
    }

    /// Stop every module between two messages, leaving what is queued
    /// (in the state directory), timers first so that no tick is queued
    /// meanwhile. Waits up to the drain deadline for each.
    pub(crate) fn park_all(&self) {
        let all = self.modules.all();
        for p in &all {
            self.bus.timers.cancel_all(p.name());
        }
        let mut waits = Vec::new();
        for p in &all {
            let (tx, rx) = bounded(1);
            if p.control(Control::Park(tx)) {
                waits.push((p.clone(), rx));
            }
        }
        let until = std::time::Instant::now() + self.drain_deadline;
        for (p, rx) in waits {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if rx.recv_timeout(left).is_ok() {
                p.join();
            }
        }
    }

    pub(super) fn enable(&self, name: &str, on: bool) -> Result<String, CommandError> {
        let proxy = self
            .modules
            .get(name)
            .ok_or_else(|| CommandError::UnknownModule(name.to_string()))?;
        let (tx, rx) = bounded(1);
        let sent = proxy.control(if on {
            Control::Enable(tx)
        } else {
            Control::Disable(tx)
        });
        let verb = if on { "enable" } else { "disable" };
        let reply = if sent {
            rx.recv_timeout(self.call_deadline + Duration::from_secs(1))
                .unwrap_or_else(|_| Err("the module did not answer".into()))
        } else {
            Err("the module has stopped".into())
        };
        reply.map_err(|e| CommandError::BadState {
            name: name.to_string(),
            state: proxy.state().to_string(),
            hint: format!("cannot {verb}: {e}"),
        })?;
        self.bus.record(|| Op::Enable {
            module: Arc::from(name),
            on,
        });
        Ok(if on {
            format!(
                "enabled {name}: {} queued message(s) now served",
                proxy.depth()
            )
        } else {
            format!("disabled {name}: its mailbox is held")
        })
    }

    /// `SetProbation`.
    /// Journal an administrator's setting.
    pub(super) fn setting(&self, name: &str, value: u64) {
        self.bus.record(|| Op::Setting {
            name: name.to_string(),
            value,
        });
    }

    pub(super) fn set_probation(&self, window: Duration, max_error_pct: u32) -> String {
        self.env.settings.set_probation(window, max_error_pct);
        self.setting("probation_ms", window.as_millis() as u64);
        self.setting("max_error_pct", u64::from(max_error_pct));
        if window.is_zero() {
            "probation is off: a fault after a commit is recovered in place".to_string()
        } else {
            format!(
                "for {window:?} after each commit, a trap or more than {max_error_pct}% failing messages in a new version rolls its group back"
            )
        }
    }

    /// `SetCheckpoint`.
    pub(super) fn set_checkpoint(&self, d: Duration) -> String {
        self.env.settings.set_checkpoint(d);
        self.setting("checkpoint_ms", d.as_millis() as u64);
        if d.is_zero() {
            format!("recovery points are renewed at commits and every {CHECKPOINT_EVERY} messages")
        } else {
            format!(
                "recovery points are renewed every {d:?} (and every {CHECKPOINT_EVERY} messages)"
            )
        }
    }

    /// Forget versions no module runs (the thesis' cleaning phase).
    pub(crate) fn release_unused(&self) {
        let running = self
            .modules
            .all()
            .iter()
            .map(|p| p.version().digest.clone())
            .collect();
        for d in self.repo.release_unused(&running) {
            tracing::debug!(digest = %d, "released");
        }
    }
}
