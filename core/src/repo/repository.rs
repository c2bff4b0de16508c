//! The version-control repository (thesis 3.3.4): `.wasm` files by content
//! digest, each compiled and pre-linked once (`ModuleImpPre`), so that a
//! swap instantiates and never compiles. A repository given trusted keys
//! takes only files whose signature one of them made ([`super::signing`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use wasmtime::Engine;
use wasmtime::component::{Component, ComponentExportIndex, Linker};

use super::signing::{self, PublicKey, SignatureCheck, digest};
use crate::bindings::{ModuleImp, ModuleImpIndices, ModuleImpPre, ModuleInfo};
use crate::error::LoadError;
use crate::guest::ModuleCtx;
use crate::store::StateDir;

/// One compiled, pre-linked version of a module.
pub struct Version {
    /// `sha256:<hex>` of the file's bytes.
    pub digest: String,
    /// The file it was first loaded from.
    pub path: PathBuf,
    /// Size of the file in bytes.
    pub size: usize,
    /// Time spent compiling (or loading the stored artifact) and
    /// pre-linking, in microseconds.
    pub compile_us: u64,
    /// Whether it came from the state directory's compiled artifact, not
    /// a compile.
    pub precompiled: bool,
    pre: ModuleImpPre<ModuleCtx>,
    /// Where `module-imp`'s exports are, looked up once for every
    /// instance.
    exports: ModuleImpIndices,
    /// Where the optional `service-batch` export is (world `module-batch`).
    batch: Option<ComponentExportIndex>,
    info: OnceLock<ModuleInfo>,
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Version")
            .field("digest", &self.digest)
            .field("path", &self.path)
            .field("version", &self.label())
            .finish()
    }
}

impl Version {
    /// The pre-linked component, ready to instantiate.
    pub(crate) fn pre(&self) -> &ModuleImpPre<ModuleCtx> {
        &self.pre
    }

    /// Where `module-imp`'s exports are in every instance of it.
    pub(crate) fn exports(&self) -> &ModuleImpIndices {
        &self.exports
    }

    /// Whether the version takes its messages in batches (it exports
    /// `service-batch` of world `module-batch`).
    pub fn takes_batches(&self) -> bool {
        self.batch.is_some()
    }

    /// The `service-batch` export, if the version has one.
    pub(crate) fn batch_export(&self) -> Option<&ComponentExportIndex> {
        self.batch.as_ref()
    }

    /// What the version said of itself in `info`, once an instance was made.
    pub fn info(&self) -> Option<&ModuleInfo> {
        self.info.get()
    }

    pub(crate) fn set_info(&self, info: ModuleInfo) {
        let _ = self.info.set(info);
    }

    /// `info().version`, or `?` before the first instance.
    pub fn label(&self) -> &str {
        self.info().map(|i| i.version.as_str()).unwrap_or("?")
    }

    /// The first 12 hex digits of the digest, for tables.
    pub fn short_digest(&self) -> &str {
        let hex = self.digest.trim_start_matches("sha256:");
        &hex[..hex.len().min(12)]
    }
}

/// A file read, its pin and signature checked, not yet compiled.
pub struct CheckedFile {
    path: PathBuf,
    bytes: Vec<u8>,
    digest: String,
}

