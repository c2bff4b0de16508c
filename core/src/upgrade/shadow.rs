//! `Shadow`, `Promote` and `Unshadow` on the coordinator's side. A
//! shadow is prepared like a `Replace` target (read, verified, compiled,
//! instantiated, scope-checked) before the module is disturbed; `Promote`
//! is a transaction like `Replace`, whose candidates are the shadows, so
//! it has the same phases, bound, report, history and probation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::coordinator::Ask;
use super::transaction::Voting;
use super::{AdminState, Core};
use crate::command::{GroupKind, LoadOptions, SHADOW_QUEUE, ShadowEnd, ShadowSpec, Target};
use crate::error::CommandError;
use crate::proxy::{Control, ModuleProxy, ShadowPlan, ShadowProgress};
use crate::report::TransactionReport;
use crate::store::Op;

impl Core {
    /// `Shadow`: prepare the new version and start it beside the
    /// module's. The shadow's progress, and a line saying what happened.
    pub(crate) fn shadow(
        &self,
        admin: &AdminState,
        spec: &ShadowSpec,
        origin: &str,
    ) -> Result<(Arc<ShadowProgress>, String), CommandError> {
        let target = Target {
            name: spec.name.clone(),
            path: spec.path.clone(),
            options: LoadOptions {
                pin: spec.pin.clone(),
                ..Default::default()
            },
        };
        let mut prepared = self.prepare(GroupKind::Replace, &[target], origin, true)?;
        let p = prepared.pop().expect("one target");
        let proxy = p.old.expect("a Replace target is loaded");
        let plan = ShadowPlan {
            queue: spec.queue.unwrap_or(SHADOW_QUEUE),
            except: spec.except.clone(),
        };
        let wait = admin.bound + self.call_deadline;
        let progress = proxy
            .start_shadow(p.imp, plan.clone(), wait)
            .map_err(|why| CommandError::Shadow {
                name: spec.name.clone(),
                why: format!("cannot start a shadow: {why}"),
            })?;
        let mut line = format!(
            "shadow v{} of {} started beside v{}: {} bytes of state handed over in a {} µs pause; every message it serves is mirrored (queue bound {})",
            progress.version,
            spec.name,
            progress.beside,
            progress.state_bytes,
            progress.handover_us,
            plan.queue
        );
        if !plan.except.is_empty() {
            line += &format!(", effects of `{}` not compared", plan.except.join("`, `"));
        }
        if let Some(d) = spec.run_for {
            let then = match spec.then {
                ShadowEnd::Promote => "promoted",
                ShadowEnd::Drop => "dropped",
            };
            line += &format!("; after {d:?} it is {then}");
        }
        Ok((progress, line))
    }

    /// `Unshadow`: drop the module's shadow.
    pub(crate) fn unshadow(&self, name: &str, why: &str) -> Result<String, CommandError> {
        let proxy = self
            .modules
            .get(name)
            .ok_or_else(|| CommandError::UnknownModule(name.to_string()))?;
        let version = proxy.shadow().map(|p| p.version.clone());
        match version {
            Some(v) if proxy.drop_shadow(why) => Ok(format!("shadow v{v} of {name} dropped")),
            _ => Err(CommandError::Shadow {
                name: name.to_string(),
                why: "no shadow runs beside it".into(),
            }),
        }
    }

