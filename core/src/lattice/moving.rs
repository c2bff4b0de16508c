//! The lattice's part in a `Move`: asking the other host each step (NATS
//! request and reply), giving a name up on the host a module leaves, and
//! taking a module in on the host it moves to.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::bounded;

use super::{Mark, Shared};
use crate::bindings::Message;
use crate::bus::{MoveStep, Mover, Remote};
use crate::guest::Grant;
use crate::instance::Implementation;
use crate::proxy::{Ends, ModuleProxy, Start};
use crate::repo::Version;
use crate::upgrade::Core;

/// A module moving here: made at Install, serving from Commit.
pub(crate) struct Arrival {
    name: String,
    proxy: ModuleProxy,
    imp: Box<Implementation>,
    ends: Ends,
    state: Vec<u8>,
    /// What the module's mailbox held on the old host, in order.
    queue: Vec<Message>,
}

/// What a host holds of moves coming to it.
#[derive(Default)]
pub(crate) struct Arrivals {
    /// Versions compiled for a move, by digest, until it ends.
    compiled: HashMap<String, Arc<Version>>,
    /// Made at Install, by (host moved from, move id).
    pending: HashMap<(String, u64), Arrival>,
    /// Moves committed here (a Commit asked again is answered again).
    landed: Vec<(String, u64)>,
}

/// A request for the link thread to make, and where its answer goes.
pub(crate) struct Ask {
    pub host: String,
    pub payload: Vec<u8>,
    pub timeout: Duration,
    pub answer: Box<dyn FnOnce(Result<String, String>) + Send>,
}

impl Mover for Shared {
    fn ask(&self, host: &str, step: MoveStep) -> Result<(), String> {
        let timeout = match step {
            MoveStep::Compile { .. } => Duration::from_secs(60),
            _ => Duration::from_secs(5),
        };
        let payload = super::wire::step(&self.host, self.incarnation, &step);
        self.request(host, payload, timeout).map(drop)
    }

    fn give_up(&self, name: &str, host: &str, detach: &mut dyn FnMut()) -> Vec<(String, u64, u64)> {
        // Under the outboxes' lock: a sender here that finds the name gone
        // waits for the directory to say where it went.
        let outboxes = self.outboxes.lock().expect("outboxes poisoned");
        self.directory
            .lock()
            .expect("directory poisoned")
            .moved(name, host);
        // Said before the module goes: an announcement made meanwhile
        // must not tell other hosts that the name is nowhere.
        self.gone.lock().expect("gone poisoned").push((
            name.to_string(),
            host.to_string(),
            std::time::Instant::now(),
        ));
        detach();
        drop(outboxes);
        // Every batch being taken in is through (it holds the marks): no
        // mark of `name` moves after this.
        let mut marks = self.marks.lock().expect("marks poisoned");
        let mine: Vec<(String, String)> = marks.keys().filter(|k| k.1 == name).cloned().collect();
        let handed = mine
            .into_iter()
            .filter_map(|k| marks.remove(&k).map(|m| (k.0, m.incarnation, m.last)))
            .collect();
        drop(marks);
        tracing::debug!(name, host, marks = ?handed, "given up");
        self.changed();
        handed
    }

