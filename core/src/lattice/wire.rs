//! What hosts of a lattice say to each other over NATS, byte for byte.
//! Each payload starts with a magic and a kind byte: a host's presence
//! (its lease and the names it serves), a batch of messages for modules
//! on one host, the acknowledgements of such batches, and the requests
//! one host makes of another (a step of a move or of a group upgrade, a
//! forwarded command). Anything else on the lattice's subjects is malformed and
//! dropped by the reader, never trusted: a decode checks every length.

use std::sync::Arc;

use super::group::GroupStep;
use crate::bindings::Message;
use crate::bus::{ModuleSide, MoveStep, PartTarget};
use crate::guest::Grant;

const MAGIC: &[u8; 3] = b"LS1";
const PRESENCE: u8 = 1;
const BATCH: u8 = 2;
const ACKS: u8 = 3;
const STEP: u8 = 4;
const FORWARD: u8 = 5;
const GROUP: u8 = 6;

/// A host's presence: who it is, which run of it, how long its word holds
/// and which modules it serves.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Presence {
    pub host: String,
    pub incarnation: u64,
    pub lease_ms: u32,
    /// Whether this host asks every other host to announce itself now
    /// (it has just joined).
    pub hello: bool,
    pub modules: Vec<String>,
    /// The subscriptions its modules hold: (publisher, event, subscriber).
    pub subs: Vec<(String, String, String)>,
    /// Modules it gave up lately, and the host each went to.
    pub moved: Vec<(String, String)>,
    /// Its modules' protocol declarations and senders.
    pub sides: Vec<ModuleSide>,
}

/// One message for a module on the receiving host, with its place in the
/// stream from the sending host to that module.
#[derive(Clone, Debug)]
pub(crate) struct Frame {
    pub to: String,
    pub seq: u64,
    pub msg: Message,
}

/// Messages from one run of one host.
#[derive(Clone, Debug)]
pub(crate) struct Batch {
    pub host: String,
    pub incarnation: u64,
    pub frames: Vec<Frame>,
}

/// From a receiving host: for each module, the last sequence number of
/// the stream from one run of the sending host that the module's mailbox
/// holds.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Acks {
    pub host: String,
    pub incarnation: u64,
    pub last: Vec<(String, u64)>,
}

/// What a payload was.
#[derive(Debug)]
pub(crate) enum Payload {
    Presence(Presence),
    Batch(Batch),
    Acks(Acks),
    /// A step of a move, from `host`.
    Step(String, MoveStep),
    /// A command to run here, from `host`: (host, origin, line).
    Forward(String, String, String),
    /// A step of a group upgrade spanning hosts, from its coordinator.
    Group(String, GroupStep),
}

struct Writer(Vec<u8>);

impl Writer {
    fn new(kind: u8) -> Self {
        let mut v = Vec::with_capacity(256);
        v.extend_from_slice(MAGIC);
        v.push(kind);
        Writer(v)
    }
    fn u32(&mut self, n: u32) {
        self.0.extend_from_slice(&n.to_le_bytes());
    }
    fn u64(&mut self, n: u64) {
        self.0.extend_from_slice(&n.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!(
                "cut short: {n} bytes wanted, {} left",
                self.0.len()
            ));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| "a name is not UTF-8".to_string())
    }
    /// A count of items, each at least `min` bytes: never more than the
    /// payload could hold (a forged count allocates nothing).
    fn count(&mut self, min: usize) -> Result<usize, String> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min) > self.0.len() {
            return Err(format!("{n} items cannot fit in {} bytes", self.0.len()));
        }
        Ok(n)
    }
}

/// A presence, encoded.
pub(crate) fn presence(p: &Presence) -> Vec<u8> {
    let mut w = Writer::new(PRESENCE);
    w.bytes(p.host.as_bytes());
    w.u64(p.incarnation);
    w.u32(p.lease_ms);
    w.0.push(p.hello as u8);
    w.u32(p.modules.len() as u32);
    for m in &p.modules {
        w.bytes(m.as_bytes());
    }
    w.u32(p.subs.len() as u32);
    for (publisher, event, subscriber) in &p.subs {
        w.bytes(publisher.as_bytes());
        w.bytes(event.as_bytes());
        w.bytes(subscriber.as_bytes());
    }
    w.u32(p.moved.len() as u32);
    for (name, host) in &p.moved {
        w.bytes(name.as_bytes());
        w.bytes(host.as_bytes());
    }
    w.u32(p.sides.len() as u32);
    for m in &p.sides {
        write_side(&mut w, m);
    }
    w.0
}

