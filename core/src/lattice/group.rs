//! Group upgrades spanning hosts: two-phase commit over NATS, with the
//! decision written once into the NATS server's key-value store
//! (JetStream). The coordinating host opens the group's entry, asks every
//! participant host to prepare its part (nothing pauses until all have),
//! then to vote; it writes `commit` or `abort` over the open entry by
//! compare-and-set, and tells the participants. A participant that voted
//! yes and hears nothing reads the entry; once the bound and a lease have
//! passed it writes `abort` over the open entry the same way. Only one of
//! the two writes can succeed, so a late commit never overwrites a
//! participant's abort, and a host that comes back reads what was decided.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, unbounded};

use super::Shared;
use crate::bus::{Group, ModuleSide, PartTarget};
use crate::command::{GroupKind, LoadOptions, Target};
use crate::report::{Cause, ModuleReport, Phase, Refusal, TransactionReport};
use crate::upgrade::AdminState;

/// A step of a group, asked of a participant host by the coordinator.
#[derive(Debug)]
pub(crate) enum GroupStep {
    /// Prepare these targets (compile, instantiate); nothing pauses yet.
    Prepare {
        gid: String,
        line: String,
        bound_ms: u64,
        targets: Vec<PartTarget>,
    },
    /// Every host prepared: vote (the modules reach quiescence and put
    /// their state), then wait for the decision.
    Vote { gid: String },
    /// The decision, as recorded.
    Decide { gid: String, commit: bool },
}

/// What a participant's transaction thread is told.
pub(crate) enum PartStep {
    Vote(Sender<Result<String, String>>),
    Decide(bool, Sender<Result<String, String>>),
}

/// A participant's group in progress: where its steps go, and its bound.
pub(crate) type Joined = HashMap<String, (Sender<PartStep>, Duration)>;

/// How long preparing (reading, compiling, instantiating) may take.
const PREPARE_BOUND: Duration = Duration::from_secs(120);
/// How long a participant waits for the vote once it prepared.
const VOTE_WAIT: Duration = Duration::from_secs(120);
/// How often a participant that voted yes reads the recorded decision.
const POLL: Duration = Duration::from_millis(100);

/// What the key-value store holds for a group.
#[derive(Debug, PartialEq)]
pub(crate) enum Record {
    /// Undecided, at this revision.
    Open(u64),
    /// Committed, by this host.
    Commit(String),
    /// Aborted, by this host, why, and whether the coordinator has heard.
    Abort(String, String, bool),
    /// No entry (expired, or never written).
    Missing,
}

impl Record {
    fn parse(value: &[u8], revision: u64) -> Record {
        let text = String::from_utf8_lossy(value);
        let mut lines = text.lines();
        match lines.next() {
            Some("open") => Record::Open(revision),
            Some("commit") => Record::Commit(lines.next().unwrap_or("?").to_string()),
            Some("abort") => {
                let by = lines.next().unwrap_or("?").to_string();
                let why = lines.next().unwrap_or("").to_string();
                Record::Abort(by, why, lines.next() == Some("agreed"))
            }
            _ => Record::Missing,
        }
    }
}

impl Shared {
    /// Run `op` on the lattice's key-value store (on the link's runtime),
    /// waiting up to five seconds.
    fn kv<T, F>(&self, op: impl FnOnce(async_nats::jetstream::kv::Store) -> F) -> Result<T, String>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, String>> + Send + 'static,
    {
        let store = self.kv.lock().expect("kv poisoned").clone().ok_or_else(|| {
            "the lattice's NATS server keeps no key-value store (start nats-server with -js): a group spanning hosts records its decision there".to_string()
        })?;
        let handle = self
            .handle
            .get()
            .ok_or("the lattice link has not started")?;
        let (tx, rx) = bounded(1);
        let fut = op(store);
        handle.spawn(async move {
            let r = tokio::time::timeout(Duration::from_secs(5), fut)
                .await
                .unwrap_or_else(
                    |_| Err("the NATS key-value store did not answer within 5s".into()),
                );
            let _ = tx.send(r);
        });
        rx.recv()
            .unwrap_or_else(|_| Err("the lattice link has stopped".into()))
    }

