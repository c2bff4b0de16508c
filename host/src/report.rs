//! What a transaction did: outcome, reason, and per-module timings. Printed
//! after each upgrade command, kept in `History`, and emitted on the event
//! stream.

use serde_json::json;

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
    /// Per target.
    pub modules: Vec<ModuleReport>,
    /// Reading, compiling, pre-linking and instantiating the new versions.
    pub prepare_us: u64,
    /// From the command's start to its end.
    pub total_us: u64,
    /// `concurrent` or `sequential`.
    pub mode: String,
}

fn us(v: Option<u64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v >= 10_000 => format!("{:.1} ms", v as f64 / 1000.0),
        Some(v) => format!("{v} µs"),
    }
}

impl TransactionReport {
    /// The JSON form (`{"event":"transaction",...}`).
    pub fn to_json(&self) -> serde_json::Value {
        let modules: Vec<_> = self
            .modules
            .iter()
            .map(|m| {
                json!({"name": m.name, "from": m.from, "to": m.to,
                       "quiesce_us": m.quiesce_us, "pause_us": m.pause_us,
                       "buffered": m.buffered, "state_bytes": m.state_bytes})
            })
            .collect();
        json!({
            "event": "transaction", "id": self.id, "command": self.command,
            "origin": self.origin, "outcome": self.outcome.as_str(),
            "reason": self.reason, "modules": modules, "prepare_us": self.prepare_us,
            "total_us": self.total_us, "mode": self.mode,
        })
    }

    /// A few lines for people.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "== transaction {} {}: {} (prepare {}, total {}, {})",
            self.id,
            self.outcome.as_str().to_uppercase(),
            self.command,
            us(Some(self.prepare_us)),
            us(Some(self.total_us)),
            self.mode
        );
        if let Some(r) = &self.reason {
            out.push_str(&format!("\n   reason: {r}"));
        }
        for m in &self.modules {
            out.push_str(&format!(
                "\n   {:<10} {:>6} -> {:<6} quiesce {:>9}  pause {:>9}  buffered {}",
                m.name,
                m.from
                    .as_deref()
                    .map(|v| format!("v{v}"))
                    .unwrap_or("-".into()),
                m.to.as_deref()
                    .map(|v| format!("v{v}"))
                    .unwrap_or("-".into()),
                us(m.quiesce_us),
                us(m.pause_us),
                m.buffered
            ));
        }
        out
    }
}