/// A module's protocol declarations (in a presence, or a prepared
/// group's answer).
fn write_side(w: &mut Writer, m: &ModuleSide) {
    w.bytes(m.name.as_bytes());
    w.bytes(m.version.as_bytes());
    for list in [&m.speaks, &m.accepts] {
        w.u32(list.len() as u32);
        for p in list {
            w.u32(*p);
        }
    }
    w.u32(m.senders.len() as u32);
    for s in &m.senders {
        w.bytes(s.as_bytes());
    }
}

fn read_side(r: &mut Reader<'_>) -> Result<ModuleSide, String> {
    let name = r.string()?;
    let version = r.string()?;
    let mut lists = [Vec::new(), Vec::new()];
    for l in &mut lists {
        let n = r.count(4)?;
        *l = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
    }
    let [speaks, accepts] = lists;
    let n = r.count(4)?;
    let senders = (0..n).map(|_| r.string()).collect::<Result<_, _>>()?;
    Ok(ModuleSide {
        name,
        version,
        speaks,
        accepts,
        senders,
    })
}

/// A batch under way: frames are added until it is as large as a NATS
/// payload should be.
pub(crate) struct BatchWriter {
    w: Writer,
    count_at: usize,
    frames: u32,
}

impl BatchWriter {
    pub(crate) fn new(host: &str, incarnation: u64) -> Self {
        let mut w = Writer::new(BATCH);
        w.bytes(host.as_bytes());
        w.u64(incarnation);
        let count_at = w.len();
        w.u32(0);
        BatchWriter {
            w,
            count_at,
            frames: 0,
        }
    }
    pub(crate) fn push(&mut self, to: &str, seq: u64, from: &str, msg: &Message) {
        let w = &mut self.w;
        w.bytes(to.as_bytes());
        w.u64(seq);
        w.bytes(from.as_bytes());
        w.bytes(msg.kind.as_bytes());
        w.u32(msg.proto);
        w.bytes(&msg.body);
        self.frames += 1;
    }
    pub(crate) fn len(&self) -> usize {
        self.w.len()
    }
    pub(crate) fn frames(&self) -> u32 {
        self.frames
    }
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.w.0[self.count_at..self.count_at + 4].copy_from_slice(&self.frames.to_le_bytes());
        self.w.0
    }
}

/// Acknowledgements, encoded.
pub(crate) fn acks(a: &Acks) -> Vec<u8> {
    let mut w = Writer::new(ACKS);
    w.bytes(a.host.as_bytes());
    w.u64(a.incarnation);
    w.u32(a.last.len() as u32);
    for (to, seq) in &a.last {
        w.bytes(to.as_bytes());
        w.u64(*seq);
    }
    w.0
}

/// A command forwarded to another host, encoded.
pub(crate) fn forward(host: &str, incarnation: u64, origin: &str, line: &str) -> Vec<u8> {
    let mut w = Writer::new(FORWARD);
    w.bytes(host.as_bytes());
    w.u64(incarnation);
    w.bytes(origin.as_bytes());
    w.bytes(line.as_bytes());
    w.0
}

/// A step of a move, encoded.
pub(crate) fn step(host: &str, incarnation: u64, step: &MoveStep) -> Vec<u8> {
    let mut w = Writer::new(STEP);
    w.bytes(host.as_bytes());
    w.u64(incarnation);
    match step {
        MoveStep::Compile { digest, wasm } => {
            w.0.push(1);
            w.bytes(digest.as_bytes());
            w.bytes(wasm);
        }
        MoveStep::Install {
            id,
            name,
            digest,
            memory,
            capacity,
            state,
            grants,
        } => {
            w.0.push(2);
            w.u64(*id);
            w.bytes(name.as_bytes());
            w.bytes(digest.as_bytes());
            w.u64(memory.unwrap_or(u64::MAX));
            w.u64(*capacity);
            w.bytes(state);
            w.u32(grants.len() as u32);
            for g in grants {
                write_grant(&mut w, g);
            }
        }
        MoveStep::Commit {
            id,
            timers,
            subs,
            marks,
        } => {
            w.0.push(3);
            w.u64(*id);
            w.u32(timers.len() as u32);
            for (t, ms) in timers {
                w.bytes(t.as_bytes());
                w.u64(*ms);
            }
            w.u32(subs.len() as u32);
            for (p, e) in subs {
                w.bytes(p.as_bytes());
                w.bytes(e.as_bytes());
            }
            w.u32(marks.len() as u32);
            for (h, inc, last) in marks {
                w.bytes(h.as_bytes());
                w.u64(*inc);
                w.u64(*last);
            }
        }
        MoveStep::Cancel { id } => {
            w.0.push(4);
            w.u64(*id);
        }
        MoveStep::Queue { id, msgs } => {
            w.0.push(5);
            w.u64(*id);
            w.u32(msgs.len() as u32);
            for m in msgs {
                w.bytes(m.from.as_bytes());
                w.bytes(m.kind.as_bytes());
                w.u32(m.proto);
                w.bytes(&m.body);
            }
        }
    }
    w.0
}