impl CheckedFile {
    /// Its digest, `sha256:<hex>`.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Its bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Compiled versions by digest.
pub struct Repository {
    engine: Engine,
    linker: Linker<ModuleCtx>,
    // A Mutex held only for map look-ups and inserts, never while compiling:
    // two commands preparing different files do not wait on each other.
    versions: Mutex<HashMap<String, Arc<Version>>>,
    // Empty: signatures are not checked. Fixed at construction, so it needs
    // no lock.
    trusted: Vec<PublicKey>,
    /// Largest file read.
    max_file: u64,
    /// With a state directory: every version's bytes and compiled
    /// artifact are kept there, and a compile is skipped when the
    /// artifact for these engine settings is found.
    store: Option<Arc<StateDir>>,
    /// Brings versions named by a reference (`oci://...`) into local files.
    fetcher: Option<Arc<dyn Fetcher>>,
}

/// Brings a version that a command names by a reference, not a path
/// (`oci://registry/repo:tag`), into a local file, with its signature
/// beside it if it has one. The file is then read and checked as any
/// other: its pin, its signature on a trusting host, its world.
pub trait Fetcher: Send + Sync + std::fmt::Debug {
    /// The local file of `reference`, or why there is none.
    fn fetch(&self, reference: &str) -> Result<PathBuf, String>;
}

/// A reference to fetch rather than a path to read.
pub fn is_reference(path: &Path) -> bool {
    path.to_str().is_some_and(|p| p.starts_with("oci://"))
}

const WASM_MAGIC: &[u8] = b"\0asm";
/// Layer field of a component's preamble (bytes 6..8); core modules have 0.
const COMPONENT_LAYER: [u8; 2] = [0x01, 0x00];

impl Repository {
    /// A repository whose versions link against the module-imp imports.
    pub fn new(engine: Engine) -> anyhow::Result<Self> {
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        // Waits in `wasi:io/poll` end at the call's deadline.
        crate::guest::deadline::add_to_linker(&mut linker)?;
        // No socket without a grant, and the host says so.
        crate::guest::sockets::add_to_linker(&mut linker)?;
        ModuleImp::add_to_linker::<ModuleCtx, wasmtime::component::HasSelf<ModuleCtx>>(
            &mut linker,
            |ctx| ctx,
        )?;
        Ok(Repository {
            engine,
            linker,
            versions: Mutex::new(HashMap::new()),
            trusted: Vec::new(),
            max_file: crate::limits::Limits::default().wasm_bytes,
            store: None,
            fetcher: None,
        })
    }

    /// Keep versions and their compiled artifacts in `store`.
    pub fn with_store(mut self, store: Arc<StateDir>) -> Self {
        self.store = Some(store);
        self
    }

    /// The key of a version's artifact: its digest and a hash of the
    /// engine settings it was compiled for.
    fn artifact_key(&self, digest: &str) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        env!("CARGO_PKG_VERSION").hash(&mut h);
        format!("{digest}/{:016x}", h.finish())
    }

    /// The component of `bytes`: the stored artifact if there is one for
    /// these engine settings, or compiled now (and stored).
    fn component(
        &self,
        path: &Path,
        bytes: &[u8],
        digest: &str,
    ) -> Result<(Component, bool), LoadError> {
        let key = self.artifact_key(digest);
        if let Some(store) = &self.store
            && let Some(artifact) = store.artifact(&key)
        {
            // SAFETY: the artifact was written by `Component::serialize`
            // of this host (same engine settings, same build: both are in
            // the key) into the state directory, which only its owner can
            // write (0700).
            match unsafe { Component::deserialize(&self.engine, &artifact) } {
                Ok(c) => return Ok((c, true)),
                Err(e) => tracing::warn!(%digest, "stored artifact unusable, compiling: {e:#}"),
            }
        }
        let component =
            Component::from_binary(&self.engine, bytes).map_err(|e| LoadError::Compile {
                path: path.to_path_buf(),
                reason: format!("{e:#}"),
            })?;
        if let Some(store) = &self.store {
            let kept = component
                .serialize()
                .map_err(|e| e.to_string())
                .and_then(|a| store.keep_version(digest, bytes, &key, &a));
            if let Err(e) = kept {
                tracing::warn!(%digest, "not kept in the state directory: {e}");
            }
        }
        Ok((component, false))
    }

    /// The bytes of version `digest` as the state directory kept them.
    pub fn kept_wasm(&self, digest: &str) -> Option<Vec<u8>> {
        self.store.as_ref().and_then(|s| s.wasm(digest))
    }

