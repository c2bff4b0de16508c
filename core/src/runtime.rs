//! The runtime: owns the engine, the repository, the bus and the module
//! table, runs commands one at a time (the command serializer), and shuts
//! everything down gracefully. Folders below: `lifecycle.rs` (Load,
//! Unload, Enable, Disable), `inspect.rs` (Status, Versions, History,
//! Poison as data), `state_check.rs`.

mod inspect;
mod lifecycle;
mod moving;
mod restore;
mod state_check;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, unbounded};

use crate::bus::{Bus, SendError};
use crate::command::{Command, Mode};
use crate::error::CommandError;
use crate::events::{Event, EventBus};
use crate::history::{CommandRecord, History};
use crate::instance::InstanceLimits;
use crate::limits::Limits;
use crate::proxy::{Env, ModuleProxy, Modules, ProxyStatus, Reaper, Settings};
use crate::repo::Repository;
use crate::repo::signing::PublicKey;
use crate::report::TransactionReport;
use crate::store::{StateDir, SyncPolicy};
use crate::txn::RollbackRequest;

pub(crate) use crate::upgrade::{AdminState, Core, Recorded};
pub use inspect::{PoisonList, StatusReport, VersionRow, VersionsReport};
pub use restore::RestartSummary;

pub use crate::instance::EPOCH_PERIOD;

/// Settings of a new runtime.
#[derive(Clone, Debug)]
pub struct RuntimeBuilder {
    mailbox_capacity: usize,
    memory_limit: usize,
    call_deadline: Duration,
    drain_deadline: Duration,
    quiescence_bound: Duration,
    mode: Mode,
    epoch_deadlines: bool,
    pooled: Option<u32>,
    max_state_bytes: usize,
    trusted_keys: Vec<PublicKey>,
    limits: Limits,
    state_dir: Option<PathBuf>,
    sync: SyncPolicy,
    all_or_nothing: bool,
    compile_cache: Option<PathBuf>,
    fetcher: Option<Arc<dyn crate::repo::Fetcher>>,
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder {
            mailbox_capacity: 100_000,
            memory_limit: 64 << 20,
            call_deadline: Duration::from_secs(5),
            drain_deadline: Duration::from_secs(10),
            quiescence_bound: Duration::from_secs(10),
            mode: Mode::Concurrent,
            epoch_deadlines: true,
            pooled: None,
            max_state_bytes: 64 << 20,
            trusted_keys: Vec::new(),
            limits: Limits::default(),
            compile_cache: None,
            fetcher: None,
            state_dir: None,
            sync: SyncPolicy::DEFAULT,
            all_or_nothing: false,
        }
    }
}

