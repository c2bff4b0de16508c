//! The data each module's `Store` holds: its WASI context (nothing granted
//! by default), its limits, and the narrow view of the host its imports
//! delegate to ([`HostView`]) beside the event sink its logs go to.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::HostView;
use super::logs::LogGate;
use super::sandbox::{self, Grant};
use super::stdio::GuestOutput;
use crate::bindings::Level;

/// Store data of one implementation.
pub struct ModuleCtx {
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    /// When the current guest call must end: blocking WASI waits end
    /// then too (`super::deadline`).
    pub(crate) call_ends: std::time::Instant,
    /// Memory and table limits for this store.
    pub(crate) limits: StoreLimits,
    /// The module name this implementation serves under.
    pub(crate) name: Arc<str>,
    /// `info().version`, set once known; shared with the stdout/stderr
    /// streams, which are made before it is.
    pub(crate) label: Arc<OnceLock<Arc<str>>>,
    /// Protocol versions this implementation may send.
    pub(crate) speaks: Arc<[u32]>,
    /// The host behind the imports: send, publish, subscriptions, timers.
    pub(crate) host: Arc<dyn HostView>,
    /// Where `log` lines go, cut and rate-limited.
    pub(crate) gate: Arc<LogGate>,
    /// Which kinds of socket it may create (and where a refusal goes).
    pub(crate) sockets_granted: super::sockets::SocketGrants,
    /// Set while `info` runs: the guest may not act on the host then
    /// (a version's declaration has no effects).
    pub(crate) declaring: bool,
    /// Outbound effects (send, publish, subscriptions, timers, log lines)
    /// the current call has made, counted whether or not they were
    /// suppressed.
    pub(crate) effects: u64,
    /// How many of the next outbound effects to drop because they already
    /// happened: all of them while a recovery replays the message log, the
    /// first few when a call that trapped part-way is made again.
    pub(crate) suppress: u64,
    /// Set while a recovery replays: guest stdout/stderr and socket sends
    /// are dropped too (they cannot be counted one by one).
    pub(crate) replaying: Arc<AtomicBool>,
    /// Fallible effects of the current call that failed: (index, error).
    pub(crate) failures: Failures,
    /// While effects are suppressed: the failures they had the first time,
    /// so that a replayed call sees the same results.
    pub(crate) script: Failures,
    /// The `service-batch` call under way, if one is.
    pub(crate) progress: super::batch::Progress,
    /// While a shadow runs beside this version (or this is the shadow):
    /// every outbound effect of the current call, written down.
    pub(crate) tap: Option<Vec<super::tap::Effect>>,
}

/// Effects of one call that returned an error, by their index among the
/// call's effects. Almost always empty (and then allocation-free).
pub type Failures = Vec<(u64, String)>;

impl ModuleCtx {
    /// A context with nothing granted but `grants`: no files, no
    /// environment, no inherited stdio, and only the granted addresses
    /// (see [`super::sandbox`]). Fails if a granted directory cannot be
    /// opened.
    pub(crate) fn new(
        name: Arc<str>,
        host: Arc<dyn HostView>,
        gate: Arc<LogGate>,
        (memory_limit, resources): (usize, usize),
        grants: &Arc<[Grant]>,
    ) -> Result<Self, String> {
        let mut b = WasiCtx::builder();
        let label: Arc<OnceLock<Arc<str>>> = Arc::default();
        let replaying = Arc::new(AtomicBool::new(false));
        b.stdout(GuestOutput::new(
            label.clone(),
            Level::Info,
            gate.clone(),
            replaying.clone(),
        ));
        b.stderr(GuestOutput::new(
            label.clone(),
            Level::Warn,
            gate.clone(),
            replaying.clone(),
        ));
        sandbox::apply(
            &mut b,
            grants,
            sandbox::Reporter {
                label: label.clone(),
                gate: gate.clone(),
            },
            replaying.clone(),
        )?;
        let wasi = b.build();
        // Every WASI resource (stream, pollable, file, socket) is an entry:
        // a guest holding this many gets an error for the next one, so it
        // cannot exhaust the host's file descriptors.
        let mut table = ResourceTable::new();
        table.set_max_capacity(resources);
        let sockets_granted = super::sockets::SocketGrants {
            udp: grants.iter().any(|g| matches!(g, Grant::Udp(_))),
            tcp: grants.iter().any(|g| matches!(g, Grant::Tcp(_))),
            gate: gate.clone(),
            label: label.clone(),
        };
        Ok(ModuleCtx {
            wasi,
            table,
            sockets_granted,
            call_ends: std::time::Instant::now(),
            limits: wasmtime::StoreLimitsBuilder::new()
                .memory_size(memory_limit)
                .instances(16)
                .build(),
            name,
            label,
            speaks: Arc::from(Vec::new()),
            host,
            gate,
            declaring: false,
            effects: 0,
            suppress: 0,
            replaying,
            failures: Vec::new(),
            script: Vec::new(),
            progress: Default::default(),
            tap: None,
        })
    }
}

impl ModuleCtx {
    /// `info().version`, or `?` before it is known.
    pub(crate) fn version(&self) -> &str {
        self.label.get().map(|v| &**v).unwrap_or("?")
    }

    /// Count one outbound effect that can fail: `None` to perform it (and
    /// then [`ModuleCtx::record`] its result), or the result it had when it
    /// happened the first time.
    pub(crate) fn fallible(&mut self) -> Option<Result<(), String>> {
        let index = self.effects;
        if self.effect() {
            return None;
        }
        match self.script.iter().find(|(i, _)| *i == index) {
            Some((_, e)) => {
                let e = e.clone();
                self.failures.push((index, e.clone()));
                Some(Err(e))
            }
            None => Some(Ok(())),
        }
    }

    /// Write `effect` down if effects are being tapped.
    pub(crate) fn tapped(&mut self, effect: impl FnOnce() -> super::tap::Effect) {
        if let Some(t) = &mut self.tap {
            t.push(effect());
        }
    }

    /// Keep the result of the fallible effect just performed.
    pub(crate) fn record(&mut self, r: Result<(), String>) -> Result<(), String> {
        if let Err(e) = &r {
            self.failures.push((self.effects - 1, e.clone()));
        }
        r
    }

    /// Count one outbound effect; false if it must be dropped because it
    /// already happened.
    pub(crate) fn effect(&mut self) -> bool {
        self.effects += 1;
        if self.suppress > 0 {
            self.suppress -= 1;
            false
        } else {
            true
        }
    }
}

impl WasiView for ModuleCtx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