    /// The version `digest`, which a restart found a module running: held,
    /// or from the state directory's copy, or from `path` if its bytes
    /// still have that digest.
    pub fn restore(&self, digest: &str, path: &Path) -> Result<Arc<Version>, LoadError> {
        if let Some(v) = self.lookup(digest) {
            return Ok(v);
        }
        let kept = self.store.as_ref().and_then(|s| s.wasm(digest));
        let bytes = match kept {
            Some(b) => b,
            None => read_file(path, self.max_file).map_err(|source| LoadError::Read {
                path: path.to_path_buf(),
                source,
            })?,
        };
        let actual = self::digest(&bytes);
        if actual != digest {
            return Err(LoadError::DigestMismatch {
                path: path.to_path_buf(),
                pinned: digest.to_string(),
                actual,
            });
        }
        self.version_of(CheckedFile {
            path: path.to_path_buf(),
            bytes,
            digest: actual,
        })
    }

    /// Read no `.wasm` file larger than `bytes`.
    pub fn with_max_file(mut self, bytes: u64) -> Self {
        self.max_file = bytes;
        self
    }

    /// Fetch `oci://` references with `fetcher`.
    pub fn with_fetcher(mut self, fetcher: Option<Arc<dyn Fetcher>>) -> Self {
        self.fetcher = fetcher;
        self
    }

    /// Take only files with a valid signature by one of `keys` (none: take
    /// every file, and ignore `.sig` files).
    pub fn with_trusted_keys(mut self, keys: Vec<PublicKey>) -> Self {
        self.trusted = keys;
        self
    }

    /// The keys whose signatures it accepts; empty if it checks none.
    pub fn trusted_keys(&self) -> &[PublicKey] {
        &self.trusted
    }

    /// The engine every version is compiled for.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Read `path`, and return its version: the cached one if a file with
    /// the same bytes was loaded before, else a freshly compiled one.
    pub fn fetch(&self, path: &Path) -> Result<Arc<Version>, LoadError> {
        self.fetch_pinned(path, None)
    }

    /// As [`Repository::fetch`], but refuse a file whose digest is not
    /// `pin` (`sha256:<hex>`), before compiling anything.
    ///
    /// With trusted keys, `<path>.sig` must verify over the digest of the
    /// bytes read here, or nothing is compiled or cached. This holds for a
    /// digest already held too: the version was accepted once, but this
    /// file and its signature are checked now.
    pub fn fetch_pinned(&self, path: &Path, pin: Option<&str>) -> Result<Arc<Version>, LoadError> {
        let file = self.read_checked(path, pin)?;
        self.version_of(file)
    }

    /// The first half of [`Repository::fetch_pinned`]: read `path` and
    /// check its pin and signature, compiling nothing. A group command
    /// checks every file this way before it compiles any.
    pub fn read_checked(&self, path: &Path, pin: Option<&str>) -> Result<CheckedFile, LoadError> {
        let fetched;
        let path = if is_reference(path) {
            fetched = self.fetch_reference(path)?;
            fetched.as_path()
        } else {
            path
        };
        let bytes = read_file(path, self.max_file).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let digest = digest(&bytes);
        if let Some(pin) = pin
            && !pin.eq_ignore_ascii_case(&digest)
        {
            return Err(LoadError::DigestMismatch {
                path: path.to_path_buf(),
                pinned: pin.to_string(),
                actual: digest,
            });
        }
        self.check_signature(path, &digest)?;
        Ok(CheckedFile {
            path: path.to_path_buf(),
            bytes,
            digest,
        })
    }

    /// The second half of [`Repository::fetch_pinned`]: the version of a
    /// checked file, held or compiled now.
    pub fn version_of(&self, file: CheckedFile) -> Result<Arc<Version>, LoadError> {
        let CheckedFile {
            path,
            bytes,
            digest,
        } = file;
        let path = path.as_path();
        if let Some(v) = self.lookup(&digest) {
            return Ok(v);
        }
        check_header(path, &bytes)?;
        // Before the slow part: what it imports and exports.
        super::world::check(path, &bytes)?;
        let started = Instant::now();
        let (component, precompiled) = self.component(path, &bytes, &digest)?;
        let instance_pre =
            self.linker
                .instantiate_pre(&component)
                .map_err(|e| LoadError::WrongWorld {
                    path: path.to_path_buf(),
                    reason: format!("{e:#}"),
                })?;
        let batch = component.get_export_index(None, "service-batch");
        let wrong_world = |e: wasmtime::Error| LoadError::WrongWorld {
            path: path.to_path_buf(),
            reason: format!("{e:#}"),
        };
        let exports = ModuleImpIndices::new(&instance_pre).map_err(wrong_world)?;
        let pre = ModuleImpPre::new(instance_pre).map_err(wrong_world)?;
        let version = Arc::new(Version {
            digest: digest.clone(),
            path: path.to_path_buf(),
            size: bytes.len(),
            compile_us: started.elapsed().as_micros() as u64,
            precompiled,
            pre,
            exports,
            batch,
            info: OnceLock::new(),
        });
        tracing::debug!(path = %path.display(), %digest, us = version.compile_us, "compiled");
        let mut versions = self.versions.lock().expect("repository poisoned");
        // Another command may have compiled the same bytes meanwhile: keep one.
        Ok(versions.entry(digest).or_insert(version).clone())
    }