fn write_grant(w: &mut Writer, g: &Grant) {
    match g {
        Grant::Udp(a) => {
            w.0.push(0);
            w.bytes(a.to_string().as_bytes());
        }
        Grant::Tcp(a) => {
            w.0.push(1);
            w.bytes(a.to_string().as_bytes());
        }
        Grant::Dir {
            host,
            guest,
            writable,
        } => {
            w.0.push(2);
            w.bytes(host.to_string_lossy().as_bytes());
            w.bytes(guest.as_bytes());
            w.0.push(u8::from(*writable));
        }
        Grant::Env { name, value } => {
            w.0.push(3);
            w.bytes(name.as_bytes());
            w.bytes(value.as_bytes());
        }
    }
}

fn read_grant(r: &mut Reader<'_>) -> Result<Grant, String> {
    let addr = |s: String| s.parse().map_err(|_| format!("a granted address `{s}`"));
    Ok(match r.u8()? {
        0 => Grant::Udp(addr(r.string()?)?),
        1 => Grant::Tcp(addr(r.string()?)?),
        2 => Grant::Dir {
            host: r.string()?.into(),
            guest: r.string()?,
            writable: r.u8()? == 1,
        },
        3 => Grant::Env {
            name: r.string()?,
            value: r.string()?,
        },
        k => return Err(format!("a grant of unknown kind {k}")),
    })
}

/// A step of a group upgrade spanning hosts, encoded.
pub(crate) fn group(host: &str, incarnation: u64, step: &GroupStep) -> Vec<u8> {
    let mut w = Writer::new(GROUP);
    w.bytes(host.as_bytes());
    w.u64(incarnation);
    match step {
        GroupStep::Prepare {
            gid,
            line,
            bound_ms,
            targets,
        } => {
            w.0.push(1);
            w.bytes(gid.as_bytes());
            w.bytes(line.as_bytes());
            w.u64(*bound_ms);
            w.u32(targets.len() as u32);
            for t in targets {
                w.bytes(t.name.as_bytes());
                w.bytes(t.digest.as_bytes());
                w.bytes(&t.wasm);
            }
        }
        GroupStep::Vote { gid } => {
            w.0.push(2);
            w.bytes(gid.as_bytes());
        }
        GroupStep::Decide { gid, commit } => {
            w.0.push(3);
            w.bytes(gid.as_bytes());
            w.0.push(u8::from(*commit));
        }
    }
    w.0
}

fn read_group(r: &mut Reader<'_>) -> Result<GroupStep, String> {
    Ok(match r.u8()? {
        1 => {
            let gid = r.string()?;
            let line = r.string()?;
            let bound_ms = r.u64()?;
            let n = r.count(12)?;
            let targets = (0..n)
                .map(|_| {
                    Ok(PartTarget {
                        name: r.string()?,
                        digest: r.string()?,
                        wasm: r.bytes()?.to_vec(),
                    })
                })
                .collect::<Result<_, String>>()?;
            GroupStep::Prepare {
                gid,
                line,
                bound_ms,
                targets,
            }
        }
        2 => GroupStep::Vote { gid: r.string()? },
        3 => GroupStep::Decide {
            gid: r.string()?,
            commit: r.u8()? == 1,
        },
        k => return Err(format!("unknown group step {k}")),
    })
}

