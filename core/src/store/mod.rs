//! The state directory: everything a host needs to come back after a
//! crash, a restart or a handoff to a new binary, in one embedded,
//! crash-safe store (redb: a copy-on-write B-tree whose commits are
//! checksummed, so a torn write rolls back to the last commit).
//!
//! What it holds: each version's `.wasm` by digest and its compiled
//! artifact (keyed by digest and the engine's settings), and the
//! [`Image`] — the module table, recovery points, logs and mailboxes,
//! timers, subscriptions, open transactions and the command history —
//! kept as the last image written plus the journal since
//! ([`journal`]). One host owns a directory at a time: a lock file holds
//! its pid.

mod codec;
mod image;
mod journal;

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

pub use codec::Damaged;
pub use image::{
    BaseImage, Failures, Image, LoggedImage, ModuleDef, ModuleImage, Op, OutboxImage, PoisonImage,
    Producer, RetryImage, Stream, TxnImage,
};
pub use journal::Journal;

thread_local! {
    static PRODUCER: std::cell::RefCell<Option<Producer>> = const { std::cell::RefCell::new(None) };
}

/// On a module's worker thread: the call whose sends are being made now
/// (the module and the number that call will have).
pub fn set_producer(p: Option<Producer>) {
    PRODUCER.with(|c| *c.borrow_mut() = p);
}

/// The call sending from this thread, if a module's.
pub fn producer() -> Option<Producer> {
    PRODUCER.with(|c| c.borrow().clone())
}

thread_local! {
    static STREAM: std::cell::RefCell<Option<Stream>> = const { std::cell::RefCell::new(None) };
}

/// On a lattice's link thread: where the message being taken in comes in
/// another host's stream (journaled with it).
pub fn set_stream(s: Option<Stream>) {
    STREAM.with(|c| *c.borrow_mut() = s);
}

/// The stream position of the message being taken in on this thread.
pub fn stream() -> Option<Stream> {
    STREAM.with(|c| c.borrow().clone())
}

/// The setting that keeps a lattice host's stream identity across
/// restarts (its receivers' marks go on).
pub const LATTICE_INCARNATION: &str = "lattice.incarnation";

/// The prefix of the setting a lattice host keeps while it has voted yes
/// in a group spanning hosts (value 1; 0 once it applied the decision).
pub const LATTICE_VOTED: &str = "lattice.voted";

/// The store's format; a directory written by a newer one is refused.
pub const FORMAT: u64 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(crate) const IMAGE: TableDefinition<&str, &[u8]> = TableDefinition::new("image");
pub(crate) const JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("journal");
const WASM: TableDefinition<&str, &[u8]> = TableDefinition::new("wasm");
const ARTIFACTS: TableDefinition<&str, &[u8]> = TableDefinition::new("artifacts");

/// When a batch of the journal is made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// fsync as soon as something is waiting (group commit: what arrives
    /// during one fsync goes into the next).
    Always,
    /// fsync a batch at most this often: a crash loses at most this much
    /// of what was sent between modules (never what an admin `Send` was
    /// told OK for: that waits for its batch).
    Every(Duration),
    /// Never fsync until a clean stop, a handoff or an image rewrite: a
    /// crash loses everything since.
    Never,
}

impl SyncPolicy {
    /// The default: group commit every 10 ms.
    pub const DEFAULT: SyncPolicy = SyncPolicy::Every(Duration::from_millis(10));

    pub(crate) fn interval(self) -> Duration {
        match self {
            SyncPolicy::Always => Duration::ZERO,
            SyncPolicy::Every(d) => d,
            SyncPolicy::Never => Duration::from_millis(10),
        }
    }

    pub(crate) fn durability(self) -> redb::Durability {
        match self {
            SyncPolicy::Never => redb::Durability::None,
            _ => redb::Durability::Immediate,
        }
    }

    /// Parse `always`, `none` or an interval (`10ms`, `1s`).
    pub fn parse(s: &str) -> Result<SyncPolicy, String> {
        match s {
            "always" => Ok(SyncPolicy::Always),
            "none" | "never" => Ok(SyncPolicy::Never),
            other => {
                let (n, unit) = match other.strip_suffix("ms") {
                    Some(n) => (n, 1),
                    None => match other.strip_suffix('s') {
                        Some(n) => (n, 1000),
                        None => (other, 1),
                    },
                };
                let n: u64 = n.parse().map_err(|_| {
                    format!(
                        "`{s}` is not a sync policy: use always, none, or an interval such as 10ms"
                    )
                })?;
                if n == 0 {
                    return Ok(SyncPolicy::Always);
                }
                Ok(SyncPolicy::Every(Duration::from_millis(n * unit)))
            }
        }
    }
}