impl RuntimeBuilder {
    /// Default mailbox capacity of new modules (default 100 000).
    pub fn mailbox_capacity(mut self, n: usize) -> Self {
        self.mailbox_capacity = n.max(1);
        self
    }
    /// Linear-memory limit of each instance (default 64 MiB).
    pub fn memory_limit(mut self, bytes: usize) -> Self {
        self.memory_limit = bytes;
        self
    }
    /// Longest a single guest call may run before it is interrupted
    /// (default 5 s).
    pub fn call_deadline(mut self, d: Duration) -> Self {
        self.call_deadline = d;
        self
    }
    /// Longest `Unload` (and each module at `Quit`) waits for a module to
    /// serve what it has queued and stop (default 10 s). A module still
    /// busy then — blocked in a call that no deadline interrupts — is left
    /// behind, unregistered, and what it had queued is reported.
    pub fn drain_deadline(mut self, d: Duration) -> Self {
        self.drain_deadline = d;
        self
    }
    /// Initial quiescence bound of upgrades, as `SetTimer` (default 10 s).
    pub fn quiescence_bound(mut self, d: Duration) -> Self {
        self.quiescence_bound = d;
        self
    }
    /// Whether every guest call runs under an epoch deadline (default yes).
    /// Off only to measure what the deadline costs: a guest that loops
    /// forever then holds its module forever.
    pub fn epoch_deadlines(mut self, on: bool) -> Self {
        self.epoch_deadlines = on;
        self
    }
    /// Allocate instances from a pool of `slots` pre-reserved instances
    /// whose linear memory stays resident when reused (default: off, each
    /// instance maps fresh memory). Pooled memory spares a swap the page
    /// faults of a large state hand-over, but caps the host at `slots`
    /// instances (every module, plus one per module being upgraded).
    pub fn pooled(mut self, slots: Option<u32>) -> Self {
        self.pooled = slots;
        self
    }
    /// Largest state an old version may hand over (default 64 MiB); a
    /// larger `put-state` result votes NO and the upgrade aborts.
    pub fn max_state_bytes(mut self, bytes: usize) -> Self {
        self.max_state_bytes = bytes;
        self
    }
    /// Load only `.wasm` files with a valid signature (`<file>.sig`, see
    /// [`crate::repo::signing`]) by one of these keys — for `Load`, `Replace`
    /// and the `Syn_*` commands alike. Default: none, and `.sig` files are
    /// ignored.
    pub fn trusted_keys(mut self, keys: Vec<PublicKey>) -> Self {
        self.trusted_keys = keys;
        self
    }
    /// What guests and clients can make the host hold (see [`Limits`] for
    /// each default).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
    /// Keep everything the host needs to come back — versions and their
    /// compiled artifacts, modules, recovery points, mailboxes,
    /// transactions, history — in `dir` (default: none, nothing survives
    /// the process). A restart on the same directory resumes every module.
    pub fn state_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.state_dir = dir;
        self
    }
    /// Restore every module of the state directory or none (a takeover:
    /// the old host serves on rather than lose one). Default: restore
    /// what can be, and report the rest.
    pub fn restore_all_or_nothing(mut self, on: bool) -> Self {
        self.all_or_nothing = on;
        self
    }
    /// When the journal is made durable (default: every 10 ms).
    pub fn sync(mut self, policy: SyncPolicy) -> Self {
        self.sync = policy;
        self
    }
    /// Keep compiled code in `dir` (wasmtime's cache, keyed by the bytes,
    /// the engine's settings and wasmtime's version), so that a big guest
    /// compiled once loads in milliseconds in every later host, with or
    /// without a state directory. Default: none. The folder is made 0700;
    /// one that others may write is refused (what is in it runs).
    pub fn compile_cache(mut self, dir: Option<PathBuf>) -> Self {
        self.compile_cache = dir;
        self
    }
    /// Fetch the versions commands name by reference (`oci://...`) with
    /// `fetcher`. Default: none (such a command is refused).
    pub fn fetcher(mut self, fetcher: Option<Arc<dyn crate::repo::Fetcher>>) -> Self {
        self.fetcher = fetcher;
        self
    }
    /// Initial vote mode, as `SetMode` (default concurrent).
    pub fn mode(mut self, m: Mode) -> Self {
        self.mode = m;
        self
    }

    /// Start the runtime (on a state directory: bring back what it holds).
    pub fn build(self) -> anyhow::Result<Runtime> {
        self.assemble(false).map(|(rt, _)| rt)
    }

    /// As [`build`](Self::build), with a receiver of every event from the
    /// first: what the restored modules do while the host starts (their
    /// logs, a recovery) is in it, which a `watch` after `build` misses.
    pub fn build_watched(self) -> anyhow::Result<(Runtime, Receiver<Event>)> {
        self.assemble(true)
            .map(|(rt, rx)| (rt, rx.expect("asked for a receiver")))
    }

    fn assemble(self, watched: bool) -> anyhow::Result<(Runtime, Option<Receiver<Event>>)> {
        let mut config = self.engine_config();
        if let Some(dir) = &self.compile_cache {
            config.cache(Some(compile_cache(dir)?));
        }
        let engine = wasmtime::Engine::new(&config)?;
        let mut repo = Repository::new(engine.clone())?
            .with_trusted_keys(self.trusted_keys.clone())
            .with_max_file(self.limits.wasm_bytes)
            .with_fetcher(self.fetcher.clone());
        let (state, image, journal) = match &self.state_dir {
            None => (None, None, None),
            Some(dir) => {
                let (state, image, journal) = self.open_state(dir)?;
                repo = repo.with_store(state.clone());
                (Some(state), Some(image), Some(journal))
            }
        };
        let events = Arc::new(EventBus::new(self.limits.watch_queue));
        let watcher = watched.then(|| events.watch());
        let bus = Bus::new(events, self.limits.clone(), journal);
        let env = Env {
            bus: bus.clone(),
            settings: Arc::new(Settings::new(self.max_state_bytes)),
            reaper: Reaper::start(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = epoch_ticker(engine.clone(), stop.clone())?;
        let ticks = (self.call_deadline.as_nanos() / EPOCH_PERIOD.as_nanos()).max(1) as u64;
        let (rollbacks, requests) = unbounded::<RollbackRequest>();
        let core = Arc::new(Core {
            modules: Modules::new(bus.names.clone()),
            bus,
            env,
            repo,
            limits: InstanceLimits {
                memory: self.memory_limit,
                deadline_ticks: ticks,
                label_bytes: self.limits.label_bytes,
                protocols: self.limits.protocols,
                resources: self.limits.resources,
            },
            call_deadline: self.call_deadline,
            drain_deadline: self.drain_deadline,
            mailbox_capacity: self.mailbox_capacity,
            current: Mutex::new(None),
            admin: Mutex::new(AdminState {
                bound: self.quiescence_bound,
                mode: self.mode,
            }),
            history: Mutex::new(History::default()),
            next_txn: AtomicU64::new(1),
            rollbacks,
        });
        let weak = Arc::downgrade(&core);
        // Ends by itself when every sender is gone: the runtime's and those
        // of the probation records its workers hold.
        std::thread::Builder::new()
            .name("liveswap-rollbacks".into())
            .spawn(move || crate::upgrade::rollback::serve(weak, requests))?;
        let all_or_nothing = self.all_or_nothing;
        let restart = image.map(|image| core.restore(image, all_or_nothing));
        let rt = Runtime {
            core,
            epoch_stop: stop,
            epoch: Mutex::new(Some(ticker)),
            restart,
            state,
        };
        Ok((rt, watcher))
    }

    /// Open the state directory, and start its journal's writer from the
    /// settled image (a restart's dropped messages must not come back
    /// from the journal). The image is returned unsettled: the restore
    /// settles it and says what that ended.
    fn open_state(
        &self,
        dir: &std::path::Path,
    ) -> anyhow::Result<(
        Arc<StateDir>,
        crate::store::Image,
        Arc<crate::store::Journal>,
    )> {
        let (state, image) = StateDir::open(dir)?;
        let rewrite = image.unsettled();
        let mut settled = image.clone();
        settled.settle();
        let journal = state.journal(settled, self.sync, rewrite)?;
        Ok((Arc::new(state), image, Arc::new(journal)))
    }

    fn engine_config(&self) -> wasmtime::Config {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(self.epoch_deadlines);
        // For `perf`: name the guests' functions (/tmp/perf-PID.map).
        if std::env::var_os("LIVESWAP_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        if let Some(slots) = self.pooled {
            let mut pool = wasmtime::PoolingAllocationConfig::new();
            pool.total_component_instances(slots)
                .total_core_instances(slots * 8)
                .total_memories(slots * 2)
                .total_tables(slots * 8)
                .max_core_instances_per_component(32)
                .max_memories_per_component(4)
                .max_tables_per_component(16)
                .max_memory_size(self.memory_limit)
                // Reused memory is zeroed in place, not unmapped: the next
                // instance finds its pages resident.
                .linear_memory_keep_resident(self.memory_limit)
                .table_keep_resident(1 << 20);
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        }
        config
    }
}

/// wasmtime's compilation cache in `dir`, made 0700 if it is new; a
/// folder others may write is refused, since what is in it is run.
fn compile_cache(dir: &std::path::Path) -> anyhow::Result<wasmtime::Cache> {
    use anyhow::Context as _;
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("compile cache {}: cannot make it", dir.display()))?;
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("compile cache {}", dir.display()))?
        .permissions()
        .mode();
    anyhow::ensure!(
        mode & 0o022 == 0,
        "compile cache {}: mode {:o}: others may write in it, and what is in it is run (chmod 700 it, or choose another)",
        dir.display(),
        mode & 0o777
    );
    let mut c = wasmtime::CacheConfig::new();
    c.with_directory(dir);
    wasmtime::Cache::new(c).map_err(|e| anyhow::anyhow!("compile cache {}: {e}", dir.display()))
}