fn read_step(r: &mut Reader<'_>) -> Result<MoveStep, String> {
    Ok(match r.u8()? {
        1 => MoveStep::Compile {
            digest: r.string()?,
            wasm: r.bytes()?.to_vec(),
        },
        2 => MoveStep::Install {
            id: r.u64()?,
            name: r.string()?,
            digest: r.string()?,
            memory: Some(r.u64()?).filter(|m| *m != u64::MAX),
            capacity: r.u64()?,
            state: r.bytes()?.to_vec(),
            grants: {
                let n = r.count(5)?;
                (0..n).map(|_| read_grant(r)).collect::<Result<_, _>>()?
            },
        },
        3 => {
            let id = r.u64()?;
            let n = r.count(12)?;
            let timers = (0..n)
                .map(|_| Ok((r.string()?, r.u64()?)))
                .collect::<Result<_, String>>()?;
            let n = r.count(8)?;
            let subs = (0..n)
                .map(|_| Ok((r.string()?, r.string()?)))
                .collect::<Result<_, String>>()?;
            let n = r.count(20)?;
            let marks = (0..n)
                .map(|_| Ok((r.string()?, r.u64()?, r.u64()?)))
                .collect::<Result<_, String>>()?;
            MoveStep::Commit {
                id,
                timers,
                subs,
                marks,
            }
        }
        4 => MoveStep::Cancel { id: r.u64()? },
        5 => {
            let id = r.u64()?;
            let n = r.count(16)?;
            let mut msgs = Vec::with_capacity(n);
            for _ in 0..n {
                msgs.push(Message {
                    from: r.string()?,
                    kind: r.string()?,
                    proto: r.u32()?,
                    body: r.bytes()?.to_vec(),
                });
            }
            MoveStep::Queue { id, msgs }
        }
        k => return Err(format!("unknown move step {k}")),
    })
}

fn read_presence(r: &mut Reader<'_>, host: String, incarnation: u64) -> Result<Presence, String> {
    let lease_ms = r.u32()?;
    let hello = r.u8()? != 0;
    let n = r.count(4)?;
    let modules = (0..n).map(|_| r.string()).collect::<Result<_, _>>()?;
    let n = r.count(12)?;
    let subs = (0..n)
        .map(|_| Ok((r.string()?, r.string()?, r.string()?)))
        .collect::<Result<_, String>>()?;
    let n = r.count(8)?;
    let moved = (0..n)
        .map(|_| Ok((r.string()?, r.string()?)))
        .collect::<Result<_, String>>()?;
    let n = r.count(20)?;
    let sides = (0..n).map(|_| read_side(r)).collect::<Result<_, _>>()?;
    Ok(Presence {
        host,
        incarnation,
        lease_ms,
        hello,
        modules,
        subs,
        moved,
        sides,
    })
}

/// Read a payload; an error says what is wrong with it.
pub(crate) fn decode(bytes: &[u8]) -> Result<Payload, String> {
    let mut r = Reader(bytes);
    if r.take(3)? != MAGIC {
        return Err("not a liveswap lattice payload".into());
    }
    let kind = r.u8()?;
    let host = r.string()?;
    let incarnation = r.u64()?;
    let payload = match kind {
        PRESENCE => Payload::Presence(read_presence(&mut r, host, incarnation)?),
        BATCH => {
            let n = r.count(28)?;
            let mut frames = Vec::with_capacity(n);
            for _ in 0..n {
                let to = r.string()?;
                let seq = r.u64()?;
                let from = r.string()?;
                let kind = r.string()?;
                let proto = r.u32()?;
                let body = r.bytes()?.to_vec();
                frames.push(Frame {
                    to,
                    seq,
                    msg: Message {
                        from,
                        kind,
                        proto,
                        body,
                    },
                });
            }
            Payload::Batch(Batch {
                host,
                incarnation,
                frames,
            })
        }
        ACKS => {
            let n = r.count(12)?;
            let last = (0..n)
                .map(|_| Ok((r.string()?, r.u64()?)))
                .collect::<Result<_, String>>()?;
            Payload::Acks(Acks {
                host,
                incarnation,
                last,
            })
        }
        STEP => Payload::Step(host, read_step(&mut r)?),
        GROUP => Payload::Group(host, read_group(&mut r)?),
        FORWARD => {
            let origin = r.string()?;
            let line = r.string()?;
            Payload::Forward(host, origin, line)
        }
        k => return Err(format!("unknown payload kind {k}")),
    };
    if !r.0.is_empty() {
        return Err(format!("{} bytes after the end", r.0.len()));
    }
    Ok(payload)
}