    /// `Promote`: every named module's shadow takes over, or none does.
    pub(crate) fn promote(
        &self,
        admin: &AdminState,
        names: &[String],
        text: &str,
        origin: &str,
    ) -> TransactionReport {
        let started = Instant::now();
        let id = self.next_txn();
        let mut report = self.new_report(
            id,
            text.to_string(),
            origin,
            names.iter().cloned(),
            admin.mode.as_str(),
        );
        match self.promotable(names) {
            Err(e) => report.reason = Some(e.to_string()),
            Ok(shadowed) => {
                for (m, (_, s)) in report.modules.iter_mut().zip(&shadowed) {
                    m.to = Some(s.version.clone());
                }
                self.bus.record(|| Op::TxnBegin {
                    txn: id,
                    line: text.to_string(),
                    targets: shadowed
                        .iter()
                        .map(|(p, s)| (p.name().to_string(), s.candidate.digest.clone()))
                        .collect(),
                });
                report.prepare_us = started.elapsed().as_micros() as u64;
                let replacing = names.to_vec();
                let (txn, rx) = self.new_txn(admin, id, text, replacing, true);
                let asks = shadowed
                    .into_iter()
                    .map(|(proxy, _)| Ask {
                        proxy,
                        control: Control::Promote { txn: txn.clone() },
                    })
                    .collect();
                let voting = Voting {
                    txn,
                    rx,
                    asks,
                    fresh: Vec::new(),
                    loads: Vec::new(),
                };
                self.vote_and_complete(admin, voting, &mut report, origin, &mut None);
                self.bus.record(|| Op::TxnEnd { txn: id });
            }
        }
        report.total_us = started.elapsed().as_micros() as u64;
        self.record_transaction(&report);
        report
    }

    /// The modules of a `Promote`, each with its running shadow; refused
    /// if one is not loaded and serving, has no shadow, or its shadow's
    /// version would break a protocol edge now.
    fn promotable(
        &self,
        names: &[String],
    ) -> Result<Vec<(ModuleProxy, Arc<ShadowProgress>)>, CommandError> {
        let targets: Vec<Target> = names
            .iter()
            .map(|n| Target {
                name: n.clone(),
                path: Default::default(),
                options: Default::default(),
            })
            .collect();
        let olds = self.validate(GroupKind::Replace, &targets)?;
        let mut out = Vec::new();
        for (name, old) in names.iter().zip(olds) {
            let proxy = old.expect("a Replace target is loaded");
            let why = match proxy.shadow() {
                Some(s) if s.running() => {
                    out.push((proxy, s));
                    continue;
                }
                Some(s) => format!(
                    "no shadow runs beside it (the last one, v{}, {})",
                    s.version,
                    s.ended().unwrap_or_default()
                ),
                None => "no shadow runs beside it (start one with Shadow)".into(),
            };
            return Err(CommandError::Shadow {
                name: name.clone(),
                why: format!("cannot be promoted: {why}"),
            });
        }
        let after: Vec<(&str, &Arc<crate::repo::Version>)> =
            out.iter().map(|(p, s)| (p.name(), &s.candidate)).collect();
        self.check_scope(&after)?;
        Ok(out)
    }
}

/// After `Shadow ... for <after> then <then>`: when the time is up (and
/// the shadow started now still runs), promote or drop it, in turn with
/// every other command.
pub(crate) fn timed(core: std::sync::Weak<Core>, name: String, after: Duration, then: ShadowEnd) {
    let Some(progress) = core.upgrade().and_then(|c| c.modules.get(&name)?.shadow()) else {
        return;
    };
    let spawned = std::thread::Builder::new()
        .name(format!("shadow-timer-{name}"))
        .spawn(move || {
            let until = Instant::now() + after;
            while Instant::now() < until && progress.running() {
                std::thread::sleep(Duration::from_millis(20).min(after));
            }
            let Some(core) = core.upgrade() else { return };
            let same = core
                .modules
                .get(&name)
                .and_then(|p| p.shadow())
                .is_some_and(|p| Arc::ptr_eq(&p, &progress) && p.running());
            if !same {
                return;
            }
            let origin = "shadow timer";
            match then {
                ShadowEnd::Promote => {
                    let text = format!("Promote {name}");
                    let _ = core.serialized(&text, origin, false, |admin| {
                        Ok::<_, CommandError>(core.promote(
                            admin,
                            std::slice::from_ref(&name),
                            &text,
                            origin,
                        ))
                    });
                }
                ShadowEnd::Drop => {
                    let text = format!("Unshadow {name}");
                    let why = format!("its run of {after:?} ended (then drop)");
                    let _ = core.serialized(&text, origin, false, |_| core.unshadow(&name, &why));
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!("no timer thread for a timed shadow: {e}");
    }
}