/// What a command produced. Inspections are data; `liveswap-ops` renders
/// them as text or JSON.
#[derive(Debug)]
pub enum Reply {
    /// Done; a line saying what happened.
    Done(String),
    /// `Status`.
    Status(StatusReport),
    /// `Versions`.
    Versions(VersionsReport),
    /// `History`.
    History(History),
    /// `Poison NAME`.
    Poison(PoisonList),
    /// `Help`: the command language's help, which the operator layer has.
    Help,
    /// An upgrade ended (committed, aborted, refused or rolled back).
    Transaction(Box<TransactionReport>),
    /// `Quit` was asked for.
    Quit,
}

impl Core {
    fn run_locked(
        &self,
        admin: &mut AdminState,
        cmd: Command,
        text: &str,
        origin: &str,
    ) -> Result<Reply, CommandError> {
        match cmd {
            Command::Load {
                name,
                path,
                options,
            } => self.load(&name, &path, &options, origin).map(Reply::Done),
            Command::Unload(name) => self.unload(&name).map(Reply::Done),
            Command::Move { name, host } => self.move_out(&name, &host, origin).map(Reply::Done),
            Command::Enable(name) => self.enable(&name, true).map(Reply::Done),
            Command::Disable(name) => self.enable(&name, false).map(Reply::Done),
            Command::Upgrade { kind, targets } => Ok(Reply::Transaction(Box::new(
                self.transact(admin, kind, &targets, text, origin),
            ))),
            Command::SetTimer(d) => {
                admin.bound = d;
                self.setting("bound_ms", d.as_millis() as u64);
                Ok(Reply::Done(format!("quiescence bound is {d:?}")))
            }
            Command::SetMode(Mode::Early) if self.bus.journal.is_some() => {
                Err(CommandError::Parse(
                    "SetMode early: not on a host with a state directory (its journal would record a switch after messages the new version replays); groups here vote paused".into(),
                ))
            }
            Command::SetMode(m) => {
                admin.mode = m;
                // Kept only with a state directory, where early is refused.
                self.setting("sequential", u64::from(m == Mode::Sequential));
                Ok(Reply::Done(match m {
                    Mode::Early => "votes are collected concurrently, and each target serves on after its vote: all switch at the decision".to_string(),
                    m => format!("votes are collected {}ly", m.as_str()),
                }))
            }
            Command::Send { to, kind, body } => {
                self.send(&to, &kind, body.as_bytes())
                    .map_err(|e| match e {
                        SendError::UnknownModule(n) => CommandError::UnknownModule(n),
                        other => CommandError::Parse(format!("Send: {other}")),
                    })?;
                Ok(Reply::Done(format!("sent `{kind}` to {to}")))
            }
            Command::SetProbation {
                window,
                max_error_pct,
            } => Ok(Reply::Done(self.set_probation(window, max_error_pct))),
            Command::SetCheckpoint(d) => Ok(Reply::Done(self.set_checkpoint(d))),
            Command::Poison(name) => self.poison(&name).map(Reply::Poison),
            Command::Shadow(spec) => self
                .shadow(admin, &spec, origin)
                .map(|(_, l)| Reply::Done(l)),
            Command::Promote(names) => Ok(Reply::Transaction(Box::new(
                self.promote(admin, &names, text, origin),
            ))),
            Command::Unshadow(name) => self
                .unshadow(&name, "dropped by `Unshadow`")
                .map(Reply::Done),
            Command::Status => Ok(Reply::Status(self.status_report(admin))),
            Command::Versions => Ok(Reply::Versions(self.versions_report())),
            Command::History => Ok(Reply::History(self.history())),
            Command::Wait(_) | Command::Help | Command::Quit => unreachable!("handled before"),
        }
    }
}

