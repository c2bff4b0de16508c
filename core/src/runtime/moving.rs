//! `Move <name> <host>`, on the host the module leaves. Before any pause
//! the other host compiles the version. Then the module stops between two
//! messages and hands its state over; the other host makes an instance
//! with it (Install). A NO there, or from the module, and the module
//! serves on here as if nothing happened. Then the name is given up here:
//! senders on this host follow it at once, what the mailbox held goes
//! first into the outbox for the name, and the other host serves the
//! module from then on with its timers, subscriptions and the receiving
//! marks of its streams (Commit), so that nothing is lost or doubled.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::bindings::Message;
use crate::bus::{MoveStep, Mover};
use crate::error::CommandError;
use crate::proxy::{Control, Detach, ModuleProxy};
use crate::upgrade::Core;

/// How often a Commit is asked again before the move is reported as not
/// known to have landed.
const COMMIT_TRIES: usize = 5;

/// How long a module stopped for a move waits for what it sent to other
/// hosts to be acknowledged before the move is given up.
const ACKNOWLEDGED_BOUND: Duration = Duration::from_secs(2);

/// The largest part of a moved queue (a NATS payload is 1 MiB by default).
const PART_BYTES: usize = 256 * 1024;

fn refused(name: &str, why: impl std::fmt::Display) -> CommandError {
    CommandError::Parse(format!("Move {name}: {why}; nothing changed"))
}

impl Core {
    /// The module `name` and the lattice, if `name` can move to `host`.
    fn movable(&self, name: &str, host: &str) -> Result<(ModuleProxy, &dyn Mover), CommandError> {
        let remote = self.bus.remote.get().ok_or_else(|| {
            refused(
                name,
                "this host is in no lattice (liveswap run --lattice URL)",
            )
        })?;
        let proxy = self
            .modules
            .get(name)
            .ok_or_else(|| CommandError::UnknownModule(name.to_string()))?;
        if self.bus.journal.is_some() {
            return Err(refused(
                name,
                "a host with a state directory does not move modules yet (its outboxes are not durable)",
            ));
        }
        let view = remote.view();
        if view.host == host {
            return Err(refused(name, format!("it runs on host {host} already")));
        }
        match view.hosts.iter().find(|h| h.id == host) {
            None => Err(refused(
                name,
                format!("no host `{host}` in lattice {}", view.lattice),
            )),
            Some(h) if !h.alive => Err(refused(name, format!("host {host} is down"))),
            Some(_) => Ok((proxy, remote.mover())),
        }
    }

    /// `Move <name> <host>`.
    pub(super) fn move_out(
        &self,
        name: &str,
        host: &str,
        origin: &str,
    ) -> Result<String, CommandError> {
        let (proxy, mover) = self.movable(name, host)?;
        let version = proxy.version();
        let file = self
            .repo
            .read_checked(&version.path, Some(&version.digest))?;
        let what = format!("host {host} compiles {}", version.short_digest());
        self.progress(origin, what);
        let wasm = file.bytes().to_vec();
        let digest = version.digest.clone();
        let compile = MoveStep::Compile {
            digest: digest.clone(),
            wasm,
        };
        mover
            .ask(host, compile)
            .map_err(|e| refused(name, format!("host {host} could not compile it: {e}")))?;
        let id = self.next_txn();
        let paused = Instant::now();
        let (state, leaving) = detach(&proxy, name, self.call_deadline)?;
        let abort = |why: String| {
            let _ = leaving.decide.send(false);
            let _ = mover.ask(host, MoveStep::Cancel { id });
            refused(name, why)
        };
        // Everything it sent to other hosts is theirs first: what it sends
        // from its new host must not overtake it.
        mover
            .acknowledged(name, ACKNOWLEDGED_BOUND)
            .map_err(abort)?;
        let bytes = state.len();
        let install = MoveStep::Install {
            id,
            name: name.to_string(),
            digest,
            memory: Some(proxy.limits().memory as u64),
            capacity: proxy.status().capacity as u64,
            state,
            grants: proxy.grants().to_vec(),
        };
        mover
            .ask(host, install)
            .map_err(|e| abort(format!("host {host} could not take it: {e}")))?;
        let (moved, landed) = self.give_up(&proxy, mover, host, id, leaving);
        let pause = paused.elapsed();
        mover.kick(name);
        self.release_unused();
        match landed {
            Ok(()) => Ok(format!(
                "moved {name} to host {host}: paused {} µs ({bytes} B of state, {moved})",
                pause.as_micros(),
            )),
            Err(e) => Err(CommandError::Parse(format!(
                "Move {name}: host {host} did not confirm the commit ({e}); the name and its messages are host {host}'s and wait for it"
            ))),
        }
    }