    /// What is recorded for group `gid`.
    pub(crate) fn record(&self, gid: &str) -> Result<Record, String> {
        let key = gid.to_string();
        self.kv(|s| async move {
            match s.entry(key).await.map_err(|e| e.to_string())? {
                Some(e) if e.operation == async_nats::jetstream::kv::Operation::Put => {
                    Ok(Record::parse(&e.value, e.revision))
                }
                _ => Ok(Record::Missing),
            }
        })
    }

    /// Open group `gid`'s entry: its revision.
    fn open(&self, gid: &str, line: &str) -> Result<u64, String> {
        let key = gid.to_string();
        let value = format!("open\n{}\n{line}", self.host);
        self.kv(|s| async move {
            s.create(key, value.into()).await.map_err(|e| {
                format!("cannot open the group's entry in the NATS key-value store: {e}")
            })
        })
    }

    /// Write `value` over the open entry at `revision`: only the first such
    /// write succeeds. Otherwise what is recorded instead.
    pub(crate) fn settle(&self, gid: &str, revision: u64, value: String) -> Result<(), Record> {
        let key = gid.to_string();
        let done = self
            .kv(move |s| async move { Ok(s.update(key, value.into(), revision).await.is_ok()) });
        match done {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.record(gid).unwrap_or(Record::Missing)),
            Err(e) => Err(Record::Abort("?".into(), e, false)),
        }
    }

    /// Ask each of `hosts` its `step` at once: the answers, by host.
    fn ask_all(
        &self,
        hosts: impl Iterator<Item = (String, GroupStep)>,
        timeout: Duration,
    ) -> Receiver<(String, Result<String, String>)> {
        let (tx, rx) = unbounded();
        for (host, step) in hosts {
            let payload = super::wire::group(&self.host, self.incarnation, &step);
            let (tx, to) = (tx.clone(), host.clone());
            let then = Box::new(move |answer| {
                let _ = tx.send((to, answer));
            });
            self.request_then(&host, payload, timeout, then);
        }
        rx
    }

    /// Start coordinating a group whose `parts` other hosts serve.
    pub(crate) fn coordinating(
        self: &Arc<Self>,
        line: &str,
        bound: Duration,
        parts: BTreeMap<String, Vec<PartTarget>>,
    ) -> Result<Box<dyn Group>, String> {
        for host in parts.keys() {
            let alive = self
                .directory
                .lock()
                .expect("directory poisoned")
                .is_alive(host);
            if !alive {
                return Err(format!(
                    "host {host} is down: it cannot take part in the group"
                ));
            }
        }
        let mut nonce = [0u8; 6];
        getrandom::getrandom(&mut nonce).map_err(|e| e.to_string())?;
        let hex: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Box::new(Coordinating {
            shared: self.clone(),
            gid: format!("g.{}.{hex}", self.host),
            line: line.to_string(),
            bound,
            names: parts
                .iter()
                .map(|(h, ts)| (h.clone(), ts.iter().map(|t| t.name.clone()).collect()))
                .collect(),
            parts,
            revision: 0,
            prepared_hosts: Vec::new(),
            votes: None,
            dones: None,
            voted_by: Instant::now(),
        }))
    }
}

/// The coordinating host's part.
struct Coordinating {
    shared: Arc<Shared>,
    gid: String,
    line: String,
    bound: Duration,
    parts: BTreeMap<String, Vec<PartTarget>>,
    /// The modules each participant host serves.
    names: BTreeMap<String, Vec<String>>,
    revision: u64,
    /// The hosts that prepared their parts.
    prepared_hosts: Vec<String>,
    votes: Option<Receiver<(String, Result<String, String>)>>,
    dones: Option<Receiver<(String, Result<String, String>)>>,
    voted_by: Instant,
}

impl Coordinating {
    fn refusal(&self, host: &str, why: String) -> Refusal {
        let module = self.names.get(host).and_then(|n| n.first()).cloned();
        Refusal::new(&module.unwrap_or_default(), Phase::Bound, Cause::Host(why))
    }

