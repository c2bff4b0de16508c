//! What a transaction did: outcome, reason, and per-module timings. Printed
//! after each upgrade command, kept in `History`, and emitted on the event
//! stream.

/// How a transaction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every target swapped (or started).
    Committed,
    /// Some target voted NO or missed the bound; every old version serves on.
    Aborted,
    /// Validation failed; nothing was touched.
    Refused,
    /// An automatic rollback after a broken probation: every module of
    /// the group runs the version it ran before the transaction again.
    RolledBack,
}

impl Outcome {
    /// Lower-case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Committed => "committed",
            Outcome::Aborted => "aborted",
            Outcome::Refused => "refused",
            Outcome::RolledBack => "rolled-back",
        }
    }
}

/// One target of a transaction.
#[derive(Clone, Debug, Default)]
pub struct ModuleReport {
    /// Module name.
    pub name: String,
    /// Version label it ran before (none for a module being loaded).
    pub from: Option<String>,
    /// Version label it was to run.
    pub to: Option<String>,
    /// TERM queued → TERM reached: the module still serves meanwhile.
    pub quiesce_us: Option<u64>,
    /// TERM reached → next message servable: nothing is served meanwhile.
    pub pause_us: Option<u64>,
    /// Messages that waited behind TERM.
    pub buffered: usize,
    /// Bytes of state handed from the old version to the new one.
    pub state_bytes: Option<usize>,
    /// Of the pause: the old version's `put-state` (handing its state
    /// out) and the new version's `get-state` (taking it in). The rest of
    /// the pause is the host's.
    pub put_state_us: Option<u64>,
    pub get_state_us: Option<u64>,
    /// The file was the very version the module ran (same digest): a
    /// fresh instance took the state over, and nothing else changed.
    pub same_version: bool,
    /// The lattice host that serves the module, when a group spans hosts
    /// and it is not this one.
    pub host: Option<String>,
}

/// A finished transaction.
#[derive(Clone, Debug)]
pub struct TransactionReport {
    /// Sequence number within this host.
    pub id: u64,
    /// The command as given.
    pub command: String,
    /// Where the command came from (`script:LINE`, `api`, `admin`...).
    pub origin: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it aborted or was refused, naming the module.
    pub reason: Option<String>,
    /// The NO vote that aborted it, as data (none for a refusal in
    /// validation, or a commit).
    pub refusal: Option<Refusal>,
    /// The transaction this one waited for before it could start (an
    /// automatic rollback that became due while an operator's command ran).
    pub waited_for: Option<String>,
    /// Per target.
    pub modules: Vec<ModuleReport>,
    /// Reading, compiling, pre-linking and instantiating the new versions.
    pub prepare_us: u64,
    /// From the command's start to its end.
    pub total_us: u64,
    /// `concurrent` or `sequential`.
    pub mode: String,
}

/// The step of a transaction in which a participant said NO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Asked to join: it could not take part at all.
    Join,
    /// Draining what was queued ahead of TERM.
    Quiescence,
    /// The old version's `put-state`.
    PutState,
    /// The new version's `get-state`.
    GetState,
    /// A rollback rebuilding the old version from its recovery point.
    Rebuild,
    /// The coordinator's bound (`SetTimer`).
    Bound,
}

