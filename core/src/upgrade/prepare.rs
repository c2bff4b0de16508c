//! Validate and prepare (architecture.md §4): every check that can
//! refuse a transaction, and every slow step — reading, verifying,
//! compiling, instantiating, `init` of new modules — before any module is
//! disturbed. A refusal here touches nothing (I6).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::Core;
use super::scope::{self, Side};
use crate::bus::ModuleSide;
use crate::command::{GroupKind, LoadOptions, Target};
use crate::error::CommandError;
use crate::events::ModuleState;
use crate::guest::Grant;
use crate::instance::Implementation;
use crate::proxy::ModuleProxy;
use crate::repo::Version;

/// A target after preparation.
pub(super) struct Prepared {
    pub name: String,
    /// Options of a module being loaded.
    pub options: LoadOptions,
    /// The running proxy, for a replacement; none for a load.
    pub old: Option<ModuleProxy>,
    pub version: Arc<Version>,
    pub imp: Box<Implementation>,
}

/// Another host's module's protocol declarations, for the scope check.
fn remote_side(m: &ModuleSide) -> Side {
    Side {
        version: m.version.clone(),
        speaks: m.speaks.clone(),
        accepts: m.accepts.clone(),
    }
}

/// A version's protocol declarations, for the scope check.
fn side(info: &crate::bindings::ModuleInfo) -> Side {
    Side {
        version: info.version.clone(),
        speaks: info.speaks.clone(),
        accepts: info.accepts.clone(),
    }
}

impl Core {
    /// Validate and prepare: every check that can refuse, and every slow
    /// step (reading, compiling, instantiating, `init` of new modules),
    /// before any module is disturbed. Progress goes to `origin`.
    pub(super) fn prepare(
        &self,
        kind: GroupKind,
        targets: &[Target],
        origin: &str,
        scoped: bool,
    ) -> Result<Vec<Prepared>, CommandError> {
        // The command's own checks first: a name that is not loaded is
        // refused before any file is read or compiled.
        let olds = self.validate(kind, targets)?;
        let files: Vec<String> = targets
            .iter()
            .map(|t| t.path.display().to_string())
            .collect();
        self.progress(
            origin,
            format!(
                "preparing: reading, compiling and instantiating {}",
                files.join(", ")
            ),
        );

        // Read every file and check its pin and signature before compiling
        // any, so that one bad file refuses the group with nothing compiled.
        let mut files = Vec::new();
        for t in targets {
            files.push(self.repo.read_checked(&t.path, t.options.pin.as_deref())?);
        }
        // Compile (or find) every version first: the slow part.
        let mut versions = Vec::new();
        for (f, t) in files.into_iter().zip(targets) {
            let what = format!("compiling {}", t.path.display());
            versions.push(self.timed(origin, &what, || self.repo.version_of(f))?);
        }

        // Instantiate and make the first call (`info`) now, so the pause
        // never pays for it.
        let mut prepared = Vec::new();
        for ((t, old), version) in targets.iter().zip(olds).zip(versions) {
            let (grants, limits): (Arc<[Grant]>, _) = match &old {
                Some(p) => (p.grants(), p.limits().clone()),
                None => (
                    Arc::from(t.options.grants.as_slice()),
                    self.limits_for(&t.options),
                ),
            };
            let imp = self.instantiate(&version, &t.name, &grants, &limits)?;
            prepared.push(Prepared {
                name: t.name.clone(),
                options: t.options.clone(),
                old,
                version,
                imp: Box::new(imp),
            });
        }

        let after: Vec<(&str, &Arc<Version>)> = prepared
            .iter()
            .map(|p| (p.name.as_str(), &p.version))
            .collect();
        if scoped {
            self.check_scope(&after)?;
        }

        self.init_new(&mut prepared)?;
        Ok(prepared)
    }

