//! The requests a runtime runs: every command of the command language as
//! data. The text form (parsing, quoting, `Display`) belongs to the
//! operator layer (`liveswap-ops`); the runtime only runs these.

use std::path::PathBuf;
use std::time::Duration;

use crate::guest::Grant;

mod display;

/// How group votes are collected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One CanCommit to every target at once (the default).
    Concurrent,
    /// One target at a time, each waiting for the previous vote.
    Sequential,
    /// Every target at once, and none waits paused for the others: each
    /// hands its state to its new version at its TERM, votes, and serves
    /// on; at a commit all switch at a second marker queued in every
    /// mailbox before any of them switches, the new version first
    /// replaying what its old one served since the vote.
    Early,
}

impl Mode {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Concurrent => "concurrent",
            Mode::Sequential => "sequential",
            Mode::Early => "early",
        }
    }
}

/// Options of `Load` (and of each new module of `Syn_Load`/`Syn_Upgrade`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Bytes given to the guest's `init`.
    pub config: Vec<u8>,
    /// Mailbox capacity, if not the host's default.
    pub capacity: Option<usize>,
    /// Capabilities; a `Replace` keeps them.
    pub grants: Vec<Grant>,
    /// The digest (`sha256:<hex>`) the file must have, if pinned.
    pub pin: Option<String>,
    /// Linear-memory limit of its instances in bytes, if not the host's
    /// default; a `Replace` keeps it.
    pub memory: Option<usize>,
}

impl LoadOptions {
    /// Whether any option was given.
    pub fn is_empty(&self) -> bool {
        self == &LoadOptions::default()
    }
}

/// A (name, file) pair of an upgrade command, with options for a module
/// being loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Module name.
    pub name: String,
    /// The `.wasm` file.
    pub path: PathBuf,
    /// Options (new modules only).
    pub options: LoadOptions,
}

/// Which group command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupKind {
    /// `Replace` (one target) and `Syn_Replace`: every name is loaded.
    Replace,
    /// `Syn_Load`: no name is loaded; all start together.
    Load,
    /// `Syn_Upgrade`: loaded names are replaced, the others loaded.
    Upgrade,
}

/// What a timed shadow does when its time is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ShadowEnd {
    /// It takes over (`then promote`).
    Promote,
    /// It is dropped (`then drop`, the default).
    #[default]
    Drop,
}

/// `Shadow <name> <file.wasm> [for <duration> [then promote|drop]]
/// [queue <n>] [except <kind>[,<kind>...]] [pin sha256:<hex>]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShadowSpec {
    /// The module shadowed.
    pub name: String,
    /// The new version's file.
    pub path: PathBuf,
    /// The digest the file must have, if pinned.
    pub pin: Option<String>,
    /// How long it runs before `then` (none: until `Promote` or
    /// `Unshadow`).
    pub run_for: Option<Duration>,
    /// What happens when `run_for` is up.
    pub then: ShadowEnd,
    /// Most messages it may fall behind (none: the host's default).
    pub queue: Option<usize>,
    /// Message kinds the new version answers differently on purpose:
    /// their effects are not compared.
    pub except: Vec<String>,
}

/// Most messages a shadow may fall behind the version it runs beside,
/// unless `queue` says otherwise.
pub const SHADOW_QUEUE: usize = 4096;

/// One command.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// `Load <name> <file.wasm> [config "<text>"] [capacity N]`.
    Load {
        /// Module name.
        name: String,
        /// The file.
        path: PathBuf,
        /// Options.
        options: LoadOptions,
    },
    /// `Unload <name>`.
    Unload(String),
    /// `Move <name> <host>`: the module, with its state, mailbox, timers
    /// and subscriptions, to another host of the lattice.
    Move {
        /// Module name.
        name: String,
        /// The host's id.
        host: String,
    },
    /// `Enable <name>`.
    Enable(String),
    /// `Disable <name>`.
    Disable(String),
    /// `Replace`, `Syn_Replace`, `Syn_Load`, `Syn_Upgrade`.
    Upgrade {
        /// Which command.
        kind: GroupKind,
        /// Its targets, in order.
        targets: Vec<Target>,
    },
    /// `SetTimer <duration>`: the quiescence bound.
    SetTimer(Duration),
    /// `SetMode concurrent|sequential|early`.
    SetMode(Mode),
    /// `SetProbation <duration> [errors <percent>%]`: after each commit,
    /// a fault in a new version within the window rolls the group back.
    SetProbation {
        /// The window; zero turns probation off.
        window: Duration,
        /// Error rate (percent of messages served) that counts as a fault.
        max_error_pct: u32,
    },
    /// `SetCheckpoint <duration>`: how often recovery points are renewed.
    SetCheckpoint(Duration),
    /// `Shadow`: run a new version beside the module's, on a copy of its
    /// traffic, its effects compared and never delivered.
    Shadow(ShadowSpec),
    /// `Promote <name> [<name>...]`: the shadows take over, all or none.
    Promote(Vec<String>),
    /// `Unshadow <name>`: drop the module's shadow.
    Unshadow(String),
    /// `Poison <name>`: list the messages set aside.
    Poison(String),
    /// `Send <name> <kind> [text]`: inject a message from `$admin`.
    Send {
        /// Receiver.
        to: String,
        /// Message kind.
        kind: String,
        /// Body (UTF-8 text).
        body: String,
    },
    /// `Wait <duration>`.
    Wait(Duration),
    /// `Status`.
    Status,
    /// `Versions`.
    Versions,
    /// `History`.
    History,
    /// `Help`.
    Help,
    /// `Quit`.
    Quit,
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
