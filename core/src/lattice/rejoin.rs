//! A participant of a group spanning hosts that died after it voted yes,
//! and before it heard the decision: with a state directory it kept its
//! vote, and when it is back (and the lattice's store is reachable) it
//! reads what was decided and applies it — a commit is the replacement it
//! had prepared, from the state its modules came back with, which is the
//! state they had when they voted.

use std::time::{Duration, Instant};

use super::Shared;
use super::group::{Record, parse_voted};
use crate::command::{GroupKind, LoadOptions, Target};
use crate::error::CommandError;

/// How long a restarted participant waits for a group still undecided
/// before it records abort.
const UNDECIDED: Duration = Duration::from_secs(30);

impl Shared {
    /// Keep `value` under `key` in the state directory, durably when it is
    /// set (nothing without one).
    pub(crate) fn keep_setting(&self, key: &str, value: u64) -> Result<(), String> {
        let Some(j) = self.bus.upgrade().and_then(|b| b.journal.clone()) else {
            return Ok(());
        };
        let op = crate::store::Op::Setting {
            name: key.to_string(),
            value,
        };
        match value {
            0 => {
                j.record(op);
                Ok(())
            }
            _ => j.record_durable(op),
        }
    }

    /// The groups this host voted yes in before it stopped and never heard
    /// the decision of: apply what was recorded. A line for each.
    pub(crate) fn resolve_voted(&self) -> Vec<String> {
        let keys = std::mem::take(&mut *self.voted.lock().expect("voted poisoned"));
        let mut said = Vec::new();
        for key in keys {
            let Some((gid, targets)) = parse_voted(&key) else {
                continue;
            };
            let names: Vec<&str> = targets.iter().map(|(n, _)| n.as_str()).collect();
            let text = match self.decided(&gid) {
                Ok(true) => self.apply_commit(&gid, &targets),
                Ok(false) => format!(
                    "group {gid} was aborted while this host was down: {} serve(s) on as before",
                    names.join(", ")
                ),
                Err(e) => {
                    said.push(format!(
                        "group {gid}: this host voted yes before it stopped, and the decision cannot be read ({e}); it is read again at the next start"
                    ));
                    continue;
                }
            };
            let _ = self.keep_setting(&key, 0);
            said.push(text);
        }
        said
    }

    /// Whether group `gid` committed, waiting a while for a decision (and
    /// recording abort if none comes).
    fn decided(&self, gid: &str) -> Result<bool, String> {
        let until = Instant::now() + UNDECIDED;
        loop {
            match self.record(gid)? {
                Record::Commit(_) => return Ok(true),
                Record::Abort(..) | Record::Missing => return Ok(false),
                Record::Open(revision) if Instant::now() >= until => {
                    let why = format!(
                        "host {} came back after voting yes and no decision came within {UNDECIDED:?}",
                        self.host
                    );
                    let value = format!("abort\n{}\n{why}", self.host);
                    if self.settle(gid, revision, value).is_ok() {
                        return Ok(false);
                    }
                }
                Record::Open(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Replace `targets` (name, digest) as the committed group would
    /// have, from the versions the state directory kept.
    fn apply_commit(&self, gid: &str, targets: &[(String, String)]) -> String {
        let Some(core) = self.core.upgrade() else {
            return format!("group {gid}: the host is stopping");
        };
        let mut local = Vec::new();
        for (name, digest) in targets {
            let path = core
                .repo
                .kept_wasm(digest)
                .ok_or_else(|| format!("version {digest} is not in the state directory"))
                .and_then(|wasm| super::moving::stored(digest, &wasm));
            match path {
                Ok(path) => local.push(Target {
                    name: name.clone(),
                    path,
                    options: LoadOptions {
                        pin: Some(digest.clone()),
                        ..Default::default()
                    },
                }),
                Err(e) => return format!("group {gid} committed, but {name} cannot follow: {e}"),
            }
        }
        let args: Vec<String> = local
            .iter()
            .map(|t| format!("{} {}", t.name, t.path.display()))
            .collect();
        let line = format!("Syn_Replace {}", args.join(" "));
        let origin = format!("group {gid}, committed while this host was down");
        let report = core.serialized(&line, &origin, false, |admin| {
            let all = (local.as_slice(), local.as_slice());
            let r = core.transact_with(admin, GroupKind::Replace, all, &line, &origin, Ok(None));
            Ok::<_, CommandError>(r)
        });
        match report {
            Ok(r) => format!(
                "group {gid} committed while this host was down: its part is {} now{}",
                r.outcome.as_str(),
                r.reason.map(|w| format!(" ({w})")).unwrap_or_default()
            ),
            Err(e) => {
                format!("group {gid} committed while this host was down, and its part failed: {e}")
            }
        }
    }
}
