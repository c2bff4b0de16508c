//! One instance of a version: its own `Store`, its bindings, and guarded
//! calls into it. Every call runs under an epoch deadline; a trap or an
//! overrun becomes a [`GuestFault`], never a host panic, and the instance is
//! marked dead (a trapped instance cannot be entered again).

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Func, TypedFunc};
use wasmtime::{Store, UpdateDeadline};

use crate::bindings::{Message, ModuleImp, ModuleInfo};
use crate::guest::batch::Reported;
use crate::guest::{Failures, Grant, HostView, LogGate, ModuleCtx};
use crate::repo::Version;

/// How often the engine's epoch advances; call deadlines are counted in it.
pub const EPOCH_PERIOD: Duration = Duration::from_millis(10);

/// A guest call that trapped or overran its deadline.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{call} trapped: {reason}")]
pub struct GuestFault {
    /// The export that was called.
    pub call: &'static str,
    /// The trap or deadline, in one line.
    pub reason: String,
    /// It was interrupted at its deadline (rather than trapping).
    pub interrupted: bool,
}

/// A live instance of one version, owned by exactly one thread at a time.
pub struct Implementation {
    store: Store<ModuleCtx>,
    api: ModuleImp,
    /// `service-batch`, if the version exports it (type-checked once).
    batch: Option<Func>,
    version: Arc<Version>,
    /// The call deadline, in epoch ticks and as a duration (at most a
    /// year, so that an instant that far ahead can always be written).
    deadline_ticks: u64,
    call_deadline: Duration,
    dead: bool,
}

/// The longest call deadline kept as a duration.
const LONGEST_DEADLINE: Duration = Duration::from_secs(365 * 86_400);

/// Settings every new instance gets.
#[derive(Clone, Debug)]
pub struct InstanceLimits {
    /// Bytes of linear memory the instance may grow to.
    pub memory: usize,
    /// Epoch ticks a single call may run (see `Runtime`'s epoch period).
    pub deadline_ticks: u64,
    /// Longest `info().version` label, in bytes.
    pub label_bytes: usize,
    /// Most entries in `info().speaks` and `info().accepts`.
    pub protocols: usize,
    /// Most WASI resources (streams, files, sockets, ...) held at once.
    pub resources: usize,
}

/// Where an instance sits: the module it serves, the host view and event
/// sink its imports reach, its grants and limits. The same for every
/// version of a module.
#[derive(Clone)]
pub(crate) struct Seat {
    /// The module name.
    pub name: Arc<str>,
    /// What its imports reach.
    pub host: Arc<dyn HostView>,
    /// Where its log lines and sandbox reports go, cut and rate-limited.
    pub gate: Arc<LogGate>,
    /// Capabilities, kept across swaps.
    pub grants: Arc<[Grant]>,
    /// Memory limit and call deadline.
    pub limits: InstanceLimits,
}

impl Implementation {
    /// Instantiate `version` for module `seat.name` and ask it for its
    /// `info` (its first call, made here so that no later pause pays for it).
    pub(crate) fn instantiate(version: &Arc<Version>, seat: &Seat) -> Result<Self, String> {
        let engine = version.pre().engine();
        let limits = &seat.limits;
        let mut store = Store::new(
            engine,
            ModuleCtx::new(
                seat.name.clone(),
                seat.host.clone(),
                seat.gate.clone(),
                (limits.memory, limits.resources),
                &seat.grants,
            )?,
        );
        store.limiter(|ctx| &mut ctx.limits);
        store.set_epoch_deadline(limits.deadline_ticks);
        // Past the deadline a call is interrupted, unless it is a batch
        // that moved on to another message since: that one gets a deadline
        // of its own.
        let ticks = limits.deadline_ticks;
        store.epoch_deadline_callback(move |mut cx| {
            Ok(if cx.data_mut().progress.moved_on() {
                UpdateDeadline::Continue(ticks)
            } else {
                UpdateDeadline::Interrupt
            })
        });
        let instance = version
            .pre()
            .instance_pre()
            .instantiate(&mut store)
            .map_err(|e| one_line(&e))?;
        let api = version
            .exports()
            .load(&mut store, &instance)
            .map_err(|e| one_line(&e))?;
        let batch = match version.batch_export() {
            None => None,
            Some(at) => {
                let f = instance
                    .get_func(&mut store, at)
                    .ok_or("`service-batch` is not a function")?;
                f.typed::<(&[u8],), ()>(&store).map_err(|e| {
                    format!(
                        "`service-batch` is not `func(batch: list<u8>)` of world module-batch: {}",
                        one_line(&e)
                    )
                })?;
                Some(f)
            }
        };
        let mut imp = Implementation {
            store,
            api,
            batch,
            version: version.clone(),
            deadline_ticks: limits.deadline_ticks,
            call_deadline: EPOCH_PERIOD
                .saturating_mul(u32::try_from(limits.deadline_ticks).unwrap_or(u32::MAX))
                .min(LONGEST_DEADLINE),
            dead: false,
        };
        imp.store.data_mut().declaring = true;
        let info = imp.info().map_err(|f| f.to_string());
        imp.store.data_mut().declaring = false;
        let info = info?;
        check_info(&info, limits)?;
        version.set_info(info.clone());
        let ctx = imp.store.data_mut();
        let _ = ctx.label.set(Arc::from(info.version.as_str()));
        ctx.speaks = Arc::from(info.speaks.as_slice());
        Ok(imp)
    }