    fn acknowledged(&self, sender: &str, within: Duration) -> Result<(), String> {
        let until = std::time::Instant::now() + within;
        loop {
            let (n, to) = {
                let outboxes = self.outboxes.lock().expect("outboxes poisoned");
                let (n, to) = outboxes.from(sender);
                (n, to.map(str::to_string))
            };
            let Some(to) = to else {
                return Ok(());
            };
            if std::time::Instant::now() >= until {
                let host = self.host_of(&to).unwrap_or_else(|| "?".into());
                return Err(format!(
                    "{n} message(s) it sent to {to} on host {host} are not acknowledged after {within:?}"
                ));
            }
            self.wake.notify_one();
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    fn kick(&self, name: &str) {
        if let Some(ob) = self
            .outboxes
            .lock()
            .expect("outboxes poisoned")
            .by_name
            .get_mut(name)
        {
            ob.rewind();
        }
        self.wake.notify_one();
    }
}

impl Shared {
    /// Ask `host` (NATS request and reply), waiting up to `timeout`: its
    /// answer's text, or why there is none.
    pub(crate) fn request(
        &self,
        host: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<String, String> {
        let (answer, answered) = bounded(1);
        self.request_then(
            host,
            payload,
            timeout,
            Box::new(move |r| {
                let _ = answer.send(r);
            }),
        );
        answered
            .recv()
            .unwrap_or_else(|_| Err("the lattice link has stopped".into()))
    }

    /// Ask `host`, and call `then` with its answer (or why there is
    /// none), on the link's thread: it must not wait.
    pub(crate) fn request_then(
        &self,
        host: &str,
        payload: Vec<u8>,
        timeout: Duration,
        then: Box<dyn FnOnce(Result<String, String>) + Send>,
    ) {
        if !self.connected.load(std::sync::atomic::Ordering::Relaxed) {
            return then(Err("the lattice's NATS server is not reachable".into()));
        }
        let ask = Ask {
            host: host.to_string(),
            payload,
            timeout,
            answer: then,
        };
        if let Err(e) = self.asks.send(ask) {
            (e.0.answer)(Err("the lattice link has stopped".into()));
        }
    }

    /// Register a module moved here, first filling its mailbox, in order,
    /// with what the old host's mailbox held and then with what this
    /// host's outbox for it held that the old host never took (its mark
    /// for this host's stream says how far it took); all under the
    /// outboxes' lock, so that a sender here sends to the mailbox only
    /// after that.
    fn take_in(
        &self,
        core: &Core,
        proxy: ModuleProxy,
        queue: Vec<Message>,
        marks: Vec<(String, u64, u64)>,
    ) -> Result<(), String> {
        let name = proxy.name().to_string();
        let mut outboxes = self.outboxes.lock().expect("outboxes poisoned");
        let mut senders = Vec::new();
        for m in queue {
            let from = super::wire::interned(&mut senders, &m.from);
            proxy
                .mailbox()
                .deliver(&from, m)
                .map_err(|e| e.to_string())?;
        }
        let taken = marks
            .iter()
            .find(|(h, inc, _)| *h == self.host && *inc == self.incarnation)
            .map_or(0, |m| m.2);
        let mut marks = marks;
        let budget = outboxes.budget.clone();
        if let Some(ob) = outboxes.by_name.get_mut(&name) {
            for (seq, from, m) in ob.drain(&budget) {
                if seq > taken {
                    proxy
                        .mailbox()
                        .deliver(&from, m)
                        .map_err(|e| e.to_string())?;
                }
            }
            // This host's stream to the module is in its mailbox up to
            // here; should it move on, the next host expects what follows.
            marks.retain(|(h, _, _)| *h != self.host);
            marks.push((self.host.clone(), self.incarnation, ob.last_number()));
        }
        {
            let mut m = self.marks.lock().expect("marks poisoned");
            for (host, incarnation, last) in marks {
                m.insert((host, name.clone()), Mark { incarnation, last });
            }
        }
        if !core.modules.register(proxy) {
            return Err(format!(
                "a module named `{name}` is loaded on host {}",
                self.host
            ));
        }
        drop(outboxes);
        Ok(())
    }

    /// Take a step of a move from host `from`, here.
    pub(crate) fn arrive(&self, from: &str, step: MoveStep) -> Result<(), String> {
        let core = self.core.upgrade().ok_or("the host is stopping")?;
        if core.bus.journal.is_some() {
            return Err(format!(
                "host {} has a state directory: it takes no moved module yet",
                self.host
            ));
        }
        let mut arrivals = self.arrivals.lock().expect("arrivals poisoned");
        match step {
            MoveStep::Compile { digest, wasm } => {
                let version = compiled(&core, &digest, wasm)?;
                arrivals.compiled.insert(digest, version);
                Ok(())
            }
            MoveStep::Install { id, .. } => {
                let arrival = self.install(&core, &arrivals, step)?;
                arrivals.pending.insert((from.to_string(), id), arrival);
                Ok(())
            }
            MoveStep::Queue { id, msgs } => {
                let a = arrivals
                    .pending
                    .get_mut(&(from.to_string(), id))
                    .ok_or_else(|| format!("no move {id} from host {from} is pending here"))?;
                a.queue.extend(msgs);
                Ok(())
            }
            MoveStep::Commit { id, .. } => {
                let key = (from.to_string(), id);
                let Some(a) = arrivals.pending.remove(&key) else {
                    return match arrivals.landed.contains(&key) {
                        true => Ok(()),
                        false => Err(format!("no move {id} from host {from} is pending here")),
                    };
                };
                arrivals.landed.push(key);
                arrivals.compiled.clear();
                drop(arrivals);
                self.commit(&core, a, step, from)
            }
            MoveStep::Cancel { id } => {
                arrivals.pending.remove(&(from.to_string(), id));
                arrivals.compiled.clear();
                Ok(())
            }
        }
    }

    /// An instance of the moving module with its state, not yet serving.
    fn install(&self, core: &Core, arrivals: &Arrivals, step: MoveStep) -> Result<Arrival, String> {
        let MoveStep::Install {
            name,
            digest,
            memory,
            capacity,
            state,
            grants,
            ..
        } = step
        else {
            unreachable!("an Install")
        };
        if core.modules.contains(&name) {
            return Err(format!(
                "a module named `{name}` is loaded on host {}",
                self.host
            ));
        }
        let version = arrivals
            .compiled
            .get(&digest)
            .cloned()
            .or_else(|| core.repo.lookup(&digest))
            .ok_or_else(|| format!("version {digest} was not compiled here"))?;
        crate::guest::sandbox::check(&grants).map_err(|e| e.to_string())?;
        let grants: Arc<[Grant]> = Arc::from(grants);
        let limits = core.limits_with(memory.map(|m| m as usize));
        let mut imp = core
            .instantiate(&version, &name, &grants, &limits)
            .map_err(|e| e.to_string())?;
        match imp.get_state(&state, None) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("get-state failed: {e}")),
            Err(f) => return Err(format!("get-state trapped: {f}")),
        }
        let capacity = capacity as usize;
        let (proxy, ends) =
            ModuleProxy::new(&name, (version, &imp), capacity, grants, limits, &core.env);
        Ok(Arrival {
            name,
            proxy,
            imp: Box::new(imp),
            ends,
            state,
            queue: Vec::new(),
        })
    }

    /// The module serves here from now on.
    fn commit(&self, core: &Core, a: Arrival, step: MoveStep, from: &str) -> Result<(), String> {
        let MoveStep::Commit {
            timers,
            subs,
            marks,
            ..
        } = step
        else {
            unreachable!("a Commit")
        };
        let name = a.name.clone();
        tracing::debug!(name, marks = ?marks, "commit");
        self.take_in(core, a.proxy.clone(), a.queue, marks)?;
        let start = Start::Moved(a.state);
        a.proxy.spawn(a.imp, &[], core.env.clone(), a.ends, start);
        for (t, ms) in timers {
            let _ = core.bus.timers.set(&name, &t, Duration::from_millis(ms));
        }
        for (p, e) in subs {
            let _ = core.bus.pubsub.subscribe(&name, &p, &e);
        }
        core.bus.changed();
        self.say(format!("{name} moved here from host {from}"));
        Ok(())
    }
}

/// The version `digest` compiled here, from `wasm` if it is not yet.
fn compiled(core: &Core, digest: &str, wasm: Vec<u8>) -> Result<Arc<Version>, String> {
    if let Some(v) = core.repo.lookup(digest) {
        return Ok(v);
    }
    let path = stored(digest, &wasm)?;
    core.repo
        .fetch_pinned(&path, Some(digest))
        .map_err(|e| e.to_string())
}

/// A file holding `wasm`, a version another host sent (named by its
/// digest, which reading it checks).
pub(crate) fn stored(digest: &str, wasm: &[u8]) -> Result<std::path::PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("liveswap-sent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let path = dir.join(format!("{}.wasm", digest.trim_start_matches("sha256:")));
    // Written aside and renamed into place: a reader never sees it half
    // written (two hosts of one process may store the same version).
    let mut nonce = [0u8; 8];
    getrandom::getrandom(&mut nonce).map_err(|e| e.to_string())?;
    let aside = path.with_extension(format!("{}.part", u64::from_le_bytes(nonce)));
    std::fs::write(&aside, wasm).map_err(|e| e.to_string())?;
    std::fs::rename(&aside, &path).map_err(|e| e.to_string())?;
    Ok(path)
}
