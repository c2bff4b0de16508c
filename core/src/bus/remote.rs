//! Where a message goes when its receiver runs on another host of a
//! lattice. The bus knows only this narrow face of the lattice: a host
//! that joined none has no remote, and a name it does not hold is unknown,
//! as ever.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::SendError;
use crate::bindings::Message;
use crate::report::{Refusal, TransactionReport};

/// The lattice, as the bus reaches it.
pub trait Remote: Send + Sync {
    /// The host that serves `name`, if another host of the lattice does
    /// (or did last: its messages wait for it).
    fn host_of(&self, name: &str) -> Option<String>;
    /// Accept `msg`, stamped with its sender `from`, for `to` on another
    /// host: kept in the outbox for `to` until that host acknowledges it.
    fn send(&self, from: &Arc<str>, to: &str, msg: Message) -> Result<(), SendError>;
    /// Fan event `kind` of `publisher` out to its subscribers on other
    /// hosts, as messages: the names whose outbox refused it.
    fn publish(&self, publisher: &Arc<str>, msg: &Message) -> Vec<(String, SendError)>;
    /// This host's modules or subscriptions changed: tell the other hosts
    /// now rather than at the next announcement.
    fn changed(&self);
    /// What this host sees of the lattice now.
    fn view(&self) -> LatticeView;
    /// The lattice's part in a `Move`.
    fn mover(&self) -> &dyn Mover;
    /// Run the command `line` on `host` (it names a module `host`
    /// serves), for `origin`: its answer in text, or why it failed.
    fn forward(&self, host: &str, line: &str, origin: &str) -> Result<String, String>;
    /// The modules other hosts serve, with their protocol declarations
    /// and senders as last announced.
    fn sides(&self) -> Vec<ModuleSide>;
    /// Coordinate a group upgrade whose targets `parts` (by host) other
    /// hosts serve, within the vote's `bound`: the lattice's part of it,
    /// or why the group cannot be started.
    fn coordinate(
        &self,
        line: &str,
        bound: Duration,
        parts: BTreeMap<String, Vec<PartTarget>>,
    ) -> Result<Box<dyn Group>, String>;
}

/// A module's protocol declarations, as another host tells them (for the
/// protocol scope check of an upgrade): its version, what it speaks and
/// accepts, and who sends to it there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModuleSide {
    /// Module name.
    pub name: String,
    /// Version label.
    pub version: String,
    /// Protocols it sends.
    pub speaks: Vec<u32>,
    /// Protocols it understands.
    pub accepts: Vec<u32>,
    /// Modules that sent to it (or that it subscribes to).
    pub senders: Vec<String>,
}

/// A target of a group upgrade that another host serves: the version's
/// bytes travel to it, checked on this host.
#[derive(Clone, Debug)]
pub struct PartTarget {
    /// Module name.
    pub name: String,
    /// `sha256:<hex>` of `wasm`.
    pub digest: String,
    /// The component (empty if an earlier target sent to the same host
    /// has the same digest).
    pub wasm: Vec<u8>,
}

/// The lattice's part in a group upgrade that spans hosts, as the
/// transaction's driver calls it: on the coordinating host and on each
/// participant alike, at the same three points of the usual phases.
pub trait Group: Send {
    /// The local targets are prepared, their new versions' declarations
    /// (or refused: why). On the coordinator, the other hosts' new
    /// versions' declarations, to check the whole group's protocol scope
    /// with; none on a participant. An error is why the group ends here.
    fn prepared(
        &mut self,
        local: Result<Vec<ModuleSide>, String>,
    ) -> Result<Option<Vec<ModuleSide>>, String>;
    /// The coordinator refused the group after preparing (the scope
    /// check): release the hosts that prepared, saying `why`.
    fn abandon(&mut self, why: &str);
    /// Every host prepared and the group's scope holds: the vote starts
    /// (the coordinator asks every host; a participant waits to be asked).
    /// An error is why the group ends here.
    fn vote(&mut self) -> Result<(), String>;
    /// The local votes are in (`no`: the first NO, if any). The group's
    /// decision: none to commit, the refusal that aborts it otherwise.
    fn decide(&mut self, no: Option<Refusal>) -> Option<Refusal>;
    /// The decision is applied here: add what the other hosts reported.
    fn finish(&mut self, report: &mut TransactionReport);
}

