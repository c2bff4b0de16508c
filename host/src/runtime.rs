//! The runtime: owns the engine, the repository and the services, runs
//! commands one at a time, and shuts everything down gracefully.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, bounded};

use crate::bindings::Message;
use crate::command::{Command, Grant, GroupKind, HELP, LoadOptions, Mode};
use crate::error::{CommandError, LoadError};
use crate::events::Event;
use crate::implementation::{Implementation, InstanceLimits};
use crate::proxy::{Control, ModuleProxy, ProxyStatus, Start};
use crate::rates::WINDOW_SECS;
use crate::report::TransactionReport;
use crate::repository::Repository;
use crate::services::{ADMIN_SENDER, SendError, Services};
use crate::signing::PublicKey;

/// How often the engine's epoch advances; call deadlines are counted in it.
pub const EPOCH_PERIOD: Duration = Duration::from_millis(10);

/// Settings of a new runtime.
#[derive(Clone, Debug)]
pub struct RuntimeBuilder {
    mailbox_capacity: usize,
    memory_limit: usize,
    call_deadline: Duration,
    quiescence_bound: Duration,
    mode: Mode,
    epoch_deadlines: bool,
    pooled: Option<u32>,
    max_state_bytes: usize,
    trusted_keys: Vec<PublicKey>,
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder {
            mailbox_capacity: 100_000,
            memory_limit: 64 << 20,
            call_deadline: Duration::from_secs(5),
            quiescence_bound: Duration::from_secs(10),
            mode: Mode::Concurrent,
            epoch_deadlines: true,
            pooled: None,
            max_state_bytes: 64 << 20,
            trusted_keys: Vec::new(),
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
    /// [`crate::signing`]) by one of these keys — for `Load`, `Replace`
    /// and the `Syn_*` commands alike. Default: none, and `.sig` files are
    /// ignored.
    pub fn trusted_keys(mut self, keys: Vec<PublicKey>) -> Self {
        self.trusted_keys = keys;
        self
    }
    /// Initial vote mode, as `SetMode` (default concurrent).
    pub fn mode(mut self, m: Mode) -> Self {
        self.mode = m;
        self
    }

    /// Start the runtime.
    pub fn build(self) -> anyhow::Result<Runtime> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(self.epoch_deadlines);
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
        let engine = wasmtime::Engine::new(&config)?;
        let repo = Repository::new(engine.clone())?.with_trusted_keys(self.trusted_keys);
        let services = Services::new(self.mailbox_capacity, self.max_state_bytes);
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let stop = stop.clone();
            let engine = engine.clone();
            std::thread::Builder::new()
                .name("liveswap-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_PERIOD);
                        engine.increment_epoch();
                    }
                })?
        };
        let ticks = (self.call_deadline.as_nanos() / EPOCH_PERIOD.as_nanos()).max(1) as u64;
        Ok(Runtime {
            services,
            repo,
            limits: InstanceLimits {
                memory: self.memory_limit,
                deadline_ticks: ticks,
            },
            call_deadline: self.call_deadline,
            current: Mutex::new(None),
            admin: Mutex::new(AdminState {
                bound: self.quiescence_bound,
                mode: self.mode,
            }),
            epoch_stop: stop,
            epoch: Mutex::new(Some(ticker)),
        })
    }
}

/// One command run by the host, for `History`.
#[derive(Clone, Debug)]
pub struct CommandRecord {
    /// When it ended.
    pub at: std::time::SystemTime,
    /// Who asked (`script.ls:3`, `unix:2`, `tcp:127.0.0.1:5123`, ...).
    pub origin: String,
    /// The command as written.
    pub line: String,
    /// `done`, `committed`, `aborted`, `refused` or `error: ...`.
    pub outcome: String,
    /// The transaction it ran, if an upgrade.
    pub transaction: Option<u64>,
}