impl Recorded for Result<Reply, CommandError> {
    fn outcome(&self) -> String {
        match self {
            Ok(Reply::Transaction(r)) => r.outcome.as_str().to_string(),
            Ok(_) => "done".to_string(),
            Err(e) => format!("error: {e}"),
        }
    }
    fn transaction(&self) -> Option<u64> {
        match self {
            Ok(Reply::Transaction(r)) => Some(r.id),
            _ => None,
        }
    }
}

/// A liveswap host.
pub struct Runtime {
    core: Arc<Core>,
    epoch_stop: Arc<AtomicBool>,
    epoch: Mutex<Option<JoinHandle<()>>>,
    /// What the start found in the state directory, if it has one.
    restart: Option<RestartSummary>,
    state: Option<Arc<StateDir>>,
}

impl Runtime {
    /// A runtime with default settings.
    pub fn new() -> anyhow::Result<Self> {
        RuntimeBuilder::default().build()
    }

    /// What this host brought back from its state directory at start
    /// (none without one).
    pub fn restart_summary(&self) -> Option<&RestartSummary> {
        self.restart.as_ref()
    }

    /// The state directory, if the host has one.
    pub fn state_dir(&self) -> Option<&std::path::Path> {
        self.state.as_deref().map(StateDir::path)
    }

