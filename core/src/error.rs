//! Error types callers match on.

use std::path::PathBuf;

/// Why a `.wasm` file could not become a version in the repository.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A reference (`oci://...`) could not be fetched, or what came back
    /// is not what it names.
    #[error("{reference}: {reason}")]
    Fetch {
        /// The reference named in the command.
        reference: String,
        /// Why.
        reason: String,
    },
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file named in the command.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bytes are not WebAssembly at all.
    #[error("{path}: not a WebAssembly file (no `\\0asm` header)")]
    NotWasm {
        /// The file named in the command.
        path: PathBuf,
    },
    /// A core module, where a component is needed.
    #[error(
        "{path}: a core WebAssembly module, not a component; build it for wasm32-wasip2 \
         (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule {
        /// The file named in the command.
        path: PathBuf,
    },
    /// wasmtime refused to compile it.
    #[error("{path}: invalid component: {reason}")]
    Compile {
        /// The file named in the command.
        path: PathBuf,
        /// wasmtime's explanation.
        reason: String,
    },
    /// A component, but not of the `module-imp` world (imports the host
    /// does not provide, or missing exports).
    #[error("{path}: not a liveswap module (world `module-imp`): {reason}")]
    WrongWorld {
        /// The file named in the command.
        path: PathBuf,
        /// What does not match.
        reason: String,
    },
    /// The file is not the one the command pinned.
    #[error("{path}: digest {actual} does not match the pinned {pinned}")]
    DigestMismatch {
        /// The file named in the command.
        path: PathBuf,
        /// The `pin` of the command.
        pinned: String,
        /// The file's digest.
        actual: String,
    },
    /// The host requires signatures and the file has none.
    #[error(
        "{path}: refused: unsigned (no {sig_path}); this host loads only files signed by a trusted key (`liveswap sign`)"
    )]
    Unsigned {
        /// The file named in the command.
        path: PathBuf,
        /// Where its signature was looked for.
        sig_path: PathBuf,
    },
    /// The host requires signatures and the file's does not do: malformed,
    /// made over other bytes, or by a key the host does not trust.
    #[error("{path}: refused: bad signature: {reason}")]
    BadSignature {
        /// The file named in the command.
        path: PathBuf,
        /// Which of those it is.
        reason: String,
    },
    /// A granted capability cannot be given (a `grant dir` whose host
    /// directory is missing).
    #[error("cannot grant `{grant}`: {reason}")]
    Grant {
        /// The grant, as the command wrote it.
        grant: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Instantiating it, or its `info` call, failed.
    #[error("{path}: cannot instantiate: {reason}")]
    Instantiate {
        /// The file named in the command.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Why a command was refused or failed. A refused command changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The line does not parse.
    #[error("{0}")]
    Parse(String),
    /// The command names a module that is not loaded.
    #[error("no module named `{0}` is loaded")]
    UnknownModule(String),
    /// `Load` of a name already in use.
    #[error("a module named `{0}` is already loaded")]
    AlreadyLoaded(String),
    /// `Load` of a name another host of the lattice serves.
    #[error(
        "a module named `{name}` runs on host `{host}` of the lattice: names are lattice-wide (unload it there first)"
    )]
    ServedElsewhere {
        /// The name.
        name: String,
        /// The host that serves it.
        host: String,
    },
    /// The same name twice in one command.
    #[error("`{0}` is named twice in one command")]
    DuplicateTarget(String),
    /// A file could not become a version.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The guest's `init` returned an error or trapped.
    #[error("module `{name}`: init failed: {reason}")]
    InitFailed {
        /// Module name.
        name: String,
        /// The guest's error or the trap.
        reason: String,
    },
    /// A module is in a state that does not allow the command.
    #[error("module `{name}` is {state}: {hint}")]
    BadState {
        /// Module name.
        name: String,
        /// Its state.
        state: String,
        /// What to do instead.
        hint: String,
    },
    /// A shadow could not be started, dropped or promoted.
    #[error("{name}: {why}")]
    Shadow {
        /// Module name.
        name: String,
        /// Why.
        why: String,
    },
    /// The upgrade would break a protocol edge (thesis 3.5).
    #[error("{0}")]
    Scope(String),
    /// The host is shutting down.
    #[error("the host is shutting down")]
    ShuttingDown,
}