    /// The group ends before its vote: record it, release the hosts that
    /// prepared.
    fn end_early(&mut self, prepared: Vec<String>, why: &str) {
        let value = format!("abort\n{}\n{why}", self.shared.host);
        let _ = self.shared.settle(&self.gid, self.revision, value);
        let steps = prepared.into_iter().map(|h| {
            let gid = self.gid.clone();
            (h, GroupStep::Decide { gid, commit: false })
        });
        let rx = self.shared.ask_all(steps, Duration::from_secs(5));
        while rx.recv_timeout(Duration::from_secs(6)).is_ok() {}
    }

    /// Wait for every participant host's vote: the first NO, if any.
    fn votes(&mut self) -> Option<Refusal> {
        let rx = self.votes.take()?;
        let mut pending: Vec<String> = self.names.keys().cloned().collect();
        while !pending.is_empty() {
            match rx.recv_deadline(self.voted_by) {
                Ok((host, Ok(_))) => pending.retain(|h| *h != host),
                Ok((host, Err(why))) => {
                    return Some(self.refusal(&host, format!("host {host}: {why}")));
                }
                Err(_) => {
                    let late = pending.join(", host ");
                    let why = format!(
                        "host {late} did not vote within the bound of {:?}",
                        self.bound
                    );
                    return Some(self.refusal(&pending[0], why));
                }
            }
        }
        None
    }
}

/// A fault for tests of recovery: `LIVESWAP_GROUP_STALL=before` (or
/// `after`) stalls the coordinator just before (after) it records the
/// decision, until it is killed; `before:S` stalls it S seconds only;
/// `voted` stalls a participant once it has voted yes.
fn stall(at: &str, shared: &Shared) {
    let Ok(v) = std::env::var("LIVESWAP_GROUP_STALL") else {
        return;
    };
    let (when, secs) = match v.split_once(':') {
        Some((w, s)) => (w, s.parse::<u64>().ok()),
        None => (v.as_str(), None),
    };
    if when != at {
        return;
    }
    let what = match at {
        "voted" => "stalling after voting yes".to_string(),
        _ => format!("stalling {at} the decision is recorded"),
    };
    shared.say(format!("LIVESWAP_GROUP_STALL={v}: {what}"));
    match secs {
        Some(s) => std::thread::sleep(Duration::from_secs(s)),
        None => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
    }
}

impl Group for Coordinating {
    fn prepared(
        &mut self,
        local: Result<Vec<ModuleSide>, String>,
    ) -> Result<Option<Vec<ModuleSide>>, String> {
        local?;
        self.revision = self.shared.open(&self.gid, &self.line)?;
        let hosts: Vec<String> = self.parts.keys().cloned().collect();
        self.shared.say(format!(
            "group {}: hosts {} prepare their parts",
            self.gid,
            hosts.join(", ")
        ));
        let steps = std::mem::take(&mut self.parts)
            .into_iter()
            .map(|(h, targets)| {
                let step = GroupStep::Prepare {
                    gid: self.gid.clone(),
                    line: self.line.clone(),
                    bound_ms: self.bound.as_millis() as u64,
                    targets,
                };
                (h, step)
            });
        let rx = self.shared.ask_all(steps, PREPARE_BOUND);
        let (mut ok, mut refused, mut theirs) = (Vec::new(), None, Vec::new());
        for _ in 0..hosts.len() {
            match rx.recv() {
                Ok((h, Ok(text))) => {
                    theirs.extend(text.lines().filter_map(parse_side));
                    ok.push(h);
                }
                Ok((h, Err(why))) => refused = refused.or(Some(format!("host {h}: {why}"))),
                Err(_) => break,
            }
        }
        if let Some(why) = refused {
            self.end_early(ok, &why);
            return Err(why);
        }
        self.prepared_hosts = ok;
        Ok(Some(theirs))
    }

    fn abandon(&mut self, why: &str) {
        let hosts = std::mem::take(&mut self.prepared_hosts);
        self.end_early(hosts, why);
    }

    fn vote(&mut self) -> Result<(), String> {
        let hosts = self.prepared_hosts.clone();
        // Everyone prepared: the votes start here and on every host.
        self.voted_by = Instant::now() + self.bound + Duration::from_millis(500);
        let steps = hosts.into_iter().map(|h| {
            let gid = self.gid.clone();
            (h, GroupStep::Vote { gid })
        });
        // The deadline above, not this, ends a vote that never comes.
        let timeout = self.bound + Duration::from_secs(5);
        self.votes = Some(self.shared.ask_all(steps, timeout));
        Ok(())
    }

