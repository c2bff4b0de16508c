//! Where a message goes when its receiver runs on another host of a
//! lattice. The bus knows only this narrow face of the lattice: a host
//! that joined none has no remote, and a name it does not hold is unknown,
//! as ever.

use std::sync::Arc;
use std::time::Duration;

use super::SendError;
use crate::bindings::Message;

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