/// The lattice as one host sees it (`Status`).
#[derive(Clone, Debug)]
pub struct LatticeView {
    /// The lattice's name.
    pub lattice: String,
    /// This host's id.
    pub host: String,
    /// Whether the link to the NATS server is up.
    pub connected: bool,
    /// How long a host's announcement holds.
    pub lease: Duration,
    /// Every host heard of, this one first.
    pub hosts: Vec<HostRow>,
    /// Messages waiting in outboxes for another host's acknowledgement,
    /// and how many one outbox may hold.
    pub outboxed: (usize, usize),
    /// Messages this host has sent to, and taken from, other hosts.
    pub sent: u64,
    /// Messages taken from other hosts into local mailboxes.
    pub received: u64,
    /// Where groups spanning hosts record their decisions (the JetStream
    /// bucket), if the NATS server keeps one.
    pub decisions: Option<String>,
    /// Groups spanning hosts this host takes part in now.
    pub groups: usize,
}

/// One host of the lattice.
#[derive(Clone, Debug)]
pub struct HostRow {
    /// Its id.
    pub id: String,
    /// Whether its lease holds (this host: always).
    pub alive: bool,
    /// How long ago it was last heard (this host: zero).
    pub seen: Duration,
    /// The modules it serves.
    pub modules: Vec<String>,
    /// Subscriptions its modules hold.
    pub subscriptions: usize,
}

/// A step of a `Move`, asked of the host the module moves to.
#[derive(Clone, Debug)]
pub enum MoveStep {
    /// Before any pause: compile the version (by digest, its bytes).
    Compile {
        /// `sha256:<hex>` of `wasm`.
        digest: String,
        /// The component.
        wasm: Vec<u8>,
    },
    /// In the pause: an instance of the version under `name`, with the
    /// state the old host's instance put; held until `Commit`.
    Install {
        /// This move's id, unique on the old host.
        id: u64,
        /// Module name.
        name: String,
        /// The version (compiled by `Compile`).
        digest: String,
        /// Linear-memory limit, if not the host's default.
        memory: Option<u64>,
        /// Mailbox capacity.
        capacity: u64,
        /// What `put-state` returned.
        state: Vec<u8>,
        /// Its grants: the host it moves to gives them again (a granted
        /// directory must exist there).
        grants: Vec<crate::guest::Grant>,
    },
    /// What the module's mailbox held when the old host gave the name up,
    /// in order (in parts, each within a NATS payload).
    Queue {
        /// The move's id.
        id: u64,
        /// The messages, each stamped with its sender.
        msgs: Vec<Message>,
    },
    /// The old host has given the name up: serve it, what `Queue` brought
    /// first.
    Commit {
        /// The move's id.
        id: u64,
        /// Timers of the module: name and period in ms.
        timers: Vec<(String, u64)>,
        /// Its subscriptions: publisher and event.
        subs: Vec<(String, String)>,
        /// The receiving marks of the module's streams from other hosts:
        /// sending host, its run, the last number taken.
        marks: Vec<(String, u64, u64)>,
    },
    /// The move was given up: drop what `Install` made.
    Cancel {
        /// The move's id.
        id: u64,
    },
}

/// The lattice's part in a `Move`, as the host a module leaves uses it.
pub trait Mover: Send + Sync {
    /// Ask `host` to take `step`; an error says why it did not.
    fn ask(&self, host: &str, step: MoveStep) -> Result<(), String>;
    /// Give `name` up to `host`: from now on the name resolves to `host`
    /// here, once `detach` has unregistered the module. The receiving
    /// marks of the module's streams from other hosts, handed over.
    fn give_up(&self, name: &str, host: &str, detach: &mut dyn FnMut()) -> Vec<(String, u64, u64)>;
    /// Send what waits for `name` now, without waiting for a resend.
    fn kick(&self, name: &str);
    /// Wait, up to `within`, until every message `sender` sent to modules
    /// on other hosts is acknowledged (a module moves only then, or its
    /// later messages from the new host could overtake them); why not.
    fn acknowledged(&self, sender: &str, within: std::time::Duration) -> Result<(), String>;
}