    /// The log gate this instance's lines go through (its module's).
    pub(crate) fn gate(&self) -> Arc<LogGate> {
        self.store.data().gate.clone()
    }

    /// The version this instance runs.
    pub fn version(&self) -> &Arc<Version> {
        &self.version
    }

    /// `info().version` of this instance.
    pub fn label(&self) -> &str {
        self.store.data().version()
    }

    /// Whether a call trapped: the instance must not be entered again.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Replay mode: every outbound effect of the calls that follow is
    /// dropped (it already happened), guest output and socket sends too.
    pub(crate) fn replaying(&mut self, on: bool) {
        let ctx = self.store.data_mut();
        ctx.suppress = if on { u64::MAX } else { 0 };
        if !on {
            ctx.script.clear();
        }
        ctx.replaying
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Drop the first `n` outbound effects of the next calls (a call that
    /// trapped after making them is being made again), giving back the
    /// results in `failures` where they failed the first time.
    pub(crate) fn skip_effects(&mut self, n: u64, failures: Failures) {
        let ctx = self.store.data_mut();
        ctx.suppress = n;
        ctx.script = failures;
    }

    /// While replaying: the results the next call's effects had the first
    /// time (only the failed ones).
    pub(crate) fn script(&mut self, failures: &Failures) {
        let ctx = self.store.data_mut();
        ctx.script.clone_from(failures);
    }

    /// The failed effects of the last call, taken.
    pub(crate) fn take_failures(&mut self) -> Failures {
        std::mem::take(&mut self.store.data_mut().failures)
    }

    /// Write down (`on`) or stop writing down the outbound effects of
    /// each call.
    pub(crate) fn tap(&mut self, on: bool) {
        let ctx = self.store.data_mut();
        ctx.tap = on.then(Vec::new);
    }

    /// The effects the last call made, if they are written down.
    pub(crate) fn take_tap(&mut self) -> Vec<crate::guest::tap::Effect> {
        match &mut self.store.data_mut().tap {
            Some(t) => std::mem::take(t),
            None => Vec::new(),
        }
    }

    /// Outbound effects the last call made (suppressed ones included).
    pub(crate) fn effects(&self) -> u64 {
        self.store.data().effects
    }

    fn guard<R>(
        &mut self,
        call: &'static str,
        f: impl FnOnce(&ModuleImp, &mut Store<ModuleCtx>) -> wasmtime::Result<R>,
    ) -> Result<R, GuestFault> {
        self.guard_until(call, None, f)
    }

    /// `f` under the call deadline, and ended at `by` if that comes first
    /// (a vote's bound). Both the epoch deadline (running wasm) and the
    /// store's `call_ends` (blocking WASI waits) are set from one clock read.
    fn guard_until<R>(
        &mut self,
        call: &'static str,
        by: Option<Instant>,
        f: impl FnOnce(&ModuleImp, &mut Store<ModuleCtx>) -> wasmtime::Result<R>,
    ) -> Result<R, GuestFault> {
        if self.dead {
            return Err(GuestFault {
                call,
                reason: "the instance trapped earlier and cannot be entered again".into(),
                interrupted: false,
            });
        }
        let now = Instant::now();
        let full = now + self.call_deadline;
        let (ticks, ends) = match by {
            Some(by) if by < full => {
                let left = by.saturating_duration_since(now);
                // Whole periods, rounded up, and one more: the next tick
                // may come at once, so the call is never cut before `by`.
                let ticks = left.as_nanos().div_ceil(EPOCH_PERIOD.as_nanos()) as u64 + 1;
                (ticks, by)
            }
            _ => (self.deadline_ticks, full),
        };
        self.store.set_epoch_deadline(ticks);
        let ctx = self.store.data_mut();
        ctx.call_ends = ends;
        ctx.effects = 0;
        if !ctx.failures.is_empty() {
            ctx.failures.clear();
        }
        if let Some(t) = &mut ctx.tap {
            t.clear();
        }
        match f(&self.api, &mut self.store) {
            Ok(r) => Ok(r),
            Err(e) => {
                self.dead = true;
                Err(GuestFault {
                    call,
                    reason: one_line(&e),
                    interrupted: matches!(
                        e.downcast_ref::<wasmtime::Trap>(),
                        Some(wasmtime::Trap::Interrupt)
                    ),
                })
            }
        }
    }

    /// `info`.
    pub fn info(&mut self) -> Result<ModuleInfo, GuestFault> {
        self.guard("info", |api, store| api.call_info(store))
    }

    /// `init(config)`.
    pub fn init(&mut self, config: &[u8]) -> Result<Result<(), String>, GuestFault> {
        self.guard("init", |api, store| api.call_init(store, config))
    }

    /// `service(msg)`.
    pub fn service(&mut self, msg: &Message) -> Result<Result<(), String>, GuestFault> {
        self.guard("service", |api, store| api.call_service(store, msg))
    }

    /// Whether the version takes messages in batches (`service-batch`).
    pub fn takes_batches(&self) -> bool {
        self.batch.is_some()
    }

    /// `service-batch(packed)`: what the guest reported served, in order,
    /// as (effects made by the end of that message, outcome), and how the
    /// call ended. A fault is the first unreported message's.
    pub fn service_batch(&mut self, packed: &[u8]) -> (Reported, Result<(), GuestFault>) {
        let Some(f) = self.batch else {
            return (Vec::new(), Ok(()));
        };
        // SAFETY: the type was checked against `f` when it was looked up.
        let typed = unsafe { TypedFunc::<(&[u8],), ()>::new_unchecked(f) };
        self.store.data_mut().progress.begin();
        // A fault is charged to one message's service, and named so.
        let r = self.guard("service", |_, store| typed.call(store, (packed,)));
        let progress = &mut self.store.data_mut().progress;
        progress.active = false;
        (std::mem::take(&mut progress.done), r)
    }

    /// `enable`.
    pub fn enable(&mut self) -> Result<(), GuestFault> {
        self.guard("enable", |api, store| api.call_enable(store))
    }

    /// `disable`.
    pub fn disable(&mut self) -> Result<(), GuestFault> {
        self.guard("disable", |api, store| api.call_disable(store))
    }

    /// `put-state`, ended at `by` if it runs that long (a vote's bound).
    pub fn put_state(
        &mut self,
        by: Option<Instant>,
    ) -> Result<Result<Vec<u8>, String>, GuestFault> {
        self.guard_until("put-state", by, |api, store| api.call_put_state(store))
    }

    /// `get-state(state)`, ended at `by` if it runs that long.
    pub fn get_state(
        &mut self,
        state: &[u8],
        by: Option<Instant>,
    ) -> Result<Result<(), String>, GuestFault> {
        self.guard_until("get-state", by, |api, store| {
            api.call_get_state(store, state)
        })
    }
}

/// Refuse a declaration over the limits: a long label or protocol lists
/// would make every report and every scope check pay for them.
fn check_info(info: &ModuleInfo, limits: &InstanceLimits) -> Result<(), String> {
    if info.version.len() > limits.label_bytes {
        return Err(format!(
            "info() declares a version label of {} bytes; the most is {} (--max-label)",
            info.version.len(),
            limits.label_bytes
        ));
    }
    for (what, list) in [("speaks", &info.speaks), ("accepts", &info.accepts)] {
        if list.len() > limits.protocols {
            return Err(format!(
                "info() declares {} protocol versions in `{what}`; the most is {} (--max-protocols)",
                list.len(),
                limits.protocols
            ));
        }
    }
    Ok(())
}

/// A wasmtime error in one line: the trap or root cause, without the wasm
/// backtrace.
fn one_line(e: &wasmtime::Error) -> String {
    if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        return match trap {
            wasmtime::Trap::Interrupt => "call overran its deadline (interrupted)".to_string(),
            other => other.to_string(),
        };
    }
    let root = e.root_cause().to_string();
    root.lines().next().unwrap_or("unknown error").to_string()
}
