//! What `History` shows: every command the host ran (not inspections) and
//! every transaction, the automatic rollbacks included.

use std::time::SystemTime;

use crate::report::TransactionReport;

/// One command run by the host.
#[derive(Clone, Debug)]
pub struct CommandRecord {
    /// When it ended.
    pub at: SystemTime,
    /// Who asked (`script.ls:3`, `unix:2`, `tcp:127.0.0.1:5123`,
    /// `probation`, ...).
    pub origin: String,
    /// The command as written.
    pub line: String,
    /// `done`, `committed`, `aborted`, `refused`, `rolled-back` or
    /// `error: ...`.
    pub outcome: String,
    /// The transaction it ran, if an upgrade.
    pub transaction: Option<u64>,
}

/// The history of one host, oldest first.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Every command so far.
    pub commands: Vec<CommandRecord>,
    /// Every transaction so far.
    pub transactions: Vec<TransactionReport>,
}