    /// The commit point: from here the module is `host`'s. Unregister it
    /// here, send `host` what its mailbox held, then its timers,
    /// subscriptions and marks: what moved, in words, and whether `host`
    /// confirmed.
    fn give_up(
        &self,
        proxy: &ModuleProxy,
        mover: &dyn Mover,
        host: &str,
        id: u64,
        leaving: Leaving,
    ) -> (String, Result<(), String>) {
        let name = proxy.name();
        let timers = self.bus.timers.of(name);
        let subs = self.bus.pubsub.of(name);
        let mut queue = Vec::new();
        let marks = mover.give_up(name, host, &mut || {
            self.modules.unregister(name);
            self.bus.forget(name);
            proxy.close();
            let _ = leaving.decide.send(true);
            queue = leaving.queued.recv().unwrap_or_default();
        });
        proxy.join();
        let moved = format!(
            "{} queued message(s), {} timer(s) and {} subscription(s) moved",
            queue.len(),
            timers.len(),
            subs.len()
        );
        let commit = MoveStep::Commit {
            id,
            timers: timers
                .iter()
                .map(|(t, d)| (t.clone(), d.as_millis() as u64))
                .collect(),
            subs,
            marks,
        };
        let landed = send_queue(mover, host, id, queue)
            .and_then(|()| commit_with_retries(mover, host, commit));
        (moved, landed)
    }
}

/// A module stopped for a move: how to tell it the decision, and where
/// its mailbox's messages come back.
struct Leaving {
    decide: Sender<bool>,
    queued: Receiver<Vec<Message>>,
}

/// Stop `proxy`'s module between two messages for a move: its state.
fn detach(
    proxy: &ModuleProxy,
    name: &str,
    deadline: Duration,
) -> Result<(Vec<u8>, Leaving), CommandError> {
    let (reply, state) = bounded(1);
    let (decide, decision) = bounded(1);
    let (queue, queued) = bounded(1);
    let asked = Control::Detach(Detach {
        reply,
        decision,
        queue,
    });
    if !proxy.control(asked) {
        return Err(refused(name, "it has stopped"));
    }
    let state = state
        .recv_timeout(deadline + Duration::from_secs(1))
        .unwrap_or_else(|_| Err("it did not answer".into()))
        .map_err(|e| refused(name, format!("it cannot move now: {e}")))?;
    Ok((state, Leaving { decide, queued }))
}

/// What the mailbox held, in parts of at most `PART_BYTES`.
fn send_queue(mover: &dyn Mover, host: &str, id: u64, queue: Vec<Message>) -> Result<(), String> {
    let mut part = Vec::new();
    let mut bytes = 0;
    for m in queue {
        let size = m.body.len() + m.kind.len() + m.from.len() + 32;
        if bytes + size > PART_BYTES && !part.is_empty() {
            let msgs = std::mem::take(&mut part);
            commit_with_retries(mover, host, MoveStep::Queue { id, msgs })?;
            bytes = 0;
        }
        bytes += size;
        part.push(m);
    }
    if part.is_empty() {
        return Ok(());
    }
    commit_with_retries(mover, host, MoveStep::Queue { id, msgs: part })
}

fn commit_with_retries(mover: &dyn Mover, host: &str, commit: MoveStep) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..COMMIT_TRIES {
        match mover.ask(host, commit.clone()) {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}
