//! The upgrade protocol (architecture.md §4, thesis 3.6–3.7): validate and prepare
//! every new version before anything pauses ([`prepare`]), check the
//! protocol scope ([`scope`]), then two-phase commit over the targets with
//! the one coordinator ([`coordinator`]) — for an operator's command
//! ([`transaction`]) and for an automatic rollback ([`rollback`]) alike.
//! The record both sides share is [`crate::txn`].

mod coordinator;
mod prepare;
pub(crate) mod rollback;
pub mod scope;
pub(crate) mod shadow;
mod shared;
mod transaction;

pub(crate) use shared::{AdminState, Core, Recorded};
