//! The `liveswap` binary: parses arguments, calls the host library, prints.

mod guest;
mod host;
mod shell;

/// Every message is a few small allocations made on the sender's thread
/// and freed on another: mimalloc's thread-local free lists make that
/// cheap where glibc's arenas contend (measured in `liveswap bench`).
/// Without transparent huge pages (`no_thp`), which would make every
/// module thread's heap hold megabytes resident.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use crossbeam_channel::bounded;
use liveswap_ops::ToText as _;
use liveswap_ops::admin::{self, AdminOptions, AdminServer, Client, Final};
use liveswap_ops::script;
use liveswap_ops::web::{WebOptions, WebServer};

/// liveswap: keep a multi-module WebAssembly application running while its
/// modules are loaded, replaced and removed.
#[derive(Parser)]
#[command(name = "liveswap", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// The admin endpoint a host serves.
#[derive(Args, Clone)]
struct Serve {
    /// Unix socket of the admin endpoint (mode 0600) [default:
    /// $XDG_RUNTIME_DIR/liveswap/admin.sock, or /tmp/liveswap-<uid>/admin.sock].
    #[arg(long, value_name = "PATH")]
    admin: Option<PathBuf>,
    /// Serve no admin endpoint.
    #[arg(long)]
    no_admin: bool,
    /// Also serve the admin endpoint over TCP on this (loopback) address;
    /// clients must send the token of --token-file first.
    #[arg(long, value_name = "ADDR", requires = "token_file")]
    admin_tcp: Option<std::net::SocketAddr>,
    /// File holding the admin token (its first line, at least 16
    /// characters).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Close an admin session that sends nothing for this long (a Watch
    /// lasts while its client reads).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    admin_idle: Duration,
    /// Serve the live web dashboard and Prometheus /metrics on this address
    /// (e.g. 127.0.0.1:8080; port 0 picks a free one). Loopback is open to
    /// anyone on this machine; any other address needs --token-file.
    /// Running a command from the page always needs the token.
    #[arg(long, value_name = "ADDR")]
    http: Option<std::net::SocketAddr>,
}