impl std::fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncPolicy::Always => write!(f, "always"),
            SyncPolicy::Every(d) => write!(f, "{}ms", d.as_millis()),
            SyncPolicy::Never => write!(f, "none"),
        }
    }
}

/// Why a state directory could not be used. Nothing in it was changed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another host owns it.
    #[error("state directory {dir} is in use by another liveswap host (pid {pid})")]
    InUse {
        /// The directory.
        dir: PathBuf,
        /// The owner's pid, as its lock file says.
        pid: String,
    },
    /// Written by a newer liveswap.
    #[error(
        "state directory {dir} was written by a newer liveswap (store format {found}; this one reads format {FORMAT} and older)"
    )]
    Newer {
        /// The directory.
        dir: PathBuf,
        /// The format found.
        found: u64,
    },
    /// The store file is not a store, or is damaged.
    #[error("store {file} cannot be read: {why}; nothing was written to it")]
    Damaged {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The file system refused.
    #[error("state directory {path}: {source}")]
    Io {
        /// What was being opened.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// An open state directory, owned by this process until dropped or
/// released.
pub struct StateDir {
    dir: PathBuf,
    held: std::sync::RwLock<Option<Held>>,
    /// Where the journal the open read ends.
    tail: journal::Tail,
}

struct Held {
    db: Arc<Database>,
    _lock: File,
}

impl StateDir {
    /// Open (creating it, 0700, if missing) and lock `dir`, and read what
    /// it holds.
    pub fn open(dir: &Path) -> Result<(StateDir, Image), StoreError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io(dir))?;
        }
        let meta = std::fs::metadata(dir).map_err(io(dir))?;
        if !meta.is_dir() {
            return Err(StoreError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::other("not a directory"),
            });
        }
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io(dir))?;
        }
        let lock = lock(dir)?;
        let file = dir.join("state.redb");
        let db = open_db(&file)?;
        let (image, tail) = read_image(dir, &file, &db)?;
        let held = Held {
            db: Arc::new(db),
            _lock: lock,
        };
        Ok((
            StateDir {
                dir: dir.to_path_buf(),
                held: std::sync::RwLock::new(Some(held)),
                tail,
            },
            image,
        ))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Start the journal's writer over `image`, the settled form of the
    /// image the open read; if settling changed it (`rewrite`), the writer
    /// first writes it whole in place of the journal it came from.
    pub fn journal(
        &self,
        image: Image,
        policy: SyncPolicy,
        rewrite: bool,
    ) -> std::io::Result<Journal> {
        let db = self.db().ok_or_else(|| std::io::Error::other("released"))?;
        let tail = journal::Tail {
            rewrite,
            ..self.tail
        };
        Journal::start(db, image, policy, tail)
    }

    fn db(&self) -> Option<Arc<Database>> {
        let held = self.held.read().expect("state dir poisoned");
        held.as_ref().map(|h| h.db.clone())
    }

    /// Give the directory up (after the journal closed): the store file
    /// and the lock are let go, so that another host can open it.
    pub fn release(&self) {
        self.held.write().expect("state dir poisoned").take();
    }

    /// The `.wasm` bytes of `digest`, if kept.
    pub fn wasm(&self, digest: &str) -> Option<Vec<u8>> {
        self.get(WASM, digest)
    }

    /// The compiled artifact of `key` (digest and engine settings).
    pub fn artifact(&self, key: &str) -> Option<Vec<u8>> {
        self.get(ARTIFACTS, key)
    }

    fn get(&self, table: TableDefinition<&str, &[u8]>, key: &str) -> Option<Vec<u8>> {
        let txn = self.db()?.begin_read().ok()?;
        let t = txn.open_table(table).ok()?;
        let v = t.get(key).ok()??;
        Some(v.value().to_vec())
    }

    /// Keep a version's bytes and its compiled artifact, durably.
    pub fn keep_version(
        &self,
        digest: &str,
        wasm: &[u8],
        key: &str,
        artifact: &[u8],
    ) -> Result<(), String> {
        let Some(db) = self.db() else {
            return Err("the state directory was released".into());
        };
        let write = || -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            {
                let mut t = txn.open_table(WASM)?;
                if t.get(digest)?.is_none() {
                    t.insert(digest, wasm)?;
                }
                let mut a = txn.open_table(ARTIFACTS)?;
                a.insert(key, artifact)?;
            }
            txn.commit()?;
            Ok(())
        };
        write().map_err(|e| format!("keeping version {digest} in the state directory: {e}"))
    }
}