    fn decide(&mut self, no: Option<Refusal>) -> Option<Refusal> {
        let mut no = no.or_else(|| self.votes());
        stall("before", &self.shared);
        let host = &self.shared.host;
        let value = match &no {
            None => format!("commit\n{host}"),
            Some(r) => format!("abort\n{host}\n{r}"),
        };
        match self.shared.settle(&self.gid, self.revision, value) {
            Ok(()) => {}
            Err(Record::Abort(by, why, _)) if by != "?" => {
                self.shared.agree(&self.gid, &by, &why);
                let why = format!("host {by} recorded abort first: {why}");
                no = Some(self.refusal(by.as_str(), why));
            }
            Err(other) if no.is_none() => {
                let why = format!("the decision could not be recorded ({other:?})");
                no = Some(Refusal::new("", Phase::Bound, Cause::Host(why)));
            }
            Err(_) => {}
        }
        let commit = no.is_none();
        self.shared.say(format!(
            "group {}: {}",
            self.gid,
            match &no {
                None => "commit recorded".to_string(),
                Some(r) => format!("abort ({r})"),
            }
        ));
        if commit {
            stall("after", &self.shared);
        }
        let steps = self.names.keys().map(|h| {
            let gid = self.gid.clone();
            (h.clone(), GroupStep::Decide { gid, commit })
        });
        self.dones = Some(self.shared.ask_all(steps, Duration::from_secs(10)));
        no
    }

    fn finish(&mut self, report: &mut TransactionReport) {
        let Some(rx) = self.dones.take() else {
            return;
        };
        for _ in 0..self.names.len() {
            match rx.recv_timeout(Duration::from_secs(11)) {
                Ok((host, Ok(rows))) => fill(report, &host, &rows),
                Ok((host, Err(why))) => self.shared.say(format!(
                    "group {}: host {host} did not confirm the decision ({why}); it reads it from the lattice's store when it is back",
                    self.gid
                )),
                Err(_) => break,
            }
        }
        for (host, names) in &self.names {
            for m in report
                .modules
                .iter_mut()
                .filter(|m| names.contains(&m.name))
            {
                m.host = Some(host.clone());
            }
        }
    }
}

/// A new version's declarations as one line of a participant's answer to
/// Prepare: name, version, what it speaks and accepts.
fn side_line(m: &ModuleSide) -> String {
    let list = |l: &[u32]| l.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    format!(
        "{}\t{}\t{}\t{}",
        m.name,
        m.version,
        list(&m.speaks),
        list(&m.accepts)
    )
}

/// Read what [`side_line`] wrote.
fn parse_side(line: &str) -> Option<ModuleSide> {
    let list = |s: &str| -> Vec<u32> { s.split(',').filter_map(|p| p.parse().ok()).collect() };
    let [name, version, speaks, accepts] = line.split('\t').collect::<Vec<_>>()[..] else {
        return None;
    };
    Some(ModuleSide {
        name: name.to_string(),
        version: version.to_string(),
        speaks: list(speaks),
        accepts: list(accepts),
        senders: Vec::new(),
    })
}

/// The setting a participant with a state directory keeps while it has
/// voted yes: the group and its targets with their new digests.
fn voted_key(gid: &str, targets: &[(String, String)]) -> String {
    let t: Vec<String> = targets.iter().map(|(n, d)| format!("{n}={d}")).collect();
    format!("{} {gid} {}", crate::store::LATTICE_VOTED, t.join(","))
}

/// Read what [`voted_key`] wrote: the group and its targets.
pub(crate) fn parse_voted(key: &str) -> Option<(String, Vec<(String, String)>)> {
    let rest = key.strip_prefix(crate::store::LATTICE_VOTED)?.trim_start();
    let (gid, targets) = rest.split_once(' ')?;
    let targets = targets
        .split(',')
        .filter_map(|t| t.split_once('='))
        .map(|(n, d)| (n.to_string(), d.to_string()))
        .collect();
    Some((gid.to_string(), targets))
}