/// How to reach a running host.
#[derive(Args, Clone)]
struct Connect {
    /// The host's Unix socket [default: as for `run --admin`].
    #[arg(long, value_name = "PATH", conflicts_with = "tcp")]
    connect: Option<PathBuf>,
    /// The host's TCP admin address instead; needs --token-file.
    #[arg(long, value_name = "ADDR", requires = "token_file")]
    tcp: Option<std::net::SocketAddr>,
    /// File holding the admin token (its first line).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

/// Arguments of `liveswap run`.
#[derive(Args)]
struct RunArgs {
    /// The script: one command a line (`Load`, `Replace`, `Wait`, ...).
    /// Optional with --state-dir: a restart resumes every module the
    /// directory holds, and a script then runs after that.
    script: Option<PathBuf>,
    /// Print one JSON object per line for every event instead of text.
    #[arg(long)]
    json: bool,
    /// Stop once the script ends instead of serving on.
    #[arg(long)]
    once: bool,
    /// Show debug-level guest log lines too.
    #[arg(long, short)]
    verbose: bool,
    /// Longest a single guest call may run, e.g. 5s or 500ms.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    call_deadline: Duration,
    /// Longest Unload, and each module at Quit or Ctrl-C, waits for a
    /// module to serve its queue and stop; one still busy then is left
    /// behind and what it had queued is reported.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    drain_deadline: Duration,
    /// Default mailbox capacity of each module.
    #[arg(long, default_value_t = 100_000)]
    mailbox: usize,
    /// Set a script variable, used as `$NAME` or `${NAME:-default}`.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// Take instances from a pool of this many slots with resident memory:
    /// large state hand-overs pause several times less (see `liveswap
    /// bench`), but the host holds at most this many instances.
    #[arg(long, value_name = "SLOTS")]
    pooled: Option<u32>,
    /// Linear-memory limit of each instance (e.g. 64MiB); a `Load` may set
    /// its own with `memory <size>`.
    #[arg(long, default_value = "64MiB", value_parser = parse_memory)]
    memory_limit: usize,
    /// Largest state an old version may hand over, or a checkpoint keep;
    /// a larger one votes NO.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    max_state: usize,
    /// Keep compiled code here (made 0700), so that a guest compiled once
    /// loads in milliseconds in every later host; `none` for no cache
    /// [default: $XDG_CACHE_HOME/liveswap/compiled, or
    /// ~/.cache/liveswap/compiled].
    #[arg(long, value_name = "DIR|none")]
    compile_cache: Option<PathBuf>,
    #[command(flatten)]
    trust: Trust,
    #[command(flatten)]
    serve: Serve,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    durable: Durability,
    #[command(flatten)]
    lattice: LatticeArgs,
}

/// Hosts of one application on several machines (or processes), meeting
/// on a NATS server.
#[derive(Args, Clone)]
#[command(next_help_heading = "Lattice")]
struct LatticeArgs {
    /// Join the lattice whose hosts meet on this NATS server, e.g.
    /// nats://127.0.0.1:4222: module names resolve on every host of it,
    /// and a message to a module on another host is delivered once, in
    /// order per sender, as a local one. The server may be down at start
    /// or later: local modules serve on, messages for other hosts wait in
    /// their outboxes. Without it the host runs alone.
    #[arg(long, value_name = "URL")]
    lattice: Option<String>,
    /// The lattice's name: hosts of one lattice see each other only.
    #[arg(long, value_name = "NAME", default_value = "default")]
    lattice_name: String,
    /// This host's id in the lattice, unique in it (letters, digits, `-`,
    /// `_`) [default: the machine's name and this process's id].
    #[arg(long, value_name = "ID")]
    host_id: Option<String>,
    /// A file whose first line is the token the NATS server asks for (a
    /// token is never taken on the command line).
    #[arg(long, value_name = "FILE", requires = "lattice")]
    lattice_token_file: Option<PathBuf>,
    /// How many messages for one module on another host may wait for that
    /// host's acknowledgement; a send past it is refused with an error
    /// that names the module and the host.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    lattice_outbox: usize,
    /// How long this host's announcement holds: a host not heard of within
    /// its lease is shown DOWN (it announces itself four times a lease).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    lattice_lease: Duration,
}

impl LatticeArgs {
    /// The lattice to join, if any.
    fn options(&self) -> anyhow::Result<Option<liveswap::lattice::LatticeOptions>> {
        let Some(url) = &self.lattice else {
            return Ok(None);
        };
        let host = match &self.host_id {
            Some(h) => h.clone(),
            None => {
                let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .unwrap_or_else(|_| "host".into());
                let name: String = name
                    .trim()
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '-' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .take(40)
                    .collect();
                format!("{name}-{}", std::process::id())
            }
        };
        let mut o = liveswap::lattice::LatticeOptions::new(url, &self.lattice_name, &host);
        if let Some(f) = &self.lattice_token_file {
            o = o.token_file(f)?;
        }
        o.outbox = self.lattice_outbox;
        o.lease = self.lattice_lease;
        Ok(Some(o))
    }
}

/// Where a host keeps what it needs to come back after a crash, a restart
/// or a handoff, and how often it makes that durable.
#[derive(Args, Clone)]
#[command(next_help_heading = "Durability")]
struct Durability {
    /// Keep versions (and their compiled code), modules, recovery points,
    /// queued messages, transactions and history in this directory (made
    /// 0700); a later `liveswap run --state-dir` on it resumes them all.
    /// Default: none (nothing survives the process). One host at a time.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// When queued messages and calls are made durable: `always` (an fsync
    /// per batch, as soon as one waits), an interval such as `10ms` (group
    /// commit; a crash loses at most that much of what modules sent each
    /// other, never an admin Send that was answered OK) or `none` (only at
    /// a clean stop: a crash loses everything since).
    #[arg(long, default_value = "10ms", value_name = "POLICY", value_parser = liveswap::store::SyncPolicy::parse)]
    sync: liveswap::store::SyncPolicy,
    /// Take over the host serving --state-dir (a live upgrade of the host
    /// binary): it stops its modules between two messages, makes
    /// everything durable and hands over its admin sockets; this process
    /// resumes every module and serves them. If this one cannot, the old
    /// host serves on.
    #[arg(long, requires = "state_dir")]
    take_over: bool,
}

/// What guests and clients can make the host hold: each going over is
/// refused with an error to whoever asked and counted in `Status`.
#[derive(Args, Clone)]
#[command(next_help_heading = "Limits")]
struct LimitArgs {
    /// Largest message body a send, publish or admin Send may carry.
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    max_message: usize,
    /// Longest message kind, event name or timer name, in bytes.
    #[arg(long, default_value_t = 256)]
    max_kind: usize,
    /// Bytes one mailbox may hold queued (besides its message capacity).
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    mailbox_bytes: usize,
    /// Bytes all mailboxes together may hold queued.
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    queued_bytes: usize,
    /// Bytes a recovery log may hold before a checkpoint is forced.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    log_bytes: usize,
    /// Poison messages kept per module (the oldest are forgotten).
    #[arg(long, default_value_t = 100)]
    poison_kept: usize,
    /// Bytes of poison-message bodies kept per module.
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    poison_bytes: usize,
    /// Timers per module.
    #[arg(long, default_value_t = 64)]
    max_timers: usize,
    /// Subscriptions per module.
    #[arg(long, default_value_t = 1024)]
    max_subscriptions: usize,
    /// Longest version label a module's info() may declare, in bytes.
    #[arg(long, default_value_t = 128)]
    max_label: usize,
    /// Most protocol versions in info()'s speaks and accepts lists.
    #[arg(long, default_value_t = 64)]
    max_protocols: usize,
    /// Longest guest log line; longer ones are cut.
    #[arg(long, default_value = "4KiB", value_parser = parse_size)]
    log_line: usize,
    /// Log lines per second per module; past it lines are dropped and
    /// counted.
    #[arg(long, default_value_t = 10_000)]
    log_rate: u32,
    /// Events queued for a reader (this printer, a Watch client) that
    /// does not keep up; past it events are skipped and counted.
    #[arg(long, default_value_t = 65_536)]
    watch_queue: usize,
    /// WASI resources (streams, files, sockets, ...) one instance may
    /// hold at once: its share of the host's file descriptors.
    #[arg(long, default_value_t = 256)]
    max_resources: usize,
    /// Largest .wasm file Load or Replace reads.
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    max_wasm: usize,
    /// Recoveries a module may have within --restart-window; one more is a
    /// crash loop, and the module is held (mailbox kept) for a fixed
    /// version or Unload.
    #[arg(long, default_value_t = 10)]
    max_restarts: u32,
    /// The window of --max-restarts.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    restart_window: Duration,
    /// Most messages handed to a module in one call, for modules that take
    /// batches (the Rust SDK's do): what is waiting in the mailbox goes in
    /// one call instead of one each. 1 turns batching off.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    max_batch: u32,
}

impl LimitArgs {
    fn limits(&self) -> liveswap::Limits {
        liveswap::Limits {
            max_body: self.max_message,
            max_kind: self.max_kind,
            mailbox_bytes: self.mailbox_bytes,
            queued_bytes: self.queued_bytes,
            log_bytes: self.log_bytes,
            poison_kept: self.poison_kept,
            poison_body_bytes: self.poison_bytes,
            timers: self.max_timers,
            subscriptions: self.max_subscriptions,
            label_bytes: self.max_label,
            protocols: self.max_protocols,
            log_line: self.log_line,
            log_rate: self.log_rate,
            watch_queue: self.watch_queue,
            resources: self.max_resources,
            wasm_bytes: self.max_wasm as u64,
            restarts: self.max_restarts,
            restart_window_ms: self.restart_window.as_millis() as u64,
            batch: self.max_batch as usize,
            ..liveswap::Limits::default()
        }
    }
}

fn parse_size(s: &str) -> Result<usize, String> {
    liveswap_ops::command::parse_size(s).ok_or_else(|| {
        format!("`{s}` is not a size (like 65536, 512KiB, 16MiB, 1GiB, or 500KB, 1GB)")
    })
}

fn parse_memory(s: &str) -> Result<usize, String> {
    liveswap_ops::command::parse_memory(s)
}

/// The keys a host started here requires signatures by.
#[derive(Args, Clone, Default)]
struct Trust {
    /// Load only .wasm files signed by this public key (a PREFIX.pub of
    /// `liveswap keygen`; repeat for more keys): each FILE.wasm needs a
    /// FILE.wasm.sig from `liveswap sign`, or Load, Replace and the Syn_*
    /// commands refuse it. Without --trust, .sig files are ignored.
    #[arg(long = "trust", value_name = "FILE.pub")]
    keys: Vec<PathBuf>,
}

impl Trust {
    /// Read every key file; a bad one stops the host from starting.
    fn read(&self) -> anyhow::Result<Vec<liveswap::signing::PublicKey>> {
        self.keys
            .iter()
            .map(|p| {
                liveswap::signing::read_public_key(p).context("--trust: not a usable public key")
            })
            .collect()
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a host, run a script of commands, then keep serving until
    /// `Quit` or Ctrl-C (graceful: every module drains its mailbox; with
    /// --state-dir, modules stop between two messages and what is queued
    /// stays in the directory for the next start).
    ///
    /// In the script, `$GUESTS` stands for the folder of the guest modules
    /// this binary was built with, so examples run from any directory.
    /// Run `liveswap help-commands` for the command language.
    Run(Box<RunArgs>),
    /// Run one command on a running host, or a script of them (-f). The
    /// exit status says how it went: 0 done or committed, 1 error,
    /// 2 refused, 3 aborted, 4 host unreachable. A script stops at the
    /// first command that does not succeed.
    Ctl {
        #[command(flatten)]
        connect: Connect,
        /// Run the commands of this file, one a line.
        #[arg(
            short = 'f',
            long = "file",
            value_name = "SCRIPT",
            conflicts_with = "command"
        )]
        file: Option<PathBuf>,
        /// Print replies as JSON.
        #[arg(long)]
        json: bool,
        /// The command, e.g. `Replace IP ip_v2.wasm` or `Status`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// An interactive shell: on a running host (--connect/--tcp), or on a
    /// fresh one started here. Line editing, history (~/.liveswap_history),
    /// Tab completes commands, module names and .wasm paths.
    Shell {
        #[command(flatten)]
        connect: Connect,
        /// Start a fresh host in this process instead of connecting.
        #[arg(long, conflicts_with_all = ["connect", "tcp"])]
        local: bool,
        /// With --local: the Unix socket its admin endpoint serves
        /// [default: as for `run --admin`].
        #[arg(long, value_name = "PATH", requires = "local")]
        admin: Option<PathBuf>,
        /// With --local: load only .wasm files signed by this public key
        /// (repeatable; see `run --trust`).
        #[arg(long = "trust", value_name = "FILE.pub", requires = "local")]
        trust: Vec<PathBuf>,
    },
    /// Run the non-stop router of the thesis live, in one process: load it,
    /// upgrade it through six transactions (one aborts, one is refused),
    /// watch it from outside with a monitor, and check that no relay
    /// number was lost. Exits 0 only if every invariant held.
    Demo {
        /// Milliseconds between TIMER's broadcasts.
        #[arg(long, default_value_t = 100)]
        beat: u32,
        /// Time to let the router run between transactions.
        #[arg(long, default_value = "3s", value_parser = parse_duration)]
        settle: Duration,
        /// A silence longer than this in a module's packets is an outage.
        #[arg(long, default_value = "400ms", value_parser = parse_duration)]
        gap: Duration,
        /// Where the monitor listens (UDP).
        #[arg(long, default_value = "127.0.0.1:0")]
        monitor: std::net::SocketAddr,
        /// Spread the router over a lattice of three hosts: this process
        /// and two `liveswap run` processes, on a local nats-server with
        /// JetStream (started for the demo unless --lattice-url is given);
        /// OSPF moves between the hosts during the run.
        #[arg(long)]
        lattice: bool,
        /// The NATS server (with JetStream) for --lattice, instead of a
        /// local one.
        #[arg(long, requires = "lattice")]
        lattice_url: Option<String>,
        #[command(flatten)]
        trust: Trust,
        #[command(flatten)]
        serve: Serve,
    },
    /// Listen for the packets modules send (as in the router) and show,
    /// per module, the version heard, the last timestamp and every outage.
    Monitor {
        /// Address to listen on (UDP).
        #[arg(long, default_value = "127.0.0.1:9301")]
        listen: std::net::SocketAddr,
        /// A silence longer than this is an outage.
        #[arg(long, default_value = "400ms", value_parser = parse_duration)]
        gap: Duration,
        /// Print the table every this often.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        every: Duration,
    },
    /// Measure swap pause (against state size and backlog), group scaling
    /// (concurrent and sequential), throughput, scale, faults and
    /// durability (relay under each sync policy, restart after a crash,
    /// handoff pause), shadow runs and the lattice (two hosts on a local
    /// nats-server) with real guest components; print tables, write CSV
    /// and SVG plots. Build with --release for figures worth reading.
    Bench {
        /// A brief run of every scenario.
        #[arg(long)]
        quick: bool,
        /// Where CSV and SVG files go.
        #[arg(long, default_value = "bench-results")]
        out: PathBuf,
        /// Run only these scenarios (comma-separated: pause_vs_state,
        /// pause_vs_backlog, group_scaling, throughput, scale, faults,
        /// durable_relay, durable_restart, durable_handoff, shadow_promote,
        /// shadow_cost, lattice; and dashboard,
        /// which runs only when named: it starts a headless Chromium).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Make an ed25519 key pair for signing modules: PREFIX.pub (give it
    /// to hosts with --trust) and PREFIX.key (mode 0600, keep it secret).
    /// Refuses to overwrite either file.
    Keygen {
        /// Path and name of the pair, without extension.
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
    },
    /// Sign .wasm files: write FILE.wasm.sig next to each, an ed25519
    /// signature over the file's digest (`sha256:<hex>` of its bytes, as
    /// a Load `pin` names it), and print the digest. A host started with
    /// `--trust PREFIX.pub` loads the file only while the two match.
    Sign {
        /// The secret key, PREFIX.key of `liveswap keygen`.
        #[arg(long, value_name = "PREFIX.key")]
        key: PathBuf,
        /// The files to sign.
        #[arg(required = true, value_name = "FILE.wasm")]
        files: Vec<PathBuf>,
    },
    /// Make a guest project that builds as it is: a module that checks
    /// each sender's numbers arrive in order, with typed, versioned state,
    /// on the SDK of its language (Rust: a crate with the wasm32-wasip2
    /// target configured; Python: a componentize-py project; JavaScript: a
    /// componentize-js project; both with unit tests that run without a
    /// host).
    New {
        /// The project's folder; its last part names it (e.g. `counter`).
        path: PathBuf,
        /// The guest's language.
        #[arg(long, value_enum, default_value = "rust")]
        lang: guest::Lang,
    },
    /// Build the guest project in a folder (default: this one) into a
    /// component, whatever its language, and say where the .wasm went.
    /// A missing target or tool is named with the command that installs it.
    Build {
        /// The project's folder.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Publish a component to an OCI registry, as the Wasm OCI artifact
    /// (config application/vnd.wasm.config.v0+json, layer
    /// application/wasm), with its signature (FILE.wasm.sig, if there is
    /// one) as an annotation of the manifest. Hosts then take it by tag or
    /// digest: `Load NAME oci://REGISTRY/REPO:TAG`, `Replace NAME
    /// oci://REGISTRY/REPO@sha256:...`; they check the blob against its
    /// digest and, with --trust, the signature, before compiling. A
    /// registry on a loopback address is spoken to in plain HTTP.
    Push {
        /// The component.
        file: PathBuf,
        /// Where: oci://REGISTRY/REPOSITORY:TAG.
        reference: String,
    },
    /// Print the command language.
    HelpCommands,
    /// Print a completion script for a shell, e.g.
    /// `liveswap completions bash > ~/.local/share/bash-completion/completions/liveswap`
    /// or `liveswap completions zsh > ~/.zfunc/_liveswap`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (liveswap.1), or write it and one page per
    /// subcommand (liveswap-run.1, ...) into a folder:
    /// `liveswap man --out ~/.local/share/man/man1`.
    Man {
        /// Write every page into this folder instead.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    liveswap_ops::command::parse_duration(s)
}

/// Where `run` keeps compiled code, if anywhere.
fn compile_cache(asked: Option<&Path>) -> Option<PathBuf> {
    match asked {
        Some(p) if p == Path::new("none") => None,
        Some(p) => Some(p.to_path_buf()),
        None => std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|d| d.join("liveswap").join("compiled")),
    }
}

fn guests_dir() -> PathBuf {
    Path::new(liveswap_guests::PROBE_V1)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LIVESWAP_LOG")
                // The lattice says in its own words what its NATS client
                // would log at every reconnect attempt.
                .unwrap_or_else(|_| "warn,async_nats=off".into()),
        )
        .with_writer(std::io::stderr)
        // Colour for a person at a terminal, never into a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // The error chain once, on one line: `error: --trust: ...: <why>`.
    // (Returning the error from `main` would print its Debug form, and a
    // backtrace whenever RUST_BACKTRACE is set.)
    match dispatch(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Cmd::HelpCommands => {
            say(liveswap_ops::command::help());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run(args) => host::run(&args),
        Cmd::New { path, lang } => guest::new(&path, lang),
        Cmd::Build { dir } => guest::build(&dir),
        Cmd::Completions { shell } => {
            use clap::CommandFactory as _;
            let mut out = std::io::stdout().lock();
            clap_complete::generate(shell, &mut Cli::command(), "liveswap", &mut out);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Man { out } => man(out.as_deref()),
        Cmd::Demo {
            beat,
            settle,
            gap,
            monitor,
            lattice,
            lattice_url,
            trust,
            serve,
        } => {
            let spread = lattice.then(|| liveswap_demo::LatticeDemo {
                url: lattice_url,
                binary: std::env::current_exe().unwrap_or_else(|_| "liveswap".into()),
            });
            demo((beat, settle, gap), monitor, spread, &trust, &serve)
        }
        Cmd::Ctl {
            connect,
            file,
            json,
            command,
        } => ctl(&connect, file.as_deref(), json, &command),
        Cmd::Shell {
            connect,
            local,
            admin,
            trust,
        } => {
            let serve = Serve {
                admin,
                no_admin: false,
                admin_tcp: None,
                token_file: None,
                admin_idle: admin::DEFAULT_IDLE,
                http: None,
            };
            let trusted = Trust { keys: trust }.read()?;
            shell::run(&connect_or_local(&connect, local), &serve, trusted)
        }
        Cmd::Keygen { out } => {
            let (public, secret) = liveswap::signing::keygen(&out)?;
            say(format_args!(
                "public key: {} (give it to hosts: --trust)",
                public.display()
            ));
            say(format_args!(
                "secret key: {} (mode 0600; keep it secret)",
                secret.display()
            ));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Sign { key, files } => sign(&key, &files),
        Cmd::Push { file, reference } => {
            let p = liveswap_ops::oci::push(&file, &reference)?;
            let repo = reference
                .rsplit_once(':')
                .filter(|(_, tag)| !tag.contains('/'))
                .map_or(reference.as_str(), |(r, _)| r);
            say(format_args!(
                "pushed {} ({}, {}) to {reference}: {repo}@{}",
                file.display(),
                p.component,
                if p.signed { "signed" } else { "unsigned" },
                p.manifest
            ));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Monitor { listen, gap, every } => monitor(listen, gap, every),
        Cmd::Bench { quick, out, only } => {
            if cfg!(debug_assertions) {
                eprintln!("note: this is a debug build; build with --release for real figures");
            }
            let dir = guests_dir();
            let opts = liveswap_bench::BenchOptions {
                quick,
                out: out.clone(),
                probe_v1: dir.join("probe_v1.wasm"),
                probe_v2: dir.join("probe_v2.wasm"),
                probe_v4: dir.join("probe_v4.wasm"),
                only,
            };
            let started = std::time::Instant::now();
            liveswap_bench::run(&opts, &mut |s| {
                say(format_args!(
                    "[{:>6.1}s] {s}",
                    started.elapsed().as_secs_f64()
                ))
            })?;
            say(format_args!("CSV and SVG files in {}", out.display()));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn man(out: Option<&Path>) -> anyhow::Result<ExitCode> {
    use clap::CommandFactory as _;
    let cmd = Cli::command();
    match out {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page)?;
            say(String::from_utf8_lossy(&page).trim_end());
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("making {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
            say(format_args!(
                "man pages written to {} (try: man -l {}/liveswap.1)",
                dir.display(),
                dir.display()
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn sign(key: &Path, files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let key = liveswap::signing::read_secret_key(key).context("reading the signing key")?;
    for f in files {
        let signed = liveswap::signing::sign_file(&key, f)?;
        say(format_args!(
            "{} {} -> {}",
            signed.digest,
            f.display(),
            signed.sig_path.display()
        ));
    }
    Ok(ExitCode::SUCCESS)
}

fn demo(
    (beat, settle, gap): (u32, Duration, Duration),
    monitor: std::net::SocketAddr,
    lattice: Option<liveswap_demo::LatticeDemo>,
    trust: &Trust,
    serve: &Serve,
) -> anyhow::Result<ExitCode> {
    use liveswap_demo::{self as demo, Narration};
    let trusted_keys = trust.read()?;
    let mut vars = script::Vars::default();
    vars.set("GUESTS", guests_dir().display().to_string());
    vars.set("BEAT", beat.to_string());
    vars.set("SETTLE", format!("{}ms", settle.as_millis()));
    let started = std::time::Instant::now();
    let stamp = move || format!("{:>6.2}s", started.elapsed().as_secs_f64());
    let narrate: Arc<dyn Fn(Narration) + Send + Sync> = Arc::new(move |n| match n {
        Narration::Heading(h) => say(format_args!("\n{} ━━ {h}", stamp())),
        Narration::Command(c) => say(format_args!("{} > {c}", stamp())),
        Narration::Reply(r) => say(format_args!("{}   {r}", stamp())),
        Narration::Transaction(r) => say(format_args!("{} {}", stamp(), r.to_text())),
        Narration::Log(l) => say(format_args!("{}   {l}", stamp())),
        Narration::Monitor(m) => say(format_args!("{}   [{m}]", stamp())),
    });
    say(format_args!(
        "liveswap demo: the non-stop router, upgraded live{} (Ctrl-C to stop)",
        if lattice.is_some() {
            " and moved between three hosts"
        } else {
            ""
        }
    ));
    let script = match &lattice {
        Some(_) => demo::LATTICE_SCRIPT,
        None => demo::ROUTER_SCRIPT,
    };
    let result = demo::run(
        demo::DemoOptions {
            vars,
            gap,
            script: script.to_string(),
            monitor,
            admin: admin_options(serve)?,
            http: web_options(serve)?,
            trusted_keys,
            state_dir: None,
            host_binary: std::env::current_exe().ok(),
            handoff_stay: settle,
            lattice,
        },
        narrate,
    )?;
    say(format_args!("\n━━ Summary\n{}", result.summary()));
    Ok(if result.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn monitor(
    listen: std::net::SocketAddr,
    gap: Duration,
    every: Duration,
) -> anyhow::Result<ExitCode> {
    use liveswap_demo::monitor::{Monitor, Notice};
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut m =
        Monitor::start(listen, gap, Some(tx)).with_context(|| format!("listening on {listen}"))?;
    let (stop_tx, stop_rx) = bounded::<()>(1);
    ctrlc::set_handler(move || {
        let _ = stop_tx.try_send(());
    })
    .context("installing the Ctrl-C handler")?;
    say(format_args!(
        "monitor listening on {} (outage: silence over {gap:?})",
        m.addr()
    ));
    let started = std::time::Instant::now();
    let table = |m: &Monitor| {
        for h in m.snapshot() {
            let versions: Vec<String> = h.versions.iter().map(|(v, _)| format!("v{v}")).collect();
            say(format_args!(
                "  {:<6} now v{:<4} heard {:<20} last ts {} µs, {} outage(s)",
                h.module,
                h.versions.last().map(|v| v.0.as_str()).unwrap_or("?"),
                versions.join("->"),
                h.last_ts_us,
                h.outages.len()
            ));
        }
    };
    let ticker = crossbeam_channel::tick(every);
    loop {
        crossbeam_channel::select! {
            recv(rx) -> n => match n {
                Ok(Notice::Heard { module, version }) => say(format_args!("{:>7.2}s heard {module} v{version}", started.elapsed().as_secs_f64())),
                Ok(Notice::Version { module, from, to }) => say(format_args!("{:>7.2}s {module} v{from} -> v{to}", started.elapsed().as_secs_f64())),
                Ok(Notice::Outage(o)) => say(format_args!(
                    "{:>7.2}s OUTAGE {} silent for {:.0} ms",
                    started.elapsed().as_secs_f64(),
                    o.module,
                    o.duration().as_secs_f64() * 1000.0
                )),
                Err(_) => break,
            },
            recv(ticker) -> _ => table(&m),
            recv(stop_rx) -> _ => break,
        }
    }
    m.stop();
    table(&m);
    Ok(ExitCode::SUCCESS)
}

fn read_token(file: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the token file {}", file.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    anyhow::ensure!(
        !token.is_empty(),
        "the token file {} is empty",
        file.display()
    );
    Ok(token)
}

/// The admin endpoint a host should serve, if any.
fn admin_options(serve: &Serve) -> anyhow::Result<Option<AdminOptions>> {
    if serve.no_admin {
        return Ok(None);
    }
    let token = serve.token_file.as_deref().map(read_token).transpose()?;
    Ok(Some(AdminOptions {
        unix: Some(
            serve
                .admin
                .clone()
                .unwrap_or_else(admin::default_socket_path),
        ),
        tcp: serve.admin_tcp,
        token,
        idle: Some(serve.admin_idle),
        ..AdminOptions::default()
    }))
}

/// The dashboard a host should serve, if any.
fn web_options(serve: &Serve) -> anyhow::Result<Option<WebOptions>> {
    let Some(addr) = serve.http else {
        return Ok(None);
    };
    let token = serve.token_file.as_deref().map(read_token).transpose()?;
    Ok(Some(WebOptions { addr, token }))
}

/// Start the dashboard a host should serve, if any, and say where.
fn start_web(rt: &Arc<liveswap::Runtime>, serve: &Serve) -> anyhow::Result<Option<WebServer>> {
    let Some(opts) = web_options(serve)? else {
        return Ok(None);
    };
    let server = WebServer::start(rt.clone(), opts).context("starting the dashboard")?;
    Ok(Some(server))
}

/// Start the admin endpoint a host should serve, if any.
fn start_admin(rt: &Arc<liveswap::Runtime>, serve: &Serve) -> anyhow::Result<Option<AdminServer>> {
    start_admin_with(rt, serve, admin::Listeners::default())
}

/// Start the admin endpoint on sockets a previous host handed over (or
/// fresh ones).
fn start_admin_with(
    rt: &Arc<liveswap::Runtime>,
    serve: &Serve,
    inherited: admin::Listeners,
) -> anyhow::Result<Option<AdminServer>> {
    let Some(mut opts) = admin_options(serve)? else {
        return Ok(None);
    };
    opts.inherited = inherited;
    let server = AdminServer::start(rt.clone(), opts).context("starting the admin endpoint")?;
    Ok(Some(server))
}

/// Where a client should go.
pub(crate) enum Target {
    Unix(PathBuf),
    Tcp(std::net::SocketAddr, PathBuf),
    Local,
}

fn connect_or_local(c: &Connect, local: bool) -> Target {
    if local {
        return Target::Local;
    }
    match (&c.tcp, &c.token_file) {
        (Some(a), Some(f)) => Target::Tcp(*a, f.clone()),
        _ => Target::Unix(c.connect.clone().unwrap_or_else(admin::default_socket_path)),
    }
}

pub(crate) fn dial(t: &Target) -> anyhow::Result<Client> {
    match t {
        Target::Unix(p) => {
            Client::unix(p).with_context(|| format!("cannot reach a host at {}", p.display()))
        }
        Target::Tcp(a, f) => {
            let token = read_token(f)?;
            Client::tcp(*a, &token).with_context(|| format!("connecting to the host at tcp {a}"))
        }
        Target::Local => anyhow::bail!("no host to reach"),
    }
}

/// Dial the host, or the exit status that says why not: 4 unreachable,
/// 1 refused (a wrong token, a socket of another user). The reason is
/// printed.
pub(crate) fn connect(t: &Target) -> Result<Client, ExitCode> {
    dial(t).map_err(|e| {
        eprintln!("error: {e:#}");
        let denied = e
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied);
        ExitCode::from(if denied { 1 } else { admin::EXIT_UNREACHABLE })
    })
}

/// Whether the host at `t` runs on this machine: then this client
/// resolves paths for it.
fn host_is_here(t: &Target) -> bool {
    match t {
        Target::Unix(_) | Target::Local => true,
        Target::Tcp(a, _) => a.ip().is_loopback(),
    }
}

/// A line as the host should get it: `$GUESTS` (the guest modules this
/// binary was built with) expanded, and, when the host runs on this
/// machine, relative paths made absolute against `base` (this directory,
/// or a script's folder) — whether or not the file exists yet.
pub(crate) fn for_host(line: &str, t: &Target, base: &Path) -> String {
    let guests = guests_dir().display().to_string();
    let line = line
        .replace("${GUESTS}", &guests)
        .replace("$GUESTS", &guests);
    if host_is_here(t) {
        liveswap_ops::command::resolve_paths(&line, base)
    } else {
        line
    }
}

/// Print a line on stdout. A reader that went away (`| head -1`) ends
/// this process quietly, with status 0: it had what it wanted.
pub(crate) fn say(line: impl std::fmt::Display) {
    use std::io::Write as _;
    if let Err(e) = writeln!(std::io::stdout().lock(), "{line}")
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

/// Re-quote words the shell split, so `Send A do "send B 3"` survives.
fn join_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if w.is_empty() || w.contains(char::is_whitespace) || w.contains('"') || w.contains('#')
            {
                format!("\"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""))
            } else {
                w.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn ctl(
    connect_to: &Connect,
    file: Option<&Path>,
    json: bool,
    command: &[String],
) -> anyhow::Result<ExitCode> {
    let here = std::env::current_dir().context("the working directory")?;
    let (lines, base): (Vec<String>, PathBuf) = match file {
        Some(f) => (
            std::fs::read_to_string(f)
                .with_context(|| format!("reading {}", f.display()))?
                .lines()
                .map(str::to_string)
                .collect(),
            // A script's paths are relative to the script.
            std::path::absolute(f)
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .unwrap_or(here),
        ),
        None if command.is_empty() => {
            anyhow::bail!("give a command (e.g. `liveswap ctl Status`) or -f SCRIPT")
        }
        None => (vec![join_words(command)], here),
    };
    let target = connect_or_local(connect_to, false);
    let mut client = match connect(&target) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    if json {
        client.command("Json on", |_| {})?;
    }
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let sent = for_host(trimmed, &target, &base);
        // A Watch streams until the host goes away or Ctrl-C.
        let fin = client.command(&sent, |l| say(l))?;
        let code = fin.exit_code();
        match &fin {
            Final::Err(e) => eprintln!(
                "error: {}{e}",
                file.map(|f| format!("{}:{}: ", f.display(), i + 1))
                    .unwrap_or_default()
            ),
            Final::Ok(o) if code != 0 => eprintln!("{o}"),
            Final::Ok(_) => {}
        }
        if code != 0 {
            return Ok(ExitCode::from(code));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn the_limit_flags_default_to_the_core_defaults() {
        use clap::Parser;
        let cli = super::Cli::try_parse_from(["liveswap", "run", "x.ls"]).expect("parses");
        let super::Cmd::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.limits.limits(), liveswap::Limits::default());
    }

    #[test]
    fn words_are_quoted_back() {
        let w: Vec<String> = ["Send", "A", "do", "send B 3"].map(String::from).to_vec();
        assert_eq!(super::join_words(&w), r#"Send A do "send B 3""#);
    }
}