    /// The journal's sync policy, with a state directory.
    pub fn sync_policy(&self) -> Option<SyncPolicy> {
        self.core.bus.journal.as_ref().map(|j| j.policy())
    }

    /// Receive every event from now on.
    pub fn watch(&self) -> Receiver<Event> {
        self.core.bus.events.watch()
    }

    /// The repository of versions.
    pub fn repository(&self) -> &Repository {
        &self.core.repo
    }

    /// The bus (names, mailboxes): what a lattice attaches to.
    pub(crate) fn bus(&self) -> &Arc<Bus> {
        &self.core.bus
    }

    /// The core: what a lattice installs modules moved here with.
    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// The host of the lattice that serves `name`, if another one does.
    pub fn served_elsewhere(&self, name: &str) -> Option<String> {
        self.core.bus.served_elsewhere(name)
    }

    /// What this host sees of its lattice, if it joined one.
    pub fn lattice_view(&self) -> Option<crate::bus::LatticeView> {
        self.core.bus.remote.get().map(|r| r.view())
    }

    /// Run the command `line` on `host` of the lattice, for `origin`:
    /// its answer in text, or why it failed.
    pub fn forward(&self, host: &str, line: &str, origin: &str) -> Result<String, String> {
        match self.core.bus.remote.get() {
            Some(r) => r.forward(host, line, origin),
            None => Err("this host is in no lattice".into()),
        }
    }

    /// Inject a message from `$admin`.
    pub fn send(&self, to: &str, kind: &str, body: &[u8]) -> Result<(), SendError> {
        self.core.send(to, kind, body)
    }

