//! Reports, events and inspections as JSON objects: the `--json` event
//! stream and the JSON admin protocol.

use serde_json::{Value, json};

use liveswap::{
    Event, History, PoisonList, ProxyStatus, StatusReport, TransactionReport, VersionsReport,
};

use crate::text::level_str;

/// Something with a JSON form.
pub trait ToJson {
    /// One JSON value.
    fn to_json(&self) -> Value;
}

impl ToJson for Event {
    /// The event as one JSON object (the `--json` stream).
    fn to_json(&self) -> serde_json::Value {
        match self {
            Event::Log {
                module,
                version,
                level,
                line,
            } => json!({"event": "log", "module": module, "version": version,
                        "level": level_str(*level), "line": line}),
            Event::Module {
                module,
                version,
                state,
                detail,
            } => {
                let mut v = json!({"event": "module", "module": module, "version": version,
                                   "state": state.as_str()});
                if let Some(d) = detail {
                    v["detail"] = json!(d);
                }
                v
            }
            Event::Transaction(r) => r.to_json(),
            Event::Progress { origin, text } => {
                json!({"event": "progress", "origin": origin, "text": text})
            }
            Event::Skipped { count } => json!({"event": "skipped", "count": count}),
        }
    }
}

impl ToJson for TransactionReport {
    /// The JSON form (`{"event":"transaction",...}`).
    fn to_json(&self) -> serde_json::Value {
        let modules: Vec<_> = self
            .modules
            .iter()
            .map(|m| {
                json!({"name": m.name, "from": m.from, "to": m.to,
                       "quiesce_us": m.quiesce_us, "pause_us": m.pause_us,
                       "buffered": m.buffered, "state_bytes": m.state_bytes,
                       "put_state_us": m.put_state_us, "get_state_us": m.get_state_us,
                       "same_version": m.same_version, "host": m.host})
            })
            .collect();
        json!({
            "event": "transaction", "id": self.id, "command": self.command,
            "origin": self.origin, "outcome": self.outcome.as_str(),
            "reason": self.reason, "modules": modules, "prepare_us": self.prepare_us,
            "total_us": self.total_us, "mode": self.mode,
            "waited_for": self.waited_for,
            "refusal": self.refusal.as_ref().map(|r| json!({
                "module": r.module, "phase": format!("{:?}", r.phase),
                "cause": format!("{:?}", r.cause), "text": r.to_string(),
            })),
        })
    }
}

impl ToJson for ProxyStatus {
    /// One module of `Status` (and of the dashboard).
    fn to_json(&self) -> Value {
        let s = self;
        json!({
            "name": s.name, "state": s.state.as_str(),
            "version": s.version.label(), "digest": s.version.digest,
            "queued": s.depth, "capacity": s.capacity, "served": s.served, "calls": s.calls,
            "takes_batches": s.version.takes_batches(),
            "errors": s.errors, "faults": s.faults, "last_fault": s.last_fault,
            "rates": s.rates.iter().map(|(k, r)| json!({"sender": k, "per_s": r})).collect::<Vec<_>>(),
            "grants": s.grants.iter().map(|g| g.to_string()).collect::<Vec<_>>(),
            "memory_limit": s.memory_limit, "recoveries": s.recoveries,
            "poisoned": s.poisoned, "recovery_point": s.recovery_point,
            "logged": s.logged, "logged_bytes": s.logged_bytes,
            "queued_bytes": s.queued_bytes.0, "max_queued_bytes": s.queued_bytes.1,
            "timers": s.timers, "subscriptions": s.subscriptions,
            "log_dropped": s.log_dropped, "refused": s.refused,
            "probation_left_ms": s.probation_left.map(|d| d.as_millis() as u64),
            "shadow": s.shadow.as_ref().map(|h| json!({
                "version": h.version, "mirrored": h.mirrored, "matched": h.matched,
                "behind": h.behind, "running_ms": h.running.as_millis() as u64,
                "ended": h.ended,
            })),
        })
    }
}

impl ToJson for StatusReport {
    fn to_json(&self) -> Value {
        let modules: Vec<Value> = self.modules.iter().map(ToJson::to_json).collect();
        json!({
            "modules": modules,
            "bound_ms": self.bound.as_millis() as u64,
            "mode": self.mode.as_str(),
            "probation_ms": self.probation.0.as_millis() as u64,
            "probation_max_error_pct": self.probation.1,
            "checkpoint_ms": self.checkpoint.as_millis() as u64,
            "queued_bytes": self.queued_bytes.0,
            "queued_budget": self.queued_bytes.1,
            "refused": self.refused,
            "lattice": self.lattice.as_deref().map(lattice_json),
        })
    }
}

fn lattice_json(l: &liveswap::bus::LatticeView) -> Value {
    let hosts: Vec<Value> = l
        .hosts
        .iter()
        .map(|h| {
            json!({
                "host": h.id, "this": h.id == l.host, "alive": h.alive,
                "heard_ms": h.seen.as_millis() as u64, "modules": h.modules,
                "subscriptions": h.subscriptions,
            })
        })
        .collect();
    json!({
        "lattice": l.lattice, "host": l.host, "connected": l.connected,
        "lease_ms": l.lease.as_millis() as u64, "hosts": hosts,
        "outboxed": l.outboxed.0, "outbox_capacity": l.outboxed.1,
        "sent": l.sent, "received": l.received,
        "decisions": l.decisions, "groups": l.groups,
    })
}

impl ToJson for VersionsReport {
    fn to_json(&self) -> Value {
        let versions: Vec<Value> = self
            .versions
            .iter()
            .map(|r| {
                json!({
                    "digest": r.version.digest, "version": r.version.label(),
                    "bytes": r.version.size, "path": r.version.path.display().to_string(),
                    "run_by": r.run_by,
                })
            })
            .collect();
        json!({"versions": versions, "trusted_keys": self.trusted_keys})
    }
}

impl ToJson for History {
    fn to_json(&self) -> Value {
        let commands: Vec<Value> = self
            .commands
            .iter()
            .map(|c| {
                let at =
                    c.at.duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs_f64())
                        .unwrap_or(0.0);
                json!({"at": at, "time": humantime::format_rfc3339_millis(c.at).to_string(),
                       "origin": c.origin, "line": c.line,
                       "outcome": c.outcome, "transaction": c.transaction})
            })
            .collect();
        let transactions: Vec<Value> = self.transactions.iter().map(|t| t.to_json()).collect();
        json!({"commands": commands, "transactions": transactions})
    }
}

impl ToJson for PoisonList {
    fn to_json(&self) -> Value {
        let messages: Vec<Value> = self
            .messages
            .iter()
            .map(|p| {
                json!({"version": p.version, "kind": p.message.kind, "from": p.message.from,
                       "proto": p.message.proto, "bytes": p.message.body.len(),
                       "reason": p.reason, "text": p.to_string()})
            })
            .collect();
        json!({"module": self.module, "messages": messages})
    }
}