    /// The local file of a reference, fetched.
    fn fetch_reference(&self, reference: &Path) -> Result<PathBuf, LoadError> {
        let reference = reference.to_string_lossy().into_owned();
        let Some(fetcher) = &self.fetcher else {
            return Err(LoadError::Fetch {
                reference,
                reason: "this host fetches no references (it was built without a fetcher)".into(),
            });
        };
        fetcher
            .fetch(&reference)
            .map_err(|reason| LoadError::Fetch { reference, reason })
    }

    /// With trusted keys, refuse `path` unless its `.sig` verifies over
    /// `digest` with one of them.
    fn check_signature(&self, path: &Path, digest: &str) -> Result<(), LoadError> {
        if self.trusted.is_empty() {
            return Ok(());
        }
        match signing::check_file(path, digest, &self.trusted) {
            SignatureCheck::Valid => Ok(()),
            SignatureCheck::Missing => Err(LoadError::Unsigned {
                path: path.to_path_buf(),
                sig_path: signing::sig_path(path),
            }),
            SignatureCheck::Bad(reason) => Err(LoadError::BadSignature {
                path: path.to_path_buf(),
                reason,
            }),
        }
    }

    /// The version with this digest, if held.
    pub fn lookup(&self, digest: &str) -> Option<Arc<Version>> {
        self.versions
            .lock()
            .expect("repository poisoned")
            .get(digest)
            .cloned()
    }

    /// Every version held, oldest path first.
    pub fn all(&self) -> Vec<Arc<Version>> {
        let mut v: Vec<_> = self
            .versions
            .lock()
            .expect("repository poisoned")
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.path.cmp(&b.path).then(a.digest.cmp(&b.digest)));
        v
    }

    /// The cleaning phase: forget every version whose digest is not in
    /// `running` (the versions modules run now). An instance still being
    /// dropped keeps its version alive until it is gone; the repository
    /// just stops offering it. Returns the digests released.
    pub fn release_unused(&self, running: &std::collections::HashSet<String>) -> Vec<String> {
        let mut versions = self.versions.lock().expect("repository poisoned");
        let unused: Vec<String> = versions
            .keys()
            .filter(|d| !running.contains(*d))
            .cloned()
            .collect();
        for d in &unused {
            versions.remove(d);
        }
        unused
    }
}

/// Read a `.wasm` file: a regular file (not a device, a FIFO or a
/// directory, which could block the command serializer or never end) of at
/// most `max` bytes.
fn read_file(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, Read};
    let not_regular = |meta: &std::fs::Metadata| {
        let kind = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file (a device, a FIFO or a socket)"
        };
        Error::other(format!("{kind}; only regular files are read"))
    };
    // Checked before opening: opening a FIFO would block until a writer
    // came.
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    if meta.len() > max {
        return Err(Error::other(format!(
            "the file is {} bytes, over the limit of {max} (--max-wasm)",
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(Error::other(format!(
            "the file grew past the limit of {max} bytes while it was read (--max-wasm)"
        )));
    }
    Ok(bytes)
}

fn check_header(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != WASM_MAGIC {
        return Err(LoadError::NotWasm {
            path: path.to_path_buf(),
        });
    }
    if bytes[6..8] != COMPONENT_LAYER {
        return Err(LoadError::CoreModule {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}