    /// A snapshot of every module.
    pub fn status(&self) -> Vec<ProxyStatus> {
        self.core.modules.all().iter().map(|p| p.status()).collect()
    }

    /// The proxy of `name`.
    pub fn module(&self, name: &str) -> Option<ModuleProxy> {
        self.core.modules.get(name)
    }

    /// Every command so far (not inspections), oldest first.
    pub fn commands(&self) -> Vec<CommandRecord> {
        self.core.history().commands
    }

    /// Every transaction so far, automatic rollbacks included.
    pub fn history(&self) -> Vec<TransactionReport> {
        self.core.history().transactions
    }

    /// Run one command. `text` is how it was written (for reports),
    /// `origin` who asked (for `History`).
    pub fn execute(&self, cmd: Command, text: &str, origin: &str) -> Result<Reply, CommandError> {
        match cmd {
            Command::Wait(d) => {
                std::thread::sleep(d);
                return Ok(Reply::Done(format!("waited {d:?}")));
            }
            Command::Help => return Ok(Reply::Help),
            Command::Quit => return Ok(Reply::Quit),
            _ => {}
        }
        let inspection = matches!(
            cmd,
            Command::Status | Command::Versions | Command::History | Command::Poison(_)
        );
        let timed = match &cmd {
            Command::Shadow(s) => s.run_for.map(|d| (s.name.clone(), d, s.then)),
            _ => None,
        };
        let core = &self.core;
        let r = core.serialized(text, origin, inspection, |admin| {
            core.run_locked(admin, cmd, text, origin)
        });
        if let (Ok(_), Some((name, after, then))) = (&r, timed) {
            crate::upgrade::shadow::timed(Arc::downgrade(core), name, after, then);
        }
        r
    }

    /// What command is running now, and for whom: (line, origin).
    pub fn current_command(&self) -> Option<(String, String)> {
        self.core.current_command()
    }

    /// Hand `state` to the `get-state` of a fresh instance of the component
    /// at `path` (see [`state_check`]).
    pub fn try_get_state(&self, path: &std::path::Path, state: &[u8]) -> Result<(), String> {
        self.core.try_get_state(path, state)
    }

    /// With a state directory, the first half of a handoff (and of
    /// [`Runtime::shutdown`]): stop every module between two messages with
    /// a fresh recovery point, make everything durable, and let the
    /// directory go, so that another host can open it at once. The rest of
    /// the shutdown (timer and epoch threads) can follow later. Without a
    /// state directory it does nothing.
    pub fn release_state_dir(&self) {
        let core = &self.core;
        let Some(journal) = &core.bus.journal else {
            return;
        };
        let _ = core.serialized("Quit", "shutdown", true, |_| {
            core.park_all();
            if let Err(e) = journal.close() {
                tracing::error!("state directory: the last commit failed: {e}");
            }
            Ok(Reply::Quit)
        });
        if let Some(state) = &self.state {
            state.release();
        }
    }

    /// Stop gracefully. Without a state directory every module drains
    /// its mailbox and stops; with one, every module stops between two
    /// messages and what is queued stays in the store, served after the
    /// next start.
    pub fn shutdown(&self) {
        let core = &self.core;
        if core.bus.journal.is_some() {
            self.release_state_dir();
        } else {
            let _ = core.serialized("Quit", "shutdown", true, |_| {
                for p in core.modules.all() {
                    let _ = core.unload(p.name());
                }
                Ok(Reply::Quit)
            });
        }
        core.bus.shutdown();
        self.epoch_stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.epoch.lock().expect("poisoned").take() {
            let _ = t.join();
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if self.epoch.lock().map(|e| e.is_some()).unwrap_or(false) {
            self.shutdown();
        }
    }
}

/// The thread that advances the engine's epoch (the call deadlines) until
/// `stop`.
fn epoch_ticker(
    engine: wasmtime::Engine,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("liveswap-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_PERIOD);
                engine.increment_epoch();
            }
        })
}