/// What went wrong, in the words of the phase it went wrong in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The module is faulted.
    Faulted,
    /// The module is in another transaction.
    Busy,
    /// The module has stopped.
    Stopped,
    /// The module is not on probation after that transaction any more.
    NotOnProbation(u64),
    /// The transaction was decided (aborted) before this vote.
    AlreadyAborted,
    /// A guest call trapped or overran its deadline: the version, and
    /// the fault in one line.
    Trap {
        /// Label of the version that trapped.
        version: String,
        /// The fault.
        fault: String,
    },
    /// A guest call returned an error.
    Error {
        /// Label of the version.
        version: String,
        /// The guest's own error string.
        error: String,
    },
    /// `put-state` handed over more than the state limit.
    OverLimit {
        /// Label of the version.
        version: String,
        /// What it handed over.
        bytes: usize,
        /// The limit (`--max-state`).
        limit: usize,
    },
    /// `put-state` or `get-state` was still running when the vote's bound
    /// passed, and was interrupted.
    OutOfTime {
        /// Label of the version.
        version: String,
        /// The bound.
        bound: std::time::Duration,
    },
    /// A rebuild failed: why.
    Rebuild(String),
    /// These modules (each described with what it still had queued) did
    /// not vote within the bound.
    Late {
        /// One description per late module.
        late: Vec<String>,
        /// The bound.
        bound: std::time::Duration,
    },
    /// A module thread went away during the vote.
    Gone,
    /// The bound passed as the last vote came in.
    BoundPassed,
    /// `Promote`: no shadow can take over; what became of it.
    NoShadow(String),
    /// A group spanning hosts: another host refused, voted NO, did not
    /// answer, or decided before this one could (the sentence names it).
    Host(String),
}

/// Why a transaction did not commit: which module, in which phase, and
/// what went wrong. `Display` gives the sentence reports print; tests and
/// scripts match on the fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The module that said NO (the first late one, for a missed bound).
    pub module: String,
    /// Where.
    pub phase: Phase,
    /// What.
    pub cause: Cause,
}

impl Refusal {
    /// A refusal of `module` in `phase`.
    pub fn new(module: &str, phase: Phase, cause: Cause) -> Self {
        Refusal {
            module: module.to_string(),
            phase,
            cause,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.module;
        match (&self.cause, self.phase) {
            (Cause::Faulted, _) => write!(f, "{m} is faulted"),
            (Cause::Busy, _) => write!(f, "{m} is already in a transaction"),
            (Cause::Stopped, _) => write!(f, "{m} has stopped"),
            (Cause::NotOnProbation(g), _) => {
                write!(f, "{m} is no longer on probation after transaction {g}")
            }
            (Cause::AlreadyAborted, _) => write!(f, "{m}: the transaction was already aborted"),
            (Cause::Trap { version, fault }, Phase::Quiescence) => {
                write!(
                    f,
                    "{m} v{version}: {fault} (old version, before quiescence)"
                )
            }
            (Cause::Trap { version, fault }, _) => write!(f, "{m} v{version}: {fault}"),
            (Cause::Error { version, error }, phase) => {
                let call = if phase == Phase::GetState {
                    "get-state"
                } else {
                    "put-state"
                };
                write!(f, "{m} v{version}: {call} returned an error: {error}")
            }
            (
                Cause::OverLimit {
                    version,
                    bytes,
                    limit,
                },
                _,
            ) => write!(
                f,
                "{m} v{version}: put-state returned {bytes} bytes, over the limit of {limit}"
            ),
            (Cause::OutOfTime { version, bound }, phase) => {
                let call = if phase == Phase::GetState {
                    "get-state"
                } else {
                    "put-state"
                };
                write!(
                    f,
                    "{m} v{version}: {call} did not return within the vote's bound of {bound:?}; it was interrupted"
                )
            }
            (Cause::Rebuild(why), _) => write!(f, "{m}: {why}"),
            (Cause::Late { late, bound }, Phase::Rebuild) => write!(
                f,
                "{} did not prepare its old version within {bound:?}",
                late.join(", ")
            ),
            (Cause::Late { late, bound }, _) => write!(
                f,
                "{} did not reach quiescence within the bound of {bound:?}",
                late.join(", ")
            ),
            (Cause::Gone, _) => write!(f, "a module thread went away during the vote"),
            (Cause::NoShadow(why), _) => write!(f, "{m} cannot be promoted: {why}"),
            (Cause::BoundPassed, _) => write!(f, "the bound passed as the last vote came in"),
            (Cause::Host(why), _) => write!(f, "{why}"),
        }
    }
}
