//! One live instance of a version: its `Store`, and guarded calls into it
//! under an epoch deadline and a memory limit. A trap becomes a
//! [`GuestFault`], never a host panic.

mod implementation;

pub use implementation::{EPOCH_PERIOD, GuestFault, InstanceLimits};
pub(crate) use implementation::{Implementation, Seat};
