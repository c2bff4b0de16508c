//! Reports, events and inspections for people: the text the shell, the
//! CLI and the admin endpoint print.

use std::fmt::Write as _;

use liveswap::bindings::Level;
use liveswap::bus::WINDOW_SECS;
use liveswap::guest::Grant;
use liveswap::{Event, History, PoisonList, StatusReport, TransactionReport, VersionsReport};

/// Something with a form for people.
pub trait ToText {
    /// A line, or a few, for people.
    fn to_text(&self) -> String;
}

pub(crate) fn level_str(level: Level) -> &'static str {
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}

fn us(v: Option<u64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v >= 10_000 => format!("{:.1} ms", v as f64 / 1000.0),
        Some(v) => format!("{v} µs"),
    }
}

impl ToText for Event {
    /// The event as a line for people.
    fn to_text(&self) -> String {
        match self {
            Event::Log {
                module,
                version,
                level,
                line,
            } => {
                // The host's own lines carry no version.
                let who = if version.is_empty() {
                    module.to_string()
                } else {
                    format!("{module} v{version}")
                };
                match level {
                    Level::Warn | Level::Error => {
                        format!("{who} | {}: {line}", level_str(*level))
                    }
                    _ => format!("{who} | {line}"),
                }
            }
            Event::Module {
                module,
                version,
                state,
                detail,
            } => match detail {
                Some(d) => format!("-- {module} v{version} {state}: {d}"),
                None => format!("-- {module} v{version} {state}"),
            },
            Event::Transaction(r) => r.to_text(),
            Event::Progress { text, .. } => format!(".. {text}"),
            Event::Skipped { count } => {
                format!("!! {count} event(s) skipped: this reader did not keep up (--watch-queue)")
            }
        }
    }
}

impl ToText for TransactionReport {
    /// A few lines for people.
    fn to_text(&self) -> String {
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
        if let Some(w) = &self.waited_for {
            out.push_str(&format!("\n   waited for {w} to end"));
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
            if let (Some(put), Some(get)) = (m.put_state_us, m.get_state_us) {
                out.push_str(&format!("  (put-state {put} µs, get-state {get} µs)"));
            }
            if let Some(h) = &m.host {
                out.push_str(&format!("  on host {h}"));
            }
            if m.same_version {
                out.push_str(&format!(
                    "\n   {:<10} (the file it ran already: a fresh instance took its state over; nothing else changed)",
                    ""
                ));
            }
        }
        out
    }
}