/// A sender's name, shared by every frame it sent.
pub(crate) fn interned(names: &mut Vec<Arc<str>>, name: &str) -> Arc<str> {
    if let Some(n) = names.iter().find(|n| &***n == name) {
        return n.clone();
    }
    let n: Arc<str> = Arc::from(name);
    names.push(n.clone());
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: &str, body: &[u8]) -> Message {
        Message {
            from: "T".into(),
            kind: kind.into(),
            proto: 1,
            body: body.to_vec(),
        }
    }

    #[test]
    fn every_payload_reads_back_as_written() {
        let p = Presence {
            host: "a".into(),
            incarnation: 7,
            lease_ms: 2000,
            hello: true,
            modules: vec!["SINK".into(), "T".into()],
            subs: vec![("PUB".into(), "ev".into(), "SUB".into())],
            moved: vec![("OSPF".into(), "c".into())],
            sides: vec![ModuleSide {
                name: "SINK".into(),
                version: "3.0".into(),
                speaks: vec![2],
                accepts: vec![1, 2],
                senders: vec!["T".into()],
            }],
        };
        let Ok(Payload::Presence(got)) = decode(&presence(&p)) else {
            panic!("a presence")
        };
        assert_eq!(got, p);
        let mut b = BatchWriter::new("a", 9);
        b.push("SINK", 1, "T", &msg("n", b"1"));
        b.push("SINK", 2, "T", &msg("n", b""));
        let frames = b.frames();
        let got = decode(&b.finish()).unwrap();
        let Payload::Batch(batch) = got else {
            panic!("{got:?}")
        };
        assert_eq!(frames, 2);
        assert_eq!(batch.frames[1].seq, 2);
        let first = &batch.frames[0];
        assert_eq!((first.to.as_str(), first.seq), ("SINK", 1));
        assert_eq!(first.msg.from, "T");
        assert_eq!(
            (first.msg.kind.as_str(), &first.msg.body[..]),
            ("n", &b"1"[..])
        );
        let a = Acks {
            host: "b".into(),
            incarnation: 9,
            last: vec![("SINK".into(), 2)],
        };
        let Ok(Payload::Acks(got)) = decode(&acks(&a)) else {
            panic!("acks")
        };
        assert_eq!(got, a);
    }

    #[test]
    fn steps_of_a_move_and_forwarded_commands_read_back_as_written() {
        let commit = MoveStep::Commit {
            id: 7,
            timers: vec![("t".into(), 5)],
            subs: vec![("PUB".into(), "ev".into())],
            marks: vec![("a".into(), 9, 1040)],
        };
        let Ok(Payload::Step(
            from,
            MoveStep::Commit {
                id,
                timers,
                subs,
                marks,
            },
        )) = decode(&step("b", 1, &commit))
        else {
            panic!("a commit")
        };
        assert_eq!((from.as_str(), id), ("b", 7));
        assert_eq!(timers, [("t".to_string(), 5)]);
        assert_eq!(subs, [("PUB".to_string(), "ev".to_string())]);
        assert_eq!(marks, [("a".to_string(), 9, 1040)]);
        let queue = MoveStep::Queue {
            id: 7,
            msgs: vec![msg("n", b"42")],
        };
        let Ok(Payload::Step(_, MoveStep::Queue { msgs, .. })) = decode(&step("b", 1, &queue))
        else {
            panic!("a queue")
        };
        assert_eq!(
            (msgs[0].from.as_str(), &msgs[0].body[..]),
            ("T", &b"42"[..])
        );
        let prepare = GroupStep::Prepare {
            gid: "g.a.7".into(),
            line: "Syn_Replace X x.wasm Y y.wasm".into(),
            bound_ms: 5000,
            targets: vec![PartTarget {
                name: "Y".into(),
                digest: "sha256:00".into(),
                wasm: b"\0asm".to_vec(),
            }],
        };
        let Ok(Payload::Group(from, GroupStep::Prepare { gid, targets, .. })) =
            decode(&group("a", 1, &prepare))
        else {
            panic!("a group's prepare")
        };
        assert_eq!((from.as_str(), gid.as_str()), ("a", "g.a.7"));
        assert_eq!(
            (targets[0].name.as_str(), &targets[0].wasm[..]),
            ("Y", &b"\0asm"[..])
        );
        let decide = GroupStep::Decide {
            gid: "g.a.7".into(),
            commit: true,
        };
        let Ok(Payload::Group(_, GroupStep::Decide { commit: true, .. })) =
            decode(&group("a", 1, &decide))
        else {
            panic!("a group's decision")
        };
        let Ok(Payload::Forward(host, origin, line)) = decode(&forward("a", 1, "ctl", "Unload X"))
        else {
            panic!("a forwarded command")
        };
        assert_eq!(
            (host.as_str(), origin.as_str(), line.as_str()),
            ("a", "ctl", "Unload X")
        );
    }

    #[test]
    fn a_cut_or_forged_payload_is_refused_not_trusted() {
        let mut b = BatchWriter::new("a", 9);
        b.push("SINK", 1, "T", &msg("n", b"12345"));
        let bytes = b.finish();
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // A count of four billion frames in a small payload.
        let mut forged = bytes.clone();
        let at = 3 + 1 + 4 + 1 + 8;
        forged[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&forged).unwrap_err().contains("cannot fit"));
        assert!(decode(b"HTTP/1.1 200").is_err());
    }
}
