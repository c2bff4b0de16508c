//! Inspections as data: `Status`, `Versions` and `Poison`. The operator
//! layer renders them as text or JSON; the core formats nothing for them.

use std::sync::Arc;
use std::time::Duration;

use super::{AdminState, Core};
use crate::command::Mode;
use crate::error::CommandError;
use crate::limits::Limits;
use crate::proxy::{Poisoned, ProxyStatus};
use crate::repo::Version;

/// What `Status` shows.
#[derive(Clone, Debug)]
pub struct StatusReport {
    /// Every module, by name.
    pub modules: Vec<ProxyStatus>,
    /// The quiescence bound (`SetTimer`).
    pub bound: Duration,
    /// How votes are collected (`SetMode`).
    pub mode: Mode,
    /// The probation window (zero: off) and its error threshold in percent.
    pub probation: (Duration, u32),
    /// How often recovery points are renewed.
    pub checkpoint: Duration,
    /// Bytes queued in every mailbox together, and the host's budget.
    pub queued_bytes: (usize, usize),
    /// Messages refused so far for a limit (size, bytes, capacity).
    pub refused: usize,
    /// The limits in force.
    pub limits: Arc<Limits>,
    /// The lattice, if the host joined one: every host and its modules.
    pub lattice: Option<Box<crate::bus::LatticeView>>,
}

/// One version in the repository, and the modules that run it.
#[derive(Clone, Debug)]
pub struct VersionRow {
    /// The version.
    pub version: Arc<Version>,
    /// Names of the modules that run it.
    pub run_by: Vec<String>,
}

/// What `Versions` shows.
#[derive(Clone, Debug)]
pub struct VersionsReport {
    /// Every version kept.
    pub versions: Vec<VersionRow>,
    /// How many keys signatures are checked against (0: not checked).
    pub trusted_keys: usize,
}

/// What `Poison NAME` shows.
#[derive(Clone, Debug)]
pub struct PoisonList {
    /// The module.
    pub module: String,
    /// Its poison messages, oldest first.
    pub messages: Vec<Poisoned>,
}

impl Core {
    pub(super) fn status_report(&self, admin: &AdminState) -> StatusReport {
        let bus = &self.bus;
        StatusReport {
            modules: self
                .modules
                .all()
                .iter()
                .map(|p| {
                    let mut s = p.status();
                    s.timers = bus.timers.of(&s.name).len();
                    s.subscriptions = bus.pubsub.held(&s.name);
                    s
                })
                .collect(),
            queued_bytes: (bus.budget.used(), bus.budget.max()),
            refused: bus.refused.load(std::sync::atomic::Ordering::Relaxed),
            limits: bus.limits.clone(),
            bound: admin.bound,
            mode: admin.mode,
            probation: self.env.settings.probation(),
            checkpoint: Duration::from_nanos(self.env.settings.checkpoint_ns()),
            lattice: bus.remote.get().map(|r| Box::new(r.view())),
        }
    }

    pub(super) fn versions_report(&self) -> VersionsReport {
        self.release_unused();
        let modules = self.modules.all();
        let versions = self
            .repo
            .all()
            .into_iter()
            .map(|v| VersionRow {
                run_by: modules
                    .iter()
                    .filter(|p| p.version().digest == v.digest)
                    .map(|p| p.name().to_string())
                    .collect(),
                version: v,
            })
            .collect();
        VersionsReport {
            versions,
            trusted_keys: self.repo.trusted_keys().len(),
        }
    }

    pub(super) fn poison(&self, name: &str) -> Result<PoisonList, CommandError> {
        let proxy = self
            .modules
            .get(name)
            .ok_or_else(|| CommandError::UnknownModule(name.to_string()))?;
        Ok(PoisonList {
            module: name.to_string(),
            messages: proxy.poison(),
        })
    }
}