/// A participant's rows of the report, as text: one line per module.
fn rows(report: &TransactionReport) -> String {
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    report
        .modules
        .iter()
        .map(|m| {
            format!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                m.name,
                m.from.as_deref().unwrap_or("-"),
                m.to.as_deref().unwrap_or("-"),
                opt(m.quiesce_us),
                opt(m.pause_us),
                m.buffered,
                opt(m.state_bytes.map(|b| b as u64)),
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Copy a participant's rows into the coordinator's report.
fn fill(report: &mut TransactionReport, host: &str, text: &str) {
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let [name, from, to, q, p, buffered, state] = f[..] else {
            continue;
        };
        let Some(m) = report.modules.iter_mut().find(|m| m.name == name) else {
            continue;
        };
        let label = |s: &str| (s != "-").then(|| s.to_string());
        let num = |s: &str| s.parse::<u64>().ok();
        *m = ModuleReport {
            name: m.name.clone(),
            from: label(from),
            to: label(to),
            quiesce_us: num(q),
            pause_us: num(p),
            buffered: buffered.parse().unwrap_or(0),
            state_bytes: num(state).map(|b| b as usize),
            host: Some(host.to_string()),
            ..ModuleReport::default()
        };
    }
}

/// A participant host's part: its transaction thread runs the usual
/// phases, and at each point waits for the coordinator's step.
struct Participating {
    shared: Arc<Shared>,
    gid: String,
    coordinator: String,
    bound: Duration,
    names: Vec<String>,
    /// Its targets and their new versions' digests (what a restart needs
    /// to apply a commit it did not hear of).
    targets: Vec<(String, String)>,
    /// Where the answer to Prepare goes: the new versions' declarations.
    ready: Sender<Result<String, String>>,
    steps: Receiver<PartStep>,
    vote: Option<Sender<Result<String, String>>>,
    done: Option<Sender<Result<String, String>>>,
}

impl Participating {
    fn refusal(&self, why: String) -> Refusal {
        let module = self.names.first().cloned().unwrap_or_default();
        Refusal::new(&module, Phase::Bound, Cause::Host(why))
    }

    /// Voted yes: wait for the decision — told by the coordinator, or read
    /// from the store; past the bound and a lease, record abort.
    fn await_decision(&mut self) -> Option<Refusal> {
        let give_up = Instant::now() + self.bound + self.shared.lease;
        let mut note = Instant::now() + Duration::from_secs(1);
        loop {
            match self.steps.recv_timeout(POLL) {
                Ok(PartStep::Decide(commit, reply)) => {
                    self.done = Some(reply);
                    if commit {
                        return None;
                    }
                    // Why, as recorded.
                    let why = match self.shared.record(&self.gid) {
                        Ok(Record::Abort(by, why, _)) => format!("host {by} recorded abort: {why}"),
                        _ => format!("host {} decided abort", self.coordinator),
                    };
                    return Some(self.refusal(why));
                }
                Ok(PartStep::Vote(reply)) => {
                    let _ = reply.send(Err("this host has voted already".into()));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Some(self.refusal("the group was dropped".into()));
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            match self.shared.record(&self.gid) {
                Ok(Record::Commit(by)) => {
                    self.shared.say(format!(
                        "group {}: commit read from the lattice's store (recorded by host {by})",
                        self.gid
                    ));
                    return None;
                }
                Ok(Record::Abort(by, why, _)) => {
                    return Some(self.refusal(format!("host {by} recorded abort: {why}")));
                }
                Ok(Record::Missing) => {
                    return Some(self.refusal("the group's entry is gone from the store".into()));
                }
                Ok(Record::Open(revision)) if Instant::now() >= give_up => {
                    let why = format!(
                        "host {} decided nothing within the bound of {:?} and a lease",
                        self.coordinator, self.bound
                    );
                    let value = format!("abort\n{}\n{why}", self.shared.host);
                    if self.shared.settle(&self.gid, revision, value).is_ok() {
                        self.shared
                            .say(format!("group {}: {why}: abort recorded", self.gid));
                        return Some(self.refusal(why));
                    }
                }
                Ok(Record::Open(_)) => {}
                Err(e) if Instant::now() >= note => {
                    note += Duration::from_secs(1);
                    self.shared.say(format!(
                        "group {}: voted yes; the decision cannot be read ({e}); the modules stay paused",
                        self.gid
                    ));
                }
                Err(_) => {}
            }
        }
    }
}

impl Group for Participating {
    fn prepared(
        &mut self,
        local: Result<Vec<ModuleSide>, String>,
    ) -> Result<Option<Vec<ModuleSide>>, String> {
        let answer = local
            .as_ref()
            .map(|sides| sides.iter().map(side_line).collect::<Vec<_>>().join("\n"));
        let _ = self.ready.send(answer.map_err(Clone::clone));
        local.map(|_| None)
    }

    fn abandon(&mut self, _why: &str) {}

    fn vote(&mut self) -> Result<(), String> {
        match self.steps.recv_timeout(VOTE_WAIT) {
            Ok(PartStep::Vote(reply)) => {
                self.vote = Some(reply);
                Ok(())
            }
            Ok(PartStep::Decide(_, reply)) => {
                let _ = reply.send(Ok(String::new()));
                Err(format!(
                    "host {} ended the group before its vote",
                    self.coordinator
                ))
            }
            Err(_) => Err(format!(
                "host {} never asked for the vote",
                self.coordinator
            )),
        }
    }

    fn decide(&mut self, no: Option<Refusal>) -> Option<Refusal> {
        let vote = self.vote.take();
        if let Some(no) = no {
            if let Some(v) = vote {
                let _ = v.send(Err(no.to_string()));
            }
            return Some(no);
        }
        // A host with a state directory keeps its YES: should it die
        // before it hears the decision, it applies it when it is back.
        let key = voted_key(&self.gid, &self.targets);
        if let Err(e) = self.shared.keep_setting(&key, 1) {
            let no = self.refusal(format!("the vote cannot be kept: {e}"));
            if let Some(v) = vote {
                let _ = v.send(Err(no.to_string()));
            }
            return Some(no);
        }
        if let Some(v) = vote {
            let _ = v.send(Ok("yes".into()));
        }
        stall("voted", &self.shared);
        self.await_decision()
    }

    fn finish(&mut self, report: &mut TransactionReport) {
        let _ = self
            .shared
            .keep_setting(&voted_key(&self.gid, &self.targets), 0);
        if let Some(done) = self.done.take() {
            let _ = done.send(Ok(rows(report)));
        }
    }
}

impl Shared {
    /// Take a step of group `gid` from its coordinator `from` (off the
    /// link thread): the answer's text, or why not.
    pub(crate) fn group_step(
        self: &Arc<Self>,
        from: &str,
        step: GroupStep,
    ) -> Result<String, String> {
        let (gid, part) = match step {
            GroupStep::Prepare {
                gid,
                line,
                bound_ms,
                targets,
            } => {
                let bound = Duration::from_millis(bound_ms);
                return self.join_group(from, (gid, line, bound), targets);
            }
            GroupStep::Vote { gid } => (gid, None),
            GroupStep::Decide { gid, commit } => (gid, Some(commit)),
        };
        let joined = self
            .groups
            .lock()
            .expect("groups poisoned")
            .get(&gid)
            .cloned();
        let Some((steps, bound)) = joined else {
            return match part {
                // Ended here already (it read the decision from the store).
                Some(_) => Ok(String::new()),
                None => Err(format!("group {gid} is not prepared on host {}", self.host)),
            };
        };
        let (reply, answer) = bounded(1);
        let (step, wait) = match part {
            None => (PartStep::Vote(reply), bound + Duration::from_secs(1)),
            Some(c) => (PartStep::Decide(c, reply), Duration::from_secs(10)),
        };
        steps
            .send(step)
            .map_err(|_| format!("group {gid} has ended"))?;
        answer
            .recv_timeout(wait)
            .unwrap_or_else(|_| Err(format!("host {} did not answer in time", self.host)))
    }

    /// Prepare this host's part of a group and start its transaction
    /// thread, which waits for the vote.
    fn join_group(
        self: &Arc<Self>,
        from: &str,
        (gid, line, bound): (String, String, Duration),
        targets: Vec<PartTarget>,
    ) -> Result<String, String> {
        let core = self.core.upgrade().ok_or("the host is stopping")?;
        let mut local: Vec<Target> = Vec::new();
        for t in targets {
            let earlier = local
                .iter()
                .find(|l| l.options.pin.as_ref() == Some(&t.digest));
            let path = match earlier {
                Some(l) if t.wasm.is_empty() => l.path.clone(),
                _ => super::moving::stored(&t.digest, &t.wasm)?,
            };
            let options = LoadOptions {
                pin: Some(t.digest),
                ..Default::default()
            };
            local.push(Target {
                name: t.name,
                path,
                options,
            });
        }
        let (steps_tx, steps) = unbounded();
        let (ready, prepared) = bounded(1);
        self.groups
            .lock()
            .expect("groups poisoned")
            .insert(gid.clone(), (steps_tx, bound));
        let part = Participating {
            shared: self.clone(),
            gid: gid.clone(),
            coordinator: from.to_string(),
            bound,
            names: local.iter().map(|t| t.name.clone()).collect(),
            targets: local
                .iter()
                .map(|t| (t.name.clone(), t.options.pin.clone().unwrap_or_default()))
                .collect(),
            ready,
            steps,
            vote: None,
            done: None,
        };
        let (shared, origin) = (self.clone(), format!("group {gid} of host {from}"));
        std::thread::Builder::new()
            .name(format!("group {gid}"))
            .spawn(move || {
                let _ = core.serialized(&line, &origin, false, |admin| {
                    let admin = AdminState {
                        bound,
                        mode: admin.mode,
                    };
                    let group: Box<dyn Group> = Box::new(part);
                    let targets = (local.as_slice(), local.as_slice());
                    let r = core.transact_with(
                        &admin,
                        GroupKind::Replace,
                        targets,
                        &line,
                        &origin,
                        Ok(Some(group)),
                    );
                    Ok::<_, crate::error::CommandError>(r)
                });
                shared.groups.lock().expect("groups poisoned").remove(&gid);
            })
            .map_err(|e| e.to_string())?;
        prepared
            .recv_timeout(PREPARE_BOUND)
            .unwrap_or_else(|_| Err("preparing took too long".into()))
    }

    /// Mark group `gid`, which host `by` aborted, as heard by its
    /// coordinator (this host).
    fn agree(&self, gid: &str, by: &str, why: &str) {
        let key = gid.to_string();
        let value = format!("abort\n{by}\n{why}\nagreed");
        let _ =
            self.kv(|s| async move { s.put(key, value.into()).await.map_err(|e| e.to_string()) });
    }

    /// On joining: groups this host coordinated in an earlier run that it
    /// never saw end. An open one is aborted now; one a participant
    /// aborted is agreed to. Each is said once.
    pub(crate) fn settle_earlier(&self) -> Vec<String> {
        let prefix = format!("g.{}.", self.host);
        let keys = self.kv(move |s| async move {
            use futures_util::StreamExt;
            let mut keys = s.keys().await.map_err(|e| e.to_string())?;
            let mut mine = Vec::new();
            while let Some(k) = keys.next().await {
                if let Ok(k) = k
                    && k.starts_with(&prefix)
                {
                    mine.push(k);
                }
            }
            Ok(mine)
        });
        let mut said = Vec::new();
        for gid in keys.unwrap_or_default() {
            match self.record(&gid) {
                Ok(Record::Open(revision)) => {
                    let why = format!(
                        "host {} (its coordinator) restarted before deciding",
                        self.host
                    );
                    let value = format!("abort\n{}\n{why}\nagreed", self.host);
                    if self.settle(&gid, revision, value).is_ok() {
                        said.push(format!(
                            "group {gid} was never decided: abort recorded ({why})"
                        ));
                    }
                }
                Ok(Record::Abort(by, why, false)) if by != self.host => {
                    self.agree(&gid, &by, &why);
                    said.push(format!(
                        "group {gid}: host {by} recorded abort while this host, its coordinator, was down ({why}); this host agrees"
                    ));
                }
                _ => {}
            }
        }
        said
    }
}
