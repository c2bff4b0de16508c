//! The journal: every change to what a host must come back to, as one
//! ordered stream of operations, written by one thread in batches (group
//! commit: one fsync for many messages).
//!
//! **The durable prefix is a consistent cut.** Operations reach the writer
//! in causal order: a message is journaled (`Enq`) before it enters its
//! receiver's mailbox, and a call's completion (`Served`) after everything
//! it sent. One gap remains: a receiver can serve a message before the
//! call that sent it completes. A cut between the two would keep the
//! receiver's effect and lose the sender's call, which runs again after a
//! restart and sends again: a duplicate. So the writer commits only up to
//! the last position where no served message's sending call is still
//! open — everything after waits for the next batch — and a restart drops
//! any queued message whose sending call is not in the prefix (that call
//! runs again). See [`super::image::Image::settle`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use redb::{Database, Durability, ReadableDatabase, ReadableTable};

use super::codec::Enc;
use super::image::{Image, Op, Producer};
use super::{IMAGE, JOURNAL, SyncPolicy};

/// Operations waiting for the writer, at most: a sender past this waits
/// (the disk sets the pace).
const QUEUE: usize = 1 << 16;

/// The journal is rewritten as an image once it holds this many bytes
/// (or more than the last image, if that is larger).
const COMPACT_BYTES: u64 = 64 << 20;

/// At a clean stop, a journal past this many bytes is rewritten as an
/// image (the next start then replays nothing; a clean stop has just taken
/// fresh recovery points, so the image is small). A shorter one is left:
/// replaying it costs less than writing the image.
const CLOSE_COMPACT_BYTES: u64 = 1 << 20;

type Ack = Sender<Result<(), String>>;

/// Told of each batch of operations once it is committed (a lattice host
/// sends a message to another host only once it is durable).
pub type OnCommit = Box<dyn Fn(&[&Op]) + Send + Sync>;

struct Entry {
    op: Option<Op>,
    ack: Option<Ack>,
}

enum Cmd {
    Entry(Entry),
    /// Commit everything, rewrite the image, end.
    Close(Ack),
}

/// The handle every part of the host records through.
pub struct Journal {
    tx: Sender<Cmd>,
    ids: AtomicU64,
    broken: Arc<RwLock<Option<String>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    policy: SyncPolicy,
    on_commit: Arc<std::sync::OnceLock<OnCommit>>,
}

impl Journal {
    pub(super) fn start(
        db: Arc<Database>,
        image: Image,
        policy: SyncPolicy,
        tail: Tail,
    ) -> std::io::Result<Journal> {
        let (tx, rx) = bounded(QUEUE);
        let broken = Arc::new(RwLock::new(None));
        let on_commit = Arc::new(std::sync::OnceLock::new());
        let ids = AtomicU64::new(image.next_id.max(1));
        let writer = Writer {
            db,
            rx,
            policy,
            image,
            pending: Vec::new(),
            safe: 0,
            cut: Cut::default(),
            batch: tail.last_batch,
            journal_bytes: tail.bytes,
            image_bytes: 0,
            broken: broken.clone(),
            urgent: false,
            rewrite: tail.rewrite,
            on_commit: on_commit.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("liveswap-journal".into())
            .spawn(move || writer.run())?;
        Ok(Journal {
            tx,
            ids,
            broken,
            thread: Mutex::new(Some(thread)),
            policy,
            on_commit,
        })
    }

    /// Call `f` with each batch of operations once it is committed (once
    /// only: a second hook is refused).
    pub fn on_commit(&self, f: OnCommit) -> Result<(), String> {
        self.on_commit
            .set(f)
            .map_err(|_| "the journal has a commit hook already".to_string())
    }

    /// The sync policy.
    pub fn policy(&self) -> SyncPolicy {
        self.policy
    }

    /// A fresh message id.
    pub fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Why the store cannot be written any more, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        match &*self.broken.read().expect("journal poisoned") {
            None => Ok(()),
            Some(why) => Err(why.clone()),
        }
    }

    /// Record `op`; it becomes durable with a later batch.
    pub fn record(&self, op: Op) {
        let _ = self.tx.send(Cmd::Entry(Entry {
            op: Some(op),
            ack: None,
        }));
    }

    /// Record `op` and wait until it is durable (under the sync policy).
    pub fn record_durable(&self, op: Op) -> Result<(), String> {
        self.wait(Some(op))
    }

    /// Wait until everything recorded before is durable, without waiting
    /// for the sync interval.
    pub fn flush(&self) -> Result<(), String> {
        self.wait(None)
    }

    fn wait(&self, op: Option<Op>) -> Result<(), String> {
        self.check()?;
        let (ack, done) = bounded(1);
        let entry = Entry { op, ack: Some(ack) };
        if self.tx.send(Cmd::Entry(entry)).is_err() {
            return Err("the store is closed".into());
        }
        done.recv()
            .unwrap_or_else(|_| Err("the store's writer ended".into()))
    }