fn history_text(records: &crate::services::Records) -> String {
    let mut out = String::new();
    for c in &records.commands {
        let secs =
            c.at.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
        let _ = writeln!(
            out,
            "[{secs:.3}] {} `{}` -> {}",
            c.origin, c.line, c.outcome
        );
        if let Some(id) = c.transaction
            && let Some(r) = records.transactions.iter().find(|r| r.id == id)
        {
            for l in r.to_text().lines().skip(1) {
                let _ = writeln!(out, "    {l}");
            }
        }
    }
    if out.is_empty() {
        out.push_str("no command has run yet");
    }
    out.trim_end().to_string()
}

pub(crate) struct AdminState {
    pub bound: Duration,
    pub mode: Mode,
}

/// What a command produced.
#[derive(Debug)]
pub enum Reply {
    /// Done; a line saying what happened.
    Done(String),
    /// Inspection output.
    Text(String),
    /// An upgrade ended (committed, aborted or refused).
    Transaction(Box<TransactionReport>),
    /// `Quit` was asked for.
    Quit,
}

/// A liveswap host.
pub struct Runtime {
    pub(crate) services: Arc<Services>,
    pub(crate) repo: Repository,
    pub(crate) limits: InstanceLimits,
    pub(crate) call_deadline: Duration,
    // One command at a time: held for the whole of each command, so that a
    // transaction never sees another one's half-done changes.
    pub(crate) admin: Mutex<AdminState>,
    // Outside the admin lock, so a client waiting for it can be told what
    // it waits for.
    current: Mutex<Option<(String, String)>>,
    epoch_stop: Arc<AtomicBool>,
    epoch: Mutex<Option<JoinHandle<()>>>,
}

impl Runtime {
    /// A runtime with default settings.
    pub fn new() -> anyhow::Result<Self> {
        RuntimeBuilder::default().build()
    }

    /// Receive every event from now on.
    pub fn watch(&self) -> Receiver<Event> {
        self.services.events.watch()
    }

    /// The repository of versions.
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// Inject a message from `$admin`.
    pub fn send(&self, to: &str, kind: &str, body: &[u8]) -> Result<(), SendError> {
        let from: Arc<str> = Arc::from(ADMIN_SENDER);
        self.services.send(
            &from,
            &[],
            to,
            Message {
                from: String::new(),
                kind: kind.to_string(),
                proto: 0,
                body: body.to_vec(),
            },
        )
    }

    /// A snapshot of every module.
    pub fn status(&self) -> Vec<ProxyStatus> {
        self.services
            .names
            .all()
            .iter()
            .map(|p| p.status())
            .collect()
    }

    /// The proxy of `name`.
    pub fn module(&self, name: &str) -> Option<ModuleProxy> {
        self.services.names.resolve(name)
    }

    /// Every command so far (not inspections), oldest first.
    pub fn commands(&self) -> Vec<CommandRecord> {
        self.records().commands.clone()
    }

    /// Every transaction so far, automatic rollbacks included.
    pub fn history(&self) -> Vec<TransactionReport> {
        self.records().transactions.clone()
    }