    /// The checks on the command itself: no name twice, `Replace` targets
    /// loaded and serving, `Syn_Load` targets not loaded, no options for a
    /// module that is loaded. The running proxies, by target.
    pub(super) fn validate(
        &self,
        kind: GroupKind,
        targets: &[Target],
    ) -> Result<Vec<Option<ModuleProxy>>, CommandError> {
        let keyword = kind.keyword(targets.len());
        let mut seen = BTreeSet::new();
        let mut olds = Vec::new();
        for t in targets {
            if !seen.insert(t.name.clone()) {
                return Err(CommandError::DuplicateTarget(t.name.clone()));
            }
            let old = self.modules.get(&t.name);
            match (kind, &old) {
                (GroupKind::Replace, None) => {
                    return Err(CommandError::Parse(format!(
                        "{keyword}: no module named `{}` is loaded (use Load, or Syn_Upgrade to load and replace together)",
                        t.name
                    )));
                }
                (GroupKind::Load, Some(_)) => {
                    return Err(CommandError::AlreadyLoaded(t.name.clone()));
                }
                (_, None) => {
                    if let Some(host) = self.bus.served_elsewhere(&t.name) {
                        let name = t.name.clone();
                        return Err(CommandError::ServedElsewhere { name, host });
                    }
                }
                _ => {}
            }
            let kept = LoadOptions {
                pin: None,
                ..t.options.clone()
            };
            if old.is_some() && !kept.is_empty() {
                return Err(CommandError::Parse(format!(
                    "{keyword}: `{}` is loaded: its config, capacity and grants are kept by an upgrade (only `pin` applies; Unload and Load to change them)",
                    t.name
                )));
            }
            if let Some(p) = &old {
                let state = p.state();
                // A module held after a crash loop is upgraded to be fixed.
                if !matches!(state, ModuleState::Serving | ModuleState::Held) {
                    return Err(CommandError::BadState {
                        name: t.name.clone(),
                        state: state.to_string(),
                        hint: match state {
                            ModuleState::Disabled => "Enable it before upgrading it".into(),
                            _ => "only a serving module can be upgraded".into(),
                        },
                    });
                }
            }
            olds.push(old);
        }
        Ok(olds)
    }

    /// New modules: `init` now; a failure refuses the whole group and
    /// undoes what the others' `init` set up.
    fn init_new(&self, prepared: &mut [Prepared]) -> Result<(), CommandError> {
        for i in 0..prepared.len() {
            if prepared[i].old.is_none() {
                let name = prepared[i].name.clone();
                let config = prepared[i].options.config.clone();
                if let Err(e) = self.init(&mut prepared[i].imp, &name, &config) {
                    for p in &prepared[..i] {
                        if p.old.is_none() {
                            self.bus.forget(&p.name);
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// The protocol-edge check of thesis 3.5 over the system as it would be.
    pub(super) fn check_scope(
        &self,
        prepared: &[(&str, &Arc<Version>)],
    ) -> Result<(), CommandError> {
        self.check_scope_with(prepared, &[])
    }

    /// [`Core::check_scope`] over the lattice: the modules other hosts
    /// serve, as they announced them, and `theirs`, the new versions other
    /// hosts prepared for a group spanning hosts.
    pub(super) fn check_scope_with(
        &self,
        prepared: &[(&str, &Arc<Version>)],
        theirs: &[ModuleSide],
    ) -> Result<(), CommandError> {
        let mut after: BTreeMap<String, Side> = BTreeMap::new();
        let mut edges: BTreeSet<(String, String)> = BTreeSet::new();
        let elsewhere = self.bus.remote.get().map(|r| r.sides()).unwrap_or_default();
        for m in elsewhere.iter().chain(theirs) {
            after.insert(m.name.clone(), remote_side(m));
            for s in &m.senders {
                edges.insert((s.clone(), m.name.clone()));
            }
        }
        for p in self.modules.all() {
            if let Some(info) = p.version().info() {
                after.insert(p.name().to_string(), side(info));
            }
            for s in p.senders() {
                edges.insert((s, p.name().to_string()));
            }
        }
        for e in self.bus.pubsub.edges() {
            edges.insert(e);
        }
        let mut targets: BTreeSet<String> = theirs.iter().map(|m| m.name.clone()).collect();
        for (name, version) in prepared {
            if let Some(info) = version.info() {
                after.insert(name.to_string(), side(info));
            }
            targets.insert(name.to_string());
        }
        scope::check(&after, &edges, &targets).map_err(CommandError::Scope)
    }
}