/// Take the directory's lock, or name who holds it.
fn lock(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join("lock");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        })?;
    if file.try_lock().is_err() {
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        return Err(StoreError::InUse {
            dir: dir.to_path_buf(),
            pid: pid.trim().to_string(),
        });
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "{}", std::process::id());
    let _ = file.sync_all();
    Ok(file)
}

/// Open the store file (creating it, 0600, if missing). redb refuses a
/// file that is not a redb store and detects torn commits by checksum,
/// rolling back to the last whole one.
fn open_db(file: &Path) -> Result<Database, StoreError> {
    if !file.exists() {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(file)
            .map_err(|source| StoreError::Io {
                path: file.to_path_buf(),
                source,
            })?;
    } else if !file.is_file() {
        return Err(StoreError::Damaged {
            file: file.to_path_buf(),
            why: "not a regular file".into(),
        });
    }
    let _ = std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600));
    check_format(file)?;
    Database::builder()
        .create(file)
        .map_err(|e| StoreError::Damaged {
            file: file.to_path_buf(),
            why: e.to_string(),
        })
}

/// Before anything is written: a store of a newer format is refused (an
/// empty file is a new store). redb's read-only open writes nothing; a
/// store left by a crash needs a repair first, and is checked after it
/// (`read_image`).
fn check_format(file: &Path) -> Result<(), StoreError> {
    if std::fs::metadata(file).map(|m| m.len()).unwrap_or(0) == 0 {
        return Ok(());
    }
    let damaged = |why: String| StoreError::Damaged {
        file: file.to_path_buf(),
        why,
    };
    let db = match Database::builder().open_read_only(file) {
        Ok(db) => db,
        // Not closed cleanly (a crash): it needs the repair a read-write
        // open makes, and the format is checked after it.
        Err(redb::DatabaseError::RepairAborted) => return Ok(()),
        Err(e) => return Err(damaged(e.to_string())),
    };
    match format_of(&db).map_err(damaged)? {
        Some(f) if f > FORMAT => Err(StoreError::Newer {
            dir: file.parent().unwrap_or(file).to_path_buf(),
            found: f,
        }),
        _ => Ok(()),
    }
}

/// The format a store says it has; none for a new store.
fn format_of(db: &impl ReadableDatabase) -> Result<Option<u64>, String> {
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    match txn.open_table(META) {
        Ok(t) => Ok(t
            .get("format")
            .map_err(|e| e.to_string())?
            .map(|v| v.value())),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Check the format, read the image and the journal since, settle it.
fn read_image(
    dir: &Path,
    file: &Path,
    db: &Database,
) -> Result<(Image, journal::Tail), StoreError> {
    let damaged = |why: String| StoreError::Damaged {
        file: file.to_path_buf(),
        why,
    };
    match format_of(db).map_err(damaged)? {
        Some(f) if f > FORMAT => {
            return Err(StoreError::Newer {
                dir: dir.to_path_buf(),
                found: f,
            });
        }
        Some(_) => {}
        None => {
            let write = || -> Result<(), redb::Error> {
                let txn = db.begin_write()?;
                txn.open_table(META)?.insert("format", FORMAT)?;
                txn.commit()?;
                Ok(())
            };
            write().map_err(|e| damaged(e.to_string()))?;
        }
    }
    let mut image = {
        let txn = db.begin_read().map_err(|e| damaged(e.to_string()))?;
        match txn.open_table(IMAGE) {
            Ok(t) => match t.get("image").map_err(|e| damaged(e.to_string()))? {
                Some(v) => Image::decode(v.value()).map_err(|e| damaged(e.to_string()))?,
                None => Image::default(),
            },
            Err(redb::TableError::TableDoesNotExist(_)) => Image::default(),
            Err(e) => return Err(damaged(e.to_string())),
        }
    };
    let tail = journal::replay(db, &mut image).map_err(damaged)?;
    Ok((image, tail))
}