    fn records(&self) -> std::sync::MutexGuard<'_, crate::services::Records> {
        self.services.records.lock().expect("records poisoned")
    }

    /// Parse and run one line. `Ok(None)` for a blank line.
    pub fn execute_line(&self, line: &str, origin: &str) -> Result<Option<Reply>, CommandError> {
        match crate::command::parse(line).map_err(CommandError::Parse)? {
            None => Ok(None),
            Some(c) => self.execute(c, line.trim(), origin).map(Some),
        }
    }

    /// Run one command. `text` is how it was written (for reports),
    /// `origin` who asked (for `History`).
    pub fn execute(&self, cmd: Command, text: &str, origin: &str) -> Result<Reply, CommandError> {
        match cmd {
            Command::Wait(d) => {
                std::thread::sleep(d);
                return Ok(Reply::Done(format!("waited {d:?}")));
            }
            Command::Help => return Ok(Reply::Text(HELP.to_string())),
            Command::Quit => return Ok(Reply::Quit),
            _ => {}
        }
        let mut admin = self.admin.lock().expect("admin poisoned");
        *self.current.lock().expect("poisoned") = Some((text.to_string(), origin.to_string()));
        let is_inspection = matches!(
            cmd,
            Command::Status | Command::Versions | Command::History | Command::Poison(_)
        );
        let result = self.run_locked(&mut admin, cmd, text, origin);
        if !is_inspection {
            let outcome = match &result {
                Ok(Reply::Transaction(r)) => r.outcome.as_str().to_string(),
                Ok(_) => "done".to_string(),
                Err(e) => format!("error: {e}"),
            };
            self.records().commands.push(CommandRecord {
                at: std::time::SystemTime::now(),
                origin: origin.to_string(),
                line: text.to_string(),
                outcome,
                transaction: match &result {
                    Ok(Reply::Transaction(r)) => Some(r.id),
                    _ => None,
                },
            });
        }
        *self.current.lock().expect("poisoned") = None;
        result
    }

    /// What command is running now, and for whom: (line, origin).
    pub fn current_command(&self) -> Option<(String, String)> {
        self.current.lock().expect("poisoned").clone()
    }

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
            } => self.load(&name, &path, &options).map(Reply::Done),
            Command::Unload(name) => self.unload(&name).map(Reply::Done),
            Command::Enable(name) => self.enable(&name, true).map(Reply::Done),
            Command::Disable(name) => self.enable(&name, false).map(Reply::Done),
            Command::Upgrade { kind, targets } => Ok(Reply::Transaction(Box::new(
                self.transact(admin, kind, &targets, text, origin),
            ))),
            Command::SetTimer(d) => {
                admin.bound = d;
                Ok(Reply::Done(format!("quiescence bound is {d:?}")))
            }
            Command::SetMode(m) => {
                admin.mode = m;
                Ok(Reply::Done(format!("votes are collected {}ly", m.as_str())))
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
            } => {
                self.services.settings.set_probation(window, max_error_pct);
                Ok(Reply::Done(if window.is_zero() {
                    "probation is off: a fault after a commit is recovered in place".to_string()
                } else {
                    format!(
                        "for {window:?} after each commit, a trap or more than {max_error_pct}% failing messages in a new version rolls its group back"
                    )
                }))
            }
            Command::SetCheckpoint(d) => {
                self.services.settings.set_checkpoint(d);
                Ok(Reply::Done(if d.is_zero() {
                    format!(
                        "recovery points are renewed at commits and every {} messages",
                        crate::proxy::CHECKPOINT_EVERY
                    )
                } else {
                    format!(
                        "recovery points are renewed every {d:?} (and every {} messages)",
                        crate::proxy::CHECKPOINT_EVERY
                    )
                }))
            }
            Command::Poison(name) => {
                let proxy = self
                    .module(&name)
                    .ok_or_else(|| CommandError::UnknownModule(name.clone()))?;
                let list = proxy.poison();
                let mut out = format!("{} poison message(s) set aside by {name}", list.len());
                for (i, p) in list.iter().enumerate() {
                    let _ = write!(out, "\n#{} {p}", i + 1);
                }
                Ok(Reply::Text(out))
            }
            Command::Status => Ok(Reply::Text(self.status_text(admin))),
            Command::Versions => Ok(Reply::Text(self.versions_text())),
            Command::History => Ok(Reply::Text(history_text(&self.records()))),
            Command::Wait(_) | Command::Help | Command::Quit => unreachable!("handled above"),
        }
    }

    /// The limits of a module loaded with `options`.
    pub(crate) fn limits_for(&self, options: &LoadOptions) -> InstanceLimits {
        InstanceLimits {
            memory: options.memory.unwrap_or(self.limits.memory),
            ..self.limits.clone()
        }
    }

    /// Instantiate `version` for `name`, as a `Load` or an upgrade does.
    pub(crate) fn instantiate(
        &self,
        version: &Arc<crate::repository::Version>,
        name: &str,
        grants: &Arc<[Grant]>,
        limits: &InstanceLimits,
    ) -> Result<Implementation, LoadError> {
        crate::sandbox::check(grants)?;
        Implementation::instantiate(
            version,
            Arc::from(name),
            self.services.clone(),
            limits,
            grants,
        )
        .map_err(|reason| LoadError::Instantiate {
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
        self.services.timers.cancel_all(name);
        self.services.pubsub.forget(name);
        Err(CommandError::InitFailed {
            name: name.to_string(),
            reason: failed,
        })
    }

    /// The thesis' addition protocol: upload, instantiate, init, register,
    /// enable.
    fn load(
        &self,
        name: &str,
        path: &std::path::Path,
        options: &LoadOptions,
    ) -> Result<String, CommandError> {
        if self.services.names.contains(name) {
            return Err(CommandError::AlreadyLoaded(name.to_string()));
        }
        let version = self.repo.fetch_pinned(path, options.pin.as_deref())?;
        let grants: Arc<[Grant]> = Arc::from(options.grants.as_slice());
        let limits = self.limits_for(options);
        let mut imp = self.instantiate(&version, name, &grants, &limits)?;
        self.init(&mut imp, name, &options.config)?;
        let label = imp.label().to_string();
        let capacity = options.capacity.unwrap_or(self.services.mailbox_capacity);
        let (proxy, data_rx, ctl_rx) =
            ModuleProxy::new(Arc::from(name), version.clone(), capacity, grants, limits);
        if !self.services.names.register(proxy.clone()) {
            return Err(CommandError::AlreadyLoaded(name.to_string()));
        }
        let (started_tx, started) = bounded(1);
        proxy.spawn(
            Box::new(imp),
            &options.config,
            self.services.clone(),
            data_rx,
            ctl_rx,
            Start::Now(started_tx),
        );
        // `enable` has run (or faulted) when the command returns.
        let _ = started.recv_timeout(self.call_deadline + Duration::from_secs(1));
        Ok(format!(
            "loaded {name} v{label} from {} ({})",
            path.display(),
            version.short_digest()
        ))
    }

    /// The removal protocol: unregister (later sends fail), disable, drain
    /// everything already accepted, stop.
    fn unload(&self, name: &str) -> Result<String, CommandError> {
        let proxy = self
            .services
            .names
            .unregister(name)
            .ok_or_else(|| CommandError::UnknownModule(name.to_string()))?;
        let label = proxy.version().label().to_string();
        let queued = proxy.depth();
        proxy.close();
        self.services.timers.cancel_all(name);
        let (tx, rx) = bounded(1);
        if proxy.control(Control::Stop(tx)) {
            let _ = rx.recv();
        }
        proxy.join();
        // After the drain: a drained message may have subscribed again.
        self.services.pubsub.forget(name);
        self.services.timers.cancel_all(name);
        self.release_unused();
        Ok(format!(
            "unloaded {name} v{label} after draining {queued} message(s)"
        ))
    }

    fn enable(&self, name: &str, on: bool) -> Result<String, CommandError> {
        let proxy = self
            .services
            .names
            .resolve(name)
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
        Ok(if on {
            format!(
                "enabled {name}: {} queued message(s) now served",
                proxy.depth()
            )
        } else {
            format!("disabled {name}: its mailbox is held")
        })
    }

    fn status_text(&self, admin: &AdminState) -> String {
        let mut out = String::new();
        let t = admin.bound.as_secs_f64();
        let _ = writeln!(
            out,
            "{:<10} {:<8} {:<13} {:<10} {:>7} {:>9} {:>7} {:>6}  arrivals/s (last {WINDOW_SECS}s) -> buffer for T={t}s",
            "MODULE", "VERSION", "DIGEST", "STATE", "QUEUED", "SERVED", "ERRORS", "FAULTS"
        );
        for s in self.status() {
            let total: f64 = s.rates.iter().map(|(_, r)| r).sum();
            let need = (total * t).ceil() as u64;
            let rates: Vec<String> = s
                .rates
                .iter()
                .filter(|(_, r)| *r > 0.0)
                .map(|(k, r)| format!("{k}:{r:.1}"))
                .collect();
            let verdict = if need as usize > s.capacity {
                "OVER CAPACITY"
            } else {
                "ok"
            };
            let _ = writeln!(
                out,
                "{:<10} {:<8} {:<13} {:<10} {:>7} {:>9} {:>7} {:>6}  [{}] -> {need}/{} {verdict}",
                s.name,
                format!("v{}", s.version.label()),
                s.version.short_digest(),
                s.state.as_str(),
                s.depth,
                s.served,
                s.errors,
                s.faults,
                rates.join(" "),
                s.capacity,
            );
            if let Some(f) = &s.last_fault {
                let _ = writeln!(out, "{:<10} last fault: {f}", "");
            }
            let _ = writeln!(out, "{:<10} {}", "", crate::sandbox::grants_line(&s.grants));
            if s.recoveries > 0 || s.poisoned > 0 {
                let _ = writeln!(
                    out,
                    "{:<10} recovered {} time(s); {} poison message(s) (Poison {})",
                    "", s.recoveries, s.poisoned, s.name
                );
            }
            let _ = writeln!(
                out,
                "{:<10} recovery point: {} + {} logged message(s); memory limit {} MiB",
                "",
                s.recovery_point,
                s.logged,
                s.memory_limit >> 20
            );
        }
        let (window, pct) = self.services.settings.probation();
        let probation = if window.is_zero() {
            "probation off".to_string()
        } else {
            format!("probation {window:?} (errors over {pct}%)")
        };
        let _ = write!(
            out,
            "quiescence bound {:?}, mode {}, {probation}, checkpoint every {:?}",
            admin.bound,
            admin.mode.as_str(),
            Duration::from_nanos(self.services.settings.checkpoint_ns())
        );
        out
    }

    fn versions_text(&self) -> String {
        self.release_unused();
        let modules = self.services.names.all();
        let mut out = format!(
            "{:<14} {:<8} {:>9} {:<40} RUN BY\n",
            "DIGEST", "VERSION", "BYTES", "PATH"
        );
        for v in self.repo.all() {
            let users: Vec<String> = modules
                .iter()
                .filter(|p| p.version().digest == v.digest)
                .map(|p| p.name().to_string())
                .collect();
            let _ = writeln!(
                out,
                "{:<14} {:<8} {:>9} {:<40} {}",
                v.short_digest(),
                format!("v{}", v.label()),
                v.size,
                v.path.display(),
                if users.is_empty() {
                    "-".to_string()
                } else {
                    users.join(", ")
                }
            );
        }
        let _ = match self.repo.trusted_keys().len() {
            0 => write!(out, "signatures: not checked"),
            1 => write!(out, "signatures: required (1 trusted key)"),
            n => write!(out, "signatures: required ({n} trusted keys)"),
        };
        out
    }

    /// Forget versions no module runs (the thesis' cleaning phase).
    pub(crate) fn release_unused(&self) {
        let running = self
            .services
            .names
            .all()
            .iter()
            .map(|p| p.version().digest.clone())
            .collect();
        for d in self.repo.release_unused(&running) {
            tracing::debug!(digest = %d, "released");
        }
    }

    /// Stop gracefully: every module drains its mailbox and stops.
    pub fn shutdown(&self) {
        let _admin = self.admin.lock().expect("admin poisoned");
        for p in self.services.names.all() {
            let _ = self.unload(p.name());
        }
        self.services.shutdown();
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

impl GroupKind {
    /// The command's keyword.
    pub fn keyword(self, n: usize) -> &'static str {
        match (self, n) {
            (GroupKind::Replace, 1) => "Replace",
            (GroupKind::Replace, _) => "Syn_Replace",
            (GroupKind::Load, _) => "Syn_Load",
            (GroupKind::Upgrade, _) => "Syn_Upgrade",
        }
    }
}
