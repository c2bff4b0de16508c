//! Who is in the lattice and which modules each host serves, from the
//! hosts' own announcements. An announcement holds for its lease; a host
//! not heard of within it is down. Its names stay where they were last
//! seen, so that messages for them wait in their outboxes for the host to
//! come back, instead of being refused as unknown.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::wire::Presence;
use crate::bus::{HostRow, ModuleSide};

struct Host {
    incarnation: u64,
    lease: Duration,
    seen: Instant,
    alive: bool,
    modules: Vec<String>,
    subs: Vec<(String, String, String)>,
    sides: Vec<ModuleSide>,
}

/// Where a name is served before any host said it serves it.
const UNHEARD: &str = "(not heard of yet)";

/// What changed with an announcement or a lease that ran out, in words
/// for the host's log.
pub(crate) type Changes = Vec<String>;

/// The other hosts of the lattice.
#[derive(Default)]
pub(crate) struct Directory {
    hosts: BTreeMap<String, Host>,
    /// Module name → the host that serves it (or served it last).
    names: BTreeMap<String, String>,
    /// Subscriptions of modules that moved, until the host they went to
    /// announces them (publishers elsewhere keep sending them events).
    carried: Vec<(String, String, String)>,
}

impl Directory {
    /// The host that serves `name`.
    pub(crate) fn host_of(&self, name: &str) -> Option<&str> {
        self.names.get(name).map(String::as_str)
    }

    /// `name` is served by `host` from now on (this host moved it there).
    pub(crate) fn moved(&mut self, name: &str, host: &str) {
        self.names.insert(name.to_string(), host.to_string());
    }

    /// `name` is served by a host not heard of yet (this host had a
    /// stream to it before a restart): its messages wait.
    pub(crate) fn expect(&mut self, name: &str) {
        self.names
            .entry(name.to_string())
            .or_insert_with(|| UNHEARD.to_string());
    }

    /// Whether `host`'s lease holds.
    pub(crate) fn is_alive(&self, host: &str) -> bool {
        self.hosts.get(host).is_some_and(|h| h.alive)
    }

    /// Take `p` into account.
    pub(crate) fn heard(&mut self, p: Presence, now: Instant) -> Changes {
        let mut said = Vec::new();
        let lease = Duration::from_millis(u64::from(p.lease_ms));
        match self.hosts.get_mut(&p.host) {
            None => said.push(format!(
                "host {} joined the lattice, serving {}",
                p.host,
                list(&p.modules)
            )),
            Some(h) if h.incarnation != p.incarnation => said.push(format!(
                "host {} restarted, serving {}",
                p.host,
                list(&p.modules)
            )),
            Some(h) if !h.alive => said.push(format!("host {} is back", p.host)),
            Some(h) if h.modules != p.modules => {
                said.push(format!("host {} now serves {}", p.host, list(&p.modules)))
            }
            Some(_) => {}
        }
        self.names.retain(|_, h| *h != p.host);
        for m in &p.modules {
            self.names.insert(m.clone(), p.host.clone());
        }
        // A module this host gave up is where it went, at once (the host
        // it went to may not have said so yet), and so are its
        // subscriptions.
        for (name, to) in &p.moved {
            self.names.entry(name.clone()).or_insert_with(|| to.clone());
        }
        if let Some(old) = self.hosts.get(&p.host) {
            let gone =
                |s: &str| !p.modules.iter().any(|m| m == s) && p.moved.iter().any(|(n, _)| n == s);
            let carried: Vec<_> = old
                .subs
                .iter()
                .filter(|(_, _, s)| gone(s))
                .cloned()
                .collect();
            for c in carried {
                if !self.carried.contains(&c) {
                    self.carried.push(c);
                }
            }
        }
        self.carried
            .retain(|(_, _, s)| !p.modules.iter().any(|m| m == s));
        self.hosts.insert(
            p.host,
            Host {
                incarnation: p.incarnation,
                lease,
                seen: now,
                alive: true,
                modules: p.modules,
                subs: p.subs,
                sides: p.sides,
            },
        );
        said
    }

    /// The modules of other hosts subscribed to `event` of `publisher`
    /// (a host that is down included: the events wait for it).
    pub(crate) fn subscribers(&self, publisher: &str, event: &str) -> Vec<String> {
        let mut out = Vec::new();
        let all = self.hosts.values().flat_map(|h| h.subs.iter());
        for (p, e, s) in all.chain(self.carried.iter()) {
            if p == publisher && e == event && !out.contains(s) {
                out.push(s.clone());
            }
        }
        out
    }

    /// The modules of the hosts that are up, with their protocol
    /// declarations and senders.
    pub(crate) fn sides(&self) -> Vec<ModuleSide> {
        let up = self.hosts.values().filter(|h| h.alive);
        up.flat_map(|h| h.sides.iter().cloned()).collect()
    }

    /// Mark down the hosts whose lease ran out.
    pub(crate) fn expire(&mut self, now: Instant) -> Changes {
        let mut said = Vec::new();
        for (id, h) in &mut self.hosts {
            if h.alive && now.duration_since(h.seen) > h.lease {
                h.alive = false;
                said.push(format!(
                    "host {id} is down: not heard for {} ms (lease {} ms); messages for {} wait in their outboxes",
                    now.duration_since(h.seen).as_millis(),
                    h.lease.as_millis(),
                    list(&h.modules)
                ));
            }
        }
        said
    }

    /// Every other host, for `Status`.
    pub(crate) fn rows(&self, now: Instant) -> Vec<HostRow> {
        self.hosts
            .iter()
            .map(|(id, h)| HostRow {
                id: id.clone(),
                alive: h.alive,
                seen: now.duration_since(h.seen),
                modules: h.modules.clone(),
                subscriptions: h.subs.len(),
            })
            .collect()
    }
}

fn list(modules: &[String]) -> String {
    if modules.is_empty() {
        "no module".to_string()
    } else {
        modules.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence(host: &str, incarnation: u64, modules: &[&str]) -> Presence {
        Presence {
            host: host.into(),
            incarnation,
            lease_ms: 2000,
            hello: false,
            modules: modules.iter().map(|m| m.to_string()).collect(),
            subs: Vec::new(),
            moved: Vec::new(),
            sides: Vec::new(),
        }
    }

    #[test]
    fn a_silent_host_goes_down_but_its_names_stay_routed_to_it() {
        let mut d = Directory::default();
        let t0 = Instant::now();
        let said = d.heard(presence("b", 1, &["SINK"]), t0);
        assert_eq!(said, ["host b joined the lattice, serving SINK"]);
        assert_eq!(d.host_of("SINK"), Some("b"));
        assert!(d.expire(t0 + Duration::from_millis(1500)).is_empty());
        let said = d.expire(t0 + Duration::from_millis(2100));
        assert!(said[0].starts_with("host b is down"), "{said:?}");
        assert_eq!(d.host_of("SINK"), Some("b"), "messages for SINK wait for b");
        assert!(!d.rows(t0 + Duration::from_secs(3))[0].alive);
        let said = d.heard(presence("b", 2, &["OTHER"]), t0 + Duration::from_secs(4));
        assert_eq!(said, ["host b restarted, serving OTHER"]);
        assert_eq!(d.host_of("SINK"), None, "b no longer serves SINK");
    }
}
