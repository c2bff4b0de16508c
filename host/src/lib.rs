//! liveswap: a host that keeps a multi-module application running while
//! its modules — WebAssembly components of the world `module-imp` — are
//! added, replaced and removed, moving state across and losing no message.
//!
//! Layout (thesis name → module):
//! - [`runtime`]: the [`Runtime`] that owns everything and runs commands.
//! - [`proxy`]: module-proxy — a module's name, mailbox and thread.
//! - [`names`], [`pubsub`], [`timers`]: name service, event manager, timers.
//! - [`repository`]: version-control repository (compiled, pre-linked);
//!   [`signing`]: the keys and signatures it checks when told to.
//! - [`upgrader`] with [`txn`] and [`scope`]: software upgrader, two-phase
//!   commit, protocol-scope check; [`report`] says what a transaction did.
//! - [`command`]: the command language (`render` writes a command back as
//!   text); [`events`]: what happened.
//! - [`implementation`], [`context`], [`host_api`], [`bindings`]: one
//!   instance, its store data, and the WIT glue; `sandbox`: what a module's
//!   grants let it reach; [`Runtime::try_get_state`] tries a version's
//!   `get-state` on any bytes.

pub mod admin;
pub mod bench;
pub mod bindings;
pub mod command;
pub mod context;
pub mod demo;
pub mod error;
pub mod events;
mod host_api;
pub mod implementation;
pub mod monitor;
pub mod names;
pub mod proxy;
pub mod pubsub;
pub mod rates;
mod render;
pub mod report;
pub mod repository;
pub mod runtime;
mod sandbox;
pub mod scope;
pub mod script;
pub mod services;
pub mod signing;
mod state_check;
mod stdio;
pub mod timers;
mod txn;
mod upgrader;

pub use command::{Command, Mode};
pub use error::{CommandError, LoadError};
pub use events::{Event, ModuleState};
pub use proxy::{ModuleProxy, Poisoned, ProxyStatus};
pub use report::{ModuleReport, Outcome, TransactionReport};
pub use runtime::{Reply, Runtime, RuntimeBuilder};
pub use services::SendError;