    /// Commit everything, rewrite the image, and stop the writer.
    pub fn close(&self) -> Result<(), String> {
        let Some(thread) = self.thread.lock().expect("journal poisoned").take() else {
            return Ok(());
        };
        let (ack, done) = bounded(1);
        let r = if self.tx.send(Cmd::Close(ack)).is_ok() {
            done.recv()
                .unwrap_or_else(|_| Err("the store's writer ended".into()))
        } else {
            Err("the store's writer ended".into())
        };
        let _ = thread.join();
        r
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Where the durable prefix may end: no served message's sending call
/// still open.
#[derive(Default)]
struct Cut {
    /// Calls that sent something and have not completed.
    open: HashSet<Producer>,
    /// The call that sent each queued message, while it is open.
    sent_by: HashMap<u64, Producer>,
    /// Served messages whose sending call is open, by that call.
    waiting: HashMap<Producer, usize>,
    /// Their count: zero means a cut here is consistent.
    blocked: usize,
}

impl Cut {
    fn track(&mut self, op: &Op) {
        let (taken, completes) = match op {
            Op::Enq {
                id,
                producer: Some(p),
                ..
            } => {
                self.open.insert(p.clone());
                self.sent_by.insert(*id, p.clone());
                return;
            }
            Op::Served {
                module, seq, id, ..
            }
            | Op::Trapped {
                module, seq, id, ..
            }
            | Op::Poisoned {
                module,
                seq: Some(seq),
                id,
                ..
            } => (Some(*id), Some((module.clone(), *seq))),
            Op::Dropped { id, .. } => (Some(*id), None),
            _ => return,
        };
        if let Some(id) = taken
            && let Some(p) = self.sent_by.remove(&id)
            && self.open.contains(&p)
        {
            self.blocked += 1;
            *self.waiting.entry(p).or_default() += 1;
        }
        if let Some(call) = completes {
            self.open.remove(&call);
            self.blocked -= self.waiting.remove(&call).unwrap_or(0);
        }
    }
}

struct Writer {
    db: Arc<Database>,
    rx: Receiver<Cmd>,
    policy: SyncPolicy,
    image: Image,
    pending: Vec<Entry>,
    /// `pending[..safe]` may be committed.
    safe: usize,
    cut: Cut,
    batch: u64,
    journal_bytes: u64,
    image_bytes: u64,
    broken: Arc<RwLock<Option<String>>>,
    /// Someone waits for a flush: commit now, whatever the interval.
    urgent: bool,
    /// Rewrite the image before anything else (a restart changed it).
    rewrite: bool,
    on_commit: Arc<std::sync::OnceLock<OnCommit>>,
}

/// Where the journal a start found ends.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Tail {
    /// Its last batch's key (new batches follow it).
    pub last_batch: u64,
    /// Its bytes.
    pub bytes: u64,
    /// The image must be rewritten first: the restart settled it (dropped
    /// messages must not come back from the journal).
    pub rewrite: bool,
}

impl Writer {
    fn run(mut self) {
        if self.rewrite
            && let Err(e) = self.compact()
        {
            self.fail(e);
        }
        let interval = self.policy.interval();
        let mut next = Instant::now() + interval;
        loop {
            let wait = next.saturating_duration_since(Instant::now());
            let first = if self.pending.is_empty() {
                self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                self.rx.recv_timeout(wait)
            };
            let close = match first {
                Ok(cmd) => self.take_all(cmd),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.finish();
                    return;
                }
            };
            if let Some(ack) = close {
                let _ = ack.send(self.finish());
                return;
            }
            let due = self.urgent || Instant::now() >= next || interval.is_zero();
            if due && self.safe > 0 {
                self.commit();
                next = Instant::now() + interval;
            }
        }
    }

    /// Take `cmd` and whatever else is waiting; a Close ends the taking.
    fn take_all(&mut self, cmd: Cmd) -> Option<Ack> {
        let mut cmd = cmd;
        loop {
            match cmd {
                Cmd::Close(ack) => return Some(ack),
                Cmd::Entry(e) => self.take(e),
            }
            if self.pending.len() >= QUEUE {
                return None;
            }
            match self.rx.try_recv() {
                Ok(c) => cmd = c,
                Err(_) => return None,
            }
        }
    }

    fn take(&mut self, e: Entry) {
        if let Some(op) = &e.op {
            self.cut.track(op);
        }
        if e.ack.is_some() {
            self.urgent = true;
        }
        self.pending.push(e);
        if self.cut.blocked == 0 {
            self.safe = self.pending.len();
        }
    }

    fn fail(&self, why: String) {
        tracing::error!("state directory: {why}; new messages are refused");
        *self.broken.write().expect("journal poisoned") = Some(why);
    }

