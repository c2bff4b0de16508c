//! liveswap: a host that keeps a multi-module application running while
//! its modules — WebAssembly components of the world `module-imp` — are
//! added, replaced and removed, moving state across and losing no message.
//!
//! This crate is the core: everything a swap needs, and nothing of the
//! operator surface (the command language's text form, the admin endpoint,
//! rendering: `liveswap-ops`). Its modules are layers; each imports only
//! from the layers above it in this list (`docs/architecture.md`; the test
//! `layers` checks it):
//!
//! 1. the contract and plain data: [`bindings`] (the WIT), [`events`],
//!    [`report`], [`history`], [`error`], [`words`], [`limits`];
//! 2. [`guest`]: what a guest sees — its store data, the `host` glue, its
//!    sandbox and stdio, and the narrow [`guest::HostView`] it reaches;
//!    then [`store`]: the state directory (durability);
//! 3. [`command`]: the requests a runtime runs, as data; [`repo`]: the
//!    version repository with signing; [`bus`]: names, mailboxes, pub/sub,
//!    timers, rates (implements the host view);
//! 4. [`instance`]: one live instance of a version;
//! 5. [`txn`]: the two-phase-commit record and the probation record;
//! 6. [`proxy`]: a module's handle, mailbox reader, worker, its side of a
//!    vote, recovery, poison messages, probation;
//! 7. [`upgrade`]: prepare, scope, the one coordinator, operator
//!    transactions and rollbacks;
//! 8. [`runtime`]: the [`Runtime`] that owns it all and serializes
//!    commands;
//! 9. [`lattice`]: hosts of one application on NATS — lattice-wide names,
//!    messages between hosts with the local contract.

pub mod bindings;
pub mod error;
pub mod events;
pub mod history;
pub mod limits;
pub mod report;
pub mod words;

pub mod guest;

pub mod store;

pub mod bus;
pub mod command;
pub mod repo;

pub mod instance;

pub(crate) mod txn;

pub mod proxy;

pub mod upgrade;

pub mod runtime;

pub mod lattice;

pub use bindings::Level;
pub use bus::SendError;
pub use command::{Command, GroupKind, LoadOptions, Mode, Target};
pub use error::{CommandError, LoadError};
pub use events::{Event, ModuleState};
pub use guest::Grant;
pub use history::{CommandRecord, History};
pub use limits::Limits;
pub use proxy::{ModuleProxy, Poisoned, ProxyStatus};
pub use repo::signing;
pub use report::{Cause, ModuleReport, Outcome, Phase, Refusal, TransactionReport};
pub use runtime::{
    EPOCH_PERIOD, PoisonList, Reply, Runtime, RuntimeBuilder, StatusReport, VersionRow,
    VersionsReport,
};