impl ToText for History {
    fn to_text(&self) -> String {
        let records = self;
        let mut out = String::new();
        for c in &records.commands {
            let _ = writeln!(
                out,
                "[{}] {} `{}` -> {}",
                humantime::format_rfc3339_millis(c.at),
                c.origin,
                c.line,
                c.outcome
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
}

/// A byte count for people: `512 B`, `1.5 KiB`, `64 MiB`.
pub fn bytes(n: usize) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

impl ToText for StatusReport {
    fn to_text(&self) -> String {
        let admin = self;
        let mut out = String::new();
        let t = admin.bound.as_secs_f64();
        let _ = writeln!(
            out,
            "{:<10} {:<8} {:<13} {:<10} {:>7} {:>9} {:>7} {:>6}  ARRIVING (messages/s over the last {WINDOW_SECS}s, by sender)",
            "MODULE", "VERSION", "DIGEST", "STATE", "QUEUED", "SERVED", "ERRORS", "FAULTS"
        );
        for s in &self.modules {
            let total: f64 = s.rates.iter().map(|(_, r)| r).sum();
            let need = (total * t).ceil() as u64;
            let rates: Vec<String> = s
                .rates
                .iter()
                .filter(|(_, r)| *r > 0.0)
                .map(|(k, r)| format!("{k} {r:.1}"))
                .collect();
            let arriving = if rates.is_empty() {
                "-".to_string()
            } else {
                rates.join(", ")
            };
            let _ = writeln!(
                out,
                "{:<10} {:<8} {:<13} {:<10} {:>7} {:>9} {:>7} {:>6}  {}",
                s.name,
                format!("v{}", s.version.label()),
                s.version.short_digest(),
                s.state.as_str(),
                s.depth,
                s.served,
                s.errors,
                s.faults,
                arriving,
            );
            // The queueing model: what an upgrade's quiescence bound would
            // make this mailbox hold at the current arrival rate.
            let model = if total == 0.0 {
                "nothing arriving".to_string()
            } else if need as usize > s.capacity {
                format!(
                    "at {total:.1}/s a quiescence of T={t}s queues {need}: OVER CAPACITY (senders are refused while it lasts)"
                )
            } else {
                format!("at {total:.1}/s a quiescence of T={t}s queues {need}: ok")
            };
            let _ = writeln!(
                out,
                "{:<10} mailbox holds {} message(s); {model}",
                "", s.capacity
            );
            let calls = if s.calls == 0 {
                "no calls yet".to_string()
            } else {
                format!("{:.1} message(s) a call", s.served as f64 / s.calls as f64)
            };
            let batches = if s.version.takes_batches() {
                "takes batches"
            } else {
                "one message a call"
            };
            let _ = writeln!(
                out,
                "{:<10} served in {} call(s), {calls} ({batches})",
                "", s.calls
            );
            if let Some(f) = &s.last_fault {
                let _ = writeln!(out, "{:<10} last fault: {f}", "");
            }
            if let Some(h) = &s.shadow {
                let _ = writeln!(out, "{:<10} {}", "", shadow_line(h));
            }
            let _ = writeln!(out, "{:<10} {}", "", grants_line(&s.grants));
            if s.recoveries > 0 || s.poisoned > 0 {
                let _ = writeln!(
                    out,
                    "{:<10} recovered {} time(s); {} poison message(s) (Poison {})",
                    "", s.recoveries, s.poisoned, s.name
                );
            }
            let _ = writeln!(
                out,
                "{:<10} recovery point: {} + {} logged message(s) ({}); memory limit {} MiB",
                "",
                s.recovery_point,
                s.logged,
                bytes(s.logged_bytes),
                s.memory_limit >> 20
            );
            let _ = writeln!(
                out,
                "{:<10} holds: queued {} of {}, {} timer(s) of {}, {} subscription(s) of {}, {} log line(s) dropped",
                "",
                bytes(s.queued_bytes.0),
                bytes(s.queued_bytes.1),
                s.timers,
                self.limits.timers,
                s.subscriptions,
                self.limits.subscriptions,
                s.log_dropped
            );
        }
        let _ = writeln!(
            out,
            "host holds: queued {} of a budget of {}; {} message(s) refused for a limit",
            bytes(self.queued_bytes.0),
            bytes(self.queued_bytes.1),
            self.refused
        );
        let (window, pct) = self.probation;
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
            self.checkpoint
        );
        if let Some(l) = &self.lattice {
            out.push('\n');
            out.push_str(&lattice_text(l));
        }
        out
    }
}

/// The lattice part of `Status`: every host, up or down, and where each
/// module runs.
fn lattice_text(l: &liveswap::bus::LatticeView) -> String {
    let mut out = format!(
        "lattice {}: this host is {}, {} the NATS server; lease {} ms; {} message(s) sent to other hosts, {} taken from them; {} waiting for acknowledgement (outbox holds {})\n",
        l.lattice,
        l.host,
        if l.connected {
            "connected to"
        } else {
            "NOT connected to"
        },
        l.lease.as_millis(),
        l.sent,
        l.received,
        l.outboxed.0,
        l.outboxed.1,
    );
    let _ = writeln!(
        out,
        "group upgrades spanning hosts: {}",
        match &l.decisions {
            Some(b) => format!(
                "decisions recorded in the JetStream bucket {b}; {} in progress here",
                l.groups
            ),
            None => "refused (the NATS server keeps no key-value store: start it with -js)".into(),
        }
    );
    let _ = writeln!(
        out,
        "{:<12} {:<6} {:>9} {:>5}  MODULES",
        "HOST", "STATE", "HEARD", "SUBS"
    );
    for h in &l.hosts {
        let state = if h.id == l.host {
            "this"
        } else if h.alive {
            "up"
        } else {
            "DOWN"
        };
        let heard = if h.id == l.host {
            "-".to_string()
        } else {
            format!("{} ms", h.seen.as_millis())
        };
        let modules = if h.modules.is_empty() {
            "-".to_string()
        } else {
            h.modules.join(", ")
        };
        let _ = writeln!(
            out,
            "{:<12} {:<6} {:>9} {:>5}  {modules}",
            h.id, state, heard, h.subscriptions
        );
    }
    out.pop();
    out
}

impl ToText for VersionsReport {
    fn to_text(&self) -> String {
        let mut out = format!(
            "{:<14} {:<8} {:>9} {:<40} RUN BY\n",
            "DIGEST", "VERSION", "BYTES", "PATH"
        );
        for row in &self.versions {
            let v = &row.version;
            let users = &row.run_by;
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
        let _ = match self.trusted_keys {
            0 => write!(out, "signatures: not checked"),
            1 => write!(out, "signatures: required (1 trusted key)"),
            n => write!(out, "signatures: required ({n} trusted keys)"),
        };
        out
    }
}

/// A module's shadow in `Status`: how it does, or how it ended.
fn shadow_line(h: &liveswap::proxy::ShadowStatus) -> String {
    match &h.ended {
        None => format!(
            "shadow v{} running for {:.1}s: {} mirrored, {} matched, {} behind",
            h.version,
            h.running.as_secs_f64(),
            h.mirrored,
            h.matched,
            h.behind
        ),
        Some(why) => format!(
            "last shadow v{} ({} mirrored, {} matched) {why}",
            h.version, h.mirrored, h.matched
        ),
    }
}

impl ToText for PoisonList {
    fn to_text(&self) -> String {
        let mut out = format!(
            "{} poison message(s) set aside by {}",
            self.messages.len(),
            self.module
        );
        for (i, p) in self.messages.iter().enumerate() {
            let _ = write!(out, "\n#{} {p}", i + 1);
        }
        out
    }
}

/// The `grants:` line of `Status`.
fn grants_line(grants: &[Grant]) -> String {
    if grants.is_empty() {
        return "grants: none".to_string();
    }
    let all: Vec<String> = grants.iter().map(Grant::describe).collect();
    format!("grants: {}", all.join(", "))
}