    /// Commit `pending[..safe]` as one batch.
    fn commit(&mut self) {
        self.commit_as(self.policy.durability());
    }

    fn commit_as(&mut self, durability: Durability) {
        let batch: Vec<Entry> = self.pending.drain(..self.safe).collect();
        self.safe = 0;
        self.urgent = self.pending.iter().any(|e| e.ack.is_some());
        let broken = self.broken.read().expect("journal poisoned").clone();
        let result = match broken {
            Some(why) => Err(why),
            None => self.write(&batch, durability),
        };
        match &result {
            Ok(()) => {
                if let Some(f) = self.on_commit.get() {
                    let ops: Vec<&Op> = batch.iter().filter_map(|e| e.op.as_ref()).collect();
                    f(&ops);
                }
                for e in &batch {
                    if let Some(op) = &e.op {
                        self.image.apply(op.clone());
                    }
                }
            }
            Err(why) => self.fail(why.clone()),
        }
        for e in batch {
            if let Some(ack) = e.ack {
                let _ = ack.send(result.clone());
            }
        }
        if result.is_ok()
            && self.journal_bytes > COMPACT_BYTES.max(self.image_bytes)
            && let Err(e) = self.compact()
        {
            self.fail(e);
        }
    }

    fn write(&mut self, batch: &[Entry], durability: Durability) -> Result<(), String> {
        let mut enc = Enc::default();
        let ops: Vec<&Op> = batch.iter().filter_map(|e| e.op.as_ref()).collect();
        if ops.is_empty() {
            return Ok(());
        }
        enc.u64(ops.len() as u64);
        for op in ops {
            op.encode(&mut enc);
        }
        self.batch += 1;
        let bytes = enc.0;
        let write = || -> Result<(), redb::Error> {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(durability)?;
            {
                let mut table = txn.open_table(JOURNAL)?;
                table.insert(self.batch, bytes.as_slice())?;
            }
            txn.commit()?;
            Ok(())
        };
        write().map_err(|e| format!("a commit failed: {e}"))?;
        self.journal_bytes += bytes.len() as u64;
        Ok(())
    }

    /// Write the image whole and empty the journal, durably.
    fn compact(&mut self) -> Result<(), String> {
        let bytes = self.image.encode();
        let write = || -> Result<(), redb::Error> {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            txn.delete_table(JOURNAL)?;
            {
                let mut table = txn.open_table(IMAGE)?;
                table.insert("image", bytes.as_slice())?;
                txn.open_table(JOURNAL)?;
            }
            txn.commit()?;
            Ok(())
        };
        write().map_err(|e| format!("rewriting the image failed: {e}"))?;
        self.journal_bytes = 0;
        self.image_bytes = bytes.len() as u64;
        Ok(())
    }

    /// At Close: commit what can be, durably (under any policy), and
    /// rewrite the image if the journal is long; one fsync either way.
    fn finish(&mut self) -> Result<(), String> {
        let rewrite = self.journal_bytes > CLOSE_COMPACT_BYTES;
        if self.safe > 0 {
            self.commit_as(if rewrite {
                Durability::None
            } else {
                Durability::Immediate
            });
        } else if !rewrite && self.policy == SyncPolicy::Never {
            // Earlier batches were committed without an fsync.
            let sync = || -> Result<(), redb::Error> {
                let mut txn = self.db.begin_write()?;
                txn.set_durability(Durability::Immediate)?;
                txn.commit()?;
                Ok(())
            };
            if let Err(e) = sync() {
                self.fail(format!("the last commit failed: {e}"));
            }
        }
        // What is left waits on a call that never completed: it was not
        // accepted as far as a restart is concerned.
        for e in self.pending.drain(..) {
            if let Some(ack) = e.ack {
                let _ = ack.send(Err("the host stopped before it was durable".into()));
            }
        }
        let broken = self.broken.read().expect("journal poisoned").clone();
        match broken {
            Some(why) => Err(why),
            None if rewrite => self.compact(),
            None => Ok(()),
        }
    }
}

/// Read the journal since the image: every batch, in order. Returns
/// where it ends.
pub(super) fn replay(db: &Database, image: &mut Image) -> Result<Tail, String> {
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let table = match txn.open_table(JOURNAL) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Tail::default()),
        Err(e) => return Err(e.to_string()),
    };
    let mut tail = Tail::default();
    for row in table.iter().map_err(|e| e.to_string())? {
        let (batch, bytes) = row.map_err(|e| e.to_string())?;
        tail.last_batch = batch.value();
        tail.bytes += bytes.value().len() as u64;
        let mut d = super::codec::Dec::new(bytes.value());
        let count = d
            .u64()
            .map_err(|e| format!("batch {}: {e}", batch.value()))?;
        for _ in 0..count {
            let op = Op::decode(&mut d).map_err(|e| format!("batch {}: {e}", batch.value()))?;
            image.apply(op);
        }
    }
    Ok(tail)
}
